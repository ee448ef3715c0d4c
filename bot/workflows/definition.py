"""A workflow definition: the YAML shape, as pydantic models (docs/workflows-design.md).

Only the shape and the rules one field can check live here; what needs the whole DAG or the
cluster (cycles, unknown agents, authority, body sizes) is bot.workflows.plan's.
"""

from __future__ import annotations

import re
from functools import cached_property
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

from bot.clock import parse_duration
from bot.errors import InvalidInput

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
STEP_ID_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
APPROVER_RE = re.compile(r"^(role:(viewer|operator|admin)|user:\d{17,20}|agent:[a-z0-9][a-z0-9-]*)$")
OUTPUT_CAP = 16_000  # characters of a step's output passed on to later steps; the rest is cut, saying so
OnFailure = Literal["fail", "continue"]
OnExpire = Literal["reject", "approve", "escalate"]
InputType = Literal["string", "integer", "number", "boolean"]


def _seconds(value: Any) -> Any:
    """`2h`, `30m`, `1h30m` (or a number of seconds) as seconds; YAML gives str or int."""
    if isinstance(value, bool):
        raise ValueError("a duration is written like 30m, 2h or 1h30m, not true/false")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return parse_duration(value)
        except InvalidInput as exc:
            raise ValueError(str(exc).replace(", or '0' for none", "")) from None  # a step always takes time
    raise ValueError("a duration is written like 30m, 2h or 1h30m")


Duration = Annotated[float, BeforeValidator(_seconds), Field(gt=0)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InputSpec(_Model):
    type: InputType = "string"
    default: str | int | float | bool | None = None
    description: str = ""

    @model_validator(mode="after")
    def _default_has_the_type(self) -> InputSpec:
        if self.default is not None:
            coerce_input(self.type, self.default)
        return self


def coerce_input(kind: InputType, value: Any) -> str | int | float | bool:
    """A value given for an input (YAML, `--input k=v`, the API) as the input's type, or ValueError saying why."""
    if kind == "string":
        if isinstance(value, bool | dict | list):
            raise ValueError(f"expected text, got {value!r}")
        return str(value)
    if kind == "boolean":
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in {"true", "yes", "1"}:
            return True
        if text in {"false", "no", "0"}:
            return False
        raise ValueError(f"expected true or false, got {value!r}")
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {value!r}")
    try:
        number = int(str(value).strip()) if kind == "integer" else float(str(value).strip())
    except ValueError:
        raise ValueError(f"expected {'a whole number' if kind == 'integer' else 'a number'}, got {value!r}") from None
    return number


class ApprovalSpec(_Model):
    prompt: str = Field(min_length=1, max_length=1_500)
    approvers: list[str] = Field(min_length=1)
    quorum: int = Field(default=1, ge=1, le=10)
    starter_may_approve: bool = False
    expires_in: Duration = 86_400.0
    on_expire: OnExpire = "reject"
    escalate_to: list[str] = Field(default_factory=list)

    @field_validator("approvers", "escalate_to")
    @classmethod
    def _approver_forms(cls, values: list[str]) -> list[str]:
        for value in values:
            if not APPROVER_RE.match(value):
                raise ValueError(
                    f"{value!r} is not an approver; write role:operator, role:admin, user:<discord id> or agent:<name>"
                )
        return values

    @model_validator(mode="after")
    def _escalation_names_someone(self) -> ApprovalSpec:
        if self.on_expire == "escalate" and not self.escalate_to:
            raise ValueError("on_expire: escalate needs escalate_to: the approvers who take over at expiry")
        return self

    @property
    def expires_in_s(self) -> float:
        return self.expires_in


class RouteSpec(_Model):
    """`route: {needs: [meshing], affinity: mesh}`: the step's agent is chosen at dispatch (docs/routing.md)."""

    needs: list[str] = Field(min_length=1)  # capabilities (not steps: the step's own `needs` are steps)
    affinity: str | None = None  # an earlier step: its agent is preferred, among the equally busy

    @field_validator("needs")
    @classmethod
    def _capabilities(cls, value: list[str]) -> list[str]:
        from bot.routing.capabilities import parse_needs

        return list(parse_needs(value))  # a malformed one: ValueError, reported at its line

    @field_validator("affinity")
    @classmethod
    def _affinity_form(cls, value: str | None) -> str | None:
        return None if value is None else _step_id(value)


class AgentStep(_Model):
    id: str
    agent: str | None = None  # exactly one of agent and route
    message: str = Field(min_length=1)
    needs: list[str] = Field(default_factory=list)
    timeout: Duration
    retries: int = Field(default=0, ge=0, le=5)
    on_failure: OnFailure = "fail"
    deliver_to: str | None = None  # None: the workflow's deliver_to
    task: str | None = None  # T-n the step reports through (#task-board grammar)
    route: RouteSpec | None = None  # instead of agent: chosen at dispatch by capabilities

    kind: Literal["agent"] = "agent"

    @field_validator("id")
    @classmethod
    def _id_form(cls, value: str) -> str:
        return _step_id(value)

    @model_validator(mode="after")
    def _agent_or_route(self) -> AgentStep:
        if (self.agent is None) == (self.route is None):
            raise ValueError(
                "give exactly one of agent (e.g. agent: nx-expert) and route (e.g. route: {needs: [meshing]})"
            )
        return self

    @property
    def timeout_s(self) -> float:
        return self.timeout


class ApprovalStep(_Model):
    id: str
    approval: ApprovalSpec
    needs: list[str] = Field(default_factory=list)
    on_failure: OnFailure = "fail"  # a rejection fails the run unless continue

    kind: Literal["approval"] = "approval"

    @field_validator("id")
    @classmethod
    def _id_form(cls, value: str) -> str:
        return _step_id(value)


def _step_id(value: str) -> str:
    if not STEP_ID_RE.match(value):
        raise ValueError(f"{value!r} is not a step id; use lower-case letters, digits, - or _ (e.g. mesh, thermal-2)")
    return value


def _step_kind(value: Any) -> str:
    """Tell the two kinds apart by the key a step has, so a mistake is reported against the right model."""
    if isinstance(value, dict):
        return "approval" if "approval" in value else "agent"
    return str(getattr(value, "kind", "agent"))


Step = Annotated[
    Annotated[AgentStep, Tag("agent")] | Annotated[ApprovalStep, Tag("approval")], Discriminator(_step_kind)
]


class WorkflowDefinition(_Model):
    name: str
    description: str = Field(min_length=1)
    inputs: dict[str, InputSpec] = Field(default_factory=dict)
    deliver_to: str = "thread"
    steps: list[Step] = Field(min_length=1, max_length=200)

    @field_validator("name")
    @classmethod
    def _name_form(cls, value: str) -> str:
        if not NAME_RE.match(value):
            raise ValueError(f"{value!r} is not a workflow name; use lower-case letters, digits and - (m2-study)")
        return value

    @field_validator("inputs")
    @classmethod
    def _input_names(cls, value: dict[str, InputSpec]) -> dict[str, InputSpec]:
        for name in value:
            if not re.match(r"^[a-z][a-z0-9_]{0,31}$", name):
                raise ValueError(f"{name!r} is not an input name; use lower-case letters, digits and _")
        return value

    def step(self, step_id: str) -> AgentStep | ApprovalStep:
        return self._by_id[step_id]

    @cached_property
    def _by_id(self) -> dict[str, AgentStep | ApprovalStep]:
        # The engine looks steps up by id for every step of every pass; a 200-step run made that quadratic.
        found: dict[str, AgentStep | ApprovalStep] = {}
        for step in self.steps:
            found.setdefault(step.id, step)  # ids repeated (refused by validation): the first, as before
        return found

    @property
    def step_ids(self) -> list[str]:
        return [step.id for step in self.steps]

    def resolve_inputs(self, given: dict[str, Any]) -> dict[str, str | int | float | bool]:
        """The run's inputs: defaults filled, each coerced to its type; InvalidInput naming every problem."""
        values, problems = self.check_inputs(given)
        if problems:
            raise InvalidInput("; ".join(problems))
        return values

    def check_inputs(
        self, given: dict[str, Any], *, require: bool = True
    ) -> tuple[dict[str, str | int | float | bool], list[str]]:
        """The inputs as resolve_inputs makes them, and one line per problem instead of an exception.

        `require=False` leaves an input with no default and no value out (validating a file: the run gives it).
        """
        problems: list[str] = []
        unknown = sorted(set(given) - set(self.inputs))
        if unknown:
            known = ", ".join(self.inputs) or "none"
            problems.append(f"unknown input(s) {', '.join(unknown)}; {self.name} takes: {known}")
        values: dict[str, str | int | float | bool] = {}
        for name, spec in self.inputs.items():
            if name in given:
                try:
                    values[name] = coerce_input(spec.type, given[name])
                except ValueError as exc:
                    problems.append(f"input {name}: {exc}")
            elif spec.default is not None:
                values[name] = coerce_input(spec.type, spec.default)
            elif require:
                problems.append(f"input {name} is required ({spec.type}); give it as --input {name}=…")
        return values, problems
