"""The fleet at a glance: every agent probed at once, so one silent agent never delays the others."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from bot.config import AgentConfig, ClusterConfig
from bot.gateway import GatewayClient, Readiness

PROBE_WAVE = 32


@dataclass(frozen=True)
class AgentStatus:
    """One agent's configuration and what its latest probe found."""

    name: str
    port: int
    model: str
    readiness: Readiness

    @property
    def state(self) -> str:
        return self.readiness.state


@dataclass(frozen=True)
class FleetStatus:
    agents: list[AgentStatus]
    took_s: float

    def count(self, state: str) -> int:
        return sum(1 for agent in self.agents if agent.state == state)


class ClusterService:
    """Probes gateways; the status monitor, history and alerts build on this."""

    def __init__(self, config: ClusterConfig, gateway: GatewayClient) -> None:
        self._config = config
        self._gateway = gateway

    async def probe(self, name: str, timeout: float | None = None) -> AgentStatus:
        agent = self._config.require_agent(name)
        return _status(agent, await self._gateway.readiness(agent, timeout))

    async def probe_all(self, timeout: float | None = None) -> FleetStatus:
        """Probe every agent concurrently; the round is bounded by the probe timeout."""
        started = time.perf_counter()
        # Past a few dozen requests in flight, one HTTP pool spends more time scanning its queue than
        # probing: waves of PROBE_WAVE keep a big fleet's round short; a fleet of 8 is one wave.
        gate = asyncio.Semaphore(PROBE_WAVE)

        async def probe(agent: AgentConfig) -> Readiness:
            async with gate:
                return await self._gateway.readiness(agent, timeout)

        results = await asyncio.gather(*(probe(agent) for agent in self._config.agents))
        agents = [_status(agent, result) for agent, result in zip(self._config.agents, results, strict=True)]
        return FleetStatus(agents, time.perf_counter() - started)


def _status(agent: AgentConfig, readiness: Readiness) -> AgentStatus:
    return AgentStatus(agent.name, agent.port, agent.model, readiness)
