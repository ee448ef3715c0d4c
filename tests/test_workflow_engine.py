"""The workflow engine on the simulated fleet: real SQLite, real loopback gateways of both releases."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from bot.authz import AccessLevel, Requester
from bot.delegation import chain_footer
from bot.errors import InvalidInput, NotAllowed, StoreError
from bot.services import Services
from bot.simulator import RELEASE_LEGACY, SimulatedFleet
from bot.workflows.cli_runs import delegate_and_wait
from bot.workflows.definition import WorkflowDefinition
from bot.workflows.engine import DISPATCH_RETRY_S, StepConflict, WorkflowEngine, step_footer
from tests.clocks import FakeClock
from tests.conftest import ServicesOnFleet

ANTOINE = Requester(kind="person", name="antoine", front_end="cli", level=AccessLevel.OPERATOR, user_id="1" * 18)
ALICE = Requester(kind="person", name="alice", front_end="discord", level=AccessLevel.ADMIN, user_id="2" * 18)
BOB = Requester(kind="person", name="bob", front_end="discord", level=AccessLevel.ADMIN, user_id="3" * 18)
VIEWER = Requester(kind="person", name="vic", front_end="discord", level=AccessLevel.VIEWER, user_id="4" * 18)


def m2(**approval: Any) -> WorkflowDefinition:
    """The M2 example's shape: a parallel pair, a join, an approval gate, a report."""
    gate = {"prompt": "Approve the thermal results for ${{ inputs.mirror }}?", "approvers": ["role:admin"]}
    gate.update(approval)
    return WorkflowDefinition.model_validate(
        {
            "name": "m2-mirror-study",
            "description": "Mesh, material, thermal, approve, report.",
            "inputs": {"mirror": {"type": "string", "default": "M2"}},
            "deliver_to": "technical",
            "steps": [
                {"id": "mesh", "agent": "nx-expert", "message": "Mesh the ${{ inputs.mirror }} mirror.",
                 "timeout": "2h"},
                {"id": "material", "agent": "webster", "message": "CTE of Zerodur for ${{ inputs.mirror }}.",
                 "timeout": "1h", "retries": 1},
                {"id": "thermal", "agent": "optimizer", "needs": ["mesh", "material"], "timeout": "4h",
                 "message": "Thermal of ${{ inputs.mirror }}.\nMesh: ${{ steps.mesh.output }}\n"
                 "Material: ${{ steps.material.output }}"},
                {"id": "review", "needs": ["thermal"], "approval": gate},
                {"id": "report", "agent": "secretary", "needs": ["review"], "timeout": "1h",
                 "message": "Report from ${{ steps.thermal.output }}."},
            ],
        }
    )  # fmt: skip


def chain(*agents: str, timeout: str = "1h", **extra: Any) -> WorkflowDefinition:
    steps = []
    for i, agent in enumerate(agents):
        step: dict[str, Any] = {"id": f"s{i}", "agent": agent, "message": f"Step {i}.", "timeout": timeout, **extra}
        if i:
            step["needs"] = [f"s{i - 1}"]
            step["message"] = f"Step {i} after ${{{{ steps.s{i - 1}.output }}}}."
        steps.append(step)
    return WorkflowDefinition.model_validate({"name": "chain", "description": "A chain.", "steps": steps})


def hooks_for(fleet: SimulatedFleet, key_part: str) -> list[Any]:
    """Hooks the gateways received whose name carries a delegation of the step."""
    return [hook for hook in fleet.received() if key_part in str(hook.body.get("message"))]


async def agent_hooks(fleet: SimulatedFleet, agent: str) -> list[Any]:
    return [hook for hook in fleet.received(agent) if hook.path.endswith("/agent")]


async def status(engine: WorkflowEngine, run: str) -> dict[str, str]:
    detail = await engine.get(run)
    return {step.step_id: step.status for step in detail.steps}


def as_agent(name: str) -> Requester:
    return Requester(kind="agent", name=name, front_end="api")


# --- the M2 shape end to end ----------------------------------------------------------------------


async def test_m2_shape_runs_to_success(services_on_fleet: ServicesOnFleet) -> None:
    services, fleet = await services_on_fleet(specs={name: {"hold_runs": True} for name in ("nx-expert", "webster")})
    engine = services.workflows
    changes: list[str] = []
    engine.add_listener(changes.append)
    run = await engine.start(ANTOINE, m2(), {"mirror": "M1"})
    # Fan-out: both roots were dispatched at once, before either finished.
    assert await status(engine, run.display_id) == {
        "mesh": "running", "material": "running", "thermal": "pending", "review": "pending", "report": "pending",
    }  # fmt: skip
    assert len(await agent_hooks(fleet, "nx-expert")) == 1 and len(await agent_hooks(fleet, "webster")) == 1
    mesh_hook = (await agent_hooks(fleet, "nx-expert"))[0]
    assert mesh_hook.body["message"] == "Mesh the M1 mirror." + step_footer("W-1/mesh#1") + chain_footer("D-2")
    assert mesh_hook.body["to"].startswith("channel:")
    # The join waits for both.
    await engine.report_result(as_agent("nx-expert"), run.display_id, "mesh", ok=True, output="120k elements",
                               source="api")  # fmt: skip
    assert (await status(engine, run.display_id))["thermal"] == "pending"
    await engine.report_result(as_agent("webster"), run.display_id, "material", ok=True, output="CTE 0 ± 0.007",
                               source="api")  # fmt: skip
    assert (await status(engine, run.display_id))["thermal"] == "running"
    thermal = (await agent_hooks(fleet, "optimizer"))[0].body["message"]
    assert "Mesh: 120k elements" in thermal and "Material: CTE 0 ± 0.007" in thermal
    await engine.report_result(ANTOINE, run.display_id, "thermal", ok=True, output="dT 0.3 K", source="person")
    assert (await status(engine, run.display_id))["review"] == "waiting_approval"
    outcome = await engine.approve(ALICE, run.display_id, "review", approve=True, reason="fine")
    assert outcome.decided and outcome.status == "approved"
    assert (await status(engine, run.display_id))["report"] == "running"
    await engine.report_result(as_agent("secretary"), run.display_id, "report", ok=True, output="done", source="api")
    detail = await engine.get(run.display_id)
    assert detail.run.status == "succeeded"
    assert detail.step("mesh").output_source == "api" and detail.step("thermal").output_source == "person"
    assert "W-1" in changes
    kinds = [event.kind for event in detail.events]
    assert kinds[0] == "started" and "approve" in kinds and kinds[-1] == "run_succeeded"
    delegation = await services.delegation.get(detail.step("mesh").delegation_id or 0)
    assert delegation.workflow_step == "W-1/mesh#1" and delegation.to_dict()["workflow_step"] == "W-1/mesh#1"
    fleet.settle("nx-expert")
    fleet.settle("webster")
    await engine.idle()


async def test_authority_is_checked_for_every_step_up_front(services_on_fleet: ServicesOnFleet) -> None:
    services, fleet = await services_on_fleet()
    with pytest.raises(NotAllowed, match=r"step s1 \(manager\)"):
        await services.workflows.start(as_agent("tech-lead"), chain("nx-expert", "manager"), {})
    assert await services.workflows.runs() == []
    assert fleet.received() == []
    audit = await services.store.fetchall("SELECT action, decision, detail FROM audit_log")
    assert [(row[0], row[1]) for row in audit] == [("workflow-run", "refused")]


async def test_bad_inputs_are_refused_naming_them(services_on_fleet: ServicesOnFleet) -> None:
    services, _ = await services_on_fleet()
    with pytest.raises(InvalidInput, match="unknown input"):
        await services.workflows.start(ANTOINE, m2(), {"mirorr": "M1"})


# --- 2026.9.6 completion ------------------------------------------------------------------------


async def test_completion_ok_without_output_succeeds_after_the_grace(services_on_fleet: ServicesOnFleet) -> None:
    services, _ = await services_on_fleet()
    clock = FakeClock()
    engine = WorkflowEngine(services.config, services.store, services.delegation, services.gateway, clock=clock)
    run = await engine.start(ANTOINE, chain("nx-expert"), {})
    await engine.idle()
    step = (await engine.get(run.display_id)).step("s0")
    assert step.status == "running" and step.evidence["completion"]["status"] == "ok"
    await engine.tick()
    assert (await status(engine, run.display_id))["s0"] == "running"
    clock.advance(61)
    await engine.tick()
    detail = await engine.get(run.display_id)
    assert detail.step("s0").status == "succeeded" and detail.step("s0").output == ""
    assert detail.step("s0").output_source == "completion" and detail.run.status == "succeeded"
    assert any("no output reached atomizer-hq" in str(e.detail) for e in detail.events)


async def test_completion_error_fails_the_step_and_retries_once(services_on_fleet: ServicesOnFleet) -> None:
    services, fleet = await services_on_fleet(specs={"nx-expert": {"model_ok": False}})
    engine = services.workflows
    run = await engine.start(ANTOINE, chain("nx-expert", retries=1), {})
    await engine.idle()
    await engine.idle()
    detail = await engine.get(run.display_id)
    assert detail.step("s0").status == "failed" and detail.step("s0").attempt == 2
    assert "status error" in (detail.step("s0").error or "")
    assert detail.run.status == "failed"
    assert len(await agent_hooks(fleet, "nx-expert")) == 2  # two attempts, two delegations, nothing more


async def test_legacy_agent_in_a_run_relies_on_reported_results(services_on_fleet: ServicesOnFleet) -> None:
    services, fleet = await services_on_fleet(release={"webster": RELEASE_LEGACY})
    engine = services.workflows
    run = await engine.start(ANTOINE, chain("webster", "nx-expert"), {})
    await engine.idle()
    await engine.tick()
    assert await status(engine, run.display_id) == {"s0": "running", "s1": "pending"}
    await engine.report_result(as_agent("webster"), run.display_id, "s0", ok=True, output="found", source="api")
    assert (await status(engine, run.display_id))["s1"] == "running"
    assert len(await agent_hooks(fleet, "webster")) == 1


async def test_gateway_restart_between_admission_and_completion_is_unconfirmed(
    services_on_fleet: ServicesOnFleet,
) -> None:
    services, fleet = await services_on_fleet(specs={"nx-expert": {"hold_runs": True}})
    engine = services.workflows
    run = await engine.start(ANTOINE, chain("nx-expert", "secretary"), {})
    await fleet.wait_in_flight("nx-expert")  # the completion wait is attached
    await fleet.restart("nx-expert")
    await engine.idle()
    detail = await engine.get(run.display_id)
    assert detail.step("s0").status == "unconfirmed", detail.step("s0").error
    assert "not re-sent" in (detail.step("s0").error or "")
    await engine.tick()
    assert len(await agent_hooks(fleet, "nx-expert")) == 1  # ONE hook for that step, ever
    assert detail.run.status == "running"  # it waits for a person
    # A person reports the result by hand: the run goes on.
    await engine.report_result(ANTOINE, run.display_id, "s0", ok=True, output="checked by hand", source="person")
    assert (await status(engine, run.display_id))["s1"] == "running"


async def test_an_unconfirmed_step_with_on_failure_continue_releases_what_follows(
    services_on_fleet: ServicesOnFleet,
) -> None:
    services, fleet = await services_on_fleet(specs={"nx-expert": {"hold_runs": True}})
    engine = services.workflows
    definition = WorkflowDefinition.model_validate({"name": "c", "description": "c", "steps": [
        {"id": "a", "agent": "nx-expert", "message": "a", "timeout": "1h", "on_failure": "continue"},
        {"id": "b", "agent": "secretary", "needs": ["a"], "message": "b", "timeout": "1h"},
    ]})  # fmt: skip
    run = await engine.start(ANTOINE, definition, {})
    await fleet.wait_in_flight("nx-expert")
    await fleet.restart("nx-expert")  # the watcher ends `a` unconfirmed
    await engine.idle()
    assert await status(engine, run.display_id) == {"a": "unconfirmed", "b": "running"}
    # Ended elsewhere (another process, or a crash before its advance): the next tick releases what follows.
    await engine.report_result(as_agent("secretary"), run.display_id, "b", ok=True, output="x", source="api")
    other = await services.workflows.start(ANTOINE, definition, {})
    await fleet.wait_in_flight("nx-expert")
    await engine.tables.move(other.id, "a", "unconfirm", engine._clock(), actor="elsewhere")
    await engine.tick()
    assert (await status(engine, other.display_id))["b"] == "running"
    fleet.settle("nx-expert")
    await engine.idle()


async def test_restart_while_the_bot_was_down_is_caught_before_reattaching(
    services_on_fleet: ServicesOnFleet,
) -> None:
    services, fleet = await services_on_fleet(specs={"nx-expert": {"hold_runs": True}})
    run = await services.workflows.start(ANTOINE, chain("nx-expert"), {})
    await fleet.wait_in_flight("nx-expert")
    await services.workflows.close()
    await fleet.restart("nx-expert")
    again, _ = await services_on_fleet()
    await again.workflows.recover()
    await again.workflows.idle()
    assert (await status(again.workflows, run.display_id))["s0"] == "unconfirmed"
    assert len(await agent_hooks(fleet, "nx-expert")) == 1


def moving_clocks() -> tuple[FakeClock, Callable[[], float]]:
    """The engine's clock, moved by hand from now on, and the gateways' (real time plus what the test moved)."""
    clock = FakeClock(datetime.now(UTC))
    start = clock.now
    return clock, lambda: time.time() + (clock.now - start).total_seconds()


async def test_a_crash_before_the_admission_was_followed_then_a_gateway_restart_starts_no_second_run(
    services_on_fleet: ServicesOnFleet,
) -> None:
    """The admission time is the delegation's, not when a later process first looks at the step; and while the
    restarted gateway is still starting (/startupz 503) nothing proves a re-POST safe: none is made."""
    services, fleet = await services_on_fleet(specs={"nx-expert": {"hold_runs": True, "startup": None}})
    fleet.finish_startup("nx-expert")
    engine = services.workflows

    def crash(name: str, key: str) -> None:
        if name == "running":
            raise Crash(key)

    engine.fault = crash
    with pytest.raises(Crash):
        await engine.start(ANTOINE, chain("nx-expert"), {})
    await engine.close()
    await fleet.restart("nx-expert")  # starting: /startupz answers 503
    again = (await services_on_fleet())[0].workflows
    await again.recover()
    await again.idle()
    await again.tick()
    await again.idle()
    assert (await status(again, "W-1"))["s0"] == "running"
    assert len(await agent_hooks(fleet, "nx-expert")) == 1
    fleet.finish_startup("nx-expert")
    await again.tick()
    await again.idle()
    step = (await again.get("W-1")).step("s0")
    assert step.status == "unconfirmed" and "restarted" in (step.error or "") and "not re-sent" in (step.error or "")
    assert len(await agent_hooks(fleet, "nx-expert")) == 1  # ONE run, ever


async def test_no_reattach_after_the_gateway_may_have_forgotten_a_finished_run(
    services_on_fleet: ServicesOnFleet,
) -> None:
    """2026.9.6 forgets a settled run's key 5 min after it settled: a bot down longer than that does not re-POST
    (it would start the work again); the step waits for a reported result until its timeout."""
    clock, fleet_clock = moving_clocks()
    services, fleet = await services_on_fleet(specs={"nx-expert": {"hold_runs": True}}, clock=fleet_clock)
    first = WorkflowEngine(services.config, services.store, services.delegation, services.gateway, clock=clock)
    run = await first.start(ANTOINE, chain("nx-expert", "secretary", timeout="30m"), {})
    await fleet.wait_in_flight("nx-expert")  # the completion wait is attached
    await first.close()  # the bot goes down; the run finishes while nobody follows it
    fleet.settle("nx-expert")
    clock.advance(6 * 60)
    again = (await services_on_fleet())[0]
    engine = WorkflowEngine(again.config, again.store, again.delegation, again.gateway, clock=clock)
    await engine.recover()
    await engine.idle()
    await engine.tick()
    await engine.idle()
    step = (await engine.get(run.display_id)).step("s0")
    assert step.status == "running" and "not re-attached" in step.evidence["not_reattached"]
    assert len(await agent_hooks(fleet, "nx-expert")) == 1
    clock.advance(25 * 60)
    await engine.tick()
    assert (await status(engine, run.display_id))["s0"] == "unconfirmed"
    assert len(await agent_hooks(fleet, "nx-expert")) == 1


async def test_a_short_outage_reattaches_and_a_held_wait_is_remembered(services_on_fleet: ServicesOnFleet) -> None:
    """Down less than 4 min since the wait was last held: the re-POST replays the same run and reads its end."""
    clock, fleet_clock = moving_clocks()
    services, fleet = await services_on_fleet(specs={"nx-expert": {"hold_runs": True}}, clock=fleet_clock)
    first = WorkflowEngine(services.config, services.store, services.delegation, services.gateway, clock=clock)
    run = await first.start(ANTOINE, chain("nx-expert", timeout="2h"), {})
    await fleet.wait_in_flight("nx-expert")
    for _ in range(20):  # held for 20 min: the step records that the run was still going
        clock.advance(60)
        await first.tick()
    attached = (await first.get(run.display_id)).step("s0").evidence["attached_unix"]
    assert attached >= clock.now.timestamp() - 65
    await first.close()
    clock.advance(3 * 60)
    engine = WorkflowEngine(services.config, services.store, services.delegation, services.gateway, clock=clock)
    await engine.recover()
    await fleet.wait_in_flight("nx-expert")
    fleet.settle("nx-expert")
    await engine.idle()
    assert (await engine.get(run.display_id)).step("s0").evidence["completion"]["status"] == "ok"
    assert len(await agent_hooks(fleet, "nx-expert")) == 1


async def test_two_callers_at_once_attach_one_completion_wait(services_on_fleet: ServicesOnFleet) -> None:
    services, fleet = await services_on_fleet(specs={"nx-expert": {"hold_runs": True}})
    run = await services.workflows.start(ANTOINE, chain("nx-expert"), {})
    await services.workflows.close()
    again = (await services_on_fleet())[0]  # a new process: whether the gateway honours keys is not known yet
    engine = again.workflows
    step = (await engine.get(run.display_id)).step("s0")
    delegation = await again.delegation.get(step.delegation_id or 0)
    await asyncio.gather(engine._maybe_watch(step, delegation), engine._maybe_watch(step, delegation))
    watchers = [task for task in asyncio.all_tasks() if task.get_name() == "W-1/s0" and not task.done()]
    assert len(watchers) == 1
    fleet.settle("nx-expert")
    await engine.idle()


# --- agents down, timeouts ----------------------------------------------------------------------


async def test_agent_down_when_due_stays_running_while_the_outbox_retries(services_on_fleet: ServicesOnFleet) -> None:
    clock, fleet_clock = moving_clocks()
    services, fleet = await services_on_fleet(specs={"nx-expert": {"down": True}}, clock=fleet_clock)
    engine = services.workflows
    run = await engine.start(ANTOINE, chain("nx-expert"), {})
    detail = await engine.get(run.display_id)
    assert detail.step("s0").status == "running"
    delegation = await services.delegation.get(detail.step("s0").delegation_id or 0)
    assert delegation.status == "queued"
    await engine.tick()
    assert (await status(engine, run.display_id))["s0"] == "running"
    await fleet.bring_up("nx-expert")
    # A real gateway takes 8-14 s to start before it admits anything: its /startupz then proves it started
    # before the admission, so following the completion (a re-POST of the key) is safe.
    clock.advance(10)
    await services.store.execute("UPDATE delegations SET next_attempt_at = created_at")
    await services.delegation.process_due()
    await engine.tick()
    await engine.idle()
    step = (await engine.get(run.display_id)).step("s0")
    assert step.status == "running" and step.evidence["completion"]["status"] == "ok"
    assert len(await agent_hooks(fleet, "nx-expert")) == 1


async def test_a_step_ended_by_hand_while_queued_is_never_sent(services_on_fleet: ServicesOnFleet) -> None:
    """A result while the agent is down ends the step and expires its queued delegation in one transaction."""
    services, fleet = await services_on_fleet(specs={"nx-expert": {"down": True}})
    engine = services.workflows
    run = await engine.start(ANTOINE, chain("nx-expert", "secretary"), {})
    await engine.report_result(ANTOINE, run.display_id, "s0", ok=True, output="done by hand", source="person")
    await fleet.bring_up("nx-expert")
    await services.store.execute("UPDATE delegations SET next_attempt_at = created_at")
    await services.delegation.process_due()
    assert await agent_hooks(fleet, "nx-expert") == []
    delegation = await services.delegation.get((await engine.get(run.display_id)).step("s0").delegation_id or 0)
    assert delegation.status == "expired" and "ended (succeeded) before it was sent" in (delegation.last_error or "")
    await engine.idle()


async def test_the_outbox_does_not_claim_a_delegation_whose_step_ended(services_on_fleet: ServicesOnFleet) -> None:
    """Even if the step ended without expiring it (another writer, an older version): the claim checks the step."""
    services, fleet = await services_on_fleet(specs={"nx-expert": {"down": True}})
    engine = services.workflows
    run = await engine.start(ANTOINE, chain("nx-expert"), {})
    await services.store.execute("UPDATE workflow_steps SET status = 'unconfirmed' WHERE step_id = 's0'")
    plain = await services.delegation.delegate(ANTOINE, "nx-expert", "not a workflow's", deliver=False)
    assert plain.delegation is not None and plain.delegation.status == "queued"
    await fleet.bring_up("nx-expert")
    await services.store.execute("UPDATE delegations SET next_attempt_at = created_at")
    await services.delegation.process_due()
    hooks = await agent_hooks(fleet, "nx-expert")
    assert [hook.body["message"] for hook in hooks] == ["not a workflow's" + chain_footer("D-2")]
    step = (await engine.get(run.display_id)).step("s0")
    assert (await services.delegation.get(step.delegation_id or 0)).status == "expired"
    await engine.idle()


async def test_a_step_times_out(services_on_fleet: ServicesOnFleet) -> None:
    services, fleet = await services_on_fleet(specs={"nx-expert": {"down": True}}, release={"webster": RELEASE_LEGACY})
    clock = FakeClock()
    engine = WorkflowEngine(services.config, services.store, services.delegation, services.gateway, clock=clock)
    definition = WorkflowDefinition.model_validate(
        {"name": "two", "description": "Two roots.", "steps": [
            {"id": "down", "agent": "nx-expert", "message": "x", "timeout": "30m"},
            {"id": "quiet", "agent": "webster", "message": "y", "timeout": "30m", "on_failure": "continue"},
        ]}
    )  # fmt: skip
    run = await engine.start(ANTOINE, definition, {})
    clock.advance(29 * 60)
    await engine.tick()
    assert await status(engine, run.display_id) == {"down": "running", "quiet": "running"}
    clock.advance(61)
    await engine.tick()
    detail = await engine.get(run.display_id)
    assert detail.step("down").status == "timed_out" and "never admitted" in (detail.step("down").error or "")
    assert detail.step("quiet").status == "unconfirmed"  # admitted by a 2026.2.12 gateway, no result
    # Neither proves a failure: the run waits for a person (a result by hand, a retry, a cancel).
    assert detail.run.status == "running" and detail.shown_status == "waiting"
    await engine.report_result(ANTOINE, run.display_id, "down", ok=False, output="agent was down", source="person")
    assert (await engine.get(run.display_id)).run.status == "failed"
    delegation = await services.delegation.get(detail.step("down").delegation_id or 0)
    assert delegation.status == "expired"  # the outbox will not send it late
    await fleet.bring_up("nx-expert")


# --- approvals ----------------------------------------------------------------------------------


async def gate_run(services: Services, engine: WorkflowEngine | None = None, **approval: Any) -> str:
    engine = engine or services.workflows
    definition = WorkflowDefinition.model_validate(
        {"name": "gate", "description": "Just a gate.", "steps": [
            {"id": "review", "approval": {"prompt": "OK?", "approvers": ["role:admin"], **approval}},
            {"id": "after", "agent": "secretary", "needs": ["review"], "message": "go", "timeout": "1h"},
        ]}
    )  # fmt: skip
    run = await engine.start(ALICE, definition, {})
    return run.display_id


async def test_approval_rules(services_on_fleet: ServicesOnFleet) -> None:
    services, _ = await services_on_fleet()
    engine = services.workflows
    run = await gate_run(services)
    with pytest.raises(NotAllowed, match="started this run"):
        await engine.approve(ALICE, run, "review", approve=True)
    with pytest.raises(NotAllowed, match="who may: a person with the admin role"):
        await engine.approve(ANTOINE, run, "review", approve=True)
    with pytest.raises(NotAllowed):
        await engine.approve(as_agent("manager"), run, "review", approve=True)
    outcome = await engine.approve(BOB, run, "review", approve=True)
    assert outcome.decided
    with pytest.raises(StepConflict, match="already approved by you"):
        await engine.approve(BOB, run, "review", approve=True)
    carol = Requester(kind="person", name="carol", front_end="cli", level=AccessLevel.ADMIN, user_id="5" * 18)
    with pytest.raises(StepConflict, match="already approved by bob"):
        await engine.approve(carol, run, "review", approve=False)


async def test_quorum_two_needs_two_distinct_people(services_on_fleet: ServicesOnFleet) -> None:
    services, _ = await services_on_fleet()
    engine = services.workflows
    run = await gate_run(services, quorum=2, starter_may_approve=True)
    first = await engine.approve(BOB, run, "review", approve=True)
    assert not first.decided and first.approvals == 1
    with pytest.raises(StepConflict, match="already approved by you"):
        await engine.approve(BOB, run, "review", approve=True)
    second = await engine.approve(ALICE, run, "review", approve=True)  # the starter, allowed here
    assert second.decided and second.approvals == 2
    assert (await status(engine, run))["after"] == "running"


async def test_two_approvers_at_once_one_wins(services_on_fleet: ServicesOnFleet) -> None:
    services, _ = await services_on_fleet()
    engine = services.workflows
    run = await gate_run(services)
    carol = Requester(kind="person", name="carol", front_end="cli", level=AccessLevel.ADMIN, user_id="5" * 18)
    results = await asyncio.gather(
        engine.approve(BOB, run, "review", approve=True),
        engine.approve(carol, run, "review", approve=True),
        return_exceptions=True,
    )
    won = [r for r in results if not isinstance(r, BaseException)]
    lost = [r for r in results if isinstance(r, BaseException)]
    assert len(won) == 1 and len(lost) == 1
    assert isinstance(lost[0], StepConflict) and "already approved by" in str(lost[0])
    assert len(await agent_hooks_in(services, "secretary")) == 1


async def agent_hooks_in(services: Services, agent: str) -> list[Any]:
    rows = await services.store.fetchall("SELECT id FROM delegations WHERE agent = ?", (agent,))
    return list(rows)


async def test_a_reject_resolves_at_once_and_fails_the_run(services_on_fleet: ServicesOnFleet) -> None:
    services, _ = await services_on_fleet()
    run = await gate_run(services, quorum=2)
    outcome = await services.workflows.approve(BOB, run, "review", approve=False, reason="numbers off")
    assert outcome.decided and outcome.status == "rejected"
    detail = await services.workflows.get(run)
    assert detail.run.status == "failed" and detail.step("after").status == "skipped"


@pytest.mark.parametrize(
    ("policy", "gate_status", "after"),
    [("reject", "expired", "skipped"), ("approve", "approved", "running"), ("escalate", "waiting_approval", "pending")],
)
async def test_expiry_policies(services_on_fleet: ServicesOnFleet, policy: str, gate_status: str, after: str) -> None:
    services, _ = await services_on_fleet()
    clock = FakeClock()
    engine = WorkflowEngine(services.config, services.store, services.delegation, services.gateway, clock=clock)
    extra = {"escalate_to": [f"user:{BOB.user_id}"]} if policy == "escalate" else {}
    run = await gate_run(services, engine, expires_in="1h", on_expire=policy, **extra)
    clock.advance(3601)
    await engine.tick()
    detail = await engine.get(run)
    assert detail.step("review").status == gate_status
    assert detail.step("after").status == after
    if policy == "reject":
        with pytest.raises(StepConflict, match=r"expired .* with no decision"):
            await engine.approve(BOB, run, "review", approve=True)
    if policy == "escalate":
        with pytest.raises(NotAllowed, match=f"<@{BOB.user_id}>"):  # admins no longer: only the escalation
            await engine.approve(
                Requester(kind="person", name="carol", front_end="cli", level=AccessLevel.ADMIN, user_id="5" * 18),
                run, "review", approve=True,
            )  # fmt: skip
        assert (await engine.approve(BOB, run, "review", approve=True)).decided


@pytest.mark.parametrize(
    ("policy", "said"),
    [("reject", "it is rejected as expired"), ("approve", "its policy approves it"), ("escalate", "it goes to <@")],
)
async def test_a_decision_after_the_expiry_is_refused_before_the_timer_acts(
    services_on_fleet: ServicesOnFleet, policy: str, said: str
) -> None:
    services, _ = await services_on_fleet()
    clock = FakeClock()
    engine = WorkflowEngine(services.config, services.store, services.delegation, services.gateway, clock=clock)
    extra = {"escalate_to": [f"user:{BOB.user_id}"]} if policy == "escalate" else {}
    run = await gate_run(services, engine, expires_in="1h", on_expire=policy, **extra)
    clock.advance(3600)  # no tick yet
    with pytest.raises(StepConflict, match=rf"expired at .* UTC with no decision: {said}"):
        await engine.approve(BOB, run, "review", approve=True)
    assert (await status(engine, run))["review"] == "waiting_approval"


async def test_an_escalation_that_lands_before_the_decision_applies_to_it(
    services_on_fleet: ServicesOnFleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    services, _ = await services_on_fleet()
    engine = services.workflows
    run = await gate_run(services, on_expire="escalate", escalate_to=[f"user:{BOB.user_id}"])
    read = engine.tables.step

    async def read_then_escalated(run_id: int, step_id: str) -> Any:
        row = await read(run_id, step_id)
        write_elsewhere(  # the bot's timer escalates the gate right after this click read it
            services, f"UPDATE workflow_steps SET evidence = '{{\"approvers\": [\"user:{BOB.user_id}\"]}}' "
            "WHERE step_id = 'review'",
        )  # fmt: skip
        return row

    monkeypatch.setattr(engine.tables, "step", read_then_escalated)
    carol = Requester(kind="person", name="carol", front_end="cli", level=AccessLevel.ADMIN, user_id="5" * 18)
    with pytest.raises(NotAllowed, match=f"who may: <@{BOB.user_id}>"):
        await engine.approve(carol, run, "review", approve=True)
    monkeypatch.undo()
    assert (await status(engine, run))["review"] == "waiting_approval"


async def test_identities_of_different_kinds_never_match_by_name(services_on_fleet: ServicesOnFleet) -> None:
    """A Discord display name is chosen freely: it is not the host login it happens to spell."""
    services, _ = await services_on_fleet()
    engine = services.workflows
    host = Requester(kind="person", name="antoine@host", front_end="cli", level=AccessLevel.ADMIN)
    definition = WorkflowDefinition.model_validate(
        {"name": "gate", "description": "Just a gate.", "steps": [
            {"id": "review", "approval": {"prompt": "OK?", "approvers": ["role:admin"], "quorum": 2}}]}
    )  # fmt: skip
    run = (await engine.start(host, definition, {})).display_id
    with pytest.raises(NotAllowed, match="started this run"):
        await engine.approve(host, run, "review", approve=True)
    namesake = Requester(kind="person", name="antoine@host", front_end="discord", level=AccessLevel.ADMIN,
                         user_id="6" * 18)  # fmt: skip
    assert (await engine.approve(namesake, run, "review", approve=True)).approvals == 1


async def test_approvals_made_before_an_escalation_still_count(services_on_fleet: ServicesOnFleet) -> None:
    services, _ = await services_on_fleet()
    clock = FakeClock()
    engine = WorkflowEngine(services.config, services.store, services.delegation, services.gateway, clock=clock)
    run = await gate_run(services, engine, quorum=2, expires_in="1h", on_expire="escalate",
                         escalate_to=[f"user:{BOB.user_id}"])  # fmt: skip
    carol = Requester(kind="person", name="carol", front_end="cli", level=AccessLevel.ADMIN, user_id="5" * 18)
    assert (await engine.approve(carol, run, "review", approve=True)).approvals == 1
    clock.advance(3601)
    await engine.tick()  # escalated to bob alone
    outcome = await engine.approve(BOB, run, "review", approve=True)
    assert outcome.decided and outcome.approvals == 2


# --- cancel, retry ------------------------------------------------------------------------------


async def test_cancel_tells_running_agents_to_stop(services_on_fleet: ServicesOnFleet) -> None:
    services, fleet = await services_on_fleet(specs={"nx-expert": {"hold_runs": True}})
    engine = services.workflows
    run = await engine.start(ANTOINE, m2(), {})
    with pytest.raises(NotAllowed):
        await engine.cancel(VIEWER, run.display_id)
    cancelled = await engine.cancel(ANTOINE, run.display_id, reason="wrong mirror")
    assert cancelled.status == "cancelled"
    assert set((await status(engine, run.display_id)).values()) == {"cancelled"}
    stops = [hook for hook in await agent_hooks(fleet, "nx-expert") if "Stop work on W-1/mesh" in hook.body["message"]]
    assert len(stops) == 1 and stops[0].body["deliver"] is False
    with pytest.raises(StepConflict, match="cancelled"):
        await engine.report_result(as_agent("nx-expert"), run.display_id, "mesh", ok=True, output="x", source="api")
    fleet.settle("nx-expert")
    await engine.idle()


async def test_retry_from_a_step_reuses_outputs(services_on_fleet: ServicesOnFleet) -> None:
    services, fleet = await services_on_fleet(release=RELEASE_LEGACY)
    engine = services.workflows
    run = await engine.start(ANTOINE, chain("nx-expert", "optimizer", "secretary"), {})
    await engine.report_result(ANTOINE, run.display_id, "s0", ok=True, output="mesh-v1", source="person")
    await engine.report_result(ANTOINE, run.display_id, "s1", ok=False, output="diverged", source="person")
    detail = await engine.get(run.display_id)
    assert detail.run.status == "failed" and detail.step("s2").status == "skipped"
    await engine.retry(ANTOINE, run.display_id)
    assert await status(engine, run.display_id) == {"s0": "succeeded", "s1": "running", "s2": "pending"}
    again = await engine.get(run.display_id)
    assert again.step("s0").output == "mesh-v1" and again.step("s1").attempt == 2
    assert len(await agent_hooks(fleet, "nx-expert")) == 1 and len(await agent_hooks(fleet, "optimizer")) == 2
    with pytest.raises(StepConflict, match="still running"):
        await engine.retry(ANTOINE, run.display_id, from_step="s0")
    await engine.report_result(ANTOINE, run.display_id, "s1", ok=True, output="thermal-v2", source="person")
    await engine.report_result(ANTOINE, run.display_id, "s2", ok=True, output="report-v1", source="person")
    assert (await engine.get(run.display_id)).run.status == "succeeded"
    # --from s1: s0's output is reused (not re-sent), s1 and what follows run again.
    await engine.retry(ANTOINE, run.display_id, from_step="s1")
    assert await status(engine, run.display_id) == {"s0": "succeeded", "s1": "running", "s2": "pending"}
    assert len(await agent_hooks(fleet, "nx-expert")) == 1 and len(await agent_hooks(fleet, "optimizer")) == 3
    assert (await agent_hooks(fleet, "optimizer"))[-1].body["message"].startswith("Step 1 after mesh-v1.\n\n")
    await engine.report_result(ANTOINE, run.display_id, "s1", ok=True, output="thermal-v3", source="person")
    assert (await engine.get(run.display_id)).step("s2").attempt == 2


async def test_result_rules(services_on_fleet: ServicesOnFleet) -> None:
    services, _ = await services_on_fleet(release=RELEASE_LEGACY)
    engine = services.workflows
    run = await engine.start(ANTOINE, chain("nx-expert", "optimizer"), {})
    with pytest.raises(NotAllowed, match="only nx-expert"):
        await engine.report_result(as_agent("webster"), run.display_id, "s0", ok=True, output="x", source="api")
    with pytest.raises(StepConflict, match="has not been sent yet"):
        await engine.report_result(ANTOINE, run.display_id, "s1", ok=True, output="x", source="person")
    await engine.report_result(as_agent("nx-expert"), run.display_id, "s0", ok=True, output="x", source="api")
    with pytest.raises(StepConflict, match="succeeded"):
        await engine.report_result(ANTOINE, run.display_id, "s0", ok=True, output="y", source="person")


async def test_results_are_tied_to_their_attempt(services_on_fleet: ServicesOnFleet) -> None:
    """A failure seen twice burns one retry, not two; a late result of attempt 1 does not end attempt 2."""
    services, fleet = await services_on_fleet(release=RELEASE_LEGACY)
    engine = services.workflows
    run = await engine.start(ANTOINE, chain("nx-expert", retries=2), {})
    nx = as_agent("nx-expert")
    assert "W-1/s0#1" in (await agent_hooks(fleet, "nx-expert"))[0].body["message"]  # the agent sees its attempt
    await engine.report_result(nx, run.display_id, "s0", ok=False, output="attempt1 failed", source="api")
    again = await engine.report_result(nx, run.display_id, "s0", ok=False, output="attempt1 failed", source="api")
    assert again.attempt == 2 and again.status == "running"
    with pytest.raises(StepConflict, match=r"W-1/s0#1 is over: the step is at attempt 2"):
        await engine.report_result(nx, run.display_id, "s0#1", ok=True, output="late ok of 1", source="api")
    with pytest.raises(StepConflict, match="attempt 2"):
        await engine.report_result(nx, run.display_id, "s0", ok=False, output="x", source="api", attempt=1)
    step = (await engine.get(run.display_id)).step("s0")
    assert (step.attempt, step.status) == (2, "running")
    assert len(await agent_hooks(fleet, "nx-expert")) == 2
    # The move itself checks the attempt: a writer that read attempt 1 moves nothing once attempt 2 runs.
    assert not await engine.tables.move(1, "s0", "succeed", engine._clock(), actor="x", expect_attempt=1)
    await engine.report_result(nx, run.display_id, "s0#2", ok=True, output="fine", source="api")
    assert (await engine.get(run.display_id)).run.status == "succeeded"


async def test_a_failure_report_that_lost_a_race_is_not_answered_as_recorded(
    services_on_fleet: ServicesOnFleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    services, _ = await services_on_fleet(release=RELEASE_LEGACY)
    engine = services.workflows
    run = await engine.start(ANTOINE, chain("nx-expert"), {})
    read = engine.tables.step

    async def read_then_succeeded(run_id: int, step_id: str) -> Any:
        row = await read(run_id, step_id)
        write_elsewhere(services, "UPDATE workflow_steps SET status = 'succeeded', output = 'ok' WHERE step_id = 's0'")
        return row

    monkeypatch.setattr(engine.tables, "step", read_then_succeeded)
    with pytest.raises(StepConflict, match="W-1/s0 is succeeded"):
        await engine.report_result(ANTOINE, run.display_id, "s0", ok=False, output="broken", source="person")
    monkeypatch.undo()
    detail = await engine.get(run.display_id)
    assert detail.step("s0").status == "succeeded" and "result_failed" not in [e.kind for e in detail.events]


async def test_delegate_wait_result_follows_only_its_own_run(services_on_fleet: ServicesOnFleet) -> None:
    """No outbox of its own (it would send, and recover, the bot's delegations) and no tick of the other runs."""
    services, fleet = await services_on_fleet(specs={"nx-expert": {"down": True}}, release={"webster": RELEASE_LEGACY})
    other = await services.workflows.start(ANTOINE, chain("nx-expert"), {})
    await fleet.bring_up("nx-expert")
    await services.store.execute("UPDATE delegations SET next_attempt_at = created_at")  # due: the bot's to send
    await services.store.execute("UPDATE workflow_steps SET deadline_at = '2000-01-01T00:00:00.000000+00:00'")
    run, step = await delegate_and_wait(services, ANTOINE, "webster", "Find CTE.", wait_s=1, to=None, deliver=False)
    assert step.status == "running" and run.id != other.id  # a 2026.2.12 agent that reported nothing yet
    assert await agent_hooks(fleet, "nx-expert") == []
    assert (await status(services.workflows, other.display_id))["s0"] == "running"  # not timed out by this process


# --- crashes ------------------------------------------------------------------------------------


class Crash(Exception):
    """The process dies here: nothing after this point of the code runs."""


async def test_a_dispatch_the_database_failed_is_finished_by_tick_and_start_still_succeeds(
    services_on_fleet: ServicesOnFleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    services, fleet = await services_on_fleet()
    clock = FakeClock()
    engine = WorkflowEngine(services.config, services.store, services.delegation, services.gateway, clock=clock)
    delegate = services.delegation.delegate
    failed: list[str] = []

    async def flaky(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("workflow_step") == "W-1/mesh#1" and not failed:
            failed.append("W-1/mesh#1")
            raise StoreError("the database did not answer")
        return await delegate(*args, **kwargs)

    monkeypatch.setattr(services.delegation, "delegate", flaky)
    run = await engine.start(ANTOINE, m2(), {})  # recorded: answered as started, not as a failure
    assert failed and run.status == "running"
    assert {k: v for k, v in (await status(engine, "W-1")).items() if k in ("mesh", "material")} == {
        "mesh": "dispatching", "material": "running",  # the rest of the wave went out
    }  # fmt: skip
    await engine.tick()
    assert (await status(engine, "W-1"))["mesh"] == "dispatching"  # another process may be dispatching it
    clock.advance(DISPATCH_RETRY_S)
    await engine.tick()
    assert (await status(engine, "W-1"))["mesh"] == "running"
    assert len(await agent_hooks(fleet, "nx-expert")) == 1
    await engine.idle()


def write_elsewhere(services: Services, *statements: str) -> None:
    """Another process (the CLI) writes the database now, between two steps of this one's work."""
    with contextlib.closing(sqlite3.connect(services.store.path, timeout=10, isolation_level=None)) as conn:
        for statement in statements:
            conn.execute(statement)


async def test_a_cancel_while_the_bot_dispatches_stops_the_agent(services_on_fleet: ServicesOnFleet) -> None:
    services, fleet = await services_on_fleet(specs={"nx-expert": {"hold_runs": True}})
    engine = services.workflows

    def cancelled_elsewhere(name: str, key: str) -> None:
        if name == "delegated":  # the delegation is sent; the step is not `running` yet
            write_elsewhere(
                services,
                "UPDATE workflow_runs SET status = 'cancelled'",
                "UPDATE workflow_steps SET status = 'cancelled', error = 'cancelled by antoine' WHERE step_id = 's0'",
            )

    engine.fault = cancelled_elsewhere
    await engine.start(ANTOINE, chain("nx-expert"), {})
    assert (await status(engine, "W-1"))["s0"] == "cancelled"
    messages = [hook.body["message"] for hook in await agent_hooks(fleet, "nx-expert")]
    assert len(messages) == 2 and messages[1].startswith("Stop work on W-1/s0")
    fleet.settle("nx-expert")
    await engine.idle()


async def test_recover_does_not_adopt_a_dispatch_into_a_finished_run(services_on_fleet: ServicesOnFleet) -> None:
    services, fleet = await services_on_fleet(specs={"nx-expert": {"hold_runs": True}})
    engine = services.workflows

    def crash(name: str, key: str) -> None:
        if name == "delegated":
            raise Crash(key)

    engine.fault = crash
    with pytest.raises(Crash):
        await engine.start(ANTOINE, chain("nx-expert"), {})
    await engine.close()
    write_elsewhere(services, "UPDATE workflow_runs SET status = 'failed', error = 'another step failed'")
    again = (await services_on_fleet())[0].workflows
    await again.recover()
    await again.idle()
    step = (await again.get("W-1")).step("s0")
    assert step.status == "cancelled" and "the run is failed" in (step.error or "")
    assert "told to stop" in (step.error or "")
    messages = [hook.body["message"] for hook in await agent_hooks(fleet, "nx-expert")]
    assert len(messages) == 2 and messages[1].startswith("Stop work on W-1/s0")
    fleet.settle("nx-expert")


@pytest.mark.parametrize("point", ["dispatching", "delegated", "running", "result"])
async def test_a_crash_at_every_transition_dispatches_each_step_once(
    services_on_fleet: ServicesOnFleet, point: str
) -> None:
    services, fleet = await services_on_fleet(release={"optimizer": RELEASE_LEGACY})
    crashed: set[str] = set()

    def crash(name: str, key: str) -> None:
        if name == point and key not in crashed:
            crashed.add(key)
            raise Crash(f"{name} {key}")

    engine = services.workflows
    engine.fault = crash
    down = False
    try:
        await engine.start(ANTOINE, chain("nx-expert", "optimizer", "secretary"), {})
    except Crash:
        down = True
    for _ in range(30):
        if down:  # a new process on the same database
            await engine.close()
            engine = (await services_on_fleet())[0].workflows
            engine.fault = crash
            down = False
            try:
                await engine.recover()
            except Crash:
                down = True
                continue
        await engine.idle()
        detail = await engine.get("W-1")
        if detail.run.status != "running":
            break
        running = [step for step in detail.steps if step.status == "running"]
        assert running, {step.step_id: step.status for step in detail.steps}
        try:
            await engine.report_result(ANTOINE, "W-1", running[0].step_id, ok=True, output="ok", source="person")
        except Crash:
            down = True
    detail = await engine.get("W-1")
    assert detail.run.status == "succeeded"
    assert len(crashed) == 3  # one crash per step at this point
    for agent in ("nx-expert", "optimizer", "secretary"):
        assert len(await agent_hooks(fleet, agent)) == 1, agent
    rows = await engine.tables.db.fetchall("SELECT workflow_step FROM delegations ORDER BY id")
    assert [row[0] for row in rows] == ["W-1/s0#1", "W-1/s1#1", "W-1/s2#1"]
    await engine.close()


async def test_results_arriving_together_each_get_their_next_step_sent(services_on_fleet: ServicesOnFleet) -> None:
    """`advance` calls that queue behind one pass share the next one; each still returns with its step sent."""
    services, fleet = await services_on_fleet()
    engine = services.workflows
    agents = ["manager", "tech-lead", "secretary", "optimizer", "study-builder", "nx-expert", "webster"]
    steps: list[dict[str, Any]] = [{"id": f"r{i}", "agent": a, "message": f"Root {i}.", "timeout": "1h"}
                                   for i, a in enumerate(agents)]  # fmt: skip
    steps += [{"id": f"c{i}", "agent": a, "needs": [f"r{i}"], "timeout": "1h",
               "message": f"After ${{{{ steps.r{i}.output }}}}."} for i, a in enumerate(agents)]  # fmt: skip
    fan = WorkflowDefinition.model_validate({"name": "fan", "description": "A fan.", "steps": steps})
    run = await engine.start(ANTOINE, fan, {})
    passes = 0
    original = engine._advance_pass

    async def counted(run_id: int) -> None:
        nonlocal passes
        passes += 1
        await original(run_id)

    engine._advance_pass = counted  # type: ignore[method-assign]

    async def report(i: int, agent: str) -> None:
        await engine.report_result(as_agent(agent), run.display_id, f"r{i}", ok=True, output=f"out {i}", source="api")
        # Returned: the pass that saw this result has sent its child.
        assert (await status(engine, run.display_id))[f"c{i}"] == "running"
        assert len(hooks_for(fleet, f"After out {i}.")) == 1

    await asyncio.gather(*(report(i, agent) for i, agent in enumerate(agents)))
    assert 1 <= passes <= len(agents)
    await engine.idle()


# --- a step that names its task ends with it ---------------------------------------------------------


async def test_a_step_with_a_task_ends_when_its_agent_posts_the_task_done(services_on_fleet: ServicesOnFleet) -> None:
    from bot.task_grammar import apply_board_message

    services, fleet = await services_on_fleet(release=RELEASE_LEGACY)  # no completion: the board says it
    engine = services.workflows
    task = await services.tasks.add(ANTOINE, "Mesh the M2 mirror")
    definition = chain("nx-expert", "optimizer")
    steps = [step.model_copy(update={"task": "t1"}) if step.id == "s0" else step for step in definition.steps]
    run = await engine.start(ANTOINE, definition.model_copy(update={"steps": steps}), {})

    linked = await services.tasks.get(task.id)
    assert (linked.assignee, linked.status) == ("nx-expert", "in_progress")  # the dispatch took the task along

    other = await apply_board_message(services.tasks, as_agent("webster"), "T-1 done: not mine")
    assert not other.applied  # webster may not move nx-expert's task: the step keeps running
    assert (await status(engine, run.display_id))["s0"] == "running"

    posted = await apply_board_message(services.tasks, as_agent("nx-expert"), "T-1 done: meshed, 42k elements")
    assert posted.applied
    step = (await engine.get(run.display_id)).step("s0")
    assert (step.status, step.output, step.output_source) == ("succeeded", "meshed, 42k elements", "taskboard")
    [next_hook] = await agent_hooks(fleet, "optimizer")
    assert "meshed, 42k elements" in next_hook.body["message"]


async def test_a_300_kb_input_is_refused_at_start_naming_the_step_and_nothing_is_recorded(
    services_on_fleet: ServicesOnFleet,
) -> None:
    """`workflow plan` says it; `start` (every front end) refuses it too, before recording or sending anything."""
    services, fleet = await services_on_fleet()
    engine = services.workflows
    with pytest.raises(InvalidInput) as refused:
        await engine.start(ANTOINE, m2(), {"mirror": "é" * 150_000})  # 300,000 bytes of UTF-8
    said = str(refused.value)
    assert said.startswith("m2-mirror-study: step mesh's request would be 300,")
    assert "over the gateways' 262,144-byte limit; shorten input mirror" in said
    assert await engine.runs() == [] and fleet.received() == []
    run = await engine.start(ANTOINE, m2(), {"mirror": "é" * 50_000})  # 100 KB: fits
    assert (await status(engine, run.display_id))["mesh"] == "running"
    await engine.idle()
