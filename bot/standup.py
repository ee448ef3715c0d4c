"""The daily standup: one message in #daily-standup about the last 24 hours, agent by agent.

Everything comes from what the other services recorded (the monitor's history, heartbeat runs,
delegations, tasks), so the standup is a read of the database, never a probe. `StandupService` posts it
through a poster the Discord cog registers, daily (the runner's timer, lease holder only, once a day)
or on demand (`/standup post:true`), and audits every post.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from bot.audit import actor_audit_row
from bot.authz import AccessLevel, Requester
from bot.boards import TOTAL_MAX, BoardContent, BoardField, paginate
from bot.clock import Clock, iso, utcnow
from bot.config import ClusterConfig
from bot.errors import AtomizerError, NotAllowed
from bot.monitor import StatusMonitor
from bot.store import Store

if TYPE_CHECKING:
    from bot.services import Services

log = logging.getLogger(__name__)

STATE_ICON = {"ready": "🟢", "starting": "🟡", "degraded": "🟠", "down": "🔴", "foreign": "🟣"}
MAX_EMBEDS = 10  # per message
CHAIN_TEXT = 40  # characters of a chain's root instruction shown
CHAINS_SHOWN = 8  # chains listed by name; the rest are counted


@dataclass
class AgentDay:
    agent: str
    state: str = "unknown"
    uptime: float | None = None
    heartbeats: dict[str, int] = field(default_factory=dict)  # ok / failed / skipped
    skipped_slots: list[str] = field(default_factory=list)
    delegations: dict[str, int] = field(default_factory=dict)  # received / accepted / failed
    tasks: dict[str, int] = field(default_factory=dict)  # done (24 h) / in_progress / blocked / overdue


@dataclass(frozen=True)
class ChainDay:
    """A chain of sub-delegations active in the day, counted once under its root."""

    root: int
    agent: str  # the root's agent
    message: str  # the root's instruction
    size: int  # delegations in the chain, the root included
    depth: int  # how deep it went (1 = the root alone)

    def line(self) -> str:
        """`D-12 nx-expert: Mesh the M2 mirror (chain of 4, 3 deep)`."""
        text = " ".join(self.message.split())
        text = text if len(text) <= CHAIN_TEXT else text[: CHAIN_TEXT - 1].rstrip() + "…"
        return f"D-{self.root} {self.agent}: {text} (chain of {self.size}, {self.depth} deep)"


@dataclass
class StandupReport:
    day_ending: datetime
    agents: list[AgentDay]
    chains: list[ChainDay] = field(default_factory=list)

    def total(self, section: str, key: str) -> int:
        return sum(getattr(a, section).get(key, 0) for a in self.agents)


async def collect_standup(
    config: ClusterConfig, store: Store, monitor: StatusMonitor, now: datetime, states: Mapping[str, str] | None = None
) -> StandupReport:
    """`states`: each agent's state probed just now, for a process without the running bot's monitor (the CLI)."""
    since = iso(now - timedelta(days=1))
    days = {a.name: AgentDay(a.name) for a in config.agents}
    for row in await store.fetchall("SELECT agent, observed FROM agent_health"):
        if row["agent"] in days:
            days[row["agent"]].state = row["observed"]
    for name, state in (states or {}).items():
        if name in days:
            days[name].state = state
    for name, day in days.items():
        day.uptime = await monitor.uptime(name, 86_400)
    for row in await store.fetchall(
        "SELECT agent, status, slot FROM heartbeat_runs WHERE slot >= ? AND slot <= ? ORDER BY slot", (since, iso(now))
    ):
        day = days.get(row["agent"])
        if day is None or row["status"] == "running":
            continue
        kind = {"ok": "ok", "skipped": "skipped"}.get(row["status"], "failed")
        day.heartbeats[kind] = day.heartbeats.get(kind, 0) + 1
        if kind == "skipped":
            day.skipped_slots.append(row["slot"][11:16])
    # A chain is counted once, under its root (its sub-delegations are listed with it, below).
    for row in await store.fetchall(
        "SELECT agent, status, count(*) AS n FROM delegations WHERE created_at >= ? AND parent_id IS NULL "
        "GROUP BY agent, status",
        (since,),
    ):
        day = days.get(row["agent"])
        if day is None:
            continue
        day.delegations["received"] = day.delegations.get("received", 0) + row["n"]
        bucket = {"accepted": "accepted", "failed": "failed", "expired": "failed", "unconfirmed": "failed"}
        if row["status"] in bucket:
            key = bucket[row["status"]]
            day.delegations[key] = day.delegations.get(key, 0) + row["n"]
    today = now.date().isoformat()
    for row in await store.fetchall(
        "SELECT assignee, status, count(*) AS n, sum(CASE WHEN due < ? AND status IN "
        "('todo', 'in_progress', 'blocked', 'review') THEN 1 ELSE 0 END) AS overdue, "
        "sum(CASE WHEN status = 'done' AND updated_at >= ? THEN 1 ELSE 0 END) AS done_today "
        "FROM tasks WHERE assignee_kind = 'agent' GROUP BY assignee, status",
        (today, since),
    ):
        day = days.get(row["assignee"])
        if day is None:
            continue
        if row["status"] in ("in_progress", "blocked"):
            day.tasks[row["status"]] = day.tasks.get(row["status"], 0) + row["n"]
        day.tasks["done"] = day.tasks.get("done", 0) + (row["done_today"] or 0)
        day.tasks["overdue"] = day.tasks.get("overdue", 0) + (row["overdue"] or 0)
    chains = [
        ChainDay(row["id"], row["agent"], row["message"], row["size"], row["depth"])
        for row in await store.fetchall(
            "SELECT r.id, r.agent, r.message, count(d.id) AS size, max(d.depth) AS depth FROM delegations r "
            "JOIN delegations d ON d.root_id = r.id WHERE r.parent_id IS NULL AND r.id IN "
            "(SELECT root_id FROM delegations WHERE created_at >= ? AND parent_id IS NOT NULL) GROUP BY r.id "
            "ORDER BY r.id",
            (since,),
        )
    ]
    return StandupReport(now, list(days.values()), chains)


def _line(day: AgentDay) -> str:
    hb, dl, tk = day.heartbeats, day.delegations, day.tasks
    uptime = "-" if day.uptime is None else f"{day.uptime * 100:.1f} %"
    parts = [
        f"{day.state} · up {uptime}",
        f"heartbeats {hb.get('ok', 0)} ok / {hb.get('failed', 0)} failed / {hb.get('skipped', 0)} skipped",
        f"delegations {dl.get('received', 0)} in / {dl.get('accepted', 0)} accepted / {dl.get('failed', 0)} failed",
        f"tasks {tk.get('done', 0)} done / {tk.get('in_progress', 0)} in progress / {tk.get('blocked', 0)} blocked",
    ]
    if tk.get("overdue"):
        parts.append(f"**{tk['overdue']} overdue**")
    line = "\n".join(parts)
    if day.skipped_slots:
        shown = ", ".join(day.skipped_slots[:6]) + (" …" if len(day.skipped_slots) > 6 else "")
        line += f"\nskipped heartbeat slots (policy skip): {shown}"
    return line


def render_standup(report: StandupReport) -> list[BoardContent]:
    """One message: as many embeds as the fleet needs (at most 10), within 6,000 characters in all."""
    totals = (
        f"{len(report.agents)} agents, {sum(1 for a in report.agents if a.state == 'ready')} ready · "
        f"heartbeats {report.total('heartbeats', 'ok')} ok / {report.total('heartbeats', 'failed')} failed / "
        f"{report.total('heartbeats', 'skipped')} skipped · delegations {report.total('delegations', 'received')} in / "
        f"{report.total('delegations', 'accepted')} accepted · tasks {report.total('tasks', 'done')} done / "
        f"{report.total('tasks', 'in_progress')} in progress / {report.total('tasks', 'blocked')} blocked"
        + (f" · {report.total('tasks', 'overdue')} overdue" if report.total("tasks", "overdue") else "")
    )
    title = f"Daily standup · 24 h to {report.day_ending.strftime('%Y-%m-%d %H:%M UTC')}"
    fields = [BoardField(f"{STATE_ICON.get(a.state, '⚪')} {a.agent}", _line(a), inline=True) for a in report.agents]
    chains = _chains_field(report.chains)
    parts = paginate(title, fields + chains, description=totals)
    if sum(p.size() for p in parts) <= TOTAL_MAX and len(parts) <= MAX_EMBEDS:
        return parts
    # A big fleet: one compact line per agent so the whole standup stays one message.
    compact = [
        BoardField(f"{STATE_ICON.get(a.state, '⚪')} {a.agent}", _compact(a), inline=True) for a in report.agents
    ]
    return paginate(title, compact + chains, description=totals)


def _chains_field(chains: list[ChainDay]) -> list[BoardField]:
    """The day's chains, each once under its root (its delegations count there, not per agent)."""
    if not chains:
        return []
    lines = [chain.line() for chain in chains[:CHAINS_SHOWN]]
    if len(chains) > CHAINS_SHOWN:
        lines.append(f"+{len(chains) - CHAINS_SHOWN} more: atomizer-hq delegations show <id>")
    return [BoardField(f"Chains ({len(chains)})", "\n".join(lines), inline=False)]


def _compact(day: AgentDay) -> str:
    hb, dl, tk = day.heartbeats, day.delegations, day.tasks
    uptime = "-" if day.uptime is None else f"{day.uptime * 100:.0f}%"
    return (
        f"↑{uptime} hb {hb.get('ok', 0)}/{hb.get('failed', 0)}/{hb.get('skipped', 0)} "
        f"d {dl.get('received', 0)}/{dl.get('accepted', 0)} t {tk.get('done', 0)}/{tk.get('in_progress', 0)}/"
        f"{tk.get('blocked', 0)}"
    )


def standup_text(parts: list[BoardContent]) -> str:
    """The standup as plain text (`atomizer-hq standup`)."""
    lines: list[str] = []
    for part in parts:
        lines += [part.title, part.description, ""] if part.description else [part.title, ""]
        for item in part.fields:
            lines.append(item.name)
            lines += [f"  {line}" for line in item.value.replace("**", "").splitlines()]
    return "\n".join(lines).rstrip()


# --- posting: the core decides and records, a front end (the Discord cog) delivers ------------------

StandupPoster = Callable[[list[BoardContent]], Awaitable[str]]  # posts one message; returns its id
SCHEDULER = "scheduler"  # the audit trail's actor and front end for the daily post


class StandupNotPosted(AtomizerError):
    """There is no Discord connection in this process to post the standup with."""

    code = "standup_not_posted"
    http_status = 503


class StandupService:
    """Composes the standup from the database, and posts it through the poster a front end registered.

    The core stays Discord-free: the Discord cog sets `post` when it loads (and clears it when it
    unloads); without it (the CLI, the API alone) the standup can be read but not posted.
    """

    def __init__(self, config: ClusterConfig, store: Store, monitor: StatusMonitor, *, clock: Clock = utcnow) -> None:
        self._config = config
        self._store = store
        self._monitor = monitor
        self._clock = clock
        self.post: StandupPoster | None = None

    async def compose(self, now: datetime | None = None, states: Mapping[str, str] | None = None) -> list[BoardContent]:
        """The standup of the 24 hours up to `now`: one message, at most 10 embeds."""
        report = await collect_standup(self._config, self._store, self._monitor, now or self._clock(), states)
        return render_standup(report)

    async def text(self, now: datetime | None = None, states: Mapping[str, str] | None = None) -> str:
        return standup_text(await self.compose(now, states))

    def local_day(self, now: datetime) -> str:
        """The standup's day, in the standup's time zone: the daily post is once per such day."""
        return now.astimezone(ZoneInfo(self._config.heartbeats.standup_timezone)).date().isoformat()

    async def post_now(self, requester: Requester) -> str:
        """`/standup post:true`: post it now in the standup channel (operators and up); the message id."""
        now = self._clock()
        if requester.is_agent or requester.level < AccessLevel.OPERATOR:
            reason = (
                f"posting the standup needs the operator level; {requester.describe()} is not. "
                "Without posting, /standup shows it to you alone"
            )
            await self._audit(requester.kind, requester.name, requester.front_end, now, "refused", {"reason": reason})
            raise NotAllowed(reason)
        return await self._post(requester.kind, requester.name, requester.front_end, now)

    async def post_scheduled(self, now: datetime | None = None) -> str | None:
        """The daily post, at most once a day whoever tries; call it only while holding the scheduler lease.

        None when today's was already posted (say by a process that held the lease before us).
        """
        now = now or self._clock()
        posted = await self._store.fetchone(
            "SELECT at FROM audit_log WHERE action = 'standup.post' AND front_end = ? AND subject = ? "
            "AND decision = 'allowed'",
            (SCHEDULER, self.local_day(now)),
        )
        if posted is not None:
            log.info("standup: today's was already posted at %s; not again", posted["at"])
            return None
        return await self._post("system", SCHEDULER, SCHEDULER, now)

    async def _post(self, kind: str, actor: str, front_end: str, now: datetime) -> str:
        if self.post is None:
            reason = (
                "posting the standup needs the running bot's Discord connection (`atomizer-hq run`); "
                "`atomizer-hq standup` prints it, /standup post:true posts it from Discord"
            )
            await self._audit(kind, actor, front_end, now, "failed", {"reason": reason})
            raise StandupNotPosted(reason)
        parts = await self.compose(now)
        try:
            message_id = await self.post(parts)
        except Exception as exc:
            await self._audit(kind, actor, front_end, now, "failed", {"error": f"{type(exc).__name__}: {exc}"[:500]})
            raise
        await self._audit(kind, actor, front_end, now, "allowed", {"message_id": message_id, "embeds": len(parts)})
        log.info("standup for %s posted (message %s, by %s)", self.local_day(now), message_id, actor)
        return message_id

    async def _audit(
        self, kind: str, actor: str, front_end: str, now: datetime, decision: str, detail: dict[str, Any]
    ) -> None:
        row = actor_audit_row(kind, actor, front_end, "standup.post", self.local_day(now), decision, detail, now)
        await self._store.execute(*row)


def standup_for(services: Services) -> StandupService:
    """The process's one StandupService: the runner's timer and the Discord cog share it."""
    return services.standup
