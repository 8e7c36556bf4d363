"""SQLite backend (aiosqlite): the embedded default, a file created on first start.

WAL mode with synchronous=FULL: a commit is on disk before the writer returns, so an
acknowledged change survives kill -9 and power loss. Two connections: the writer (one
transaction per group-committed flush) and a reader (loads and log reads, which WAL lets
run beside the writer without blocking it).
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite
import anyio

from engine.runtime.errors import StoreUnavailable
from persistence import sql
from persistence.durable import DurableStore
from persistence.schema import MIGRATIONS

__all__ = ["SQLiteStore"]

_STATEMENTS = [(w, sql.insert_statement(w)) for w in sql.WRITES]
_PURGES = sql.purge_statements("rowid")
_SET_GENERATION = ("INSERT INTO key_generations (generation, period) VALUES (?, ?) "
                   "ON CONFLICT (generation) DO UPDATE SET period = excluded.period")



@asynccontextmanager
async def _immediate(db: aiosqlite.Connection) -> AsyncIterator[None]:
    """One write transaction: BEGIN IMMEDIATE (takes the write lock at once, so a reader
    never has to be upgraded), COMMIT on success, ROLLBACK on any failure or cancellation,
    shielded so a cancelled caller still leaves the connection outside a transaction."""
    await db.execute("BEGIN IMMEDIATE")
    try:
        yield
        await db.execute("COMMIT")
    except BaseException:
        with anyio.CancelScope(shield=True):
            try:
                await db.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # the failure may have ended the transaction already
        raise

class SQLiteStore(DurableStore):
    dialect = "sqlite"

    def __init__(self, path: str | Path, *, busy_timeout_ms: int = 5000, cache_mb: int = 32,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.path = Path(path)
        self.busy_timeout_ms = busy_timeout_ms
        # Page cache per connection (two connections). SQLite's default, 2 MB, holds the
        # interior pages of small tables only: once the ledger and the keys outgrow it,
        # every insert reads its leaf back from the OS, and throughput sagged as they grew.
        self.cache_mb = cache_mb
        self._last_number = 0
        self._wdb: aiosqlite.Connection | None = None
        self._rdb: aiosqlite.Connection | None = None
        # The writer connection also runs migrations and purges; one at a time, never
        # inside a flush's transaction.
        self._wlock = anyio.Lock()

    async def _open_connection(self, *, writer: bool) -> aiosqlite.Connection:
        db = await aiosqlite.connect(self.path, isolation_level=None)
        try:
            await db.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
            await db.execute(f"PRAGMA cache_size = -{int(self.cache_mb) * 1024}")
            if writer:
                await self._enable_wal(db)
            await db.execute("PRAGMA synchronous = FULL")
            await db.execute("PRAGMA foreign_keys = OFF")
        except BaseException:
            with anyio.CancelScope(shield=True):
                await db.close()
            raise
        return db

    async def _enable_wal(self, db: aiosqlite.Connection) -> None:
        """WAL is a property of the file, set once by the writer connection. Switching to
        it needs a moment of exclusive access, and SQLite answers "database is locked" at
        once, without waiting out the busy timeout, when another process is opening the
        same new file; so retry within the busy timeout."""
        deadline = anyio.current_time() + self.busy_timeout_ms / 1000
        while True:
            try:
                await db.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or anyio.current_time() >= deadline:
                    raise
            await anyio.sleep(0.01)

    async def _connect(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._wdb = await self._open_connection(writer=True)
        try:
            self._rdb = await self._open_connection(writer=False)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._disconnect()
            raise

    async def _disconnect(self) -> None:
        for db in (self._rdb, self._wdb):
            if db is not None:
                await db.close()
        self._rdb = self._wdb = None

    async def _fetch(self, query: str, *params: Any) -> Sequence[Sequence[Any]]:
        assert self._rdb is not None
        async with self._rdb.execute(query, params) as cursor:
            return list(await cursor.fetchall())

    async def _migrate(self) -> int:
        assert self._wdb is not None
        db = self._wdb
        async with self._wlock:
            version = 0
            for number, statements in enumerate(MIGRATIONS["sqlite"], start=1):
                # Read the version inside the write transaction: several processes may
                # start on an empty file at once, and only one may apply each step.
                async with _immediate(db):
                    await db.execute(
                        "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
                    async with db.execute("SELECT max(version) FROM schema_version") as cur:
                        row = await cur.fetchone()
                    version = (row[0] if row else None) or 0
                    if number > version:
                        for statement in statements:
                            await db.execute(statement)
                        await db.execute("INSERT INTO schema_version (version) VALUES (?)",
                                         (number,))
                        version = number
            return version

    async def _opened(self) -> None:
        # One process writes a SQLite file, so it hands out customer numbers itself.
        (row,) = await self._fetch(sql.MAX_CUSTOMER_NUM)
        self._last_number = int(row[0])

    async def _new_number(self) -> int:
        # A number handed out for a customer whose first write then failed is skipped.
        self._last_number += 1
        return self._last_number

    async def _write(self, rows: dict[str, list[tuple]]) -> None:
        assert self._wdb is not None
        db = self._wdb
        async with self._wlock, _immediate(db):
            for w, statement in _STATEMENTS:
                if rows[w.unit]:
                    await db.executemany(statement, rows[w.unit])

    async def _rotate(self, generation: int, period: int) -> None:
        assert self._wdb is not None
        db = self._wdb
        async with self._wlock, _immediate(db):
            # A DELETE without WHERE empties the table in one step (SQLite's truncate
            # optimization); its pages go to the free list and are reused.
            await db.execute(f"DELETE FROM {sql.KEY_TABLES[generation]}")
            await db.execute(_SET_GENERATION, (generation, period))

    async def _transact(self, steps: list[tuple[str, Sequence[Sequence[Any]]]]) -> None:
        assert self._wdb is not None
        db = self._wdb
        async with self._wlock, _immediate(db):
            for query, rows in steps:
                await db.executemany(query, rows)

    async def execute(self, query: str, *params: Any) -> int:
        assert self._wdb is not None
        try:
            async with self._wlock:
                cursor = await self._wdb.execute(query, params)
                count = cursor.rowcount
                await cursor.close()
                return count
        except Exception as exc:
            raise self._translate(exc) from exc

    async def _purge(self, before_ms: int, limit: int) -> int:
        assert self._wdb is not None
        async with self._wlock:
            removed = 0
            for query in _PURGES:
                cursor = await self._wdb.execute(query, (before_ms, limit))
                removed += cursor.rowcount
                await cursor.close()
            return removed

    def _unavailable(self, exc: BaseException) -> StoreUnavailable | None:
        """Unavailable when SQLite says the file or the disk cannot take the work now —
        busy or locked past the busy timeout, read-only, full, an I/O error, out of
        memory, unopenable or damaged — or the connection is closed; None (a bug) when it
        refused the statement itself (SQL errors, constraints, misuse). Sorted by SQLite's
        primary result code, the part of `sqlite_errorcode` that names the kind."""
        if isinstance(exc, StoreUnavailable):
            return exc
        code = getattr(exc, "sqlite_errorcode", None)
        closed = isinstance(exc, (sqlite3.ProgrammingError, ValueError)) and (
            "closed" in str(exc).lower() or "no active connection" in str(exc))  # aiosqlite's words
        if closed or isinstance(exc, OSError) or (code is not None
                                                  and code & 0xFF in _UNAVAILABLE_CODES):
            return StoreUnavailable(f"SQLite is unavailable: {exc}", retry_after_s=1.0)
        return None


# SQLITE_BUSY, _LOCKED, _NOMEM, _READONLY, _INTERRUPT, _IOERR, _CORRUPT, _FULL, _CANTOPEN,
# _PROTOCOL, _NOTADB (https://www.sqlite.org/rescode.html): the storage, not the statement.
_UNAVAILABLE_CODES = frozenset({5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 26})
