"""`run_service` with Discord replaced: the scheduler's jobs, one scheduler per database (the lease), and
the standup service its daily job posts with.

Two copies of atomizer-hq run in this test's event loop on one SQLite file, each with its own Services
(so its own lease holder), as two processes would. APScheduler's own timing is bypassed: the tick is
an hour, and the tests call each job's function the way the scheduler would.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

import bot.discord_bot
from bot.authz import AccessLevel, Requester
from bot.boards import BoardContent
from bot.clock import iso, utcnow
from bot.config import ClusterConfig, parse_cluster_config
from bot.errors import NotAllowed
from bot.runner import STANDUP_JOB, TICK_JOB, WORKFLOW_JOB, run_service
from bot.services import Services, open_services
from bot.settings import Settings
from bot.simulator import SimulatedFleet, free_ports
from bot.standup import StandupNotPosted, StandupService, standup_for
from tests.clocks import FakeClock
from tests.conftest import FleetStarter
from tests.test_workflow_engine import ANTOINE, chain


@dataclass
class Copy:
    """One running atomizer-hq: its services (once the bot would start) and a switch to stop it."""

    name: str
    started: asyncio.Event = field(default_factory=asyncio.Event)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    services: Services | None = None
    scheduler_running_at_bot_start: bool | None = None
    task: asyncio.Task[None] | None = None
    posted: list[list[BoardContent]] = field(default_factory=list)

    @property
    def running(self) -> Services:
        assert self.services is not None, f"{self.name} has not started"
        return self.services

    async def job(self, job_id: str) -> Any:
        """Run one of the scheduler's jobs now, as the scheduler would."""
        job = self.running.scheduler.get_job(job_id)
        assert job is not None, f"{self.name} has no job {job_id!r}"
        return await job.func()

    async def poster(self, parts: list[BoardContent]) -> str:
        self.posted.append(parts)
        return f"{self.name}-message-{len(self.posted)}"


@dataclass
class Rig:
    settings: Settings
    configs: dict[str, ClusterConfig]  # per copy: its own API port (a host binds a port once), the same database
    fleet: SimulatedFleet
    copies: list[Copy] = field(default_factory=list)

    async def start(self, name: str) -> Copy:
        """Start a copy of `run_service`; returns once its bot would connect to Discord."""
        copy = Copy(name)
        self.copies.append(copy)
        copy.task = asyncio.create_task(run_service(self.settings, self.configs[name]), name=name)
        started = asyncio.create_task(copy.started.wait())
        await asyncio.wait({copy.task, started}, return_when=asyncio.FIRST_COMPLETED)
        started.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await started
        if copy.task.done():
            copy.task.result()  # start-up failed: show why
        return copy

    async def fake_run_bot(self, services: Services, *, stop: asyncio.Event | None = None) -> None:
        """Discord, replaced: connected until the copy is told to stop."""
        copy = next(c for c in self.copies if c.services is None)
        copy.services = services
        copy.scheduler_running_at_bot_start = services.scheduler.running
        standup_for(services).post = copy.poster  # what the Discord cog does when it loads
        copy.started.set()
        await copy.stop.wait()

    async def stop(self, copy: Copy) -> None:
        copy.stop.set()
        assert copy.task is not None
        await copy.task

    async def lease_holder(self) -> str | None:
        alive = next(c for c in self.copies if c.task is not None and not c.task.done())
        row = await alive.running.store.fetchone("SELECT holder FROM leases WHERE name = 'scheduler'")
        return row["holder"] if row else None


def configure(config: ClusterConfig, api_port: int) -> ClusterConfig:
    raw = config.model_dump(mode="python", exclude_none=True)
    raw["api"] = {**raw["api"], "port": api_port}
    # A 1-minute heartbeat always has exactly one slot in the first tick's window (the misfire grace, 60 s).
    raw["heartbeat"] = {"manager": {"every": "1m"}}
    raw["heartbeats"] = {**raw["heartbeats"], "tick": 3600, "lease_ttl": 3600}
    raw["heartbeats"].update(standup_time="08:30", standup_timezone="Europe/Paris")
    return parse_cluster_config(raw, "test-config")


@pytest.fixture
async def rig(
    start_fleet: FleetStarter, settings: Settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> AsyncIterator[Rig]:
    caplog.set_level(logging.INFO)
    config, fleet = await start_fleet()
    rig = Rig(settings, {name: configure(config, free_ports(1)) for name in ("first", "second")}, fleet)
    monkeypatch.setattr(bot.discord_bot, "run_bot", rig.fake_run_bot)
    yield rig
    for copy in rig.copies:
        if copy.task is not None and not copy.task.done():
            await rig.stop(copy)


def logged(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [record.getMessage() for record in caplog.records if text in record.getMessage()]


async def test_the_scheduler_starts_before_the_bot_with_both_jobs(rig: Rig) -> None:
    first = await rig.start("first")
    assert first.scheduler_running_at_bot_start is True
    scheduler = first.running.scheduler
    tick, standup = scheduler.get_job(TICK_JOB), scheduler.get_job(STANDUP_JOB)
    assert tick is not None and standup is not None
    assert tick.trigger.interval.total_seconds() == 3600
    assert (tick.max_instances, tick.coalesce) == (1, True)
    assert "hour='8', minute='30'" in str(standup.trigger) and str(standup.trigger.timezone) == "Europe/Paris"
    await rig.stop(first)
    assert not scheduler.running


async def test_the_lease_holder_ticks_heartbeats_and_posts_the_standup_once_a_day(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    first = await rig.start("first")
    holder = first.running.heartbeats.holder
    assert await rig.lease_holder() == holder
    assert logged(caplog, f"this process ({holder}) holds the lease and runs heartbeats")

    [run] = await first.job(TICK_JOB)
    assert (run.agent, run.trigger, run.status) == ("manager", "schedule", "ok")
    assert len(rig.fleet.received("manager")) == 1
    assert await first.job(TICK_JOB) == []  # that slot ran: not again

    assert await first.job(STANDUP_JOB) == "first-message-1"
    [parts] = first.posted
    assert parts[0].title.startswith("Daily standup") and len(parts) <= 10
    assert await first.job(STANDUP_JOB) is None  # today's is out
    assert len(first.posted) == 1


async def test_a_second_copy_stands_by_and_takes_over_when_the_first_stops(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    first = await rig.start("first")
    second = await rig.start("second")
    first_holder, second_holder = first.running.heartbeats.holder, second.running.heartbeats.holder
    assert first_holder != second_holder
    assert logged(caplog, f"another atomizer-hq ({first_holder}) holds the lease; standing by")

    assert await second.job(TICK_JOB) == []  # standing by: no heartbeat from the second copy
    assert rig.fleet.received() == []
    assert await second.job(STANDUP_JOB) is None and second.posted == []
    assert logged(caplog, "another atomizer-hq holds the scheduler lease; it posts the standup")
    assert len(await first.job(TICK_JOB)) == 1 and len(rig.fleet.received()) == 1
    assert await rig.lease_holder() == first_holder

    await rig.stop(first)  # a clean shutdown releases the lease
    assert await rig.lease_holder() is None
    assert logged(caplog, "scheduler: stopped; the lease is released")

    await second.job(TICK_JOB)
    assert await rig.lease_holder() == second_holder
    assert logged(caplog, f"this process ({second_holder}) holds the lease and runs heartbeats")
    assert await second.job(STANDUP_JOB) == "second-message-1"  # the first never posted today's


async def test_a_copy_whose_lease_ran_out_loses_it_to_the_other(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    first = await rig.start("first")
    second = await rig.start("second")
    # The first hangs or is killed: it renews nothing, and its lease runs out.
    await first.running.store.execute(
        "UPDATE leases SET expires_at = ? WHERE name = 'scheduler'", (iso(utcnow().replace(year=2000)),)
    )
    [run] = await second.job(TICK_JOB)
    assert run.status == "ok" and await rig.lease_holder() == second.running.heartbeats.holder
    assert await first.job(TICK_JOB) == []  # back from its hang: it stands by now
    assert logged(caplog, f"another atomizer-hq ({second.running.heartbeats.holder}) holds the lease; standing by")
    assert len(rig.fleet.received("manager")) == 1


# --- the standup service the timer posts with ------------------------------------------------------


def standup_service(services: Services, clock: FakeClock, timezone: str = "UTC") -> StandupService:
    raw = services.config.model_dump(mode="python", exclude_none=True)
    raw["heartbeats"] = {**raw["heartbeats"], "standup_timezone": timezone}
    config = parse_cluster_config(raw, "test-config")
    return StandupService(config, services.store, services.monitor, clock=clock)


async def audit(services: Services) -> list[tuple[str, str, str, str]]:
    rows = await services.store.fetchall(
        "SELECT actor, front_end, subject, decision FROM audit_log WHERE action = 'standup.post' ORDER BY id"
    )
    return [tuple(row) for row in rows]


async def test_without_a_poster_the_standup_is_not_posted_and_a_later_try_still_is(services: Services) -> None:
    clock = FakeClock(datetime(2026, 11, 25, 8, 0, tzinfo=UTC))
    standup = standup_service(services, clock)
    with pytest.raises(StandupNotPosted, match="needs the running bot's Discord connection"):
        await standup.post_scheduled()
    posted: list[list[BoardContent]] = []

    async def poster(parts: list[BoardContent]) -> str:
        posted.append(parts)
        return "m-1"

    standup.post = poster
    assert await standup.post_scheduled() == "m-1"  # the failed try did not count as today's post
    assert await audit(services) == [
        ("scheduler", "scheduler", "2026-11-25", "failed"), ("scheduler", "scheduler", "2026-11-25", "allowed"),
    ]  # fmt: skip


async def test_the_daily_post_is_once_per_day_of_the_standup_time_zone(services: Services) -> None:
    clock = FakeClock(datetime(2026, 11, 25, 23, 30, tzinfo=UTC))  # already the 26th in Paris
    standup = standup_service(services, clock, "Europe/Paris")
    sent: list[str] = []

    async def poster(parts: list[BoardContent]) -> str:
        sent.append(parts[0].title)
        return f"m-{len(sent)}"

    standup.post = poster
    assert await standup.post_scheduled() == "m-1"
    clock.advance(8 * 3600)  # 07:30 UTC on the 26th: the same day in Paris
    assert await standup.post_scheduled() is None
    clock.advance(24 * 3600)
    assert await standup.post_scheduled() == "m-2"
    assert [row[2] for row in await audit(services)] == ["2026-11-26", "2026-11-27"]


async def test_posting_by_hand_needs_an_operator_and_a_failed_post_is_audited(services: Services) -> None:
    standup = standup_service(services, FakeClock())
    viewer = Requester(kind="person", name="newcomer", front_end="discord", level=AccessLevel.VIEWER)
    agent = Requester(kind="agent", name="manager", front_end="api")
    for requester in (viewer, agent):
        with pytest.raises(NotAllowed, match="posting the standup needs the operator level"):
            await standup.post_now(requester)

    async def refused_by_discord(parts: list[BoardContent]) -> str:
        raise RuntimeError("403 Missing Permissions")

    standup.post = refused_by_discord
    operator = Requester(kind="person", name="antoine", front_end="discord", level=AccessLevel.OPERATOR)
    with pytest.raises(RuntimeError):
        await standup.post_now(operator)
    assert [(row[0], row[3]) for row in await audit(services)] == [
        ("newcomer", "refused"), ("manager", "refused"), ("antoine", "failed"),
    ]  # fmt: skip


async def test_run_finishes_a_workflow_step_a_dead_process_left_dispatching_and_ticks_workflows(rig: Rig) -> None:
    class Died(Exception):
        pass

    def die(name: str, key: str) -> None:
        raise Died(key)

    async with open_services(rig.settings, rig.configs["first"]) as before:
        before.workflows.fault = die
        with pytest.raises(Died):
            await before.workflows.start(ANTOINE, chain("nx-expert"), {})
    assert rig.fleet.received("nx-expert") == []
    first = await rig.start("first")
    step = (await first.running.workflows.get("W-1")).step("s0")
    assert step.status == "running" and step.delegation_id is not None
    assert len(rig.fleet.received("nx-expert")) == 1
    job = first.running.scheduler.get_job(WORKFLOW_JOB)
    assert job is not None and job.trigger.interval.total_seconds() == 1
    await first.job(WORKFLOW_JOB)
    await first.running.workflows.idle()
    assert len(rig.fleet.received("nx-expert")) == 1
    await rig.stop(first)


async def test_only_the_lease_holder_follows_workflow_runs_and_a_new_holder_recovers_first(rig: Rig) -> None:
    first = await rig.start("first")
    second = await rig.start("second")  # standing by
    rig.fleet.spec("nx-expert").hold_runs = True
    run = await second.running.workflows.start(ANTOINE, chain("nx-expert"), {})  # e.g. over the second's API
    assert not second.running.workflows.leading
    await second.job(WORKFLOW_JOB)
    await second.running.workflows.idle()  # no completion followed by the copy standing by
    assert rig.fleet.in_flight("nx-expert") == 0
    await first.job(WORKFLOW_JOB)
    await rig.fleet.wait_in_flight("nx-expert")  # the holder follows it
    await rig.stop(first)  # the lease is released
    await second.running.heartbeats.hold_lease()
    await second.job(WORKFLOW_JOB)  # takes over: recovers (re-attaches), then ticks
    await rig.fleet.wait_in_flight("nx-expert")
    rig.fleet.settle("nx-expert")
    await second.running.workflows.idle()
    step = (await second.running.workflows.get(run.display_id)).step("s0")
    assert step.evidence["completion"]["status"] == "ok"
    assert len([h for h in rig.fleet.received("nx-expert") if h.path.endswith("/agent")]) == 1
