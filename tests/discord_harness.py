"""Test helpers for the Discord layer: a dpytest-backed bot, members with roles, and a slash-command driver.

dpytest 0.7.0 predates discord.py 2.7 and knows nothing of slash commands, so this module does what
`Client.login()` would have done and drives interactions through discord.py's real pipeline
(`parse_interaction_create` → tree → checks → command → error handler). It leans on discord.py
internals, which is why discord.py's version is pinned.

Typical use in a test module:

    @pytest.fixture
    async def bot(services):
        async with running_test_bot(services) as bot:
            yield bot

    async def test_x(bot):
        member = give_level(make_member(bot, "antoine"), AccessLevel.OPERATOR, bot.services.config)
        reply = single_message(await SlashDriver(bot).invoke("task add", user=member, options={"title": "x"}))
        assert reply.ephemeral
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
import re
import types
import weakref
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

import discord
import discord.ext.test as dpytest
import pytest
from discord import app_commands
from discord.ext.test import factories as dpytest_factories
from discord.state import ConnectionState
from discord.webhook.async_ import AsyncWebhookAdapter

from bot.authz import AccessLevel
from bot.config import ClusterConfig
from bot.discord_bot import AtomizerBot, bot_intents, role_ids_for
from bot.services import Services

TEST_APPLICATION_ID = 700000000000000001
EPHEMERAL = 64  # MessageFlags.ephemeral
INVOKER_TASK = "CommandTree-invoker"  # the name discord.py gives the task running a command
_snowflakes = itertools.count(800000000000000001)


def next_snowflake() -> int:
    return next(_snowflakes)


# --- the bot ----------------------------------------------------------------------------------


async def make_test_bot(services: Services) -> AtomizerBot:
    """An AtomizerBot on dpytest's fake Discord (1 guild, 1 text channel, no members yet), cogs loaded.

    Add members with make_member (dpytest's default member cannot be cached, see below).
    """
    bot = AtomizerBot(services, sync_commands=False, background_tasks=False)
    await bot._async_setup_hook()  # what login() does first: sets the loop
    await bot.setup_hook()  # loads the cogs
    allowed_mentions = bot.allowed_mentions
    dpytest.configure(bot, members=0)
    # configure() swapped http and the connection state; the tree still holds the old ones, and
    # interactions reach a tree only through `_connection._command_tree`.
    bot.tree._http = bot.http
    bot.tree._state = bot._connection
    bot._connection._command_tree = bot.tree
    bot._connection.application_id = TEST_APPLICATION_ID
    bot._connection.loop = asyncio.get_running_loop()  # _async_setup_hook gave it to the state configure() replaced
    # dpytest's fake state drops the bot's default allowed mentions; without this, a reply that
    # forgot its own allowed_mentions would look safe in tests and ping people in production.
    bot._connection.allowed_mentions = allowed_mentions
    # The production intents and discord.py's cache flags for them: without the members intent nothing
    # caches members, so they reach the bot only as Discord delivers them (see FakeMembers).
    assert bot._connection.member_cache_flags.value == discord.MemberCacheFlags.from_intents(bot_intents()).value
    FakeMembers(bot).install()
    return bot


async def close_test_bot(bot: AtomizerBot) -> None:
    await dpytest.empty_queue()
    # dpytest's FakeWebSocket has no socket, and Client.close() asks it whether it is open.
    bot.ws = None  # type: ignore[assignment]
    await bot.close()


@asynccontextmanager
async def running_test_bot(services: Services) -> AsyncIterator[AtomizerBot]:
    """make_test_bot ... close_test_bot, for a three-line fixture."""
    bot = await make_test_bot(services)
    try:
        yield bot
    finally:
        await close_test_bot(bot)


def guild_of(bot: discord.Client) -> discord.Guild:
    return bot.guilds[0]


# --- members and roles ---------------------------------------------------------------------


class FakeMembers:
    """The guild's members as Discord knows them. The bot (no members intent) caches none of them, so they
    reach it only the ways Discord delivers them: in interaction and message payloads, over REST
    (`GET /guilds/{id}/members/{id}`, guild.fetch_member) and in a members chunk answering the gateway's
    Request Guild Members (guild.query_members). Each request is recorded, for tests that care how."""

    _of: ClassVar[weakref.WeakKeyDictionary[Any, FakeMembers]] = weakref.WeakKeyDictionary()

    def __init__(self, bot: discord.Client) -> None:
        self.bot = bot
        self.payloads: dict[int, dict[str, Any]] = {}  # member payloads, each with its "user"
        self.fetched: list[int] = []  # ids asked for over REST
        self.queries: list[str] = []  # Request Guild Members queries sent over the gateway
        self._answers: set[asyncio.Task[None]] = set()

    @classmethod
    def of(cls, state: Any) -> FakeMembers:
        return cls._of[state]

    def install(self) -> None:
        state = self.bot._connection
        FakeMembers._of[state] = self
        # dpytest answers query_members from the cache and fetch_member from guild.members: both would
        # find nobody here. Put back discord.py's own query_members, which asks the gateway.
        state.query_members = types.MethodType(ConnectionState.query_members, state)  # type: ignore[method-assign]
        self.bot.ws.request_chunks = self.request_chunks  # type: ignore[method-assign]
        self.bot.http.get_member = self.get_member  # type: ignore[method-assign]
        guild = guild_of(self.bot)
        assert self.bot.user is not None
        # GUILD_CREATE's members always include the bot itself, and discord.py caches it whatever the flags.
        me = self.add(guild, _user_dict(self.bot.user), [])
        guild._add_member(me)

    def add(self, guild: discord.Guild, user: dict[str, Any], role_ids: Iterable[int | str]) -> discord.Member:
        payload = {
            "user": user,
            "roles": [str(role_id) for role_id in role_ids],
            "nick": None,
            "avatar": None,
            "joined_at": _now(),
            "premium_since": None,
            "pending": False,
            "deaf": False,
            "mute": False,
            "flags": 0,
            "communication_disabled_until": None,
        }
        self.payloads[int(user["id"])] = payload
        return self.member(guild, int(user["id"]))

    def member(self, guild: discord.Guild, user_id: int) -> discord.Member:
        """A Member object as one payload would give it (never put in the guild's cache)."""
        return discord.Member(data=self.payloads[user_id], guild=guild, state=self.bot._connection)  # type: ignore[arg-type]

    async def get_member(self, guild_id: int, member_id: int) -> dict[str, Any]:
        self.fetched.append(int(member_id))
        payload = self.payloads.get(int(member_id))
        if payload is None:
            raise discord.NotFound(_FakeResponse(404, "Not Found"), {"code": 10007, "message": "Unknown Member"})
        return payload

    async def request_chunks(
        self,
        guild_id: int,
        query: str | None = None,
        *,
        limit: int,
        user_ids: list[int] | None = None,
        presences: bool = False,
        nonce: str | None = None,
    ) -> None:
        """Discord's answer to Request Guild Members: one GUILD_MEMBERS_CHUNK, after the request was sent."""
        self.queries.append(query or "")
        if user_ids is not None:
            found = [self.payloads[int(i)] for i in user_ids if int(i) in self.payloads]
        else:
            # Discord matches usernames and nicknames that start with the query, ignoring case.
            wanted = (query or "").casefold()
            found = [
                payload
                for payload in self.payloads.values()
                if any(
                    (name or "").casefold().startswith(wanted)
                    for name in (payload["user"]["username"], payload["nick"])
                )
            ][: limit or 100]
        chunk = {"guild_id": str(guild_id), "members": found, "chunk_index": 0, "chunk_count": 1, "nonce": nonce}
        answer = asyncio.create_task(self._answer(chunk), name="fake-members-chunk")
        self._answers.add(answer)
        answer.add_done_callback(self._answers.discard)

    async def _answer(self, chunk: dict[str, Any]) -> None:
        """Deliver the chunk once discord.py waits for it, as a reply from the network would arrive (a chunk
        that came first would complete a request nobody waits on yet, and the query would time out)."""
        state = self.bot._connection
        for _ in range(1000):  # a few loop turns in practice; bounded so that a bug cannot hang a test
            request = state._chunk_requests.get(chunk["nonce"])
            if request is None or request.waiters:
                break
            await asyncio.sleep(0)
        state.parse_guild_members_chunk(chunk)


@dataclass
class _FakeResponse:
    """Enough of aiohttp's response for discord.HTTPException."""

    status: int
    reason: str


def make_member(
    bot: discord.Client,
    name: str,
    *,
    user_id: int | str | None = None,
    is_bot: bool = False,
    role_ids: Iterable[int | str] = (),
    nick: str | None = None,
    global_name: str | None = None,
) -> discord.Member:
    """A new member of the test guild, optionally with a fixed id (e.g. an agent's discord_user_id).

    Discord knows it; the bot does not (nothing caches members without the members intent) until a payload
    carries it: pass the result to SlashDriver or send_message.
    """
    guild = guild_of(bot)
    user = dpytest_factories.make_user_dict(
        name, "0001", None, id_num=int(user_id) if user_id is not None else next_snowflake(), bot=is_bot
    )
    user = {**user, "id": str(user["id"]), "global_name": global_name}
    members = FakeMembers.of(bot._connection)
    member = members.add(guild, user, [])
    if nick is not None:
        members.payloads[member.id]["nick"] = nick
        member = members.member(guild, member.id)
    return give_roles(member, role_ids) if role_ids else member


def give_roles(member: discord.Member, role_ids: Iterable[int | str]) -> discord.Member:
    """The member with these roles too, creating them in the guild with exactly those ids if needed.

    `guild.create_role` is broken in dpytest 0.7.0 and would pick its own ids anyway; the ids must be
    the config's `[roles]` ids for `level_for_roles` to match.
    """
    guild = member.guild
    roles = [role for role in member.roles if not role.is_default()]
    for role_id in role_ids:
        role = guild.get_role(int(role_id)) or dpytest.backend.make_role(f"role-{role_id}", guild, id_num=int(role_id))
        if role not in roles:
            roles.append(role)
    members = FakeMembers.of(member._state)
    members.payloads[member.id]["roles"] = [str(role.id) for role in roles]
    return members.member(guild, member.id)


def give_level(member: discord.Member, level: AccessLevel, config: ClusterConfig) -> discord.Member:
    """Give a member the (first) role the config maps to `level`; NONE gives nothing."""
    if level is AccessLevel.NONE:
        return member
    return give_roles(member, role_ids_for(level, config)[:1])


# --- messages ---------------------------------------------------------------------------------


async def send_message(
    bot: discord.Client, content: str, *, channel: discord.abc.GuildChannel, member: discord.Member
) -> discord.Message:
    """`member` posts `content` in `channel`: a MESSAGE_CREATE as Discord sends it (author, and the
    author's `member` with roles; mentioned users with theirs), then every event it caused has run.

    dpytest.message sends no roles and finds mentions in the cache, which holds nobody here.
    """
    state = bot._connection
    members = FakeMembers.of(state)
    data = dpytest_factories.make_message_dict(channel, member._user, content=content, guild_id=channel.guild.id)
    data["member"] = {k: v for k, v in _member_dict(member).items() if k != "user"}
    mentioned = dict.fromkeys(int(id) for id in _MENTION.findall(content))
    data["mentions"] = [
        {**members.payloads[id]["user"], "member": {k: v for k, v in members.payloads[id].items() if k != "user"}}
        for id in mentioned
        if id in members.payloads
    ]
    state.parse_message_create(data)
    dpytest.backend._cur_config.messages.setdefault(channel.id, []).append(data)
    await dpytest.run_all_events()
    message = state._get_message(data["id"])
    assert message is not None
    return message


_MENTION = re.compile(r"<@!?(\d{15,20})>")


# --- recorded responses -----------------------------------------------------------------------


@dataclass
class RecordedCall:
    """One request the bot made to Discord's webhook/interaction endpoints."""

    method: str
    path: str  # the route template, e.g. /interactions/{webhook_id}/{webhook_token}/callback
    url: str
    payload: dict[str, Any] | None
    params: dict[str, Any] | None = None

    @property
    def is_callback(self) -> bool:
        """The interaction's initial response (message, defer, autocomplete, update...)."""
        return self.path.endswith("/callback")

    @property
    def kind(self) -> str:
        if self.is_callback:
            return "callback"
        if self.method == "POST":
            return "followup"
        if self.path.endswith("/messages/@original"):
            return {"PATCH": "edit_original", "DELETE": "delete_original", "GET": "get_original"}[self.method]
        return f"{self.method} {self.path}"

    @property
    def type(self) -> int | None:
        """Callback type: 4 message, 5 deferred, 6 deferred update, 7 update, 8 autocomplete, 9 modal."""
        return self.payload.get("type") if self.is_callback and self.payload else None

    @property
    def message(self) -> dict[str, Any]:
        """The message part of the payload, wherever the route puts it."""
        if self.payload is None:
            return {}
        if self.is_callback:
            return self.payload.get("data") or {}
        return self.payload

    @property
    def content(self) -> str | None:
        return self.message.get("content")

    @property
    def flags(self) -> int:
        return int(self.message.get("flags") or 0)

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & EPHEMERAL)

    @property
    def embeds(self) -> list[discord.Embed]:
        return [discord.Embed.from_dict(embed) for embed in self.message.get("embeds") or []]

    @property
    def allowed_mentions(self) -> dict[str, Any] | None:
        return self.message.get("allowed_mentions")

    @property
    def choices(self) -> list[dict[str, Any]]:
        """Autocomplete suggestions (type 8)."""
        return list(self.message.get("choices") or [])

    @property
    def text(self) -> str:
        """Content plus every embed's title, description and fields: handy for `in` assertions."""
        parts = [self.content or ""]
        for embed in self.embeds:
            parts += [embed.title or "", embed.description or ""]
            parts += [f"{f.name}\n{f.value}" for f in embed.fields]
        return "\n".join(part for part in parts if part)


def single_message(calls: list[RecordedCall]) -> RecordedCall:
    """The one call that carried a message (content or embeds); fails if there is not exactly one."""
    found = [call for call in calls if call.content or call.message.get("embeds")]
    assert len(found) == 1, f"expected exactly one message, got {len(found)}: {calls!r}"
    return found[0]


# --- the driver -------------------------------------------------------------------------------


@dataclass
class SlashDriver:
    """Sends real INTERACTION_CREATE payloads through discord.py and records what the bot answers."""

    bot: AtomizerBot
    calls: list[RecordedCall] = field(default_factory=list)  # every call so far, across invocations

    async def invoke(
        self,
        name: str,
        *,
        user: discord.Member,
        options: Mapping[str, Any] | list[dict[str, Any]] | None = None,
        channel: discord.abc.GuildChannel | None = None,
    ) -> list[RecordedCall]:
        """Run `/name` ("task add" for a subcommand) as `user`; returns the calls it made.

        `options` maps option names to values (members, roles and channels may be given as objects),
        or is a list of raw option dicts, sent as is.
        """
        payload = self.build_payload(2, name, user=user, options=options, channel=channel)
        return await self.dispatch(payload)

    async def autocomplete(
        self,
        name: str,
        focused_option: str,
        value: str,
        *,
        user: discord.Member,
        options: Mapping[str, Any] | None = None,
        channel: discord.abc.GuildChannel | None = None,
    ) -> list[RecordedCall]:
        """Ask for suggestions for `focused_option` while the user has typed `value`."""
        given: dict[str, Any] = dict(options or {})
        given[focused_option] = value
        payload = self.build_payload(4, name, user=user, options=given, channel=channel, focused=focused_option)
        return await self.dispatch(payload)

    async def dispatch(self, payload: dict[str, Any]) -> list[RecordedCall]:
        """Feed a payload to the gateway parser, wait for the command to finish, return its calls."""
        recorded: list[RecordedCall] = []
        interaction_id = payload["id"]
        channel_id = payload["channel_id"]
        bot_user = _user_dict(self.bot.user) if self.bot.user else None

        async def fake_request(
            adapter: AsyncWebhookAdapter,
            route: discord.http.Route,
            session: Any = None,
            *,
            payload: dict[str, Any] | None = None,
            multipart: list[dict[str, Any]] | None = None,
            params: dict[str, Any] | None = None,
            **_: Any,
        ) -> Any:
            if payload is None and multipart:
                payload = next(
                    (json.loads(part["value"]) for part in multipart if part.get("name") == "payload_json"),
                    None,
                )
            call = RecordedCall(route.method, route.path, route.url, payload, params)
            recorded.append(call)
            return _fake_response(call, interaction_id, channel_id, bot_user)

        before = {task for task in asyncio.all_tasks() if task.get_name() == INVOKER_TASK}
        original = AsyncWebhookAdapter.request
        AsyncWebhookAdapter.request = fake_request  # type: ignore[method-assign,assignment]
        try:
            self.bot._connection.parse_interaction_create(payload)  # type: ignore[arg-type]
            started = [t for t in asyncio.all_tasks() if t.get_name() == INVOKER_TASK and t not in before]
            await asyncio.gather(*started)
            await dpytest.run_all_events()
        finally:
            AsyncWebhookAdapter.request = original  # type: ignore[method-assign]
        self.calls.extend(recorded)
        return recorded

    # --- payloads -----------------------------------------------------------------------------

    def build_payload(
        self,
        interaction_type: int,
        name: str,
        *,
        user: discord.Member,
        options: Mapping[str, Any] | list[dict[str, Any]] | None = None,
        channel: discord.abc.GuildChannel | None = None,
        focused: str | None = None,
    ) -> dict[str, Any]:
        """An INTERACTION_CREATE payload as Discord sends it for a guild slash command."""
        guild = user.guild
        channel = channel or guild.text_channels[0]
        resolved: dict[str, dict[str, Any]] = {}
        path = name.split()
        command = self._find(path)
        if isinstance(options, list):
            leaf_options = options
        else:
            leaf_options = [
                self._option(command, key, value, resolved, focused == key) for key, value in (options or {}).items()
            ]
        # Nest the leaf options under subcommand (type 1) and group (type 2) options.
        nested = leaf_options
        for depth in range(len(path) - 1, 0, -1):
            nested = [{"type": 1 if depth == len(path) - 1 else 2, "name": path[depth], "options": nested}]
        data: dict[str, Any] = {
            "id": str(next_snowflake()),
            "name": path[0],
            "type": 1,
            "guild_id": str(guild.id),
            "options": nested,
        }
        if resolved:
            data["resolved"] = resolved
        all_permissions = str(discord.Permissions.all().value)
        return {
            "id": str(next_snowflake()),
            "application_id": str(self.bot.application_id or TEST_APPLICATION_ID),
            "type": interaction_type,
            "token": f"interaction-token-{next_snowflake()}",
            "version": 1,
            "attachment_size_limit": 26_214_400,
            "guild_id": str(guild.id),
            "channel_id": str(channel.id),
            "channel": _channel_dict(channel, all_permissions),
            "member": _member_dict(user),
            "app_permissions": all_permissions,
            "locale": "en-US",
            "guild_locale": "en-US",
            "entitlements": [],
            "authorizing_integration_owners": {"0": str(guild.id)},
            "context": 0,
            "data": data,
        }

    def _find(self, path: list[str]) -> app_commands.Command[Any, ..., Any] | app_commands.Group | None:
        """The registered command at `path`, or None (the payload is still sent: tests may want that)."""
        node: Any = self.bot.tree.get_command(path[0])
        for part in path[1:]:
            node = node.get_command(part) if isinstance(node, app_commands.Group) else None
        return node

    def _option(
        self,
        command: app_commands.Command[Any, ..., Any] | app_commands.Group | None,
        key: str,
        value: Any,
        resolved: dict[str, dict[str, Any]],
        focused: bool,
    ) -> dict[str, Any]:
        parameter = command.get_parameter(key) if isinstance(command, app_commands.Command) else None
        if parameter is None:
            known = [p.name for p in command.parameters] if isinstance(command, app_commands.Command) else []
            raise KeyError(f"no option {key!r} on this command; options: {known}")
        kind = parameter.type
        option: dict[str, Any] = {"name": parameter.display_name, "type": kind.value}
        if focused:
            option["focused"] = True
            option["value"] = str(value)  # Discord sends what was typed so far, as text
            return option
        if kind in (discord.AppCommandOptionType.user, discord.AppCommandOptionType.mentionable) and isinstance(
            value, discord.abc.User
        ):
            resolved.setdefault("users", {})[str(value.id)] = _user_dict(value)
            if isinstance(value, discord.Member):
                member = _member_dict(value)
                del member["user"]
                resolved.setdefault("members", {})[str(value.id)] = member
            value = str(value.id)
        elif isinstance(value, discord.Role):
            resolved.setdefault("roles", {})[str(value.id)] = _role_dict(value)
            value = str(value.id)
        elif kind is discord.AppCommandOptionType.channel:
            channel = value if isinstance(value, discord.abc.GuildChannel) else None
            if channel is None:
                raise TypeError(f"option {key!r}: pass the channel object, not {value!r}")
            resolved.setdefault("channels", {})[str(channel.id)] = _channel_dict(
                channel, str(discord.Permissions.all().value)
            )
            value = str(channel.id)
        elif kind is discord.AppCommandOptionType.attachment:
            raise NotImplementedError("attachment options are not supported by SlashDriver yet")
        option["value"] = value
        return option


# --- payload pieces ---------------------------------------------------------------------------


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


def _user_dict(user: discord.abc.User) -> dict[str, Any]:
    return {
        "id": str(user.id),
        "username": user.name,
        "discriminator": user.discriminator,
        "global_name": getattr(user, "global_name", None),
        "avatar": None,
        "bot": user.bot,
    }


def _member_dict(member: discord.Member) -> dict[str, Any]:
    return {
        "user": _user_dict(member),
        "roles": [str(role.id) for role in member.roles if not role.is_default()],
        "permissions": str(member.guild_permissions.value),
        "nick": member.nick,
        "avatar": None,
        "joined_at": _now(),
        "premium_since": None,
        "pending": False,
        "deaf": False,
        "mute": False,
        "flags": 0,
        "communication_disabled_until": None,
    }


def _role_dict(role: discord.Role) -> dict[str, Any]:
    return {
        "id": str(role.id),
        "name": role.name,
        "color": role.colour.value,
        "hoist": role.hoist,
        "position": role.position,
        "permissions": str(role.permissions.value),
        "managed": role.managed,
        "mentionable": role.mentionable,
        "flags": 0,
    }


def _channel_dict(channel: discord.abc.GuildChannel, permissions: str) -> dict[str, Any]:
    return {
        "id": str(channel.id),
        "type": channel.type.value,
        "guild_id": str(channel.guild.id),
        "name": channel.name,
        "position": channel.position,
        "parent_id": str(channel.category_id) if channel.category_id else None,
        "permissions": permissions,
        "nsfw": False,
        "topic": None,
        "rate_limit_per_user": 0,
        "last_message_id": None,
        "permission_overwrites": [],
        "flags": 0,
    }


def _message_dict(data: dict[str, Any], channel_id: str, author: dict[str, Any] | None) -> dict[str, Any]:
    """The message Discord would echo back for a webhook or callback message payload."""
    return {
        "id": str(next_snowflake()),
        "channel_id": channel_id,
        "type": 0,
        "content": data.get("content") or "",
        "embeds": data.get("embeds") or [],
        "attachments": [],
        "components": [],
        "mentions": [],
        "mention_roles": [],
        "mention_everyone": False,
        "pinned": False,
        "tts": False,
        "flags": data.get("flags") or 0,
        "timestamp": _now(),
        "edited_timestamp": None,
        "author": author or {"id": str(TEST_APPLICATION_ID), "username": "atomizer-hq", "discriminator": "0"},
    }


def _fake_response(
    call: RecordedCall, interaction_id: str, channel_id: str, author: dict[str, Any] | None
) -> dict[str, Any] | None:
    """What Discord answers, shaped as discord.py reads it."""
    if call.is_callback:
        kind = call.type or 0
        response: dict[str, Any] = {
            "interaction": {
                "id": interaction_id,
                "type": 2,
                "response_message_loading": kind == 5,
                "response_message_ephemeral": call.ephemeral,
            }
        }
        if kind in (4, 7):
            message = _message_dict(call.message, channel_id, author)
            response["interaction"]["response_message_id"] = message["id"]
            response["resource"] = {"type": kind, "message": message}
        return response
    if call.method == "DELETE":
        return None
    return _message_dict(call.message, channel_id, author)


@dataclass
class Recorder:
    """Records what the bot sends to Discord outside SlashDriver.dispatch: background followups, clicks."""

    calls: list[RecordedCall] = field(default_factory=list)

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Replace AsyncWebhookAdapter.request (a method: it gets the adapter first) for the test."""

        async def request(
            adapter: AsyncWebhookAdapter,
            route: discord.http.Route,
            session: Any = None,
            *,
            payload: dict[str, Any] | None = None,
            multipart: list[dict[str, Any]] | None = None,
            params: dict[str, Any] | None = None,
            **_: Any,
        ) -> Any:
            if payload is None and multipart:
                payload = next((json.loads(p["value"]) for p in multipart if p.get("name") == "payload_json"), None)
            call = RecordedCall(route.method, route.path, route.url, payload, params)
            self.calls.append(call)
            return _fake_response(call, str(next_snowflake()), "0", None)

        monkeypatch.setattr(AsyncWebhookAdapter, "request", request)
