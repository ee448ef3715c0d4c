"""Heartbeats on a controllable clock against the simulated fleet: slots, policies, the lease, the switch."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bot.authz import AccessLevel, Requester
from bot.config import ClusterConfig, HeartbeatJob, parse_cluster_config
from bot.errors import NotAllowed
from bot.heartbeat import HeartbeatService, in_active_hours, jitter_for, slots_between
from bot.services import Services
from bot.simulator import RELEASE_LEGACY, SimulatedFleet
from tests.clocks import FakeClock
from tests.conftest import ServicesOnFleet

ADMIN = Requester(kind="person", name="antoine", front_end="cli", level=AccessLevel.ADMIN)
STANDUP = "channel:100000000000000103"


async def no_sleep(_: float) -> None:
    return None


def with_jobs(config: ClusterConfig, **jobs: dict[str, Any]) -> ClusterConfig:
    raw = config.model_dump(mode="python", exclude_none=True)
    raw["heartbeat"] = jobs
    raw["heartbeats"] = {**raw["heartbeats"], "lease_ttl": 3600}  # the leader ticks every 15 s in real life
    return parse_cluster_config(raw, "test-config")


Make = Callable[..., Awaitable[tuple[HeartbeatService, Services, SimulatedFleet]]]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime(2026, 11, 25, 9, 0, tzinfo=UTC))


@pytest.fixture
def make(services_on_fleet: ServicesOnFleet, clock: FakeClock) -> Make:
    async def build(jobs: dict[str, dict[str, Any]] | None = None, holder: str = "bot-1", **fleet: Any):
        services, sim = await services_on_fleet(**fleet)
        config = with_jobs(services.config, **(jobs or {"manager": {"every": "30m"}}))
        service = HeartbeatService(config, services.store, services.gateway, clock=clock, sleep=no_sleep, holder=holder)
        return service, services, sim

    return build


# --- slots --------------------------------------------------------------------------------------


def test_slots_fire_only_within_active_hours() -> None:
    job = HeartbeatJob(every=1800, active_hours={"start": "08:00", "end": "18:00", "timezone": "Europe/Paris"})
    day = datetime(2026, 11, 25, 0, 0, tzinfo=UTC)
    slots = slots_between(job, day, day + timedelta(days=1))
    paris = [s.astimezone(job_tz(job)).strftime("%H:%M") for s in slots]
    assert paris[0] == "08:00" and paris[-1] == "18:00" and len(slots) == 21
    assert all(in_active_hours(job, s) for s in slots)
    overnight = HeartbeatJob(every=3600, active_hours={"start": "22:00", "end": "02:00", "timezone": "UTC"})
    hours = [s.hour for s in slots_between(overnight, day, day + timedelta(days=1))]
    assert hours == [1, 2, 22, 23, 0] or hours == [0, 1, 2, 22, 23]


def job_tz(job: HeartbeatJob):
    from zoneinfo import ZoneInfo

    assert job.active_hours is not None
    return ZoneInfo(job.active_hours.timezone)


def test_cron_slots_and_jitter_bounds() -> None:
    job = HeartbeatJob(cron="0 9 * * 1-5", jitter=300)
    week = datetime(2026, 11, 23, 0, 0, tzinfo=UTC)  # a Monday
    slots = slots_between(job, week, week + timedelta(days=7))
    assert [s.strftime("%a %H:%M") for s in slots] == [f"{d} 09:00" for d in ("Mon", "Tue", "Wed", "Thu", "Fri")]
    offsets = [
        jitter_for("manager", s, 300) for s in slots_between(HeartbeatJob(every=60), week, week + timedelta(days=2))
    ]
    assert all(0 <= o < 300 for o in offsets) and len(set(offsets)) > 100  # spread, within bounds
    assert jitter_for("manager", slots[0], 300) == jitter_for("manager", slots[0], 300)  # stable per slot


# --- runs -----------------------------------------------------------------------------------------


async def test_a_due_slot_sends_one_heartbeat_with_an_explicit_target(make: Make, clock: FakeClock) -> None:
    service, _services, fleet = await make()
    [first] = await service.tick()  # the 09:00 slot is due now; nothing older counts at a first start
    assert first.slot.startswith("2026-11-25T09:00")
    clock.advance(30 * 60)  # 09:30
    [run] = await service.tick()
    assert (run.status, run.level, run.trigger) == ("ok", "completed", "schedule")
    hook = fleet.received("manager")[-1]
    assert (hook.body["channel"], hook.body["to"]) == ("discord", STANDUP)  # never a bare id, never a DM
    assert hook.idempotency_key == "heartbeat:manager:2026-11-25T09:30:00.000000+00:00"
    assert hook.body["waitForCompletion"] is True
    assert await service.tick() == []  # the slot ran: not again
    clock.advance(60)
    assert await service.tick() == []


@pytest.mark.parametrize(("policy", "runs"), [("skip", 0), ("catch_up_once", 1)])
async def test_after_a_five_hour_outage_the_policy_decides_the_backlog(
    make: Make, clock: FakeClock, policy: str, runs: int
) -> None:
    service, _services, fleet = await make({"manager": {"every": "30m", "missed": policy}})
    clock.advance(30 * 60)
    await service.tick()  # 09:30 ran
    clock.advance(5 * 3600 + 10 * 60)  # the bot was down until 14:40
    recorded = await service.tick()
    skipped = [r for r in recorded if r.status == "skipped"]
    ran = [r for r in recorded if r.status != "skipped"]
    assert len(skipped) == 10 - runs and len(ran) == runs
    assert all("missed while atomizer-hq was not running" in (r.detail or "") for r in skipped)
    assert len(fleet.received("manager")) == 1 + runs  # no storm
    if runs:
        assert ran[0].trigger == "catch_up" and ran[0].slot.startswith("2026-11-25T14:30")
    clock.advance(20 * 60)  # 15:00: back on schedule
    [regular] = await service.tick()
    assert regular.trigger == "schedule" and regular.status == "ok"


async def test_a_slot_retried_after_a_503_reaches_the_agent_once(make: Make, clock: FakeClock) -> None:
    service, _services, fleet = await make(specs={"manager": {"startup": None}})
    clock.advance(30 * 60)
    [starting] = await service.tick()
    assert starting.status == "not_ready"  # readiness says starting: we do not even send
    fleet.finish_startup("manager")
    # The same slot, tried again (say by another process): already recorded, so never sent twice.
    again = await service.run_slot("manager", datetime(2026, 11, 25, 9, 30, tzinfo=UTC), "schedule")
    assert again.status == "not_ready" and fleet.received("manager") == []


async def test_an_agent_that_answers_503_while_ready_gets_the_slot_once(make: Make, clock: FakeClock) -> None:
    service, services, fleet = await make(specs={"manager": {"fail_rate": 0.0}})
    gateway = services.gateway
    calls: list[str] = []
    original = gateway.send_agent_hook

    async def flaky(agent, hook, *, idempotency_key=None, read_timeout=None):
        calls.append(idempotency_key)
        if len(calls) == 1:
            from bot.errors import AgentUnavailable

            raise AgentUnavailable(agent.name, "the gateway is starting (HTTP 503)", sent=False)
        return await original(agent, hook, idempotency_key=idempotency_key, read_timeout=read_timeout)

    gateway.send_agent_hook = flaky  # type: ignore[method-assign]
    clock.advance(30 * 60)
    [run] = await service.tick()
    assert run.status == "ok" and len(calls) == 2 and calls[0] == calls[1]
    assert len(fleet.received("manager")) == 1


async def test_two_processes_never_both_fire_a_slot_and_the_second_takes_over(make: Make, clock: FakeClock) -> None:
    first, services, fleet = await make(holder="bot-1")
    second = HeartbeatService(first._config, services.store, services.gateway, clock=clock, sleep=no_sleep,
                              holder="bot-2")  # fmt: skip
    clock.advance(30 * 60)
    assert len(await first.tick()) == 1
    assert await second.tick() == []  # standing by
    clock.advance(30 * 60)
    assert await second.tick() == [] and len(await first.tick()) == 1
    assert len(fleet.received("manager")) == 2
    clock.advance(60 * 60 + 1)  # bot-1 died: its lease (1 h here) runs out
    taken = await second.tick()
    assert [(r.slot[11:16], r.status) for r in taken] == [("10:30", "skipped"), ("11:00", "ok")]
    assert len(fleet.received("manager")) == 3


async def test_a_killed_holder_on_this_host_is_taken_over_at_once(make: Make, clock: FakeClock) -> None:
    """A SIGKILLed copy renews nothing, but its restart need not wait up to lease_ttl for its own old lease."""
    dead = await asyncio.create_subprocess_exec("true")
    await dead.wait()  # reaped: no process has that pid now
    first, services, fleet = await make(holder=f"{socket.gethostname()}:{dead.pid}:0a1b2c")
    clock.advance(30 * 60)
    assert len(await first.tick()) == 1  # the first copy holds the lease for the next hour, then it is killed
    second = HeartbeatService(first._config, services.store, services.gateway, clock=clock, sleep=no_sleep)
    clock.advance(30 * 60)
    assert await second.hold_lease() and len(await second.tick()) == 1  # at once, not an hour later
    assert len(fleet.received("manager")) == 2


@pytest.mark.parametrize("where", ["a live process", "another host", "this process"])
async def test_a_holder_not_proven_gone_keeps_the_lease_until_it_runs_out(
    make: Make, clock: FakeClock, where: str
) -> None:
    alive = await asyncio.create_subprocess_exec("sleep", "60")
    try:
        pid = {"a live process": alive.pid, "another host": 999_999_999, "this process": os.getpid()}[where]
        host = "elsewhere.example" if where == "another host" else socket.gethostname()
        first, services, _ = await make(holder=f"{host}:{pid}:0a1b2c")
        assert await first.hold_lease()
        second = HeartbeatService(first._config, services.store, services.gateway, clock=clock, sleep=no_sleep)
        assert not await second.hold_lease()  # standing by
        clock.advance(60 * 60 + 1)  # the lease (1 h here) runs out
        assert await second.hold_lease()
    finally:
        alive.kill()
        await alive.wait()


async def test_three_failed_heartbeats_raise_one_alert_and_recovery_is_announced_once(
    make: Make, clock: FakeClock
) -> None:
    service, services, fleet = await make(specs={"manager": {"down": True}})
    for _ in range(5):
        clock.advance(30 * 60)
        await service.tick()
    alerts = await services.store.fetchall("SELECT kind, text FROM alerts ORDER BY id")
    assert [a["kind"] for a in alerts] == ["heartbeat_failing"]
    assert alerts[0]["text"].startswith("manager: heartbeats failing since 09:30 UTC (3 in a row)")
    await fleet.bring_up("manager")
    for _ in range(3):
        clock.advance(30 * 60)
        await service.tick()
    kinds = [a["kind"] for a in await services.store.fetchall("SELECT kind FROM alerts ORDER BY id")]
    assert kinds == ["heartbeat_failing", "heartbeat_recovered"]


async def test_an_accepted_run_that_fails_is_a_run_failure_not_a_success(make: Make, clock: FakeClock) -> None:
    service, services, _fleet = await make({"webster": {"every": "30m"}}, specs={"webster": {"model_ok": False}})
    for _ in range(3):
        clock.advance(30 * 60)
        [run] = await service.tick()
        assert (run.status, run.level) == ("run_failed", "accepted") and run.run_id
    [alert] = await services.store.fetchall("SELECT text FROM alerts")
    assert alert["text"].startswith("webster: up, hooks OK, runs failing since 09:30 UTC")


async def test_the_legacy_release_without_completion_is_not_counted_ok(make: Make, clock: FakeClock) -> None:
    service, _, _ = await make({"webster": {"every": "30m"}}, release={"webster": RELEASE_LEGACY})
    clock.advance(30 * 60)
    [run] = await service.tick()
    # 2026.2.12 ignores waitForCompletion: accepted is all we can verify, and we say so.
    assert run.status in ("no_completion", "ok") and run.level in ("accepted", "completed")


async def test_pause_resume_and_manual_runs(make: Make, clock: FakeClock) -> None:
    service, _services, _fleet = await make()
    operator = Requester(kind="person", name="op", front_end="cli", level=AccessLevel.OPERATOR)
    with pytest.raises(NotAllowed, match="pausing heartbeats needs the admin level"):
        await service.pause(operator, "manager", 3600)
    await service.pause(ADMIN, "manager", 3600)
    clock.advance(30 * 60)
    assert await service.tick() == []
    manual = await service.run_now(operator, "manager")
    assert manual.trigger == "manual" and manual.status == "ok"
    await service.resume(ADMIN, "manager")
    clock.advance(30 * 60)
    assert [r.status for r in await service.tick()] == ["ok"]
    [status] = await service.status()
    assert status.agent == "manager" and status.schedule == "every 30 min 00 s" and status.next_slot


async def test_a_pause_in_force_or_heartbeats_already_running_change_nothing(make: Make, clock: FakeClock) -> None:
    service, services, _ = await make()
    other = Requester(kind="person", name="vera", front_end="discord", level=AccessLevel.ADMIN)

    assert await service.resume(ADMIN, "manager") == "manager's heartbeats are not paused; they already run"
    paused = await service.pause(ADMIN, "manager", 3600)
    assert paused.already is None
    within = await service.pause(other, "manager", 1800)  # ends before the pause in force: nothing to do
    assert (within.until, within.already) == (paused.until, f"manager's heartbeats are already paused until "
                                              f"{paused.until[:16].replace('T', ' ')} UTC")  # fmt: skip
    state = await services.store.fetchone("SELECT paused_until, paused_by FROM heartbeat_state WHERE agent = ?",
                                          ("manager",))  # fmt: skip
    assert (state["paused_until"], state["paused_by"]) == (paused.until, "antoine")  # vera recorded nothing
    longer = await service.pause(other, "manager", 7200)
    assert longer.already is None and longer.until > paused.until
    assert await service.resume(ADMIN, "manager") is None
    clock.advance(3 * 3600)
    await service.pause(ADMIN, "manager", 60)
    clock.advance(120)  # that pause is over: resuming has nothing to do
    assert await service.resume(ADMIN, "manager") == "manager's heartbeats are not paused; they already run"


async def test_an_agents_own_heartbeat_unseen_for_its_period_raises_one_alert(make: Make, clock: FakeClock) -> None:
    service, services, _ = await make({"tech-lead": {"expect_every": "30m"}})
    await service.tick()  # starts watching
    await service.seen("tech-lead")
    clock.advance(30 * 60 + 9 * 60)  # within period + grace (10 min)
    await service.tick()
    assert await services.store.fetchall("SELECT * FROM alerts") == []
    clock.advance(5 * 60)
    await service.tick()
    await service.tick()
    [alert] = await services.store.fetchall("SELECT kind, text FROM alerts")
    assert alert["kind"] == "heartbeat_missing" and "no heartbeat seen for 44 min" in alert["text"]
    await service.seen("tech-lead")
    kinds = [a["kind"] for a in await services.store.fetchall("SELECT kind FROM alerts ORDER BY id")]
    assert kinds == ["heartbeat_missing", "heartbeat_recovered"]
