"""The daily standup, field by field, on a seeded database; within Discord's limits for 8 and 50 agents."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.boards import FIELDS_MAX, TOTAL_MAX
from bot.clock import iso
from bot.cluster import ClusterService
from bot.config import ClusterConfig, parse_cluster_config
from bot.monitor import StatusMonitor
from bot.standup import MAX_EMBEDS, collect_standup, render_standup, standup_text
from bot.store import Store
from tests.clocks import FakeClock

NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with Store(tmp_path / "atomizer.db") as opened:
        yield opened


async def seed(store: Store) -> None:
    def at(hours_ago: float) -> str:
        return iso(NOW - timedelta(hours=hours_ago))

    for agent, state in (("manager", "ready"), ("webster", "down")):
        await store.execute(
            "INSERT INTO agent_health (agent, observed, observed_since, confirmed, confirmed_since, last_probe_at) "
            "VALUES (?, ?, ?, 'up', ?, ?)",
            (agent, state, at(30), at(30), at(0)),
        )
    await store.execute("INSERT INTO agent_transitions (agent, at, to_state) VALUES ('manager', ?, 'ready')", (at(30),))
    await store.execute("INSERT INTO agent_transitions (agent, at, to_state) VALUES ('webster', ?, 'ready')", (at(30),))
    await store.execute(
        "INSERT INTO agent_transitions (agent, at, from_state, to_state) VALUES ('webster', ?, 'ready', 'down')",
        (at(6),),
    )
    runs = [("manager", h, "ok") for h in range(1, 21)] + [("manager", 22, "run_failed")]
    runs += [("webster", 7, "ok"), ("webster", 5.5, "skipped"), ("webster", 5, "skipped"), ("webster", 30, "ok")]
    for agent, hours, status in runs:
        await store.execute(
            "INSERT INTO heartbeat_runs (agent, slot, trigger, status, started_at) VALUES (?, ?, 'schedule', ?, ?)",
            (agent, at(hours), status, at(hours)),
        )
    for index, (agent, status) in enumerate(
        [("nx-expert", "accepted"), ("nx-expert", "accepted"), ("nx-expert", "failed"), ("webster", "queued")]
    ):
        await store.execute(
            "INSERT INTO delegations (idem_key, created_at, updated_at, requester_kind, requester, front_end, agent, "
            "message, deliver, status, expires_at) VALUES (?, ?, ?, 'person', 'antoine', 'discord', ?, 'm', 1, ?, ?)",
            (f"k{index}", at(2), at(2), agent, status, at(-1)),
        )
    for title, status, due, updated in (
        ("Mesh", "done", None, 3), ("Old", "done", None, 40), ("Tune", "in_progress", "2026-11-20", 1),
        ("Wait", "blocked", None, 1),
    ):  # fmt: skip
        await store.execute(
            "INSERT INTO tasks (title, status, assignee_kind, assignee, due, creator_kind, creator, created_at, "
            "updated_at) VALUES (?, ?, 'agent', 'nx-expert', ?, 'person', 'antoine', ?, ?)",
            (title, status, due, at(50), at(updated)),
        )


async def test_the_standup_reports_every_agent_field_by_field(store: Store, shipped_config: ClusterConfig) -> None:
    await seed(store)
    monitor = StatusMonitor(shipped_config, store, ClusterService(shipped_config, None), clock=FakeClock(NOW))  # type: ignore[arg-type]
    report = await collect_standup(shipped_config, store, monitor, NOW)
    [part] = render_standup(report)
    fields = {f.name: f.value for f in part.fields}
    assert list(fields)[:1] == ["🟢 manager"] and len(fields) == 8
    assert fields["🟢 manager"].splitlines() == [
        "ready · up 100.0 %",
        "heartbeats 20 ok / 1 failed / 0 skipped",
        "delegations 0 in / 0 accepted / 0 failed",
        "tasks 0 done / 0 in progress / 0 blocked",
    ]
    webster = fields["🔴 webster"].splitlines()
    assert webster[0] == "down · up 75.0 %"
    assert webster[1] == "heartbeats 1 ok / 0 failed / 2 skipped"
    assert webster[-1] == "skipped heartbeat slots (policy skip): 03:30, 04:00"  # named, never silent
    assert fields["⚪ nx-expert"].splitlines()[2:] == [
        "delegations 3 in / 2 accepted / 1 failed",
        "tasks 1 done / 1 in progress / 1 blocked",
        "**1 overdue**",
    ]
    assert part.description.startswith("8 agents, 1 ready · heartbeats 21 ok / 1 failed / 2 skipped")
    assert "tasks 1 done / 1 in progress / 1 blocked · 1 overdue" in part.description
    assert "Daily standup · 24 h to 2026-11-25 09:00 UTC" == part.title
    assert "skipped heartbeat slots (policy skip): 03:30, 04:00" in standup_text([part])


@pytest.mark.parametrize("agents", [8, 50])
async def test_the_standup_stays_one_message_within_discords_limits(
    store: Store, shipped_config: ClusterConfig, agents: int
) -> None:
    raw = shipped_config.model_dump(mode="python", exclude_none=True)
    raw["agents"] = [
        {"name": f"agent-{i:02d}-with-a-long-name", "port": 20000 + i * 4, "model": "Gemini 2.5 Pro"}
        for i in range(agents)
    ]
    raw["heartbeat"] = {}
    config = parse_cluster_config(raw, "big")
    monitor = StatusMonitor(config, store, ClusterService(config, None), clock=FakeClock(NOW))  # type: ignore[arg-type]
    report = await collect_standup(config, store, monitor, NOW)
    for day in report.agents:
        day.heartbeats = {"ok": 48, "failed": 0, "skipped": 12}
        day.skipped_slots = ["01:00", "01:30", "02:00", "02:30", "03:00", "03:30", "04:00"]
        day.delegations = {"received": 120, "accepted": 118, "failed": 2}
        day.tasks = {"done": 10, "in_progress": 3, "blocked": 1, "overdue": 2}
    parts = render_standup(report)
    assert len(parts) <= MAX_EMBEDS
    assert sum(p.size() for p in parts) <= TOTAL_MAX
    assert all(len(p.fields) <= FIELDS_MAX for p in parts)
    assert sum(len(p.fields) for p in parts) == agents  # every agent is in it


async def test_a_chain_is_counted_once_under_its_root_with_how_deep_it_went(
    store: Store, shipped_config: ClusterConfig
) -> None:
    at = iso(NOW - timedelta(hours=2))
    chain = [  # (agent, message, parent, depth): tech-lead's root, three sub-delegations under it
        ("tech-lead", "Run the M2 mirror study end to end, with the thermal case", None, 1),
        ("optimizer", "Tune the supports", 1, 2),
        ("nx-expert", "Mesh the M2 mirror", 2, 3),
        ("webster", "Find the CTE", 1, 2),
    ]
    for index, (agent, message, parent, depth) in enumerate(chain, start=1):
        await store.execute(
            "INSERT INTO delegations (idem_key, created_at, updated_at, requester_kind, requester, front_end, agent, "
            "message, deliver, status, expires_at, parent_id, root_id, depth) "
            "VALUES (?, ?, ?, 'agent', 'manager', 'api', ?, ?, 1, 'accepted', ?, ?, 1, ?)",
            (f"k{index}", at, at, agent, message, at, parent, depth),
        )
    monitor = StatusMonitor(shipped_config, store, ClusterService(shipped_config, None), clock=FakeClock(NOW))  # type: ignore[arg-type]
    [part] = render_standup(await collect_standup(shipped_config, store, monitor, NOW))
    fields = {f.name: f.value for f in part.fields}
    assert "delegations 1 in / 1 accepted / 0 failed" in fields["⚪ tech-lead"]
    for agent in ("optimizer", "nx-expert", "webster"):  # counted in the chain, not again per agent
        assert "delegations 0 in / 0 accepted / 0 failed" in fields[f"⚪ {agent}"]
    assert "delegations 1 in / 1 accepted" in part.description
    assert fields["Chains (1)"] == "D-1 tech-lead: Run the M2 mirror study end to end, wit… (chain of 4, 3 deep)"
    assert "D-1 tech-lead: Run the M2 mirror study" in standup_text([part])
