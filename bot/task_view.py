"""How tasks read: the live board in #task-board, /task show, and one-line listings.

Shared by the Discord cog, the CLI and the demo, so every front end shows a task the same way.
"""

from __future__ import annotations

from datetime import date

from bot.boards import BoardContent, BoardField, clip, paginate
from bot.taskboard import OPEN_STATUSES, Task, TaskDetail

STATUS_ICON = {"todo": "⬜", "in_progress": "🔵", "blocked": "🟥", "review": "🟨", "done": "✅", "cancelled": "⚫"}
PRIORITY_MARK = {"urgent": "‼️ ", "high": "❗ ", "normal": "", "low": ""}
BOARD_TASKS_MAX = 100  # beyond this the board says how many more there are (`/task list` has them all)


def task_line(task: Task, today: date) -> str:
    """T-42 ❗ in_progress · nx-expert · due 2026-12-01 · Mesh the M2 mirror"""
    parts = [f"{task.display_id} {STATUS_ICON.get(task.status, '')} {task.status}", task.assignee_text]
    if task.due:
        parts.append(f"due {task.due}" + (" (overdue)" if task.is_overdue(today) else ""))
    return f"{PRIORITY_MARK[task.priority]}{' · '.join(parts)} · {task.title}"


def _field(task: Task, today: date) -> BoardField:
    name = f"{STATUS_ICON.get(task.status, '')} {task.display_id} {PRIORITY_MARK[task.priority]}{task.title}"
    lines = [f"{task.status.replace('_', ' ')} · {task.assignee_text}"]
    if task.due:
        lines[0] += f" · due {task.due}" + (" **overdue**" if task.is_overdue(today) else "")
    if task.status == "blocked" and task.blocked_reason:
        lines.append(f"blocked: {task.blocked_reason}")
    return BoardField(clip(name, 256), "\n".join(lines))


def task_board(tasks: list[Task], open_count: int, today: date) -> list[BoardContent]:
    """The live board: open tasks, most urgent first; split cleanly over several messages when long."""
    shown = [t for t in tasks if t.status in OPEN_STATUSES][:BOARD_TASKS_MAX]
    by_status = {s: sum(1 for t in shown if t.status == s) for s in OPEN_STATUSES}
    summary = ", ".join(f"{n} {s.replace('_', ' ')}" for s, n in by_status.items() if n) or "nothing open"
    footer = "Agents: post `T-42 done: note`, `T-42 blocked: reason`, `new task: title @agent !high`."
    if open_count > len(shown):
        footer = f"+{open_count - len(shown)} more open tasks: /task list. " + footer
    fields = [_field(t, today) for t in shown] or [BoardField("No open tasks", "Add one with /task add.")]
    return paginate("Task board", fields, description=f"{open_count} open: {summary}", footer=footer)


def task_detail(detail: TaskDetail, today: date) -> list[BoardContent]:
    task = detail.task
    fields = [
        BoardField("status", f"{STATUS_ICON.get(task.status, '')} {task.status}", True),
        BoardField("assignee", task.assignee_text, True),
        BoardField("priority", task.priority, True),
        BoardField("due", (task.due or "-") + (" (overdue)" if task.is_overdue(today) else ""), True),
        BoardField("created", f"{task.created_at[:16].replace('T', ' ')} by {task.creator}", True),
        BoardField("version", str(task.version), True),
    ]
    if task.blocked_reason and task.status == "blocked":
        fields.append(BoardField("blocked", task.blocked_reason))
    if task.description:
        fields.append(BoardField("description", clip(task.description, 1024)))
    if detail.delegations:
        lines = [f"{d['id']} to {d['agent']}: {d['status']}" for d in detail.delegations[-10:]]
        fields.append(BoardField("delegations", "\n".join(lines)))
    history = [f"{e.at[5:16].replace('T', ' ')} {e.describe()}" for e in detail.history[-12:]]
    fields.append(BoardField("history", clip("\n".join(history) or "-", 1024)))
    return paginate(f"{task.display_id} · {task.title}", fields)
