"""`atomizer-hq run --no-discord`: the control plane without a Discord token (a host waiting for one, a CLI team)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx

from bot.config import load_cluster_config
from bot.delegation import chain_footer
from bot.simulator import SimAgentSpec, SimulatedFleet, free_ports
from tests.conftest import API_TOKENS, HOOKS_TOKEN, SHIPPED_CONFIG
from tests.e2e.conftest import START_DEADLINE_S, launch_bot

OPERATOR = {"Authorization": f"Bearer {API_TOKENS['operator']}"}


async def test_no_discord_serves_the_api_outbox_monitor_and_scheduler_without_a_token(tmp_path: Path) -> None:
    config = load_cluster_config(SHIPPED_CONFIG).relocated(free_ports(8), 4)
    specs = [SimAgentSpec(name=a.name, port=a.port, down=a.name == "auditor") for a in config.agents]
    async with SimulatedFleet(specs, HOOKS_TOKEN) as fleet:
        bot = await launch_bot(config, None, tmp_path, run_args=("--no-discord",), discord_token=None)
        try:
            body = await bot.wait_for_health(lambda status, body: status == 200, timeout=START_DEADLINE_S)
            assert body["checks"]["discord"].startswith("off: run --no-discord"), body
            assert body["checks"]["scheduler"] == "ok" and body["checks"]["database"] == "ok"

            async with httpx.AsyncClient(base_url=bot.api_url, timeout=10.0) as client:
                sent = await client.post(
                    "/v1/delegations", json={"to": "nx-expert", "message": "Mesh the M2 mirror"}, headers=OPERATOR
                )
                assert sent.status_code == 202, sent.text
                assert [hook.body["message"] for hook in fleet.received("nx-expert")] == [
                    "Mesh the M2 mirror" + chain_footer(sent.json()["id"])
                ]

                # The status monitor probes on its own timer, Discord or not: auditor's probe is on record.
                deadline = time.monotonic() + START_DEADLINE_S
                while 'atomizer_agent_up{agent="auditor"} 0.0' not in (metrics := (await client.get("/metrics")).text):
                    assert time.monotonic() < deadline, metrics
                    await asyncio.sleep(0.1)  # polling an HTTP state under a deadline, not synchronization
                assert 'atomizer_agent_up{agent="nx-expert"} 1.0' in metrics

            log = bot.log()
            assert "Discord: off (--no-discord)" in log and "scheduler: heartbeats checked every" in log
            assert "discord.client" not in log  # no client made, no login tried
        finally:
            assert await bot.stop() == 0, bot.log()
