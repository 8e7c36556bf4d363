"""SQLite backend: the embedded default, a file created on first start.

WAL mode with synchronous=FULL: a commit is on disk before the writer returns, so an
acknowledged change survives kill -9 and power loss. Three connections: the writer (one
transaction per group-committed flush), a reader (loads, key lookups and log reads,
which WAL lets run beside the writer without blocking it) and a checkpointer.

The checkpointer copies the log's pages back into the database file, beside the writer,
at most every `checkpoint_interval_s` while writes come (`_checkpointer`). SQLite's own
automatic checkpoint runs inside the COMMIT that crosses 1,000 log pages, in the writer's
path: spread over 1,000 customers a consumption dirties about 5 pages (each flush touches
most leaves of the customers', grants', pools' and buckets' tables), so every sixth flush
also wrote ~1,000 pages into the database file and synced it, and every request waiting on
that flush waited for it too. The writer still checkpoints, but only once the log reaches
`log_pages_reset` (32 MiB): the log starts over only after a checkpoint with no write
beside it (see `_opened`). Measured in turn, the rate rose about 5 % and p99 stayed
within the noise (docs/benchmarks.md, "Checkpoints off the writer's path").

The writer's connection lives in a process of its own (persistence/sqlite_writer.py), and
each store operation that writes is one request to it: a whole flush — BEGIN IMMEDIATE,
the key check, every table's rows, COMMIT — is one message out and one answer back.
On a thread of the server (as it was before) every flush first waited for the interpreter
lock, which the event loop's thread holds while it answers the flush before's requests:
7.3 ms a flush under spread load for under 3 ms of SQLite's work, and every request in
the flush waited for it. (And before that, per-statement trips, as an asyncio wrapper
makes them, waited for the lock eight times a flush.)

The reader's and the checkpointer's connections are the standard library's `sqlite3`,
used from anyio's worker threads one call at a time (`_Link`): reads run beside the
writer, and a checkpoint beside both. Sockets and anyio's threads work under trio as well
as asyncio.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import anyio
import structlog

from engine.runtime.errors import StoreUnavailable
from persistence import sql
from persistence.durable import KEY_PAGE_ROWS, LOOKUP_PAIRS_MAX, DurableStore
from persistence.schema import MIGRATIONS
from persistence.sqlite_memory import sqlite_memory_bytes
from persistence.sqlite_writer import WriterProcess

__all__ = ["SQLiteStore"]

log = structlog.get_logger("creditd.store")

T = TypeVar("T")

_PURGES = sql.purge_statements("rowid")
_LOG_BYTES_KEPT = 64 << 20
_SET_GENERATION = ("INSERT INTO key_generations (generation, period) VALUES (?, ?) "
                   "ON CONFLICT (generation) DO UPDATE SET period = excluded.period, run = 0")
_SET_RUN = "UPDATE key_generations SET run = ?, runs = max(runs, ? + 1) WHERE generation = ?"


class _Link:
    """A sqlite3 connection and the right to use it: calls run in a worker thread, one at
    a time (a connection must never be used by two threads at once). A call is not
    abandoned when its caller is cancelled: it finishes first, so a transaction is always
    committed or rolled back inside its own call."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self._limiter = anyio.CapacityLimiter(1)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return await anyio.to_thread.run_sync(fn, *args, limiter=self._limiter)

    async def close(self) -> None:
        await self.run(self.conn.close)


def _keys_queries(pairs: list[tuple[str, str]], tables: tuple[str, ...],
                  ) -> list[tuple[str, list[str]]]:
    """The lookup of (customer id, key) `pairs` in `tables` and its parameters, padded to
    a power of two pairs (a handful of statement texts, which SQLite's statement cache
    keeps), a query per KEY_TABLES_PER_QUERY tables."""
    size = 1 << (len(pairs) - 1).bit_length()
    params = [x for pair in pairs for x in pair] + [""] * (2 * (size - len(pairs)))
    step = sql.KEY_TABLES_PER_QUERY
    return [(sql.select_keys_of(size, tables[i:i + step]), params)
            for i in range(0, len(tables), step)]


@functools.lru_cache(maxsize=16)
def _statements(key_tables: tuple[str, str]) -> list[tuple[sql.Write, str]]:
    return [(w, sql.insert_statement(w)) for w in sql.writes_into(key_tables)]


def _write_steps(rows: dict[str, list[tuple]], key_tables: tuple[str, str],
                 ) -> list[tuple[str, list[tuple]]]:
    """A flush's rows as the writer process's steps: a statement per table written."""
    return [(statement, rows[w.unit]) for w, statement in _statements(key_tables)
            if rows[w.unit]]


class SQLiteStore(DurableStore):
    dialect = "sqlite"

    def __init__(self, path: str | Path, *, busy_timeout_ms: int = 5000, cache_mb: int = 32,
                 checkpoint_interval_s: float = 0.05, log_pages_reset: int = 8192,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.path = Path(path)
        self.busy_timeout_ms = busy_timeout_ms
        # Page cache of the writer and of the reader. SQLite's default, 2 MB, holds the
        # interior pages of small tables only: once the ledger and the keys outgrow it,
        # every insert reads its leaf back from the OS.
        self.cache_mb = cache_mb
        self._last_number = 0
        self._wdb: WriterProcess | None = None  # flushes, migrations, purges, catalog writes
        self._rdb: _Link | None = None  # reads
        self._cdb: _Link | None = None  # checkpoints
        self.checkpoint_interval_s = checkpoint_interval_s
        self.log_pages_reset = log_pages_reset
        self.checkpoints = 0
        # Pages in the log at the last checkpoint: what an operator watches to see the log
        # start over. (SQLite's count of pages copied back is cumulative per log, not per
        # checkpoint, so a sum of it counts pages again and again.)
        self.log_pages = 0
        self.checkpoint_failures = 0
        self._checkpoint_due = anyio.Event()  # set after each call on the writer's link
        self._checkpoint_ran = anyio.Event()  # set (and replaced) after each checkpoint

    def _open(self, *, cache: bool = True) -> sqlite3.Connection:
        """A reading connection (the writer's is opened in its process)."""
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                             timeout=self.busy_timeout_ms / 1000)
        try:
            db.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
            if cache:  # (the checkpointer copies pages without its cache)
                db.execute(f"PRAGMA cache_size = -{int(self.cache_mb) * 1024}")
            db.execute("PRAGMA synchronous = FULL")
            db.execute("PRAGMA foreign_keys = OFF")
        except BaseException:
            db.close()
            raise
        return db

    async def _connect(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # The writer first: it makes a new file a WAL database before the others open it.
        # The writer's own checkpoint waits for a larger log (`_opened`).
        self._wdb = WriterProcess(
            (str(self.path), self.busy_timeout_ms, self.cache_mb, _LOG_BYTES_KEPT,
             self.log_pages_reset),
            after=lambda: self._checkpoint_due.set())
        try:
            await self._wdb.start()
            self._rdb = _Link(await anyio.to_thread.run_sync(self._open))
            self._cdb = _Link(await anyio.to_thread.run_sync(
                lambda: self._open(cache=False)))
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._disconnect()
            raise

    async def _disconnect(self) -> None:
        for link in (self._cdb, self._rdb, self._wdb):
            if link is not None:
                await link.close()
        self._cdb = self._rdb = self._wdb = None

    async def _fetch(self, query: str, *params: Any) -> Sequence[Sequence[Any]]:
        link = self._rdb
        if link is None:
            raise StoreUnavailable("the SQLite store is closed")
        return await link.run(lambda: link.conn.execute(query, params).fetchall())

    async def _fetch_keys(self, pairs: list[tuple[str, str]]) -> Sequence[Sequence[Any]]:
        rows: list[Sequence[Any]] = []
        for query, params in _keys_queries(pairs, self.key_tables()):
            rows += await self._fetch(query, *params)
        return rows

    async def _scan_keys(self, table: str,
                         take: Callable[[Sequence[Sequence[Any]]], None]) -> None:
        # A page per trip, after the last (customer, key) seen: the table's primary key
        # order, so each page is a range of it, and loads and lookups go between pages.
        query = (f"SELECT c.customer_id, k.key, k.customer FROM {table} k "
                 "JOIN customers c ON c.num = k.customer WHERE (k.customer, k.key) > (?, ?) "
                 "ORDER BY k.customer, k.key LIMIT ?")
        after: tuple[int, str] = (-(1 << 63), "")
        while True:
            rows = await self._fetch(query, *after, KEY_PAGE_ROWS)
            if not rows:
                return
            take(rows)
            after = (rows[-1][2], rows[-1][1])

    def _write_link(self) -> WriterProcess:
        if self._wdb is None:
            raise StoreUnavailable("the SQLite store is closed")
        return self._wdb

    async def _migrate(self) -> int:
        return await self._write_link().call("migrate", MIGRATIONS["sqlite"])

    async def _opened(self) -> None:
        # One process writes a SQLite file, so it hands out customer numbers itself.
        (row,) = await self._fetch(sql.MAX_CUSTOMER_NUM)
        self._last_number = int(row[0])
        # The checkpointer (started next, with the writer) checkpoints from here on. The
        # writer keeps a checkpoint of its own at a larger log (`log_pages_reset`, 32 MiB
        # at 4 KiB pages, set as its process opens the file), because the log starts over only when a write begins with every
        # page of it copied back, and a checkpoint beside a writer that never pauses never
        # gets there: without it the log grew as fast as it was written (837 MB in 10 s
        # under load). At that size the writer's commit copies what the checkpointer has
        # not yet (at most its last interval's pages), and the next write starts the log
        # over.

    def _tasks(self) -> list[Callable[[], Awaitable[None]]]:
        return [self._checkpointer]

    async def _checkpointer(self) -> None:
        """Checkpoint after writes, at most every `checkpoint_interval_s`. While the store
        is open the writer's own checkpoint waits for a larger log (`_opened`), and closing
        the last connection checkpoints what is left."""
        while True:
            await self._checkpoint_due.wait()
            self._checkpoint_due = anyio.Event()
            await self.checkpoint()
            await anyio.sleep(self.checkpoint_interval_s)

    async def checkpoint(self) -> tuple[int, int, int]:
        """A PASSIVE checkpoint (it copies what it can without waiting for the writer or
        readers) on its own connection: SQLite's (busy, pages in the log, pages copied
        back). A failure is logged and counted, not raised (the answer is then
        (1, -1, -1)): the log grows until a later checkpoint succeeds, and nothing written
        is at risk."""
        link = self._cdb
        if link is None:
            raise StoreUnavailable("the SQLite store is closed")
        try:
            row = await link.run(
                lambda: link.conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone())
        except Exception as exc:  # noqa: BLE001 - disk full, read-only file: counted, logged
            self.checkpoint_failures += 1
            log.warning("sqlite checkpoint failed", error=repr(exc))
            return (1, -1, -1)
        finally:
            ran, self._checkpoint_ran = self._checkpoint_ran, anyio.Event()
            ran.set()
        self.checkpoints += 1
        self.log_pages = max(int(row[1]), 0)
        return int(row[0]), int(row[1]), int(row[2])

    def statistics(self) -> dict[str, int | float | bool]:
        memory = sqlite_memory_bytes()
        return {**super().statistics(), "checkpoints": self.checkpoints,
                "log_pages": self.log_pages,
                "checkpoint_failures": self.checkpoint_failures,
                # SQLite's own allocations in this process (its page caches, bounded by
                # CREDITD_SQLITE_CACHE_MB): -1 where they cannot be read.
                "sqlite_memory_bytes": -1 if memory is None else memory}

    async def _new_number(self) -> int:
        # A number handed out for a customer whose first write then failed is skipped.
        self._last_number += 1
        return self._last_number

    async def _write(self, rows: dict[str, list[tuple]]) -> None:
        steps = _write_steps(rows, self._written_tables())
        await self._write_link().call("write", (), steps)

    async def _write_checked(self, rows: dict[str, list[tuple]],
                             pairs: list[tuple[str, str]]) -> Sequence[Sequence[Any]]:
        # The check in the writer's transaction and in the same request as the write: a
        # lookup on the reader is a trip to a thread, which under load waits for the GIL
        # (32 keys took 1.4 ms where the query takes 0.1 ms), and the key pages the check
        # reads are the ones the write then changes.
        lookup = self.key_tables()
        lookups = [q for i in range(0, len(pairs), LOOKUP_PAIRS_MAX)
                   for q in _keys_queries(pairs[i:i + LOOKUP_PAIRS_MAX], lookup)]
        steps = _write_steps(rows, self._written_tables())
        return await self._write_link().call("write", lookups, steps)

    async def _rotate(self, generation: int, period: int, tables: list[str]) -> None:
        # A DELETE without WHERE empties a table in one step (SQLite's truncate
        # optimization); its pages go to the free list and are reused.
        steps: list[tuple[str, list[tuple] | None]] = [
            (f"DELETE FROM {table}", None) for table in tables]
        steps.append((_SET_GENERATION, [(generation, period)]))
        await self._write_link().call("write", (), steps)

    async def _start_run(self, generation: int, run: int, create: list[str]) -> None:
        steps: list[tuple[str, list[tuple] | None]] = [
            (statement, None) for statement in create]
        steps.append((_SET_RUN, [(run, run, generation)]))
        await self._write_link().call("write", (), steps)

    async def _transact(self, steps: list[tuple[str, Sequence[Sequence[Any]]]]) -> None:
        await self._write_link().call("write", (), steps)

    async def execute(self, query: str, *params: Any) -> int:
        try:
            (changed,) = await self._write_link().call("execute", [(query, params)])
            return int(changed)
        except Exception as exc:
            raise self._translate(exc) from exc

    async def _purge(self, before_ms: int, limit: int) -> int:
        changed = await self._write_link().call(
            "execute", [(query, (before_ms, limit)) for query in _PURGES])
        return sum(changed)

    def _unavailable(self, exc: BaseException) -> StoreUnavailable | None:
        """Unavailable when SQLite says the file or the disk cannot take the work now —
        busy or locked past the busy timeout, read-only, full, an I/O error, out of
        memory, unopenable or damaged — or the connection is closed; None (a bug) when it
        refused the statement itself (SQL errors, constraints, misuse). Sorted by SQLite's
        primary result code, the part of `sqlite_errorcode` that names the kind."""
        if isinstance(exc, StoreUnavailable):
            return exc
        code = getattr(exc, "sqlite_errorcode", None)
        closed = isinstance(exc, sqlite3.ProgrammingError) and "closed" in str(exc).lower()
        if closed or isinstance(exc, OSError) or (code is not None
                                                  and code & 0xFF in _UNAVAILABLE_CODES):
            return StoreUnavailable(f"SQLite is unavailable: {exc}", retry_after_s=1.0)
        return None


# SQLITE_BUSY, _LOCKED, _NOMEM, _READONLY, _INTERRUPT, _IOERR, _CORRUPT, _FULL, _CANTOPEN,
# _PROTOCOL, _NOTADB (https://www.sqlite.org/rescode.html): the storage, not the statement.
_UNAVAILABLE_CODES = frozenset({5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 26})
