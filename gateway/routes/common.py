"""What several route modules share: documents, engine customer ids, lookups."""

from __future__ import annotations

from typing import Any

from litestar import Request

from engine.domain import context as rules
from engine.domain.context import check_key, engine_id, scoped_key, stamp
from gateway.context import domain, environment
from gateway.wire import iso

__all__ = ["engine_id", "public", "stamp", "require_customer", "require_currency", "scoped_key",
           "header_key", "check_key"]


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


async def require_customer(request: Request, customer_id: str, *, field: str = "customerId",
                           allow_archived: bool = False) -> dict[str, Any]:
    """The domain's rule (engine/domain/context.py) for the request's environment."""
    return await rules.require_customer(domain(request), environment(request), customer_id,
                                        field=field, allow_archived=allow_archived)


async def require_currency(request: Request, currency_id: str, *, field: str = "currencyId",
                           allow_archived: bool = False) -> dict[str, Any]:
    return await rules.require_currency(domain(request), environment(request), currency_id,
                                        field=field, allow_archived=allow_archived)
