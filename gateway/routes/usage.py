"""Usage reporting (calculated usage), raw events and their cost estimates: the wire
forms of engine/domain/usage.py (which holds every rule: batches checked whole, usage
windows, refusals naming `usages[i].field`)."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any, Literal

import msgspec
from litestar import Request, Response, post

from engine.domain import usage
from engine.domain.constraints import IdempotencyKey, ItemsOf, NonEmpty, Reference
from gateway.context import domain, environment, ok
from gateway.openapi import request_body
from gateway.routes.hot import hot_post
from gateway.wire import (
    Dimensions,
    amount_out,
    decode_body,
    dimensions_in,
    iso,
    parse_time,
    signed_amount_in,
)

__all__ = ["ROUTES"]


class UsageItem(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    customer_id: Reference
    feature_id: Reference
    value: Decimal
    created_at: str | None = None
    dimensions: Dimensions | None = None
    idempotency_key: IdempotencyKey | None = None
    resource_id: str | None = None
    update_behavior: Literal["DELTA", "SET"] = "DELTA"


class UsageBody(msgspec.Struct, forbid_unknown_fields=True):
    usages: ItemsOf(UsageItem, usage.ITEMS_MAX)


class EventItem(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    customer_id: Reference
    event_name: NonEmpty
    idempotency_key: IdempotencyKey
    dimensions: Dimensions | None = None
    resource_id: str | None = None
    timestamp: str | None = None


class EventsBody(msgspec.Struct, forbid_unknown_fields=True):
    events: ItemsOf(EventItem, usage.ITEMS_MAX)


def _usage_input(item: UsageItem, at: str) -> usage.UsageInput:
    return usage.UsageInput(
        customer_id=item.customer_id, feature_id=item.feature_id,
        value=signed_amount_in(item.value, f"{at}.value"),
        set_value=item.update_behavior == "SET",
        created_at=parse_time(item.created_at, f"{at}.createdAt"),
        dimensions=dimensions_in(item.dimensions, f"{at}.dimensions"),
        idempotency_key=item.idempotency_key, resource_id=item.resource_id)


async def _report(request: Request, raw: bytes
                  ) -> tuple[list[UsageItem], usage.UsageReport]:
    body = await decode_body(request, UsageBody, raw)
    usage.check_batch(body.usages, "usages")  # before converting a batch that is too long
    items = [_usage_input(item, f"usages[{i}]") for i, item in enumerate(body.usages)]
    return body.usages, await usage.report_usage(domain(request), environment(request), items)


def _limit(b: Any) -> dict[str, Any]:
    """A pool's usage against its limit, as both usage answers show it."""
    return {"currentUsage": amount_out(b.total_consumed),
            "usageLimit": amount_out(b.total_consumed + max(b.current_balance, 0)),
            "timestamp": iso(b.timestamp), "usagePeriodEnd": None}


def _usage_json(item: UsageItem, result: Any, v1: bool,
                window: tuple[int, int] | None = None) -> dict[str, Any]:
    credit: dict[str, Any] | None = None
    if result.currency_id is not None:
        if not v1:
            credit = {"consumed": amount_out(result.consumed), "currencyId": result.currency_id}
        elif result.balance is not None:
            credit = {"consumed": amount_out(result.consumed),
                      "currencyId": result.currency_id, **_limit(result.balance)}
    return {
        "id": item.idempotency_key or str(uuid.uuid4()),
        "customerId": item.customer_id, "featureId": item.feature_id,
        "resourceId": item.resource_id, "value": item.value,
        "currentUsage": amount_out(result.usage.current_usage),
        "createdAt": item.created_at or iso(result.timestamp),
        "timestamp": iso(result.timestamp),
        "credit": credit,
        "nextResetDate": iso(window[1]) if window is not None else None,
        "usagePeriodStart": iso(window[0]) if window is not None else None,
        "usagePeriodEnd": iso(window[1]) if window is not None else None,
    }


@hot_post("/api/v2/usage", UsageBody)
async def report_usage_v2(request: Request, raw: bytes) -> dict[str, Any]:
    items, report = await _report(request, raw)
    credits = [{"customerId": customer, "currencyId": currency, "resourceId": resource,
                **_limit(b)}
               for (customer, currency, resource), b in report.balances.items()]
    return {"usages": [_usage_json(item, r, False, w)
                       for item, r, w in zip(items, report.results, report.windows)],
            "credits": credits, "entities": []}


@hot_post("/api/v1/usage", UsageBody)
async def report_usage_v1(request: Request, raw: bytes) -> list[dict[str, Any]]:
    items, report = await _report(request, raw)
    return [_usage_json(item, r, True, w)
            for item, r, w in zip(items, report.results, report.windows)]


@hot_post("/api/v1/events", EventsBody)
async def report_events(request: Request, raw: bytes) -> dict[str, Any]:
    body = await decode_body(request, EventsBody, raw)
    usage.check_batch(body.events, "events")
    items = [usage.EventInput(
        customer_id=e.customer_id, event_name=e.event_name, idempotency_key=e.idempotency_key,
        timestamp=parse_time(e.timestamp, f"events[{i}].timestamp"),
        dimensions=dimensions_in(e.dimensions, f"events[{i}].dimensions"),
        resource_id=e.resource_id) for i, e in enumerate(body.events)]
    report = await usage.report_events(domain(request), environment(request), items)
    credits = [{"customerId": customer_id, "currencyId": b.currency_id,
                "resourceId": b.resource_id, "consumed": amount_out(b.consumed),
                "uncovered": amount_out(b.uncovered)} for customer_id, b in report.burns]
    return {"accepted": report.accepted, "duplicates": report.duplicates,
            "credits": credits}


# -- estimates -----------------------------------------------------------------------------


class UsageEstimateBody(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    customer_id: Reference
    feature_id: Reference
    value: Decimal
    dimensions: Dimensions | None = None
    resource_id: str | None = None
    update_behavior: Literal["DELTA", "SET"] = "DELTA"


class EventEstimateBody(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    customer_id: Reference
    event_name: NonEmpty
    dimensions: Dimensions | None = None
    resource_id: str | None = None


def estimates_json(found: usage.Estimates) -> dict[str, Any]:
    return {"estimates": [{
        "currencyId": e.currency_id, "currentBalance": amount_out(e.current_balance),
        "estimatedCost": amount_out(e.estimated_cost),
        "balanceAfterEstimate": amount_out(e.balance_after),
        "wouldOverdraft": e.would_overdraft,
        "breakdown": [{"featureId": line.feature_id, "cost": amount_out(line.cost),
                       **({"warningCode": line.warning} if line.warning else {})}
                      for line in e.lines],
    } for e in found.estimates], "warnings": found.warnings}


@post("/api/v1/usage/estimate", opt=request_body(UsageEstimateBody))
async def estimate_usage(request: Request) -> Response:
    """The credits a usage report would burn, recording nothing."""
    body = await decode_body(request, UsageEstimateBody)
    dimensions_in(body.dimensions, "dimensions")
    value = signed_amount_in(body.value, "value")
    return ok(estimates_json(await usage.estimate_usage(
        domain(request), environment(request), usage.UsageEstimateInput(
            customer_id=body.customer_id, feature_id=body.feature_id, value=value,
            set_value=body.update_behavior == "SET", resource_id=body.resource_id))))


@post("/api/v1/events/estimate", opt=request_body(EventEstimateBody))
async def estimate_event(request: Request) -> Response:
    """The credits an event would burn through every meter it matches, recording nothing."""
    body = await decode_body(request, EventEstimateBody)
    return ok(estimates_json(await usage.estimate_event(
        domain(request), environment(request), usage.EventEstimateInput(
            customer_id=body.customer_id, event_name=body.event_name,
            dimensions=dimensions_in(body.dimensions, "dimensions"),
            resource_id=body.resource_id))))


ROUTES = [report_usage_v2, report_usage_v1, report_events, estimate_usage, estimate_event]
