"""What the loopback Discord holds: one guild with its channels, roles and members, messages, interactions.

Payloads are built the way Discord sends them (the fields discord.py 2.7 reads), so the bot under test
parses them with its real code paths.
"""

from __future__ import annotations

import itertools
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

# Permission bits (https://discord.com/developers/docs/topics/permissions).
ADD_REACTIONS = 1 << 6
VIEW_CHANNEL = 1 << 10
SEND_MESSAGES = 1 << 11
EMBED_LINKS = 1 << 14
READ_MESSAGE_HISTORY = 1 << 16
USE_APPLICATION_COMMANDS = 1 << 31
CREATE_PUBLIC_THREADS = 1 << 35
SEND_MESSAGES_IN_THREADS = 1 << 38
EVERYONE_PERMISSIONS = VIEW_CHANNEL | SEND_MESSAGES | READ_MESSAGE_HISTORY | ADD_REACTIONS | USE_APPLICATION_COMMANDS
BOT_PERMISSIONS = EVERYONE_PERMISSIONS | EMBED_LINKS | CREATE_PUBLIC_THREADS | SEND_MESSAGES_IN_THREADS

# Gateway intents (https://discord.com/developers/docs/events/gateway#gateway-intents).
INTENT_GUILDS = 1 << 0
INTENT_GUILD_MEMBERS = 1 << 1
INTENT_GUILD_MESSAGES = 1 << 9
INTENT_GUILD_MESSAGE_REACTIONS = 1 << 10
INTENT_MESSAGE_CONTENT = 1 << 15
PRIVILEGED_INTENTS = INTENT_GUILD_MEMBERS | (1 << 8) | INTENT_MESSAGE_CONTENT

EPHEMERAL = 1 << 6  # message flag
LOADING = 1 << 7  # message flag: a deferred response's "thinking…" placeholder
INTERACTION_WINDOW_S = 3.0  # the first response must come within 3 s
INTERACTION_TOKEN_TTL_S = 15 * 60  # follow-ups and edits for 15 min


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


class Snowflakes:
    """Ids shaped like Discord's: a millisecond timestamp since the Discord epoch, then a counter."""

    EPOCH_MS = 1420070400000

    def __init__(self) -> None:
        self._counter = itertools.count()

    def next(self) -> str:
        ms = int(time.time() * 1000) - self.EPOCH_MS
        return str((ms << 22) | (next(self._counter) & 0x3FFFFF))


@dataclass
class User:
    id: str
    username: str
    bot: bool = False

    def payload(self) -> dict[str, Any]:
        return {
            "id": self.id, "username": self.username, "discriminator": "0", "global_name": self.username,
            "avatar": None, "bot": self.bot, "public_flags": 0, "flags": 0,
        }  # fmt: skip


@dataclass
class Role:
    id: str
    name: str
    permissions: int = 0
    position: int = 1

    def payload(self) -> dict[str, Any]:
        return {
            "id": self.id, "name": self.name, "color": 0,
            "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
            "hoist": False, "icon": None, "unicode_emoji": None, "position": self.position,
            "permissions": str(self.permissions), "managed": False, "mentionable": False, "flags": 0,
        }  # fmt: skip


@dataclass
class Channel:
    id: str
    name: str
    guild_id: str
    type: int = 0  # 0 text; 11 public thread, 12 private thread
    parent_id: str | None = None
    owner_id: str | None = None
    position: int = 0

    @property
    def is_thread(self) -> bool:
        return self.type in (10, 11, 12)

    def payload(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.id, "type": self.type, "guild_id": self.guild_id, "name": self.name,
            "parent_id": self.parent_id, "last_message_id": None, "rate_limit_per_user": 0, "flags": 0,
        }  # fmt: skip
        if self.is_thread:
            data.update(
                owner_id=self.owner_id, member_count=1, message_count=0, total_message_sent=0,
                thread_metadata={
                    "archived": False, "auto_archive_duration": 1440, "archive_timestamp": now_iso(),
                    "locked": False, "invitable": True, "create_timestamp": now_iso(),
                },
            )  # fmt: skip
        else:
            data.update(position=self.position, permission_overwrites=[], topic=None, nsfw=False)
            data["default_auto_archive_duration"] = 1440
        return data


@dataclass
class Member:
    user: User
    roles: list[str] = field(default_factory=list)

    def payload(self, *, with_user: bool = True) -> dict[str, Any]:
        data: dict[str, Any] = {
            "roles": list(self.roles), "joined_at": now_iso(), "deaf": False, "mute": False, "flags": 0,
            "pending": False, "nick": None, "avatar": None, "premium_since": None,
            "communication_disabled_until": None,
        }  # fmt: skip
        if with_user:
            data["user"] = self.user.payload()
        return data


@dataclass
class StoredMessage:
    """A message as the server holds it; `payload` is what Discord would answer for it."""

    payload: dict[str, Any]
    edits: int = 0
    deleted: bool = False
    reactions: list[str] = field(default_factory=list)  # emoji the bot added, in order

    @property
    def id(self) -> str:
        return str(self.payload["id"])

    @property
    def channel_id(self) -> str:
        return str(self.payload["channel_id"])

    @property
    def content(self) -> str:
        return str(self.payload.get("content") or "")

    @property
    def embeds(self) -> list[dict[str, Any]]:
        return list(self.payload.get("embeds") or [])

    @property
    def components(self) -> list[dict[str, Any]]:
        return list(self.payload.get("components") or [])

    @property
    def ephemeral(self) -> bool:
        return bool(int(self.payload.get("flags") or 0) & EPHEMERAL)

    @property
    def author_id(self) -> str:
        return str(self.payload["author"]["id"])

    def text(self) -> str:
        """Content and every embed's visible text, for assertions that do not care where a word is."""
        parts = [self.content]
        for embed in self.embeds:
            parts += [embed.get("title") or "", embed.get("description") or ""]
            parts += [f"{f.get('name', '')} {f.get('value', '')}" for f in embed.get("fields") or []]
            parts.append((embed.get("footer") or {}).get("text") or "")
        return "\n".join(part for part in parts if part)


@dataclass
class Response:
    """One thing the bot did with an interaction: its callback, a follow-up, an edit or a delete."""

    kind: str  # "callback", "followup", "edit", "delete"
    at: float  # seconds after the interaction was dispatched
    type: int | None = None  # the callback type (4 message, 5 deferred, 6 deferred update, 7 update, 8, 9 modal)
    message: StoredMessage | None = None
    modal: dict[str, Any] | None = None  # a modal it opened (callback 9): title, custom_id, text inputs

    @property
    def ephemeral(self) -> bool:
        return self.message is not None and self.message.ephemeral


@dataclass
class Interaction:
    id: str
    token: str
    type: int  # 2 application command, 3 component, 4 autocomplete, 5 modal submit
    payload: dict[str, Any]
    created: float  # time.monotonic() when dispatched
    responses: list[Response] = field(default_factory=list)
    original: StoredMessage | None = None

    @property
    def acknowledged(self) -> bool:
        return any(r.kind == "callback" for r in self.responses)

    @property
    def callback(self) -> Response | None:
        return next((r for r in self.responses if r.kind == "callback"), None)

    @property
    def settled(self) -> bool:
        """Answered in a way a user can see: a message, an update, or a deferral followed by more."""
        callback = self.callback
        if callback is None:
            return False
        if callback.type in (5, 6):
            return len(self.responses) > 1
        return True

    def messages(self) -> list[StoredMessage]:
        """Every message this interaction produced, latest state, in order, once each."""
        seen: dict[str, StoredMessage] = {}
        for response in self.responses:
            if response.message is not None:
                seen[response.message.id] = response.message
        return list(seen.values())

    def text(self) -> str:
        return "\n".join(message.text() for message in self.messages())


class GuildState:
    """One guild as Discord would describe it to a bot without the members intent."""

    def __init__(
        self,
        *,
        guild_id: str,
        channels: dict[str, str],
        roles: dict[str, str],
        bot_user_id: str = "700000000000000001",
        application_id: str | None = None,
        guild_name: str = "Atomizer-HQ",
    ) -> None:
        self.ids = Snowflakes()
        self.guild_id = guild_id
        self.guild_name = guild_name
        self.bot = User(bot_user_id, "atomizer-hq", bot=True)
        self.application_id = application_id or bot_user_id
        self.bot_role = Role(self.ids.next(), "atomizer-hq", BOT_PERMISSIONS, position=10)
        self.roles: dict[str, Role] = {guild_id: Role(guild_id, "@everyone", EVERYONE_PERMISSIONS, position=0)}
        self.roles[self.bot_role.id] = self.bot_role
        for position, (name, role_id) in enumerate(roles.items(), start=1):
            self.roles[role_id] = Role(role_id, name, 0, position=position)
        self.channels: dict[str, Channel] = {}
        for position, (name, channel_id) in enumerate(channels.items()):
            self.channels[channel_id] = Channel(channel_id, name.replace("_", "-"), guild_id, position=position)
        self.members: dict[str, Member] = {self.bot.id: Member(self.bot, [self.bot_role.id])}
        self.messages: dict[str, StoredMessage] = {}
        self.commands: list[dict[str, Any]] = []  # the guild's application commands, as last overwritten
        self.interactions: dict[str, Interaction] = {}

    # --- lookups ------------------------------------------------------------------------------

    def channel(self, name_or_id: str) -> Channel:
        if name_or_id in self.channels:
            return self.channels[name_or_id]
        wanted = name_or_id.lstrip("#").replace("_", "-")
        for channel in self.channels.values():
            if channel.name == wanted:
                return channel
        raise KeyError(f"no channel {name_or_id!r}; known: {', '.join(c.name for c in self.channels.values())}")

    def role_id(self, name_or_id: str) -> str:
        if name_or_id in self.roles:
            return name_or_id
        for role in self.roles.values():
            if role.name == name_or_id:
                return role.id
        raise KeyError(f"no role {name_or_id!r}")

    def member(self, user: User, roles: list[str]) -> Member:
        """The member for `user`, holding exactly `roles` now (names or ids)."""
        member = Member(user, [self.role_id(role) for role in roles])
        self.members[user.id] = member
        return member

    def permissions(self, member: Member) -> int:
        value = self.roles[self.guild_id].permissions
        for role_id in member.roles:
            value |= self.roles[role_id].permissions
        return value

    def command(self, name: str) -> dict[str, Any]:
        for command in self.commands:
            if command["name"] == name:
                return command
        known = ", ".join(sorted(c["name"] for c in self.commands)) or "none (no sync yet)"
        raise KeyError(f"/{name} is not registered in the guild; registered: {known}")

    def new_token(self) -> str:
        return "aW50ZXJhY3Rpb246" + secrets.token_urlsafe(48)

    # --- payloads -----------------------------------------------------------------------------

    def guild_payload(self) -> dict[str, Any]:
        """GUILD_CREATE as Discord sends it without the members intent: the bot is the only member listed."""
        return {
            "id": self.guild_id, "name": self.guild_name, "icon": None, "splash": None, "discovery_splash": None,
            "owner_id": "100000000000000999", "afk_channel_id": None, "afk_timeout": 300,
            "verification_level": 0, "default_message_notifications": 1, "explicit_content_filter": 0,
            "roles": [role.payload() for role in self.roles.values()], "emojis": [], "stickers": [],
            "features": [], "mfa_level": 0, "application_id": None, "system_channel_id": None,
            "system_channel_flags": 0, "rules_channel_id": None, "vanity_url_code": None, "description": None,
            "banner": None, "premium_tier": 0, "premium_subscription_count": 0, "preferred_locale": "en-US",
            "public_updates_channel_id": None, "nsfw_level": 0, "premium_progress_bar_enabled": False,
            "joined_at": now_iso(), "large": False, "unavailable": False, "member_count": 12,
            "voice_states": [], "members": [self.members[self.bot.id].payload()],
            "channels": [c.payload() for c in self.channels.values() if not c.is_thread],
            "threads": [c.payload() for c in self.channels.values() if c.is_thread],
            "presences": [], "stage_instances": [], "guild_scheduled_events": [], "soundboard_sounds": [],
            "max_members": 500000, "max_video_channel_users": 25, "nsfw": False,
        }  # fmt: skip

    def message_payload(
        self, channel: Channel, author: User, body: dict[str, Any], *, member: Member | None = None
    ) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.ids.next(), "channel_id": channel.id, "guild_id": self.guild_id,
            "author": author.payload(), "content": body.get("content") or "", "timestamp": now_iso(),
            "edited_timestamp": None, "tts": bool(body.get("tts")), "mention_everyone": False, "mentions": [],
            "mention_roles": [], "attachments": [], "embeds": list(body.get("embeds") or []),
            "components": list(body.get("components") or []), "pinned": False, "type": 0,
            "flags": int(body.get("flags") or 0),
        }  # fmt: skip
        if member is not None:
            data["member"] = member.payload(with_user=False)
        reference = body.get("message_reference")
        if reference:
            data["type"] = 19  # a reply
            data["message_reference"] = {
                "type": 0, "message_id": str(reference.get("message_id")), "channel_id": channel.id,
                "guild_id": self.guild_id,
            }  # fmt: skip
        return data
