"""Plans and add-ons (issue 9): the REST endpoints of the official client's `v1.plans` and
`v1.addons`, over `engine.domain.packages` (which holds the rules and the stored documents).

    POST   /api/v1/{plans|addons}                          create (DRAFT v1)
    GET    /api/v1/{plans|addons}                          list: productId, status, createdAt
    GET    /api/v1/{plans|addons}/{id}                     the working copy
    PATCH  /api/v1/{plans|addons}/{id}                     update; `charges` sets the prices
    POST   /api/v1/{plans|addons}/{id}/archive
    POST   /api/v1/{plans|addons}/{id}/draft               create_draft
    DELETE /api/v1/{plans|addons}/{id}/draft               remove_draft
    POST   /api/v1/{plans|addons}/{id}/publish             {migrationType}
    GET    /api/v1/{plans|addons}/{id}/charges             one row per model × price period
    GET    /api/v1/{plans|addons}/{id}/overage-charges
    POST|GET /api/v1/{plans|addons}/{pid}/entitlements
    PATCH|DELETE /api/v1/{plans|addons}/{pid}/entitlements/{id}
`PATCH /api/v1/addons/{id}` with `charges` is the client's AddonUpdateParams shape too.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec
from litestar import Request, Response, delete, get, patch, post
from litestar.params import FromPath

from engine.domain import packages
from engine.domain.packages import EntitlementIn, PackageCreate, PackageUpdate
from engine.domain.subscriptions import operations
from gateway import package_json
from gateway.context import domain, environment, ok
from gateway.errors import bad_input
from gateway.openapi import request_body
from gateway.wire import PageQuery, ascii_int, created_at_bounds, decode_body

__all__ = ["ROUTES"]



class PublishBody(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    migration_type: Literal["NEW_CUSTOMERS", "ALL_CUSTOMERS"] | None = None


class EntitlementsBody(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    entitlements: list[EntitlementIn]


def _offset(cursor: str | None, field: str, size: int) -> int | None:
    if cursor is None:
        return None
    offset = ascii_int(cursor)
    if offset is None or offset > size:
        raise bad_input("is not a cursor this server issued", field)
    return offset


def page_rows(rows: list[Any], limit: int, after: str | None,
              before: str | None) -> tuple[list[Any], dict[str, str | None]]:
    """A page of an in-memory list with the `{next, prev}` cursors (row offsets)."""
    start = _offset(after, "after", len(rows))
    end = _offset(before, "before", len(rows))
    if end is not None and start is None:
        start = max(0, end - limit)
        page = rows[start:end]
        return page, {"next": str(end) if end < len(rows) else None,
                      "prev": str(start) if start > 0 else None}
    start = start or 0
    page = rows[start:start + limit]
    stop = start + len(page)
    return page, {"next": str(stop) if stop < len(rows) else None,
                  "prev": str(start) if start > 0 else None}


def _routes(kind: str) -> list[Any]:
    base = f"/api/v1/{packages.KINDS[kind]}"
    pid = "plan_id" if kind == "plan" else "addon_id"

    async def _doc(request: Request, ident: str) -> dict[str, Any]:
        return await packages.require_package(domain(request).documents, environment(request), kind,
                                       ident)

    @post(base, name=f"{kind}_create", opt=request_body(PackageCreate))
    async def create(request: Request) -> Response:
        body = await decode_body(request, PackageCreate)
        doc = await packages.create_package(domain(request).documents, environment(request),
                                            kind, body)
        return ok(package_json.package_json(doc, kind))

    @get(base, name=f"{kind}_list")
    async def list_packages(
        request: Request,
        page: PageQuery,
    ) -> Response:
        """Creation order; `productId` matches exactly, `status` is one or more of DRAFT,
        PUBLISHED, ARCHIVED (comma-separated), `createdAt[gt|gte|lt|lte]` bound the time."""
        statuses = tuple(s.strip() for value in request.query_params.getall("status", [])
                         for s in value.split(",") if s.strip())
        found = await packages.list_packages(
            domain(request).documents, environment(request), kind, packages.PackagesQuery(
                limit=page.limit, after=page.after, before=page.before,
                product_id=request.query_params.get("productId"), statuses=statuses,
                created=tuple(created_at_bounds(request))))
        return ok([package_json.package_json(d, kind) for d in found.items],
                  pagination={"next": found.next, "prev": found.prev})

    @get(base + "/{ident:str}", name=f"{kind}_retrieve")
    async def retrieve(request: Request, ident: FromPath[str]) -> Response:
        return ok(package_json.package_json(await _doc(request, ident), kind))

    @patch(base + "/{ident:str}", name=f"{kind}_update", opt=request_body(PackageUpdate))
    async def update(request: Request, ident: FromPath[str]) -> Response:
        body = await decode_body(request, PackageUpdate)
        doc = await packages.update_package(domain(request).documents, environment(request),
                                            kind, ident, body)
        return ok(package_json.package_json(doc, kind))

    @post(base + "/{ident:str}/archive", name=f"{kind}_archive")
    async def archive(request: Request, ident: FromPath[str]) -> Response:
        doc = await packages.archive(domain(request).documents, environment(request), kind,
                                     ident)
        return ok(package_json.package_json(doc, kind))

    @post(base + "/{ident:str}/draft", name=f"{kind}_create_draft")
    async def create_draft(request: Request, ident: FromPath[str]) -> Response:
        doc = await packages.create_draft(domain(request).documents, environment(request),
                                          kind, ident)
        return ok(package_json.package_json(doc, kind))

    @delete(base + "/{ident:str}/draft", name=f"{kind}_remove_draft", status_code=200)
    async def remove_draft(request: Request, ident: FromPath[str]) -> Response:
        doc = await packages.remove_draft(domain(request).documents, environment(request),
                                          kind, ident)
        return ok({"id": doc.id})

    @post(base + "/{ident:str}/publish", name=f"{kind}_publish", opt=request_body(PublishBody))
    async def publish(request: Request, ident: FromPath[str]) -> Response:
        body = await decode_body(request, PublishBody)
        # Migrations are done before the answer (no background task to poll): taskId
        # stays null.
        await operations.publish(domain(request), environment(request), kind, ident,
                                 body.migration_type)
        return ok({"taskId": None})

    async def _charges(request: Request, ident: str, page: PageQuery,
                       overage: bool) -> Response:
        doc = await _doc(request, ident)
        rows, pagination = page_rows(package_json.charge_rows(doc, overage=overage),
                                     page.limit, page.after, page.before)
        return ok(rows, pagination=pagination)

    @get(base + "/{ident:str}/charges", name=f"{kind}_charges")
    async def list_charges(request: Request, ident: FromPath[str],
                           page: PageQuery) -> Response:
        return await _charges(request, ident, page, False)

    @get(base + "/{ident:str}/overage-charges", name=f"{kind}_overage_charges")
    async def list_overage_charges(request: Request, ident: FromPath[str],
                                   page: PageQuery) -> Response:
        return await _charges(request, ident, page, True)

    ents = base + "/{%s:str}/entitlements" % pid

    @post(ents, name=f"{kind}_entitlements_create", opt=request_body(EntitlementsBody))
    async def create_entitlements(request: Request) -> Response:
        body = await decode_body(request, EntitlementsBody)
        written = await packages.set_entitlements(
            domain(request).documents, environment(request), kind,
            request.path_params[pid], list(body.entitlements), replace=False)
        return ok([package_json.entitlement_json(e) for e in written])

    @get(ents, name=f"{kind}_entitlements_list")
    async def list_entitlements(request: Request) -> Response:
        doc = await _doc(request, request.path_params[pid])
        return ok([package_json.entitlement_json(e) for e in doc.entitlements],
                  pagination={"next": None, "prev": None})

    @patch(ents + "/{ent_id:str}", name=f"{kind}_entitlements_update",
           opt=request_body(EntitlementIn))
    async def update_entitlement(request: Request, ent_id: FromPath[str]) -> Response:
        body = await decode_body(request, EntitlementIn)
        ent = await packages.update_entitlement(
            domain(request).documents, environment(request), kind, request.path_params[pid],
            ent_id, body)
        return ok(package_json.entitlement_json(ent))

    @delete(ents + "/{ent_id:str}", name=f"{kind}_entitlements_delete", status_code=200)
    async def delete_entitlement(request: Request, ent_id: FromPath[str]) -> Response:
        gone = await packages.delete_entitlement(
            domain(request).documents, environment(request), kind, request.path_params[pid],
            ent_id)
        return ok(package_json.entitlement_json(gone))

    return [create, list_packages, retrieve, update, archive, create_draft, remove_draft,
            publish, list_charges, list_overage_charges, create_entitlements,
            list_entitlements, update_entitlement, delete_entitlement]


ROUTES = [*_routes("plan"), *_routes("addon")]
