"""The status monitor: history, confirmed-transition alerts, flapping, silences, uptime."""

from __future__ import annotations

from datetime import datetime
from itertools import pairwise

import pytest

from bot.authz import AccessLevel, Requester
from bot.cluster import AgentStatus, FleetStatus
from bot.errors import NotAllowed
from bot.gateway import Readiness
from bot.monitor import MonitorPolicy, StatusMonitor
from bot.services import Services
from tests.clocks import FakeClock
from tests.conftest import ServicesOnFleet

ADMIN = Requester(kind="person", name="antoine", front_end="discord", level=AccessLevel.ADMIN)
PROBE_EVERY_S = 30


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def monitor_for(services: Services, clock: FakeClock, **policy: float | int | None) -> StatusMonitor:
    return StatusMonitor(services.config, services.store, services.cluster, clock=clock, policy=MonitorPolicy(**policy))


def fleet_of(services: Services, **states: str) -> FleetStatus:
    """A probe round as the cluster service reports it; every agent ready unless named."""
    agents = [
        AgentStatus(a.name, a.port, a.model, Readiness(a.name, states.get(a.name, "ready"), 0.01, "probe detail"))
        for a in services.config.agents
    ]
    return FleetStatus(agents, 0.01)


async def rounds(monitor: StatusMonitor, services: Services, clock: FakeClock, *states: str, agent: str = "webster"):
    """Feed one round per state for `agent`; return every alert raised, as (kind, text)."""
    raised = []
    for state in states:
        clock.advance(PROBE_EVERY_S)
        raised += [(a.kind, a.text) for a in await monitor.observe(fleet_of(services, **{agent: state}))]
    return raised


async def test_an_agent_killed_and_restarted_gives_one_down_and_one_recovery_alert(
    services_on_fleet: ServicesOnFleet, clock: FakeClock
) -> None:
    services, fleet = await services_on_fleet()
    monitor = monitor_for(services, clock)

    async def probe() -> list[tuple[str, str]]:
        clock.advance(PROBE_EVERY_S)
        _, alerts = await monitor.probe_round(timeout=1.0)
        return [(a.agent, a.kind) for a in alerts]

    assert await probe() == []  # first sight of a healthy fleet: nothing to say
    await fleet.take_down("webster")
    assert await probe() == []  # one failed probe is not a confirmed transition
    assert await probe() == [("webster", "down")]
    assert await probe() == []
    await fleet.bring_up("webster")
    assert await probe() == [("webster", "recovered")]
    assert await probe() == []
    down, recovered = await monitor.unposted_alerts()
    assert down.text.startswith("webster is down since 09:01 UTC: connection refused")
    assert recovered.text == "webster is back after 1 min 30 s down"


async def test_a_routine_restart_alerts_nobody(services_on_fleet: ServicesOnFleet, clock: FakeClock) -> None:
    services, _ = await services_on_fleet()
    monitor = monitor_for(services, clock)
    assert await rounds(monitor, services, clock, "ready", "down", "starting", "ready") == []
    history = [(t.from_state, t.to_state) for t in await monitor.transitions("webster")]
    assert history == [("starting", "ready"), ("down", "starting"), ("ready", "down"), (None, "ready")]


async def test_history_records_changes_not_every_probe(services_on_fleet: ServicesOnFleet, clock: FakeClock) -> None:
    services, _ = await services_on_fleet()
    monitor = monitor_for(services, clock)
    await rounds(monitor, services, clock, *["ready"] * 10, "foreign", "foreign", *["ready"] * 5)
    assert [t.to_state for t in await monitor.transitions("webster")] == ["ready", "foreign", "ready"]
    health = await monitor.health("webster")
    assert health is not None and health.confirmed == "up" and health.failures == 0


async def test_a_flapping_agent_gets_at_most_one_alert_per_window(
    services_on_fleet: ServicesOnFleet, clock: FakeClock
) -> None:
    services, _ = await services_on_fleet()
    monitor = monitor_for(services, clock, flap_window_s=600, flap_threshold=3)
    await rounds(monitor, services, clock, "ready")
    # 40 minutes of down/up every 2 minutes: 40 confirmed changes, a stream without damping.
    for _ in range(20):
        await rounds(monitor, services, clock, "down", "down", "ready", "ready")
    alerts = await monitor.unposted_alerts(limit=100)
    kinds = [a.kind for a in alerts]
    assert kinds[:3] == ["down", "recovered", "flapping"]  # the first two, before it is known to flap
    flapping = alerts[2:]
    assert {a.kind for a in flapping} == {"flapping"}
    times = [datetime.fromisoformat(a.at) for a in flapping]
    assert all((later - earlier).total_seconds() >= 600 for earlier, later in pairwise(times))
    assert len(flapping) <= 1 + 40 // 10
    # Stable for a whole window: one last word, then normal alerts again.
    assert [k for k, _ in await rounds(monitor, services, clock, *["ready"] * 21)] == ["recovered"]
    assert [k for k, _ in await rounds(monitor, services, clock, "down", "down")] == ["down"]


async def test_a_silenced_agent_raises_no_alerts_until_the_silence_ends(
    services_on_fleet: ServicesOnFleet, clock: FakeClock
) -> None:
    services, _ = await services_on_fleet()
    monitor = monitor_for(services, clock)
    operator = Requester(kind="person", name="op", front_end="discord", level=AccessLevel.OPERATOR)
    with pytest.raises(NotAllowed, match="needs the admin level"):
        await monitor.silence(operator, "webster", 3600)
    until = await monitor.silence(ADMIN, "webster", 3600)
    assert await rounds(monitor, services, clock, "ready", "down", "down", "down", "ready") == []
    health = await monitor.health("webster")
    assert health is not None and health.silenced_until is not None and health.silenced_by == "antoine"
    clock.now = until
    assert [k for k, _ in await rounds(monitor, services, clock, "down", "down")] == ["down"]


async def test_a_reminder_while_down(services_on_fleet: ServicesOnFleet, clock: FakeClock) -> None:
    services, _ = await services_on_fleet()
    monitor = monitor_for(services, clock, reminder_every_s=600)
    kinds = [k for k, _ in await rounds(monitor, services, clock, "ready", *["down"] * 45)]
    assert kinds == ["down", "reminder", "reminder"]


async def test_uptime_over_a_window(services_on_fleet: ServicesOnFleet, clock: FakeClock) -> None:
    services, _ = await services_on_fleet()
    monitor = monitor_for(services, clock)
    assert await monitor.uptime("webster", 86_400) is None  # never observed
    await rounds(monitor, services, clock, "ready")
    clock.advance(3 * 3600)
    await rounds(monitor, services, clock, "down")
    clock.advance(3600 - PROBE_EVERY_S)
    await rounds(monitor, services, clock, "ready")
    clock.advance(4 * 3600 - PROBE_EVERY_S)
    # Observed for 8 h: up 3 h 30 s, down 1 h, up 4 h - 30 s... as the transitions say.
    uptime = await monitor.uptime("webster", 86_400)
    assert uptime == pytest.approx(7 / 8, abs=0.001)
    assert await monitor.uptime("webster", 3600) == pytest.approx(1.0)


async def test_alerts_wait_in_the_outbox_until_posted(services_on_fleet: ServicesOnFleet, clock: FakeClock) -> None:
    services, _ = await services_on_fleet()
    monitor = monitor_for(services, clock)
    await rounds(monitor, services, clock, "ready", "down", "down")
    [alert] = await monitor.unposted_alerts()
    await monitor.mark_failed(alert.id, "429 Too Many Requests")
    assert [a.id for a in await monitor.unposted_alerts()] == [alert.id]  # retried later, not lost
    await monitor.mark_posted(alert.id)
    assert await monitor.unposted_alerts() == []
