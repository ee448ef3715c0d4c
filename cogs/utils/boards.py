"""Discord's side of a live board: BoardContent becomes an embed, posted, edited or deleted."""

from __future__ import annotations

import discord

from bot.boards import BoardContent, MessageGone
from bot.errors import InvalidInput

NO_MENTIONS = discord.AllowedMentions.none()


def to_embed(content: BoardContent) -> discord.Embed:
    embed = discord.Embed(title=content.title, description=content.description or None, colour=content.colour)
    for item in content.fields:
        embed.add_field(name=item.name, value=item.value, inline=item.inline)
    if content.footer:
        embed.set_footer(text=content.footer)
    return embed


class DiscordBoardPublisher:
    """Posts and edits board messages; keeps the messages it posted so an edit is one API call."""

    def __init__(self, client: discord.Client, config_file: str = "config/cluster.toml") -> None:
        self._client = client
        self._config_file = config_file  # named in the hint, so the operator edits the file in use
        self._posted: dict[str, discord.Message] = {}

    def _channel(self, channel_id: str) -> discord.abc.Messageable:
        channel = self._client.get_channel(int(channel_id))
        if not isinstance(channel, discord.abc.Messageable):
            raise InvalidInput(
                f"channel {channel_id} is not a text channel this bot can see; check [channels] in "
                f"{self._config_file} and the bot's permissions there (View Channel, Send Messages, Embed Links)"
            )
        return channel

    async def post(self, channel_id: str, content: BoardContent) -> str:
        message = await self._channel(channel_id).send(embed=to_embed(content), allowed_mentions=NO_MENTIONS)
        self._posted[str(message.id)] = message
        return str(message.id)

    async def edit(self, channel_id: str, message_id: str, content: BoardContent) -> None:
        target = self._posted.get(message_id)
        try:
            if target is not None:
                await target.edit(embed=to_embed(content))
            else:
                channel = self._channel(channel_id)
                if not isinstance(channel, discord.TextChannel | discord.Thread):
                    raise MessageGone(f"cannot edit in channel {channel_id}")
                await channel.get_partial_message(int(message_id)).edit(embed=to_embed(content))
        except discord.NotFound:
            self._posted.pop(message_id, None)
            raise MessageGone(f"board message {message_id} was deleted") from None

    async def delete(self, channel_id: str, message_id: str) -> None:
        target = self._posted.pop(message_id, None)
        try:
            if target is not None:
                await target.delete()
            else:
                channel = self._channel(channel_id)
                if isinstance(channel, discord.TextChannel | discord.Thread):
                    await channel.get_partial_message(int(message_id)).delete()
        except discord.NotFound:
            raise MessageGone(f"board message {message_id} was already deleted") from None
