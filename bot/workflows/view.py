"""A run as people read it: the live card in its Discord thread and `/workflow show` (Discord-agnostic).

Times are Discord timestamps (`<t:unix:R>`), which every client renders relative to its own now, so the
card's text changes only when the run does: a redraw of an unchanged run costs no edit.
"""

from __future__ import annotations

from datetime import datetime

from bot.boards import BoardContent, BoardField, clip, paginate
from bot.chain_view import sub_delegation_lines
from bot.workflows.approvals import describe_approvers
from bot.workflows.definition import AgentStep, ApprovalStep
from bot.workflows.engine import RunDetail
from bot.workflows.plan import span
from bot.workflows.store import StepRow
from bot.workflows.templating import render

PROMPT_MAX = 1500  # the gate's prompt on the card (it may carry a whole upstream output)
OUTPUT_MAX = 300  # an output's start on the card
STATUS_ICON = {
    "pending": "⏳", "dispatching": "📤", "running": "🔄", "succeeded": "✅", "failed": "❌", "timed_out": "⌛",
    "unconfirmed": "❓", "cancelled": "🚫", "skipped": "⏭️", "waiting_approval": "🗳️", "approved": "✅",
    "rejected": "⛔", "expired": "⌛",
}  # fmt: skip
RUN_COLOUR = {"running": 0x3498DB, "waiting": 0xF1C40F, "succeeded": 0x2ECC71, "failed": 0xE74C3C,
              "cancelled": 0x95A5A6}  # fmt: skip


def stamp(iso_text: str | None, style: str = "R") -> str:
    if not iso_text:
        return "?"
    return f"<t:{int(datetime.fromisoformat(iso_text).timestamp())}:{style}>"


def one_line(text: str, limit: int) -> str:
    return clip(" ".join(text.split()), limit)


def _agent_field(detail: RunDetail, step: StepRow, spec: AgentStep) -> str:
    parts = [f"**{step.status.replace('_', ' ')}**", f"timeout {span(spec.timeout_s)}"]
    if step.status in ("running", "dispatching") and step.started_at:
        parts.append(f"started {stamp(step.started_at)}")
        if step.deadline_at:
            parts.append(f"deadline {stamp(step.deadline_at, 't')}")
    elif step.finished_at and step.started_at:
        took = datetime.fromisoformat(step.finished_at) - datetime.fromisoformat(step.started_at)
        parts.append(f"took {span(max(took.total_seconds(), 0))}")
    if spec.retries or step.attempt > 1:
        parts.append(f"attempt {max(step.attempt, 1)} of {spec.retries + 1}")
    if step.delegation_id:
        parts.append(f"D-{step.delegation_id}")
    lines = [" · ".join(parts)]
    if step.output and step.status == "succeeded":
        lines.append(f"output ({step.output_source or '?'}): {one_line(step.output, OUTPUT_MAX)}")
    elif step.status == "running" and step.evidence.get("messages"):
        lines.append(f"answering: {step.evidence['messages']} message(s) so far")
    if step.error and step.status not in ("succeeded",):
        lines.append(one_line(step.error, 300))
    if sub := detail.sub_delegations(step):
        lines += sub_delegation_lines(sub, more=f" (/delegations show D-{step.delegation_id})")
    return "\n".join(lines)


def _gate_field(detail: RunDetail, step: StepRow, spec: ApprovalStep) -> str:
    approvers = list(step.evidence.get("approvers") or spec.approval.approvers)
    decided = [a for a in detail.approvals if a.step_id == step.step_id]
    parts = [f"**{step.status.replace('_', ' ')}**"]
    if step.status == "waiting_approval":
        approvals = sum(1 for a in decided if a.decision == "approve")
        parts.append(f"{approvals}/{spec.approval.quorum} approvals")
        parts.append(f"expires {stamp(step.deadline_at)} → {spec.approval.on_expire}")
    lines = [" · ".join(parts), f"who may: {describe_approvers(approvers)}"]
    if not spec.approval.starter_may_approve:
        lines[-1] += ", not the starter"
    for approval in decided:
        reason = f": {one_line(approval.reason, 200)}" if approval.reason else ""
        decision = {"approve": "approved", "reject": "rejected"}.get(approval.decision, approval.decision)
        lines.append(f"{decision} by {one_line(approval.approver_name, 80)}{reason}")
    if step.evidence.get("resolved_by") == "expiry":
        lines.append("approved by its expiry policy")
    elif step.status == "expired" and step.error:
        lines.append(one_line(step.error, 300))
    return "\n".join(lines)


def run_card(detail: RunDetail) -> list[BoardContent]:
    """The run's card: its status, each step with its state, agent, times, retries and decisions."""
    run = detail.run
    shown = detail.shown_status
    order = {step_id: i for i, step_id in enumerate(run.definition.step_ids)}
    fields: list[BoardField] = []
    prompts: list[str] = []
    for step in sorted(detail.steps, key=lambda s: order.get(s.step_id, 0)):
        spec = run.definition.step(step.step_id)
        icon = STATUS_ICON.get(step.status, "")
        if isinstance(spec, AgentStep):
            routed = f"route: {', '.join(spec.route.needs)}" if spec.route is not None else ""
            who = step.agent or spec.agent or routed
            name = f"{icon} {step.step_id} · {who}" + (f" ({routed})" if routed and step.agent else "")
            value = _agent_field(detail, step, spec)
        else:
            name = f"{icon} {step.step_id} · approval"
            value = _gate_field(detail, step, spec)
            if step.status == "waiting_approval":
                prompts.append(f"**{step.step_id}**: {_prompt(detail, spec)}")
        fields.append(BoardField(name, value))
    inputs = ", ".join(f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in run.inputs.items())
    lines = [f"started by {run.starter} ({run.front_end}) {stamp(run.created_at)}"]
    if inputs:
        lines.append(f"inputs: {one_line(inputs, 500)}")
    if run.error:
        lines.append(one_line(run.error, 500))
    lines += [clip(prompt, PROMPT_MAX) for prompt in prompts]
    return paginate(
        f"{run.display_id} · {run.workflow} · {shown}",
        fields,
        description="\n".join(lines),
        footer=f"/workflow show run:{run.display_id}",
        colour=RUN_COLOUR.get(shown),
    )


def _prompt(detail: RunDetail, spec: ApprovalStep) -> str:
    outputs = {step.step_id: step.output for step in detail.steps}
    try:
        return render(spec.approval.prompt, detail.run.inputs, outputs)
    except Exception:  # a prompt that cannot be rendered still shows, as written
        return spec.approval.prompt


def waiting_gates(detail: RunDetail) -> list[str]:
    """The gates open for a decision now, in the definition's order (the card's buttons)."""
    if detail.run.status != "running":
        return []
    order = {step_id: i for i, step_id in enumerate(detail.run.definition.step_ids)}
    gates = [s for s in detail.steps if s.status == "waiting_approval"]
    return [s.step_id for s in sorted(gates, key=lambda s: order.get(s.step_id, 0))]
