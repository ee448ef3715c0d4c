"""approval_to_dispatch: from an approval to the next step's hook arriving at the agent, p99 over many runs.

Each run is a two-step workflow: an approval gate (`role:admin`), then an agent step on nx-expert
(2026.9.6) that needs it. Started by an operator, approved by an admin through `WorkflowEngine.approve`
(the check, the decision's transaction, the pass that dispatches the step). The figure is the gateway's
receipt of the hook (stamped on the wall clock, `--record`) minus the moment `approve` was called; one run
at a time, after the previous run's completion was read. The baseline: a plain delegation's time to hook
(`DelegationService.delegate` called → the hook received), as many, one at a time, in the same run.
"""

from __future__ import annotations

import time

from bench.common import Bench, Result, bench_settings, fleet_config, fleet_process, median, new_token, percentile
from bench.workflow_fanout import hooks_by_key
from bot.authz import AccessLevel, Requester
from bot.services import open_services
from bot.simulator import free_ports
from bot.workflows.definition import WorkflowDefinition

RUNS = 300
WARMUP = 20
FLOOR_P99_MS = 100.0
AGENT = "nx-expert"
OPERATOR = Requester(kind="person", name="starter", front_end="api", level=AccessLevel.OPERATOR, user_id="1001")
ADMIN = Requester(kind="person", name="approver", front_end="api", level=AccessLevel.ADMIN, user_id="1002")

GATED = WorkflowDefinition.model_validate(
    {
        "name": "bench-gate",
        "description": "an approval, then one agent step",
        "steps": [
            {"id": "gate", "approval": {"prompt": "Go?", "approvers": ["role:admin"]}},
            {"id": "work", "agent": AGENT, "needs": ["gate"], "message": "Do it.", "timeout": "1h"},
        ],
    }
)


async def run(bench: Bench) -> None:
    config = fleet_config(free_ports(9))
    token = new_token("hooks")
    record = bench.workdir / "hooks.jsonl"
    approved_at: dict[str, float] = {}  # workflow step key -> approve called
    called_at: dict[int, float] = {}  # plain delegation id -> delegate called
    async with fleet_process(config, token, bench.workdir, record=record):
        async with open_services(bench_settings(bench.workdir / "approval.db", token), config) as services:
            engine = services.workflows
            await services.monitor.probe_round()
            for i in range(WARMUP + RUNS):
                at = time.time()
                result = await services.delegation.delegate(OPERATOR, AGENT, f"plain {i}")
                assert result.delegation is not None and result.delegation.status == "accepted"
                if i >= WARMUP:
                    called_at[result.delegation.id] = at
            for i in range(WARMUP + RUNS):
                started = await engine.start(OPERATOR, GATED, {})
                at = time.time()
                outcome = await engine.approve(ADMIN, started.id, "gate", approve=True)
                assert outcome.decided and outcome.status == "approved"
                await engine.idle()
                if i >= WARMUP:
                    approved_at[f"{started.display_id}/work#1"] = at
            keys = {
                row[0] if row[0] else int(row[1]): row[2]
                for row in await services.store.fetchall("SELECT workflow_step, id, idem_key FROM delegations")
            }
            running = await services.store.fetchone("SELECT count(*) FROM workflow_steps WHERE status = 'running'")
    hooks = hooks_by_key(record)
    gaps = [(hooks[keys[key]] - at) * 1000 for key, at in approved_at.items() if keys.get(key) in hooks]
    plain = [(hooks[keys[d]] - at) * 1000 for d, at in called_at.items() if keys.get(d) in hooks]
    value, baseline = percentile(gaps, 99), percentile(plain, 99)
    complete = len(gaps) == RUNS and len(plain) == RUNS and running is not None and running[0] == WARMUP + RUNS
    bench.add(
        Result(
            "approval_to_dispatch",
            value,
            "ms",
            baseline,
            value / baseline,
            f"<= {FLOOR_P99_MS:g} ms (p99)",
            value <= FLOOR_P99_MS and complete,
            f"{RUNS} runs (gate → agent step), approve called → the step's hook received, one run at a time "
            f"(median {median(gaps):.1f} ms, max {max(gaps):.1f} ms); baseline: delegate called → hook received, "
            f"p99 of {len(plain)} plain delegations (median {median(plain):.1f} ms)",
        )
    )
