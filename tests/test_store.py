"""The SQLite store: migrations upgrade old files in place; files we must not touch stay byte-for-byte."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import threading
from contextlib import closing
from pathlib import Path

import pytest

from bot.errors import DatabaseRefused, StoreError
from bot.store import APPLICATION_ID, Store, load_migrations


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tables(path: Path) -> set[str]:
    with closing(sqlite3.connect(path)) as conn:
        return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


async def test_new_database_is_made_with_its_directory_and_pragmas(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "atomizer.db"
    async with Store(path) as store:
        assert await store.schema_version() == len(load_migrations())
        assert (await store.fetchone("PRAGMA journal_mode"))[0] == "wal"
        assert (await store.fetchone("PRAGMA foreign_keys"))[0] == 1
        assert (await store.fetchone("PRAGMA busy_timeout"))[0] == 5000
        assert (await store.fetchone("PRAGMA application_id"))[0] == APPLICATION_ID
    assert {"meta", "audit_log", "board_messages"} <= tables(path)


async def test_an_old_version_is_upgraded_in_place_keeping_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "atomizer.db"
    migrations = load_migrations()
    async with Store(path, migrations=migrations[:1]) as old:
        assert await old.schema_version() == 1
        await old.execute(
            "INSERT INTO audit_log (at, actor_kind, actor, front_end, action, decision) VALUES (?, ?, ?, ?, ?, ?)",
            ("2026-11-25T09:00:00+00:00", "person", "antoine", "discord", "delegate", "allowed"),
        )
    assert "board_messages" not in tables(path)

    async with Store(path) as store:
        assert await store.schema_version() == len(migrations)
        row = await store.fetchone("SELECT actor, action FROM audit_log")
        assert tuple(row) == ("antoine", "delegate")
    assert "board_messages" in tables(path)
    backup = path.with_name("atomizer.db.v1.bak")
    assert backup.exists(), "an upgrade keeps a copy of the file as it was"
    with closing(sqlite3.connect(backup)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1


async def test_reopening_a_current_database_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "atomizer.db"
    async with Store(path) as store:
        await store.execute("INSERT INTO meta (key, value) VALUES ('k', 'v')")
    async with Store(path) as store:
        assert tuple(await store.fetchone("SELECT key, value FROM meta")) == ("k", "v")
    assert not list(tmp_path.glob("*.bak"))


async def test_a_failing_migration_leaves_the_previous_version(tmp_path: Path) -> None:
    path = tmp_path / "atomizer.db"
    migrations = load_migrations()
    async with Store(path, migrations=migrations[:1]):
        pass
    bad = [
        *migrations[:1],
        type(migrations[0])(2, "broken", "CREATE TABLE x (a); INSERT INTO nowhere VALUES (1);"),
    ]
    with pytest.raises(StoreError, match="nowhere"):
        await Store(path, migrations=bad).open()
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    assert "x" not in tables(path)


def foreign_db(path: Path) -> None:
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
        conn.execute("INSERT INTO invoices (total) VALUES (12.5)")


async def corrupt_db(path: Path) -> None:
    async with Store(path) as store:
        await store.executemany(
            "INSERT INTO audit_log (at, actor_kind, actor, front_end, action, decision) VALUES (?, ?, ?, ?, ?, ?)",
            [("2026-11-25T09:00:00+00:00", "agent", "x" * 200, "api", "delegate", "allowed")] * 300,
        )
    data = bytearray(path.read_bytes())
    page = 4096
    data[3 * page : 3 * page + 300] = b"\xff" * 300  # scribble over a page of the audit table
    path.write_bytes(bytes(data))


def not_sqlite(path: Path) -> None:
    path.write_text("these are someone's notes, not a database\n" * 20, encoding="utf-8")


async def newer_db(path: Path) -> None:
    async with Store(path):
        pass
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA user_version = 99")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (foreign_db, "another application, not an atomizer-hq database"),
        (corrupt_db, "is corrupt"),
        (not_sqlite, "is not an SQLite database"),
        (newer_db, "has schema v99, newer than this atomizer-hq knows"),
    ],
    ids=["foreign", "corrupt", "not-sqlite", "too-new"],
)
async def test_files_we_must_not_touch_are_refused_and_left_unchanged(tmp_path: Path, make, message: str) -> None:
    path = tmp_path / "atomizer.db"
    result = make(path)
    if asyncio.iscoroutine(result):
        await result
    for sidecar in tmp_path.glob("atomizer.db-*"):
        sidecar.unlink()
    before = digest(path)
    siblings = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(DatabaseRefused, match=message) as caught:
        await Store(path).open()
    assert "left untouched" in str(caught.value)
    assert digest(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == siblings


async def test_an_empty_file_becomes_a_database(tmp_path: Path) -> None:
    path = tmp_path / "atomizer.db"
    path.touch()
    async with Store(path) as store:
        assert await store.schema_version() == len(load_migrations())


async def test_a_transaction_is_all_or_nothing(tmp_path: Path) -> None:
    async with Store(tmp_path / "a.db") as store:
        with pytest.raises(RuntimeError):
            async with store.transaction() as tx:
                await tx.execute("INSERT INTO meta (key, value) VALUES ('a', '1')")
                raise RuntimeError("boom")
        assert await store.fetchone("SELECT * FROM meta") is None
        async with store.transaction() as tx:
            await tx.execute("INSERT INTO meta (key, value) VALUES ('a', '1')")
            await tx.execute("INSERT INTO meta (key, value) VALUES ('b', '2')")
        assert len(await store.fetchall("SELECT * FROM meta")) == 2


async def test_concurrent_writers_on_one_store_lose_nothing(tmp_path: Path) -> None:
    async with Store(tmp_path / "a.db") as store:

        async def writer(n: int) -> None:
            async with store.transaction() as tx:
                await tx.execute("INSERT INTO meta (key, value) VALUES (?, ?)", (f"k{n}", str(n)))
            await store.execute("UPDATE meta SET value = value || '!' WHERE key = ?", (f"k{n}",))

        await asyncio.gather(*(writer(n) for n in range(50)))
        rows = await store.fetchall("SELECT value FROM meta")
        assert sorted(r[0] for r in rows) == sorted(f"{n}!" for n in range(50))


async def test_a_database_locked_by_another_process_gives_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    async with Store(path, busy_timeout_ms=50) as store:
        other = sqlite3.connect(path, isolation_level=None)
        try:
            other.execute("BEGIN EXCLUSIVE")
            with pytest.raises(StoreError, match="locked by another process beyond the busy timeout"):
                await store.execute("INSERT INTO meta (key, value) VALUES ('a', '1')")
        finally:
            other.execute("ROLLBACK")
            other.close()
        # And it recovers once the other process lets go.
        await store.execute("INSERT INTO meta (key, value) VALUES ('a', '1')")
        assert (await store.fetchone("SELECT value FROM meta WHERE key = 'a'"))[0] == "1"


async def test_writes_that_arrive_together_commit_together_but_fail_alone(tmp_path: Path) -> None:
    """Group commit: one bad write among many concurrent ones is rolled back alone and raises to its
    caller; every other write is on disk (seen by another connection) by the time its caller hears back."""
    path = tmp_path / "a.db"
    async with Store(path) as store:

        def insert(n: int):  # type: ignore[no-untyped-def]
            def work(conn: sqlite3.Connection) -> int:
                conn.execute("INSERT INTO meta (key, value) VALUES (?, ?)", (f"k{n}", "first"))
                if n == 7:  # half done, then a constraint error: its first statement must go too
                    conn.execute("INSERT INTO meta (key, value) VALUES ('k0', 'duplicate')")
                return n

            return work

        duplicate = "INSERT INTO meta (key, value) VALUES ('k3', 'duplicate')"  # one statement, after k3's
        outcomes = await asyncio.gather(
            *(store.atomically(insert(n)) for n in range(40)), store.execute(duplicate), return_exceptions=True
        )
        assert isinstance(outcomes[7], sqlite3.IntegrityError)
        assert isinstance(outcomes[40], sqlite3.IntegrityError)
        assert [o for i, o in enumerate(outcomes[:40]) if i != 7] == [n for n in range(40) if n != 7]
        with closing(sqlite3.connect(path)) as other:
            keys = {row[0] for row in other.execute("SELECT key FROM meta WHERE key LIKE 'k%'")}
            k3 = other.execute("SELECT value FROM meta WHERE key = 'k3'").fetchone()[0]
        assert keys == {f"k{n}" for n in range(40) if n != 7}
        assert k3 == "first"
        # The store goes on writing afterwards.
        assert await store.update("UPDATE meta SET value = 'second' WHERE key LIKE 'k%'") == 39


async def test_a_write_cancelled_while_queued_is_not_made(tmp_path: Path) -> None:
    async with Store(tmp_path / "a.db") as store:
        async with store.transaction():  # the database is busy, so the write waits in the queue
            queued = asyncio.ensure_future(store.execute("INSERT INTO meta (key, value) VALUES ('gone', '1')"))
            await asyncio.sleep(0)
            queued.cancel()
        kept = await store.execute("INSERT INTO meta (key, value) VALUES ('kept', '1')")
        assert kept > 0
        assert [row[0] for row in await store.fetchall("SELECT key FROM meta")] == ["kept"]


async def test_writes_queued_at_close_are_committed_not_dropped(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    store = await Store(path).open()
    writes = [asyncio.ensure_future(store.execute("INSERT INTO meta (key, value) VALUES (?, '1')", (f"k{n}",)))
              for n in range(20)]  # fmt: skip
    await asyncio.sleep(0)
    await store.close()
    assert all(write.done() and not write.exception() for write in writes)
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("SELECT count(*) FROM meta WHERE key LIKE 'k%'").fetchone()[0] == 20


async def test_a_transaction_cancelled_while_beginning_leaves_no_lock_behind(tmp_path: Path) -> None:
    """Its BEGIN runs on the database thread after the caller has gone; left open, it would hold the write
    lock and make every later write fail."""
    path = tmp_path / "a.db"
    async with Store(path, busy_timeout_ms=200) as store:

        async def tx() -> None:
            async with store.transaction() as conn:
                await conn.execute("INSERT INTO meta (key, value) VALUES ('tx', '1')")

        task = asyncio.ensure_future(tx())
        await asyncio.sleep(0)  # it has queued its BEGIN
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

        assert await store.execute("INSERT INTO meta (key, value) VALUES ('after', '1')") > 0
        async with store.transaction() as conn:
            await conn.execute("INSERT INTO meta (key, value) VALUES ('after-tx', '1')")
        with closing(sqlite3.connect(path, timeout=0.2)) as other:  # another process can write again
            other.execute("INSERT INTO meta (key, value) VALUES ('other', '1')")
            other.commit()
        keys = {row[0] for row in await store.fetchall("SELECT key FROM meta")}
        assert {"after", "after-tx", "other"} <= keys and "tx" not in keys


async def test_writers_hear_an_unknown_outcome_when_the_committer_is_stopped_mid_commit(tmp_path: Path) -> None:
    """Stopped while the thread commits (a shutdown cancelling tasks), nobody may read "not written"."""
    path = tmp_path / "a.db"
    store = await Store(path).open()
    in_thread = threading.Event()
    release = threading.Event()

    def slow(conn: sqlite3.Connection) -> None:
        in_thread.set()
        release.wait(10)
        conn.execute("INSERT INTO meta (key, value) VALUES ('slow', '1')")

    writes = [asyncio.ensure_future(store.atomically(slow)), asyncio.ensure_future(store.execute(
        "INSERT INTO meta (key, value) VALUES ('quick', '1')"))]  # fmt: skip
    await asyncio.to_thread(in_thread.wait, 10)
    assert store._committer is not None
    store._committer.cancel()
    release.set()
    outcomes = await asyncio.gather(*writes, return_exceptions=True)
    assert all(isinstance(o, StoreError) and "may or may not be recorded" in str(o) for o in outcomes)
    await store.close()  # closes after the group's commit
    with closing(sqlite3.connect(path)) as conn:
        assert {row[0] for row in conn.execute("SELECT key FROM meta")} >= {"slow", "quick"}
