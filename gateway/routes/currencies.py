"""Custom currencies (credit types): create, list, update, archive, unarchive."""

from __future__ import annotations

from decimal import Decimal

import msgspec
from msgspec import UNSET, UnsetType
from litestar.params import FromPath, FromQuery
from litestar import Request, Response, get, patch, post

from gateway.context import environment, ok, services
from gateway.errors import ApiError, bad_input
from gateway.routes.common import public, require_currency, stamp
from gateway.wire import amount_in, amount_out, decode, limit_in

__all__ = ["ROUTES"]

_BASE = "/api/v1/credits/custom-currencies"


class Units(msgspec.Struct, forbid_unknown_fields=True):
    plural: str
    singular: str


class TopUp(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    """The price of one credit when bought (auto-recharge; an extension field)."""

    price_per_credit: Decimal
    price_currency: str = "usd"
    minimum_purchase: Decimal | None = None
    maximum_purchase: Decimal | None = None


class CurrencyCreate(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    id: str
    display_name: str
    description: str | None = None
    metadata: dict[str, str] = {}
    symbol: str | None = None
    units: Units | None = None
    top_up: TopUp | None = None


class CurrencyUpdate(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    # Absent (UNSET) leaves a field alone; null clears the optional ones.
    display_name: str | UnsetType = UNSET
    description: str | None | UnsetType = UNSET
    metadata: dict[str, str] | None | UnsetType = UNSET
    symbol: str | None | UnsetType = UNSET
    units: Units | None | UnsetType = UNSET
    top_up: TopUp | None | UnsetType = UNSET


_UPDATABLE = {"display_name": "displayName", "description": "description", "symbol": "symbol"}


def _units(units: Units | None) -> dict[str, str] | None:
    return None if units is None else {"plural": units.plural, "singular": units.singular}


def _top_up(t: TopUp | None) -> dict[str, object] | None:
    """Validated and kept as exact decimal strings (the wire shows them as numbers)."""
    if t is None:
        return None
    price = amount_in(t.price_per_credit, "topUp.pricePerCredit")
    low = None if t.minimum_purchase is None else amount_in(t.minimum_purchase,
                                                            "topUp.minimumPurchase")
    high = None if t.maximum_purchase is None else amount_in(t.maximum_purchase,
                                                             "topUp.maximumPurchase")
    if low is not None and high is not None and low > high:
        raise bad_input("must not be above maximumPurchase", "topUp.minimumPurchase")
    currency = t.price_currency.lower()
    if not (len(currency) == 3 and currency.isalpha()):
        raise bad_input("must be a three-letter currency code", "topUp.priceCurrency")
    return {"pricePerCredit": price, "priceCurrency": currency, "minimumPurchase": low,
            "maximumPurchase": high}


def currency_public(doc: dict[str, object]) -> dict[str, object]:
    out = public(doc)
    top_up = doc.get("topUp")
    if top_up:
        out["topUp"] = {k: amount_out(v) if isinstance(v, int) else v
                        for k, v in top_up.items()}  # type: ignore[union-attr]
    else:
        out["topUp"] = None
    return out


@post(_BASE)
async def create_currency(request: Request) -> Response:
    body = decode(await request.body(), CurrencyCreate)
    if not body.id or "/" in body.id or len(body.id) > 200:
        raise bad_input("must be 1-200 characters without '/'", "id")
    catalog = services(request).catalog
    doc = stamp(catalog, {"id": body.id, "displayName": body.display_name,
                          "description": body.description, "metadata": body.metadata,
                          "symbol": body.symbol, "units": _units(body.units),
                          "topUp": _top_up(body.top_up)}, created=True)
    if not await catalog.insert("currencies", environment(request), doc):
        raise ApiError(409, "DuplicatedEntityNotAllowed",
                       f"currency {body.id!r} exists already", "id")
    return ok(currency_public(doc), status=200)


@get(_BASE)
async def list_currencies(
    request: Request,
    limit: FromQuery[int | None] = None,
    after: FromQuery[str | None] = None,
    before: FromQuery[str | None] = None,
    status: FromQuery[str | None] = None,
) -> Response:
    wanted = {s.strip() for s in (status or "").split(",") if s.strip()}
    if wanted - {"ACTIVE", "ARCHIVED"}:
        raise bad_input("must be ACTIVE, ARCHIVED or both, comma-separated", "status")
    archived = None if len(wanted) != 1 else wanted == {"ARCHIVED"}
    page = await services(request).catalog.page(
        "currencies", environment(request), limit_in(limit), after, before, archived)
    return ok([currency_public(d) for d in page.items], pagination={"next": page.next, "prev": page.prev})


@patch(_BASE + "/{currency_id:str}")
async def update_currency(request: Request, currency_id: FromPath[str]) -> Response:
    body = decode(await request.body(), CurrencyUpdate)
    doc = dict(await require_currency(request, currency_id, field="currencyId",
                                      allow_archived=True))
    for attribute, wire_name in _UPDATABLE.items():
        value = getattr(body, attribute)
        if value is not UNSET:
            doc[wire_name] = value
    if body.metadata is not UNSET:
        doc["metadata"] = body.metadata or {}
    if body.units is not UNSET:
        doc["units"] = _units(body.units)
    if body.top_up is not UNSET:
        doc["topUp"] = _top_up(body.top_up)
    catalog = services(request).catalog
    await catalog.replace("currencies", environment(request), stamp(catalog, doc))
    return ok(currency_public(doc))


async def _set_archived(request: Request, currency_id: str, archived: bool) -> Response:
    doc = dict(await require_currency(request, currency_id, allow_archived=True))
    catalog = services(request).catalog
    doc["_archivedAt"] = catalog.now_ms() if archived else None
    await catalog.replace("currencies", environment(request), stamp(catalog, doc))
    return ok(currency_public(doc))


@post(_BASE + "/{currency_id:str}/archive")
async def archive_currency(request: Request, currency_id: FromPath[str]) -> Response:
    return await _set_archived(request, currency_id, True)


@post(_BASE + "/{currency_id:str}/unarchive")
async def unarchive_currency(request: Request, currency_id: FromPath[str]) -> Response:
    return await _set_archived(request, currency_id, False)


ROUTES = [create_currency, list_currencies, update_currency, archive_currency,
          unarchive_currency]
