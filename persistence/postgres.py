"""PostgreSQL backend (asyncpg, pooled connections): production.

The writer writes the whole flush in one statement: a data-modifying CTE for each table
the flush writes, over that table's rows passed as one jsonb parameter
(`_flush_statement`), on a connection of its own whose session runs prepared statements
on their generic plan (`_FLUSH_SETTINGS`); everything else uses the pool. A broken connection is
dropped by the pool and replaced on the next acquire, so the store reconnects by itself
once the server is reachable again.

Failures are sorted where they happen, not by a list of error codes (`_connection`): a
connection that cannot be had — refused, reset, timed out, the database not accepting
connections during maintenance (SQLSTATE 55000), too many clients, a failed login — means
the database is unavailable, whatever the driver calls it; so does a statement cut off
by the connection or the server going away (`_unavailable`), and so does the driver's
protocol state broken by a session cut mid-statement (asyncpg's InternalClientError; the
connection is terminated rather than returned to the pool). What remains (SQL the server
rejects, a constraint violated) is a bug and propagates as one.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import msgspec

from engine.runtime.errors import StoreUnavailable
from persistence import sql
from persistence.cluster import shard_of
from persistence.durable import DurableStore, _Batch
from persistence.schema import MIGRATIONS

__all__ = ["PostgresStore"]


# One flush is one statement: a data-modifying CTE per table over its rows, given as one
# JSON array of arrays per table (`_rows_of`). A single statement is its own transaction
# (all or nothing) and costs one round trip, however many actors' units it carries;
# per-row executemany cost ~10x more here.
#
# Why JSON rather than an array per column (`unnest($1::text[], $2::bigint[], …)`, the
# first design): asyncpg encodes an array element by element in the event loop's thread,
# and checks each element against collections.abc's Iterable through a Python-level call;
# spread over 1,000 customers that was about a tenth of the loop's time under load
# (py-spy, docs/benchmarks.md "GraphQL"). msgspec writes the JSON in one C call, and the
# server, a process of its own on another core, takes it apart. jsonb, so `e->>i` indexes
# the array instead of scanning it. Every stored integer is bounded far inside 64 bits
# (AMOUNT_UNITS_MAX), and JSON's numbers reach the server as the digits Python wrote.
_encode = msgspec.json.Encoder().encode


def _rows_of(types: list[str], alias: str = "e") -> str:
    """The select list taking a row's columns, of `types`, out of the JSON array `alias`
    (one element of a table's parameter): text as is, bytea from the base64 msgspec writes
    for bytes, anything else through its text form."""
    picks = []
    for i, t in enumerate(types):
        if t == "text":
            picks.append(f"{alias}->>{i}")
        elif t == "bytea":
            picks.append(f"decode({alias}->>{i}, 'base64')")
        else:
            picks.append(f"({alias}->>{i})::{t}")
    return ", ".join(picks)


@functools.lru_cache(maxsize=64)
def _flush_statement(key_tables: tuple[str, str], present: tuple[bool, ...]) -> str:
    """The flush, its key rows going to `key_tables` (each generation's run written): one
    parameter per table in sql.WRITES order that has rows in it (`present`), its rows as
    JSON. Tables without rows have no part in it: a consumption writes 5 of the 13, and
    the other 8 parts, planned and run over empty arrays, cost PostgreSQL about a tenth of
    its time per consumption (docs/benchmarks.md, "Against Redis"). A workload writes a
    handful of combinations, each a statement of its own in asyncpg's cache."""
    ctes = []
    n = 0
    for w, here in zip(sql.writes_into(key_tables), present, strict=True):
        if not here:
            continue
        n += 1
        statement = (f"INSERT INTO {w.table} ({', '.join(w.columns)}) "
                     f"SELECT {_rows_of(w.pg_types)} FROM jsonb_array_elements(${n}::jsonb) "
                     f"AS e{sql.conflict_clause(w)}")
        ctes.append(f"w_{w.table} AS ({statement} RETURNING 1)")
    return "WITH " + ",\n".join(ctes) + "\nSELECT 1"


def _one_per_key(w: sql.Write, rows: list[tuple]) -> list[tuple]:
    """One statement may not update a row twice (ON CONFLICT DO UPDATE), so rows of the
    same key across the flush's units are merged first: the last wins (`replace`), the
    first stays (`ignore`), or the added columns are summed (`add`)."""
    if w.key is None or len(rows) < 2:
        return rows
    at = [w.columns.index(c) for c in w.key]
    merged: dict[tuple, tuple] = {}
    if w.mode == "replace":
        for r in rows:
            merged[tuple(r[i] for i in at)] = r
    elif w.mode == "ignore":
        for r in rows:
            merged.setdefault(tuple(r[i] for i in at), r)
    else:
        added = [w.columns.index(c) for c in w.added]
        for r in rows:
            k = tuple(r[i] for i in at)
            before = merged.get(k)
            if before is None:
                merged[k] = r
            else:
                row = list(before)
                for i in added:
                    row[i] += r[i]
                merged[k] = tuple(row)
    return list(merged.values())


async def _keep_session(conn: asyncpg.Connection) -> None:
    """The pool's reset of a connection given back: nothing more than asyncpg's own part
    (an open transaction rolled back, listeners dropped, no round trip). Its default also
    sends `SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL` — a round
    trip on every release, so inside every flush's wait and every read — to undo session
    state creditd never leaves behind: no LISTEN, no SET, no cursor outside a transaction,
    and one session lock (the migration's), which `_migrate` releases or ends the
    connection over."""


# Serializes concurrent `migrate` runs from several processes.
_MIGRATION_LOCK = 0x63726564  # "cred"
# Serializes key-generation rotations and new runs across a cluster's nodes (transaction-
# scoped, so it works behind a transaction-mode pooler): one node empties a generation.
_GENERATIONS_LOCK = 0x63726466  # "crdf"


@functools.lru_cache(maxsize=16)
def _fenced_flush_statement(key_tables: tuple[str, str]) -> str:
    """A cluster node's flush, still one statement (one round trip, its own transaction):

    - `fence`: the lease rows of the shards the flush writes, at the epochs its units were
      loaded with, still this node's ($1 shards, $2 epochs, $3 node, $4 how many pairs),
      locked FOR SHARE (in shard order) until the statement commits, so no takeover lands
      in between; a row changed by a takeover committed meanwhile is re-read (READ
      COMMITTED re-checks locked rows) and fails the check;
    - `ctr`: the outbox counter row, advanced by the flush's $5 outbox rows: its row lock,
      held until commit, orders the flushes that write outbox rows, so outbox ids are
      gapless in commit order across nodes (flushes without outbox rows do not take it);
    - every write, and the counter, only if the fence held: a fenced flush writes nothing
      and says so (the writer leaves the moved customers out and flushes again).
    """
    ctes = ["fence AS (SELECT count(*) = $4 AS ok FROM (SELECT l.shard FROM shard_leases l "
            "JOIN unnest($1::int[], $2::bigint[]) AS h(shard, epoch) "
            "ON l.shard = h.shard AND l.epoch = h.epoch WHERE l.owner = $3 "
            "ORDER BY l.shard FOR SHARE OF l) AS held)",
            "ctr AS (UPDATE outbox_counter SET last = greatest(last, "
            "(SELECT coalesce(max(id), 0) FROM outbox)) + $5 "
            "WHERE $5 > 0 AND (SELECT ok FROM fence) RETURNING last - $5 AS base)"]
    for n, w in enumerate(sql.writes_into(key_tables), start=6):
        types = w.pg_types[1:] if w.unit == "outbox" else w.pg_types
        rows = f"jsonb_array_elements(${n}::jsonb)"
        if w.unit == "outbox":  # numbered here, from the counter
            statement = (f"INSERT INTO {w.table} ({', '.join(w.columns)}) "
                         f"SELECT ctr.base + o.ord, {_rows_of(types, 'o.e')} "
                         f"FROM ctr, {rows} WITH ORDINALITY AS o(e, ord)")
        else:
            statement = (f"INSERT INTO {w.table} ({', '.join(w.columns)}) "
                         f"SELECT {_rows_of(types)} FROM {rows} AS e "
                         f"WHERE (SELECT ok FROM fence){sql.conflict_clause(w)}")
        ctes.append(f"w_{w.table} AS ({statement} RETURNING 1)")
    return ("WITH " + ",\n".join(ctes)
            + "\nSELECT (SELECT ok FROM fence), (SELECT base FROM ctr)")


# Which of a flush's (shard, epoch) pairs this node still holds: after a fenced flush.
_HELD = ("SELECT l.shard, l.epoch FROM shard_leases l "
         "JOIN unnest($1::int[], $2::bigint[]) AS h(shard, epoch) "
         "ON l.shard = h.shard AND l.epoch = h.epoch WHERE l.owner = $3")


def _closed(conn: asyncpg.Connection) -> bool:
    """Whether a connection is closed (one the pool took back after a timeout counts)."""
    try:
        return conn.is_closed()
    except asyncpg.InterfaceError:
        return True


@functools.lru_cache(maxsize=512)
def _numbered(query: str) -> str:
    # Reads and transactions run the same few statements over and over.
    return sql.numbered(query)


_PURGES = [_numbered(q) for q in sql.purge_statements("ctid")]
# Table blocks per page when the key filter reads a key table back (~60 rows a block).
KEY_PAGE_BLOCKS = 128


# The flush's session. PostgreSQL plans a prepared statement anew for each execution
# (a custom plan) or once (the generic plan), and decides by comparing their estimated
# costs; for the flush statement the decision came out differently with the tables' sizes
# and statistics, so a server on a database that had grown, or been analyzed since the
# statement was prepared, re-planned every flush. That cost PostgreSQL 95-105 us of CPU per
# consumption against 60-65 us on the generic plan, which does not depend on the values:
# every part inserts the rows of its jsonb parameter, by the table's key where it
# upserts. Forcing the generic plan took the soaked database's slowdown (a new process on
# it answered ~90 % of one on an empty database) away (docs/benchmarks.md, "PostgreSQL's
# plans for the flush"). Only the flush's session: reads keep PostgreSQL's own choice.
_FLUSH_SETTINGS = {"plan_cache_mode": "force_generic_plan"}


class PostgresStore(DurableStore):
    dialect = "postgresql"
    checks_ahead = True

    def __init__(self, dsn: str, *, pool_min: int = 2, pool_max: int = 8,
                 command_timeout_s: float = 10.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.dsn = dsn
        self.pool_min = pool_min
        self.pool_max = pool_max
        self.command_timeout_s = command_timeout_s
        self._pool: asyncpg.Pool | None = None
        self._flush_pool: asyncpg.Pool | None = None  # one connection: flushes are serial

    async def _connect(self) -> None:
        settings = None
        if self.fence is not None:
            # A cluster node paused inside a transaction of several statements (SIGSTOP,
            # a long GC; a key-generation rotation, the webhook relay's writes) would hold
            # its locks for as long as it is stopped: the server ends such a session once
            # it has sat idle for two thirds of a lease. (Flushes are single statements.)
            idle_ms = max(500, int(self.fence.ttl_s * 2000 / 3))
            settings = {"idle_in_transaction_session_timeout": str(idle_ms)}
        self._pool = await asyncpg.create_pool(
            self.dsn, min_size=self.pool_min, max_size=self.pool_max,
            command_timeout=self.command_timeout_s, server_settings=settings,
            reset=_keep_session,
        )
        try:
            self._flush_pool = await asyncpg.create_pool(
                self.dsn, min_size=1, max_size=1, command_timeout=self.command_timeout_s,
                server_settings={**(settings or {}), **_FLUSH_SETTINGS}, reset=_keep_session,
            )
        except BaseException:
            await self._disconnect()
            raise

    async def _disconnect(self) -> None:
        for pool in (self._flush_pool, self._pool):
            if pool is not None:
                await pool.close()
        self._pool = self._flush_pool = None

    def statistics(self) -> dict[str, int | float | bool]:
        """The durable store's counters, and the pool's connections: open, idle, at most."""
        pool = self._pool
        return {**super().statistics(), "pool_max": self.pool_max,
                "pool_size": pool.get_size() if pool is not None else 0,
                "pool_idle": pool.get_idle_size() if pool is not None else 0}

    @asynccontextmanager
    async def _connection(self, flush: bool = False) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection for one unit of work (the flush's own with `flush`). Getting
        one is where a database that is away shows itself (the pool opens a new connection
        when a broken one was dropped), and returning one resets it: whatever either
        raises, the database is unavailable. Waiting for a free connection is bounded by
        the command timeout."""
        pool = self._flush_pool if flush else self._pool
        assert pool is not None
        try:
            conn = await pool.acquire(timeout=self.command_timeout_s)
        except Exception as exc:
            raise StoreUnavailable(f"cannot get a PostgreSQL connection: {exc!r}",
                                   retry_after_s=1.0) from exc
        failed = False
        try:
            yield conn
        except BaseException as exc:
            failed = True
            if self._unavailable(exc) is not None and not _closed(conn):
                # A session cut mid-statement can leave the driver's protocol state
                # broken ("cannot switch to state 12; another operation is in
                # progress"): such a connection must not go back to the pool.
                conn.terminate()
            raise
        finally:
            try:
                await pool.release(conn)
            except Exception as exc:
                # The connection broke on the way back; the pool replaces it. If the work
                # itself failed, its own error is the one to report.
                if not failed:
                    raise StoreUnavailable(f"PostgreSQL connection lost: {exc!r}",
                                           retry_after_s=1.0) from exc

    async def _fetch(self, query: str, *params: Any) -> Sequence[Sequence[Any]]:
        async with self._connection() as conn:
            return await conn.fetch(_numbered(query), *params)

    async def _migrate(self) -> int:
        assert self._pool is not None
        async with self._pool.acquire() as conn:
            await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK)
            try:
                await conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
                version = await conn.fetchval("SELECT max(version) FROM schema_version") or 0
                for number, statements in enumerate(MIGRATIONS["postgresql"], start=1):
                    if number <= version:
                        continue
                    async with conn.transaction():
                        for statement in statements:
                            await conn.execute(statement)
                        await conn.execute("INSERT INTO schema_version (version) VALUES ($1)",
                                           number)
                    version = number
                return version
            finally:
                try:
                    await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK)
                except BaseException:
                    conn.terminate()  # the pool keeps sessions as they are (_keep_session)
                    raise

    async def _fetch_keys(self, pairs: list[tuple[str, str]]) -> Sequence[Sequence[Any]]:
        customers, keys = zip(*pairs)
        return await self._fetch(sql.select_keys_of_pg(self.key_tables()),
                                 list(customers), list(keys))

    async def _scan_keys(self, table: str,
                         take: Callable[[Sequence[Sequence[Any]]], None]) -> None:
        # Pages by ranges of the table's blocks (a TID range scan reads just those): the
        # key tables have no ordered index to page by (a hash index on the key), and a
        # cursor would hold one transaction open across the table, which blocks the
        # TRUNCATE that empties it when a new week's keys arrive. Rows written after the
        # size is read are in the filter already (the writer adds them first).
        query = (f"SELECT c.customer_id, k.key FROM {table} k "
                 "JOIN customers c ON c.num = k.customer "
                 "WHERE k.ctid >= format('(%s,0)', $1::bigint)::tid "
                 "AND k.ctid < format('(%s,0)', $2::bigint)::tid")
        async with self._connection() as conn:
            blocks = int(await conn.fetchval(
                "SELECT pg_relation_size($1::regclass) / current_setting('block_size')::int",
                table))
        for first in range(0, blocks, KEY_PAGE_BLOCKS):
            async with self._connection() as conn:
                take(await conn.fetch(query, first, first + KEY_PAGE_BLOCKS))

    async def _new_number(self) -> int:
        async with self._connection() as conn:
            return int(await conn.fetchval("SELECT nextval('customer_numbers')"))

    async def _flush(self, batch: _Batch, first_outbox_id: int) -> dict[str, list[tuple]]:
        """One process: the shared flush. A cluster node: the same, fenced on its shards'
        leases in the flush's statement (`_fenced_flush_statement`); a fenced flush wrote
        nothing: the units of customers whose shard changed hands are left out (their
        commits raise ShardMoved, persistence/cluster.py) and the rest flushed again."""
        fence = self.fence
        if fence is None:
            return await super()._flush(batch, first_outbox_id)
        for _ in range(8):
            pairs = sorted({(shard_of(u.customer_id), u.epoch or 0) for u in batch.units})
            self._fence_args = ([p[0] for p in pairs], [p[1] for p in pairs], fence.node_id,
                                len(pairs))
            self._fence_result = (True, None)
            rows = await super()._flush(batch, 0)
            ok, base = self._fence_result
            if ok:
                if base is not None:  # the ids the statement gave the outbox rows
                    rows["outbox"] = [(int(base) + 1 + i, *r[1:])
                                      for i, r in enumerate(rows["outbox"])]
                return rows
            held = {(int(r[0]), int(r[1])) for r in await self.fetch(
                _HELD, self._fence_args[0], self._fence_args[1], fence.node_id)}
            out = {u.customer_id for u in batch.units
                   if (shard_of(u.customer_id), u.epoch or 0) not in held}
            batch.fenced |= out
            batch.units = [u for u in batch.units if u.customer_id not in out]
            self.fenced += len(out)
        raise StoreUnavailable("shard leases kept changing under this flush", retry_after_s=0.5)

    async def _write(self, rows: dict[str, list[tuple]]) -> None:
        if self.fence is not None:
            params = [_encode([r[1:] for r in rows[w.unit]] if w.unit == "outbox"
                              else _one_per_key(w, rows[w.unit])).decode()
                      for w in sql.WRITES]  # a fenced flush's outbox ids come from the counter
            async with self._connection(flush=True) as conn:
                ok, base = await conn.fetchrow(
                    _fenced_flush_statement(self._written_tables()), *self._fence_args,
                    len(rows["outbox"]), *params)
            self._fence_result = (bool(ok), base)
            return
        present = tuple(bool(rows[w.unit]) for w in sql.WRITES)
        if not any(present):
            return
        # Parameters for the written tables only, as the statement has parts for those.
        params = [_encode(_one_per_key(w, rows[w.unit])).decode()
                  for w in sql.WRITES if rows[w.unit]]
        flush = _flush_statement(self._written_tables(), present)
        async with self._connection(flush=True) as conn:
            await conn.execute(flush, *params)

    async def _rotate(self, generation: int, period: int, tables: list[str]) -> None:
        async with self._connection() as conn, conn.transaction():
            if self.fence is not None and not await self._generation_is_behind(
                    conn, generation, period):
                return  # another node of the cluster emptied it for this period already
            # TRUNCATE gives the space back at once, where DELETE would leave a week of
            # dead rows to vacuum.
            await conn.execute(f"TRUNCATE {', '.join(tables)}")
            await conn.execute(
                "INSERT INTO key_generations (generation, period) VALUES ($1, $2) "
                "ON CONFLICT (generation) DO UPDATE SET period = excluded.period, run = 0",
                generation, period)

    async def _start_run(self, generation: int, run: int, create: list[str]) -> None:
        async with self._connection() as conn, conn.transaction():
            if self.fence is not None:
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _GENERATIONS_LOCK)
                runs = await conn.fetchval(
                    "SELECT runs FROM key_generations WHERE generation = $1", generation)
                if runs is not None and run < int(runs):
                    create = []  # another node created this run's table already
            for statement in create:
                await conn.execute(statement)
            await conn.execute(
                "UPDATE key_generations SET run = $1, runs = greatest(runs, $1 + 1) "
                "WHERE generation = $2", run, generation)

    @staticmethod
    async def _generation_is_behind(conn: asyncpg.Connection, generation: int,
                                    period: int) -> bool:
        """Under the cluster's generations lock: whether the generation still holds an
        older period than `period` (False: another node rotated it)."""
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _GENERATIONS_LOCK)
        held = await conn.fetchval(
            "SELECT period FROM key_generations WHERE generation = $1", generation)
        return held is None or int(held) < period

    async def _transact(self, steps: list[tuple[str, Sequence[Sequence[Any]]]]) -> None:
        async with self._connection() as conn, conn.transaction():
            for query, rows in steps:
                await conn.executemany(_numbered(query), rows)

    async def execute(self, query: str, *params: Any) -> int:
        try:
            async with self._connection() as conn:
                status = await conn.execute(_numbered(query), *params)
        except Exception as exc:
            raise self._translate(exc) from exc
        last = status.split()[-1]
        return int(last) if last.isdigit() else 0

    async def _purge(self, before_ms: int, limit: int) -> int:
        removed = 0
        async with self._connection() as conn:
            for query in _PURGES:
                status = await conn.execute(query, before_ms, limit)
                removed += int(status.split()[-1])
        return removed

    def _unavailable(self, exc: BaseException) -> StoreUnavailable | None:
        """A statement's failure: unavailability when the connection or the server gave
        out under it, None (a bug) when the server refused the statement itself."""
        if isinstance(exc, StoreUnavailable):
            return exc
        if isinstance(exc, (OSError, asyncio.TimeoutError, TimeoutError,
                            asyncpg.PostgresConnectionError,
                            asyncpg.InternalClientError)) or (
                isinstance(exc, asyncpg.InterfaceError) and not isinstance(exc, _CLIENT_BUGS)):
            return StoreUnavailable(f"PostgreSQL is unavailable: {exc!r}", retry_after_s=1.0)
        if isinstance(exc, asyncpg.PostgresError) and str(
                getattr(exc, "sqlstate", "") or "")[:2] in _UNAVAILABLE_CLASSES:
            return StoreUnavailable(f"PostgreSQL is unavailable: {exc}", retry_after_s=1.0)
        return None


# The driver's own complaints about what it was asked to send: bugs, not outages.
_CLIENT_BUGS = (asyncpg.exceptions.DataError, asyncpg.exceptions.ClientConfigurationError,
                asyncpg.exceptions.UnsupportedClientFeatureError,
                asyncpg.exceptions.UnsupportedServerFeatureError)
# SQLSTATE classes that say the server cannot do the work now, whatever the statement:
# connection exception, invalid transaction state (a read-only standby after a failover),
# transaction rollback (serialization, deadlock), insufficient resources (disk full, too
# many connections), object not in prerequisite state (lock not available, database not
# accepting connections), operator intervention (shutdown, statement timeout), system
# error (I/O), internal error.
_UNAVAILABLE_CLASSES = frozenset({"08", "25", "40", "53", "55", "57", "58", "XX"})
