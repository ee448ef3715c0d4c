"""The client for the agents' OpenClaw gateways: hooks and readiness, for both live releases.

Every answer in openclaw-hooks.md maps to a typed result or a typed error here, and nowhere else:
callers never see an HTTP library's exception or a raw status code. Tokens go into request headers
only; they never appear in an error, a log line or a repr.

The HTTP client is aiohttp's (already here for discord.py, the loopback API and the simulator), not
httpx: with 64 hooks in flight httpx's connection pool managed ~400 POSTs/s on this class of machine
and aiohttp's ~10,000 (bench/delegate_throughput.py measures both).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp
from pydantic import SecretStr

from bot.config import HOOK_BODY_LIMIT, AgentConfig, GatewayConfig
from bot.errors import (
    AgentUnavailable,
    GatewayProtocolError,
    HookRateLimited,
    HookRejected,
    HookUnauthorized,
    MissingSecret,
    PayloadTooLarge,
    env_suffix,
)

TokenLookup = Callable[[str], SecretStr | None]
ReadinessState = Literal["ready", "starting", "degraded", "down", "foreign"]
STARTING_TEXT = "Plugin runtime is starting"


class AdmissionTimeout(AgentUnavailable):
    """A 503 that is not a gateway still starting: it did not admit the hook in time (busy). Routing learns the
    agent's in-flight cap from it (docs/routing.md); everything else treats it as any AgentUnavailable."""


HOOKS_IN_FLIGHT_PER_AGENT = 8
KEEPALIVE_S = 4.0
_SNIPPET = 160


@dataclass(frozen=True)
class AgentHook:
    """The body of `POST /hooks/agent`. `channel` and `to` go together or not at all."""

    message: str
    name: str = "atomizer-hq"
    deliver: bool = True
    channel: str | None = None
    to: str | None = None
    wake_mode: Literal["now", "next-heartbeat"] | None = None
    wait_for_completion: bool = False
    timeout_seconds: int | None = None
    model: str | None = None

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"message": self.message, "name": self.name, "deliver": self.deliver}
        if (self.channel is None) != (self.to is None):
            # The current release refuses this and the old one silently loses the answer.
            raise ValueError("channel and to must be set together")
        if self.channel is not None:
            body["channel"] = self.channel
            body["to"] = self.to
        if self.wake_mode is not None:
            body["wakeMode"] = self.wake_mode
        if self.wait_for_completion:
            body["waitForCompletion"] = True
        if self.timeout_seconds is not None:
            body["timeoutSeconds"] = self.timeout_seconds
        if self.model is not None:
            body["model"] = self.model
        return body


@dataclass(frozen=True)
class HookAccepted:
    """The gateway admitted the run (any 2xx with ok and a runId)."""

    agent: str
    run_id: str
    status_code: int
    latency_s: float
    completion: dict[str, Any] | None = None


@dataclass(frozen=True)
class WakeAccepted:
    agent: str
    mode: str
    outcome: str | None
    latency_s: float


@dataclass(frozen=True)
class Readiness:
    """What one probe learned about a gateway."""

    agent: str
    state: ReadinessState
    latency_s: float
    detail: str = ""
    release: str | None = None  # reported by /startupz; None where the gateway has no health routes
    health_routes: bool = False
    failing: tuple[str, ...] = field(default_factory=tuple)

    @property
    def honours_idempotency(self) -> bool:
        """Only releases with health routes (2026.9+) replay a runId for a repeated Idempotency-Key."""
        return self.health_routes


def encode_body(body: dict[str, Any]) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


@dataclass(frozen=True)
class _Response:
    """One answer, read whole: what the interpretation below needs and nothing of the library."""

    status_code: int
    content: bytes
    retry_after: str | None = None

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.content)


class GatewayClient:
    """Talks to every gateway of the fleet through one shared `aiohttp.ClientSession`."""

    def __init__(self, http: aiohttp.ClientSession, tokens: TokenLookup, config: GatewayConfig) -> None:
        self._http = http
        self._tokens = tokens
        self._config = config
        self._timeout = _timeout(config.connect_timeout, config.read_timeout)  # every request but slow hooks
        self._health_routes: dict[str, bool] = {}  # agent -> last seen release has health routes
        # Hooks in flight per agent: a gateway admits runs one by one anyway, and one HTTP pool with
        # hundreds of waiting requests spends its time scanning them (measured in bench/).
        self._gates: dict[str, asyncio.Semaphore] = {}

    def honours_idempotency(self, agent: str) -> bool | None:
        """Whether the agent's gateway replays a runId for a repeated key, as last seen; None if never seen."""
        return self._health_routes.get(agent)

    @staticmethod
    def make_http_client(config: GatewayConfig) -> aiohttp.ClientSession:
        """The process's one HTTP client for gateways (no environment proxies: loopback only).

        Call it with a running event loop; close it with `async with` or `await session.close()`.
        """
        return aiohttp.ClientSession(
            # An idle connection is dropped before the gateway (Node: 5 s) drops it: a POST on a connection
            # the server has just closed fails as "may have arrived", which costs a 2026.2.x delegation a
            # person's look.
            connector=aiohttp.TCPConnector(limit=200, limit_per_host=0, keepalive_timeout=KEEPALIVE_S),
            timeout=_timeout(config.connect_timeout, config.read_timeout),
            trust_env=False,
        )

    async def _request(
        self,
        method: str,
        url: str,
        timeout: aiohttp.ClientTimeout,
        *,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> _Response:
        """One request, its answer read whole; aiohttp's exceptions pass through to be mapped.

        `timeout` is always given: aiohttp reads None as "no timeout at all", not as the session's.
        """
        async with self._http.request(method, url, data=data, headers=headers, timeout=timeout) as response:
            content = await response.read()
            return _Response(response.status, content, response.headers.get("Retry-After"))

    # --- hooks --------------------------------------------------------------------------------

    async def send_agent_hook(
        self,
        agent: AgentConfig,
        hook: AgentHook,
        *,
        idempotency_key: str | None = None,
        read_timeout: float | None = None,
    ) -> HookAccepted:
        """Start a run on the agent. Raises a GatewayError subclass for every kind of failure."""
        data = await self._post(agent, "/agent", hook.body(), idempotency_key, read_timeout)
        run_id = data.body.get("runId")
        if data.body.get("ok") is not True or not isinstance(run_id, str) or not run_id:
            raise GatewayProtocolError(
                agent.name, f"answered HTTP {data.status} without ok and a runId: {data.snippet}"
            )
        completion = data.body.get("completion")
        return HookAccepted(
            agent=agent.name,
            run_id=run_id,
            status_code=data.status,
            latency_s=data.latency_s,
            completion=completion if isinstance(completion, dict) else None,
        )

    async def wait_for_completion(
        self, agent: AgentConfig, hook: AgentHook, *, idempotency_key: str, timeout_s: float
    ) -> HookAccepted:
        """Re-POST an admitted hook with `waitForCompletion: true` (2026.9.6): the answer comes when the run settles.

        Outside the per-agent gate: one request stays open for the whole run, and must not starve admissions.
        """
        body = {**hook.body(), "waitForCompletion": True}
        data = await self._post(agent, "/agent", body, idempotency_key, timeout_s, gated=False)
        run_id = data.body.get("runId")
        if data.body.get("ok") is not True or not isinstance(run_id, str) or not run_id:
            raise GatewayProtocolError(
                agent.name, f"answered HTTP {data.status} without ok and a runId: {data.snippet}"
            )
        completion = data.body.get("completion")
        return HookAccepted(
            agent=agent.name,
            run_id=run_id,
            status_code=data.status,
            latency_s=data.latency_s,
            completion=completion if isinstance(completion, dict) else None,
        )

    async def started_at(self, agent: AgentConfig) -> float | None:
        """A lower bound of when the gateway process started (Unix time), from /startupz's uptimeMs.

        None when it cannot be told (down, starting, no health routes). Never later than the true start, so
        "started after X" is certain when this says so.
        """
        window = await self.boot_window(agent)
        return window[0] if window is not None else None

    async def boot_window(self, agent: AgentConfig) -> tuple[float, float] | None:
        """When the gateway process started (Unix time), as (earliest, latest), from /startupz's uptimeMs.

        None when it cannot be told (down, starting, no health routes, a 2026.2.12 gateway). "Started after X"
        is certain when the earliest is after X, "started before X" when the latest is before X.
        """
        before = time.time()
        try:
            answer = await self._request("GET", f"{agent.base_url}/startupz", self._timeout)
        except (aiohttp.ClientError, TimeoutError):
            return None
        after = time.time()
        report = _json_object(answer)
        uptime = report.get("uptimeMs") if report is not None else None
        if answer.status_code != 200 or isinstance(uptime, bool) or not isinstance(uptime, int | float):
            return None
        return before - (float(uptime) + 1.0) / 1000, after - float(uptime) / 1000

    async def wake(self, agent: AgentConfig, text: str, mode: Literal["now", "next-heartbeat"] = "now") -> WakeAccepted:
        """Queue a system event for the agent's main session (a heartbeat-like nudge)."""
        data = await self._post(agent, "/wake", {"text": text, "mode": mode}, None, None)
        if data.body.get("ok") is not True:
            raise GatewayProtocolError(agent.name, f"answered HTTP {data.status} without ok: {data.snippet}")
        outcome = data.body.get("eventOutcome")
        return WakeAccepted(
            agent=agent.name,
            mode=str(data.body.get("mode", mode)),
            outcome=outcome if isinstance(outcome, str) else None,
            latency_s=data.latency_s,
        )

    def _headers(self, agent: AgentConfig) -> dict[str, str]:
        token = self._tokens(agent.name)
        if token is None or not token.get_secret_value():
            raise MissingSecret(
                f"no hooks token for {agent.name}: set ATOMIZER_HOOKS_TOKEN "
                f"(or ATOMIZER_HOOKS_TOKEN_{env_suffix(agent.name)}) to the gateway's hooks.token"
            )
        return {"Authorization": f"Bearer {token.get_secret_value()}", "Content-Type": "application/json"}

    async def _post(
        self,
        agent: AgentConfig,
        route: str,
        body: dict[str, Any],
        idempotency_key: str | None,
        read_timeout: float | None,
        *,
        gated: bool = True,
    ) -> _Answer:
        payload = encode_body(body)
        if len(payload) > HOOK_BODY_LIMIT:
            # The old release drops the connection instead of answering 413: never send it.
            raise PayloadTooLarge(
                f"the request to {agent.name} would be {len(payload):,} bytes; the gateway takes at most "
                f"{HOOK_BODY_LIMIT:,} bytes: shorten the instruction by at least "
                f"{len(payload) - HOOK_BODY_LIMIT:,} bytes"
            )
        headers = self._headers(agent)
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        url = f"{agent.base_url}{agent.hooks_path}{route}"
        timeout = _timeout(self._config.connect_timeout, read_timeout) if read_timeout else self._timeout
        gate = self._gates.setdefault(agent.name, asyncio.Semaphore(HOOKS_IN_FLIGHT_PER_AGENT))
        if not gated:
            gate = asyncio.Semaphore(1)  # a completion wait: outside the agent's admission gate
        await gate.acquire()
        started = time.perf_counter()
        try:
            response = await self._request("POST", url, timeout, data=payload, headers=headers)
        except _NOT_SENT as exc:
            raise AgentUnavailable(agent.name, _connect_failure(agent, exc), sent=False) from None
        except TimeoutError:
            raise AgentUnavailable(
                agent.name, "no answer before the read timeout; the request may have arrived", sent=True
            ) from None
        except aiohttp.ClientError:
            raise AgentUnavailable(
                agent.name, "the connection dropped before an answer; the request may have arrived", sent=True
            ) from None
        finally:
            gate.release()
        return _interpret(agent.name, response, time.perf_counter() - started)

    # --- readiness ----------------------------------------------------------------------------

    async def readiness(self, agent: AgentConfig, timeout: float | None = None) -> Readiness:
        """Is the gateway ready to take hooks? Works on both releases; bounded by `timeout`."""
        limit = timeout if timeout is not None else self._config.probe_timeout
        started = time.perf_counter()
        try:
            async with asyncio.timeout(limit):
                result = await self._readiness(agent, started)
        except TimeoutError:
            return Readiness(agent.name, "down", time.perf_counter() - started, f"no answer within {limit:g} s")
        if result.state in ("ready", "starting", "degraded"):
            self._health_routes[agent.name] = result.health_routes
        return result

    async def _readiness(self, agent: AgentConfig, started: float) -> Readiness:
        try:
            ready = await self._request("GET", f"{agent.base_url}/readyz", self._timeout)
        except _NOT_SENT as exc:
            return Readiness(agent.name, "down", time.perf_counter() - started, _connect_failure(agent, exc))
        except TimeoutError:
            return Readiness(agent.name, "down", time.perf_counter() - started, "no answer")
        except aiohttp.ClientError as exc:
            return Readiness(agent.name, "down", time.perf_counter() - started, f"connection failed ({_describe(exc)})")
        report = _json_object(ready)
        if report is not None and "ready" in report:
            return await self._from_health_routes(agent, report, started)
        # No JSON health routes: the 2026.2.12 release (or not a gateway at all).
        return await self._from_hook_check(agent, started)

    async def _from_health_routes(self, agent: AgentConfig, report: dict[str, Any], started: float) -> Readiness:
        release = None
        try:
            startup = _json_object(await self._request("GET", f"{agent.base_url}/startupz", self._timeout))
            if startup is not None and isinstance(startup.get("version"), str):
                release = startup["version"]
        except (aiohttp.ClientError, TimeoutError):
            pass
        failing = tuple(str(item) for item in report.get("failing") or [] if isinstance(item, str))
        latency = time.perf_counter() - started
        if report.get("ready") is True:
            return Readiness(agent.name, "ready", latency, "", release, True, failing)
        if not failing or set(failing) <= {"startup-sidecars"}:
            return Readiness(agent.name, "starting", latency, "starting up", release, True, failing)
        return Readiness(agent.name, "degraded", latency, "failing: " + ", ".join(failing), release, True, failing)

    async def _from_hook_check(self, agent: AgentConfig, started: float) -> Readiness:
        # An authenticated POST {} answers 400 "message required" without starting anything.
        # Never probe without the token: unauthenticated probes count toward the 429 limit.
        token = self._tokens(agent.name)
        if token is None or not token.get_secret_value():
            return Readiness(
                agent.name, "degraded", time.perf_counter() - started,
                "no health routes and no hooks token to check hooks with", failing=("no-hooks-token",),
            )  # fmt: skip
        headers = {"Authorization": f"Bearer {token.get_secret_value()}", "Content-Type": "application/json"}
        try:
            answer = await self._request(
                "POST", f"{agent.base_url}{agent.hooks_path}/agent", self._timeout, data=b"{}", headers=headers
            )
        except _NOT_SENT as exc:
            return Readiness(agent.name, "down", time.perf_counter() - started, _connect_failure(agent, exc))
        except (aiohttp.ClientError, TimeoutError) as exc:
            return Readiness(agent.name, "down", time.perf_counter() - started, f"hook check failed ({_describe(exc)})")
        latency = time.perf_counter() - started
        body = _json_object(answer)
        if answer.status_code == 400 and body is not None and body.get("error") == "message required":
            return Readiness(agent.name, "ready", latency, "hooks answer (no health routes: release 2026.2.x)")
        if answer.status_code == 401:
            return Readiness(
                agent.name,
                "degraded",
                latency,
                "the gateway refuses our hooks token",
                failing=("hooks-token",),
            )
        if answer.status_code == 429:
            return Readiness(
                agent.name,
                "degraded",
                latency,
                "the gateway is rate limiting bad tokens",
                failing=("rate-limited",),
            )
        if answer.status_code == 404:
            return Readiness(
                agent.name,
                "degraded",
                latency,
                "hooks are disabled on the gateway",
                failing=("hooks-disabled",),
            )
        if answer.status_code == 503:
            return Readiness(agent.name, "starting", latency, "starting up")
        return Readiness(
            agent.name, "foreign", latency,
            f"port {agent.port} answers HTTP, but not as an OpenClaw gateway (HTTP {answer.status_code})",
        )  # fmt: skip


@dataclass(frozen=True)
class _Answer:
    status: int
    body: dict[str, Any]
    snippet: str
    latency_s: float


def _interpret(agent: str, response: _Response, latency: float) -> _Answer:
    """Map one hooks answer onto a result or a typed error (the tables in openclaw-hooks.md)."""
    status = response.status_code
    text = response.text
    snippet = _snippet(text)
    body = _json_object(response)
    if 200 <= status < 300:
        if body is None:
            raise GatewayProtocolError(agent, f"answered HTTP {status} with something that is not JSON: {snippet}")
        return _Answer(status, body, snippet, latency)
    gateway_error = str(body.get("error")) if body is not None and "error" in body else snippet
    if status == 401:
        raise HookUnauthorized(agent)
    if status == 429:
        raise HookRateLimited(agent, _retry_after(response))
    if status == 503:
        # "Plugin runtime is starting" surely started nothing; another 503 (15 s admission limit) may have.
        starting = STARTING_TEXT in text
        reason = "the gateway is starting (HTTP 503)" if starting else f"the gateway answered HTTP 503: {snippet}"
        if starting:
            raise AgentUnavailable(agent, reason, sent=False)
        raise AdmissionTimeout(agent, reason, sent=True)
    if status >= 500:
        raise AgentUnavailable(agent, f"the gateway failed (HTTP {status}): {snippet}", sent=True)
    if status == 404:
        raise HookRejected(agent, status, "hooks are disabled on this gateway (hooks.enabled) or hooks.path differs")
    if status == 400 and gateway_error.startswith("channel must be last") and "discord" not in gateway_error:
        # Measured on real gateways: "discord" is refused like this when the Discord channel plugin is not loaded.
        raise HookRejected(
            agent,
            status,
            f"{gateway_error} (the gateway has no Discord channel plugin loaded: on 2026.2.x set "
            "plugins.entries.discord.enabled, on 2026.9.x run `openclaw plugins install npm:@openclaw/discord`)",
        )
    raise HookRejected(agent, status, gateway_error)


def _json_object(response: _Response) -> dict[str, Any] | None:
    try:
        value = response.json()
    except (ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


def _retry_after(response: _Response) -> float:
    try:
        return max(0.0, float(response.retry_after or "60"))
    except ValueError:
        return 60.0


def _snippet(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= _SNIPPET else flat[: _SNIPPET - 1] + "…"


# Failures that prove the request never left: it is safe to send again.
_NOT_SENT = (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError)


def _connect_failure(agent: AgentConfig, exc: Exception) -> str:
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return f"could not connect to {agent.host}:{agent.port} in time"
    return f"connection refused on {agent.host}:{agent.port} (the gateway is not listening)"


def _describe(exc: BaseException) -> str:
    """A short cause for a failed probe (the exception's own text can be empty or name the library)."""
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the server closed the connection"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "the answer was cut short"
    if isinstance(exc, aiohttp.ClientResponseError):
        return "the answer was not valid HTTP"
    return str(exc) or type(exc).__name__


def _timeout(connect: float, read: float) -> aiohttp.ClientTimeout:
    """`connect` bounds getting a connection (from the pool or a new one); `read`, each wait for bytes."""
    return aiohttp.ClientTimeout(total=None, connect=connect, sock_connect=connect, sock_read=read)
