"""The guild as bot.targets sees it: a GuildDirectory over discord.py's cache and the members Discord told us of.

The bot runs without the members intent (privileged), so discord.py caches no members. People reach us
the ways Discord delivers them without it: inside interaction and message payloads, over REST for one id
(`guild.fetch_member`), and over the gateway for a name prefix (`guild.query_members`, Request Guild
Members, which needs no intent when a query is given). The directory remembers what those said, so the
core's synchronous lookups that follow find the person.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import OrderedDict
from collections.abc import Iterable

import discord

from bot.targets import GuildDirectory, is_snowflake

log = logging.getLogger(__name__)

MEMBERS_REMEMBERED = 1000  # the most recently seen members kept (a bound, not a cache of the whole guild)
LOOKUP_TIMEOUT_S = 1.5  # one question to Discord, inside the 3 s an interaction has for its first answer
QUERY_LIMIT = 25  # members asked for by name prefix: as many as one autocomplete can show
# What names one person by id: <@id>, <@!id>, user:<id>, discord:<id>, discord:user:<id>, or the bare id.
_USER_ID = re.compile(r"<\s*@!?\s*(\d+)\s*>|(?:discord\s*:\s*)?(?:user\s*:\s*)?(\d+)", re.IGNORECASE | re.ASCII)
_NOT_A_PERSON = re.compile(r"#|<\s*[#@]&|(?:discord\s*:\s*)?channel\s*:", re.IGNORECASE)


def _member_names(member: discord.Member) -> list[str]:
    """Username, global name and nickname, each once, in that order."""
    names = [member.name, member.global_name, member.nick]
    return list(dict.fromkeys(name for name in names if name))


def person_id(text: str) -> int | None:
    """The id when `text` names a person by id (a mention, user:<id> or a bare id), else None."""
    match = _USER_ID.fullmatch(text.strip())
    if match is None:
        return None
    id = match.group(1) or match.group(2)
    return int(id) if is_snowflake(id) else None


def member_label(member: discord.Member) -> str:
    """How a person is offered in a list: "Olga Petrova (olga)", or "olga" when both names agree."""
    return member.display_name if member.display_name == member.name else f"{member.display_name} ({member.name})"


class DiscordGuildDirectory:
    """Channels and members of one guild, from the cache and from what Discord told us of members lately.

    The synchronous lookups the core calls never touch the network (they run inside the 3 s window);
    `look_up` and `search` ask Discord first, where a front end can await. `fallback` (typically the
    config's StaticDirectory, which knows the agents' bot accounts) fills the gaps: what either knows resolves.
    """

    def __init__(self, guild: discord.Guild, fallback: GuildDirectory | None = None) -> None:
        self.guild = guild
        self.fallback = fallback
        self._seen: OrderedDict[int, discord.Member] = OrderedDict()  # most recent last

    # --- what Discord tells us -----------------------------------------------------------------

    def remember(self, members: Iterable[discord.Member | discord.User]) -> None:
        """Keep members a payload carried (callers, authors, mentions, resolved options), most recent last."""
        for member in members:
            if not isinstance(member, discord.Member) or member.guild.id != self.guild.id:
                continue  # a bare User is not known to be in the guild
            self._seen.pop(member.id, None)
            self._seen[member.id] = member
        while len(self._seen) > MEMBERS_REMEMBERED:
            self._seen.popitem(last=False)

    async def look_up(self, text: str) -> list[discord.Member] | None:
        """Ask Discord about the person `text` names (a mention, user:<id>, an id, @name or a name) unless
        they are known already, and remember the answer: the members Discord returned (by name: those whose
        username or nickname starts with it; empty: nobody). None when Discord was not asked (`text` names no
        person, or someone known) or did not answer in time: what is known then decides."""
        value = text.strip()
        if not value or _NOT_A_PERSON.match(value):
            return None
        if (id := person_id(value)) is not None:
            if self.is_member(str(id)):
                return None
            try:
                found = await asyncio.wait_for(self.guild.fetch_member(id), LOOKUP_TIMEOUT_S)
            except discord.NotFound:
                return []
            except (discord.HTTPException, TimeoutError) as exc:
                log.warning("could not ask Discord for member %s: %s", id, exc)
                return None
            self.remember([found])
            return [found]
        name = value.removeprefix("@").strip()
        if not name:
            return None
        if self.member_ids_named(name):
            return None
        return await self._query(name)

    async def search(self, typed: str) -> list[discord.Member]:
        """People whose names hold `typed` (what Discord finds by prefix, and those seen lately), by name."""
        wanted = typed.strip().removeprefix("@").strip()
        if wanted:
            await self._query(wanted)
        folded = wanted.casefold()
        found = [
            member
            for member in self.members()
            if any(folded in name.casefold() for name in (member.display_name, *_member_names(member)))
        ]
        return sorted(found, key=lambda member: member.display_name.casefold())

    async def _query(self, prefix: str) -> list[discord.Member] | None:
        try:
            found = await asyncio.wait_for(
                self.guild.query_members(prefix, limit=QUERY_LIMIT, cache=False), LOOKUP_TIMEOUT_S
            )
        except (TimeoutError, discord.ClientException, RuntimeError, ValueError) as exc:
            # Not connected to the gateway (e.g. between reconnects), or no answer in time.
            log.warning("could not ask Discord for members named %r: %s", prefix, exc)
            return None
        self.remember(found)
        return found

    # --- what is known -------------------------------------------------------------------------

    def member(self, id: int) -> discord.Member | None:
        return self._seen.get(id) or self.guild.get_member(id)

    def members(self) -> list[discord.Member]:
        """The cached members and those seen lately, each once."""
        by_id = {member.id: member for member in self.guild.members}
        by_id.update(self._seen)
        return list(by_id.values())

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
            for member in self.members()
            if any(candidate.casefold() == wanted for candidate in _member_names(member))
        ]
        return _merged(ids, self.fallback.member_ids_named(name) if self.fallback else [])

    def channel_names(self) -> list[str]:
        names = [channel.name for channel in self._channels()]
        return _merged(names, self.fallback.channel_names() if self.fallback else [])

    def member_names(self) -> list[str]:
        names = [name for member in self.members() for name in _member_names(member)]
        return _merged(names, self.fallback.member_names() if self.fallback else [])

    def is_channel(self, id: str) -> bool:
        if id.isdigit() and any(channel.id == int(id) for channel in self._channels()):
            return True
        return self.fallback is not None and self.fallback.is_channel(id)

    def is_member(self, id: str) -> bool:
        if id.isdigit() and self.member(int(id)) is not None:
            return True
        return self.fallback is not None and self.fallback.is_member(id)

    def describe(self, id: str) -> str:
        parts: list[str] = []
        if id.isdigit():
            channel = next((c for c in self._channels() if c.id == int(id)), None)
            if channel is not None:
                parts.append(f"#{channel.name}")
            member = self.member(int(id))
            if member is not None:
                parts.append(f"@{member.name}")
        if parts:
            return " / ".join(parts)
        return self.fallback.describe(id) if self.fallback is not None else id


def _merged(first: list[str], second: list[str]) -> list[str]:
    return list(dict.fromkeys([*first, *second]))
