"""Item 2 over the wire: Discord unreachable at start must not take the control plane down."""

from __future__ import annotations

from pathlib import Path

import httpx

from bot.config import load_cluster_config
from bot.simulator import free_ports
from tests.conftest import API_TOKENS, SHIPPED_CONFIG
from tests.e2e.conftest import DISCORD_TOKEN, START_DEADLINE_S, assert_clean, guild_for, launch_bot, stop_clean
from tests.loopback_discord import LoopbackDiscord


async def test_discord_down_at_start_then_up_connects_without_a_restart(tmp_path: Path) -> None:
    config = load_cluster_config(SHIPPED_CONFIG).relocated(free_ports(8), 4)  # no fleet: agents down is fine
    server = LoopbackDiscord(guild_for(config), token=DISCORD_TOKEN, port=free_ports(1))  # not listening yet
    bot = await launch_bot(config, server.api_base, tmp_path)
    try:
        line = await bot.wait_for_line("cannot reach Discord", timeout=START_DEADLINE_S)
        assert "retrying in" in line
        body = await bot.wait_for_health(
            lambda status, body: status == 503 and body["checks"].get("discord", "ok") != "ok"
        )
        assert body["checks"]["database"] == "ok" and "discord" in body["checks"]
        async with httpx.AsyncClient(timeout=10.0) as client:  # the control plane answers meanwhile
            answer = await client.get(
                f"{bot.api_url}/v1/status", headers={"Authorization": f"Bearer {API_TOKENS['operator']}"}
            )
        assert answer.status_code == 200

        await server.start()
        await server.wait_for(lambda: server.command_syncs and server.connected, timeout=START_DEADLINE_S, what="sync")
        await bot.wait_for_health(lambda status, body: status == 200)
        answer = await server.invoke_slash("help", roles=["viewer"])
        assert "/status" in answer.text()
        assert process_alive(bot.process.returncode)  # the same process: no restart
        await stop_clean(bot)
        assert_clean(server)
    finally:
        await bot.stop()
        await server.stop()


def process_alive(returncode: int | None) -> bool:
    return returncode is None


async def test_a_refused_token_is_fatal_with_exit_2(tmp_path: Path) -> None:
    config = load_cluster_config(SHIPPED_CONFIG).relocated(free_ports(8), 4)
    async with LoopbackDiscord(guild_for(config), token="another-bot-s-token") as server:
        bot = await launch_bot(config, server.api_base, tmp_path)
        try:
            assert await bot.stop_when_exited(timeout=START_DEADLINE_S) == 2
        finally:
            await bot.stop()
        assert "Discord refused DISCORD_TOKEN" in bot.log() and DISCORD_TOKEN not in bot.log()
        assert [r.status for r in server.requests] == [401] and not server.identifies
