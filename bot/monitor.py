"""The status monitor: probe history in SQLite, and alerts that don't cry wolf.

Every observed state change is kept (so "down since" and uptime can be answered), but alerts go
out only on confirmed transitions: down after K consecutive failed probes, recovery on the first
good probe after that. An agent that keeps changing gets one "flapping" alert per window instead of
a stream, and an admin can silence an agent for maintenance. Alerts are written to an outbox table;
the Discord side posts them and marks them posted, so a Discord outage delays alerts, never loses them.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from bot.authz import AccessLevel, Requester
from bot.clock import Clock, human_duration, iso, parse_iso, short_time, utcnow
from bot.cluster import AgentStatus, ClusterService, FleetStatus
from bot.config import ClusterConfig
from bot.errors import InvalidInput, NotAllowed
from bot.store import Store

log = logging.getLogger(__name__)

BAD_STATES = frozenset({"down", "foreign"})  # a failed probe; starting and degraded are alive
UP_STATES = frozenset({"ready", "degraded"})  # what counts towards uptime
RoundListener = Callable[[FleetStatus], Awaitable[None]]
AlertKind = Literal["down", "recovered", "flapping", "reminder"]


@dataclass(frozen=True)
class MonitorPolicy:
    down_after: int = 2  # K consecutive failed probes confirm "down"
    flap_window_s: float = 600.0
    flap_threshold: int = 3  # confirmed changes within a window that make an agent "flapping"
    reminder_every_s: float | None = None  # repeat "still down" while down; None = never


@dataclass(frozen=True)
class Alert:
    id: int
    at: str
    agent: str
    kind: str
    text: str


@dataclass(frozen=True)
class Transition:
    at: str
    from_state: str | None
    to_state: str
    detail: str | None


@dataclass(frozen=True)
class AgentHealth:
    """What the monitor knows of one agent between probes."""

    agent: str
    observed: str
    observed_since: str
    confirmed: str
    confirmed_since: str
    failures: int
    last_probe_at: str
    latency_ms: float | None
    release: str | None
    detail: str | None
    silenced_until: str | None
    silenced_by: str | None


class StatusMonitor:
    """Turns probe rounds into history and confirmed-transition alerts."""

    def __init__(
        self,
        config: ClusterConfig,
        store: Store,
        cluster: ClusterService,
        *,
        clock: Clock = utcnow,
        policy: MonitorPolicy | None = None,
    ) -> None:
        self._config = config
        self._store = store
        self._cluster = cluster
        self._clock = clock
        self.policy = policy or MonitorPolicy()
        self._round_listeners: list[RoundListener] = []

    async def probe_round(self, timeout: float | None = None) -> tuple[FleetStatus, list[Alert]]:
        """Probe every agent at once, record what changed, and return the alerts it raised."""
        fleet = await self._cluster.probe_all(timeout)
        return fleet, await self.observe(fleet)

    def add_round_listener(self, listener: RoundListener) -> None:
        """Hear every timed round (the Discord cog redraws the board and posts alerts)."""
        self._round_listeners.append(listener)

    def remove_round_listener(self, listener: RoundListener) -> None:
        if listener in self._round_listeners:
            self._round_listeners.remove(listener)

    async def timed_round(self) -> FleetStatus:
        """The round `run` makes on its timer, Discord or not: probe, record, then tell each listener.

        A listener that fails (Discord down) is logged and skipped; history and alerts are already
        recorded, and unposted alerts wait for the next round.
        """
        fleet, _ = await self.probe_round()
        for listener in list(self._round_listeners):
            try:
                await listener(fleet)
            except Exception:
                log.exception("status monitor: publishing a round failed; the next round tries again")
        return fleet

    async def observe(self, fleet: FleetStatus) -> list[Alert]:
        alerts: list[Alert] = []
        for status in fleet.agents:
            alerts.extend(await self._observe_agent(status))
        return alerts

    async def _observe_agent(self, status: AgentStatus) -> list[Alert]:
        now = self._clock()
        state, readiness = status.state, status.readiness
        bad = state in BAD_STATES
        row = await self._store.fetchone("SELECT * FROM agent_health WHERE agent = ?", (status.name,))
        pending: list[tuple[AlertKind, str]] = []
        async with self._store.transaction() as tx:
            if row is None:
                await tx.execute(
                    "INSERT INTO agent_transitions (agent, at, from_state, to_state, detail) VALUES (?, ?, NULL, ?, ?)",
                    (status.name, iso(now), state, readiness.detail),
                )
                health: dict[str, Any] = {
                    "observed": state, "observed_since": iso(now), "confirmed": "unknown",
                    "confirmed_since": iso(now), "failures": 0, "silenced_until": None, "last_reminder_at": None,
                    "flap_window_start": None, "flap_changes": 0, "flap_alerted": 0,
                }  # fmt: skip
            else:
                health = dict(row)
                if health["observed"] != state:
                    await tx.execute(
                        "INSERT INTO agent_transitions (agent, at, from_state, to_state, detail) "
                        "VALUES (?, ?, ?, ?, ?)",
                        (status.name, iso(now), health["observed"], state, readiness.detail),
                    )
                    health["observed"], health["observed_since"] = state, iso(now)
            health["failures"] = health["failures"] + 1 if bad else 0
            pending = self._confirm(status.name, health, bad, now, readiness.detail)
            await tx.execute(
                "INSERT INTO agent_health (agent, observed, observed_since, confirmed, confirmed_since, failures, "
                "last_probe_at, latency_ms, release, detail, silenced_until, last_reminder_at, flap_window_start, "
                "flap_changes, flap_alerted) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (agent) DO UPDATE SET observed = excluded.observed, "
                "observed_since = excluded.observed_since, confirmed = excluded.confirmed, "
                "confirmed_since = excluded.confirmed_since, failures = excluded.failures, "
                "last_probe_at = excluded.last_probe_at, latency_ms = excluded.latency_ms, release = excluded.release, "
                "detail = excluded.detail, silenced_until = excluded.silenced_until, "
                "last_reminder_at = excluded.last_reminder_at, flap_window_start = excluded.flap_window_start, "
                "flap_changes = excluded.flap_changes, flap_alerted = excluded.flap_alerted",
                (
                    status.name, health["observed"], health["observed_since"], health["confirmed"],
                    health["confirmed_since"], health["failures"], iso(now),
                    None if bad else round(readiness.latency_s * 1000, 1), readiness.release, readiness.detail,
                    health["silenced_until"], health["last_reminder_at"], health["flap_window_start"],
                    health["flap_changes"], health["flap_alerted"],
                ),
            )  # fmt: skip
            silenced = health["silenced_until"] is not None and parse_iso(health["silenced_until"]) > now
            alerts = []
            for kind, text in pending:
                if silenced:
                    log.info("alert for %s silenced until %s: %s", status.name, health["silenced_until"], text)
                    continue
                cursor = await tx.execute(
                    "INSERT INTO alerts (at, agent, kind, text) VALUES (?, ?, ?, ?)",
                    (iso(now), status.name, kind, text),
                )
                alerts.append(Alert(cursor.lastrowid or 0, iso(now), status.name, kind, text))
        return alerts

    def _confirm(
        self, agent: str, health: dict[str, Any], bad: bool, now: datetime, detail: str
    ) -> list[tuple[AlertKind, str]]:
        """The confirmed-state machine; mutates `health`, returns the alerts to raise."""
        policy, alerts = self.policy, []
        confirmed = health["confirmed"]
        change: str | None = None
        if bad and confirmed != "down" and health["failures"] >= policy.down_after:
            change = "down"
        elif not bad and confirmed != "up":
            change = "up"
        if change is None:
            if confirmed == "down" and policy.reminder_every_s is not None:
                last = parse_iso(health["last_reminder_at"] or health["confirmed_since"])
                if (now - last).total_seconds() >= policy.reminder_every_s:
                    since = parse_iso(health["confirmed_since"])
                    down_for = human_duration((now - since).total_seconds())
                    text = f"{agent} is still down (since {short_time(since)}, {down_for}): {detail}"
                    alerts.append(("reminder", text))
                    health["last_reminder_at"] = iso(now)
            self._end_flapping_if_stable(agent, health, now, alerts)
            return alerts

        previous, since = confirmed, parse_iso(health["confirmed_since"])
        # "down since" is when the failing streak began, not when it was confirmed.
        started = parse_iso(health["observed_since"]) if change == "down" else now
        health["confirmed"], health["confirmed_since"], health["last_reminder_at"] = change, iso(started), None
        if previous == "unknown" and change == "up":
            return alerts  # first sight of a healthy agent: nothing to announce

        window_start = health["flap_window_start"]
        window_over = window_start is None or (now - parse_iso(window_start)).total_seconds() > policy.flap_window_s
        if health["flap_alerted"]:
            # Flapping: individual alerts stay quiet; at most one reminder of it per window.
            health["flap_changes"] += 1
            if window_over:
                health["flap_window_start"], health["flap_changes"] = iso(now), 1
                text = (
                    f"{agent} is still flapping (now {change}); alerts for it stay paused "
                    f"until it is stable for {human_duration(policy.flap_window_s)}"
                )
                alerts.append(("flapping", text))
            return alerts
        if window_over:
            health["flap_window_start"], health["flap_changes"] = iso(now), 0
        health["flap_changes"] += 1
        if health["flap_changes"] >= policy.flap_threshold:
            # From here on, windows start at this alert: the next word on it comes a full window later.
            health["flap_alerted"], health["flap_window_start"] = 1, iso(now)
            minutes = human_duration(policy.flap_window_s)
            text = (
                f"{agent} is flapping: {health['flap_changes']} changes within {minutes}, "
                f"now {change}; alerts for it pause until it is stable for {minutes}"
            )
            alerts.append(("flapping", text))
            return alerts
        if change == "down":
            alerts.append(("down", f"{agent} is down since {short_time(started)}: {detail}"))
        elif previous == "down":
            downtime = human_duration((now - since).total_seconds())
            alerts.append(("recovered", f"{agent} is back after {downtime} down"))
        return alerts

    def _end_flapping_if_stable(
        self, agent: str, health: dict[str, Any], now: datetime, alerts: list[tuple[AlertKind, str]]
    ) -> None:
        if not health["flap_alerted"]:
            return
        stable_for = (now - parse_iso(health["confirmed_since"])).total_seconds()
        if stable_for >= self.policy.flap_window_s:
            health["flap_window_start"], health["flap_changes"], health["flap_alerted"] = None, 0, 0
            text = f"{agent} has been stable ({health['confirmed']}) for {human_duration(stable_for)}; alerts resume"
            alerts.append(("recovered", text))

    # --- maintenance --------------------------------------------------------------------------

    async def silence(self, requester: Requester, agent: str, duration_s: float) -> datetime:
        """No alerts for `agent` until the returned time (0 lifts a silence). Admins only."""
        if requester.is_agent or requester.level < AccessLevel.ADMIN:
            raise NotAllowed(f"silencing alerts needs the admin level; {requester.describe()} is not")
        name = self._config.require_agent(agent).name
        if not 0 <= duration_s <= 7 * 86_400:
            raise InvalidInput("a silence lasts from 0 (lift it) up to 7 days")
        now = self._clock()
        until = now + timedelta(seconds=duration_s)
        await self._store.execute(
            "INSERT INTO agent_health (agent, observed, observed_since, confirmed, confirmed_since, last_probe_at, "
            "silenced_until, silenced_by) VALUES (?, 'unknown', ?, 'unknown', ?, ?, ?, ?) "
            "ON CONFLICT (agent) DO UPDATE SET silenced_until = excluded.silenced_until, "
            "silenced_by = excluded.silenced_by",
            (name, iso(now), iso(now), iso(now), iso(until) if duration_s else None, requester.name),
        )
        return until

    # --- reading ------------------------------------------------------------------------------

    async def health(self, agent: str) -> AgentHealth | None:
        name = self._config.require_agent(agent).name
        row = await self._store.fetchone(
            "SELECT agent, observed, observed_since, confirmed, confirmed_since, failures, last_probe_at, latency_ms, "
            "release, detail, silenced_until, silenced_by FROM agent_health WHERE agent = ?",
            (name,),
        )
        return AgentHealth(**dict(row)) if row is not None else None

    async def transitions(self, agent: str, limit: int = 10) -> list[Transition]:
        name = self._config.require_agent(agent).name
        rows = await self._store.fetchall(
            "SELECT at, from_state, to_state, detail FROM agent_transitions WHERE agent = ? ORDER BY id DESC LIMIT ?",
            (name, limit),
        )
        return [Transition(**dict(row)) for row in rows]

    async def uptime(self, agent: str, window_s: float) -> float | None:
        """Fraction of the window the agent was up (ready or degraded), over the part we observed."""
        name = self._config.require_agent(agent).name
        now = self._clock()
        start = now - timedelta(seconds=window_s)
        before = await self._store.fetchone(
            "SELECT at, to_state FROM agent_transitions WHERE agent = ? AND at <= ? ORDER BY at DESC, id DESC LIMIT 1",
            (name, iso(start)),
        )
        rows = await self._store.fetchall(
            "SELECT at, to_state FROM agent_transitions WHERE agent = ? AND at > ? ORDER BY at, id", (name, iso(start))
        )
        points = ([(start, before["to_state"])] if before else []) + [(parse_iso(r["at"]), r["to_state"]) for r in rows]
        if not points:
            return None
        up = total = 0.0
        for (at, state), (following, _) in zip(points, [*points[1:], (now, "")], strict=True):
            span = (following - at).total_seconds()
            total += span
            up += span if state in UP_STATES else 0.0
        return up / total if total > 0 else (1.0 if points[-1][1] in UP_STATES else 0.0)

    # --- the alert outbox ---------------------------------------------------------------------

    async def unposted_alerts(self, limit: int = 20) -> list[Alert]:
        rows = await self._store.fetchall(
            "SELECT id, at, agent, kind, text FROM alerts WHERE posted_at IS NULL ORDER BY id LIMIT ?", (limit,)
        )
        return [Alert(**dict(row)) for row in rows]

    async def mark_posted(self, alert_id: int) -> None:
        await self._store.execute("UPDATE alerts SET posted_at = ? WHERE id = ?", (iso(self._clock()), alert_id))

    async def mark_failed(self, alert_id: int, error: str) -> None:
        await self._store.execute(
            "UPDATE alerts SET attempts = attempts + 1, last_error = ? WHERE id = ?", (error[:500], alert_id)
        )
