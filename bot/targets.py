"""Delivery targets: turn what a person or agent writes into `user:<id>` or `channel:<id>`, or refuse.

OpenClaw guesses when handed a bare number (openclaw-hooks.md, "Discord delivery targets"): older releases
refuse it as an ambiguous recipient, 2026.9.6 silently treats it as a channel. So the guess happens here,
from what the guild says the id is, and OpenClaw only ever sees the two explicit forms.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from bot.config import SNOWFLAKE_RE, ClusterConfig
from bot.errors import InvalidTarget

TargetKind = Literal["user", "channel"]
MAX_TARGET_LENGTH = 200  # far above any real target; keeps error messages and name matching cheap
_MAX_LISTED = 5  # candidates named in one error message

# `<@id>`, `<@!id>` (legacy nickname mention), `<@&id>` (a role), `<#id>`; spaces inside are forgiven.
_MENTION = re.compile(r"<\s*(@&|@!|@|#)\s*(.*?)\s*>", re.DOTALL)
# The prefixes OpenClaw's Discord plugin parses. ASCII-only so that e.g. 'ſ' does not case-fold into 's'.
_PREFIXED = re.compile(
    r"(discord\s*:\s*(?:user|channel)|discord|user|channel)\s*:\s*(.*)", re.IGNORECASE | re.ASCII | re.DOTALL
)
_PREFIX_KINDS: dict[str, TargetKind] = {
    "user": "user",
    "channel": "channel",
    "discord": "user",  # OpenClaw's rule: a bare `discord:<id>` is a user
    "discord:user": "user",
    "discord:channel": "channel",
}
_UNKNOWN_PREFIX = re.compile(r"([A-Za-z]+(?:\s*:\s*[A-Za-z]+)*)\s*:\s*[0-9]+", re.ASCII)
_PREFIX_WORD = re.compile(r"([A-Za-z]+)\s*(:.*)?", re.ASCII | re.DOTALL)  # what follows `discord:`
_EVERYONE = ("everyone", "here")


def is_snowflake(text: str) -> bool:
    """A Discord id: 17 to 20 ASCII digits."""
    # isascii() as well: str.isdigit-style checks elsewhere accept other scripts' digits; Discord does not.
    return text.isascii() and SNOWFLAKE_RE.fullmatch(text) is not None


@dataclass(frozen=True)
class Target:
    """Where a delivery goes, in one of the only two forms we hand to OpenClaw."""

    kind: TargetKind
    id: str
    display: str = field(default="", compare=False)  # "#task-board" / "@antoine" when the guild told us

    def __post_init__(self) -> None:
        # Checked here too, so that no code path can build a target OpenClaw would misread.
        if self.kind not in ("user", "channel"):
            raise InvalidTarget(f"{self.kind!r} is not a target kind; a target is a user or a channel")
        if not isinstance(self.id, str) or not is_snowflake(self.id):
            raise InvalidTarget(f"{self.id!r} is not a Discord id (17-20 digits)")

    def __str__(self) -> str:
        return f"{self.kind}:{self.id}"

    @property
    def label(self) -> str:
        """For people: the channel or member name when known, else the explicit form."""
        return self.display or str(self)


class GuildDirectory(Protocol):
    """What the normalizer needs to know about the guild, without Discord types (cogs adapt a discord.Guild)."""

    def channel_ids_named(self, name: str) -> list[str]:
        """Ids of the channels called `name` (case-insensitive, no leading '#')."""
        ...

    def member_ids_named(self, name: str) -> list[str]:
        """Ids of the members whose username, global name or nickname is `name` (case-insensitive, no '@')."""
        ...

    def channel_names(self) -> list[str]:
        """Every channel name, to suggest close matches when a name is not found."""
        ...

    def member_names(self) -> list[str]:
        """Every member's names, to suggest close matches when a name is not found."""
        ...

    def is_channel(self, id: str) -> bool: ...

    def is_member(self, id: str) -> bool: ...

    def describe(self, id: str) -> str:
        """A name for error messages and labels, e.g. "#task-board" or "@antoine"; the id if unknown."""
        ...


class StaticDirectory:
    """A guild held in plain dicts: for tests, the demo, and the CLI/API while the bot is not connected."""

    def __init__(
        self,
        channels: Mapping[str, str | Sequence[str]] | None = None,
        members: Mapping[str, str | Sequence[str]] | None = None,
    ) -> None:
        """`channels` maps ids to a name, `members` ids to their names (username, global name, nickname)."""
        self._channels = {id: _as_names(names) for id, names in (channels or {}).items()}
        self._members = {id: _as_names(names) for id, names in (members or {}).items()}

    @classmethod
    def from_config(cls, config: ClusterConfig) -> StaticDirectory:
        """What the cluster file knows: channel roles named after their role, agents after themselves."""
        channels: dict[str, list[str]] = {}
        for role, channel_id in config.channels.items():
            channels.setdefault(channel_id, []).append(role)
        members: dict[str, list[str]] = {}
        for agent in config.agents:
            if agent.discord_user_id is not None:
                members.setdefault(agent.discord_user_id, []).append(agent.name)
        return cls(channels, members)

    def channel_ids_named(self, name: str) -> list[str]:
        return _ids_named(self._channels, name)

    def member_ids_named(self, name: str) -> list[str]:
        return _ids_named(self._members, name)

    def channel_names(self) -> list[str]:
        return [name for names in self._channels.values() for name in names]

    def member_names(self) -> list[str]:
        return [name for names in self._members.values() for name in names]

    def is_channel(self, id: str) -> bool:
        return id in self._channels

    def is_member(self, id: str) -> bool:
        return id in self._members

    def describe(self, id: str) -> str:
        parts = [f"#{names[0]}" for names in [self._channels.get(id)] if names]
        parts += [f"@{names[0]}" for names in [self._members.get(id)] if names]
        return " / ".join(parts) or id


def _as_names(names: str | Sequence[str]) -> list[str]:
    # A lone string is one name, not a sequence of one-letter names.
    return [names] if isinstance(names, str) else list(names)


def _ids_named(table: Mapping[str, list[str]], name: str) -> list[str]:
    wanted = name.casefold()
    return [id for id, names in table.items() if any(n.casefold() == wanted for n in names)]


class TargetNormalizer:
    """Turns a written target into a `Target`, or raises `InvalidTarget` saying what to write instead."""

    def __init__(self, config: ClusterConfig, directory: GuildDirectory | None = None) -> None:
        """Without a directory, only explicit forms and channel roles resolve; bare ids and names are refused."""
        self.config = config
        self.directory = directory
        roles = list(config.channels)
        example = "daily_standup" if "daily_standup" in roles or not roles else roles[0]
        self._forms = f"write user:<id>, channel:<id>, #channel-name, @member or a channel role such as {example}"

    def normalize(self, text: str) -> Target:
        """The target `text` means; raises InvalidTarget (and nothing else) when it means none, or several."""
        if not isinstance(text, str):
            raise InvalidTarget(f"a target is text, not {type(text).__name__}; {self._forms}")
        stripped = text.strip()
        if not stripped:
            raise InvalidTarget(f"no target given; {self._forms}")
        if len(stripped) > MAX_TARGET_LENGTH:
            raise InvalidTarget(
                f"the target {stripped[:40] + '…'!r} is {len(stripped)} characters long, "
                f"more than the {MAX_TARGET_LENGTH} a target may have; {self._forms}"
            )
        if match := _MENTION.fullmatch(stripped):
            return self._mention(stripped, match.group(1), match.group(2))
        if match := _PREFIXED.fullmatch(stripped):
            prefix = re.sub(r"\s+", "", match.group(1)).lower()
            return self._explicit(stripped, prefix, match.group(2))
        if stripped.isdigit():
            return self._bare_id(stripped)
        if stripped[0] == "#":
            return self._channel_named(stripped, stripped[1:].strip())
        if stripped[0] == "@":
            return self._member_named(stripped, stripped[1:].strip())
        if stripped[0] == "<" and stripped[-1] == ">":
            raise InvalidTarget(f"{stripped!r} is not a user or channel mention (<@id> or <#id>); {self._forms}")
        return self._word(stripped)

    # --- explicit forms: the id is given, its kind too -----------------------------------------

    def _mention(self, text: str, sigil: str, inner: str) -> Target:
        if sigil == "@&":
            raise InvalidTarget(
                f"{text!r} mentions a role, and a role cannot receive a delivery; name a member (user:<id>) "
                "or a channel (channel:<id>)"
            )
        kind: TargetKind = "channel" if sigil == "#" else "user"
        if not is_snowflake(inner):
            what = "no id" if not inner else f"{inner!r}, which is not a Discord id (17-20 digits)"
            raise InvalidTarget(f"{text!r} holds {what}; write <{sigil}id> or {kind}:<id> with a 17-20 digit id")
        return self._checked(text, kind, inner)

    def _explicit(self, text: str, prefix: str, rest: str) -> Target:
        kind = _PREFIX_KINDS[prefix]
        if not rest:
            raise InvalidTarget(f"{text!r} has no id after {prefix + ':'!r}; write {kind}:<id> with a 17-20 digit id")
        if prefix == "discord" and (word := _PREFIX_WORD.fullmatch(rest)):
            if word.group(2) is None and word.group(1).lower() in ("user", "channel"):
                raise InvalidTarget(f"{text!r} has no id; write discord:{word.group(1).lower()}:<id> or {kind}:<id>")
            if word.group(2) is not None:
                raise InvalidTarget(self._unknown_prefix(text, f"discord:{word.group(1)}"))
        if not is_snowflake(rest):
            by_name = "#channel-name" if kind == "channel" else "@member"
            raise InvalidTarget(
                f"in {text!r}, {rest!r} is not a Discord id (17-20 digits); write {kind}:<id>, "
                f"or {by_name} to look it up by name"
            )
        return self._checked(text, kind, rest)

    def _checked(self, text: str, kind: TargetKind, id: str) -> Target:
        """The explicit target, unless the guild knows the id is the other kind (a DM that would go nowhere)."""
        if self.directory is None:
            return Target(kind, id)
        is_channel, is_member = self.directory.is_channel(id), self.directory.is_member(id)
        if kind == "user" and is_channel and not is_member:
            raise InvalidTarget(
                f"{text!r} addresses a user, but {id} is the channel {self.directory.describe(id)}; write channel:{id}"
            )
        if kind == "channel" and is_member and not is_channel:
            raise InvalidTarget(
                f"{text!r} addresses a channel, but {id} is the member {self.directory.describe(id)}; write user:{id}"
            )
        known = is_member if kind == "user" else is_channel
        return Target(kind, id, self.directory.describe(id) if known else "")

    # --- a bare id: its kind comes from the guild ----------------------------------------------

    def _bare_id(self, text: str) -> Target:
        if not is_snowflake(text):
            raise InvalidTarget(f"{text!r} is not a Discord id (17-20 digits); {self._forms}")
        if self.directory is None:
            # The ambiguous-recipient bug: never pass a bare id on, and never guess its kind.
            raise InvalidTarget(
                f"{text!r}: a bare id is ambiguous; write user:{text} for a member or channel:{text} for a channel"
            )
        is_channel, is_member = self.directory.is_channel(text), self.directory.is_member(text)
        if is_channel and is_member:
            raise InvalidTarget(
                f"{text} is both a channel and a member ({self.directory.describe(text)}); "
                f"write channel:{text} or user:{text}"
            )
        if is_channel:
            return Target("channel", text, self.directory.describe(text))
        if is_member:
            return Target("user", text, self.directory.describe(text))
        raise InvalidTarget(
            f"{text} is neither a channel nor a member of the guild; write channel:{text} or user:{text} "
            "if you are sure of it"
        )

    # --- names ---------------------------------------------------------------------------------

    def _channel_named(self, text: str, name: str) -> Target:
        if not name:
            raise InvalidTarget(f"{text!r} names no channel; write #channel-name or channel:<id>")
        if is_snowflake(name):
            return self._checked(text, "channel", name)
        ids = _unique(self.directory.channel_ids_named(name)) if self.directory is not None else []
        if not ids and (role := self._role(name)) is not None:
            return self._role_target(role)
        if len(ids) == 1:
            return self._checked(text, "channel", ids[0])
        if ids:
            raise InvalidTarget(
                f"{text!r} matches {len(ids)} channels: {self._listed('channel', ids)}; write one of them"
            )
        if self.directory is None:
            raise InvalidTarget(
                f"{text!r}: channel names cannot be looked up without the guild directory, and it is not a "
                f"channel role ({self._roles()}); write channel:<id>"
            )
        close = self._close(name, [*self.directory.channel_names(), *self.config.channels])
        raise InvalidTarget(
            f"no channel called {text!r}{_did_you_mean(close, '#')}; write #channel-name or channel:<id>"
        )

    def _member_named(self, text: str, name: str) -> Target:
        if not name:
            raise InvalidTarget(f"{text!r} names no member; write @member or user:<id>")
        if name.casefold() in _EVERYONE:
            raise InvalidTarget(
                f"{text!r} cannot receive a delivery; name one member (@member) or a channel (#channel)"
            )
        if is_snowflake(name):
            return self._checked(text, "user", name)
        if self.directory is None:
            raise InvalidTarget(
                f"{text!r}: member names cannot be looked up without the guild directory; write user:<id>"
            )
        ids = _unique(self.directory.member_ids_named(name))
        if len(ids) == 1:
            return self._checked(text, "user", ids[0])
        if ids:
            raise InvalidTarget(f"{text!r} matches {len(ids)} members: {self._listed('user', ids)}; write one of them")
        close = self._close(name, self.directory.member_names())
        raise InvalidTarget(f"no member called {text!r}{_did_you_mean(close, '@')}; write @member or user:<id>")

    def _word(self, text: str) -> Target:
        """A bare word: a configured channel role first (deliberate), then a channel or member name."""
        if (role := self._role(text)) is not None:
            return self._role_target(role)
        unknown_prefix = _UNKNOWN_PREFIX.fullmatch(text)
        if self.directory is None:
            if unknown_prefix:
                raise InvalidTarget(self._unknown_prefix(text, unknown_prefix.group(1)))
            raise InvalidTarget(
                f"{text!r} is not a channel role ({self._roles()}), and names cannot be looked up without the "
                f"guild directory; {self._forms}"
            )
        channels = _unique(self.directory.channel_ids_named(text))
        members = _unique(self.directory.member_ids_named(text))
        if channels and members:
            raise InvalidTarget(
                f"{text!r} names both channels and members: {self._listed('channel', channels)}, "
                f"{self._listed('user', members)}; write #{text}, @{text} or one of the ids"
            )
        if len(channels) == 1:
            return self._checked(text, "channel", channels[0])
        if len(members) == 1:
            return self._checked(text, "user", members[0])
        if channels or members:
            kind: TargetKind = "channel" if channels else "user"
            ids = channels or members
            raise InvalidTarget(
                f"{text!r} matches {len(ids)} {kind if kind == 'channel' else 'member'}s: {self._listed(kind, ids)}; "
                "write one of them"
            )
        if unknown_prefix:
            raise InvalidTarget(self._unknown_prefix(text, unknown_prefix.group(1)))
        close = [
            *self._close(text, list(self.config.channels)),
            *(f"#{n}" for n in self._close(text, self.directory.channel_names())),
            *(f"@{n}" for n in self._close(text, self.directory.member_names())),
        ]
        hint = f" (did you mean {' or '.join(_unique(close)[:3])}?)" if close else ""
        raise InvalidTarget(f"no channel role, channel or member called {text!r}{hint}; {self._forms}")

    # --- helpers -------------------------------------------------------------------------------

    def _role(self, name: str) -> str | None:
        """The configured channel role `name` means; 'Daily-Standup' and 'daily standup' mean daily_standup."""
        key = re.sub(r"[\s-]+", "_", name.strip()).casefold()
        return next((role for role in self.config.channels if role.casefold() == key), None)

    def _role_target(self, role: str) -> Target:
        id = self.config.channels[role]
        if self.directory is not None and self.directory.is_channel(id):
            return Target("channel", id, self.directory.describe(id))
        return Target("channel", id, f"#{role}")

    def _roles(self) -> str:
        return ", ".join(self.config.channels) or "none configured"

    def _listed(self, kind: TargetKind, ids: list[str]) -> str:
        shown = [f"{kind}:{id} ({self.directory.describe(id)})" if self.directory else f"{kind}:{id}" for id in ids]
        more = len(ids) - _MAX_LISTED
        return ", ".join(shown[:_MAX_LISTED]) + (f" and {more} more" if more > 0 else "")

    @staticmethod
    def _close(name: str, names: Iterable[str]) -> list[str]:
        by_folded: dict[str, str] = {}
        for candidate in names:
            by_folded.setdefault(candidate.casefold(), candidate)
        matches = difflib.get_close_matches(name.casefold(), list(by_folded), n=3, cutoff=0.6)
        return [by_folded[match] for match in matches]

    def _unknown_prefix(self, text: str, prefix: str) -> str:
        return (
            f"{text!r}: {prefix + ':'!r} is not a target prefix; the prefixes are user:, channel:, discord: (a user), "
            "discord:user: and discord:channel:"
        )


def _unique(ids: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(ids))


def _did_you_mean(close: list[str], sigil: str) -> str:
    return f" (did you mean {' or '.join(sigil + name for name in close)}?)" if close else ""
