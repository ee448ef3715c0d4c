"""A crash at every state transition of a run: before and after each write it makes, then a new process recovers.

Every write a run makes goes through the store (the workflow tables, the delegation and its outbox, the audit): a
test-only Store counts them and dies at the Nth, just before or just after it. Dead, it refuses every later read
and write, so what the old engine still had in memory (watchers, a dispatch half done) can change nothing. A new
process (new store, gateway client, delegation service and engine) opens the same SQLite file, recovers, and the
run is driven to its end on the simulated fleet. For every crash point: the run finishes, no step reached its
agent twice, and every output is the one reported.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

from bot.authz import AccessLevel, Requester
from bot.config import ClusterConfig
from bot.delegation import DelegationService
from bot.gateway import GatewayClient
from bot.settings import Settings
from bot.simulator import RELEASE_LEGACY, SimulatedFleet
from bot.store import Store
from bot.workflows.definition import WorkflowDefinition
from bot.workflows.engine import WorkflowEngine
from tests.clocks import FakeClock
from tests.conftest import FleetStarter

T = TypeVar("T")
ANTOINE = Requester(kind="person", name="antoine", front_end="cli", level=AccessLevel.OPERATOR, user_id="1" * 18)
ALICE = Requester(kind="person", name="alice", front_end="discord", level=AccessLevel.ADMIN, user_id="2" * 18)
# Each round moves the clock this far: past the outbox's first backoffs and DISPATCH_RETRY_S.
SETTLE_S = 16.0
STORE_FILE = str(Path(sys.modules[Store.__module__].__file__ or "store.py"))
# What each step's agent answers: the outputs the run must end with, whatever crashed on the way.
OUTPUTS = {"mesh": "120k elements", "material": "CTE 0 ± 0.007", "thermal": "dT 0.3 K", "report": "report sent"}
# The M2 shape: a fan-out over both releases (webster is a 2026.2.12 agent: no completion, no replay), a retried
# step (its first attempt fails), a join whose message carries both outputs, an approval gate, a last step.
DEFINITION = WorkflowDefinition.model_validate(
    {
        "name": "m2-crash",
        "description": "Mesh and material, thermal, approve, report.",
        "deliver_to": "none",
        "steps": [
            {"id": "mesh", "agent": "nx-expert", "message": "Mesh the M2 mirror.", "timeout": "2h"},
            {"id": "material", "agent": "webster", "message": "CTE of Zerodur.", "timeout": "1h", "retries": 1},
            {"id": "thermal", "agent": "optimizer", "needs": ["mesh", "material"], "timeout": "4h",
             "message": "Thermal.\nMesh: ${{ steps.mesh.output }}\nMaterial: ${{ steps.material.output }}"},
            {"id": "review", "needs": ["thermal"], "approval": {"prompt": "Approve?", "approvers": ["role:admin"]}},
            {"id": "report", "agent": "secretary", "needs": ["review"], "timeout": "1h",
             "message": "Report from ${{ steps.thermal.output }}."},
        ],
    }
)  # fmt: skip


class Crash(Exception):
    """The process died here."""


@dataclass
class CrashPoint:
    write: int  # the Nth write of the run (1-based); 0: never crash
    when: str  # "before" | "after"


class CrashingStore(Store):
    """The real store, dying at one write; dead, it answers nothing (the process is gone)."""

    def __init__(self, path: Path, point: CrashPoint, writes: list[str]) -> None:
        super().__init__(path)
        self.point = point
        self.writes = writes  # shared by every process of a scenario: the run's writes, in order
        self.dead = False

    def _caller(self) -> str:
        frame = sys._getframe(2)
        while frame.f_back is not None and frame.f_code.co_filename == STORE_FILE:
            frame = frame.f_back
        return frame.f_code.co_qualname

    async def _write(self, work: Callable[[Any], T], *, single: bool) -> T:
        if self.dead:
            raise Crash("the process is gone")
        self.writes.append(self._caller())
        number = len(self.writes)
        if number == self.point.write and self.point.when == "before":
            self.dead = True
            raise Crash(f"before write {number} ({self.writes[-1]})")
        result = await super()._write(work, single=single)
        if number == self.point.write and self.point.when == "after":
            self.dead = True
            raise Crash(f"after write {number} ({self.writes[-1]})")
        if self.dead:  # died meanwhile (another task's write): nobody hears back
            raise Crash("the process is gone")
        return result

    async def _call(self, work: Callable[[Any], T]) -> T:
        if self.dead:
            raise Crash("the process is gone")
        return await super()._call(work)


@dataclass
class Process:
    """One life of the bot: its own store, gateway client, delegation service (with its outbox) and engine."""

    store: CrashingStore
    delegation: DelegationService
    engine: WorkflowEngine

    @property
    def dead(self) -> bool:
        return self.store.dead


@dataclass
class Scenario:
    config: ClusterConfig
    settings: Settings
    fleet: SimulatedFleet
    http: aiohttp.ClientSession
    path: Path
    point: CrashPoint
    clock: FakeClock = field(default_factory=lambda: FakeClock(datetime.now(UTC)))
    writes: list[str] = field(default_factory=list)
    processes: list[Process] = field(default_factory=list)
    first_hook: int = 0

    async def boot(self) -> Process:
        """A new process on the same file: the old one's store is closed, its engine's waits cancelled."""
        for old in self.processes:
            await old.engine.close()
            old.store.dead = True
        store = CrashingStore(self.path, self.point, self.writes)
        await store.open()
        gateway = GatewayClient(self.http, self.settings.hooks_token_for, self.config.gateway)
        delegation = DelegationService(self.config, store, gateway, clock=self.clock)
        # Outputs come from the agents' reports here; a 2026.9.6 completion without one is not an empty output.
        engine = WorkflowEngine(self.config, store, delegation, gateway, clock=self.clock, output_grace_s=3600)
        process = Process(store, delegation, engine)
        self.processes.append(process)
        return process

    @property
    def reached(self) -> bool:
        """Whether the run made its Nth write (and died there): how many it makes varies a little, with what
        arrives first (a completion, a result)."""
        return 0 < self.point.write <= len(self.writes)

    def hooks(self) -> list[Any]:
        return [hook for hook in self.fleet.received()[self.first_hook :] if hook.path.endswith("/agent")]

    def received(self, key: str) -> bool:
        """Whether the step's attempt (`W-1/mesh#1`) reached its agent (its message carries the key)."""
        return any(key in str(hook.body.get("message")) for hook in self.hooks())


async def step_once(scenario: Scenario, process: Process) -> bool:
    """One round of what the bot and the people do; False when the run is over."""
    engine, delegation = process.engine, process.delegation
    for _ in range(2):  # the bot settles before anyone answers: what it would send again, it sends now
        await delegation.process_due()  # the outbox
        await engine.tick()
        await engine.idle()
        scenario.clock.advance(SETTLE_S)
    if process.dead:
        raise Crash("died in the background")
    detail = await engine.get("W-1")
    if detail.run.status != "running":
        return False
    for step in detail.steps:
        agent = Requester(kind="agent", name=step.agent or "", front_end="api")
        if step.status == "waiting_approval":
            await engine.approve(ALICE, "W-1", step.step_id, approve=True)
        elif step.status == "running" and scenario.received(step.key):
            if step.step_id == "material" and step.attempt == 1:
                await engine.report_result(agent, "W-1", "material", ok=False, output="no access", source="api")
            else:
                await engine.report_result(agent, "W-1", step.step_id, ok=True, output=OUTPUTS[step.step_id],
                                           source="api")  # fmt: skip
        elif step.status in ("unconfirmed", "timed_out"):  # a person checked the agent's work
            await engine.report_result(ANTOINE, "W-1", step.step_id, ok=True, output=OUTPUTS[step.step_id],
                                       source="person")  # fmt: skip
        else:
            continue
        break  # the run moved: read it again
    return True


async def drive(scenario: Scenario) -> None:
    """Start the run and take it to its end through any crash."""
    process = await scenario.boot()
    try:
        await process.engine.start(ANTOINE, DEFINITION, {})
    except Crash:
        pass
    for _ in range(80):
        if process.dead:
            process = await scenario.boot()
            try:
                await process.delegation.recover()
                await process.engine.recover()
            except Crash:  # pragma: no cover: a scenario crashes once
                continue
            if not await process.store.fetchone("SELECT 1 FROM workflow_runs WHERE id = 1"):
                # Died before the run was recorded: its starter was answered with an error and starts it again.
                assert scenario.hooks() == []
                await process.engine.start(ANTOINE, DEFINITION, {})
        try:
            if not await step_once(scenario, process):
                return
        except Crash:
            assert process.dead
    raise AssertionError(f"the run did not end; writes: {scenario.writes}")


async def check(scenario: Scenario) -> None:
    process = scenario.processes[-1]
    detail = await process.engine.get("W-1")
    where = f"crash {scenario.point.when} write {scenario.point.write}"
    if scenario.reached:
        where += f" ({scenario.writes[scenario.point.write - 1]})"
    assert detail.run.status == "succeeded", (where, detail.run.error, [(s.step_id, s.status) for s in detail.steps])
    assert {s.step_id: s.output for s in detail.steps if s.kind == "agent"} == OUTPUTS, where
    # No step reached its agent twice: one hook per attempt (material's first failed, by its agent's word).
    keys = [key for hook in scenario.hooks() for key in _keys(str(hook.body.get("message")))]
    assert len(keys) == len(set(keys)), (where, keys)
    idempotency = [hook.idempotency_key for hook in scenario.hooks()]
    assert len(idempotency) == len(set(idempotency)), where
    thermal = [hook for hook in scenario.hooks() if "W-1/thermal#" in str(hook.body.get("message"))]
    for hook in thermal:  # what the join was sent carries both outputs
        assert f"Mesh: {OUTPUTS['mesh']}" in hook.body["message"], where
        assert f"Material: {OUTPUTS['material']}" in hook.body["message"], where
    rows = await process.store.fetchall("SELECT workflow_step FROM delegations WHERE workflow_step IS NOT NULL")
    steps = [row[0] for row in rows]
    assert len(steps) == len(set(steps)), where


def _keys(message: str) -> list[str]:
    return [word.rstrip(";)") for word in message.split() if word.startswith("W-1/")][:1]


async def test_a_crash_before_and_after_every_write_of_a_run_loses_nothing_and_sends_nothing_twice(
    start_fleet: FleetStarter, settings: Settings, tmp_path: Path
) -> None:
    config, fleet = await start_fleet(release={"webster": RELEASE_LEGACY})
    empty = tmp_path / "empty.db"  # migrated once; each scenario starts from a copy
    async with Store(empty):
        pass
    async with GatewayClient.make_http_client(config.gateway) as http:

        async def run(point: CrashPoint) -> Scenario:
            path = tmp_path / f"crash-{point.write}-{point.when}.db"
            shutil.copyfile(empty, path)
            scenario = Scenario(config, settings, fleet, http, path, point, first_hook=len(fleet.received()))
            try:
                await drive(scenario)
                await check(scenario)
            finally:
                for process in scenario.processes:
                    await process.engine.close()
                    await process.store.close()
            return scenario

        clean = await run(CrashPoint(0, "before"))
        writes = list(clean.writes)
        # The run's writes, by where they are made: the workflow tables (a run, a step's transitions, events, a
        # 2026.9.6 step's evidence, an approval), the delegation of each attempt and its outbox.
        assert set(writes) == {
            "WorkflowStore.insert_run", "WorkflowStore.move", "WorkflowStore.set_run", "WorkflowStore.event",
            "WorkflowEngine._set_evidence", "WorkflowEngine._decide",
            "DelegationService._record", "DelegationService._finish", "DelegationService._expire",
        }, writes  # fmt: skip
        # Every write the run makes is crashed at, just before it and just after it, up to the last one made.
        number = 0
        while True:
            number += 1
            scenarios = [await run(CrashPoint(number, when)) for when in ("before", "after")]
            if not any(scenario.reached for scenario in scenarios):
                break
        assert number > len(writes) * 0.9, (number, writes)
