"""Promotional entitlements over REST (the rules: engine/domain/promotions.py).

`POST /api/v1/customers/{id}/promotional-entitlements` grants several at once,
`GET` lists them (paged, filtered by status and creation time), `DELETE …/{featureId}`
revokes one.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, Response, delete, get, post
from litestar.params import FromPath

from engine.domain import promotions
from engine.domain.constraints import ItemsOf
from engine.domain.promotions import PromotionIn, status_of
from engine.domain.stored import Promotion
from gateway.context import domain, environment, ok
from gateway.openapi import request_body
from gateway.wire import PageQuery, created_at_bounds, decode_body, iso
from persistence.pages import parse_cursor

__all__ = ["ROUTES", "promotion_json", "promotion_status"]

_BASE = "/api/v1/customers/{customer_id:str}/promotional-entitlements"


class PromotionsBody(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    promotional_entitlements: ItemsOf(PromotionIn, promotions.ITEMS_MAX)


promotion_status = status_of


def promotion_json(doc: Promotion, env: str, now: int) -> dict[str, Any]:
    return {
        "id": doc.id,
        "featureId": doc.feature_id,
        "environmentId": env,
        "description": doc.description,
        "period": doc.period,
        "startDate": iso(doc.start),
        "endDate": iso(doc.end),
        "status": promotion_status(doc, now),
        "usageLimit": doc.usage_limit,
        "hasUnlimitedUsage": doc.has_unlimited_usage,
        "hasSoftLimit": doc.has_soft_limit,
        "resetPeriod": doc.reset_period,
        "resetPeriodConfiguration": doc.reset_period_configuration,
        "enumValues": doc.enum_values,
        "isVisible": doc.is_visible,
        "featureGroupIds": None,
        "createdAt": iso(doc.created_at),
        "updatedAt": iso(doc.updated_at),
    }


@post(_BASE, opt=request_body(PromotionsBody))
async def grant_promotions(request: Request, customer_id: FromPath[str]) -> Response:
    body = await decode_body(request, PromotionsBody)
    env = environment(request)
    docs = await promotions.grant(domain(request), env, customer_id,
                                  body.promotional_entitlements)
    now = domain(request).documents.now_ms()
    return ok([promotion_json(d, env, now) for d in docs])


def _cursor(mark: tuple[int, str] | None) -> str | None:
    return None if mark is None else f"{mark[0]}.{mark[1]}"


@get(_BASE)
async def list_promotions(
    request: Request,
    customer_id: FromPath[str], page: PageQuery,
) -> Response:
    """Creation order (then feature id); `status` Active, Expired, Paused (comma-separated
    or repeated), `createdAt[gt|gte|lt|lte]`."""
    statuses = frozenset(s.strip() for value in request.query_params.getall("status", [])
                         for s in value.split(",") if s.strip())
    query = promotions.PromotionsQuery(
        customer_id=customer_id, limit=page.limit, statuses=statuses,
        created=created_at_bounds(request),
        after=parse_cursor(page.after, "after") if page.after else None,
        before=(parse_cursor(page.before, "before") if page.before and not page.after
                else None))
    env = environment(request)
    page, nxt, prev = await promotions.list_promotions(domain(request), env, query)
    now = domain(request).documents.now_ms()
    return ok([promotion_json(d, env, now) for d in page],
              pagination={"next": _cursor(nxt), "prev": _cursor(prev)})


@delete(_BASE + "/{feature_id:str}", status_code=200)
async def revoke_promotion(request: Request, customer_id: FromPath[str],
                           feature_id: FromPath[str]) -> Response:
    env = environment(request)
    doc = await promotions.revoke(domain(request), env, customer_id, feature_id)
    return ok(promotion_json(doc, env, domain(request).documents.now_ms()))


ROUTES = [grant_promotions, list_promotions, revoke_promotion]
