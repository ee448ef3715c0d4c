"""WorkflowEngine: runs workflow DAGs durably on SQLite (docs/workflows-design.md).

Every step moves through bot.workflows.store.TRANSITIONS; an agent step is a delegation (record before
send, outbox, authority, exactly once), keyed `W-3/mesh#1` so the database refuses a second dispatch
of the same attempt. The engine never re-sends an admitted step on its own: what it cannot prove
waits for a person (`unconfirmed`, `timed_out`), who reports a result or retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import inspect
import json
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from bot.audit import audit_row
from bot.authz import AccessLevel, Requester
from bot.clock import Clock, iso, utcnow
from bot.config import ClusterConfig
from bot.delegation import Delegation, DelegationService, DuplicateWorkflowStep, subtree
from bot.errors import (
    AgentUnavailable,
    AtomizerError,
    GatewayError,
    GatewayProtocolError,
    HookRateLimited,
    InvalidInput,
    NotAllowed,
    StoreError,
    UnknownAgent,
)
from bot.gateway import GatewayClient
from bot.routing.service import RoutingService
from bot.store import Store
from bot.taskboard import Task, TaskEvent, parse_task_id
from bot.workflows.approvals import Starter, approver_key, describe_approvers, is_starter, refusal
from bot.workflows.definition import AgentStep, ApprovalStep, WorkflowDefinition
from bot.workflows.plan import oversized_step, plan, validate
from bot.workflows.store import (
    DONE_BADLY,
    DONE_OK,
    FINAL,
    TRANSITIONS,
    ApprovalRow,
    EventRow,
    RunRow,
    StepRow,
    WorkflowStore,
    event_statement,
    move_statement,
    parse_run_id,
    parse_step_key,
    step_key,
)
from bot.workflows.templating import references, render

log = logging.getLogger(__name__)

OUTPUT_GRACE_S = 60.0  # a 2026.9.6 completion `ok` without text: the output may still come; then empty
COMPLETION_MARGIN_S = 60.0  # a completion wait is held this long past the step's deadline
# Answers read from Discord (output_source "discord"): an agent may answer in several messages.
OUTPUT_QUIET_S = 20.0  # 2026.2.12 (no completion): the step is done this long after the agent's last message
OUTPUT_SETTLE_S = 2.0  # 2026.9.6, completion before the messages: done this long after the last one
OUTPUT_STORE_MAX = 100_000  # characters of an answer kept (templates pass on at most OUTPUT_CAP of them)
NO_REPLY = "NO_REPLY"  # OpenClaw's "nothing to say": no output
ANSWER_KEYS = ("messages", "last_output_at", "answer_source")  # the answer's bookkeeping in a step's evidence
# 2026.9.6 forgets a settled run's key 5 min after it settled: re-attach (re-POST the key) only while the run was
# last known unsettled less than this long ago, else the re-POST could start the work again.
REATTACH_WITHIN_S = 240.0
ATTACHED_REFRESH_S = 60.0  # how often a held completion wait records that the run was still unsettled
DISPATCH_RETRY_S = 5.0  # a step `dispatching` this long with no dispatch under way here is dispatched again by tick
OUTPUT_SOURCES = ("completion", "discord", "api", "taskboard", "person")
Run = RunRow
Listener = Callable[[str], Awaitable[None] | None]


class WorkflowCatalog(Protocol):
    """What the engine needs of the definition catalog (bot.workflows.loader)."""

    def get(self, name: str) -> Any: ...  # a WorkflowDefinition, or anything with `.definition`


class UnknownRun(InvalidInput):
    code = "unknown_workflow_run"
    http_status = 404


class UnknownStep(InvalidInput):
    code = "unknown_workflow_step"
    http_status = 404


class StepConflict(InvalidInput):
    """The step (or run) is not in a state where this can be done; the message says what it is in."""

    code = "workflow_conflict"
    exit_code = 1  # not bad input: the run has moved on
    http_status = 409


@dataclass(frozen=True)
class RunDetail:
    run: RunRow
    steps: list[StepRow]
    approvals: list[ApprovalRow]
    events: list[EventRow]
    # The sub-delegations hanging under each step's delegation (its chain, the step's own left out), by its id.
    chains: dict[int, list[Delegation]] = field(default_factory=dict)

    def sub_delegations(self, step: StepRow) -> list[Delegation]:
        """What the step's agent handed on, in tree order (docs/delegation-chains.md)."""
        return self.chains.get(step.delegation_id or 0, [])

    @property
    def shown_status(self) -> str:
        """`waiting` when only people (approvals, unconfirmed or timed-out steps) block a running run."""
        if self.run.status != "running":
            return self.run.status
        if any(s.status in ("dispatching", "running") for s in self.steps):
            return "running"
        if any(s.status in ("waiting_approval", "unconfirmed", "timed_out") for s in self.steps):
            return "waiting"
        return "running"

    def step(self, step_id: str) -> StepRow:
        return next(s for s in self.steps if s.step_id == step_id)

    def routed(self, step: StepRow) -> str | None:
        """Why a `route:` step's agent was chosen (the latest choice: a retry routes again)."""
        found = [e for e in self.events if e.step_id == step.step_id and e.kind == "routed"]
        why = found[-1].detail.get("why") if found else None
        return why if isinstance(why, str) else None

    def to_dict(self) -> dict[str, Any]:
        run = self.run
        order = {step_id: i for i, step_id in enumerate(run.definition.step_ids)}
        return {
            "id": run.display_id,
            "workflow": run.workflow,
            "status": run.status,
            "shown_status": self.shown_status,
            "inputs": run.inputs,
            "starter": {"kind": run.starter_kind, "name": run.starter, "via": run.starter_via},
            "front_end": run.front_end,
            "thread_id": run.thread_id,
            "created_at": run.created_at,
            "updated_at": run.updated_at,
            "finished_at": run.finished_at,
            "error": run.error,
            "steps": [
                {
                    "id": s.step_id,
                    "kind": s.kind,
                    "status": s.status,
                    "agent": s.agent,
                    "attempt": s.attempt,
                    "delegation": f"D-{s.delegation_id}" if s.delegation_id else None,
                    "output": s.output,
                    "output_source": s.output_source,
                    "started_at": s.started_at,
                    "deadline_at": s.deadline_at,
                    "finished_at": s.finished_at,
                    "error": s.error,
                    "needs": list(run.definition.step(s.step_id).needs),
                    "routed": self.routed(s),
                    "sub_delegations": [
                        {
                            "id": d.display_id,
                            "agent": d.agent,
                            "status": d.status,
                            "parent": f"D-{d.parent_id}",
                            "depth": d.depth,
                        }
                        for d in self.sub_delegations(s)
                    ],
                }
                for s in sorted(self.steps, key=lambda s: order.get(s.step_id, 0))
            ],
            "approvals": [
                {"step": a.step_id, "approver": a.approver_name, "decision": a.decision, "at": a.at, "reason": a.reason}
                for a in self.approvals
            ],
            "events": [
                {"at": e.at, "step": e.step_id, "actor": e.actor, "kind": e.kind, "detail": e.detail}
                for e in self.events
            ],
        }


@dataclass(frozen=True)
class ApprovalOutcome:
    step_id: str
    status: str  # the gate's status after this decision
    approvals: int
    quorum: int
    decided: bool  # this decision resolved the gate


class WorkflowEngine:
    """start, advance, results, timers, approve, cancel, retry; shared by every front end."""

    def __init__(
        self,
        config: ClusterConfig,
        store: Store,
        delegation: DelegationService,
        gateway: GatewayClient,
        *,
        clock: Clock = utcnow,
        catalog: WorkflowCatalog | None = None,
        output_grace_s: float = OUTPUT_GRACE_S,
        output_quiet_s: float = OUTPUT_QUIET_S,
    ) -> None:
        self._config = config
        self.tables = WorkflowStore(store)
        self._delegation = delegation
        delegation.on_rerouted = self._step_follows  # a routed step keeps its agent with its delegation
        delegation.after_rerouted = self._step_followed
        self._gateway = gateway
        self._clock = clock
        self.catalog = catalog
        self.output_grace_s = output_grace_s
        self.output_quiet_s = output_quiet_s
        self._listeners: list[Listener] = []
        self._locks: dict[int, asyncio.Lock] = {}
        self._passes: dict[int, list[int]] = {}  # run id -> [advance calls made, calls covered by a finished pass]
        self._answer_locks: dict[tuple[int, str], asyncio.Lock] = {}
        self._watchers: dict[tuple[int, str, int], asyncio.Task[None]] = {}
        self._holding: dict[tuple[int, str, int], float] = {}  # completion waits under way: since when (Unix time)
        self._dispatching: set[str] = set()  # attempts (`W-3/mesh#1`) this process is dispatching now
        self._dispatching_seen: dict[str, datetime] = {}  # attempts tick found `dispatching`, and since when
        self.changed = asyncio.Condition()  # notified after every change (waiters: `delegate --wait-result`)
        # Tests crash the engine at a named point (dispatching, delegated, running, result) of a step's attempt
        # (`W-3/mesh#1`) by raising here.
        self.fault: Callable[[str, str], None] | None = None
        # False in a copy of atomizer-hq that does not hold the scheduler lease: it follows no completion (the
        # holder does); set by the runner's workflow job.
        self.leading = True
        # Chooses the agent of a `route:` step at dispatch (docs/routing.md); set by bot.services.
        self.routing: RoutingService | None = None

    # --- listeners and life cycle ---------------------------------------------------------------

    def add_listener(self, listener: Listener) -> None:
        """`listener("W-3")` after every change of a run (the Discord cog redraws the run's card)."""
        self._listeners.append(listener)

    async def _notify(self, run_id: int) -> None:
        for listener in list(self._listeners):
            try:
                result = listener(f"W-{run_id}")
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("workflow listener failed for W-%d", run_id)
        async with self.changed:
            self.changed.notify_all()

    async def idle(self) -> None:
        """Until no completion wait is under way (tests: the background work has settled)."""
        while pending := [task for task in self._watchers.values() if not task.done()]:
            await asyncio.wait(pending)

    async def close(self) -> None:
        """Stop the completion waits (they are re-attached by `recover` in the next process)."""
        tasks = list(self._watchers.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._watchers.clear()

    def _crash_point(self, name: str, key: str) -> None:
        if self.fault is not None:
            self.fault(name, key)

    def _lock(self, run_id: int) -> asyncio.Lock:
        return self._locks.setdefault(run_id, asyncio.Lock())

    # --- reading ------------------------------------------------------------------------------

    async def get(self, run_ref: str | int) -> RunDetail:
        run = await self._require_run(run_ref)
        steps = await self.tables.steps(run.id)
        trees = await self._delegation.trees([s.delegation_id for s in steps if s.delegation_id])
        chains = {root: subtree(tree, root)[1:] for root, tree in trees.items() if len(tree) > 1}
        return RunDetail(run, steps, await self.tables.approvals(run.id), await self.tables.events(run.id), chains)

    async def runs(self, *, status: str | None = None, limit: int = 20) -> list[RunRow]:
        if status is not None and status not in ("running", "succeeded", "failed", "cancelled"):
            raise InvalidInput(f"unknown run status {status!r}; valid: running, succeeded, failed, cancelled")
        return await self.tables.runs(status=status, limit=max(1, min(limit, 100)))

    async def _require_run(self, run_ref: str | int) -> RunRow:
        run_id = parse_run_id(run_ref)
        run = await self.tables.run(run_id)
        if run is None:
            raise UnknownRun(f"no workflow run W-{run_id}; list recent ones with `atomizer-hq workflow runs`")
        return run

    async def _require_step(self, run: RunRow, step_id: str) -> StepRow:
        step = await self.tables.step(run.id, step_id)
        if step is None:
            steps = ", ".join(run.definition.step_ids)
            raise UnknownStep(f"{run.display_id} has no step {step_id!r}; its steps: {steps}")
        return step

    async def wait_step(self, run_ref: str | int, step_id: str, timeout: float, *, poll_s: float = 0.5) -> StepRow:
        """The step once final (or as it is at `timeout`); polls too, for results another process records."""
        run = await self._require_run(run_ref)
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while True:
            step = await self._require_step(run, step_id)
            left = end - loop.time()
            if step.status in FINAL or left <= 0:
                return step
            with contextlib.suppress(TimeoutError):
                async with self.changed:
                    await asyncio.wait_for(self.changed.wait(), min(poll_s, left))

    # --- starting -----------------------------------------------------------------------------

    def _definition(self, workflow: WorkflowDefinition | str) -> WorkflowDefinition:
        if isinstance(workflow, WorkflowDefinition):
            return workflow
        if self.catalog is None:
            raise InvalidInput(f"no workflow catalog is configured, so {workflow!r} cannot be looked up")
        found = self.catalog.get(workflow)
        # bot.workflows.loader's catalog gives the definition with where it came from (LoadedWorkflow).
        definition = getattr(found, "definition", found)
        assert isinstance(definition, WorkflowDefinition)
        return definition

    async def preflight(
        self, requester: Requester, workflow: WorkflowDefinition | str, inputs: dict[str, Any]
    ) -> tuple[WorkflowDefinition, dict[str, Any]]:
        """What `start` checks before recording anything (the definition, the inputs, the starter's authority for
        every agent step), raising what it would; a front end asks first when it must prepare (a Discord thread)."""
        definition = self._definition(workflow)
        checked = validate(definition, self._config)  # what `workflow validate` says, authority apart (below)
        if not checked.ok:
            raise InvalidInput(f"{definition.name} cannot run: " + "; ".join(checked.problems))
        values = definition.resolve_inputs(inputs)
        too_big = oversized_step(definition, values)
        if too_big is not None:
            raise InvalidInput(too_big)
        now = self._clock()
        for step in definition.steps:
            if not isinstance(step, AgentStep):
                continue
            if step.route is not None:  # some agent with its capabilities may take it (validate checked they exist)
                planned = plan(definition, self._config, requester, values).step(step.id)
                if not planned.allowed:
                    detail = {"step": step.id, "route": step.route.needs, "reason": planned.authority}
                    row = audit_row(requester, "workflow-run", definition.name, "refused", detail, now)
                    await self.tables.db.atomically(lambda conn, row=row: conn.execute(*row))
                    raise NotAllowed(f"{definition.name}: step {step.id} (route: {', '.join(step.route.needs)}): "
                                     f"no agent with them may be delegated to: {planned.authority}")  # fmt: skip
                continue
            assert step.agent is not None
            try:
                self._config.require_agent(step.agent)
            except UnknownAgent as exc:
                raise UnknownAgent(f"{definition.name}: step {step.id}: {exc}") from None
            decision = self._delegation.authorize(requester, step.agent)
            if not decision.allowed:
                detail = {"step": step.id, "agent": step.agent, "reason": decision.reason}
                row = audit_row(requester, "workflow-run", definition.name, "refused", detail, now)
                await self.tables.db.atomically(lambda conn, row=row: conn.execute(*row))
                raise NotAllowed(f"{definition.name}: step {step.id} ({step.agent}): {decision.reason}")
        return definition, values

    async def start(
        self,
        requester: Requester,
        workflow: WorkflowDefinition | str,
        inputs: dict[str, Any],
        *,
        origin: str | None = None,
        thread_id: str | None = None,
    ) -> RunRow:
        """Check inputs and the starter's authority for every agent step, record the run, dispatch its roots."""
        definition, values = await self.preflight(requester, workflow, inputs)
        now = self._clock()
        run = {
            "workflow": definition.name,
            "definition_json": definition.model_dump_json(),
            "inputs_json": json.dumps(values, ensure_ascii=False),
            "status": "running",
            "starter_kind": requester.kind,
            "starter": requester.name,
            "starter_user_id": requester.user_id,
            "starter_level": int(requester.level),
            "starter_via": requester.via,
            "front_end": requester.front_end,
            "origin": origin,
            "thread_id": thread_id,
            "created_at": iso(now),
            "updated_at": iso(now),
        }
        steps = [(s.id, s.kind, s.agent if isinstance(s, AgentStep) else None) for s in definition.steps]
        audit = audit_row(requester, "workflow-run", definition.name, "allowed", {"inputs": values}, now)
        run_id = await self.tables.insert_run(run, steps, [audit], now)
        log.info("workflow %s started as W-%d by %s", definition.name, run_id, requester.describe())
        await self._notify(run_id)
        await self.advance(run_id)
        return await self._require_run(run_id)

    async def set_thread(self, run_ref: str | int, thread_id: str, card_message_id: str | None = None) -> None:
        """The run's Discord thread (answers go there from the next dispatch on) and its live card."""
        run = await self._require_run(run_ref)
        await self.tables.set_run(run.id, self._clock(), thread_id=thread_id, card_message_id=card_message_id)

    # --- advancing ----------------------------------------------------------------------------

    async def advance(self, run_ref: str | int) -> None:
        """Dispatch every step whose needs are met (all at once), fail or finish the run when it is time.

        Returns once a pass that began after this call has ended. Calls that queued behind one pass share
        the next: 100 results arriving at once cost a few passes over the run, not 100.
        """
        run_id = parse_run_id(run_ref)
        passes = self._passes.setdefault(run_id, [0, 0])  # [asked, covered]: calls made, calls a finished pass saw
        passes[0] += 1
        ticket = passes[0]
        async with self._lock(run_id):
            if passes[1] >= ticket:
                return  # a pass that began after this call read the run: nothing it could not see is left
            seen = passes[0]
            await self._advance_pass(run_id)
            passes[1] = max(passes[1], seen)

    async def _advance_pass(self, run_id: int) -> None:
        while True:
            run = await self.tables.run(run_id)
            if run is None or run.status != "running":
                return
            steps = {s.step_id: s for s in await self.tables.steps(run_id)}
            definition = run.definition
            broken = [
                s for s in steps.values()
                if s.status in DONE_BADLY - {"unconfirmed", "timed_out", "cancelled"}
                and definition.step(s.step_id).on_failure == "fail"
            ]  # fmt: skip
            if broken:
                await self._fail_run(run, steps, broken[0])
                return
            ready = [
                s for s in steps.values()
                if s.status == "pending"
                and all(_met(definition, steps[n]) for n in definition.step(s.step_id).needs)
            ]  # fmt: skip
            if not ready:
                if all(_met(definition, s) for s in steps.values()):
                    await self._finish_run(run)
                return
            await asyncio.gather(*(self._start_step(run, definition.step(s.step_id), s) for s in ready))

    async def _fail_run(self, run: RunRow, steps: dict[str, StepRow], cause: StepRow) -> None:
        now = self._clock()
        error = f"step {cause.step_id} {cause.status}" + (f": {cause.error}" if cause.error else "")
        if not await self.tables.set_run(run.id, now, expect="running", status="failed", finished_at=iso(now),
                                         error=error):  # fmt: skip
            return
        for step in steps.values():
            if step.status == "pending":
                await self.tables.move(run.id, step.step_id, "skip", now, actor="atomizer-hq",
                                       detail={"because": cause.step_id}, finished_at=iso(now))  # fmt: skip
            elif step.status == "waiting_approval":
                await self.tables.move(run.id, step.step_id, "cancel", now, actor="atomizer-hq",
                                       detail={"because": cause.step_id}, finished_at=iso(now),
                                       error=f"the run failed ({error})")  # fmt: skip
        await self.tables.event(run.id, None, now, "atomizer-hq", "run_failed", {"error": error})
        log.warning("workflow run W-%d failed: %s", run.id, error)
        await self._notify(run.id)

    async def _finish_run(self, run: RunRow) -> None:
        now = self._clock()
        if await self.tables.set_run(run.id, now, expect="running", status="succeeded", finished_at=iso(now)):
            await self.tables.event(run.id, None, now, "atomizer-hq", "run_succeeded", {})
            log.info("workflow run W-%d succeeded", run.id)
            await self._notify(run.id)

    async def _start_step(self, run: RunRow, spec: AgentStep | ApprovalStep, step: StepRow) -> None:
        now = self._clock()
        if isinstance(spec, ApprovalStep):
            deadline = now + timedelta(seconds=spec.approval.expires_in_s)
            evidence = {"approvers": list(spec.approval.approvers)}
            if await self.tables.move(run.id, step.step_id, "open_gate", now, actor="atomizer-hq",
                                      detail={"expires_at": iso(deadline)}, started_at=iso(now),
                                      deadline_at=iso(deadline), evidence=evidence):  # fmt: skip
                await self._notify(run.id)
            return
        attempt = step.attempt + 1
        moved = await self.tables.move(
            run.id, step.step_id, "dispatch", now, actor="atomizer-hq", detail={"attempt": attempt},
            attempt=attempt, started_at=iso(now), evidence=None, error=None, finished_at=None,
        )  # fmt: skip
        if not moved:
            return
        self._crash_point("dispatching", step_key(run.id, step.step_id, attempt))
        await self._dispatch_safely(run, spec, attempt)

    def _delivery(self, run: RunRow, spec: AgentStep) -> tuple[str | None, bool]:
        """Where the agent's answer goes: the run's thread, else the workflow's deliver_to, or nowhere."""
        where = spec.deliver_to or run.definition.deliver_to
        if where == "none":
            return None, False
        if where == "thread":
            # No thread (started from the CLI or the API): the origin, else the default channel.
            return (f"channel:{run.thread_id}" if run.thread_id else None), True
        return where, True

    @staticmethod
    def _starter(run: RunRow) -> Requester:
        return Requester(
            kind=run.starter_kind,  # type: ignore[arg-type]
            name=run.starter,
            front_end=run.front_end,  # type: ignore[arg-type]
            level=AccessLevel(run.starter_level),
            user_id=run.starter_user_id,
            via=run.starter_via,
        )

    async def _dispatch_safely(self, run: RunRow, spec: AgentStep, attempt: int) -> None:
        """`_dispatch`, but a database failure leaves the step `dispatching` for tick() (or recover()) to finish:
        what was recorded stands, and the caller (start, a result) is answered as such."""
        key = step_key(run.id, spec.id, attempt)
        self._dispatching.add(key)
        try:
            await self._dispatch(run, spec, attempt)
        except StoreError as exc:  # DelegationUnrecorded too: the delegation is adopted on the next try
            log.warning("workflow step %s stays dispatching (%s); it is dispatched again shortly", key, exc)
        finally:
            self._dispatching.discard(key)

    async def _dispatch(self, run: RunRow, spec: AgentStep, attempt: int) -> None:
        """The delegation of one attempt (adopted if it exists already), then the step is `running`."""
        key = step_key(run.id, spec.id, attempt)
        delegation = await self._delegation.by_workflow_step(key)
        if delegation is None:
            outputs = await self.tables.outputs(run.id, references(spec.message).steps)
            target, deliver = self._delivery(run, spec)
            try:
                message = render(spec.message, run.inputs, outputs) + step_footer(key)
                agent = spec.agent or await self._route(run, spec, key)
                result = await self._delegation.delegate(
                    self._starter(run), agent, message, target=target, deliver=deliver, origin=run.origin,
                    workflow_step=key, task=spec.task, needs=tuple(spec.route.needs) if spec.route else (),
                )  # fmt: skip
                delegation = result.delegation
            except DuplicateWorkflowStep:
                delegation = await self._delegation.by_workflow_step(key)
            except (AtomizerError, KeyError) as exc:
                if isinstance(exc, AtomizerError) and exc.http_status >= 500 and not isinstance(exc, GatewayError):
                    raise  # the database: the step stays `dispatching` and recover() finishes it
                await self._end_step(run.id, spec.id, "fail", f"not dispatched: {exc}", attempt=attempt)
                return
        assert delegation is not None
        self._crash_point("delegated", key)
        now = self._clock()
        deadline = now + timedelta(seconds=spec.timeout_s)
        moved = await self.tables.move(
            run.id, spec.id, "delegated", now, actor="atomizer-hq",
            detail={"delegation": delegation.display_id, "status": delegation.status},
            delegation_id=delegation.id, deadline_at=iso(deadline),
        )  # fmt: skip
        if moved:
            await self._notify(run.id)
        else:
            current = await self.tables.step(run.id, spec.id)
            if current is not None and current.status == "cancelled" and current.attempt == attempt:
                # Cancelled (by another process) while this dispatch sent it: the agent must not go on.
                await self._stop(run, current, delegation, current.error or "cancelled")
        self._crash_point("running", key)
        step = await self.tables.step(run.id, spec.id)
        if step is not None and step.status == "running":
            await self._sync(run, step, delegation)

    def _step_follows(self, conn: sqlite3.Connection, delegation: Delegation, why: str) -> None:
        """A routed step's delegation went to another agent (the one chosen did not admit it): in the same
        transaction the step's agent follows, with a `routed` event saying why (`workflow show`'s routed: line)."""
        parsed = parse_step_key(delegation.workflow_step) if delegation.workflow_step else None
        if parsed is None:
            return
        run_id, step_id, attempt = parsed
        conn.execute(
            "UPDATE workflow_steps SET agent = ? WHERE run_id = ? AND step_id = ? AND attempt = ?",
            (delegation.agent, run_id, step_id, attempt),
        )
        detail = {"agent": delegation.agent, "why": why}
        conn.execute(*event_statement(run_id, step_id, self._clock(), "atomizer-hq", "routed", detail))

    async def _step_followed(self, delegation: Delegation) -> None:
        """The card shows the step's new agent (a move made by the outbox notifies nothing else)."""
        parsed = parse_step_key(delegation.workflow_step) if delegation.workflow_step else None
        if parsed is not None:
            await self._notify(parsed[0])

    async def _route(self, run: RunRow, spec: AgentStep, key: str) -> str:
        """A `route:` step's agent, chosen now (audited, with the table) and recorded on the step; NobodyEligible
        (bad input: the step fails, saying why) when no agent can take it."""
        assert spec.route is not None
        if self.routing is None:
            raise InvalidInput(f"{key}: this atomizer-hq cannot route steps (no routing service)")
        affinity = None
        if spec.route.affinity is not None:
            earlier = await self.tables.step(run.id, spec.route.affinity)
            affinity = earlier.agent if earlier is not None else None
        decision = await self.routing.route(self._starter(run), spec.route.needs, affinity,
                                            audit_detail={"workflow_step": key})  # fmt: skip
        assert decision.chosen is not None
        await self.tables.set_step_agent(run.id, spec.id, decision.chosen)
        await self.tables.event(run.id, spec.id, self._clock(), "atomizer-hq", "routed",
                                {"agent": decision.chosen, "why": decision.explanation})  # fmt: skip
        return decision.chosen

    async def _end_step(
        self,
        run_id: int,
        step_id: str,
        event: str,
        why: str | None,
        *,
        actor: str = "atomizer-hq",
        attempt: int | None = None,
        **fields: Any,
    ) -> bool:
        """End the step (only while it is at `attempt`: a late word on an earlier attempt ends nothing)."""
        now = self._clock()
        moved = await self.tables.move(run_id, step_id, event, now, actor=actor, detail={"why": why} if why else {},
                                       expect_attempt=attempt, finished_at=iso(now), error=why,
                                       **fields)  # fmt: skip
        if moved:
            if event in ("fail", "time_out", "unconfirm"):
                log.warning("workflow step W-%d/%s %s: %s", run_id, step_id, TRANSITIONS[event][1], why)
            await self._notify(run_id)
        return moved

    async def _proven_failure(
        self, run: RunRow, step: StepRow, why: str, *, failure: dict[str, Any] | None = None
    ) -> bool:
        """A failure that proves the work did not happen (or ended in error): retry if retries are left.
        Only while the step is still at `step.attempt`; False when it was not (a late word moves nothing)."""
        spec = run.definition.step(step.step_id)
        assert isinstance(spec, AgentStep)
        if step.status == "running" and step.attempt <= spec.retries and run.status == "running":
            now = self._clock()
            attempt = step.attempt + 1
            moved = await self.tables.move(
                run.id, step.step_id, "redispatch", now, actor="atomizer-hq",
                detail={"why": why, "attempt": attempt}, attempt=attempt, delegation_id=None,
                evidence={"after_failure": failure} if failure else None, deadline_at=None, error=why,
                expect_attempt=step.attempt,
            )  # fmt: skip
            if moved:
                await self._dispatch_safely(run, spec, attempt)
            return moved
        return await self._end_step(run.id, step.step_id, "fail", why, attempt=step.attempt)

    # --- following a running step ---------------------------------------------------------------

    async def _sync(self, run: RunRow, step: StepRow, delegation: Delegation | None = None) -> None:
        """Bring a running step up to date with its delegation: failed, unconfirmed, or admitted (watch it)."""
        if step.delegation_id is None:
            return
        delegation = delegation or await self._delegation.get(step.delegation_id)
        if delegation.status == "failed":
            await self._proven_failure(run, step, f"{delegation.display_id} failed: {delegation.last_error}")
        elif delegation.status == "unconfirmed":
            await self._end_step(
                run.id,
                step.step_id,
                "unconfirm",
                f"{delegation.display_id}: {delegation.last_error}",
                attempt=step.attempt,
            )
        elif delegation.status == "expired":
            await self._end_step(run.id, step.step_id, "time_out",
                                 f"{delegation.display_id} was never admitted: {delegation.last_error}",
                                 attempt=step.attempt)  # fmt: skip
        elif delegation.status == "accepted":
            if "admitted_unix" not in step.evidence:
                # When the gateway admitted it, from the delegation's own record (not when the engine got here, which
                # may be after a crash and a gateway restart): at the latest `accepted_at`, at the earliest that
                # minus the request's latency.
                at = delegation.accepted_at
                accepted = datetime.fromisoformat(at).timestamp() if at else time.time()
                evidence = {
                    **step.evidence, "run_id": delegation.run_id, "admitted_unix": accepted,
                    "admitted_from_unix": accepted - (delegation.latency_ms or 0.0) / 1000,
                }  # fmt: skip
                await self._set_evidence(step, evidence)
                step = await self.tables.step(step.run_id, step.step_id) or step
            await self._maybe_watch(step, delegation)

    async def _set_evidence(self, step: StepRow, evidence: dict[str, Any]) -> None:
        """A running attempt's evidence, but the answer's keys (ANSWER_KEYS) as they are at the write: the answer
        read from Discord may have grown since `step` was read. Read and written in one transaction: an answer
        appended between a separate read and write was lost, and the step then waited OUTPUT_GRACE_S for an
        output it already had (and ended with none)."""
        where = (step.run_id, step.step_id, step.attempt)

        def write(conn: sqlite3.Connection) -> None:
            row = conn.execute(
                "SELECT evidence FROM workflow_steps WHERE run_id = ? AND step_id = ? AND attempt = ?", where
            ).fetchone()
            current = json.loads(row[0]) if row is not None and row[0] else {}
            merged = {**evidence, **{k: v for k, v in current.items() if k in ANSWER_KEYS}}
            conn.execute(
                "UPDATE workflow_steps SET evidence = ? WHERE run_id = ? AND step_id = ? AND attempt = ? "
                "AND status = 'running'",
                (json.dumps(merged), *where),
            )

        await self.tables.db.atomically(write)

    async def _set_evidence_key(self, step: StepRow, key: str, value: Any) -> None:
        """One key of a running attempt's evidence, leaving the rest as it is now (not as `step` read it)."""
        await self.tables.db.update(
            "UPDATE workflow_steps SET evidence = json_set(coalesce(evidence, '{}'), ?, json(?)) WHERE run_id = ? "
            "AND step_id = ? AND attempt = ? AND status = 'running'",
            (f"$.{key}", json.dumps(value), step.run_id, step.step_id, step.attempt),
        )

    async def _maybe_watch(self, step: StepRow, delegation: Delegation) -> None:
        """On 2026.9.6, wait for the run's completion in the background (2026.2.12 has none: results only)."""
        if "completion" in step.evidence or "not_reattached" in step.evidence:
            return
        watch = (step.run_id, step.step_id, step.attempt)
        if not self.leading or (watch in self._watchers and not self._watchers[watch].done()):
            return
        if self._gateway.honours_idempotency(delegation.agent) is False:
            return
        # Registered before any await, so two callers (tick, a dispatch) cannot both follow one step.
        self._watchers[watch] = asyncio.create_task(self._watch(*watch), name=f"W-{step.run_id}/{step.step_id}")

    async def _watch(self, run_id: int, step_id: str, attempt: int) -> None:
        try:
            await self._watch_once(run_id, step_id, attempt)
            step = await self.tables.step(run_id, step_id)
            if step is None or step.status != "running" or step.attempt != attempt:
                await self.advance(run_id)  # whatever ended the step (unconfirmed with on_failure continue too)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("workflow W-%d/%s: following the completion failed; tick() tries again", run_id, step_id)
        finally:
            self._holding.pop((run_id, step_id, attempt), None)

    async def _still_attached(self, step: StepRow, now: datetime) -> None:
        """While this process holds a step's completion wait, the run has not settled: say so in the step, now and
        then, so a later process knows whether the gateway still remembers the key (REATTACH_WITHIN_S)."""
        since = self._holding.get((step.run_id, step.step_id, step.attempt))
        if since is None:
            return
        unsettled_at = now.timestamp() - 5.0  # a settled run answers a held wait at once; 5 s covers the trip
        last = float(step.evidence.get("attached_unix", 0.0))
        if unsettled_at < since or unsettled_at - last < ATTACHED_REFRESH_S:
            return
        await self._set_evidence_key(step, "attached_unix", unsettled_at)

    async def _watch_once(self, run_id: int, step_id: str, attempt: int) -> None:
        run = await self.tables.run(run_id)
        step = await self.tables.step(run_id, step_id)
        if run is None or step is None or step.status != "running" or step.attempt != attempt:
            return
        assert step.delegation_id is not None
        delegation = await self._delegation.get(step.delegation_id)
        agent = self._config.require_agent(delegation.agent)
        if self._gateway.honours_idempotency(agent.name) is None:
            await self._gateway.readiness(agent)
        if not self._gateway.honours_idempotency(agent.name):
            return  # 2026.2.12: no completion to follow; results only
        admitted = step.evidence.get("admitted_unix")
        if not isinstance(admitted, int | float):
            return  # _sync records it first
        admitted_from = step.evidence.get("admitted_from_unix", admitted)
        window = await self._gateway.boot_window(agent)
        if window is None:
            return  # starting, down, or no /startupz (2026.2.12): nothing proves a re-POST safe; tick() tries again
        booted, booted_by = window
        if booted > admitted or booted_by >= admitted_from:
            # A re-POST now would start a second run if the gateway forgot the key when it restarted.
            restarted = "restarted after admitting" if booted > admitted else "may have restarted since it admitted"
            await self._end_step(run_id, step_id, "unconfirm",
                                 f"{agent.name}'s gateway {restarted} {delegation.display_id}; it "
                                 "forgets runs when it restarts, so the step was not re-sent: check the agent's work, "
                                 f"then report the result or retry (atomizer-hq workflow retry W-{run_id} --from "
                                 f"{step_id})", attempt=attempt)  # fmt: skip
            return
        # A settled run's key is forgotten 5 min after it settled: the run was last known unsettled when this
        # process held the wait (`attached_unix`), or at admission.
        last_known = max(float(step.evidence.get("attached_unix", 0.0)), float(admitted_from))
        gap = self._clock().timestamp() - last_known
        if gap >= REATTACH_WITHIN_S:
            why = (
                f"not re-attached to {delegation.display_id}: nothing followed it for {gap / 60:.0f} min, and "
                f"{agent.name}'s gateway forgets a finished run 5 min after it ends (a re-POST could start the work "
                "again); the step waits for its result (reported by the agent or a person) until its timeout"
            )
            await self._set_evidence_key(step, "not_reattached", why)
            await self.tables.event(run_id, step_id, self._clock(), "atomizer-hq", "not_reattached", {"why": why})
            await self._notify(run_id)
            return
        deadline = datetime.fromisoformat(step.deadline_at) if step.deadline_at else self._clock()
        wait_s = max(1.0, (deadline - self._clock()).total_seconds()) + COMPLETION_MARGIN_S
        self._holding[(run_id, step_id, attempt)] = self._clock().timestamp()
        try:
            answer = await self._delegation.await_completion(delegation, wait_s)
        except HookRateLimited:
            return  # tick() attaches again
        except (AgentUnavailable, GatewayProtocolError) as exc:
            await self._end_step(run_id, step_id, "unconfirm",
                                 f"{agent.name}'s gateway went away while {delegation.display_id} ran ({exc.reason}); "
                                 "a restarted gateway forgets its runs, so the step was not re-sent: check the "
                                 "agent's work, then report the result or retry", attempt=attempt)  # fmt: skip
            return
        except GatewayError as exc:
            await self._end_step(
                run_id, step_id, "unconfirm", f"the completion could not be read: {exc.reason}", attempt=attempt
            )
            return
        if answer.run_id != delegation.run_id:
            await self._end_step(run_id, step_id, "unconfirm",
                                 f"{agent.name}'s gateway answered with runId {answer.run_id}, not the "
                                 f"{delegation.run_id} it admitted: it restarted and forgot the run (and may have "
                                 "started it again); not re-sent", attempt=attempt)  # fmt: skip
            return
        completion = answer.completion or {}
        status = completion.get("status")
        run = await self.tables.run(run_id) or run
        step = await self.tables.step(run_id, step_id) or step
        if step.status != "running" or step.attempt != attempt:
            return  # a result arrived first
        if status == "ok":
            await self._completed(run, step, completion)
        elif status in ("error", "skipped"):
            await self._proven_failure(run, step, f"the gateway reports the run ended with status {status}")
            await self.advance(run_id)
        else:
            await self._end_step(
                run_id, step_id, "unconfirm", f"the gateway's answer had no completion: {completion}", attempt=attempt
            )

    async def _completed(self, run: RunRow, step: StepRow, completion: dict[str, Any]) -> None:
        """Completion `ok`: without a reply to wait for, done now; else the output has OUTPUT_GRACE_S to arrive."""
        now = self._clock()
        disposition = completion.get("replyDisposition")
        # An answer under way in Discord ends OUTPUT_SETTLE_S after its last message (tick): the completion may
        # overtake the last messages of a chunked answer on their way through Discord's gateway.
        if disposition in ("silent", "empty") and not step.evidence.get("last_output_at"):
            await self._end_step(
                run.id, step.step_id, "succeed", None, output="", output_source="completion", attempt=step.attempt
            )
            await self.advance(run.id)
            return
        evidence = {**step.evidence, "completion": completion, "completed_at": iso(now)}
        await self._set_evidence(step, evidence)
        await self.tables.event(run.id, step.step_id, now, "atomizer-hq", "completed", {"completion": completion})
        await self._notify(run.id)

    # --- results ------------------------------------------------------------------------------

    async def report_result(
        self,
        requester: Requester,
        run_ref: str | int,
        step_id: str,
        *,
        ok: bool,
        output: str,
        source: str,
        attempt: int | None = None,
    ) -> StepRow:
        """A step's result: from its agent (API, Discord, the task board) or a person (operator or above).

        `attempt` (or the step written `mesh#2`, as the hook's message names it) ties the result to one attempt:
        a result of an earlier one is refused (StepConflict). Without it, the result is the current attempt's,
        except a failure that repeats, word for word and from the same reporter, the one that ended the attempt
        before: that is the same report seen again (a retried POST, a re-read message), and changes nothing."""
        if source not in OUTPUT_SOURCES:
            raise InvalidInput(f"unknown result source {source!r}; valid: {', '.join(OUTPUT_SOURCES)}")
        step_id, attempt = _step_ref(step_id, attempt)
        run = await self._require_run(run_ref)
        step = await self._require_step(run, step_id)
        where = f"{run.display_id}/{step_id}"
        if step.kind != "agent":
            raise InvalidInput(f"{where} is an approval gate; approve or reject it instead")
        if not (requester.is_agent and requester.name == step.agent) and (
            requester.is_agent or requester.level < AccessLevel.OPERATOR
        ):
            raise NotAllowed(
                f"{requester.describe()} may not report the result of {where}: only {step.agent} (the step's agent) "
                "or a person with the operator or admin role may"
            )
        failure = {
            "attempt": step.attempt,
            "by": requester.name,
            "digest": hashlib.sha256(output.strip().encode()).hexdigest()[:16],
        }
        repeated = step.evidence.get("after_failure") == {**failure, "attempt": step.attempt - 1}
        if not ok and attempt is None and repeated:
            log.info("%s: the failure that ended attempt %d was reported again; ignored", where, step.attempt - 1)
            return step
        if attempt is not None and attempt != step.attempt:
            raise StepConflict(
                f"{where}#{attempt} is over: the step is at attempt {step.attempt} ({step.status}); a result of an "
                "earlier attempt is not taken"
            )
        if step.status not in ("running", "unconfirmed", "timed_out"):
            raise StepConflict(f"{where} is {step.status}{_since(step)}: {_why_no_result(step.status)}")
        if run.status == "cancelled":
            raise StepConflict(f"{where}: {run.display_id} was cancelled; its results are no longer taken")
        now = self._clock()
        detail = {"ok": ok, "source": source, "chars": len(output), "attempt": step.attempt}
        audit = audit_row(requester, "workflow-result", where, "allowed", detail, now)
        if ok:
            moved = await self.tables.move(
                run.id, step_id, "succeed", now, actor=requester.name, detail=detail, extra=[audit],
                output=output, output_source=source, finished_at=iso(now), error=None, expect_attempt=step.attempt,
            )  # fmt: skip
        else:
            why = f"{requester.name} reported a failure: {output.strip()[:500]}"
            moved = await self._proven_failure(run, step, why, failure=failure)
            if moved:
                await self.tables.event(run.id, step_id, now, requester.name, "result_failed", detail)
        if not moved:
            current = await self._require_step(run, step_id)
            raise StepConflict(f"{where} is {current.status}{_since(current)}: {_why_no_result(current.status)}")
        await self._notify(run.id)
        self._crash_point("result", step.key)
        await self.advance(run.id)
        return await self._require_step(run, step_id)

    # --- results read from the task board ------------------------------------------------------

    async def task_changed(self, task: Task, event: TaskEvent) -> None:
        """A TaskBoard listener: a step that names its task (`task: T-12`) ends when the task is done.

        However the task got there (`T-12 done: …` in #task-board, /task, the API, the CLI), the move's
        note is the step's output and the mover its reporter, held to the same rule as any report.
        """
        if event.action != "move" or event.new_value != "done":
            return
        for run_id in await self.tables.running_run_ids():
            run = await self.tables.run(run_id)
            if run is None:
                continue
            for spec in run.definition.steps:
                if not isinstance(spec, AgentStep) or spec.task is None or _task_number(spec.task) != task.id:
                    continue
                step = await self.tables.step(run.id, spec.id)
                if step is None or step.status != "running":
                    continue
                reporter = Requester(
                    kind="agent" if event.actor_kind == "agent" else "person", name=event.actor, front_end="taskboard",
                    level=AccessLevel.OPERATOR if event.actor_kind != "agent" else AccessLevel.NONE,
                )  # fmt: skip
                try:
                    await self.report_result(
                        reporter, run.id, spec.id, ok=True, output=event.note or "", source="taskboard"
                    )
                except AtomizerError as exc:
                    log.warning("%s done on the board, but %s/%s keeps running: %s", task.display_id,
                                run.display_id, spec.id, exc)  # fmt: skip

    # --- answers read from Discord ---------------------------------------------------------------

    async def step_answering_in(self, agent: str, channel_id: str) -> StepRow | None:
        """The running step whose answer `agent` posts in `channel_id` (the step delivers there): None when no
        step, or several (which one a post belongs to cannot be told; their results come another way)."""
        target = f"channel:{channel_id}"
        found: list[StepRow] = []
        # `dispatching` too: a quick agent answers before the send returns (the delegation is recorded first).
        for step in await self.tables.steps_in(("dispatching", "running")):
            if step.agent != agent:
                continue
            if step.delegation_id is not None:
                delegation: Delegation | None = await self._delegation.get(step.delegation_id)
            else:
                delegation = await self._delegation.by_workflow_step(step.key)
            if delegation is not None and delegation.target == target and delegation.deliver:
                found.append(step)
        if len(found) > 1:
            keys = ", ".join(step.key for step in found)
            log.warning("%s posted in %s, where several of its steps answer (%s): not taken as output", agent,
                        target, keys)  # fmt: skip
        return found[0] if len(found) == 1 else None

    async def append_output(
        self, requester: Requester, run_ref: str | int, step_id: str, text: str, *, source: str = "discord"
    ) -> StepRow:
        """One message of a running step's answer, by its agent: appended to its output (`NO_REPLY` or empty
        adds nothing). The step is done on 2026.9.6 at the completion (`ok`) once the answer is there, on
        2026.2.12 (no completion) `output_quiet_s` after the last message; both by `tick` or the completion."""
        run = await self._require_run(run_ref)
        # Messages arrive together (a chunked answer): each read-append-write is done alone, in arrival order.
        async with self._answer_locks.setdefault((run.id, step_id), asyncio.Lock()):
            return await self._append_output(requester, run, step_id, text, source)

    async def _append_output(self, requester: Requester, run: RunRow, step_id: str, text: str, source: str) -> StepRow:
        step = await self._require_step(run, step_id)
        where = f"{run.display_id}/{step_id}"
        if not (requester.is_agent and requester.name == step.agent):
            raise NotAllowed(f"{requester.describe()} is not {step.agent}: only the step's agent answers {where}")
        if step.status not in ("dispatching", "running") or run.status != "running":
            raise StepConflict(f"{where} is {step.status}: an answer is taken only while it runs")
        piece = text.strip()
        if piece == NO_REPLY:
            piece = ""
        now = self._clock()
        output = "\n".join(part for part in (step.output or "", piece) if part)[:OUTPUT_STORE_MAX]
        # Only the answer's keys are written, in SQL: a completion recorded meanwhile keeps its own.
        changed = await self.tables.db.update(
            "UPDATE workflow_steps SET output = ?, evidence = json_set(coalesce(evidence, '{}'), '$.messages', "
            "coalesce(json_extract(evidence, '$.messages'), 0) + 1, '$.last_output_at', ?, '$.answer_source', ?) "
            "WHERE run_id = ? AND step_id = ? AND attempt = ? AND status IN ('dispatching', 'running')",
            (output, iso(now), source, run.id, step_id, step.attempt),
        )
        if not changed:
            current = await self._require_step(run, step_id)
            raise StepConflict(f"{where} is {current.status}: an answer is taken only while it runs")
        await self.tables.event(run.id, step_id, now, requester.name, "output", {"source": source,
                                                                                "chars": len(piece)})  # fmt: skip
        await self._notify(run.id)
        return await self._require_step(run, step_id)

    def _answer_done(self, step: StepRow, now: datetime) -> bool:
        """Whether the answer read so far is the step's whole output (see append_output)."""
        last = step.evidence.get("last_output_at")
        if not last:
            return False
        quiet = (now - datetime.fromisoformat(last)).total_seconds()
        if step.evidence.get("completed_at"):
            return quiet >= OUTPUT_SETTLE_S
        honours = self._gateway.honours_idempotency(step.agent) if step.agent else None
        return honours is False and quiet >= self.output_quiet_s

    # --- approvals ----------------------------------------------------------------------------

    async def approve(
        self, requester: Requester, run_ref: str | int, step_id: str, *, approve: bool, reason: str | None = None
    ) -> ApprovalOutcome:
        """One decision on a gate, race-safe: the check and the write are one transaction. A rejection needs a
        reason (it fails the run unless on_failure: continue; the starter must learn what to change)."""
        outcome = await self._decide(requester, run_ref, step_id, approve=approve, reason=reason, record=True)
        assert outcome is not None
        return outcome

    async def check_decision(self, requester: Requester, run_ref: str | int, step_id: str) -> None:
        """Raise what `approve` would (not an approver, the starter, decided already, the gate closed or expired),
        recording nothing but a refusal's audit: Discord asks this before opening the reject form, so nobody
        types a reason only to be told they may not decide."""
        await self._decide(requester, run_ref, step_id, approve=False, reason=None, record=False)

    async def _decide(
        self, requester: Requester, run_ref: str | int, step_id: str, *, approve: bool, reason: str | None,
        record: bool,
    ) -> ApprovalOutcome | None:  # fmt: skip
        reason = (reason or "").strip() or None
        run = await self._require_run(run_ref)
        await self._require_step(run, step_id)
        spec = run.definition.step(step_id)
        where = f"{run.display_id}/{step_id}"
        if not isinstance(spec, ApprovalStep):
            raise InvalidInput(f"{where} is an agent step, not an approval gate; report its result instead")
        starter = Starter(run.starter_kind, run.starter, run.starter_user_id)
        now = self._clock()
        key = approver_key(requester)
        decision = "approve" if approve else "reject"
        quorum = spec.approval.quorum

        def work(conn: Any) -> ApprovalOutcome | str | None:
            current = conn.execute(
                "SELECT status, finished_at, evidence, deadline_at FROM workflow_steps "
                "WHERE run_id = ? AND step_id = ?",
                (run.id, step_id),
            ).fetchone()
            # Who may decide, as the gate is now (an escalation may have just replaced its approvers).
            evidence = json.loads(current["evidence"]) if current["evidence"] else {}
            approvers = list(evidence.get("approvers") or spec.approval.approvers)
            why_not = refusal(requester, approvers, spec.approval, starter, where, decision)
            if why_not is not None:
                conn.execute(*audit_row(requester, "workflow-approve", where, "refused", {"reason": why_not}, now))
                return why_not
            mine = conn.execute(
                "SELECT decision, at FROM workflow_approvals WHERE run_id = ? AND step_id = ? AND approver = ?",
                (run.id, step_id, key),
            ).fetchone()
            if mine is not None:
                raise StepConflict(f"{where}: already {mine['decision']}d by you at {mine['at'][:19]} UTC")
            if current["status"] != "waiting_approval":
                raise StepConflict(_gate_ended(conn, run.id, step_id, where, current))
            deadline_at = current["deadline_at"]
            if deadline_at and now >= datetime.fromisoformat(deadline_at):  # expired; tick() has not acted yet
                raise StepConflict(_expired_at_click(where, deadline_at, spec, evidence))
            if not record:
                return None
            if not approve and reason is None:
                raise InvalidInput(
                    f"rejecting {where} needs a reason (it fails the run; its starter needs to know what to change): "
                    'give one: --reason "the mesh is too coarse" (the API: {"reason": "…"})'
                )
            conn.execute(
                "INSERT INTO workflow_approvals (run_id, step_id, approver_kind, approver, approver_name, "
                "approver_user_id, decision, at, front_end, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (run.id, step_id, requester.kind, key, requester.name, requester.user_id, decision, iso(now),
                 requester.front_end, reason),
            )  # fmt: skip
            conn.execute(*event_statement(run.id, step_id, now, requester.name, decision, {"reason": reason}))
            conn.execute(*audit_row(requester, "workflow-approve", where, "allowed",
                                    {"decision": decision, "reason": reason}, now))  # fmt: skip
            count = conn.execute(
                "SELECT count(DISTINCT approver) FROM workflow_approvals WHERE run_id = ? AND step_id = ? "
                "AND decision = 'approve'",
                (run.id, step_id),
            ).fetchone()[0]
            event = "reject" if not approve else ("approve" if count >= quorum else None)
            if event is None:
                return ApprovalOutcome(step_id, "waiting_approval", count, quorum, False)
            fields = {
                "finished_at": iso(now),
                "error": f"rejected by {requester.name}: {reason}" if not approve else None,
            }
            sql, params = move_statement(run.id, step_id, event, now, fields)
            conn.execute(sql, params)
            conn.execute(*event_statement(run.id, step_id, now, requester.name, event, {"approvals": count}))
            return ApprovalOutcome(step_id, TRANSITIONS[event][1], count, quorum, True)

        outcome = await self.tables.db.atomically(work)
        if isinstance(outcome, str):
            raise NotAllowed(outcome)
        if outcome is None:
            return None
        await self._notify(run.id)
        if outcome.decided:
            await self.advance(run.id)
        return outcome

    async def _expire_gate(self, run: RunRow, step: StepRow) -> None:
        spec = run.definition.step(step.step_id)
        assert isinstance(spec, ApprovalStep)
        now = self._clock()
        policy = spec.approval.on_expire
        detail = {"on_expire": policy, "expired_at": step.deadline_at}
        if policy == "approve":
            await self.tables.move(
                run.id,
                step.step_id,
                "approve",
                now,
                actor="atomizer-hq",
                detail=detail,
                finished_at=iso(now),
                evidence={**step.evidence, "resolved_by": "expiry"},
            )
        elif policy == "escalate" and not step.evidence.get("escalated"):
            deadline = now + timedelta(seconds=spec.approval.expires_in_s)
            evidence = {**step.evidence, "approvers": list(spec.approval.escalate_to), "escalated": True}
            await self.tables.move(run.id, step.step_id, "escalate", now, actor="atomizer-hq",
                                   detail={**detail, "approvers": spec.approval.escalate_to,
                                           "expires_at": iso(deadline)},
                                   evidence=evidence, deadline_at=iso(deadline))  # fmt: skip
        else:  # reject, or an escalation that expired too
            why = f"no decision by {step.deadline_at[:19] if step.deadline_at else '?'} UTC (on_expire: {policy})"
            await self.tables.move(run.id, step.step_id, "expire", now, actor="atomizer-hq", detail=detail,
                                   finished_at=iso(now), error=why)  # fmt: skip
        await self._notify(run.id)

    # --- cancel and retry -----------------------------------------------------------------------

    def _may_steer(self, requester: Requester, run: RunRow, what: str) -> None:
        starter = Starter(run.starter_kind, run.starter, run.starter_user_id)
        if is_starter(requester, starter) or (not requester.is_agent and requester.level >= AccessLevel.OPERATOR):
            return
        raise NotAllowed(
            f"{requester.describe()} may not {what} {run.display_id}: its starter ({run.starter}) or a person with "
            "the operator or admin role may"
        )

    async def cancel(self, requester: Requester, run_ref: str | int, *, reason: str | None = None) -> RunRow:
        """Pending steps cancelled; running agents told to stop with a follow-up hook; no new dispatch."""
        run = await self._require_run(run_ref)
        self._may_steer(requester, run, "cancel")
        now = self._clock()
        why = f"cancelled by {requester.name}" + (f": {reason}" if reason else "")
        async with self._lock(run.id):
            if not await self.tables.set_run(run.id, now, expect="running", status="cancelled", finished_at=iso(now),
                                             error=why):  # fmt: skip
                current = await self._require_run(run.id)
                raise StepConflict(f"{run.display_id} is already {current.status}; nothing to cancel")
            audit = audit_row(requester, "workflow-cancel", run.display_id, "allowed", {"reason": reason}, now)
            await self.tables.db.atomically(lambda conn: conn.execute(*audit))
            steps = await self.tables.steps(run.id)
            for step in steps:
                await self._cancel_step(run, step, why, requester)
            # What the steps' agents handed on (their chains) and is not sent yet stops too.
            trees = await self._delegation.trees([s.delegation_id for s in steps if s.delegation_id])
            for tree in trees.values():
                if len(tree) > 1:
                    await self._delegation.stop_chain(requester, tree[0], why)
        await self.tables.event(run.id, None, now, requester.name, "run_cancelled", {"reason": reason})
        for watch, task in list(self._watchers.items()):
            if watch[0] == run.id:
                task.cancel()
        await self._notify(run.id)
        return await self._require_run(run.id)

    async def _cancel_step(self, run: RunRow, step: StepRow, why: str, requester: Requester) -> None:
        now = self._clock()
        if step.status in ("pending", "dispatching", "waiting_approval"):
            moved = await self.tables.move(run.id, step.step_id, "cancel", now, actor=requester.name,
                                           finished_at=iso(now), error=why)  # fmt: skip
            found = await self._delegation.by_workflow_step(step.key) if step.status == "dispatching" else None
            if moved and found is not None:  # recorded by a dispatch under way (maybe in another process)
                await self._stop(run, step, found, why)
            return
        if step.status != "running" or step.delegation_id is None:
            return
        delegation = await self._delegation.get(step.delegation_id)
        told = await self._stop(run, step, delegation, why)
        note = why + (f"; {step.agent} was told to stop ({told})" if told else "")
        await self.tables.move(run.id, step.step_id, "cancel", now, actor=requester.name, finished_at=iso(now),
                               error=note)  # fmt: skip

    async def _stop(self, run: RunRow, step: StepRow, delegation: Delegation, why: str) -> str | None:
        """Its delegation expired if still queued, else its agent told to stop; the follow-up's D-n, if one."""
        if delegation.status == "queued" and await self._delegation.expire_queued(delegation.id, why):
            return None
        delegation = await self._delegation.get(delegation.id)
        if delegation.status in ("accepted", "sending", "queued"):
            return await self._tell_to_stop(run, step, delegation, why)
        return None

    async def _tell_to_stop(self, run: RunRow, step: StepRow, delegation: Delegation, why: str) -> str | None:
        message = (
            f"Stop work on {run.display_id}/{step.step_id} ({run.workflow}, {delegation.display_id}): the workflow run "
            f"was {why}. Do not post a result for it."
        )
        try:
            result = await self._delegation.delegate(
                self._starter(run), delegation.agent, message, deliver=False, workflow_step=f"{step.key}/stop"
            )
        except DuplicateWorkflowStep:
            found = await self._delegation.by_workflow_step(f"{step.key}/stop")
            return found.display_id if found else None
        except AtomizerError as exc:
            log.warning("W-%d/%s: could not tell %s to stop: %s", run.id, step.step_id, delegation.agent, exc)
            return None
        return result.delegation.display_id if result.delegation else None

    async def retry(self, requester: Requester, run_ref: str | int, *, from_step: str | None = None) -> RunRow:
        """Run again from a step (default: the failed, timed-out, unconfirmed ones) and everything after it;
        succeeded steps not downstream keep their outputs."""
        run = await self._require_run(run_ref)
        self._may_steer(requester, run, "retry")
        definition = run.definition
        steps = {s.step_id: s for s in await self.tables.steps(run.id)}
        if from_step is not None:
            await self._require_step(run, from_step)
            roots = {from_step}
        else:
            roots = {s.step_id for s in steps.values() if s.status in DONE_BADLY | {"skipped"}}
            if not roots:
                raise StepConflict(
                    f"{run.display_id}: no step failed, timed out, is unconfirmed or was skipped; "
                    "name one to run again with --from STEP"
                )
        targets = _downstream(definition, roots)
        busy = [s for s in targets if steps[s].status in ("running", "dispatching")]
        if busy:
            step = steps[busy[0]]
            raise StepConflict(
                f"{run.display_id}/{step.step_id} is still {step.status}"
                + (f" (D-{step.delegation_id})" if step.delegation_id else "")
                + ": report its result or cancel the run before running it again"
            )
        now = self._clock()
        resets = [s for s in targets if steps[s].status != "pending"]
        cleared = {"output": None, "output_source": None, "evidence": None, "delegation_id": None,
                   "deadline_at": None, "finished_at": None, "error": None, "started_at": None}  # fmt: skip

        def work(conn: Any) -> None:
            for step_id in resets:
                conn.execute(*move_statement(run.id, step_id, "reset", now, cleared))
                conn.execute("DELETE FROM workflow_approvals WHERE run_id = ? AND step_id = ?", (run.id, step_id))
            conn.execute(
                "UPDATE workflow_runs SET status = 'running', finished_at = NULL, error = NULL, updated_at = ? "
                "WHERE id = ?",
                (iso(now), run.id),
            )
            conn.execute(*event_statement(run.id, None, now, requester.name, "retry", {"steps": sorted(targets)}))
            conn.execute(*audit_row(requester, "workflow-retry", run.display_id, "allowed",
                                    {"from": from_step, "steps": sorted(targets)}, now))  # fmt: skip

        async with self._lock(run.id):
            await self.tables.db.atomically(work)
        await self._notify(run.id)
        await self.advance(run.id)
        return await self._require_run(run.id)

    # --- timers and recovery --------------------------------------------------------------------

    async def tick(self, *, run_id: int | None = None) -> None:
        """Deadlines, approval expiries, completion grace, delegations that changed; then advance what moved.
        `run_id`: only that run's (`delegate --wait-result` follows its own run, the bot all of them)."""
        now = self._clock()
        moved: set[int] = set()
        runs: dict[int, RunRow | None] = {}

        async def run_of(run_id: int) -> RunRow | None:
            if run_id not in runs:
                runs[run_id] = await self.tables.run(run_id)
            return runs[run_id]

        for step in await self.tables.steps_in(("running", "waiting_approval", "dispatching")):
            run = await run_of(step.run_id) if run_id in (None, step.run_id) else None
            if run is None:
                continue
            if step.status == "dispatching":
                if step.key not in self._dispatching:  # no dispatch of ours under way: not stuck for long
                    seen = self._dispatching_seen.setdefault(step.key, now)
                    if (now - seen).total_seconds() >= DISPATCH_RETRY_S:
                        del self._dispatching_seen[step.key]
                        await self._redispatch_stale(run, step)
                        moved.add(run.id)
                continue
            self._dispatching_seen.pop(step.key, None)
            deadline = datetime.fromisoformat(step.deadline_at) if step.deadline_at else None
            if step.status == "waiting_approval":
                if deadline is not None and now >= deadline and run.status == "running":
                    await self._expire_gate(run, step)
                    moved.add(run.id)
                continue
            if deadline is not None and now >= deadline:
                await self._deadline(run, step)
                moved.add(run.id)
                continue
            if self._answer_done(step, now):
                await self._end_step(run.id, step.step_id, "succeed", None, output=step.output or "",
                                     output_source=step.evidence.get("answer_source", "discord"),
                                     attempt=step.attempt)  # fmt: skip
                moved.add(run.id)
                continue
            completed_at = step.evidence.get("completed_at")
            if (
                completed_at
                and not step.evidence.get("last_output_at")
                and now >= datetime.fromisoformat(completed_at) + timedelta(seconds=self.output_grace_s)
            ):
                why = (
                    f"the gateway reported the run ok, but no output reached atomizer-hq within "
                    f"{self.output_grace_s:g} s; succeeded with an empty output"
                )
                await self.tables.event(run.id, step.step_id, now, "atomizer-hq", "no_output", {"why": why})
                await self._end_step(
                    run.id, step.step_id, "succeed", None, output="", output_source="completion", attempt=step.attempt
                )
                moved.add(run.id)
                continue
            await self._still_attached(step, now)
            before = step.status
            await self._sync(run, step)
            after = await self.tables.step(step.run_id, step.step_id)
            if after is not None and after.status != before:
                moved.add(run.id)
        # Runs where nothing is under way may have steps ready (a step ended by a watcher, another process, or a
        # crash between an end and its advance): advance is cheap when nothing is ready.
        moved.update(r for r in await self.tables.idle_run_ids() if run_id in (None, r))
        for moved_id in sorted(moved):
            await self.advance(moved_id)

    async def _deadline(self, run: RunRow, step: StepRow) -> None:
        spec = run.definition.step(step.step_id)
        timeout = f"timeout {spec.timeout_s:g} s" if isinstance(spec, AgentStep) else "deadline"
        delegation = await self._delegation.get(step.delegation_id) if step.delegation_id else None
        if delegation is not None and delegation.status == "queued":
            if await self._delegation.expire_queued(delegation.id, f"{step.key} timed out before it was sent"):
                await self._end_step(
                    run.id,
                    step.step_id,
                    "time_out",
                    f"{step.agent} never admitted {delegation.display_id} before the {timeout}",
                    attempt=step.attempt,
                )
                return
        if delegation is not None and delegation.status == "failed":
            await self._end_step(
                run.id,
                step.step_id,
                "fail",
                f"{delegation.display_id} failed: {delegation.last_error}",
                attempt=step.attempt,
            )
            return
        await self._end_step(run.id, step.step_id, "unconfirm",
                             f"no result by the deadline ({timeout}) although {step.agent} admitted "
                             f"{delegation.display_id if delegation else 'it'}: check the agent's work, then report "
                             f"the result or retry", attempt=step.attempt)  # fmt: skip

    async def _redispatch_stale(self, run: RunRow, step: StepRow) -> None:
        """A step left `dispatching` (a crash, a database failure): dispatched exactly once (the delegation of the
        attempt adopted if it exists); in a run that ended meanwhile, cancelled, its delegation stopped."""
        spec = run.definition.step(step.step_id)
        assert isinstance(spec, AgentStep)
        if run.status == "running":
            await self._dispatch_safely(run, spec, step.attempt)
            return
        why = f"the run is {run.status}; not dispatched"
        found = await self._delegation.by_workflow_step(step.key)
        told = await self._stop(run, step, found, why) if found is not None else None
        now = self._clock()
        await self.tables.move(run.id, step.step_id, "cancel", now, actor="atomizer-hq", finished_at=iso(now),
                               error=why + (f"; {step.agent} was told to stop ({told})" if told else ""))  # fmt: skip

    async def recover(self) -> None:
        """On start: finish `dispatching` steps exactly once, follow running ones again, dispatch what is due."""
        for step in await self.tables.steps_in(("dispatching",)):
            run = await self.tables.run(step.run_id)
            if run is not None:
                await self._redispatch_stale(run, step)
        for step in await self.tables.steps_in(("running",)):
            run = await self.tables.run(step.run_id)
            if run is not None:
                await self._sync(run, step)
        for run_id in await self.tables.running_run_ids():
            await self.advance(run_id)


# --- the DAG --------------------------------------------------------------------------------------


def _task_number(ref: str) -> int | None:
    try:
        return parse_task_id(ref)
    except InvalidInput:
        return None


def _met(definition: WorkflowDefinition, step: StepRow) -> bool:
    """Done in a way that lets the steps after it run."""
    if step.status in DONE_OK or step.status == "skipped":
        return True
    return step.status in DONE_BADLY and definition.step(step.step_id).on_failure == "continue"


def _downstream(definition: WorkflowDefinition, roots: set[str]) -> set[str]:
    found = set(roots)
    changed = True
    while changed:
        changed = False
        for step in definition.steps:
            if step.id not in found and found.intersection(step.needs):
                found.add(step.id)
                changed = True
    return found


def _step_ref(step_id: str, attempt: int | None) -> tuple[str, int | None]:
    """`mesh#2` -> ("mesh", 2): the step as the hook's message names one attempt of it."""
    name, mark, number = step_id.partition("#")
    if not mark:
        return step_id, attempt
    if not (number.isascii() and number.isdigit()) or len(number) > 9:
        raise InvalidInput(f"{step_id!r} is not a step; write it as mesh or mesh#2 (the step and its attempt)")
    if attempt is not None and attempt != int(number):
        raise InvalidInput(f"{step_id!r} names attempt {number}, but the attempt given is {attempt}")
    return name, int(number)


def step_footer(key: str) -> str:
    """What the agent reads under its step's message: which attempt it works on, and how to report its result."""
    run, _, step = key.partition("/")
    return (
        f"\n\n(atomizer-hq workflow step {key}; report its result with: scripts/step-result.sh {run} {step} ok "
        '"<output>"  or  ... failed "<why>")'
    )


def _since(step: StepRow) -> str:
    return f" since {step.finished_at[:19]} UTC" if step.finished_at else ""


def _why_no_result(status: str) -> str:
    if status in ("pending", "dispatching"):
        return "it has not been sent yet; a result is taken once it runs"
    if status in ("succeeded", "failed"):
        return "it has a result already; to run it again: atomizer-hq workflow retry … --from STEP"
    return "a result is taken only while it runs (or is unconfirmed or timed out)"


def _expired_at_click(where: str, deadline_at: str, spec: ApprovalStep, evidence: dict[str, Any]) -> str:
    approval = spec.approval
    if approval.on_expire == "approve":
        then = "its policy approves it (on_expire: approve)"
    elif approval.on_expire == "escalate" and not evidence.get("escalated"):
        then = (f"it goes to {describe_approvers(list(approval.escalate_to))}, who may decide until a new deadline "
                "(on_expire: escalate)")  # fmt: skip
    else:
        then = "it is rejected as expired (on_expire: reject)" if approval.on_expire == "reject" else (
            "its escalation expired too: it is rejected as expired")  # fmt: skip
    return f"{where} expired at {deadline_at[:19]} UTC with no decision: {then}; this decision was not taken"


def _gate_ended(conn: Any, run_id: int, step_id: str, where: str, current: Any) -> str:
    status = current["status"]
    at = f" at {current['finished_at'][:19]} UTC" if current["finished_at"] else ""
    evidence = json.loads(current["evidence"]) if current["evidence"] else {}
    if status in ("approved", "rejected"):
        if evidence.get("resolved_by") == "expiry":
            return f"{where} was approved{at} by its expiry policy (on_expire: approve)"
        decision = "approve" if status == "approved" else "reject"
        names = [row[0] for row in conn.execute(
            "SELECT approver_name FROM workflow_approvals WHERE run_id = ? AND step_id = ? AND decision = ? "
            "ORDER BY id", (run_id, step_id, decision)
        ).fetchall()]  # fmt: skip
        by = f" by {', '.join(names)}" if names else ""
        return f"{where} was already {status}{by}{at}"
    if status == "expired":
        return f"{where} expired{at} with no decision (on_expire: reject)"
    if status == "pending":
        return f"{where} is not open for approval yet: it waits for the steps before it"
    return f"{where} is {status}{at}; it takes no decision"


__all__ = [
    "OUTPUT_GRACE_S",
    "OUTPUT_QUIET_S",
    "ApprovalOutcome",
    "RunDetail",
    "StepConflict",
    "UnknownRun",
    "UnknownStep",
    "WorkflowEngine",
    "describe_approvers",
]
