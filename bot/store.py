"""The one SQLite file (aiosqlite): WAL, foreign keys, a busy timeout, numbered migrations.

Before anything writes to an existing file, it is inspected read-only: a file that is not an
atomizer database, is corrupt, or was written by a newer atomizer-hq is refused and left
byte-for-byte as it was. Migrations live in `bot/migrations/NNNN_name.sql` and are applied in
order, each in one transaction that also bumps `PRAGMA user_version`.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import os
import re
import sqlite3
import tempfile
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from bot.errors import DatabaseRefused, StoreError

log = logging.getLogger(__name__)

APPLICATION_ID = 0x41544D5A  # "ATMZ": marks a file as ours
SQLITE_MAGIC = b"SQLite format 3\x00"
DEFAULT_BUSY_TIMEOUT_MS = 5_000
_MIGRATION_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

Params = Sequence[Any] | dict[str, Any]
_UNKNOWN_OUTCOME = (
    "the database writer was stopped while committing this write; it may or may not be recorded: "
    "look before repeating it"
)
T = TypeVar("T")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def load_migrations() -> list[Migration]:
    """The shipped migrations, numbered 1..N without gaps."""
    found = []
    for entry in resources.files("bot.migrations").iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    for expected, migration in enumerate(found, start=1):
        if migration.version != expected:
            raise RuntimeError(f"migrations must be numbered 1..N without gaps; found {migration.version}")
    return found


@dataclass(frozen=True)
class FileState:
    """What a read-only look at the file found."""

    exists: bool
    version: int = 0


class Store:
    """One connection to the database, shared by every service of the process."""

    def __init__(
        self,
        path: Path,
        *,
        busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS,
        migrations: list[Migration] | None = None,
    ) -> None:
        self.path = Path(path)
        self.busy_timeout_ms = busy_timeout_ms
        self.migrations = migrations if migrations is not None else load_migrations()
        self._db: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()  # one trip or one transaction() at a time
        self._writes: list[tuple[Callable[[sqlite3.Connection], Any], bool, asyncio.Future[Any]]] = []
        self._committer: asyncio.Task[None] | None = None

    @property
    def latest_version(self) -> int:
        return self.migrations[-1].version if self.migrations else 0

    # --- life cycle ---------------------------------------------------------------------------

    async def open(self) -> Store:
        state = await asyncio.to_thread(inspect_file, self.path, self.latest_version)
        if not state.exists:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise DatabaseRefused(  # a place we cannot use is bad configuration (exit 2)
                    f"cannot create the database's directory {self.path.parent} ({exc.strerror}); "
                    "point ATOMIZER_DB or --db at a writable place"
                ) from None
        try:
            db = await aiosqlite.connect(self.path, isolation_level=None)
        except sqlite3.Error as exc:
            raise _unwritable_place(self.path) or StoreError(f"cannot open the database {self.path}: {exc}") from None
        db.row_factory = sqlite3.Row
        self._db = db
        try:
            await db.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
            await db.execute("PRAGMA foreign_keys = ON")
            await db.execute("PRAGMA journal_mode = WAL")
            await db.execute("PRAGMA synchronous = NORMAL")
            await self._migrate(state.version)
        except sqlite3.OperationalError as exc:
            await self.close()
            if "unable to open" in str(exc):  # SQLite's words for "could not create the file or its -wal"
                raise _unwritable_place(self.path) or StoreError(_explain_operational(self.path, exc)) from None
            raise StoreError(_explain_operational(self.path, exc)) from None
        except BaseException:
            await self.close()
            raise
        return self

    async def close(self) -> None:
        if self._committer is not None:  # writes already queued are committed, not dropped
            await asyncio.wait({self._committer})  # its callers hear how it ended; close regardless
        if self._db is not None:
            db, self._db = self._db, None
            await db.close()

    async def __aenter__(self) -> Store:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _migrate(self, current: int) -> None:
        pending = [m for m in self.migrations if m.version > current]
        if not pending:
            return
        if current > 0:
            backup = self.path.with_name(f"{self.path.name}.v{current}.bak")
            await asyncio.to_thread(_backup, self.path, backup)
            log.info("database %s: schema v%d backed up to %s before upgrading", self.path, current, backup)
        db = self._conn
        for migration in pending:
            script = (
                "BEGIN IMMEDIATE;\n"
                f"{migration.sql}\n;"
                f"PRAGMA application_id = {APPLICATION_ID};\n"
                f"PRAGMA user_version = {migration.version};\n"
                "COMMIT;"
            )
            try:
                await db.executescript(script)
            except sqlite3.Error:
                if db.in_transaction:
                    await db.execute("ROLLBACK")
                raise
            log.info("database %s: migrated to v%d (%s)", self.path, migration.version, migration.name)

    # --- queries ------------------------------------------------------------------------------

    @property
    def _conn(self) -> aiosqlite.Connection:
        if self._db is None:
            raise StoreError("the database is not open")
        return self._db

    async def schema_version(self) -> int:
        row = await self.fetchone("PRAGMA user_version")
        return int(row[0]) if row else 0

    # Every method below is one trip to the database thread: a trip costs far more than the statement
    # (a thread hand-off and a wake-up of the event loop), so the hot paths count them. Writes go
    # further: those that arrive while a trip is under way share the next one (group commit).

    async def execute(self, sql: str, params: Params = ()) -> int:
        """Run one write statement in its own transaction; returns the last row id."""
        return await self._write(lambda conn: conn.execute(sql, params).lastrowid or 0, single=True)

    async def update(self, sql: str, params: Params = ()) -> int:
        """Run one UPDATE/DELETE in its own transaction; returns how many rows it changed (claims rely on it)."""
        return await self._write(lambda conn: conn.execute(sql, params).rowcount, single=True)

    async def returning(self, sql: str, params: Params = ()) -> list[sqlite3.Row]:
        """Run one write statement with a RETURNING clause in its own transaction; returns the rows it wrote.

        Every row is read before the transaction ends, so the statement completes (and commits) within it.
        """
        return await self._write(lambda conn: _fetch_all(conn, sql, params), single=True)

    async def executemany(self, sql: str, rows: Iterable[Params]) -> None:
        async with self.transaction() as tx:
            await tx.executemany(sql, rows)

    async def fetchone(self, sql: str, params: Params = ()) -> sqlite3.Row | None:
        return await self._call(lambda conn: _fetch_one(conn, sql, params))

    async def fetchall(self, sql: str, params: Params = ()) -> list[sqlite3.Row]:
        return await self._call(lambda conn: _fetch_all(conn, sql, params))

    async def atomically(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run `work(connection)` atomically: all of its statements are committed, or none.

        `work` runs on the database thread, so it must only run statements and plain Python, never await
        or block on anything else. Calls that arrive while the database thread is busy are committed
        together, each in a savepoint of one BEGIN IMMEDIATE … COMMIT: a `work` that raises is rolled
        back alone and raises to its caller; the others commit. Nobody hears back before the COMMIT, so
        an answer still means "on disk" (as far as synchronous=NORMAL in WAL mode promises).
        """
        return await self._write(work, single=False)

    async def _write(self, work: Callable[[sqlite3.Connection], T], *, single: bool) -> T:
        """Queue `work` for the next group commit. `single`: it runs one statement, which SQLite undoes
        by itself if it fails, so it needs no savepoint of its own."""
        if self._db is None:
            raise StoreError("the database is not open")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._writes.append((work, single, future))
        if self._committer is None:
            self._committer = asyncio.create_task(self._commit_writes())
        return await future

    async def _commit_writes(self) -> None:
        """Drain the write queue, one transaction per trip, until nobody waits."""
        try:
            while self._writes:
                async with self._lock:
                    batch = [write for write in self._writes if not write[2].cancelled()]
                    self._writes = []
                    if not batch:
                        continue
                    try:
                        db = self._conn
                        works = [(work, single) for work, single, _ in batch]
                        outcomes = await db._execute(_commit_group, db._conn, works)
                    except Exception as exc:  # the whole transaction failed: nothing of it was kept
                        error = self._write_error(exc)
                        for *_, future in batch:
                            if not future.done():
                                future.set_exception(copy.copy(error))  # one instance per caller
                        continue
                    except BaseException:  # this task was cancelled: the thread may still commit the group
                        for *_, future in batch:
                            if not future.done():
                                future.set_exception(StoreError(_UNKNOWN_OUTCOME))
                        raise
                for (*_, future), (ok, value) in zip(batch, outcomes, strict=True):
                    if future.done():
                        continue
                    if ok:
                        future.set_result(value)
                    else:
                        future.set_exception(self._write_error(value))
        finally:
            self._committer = None
            for *_, future in self._writes:  # queued when this task was cancelled: not made, not left hanging
                if not future.done():
                    future.set_exception(StoreError("the database writer stopped before this write; it was not made"))
            self._writes = []

    def _write_error(self, exc: BaseException) -> BaseException:
        """What a writer hears: SQLite's operational errors explained (one instance per caller)."""
        if isinstance(exc, sqlite3.OperationalError):
            return StoreError(_explain_operational(self.path, exc))
        return exc

    async def _call(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """`work(connection)` on the database thread, in one trip, serialized with every other access."""
        async with self._lock:
            db = self._conn
            try:
                # aiosqlite runs every call of a connection on its one thread, in order; `_execute` is how
                # its own helpers queue a call there (stable across the pinned aiosqlite versions).
                return await db._execute(work, db._conn)
            except sqlite3.OperationalError as exc:
                raise StoreError(_explain_operational(self.path, exc)) from None

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """Several statements that stand or fall together (BEGIN IMMEDIATE: writers queue, never deadlock)."""
        async with self._lock:
            db = self._conn
            try:
                await db._execute(_begin, db._conn)
            except sqlite3.OperationalError as exc:
                raise StoreError(_explain_operational(self.path, exc)) from None
            try:
                yield db
            except BaseException as exc:
                # SQLite has already rolled back after some errors (a full disk, an I/O error): a second
                # ROLLBACK would fail and hide the real cause behind "no transaction is active".
                if db.in_transaction:
                    await db.execute("ROLLBACK")
                if isinstance(exc, sqlite3.OperationalError):
                    raise StoreError(_explain_operational(self.path, exc)) from None
                raise
            else:
                try:
                    await db.execute("COMMIT")
                except sqlite3.Error as exc:
                    if db.in_transaction:
                        await db.execute("ROLLBACK")
                    raise StoreError(_explain_operational(self.path, exc)) from None


def _commit_group(
    conn: sqlite3.Connection, works: list[tuple[Callable[[sqlite3.Connection], Any], bool]]
) -> list[tuple[bool, Any]]:
    """On the database thread: every work in one transaction, each undone alone if it fails (a
    savepoint around several statements; SQLite's own statement rollback for a single one)."""
    outcomes: list[tuple[bool, Any]] = []
    _begin(conn)
    try:
        for work, single in works:
            if not single:
                conn.execute("SAVEPOINT work")
            try:
                result = work(conn)
            except Exception as exc:
                if not conn.in_transaction:
                    # SQLite rolled the whole transaction back (a full disk, an I/O error): the works
                    # before this one are gone too, so the group fails as one.
                    raise
                if not single:
                    conn.execute("ROLLBACK TO work")
                    conn.execute("RELEASE work")
                outcomes.append((False, exc))
            else:
                if not single:
                    conn.execute("RELEASE work")
                outcomes.append((True, result))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return outcomes


def _begin(conn: sqlite3.Connection) -> None:
    """BEGIN IMMEDIATE on the database thread, first rolling back a transaction left open by a caller
    cancelled while its BEGIN was queued (it ran after the caller had gone): left open, it would hold
    the write lock and make every later BEGIN fail."""
    if conn.in_transaction:
        log.warning("database: rolled back a transaction a cancelled caller had left open")
        conn.execute("ROLLBACK")
    conn.execute("BEGIN IMMEDIATE")


def _fetch_one(conn: sqlite3.Connection, sql: str, params: Params) -> sqlite3.Row | None:
    cursor = conn.execute(sql, params)
    try:
        row: sqlite3.Row | None = cursor.fetchone()
        return row
    finally:
        cursor.close()


def _fetch_all(conn: sqlite3.Connection, sql: str, params: Params) -> list[sqlite3.Row]:
    return conn.execute(sql, params).fetchall()


def inspect_file(path: Path, latest: int) -> FileState:
    """Look at an existing file read-only; refuse what we must not touch."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return FileState(exists=False)
    except NotADirectoryError:
        in_the_way = next((p for p in reversed(path.parents) if p.exists() and not p.is_dir()), path.parent)
        raise DatabaseRefused(
            f"cannot use {path} as the database: {in_the_way} is a file, not a directory; "
            "point ATOMIZER_DB or --db at a file in a directory"
        ) from None
    except PermissionError as exc:
        raise DatabaseRefused(
            f"cannot look at the database {path} ({exc.strerror}); make its directory readable for this user "
            "or point ATOMIZER_DB or --db elsewhere"
        ) from None
    if path.is_dir():
        raise DatabaseRefused(
            f"{path} is a directory, not a database file; point ATOMIZER_DB or --db at a file, "
            f"e.g. {path / 'atomizer.db'}"
        )
    if size == 0:
        return FileState(exists=True)
    with path.open("rb") as handle:
        header = handle.read(len(SQLITE_MAGIC))
    if header != SQLITE_MAGIC:
        raise DatabaseRefused(
            f"{path} is not an SQLite database (it does not start with the SQLite header); "
            "it was left untouched: point ATOMIZER_DB or --db at another file"
        )
    # Without a -wal file beside it, open it immutable: SQLite then creates no -shm/-wal files either.
    wal = path.with_name(path.name + "-wal").exists()
    query = "mode=ro" if wal else "mode=ro&immutable=1"
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?{query}", uri=True)
    except sqlite3.Error as exc:
        raise DatabaseRefused(f"{path} cannot be opened ({exc}); it was left untouched") from None
    try:
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = conn.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table'").fetchone()[0]
        if app_id != APPLICATION_ID and (app_id != 0 or tables > 0):
            raise DatabaseRefused(
                f"{path} is an SQLite database of another application, not an atomizer-hq database; "
                "it was left untouched: point ATOMIZER_DB or --db at another file"
            )
        if version > latest:
            raise DatabaseRefused(
                f"{path} has schema v{version}, newer than this atomizer-hq knows (v{latest}); "
                "it was left untouched: upgrade atomizer-hq, or use a backup made for this version"
            )
        check = conn.execute("PRAGMA quick_check(1)").fetchone()[0]
        if check != "ok":
            raise DatabaseRefused(
                f"{path} is corrupt ({check}); it was left untouched: restore a backup, "
                "or move it aside to start a new database"
            )
    except sqlite3.DatabaseError as exc:
        raise DatabaseRefused(
            f"{path} is corrupt or unreadable ({exc}); it was left untouched: restore a backup, "
            "or move it aside to start a new database"
        ) from None
    finally:
        conn.close()
    return FileState(exists=True, version=int(version))


def _backup(source: Path, target: Path) -> None:
    src = sqlite3.connect(f"{source.resolve().as_uri()}?mode=ro", uri=True)
    dst = sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()


def _unwritable_place(path: Path) -> DatabaseRefused | None:
    """The refusal to give when SQLite "is unable to open" the database because its directory is not writable.

    Found by trying, not by mode bits: root passes every permission check, yet cannot create files in
    /sys or on a read-only mount. SQLite needs the directory for the file itself and for its -wal and -shm.
    """
    directory = path.parent
    try:
        handle, probe = tempfile.mkstemp(dir=directory, prefix=f".{path.name}-probe-")
        os.close(handle)
        os.unlink(probe)
    except OSError as exc:
        return DatabaseRefused(
            f"cannot open the database {path}: its directory {directory} is not writable ({exc.strerror}); "
            "SQLite creates the database and its -wal and -shm files there: make it writable for this user, "
            "or point ATOMIZER_DB or --db at a writable place"
        )
    return None


def _explain_operational(path: Path, exc: sqlite3.Error) -> str:
    text = str(exc)
    if "locked" in text or "busy" in text:
        return (
            f"the database {path} is locked by another process beyond the busy timeout; "
            "nothing was written: retry, or stop the other process"
        )
    if "readonly" in text or "read-only" in text:
        return f"the database {path} is read-only; nothing was written: make it writable for this user"
    if "disk" in text and ("full" in text or "I/O" in text):
        advice = "free disk space" if "full" in text else "check the disk and its file system (dmesg)"
        return f"the database {path} could not be written ({text}); nothing was written: {advice}"
    return f"database error on {path}: {text}"
