"""A simulated fleet of OpenClaw gateways: real aiohttp servers on loopback, one per agent.

Each gateway answers the hooks and health routes response for response as measured on the real
gateway (docs: openclaw-hooks.md), with one profile per release, so the client, the CLI demo and the
tests exercise the same wire behaviour they will meet in production. Faults (down, hung, slow,
failing, expired model credentials, a long start-up) can be set per agent and changed while running.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import json
import random
import socket
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

RELEASE_CURRENT = "2026.9.6"
RELEASE_LEGACY = "2026.2.12"
RELEASES = (RELEASE_CURRENT, RELEASE_LEGACY)
BODY_LIMIT = 262_144  # bytes; the gateway's own cap on a hook body

BAD_TOKEN_LIMIT = 20  # bad tokens per client within BAD_TOKEN_WINDOW before answering 429
BAD_TOKEN_WINDOW = 60.0  # seconds, on the injected clock
WAKE_COALESCE_WINDOW = 1.0  # seconds: a wake this soon after a queued one joins it
_SHUTDOWN_TIMEOUT = 0.1  # seconds aiohttp waits for handlers at shutdown; we cut them ourselves first

QUERY_TOKEN_MESSAGE = (
    "Hook token must be provided via Authorization: Bearer <token> or X-OpenClaw-Token header "
    "(query parameters are not allowed)."
)
CONTROL_UI_HTML = (
    '<!doctype html><html><head><meta charset="utf-8"><title>OpenClaw Control</title></head>'
    '<body><div id="app"></div><script type="module" src="/assets/index.js"></script></body></html>'
)
COMPLETION_OK: dict[str, str] = {"status": "ok", "reply": "HEARTBEAT_OK"}
COMPLETION_MODEL_ERROR: dict[str, str] = {
    "status": "error",
    "error": "model/authentication: credentials expired or invalid",
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
    model_ok: bool = True  # False: hooks accepted, but runs complete with an error
    hooks_enabled: bool = True  # False: hooks routes answer 404 "Not Found"
    startup: float | None = 0.0  # seconds of start-up window; None = until finish_startup(name)
    # Delay between starting a run and answering: a gateway that took the work but whose answer is
    # slow or lost (the client times out after sending; the run happened all the same).
    reply_delay_ms: float = 0.0
    hooks_path: str = "/hooks"  # the gateway's `hooks.path`


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


@dataclass
class _ProcessState:
    """What a gateway keeps in memory: lost when it crashes or restarts, like the real process."""

    started_at: float
    runs_by_key: dict[str, _Run] = field(default_factory=dict)
    bad_tokens: dict[str, deque[float]] = field(default_factory=dict)
    last_queued_wake: float | None = None


def _text(status: int, text: str, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(status=status, text=text, content_type="text/plain", headers=headers)


def _json(status: int, payload: Mapping[str, Any]) -> web.Response:
    return web.json_response(payload, status=status, dumps=_DUMPS)


def _error(status: int, message: str) -> web.Response:
    return _json(status, {"ok": False, "error": message})


def _present(value: Any) -> bool:
    """A delivery field counts as set when it is a non-blank string (or any other non-null value)."""
    if isinstance(value, str):
        return bool(value.strip())
    return value is not None


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
    ) -> None:
        self.spec = spec
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
            return await self._hooks(request, path[len(hooks) :].strip("/"))
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
        known = route in ("agent", "wake")
        if not self.spec.hooks_enabled:
            return _text(404, "Not Found")
        # Assumption: while the plugin runtime starts nothing of the hooks handler runs, auth included.
        if not self.legacy and not self._ready:
            return _text(503, "Plugin runtime is starting")
        if any(key.lower().replace("-", "_").endswith("token") for key in request.query):
            return _text(400, QUERY_TOKEN_MESSAGE)
        if not self.legacy and known and request.method != "POST":
            return _text(405, "Method Not Allowed", {"Allow": "POST"})
        denied = self._authenticate(request)
        if denied is not None:
            return denied
        if not known:
            return _text(404, "Not Found")
        if request.method != "POST":  # 2026.2.12 checks the token first
            return _text(405, "Method Not Allowed", {"Allow": "POST"})

        raw = await self._read_body(request)
        if raw is None:
            if self.legacy:
                return await self._drop_connection(request)
            return _error(413, "payload too large")
        payload: Any = {}
        if raw.strip():
            try:
                payload = json.loads(raw)
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                return _error(400, str(exc))
        if not isinstance(payload, dict):
            payload = {}
        if route == "wake":
            return await self._wake(request, payload)
        return await self._agent(request, payload)

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

    def _agent_error(self, payload: dict[str, Any]) -> str | None:
        message = payload.get("message")
        if not isinstance(message, str) or not message.strip():
            return "message required"
        if self.legacy and "model" in payload:
            model = payload["model"]
            if not isinstance(model, str) or not model.strip():
                return "model required"
        if payload.get("sessionKey") is not None:
            return "sessionKey is not allowed"
        agent_id = payload.get("agentId")
        if _present(agent_id) and agent_id not in (self.spec.name, "main"):
            return f'unknown agentId "{agent_id}"'
        if not self.legacy:
            # Stricter than needed when deliver is false, on purpose: a client must not rely on it.
            has_channel, has_to = _present(payload.get("channel")), _present(payload.get("to"))
            if has_channel != has_to:
                return "channel and to must be set together for hook delivery"
            if has_channel and str(payload["channel"]).strip() == "last":
                return "channel must name a concrete channel for hook delivery"
        return None

    def _idempotency_key(self, request: web.Request, payload: dict[str, Any]) -> str | None:
        key = payload.get("idempotencyKey")
        if isinstance(key, str) and key.strip():
            return key.strip()
        for header in _IDEMPOTENCY_HEADERS:
            value = request.headers.get(header, "").strip()
            if value:
                return value
        return None

    async def _admit(self) -> web.Response | None:
        """Wait the admission time; a 500 when this request is one of the simulated failures."""
        if self.spec.latency_ms > 0:
            await asyncio.sleep(self.spec.latency_ms / 1000)
        if self.spec.fail_rate > 0 and self._fail_rng.random() < self.spec.fail_rate:
            return _text(500, "Internal Server Error")
        return None

    async def _agent(self, request: web.Request, payload: dict[str, Any]) -> web.Response:
        problem = self._agent_error(payload)
        if problem is not None:
            return _error(400, problem)
        key = self._idempotency_key(request, payload)
        failed = await self._admit()
        if failed is not None:
            return failed
        # No await from here on: the replay check and the bookkeeping happen atomically.
        run = self._state.runs_by_key.get(key) if key is not None and not self.legacy else None
        if run is None:
            completion = COMPLETION_OK if self.spec.model_ok else COMPLETION_MODEL_ERROR
            run = _Run(run_id=str(uuid.uuid4()), completion=completion)
            if key is not None and not self.legacy:
                self._state.runs_by_key[key] = run
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
        if payload.get("waitForCompletion") is True:
            answer["completion"] = dict(run.completion)
        return _json(202 if self.legacy else 200, answer)

    async def _wake(self, request: web.Request, payload: dict[str, Any]) -> web.Response:
        text = payload.get("text")
        if not isinstance(text, str) or not text.strip():
            return _error(400, "text required")
        mode = "next-heartbeat" if payload.get("mode") == "next-heartbeat" else "now"
        failed = await self._admit()
        if failed is not None:
            return failed
        now = self._clock()
        last = self._state.last_queued_wake
        outcome = "coalesced" if last is not None and now - last < WAKE_COALESCE_WINDOW else "queued"
        if outcome == "queued":
            self._state.last_queued_wake = now
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
    ) -> None:
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
            spec.name: _Gateway(spec, tokens[spec.name], seed=seed, clock=clock, record=self._record) for spec in specs
        }

    async def start(self) -> None:
        """Bind every agent that is not marked down."""
        try:
            for gateway in self._gateways.values():
                if not gateway.spec.down:
                    await gateway.open()
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

    def set_latency(self, agent: str, latency_ms: float) -> None:
        self._gateway(agent).spec.latency_ms = latency_ms

    def set_reply_delay(self, agent: str, reply_delay_ms: float) -> None:
        self._gateway(agent).spec.reply_delay_ms = reply_delay_ms

    def set_hang(self, agent: str, hang: bool) -> None:
        """Requests arriving from now on hang (or not); already hung ones stay so until the port closes."""
        self._gateway(agent).spec.hang = hang

    def set_model_ok(self, agent: str, ok: bool) -> None:
        self._gateway(agent).spec.model_ok = ok

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
