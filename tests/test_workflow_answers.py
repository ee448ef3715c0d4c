"""Answers read from Discord (output_source "discord"): the engine's side, on the simulated fleet of both releases."""

from __future__ import annotations

from typing import Any

import pytest

from bot.authz import AccessLevel, Requester
from bot.errors import NotAllowed
from bot.simulator import RELEASE_LEGACY
from bot.workflows.engine import OUTPUT_SETTLE_S, StepConflict, WorkflowEngine
from tests.clocks import FakeClock
from tests.conftest import ServicesOnFleet
from tests.test_workflow_engine import ANTOINE, agent_hooks, as_agent, chain

THREAD = "100000000000009001"


async def test_an_answer_before_the_completion_is_the_output(services_on_fleet: ServicesOnFleet) -> None:
    services, fleet = await services_on_fleet(specs={"nx-expert": {"hold_runs": True}})
    clock = FakeClock()
    engine = WorkflowEngine(services.config, services.store, services.delegation, services.gateway, clock=clock)
    run = await engine.start(ANTOINE, chain("nx-expert", "secretary"), {}, thread_id=THREAD)
    [hook] = await agent_hooks(fleet, "nx-expert")
    assert hook.body["to"] == f"channel:{THREAD}" and hook.body["deliver"] is True
    step = await engine.step_answering_in("nx-expert", THREAD)
    assert step is not None and step.step_id == "s0"
    assert await engine.step_answering_in("webster", THREAD) is None  # another agent's post is not this output
    assert await engine.step_answering_in("nx-expert", "100000000000009002") is None  # nor one elsewhere
    with pytest.raises(NotAllowed, match="only the step's agent"):
        await engine.append_output(as_agent("webster"), run.id, "s0", "not mine")
    await engine.append_output(as_agent("nx-expert"), run.id, "s0", "120k elements")
    await engine.append_output(as_agent("nx-expert"), run.id, "s0", "mesh in /shared/m2.prt")
    assert (await engine.get(run.id)).step("s0").status == "running"  # 2026.9.6: the completion decides
    fleet.settle("nx-expert")
    await engine.idle()
    assert (await engine.get(run.id)).step("s0").status == "running"  # a last chunk may still be on its way
    clock.advance(OUTPUT_SETTLE_S)
    await engine.tick()
    detail = await engine.get(run.id)
    assert detail.step("s0").status == "succeeded" and detail.step("s0").output_source == "discord"
    assert detail.step("s0").output == "120k elements\nmesh in /shared/m2.prt"
    [next_hook] = await agent_hooks(fleet, "secretary")
    assert "120k elements\nmesh in /shared/m2.prt" in next_hook.body["message"]
    await engine.idle()


async def test_an_answer_appended_while_the_completion_is_recorded_is_kept(
    services_on_fleet: ServicesOnFleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The completion's evidence and the answer's bookkeeping land together (a fast agent answers as its run ends):
    neither undoes the other, so the step ends OUTPUT_SETTLE_S after the answer, with it, not OUTPUT_GRACE_S later
    with nothing (a lost `last_output_at` stalled runs for a minute under load). The answer is appended the moment
    the engine reads anything while it records the completion: there must be no read-then-write gap to land in."""
    services, fleet = await services_on_fleet(specs={"nx-expert": {"hold_runs": True}})
    clock = FakeClock()
    engine = WorkflowEngine(services.config, services.store, services.delegation, services.gateway, clock=clock)
    run = await engine.start(ANTOINE, chain("nx-expert"), {}, thread_id=THREAD)
    detail = await engine.get(run.id)
    answered = False
    read = services.store.fetchone

    async def read_then_answer(*args: Any, **kwargs: Any) -> Any:
        nonlocal answered
        row = await read(*args, **kwargs)
        if not answered:  # the Discord listener's append, in the middle of the completion's work
            answered = True
            await engine.append_output(as_agent("nx-expert"), run.id, "s0", "120k elements")
        return row

    monkeypatch.setattr(services.store, "fetchone", read_then_answer)
    completion = {"status": "ok", "replyDisposition": "visible"}
    await engine._completed(detail.run, detail.step("s0"), completion)  # what the completion watcher does
    monkeypatch.undo()
    if not answered:  # no read in the completion's work at all: the answer comes right after it
        await engine.append_output(as_agent("nx-expert"), run.id, "s0", "120k elements")
    evidence = (await engine.get(run.id)).step("s0").evidence
    assert evidence["completion"] == completion and evidence.get("last_output_at") and evidence["messages"] == 1
    clock.advance(OUTPUT_SETTLE_S)
    await engine.tick()
    step = (await engine.get(run.id)).step("s0")
    assert (step.status, step.output, step.output_source) == ("succeeded", "120k elements", "discord")
    fleet.settle("nx-expert")
    await engine.idle()


async def test_a_completion_before_the_answer_waits_for_it_to_settle(services_on_fleet: ServicesOnFleet) -> None:
    services, _ = await services_on_fleet()
    clock = FakeClock()
    engine = WorkflowEngine(services.config, services.store, services.delegation, services.gateway, clock=clock)
    run = await engine.start(ANTOINE, chain("nx-expert"), {}, thread_id=THREAD)
    await engine.idle()
    assert "completed_at" in (await engine.get(run.id)).step("s0").evidence
    await engine.append_output(as_agent("nx-expert"), run.id, "s0", "part 1")
    clock.advance(OUTPUT_SETTLE_S / 2)
    await engine.append_output(as_agent("nx-expert"), run.id, "s0", "part 2")
    clock.advance(OUTPUT_SETTLE_S / 2)
    await engine.tick()
    assert (await engine.get(run.id)).step("s0").status == "running"  # part 2 is recent: more may follow
    clock.advance(OUTPUT_SETTLE_S)
    await engine.tick()
    detail = await engine.get(run.id)
    assert detail.step("s0").status == "succeeded" and detail.step("s0").output == "part 1\npart 2"
    assert detail.run.status == "succeeded"


async def test_legacy_answers_end_after_a_quiet_period(services_on_fleet: ServicesOnFleet) -> None:
    services, _ = await services_on_fleet(release={"webster": RELEASE_LEGACY})
    clock = FakeClock()
    engine = WorkflowEngine(
        services.config, services.store, services.delegation, services.gateway, clock=clock, output_quiet_s=20
    )
    run = await engine.start(ANTOINE, chain("webster"), {}, thread_id=THREAD)
    await engine.idle()
    await engine.append_output(as_agent("webster"), run.id, "s0", "CTE 0 ± 0.007 ppm/K")
    await engine.append_output(as_agent("webster"), run.id, "s0", "NO_REPLY")  # adds nothing
    clock.advance(19)
    await engine.tick()
    assert (await engine.get(run.id)).step("s0").status == "running"
    clock.advance(1)
    await engine.tick()
    detail = await engine.get(run.id)
    assert detail.step("s0").status == "succeeded" and detail.step("s0").output == "CTE 0 ± 0.007 ppm/K"
    assert detail.step("s0").evidence["messages"] == 2
    with pytest.raises(StepConflict, match="only while it runs"):
        await engine.append_output(as_agent("webster"), run.id, "s0", "late")


async def test_a_person_cannot_answer_for_the_agent(services_on_fleet: ServicesOnFleet) -> None:
    services, fleet = await services_on_fleet(specs={"nx-expert": {"hold_runs": True}})
    run = await services.workflows.start(ANTOINE, chain("nx-expert"), {}, thread_id=THREAD)
    admin = Requester(kind="person", name="alice", front_end="discord", level=AccessLevel.ADMIN, user_id="2" * 18)
    with pytest.raises(NotAllowed):
        await services.workflows.append_output(admin, run.id, "s0", "I did it")
    fleet.settle("nx-expert")
    await services.workflows.idle()


@pytest.mark.parametrize("answers", [["NO_REPLY"], ["", "  "], ["NO_REPLY", ""]])
async def test_an_empty_or_no_reply_answer_is_an_empty_output_and_the_run_goes_on(
    services_on_fleet: ServicesOnFleet, answers: list[str]
) -> None:
    services, fleet = await services_on_fleet(release={"webster": RELEASE_LEGACY})
    clock = FakeClock()
    engine = WorkflowEngine(
        services.config, services.store, services.delegation, services.gateway, clock=clock, output_quiet_s=20
    )
    run = await engine.start(ANTOINE, chain("webster", "secretary"), {}, thread_id=THREAD)
    await engine.idle()
    for text in answers:
        await engine.append_output(as_agent("webster"), run.id, "s0", text)
    clock.advance(20)
    await engine.tick()
    detail = await engine.get(run.id)
    assert detail.step("s0").status == "succeeded" and detail.step("s0").output == ""
    assert detail.step("s0").evidence["messages"] == len(answers)
    [hook] = await agent_hooks(fleet, "secretary")
    assert hook.body["message"].startswith("Step 1 after (no output).")  # said so, nothing made up
    await engine.idle()
