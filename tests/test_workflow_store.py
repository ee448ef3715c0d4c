"""Migration 0007: an older database upgrades; the database itself refuses a second dispatch of an attempt."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from bot.store import Store, load_migrations
from bot.workflows.store import STEP_STATUSES, TRANSITIONS, parse_run_id, step_key

_ROW = (
    "INSERT INTO delegations (idem_key, created_at, updated_at, requester_kind, requester, front_end, agent, "
    "message, deliver, status, expires_at{extra}) VALUES (?, 't', 't', 'person', 'a', 'cli', 'nx-expert', 'm', 1, "
    "'queued', 't'{marks})"
)


async def test_a_v6_database_upgrades_and_keeps_its_delegations(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    async with Store(path, migrations=load_migrations()[:6]) as old:
        await old.execute(_ROW.format(extra="", marks=""), ("k1",))
    async with Store(path) as store:
        assert await store.schema_version() == len(load_migrations())
        row = await store.fetchone("SELECT idem_key, workflow_step FROM delegations")
        assert row is not None and tuple(row) == ("k1", None)
        await store.execute(_ROW.format(extra="", marks=""), ("k2",))  # NULLs do not collide
        await store.execute(_ROW.format(extra=", workflow_step", marks=", ?"), ("k3", "W-1/mesh#1"))
        with pytest.raises(sqlite3.IntegrityError):
            await store.execute(_ROW.format(extra=", workflow_step", marks=", ?"), ("k4", "W-1/mesh#1"))
        tables = {r[0] for r in await store.fetchall("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"workflow_runs", "workflow_steps", "workflow_approvals", "workflow_events"} <= tables
    assert (tmp_path / "old.db.v6.bak").exists()


def test_ids_and_keys() -> None:
    assert parse_run_id("W-3") == parse_run_id("w3") == parse_run_id(3) == 3
    assert step_key(3, "mesh", 1) == "W-3/mesh#1"
    for sources, target in TRANSITIONS.values():  # the table names only states the schema allows
        assert target in STEP_STATUSES and sources <= set(STEP_STATUSES)
