"""A simulated fleet of OpenClaw gateways: real aiohttp servers on loopback, one per agent.

Each gateway answers the hooks and health routes response for response as measured on the real
gateway (docs: openclaw-hooks.md), with one profile per release, so the client, the CLI demo and the
tests exercise the same wire behaviour they will meet in production. Where the real gateways turned out
to differ from openclaw-hooks.md (make test-openclaw; docs/openclaw-conformance.md), the simulator
follows the real gateways. Faults (down, hung, slow, failing, expired model credentials, a long
start-up, no Discord channel plugin) can be set per agent and changed while running.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import hmac
import json
import logging
import math
import random
import re
import socket
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from aiohttp import web

log = logging.getLogger(__name__)
# How a simulated agent posts in Discord as its own bot account: (agent, channel id, text).
Poster = Callable[[str, str, str], Awaitable[Any]]

RELEASE_CURRENT = "2026.9.6"
RELEASE_LEGACY = "2026.2.12"
RELEASES = (RELEASE_CURRENT, RELEASE_LEGACY)
BODY_LIMIT = 262_144  # bytes; the gateway's own cap on a hook body

BAD_TOKEN_LIMIT = 20  # bad tokens per client within BAD_TOKEN_WINDOW before answering 429
BAD_TOKEN_WINDOW = 60.0  # seconds, on the injected clock
# 2026.9.6 drains the main session's pending system events this long after a `mode: "now"` wake (its
# heartbeat-wake coalescing delay, 250 ms); a wake whose text repeats the last pending event is "coalesced".
WAKE_DRAIN_DELAY = 0.25  # seconds, on the injected clock
SETTLED_REPLAY_S = 300.0  # 2026.9.6 forgets a settled run's key this long after it settled (on the injected clock)
PENDING_EVENTS_MAX = 20  # the gateway keeps at most this many pending system events per session
IDEMPOTENCY_KEY_MAX = 256  # longer keys are ignored by 2026.9.6
DISCORD_CHANNEL = "discord"
_SHUTDOWN_TIMEOUT = 0.1  # seconds aiohttp waits for handlers at shutdown; we cut them ourselves first

QUERY_TOKEN_MESSAGE = (
    "Hook token must be provided via Authorization: Bearer <token> or X-OpenClaw-Token header "
    "(query parameters are not allowed)."
)
CONTROL_UI_HTML = (
    '<!doctype html><html><head><meta charset="utf-8"><title>OpenClaw Control</title></head>'
    '<body><div id="app"></div><script type="module" src="/assets/index.js"></script></body></html>'
)
# `completion` of 2026.9.6 (2026.2.12 ignores waitForCompletion). Measured on a failed run (no model
# credentials): {"status":"error","replyDisposition":"empty"}, with no error text, delivery or not.
# A successful run was never observed (no credentials in the conformance runs): "visible" is what the
# 2026.9.6 source reports for a run that ended with a visible reply ("silent" for NO_REPLY).
COMPLETION_OK: dict[str, str] = {"status": "ok", "replyDisposition": "visible"}
COMPLETION_MODEL_ERROR: dict[str, str] = {"status": "error", "replyDisposition": "empty"}
_SESSION_KEY_SWITCH = "set hooks.allowRequestSessionKey=true to enable"
SESSION_KEY_REFUSED = {  # measured texts; openclaw-hooks.md only says "refused (400)"
    RELEASE_CURRENT: f"sessionKey is disabled for externally supplied hook payload values; {_SESSION_KEY_SWITCH}",
    RELEASE_LEGACY: f"sessionKey is disabled for external /hooks/agent payloads; {_SESSION_KEY_SWITCH}",
}
_HEALTH_PATHS = frozenset({"/healthz", "/health", "/readyz", "/startupz"})
_IDEMPOTENCY_HEADERS = ("Idempotency-Key", "X-OpenClaw-Idempotency-Key")
_DUMPS = functools.partial(json.dumps, separators=(",", ":"))  # compact, as Node's JSON.stringify


@dataclass
class SimAgentSpec:
    """How one simulated gateway is set up and which faults it shows."""

    name: str
    port: int
    release: str = RELEASE_CURRENT
    host: str = "127.0.0.1"
    down: bool = False  # port closed (nothing listening)
    hang: bool = False  # accepts connections and reads requests but never answers (any path)
    latency_ms: float = 0.0  # delay before answering a hook (admission time); health answers at once
    fail_rate: float = 0.0  # fraction of hook requests answered 500 (deterministic per seed)
    busy: bool = False  # every hook waits out its admission and is answered 503 (the 15 s limit; routing's cap)
    model_ok: bool = True  # False: hooks accepted, but runs complete with an error
    hooks_enabled: bool = True  # False: hooks routes answer 404 "Not Found"
    startup: float | None = 0.0  # seconds of start-up window; None = until finish_startup(name)
    # Delay between starting a run and answering: a gateway that took the work but whose answer is
    # slow or lost (the client times out after sending; the run happened all the same).
    reply_delay_ms: float = 0.0
    hooks_path: str = "/hooks"  # the gateway's `hooks.path`
    # The Discord channel plugin is loaded (2026.2.12: plugins.entries.discord.enabled; 2026.9.6: installed
    # with `openclaw plugins install npm:@openclaw/discord@<version>`). Without it every hook naming
    # `"channel":"discord"` is refused: 400 "channel must be last" (measured on both releases).
    discord_plugin: bool = True
    # 2026.9.6 while starting: "503" answers every hooks request 503 "Plugin runtime is starting", as
    # openclaw-hooks.md documents; "open" is what the conformance runs measured instead: hooks already
    # answered normally (400 "message required" to `{}`) while /readyz still said 503 starting.
    starting_hooks: Literal["503", "open"] = "503"
    # 2026.9.6 runs settle at once (a `waitForCompletion` answer comes straight away) unless held: then they
    # settle when `SimulatedFleet.settle` says so, and a waiting request stays open until then (or a restart).
    hold_runs: bool = False
    # Answers in Discord (only when the fleet has a poster and a hook asks for Discord delivery to `channel:<id>`):
    # the agent posts its answer as its own bot account after `answer_delay_ms`, in `answer_parts` messages,
    # then its run completes (2026.9.6). `answer_fails`: no answer, and the run completes with status error.
    answer: str | None = None  # the answer's text; default: "<agent>: done: <the instruction's first line>"
    answer_delay_ms: float = 0.0
    answer_parts: int = 1
    answer_fails: bool = False


@dataclass
class ReceivedHook:
    """One accepted hook request: what the agent "received"."""

    agent: str
    path: str  # e.g. "/hooks/agent" or "/hooks/wake"
    run_id: str | None  # None for wake
    body: dict[str, Any]
    idempotency_key: str | None
    at: float  # time.time()


@dataclass
class _Run:
    """A started run, kept so a repeated idempotency key replays it instead of starting another."""

    run_id: str
    completion: dict[str, str]
    settled: asyncio.Event = field(default_factory=asyncio.Event)
    settled_at: float | None = None  # on the gateway's clock: its replay entry expires SETTLED_REPLAY_S later

    def settle(self, at: float) -> None:
        self.settled_at = at
        self.settled.set()


@dataclass
class _ProcessState:
    """What a gateway keeps in memory: lost when it crashes or restarts, like the real process."""

    started_at: float
    # By key *and* what the request asked for, as 2026.9.6 keys its replay cache (its source): the same key
    # with another message, target… starts a new run.
    runs_by_key: dict[tuple[str, tuple[Any, ...]], _Run] = field(default_factory=dict)
    bad_tokens: dict[str, deque[float]] = field(default_factory=dict)
    pending_events: list[str] = field(default_factory=list)  # wake texts not yet drained (2026.9.6)
    drain_at: float | None = None  # when a "now" wake drains pending_events
    runs: list[_Run] = field(default_factory=list)  # every run started, settled or not


def _text(status: int, text: str, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(status=status, text=text, content_type="text/plain", headers=headers)


def _json(status: int, payload: Mapping[str, Any]) -> web.Response:
    return web.json_response(payload, status=status, dumps=_DUMPS)


def _error(status: int, message: str) -> web.Response:
    return _json(status, {"ok": False, "error": message})


# What JavaScript's String.prototype.trim removes (the gateway trims bodies and fields with it).
_JS_SPACE = (
    "\t\n\v\f\r \u00a0\u1680" + "".join(map(chr, range(0x2000, 0x200B))) + "\u2028\u2029\u202f\u205f\u3000\ufeff"
)
_AGENT_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}", re.IGNORECASE)


def _string(value: Any) -> str | None:
    """The gateway's normalizeOptionalString: a string trimmed, None when blank or not a string."""
    if not isinstance(value, str):
        return None
    return value.strip(_JS_SPACE) or None


def _agent_id(raw: str) -> str | None:
    """The gateway's normalizeAgentIdStrict: the canonical agent id, None when nothing is left of it."""
    trimmed = raw.strip(_JS_SPACE)
    if _AGENT_ID.fullmatch(trimmed):
        return trimmed.lower()
    return re.sub(r"[^a-z0-9_-]+", "-", trimmed.lower()).strip("-")[:64] or None


def _timeout_seconds(value: Any) -> int | None:
    """timeoutSeconds as the gateway reads it: a finite positive number, floored (JSON numbers are doubles)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:  # an integer beyond a double is Infinity in JavaScript
        return None
    return math.floor(number) if math.isfinite(number) and number > 0 else None


def parse_body(raw: bytes) -> tuple[Any, str | None]:
    """A hook body as the gateway reads it: (value, None), or (None, JSON.parse's message as Node words it).

    Decoded as UTF-8 with replacement characters and trimmed like JavaScript; an empty body is `{}`.
    2026.2.12 answers the message prefixed with "SyntaxError: " (measured).
    """
    text = raw.decode("utf-8", errors="replace").strip(_JS_SPACE)
    if not text:
        return {}, None
    try:
        return json.loads(text, parse_constant=_reject_constant), None
    except (ValueError, RecursionError):  # JSONDecodeError is a ValueError
        pass
    message = _NodeJsonCheck(text).error()
    # None: valid JSON that Python cannot build (nested deeper than its recursion limit). The gateway would
    # take it; here it counts as a body that is not an object.
    return ({}, None) if message is None else (None, message)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # Python accepts NaN and Infinity; JSON.parse does not


class _JsonSyntaxError(Exception):
    pass


class _NodeJsonCheck:
    """Finds the first syntax error of a JSON text and words it as V8's JSON.parse does (Node 24).

    Positions count UTF-16 code units, as JavaScript's do. Only run on text Python already refused.
    """

    _SPECIAL = frozenset({"NaN", "Infinity", "undefined", "[object Object]"})
    _LITERALS: ClassVar[dict[str, str]] = {"t": "true", "f": "false", "n": "null"}
    _ESCAPES = frozenset('"\\/bfnrt')
    _HEX = frozenset("0123456789abcdefABCDEF")
    _DIGITS = frozenset("0123456789")

    def __init__(self, text: str) -> None:
        self.s = text
        self.n = len(text)
        self.i = 0

    def error(self) -> str | None:
        try:
            self._document()
        except _JsonSyntaxError as exc:
            return str(exc)
        return None

    # --- grammar ------------------------------------------------------------------------------

    def _document(self) -> None:
        open_containers: list[str] = []
        want_value = True
        while True:
            if want_value:
                self._skip()
                char = self._peek()
                if char in ("{", "["):
                    self.i += 1
                    self._skip()
                    if self._peek() != ("}" if char == "{" else "]"):
                        open_containers.append(char)
                        if char == "{":
                            self._member_name(first=True)
                        continue
                    self.i += 1
                else:
                    self._scalar()
            self._skip()
            if not open_containers:
                break
            char, in_object = self._peek(), open_containers[-1] == "{"
            if char == ",":
                self.i += 1
                if in_object:
                    self._skip()
                    self._member_name(first=False)
                want_value = True
            elif char == ("}" if in_object else "]"):
                self.i += 1
                open_containers.pop()
                want_value = False
            elif in_object:
                self._fail("Expected ',' or '}' after property value", self.i)
            else:
                self._fail("Expected ',' or ']' after array element", self.i)
        if self.i < self.n:
            self._fail("Unexpected non-whitespace character after JSON", self.i, in_json=False)

    def _member_name(self, *, first: bool) -> None:
        if self._peek() != '"':
            self._fail("Expected property name or '}'" if first else "Expected double-quoted property name", self.i)
        self._string()
        self._skip()
        if self._peek() != ":":
            self._fail("Expected ':' after property name", self.i)
        self.i += 1

    def _scalar(self) -> None:
        char = self._peek()
        if char == '"':
            self._string()
        elif char == "-" or char in self._DIGITS:
            self._number()
        elif char in self._LITERALS:
            for offset, expected in enumerate(self._LITERALS[char]):
                if self.i + offset >= self.n or self.s[self.i + offset] != expected:
                    self._unexpected(self.i + offset)
            self.i += len(self._LITERALS[char])
        else:
            self._unexpected(self.i)

    def _string(self) -> None:
        self.i += 1  # the opening quote
        while True:
            if self.i >= self.n:
                self._fail("Unterminated string", self.n)
            char = self.s[self.i]
            if char == '"':
                self.i += 1
                return
            if char == "\\":
                self.i += 1
                escape = self._peek()
                if escape == "":
                    self._unexpected(self.i)
                if escape == "u":
                    for offset in range(1, 5):
                        if self.i + offset >= self.n or self.s[self.i + offset] not in self._HEX:
                            self._fail("Bad Unicode escape", self.i + offset)
                    self.i += 5
                    continue
                if escape not in self._ESCAPES:
                    if ord(escape) > 0xFF:  # V8 words an escape beyond Latin-1 as an unexpected token
                        self._unexpected(self.i)
                    self._fail("Bad escaped character", self.i)
            elif ord(char) < 0x20:
                self._fail("Bad control character in string literal", self.i)
            self.i += 1

    def _number(self) -> None:
        if self._peek() == "-":
            self.i += 1
            if self._peek() not in self._DIGITS:  # "" (the end) is not in it either
                self._fail("No number after minus sign", self.i)
        if self._peek() == "0":
            self.i += 1
            if self._peek() in self._DIGITS:
                self._fail("Unexpected number", self.i)
        self._digits()
        if self._peek() == ".":
            self.i += 1
            if not self._digits():
                self._fail("Unterminated fractional number", self.i)
        if self._peek() in ("e", "E"):
            self.i += 1
            if self._peek() in ("+", "-"):
                self.i += 1
            if not self._digits():
                self._fail("Exponent part is missing a number", self.i)

    # --- helpers ------------------------------------------------------------------------------

    def _peek(self) -> str:
        return self.s[self.i] if self.i < self.n else ""

    def _skip(self) -> None:
        while self.i < self.n and self.s[self.i] in " \t\n\r":
            self.i += 1

    def _digits(self) -> bool:
        start = self.i
        while self.i < self.n and self.s[self.i] in self._DIGITS:
            self.i += 1
        return self.i > start

    def _units(self, end: int) -> int:
        """Index `end` of the text in UTF-16 code units."""
        return end + sum(1 for char in self.s[:end] if ord(char) > 0xFFFF)

    def _fail(self, message: str, at: int, *, in_json: bool = True) -> None:
        before = self.s[:at]
        line = 1 + before.count("\n") + before.count("\r") - before.count("\r\n")
        line_start = max(before.rfind("\n"), before.rfind("\r")) + 1
        column = self._units(at) - self._units(line_start) + 1
        where = " in JSON" if in_json else ""
        raise _JsonSyntaxError(f"{message}{where} at position {self._units(at)} (line {line} column {column})")

    def _unexpected(self, at: int) -> None:
        if at >= self.n:
            raise _JsonSyntaxError("Unexpected end of JSON input")
        char = self.s[at]
        if char == '"':
            self._fail("Unexpected string", at)
        if char == "-" or char in self._DIGITS:
            self._fail("Unexpected number", at)
        if self.s in self._SPECIAL:
            raise _JsonSyntaxError(f'"{self.s}" is not valid JSON')
        units = self.s.encode("utf-16-le", "surrogatepass")
        length, position = len(units) // 2, self._units(at)

        def part(start: int, end: int) -> str:
            return units[2 * start : 2 * end].decode("utf-16-le", "surrogatepass")

        if length <= 20:
            context = f'"{self.s}"'
        elif position < 10:
            context = f'"{part(0, position + 10)}"...'
        elif position < length - 10:
            context = f'..."{part(position - 10, position + 10)}"...'
        else:
            context = f'..."{part(position - 10, length)}"'
        token = part(position, position + 1)  # one UTF-16 unit, half of a character beyond the BMP
        raise _JsonSyntaxError(f"Unexpected token '{token}', {context} is not valid JSON")


def _bearer(header: str) -> str | None:
    scheme, _, credentials = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        return None
    return credentials.strip()


class _Gateway:
    """One simulated gateway process: its port, its in-memory state and its HTTP answers."""

    def __init__(
        self,
        spec: SimAgentSpec,
        token: str,
        *,
        seed: int,
        clock: Callable[[], float],
        record: Callable[[ReceivedHook], None],
        poster: Poster | None = None,
    ) -> None:
        self.spec = spec
        self._poster = poster
        self._answers: set[asyncio.Task[None]] = set()
        self._token = token
        self._clock = clock
        self._record = record
        # Seeded per agent, so which requests fail does not depend on traffic to the other agents.
        # runIds stay truly random, as the gateway's: a store kept across demo runs must not see repeats.
        self._fail_rng = random.Random(f"{seed}:{spec.name}")
        self._state = _ProcessState(started_at=clock())
        self._runner: web.AppRunner | None = None
        self._sock: socket.socket | None = None
        self._site: web.SockSite | None = None
        self._ready = False
        self._startup_timer: asyncio.TimerHandle | None = None
        self._serve_task: asyncio.Task[None] | None = None
        self._open_requests: set[asyncio.Transport] = set()
        self._arrivals = asyncio.Condition()  # notified when a request arrives, for wait_in_flight

    @property
    def legacy(self) -> bool:
        return self.spec.release == RELEASE_LEGACY

    # --- lifecycle ----------------------------------------------------------------------------

    async def open(self) -> None:
        """Start the process: bind the port and begin the start-up window (no-op when already up)."""
        if self._runner is not None:
            return
        # Bound but not listening: connections are refused (as for a legacy gateway still starting),
        # yet the port is ours and a clash shows up here rather than in a timer callback.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.spec.host, self.spec.port))
            sock.setblocking(False)
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", self._handle)
            runner = web.AppRunner(
                app,
                handle_signals=False,
                access_log=None,
                handler_cancellation=True,
                shutdown_timeout=_SHUTDOWN_TIMEOUT,
            )
            await runner.setup()
        except BaseException:
            sock.close()
            raise
        self._state = _ProcessState(started_at=self._clock())
        self._runner, self._sock, self._site = runner, sock, web.SockSite(runner, sock)
        self._ready = False
        try:
            if not self.legacy:
                await self._site.start()  # 2026.9.6 listens at once and answers 503 while starting
            if self.spec.startup is not None and self.spec.startup <= 0:
                self.finish_startup()
                if self._serve_task is not None:
                    await self._serve_task
            elif self.spec.startup is not None:
                loop = asyncio.get_running_loop()
                self._startup_timer = loop.call_later(self.spec.startup, self.finish_startup)
        except BaseException:
            await self.close()
            raise

    def finish_startup(self) -> None:
        """End the start-up window now; no-op when the gateway is down or already started."""
        if self._runner is None or self._ready:
            return
        self._ready = True
        if self._startup_timer is not None:
            self._startup_timer.cancel()
            self._startup_timer = None
        if self.legacy:
            assert self._sock is not None and self._site is not None
            # Listening now lets the kernel queue connections at once, so a client that connects right
            # after this call is answered as soon as the task below starts serving.
            self._sock.listen(128)
            self._serve_task = asyncio.get_running_loop().create_task(self._site.start())

    async def close(self) -> None:
        """Stop the process like a crash: open requests are cut, the port is released."""
        for task in list(self._answers):  # a crashed agent posts nothing more
            task.cancel()
        if self._startup_timer is not None:
            self._startup_timer.cancel()
            self._startup_timer = None
        if self._serve_task is not None:
            self._serve_task.cancel()
            # Whatever became of the late start, the port is being released anyway.
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._serve_task
            self._serve_task = None
        # Aborting a connection cancels its handler (handler_cancellation), hung ones included.
        for transport in list(self._open_requests):
            transport.abort()
        self._open_requests.clear()
        runner, sock = self._runner, self._sock
        self._runner = self._sock = self._site = None
        self._ready = False
        try:
            if runner is not None:
                await runner.cleanup()
        finally:
            if sock is not None:
                sock.close()  # a site never started (legacy, still starting) leaves it to us

    @property
    def in_flight(self) -> int:
        return len(self._open_requests)

    def clock(self) -> float:
        return self._clock()

    @property
    def runs(self) -> list[_Run]:
        return self._state.runs

    async def wait_in_flight(self, count: int) -> None:
        async with self._arrivals:
            await self._arrivals.wait_for(lambda: len(self._open_requests) >= count)

    # --- HTTP ---------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        transport = request.transport
        if transport is not None:
            self._open_requests.add(transport)
            async with self._arrivals:
                self._arrivals.notify_all()
        try:
            if self.spec.hang:
                await self._read_body(request)
                await asyncio.Event().wait()  # never set: only closing the port ends this
            return await self._route(request)
        finally:
            if transport is not None:
                self._open_requests.discard(transport)

    async def _route(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        hooks = self.spec.hooks_path.rstrip("/")
        if path == hooks or path.startswith(hooks + "/"):
            return await self._hooks(request, path[len(hooks) :].lstrip("/"))
        if request.method not in ("GET", "HEAD"):
            return _text(404, "Not Found")
        if not self.legacy and path in _HEALTH_PATHS:
            return self._health(path)
        # The gateway serves its Control UI on every other path, so a probe must read the body.
        return web.Response(status=200, text=CONTROL_UI_HTML, content_type="text/html")

    def _health(self, path: str) -> web.Response:
        uptime_ms = int((self._clock() - self._state.started_at) * 1000)
        if path in ("/healthz", "/health"):
            return _json(200, {"ok": True, "status": "live"})
        if path == "/readyz":
            if not self._ready:
                return _json(503, {"ready": False, "failing": ["startup-sidecars"]})
            return _json(200, {"ready": True, "failing": [], "uptimeMs": uptime_ms})
        if not self._ready:
            return _json(503, {"ok": False, "status": "starting"})
        return _json(200, {"ok": True, "status": "started", "version": RELEASE_CURRENT, "uptimeMs": uptime_ms})

    async def _hooks(self, request: web.Request, route: str) -> web.StreamResponse:
        """The hooks handler, in the order the real one checks things (sources of both releases)."""
        if not self.spec.hooks_enabled:
            return _text(404, "Not Found")
        if not self.legacy and not self._ready and self.spec.starting_hooks == "503":
            # Assumption: while the plugin runtime starts nothing of the hooks handler runs, auth included.
            return _text(503, "Plugin runtime is starting")
        if "token" in request.query:  # exactly `token` (measured: `?hookToken=`, `?Token=` are ignored)
            return _text(400, QUERY_TOKEN_MESSAGE)
        if not self.legacy and request.method != "POST":  # every hooks path, before the token
            return _text(405, "Method Not Allowed", {"Allow": "POST"})
        denied = self._authenticate(request)
        if denied is not None:
            return denied
        if request.method != "POST":  # 2026.2.12 checks the token first
            return _text(405, "Method Not Allowed", {"Allow": "POST"})
        if not route:
            return _text(404, "Not Found")

        raw = await self._read_body(request)
        if raw is None:
            if self.legacy:
                return await self._drop_connection(request)
            return _error(413, "payload too large")
        payload, problem = parse_body(raw)
        if problem is not None:
            return _error(400, f"SyntaxError: {problem}" if self.legacy else problem)
        if not isinstance(payload, dict):
            payload = {}
        if route == "wake":
            return await self._wake(request, payload)
        if route == "agent":
            return await self._agent(request, payload)
        return _text(404, "Not Found")  # no hook mappings configured

    def _authenticate(self, request: web.Request) -> web.Response | None:
        """None when the token is good; else 401, or 429 once a client sent too many bad tokens."""
        token = _bearer(request.headers.get("Authorization", ""))
        if token is None:
            token = request.headers.get("X-OpenClaw-Token", "").strip() or None
        client = request.remote or "unknown"
        if token is not None and hmac.compare_digest(
            token.encode("utf-8", "surrogateescape"), self._token.encode("utf-8", "surrogateescape")
        ):
            self._state.bad_tokens.pop(client, None)
            return None
        now = self._clock()
        failures = self._state.bad_tokens.setdefault(client, deque())
        while failures and now - failures[0] >= BAD_TOKEN_WINDOW:
            failures.popleft()
        if len(failures) >= BAD_TOKEN_LIMIT:
            return _text(429, "Too Many Requests", {"Retry-After": str(int(BAD_TOKEN_WINDOW))})
        failures.append(now)
        return _text(401, "Unauthorized")

    async def _read_body(self, request: web.Request) -> bytes | None:
        """The body, or None once it exceeds BODY_LIMIT (reads at most BODY_LIMIT + 1 bytes)."""
        if not self.legacy and request.content_length is not None and request.content_length > BODY_LIMIT:
            return None
        data = bytearray()
        while len(data) <= BODY_LIMIT:
            chunk = await request.content.read(BODY_LIMIT + 1 - len(data))
            if not chunk:
                return bytes(data)
            data += chunk
        return None

    async def _drop_connection(self, request: web.Request) -> web.StreamResponse:
        # 2026.2.12 destroys the socket once the body passes the cap: the client gets no answer.
        if request.transport is not None:
            request.transport.abort()
        await asyncio.Event().wait()  # the abort cancels this handler (handler_cancellation)
        raise AssertionError("unreachable")

    def _channels(self) -> tuple[str, ...]:
        """What `channel` may name: "last" and the loaded channel plugins."""
        return ("last", DISCORD_CHANNEL) if self.spec.discord_plugin else ("last",)

    def _channel(self, payload: dict[str, Any]) -> str | None:
        """The gateway's resolveHookChannel: absent means "last"; None when it names no loaded channel."""
        if "channel" not in payload:
            return "last"
        name = _string(payload["channel"])
        name = name.lower() if name is not None else None
        return name if name in self._channels() else None

    def _channel_error(self) -> str:
        return f"channel must be {'|'.join(self._channels())}"

    def _unknown_agent(self, value: Any) -> str | None:
        """2026.9.6: the error for an agentId naming no agent of this gateway (its own name or "main")."""
        raw = _string(value)
        if raw is None:
            return None
        agent_id = _agent_id(raw)
        if agent_id is None:
            return f'unknown agentId "{raw}"'
        if agent_id in (_agent_id(self.spec.name), "main"):
            return None
        return f'unknown agentId "{agent_id}"'

    def _check_current(self, payload: dict[str, Any]) -> tuple[str | None, tuple[Any, ...]]:
        """2026.9.6: the first error of an agent hook, else the run it asks for (its replay scope)."""
        if "waitForCompletion" in payload and not isinstance(payload["waitForCompletion"], bool):
            return "waitForCompletion must be boolean", ()
        message = _string(payload.get("message"))
        if message is None:
            return "message required", ()
        if "agentId" in payload and _string(payload["agentId"]) is None:
            return "agentId must be a non-empty string", ()
        session_mode = payload.get("sessionMode", "isolated")
        if session_mode not in ("isolated", "persistent"):
            return "sessionMode must be isolated or persistent", ()
        channel, to, account = "last", None, None
        if payload.get("deliver") is not False:  # deliver:false skips every delivery check
            channel = self._channel(payload)
            if channel is None:
                return self._channel_error(), ()
            to, account = _string(payload.get("to")), _string(payload.get("accountId"))
            has_channel, has_to, has_account = ("channel" in payload, "to" in payload, "accountId" in payload)
            if has_to and to is None:
                return "to must be a non-empty string for hook delivery", ()
            if has_account and account is None:
                return "accountId must be a non-empty string for hook delivery", ()
            if has_account and (not has_channel or to is None):
                return "accountId requires channel and to for hook delivery", ()
            if (has_channel or has_to or has_account) and (not has_channel or to is None):
                return "channel and to must be set together for hook delivery", ()
            if (has_channel or has_to or has_account) and channel == "last":
                return "channel must name a concrete channel for hook delivery", ()
        model = _string(payload.get("model"))
        if "model" in payload and model is None:
            return "model required", ()  # measured: 2026.9.6 refuses it too (the doc said 2026.2.12 only)
        unknown = self._unknown_agent(payload.get("agentId"))
        if unknown is not None:
            return unknown, ()
        session_key = _string(payload.get("sessionKey"))
        if session_mode == "persistent" and session_key is None:
            return "sessionKey is required when sessionMode is persistent", ()
        if session_key is not None:
            return SESSION_KEY_REFUSED[RELEASE_CURRENT], ()
        agent_id = payload.get("agentId")
        scope = (
            _agent_id(agent_id) if isinstance(agent_id, str) else "main",
            message,
            _string(payload.get("name")) or "Hook",
            "next-heartbeat" if payload.get("wakeMode") == "next-heartbeat" else "now",
            session_mode,
            payload.get("deliver") is not False,
            channel,
            to,
            account,
            model,
            _string(payload.get("thinking")),
            _timeout_seconds(payload.get("timeoutSeconds")),
        )
        return None, scope

    def _check_legacy(self, payload: dict[str, Any]) -> str | None:
        """2026.2.12: the first error of an agent hook. It checks far less than 2026.9.6 (measured)."""
        if _string(payload.get("message")) is None:
            return "message required"
        if self._channel(payload) is None:  # even with deliver:false
            return self._channel_error()
        if "model" in payload and _string(payload["model"]) is None:
            return "model required"
        # An unknown agentId runs on the default agent; channel "last" with a `to` is accepted.
        if _string(payload.get("sessionKey")) is not None:
            return SESSION_KEY_REFUSED[RELEASE_LEGACY]
        return None

    def _idempotency_key(self, request: web.Request, payload: dict[str, Any]) -> str | None:
        """2026.9.6 reads the headers first, then the body; a key over 256 characters counts as none."""
        for value in (*(request.headers.get(header) for header in _IDEMPOTENCY_HEADERS), payload.get("idempotencyKey")):
            key = _string(value)
            if key is not None and len(key) <= IDEMPOTENCY_KEY_MAX:
                return key
        return None

    async def _admit(self) -> web.Response | None:
        """Wait the admission time; a 500 when this request is one of the simulated failures."""
        if self.spec.latency_ms > 0:
            await asyncio.sleep(self.spec.latency_ms / 1000)
        if self.spec.fail_rate > 0 and self._fail_rng.random() < self.spec.fail_rate:
            return _text(500, "Internal Server Error")
        if self.spec.busy:
            return _text(503, "Service Unavailable: run admission timed out")
        return None

    async def _agent(self, request: web.Request, payload: dict[str, Any]) -> web.Response:
        if self.legacy:
            problem, scope = self._check_legacy(payload), ()
        else:
            problem, scope = self._check_current(payload)
        if problem is not None:
            return _error(400, problem)
        key = self._idempotency_key(request, payload)
        failed = await self._admit()
        if failed is not None:
            return failed
        # No await from here on: the replay check and the bookkeeping happen atomically.
        replay_key = (key, scope) if key is not None and not self.legacy else None
        run = self._state.runs_by_key.get(replay_key) if replay_key is not None else None
        if run is not None and run.settled_at is not None and self._clock() - run.settled_at >= SETTLED_REPLAY_S:
            run = None  # a settled entry is kept 5 min: a repeat after that starts the work again
        if run is None:
            completion = COMPLETION_OK if self.spec.model_ok else COMPLETION_MODEL_ERROR
            run = _Run(run_id=str(uuid.uuid4()), completion=completion)
            channel_id = self._answer_channel(payload)
            if channel_id is not None:
                self._answer_later(run, channel_id, str(payload.get("message") or ""))
            elif not self.spec.hold_runs:
                run.settle(self._clock())
            self._state.runs.append(run)
            if replay_key is not None:
                self._state.runs_by_key[replay_key] = run
            self._record(
                ReceivedHook(
                    agent=self.spec.name,
                    path=request.path,
                    run_id=run.run_id,
                    body=payload,
                    idempotency_key=key,
                    at=time.time(),
                )
            )
        answer: dict[str, Any] = {"ok": True, "runId": run.run_id}
        if self.spec.reply_delay_ms > 0:
            await asyncio.sleep(self.spec.reply_delay_ms / 1000)
        if self.legacy:
            return _json(202, answer)  # measured: 2026.2.12 ignores waitForCompletion and answers at once
        if payload.get("waitForCompletion") is True:
            await run.settled.wait()  # a restart cuts this request (the process and its runs are gone)
            answer["completion"] = dict(run.completion)
        return _json(200, answer)

    def _answer_channel(self, payload: dict[str, Any]) -> str | None:
        """The channel id the agent answers in, as a real one would: Discord delivery to `channel:<id>`."""
        if self._poster is None or payload.get("deliver") is False or payload.get("channel") != "discord":
            return None
        to = _string(payload.get("to")) or ""
        return to.removeprefix("channel:") if to.startswith("channel:") else None

    def _answer_later(self, run: _Run, channel_id: str, message: str) -> None:
        task = asyncio.get_running_loop().create_task(self._answer(run, channel_id, message))
        self._answers.add(task)
        task.add_done_callback(self._answers.discard)

    async def _answer(self, run: _Run, channel_id: str, message: str) -> None:
        """Post the answer as the agent's bot account, then complete the run (unless the test holds it)."""
        assert self._poster is not None
        spec = self.spec
        if spec.answer_delay_ms > 0:
            await asyncio.sleep(spec.answer_delay_ms / 1000)
        ok = spec.model_ok and not spec.answer_fails
        if ok:
            first = next((line.strip() for line in message.splitlines() if line.strip()), "")
            text = spec.answer if spec.answer is not None else f"{spec.name}: done: {first}"
            for part in _split(text, max(1, spec.answer_parts)):
                try:
                    await self._poster(spec.name, channel_id, part)
                except Exception:
                    log.exception("simulated %s could not post its answer in %s", spec.name, channel_id)
                    ok = False
                    break
        if not ok:
            run.completion = dict(COMPLETION_MODEL_ERROR)
        if not spec.hold_runs:
            run.settle(self._clock())

    async def _wake(self, request: web.Request, payload: dict[str, Any]) -> web.Response:
        text = _string(payload.get("text"))
        if text is None:
            return _error(400, "text required")
        mode = "next-heartbeat" if payload.get("mode") == "next-heartbeat" else "now"
        if not self.legacy:
            problem = self._check_current_wake(payload, mode)
            if problem is not None:
                return _error(400, problem)
        failed = await self._admit()
        if failed is not None:
            return failed
        outcome = self._queue_system_event(text, mode)
        self._record(
            ReceivedHook(
                agent=self.spec.name,
                path=request.path,
                run_id=None,
                body=payload,
                idempotency_key=None,
                at=time.time(),
            )
        )
        if self.legacy:
            return _json(200, {"ok": True, "mode": mode})
        return _json(200, {"ok": True, "mode": mode, "eventOutcome": outcome})

    def _check_current_wake(self, payload: dict[str, Any], mode: str) -> str | None:
        if "agentId" in payload and _string(payload["agentId"]) is None:
            return "agentId must be a non-empty string"
        session_key = _string(payload.get("sessionKey"))
        if "sessionKey" in payload and session_key is None:
            return "sessionKey must be a non-empty string"
        if mode == "next-heartbeat" and session_key is not None:
            return "sessionKey requires mode=now"
        unknown = self._unknown_agent(payload.get("agentId"))
        if unknown is not None:
            return unknown
        if session_key is not None:
            return SESSION_KEY_REFUSED[RELEASE_CURRENT]
        return None

    def _queue_system_event(self, text: str, mode: str) -> str:
        """Queue the wake's text as a system event of the main session: "queued" or "coalesced".

        As measured on 2026.9.6: a text equal to the last event still pending is coalesced (any mode);
        a "now" wake drains the pending events WAKE_DRAIN_DELAY later (the heartbeat it triggers reads
        them), after which the same text is queued again. So next-heartbeat "x" → queued, now "x" →
        coalesced, now "x" at once → coalesced, now "x" after 0.25 s → queued.
        """
        state, now = self._state, self._clock()
        if state.drain_at is not None and now >= state.drain_at:
            state.pending_events.clear()
            state.drain_at = None
        if state.pending_events and state.pending_events[-1] == text:
            outcome = "coalesced"
        else:
            outcome = "queued"
            state.pending_events.append(text)
            del state.pending_events[:-PENDING_EVENTS_MAX]
        if mode == "now" and state.drain_at is None:
            state.drain_at = now + WAKE_DRAIN_DELAY
        return outcome


class SimulatedFleet:
    """A fleet of simulated gateways on loopback, driven and inspected by tests, the demo and the CLI."""

    def __init__(
        self,
        specs: list[SimAgentSpec],
        token: str | Mapping[str, str],
        *,
        record_path: Path | None = None,
        seed: int = 0,
        clock: Callable[[], float] = time.monotonic,
        poster: Poster | None = None,
    ) -> None:
        """`poster(agent, channel_id, text)` posts in Discord as the agent's bot account: given, agents answer
        hooks that ask for Discord delivery there, as real ones do (SimAgentSpec.answer*); without, they never post."""
        names = [spec.name for spec in specs]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"agent names must be unique; repeated: {', '.join(duplicates)}")
        for spec in specs:
            if spec.release not in RELEASES:
                raise ValueError(f"agent {spec.name!r}: unknown release {spec.release!r}; known: {', '.join(RELEASES)}")
        if isinstance(token, str):
            tokens = dict.fromkeys(names, token)
        else:
            missing = [name for name in names if not token.get(name)]
            if missing:
                raise ValueError(f"no hooks token for agent(s): {', '.join(missing)}")
            tokens = {name: token[name] for name in names}
        if not all(tokens.values()):
            raise ValueError("the hooks token must not be empty")
        self._record_path = record_path
        self._received: list[ReceivedHook] = []
        self._gateways = {
            spec.name: _Gateway(spec, tokens[spec.name], seed=seed, clock=clock, record=self._record, poster=poster)
            for spec in specs
        }

    async def start(self) -> None:
        """Bind every agent that is not marked down; a port that cannot be bound is named with its agent."""
        try:
            for gateway in self._gateways.values():
                if not gateway.spec.down:
                    try:
                        await gateway.open()
                    except OSError as exc:
                        raise PortUnavailable(gateway.spec, exc) from exc
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Close every server, cut hung requests and release every port (spec.down is left as set)."""
        # Every gateway gets its chance to release its port, even when one of them fails to.
        errors: list[BaseException] = []
        for gateway in self._gateways.values():
            try:
                await gateway.close()
            except Exception as exc:
                errors.append(exc)
        if errors:
            raise errors[0]

    async def __aenter__(self) -> SimulatedFleet:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def received(self, agent: str | None = None) -> list[ReceivedHook]:
        """Accepted hook requests in arrival order, for one agent or all."""
        if agent is None:
            return list(self._received)
        self._gateway(agent)
        return [hook for hook in self._received if hook.agent == agent]

    def spec(self, agent: str) -> SimAgentSpec:
        """The live spec of an agent (the setters below change it)."""
        return self._gateway(agent).spec

    async def take_down(self, agent: str) -> None:
        """Close the agent's port like a crash; its in-memory state (idempotency keys…) is lost."""
        gateway = self._gateway(agent)
        gateway.spec.down = True
        await gateway.close()

    async def bring_up(self, agent: str) -> None:
        """(Re)open the agent's port; a new start-up window begins, per spec.startup."""
        gateway = self._gateway(agent)
        await gateway.open()
        gateway.spec.down = False

    async def restart(self, agent: str) -> None:
        await self.take_down(agent)
        await self.bring_up(agent)

    def finish_startup(self, agent: str) -> None:
        """End the agent's start-up window now (for startup=None, or to skip the wait)."""
        self._gateway(agent).finish_startup()

    def in_flight(self, agent: str) -> int:
        """Requests the agent has received and not answered yet (hung ones included)."""
        return self._gateway(agent).in_flight

    async def wait_in_flight(self, agent: str, count: int = 1) -> None:
        """Until the agent holds `count` unanswered requests: lets a test act once a request arrived."""
        await self._gateway(agent).wait_in_flight(count)

    def settle(self, agent: str, *, ok: bool = True) -> int:
        """Settle the agent's held runs (hold_runs): ok, or failed like a run without model credentials."""
        settled = 0
        gateway = self._gateway(agent)
        for run in gateway.runs:
            if not run.settled.is_set():
                run.completion = dict(COMPLETION_OK if ok else COMPLETION_MODEL_ERROR)
                run.settle(gateway.clock())
                settled += 1
        return settled

    def set_latency(self, agent: str, latency_ms: float) -> None:
        self._gateway(agent).spec.latency_ms = latency_ms

    def set_reply_delay(self, agent: str, reply_delay_ms: float) -> None:
        self._gateway(agent).spec.reply_delay_ms = reply_delay_ms

    def set_hang(self, agent: str, hang: bool) -> None:
        """Requests arriving from now on hang (or not); already hung ones stay so until the port closes."""
        self._gateway(agent).spec.hang = hang

    def set_model_ok(self, agent: str, ok: bool) -> None:
        self._gateway(agent).spec.model_ok = ok

    def set_discord_plugin(self, agent: str, loaded: bool) -> None:
        """Load or unload the agent's Discord channel plugin (without it: 400 "channel must be last")."""
        self._gateway(agent).spec.discord_plugin = loaded

    @property
    def urls(self) -> dict[str, str]:
        return {name: f"http://{g.spec.host}:{g.spec.port}" for name, g in self._gateways.items()}

    def _gateway(self, agent: str) -> _Gateway:
        try:
            return self._gateways[agent]
        except KeyError:
            raise KeyError(f"unknown agent {agent!r}; agents: {', '.join(self._gateways)}") from None

    def _record(self, hook: ReceivedHook) -> None:
        self._received.append(hook)
        if self._record_path is not None:
            with self._record_path.open("a", encoding="utf-8") as out:
                out.write(json.dumps(asdict(hook)) + "\n")
                out.flush()


def _split(text: str, parts: int) -> list[str]:
    """`text` in `parts` messages of about equal size, cut between words where possible (none empty)."""
    if parts <= 1 or len(text) < parts:
        return [text]
    words, size = text.split(" "), -(-len(text) // parts)
    chunks: list[str] = [""]
    for word in words:
        if chunks[-1] and len(chunks[-1]) + 1 + len(word) > size and len(chunks) < parts:
            chunks.append(word)
        else:
            chunks[-1] = f"{chunks[-1]} {word}" if chunks[-1] else word
    return [chunk for chunk in chunks if chunk]


class PortUnavailable(OSError):
    """A simulated gateway could not listen on its port (taken by another process, or privileged)."""

    def __init__(self, spec: SimAgentSpec, cause: OSError) -> None:
        self.agent, self.host, self.port = spec.name, spec.host, spec.port
        in_use = cause.errno == errno.EADDRINUSE
        why = "is already in use" if in_use else f"cannot be listened on ({cause.strerror or cause})"
        super().__init__(cause.errno, f"port {self.port} on {self.host} (for {self.agent}) {why}")


def free_ports(count: int, spacing: int = 4) -> int:
    """A base port P such that P, P+spacing, … (count of them) and each one's +1..+3 are free now.

    Chosen below the kernel's ephemeral range, so outgoing client connections cannot take them.
    """
    if count < 1 or spacing < 1:
        raise ValueError("count and spacing must be at least 1")
    low = 10_000
    high = _ephemeral_low() - (count - 1) * spacing - 4
    if high <= low:
        raise ValueError(f"cannot fit {count} gateways spaced by {spacing} below the ephemeral ports")
    picker = random.SystemRandom()  # independent of any seeded Random, so parallel runs spread out
    for _ in range(200):
        base = picker.randrange(low, high)
        ports = {base + i * spacing + side for i in range(count) for side in range(4)}
        if all(_port_free(port) for port in sorted(ports)):
            return base
    raise RuntimeError(f"no free range of {count} ports spaced by {spacing} found on 127.0.0.1")


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the simulator binds
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def parse_release_option(values: list[str], agent_names: list[str]) -> dict[str, str]:
    """Release per agent from `--release` values: "2026.2.12" (all agents) or "webster=2026.2.12".

    Every agent starts on the current release; later values win.
    """
    releases = dict.fromkeys(agent_names, RELEASE_CURRENT)
    for value in values:
        agent, sep, release = value.partition("=")
        agent, release = agent.strip(), release.strip()
        if not sep:
            agent, release = "", agent
        if release not in RELEASES:
            raise ValueError(f"--release {value!r}: unknown release {release!r}; known releases: {', '.join(RELEASES)}")
        if not sep:
            releases = dict.fromkeys(agent_names, release)
        elif agent in releases:
            releases[agent] = release
        else:
            raise ValueError(
                f"--release {value!r}: unknown agent {agent!r}; agents: {', '.join(agent_names) or '(none)'}"
            )
    return releases


async def serve_forever(fleet: SimulatedFleet, *, on_ready: Callable[[], None] | None = None) -> None:
    """Run the fleet until cancelled; the caller turns SIGINT/SIGTERM into a cancellation."""
    try:
        await fleet.start()
        if on_ready is not None:
            on_ready()
        await asyncio.Event().wait()
    finally:
        await fleet.stop()
