"""Delegation: one authority model, normalized targets, and no delegation ever lost.

A delegation is written to SQLite before anything is sent, then sent with its own Idempotency-Key.
What happens on failure depends on whether the request may have reached the gateway, and on whether
that gateway honours idempotency keys (openclaw-hooks.md): we retry only when a repeat cannot start
the same work twice; otherwise the delegation becomes `unconfirmed` and a person decides.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sqlite3
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol, TypeVar

from bot.audit import Statement, audit_row
from bot.authz import AccessLevel, Requester
from bot.clock import Clock, iso, utcnow
from bot.config import HOOK_BODY_LIMIT, AgentConfig, ClusterConfig
from bot.errors import (
    AgentUnavailable,
    AtomizerError,
    GatewayError,
    GatewayProtocolError,
    HookRateLimited,
    InvalidInput,
    InvalidTarget,
    NotAllowed,
    PayloadTooLarge,
    StoreError,
)
from bot.gateway import AdmissionTimeout, AgentHook, GatewayClient, HookAccepted, encode_body
from bot.store import Store
from bot.targets import GuildDirectory, StaticDirectory, TargetNormalizer

log = logging.getLogger(__name__)
T = TypeVar("T")

Status = Literal["queued", "sending", "accepted", "failed", "unconfirmed", "expired"]
FINAL_STATUSES: frozenset[str] = frozenset({"accepted", "failed", "unconfirmed", "expired"})
STATUSES: tuple[str, ...] = ("queued", "sending", "accepted", "failed", "unconfirmed", "expired")
BACKOFF_S = (1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0)
LAST_ATTEMPT_LEAD_S = 1.0  # the last attempt, this long before the window closes (a late wake-up still makes it)
_INVISIBLE = re.compile(r"[\u200b-\u200f\u2028-\u202e\u2060-\u2064\ufeff]")  # what the task board drops from titles


def parse_id(text: str | int) -> int:
    """`D-42`, `d42` or `42` -> 42 (`-42` is a slip, not D-42)."""
    raw = str(text).strip().upper()
    if raw.startswith("D"):
        raw = raw[1:].removeprefix("-")
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:  # "²" is a digit to isdigit; SQLite stops at 2**63
        raise InvalidInput(f"{text!r} is not a delegation id; write it as D-42 (or 42)")
    return int(raw)


@dataclass(frozen=True)
class Delegation:
    """One stored delegation, as every front end shows it."""

    id: int
    idem_key: str  # the Idempotency-Key every attempt of this delegation carries
    created_at: str
    updated_at: str
    requester_kind: str
    requester: str
    requester_user_id: str | None
    via: str | None
    front_end: str
    agent: str
    message: str
    deliver: bool
    target: str | None
    task: str | None
    status: str
    attempts: int
    run_id: str | None
    last_error: str | None
    next_attempt_at: str | None
    expires_at: str
    accepted_at: str | None
    latency_ms: float | None
    workflow_step: str | None = None  # `W-3/mesh#1` when a workflow step sent it
    parent_id: int | None = None  # the delegation its requester was working on (a chain), if any
    root_id: int | None = None  # the first delegation of its chain; itself for a root
    depth: int = 1  # 1 for a root, 2 for its child, …
    cancelled_at: str | None = None  # `delegations cancel` stopped the chain from here (nothing new hangs under it)
    needs: str | None = None  # a routed one (`auto`): the capabilities it needs, comma-separated; None when named
    pinned: bool = False  # a request may have reached its agent: it never moves to another (`_rerouted`)

    @property
    def needed(self) -> tuple[str, ...]:
        return tuple(self.needs.split(",")) if self.needs else ()

    @property
    def display_id(self) -> str:
        return f"D-{self.id}"

    @property
    def root(self) -> int:
        return self.root_id if self.root_id is not None else self.id

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES

    def to_dict(self) -> dict[str, Any]:
        """The record shape every front end returns (CLI --json, API, tests)."""
        return {
            "id": self.display_id,
            "agent": self.agent,
            "status": self.status,
            "run_id": self.run_id,
            "message": self.message,
            "deliver": self.deliver,
            "target": self.target,
            "task": self.task,
            "requester": {"kind": self.requester_kind, "name": self.requester, "via": self.via},
            "front_end": self.front_end,
            "attempts": self.attempts,
            "last_error": self.last_error,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "accepted_at": self.accepted_at,
            "next_attempt_at": self.next_attempt_at,
            "expires_at": self.expires_at,
            "latency_ms": self.latency_ms,
            "workflow_step": self.workflow_step,
            "parent": f"D-{self.parent_id}" if self.parent_id is not None else None,
            "root": f"D-{self.root}",
            "depth": self.depth,
            "cancelled_at": self.cancelled_at,
            "needs": list(self.needed) or None,
        }


_COLUMNS = ", ".join(f.name for f in Delegation.__dataclass_fields__.values())  # type: ignore[attr-defined]
_INSERT_DELEGATION = (
    "INSERT INTO delegations (idem_key, created_at, updated_at, requester_kind, requester, requester_user_id, via, "
    "front_end, agent, message, deliver, target, task, status, attempts, next_attempt_at, expires_at, workflow_step, "
    "parent_id, root_id, depth, needs) "
    f"VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'sending', 1, NULL, ?, ?, ?, ?, ?, ?) RETURNING {_COLUMNS}"
)
_WIDEST_ID = f"D-{2**63 - 1}"  # the size check counts the footer with the longest id SQLite can give


def chain_footer(label: str) -> str:
    """What the agent reads under the message: the id to hang its own sub-delegations under."""
    return f"\n\n[atomizer-hq {label}: to hand part of this on, pass --parent {label}]"


# A workflow step's delegation is sent only while its attempt is under way (`W-3/mesh#1` dispatching or running):
# a step that ended (a result by hand, a deadline, a cancel) takes its queued delegation with it. The follow-ups
# the engine sends (`W-3/mesh#1/stop`) and plain delegations are not tied to a step.
_STEP_UNDER_WAY = (
    "(delegations.workflow_step IS NULL OR delegations.workflow_step LIKE '%/stop' OR EXISTS (SELECT 1 FROM "
    "workflow_steps s WHERE s.status IN ('dispatching', 'running') AND delegations.workflow_step = "
    "'W-' || s.run_id || '/' || s.step_id || '#' || s.attempt))"
)


def expire_queued_statement(delegation_id: int, reason: str, at: datetime) -> tuple[str, tuple[Any, ...]]:
    """The write that stops the outbox from sending a still-queued delegation (no-op once it is being sent); for a
    caller that must do it in its own transaction (a workflow step that ends)."""
    return (
        "UPDATE delegations SET status = 'expired', next_attempt_at = NULL, last_error = ?, updated_at = ? "
        "WHERE id = ? AND status = 'queued'",
        (reason, iso(at), delegation_id),
    )


def _is_stop(workflow_step: str | None) -> bool:
    return workflow_step is not None and workflow_step.endswith("/stop")


def _row_to_delegation(row: Any) -> Delegation:
    values = dict(row)
    values["deliver"] = bool(values["deliver"])
    values["pinned"] = bool(values["pinned"])
    return Delegation(**values)


@dataclass(frozen=True)
class Reroute:
    """Routing's answer for a routed delegation its agent did not admit: the agent, why, and the decision's audit
    row (written in the transaction that moves the delegation, so the trail never names a move that did not happen)."""

    agent: str
    explanation: str
    audit: Statement


@dataclass(frozen=True)
class Decision:
    """Whether a requester may delegate to an agent, why, and who could."""

    allowed: bool
    reason: str

    def raise_if_refused(self) -> None:
        if not self.allowed:
            raise NotAllowed(self.reason)


def authorize(config: ClusterConfig, requester: Requester, agent: str) -> Decision:
    """Whether `requester` may delegate to `agent`: /delegate's rule, also used to plan a workflow's hops."""
    # "Who could" scans the whole delegation matrix: worked out only for a refusal, which shows it.
    if requester.is_agent:
        if requester.name == agent:
            return Decision(False, f"{agent} may not delegate to itself. {_who_could(config, agent)}")
        allowed = config.delegation_targets(requester.name)
        if agent in allowed:
            return Decision(True, f"{requester.name} may delegate to {agent} (delegates_to in config)")
        scope = f"may delegate only to {', '.join(allowed)}" if allowed else "may not delegate to any agent"
        return Decision(False, f"{requester.name} may not delegate to {agent}: it {scope}. {_who_could(config, agent)}")
    if requester.level >= AccessLevel.OPERATOR:
        return Decision(True, f"{requester.name} is {requester.level.label}: may delegate to any agent")
    level = "has no atomizer-hq role" if requester.level is AccessLevel.NONE else "is a viewer"
    return Decision(
        False, f"{requester.name} {level}: delegating needs the operator level. {_who_could(config, agent)}"
    )


def _who_could(config: ClusterConfig, agent: str) -> str:
    agents = [a for a in config.agent_names if agent in config.delegation_targets(a)]
    people = "a person with the operator or admin role"
    if agents:
        return f"Who could: {', '.join(agents)}, or {people}."
    return f"Who could: {agent} itself (taking it on directly), or {people}."


@dataclass(frozen=True)
class DelegationResult:
    decision: Decision
    payload: dict[str, Any]  # the exact hook body sent (or that would be sent)
    delegation: Delegation | None = None  # None for a dry run

    @property
    def dry_run(self) -> bool:
        return self.delegation is None


class TaskLink(Protocol):
    """What delegation needs of the task board (`/delegate … task:T-42`)."""

    async def require_task_ref(self, text: str) -> str: ...

    async def delegation_accepted(self, task_ref: str, agent: str, delegation_id: str, requester: Requester) -> Any: ...


class DelegationService:
    """Decides, records, sends and retries delegations; shared by every front end."""

    def __init__(
        self,
        config: ClusterConfig,
        store: Store,
        gateway: GatewayClient,
        *,
        clock: Clock = utcnow,
        retry_window_s: float = 600.0,
        directory: GuildDirectory | None = None,
        tasks: TaskLink | None = None,
    ) -> None:
        self._config = config
        self._store = store
        self._gateway = gateway
        self._clock = clock
        self.retry_window = timedelta(seconds=retry_window_s)
        self.directory: GuildDirectory = directory or StaticDirectory.from_config(config)
        self.changed = asyncio.Condition()  # notified whenever a delegation's status changes
        self._tasks = tasks
        # Accepted by the agent while the database could not record it: recorded on the next round.
        self._unrecorded: dict[int, tuple[Delegation, str, float]] = {}
        # Told the agent's name when its gateway did not admit a hook in time (routing learns its cap from it).
        self.on_admission_timeout: Callable[[str], Awaitable[None]] | None = None
        # A routed delegation its agent did not admit: another agent for it (RoutingService.reroute, wired by
        # bot.services), told the delegation, why, and every agent tried; None to wait for the one it has.
        self.rerouter: Callable[[Delegation, str, frozenset[str]], Awaitable[Reroute | None]] | None = None
        # The workflow engine's step follows its delegation's agent: `on_rerouted` runs inside the transaction that
        # moves it (the connection, the delegation as moved, why in words), `after_rerouted` once it is committed.
        self.on_rerouted: Callable[[sqlite3.Connection, Delegation, str], None] | None = None
        self.after_rerouted: Callable[[Delegation], Awaitable[None]] | None = None

    # --- authority ----------------------------------------------------------------------------

    def authorize(self, requester: Requester, agent: str) -> Decision:
        """One model for people (by level) and agents (by the matrix in config)."""
        return authorize(self._config, requester, agent)

    # --- making a delegation -----------------------------------------------------------------

    async def delegate(
        self,
        requester: Requester,
        agent: str,
        message: str,
        *,
        target: str | None = None,
        deliver: bool = True,
        task: str | None = None,
        dry_run: bool = False,
        origin: str | None = None,
        directory: GuildDirectory | None = None,
        workflow_step: str | None = None,
        parent: int | str | None = None,
        needs: tuple[str, ...] = (),
    ) -> DelegationResult:
        """Validate, authorize, record, then try to send once; the outbox retries what must be retried.

        `origin` is the delivery target of the place the request came from (e.g. the channel a slash
        command was typed in); it is the default target. `workflow_step` (`W-3/mesh#1`) is unique: a
        second delegation for the same attempt raises DuplicateWorkflowStep, and nothing is sent.
        `parent` (`D-12`) hangs it under a delegation the requesting agent received (a chain): see `_chain_link`.
        `needs`: routing chose `agent` for these capabilities (`auto`); if it does not admit the work, another agent
        that has them may take it (`_rerouted`).
        """
        if dry_run:
            name, text, delivery, hook = self._validated(agent, message, target, deliver, origin, directory)
            decision = self.authorize(requester, name)
            if decision.allowed and parent is not None:
                try:
                    await self._chain_link(requester, name, parent)
                except ChainRefused as exc:
                    decision = Decision(False, str(exc))
            return DelegationResult(decision, hook.body())
        checked = await self._checked(requester, agent, message, target, deliver, origin, directory)
        name, text, delivery, _, decision = checked
        link = None
        if parent is not None:
            link = await self._audited(requester, name, parent, self._chain_link(requester, name, parent))
        task_ref = await self._task_ref(task)
        # Recorded already claimed for its first attempt (`sending`, one trip to the database): from
        # here on, a crash leaves it to `recover`, which knows the request may have arrived.
        recording = self._record(requester, name, text, deliver, delivery, task_ref, decision, workflow_step, link,
                                 needs)  # fmt: skip
        delegation = await self._audited(requester, name, parent, recording)
        delegation = await self._send(self._config.require_agent(name), delegation)
        return DelegationResult(decision, self._delegation_hook(delegation).body(), delegation)

    async def _audited(self, requester: Requester, agent: str, parent: int | str | None, work: Awaitable[T]) -> T:
        """`work`, with a chain refusal audited (naming the chain) before it is raised."""
        try:
            return await work
        except ChainRefused as exc:
            detail = {"reason": str(exc), "parent": str(parent), **({"chain": exc.chain} if exc.chain else {})}
            await self._audit(requester, agent, "refused", detail)
            raise

    async def _chain_link(self, requester: Requester, agent: str, parent_ref: int | str) -> ChainLink:
        """Where a sub-delegation hangs, or ChainRefused: the parent must be a delegation to the requesting agent
        that is still live, no agent above in the chain is handed work of it again, and the caps hold."""
        if not str(parent_ref).strip():  # given but blank is a slip (an unset $PARENT), not "no parent"
            raise InvalidInput(
                "the parent is empty; give the delegation you are working on (e.g. D-12), or leave it out"
            )
        parent = await self.get(parent_ref)
        root = parent.root
        chain = f"D-{root}"
        if not requester.is_agent:
            raise ChainRefused(
                f"--parent {parent.display_id}: only an agent hangs work under a delegation it received; "
                f"{requester.describe()} starts a chain of its own (leave --parent out)",
                chain,
            )
        if parent.agent != requester.name:
            raise ChainRefused(
                f"{parent.display_id} was delegated to {parent.agent}, not to {requester.name}: an agent hangs work "
                f"only under a delegation it received (chain {chain})",
                chain,
            )
        if parent.status in ("failed", "expired"):
            raise ChainRefused(
                f"{parent.display_id} is {parent.status}: {parent.agent} is not working on it, so nothing hangs "
                f"under it (chain {chain}); delegate without --parent, or have a person retry {parent.display_id}",
                chain,
            )
        tree = await self.tree(root)
        path = ancestry(tree, parent.id)
        cancelled = next((node for node in path if node.cancelled_at), None)
        if cancelled is not None:
            raise ChainRefused(
                f"chain {chain} was cancelled at {cancelled.display_id} ({cancelled.cancelled_at[:16]} UTC): "
                "nothing new hangs under it",
                chain,
            )
        if agent in agents_above(path):
            drawn = " → ".join(f"{node.display_id} {node.agent}" for node in path)
            raise ChainRefused(
                f"{agent} is already in chain {chain} above {parent.display_id} ({drawn}): an agent is not handed "
                "work of a chain it is working on (no loops); do that part yourself or report back",
                chain,
            )
        limits = self._config.delegation
        if parent.depth + 1 > limits.max_depth:
            raise ChainLimit(
                f"chain {chain} may not go deeper: {parent.display_id} is at depth {parent.depth} and the limit is "
                f"{limits.max_depth} ([delegation] max_depth in {self._config.source}); {requester.name} should do "
                "this part itself, or ask a person to delegate it",
                chain,
            )
        if len(tree) >= limits.max_per_root:
            raise ChainLimit(self._per_root_refusal(chain, len(tree)), chain)
        return ChainLink(parent.id, root, parent.depth + 1)

    async def chain_members(self, parent_ref: int | str) -> tuple[str, frozenset[str]]:
        """The chain a sub-delegation under `parent_ref` joins (`D-12`) and the agents in it down to the parent: the
        no-loops rule hands none of them its work again, so routing leaves them out."""
        parent = await self.get(parent_ref)
        return f"D-{parent.root}", frozenset(agents_above(ancestry(await self.tree(parent.root), parent.id)))

    def _per_root_refusal(self, chain: str, count: int) -> str:
        return (
            f"chain {chain} has {count} delegations already, the limit per chain is "
            f"{self._config.delegation.max_per_root} ([delegation] max_per_root in {self._config.source}); "
            "finish or cancel some of them, or ask a person to start a new chain"
        )

    async def preflight(
        self,
        requester: Requester,
        agent: str,
        message: str,
        *,
        target: str | None = None,
        deliver: bool = True,
        origin: str | None = None,
        directory: GuildDirectory | None = None,
    ) -> DelegationResult:
        """Everything `delegate` checks, without recording or sending: bad input raises, a refusal is
        audited and raises NotAllowed. Front ends that must answer before doing slow work call it first."""
        *_, hook, decision = await self._checked(requester, agent, message, target, deliver, origin, directory)
        return DelegationResult(decision, hook.body())

    async def _checked(
        self,
        requester: Requester,
        agent: str,
        message: str,
        target: str | None,
        deliver: bool,
        origin: str | None,
        directory: GuildDirectory | None,
    ) -> tuple[str, str, str | None, AgentHook, Decision]:
        name, text, delivery, hook = self._validated(agent, message, target, deliver, origin, directory)
        decision = self.authorize(requester, name)
        if not decision.allowed:
            await self._audit(requester, name, "refused", {"reason": decision.reason})
            raise NotAllowed(decision.reason)
        return name, text, delivery, hook, decision

    def _validated(
        self,
        agent: str,
        message: str,
        target: str | None,
        deliver: bool,
        origin: str | None,
        directory: GuildDirectory | None,
    ) -> tuple[str, str, str | None, AgentHook]:
        """The agent's name, the instruction, the normalized target and the hook, or a typed error."""
        name = self._config.require_agent(agent).name
        return name, *self._request(message, target, deliver, origin, directory)

    def validate_request(
        self,
        message: str,
        *,
        target: str | None = None,
        deliver: bool = True,
        origin: str | None = None,
        directory: GuildDirectory | None = None,
    ) -> None:
        """The request's own checks (instruction, target, size), before any agent is named: `auto` routes, and
        audits its choice, only for a request that could then be sent."""
        self._request(message, target, deliver, origin, directory)

    def _request(
        self, message: str, target: str | None, deliver: bool, origin: str | None, directory: GuildDirectory | None
    ) -> tuple[str, str | None, AgentHook]:
        text = message.strip()
        if not _INVISIBLE.sub("", text).strip():  # zero-width characters alone say nothing either
            raise InvalidInput("the instruction is empty; write what the agent should do")
        delivery = self._resolve_target(target, origin, directory) if deliver else None
        hook = self._hook(text, deliver, delivery, "D-new")
        size = len(encode_body(self._hook(text, deliver, delivery, _WIDEST_ID).body()))
        if size > HOOK_BODY_LIMIT:
            raise PayloadTooLarge(
                f"the instruction is too long for the gateway: the request would be {size:,} bytes, the limit is "
                f"{HOOK_BODY_LIMIT:,}; shorten it by at least {size - HOOK_BODY_LIMIT:,} bytes"
            )
        return text, delivery, hook

    async def _task_ref(self, task: str | None) -> str | None:
        if task is None or not task.strip():
            return None
        if self._tasks is None:
            raise InvalidInput("this atomizer-hq has no task board to link a delegation to")
        return await self._tasks.require_task_ref(task)

    def _resolve_target(self, target: str | None, origin: str | None, directory: GuildDirectory | None) -> str:
        normalizer = TargetNormalizer(self._config, directory or self.directory)
        if target is not None:
            if not target.strip():  # given but blank is a slip (`--to "$CHANNEL"` unset), not "the default"
                raise InvalidTarget(
                    "the delivery target is empty; write user:<id>, channel:<id>, #channel, @member or a channel "
                    "role such as technical, or leave the target out to deliver where the default says"
                )
            return str(normalizer.normalize(target))
        if origin is not None:
            return str(normalizer.normalize(origin))
        if "technical" in self._config.channels:
            return f"channel:{self._config.channels['technical']}"
        raise InvalidTarget(
            "no delivery target: give one (user:<id>, channel:<id>, #channel, @member or a channel role), "
            "configure channels.technical as the default, or do not deliver"
        )

    @staticmethod
    def _hook(message: str, deliver: bool, target: str | None, label: str, *, footer: bool = True) -> AgentHook:
        """The hook body; the message ends with the chain footer (the id to pass as --parent) unless `footer` is
        off (a workflow's "stop" follow-up: nothing there to hand on)."""
        if footer:
            message += chain_footer(label)
        if deliver and target is not None:
            return AgentHook(message=message, name=f"atomizer-hq {label}", deliver=True, channel="discord", to=target)
        return AgentHook(message=message, name=f"atomizer-hq {label}", deliver=False)

    def _delegation_hook(self, delegation: Delegation) -> AgentHook:
        """The hook of a recorded delegation: the same body on every attempt (its key replays the same run)."""
        footer = not _is_stop(delegation.workflow_step)
        return self._hook(delegation.message, delegation.deliver, delegation.target, delegation.display_id,
                          footer=footer)  # fmt: skip

    async def _record(
        self,
        requester: Requester,
        agent: str,
        message: str,
        deliver: bool,
        target: str | None,
        task: str | None,
        decision: Decision,
        workflow_step: str | None = None,
        link: ChainLink | None = None,
        needs: tuple[str, ...] = (),
    ) -> Delegation:
        now = self._clock()
        values = (
            uuid.uuid4().hex, iso(now), iso(now), requester.kind, requester.name, requester.user_id,
            requester.via, requester.front_end, agent, message, int(deliver), target, task,
            iso(now + self.retry_window), workflow_step,
            *((link.parent_id, link.root_id, link.depth) if link else (None, None, 1)), ",".join(needs) or None,
        )  # fmt: skip
        audited: dict[str, Any] = {}
        if link is not None:
            audited = {"parent": f"D-{link.parent_id}", "chain": f"D-{link.root_id}", "depth": link.depth}
        max_per_root = self._config.delegation.max_per_root

        def record(conn: sqlite3.Connection) -> Any:
            # The row and its audit record in one transaction and one trip to the database thread;
            # RETURNING gives the row as stored, so it is not read again.
            if link is not None:  # checked before, and again here: two children at once cannot both take the last
                chain = f"D-{link.root_id}"
                count = conn.execute("SELECT count(*) FROM delegations WHERE root_id = ?", (link.root_id,)).fetchone()
                if count[0] >= max_per_root:
                    raise ChainLimit(self._per_root_refusal(chain, count[0]), chain)
                # a cancel marks the whole subtree, so a parent cancelled meanwhile shows it here
                parent = conn.execute("SELECT cancelled_at FROM delegations WHERE id = ?", (link.parent_id,)).fetchone()
                if parent[0] is not None:
                    why = f"chain {chain} was cancelled ({parent[0][:16]} UTC): nothing new hangs under it"
                    raise ChainRefused(why, chain)
            try:
                row = conn.execute(_INSERT_DELEGATION, values).fetchall()[0]
            except sqlite3.IntegrityError as exc:
                if workflow_step is not None and "workflow_step" in str(exc):
                    raise DuplicateWorkflowStep(workflow_step) from None
                raise
            if link is None:  # a root: its chain is itself
                row = conn.execute(
                    f"UPDATE delegations SET root_id = id WHERE id = ? RETURNING {_COLUMNS}", (row["id"],)
                ).fetchall()[0]
            detail = {"delegation": f"D-{row['id']}", **audited}
            conn.execute(*audit_row(requester, "delegate", agent, "allowed", detail, now))
            return row

        return _row_to_delegation(await self._store.atomically(record))

    async def _audit(self, requester: Requester, agent: str, decision: str, detail: dict[str, Any]) -> None:
        row = audit_row(requester, "delegate", agent, decision, detail, self._clock())
        await self._store.atomically(lambda conn: conn.execute(*row))

    # --- reading ------------------------------------------------------------------------------

    async def get(self, delegation_id: int | str) -> Delegation:
        number = parse_id(delegation_id)
        row = await self._store.fetchone(f"SELECT {_COLUMNS} FROM delegations WHERE id = ?", (number,))
        if row is None:
            raise UnknownDelegation(f"no delegation D-{number}; list recent ones with `atomizer-hq delegations`")
        return _row_to_delegation(row)

    async def tree(self, delegation_id: int | str) -> list[Delegation]:
        """Every delegation of the chain `delegation_id` belongs to (its root's tree), oldest first."""
        delegation = await self.get(delegation_id)
        rows = await self._store.fetchall(
            f"SELECT {_COLUMNS} FROM delegations WHERE root_id = ? ORDER BY id", (delegation.root,)
        )
        return [_row_to_delegation(row) for row in rows] or [delegation]

    async def trees(self, root_ids: list[int]) -> dict[int, list[Delegation]]:
        """The chains of several roots at once (a workflow run's steps), oldest first; roots with no children too."""
        if not root_ids:
            return {}
        marks = ", ".join("?" * len(root_ids))
        rows = await self._store.fetchall(
            f"SELECT {_COLUMNS} FROM delegations WHERE root_id IN ({marks}) ORDER BY id", tuple(root_ids)
        )
        found: dict[int, list[Delegation]] = {}
        for row in rows:
            delegation = _row_to_delegation(row)
            found.setdefault(delegation.root, []).append(delegation)
        return found

    async def cancel(self, requester: Requester, delegation_id: int | str) -> ChainCancel:
        """Stop a delegation and everything under it that has not been sent (queued: expired now); what is with an
        agent already is said, not undone. Nothing new may hang under it afterwards.

        Who: a person with the operator level, or the agent that made the delegation (its own chain below it)."""
        delegation = await self.get(delegation_id)
        own = requester.is_agent and delegation.requester_kind == "agent" and delegation.requester == requester.name
        if not own and (requester.is_agent or requester.level < AccessLevel.OPERATOR):
            maker = f"{delegation.requester_kind} {delegation.requester}"
            raise NotAllowed(
                f"cancelling {delegation.display_id} needs the operator level, or being the agent that made it "
                f"({maker}); {requester.describe()} is neither"
            )
        if delegation.workflow_step is not None:
            run = delegation.workflow_step.partition("/")[0]
            raise InvalidInput(
                f"{delegation.display_id} is workflow step {delegation.workflow_step}'s delegation: cancel the run "
                f"instead (atomizer-hq workflow cancel {run}), which stops the step and what hangs under it"
            )
        return await self.stop_chain(requester, delegation, f"cancelled by {requester.name}")

    async def stop_chain(self, requester: Requester, delegation: Delegation, why: str) -> ChainCancel:
        """`cancel` once decided (also a workflow run's cancel, for each step's chain): the subtree is marked
        cancelled, its queued delegations expire, in one transaction."""
        now = self._clock()
        reason = f"{why} (chain {delegation.display_id}) before it was sent"

        def work(conn: sqlite3.Connection) -> list[int]:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM delegations WHERE root_id = ? ORDER BY id", (delegation.root,)
            ).fetchall()
            ids = [node.id for node in subtree([_row_to_delegation(row) for row in rows], delegation.id)]
            marks = ", ".join("?" * len(ids))
            conn.execute(
                f"UPDATE delegations SET cancelled_at = coalesce(cancelled_at, ?) WHERE id IN ({marks})",
                (iso(now), *ids),
            )
            stopped = conn.execute(
                "UPDATE delegations SET status = 'expired', next_attempt_at = NULL, last_error = ?, updated_at = ? "
                f"WHERE status = 'queued' AND id IN ({marks}) RETURNING id",
                (reason, iso(now), *ids),
            ).fetchall()
            stopped_ids = sorted(row[0] for row in stopped)
            detail = {"cancel": delegation.display_id, "stopped": [f"D-{n}" for n in stopped_ids]}
            conn.execute(*audit_row(requester, "cancel", delegation.agent, "allowed", detail, now))
            return stopped_ids

        stopped_ids = await self._store.atomically(work)
        async with self.changed:
            self.changed.notify_all()
        nodes = subtree(await self.tree(delegation.id), delegation.id)
        return ChainCancel(nodes, frozenset(stopped_ids))

    async def by_workflow_step(self, key: str) -> Delegation | None:
        """The delegation a workflow step's attempt made (`W-3/mesh#1`), if any."""
        row = await self._store.fetchone(f"SELECT {_COLUMNS} FROM delegations WHERE workflow_step = ?", (key,))
        return _row_to_delegation(row) if row is not None else None

    async def await_completion(self, delegation: Delegation, timeout_s: float) -> HookAccepted:
        """Re-POST an accepted delegation with its own key and `waitForCompletion` (2026.9.6): the gateway replays
        the run it admitted and answers when the run settles. Only safe while the gateway still remembers the
        key (same process lifetime): the caller compares the runId and checks the gateway's start time first."""
        agent = self._config.require_agent(delegation.agent)
        hook = replace(self._delegation_hook(delegation), wait_for_completion=True)
        return await self._gateway.wait_for_completion(agent, hook, idempotency_key=delegation.idem_key,
                                                       timeout_s=timeout_s)  # fmt: skip

    async def expire_queued(self, delegation_id: int, reason: str) -> bool:
        """Stop the outbox from sending a delegation still queued (its workflow step ended); False if too late."""
        changed = await self._store.update(*expire_queued_statement(delegation_id, reason, self._clock()))
        if changed:
            async with self.changed:
                self.changed.notify_all()
        return bool(changed)

    async def recent(
        self,
        *,
        agent: str | None = None,
        status: str | None = None,
        requester: str | None = None,
        requester_user_id: str | None = None,
        limit: int = 20,
        before_id: int | None = None,
    ) -> list[Delegation]:
        """Newest first, filtered; page with `before_id` (the smallest id of the previous page)."""
        clauses, params = [], []
        if agent is not None:
            clauses.append("agent = ?")
            params.append(self._config.require_agent(agent).name)
        if status is not None:
            if status not in STATUSES:
                raise InvalidInput(f"unknown status {status!r}; valid: {', '.join(STATUSES)}")
            clauses.append("status = ?")
            params.append(status)
        if requester is not None:
            clauses.append("requester = ?")
            params.append(requester)
        if requester_user_id is not None:  # a Discord user: names are neither unique nor stable, ids are
            clauses.append("requester_user_id = ?")
            params.append(requester_user_id)
        if before_id is not None:
            clauses.append("id < ?")
            params.append(before_id)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = await self._store.fetchall(
            f"SELECT {_COLUMNS} FROM delegations {where} ORDER BY id DESC LIMIT ?", (*params, max(1, min(limit, 100)))
        )
        return [_row_to_delegation(row) for row in rows]

    async def latest_by_agent(self) -> dict[str, Delegation]:
        """Each agent's most recent delegation (for the fleet overview)."""
        rows = await self._store.fetchall(
            f"SELECT {_COLUMNS} FROM delegations WHERE id IN (SELECT max(id) FROM delegations GROUP BY agent)"
        )
        return {row["agent"]: _row_to_delegation(row) for row in rows}

    async def wait_final(self, delegation_id: int | str, timeout: float) -> Delegation:
        """The delegation once it is accepted, failed, unconfirmed or expired (or as it is at `timeout`)."""
        number = parse_id(delegation_id)
        try:
            async with asyncio.timeout(timeout):
                async with self.changed:
                    while not (delegation := await self.get(number)).is_final:
                        await self.changed.wait()
                    return delegation
        except TimeoutError:
            return await self.get(number)

    # --- sending and retrying -----------------------------------------------------------------

    async def retry(self, requester: Requester, delegation_id: int | str) -> Delegation:
        """A person's decision to send an unconfirmed (or failed, or expired) delegation again."""
        if requester.is_agent or requester.level < AccessLevel.OPERATOR:
            raise NotAllowed(f"retrying a delegation needs the operator level; {requester.describe()} is not")
        delegation = await self.get(delegation_id)
        if delegation.status not in ("unconfirmed", "failed", "expired"):
            raise InvalidInput(
                f"{delegation.display_id} is {delegation.status}; only unconfirmed, failed or expired ones are retried"
            )
        now = self._clock()
        await self._store.execute(
            "UPDATE delegations SET status = 'queued', next_attempt_at = ?, expires_at = ?, updated_at = ? "
            "WHERE id = ?",
            (iso(now), iso(now + self.retry_window), iso(now), delegation.id),
        )
        await self._audit(requester, delegation.agent, "allowed", {"retry": delegation.display_id})
        return await self._attempt(await self.get(delegation.id))

    async def process_due(self) -> int:
        """Send every queued delegation whose time has come (concurrently across agents); returns how many."""
        for delegation_id, (delegation, run_id, latency_ms) in list(self._unrecorded.items()):
            await self._finish(delegation, "accepted", run_id=run_id, latency_ms=latency_ms)
            del self._unrecorded[delegation_id]
        now = self._clock()
        await self._expire(now)
        rows = await self._store.fetchall(
            f"SELECT {_COLUMNS} FROM delegations WHERE status = 'queued' AND next_attempt_at <= ? ORDER BY id",
            (iso(now),),
        )
        by_agent: dict[str, list[Delegation]] = {}
        for row in rows:
            delegation = _row_to_delegation(row)
            by_agent.setdefault(delegation.agent, []).append(delegation)

        async def drain(queue: list[Delegation]) -> None:
            for delegation in queue:  # in order, one at a time per agent
                await self._attempt(delegation)

        await asyncio.gather(*(drain(queue) for queue in by_agent.values()))
        return len(rows)

    async def send_if_due(self, delegation_id: int) -> Delegation:
        """One queued delegation's attempt, if it is due: what a process that follows a single delegation (and runs
        no outbox of its own) does; the claim is atomic, so a running outbox and this never both send it."""
        delegation = await self.get(delegation_id)
        due = delegation.next_attempt_at
        if delegation.status != "queued" or (due is not None and datetime.fromisoformat(due) > self._clock()):
            return delegation
        return await self._attempt(delegation)

    async def next_due(self) -> datetime | None:
        row = await self._store.fetchone("SELECT min(next_attempt_at) FROM delegations WHERE status = 'queued'")
        return datetime.fromisoformat(row[0]) if row and row[0] else None

    async def recover(self) -> int:
        """After a crash: a delegation left `sending` may or may not have arrived. Decide for each.

        A delegation is recorded already `sending`, so one the process died with before sending is
        among them (resent where a repeated key replays the run, else left for a person to look at).
        A `queued` row never tried, as older versions recorded first, is simply made due.
        """
        await self._store.update(
            "UPDATE delegations SET next_attempt_at = created_at WHERE status = 'queued' AND next_attempt_at IS NULL"
        )
        rows = await self._store.fetchall(f"SELECT {_COLUMNS} FROM delegations WHERE status = 'sending'")
        for row in rows:
            delegation = _row_to_delegation(row)
            await self._maybe_sent(delegation, "the bot stopped while sending; the request may have arrived")
        return len(rows)

    async def _attempt(self, delegation: Delegation) -> Delegation:
        agent = self._config.agent(delegation.agent)
        if agent is None:
            return await self._finish(delegation, "failed", error=f"agent {delegation.agent} is no longer configured")
        now = self._clock()
        if now >= datetime.fromisoformat(delegation.expires_at):
            why = f"{delegation.last_error}; retry window over" if delegation.last_error else "retry window over"
            return await self._finish(delegation, "expired", error=why)
        # Claim it first, atomically: another worker on the same database (a second bot, the CLI's
        # --wait) skips it, and if we die mid-request, `recover` knows the request may have arrived.
        claimed = await self._store.update(
            "UPDATE delegations SET status = 'sending', attempts = attempts + 1, updated_at = ? "
            f"WHERE id = ? AND status = 'queued' AND {_STEP_UNDER_WAY}",
            (iso(now), delegation.id),
        )
        if not claimed:
            sql, params = expire_queued_statement(delegation.id, "its workflow step ended before it was sent", now)
            if await self._store.update(f"{sql} AND NOT {_STEP_UNDER_WAY}", params):
                return await self._changed(delegation.id, [])
            return await self.get(delegation.id)
        return await self._send(agent, replace(delegation, status="sending", attempts=delegation.attempts + 1))

    async def _send(
        self, agent: AgentConfig, delegation: Delegation, tried: frozenset[str] = frozenset()
    ) -> Delegation:
        """One attempt of a claimed delegation (`sending`; `attempts` counts this one), and its outcome. `tried`: the
        agents that did not admit it in this attempt (a routed delegation goes to another, never back)."""
        hook = self._delegation_hook(delegation)
        try:
            accepted = await self._gateway.send_agent_hook(agent, hook, idempotency_key=delegation.idem_key)
        except HookRateLimited as exc:
            return await self._requeue(delegation, str(exc), exc.retry_after)
        except AgentUnavailable as exc:
            if isinstance(exc, AdmissionTimeout) and self.on_admission_timeout is not None:
                await self.on_admission_timeout(agent.name)
            # Not admitted, so nothing started: a refused connection, or 2026.9.6's 503 after its 15 s admission
            # wait (the gateway cancels the queued run: orchestration.md). A routed delegation may go elsewhere now.
            admission = isinstance(exc, AdmissionTimeout) and self._gateway.honours_idempotency(agent.name) is True
            if not exc.sent or admission:
                tried = tried | {agent.name}
                moved = await self._rerouted(delegation, exc.reason, tried)
                if moved is not None:
                    return await self._send(self._config.require_agent(moved.agent), moved, tried)
                return await self._requeue(delegation, exc.reason, self._backoff(delegation.attempts))
            return await self._maybe_sent(delegation, exc.reason)
        except GatewayProtocolError as exc:
            return await self._maybe_sent(delegation, exc.reason)
        except GatewayError as exc:  # rejected (400/404/413), unauthorized: retrying will not help
            return await self._finish(delegation, "failed", error=exc.reason)
        except AtomizerError as exc:  # e.g. no hooks token configured
            return await self._finish(delegation, "failed", error=str(exc))
        latency_ms = round(accepted.latency_s * 1000, 1)
        try:
            return await self._finish(delegation, "accepted", run_id=accepted.run_id, latency_ms=latency_ms)
        except StoreError as exc:
            # The agent has the work: never let this read as "nothing happened" (a caller would send it
            # again). Keep the answer and record it as soon as the database answers (process_due).
            self._unrecorded[delegation.id] = (delegation, accepted.run_id, latency_ms)
            raise DelegationUnrecorded(
                f"{delegation.display_id} was accepted by {delegation.agent} (runId {accepted.run_id}), but the "
                f"database could not record it ({str(exc).split(';')[0]}); do not send it again: it is recorded "
                "as soon as the database answers"
            ) from None

    async def _rerouted(self, delegation: Delegation, reason: str, tried: frozenset[str]) -> Delegation | None:
        """A routed delegation its agent surely did not admit (503, connection refused), moved to the agent routing
        chooses now among those not tried; None (it waits for its agent, as a named one does) when nobody else is
        ready, it was named, it may have reached an agent before (pinned), its chain was cancelled, or its workflow
        step ended meanwhile. A workflow step's agent moves with it (`on_rerouted`)."""
        if self.rerouter is None or not delegation.needs or delegation.pinned:
            return None
        try:
            chosen = await self.rerouter(delegation, reason, tried)
        except AtomizerError as exc:  # the database, a probe: it waits for its agent, as before
            log.warning("%s not routed again: %s", delegation.display_id, exc)
            return None
        if chosen is None:
            return None
        why = f"{delegation.agent} did not admit it ({reason}); {chosen.explanation}"

        def move(conn: sqlite3.Connection) -> Delegation | None:
            rows = conn.execute(
                f"UPDATE delegations SET agent = ?, updated_at = ? WHERE id = ? AND status = 'sending' AND pinned = 0 "
                f"AND cancelled_at IS NULL AND {_STEP_UNDER_WAY} RETURNING {_COLUMNS}",
                (chosen.agent, iso(self._clock()), delegation.id),
            ).fetchall()
            if not rows:
                return None
            moved = _row_to_delegation(rows[0])
            conn.execute(*chosen.audit)
            if self.on_rerouted is not None:
                self.on_rerouted(conn, moved, why)
            return moved

        moved = await self._store.atomically(move)
        if moved is None:
            return None
        log.info("%s routed again: %s", delegation.display_id, why)
        if self.after_rerouted is not None:
            await self.after_rerouted(moved)
        return moved

    async def _maybe_sent(self, delegation: Delegation, reason: str) -> Delegation:
        """The request may have arrived: retry only where a repeat replays the same run. From now on it stays with
        this agent (pinned): a later try that is refused must not hand work the agent may have to another."""
        if delegation.needs and not delegation.pinned:
            await self._store.update("UPDATE delegations SET pinned = 1 WHERE id = ?", (delegation.id,))
            delegation = replace(delegation, pinned=True)
        if self._gateway.honours_idempotency(delegation.agent) is None:
            await self._gateway.readiness(self._config.require_agent(delegation.agent))
        if self._gateway.honours_idempotency(delegation.agent):
            return await self._requeue(delegation, reason, self._backoff(delegation.attempts))
        return await self._finish(
            delegation,
            "unconfirmed",
            error=f"{reason}; this gateway does not honour idempotency keys, so it was not resent: "
            f"check the agent, then retry it (atomizer-hq delegations retry {delegation.display_id}) if needed",
        )

    @staticmethod
    def _backoff(attempt: int) -> float:
        return BACKOFF_S[min(attempt, len(BACKOFF_S)) - 1]

    async def _requeue(self, delegation: Delegation, reason: str, delay_s: float) -> Delegation:
        """Queued again for `delay_s`, within the stored window: "will retry until" is when it expires, not a
        backoff step earlier. Past the last attempt it stays queued until `expires_at`, then expires."""
        now = self._clock()
        expires = datetime.fromisoformat(delegation.expires_at)
        if now >= expires:
            return await self._finish(delegation, "expired", error=f"{reason}; retry window over")
        due = now + timedelta(seconds=delay_s)
        last_attempt = expires - timedelta(seconds=LAST_ATTEMPT_LEAD_S)
        if due > last_attempt:
            due = last_attempt if now < last_attempt else expires  # at `expires`: process_due expires it
        # Cancelled (its chain) while it was being sent, and not admitted: expired, never retried. In the same
        # statement, so a cancel landing at this moment cannot slip between a check and the requeue.
        cancelled = f"{reason}; not retried: its chain was cancelled while it was being sent"
        rows = await self._store.returning(
            "UPDATE delegations SET "
            "status = CASE WHEN cancelled_at IS NULL THEN 'queued' ELSE 'expired' END, "
            "last_error = CASE WHEN cancelled_at IS NULL THEN ? ELSE ? END, "
            "next_attempt_at = CASE WHEN cancelled_at IS NULL THEN ? END, updated_at = ? "
            f"WHERE id = ? RETURNING {_COLUMNS}",
            (reason, cancelled, iso(due), iso(now), delegation.id),
        )
        if rows and rows[0]["status"] == "expired":
            log.warning("delegation %s to %s expired: %s", delegation.display_id, delegation.agent, cancelled)
        return await self._changed(delegation.id, rows)

    async def _finish(
        self,
        delegation: Delegation,
        status: Status,
        *,
        error: str | None = None,
        run_id: str | None = None,
        latency_ms: float | None = None,
    ) -> Delegation:
        now = iso(self._clock())
        rows = await self._store.returning(
            "UPDATE delegations SET status = ?, last_error = coalesce(?, last_error), run_id = coalesce(?, run_id), "
            "latency_ms = coalesce(?, latency_ms), next_attempt_at = NULL, updated_at = ?, "
            f"accepted_at = CASE WHEN ? = 'accepted' THEN ? ELSE accepted_at END WHERE id = ? RETURNING {_COLUMNS}",
            (status, error, run_id, latency_ms, now, status, now, delegation.id),
        )
        if status != "accepted":
            log.warning("delegation %s to %s %s: %s", delegation.display_id, delegation.agent, status, error)
        elif delegation.task and self._tasks is not None:
            await self._link_task(delegation)
        return await self._changed(delegation.id, rows)

    async def _link_task(self, delegation: Delegation) -> None:
        """The task follows its delegation: assigned to the agent, in progress (by whoever delegated)."""
        requester = Requester(
            kind=delegation.requester_kind,  # type: ignore[arg-type]
            name=delegation.requester,
            front_end=delegation.front_end,  # type: ignore[arg-type]
            user_id=delegation.requester_user_id,
            via=delegation.via,
        )
        try:
            assert self._tasks is not None
            await self._tasks.delegation_accepted(
                delegation.task or "", delegation.agent, delegation.display_id, requester
            )
        except AtomizerError as exc:  # the delegation stands; the board just could not follow
            log.warning("delegation %s accepted, but task %s was not updated: %s", delegation.display_id,
                        delegation.task, exc)  # fmt: skip

    async def _expire(self, now: datetime) -> None:
        expired = await self._store.update(
            "UPDATE delegations SET status = 'expired', next_attempt_at = NULL, updated_at = ?, "
            "last_error = coalesce(last_error || '; retry window over', 'retry window over') "
            "WHERE status = 'queued' AND expires_at <= ?",
            (iso(now), iso(now)),
        )
        if expired:  # wake whoever waits on these (wait_final: the CLI's --wait, /delegate's followup)
            async with self.changed:
                self.changed.notify_all()

    async def _changed(self, delegation_id: int, rows: list[Any]) -> Delegation:
        """Wake whoever waits on a delegation; `rows` is what the write's RETURNING gave (read again if none)."""
        async with self.changed:
            self.changed.notify_all()
        return _row_to_delegation(rows[0]) if rows else await self.get(delegation_id)


class DelegationUnrecorded(StoreError):
    """The agent accepted the delegation, but the database could not record that yet."""

    code = "accepted_unrecorded"


class UnknownDelegation(InvalidInput):
    code = "unknown_delegation"
    http_status = 404


class DuplicateWorkflowStep(AtomizerError):
    """A delegation for this workflow step's attempt exists already: adopt it, never send a second."""

    code = "duplicate_workflow_step"
    http_status = 409

    def __init__(self, key: str) -> None:
        super().__init__(f"{key} has a delegation already; it is not sent twice")
        self.key = key


class ChainRefused(NotAllowed):
    """A sub-delegation the chain rules refuse (the parent, a loop); `chain` names its root (`D-12`)."""

    code = "chain_refused"

    def __init__(self, message: str, chain: str | None = None) -> None:
        super().__init__(message)
        self.chain = chain


class ChainLimit(ChainRefused):
    """A chain's depth or size cap ([delegation] in config) would be passed."""

    code = "chain_limit"
    http_status = 409


@dataclass(frozen=True)
class ChainLink:
    """Where a sub-delegation hangs: its parent, its chain's root, its depth."""

    parent_id: int
    root_id: int
    depth: int


@dataclass(frozen=True)
class ChainCancel:
    """What `cancel` did: the delegation and everything under it (tree order), and which of them it stopped."""

    nodes: list[Delegation]
    stopped: frozenset[int]

    @property
    def with_agent(self) -> list[Delegation]:
        """Sent already (or being sent): cancelling cannot take these back; the agent has to be told."""
        return [d for d in self.nodes if d.status in ("sending", "accepted", "unconfirmed")]

    def summary(self) -> str:
        """One paragraph every front end shows."""
        head = self.nodes[0].display_id
        stopped = sorted((d for d in self.nodes if d.id in self.stopped), key=lambda d: d.id)
        parts = [f"cancelled {head}"]
        parts.append(
            "stopped before they were sent: " + ", ".join(f"{d.display_id} ({d.agent})" for d in stopped)
            if stopped
            else "nothing was waiting to be sent"
        )
        if self.with_agent:
            parts.append(
                "already with an agent (tell it to stop): "
                + ", ".join(f"{d.display_id} {d.agent} ({d.status})" for d in self.with_agent)
            )
        return "; ".join(parts)


def agents_above(path: list[Delegation]) -> list[str]:
    """Everyone working on a chain from its root down to the end of `path`: each node's agent, and the agent that
    started the chain (a person starting it is not an agent to loop back to)."""
    above = [node.agent for node in path]
    if path and path[0].requester_kind == "agent":
        above.insert(0, path[0].requester)
    return above


def ancestry(tree: list[Delegation], delegation_id: int) -> list[Delegation]:
    """The chain from its root down to `delegation_id` (included), from a tree's delegations."""
    by_id = {node.id: node for node in tree}
    path: list[Delegation] = []
    node = by_id.get(delegation_id)
    while node is not None and node.id not in {n.id for n in path}:
        path.append(node)
        node = by_id.get(node.parent_id) if node.parent_id is not None else None
    return path[::-1]


def subtree(tree: list[Delegation], delegation_id: int) -> list[Delegation]:
    """`delegation_id` and everything under it, depth first in the order they were made."""
    children: dict[int, list[Delegation]] = {}
    for node in tree:
        if node.parent_id is not None:
            children.setdefault(node.parent_id, []).append(node)
    by_id = {node.id: node for node in tree}
    out: list[Delegation] = []
    stack = [by_id[delegation_id]] if delegation_id in by_id else []
    while stack:
        node = stack.pop()
        out.append(node)
        stack.extend(reversed(children.get(node.id, [])))
    return out
