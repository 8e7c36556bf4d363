"""Usage reporting (calculated usage), raw events, and cost estimates.

Calculated usage (`POST /api/v2/usage`, `/api/v1/usage`): the batch is validated whole
(the error names `usages[i].field`); then each customer's measurements are applied by its
actor as one atomic step, credit burn included, and the answer carries the new balances.
Raw events (`POST /api/v1/events`): validated whole, matched against every metered feature
of the environment here, then applied per customer (`engine.core.usage`); the answer comes
once they are durable, so an accepted event has already moved the balance.

Reset periods: for a feature whose entitlement resets (`engine.domain.entitlements`), each
measurement and metered event carries the start of the customer's current usage window,
so the engine restarts the counter at the boundary; the answer names the window
(`usagePeriodStart/End`, `nextResetDate`).
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from decimal import Decimal
from typing import Any, Literal

import anyio
import msgspec
from litestar import Request, Response, post

from engine.core.commands import (
    BalancesReply,
    BalanceView,
    EventsReply,
    GetBalances,
    IngestEvents,
    Measurement,
    Metered,
    MeteredEvent,
    Refused,
    ReportUsage,
    UsageReply,
)
from engine.core.meters import ADDITIVE, contribution, matches
from engine.core.usage import burn_units
from engine.domain.entitlements import effective_entitlements, period_starts, usage_of
from gateway.context import domain, environment, ok, services
from gateway.errors import ApiError, bad_input, from_refusal
from gateway.openapi import request_body
from gateway.routes.common import (
    check_key,
    engine_id,
    require_customer,
    scoped_key,
)
from gateway.routes.features import credit_rate_units, require_feature
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

ITEMS_MAX = 1000


class UsageItem(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    customer_id: str
    feature_id: str
    value: Decimal
    created_at: str | None = None
    dimensions: Dimensions | None = None
    idempotency_key: str | None = None
    resource_id: str | None = None
    update_behavior: Literal["DELTA", "SET"] = "DELTA"


class UsageBody(msgspec.Struct, forbid_unknown_fields=True):
    usages: list[UsageItem]


class EventItem(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    customer_id: str
    event_name: str
    idempotency_key: str
    dimensions: Dimensions | None = None
    resource_id: str | None = None
    timestamp: str | None = None


class EventsBody(msgspec.Struct, forbid_unknown_fields=True):
    events: list[EventItem]


def _batch(items: list[Any], field: str) -> None:
    if not 1 <= len(items) <= ITEMS_MAX:
        raise bad_input(f"must hold 1 to {ITEMS_MAX} items", field)


def _renumber(refused: Refused, indexes: list[int], name: str) -> ApiError:
    """The engine names a measurement by its index in the customer's group; the client
    sent it at another index of the whole batch."""
    error = from_refusal(refused)
    field = refused.field or ""
    prefix = f"{name}["
    if field.startswith(prefix):
        local, _, rest = field[len(prefix):].partition("]")
        if local.isdigit():
            error.field = f"{name}[{indexes[int(local)]}]{rest}"
    return error


Windows = dict[str, tuple[int, int]]


async def _windows(request: Request, customer_id: str, resource_id: str | None,
                   cache: dict[tuple[str, str | None], Windows]) -> Windows:
    """The current usage window of each of the customer's resetting features."""
    key = (customer_id, resource_id)
    found = cache.get(key)
    if found is None:
        svc = services(request)
        sources = await effective_entitlements(svc.domain, environment(request), customer_id,
                                               resource_id, svc.clock.now_ms())
        found = cache[key] = period_starts(sources)
    return found


async def _measurements(request: Request) -> tuple[list[UsageItem], dict[str, list[int]],
                                                   dict[str, list[Measurement]], list[Any]]:
    """Validate the whole usage batch; group it by customer (in first-seen order). Also
    the usage window of each item (None: its feature does not reset)."""
    body = await decode_body(request, UsageBody)
    _batch(body.usages, "usages")
    env = environment(request)
    windows: dict[tuple[str, str | None], Windows] = {}
    item_windows: list[Any] = []
    indexes: dict[str, list[int]] = defaultdict(list)
    groups: dict[str, list[Measurement]] = defaultdict(list)
    checked: set[str] = set()
    features: dict[str, dict[str, Any]] = {}
    for i, item in enumerate(body.usages):
        at = f"usages[{i}]"
        if item.customer_id not in checked:
            await require_customer(request, item.customer_id, field=f"{at}.customerId")
            checked.add(item.customer_id)
        feature = features.get(item.feature_id)
        if feature is None:
            feature = features[item.feature_id] = await require_feature(
                request, item.feature_id, field=f"{at}.featureId")
        if feature["featureType"] != "NUMBER":
            raise bad_input(f"feature {item.feature_id!r} is {feature['featureType']}, "
                            "not a NUMBER feature that can be metered", f"{at}.featureId")
        value = signed_amount_in(item.value, f"{at}.value")
        if item.update_behavior == "SET" and value < 0:
            raise bad_input("a SET value must not be negative", f"{at}.value")
        if item.idempotency_key is not None:
            check_key(item.idempotency_key, f"{at}.idempotencyKey")
        dimensions_in(item.dimensions, f"{at}.dimensions")
        rate = credit_rate_units(feature)
        customer = engine_id(env, item.customer_id)
        window = (await _windows(request, item.customer_id, item.resource_id,
                                 windows)).get(item.feature_id)
        item_windows.append(window)
        indexes[customer].append(i)
        groups[customer].append(Measurement(
            feature_id=item.feature_id, value=value, set_value=item.update_behavior == "SET",
            resource_id=item.resource_id,
            created_at=parse_time(item.created_at, f"{at}.createdAt"),
            dimensions=item.dimensions,
            currency_id=rate[0] if rate else None, credit_rate=rate[1] if rate else None,
            idempotency_key=(None if item.idempotency_key is None
                             else scoped_key("usage", item.idempotency_key)),
            period_start=window[0] if window is not None else None))
    return body.usages, indexes, groups, item_windows


async def _report(request: Request) -> tuple[list[UsageItem], list[Any], dict[tuple, Any],
                                             list[Any]]:
    """Apply a usage batch; the per-item results and the balances they left, per pool,
    and each item's usage window."""
    items, indexes, groups, windows = await _measurements(request)
    runtime = services(request).runtime
    results: list[Any] = [None] * len(items)
    balances: dict[tuple, BalanceView] = {}
    # One customer's measurements at a time, in batch order: a refusal stops the batch
    # (the error names the item); customers before it stay applied (docs/api.md).
    for customer, group in groups.items():
        reply = await runtime.submit(customer, ReportUsage(measurements=tuple(group)))
        if isinstance(reply, Refused):
            raise _renumber(reply, indexes[customer], "usages")
        assert isinstance(reply, UsageReply)
        for i, result in zip(indexes[customer], reply.results):
            results[i] = result
            if result.balance is not None:
                b = result.balance
                balances[(items[i].customer_id, b.currency_id, b.resource_id)] = b
    return items, results, balances, windows


def _credit_v1(result: Any) -> dict[str, Any] | None:
    b = result.balance
    if result.currency_id is None or b is None:
        return None
    return {"consumed": amount_out(result.consumed), "currencyId": result.currency_id,
            "currentUsage": amount_out(b.total_consumed),
            "usageLimit": amount_out(b.total_consumed + max(b.current_balance, 0)),
            "timestamp": iso(b.timestamp), "usagePeriodEnd": None}


def _usage_json(item: UsageItem, result: Any, v1: bool,
                window: tuple[int, int] | None = None) -> dict[str, Any]:
    credit: dict[str, Any] | None
    if v1:
        credit = _credit_v1(result)
    else:
        credit = None if result.currency_id is None else {
            "consumed": amount_out(result.consumed), "currencyId": result.currency_id}
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


@post("/api/v2/usage", opt=request_body(UsageBody))
async def report_usage_v2(request: Request) -> Response:
    items, results, balances, windows = await _report(request)
    credits = [{"customerId": customer, "currencyId": currency, "resourceId": resource,
                "currentUsage": amount_out(b.total_consumed),
                "usageLimit": amount_out(b.total_consumed + max(b.current_balance, 0)),
                "timestamp": iso(b.timestamp), "usagePeriodEnd": None}
               for (customer, currency, resource), b in balances.items()]
    return ok({"usages": [_usage_json(item, r, False, w)
                          for item, r, w in zip(items, results, windows)],
               "credits": credits, "entities": []})


@post("/api/v1/usage", opt=request_body(UsageBody))
async def report_usage_v1(request: Request) -> Response:
    items, results, _, windows = await _report(request)
    return ok([_usage_json(item, r, True, w) for item, r, w in zip(items, results, windows)])


# -- raw events ----------------------------------------------------------------------------


def _metered(metered: list[tuple[dict[str, Any], Any]], event_name: str,
             dims: dict[str, Any], windows: Windows | None = None) -> tuple[Metered, ...]:
    """What an event means for each metered feature it matches (with the customer's
    current usage window of the feature, when its entitlement resets)."""
    out = []
    for doc, meter in metered:
        if not matches(meter, event_name, dims):
            continue
        value = contribution(meter, dims)
        if value is None:
            continue  # matched, but lacks the aggregated field: nothing to add
        rate = credit_rate_units(doc)
        window = windows.get(doc["id"]) if windows else None
        out.append(Metered(doc["id"], meter.aggregation.function.value, value,
                           rate[0] if rate else None, rate[1] if rate else None,
                           window[0] if window is not None else None))
    return tuple(out)


EVENT_FUTURE_MS_MAX = 24 * 3_600_000  # clocks drift; a day ahead is a mistake


@post("/api/v1/events", opt=request_body(EventsBody))
async def report_events(request: Request) -> Response:
    body = await decode_body(request, EventsBody)
    _batch(body.events, "events")
    env = environment(request)
    catalog = services(request).catalog
    metered = await catalog.metered_features(env)
    now = catalog.now_ms()
    groups: dict[str, list[MeteredEvent]] = defaultdict(list)
    checked: set[str] = set()  # customers known to exist (a batch names few, many times)
    windows: dict[tuple[str, str | None], Windows] = {}
    for i, item in enumerate(body.events):
        at = f"events[{i}]"
        if item.customer_id not in checked:
            await require_customer(request, item.customer_id, field=f"{at}.customerId")
            checked.add(item.customer_id)
        if not item.event_name:
            raise bad_input("must not be empty", f"{at}.eventName")
        check_key(item.idempotency_key, f"{at}.idempotencyKey")
        dimensions_in(item.dimensions, f"{at}.dimensions")
        ts = parse_time(item.timestamp, f"{at}.timestamp")
        if ts is None:
            ts = now
        elif ts > now + EVENT_FUTURE_MS_MAX:
            raise bad_input("is more than a day in the future", f"{at}.timestamp")
        dims = item.dimensions or {}
        groups[engine_id(env, item.customer_id)].append(MeteredEvent(
            key=item.idempotency_key, event_name=item.event_name, timestamp=ts,
            resource_id=item.resource_id, dimensions=item.dimensions,
            metered=_metered(metered, item.event_name, dims,
                             await _windows(request, item.customer_id, item.resource_id,
                                            windows) if metered else None)))
    runtime = services(request).runtime
    replies: dict[str, EventsReply] = {}

    async def ingest(customer: str, events: list[MeteredEvent]) -> None:
        reply = await runtime.submit(customer, IngestEvents(events=tuple(events)))
        assert isinstance(reply, EventsReply), reply
        replies[customer] = reply

    # Customers are independent: their actors apply their events concurrently.
    async with anyio.create_task_group() as tg:
        for customer, events in groups.items():
            tg.start_soon(ingest, customer, events)
    credits = [{"customerId": customer.split("/", 1)[1], "currencyId": b.currency_id,
                "resourceId": b.resource_id, "consumed": amount_out(b.consumed),
                "uncovered": amount_out(b.uncovered)}
               for customer, reply in replies.items() for b in reply.burns]
    return ok({"accepted": sum(r.accepted for r in replies.values()),
               "duplicates": sum(r.duplicates for r in replies.values()),
               "credits": credits})


# -- estimates -----------------------------------------------------------------------------


class UsageEstimateBody(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    customer_id: str
    feature_id: str
    value: Decimal
    dimensions: Dimensions | None = None
    resource_id: str | None = None
    update_behavior: Literal["DELTA", "SET"] = "DELTA"


class EventEstimateBody(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    customer_id: str
    event_name: str
    dimensions: Dimensions | None = None
    resource_id: str | None = None


async def _balance(request: Request, customer: str, currency_id: str,
                   resource_id: str | None) -> int:
    reply = await services(request).runtime.submit(customer, GetBalances(
        currency_id=currency_id, resource_id=resource_id, match_resource=True))
    assert isinstance(reply, BalancesReply)
    return reply.balances[0].current_balance if reply.balances else 0


async def _estimates(request: Request, customer: str, resource_id: str | None,
                     costs: list[tuple[str, str, int, str | None]]) -> list[dict[str, Any]]:
    """CostEstimate entries per currency from (currency, feature, cost, warning) lines."""
    by_currency: dict[str, list[tuple[str, int, str | None]]] = defaultdict(list)
    for currency, feature, cost, warning in costs:
        by_currency[currency].append((feature, cost, warning))
    estimates = []
    for currency, lines in by_currency.items():
        current = await _balance(request, customer, currency, resource_id)
        total = sum(cost for _, cost, _ in lines)
        estimates.append({
            "currencyId": currency, "currentBalance": amount_out(current),
            "estimatedCost": amount_out(total),
            "balanceAfterEstimate": amount_out(current - total),
            "wouldOverdraft": total > current,
            "breakdown": [{"featureId": f, "cost": amount_out(c),
                           **({"warningCode": w} if w else {})} for f, c, w in lines],
        })
    return estimates


@post("/api/v1/usage/estimate", opt=request_body(UsageEstimateBody))
async def estimate_usage(request: Request) -> Response:
    """The credits a usage report would burn, recording nothing."""
    body = await decode_body(request, UsageEstimateBody)
    dimensions_in(body.dimensions, "dimensions")
    await require_customer(request, body.customer_id)
    value = signed_amount_in(body.value, "value")
    env = environment(request)
    customer = engine_id(env, body.customer_id)
    feature = await services(request).catalog.get("features", env, body.feature_id)
    if feature is None or feature.get("_archivedAt") is not None:
        return ok({"estimates": [], "warnings": ["FEATURE_NOT_FOUND"]})
    rate = credit_rate_units(feature)
    if rate is None:
        return ok({"estimates": [], "warnings": ["FEATURE_NOT_CREDIT_BASED"]})
    delta = value
    if body.update_behavior == "SET":
        window = (await _windows(request, body.customer_id, body.resource_id, {})).get(
            body.feature_id)
        usage = await usage_of(domain(request), env, body.customer_id, body.resource_id,
                               {body.feature_id: window} if window else {})
        current = usage.get(body.feature_id, (0, 0))[0]
        delta = value - current
    cost = burn_units(delta, rate[1]) if delta > 0 else 0
    estimates = await _estimates(request, customer, body.resource_id,
                                 [(rate[0], body.feature_id, cost, None)])
    return ok({"estimates": estimates, "warnings": []})


@post("/api/v1/events/estimate", opt=request_body(EventEstimateBody))
async def estimate_event(request: Request) -> Response:
    """The credits an event would burn through every meter it matches, recording nothing."""
    body = await decode_body(request, EventEstimateBody)
    dimensions_in(body.dimensions, "dimensions")
    await require_customer(request, body.customer_id)
    env = environment(request)
    metered = await services(request).catalog.metered_features(env)
    lines = []
    warnings = []
    matched = _metered(metered, body.event_name, body.dimensions or {})
    for m in matched:
        if m.currency_id is None or m.credit_rate is None:
            continue
        if m.function in ADDITIVE:
            assert isinstance(m.value, int)
            lines.append((m.currency_id, m.feature_id,
                          burn_units(max(m.value, 0), m.credit_rate), None))
        else:
            lines.append((m.currency_id, m.feature_id, 0, "UNSUPPORTED_AGGREGATION"))
    if not matched:
        warnings.append("FEATURE_NOT_FOUND")
    elif not lines:
        warnings.append("FEATURE_NOT_CREDIT_BASED")
    estimates = await _estimates(request, engine_id(env, body.customer_id), body.resource_id,
                                 lines)
    return ok({"estimates": estimates, "warnings": warnings})


ROUTES = [report_usage_v2, report_usage_v1, report_events, estimate_usage, estimate_event]
