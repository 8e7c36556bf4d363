"""Schema v9 (lean rows) carries a v8 database over whole, on SQLite and PostgreSQL.

`fixtures/schema_v8_rows.json` holds the engine rows creditd wrote at commit a6b19ff
(schema v8) for two customers: paid and promotional grants, keyed consumptions with a
feature and dimensions, a reservation held and released, two soft-limited pools each with
an overdraft grant (sequence number 0 in v8, for both), a void, a consumption without a
key, and keys from two weekly periods (so both key generation tables get rows). It was
made by running that scenario against a SQLite file with that commit's code and dumping
the tables (blobs in hex), so the commands and replies in `idempotency_keys` are encoded
exactly as v8 encoded them.

Here a v8 database is built from the v8 migrations and those rows, then opened by this
creditd, which migrates it. Everything must read back as it was: every ledger entry
(with its grant's id, currency and resource, now found through the grant's sequence
number), balances that are the ledger's projection, and every remembered key answering a
replay of its original request with its original reply.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import msgspec
import pytest

from engine.core.commands import AnyReply, Command, Consume, Refused
from engine.core.idempotency import request_digest
from engine.core.machine import check_pool
from engine.core.refusals import Refusal
from engine.core.replay import customer_row, grant_row, pool_row, rebuild, reservation_row
from engine.runtime import ManualClock
from persistence import open_store
from persistence.schema import LATEST_VERSION, MIGRATIONS
from persistence.sql import KEY_GENERATION_MS

pytestmark = pytest.mark.anyio

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "schema_v8_rows.json").read_text())
ENGINE_TABLES = ("customers", "grants", "reservations", "pools", "ledger", "idempotency_keys",
                 "outbox", "usage_buckets")
BOOLEANS = {"activated", "hard_limit"}  # 0/1 in the SQLite dump, BOOLEAN on PostgreSQL
_command = msgspec.msgpack.Decoder(Command).decode
_reply = msgspec.msgpack.Decoder(AnyReply).decode


def rows_of(table: str) -> tuple[list[str], list[list[Any]]]:
    data = FIXTURE[table]
    rows = [[bytes.fromhex(v["hex"]) if isinstance(v, dict) else v for v in r]
            for r in data["rows"]]
    return data["columns"], rows


async def make_v8_database(url: str, raw_sql: Any) -> None:
    dialect = "sqlite" if url.startswith("sqlite") else "postgresql"
    await raw_sql(url, "CREATE TABLE schema_version (version INTEGER NOT NULL)")
    for number, statements in enumerate(MIGRATIONS[dialect][:8], start=1):
        for statement in statements:
            await raw_sql(url, statement)
        await raw_sql(url, "INSERT INTO schema_version (version) VALUES (?)", number)
    for table in ENGINE_TABLES:
        columns, rows = rows_of(table)
        for row in rows:
            if dialect == "postgresql":
                row = [bool(v) if c in BOOLEANS else v for c, v in zip(columns, row)]
            marks = ", ".join("?" for _ in columns)
            await raw_sql(url, f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})",
                          *row)


def v8_ledger() -> dict[str, list[tuple]]:
    columns, rows = rows_of("ledger")
    at = {c: i for i, c in enumerate(columns)}
    by_customer: dict[str, list[tuple]] = defaultdict(list)
    for r in rows:
        dims = r[at["dimensions"]]
        by_customer[r[at["customer_id"]]].append((
            r[at["seq"]], r[at["op_seq"]], r[at["event_type"]], r[at["grant_id"]],
            r[at["currency_id"]], r[at["resource_id"]], r[at["amount"]], r[at["ts"]],
            r[at["reservation_id"]], r[at["feature_id"]], json.loads(dims) if dims else None))
    return {c: sorted(entries) for c, entries in by_customer.items()}


def v8_keys() -> list[tuple[str, str, Command, Any, int]]:
    """(customer, key, command, reply, created_at) as v8 remembered them."""
    columns, rows = rows_of("idempotency_keys")
    at = {c: i for i, c in enumerate(columns)}
    return [(r[at["customer_id"]], r[at["key"]], _command(r[at["command"]]),
             _reply(r[at["reply"]]), r[at["created_at"]]) for r in rows]


async def test_a_v8_database_migrates_to_lean_rows_and_reads_back_the_same(
        store_url, raw_sql, engine) -> None:
    await make_v8_database(store_url, raw_sql)
    ledgers = v8_ledger()
    keys = v8_keys()
    assert len(keys) == 11 and {k[4] // KEY_GENERATION_MS % 2 for k in keys} == {0, 1}

    async with open_store(store_url) as store:
        assert await raw_sql(store_url, "SELECT version FROM schema_version") == [
            (v,) for v in range(1, LATEST_VERSION + 1)]
        for customer, entries in ledgers.items():
            got = await store.ledger(customer, 0, 1000)
            assert [(e.seq, e.op_seq, e.event_type.value, e.grant_id, e.currency_id,
                     e.resource_id, e.amount, e.timestamp, e.reservation_id, e.feature_id,
                     e.dimensions) for e in got] == entries
            # The rows are the ledger's projection, and rebuilding from it gives them back.
            state = await store.load(customer)
            sums: dict[tuple, int] = defaultdict(int)
            for e in got:
                sums[(e.currency_id, e.resource_id)] += e.amount
            for key, pool in state.pools.items():
                assert pool.balance == sums[key]
                check_pool(state, pool)
            rebuilt = rebuild(customer_row(state),
                              [grant_row(g) for g in state.grants.values()],
                              [reservation_row(r) for r in state.reservations.values()],
                              [pool_row(p) for p in state.pools.values()], got)
            assert {g.id: grant_row(g) for g in rebuilt.grants.values()} == {
                g.id: grant_row(g) for g in state.grants.values()}
            # Grant sequence numbers are unique per customer now (ledger rows use them);
            # the two overdraft grants that shared 0 got negative ones.
            seqs = [g.seq for g in state.grants.values()]
            assert len(set(seqs)) == len(seqs) and 0 not in seqs
            assert not state.idempotency and not state.keys_complete
        assert await store.key_operations("default/alice", ["consume:k-1", "nope"]) == {
            "consume:k-1": None}  # v8 did not record operations
        (count,) = await raw_sql(store_url, "SELECT count(*) FROM ledger")
        assert count[0] == sum(len(e) for e in ledgers.values())

    # Every remembered key answers a replay of its request with its original reply, and
    # refuses the key with another request; nothing is applied again.
    clock = ManualClock(FIXTURE["now"])
    async with engine(store_url, clock) as (store, rt):
        before = {c: await store.ledger(c, 0, 1000) for c in ledgers}
        for customer, key, command, reply, created_at in keys:
            records = await store.lookup_keys(customer, [key])
            assert [(r.request, r.reply, r.created_at) for r in records] == [
                (request_digest(command), reply, created_at)]
            assert await rt.submit(customer, command) == reply, key
        other = await rt.submit("default/alice", Consume(
            currency_id="tokens", amount=1, idempotency_key="consume:k-1"))
        assert isinstance(other, Refused) and other.code == Refusal.IDEMPOTENCY_KEY_REUSED
        assert {c: await store.ledger(c, 0, 1000) for c in ledgers} == before

        # And the database goes on: a new keyed consumption, and a new soft-pool customer
        # whose overdraft grant gets a sequence number of its own.
        fresh = await rt.submit("default/bob", Consume(currency_id="tokens", amount=3,
                                                       idempotency_key="consume:new"))
        assert not isinstance(fresh, Refused)
        ops = await store.key_operations("default/bob", ["consume:new"])
        assert [e.op_seq for e in await store.ledger("default/bob", len(before["default/bob"]))
                ] == [ops["consume:new"]]
