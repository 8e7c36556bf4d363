"""Fixtures for the persistence tests: a fresh database per test, on SQLite and PostgreSQL.

- `store_url` is parametrized over both backends: SQLite is a file in `tmp_path`; for
  PostgreSQL a database `creditd_test_<random>` is created for the test and dropped
  (WITH (FORCE)) afterwards. If PostgreSQL is unreachable the PostgreSQL cases are skipped,
  except on CI (`CI=true`), where that is a failure.
- `engine` opens a store and a Runtime on it (a ManualClock unless one is given).
- `raw_sql` reads or writes a database behind the store's back (schema checks, locks).

This directory deliberately has no `__init__.py`: `tests/` is not a package, so pytest
(prepend import mode) would name `tests/persistence/` as a top-level package called
`persistence` and shadow the real `persistence` package for the whole session. Helpers are
therefore fixtures, not importable functions.

Asyncio by default: asyncpg is built on asyncio transports, so `anyio_backend` (asyncio and
trio in tests/conftest.py) is overridden here. The SQLite store runs its connections on
anyio's worker threads and works under trio too: tests that show it say so
(`@pytest.mark.parametrize("anyio_backend", ["trio"])`).

PostgreSQL location: CREDITD_TEST_PG_HOST / CREDITD_TEST_PG_PORT / CREDITD_TEST_PG_USER
(default 127.0.0.1:5432, user postgres, trust auth).
"""

from __future__ import annotations

import os
import secrets
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import pytest

from engine.core.commands import BalancesReply, GetBalances
from engine.core.effects import LedgerEntry
from engine.core.model import LedgerEventType as L
from engine.runtime import ManualClock, Runtime
from persistence import open_store
from persistence.sql import numbered

PG_HOST = os.environ.get("CREDITD_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("CREDITD_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("CREDITD_TEST_PG_USER", "postgres")
_ADMIN_DATABASES = ("postgres", "test")  # where CREATE/DROP DATABASE is issued from


@pytest.fixture
def anyio_backend() -> str:
    # asyncpg is asyncio-only (see the module docstring).
    return "asyncio"


# ---------------------------------------------------------------------------------------
# PostgreSQL: a fresh database per test

_pg_unreachable: list[str] = []  # the first connection failure, remembered for the session


def _pg_missing(reason: str) -> None:
    message = f"PostgreSQL at {PG_HOST}:{PG_PORT} is unreachable: {reason}"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message} (CI=true: the PostgreSQL tests must run on CI)", pytrace=False)
    pytest.skip(message)


async def _admin_connection() -> asyncpg.Connection:
    if _pg_unreachable:
        _pg_missing(_pg_unreachable[0])
    errors = []
    for database in _ADMIN_DATABASES:
        try:
            return await asyncpg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER,
                                         database=database, timeout=5)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            errors.append(f"{database}: {exc!r}")
    _pg_unreachable.append("; ".join(errors))
    _pg_missing(_pg_unreachable[0])
    raise AssertionError("unreachable")  # _pg_missing always raises


def pg_url(database: str, port: int = PG_PORT) -> str:
    return f"postgresql://{PG_USER}@{PG_HOST}:{port}/{database}"


@asynccontextmanager
async def fresh_pg_database() -> AsyncIterator[str]:
    """CREATE DATABASE creditd_test_<random>; yields its name; DROP … WITH (FORCE) after."""
    admin = await _admin_connection()
    name = f"creditd_test_{secrets.token_hex(6)}"
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield name
        finally:
            with anyio.CancelScope(shield=True):
                await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        with anyio.CancelScope(shield=True):
            await admin.close()


@pytest.fixture(params=["sqlite", "postgresql"])
async def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A URL of an empty database, for each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'creditd.db'}"
        return
    async with fresh_pg_database() as name:
        yield pg_url(name)


class PgDatabase:
    """An empty PostgreSQL database: where the server is, and URLs to reach it (directly,
    or through another port such as a proxy's)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.host = PG_HOST
        self.port = PG_PORT

    def url(self, port: int | None = None) -> str:
        return pg_url(self.name, self.port if port is None else port)


@pytest.fixture
async def pg_database() -> AsyncIterator[PgDatabase]:
    """An empty PostgreSQL database (PostgreSQL-only tests)."""
    async with fresh_pg_database() as name:
        yield PgDatabase(name)


# ---------------------------------------------------------------------------------------
# Raw access behind the store's back


async def _raw_sql(url: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    """Run one statement with `?` placeholders on the database at `url`; rows as tuples."""
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///"):]

        def run() -> list[tuple[Any, ...]]:
            db = sqlite3.connect(path, isolation_level=None)
            try:
                return [tuple(r) for r in db.execute(query, params).fetchall()]
            finally:
                db.close()

        return await anyio.to_thread.run_sync(run)
    conn = await asyncpg.connect(url, timeout=5)
    try:
        return [tuple(r) for r in await conn.fetch(numbered(query), *params)]
    finally:
        await conn.close()


@pytest.fixture
def raw_sql() -> Callable[..., Any]:
    return _raw_sql


# ---------------------------------------------------------------------------------------
# Store + runtime


@asynccontextmanager
async def _open_engine(
    url: str,
    clock: ManualClock | None = None,
    *,
    runtime_options: dict[str, Any] | None = None,
    **store_options: Any,
) -> AsyncIterator[tuple[Any, Runtime]]:
    """`async with engine(url) as (store, rt)`: the store (migrated), then a Runtime on it.
    Leaving closes the runtime first, then the store (which flushes what is queued)."""
    clock = clock if clock is not None else ManualClock()
    async with open_store(url, **store_options) as store:
        async with Runtime(store, clock, **(runtime_options or {})) as rt:
            yield store, rt


@pytest.fixture
def engine() -> Callable[..., Any]:
    return _open_engine


async def _ledger_checked(store: Any, rt: Runtime, customer_id: str) -> list[LedgerEntry]:
    """The customer's whole ledger, checked: gapless seq 1..N in order (read in pages, so
    `after_seq`/`limit` are exercised too), and every pool's current balance (GetBalances
    through the runtime) equals the sum of its ledger amounts."""
    everything = await store.ledger(customer_id, 0, 1_000_000)
    assert [e.seq for e in everything] == list(range(1, len(everything) + 1))
    paged: list[LedgerEntry] = []
    while True:
        page = await store.ledger(customer_id, paged[-1].seq if paged else 0, 7)
        if not page:
            break
        paged += page
    assert paged == everything
    sums: dict[tuple[str, str | None], int] = {}
    for e in everything:
        sums[(e.currency_id, e.resource_id)] = sums.get((e.currency_id, e.resource_id), 0) + e.amount
    reply = await rt.submit(customer_id, GetBalances())
    assert isinstance(reply, BalancesReply)
    balances = {(b.currency_id, b.resource_id): b.current_balance for b in reply.balances}
    for pool, total in sums.items():
        assert balances.get(pool) == total, (customer_id, pool, balances.get(pool), total)
    for pool, balance in balances.items():
        assert balance == sums.get(pool, 0), (customer_id, pool, balance)
    return everything


@pytest.fixture
def ledger_checked() -> Callable[..., Any]:
    return _ledger_checked


async def _keyed_ledger(store: Any, customer_id: str, entries: list[LedgerEntry],
                        keys: Iterable[str]) -> Counter[str]:
    """How many consumption entries the operation of each key among `keys` has in
    `entries`, for the keys the store remembers (a key is remembered exactly when its
    request was applied). Ledger rows do not carry keys: a key's row names its operation.
    Asserts that every consumption entry belongs to one of these keys' operations, so a
    request applied twice under one key (two operations) cannot hide."""
    operations = await store.key_operations(customer_id, list(keys))
    consumed = Counter(e.op_seq for e in entries if e.event_type is L.CREDITS_CONSUMED)
    mine = set(operations.values())
    assert set(consumed) <= mine, f"{customer_id}: consumptions under no key: {consumed}"
    return Counter({key: consumed[op] for key, op in operations.items()})


@pytest.fixture
def keyed_ledger() -> Callable[..., Any]:
    return _keyed_ledger
