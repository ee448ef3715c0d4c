"""The real `atomizer-hq run`, over the wire, against a loopback Discord that enforces Discord's limits."""

from __future__ import annotations

import time

from bot.config import ClusterConfig
from bot.simulator import SimulatedFleet
from tests.e2e.conftest import StartBot
from tests.loopback_discord import LoopbackDiscord

PRODUCTION_INTENTS = (1 << 0) | (1 << 9) | (1 << 15)  # guilds, guild messages, message content


async def test_commands_sync_and_status_answers_within_the_window(
    start_bot: StartBot, discord_server: LoopbackDiscord, fleet: tuple[ClusterConfig, SimulatedFleet]
) -> None:
    bot = await start_bot()
    [identify] = discord_server.identifies
    assert identify["intents"] == PRODUCTION_INTENTS and identify["compress"] is True
    names = {command["name"] for command in discord_server.state.commands}
    assert names == {"help", "delegate", "delegations", "status", "cluster", "task", "heartbeat", "standup"}
    started = time.monotonic()
    status = await discord_server.invoke_slash("status", roles=["viewer"])
    assert status.callback is not None and status.callback.at < 3.0
    assert "manager" in status.text()
    print(f"/status answered in {status.callback.at:.3f} s; {time.monotonic() - started:.2f} s; bot up in {started - bot.started:.1f} s")
