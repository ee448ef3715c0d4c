"""The gateway client against the simulated fleet: every answer of both releases, typed."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest
from aiohttp import web
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
)
from bot.gateway import AgentHook, GatewayClient, _interpret, _Response, encode_body
from bot.simulator import RELEASE_CURRENT, RELEASE_LEGACY, free_ports
from tests.conftest import HOOKS_TOKEN, FleetStarter

BOTH = pytest.mark.parametrize("release", [RELEASE_CURRENT, RELEASE_LEGACY])
FAST = GatewayConfig(connect_timeout=1.0, read_timeout=5.0, probe_timeout=2.0)


def client_for(
    http: aiohttp.ClientSession, token: str | None = HOOKS_TOKEN, config: GatewayConfig = FAST
) -> GatewayClient:
    secret = SecretStr(token) if token is not None else None
    return GatewayClient(http, lambda agent: secret, config)


async def raw_post(http: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str]) -> _Response:
    """A POST through the client's own request path, before `_interpret` reads the answer."""
    client = client_for(http)
    return await client._request("POST", url, client._timeout, data=body, headers=headers)


def delivered(message: str = "Mesh the M2 mirror") -> AgentHook:
    return AgentHook(message=message, channel="discord", to="channel:100000000000000101")


# --- accepted -----------------------------------------------------------------------------------


@BOTH
async def test_an_accepted_hook_is_typed_with_its_run_id(
    start_fleet: FleetStarter, http_client: aiohttp.ClientSession, release: str
) -> None:
    config, fleet = await start_fleet(release=release)
    agent = config.require_agent("nx-expert")
    accepted = await client_for(http_client).send_agent_hook(agent, delivered(), idempotency_key="d-1")
    assert accepted.agent == "nx-expert"
    assert accepted.status_code == (200 if release == RELEASE_CURRENT else 202)
    [run] = fleet.received("nx-expert")
    assert run.run_id == accepted.run_id
    assert run.body["message"] == "Mesh the M2 mirror"
    assert (run.body["channel"], run.body["to"]) == ("discord", "channel:100000000000000101")
    assert run.idempotency_key == "d-1"


async def test_a_repeated_idempotency_key_replays_the_run_on_the_current_release(
    start_fleet: FleetStarter, http_client: aiohttp.ClientSession
) -> None:
    config, fleet = await start_fleet()
    agent, client = config.require_agent("webster"), client_for(http_client)
    first = await client.send_agent_hook(agent, delivered(), idempotency_key="d-7")
    again = await client.send_agent_hook(agent, delivered(), idempotency_key="d-7")
    assert again.run_id == first.run_id
    assert len(fleet.received("webster")) == 1


async def test_the_legacy_release_ignores_idempotency_keys(
    start_fleet: FleetStarter, http_client: aiohttp.ClientSession
) -> None:
    config, fleet = await start_fleet(release=RELEASE_LEGACY)
    agent, client = config.require_agent("webster"), client_for(http_client)
    first = await client.send_agent_hook(agent, delivered(), idempotency_key="d-7")
    again = await client.send_agent_hook(agent, delivered(), idempotency_key="d-7")
    assert again.run_id != first.run_id
    assert len(fleet.received("webster")) == 2  # why a blind retry is never safe against 2026.2.12


async def test_wait_for_completion_reports_a_run_that_failed_inside_the_gateway(
    start_fleet: FleetStarter, http_client: aiohttp.ClientSession
) -> None:
    config, _ = await start_fleet(specs={"webster": {"model_ok": False}})
    client = client_for(http_client)
    hook = AgentHook(message="heartbeat", channel="discord", to="channel:100000000000000103", wait_for_completion=True)
    good = await client.send_agent_hook(config.require_agent("manager"), hook)
    assert good.completion is not None and good.completion["status"] == "ok"
    broken = await client.send_agent_hook(config.require_agent("webster"), hook)
    # Measured on real 2026.9.6 (make test-openclaw): a failed run's completion carries no error text.
    assert broken.completion == {"status": "error", "replyDisposition": "empty"}


@BOTH
async def test_wake_is_accepted_on_both_releases(
    start_fleet: FleetStarter, http_client: aiohttp.ClientSession, release: str
) -> None:
    config, fleet = await start_fleet(release=release)
    woken = await client_for(http_client).wake(config.require_agent("manager"), "check your inbox")
    assert woken.mode == "now"
    assert woken.outcome == ("queued" if release == RELEASE_CURRENT else None)
    assert [h.path for h in fleet.received("manager")] == ["/hooks/wake"]


# --- refused by the gateway ------------------------------------------------------------------


@BOTH
async def test_a_bad_token_is_unauthorized_and_never_echoed(
    start_fleet: FleetStarter, http_client: aiohttp.ClientSession, release: str
) -> None:
    config, fleet = await start_fleet(release=release)
    wrong = "wrong-SECRET-token-0123456789"
    with pytest.raises(HookUnauthorized) as caught:
        await client_for(http_client, wrong).send_agent_hook(config.require_agent("auditor"), delivered())
    assert "ATOMIZER_HOOKS_TOKEN_AUDITOR" in str(caught.value)
    assert wrong not in str(caught.value) and wrong not in repr(caught.value)
    assert fleet.received() == []


@BOTH
async def test_twenty_bad_tokens_get_rate_limited_with_retry_after(
    start_fleet: FleetStarter, http_client: aiohttp.ClientSession, release: str
) -> None:
    config, _ = await start_fleet(release=release)
    agent, bad = config.require_agent("auditor"), client_for(http_client, "not-the-token-at-all")
    for _ in range(20):
        with pytest.raises(HookUnauthorized):
            await bad.send_agent_hook(agent, delivered())
    with pytest.raises(HookRateLimited) as caught:
        await bad.send_agent_hook(agent, delivered())
    assert caught.value.retry_after == 60
    # A valid token still works.
    assert (await client_for(http_client).send_agent_hook(agent, delivered())).run_id


@BOTH
async def test_an_empty_message_is_rejected_with_the_gateway_text(
    start_fleet: FleetStarter, http_client: aiohttp.ClientSession, release: str
) -> None:
    config, _ = await start_fleet(release=release)
    with pytest.raises(HookRejected) as caught:
        await client_for(http_client).send_agent_hook(config.require_agent("auditor"), AgentHook(message=""))
    assert (caught.value.status, caught.value.gateway_error) == (400, "message required")


@BOTH
async def test_a_body_over_the_cap_is_never_sent(
    start_fleet: FleetStarter, http_client: aiohttp.ClientSession, release: str
) -> None:
    config, fleet = await start_fleet(release=release)
    agent, client = config.require_agent("secretary"), client_for(http_client)
    base = len(encode_body(AgentHook(message="").body()))
    exactly = AgentHook(message="x" * (HOOK_BODY_LIMIT - base))
    assert len(encode_body(exactly.body())) == HOOK_BODY_LIMIT
    assert (await client.send_agent_hook(agent, exactly)).run_id  # the cap itself is fine
    with pytest.raises(PayloadTooLarge) as caught:
        await client.send_agent_hook(agent, AgentHook(message="x" * (HOOK_BODY_LIMIT - base + 1)))
    assert "at most 262,144 bytes" in str(caught.value) and "by at least 1 bytes" in str(caught.value)
    assert len(fleet.received("secretary")) == 1


async def test_the_legacy_model_rule_is_rejected_with_its_text(
    start_fleet: FleetStarter, http_client: aiohttp.ClientSession
) -> None:
    config, _ = await start_fleet(release=RELEASE_LEGACY)
    with pytest.raises(HookRejected, match="model required"):
        await client_for(http_client).send_agent_hook(config.require_agent("auditor"), AgentHook("hi", model=""))


@BOTH
async def test_disabled_hooks_are_rejected_as_such(
    start_fleet: FleetStarter, http_client: aiohttp.ClientSession, release: str
) -> None:
    config, _ = await start_fleet(release=release, specs={"auditor": {"hooks_enabled": False}})
    with pytest.raises(HookRejected) as caught:
        await client_for(http_client).send_agent_hook(config.require_agent("auditor"), delivered())
    assert caught.value.status == 404 and "hooks are disabled" in str(caught.value)


def test_channel_and_to_only_go_together() -> None:
    with pytest.raises(ValueError, match="together"):
        AgentHook("hi", channel="discord").body()
    with pytest.raises(ValueError, match="together"):
        AgentHook("hi", to="user:100000000000000301").body()
    assert "channel" not in AgentHook("hi").body()


# Rows the client never provokes itself (it always sends JSON, channel with to, no query token):
# the gateway's own answers are fetched raw from the simulator and fed to the client's mapping.
RAW_ROWS = [
    ("?token=abc", b'{"message":"x"}', "query parameters are not allowed"),
    ("", b"{not json", None),
    ("", b'{"message":"x","channel":"discord"}', "channel and to must be set together for hook delivery"),
    ("", b'{"message":"x","to":"channel:1"}', "channel and to must be set together for hook delivery"),
    ("", b'{"message":"x","channel":"last","to":"channel:1"}', "channel must name a concrete channel"),
    ("", b'{"message":"x","agentId":"nope"}', 'unknown agentId "nope"'),
]


@pytest.mark.parametrize(("query", "body", "text"), RAW_ROWS)
async def test_every_400_of_the_current_release_maps_to_rejected_with_its_text(
    start_fleet: FleetStarter, http_client: aiohttp.ClientSession, query: str, body: bytes, text: str | None
) -> None:
    config, _ = await start_fleet()
    agent = config.require_agent("optimizer")
    response = await raw_post(
        http_client, f"{agent.base_url}/hooks/agent{query}", body, {"Authorization": f"Bearer {HOOKS_TOKEN}"}
    )
    with pytest.raises(HookRejected) as caught:
        _interpret(agent.name, response, 0.0)
    assert caught.value.status == 400
    if text is not None:
        assert text in caught.value.gateway_error
    else:
        assert caught.value.gateway_error  # the JSON parser's own message


async def test_the_legacy_release_accepts_what_the_current_one_refuses(
    start_fleet: FleetStarter, http_client: aiohttp.ClientSession
) -> None:
    # Why atomizer-hq always sends a normalized channel+to pair: 2026.2.12 says yes, then loses the answer.
    config, fleet = await start_fleet(release=RELEASE_LEGACY)
    agent = config.require_agent("webster")
    headers = {"Authorization": f"Bearer {HOOKS_TOKEN}"}
    for body in (
        {"message": "x", "channel": "discord"},
        {"message": "x", "to": "channel:100000000000000101"},
        {"message": "x", "channel": "discord", "to": "100000000000000301"},
    ):
        response = await raw_post(http_client, f"{agent.base_url}/hooks/agent", encode_body(body), headers)
        assert _interpret(agent.name, response, 0.0).status == 202
    assert len(fleet.received("webster")) == 3


async def test_the_legacy_release_drops_an_oversized_body_which_maps_to_maybe_sent(
    start_fleet: FleetStarter, http_client: aiohttp.ClientSession
) -> None:
    config, fleet = await start_fleet(release=RELEASE_LEGACY)
    agent = config.require_agent("webster")
    with pytest.raises(aiohttp.ClientError):
        await raw_post(
            http_client,
            f"{agent.base_url}/hooks/agent",
            b'{"message":"' + b"x" * HOOK_BODY_LIMIT + b'"}',
            {"Authorization": f"Bearer {HOOKS_TOKEN}"},
        )
    assert fleet.received() == []


# --- unavailable ---------------------------------------------------------------------------------


@BOTH
async def test_a_down_agent_is_unavailable_and_surely_not_sent(
    start_fleet: FleetStarter, http_client: aiohttp.ClientSession, release: str
) -> None:
    config, _ = await start_fleet(release=release, specs={"webster": {"down": True}})
    with pytest.raises(AgentUnavailable) as caught:
        await client_for(http_client).send_agent_hook(config.require_agent("webster"), delivered())
    assert caught.value.sent is False
    assert "connection refused" in str(caught.value)


async def test_a_starting_gateway_is_unavailable_and_surely_not_sent(
    start_fleet: FleetStarter, http_client: aiohttp.ClientSession
) -> None:
    config, fleet = await start_fleet(release={"webster": RELEASE_LEGACY}, specs={
        "manager": {"startup": None}, "webster": {"startup": None},
    })  # fmt: skip
    client = client_for(http_client)
    for name in ("manager", "webster"):  # 503 "starting" on 2026.9.6; a closed port on 2026.2.12
        with pytest.raises(AgentUnavailable) as caught:
            await client.send_agent_hook(config.require_agent(name), delivered())
        assert caught.value.sent is False
    fleet.finish_startup("manager")
    fleet.finish_startup("webster")
    for name in ("manager", "webster"):
        assert (await client.send_agent_hook(config.require_agent(name), delivered())).run_id


async def test_a_hung_gateway_times_out_as_maybe_sent(
    start_fleet: FleetStarter, http_client: aiohttp.ClientSession
) -> None:
    config, _ = await start_fleet(specs={"optimizer": {"hang": True}})
    client = client_for(http_client, config=GatewayConfig(connect_timeout=1.0, read_timeout=0.2))
    with pytest.raises(AgentUnavailable) as caught:
        await client.send_agent_hook(config.require_agent("optimizer"), delivered())
    assert caught.value.sent is True
    assert "may have arrived" in str(caught.value)


async def test_a_500_is_unavailable_and_maybe_sent(
    start_fleet: FleetStarter, http_client: aiohttp.ClientSession
) -> None:
    config, _ = await start_fleet(specs={"optimizer": {"fail_rate": 1.0}})
    with pytest.raises(AgentUnavailable) as caught:
        await client_for(http_client).send_agent_hook(config.require_agent("optimizer"), delivered())
    assert caught.value.sent is True and "HTTP 500" in str(caught.value)


async def test_a_missing_token_is_a_clear_error_before_anything_is_sent(http_client: aiohttp.ClientSession) -> None:
    agent = AgentConfig(name="manager", port=free_ports(1))
    with pytest.raises(MissingSecret, match="ATOMIZER_HOOKS_TOKEN_MANAGER"):
        await client_for(http_client, None).send_agent_hook(agent, delivered())


# --- not a gateway ---------------------------------------------------------------------------


@pytest.fixture
async def foreign_server() -> AsyncIterator[Callable[[web.Response], AgentConfig]]:
    """Some other HTTP server on a gateway's port: answers every request with one canned response."""
    runners: list[web.AppRunner] = []
    canned: dict[str, web.Response] = {}

    async def handler(request: web.Request) -> web.Response:
        template = canned["r"]
        return web.Response(status=template.status, body=template.body, content_type=template.content_type)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_ports(1)
    await web.TCPSite(runner, "127.0.0.1", port).start()
    runners.append(runner)

    def serve(response: web.Response) -> AgentConfig:
        canned["r"] = response
        return AgentConfig(name="optimizer", port=port)

    yield serve
    for item in runners:
        await item.cleanup()


@pytest.mark.parametrize(
    "response",
    [
        web.Response(status=200, text="<!doctype html><html>nginx</html>", content_type="text/html"),
        web.Response(status=200, text='{"ok":true,"runId":"abc', content_type="application/json"),
        web.Response(status=200, text='{"ok":true}', content_type="application/json"),
        web.Response(status=200, text="[1,2,3]", content_type="application/json"),
    ],
    ids=["html", "truncated-json", "no-run-id", "not-an-object"],
)
async def test_garbage_answers_are_protocol_errors(
    foreign_server: Callable[[web.Response], AgentConfig], http_client: aiohttp.ClientSession, response: web.Response
) -> None:
    agent = foreign_server(response)
    with pytest.raises(GatewayProtocolError) as caught:
        await client_for(http_client).send_agent_hook(agent, delivered())
    assert "HTTP 200" in str(caught.value)


# --- readiness ---------------------------------------------------------------------------------


async def test_readiness_on_a_mixed_fleet(start_fleet: FleetStarter, http_client: aiohttp.ClientSession) -> None:
    config, _ = await start_fleet(
        release={"webster": RELEASE_LEGACY, "secretary": RELEASE_LEGACY},
        specs={"auditor": {"down": True}, "optimizer": {"hang": True}, "study-builder": {"startup": None}},
    )
    client = client_for(http_client, config=GatewayConfig(probe_timeout=0.5))
    states = {a.name: await client.readiness(a) for a in config.agents}
    assert {n: r.state for n, r in states.items()} == {
        "manager": "ready", "tech-lead": "ready", "secretary": "ready", "auditor": "down",
        "optimizer": "down", "study-builder": "starting", "nx-expert": "ready", "webster": "ready",
    }  # fmt: skip
    assert states["manager"].release == RELEASE_CURRENT and states["manager"].honours_idempotency
    assert states["webster"].release is None and not states["webster"].honours_idempotency
    assert "no answer within 0.5 s" in states["optimizer"].detail
    assert "connection refused" in states["auditor"].detail


async def test_readiness_of_a_legacy_gateway_that_refuses_our_token(
    start_fleet: FleetStarter, http_client: aiohttp.ClientSession
) -> None:
    config, _ = await start_fleet(release=RELEASE_LEGACY, token="the-gateways-own-token-123456")
    ready = await client_for(http_client).readiness(config.require_agent("webster"))
    assert (ready.state, ready.failing) == ("degraded", ("hooks-token",))


async def test_readiness_never_probes_without_a_token(
    start_fleet: FleetStarter, http_client: aiohttp.ClientSession
) -> None:
    config, _ = await start_fleet(release=RELEASE_LEGACY)
    ready = await client_for(http_client, None).readiness(config.require_agent("webster"))
    assert (ready.state, ready.failing) == ("degraded", ("no-hooks-token",))
    # Twenty such probes would have locked the real token out for a minute; none were made.
    assert (await client_for(http_client).readiness(config.require_agent("webster"))).state == "ready"


async def test_a_hung_gateway_is_down_after_the_read_timeout_not_the_whole_probe_budget(
    start_fleet: FleetStarter, http_client: aiohttp.ClientSession
) -> None:
    config, _ = await start_fleet(specs={"optimizer": {"hang": True}})
    client = client_for(http_client, config=GatewayConfig(connect_timeout=1.0, read_timeout=0.2, probe_timeout=30.0))
    ready = await client.readiness(config.require_agent("optimizer"))
    assert (ready.state, ready.detail) == ("down", "no answer")  # the client's read timeout, not the 30 s budget
    assert ready.latency_s < 30


async def test_a_port_held_by_another_http_server_is_foreign(
    foreign_server: Callable[[web.Response], AgentConfig], http_client: aiohttp.ClientSession
) -> None:
    agent = foreign_server(web.Response(status=200, text="<html>grafana</html>", content_type="text/html"))
    ready = await client_for(http_client).readiness(agent)
    assert ready.state == "foreign"
    assert "not as an OpenClaw gateway" in ready.detail


# --- secrecy -----------------------------------------------------------------------------------


async def test_the_token_appears_in_no_log_line_error_or_repr(
    start_fleet: FleetStarter, http_client: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    config, _ = await start_fleet(specs={"auditor": {"down": True}, "optimizer": {"hang": True}})
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    right = client_for(http_client, HOOKS_TOKEN, GatewayConfig(read_timeout=0.2, probe_timeout=0.3))
    wrong = client_for(http_client, HOOKS_TOKEN[::-1], GatewayConfig(read_timeout=0.2))
    attempts: list[tuple[GatewayClient, str, AgentHook]] = [
        (right, "auditor", delivered()),
        (right, "optimizer", delivered()),
        (right, "manager", AgentHook("")),
        (right, "manager", AgentHook("x" * HOOK_BODY_LIMIT)),
        *[(wrong, "manager", delivered())] * 21,
    ]
    for client, name, hook in attempts:
        try:
            await client.send_agent_hook(config.require_agent(name), hook)
        except Exception as exc:
            texts += [str(exc), repr(exc), json.dumps(exc.__dict__, default=str)]
    for agent in config.agents:
        texts.append(repr(await right.readiness(agent)))
    texts.append(repr(right))
    everything = "\n".join(texts) + caplog.text
    # The failures really happened:
    assert any("rate limiting" in t for t in texts) and any("refused" in t for t in texts)
    assert HOOKS_TOKEN not in everything
    assert HOOKS_TOKEN[::-1] not in everything


async def test_a_gateway_without_the_discord_plugin_is_explained(
    start_fleet: FleetStarter, http_client: aiohttp.ClientSession
) -> None:
    config, fleet = await start_fleet(specs={"auditor": {"discord_plugin": False}})
    with pytest.raises(HookRejected) as caught:
        await client_for(http_client).send_agent_hook(config.require_agent("auditor"), delivered())
    assert caught.value.gateway_error.startswith("channel must be last (the gateway has no Discord channel plugin")
    assert "openclaw plugins install npm:@openclaw/discord" in str(caught.value)
    assert fleet.received() == []
