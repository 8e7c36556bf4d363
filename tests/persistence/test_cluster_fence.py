"""Shard leases and the fence, in process: two stores on one PostgreSQL database as two
cluster nodes (persistence/cluster.py). The multi-process behaviour (forwarding, kill -9,
SIGSTOP) is in tests/cluster/."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from engine.core.commands import (
    BalancesReply,
    Consume,
    ConsumeReply,
    CreateGrant,
    GetBalances,
    GrantReply,
)
from engine.core.model import GrantType
from engine.runtime import ManualClock, Runtime
from engine.runtime.errors import ShardMoved
from persistence import open_store
from persistence.cluster import SHARDS, LeaseManager, Leases, shard_of

pytestmark = pytest.mark.anyio
CUR = "credits"


class Node:
    def __init__(self, name: str, store: Any, runtime: Runtime, leases: Leases,
                 manager: LeaseManager) -> None:
        self.name, self.store, self.runtime = name, store, runtime
        self.leases, self.manager = leases, manager


@asynccontextmanager
async def node(url: str, name: str, clock: ManualClock, **options: Any) -> AsyncIterator[Node]:
    store = open_store(url, **options)
    leases = Leases(name, f"{name}:1", ttl_s=30.0, renew_s=1.0)
    store.fence = leases
    async with store, Runtime(store, clock) as runtime:
        manager = LeaseManager(store, leases, started_at_ms=0)
        yield Node(name, store, runtime, leases, manager)


def grant(grant_id: str, amount: int) -> CreateGrant:
    return CreateGrant(grant_id=grant_id, amount=amount, currency_id=CUR,
                       grant_type=GrantType.PAID, display_name=grant_id)


async def take_over(thief: Node, shard: int, raw_sql: Any, url: str) -> None:
    """What happens when the owner's heartbeat goes stale (it paused): another node's
    round takes the shard."""
    await raw_sql(url, "UPDATE cluster_nodes SET seen_at = clock_timestamp() - "
                       "interval '1 hour' WHERE node_id = (SELECT owner FROM shard_leases "
                       "WHERE shard = ?)", shard)
    await raw_sql(url, "INSERT INTO cluster_nodes (node_id, address, started_at, seen_at) "
                       "VALUES (?, ?, 0, clock_timestamp()) ON CONFLICT (node_id) DO UPDATE "
                       "SET seen_at = clock_timestamp()", thief.name, thief.leases.address)
    await thief.manager._acquire([shard], thief.leases.clock())
    assert thief.leases.holds(shard)


async def test_a_lone_node_takes_every_shard_and_the_leader_lease(pg_database) -> None:
    async with node(pg_database.url(), "a", ManualClock(1_000)) as a:
        await a.manager.round()
        assert len(a.leases.held) == SHARDS + 1
        assert a.leases.is_leader()
        reply = await a.runtime.submit("default/c1", grant("g1", 100))
        assert isinstance(reply, GrantReply)


async def test_two_nodes_share_the_shards_and_hand_over_on_leave(pg_database) -> None:
    url = pg_database.url()
    clock = ManualClock(1_000)
    async with node(url, "a", clock) as a:
        await a.manager.round()
        async with node(url, "b", clock) as b:
            await b.manager.round()  # b is live now; a sees it and gives its surplus up
            for _ in range(8):
                await a.manager.round()
                await b.manager.round()
            shards_a = {s for s in a.leases.held if s >= 0}
            shards_b = {s for s in b.leases.held if s >= 0}
            assert not shards_a & shards_b
            assert len(shards_a) == len(shards_b) == SHARDS // 2
            await b.manager.leave()
            await a.manager.round()
            assert len([s for s in a.leases.held if s >= 0]) == SHARDS
            assert not b.leases.held


async def test_a_flush_after_a_takeover_is_fenced_and_writes_nothing(pg_database,
                                                                      raw_sql) -> None:
    url = pg_database.url()
    clock = ManualClock(1_000)
    customer = "default/fenced"
    shard = shard_of(customer)
    async with node(url, "a", clock) as a, node(url, "b", clock) as b:
        await a.manager.round()
        assert a.leases.holds(shard)
        assert isinstance(await a.runtime.submit(customer, grant("g1", 100)), GrantReply)
        # a is paused past its lease (its own view still says it holds the shard) ...
        await take_over(b, shard, raw_sql, url)
        # ... and wakes with a consumption applied in memory: the commit is fenced.
        before = await raw_sql(url, "SELECT count(*) FROM ledger")
        with pytest.raises(ShardMoved):
            await a.store.commit(customer, *await _consumed(a, customer, 30))
        assert await raw_sql(url, "SELECT count(*) FROM ledger") == before
        assert a.store.fenced == 1
        # The new owner serves it from what is durable: the grant, nothing consumed.
        reply = await b.runtime.submit(customer, Consume(currency_id=CUR, amount=30,
                                                         idempotency_key="k1"))
        assert isinstance(reply, ConsumeReply)
        balances = await b.runtime.submit(customer, GetBalances())
        assert isinstance(balances, BalancesReply)
        assert balances.balances[0].current_balance == 70


async def _consumed(n: Node, customer: str, amount: int) -> tuple[Any, Any]:
    """The state and effects of a consumption applied in `n`'s memory, not committed."""
    from engine.core.effects import Effects  # noqa: PLC0415
    from engine.core.machine import apply  # noqa: PLC0415

    state = await n.store.load(customer)
    fx = Effects()
    apply(state, Consume(currency_id=CUR, amount=amount, idempotency_key="late"), 2_000, fx)
    return state, fx


async def test_a_runtime_that_lost_its_lease_answers_shard_moved(pg_database,
                                                                 raw_sql) -> None:
    url = pg_database.url()
    clock = ManualClock(1_000)
    customer = "default/moved"
    shard = shard_of(customer)
    async with node(url, "a", clock) as a, node(url, "b", clock) as b:
        await a.manager.round()
        assert isinstance(await a.runtime.submit(customer, grant("g1", 100)), GrantReply)
        await take_over(b, shard, raw_sql, url)
        await a.manager.round()  # the renewal finds the shard taken
        assert not a.leases.holds(shard)
        assert a.leases.lost >= 1
        # Resident state loaded under the old epoch is stale; loading it again is refused.
        with pytest.raises(ShardMoved):
            await a.runtime.submit(customer, Consume(currency_id=CUR, amount=1,
                                                     idempotency_key="x"))
        # Nothing of it landed: b sees the whole grant.
        balances = await b.runtime.submit(customer, GetBalances())
        assert balances.balances[0].current_balance == 100


async def test_a_key_written_by_the_old_owner_is_a_replay_on_the_new_one(pg_database,
                                                                           raw_sql) -> None:
    """The new owner's key filter never saw the old owner's keys: it must look them up
    (untrusted shard), so a retry after a failover returns the first outcome."""
    url = pg_database.url()
    clock = ManualClock(1_000)
    customer = "default/replayed"
    shard = shard_of(customer)
    async with node(url, "a", clock) as a, node(url, "b", clock) as b:
        await a.manager.round()
        await b.manager.round()
        assert isinstance(await a.runtime.submit(customer, grant("g1", 100)), GrantReply)
        first = await a.runtime.submit(customer, Consume(currency_id=CUR, amount=40,
                                                         idempotency_key="once"))
        assert isinstance(first, ConsumeReply)
        await take_over(b, shard, raw_sql, url)
        again = await b.runtime.submit(customer, Consume(currency_id=CUR, amount=40,
                                                         idempotency_key="once"))
        assert again == first
        balances = await b.runtime.submit(customer, GetBalances())
        assert balances.balances[0].current_balance == 60


async def test_outbox_ids_stay_gapless_with_two_writers(pg_database, raw_sql) -> None:
    url = pg_database.url()
    clock = ManualClock(1_000)
    async with node(url, "a", clock) as a, node(url, "b", clock) as b:
        await a.manager.round()
        await b.manager.round()
        for _ in range(8):
            await a.manager.round()
            await b.manager.round()
        mine = {"a": [], "b": []}
        for i in range(400):
            customer = f"default/c{i}"
            owner = "a" if a.leases.holds(shard_of(customer)) else "b"
            mine[owner].append(customer)
        assert mine["a"] and mine["b"]
        import anyio  # noqa: PLC0415

        async with anyio.create_task_group() as tg:
            for n, customers in ((a, mine["a"]), (b, mine["b"])):
                for customer in customers[:60]:
                    tg.start_soon(n.runtime.submit, customer, grant("g", 10))
        ids = [r[0] for r in await raw_sql(url, "SELECT id FROM outbox ORDER BY id")]
        assert ids == list(range(1, len(ids) + 1))
        assert len(ids) >= 120


async def test_a_fenced_flush_leaves_out_only_the_moved_customers(pg_database,
                                                                   raw_sql) -> None:
    """One flush carrying a customer whose shard moved and one whose shard did not: the
    statement writes nothing, then the flush goes again without the moved one."""
    from persistence.codec import make_unit  # noqa: PLC0415
    from persistence.durable import _Batch  # noqa: PLC0415

    url = pg_database.url()
    clock = ManualClock(1_000)
    moved, stays = "default/moved-1", None
    async with node(url, "a", clock) as a, node(url, "b", clock) as b:
        await a.manager.round()
        for i in range(100):
            if shard_of(f"default/stays-{i}") != shard_of(moved):
                stays = f"default/stays-{i}"
                break
        assert stays is not None
        for customer in (moved, stays):
            assert isinstance(await a.runtime.submit(customer, grant("g1", 100)), GrantReply)
        outbox_before = await raw_sql(url, "SELECT count(*) FROM outbox")
        batch = _Batch()
        for customer in (moved, stays):
            state, fx = await _consumed(a, customer, 10)
            batch.units.append(make_unit(customer, state, fx))
            batch.customers.add(customer)
        await take_over(b, shard_of(moved), raw_sql, url)
        rows = await a.store._flush(batch, 0)
        assert batch.fenced == {moved}
        assert [u.customer_id for u in batch.units] == [stays]
        ids = [r[0] for r in await raw_sql(url, "SELECT id FROM outbox ORDER BY id")]
        assert ids == list(range(1, len(ids) + 1))
        assert [r[0] for r in rows["outbox"]] == ids[outbox_before[0][0]:]
        balances = await b.runtime.submit(moved, GetBalances())
        assert balances.balances[0].current_balance == 100  # nothing of it written
        kept = await raw_sql(url, "SELECT count(*) FROM ledger l JOIN customers c "
                                  "ON c.num = l.customer WHERE c.customer_id = ?", stays)
        assert kept[0][0] == 2  # its grant and the consumption


async def test_a_round_held_up_does_not_hold_up_the_heartbeat(pg_database, raw_sql) -> None:
    """A round can wait (a takeover's reads, a hand-over waiting for a flush's lock on its
    rows): the heartbeat beats on meanwhile, so the node's own leases do not lapse and the
    others do not see it dead. (When the heartbeat was the round's first statement, a
    round held up for a TTL cost the node every lease: CI caught a healthy node losing 73.)"""
    import anyio  # noqa: PLC0415

    url = pg_database.url()
    ttl = 1.0
    store = open_store(url)
    leases = Leases("a", "a:1", ttl_s=ttl, renew_s=0.1)
    store.fence = leases
    async with store, Runtime(store, ManualClock(1_000)):
        manager = LeaseManager(store, leases, started_at_ms=0)
        await manager.round()
        assert leases.holds(0) and leases.is_leader()
        stuck, go_on = anyio.Event(), anyio.Event()
        fetch = store.fetch

        async def held_up_table_read(query: str, *args: Any) -> Any:
            if query.startswith("SELECT l.shard, l.owner"):  # the round's read of the table
                stuck.set()
                await go_on.wait()
            return await fetch(query, *args)

        store.fetch = held_up_table_read
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                tg.start_soon(manager.run)
                await stuck.wait()
                since = leases.clock()
                rounds = leases.rounds
                # Real time must pass: a lease lasts `ttl` from a heartbeat's start.
                while leases.clock() < since + 2 * ttl:
                    await anyio.sleep(0.05)
                assert leases.rounds == rounds  # the round is still held up ...
                assert leases.holds(0) and leases.is_leader()  # ... the leases hold ...
                assert leases.beat_at > since + ttl  # ... as the heartbeats went on
                fresh = await raw_sql(url, "SELECT seen_at > clock_timestamp() - "
                                           "make_interval(secs => ?) FROM cluster_nodes "
                                           "WHERE node_id = 'a'", ttl)
                assert fresh == [(True,)]
                assert leases.lost == 0
                go_on.set()
                while leases.rounds == rounds:  # and the round finishes once let go
                    await anyio.sleep(0.01)
                tg.cancel_scope.cancel()
        assert len(leases.held) == SHARDS + 1


WEEK = 7 * 24 * 3_600_000


async def test_filter_bits_are_saved_only_by_a_node_holding_every_key_and_taken_by_the_next(
        pg_database, raw_sql, monkeypatch) -> None:
    """A cluster node's filter holds every key only while it holds every shard and has
    read their keys (a lone node: PostgreSQL's default): then it saves its bits as runs
    start, as a lone process does. Nodes sharing the shards do not (each holds its shards'
    keys alone). A node taking shards over takes the saved bits back and reads only the
    runs written since: after a restart on a database of millions of keys, it read them
    all for half a minute beside the load, every new key looked up meanwhile
    (docs/benchmarks.md)."""
    from persistence import sql

    monkeypatch.setattr(sql, "KEY_RUN_ROWS", 4)
    monkeypatch.setattr(sql, "KEY_RUN_DOUBLING", 2)  # runs of 4, 4, 8, 8, 16 keys
    monkeypatch.setattr("persistence.durable.FILTER_PART_BYTES", 10_000)
    url = pg_database.url()
    start = (ManualClock().now_ms() // WEEK + 1) * WEEK
    generation, period = start // WEEK % 2, start // WEEK
    clock = ManualClock(start)
    customers = [f"default/c{i}" for i in range(4)]
    replies: dict[tuple[str, str], Any] = {}

    async def saved() -> list[tuple[Any, ...]]:
        return [tuple(r) for r in await raw_sql(
            url, "SELECT period, runs, count(*) FROM "
            f"{sql.KEY_FILTER_TABLES[generation]} GROUP BY period, runs")]

    async def trust_held(n: Node) -> None:
        await n.store.reindex_keys({s: lease.epoch for s, lease in n.leases.held.items()
                                    if s >= 0})

    async def consume(n: Node, i: int) -> None:
        cid, key = customers[i % len(customers)], f"k{i}"
        replies[cid, key] = await n.runtime.submit(cid, Consume(
            currency_id=CUR, amount=1 + i % 3, idempotency_key=key))
        assert isinstance(replies[cid, key], ConsumeReply)

    async with node(url, "a", clock, key_filter_bytes=1 << 16) as a:
        assert not a.store.statistics()["key_filter_ready"]  # no shard held yet
        await a.manager.round()
        assert not a.store.statistics()["key_filter_ready"]  # their keys not read yet
        await trust_held(a)
        assert a.leases.trusts_every_shard()
        assert a.store.statistics()["key_filter_ready"]
        for cid in customers:
            assert isinstance(await a.runtime.submit(cid, grant(f"g-{cid}", 10**6)),
                              GrantReply)
        for i in range(30):  # runs of 4, 4, 8, 8, and 6 keys in the fifth
            await consume(a, i)
        await a.manager.leave()
    assert await saved() == [(period, 4, 4)]  # the four full runs, in 4 parts

    # Two nodes share the shards: neither holds every key, neither saves, even as a
    # run starts (run five is full after 10 more keys).
    async with node(url, "b", clock, key_filter_bytes=1 << 16) as b, \
            node(url, "c", clock, key_filter_bytes=1 << 16) as c:
        await b.manager.round()
        for _ in range(8):  # c is live now; b gives its surplus up, c takes it
            await c.manager.round()
            await b.manager.round()
        assert {len([s for s in n.leases.held if s >= 0]) for n in (b, c)} == {SHARDS // 2}
        for n in (b, c):
            await trust_held(n)
            stats = n.store.statistics()
            # The saved bits hold the first four runs: only the fifth is read.
            assert (stats["key_filter_runs_restored"], stats["key_filter_keys_read"]) == (4, 6)
            assert not n.leases.trusts_every_shard()
        for i in range(30, 44):
            owner = b if b.leases.holds(shard_of(customers[i % len(customers)])) else c
            await consume(owner, i)
        assert max(b.store._run[generation], c.store._run[generation]) >= 5
        for n in (b, c):
            assert n.store.statistics()["key_filter_saves"] == 0
            await n.manager.leave()
    assert await saved() == [(period, 4, 4)]

    # A lone node again: it takes the bits back, reads the runs after them, holds every
    # key and answers replays of every run with their first outcomes.
    async with node(url, "d", clock, key_filter_bytes=1 << 16) as d:
        await d.manager.round()
        await trust_held(d)
        stats = d.store.statistics()
        assert stats["key_filter_runs_restored"] == 4
        assert stats["key_filter_keys_read"] == 44 - 24  # runs five and six
        assert all(d.store.key_filter.may_hold(cid, key) for cid, key in replies)
        for (cid, key), reply in replies.items():
            again = await d.runtime.submit(cid, Consume(currency_id=CUR, amount=reply.amount,
                                                        idempotency_key=key))
            assert again == reply
        assert d.leases.trusts_every_shard()
        await d.manager.leave()
