"""Workflow steps with `route:` instead of `agent:`: validated, planned, and routed at dispatch on the simulated
fleet (docs/workflows.md, docs/routing.md)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest

from bot.authz import AccessLevel, Requester
from bot.config import ClusterConfig, parse_cluster_config
from bot.errors import NotAllowed
from bot.services import Services, open_services
from bot.settings import Settings
from bot.simulator import SimulatedFleet
from bot.workflows.cli_runs import print_detail
from bot.workflows.definition import WorkflowDefinition
from bot.workflows.plan import plan, validate
from tests.conftest import FleetStarter
from tests.test_cli import cli_env, relocated_config, run_cli

ANTOINE = Requester(kind="person", name="antoine", front_end="cli", level=AccessLevel.OPERATOR)
ROOT = Requester(kind="person", name="root", front_end="cli", level=AccessLevel.ADMIN)


def study(**route: Any) -> WorkflowDefinition:
    """Material data from webster, then an FEA step routed by capability (preferring `affinity`'s agent)."""
    return WorkflowDefinition.model_validate(
        {
            "name": "routed-study",
            "description": "Material, then a routed FEA.",
            "steps": [
                {"id": "material", "agent": "webster", "message": "CTE of Zerodur.", "timeout": "1h"},
                {"id": "fea", "route": {"needs": ["fea"], **route}, "needs": ["material"], "timeout": "1h",
                 "message": "FEA with ${{ steps.material.output }}."},
            ],
        }
    )  # fmt: skip


Opener = Callable[..., Awaitable[tuple[Services, SimulatedFleet]]]


@pytest.fixture
async def fleet_with(start_fleet: FleetStarter, settings: Settings) -> AsyncIterator[Opener]:
    """Services on a simulated fleet whose agents declare extra capabilities (`extra={"webster": ["fea"]}`)."""
    async with AsyncExitStack() as stack:

        async def open_(extra: dict[str, list[str]] | None = None, **fleet: Any) -> tuple[Services, SimulatedFleet]:
            config, simulated = await start_fleet(**fleet)
            raw = config.model_dump(mode="python")
            for agent in raw["agents"]:
                agent["capabilities"] += (extra or {}).get(agent["name"], [])
            services = await stack.enter_async_context(open_services(settings, parse_cluster_config(raw)))
            return services, simulated

        yield open_


async def test_a_routed_step_reaches_the_agent_with_the_capability(
    fleet_with: Opener, capsys: pytest.CaptureFixture[str]
) -> None:
    services, fleet = await fleet_with()
    engine = services.workflows
    run = await engine.start(ANTOINE, study(), {})
    await engine.report_result(Requester(kind="agent", name="webster", front_end="api"), run.display_id, "material",
                               ok=True, output="CTE 0.02", source="api")  # fmt: skip
    detail = await engine.get(run.display_id)
    fea = detail.step("fea")
    assert (fea.status, fea.agent) == ("running", "nx-expert")
    [hook] = [h for h in fleet.received("nx-expert") if h.path.endswith("/agent")]
    assert hook.body["message"].startswith("FEA with CTE 0.02.")
    rows = await services.store.fetchall("SELECT subject, detail FROM audit_log WHERE action = 'route'")
    [(subject, detail_json)] = [tuple(row) for row in rows]
    routed = json.loads(detail_json)
    assert subject == "nx-expert" and routed["workflow_step"] == "W-1/fea#1" and len(routed["table"]) == 8
    assert routed["explanation"] == "nx-expert: has fea; ready; 0 in flight; no delegations yet"
    assert detail.routed(fea) == routed["explanation"]
    assert next(s for s in detail.to_dict()["steps"] if s["id"] == "fea")["routed"] == routed["explanation"]
    print_detail(detail, as_json=False)
    shown = capsys.readouterr().out
    assert "    routed: nx-expert: has fea; ready; 0 in flight; no delegations yet" in shown  # workflow show says why
    # Its agent reports its result like any step's.
    await engine.report_result(Requester(kind="agent", name="nx-expert", front_end="api"), run.display_id, "fea",
                               ok=True, output="max stress 12 MPa", source="api")  # fmt: skip
    assert (await engine.get(run.display_id)).run.status == "succeeded"


async def test_affinity_prefers_the_agent_of_the_named_earlier_step(fleet_with: Opener) -> None:
    services, _ = await fleet_with(extra={"webster": ["fea"]})  # nx-expert and webster both have fea
    engine = services.workflows
    webster = Requester(kind="agent", name="webster", front_end="api")
    plain = await engine.start(ANTOINE, study(), {})
    await engine.report_result(webster, plain.display_id, "material", ok=True, output="CTE", source="api")
    assert (await engine.get(plain.display_id)).step("fea").agent == "nx-expert"  # config order, all else equal
    nx = Requester(kind="agent", name="nx-expert", front_end="api")
    await engine.report_result(nx, plain.display_id, "fea", ok=True, output="done", source="api")

    # Equally busy (nothing in flight) again: the agent of `material` is preferred.
    affine = await engine.start(ANTOINE, study(affinity="material"), {})
    await engine.report_result(webster, affine.display_id, "material", ok=True, output="CTE", source="api")
    assert (await engine.get(affine.display_id)).step("fea").agent == "webster"
    events = await services.store.fetchall(
        "SELECT detail_json FROM workflow_events WHERE run_id = ? AND kind = 'routed'", (affine.id,)
    )
    assert json.loads(events[0][0])["why"] == (
        "webster: has fea; ready; 0 in flight; ran the earlier step of this run; 2 of the last 2 accepted"
    )


async def test_a_routed_step_its_agent_does_not_admit_goes_to_another_and_the_step_follows(
    fleet_with: Opener, capsys: pytest.CaptureFixture[str]
) -> None:
    """study-builder (first in the config with fea here) answers 503: the step's delegation goes to nx-expert, and the
    step's agent with it (in the same transaction): nx-expert's result is the step's, and workflow show says why."""
    services, fleet = await fleet_with(extra={"study-builder": ["fea"]}, specs={"study-builder": {"busy": True}})
    engine = services.workflows
    run = await engine.start(ANTOINE, study(), {})
    await engine.report_result(Requester(kind="agent", name="webster", front_end="api"), run.display_id, "material",
                               ok=True, output="CTE", source="api")  # fmt: skip
    detail = await engine.get(run.display_id)
    fea = detail.step("fea")
    assert (fea.status, fea.agent) == ("running", "nx-expert")
    assert [h.agent for h in fleet.received() if h.body.get("message", "").startswith("FEA")] == ["nx-expert"]
    why = detail.routed(fea) or ""
    assert why.startswith("study-builder did not admit it (the gateway answered HTTP 503")
    assert why.endswith("; nx-expert: has fea; ready; 0 in flight; no delegations yet")
    print_detail(detail, as_json=False)
    assert f"    routed: {why}" in capsys.readouterr().out
    with pytest.raises(NotAllowed):  # the agent it left has no say in the step any more
        await engine.report_result(Requester(kind="agent", name="study-builder", front_end="api"), run.display_id,
                                   "fea", ok=True, output="mine", source="api")  # fmt: skip
    await engine.report_result(Requester(kind="agent", name="nx-expert", front_end="api"), run.display_id, "fea",
                               ok=True, output="max stress 12 MPa", source="api")  # fmt: skip
    assert (await engine.get(run.display_id)).run.status == "succeeded"


async def test_a_routed_step_that_ended_while_its_agent_answered_503_moves_nowhere(
    fleet_with: Opener, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 503 comes after the gateway's 15 s admission wait; the step may have ended meanwhile (its deadline, a
    cancel). Its work then goes to nobody else: the step is over."""
    services, fleet = await fleet_with(extra={"study-builder": ["fea"]}, specs={"study-builder": {"busy": True}})
    engine = services.workflows
    send = services.gateway.send_agent_hook

    async def step_ends_during_the_wait(agent: Any, hook: Any, **kwargs: Any) -> Any:
        if agent.name == "study-builder":
            await services.store.execute("UPDATE workflow_steps SET status = 'timed_out' WHERE step_id = 'fea'")
        return await send(agent, hook, **kwargs)

    monkeypatch.setattr(services.gateway, "send_agent_hook", step_ends_during_the_wait)
    run = await engine.start(ANTOINE, study(), {})
    await engine.report_result(Requester(kind="agent", name="webster", front_end="api"), run.display_id, "material",
                               ok=True, output="CTE", source="api")  # fmt: skip
    assert [h.agent for h in fleet.received() if h.body.get("message", "").startswith("FEA")] == []
    [delegation] = [d for d in await services.delegation.recent(limit=10) if d.workflow_step == "W-1/fea#1"]
    assert delegation.agent == "study-builder"


async def test_a_routed_step_nobody_can_take_fails_saying_why(fleet_with: Opener) -> None:
    services, _ = await fleet_with()
    await services.monitor.silence(ROOT, "nx-expert", 3600)
    engine = services.workflows
    run = await engine.start(ANTOINE, study(), {})
    await engine.report_result(Requester(kind="agent", name="webster", front_end="api"), run.display_id, "material",
                               ok=True, output="CTE", source="api")  # fmt: skip
    detail = await engine.get(run.display_id)
    assert detail.step("fea").status == "failed"
    assert "not dispatched: nobody can take work needing fea: nx-expert: silenced by root" in (
        detail.step("fea").error or ""
    )
    assert detail.run.status == "failed"


def test_a_route_step_is_validated_and_planned(shipped_config: ClusterConfig) -> None:
    with pytest.raises(ValueError, match="give exactly one of agent"):
        WorkflowDefinition.model_validate(
            {"name": "x", "description": "x", "steps": [{"id": "a", "message": "m", "timeout": "1h"}]}
        )
    checked = validate(study(affinity="nowhere"), shipped_config)
    assert any("'nowhere' does not run before fea" in p for p in checked.problems)
    typo = study().model_copy(deep=True)
    typo.steps[1].route.needs[0] = "feaa"  # type: ignore[union-attr]
    assert any("no agent declares the capability 'feaa'. Did you mean 'fea'?" in p for p in
               validate(typo, shipped_config).problems)  # fmt: skip

    planned = plan(study(), shipped_config, ANTOINE)
    assert planned.ok and planned.step("fea").candidates == ("nx-expert",)
    assert "route: fea" in planned.render_text()
    secretary = Requester(kind="agent", name="secretary", front_end="api")
    refused = plan(study(), shipped_config, secretary)
    assert any("step fea would be refused: no agent with fea may be delegated to" in p for p in refused.problems)


async def test_starting_a_run_whose_routed_step_nobody_may_take_is_refused(fleet_with: Opener) -> None:
    services, fleet = await fleet_with()
    definition = WorkflowDefinition.model_validate(
        {"name": "solo", "description": "One routed step.",
         "steps": [{"id": "fea", "route": {"needs": ["fea"]}, "message": "FEA.", "timeout": "1h"}]}
    )  # fmt: skip
    with pytest.raises(NotAllowed, match=r"step fea \(route: fea\): no agent with them may be delegated to"):
        await services.workflows.start(Requester(kind="agent", name="nx-expert", front_end="api"), definition, {})
    assert fleet.received() == []


async def test_workflow_plan_shows_the_route_table_as_it_is_now(start_fleet: FleetStarter, tmp_path: Path) -> None:
    config, _ = await start_fleet(specs={"webster": {"down": True}})
    path = relocated_config(tmp_path, {a.name: a.port for a in config.agents})
    (tmp_path / "workflows").mkdir()
    (tmp_path / "workflows" / "routed.yaml").write_text(
        "name: routed\ndescription: A routed mesh.\nsteps:\n"
        "  - id: mesh\n    route: {needs: [meshing]}\n    message: Mesh it.\n    timeout: 1h\n",
        encoding="utf-8",
    )
    path.write_text(path.read_text(encoding="utf-8").replace('dir = "workflows"', f'dir = "{tmp_path / "workflows"}"'))
    code, out, err = await run_cli("--config", str(path), "workflow", "plan", "routed", env=cli_env(tmp_path))
    assert code == 0, err
    assert "mesh  route: meshing" in out
    assert "step mesh, routed at dispatch; as it is now:\nnx-expert: has meshing; ready; 0 in flight" in out
