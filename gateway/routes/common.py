"""What several route modules share: documents, engine customer ids, lookups."""

from __future__ import annotations

from typing import Any

from litestar import Request

from gateway.context import environment, services
from gateway.errors import ApiError
from gateway.wire import iso

__all__ = ["engine_id", "public", "stamp", "require_customer", "require_currency", "scoped_key",
           "header_key", "check_key"]


def engine_id(env: str, customer_id: str) -> str:
    # Environment names cannot contain "/", so the first "/" separates the two.
    return f"{env}/{customer_id}"


def scoped_key(scope: str, key: str) -> str:
    """An idempotency key in the engine's per-customer key space. Each endpoint has a
    space of its own, so a consumption key can never collide with a reservation id or a
    grant's Idempotency-Key header that happens to have the same text."""
    return f"{scope}:{key}"


IDEMPOTENCY_KEY_BYTES_MAX = 255


def check_key(key: str, field: str) -> None:
    if not key or len(key.encode()) > IDEMPOTENCY_KEY_BYTES_MAX:
        raise ApiError(400, "BadUserInput", f"must be 1 to {IDEMPOTENCY_KEY_BYTES_MAX} bytes",
                       field)


def header_key(request: Request, scope: str) -> str | None:
    """The optional `Idempotency-Key` header (for endpoints whose body has no key field in
    the contract, such as grant creation and void): the request is applied at most once."""
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    check_key(key, "Idempotency-Key")
    return scoped_key(scope, key)


def public(doc: dict[str, Any]) -> dict[str, Any]:
    """A stored document as the wire shows it: internal `_` fields become ISO times."""
    out = {k: v for k, v in doc.items() if not k.startswith("_")}
    out["createdAt"] = iso(doc["_createdAt"])
    out["updatedAt"] = iso(doc["_updatedAt"])
    out["archivedAt"] = iso(doc.get("_archivedAt"))
    return out


def stamp(catalog: Any, doc: dict[str, Any], *, created: bool = False) -> dict[str, Any]:
    """Mark `doc` changed (and created) now, by the process's clock (the catalog's)."""
    now = catalog.now_ms()
    if created:
        doc["_createdAt"] = now
    doc["_updatedAt"] = now
    return doc


async def require_customer(request: Request, customer_id: str, *, field: str = "customerId",
                           allow_archived: bool = False) -> dict[str, Any]:
    doc = await services(request).catalog.get("customer_profiles", environment(request),
                                              customer_id)
    if doc is None:
        raise ApiError(404, "CustomerNotFound", f"customer {customer_id!r} was not found", field)
    if doc.get("_archivedAt") is not None and not allow_archived:
        raise ApiError(400, "CustomerIsArchived", f"customer {customer_id!r} is archived", field)
    return doc


async def require_currency(request: Request, currency_id: str, *, field: str = "currencyId",
                           allow_archived: bool = False) -> dict[str, Any]:
    doc = await services(request).catalog.get("currencies", environment(request), currency_id)
    if doc is None:
        raise ApiError(404, "CustomCurrencyNotFound", f"currency {currency_id!r} was not found",
                       field)
    if doc.get("_archivedAt") is not None and not allow_archived:
        raise ApiError(400, "CustomCurrencyIsArchived", f"currency {currency_id!r} is archived",
                       field)
    return doc
