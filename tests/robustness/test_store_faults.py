"""Store faults under the running service: a lock held by another process, disk full, I/O error, read-only.

Each fault is injected under the loopback API and the delegation and task services, then lifted. What must
hold: the caller gets a clear error (503 `store_error` naming the cause), no half-written record is left
(a delegation without its audit row, a task without its history), reads keep working, and the same
service instance works again once the fault is gone. tests/test_store.py covers the Store alone
(a locked database, all-or-nothing transactions).
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import httpx
import pytest

from bot.authz import AccessLevel, Requester
from bot.errors import StoreError
from bot.gateway import GatewayClient
from bot.services import Services
from bot.store import Store
from tests.conftest import ServicesOnFleet
from tests.test_api_delegations import Hq, auth

OPERATOR = Requester(kind="person", name="antoine", front_end="cli", level=AccessLevel.OPERATOR)
DEFAULT_MAX_PAGES = 1_073_741_823
BIG = "Mesh the M2 mirror. " + "Detail. " * 12_000  # ~96 KB: needs fresh pages, so a full disk refuses it
Fault = Callable[[Store], AbstractAsyncContextManager[str]]


# --- the faults: each yields the words the error must contain -----------------------------------


@asynccontextmanager
async def locked_by_another_process(store: Store) -> AsyncIterator[str]:
    """Another process holds the write lock for longer than our busy timeout (shortened to 0.2 s here)."""
    holder = await asyncio.create_subprocess_exec(
        sys.executable, "-c",
        "import sqlite3, sys\n"
        "conn = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
        "conn.execute('BEGIN IMMEDIATE')\n"
        "print('locked', flush=True)\n"
        "sys.stdin.readline()\n"
        "conn.execute('ROLLBACK')\n",
        str(store.path), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert holder.stdin is not None and holder.stdout is not None
    await store.fetchone("PRAGMA busy_timeout = 200")
    try:
        assert await asyncio.wait_for(holder.stdout.readline(), 10) == b"locked\n"
        yield "locked by another process beyond the busy timeout; nothing was written"
    finally:
        holder.stdin.write(b"go\n")
        await holder.stdin.drain()
        assert await asyncio.wait_for(holder.wait(), 10) == 0
        await store.fetchone(f"PRAGMA busy_timeout = {store.busy_timeout_ms}")


@asynccontextmanager
async def disk_full(store: Store) -> AsyncIterator[str]:
    """No page may be added to the file: SQLite answers exactly as on a full disk (SQLITE_FULL)."""
    row = await store.fetchone("PRAGMA page_count")
    assert row is not None
    await store.fetchone(f"PRAGMA max_page_count = {row[0]}")
    try:
        yield "could not be written (database or disk is full); nothing was written: free disk space"
    finally:
        await store.fetchone(f"PRAGMA max_page_count = {DEFAULT_MAX_PAGES}")


@asynccontextmanager
async def io_error(store: Store) -> AsyncIterator[str]:
    """Every write to the write-ahead log fails (EBADF → SQLITE_IOERR), reads still work.

    The WAL's descriptor is swapped for a read-only one on the same file with dup2, and swapped back.
    """
    await store.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('robustness', 'wal is open')")
    wal = os.path.realpath(f"{store.path}-wal")
    [fd] = [int(fd) for fd in os.listdir("/proc/self/fd") if os.path.realpath(f"/proc/self/fd/{fd}") == wal]
    saved, read_only = os.dup(fd), os.open(wal, os.O_RDONLY)
    os.dup2(read_only, fd)
    try:
        yield "could not be written (disk I/O error); nothing was written: check the disk"
    finally:
        os.dup2(saved, fd)
        os.close(saved)
        os.close(read_only)


@asynccontextmanager
async def read_only(store: Store) -> AsyncIterator[str]:
    """The database refuses writes. Not chmod: the suite may run as root, which ignores file modes;
    `PRAGMA query_only` makes SQLite refuse writes with the same error as a read-only file."""
    await store.fetchone("PRAGMA query_only = 1")
    try:
        yield "is read-only; nothing was written"
    finally:
        await store.fetchone("PRAGMA query_only = 0")


FAULTS = pytest.mark.parametrize(
    "fault", [locked_by_another_process, disk_full, io_error, read_only], ids=["locked", "disk-full", "io", "ro"]
)


# --- what was written ---------------------------------------------------------------------------


async def records(services: Services) -> dict[str, Any]:
    store = services.store
    delegations = [r["id"] for r in await store.fetchall("SELECT id FROM delegations ORDER BY id")]
    audited = [
        r["detail"] for r in await store.fetchall("SELECT detail FROM audit_log WHERE action = 'delegate' ORDER BY id")
    ]
    tasks = [r["id"] for r in await store.fetchall("SELECT id FROM tasks ORDER BY id")]
    events = await store.fetchall("SELECT task_id FROM task_events WHERE action = 'create' ORDER BY id")
    created = [r["task_id"] for r in events]
    return {"delegations": delegations, "audited": len(audited), "tasks": tasks, "created": created}


def assert_whole(state: dict[str, Any]) -> None:
    """Every delegation has its audit row, every task its creation event: nothing half-written."""
    assert len(state["delegations"]) == state["audited"], state
    assert state["tasks"] == state["created"], state


def assert_store_error(response: httpx.Response, words: str) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["error"] == "store_error" and words in body["detail"], body


async def fill_until_full(hq: Hq) -> httpx.Response:
    """Add tasks with long descriptions until one is refused (a full disk leaves the last pages some room)."""
    for index in range(40):
        response = await hq.client.post(
            "/v1/tasks", headers=auth("operator"), json={"title": f"Filler {index}", "description": "x" * 1999}
        )
        if response.status_code != 201:
            return response
    raise AssertionError("40 tasks of 2 KB fitted into a database that may not grow")


# --- the tests ------------------------------------------------------------------------------------


@FAULTS
async def test_a_store_fault_is_a_clear_503_leaves_nothing_half_written_and_passes(hq: Hq, fault: Fault) -> None:
    await hq.client.post("/v1/tasks", headers=auth("operator"), json={"title": "Before the fault"})
    before = await records(hq.services)

    async with fault(hq.services.store) as words:
        delegated = await hq.delegate("manager", "nx-expert", BIG)
        assert_store_error(delegated, words)
        if fault is disk_full:
            added = await fill_until_full(hq)
        else:
            added = await hq.client.post("/v1/tasks", headers=auth("operator"), json={"title": "During the fault"})
        assert_store_error(added, words)
        # The service keeps running: it answers, and reads work.
        listed = await hq.client.get("/v1/tasks", headers=auth("manager"))
        assert listed.status_code == 200 and listed.json()["tasks"][0]["title"] == "Before the fault"
        assert (await hq.client.get("/v1/whoami", headers=auth("manager"))).status_code == 200

    after = await records(hq.services)
    assert after["delegations"] == before["delegations"] and after["audited"] == before["audited"]
    assert_whole(after)
    assert hq.fleet.received() == []

    # The same instance works again once the fault is lifted.
    delegated = await hq.delegate("manager", "nx-expert", BIG)
    assert delegated.status_code == 202 and delegated.json()["status"] == "accepted", delegated.text
    added = await hq.client.post("/v1/tasks", headers=auth("operator"), json={"title": "After the fault"})
    assert added.status_code == 201, added.text
    assert_whole(await records(hq.services))
    assert len(hq.fleet.received("nx-expert")) == 1
    health = await hq.client.get("/healthz")
    assert health.status_code == 200 and health.json()["database"] == "ok"


@FAULTS
async def test_the_core_maps_each_fault_to_a_store_error(services_on_fleet: ServicesOnFleet, fault: Fault) -> None:
    services, fleet = await services_on_fleet()
    async with fault(services.store) as words:
        with pytest.raises(StoreError, match=re.escape(words)):
            await services.delegation.delegate(OPERATOR, "webster", BIG)
        with pytest.raises(StoreError):
            await services.tasks.add(OPERATOR, "During the fault", description="x" * 1999)
            if fault is disk_full:  # the last pages may take one more; the next one cannot fit
                for _ in range(40):
                    await services.tasks.add(OPERATOR, "Filler", description="x" * 1999)
    assert fleet.received() == []
    assert_whole(await records(services))
    result = await services.delegation.delegate(OPERATOR, "webster", BIG)
    assert result.delegation is not None and result.delegation.status == "accepted"


class FaultAfterSend:
    """A gateway client that lets the request through, then makes the database fail before the answer is recorded."""

    def __init__(self, real: GatewayClient, fault: AbstractAsyncContextManager[str]) -> None:
        self._real = real
        self.fault = fault
        self.active = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    async def send_agent_hook(self, *args: Any, **kwargs: Any) -> Any:
        accepted = await self._real.send_agent_hook(*args, **kwargs)
        await self.fault.__aenter__()
        self.active = True
        return accepted

    async def lift(self) -> None:
        if self.active:
            await self.fault.__aexit__(None, None, None)
            self.active = False


async def test_a_store_fault_after_the_agent_accepted_is_not_reported_as_nothing_written(
    services_on_fleet: ServicesOnFleet,
) -> None:
    services, fleet = await services_on_fleet()
    gateway = FaultAfterSend(services.gateway, read_only(services.store))
    services.delegation._gateway = gateway  # type: ignore[assignment]
    try:
        with pytest.raises(StoreError) as caught:
            await services.delegation.delegate(OPERATOR, "webster", "Find the CTE of Zerodur")
    finally:
        await gateway.lift()
    [run] = fleet.received("webster")
    [delegation] = await services.delegation.recent()
    # Expected: the error owns up to what was done, and the running outbox settles the record by itself.
    assert delegation.display_id in str(caught.value) and "nothing was written" not in str(caught.value)
    await services.delegation.process_due()
    settled = await services.delegation.get(delegation.id)
    assert settled.status == "accepted" and settled.run_id == run.run_id


@FAULTS
async def test_concurrent_writes_under_a_fault_each_stand_or_fall_whole(
    services_on_fleet: ServicesOnFleet, fault: Fault
) -> None:
    """Writes that arrive together share one transaction (group commit): under a fault each caller still
    hears a clear error or a real success, and no record is half-written."""
    services, fleet = await services_on_fleet()
    async with fault(services.store) as words:
        outcomes = await asyncio.gather(
            *(services.tasks.add(OPERATOR, f"Task {i}", description="x" * 1999) for i in range(12)),
            *(services.delegation.delegate(OPERATOR, "webster", f"{BIG} {i}") for i in range(4)),
            return_exceptions=True,
        )
    failures = [o for o in outcomes if isinstance(o, BaseException)]
    assert failures, "the fault refused nothing"
    for failure in failures:
        assert isinstance(failure, StoreError) and words in str(failure), repr(failure)
    state = await records(services)
    assert_whole(state)
    added = [o for o in outcomes[:12] if not isinstance(o, BaseException)]
    assert sorted(task.id for task in added) == state["tasks"]  # every success is stored, nothing else is
    sent = [o for o in outcomes[12:] if not isinstance(o, BaseException)]
    assert len(fleet.received("webster")) == len(sent) == len(state["delegations"])
