"""The simulated gateway answers as the real one does, for each release profile.

openclaw-hooks.md is the starting point; where the real gateways answered otherwise (make test-openclaw,
docs/openclaw-conformance.md) the tests assert what the real gateways do. Every test talks to real
loopback servers with plain httpx, as the gateway client will.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.simulator import (
    BODY_LIMIT,
    RELEASE_CURRENT,
    RELEASE_LEGACY,
    RELEASES,
    SimAgentSpec,
    SimulatedFleet,
    free_ports,
    parse_body,
    parse_release_option,
    serve_forever,
)

TOKEN = "hooks-secret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ACCEPTED = {RELEASE_CURRENT: 200, RELEASE_LEGACY: 202}
QUERY_TOKEN_TEXT = (
    "Hook token must be provided via Authorization: Bearer <token> or X-OpenClaw-Token header "
    "(query parameters are not allowed)."
)
by_release = pytest.mark.parametrize("release", RELEASES)


@dataclass
class FakeClock:
    """A clock the test moves by hand, for the 60 s bad-token window and the wake coalescing."""

    now: float = 1_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


MakeFleet = Callable[..., Awaitable[SimulatedFleet]]


@pytest.fixture
async def make_fleet() -> AsyncIterator[MakeFleet]:
    """Starts fleets on free ports (one agent "webster" unless told) and stops them all afterwards."""
    fleets: list[SimulatedFleet] = []

    async def make(
        release: str = RELEASE_CURRENT,
        *,
        agents: tuple[str, ...] = ("webster",),
        clock: Callable[[], float] = time.monotonic,
        record_path: Path | None = None,
        seed: int = 0,
        **spec_fields: Any,
    ) -> SimulatedFleet:
        base = free_ports(len(agents))
        specs = [
            SimAgentSpec(name=name, port=base + 4 * i, release=release, **spec_fields) for i, name in enumerate(agents)
        ]
        fleet = SimulatedFleet(specs, TOKEN, record_path=record_path, seed=seed, clock=clock)
        fleets.append(fleet)
        await fleet.start()
        return fleet

    yield make
    for fleet in fleets:
        await fleet.stop()


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5.0) as http:
        yield http


def hook(fleet: SimulatedFleet, route: str = "agent", agent: str = "webster") -> str:
    return f"{fleet.urls[agent]}/hooks/{route}"


def assert_accepted(response: httpx.Response, release: str) -> str:
    assert response.status_code == ACCEPTED[release], response.text
    answer = response.json()
    assert answer["ok"] is True
    uuid.UUID(answer["runId"])
    return str(answer["runId"])


def assert_json_error(response: httpx.Response, status: int, error: str) -> None:
    assert response.status_code == status, response.text
    assert response.json() == {"ok": False, "error": error}


# --- accepted runs and what the agent received --------------------------------------------------


@by_release
async def test_accepted_hook_answers_run_id_and_is_recorded(make_fleet: MakeFleet, client, release):
    fleet = await make_fleet(release)
    body = {"message": "status?", "name": "Heartbeat", "channel": "discord", "to": "channel:123"}
    before = time.time()
    response = await client.post(hook(fleet), json=body, headers=AUTH)
    run_id = assert_accepted(response, release)
    assert set(response.json()) == {"ok", "runId"}
    [received] = fleet.received("webster")
    assert received.agent == "webster"
    assert received.path == "/hooks/agent"
    assert received.run_id == run_id
    assert received.body == body
    assert received.idempotency_key is None
    assert before <= received.at <= time.time()


@by_release
async def test_x_openclaw_token_header_authenticates(make_fleet: MakeFleet, client, release):
    fleet = await make_fleet(release)
    response = await client.post(hook(fleet), json={"message": "hi"}, headers={"x-openclaw-token": TOKEN})
    assert_accepted(response, release)


@by_release
async def test_bearer_wins_over_x_openclaw_token(make_fleet: MakeFleet, client, release):
    fleet = await make_fleet(release)
    good_bearer = {"Authorization": f"Bearer {TOKEN}", "X-OpenClaw-Token": "wrong"}
    assert_accepted(await client.post(hook(fleet), json={"message": "hi"}, headers=good_bearer), release)
    bad_bearer = {"Authorization": "Bearer wrong", "X-OpenClaw-Token": TOKEN}
    response = await client.post(hook(fleet), json={"message": "hi"}, headers=bad_bearer)
    assert (response.status_code, response.text) == (401, "Unauthorized")
    assert len(fleet.received()) == 1


@by_release
@pytest.mark.parametrize(
    "headers",
    [pytest.param({}, id="missing"), pytest.param({"Authorization": "Bearer nope"}, id="bad-bearer")],
)
async def test_missing_or_bad_token_is_401_text(make_fleet: MakeFleet, client, release, headers):
    fleet = await make_fleet(release)
    response = await client.post(hook(fleet), json={"message": "hi"}, headers=headers)
    assert (response.status_code, response.text) == (401, "Unauthorized")
    assert response.headers["content-type"].startswith("text/plain")
    assert fleet.received() == []


@by_release
@pytest.mark.parametrize("route", ["agent", "wake"])
async def test_token_in_query_is_refused_even_with_a_good_header(make_fleet: MakeFleet, client, release, route):
    fleet = await make_fleet(release)
    body = {"message": "hi", "text": "hi"}
    response = await client.post(hook(fleet, route), params={"token": TOKEN}, json=body, headers=AUTH)
    assert (response.status_code, response.text) == (400, QUERY_TOKEN_TEXT)
    assert fleet.received() == []


@by_release
@pytest.mark.parametrize("param", ["hookToken", "hook_token", "Token", "access_token"])
async def test_other_query_keys_are_ignored(make_fleet: MakeFleet, client, release, param):
    # Measured on both releases: only `?token=` is refused; any other key is ignored, the header decides.
    fleet = await make_fleet(release)
    assert_accepted(
        await client.post(hook(fleet), params={param: TOKEN}, json={"message": "hi"}, headers=AUTH), release
    )
    response = await client.post(hook(fleet), params={param: TOKEN}, json={"message": "hi"})
    assert (response.status_code, response.text) == (401, "Unauthorized")


@by_release
async def test_twenty_bad_tokens_then_429_until_a_valid_token_resets(make_fleet: MakeFleet, client, release):
    clock = FakeClock()
    fleet = await make_fleet(release, clock=clock)
    bad = {"Authorization": "Bearer wrong"}
    for _ in range(20):
        assert (await client.post(hook(fleet), json={"message": "x"}, headers=bad)).status_code == 401
    for headers in (bad, {}):  # a missing token counts the same
        limited = await client.post(hook(fleet), json={"message": "x"}, headers=headers)
        assert (limited.status_code, limited.text) == (429, "Too Many Requests")
        assert limited.headers["Retry-After"] == "60"

    assert_accepted(await client.post(hook(fleet), json={"message": "x"}, headers=AUTH), release)
    assert (await client.post(hook(fleet), json={"message": "x"}, headers=bad)).status_code == 401


@by_release
async def test_bad_token_window_is_sixty_seconds_on_the_clock(make_fleet: MakeFleet, client, release):
    clock = FakeClock()
    fleet = await make_fleet(release, clock=clock)
    bad = {"Authorization": "Bearer wrong"}
    for _ in range(20):
        await client.post(hook(fleet), json={"message": "x"}, headers=bad)
        clock.advance(1.0)
    assert (await client.post(hook(fleet), json={"message": "x"}, headers=bad)).status_code == 429
    clock.advance(40.0)  # the first bad token is now 60 s old
    assert (await client.post(hook(fleet), json={"message": "x"}, headers=bad)).status_code == 401


# --- body validation ----------------------------------------------------------------------------


@by_release
@pytest.mark.parametrize(
    ("content", "error"),
    [
        pytest.param(b"", "message required", id="empty-body"),
        pytest.param(b"{}", "message required", id="empty-object"),
        pytest.param(b"[1, 2]", "message required", id="not-an-object"),
        pytest.param(b'{"name": "Hook"}', "message required", id="no-message"),
        pytest.param(b'{"message": "  "}', "message required", id="blank-message"),
        pytest.param(b'{"message": 5}', "message required", id="message-not-a-string"),
        pytest.param(b'{"message": "hi", "model": ""}', "model required", id="empty-model"),
        pytest.param(b'{"message": "hi", "model": null}', "model required", id="null-model"),
        pytest.param(
            b'{"message": "hi", "channel": "", "to": "channel:1"}', "channel must be last|discord", id="empty-channel"
        ),
        pytest.param(
            b'{"message": "hi", "channel": "telegram", "to": "channel:1"}',
            "channel must be last|discord",
            id="channel-not-loaded",
        ),
    ],
)
async def test_body_refused_with_400_json(make_fleet: MakeFleet, client, release, content, error):
    fleet = await make_fleet(release)
    response = await client.post(hook(fleet), content=content, headers=AUTH)
    assert_json_error(response, 400, error)
    assert fleet.received() == []


@by_release
@pytest.mark.parametrize("route", ["agent", "wake"])
@pytest.mark.parametrize(
    ("content", "message"),
    [  # measured on both real gateways
        (b"{not json", "Expected property name or '}' in JSON at position 1 (line 1 column 2)"),
        (b'{"message": ', "Unexpected end of JSON input"),
        (b"nope", "Unexpected token 'o', \"nope\" is not valid JSON"),
        (b"NaN", '"NaN" is not valid JSON'),
    ],
)
async def test_invalid_json_is_400_with_node_s_parser_message(
    make_fleet: MakeFleet, client, release, route, content, message
):
    fleet = await make_fleet(release)
    response = await client.post(hook(fleet, route), content=content, headers=AUTH)
    # Measured: 2026.2.12 prefixes JSON.parse's message with "SyntaxError: ", 2026.9.6 does not.
    assert_json_error(response, 400, message if release == RELEASE_CURRENT else f"SyntaxError: {message}")


@pytest.mark.parametrize(
    ("text", "message"),
    [  # JSON.parse of Node 24.21 (the gateways' runtime), input already trimmed as the gateways do
        ('{"message": "hi"', "Expected ',' or '}' after property value in JSON at position 16 (line 1 column 17)"),
        ('{"message" "hi"}', "Expected ':' after property name in JSON at position 11 (line 1 column 12)"),
        ('{"a":1,}', "Expected double-quoted property name in JSON at position 7 (line 1 column 8)"),
        ("[1 2]", "Expected ',' or ']' after array element in JSON at position 3 (line 1 column 4)"),
        ('{"a":1} x', "Unexpected non-whitespace character after JSON at position 8 (line 1 column 9)"),
        ('"abc', "Unterminated string in JSON at position 4 (line 1 column 5)"),
        ('{"a":"x\ny"}', "Bad control character in string literal in JSON at position 7 (line 1 column 8)"),
        ('{"a":"\\q"}', "Bad escaped character in JSON at position 7 (line 1 column 8)"),
        ('{"a":"\\u12"}', "Bad Unicode escape in JSON at position 10 (line 1 column 11)"),
        ('{"a":-}', "No number after minus sign in JSON at position 6 (line 1 column 7)"),
        ('{"a":01}', "Unexpected number in JSON at position 6 (line 1 column 7)"),
        ('{"a":1.}', "Unterminated fractional number in JSON at position 7 (line 1 column 8)"),
        ("1e+", "Exponent part is missing a number in JSON at position 3 (line 1 column 4)"),
        ('tru"x"', "Unexpected string in JSON at position 3 (line 1 column 4)"),
        ("tru", "Unexpected end of JSON input"),
        ("Infinity", '"Infinity" is not valid JSON'),
        ("-Infinity", "No number after minus sign in JSON at position 1 (line 1 column 2)"),
        ('{"a":}', 'Unexpected token \'}\', "{"a":}" is not valid JSON'),
        ("xyzxyzxyzxyzxyzxyzxyzxyzxyz", "Unexpected token 'x', \"xyzxyzxyzx\"... is not valid JSON"),
        ('{"a":1,"b":2,"c":3,"d":@}', 'Unexpected token \'@\', ...""c":3,"d":@}" is not valid JSON'),
        ("[\n1\n2]", "Expected ',' or ']' after array element in JSON at position 4 (line 3 column 1)"),
        ('"\U0001f600\U0001f600" x', "Unexpected non-whitespace character after JSON at position 7 (line 1 column 8)"),
    ],
)
def test_json_errors_are_worded_as_node_s(text, message):
    assert parse_body(text.encode()) == (None, message)


@pytest.mark.parametrize(
    ("content", "value"),
    [(b"", {}), (b" \n\t", {}), (b'\xef\xbb\xbf{"a":1}\xc2\xa0', {"a": 1}), (b'{"a":"\xff"}', {"a": "\ufffd"})],
)
def test_bodies_are_decoded_and_trimmed_as_node_does(content, value):
    assert parse_body(content) == (value, None)


@by_release
@pytest.mark.parametrize("agent_id", ["webster", "main"])
async def test_own_agent_id_and_main_are_known(make_fleet: MakeFleet, client, release, agent_id):
    fleet = await make_fleet(release)
    response = await client.post(hook(fleet), json={"message": "hi", "agentId": agent_id}, headers=AUTH)
    assert_accepted(response, release)


CHANNEL_PAIR_ERROR = "channel and to must be set together for hook delivery"
CONCRETE_CHANNEL_ERROR = "channel must name a concrete channel for hook delivery"
NOT_LOADED_ERROR = "channel must be last|discord"  # "last" and the loaded channel plugins
SWITCH = "set hooks.allowRequestSessionKey=true to enable"
SESSION_KEY_CURRENT = f"sessionKey is disabled for externally supplied hook payload values; {SWITCH}"
SESSION_KEY_LEGACY = f"sessionKey is disabled for external /hooks/agent payloads; {SWITCH}"
EMPTY_TO = "to must be a non-empty string for hook delivery"
UNKNOWN_AGENT = 'unknown agentId "nope"'


def row(body: dict[str, Any], current: str | None, legacy: str | None, name: str) -> Any:
    return pytest.param(body, {RELEASE_CURRENT: current, RELEASE_LEGACY: legacy}, id=name)


# Measured on the real gateways (make test-openclaw and a probe of both releases), except "persistent"
# (read in the 2026.9.6 source: a persistent session needs a sessionKey, which is refused anyway).
@pytest.mark.parametrize(
    ("body", "expected"),
    [
        row({"message": "hi", "deliver": True, "channel": "discord"}, CHANNEL_PAIR_ERROR, None, "channel-without-to"),
        row({"message": "hi", "to": "user:456"}, CHANNEL_PAIR_ERROR, None, "to-without-channel"),
        # openclaw-hooks.md listed this 400 for both releases: 2026.2.12 accepts it.
        row({"message": "hi", "channel": "last", "to": "channel:123"}, CONCRETE_CHANNEL_ERROR, None, "channel-last"),
        row({"message": "hi", "channel": "discord", "to": "123456789012345678"}, None, None, "bare-numeric-to"),
        row({"message": "hi", "channel": " Discord ", "to": "channel:1"}, None, None, "channel-normalized"),
        row({"message": "hi", "channel": "discord", "to": ""}, EMPTY_TO, None, "empty-to"),
        # 2026.9.6 skips every delivery check when deliver is false; 2026.2.12 still checks the channel.
        row(
            {"message": "hi", "deliver": False, "channel": "telegram", "to": "c:1"},
            None,
            NOT_LOADED_ERROR,
            "no-delivery-bad-channel",
        ),
        row({"message": "hi", "deliver": False, "channel": "discord"}, None, None, "no-delivery-channel-without-to"),
        # openclaw-hooks.md listed this 400 for both releases: 2026.2.12 runs it on its default agent.
        row({"message": "hi", "agentId": "nope"}, UNKNOWN_AGENT, None, "unknown-agent-id"),
        row({"message": "hi", "agentId": "  "}, "agentId must be a non-empty string", None, "blank-agent-id"),
        row({"message": "hi", "sessionKey": "k"}, SESSION_KEY_CURRENT, SESSION_KEY_LEGACY, "session-key"),
        row({"message": "hi", "sessionKey": "  "}, None, None, "blank-session-key"),
        row(
            {"message": "hi", "agentId": "nope", "sessionKey": "k"},
            UNKNOWN_AGENT,
            SESSION_KEY_LEGACY,
            "agent-id-before-session-key",
        ),
        row(
            {"message": "hi", "waitForCompletion": "yes"}, "waitForCompletion must be boolean", None, "wait-not-boolean"
        ),
        row(
            {"message": "hi", "sessionMode": "bogus"},
            "sessionMode must be isolated or persistent",
            None,
            "bad-session-mode",
        ),
        row(
            {"message": "hi", "sessionMode": "persistent"},
            "sessionKey is required when sessionMode is persistent",
            None,
            "persistent",
        ),
    ],
)
@by_release
async def test_rows_where_the_releases_differ(make_fleet: MakeFleet, client, release, body, expected):
    """None = accepted and recorded as sent (on 2026.2.12 the failure comes later, out of sight)."""
    fleet = await make_fleet(release)
    response = await client.post(hook(fleet), json=body, headers=AUTH)
    error = expected[release]
    if error is None:
        assert_accepted(response, release)
        assert [h.body for h in fleet.received()] == [body]
    else:
        assert_json_error(response, 400, error)
        assert fleet.received() == []


# --- the Discord channel plugin -----------------------------------------------------------------


@by_release
async def test_without_the_discord_plugin_every_delivered_hook_is_refused(make_fleet: MakeFleet, client, release):
    # Measured on both releases: `channel` must name a loaded channel plugin; without Discord's only "last" is.
    fleet = await make_fleet(release, discord_plugin=False)
    for channel in ("discord", "telegram", ""):
        body = {"message": "hi", "channel": channel, "to": "channel:123"}
        assert_json_error(await client.post(hook(fleet), json=body, headers=AUTH), 400, "channel must be last")
    # What needs no channel still works.
    assert_accepted(await client.post(hook(fleet), json={"message": "hi"}, headers=AUTH), release)
    quiet = await client.post(hook(fleet), json={"message": "hi", "deliver": False, "channel": "discord"}, headers=AUTH)
    if release == RELEASE_CURRENT:  # deliver:false skips the delivery checks
        assert_accepted(quiet, release)
    else:
        assert_json_error(quiet, 400, "channel must be last")
    last = await client.post(hook(fleet), json={"message": "hi", "channel": "last", "to": "c:1"}, headers=AUTH)
    if release == RELEASE_CURRENT:
        assert_json_error(last, 400, CONCRETE_CHANNEL_ERROR)
    else:
        assert_accepted(last, release)

    fleet.set_discord_plugin("webster", True)  # loaded now: the same hook is accepted
    delivered = {"message": "hi", "channel": "discord", "to": "channel:123"}
    assert_accepted(await client.post(hook(fleet), json=delivered, headers=AUTH), release)
    assert fleet.spec("webster").discord_plugin is True
    fleet.set_discord_plugin("webster", False)
    assert_json_error(await client.post(hook(fleet), json=delivered, headers=AUTH), 400, "channel must be last")


@by_release
async def test_body_at_the_limit_is_accepted(make_fleet: MakeFleet, client, release):
    fleet = await make_fleet(release)
    skeleton = json.dumps({"message": ""}).encode()
    content = json.dumps({"message": "x" * (BODY_LIMIT - len(skeleton))}).encode()
    assert len(content) == BODY_LIMIT
    assert_accepted(await client.post(hook(fleet), content=content, headers=AUTH), release)


async def test_current_body_over_the_limit_is_413_json(make_fleet: MakeFleet, client):
    fleet = await make_fleet(RELEASE_CURRENT)
    response = await client.post(hook(fleet), content=b"x" * (BODY_LIMIT + 1), headers=AUTH)
    assert_json_error(response, 413, "payload too large")


async def test_current_chunked_body_over_the_limit_is_413_json(make_fleet: MakeFleet, client):
    """Without a Content-Length the gateway still stops reading at the cap."""
    fleet = await make_fleet(RELEASE_CURRENT)

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(5):
            yield b"x" * 65_536

    response = await client.post(hook(fleet), content=chunks(), headers=AUTH)
    assert_json_error(response, 413, "payload too large")
    assert fleet.received() == []


@pytest.mark.parametrize("size", [BODY_LIMIT + 1, 2_000_000])
async def test_legacy_body_over_the_limit_drops_the_connection(make_fleet: MakeFleet, client, size):
    fleet = await make_fleet(RELEASE_LEGACY)
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        await client.post(hook(fleet), content=b"x" * size, headers=AUTH)
    assert fleet.received() == []
    assert_accepted(await client.post(hook(fleet), json={"message": "hi"}, headers=AUTH), RELEASE_LEGACY)


# --- idempotency --------------------------------------------------------------------------------

KEY_SOURCES = [
    pytest.param(lambda key: ({"idempotencyKey": key}, {}), id="body"),
    pytest.param(lambda key: ({}, {"Idempotency-Key": key}), id="Idempotency-Key"),
    pytest.param(lambda key: ({}, {"X-OpenClaw-Idempotency-Key": key}), id="X-OpenClaw-Idempotency-Key"),
]


@pytest.mark.parametrize("source", KEY_SOURCES)
async def test_current_replays_the_same_run_for_a_repeated_key(make_fleet: MakeFleet, client, source):
    fleet = await make_fleet(RELEASE_CURRENT)
    extra_body, extra_headers = source("delegation-42")
    request = {"json": {"message": "hi", **extra_body}, "headers": {**AUTH, **extra_headers}}
    first = assert_accepted(await client.post(hook(fleet), **request), RELEASE_CURRENT)
    second = assert_accepted(await client.post(hook(fleet), **request), RELEASE_CURRENT)
    assert first == second
    assert [(h.run_id, h.idempotency_key) for h in fleet.received()] == [(first, "delegation-42")]

    other_body, other_headers = source("delegation-43")
    other = await client.post(hook(fleet), json={"message": "hi", **other_body}, headers={**AUTH, **other_headers})
    assert assert_accepted(other, RELEASE_CURRENT) != first
    assert len(fleet.received()) == 2


@pytest.mark.parametrize("source", KEY_SOURCES)
async def test_legacy_ignores_idempotency_keys(make_fleet: MakeFleet, client, source):
    fleet = await make_fleet(RELEASE_LEGACY)
    extra_body, extra_headers = source("delegation-42")
    request = {"json": {"message": "hi", **extra_body}, "headers": {**AUTH, **extra_headers}}
    first = assert_accepted(await client.post(hook(fleet), **request), RELEASE_LEGACY)
    second = assert_accepted(await client.post(hook(fleet), **request), RELEASE_LEGACY)
    assert first != second
    assert [h.run_id for h in fleet.received()] == [first, second]


async def test_a_restart_forgets_idempotency_keys(make_fleet: MakeFleet, client):
    """The key cache lives in the gateway process, so a crash loses it."""
    fleet = await make_fleet(RELEASE_CURRENT)
    request = {"json": {"message": "hi", "idempotencyKey": "k"}, "headers": AUTH}
    first = assert_accepted(await client.post(hook(fleet), **request), RELEASE_CURRENT)
    await fleet.restart("webster")
    assert assert_accepted(await client.post(hook(fleet), **request), RELEASE_CURRENT) != first


async def test_current_forgets_a_settled_run_five_minutes_after_it_settled(make_fleet: MakeFleet, client):
    """2026.9.6 keeps a settled run's key 5 min (orchestration.md); an unsettled one has no expiry."""
    clock = FakeClock()
    fleet = await make_fleet(RELEASE_CURRENT, clock=clock)
    request = {"json": {"message": "hi", "idempotencyKey": "k"}, "headers": AUTH}
    first = assert_accepted(await client.post(hook(fleet), **request), RELEASE_CURRENT)  # settles at once
    clock.advance(299.0)
    assert assert_accepted(await client.post(hook(fleet), **request), RELEASE_CURRENT) == first
    clock.advance(1.0)
    second = assert_accepted(await client.post(hook(fleet), **request), RELEASE_CURRENT)
    assert second != first and len(fleet.received()) == 2
    fleet.spec("webster").hold_runs = True
    held = {"json": {"message": "held", "idempotencyKey": "h"}, "headers": AUTH}
    third = assert_accepted(await client.post(hook(fleet), **held), RELEASE_CURRENT)
    clock.advance(3600.0)  # not settled: kept
    assert assert_accepted(await client.post(hook(fleet), **held), RELEASE_CURRENT) == third
    fleet.settle("webster")
    clock.advance(300.0)
    assert assert_accepted(await client.post(hook(fleet), **held), RELEASE_CURRENT) != third


async def test_current_replays_only_the_same_request(make_fleet: MakeFleet, client):
    """2026.9.6 keys its replay cache on the key and what the request asks for (its source)."""
    fleet = await make_fleet(RELEASE_CURRENT)

    async def send(message: str) -> str:
        response = await client.post(hook(fleet), json={"message": message}, headers={**AUTH, "Idempotency-Key": "k"})
        return assert_accepted(response, RELEASE_CURRENT)

    first, other = await send("one"), await send("two")
    assert other != first
    assert (await send("two"), await send("one")) == (other, first)
    assert len(fleet.received()) == 2


async def test_current_reads_the_key_from_the_headers_first(make_fleet: MakeFleet, client):
    fleet = await make_fleet(RELEASE_CURRENT)
    body = {"message": "hi", "idempotencyKey": "in-body"}
    await client.post(hook(fleet), json=body, headers={**AUTH, "Idempotency-Key": "in-header"})
    await client.post(hook(fleet), json={"message": "hi"}, headers={**AUTH, "X-OpenClaw-Idempotency-Key": "k2"})
    too_long = "k" * 257  # over 256 characters a key counts as none
    await client.post(hook(fleet), json={"message": "hi", "idempotencyKey": too_long}, headers=AUTH)
    await client.post(hook(fleet), json={"message": "hi", "idempotencyKey": too_long}, headers=AUTH)
    assert [h.idempotency_key for h in fleet.received()] == ["in-header", "k2", None, None]


# --- completion and model credentials -----------------------------------------------------------


async def test_current_wait_for_completion_reports_the_run_outcome(make_fleet: MakeFleet, client):
    fleet = await make_fleet(RELEASE_CURRENT)
    body = {"message": "hi", "waitForCompletion": True}
    answer = (await client.post(hook(fleet), json=body, headers=AUTH)).json()
    # Never observed (the conformance runs have no model credentials): the shape the 2026.9.6 source gives.
    assert answer["completion"] == {"status": "ok", "replyDisposition": "visible"}

    fleet.set_model_ok("webster", False)
    response = await client.post(hook(fleet), json=body, headers=AUTH)
    assert_accepted(response, RELEASE_CURRENT)  # the hook is still accepted; the run fails inside the gateway
    # Measured: no error text, only the status and an empty reply.
    assert response.json()["completion"] == {"status": "error", "replyDisposition": "empty"}
    assert len(fleet.received()) == 2


@pytest.mark.parametrize("model_ok", [True, False])
async def test_legacy_ignores_wait_for_completion(make_fleet: MakeFleet, client, model_ok):
    # Measured: 2026.2.12 answers 202 at once, without a completion object.
    fleet = await make_fleet(RELEASE_LEGACY, model_ok=model_ok)
    response = await client.post(hook(fleet), json={"message": "hi", "waitForCompletion": True}, headers=AUTH)
    assert_accepted(response, RELEASE_LEGACY)
    assert set(response.json()) == {"ok", "runId"}


async def test_expired_model_without_waiting_looks_like_success(make_fleet: MakeFleet, client):
    fleet = await make_fleet(RELEASE_CURRENT, model_ok=False)
    response = await client.post(hook(fleet), json={"message": "hi"}, headers=AUTH)
    assert_accepted(response, RELEASE_CURRENT)
    assert "completion" not in response.json()


# --- wake ---------------------------------------------------------------------------------------


async def wake_outcomes(client, fleet: SimulatedFleet, clock: FakeClock, *steps: tuple[float, str, str]) -> list[str]:
    """(seconds to wait first, mode, text) per wake; the eventOutcome of each answer."""
    outcomes = []
    for wait, mode, text in steps:
        clock.advance(wait)
        response = await client.post(hook(fleet, "wake"), json={"text": text, "mode": mode}, headers=AUTH)
        assert response.status_code == 200
        assert response.json()["mode"] == mode
        outcomes.append(response.json()["eventOutcome"])
    return outcomes


async def test_current_wake_coalesces_a_text_still_pending(make_fleet: MakeFleet, client):
    """As measured on 2026.9.6: a "now" wake drains the pending events about 0.25 s later."""
    clock = FakeClock()
    fleet = await make_fleet(RELEASE_CURRENT, clock=clock)
    steps = [(0, "next-heartbeat", "x"), (0, "now", "x"), (0.1, "now", "x"), (0.25, "now", "x")]
    assert await wake_outcomes(client, fleet, clock, *steps) == ["queued", "coalesced", "coalesced", "queued"]
    received = fleet.received("webster")
    assert [(h.path, h.run_id, h.body["text"]) for h in received] == [("/hooks/wake", None, "x")] * 4


async def test_current_wake_coalesces_only_the_same_text_as_the_last_pending_one(make_fleet: MakeFleet, client):
    clock = FakeClock()
    fleet = await make_fleet(RELEASE_CURRENT, clock=clock)
    steps = [(0, "next-heartbeat", t) for t in ("e", "e", "f", "e")] + [(0, "now", "c")]
    assert await wake_outcomes(client, fleet, clock, *steps) == ["queued", "coalesced", "queued", "queued", "queued"]


async def test_current_next_heartbeat_wakes_stay_pending_until_a_restart(make_fleet: MakeFleet, client):
    clock = FakeClock()
    fleet = await make_fleet(RELEASE_CURRENT, clock=clock)
    steps = [(0, "next-heartbeat", "x"), (600, "next-heartbeat", "x")]
    assert await wake_outcomes(client, fleet, clock, *steps) == ["queued", "coalesced"]
    await fleet.restart("webster")  # pending events live in the process
    assert await wake_outcomes(client, fleet, clock, (0, "next-heartbeat", "x")) == ["queued"]


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"text": "x", "sessionKey": "k"}, SESSION_KEY_CURRENT),
        ({"text": "x", "sessionKey": "k", "mode": "next-heartbeat"}, "sessionKey requires mode=now"),
        ({"text": "x", "sessionKey": " "}, "sessionKey must be a non-empty string"),
        ({"text": "x", "agentId": "nope"}, 'unknown agentId "nope"'),
        ({"text": "x", "agentId": ""}, "agentId must be a non-empty string"),
    ],
)
async def test_current_wake_checks_agent_id_and_session_key(make_fleet: MakeFleet, client, body, error):
    fleet = await make_fleet(RELEASE_CURRENT)  # from the 2026.9.6 source; 2026.2.12 reads only text and mode
    assert_json_error(await client.post(hook(fleet, "wake"), json=body, headers=AUTH), 400, error)
    legacy = await make_fleet(RELEASE_LEGACY)
    response = await client.post(hook(legacy, "wake"), json=body, headers=AUTH)
    assert (response.status_code, response.json()["ok"]) == (200, True)


async def test_current_wake_echoes_next_heartbeat_mode(make_fleet: MakeFleet, client):
    fleet = await make_fleet(RELEASE_CURRENT)
    wake = {"text": "later", "mode": "next-heartbeat"}
    response = await client.post(hook(fleet, "wake"), json=wake, headers=AUTH)
    assert response.json() == {"ok": True, "mode": "next-heartbeat", "eventOutcome": "queued"}


async def test_legacy_wake_answers_without_event_outcome(make_fleet: MakeFleet, client):
    fleet = await make_fleet(RELEASE_LEGACY)
    wake = {"text": "check the board", "mode": "now"}
    for _ in range(2):
        response = await client.post(hook(fleet, "wake"), json=wake, headers=AUTH)
        assert (response.status_code, response.json()) == (200, {"ok": True, "mode": "now"})
    assert [h.run_id for h in fleet.received()] == [None, None]


@by_release
@pytest.mark.parametrize("body", [{}, {"mode": "now"}, {"text": ""}])
async def test_wake_without_text_is_400(make_fleet: MakeFleet, client, release, body):
    fleet = await make_fleet(release)
    assert_json_error(await client.post(hook(fleet, "wake"), json=body, headers=AUTH), 400, "text required")
    assert fleet.received() == []


# --- methods, disabled hooks, unknown paths -----------------------------------------------------


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, AUTH])
async def test_current_get_hook_is_405_before_auth(make_fleet: MakeFleet, client, headers):
    fleet = await make_fleet(RELEASE_CURRENT)
    response = await client.get(hook(fleet), headers=headers)
    assert response.status_code == 405
    assert response.headers["Allow"] == "POST"


@pytest.mark.parametrize(("headers", "status"), [({}, 401), ({"Authorization": "Bearer wrong"}, 401), (AUTH, 405)])
async def test_legacy_get_hook_checks_the_token_first(make_fleet: MakeFleet, client, headers, status):
    fleet = await make_fleet(RELEASE_LEGACY)
    response = await client.get(hook(fleet), headers=headers)
    assert response.status_code == status
    if status == 405:
        assert response.headers["Allow"] == "POST"
    else:
        assert response.text == "Unauthorized"


@by_release
@pytest.mark.parametrize("route", ["agent", "wake"])
@pytest.mark.parametrize("headers", [{}, AUTH])
async def test_disabled_hooks_are_404_not_found(make_fleet: MakeFleet, client, release, route, headers):
    fleet = await make_fleet(release, hooks_enabled=False)
    response = await client.post(hook(fleet, route), json={"message": "hi", "text": "hi"}, headers=headers)
    assert (response.status_code, response.text) == (404, "Not Found")


@by_release
async def test_unknown_hook_route_is_404_after_auth(make_fleet: MakeFleet, client, release):
    fleet = await make_fleet(release)
    assert (await client.post(hook(fleet, "nope"), json={}, headers=AUTH)).status_code == 404
    assert (await client.post(hook(fleet, "nope"), json={})).status_code == 401
    base = fleet.urls["webster"] + "/hooks"  # the hooks base itself (measured)
    assert (await client.post(base, json={}, headers=AUTH)).status_code == 404
    # Both sources read the body before looking the route up.
    response = await client.post(hook(fleet, "nope"), content=b"{", headers=AUTH)
    assert response.status_code == 400 and "JSON" in response.json()["error"]


@by_release
@pytest.mark.parametrize("path", ["/hooks", "/hooks/nope", "/hooks/wake"])
async def test_get_on_any_hooks_path_is_405(make_fleet: MakeFleet, client, release, path):
    # Measured: every path under hooks.path refuses GET (2026.2.12 after the token check).
    fleet = await make_fleet(release)
    response = await client.get(fleet.urls["webster"] + path, headers=AUTH)
    assert (response.status_code, response.headers["Allow"]) == (405, "POST")
    anonymous = await client.get(fleet.urls["webster"] + path)
    assert anonymous.status_code == (405 if release == RELEASE_CURRENT else 401)


@by_release
@pytest.mark.parametrize("path", ["/", "/nope", "/hooks", "/api/status"])
async def test_unknown_paths_answer_the_control_ui_html(make_fleet: MakeFleet, client, release, path):
    fleet = await make_fleet(release)
    response = await client.get(fleet.urls["webster"] + path, headers=AUTH if path == "/hooks" else {})
    if path == "/hooks":  # the hooks base itself belongs to the hooks handler, which takes only POST (measured)
        assert response.status_code == 405
        return
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.text.startswith("<!doctype html><html><head>")
    assert "<title>OpenClaw Control</title>" in response.text


@pytest.mark.parametrize("path", ["/healthz", "/health", "/readyz", "/startupz"])
async def test_legacy_has_no_health_routes_only_html(make_fleet: MakeFleet, client, path):
    fleet = await make_fleet(RELEASE_LEGACY)
    response = await client.get(fleet.urls["webster"] + path)
    assert response.status_code == 200
    assert "<title>OpenClaw Control</title>" in response.text


async def test_custom_hooks_path(make_fleet: MakeFleet, client):
    fleet = await make_fleet(RELEASE_CURRENT, hooks_path="/gw-hooks")
    url = fleet.urls["webster"]
    assert_accepted(await client.post(f"{url}/gw-hooks/agent", json={"message": "hi"}, headers=AUTH), RELEASE_CURRENT)
    assert (await client.post(f"{url}/hooks/agent", json={"message": "hi"}, headers=AUTH)).status_code == 404
    assert fleet.received()[0].path == "/gw-hooks/agent"


# --- start-up -----------------------------------------------------------------------------------


async def test_current_start_up_window_then_ready(make_fleet: MakeFleet, client):
    clock = FakeClock()
    fleet = await make_fleet(RELEASE_CURRENT, clock=clock, startup=None)
    url = fleet.urls["webster"]

    for route, body in (("agent", {"message": "hi"}), ("wake", {"text": "hi"})):
        starting = await client.post(hook(fleet, route), json=body, headers=AUTH)
        assert (starting.status_code, starting.text) == (503, "Plugin runtime is starting")
    for path in ("/healthz", "/health"):
        live = await client.get(url + path)
        assert (live.status_code, live.json()) == (200, {"ok": True, "status": "live"})
    ready = await client.get(url + "/readyz")
    assert (ready.status_code, ready.json()) == (503, {"ready": False, "failing": ["startup-sidecars"]})
    startup = await client.get(url + "/startupz")
    assert (startup.status_code, startup.json()) == (503, {"ok": False, "status": "starting"})
    assert fleet.received() == []

    clock.advance(2.5)
    fleet.finish_startup("webster")
    assert_accepted(await client.post(hook(fleet), json={"message": "hi"}, headers=AUTH), RELEASE_CURRENT)
    ready = await client.get(url + "/readyz")
    assert (ready.status_code, ready.json()) == (200, {"ready": True, "failing": [], "uptimeMs": 2500})
    startup = await client.get(url + "/startupz")
    assert startup.status_code == 200
    assert startup.json() == {"ok": True, "status": "started", "version": "2026.9.6", "uptimeMs": 2500}
    live = await client.get(url + "/healthz")
    assert (live.status_code, live.json()) == (200, {"ok": True, "status": "live"})


async def test_current_start_up_with_hooks_already_open(make_fleet: MakeFleet, client):
    """What the conformance runs measured on 2026.9.6: no 503 from hooks, /readyz still 503 starting."""
    fleet = await make_fleet(RELEASE_CURRENT, startup=None, starting_hooks="open")
    url = fleet.urls["webster"]
    assert_json_error(await client.post(hook(fleet), json={}, headers=AUTH), 400, "message required")
    assert_accepted(await client.post(hook(fleet), json={"message": "hi"}, headers=AUTH), RELEASE_CURRENT)
    assert (await client.post(hook(fleet), json={"message": "hi"})).status_code == 401
    ready = await client.get(url + "/readyz")
    assert (ready.status_code, ready.json()) == (503, {"ready": False, "failing": ["startup-sidecars"]})
    assert (await client.get(url + "/startupz")).status_code == 503
    fleet.finish_startup("webster")
    assert (await client.get(url + "/readyz")).status_code == 200


@pytest.mark.parametrize(
    ("path", "starting", "started"),
    [("/healthz", 200, 200), ("/health", 200, 200), ("/readyz", 503, 200), ("/startupz", 503, 200)],
)
async def test_current_health_routes_answer_head(make_fleet: MakeFleet, client, path, starting, started):
    fleet = await make_fleet(RELEASE_CURRENT, startup=None)
    response = await client.head(fleet.urls["webster"] + path)
    assert (response.status_code, response.content) == (starting, b"")
    fleet.finish_startup("webster")
    response = await client.head(fleet.urls["webster"] + path)
    assert (response.status_code, response.content) == (started, b"")
    assert response.headers["content-type"].startswith("application/json")


async def test_current_restart_starts_a_new_window(make_fleet: MakeFleet, client):
    fleet = await make_fleet(RELEASE_CURRENT, startup=None)
    fleet.finish_startup("webster")
    assert (await client.get(fleet.urls["webster"] + "/readyz")).status_code == 200
    await fleet.restart("webster")
    assert (await client.get(fleet.urls["webster"] + "/readyz")).status_code == 503
    assert (await client.post(hook(fleet), json={"message": "hi"}, headers=AUTH)).status_code == 503


async def test_current_timed_start_up_stays_starting_and_stops_cleanly(make_fleet: MakeFleet, client):
    """A timed window is scheduled on the loop; stopping before it ends must not leave it behind."""
    fleet = await make_fleet(RELEASE_CURRENT, startup=30.0)
    assert (await client.get(fleet.urls["webster"] + "/startupz")).status_code == 503
    await asyncio.wait_for(fleet.stop(), 2.0)


async def test_legacy_port_opens_only_when_start_up_ends(make_fleet: MakeFleet, client):
    fleet = await make_fleet(RELEASE_LEGACY, startup=None)
    for path in ("/healthz", "/hooks/agent"):
        with pytest.raises(httpx.ConnectError):
            await client.post(fleet.urls["webster"] + path, json={"message": "hi"}, headers=AUTH)
    fleet.finish_startup("webster")
    assert_accepted(await client.post(hook(fleet), json={"message": "hi"}, headers=AUTH), RELEASE_LEGACY)

    await fleet.restart("webster")
    with pytest.raises(httpx.ConnectError):
        await client.post(hook(fleet), json={"message": "hi"}, headers=AUTH)
    fleet.finish_startup("webster")
    assert_accepted(await client.post(hook(fleet), json={"message": "hi"}, headers=AUTH), RELEASE_LEGACY)


# --- faults -------------------------------------------------------------------------------------


@by_release
async def test_down_agent_refuses_connections_until_brought_up(make_fleet: MakeFleet, client, release):
    fleet = await make_fleet(release, agents=("webster", "manager"), down=True)
    for agent in ("webster", "manager"):
        with pytest.raises(httpx.ConnectError):
            await client.post(hook(fleet, agent=agent), json={"message": "hi"}, headers=AUTH)

    await fleet.bring_up("webster")
    assert fleet.spec("webster").down is False
    assert_accepted(await client.post(hook(fleet), json={"message": "hi"}, headers=AUTH), release)

    await fleet.take_down("webster")
    assert fleet.spec("webster").down is True
    with pytest.raises(httpx.ConnectError):
        await client.post(hook(fleet), json={"message": "hi"}, headers=AUTH)
    await fleet.restart("webster")
    assert_accepted(await client.post(hook(fleet), json={"message": "hi"}, headers=AUTH), release)


@by_release
async def test_hung_agent_never_answers(make_fleet: MakeFleet, release):
    fleet = await make_fleet(release, hang=True)
    async with httpx.AsyncClient(timeout=0.3) as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.post(hook(fleet), json={"message": "hi"}, headers=AUTH)
        with pytest.raises(httpx.ReadTimeout):
            await http.get(fleet.urls["webster"] + "/healthz")
        fleet.set_hang("webster", False)
        assert_accepted(await http.post(hook(fleet), json={"message": "hi"}, headers=AUTH), release)
    assert len(fleet.received()) == 1


async def test_stop_cuts_a_hung_request(make_fleet: MakeFleet):
    fleet = await make_fleet(RELEASE_CURRENT, hang=True)
    async with httpx.AsyncClient(timeout=5.0) as http:
        pending = asyncio.create_task(http.post(hook(fleet), json={"message": "hi"}, headers=AUTH))
        await asyncio.wait_for(fleet.wait_in_flight("webster"), 2.0)
        await asyncio.wait_for(fleet.stop(), 2.0)
        assert fleet.in_flight("webster") == 0
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):  # a disconnect, not a timeout
            await pending


@by_release
async def test_fail_rate_one_answers_500_and_records_nothing(make_fleet: MakeFleet, client, release):
    fleet = await make_fleet(release, fail_rate=1.0)
    for route in ("agent", "wake"):
        response = await client.post(hook(fleet, route), json={"message": "hi", "text": "hi"}, headers=AUTH)
        assert (response.status_code, response.text) == (500, "Internal Server Error")
    assert fleet.received() == []


async def test_fail_rate_is_deterministic_for_a_seed(make_fleet: MakeFleet, client):
    async def statuses(seed: int) -> list[int]:
        fleet = await make_fleet(RELEASE_CURRENT, fail_rate=0.5, seed=seed)
        return [(await client.post(hook(fleet), json={"message": "hi"}, headers=AUTH)).status_code for _ in range(12)]

    first = await statuses(7)
    assert first == await statuses(7)
    assert set(first) == {200, 500}


@by_release
async def test_latency_delays_admission(make_fleet: MakeFleet, client, release):
    fleet = await make_fleet(release, latency_ms=150)
    started = time.monotonic()
    assert_accepted(await client.post(hook(fleet), json={"message": "hi"}, headers=AUTH), release)
    assert time.monotonic() - started >= 0.145  # margin for timer granularity
    fleet.set_latency("webster", 0)
    assert fleet.spec("webster").latency_ms == 0


# --- fleet bookkeeping --------------------------------------------------------------------------


async def test_received_keeps_arrival_order_across_agents(make_fleet: MakeFleet, client):
    fleet = await make_fleet(RELEASE_CURRENT, agents=("webster", "manager"))
    for agent, message in (("manager", "one"), ("webster", "two"), ("manager", "three")):
        await client.post(hook(fleet, agent=agent), json={"message": message}, headers=AUTH)
    assert [(h.agent, h.body["message"]) for h in fleet.received()] == [
        ("manager", "one"),
        ("webster", "two"),
        ("manager", "three"),
    ]
    assert [h.body["message"] for h in fleet.received("manager")] == ["one", "three"]
    with pytest.raises(KeyError, match="webster, manager"):
        fleet.received("nobody")


async def test_record_path_gets_one_json_line_per_accepted_hook(make_fleet: MakeFleet, client, tmp_path):
    record = tmp_path / "received.jsonl"
    fleet = await make_fleet(RELEASE_CURRENT, record_path=record)
    await client.post(hook(fleet), json={"message": "hi", "idempotencyKey": "k"}, headers=AUTH)
    await client.post(hook(fleet), json={"message": "hi", "idempotencyKey": "k"}, headers=AUTH)  # replay
    await client.post(hook(fleet, "wake"), json={"text": "wake up"}, headers=AUTH)
    await client.post(hook(fleet), json={}, headers=AUTH)  # refused: not recorded
    lines = [json.loads(line) for line in record.read_text().splitlines()]
    assert lines == [asdict(h) for h in fleet.received()]
    assert [line["path"] for line in lines] == ["/hooks/agent", "/hooks/wake"]


async def test_tokens_per_agent(client):
    base = free_ports(2)
    specs = [SimAgentSpec("webster", base), SimAgentSpec("manager", base + 4, release=RELEASE_LEGACY)]
    async with SimulatedFleet(specs, {"webster": "tw", "manager": "tm"}) as fleet:
        url = fleet.urls
        assert url == {"webster": f"http://127.0.0.1:{base}", "manager": f"http://127.0.0.1:{base + 4}"}
        tw, tm = {"Authorization": "Bearer tw"}, {"Authorization": "Bearer tm"}
        assert (
            await client.post(f"{url['webster']}/hooks/agent", json={"message": "x"}, headers=tw)
        ).status_code == 200
        assert (
            await client.post(f"{url['webster']}/hooks/agent", json={"message": "x"}, headers=tm)
        ).status_code == 401
        assert (
            await client.post(f"{url['manager']}/hooks/agent", json={"message": "x"}, headers=tm)
        ).status_code == 202


@pytest.mark.parametrize(
    ("specs", "token", "message"),
    [
        ([SimAgentSpec("a", 1), SimAgentSpec("a", 5)], "t", "repeated: a"),
        ([SimAgentSpec("a", 1, release="2025.1.1")], "t", "unknown release '2025.1.1'"),
        ([SimAgentSpec("a", 1), SimAgentSpec("b", 5)], {"a": "t"}, "no hooks token for agent.*b"),
        ([SimAgentSpec("a", 1)], "", "must not be empty"),
    ],
)
def test_fleet_refuses_bad_setup(specs, token, message):
    with pytest.raises(ValueError, match=message):
        SimulatedFleet(specs, token)


async def test_stop_releases_every_port(client):
    base = free_ports(2)
    specs = [
        SimAgentSpec("webster", base, hang=True),
        SimAgentSpec("manager", base + 4, release=RELEASE_LEGACY, startup=None),  # bound, not listening
    ]
    fleet = SimulatedFleet(specs, TOKEN)
    await fleet.start()
    async with httpx.AsyncClient(timeout=5.0) as http:
        pending = asyncio.create_task(http.get(fleet.urls["webster"] + "/healthz"))
        await asyncio.wait_for(fleet.wait_in_flight("webster"), 2.0)
        await asyncio.wait_for(fleet.stop(), 2.0)
        with contextlib.suppress(httpx.HTTPError):
            await pending
    for port in (base, base + 4):
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", port))
    for spec in specs:
        spec.hang, spec.startup = False, 0.0
    async with SimulatedFleet(specs, TOKEN) as again:
        assert (await client.get(again.urls["webster"] + "/healthz")).status_code == 200
        assert (await client.post(f"{again.urls['manager']}/hooks/agent", json={}, headers=AUTH)).status_code == 400


async def test_serve_forever_runs_until_cancelled(client):
    port = free_ports(1)
    fleet = SimulatedFleet([SimAgentSpec("webster", port)], TOKEN)
    ready = asyncio.Event()
    task = asyncio.create_task(serve_forever(fleet, on_ready=ready.set))
    await asyncio.wait_for(ready.wait(), 2.0)
    assert (await client.get(fleet.urls["webster"] + "/healthz")).status_code == 200
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    with pytest.raises(httpx.ConnectError):
        await client.get(fleet.urls["webster"] + "/healthz")


def test_free_ports_are_bindable():
    base = free_ports(3, spacing=4)
    for port in range(base, base + 12):
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the simulator binds
            sock.bind(("127.0.0.1", port))


# --- --release parsing --------------------------------------------------------------------------

AGENTS = ["manager", "webster", "nx-expert"]


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([], dict.fromkeys(AGENTS, RELEASE_CURRENT)),
        (["2026.2.12"], dict.fromkeys(AGENTS, RELEASE_LEGACY)),
        (
            ["webster=2026.2.12"],
            {"manager": RELEASE_CURRENT, "webster": RELEASE_LEGACY, "nx-expert": RELEASE_CURRENT},
        ),
        (
            ["2026.2.12", "webster=2026.9.6"],
            {"manager": RELEASE_LEGACY, "webster": RELEASE_CURRENT, "nx-expert": RELEASE_LEGACY},
        ),
        (["webster=2026.2.12", "2026.9.6"], dict.fromkeys(AGENTS, RELEASE_CURRENT)),
        (
            [" webster = 2026.2.12 "],
            {"manager": RELEASE_CURRENT, "webster": RELEASE_LEGACY, "nx-expert": RELEASE_CURRENT},
        ),
    ],
)
def test_parse_release_option(values, expected):
    assert parse_release_option(values, AGENTS) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("2025.1.1", r"unknown release '2025.1.1'; known releases: 2026.9.6, 2026.2.12"),
        ("webster=latest", r"unknown release 'latest'; known releases: 2026.9.6, 2026.2.12"),
        ("nobody=2026.2.12", r"unknown agent 'nobody'; agents: manager, webster, nx-expert"),
        ("=2026.2.12", r"unknown agent ''; agents: manager, webster, nx-expert"),
    ],
)
def test_parse_release_option_errors(value, message):
    with pytest.raises(ValueError, match=message):
        parse_release_option([value], AGENTS)
