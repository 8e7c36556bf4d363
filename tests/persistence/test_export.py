"""`creditd export` on real stores (SQLite and PostgreSQL): the exported ledger sums to
every balance, a run from the printed cursor exports exactly the rows added since, the
files of one run agree with each other while a writer commits, and Parquet holds what
CSV holds."""

from __future__ import annotations

import csv
from collections import defaultdict
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import pytest

from engine.core.amounts import SCALE
from engine.core.commands import (
    BalancesReply,
    Consume,
    CreateGrant,
    GetBalances,
    IngestEvents,
    Metered,
    MeteredEvent,
    Reserve,
    Tick,
)
from engine.core.model import GrantType
from persistence import export as export_module
from persistence.export import ExportError, export
from persistence.export_cursor import EVENTS_SETTLE_MS, decode_cursor

pytestmark = pytest.mark.anyio
CUR = "tok"
HOUR = 3_600_000


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def grant(gid: str, credits: str, **fields: Any) -> CreateGrant:
    return CreateGrant(grant_id=gid, currency_id=CUR, amount=int(Decimal(credits) * SCALE),
                       grant_type=GrantType.PAID, display_name=gid, **fields)


def consume(credits: str, **fields: Any) -> Consume:
    return Consume(currency_id=CUR, amount=int(Decimal(credits) * SCALE), **fields)


def event(key: str, at: int) -> MeteredEvent:
    return MeteredEvent(key=key, event_name="call", timestamp=at, dimensions={"model": "m1"},
                        metered=(Metered("calls", "COUNT", SCALE, CUR, SCALE // 100),))


async def balances(rt: Any, customer: str) -> dict[tuple[str, str | None], Decimal]:
    reply = await rt.submit(customer, GetBalances())
    assert isinstance(reply, BalancesReply)
    return {(b.currency_id, b.resource_id): Decimal(b.current_balance) / SCALE
            for b in reply.balances}


def ledger_sums(rows: list[dict[str, str]]) -> dict[str, dict[tuple[str, str | None], Decimal]]:
    sums: dict[str, dict[tuple[str, str | None], Decimal]] = defaultdict(
        lambda: defaultdict(Decimal))
    for r in rows:
        customer = f"{r['environment']}/{r['customer_id']}"
        sums[customer][(r["currency_id"], r["resource_id"] or None)] += Decimal(r["amount"])
    return sums


async def workload(rt: Any, clock: Any) -> None:
    """Grants (one expiring), consumptions with features and dimensions, a reservation,
    raw events, an expiry; in two environments."""
    t = clock.now_ms()
    await rt.submit("default/alice", grant("g1", "100", expire_at=t + HOUR))
    await rt.submit("default/alice", grant("g2", "50.5"))
    await rt.submit("default/alice", consume("2.5", feature_id="img",
                                             dimensions={"model": "big", "n": Decimal("1.5")}))
    await rt.submit("default/alice", consume("0.00001"))
    await rt.submit("default/alice", Reserve(reservation_id="r1", currency_id=CUR,
                                             amount=3 * SCALE, expires_at=t + 10 * HOUR))
    await rt.submit("default/bob", grant("g1", "10", resource_id="ws-1"))
    await rt.submit("default/bob", consume("1", resource_id="ws-1"))
    await rt.submit("default/bob", IngestEvents(events=(event("e1", t), event("e2", t - HOUR))))
    await rt.submit("other/carol", grant("g1", "7"))
    clock.advance(2 * HOUR)
    await rt.submit("default/alice", Tick())  # g1 expires


async def test_ledger_sums_to_the_balances_and_the_cursor_exports_only_what_is_new(
        store_url: str, engine: Any, tmp_path: Path) -> None:
    from engine.runtime import ManualClock

    clock = ManualClock()
    async with engine(store_url, clock) as (store, rt):
        await workload(rt, clock)
        # The server is running on the database while the export reads it.
        first = await export(store_url, tmp_path / "1", now_ms=clock.now_ms()
                             + EVENTS_SETTLE_MS + 1)
        ledger = read_csv(tmp_path / "1" / "ledger.csv")
        sums = ledger_sums(ledger)
        for customer in ("default/alice", "default/bob", "other/carol"):
            assert sums[customer] == await balances(rt, customer), customer
        # Every entry of the store is there, once, and nothing else.
        everything = {(c, e.seq) for c in sums for e in await store.ledger(c, 0, 10_000)}
        assert {(f"{r['environment']}/{r['customer_id']}", int(r["seq"]))
                for r in ledger} == everything
        assert len(ledger) == len(everything) == first.rows["ledger"]
        assert [r["amount"] for r in read_csv(tmp_path / "1" / "consumptions.csv")] == [
            "-2.50000", "-0.00001", "-1.00000"]
        consumption = read_csv(tmp_path / "1" / "consumptions.csv")[0]
        assert consumption["feature_id"] == "img"
        assert consumption["dimensions"] == '{"model":"big","n":1.5}'
        expired = read_csv(tmp_path / "1" / "expirations.csv")
        assert [(r["customer_id"], r["grant_id"]) for r in expired] == [("alice", "g1")]
        assert Decimal(expired[0]["amount"]) < 0
        assert expired[0]["timestamp"].endswith("Z") and "T" in expired[0]["timestamp"]
        grants = {(r["customer_id"], r["grant_id"]): r
                  for r in read_csv(tmp_path / "1" / "grants.csv")}
        assert grants[("alice", "g1")]["status"] == "EXPIRED"
        assert grants[("alice", "g2")]["amount"] == "50.50000"
        assert {r["event_key"] for r in read_csv(tmp_path / "1" / "usage_events.csv")} == {
            "e1", "e2"}
        buckets = read_csv(tmp_path / "1" / "usage_buckets.csv")
        assert sum(int(r["events"]) for r in buckets if r["feature_id"] == "calls") == 2

        # More traffic, then a run from the printed cursor: exactly the new rows.
        await rt.submit("default/alice", consume("4"))
        await rt.submit("default/dave", grant("g1", "1"))
        clock.advance(EVENTS_SETTLE_MS * 2)
        await rt.submit("default/bob", IngestEvents(events=(event("e3", clock.now_ms()),)))
        second = await export(store_url, tmp_path / "2", since=first.cursor,
                              now_ms=clock.now_ms() + EVENTS_SETTLE_MS + 1)
        new = read_csv(tmp_path / "2" / "ledger.csv")
        assert [(r["customer_id"], r["event_type"], r["amount"]) for r in new] == [
            ("alice", "CREDITS_CONSUMED", "-4.00000"), ("dave", "CREDITS_GRANTED", "1.00000")]
        assert [r["event_key"] for r in read_csv(tmp_path / "2" / "usage_events.csv")] == [
            "e3"]
        # Both runs together are the whole ledger, and still sum to every balance.
        both = ledger_sums(ledger + new)
        for customer in ("default/alice", "default/bob", "default/dave", "other/carol"):
            assert both[customer] == await balances(rt, customer), customer
        # Grants are a snapshot every run (they change after creation).
        assert len(read_csv(tmp_path / "2" / "grants.csv")) == len(grants) + 1

        # Nothing new: nothing exported, and the cursor still works.
        third = await export(store_url, tmp_path / "3", since=second.cursor,
                             now_ms=clock.now_ms() + EVENTS_SETTLE_MS + 2)
        assert third.rows["ledger"] == third.rows["usage_events"] == 0
        assert decode_cursor(third.cursor).marks() == decode_cursor(second.cursor).marks()


async def test_parquet_holds_what_csv_holds_with_exact_types(
        store_url: str, engine: Any, tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from engine.runtime import ManualClock

    clock = ManualClock()
    async with engine(store_url, clock) as (_store, rt):
        await workload(rt, clock)
        now = clock.now_ms() + EVENTS_SETTLE_MS + 1
        await export(store_url, tmp_path / "csv", now_ms=now)
        await export(store_url, tmp_path / "pq", fmt="parquet", now_ms=now)
    for table in export_module.TABLES:
        rows = read_csv(tmp_path / "csv" / f"{table}.csv")
        parquet = pq.read_table(tmp_path / "pq" / f"{table}.parquet")
        assert parquet.num_rows == len(rows), table
        for name in parquet.column_names:
            kind = parquet.schema.field(name).type
            assert not pa.types.is_floating(kind), (table, name)
            values = parquet.column(name).to_pylist()
            texts = [r[name] for r in rows]
            if pa.types.is_decimal(kind):
                assert kind.scale == 5
                assert values == [Decimal(t) if t else None for t in texts], (table, name)
            elif pa.types.is_timestamp(kind):
                assert (kind.unit, kind.tz) == ("ms", "UTC")
                assert [v.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z" if v else ""
                        for v in values] == texts, (table, name)
            elif pa.types.is_boolean(kind):
                assert ["true" if v else "false" for v in values] == texts
            else:
                assert ["" if v is None else str(v) for v in values] == texts, (table, name)


async def test_the_files_of_one_run_agree_while_a_writer_commits(
        store_url: str, engine: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Consumptions commit while the export reads, in small pages, and at least 20 of
    them between its ledger pass and its grants pass (the export waits for them there):
    each customer's exported ledger is still gapless up to the cursor's mark, and the
    grants' available amounts sum to the exported ledger (a grant's `available` is its
    entries' sum), which would break if the files came from different moments."""
    from engine.runtime import ManualClock

    monkeypatch.setattr(export_module, "PAGE_ROWS", 3)
    monkeypatch.setattr(export_module, "CUSTOMERS_PAGE", 2)
    customers = [f"default/c{i}" for i in range(6)]
    committed = [0]
    wanted: list[tuple[int, anyio.Event]] = []

    original = export_module._grants

    async def grants_after_more_writes(*args: Any) -> None:
        reached = anyio.Event()
        wanted.append((committed[0] + 20, reached))
        await reached.wait()
        await original(*args)

    monkeypatch.setattr(export_module, "_grants", grants_after_more_writes)
    clock = ManualClock()
    async with engine(store_url, clock) as (store, rt):
        for c in customers:
            await rt.submit(c, grant("g", "1000"))
        done = anyio.Event()

        async def write() -> None:
            while not done.is_set():
                await rt.submit(customers[committed[0] % len(customers)], consume("0.1"))
                committed[0] += 1
                for target, reached in wanted:
                    if committed[0] >= target:
                        reached.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(write)
            result = await export(store_url, tmp_path / "x", tables=["grants", "ledger"],
                                  now_ms=clock.now_ms())
            done.set()
        marks = decode_cursor(result.cursor).marks()
        stored = sum([len(await store.ledger(c, 0, 100_000)) for c in customers])
    ledger = read_csv(tmp_path / "x" / "ledger.csv")
    assert stored >= len(ledger) + 20  # the writes went on during the export
    seqs: dict[str, list[int]] = defaultdict(list)
    for r in ledger:
        seqs[r["customer_id"]].append(int(r["seq"]))
    assert len(marks) == len(customers)
    assert sorted(len(s) for s in seqs.values()) == sorted(marks.values())
    for s in seqs.values():
        assert s == list(range(1, len(s) + 1))
    available: dict[str, Decimal] = defaultdict(Decimal)
    for g in read_csv(tmp_path / "x" / "grants.csv"):
        available[g["customer_id"]] += Decimal(g["available"])
    entries: dict[str, Decimal] = defaultdict(Decimal)
    for r in ledger:
        entries[r["customer_id"]] += Decimal(r["amount"])
    assert available == entries


async def test_an_environment_exports_only_its_customers(
        store_url: str, engine: Any, tmp_path: Path) -> None:
    from engine.runtime import ManualClock

    clock = ManualClock()
    async with engine(store_url, clock) as (_store, rt):
        await workload(rt, clock)
        result = await export(store_url, tmp_path / "o", environment="other",
                              now_ms=clock.now_ms())
        assert {r["customer_id"] for r in read_csv(tmp_path / "o" / "ledger.csv")} == {
            "carol"}
        assert result.rows["grants"] == 1
        # A cursor continues the export it came from: same environment, same tables.
        with pytest.raises(ExportError, match="environment other"):
            await export(store_url, tmp_path / "p", since=result.cursor,
                         now_ms=clock.now_ms())
        with pytest.raises(ExportError, match="same --tables"):
            await export(store_url, tmp_path / "q", since=result.cursor, environment="other",
                         tables=["ledger"], now_ms=clock.now_ms())
        with pytest.raises(ExportError, match="not a cursor"):
            await export(store_url, tmp_path / "r", since="yesterday", now_ms=0)
        with pytest.raises(ExportError, match="exists: export into a new directory"):
            await export(store_url, tmp_path / "o", environment="other", now_ms=0)
