"""`atomizer-hq run`: the long-running service, wired top-down in one function.

Order: settings and config (done by the caller) -> store, HTTP client, services -> scheduler ->
loopback API -> Discord bot. Shutdown runs the same list backwards, whatever stopped us.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import Iterator
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from bot.clock import human_duration
from bot.config import ClusterConfig
from bot.heartbeat import HeartbeatRun
from bot.services import Services
from bot.settings import HUMAN_IDENTITIES, Settings
from bot.standup import standup_for

log = logging.getLogger(__name__)

TICK_JOB = "heartbeat-tick"
MONITOR_JOB = "status-monitor"
WORKFLOW_JOB = "workflow-tick"
WORKFLOW_TICK_S = 1.0  # step deadlines, approval expiries, completion grace
STANDUP_JOB = "daily-standup"
STANDUP_MISFIRE_S = 15 * 60  # a standup this late (a busy loop, a clock jump) is still posted
STOP_GRACE_S = 5.0  # at shutdown, a tick under way gets this long before it is cancelled


class Schedule:
    """The timed work of `run` on the process's one scheduler: heartbeat ticks and the daily standup.

    Every copy of atomizer-hq on a database ticks, but only the one holding the database's
    `scheduler` lease acts (HeartbeatService.tick checks it); the others stand by and take over when
    the lease is released at shutdown, or expires because its holder died.
    """

    def __init__(self, services: Services) -> None:
        self.services = services
        self.standup = standup_for(services)
        self._under_way: set[asyncio.Task[object]] = set()
        # Set once the outbox has decided the delegations a stopped process left `sending`: workflow runs are
        # recovered (by the lease holder) only then, and ticked only after that.
        self.workflows_ready = asyncio.Event()
        self._workflows_recovered = False
        self._workflow_job = asyncio.Lock()  # the job, and the first round run_service calls itself
        services.workflows.leading = False  # until the workflow job finds this process holds the lease

    async def start(self) -> None:
        """Say at once whether this process leads or stands by, then add the jobs and start the scheduler."""
        settings = self.services.config.heartbeats
        if settings.tick >= settings.lease_ttl:
            log.warning(
                "heartbeats.tick (%g s) is not shorter than heartbeats.lease_ttl (%g s): the lease lapses between "
                "ticks and another copy may take it; make the tick shorter",
                settings.tick, settings.lease_ttl,
            )  # fmt: skip
        await self.services.heartbeats.hold_lease()  # logs "holds the lease" or "standing by"
        scheduler = self.services.scheduler
        scheduler.add_job(
            self.tick, IntervalTrigger(seconds=settings.tick), id=TICK_JOB, name="heartbeat tick",
            max_instances=1, coalesce=True, misfire_grace_time=None,
        )  # fmt: skip
        scheduler.add_job(
            self.monitor_round, IntervalTrigger(seconds=self.services.config.monitor.interval_s), id=MONITOR_JOB,
            name="status monitor", max_instances=1, coalesce=True, misfire_grace_time=None,
            next_run_time=datetime.now(UTC),
        )  # fmt: skip
        scheduler.add_job(
            self.workflow_tick, IntervalTrigger(seconds=WORKFLOW_TICK_S), id=WORKFLOW_JOB, name="workflow tick",
            max_instances=1, coalesce=True, misfire_grace_time=None,
        )  # fmt: skip
        hour, minute = (int(part) for part in settings.standup_time.split(":"))
        scheduler.add_job(
            self.post_standup,
            CronTrigger(hour=hour, minute=minute, timezone=ZoneInfo(settings.standup_timezone)),
            id=STANDUP_JOB, name="daily standup", max_instances=1, coalesce=True, misfire_grace_time=STANDUP_MISFIRE_S,
        )  # fmt: skip
        scheduler.start()
        log.info(
            "scheduler: heartbeats checked every %s; the standup daily at %s %s",
            human_duration(settings.tick), settings.standup_time, settings.standup_timezone,
        )  # fmt: skip

    async def tick(self) -> list[HeartbeatRun]:
        """The tick job: run what is due if we hold the lease (renewing it), else only look at the lease."""
        with self._tracked():
            try:
                return await self.services.heartbeats.tick()
            except Exception:
                log.exception("heartbeats: a tick failed; the next one runs as usual")
                return []

    async def workflow_tick(self) -> None:
        """The workflow job: deadlines, approval expiries and completions of workflow runs, by the lease holder
        only (recovered first, also when it takes over from another copy)."""
        with self._tracked():
            try:
                async with self._workflow_job:
                    await self._workflow_round()
            except Exception:
                log.exception("workflows: a tick failed; the next one runs as usual")

    async def _workflow_round(self) -> None:
        if not self.workflows_ready.is_set():
            return
        workflows = self.services.workflows
        if not await self.services.heartbeats.holds_lease():
            if workflows.leading:
                log.info("workflows: another atomizer-hq holds the lease and follows the runs")
                await workflows.close()
            workflows.leading = self._workflows_recovered = False
            return
        workflows.leading = True
        if not self._workflows_recovered:
            await workflows.recover()
            self._workflows_recovered = True
        await workflows.tick()

    async def monitor_round(self) -> None:
        """The monitor job: probe and record whether or not Discord is there to show it."""
        with self._tracked():
            try:
                await self.services.monitor.timed_round()
            except Exception:
                log.exception("status monitor: a round failed; the next one runs as usual")

    async def post_standup(self) -> str | None:
        """The standup job: only the lease holder posts, once a day; the message id, or None."""
        with self._tracked():
            try:
                if not await self.services.heartbeats.hold_lease():
                    log.info("standup: another atomizer-hq holds the scheduler lease; it posts the standup")
                    return None
                return await self.standup.post_scheduled()
            except Exception:
                log.exception("standup: the daily post failed; /standup post:true posts it by hand")
                return None

    async def stop(self) -> None:
        """No more jobs; a job under way finishes (or is cancelled after a grace); then the lease is free."""
        scheduler = self.services.scheduler
        if scheduler.running:
            scheduler.pause()
        if self._under_way:
            await asyncio.wait(set(self._under_way), timeout=STOP_GRACE_S)
        under_way = set(self._under_way)
        if scheduler.running:
            scheduler.shutdown(wait=False)  # cancels the jobs still under way
        for task in under_way:
            task.cancel()
        if under_way:
            await asyncio.wait(under_way)
        # Released only now, so no job of ours takes it again; another copy can take over at its next tick.
        await self.services.heartbeats.release_lease()
        log.info("scheduler: stopped; the lease is released")

    @contextlib.contextmanager
    def _tracked(self) -> Iterator[None]:
        task = asyncio.current_task()
        if task is None:  # pragma: no cover - jobs always run as tasks
            yield
            return
        self._under_way.add(task)
        try:
            yield
        finally:
            self._under_way.discard(task)


async def wait_for_signal() -> None:
    """Until SIGINT or SIGTERM (or this task is cancelled): what `run --no-discord` does in the bot's place."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    handled: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
            handled.append(sig)
    try:
        await stop.wait()
        log.info("shutdown requested")
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)


def settle_heap() -> None:
    """Once started: collect, then put every object alive so far out of the cyclic collector's sight.

    Modules, config and services live as long as the process, yet each full collection walks them all,
    stalling the event loop for ~30 ms in the middle of answering interactions (bench/interaction_ack).
    Frozen, they are never walked again; what is made later is collected as usual.
    """
    gc.collect()
    gc.freeze()


async def run_service(settings: Settings, config: ClusterConfig, *, discord: bool = True) -> None:
    """Everything `run` serves; with `discord=False` (`run --no-discord`) all of it but the bot."""
    from bot.api import LoopbackApi
    from bot.outbox import OutboxWorker
    from bot.services import open_services

    identities = settings.api_identities([*config.agent_names, *HUMAN_IDENTITIES])
    async with open_services(settings, config) as services:
        schedule = Schedule(services)
        await schedule.start()

        async def scheduler_running() -> str | None:
            return None if services.scheduler.running else "the scheduler is not running"

        services.health.register("scheduler", scheduler_running)
        try:
            outbox = OutboxWorker(services.delegation)
            await outbox.start()
            # After the outbox decided the delegations left `sending`: the workflow job recovers the runs (if this
            # process holds the lease), then ticks; never a tick before the recovery.
            schedule.workflows_ready.set()
            await schedule.workflow_tick()
            api = LoopbackApi(services, identities)
            try:
                await api.start(config.api.host, config.api.port)
                log.info("loopback API on %s (%d callers)", api.url, len(identities))
                settle_heap()
                if discord:
                    from bot.discord_bot import run_bot

                    await run_bot(services)
                else:
                    services.health.register_off("discord", "run --no-discord: no Discord connection")
                    log.info("Discord: off (--no-discord); the API, outbox, monitor and heartbeats run without it")
                    await wait_for_signal()
            finally:
                await api.stop()
                await outbox.stop()
        finally:
            await schedule.stop()
            log.info("stopped")
