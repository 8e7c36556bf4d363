"""Custom currencies (credit types): create, list, update, archive, unarchive."""

from __future__ import annotations

import msgspec
from msgspec import UNSET, UnsetType
from litestar.params import FromPath, FromQuery
from litestar import Request, Response, get, patch, post

from gateway.app import environment, ok, services
from gateway.catalog import now_ms
from gateway.errors import ApiError, bad_input
from gateway.routes.common import public, require_currency, stamp
from gateway.wire import decode, limit_in

__all__ = ["ROUTES"]

_BASE = "/api/v1/credits/custom-currencies"


class Units(msgspec.Struct, forbid_unknown_fields=True):
    plural: str
    singular: str


class CurrencyCreate(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    id: str
    display_name: str
    description: str | None = None
    metadata: dict[str, str] = {}
    symbol: str | None = None
    units: Units | None = None


class CurrencyUpdate(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    # Absent (UNSET) leaves a field alone; null clears the optional ones.
    display_name: str | UnsetType = UNSET
    description: str | None | UnsetType = UNSET
    metadata: dict[str, str] | None | UnsetType = UNSET
    symbol: str | None | UnsetType = UNSET
    units: Units | None | UnsetType = UNSET


_UPDATABLE = {"display_name": "displayName", "description": "description", "symbol": "symbol"}


def _units(units: Units | None) -> dict[str, str] | None:
    return None if units is None else {"plural": units.plural, "singular": units.singular}


@post(_BASE)
async def create_currency(request: Request) -> Response:
    body = decode(await request.body(), CurrencyCreate)
    if not body.id or "/" in body.id or len(body.id) > 200:
        raise bad_input("must be 1-200 characters without '/'", "id")
    doc = stamp({"id": body.id, "displayName": body.display_name,
                 "description": body.description, "metadata": body.metadata,
                 "symbol": body.symbol, "units": _units(body.units)}, created=True)
    if not await services(request).catalog.insert("currencies", environment(request), doc):
        raise ApiError(409, "DuplicatedEntityNotAllowed",
                       f"currency {body.id!r} exists already", "id")
    return ok(public(doc), status=200)


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
    return ok([public(d) for d in page.items], pagination={"next": page.next, "prev": page.prev})


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
    await services(request).catalog.replace("currencies", environment(request), stamp(doc))
    return ok(public(doc))


async def _set_archived(request: Request, currency_id: str, archived: bool) -> Response:
    doc = dict(await require_currency(request, currency_id, allow_archived=True))
    doc["_archivedAt"] = now_ms() if archived else None
    await services(request).catalog.replace("currencies", environment(request), stamp(doc))
    return ok(public(doc))


@post(_BASE + "/{currency_id:str}/archive")
async def archive_currency(request: Request, currency_id: FromPath[str]) -> Response:
    return await _set_archived(request, currency_id, True)


@post(_BASE + "/{currency_id:str}/unarchive")
async def unarchive_currency(request: Request, currency_id: FromPath[str]) -> Response:
    return await _set_archived(request, currency_id, False)


ROUTES = [create_currency, list_currencies, update_currency, archive_currency,
          unarchive_currency]
