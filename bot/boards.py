"""Live boards: messages edited in place (the status board, the task board), Discord-agnostic.

A board is rendered into `BoardContent` (an embed's worth of text, checked against Discord's
limits here, in the core). `LiveBoard` remembers its messages in SQLite, edits them only when the
content changed, finds them again after a restart, and re-posts a part someone deleted. The
Discord side is a `BoardPublisher`: three calls, so tests and the demo can use a recording one.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Protocol

from bot.clock import Clock, iso, utcnow
from bot.errors import AtomizerError
from bot.store import Store

log = logging.getLogger(__name__)

# Discord's embed limits (discord.md).
TITLE_MAX, DESCRIPTION_MAX, FIELDS_MAX, FIELD_NAME_MAX, FIELD_VALUE_MAX, FOOTER_MAX, TOTAL_MAX = (
    256, 4096, 25, 256, 1024, 2048, 6000,
)  # fmt: skip


class MessageGone(AtomizerError):
    """The board's message was deleted (or its channel is gone): post it again."""


@dataclass(frozen=True)
class BoardField:
    name: str
    value: str
    inline: bool = False


@dataclass(frozen=True)
class BoardContent:
    """One message of a board: an embed's worth of text, within Discord's limits."""

    title: str
    description: str = ""
    fields: tuple[BoardField, ...] = ()
    footer: str = ""
    colour: int | None = None

    def size(self) -> int:
        return (
            len(self.title)
            + len(self.description)
            + len(self.footer)
            + sum(len(f.name) + len(f.value) for f in self.fields)
        )

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def paginate(
    title: str,
    fields: list[BoardField],
    *,
    description: str = "",
    footer: str = "",
    colour: int | None = None,
) -> list[BoardContent]:
    """Split fields over as many messages as Discord's limits need; every part is within them."""
    title, description, footer = clip(title, TITLE_MAX), clip(description, DESCRIPTION_MAX), clip(footer, FOOTER_MAX)
    fields = [
        BoardField(clip(f.name, FIELD_NAME_MAX) or "-", clip(f.value, FIELD_VALUE_MAX) or "-", f.inline) for f in fields
    ]
    parts: list[list[BoardField]] = [[]]
    budget = TOTAL_MAX - len(title) - len(description) - len(footer) - 16  # room for " (2/3)"
    used = 0
    for item in fields:
        cost = len(item.name) + len(item.value)
        if len(parts[-1]) == FIELDS_MAX or (parts[-1] and used + cost > budget):
            parts.append([])
            used = 0
        parts[-1].append(item)
        used += cost
    if len(parts) == 1:
        return [BoardContent(title, description, tuple(parts[0]), footer, colour)]
    return [
        BoardContent(
            f"{title} ({index}/{len(parts)})",
            description if index == 1 else "",
            tuple(part),
            footer if index == len(parts) else "",
            colour,
        )
        for index, part in enumerate(parts, start=1)
    ]


def render_text(parts: list[BoardContent]) -> str:
    """A board as a terminal shows it (the CLI, the demo): title, description, then each field indented."""
    lines: list[str] = []
    for part in parts:
        lines += [f"┃ {part.title}"] + ([f"┃ {part.description}"] if part.description else [])
        for item in part.fields:
            value = item.value.replace("**", "").splitlines()
            if item.inline:  # side by side in Discord: one line each here
                lines.append(f"┃   {item.name:<16} {' · '.join(value)}")
            else:
                lines += [f"┃   {item.name}"] + [f"┃     {line}" for line in value]
        if part.footer:
            lines.append(f"┃ {part.footer}")
    return "\n".join(lines)


class BoardPublisher(Protocol):
    """How a board reaches Discord (or a test, or the demo's terminal)."""

    async def post(self, channel_id: str, content: BoardContent) -> str: ...

    async def edit(self, channel_id: str, message_id: str, content: BoardContent) -> None:
        """Raises MessageGone when the message no longer exists."""

    async def delete(self, channel_id: str, message_id: str) -> None: ...


@dataclass
class BoardStats:
    posts: int = 0
    edits: int = 0
    skipped: int = 0
    deletes: int = 0


@dataclass
class LiveBoard:
    """One board's messages: edited in place, never duplicated, re-posted when deleted."""

    name: str
    channel_id: str
    store: Store
    publisher: BoardPublisher
    clock: Clock = utcnow
    stats: BoardStats = field(default_factory=BoardStats)

    async def show(self, parts: list[BoardContent]) -> None:
        """Make the board's messages say `parts`, touching only the messages that changed."""
        rows = await self.store.fetchall(
            "SELECT part, channel_id, message_id, content_sha FROM board_messages WHERE board = ? ORDER BY part",
            (self.name,),
        )
        known = {row["part"]: row for row in rows if row["channel_id"] == self.channel_id}
        for row in rows:  # the board moved to another channel: the old messages go
            if row["channel_id"] != self.channel_id:
                await self._forget(row["part"], row["channel_id"], row["message_id"])
        for index, content in enumerate(parts):
            row = known.get(index)
            digest = content.digest()
            if row is not None and row["content_sha"] == digest:
                self.stats.skipped += 1
                continue
            if row is not None:
                try:
                    await self.publisher.edit(self.channel_id, row["message_id"], content)
                    self.stats.edits += 1
                    await self._remember(index, row["message_id"], digest)
                    continue
                except MessageGone:
                    log.info("board %s part %d was deleted; posting it again", self.name, index)
            message_id = await self.publisher.post(self.channel_id, content)
            self.stats.posts += 1
            await self._remember(index, message_id, digest)
        for index, row in known.items():
            if index >= len(parts):
                await self._forget(index, row["channel_id"], row["message_id"])

    async def message_deleted(self, message_id: str) -> bool:
        """Someone deleted a message: if it was one of this board's, forget it so `show` posts it again."""
        changed = await self.store.update(
            "DELETE FROM board_messages WHERE board = ? AND message_id = ?", (self.name, str(message_id))
        )
        return changed > 0

    async def _remember(self, part: int, message_id: str, digest: str) -> None:
        await self.store.execute(
            "INSERT INTO board_messages (board, part, channel_id, message_id, content_sha, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (board, part) DO UPDATE SET channel_id = excluded.channel_id, "
            "message_id = excluded.message_id, content_sha = excluded.content_sha, updated_at = excluded.updated_at",
            (self.name, part, self.channel_id, message_id, digest, iso(self.clock())),
        )

    async def _forget(self, part: int, channel_id: str, message_id: str) -> None:
        try:
            await self.publisher.delete(channel_id, message_id)
            self.stats.deletes += 1
        except MessageGone:
            pass
        await self.store.execute("DELETE FROM board_messages WHERE board = ? AND part = ?", (self.name, part))


Sleep = Callable[[float], Awaitable[None]]
Monotonic = Callable[[], float]


class CoalescedBoard:
    """Redraws a LiveBoard at most once per `min_interval_s`, always with the latest state.

    `request()` is cheap and never waits: a burst of a thousand changes gives one redraw now and one
    when the interval is over, each rendered from the database at that moment, so the last state is
    always what the board ends on. `sleep` and `monotonic` are injectable so tests control time.
    """

    def __init__(
        self,
        board: LiveBoard,
        render: Callable[[], Awaitable[list[BoardContent]]],
        *,
        min_interval_s: float = 2.0,
        sleep: Sleep = asyncio.sleep,
        monotonic: Monotonic = time.monotonic,
    ) -> None:
        self.board = board
        self._render = render
        self._interval = min_interval_s
        self._sleep = sleep
        self._monotonic = monotonic
        self._dirty = False
        self._last: float | None = None
        self._task: asyncio.Task[None] | None = None
        self.redraws = 0

    def request(self) -> None:
        self._dirty = True
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain(), name=f"board-{self.board.name}")

    async def _drain(self) -> None:
        while self._dirty:
            if self._last is not None:
                wait = self._last + self._interval - self._monotonic()
                if wait > 0:
                    await self._sleep(wait)
            self._dirty = False
            try:
                await self.board.show(await self._render())
                self.redraws += 1
            except Exception:  # Discord down, rate limited...: try again on the next interval
                log.exception("board %s: redraw failed; retrying", self.board.name)
                self._dirty = True
            finally:
                # Counted from when the edits were made, so two edits of a message are never closer.
                self._last = self._monotonic()

    async def settle(self) -> None:
        """Wait until every requested redraw is done (tests, shutdown)."""
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
