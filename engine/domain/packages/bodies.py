"""Plan and add-on bodies: what a create or update body sets (names, parent plan,
compatible add-ons, trial, maxQuantity, dependencies, charges), validated and copied
onto the document."""

from __future__ import annotations

from msgspec import UNSET

from engine.domain import stored
from engine.domain.context import Documents as Catalog
from engine.domain.errors import DomainError, bad_input
from engine.domain.packages.charges import _charges
from engine.domain.packages.checks import _name, _whole, money
from engine.domain.packages.shapes import (
    _ADDON_ONLY,
    _COSMETIC,
    _PLAN_ONLY,
    PackageUpdate,
    TrialConfig,
    _camel,
)
from engine.domain.packages.store import _NAMES, _require_draft, get_package
from engine.domain.stored import Addon, Package, Plan

# -- packages -----------------------------------------------------------------------------

# A trial of at most ten years (a longer one is a free plan, not a trial).
TRIAL_MAX = {"DAY": 3650, "MONTH": 120}


def _trial(t: TrialConfig) -> stored.TrialConfig:
    duration = _whole(t.duration, "defaultTrialConfig.duration")
    if duration > TRIAL_MAX[t.units]:
        raise bad_input(f"must be at most {TRIAL_MAX[t.units]} for units {t.units}",
                        "defaultTrialConfig.duration")
    return stored.TrialConfig(
        duration=duration, units=t.units,
        trial_end_behavior=t.trial_end_behavior or "CONVERT_TO_PAID",
        budget=None if t.budget is None else stored.TrialBudget(
            has_soft_limit=t.budget.has_soft_limit,
            limit=money(t.budget.limit, "defaultTrialConfig.budget.limit")))


async def _sibling(catalog: Catalog, env: str, kind: str, ident: str, product_id: str,
                   field: str) -> Package:
    other = await get_package(catalog, env, kind, ident)
    if other is None:
        raise bad_input(f"{_NAMES[kind]} {ident!r} was not found", field)
    if other.product_id != product_id:
        raise bad_input(f"{_NAMES[kind]} {ident!r} belongs to product "
                        f"{other.product_id!r}, not {product_id!r}", field)
    if other.status == "ARCHIVED":
        raise bad_input(f"{_NAMES[kind]} {ident!r} is archived", field)
    return other


async def _apply(catalog: Catalog, env: str, kind: str, doc: Package,
                 body: PackageUpdate) -> None:
    """Copy what `body` sets onto `doc`, validating it (the status change is the caller's)."""
    for name in _PLAN_ONLY if kind == "addon" else _ADDON_ONLY:
        if getattr(body, name) is not UNSET:
            raise bad_input(f"not a field of a{'n add-on' if kind == 'addon' else ' plan'}",
                            _camel(name))
    structural = [n for n in ("charges", *_PLAN_ONLY, *_ADDON_ONLY)
                  if getattr(body, n) is not UNSET]
    if doc.status == "ARCHIVED" and (structural or any(
            getattr(body, n) is not UNSET for n in _COSMETIC)):
        raise DomainError(409, "PackageArchived",
                       f"{_NAMES[kind]} {doc.id!r} is archived and cannot change")
    if structural and doc.status != "DRAFT":
        _require_draft(doc, kind, _camel(structural[0]))
    if body.display_name is not UNSET:
        doc.display_name = _name(body.display_name, "displayName")
    if body.description is not UNSET:
        doc.description = body.description
    if body.billing_id is not UNSET:
        doc.billing_id = body.billing_id
    if body.metadata is not UNSET:
        doc.metadata = body.metadata or {}
    if body.hidden is not UNSET:
        doc.hidden = bool(body.hidden)
    product = doc.product_id
    if isinstance(doc, Plan):
        if body.parent_plan_id is not UNSET:
            parent = body.parent_plan_id
            if parent is not None:
                if parent == doc.id:
                    raise bad_input("a plan cannot be its own parent", "parentPlanId")
                seen = {doc.id}
                step: str | None = parent
                while step is not None:
                    if step in seen:
                        raise bad_input("the parent chain would loop back to this plan",
                                        "parentPlanId")
                    seen.add(step)
                    up = await _sibling(catalog, env, "plan", step, product, "parentPlanId")
                    assert isinstance(up, Plan)
                    step = up.parent_plan_id
            doc.parent_plan_id = parent
        if body.compatible_addon_ids is not UNSET:
            ids = body.compatible_addon_ids or []
            if len(set(ids)) != len(ids):
                raise bad_input("lists an add-on twice", "compatibleAddonIds")
            for i, a in enumerate(ids):
                await _sibling(catalog, env, "addon", a, product, f"compatibleAddonIds[{i}]")
            doc.compatible_addon_ids = list(ids)
        if body.default_trial_config is not UNSET:
            t = body.default_trial_config
            doc.default_trial_config = None if t is None else _trial(t)
    else:
        assert isinstance(doc, Addon)
        if body.max_quantity is not UNSET:
            q = body.max_quantity
            if q is not None and q < 1:
                raise bad_input("must be at least 1 (null: no maximum)", "maxQuantity")
            doc.max_quantity = q
        if body.dependencies is not UNSET:
            ids = body.dependencies or []
            if len(set(ids)) != len(ids):
                raise bad_input("lists an add-on twice", "dependencies")
            for i, a in enumerate(ids):
                if a == doc.id:
                    raise bad_input("an add-on cannot depend on itself", f"dependencies[{i}]")
                await _sibling(catalog, env, "addon", a, product, f"dependencies[{i}]")
            doc.dependencies = list(ids)
    if body.charges is not UNSET:
        if body.charges is None:
            doc.charges = None
        else:
            doc.charges = await _charges(catalog, env, body.charges)
            doc.pricing_type = doc.charges["pricingType"]
