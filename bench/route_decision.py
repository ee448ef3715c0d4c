"""route_decision: choosing the agent for `delegate auto --needs …` among 500 agents of mixed capabilities and states.

The decision itself (bot.routing.router.decide: every filter for every agent, the ranking, the explanation, with
the requester's authority worked out once) over a snapshot of 500 simulated agents: some down, some silenced,
some at their cap, different loads and acceptance records, ~10% the requester may not delegate to. Baseline:
naming the agent directly (the config lookup and the authority decision `delegate` makes for a named agent).
Also reported: the same decision with its snapshot read from a real SQLite file (RoutingService.preview: the
monitor's rows, work in flight, acceptance, learned caps), as the front ends make it.
"""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime, timedelta

from bench.common import Bench, Result, bench_settings, fleet_config, median, new_token, percentile
from bot.authz import Requester
from bot.clock import iso
from bot.config import ClusterConfig, parse_cluster_config
from bot.delegation import authorize
from bot.routing.router import authority_of, decide
from bot.routing.snapshot import AgentFacts, Snapshot
from bot.services import open_services

AGENTS = 500
COUNT = 2_000
WARMUP = 200
FLOOR_MS = 1.0
VOCABULARY = ("cad", "nx", "meshing", "fea", "cfd", "thermal", "optics", "materials-data", "research", "review",
              "notes", "planning")  # fmt: skip
NEEDS = (("meshing",), ("meshing", "fea"), ("thermal",))


def fleet(seed: int = 14) -> tuple[ClusterConfig, Requester]:
    """500 agents with 1-4 capabilities each; tech-lead (the requester) may not delegate to a tenth of them."""
    rng = random.Random(seed)
    config = fleet_config(20_000, extra_agents=AGENTS - 8)
    raw = config.model_dump(mode="python")
    names = [agent["name"] for agent in raw["agents"]]
    for agent in raw["agents"][8:]:
        agent["capabilities"] = rng.sample(VOCABULARY, rng.randint(1, 4))
    lead = next(agent for agent in raw["agents"] if agent["name"] == "tech-lead")
    lead["delegates_to"] = ["*", "!manager", *(f"!{name}" for name in rng.sample(names[8:], AGENTS // 10))]
    return parse_cluster_config(raw, "bench-config"), Requester(kind="agent", name="tech-lead", front_end="api")


def snapshot(config: ClusterConfig, seed: int = 15) -> Snapshot:
    rng = random.Random(seed)
    now = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
    agents = []
    for agent in config.agents:
        ready = rng.random() > 0.2
        silenced = now + timedelta(hours=1) if rng.random() < 0.05 else None
        ended = rng.randint(0, 20)
        agents.append(
            AgentFacts(agent.name, frozenset(agent.capabilities), ready, "ready" if ready else "down since 09:58 (…)",
                       silenced, "alice" if silenced else None, rng.randint(0, 5), 3 if rng.random() < 0.2 else None,
                       "learned 09:50 from a 503", rng.randint(0, ended), ended)
        )  # fmt: skip
    return Snapshot(now, tuple(agents))


async def run(bench: Bench) -> None:
    config, requester = fleet()
    facts = snapshot(config)
    chosen_names = [agent.name for agent in config.agents[8:]]
    decisions: list[float] = []
    direct: list[float] = []
    chosen = 0
    for i in range(WARMUP + COUNT):
        needs = NEEDS[i % len(NEEDS)]
        started = time.perf_counter()
        decision = decide(facts, requester.name, needs, authority_of(config, requester))
        took = (time.perf_counter() - started) * 1000
        name = chosen_names[i % len(chosen_names)]
        started = time.perf_counter()
        config.require_agent(name)
        authorize(config, requester, name)
        baseline = (time.perf_counter() - started) * 1000
        if i >= WARMUP:
            decisions.append(took)
            direct.append(baseline)
            chosen += decision.chosen is not None
    value, base = median(decisions), median(direct)
    bench.add(
        Result(
            "route_decision", value, "ms", base, value / base, f"<= {FLOOR_MS:g} ms (median)", value <= FLOOR_MS,
            f"{COUNT} decisions among {AGENTS} agents (needs {', '.join('+'.join(n) for n in NEEDS)} in turn; "
            f"{chosen} chose an agent); p99 {percentile(decisions, 99):.3f} ms; baseline: naming the agent "
            "(config lookup + authority), median",
        )
    )  # fmt: skip
    await _with_snapshot(bench, config, requester)


async def _with_snapshot(bench: Bench, config: ClusterConfig, requester: Requester) -> None:
    """The same, the snapshot read from SQLite as the front ends do (the monitor's rows fresh: nothing probed)."""
    settings = bench_settings(bench.workdir / "route.db", new_token("hooks"))
    rng = random.Random(16)
    async with open_services(settings, config) as services:
        now = iso(datetime.now(UTC))
        await services.store.executemany(
            "INSERT INTO agent_health (agent, observed, observed_since, confirmed, confirmed_since, last_probe_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [(name, state, now, "up" if state == "ready" else "down", now, now)
             for name in services.config.agent_names
             for state in ["ready" if rng.random() > 0.2 else "down"]],
        )  # fmt: skip
        await services.store.executemany(
            "INSERT INTO delegations (idem_key, created_at, updated_at, requester_kind, requester, front_end, agent, "
            "message, deliver, status, attempts, expires_at, accepted_at) "
            "VALUES (?, ?, ?, 'person', 'bench', 'cli', ?, 'x', 0, ?, 1, ?, ?)",
            [(new_token("k"), now, now, rng.choice(services.config.agent_names), status, now, now)
             for status in rng.choices(("accepted", "failed", "queued"), (8, 1, 1), k=5_000)],
        )  # fmt: skip
        times = []
        for i in range(60):
            started = time.perf_counter()
            await services.routing.preview(requester, NEEDS[i % len(NEEDS)])
            if i >= 10:
                times.append((time.perf_counter() - started) * 1000)
    bench.add(
        Result(
            "route_decision_with_snapshot", median(times), "ms", None, None, "report only", True,
            f"RoutingService.preview among {AGENTS} agents with 5,000 delegations on record, median of 50: the "
            "snapshot's four SQLite reads and the decision",
        )
    )  # fmt: skip
