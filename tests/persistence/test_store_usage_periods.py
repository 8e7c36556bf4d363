"""Usage counter periods through the stores (SQLite and PostgreSQL): a counter's period
start is durable, and a restart restores only the current period's UNIQUE values."""

from __future__ import annotations

import pytest

from engine.core.amounts import SCALE
from engine.core.commands import (
    EventsReply,
    IngestEvents,
    Measurement,
    Metered,
    MeteredEvent,
    ReportUsage,
    UsageReply,
)
from engine.runtime import ManualClock

pytestmark = pytest.mark.anyio
DAY = 86_400_000


def unique(key: str, value: str, period: int) -> IngestEvents:
    return IngestEvents(events=(MeteredEvent(key=key, event_name="e", timestamp=period,
                                             metered=(Metered("u", "UNIQUE", value, None,
                                                              None, period),)),))


async def test_counter_periods_survive_a_restart(store_url, engine, raw_sql) -> None:
    clock = ManualClock()
    t = clock.now_ms()
    async with engine(store_url, clock) as (_, rt):
        await rt.submit("c", ReportUsage(measurements=(
            Measurement(feature_id="api", value=5 * SCALE, period_start=t),)))
        await rt.submit("c", unique("a", "alice", t))
        await rt.submit("c", unique("b", "bob", t + DAY))
    rows = await raw_sql(store_url, "SELECT feature_id, value, period_start FROM usage_counters "
                         "WHERE customer_id = ? ORDER BY feature_id", "c")
    assert rows == [("api", 5 * SCALE, t), ("u", SCALE, t + DAY)]
    async with engine(store_url, clock) as (_, rt):
        reply = await rt.submit("c", ReportUsage(measurements=(
            Measurement(feature_id="api", value=SCALE, period_start=t),)))
        assert isinstance(reply, UsageReply)
        assert reply.results[0].usage.current_usage == 6 * SCALE
        assert reply.results[0].usage.period_start == t
        # alice was counted in the previous period only: she counts again in this one.
        events = await rt.submit("c", unique("c", "alice", t + DAY))
        assert isinstance(events, EventsReply)
        assert {u.feature_id: u.current_usage for u in events.usage} == {"u": 2 * SCALE}
        events = await rt.submit("c", unique("d", "bob", t + DAY))
        assert {u.feature_id: u.current_usage for u in events.usage} == {"u": 2 * SCALE}
