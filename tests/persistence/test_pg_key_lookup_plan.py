"""PostgreSQL's key lookup probes indexes on any plan (persistence/sql.py, SELECT_KEYS_OF_PG).

asyncpg prepares statements, and PostgreSQL runs a prepared statement on a generic plan
after five executions. The lookup used to join a CTE of the pairs to the key tables; its
generic plan scanned a whole key table (60-120 ms per lookup at 700,000 keys) and under
sustained load throughput fell to a tenth within minutes. Here the generic plan is forced
on a table of 50,000 keys whose statistics say nothing yet (as when it has just grown),
and must hold no sequential scan of a key table; the lookup must still find what it
should, for the right customer only.
"""

from __future__ import annotations

import asyncpg
import pytest

from persistence import open_store, sql

pytestmark = pytest.mark.anyio

ROWS = 50_000


async def test_the_key_lookup_never_scans_a_key_table(pg_database) -> None:
    async with open_store(pg_database.url()):
        pass  # migrated
    conn = await asyncpg.connect(pg_database.url())
    try:
        await conn.execute("INSERT INTO customers (customer_id, ledger_seq, event_seq, op_seq, "
                           "grant_seq, num) SELECT 'default/c' || n, 0, 0, 0, 0, n "
                           "FROM generate_series(1, 100) n")
        await conn.execute(
            "INSERT INTO idempotency_keys_0 (customer, created_at, op_seq, key, request, reply) "
            "SELECT 1 + n % 100, 0, n, 'consume:' || md5(n::text), '\\x00', '\\x00' "
            f"FROM generate_series(1, {ROWS}) n")
        await conn.execute("SET plan_cache_mode = force_generic_plan")
        query = sql.numbered(sql.select_keys_of_pg())
        await conn.execute(f"PREPARE lookup (text[], text[]) AS {query}")
        plan = "\n".join(r[0] for r in await conn.fetch(
            "EXPLAIN EXECUTE lookup (ARRAY['default/c8'], ARRAY['consume:x'])"))
        assert "Seq Scan on idempotency_keys" not in plan, plan
        # n = 7 belongs to customer 8; the same key asked for customer 9 is not its key.
        key = "consume:" + await conn.fetchval("SELECT md5('7')")
        statement = await conn.prepare(query)
        found = await statement.fetch(["default/c8", "default/c9", "default/c8"],
                                      [key, key, "consume:nope"])
        assert [(r[0], r[1], r[3]) for r in found] == [("default/c8", key, 7)]
    finally:
        await conn.close()
