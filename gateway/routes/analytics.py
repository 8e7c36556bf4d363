"""Usage analytics over REST (the rules: engine/domain/analytics.py): credit consumption
and feature usage as time series."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Request, Response, get
from litestar.params import FromPath, FromQuery, QueryParameter

from engine.domain import analytics
from engine.domain.analytics import periods
from engine.domain.stored import Currency
from gateway.context import domain, environment, ok
from gateway.wire import PageQuery, amount_out, iso, limit_in, parse_time

__all__ = ["ROUTES", "credit_series_json", "history_json", "periods"]

Q = QueryParameter


def _tags(tags: list[tuple[str, str]]) -> list[dict[str, str]]:
    return [{"key": k, "value": v} for k, v in tags]


def _currency(doc: Currency | None) -> dict[str, Any] | None:
    if doc is None:
        return None
    units = doc.units
    return {"currencyId": doc.id, "displayName": doc.display_name, "symbol": doc.symbol,
            "singular": units and units.singular, "plural": units and units.plural}


@get("/api/v1/credits/usage")
async def credit_usage(
    request: Request,
    page: PageQuery,
    customer_id: Annotated[str | None, Q(name="customerId")] = None,
    currency_id: Annotated[str | None, Q(name="currencyId")] = None,
    resource_id: Annotated[str | None, Q(name="resourceId")] = None,
    time_range: Annotated[str | None, Q(name="timeRange")] = None,
    start_date: Annotated[str | None, Q(name="startDate")] = None,
    end_date: Annotated[str | None, Q(name="endDate")] = None,
    group_by: Annotated[str | None, Q(name="groupBy")] = None,
    granularity: FromQuery[str | None] = None,
) -> Response:
    """Credits consumed over time: a series per feature (featureId null: consumed
    directly), or per combination of up to three dimension values with `groupBy`; points
    per `granularity` (HOUR, DAY, WEEK, MONTH; an extension) or by the range's length."""
    usage = await analytics.credit_usage(domain(request), environment(request),
                                         analytics.CreditUsageQuery(
        customer_id=customer_id, limit=page.limit, currency_id=currency_id,
        resource_id=resource_id, time_range=time_range,
        start=parse_time(start_date, "startDate"), end=parse_time(end_date, "endDate"),
        group_by=group_by, after=page.after, before=page.before, granularity=granularity))
    return ok({
        "currency": _currency(usage.currency),
        "series": [credit_series_json(s) for s in usage.series],
        "pagination": {"next": usage.next, "prev": usage.prev},
    })


def credit_series_json(s: analytics.CreditSeries) -> dict[str, Any]:
    """A series of credit usage (REST; GraphQL's CreditUsageSeries has the same fields)."""
    return {
        "featureId": s.feature_id, "featureName": s.feature_name, "tags": _tags(s.tags),
        "totalCredits": amount_out(s.units), "eventCount": s.events,
        "points": [{"timestamp": iso(p.at), "value": amount_out(p.units),
                    "eventCount": p.events} for p in s.points],
    }


@get("/api/v1/credits/usage/dimensions")
async def dimension_keys(
    request: Request,
    customer_id: Annotated[str | None, Q(name="customerId")] = None,
    search: FromQuery[str | None] = None,
    limit: FromQuery[int | None] = None,
) -> Response:
    """The dimension keys seen in a customer's usage (for a group-by picker), matching
    `search` as a prefix, case-insensitively."""
    keys = await analytics.dimension_keys(domain(request), environment(request), customer_id,
                                          search, limit_in(limit, default=100))
    return ok({"customerId": customer_id, "keys": keys})


@get("/api/v1/usage/{customer_id:str}/history/{feature_id:str}")
async def usage_history(
    request: Request,
    customer_id: FromPath[str],
    feature_id: FromPath[str],
    start_date: Annotated[str | None, Q(name="startDate")] = None,
    end_date: Annotated[str | None, Q(name="endDate")] = None,
    group_by: Annotated[str | None, Q(name="groupBy")] = None,
    resource_id: Annotated[str | None, Q(name="resourceId")] = None,
) -> Response:
    """A feature's usage over time: at each point, the usage reached by its end (the
    running total of every change before it), per value of the `groupBy` dimension."""
    series = await analytics.usage_history(domain(request), environment(request),
                                           analytics.HistoryQuery(
        customer_id=customer_id, feature_id=feature_id,
        start=parse_time(start_date, "startDate"), end=parse_time(end_date, "endDate"),
        group_by=group_by, resource_id=resource_id))
    return ok(history_json(series))


def history_json(series: list[analytics.HistorySeries]) -> dict[str, Any]:
    """A feature's usage history (REST; GraphQL's UsageHistoryV2 has the same fields)."""
    # Counters have no reset periods yet (they come with plans), so there are no markers.
    return {"markers": [], "series": [{
        "tags": _tags(s.tags),
        "points": [{"timestamp": iso(p.at), "value": amount_out(p.units),
                    "isResetPoint": False} for p in s.points],
    } for s in series]}


ROUTES = [credit_usage, dimension_keys, usage_history]
