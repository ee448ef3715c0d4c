"""`atomizer-hq run`: the long-running service, wired top-down in one function.

Order: settings and config (done by the caller) -> store, HTTP client, services -> scheduler ->
loopback API -> Discord bot. Shutdown runs the same list backwards, whatever stopped us.
"""

from __future__ import annotations

import logging

from bot.config import ClusterConfig
from bot.settings import HUMAN_IDENTITIES, Settings

log = logging.getLogger(__name__)


async def run_service(settings: Settings, config: ClusterConfig) -> None:
    from bot.api import LoopbackApi
    from bot.discord_bot import run_bot
    from bot.outbox import OutboxWorker
    from bot.services import open_services

    identities = settings.api_identities([*config.agent_names, *HUMAN_IDENTITIES])
    async with open_services(settings, config) as services:
        services.scheduler.start()
        outbox = OutboxWorker(services.delegation)
        await outbox.start()
        api = LoopbackApi(services, identities)
        try:
            await api.start(config.api.host, config.api.port)
            log.info("loopback API on %s (%d callers)", api.url, len(identities))
            await run_bot(services)
        finally:
            await api.stop()
            await outbox.stop()
            log.info("stopped")
