"""The task board: tasks with a short id (T-42), an append-only history, and one set of rules.

Every front end (slash commands, buttons, the CLI, the API, agents' posts in #task-board) calls
these methods, so each gets the same permissions, validation and history. Concurrent writers never
lose an update: each write applies to the current row inside one transaction, and a writer that
read an older version (a button, an API PATCH with `version`) gets a `TaskConflict`, never a silent
overwrite. Listeners (the live board, the agents' project_log.md, ...) hear about every change.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from typing import Any, Literal

from bot.authz import AccessLevel, Requester
from bot.clock import Clock, iso, utcnow
from bot.config import ClusterConfig
from bot.errors import AtomizerError, InvalidInput, NotAllowed
from bot.store import Store
from bot.targets import GuildDirectory, StaticDirectory, TargetNormalizer

log = logging.getLogger(__name__)

STATUSES = ("todo", "in_progress", "blocked", "review", "done", "cancelled")
OPEN_STATUSES = ("todo", "in_progress", "blocked", "review")
PRIORITIES = ("low", "normal", "high", "urgent")
TITLE_MAX, DESCRIPTION_MAX, NOTE_MAX = 200, 2000, 500
UNASSIGNED = frozenset({"nobody", "none", "unassigned", "-"})  # typed instead of an assignee
TaskStatus = Literal["todo", "in_progress", "blocked", "review", "done", "cancelled"]
_TASK_ID = re.compile(r"^\s*(?:t\s*-?\s*)?(\d{1,9})\s*$", re.IGNORECASE)
_INVISIBLE = re.compile(r"[\u200b-\u200f\u2028-\u202e\u2060-\u2064\ufeff]")


class UnknownTask(InvalidInput):
    code = "unknown_task"
    http_status = 404


class TaskConflict(AtomizerError):
    """Someone changed the task since the caller read it."""

    code = "conflict"
    exit_code = 1
    http_status = 409


def parse_task_id(text: str | int) -> int:
    """`T-42`, `t42`, `42` -> 42."""
    match = _TASK_ID.match(str(text))
    if match is None:
        raise InvalidInput(f"{str(text)[:40]!r} is not a task id; write it as T-42")
    return int(match.group(1))


def clean_text(text: str, what: str, limit: int, *, required: bool = True) -> str | None:
    """Trim, drop invisible characters, check length: titles and notes stay readable."""
    visible = _INVISIBLE.sub("", text or "")
    # A description keeps its lines; a title or a note is one line.
    cleaned = visible.strip() if what == "description" else " ".join(visible.split())
    if not cleaned:
        if required:
            raise InvalidInput(f"the {what} is empty; write a few words")
        return None
    if len(cleaned) > limit:
        raise InvalidInput(f"the {what} is {len(cleaned):,} characters; at most {limit:,}")
    return cleaned


def assignee_or_nobody(text: str) -> str | None:
    """What a person typed as an assignee: None for the words that mean "nobody" (every front end)."""
    return None if text.strip().lower() in UNASSIGNED else text


def _clean_note(note: str | None) -> str | None:
    return clean_text(note or "", "note", NOTE_MAX, required=False)


def parse_status(text: str) -> TaskStatus:
    value = text.strip().lower().replace("-", "_").replace(" ", "_")
    value = {"start": "in_progress", "started": "in_progress", "doing": "in_progress", "wip": "in_progress",
             "progress": "in_progress", "canceled": "cancelled", "cancel": "cancelled", "block": "blocked",
             "finished": "done", "complete": "done", "completed": "done", "open": "todo"}.get(value, value)  # fmt: skip
    if value not in STATUSES:
        raise InvalidInput(f"unknown status {text!r}; valid: {', '.join(STATUSES)}")
    return value  # type: ignore[return-value]


def parse_priority(text: str) -> str:
    value = text.strip().lower().lstrip("!")
    value = {"med": "normal", "medium": "normal", "urgent!": "urgent", "hi": "high", "lo": "low"}.get(value, value)
    if value not in PRIORITIES:
        raise InvalidInput(f"unknown priority {text!r}; valid: {', '.join(PRIORITIES)}")
    return value


_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def parse_due(text: str, today: date) -> str:
    """YYYY-MM-DD, today, tomorrow, +3d, +2w, or a weekday (the next one; today's is today)."""
    value = text.strip().lower()
    weekday = next((i for i, day in enumerate(_WEEKDAYS) if len(value) >= 3 and day.startswith(value)), None)
    if weekday is not None:
        return (today + timedelta(days=(weekday - today.weekday()) % 7)).isoformat()
    if value == "today":
        return today.isoformat()
    if value == "tomorrow":
        return (today + timedelta(days=1)).isoformat()
    match = re.fullmatch(r"\+(\d{1,3})\s*([dw])", value)
    if match:
        days = int(match.group(1)) * (7 if match.group(2) == "w" else 1)
        return (today + timedelta(days=days)).isoformat()
    try:
        return date.fromisoformat(value).isoformat()
    except ValueError:
        raise InvalidInput(f"{text!r} is not a due date; write YYYY-MM-DD, today, tomorrow, +3d or a weekday") from None


@dataclass(frozen=True)
class Task:
    id: int
    title: str
    description: str | None
    status: str
    assignee_kind: str | None
    assignee: str | None
    assignee_label: str | None
    priority: str
    due: str | None
    blocked_reason: str | None
    creator_kind: str
    creator: str
    created_at: str
    updated_at: str
    version: int
    # Set by a write that changed nothing ("T-1 is already done"): the front ends say so; not a column.
    already: str | None = field(default=None, compare=False)

    @property
    def display_id(self) -> str:
        return f"T-{self.id}"

    @property
    def assignee_text(self) -> str:
        if self.assignee is None:
            return "unassigned"
        return self.assignee if self.assignee_kind == "agent" else (self.assignee_label or f"user:{self.assignee}")

    def is_overdue(self, today: date) -> bool:
        return self.due is not None and self.status in OPEN_STATUSES and date.fromisoformat(self.due) < today

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.display_id,
            "title": self.title,
            "description": self.description,
            "status": self.status,
            "assignee": None
            if self.assignee is None
            else {"kind": self.assignee_kind, "id": self.assignee, "label": self.assignee_text},
            "priority": self.priority,
            "due": self.due,
            "blocked_reason": self.blocked_reason,
            "creator": {"kind": self.creator_kind, "name": self.creator},
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "version": self.version,
        }


@dataclass(frozen=True)
class TaskEvent:
    """One line of a task's history; also what listeners hear."""

    task_id: int
    at: str
    actor_kind: str
    actor: str
    front_end: str
    action: str
    old_value: str | None
    new_value: str | None
    note: str | None

    def describe(self) -> str:
        task = f"T-{self.task_id}"
        if self.action == "create":
            text = f"{task} created by {self.actor}: {self.new_value}"
        elif self.action == "move":
            text = f"{task} {self.old_value} → {self.new_value} by {self.actor}"
        elif self.action == "assign":
            text = f"{task} assigned to {self.new_value or 'nobody'} by {self.actor}"
        else:
            text = f"{task} {self.action} by {self.actor}"
        return text + (f": {self.note}" if self.note and self.action != "create" else "") + f" ({self.front_end})"


@dataclass(frozen=True)
class TaskDetail:
    task: Task
    history: list[TaskEvent]
    delegations: list[dict[str, Any]]


def _changes_anything(task: Task, fields: dict[str, Any]) -> bool:
    """Whether writing `fields` would change `task`; a person's label alone is no change (names drift)."""
    return any(getattr(task, name) != value for name, value in fields.items() if name != "assignee_label")


def _already(task: Task, actions: list[str]) -> str:
    """What a write that changed nothing says: "T-1 is already done", "… already assigned to auditor"."""
    said = []
    if "move" in actions:
        status = task.status.replace("_", " ")
        said.append(f"{status}: {task.blocked_reason}" if task.status == "blocked" and task.blocked_reason else status)
    if "assign" in actions:
        said.append("unassigned" if task.assignee is None else f"assigned to {task.assignee_text}")
    return f"{task.display_id} is already {' and '.join(said)}"


TaskListener = Callable[[Task, TaskEvent], Awaitable[None]]
_Change = Callable[[Task], tuple[dict[str, Any], str, str | None, str | None]]  # fields, action, old, new
_COLUMNS = ", ".join(name for name in Task.__dataclass_fields__ if name != "already")  # type: ignore[attr-defined]


class TaskBoard:
    """Creates and changes tasks; every change goes through `_write` and is heard by listeners."""

    def __init__(
        self,
        config: ClusterConfig,
        store: Store,
        *,
        clock: Clock = utcnow,
        directory: GuildDirectory | None = None,
    ) -> None:
        self._config = config
        self._store = store
        self._clock = clock
        self.directory: GuildDirectory = directory or StaticDirectory.from_config(config)
        self._listeners: list[TaskListener] = []

    def add_listener(self, listener: TaskListener) -> None:
        self._listeners.append(listener)

    def remove_listener(self, listener: TaskListener) -> None:
        """Stop telling `listener` (a cog being unloaded); one that was never added is ignored."""
        if listener in self._listeners:
            self._listeners.remove(listener)

    # --- permissions --------------------------------------------------------------------------

    def _may_create(self, requester: Requester) -> None:
        if requester.is_agent or requester.level >= AccessLevel.OPERATOR:
            return
        raise NotAllowed(f"creating tasks needs the operator level; {requester.describe()} may only read them")

    def _may_change(self, requester: Requester, task: Task) -> None:
        if requester.is_agent:
            if task.assignee_kind == "agent" and task.assignee == requester.name:
                return
            owner = "is unassigned" if task.assignee is None else f"is assigned to {task.assignee_text}"
            raise NotAllowed(
                f"{requester.name} may change only tasks assigned to it; {task.display_id} {owner}. "
                "Ask an operator, or its assignee"
            )
        if requester.level < AccessLevel.OPERATOR:
            raise NotAllowed(f"changing tasks needs the operator level; {requester.describe()} may only read them")

    # --- reading ------------------------------------------------------------------------------

    async def get(self, task_id: str | int) -> Task:
        number = parse_task_id(task_id)
        row = await self._store.fetchone(f"SELECT {_COLUMNS} FROM tasks WHERE id = ?", (number,))
        if row is None:
            raise UnknownTask(f"no task T-{number}; see `/task list` or `atomizer-hq task list`")
        return Task(**dict(row))

    async def show(self, task_id: str | int, history_limit: int = 20) -> TaskDetail:
        task = await self.get(task_id)
        rows = await self._store.fetchall(
            "SELECT task_id, at, actor_kind, actor, front_end, action, old_value, new_value, note FROM task_events "
            "WHERE task_id = ? ORDER BY id DESC LIMIT ?",
            (task.id, history_limit),
        )
        delegations = await self._store.fetchall(
            "SELECT id, agent, status, run_id, created_at FROM delegations WHERE task = ? ORDER BY id",
            (task.display_id,),
        )
        return TaskDetail(
            task,
            [TaskEvent(**dict(r)) for r in reversed(rows)],
            [
                {
                    "id": f"D-{d['id']}",
                    "agent": d["agent"],
                    "status": d["status"],
                    "run_id": d["run_id"],
                    "created_at": d["created_at"],
                }
                for d in delegations
            ],
        )

    async def list(
        self,
        *,
        assignee: str | None = None,
        status: str | None = None,
        open_only: bool = False,
        limit: int = 25,
        offset: int = 0,
    ) -> list[Task]:
        clauses, params = [], []
        if assignee is not None:
            kind, who, _ = self._assignee(assignee)
            clauses.append("assignee_kind = ? AND assignee = ?")
            params += [kind, who]
        if status is not None:
            clauses.append("status = ?")
            params.append(parse_status(status))
        elif open_only:
            clauses.append(f"status IN ({', '.join('?' * len(OPEN_STATUSES))})")
            params += list(OPEN_STATUSES)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        order = (
            "CASE status WHEN 'blocked' THEN 0 WHEN 'in_progress' THEN 1 WHEN 'review' THEN 2 WHEN 'todo' THEN 3 "
            "ELSE 4 END, CASE priority WHEN 'urgent' THEN 0 WHEN 'high' THEN 1 WHEN 'normal' THEN 2 ELSE 3 END, id"
        )
        rows = await self._store.fetchall(
            f"SELECT {_COLUMNS} FROM tasks {where} ORDER BY {order} LIMIT ? OFFSET ?",
            (*params, max(1, min(limit, 500)), max(0, offset)),
        )
        return [Task(**dict(row)) for row in rows]

    async def last_change(self) -> int:
        """A number that grows with every change to any task, whichever process made it (the newest
        history line's id): a bot compares it to see what the CLI or another copy changed."""
        row = await self._store.fetchone("SELECT coalesce(max(id), 0) FROM task_events")
        return int(row[0]) if row else 0

    async def count(self, *, status: str | None = None, open_only: bool = False) -> int:
        if status is not None:
            row = await self._store.fetchone("SELECT count(*) FROM tasks WHERE status = ?", (parse_status(status),))
        elif open_only:
            row = await self._store.fetchone(
                f"SELECT count(*) FROM tasks WHERE status IN ({', '.join('?' * len(OPEN_STATUSES))})", OPEN_STATUSES
            )
        else:
            row = await self._store.fetchone("SELECT count(*) FROM tasks")
        return int(row[0]) if row else 0

    async def counts_by_assignee(self) -> dict[str, dict[str, int]]:
        """agent -> status -> count (for /status and the standup)."""
        rows = await self._store.fetchall(
            "SELECT assignee, status, count(*) AS n FROM tasks WHERE assignee_kind = 'agent' GROUP BY assignee, status"
        )
        counts: dict[str, dict[str, int]] = {}
        for row in rows:
            counts.setdefault(row["assignee"], {})[row["status"]] = row["n"]
        return counts

    async def search(self, text: str, limit: int = 25) -> list[Task]:
        """For autocomplete: by id prefix or words of the title, open tasks first."""
        typed = text.strip()
        if _TASK_ID.match(typed):
            number = parse_task_id(typed)
            rows = await self._store.fetchall(
                f"SELECT {_COLUMNS} FROM tasks WHERE CAST(id AS TEXT) LIKE ? ORDER BY id DESC LIMIT ?",
                (f"{number}%", limit),
            )
        else:
            rows = await self._store.fetchall(
                f"SELECT {_COLUMNS} FROM tasks WHERE title LIKE ? ORDER BY status IN ('done', 'cancelled'), id DESC "
                "LIMIT ?",
                (f"%{typed}%", limit),
            )
        return [Task(**dict(row)) for row in rows]

    # --- writing ------------------------------------------------------------------------------

    async def add(
        self,
        requester: Requester,
        title: str,
        *,
        assignee: str | None = None,
        priority: str = "normal",
        due: str | None = None,
        description: str | None = None,
    ) -> Task:
        self._may_create(requester)
        clean_title = clean_text(title, "title", TITLE_MAX)
        clean_description = clean_text(description or "", "description", DESCRIPTION_MAX, required=False)
        level = parse_priority(priority)
        due_date = parse_due(due, self._clock().date()) if due else None
        kind, who, label = self._assignee(assignee) if assignee else (None, None, None)
        now = iso(self._clock())
        async with self._store.transaction() as tx:
            cursor = await tx.execute(
                "INSERT INTO tasks (title, description, status, assignee_kind, assignee, assignee_label, priority, "
                "due, creator_kind, creator, created_at, updated_at) VALUES (?, ?, 'todo', ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (clean_title, clean_description, kind, who, label, level, due_date, requester.kind, requester.name,
                 now, now),
            )  # fmt: skip
            task_id = cursor.lastrowid or 0
            event = await self._event(tx, task_id, requester, "create", None, clean_title, None, now)
        task = await self.get(task_id)
        await self._notify(task, event)
        return task

    async def move(
        self,
        requester: Requester,
        task_id: str | int,
        status: str,
        *,
        note: str | None = None,
        expected_version: int | None = None,
        authorized: bool = False,
    ) -> Task:
        change = self._move_change(status, note)
        return await self._write(requester, task_id, [change], _clean_note(note), expected_version, authorized)

    async def done(self, requester: Requester, task_id: str | int, note: str | None = None, **kw: Any) -> Task:
        return await self.move(requester, task_id, "done", note=note, **kw)

    async def block(self, requester: Requester, task_id: str | int, reason: str, **kw: Any) -> Task:
        if not (reason or "").strip():
            raise InvalidInput("say why the task is blocked, e.g. 'waiting for the NX licence'")
        return await self.move(requester, task_id, "blocked", note=reason, **kw)

    async def assign(
        self,
        requester: Requester,
        task_id: str | int,
        assignee: str | None,
        *,
        note: str | None = None,
        expected_version: int | None = None,
        authorized: bool = False,
    ) -> Task:
        change = self._assign_change(assignee)
        return await self._write(requester, task_id, [change], _clean_note(note), expected_version, authorized)

    async def update(
        self,
        requester: Requester,
        task_id: str | int,
        *,
        status: str,
        assignee: str | None,
        note: str | None = None,
        expected_version: int | None = None,
    ) -> Task:
        """Move and reassign at once: both or neither (one version step, a history line for each)."""
        changes = [self._move_change(status, note), self._assign_change(assignee)]
        return await self._write(requester, task_id, changes, _clean_note(note), expected_version)

    @staticmethod
    def _move_change(status: str, note: str | None) -> _Change:
        target = parse_status(status)
        if target == "blocked" and not (note or "").strip():
            raise InvalidInput("say why the task is blocked (a note, e.g. 'waiting for the NX licence')")
        clean_note = _clean_note(note)

        def change(task: Task) -> tuple[dict[str, Any], str, str | None, str | None]:
            fields: dict[str, Any] = {"status": target, "blocked_reason": clean_note if target == "blocked" else None}
            return fields, "move", task.status, target

        return change

    def _assign_change(self, assignee: str | None) -> _Change:
        kind, who, label = self._assignee(assignee) if assignee else (None, None, None)

        def change(task: Task) -> tuple[dict[str, Any], str, str | None, str | None]:
            new_label = who if kind == "agent" else label
            fields = {"assignee_kind": kind, "assignee": who, "assignee_label": label}
            return fields, "assign", task.assignee_text, new_label

        return change

    async def _write(
        self,
        requester: Requester,
        task_id: str | int,
        changes: list[_Change],
        note: str | None,
        expected_version: int | None,
        authorized: bool = False,
    ) -> Task:
        """Apply `changes` in order, in one transaction: one version step, one history line each.

        `authorized`: the change follows from something already authorized (a delegation), not a request.
        """
        number = parse_task_id(task_id)
        now = iso(self._clock())
        events: list[TaskEvent] = []
        async with self._store.transaction() as tx:
            cursor = await tx.execute(f"SELECT {_COLUMNS} FROM tasks WHERE id = ?", (number,))
            row = await cursor.fetchone()
            if row is None:
                raise UnknownTask(f"no task T-{number}; see `/task list` or `atomizer-hq task list`")
            task = current = Task(**dict(row))
            fields: dict[str, Any] = {}
            steps: list[tuple[str, str | None, str | None]] = []
            for change in changes:
                changed, action, old, new = change(task)
                if not _changes_anything(task, changed):
                    continue  # a no-op part of the write leaves no history line
                task = replace(task, **changed)  # the next change sees this one's result
                fields.update(changed)
                steps.append((action, old, new))
            if not steps:
                # Nothing would change: nothing is recorded and the version stays, so the caller's next
                # If-Match still holds. Checked before the version: a retry of a write that landed is no conflict.
                if not authorized:
                    self._may_change(requester, task)
                return replace(task, already=_already(task, [change(task)[1] for change in changes]))
            if expected_version is not None and expected_version != current.version:
                raise TaskConflict(
                    f"{current.display_id} changed since you read it (you had version {expected_version}, it is now "
                    f"{current.version}: {current.status}, {current.assignee_text}, updated "
                    f"{current.updated_at[11:16]} UTC); reload it and try again"
                )
            if not authorized:
                self._may_change(requester, current)
            for index, (action, old, new) in enumerate(steps):
                said = note if index == 0 else None  # the note explains the first change (the move)
                events.append(await self._event(tx, number, requester, action, old, new, said, now))
            assignments = ", ".join(f"{name} = ?" for name in fields)
            await tx.execute(
                f"UPDATE tasks SET {assignments}, updated_at = ?, version = version + 1 WHERE id = ?",
                (*fields.values(), now, number),
            )
        updated = await self.get(number)
        for event in events:
            await self._notify(updated, event)
        return updated

    async def _event(
        self,
        tx: Any,
        task_id: int,
        requester: Requester,
        action: str,
        old: str | None,
        new: str | None,
        note: str | None,
        now: str,
    ) -> TaskEvent:
        actor = requester.name if not requester.via else f"{requester.name} via {requester.via}"
        await tx.execute(
            "INSERT INTO task_events (task_id, at, actor_kind, actor, front_end, action, old_value, new_value, note) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (task_id, now, requester.kind, actor, requester.front_end, action, old, new, note),
        )
        return TaskEvent(task_id, now, requester.kind, actor, requester.front_end, action, old, new, note)

    async def _notify(self, task: Task, event: TaskEvent) -> None:
        for listener in self._listeners:
            try:
                await listener(task, event)
            except Exception:  # a listener's failure must not undo or hide a recorded change
                log.exception("task listener %r failed on %s", listener, event.describe())

    def _assignee(self, text: str) -> tuple[str, str, str | None]:
        """An agent by name, or a Discord user (mention, user:<id>, @name)."""
        value = text.strip()
        agent = self._config.agent(value.lower().lstrip("@"))
        if agent is not None:
            return "agent", agent.name, None
        explicit = value[:1] in "@<#" or ":" in value  # a mention or a prefixed target; else a member's name
        target = TargetNormalizer(self._config, self.directory).normalize(value if explicit else f"@{value}")
        if target.kind != "user":
            raise InvalidInput(f"{text!r} is a channel; a task is assigned to an agent or a person")
        # A mention of an agent's own bot account (<@id>, user:<id>) means the agent, not a person.
        agent = next((a for a in self._config.agents if a.discord_user_id == target.id), None)
        if agent is not None:
            return "agent", agent.name, None
        return "user", target.id, target.display or f"user:{target.id}"

    # --- the link with delegation -------------------------------------------------------------

    async def require_task_ref(self, text: str) -> str:
        """Canonical `T-42` for a task that exists (delegations carry it)."""
        return (await self.get(text)).display_id

    async def delegation_accepted(self, task_ref: str, agent: str, delegation_id: str, requester: Requester) -> Task:
        """`/delegate … task:T-42`: the task goes to the agent and moves to in_progress, by the delegator."""
        task = await self.get(task_ref)
        note = f"delegated as {delegation_id}"
        if task.assignee_kind != "agent" or task.assignee != agent:
            task = await self.assign(requester, task.id, agent, note=note, authorized=True)
        if task.status in ("todo", "blocked", "review"):
            task = await self.move(requester, task.id, "in_progress", note=note, authorized=True)
        return task
