"""The guild as bot.targets sees it: a GuildDirectory read from discord.py's cache, never from the API."""

from __future__ import annotations

import discord

from bot.targets import GuildDirectory


def _member_names(member: discord.Member) -> list[str]:
    """Username, global name and nickname, each once, in that order."""
    names = [member.name, member.global_name, member.nick]
    return list(dict.fromkeys(name for name in names if name))


class DiscordGuildDirectory:
    """Channels and members of one guild, from the cache (no request to Discord: this runs inside the 3 s window).

    The bot runs without the members intent, so the member cache holds only members seen lately (in
    interactions and messages). `fallback` (typically the config's StaticDirectory, which knows the
    agents' bot accounts) fills that gap: what either knows resolves.
    """

    def __init__(self, guild: discord.Guild, fallback: GuildDirectory | None = None) -> None:
        self.guild = guild
        self.fallback = fallback

    def _channels(self) -> list[discord.abc.GuildChannel | discord.Thread]:
        # Only what can hold a message: a category or a forum cannot receive a delivery.
        found: list[discord.abc.GuildChannel | discord.Thread] = [*self.guild.channels, *self.guild.threads]
        return [channel for channel in found if isinstance(channel, discord.abc.Messageable)]

    def channel_ids_named(self, name: str) -> list[str]:
        wanted = name.removeprefix("#").casefold()
        ids = [str(channel.id) for channel in self._channels() if channel.name.casefold() == wanted]
        return _merged(ids, self.fallback.channel_ids_named(name) if self.fallback else [])

    def member_ids_named(self, name: str) -> list[str]:
        wanted = name.removeprefix("@").casefold()
        ids = [
            str(member.id)
            for member in self.guild.members
            if any(candidate.casefold() == wanted for candidate in _member_names(member))
        ]
        return _merged(ids, self.fallback.member_ids_named(name) if self.fallback else [])

    def channel_names(self) -> list[str]:
        names = [channel.name for channel in self._channels()]
        return _merged(names, self.fallback.channel_names() if self.fallback else [])

    def member_names(self) -> list[str]:
        names = [name for member in self.guild.members for name in _member_names(member)]
        return _merged(names, self.fallback.member_names() if self.fallback else [])

    def is_channel(self, id: str) -> bool:
        if id.isdigit() and any(channel.id == int(id) for channel in self._channels()):
            return True
        return self.fallback is not None and self.fallback.is_channel(id)

    def is_member(self, id: str) -> bool:
        if id.isdigit() and self.guild.get_member(int(id)) is not None:
            return True
        return self.fallback is not None and self.fallback.is_member(id)

    def describe(self, id: str) -> str:
        parts: list[str] = []
        if id.isdigit():
            channel = next((c for c in self._channels() if c.id == int(id)), None)
            if channel is not None:
                parts.append(f"#{channel.name}")
            member = self.guild.get_member(int(id))
            if member is not None:
                parts.append(f"@{member.name}")
        if parts:
            return " / ".join(parts)
        return self.fallback.describe(id) if self.fallback is not None else id


def _merged(first: list[str], second: list[str]) -> list[str]:
    return list(dict.fromkeys([*first, *second]))
