"""PostgreSQL table maintenance (persistence/postgres.py, `_maintenance`): where the
server's autovacuum is off, creditd vacuums and analyzes its own tables on an interval;
one node of a cluster at a time; never where autovacuum runs, unless asked."""

from __future__ import annotations

import anyio
import asyncpg
import pytest

from engine.core.commands import Consume, CreateGrant
from engine.core.model import GrantType
from engine.runtime import Runtime
from persistence import open_store
from persistence.postgres import _MAINTENANCE_LOCK

pytestmark = pytest.mark.anyio


async def _vacuumed(url: str) -> dict[str, int]:
    conn = await asyncpg.connect(url)
    try:
        return {r[0]: r[1] for r in await conn.fetch(
            "SELECT relname, vacuum_count FROM pg_stat_user_tables")}
    finally:
        await conn.close()


async def _until(predicate, timeout_s: float = 30.0) -> None:
    with anyio.fail_after(timeout_s):
        while not predicate():
            await anyio.sleep(0.02)


async def test_always_vacuums_every_table_on_its_interval(pg_database) -> None:
    url = pg_database.url()
    async with open_store(url, vacuum="always", vacuum_interval_s=0.05) as store:
        assert store.statistics()["vacuuming"] is True
        async with Runtime(store) as rt:
            await rt.submit("c", CreateGrant(grant_id="g", currency_id="tok", amount=100,
                                             grant_type=GrantType.PAID, display_name="g"))
            await rt.submit("c", Consume(currency_id="tok", amount=7, idempotency_key="k"))
        await _until(lambda: store.statistics()["vacuums"] >= 2)
        assert store.statistics()["vacuum_failures"] == 0
    counts = await _vacuumed(url)
    for table in ("customers", "grants", "ledger", "outbox", "usage_counters"):
        assert counts[table] >= 2, (table, counts)


async def test_never_and_auto_where_autovacuum_runs(pg_database) -> None:
    url = pg_database.url()
    async with open_store(url, vacuum="never", vacuum_interval_s=0.05) as store:
        assert store.statistics()["vacuuming"] is False
    conn = await asyncpg.connect(url)
    try:
        autovacuum = await conn.fetchval("SHOW autovacuum")
    finally:
        await conn.close()
    async with open_store(url, vacuum="auto", vacuum_interval_s=0.05) as store:
        # This machine's PostgreSQL runs with autovacuum off: "auto" takes over there.
        assert store.statistics()["vacuuming"] is (autovacuum == "off")


async def test_one_node_at_a_time(pg_database) -> None:
    """Another session holding the maintenance lock (another node at it): a round does
    nothing and says so; once it is free, the round runs."""
    url = pg_database.url()
    async with open_store(url, vacuum="never") as store:
        other = await asyncpg.connect(url)
        try:
            assert await other.fetchval("SELECT pg_try_advisory_lock($1)", _MAINTENANCE_LOCK)
            before = await _vacuumed(url)
            assert await store.vacuum_tables() is False
            assert await _vacuumed(url) == before
        finally:
            await other.close()
        assert await store.vacuum_tables() is True
        assert (await _vacuumed(url))["grants"] == before["grants"] + 1
