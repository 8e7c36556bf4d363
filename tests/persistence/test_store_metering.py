"""Metering through the stores (SQLite and PostgreSQL): usage counters, UNIQUE values,
hourly buckets and raw-event keys are durable, and dedupe survives a restart."""

from __future__ import annotations

from typing import Any

import pytest

from engine.core.amounts import SCALE
from engine.core.commands import (
    BalancesReply,
    Consume,
    ConsumeReply,
    CreateGrant,
    EventsReply,
    GetBalances,
    IngestEvents,
    Measurement,
    Metered,
    MeteredEvent,
    ReportUsage,
    UsageReply,
)
from engine.core.model import GrantType
from engine.core.usage import HOUR_MS
from engine.runtime import ManualClock

pytestmark = pytest.mark.anyio
CUR = "tok"


def grant(amount: int) -> CreateGrant:
    return CreateGrant(grant_id="g", currency_id=CUR, amount=amount * SCALE,
                       grant_type=GrantType.PAID, display_name="g")


def ev(key: str, *metered: Metered, at: int, **dims: Any) -> MeteredEvent:
    return MeteredEvent(key=key, event_name="call", timestamp=at, dimensions=dims or None,
                        metered=metered)


def count(rate: int = 1) -> Metered:
    return Metered("calls", "COUNT", SCALE, CUR, rate * SCALE)


async def test_usage_and_events_survive_a_restart_and_keys_still_deduplicate(
        store_url, engine, ledger_checked, raw_sql) -> None:
    clock = ManualClock()
    t = clock.now_ms()
    async with engine(store_url, clock) as (store, rt):
        await rt.submit("c", grant(100))
        reply = await rt.submit("c", ReportUsage(measurements=(
            Measurement(feature_id="img", value=3 * SCALE, currency_id=CUR,
                        credit_rate=5 * SCALE, idempotency_key="u1"),)))
        assert isinstance(reply, UsageReply) and reply.results[0].consumed == 15 * SCALE
        reply = await rt.submit("c", IngestEvents(events=(
            ev("e1", count(), Metered("users", "UNIQUE", "alice"), at=t, model="m1"),
            ev("e2", count(), Metered("users", "UNIQUE", "bob"), at=t - 3 * HOUR_MS,
               model="m2"),
        )))
        assert isinstance(reply, EventsReply) and reply.accepted == 2
        await ledger_checked(store, rt, "c")
    # A new runtime on the same database: the keys are only in the store now.
    async with engine(store_url, clock) as (store, rt):
        reply = await rt.submit("c", IngestEvents(events=(
            ev("e1", count(), Metered("users", "UNIQUE", "alice"), at=t),
            ev("e3", count(), Metered("users", "UNIQUE", "alice"), at=t),
            ev("e4", count(), Metered("users", "UNIQUE", "carol"), at=t),
        )))
        assert (reply.accepted, reply.duplicates) == (2, 1)
        assert {u.feature_id: u.current_usage for u in reply.usage} == {
            "calls": 4 * SCALE, "users": 3 * SCALE}
        replay = await rt.submit("c", ReportUsage(measurements=(
            Measurement(feature_id="img", value=3 * SCALE, currency_id=CUR,
                        credit_rate=5 * SCALE, idempotency_key="u1"),)))
        assert replay.results[0].consumed == 0
        assert replay.results[0].usage.current_usage == 3 * SCALE
        balances = await rt.submit("c", GetBalances())
        assert isinstance(balances, BalancesReply)
        assert balances.balances[0].current_balance == (100 - 15 - 4) * SCALE
        await ledger_checked(store, rt, "c")
    # The hourly buckets hold the sums, in the hour each event happened.
    rows = await raw_sql(store_url, "SELECT hour, feature_id, dims, usage, credits, events "
                         "FROM usage_buckets WHERE customer_id = ? AND feature_id = ? "
                         "ORDER BY hour, dims", "c", "calls")
    hour = t - t % HOUR_MS
    assert rows == [
        (hour - 3 * HOUR_MS, "calls", '{"model":"m2"}', SCALE, SCALE, 1),
        (hour, "calls", "", 2 * SCALE, 2 * SCALE, 2),
        (hour, "calls", '{"model":"m1"}', SCALE, SCALE, 1),
    ]
    keys = await raw_sql(store_url, "SELECT key FROM usage_dimension_keys WHERE customer_id = ?",
                         "c")
    assert keys == [("model",)]
    events = await raw_sql(store_url, "SELECT key FROM events WHERE customer_id = ? ORDER BY key",
                           "c")
    assert events == [("e1",), ("e2",), ("e3",), ("e4",)]


async def test_direct_consumption_feeds_the_credit_buckets(store_url, engine, raw_sql) -> None:
    clock = ManualClock()
    async with engine(store_url, clock) as (store, rt):
        await rt.submit("c", grant(10))
        for i in range(3):
            reply = await rt.submit("c", Consume(currency_id=CUR, amount=SCALE,
                                                 idempotency_key=f"k{i}"))
            assert isinstance(reply, ConsumeReply)
    rows = await raw_sql(store_url, "SELECT feature_key, currency_id, credits, events "
                         "FROM usage_buckets WHERE customer_id = ?", "c")
    assert rows == [("", CUR, 3 * SCALE, 3)]


async def test_purge_forgets_old_events(store_url, engine, raw_sql) -> None:
    clock = ManualClock()
    async with engine(store_url, clock, runtime_options={"key_retention_ms": 1000}) as (
            store, rt):
        await rt.submit("c", IngestEvents(events=(ev("old", at=clock.now_ms()),)))
        clock.advance(5000)
        await rt.submit("c", IngestEvents(events=(ev("new", at=clock.now_ms()),)))
        await rt.purge_once()
    assert await raw_sql(store_url, "SELECT key FROM events") == [("new",)]
