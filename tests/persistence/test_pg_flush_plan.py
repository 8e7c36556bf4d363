"""PostgreSQL runs the flush on its generic plan, never planning it again per flush
(persistence/postgres.py, `_FLUSH_SETTINGS`).

Left to itself, PostgreSQL plans a prepared statement's first five executions one by one
(custom plans) and then keeps choosing between a new custom plan and the generic one by
their estimated costs. For the flush that choice moved with the tables' sizes and
statistics: a server on a grown or analyzed database re-planned every flush, at about half
again PostgreSQL's CPU per consumption, and a new process on a soaked database answered
~90 % of one on an empty database. The flush's session now runs on the generic plan
only; reads keep PostgreSQL's own choice. What is asserted is what PostgreSQL counts for
the flush's prepared statements in that session (`pg_prepared_statements`): only generic
plans, and many, with every consumption durable.
"""

from __future__ import annotations

import pytest

from engine.core.commands import Consume, ConsumeReply, CreateGrant, GrantReply
from engine.core.model import GrantType
from engine.runtime import ManualClock

pytestmark = pytest.mark.anyio

CUSTOMERS = 5
ROUNDS = 12


async def test_every_flush_runs_on_the_generic_plan(pg_database, engine) -> None:
    async with engine(pg_database.url(), ManualClock()) as (store, rt):
        for c in range(CUSTOMERS):
            reply = await rt.submit(f"c{c}", CreateGrant(
                grant_id=f"g{c}", currency_id="credits", amount=1_000,
                grant_type=GrantType.PAID, display_name="plan"))
            assert isinstance(reply, GrantReply)
        for n in range(ROUNDS):  # one flush per consumption: each waits for its answer
            for c in range(CUSTOMERS):
                reply = await rt.submit(f"c{c}", Consume(
                    currency_id="credits", amount=1, idempotency_key=f"k{n}"))
                assert isinstance(reply, ConsumeReply)
        async with store._connection(flush=True) as conn:
            plans = await conn.fetch(
                "SELECT generic_plans, custom_plans FROM pg_prepared_statements "
                "WHERE statement LIKE 'WITH w_%'")
            flush_mode = await conn.fetchval("SHOW plan_cache_mode")
        # Reads are not forced: a connection of the pool keeps the server's setting.
        async with store._connection() as conn:
            assert await conn.fetchval("SHOW plan_cache_mode") == "auto"
        assert plans, "the flush statements were not prepared on the flush's connection"
        assert sum(p["custom_plans"] for p in plans) == 0, plans
        assert sum(p["generic_plans"] for p in plans) >= CUSTOMERS * ROUNDS, plans
        assert flush_mode == "force_generic_plan"
        for c in range(CUSTOMERS):
            ledger = await store.ledger(f"c{c}", 0, 1_000)
            assert sum(e.amount for e in ledger) == 1_000 - ROUNDS
