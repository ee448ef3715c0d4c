"""The workflow routes of the loopback API: the M2 shape driven over HTTP, refusals with their reasons."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from bot.api import LoopbackApi
from bot.delegation import chain_footer
from bot.errors import InvalidInput
from bot.settings import HUMAN_IDENTITIES, Settings
from bot.workflows.definition import WorkflowDefinition
from bot.workflows.engine import step_footer
from tests.conftest import ServicesOnFleet
from tests.test_api_delegations import Hq, auth
from tests.test_workflow_engine import chain, m2


@pytest.fixture
async def hq(services_on_fleet: ServicesOnFleet, settings: Settings) -> AsyncIterator[Hq]:
    services, fleet = await services_on_fleet()
    api = LoopbackApi(services, settings.api_identities([*services.config.agent_names, *HUMAN_IDENTITIES]))
    await api.start("127.0.0.1", 0)
    try:
        async with httpx.AsyncClient(base_url=api.url, timeout=10, trust_env=False) as client:
            yield Hq(api, services, fleet, client)
    finally:
        await api.stop()


class Catalog:
    """Stands in for bot.workflows.loader's catalog: definitions by name."""

    def __init__(self, *definitions: WorkflowDefinition) -> None:
        self.by_name = {d.name: d for d in definitions}

    def get(self, name: str) -> WorkflowDefinition:
        if name not in self.by_name:
            raise InvalidInput(f"no workflow called {name!r}")
        return self.by_name[name]

    def definitions(self) -> list[WorkflowDefinition]:
        return list(self.by_name.values())


async def post(hq: Hq, path: str, identity: str, body: dict[str, Any]) -> Any:
    return await hq.client.post(path, headers=auth(identity), json=body)


async def test_the_m2_shape_over_the_api(hq: Hq) -> None:
    hq.services.workflows.catalog = Catalog(m2(approvers=["agent:manager"]), chain("nx-expert", "manager"))
    listed = await hq.get("/v1/workflows")
    assert listed.status_code == 200
    assert [w["name"] for w in listed.json()["workflows"]] == ["m2-mirror-study", "chain"]

    refused = await post(hq, "/v1/workflow-runs", "tech-lead", {"workflow": "chain"})
    assert refused.status_code == 403 and "step s1 (manager)" in refused.json()["detail"]
    unknown = await post(hq, "/v1/workflow-runs", "operator", {"workflow": "nope"})
    assert unknown.status_code == 400 and "no workflow called" in unknown.json()["detail"]

    started = await post(
        hq, "/v1/workflow-runs", "operator", {"workflow": "m2-mirror-study", "inputs": {"mirror": "M1"}}
    )
    assert started.status_code == 201, started.text
    run = started.json()
    assert run["id"] == "W-1" and [s["status"] for s in run["steps"]][:2] == ["running", "running"]
    base = "/v1/workflow-runs/W-1/steps"
    wrong = await post(hq, f"{base}/mesh/result", "tech-lead", {"ok": True, "output": "x"})
    assert wrong.status_code == 403 and "only nx-expert" in wrong.json()["detail"]
    mesh = await post(hq, f"{base}/mesh/result", "nx-expert", {"ok": True, "output": "120k elements"})
    assert mesh.status_code == 200 and mesh.json()["output_source"] == "api"
    assert (await post(hq, f"{base}/material/result", "operator", {"ok": True, "output": "CTE"})).status_code == 200
    early = await post(hq, f"{base}/report/result", "operator", {"ok": True, "output": "x"})
    assert early.status_code == 409 and "has not been sent yet" in early.json()["detail"]
    assert (await post(hq, f"{base}/thermal/result", "operator", {"ok": True, "output": "dT"})).status_code == 200
    not_you = await post(hq, f"{base}/review/approve", "tech-lead", {})
    assert not_you.status_code == 403 and "who may: agent manager" in not_you.json()["detail"]
    approved = await post(hq, f"{base}/review/approve", "manager", {"reason": "good"})
    assert approved.status_code == 200 and approved.json()["decided"] is True
    again = await post(hq, f"{base}/review/reject", "manager", {})
    assert again.status_code == 409 and "already approved by you" in again.json()["detail"]
    assert (await post(hq, f"{base}/report/result", "operator", {"ok": True, "output": "done"})).status_code == 200

    unknown_step = await post(hq, f"{base}/nope/result", "operator", {"ok": True, "output": "x"})
    assert unknown_step.status_code == 404 and "has no step 'nope'" in unknown_step.json()["detail"]
    stale = await post(hq, f"{base}/report/result", "operator", {"ok": True, "output": "x", "attempt": 2})
    assert stale.status_code == 409 and "is at attempt 1" in stale.json()["detail"]
    shown = await hq.get("/v1/workflow-runs/W-1")
    assert shown.status_code == 200 and shown.json()["status"] == "succeeded"
    assert [a["approver"] for a in shown.json()["approvals"]] == ["manager"]
    listing = await hq.get("/v1/workflow-runs", status="succeeded")
    assert [r["id"] for r in listing.json()["runs"]] == ["W-1"]
    assert (await hq.get("/v1/workflow-runs/W-9")).status_code == 404
    assert (await hq.get("/v1/workflow-runs/nonsense")).status_code == 400
    retried = await post(hq, "/v1/workflow-runs/W-1/retry", "operator", {"from": "report"})
    assert retried.status_code == 200 and retried.json()["status"] == "running"
    cancelled = await post(hq, "/v1/workflow-runs/W-1/cancel", "operator", {"reason": "enough"})
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    stops = [h for h in hq.fleet.received("secretary") if "Stop work on W-1/report" in h.body["message"]]
    assert len(stops) == 1
    await hq.services.workflows.idle()


async def test_synchronous_delegation_over_the_api_returns_the_agents_output(hq: Hq) -> None:
    waiting = asyncio.create_task(
        post(hq, "/v1/delegations/wait-result", "operator", {"to": "nx-expert", "message": "Mesh the M2 mirror"})
    )
    engine = hq.services.workflows
    async with engine.changed:  # the hook is out: nx-expert works, then reports as its skill does
        await asyncio.wait_for(engine.changed.wait_for(lambda: bool(hq.fleet.received("nx-expert"))), 30)
    reported = await post(hq, "/v1/workflow-runs/W-1/steps/work/result", "nx-expert", {"ok": True, "output": "42k"})
    assert reported.status_code == 200, reported.text

    answer = await waiting
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "run": "W-1", "status": "succeeded", "output": "42k", "output_source": "api", "error": None,
    }  # fmt: skip
    [hook] = [h for h in hq.fleet.received("nx-expert") if h.path.endswith("/agent")]
    assert hook.body["message"] == "Mesh the M2 mirror" + step_footer("W-1/work#1") + chain_footer(
        "D-1"
    )  # how to report, and as which


async def test_synchronous_delegation_that_runs_out_says_the_run_goes_on(hq: Hq) -> None:
    answer = await post(
        hq, "/v1/delegations/wait-result", "operator", {"to": "nx-expert", "message": "x", "wait_s": 0.2}
    )
    assert answer.status_code == 202, answer.text
    assert (answer.json()["run"], answer.json()["status"]) == ("W-1", "running")
    refused = await post(hq, "/v1/delegations/wait-result", "nx-expert", {"to": "manager", "message": "x"})
    assert refused.status_code == 403 and "may not delegate to manager" in refused.json()["detail"]


async def test_a_start_whose_input_makes_a_step_too_big_is_a_400_naming_the_step(hq: Hq) -> None:
    twice = WorkflowDefinition.model_validate({"name": "compare", "description": "Compare a text with itself.",
        "inputs": {"text": {"type": "string"}}, "steps": [
            {"id": "diff", "agent": "nx-expert", "message": "Compare ${{ inputs.text }} with ${{ inputs.text }}.",
             "timeout": "1h"}]})  # fmt: skip
    hq.services.workflows.catalog = Catalog(twice)
    # 150 KB fits the API's body limit, but twice in the step's message it is over the gateways' 262,144 bytes.
    refused = await post(
        hq, "/v1/workflow-runs", "operator", {"workflow": "compare", "inputs": {"text": "x" * 150_000}}
    )
    assert refused.status_code == 400, refused.text
    assert refused.json()["detail"].startswith("compare: step diff's request would be 300,")
    assert hq.fleet.received() == []
    assert (await hq.get("/v1/workflow-runs")).json()["runs"] == []


async def test_a_reject_needs_a_reason_which_the_run_keeps(hq: Hq) -> None:
    gate = WorkflowDefinition.model_validate({"name": "gate", "description": "Just a gate.", "steps": [
        {"id": "review", "approval": {"prompt": "OK?", "approvers": ["agent:manager"]}}]})  # fmt: skip
    hq.services.workflows.catalog = Catalog(gate)
    assert (await post(hq, "/v1/workflow-runs", "operator", {"workflow": "gate"})).status_code == 201
    for body in ({}, {"reason": "   "}):
        bare = await post(hq, "/v1/workflow-runs/W-1/steps/review/reject", "manager", body)
        assert bare.status_code == 400 and "rejecting W-1/review needs a reason" in bare.json()["detail"], bare.text
    assert (await hq.get("/v1/workflow-runs/W-1")).json()["steps"][0]["status"] == "waiting_approval"
    rejected = await post(hq, "/v1/workflow-runs/W-1/steps/review/reject", "manager", {"reason": "numbers off"})
    assert rejected.status_code == 200 and rejected.json()["status"] == "rejected"
    shown = (await hq.get("/v1/workflow-runs/W-1")).json()
    assert shown["approvals"][0]["reason"] == "numbers off" and shown["status"] == "failed"
    assert "rejected by manager: numbers off" in shown["steps"][0]["error"]
