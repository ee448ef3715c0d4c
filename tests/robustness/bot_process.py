"""`atomizer-hq run` without Discord, for the crash tests: a child process the test can SIGKILL.

It wires what `bot.runner.run_service` wires before the Discord bot (store, services, the heartbeat
schedule, the outbox worker) on the database and cluster config the test gives, prints `ready`, and
runs until SIGTERM (a clean stop) or SIGKILL (a crash).

    python -m tests.robustness.bot_process --config cluster.json --db atomizer.db [--downtime-s 300]

`--downtime-s` starts this process's service clocks that far ahead of the wall clock: as if it was
started that much later, so the heartbeat slots that fell due while the bot was dead exist without
the test waiting minutes for them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
from datetime import datetime, timedelta
from pathlib import Path

from bot.clock import utcnow
from bot.config import parse_cluster_config
from bot.delegation import DelegationService
from bot.heartbeat import HeartbeatService
from bot.outbox import OutboxWorker
from bot.runner import Schedule
from bot.services import open_services
from bot.settings import Settings


async def serve(config_path: Path, db_path: Path, downtime_s: float, poll_s: float) -> None:
    config = parse_cluster_config(json.loads(config_path.read_text(encoding="utf-8")), str(config_path))
    async with open_services(Settings(), config, db_path=db_path) as services:
        if downtime_s:
            shift = timedelta(seconds=downtime_s)

            def clock() -> datetime:
                return utcnow() + shift

            services.heartbeats = HeartbeatService(config, services.store, services.gateway, clock=clock)
            services.delegation = DelegationService(
                config, services.store, services.gateway, clock=clock, tasks=services.tasks
            )
        # The same order as run_service: the schedule first, then the outbox (which recovers first).
        schedule = Schedule(services)
        await schedule.start()
        outbox = OutboxWorker(services.delegation, idle_poll_s=poll_s)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        try:
            await outbox.start()
            print("ready", flush=True)
            await stop.wait()
        finally:
            await outbox.stop()
            await schedule.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", type=Path, required=True, help="the cluster config, as JSON")
    parser.add_argument("--db", type=Path, required=True)
    parser.add_argument("--downtime-s", type=float, default=0.0)
    parser.add_argument("--poll-s", type=float, default=0.2, help="the outbox's idle poll")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(serve(args.config, args.db, args.downtime_s, args.poll_s))


if __name__ == "__main__":
    main()
