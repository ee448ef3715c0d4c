"""The loopback API's workflow routes: thin fronts of WorkflowEngine (bot/workflows/engine.py).

`/v1/workflows` lists the catalog; `/v1/workflow-runs` starts runs (agents within their authority for
every step), shows them, and takes cancels, approvals and results. Registered by LoopbackApi.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from bot.authz import Requester
from bot.workflows.definition import WorkflowDefinition
from bot.workflows.engine import ApprovalOutcome, RunDetail

if TYPE_CHECKING:
    from bot.api import LoopbackApi

InputValue = str | int | float | bool


class WorkflowInputOut(BaseModel):
    type: str
    default: InputValue | None
    description: str


class WorkflowOut(BaseModel):
    name: str
    description: str
    steps: int
    inputs: dict[str, WorkflowInputOut]


class WorkflowListOut(BaseModel):
    """The workflows of the catalog ([workflows] dir); broken files are left out (`workflow list` shows them)."""

    workflows: list[WorkflowOut]


class WorkflowRunIn(BaseModel):
    """Start a run as the caller behind the token; every agent step is checked against its authority first."""

    model_config = ConfigDict(extra="forbid")

    workflow: str = Field(description="The workflow's name, e.g. m2-mirror-study.")
    inputs: dict[str, InputValue] = Field(default_factory=dict, description="Input values by name.")


class StarterOut(BaseModel):
    kind: str
    name: str
    via: str | None


class SubDelegationOut(BaseModel):
    id: str = Field(description="D-43")
    agent: str
    status: str
    parent: str = Field(description="The delegation it hangs under: the step's, or another sub-delegation.")
    depth: int


class WorkflowStepOut(BaseModel):
    id: str
    kind: str = Field(description="agent or approval")
    status: str
    agent: str | None
    attempt: int
    delegation: str | None = Field(description="D-42 of the current attempt.")
    output: str | None
    output_source: str | None = Field(description="completion, discord, api, taskboard or person")
    started_at: str | None
    deadline_at: str | None
    finished_at: str | None
    error: str | None
    needs: list[str]
    sub_delegations: list[SubDelegationOut] = Field(
        default_factory=list, description="What the step's agent handed on (its chain), in tree order."
    )


class WorkflowApprovalOut(BaseModel):
    step: str
    approver: str
    decision: str
    at: str
    reason: str | None


class WorkflowEventOut(BaseModel):
    at: str
    step: str | None
    actor: str
    kind: str
    detail: dict[str, Any]


class WorkflowRunOut(BaseModel):
    """One run with its steps, approvals and events, as `atomizer-hq workflow show --json`."""

    id: str = Field(description="W-3")
    workflow: str
    status: str = Field(description="running, succeeded, failed or cancelled")
    shown_status: str = Field(description="as status, or waiting when only people block a running run")
    inputs: dict[str, InputValue]
    starter: StarterOut
    front_end: str
    thread_id: str | None
    created_at: str
    updated_at: str
    finished_at: str | None
    error: str | None
    steps: list[WorkflowStepOut]
    approvals: list[WorkflowApprovalOut]
    events: list[WorkflowEventOut]

    @classmethod
    def of(cls, detail: RunDetail) -> WorkflowRunOut:
        return cls.model_validate(detail.to_dict())


class WorkflowRunQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: str | None = Field(default=None, description="running, succeeded, failed or cancelled")
    limit: int = Field(default=20, ge=1, le=100)


class WorkflowRunSummary(BaseModel):
    id: str
    workflow: str
    status: str
    starter: str
    created_at: str
    finished_at: str | None
    error: str | None


class WorkflowRunList(BaseModel):
    runs: list[WorkflowRunSummary]


class ReasonIn(BaseModel):
    """Why: optional to approve or cancel (send `{}`), required to reject (a rejection fails the run)."""

    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(default=None, max_length=1_000)


class RetryIn(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    from_step: str | None = Field(
        default=None, alias="from", description="Run again from this step; default: the failed ones."
    )


class ResultIn(BaseModel):
    """A step's result, from its agent (or an operator)."""

    model_config = ConfigDict(extra="forbid")

    ok: bool = Field(description="true: the step succeeded; false: it failed (output says why).")
    output: str = Field(default="", max_length=200_000)
    attempt: int | None = Field(
        default=None, ge=1, description="The attempt this result is of (2 for W-3/mesh#2, as the hook's message "
        "names it): a result of an earlier attempt is refused with 409. Left out: the current attempt's.",
    )  # fmt: skip


class ApprovalOutcomeOut(BaseModel):
    step: str
    status: str = Field(description="the gate after this decision: waiting_approval, approved or rejected")
    approvals: int
    quorum: int
    decided: bool = Field(description="this decision resolved the gate")

    @classmethod
    def of(cls, outcome: ApprovalOutcome) -> ApprovalOutcomeOut:
        return cls(
            step=outcome.step_id,
            status=outcome.status,
            approvals=outcome.approvals,
            quorum=outcome.quorum,
            decided=outcome.decided,
        )


class WaitResultIn(BaseModel):
    """A delegation that waits for the agent's result: a one-step run, as `delegate --wait-result`."""

    model_config = ConfigDict(extra="forbid")

    to: str = Field(description="The agent that should do the work, e.g. nx-expert; auto: chosen by `needs`.")
    message: str = Field(description="The instruction, as the agent will read it.")
    needs: list[str] | None = Field(default=None, description="Capabilities the work needs (as for /v1/delegations).")
    target: str | None = Field(default=None, description="Where the agent's answer goes (as for /v1/delegations).")
    deliver: bool = Field(default=True, description="false: the agent runs it without posting its answer.")
    wait_s: float = Field(default=600.0, gt=0, le=3_600, description="How long to wait for the result, seconds.")


class WaitResultOut(BaseModel):
    """200: the step ended (its output, or why not); 202: the wait ran out and the run goes on (follow `run`)."""

    run: str = Field(description="W-n, the one-step run behind it")
    status: str = Field(description="the step: succeeded, failed, unconfirmed, timed_out, running, …")
    output: str | None
    output_source: str | None
    error: str | None


def _catalog_definitions(catalog: Any) -> list[WorkflowDefinition]:
    """The catalog's good definitions (bot.workflows.loader.WorkflowCatalog: `entries()`)."""
    if catalog is None:
        return []
    if hasattr(catalog, "entries"):
        found = [entry.workflow for entry in catalog.entries() if not entry.problems and entry.workflow is not None]
        return [getattr(item, "definition", item) for item in found]
    return list(catalog.definitions())


def add_workflow_routes(api: LoopbackApi) -> None:
    from bot.api import ErrorResponse, Route

    engine = api.services.workflows
    errors: dict[int, type[BaseModel]] = {403: ErrorResponse, 404: ErrorResponse, 409: ErrorResponse}
    refused: dict[int, type[BaseModel]] = {403: ErrorResponse, 404: ErrorResponse}
    missing: dict[int, type[BaseModel]] = {400: ErrorResponse, 404: ErrorResponse}

    async def list_workflows(request: web.Request, requester: Requester, data: None) -> WorkflowListOut:
        return WorkflowListOut(
            workflows=[
                WorkflowOut(
                    name=d.name,
                    description=d.description,
                    steps=len(d.steps),
                    inputs={k: WorkflowInputOut.model_validate(v.model_dump()) for k, v in d.inputs.items()},
                )
                for d in _catalog_definitions(engine.catalog)
            ]
        )

    async def start_workflow_run(request: web.Request, requester: Requester, data: WorkflowRunIn) -> WorkflowRunOut:
        run = await engine.start(requester, data.workflow, dict(data.inputs))
        return WorkflowRunOut.of(await engine.get(run.id))

    async def list_workflow_runs(request: web.Request, requester: Requester, data: WorkflowRunQuery) -> WorkflowRunList:
        runs = await engine.runs(status=data.status, limit=data.limit)
        return WorkflowRunList(
            runs=[
                WorkflowRunSummary(
                    id=r.display_id,
                    workflow=r.workflow,
                    status=r.status,
                    starter=r.starter,
                    created_at=r.created_at,
                    finished_at=r.finished_at,
                    error=r.error,
                )
                for r in runs
            ]
        )

    async def get_workflow_run(request: web.Request, requester: Requester, data: None) -> WorkflowRunOut:
        return WorkflowRunOut.of(await engine.get(request.match_info["id"]))

    async def cancel_workflow_run(request: web.Request, requester: Requester, data: ReasonIn) -> WorkflowRunOut:
        run = await engine.cancel(requester, request.match_info["id"], reason=data.reason)
        return WorkflowRunOut.of(await engine.get(run.id))

    async def retry_workflow_run(request: web.Request, requester: Requester, data: RetryIn) -> WorkflowRunOut:
        run = await engine.retry(requester, request.match_info["id"], from_step=data.from_step)
        return WorkflowRunOut.of(await engine.get(run.id))

    async def approve_workflow_step(request: web.Request, requester: Requester, data: ReasonIn) -> ApprovalOutcomeOut:
        match = request.match_info
        outcome = await engine.approve(requester, match["id"], match["step"], approve=True, reason=data.reason)
        return ApprovalOutcomeOut.of(outcome)

    async def reject_workflow_step(request: web.Request, requester: Requester, data: ReasonIn) -> ApprovalOutcomeOut:
        match = request.match_info
        outcome = await engine.approve(requester, match["id"], match["step"], approve=False, reason=data.reason)
        return ApprovalOutcomeOut.of(outcome)

    async def report_workflow_step_result(
        request: web.Request, requester: Requester, data: ResultIn
    ) -> WorkflowStepOut:
        match = request.match_info
        step = await engine.report_result(
            requester, match["id"], match["step"], ok=data.ok, output=data.output, source="api", attempt=data.attempt
        )
        detail = await engine.get(step.run_id)
        [shown] = [s for s in detail.to_dict()["steps"] if s["id"] == step.step_id]
        return WorkflowStepOut.model_validate(shown)

    async def delegate_and_wait_result(
        request: web.Request, requester: Requester, data: WaitResultIn
    ) -> web.StreamResponse:
        from bot.api import reply
        from bot.workflows.cli_runs import one_step
        from bot.workflows.store import FINAL

        api.services.delegation.validate_request(data.message, target=data.target, deliver=data.deliver)
        agent, _ = await api.services.routing.resolve(requester, data.to, data.needs)
        definition = one_step(agent, wait_s=data.wait_s, deliver_to="thread" if data.deliver else "none")
        run = await engine.start(requester, definition, {"message": data.message}, origin=data.target)
        step = await engine.wait_step(run.id, "work", timeout=data.wait_s)
        out = WaitResultOut(
            run=run.display_id, status=step.status, output=step.output, output_source=step.output_source,
            error=step.error,
        )  # fmt: skip
        return reply(out, 200 if step.status in FINAL else 202)

    api.add(
        Route(
            "POST", "/v1/delegations/wait-result", delegate_and_wait_result,
            summary="Delegate and wait for the agent's result (synchronous delegation)", response=WaitResultOut,
            body=WaitResultIn, extra_responses={202: WaitResultOut, **refused},
            description="A one-step workflow run under the hood, with the same authority, records and exactly-once "
            "rules as /v1/delegations. 200 when the step ended (succeeded: `output` is the agent's answer), 202 when "
            "`wait_s` ran out first: the run goes on; follow it at /v1/workflow-runs/{run}.",
        )
    )  # fmt: skip

    runs = "/v1/workflow-runs"
    for route in (
        Route("GET", "/v1/workflows", list_workflows, summary="The workflows of the catalog", response=WorkflowListOut),
        Route(
            "POST", runs, start_workflow_run, summary="Start a workflow run as the caller behind the token",
            response=WorkflowRunOut, body=WorkflowRunIn, status=201, extra_responses=refused,
            description="201: recorded, its first steps dispatched. 403: the caller may not delegate to the agent "
            "of some step (the detail names the step and who could); nothing is recorded.",
        ),
        Route("GET", runs, list_workflow_runs, summary="Recent workflow runs, newest first",
              response=WorkflowRunList, query=WorkflowRunQuery),
        Route("GET", runs + "/{id}", get_workflow_run, summary="One run (W-3 or 3): steps, approvals, events",
              response=WorkflowRunOut, extra_responses=missing),
        Route("POST", runs + "/{id}/cancel", cancel_workflow_run, summary="Cancel a run (its starter or an operator)",
              response=WorkflowRunOut, body=ReasonIn, extra_responses=errors),
        Route("POST", runs + "/{id}/retry", retry_workflow_run,
              summary="Run again from a step (default: the failed, timed-out and unconfirmed ones)",
              response=WorkflowRunOut, body=RetryIn, extra_responses=errors),
        Route("POST", runs + "/{id}/steps/{step}/approve", approve_workflow_step, summary="Approve a gate",
              response=ApprovalOutcomeOut, body=ReasonIn, extra_responses=errors),
        Route("POST", runs + "/{id}/steps/{step}/reject", reject_workflow_step,
              summary="Reject a gate (a reason is required)",
              response=ApprovalOutcomeOut, body=ReasonIn, extra_responses=errors),
        Route("POST", runs + "/{id}/steps/{step}/result", report_workflow_step_result,
              summary="Report a step's result (its agent, or an operator)", response=WorkflowStepOut,
              body=ResultIn, extra_responses=errors),
    ):  # fmt: skip
        api.add(route)
