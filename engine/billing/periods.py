"""Time windows of billing: billing periods, credit cadences and usage reset windows.

Pure calendar arithmetic in UTC on epoch milliseconds; `now` is always an argument.

Months are counted from the anchor, never from the previous period: a subscription started
on January 31 renews on February 28 (29), March 31, April 30 — the day is the anchor's,
clamped to the month's length — so short months never make the periods drift.

Usage reset windows (`reset_window`):
- HOUR and DAY: windows of 1 h / 24 h counted from the anchor (the subscription's or the
  promotion's start), so "daily" means "every 24 hours since you subscribed".
- WEEK: `SubscriptionStart` (default) counts 7-day windows from the anchor; `EveryMonday`
  … `EverySunday` starts each window at 00:00 UTC of that weekday.
- MONTH: `SubscriptionStart` (default) counts months from the anchor; `StartOfTheMonth`
  uses calendar months (00:00 UTC on the 1st).
- YEAR: `SubscriptionStart`: years from the anchor.
Before the anchor, the window is the first one, starting at the anchor.
"""

from __future__ import annotations

import calendar
from datetime import UTC, datetime, timedelta

__all__ = [
    "ANCHORS",
    "DAY_MS",
    "HOUR_MS",
    "RESET_PERIODS",
    "WEEKDAYS",
    "WEEK_MS",
    "add_months",
    "billing_period",
    "months_of",
    "reset_window",
    "window_of_months",
]

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
WEEK_MS = 7 * DAY_MS
RESET_PERIODS = ("HOUR", "DAY", "WEEK", "MONTH", "YEAR")
WEEKDAYS = ("EveryMonday", "EveryTuesday", "EveryWednesday", "EveryThursday", "EveryFriday",
            "EverySaturday", "EverySunday")  # in datetime.weekday() order
# The anchors each reset period accepts (the contract's `…ResetPeriodConfiguration`).
ANCHORS = {"HOUR": ("SubscriptionStart",), "DAY": ("SubscriptionStart",),
           "WEEK": ("SubscriptionStart", *WEEKDAYS),
           "MONTH": ("SubscriptionStart", "StartOfTheMonth"), "YEAR": ("SubscriptionStart",)}
_UTC = UTC


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms // 1000, _UTC) + timedelta(milliseconds=ms % 1000)


def _ms(d: datetime) -> int:
    delta = d - datetime(1970, 1, 1, tzinfo=_UTC)
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def add_months(ms: int, n: int) -> int:
    """`ms` moved by `n` calendar months (n may be negative), the day clamped to the
    target month's length, the time of day kept."""
    d = _dt(ms)
    month0 = d.year * 12 + (d.month - 1) + n
    year, month = divmod(month0, 12)
    day = min(d.day, calendar.monthrange(year, month + 1)[1])
    return _ms(d.replace(year=year, month=month + 1, day=day))


def window_of_months(anchor_ms: int, months: int, now_ms: int) -> tuple[int, int]:
    """The window [start, end) of `months` months, counted from `anchor_ms`, holding
    `now_ms` (the first window when `now_ms` is before the anchor)."""
    assert months > 0
    if now_ms < anchor_ms:
        return anchor_ms, add_months(anchor_ms, months)
    a, n = _dt(anchor_ms), _dt(now_ms)
    k = ((n.year - a.year) * 12 + n.month - a.month) // months
    k = max(k, 0)
    # The month count is right or one window ahead (the anchor's day/time not reached yet).
    while k > 0 and add_months(anchor_ms, k * months) > now_ms:
        k -= 1
    while add_months(anchor_ms, (k + 1) * months) <= now_ms:
        k += 1
    return add_months(anchor_ms, k * months), add_months(anchor_ms, (k + 1) * months)


def months_of(period: str) -> int:
    """Months in a billing period or credit cadence."""
    if period in ("MONTHLY", "MONTH"):
        return 1
    if period in ("ANNUALLY", "YEAR"):
        return 12
    raise ValueError(f"not a billing period: {period!r}")


def billing_period(anchor_ms: int, period: str, now_ms: int) -> tuple[int, int]:
    """The billing period (MONTHLY | ANNUALLY) anchored at `anchor_ms` that holds `now_ms`."""
    return window_of_months(anchor_ms, months_of(period), now_ms)


def _fixed(anchor_ms: int, length_ms: int, now_ms: int) -> tuple[int, int]:
    if now_ms < anchor_ms:
        return anchor_ms, anchor_ms + length_ms
    start = anchor_ms + (now_ms - anchor_ms) // length_ms * length_ms
    return start, start + length_ms


def reset_window(reset_period: str, according_to: str | None, anchor_ms: int,
                 now_ms: int) -> tuple[int, int]:
    """The usage window [start, end) holding `now_ms` (rules in the module docstring)."""
    anchor = according_to or "SubscriptionStart"
    if anchor not in ANCHORS.get(reset_period, ()):
        raise ValueError(f"{anchor!r} is not an anchor of reset period {reset_period!r}")
    if reset_period == "HOUR":
        return _fixed(anchor_ms, HOUR_MS, now_ms)
    if reset_period == "DAY":
        return _fixed(anchor_ms, DAY_MS, now_ms)
    if reset_period == "WEEK":
        if anchor == "SubscriptionStart":
            return _fixed(anchor_ms, WEEK_MS, now_ms)
        # 1970-01-01 was a Thursday (weekday 3): the first such weekday on or after it.
        first = ((WEEKDAYS.index(anchor) - 3) % 7) * DAY_MS
        return _fixed(first - WEEK_MS, WEEK_MS, now_ms)
    if reset_period == "MONTH":
        if anchor == "StartOfTheMonth":
            d = _dt(now_ms)
            start = _ms(datetime(d.year, d.month, 1, tzinfo=_UTC))
            return start, add_months(start, 1)
        return window_of_months(anchor_ms, 1, now_ms)
    return window_of_months(anchor_ms, 12, now_ms)
