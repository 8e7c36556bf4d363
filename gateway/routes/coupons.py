"""Coupons (issue 9, the first part of the catalog): create, list, retrieve, update, archive.

A coupon takes a percentage (1-100) or fixed amounts per currency off a subscription's
price. Duration, in the contract's one field: `durationInMonths` N repeats the discount N
billing months; absent or null applies it forever. The extension field `duration`
("ONCE" | "REPEATING" | "FOREVER") names the three kinds, and "ONCE" on create means the
first invoice only. Amounts are exact decimals (5 places, like credits), kept as strings.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Literal

import msgspec
from litestar import Request, Response, get, patch, post
from litestar.params import FromPath, FromQuery
from msgspec import UNSET, UnsetType

from engine.billing.pricing import DURATION_MONTHS_MAX
from gateway.context import environment, ok, services
from gateway.errors import ApiError, bad_input
from gateway.routes.common import stamp
from gateway.wire import amount_in, amount_out, created_at_bounds, decode, iso, limit_in

__all__ = ["ROUTES"]

_BASE = "/api/v1/coupons"
_TABLE = "coupons"


class AmountOff(msgspec.Struct, forbid_unknown_fields=True):
    amount: Decimal
    currency: str


class CouponCreate(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    id: str
    name: str
    amounts_off: list[AmountOff] | None = None
    percent_off: Decimal | None = None
    description: str | None = None
    duration_in_months: int | None = None
    metadata: dict[str, str] | None = None
    duration: Literal["ONCE", "REPEATING", "FOREVER"] | None = None  # extension


class CouponUpdate(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    # Absent (UNSET) leaves a field alone; null clears description and metadata.
    name: str | UnsetType = UNSET
    description: str | None | UnsetType = UNSET
    metadata: dict[str, str] | None | UnsetType = UNSET


def coupon_json(doc: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": doc["id"],
        "name": doc["name"],
        "description": doc.get("description"),
        "type": doc["type"],
        "percentOff": doc.get("percentOff"),
        "amountsOff": None if doc.get("amountsOff") is None else [
            {"amount": amount_out(a["amount"]), "currency": a["currency"]}
            for a in doc["amountsOff"]],
        "durationInMonths": doc.get("durationInMonths"),
        "duration": doc["duration"],
        "metadata": doc.get("metadata") or {},
        "billingId": None,
        "billingLinkUrl": None,
        "source": "STIGG",
        "status": "ARCHIVED" if doc.get("_archivedAt") is not None else "ACTIVE",
        "createdAt": iso(doc["_createdAt"]),
        "updatedAt": iso(doc["_updatedAt"]),
    }


def _discount(body: CouponCreate) -> dict[str, Any]:
    if (body.percent_off is None) == (body.amounts_off is None):
        raise bad_input("give either percentOff or amountsOff", "percentOff")
    if body.percent_off is not None:
        p = body.percent_off
        if not p.is_finite() or p != p.to_integral_value() or not 1 <= p <= 100:
            raise bad_input("must be a whole number from 1 to 100", "percentOff")
        return {"type": "PERCENTAGE", "percentOff": int(p), "amountsOff": None}
    assert body.amounts_off is not None
    if not body.amounts_off:
        raise bad_input("must hold at least one amount", "amountsOff")
    seen: set[str] = set()
    amounts = []
    for i, a in enumerate(body.amounts_off):
        currency = a.currency.lower()
        if not (len(currency) == 3 and currency.isascii() and currency.isalpha()):
            raise bad_input("must be a three-letter currency code", f"amountsOff[{i}].currency")
        if currency in seen:
            raise bad_input("each currency at most once", f"amountsOff[{i}].currency")
        seen.add(currency)
        amounts.append({"amount": amount_in(a.amount, f"amountsOff[{i}].amount"),
                        "currency": currency})
    return {"type": "FIXED", "percentOff": None, "amountsOff": amounts}


def _duration(body: CouponCreate) -> dict[str, Any]:
    months = body.duration_in_months
    if months is not None and not 1 <= months <= DURATION_MONTHS_MAX:
        raise bad_input(f"must be from 1 to {DURATION_MONTHS_MAX}", "durationInMonths")
    kind = body.duration or ("REPEATING" if months is not None else "FOREVER")
    if kind == "REPEATING" and months is None:
        raise bad_input("is required for a REPEATING coupon", "durationInMonths")
    if kind != "REPEATING" and months is not None:
        raise bad_input(f"a {kind} coupon has no durationInMonths", "durationInMonths")
    return {"duration": kind, "durationInMonths": months}


async def _coupon(request: Request, coupon_id: str) -> dict[str, Any]:
    doc = await services(request).catalog.get(_TABLE, environment(request), coupon_id)
    if doc is None:
        raise ApiError(404, "CouponNotFound", f"coupon {coupon_id!r} was not found", "id")
    return doc


@post(_BASE)
async def create_coupon(request: Request) -> Response:
    body = decode(await request.body(), CouponCreate)
    if not body.id or "/" in body.id or len(body.id) > 255:
        raise bad_input("must be 1-255 characters without '/'", "id")
    if not body.name.strip():
        raise bad_input("must not be empty", "name")
    catalog = services(request).catalog
    doc = stamp(catalog, {"id": body.id, "name": body.name, "description": body.description,
                          "metadata": body.metadata or {}, **_discount(body),
                          **_duration(body)}, created=True)
    if not await catalog.insert(_TABLE, environment(request), doc):
        raise ApiError(409, "DuplicatedEntityNotAllowed", f"coupon {body.id!r} exists already",
                       "id")
    return ok(coupon_json(doc))


@get(_BASE)
async def list_coupons(
    request: Request,
    limit: FromQuery[int | None] = None,
    after: FromQuery[str | None] = None,
    before: FromQuery[str | None] = None,
    id: FromQuery[str | None] = None,  # noqa: A002  # the contract's name
    type: FromQuery[str | None] = None,  # noqa: A002
) -> Response:
    """Creation order; `id` and `type` match exactly, `status` is ACTIVE, ARCHIVED or both
    (repeated or comma-separated), `createdAt[gt|gte|lt|lte]` bound the creation time."""
    wanted = {s.strip() for value in request.query_params.getall("status", [])
              for s in value.split(",") if s.strip()}
    if wanted - {"ACTIVE", "ARCHIVED"}:
        raise bad_input("must be ACTIVE, ARCHIVED or both, comma-separated", "status")
    if type is not None and type not in ("FIXED", "PERCENTAGE"):
        raise bad_input("must be FIXED or PERCENTAGE", "type")
    archived = None if len(wanted) != 1 else wanted == {"ARCHIVED"}
    page = await services(request).catalog.page(
        _TABLE, environment(request), limit_in(limit), after, before, archived,
        created=created_at_bounds(request), equal={"id": id, "type": type})
    return ok([coupon_json(d) for d in page.items],
              pagination={"next": page.next, "prev": page.prev})


@get(_BASE + "/{coupon_id:str}")
async def retrieve_coupon(request: Request, coupon_id: FromPath[str]) -> Response:
    return ok(coupon_json(await _coupon(request, coupon_id)))


@patch(_BASE + "/{coupon_id:str}")
async def update_coupon(request: Request, coupon_id: FromPath[str]) -> Response:
    body = decode(await request.body(), CouponUpdate)
    doc = dict(await _coupon(request, coupon_id))
    if body.name is not UNSET:
        if not body.name.strip():
            raise bad_input("must not be empty", "name")
        doc["name"] = body.name
    if body.description is not UNSET:
        doc["description"] = body.description
    if body.metadata is not UNSET:
        doc["metadata"] = body.metadata or {}
    catalog = services(request).catalog
    await catalog.replace(_TABLE, environment(request), stamp(catalog, doc))
    return ok(coupon_json(doc))


@post(_BASE + "/{coupon_id:str}/archive")
async def archive_coupon(request: Request, coupon_id: FromPath[str]) -> Response:
    """Archived coupons cannot be applied to new subscriptions; archiving again is a no-op."""
    doc = dict(await _coupon(request, coupon_id))
    if doc.get("_archivedAt") is None:
        catalog = services(request).catalog
        doc["_archivedAt"] = catalog.now_ms()
        await catalog.replace(_TABLE, environment(request), stamp(catalog, doc))
    return ok(coupon_json(doc))


ROUTES = [create_coupon, list_coupons, retrieve_coupon, update_coupon, archive_coupon]
