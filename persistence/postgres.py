"""PostgreSQL backend (asyncpg, pooled connections): production.

The writer takes one pooled connection per flush and writes the whole flush in one
transaction with pipelined `executemany` calls; reads use the pool. A broken connection is
dropped by the pool and replaced on the next acquire, so the store reconnects by itself
once the server is reachable again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import anyio
import asyncpg

from engine.runtime.errors import StoreUnavailable
from persistence import sql
from persistence.codec import Unit
from persistence.durable import DurableStore
from persistence.schema import MIGRATIONS

__all__ = ["PostgresStore"]

_N = {name: sql.numbered(getattr(sql, name)) for name in sql.__all__ if name.isupper()}

# One flush is one statement: a data-modifying CTE per table over unnest()ed column arrays.
# A single statement is its own transaction (all or nothing) and costs one round trip,
# however many actors' units it carries; per-row executemany cost ~10x more here.
_BULK = [
    ("customers", sql.CUSTOMER_COLUMNS,
     ["text", "bigint", "bigint", "bigint", "bigint", "bigint"], ["customer_id"]),
    ("grants", sql.GRANT_COLUMNS,
     ["text", "text", "bigint", "text", "text", "text", "text", "integer", "bigint", "bigint",
      "bigint", "bigint", "bigint", "bigint", "bigint", "bigint", "bigint", "bigint", "bigint",
      "boolean", "bigint", "text", "text", "text", "text"], ["customer_id", "id"]),
    ("reservations", sql.RESERVATION_COLUMNS,
     ["text", "text", "text", "text", "bigint", "text", "text", "bigint", "bigint", "bigint",
      "bigint", "text"], ["customer_id", "id"]),
    ("pools", sql.POOL_COLUMNS,
     ["text", "text", "text", "text", "boolean", "bigint", "integer"],
     ["customer_id", "currency_id", "resource_key"]),
    ("ledger", sql.LEDGER_COLUMNS,
     ["text", "bigint", "bigint", "text", "text", "text", "text", "bigint", "bigint", "text",
      "text", "text", "text"], None),
    ("idempotency_keys", sql.KEY_COLUMNS, ["text", "text", "bytea", "bytea", "bigint"], None),
    ("outbox", sql.OUTBOX_COLUMNS, ["bigint", "text", "bigint", "text", "bytea", "bigint"], None),
]


def _flush_statement() -> str:
    ctes = []
    n = 0
    for table, columns, types, key in _BULK:
        assert len(columns) == len(types), table
        arrays = ", ".join(f"${n + i + 1}::{t}[]" for i, t in enumerate(types))
        n += len(types)
        statement = f"INSERT INTO {table} ({', '.join(columns)}) SELECT * FROM unnest({arrays})"
        if key is not None:
            updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c not in key)
            statement += f" ON CONFLICT ({', '.join(key)}) DO UPDATE SET {updates}"
        ctes.append(f"w_{table} AS ({statement} RETURNING 1)")
    return "WITH " + ",\n".join(ctes) + "\nSELECT 1"


_FLUSH = _flush_statement()


def _last(rows_by_key: dict) -> list[tuple]:
    return list(rows_by_key.values())
# Serializes concurrent `migrate` runs from several processes.
_MIGRATION_LOCK = 0x63726564  # "cred"


class PostgresStore(DurableStore):
    dialect = "postgresql"

    def __init__(self, dsn: str, *, pool_min: int = 2, pool_max: int = 8,
                 command_timeout_s: float = 10.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.dsn = dsn
        self.pool_min = pool_min
        self.pool_max = pool_max
        self.command_timeout_s = command_timeout_s
        self._pool: asyncpg.Pool | None = None

    async def _connect(self) -> None:
        self._pool = await asyncpg.create_pool(
            self.dsn, min_size=self.pool_min, max_size=self.pool_max,
            command_timeout=self.command_timeout_s,
        )

    async def _disconnect(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def _fetch(self, query: str, *params: Any) -> Sequence[Sequence[Any]]:
        assert self._pool is not None
        return await self._pool.fetch(_N.get(query) or sql.numbered(query), *params)

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
                await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK)

    async def _write(self, units: list[Unit], first_outbox_id: int) -> None:
        assert self._pool is not None
        outbox = []
        next_id = first_outbox_id
        for u in units:
            for event in u.events:
                outbox.append((next_id, *event))
                next_id += 1
        # Upserts keep the last version of a row: one statement may not update a row twice.
        tables = {
            "customers": _last({u.customer[0]: u.customer for u in units}),
            "grants": _last({r[:2]: r for u in units for r in u.grants}),
            "reservations": _last({r[:2]: r for u in units for r in u.reservations}),
            "pools": _last({r[:3]: r for u in units for r in u.pools}),
            "ledger": [r for u in units for r in u.ledger],
            "idempotency_keys": [r for u in units for r in u.keys],
            "outbox": outbox,
        }
        params = []
        for table, _columns, types, _key in _BULK:
            rows = tables[table]
            columns = list(zip(*rows)) if rows else [()] * len(types)
            params.extend(list(col) for col in columns)
        async with self._pool.acquire() as conn:
            await conn.execute(_FLUSH, *params)

    async def execute(self, query: str, *params: Any) -> int:
        assert self._pool is not None
        try:
            status = await self._pool.execute(sql.numbered(query), *params)
        except Exception as exc:
            raise self._translate(exc) from exc
        last = status.split()[-1]
        return int(last) if last.isdigit() else 0

    async def _purge(self, before_ms: int, limit: int) -> int:
        assert self._pool is not None
        removed = 0
        for query in (
            "DELETE FROM idempotency_keys WHERE ctid IN (SELECT ctid FROM idempotency_keys "
            "WHERE created_at < $1 LIMIT $2)",
            "DELETE FROM reservations WHERE ctid IN (SELECT ctid FROM reservations "
            "WHERE released_at IS NOT NULL AND released_at < $1 LIMIT $2)",
        ):
            status = await self._pool.execute(query, before_ms, limit)
            removed += int(status.split()[-1])
        return removed

    def _unavailable(self, exc: BaseException) -> StoreUnavailable | None:
        if isinstance(exc, (OSError, ConnectionError, asyncio.TimeoutError, TimeoutError,
                            asyncpg.InterfaceError, asyncpg.PostgresConnectionError,
                            asyncpg.CannotConnectNowError)):
            return StoreUnavailable(f"PostgreSQL is unavailable: {exc!r}", retry_after_s=1.0)
        if isinstance(exc, asyncpg.PostgresError) and str(getattr(exc, "sqlstate", "")).startswith(
            ("08", "53", "57", "58")
        ):
            return StoreUnavailable(f"PostgreSQL is unavailable: {exc}", retry_after_s=1.0)
        return None
