"""Usage analytics: credit consumption and feature usage as time series.

Both read the hourly buckets the store keeps (summed in each group commit from
`engine.core.usage`): a range costs one row per hour per (feature, resource, currency,
dimensions), whatever the number of events behind it. Points are aligned to UTC hours,
days, weeks (from Monday) or calendar months: asked for (`granularity`, credit usage) or
chosen from the range (hourly up to two days, daily up to 62 days, monthly beyond), and
empty periods are filled with zeros so charts have no gaps.
Amounts are units (engine/core/amounts.py); the wire formats them.
"""

from __future__ import annotations

import re
from collections import defaultdict
from datetime import datetime, timezone
from typing import Any

import msgspec

from engine.domain.context import Domain, engine_id, require_currency, require_customer
from engine.domain.errors import bad_input
from engine.domain.features import require_feature
from engine.domain.stored import Currency
from engine.domain.values import ascii_int

__all__ = ["GRANULARITIES", "GROUP_KEYS_MAX", "POINTS_MAX", "RANGE_MS_MAX", "CreditSeries",
           "CreditUsage", "CreditUsageQuery", "HistoryQuery", "HistorySeries", "Point",
           "credit_usage", "dimension_keys", "periods", "usage_history"]

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
RANGES = {"LAST_DAY": DAY_MS, "LAST_WEEK": 7 * DAY_MS, "LAST_MONTH": 30 * DAY_MS,
          "LAST_YEAR": 365 * DAY_MS}
GROUP_KEYS_MAX = 3
_KEY = re.compile(r"^[a-zA-Z0-9_$-]+$")
WEEK_MS = 7 * DAY_MS
RANGE_MS_MAX = 3 * 366 * DAY_MS  # bounded work per query
GRANULARITIES = ("HOUR", "DAY", "WEEK", "MONTH")
POINTS_MAX = 2_000  # an asked-for granularity may not make more points than this
_MONDAY_MS = 4 * DAY_MS  # 1970-01-05, the first Monday after the epoch


def _month_start(ms: int) -> int:
    d = datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
    return int(datetime(d.year, d.month, 1, tzinfo=timezone.utc).timestamp() * 1000)


def _next_month(ms: int) -> int:
    d = datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
    year, month = (d.year + 1, 1) if d.month == 12 else (d.year, d.month + 1)
    return int(datetime(year, month, 1, tzinfo=timezone.utc).timestamp() * 1000)


def periods(start: int, end: int, granularity: str | None = None) -> list[int]:
    """The starts of the points covering [start, end): hours, days, weeks or months, as
    asked or by the range's length."""
    if granularity is None:
        span = end - start
        granularity = "HOUR" if span <= 2 * DAY_MS else "DAY" if span <= 62 * DAY_MS \
            else "MONTH"
    if granularity == "MONTH":
        out, at = [], _month_start(start)
        while at < end:
            out.append(at)
            at = _next_month(at)
        return out
    if granularity == "WEEK":
        first, step = start - (start - _MONDAY_MS) % WEEK_MS, WEEK_MS
    else:
        step = HOUR_MS if granularity == "HOUR" else DAY_MS
        first = start - start % step
    return list(range(first, end, step))


def _granularity(value: str | None, start: int, end: int) -> str | None:
    """An asked-for granularity, checked: a known name, and not more than POINTS_MAX
    points over the range (the answer's size stays bounded)."""
    if value is None:
        return None
    name = value.upper()
    if name not in GRANULARITIES:
        raise bad_input(f"must be one of {', '.join(GRANULARITIES)}", "granularity")
    step = {"HOUR": HOUR_MS, "DAY": DAY_MS, "WEEK": WEEK_MS}.get(name, 28 * DAY_MS)
    if (end - start) // step + 1 > POINTS_MAX:
        raise bad_input(f"{name} points over this range would be more than {POINTS_MAX}; "
                        "ask for a coarser granularity or a shorter range", "granularity")
    return name


def _period_of(starts: list[int], hour: int) -> int:
    """The point a bucket hour belongs to (the last start at or before it)."""
    lo, hi = 0, len(starts) - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if starts[mid] <= hour:
            lo = mid
        else:
            hi = mid - 1
    return starts[lo]


def _range(now: int, start: int | None, end: int | None, time_range: str | None,
           default: str | None) -> tuple[int, int]:
    end = end or now
    if start is None:
        name = time_range or default
        if name is None:
            raise bad_input("is required", "startDate")
        if name not in RANGES:
            raise bad_input(f"must be one of {', '.join(RANGES)}", "timeRange")
        start = end - RANGES[name]
    if start >= end:
        raise bad_input("must be before endDate", "startDate")
    if end - start > RANGE_MS_MAX:
        raise bad_input("the range may span at most three years", "startDate")
    return start, end


def _group_keys(group_by: str | None, *, allow_feature: bool) -> tuple[list[str], bool]:
    keys = [k.strip() for k in (group_by or "").split(",") if k.strip()]
    by_feature = "featureId" in keys
    if by_feature:
        if not allow_feature:
            raise bad_input("groups by dimension keys only", "groupBy")
        keys = [k for k in keys if k != "featureId"]
    if len(keys) > GROUP_KEYS_MAX:
        raise bad_input(f"at most {GROUP_KEYS_MAX} dimension keys (plus featureId)", "groupBy")
    for k in keys:
        if not _KEY.match(k):
            raise bad_input(f"{k!r} is not a dimension key (letters, digits, _ $ -)", "groupBy")
    return keys, by_feature


def _tag(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class Point(msgspec.Struct, frozen=True):
    at: int  # the period's start, epoch ms
    units: int
    events: int = 0


class CreditUsageQuery(msgspec.Struct, frozen=True):
    customer_id: str | None
    limit: int
    currency_id: str | None = None
    resource_id: str | None = None
    time_range: str | None = None  # LAST_DAY, LAST_WEEK, LAST_MONTH (default), LAST_YEAR
    start: int | None = None  # epoch ms
    end: int | None = None  # epoch ms; default now
    group_by: str | None = None  # featureId and up to three dimension keys, comma-separated
    after: str | None = None  # the cursors the previous page gave
    before: str | None = None
    granularity: str | None = None  # HOUR, DAY, WEEK (from Monday), MONTH; None: by range


class CreditSeries(msgspec.Struct, frozen=True):
    feature_id: str | None  # None: credits consumed directly
    feature_name: str | None
    tags: list[tuple[str, str]]  # (dimension key, value)
    units: int
    events: int
    points: list[Point]


class CreditUsage(msgspec.Struct, frozen=True):
    currency: Currency | None  # the currency's document, if one currency is shown
    series: list[CreditSeries]
    next: str | None
    prev: str | None


async def credit_usage(d: Domain, env: str, q: CreditUsageQuery) -> CreditUsage:
    """Credits consumed over time: a series per feature, or per combination of up to
    three dimension values with `group_by`, largest first, paged."""
    if not q.customer_id:
        raise bad_input("is required", "customerId")
    await require_customer(d, env, q.customer_id, allow_archived=True)
    start, end = _range(d.documents.now_ms(), q.start, q.end, q.time_range, "LAST_MONTH")
    granularity = _granularity(q.granularity, start, end)
    keys, by_feature = _group_keys(q.group_by, allow_feature=True)
    if not keys:
        by_feature = True
    currency = None
    if q.currency_id:
        currency = await require_currency(d, env, q.currency_id, allow_archived=True)
    for name, cursor in (("after", q.after), ("before", q.before)):
        if cursor is not None and not (cursor.startswith("o")
                                       and ascii_int(cursor[1:]) is not None):
            raise bad_input("is not a cursor this server issued", name)
    rows = await d.store.credit_buckets(engine_id(env, q.customer_id), start - start % HOUR_MS,
                                        end, q.currency_id, q.resource_id)
    starts = periods(start, end, granularity)
    series: dict[tuple, dict[str, Any]] = {}
    currencies = set()
    for hour, feature_id, dims, row_currency, credits, events in rows:
        currencies.add(row_currency)
        tags = tuple(_tag(dims.get(k)) for k in keys)
        key = (feature_id if by_feature else None, tags)
        s = series.get(key)
        if s is None:
            s = series[key] = {"feature": key[0], "tags": tags, "credits": 0, "events": 0,
                               "points": defaultdict(lambda: [0, 0])}
        point = s["points"][_period_of(starts, hour)]
        point[0] += credits
        point[1] += events
        s["credits"] += credits
        s["events"] += events
    if currency is None and len(currencies) == 1:
        currency = await require_currency(d, env, currencies.pop(), allow_archived=True)
    ordered = sorted(series.values(), key=lambda s: (-s["credits"], s["feature"] or "",
                                                      s["tags"]))
    # A cursor `o{k}` is the position of the k-th series: `after` pages from it, `before`
    # ends just before it (never the cursor's own series or later ones).
    if q.after:
        offset = int(q.after[1:])
        end = offset + q.limit
    elif q.before:
        end = int(q.before[1:])
        offset = max(end - q.limit, 0)
    else:
        offset, end = 0, q.limit
    page = ordered[offset:end]
    stop = offset + len(page)
    names: dict[str, str] = {}
    for s in page:
        if s["feature"] and s["feature"] not in names:
            doc = await d.documents.get("features", env, s["feature"])
            names[s["feature"]] = doc.display_name if doc else s["feature"]
    return CreditUsage(
        currency=currency,
        series=[CreditSeries(
            feature_id=s["feature"], feature_name=names.get(s["feature"] or ""),
            tags=list(zip(keys, s["tags"])), units=s["credits"], events=s["events"],
            points=[Point(at, *s["points"].get(at, (0, 0))) for at in starts])
            for s in page],
        next=f"o{stop}" if stop < len(ordered) else None,
        prev=f"o{offset}" if offset > 0 else None)


async def dimension_keys(d: Domain, env: str, customer_id: str | None, search: str | None,
                         limit: int) -> list[str]:
    """The dimension keys seen in a customer's usage (for a group-by picker), matching
    `search` as a prefix, case-insensitively."""
    if not customer_id:
        raise bad_input("is required", "customerId")
    await require_customer(d, env, customer_id, allow_archived=True)
    needle = (search or "").lower()
    keys = await d.store.dimension_keys(engine_id(env, customer_id))
    return [k for k in keys if k.lower().startswith(needle)][:limit]


class HistoryQuery(msgspec.Struct, frozen=True):
    customer_id: str
    feature_id: str
    start: int | None = None  # epoch ms; required
    end: int | None = None  # epoch ms; default now
    group_by: str | None = None  # up to three dimension keys, comma-separated
    resource_id: str | None = None


class HistorySeries(msgspec.Struct, frozen=True):
    tags: list[tuple[str, str]]
    points: list[Point]  # the usage reached by each period's end


async def usage_history(d: Domain, env: str, q: HistoryQuery) -> list[HistorySeries]:
    """A feature's usage over time: at each point, the usage reached by its end (the
    running total of every change before it), per value of the `group_by` dimensions."""
    await require_customer(d, env, q.customer_id, allow_archived=True)
    await require_feature(d, env, q.feature_id, allow_archived=True)
    start, end = _range(d.documents.now_ms(), q.start, q.end, None, None)
    keys, _ = _group_keys(q.group_by, allow_feature=False)
    rows = await d.store.usage_buckets(engine_id(env, q.customer_id), q.feature_id,
                                       q.resource_id, end)
    starts = periods(start, end)
    totals: dict[tuple, int] = defaultdict(int)  # usage before the range, per group
    changes: dict[tuple, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    for hour, dims, change in rows:
        tags = tuple(_tag(dims.get(k)) for k in keys)
        if hour < starts[0]:
            totals[tags] += change
        else:
            changes[tags][_period_of(starts, hour)] += change
    series = []
    for tags in sorted(set(totals) | set(changes)):
        running = totals[tags]
        points = []
        for at in starts:
            running += changes[tags].get(at, 0)
            points.append(Point(at, running))
        series.append(HistorySeries(tags=list(zip(keys, tags)), points=points))
    return series
