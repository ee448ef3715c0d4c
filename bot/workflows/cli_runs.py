"""`atomizer-hq workflow run|show|runs|cancel|approve|reject|retry|result`: the runs' side of the CLI.

The CLI talks to the same database as `atomizer-hq run`. It records and dispatches on its own (like
`delegate`), but what happens after dispatch (9.6 completions, deadlines, approval expiries, the
outbox's retries) needs a running `atomizer-hq run`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.authz import Requester, host_operator
from bot.chain_view import sub_delegation_lines
from bot.config import ClusterConfig
from bot.errors import InvalidInput
from bot.workflows.definition import WorkflowDefinition
from bot.workflows.store import FINAL, RunRow, StepRow

if TYPE_CHECKING:  # the services (aiohttp, the scheduler) are imported when a command runs, not to parse one
    from bot.services import Services
    from bot.settings import Settings
    from bot.workflows.engine import RunDetail

WAIT_RAN_OUT = 3  # as `delegate --wait`: still running when the wait ended
PROGRESS_NOTE = (
    "note: completions, deadlines and approval expiries are followed by `atomizer-hq run`; without it the run "
    "stays as it is now"
)


def add_run_commands(actions: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the run actions to the `workflow` command's subparsers.

    Each sets `handler` (the CLI's dispatch) and `action_handler` (bot/workflows/cli.py's), so it works
    under either `workflow` parser.
    """

    def action(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = actions.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(handler=cmd_workflow, action_handler=cmd_workflow, workflow_action=name)
        return sub

    run = action("run", "start a run of a workflow: inputs checked, authority for every step, roots dispatched")
    run.add_argument("name", nargs="?", help="the workflow's name in the catalog")
    run.add_argument("--definition", type=Path, metavar="FILE", help="a definition as JSON instead of a name")
    run.add_argument("--input", action="append", default=[], metavar="K=V", help="an input; repeatable")
    run.add_argument("--as", dest="as_agent", metavar="AGENT", help="start it for an agent, under its authority")
    run.add_argument("--json", action="store_true", help="one JSON document on stdout")
    show = action("show", "one run: its steps, outputs, approvals and events")
    show.add_argument("run")
    show.add_argument("--json", action="store_true", help="one JSON document on stdout")
    runs = action("runs", "recent runs, newest first")
    runs.add_argument("--status", choices=("running", "succeeded", "failed", "cancelled"))
    runs.add_argument("--limit", type=int, default=20)
    runs.add_argument("--json", action="store_true", help="one JSON document on stdout")
    cancel = action("cancel", "cancel a run: pending steps cancelled, running agents told to stop")
    cancel.add_argument("run")
    cancel.add_argument("--reason")
    for name, help_text in (("approve", "approve an approval gate"), ("reject", "reject an approval gate")):
        gate = action(name, help_text)
        gate.add_argument("run")
        gate.add_argument("step")
        gate.add_argument("--reason", help="why (required to reject: the starter needs to know what to change)")
    retry = action("retry", "run again from a step (default: the failed, timed-out, unconfirmed ones)")
    retry.add_argument("run")
    retry.add_argument("--from", dest="from_step", metavar="STEP")
    result = action("result", "report a step's result by hand (as the host's operator, or --as its agent)")
    result.add_argument("run")
    result.add_argument("step", help="the step, or one attempt of it as the hook's message names it: mesh#2")
    verdict = result.add_mutually_exclusive_group(required=True)
    verdict.add_argument("--ok", dest="ok", action="store_true", help="the step succeeded")
    verdict.add_argument("--failed", dest="failed", action="store_true", help="the step failed")
    result.add_argument("output", help="the step's output (or what went wrong)")
    result.add_argument("--as", dest="as_agent", metavar="AGENT", help="report it as the step's agent")


def _requester(args: argparse.Namespace, config: ClusterConfig) -> Requester:
    requester = host_operator()
    if getattr(args, "as_agent", None):
        requester = requester.acting_as(args.as_agent, config)
    return requester


def _definition(args: argparse.Namespace) -> WorkflowDefinition | str:
    if args.definition is not None:
        try:
            text = args.definition.read_text(encoding="utf-8")
        except OSError as exc:
            raise InvalidInput(f"cannot read {args.definition}: {exc.strerror}") from None
        try:
            return WorkflowDefinition.model_validate_json(text)
        except ValueError as exc:
            raise InvalidInput(f"{args.definition}: not a workflow definition: {str(exc).splitlines()[0]}") from None
    if not args.name:
        raise InvalidInput("name the workflow to run (atomizer-hq workflow list), or give --definition FILE")
    return str(args.name)


async def cmd_workflow(args: argparse.Namespace) -> int:
    from bot.cli import load_context
    from bot.services import open_services

    settings, config = load_context(args)
    async with open_services(settings, config) as services:
        return await run_action(args, settings, config, services)


async def run_action(args: argparse.Namespace, settings: Settings, config: ClusterConfig, services: Services) -> int:
    engine = services.workflows
    action = args.workflow_action
    requester = _requester(args, config)
    if action == "run":
        from bot.workflows.cli import parse_inputs

        inputs = parse_inputs(args.input)
        run = await engine.start(requester, _definition(args), inputs, origin=None)
        detail = await engine.get(run.id)
        print_detail(detail, as_json=args.json)
        print(PROGRESS_NOTE, file=sys.stderr)
        return 0 if detail.run.status != "failed" else 1
    if action == "show":
        print_detail(await engine.get(args.run), as_json=args.json)
        return 0
    if action == "runs":
        runs = await engine.runs(status=args.status, limit=args.limit)
        if args.json:
            print(json.dumps([_run_summary(run) for run in runs], indent=2, ensure_ascii=False))
        else:
            for run in runs:
                print(_run_line(run))
            if not runs:
                print("no workflow runs")
        return 0
    if action == "cancel":
        run = await engine.cancel(requester, args.run, reason=args.reason)
        print(f"{run.display_id} cancelled")
        return 0
    if action in ("approve", "reject"):
        outcome = await engine.approve(requester, args.run, args.step, approve=action == "approve", reason=args.reason)
        state = outcome.status if outcome.decided else f"{outcome.approvals} of {outcome.quorum} approvals"
        print(f"{args.run.upper()}/{args.step}: {action}d by you; the gate is {state}")
        return 0
    if action == "retry":
        run = await engine.retry(requester, args.run, from_step=args.from_step)
        print_detail(await engine.get(run.id), as_json=False)
        print(PROGRESS_NOTE, file=sys.stderr)
        return 0
    if action == "result":
        source = "api" if requester.is_agent else "person"
        step = await engine.report_result(requester, args.run, args.step, ok=args.ok, output=args.output,
                                          source=source)  # fmt: skip
        print(f"W-{step.run_id}/{step.step_id}: {step.status}")
        return 0
    raise InvalidInput(f"unknown workflow action {action!r}")  # pragma: no cover - argparse checks it


def _run_summary(run: RunRow) -> dict[str, Any]:
    return {
        "id": run.display_id,
        "workflow": run.workflow,
        "status": run.status,
        "starter": run.starter,
        "created_at": run.created_at,
        "finished_at": run.finished_at,
        "error": run.error,
    }


def _run_line(run: RunRow) -> str:
    when = run.created_at[:19].replace("T", " ")
    error = f"  {run.error}" if run.error else ""
    return f"{run.display_id:<6} {run.workflow:<24} {run.status:<10} {run.starter:<16} {when} UTC{error}"


def _step_line(step: StepRow) -> str:
    who = step.agent or "approval"
    line = f"  {step.step_id:<12} {who:<14} {step.status:<16}"
    if step.delegation_id:
        line += f" D-{step.delegation_id}"
    if step.output:
        first = step.output.strip().splitlines()[0] if step.output.strip() else ""
        line += f"  → {first[:80]}"
    if step.error:
        line += f"  ({step.error[:160]})"
    return line


def print_detail(detail: RunDetail, *, as_json: bool) -> None:
    if as_json:
        print(json.dumps(detail.to_dict(), indent=2, ensure_ascii=False))
        return
    run = detail.run
    print(f"{run.display_id} {run.workflow}: {detail.shown_status} (started by {run.starter})")
    order = {step_id: i for i, step_id in enumerate(run.definition.step_ids)}
    for step in sorted(detail.steps, key=lambda s: order.get(s.step_id, 0)):
        print(_step_line(step))
        if why := detail.routed(step):
            print(f"    routed: {why}")
        for approval in (a for a in detail.approvals if a.step_id == step.step_id):
            decision = {"approve": "approved", "reject": "rejected"}.get(approval.decision, approval.decision)
            reason = f": {approval.reason}" if approval.reason else ""
            print(f"    {decision} by {approval.approver_name} ({approval.front_end}, {approval.at[:19]} UTC){reason}")
        more = f" (atomizer-hq delegations show D-{step.delegation_id})"
        for line in sub_delegation_lines(detail.sub_delegations(step), limit=20, more=more):
            print(f"    {line}")
    if run.error:
        print(f"  {run.error}")


# --- `delegate AGENT MESSAGE --wait-result`: a one-step run -----------------------------------------


def one_step(agent: str, *, wait_s: float, deliver_to: str) -> WorkflowDefinition:
    """The message goes in as an input, so `${{` in it is text, not a template."""
    return WorkflowDefinition.model_validate(
        {
            "name": "delegate",
            "description": f"One delegation to {agent}, waiting for its result.",
            "inputs": {"message": {"type": "string"}},
            "deliver_to": deliver_to,
            "steps": [{"id": "work", "agent": agent, "message": "${{ inputs.message }}", "timeout": wait_s}],
        }
    )


async def delegate_and_wait(
    services: Services, requester: Requester, agent: str, message: str, *, wait_s: float, to: str | None, deliver: bool
) -> tuple[RunRow, StepRow]:
    """Start the one-step run, then follow it here until its result or the end of the wait: only this run (its
    timers, and its delegation's retries when due); the other runs and the outbox are `atomizer-hq run`'s.

    `to` is any target `delegate --to` takes: it is the run's origin, where a run without a thread delivers.
    """
    engine = services.workflows
    name = services.config.require_agent(agent).name
    definition = one_step(name, wait_s=wait_s, deliver_to="thread" if deliver else "none")
    run = await engine.start(requester, definition, {"message": message}, origin=to)
    loop = asyncio.get_running_loop()
    end = loop.time() + wait_s
    while True:
        step = await engine.wait_step(run.id, "work", timeout=0.0)
        if step.status == "running" and step.delegation_id is not None:
            await services.delegation.send_if_due(step.delegation_id)
        await engine.tick(run_id=run.id)
        step = await engine.wait_step(run.id, "work", timeout=max(0.0, min(1.0, end - loop.time())))
        if step.status in FINAL or loop.time() >= end:
            return run, step
