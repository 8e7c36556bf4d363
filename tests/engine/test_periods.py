"""Billing periods and usage reset windows: hand-checked calendar cases and properties."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.billing.periods import (
    ANCHORS,
    RESET_PERIODS,
    add_months,
    billing_period,
    reset_window,
)


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp() * 1000)


@pytest.mark.parametrize(("start", "n", "expected"), [
    ("2026-01-31T10:00:00", 1, "2026-02-28T10:00:00"),  # clamped to February's end
    ("2028-01-31T10:00:00", 1, "2028-02-29T10:00:00"),  # leap year
    ("2026-01-31T10:00:00", 2, "2026-03-31T10:00:00"),  # from the anchor: no drift
    ("2026-11-15T00:00:00", 2, "2027-01-15T00:00:00"),  # across the year
    ("2026-03-31T00:00:00", -1, "2026-02-28T00:00:00"),
    ("2024-02-29T12:30:00", 12, "2025-02-28T12:30:00"),
])
def test_add_months(start: str, n: int, expected: str) -> None:
    assert add_months(ms(start), n) == ms(expected)


def test_monthly_periods_keep_the_anchor_day() -> None:
    anchor = ms("2026-01-31T10:00:00")
    assert billing_period(anchor, "MONTHLY", ms("2026-03-15T00:00:00")) == (
        ms("2026-02-28T10:00:00"), ms("2026-03-31T10:00:00"))
    # The boundary itself belongs to the next period.
    assert billing_period(anchor, "MONTHLY", ms("2026-03-31T10:00:00"))[0] == ms(
        "2026-03-31T10:00:00")
    assert billing_period(anchor, "MONTHLY", ms("2026-03-31T09:59:59"))[0] == ms(
        "2026-02-28T10:00:00")
    assert billing_period(anchor, "ANNUALLY", ms("2027-06-01T00:00:00")) == (
        ms("2027-01-31T10:00:00"), ms("2028-01-31T10:00:00"))
    # Before the anchor: the first period.
    assert billing_period(anchor, "MONTHLY", ms("2025-12-01T00:00:00")) == (
        anchor, ms("2026-02-28T10:00:00"))


@pytest.mark.parametrize(("period", "anchor_rule", "now", "expected"), [
    ("HOUR", None, "2026-05-05T13:10:00", ("2026-05-05T12:30:00", "2026-05-05T13:30:00")),
    ("DAY", None, "2026-05-06T08:00:00", ("2026-05-05T12:30:00", "2026-05-06T12:30:00")),
    ("WEEK", "SubscriptionStart", "2026-05-13T00:00:00",
     ("2026-05-12T12:30:00", "2026-05-19T12:30:00")),
    # 2026-05-13 is a Wednesday; weeks from Monday 00:00 UTC.
    ("WEEK", "EveryMonday", "2026-05-13T00:00:00", ("2026-05-11T00:00:00", "2026-05-18T00:00:00")),
    ("WEEK", "EverySunday", "2026-05-13T00:00:00", ("2026-05-10T00:00:00", "2026-05-17T00:00:00")),
    ("MONTH", "StartOfTheMonth", "2026-06-20T00:00:00",
     ("2026-06-01T00:00:00", "2026-07-01T00:00:00")),
    ("MONTH", "SubscriptionStart", "2026-06-20T00:00:00",
     ("2026-06-05T12:30:00", "2026-07-05T12:30:00")),
    ("YEAR", None, "2027-05-05T12:29:59", ("2026-05-05T12:30:00", "2027-05-05T12:30:00")),
])
def test_reset_windows(period: str, anchor_rule: str | None, now: str,
                       expected: tuple[str, str]) -> None:
    anchor = ms("2026-05-05T12:30:00")
    assert reset_window(period, anchor_rule, anchor, ms(now)) == (ms(expected[0]),
                                                                  ms(expected[1]))


def test_an_anchor_the_period_does_not_take_is_refused() -> None:
    with pytest.raises(ValueError):
        reset_window("DAY", "EveryMonday", 0, 0)


_TIMES = st.integers(min_value=ms("2000-01-01T00:00:00"), max_value=ms("2100-01-01T00:00:00"))
_RULES = st.sampled_from([(p, a) for p in RESET_PERIODS for a in ANCHORS[p]])


@given(_TIMES, _TIMES, _RULES)
def test_windows_hold_now_and_tile_time(anchor: int, now: int, rule: tuple[str, str]) -> None:
    period, according_to = rule
    start, end = reset_window(period, according_to, anchor, now)
    assert start < end
    if now >= anchor or according_to in ("StartOfTheMonth",) or according_to.startswith("Every"):
        assert start <= now < end
    # The next window starts where this one ends (no gap, no overlap).
    assert reset_window(period, according_to, anchor, end)[0] == end
    assert reset_window(period, according_to, anchor, end - 1) == (start, end)


@given(_TIMES, _TIMES, st.sampled_from(["MONTHLY", "ANNUALLY"]))
def test_billing_periods_tile_time(anchor: int, now: int, period: str) -> None:
    start, end = billing_period(anchor, period, now)
    assert start <= max(now, anchor) < end
    assert billing_period(anchor, period, end)[0] == end
