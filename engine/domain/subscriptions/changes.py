"""What a subscription is made of — plan, billing period, add-ons, quantities, trial —
checked against the catalog and applied. Provisioning, updates, scheduled updates and
migrations all go through `resolve` (every check before anything is written) and
`apply_changes`; estimates check add-ons and trials with the same functions
(`resolve_addons`, `trial_terms`), so an estimate and the subscription it estimates
follow one rule."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from engine.domain import packages
from engine.domain.constraints import QUANTITY_MAX
from engine.domain.context import Domain
from engine.domain.errors import bad_input
from engine.domain.stored import Addon, Package, Plan
from engine.domain.subscriptions.document import Subscription
from engine.domain.subscriptions.usage_windows import settle_usage
from engine.domain.values import time_in

__all__ = [
    "QUANTITY_MAX",
    "Trial",
    "TrialOverride",
    "trial_override",
    "resolve_addons",
    "trial_terms",
    "apply_changes",
    "check_unit_quantity",
    "country_code",
    "price_periods",
    "prices_of",
    "pricing_type_of",
    "resolve",
]



async def _package(d: Domain, env: str, kind: str, ident: str, field: str) -> Package:

    return await packages.require_published(d.documents, env, kind, ident, field=field)


def price_periods(package: Package) -> set[str]:
    """The billing periods the package has prices for (empty: free, any period)."""
    charges = package.charges or {}
    return {p.get("billingPeriod") for m in charges.get("pricingModels") or ()
            for p in m.get("pricePeriods") or ()}


def pricing_type_of(package: Package) -> str:
    declared = package.pricing_type or (package.charges or {}).get("pricingType")
    if declared:
        return declared
    return "PAID" if price_periods(package) else "FREE"


def _per_unit(package: Package, feature_id: str | None) -> dict[str, Any] | None:
    for m in (package.charges or {}).get("pricingModels") or ():
        if m.get("billingModel") == "PER_UNIT" and (
                feature_id is None or m.get("featureId") == feature_id):
            return m
    return None


def _check_quantity(model: dict[str, Any] | None, quantity: Any, field: str) -> None:
    """A whole quantity (an int, or an integral Decimal of any size: compared, never
    converted) from 1 to QUANTITY_MAX, within the per-unit model's bounds."""
    if not 1 <= quantity <= QUANTITY_MAX:
        raise bad_input(f"must be from 1 to {QUANTITY_MAX}", field)
    if model is None:
        return
    low, high = model.get("minUnitQuantity"), model.get("maxUnitQuantity")
    if low is not None and quantity < int(low):
        raise bad_input(f"must be at least {low} (the plan's minimum)", field)
    if high is not None and quantity > int(high):
        raise bad_input(f"must be at most {high} (the plan's maximum)", field)


def check_unit_quantity(plan: Package, quantity: Any,
                        field: str = "unitQuantity") -> None:
    """A subscription's `unitQuantity` as provisioning takes it: 1 to QUANTITY_MAX, within
    the plan's per-unit minimum and maximum (estimates check theirs with it too)."""
    _check_quantity(_per_unit(plan, None), quantity, field)


def country_code(code: str | None) -> str | None:
    """`billingCountryCode`: two letters, uppercased (None stays None)."""
    if code is None:
        return None
    if not (len(code) == 2 and code.isascii() and code.isalpha()):
        raise bad_input("must be a two-letter country code", "billingCountryCode")
    return code.upper()


async def resolve(d: Domain, env: str, current: Subscription | None,
                  *, plan_id: str | None = None, billing_period: str | None = None,
                  addons: list[Any] | None = None, unit_quantity: int | None = None,
                  charges: list[Any] | None = None, latest: bool = False,
                  country: str | None = None) -> dict[str, Any]:
    """The changes to make to `current` (None: a new subscription), every one checked.
    `addons` items have `.id` and `.quantity`; `charges` items `.id`, `.quantity`, `.type`.
    `latest`: move to the latest published versions (a migration)."""
    changes: dict[str, Any] = {}
    if plan_id == "":
        raise bad_input("must not be empty", "planId")
    plan_id = plan_id or (current.plan_id if current is not None else None)
    if plan_id is None:
        raise bad_input("is required", "planId")
    plan_changed = current is None or plan_id != current.plan_id
    if plan_changed or latest:
        plan = await _package(d, env, "plan", plan_id, "planId")
        changes.update(planId=plan_id, planVersion=plan.version_number,
                       productId=plan.product_id, pricingType=pricing_type_of(plan))
    else:

        plan = await packages.published(d.documents, env, "plan", plan_id,
                                        current.plan_version)
        assert plan is not None
    period = billing_period or (current.billing_period if current is not None
                                else None) or "MONTHLY"
    if period not in ("MONTHLY", "ANNUALLY"):
        raise bad_input("must be MONTHLY or ANNUALLY", "billingPeriod")
    periods = price_periods(plan)
    if periods and period not in periods:
        raise bad_input(f"plan {plan_id!r} has no {period} price (it has "
                        f"{', '.join(sorted(periods))})", "billingPeriod")
    if current is None or period != current.billing_period:
        changes["billingPeriod"] = period
    if addons is not None or plan_changed or latest:
        wanted = ([(a.id, a.quantity) for a in addons] if addons is not None else
                  [(a.id, a.quantity) for a in current.addons] if current is not None else [])
        resolved = [{"id": addon.id, "quantity": quantity, "version": addon.version_number}
                    for addon, quantity in await resolve_addons(d, env, plan, wanted)]
        if current is None or resolved != msgspec.to_builtins(current.addons):
            changes["addons"] = resolved
    if unit_quantity is not None:
        check_unit_quantity(plan, unit_quantity)
        changes["unitQuantity"] = unit_quantity
    elif current is None:
        model = _per_unit(plan, None)
        changes["unitQuantity"] = int(model.get("minUnitQuantity") or 1) if model else 1
    if charges is not None:
        out = []
        for i, c in enumerate(charges):
            field = f"charges[{i}]"
            if c.type != "FEATURE":
                raise bad_input("only FEATURE charges (per-unit quantities) are supported",
                                f"{field}.type")
            model = _per_unit(plan, c.id)
            if model is None:
                raise bad_input(f"plan {plan_id!r} has no per-unit price for feature {c.id!r}",
                                f"{field}.id")
            if c.quantity != int(c.quantity):
                raise bad_input("must be a whole number", f"{field}.quantity")
            _check_quantity(model, int(c.quantity), f"{field}.quantity")
            out.append({"id": c.id, "quantity": int(c.quantity), "type": "FEATURE"})
        changes["charges"] = out
    if {"planId", "planVersion", "billingPeriod", "addons"} & changes.keys():
        country = country or (current.billing_country_code if current is not None else None)
        addon_docs = []
        held = msgspec.to_builtins(current.addons) if current is not None else []
        for a in changes.get("addons", held):
            addon_docs.append((await packages_published(d, env, a["id"],
                                                        a.get("version")), True))
        changes["prices"] = prices_of([(plan, False), *addon_docs], period, country)
    return changes


async def resolve_addons(d: Domain, env: str, plan: Package,
                         items: Sequence[tuple[str, Any]]) -> list[tuple[Addon, int]]:
    """The add-ons asked for, as (id, quantity) pairs, checked against the plan: each at
    most once, published, of the plan's product and compatible with the plan, in a whole
    quantity from 1 to QUANTITY_MAX and within the add-on's `maxQuantity`. Returns their
    latest published documents with the quantities. Errors name `addons[i]`."""
    assert isinstance(plan, Plan)
    compatible = plan.compatible_addon_ids
    seen: set[str] = set()
    out = []
    for i, (ident, quantity) in enumerate(items):
        field = f"addons[{i}]"
        if ident in seen:
            raise bad_input("each add-on at most once", f"{field}.id")
        seen.add(ident)
        addon = await _package(d, env, "addon", ident, f"{field}.id")
        assert isinstance(addon, Addon)
        if addon.product_id != plan.product_id:
            raise bad_input(f"add-on {ident!r} belongs to another product", f"{field}.id")
        if ident not in compatible:
            raise bad_input(f"add-on {ident!r} is not compatible with plan {plan.id!r}",
                            f"{field}.id")
        if type(quantity) is not int or not 1 <= quantity <= QUANTITY_MAX:
            raise bad_input(f"must be a whole number from 1 to {QUANTITY_MAX}",
                            f"{field}.quantity")
        limit = addon.max_quantity
        if limit is not None and quantity > limit:
            raise bad_input(f"must be at most {limit} (the add-on's maximum)",
                            f"{field}.quantity")
        out.append((addon, quantity))
    return out


@dataclass(frozen=True)
class Trial:
    """`trialOverrideConfiguration`: whether the subscription starts in a trial, when it
    ends (None: after the plan's default trial) and what happens then."""

    is_trial: bool
    end: int | None = None
    end_behavior: str | None = None


_END_FIELD = "trialOverrideConfiguration.trialEndDate"


class TrialOverride(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    """`trialOverrideConfiguration` as the API sends it (REST decodes into it)."""

    is_trial: bool
    trial_end_date: str | None = None
    trial_end_behavior: Literal["CONVERT_TO_PAID", "CANCEL_SUBSCRIPTION"] | None = None


def trial_override(body: TrialOverride | None) -> Trial | None:
    """`trialOverrideConfiguration` as `trial_terms` takes it."""
    if body is None:
        return None
    return Trial(body.is_trial,
                 time_in(body.trial_end_date, "trialOverrideConfiguration.trialEndDate"),
                 body.trial_end_behavior)


async def trial_terms(plan: Package, start: int, override: Trial | None,
                      eligible: Callable[[], Awaitable[bool]], *, skip: bool = False,
                      ) -> tuple[int | None, str]:
    """(trial end or None, end behavior) of a subscription to `plan` starting at `start`.
    An override decides whether there is a trial, whoever the customer; its end is its
    own date (after the start) or the plan's default trial's (which the plan must have).
    Without one the plan's default trial applies if the customer is `eligible` (never had
    a trial on the product: asked only then). `skip`: no trial at all (estimates)."""
    from engine.billing.lifecycle import trial_end_of  # noqa: PLC0415

    config = plan.default_trial_config if isinstance(plan, Plan) else None
    behavior = config.trial_end_behavior if config else "CONVERT_TO_PAID"
    if skip:
        return None, behavior
    if override is not None:
        behavior = override.end_behavior or "CONVERT_TO_PAID"
        if not override.is_trial:
            return None, behavior
        if override.end is not None:
            if override.end <= start:
                raise bad_input("must be after the start date", _END_FIELD)
            return override.end, behavior
        if config is None:
            raise bad_input(f"plan {plan.id!r} has no default trial: give trialEndDate",
                            _END_FIELD)
    elif config is None or not await eligible():
        return None, behavior
    return trial_end_of(start, config.duration, config.units or "DAY"), behavior


async def packages_published(d: Domain, env: str, ident: str,
                             version: int | None) -> Package:

    doc = await packages.published(d.documents, env, "addon", ident, version)
    assert doc is not None, ident  # subscriptions only point at published versions
    return doc


def prices_of(packages: list[tuple[Package, bool]], period: str,
              country: str | None) -> list[dict[str, Any]]:
    """The contract's `Subscription.prices`: each pricing model's price for the billing
    period, the billing country's if it has one (packages: (document, is an add-on))."""
    from engine.billing.pricing import select_price_period  # noqa: PLC0415

    out = []
    for package, is_addon in packages:
        for model in (package.charges or {}).get("pricingModels") or ():
            chosen = select_price_period(model, period, country)
            if chosen is None:
                continue
            price = chosen.get("price") or {}
            out.append({
                "addonId": package.id if is_addon else None,
                "featureId": model.get("featureId"),
                "baseCharge": model.get("billingModel") == "FLAT_FEE",
                "billingModel": model.get("billingModel"),  # extension
                "billingCountryCode": chosen.get("billingCountryCode"),
                "amount": price.get("amount"),  # decimal strings, as the package stores them
                "currency": price.get("currency"),
                "blockSize": chosen.get("blockSize"),
                "tiers": [{"upTo": t.get("upTo"),
                           "unitPrice": _money(t.get("unitPrice")),
                           "flatPrice": _money(t.get("flatPrice"))}
                          for t in chosen.get("tiers") or ()] or None,
            })
    return out


def _money(m: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if m is None else {"amount": m["amount"], "currency": m.get("currency")}


async def apply_changes(d: Domain, env: str, doc: Subscription, changes: dict[str, Any],
                        at: int, *, pending: Sequence[Subscription] = ()) -> None:
    """Apply resolved changes at time `at`. A new billing period restarts the billing
    cycle at `at` (as a change of plan interval does with card processors); in a trial the
    cycle still starts at the trial's end. The old terms' usage windows are settled at
    `at` first (`usage_windows`; `pending`: the customer's other subscriptions changed and
    not written yet)."""
    await settle_usage(d, env, doc, at, pending=pending)
    if "billingPeriod" in changes and doc.billing_period != changes["billingPeriod"]:
        trial_end = doc.trial_end
        if (trial_end is None or at >= trial_end) and at > doc.start:
            doc.anchor = at  # before the start, the first period still starts then
    doc.apply(changes)
