"""Health checks and metrics of this process, for `GET /healthz` and `GET /metrics`.

Checks are registered by whoever owns the part being checked (the store by the services, the
scheduler by the runner, Discord by the bot), so the API reports on parts it knows nothing about.
Metrics are read from the database at scrape time — the records are the truth — plus the few
counters only this process sees (calls to Discord's API and the 429s among them).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from bot.clock import iso, utcnow

if TYPE_CHECKING:
    from bot.services import Services

log = logging.getLogger(__name__)
Check = Callable[[], Awaitable[str | None]]  # None when healthy, else what is wrong
OFF_PREFIX = "off: "


def is_failing(result: str) -> bool:
    return result != "ok" and not result.startswith(OFF_PREFIX)


@dataclass
class DiscordCounters:
    """What this process asked of Discord's API."""

    calls: dict[str, int] = field(default_factory=dict)  # by HTTP method
    rate_limited: int = 0
    errors: int = 0


@dataclass
class HealthChecks:
    checks: dict[str, Check] = field(default_factory=dict)
    discord: DiscordCounters = field(default_factory=DiscordCounters)

    off: dict[str, str] = field(default_factory=dict)  # parts switched off on purpose: reported, not failing

    def register(self, name: str, check: Check) -> None:
        self.checks[name] = check
        self.off.pop(name, None)

    def register_off(self, name: str, reason: str) -> None:
        """A part this process runs without by choice (`run --no-discord`): 'off: reason', and still healthy."""
        self.checks.pop(name, None)
        self.off[name] = reason

    async def run(self) -> dict[str, str]:
        results = {name: f"{OFF_PREFIX}{reason}" for name, reason in self.off.items()}
        for name, check in self.checks.items():
            try:
                problem = await check()
            except Exception as exc:  # a check that breaks is a failed check, not a crashed endpoint
                problem = f"{type(exc).__name__}: {exc}"
            results[name] = "ok" if problem is None else f"error: {problem}"
        return results


def database_writable(services: Services) -> Check:
    async def check() -> str | None:
        await services.store.execute(
            "INSERT INTO meta (key, value) VALUES ('healthz', ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (iso(utcnow()),),
        )
        return None

    return check


async def render_metrics(services: Services) -> bytes:
    """Prometheus text format, built from the database and this process's Discord counters."""
    store = services.store
    registry = CollectorRegistry(auto_describe=False)
    families = []

    delegations = CounterMetricFamily("atomizer_delegations", "Delegations by outcome", labels=["agent", "status"])
    for row in await store.fetchall("SELECT agent, status, count(*) AS n FROM delegations GROUP BY agent, status"):
        delegations.add_metric([row["agent"], row["status"]], row["n"])
    families.append(delegations)

    up = GaugeMetricFamily(
        "atomizer_agent_up", "1 when the last probe found the agent ready or degraded", labels=["agent"]
    )
    latency = GaugeMetricFamily("atomizer_probe_latency_seconds", "Latency of the last probe", labels=["agent"])
    state = GaugeMetricFamily("atomizer_agent_state", "The last probe's state (1 for the current one)",
                              labels=["agent", "state"])  # fmt: skip
    for row in await store.fetchall("SELECT agent, observed, latency_ms FROM agent_health"):
        up.add_metric([row["agent"]], 1.0 if row["observed"] in ("ready", "degraded") else 0.0)
        state.add_metric([row["agent"], row["observed"]], 1.0)
        if row["latency_ms"] is not None:
            latency.add_metric([row["agent"]], row["latency_ms"] / 1000)
    families += [up, latency, state]

    heartbeats = CounterMetricFamily(
        "atomizer_heartbeat_runs", "Heartbeat runs by result and how far they got", labels=["agent", "status", "level"]
    )
    for row in await store.fetchall(
        "SELECT agent, status, coalesce(level, 'none') AS level, count(*) AS n FROM heartbeat_runs "
        "GROUP BY agent, status, level"
    ):
        heartbeats.add_metric([row["agent"], row["status"], row["level"]], row["n"])
    families.append(heartbeats)

    tasks = GaugeMetricFamily("atomizer_tasks", "Tasks by status", labels=["status"])
    for row in await store.fetchall("SELECT status, count(*) AS n FROM tasks GROUP BY status"):
        tasks.add_metric([row["status"]], row["n"])
    families.append(tasks)

    counters = services.health.discord
    calls = CounterMetricFamily("atomizer_discord_api_calls", "Calls to Discord's HTTP API", labels=["method"])
    for method, count in sorted(counters.calls.items()):
        calls.add_metric([method], count)
    limited = CounterMetricFamily("atomizer_discord_rate_limited", "Discord answers 429 (rate limited)")
    limited.add_metric([], counters.rate_limited)
    errors = CounterMetricFamily("atomizer_discord_api_errors", "Discord answers 4xx/5xx other than 429")
    errors.add_metric([], counters.errors)
    families += [calls, limited, errors]

    class _Snapshot:
        def collect(self):  # type: ignore[no-untyped-def]
            return families

    registry.register(_Snapshot())
    return generate_latest(registry)
