"""A Discord-compatible server on 127.0.0.1: the REST routes atomizer-hq uses and the gateway websocket.

The real bot process talks to it over the wire (ATOMIZER_DISCORD_API_BASE); tests drive it through a
small API (`invoke_slash`, `click`, `post_message`, `messages_in`, `wait_for`, `force_reconnect`,
`rate_limit`, `stop`/`start`). Every breach of Discord's limits is answered as Discord answers it and
recorded in `violations`, which the tests' fixture asserts is empty.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from tests.loopback_discord.limits import (
    THREAD_NAME_MAX,
    Problem,
    check_commands,
    check_message,
    check_modal,
    form_error,
)
from tests.loopback_discord.state import (
    EPHEMERAL,
    INTENT_GUILD_MESSAGE_REACTIONS,
    INTENT_GUILD_MESSAGES,
    INTENT_GUILDS,
    INTENT_MESSAGE_CONTENT,
    INTERACTION_TOKEN_TTL_S,
    INTERACTION_WINDOW_S,
    LOADING,
    PRIVILEGED_INTENTS,
    Channel,
    GuildState,
    Interaction,
    Member,
    Response,
    StoredMessage,
    User,
    now_iso,
)

log = logging.getLogger(__name__)

API_PREFIX = "/api/v10"
ROUTE = web.RequestKey("route", str)
BODY = web.RequestKey("body", object)
OPTION_TYPES = {3: str, 4: int, 5: bool, 10: float}
EVENT_INTENTS = {  # events a bot gets only with these intents
    "MESSAGE_CREATE": INTENT_GUILD_MESSAGES, "MESSAGE_UPDATE": INTENT_GUILD_MESSAGES,
    "MESSAGE_DELETE": INTENT_GUILD_MESSAGES, "MESSAGE_REACTION_ADD": INTENT_GUILD_MESSAGE_REACTIONS,
    "THREAD_CREATE": INTENT_GUILDS, "GUILD_CREATE": INTENT_GUILDS,
}  # fmt: skip


@dataclass
class Violation:
    """A request Discord would have refused (or that breaks this project's rules): the test fails on it."""

    route: str
    problem: str
    body: Any = None

    def __str__(self) -> str:
        return f"{self.route}: {self.problem}"


@dataclass
class RequestRecord:
    method: str
    path: str  # with the /api/v10 prefix removed, ids filled in
    route: str  # the route template, e.g. "POST /channels/{channel_id}/messages"
    status: int
    at: float  # time.monotonic()
    body: Any = None


@dataclass
class RateLimitRule:
    route: str  # a template ("POST /channels/{channel_id}/messages") or a concrete path
    retry_after: float
    remaining: int  # how many more requests to refuse


@dataclass
class _Session:
    id: str
    intents: int
    seq: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)  # kept for RESUME


class _Connection:
    def __init__(self, ws: web.WebSocketResponse, compress: bool) -> None:
        self.ws = ws
        self.compressor = zlib.compressobj() if compress else None
        self.session: _Session | None = None

    async def send(self, payload: dict[str, Any]) -> None:
        text = json.dumps(payload)
        if self.compressor is None:
            await self.ws.send_str(text)
        else:
            data = self.compressor.compress(text.encode()) + self.compressor.flush(zlib.Z_SYNC_FLUSH)
            await self.ws.send_bytes(data)


class DiscordError(Exception):
    def __init__(self, status: int, code: int, message: str, body: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body or {"message": message, "code": code}


class LoopbackDiscord:
    """One guild, one bot account, one application; REST under /api/v10 and the gateway at /gateway."""

    def __init__(
        self,
        state: GuildState,
        *,
        token: str,
        port: int = 0,
        heartbeat_interval_ms: int = 41250,
        privileged_intents: int = PRIVILEGED_INTENTS,
    ) -> None:
        self.state = state
        self.token = token
        self.port = port
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.privileged_intents = privileged_intents  # what the Developer Portal has switched on
        self.violations: list[Violation] = []
        self.unhandled: list[str] = []  # routes the bot called that this server does not know
        self.requests: list[RequestRecord] = []
        self.rate_limits: list[RateLimitRule] = []
        self.identifies: list[dict[str, Any]] = []
        self.resumes: list[dict[str, Any]] = []
        self.heartbeats = 0
        self.command_syncs: list[list[dict[str, Any]]] = []
        self._connections: list[_Connection] = []
        self._sessions: dict[str, _Session] = {}
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.app = self._make_app()

    # --- life -----------------------------------------------------------------------------------

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}{API_PREFIX}"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway"

    @property
    def running(self) -> bool:
        return self._runner is not None

    async def start(self) -> None:
        """Listen (again) on 127.0.0.1; the first start picks a free port, later ones reuse it."""
        runner = web.AppRunner(self.app, handle_signals=False, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        if self.port == 0:
            self.port = runner.addresses[0][1]
        self._runner = runner

    async def stop(self) -> None:
        """Stop listening and drop every gateway connection (a Discord outage, as the bot sees it)."""
        runner, self._runner = self._runner, None
        for connection in list(self._connections):
            await connection.ws.close(code=1001)
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> LoopbackDiscord:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # --- the tests' API ----------------------------------------------------------------------

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 20.0, what: str = "") -> Any:
        """Wait until `predicate()` is truthy (checked after every request and gateway message); its value."""

        async def until() -> Any:
            async with self._changed:
                while not (result := predicate()):
                    await self._changed.wait()
                return result

        try:
            return await asyncio.wait_for(until(), timeout)
        except TimeoutError:
            raise AssertionError(
                f"loopback Discord: timed out after {timeout} s waiting for {what or predicate}"
            ) from None

    @property
    def connected(self) -> bool:
        """A bot is identified (or resumed) on the gateway."""
        return any(c.session is not None and not c.ws.closed for c in self._connections)

    def messages_in(self, channel: str) -> list[StoredMessage]:
        """The channel's messages that are not deleted, oldest first (ephemeral ones included)."""
        channel_id = self.state.channel(channel).id
        return [m for m in self.state.messages.values() if m.channel_id == channel_id and not m.deleted]

    def requests_to(self, route: str) -> list[RequestRecord]:
        """Requests by template ("PUT /channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me")."""
        return [r for r in self.requests if r.route == route]

    def rate_limit(self, route: str, retry_after: float, times: int = 1) -> None:
        """Answer the next `times` requests to `route` (template or concrete path) with a 429."""
        self.rate_limits.append(RateLimitRule(route, retry_after, times))

    async def force_reconnect(self) -> None:
        """Op 7 on every connection: the bot must reconnect and RESUME."""
        for connection in list(self._connections):
            if not connection.ws.closed:
                await connection.send({"op": 7, "d": None, "s": None, "t": None})

    async def invalidate_session(self, *, resumable: bool = False) -> None:
        """Op 9: with `resumable` False the bot must IDENTIFY again from scratch."""
        for connection in list(self._connections):
            if not connection.ws.closed:
                await connection.send({"op": 9, "d": resumable, "s": None, "t": None})

    async def post_message(self, channel: str, author: User, content: str, roles: list[str] = ()) -> StoredMessage:  # type: ignore[assignment]
        """Someone (an agent's bot account, a person) posts in a channel: stored and dispatched."""
        target = self.state.channel(channel)
        member = self.state.member(author, list(roles))
        message = StoredMessage(self.state.message_payload(target, author, {"content": content}, member=member))
        self.state.messages[message.id] = message
        await self.dispatch("MESSAGE_CREATE", self._message_event(message, member))
        return message

    async def invoke_slash(
        self,
        name: str,
        options: dict[str, Any] | None = None,
        *,
        user: User | None = None,
        roles: list[str] = (),  # type: ignore[assignment]
        channel: str = "technical",
        timeout: float = 15.0,
        wait: bool = True,
    ) -> Interaction:
        """`/name [subcommand] option:value…` as Discord sends it; returns once answered (deferrals followed up),
        or at once with `wait` False.

        Option types come from the commands the bot registered, so an unregistered command or option fails here.
        """
        command_name, *path = name.split()
        command = self.state.command(command_name)
        data: dict[str, Any] = {"id": command["id"], "name": command_name, "type": 1, "guild_id": self.state.guild_id}
        resolved: dict[str, dict[str, Any]] = {}
        node, holder = command, data
        for sub in path:
            child = next((o for o in node.get("options") or [] if o["name"] == sub and o["type"] in (1, 2)), None)
            if child is None:
                raise KeyError(f"/{name}: {sub!r} is not a registered subcommand")
            entry: dict[str, Any] = {"name": sub, "type": child["type"], "options": []}
            holder.setdefault("options", []).append(entry)
            node, holder = child, entry
        given = []
        for key, value in (options or {}).items():
            spec = next((o for o in node.get("options") or [] if o["name"] == key), None)
            if spec is None:
                raise KeyError(f"/{name} has no option {key!r}")
            given.append({"name": key, "type": spec["type"], "value": self._option_value(spec, value, resolved)})
        holder["options"] = given
        if resolved:
            data["resolved"] = resolved
        return await self._interact(2, data, user=user, roles=list(roles), channel=channel, timeout=timeout, wait=wait)

    async def click(
        self,
        message: StoredMessage,
        custom_id: str,
        *,
        user: User | None = None,
        roles: list[str] = (),  # type: ignore[assignment]
        timeout: float = 15.0,
        wait: bool = True,
    ) -> Interaction:
        """A button click on `message` (a component interaction, type 3); returns once answered, as invoke_slash."""
        buttons = [c for row in message.components for c in row.get("components") or []]
        if not any(b.get("custom_id") == custom_id for b in buttons):
            raise KeyError(f"message {message.id} has no component {custom_id!r}")
        data = {"custom_id": custom_id, "component_type": 2}
        channel = self.state.channels[message.channel_id].name
        return await self._interact(
            3, data, user=user, roles=list(roles), channel=channel, timeout=timeout, message=message, wait=wait
        )

    def person(self, name: str, user_id: str | None = None) -> User:
        return User(user_id or self.state.ids.next(), name)

    # --- gateway -------------------------------------------------------------------------------

    async def dispatch(self, event: str, data: dict[str, Any]) -> None:
        """Send a dispatch to every session that has the intent for it (kept for RESUME)."""
        for session in self._sessions.values():
            needed = EVENT_INTENTS.get(event, 0)
            if needed and not session.intents & needed:
                continue
            payload = data
            if event.startswith("MESSAGE_") and not session.intents & INTENT_MESSAGE_CONTENT:
                if data.get("author", {}).get("id") != self.state.bot.id:
                    payload = {**data, "content": "", "embeds": [], "components": [], "attachments": []}
            session.seq += 1
            frame = {"op": 0, "t": event, "s": session.seq, "d": payload}
            session.events.append(frame)
            for connection in self._connections:
                if connection.session is session and not connection.ws.closed:
                    try:
                        await connection.send(frame)
                    except ConnectionError:
                        pass
        await self._notify()

    async def _gateway(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(autoping=True, max_msg_size=4096 * 1024)
        await ws.prepare(request)
        compress = request.query.get("compress")
        if request.query.get("encoding", "json") != "json" or compress not in (None, "zlib-stream"):
            await ws.close(code=4002, message=b"Error while decoding payload.")
            return ws
        connection = _Connection(ws, compress == "zlib-stream")
        self._connections.append(connection)
        try:
            await connection.send({"op": 10, "d": {"heartbeat_interval": self.heartbeat_interval_ms}})
            async for message in ws:
                if message.type is not WSMsgType.TEXT:
                    break
                await self._gateway_message(connection, json.loads(message.data))
                await self._notify()
        finally:
            self._connections.remove(connection)
            await self._notify()
        return ws

    async def _gateway_message(self, connection: _Connection, payload: dict[str, Any]) -> None:
        op, data = payload.get("op"), payload.get("d")
        if op == 1:
            self.heartbeats += 1
            await connection.send({"op": 11})
        elif op == 2:
            await self._identify(connection, data)
        elif op == 6:
            await self._resume(connection, data)
        elif op in (3, 4, 8):
            pass  # presence, voice, member requests: nothing to do for this bot
        else:
            await connection.ws.close(code=4001, message=b"Unknown opcode.")

    async def _identify(self, connection: _Connection, data: dict[str, Any]) -> None:
        self.identifies.append({k: v for k, v in data.items() if k != "token"})
        if data.get("token") != self.token:
            await connection.ws.close(code=4004, message=b"Authentication failed.")
            return
        intents = int(data.get("intents", 0))
        if intents & PRIVILEGED_INTENTS & ~self.privileged_intents:
            await connection.ws.close(code=4014, message=b"Disallowed intent(s).")
            return
        session = _Session(self.state.ids.next(), intents)
        self._sessions = {session.id: session}  # an IDENTIFY ends the older sessions
        connection.session = session
        ready = {
            "v": 10, "user": {**self.state.bot.payload(), "verified": True, "mfa_enabled": False},
            "guilds": [{"id": self.state.guild_id, "unavailable": True}], "session_id": session.id,
            "session_type": "normal", "resume_gateway_url": self.gateway_url, "shard": [0, 1],
            "application": {"id": self.state.application_id, "flags": 1 << 19},
            "private_channels": [], "relationships": [], "presences": [], "geo_ordered_rtc_regions": [],
        }  # fmt: skip
        await self.dispatch("READY", ready)
        await self.dispatch("GUILD_CREATE", self.state.guild_payload())

    async def _resume(self, connection: _Connection, data: dict[str, Any]) -> None:
        self.resumes.append({k: v for k, v in data.items() if k != "token"})
        session = self._sessions.get(str(data.get("session_id")))
        if data.get("token") != self.token or session is None:
            await connection.send({"op": 9, "d": False})
            return
        connection.session = session
        seq = int(data.get("seq") or 0)
        for frame in session.events:
            if frame["s"] > seq:
                await connection.send(frame)
        session.seq += 1
        frame = {"op": 0, "t": "RESUMED", "s": session.seq, "d": {}}
        session.events.append(frame)
        await connection.send(frame)

    # --- REST ------------------------------------------------------------------------------------

    def _make_app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        app.router.add_get("/gateway", self._gateway)
        routes: list[tuple[str, str, Callable[..., Any]]] = [
            ("GET", "/users/@me", self._me),
            ("GET", "/oauth2/applications/@me", self._application),
            ("GET", "/applications/@me", self._application),
            ("GET", "/gateway", self._gateway_info),
            ("GET", "/gateway/bot", self._gateway_info),
            ("PUT", "/applications/{application_id}/guilds/{guild_id}/commands", self._overwrite_commands),
            ("GET", "/applications/{application_id}/guilds/{guild_id}/commands", self._get_commands),
            ("PUT", "/applications/{application_id}/commands", self._overwrite_global_commands),
            ("GET", "/channels/{channel_id}", self._get_channel),
            ("POST", "/channels/{channel_id}/messages", self._create_message),
            ("GET", "/channels/{channel_id}/messages", self._history),
            ("GET", "/channels/{channel_id}/messages/{message_id}", self._get_message),
            ("PATCH", "/channels/{channel_id}/messages/{message_id}", self._edit_message),
            ("DELETE", "/channels/{channel_id}/messages/{message_id}", self._delete_message),
            ("PUT", "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me", self._react),
            ("DELETE", "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me", self._unreact),
            ("POST", "/channels/{channel_id}/threads", self._create_thread),
            ("POST", "/channels/{channel_id}/messages/{message_id}/threads", self._create_thread),
            ("POST", "/interactions/{interaction_id}/{token}/callback", self._callback),
            ("POST", "/webhooks/{application_id}/{token}", self._followup),
            ("GET", "/webhooks/{application_id}/{token}/messages/{message_id}", self._webhook_get),
            ("PATCH", "/webhooks/{application_id}/{token}/messages/{message_id}", self._webhook_edit),
            ("DELETE", "/webhooks/{application_id}/{token}/messages/{message_id}", self._webhook_delete),
        ]
        for method, path, handler in routes:
            app.router.add_route(method, API_PREFIX + path, self._wrap(f"{method} {path}", handler))
        app.router.add_route("*", API_PREFIX + "/{tail:.*}", self._unknown)
        return app

    def _wrap(self, route: str, handler: Callable[..., Any]) -> Callable[[web.Request], Any]:
        async def handle(request: web.Request) -> web.StreamResponse:
            request[ROUTE] = route
            body = await _read_body(request)
            request[BODY] = body
            for rule in self.rate_limits:
                if rule.remaining > 0 and rule.route in (route, f"{request.method} {_path(request)}"):
                    rule.remaining -= 1
                    return _rate_limited(rule.retry_after)
            try:
                answer = await handler(request, body, **request.match_info)
            except DiscordError as error:
                return _json(error.body, status=error.status)
            if answer is None:
                return web.Response(status=204)
            return _json(answer)

        return handle

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Callable[..., Any]) -> web.StreamResponse:
        path = _path(request)
        open_route = path.startswith(("/webhooks/", "/interactions/")) or request.path == "/gateway"
        if not open_route and request.headers.get("Authorization") != f"Bot {self.token}":
            response: web.StreamResponse = _json({"message": "401: Unauthorized", "code": 0}, status=401)
        else:
            response = await handler(request)
        if request.path != "/gateway":
            response.headers.setdefault("X-RateLimit-Limit", "5")
            response.headers.setdefault("X-RateLimit-Remaining", "4")
            response.headers.setdefault("X-RateLimit-Reset", f"{time.time() + 1:.3f}")
            response.headers.setdefault("X-RateLimit-Reset-After", "1.000")
            response.headers.setdefault("X-RateLimit-Bucket", f"{abs(hash(request.get(ROUTE, path))):x}")
            self.requests.append(
                RequestRecord(request.method, path, request.get(ROUTE, f"{request.method} {path}"),
                              response.status, time.monotonic(), request.get(BODY))
            )  # fmt: skip
            await self._notify()
        return response

    async def _unknown(self, request: web.Request) -> web.StreamResponse:
        self.unhandled.append(f"{request.method} {_path(request)}")
        return _json({"message": "404: Not Found", "code": 0}, status=404)

    def _violation(self, request: web.Request, problems: list[Problem], body: Any) -> DiscordError:
        for path, message in problems:
            self.violations.append(Violation(request[ROUTE], f"{path}: {message}" if path else message, body))
        return DiscordError(400, 50035, "Invalid Form Body", form_error(problems))

    def _refuse(self, request: web.Request, status: int, code: int, message: str) -> DiscordError:
        self.violations.append(Violation(request[ROUTE], f"{status} {code} {message}", request.get(BODY)))
        return DiscordError(status, code, message)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # --- REST: identity and commands ---------------------------------------------------------

    async def _me(self, request: web.Request, body: Any) -> dict[str, Any]:
        return {**self.state.bot.payload(), "verified": True, "mfa_enabled": False, "locale": "en-US"}

    async def _application(self, request: web.Request, body: Any) -> dict[str, Any]:
        return {
            "id": self.state.application_id, "name": "atomizer-hq", "icon": None, "description": "",
            "rpc_origins": [], "bot_public": False, "bot_require_code_grant": False,
            "bot": self.state.bot.payload(), "owner": {**self.state.bot.payload(), "bot": False},
            "verify_key": "0" * 64, "team": None, "flags": 1 << 19, "summary": "",
            "interactions_endpoint_url": None, "tags": [], "redirect_uris": [],
        }  # fmt: skip

    async def _gateway_info(self, request: web.Request, body: Any) -> dict[str, Any]:
        limit = {"total": 1000, "remaining": 999, "reset_after": 86_400_000, "max_concurrency": 1}
        return {"url": self.gateway_url, "shards": 1, "session_start_limit": limit}

    async def _overwrite_commands(
        self, request: web.Request, body: Any, application_id: str, guild_id: str
    ) -> list[dict[str, Any]]:
        if application_id != self.state.application_id or guild_id != self.state.guild_id:
            raise self._refuse(request, 404 if guild_id != self.state.guild_id else 403, 10004, "Unknown Guild")
        if not isinstance(body, list):
            raise self._violation(request, [("", "Expected a list of commands")], body)
        problems = check_commands(body)
        if problems:
            raise self._violation(request, problems, body)
        commands = []
        for command in body:
            commands.append({
                **command, "id": self.state.ids.next(), "application_id": application_id, "guild_id": guild_id,
                "version": self.state.ids.next(), "type": command.get("type", 1),
                "default_member_permissions": command.get("default_member_permissions"),
                "dm_permission": command.get("dm_permission", True), "nsfw": command.get("nsfw", False),
            })  # fmt: skip
        self.state.commands = commands
        self.command_syncs.append(commands)
        return commands

    async def _get_commands(self, request: web.Request, body: Any, application_id: str, guild_id: str) -> Any:
        return self.state.commands

    async def _overwrite_global_commands(self, request: web.Request, body: Any, application_id: str) -> Any:
        problems = check_commands(body if isinstance(body, list) else [])
        if problems:
            raise self._violation(request, problems, body)
        return [{**c, "id": self.state.ids.next(), "application_id": application_id, "version": "1"} for c in body]

    # --- REST: channels and messages ---------------------------------------------------------

    def _channel(self, channel_id: str) -> Channel:
        channel = self.state.channels.get(channel_id)
        if channel is None:
            raise DiscordError(404, 10003, "Unknown Channel")
        return channel

    def _message(self, channel_id: str, message_id: str) -> StoredMessage:
        message = self.state.messages.get(message_id)
        if message is None or message.deleted or message.channel_id != channel_id or message.ephemeral:
            raise DiscordError(404, 10008, "Unknown Message")
        return message

    def _message_event(self, message: StoredMessage, member: Member | None) -> dict[str, Any]:
        event = dict(message.payload)
        if member is not None:
            event["member"] = member.payload(with_user=False)
        return event

    async def _get_channel(self, request: web.Request, body: Any, channel_id: str) -> dict[str, Any]:
        return self._channel(channel_id).payload()

    async def _create_message(self, request: web.Request, body: Any, channel_id: str) -> dict[str, Any]:
        channel = self._channel(channel_id)
        body = body if isinstance(body, dict) else {}
        problems = check_message(body, creating=True)
        if problems:
            raise self._violation(request, problems, body)
        reference = body.get("message_reference")
        if reference and reference.get("fail_if_not_exists", True):
            self._message(channel_id, str(reference.get("message_id")))
        bot_member = self.state.members[self.state.bot.id]
        message = StoredMessage(self.state.message_payload(channel, self.state.bot, body, member=bot_member))
        message.payload.pop("member", None)  # REST answers carry no member; the gateway event does
        self.state.messages[message.id] = message
        await self.dispatch("MESSAGE_CREATE", self._message_event(message, bot_member))
        return message.payload

    async def _history(self, request: web.Request, body: Any, channel_id: str) -> list[dict[str, Any]]:
        self._channel(channel_id)
        limit = int(request.query.get("limit", "50"))
        found = [m.payload for m in self.state.messages.values()
                 if m.channel_id == channel_id and not m.deleted and not m.ephemeral]  # fmt: skip
        return list(reversed(found))[:limit]

    async def _get_message(self, request: web.Request, body: Any, channel_id: str, message_id: str) -> Any:
        self._channel(channel_id)
        return self._message(channel_id, message_id).payload

    async def _edit_message(self, request: web.Request, body: Any, channel_id: str, message_id: str) -> Any:
        self._channel(channel_id)
        message = self._message(channel_id, message_id)
        if message.author_id != self.state.bot.id:
            raise self._refuse(request, 403, 50005, "Cannot edit a message authored by another user")
        return await self._apply_edit(request, message, body if isinstance(body, dict) else {})

    async def _apply_edit(self, request: web.Request, message: StoredMessage, body: dict[str, Any]) -> Any:
        problems = check_message(body, creating=False)
        after = {**message.payload, **{k: body[k] for k in ("content", "embeds", "components") if k in body}}
        if not (after.get("content") or after.get("embeds") or after.get("components")):
            problems.append(("content", "Cannot send an empty message"))
        if problems:
            raise self._violation(request, problems, body)
        message.payload = {**after, "edited_timestamp": now_iso()}
        if "flags" in body:
            message.payload["flags"] = (int(body["flags"] or 0) & ~LOADING) | (message.payload["flags"] & EPHEMERAL)
        else:
            message.payload["flags"] = message.payload["flags"] & ~LOADING
        message.edits += 1
        if not message.ephemeral:
            await self.dispatch("MESSAGE_UPDATE", dict(message.payload))
        return message.payload

    async def _delete_message(self, request: web.Request, body: Any, channel_id: str, message_id: str) -> None:
        self._channel(channel_id)
        message = self._message(channel_id, message_id)
        message.deleted = True
        event = {"id": message.id, "channel_id": channel_id, "guild_id": self.state.guild_id}
        await self.dispatch("MESSAGE_DELETE", event)

    async def _react(self, request: web.Request, body: Any, channel_id: str, message_id: str, emoji: str) -> None:
        self._channel(channel_id)
        message = self._message(channel_id, message_id)
        if emoji not in message.reactions:
            message.reactions.append(emoji)
            event = {
                "user_id": self.state.bot.id, "channel_id": channel_id, "message_id": message_id,
                "guild_id": self.state.guild_id, "emoji": {"id": None, "name": emoji}, "burst": False, "type": 0,
                "member": self.state.members[self.state.bot.id].payload(), "message_author_id": message.author_id,
            }  # fmt: skip
            await self.dispatch("MESSAGE_REACTION_ADD", event)

    async def _unreact(self, request: web.Request, body: Any, channel_id: str, message_id: str, emoji: str) -> None:
        message = self._message(channel_id, message_id)
        if emoji in message.reactions:
            message.reactions.remove(emoji)

    async def _create_thread(
        self, request: web.Request, body: Any, channel_id: str, message_id: str | None = None
    ) -> dict[str, Any]:
        parent = self._channel(channel_id)
        body = body if isinstance(body, dict) else {}
        name = body.get("name")
        problems: list[Problem] = []
        if not isinstance(name, str) or not name:
            problems.append(("name", "This field is required"))
        elif len(name) > THREAD_NAME_MAX:
            problems.append(("name", f"Must be {THREAD_NAME_MAX} or fewer in length."))
        if parent.is_thread:
            problems.append(("", "Cannot create a thread inside a thread"))
        if problems:
            raise self._violation(request, problems, body)
        if message_id is not None:
            self._message(channel_id, message_id)
        thread_type = 11 if message_id is not None else int(body.get("type") or 12)
        thread = Channel(message_id or self.state.ids.next(), str(name), self.state.guild_id, type=thread_type,
                         parent_id=parent.id, owner_id=self.state.bot.id)  # fmt: skip
        self.state.channels[thread.id] = thread
        await self.dispatch("THREAD_CREATE", {**thread.payload(), "newly_created": True})
        return thread.payload()

    # --- interactions ------------------------------------------------------------------------

    def _option_value(self, spec: dict[str, Any], value: Any, resolved: dict[str, dict[str, Any]]) -> Any:
        kind = spec["type"]
        if kind in OPTION_TYPES:
            choices = [c["value"] for c in spec.get("choices") or []]
            if choices and value not in choices:
                raise ValueError(f"option {spec['name']!r}: {value!r} is not one of the choices {choices}")
            return OPTION_TYPES[kind](value)
        if kind == 7:
            channel = self.state.channel(str(value))
            perms = str(self.state.permissions(self.state.members[self.state.bot.id]))
            resolved.setdefault("channels", {})[channel.id] = {**channel.payload(), "permissions": perms}
            return channel.id
        if kind == 8:
            role_id = self.state.role_id(str(value))
            resolved.setdefault("roles", {})[role_id] = self.state.roles[role_id].payload()
            return role_id
        if kind == 6:
            user = value if isinstance(value, User) else self.person(str(value))
            resolved.setdefault("users", {})[user.id] = user.payload()
            member = self.state.members.get(user.id) or Member(user)
            resolved.setdefault("members", {})[user.id] = {
                **member.payload(with_user=False),
                "permissions": str(self.state.permissions(member)),
            }
            return user.id
        raise ValueError(f"option type {kind} is not supported by the loopback server")

    async def submit_modal(
        self,
        opened: Interaction,
        values: dict[str, str],
        *,
        user: User | None = None,
        roles: list[str] = (),  # type: ignore[assignment]
        timeout: float = 15.0,
    ) -> Interaction:
        """Submit the modal `opened` answered with (callback 9), its text inputs filled by label (a modal submit,
        type 5, with the message of the component that opened it); returns once answered."""
        callback = opened.callback
        if callback is None or callback.modal is None:
            raise KeyError(f"interaction {opened.id} opened no modal")
        modal = callback.modal
        inputs = {row["components"][0]["label"]: row["components"][0] for row in modal["components"]}
        unknown = set(values) - set(inputs)
        if unknown:
            raise KeyError(f"the modal {modal['title']!r} has no text input labelled {sorted(unknown)}")
        missing = [label for label, field in inputs.items() if field.get("required", True) and not values.get(label)]
        if missing:
            raise ValueError(f"Discord does not submit {modal['title']!r} without {missing}")
        rows = [
            {"type": 1, "components": [{"type": 4, "custom_id": field["custom_id"], "value": values.get(label, "")}]}
            for label, field in inputs.items()
        ]
        data = {"custom_id": modal["custom_id"], "components": rows}
        channel = self.state.channels[str(opened.payload["channel_id"])].name
        message_id = (opened.payload.get("message") or {}).get("id")
        message = self.state.messages.get(str(message_id)) if message_id else None
        return await self._interact(
            5, data, user=user, roles=list(roles), channel=channel, timeout=timeout, message=message
        )

    async def _interact(
        self,
        kind: int,
        data: dict[str, Any],
        *,
        user: User | None,
        roles: list[str],
        channel: str,
        timeout: float,
        message: StoredMessage | None = None,
        wait: bool = True,
    ) -> Interaction:
        user = user or self.person("antoine", "100000000000000401")
        member = self.state.member(user, roles)
        target = self.state.channel(channel)
        permissions = self.state.permissions(member)
        bot_permissions = self.state.permissions(self.state.members[self.state.bot.id])
        interaction_id = self.state.ids.next()
        payload: dict[str, Any] = {
            "id": interaction_id, "application_id": self.state.application_id, "type": kind, "data": data,
            "guild_id": self.state.guild_id, "guild": {"id": self.state.guild_id, "locale": "en-US", "features": []},
            "channel_id": target.id, "channel": {**target.payload(), "permissions": str(permissions)},
            "member": {**member.payload(), "permissions": str(permissions)},
            "token": self.state.new_token(), "version": 1, "app_permissions": str(bot_permissions),
            "locale": "en-GB", "guild_locale": "en-US", "entitlements": [], "entitlement_sku_ids": [],
            "authorizing_integration_owners": {"0": self.state.guild_id}, "context": 0,
            "attachment_size_limit": 10 * 1024 * 1024,
        }  # fmt: skip
        if message is not None:
            payload["message"] = message.payload
        interaction = Interaction(interaction_id, payload["token"], kind, payload, time.monotonic())
        self.state.interactions[interaction_id] = interaction
        await self.dispatch("INTERACTION_CREATE", payload)
        if wait:
            await self.wait_for(lambda: interaction.settled, timeout, what=f"an answer to interaction {data}")
        return interaction

    def _interaction_by_token(self, request: web.Request, token: str) -> Interaction:
        for interaction in self.state.interactions.values():
            if interaction.token == token:
                if time.monotonic() - interaction.created > INTERACTION_TOKEN_TTL_S:
                    raise self._refuse(request, 401, 50027, "Invalid Webhook Token")
                return interaction
        raise self._refuse(request, 404, 10015, "Unknown Webhook")

    async def _callback(self, request: web.Request, body: Any, interaction_id: str, token: str) -> Any:
        interaction = self.state.interactions.get(interaction_id)
        if interaction is None or interaction.token != token:
            raise self._refuse(request, 404, 10062, "Unknown interaction")
        age = time.monotonic() - interaction.created
        if interaction.acknowledged:
            raise self._refuse(request, 400, 40060, "Interaction has already been acknowledged.")
        if age > INTERACTION_WINDOW_S:
            raise self._refuse(request, 404, 10062, f"Unknown interaction (first response after {age:.2f} s)")
        body = body if isinstance(body, dict) else {}
        kind, data = body.get("type"), body.get("data") or {}
        response = Response("callback", age, kind)
        if kind == 4:
            problems = check_message(data, creating=True)
            if problems:
                raise self._violation(request, problems, body)
            response.message = await self._interaction_message(interaction, data)
        elif kind == 5:
            flags = LOADING | (int(data.get("flags") or 0) & EPHEMERAL)
            response.message = await self._interaction_message(interaction, {"flags": flags})
        elif kind in (6, 7):
            if interaction.type != 3:
                raise self._refuse(request, 400, 40004, "Interaction callback type is only valid for components")
            response.message = interaction.original = self._component_message(interaction)
            if kind == 7:
                await self._apply_edit(request, response.message, data)
        elif kind == 9:
            if interaction.type not in (2, 3):
                raise self._refuse(request, 400, 50035, "A modal answers only a command or a component")
            problems = check_modal(data)
            if problems:
                raise self._violation(request, problems, body)
            response.modal = data
        elif (kind == 8 and interaction.type != 4) or kind not in (4, 5, 6, 7, 8, 9):
            raise self._refuse(request, 400, 50035, f"Invalid interaction callback type {kind}")
        interaction.responses.append(response)
        await self._notify()
        if request.query.get("with_response") not in ("1", "true", "True"):
            return None
        message = response.message
        result: dict[str, Any] = {
            "interaction": {
                "id": interaction.id, "type": interaction.type,
                "response_message_id": message.id if message else None,
                "response_message_loading": kind == 5,
                "response_message_ephemeral": bool(message and message.ephemeral),
            }
        }  # fmt: skip
        if message is not None and kind in (4, 5, 7):
            result["resource"] = {"type": kind, "message": message.payload}
        return result

    def _component_message(self, interaction: Interaction) -> StoredMessage:
        message_id = str(interaction.payload["message"]["id"])
        return self.state.messages[message_id]

    async def _interaction_message(self, interaction: Interaction, body: dict[str, Any]) -> StoredMessage:
        channel = self.state.channels[str(interaction.payload["channel_id"])]
        payload = self.state.message_payload(channel, self.state.bot, body)
        payload.update(
            webhook_id=self.state.application_id, application_id=self.state.application_id, type=20,
            interaction_metadata={
                "id": interaction.id, "type": interaction.type,
                "user": interaction.payload["member"]["user"], "authorizing_integration_owners": {},
            },
        )  # fmt: skip
        message = StoredMessage(payload)
        self.state.messages[message.id] = message
        if interaction.original is None:
            interaction.original = message
        if not message.ephemeral and not int(payload["flags"]) & LOADING:
            await self.dispatch("MESSAGE_CREATE", dict(payload))
        return message

    async def _followup(self, request: web.Request, body: Any, application_id: str, token: str) -> Any:
        interaction = self._interaction_by_token(request, token)
        if not interaction.acknowledged:
            raise self._refuse(request, 404, 10015, "Unknown Webhook (a follow-up before the interaction was answered)")
        body = body if isinstance(body, dict) else {}
        problems = check_message(body, creating=True)
        if problems:
            raise self._violation(request, problems, body)
        original = interaction.original
        callback = interaction.callback
        if original is not None and callback is not None and callback.type == 5 and original.payload["flags"] & LOADING:
            # Discord: the first follow-up after a deferral replaces the "thinking…" message.
            edit = {k: body[k] for k in ("content", "embeds", "components") if k in body}
            message = original
            await self._apply_edit(request, message, {**edit, "allowed_mentions": body.get("allowed_mentions")})
        else:
            message = await self._interaction_message(interaction, body)
        interaction.responses.append(Response("followup", time.monotonic() - interaction.created, message=message))
        await self._notify()
        return message.payload if request.query.get("wait") in ("true", "1", "True") else None

    def _webhook_message(self, request: web.Request, interaction: Interaction, message_id: str) -> StoredMessage:
        if message_id == "@original":
            if interaction.original is None:
                raise self._refuse(request, 404, 10008, "Unknown Message (no original response yet)")
            return interaction.original
        message = self.state.messages.get(message_id)
        if message is None or message.deleted:
            raise self._refuse(request, 404, 10008, "Unknown Message")
        return message

    async def _webhook_get(
        self, request: web.Request, body: Any, application_id: str, token: str, message_id: str
    ) -> Any:
        interaction = self._interaction_by_token(request, token)
        return self._webhook_message(request, interaction, message_id).payload

    async def _webhook_edit(
        self, request: web.Request, body: Any, application_id: str, token: str, message_id: str
    ) -> Any:
        interaction = self._interaction_by_token(request, token)
        message = self._webhook_message(request, interaction, message_id)
        result = await self._apply_edit(request, message, body if isinstance(body, dict) else {})
        interaction.responses.append(Response("edit", time.monotonic() - interaction.created, message=message))
        await self._notify()
        return result

    async def _webhook_delete(
        self, request: web.Request, body: Any, application_id: str, token: str, message_id: str
    ) -> None:
        interaction = self._interaction_by_token(request, token)
        message = self._webhook_message(request, interaction, message_id)
        message.deleted = True
        interaction.responses.append(Response("delete", time.monotonic() - interaction.created, message=message))
        await self._notify()


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """JSON as Discord labels it: discord.py parses a body only when the content type is exactly this."""
    response = web.Response(text=json.dumps(data), status=status, headers=headers)
    response.headers["Content-Type"] = "application/json"
    return response


def _path(request: web.Request) -> str:
    return request.path[len(API_PREFIX) :] if request.path.startswith(API_PREFIX) else request.path


async def _read_body(request: web.Request) -> Any:
    """JSON, or multipart with a `payload_json` part (how discord.py sends messages with files)."""
    if not request.can_read_body:
        return None
    if request.content_type.startswith("multipart/"):
        form = await request.post()
        payload = form.get("payload_json")
        body = json.loads(payload) if isinstance(payload, str) else {}
        files = [name for name, value in form.items() if name != "payload_json" and hasattr(value, "filename")]
        if files:
            body.setdefault("attachments", [{"id": str(i)} for i, _ in enumerate(files)])
        return body
    raw = await request.read()
    return json.loads(raw) if raw else None


def _rate_limited(retry_after: float) -> web.Response:
    body = {"message": "You are being rate limited.", "retry_after": retry_after, "global": False}
    headers = {
        "Retry-After": f"{retry_after:g}", "X-RateLimit-Limit": "5", "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset": f"{time.time() + retry_after:.3f}", "X-RateLimit-Reset-After": f"{retry_after:.3f}",
        "X-RateLimit-Scope": "user", "Via": "1.1 google",
    }  # fmt: skip
    return _json(body, status=429, headers=headers)
