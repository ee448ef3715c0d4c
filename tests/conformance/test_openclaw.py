"""Conformance: our gateway client and a delegation end to end against REAL OpenClaw gateways.

Opt-in (`make test-openclaw`): skipped unless ATOMIZER_OPENCLAW_CACHE points at a complete install made
by scripts/openclaw-install.sh. One real gateway per release (2026.9.6 and 2026.2.12) runs on loopback
for the whole module; every test talks to it through bot/gateway.py (and bot/delegation.py where it
applies), or raw where a row of openclaw-hooks.md is something our client never sends.

Where a real gateway answers otherwise than openclaw-hooks.md or the simulator (bot/simulator.py), the
test asserts what the real gateway does and says so in a `REAL:` comment.

The agent has no model credentials: every run fails inside the gateway after it was accepted, which is
expected (acceptance is what atomizer-hq observes). Bad-token tests come last in this file: after 20
bad tokens within 60 s a gateway answers 429, which would spoil any test after them.
"""

from __future__ import annotations

import re
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import httpx
import pytest
from pydantic import SecretStr

from bot.authz import AccessLevel, Requester
from bot.config import HOOK_BODY_LIMIT, ClusterConfig, GatewayConfig, parse_cluster_config
from bot.delegation import DelegationService
from bot.errors import HookRateLimited, HookRejected, HookUnauthorized, PayloadTooLarge
from bot.gateway import AgentHook, GatewayClient, _interpret, encode_body
from bot.services import open_services
from bot.settings import Settings
from bot.simulator import QUERY_TOKEN_MESSAGE, RELEASE_CURRENT
from tests.clocks import FakeClock
from tests.conformance.openclaw_gateway import (
    CACHE_ENV,
    RELEASES,
    SIDE_PORT_SPAN,
    OpenClawInstall,
    RealGateway,
    start_gateway,
)
from tests.conftest import HOOKS_TOKEN

INSTALL = OpenClawInstall.from_env()
if INSTALL is None:
    pytest.skip(
        f"real-gateway conformance is opt-in: run `make test-openclaw` (or set {CACHE_ENV} to a directory "
        "filled by scripts/openclaw-install.sh)",
        allow_module_level=True,
    )
_MISSING = INSTALL.problems()
if _MISSING:
    pytest.skip(
        f"{CACHE_ENV}={INSTALL.cache} is not a complete install (missing: {'; '.join(_MISSING)}); "
        "run scripts/openclaw-install.sh",
        allow_module_level=True,
    )

# Starting a gateway (and installing 2026.9.6's Discord plugin) counts against the first test's timeout.
pytestmark = pytest.mark.timeout(300)

CONFORMANCE = GatewayConfig(connect_timeout=2.0, read_timeout=30.0, probe_timeout=10.0)
TECHNICAL = "channel:100000000000000101"
WRONG_TOKEN = "wrong-SECRET-token-0123456789abcdef"
RUN_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
CHANNEL_AND_TO = "channel and to must be set together for hook delivery"
OPERATOR = Requester(kind="person", name="antoine", front_end="cli", level=AccessLevel.OPERATOR)


@pytest.fixture(scope="module", params=RELEASES, ids=[f"openclaw-{r}" for r in RELEASES])
def gateway(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealGateway]:
    """A real gateway of one release, started once for the module, stopped cleanly (SIGTERM) afterwards."""
    assert INSTALL is not None
    release: str = request.param
    real = start_gateway(INSTALL, release, tmp_path_factory.mktemp(f"openclaw-{release}"), HOOKS_TOKEN)
    try:
        yield real
    finally:
        assert real.alive(), f"the {release} gateway died during the tests:\n{real.log_tail()}"
        took = real.stop()
        # openclaw-hooks.md: "stop with SIGTERM to its pid (clean in about 3 s)"; the whole group is gone.
        assert took < 15, f"the {release} gateway took {took:.1f} s to stop"


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    """A plain client for raw requests: what the gateway answers, before our client interprets it."""
    async with httpx.AsyncClient(trust_env=False, timeout=CONFORMANCE.read_timeout) as client:
        yield client


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """The HTTP client our gateway client runs on, made as the services make it."""
    async with GatewayClient.make_http_client(CONFORMANCE) as client:
        yield client


def client_for(session: aiohttp.ClientSession, token: str = HOOKS_TOKEN) -> GatewayClient:
    secret = SecretStr(token)
    return GatewayClient(session, lambda _agent: secret, CONFORMANCE)


def delivered(message: str = "Conformance: reply HEARTBEAT_OK") -> AgentHook:
    return AgentHook(message=message, channel="discord", to=TECHNICAL)


def current(gateway: RealGateway) -> bool:
    return gateway.release == RELEASE_CURRENT


def auth(token: str = HOOKS_TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}


async def raw_post(
    http: httpx.AsyncClient, gateway: RealGateway, body: bytes | dict, query: str = ""
) -> httpx.Response:
    content = body if isinstance(body, bytes) else encode_body(body)
    return await http.post(f"{gateway.base_url}/hooks/agent{query}", content=content, headers=auth())


def accepted_status(gateway: RealGateway) -> int:
    return 200 if current(gateway) else 202


# --- start-up, readiness, health routes ---------------------------------------------------------


def test_the_gateway_starts_as_documented(gateway: RealGateway) -> None:
    # While starting, a hook check never admits anything (refused, 503 or 400 "message required").
    for _at, seen in gateway.startup_observations:
        assert "hook check 2" not in seen, gateway.startup_observations
    if current(gateway):
        # REAL: no "503 Plugin runtime is starting" was seen here: hooks answered 400 "message required"
        # (they work) while /readyz still said 503 starting. The 503 row of the doc is allowed, not required.
        assert any(seen.startswith("readyz 200 JSON") for _at, seen in gateway.startup_observations)
    else:
        assert all("JSON" not in seen or "not JSON" in seen for _at, seen in gateway.startup_observations)
    assert gateway.started_in_s < 60


def test_side_ports(gateway: RealGateway) -> None:
    listening = [
        offset for offset in range(1, SIDE_PORT_SPAN[gateway.release] + 1) if _listening(gateway.port + offset)
    ]
    if current(gateway):
        # REAL: 2026.9.6 opened no side port at all (its docs announce browser control on +2, debugging up to +110).
        assert listening == []
    else:
        assert listening == [3]  # the Chrome-extension relay on base+3 (the "N+3" of the as-built notes)


def _listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


async def test_readiness(gateway: RealGateway, http: httpx.AsyncClient, session: aiohttp.ClientSession) -> None:
    client, agent = client_for(session), gateway.agent()
    ready = await client.readiness(agent)
    assert ready.state == "ready", ready
    if current(gateway):
        assert (ready.release, ready.health_routes, ready.failing) == (RELEASE_CURRENT, True, ())
        assert ready.honours_idempotency and client.honours_idempotency(agent.name) is True
    else:
        assert (ready.release, ready.health_routes) == (None, False)
        assert "no health routes" in ready.detail  # ready through the authenticated POST {} check
        assert not ready.honours_idempotency and client.honours_idempotency(agent.name) is False


async def test_health_routes(gateway: RealGateway, http: httpx.AsyncClient) -> None:
    answers = {
        path: await http.get(f"{gateway.base_url}{path}") for path in ("/healthz", "/health", "/readyz", "/startupz")
    }
    unknown = await http.get(f"{gateway.base_url}/no-such-page")
    assert unknown.status_code == 200 and unknown.headers["content-type"].startswith("text/html")
    if current(gateway):
        assert answers["/healthz"].json() == {"ok": True, "status": "live"}
        assert answers["/health"].json() == {"ok": True, "status": "live"}
        readyz = answers["/readyz"].json()
        assert answers["/readyz"].status_code == 200 and readyz["ready"] is True and readyz["failing"] == []
        startupz = answers["/startupz"].json()
        assert (startupz["ok"], startupz["status"], startupz["version"]) == (True, "started", RELEASE_CURRENT)
        assert isinstance(startupz["uptimeMs"], int)
        assert (await http.head(f"{gateway.base_url}/healthz")).status_code == 200
    else:
        for path, answer in answers.items():  # no health routes: the Control UI's HTML, like any unknown path
            assert answer.status_code == 200, path
            assert answer.headers["content-type"].startswith("text/html"), path


# --- accepted -------------------------------------------------------------------------------------


async def test_an_accepted_hook(gateway: RealGateway, http: httpx.AsyncClient, session: aiohttp.ClientSession) -> None:
    accepted = await client_for(session).send_agent_hook(gateway.agent(), delivered())
    assert accepted.status_code == accepted_status(gateway)
    assert RUN_ID.match(accepted.run_id)
    assert accepted.completion is None
    assert accepted.latency_s < 15  # admitted, or a 503 after 15 s


async def test_an_accepted_hook_without_delivery(
    gateway: RealGateway, http: httpx.AsyncClient, session: aiohttp.ClientSession
) -> None:
    accepted = await client_for(session).send_agent_hook(gateway.agent(), AgentHook("Conformance", deliver=False))
    assert accepted.status_code == accepted_status(gateway) and RUN_ID.match(accepted.run_id)


async def test_the_other_token_header_is_accepted(gateway: RealGateway, http: httpx.AsyncClient) -> None:
    response = await http.post(
        f"{gateway.base_url}/hooks/agent",
        content=encode_body({"message": "Conformance", "deliver": False}),
        headers={"x-openclaw-token": HOOKS_TOKEN, "Content-Type": "application/json"},
    )
    assert _interpret("conformance", response, 0.0).status == accepted_status(gateway)


async def test_wait_for_completion_reports_the_failed_run(
    gateway: RealGateway, http: httpx.AsyncClient, session: aiohttp.ClientSession
) -> None:
    hook = AgentHook("Conformance: reply HEARTBEAT_OK", deliver=False, wait_for_completion=True)
    accepted = await client_for(session).send_agent_hook(gateway.agent(), hook)
    assert accepted.status_code == accepted_status(gateway)
    if current(gateway):
        # The run fails inside the gateway (no model credentials) and the answer says so. REAL: the completion
        # is {"status":"error","replyDisposition":"empty"}, with no error text (the simulator adds an "error").
        assert accepted.completion is not None and accepted.completion.get("status") == "error", accepted.completion
    else:
        # REAL: 2026.2.12 ignores waitForCompletion: it answers at once, without a completion object.
        assert accepted.completion is None


async def test_wake(gateway: RealGateway, http: httpx.AsyncClient, session: aiohttp.ClientSession) -> None:
    woken = await client_for(session).wake(gateway.agent(), "Conformance: check your inbox")
    assert woken.mode == "now"
    if current(gateway):
        assert woken.outcome in ("queued", "coalesced")
    else:
        assert woken.outcome is None  # {"ok":true,"mode":"now"}
    later = await client_for(session).wake(gateway.agent(), "Conformance: later", mode="next-heartbeat")
    assert later.mode == "next-heartbeat"
    response = await http.post(f"{gateway.base_url}/hooks/wake", content=b'{"mode":"now"}', headers=auth())
    with pytest.raises(HookRejected) as caught:
        _interpret("conformance", response, 0.0)
    assert (caught.value.status, caught.value.gateway_error) == (400, "text required")


# --- idempotency ----------------------------------------------------------------------------------


async def test_a_repeated_idempotency_key(
    gateway: RealGateway, http: httpx.AsyncClient, session: aiohttp.ClientSession
) -> None:
    client, agent, key = client_for(session), gateway.agent(), f"conformance-{uuid.uuid4().hex}"
    first = await client.send_agent_hook(agent, delivered(), idempotency_key=key)
    again = await client.send_agent_hook(agent, delivered(), idempotency_key=key)
    if current(gateway):
        assert again.run_id == first.run_id  # replayed: no second run
        assert again.status_code == 200
    else:
        assert again.run_id != first.run_id  # ignored: every request starts a new run


@pytest.mark.parametrize("where", ["X-OpenClaw-Idempotency-Key", "body"])
async def test_the_other_idempotency_key_spellings(gateway: RealGateway, http: httpx.AsyncClient, where: str) -> None:
    key = f"conformance-{uuid.uuid4().hex}"
    body: dict[str, object] = {"message": "Conformance", "deliver": False}
    headers = auth()
    if where == "body":
        body["idempotencyKey"] = key
    else:
        headers[where] = key
    run_ids = set()
    for _ in range(2):
        response = await http.post(f"{gateway.base_url}/hooks/agent", content=encode_body(body), headers=headers)
        run_ids.add(_interpret("conformance", response, 0.0).body["runId"])
    assert len(run_ids) == (1 if current(gateway) else 2)


# --- refused by the gateway -------------------------------------------------------------------------


async def test_an_empty_message_is_rejected(
    gateway: RealGateway, http: httpx.AsyncClient, session: aiohttp.ClientSession
) -> None:
    with pytest.raises(HookRejected) as caught:
        await client_for(session).send_agent_hook(gateway.agent(), AgentHook(message=""))
    assert (caught.value.status, caught.value.gateway_error) == (400, "message required")


async def test_a_token_in_the_query_is_refused(gateway: RealGateway, http: httpx.AsyncClient) -> None:
    response = await http.post(
        f"{gateway.base_url}/hooks/agent?token={HOOKS_TOKEN}",
        content=b'{"message":"Conformance","deliver":false}',
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("text/plain")
    assert response.text == QUERY_TOKEN_MESSAGE
    with pytest.raises(HookRejected) as caught:
        _interpret("conformance", response, 0.0)
    assert caught.value.status == 400 and "query parameters are not allowed" in caught.value.gateway_error
    assert HOOKS_TOKEN not in str(caught.value)


async def test_only_the_query_parameter_token_is_refused(gateway: RealGateway, http: httpx.AsyncClient) -> None:
    # REAL: both releases refuse exactly `?token=`; the simulator refuses any query key ending in "token"
    # (e.g. `?hookToken=`), which the real gateways ignore (with a valid header token: accepted).
    response = await raw_post(http, gateway, {"message": "Conformance", "deliver": False}, "?hookToken=abc")
    assert response.status_code == accepted_status(gateway)


async def test_channel_without_to(gateway: RealGateway, http: httpx.AsyncClient) -> None:
    with pytest.raises(ValueError, match="together"):
        AgentHook("Conformance", channel="discord").body()  # our client never sends it
    for body in ({"message": "Conformance", "channel": "discord"}, {"message": "Conformance", "to": TECHNICAL}):
        response = await raw_post(http, gateway, body)
        if current(gateway):
            with pytest.raises(HookRejected) as caught:
                _interpret("conformance", response, 0.0)
            assert (caught.value.status, caught.value.gateway_error) == (400, CHANNEL_AND_TO)
        else:
            # Accepted, and the answer is then silently never delivered (the old delegate.sh bug).
            answer = _interpret("conformance", response, 0.0)
            assert answer.status == 202 and RUN_ID.match(answer.body["runId"])


async def test_channel_last_with_to(gateway: RealGateway, http: httpx.AsyncClient) -> None:
    response = await raw_post(http, gateway, {"message": "Conformance", "channel": "last", "to": TECHNICAL})
    if current(gateway):
        with pytest.raises(HookRejected) as caught:
            _interpret("conformance", response, 0.0)
        assert caught.value.gateway_error == "channel must name a concrete channel for hook delivery"
    else:
        # REAL: 2026.2.12 accepts it (202); openclaw-hooks.md lists this 400 for both releases.
        assert response.status_code == 202


async def test_a_channel_that_is_not_installed(gateway: RealGateway, http: httpx.AsyncClient) -> None:
    # REAL, undocumented: `channel` must name a loaded channel plugin, on both releases; the error lists them.
    # (Without the Discord plugin even "discord" is refused: `channel must be last`.)
    response = await raw_post(http, gateway, {"message": "Conformance", "channel": "telegram", "to": TECHNICAL})
    with pytest.raises(HookRejected) as caught:
        _interpret("conformance", response, 0.0)
    assert (caught.value.status, caught.value.gateway_error) == (400, "channel must be last|discord")


async def test_an_unknown_agent_id(gateway: RealGateway, http: httpx.AsyncClient) -> None:
    response = await raw_post(http, gateway, {"message": "Conformance", "deliver": False, "agentId": "nope"})
    if current(gateway):
        with pytest.raises(HookRejected) as caught:
            _interpret("conformance", response, 0.0)
        assert caught.value.gateway_error == 'unknown agentId "nope"'
    else:
        # REAL: 2026.2.12 accepts an unknown agentId (202); openclaw-hooks.md lists this 400 for both.
        assert response.status_code == 202


async def test_invalid_json(gateway: RealGateway, http: httpx.AsyncClient) -> None:
    response = await raw_post(http, gateway, b"{not json")
    with pytest.raises(HookRejected) as caught:
        _interpret("conformance", response, 0.0)
    assert caught.value.status == 400
    parser = "Expected property name or '}' in JSON at position 1 (line 1 column 2)"
    # REAL: 2026.2.12 prefixes the parser's message with "SyntaxError: ".
    assert caught.value.gateway_error == (parser if current(gateway) else f"SyntaxError: {parser}")


async def test_an_empty_model_is_rejected(
    gateway: RealGateway, http: httpx.AsyncClient, session: aiohttp.ClientSession
) -> None:
    # REAL: 2026.9.6 refuses it too (openclaw-hooks.md lists "model required" for 2026.2.12 only; the
    # simulator accepts it on 2026.9.6).
    with pytest.raises(HookRejected) as caught:
        await client_for(session).send_agent_hook(gateway.agent(), AgentHook("Conformance", deliver=False, model=""))
    assert (caught.value.status, caught.value.gateway_error) == (400, "model required")


async def test_a_session_key_is_refused(gateway: RealGateway, http: httpx.AsyncClient) -> None:
    response = await raw_post(http, gateway, {"message": "Conformance", "deliver": False, "sessionKey": "abc"})
    with pytest.raises(HookRejected) as caught:
        _interpret("conformance", response, 0.0)
    # REAL texts (the simulator says "sessionKey is not allowed"):
    switch = "set hooks.allowRequestSessionKey=true to enable"
    if current(gateway):
        expected = f"sessionKey is disabled for externally supplied hook payload values; {switch}"
    else:
        expected = f"sessionKey is disabled for external /hooks/agent payloads; {switch}"
    assert (caught.value.status, caught.value.gateway_error) == (400, expected)


async def test_get_is_not_allowed(gateway: RealGateway, http: httpx.AsyncClient) -> None:
    response = await http.get(f"{gateway.base_url}/hooks/agent", headers=auth())
    assert (response.status_code, response.headers.get("allow")) == (405, "POST")
    with pytest.raises(HookRejected) as caught:
        _interpret("conformance", response, 0.0)
    assert caught.value.status == 405


async def test_an_unknown_hook_route(gateway: RealGateway, http: httpx.AsyncClient) -> None:
    response = await http.post(f"{gateway.base_url}/hooks/nope", content=b'{"message":"x"}', headers=auth())
    assert (response.status_code, response.text) == (404, "Not Found")


# --- the body cap ---------------------------------------------------------------------------------


async def test_the_cap_itself_is_accepted_and_one_byte_more_is_never_sent(
    gateway: RealGateway, http: httpx.AsyncClient, session: aiohttp.ClientSession
) -> None:
    client, agent = client_for(session), gateway.agent()
    base = len(encode_body(AgentHook(message="", deliver=False).body()))
    exactly = AgentHook(message="x" * (HOOK_BODY_LIMIT - base), deliver=False)
    assert len(encode_body(exactly.body())) == HOOK_BODY_LIMIT
    assert (await client.send_agent_hook(agent, exactly)).status_code == accepted_status(gateway)
    with pytest.raises(PayloadTooLarge, match="by at least 1 bytes"):
        await client.send_agent_hook(agent, AgentHook(message="x" * (HOOK_BODY_LIMIT - base + 1), deliver=False))


async def test_a_raw_body_over_the_cap(
    gateway: RealGateway, http: httpx.AsyncClient, session: aiohttp.ClientSession
) -> None:
    body = b'{"message":"' + b"x" * HOOK_BODY_LIMIT + b'","deliver":false}'
    if current(gateway):
        response = await raw_post(http, gateway, body)
        assert (response.status_code, response.json()) == (413, {"ok": False, "error": "payload too large"})
        with pytest.raises(HookRejected) as caught:
            _interpret("conformance", response, 0.0)
        assert caught.value.status == 413
    else:
        with pytest.raises(httpx.TransportError):  # connection dropped, no answer
            await raw_post(http, gateway, body)
    # The gateway is still fine afterwards.
    assert (await client_for(session).readiness(gateway.agent())).state == "ready"


# --- a delegation end to end (DelegationService on a real SQLite file) ------------------------------


def fleet_of_one(gateway: RealGateway) -> ClusterConfig:
    return parse_cluster_config(
        {
            "agents": [{"name": "nx-expert", "port": gateway.port}],
            "channels": {"technical": TECHNICAL.removeprefix("channel:")},
            "gateway": CONFORMANCE.model_dump(),
        },
        "conformance",
    )


async def test_a_delegation_end_to_end(gateway: RealGateway, settings: Settings) -> None:
    config = fleet_of_one(gateway)
    async with open_services(settings, config) as services:
        service = DelegationService(config, services.store, services.gateway)
        result = await service.delegate(OPERATOR, "nx-expert", "Conformance: mesh the M2 mirror", target=TECHNICAL)
        delegation = result.delegation
        assert delegation is not None
        assert (delegation.status, delegation.attempts, delegation.last_error) == ("accepted", 1, None)
        assert delegation.run_id is not None and RUN_ID.match(delegation.run_id)
        assert result.payload["channel"] == "discord" and result.payload["to"] == TECHNICAL
        quiet = await service.delegate(OPERATOR, "nx-expert", "Conformance: no delivery", deliver=False)
        assert quiet.delegation is not None and quiet.delegation.status == "accepted"
        assert quiet.delegation.run_id != delegation.run_id
        stored = await services.store.fetchall("SELECT status, run_id FROM delegations ORDER BY id")
        assert [(row["status"], row["run_id"]) for row in stored] == [
            ("accepted", delegation.run_id),
            ("accepted", quiet.delegation.run_id),
        ]


async def test_a_bot_killed_mid_send_never_starts_a_second_run(gateway: RealGateway, settings: Settings) -> None:
    """The request reached the gateway, the bot died before recording the answer, then restarted."""
    config, clock = fleet_of_one(gateway), FakeClock(datetime.now(UTC))
    async with open_services(settings, config) as services:
        first = await DelegationService(config, services.store, services.gateway, clock=clock).delegate(
            OPERATOR, "nx-expert", "Conformance: find the CTE of Zerodur", target=TECHNICAL
        )
        assert first.delegation is not None and first.delegation.status == "accepted"
        original_run = first.delegation.run_id
        # What the crash leaves behind: the request was sent, its answer never recorded.
        await services.store.execute(
            "UPDATE delegations SET status = 'sending', run_id = NULL WHERE id = ?", (first.delegation.id,)
        )
        # A restarted bot: a fresh gateway client that has not yet seen which release this agent runs.
        restarted = DelegationService(
            config, services.store, GatewayClient(services.http, settings.hooks_token_for, config.gateway), clock=clock
        )
        assert await restarted.recover() == 1
        if current(gateway):
            # The gateway honours the Idempotency-Key: the resend replays the first run.
            assert (await restarted.get(first.delegation.id)).status == "queued"
            clock.advance(10)
            assert await restarted.process_due() == 1
            resent = await restarted.get(first.delegation.id)
            assert (resent.status, resent.attempts) == ("accepted", 2)
            assert resent.run_id == original_run  # the real gateway replayed it: one run, not two
        else:
            # It does not: nothing is resent on our own; a person decides.
            unconfirmed = await restarted.get(first.delegation.id)
            assert unconfirmed.status == "unconfirmed"
            assert "does not honour idempotency keys" in (unconfirmed.last_error or "")
            clock.advance(600)
            assert await restarted.process_due() == 0
            retried = await restarted.retry(OPERATOR, first.delegation.id)
            assert retried.status == "accepted"
            assert retried.run_id != original_run  # why a blind resend is never safe against 2026.2.12


# --- bad tokens: keep these last (20 bad tokens within 60 s lock a client out with 429) ---------------


async def test_a_bad_token_is_unauthorized_and_never_echoed(
    gateway: RealGateway, http: httpx.AsyncClient, session: aiohttp.ClientSession
) -> None:
    with pytest.raises(HookUnauthorized) as caught:
        await client_for(session, WRONG_TOKEN).send_agent_hook(gateway.agent(), delivered())
    assert WRONG_TOKEN not in str(caught.value) and WRONG_TOKEN not in repr(caught.value)
    response = await http.post(f"{gateway.base_url}/hooks/agent", content=b'{"message":"x"}')  # no token at all
    assert (response.status_code, response.text) == (401, "Unauthorized")
    with pytest.raises(HookUnauthorized):
        _interpret("conformance", response, 0.0)


async def test_readiness_with_a_token_the_gateway_refuses(
    gateway: RealGateway, http: httpx.AsyncClient, session: aiohttp.ClientSession
) -> None:
    ready = await client_for(session, WRONG_TOKEN).readiness(gateway.agent())
    if current(gateway):
        assert ready.state == "ready"  # decided by /readyz, which needs no token
    else:
        assert (ready.state, ready.failing) == ("degraded", ("hooks-token",))


async def test_get_without_a_token(gateway: RealGateway, http: httpx.AsyncClient) -> None:
    response = await http.get(f"{gateway.base_url}/hooks/agent")
    if current(gateway):
        assert (response.status_code, response.headers.get("allow")) == (405, "POST")
    else:
        assert (response.status_code, response.text) == (401, "Unauthorized")  # the token is checked first


async def test_twenty_bad_tokens_get_rate_limited_and_a_good_one_still_works(
    gateway: RealGateway, http: httpx.AsyncClient, session: aiohttp.ClientSession
) -> None:
    agent, good, bad = gateway.agent(), client_for(session), client_for(session, WRONG_TOKEN)
    await good.send_agent_hook(agent, AgentHook("Conformance", deliver=False))  # a valid token resets the count
    for _ in range(20):
        with pytest.raises(HookUnauthorized):
            await bad.send_agent_hook(agent, delivered())
    with pytest.raises(HookRateLimited) as caught:
        await bad.send_agent_hook(agent, delivered())
    assert caught.value.retry_after == 60
    raw = await http.post(f"{gateway.base_url}/hooks/agent", content=b"{}", headers=auth(WRONG_TOKEN))
    assert (raw.status_code, raw.text, raw.headers.get("retry-after")) == (429, "Too Many Requests", "60")
    # A valid token still works, and resets the count.
    assert (await good.send_agent_hook(agent, AgentHook("Conformance", deliver=False))).run_id
    with pytest.raises(HookUnauthorized):
        await bad.send_agent_hook(agent, delivered())


def test_the_working_directory_stays_outside_the_repo(gateway: RealGateway) -> None:
    repo = Path(__file__).resolve().parents[2]
    assert not gateway.workdir.resolve().is_relative_to(repo)
    assert INSTALL is not None and not INSTALL.cache.resolve().is_relative_to(repo)
