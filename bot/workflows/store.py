"""The run's tables (0007_workflows.sql) and the one table of step transitions every write goes through.

The engine is the only writer. A step moves only by `StepTable.move`, which names an event of
TRANSITIONS and updates the row only if it is still in one of the event's from-states: two writers
(the bot and the CLI, a result racing a timeout) cannot both move a step, and the loser learns it.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

from bot.clock import iso
from bot.delegation import expire_queued_statement
from bot.errors import InvalidInput
from bot.store import Store
from bot.workflows.definition import WorkflowDefinition

RUN_STATUSES = ("running", "succeeded", "failed", "cancelled")
STEP_STATUSES = (
    "pending", "dispatching", "running", "succeeded", "failed", "timed_out", "unconfirmed", "cancelled", "skipped",
    "waiting_approval", "approved", "rejected", "expired",
)  # fmt: skip
DONE_OK = frozenset({"succeeded", "approved"})
# Ended without proof of success: the step's on_failure decides whether the run goes on.
DONE_BADLY = frozenset({"failed", "timed_out", "unconfirmed", "rejected", "expired", "cancelled"})
FINAL = DONE_OK | DONE_BADLY | {"skipped"}
RESETTABLE = FINAL | {"waiting_approval"}
# Events that end a step's attempt: its delegation, if still queued, is expired in the same transaction.
ENDS_ATTEMPT = frozenset({"succeed", "fail", "time_out", "unconfirm", "cancel", "redispatch"})

# event -> (from-states, to-state). The whole life of a step, in one place.
TRANSITIONS: dict[str, tuple[frozenset[str], str]] = {
    "dispatch": (frozenset({"pending"}), "dispatching"),  # needs met: the row says so before the delegation
    # A proven failure, retries left; never from `dispatching`: that attempt's dispatch is under way (or stale).
    "redispatch": (frozenset({"running"}), "dispatching"),
    "delegated": (frozenset({"dispatching"}), "running"),  # the delegation exists (queued, sending, accepted)
    "succeed": (frozenset({"running", "unconfirmed", "timed_out"}), "succeeded"),  # a result, even a late one
    "fail": (frozenset({"running", "dispatching", "unconfirmed", "timed_out"}), "failed"),
    "time_out": (frozenset({"running"}), "timed_out"),  # deadline, never admitted
    "unconfirm": (frozenset({"running"}), "unconfirmed"),  # admitted, then no proof (deadline, gateway restart)
    "cancel": (frozenset({"pending", "dispatching", "running", "waiting_approval"}), "cancelled"),
    "skip": (frozenset({"pending"}), "skipped"),  # an upstream failure ended the run
    "open_gate": (frozenset({"pending"}), "waiting_approval"),
    "approve": (frozenset({"waiting_approval"}), "approved"),
    "reject": (frozenset({"waiting_approval"}), "rejected"),
    "expire": (frozenset({"waiting_approval"}), "expired"),  # on_expire: reject
    "escalate": (frozenset({"waiting_approval"}), "waiting_approval"),  # on_expire: escalate (new approvers)
    "reset": (frozenset(RESETTABLE), "pending"),  # a person's retry
}


def parse_run_id(text: str | int) -> int:
    """`W-3`, `w3` or `3` -> 3."""
    raw = str(text).strip().upper().removeprefix("W").removeprefix("-")
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
        raise InvalidInput(f"{text!r} is not a workflow run id; write it as W-3 (or 3)")
    return int(raw)


def step_key(run_id: int, step_id: str, attempt: int) -> str:
    """The delegation's `workflow_step`: one per attempt of a step, unique in the database."""
    return f"W-{run_id}/{step_id}#{attempt}"


def parse_step_key(key: str) -> tuple[int, str, int] | None:
    """`W-3/mesh#1` -> (3, "mesh", 1); None for anything else (a follow-up's `W-3/mesh#1/stop`)."""
    run, slash, rest = key.partition("/")
    step_id, mark, attempt = rest.partition("#")
    number = run.removeprefix("W-")
    if not (slash and mark and number.isdigit() and attempt.isdigit()):
        return None
    return int(number), step_id, int(attempt)


@dataclass(frozen=True)
class RunRow:
    id: int
    workflow: str
    definition: WorkflowDefinition
    inputs: dict[str, Any]
    status: str
    starter_kind: str
    starter: str
    starter_user_id: str | None
    starter_level: int
    starter_via: str | None
    front_end: str
    origin: str | None
    thread_id: str | None
    card_message_id: str | None
    created_at: str
    updated_at: str
    finished_at: str | None
    error: str | None

    @property
    def display_id(self) -> str:
        return f"W-{self.id}"


@dataclass(frozen=True)
class StepRow:
    run_id: int
    step_id: str
    kind: str
    status: str
    agent: str | None
    attempt: int
    delegation_id: int | None
    output: str | None
    output_source: str | None
    evidence: dict[str, Any]
    started_at: str | None
    deadline_at: str | None
    finished_at: str | None
    error: str | None

    @property
    def key(self) -> str:
        return step_key(self.run_id, self.step_id, self.attempt)


@dataclass(frozen=True)
class ApprovalRow:
    step_id: str
    approver_kind: str
    approver: str
    approver_name: str
    decision: str
    at: str
    front_end: str
    reason: str | None


@dataclass(frozen=True)
class EventRow:
    id: int
    step_id: str | None
    at: str
    actor: str
    kind: str
    detail: dict[str, Any]


_RUN_COLUMNS = (
    "id, workflow, definition_json, inputs_json, status, starter_kind, starter, starter_user_id, starter_level, "
    "starter_via, front_end, origin, thread_id, card_message_id, created_at, updated_at, finished_at, error"
)
_STEP_COLUMNS = (
    "run_id, step_id, kind, status, agent, attempt, delegation_id, output, output_source, evidence, started_at, "
    "deadline_at, finished_at, error"
)


@lru_cache(maxsize=64)
def _definition(text: str) -> WorkflowDefinition:
    """A run's snapshot, parsed once: it never changes, and parsing a 200-step one costs ~2 ms, per read of the run."""
    return WorkflowDefinition.model_validate_json(text)


def _run(row: sqlite3.Row) -> RunRow:
    values = dict(row)
    values["definition"] = _definition(values.pop("definition_json"))
    values["inputs"] = json.loads(values.pop("inputs_json"))
    return RunRow(**values)


def _step(row: sqlite3.Row) -> StepRow:
    values = dict(row)
    values["evidence"] = json.loads(values["evidence"]) if values["evidence"] else {}
    return StepRow(**values)


def event_statement(
    run_id: int, step_id: str | None, at: datetime, actor: str, kind: str, detail: dict[str, Any]
) -> tuple[str, tuple[Any, ...]]:
    return (
        "INSERT INTO workflow_events (run_id, step_id, at, actor, kind, detail_json) VALUES (?, ?, ?, ?, ?, ?)",
        (run_id, step_id, iso(at), actor, kind, json.dumps(detail, ensure_ascii=False)),
    )


def move_statement(
    run_id: int, step_id: str, event: str, at: datetime, fields: dict[str, Any], attempt: int | None = None
) -> tuple[str, tuple[Any, ...]]:
    """The UPDATE of one transition: it changes the row only from one of the event's from-states (and, given
    `attempt`, only while the step is at that attempt: a late result of an earlier attempt moves nothing)."""
    sources, target = TRANSITIONS[event]
    values = dict(fields)
    if "evidence" in values and not isinstance(values["evidence"], str | None):
        values["evidence"] = json.dumps(values["evidence"], ensure_ascii=False)
    assignments = ", ".join(f"{name} = ?" for name in values)
    placeholders = ", ".join("?" for _ in sources)
    sql = (
        f"UPDATE workflow_steps SET status = ?{', ' if assignments else ''}{assignments} "
        f"WHERE run_id = ? AND step_id = ? AND status IN ({placeholders})"
        + (" AND attempt = ?" if attempt is not None else "")
    )
    del at  # the caller puts times in `fields`; kept for a uniform signature
    return sql, (target, *values.values(), run_id, step_id, *sorted(sources), *(() if attempt is None else (attempt,)))


class WorkflowStore:
    """Reads and writes of the workflow tables; every write of a step through `move`."""

    def __init__(self, store: Store) -> None:
        self.db = store

    async def insert_run(
        self,
        run: dict[str, Any],
        steps: list[tuple[str, str, str | None]],
        extra: list[tuple[str, tuple[Any, ...]]],
        at: datetime,
    ) -> int:
        """The run and all its steps (pending) in one transaction, with `extra` statements (events, audit)."""

        def work(conn: sqlite3.Connection) -> int:
            columns = ", ".join(run)
            marks = ", ".join("?" for _ in run)
            cursor = conn.execute(f"INSERT INTO workflow_runs ({columns}) VALUES ({marks})", tuple(run.values()))
            run_id = int(cursor.lastrowid or 0)
            conn.executemany(
                "INSERT INTO workflow_steps (run_id, step_id, kind, status, agent) VALUES (?, ?, ?, 'pending', ?)",
                [(run_id, step_id, kind, agent) for step_id, kind, agent in steps],
            )
            conn.execute(*event_statement(run_id, None, at, run["starter"], "started", {"inputs": run["inputs_json"]}))
            for sql, params in extra:
                conn.execute(sql, params)
            return run_id

        return await self.db.atomically(work)

    async def run(self, run_id: int) -> RunRow | None:
        row = await self.db.fetchone(f"SELECT {_RUN_COLUMNS} FROM workflow_runs WHERE id = ?", (run_id,))
        return _run(row) if row is not None else None

    async def runs(self, *, status: str | None, limit: int) -> list[RunRow]:
        where, params = ("WHERE status = ?", (status,)) if status else ("", ())
        rows = await self.db.fetchall(
            f"SELECT {_RUN_COLUMNS} FROM workflow_runs {where} ORDER BY id DESC LIMIT ?", (*params, limit)
        )
        return [_run(row) for row in rows]

    async def running_run_ids(self) -> list[int]:
        rows = await self.db.fetchall("SELECT id FROM workflow_runs WHERE status = 'running' ORDER BY id")
        return [int(row[0]) for row in rows]

    async def idle_run_ids(self) -> list[int]:
        """Running runs with no step under way (dispatching, running, waiting for approval)."""
        rows = await self.db.fetchall(
            "SELECT id FROM workflow_runs r WHERE status = 'running' AND NOT EXISTS (SELECT 1 FROM workflow_steps s "
            "WHERE s.run_id = r.id AND s.status IN ('dispatching', 'running', 'waiting_approval')) ORDER BY id"
        )
        return [int(row[0]) for row in rows]

    async def steps(self, run_id: int) -> list[StepRow]:
        rows = await self.db.fetchall(f"SELECT {_STEP_COLUMNS} FROM workflow_steps WHERE run_id = ?", (run_id,))
        return [_step(row) for row in rows]

    async def outputs(self, run_id: int, step_ids: frozenset[str] | set[str]) -> dict[str, str | None]:
        """The outputs of some steps of a run (what a message refers to), without reading whole rows."""
        if not step_ids:
            return {}
        marks = ", ".join("?" for _ in step_ids)
        rows = await self.db.fetchall(
            f"SELECT step_id, output FROM workflow_steps WHERE run_id = ? AND step_id IN ({marks})",
            (run_id, *sorted(step_ids)),
        )
        return {row[0]: row[1] for row in rows}

    async def step(self, run_id: int, step_id: str) -> StepRow | None:
        row = await self.db.fetchone(
            f"SELECT {_STEP_COLUMNS} FROM workflow_steps WHERE run_id = ? AND step_id = ?", (run_id, step_id)
        )
        return _step(row) if row is not None else None

    async def steps_in(self, statuses: tuple[str, ...]) -> list[StepRow]:
        marks = ", ".join("?" for _ in statuses)
        rows = await self.db.fetchall(
            f"SELECT {_STEP_COLUMNS} FROM workflow_steps WHERE status IN ({marks}) ORDER BY run_id, step_id", statuses
        )
        return [_step(row) for row in rows]

    async def move(
        self,
        run_id: int,
        step_id: str,
        event: str,
        at: datetime,
        *,
        actor: str,
        detail: dict[str, Any] | None = None,
        extra: list[tuple[str, tuple[Any, ...]]] | None = None,
        expect_attempt: int | None = None,
        **fields: Any,
    ) -> bool:
        """Apply one transition with its event row (and `extra` statements) in one transaction; False when the
        step was no longer in a from-state (someone else moved it first), or no longer at `expect_attempt`: then
        nothing is written."""
        sql, params = move_statement(run_id, step_id, event, at, fields, expect_attempt)

        def work(conn: sqlite3.Connection) -> bool:
            before = None
            if event in ENDS_ATTEMPT:
                before = conn.execute(
                    "SELECT delegation_id, attempt FROM workflow_steps WHERE run_id = ? AND step_id = ?",
                    (run_id, step_id),
                ).fetchone()
            if conn.execute(sql, params).rowcount == 0:
                return False
            if before is not None and before["delegation_id"] is not None:
                key = step_key(run_id, step_id, before["attempt"])
                why = f"{key} ended ({TRANSITIONS[event][1]}) before it was sent"
                conn.execute(*expire_queued_statement(before["delegation_id"], why, at))
            conn.execute(*event_statement(run_id, step_id, at, actor, event, detail or {}))
            for statement, values in extra or []:
                conn.execute(statement, values)
            return True

        return await self.db.atomically(work)

    async def set_step_agent(self, run_id: int, step_id: str, agent: str) -> None:
        """The agent routing chose for a `route:` step (the step is dispatching)."""
        await self.db.execute(
            "UPDATE workflow_steps SET agent = ? WHERE run_id = ? AND step_id = ?", (agent, run_id, step_id)
        )

    async def set_run(self, run_id: int, at: datetime, *, expect: str | None = None, **fields: Any) -> bool:
        assignments = ", ".join(f"{name} = ?" for name in fields)
        where = " AND status = ?" if expect else ""
        params = (*fields.values(), iso(at), run_id, *((expect,) if expect else ()))
        changed = await self.db.update(
            f"UPDATE workflow_runs SET {assignments}, updated_at = ? WHERE id = ?{where}", params
        )
        return changed > 0

    async def event(
        self, run_id: int, step_id: str | None, at: datetime, actor: str, kind: str, detail: dict[str, Any]
    ) -> None:
        await self.db.execute(*event_statement(run_id, step_id, at, actor, kind, detail))

    async def events(self, run_id: int) -> list[EventRow]:
        rows = await self.db.fetchall(
            "SELECT id, step_id, at, actor, kind, detail_json FROM workflow_events WHERE run_id = ? ORDER BY id",
            (run_id,),
        )
        return [EventRow(row[0], row[1], row[2], row[3], row[4], json.loads(row[5])) for row in rows]

    async def approvals(self, run_id: int) -> list[ApprovalRow]:
        rows = await self.db.fetchall(
            "SELECT step_id, approver_kind, approver, approver_name, decision, at, front_end, reason "
            "FROM workflow_approvals WHERE run_id = ? ORDER BY id",
            (run_id,),
        )
        return [ApprovalRow(*row) for row in rows]
