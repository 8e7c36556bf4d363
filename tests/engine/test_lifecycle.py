"""A subscription's timeline (engine/billing/lifecycle.py): statuses at hand-picked
instants, and properties of the recurring-credit windows the gateway grants from."""

from __future__ import annotations

from datetime import datetime, timezone

from hypothesis import given
from hypothesis import strategies as st

from engine.billing.lifecycle import (
    Timeline,
    billing_window,
    credit_window,
    next_change,
    status_at,
    trial_end_of,
)

DAY = 86_400_000


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp() * 1000)


START = ms("2026-01-31T09:00:00")


def test_statuses_and_windows_of_a_trial_that_converts() -> None:
    trial_end = trial_end_of(START, 14, "DAY")
    assert trial_end == ms("2026-02-14T09:00:00")
    t = Timeline(start=START, anchor=trial_end, billing_period="MONTHLY", trial_end=trial_end)
    assert status_at(t, START - 1) == "NOT_STARTED"
    assert status_at(t, START) == "IN_TRIAL"
    assert status_at(t, trial_end) == "ACTIVE"
    # The trial is the first billing period; then months from the trial's end.
    assert billing_window(t, START + DAY) == (START, trial_end)
    assert billing_window(t, ms("2026-03-20T00:00:00")) == (ms("2026-03-14T09:00:00"),
                                                            ms("2026-04-14T09:00:00"))
    # Monthly credits: the trial's window is cut at its end.
    assert credit_window(t, "MONTH", START) == (START, trial_end)
    assert credit_window(t, "MONTH", trial_end) == (trial_end, ms("2026-03-14T09:00:00"))
    assert next_change(t, ["MONTH"], START) == trial_end


def test_a_trial_that_cancels_expires() -> None:
    trial_end = trial_end_of(START, 1, "MONTH")
    assert trial_end == ms("2026-02-28T09:00:00")
    t = Timeline(start=START, anchor=trial_end, billing_period="MONTHLY", trial_end=trial_end,
                 trial_end_behavior="CANCEL_SUBSCRIPTION")
    assert status_at(t, trial_end - 1) == "IN_TRIAL"
    assert status_at(t, trial_end) == "EXPIRED"
    assert credit_window(t, "MONTH", trial_end) is None
    assert next_change(t, ["MONTH"], trial_end) is None


def test_a_cancellation_cuts_the_last_windows() -> None:
    end = ms("2026-04-10T00:00:00")
    t = Timeline(start=START, anchor=START, billing_period="ANNUALLY", end=end)
    assert status_at(t, end - 1) == "ACTIVE" and status_at(t, end) == "CANCELED"
    assert billing_window(t, ms("2026-03-01T00:00:00")) == (START, end)
    assert credit_window(t, "MONTH", ms("2026-04-01T00:00:00")) == (
        ms("2026-03-31T09:00:00"), end)
    assert credit_window(t, "YEAR", START) == (START, end)


_T0 = ms("2026-01-01T00:00:00")
_SPAN = 3 * 365 * DAY


@st.composite
def timelines(draw: st.DrawFn) -> Timeline:
    start = draw(st.integers(_T0, _T0 + 60 * DAY))
    trial = draw(st.none() | st.integers(1, 90 * DAY))
    trial_end = None if trial is None else start + trial
    end = draw(st.none() | st.integers(start + 1, start + _SPAN))
    return Timeline(start=start, anchor=trial_end or start,
                    billing_period=draw(st.sampled_from(["MONTHLY", "ANNUALLY"])),
                    trial_end=trial_end,
                    trial_end_behavior=draw(st.sampled_from(["CONVERT_TO_PAID",
                                                             "CANCEL_SUBSCRIPTION"])),
                    end=end)


@given(timelines(), st.lists(st.integers(0, _SPAN + 120 * DAY), min_size=1, max_size=40),
       st.sampled_from(["MONTH", "YEAR"]))
def test_credits_granted_once_per_window_whatever_the_observations(
        t: Timeline, offsets: list[int], cadence: str) -> None:
    """The gateway grants the window holding each instant it looks at, once per window.
    Whatever instants it looks at, in order: each grant's window holds the instant, windows
    never overlap, and every grant falls while the subscription runs."""
    granted: dict[int, tuple[int, int]] = {}
    for now in sorted(_T0 + o for o in offsets):
        window = credit_window(t, cadence, now)
        running = status_at(t, now) in ("ACTIVE", "IN_TRIAL")
        assert (window is not None) == running
        if window is None:
            continue
        start, end = window
        assert start <= now < end <= t.stop
        if start in granted:
            assert granted[start] == window  # the same window, not a second grant
        granted[start] = window
    spans = sorted(granted.values())
    for (_, end_a), (start_b, _) in zip(spans, spans[1:]):
        assert end_a <= start_b


@given(timelines(), st.integers(0, _SPAN), st.sampled_from(["MONTH", "YEAR"]))
def test_nothing_changes_before_next_change(t: Timeline, offset: int, cadence: str) -> None:
    """Between `now` and `next_change` the status, billing period and credit window stay
    put: the scheduler may sleep until then."""
    now = _T0 + offset
    nxt = next_change(t, [cadence], now)
    later = (nxt - 1) if nxt is not None else now + _SPAN
    if later <= now:
        return
    assert status_at(t, later) == status_at(t, now)
    assert credit_window(t, cadence, later) == credit_window(t, cadence, now)
    if status_at(t, now) in ("ACTIVE", "IN_TRIAL"):
        assert billing_window(t, later) == billing_window(t, now)


def test_a_billing_period_change_keeps_the_credit_windows() -> None:
    """Billing moved to annual on March 10 (`anchor`), credits still monthly from the start."""
    moved = ms("2026-03-10T00:00:00")
    t = Timeline(start=START, anchor=moved, billing_period="ANNUALLY", credit_anchor=START)
    assert billing_window(t, ms("2026-03-20T00:00:00")) == (moved, ms("2027-03-10T00:00:00"))
    assert credit_window(t, "MONTH", ms("2026-03-20T00:00:00")) == (
        ms("2026-02-28T09:00:00"), ms("2026-03-31T09:00:00"))
