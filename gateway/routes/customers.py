"""Customers: provision, retrieve, update, list (cursor), archive, unarchive.

The profile is kept as a document of the fields the client sent (the contract's Customer
has many optional billing fields that creditd stores and returns but never computes on).
"""

from __future__ import annotations

from typing import Any

import msgspec
from msgspec import UNSET, UnsetType
from litestar.params import FromPath, FromQuery
from litestar import Request, Response, get, patch, post

from gateway.context import environment, ok, services
from gateway.errors import ApiError, bad_input
from gateway.routes.common import public, require_customer, stamp
from gateway.wire import created_at_bounds, decode, limit_in

__all__ = ["ROUTES"]

_BASE = "/api/v1/customers"


class CustomerFields(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    # UNSET (absent) leaves a field alone on update; an explicit null clears it.
    billing_currency: str | None | UnsetType = UNSET
    billing_id: str | None | UnsetType = UNSET
    coupon_id: str | None | UnsetType = UNSET
    default_payment_method: dict[str, Any] | None | UnsetType = UNSET
    email: str | None | UnsetType = UNSET
    integrations: list[dict[str, Any]] | None | UnsetType = UNSET
    language: str | None | UnsetType = UNSET
    metadata: dict[str, str] | None | UnsetType = UNSET
    name: str | None | UnsetType = UNSET
    passthrough: dict[str, Any] | None | UnsetType = UNSET
    timezone: str | None | UnsetType = UNSET


class CustomerCreate(CustomerFields, forbid_unknown_fields=True, rename="camel"):
    id: str = ""


def _fields(body: CustomerFields) -> dict[str, Any]:
    # Only what the client sent: msgspec.to_builtins drops UNSET fields.
    fields = {k: v for k, v in msgspec.to_builtins(body).items() if k != "id"}
    if "metadata" in fields and fields["metadata"] is None:
        fields["metadata"] = {}
    return fields


@post(_BASE)
async def provision_customer(request: Request) -> Response:
    body = decode(await request.body(), CustomerCreate)
    if not body.id or "/" in body.id or len(body.id) > 255:
        raise bad_input("must be 1-255 characters without '/'", "id")
    catalog = services(request).catalog
    doc = stamp(catalog, {"id": body.id, "metadata": {}, **_fields(body)}, created=True)
    if not await catalog.insert("customer_profiles", environment(request), doc):
        raise ApiError(409, "DuplicatedEntityNotAllowed", f"customer {body.id!r} exists already",
                       "id")
    return ok(public(doc))


@get(_BASE + "/{customer_id:str}")
async def retrieve_customer(request: Request, customer_id: FromPath[str]) -> Response:
    return ok(public(await require_customer(request, customer_id, field="id",
                                            allow_archived=True)))


@patch(_BASE + "/{customer_id:str}")
async def update_customer(request: Request, customer_id: FromPath[str]) -> Response:
    body = decode(await request.body(), CustomerFields)
    doc = dict(await require_customer(request, customer_id, field="id"))
    doc.update(_fields(body))
    catalog = services(request).catalog
    await catalog.replace("customer_profiles", environment(request), stamp(catalog, doc))
    return ok(public(doc))


@get(_BASE)
async def list_customers(
    request: Request,
    limit: FromQuery[int | None] = None,
    after: FromQuery[str | None] = None,
    before: FromQuery[str | None] = None,
    email: FromQuery[str | None] = None,
    name: FromQuery[str | None] = None,
) -> Response:
    """Creation order; `email` and `name` match exactly, `createdAt[gt|gte|lt|lte]` bound
    the creation time."""
    page = await services(request).catalog.page(
        "customer_profiles", environment(request), limit_in(limit), after, before,
        created=created_at_bounds(request), equal={"email": email, "name": name})
    return ok([public(d) for d in page.items], pagination={"next": page.next, "prev": page.prev})


async def _set_archived(request: Request, customer_id: str, archived: bool) -> Response:
    doc = dict(await require_customer(request, customer_id, field="id", allow_archived=True))
    catalog = services(request).catalog
    doc["_archivedAt"] = catalog.now_ms() if archived else None
    await catalog.replace("customer_profiles", environment(request), stamp(catalog, doc))
    return ok(public(doc))


@post(_BASE + "/{customer_id:str}/archive")
async def archive_customer(request: Request, customer_id: FromPath[str]) -> Response:
    return await _set_archived(request, customer_id, True)


@post(_BASE + "/{customer_id:str}/unarchive")
async def unarchive_customer(request: Request, customer_id: FromPath[str]) -> Response:
    return await _set_archived(request, customer_id, False)


ROUTES = [provision_customer, retrieve_customer, update_customer, list_customers,
          archive_customer, unarchive_customer]
