"""Usage, events and their cost estimates.

    reportUsage        usage.report_usage
    reportUsageBulk    usage.report_usage (a batch, checked whole)
    reportEvent        usage.report_events
    estimateUsageCost  usage.estimate_usage
    estimateEventCost  usage.estimate_event
    usageHistoryV2     analytics.usage_history
"""

from __future__ import annotations

import uuid
from typing import Any

from graphql import GraphQLResolveInfo

from engine.domain import analytics, usage
from engine.domain.errors import bad_input
from engine.domain.values import time_in
from engine.times import iso
from gateway.graphql.resolvers.common import context
from gateway.graphql.resolvers.credits import group_by_in, time_field_in
from gateway.routes.analytics import history_json
from gateway.routes.credits import credit_json
from gateway.routes.usage import estimates_json
from gateway.wire import amount_out, dimensions_in, signed_amount_in

__all__ = ["MUTATIONS", "QUERIES"]


def _usage_input(item: dict[str, Any], at: str) -> usage.UsageInput:
    return usage.UsageInput(
        customer_id=item["customerId"], feature_id=item["featureId"],
        value=signed_amount_in(item["value"], f"{at}value"),
        set_value=item.get("updateBehavior") == "SET",
        created_at=time_in(item.get("createdAt"), f"{at}createdAt"),
        dimensions=dimensions_in(item.get("dimensions"), f"{at}dimensions"),
        idempotency_key=item.get("idempotencyKey"), resource_id=item.get("resourceId"))


def _measurement(item: dict[str, Any], result: Any, window: Any, env: str) -> dict[str, Any]:
    """Stigg's UsageMeasurementWithCurrentUsage for one reported item."""
    credit = None
    if result.currency_id is not None and result.balance is not None:
        credit = {"consumed": amount_out(result.consumed), **credit_json(result.balance)}
    return {
        "id": item.get("idempotencyKey") or str(uuid.uuid4()),
        "customerId": item["customerId"], "featureId": item["featureId"],
        "resourceId": item.get("resourceId"), "environmentId": env, "value": item["value"],
        "currentUsage": amount_out(result.usage.current_usage),
        "createdAt": item.get("createdAt") or iso(result.timestamp),
        "timestamp": iso(result.timestamp), "credit": credit,
        "nextResetDate": iso(window[1]) if window is not None else None,
        "usagePeriodStart": iso(window[0]) if window is not None else None,
        "usagePeriodEnd": iso(window[1]) if window is not None else None,
    }


async def report_usage(_: Any, info: GraphQLResolveInfo, input: dict) -> dict:
    d, env = context(info)
    report = await usage.report_usage(d, env, [_usage_input(input, "")], field="input")
    return _measurement(input, report.results[0], report.windows[0], env)


async def report_usage_bulk(_: Any, info: GraphQLResolveInfo, input: dict) -> list:
    d, env = context(info)
    given = input["usages"]
    usage.check_batch(given, "usages")
    items = [_usage_input(u, f"usages[{i}].") for i, u in enumerate(given)]
    report = await usage.report_usage(d, env, items, field="usages")
    return [_measurement(item, r, w, env)
            for item, r, w in zip(given, report.results, report.windows, strict=True)]


async def report_event(_: Any, info: GraphQLResolveInfo, events: dict) -> None:
    d, env = context(info)
    usage.check_batch(events["usageEvents"], "usageEvents")
    items = [usage.EventInput(
        customer_id=e["customerId"], event_name=e["eventName"],
        idempotency_key=e["idempotencyKey"], resource_id=e.get("resourceId"),
        dimensions=dimensions_in(e.get("dimensions"), f"usageEvents[{i}].dimensions"),
        timestamp=time_in(e.get("timestamp"), f"usageEvents[{i}].timestamp"))
        for i, e in enumerate(events["usageEvents"])]
    await usage.report_events(d, env, items, field="usageEvents")


# -- estimates -----------------------------------------------------------------------------

async def estimate_usage_cost(_: Any, info: GraphQLResolveInfo, input: dict) -> dict:
    d, env = context(info)
    dimensions_in(input.get("dimensions"), "dimensions")
    return estimates_json(await usage.estimate_usage(d, env, usage.UsageEstimateInput(
        customer_id=input["customerId"], feature_id=input["featureId"],
        value=signed_amount_in(input["value"], "value"),
        set_value=input.get("updateBehavior") == "SET", resource_id=input.get("resourceId"))))


async def estimate_event_cost(_: Any, info: GraphQLResolveInfo, input: dict) -> dict:
    d, env = context(info)
    return estimates_json(await usage.estimate_event(d, env, usage.EventEstimateInput(
        customer_id=input["customerId"], event_name=input["eventName"],
        dimensions=dimensions_in(input.get("dimensions"), "dimensions"),
        resource_id=input.get("resourceId"))))


# -- usage history -------------------------------------------------------------------------

async def usage_history_v2(_: Any, info: GraphQLResolveInfo, input: dict) -> dict:
    d, env = context(info)
    # The domain answers every series of the range at once (one per value of the groupBy
    # dimensions; no cursors to page them by): a `paging` is refused rather than ignored.
    if input.get("paging"):
        raise bad_input("usage history is answered whole, every series at once; "
                        "leave paging out", "paging")
    # includeInactiveSubscriptions changes nothing: usage is counted per customer and
    # feature whichever subscription granted it, so every change is in the history.
    series = await analytics.usage_history(d, env, analytics.HistoryQuery(
        customer_id=input["customerId"], feature_id=input["featureId"],
        start=time_field_in(input["startDate"], "startDate"),
        end=time_field_in(input.get("endDate"), "endDate"),
        group_by=group_by_in(input.get("groupBy")), resource_id=input.get("resourceId")))
    # pageInfo (nullable) stays null: there is one page.
    return history_json(series)


QUERIES = {"estimateUsageCost": estimate_usage_cost, "estimateEventCost": estimate_event_cost,
           "usageHistoryV2": usage_history_v2}
MUTATIONS = {"reportUsage": report_usage, "reportUsageBulk": report_usage_bulk,
             "reportEvent": report_event}
