"""Shared pieces of the robustness suite: bounded waits on conditions, never fixed sleeps."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from bot.api import LoopbackApi
from bot.settings import HUMAN_IDENTITIES, Settings
from tests.conftest import ServicesOnFleet
from tests.test_api_delegations import Hq

T = TypeVar("T")
POLL_S = 0.05


async def wait_for(probe: Callable[[], T | Awaitable[T]], *, timeout: float = 15.0, what: str = "the condition") -> T:
    """Poll `probe` (sync or async) until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value  # type: ignore[return-value]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(POLL_S)


def read_rows(db: Path, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
    """A read-only look at the database another process is writing (WAL: never blocks the writer)."""
    if not db.exists():
        return []
    conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=5)
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute(sql, params).fetchall()
    except sqlite3.OperationalError:  # the schema is not there yet
        return []
    finally:
        conn.close()


@pytest.fixture
async def hq(services_on_fleet: ServicesOnFleet, settings: Settings) -> AsyncIterator[Hq]:
    """The loopback API on 127.0.0.1 over real services and a simulated fleet (as tests/test_api_delegations.py)."""
    services, fleet = await services_on_fleet()
    api = LoopbackApi(services, settings.api_identities([*services.config.agent_names, *HUMAN_IDENTITIES]))
    await api.start("127.0.0.1", 0)
    try:
        async with httpx.AsyncClient(base_url=api.url, timeout=10, trust_env=False) as client:
            yield Hq(api, services, fleet, client)
    finally:
        await api.stop()
