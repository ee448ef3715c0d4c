"""Shared fixtures: real config, real SQLite files in tmp_path, real loopback servers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.config import ClusterConfig, GatewayConfig, load_cluster_config, parse_cluster_config
from bot.gateway import GatewayClient
from bot.services import Services, open_services
from bot.settings import Settings
from bot.simulator import RELEASE_CURRENT, SimAgentSpec, SimulatedFleet, free_ports

ROOT = Path(__file__).resolve().parent.parent
SHIPPED_CONFIG = ROOT / "config" / "cluster.toml"
# Recognisable on purpose: the secrecy tests look for these in every log line and error text.
HOOKS_TOKEN = "hooks-SECRET-c0ffee-8d1f5e0b7a6c4d3e"
API_TOKENS = {
    "manager": "api-SECRET-manager-5f1d2c3b4a59687",
    "tech-lead": "api-SECRET-techlead-0a9b8c7d6e5f41",
    "nx-expert": "api-SECRET-nxexpert-77aa66bb55cc4",
    "optimizer": "api-SECRET-optimizer-3e4f5a6b7c8d9",
    "operator": "api-SECRET-operator-1234abcd5678e",
}


@pytest.fixture
def shipped_config() -> ClusterConfig:
    return load_cluster_config(SHIPPED_CONFIG)


@pytest.fixture
def make_config(shipped_config: ClusterConfig) -> Callable[..., ClusterConfig]:
    """The shipped fleet, moved to other ports (base_port, spacing) and otherwise overridden."""

    def build(base_port: int | None = None, spacing: int = 4, **overrides: Any) -> ClusterConfig:
        config = shipped_config if base_port is None else shipped_config.relocated(base_port, spacing)
        raw = config.model_dump(mode="python")
        raw.update(overrides)
        return parse_cluster_config(raw, "test-config")

    return build


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Settings:
    """Settings as an operator would set them, with a database in tmp_path."""
    for name in list(__import__("os").environ):
        if name.startswith("ATOMIZER_") or name == "DISCORD_TOKEN":
            monkeypatch.delenv(name)
    monkeypatch.setenv("ATOMIZER_HOOKS_TOKEN", HOOKS_TOKEN)
    monkeypatch.setenv("ATOMIZER_API_TOKENS", ",".join(f"{k}:{v}" for k, v in API_TOKENS.items()))
    monkeypatch.setenv("ATOMIZER_DB", str(tmp_path / "atomizer.db"))
    monkeypatch.setenv("ATOMIZER_GUILD_ID", "100000000000000001")
    return Settings()


@pytest.fixture
async def services(settings: Settings, shipped_config: ClusterConfig) -> AsyncIterator[Services]:
    """Real services on a fleet that is down: ports nothing listens on, never the shipped ones (where the real fleet
    may run on the machine the tests run on)."""
    async with open_services(settings, shipped_config.relocated(free_ports(8), 4)) as opened:
        yield opened


FleetStarter = Callable[..., Awaitable[tuple[ClusterConfig, SimulatedFleet]]]


@pytest.fixture
async def start_fleet(make_config: Callable[..., ClusterConfig]) -> AsyncIterator[FleetStarter]:
    """Start the shipped fleet as simulated gateways on free ports; everything is stopped afterwards.

    `release` is one release for all, or {agent: release}; `specs` overrides SimAgentSpec fields per agent.
    """
    started: list[SimulatedFleet] = []

    async def start(
        *,
        release: str | dict[str, str] = RELEASE_CURRENT,
        specs: dict[str, dict[str, Any]] | None = None,
        token: str | dict[str, str] = HOOKS_TOKEN,
        **fleet_options: Any,
    ) -> tuple[ClusterConfig, SimulatedFleet]:
        config = make_config(free_ports(8))
        releases = release if isinstance(release, dict) else {}
        fleet = SimulatedFleet(
            [
                SimAgentSpec(
                    name=agent.name,
                    port=agent.port,
                    release=releases.get(agent.name, release if isinstance(release, str) else RELEASE_CURRENT),
                    **(specs or {}).get(agent.name, {}),
                )
                for agent in config.agents
            ],
            token,
            **fleet_options,
        )
        await fleet.start()
        started.append(fleet)
        return config, fleet

    yield start
    for fleet in started:
        await fleet.stop()


@pytest.fixture
async def http_client() -> AsyncIterator[aiohttp.ClientSession]:
    """The HTTP client the gateway client runs on, made the way the services make it."""
    async with GatewayClient.make_http_client(GatewayConfig(connect_timeout=5.0, read_timeout=5.0)) as client:
        yield client


ServicesOnFleet = Callable[..., Awaitable[tuple[Services, SimulatedFleet]]]


@pytest.fixture
async def services_on_fleet(start_fleet: FleetStarter, settings: Settings) -> AsyncIterator[ServicesOnFleet]:
    """Real services (tmp SQLite file) wired to a simulated fleet; `start_fleet`'s options pass through.

    Calling it again opens a second `Services` on the same database: a restarted bot.
    """
    stack = AsyncExitStack()
    fleets: dict[str, tuple[ClusterConfig, SimulatedFleet]] = {}

    async def start(**fleet_options: Any) -> tuple[Services, SimulatedFleet]:
        if "fleet" not in fleets:
            fleets["fleet"] = await start_fleet(**fleet_options)
        config, fleet = fleets["fleet"]
        services = await stack.enter_async_context(open_services(settings, config))
        return services, fleet

    async with stack:
        yield start
