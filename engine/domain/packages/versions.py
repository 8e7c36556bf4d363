"""The versions of a plan or add-on: create (DRAFT v1), update, publish (DRAFT ->
PUBLISHED, kept in package_versions), create and remove a draft, archive."""

from __future__ import annotations

import copy
from typing import Any

import msgspec
from msgspec import UNSET

from engine.domain.context import Documents as Catalog
from engine.domain.errors import DomainError, bad_input
from engine.domain.packages.bodies import _apply
from engine.domain.packages.checks import _check_id
from engine.domain.packages.products import get_product
from engine.domain.packages.shapes import PackageCreate, PackageUpdate, convert
from engine.domain.packages.store import (
    _NAMES,
    _lock,
    _store_version,
    _table,
    _touch,
    _working,
    get_package,
    published,
)
from engine.domain.stored import Addon, Package, Plan


async def create_package(catalog: Catalog, env: str, kind: str, body: dict) -> Package:
    """A new plan or add-on: DRAFT version 1 (status PUBLISHED publishes it at once).
    409 if the id is taken; 400 for an unknown or archived product."""
    table = _table(kind)
    b = convert(body, PackageCreate)
    _check_id(b.id)
    if b.display_name is UNSET:
        raise bad_input("is required", "displayName")
    if not b.product_id:
        raise bad_input("is required", "productId")
    product = await get_product(catalog, env, b.product_id)
    if product is None:
        raise bad_input(f"product {b.product_id!r} was not found", "productId")
    if product.archived_at is not None:
        raise bad_input(f"product {b.product_id!r} is archived", "productId")
    status = "DRAFT" if b.status is UNSET else b.status
    if status == "ARCHIVED":
        raise bad_input("a new package is DRAFT or PUBLISHED", "status")
    doc: Package = (Plan if kind == "plan" else Addon)(
        id=b.id, product_id=b.product_id, pricing_type=b.pricing_type)
    await _apply(catalog, env, kind, doc, b)
    if await get_package(catalog, env, kind, b.id) is not None:
        raise DomainError(409, "DuplicatedEntityNotAllowed",
                       f"{_NAMES[kind]} {b.id!r} exists already", "id")
    async with _lock(catalog, env, kind, b.id):
        _touch(catalog, doc, created=True)
        if not await catalog.insert(table, env, doc):
            raise DomainError(409, "DuplicatedEntityNotAllowed",
                           f"{_NAMES[kind]} {b.id!r} exists already", "id")
    if status == "PUBLISHED":
        doc = await publish(catalog, env, kind, b.id)
    return doc


async def update_package(catalog: Catalog, env: str, kind: str, ident: str,
                         changes: dict) -> Package:
    """Apply `changes` (the PATCH body: cosmetic fields on any live package, structure
    and `charges` on a DRAFT only; `status` PUBLISHED publishes, ARCHIVED archives, DRAFT
    creates a draft). Cosmetic changes to a PUBLISHED package reach its published version
    too (names are not prices)."""
    b = convert(changes, PackageUpdate)
    if b.status is UNSET or b.status == "DRAFT":
        async with _lock(catalog, env, kind, ident):
            doc = await _working(catalog, env, kind, ident)
            if b.status == "DRAFT" and doc.status == "ARCHIVED":
                raise DomainError(409, "PackageArchived", f"{_NAMES[kind]} {ident!r} is archived")
            if b.status == "DRAFT" and doc.status == "PUBLISHED":
                doc = _draft_of(doc)
            await _apply(catalog, env, kind, doc, b)
            await catalog.replace(_table(kind), env, _touch(catalog, doc))
            if doc.status == "PUBLISHED":
                await _store_version(catalog, env, kind, doc)
            return doc
    async with _lock(catalog, env, kind, ident):
        doc = await _working(catalog, env, kind, ident)
        await _apply(catalog, env, kind, doc, b)
        await catalog.replace(_table(kind), env, _touch(catalog, doc))
        if doc.status == "PUBLISHED":
            await _store_version(catalog, env, kind, doc)
    if b.status == "PUBLISHED" and doc.status != "PUBLISHED":
        return await publish(catalog, env, kind, ident)
    if b.status == "ARCHIVED":
        return await archive(catalog, env, kind, ident)
    return doc


def _check_publishable(doc: Package, kind: str) -> None:
    if doc.pricing_type == "PAID" and not (doc.charges or {}).get("pricingModels"):
        raise bad_input("a PAID package is published with its prices: set charges first",
                        "charges")


async def publish(catalog: Catalog, env: str, kind: str, ident: str, *,
                  migration_type: str = "NEW_CUSTOMERS") -> Package:
    """DRAFT vN -> PUBLISHED vN, kept in package_versions. 409 if there is no draft.
    `migration_type` ALL_CUSTOMERS is recorded on the version (`_migrationType`) for the
    subscriptions side to move existing subscribers."""
    async with _lock(catalog, env, kind, ident):
        doc = await _working(catalog, env, kind, ident)
        if doc.status != "DRAFT":
            raise DomainError(409, "PackageNotDraft",
                           f"{_NAMES[kind]} {ident!r} is {doc.status}: there is no draft "
                           "to publish")
        _check_publishable(doc, kind)
        if isinstance(doc, Plan) and doc.parent_plan_id:
            if await published(catalog, env, "plan", doc.parent_plan_id) is None:
                raise bad_input(f"parent plan {doc.parent_plan_id!r} is not published",
                                "parentPlanId")
        doc.status = "PUBLISHED"
        doc.migration_type = migration_type
        _touch(catalog, doc)
        doc.published_at = doc.updated_at
        await _store_version(catalog, env, kind, doc)
        await catalog.replace(_table(kind), env, doc)
        return doc


def _draft_of(doc: Package) -> Package:
    draft = copy.deepcopy(doc)
    draft.status = "DRAFT"
    draft.version_number = doc.version_number + 1
    draft.migration_type = draft.published_at = None
    return draft


async def create_draft(catalog: Catalog, env: str, kind: str, ident: str) -> Package:
    """PUBLISHED vN -> DRAFT vN+1 as the working copy (the published vN stays in force).
    A package that is a draft already is returned as it is; 409 on an archived one."""
    async with _lock(catalog, env, kind, ident):
        doc = await _working(catalog, env, kind, ident)
        if doc.status == "DRAFT":
            return doc
        if doc.status == "ARCHIVED":
            raise DomainError(409, "PackageArchived", f"{_NAMES[kind]} {ident!r} is archived")
        draft = _touch(catalog, _draft_of(doc))
        await catalog.replace(_table(kind), env, draft)
        return draft


async def remove_draft(catalog: Catalog, env: str, kind: str, ident: str) -> Package:
    """Drop the draft: the latest published version is the working copy again. 409 if
    there is no draft, or the package was never published (archive it instead)."""
    async with _lock(catalog, env, kind, ident):
        doc = await _working(catalog, env, kind, ident)
        if doc.status != "DRAFT":
            raise DomainError(409, "PackageNotDraft",
                           f"{_NAMES[kind]} {ident!r} is {doc.status}: no draft to remove")
        latest = await published(catalog, env, kind, ident)
        if latest is None:
            raise DomainError(409, "PackageNeverPublished",
                           f"{_NAMES[kind]} {ident!r} was never published: its draft is all "
                           "there is (archive it instead)")
        restored = copy.deepcopy(latest)
        restored.created_at = doc.created_at
        await catalog.replace(_table(kind), env, _touch(catalog, restored))
        return restored


async def archive(catalog: Catalog, env: str, kind: str, ident: str) -> Package:
    """No new subscriptions to the package; its published versions stay readable for the
    subscriptions that have them. Archiving again is a no-op."""
    async with _lock(catalog, env, kind, ident):
        doc = await _working(catalog, env, kind, ident)
        if doc.status == "ARCHIVED":
            return doc
        doc.status = "ARCHIVED"
        _touch(catalog, doc)
        doc.archived_at = doc.updated_at
        await catalog.replace(_table(kind), env, doc)
        return doc


class PackagesQuery(msgspec.Struct, frozen=True, kw_only=True):
    limit: int = 20
    after: str | None = None
    before: str | None = None
    product_id: str | None = None
    statuses: tuple[str, ...] = ()  # DRAFT, PUBLISHED, ARCHIVED (none: any)
    created: tuple[tuple[str, int], ...] = ()


_STATUSES = ("ARCHIVED", "DRAFT", "PUBLISHED")


async def list_packages(catalog: Catalog, env: str, kind: str, q: PackagesQuery) -> Any:
    """A page of plans or add-ons (working copies) in creation order."""
    unknown = [v for v in q.statuses if v not in _STATUSES]
    if unknown:
        raise bad_input(f"unknown value {unknown[0]!r}; one of {', '.join(_STATUSES)}",
                        "status")
    return await catalog.page(_table(kind), env, q.limit, q.after, q.before,
                              created=list(q.created), equal={"product_id": q.product_id},
                              any_of={"status": list(q.statuses)})

