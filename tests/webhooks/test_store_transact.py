"""`store.transact`, the persistence primitive the webhook relay moves its cursor with: all
statements of a call apply, or none do, on both backends."""

from __future__ import annotations

import sqlite3

import asyncpg
import pytest

from persistence import open_store

pytestmark = pytest.mark.anyio

INSERT = ("INSERT INTO webhook_attempts (id, delivery_id, endpoint_id, attempt, started_at, "
          "latency_ms) VALUES (?, ?, 'e', 1, 0, 0)")


async def count(store) -> int:
    (row,) = await store.fetch("SELECT count(*) FROM webhook_attempts")
    return int(row[0])


async def test_every_statement_applies_together(store_url) -> None:
    async with open_store(store_url) as store:
        await store.transact([(INSERT, [(1, 10), (2, 10)]),
                              ("UPDATE webhook_relay SET outbox_cursor = ?", [(7,)])])
        assert await count(store) == 2
        (row,) = await store.fetch("SELECT outbox_cursor FROM webhook_relay")
        assert row[0] == 7


async def test_a_failing_statement_undoes_the_ones_before_it(store_url) -> None:
    async with open_store(store_url) as store:
        await store.transact([(INSERT, [(1, 10)])])
        # A duplicate key is a bug, not an outage: the driver's own error on both backends.
        with pytest.raises((asyncpg.UniqueViolationError, sqlite3.IntegrityError)):
            await store.transact([(INSERT, [(2, 10), (3, 10)]),
                                  ("UPDATE webhook_relay SET outbox_cursor = ?", [(9,)]),
                                  (INSERT, [(1, 10)])])  # a duplicate id: the whole call fails
        assert await count(store) == 1
        (row,) = await store.fetch("SELECT outbox_cursor FROM webhook_relay")
        assert row[0] == 0
        # The store is usable after the failure.
        await store.transact([(INSERT, [(4, 10)])])
        assert await count(store) == 2


async def test_nothing_to_do_is_not_a_transaction(store_url) -> None:
    async with open_store(store_url) as store:
        await store.transact([])
        await store.transact([(INSERT, [])])
        assert await count(store) == 0
