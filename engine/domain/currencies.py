"""Custom currencies (credit types): create, list, update, archive and unarchive.

A currency is a typed document (stored.Currency). Its optional top-up price (what one
credit costs when auto-recharge buys it) is kept in units (10^-5), exact."""

from __future__ import annotations

from typing import Any

import msgspec
from msgspec import UNSET, UnsetType

from engine.domain.constraints import CURRENCY_ID_MAX
from engine.domain.context import Domain, require_currency, set_archived, stamp
from engine.domain.errors import DomainError, bad_input
from engine.domain.stored import Currency, CurrencyUnits
from engine.domain.stored import TopUp as StoredTopUp

__all__ = ["CURRENCY_ID_MAX", "CurrencyInput", "CurrencyUpdate", "TopUp", "Units", "archive",
           "create", "list_currencies", "top_up_document", "update"]

_TABLE = "currencies"


class Units(msgspec.Struct, frozen=True):
    plural: str
    singular: str


class TopUp(msgspec.Struct, frozen=True, kw_only=True):
    price_per_credit: int  # units
    price_currency: str = "usd"
    minimum_purchase: int | None = None
    maximum_purchase: int | None = None


class CurrencyInput(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    display_name: str
    description: str | None = None
    metadata: dict[str, str] = {}
    symbol: str | None = None
    units: Units | None = None
    top_up: TopUp | None = None


class CurrencyUpdate(msgspec.Struct, frozen=True, kw_only=True):
    # UNSET leaves a field alone; None clears the optional ones.
    display_name: str | UnsetType = UNSET
    description: str | None | UnsetType = UNSET
    metadata: dict[str, str] | None | UnsetType = UNSET
    symbol: str | None | UnsetType = UNSET
    units: Units | None | UnsetType = UNSET
    top_up: TopUp | None | UnsetType = UNSET


def _units(units: Units | None) -> CurrencyUnits | None:
    return None if units is None else CurrencyUnits(units.plural, units.singular)


def top_up_document(t: TopUp | None) -> StoredTopUp | None:
    """The top-up price as the currency's document keeps it (units), checked."""
    if t is None:
        return None
    low, high = t.minimum_purchase, t.maximum_purchase
    if low is not None and high is not None and low > high:
        raise bad_input("must not be above maximumPurchase", "topUp.minimumPurchase")
    currency = t.price_currency.lower()
    if not (len(currency) == 3 and currency.isascii() and currency.isalpha()):
        raise bad_input("must be a three-letter currency code", "topUp.priceCurrency")
    return StoredTopUp(price_per_credit=t.price_per_credit, price_currency=currency,
                       minimum_purchase=low, maximum_purchase=high)


async def create(d: Domain, env: str, c: CurrencyInput) -> Currency:
    if not c.id or "/" in c.id or len(c.id) > CURRENCY_ID_MAX:
        raise bad_input(f"must be 1-{CURRENCY_ID_MAX} characters without '/'", "id")
    doc = stamp(d.documents, Currency(
        id=c.id, display_name=c.display_name, description=c.description,
        metadata=c.metadata, symbol=c.symbol, units=_units(c.units),
        top_up=top_up_document(c.top_up)), created=True)
    if not await d.documents.insert(_TABLE, env, doc):
        raise DomainError(409, "DuplicatedEntityNotAllowed",
                          f"currency {c.id!r} exists already", "id")
    return doc


async def list_currencies(d: Domain, env: str, limit: int, after: str | None,
                          before: str | None, statuses: frozenset[str] = frozenset()) -> Any:
    """A page in creation order; `statuses` among ACTIVE and ARCHIVED (none: both)."""
    if statuses - {"ACTIVE", "ARCHIVED"}:
        raise bad_input("must be ACTIVE, ARCHIVED or both, comma-separated", "status")
    archived = None if len(statuses) != 1 else statuses == {"ARCHIVED"}
    return await d.documents.page(_TABLE, env, limit, after, before, archived)


async def update(d: Domain, env: str, currency_id: str, u: CurrencyUpdate) -> Currency:
    doc = await require_currency(d, env, currency_id, allow_archived=True)
    changes: dict[str, Any] = {name: value for name in ("display_name", "description", "symbol")
                               if (value := getattr(u, name)) is not UNSET}
    if u.metadata is not UNSET:
        changes["metadata"] = u.metadata or {}
    if u.units is not UNSET:
        changes["units"] = _units(u.units)
    if u.top_up is not UNSET:
        changes["top_up"] = top_up_document(u.top_up)
    doc = stamp(d.documents, msgspec.structs.replace(doc, **changes))
    await d.documents.replace(_TABLE, env, doc)
    return doc


async def archive(d: Domain, env: str, currency_id: str, archived: bool) -> Currency:
    """Archive (or unarchive): an archived currency takes no new grants or consumptions;
    balances in it stay readable."""
    doc = await require_currency(d, env, currency_id, allow_archived=True)
    return await set_archived(d, env, _TABLE, doc, archived)
