"""`python -m bench.service DB BASE_PORT`: `atomizer-hq run` itself, with Discord mocked.

`bot.runner.run_service` runs as is (services, scheduler, outbox, loopback API, in its order); only the
Discord part, `run_bot`, is replaced: the bot is built with its cogs loaded on dpytest's fake Discord
instead of connecting (`bot.start` is never called). Prints READY once the bot is loaded; SIGTERM stops
the bot, then run_service shuts everything down in its own order.
The hooks token comes from ATOMIZER_HOOKS_TOKEN, the API tokens from ATOMIZER_API_TOKENS.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from bench.common import bench_settings, fleet_config
from bot import discord_bot
from bot.runner import run_service
from bot.services import Services


async def run_mocked_bot(services: Services, *, stop: asyncio.Event | None = None) -> None:
    """What run_bot does, against dpytest's fake Discord: the bot and its cogs, until SIGTERM."""
    from tests.discord_harness import close_test_bot, make_test_bot

    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    bot = await make_test_bot(services)
    try:
        print("READY", flush=True)
        await stop.wait()
    finally:
        await close_test_bot(bot)


async def main(db: Path, base_port: int) -> None:
    config = fleet_config(base_port)
    api_tokens = dict(entry.split(":", 1) for entry in os.environ["ATOMIZER_API_TOKENS"].split(","))
    settings = bench_settings(db, os.environ["ATOMIZER_HOOKS_TOKEN"], api_tokens)
    discord_bot.run_bot = run_mocked_bot  # type: ignore[assignment]  # run_service imports it when it runs
    await run_service(settings, config)


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), int(sys.argv[2])))
