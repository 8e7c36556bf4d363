"""Customers: provision, retrieve, update, list (cursor), archive, unarchive.

The profile is kept as a document of the fields the client sent (the contract's Customer
has many optional billing fields that creditd stores and returns but never computes on).
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, Response, get, patch, post
from litestar.params import FromPath, FromQuery
from msgspec import UNSET, UnsetType

from engine.domain import customers
from engine.domain.constraints import Ident
from gateway.context import domain, environment, ok
from gateway.errors import bad_input
from gateway.openapi import request_body
from gateway.routes.common import public
from gateway.wire import PageQuery, created_at_bounds, decode_body

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
    id: Ident = ""  # absent: refused by the domain, naming `id`


def _fields(body: CustomerFields) -> dict[str, Any]:
    """Only what the client sent (UNSET is absent), by attribute name."""
    return {name: value for name in body.__struct_fields__
            if name != "id" and (value := getattr(body, name)) is not UNSET}


@post(_BASE, opt=request_body(CustomerCreate))
async def provision_customer(request: Request) -> Response:
    body = await decode_body(request, CustomerCreate)
    return ok(public(await customers.provision(domain(request), environment(request), body.id,
                                               _fields(body))))


@get(_BASE + "/{customer_id:str}")
async def retrieve_customer(request: Request, customer_id: FromPath[str]) -> Response:
    return ok(public(await customers.get(domain(request), environment(request), customer_id)))


@patch(_BASE + "/{customer_id:str}", opt=request_body(CustomerFields))
async def update_customer(request: Request, customer_id: FromPath[str]) -> Response:
    body = await decode_body(request, CustomerFields)
    return ok(public(await customers.update(domain(request), environment(request), customer_id,
                                            _fields(body))))


@get(_BASE)
async def list_customers(
    request: Request,
    page: PageQuery,
    email: FromQuery[str | None] = None,
    name: FromQuery[str | None] = None,
    search: FromQuery[str | None] = None,
) -> Response:
    """Creation order; `email` and `name` match exactly, `createdAt[gt|gte|lt|lte]` bound
    the creation time; `search` (an extension, for the console) keeps customers whose id,
    name or email starts with it, ignoring case."""
    if search is not None and len(search) > 200:
        raise bad_input("at most 200 characters", "search")
    page = await customers.list_customers(domain(request), environment(request),
                                          customers.CustomersQuery(
        limit=page.limit, after=page.after, before=page.before, email=email, name=name,
        created=tuple(created_at_bounds(request)), search=search))
    return ok([public(d) for d in page.items], pagination={"next": page.next, "prev": page.prev})


@post(_BASE + "/{customer_id:str}/archive")
async def archive_customer(request: Request, customer_id: FromPath[str]) -> Response:
    return ok(public(await customers.archive(domain(request), environment(request),
                                             customer_id, True)))


@post(_BASE + "/{customer_id:str}/unarchive")
async def unarchive_customer(request: Request, customer_id: FromPath[str]) -> Response:
    return ok(public(await customers.archive(domain(request), environment(request),
                                             customer_id, False)))


ROUTES = [provision_customer, retrieve_customer, update_customer, list_customers,
          archive_customer, unarchive_customer]
