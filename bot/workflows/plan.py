"""Validate and plan a workflow before anything moves: the DAG in waves, authority per hop, body sizes.

Every check that needs the whole DAG or the cluster lives here (the models check one field at a time).
A plan never stops at the first problem: `problems` lists them all, one `file:line: key: what; fix` each.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from bot.authz import Requester
from bot.config import CHANNEL_ROLES, HOOK_BODY_LIMIT, ClusterConfig
from bot.delegation import authorize
from bot.errors import UnknownAgent
from bot.gateway import AgentHook, encode_body
from bot.routing.capabilities import closest
from bot.routing.router import authority_of
from bot.workflows.definition import OUTPUT_CAP, AgentStep, ApprovalStep, WorkflowDefinition
from bot.workflows.loader import LoadedWorkflow, Loc, locate
from bot.workflows.templating import references, render

# The worst case a message is sized at. An upstream output is cut at OUTPUT_CAP characters before it is
# passed on; each character counted as 4 bytes of UTF-8 (an emoji, the widest text there is). The hook is
# sized as the engine sends it at its longest: its name with a 9-digit run id and attempt, delivered to a
# thread (`channel:` and a 20-digit id), waiting for completion with a timeout.
WORST_CHAR = "\U0001f4a5"
WORST_RUN_LABEL = "W-999999999/{step}#9"
WORST_TARGET = "channel:" + "9" * 20
_CHANNEL_TARGET = re.compile(r"^channel:\d{17,20}$")


@dataclass(frozen=True)
class PlannedStep:
    """One step as the plan shows it."""

    id: str
    kind: str  # agent | approval
    wave: int | None  # 1-based; None when it cannot run (in or after a cycle)
    needs: tuple[str, ...]
    agent: str | None = None
    timeout_s: float | None = None
    retries: int = 0
    on_failure: str = "fail"
    approvers: tuple[str, ...] = ()
    quorum: int | None = None
    expires_in_s: float | None = None
    on_expire: str | None = None
    escalate_to: tuple[str, ...] = ()
    route: tuple[str, ...] = ()  # a routed step's capabilities (its agent is chosen at dispatch)
    candidates: tuple[str, ...] = ()  # the agents that have them (and that the starter may delegate to, in a plan)
    allowed: bool | None = None  # None: authority not checked (validate, or an unknown agent)
    authority: str | None = None  # the decision's text, as /delegate would give it
    body_bytes: int | None = None  # the hook body at its worst case (agent steps)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Plan:
    """What a run would do, and every reason it would be refused."""

    workflow: str
    description: str
    starter: str | None  # Requester.describe(); None for a validation without a starter
    inputs: dict[str, str | int | float | bool]
    steps: list[PlannedStep]
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def waves(self) -> list[list[str]]:
        count = max((s.wave for s in self.steps if s.wave is not None), default=0)
        return [[s.id for s in self.steps if s.wave == wave] for wave in range(1, count + 1)]

    def step(self, step_id: str) -> PlannedStep:
        return next(s for s in self.steps if s.id == step_id)

    def to_dict(self) -> dict[str, Any]:
        return {
            "workflow": self.workflow,
            "description": self.description,
            "starter": self.starter,
            "inputs": self.inputs,
            "waves": self.waves,
            "steps": [s.to_dict() for s in self.steps],
            "ok": self.ok,
            "problems": self.problems,
        }

    def render_text(self) -> str:
        """The DAG in waves, one step a line (docs/workflows-design.md); the problems are not part of it."""
        started = f", started by {self.starter}" if self.starter else ""
        lines = [f"{self.workflow}  ({len(self.steps)} steps{started})"]
        rows: list[list[str]] = []
        for number, wave in enumerate(self.waves, start=1):
            for index, step_id in enumerate(wave):
                rows.append([f"wave {number}" if index == 0 else "", *_columns(self.step(step_id))])
        unplaced = [s for s in self.steps if s.wave is None]
        for index, step in enumerate(unplaced):
            rows.append(["cannot run" if index == 0 else "", *_columns(step)])
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))] if rows else []
        for row in rows:
            cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=True)]
            lines.append("  ".join(cells).rstrip())
        return "\n".join(lines)


def _columns(step: PlannedStep) -> list[str]:
    needs = f"needs {', '.join(step.needs)}" if step.needs else ""
    if step.kind == "approval":
        who = ", ".join(a.removeprefix("role:") for a in step.approvers)
        expiry = f"{who} ×{step.quorum}, expires {span(step.expires_in_s or 0)} → {step.on_expire}"
        if step.on_expire == "escalate":
            expiry += f" to {', '.join(step.escalate_to)}"
        return [step.id, "approval", expiry, needs, ""]
    timing = f"timeout {span(step.timeout_s or 0)}"
    if step.retries:
        timing += f", {step.retries} {'retry' if step.retries == 1 else 'retries'}"
    decision = ""
    if step.allowed is not None:
        decision = f"{'ok' if step.allowed else 'refused'}: {step.authority}"
    who = step.agent or f"route: {', '.join(step.route)}"
    return [step.id, who, timing, needs, decision]


def span(seconds: float) -> str:
    """2 h, 30 min, 1 h 30 min, 2 d: a definition's durations as they were probably written."""
    total = round(seconds)
    if total % 86_400 == 0 and total >= 2 * 86_400:
        return f"{total // 86_400} d"
    hours, rest = divmod(total, 3_600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{hours} h"] if hours else []
    parts += [f"{minutes} min"] if minutes else []
    parts += [f"{secs} s"] if secs or not parts else []
    return " ".join(parts)


# --- validate and plan ----------------------------------------------------------------------------


def validate(definition: WorkflowDefinition | LoadedWorkflow, config: ClusterConfig) -> Plan:
    """Every check but authority (no starter): inputs at their defaults, one without a default counted empty."""
    return _plan(definition, config, None, {}, require_inputs=False)


def plan(
    definition: WorkflowDefinition | LoadedWorkflow,
    config: ClusterConfig,
    requester: Requester,
    inputs: Mapping[str, Any] | None = None,
) -> Plan:
    """What a run started by `requester` with `inputs` would do; `problems` says what would refuse it."""
    return _plan(definition, config, requester, dict(inputs or {}), require_inputs=True)


def _plan(
    source: WorkflowDefinition | LoadedWorkflow,
    config: ClusterConfig,
    requester: Requester | None,
    given: dict[str, Any],
    *,
    require_inputs: bool,
) -> Plan:
    if isinstance(source, LoadedWorkflow):
        definition, file, lines = source.definition, source.file, source.lines
    else:
        definition, file, lines = source, None, {}

    def at(*loc: str | int) -> str:
        return locate(file, lines, loc)

    problems: list[str] = []
    values, input_problems = definition.check_inputs(given, require=require_inputs)
    problems += input_problems  # given on the command line (or the API), not written in the file
    index: dict[str, int] = {}  # each id's first step
    for i, step in enumerate(definition.steps):
        index.setdefault(step.id, i)
    problems += _duplicate_ids(definition, at)
    needs = _needs(definition, index, at, problems)
    waves, cycles = _waves(definition, needs)
    problems += _cycle_problems(definition, needs, waves, cycles, index, at)
    ancestors = _ancestors(definition, needs)
    problems += _deliver_to_problems(definition, config, at)

    planned: list[PlannedStep] = []
    for i, step in enumerate(definition.steps):
        problems += _template_problems(definition, i, step, ancestors[step.id], at)
        base = {"id": step.id, "kind": step.kind, "wave": waves.get(step.id), "needs": tuple(needs[step.id])}
        if isinstance(step, ApprovalStep):
            problems += _approver_problems(step, i, config, at)
            spec = step.approval
            planned.append(
                PlannedStep(
                    **base,
                    on_failure=step.on_failure,
                    approvers=tuple(spec.approvers),
                    quorum=spec.quorum,
                    expires_in_s=spec.expires_in_s,
                    on_expire=spec.on_expire,
                    escalate_to=tuple(spec.escalate_to),
                )
            )
            continue
        allowed = authority = None
        candidates: tuple[str, ...] = ()
        if step.route is not None:
            candidates, allowed, authority = _route_check(step, i, config, requester, ancestors[step.id], at,
                                                          problems)  # fmt: skip
        else:
            assert step.agent is not None
            known = True
            try:
                config.require_agent(step.agent)
            except UnknownAgent as exc:
                known = False
                problems.append(f"{at('steps', i, 'agent')}: {exc}")
            if known and requester is not None:
                decision = authorize(config, requester, step.agent)
                allowed, authority = decision.allowed, decision.reason
                if not decision.allowed:
                    problems.append(f"{at('steps', i, 'agent')}: step {step.id} would be refused: {decision.reason}")
        size = body_size(step, values, ancestors[step.id])
        if size is not None and size > HOOK_BODY_LIMIT:
            problems.append(
                f"{at('steps', i, 'message')}: step {step.id}'s request would be {size:,} bytes after templating, "
                f"{size - HOOK_BODY_LIMIT:,} over the gateways' {HOOK_BODY_LIMIT:,}-byte limit (each upstream output "
                f"counted at {OUTPUT_CAP:,} 4-byte characters); shorten the message or pass on fewer outputs"
            )
        planned.append(
            PlannedStep(
                **base,
                agent=step.agent,
                route=tuple(step.route.needs) if step.route is not None else (),
                candidates=candidates,
                timeout_s=step.timeout_s,
                retries=step.retries,
                on_failure=step.on_failure,
                allowed=allowed,
                authority=authority,
                body_bytes=size,
            )
        )
    return Plan(
        workflow=definition.name,
        description=definition.description,
        starter=requester.describe() if requester is not None else None,
        inputs=values,
        steps=planned,
        problems=problems,
    )


Where = Callable[..., str]  # at(*loc) -> "file:line: key"


def _route_check(
    step: AgentStep,
    i: int,
    config: ClusterConfig,
    requester: Requester | None,
    upstream: set[str],
    at: Where,
    problems: list[str],
) -> tuple[tuple[str, ...], bool | None, str | None]:
    """A routed step: its capabilities are declared, some agent has them all, the starter may delegate to one of
    them (which one is chosen at dispatch, when readiness and load are known), its affinity runs before it."""
    assert step.route is not None
    needs = step.route.needs
    declared = sorted({word for agent in config.agents for word in agent.capabilities})
    unknown = [need for need in needs if need not in declared]
    for need in unknown:
        guess = closest(need, declared)
        hint = f" Did you mean {guess!r}?" if guess else ""
        problems.append(
            f"{at('steps', i, 'route', 'needs')}: no agent declares the capability {need!r}.{hint} "
            f"Declared: {', '.join(declared) or 'none'}"
        )
    affinity = step.route.affinity
    if affinity is not None and affinity not in upstream:
        problems.append(
            f"{at('steps', i, 'route', 'affinity')}: {affinity!r} does not run before {step.id}; affinity names an "
            f"earlier step (add it to needs: [{affinity}]) whose agent is preferred"
        )
    if unknown:
        return (), None, None
    capable = tuple(agent.name for agent in config.agents if set(needs) <= set(agent.capabilities))
    if not capable:
        problems.append(
            f"{at('steps', i, 'route', 'needs')}: no agent has all of {', '.join(needs)}; split the step, or declare "
            "the capabilities on one agent in the cluster file"
        )
        return (), None, None
    if requester is None:
        return capable, None, None
    rule = authority_of(config, requester)
    allowed = tuple(name for name in capable if rule(name) is None)
    if not allowed:
        why = "; ".join(filter(None, (rule(name) for name in capable)))
        problems.append(
            f"{at('steps', i, 'route')}: step {step.id} would be refused: no agent with {', '.join(needs)} may be "
            f"delegated to ({why})"
        )
        return capable, False, why
    return allowed, True, f"routed at dispatch among {', '.join(allowed)}"


def _duplicate_ids(definition: WorkflowDefinition, at: Where) -> list[str]:
    problems, first = [], {}
    for i, step in enumerate(definition.steps):
        if step.id in first:
            problems.append(
                f"{at('steps', i, 'id')}: duplicate step id {step.id!r} (also steps[{first[step.id]}]); "
                "every step needs its own id"
            )
        first.setdefault(step.id, i)
    return problems


def _needs(
    definition: WorkflowDefinition, index: dict[str, int], at: Where, problems: list[str]
) -> dict[str, list[str]]:
    """Each step's known needs (unknown ones reported and left out, so one typo does not cascade)."""
    needs: dict[str, list[str]] = {}
    for i, step in enumerate(definition.steps):
        known: list[str] = []
        for j, need in enumerate(step.needs):
            if need == step.id:
                problems.append(f"{at('steps', i, 'needs', j)}: {step.id} needs itself; remove it from needs")
            elif need not in index:
                close = difflib.get_close_matches(need, list(index), n=1, cutoff=0.6)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                problems.append(f"{at('steps', i, 'needs', j)}: unknown step {need!r}.{hint} Steps: {', '.join(index)}")
            elif need not in known:
                known.append(need)
        needs.setdefault(step.id, known)
    return needs


def _waves(definition: WorkflowDefinition, needs: dict[str, list[str]]) -> tuple[dict[str, int], list[list[str]]]:
    """Each placeable step's wave (1 + its latest need's), and the cycles that keep the others from running."""
    waves: dict[str, int] = {}
    pending = list(needs)
    while True:
        ready = [s for s in pending if all(n in waves for n in needs[s])]
        if not ready:
            break
        for step_id in ready:
            waves[step_id] = 1 + max((waves[n] for n in needs[step_id]), default=0)
        pending = [s for s in pending if s not in waves]
    return waves, _cycles({s: needs[s] for s in pending})


def _cycles(graph: dict[str, list[str]]) -> list[list[str]]:
    """One cycle per knot of the steps left unplaced, in run order (need first) from its earliest step.

    Linear in the size of the DAG (at most 200 steps): every knot is found by reachability, then one walk
    along its needs closes a cycle; enumerating every cycle could take exponential time.
    """
    order = list(graph)
    reach = {node: _reachable(graph, node) for node in order}
    cycles: list[list[str]] = []
    placed: set[str] = set()
    for node in order:
        if node in placed or node not in reach[node]:
            continue
        knot = {other for other in reach[node] if node in reach[other]}
        placed |= knot
        path = [node]
        while True:
            step = next(need for need in graph[path[-1]] if need in knot)
            if step in path:
                cycle = path[path.index(step) :]
                break
            path.append(step)
        run_order = list(reversed(cycle))  # walked along needs: reversed, it is the order the steps would run in
        pivot = run_order.index(min(run_order, key=order.index))
        cycles.append(run_order[pivot:] + run_order[:pivot])
    return cycles


def _reachable(graph: dict[str, list[str]], start: str) -> set[str]:
    """The steps `start` waits for, directly or not (itself only if it is in a cycle)."""
    seen: set[str] = set()
    stack = [need for need in graph.get(start, []) if need in graph]
    while stack:
        current = stack.pop()
        if current not in seen:
            seen.add(current)
            stack.extend(need for need in graph[current] if need in graph)
    return seen


def _cycle_problems(
    definition: WorkflowDefinition,
    needs: dict[str, list[str]],
    waves: dict[str, int],
    cycles: list[list[str]],
    index: dict[str, int],
    at: Where,
) -> list[str]:
    problems = []
    for cycle in cycles:
        problems.append(
            f"{at('steps', index[cycle[0]], 'needs')}: cycle {_arrow(cycle)}; remove one of these needs so the "
            "steps can run in order"
        )
    in_cycle = {step for cycle in cycles for step in cycle}
    unplaced = {step for step in needs if step not in waves}
    graph = {step: needs[step] for step in unplaced}
    for i, step in enumerate(definition.steps):
        if step.id in waves or step.id in in_cycle or i != index[step.id]:
            continue
        upstream = _reachable(graph, step.id)
        blocking = next((cycle for cycle in cycles if upstream.intersection(cycle)), None)
        after = f"the cycle {_arrow(blocking)}" if blocking else "a step that never runs"
        problems.append(f"{at('steps', i, 'needs')}: {step.id} is unreachable: it waits for {after}; break the cycle")
    return problems


def _arrow(cycle: list[str]) -> str:
    return " → ".join([*cycle, cycle[0]])


def _ancestors(definition: WorkflowDefinition, needs: dict[str, list[str]]) -> dict[str, set[str]]:
    """Every step upstream of each step (what its templates may refer to)."""
    result: dict[str, set[str]] = {}
    for step in definition.steps:
        seen: set[str] = set()
        stack = list(needs.get(step.id, []))
        while stack:
            current = stack.pop()
            if current not in seen:
                seen.add(current)
                stack.extend(needs.get(current, []))
        seen.discard(step.id)
        result.setdefault(step.id, seen)
    return result


def _template_problems(
    definition: WorkflowDefinition, i: int, step: AgentStep | ApprovalStep, upstream: set[str], at: Where
) -> list[str]:
    if isinstance(step, ApprovalStep):
        loc: Loc = ("steps", i, "approval", "prompt")
        template = step.approval.prompt
    else:
        loc, template = ("steps", i, "message"), step.message
    found = references(template)
    problems = []
    for name in sorted(found.inputs - set(definition.inputs)):
        known = ", ".join(definition.inputs) or "none (add an inputs: section)"
        close = difflib.get_close_matches(name, list(definition.inputs), n=1, cutoff=0.6)
        hint = f" Did you mean inputs.{close[0]}?" if close else ""
        problems.append(f"{at(*loc)}: ${{{{ inputs.{name} }}}}: no such input.{hint} Inputs: {known}")
    for ref in sorted(found.steps - upstream):
        if ref not in definition.step_ids:
            problems.append(
                f"{at(*loc)}: ${{{{ steps.{ref}.output }}}}: no step {ref!r}; steps: {', '.join(definition.step_ids)}"
            )
        else:
            problems.append(
                f"{at(*loc)}: ${{{{ steps.{ref}.output }}}}: {ref} does not run before {step.id}; "
                f"add it to needs (needs: [{ref}]) or remove the reference"
            )
    for text in found.malformed:
        problems.append(
            f"{at(*loc)}: {text!r} is not a reference; write ${{{{ inputs.NAME }}}} or ${{{{ steps.ID.output }}}}"
        )
    return problems


def _approver_problems(step: ApprovalStep, i: int, config: ClusterConfig, at: Where) -> list[str]:
    problems = []
    spec = step.approval
    for key, approvers in (("approvers", spec.approvers), ("escalate_to", spec.escalate_to)):
        for j, approver in enumerate(approvers):
            if approver.startswith("agent:") and config.agent(approver.removeprefix("agent:")) is None:
                name = approver.removeprefix("agent:")
                close = difflib.get_close_matches(name, config.agent_names, n=1, cutoff=0.5)
                hint = f" Did you mean agent:{close[0]}?" if close else ""
                problems.append(
                    f"{at('steps', i, 'approval', key, j)}: {approver}: no agent called {name!r}.{hint} "
                    f"Valid agents: {', '.join(config.agent_names)}"
                )
    users = [a for a in spec.approvers if a.startswith("user:")]
    if len(users) == len(spec.approvers) and spec.quorum > len(set(users)):
        problems.append(
            f"{at('steps', i, 'approval', 'quorum')}: quorum {spec.quorum} but only {len(set(users))} approver(s) "
            "named; lower the quorum or name more approvers"
        )
    return problems


def _deliver_to_problems(definition: WorkflowDefinition, config: ClusterConfig, at: Where) -> list[str]:
    places: list[tuple[Loc, str]] = [(("deliver_to",), definition.deliver_to)]
    places += [
        (("steps", i, "deliver_to"), step.deliver_to)
        for i, step in enumerate(definition.steps)
        if isinstance(step, AgentStep) and step.deliver_to is not None
    ]
    problems = []
    for loc, value in places:
        if value in ("thread", "none") or _CHANNEL_TARGET.match(value) or value in config.channels:
            continue
        roles = ", ".join(r for r in CHANNEL_ROLES if r in config.channels) or "none configured"
        problems.append(
            f"{at(*loc)}: {value!r} is not a place to deliver to; write thread, none, channel:<id> or a channel "
            f"role ({roles})"
        )
    return problems


def oversized_step(definition: WorkflowDefinition, inputs: Mapping[str, Any]) -> str | None:
    """Why a run with these (resolved) inputs would send a step more than the gateways take, or None: what `start`
    refuses before recording anything, as `plan` does (a 300 KB input filling a step's message)."""
    needs = {step.id: list(step.needs) for step in definition.steps}
    ancestors = _ancestors(definition, needs)
    for step in definition.steps:
        if not isinstance(step, AgentStep):
            continue
        size = body_size(step, inputs, ancestors[step.id])
        if size is not None and size > HOOK_BODY_LIMIT:
            filling = sorted(
                name for name in references(step.message).inputs if len(str(inputs.get(name, "")).encode()) > 1024
            )
            fix = f"shorten input {', '.join(filling)}" if filling else "shorten the message or pass on fewer outputs"
            return (
                f"{definition.name}: step {step.id}'s request would be {size:,} bytes after templating, "
                f"{size - HOOK_BODY_LIMIT:,} over the gateways' {HOOK_BODY_LIMIT:,}-byte limit; {fix} "
                "(or send a path to a file instead of its text)"
            )
    return None


def body_size(step: AgentStep, inputs: Mapping[str, Any], upstream: set[str]) -> int | None:
    """The step's hook body in bytes at its worst case (see WORST_CHAR); None if the message cannot be filled."""
    worst = WORST_CHAR * (OUTPUT_CAP + 1)  # over the cap: cut, with the note saying so
    outputs = {step_id: worst for step_id in upstream}
    filled = {name: value for name, value in inputs.items()}
    for name in references(step.message).inputs - set(filled):
        filled[name] = ""  # validate without a value for a required input: counted empty
    try:
        message = render(step.message, filled, outputs)
    except KeyError:  # an unknown reference, already reported
        return None
    hook = AgentHook(
        message=message.strip(),
        name=f"atomizer-hq {WORST_RUN_LABEL.format(step=step.id)}",
        deliver=True,
        channel="discord",
        to=WORST_TARGET,
        wait_for_completion=True,
        timeout_seconds=int(step.timeout_s),
    )
    return len(encode_body(hook.body()))
