"""Coupons over REST (issue 9, the first part of the catalog): create, list, retrieve,
update, archive. The rules are the domain's (engine/domain/coupons.py).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from litestar import Request, Response, get, patch, post
from litestar.params import FromPath, FromQuery

from engine.domain import coupons
from engine.domain.coupons import CouponCreate, CouponUpdate
from engine.domain.stored import Coupon
from gateway.context import domain, environment, ok
from gateway.openapi import request_body
from gateway.wire import PageQuery, amount_out, created_at_bounds, decode_body, iso

__all__ = ["ROUTES"]

_BASE = "/api/v1/coupons"


def coupon_json(doc: Coupon) -> dict[str, Any]:
    return {
        "id": doc.id,
        "name": doc.name,
        "description": doc.description,
        "type": doc.type,
        "percentOff": doc.percent_off,
        "amountsOff": None if doc.amounts_off is None else [
            {"amount": amount_out(a.amount) if isinstance(a.amount, int) else Decimal(a.amount),
             "currency": a.currency} for a in doc.amounts_off],
        "durationInMonths": doc.duration_in_months,
        "duration": doc.duration,
        "metadata": doc.metadata,
        "billingId": None,
        "billingLinkUrl": None,
        "source": "STIGG",
        "status": "ARCHIVED" if doc.archived_at is not None else "ACTIVE",
        "createdAt": iso(doc.created_at),
        "updatedAt": iso(doc.updated_at),
    }


@post(_BASE, opt=request_body(CouponCreate))
async def create_coupon(request: Request) -> Response:
    body = await decode_body(request, CouponCreate)
    return ok(coupon_json(await coupons.create(domain(request), environment(request), body)))


@get(_BASE)
async def list_coupons(
    request: Request,
    page: PageQuery,
    id: FromQuery[str | None] = None,  # noqa: A002  # the contract's name
    type: FromQuery[str | None] = None,  # noqa: A002
) -> Response:
    """Creation order; `id` and `type` match exactly, `status` is ACTIVE, ARCHIVED or both
    (repeated or comma-separated), `createdAt[gt|gte|lt|lte]` bound the creation time."""
    wanted = frozenset(s.strip() for value in request.query_params.getall("status", [])
                       for s in value.split(",") if s.strip())
    page = await coupons.list_coupons(domain(request), environment(request),
                                      coupons.CouponsQuery(
        limit=page.limit, after=page.after, before=page.before, id=id, type=type, statuses=wanted,
        created=tuple(created_at_bounds(request))))
    return ok([coupon_json(d) for d in page.items],
              pagination={"next": page.next, "prev": page.prev})


@get(_BASE + "/{coupon_id:str}")
async def retrieve_coupon(request: Request, coupon_id: FromPath[str]) -> Response:
    return ok(coupon_json(await coupons.get(domain(request), environment(request), coupon_id)))


@patch(_BASE + "/{coupon_id:str}", opt=request_body(CouponUpdate))
async def update_coupon(request: Request, coupon_id: FromPath[str]) -> Response:
    body = await decode_body(request, CouponUpdate)
    return ok(coupon_json(await coupons.update(domain(request), environment(request),
                                               coupon_id, body)))


@post(_BASE + "/{coupon_id:str}/archive")
async def archive_coupon(request: Request, coupon_id: FromPath[str]) -> Response:
    """Archived coupons cannot be applied to new subscriptions; archiving again is a no-op."""
    return ok(coupon_json(await coupons.archive(domain(request), environment(request),
                                                coupon_id)))


ROUTES = [create_coupon, list_coupons, retrieve_coupon, update_coupon, archive_coupon]
