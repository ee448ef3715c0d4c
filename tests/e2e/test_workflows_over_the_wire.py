"""The shipped m2-mirror-study, run from Discord by the real `atomizer-hq run`, over the wire.

The simulated agents answer as real ones do: as their own bot accounts, in the channel their hook names (the
run's thread; #technical for the report), then their 2026.9.6 run completes. One process serves the module.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

from bot.config import ClusterConfig, load_cluster_config
from bot.simulator import SimAgentSpec, SimulatedFleet, free_ports
from tests.conftest import API_TOKENS, HOOKS_TOKEN, SHIPPED_CONFIG
from tests.e2e.conftest import (
    ATOMIZER,
    BOT_USER_ID,
    DISCORD_TOKEN,
    GUILD_ID,
    START_DEADLINE_S,
    BotProcess,
    agent_user,
    assert_clean,
    guild_for,
    launch_bot,
    stop_clean,
)
from tests.loopback_discord import LoopbackDiscord, StoredMessage, User

# A loaded 2-core machine stalled the bot's loop for 40 s once ("websocket is 41.3s behind"): the deadlines are only
# ever waited on, so they are generous, and each test may take longer than the suite's default 120 s.
pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(400)]
RUN_DEADLINE_S = 120.0
ANTOINE = User("100000000000000777", "antoine")  # the starter of every run here


@dataclass
class Flow:
    config: ClusterConfig
    fleet: SimulatedFleet
    server: LoopbackDiscord
    bot: BotProcess
    home: Path


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def flow_running(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Flow]:
    config = load_cluster_config(SHIPPED_CONFIG).relocated(free_ports(8), 4)
    server = LoopbackDiscord(guild_for(config), token=DISCORD_TOKEN)

    async def poster(agent: str, channel_id: str, text: str) -> None:
        await server.post_message(channel_id, agent_user(config, agent), text)

    specs = [SimAgentSpec(name=a.name, port=a.port) for a in config.agents]
    for spec in specs:
        if spec.name == "nx-expert":
            spec.answer, spec.answer_parts = "120k elements; mesh in /shared/m2.prt; CTETRA10", 2
    fleet = SimulatedFleet(specs, HOOKS_TOKEN, poster=poster)
    await fleet.start()
    await server.start()
    home = tmp_path_factory.mktemp("workflows")
    bot = await launch_bot(config, server.api_base, home)
    try:
        await bot.wait_for_health(lambda status, body: status == 200, timeout=START_DEADLINE_S)
        await server.wait_for(lambda: server.connected and server.state.commands, what="the synced commands")
        yield Flow(config, fleet, server, bot, home)
        await stop_clean(bot)
    finally:
        await bot.stop()
        await server.stop()
        await fleet.stop()


@pytest.fixture
def flow(flow_running: Flow, request: pytest.FixtureRequest) -> Iterator[Flow]:
    assert_clean(flow_running.server)
    start = len(flow_running.bot.log().splitlines())
    yield flow_running
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:  # the bot's own account of what it did during the failed test
        print("\n".join(flow_running.bot.log().splitlines()[start:]))
        print(what_the_agents_received(flow_running.fleet))
    assert_clean(flow_running.server)


def what_the_agents_received(fleet: SimulatedFleet) -> str:
    """Every hook the simulated gateways accepted, a line each: the other half of a failed test's story."""
    lines = [
        f"{hook.at:.3f} {hook.agent} {hook.path} to={hook.body.get('to')} "
        f"{str(hook.body.get('message') or hook.body.get('text') or '').splitlines()[:1]}"
        for hook in fleet.received()
    ]
    return "the agents received:\n" + "\n".join(lines or ["(nothing)"])


def card_in(flow: Flow, thread_id: str) -> StoredMessage | None:
    found = [m for m in flow.server.messages_in(thread_id) if m.author_id == BOT_USER_ID and m.embeds]
    return found[0] if found else None


def card_says(flow: Flow, thread_id: str, *words: str) -> StoredMessage | None:
    card = card_in(flow, thread_id)
    return card if card is not None and all(word in card.text() for word in words) else None


def buttons(message: StoredMessage) -> dict[str, str]:
    return {b["label"]: b["custom_id"] for row in message.components for b in row["components"]}


async def start_m2(flow: Flow) -> tuple[str, str]:
    """/workflow run name:m2-mirror-study by antoine (operator): the run's id and its thread."""
    answer = await flow.server.invoke_slash(
        "workflow run", {"name": "m2-mirror-study", "inputs": "mirror=M2"}, user=ANTOINE, roles=["operator"]
    )
    assert answer.callback is not None and answer.callback.at < 3.0
    found = re.search(r"(W-\d+) .*<#(\d+)>", answer.text())
    assert found is not None, answer.text()
    return found.group(1), found.group(2)


async def test_m2_runs_end_to_end_from_discord(flow: Flow) -> None:
    server, fleet = flow.server, flow.fleet
    run, thread = await start_m2(flow)
    assert server.state.channel(thread).is_thread
    await server.wait_for(lambda: card_says(flow, thread, run, "mesh", "nx-expert"), what="the card in the thread")

    # nx-expert and webster answer in the thread, in parallel; the optimizer gets both answers.
    [thermal] = await server.wait_for(lambda: fleet.received("optimizer"), RUN_DEADLINE_S, "the thermal step")
    for agent in ("nx-expert", "webster"):
        hooks = fleet.received(agent)
        assert len(hooks) == 1, what_the_agents_received(fleet)
        [hook] = hooks
        assert (hook.body["channel"], hook.body["to"]) == ("discord", f"channel:{thread}")
    assert "Mesh: 120k elements; mesh in\n/shared/m2.prt; CTETRA10" in thermal.body["message"]
    assert "Material: webster: done: Find the thermal properties of Zerodur Class 0" in thermal.body["message"]

    card = await server.wait_for(
        lambda: card_says(flow, thread, "waiting", "Approve the thermal results of the M2 mirror"),
        RUN_DEADLINE_S,
        "the approval gate on the card",
    )
    assert "optimizer: done: Run the steady-state thermal analysis" in card.text()  # the prompt carries the output
    approve = buttons(card)["Approve review"]

    refused = await server.click(card, approve, roles=["viewer"])
    [line] = refused.messages()
    assert line.ephemeral and "may not approve" in line.content and "admin role" in line.content
    starter = await server.click(card, approve, user=ANTOINE, roles=["admin"])  # an admin, but the starter
    assert "started this run" in starter.messages()[0].content

    alice = server.person("alice")
    approved = await server.click(card, approve, user=alice, roles=["admin"])
    assert approved.callback is not None and approved.callback.at < 3.0
    assert "You approved" in approved.messages()[0].content
    again = await server.click(card, approve, user=alice, roles=["admin"])
    assert "already approved by you" in again.messages()[0].content

    [report] = await server.wait_for(lambda: fleet.received("secretary"), RUN_DEADLINE_S, "the report step")
    technical = server.state.channel("technical").id
    assert report.body["to"] == f"channel:{technical}"
    done = await server.wait_for(
        lambda: card_says(flow, thread, f"{run} · m2-mirror-study · succeeded"), RUN_DEADLINE_S, "the run succeeded"
    )
    assert "approved by alice" in done.text() and not done.components  # the buttons went with the gate
    shown = await server.invoke_slash("workflow show", {"run": run}, roles=["viewer"])
    assert "output (discord): secretary: done: Write the report" in shown.text()


async def cli(flow: Flow, *args: str) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATOMIZER_") and k != "DISCORD_TOKEN"}
    env.update(ATOMIZER_GUILD_ID=GUILD_ID, ATOMIZER_HOOKS_TOKEN=HOOKS_TOKEN,
               ATOMIZER_API_TOKENS=",".join(f"{k}:{v}" for k, v in API_TOKENS.items()))  # fmt: skip
    process = await asyncio.create_subprocess_exec(
        str(ATOMIZER), "--config", str(flow.home / "cluster.toml"), "--db", str(flow.home / "atomizer.db"), *args,
        env=env, cwd=flow.home, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(process.communicate(), RUN_DEADLINE_S)
    return process.returncode or 0, out.decode()


async def test_an_approval_from_the_cli_updates_the_card(flow: Flow) -> None:
    server = flow.server
    run, thread = await start_m2(flow)
    card = await server.wait_for(lambda: card_says(flow, thread, run, "waiting"), RUN_DEADLINE_S, "the gate")
    assert "Approve review" in buttons(card)
    code, out = await cli(flow, "workflow", "approve", run, "review", "--reason", "numbers look right")
    assert code == 0, out
    done = await server.wait_for(
        lambda: card_says(flow, thread, f"{run} · m2-mirror-study · succeeded"), RUN_DEADLINE_S, "the card updated"
    )
    assert "numbers look right" in done.text() and not done.components


async def test_a_run_started_from_the_cli_gets_a_thread_and_a_card(flow: Flow) -> None:
    server = flow.server
    code, out = await cli(flow, "workflow", "run", "m2-mirror-study", "--input", "mirror=M3")
    assert code == 0, out
    run = re.search(r"W-\d+", out)
    assert run is not None, out
    technical = server.state.channel("technical").id
    thread = await server.wait_for(
        lambda: next(
            (c for c in server.state.channels.values() if c.is_thread and c.parent_id == technical
             and c.name.startswith(f"{run.group(0)} ")), None
        ),
        RUN_DEADLINE_S,
        "a thread for the run in #technical",
    )  # fmt: skip
    await server.wait_for(lambda: card_says(flow, thread.id, run.group(0), "inputs: mirror=M3"), what="its card")


async def test_reject_from_the_card_asks_why_and_the_reason_is_shown(flow: Flow) -> None:
    server = flow.server
    run, thread = await start_m2(flow)
    card = await server.wait_for(lambda: card_says(flow, thread, run, "waiting"), RUN_DEADLINE_S, "the gate")
    reject = buttons(card)["Reject review"]
    refused = await server.click(card, reject, roles=["viewer"])  # no form for who may not decide
    [line] = refused.messages()
    assert refused.callback is not None and refused.callback.type != 9
    assert line.ephemeral and "may not reject" in line.content

    maria = server.person("maria")
    opened = await server.click(card, reject, user=maria, roles=["admin"])
    assert opened.callback is not None and opened.callback.type == 9 and opened.callback.at < 3.0
    assert opened.callback.modal is not None and opened.callback.modal["title"] == f"Reject {run}/review"
    submitted = await server.submit_modal(
        opened, {"Why reject it?": "the mesh is too coarse near the mounts"}, user=maria, roles=["admin"]
    )
    assert f"You rejected {run}/review: the gate is rejected" in submitted.messages()[0].content
    assert submitted.messages()[0].ephemeral
    done = await server.wait_for(
        lambda: card_says(flow, thread, f"{run} · m2-mirror-study · failed"), RUN_DEADLINE_S, "the run failed"
    )
    assert "rejected by maria: the mesh is too coarse near the mounts" in done.text() and not done.components
    code, out = await cli(flow, "workflow", "show", run)
    assert code == 0 and "rejected by maria (discord, " in out and "UTC): the mesh is too coarse near the mounts" in out
