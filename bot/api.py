"""The loopback HTTP API the agents call with curl: bearer tokens, JSON in and out, its own OpenAPI.

Routes are registered with `LoopbackApi.route`, naming pydantic models for the input and the
answer: the same models validate requests, serialise answers and make `/openapi.json`, so the
document cannot drift from the code. Errors are mapped to `{"error": CODE, "detail": TEXT}` in one
middleware, from the `code` and `http_status` of the core's exception types.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import ipaddress
import logging
import re
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Literal

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_request import BaseRequest
from aiohttp.web_urldispatcher import AbstractRoute
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from bot.authz import AccessLevel, Requester, api_requester
from bot.chain_view import draw_tree
from bot.clock import iso, parse_duration, utcnow
from bot.cluster import FleetStatus
from bot.delegation import Delegation, Status, parse_id, subtree
from bot.errors import AtomizerError, InvalidInput, NotAllowed, NotAuthenticated, PayloadTooLarge
from bot.gateway import ReadinessState
from bot.health import is_failing
from bot.heartbeat import HeartbeatRun, JobStatus
from bot.routing.service import NobodyEligible
from bot.services import Services
from bot.status_view import AgentOverview, collect_overview, fleet_json
from bot.taskboard import Task, TaskBoard, TaskDetail, TaskEvent

log = logging.getLogger(__name__)
access_log = logging.getLogger("bot.api.access")

try:
    VERSION = version("atomizer-hq")
except PackageNotFoundError:  # pragma: no cover - running from a tree that was never installed
    VERSION = "0.0.0"

SCHEMA_REF = "#/components/schemas/{model}"
SECURITY_SCHEME = "bearerAuth"
# Query parameters that look like a credential: refused outright, as the gateways do, because URLs end
# up in shell history, proxy logs and access logs.
TOKEN_QUERY_KEYS = frozenset({"token", "access_token", "api_token", "api_key", "apikey", "bearer", "authorization"})
_PATH_PARAM = re.compile(r"\{(\w+)(?::([^{}]+))?\}")
_INTEGER_PATTERNS = (r"\d+", "[0-9]+")
_HTTP_ERROR_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
}
METHODS_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})

Handler = Callable[..., Awaitable[BaseModel | web.StreamResponse]]
# Set by the auth middleware on every authenticated request: who is calling.
REQUESTER = web.RequestKey("requester", Requester)
# How the access log and error log show a path: with any configured token blanked out.
REDACT = web.AppKey("redact", Callable[[str], str])


# --- errors only the HTTP front end raises -----------------------------------------------------


class InvalidJson(InvalidInput):
    code = "invalid_json"


class TokenInQuery(InvalidInput):
    code = "token_in_query"


# --- models of the skeleton's own routes -------------------------------------------------------


class ErrorResponse(BaseModel):
    """Every error answer: a stable machine code and a sentence saying what to do."""

    error: str
    detail: str


class Health(BaseModel):
    """Whether the process and its parts work (503 with the same shape when any does not)."""

    ok: bool
    database: str
    checks: dict[str, str] = Field(
        default_factory=dict,
        description="each part's result, 'ok', 'error: …' or 'off: …' (switched off on purpose, not failing): "
        "database (writable), and under `run` scheduler (running) and discord (connected; "
        "'error: down: cannot reach Discord: …; retrying in N s' during an outage, 'off' under --no-discord)",
    )
    version: str


class WhoAmI(BaseModel):
    """Who the API takes the caller to be, from the bearer token alone."""

    identity: str
    kind: Literal["person", "agent"]
    level: Literal["none", "viewer", "operator", "admin"]


# --- models of the delegation routes -----------------------------------------------------------

# Body keys that would claim an identity: refused by name, since the caller is whoever the token says.
IDENTITY_KEYS = frozenset({"requester", "as", "from", "via", "identity", "requester_kind"})


class DelegationIn(BaseModel):
    """A delegation request. There is no field for who asks: that is the bearer token's owner."""

    model_config = ConfigDict(extra="forbid")  # a misspelt field must fail, not be dropped silently

    to: str = Field(description="The agent that should do the work, e.g. nx-expert; auto: chosen by `needs`.")
    message: str = Field(description="The instruction, as the agent will read it.")
    needs: list[str] | None = Field(
        default=None,
        description='Capabilities the work needs, e.g. ["meshing"]. With to=auto the agent is chosen by them '
        "(docs/routing.md); with a named agent, that agent must have them.",
    )
    target: str | None = Field(
        default=None,
        description="Where the agent's answer goes: channel:<id>, user:<id>, <#id>, #channel or @member. "
        "Default: the technical channel.",
    )
    deliver: bool = Field(default=True, description="false: the agent runs it without posting its answer.")
    task: str | None = Field(default=None, description="The board task this work is for, e.g. T-12.")
    dry_run: bool = Field(default=False, description="Decide and build the hook body, but record and send nothing.")
    parent: str | None = Field(
        default=None,
        description="The delegation you are working on (D-12, as your hook message ends): this one is its child "
        "in a chain. Only a delegation to the caller; refused when failed or expired, a loop, or past the caps.",
    )

    @model_validator(mode="before")
    @classmethod
    def _no_claimed_identity(cls, data: Any) -> Any:
        if isinstance(data, dict) and (claimed := sorted(IDENTITY_KEYS.intersection(data))):
            raise ValueError(
                f"{', '.join(map(repr, claimed))}: the requester is whoever the bearer token belongs to; "
                "remove the field, or call with that identity's token"
            )
        return data


class DecisionOut(BaseModel):
    """Whether the caller may delegate to that agent, and why (naming who could when not)."""

    allowed: bool
    reason: str


class RequesterOut(BaseModel):
    kind: Literal["person", "agent"]
    name: str
    via: str | None = Field(description="The admin who acted for the agent, if any.")


class DelegationRecord(BaseModel):
    """One delegation, field for field as `Delegation.to_dict()`: the shape every front end shows."""

    id: str = Field(description="D-42")
    agent: str
    status: str = Field(description="queued, sending, accepted, failed, unconfirmed or expired")
    run_id: str | None = Field(description="The gateway's runId, once accepted.")
    message: str
    deliver: bool
    target: str | None = Field(description="user:<id> or channel:<id>; null when not delivered.")
    task: str | None
    requester: RequesterOut
    front_end: str
    attempts: int
    last_error: str | None
    created_at: str
    updated_at: str
    accepted_at: str | None
    next_attempt_at: str | None = Field(description="When the outbox tries again, while queued.")
    expires_at: str = Field(description="The end of the retry window.")
    latency_ms: float | None
    workflow_step: str | None = Field(default=None, description="W-3/mesh#1 when a workflow run's step sent it.")
    parent: str | None = Field(default=None, description="The delegation it hangs under (D-12), in a chain.")
    root: str = Field(description="The first delegation of its chain; itself when it hangs under none.")
    depth: int = Field(description="1 for a root, 2 for its child, …")
    cancelled_at: str | None = Field(default=None, description="When its chain was cancelled from here.")
    needs: list[str] | None = Field(
        default=None,
        description="A routed delegation's capabilities (to: auto): if its agent does not admit it, another that has "
        "them and is ready takes it. Null when the agent was named.",
    )

    @classmethod
    def of(cls, delegation: Delegation) -> DelegationRecord:
        return cls.model_validate(delegation.to_dict())


class RouteRowOut(BaseModel):
    """One agent's line of the routing table: each failing filter with its reason, its rank when eligible."""

    agent: str
    eligible: bool
    refusals: dict[str, str] = Field(description="capabilities, authority, ready, silence or cap -> why it failed")
    readiness: str
    in_flight: int
    cap: int | None
    accepted: int = Field(description="Accepted, of its last `ended` delegations (at most 20).")
    ended: int
    affinity: bool
    rank: int | None = Field(description="1 = chosen; null when a filter failed.")


class RouteOut(BaseModel):
    """A routing decision: the chosen agent (or none), whether it waits in the outbox for that agent, and why."""

    needs: list[str]
    requester: str
    chosen: str | None
    queued: bool = Field(description="No agent with the capabilities is ready: sent when the chosen one is back.")
    explanation: str = Field(description="e.g. nx-expert: has meshing; ready; 0 in flight; 20 of the last 20 accepted")
    affinity: str | None
    table: list[RouteRowOut] = Field(description="Every agent, every filter.")


class NobodyEligibleOut(ErrorResponse):
    """409 nobody_eligible: no agent can take the work, not even once back; `route` has the whole table."""

    route: RouteOut


class DelegationCreated(DelegationRecord):
    """The new delegation's record (accepted, or queued for the outbox to retry), and why it was allowed."""

    decision: DecisionOut
    route: RouteOut | None = Field(default=None, description="How the agent was chosen, when `to` was auto.")


class DelegationDryRun(BaseModel):
    """What a delegation would do: the decision and the exact hook body, with nothing recorded or sent."""

    decision: DecisionOut
    payload: dict[str, Any]
    route: RouteOut | None = Field(default=None, description="How the agent would be chosen, when `to` was auto.")


class RouteQuery(BaseModel):
    """What the work needs: `?needs=meshing,fea` (or the key repeated)."""

    model_config = ConfigDict(extra="forbid")

    needs: list[str] = Field(description="Capabilities, e.g. meshing; comma-separated or repeated.")


class DelegationTree(BaseModel):
    """A chain: its root's tree, in tree order (each node after its parent), with each node's state."""

    root: str
    delegations: list[DelegationRecord]
    text: str = Field(description="The tree drawn as `atomizer-hq delegations show` draws it.")


class ChainCancelled(BaseModel):
    """What cancelling did: the delegation and everything under it, which were stopped, which were with an agent."""

    delegations: list[DelegationRecord]
    stopped: list[str] = Field(description="Queued, not yet sent: expired now.")
    with_agent: list[str] = Field(description="Sent already (or being sent): the agent has to be told.")
    summary: str


class DelegationQuery(BaseModel):
    """Filters and paging of the delegation list."""

    model_config = ConfigDict(extra="forbid")  # a misspelt filter must fail, not list everything

    agent: str | None = Field(default=None, description="Only those sent to this agent.")
    status: Status | None = Field(default=None, description="Only those in this status.")
    requester: str | None = Field(default=None, description="Only those asked by this agent or person.")
    limit: int = Field(default=20, ge=1, le=100, description="At most this many.")
    before: str | None = Field(default=None, description="Only older than this id (next_before of the last page).")


class DelegationList(BaseModel):
    """Newest first; `next_before` is the `before` of the next page, null on the last one."""

    delegations: list[DelegationRecord]
    next_before: str | None


# --- models of the status routes ---------------------------------------------------------------


class AgentStatusOut(BaseModel):
    """One agent: the probe, as `atomizer-hq status --json` shows it, and what the monitor's history adds."""

    name: str
    state: ReadinessState
    port: int
    model: str
    latency_ms: float | None = Field(description="The probe's round trip; null when down.")
    release: str | None = Field(description="The OpenClaw release from /startupz; null without health routes.")
    health_routes: bool
    failing: list[str] = Field(description="The readiness checks that failed, if any.")
    detail: str
    since: str | None = Field(description="When the monitor first saw the current state (ISO 8601, UTC).")
    uptime_24h: float | None = Field(description="Fraction of the last 24 h up, over what the monitor observed.")
    last_delegation: str | None = Field(description="The newest delegation to it: id, status, time.")
    silenced_until: str | None = Field(description="Alerts for it are silenced until then.")


class FleetStatusOut(BaseModel):
    """Every configured agent, probed at once."""

    agents: list[AgentStatusOut]
    counts: dict[str, int] = Field(description="How many agents are in each state.")
    took_ms: float = Field(description="How long the probe round took.")


class TransitionOut(BaseModel):
    at: str
    from_state: str | None
    to_state: str
    detail: str | None


class AgentStatusDetail(AgentStatusOut):
    """One agent in full: its probe, uptime, the monitor's confirmed state and its recent transitions."""

    uptime_7d: float | None
    confirmed: str | None = Field(description="The state alerts are based on (after K failed probes).")
    confirmed_since: str | None
    silenced_by: str | None
    transitions: list[TransitionOut] = Field(description="The latest observed state changes, newest first.")


def _agents_out(fleet: FleetStatus, overview: list[AgentOverview]) -> list[dict[str, Any]]:
    """`fleet_json`'s agents (the CLI's shape) joined with the overview, one dict per agent."""
    by_name = {item.status.name: item for item in overview}
    agents = []
    for agent in fleet_json(fleet)["agents"]:
        item = by_name[agent["name"]]
        agents.append(
            {
                **agent,
                "since": item.since,
                "uptime_24h": item.uptime_24h,
                "last_delegation": item.last_delegation,
                "silenced_until": item.silenced_until,
            }
        )
    return agents


# --- models of the task routes -----------------------------------------------------------------


class TaskIn(BaseModel):
    """A new task. There is no field for who creates it: that is the bearer token's owner."""

    model_config = ConfigDict(extra="forbid")  # a misspelt field must fail, not be dropped silently

    title: str = Field(description="One line, at most 200 characters.")
    assignee: str | None = Field(
        default=None, description="An agent (nx-expert) or a person (@name, user:<id>, <@id>); default: nobody."
    )
    priority: str = Field(default="normal", description="low, normal, high or urgent.")
    due: str | None = Field(default=None, description="YYYY-MM-DD, today, tomorrow, +3d or +2w.")
    description: str | None = Field(default=None, description="Longer text, at most 2000 characters.")

    @model_validator(mode="before")
    @classmethod
    def _no_claimed_identity(cls, data: Any) -> Any:
        return _refuse_claimed_identity(data, "creator")


class TaskPatch(BaseModel):
    """A change to a task: a new status, a new assignee, or both (the status changes first)."""

    model_config = ConfigDict(extra="forbid")

    status: str | None = Field(
        default=None, description="todo, in_progress, blocked, review, done or cancelled; blocked needs a note."
    )
    note: str | None = Field(default=None, description="Why: kept in the history; the reason when blocked.")
    assignee: str | None = Field(
        default=None, description="An agent or a person, as for a new task; null (sent explicitly) unassigns."
    )
    version: int | None = Field(
        default=None,
        ge=1,
        description="The version you read: the change is refused with 409 if the task changed since. "
        "Also accepted as an If-Match header.",
    )

    @model_validator(mode="before")
    @classmethod
    def _no_claimed_identity(cls, data: Any) -> Any:
        return _refuse_claimed_identity(data, "actor")


def _refuse_claimed_identity(data: Any, *extra: str) -> Any:
    if isinstance(data, dict) and (claimed := sorted(IDENTITY_KEYS.union(extra).intersection(data))):
        raise ValueError(
            f"{', '.join(map(repr, claimed))}: the requester is whoever the bearer token belongs to; "
            "remove the field, or call with that identity's token"
        )
    return data


class TaskAssigneeOut(BaseModel):
    kind: Literal["agent", "user"]
    id: str = Field(description="The agent's name, or the person's Discord user id.")
    label: str


class TaskCreatorOut(BaseModel):
    kind: Literal["person", "agent"]
    name: str


class TaskRecord(BaseModel):
    """One task, field for field as `Task.to_dict()`: the shape every front end shows."""

    id: str = Field(description="T-42")
    title: str
    description: str | None
    status: str = Field(description="todo, in_progress, blocked, review, done or cancelled")
    assignee: TaskAssigneeOut | None
    priority: str = Field(description="low, normal, high or urgent")
    due: str | None = Field(description="YYYY-MM-DD")
    blocked_reason: str | None
    creator: TaskCreatorOut
    created_at: str
    updated_at: str
    version: int = Field(description="Goes up by one with every change; send it back to PATCH safely.")

    @classmethod
    def of(cls, task: Task) -> TaskRecord:
        return cls.model_validate(task.to_dict())


class TaskEventOut(BaseModel):
    """One line of a task's history, oldest first."""

    at: str
    actor_kind: Literal["person", "agent"]
    actor: str = Field(description="Who, with the admin who acted for an agent in parentheses.")
    front_end: str = Field(description="discord, cli, api, task-board, ...")
    action: str = Field(description="create, move or assign")
    old_value: str | None
    new_value: str | None
    note: str | None
    text: str = Field(description="The line as the board's history shows it.")

    @classmethod
    def of(cls, event: TaskEvent) -> TaskEventOut:
        fields = {name: value for name, value in vars(event).items() if name != "task_id"}
        return cls(**fields, text=event.describe())


class TaskDelegationOut(BaseModel):
    """A delegation made for this task (see GET /v1/delegations/{id})."""

    id: str = Field(description="D-42")
    agent: str
    status: str
    run_id: str | None
    created_at: str


class TaskDetailOut(TaskRecord):
    """A task with its latest history (up to 20 events, oldest first) and the delegations made for it."""

    history: list[TaskEventOut]
    delegations: list[TaskDelegationOut]

    @classmethod
    def of_detail(cls, detail: TaskDetail) -> TaskDetailOut:
        return cls(
            **detail.task.to_dict(),
            history=[TaskEventOut.of(event) for event in detail.history],
            delegations=[TaskDelegationOut(**delegation) for delegation in detail.delegations],
        )


class TaskQuery(BaseModel):
    """Filters and paging of the task list; most urgent first (blocked, in progress, review, todo)."""

    model_config = ConfigDict(extra="forbid")  # a misspelt filter must fail, not list everything

    assignee: str | None = Field(default=None, description="Only those assigned to this agent or person.")
    status: str | None = Field(default=None, description="Only those in this status (then `open` does not apply).")
    open: bool = Field(default=True, description="Only open tasks (todo, in_progress, blocked, review); false: all.")
    limit: int = Field(default=25, ge=1, le=200, description="At most this many.")
    offset: int = Field(default=0, ge=0, le=10**9, description="Skip this many (paging).")


class TaskList(BaseModel):
    """One page of tasks; `total` counts every task matching the filters."""

    tasks: list[TaskRecord]
    total: int


async def count_tasks(board: TaskBoard, *, assignee: str | None, status: str | None, open_only: bool) -> int:
    """How many tasks the same filters as `TaskBoard.list` match (the API's and the CLI's `total`)."""
    if assignee is None:
        return await board.count(status=status, open_only=open_only)
    # TaskBoard.count has no assignee filter: count the matches a page at a time.
    total, step = 0, 500
    while len(batch := await board.list(assignee=assignee, status=status, open_only=open_only,
                                        limit=step, offset=total)) == step:  # fmt: skip
        total += step
    return total + len(batch)


# --- models of the heartbeat routes ------------------------------------------------------------

MAX_PAUSE_S = 90 * 86_400  # longer than a quarter: pause until resumed instead


def pause_seconds(duration: str | None) -> float | None:
    """A heartbeat pause's length from "2h", "1d"…; None (or blank) pauses until resumed.

    One reading for /heartbeat pause, `atomizer-hq heartbeat pause --for` and the API.
    """
    if duration is None or not duration.strip():
        return None
    seconds = parse_duration(duration)
    if seconds <= 0:
        raise InvalidInput("a pause of 0 is no pause; leave the duration out to pause until resumed, or resume")
    if seconds > MAX_PAUSE_S:
        raise InvalidInput(
            f"{duration.strip()[:40]!r} is longer than {MAX_PAUSE_S // 86_400} days; "
            "leave the duration out to pause until resumed"
        )
    return seconds


class HeartbeatRunOut(BaseModel):
    """One heartbeat slot as recorded: how far it got (level) and how it ended (status)."""

    agent: str
    slot: str = Field(description="The slot's time (ISO 8601, UTC); a manual run's is when it was asked for.")
    trigger: str = Field(description="schedule, catch_up or manual")
    status: str = Field(
        description="ok, skipped, down, not_ready, rejected, unconfirmed, run_failed, no_completion (running while "
        "under way)"
    )
    level: str | None = Field(description="The last level verified: live, ready, accepted, completed; null if none.")
    run_id: str | None = Field(description="The gateway's runId, once the hook was accepted.")
    detail: str | None
    started_at: str
    finished_at: str | None
    failed: bool = Field(description="Counts towards the dead-man's switch.")

    @classmethod
    def of(cls, run: HeartbeatRun) -> HeartbeatRunOut:
        return cls(**asdict(run), failed=run.failed)


class HeartbeatJobOut(BaseModel):
    """One heartbeat atomizer-hq sends: its schedule and policy, what comes next, and how the last one went."""

    agent: str
    schedule: str = Field(description="e.g. 'every 30 min 00 s' or 'cron 0 9 * * 1-5', with active hours")
    method: str = Field(description="agent (a hook run, verified to completion) or wake")
    missed: str = Field(description="The policy for slots missed while atomizer-hq was down: skip or catch_up_once")
    next_slot: str | None = Field(description="The next slot within a week (ISO 8601, UTC), paused or not.")
    last: HeartbeatRunOut | None = Field(description="The latest finished slot, skipped ones included.")
    paused_until: str | None = Field(description="No heartbeats until then; 9999-12-31… means until resumed.")
    failures: int = Field(description="Failed runs in a row; failures_alert of them raise an alert in #it-ops.")

    @classmethod
    def of(cls, job: JobStatus) -> HeartbeatJobOut:
        return cls(
            agent=job.agent, schedule=job.schedule, method=job.method, missed=job.missed, next_slot=job.next_slot,
            last=HeartbeatRunOut.of(job.last) if job.last else None, paused_until=job.paused_until,
            failures=job.failures,
        )  # fmt: skip


class HeartbeatList(BaseModel):
    """Every heartbeat atomizer-hq sends, in config order."""

    heartbeats: list[HeartbeatJobOut]


class HeartbeatPauseIn(BaseModel):
    """How long to pause; send {} to pause until resumed."""

    model_config = ConfigDict(extra="forbid")

    duration: str | None = Field(
        default=None, description=f"e.g. 30m, 2h, 1d (at most {MAX_PAUSE_S // 86_400} days); absent: until resumed."
    )


class HeartbeatPaused(BaseModel):
    agent: str
    paused_until: str | None = Field(description="null once resumed; 9999-12-31… means until resumed.")
    changed: bool = Field(default=True, description="false when it was already so: nothing was recorded.")


class HeartbeatSeen(BaseModel):
    """The agent's own heartbeat was recorded as seen (the dead-man's switch for agents with their own)."""

    agent: str
    seen_at: str


# --- routes ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    """One operation: how it is called, what it takes and answers, and who may call it.

    The handler is called as `handler(request, requester, data)`: `requester` is None only on
    `auth=False` routes; `data` is the validated `body` or `query` model, or None. It returns a
    `response` model (sent with `status`) or, for another status, a ready `web.Response` (see `reply`).
    """

    method: str
    path: str
    handler: Handler
    summary: str
    response: type[BaseModel] | None
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    auth: bool = True
    status: int = 200
    extra_responses: Mapping[int, type[BaseModel]] = field(default_factory=dict)
    description: str | None = None

    def __post_init__(self) -> None:
        if self.body is not None and self.query is not None:
            raise ValueError(f"{self.method} {self.path}: take a body or a query model, not both")
        if self.body is not None and self.method.upper() not in METHODS_WITH_BODY:
            raise ValueError(f"{self.method} {self.path}: only {', '.join(sorted(METHODS_WITH_BODY))} take a body")

    @property
    def operation_id(self) -> str:
        return self.handler.__name__

    @property
    def openapi_path(self) -> str:
        """The path without aiohttp's regular expressions: /v1/tasks/{id:\\d+} -> /v1/tasks/{id}."""
        return _PATH_PARAM.sub(lambda m: "{" + m.group(1) + "}", self.path)

    def path_parameters(self) -> list[tuple[str, bool]]:
        """(name, is_integer) of each path parameter, in order."""
        return [(m.group(1), m.group(2) in _INTEGER_PATTERNS) for m in _PATH_PARAM.finditer(self.path)]


def reply(model: BaseModel, status: int = 200) -> web.Response:
    """A model as a JSON answer with a status of the handler's choosing."""
    return web.Response(text=model.model_dump_json(), status=status, content_type="application/json")


def error_reply(status: int, code: str, detail: str, headers: Mapping[str, str] | None = None) -> web.Response:
    response = reply(ErrorResponse(error=code, detail=detail), status)
    response.headers.update(headers or {})
    return response


def is_loopback_host(host: str) -> bool:
    """Whether binding `host` keeps the API on this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class AccessLog(AbstractAccessLogger):
    """One line per request, without the query string: a token pasted there must not reach the log."""

    def log(self, request: BaseRequest, response: web.StreamResponse, time: float) -> None:
        requester = request.get(REQUESTER)
        who = requester.name if requester is not None else "-"
        path = request.app[REDACT](request.path)
        self.logger.info("%s %s -> %d in %.1f ms (%s)", request.method, path, response.status, time * 1000, who)


# --- the API -----------------------------------------------------------------------------------


class LoopbackApi:
    """The aiohttp application, its routes, and the server that runs it on 127.0.0.1."""

    def __init__(self, services: Services, identities: Mapping[str, SecretStr]) -> None:
        self.services = services
        self.config = services.config.api
        # Authentication compares digests: equal lengths, so not even a token's length leaks.
        self._token_digests = {identity: _digest(token.get_secret_value()) for identity, token in identities.items()}
        self._secrets = [token.get_secret_value() for token in identities.values()]
        if not self._token_digests:
            log.warning("loopback API: no API tokens configured; every route but /healthz will answer 401")
        self.app = web.Application(
            client_max_size=self.config.max_body_bytes, middlewares=[self._errors, self._authenticate]
        )
        self.app[REDACT] = self.redact
        self.routes: list[Route] = []
        self._by_aiohttp_route: dict[AbstractRoute, Route] = {}
        self._openapi: dict[str, Any] | None = None
        self._runner: web.AppRunner | None = None
        self._host = self.config.host
        self._add_core_routes()
        self._add_delegation_routes()
        self._add_status_routes()
        self._add_task_routes()
        self._add_heartbeat_routes()
        from bot.api_workflows import add_workflow_routes

        add_workflow_routes(self)

    # --- registration ----------------------------------------------------------------------------

    def route(
        self,
        method: str,
        path: str,
        *,
        summary: str,
        response: type[BaseModel] | None,
        body: type[BaseModel] | None = None,
        query: type[BaseModel] | None = None,
        auth: bool = True,
        status: int = 200,
        extra_responses: Mapping[int, type[BaseModel]] | None = None,
        description: str | None = None,
    ) -> Callable[[Handler], Handler]:
        """Decorator form of `add`: the handler is registered and returned unchanged."""

        def register(handler: Handler) -> Handler:
            self.add(
                Route(
                    method.upper(),
                    path,
                    handler,
                    summary=summary,
                    response=response,
                    body=body,
                    query=query,
                    auth=auth,
                    status=status,
                    extra_responses=dict(extra_responses or {}),
                    description=description,
                )
            )
            return handler

        return register

    def add(self, route: Route) -> None:
        """Register a route; only before `start` (aiohttp freezes the router then)."""
        if any(existing.operation_id == route.operation_id for existing in self.routes):
            raise ValueError(f"{route.method} {route.path}: a handler called {route.operation_id!r} exists")
        aiohttp_route = self.app.router.add_route(route.method, route.path, self._endpoint(route))
        self._by_aiohttp_route[aiohttp_route] = route
        self.routes.append(route)
        self._openapi = None

    def _endpoint(self, route: Route) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        """The aiohttp handler around a route's handler: input in, model out."""

        async def endpoint(request: web.Request) -> web.StreamResponse:
            requester = request.get(REQUESTER)
            data: BaseModel | None = None
            if route.body is not None:
                data = await self._read_body(request, route.body)
            elif route.query is not None:
                data = _validate(route.query, _query_input(request, route.query), "query")
            result = await route.handler(request, requester, data)
            if isinstance(result, web.StreamResponse):
                return result
            if route.response is None or not isinstance(result, route.response):
                raise TypeError(
                    f"{route.operation_id} returned {type(result).__name__}, "
                    f"not its declared {getattr(route.response, '__name__', 'web.Response')}"
                )
            return reply(result, route.status)

        endpoint.__name__ = route.operation_id
        return endpoint

    async def _read_body(self, request: web.Request, model: type[BaseModel]) -> BaseModel:
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise PayloadTooLarge(self._too_large()) from None
        if not raw.strip():
            raise InvalidJson("the request body is empty; send a JSON object (Content-Type: application/json)")
        try:
            return model.model_validate_json(raw)
        except ValidationError as exc:
            broken = [error for error in exc.errors() if error["type"] == "json_invalid"]
            if broken:
                reason = broken[0].get("ctx", {}).get("error", broken[0]["msg"])
                raise InvalidJson(f"the request body is not valid JSON: {reason}") from None
            raise InvalidInput(_describe(exc, "body")) from None

    def _too_large(self) -> str:
        return f"the request body is over the {self.config.max_body_bytes}-byte limit; send less"

    # --- middlewares -----------------------------------------------------------------------------

    @web.middleware
    async def _errors(self, request: web.Request, handler: Callable[..., Any]) -> web.StreamResponse:
        """Every failure becomes one JSON shape; only the log sees what went wrong inside."""
        try:
            return await handler(request)
        except AtomizerError as exc:
            if exc.http_status >= 500:
                log.warning("%s %s failed: %s: %s", request.method, self.redact(request.path), exc.code, exc)
            headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, NotAuthenticated) else None
            return error_reply(exc.http_status, exc.code, str(exc), headers)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return self._http_error(request, exc)
        except Exception:
            ref = secrets.token_hex(4)
            log.exception("%s %s: unexpected error (ref %s)", request.method, self.redact(request.path), ref)
            return error_reply(
                500, "internal", f"internal error (ref {ref}); the operator can find it in the atomizer-hq log"
            )

    def _http_error(self, request: web.Request, exc: web.HTTPException) -> web.Response:
        code = _HTTP_ERROR_CODES.get(exc.status, "http_error")
        headers: dict[str, str] = {}
        if isinstance(exc, web.HTTPMethodNotAllowed):
            headers["Allow"] = exc.headers["Allow"]
            detail = f"{request.method} is not allowed here; allowed: {', '.join(sorted(exc.allowed_methods))}"
        elif exc.status == 404:
            # The path is not echoed: whatever the caller put in it stays out of our answer.
            detail = "no such route; GET /openapi.json lists them"
        elif exc.status == 413:
            detail = self._too_large()
        else:
            detail = exc.reason
        return error_reply(exc.status, code, detail, headers)

    @web.middleware
    async def _authenticate(self, request: web.Request, handler: Callable[..., Any]) -> web.StreamResponse:
        """Default deny: every route needs a bearer token unless it was registered with auth=False."""
        in_query = sorted({key for key in request.query if key.lower() in TOKEN_QUERY_KEYS})
        if in_query:
            raise TokenInQuery(
                "tokens go in the Authorization: Bearer <token> header, never in the URL "
                f"(query parameter {', '.join(map(repr, in_query))} refused)"
            )
        match_info = request.match_info
        route = self._by_aiohttp_route.get(match_info.route)
        # No route matched (404/405): nothing to protect, and the caller learns what is wrong sooner.
        if match_info.http_exception is None and (route is None or route.auth):
            request[REQUESTER] = self.authenticate(request.headers.get("Authorization"))
        return await handler(request)

    def authenticate(self, authorization: str | None) -> Requester:
        """The caller behind an Authorization header, or NotAuthenticated."""
        scheme, _, token = (authorization or "").strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise NotAuthenticated("missing Authorization: Bearer <token>")
        presented = _digest(token)
        found: str | None = None
        for identity, expected in self._token_digests.items():  # every token, whatever matched before
            if hmac.compare_digest(presented, expected):
                found = identity
        if found is None:
            raise NotAuthenticated("unknown token")
        return api_requester(found, self.services.config)

    def redact(self, text: str) -> str:
        """`text` with every configured token blanked: for logging what a caller sent, such as a path."""
        for secret in self._secrets:
            text = text.replace(secret, "<token>")
        return text

    # --- the skeleton's routes -------------------------------------------------------------------

    def _add_core_routes(self) -> None:
        self.add(
            Route(
                "GET",
                "/healthz",
                self.healthz,
                summary="Whether this process and its parts work: database, scheduler, Discord",
                response=Health,
                auth=False,
                extra_responses={503: Health},
            )
        )
        self.add(
            Route(
                "GET",
                "/openapi.json",
                self.openapi_json,
                summary="This document: every route with its input and answer schemas",
                response=None,
                auth=False,
            )
        )
        self.add(
            Route(
                "GET",
                "/metrics",
                self.metrics,
                summary="Prometheus metrics: delegations, agents up, probe latency, heartbeats, Discord calls",
                response=None,
                auth=False,
            )
        )
        self.add(
            Route(
                "GET",
                "/v1/whoami",
                self.whoami,
                summary="Who your token says you are (to debug a token)",
                response=WhoAmI,
            )
        )

    async def healthz(self, request: web.Request, requester: None, data: None) -> web.Response:
        checks = await self.services.health.run()
        failing = {name: result for name, result in checks.items() if is_failing(result)}
        if failing:
            log.warning("health check failing: %s", ", ".join(f"{k} ({v})" for k, v in failing.items()))
        health = Health(ok=not failing, database=checks.get("database", "ok"), checks=checks, version=VERSION)
        return reply(health, 503 if failing else 200)

    async def metrics(self, request: web.Request, requester: None, data: None) -> web.Response:
        """Prometheus text format; unauthenticated like /healthz (the API listens on loopback only)."""
        from bot.health import render_metrics

        body = await render_metrics(self.services)
        return web.Response(body=body, content_type="text/plain", charset="utf-8", headers={"X-Format": "0.0.4"})

    async def openapi_json(self, request: web.Request, requester: None, data: None) -> web.Response:
        return web.json_response(self.openapi())

    async def whoami(self, request: web.Request, requester: Requester, data: None) -> WhoAmI:
        return WhoAmI(identity=requester.name, kind=requester.kind, level=requester.level.label)

    # --- delegations -----------------------------------------------------------------------------

    def _add_delegation_routes(self) -> None:
        """Thin fronts of DelegationService: the same decision, validation and record as /delegate and the CLI."""
        refused = {403: ErrorResponse, 404: ErrorResponse}
        self.add(
            Route(
                "POST",
                "/v1/delegations",
                self.create_delegation,
                summary="Delegate work to an agent, as the caller behind the token",
                response=DelegationCreated,
                body=DelegationIn,
                status=202,
                extra_responses={200: DelegationDryRun, **refused, 409: NobodyEligibleOut},
                description="202: recorded and sent (status accepted), or queued for retries while the agent "
                "cannot take it (status queued). 200: a dry run. 403: the caller may not delegate to that agent; "
                "the detail names who could. With to=auto and needs: 400 unknown_capability (with a did-you-mean), "
                "409 nobody_eligible with the routing table. `parent` not the caller's to hang work under: 403 "
                "chain_refused; the chain's depth or size cap ([delegation] in config) passed: 409 chain_limit.",
            )
        )
        self.add(
            Route(
                "GET",
                "/v1/route",
                self.route_preview,
                summary="Which agent `to: auto` would choose now for these needs, with every agent's filters",
                response=RouteOut,
                query=RouteQuery,
                description="A look, not a decision: nothing is audited or sent. `chosen` is null when nobody could "
                "take it.",
            )
        )
        self.add(
            Route(
                "GET",
                "/v1/delegations",
                self.list_delegations,
                summary="Recent delegations, newest first",
                response=DelegationList,
                query=DelegationQuery,
            )
        )
        self.add(
            Route(
                "GET",
                "/v1/delegations/{id}",
                self.get_delegation,
                summary="One delegation, by id (D-42 or 42)",
                response=DelegationRecord,
                extra_responses={404: ErrorResponse},
            )
        )
        self.add(
            Route(
                "GET",
                "/v1/delegations/{id}/tree",
                self.delegation_tree,
                summary="The chain a delegation belongs to: its root's tree, with each node's state",
                response=DelegationTree,
                extra_responses={404: ErrorResponse},
            )
        )
        self.add(
            Route(
                "POST",
                "/v1/delegations/{id}/cancel",
                self.cancel_delegation,
                summary="Stop a delegation and what hangs under it that is not sent yet (an operator, or its maker)",
                response=ChainCancelled,
                extra_responses={400: ErrorResponse, **refused},
                description="Queued delegations of the subtree expire; those already with an agent are listed "
                "(cancelling cannot take them back); nothing new may hang under it afterwards. An agent may "
                "cancel the delegations it made; a person needs the operator level.",
            )
        )
        self.add(
            Route(
                "POST",
                "/v1/delegations/{id}/retry",
                self.retry_delegation,
                summary="Send an unconfirmed, failed or expired delegation again (operator or admin)",
                response=DelegationRecord,
                status=202,
                extra_responses=refused,
            )
        )

    async def create_delegation(self, request: web.Request, requester: Requester, body: DelegationIn) -> web.Response:
        self.services.delegation.validate_request(body.message, target=body.target, deliver=body.deliver)
        try:
            agent, decided = await self.services.routing.resolve(
                requester,
                body.to,
                body.needs,
                dry_run=body.dry_run,
                audit_detail={"message": body.message[:200]},
                parent=body.parent,
            )
        except NobodyEligible as exc:
            refused = NobodyEligibleOut(error=exc.code, detail=str(exc), route=RouteOut(**exc.decision.to_dict()))
            return reply(refused, exc.http_status)
        route = RouteOut(**decided.to_dict()) if decided is not None else None
        result = await self.services.delegation.delegate(
            requester,
            agent,
            body.message,
            target=body.target,
            deliver=body.deliver,
            task=body.task,
            dry_run=body.dry_run,
            parent=body.parent,
            needs=decided.needs if decided is not None else (),
        )
        decision = DecisionOut(allowed=result.decision.allowed, reason=result.decision.reason)
        if result.delegation is None:
            return reply(DelegationDryRun(decision=decision, payload=result.payload, route=route))
        record = DelegationRecord.of(result.delegation)
        response = reply(DelegationCreated(**record.model_dump(), decision=decision, route=route), 202)
        response.headers["Location"] = f"/v1/delegations/{record.id}"
        return response

    async def route_preview(self, request: web.Request, requester: Requester, query: RouteQuery) -> RouteOut:
        routing = self.services.routing
        return RouteOut(**(await routing.preview(requester, routing.needs(query.needs))).to_dict())

    async def get_delegation(self, request: web.Request, requester: Requester, data: None) -> DelegationRecord:
        return DelegationRecord.of(await self.services.delegation.get(request.match_info["id"]))

    async def list_delegations(
        self, request: web.Request, requester: Requester, query: DelegationQuery
    ) -> DelegationList:
        recent = functools.partial(
            self.services.delegation.recent, agent=query.agent, status=query.status, requester=query.requester
        )
        before = None if query.before is None else parse_id(query.before)
        page = await recent(limit=query.limit, before_id=before)
        # One more look, so that the last page says so rather than leading to an empty one.
        more = len(page) == query.limit and bool(await recent(limit=1, before_id=page[-1].id))
        return DelegationList(
            delegations=[DelegationRecord.of(delegation) for delegation in page],
            next_before=page[-1].display_id if more else None,
        )

    async def delegation_tree(self, request: web.Request, requester: Requester, data: None) -> DelegationTree:
        tree = await self.services.delegation.tree(request.match_info["id"])
        return DelegationTree(
            root=f"D-{tree[0].root}",
            delegations=[DelegationRecord.of(node) for node in subtree(tree, tree[0].root)],
            text="\n".join(draw_tree(tree, utcnow())),
        )

    async def cancel_delegation(self, request: web.Request, requester: Requester, data: None) -> ChainCancelled:
        done = await self.services.delegation.cancel(requester, request.match_info["id"])
        return ChainCancelled(
            delegations=[DelegationRecord.of(node) for node in done.nodes],
            stopped=[f"D-{n}" for n in sorted(done.stopped)],
            with_agent=[node.display_id for node in done.with_agent],
            summary=done.summary(),
        )

    async def retry_delegation(self, request: web.Request, requester: Requester, data: None) -> DelegationRecord:
        return DelegationRecord.of(await self.services.delegation.retry(requester, request.match_info["id"]))

    # --- status --------------------------------------------------------------------------------

    def _add_status_routes(self) -> None:
        """The fleet as /status and `atomizer-hq status --json` show it; any authenticated caller may look.

        These probe without recording: an agent polling the API must not count as the monitor's probes,
        or its polling would change when a failure is confirmed and alerted.
        """
        self.add(
            Route(
                "GET",
                "/v1/status",
                self.fleet_status,
                summary="Every agent, probed now: state, port, model, latency, release, uptime, last delegation",
                response=FleetStatusOut,
            )
        )
        self.add(
            Route(
                "GET",
                "/v1/status/{agent}",
                self.agent_status,
                summary="One agent, probed now, with its uptime and recent state transitions",
                response=AgentStatusDetail,
                extra_responses={404: ErrorResponse},
            )
        )

    async def fleet_status(self, request: web.Request, requester: Requester, data: None) -> FleetStatusOut:
        fleet = await self.services.cluster.probe_all()
        overview = await collect_overview(self.services, fleet)
        summary = fleet_json(fleet)
        return FleetStatusOut(
            agents=[AgentStatusOut(**agent) for agent in _agents_out(fleet, overview)],
            counts=summary["counts"],
            took_ms=summary["took_ms"],
        )

    async def agent_status(self, request: web.Request, requester: Requester, data: None) -> AgentStatusDetail:
        name = self.services.config.require_agent(request.match_info["agent"]).name
        probed = await self.services.cluster.probe(name)
        fleet = FleetStatus([probed], probed.readiness.latency_s)
        [agent] = _agents_out(fleet, await collect_overview(self.services, fleet))
        monitor = self.services.monitor
        health = await monitor.health(name)
        return AgentStatusDetail(
            **agent,
            uptime_7d=await monitor.uptime(name, 7 * 86_400),
            confirmed=health.confirmed if health else None,
            confirmed_since=health.confirmed_since if health else None,
            silenced_by=health.silenced_by if health else None,
            transitions=[TransitionOut(**vars(t)) for t in await monitor.transitions(name, 20)],
        )

    # --- tasks -----------------------------------------------------------------------------------

    def _add_task_routes(self) -> None:
        """Thin fronts of TaskBoard: the same rules, validation and history as /task, the CLI and #task-board.

        Any caller may read; agents create tasks and change those assigned to them; operators and
        admins change any. Writes that name a `version` (or If-Match) are refused with 409 when the
        task changed since, never applied over someone else's change.
        """
        self.add(
            Route(
                "GET",
                "/v1/tasks",
                self.list_tasks,
                summary="Tasks, most urgent first (open ones unless open=false or a status is given)",
                response=TaskList,
                query=TaskQuery,
            )
        )
        self.add(
            Route(
                "POST",
                "/v1/tasks",
                self.create_task,
                summary="Add a task, created by the caller behind the token",
                response=TaskRecord,
                body=TaskIn,
                status=201,
                extra_responses={403: ErrorResponse},
            )
        )
        self.add(
            Route(
                "GET",
                "/v1/tasks/{id}",
                self.get_task,
                summary="One task (T-42 or 42) with its history and delegations; ETag is its version",
                response=TaskDetailOut,
                extra_responses={404: ErrorResponse},
            )
        )
        self.add(
            Route(
                "PATCH",
                "/v1/tasks/{id}",
                self.update_task,
                summary="Move a task to another status and/or assign it",
                response=TaskRecord,
                body=TaskPatch,
                extra_responses={403: ErrorResponse, 404: ErrorResponse, 409: ErrorResponse},
                description='Send the `version` you read (or If-Match: "<version>"): if the task changed since, '
                "the answer is 409 `conflict` and nothing is changed; reload and decide again. Without it the change "
                "applies to the current task. 403: agents change only tasks assigned to them. With both a status "
                "and an assignee, the status changes first (an agent may finish its task and hand it on); these are "
                "two writes, so a change slipping in between them gets the 409 after the status has moved. "
                "Asking for what the task already is (its status, its assignee) changes nothing: 200 with the record "
                "as it is, the same version, nothing in its history (a retry after a lost answer is no conflict).",
            )
        )

    async def list_tasks(self, request: web.Request, requester: Requester, query: TaskQuery) -> TaskList:
        board = self.services.tasks
        filters = {"assignee": query.assignee, "status": query.status, "open_only": query.open}
        tasks = await board.list(**filters, limit=query.limit, offset=query.offset)
        return TaskList(tasks=[TaskRecord.of(task) for task in tasks], total=await count_tasks(board, **filters))

    async def create_task(self, request: web.Request, requester: Requester, body: TaskIn) -> web.Response:
        task = await self.services.tasks.add(
            requester, body.title, assignee=body.assignee, priority=body.priority, due=body.due,
            description=body.description,
        )  # fmt: skip
        response = reply(TaskRecord.of(task), 201)
        response.headers.update({"Location": f"/v1/tasks/{task.display_id}", "ETag": f'"{task.version}"'})
        return response

    async def get_task(self, request: web.Request, requester: Requester, data: None) -> web.Response:
        detail = await self.services.tasks.show(request.match_info["id"])
        response = reply(TaskDetailOut.of_detail(detail))
        response.headers["ETag"] = f'"{detail.task.version}"'
        return response

    async def update_task(self, request: web.Request, requester: Requester, body: TaskPatch) -> web.Response:
        board = self.services.tasks
        version = _expected_version(body.version, request.headers.get("If-Match"))
        reassign = "assignee" in body.model_fields_set
        if body.status is None and not reassign:
            raise InvalidInput("nothing to change: send a status, an assignee (null to unassign), or both")
        task_id = request.match_info["id"]
        if body.status is None:
            task = await board.assign(requester, task_id, body.assignee, note=body.note, expected_version=version)
        elif reassign:  # both in one transaction: a bad assignee cannot leave the status half-applied
            task = await board.update(
                requester, task_id, status=body.status, assignee=body.assignee, note=body.note, expected_version=version
            )
        else:
            task = await board.move(requester, task_id, body.status, note=body.note, expected_version=version)
        response = reply(TaskRecord.of(task))
        response.headers["ETag"] = f'"{task.version}"'
        return response

    # --- heartbeats ------------------------------------------------------------------------------

    def _add_heartbeat_routes(self) -> None:
        """Thin fronts of HeartbeatService: the same decisions as /heartbeat and `atomizer-hq heartbeat`.

        Anyone may list; running one by hand needs an operator or admin token (an agent's token is
        refused even for its own heartbeat: the heartbeat supervises the agent, and the core decides
        that the same way for every front end); pausing and resuming need the admin token. An agent
        reports its own heartbeat with `seen`, for itself only.
        """
        refused = {403: ErrorResponse, 404: ErrorResponse}
        self.add(
            Route(
                "GET",
                "/v1/heartbeats",
                self.list_heartbeats,
                summary="The heartbeats atomizer-hq sends: schedule, policy, next slot, last result, pause",
                response=HeartbeatList,
            )
        )
        self.add(
            Route(
                "POST",
                "/v1/heartbeats/{agent}/run",
                self.run_heartbeat,
                summary="Send an agent's heartbeat now and verify it level by level (operator or admin)",
                response=HeartbeatRunOut,
                extra_responses={400: ErrorResponse, **refused},
                description="Answers when the run ends (up to the job's completion_timeout): 200 with the recorded "
                "run, whatever its status (`failed` says whether it counts as a failure). 400: atomizer-hq sends "
                "no heartbeat for that agent. 403: agents' tokens, even for their own heartbeat.",
            )
        )
        self.add(
            Route(
                "POST",
                "/v1/heartbeats/{agent}/pause",
                self.pause_heartbeat,
                summary="Pause an agent's heartbeats for a while, or until resumed (admin)",
                response=HeartbeatPaused,
                body=HeartbeatPauseIn,
                extra_responses=refused,
            )
        )
        self.add(
            Route(
                "POST",
                "/v1/heartbeats/{agent}/resume",
                self.resume_heartbeat,
                summary="Resume an agent's paused heartbeats (admin)",
                response=HeartbeatPaused,
                extra_responses=refused,
            )
        )
        self.add(
            Route(
                "POST",
                "/v1/heartbeats/{agent}/seen",
                self.heartbeat_seen,
                summary="Report an agent's own heartbeat: the agent itself, or an operator",
                response=HeartbeatSeen,
                extra_responses=refused,
                description="For agents that run their own heartbeat ([heartbeat.<agent>] expect_every): without "
                "a sign for that long (plus seen_grace), #it-ops is alerted. A post by the agent's account in "
                "#daily-standup counts too. 403: another agent's token.",
            )
        )

    async def list_heartbeats(self, request: web.Request, requester: Requester, data: None) -> HeartbeatList:
        return HeartbeatList(heartbeats=[HeartbeatJobOut.of(job) for job in await self.services.heartbeats.status()])

    async def run_heartbeat(self, request: web.Request, requester: Requester, data: None) -> HeartbeatRunOut:
        run = await self.services.heartbeats.run_now(requester, request.match_info["agent"])
        return HeartbeatRunOut.of(run)

    async def pause_heartbeat(
        self, request: web.Request, requester: Requester, body: HeartbeatPauseIn
    ) -> HeartbeatPaused:
        seconds = pause_seconds(body.duration)
        agent = self.services.config.require_agent(request.match_info["agent"]).name
        pause = await self.services.heartbeats.pause(requester, agent, seconds)
        return HeartbeatPaused(agent=agent, paused_until=pause.until, changed=pause.already is None)

    async def resume_heartbeat(self, request: web.Request, requester: Requester, data: None) -> HeartbeatPaused:
        agent = self.services.config.require_agent(request.match_info["agent"]).name
        already = await self.services.heartbeats.resume(requester, agent)
        return HeartbeatPaused(agent=agent, paused_until=None, changed=already is None)

    async def heartbeat_seen(self, request: web.Request, requester: Requester, data: None) -> HeartbeatSeen:
        named = request.match_info["agent"]
        if requester.is_agent and requester.name != named:
            raise NotAllowed(
                f"agent {requester.name} may report only its own heartbeat, not {named}'s; "
                f"call /v1/heartbeats/{requester.name}/seen"
            )
        if not requester.is_agent and requester.level < AccessLevel.OPERATOR:
            raise NotAllowed(f"reporting an agent's heartbeat needs the operator level; {requester.describe()} is not")
        agent = self.services.config.require_agent(named).name
        now = utcnow()
        await self.services.heartbeats.seen(agent, now)
        return HeartbeatSeen(agent=agent, seen_at=iso(now))

    # --- OpenAPI ---------------------------------------------------------------------------------

    def openapi(self) -> dict[str, Any]:
        """The OpenAPI 3.1 document of the registered routes (built once, rebuilt after `add`)."""
        if self._openapi is None:
            self._openapi = build_openapi(self.routes, title="atomizer-hq loopback API", version=VERSION)
        return self._openapi

    # --- life cycle ------------------------------------------------------------------------------

    async def start(self, host: str | None = None, port: int | None = None, *, allow_remote: bool = False) -> None:
        """Listen on host:port (api.host/api.port by default; port 0 picks a free one)."""
        host = self.config.host if host is None else host
        port = self.config.port if port is None else port
        if not allow_remote and not is_loopback_host(host):
            raise InvalidInput(
                f"refusing to serve the loopback API on {host or 'every interface'!r}: it is for agents on "
                "this host only; set api.host to 127.0.0.1 (or pass allow_remote=True deliberately)"
            )
        if self._runner is not None:
            raise RuntimeError("the loopback API is already started")
        runner = web.AppRunner(self.app, access_log_class=AccessLog, access_log=access_log, shutdown_timeout=2.0)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
        except OSError as exc:
            await runner.cleanup()
            raise AtomizerError(
                f"cannot listen on {host}:{port} for the loopback API: {exc.strerror or exc}; "
                "is another atomizer-hq running? Otherwise pick a free api.port"
            ) from None
        self._runner = runner
        self._host = host
        log.info("loopback API listening on %s", self.url)

    async def stop(self) -> None:
        """Stop listening and finish the requests under way; safe to call twice."""
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    @property
    def port(self) -> int:
        if self._runner is None or not self._runner.addresses:
            raise RuntimeError("the loopback API is not started")
        return int(self._runner.addresses[0][1])

    @property
    def url(self) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}"


# --- helpers -----------------------------------------------------------------------------------


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


def _expected_version(body_version: int | None, if_match: str | None) -> int | None:
    """The version a write expects, from the body or an If-Match header (`3`, `"3"` or `W/"3"`)."""
    if if_match is None or not if_match.strip():
        return body_version
    text = if_match.strip().removeprefix("W/").strip('"')
    if not text.isdigit() or int(text) < 1:
        raise InvalidInput(f'If-Match: {if_match.strip()[:40]!r} is not a task version; send e.g. If-Match: "3"')
    header_version = int(text)
    if body_version is not None and body_version != header_version:
        raise InvalidInput(
            f"version: the body says {body_version} and If-Match says {header_version}; send one of them"
        )
    return header_version


def _query_input(request: web.Request, model: type[BaseModel]) -> dict[str, Any]:
    """The query string as a model's input: repeated keys, or any key of a list field, give lists."""
    lists = _list_fields(model)
    data: dict[str, Any] = {}
    for key in dict.fromkeys(request.query):
        values = request.query.getall(key)
        data[key] = values if key in lists or len(values) > 1 else values[0]
    return data


def _list_fields(model: type[BaseModel]) -> set[str]:
    properties = model.model_json_schema().get("properties", {})
    return {
        name
        for name, schema in properties.items()
        if schema.get("type") == "array" or any(option.get("type") == "array" for option in schema.get("anyOf", ()))
    }


def _validate(model: type[BaseModel], data: Any, where: str) -> BaseModel:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidInput(_describe(exc, where)) from None


def _describe(exc: ValidationError, where: str) -> str:
    """`invalid body: count: Input should be greater than or equal to 1; name: Field required`."""
    problems = []
    for error in exc.errors(include_url=False, include_input=False):
        loc = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in error["loc"]).lstrip(".")
        problems.append(f"{loc or f'(the {where})'}: {error['msg']}")
    return f"invalid {where}: " + "; ".join(problems)


def build_openapi(routes: list[Route], *, title: str, version: str) -> dict[str, Any]:
    """OpenAPI 3.1 from the routes; pydantic's JSON Schemas (2020-12) go under components/schemas."""
    wanted: list[tuple[type[BaseModel], JsonSchemaMode]] = [(ErrorResponse, "serialization")]
    for route in routes:
        for model in (route.body, route.query):
            if model is not None:
                wanted.append((model, "validation"))
        for model in (route.response, *route.extra_responses.values()):
            if model is not None:
                wanted.append((model, "serialization"))
    refs, top = models_json_schema(list(dict.fromkeys(wanted)), ref_template=SCHEMA_REF)
    schemas: dict[str, Any] = top.get("$defs", {})

    def ref(model: type[BaseModel], mode: JsonSchemaMode) -> dict[str, Any]:
        return dict(refs[(model, mode)])

    def content(schema: dict[str, Any], description: str) -> dict[str, Any]:
        return {"description": description, "content": {"application/json": {"schema": schema}}}

    error = ref(ErrorResponse, "serialization")
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        parameters: list[dict[str, Any]] = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "integer" if integer else "string"}}
            for name, integer in route.path_parameters()
        ]
        if route.query is not None:
            query_schema = schemas[ref(route.query, "validation")["$ref"].rsplit("/", 1)[-1]]
            required = set(query_schema.get("required", ()))
            for name, schema in query_schema.get("properties", {}).items():
                parameter = {"name": name, "in": "query", "required": name in required, "schema": schema}
                if "description" in schema:
                    parameter["description"] = schema["description"]
                parameters.append(parameter)
        answer = ref(route.response, "serialization") if route.response else {"type": "object"}
        responses: dict[str, Any] = {str(route.status): content(answer, "Success")}
        for status, model in route.extra_responses.items():
            responses[str(status)] = content(ref(model, "serialization"), model.__name__)
        if route.body is not None or route.query is not None:
            responses.setdefault("400", content(error, "Invalid input (invalid_input, invalid_json)"))
        if route.body is not None:
            responses.setdefault("413", content(error, "Request body over the size limit"))
        if route.auth:
            responses.setdefault("401", content(error, "Missing or unknown bearer token"))
        responses["default"] = content(error, "Any other error: see `error` for the code")
        operation: dict[str, Any] = {
            "operationId": route.operation_id,
            "summary": route.summary,
            "security": [{SECURITY_SCHEME: []}] if route.auth else [],
            "responses": responses,
        }
        if route.description:
            operation["description"] = route.description
        if parameters:
            operation["parameters"] = parameters
        if route.body is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": ref(route.body, "validation")}},
            }
        paths.setdefault(route.openapi_path, {})[route.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": version,
            "description": "Loopback API of atomizer-hq. Send `Authorization: Bearer <token>`; your token is "
            'your identity. Errors are `{"error": CODE, "detail": TEXT}`.',
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {SECURITY_SCHEME: {"type": "http", "scheme": "bearer"}},
        },
    }
