"""The loopback Discord itself: it refuses what Discord refuses, in Discord's words, and records it.

Plain HTTP against it (no bot), so each limit is shown to fail a test the way a bot's breach would.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.loopback_discord import GuildState, Interaction, LoopbackDiscord

TOKEN = "loopback-test-token"
CHANNELS = {"technical": "100000000000000101", "task_board": "100000000000000102"}
NONE = {"parse": []}


@pytest.fixture
async def server() -> AsyncIterator[LoopbackDiscord]:
    state = GuildState(guild_id="100000000000000001", channels=CHANNELS, roles={"operator": "100000000000000202"})
    async with LoopbackDiscord(state, token=TOKEN) as running:
        running.state.commands = [{"id": "1", "name": "ping", "type": 1, "description": "ping", "options": []}]
        yield running


@pytest.fixture
async def http(server: LoopbackDiscord) -> AsyncIterator[aiohttp.ClientSession]:
    headers = {"Authorization": f"Bot {TOKEN}"}
    async with aiohttp.ClientSession(base_url=server.api_base.removesuffix("/api/v10"), headers=headers) as session:
        yield session


async def call(http: aiohttp.ClientSession, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    async with http.request(method, "/api/v10" + path, json=body) as answer:
        return answer.status, await answer.json() if answer.content_type == "application/json" else None


async def test_a_message_over_the_limits_is_refused_as_invalid_form_body(
    server: LoopbackDiscord, http: aiohttp.ClientSession
) -> None:
    embed = {"title": "t" * 257, "fields": [{"name": "n", "value": "v" * 1025}] * 26}
    status, body = await call(
        http, "POST", f"/channels/{CHANNELS['technical']}/messages", {"content": "x" * 2001, "embeds": [embed]}
    )
    assert status == 400 and body["code"] == 50035 and body["message"] == "Invalid Form Body"
    assert body["errors"]["content"]["_errors"][0]["message"] == "Must be 2000 or fewer in length."
    assert "title" in body["errors"]["embeds"]["0"] and "fields" in body["errors"]["embeds"]["0"]
    problems = {v.problem.split(":")[0] for v in server.violations}
    assert {"content", "embeds.0.title", "embeds.0.fields", "embeds.0.fields.0.value", "allowed_mentions"} <= problems
    assert server.messages_in("technical") == []


async def test_components_over_the_limits_are_refused(server: LoopbackDiscord, http: aiohttp.ClientSession) -> None:
    button = {"type": 2, "style": 1, "label": "l" * 81, "custom_id": "c" * 101}
    rows = [{"type": 1, "components": [button] * 6}] * 6
    status, _ = await call(
        http,
        "POST",
        f"/channels/{CHANNELS['technical']}/messages",
        {"content": "hi", "components": rows, "allowed_mentions": NONE},
    )
    assert status == 400
    problems = {v.problem for v in server.violations}
    assert any(p.startswith("components:") for p in problems)
    assert any(".label:" in p for p in problems) and any(".custom_id:" in p for p in problems)


async def test_a_second_callback_and_a_late_one_are_refused(
    server: LoopbackDiscord, http: aiohttp.ClientSession
) -> None:
    interaction = await _pending(server)
    path = f"/interactions/{interaction.id}/{interaction.token}/callback"
    first = await call(http, "POST", path, {"type": 4, "data": {"content": "pong", "allowed_mentions": NONE}})
    assert first == (204, None)
    status, body = await call(http, "POST", path, {"type": 4, "data": {"content": "again", "allowed_mentions": NONE}})
    assert (status, body["code"], body["message"]) == (400, 40060, "Interaction has already been acknowledged.")

    late = await _pending(server)
    late.created -= 3.5  # as if dispatched 3.5 s ago
    status, body = await call(http, "POST", f"/interactions/{late.id}/{late.token}/callback", {"type": 5})
    assert (status, body["code"]) == (404, 10062)
    assert [v.problem.split()[1] for v in server.violations] == ["40060", "10062"]


async def test_a_follow_up_after_a_deferral_replaces_the_thinking_message(
    server: LoopbackDiscord, http: aiohttp.ClientSession
) -> None:
    interaction = await _pending(server)
    await call(
        http, "POST", f"/interactions/{interaction.id}/{interaction.token}/callback", {"type": 5, "data": {"flags": 64}}
    )
    status, message = await call(
        http, "POST", f"/webhooks/{server.state.application_id}/{interaction.token}?wait=true",
        {"content": "done", "allowed_mentions": NONE},
    )  # fmt: skip
    assert status == 200 and message["id"] == interaction.original.id and message["flags"] & 64
    assert interaction.settled and interaction.text() == "done" and not server.violations


async def test_threads_from_a_channel_and_from_a_message(server: LoopbackDiscord, http: aiohttp.ClientSession) -> None:
    channel = CHANNELS["technical"]
    status, thread = await call(http, "POST", f"/channels/{channel}/threads", {"name": "W-1 mirror", "type": 11})
    assert status == 200 and thread["parent_id"] == channel and thread["type"] == 11
    status, _ = await call(
        http, "POST", f"/channels/{thread['id']}/messages", {"content": "step 1", "allowed_mentions": NONE}
    )
    assert status == 200 and [m.content for m in server.messages_in(thread["id"])] == ["step 1"]
    _, anchor = await call(http, "POST", f"/channels/{channel}/messages", {"content": "run", "allowed_mentions": NONE})
    status, from_message = await call(
        http, "POST", f"/channels/{channel}/messages/{anchor['id']}/threads", {"name": "W-2"}
    )
    assert status == 200 and from_message["id"] == anchor["id"]
    status, _ = await call(http, "POST", f"/channels/{channel}/threads", {"name": "n" * 101})
    assert status == 400 and not [v for v in server.violations if "name" not in v.problem]


async def test_a_rate_limited_route_answers_429_as_discord_does(
    server: LoopbackDiscord, http: aiohttp.ClientSession
) -> None:
    server.rate_limit("GET /users/@me", retry_after=0.25)
    async with http.get("/api/v10/users/@me") as answer:
        assert answer.status == 429 and answer.headers["Retry-After"] == "0.25" and answer.headers["Via"]
        assert answer.headers["X-RateLimit-Remaining"] == "0"
        assert (await answer.json())["retry_after"] == 0.25
    assert (await call(http, "GET", "/users/@me"))[0] == 200  # only once
    async with aiohttp.ClientSession() as anonymous:
        async with anonymous.get(f"{server.api_base}/users/@me") as answer:
            assert answer.status == 401


async def _pending(server: LoopbackDiscord) -> Interaction:
    """An interaction dispatched to nobody (no bot connected): the test answers it by hand."""
    return await server.invoke_slash("ping", wait=False)
