"""The agents' shared project_log.md: one line per task event, where their hooks protocol already looks.

A TaskBoard listener. The file belongs to the agents as much as to us (they append a status line
after each task), so we only ever append, one whole line at a time, and a file we cannot write
costs a warning in our log, never a change on the board.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

from bot.clock import parse_iso
from bot.taskboard import Task, TaskEvent

log = logging.getLogger(__name__)


def log_line(task: Task, event: TaskEvent) -> str:
    """`2026-11-25 10:02 UTC · T-12 in_progress → done by nx-expert (task-board): meshed, 42k elements`"""
    at = parse_iso(event.at).strftime("%Y-%m-%d %H:%M UTC")
    who = f"by {event.actor} ({event.front_end})"
    if event.action == "create":
        text = f"{task.display_id} created {who}: {event.new_value}"
        if task.assignee is not None:
            text += f" (assigned to {task.assignee_text})"
    elif event.action == "move":
        text = f"{task.display_id} {event.old_value} → {event.new_value} {who}"
    elif event.action == "assign":
        text = f"{task.display_id} assigned to {event.new_value or 'nobody'} {who}"
    else:
        text = f"{task.display_id} {event.action} {who}"
    if event.note and event.action != "create":
        text += f": {event.note}"
    # One event, one line, whatever a name or a note holds: agents read this file line by line.
    return " ".join(f"{at} · {text}".split()) + "\n"


class ProjectLog:
    """Appends each task event to `path` (`~` expanded; created if missing); the directory must exist."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path).expanduser()
        # Keeps this process's lines in event order although each write runs in a worker thread.
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"ProjectLog({str(self.path)!r})"

    async def __call__(self, task: Task, event: TaskEvent) -> None:
        line = log_line(task, event)
        try:
            async with self._lock:
                await asyncio.to_thread(self._append, line.encode("utf-8"))
        except OSError as exc:
            log.warning("project log %s: could not append %s: %s", self.path, task.display_id, exc)

    def _append(self, line: bytes) -> None:
        # Append mode: every writer (us, the CLI in another process, the agents) adds at the end, and a
        # line this short goes out in one write. fsync: the line survives a crash right after the change.
        with open(self.path, "ab+") as file:
            file.seek(0, os.SEEK_END)
            if file.tell() > 0:
                file.seek(-1, os.SEEK_END)
                if file.read(1) != b"\n":  # someone's last line has no newline: ours starts on a line of its own
                    line = b"\n" + line
            file.write(line)
            file.flush()
            os.fsync(file.fileno())
