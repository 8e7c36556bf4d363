"""Promotional entitlements: feature access granted to one customer outside their plan.

`POST /api/v1/customers/{id}/promotional-entitlements` grants several at once (validated
whole, written in one transaction); granting again for the same feature replaces the
previous grant. The period ('1 week', '1 month', '6 month', '1 year', 'lifetime', or
'custom' with `customEndDate`) runs from the moment of the grant by the server's clock;
at its end date the promotion is Expired: it stops counting in the customer's entitlements
(`gateway.entitlements_state`) and lists with status Expired. `DELETE …/{featureId}`
revokes it at once (it is then no longer listed). A promotion adds to what the customer's
subscriptions grant for the feature: its usage limit adds to theirs, unlimited wins.

Stored in `promotional_entitlements` (one row per environment, customer and feature);
the document holds the wire fields plus `_startDate`/`_endDate` (ms) and the stamps.
"""

from __future__ import annotations

import uuid
from typing import Any, Literal

import msgspec
from litestar import Request, Response, delete, get, post
from litestar.params import FromPath, FromQuery

from engine.billing.periods import ANCHORS, WEEK_MS, add_months
from gateway.catalog import parse_cursor
from gateway.context import environment, ok, services
from gateway.entitlements_cache import invalidate
from gateway.entitlements_state import promotions_of
from gateway.errors import ApiError, bad_input
from gateway.openapi import request_body
from gateway.routes.common import require_customer
from gateway.routes.features import require_feature
from gateway.wire import created_at_bounds, decode_body, iso, limit_in, parse_time

__all__ = ["ROUTES", "promotion_json", "promotion_status"]

_BASE = "/api/v1/customers/{customer_id:str}/promotional-entitlements"
ITEMS_MAX = 100
USAGE_LIMIT_MAX = 10**12

_json = msgspec.json.Encoder(order="deterministic").encode
Period = Literal["1 week", "1 month", "6 month", "1 year", "lifetime", "custom"]
ResetPeriod = Literal["YEAR", "MONTH", "WEEK", "DAY", "HOUR"]


class AnchorConfig(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    according_to: str


class PromotionIn(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    feature_id: str
    period: Period
    custom_end_date: str | None = None
    enum_values: list[str] | None = None
    has_soft_limit: bool | None = None
    has_unlimited_usage: bool | None = None
    is_visible: bool | None = None
    reset_period: ResetPeriod | None = None
    usage_limit: int | None = None
    monthly_reset_period_configuration: AnchorConfig | None = None
    weekly_reset_period_configuration: AnchorConfig | None = None
    yearly_reset_period_configuration: AnchorConfig | None = None
    description: str | None = None  # extension


class PromotionsBody(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    promotional_entitlements: list[PromotionIn]


def promotion_status(doc: dict[str, Any], now: int) -> str:
    end = doc.get("_endDate")
    return "Expired" if end is not None and now >= end else "Active"


def promotion_json(doc: dict[str, Any], env: str, now: int) -> dict[str, Any]:
    return {
        "id": doc["id"],
        "featureId": doc["featureId"],
        "environmentId": env,
        "description": doc.get("description"),
        "period": doc["period"],
        "startDate": iso(doc["_startDate"]),
        "endDate": iso(doc.get("_endDate")),
        "status": promotion_status(doc, now),
        "usageLimit": doc.get("usageLimit"),
        "hasUnlimitedUsage": doc.get("hasUnlimitedUsage"),
        "hasSoftLimit": doc.get("hasSoftLimit"),
        "resetPeriod": doc.get("resetPeriod"),
        "resetPeriodConfiguration": doc.get("resetPeriodConfiguration"),
        "enumValues": doc.get("enumValues"),
        "isVisible": doc.get("isVisible", True),
        "featureGroupIds": None,
        "createdAt": iso(doc["_createdAt"]),
        "updatedAt": iso(doc["_updatedAt"]),
    }


def _end_date(item: PromotionIn, now: int, at: str) -> int | None:
    if item.period == "custom":
        end = parse_time(item.custom_end_date, f"{at}.customEndDate")
        if end is None:
            raise bad_input("is required with period 'custom'", f"{at}.customEndDate")
        if end <= now:
            raise bad_input("must be in the future", f"{at}.customEndDate")
        return end
    if item.custom_end_date is not None:
        raise bad_input("is only for period 'custom'", f"{at}.customEndDate")
    if item.period == "lifetime":
        return None
    if item.period == "1 week":
        return now + WEEK_MS
    return add_months(now, {"1 month": 1, "6 month": 6, "1 year": 12}[item.period])


_CONFIGS = {"MONTH": "monthlyResetPeriodConfiguration",
            "WEEK": "weeklyResetPeriodConfiguration",
            "YEAR": "yearlyResetPeriodConfiguration"}


def _reset(item: PromotionIn, at: str) -> dict[str, Any] | None:
    given = {"MONTH": item.monthly_reset_period_configuration,
             "WEEK": item.weekly_reset_period_configuration,
             "YEAR": item.yearly_reset_period_configuration}
    for period, config in given.items():
        if config is not None and item.reset_period != period:
            raise bad_input(f"is only for resetPeriod {period}", f"{at}.{_CONFIGS[period]}")
    if item.reset_period is None:
        return None
    config = given.get(item.reset_period)
    if config is None:
        return None
    if config.according_to not in ANCHORS[item.reset_period]:
        raise bad_input(f"must be one of {', '.join(ANCHORS[item.reset_period])}",
                        f"{at}.{_CONFIGS[item.reset_period]}.accordingTo")
    return {"accordingTo": config.according_to}


async def _validate(request: Request, item: PromotionIn, at: str, now: int) -> dict[str, Any]:
    feature = await require_feature(request, item.feature_id, field=f"{at}.featureId")
    kind = feature["featureType"]
    if item.usage_limit is not None:
        if kind != "NUMBER":
            raise bad_input(f"only a NUMBER feature has a usage limit ({item.feature_id!r} is "
                            f"{kind})", f"{at}.usageLimit")
        if not 0 <= item.usage_limit <= USAGE_LIMIT_MAX:
            raise bad_input(f"must be from 0 to {USAGE_LIMIT_MAX}", f"{at}.usageLimit")
    if item.has_unlimited_usage and item.usage_limit is not None:
        raise bad_input("give usageLimit or hasUnlimitedUsage, not both", f"{at}.usageLimit")
    if kind == "NUMBER" and item.usage_limit is None and not item.has_unlimited_usage:
        raise bad_input("a NUMBER feature needs usageLimit or hasUnlimitedUsage",
                        f"{at}.usageLimit")
    if item.reset_period is not None and kind != "NUMBER":
        raise bad_input("only a NUMBER feature's usage resets", f"{at}.resetPeriod")
    if item.enum_values is not None:
        if kind != "ENUM":
            raise bad_input(f"only an ENUM feature has values ({item.feature_id!r} is {kind})",
                            f"{at}.enumValues")
        known = {v.get("value") for v in feature.get("enumConfiguration") or ()}
        unknown = [v for v in item.enum_values if v not in known]
        if unknown:
            raise bad_input(f"not values of feature {item.feature_id!r}: {unknown}",
                            f"{at}.enumValues")
    reset_config = _reset(item, at)
    end = _end_date(item, now, at)
    return {
        "id": str(uuid.uuid4()),
        "featureId": item.feature_id,
        "description": item.description,
        "period": item.period,
        "usageLimit": item.usage_limit,
        "hasUnlimitedUsage": bool(item.has_unlimited_usage),
        "hasSoftLimit": bool(item.has_soft_limit),
        "resetPeriod": item.reset_period,
        "resetPeriodConfiguration": reset_config,
        "enumValues": item.enum_values,
        "isVisible": True if item.is_visible is None else item.is_visible,
        "_startDate": now,
        "_endDate": end,
        "_createdAt": now,
        "_updatedAt": now,
        "_archivedAt": None,
    }


_UPSERT = (
    "INSERT INTO promotional_entitlements (environment, customer_id, feature_id, doc, status, "
    "created_at, updated_at, archived_at) VALUES (?, ?, ?, ?, ?, ?, ?, NULL) "
    "ON CONFLICT (environment, customer_id, feature_id) DO UPDATE SET doc = excluded.doc, "
    "status = excluded.status, created_at = excluded.created_at, "
    "updated_at = excluded.updated_at, archived_at = NULL")


@post(_BASE, opt=request_body(PromotionsBody))
async def grant_promotions(request: Request, customer_id: FromPath[str]) -> Response:
    body = await decode_body(request, PromotionsBody)
    items = body.promotional_entitlements
    if not 1 <= len(items) <= ITEMS_MAX:
        raise bad_input(f"must hold 1 to {ITEMS_MAX} items", "promotionalEntitlements")
    await require_customer(request, customer_id, field="id")
    env = environment(request)
    svc = services(request)
    now = svc.clock.now_ms()
    docs = []
    seen: set[str] = set()
    for i, item in enumerate(items):
        at = f"promotionalEntitlements[{i}]"
        if item.feature_id in seen:
            raise bad_input(f"feature {item.feature_id!r} is granted twice in this request",
                            f"{at}.featureId")
        seen.add(item.feature_id)
        docs.append(await _validate(request, item, at, now))
    await svc.store.transact([(_UPSERT, [
        (env, customer_id, d["featureId"], _json(d).decode(), "Active", now, now)
        for d in docs])])
    invalidate(svc, env, customer_id)
    return ok([promotion_json(d, env, now) for d in docs])


def _cursor(doc: dict[str, Any]) -> str:
    return f"{doc['_createdAt']}.{doc['featureId']}"


def _sort_key(doc: dict[str, Any]) -> tuple[int, str]:
    return doc["_createdAt"], doc["featureId"]


_OPS = {">": lambda a, b: a > b, ">=": lambda a, b: a >= b, "<": lambda a, b: a < b,
        "<=": lambda a, b: a <= b}


@get(_BASE)
async def list_promotions(
    request: Request,
    customer_id: FromPath[str],
    limit: FromQuery[int | None] = None,
    after: FromQuery[str | None] = None,
    before: FromQuery[str | None] = None,
) -> Response:
    """Creation order (then feature id); `status` Active, Expired, Paused (comma-separated
    or repeated), `createdAt[gt|gte|lt|lte]`. A customer holds at most one promotion per
    feature, so the page is cut from the customer's promotions in memory."""
    wanted = {s.strip() for value in request.query_params.getall("status", [])
              for s in value.split(",") if s.strip()}
    if wanted - {"Active", "Expired", "Paused"}:
        raise bad_input("must be Active, Expired or Paused, comma-separated", "status")
    size = limit_in(limit)
    bounds = created_at_bounds(request)
    await require_customer(request, customer_id, field="id", allow_archived=True)
    env = environment(request)
    svc = services(request)
    now = svc.clock.now_ms()
    docs = [d for d in await promotions_of(svc, env, customer_id)
            if d.get("_archivedAt") is None
            and (not wanted or promotion_status(d, now) in wanted)
            and all(_OPS[op](d["_createdAt"], ms) for op, ms in bounds)]
    docs.sort(key=_sort_key)
    if after:
        mark = parse_cursor(after, "after")
        rest = [d for d in docs if _sort_key(d) > mark]
        page = rest[:size]
        nxt = _cursor(page[-1]) if len(rest) > size else None
        prev = _cursor(page[0]) if page else None
    elif before:
        mark = parse_cursor(before, "before")
        rest = [d for d in docs if _sort_key(d) < mark]
        page = rest[-size:]
        prev = _cursor(page[0]) if len(rest) > size else None
        nxt = _cursor(page[-1]) if page else None
    else:
        page = docs[:size]
        nxt = _cursor(page[-1]) if len(docs) > size else None
        prev = None
    return ok([promotion_json(d, env, now) for d in page],
              pagination={"next": nxt, "prev": prev})


@delete(_BASE + "/{feature_id:str}", status_code=200)
async def revoke_promotion(request: Request, customer_id: FromPath[str],
                           feature_id: FromPath[str]) -> Response:
    env = environment(request)
    svc = services(request)
    now = svc.clock.now_ms()
    rows = await svc.store.fetch(
        "SELECT doc FROM promotional_entitlements WHERE environment = ? AND customer_id = ? "
        "AND feature_id = ? AND archived_at IS NULL", env, customer_id, feature_id)
    if not rows:
        await require_customer(request, customer_id, field="id", allow_archived=True)
        raise ApiError(404, "NotFound", f"customer {customer_id!r} has no promotional "
                       f"entitlement for feature {feature_id!r}", "featureId")
    doc = msgspec.json.decode(rows[0][0])
    if doc.get("_endDate") is None or doc["_endDate"] > now:
        doc["_endDate"] = now  # it ends now: the wire shows it Expired from here on
    doc["_archivedAt"] = doc["_updatedAt"] = now
    await svc.store.execute(
        "UPDATE promotional_entitlements SET doc = ?, status = ?, updated_at = ?, "
        "archived_at = ? WHERE environment = ? AND customer_id = ? AND feature_id = ?",
        _json(doc).decode(), "Revoked", now, now, env, customer_id, feature_id)
    invalidate(svc, env, customer_id)
    return ok(promotion_json(doc, env, now))


ROUTES = [grant_promotions, list_promotions, revoke_promotion]
