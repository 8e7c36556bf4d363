"""Products: create, update, archive and unarchive, duplicate (with DRAFT copies of their
plans and add-ons)."""

from __future__ import annotations

import copy
from typing import Any

import msgspec
from msgspec import UNSET, UnsetType

from engine.domain import stored
from engine.domain.context import Documents as Catalog
from engine.domain.errors import DomainError, bad_input
from engine.domain.packages.bodies import _sibling
from engine.domain.packages.checks import _check_id, _name
from engine.domain.packages.shapes import ProductCreate, ProductUpdate, _camel, convert
from engine.domain.packages.store import _NAMES, KINDS, _lock, _table, _touch, get_package
from engine.domain.stored import Addon, Package, Plan, Product

# -- products -----------------------------------------------------------------------------

async def get_product(catalog: Catalog, env: str, ident: str) -> Product | None:
    return await catalog.get("products", env, ident)


async def _product(catalog: Catalog, env: str, ident: str) -> Product:
    doc = await get_product(catalog, env, ident)
    if doc is None:
        raise DomainError(404, "ProductNotFound", f"product {ident!r} was not found", "id")
    return copy.deepcopy(doc)


async def _apply_product(catalog: Catalog, env: str, doc: Product, b: ProductUpdate) -> None:
    if b.display_name is not UNSET:
        doc.display_name = _name(b.display_name, "displayName")
    if b.description is not UNSET:
        doc.description = b.description
    if b.metadata is not UNSET:
        doc.metadata = b.metadata or {}
    if b.multiple_subscriptions is not UNSET:
        doc.multiple_subscriptions = b.multiple_subscriptions
    if b.usage_reset_cutoff_rule is not UNSET:
        rule = b.usage_reset_cutoff_rule
        doc.usage_reset_cutoff_rule = None if rule is None else stored.UsageResetCutoffRule(
            rule.behavior)
    if b.product_settings is not UNSET:
        s = b.product_settings
        if s is None:
            doc.product_settings = None
        else:
            for name in ("downgrade_plan_id", "subscription_start_plan_id"):
                plan_id = getattr(s, name)
                if plan_id is not None:
                    await _sibling(catalog, env, "plan", plan_id, doc.id,
                                   f"productSettings.{_camel(name)}")
            doc.product_settings = stored.ProductSettings(
                subscription_cancellation_time=s.subscription_cancellation_time,
                subscription_end_setup=s.subscription_end_setup,
                subscription_start_setup=s.subscription_start_setup,
                downgrade_plan_id=s.downgrade_plan_id,
                prorate_at_end_of_billing_period=s.prorate_at_end_of_billing_period,
                subscription_start_plan_id=s.subscription_start_plan_id)


async def create_product(catalog: Catalog, env: str, body: dict) -> Product:
    b = convert(body, ProductCreate)
    _check_id(b.id)
    if b.display_name is UNSET:
        raise bad_input("is required", "displayName")
    doc = Product(id=b.id)
    await _apply_product(catalog, env, doc, b)
    if not await catalog.insert("products", env, _touch(catalog, doc, created=True)):
        raise DomainError(409, "DuplicatedEntityNotAllowed", f"product {b.id!r} exists already",
                       "id")
    return doc


async def update_product(catalog: Catalog, env: str, ident: str, changes: dict) -> Product:
    b = convert(changes, ProductUpdate)
    async with _lock(catalog, env, "product", ident):
        doc = await _product(catalog, env, ident)
        await _apply_product(catalog, env, doc, b)
        await catalog.replace("products", env, _touch(catalog, doc))
        return doc


async def archive_product(catalog: Catalog, env: str, ident: str,
                          archived: bool = True) -> Product:
    """Archived products take no new plans, add-ons or subscriptions (their packages'
    subscriptions go on). `archived=False` restores it."""
    async with _lock(catalog, env, "product", ident):
        doc = await _product(catalog, env, ident)
        if (doc.archived_at is not None) != archived:
            _touch(catalog, doc)
            doc.archived_at = doc.updated_at if archived else None
            await catalog.replace("products", env, doc)
        return doc


async def unarchive_product(catalog: Catalog, env: str, ident: str) -> Product:
    return await archive_product(catalog, env, ident, archived=False)


async def _all_packages(catalog: Catalog, env: str, kind: str,
                        product_id: str) -> list[Package]:
    out: list[Package] = []
    after = None
    while True:
        page = await catalog.page(_table(kind), env, 100, after, None,
                                  equal={"product_id": product_id})
        out.extend(page.items)
        if page.next is None:
            return out
        after = page.next


async def duplicate_product(catalog: Catalog, env: str, ident: str, target_id: str, *,
                            display_name: str | None = None,
                            description: str | None | UnsetType = UNSET) -> Product:
    """A copy of product `ident` as `target_id`, with a DRAFT copy (version 1) of each of
    its live plans and add-ons, their working copies' entitlements and charges included.
    The copies' ids are `<targetId>-<original id>`; their references (parent plan,
    compatible add-ons, dependencies) point at the copies."""
    _check_id(target_id, "targetId")
    source = await _product(catalog, env, ident)
    if await get_product(catalog, env, target_id) is not None:
        raise DomainError(409, "DuplicatedEntityNotAllowed",
                       f"product {target_id!r} exists already", "targetId")
    packages = {kind: [d for d in await _all_packages(catalog, env, kind, ident)
                       if d.status != "ARCHIVED"] for kind in KINDS}
    rename: dict[str, dict[str, str]] = {k: {d.id: f"{target_id}-{d.id}" for d in docs}
                                         for k, docs in packages.items()}
    for kind, names in rename.items():
        for new in names.values():
            _check_id(new, "targetId")
            if await get_package(catalog, env, kind, new) is not None:
                raise DomainError(409, "DuplicatedEntityNotAllowed",
                               f"{_NAMES[kind]} {new!r} (the copy) exists already",
                               "targetId")
    product = copy.deepcopy(source)
    product.id, product.archived_at = target_id, None
    if display_name is not None:
        product.display_name = _name(display_name, "displayName")
    if description is not UNSET:
        product.description = description
    settings = product.product_settings
    if settings is not None:
        if settings.downgrade_plan_id:
            settings.downgrade_plan_id = rename["plan"].get(settings.downgrade_plan_id)
        if settings.subscription_start_plan_id:
            settings.subscription_start_plan_id = rename["plan"].get(
                settings.subscription_start_plan_id)
    if not await catalog.insert("products", env, _touch(catalog, product, created=True)):
        raise DomainError(409, "DuplicatedEntityNotAllowed",
                       f"product {target_id!r} exists already", "targetId")
    for kind in ("addon", "plan"):
        for d in packages[kind]:
            new = copy.deepcopy(d)
            new.archived_at = new.migration_type = new.published_at = None
            new.id, new.product_id = rename[kind][d.id], target_id
            new.status, new.version_number = "DRAFT", 1
            if isinstance(new, Plan):
                if new.parent_plan_id:
                    new.parent_plan_id = rename["plan"].get(new.parent_plan_id)
                new.compatible_addon_ids = [rename["addon"][a] for a in new.compatible_addon_ids
                                            if a in rename["addon"]]
            else:
                assert isinstance(new, Addon)
                new.dependencies = [rename["addon"][a] for a in new.dependencies
                                    if a in rename["addon"]]
            await catalog.insert(_table(kind), env, _touch(catalog, new, created=True))
    return product


class ProductsQuery(msgspec.Struct, frozen=True, kw_only=True):
    limit: int = 20
    after: str | None = None
    before: str | None = None
    id: str | None = None
    statuses: tuple[str, ...] = ()  # PUBLISHED, ARCHIVED (none: both)
    created: tuple[tuple[str, int], ...] = ()


async def list_products(catalog: Catalog, env: str, q: ProductsQuery) -> Any:
    """A page of products in creation order (`.items`, `.next`, `.prev`)."""
    wanted = set(q.statuses)
    if wanted - {"PUBLISHED", "ARCHIVED"}:
        raise bad_input("must be PUBLISHED, ARCHIVED or both, comma-separated", "status")
    archived = None if len(wanted) != 1 else wanted == {"ARCHIVED"}
    return await catalog.page("products", env, q.limit, q.after, q.before, archived,
                              created=list(q.created), equal={"id": q.id})

