"""The real `atomizer-hq run`, over the wire, against a loopback Discord that enforces Discord's limits.

One process serves the module's tests (each uses its own data); the `wire` fixture fails a test whose
requests broke a limit or called a route the server does not know.
"""

from __future__ import annotations

import re

import pytest

from bot.delegation import chain_footer
from bot.discord_bot import AtomizerBot
from bot.services import open_services
from bot.settings import Settings
from tests.e2e.conftest import BOT_USER_ID, Wire, agent_user
from tests.loopback_discord import StoredMessage

pytestmark = pytest.mark.asyncio(loop_scope="module")

PRODUCTION_INTENTS = (1 << 0) | (1 << 9) | (1 << 15)  # guilds, guild messages, message content
ACK = "✅"


def command_shapes(commands: list[dict[str, object]]) -> dict[str, list[str]]:
    """Each command's name with its subcommands' (or options') names: what a user sees in the picker."""
    return {
        str(c["name"]): sorted(str(o["name"]) for o in c.get("options") or [])  # type: ignore[attr-defined]
        for c in commands
    }


async def test_the_guild_gets_exactly_the_bot_s_commands_with_the_production_intents(
    wire: Wire, settings: Settings
) -> None:
    async with open_services(settings, wire.config) as services:
        bot = AtomizerBot(services, sync_commands=False, background_tasks=False)
        try:
            for extension in bot.initial_extensions:
                await bot.load_extension(extension)
            expected = [command.to_dict(bot.tree) for command in bot.tree.get_commands()]
        finally:
            await bot.close()
    assert command_shapes(wire.server.state.commands) == command_shapes(expected)
    assert len(wire.server.command_syncs) == 1  # one bulk overwrite at start-up
    [identify] = wire.server.identifies
    assert identify["intents"] == PRODUCTION_INTENTS and identify["compress"] is True
    assert wire.server.heartbeats >= 1


async def test_status_answers_within_three_seconds(wire: Wire) -> None:
    status = await wire.server.invoke_slash("status", roles=["viewer"])
    assert status.callback is not None and status.callback.at < 3.0
    for agent in wire.config.agent_names:
        assert agent in status.text()


async def test_delegate_reaches_the_agent_with_channel_and_target(wire: Wire) -> None:
    technical = wire.server.state.channel("technical").id
    answer = await wire.server.invoke_slash(
        "delegate", {"agent": "nx-expert", "instruction": "Mesh the M2 mirror"}, roles=["operator"]
    )
    assert answer.callback is not None and answer.callback.at < 3.0
    assert "nx-expert" in answer.text()
    [hook] = await wire.server.wait_for(lambda: wire.fleet.received("nx-expert"), what="nx-expert's hook")
    label = hook.body["name"].removeprefix("atomizer-hq ")  # D-n: the agent is told its id, to pass as --parent
    assert hook.body["message"].endswith("Mesh the M2 mirror" + chain_footer(label))
    assert (hook.body["channel"], hook.body["to"]) == ("discord", f"channel:{technical}")


async def test_a_viewer_is_refused_delegation_privately(wire: Wire) -> None:
    before = len(wire.fleet.received())
    answer = await wire.server.invoke_slash(
        "delegate", {"agent": "webster", "instruction": "Find the CTE of Zerodur"}, roles=["viewer"]
    )
    [message] = answer.messages()
    assert message.ephemeral and "operator" in message.content
    assert message.payload["author"]["id"] == BOT_USER_ID
    assert len(wire.fleet.received()) == before


async def test_delegate_auto_routes_by_capability_and_says_why(wire: Wire) -> None:
    """The real process routes `/delegate agent:auto` (production intents, the monitor's own probes)."""
    before = len(wire.fleet.received("webster"))
    routed = await wire.server.invoke_slash("route", {"needs": "Materials data"}, roles=["operator"])
    table = routed.text().split("```")[1]
    assert re.search(r"webster +yes +yes +yes", table) and "lacks materials-data" in table
    answer = await wire.server.invoke_slash(
        "delegate", {"agent": "auto", "needs": "materials data", "instruction": "Find the CTE of Zerodur"},
        roles=["operator"],
    )  # fmt: skip
    assert answer.callback is not None and answer.callback.at < 3.0
    assert "route: webster: has materials-data; ready; " in answer.text()
    hooks = await wire.server.wait_for(lambda: wire.fleet.received("webster")[before:], what="webster's hook")
    assert [hook.body["message"].split("\n")[0] for hook in hooks] == ["Find the CTE of Zerodur"]


def board(wire: Wire) -> StoredMessage:
    [message] = [m for m in wire.server.messages_in("task-board") if m.embeds and m.author_id == BOT_USER_ID]
    return message


async def test_an_agent_s_done_post_gets_a_tick_and_the_board_follows(wire: Wire) -> None:
    server = wire.server
    added = await server.invoke_slash(
        "task add", {"title": "Mesh the M2 mirror", "assignee": "nx-expert"}, roles=["operator"]
    )
    [task_id] = {word.strip("*`:,.") for word in added.text().split() if word.strip("*`:,.").startswith("T-")}
    await server.wait_for(lambda: "Mesh the M2 mirror" in board(wire).text(), what="the task on the board")
    edits = board(wire).edits

    post = await server.post_message("task-board", agent_user(wire.config, "nx-expert"), f"{task_id} done: meshed it")
    await server.wait_for(lambda: post.reactions == [ACK], what="the ✅ reaction")
    await server.wait_for(lambda: "Mesh the M2 mirror" not in board(wire).text(), what="the board without the task")
    assert board(wire).edits > edits  # edited in place, not re-posted

    shown = await server.invoke_slash("task show", {"id": task_id}, roles=["operator"])
    assert "done" in shown.text()


async def test_a_button_click_is_answered_by_updating_the_message(wire: Wire) -> None:
    server = wire.server
    added = await server.invoke_slash("task add", {"title": "Review thermal analysis"}, roles=["operator"])
    [task_id] = {word.strip("*`:,.") for word in added.text().split() if word.strip("*`:,.").startswith("T-")}
    shown = await server.invoke_slash("task show", {"id": task_id}, roles=["operator"])
    [message] = shown.messages()
    start = next(c for row in message.components for c in row["components"] if c.get("label") == "Start")
    clicked = await server.click(message, start["custom_id"], roles=["operator"])
    assert clicked.callback is not None and clicked.callback.type == 7  # UPDATE_MESSAGE
    assert "in_progress" in message.text()


async def test_after_a_forced_reconnect_the_bot_resumes_and_still_answers(wire: Wire) -> None:
    server = wire.server
    identifies, resumes = len(server.identifies), len(server.resumes)
    await server.force_reconnect()
    await server.wait_for(lambda: len(server.resumes) > resumes and server.connected, what="a RESUME")
    assert len(server.identifies) == identifies  # resumed the session, not a new one
    answer = await server.invoke_slash("help", roles=["viewer"])
    assert answer.callback is not None and "/status" in answer.text()

    await server.invalidate_session(resumable=False)  # the session is gone: a fresh IDENTIFY, READY, GUILD_CREATE
    await server.wait_for(lambda: len(server.identifies) > identifies and server.connected, what="a new IDENTIFY")
    answer = await server.invoke_slash("status", roles=["viewer"])
    assert answer.callback is not None and answer.callback.at < 3.0


async def test_a_429_is_waited_out_and_the_message_lands_once(wire: Wire) -> None:
    server = wire.server
    channel = server.state.channel("task-board").id
    route = f"POST /channels/{channel}/messages"
    before = len(server.requests)
    server.rate_limit(route, retry_after=1.0)
    post = await server.post_message(
        "task-board", agent_user(wire.config, "tech-lead"), "new task: Check the rate limits @auditor !high"
    )
    replies = await server.wait_for(
        lambda: [
            m
            for m in server.messages_in("task-board")
            if (m.payload.get("message_reference") or {}).get("message_id") == post.id
        ],
        what="the bot's reply naming the new task",
    )
    assert len(replies) == 1 and "T-" in replies[0].content
    calls = [r for r in server.requests[before:] if f"{r.method} {r.path}" == route]
    assert [c.status for c in calls] == [429, 200]
    assert calls[1].at - calls[0].at >= 1.0 - 0.05  # waited for Retry-After (clock granularity aside)
