"""workflow_fanout: one 200-step workflow run, 100 wide, through WorkflowEngine on 100 simulated agents.

The workflow: 100 roots `r000…r099` (root i on agent i), then 100 steps `c000…c099`, step ci needing
root ri only (each on the same agent as its root). Every agent runs 2026.9.6: the engine follows each
admitted step's completion (a second POST with the same key, answered at once), and the result comes
as the agent would report it (`report_result`, source `api`), all 100 roots' results at once, then
all 100 children's.

- `workflow_fanout`: the service process's CPU time (the event loop and the SQLite thread: the
  engine, its records, the delegations, the HTTP client's share) from `start` until the run has
  succeeded, per step; median of RUNS runs. The baseline: a plain delegation's CPU time, the same 200
  as 2 × 100 `DelegationService.delegate` at once, per delegation.
- `workflow_fanout_dispatch`: max over every step of every run of (hook received at the gateway −
  the moment its needs were met): for a root, the call to `start`; for a child, its root's result
  recorded (the step's `finished_at`). The gateway stamps each hook on the wall clock (`--record`).
  The baseline: the same for the plain delegations (hook received − the call to `delegate`).
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime
from pathlib import Path

from bench.common import Bench, Result, bench_settings, fleet_config, fleet_process, median, new_token, percentile
from bot.authz import AccessLevel, Requester
from bot.services import Services, open_services
from bot.simulator import free_ports
from bot.workflows.definition import WorkflowDefinition

WIDTH = 100
RUNS = 3
FLOOR_CPU_MS = 5.0
FLOOR_DISPATCH_S = 1.0
OPERATOR = Requester(kind="person", name="bench", front_end="api", level=AccessLevel.OPERATOR)


def fanout_definition(agents: list[str]) -> WorkflowDefinition:
    steps: list[dict[str, object]] = []
    for i in range(WIDTH):
        steps.append({"id": f"r{i:03d}", "agent": agents[i], "message": f"Root {i}.", "timeout": "1h"})
    for i in range(WIDTH):
        steps.append({
            "id": f"c{i:03d}", "agent": agents[i], "needs": [f"r{i:03d}"], "timeout": "1h",
            "message": f"Child {i} of: ${{{{ steps.r{i:03d}.output }}}}",
        })  # fmt: skip
    return WorkflowDefinition.model_validate(
        {"name": "bench-fanout", "description": "100 roots, 100 children", "steps": steps}
    )


def hooks_by_key(record: Path) -> dict[str, float]:
    """idempotency key -> when the gateway received the hook (the first time)."""
    found: dict[str, float] = {}
    for line in record.read_text(encoding="utf-8").splitlines():
        hook = json.loads(line)
        if hook["idempotency_key"]:
            found.setdefault(hook["idempotency_key"], hook["at"])
    return found


def unix(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


async def one_run(services: Services, definition: WorkflowDefinition) -> tuple[float, dict[str, float], int]:
    """(CPU seconds, step key -> needs-met time, run id) of one run until it succeeded."""
    engine = services.workflows
    agents = {s.id: s.agent for s in definition.steps if s.kind == "agent"}
    cpu = time.process_time()
    started = time.time()
    run = await engine.start(OPERATOR, definition, {})
    for prefix in ("r", "c"):
        await engine.idle()  # the completions of this wave have been read

        async def report(step_id: str) -> None:
            agent = Requester(kind="agent", name=agents[step_id], front_end="api")
            await engine.report_result(agent, run.id, step_id, ok=True, output=f"{step_id} done", source="api")

        await asyncio.gather(*(report(f"{prefix}{i:03d}") for i in range(WIDTH)))
    cpu = time.process_time() - cpu
    detail = await engine.get(run.id)
    if detail.run.status != "succeeded":
        raise RuntimeError(f"{run.display_id} ended {detail.run.status}: {detail.run.error}")
    finished = {s.step_id: s.finished_at for s in detail.steps}
    met: dict[str, float] = {}
    for step in detail.steps:
        needs = definition.step(step.step_id).needs
        parent = finished[needs[0]] if needs else None
        met[step.key] = unix(parent) if parent else started
    return cpu, met, run.id


async def run(bench: Bench) -> None:
    config = fleet_config(free_ports(WIDTH + 1), extra_agents=WIDTH - 8)
    agents = config.agent_names
    token = new_token("hooks")
    record = bench.workdir / "hooks.jsonl"
    definition = fanout_definition(agents)
    cpu_per_step: list[float] = []
    delays: list[float] = []
    async with fleet_process(config, token, bench.workdir, record=record):
        async with open_services(bench_settings(bench.workdir / "fanout.db", token), config) as services:
            await services.monitor.probe_round()  # as `run` does: the releases are known before work arrives
            # The baseline: 2 × 100 plain delegations at once (a warm-up wave first).
            plain_met: dict[int, float] = {}

            async def delegate(i: int, wave: int) -> None:
                at = time.time()
                result = await services.delegation.delegate(OPERATOR, agents[i], f"plain {wave}/{i}")
                assert result.delegation is not None and result.delegation.status == "accepted"
                if wave > 0:
                    plain_met[result.delegation.id] = at

            await asyncio.gather(*(delegate(i, 0) for i in range(WIDTH)))
            cpu = time.process_time()
            for wave in (1, 2):
                await asyncio.gather(*(delegate(i, wave) for i in range(WIDTH)))
            plain_cpu_ms = (time.process_time() - cpu) * 1000 / (2 * WIDTH)
            plain = "SELECT id, idem_key FROM delegations WHERE workflow_step IS NULL"
            keys = {int(row[0]): row[1] for row in await services.store.fetchall(plain)}
            await one_run(services, definition)  # warm-up: the engine's code paths and connections
            met: dict[str, float] = {}
            for _ in range(RUNS):
                cpu_s, run_met, _ = await one_run(services, definition)
                cpu_per_step.append(cpu_s * 1000 / len(definition.steps))
                met.update(run_met)
            step_keys = {
                row[0]: row[1]
                for row in await services.store.fetchall(
                    "SELECT workflow_step, idem_key FROM delegations WHERE workflow_step IS NOT NULL"
                )
            }
    hooks = hooks_by_key(record)
    missing = [key for key in met if step_keys.get(key) not in hooks]
    delays = [hooks[step_keys[key]] - at for key, at in met.items() if key not in missing]
    plain_delays = [hooks[keys[d]] - at for d, at in plain_met.items() if keys.get(d) in hooks]
    value, worst = median(cpu_per_step), max(delays)
    plain_worst = max(plain_delays)
    complete = not missing and len(plain_delays) == 2 * WIDTH
    spread = ", ".join(f"{v:.2f}" for v in cpu_per_step)
    bench.add(
        Result(
            "workflow_fanout",
            value,
            "ms/step",
            plain_cpu_ms,
            value / plain_cpu_ms,
            f"<= {FLOOR_CPU_MS:g} ms/step (median)",
            value <= FLOOR_CPU_MS and complete,
            f"{RUNS} runs of {len(definition.steps)} steps ({WIDTH} roots on {WIDTH} agents + {WIDTH} steps each "
            f"needing one root), service CPU per step from start to succeeded: dispatch, completion, result, "
            f"advance ({spread}); baseline: CPU per plain delegation, 2 × {WIDTH} at once",
        )
    )
    bench.add(
        Result(
            "workflow_fanout_dispatch",
            worst,
            "s",
            plain_worst,
            worst / plain_worst,
            f"<= {FLOOR_DISPATCH_S:g} s (max)",
            worst <= FLOOR_DISPATCH_S and complete,
            f"hook received − needs met, max over {len(delays)} steps (p50 {percentile(delays, 50) * 1000:.0f} ms, "
            f"p99 {percentile(delays, 99) * 1000:.0f} ms); baseline: hook received − delegate called, max over "
            f"{len(plain_delays)} plain delegations, {WIDTH} at once"
            + (f"; {len(missing)} steps with no hook" if missing else ""),
        )
    )
