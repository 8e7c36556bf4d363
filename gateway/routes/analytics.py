"""Usage analytics: credit consumption and feature usage as time series.

Both read the hourly buckets the store keeps (`usage_buckets`, summed in each group
commit from `engine.core.usage`): a range costs one row per hour per (feature, resource,
currency, dimensions), whatever the number of events behind it. Points are aligned to UTC
hours, days or calendar months, chosen from the range (hourly up to two days, daily up to
62 days, monthly beyond), and empty periods are filled with zeros so charts have no gaps.
"""

from __future__ import annotations

import re
from collections import defaultdict
from datetime import datetime, timezone
from typing import Annotated, Any

from litestar import Request, Response, get
from litestar.params import FromPath, FromQuery, QueryParameter

from gateway.context import environment, ok, services
from gateway.errors import bad_input
from gateway.routes.common import engine_id, require_currency, require_customer
from gateway.routes.features import require_feature
from gateway.wire import amount_out, ascii_int, iso, limit_in, parse_time
from persistence import codec

__all__ = ["ROUTES", "periods"]

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
_RANGES = {"LAST_DAY": DAY_MS, "LAST_WEEK": 7 * DAY_MS, "LAST_MONTH": 30 * DAY_MS,
           "LAST_YEAR": 365 * DAY_MS}
GROUP_KEYS_MAX = 3
_KEY = re.compile(r"^[a-zA-Z0-9_$-]+$")
RANGE_MS_MAX = 3 * 366 * DAY_MS  # bounded work per query


def _month_start(ms: int) -> int:
    d = datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
    return int(datetime(d.year, d.month, 1, tzinfo=timezone.utc).timestamp() * 1000)


def _next_month(ms: int) -> int:
    d = datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
    year, month = (d.year + 1, 1) if d.month == 12 else (d.year, d.month + 1)
    return int(datetime(year, month, 1, tzinfo=timezone.utc).timestamp() * 1000)


def periods(start: int, end: int) -> list[int]:
    """The starts of the points covering [start, end): hours, days or months by length."""
    span = end - start
    if span <= 2 * DAY_MS:
        first, step = start - start % HOUR_MS, HOUR_MS
    elif span <= 62 * DAY_MS:
        first, step = start - start % DAY_MS, DAY_MS
    else:
        out, at = [], _month_start(start)
        while at < end:
            out.append(at)
            at = _next_month(at)
        return out
    return list(range(first, end, step))


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


def _range(now: int, start_date: str | None, end_date: str | None, time_range: str | None,
           default: str | None) -> tuple[int, int]:
    end = parse_time(end_date, "endDate") or now
    start = parse_time(start_date, "startDate")
    if start is None:
        name = time_range or default
        if name is None:
            raise bad_input("is required", "startDate")
        if name not in _RANGES:
            raise bad_input(f"must be one of {', '.join(_RANGES)}", "timeRange")
        start = end - _RANGES[name]
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


@get("/api/v1/credits/usage")
async def credit_usage(
    request: Request,
    customer_id: Annotated[str | None, QueryParameter(name="customerId")] = None,
    currency_id: Annotated[str | None, QueryParameter(name="currencyId")] = None,
    resource_id: Annotated[str | None, QueryParameter(name="resourceId")] = None,
    time_range: Annotated[str | None, QueryParameter(name="timeRange")] = None,
    start_date: Annotated[str | None, QueryParameter(name="startDate")] = None,
    end_date: Annotated[str | None, QueryParameter(name="endDate")] = None,
    group_by: Annotated[str | None, QueryParameter(name="groupBy")] = None,
    limit: FromQuery[int | None] = None,
    after: FromQuery[str | None] = None,
    before: FromQuery[str | None] = None,
) -> Response:
    """Credits consumed over time: a series per feature (featureId null: consumed
    directly), or per combination of up to three dimension values with `groupBy`."""
    if not customer_id:
        raise bad_input("is required", "customerId")
    await require_customer(request, customer_id, allow_archived=True)
    start, end = _range(services(request).clock.now_ms(), start_date, end_date, time_range,
                        "LAST_MONTH")
    keys, by_feature = _group_keys(group_by, allow_feature=True)
    if not keys:
        by_feature = True
    currency = None
    if currency_id:
        currency = await require_currency(request, currency_id, allow_archived=True)
    size = limit_in(limit)
    env = environment(request)
    where = ["customer_id = ?", "hour >= ?", "hour < ?", "credits <> 0"]
    params: list[Any] = [engine_id(env, customer_id), start - start % HOUR_MS, end]
    if currency_id:
        where.append("currency_key = ?")
        params.append(currency_id)
    if resource_id:
        where.append("resource_key = ?")
        params.append(resource_id)
    rows = await services(request).store.fetch(
        f"SELECT hour, feature_id, dims, currency_id, credits, events FROM usage_buckets "
        f"WHERE {' AND '.join(where)}", *params)
    starts = periods(start, end)
    series: dict[tuple, dict[str, Any]] = {}
    currencies = set()
    for hour, feature_id, dims, row_currency, credits, events in rows:
        currencies.add(row_currency)
        values = codec.decode_json(dims) if dims else {}
        tags = tuple(_tag(values.get(k)) for k in keys)
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
        currency = await require_currency(request, currencies.pop(), allow_archived=True)
    ordered = sorted(series.values(), key=lambda s: (-s["credits"], s["feature"] or "",
                                                      s["tags"]))
    offset = 0
    for name, cursor in (("after", after), ("before", before)):
        if cursor is not None and not (cursor.startswith("o")
                                       and ascii_int(cursor[1:]) is not None):
            raise bad_input("is not a cursor this server issued", name)
    if after:
        offset = int(after[1:])
    elif before:
        offset = max(int(before[1:]) - size, 0)
    page = ordered[offset: offset + size]
    names: dict[str, str] = {}
    for s in page:
        if s["feature"] and s["feature"] not in names:
            doc = await services(request).catalog.get("features", env, s["feature"])
            names[s["feature"]] = doc["displayName"] if doc else s["feature"]
    data = {
        "currency": None if currency is None else {
            "currencyId": currency["id"], "displayName": currency["displayName"],
            "symbol": currency.get("symbol"),
            "singular": (currency.get("units") or {}).get("singular"),
            "plural": (currency.get("units") or {}).get("plural")},
        "series": [{
            "featureId": s["feature"], "featureName": names.get(s["feature"] or ""),
            "tags": [{"key": k, "value": v} for k, v in zip(keys, s["tags"])],
            "totalCredits": amount_out(s["credits"]), "eventCount": s["events"],
            "points": [{"timestamp": iso(at), "value": amount_out(s["points"][at][0]),
                        "eventCount": s["points"][at][1]} if at in s["points"] else
                       {"timestamp": iso(at), "value": 0, "eventCount": 0} for at in starts],
        } for s in page],
        "pagination": {
            "next": f"o{offset + size}" if offset + size < len(ordered) else None,
            "prev": f"o{offset}" if offset > 0 else None,
        },
    }
    return ok(data)


@get("/api/v1/credits/usage/dimensions")
async def dimension_keys(
    request: Request,
    customer_id: Annotated[str | None, QueryParameter(name="customerId")] = None,
    search: FromQuery[str | None] = None,
    limit: FromQuery[int | None] = None,
) -> Response:
    """The dimension keys seen in a customer's usage (for a group-by picker), matching
    `search` as a prefix, case-insensitively."""
    if not customer_id:
        raise bad_input("is required", "customerId")
    await require_customer(request, customer_id, allow_archived=True)
    rows = await services(request).store.fetch(
        "SELECT key FROM usage_dimension_keys WHERE customer_id = ? ORDER BY key",
        engine_id(environment(request), customer_id))
    needle = (search or "").lower()
    keys = [r[0] for r in rows if r[0].lower().startswith(needle)]
    return ok({"customerId": customer_id, "keys": keys[: limit_in(limit, default=100)]})


@get("/api/v1/usage/{customer_id:str}/history/{feature_id:str}")
async def usage_history(
    request: Request,
    customer_id: FromPath[str],
    feature_id: FromPath[str],
    start_date: Annotated[str | None, QueryParameter(name="startDate")] = None,
    end_date: Annotated[str | None, QueryParameter(name="endDate")] = None,
    group_by: Annotated[str | None, QueryParameter(name="groupBy")] = None,
    resource_id: Annotated[str | None, QueryParameter(name="resourceId")] = None,
) -> Response:
    """A feature's usage over time: at each point, the usage reached by its end (the
    running total of every change before it), per value of the `groupBy` dimension."""
    await require_customer(request, customer_id, allow_archived=True)
    await require_feature(request, feature_id, allow_archived=True)
    start, end = _range(services(request).clock.now_ms(), start_date, end_date, None, None)
    keys, _ = _group_keys(group_by, allow_feature=False)
    customer = engine_id(environment(request), customer_id)
    rows = await services(request).store.fetch(
        "SELECT hour, dims, usage FROM usage_buckets WHERE customer_id = ? AND feature_key = ? "
        "AND resource_key = ? AND hour < ?", customer, feature_id, resource_id or "", end)
    starts = periods(start, end)
    totals: dict[tuple, int] = defaultdict(int)  # usage before the range, per group
    changes: dict[tuple, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    for hour, dims, change in rows:
        values = codec.decode_json(dims) if dims else {}
        tags = tuple(_tag(values.get(k)) for k in keys)
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
            points.append({"timestamp": iso(at), "value": amount_out(running),
                           "isResetPoint": False})
        series.append({"tags": [{"key": k, "value": v} for k, v in zip(keys, tags)],
                       "points": points})
    # Counters have no reset periods yet (they come with plans), so there are no markers.
    return ok({"markers": [], "series": series})


ROUTES = [credit_usage, dimension_keys, usage_history]
