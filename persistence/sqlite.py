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
from persistence.codec import Unit
from persistence.durable import DurableStore
from persistence.schema import MIGRATIONS

__all__ = ["SQLiteStore"]

_STATEMENTS = [(w, sql.insert_statement(w)) for w in sql.WRITES]
_PURGES = sql.purge_statements("rowid")



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

    def __init__(self, path: str | Path, *, busy_timeout_ms: int = 5000, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.path = Path(path)
        self.busy_timeout_ms = busy_timeout_ms
        self._wdb: aiosqlite.Connection | None = None
        self._rdb: aiosqlite.Connection | None = None
        # The writer connection also runs migrations and purges; one at a time, never
        # inside a flush's transaction.
        self._wlock = anyio.Lock()

    async def _open_connection(self, *, writer: bool) -> aiosqlite.Connection:
        db = await aiosqlite.connect(self.path, isolation_level=None)
        try:
            await db.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
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

    async def _write(self, units: list[Unit], first_outbox_id: int) -> None:
        assert self._wdb is not None
        db = self._wdb
        outbox = []
        next_id = first_outbox_id
        for u in units:
            for event in u.events:
                outbox.append((next_id, *event))
                next_id += 1
        async with self._wlock, _immediate(db):
            for w, statement in _STATEMENTS:
                if w.unit == "outbox":
                    rows = outbox
                else:
                    rows = [r for u in units for r in getattr(u, w.unit)]
                if rows:
                    await db.executemany(statement, rows)

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
        if isinstance(exc, (sqlite3.OperationalError, sqlite3.DatabaseError, OSError, ValueError)):
            # Locked, busy, disk full or I/O errors; aiosqlite raises ValueError when the
            # connection is closed.
            return StoreUnavailable(f"SQLite is unavailable: {exc}", retry_after_s=1.0)
        return None
