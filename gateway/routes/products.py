"""Products (issue 9): the official client's `v1.products` (create, list, update, archive,
unarchive, duplicate) over `engine.domain.packages`, plus `GET /api/v1/products/{id}` (an
extension: the client has no retrieve)."""

from __future__ import annotations

import msgspec
from litestar import Request, Response, get, patch, post
from litestar.params import FromPath, FromQuery
from msgspec import UNSET, UnsetType

from engine.domain import packages
from engine.domain.packages import ProductCreate, ProductUpdate
from gateway import package_json
from gateway.context import domain, environment, ok
from gateway.errors import ApiError
from gateway.openapi import request_body
from gateway.wire import PageQuery, created_at_bounds, decode_body

__all__ = ["ROUTES"]

_BASE = "/api/v1/products"


class DuplicateBody(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    target_id: str
    display_name: str | None = None
    description: str | None | UnsetType = UNSET


@post(_BASE, opt=request_body(ProductCreate))
async def create_product(request: Request) -> Response:
    body = await decode_body(request, ProductCreate)
    doc = await packages.create_product(domain(request).documents, environment(request), body)
    return ok(package_json.product_json(doc))


@get(_BASE)
async def list_products(
    request: Request,
    page: PageQuery,
    id: FromQuery[str | None] = None,  # noqa: A002 - the contract's parameter name
) -> Response:
    """Creation order; `id` matches exactly, `status` is PUBLISHED, ARCHIVED or both
    (comma-separated), `createdAt[gt|gte|lt|lte]` bound the creation time."""
    statuses = tuple(s.strip() for value in request.query_params.getall("status", [])
                     for s in value.split(",") if s.strip())
    found = await packages.list_products(domain(request).documents, environment(request),
                                         packages.ProductsQuery(
        limit=page.limit, after=page.after, before=page.before, id=id, statuses=statuses,
        created=tuple(created_at_bounds(request))))
    return ok([package_json.product_json(d) for d in found.items],
              pagination={"next": found.next, "prev": found.prev})


@get(_BASE + "/{product_id:str}")
async def retrieve_product(request: Request, product_id: FromPath[str]) -> Response:
    doc = await packages.get_product(domain(request).documents, environment(request),
                                     product_id)
    if doc is None:
        raise ApiError(404, "ProductNotFound", f"product {product_id!r} was not found", "id")
    return ok(package_json.product_json(doc))


@patch(_BASE + "/{product_id:str}", opt=request_body(ProductUpdate))
async def update_product(request: Request, product_id: FromPath[str]) -> Response:
    body = await decode_body(request, ProductUpdate)
    doc = await packages.update_product(domain(request).documents, environment(request),
                                        product_id, body)
    return ok(package_json.product_json(doc))


@post(_BASE + "/{product_id:str}/archive")
async def archive_product(request: Request, product_id: FromPath[str]) -> Response:
    doc = await packages.archive_product(domain(request).documents, environment(request),
                                         product_id)
    return ok(package_json.product_json(doc))


@post(_BASE + "/{product_id:str}/unarchive")
async def unarchive_product(request: Request, product_id: FromPath[str]) -> Response:
    doc = await packages.unarchive_product(domain(request).documents, environment(request),
                                           product_id)
    return ok(package_json.product_json(doc))


@post(_BASE + "/{product_id:str}/duplicate", opt=request_body(DuplicateBody))
async def duplicate_product(request: Request, product_id: FromPath[str]) -> Response:
    body = await decode_body(request, DuplicateBody)
    doc = await packages.duplicate_product(
        domain(request).documents, environment(request), product_id, body.target_id,
        display_name=body.display_name, description=body.description)
    return ok(package_json.product_json(doc))


ROUTES = [create_product, list_products, retrieve_product, update_product, archive_product,
          unarchive_product, duplicate_product]
