"""The bot SIGKILLed with delegations queued, requests in flight and a heartbeat under way; then restarted.

The service runs in a child process (tests/robustness/bot_process.py: `run` minus Discord) against a
simulated fleet served by this test process, so what each agent received is known exactly.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bot.authz import AccessLevel, Requester
from bot.config import ClusterConfig, parse_cluster_config
from bot.delegation import chain_footer
from bot.heartbeat import HeartbeatService
from bot.simulator import RELEASE_LEGACY
from tests.clocks import FakeClock
from tests.conftest import ROOT, ServicesOnFleet
from tests.robustness.conftest import read_rows, wait_for

OPERATOR = Requester(kind="person", name="antoine", front_end="cli", level=AccessLevel.OPERATOR)
DOWNTIME_S = 300  # how long the bot stays dead, as the second process's clocks see it
PENDING = {  # agent -> instruction; what each agent is doing when the bot dies
    "webster": "Find the CTE of Zerodur",  # down: queued, retried by the outbox
    "nx-expert": "Mesh the M2 mirror",  # down: queued
    "optimizer": "Tune the weights",  # 2026.9.6, hung: the request is in flight (`sending`)
    "secretary": "Book the design review",  # 2026.2.12, hung: in flight, and this release has no idempotency
}


def crash_config(config: ClusterConfig, path: Path) -> Path:
    """The fleet's config with one fast heartbeat (manager, every minute, missed slots skipped) and hung
    requests that outlast the test, as JSON."""
    raw = config.model_dump(mode="json", exclude_none=True)
    raw["heartbeat"] = {"manager": {"every": "1m", "missed": "skip", "to": "daily_standup"}}
    raw["heartbeats"] = {**raw["heartbeats"], "tick": 0.3, "lease_ttl": 5, "misfire_grace": 60}
    # The hung requests stay in flight until the kill, however slowly a loaded machine gets there.
    raw["gateway"] = {**raw.get("gateway", {}), "read_timeout": 300}
    parse_cluster_config(raw)  # fail here, not in the child, if it is not valid
    path.write_text(json.dumps(raw), encoding="utf-8")
    return path


class BotProcess:
    """One `bot_process` child; its log goes to a file the assertion messages point at."""

    def __init__(self, config: Path, db: Path, log: Path, downtime_s: float = 0) -> None:
        self.args = ["-m", "tests.robustness.bot_process", "--config", str(config), "--db", str(db)]
        self.args += ["--downtime-s", str(downtime_s)]
        self.log = log
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, *self.args, cwd=ROOT, env=dict(os.environ), stdout=out, stderr=out
            )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def signal(self, sig: signal.Signals) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return await asyncio.wait_for(self.proc.wait(), 15)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""


def delegations(db: Path) -> dict[str, dict[str, Any]]:
    rows = read_rows(db, "SELECT id, agent, status, attempts, run_id, idem_key, last_error FROM delegations")
    return {row["agent"]: dict(row) for row in rows}


def heartbeat_rows(db: Path) -> list[dict[str, Any]]:
    rows = read_rows(
        db, "SELECT slot, trigger, status, detail FROM heartbeat_runs WHERE agent = 'manager' ORDER BY slot"
    )
    return [dict(row) for row in rows]


async def test_a_killed_bot_delivers_each_pending_delegation_exactly_once_and_skips_missed_slots(
    services_on_fleet: ServicesOnFleet, tmp_path: Path
) -> None:
    services, fleet = await services_on_fleet(
        release={"secretary": RELEASE_LEGACY},
        specs={
            "webster": {"down": True},
            "nx-expert": {"down": True},
            "optimizer": {"down": True, "hang": True},
            "secretary": {"down": True, "hang": True},
            "manager": {"reply_delay_ms": 120_000},  # the heartbeat is taken, its answer is still coming
        },
    )
    db = services.store.path
    # Recorded (as the CLI would, sharing the database) while every target is down: all queued.
    for agent, message in PENDING.items():
        result = await services.delegation.delegate(OPERATOR, agent, message)
        assert result.delegation is not None and result.delegation.status == "queued"
    await fleet.bring_up("optimizer")
    await fleet.bring_up("secretary")
    config = crash_config(services.config, tmp_path / "cluster.json")

    first = BotProcess(config, db, tmp_path / "bot-1.log")
    await first.start()
    try:

        def in_flight() -> bool:
            state = delegations(db)
            runs = heartbeat_rows(db)
            return (
                state["optimizer"]["status"] == "sending"
                and state["secretary"]["status"] == "sending"
                and state["webster"]["attempts"] >= 2  # the outbox of the first bot retried it
                and [run["status"] for run in runs] == ["running"]
                and len(fleet.received("manager")) == 1
            )

        await wait_for(in_flight, timeout=30, what="the first bot to be mid-send on every front")
        assert first.alive(), first.tail()
        assert await first.signal(signal.SIGKILL) == -signal.SIGKILL
    finally:
        if first.alive():
            await first.signal(signal.SIGKILL)
    [interrupted] = heartbeat_rows(db)
    slot = datetime.fromisoformat(interrupted["slot"])

    # While the bot is dead, the agents come back; the hung ones were restarted (their memory is gone).
    for agent in ("webster", "nx-expert"):
        await fleet.bring_up(agent)
    for agent in ("optimizer", "secretary"):
        await fleet.take_down(agent)
        fleet.set_hang(agent, False)
        await fleet.bring_up(agent)
    fleet.set_reply_delay("manager", 0)

    second = BotProcess(config, db, tmp_path / "bot-2.log", downtime_s=DOWNTIME_S)
    await second.start()
    try:

        def settled() -> bool:
            state = delegations(db)
            ran = [run for run in heartbeat_rows(db) if run["status"] not in ("running", "skipped")]
            return all(d["status"] not in ("queued", "sending") for d in state.values()) and bool(ran)

        await wait_for(settled, timeout=30, what="the second bot to finish the backlog")
        assert await second.signal(signal.SIGTERM) == 0, second.tail()
    finally:
        if second.alive():
            await second.signal(signal.SIGKILL)

    state = delegations(db)
    # Each pending delegation reached its agent exactly once, with the key it was recorded with.
    for agent in ("webster", "nx-expert", "optimizer"):
        assert state[agent]["status"] == "accepted", (agent, state[agent], second.tail())
        [run] = fleet.received(agent)
        assert run.run_id == state[agent]["run_id"] and run.idempotency_key == state[agent]["idem_key"]
        assert run.body["message"] == PENDING[agent] + chain_footer(f"D-{state[agent]['id']}")
    # The old release cannot replay a run: it may have started, so it is left for a person, never resent.
    assert state["secretary"]["status"] == "unconfirmed"
    assert "does not honour idempotency keys" in state["secretary"]["last_error"]
    assert fleet.received("secretary") == []

    # Heartbeats: the slot in flight at the crash is not sent again; the slots missed while the bot
    # was dead are recorded as skipped (policy skip), in order, none twice; only on-time slots ran.
    runs = heartbeat_rows(db)
    slots = [datetime.fromisoformat(run["slot"]) for run in runs]
    assert slots[0] == slot and slots == [slot + timedelta(minutes=i) for i in range(len(slots))]
    after = runs[1:]
    skipped = [run for run in after if run["status"] == "skipped"]
    ran = [run for run in after if run["status"] != "skipped"]
    assert len(skipped) >= DOWNTIME_S // 60 - 1, runs
    assert all("missed while atomizer-hq was not running (policy skip)" in run["detail"] for run in skipped)
    assert after[: len(skipped)] == skipped  # the backlog first, then the on-time slot(s)
    assert ran and all((run["trigger"], run["status"]) == ("schedule", "ok") for run in ran), runs
    assert len(fleet.received("manager")) == 1 + len(ran)  # no storm: one per slot that ran
    keys = [hook.idempotency_key for hook in fleet.received("manager")]
    assert len(set(keys)) == len(keys)


async def test_a_heartbeat_slot_cut_by_a_crash_is_closed_after_the_restart(
    services_on_fleet: ServicesOnFleet,
) -> None:
    services, fleet = await services_on_fleet(specs={"manager": {"reply_delay_ms": 60_000}})
    raw = services.config.model_dump(mode="python", exclude_none=True)
    raw["heartbeat"] = {"manager": {"every": "30m"}}
    raw["heartbeats"] = {**raw["heartbeats"], "lease_ttl": 60}
    config = parse_cluster_config(raw)
    clock = FakeClock(datetime(2026, 11, 25, 9, 0, tzinfo=UTC))
    first = HeartbeatService(config, services.store, services.gateway, clock=clock, holder="bot-1")
    ticking = asyncio.create_task(first.tick())
    await asyncio.wait_for(fleet.wait_in_flight("manager"), 10)
    ticking.cancel()  # the process dies here: the slot is claimed, its outcome never recorded
    with contextlib.suppress(asyncio.CancelledError):
        await ticking
    fleet.set_reply_delay("manager", 0)

    clock.advance(3600)  # long past any run's timeout (completion_timeout + 15 s, three attempts)
    second = HeartbeatService(config, services.store, services.gateway, clock=clock, holder="bot-2")
    await second.tick()
    runs = {run.slot[11:16]: run.status for run in await second.runs_since(clock() - timedelta(days=1))}
    assert len(fleet.received("manager")) == 2  # 09:00 once (cut), 10:00 once; 09:30 skipped
    assert runs["09:30"] == "skipped" and runs["10:00"] == "ok"
    assert runs["09:00"] == "unconfirmed"  # it may have reached the agent: reported, never resent
