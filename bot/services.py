"""The core services of one process, created at start and closed at shutdown, in one place.

The bot, the CLI, the loopback API and the demo all get the same `Services`, so every front end
calls the same code with the same store and the same HTTP client.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from bot.cluster import ClusterService
from bot.config import ClusterConfig
from bot.delegation import DelegationService
from bot.gateway import GatewayClient
from bot.health import HealthChecks, database_writable
from bot.heartbeat import HeartbeatService
from bot.monitor import MonitorPolicy, StatusMonitor
from bot.project_log import ProjectLog
from bot.routing.service import RoutingService
from bot.settings import Settings
from bot.standup import StandupService
from bot.store import Store
from bot.systemd import SystemdUnits
from bot.taskboard import TaskBoard
from bot.workflows.engine import WorkflowEngine
from bot.workflows.loader import WorkflowCatalog


@dataclass
class Services:
    settings: Settings
    config: ClusterConfig
    store: Store
    http: aiohttp.ClientSession
    gateway: GatewayClient
    cluster: ClusterService
    delegation: DelegationService
    monitor: StatusMonitor
    tasks: TaskBoard
    heartbeats: HeartbeatService
    standup: StandupService
    health: HealthChecks  # what GET /healthz checks; the runner and the bot add theirs
    systemd: SystemdUnits  # the agents' units; starts no process until asked
    scheduler: AsyncIOScheduler  # one per process; started only by `run`, which owns the schedule
    workflows: WorkflowEngine  # workflow runs (docs/workflows-design.md); `run` recovers and ticks it
    routing: RoutingService  # `delegate auto --needs …`: chooses the agent (docs/routing.md)


@asynccontextmanager
async def open_services(
    settings: Settings, config: ClusterConfig, *, db_path: Path | None = None
) -> AsyncIterator[Services]:
    """Open the store, then the HTTP client, then the services on top; close in reverse order."""
    store = Store(db_path or settings.db_path)
    await store.open()
    scheduler = AsyncIOScheduler(timezone="UTC")
    try:
        async with GatewayClient.make_http_client(config.gateway) as http:
            gateway = GatewayClient(http, settings.hooks_token_for, config.gateway)
            cluster = ClusterService(config, gateway)
            tasks = TaskBoard(config, store)
            monitor = StatusMonitor(config, store, cluster, policy=monitor_policy(config))
            if config.taskboard.project_log:  # every front end's changes reach the agents' shared log
                tasks.add_listener(ProjectLog(config.taskboard.project_log))
            delegation = DelegationService(config, store, gateway, tasks=tasks)
            routing = RoutingService(config, store, cluster)
            delegation.on_admission_timeout = routing.admission_timed_out  # the cap routing learns
            routing.chain_members = delegation.chain_members  # a routed sub-delegation skips its chain's agents
            delegation.rerouter = routing.reroute  # a routed delegation its agent does not admit goes to another
            services = Services(
                settings=settings,
                config=config,
                store=store,
                http=http,
                gateway=gateway,
                cluster=cluster,
                delegation=delegation,
                monitor=monitor,
                tasks=tasks,
                heartbeats=HeartbeatService(config, store, gateway),
                standup=StandupService(config, store, monitor),
                health=HealthChecks(),
                systemd=SystemdUnits.from_config(config.systemd),
                scheduler=scheduler,
                workflows=WorkflowEngine(
                    config,
                    store,
                    delegation,
                    gateway,
                    catalog=WorkflowCatalog.from_config(config),
                    output_quiet_s=config.workflows.output_quiet_s,
                ),
                routing=routing,
            )
            services.workflows.routing = routing  # `route:` steps choose their agent at dispatch
            services.health.register("database", database_writable(services))
            tasks.add_listener(services.workflows.task_changed)  # a step that names its task ends with it
            try:
                yield services
            finally:
                await services.workflows.close()
    finally:
        if scheduler.running:
            scheduler.shutdown(wait=False)
        await store.close()


def monitor_policy(config: ClusterConfig) -> MonitorPolicy:
    settings = config.monitor
    return MonitorPolicy(
        down_after=settings.down_after,
        flap_window_s=settings.flap_window_s,
        flap_threshold=settings.flap_threshold,
        reminder_every_s=settings.reminder_every_s,
    )
