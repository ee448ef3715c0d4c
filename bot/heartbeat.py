"""Heartbeats on behalf of agents whose own are off, and a dead-man's switch for all of them.

Slots are computed, not remembered by a timer: a job's slots are the fire times of its APScheduler
trigger, inside its active hours. Each `tick` runs the slots whose time has come and records them in
SQLite, so a restart knows exactly which slots ran, which were missed, and applies the job's policy
(`skip`: the backlog is recorded as skipped and named in the standup; `catch_up_once`: one run for
it). A slot runs at most once, whoever tries it (UNIQUE(agent, slot)), its idempotency key is the
slot itself, and only the process holding the `scheduler` lease ticks at all.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from bot.authz import AccessLevel, Requester
from bot.clock import Clock, human_duration, iso, parse_iso, short_time, utcnow
from bot.config import ClusterConfig, HeartbeatJob
from bot.errors import AgentUnavailable, AtomizerError, GatewayError, InvalidInput, NotAllowed
from bot.gateway import AgentHook, GatewayClient
from bot.store import Store
from bot.targets import GuildDirectory, StaticDirectory, TargetNormalizer

log = logging.getLogger(__name__)

EPOCH = datetime(2000, 1, 1, tzinfo=UTC)  # interval slots are aligned to it, so every process agrees on them
MAX_SLOTS = 10_000  # per tick and job: a year of 1-minute slots is not a backlog we walk
SEND_ATTEMPTS = 3
RunStatus = Literal["ok", "skipped", "down", "not_ready", "rejected", "unconfirmed", "run_failed", "no_completion"]
FAILED = frozenset({"down", "not_ready", "rejected", "unconfirmed", "run_failed", "no_completion"})
FOREVER = "9999-12-31T00:00:00.000000+00:00"


_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


def _day_of_week(field: str) -> str:
    """Standard crontab numbers days from Sunday = 0; APScheduler 3 from Monday = 0. Spell them out."""
    names: list[str] = []
    for token in field.split(","):
        part, _, step = token.partition("/")
        if not any(ch.isdigit() for ch in part) and not step:
            names.append(part)  # "*", or names such as mon-fri, which mean the same to both
            continue
        low, _, high = ("0", "", "6") if part == "*" else part.partition("-")
        first, last = int(low), int(high or low)
        numbers = range(first, last + 1, int(step or 1)) if high or step else [first]
        names.extend(_DAYS[n % 7] for n in numbers)
    return ",".join(dict.fromkeys(names))


def crontab_trigger(expression: str, timezone: str) -> CronTrigger:
    minute, hour, day, month, day_of_week = expression.split()
    return CronTrigger(
        minute=minute, hour=hour, day=day, month=month, day_of_week=_day_of_week(day_of_week),
        timezone=ZoneInfo(timezone),
    )  # fmt: skip


def trigger_for(job: HeartbeatJob) -> BaseTrigger:
    if job.cron is not None:
        return crontab_trigger(job.cron, job.active_hours.timezone if job.active_hours else "UTC")
    if job.every is None:
        raise InvalidInput("this heartbeat is expected from the agent, not sent by atomizer-hq")
    return IntervalTrigger(seconds=job.every, start_date=EPOCH, timezone=UTC)


def in_active_hours(job: HeartbeatJob, moment: datetime) -> bool:
    hours = job.active_hours
    if hours is None:
        return True
    local = moment.astimezone(ZoneInfo(hours.timezone)).time()
    start, end = time.fromisoformat(hours.start), time.fromisoformat(hours.end)
    return start <= local <= end if start <= end else (local >= start or local <= end)  # overnight spans


def slots_between(job: HeartbeatJob, after: datetime, until: datetime) -> list[datetime]:
    """The job's slots in (after, until], within its active hours."""
    trigger = trigger_for(job)
    found: list[datetime] = []
    moment = trigger.get_next_fire_time(None, after + timedelta(microseconds=1))
    while moment is not None and moment <= until and len(found) < MAX_SLOTS:
        if moment > after and in_active_hours(job, moment):
            found.append(moment.astimezone(UTC))
        moment = trigger.get_next_fire_time(moment, moment + timedelta(microseconds=1))
    return found


def jitter_for(agent: str, slot: datetime, jitter_s: float) -> float:
    """A stable offset in [0, jitter): the same slot always waits the same, in every process."""
    if jitter_s <= 0:
        return 0.0
    digest = hashlib.sha256(f"{agent}|{iso(slot)}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 * jitter_s


def idempotency_key(agent: str, slot: datetime) -> str:
    return f"heartbeat:{agent}:{iso(slot)}"


@dataclass(frozen=True)
class HeartbeatRun:
    agent: str
    slot: str
    trigger: str
    status: str
    level: str | None
    run_id: str | None
    detail: str | None
    started_at: str
    finished_at: str | None

    @property
    def failed(self) -> bool:
        return self.status in FAILED


@dataclass(frozen=True)
class JobStatus:
    """One line of `/heartbeat list`."""

    agent: str
    schedule: str
    method: str
    missed: str
    next_slot: str | None
    last: HeartbeatRun | None
    paused_until: str | None
    failures: int


@dataclass(frozen=True)
class Pause:
    """What `pause` left in force; `already` says so when it was in force before (nothing recorded)."""

    agent: str
    until: str
    already: str | None = None


_RUN_COLUMNS = "agent, slot, trigger, status, level, run_id, detail, started_at, finished_at"
AlertSink = Callable[[str, str, str], Awaitable[None]]  # agent, kind, text


def holder_has_exited(holder: str) -> bool:
    """Whether a lease holder (`host:pid:nonce`) was a process of this host that is gone: a SIGKILLed or crashed
    copy's lease need not run out (up to `lease_ttl`) before the restarted one goes on with heartbeats and runs.

    Only a certain "gone" counts: another host, this very process (tests run several holders in one), a live pid
    (even if reused by something else) or one we may not signal all mean "wait for the lease to expire".
    """
    host, _, rest = holder.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit() or int(pid_text) in (0, os.getpid()):
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except OSError:  # PermissionError: a live process of another user
        return False
    return False


class HeartbeatService:
    """Sends the heartbeats the config asks for, records every slot, and watches for silence."""

    def __init__(
        self,
        config: ClusterConfig,
        store: Store,
        gateway: GatewayClient,
        *,
        clock: Clock = utcnow,
        directory: GuildDirectory | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        holder: str | None = None,
    ) -> None:
        self._config = config
        self._store = store
        self._gateway = gateway
        self._clock = clock
        self._sleep = sleep
        self._directory = directory or StaticDirectory.from_config(config)
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._leading: bool | None = None

    # --- the jobs -----------------------------------------------------------------------------

    def jobs(self) -> dict[str, HeartbeatJob]:
        """Heartbeats we send: every agent with a job that has every/cron and is enabled."""
        return {name: job for name, job in self._config.heartbeat.items() if job.sends and job.enabled}

    def watched(self) -> dict[str, HeartbeatJob]:
        """Agents with their own heartbeat that we expect to hear from."""
        return {name: job for name, job in self._config.heartbeat.items() if job.expect_every is not None}

    def _job(self, agent: str) -> HeartbeatJob:
        name = self._config.require_agent(agent).name
        job = self.jobs().get(name)
        if job is None:
            raise InvalidInput(
                f"atomizer-hq sends no heartbeat for {name}; add [heartbeat.{name}] with `every` or `cron` "
                f"to {self._config.source}"
            )
        return job

    # --- the lease: one scheduler per database ------------------------------------------------

    async def hold_lease(self) -> bool:
        """Take or renew the scheduler lease; False while another live process holds it."""
        now = self._clock()
        ttl = timedelta(seconds=self._config.heartbeats.lease_ttl)
        async with self._store.transaction() as tx:
            cursor = await tx.execute("SELECT holder, expires_at FROM leases WHERE name = 'scheduler'")
            row = await cursor.fetchone()
            gone = row is not None and row["holder"] != self.holder and holder_has_exited(row["holder"])
            mine = row is None or row["holder"] == self.holder or parse_iso(row["expires_at"]) <= now or gone
            if gone:
                log.warning(
                    "scheduler: the lease holder %s has exited (no such process on this host; killed or crashed): "
                    "taking the lease over without waiting for it to run out", row["holder"],
                )  # fmt: skip
            if mine:
                await tx.execute(
                    "INSERT INTO leases (name, holder, expires_at) VALUES ('scheduler', ?, ?) "
                    "ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at",
                    (self.holder, iso(now + ttl)),
                )
        if mine != self._leading:
            if mine:
                log.info("scheduler: this process (%s) holds the lease and runs heartbeats", self.holder)
            else:
                log.warning("scheduler: another atomizer-hq (%s) holds the lease; standing by", row["holder"])
            self._leading = mine
        return mine

    async def holds_lease(self) -> bool:
        """Whether this process holds the scheduler lease now (read only; `hold_lease` takes and renews it)."""
        row = await self._store.fetchone("SELECT holder, expires_at FROM leases WHERE name = 'scheduler'")
        return row is not None and row["holder"] == self.holder and parse_iso(row["expires_at"]) > self._clock()

    async def release_lease(self) -> None:
        await self._store.execute("DELETE FROM leases WHERE name = 'scheduler' AND holder = ?", (self.holder,))
        self._leading = None

    # --- ticking ------------------------------------------------------------------------------

    async def tick(self) -> list[HeartbeatRun]:
        """Run what is due (if we hold the lease); returns the runs and skips it recorded."""
        if not await self.hold_lease():
            return []
        now = self._clock()
        await self._close_abandoned_runs(now)
        recorded: list[HeartbeatRun] = []
        for agent, job in self.jobs().items():
            if await self._paused(agent, now):
                continue
            recorded.extend(await self._tick_job(agent, job, now))
        await self._watch_own_heartbeats(now)
        return recorded

    async def _tick_job(self, agent: str, job: HeartbeatJob, now: datetime) -> list[HeartbeatRun]:
        grace = timedelta(seconds=self._config.heartbeats.misfire_grace)
        row = await self._store.fetchone(
            "SELECT max(slot) FROM heartbeat_runs WHERE agent = ? AND trigger != 'manual'", (agent,)
        )
        # First start: nothing before the grace window counts as missed.
        after = parse_iso(row[0]) if row and row[0] else now - grace - timedelta(seconds=job.jitter)
        due = [
            s for s in slots_between(job, after, now) if now >= s + timedelta(seconds=jitter_for(agent, s, job.jitter))
        ]
        late = timedelta(seconds=job.jitter) + grace
        on_time = [s for s in due if now - s <= late]
        backlog = [s for s in due if now - s > late]
        recorded: list[HeartbeatRun] = []
        catch_up = backlog[-1] if backlog and job.missed == "catch_up_once" and not on_time else None
        for slot in backlog:
            if slot != catch_up:
                recorded.append(
                    await self._skip(agent, slot, f"missed while atomizer-hq was not running (policy {job.missed})")
                )
        if catch_up is not None:
            recorded.append(await self.run_slot(agent, catch_up, "catch_up"))
        for slot in on_time:
            recorded.append(await self.run_slot(agent, slot, "schedule"))
        return recorded

    async def _close_abandoned_runs(self, now: datetime) -> None:
        """A run still `running` long after any run's timeout was cut by a crash: it may have reached the agent,
        so it is not sent again, but it is reported (unconfirmed) instead of vanishing from every report."""
        longest = max((job.completion_timeout for job in self.jobs().values()), default=120.0)
        cutoff = now - timedelta(seconds=SEND_ATTEMPTS * (longest + 15) + 60)
        closed = await self._store.update(
            "UPDATE heartbeat_runs SET status = 'unconfirmed', finished_at = ?, "
            "detail = 'atomizer-hq stopped during this run; it may have reached the agent and was not resent' "
            "WHERE status = 'running' AND started_at < ?",
            (iso(now), iso(cutoff)),
        )
        if closed:
            log.warning("heartbeats: %d run(s) cut by a stop were closed as unconfirmed", closed)

    async def _skip(self, agent: str, slot: datetime, why: str) -> HeartbeatRun:
        now = iso(self._clock())
        await self._store.execute(
            "INSERT OR IGNORE INTO heartbeat_runs (agent, slot, trigger, status, detail, started_at, finished_at) "
            "VALUES (?, ?, 'schedule', 'skipped', ?, ?, ?)",
            (agent, iso(slot), why, now, now),
        )
        return await self._run_row(agent, slot)

    # --- one run ------------------------------------------------------------------------------

    async def run_slot(self, agent: str, slot: datetime, trigger: str) -> HeartbeatRun:
        """Run one slot, once: if any process already took it, return what it recorded."""
        job = self._job(agent)
        claimed = await self._store.update(
            "INSERT OR IGNORE INTO heartbeat_runs (agent, slot, trigger, status, started_at) "
            "VALUES (?, ?, ?, 'running', ?)",
            (agent, iso(slot), trigger, iso(self._clock())),
        )
        if not claimed:
            return await self._run_row(agent, slot)
        status, level, run_id, detail = await self._send(agent, job, slot)
        await self._store.execute(
            "UPDATE heartbeat_runs SET status = ?, level = ?, run_id = ?, detail = ?, finished_at = ? "
            "WHERE agent = ? AND slot = ?",
            (status, level, run_id, detail, iso(self._clock()), agent, iso(slot)),
        )
        run = await self._run_row(agent, slot)
        await self._dead_mans_switch(run)
        log.info("heartbeat %s %s: %s%s", agent, iso(slot)[:16], status, f" ({detail})" if detail else "")
        return run

    async def run_now(self, requester: Requester, agent: str) -> HeartbeatRun:
        """`/heartbeat run agent`: an extra, manual run (operators and up)."""
        if requester.is_agent or requester.level < AccessLevel.OPERATOR:
            raise NotAllowed(f"running a heartbeat by hand needs the operator level; {requester.describe()} is not")
        self._job(agent)
        return await self.run_slot(self._config.require_agent(agent).name, self._clock(), "manual")

    async def _send(
        self, agent: str, job: HeartbeatJob, slot: datetime
    ) -> tuple[RunStatus, str | None, str | None, str]:
        """Verify level by level: live, ready, hook accepted, run completed."""
        config = self._config.require_agent(agent)
        readiness = await self._gateway.readiness(config)
        if readiness.state in ("down", "foreign"):
            return "down", None, None, readiness.detail or "not reachable"
        if readiness.state != "ready":
            return "not_ready", "live", None, readiness.detail or readiness.state
        key = idempotency_key(agent, slot)
        try:
            target = str(TargetNormalizer(self._config, self._directory).normalize(job.to))
        except AtomizerError as exc:
            return "rejected", "ready", None, f"heartbeat target {job.to!r}: {exc}"
        for attempt in range(1, SEND_ATTEMPTS + 1):
            try:
                if job.method == "wake":
                    await self._gateway.wake(config, job.prompt, "now")
                    return "ok", "accepted", None, "woken"
                hook = AgentHook(message=job.prompt, name="atomizer-hq heartbeat", deliver=True, channel="discord",
                                 to=target, wait_for_completion=job.wait_for_completion,
                                 timeout_seconds=int(job.completion_timeout))  # fmt: skip
                accepted = await self._gateway.send_agent_hook(
                    config, hook, idempotency_key=key, read_timeout=job.completion_timeout + 15
                )
                break
            except AgentUnavailable as exc:
                # Surely not arrived (refused, 503 starting): the same key again is safe; otherwise stop.
                if exc.sent and not readiness.honours_idempotency:
                    return "unconfirmed", "ready", None, exc.reason
                if attempt == SEND_ATTEMPTS:
                    return "not_ready", "ready", None, exc.reason
                await self._sleep(2.0 * attempt)
            except GatewayError as exc:
                return "rejected", "ready", None, exc.reason
            except AtomizerError as exc:
                return "rejected", "ready", None, str(exc)
        if not job.wait_for_completion:
            return "ok", "accepted", accepted.run_id, "accepted"
        completion = accepted.completion
        if completion is None:
            return "no_completion", "accepted", accepted.run_id, "accepted; the gateway reported no completion"
        if completion.get("status") == "ok":
            return "ok", "completed", accepted.run_id, "completed"
        reason = completion.get("error") or completion.get("replyDisposition") or completion.get("status")
        return "run_failed", "accepted", accepted.run_id, f"hook accepted, run failed: {reason}"

    async def _run_row(self, agent: str, slot: datetime) -> HeartbeatRun:
        row = await self._store.fetchone(
            f"SELECT {_RUN_COLUMNS} FROM heartbeat_runs WHERE agent = ? AND slot = ?", (agent, iso(slot))
        )
        assert row is not None
        return HeartbeatRun(**dict(row))

    # --- the dead-man's switch ----------------------------------------------------------------

    async def _dead_mans_switch(self, run: HeartbeatRun) -> None:
        state = await self._state(run.agent)
        limit = self._config.heartbeats.failures_alert
        if run.failed:
            failures = state["failures"] + 1
            alert = failures >= limit and not state["alerted"]
            await self._store.execute(
                "UPDATE heartbeat_state SET failures = ?, alerted = ? WHERE agent = ?",
                (failures, 1 if alert or state["alerted"] else 0, run.agent),
            )
            if alert:
                since = await self._first_failure(run.agent, failures)
                what = "runs failing" if run.status == "run_failed" else "heartbeats failing"
                level = "up, hooks OK, " if run.status == "run_failed" else ""
                text = f"{run.agent}: {level}{what} since {since} ({failures} in a row): {run.detail}"
                await self._alert(run.agent, "heartbeat_failing", text)
        elif run.status == "ok":
            if state["alerted"]:
                await self._alert(run.agent, "heartbeat_recovered", f"{run.agent}: heartbeats are working again")
            await self._store.execute(
                "UPDATE heartbeat_state SET failures = 0, alerted = 0 WHERE agent = ?", (run.agent,)
            )

    async def _first_failure(self, agent: str, failures: int) -> str:
        rows = await self._store.fetchall(
            "SELECT slot FROM heartbeat_runs WHERE agent = ? AND status NOT IN ('skipped', 'running') "
            "ORDER BY slot DESC LIMIT ?",
            (agent, failures),
        )
        return short_time(parse_iso(rows[-1]["slot"])) if rows else "now"

    async def _state(self, agent: str) -> Any:
        await self._store.execute("INSERT OR IGNORE INTO heartbeat_state (agent) VALUES (?)", (agent,))
        return await self._store.fetchone("SELECT * FROM heartbeat_state WHERE agent = ?", (agent,))

    async def _alert(self, agent: str, kind: str, text: str) -> None:
        """Into the alert outbox the status cog posts to #it-ops."""
        await self._store.execute(
            "INSERT INTO alerts (at, agent, kind, text) VALUES (?, ?, ?, ?)", (iso(self._clock()), agent, kind, text)
        )

    async def seen(self, agent: str, at: datetime | None = None) -> None:
        """An agent's own heartbeat was seen (`/v1/heartbeats/{agent}/seen`, or its post in #daily-standup)."""
        name = self._config.require_agent(agent).name
        state = await self._state(name)
        await self._store.execute(
            "UPDATE heartbeat_state SET last_seen_at = ?, seen_alerted = 0 WHERE agent = ?",
            (iso(at or self._clock()), name),
        )
        if state["seen_alerted"]:
            await self._alert(name, "heartbeat_recovered", f"{name}: its own heartbeat is back")

    async def _watch_own_heartbeats(self, now: datetime) -> None:
        grace = timedelta(seconds=self._config.heartbeats.seen_grace)
        for agent, job in self.watched().items():
            state = await self._state(agent)
            if state["seen_alerted"] or job.expect_every is None:
                continue
            if state["last_seen_at"] is None:  # start watching from now
                await self._store.execute(
                    "UPDATE heartbeat_state SET last_seen_at = ? WHERE agent = ?", (iso(now), agent)
                )
                continue
            last = parse_iso(state["last_seen_at"])
            if now - last > timedelta(seconds=job.expect_every) + grace:
                await self._store.execute("UPDATE heartbeat_state SET seen_alerted = 1 WHERE agent = ?", (agent,))
                silent = human_duration((now - last).total_seconds())
                expected = human_duration(job.expect_every)
                text = f"{agent}: no heartbeat seen for {silent} (expected every {expected}); its own may be off"
                await self._alert(agent, "heartbeat_missing", text)

    # --- pause, resume, list ------------------------------------------------------------------

    async def pause(self, requester: Requester, agent: str, duration_s: float | None = None) -> Pause:
        """No heartbeats for `agent` until the returned time (FOREVER: until resumed). Admins only.

        A pause that would end no later than the one in force changes nothing and records nothing."""
        if requester.is_agent or requester.level < AccessLevel.ADMIN:
            raise NotAllowed(f"pausing heartbeats needs the admin level; {requester.describe()} is not")
        name = self._job(agent) and self._config.require_agent(agent).name
        until = FOREVER if not duration_s else iso(self._clock() + timedelta(seconds=duration_s))
        await self._state(name)
        changed = await self._store.update(
            "UPDATE heartbeat_state SET paused_until = ?, paused_by = ? "
            "WHERE agent = ? AND (paused_until IS NULL OR paused_until < ?)",
            (until, requester.name, name, until),
        )
        if changed:
            return Pause(name, until)
        state = await self._state(name)
        current = state["paused_until"]
        how_long = "until resumed" if current == FOREVER else f"until {current[:16].replace('T', ' ')} UTC"
        return Pause(name, current, already=f"{name}'s heartbeats are already paused {how_long}")

    async def resume(self, requester: Requester, agent: str) -> str | None:
        """Heartbeats for `agent` again; "… are not paused" (and nothing recorded) when they were not."""
        if requester.is_agent or requester.level < AccessLevel.ADMIN:
            raise NotAllowed(f"resuming heartbeats needs the admin level; {requester.describe()} is not")
        name = self._job(agent) and self._config.require_agent(agent).name
        await self._state(name)
        changed = await self._store.update(
            "UPDATE heartbeat_state SET paused_until = NULL WHERE agent = ? AND paused_until > ?",
            (name, iso(self._clock())),
        )
        return None if changed else f"{name}'s heartbeats are not paused; they already run"

    async def _paused(self, agent: str, now: datetime) -> bool:
        row = await self._store.fetchone("SELECT paused_until FROM heartbeat_state WHERE agent = ?", (agent,))
        return bool(row and row[0] and parse_iso(row[0]) > now)

    async def status(self) -> list[JobStatus]:
        now = self._clock()
        result = []
        for agent, job in self.jobs().items():
            row = await self._store.fetchone(
                f"SELECT {_RUN_COLUMNS} FROM heartbeat_runs WHERE agent = ? AND status != 'running' "
                "ORDER BY slot DESC LIMIT 1",
                (agent,),
            )
            upcoming = slots_between(job, now, now + timedelta(days=8))[:1]
            state = await self._state(agent)
            paused = state["paused_until"] if state["paused_until"] and parse_iso(state["paused_until"]) > now else None
            schedule = f"every {human_duration(job.every)}" if job.every else f"cron {job.cron}"
            if job.active_hours:
                hours = job.active_hours
                schedule += f", {hours.start}-{hours.end} {hours.timezone}"
            result.append(JobStatus(agent, schedule, job.method, job.missed, iso(upcoming[0]) if upcoming else None,
                                    HeartbeatRun(**dict(row)) if row else None, paused, state["failures"]))  # fmt: skip
        return result

    async def runs_since(self, since: datetime) -> list[HeartbeatRun]:
        rows = await self._store.fetchall(
            f"SELECT {_RUN_COLUMNS} FROM heartbeat_runs WHERE slot >= ? ORDER BY slot", (iso(since),)
        )
        return [HeartbeatRun(**dict(row)) for row in rows]
