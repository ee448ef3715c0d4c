"""status_fanout: one status round (`ClusterService.probe_all`) against slow, silent and many agents.

- 8 agents answering their readiness probe in 200 ms plus 2 that never answer: the full round, against
  the probe timeout; the 8 alone, against the slowest single probe; and against probing them one after
  another, as cluster.sh did;
- 500 simulated agents answering at once: one round.
Each figure is the median of a few rounds after one warm-up round (the monitor probes every 30 s).
"""

from __future__ import annotations

import time

from bench.common import Bench, Result, bench_settings, fleet_config, fleet_process, median, new_token
from bot.cluster import ClusterService, FleetStatus
from bot.services import open_services
from bot.simulator import free_ports

SLOW_MS = 200.0
ROUNDS = 3
MANY = 500
FLOOR_MARGIN_S = 0.050
FLOOR_HEALTHY = 1.2
FLOOR_VS_SEQUENTIAL = 6.0
FLOOR_MANY_S = 2.0
MANY_BUDGET_S = 10.0  # of rounds with 500 agents, after which no further round is started


async def run(bench: Bench) -> None:
    await _slow_and_silent(bench)
    await _many(bench)


async def _slow_and_silent(bench: Bench) -> None:
    config = fleet_config(free_ports(11), extra_agents=2)
    healthy_config = fleet_config(config.agents[0].port, only=8)
    silent = [a.name for a in config.agents[8:]]
    token = new_token("hooks")
    delays = {a.name: SLOW_MS for a in config.agents[:8]}
    timeout = config.gateway.probe_timeout
    async with fleet_process(
        config, token, bench.workdir, agent_options={n: {"hang": True} for n in silent}, readyz_delay_ms=delays
    ):
        async with open_services(bench_settings(bench.workdir / "fanout.db", token), config) as services:
            full_cluster = services.cluster
            healthy = ClusterService(healthy_config, services.gateway)

            full = await _rounds(full_cluster, expect_ready=8, expect_down=2)
            healthy_s = await _rounds(healthy, expect_ready=8, expect_down=0)
            singles = []
            for agent in healthy_config.agent_names:
                started = time.perf_counter()
                status = await healthy.probe(agent)
                singles.append(time.perf_counter() - started)
                _require(status.state == "ready", f"{agent} probed {status.state}")
            sequential = []
            for _ in range(ROUNDS):
                started = time.perf_counter()
                for agent in healthy_config.agent_names:  # cluster.sh: one agent after another
                    await healthy.probe(agent)
                sequential.append(time.perf_counter() - started)
    slowest = max(singles)
    sequential_s = median(sequential)
    bench.add(
        Result(
            "status_fanout",
            full,
            "s",
            timeout,
            full / timeout,
            f"<= probe timeout + {FLOOR_MARGIN_S * 1000:.0f} ms",
            full <= timeout + FLOOR_MARGIN_S,
            f"8 agents answering in {SLOW_MS:.0f} ms + 2 that never answer (ready 8, down 2); "
            f"baseline: the probe timeout ({timeout:g} s)",
        )
    )
    bench.add(
        Result(
            "status_fanout_healthy",
            healthy_s,
            "s",
            slowest,
            healthy_s / slowest,
            f"ratio <= {FLOOR_HEALTHY:g}",
            healthy_s <= FLOOR_HEALTHY * slowest,
            "the 8 answering agents only; baseline: the slowest single probe",
        )
    )
    bench.add(
        Result(
            "status_fanout_vs_sequential",
            healthy_s,
            "s",
            sequential_s,
            sequential_s / healthy_s,
            f"ratio >= {FLOOR_VS_SEQUENTIAL:g}",
            sequential_s >= FLOOR_VS_SEQUENTIAL * healthy_s,
            "baseline: the same 8 probes one after another (cluster.sh); ratio = how many times faster",
        )
    )


async def _many(bench: Bench) -> None:
    config = fleet_config(free_ports(MANY + 1), extra_agents=MANY - 8)
    token = new_token("hooks")
    rounds: list[FleetStatus] = []
    async with fleet_process(config, token, bench.workdir):
        async with open_services(bench_settings(bench.workdir / "many.db", token), config) as services:
            started = time.perf_counter()
            # The first round opens every connection; a round far over the floor is not repeated much.
            while len(rounds) < 1 + ROUNDS and (len(rounds) < 2 or time.perf_counter() - started < MANY_BUDGET_S):
                rounds.append(await services.cluster.probe_all())
    first, steady = rounds[0].took_s, median([r.took_s for r in rounds[1:]])
    worst = max(first, steady)
    ready = min(r.count("ready") for r in rounds)
    details = sorted({a.readiness.detail for r in rounds for a in r.agents if a.state != "ready"})
    bench.add(
        Result(
            "status_fanout_500",
            worst,
            "s",
            FLOOR_MANY_S,
            worst / FLOOR_MANY_S,
            f"<= {FLOOR_MANY_S:g} s, all ready",
            worst <= FLOOR_MANY_S and ready == MANY,
            f"{MANY} agents answering at once; first (cold) round {first:.2f} s, then median {steady:.2f} s "
            f"(value: the worse); fewest ready in a round: {ready}/{MANY}"
            + (f"; others: {'; '.join(details)[:200]}" if details else ""),
        )
    )


async def _rounds(cluster: ClusterService, *, expect_ready: int, expect_down: int) -> float:
    """Median round time over ROUNDS rounds after a warm-up one; every round must find what is expected."""
    _check(await cluster.probe_all(), expect_ready, expect_down)
    times = [_check(await cluster.probe_all(), expect_ready, expect_down).took_s for _ in range(ROUNDS)]
    return median(times)


def _check(status: FleetStatus, ready: int, down: int) -> FleetStatus:
    _require(
        status.count("ready") == ready and status.count("down") == down,
        f"expected {ready} ready and {down} down, got "
        + ", ".join(f"{a.name}={a.state}" for a in status.agents if a.state != "ready")[:500],
    )
    return status


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise RuntimeError(message)
