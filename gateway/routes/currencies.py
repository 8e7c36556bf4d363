"""Custom currencies (credit types): create, list, update, archive, unarchive."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import msgspec
from litestar import Request, Response, get, patch, post
from litestar.params import FromPath, FromQuery
from msgspec import UNSET, UnsetType

from engine.domain import currencies
from engine.domain.constraints import CurrencyCode, CurrencyIdent
from engine.domain.stored import Currency
from gateway.context import domain, environment, ok
from gateway.openapi import request_body
from gateway.routes.common import public
from gateway.wire import PageQuery, amount_in, amount_out, decode_body

__all__ = ["ROUTES"]

_BASE = "/api/v1/credits/custom-currencies"


class Units(msgspec.Struct, forbid_unknown_fields=True):
    plural: str
    singular: str


class TopUp(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    """The price of one credit when bought (auto-recharge; an extension field)."""

    price_per_credit: Decimal
    price_currency: CurrencyCode = "usd"
    minimum_purchase: Decimal | None = None
    maximum_purchase: Decimal | None = None


class CurrencyCreate(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    id: CurrencyIdent
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


def _units(units: Units | None) -> currencies.Units | None:
    return None if units is None else currencies.Units(units.plural, units.singular)


def top_up_in(t: Any) -> currencies.TopUp | None:
    """A top-up price as the domain takes it (amounts as units; the rules are the
    domain's), from this API's body or the TOML catalog's item (same attributes)."""
    if t is None:
        return None
    return currencies.TopUp(
        price_per_credit=amount_in(t.price_per_credit, "topUp.pricePerCredit"),
        price_currency=t.price_currency,
        minimum_purchase=None if t.minimum_purchase is None else amount_in(
            t.minimum_purchase, "topUp.minimumPurchase"),
        maximum_purchase=None if t.maximum_purchase is None else amount_in(
            t.maximum_purchase, "topUp.maximumPurchase"))


def currency_public(doc: Currency) -> dict[str, object]:
    out = public(doc)
    t = doc.top_up
    out["topUp"] = None if t is None else {
        "pricePerCredit": amount_out(t.price_per_credit), "priceCurrency": t.price_currency,
        "minimumPurchase": None if t.minimum_purchase is None else amount_out(
            t.minimum_purchase),
        "maximumPurchase": None if t.maximum_purchase is None else amount_out(
            t.maximum_purchase)}
    return out


@post(_BASE, opt=request_body(CurrencyCreate))
async def create_currency(request: Request) -> Response:
    body = await decode_body(request, CurrencyCreate)
    doc = await currencies.create(domain(request), environment(request), currencies.CurrencyInput(
        id=body.id, display_name=body.display_name, description=body.description,
        metadata=body.metadata, symbol=body.symbol, units=_units(body.units),
        top_up=top_up_in(body.top_up)))
    return ok(currency_public(doc), status=200)


@get(_BASE)
async def list_currencies(
    request: Request,
    page: PageQuery,
    status: FromQuery[str | None] = None,
) -> Response:
    wanted = frozenset(s.strip() for s in (status or "").split(",") if s.strip())
    page = await currencies.list_currencies(domain(request), environment(request),
                                            page.limit, page.after, page.before, wanted)
    return ok([currency_public(d) for d in page.items],
              pagination={"next": page.next, "prev": page.prev})


@patch(_BASE + "/{currency_id:str}", opt=request_body(CurrencyUpdate))
async def update_currency(request: Request, currency_id: FromPath[str]) -> Response:
    body = await decode_body(request, CurrencyUpdate)
    doc = await currencies.update(domain(request), environment(request), currency_id,
                                  currencies.CurrencyUpdate(
        display_name=body.display_name, description=body.description,
        metadata=body.metadata, symbol=body.symbol,
        units=UNSET if body.units is UNSET else _units(body.units),
        top_up=UNSET if body.top_up is UNSET else top_up_in(body.top_up)))
    return ok(currency_public(doc))


@post(_BASE + "/{currency_id:str}/archive")
async def archive_currency(request: Request, currency_id: FromPath[str]) -> Response:
    return ok(currency_public(await currencies.archive(domain(request), environment(request),
                                                       currency_id, True)))


@post(_BASE + "/{currency_id:str}/unarchive")
async def unarchive_currency(request: Request, currency_id: FromPath[str]) -> Response:
    return ok(currency_public(await currencies.archive(domain(request), environment(request),
                                                       currency_id, False)))


ROUTES = [create_currency, list_currencies, update_currency, archive_currency,
          unarchive_currency]
