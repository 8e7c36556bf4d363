"""Usage reset periods in the core: a measurement or metered event that carries a later
period start restarts the counter from 0 in that period. Time is explicit."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.core.amounts import SCALE
from engine.core.commands import (
    EventsReply,
    IngestEvents,
    Measurement,
    Metered,
    MeteredEvent,
    Refused,
    ReportUsage,
    RollUsage,
    UsageReply,
)
from engine.core.effects import Effects
from engine.core.machine import apply
from engine.core.model import CustomerState
from engine.core.usage import restore_usage, unique_text, usage_in_period

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
DAY = 86_400_000


def run(state: CustomerState, cmd: Any, now: int) -> tuple[Any, Effects]:
    fx = Effects()
    return apply(state, cmd, now, fx), fx


def report(state: CustomerState, value: int, period: int | None, now: int, *,
           set_value: bool = False, key: str | None = None) -> Any:
    reply, _ = run(state, ReportUsage(measurements=(Measurement(
        feature_id="api", value=value * SCALE, set_value=set_value, period_start=period,
        idempotency_key=key),)), now)
    return reply


def events(state: CustomerState, now: int, *metered: Metered, key: str) -> EventsReply:
    reply, _ = run(state, IngestEvents(events=(MeteredEvent(
        key=key, event_name="e", timestamp=now, metered=metered),)), now)
    assert isinstance(reply, EventsReply)
    return reply


def test_delta_restarts_from_zero_in_a_later_period() -> None:
    state = CustomerState("c")
    assert report(state, 5, T0, T0 + 1).results[0].usage.current_usage == 5 * SCALE
    assert report(state, 2, T0, T0 + 2).results[0].usage.current_usage == 7 * SCALE
    reply = report(state, 3, T0 + DAY, T0 + DAY + 1)
    result = reply.results[0]
    assert (result.previous_usage, result.usage.current_usage) == (0, 3 * SCALE)
    assert result.usage.period_start == T0 + DAY
    assert state.usage[("api", None)].period_start == T0 + DAY


def test_set_sets_in_the_new_period() -> None:
    state = CustomerState("c")
    report(state, 5, T0, T0)
    result = report(state, 4, T0 + DAY, T0 + DAY, set_value=True).results[0]
    assert (result.previous_usage, result.usage.current_usage) == (0, 4 * SCALE)


def test_an_earlier_or_equal_period_counts_in_the_counters_period() -> None:
    state = CustomerState("c")
    report(state, 5, T0 + DAY, T0 + DAY)
    assert report(state, 1, T0, T0 + DAY).results[0].usage.current_usage == 6 * SCALE
    assert report(state, 1, T0 + DAY, T0 + DAY).results[0].usage.current_usage == 7 * SCALE
    # No period (the feature has no reset): the counter keeps counting.
    assert report(state, 1, None, T0 + DAY).results[0].usage.current_usage == 8 * SCALE


def test_a_counter_without_period_restarts_when_a_period_appears() -> None:
    state = CustomerState("c")
    report(state, 5, None, T0)
    assert report(state, 1, T0, T0).results[0].usage.current_usage == SCALE


def test_a_negative_delta_in_a_new_period_cannot_go_below_zero() -> None:
    state = CustomerState("c")
    report(state, 5, T0, T0)
    reply = report(state, -1, T0 + DAY, T0 + DAY)
    assert isinstance(reply, Refused)
    assert state.usage[("api", None)].value == 5 * SCALE  # nothing applied
    assert state.usage[("api", None)].period_start == T0


def test_idempotent_retry_across_a_boundary_is_a_replay() -> None:
    state = CustomerState("c")
    first = report(state, 5, T0, T0, key="k1")
    again = report(state, 5, T0 + DAY, T0 + DAY, key="k1")
    assert isinstance(again, UsageReply)
    assert again.results[0].usage.current_usage == first.results[0].usage.current_usage
    assert state.usage[("api", None)].value == 5 * SCALE


def test_events_restart_every_aggregation() -> None:
    state = CustomerState("c")
    for i, (fn, value) in enumerate([("COUNT", SCALE), ("MAX", 9 * SCALE),
                                     ("AVG", 4 * SCALE), ("UNIQUE", "alice")]):
        events(state, T0, Metered(f"f{i}", fn, value, None, None, T0), key=f"a{i}")
    events(state, T0 + DAY, Metered("f0", "COUNT", SCALE, None, None, T0 + DAY),
           Metered("f1", "MAX", 2 * SCALE, None, None, T0 + DAY),
           Metered("f2", "AVG", 2 * SCALE, None, None, T0 + DAY),
           Metered("f3", "UNIQUE", "alice", None, None, T0 + DAY), key="b")
    values = {f: state.usage[(f, None)].value for f in ("f0", "f1", "f2", "f3")}
    assert values == {"f0": SCALE, "f1": 2 * SCALE, "f2": 2 * SCALE, "f3": SCALE}


def test_unique_values_are_stored_per_period_and_restored_for_the_current_one() -> None:
    state = CustomerState("c")
    _, fx1 = run(state, IngestEvents(events=(MeteredEvent(key="a", event_name="e",
        timestamp=T0, metered=(Metered("u", "UNIQUE", "alice", None, None, T0),)),)), T0)
    _, fx2 = run(state, IngestEvents(events=(MeteredEvent(key="b", event_name="e",
        timestamp=T0 + DAY, metered=(Metered("u", "UNIQUE", "bob", None, None, T0 + DAY),)),)),
        T0 + DAY)
    stored = fx1.unique_values + fx2.unique_values
    assert [v for _, _, v in stored] == [unique_text(T0, "alice"), unique_text(T0 + DAY, "bob")]
    c = state.usage[("u", None)]
    again = CustomerState("c")
    restore_usage(again, [("u", None, "UNIQUE", c.value, c.total, c.count, c.updated_at,
                           c.period_start)], stored)
    assert again.usage[("u", None)].uniques == {"bob"}
    assert again.usage[("u", None)].period_start == T0 + DAY
    # Rows of the stores before periods (seven columns) restore without a period.
    old = CustomerState("c")
    restore_usage(old, [("u", None, "UNIQUE", SCALE, 0, 0, T0)], [("u", None, "alice")])
    assert old.usage[("u", None)].uniques == {"alice"}
    assert old.usage[("u", None)].period_start is None


def test_reads_treat_an_older_counter_as_zero() -> None:
    assert usage_in_period(5, T0, T0 + DAY) == 0
    assert usage_in_period(5, None, T0) == 0
    assert usage_in_period(5, T0, T0) == 5
    assert usage_in_period(5, T0 + DAY, T0) == 5
    assert usage_in_period(5, T0, None) == 5


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5 * DAY), st.integers(0, 1000)), min_size=1,
                max_size=40),
       st.sampled_from([3_600_000, DAY, 7 * DAY]))
def test_usage_in_a_window_is_the_sum_of_its_deltas(
        reports: list[tuple[int, int]], window: int) -> None:
    """Deltas reported at increasing times, each with the start of its window: after each
    one, the counter holds exactly the deltas reported in the current window, and a read
    at any later time sees that window's sum in it and 0 in a later one."""
    state = CustomerState("c")
    now = T0
    seen: list[tuple[int, int]] = []  # (window start, delta)
    for step, delta in reports:
        now += step
        start = now - now % window
        reply = report(state, delta, start, now)
        assert isinstance(reply, UsageReply)
        seen.append((start, delta))
        expected = sum(d for s, d in seen if s == start) * SCALE
        counter = state.usage[("api", None)]
        assert counter.value == expected
        assert reply.results[0].usage.current_usage == expected
        assert usage_in_period(counter.value, counter.period_start, start) == expected
        later = start + window
        assert usage_in_period(counter.value, counter.period_start, later) == 0


# RollUsage: what a subscription's change or end does to the counters of the windows it
# ends (engine/domain/subscriptions/usage_windows.py).


def roll(state: CustomerState, start: int, now: int) -> tuple[Any, Effects]:
    return run(state, RollUsage(windows=(("api", None, start),)), now)


def test_roll_restarts_a_counter_of_an_earlier_window_and_stores_it() -> None:
    state = CustomerState("c")
    report(state, 8, T0, T0 + 1)
    reply, fx = roll(state, T0 + DAY, T0 + DAY + 5)
    counter = state.usage[("api", None)]
    assert (counter.value, counter.period_start) == (0, T0 + DAY)
    assert fx.usage[("api", None)] is counter  # written, so a restart reads it so
    assert [u.current_usage for u in reply.usages] == [0]
    # Read without a window afterwards (terms that do not reset): nothing comes back.
    assert usage_in_period(counter.value, counter.period_start, None) == 0
    assert report(state, 3, None, T0 + DAY + 6).results[0].usage.current_usage == 3 * SCALE


def test_roll_keeps_the_current_window_and_leaves_missing_counters_alone() -> None:
    state = CustomerState("c")
    report(state, 8, T0, T0 + 1)
    _, fx = roll(state, T0, T0 + 2)
    assert state.usage[("api", None)].value == 8 * SCALE
    assert not fx.usage  # nothing changed, nothing to write
    _, fx = run(state, RollUsage(windows=(("other", None, T0),)), T0 + 3)
    assert ("other", None) not in state.usage and not fx.usage


def test_roll_of_every_other_resource_of_a_feature() -> None:
    """`others`: a promotion's end settles the feature on resources `windows` does not
    name, and only that feature."""
    state = CustomerState("c")
    for feature, resource in (("api", "a"), ("api", "b"), ("api", None), ("seats", "b")):
        run(state, ReportUsage(measurements=(Measurement(
            feature_id=feature, resource_id=resource, value=8 * SCALE, period_start=T0),)),
            T0 + 1)
    _, fx = run(state, RollUsage(windows=(("api", "a", T0 + DAY),),
                                 others=(("api", T0 + 2 * DAY),)), T0 + 3 * DAY)
    starts = {key: (c.value, c.period_start) for key, c in state.usage.items()}
    assert starts == {("api", "a"): (0, T0 + DAY), ("api", "b"): (0, T0 + 2 * DAY),
                      ("api", None): (0, T0 + 2 * DAY), ("seats", "b"): (8 * SCALE, T0)}
    assert set(fx.usage) == {("api", "a"), ("api", "b"), ("api", None)}


def test_roll_leaves_a_counter_written_after_written_before() -> None:
    """A promotion that expired before this version settled expiries: usage reported after
    its end, under the terms that followed, stays; a counter not written since restarts."""
    state = CustomerState("c")
    report(state, 8, T0, T0 + 10)
    _, fx = run(state, RollUsage(windows=(("api", None, T0 + DAY),),
                                 written_before=T0 + 5), T0 + 2 * DAY)
    counter = state.usage[("api", None)]
    assert (counter.value, counter.period_start, fx.usage) == (8 * SCALE, T0, {})
    _, fx = run(state, RollUsage(windows=(("api", None, T0 + DAY),),
                                 written_before=T0 + 10), T0 + 2 * DAY)
    assert (counter.value, counter.period_start) == (0, T0 + DAY)
    assert fx.usage[("api", None)] is counter


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 20)), min_size=1, max_size=8),
       st.integers(0, 6))
def test_roll_never_changes_what_the_window_shows(reports: list[tuple[int, int]],
                                                   window: int) -> None:
    """Whatever the counter holds, rolling it to window `w` leaves what a read in `w`
    sees as it was, and it reads the same without a window afterwards."""
    state = CustomerState("c")
    last = 0
    for period, value in sorted(reports):
        last = max(last, period)
        report(state, value, T0 + period * DAY, T0 + period * DAY + 1)
    start = T0 + max(window, last) * DAY  # windows only move forward
    c = state.usage[("api", None)]
    seen = usage_in_period(c.value, c.period_start, start)
    roll(state, start, start + 1)
    c = state.usage[("api", None)]
    assert usage_in_period(c.value, c.period_start, start) == seen
    assert usage_in_period(c.value, c.period_start, None) == seen
