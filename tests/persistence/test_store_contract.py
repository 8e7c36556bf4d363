"""The store contract, written once and run against SQLite and PostgreSQL (`store_url`).

Everything goes through the public seams: `open_store()`, the Runtime (commands and
replies), and the store's reading API (`load`, `ledger`, `outbox_after`, `lookup_keys`,
`due_customers`, `purge`). Raw SQL is used only to look at the schema and to plant a
too-new schema version. Time is a ManualClock; nothing sleeps to synchronize: tests await
replies, or an event set from the runtime's `on_committed` hook.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

from engine.core.commands import (
    BalancesReply,
    ConfigurePool,
    ConfirmPayment,
    Consume,
    ConsumeReply,
    CreateGrant,
    GetBalances,
    GrantReply,
    PoolSettingsReply,
    Refused,
    Release,
    ReleaseReply,
    Reply,
    Reserve,
    ReserveReply,
    VoidGrant,
)
from engine.core.effects import Effects
from engine.core.model import EventType, GrantStatus, GrantType
from engine.core.model import LedgerEventType as L
from engine.core.refusals import Refusal
from engine.core.replay import customer_row, grant_row, pool_row, rebuild, reservation_row
from engine.runtime import ManualClock
from persistence import MemoryStore, open_store, sql
from persistence.schema import LATEST_VERSION, SchemaTooNew

CUR = "credits"
# schema_version holds one row per migration applied.
ALL_VERSIONS = [(v,) for v in range(1, LATEST_VERSION + 1)]
TABLES = {"schema_version", "customers", "grants", "reservations", "pools", "ledger",
          "idempotency_keys_0", "idempotency_keys_1", "key_generations", "outbox"}


def ok(reply: Reply, kind: type[Reply]) -> Any:
    assert isinstance(reply, kind), reply
    return reply


def grant(grant_id: str, amount: int, **fields: Any) -> CreateGrant:
    fields.setdefault("currency_id", CUR)
    fields.setdefault("grant_type", GrantType.PAID)
    fields.setdefault("display_name", f"grant {grant_id}")
    return CreateGrant(grant_id=grant_id, amount=amount, **fields)


async def snapshot(store: Any, customer_id: str) -> dict[str, Any]:
    """What the store holds for a customer, as comparable values."""
    state = await store.load(customer_id)
    return {
        "customer": customer_row(state),
        "grants": sorted((grant_row(g) for g in state.grants.values()), key=lambda r: r.id),
        "reservations": sorted((reservation_row(r) for r in state.reservations.values()),
                               key=lambda r: r.id),
        "pools": sorted((pool_row(p) for p in state.pools.values()),
                        key=lambda r: (r.currency_id, r.resource_id or "")),
        "keys": dict(sorted(state.idempotency.items())),
        "keys_complete": state.keys_complete,
        "next_due": state.next_due(),
    }


async def assert_ledger_is_the_truth(store: Any, customer_id: str) -> None:
    """Rows restored by the store equal the rows re-derived from its ledger alone."""
    state = await store.load(customer_id)
    entries = await store.ledger(customer_id, 0, 1_000_000)
    rebuilt = rebuild(
        customer_row(state),
        [grant_row(g) for g in state.grants.values()],
        [reservation_row(r) for r in state.reservations.values()],
        [pool_row(p) for p in state.pools.values()],
        entries,
    )
    assert {g.id: grant_row(g) for g in rebuilt.grants.values()} == {
        g.id: grant_row(g) for g in state.grants.values()}
    assert {r.id: reservation_row(r) for r in rebuilt.reservations.values()} == {
        r.id: reservation_row(r) for r in state.reservations.values()}
    assert rebuilt.ledger_seq == state.ledger_seq == len(entries)


def dialect(url: str) -> str:
    return "sqlite" if url.startswith("sqlite") else "postgresql"


async def table_names(raw_sql: Any, url: str) -> set[str]:
    if dialect(url) == "sqlite":
        rows = await raw_sql(url, "SELECT name FROM sqlite_master WHERE type = 'table'")
    else:
        rows = await raw_sql(url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    return {r[0] for r in rows}


# ---------------------------------------------------------------------------------------
# open_store URL parsing (no database needed)


class TestOpenStore:
    def test_sqlite_relative_and_absolute_paths(self, tmp_path: Path) -> None:
        from persistence.sqlite import SQLiteStore

        relative = open_store("sqlite:///data/creditd.db")
        assert isinstance(relative, SQLiteStore)
        assert relative.path == Path("data/creditd.db")
        absolute = open_store(f"sqlite:///{tmp_path}/x/creditd.db", busy_timeout_ms=7,
                              cache_mb=3, durability="async")
        assert isinstance(absolute, SQLiteStore)
        assert absolute.path == tmp_path / "x" / "creditd.db"
        assert (absolute.busy_timeout_ms, absolute.cache_mb, absolute.durability) == (
            7, 3, "async")
        # Building a store touches nothing: the file appears on entry (async with).
        assert not (tmp_path / "x").exists()

    @pytest.mark.parametrize("url", ["postgresql://u@db.example:6543/credits",
                                     "postgres://u:secret@db.example/credits"])
    def test_postgresql(self, url: str) -> None:
        from persistence.postgres import PostgresStore

        store = open_store(url, pool_max=3)
        assert isinstance(store, PostgresStore)
        assert store.dsn == url and store.pool_max == 3

    def test_memory(self) -> None:
        assert isinstance(open_store("memory://"), MemoryStore)

    def test_environment_and_default(self, monkeypatch: pytest.MonkeyPatch,
                                     tmp_path: Path) -> None:
        from persistence.sqlite import SQLiteStore

        monkeypatch.setenv("CREDITD_DATABASE_URL", "memory://")
        assert isinstance(open_store(), MemoryStore)
        monkeypatch.delenv("CREDITD_DATABASE_URL")
        monkeypatch.setenv("CREDITD_DATA_DIR", str(tmp_path))
        default = open_store()
        assert isinstance(default, SQLiteStore)
        assert default.path == tmp_path / "creditd.db"

    @pytest.mark.parametrize("url", ["mysql://u@h/db", "sqlite://relative.db", "sqlite:/x.db",
                                     "postgresq://h/db", "http://example.com", "memory:",
                                     "creditd.db", "/var/lib/creditd.db"])
    def test_bad_url(self, url: str) -> None:
        with pytest.raises(ValueError, match="unsupported database URL"):
            open_store(url)


# ---------------------------------------------------------------------------------------
# Migrations


@pytest.mark.anyio
async def test_migrations_from_empty_then_reopen_is_a_no_op(store_url, engine, raw_sql) -> None:
    async with open_store(store_url):
        pass
    assert await table_names(raw_sql, store_url) >= TABLES
    assert await raw_sql(store_url, "SELECT version FROM schema_version") == ALL_VERSIONS

    clock = ManualClock()
    async with engine(store_url, clock) as (store, rt):
        ok(await rt.submit("c1", grant("g1", 1_000)), GrantReply)
    before = None
    for _ in range(2):  # re-opening migrates nothing and keeps the data
        async with open_store(store_url) as store:
            now = await snapshot(store, "c1")
            assert len(now["grants"]) == 1
            assert before is None or now == before
            before = now
    assert await raw_sql(store_url, "SELECT version FROM schema_version") == ALL_VERSIONS


def _holds_connections(store: Any) -> bool:
    # White-box on purpose: the observable symptom of a leak is a process that never exits
    # or a pool left open (SQLite: connections holding the file).
    if dialect(getattr(store, "dialect", "")) == "sqlite":
        return store._wdb is not None or store._rdb is not None
    return store._pool is not None


@pytest.mark.anyio
async def test_concurrent_start_ups_migrate_once(store_url, raw_sql, tmp_path) -> None:
    """Processes starting on an empty database at once (say `creditd migrate` and the
    server) must all come up, and the schema be migrated exactly once. The race is timing
    dependent, so it is tried on several empty databases."""
    for trial in range(8):
        if dialect(store_url) == "sqlite":
            url = f"sqlite:///{tmp_path / f'trial-{trial}.db'}"
        else:
            url = store_url
            await raw_sql(url, "DROP SCHEMA public CASCADE")
            await raw_sql(url, "CREATE SCHEMA public")
        errors: list[BaseException] = []
        opened = 0

        async def start() -> None:
            nonlocal opened
            store = open_store(url)
            try:
                async with store:
                    opened += 1
            except Exception as exc:  # noqa: BLE001 - collected and asserted below
                errors.append(exc)
                if _holds_connections(store):  # hygiene: see test_failed_open_releases_...
                    await store._disconnect()

        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                for _ in range(3):
                    tg.start_soon(start)
        assert (trial, errors, opened) == (trial, [], 3)
        assert await raw_sql(url, "SELECT version FROM schema_version") == ALL_VERSIONS


@pytest.mark.anyio
async def test_failed_open_releases_its_connections(store_url, raw_sql) -> None:
    """A database the migration cannot apply to (a foreign `customers` table, no schema
    version): opening fails, and the store must not keep its connections open."""
    await raw_sql(store_url, "CREATE TABLE customers (x INTEGER)")
    store = open_store(store_url)
    try:
        with pytest.raises(Exception, match="customers") as raised:
            async with store:
                pytest.fail("the migration cannot apply here")
        assert not isinstance(raised.value, SchemaTooNew)
        assert not _holds_connections(store), "a failed open left its connections open"
    finally:
        if _holds_connections(store):  # so the failure above does not hang the run at exit
            await store._disconnect()


@pytest.mark.anyio
async def test_newer_schema_is_refused(store_url, raw_sql) -> None:
    async with open_store(store_url):
        pass
    await raw_sql(store_url, "INSERT INTO schema_version (version) VALUES (?)", 99)
    with pytest.raises(SchemaTooNew, match=rf"version 99, newer than this creditd understands "
                                           rf"\({LATEST_VERSION}\); upgrade creditd"):
        async with open_store(store_url):
            pytest.fail("a store on a too-new schema must not open")
    # Refusing changed nothing.
    versions = await raw_sql(store_url, "SELECT version FROM schema_version ORDER BY version")
    assert versions == [*ALL_VERSIONS, (99,)]


# ---------------------------------------------------------------------------------------
# Durability of what the runtime acknowledged


async def _scenario(rt: Any, clock: ManualClock) -> None:
    """Grants of every kind, consumptions, reservations (released, expired, active), a
    void, an expiry, a soft-limit overdraft, a payment confirmation, a scheduled grant."""
    t0 = clock.now_ms()
    a = "c-alpha"
    ok(await rt.submit(a, grant("g-paid", 100_000, priority=40, cost_amount=9_900,
                                cost_currency="USD", comment="top-up",
                                metadata={"order": "o-1", "ü": "ñ"})), GrantReply)
    ok(await rt.submit(a, grant("g-promo", 30_000, grant_type=GrantType.PROMOTIONAL,
                                expire_at=t0 + 10_000)), GrantReply)
    ok(await rt.submit(a, grant("g-void", 5_000, grant_type=GrantType.RECURRING)), GrantReply)
    ok(await rt.submit(a, grant("g-gpu", 20_000, resource_id="gpu")), GrantReply)
    ok(await rt.submit(a, grant("g-later", 7_000, effective_at=t0 + 1_000_000)), GrantReply)
    ok(await rt.submit(a, grant("g-invoice", 3_000, await_payment=True)), GrantReply)
    ok(await rt.submit(a, grant("g-unpaid", 4_000, await_payment=True)), GrantReply)
    ok(await rt.submit(a, ConfirmPayment(grant_id="g-invoice")), GrantReply)
    ok(await rt.submit(a, Consume(currency_id=CUR, amount=12_345, idempotency_key="use-1",
                                  feature_id="f-1", dimensions={"model": "m", "n": 3,
                                                                "x": 1.5, "b": True})),
       ConsumeReply)
    ok(await rt.submit(a, Consume(currency_id=CUR, amount=700, resource_id="gpu",
                                  idempotency_key="use-gpu")), ConsumeReply)
    ok(await rt.submit(a, Reserve(reservation_id="r-released", currency_id=CUR, amount=4_000,
                                  expires_at=t0 + 60_000, metadata={"job": "j1"})),
       ReserveReply)
    ok(await rt.submit(a, Release(reservation_id="r-released", consumed_amount=1_500,
                                  feature_id="f-2", idempotency_key="rel-1")), ReleaseReply)
    ok(await rt.submit(a, Reserve(reservation_id="r-expires", currency_id=CUR, amount=2_000,
                                  expires_at=t0 + 5_000)), ReserveReply)
    ok(await rt.submit(a, Reserve(reservation_id="r-active", currency_id=CUR, amount=1_000,
                                  expires_at=t0 + 3_600_000)), ReserveReply)
    ok(await rt.submit(a, VoidGrant(grant_id="g-void")), GrantReply)
    # Soft limit: consume past the balance into an overdraft.
    ok(await rt.submit(a, grant("g-soft", 1_000, currency_id="soft")), GrantReply)
    ok(await rt.submit(a, ConfigurePool(currency_id="soft", hard_limit=False,
                                        low_balance_units=100, usage_low_percent=30)),
       PoolSettingsReply)
    reply = ok(await rt.submit(a, Consume(currency_id="soft", amount=1_500)), ConsumeReply)
    assert reply.overdraft == 500
    # Past the promo's expiry and r-expires' TTL: the next command fires both first.
    clock.advance(20_000)
    ok(await rt.submit(a, Consume(currency_id=CUR, amount=10)), ConsumeReply)

    b = "c-beta"
    ok(await rt.submit(b, grant("g-b", 50_000)), GrantReply)
    ok(await rt.submit(b, Consume(currency_id=CUR, amount=49_999, idempotency_key="b-1")),
       ConsumeReply)


@pytest.mark.anyio
async def test_runtime_state_is_durable_across_restart(store_url, engine, ledger_checked) -> None:
    clock = ManualClock()
    customers = ["c-alpha", "c-beta"]
    async with engine(store_url, clock) as (store, rt):
        await _scenario(rt, clock)
        balances = {c: await rt.submit(c, GetBalances()) for c in customers}
        ledgers = {c: await ledger_checked(store, rt, c) for c in customers}
        before = {c: await snapshot(store, c) for c in customers}
        operations = await store.key_operations("c-alpha", ["use-1"])

    state = before["c-alpha"]
    statuses = {g.id: g.status for g in state["grants"]}
    assert statuses == {
        "g-paid": GrantStatus.ACTIVE, "g-promo": GrantStatus.EXPIRED,
        "g-void": GrantStatus.VOIDED, "g-gpu": GrantStatus.ACTIVE,
        "g-later": GrantStatus.SCHEDULED, "g-invoice": GrantStatus.ACTIVE,
        "g-unpaid": GrantStatus.PAYMENT_PENDING, "g-soft": GrantStatus.ACTIVE,
        # the engine-made overdraft grant of the soft pool
        **{g.id: GrantStatus.ACTIVE for g in state["grants"]
           if g.grant_type is GrantType.OVERDRAFT},
    }
    assert {r.id: r.status.value for r in state["reservations"]} == {
        "r-released": "RELEASED", "r-expires": "EXPIRED", "r-active": "ACTIVE"}
    kinds = Counter(e.event_type for e in ledgers["c-alpha"])
    for kind in (L.CREDITS_GRANTED, L.CREDITS_CONSUMED, L.CREDITS_EXPIRED, L.CREDITS_VOIDED,
                 L.CREDITS_RESERVED, L.CREDITS_RESERVATION_RELEASED,
                 L.CREDITS_RESERVATION_EXPIRED):
        assert kinds[kind] >= 1, (kind, kinds)
    (use_1,) = [e for e in ledgers["c-alpha"] if e.op_seq == operations["use-1"]]
    assert use_1.dimensions == {"model": "m", "n": 3, "x": 1.5, "b": True}
    assert use_1.feature_id == "f-1"

    # A new store and runtime on the same database: identical state, nothing lost.
    async with engine(store_url, clock) as (store, rt):
        for c in customers:
            assert await snapshot(store, c) == before[c]
            assert await rt.submit(c, GetBalances()) == balances[c]
            assert await ledger_checked(store, rt, c) == ledgers[c]
            await assert_ledger_is_the_truth(store, c)


# ---------------------------------------------------------------------------------------
# Outbox


@pytest.mark.anyio
async def test_outbox_gapless_in_commit_order_across_concurrent_customers(store_url,
                                                                          engine) -> None:
    customers = [f"c{i:02}" for i in range(50)]
    per_customer = 20
    clock = ManualClock()
    async with engine(store_url, clock) as (store, rt):
        async def one(cid: str, i: int) -> None:
            ok(await rt.submit(cid, grant(f"{cid}-g{i}", 1_000 + i)), GrantReply)

        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                for i in range(per_customer):
                    for cid in customers:
                        tg.start_soon(one, cid, i)
        assert store.flushes < store.flushed_units  # many customers per transaction
        rows = await store.outbox_after(0, 1_000_000)
        event_seqs = {c: (await store.load(c)).event_seq for c in customers}

    ids = [r[0] for r in rows]
    assert ids == list(range(1, len(rows) + 1))
    assert len(rows) == sum(event_seqs.values())
    granted = {e.grant_id for _, _, e in rows if e.type is EventType.GRANTED}
    assert granted == {f"{c}-g{i}" for c in customers for i in range(per_customer)}
    for c in customers:
        mine = [e for _, cid, e in rows if cid == c]
        assert all(e.customer_id == c for e in mine)
        # Per customer the outbox order is the apply order: seq 1..N, no gap, no swap.
        assert [e.seq for e in mine] == list(range(1, event_seqs[c] + 1))

    # Paging with after_id/limit reads the same rows.
    async with open_store(store_url) as store:
        paged: list[Any] = []
        while page := await store.outbox_after(paged[-1][0] if paged else 0, 97):
            paged += page
        assert paged == rows

    # After a restart the sequence continues where it stopped.
    async with engine(store_url, clock) as (store, rt):
        ok(await rt.submit("c-new", grant("late", 5)), GrantReply)
        more = await store.outbox_after(len(rows), 100)
        assert [r[0] for r in more] == list(range(len(rows) + 1, len(rows) + 1 + len(more)))
        assert more and all(cid == "c-new" for _, cid, _ in more)


# ---------------------------------------------------------------------------------------
# Idempotency across restarts


@pytest.mark.anyio
async def test_idempotent_replay_after_restart(store_url, engine, ledger_checked) -> None:
    clock = ManualClock()
    consume = Consume(currency_id=CUR, amount=250, idempotency_key="k-1", feature_id="f",
                      dimensions={"region": "eu"})
    async with engine(store_url, clock) as (store, rt):
        ok(await rt.submit("c", grant("g", 10_000)), GrantReply)
        first = ok(await rt.submit("c", consume), ConsumeReply)

    clock.advance(3_600_000)  # later, so a fresh reply would carry another timestamp
    async with engine(store_url, clock) as (store, rt):
        assert await rt.submit("c", consume) == first
        reused = ok(await rt.submit("c", msgspec.structs.replace(consume, amount=251)), Refused)
        assert reused.code == Refusal.IDEMPOTENCY_KEY_REUSED
        reused = ok(await rt.submit("c", msgspec.structs.replace(consume, feature_id=None)),
                    Refused)
        assert reused.code == Refusal.IDEMPOTENCY_KEY_REUSED
        entries = await ledger_checked(store, rt, "c")
        (operation,) = (await store.key_operations("c", ["k-1"])).values()
        assert [e.op_seq for e in entries if e.event_type is L.CREDITS_CONSUMED] == [operation]
        balances = ok(await rt.submit("c", GetBalances()), BalancesReply)
        assert balances.balances[0].current_balance == 10_000 - 250


async def keyed_operations(store: Any, customer_id: str, entries: list[Any],
                           keys: list[str]) -> dict[str, int]:
    """For each remembered key among `keys`, how many consumption entries its operation
    has in `entries` (ledger rows do not keep keys; a key's row names its operation)."""
    operations = await store.key_operations(customer_id, keys)
    per_operation = Counter(e.op_seq for e in entries if e.event_type is L.CREDITS_CONSUMED)
    return {key: per_operation[op] for key, op in operations.items()}


@pytest.mark.anyio
@pytest.mark.parametrize("durability", ["sync", "async"])
@pytest.mark.parametrize("key_filter", ["indexed", "none"])
async def test_idempotent_replay_of_keys_not_loaded(store_url, engine, ledger_checked,
                                                    durability, key_filter) -> None:
    """Activation loads no remembered keys; a replay of one is applied as new, the
    commit finds the key remembered and writes nothing (sync: checked while the flush
    before runs; async: before the commit returns), and the batch is applied again with
    the key known: answered exactly as if it had been in memory. With the key filter
    read back from the tables at start, the same, and a new key needs no check."""
    clock = ManualClock()
    replies = {}
    options = {"durability": durability,
               "key_filter_bytes": 1 << 16 if key_filter == "indexed" else 0}
    async with engine(store_url, clock, **options) as (store, rt):
        ok(await rt.submit("c", grant("g", 1_000_000)), GrantReply)
        for i in range(6):
            replies[f"k{i}"] = ok(await rt.submit(
                "c", Consume(currency_id=CUR, amount=10 + i, idempotency_key=f"k{i}")),
                ConsumeReply)
            clock.advance(1_000)

    clock.advance(60_000)
    async with engine(store_url, clock, **options) as (store, rt):
        if key_filter == "indexed":
            with anyio.fail_after(10):
                await store.keys_indexed.wait()  # the keys written before are read back
        state = await store.load("c")
        assert not state.idempotency and not state.keys_complete

        assert await rt.submit("c", Consume(currency_id=CUR, amount=10,
                                            idempotency_key="k0")) == replies["k0"]
        assert rt.runtime_statistics().key_replays == 1  # found by the commit's check
        reused = ok(await rt.submit("c", Consume(currency_id=CUR, amount=999,
                                                 idempotency_key="k1")), Refused)
        assert reused.code == Refusal.IDEMPOTENCY_KEY_REUSED
        assert await rt.submit("c", Consume(currency_id=CUR, amount=15,
                                            idempotency_key="k5")) == replies["k5"]
        passed = store.statistics().get("key_filter_passed", 0)
        fresh = ok(await rt.submit("c", Consume(currency_id=CUR, amount=7,
                                                idempotency_key="k-new")), ConsumeReply)
        assert fresh.timestamp == clock.now_ms()
        if key_filter == "indexed":  # k-new was surely new: no check
            assert store.statistics()["key_filter_passed"] == passed + 1
        await store._written("c")  # async: acknowledged is not yet written
        entries = await ledger_checked(store, rt, "c")
        keys = [f"k{i}" for i in range(6)] + ["k-new"]
        assert await keyed_operations(store, "c", entries, keys) == {k: 1 for k in keys}
        assert len([e for e in entries if e.event_type is L.CREDITS_CONSUMED]) == len(keys)

        # lookup_keys directly: only remembered keys come back, in chunks past 250 keys.
        wanted = [f"absent-{i}" for i in range(1_200)] + ["k0", "k3", "k-new"]
        found = await store.lookup_keys("c", wanted)
        assert {r.key: r.reply for r in found} == {"k0": replies["k0"], "k3": replies["k3"],
                                                   "k-new": fresh}
        assert await store.lookup_keys("someone-else", ["k0"]) == []


@pytest.mark.anyio
async def test_a_replay_in_a_group_commit_leaves_only_its_own_unit_out(
        store_url, engine, ledger_checked) -> None:
    """After a restart no customer's keys are in memory. Twenty customers consume at
    once with new keys while one of them also replays an old key: the flushes carry many
    customers' units; the replaying customer's unit is left out (its key is remembered)
    and applied again, every other unit is written as it was, and each key makes one
    operation."""
    clock = ManualClock()
    customers = [f"g{i:02}" for i in range(20)]
    async with engine(store_url, clock) as (store, rt):
        for cid in customers:
            ok(await rt.submit(cid, grant(f"{cid}-g", 1_000_000)), GrantReply)
        first = ok(await rt.submit("g00", Consume(currency_id=CUR, amount=3,
                                                  idempotency_key="old")), ConsumeReply)
    clock.advance(1_000)
    async with engine(store_url, clock) as (store, rt):
        with anyio.fail_after(10):  # "old" is checked because the filter holds it
            await store.keys_indexed.wait()
        replies: dict[tuple[str, str], Any] = {}

        async def use(cid: str, key: str, amount: int) -> None:
            replies[(cid, key)] = await rt.submit(
                cid, Consume(currency_id=CUR, amount=amount, idempotency_key=key))

        async with anyio.create_task_group() as tg:
            for cid in customers:
                for i in range(3):
                    tg.start_soon(use, cid, f"new-{i}", 10 + i)
            tg.start_soon(use, "g00", "old", 3)
        assert replies[("g00", "old")] == first
        assert all(isinstance(r, ConsumeReply) for r in replies.values())
        assert rt.runtime_statistics().key_replays >= 1
        for cid in customers:
            entries = await ledger_checked(store, rt, cid)
            keys = [f"new-{i}" for i in range(3)] + (["old"] if cid == "g00" else [])
            assert await keyed_operations(store, cid, entries, keys) == {k: 1 for k in keys}


# ---------------------------------------------------------------------------------------
# Concurrent writers and group commit


@pytest.mark.anyio
async def test_concurrent_writers_group_commit_and_durability(store_url, engine,
                                                              ledger_checked) -> None:
    customers = [f"w{i:03}" for i in range(200)]
    consumes = 10
    clock = ManualClock()
    async with engine(store_url, clock) as (store, rt):
        async def start(cid: str) -> None:
            ok(await rt.submit(cid, grant(f"{cid}-g", 100_000)), GrantReply)

        async def use(cid: str, i: int) -> None:
            ok(await rt.submit(cid, Consume(currency_id=CUR, amount=i + 1,
                                            idempotency_key=f"{cid}-{i}")), ConsumeReply)

        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                for cid in customers:
                    tg.start_soon(start, cid)
            flushes, units = store.flushes, store.flushed_units
            async with anyio.create_task_group() as tg:
                for i in range(consumes):
                    for cid in customers:
                        tg.start_soon(use, cid, i)
        new_flushes, new_units = store.flushes - flushes, store.flushed_units - units
        assert new_units >= len(customers)  # at least one commit per customer
        assert 0 < new_flushes < new_units, (new_flushes, new_units)

    spent = sum(range(1, consumes + 1))
    async with engine(store_url, clock) as (store, rt):
        for cid in customers:
            entries = await ledger_checked(store, rt, cid)
            keys = [f"{cid}-{i}" for i in range(consumes)]
            assert await keyed_operations(store, cid, entries, keys) == {k: 1 for k in keys}
            balances = ok(await rt.submit(cid, GetBalances()), BalancesReply)
            assert balances.balances[0].current_balance == 100_000 - spent


# ---------------------------------------------------------------------------------------
# Timers survive a restart


@pytest.mark.anyio
async def test_timers_fire_after_restart_without_any_command(store_url, engine,
                                                             ledger_checked) -> None:
    clock = ManualClock()
    t0 = clock.now_ms()
    async with engine(store_url, clock) as (store, rt):
        ok(await rt.submit("c-timer", grant("g-exp", 10_000, expire_at=t0 + 10_000)), GrantReply)
        ok(await rt.submit("c-timer", grant("g-keep", 5_000)), GrantReply)
        ok(await rt.submit("c-timer", Reserve(reservation_id="r", currency_id=CUR, amount=1_000,
                                              expires_at=t0 + 15_000)), ReserveReply)
        ok(await rt.submit("c-idle", grant("g-idle", 1_000)), GrantReply)
        assert await store.due_customers(t0 + 3_600_000, 100) == [("c-timer", t0 + 10_000)]
        assert await store.due_customers(t0 + 9_999, 100) == []

    clock.advance(60_000)  # while nothing runs

    # The runtime reads due customers from the store at start-up and fires their timers.
    # Waiting: an event set by the runtime's on_committed hook when the expiry is durable.
    # (anyio.wait_all_tasks_blocked() alone is not enough here: a task waiting on the
    # database driver's future counts as "blocked", so it may return before the commit.)
    committed: list[tuple[str, Effects]] = []
    expired = anyio.Event()

    def on_committed(customer_id: str, fx: Effects) -> None:
        committed.append((customer_id, fx))
        if any(e.event_type is L.CREDITS_EXPIRED for e in fx.entries):
            expired.set()

    async with engine(store_url, clock, runtime_options={"on_committed": on_committed}) as (
            store, rt):
        with anyio.fail_after(10):
            await expired.wait()
        await anyio.wait_all_tasks_blocked()
        assert [c for c, _ in committed] == ["c-timer"]  # nobody else was touched
        assert rt.runtime_statistics().activations == 1
        entries = await store.ledger("c-timer", 0, 1_000)
        fired = [(e.event_type, e.timestamp) for e in entries
                 if e.event_type in (L.CREDITS_EXPIRED, L.CREDITS_RESERVATION_EXPIRED)]
        # Each timer fired at its own due time, not at the restart's "now": the grant at
        # +10 s, the reservation at +15 s (its hold, drawn from the expired grant, then
        # expires too).
        assert fired[:2] == [(L.CREDITS_EXPIRED, t0 + 10_000),
                             (L.CREDITS_RESERVATION_EXPIRED, t0 + 15_000)]
        assert {ts for _, ts in fired} == {t0 + 10_000, t0 + 15_000}
        assert await store.due_customers(clock.now_ms() + 3_600_000, 100) == []
        await ledger_checked(store, rt, "c-timer")
        balances = ok(await rt.submit("c-timer", GetBalances()), BalancesReply)
        assert balances.balances[0].current_balance == 5_000


# ---------------------------------------------------------------------------------------
# Purge


@pytest.mark.anyio
async def test_purge_removes_settled_reservations_bounded_by_limit(store_url, engine) -> None:
    clock = ManualClock()
    t0 = clock.now_ms()
    async with engine(store_url, clock) as (store, rt):
        ok(await rt.submit("c", grant("g", 1_000_000)), GrantReply)
        for i in range(3):  # settled at t0 + i s
            ok(await rt.submit("c", Reserve(reservation_id=f"r-old-{i}", currency_id=CUR,
                                            amount=10, expires_at=t0 + 3_600_000)),
               ReserveReply)
            ok(await rt.submit("c", Release(reservation_id=f"r-old-{i}", consumed_amount=5)),
               ReleaseReply)
            clock.advance(1_000)
        ok(await rt.submit("c", Reserve(reservation_id="r-live", currency_id=CUR, amount=10,
                                        expires_at=t0 + 3_600_000)), ReserveReply)
        ok(await rt.submit("c", Consume(currency_id=CUR, amount=1, idempotency_key="k")),
           ConsumeReply)
        ledger_before = await store.ledger("c", 0, 10_000)

        cutoff = t0 + 2_500  # older: r-old-0, r-old-1 and r-old-2 (settled at t0 + 2 s)
        assert await store.purge(cutoff, 2) == 2
        assert await store.purge(cutoff, 2) == 1
        assert await store.purge(cutoff, 2) == 0
        assert set((await store.load("c")).reservations) == {"r-live"}
        assert await store.ledger("c", 0, 10_000) == ledger_before  # the ledger is kept
        # Keys are not the purge's: they go a generation at a time (the next test).
        assert [r.key for r in await store.lookup_keys("c", ["k"])] == ["k"]


WEEK = 7 * 24 * 3_600_000


@pytest.mark.anyio
async def test_keys_are_kept_a_week_and_dropped_a_generation_at_a_time(store_url, engine,
                                                                        raw_sql) -> None:
    """A key is remembered for at least a week: keys live in two tables, one per weekly
    period, and a table is emptied only when keys of the period after next arrive."""
    start = (ManualClock().now_ms() // WEEK + 1) * WEEK  # the start of a period
    clock = ManualClock(start)
    replies = {}
    async with engine(store_url, clock) as (store, rt):
        ok(await rt.submit("c", grant("g", 1_000_000)), GrantReply)
        replies["k-first"] = ok(await rt.submit("c", Consume(
            currency_id=CUR, amount=1, idempotency_key="k-first")), ConsumeReply)
        clock.advance(WEEK - 1)  # the last moment of the first period
        replies["k-last"] = ok(await rt.submit("c", Consume(
            currency_id=CUR, amount=2, idempotency_key="k-last")), ConsumeReply)
        clock.advance(1)  # the second period: the other table
        replies["k-second"] = ok(await rt.submit("c", Consume(
            currency_id=CUR, amount=3, idempotency_key="k-second")), ConsumeReply)
        rows = {t: await raw_sql(store_url, f"SELECT key FROM {t} ORDER BY key")
                for t in ("idempotency_keys_0", "idempotency_keys_1")}
        assert sorted(rows.values()) == [[("k-first",), ("k-last",)], [("k-second",)]]

    clock.advance(WEEK)  # the third period, a week after k-last
    async with engine(store_url, clock) as (store, rt):
        # The key filter holds the tables' keys, and forgets a table's with it.
        with anyio.fail_after(10):
            await store.keys_indexed.wait()
        state = await store.load("c")
        assert not state.keys_complete  # its keys are in the store, not in memory
        # Every key is still answered: k-last is exactly a week old.
        for key in ("k-first", "k-last", "k-second"):
            amount = replies[key].amount
            assert await rt.submit("c", Consume(currency_id=CUR, amount=amount,
                                                idempotency_key=key)) == replies[key]
        # The first key of the third period empties the first period's table.
        ok(await rt.submit("c", Consume(currency_id=CUR, amount=4, idempotency_key="k-third")),
           ConsumeReply)
        assert {r.key for r in await store.lookup_keys(
            "c", ["k-first", "k-last", "k-second", "k-third"])} == {"k-second", "k-third"}
        # A forgotten key is a new request again (once memory has let go of it too: a
        # resident customer keeps the keys it met); a kept one is still a replay.
        assert rt.passivate_idle() == 1
        again = ok(await rt.submit("c", Consume(currency_id=CUR, amount=1,
                                                idempotency_key="k-first")), ConsumeReply)
        assert again.timestamp == clock.now_ms() and again != replies["k-first"]
        assert await rt.submit("c", Consume(currency_id=CUR, amount=3,
                                            idempotency_key="k-second")) == replies["k-second"]

    # A customer whose every key was dropped has nothing to look up.
    clock.advance(2 * WEEK)
    async with engine(store_url, clock) as (store, rt):
        ok(await rt.submit("other", grant("g-o", 10)), GrantReply)
        ok(await rt.submit("other", Consume(currency_id=CUR, amount=1, idempotency_key="x")),
           ConsumeReply)  # the fifth period: the table of the third goes
        clock.advance(WEEK)
        ok(await rt.submit("other", Consume(currency_id=CUR, amount=1, idempotency_key="y")),
           ConsumeReply)  # the sixth: the second period's table goes
        assert (await store.load("c")).keys_complete


@pytest.mark.anyio
@pytest.mark.parametrize("filter_bytes", [1 << 16, 0], ids=["key-filter", "no-filter"])
async def test_a_generation_is_written_in_runs(store_url, engine, raw_sql, monkeypatch,
                                               filter_bytes) -> None:
    """A generation's keys go into a series of tables, its runs, so that the one being
    written stays small (persistence/sql.py, KEY_RUN_ROWS). Every key, whatever its run,
    still answers its replay after a restart (looked up across runs, in several queries
    when there are many tables); the run being written and how full it is survive the
    restart; the first key of a new period empties every run of its generation and
    writing starts again at the first run, reusing the tables."""
    monkeypatch.setattr(sql, "KEY_RUN_ROWS", 4)
    monkeypatch.setattr(sql, "KEY_RUN_DOUBLING", 2)  # runs of 4, 4, 8, 8, 16, 16 keys
    monkeypatch.setattr(sql, "KEY_TABLES_PER_QUERY", 2)
    start = (ManualClock().now_ms() // WEEK + 1) * WEEK
    generation = start // WEEK % 2
    clock = ManualClock(start)
    replies: dict[tuple[str, str], Any] = {}

    async def consume(rt: Any, count: int) -> None:
        for _ in range(count):  # one flush each
            i = len(replies)
            cid, key = "ab"[i % 2], f"k{i}"
            replies[cid, key] = ok(await rt.submit(cid, Consume(
                currency_id=CUR, amount=1 + i % 3, idempotency_key=key)), ConsumeReply)

    async def runs() -> tuple[list[int], tuple[Any, ...]]:
        (meta,) = await raw_sql(store_url, "SELECT runs, run FROM key_generations "
                                "WHERE generation = ?", generation)
        counts = [(await raw_sql(store_url, f"SELECT count(*) FROM "
                                 f"{sql.key_table(generation, r)}"))[0][0]
                  for r in range(meta[0])]
        return counts, meta

    async with engine(store_url, clock, key_filter_bytes=filter_bytes) as (store, rt):
        for cid in "ab":
            ok(await rt.submit(cid, grant(f"{cid}-g", 1_000_000)), GrantReply)
        await consume(rt, 30)
        assert await runs() == ([4, 4, 8, 8, 6], (5, 4))
    async with engine(store_url, clock, key_filter_bytes=filter_bytes) as (store, rt):
        with anyio.fail_after(10):
            await store.keys_indexed.wait()
        await consume(rt, 11)  # the fifth run was holding 6 of its 16
        assert await runs() == ([4, 4, 8, 8, 16, 1], (6, 5))
    async with engine(store_url, clock, key_filter_bytes=filter_bytes) as (store, rt):
        with anyio.fail_after(10):
            await store.keys_indexed.wait()
        if filter_bytes:
            assert all(store.key_filter.may_hold(cid, key) for cid, key in replies)
        for (cid, key), reply in replies.items():  # none of them in memory
            assert await rt.submit(cid, Consume(currency_id=CUR, amount=reply.amount,
                                                idempotency_key=key)) == reply
        reused = ok(await rt.submit("a", Consume(currency_id=CUR, amount=99,
                                                 idempotency_key="k0")), Refused)
        assert reused.code == Refusal.IDEMPOTENCY_KEY_REUSED
        assert {r.key for r in await store.lookup_keys("b", ["k1", "k39", "k40", "k0"])} == {
            "k1", "k39"}

        clock.advance(2 * WEEK)  # the same generation's next period
        ok(await rt.submit("a", Consume(currency_id=CUR, amount=1, idempotency_key="new")),
           ConsumeReply)
        assert await runs() == ([1, 0, 0, 0, 0, 0], (6, 0))
        assert [r.key for r in await store.lookup_keys("a", ["k0", "k40", "new"])] == ["new"]
        await consume(rt, 8)  # into the second run, an existing table
        assert await runs() == ([4, 4, 1, 0, 0, 0], (6, 2))


@pytest.mark.anyio
async def test_the_key_filter_is_saved_as_runs_start_and_taken_back_at_open(
        store_url, engine, raw_sql, monkeypatch) -> None:
    """A generation's filter bits are saved each time it starts a new run, and a store that
    opens takes them back and reads back only the runs written since: the keys of the
    earlier runs are then held by the saved bits alone, so they must be the same positions
    in the new process (the database's salt, not the interpreter's hash). Bits of another
    size, or of a period the generation no longer holds, are not taken."""
    monkeypatch.setattr(sql, "KEY_RUN_ROWS", 4)
    monkeypatch.setattr(sql, "KEY_RUN_DOUBLING", 2)  # runs of 4, 4, 8, 8, 16 keys
    # 1 << 16 bytes of filter: 32 KiB per generation, saved in parts of 10,000 bytes.
    monkeypatch.setattr("persistence.durable.FILTER_PART_BYTES", 10_000)
    start = (ManualClock().now_ms() // WEEK + 1) * WEEK
    generation = start // WEEK % 2
    clock = ManualClock(start)
    replies: dict[tuple[str, str], Any] = {}

    async def saved() -> list[tuple[Any, ...]]:
        """The saved parts' (period, runs), and how many parts there are."""
        return [tuple(r) for r in await raw_sql(
            store_url, "SELECT period, runs, count(*) FROM "
            f"{sql.KEY_FILTER_TABLES[generation]} GROUP BY period, runs")]

    async with engine(store_url, clock, key_filter_bytes=1 << 16) as (store, rt):
        with anyio.fail_after(10):
            await store.keys_indexed.wait()
        for cid in "ab":
            ok(await rt.submit(cid, grant(f"{cid}-g", 1_000_000)), GrantReply)
        for i in range(30):  # runs of 4, 4, 8, 8, and 6 keys in the fifth
            cid, key = "ab"[i % 2], f"k{i}"
            replies[cid, key] = ok(await rt.submit(cid, Consume(
                currency_id=CUR, amount=1 + i % 3, idempotency_key=key)), ConsumeReply)
    period = start // WEEK
    assert await saved() == [(period, 4, 4)]  # the four full runs, in 4 parts

    async with engine(store_url, clock, key_filter_bytes=1 << 16) as (store, rt):
        with anyio.fail_after(10):
            await store.keys_indexed.wait()
        stats = store.statistics()
        assert stats["key_filter_runs_restored"] == 4
        assert stats["key_filter_keys_read"] == 6  # the fifth run's only
        assert store.key_filter.ready
        assert all(store.key_filter.may_hold(cid, key) for cid, key in replies)
        for (cid, key), reply in list(replies.items())[:8]:  # the first two runs' keys
            assert await rt.submit(cid, Consume(currency_id=CUR, amount=reply.amount,
                                                idempotency_key=key)) == reply

    # Another save under way as the bits are taken (in a cluster, a lone node saving as
    # another node takes shards): a part of a later save of the period holds every key
    # of at least as many runs and is taken; a part gone (the table emptied for the next
    # save) ends the restore, and every run is read.
    table = sql.KEY_FILTER_TABLES[generation]
    for meanwhile, restored, read in (
            (f"UPDATE {table} SET runs = runs + 1", 4, 6),
            (f"DELETE FROM {table} WHERE part > 0", 0, 30)):
        fetch = type(store)._fetch
        done: list[str] = []

        async def racing(self: Any, query: str, *args: Any, meanwhile: str = meanwhile,
                         fetch: Any = fetch, done: list[str] = done) -> Any:
            if "bits FROM" in query and "WHERE part" in query and not done:
                done.append(query)
                await raw_sql(store_url, meanwhile)
            return await fetch(self, query, *args)

        monkeypatch.setattr(type(store), "_fetch", racing)
        async with engine(store_url, clock, key_filter_bytes=1 << 16) as (store, rt):
            with anyio.fail_after(10):
                await store.keys_indexed.wait()
            stats = store.statistics()
            assert (stats["key_filter_runs_restored"], stats["key_filter_keys_read"]) == (
                restored, read)
            assert all(store.key_filter.may_hold(cid, key) for cid, key in replies)
        monkeypatch.setattr(type(store), "_fetch", fetch)
        assert done

    # Another size: the saved bits are not taken, every run is read back.
    async with engine(store_url, clock, key_filter_bytes=1 << 17) as (store, rt):
        with anyio.fail_after(10):
            await store.keys_indexed.wait()
        stats = store.statistics()
        assert (stats["key_filter_runs_restored"], stats["key_filter_keys_read"]) == (0, 30)
        assert all(store.key_filter.may_hold(cid, key) for cid, key in replies)

    # The generation's next period empties it: bits of the old one are not taken.
    clock.advance(2 * WEEK)
    async with engine(store_url, clock, key_filter_bytes=1 << 16) as (store, rt):
        with anyio.fail_after(10):
            await store.keys_indexed.wait()
        ok(await rt.submit("a", Consume(currency_id=CUR, amount=1, idempotency_key="new")),
           ConsumeReply)
    # What is saved is of a period the generation no longer holds (whole, or cut short by
    # the emptying, as the saver and the new key met).
    assert {row[:2] for row in await saved()} == {(period, 4)}
    async with engine(store_url, clock, key_filter_bytes=1 << 16) as (store, rt):
        with anyio.fail_after(10):
            await store.keys_indexed.wait()
        stats = store.statistics()
        assert (stats["key_filter_runs_restored"], stats["key_filter_keys_read"]) == (0, 1)
        assert not store.key_filter.may_hold("a", "k0")  # forgotten with its period
        assert store.key_filter.may_hold("a", "new")


@pytest.mark.anyio
async def test_purge_keeps_outbox_rows_a_tailer_has_not_read(store_url, engine, raw_sql) -> None:
    """The outbox is the source of truth for the webhook relay: an old row goes only once
    the relay's cursor (table webhook_relay) is past it."""
    clock = ManualClock()
    async with engine(store_url, clock) as (store, rt):
        for i in range(4):  # four grants, one credits.granted event each
            ok(await rt.submit("c", grant(f"g{i}", 10)), GrantReply)
        ids = [i for i, _, _ in await store.outbox_after(0, 100)]
        assert len(ids) == 4
        await raw_sql(store_url, "UPDATE webhook_relay SET outbox_cursor = ?", ids[1])
        clock.advance(10_000)
        removed = await store.purge(clock.now_ms(), 100)
        assert [i for i, _, _ in await store.outbox_after(0, 100)] == ids[2:]
        assert removed >= 2
        await raw_sql(store_url, "UPDATE webhook_relay SET outbox_cursor = ?", ids[-1])
        await store.purge(clock.now_ms(), 100)
        # The newest row stays, however old: it is where the ids go on after a restart.
        assert [i for i, _, _ in await store.outbox_after(0, 100)] == ids[-1:]
    async with engine(store_url, clock) as (store, rt):
        ok(await rt.submit("c", grant("g-next", 10)), GrantReply)
        assert [i for i, _, _ in await store.outbox_after(ids[-1], 100)] == [ids[-1] + 1]


# ---------------------------------------------------------------------------------------
# durability="async"


@pytest.mark.anyio
async def test_async_durability_acks_before_flush_and_close_flushes(store_url, engine,
                                                                    raw_sql) -> None:
    clock = ManualClock()
    customers = [f"a{i}" for i in range(5)]
    async with engine(store_url, clock, durability="async") as (store, rt):
        # Hold the writer at its driver hook so "before the flush" is a fact, not a race.
        gate = anyio.Event()
        write = store._write

        async def gated_write(rows: Any) -> None:
            await gate.wait()
            await write(rows)

        store._write = gated_write
        with anyio.fail_after(10):
            for cid in customers:
                ok(await rt.submit(cid, grant(f"{cid}-g", 1_000)), GrantReply)

            async def use(cid: str, i: int) -> None:
                ok(await rt.submit(cid, Consume(currency_id=CUR, amount=i + 1,
                                                idempotency_key=f"{cid}-{i}")), ConsumeReply)

            async with anyio.create_task_group() as tg:
                for i in range(10):
                    for cid in customers:
                        tg.start_soon(use, cid, i)
        assert store.flushes == 0  # every reply above came back before any flush
        assert await raw_sql(store_url, "SELECT count(*) FROM ledger") == [(0,)]
        gate.set()
        # ...and leave at once: a clean close flushes what is queued.

    assert await raw_sql(store_url, "SELECT count(*) FROM ledger") == [(len(customers) * 11,)]
    async with engine(store_url, clock) as (store, rt):
        for cid in customers:
            balances = ok(await rt.submit(cid, GetBalances()), BalancesReply)
            assert balances.balances[0].current_balance == 1_000 - sum(range(1, 11))


# ---------------------------------------------------------------------------------------
# Remembered keys under a memory budget


@pytest.mark.anyio
async def test_keys_forgotten_from_memory_answer_replays_across_restart(
        store_url, engine, ledger_checked, keyed_ledger) -> None:
    """With a budget that holds a fraction of the keys, the runtime forgets most of them;
    every replay still gets its first reply (from the store), before and after a restart,
    and the same key with another request is still refused: each applied exactly once."""
    await forgotten_keys_replay(store_url, engine, ledger_checked, keyed_ledger)


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_keys_forgotten_from_memory_answer_replays_on_trio_too(
        tmp_path, engine, ledger_checked, keyed_ledger) -> None:
    """The SQLite store works under trio as well (anyio's worker threads)."""
    await forgotten_keys_replay(f"sqlite:///{tmp_path / 'creditd.db'}", engine,
                                ledger_checked, keyed_ledger)


async def forgotten_keys_replay(store_url: str, engine: Any, ledger_checked: Any,
                                keyed_ledger: Any) -> None:
    clock = ManualClock()
    customers = [f"m{i:02}" for i in range(20)]
    replies: dict[tuple[str, str], ConsumeReply] = {}
    options = {"memory_max_bytes": 96 * 1024, "passivate_after_ms": None}
    async with engine(store_url, clock, runtime_options=options) as (store, rt):
        for cid in customers:
            ok(await rt.submit(cid, grant(f"{cid}-g", 10_000_000)), GrantReply)

        async def client(i: int) -> None:
            for n in range(40):
                cid, key = customers[(i + n) % len(customers)], f"consume:{i}-{n}"
                replies[(cid, key)] = ok(await rt.submit(
                    cid, Consume(currency_id=CUR, amount=1 + i + n, idempotency_key=key)),
                    ConsumeReply)

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for i in range(16):
                    tg.start_soon(client, i)
        stats = rt.runtime_statistics()
        assert stats.keys_forgotten > len(replies) // 2, stats
        clock.advance(60_000)  # a fresh reply would carry another timestamp
        for (cid, key), reply in replies.items():
            assert await rt.submit(cid, Consume(currency_id=CUR, amount=reply.amount,
                                                idempotency_key=key)) == reply

    clock.advance(60_000)
    async with engine(store_url, clock, runtime_options=options) as (store, rt):
        for (cid, key), reply in replies.items():
            assert await rt.submit(cid, Consume(currency_id=CUR, amount=reply.amount,
                                                idempotency_key=key)) == reply
        (cid, key), reply = next(iter(replies.items()))
        reused = ok(await rt.submit(cid, Consume(currency_id=CUR, amount=reply.amount + 1,
                                                 idempotency_key=key)), Refused)
        assert reused.code == Refusal.IDEMPOTENCY_KEY_REUSED
        for cid in customers:
            keys = [k for c, k in replies if c == cid]
            entries = await ledger_checked(store, rt, cid)
            assert await keyed_ledger(store, cid, entries, keys) == {k: 1 for k in keys}


@pytest.mark.anyio
async def test_the_key_filter_reads_back_every_key_in_pages(store_url, engine,
                                                            monkeypatch) -> None:
    """At start the store reads the key tables back into its key filter a page at a time
    (SQLite: by primary key, after the last row seen; PostgreSQL: by ranges of blocks).
    With pages of a few rows every key of every customer, in both generation tables,
    must come back, or a replay of one would be taken for new."""
    monkeypatch.setattr("persistence.sqlite.KEY_PAGE_ROWS", 3)
    monkeypatch.setattr("persistence.postgres.KEY_PAGE_BLOCKS", 1)
    start = (ManualClock().now_ms() // WEEK + 1) * WEEK
    clock = ManualClock(start)
    written = []
    async with engine(store_url, clock, key_filter_bytes=1 << 16) as (store, rt):
        for cid in ("a", "b", "c"):
            ok(await rt.submit(cid, grant(f"{cid}-g", 1_000_000)), GrantReply)
        for week in range(2):  # both generation tables
            for i in range(70):
                cid = "abc"[i % 3]
                key = f"w{week}-k{i}-{'x' * (i % 50)}"
                ok(await rt.submit(cid, Consume(currency_id=CUR, amount=1,
                                                idempotency_key=key)), ConsumeReply)
                written.append((cid, key))
            clock.advance(WEEK)
    async with engine(store_url, clock, key_filter_bytes=1 << 16) as (store, rt):
        with anyio.fail_after(10):
            await store.keys_indexed.wait()
        filt = store.key_filter
        assert filt.ready and filt.added == len(written)
        assert all(filt.may_hold(cid, key) for cid, key in written)
        assert not filt.may_hold("a", "never-written")
