"""`atomizer-hq demo`: a simulated fleet and the real services on a temporary database.

No Discord and no .env needed: the demo makes its own hooks token and moves the fleet to free
ports, so it runs beside a real cluster without touching it, and leaves nothing behind.
"""

from __future__ import annotations

import argparse
import secrets
import sys
import tempfile
from pathlib import Path

from bot.config import load_cluster_config
from bot.services import open_services
from bot.settings import Settings
from bot.simulator import RELEASE_CURRENT, RELEASE_LEGACY, SimAgentSpec, SimulatedFleet, free_ports
from bot.status_view import print_fleet_status

# The story's faults: auditor is restarting (port closed), optimizer is wedged (never answers),
# webster still runs the old release (no health routes).
DOWN, WEDGED, LEGACY = "auditor", "optimizer", "webster"
PROBE_TIMEOUT_S = 1.0


def say(text: str) -> None:
    print(text, flush=True)


async def run_demo(args: argparse.Namespace) -> int:
    config_path = args.config or Path("config/cluster.toml")
    shipped = load_cluster_config(config_path)
    config = shipped.relocated(free_ports(len(shipped.agents)))
    token = secrets.token_hex(24)
    specs = [
        SimAgentSpec(
            name=agent.name,
            port=agent.port,
            release=RELEASE_LEGACY if agent.name == LEGACY else RELEASE_CURRENT,
            down=agent.name == DOWN,
            hang=agent.name == WEDGED,
        )
        for agent in config.agents
    ]
    with tempfile.TemporaryDirectory(prefix="atomizer-demo-") as tmp:
        settings = Settings(
            hooks_token=token,
            hooks_token_overrides={},
            api_token_vars={},
            api_tokens_spec=None,
            discord_token=None,
            db_path=Path(tmp) / "atomizer.db",
        )
        async with SimulatedFleet(specs, token), open_services(settings, config) as services:
            say(f"atomizer-hq demo: {len(specs)} simulated OpenClaw gateways on 127.0.0.1")
            say(f"  {DOWN} is down, {WEDGED} is wedged, {LEGACY} runs release {RELEASE_LEGACY}")
            say(f"  database: {settings.db_path} (temporary)\n")
            say("$ atomizer-hq status")
            status = await services.cluster.probe_all(timeout=PROBE_TIMEOUT_S)
            print_fleet_status(status)
            sys.stdout.flush()
    return 0
