"""Usage metering in the core: calculated usage (DELTA/SET) with atomic credit burn, raw
events through meters, idempotency, and the analytics buckets. Time is explicit."""

from __future__ import annotations

from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.core.amounts import SCALE
from engine.core.commands import (
    ConfigurePool,
    CreateGrant,
    EventsReply,
    IngestEvents,
    Measurement,
    Metered,
    MeteredEvent,
    Refused,
    ReportUsage,
    UsageReply,
)
from engine.core.effects import Effects
from engine.core.machine import apply, check_pool
from engine.core.model import CustomerState, GrantType, LedgerEventType as L
from engine.core.usage import HOUR_MS, UNIQUE_VALUES_MAX, burn_units

T0 = 1_767_225_600_000
CUR = "tokens"


def fresh(credits: int = 100, hard: bool = True) -> CustomerState:
    state = CustomerState("c")
    apply(state, CreateGrant(grant_id="g", currency_id=CUR, amount=credits * SCALE,
                             grant_type=GrantType.PAID, display_name="g"), T0, Effects())
    if not hard:
        apply(state, ConfigurePool(currency_id=CUR, hard_limit=False), T0, Effects())
    return state


def usage(*measurements: Measurement) -> ReportUsage:
    return ReportUsage(measurements=measurements)


def m(feature: str, value: float, *, rate: float | None = None, set_value: bool = False,
      key: str | None = None, **kw: Any) -> Measurement:
    return Measurement(feature_id=feature, value=round(value * SCALE), set_value=set_value,
                       currency_id=CUR if rate is not None else None,
                       credit_rate=round(rate * SCALE) if rate is not None else None,
                       idempotency_key=key, **kw)


def balance(state: CustomerState) -> int:
    return state.pools[(CUR, None)].balance


def run(state: CustomerState, cmd: Any, now: int = T0) -> tuple[Any, Effects]:
    fx = Effects()
    reply = apply(state, cmd, now, fx)
    for pool in state.pools.values():
        check_pool(state, pool)
    return reply, fx


def test_delta_adds_and_set_replaces() -> None:
    state = fresh()
    reply, _ = run(state, usage(m("seats", 3)))
    assert reply.results[0].usage.current_usage == 3 * SCALE
    reply, _ = run(state, usage(m("seats", 2)))
    assert (reply.results[0].previous_usage, reply.results[0].usage.current_usage) == (
        3 * SCALE, 5 * SCALE)
    reply, _ = run(state, usage(m("seats", 1, set_value=True)))
    assert reply.results[0].usage.current_usage == SCALE
    reply, _ = run(state, usage(m("seats", -1)))
    assert reply.results[0].usage.current_usage == 0


def test_usage_below_zero_is_refused() -> None:
    state = fresh()
    run(state, usage(m("seats", 1)))
    reply, fx = run(state, usage(m("seats", -2)))
    assert isinstance(reply, Refused) and reply.field == "usages[0].value"
    assert not fx and state.usage[("seats", None)].value == SCALE


def test_credit_burn_is_atomic_with_the_usage() -> None:
    state = fresh(100)
    reply, fx = run(state, usage(m("images", 4, rate=5)))  # 4 images x 5 credits
    r = reply.results[0]
    assert (r.consumed, r.currency_id, r.balance.current_balance) == (
        20 * SCALE, CUR, 80 * SCALE)
    assert [(e.event_type, e.amount, e.feature_id) for e in fx.entries] == [
        (L.CREDITS_CONSUMED, -20 * SCALE, "images")]
    # SET to a higher total burns only the increase; SET lower refunds nothing.
    reply, _ = run(state, usage(m("images", 6, rate=5, set_value=True)))
    assert reply.results[0].consumed == 10 * SCALE
    reply, _ = run(state, usage(m("images", 1, rate=5, set_value=True)))
    assert reply.results[0].consumed == 0 and balance(state) == 70 * SCALE


def test_hard_limit_refuses_the_whole_batch_and_records_nothing() -> None:
    state = fresh(10)
    reply, fx = run(state, usage(m("a", 1, rate=6), m("b", 1, rate=5)))
    assert isinstance(reply, Refused) and reply.code == "INSUFFICIENT_CREDITS"
    assert reply.field == "usages[1].value", "the burns of the batch are counted together"
    assert not fx and not state.usage and balance(state) == 10 * SCALE
    reply, _ = run(state, usage(m("a", 1, rate=6), m("b", 1, rate=4)))
    assert [r.consumed for r in reply.results] == [6 * SCALE, 4 * SCALE]
    assert balance(state) == 0


def test_soft_limit_overdraws() -> None:
    state = fresh(1, hard=False)
    reply, _ = run(state, usage(m("a", 3, rate=1)))
    assert reply.results[0].consumed == 3 * SCALE and balance(state) == -2 * SCALE


def test_replayed_measurement_answers_as_first_applied_with_nothing_burned() -> None:
    state = fresh(100)
    first, _ = run(state, usage(m("a", 2, rate=1, key="k1")))
    again, fx = run(state, usage(m("a", 2, rate=1, key="k1"), m("b", 1, rate=1, key="k2")))
    assert again.results[0] == msgspec.structs.replace(first.results[0], consumed=0)
    assert again.results[1].consumed == SCALE
    assert balance(state) == 97 * SCALE and state.usage[("a", None)].value == 2 * SCALE
    reply, fx = run(state, usage(m("a", 3, rate=1, key="k1")))
    assert isinstance(reply, Refused) and reply.code == "IDEMPOTENCY_KEY_REUSED"
    assert reply.field == "usages[0].idempotencyKey" and not fx


def counted(feature: str, function: str, value: int | str, rate: float | None = None
            ) -> Metered:
    return Metered(feature, function, value, CUR if rate is not None else None,
                   round(rate * SCALE) if rate is not None else None)


def event(key: str, *metered: Metered, at: int = T0, **dims: Any) -> MeteredEvent:
    return MeteredEvent(key=key, event_name="call", timestamp=at, dimensions=dims or None,
                        metered=metered)


def test_events_count_and_sum_burn_and_duplicates_skip() -> None:
    state = fresh(100)
    reply, fx = run(state, IngestEvents(events=(
        event("e1", counted("calls", "COUNT", SCALE, rate=2),
              counted("tokens_in", "SUM", 150 * SCALE)),
        event("e2", counted("calls", "COUNT", SCALE, rate=2),
              counted("tokens_in", "SUM", 50 * SCALE)),
        event("e1", counted("calls", "COUNT", SCALE, rate=2)),  # a retry of e1
    )))
    assert isinstance(reply, EventsReply)
    assert (reply.accepted, reply.duplicates) == (2, 1)
    assert [(b.currency_id, b.consumed, b.uncovered) for b in reply.burns] == [
        (CUR, 4 * SCALE, 0)]
    assert state.usage[("calls", None)].value == 2 * SCALE
    assert state.usage[("tokens_in", None)].value == 200 * SCALE
    # The batch's burns are one ledger operation, not one per event.
    assert len({e.op_seq for e in fx.entries}) == 1
    reply, _ = run(state, IngestEvents(events=(event("e2"),)))
    assert (reply.accepted, reply.duplicates) == (0, 1)


def test_events_against_a_hard_limit_take_what_is_there() -> None:
    state = fresh(3)
    reply, _ = run(state, IngestEvents(events=tuple(
        event(f"e{i}", counted("calls", "COUNT", SCALE, rate=1)) for i in range(5))))
    assert reply.accepted == 5, "events are facts: all are metered"
    assert [(b.consumed, b.uncovered) for b in reply.burns] == [(3 * SCALE, 2 * SCALE)]
    assert balance(state) == 0 and state.usage[("calls", None)].value == 5 * SCALE


def test_non_additive_aggregations_meter_without_burning() -> None:
    state = fresh(10)
    evs = [event("a", counted("p", "MAX", 5 * SCALE), counted("q", "MIN", 5 * SCALE),
                 counted("r", "AVG", 5 * SCALE), counted("u", "UNIQUE", "alice")),
           event("b", counted("p", "MAX", 2 * SCALE), counted("q", "MIN", 2 * SCALE),
                 counted("r", "AVG", 2 * SCALE), counted("u", "UNIQUE", "bob")),
           event("c", counted("r", "AVG", 2 * SCALE), counted("u", "UNIQUE", "alice"))]
    run(state, IngestEvents(events=tuple(evs)))
    values = {f: state.usage[(f, None)].value for f in "pqru"}
    assert values == {"p": 5 * SCALE, "q": 2 * SCALE, "r": 3 * SCALE, "u": 2 * SCALE}
    assert balance(state) == 10 * SCALE


def test_unique_saturates_at_its_bound() -> None:
    state = fresh(1)
    evs = tuple(event(f"e{i}", counted("u", "UNIQUE", f"v{i}"))
                for i in range(UNIQUE_VALUES_MAX + 5))
    run(state, IngestEvents(events=evs))
    assert state.usage[("u", None)].value == UNIQUE_VALUES_MAX * SCALE


def test_buckets_use_the_usage_time_so_late_events_land_in_their_hour() -> None:
    state = fresh(100)
    late = T0 - 5 * HOUR_MS + 123
    _, fx = run(state, IngestEvents(events=(
        event("e1", counted("calls", "COUNT", SCALE, rate=1), at=late, model="m1"),)),
        now=T0)
    [b] = fx.buckets
    assert (b.hour, b.feature_id, b.credits, b.events, b.dimensions) == (
        late - late % HOUR_MS, "calls", SCALE, 1, {"model": "m1"})


def test_burn_units_rounds_half_away_from_zero() -> None:
    assert burn_units(1, 50_000) == 1  # 0.5 unit -> 1
    assert burn_units(1, 49_999) == 0
    assert burn_units(3 * SCALE, 5 * SCALE) == 15 * SCALE


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["a", "b"]), st.integers(-3, 6),
                          st.booleans(), st.integers(0, 3)), max_size=25),
       st.integers(1, 40), st.booleans())
def test_balance_equals_grant_minus_burns_and_hard_pools_never_go_negative(
        steps, credits, hard) -> None:
    """A model: usage per feature and the credits burned, over random DELTA/SET steps."""
    state = fresh(credits, hard=hard)
    model_usage = {"a": 0, "b": 0}
    burned = 0
    for feature, value, set_value, rate in steps:
        new = value if set_value else model_usage[feature] + value
        reply, fx = run(state, usage(m(feature, value, rate=rate or None,
                                       set_value=set_value)))
        if new < 0 or (set_value and value < 0):
            assert isinstance(reply, Refused) and not fx
            continue
        burn = max(new - model_usage[feature], 0) * rate * SCALE
        if hard and burn > credits * SCALE - burned:
            assert isinstance(reply, Refused) and reply.code == "INSUFFICIENT_CREDITS"
            assert not fx
            continue
        assert isinstance(reply, UsageReply), reply
        model_usage[feature] = new
        burned += burn
        assert reply.results[0].consumed == burn
    assert balance(state) == credits * SCALE - burned
    if hard:
        assert balance(state) >= 0
    for f, v in model_usage.items():
        assert state.usage.get((f, None)) is None or state.usage[(f, None)].value == v * SCALE
