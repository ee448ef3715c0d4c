"""A BoardPublisher that keeps messages in memory, like a channel would."""

from __future__ import annotations

from dataclasses import dataclass, field

from bot.boards import BoardContent, MessageGone


@dataclass
class MemoryChannelPublisher:
    messages: dict[str, tuple[str, BoardContent]] = field(default_factory=dict)
    calls: list[tuple[str, str]] = field(default_factory=list)
    next_id: int = 100000000000000500

    async def post(self, channel_id: str, content: BoardContent) -> str:
        self.next_id += 1
        message_id = str(self.next_id)
        self.messages[message_id] = (channel_id, content)
        self.calls.append(("post", message_id))
        return message_id

    async def edit(self, channel_id: str, message_id: str, content: BoardContent) -> None:
        self.calls.append(("edit", message_id))
        if message_id not in self.messages:
            raise MessageGone(f"message {message_id} was deleted")
        self.messages[message_id] = (channel_id, content)

    async def delete(self, channel_id: str, message_id: str) -> None:
        self.calls.append(("delete", message_id))
        if self.messages.pop(message_id, None) is None:
            raise MessageGone(f"message {message_id} was deleted")

    def in_channel(self, channel_id: str) -> list[BoardContent]:
        return [content for channel, content in self.messages.values() if channel == channel_id]
