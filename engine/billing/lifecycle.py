"""A subscription's life in time: status, billing period and recurring-credit windows at
any instant. Pure; `now` is an argument.

A subscription has up to three phases:
- not started, before `start` (a future start date);
- trial, from `start` to `trial_end`;
- paid, from `anchor` (the trial's end, the start, or the instant the billing period was
  changed) until `end` (a cancellation), or forever.
Credit windows of the paid phase count from `credit_anchor` (the trial's end or the start),
which a change of billing period does not move.

Billing periods are counted from `anchor` (months from the anchor day, `periods.py`); in a
trial, the billing period is the trial. Recurring credits of a CREDIT entitlement come in
windows of its cadence (MONTH | YEAR), counted from the phase's start and cut at the phase's
end: a trial of 14 days with monthly credits gets one window of 14 days; the paid phase's
windows start at `anchor`; the last window ends at `end`.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.billing.periods import add_months, billing_period, months_of, window_of_months

__all__ = ["Timeline", "billing_window", "credit_window", "next_change", "status_at"]

ENDLESS = 1 << 62


@dataclass(frozen=True)
class Timeline:
    start: int
    anchor: int  # start of the paid phase
    billing_period: str  # MONTHLY | ANNUALLY
    trial_end: int | None = None
    # What happens when the trial ends without conversion: "CONVERT_TO_PAID" goes on to
    # the paid phase, "CANCEL_SUBSCRIPTION" ends the subscription (EXPIRED).
    trial_end_behavior: str = "CONVERT_TO_PAID"
    end: int | None = None  # a cancellation's effective time
    # Where the paid phase's credit windows are counted from (None: `anchor`). It stays put
    # when the billing period changes and `anchor` moves: credits follow their own cadence,
    # so switching between monthly and annual billing never opens a new credit window.
    credit_anchor: int | None = None

    @property
    def stop(self) -> int:
        """When the subscription stops giving anything."""
        if self.trial_end is not None and self.trial_end_behavior == "CANCEL_SUBSCRIPTION":
            return min(self.trial_end, self.end if self.end is not None else ENDLESS)
        return self.end if self.end is not None else ENDLESS


def status_at(t: Timeline, now: int) -> str:
    if now >= t.stop:
        if t.trial_end is not None and t.stop == t.trial_end and (
                t.trial_end_behavior == "CANCEL_SUBSCRIPTION") and (
                t.end is None or t.end >= t.trial_end):
            return "EXPIRED"
        return "CANCELED"
    if now < t.start:
        return "NOT_STARTED"
    if t.trial_end is not None and now < t.trial_end:
        return "IN_TRIAL"
    return "ACTIVE"


def billing_window(t: Timeline, now: int) -> tuple[int, int]:
    """The current billing period (the first one before the start, the last one after the
    end), cut at the end."""
    at = min(max(now, t.start), t.stop - 1)
    if t.trial_end is not None and at < t.trial_end:
        return t.start, min(t.trial_end, t.stop)
    start, end = billing_period(t.anchor, t.billing_period, max(at, t.anchor))
    return start, min(end, t.stop)


def credit_window(t: Timeline, cadence: str, now: int) -> tuple[int, int] | None:
    """The recurring-credit window of `cadence` holding `now`, or None when the
    subscription is not running at `now`."""
    if not t.start <= now < t.stop:
        return None
    months = months_of(cadence)
    if t.trial_end is not None and now < t.trial_end:
        start, end = window_of_months(t.start, months, now)
        return start, min(end, t.trial_end, t.stop)
    anchor = t.anchor if t.credit_anchor is None else t.credit_anchor
    start, end = window_of_months(anchor, months, max(now, anchor))
    return start, min(end, t.stop)


def next_change(t: Timeline, cadences: list[str], now: int) -> int | None:
    """The next instant after `now` at which the status, the billing period or a credit
    window changes (when to look at the subscription again), or None if nothing will."""
    if now >= t.stop:
        return None
    candidates = [t.stop]
    if now < t.start:
        candidates.append(t.start)
    if t.trial_end is not None and now < t.trial_end:
        candidates.append(t.trial_end)
    candidates.append(billing_window(t, now)[1])
    for cadence in cadences:
        window = credit_window(t, cadence, now)
        if window is not None:
            candidates.append(window[1])
    after = [c for c in candidates if c > now and c < ENDLESS]
    return min(after) if after else None


def trial_end_of(start: int, duration: int, units: str) -> int:
    """A trial's end from a plan's default trial configuration (DAY | MONTH units)."""
    if units == "MONTH":
        return add_months(start, duration)
    return start + duration * 86_400_000
