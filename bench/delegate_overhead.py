"""delegate_overhead: the core's own time per delegation, one at a time, against an agent that answers at once.

Each delegation's wall time through `DelegationService.delegate` minus its HTTP exchange with the gateway
(`latency_ms`, timed by the gateway client around the POST): what is left is the authority check, the
validation, the SQLite record, the claim and the status update, and the scheduling between them.
"""

from __future__ import annotations

import time

from bench.common import Bench, Result, bench_settings, fleet_config, fleet_process, median, new_token, percentile
from bot.authz import AccessLevel, Requester
from bot.services import open_services
from bot.simulator import free_ports

COUNT = 500
WARMUP = 50
FLOOR_MS = 2.0


async def run(bench: Bench) -> None:
    config = fleet_config(free_ports(9))
    token = new_token("hooks")
    requester = Requester(kind="person", name="bench", front_end="api", level=AccessLevel.OPERATOR)
    agents = config.agent_names
    async with fleet_process(config, token, bench.workdir):
        async with open_services(bench_settings(bench.workdir / "overhead.db", token), config) as services:
            service = services.delegation
            overheads: list[float] = []
            exchanges: list[float] = []
            for i in range(WARMUP + COUNT):
                started = time.perf_counter()
                result = await service.delegate(requester, agents[i % len(agents)], f"bench delegation {i}")
                total_ms = (time.perf_counter() - started) * 1000
                delegation = result.delegation
                if delegation is None or delegation.status != "accepted" or delegation.latency_ms is None:
                    raise RuntimeError(f"delegation {i} was not accepted: {delegation}")
                if i >= WARMUP:
                    overheads.append(total_ms - delegation.latency_ms)
                    exchanges.append(delegation.latency_ms)
    value = median(overheads)
    exchange = median(exchanges)
    bench.add(
        Result(
            "delegate_overhead",
            value,
            "ms",
            exchange,
            value / exchange,
            f"<= {FLOOR_MS:g} ms (median)",
            value <= FLOOR_MS,
            f"{COUNT} delegations one at a time; core time p90 {percentile(overheads, 90):.2f} ms, "
            f"p99 {percentile(overheads, 99):.2f} ms; baseline: the HTTP exchange with the agent (median)",
        )
    )
