"""A read-only snapshot of a creditd database, for `creditd export`.

Every page of every file of one export is read inside one read transaction, so the
files agree with each other and with the cursor printed at the end, while a server keeps
writing the same database:

- SQLite: a connection of its own with a deferred `BEGIN`; its first read fixes the
  snapshot (WAL lets it read while the server's writer commits; the WAL cannot be
  checkpointed past the snapshot until the export ends, so it grows meanwhile).
- PostgreSQL: one connection in a `REPEATABLE READ READ ONLY` transaction.

Not the server's store: opening one would migrate, start a writer, read the key filter
back. The export writes nothing, and refuses a schema other than the one this creditd
writes (a newer one would be misread; an older one needs `creditd migrate`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio

from persistence.schema import LATEST_VERSION
from persistence.sql import numbered

__all__ = ["ExportError", "Snapshot", "open_snapshot", "sqlite_path"]


class ExportError(RuntimeError):
    """What an operator can act on; printed as one line."""


class Snapshot:
    """`fetch(query, *params)` with `?` placeholders, inside the snapshot."""

    dialect = ""

    async def fetch(self, query: str, *params: Any) -> Sequence[Sequence[Any]]:
        raise NotImplementedError


class _SQLiteSnapshot(Snapshot):
    dialect = "sqlite"

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        # One call at a time on the connection, from whichever worker thread runs it.
        self._limiter = anyio.CapacityLimiter(1)

    async def fetch(self, query: str, *params: Any) -> Sequence[Sequence[Any]]:
        return await anyio.to_thread.run_sync(
            lambda: self._db.execute(query, params).fetchall(), limiter=self._limiter)


class _PgSnapshot(Snapshot):
    dialect = "postgresql"

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    async def fetch(self, query: str, *params: Any) -> Sequence[Sequence[Any]]:
        return await self._conn.fetch(numbered(query), *params)


def sqlite_path(url: str) -> Path:
    return Path(url[len("sqlite:///"):])


async def _check_version(snapshot: Snapshot) -> None:
    try:
        (row,) = await snapshot.fetch("SELECT max(version) FROM schema_version")
    except Exception as exc:  # noqa: BLE001 - no such table: not a creditd database
        raise ExportError(f"not a creditd database ({exc})") from None
    version = int(row[0] or 0)
    if version > LATEST_VERSION:
        raise ExportError(f"the database schema is at version {version}, newer than this "
                          f"creditd understands ({LATEST_VERSION}): use a newer creditd")
    if version < LATEST_VERSION:
        raise ExportError(f"the database schema is at version {version}: run `creditd "
                          f"migrate` (or start the server) to bring it to {LATEST_VERSION}")


@asynccontextmanager
async def open_snapshot(url: str) -> AsyncIterator[Snapshot]:
    """A snapshot of the database at `url` (sqlite:///… or postgresql://…)."""
    if url.startswith("sqlite:///"):
        path = sqlite_path(url)
        if not path.is_file():
            raise ExportError(f"no database at {path}")

        def connect() -> sqlite3.Connection:
            # Read-write mode, though nothing is written: a read-only connection cannot
            # open a WAL database whose -shm file is missing (no server running).
            db = sqlite3.connect(f"file:{path}?mode=rw", uri=True, isolation_level=None,
                                 check_same_thread=False, timeout=5)
            db.execute("BEGIN")
            return db

        db = await anyio.to_thread.run_sync(connect)
        try:
            snapshot = _SQLiteSnapshot(db)
            await _check_version(snapshot)  # the first read: the snapshot starts here
            yield snapshot
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(db.close)
        return
    if url.startswith(("postgresql://", "postgres://")):
        import asyncpg

        conn = await asyncpg.connect(url, timeout=10)
        try:
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                snapshot = _PgSnapshot(conn)
                await _check_version(snapshot)
                yield snapshot
        finally:
            with anyio.CancelScope(shield=True):
                await conn.close()
        return
    raise ExportError(f"unsupported database URL {url!r}: use sqlite:///path or "
                      "postgresql://…")
