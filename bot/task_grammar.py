"""The small, forgiving grammar agents use to update the board in #task-board.

    T-42 done: meshed the M2 mirror          T-42 blocked: waiting for the NX licence
    T-42 in progress                         T-42 review - ready for a look
    T-42 assign @auditor                     new task: Review thermal analysis @auditor !high due:+3d

Case, markdown (**T-42**), bullets, emoji, and ':' '-' '—' as separators are all tolerated. A message
that is clearly meant for the board but cannot be read gets a one-line hint instead of silence.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from bot.errors import AtomizerError

if TYPE_CHECKING:
    from bot.authz import Requester
    from bot.taskboard import TaskBoard

Action = Literal["move", "assign", "create"]

_NOISE = re.compile(r"[*`~>|]+|__")  # markdown; single underscores stay (in_progress)
_LEAD = re.compile(r"^[\s\-•·*+\u2022\u25aa\u25b6\u27a1\U0001F300-\U0001FAFF\u2600-\u27BF]+")
_TASK_REF = re.compile(r"\bT\s*-?\s*(\d{1,9})\b", re.IGNORECASE)
_SEP = r"\s*(?:[:\-–—]\s*|\s+|$)"
_STATUS_WORDS = {
    "done": "done", "finished": "done", "complete": "done", "completed": "done", "closed": "done",
    "blocked": "blocked", "block": "blocked", "stuck": "blocked",
    "in progress": "in_progress", "in_progress": "in_progress", "in-progress": "in_progress", "started": "in_progress",
    "start": "in_progress", "starting": "in_progress", "working": "in_progress", "wip": "in_progress",
    "review": "review", "in review": "review", "ready for review": "review",
    "todo": "todo", "to do": "todo", "reopen": "todo", "reopened": "todo",
    "cancelled": "cancelled", "canceled": "cancelled", "cancel": "cancelled", "dropped": "cancelled",
}  # fmt: skip
_STATUS_RE = "|".join(sorted((re.escape(w) for w in _STATUS_WORDS), key=len, reverse=True))
_MOVE = re.compile(rf"^T\s*-?\s*(\d{{1,9}})\s*(?:is\s+|->\s*|→\s*|:\s*)?({_STATUS_RE})(?:{_SEP})(.*)$", re.I | re.S)
_ASSIGN = re.compile(r"^T\s*-?\s*(\d{1,9})\s*(?:assign(?:ed)?(?:\s+to)?|->|→|to)\s+@?([\w.\-]+)\s*$", re.I)
_CREATE = re.compile(r"^(?:new\s+task|new|task|add|create)\s*[:\-–—]\s*(.*)$", re.I | re.S)
_PRIORITY = re.compile(r"(?:^|\s)!(low|normal|high|urgent)\b", re.I)
_DUE = re.compile(r"(?:^|\s)due[:\s]\s*(\S+)", re.I)
_MENTION = re.compile(r"(?:^|\s)(<@!?\d{17,20}>|@[\w.\-]+)")

HINT = (
    "I couldn't read that as a board update. Write e.g. `T-42 done: meshed the mirror`, "
    "`T-42 blocked: waiting for the licence`, `T-42 in progress` or `new task: title @agent !high`."
)


@dataclass(frozen=True)
class BoardCommand:
    """One update read from a #task-board message."""

    action: Action
    task_id: int | None = None
    status: str | None = None
    note: str | None = None
    assignee: str | None = None
    title: str | None = None
    priority: str | None = None
    due: str | None = None


@dataclass(frozen=True)
class NotUnderstood:
    """The message was meant for the board but could not be read; `hint` says how to write it."""

    hint: str


def tidy(text: str) -> str:
    text = _NOISE.sub("", text)
    return _LEAD.sub("", text).strip().rstrip(".!")


def looks_meant_for_board(text: str) -> bool:
    cleaned = tidy(text)
    return bool(_TASK_REF.match(cleaned) or _CREATE.match(cleaned))


def parse_board_message(text: str) -> BoardCommand | NotUnderstood | None:
    """A command, a hint when it was meant for the board but unreadable, or None when it is just talk."""
    cleaned = tidy(text)
    if not cleaned:
        return None
    match = _MOVE.match(cleaned)
    if match:
        status = _STATUS_WORDS[match.group(2).lower()]
        note = match.group(3).strip().strip("-–—: ").strip() or None
        if status == "blocked" and not note:
            return NotUnderstood(f"Say why T-{match.group(1)} is blocked: `T-{match.group(1)} blocked: <reason>`.")
        return BoardCommand("move", task_id=int(match.group(1)), status=status, note=note)
    match = _ASSIGN.match(cleaned)
    if match:
        return BoardCommand("assign", task_id=int(match.group(1)), assignee=match.group(2))
    match = _CREATE.match(cleaned)
    if match:
        return _creation(match.group(1))
    if _TASK_REF.match(cleaned):
        ref = _TASK_REF.match(cleaned)
        number = ref.group(1) if ref else "42"
        return NotUnderstood(
            f"I couldn't tell what to do with T-{number}. Write `T-{number} done: note`, `T-{number} blocked: reason`, "
            f"`T-{number} in progress`, `T-{number} review` or `T-{number} assign @agent`."
        )
    return None


def _creation(rest: str) -> BoardCommand | NotUnderstood:
    priority = _PRIORITY.search(rest)
    due = _DUE.search(rest)
    mention = _MENTION.search(rest)
    title = rest
    for found in (priority, due, mention):
        if found is not None:
            title = title.replace(found.group(0), " ")
    title = " ".join(title.split()).strip(" -–—:")
    if not title:
        return NotUnderstood("A new task needs a title: `new task: Review thermal analysis @auditor !high`.")
    assignee = None
    if mention is not None:
        assignee = mention.group(1) if mention.group(1).startswith("<") else mention.group(1).lstrip("@")
    return BoardCommand(
        "create",
        title=title,
        assignee=assignee,
        priority=priority.group(1).lower() if priority else None,
        due=due.group(1) if due else None,
    )


@dataclass(frozen=True)
class MessageOutcome:
    """What a #task-board message did: `task` when applied; `reply` is the one line to answer with."""

    applied: bool
    reply: str | None
    task_id: int | None = None


async def apply_board_message(board: TaskBoard, requester: Requester, text: str) -> MessageOutcome:
    """Read a message and apply it exactly as the API would for this requester."""
    parsed = parse_board_message(text)
    if parsed is None:
        # An agent that names a task is trying to update it: never silently ignored. Other posts (an
        # agent's answer delivered to this channel, say) are just talk: a hint to each would be noise.
        if requester.is_agent and _TASK_REF.search(tidy(text)):
            return MessageOutcome(False, HINT)
        return MessageOutcome(False, None)
    if isinstance(parsed, NotUnderstood):
        return MessageOutcome(False, parsed.hint)
    try:
        if parsed.action == "create":
            task = await board.add(
                requester,
                parsed.title or "",
                assignee=parsed.assignee,
                priority=parsed.priority or "normal",
                due=parsed.due,
            )
            return MessageOutcome(True, f"{task.display_id} created: {task.title} ({task.assignee_text})", task.id)
        if parsed.action == "assign":
            task = await board.assign(requester, parsed.task_id or 0, parsed.assignee)
            return MessageOutcome(True, f"{task.display_id} assigned to {task.assignee_text}", task.id)
        task = await board.move(requester, parsed.task_id or 0, parsed.status or "", note=parsed.note)
        return MessageOutcome(True, f"{task.display_id} → {task.status}", task.id)
    except AtomizerError as refused:
        return MessageOutcome(False, str(refused))
