"""Coupons: create, get, update, list, archive.

A coupon takes a percentage (1-100) or fixed amounts per currency off a subscription's
price. Duration, in Stigg's one field: `durationInMonths` N repeats the discount N
billing months; absent or null applies it forever. The extension field `duration`
("ONCE" | "REPEATING" | "FOREVER") names the three kinds, and "ONCE" means the first
invoice only. Amounts are exact (units of 10^-5). The discount and the duration are
fixed once created; archived coupons apply to no new subscription and do not come back.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Literal

import msgspec
from msgspec import UNSET, UnsetType

from engine.billing.pricing import DURATION_MONTHS_MAX
from engine.domain import stored
from engine.domain.constraints import ID_MAX, CurrencyCode, Ident, Months
from engine.domain.context import Domain, set_archived, stamp
from engine.domain.errors import DomainError, bad_input, not_found
from engine.domain.stored import Coupon
from engine.domain.values import units_in

__all__ = ["AmountOff", "CouponCreate", "CouponUpdate", "CouponsQuery", "archive", "create",
           "discount", "duration", "get", "list_coupons", "update"]

COUPON_ID_MAX = ID_MAX
_TABLE = "coupons"


class AmountOff(msgspec.Struct, forbid_unknown_fields=True):
    amount: Decimal
    currency: CurrencyCode


class CouponCreate(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    id: Ident
    name: str
    amounts_off: list[AmountOff] | None = None
    percent_off: Decimal | None = None
    description: str | None = None
    duration_in_months: Months | None = None
    metadata: dict[str, str] | None = None
    duration: Literal["ONCE", "REPEATING", "FOREVER"] | None = None  # extension


class CouponUpdate(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    # Absent (UNSET) leaves a field alone; null clears description and metadata.
    name: str | UnsetType = UNSET
    description: str | None | UnsetType = UNSET
    metadata: dict[str, str] | None | UnsetType = UNSET


class CouponsQuery(msgspec.Struct, frozen=True, kw_only=True):
    limit: int = 20
    after: str | None = None
    before: str | None = None
    id: str | None = None
    type: str | None = None  # FIXED or PERCENTAGE
    statuses: frozenset[str] = frozenset()  # ACTIVE, ARCHIVED (none: both)
    created: tuple[tuple[str, int], ...] = ()


def discount(c: CouponCreate) -> dict[str, Any]:
    """The coupon's discount as its document keeps it (stored.Coupon's attributes): a
    percentage, or amounts per currency in units."""
    if (c.percent_off is None) == (c.amounts_off is None):
        raise bad_input("give either percentOff or amountsOff", "percentOff")
    if c.percent_off is not None:
        p = c.percent_off
        if not p.is_finite() or p != p.to_integral_value() or not 1 <= p <= 100:
            raise bad_input("must be a whole number from 1 to 100", "percentOff")
        return {"type": "PERCENTAGE", "percent_off": int(p), "amounts_off": None}
    assert c.amounts_off is not None
    if not c.amounts_off:
        raise bad_input("must hold at least one amount", "amountsOff")
    seen: set[str] = set()
    amounts = []
    for i, a in enumerate(c.amounts_off):
        currency = a.currency.lower()
        if not (len(currency) == 3 and currency.isascii() and currency.isalpha()):
            raise bad_input("must be a three-letter currency code", f"amountsOff[{i}].currency")
        if currency in seen:
            raise bad_input("each currency at most once", f"amountsOff[{i}].currency")
        seen.add(currency)
        amounts.append(stored.AmountOff(units_in(a.amount, f"amountsOff[{i}].amount"),
                                        currency))
    return {"type": "FIXED", "percent_off": None, "amounts_off": amounts}


def duration(c: CouponCreate) -> dict[str, Any]:
    """How long the discount applies, as the coupon's document keeps it (attributes)."""
    months = c.duration_in_months
    if months is not None and not 1 <= months <= DURATION_MONTHS_MAX:
        raise bad_input(f"must be from 1 to {DURATION_MONTHS_MAX}", "durationInMonths")
    kind = c.duration or ("REPEATING" if months is not None else "FOREVER")
    if kind == "REPEATING" and months is None:
        raise bad_input("is required for a REPEATING coupon", "durationInMonths")
    if kind != "REPEATING" and months is not None:
        raise bad_input(f"a {kind} coupon has no durationInMonths", "durationInMonths")
    return {"duration": kind, "duration_in_months": months}


async def get(d: Domain, env: str, coupon_id: str) -> Coupon:
    doc = await d.documents.get(_TABLE, env, coupon_id)
    if doc is None:
        raise not_found("CouponNotFound", "coupon", coupon_id, "id")
    return doc


async def create(d: Domain, env: str, c: CouponCreate) -> Coupon:
    if not c.id or "/" in c.id or len(c.id) > COUPON_ID_MAX:
        raise bad_input(f"must be 1-{COUPON_ID_MAX} characters without '/'", "id")
    if not c.name.strip():
        raise bad_input("must not be empty", "name")
    doc = stamp(d.documents, Coupon(id=c.id, name=c.name, description=c.description,
                                    metadata=c.metadata or {}, **discount(c), **duration(c)),
                created=True)
    if not await d.documents.insert(_TABLE, env, doc):
        raise DomainError(409, "DuplicatedEntityNotAllowed",
                          f"coupon {c.id!r} exists already", "id")
    return doc


async def update(d: Domain, env: str, coupon_id: str, u: CouponUpdate) -> Coupon:
    """Name, description and metadata; the discount and duration never change."""
    doc = await get(d, env, coupon_id)
    changes: dict[str, Any] = {}
    if u.name is not UNSET:
        if not u.name.strip():
            raise bad_input("must not be empty", "name")
        changes["name"] = u.name
    if u.description is not UNSET:
        changes["description"] = u.description
    if u.metadata is not UNSET:
        changes["metadata"] = u.metadata or {}
    doc = stamp(d.documents, msgspec.structs.replace(doc, **changes))
    await d.documents.replace(_TABLE, env, doc)
    return doc


async def list_coupons(d: Domain, env: str, q: CouponsQuery) -> Any:
    """A page in creation order; `id` and `type` match exactly."""
    if q.statuses - {"ACTIVE", "ARCHIVED"}:
        raise bad_input("must be ACTIVE, ARCHIVED or both, comma-separated", "status")
    if q.type is not None and q.type not in ("FIXED", "PERCENTAGE"):
        raise bad_input("must be FIXED or PERCENTAGE", "type")
    archived = None if len(q.statuses) != 1 else q.statuses == {"ARCHIVED"}
    return await d.documents.page(_TABLE, env, q.limit, q.after, q.before, archived,
                                  created=list(q.created), equal={"id": q.id, "type": q.type})


async def archive(d: Domain, env: str, coupon_id: str) -> Coupon:
    """Archived coupons cannot be applied to new subscriptions; archiving again is a
    no-op."""
    doc = await get(d, env, coupon_id)
    if doc.archived_at is not None:
        return doc
    return await set_archived(d, env, _TABLE, doc, True)
