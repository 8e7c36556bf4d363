"""Subscription estimates: what a new subscription or a change would cost, without
making it (the rules; gateway/routes/estimates.py has the REST and GraphQL-shaped answers).

What is priced (engine/billing/pricing.py has the rules and the rounding):
- a new subscription (`estimate_new`): the immediate invoice is the first billing period
  from the start (`startDate` or now): recurring charges paid in advance plus one-off
  charges; nothing during a trial (the plan's default trial unless
  `trialOverrideConfiguration.isTrial` is false or `skipTrial`), decided by the function
  provisioning uses (`changes.trial_terms`). The recurring invoice is the next period's
  (usage-based charges with the `billableFeatures` quantities are billed with it). If the
  customer already runs a subscription on the plan's product, the new one replaces it: the
  proration's credit is the unused part of the running one, `is_downgrade` says the new
  recurring price is lower.
- an update (`estimate_update`): the proration of the change now inside the current
  billing period (credit for the unused part of the current recurring price, debit for
  the new one, both after their discount); the immediate invoice is that net amount plus
  tax, the recurring one the price after the change. Nothing is due for a change during a
  trial.
Coupons: `appliedCoupon.couponId` or a promotion code (a coupon id, as in provisioning),
`appliedCoupon.discount` (ad hoc: estimates accept it although provisioning does not), else
the customer's `couponId` (new) or the subscription's coupon (update). Tax: exclusive, the
`billingInformation.taxPercentage` if given, else the billing country's rate from the
Domain's `tax_rates` (CREDITD_TAX_RATES), else none.

The inputs are Structs in the API's names (REST decodes into them directly; GraphQL's
`EstimateSubscriptionInput` has the same names).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

import msgspec

from engine.billing.money import MoneyError
from engine.billing.periods import billing_period, months_of
from engine.billing.pricing import (
    Coupon,
    Invoice,
    Line,
    Quantities,
    build_invoice,
    coupon_applies,
    coupon_from_discount,
    coupon_from_doc,
    invoice_currency,
    minimum_spend_line,
    months_between,
    price_package,
    tax_rate_for,
)
from engine.billing.proration import Proration, prorate, prorated
from engine.core.amounts import from_units
from engine.domain import packages
from engine.domain.context import Domain, require_customer
from engine.domain.errors import DomainError, bad_input
from engine.domain.stored import Coupon as StoredCoupon
from engine.domain.stored import Package, unset_none
from engine.domain.subscriptions import catch_up as subscriptions
from engine.domain.subscriptions.catch_up import trial_eligible
from engine.domain.subscriptions.changes import (
    TrialOverride,
    check_unit_quantity,
    country_code,
    price_periods,
    resolve_addons,
    trial_override,
    trial_terms,
)
from engine.domain.subscriptions.document import Subscription
from engine.domain.subscriptions.operations import AddonIn, ChargeIn
from engine.domain.values import time_in, units_in

__all__ = ["Estimate", "EstimateBody", "EstimateUpdateBody", "PreviewBody", "estimate_new",
           "estimate_update"]



# --- inputs ------------------------------------------------------------------------------

class _S(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    pass


class AmountOff(_S):
    amount: Decimal
    currency: str


class Discount(_S):
    amounts_off: list[AmountOff] | None = None
    description: str | None = None
    duration_in_months: Decimal | None = None
    name: str | None = None
    percent_off: Decimal | None = None


class CouponConfiguration(_S):
    start_date: str | None = None


class AppliedCoupon(_S):
    billing_coupon_id: str | None = None
    configuration: CouponConfiguration | None = None
    coupon_id: str | None = None
    discount: Discount | None = None
    promotion_code: str | None = None


class GqlAddonIn(_S):
    addon_id: str
    quantity: int = 1


class BillableFeature(_S):
    feature_id: str
    quantity: Decimal


class _Common(_S):
    applied_coupon: AppliedCoupon | None = None
    billable_features: list[BillableFeature] | None = None
    charges: list[ChargeIn] | None = None
    environment_id: str | None = None  # GraphQL inputs: the key's environment wins


class _New(_Common):
    customer_id: str = ""
    plan_id: str = ""
    billing_country_code: str | None = None
    billing_information: dict[str, Any] | None = None
    billing_period: Literal["MONTHLY", "ANNUALLY"] | None = None
    paying_customer_id: str | None = None
    resource_id: str | None = None
    start_date: str | None = None
    trial_override_configuration: TrialOverride | None = None


class PreviewBody(_New):
    addons: list[AddonIn] | None = None
    billing_cycle_anchor: Literal["UNCHANGED", "NOW"] | None = None
    schedule_strategy: Literal["END_OF_BILLING_PERIOD", "END_OF_BILLING_MONTH",
                               "IMMEDIATE"] | None = None
    unit_quantity: int | None = None


class EstimateBody(_New):
    addons: list[GqlAddonIn] | None = None
    price_unit_amount: Decimal | None = None
    promotion_code: str | None = None
    skip_trial: bool | None = None
    unit_quantity: Decimal | None = None


class EstimateUpdateBody(_Common):
    subscription_id: str = ""
    addons: list[GqlAddonIn] | None = None
    promotion_code: str | None = None
    unit_quantity: Decimal | None = None
    # Extensions (as PATCH /api/v1/subscriptions/{id} takes them): another billing period
    # (the cycle restarts at the change) and another plan of the product.
    billing_period: Literal["MONTHLY", "ANNUALLY"] | None = None
    plan_id: str | None = None


@dataclass(frozen=True)
class Estimate:
    """What is due now (over `now_range`) and at the next renewal (over `next_range`)."""

    now: Invoice
    now_range: tuple[int, int]
    next: Invoice
    next_range: tuple[int, int]
    country: str | None
    proration: Proration | None
    is_downgrade: bool
    scheduled: bool  # the subscription has updates scheduled
    free_items: list[dict[str, Any]]  # add-ons without a price: {id, quantity}


# --- catalog reads ---------------------------------------------------------------------

async def _package(d: Domain, env: str, kind: str, ident: str, field: str,
                   version: int | None = None) -> Package:
    """A published package (given or latest version) that may be subscribed to."""

    catalog = d.documents
    name = "PlanNotFound" if kind == "plan" else "AddonNotFound"
    if version is not None:  # what a subscription already has: archived or not
        doc = await packages.published(catalog, env, kind, ident, version)
        if doc is None:
            raise DomainError(404, name, f"{kind} {ident!r} version {version} was not found", field)
        return doc
    return await packages.require_published(catalog, env, kind, ident, field=field)


def _pricing_coupon(doc: StoredCoupon) -> Coupon:
    # The billing layer reads a coupon in its stored (wire) names.
    return coupon_from_doc(msgspec.to_builtins(doc))


@dataclass
class _Applied:
    coupon: Coupon
    start: int


async def _coupon_by_id(d: Domain, env: str, ident: str, field: str) -> Coupon:
    doc = await d.documents.get("coupons", env, ident)
    if doc is None:
        raise DomainError(404, "CouponNotFound", f"coupon {ident!r} was not found", field)
    if doc.archived_at is not None:
        raise bad_input(f"coupon {ident!r} is archived", field)
    return _pricing_coupon(doc)


async def _applied(d: Domain, env: str, given: AppliedCoupon | None, promotion_code: str | None,
                   default_start: int) -> _Applied | None:
    """The coupon asked for: a stored coupon by id (a promotion code is a coupon id, as in
    provisioning: creditd has no separate codes) or an ad-hoc discount."""
    start = default_start
    if given is not None and given.configuration is not None and \
            given.configuration.start_date is not None:
        start = time_in(given.configuration.start_date,
                           "appliedCoupon.configuration.startDate") or start
    if given is not None and given.coupon_id:
        ident, field = given.coupon_id, "appliedCoupon.couponId"
    elif given is not None and given.promotion_code:
        ident, field = given.promotion_code, "appliedCoupon.promotionCode"
    elif promotion_code:
        ident, field = promotion_code, "promotionCode"
    else:
        ident = field = None
    if ident is not None and given is not None and given.discount is not None:
        raise bad_input("give a coupon or a discount, not both", "appliedCoupon.discount")
    if ident is not None:
        return _Applied(await _coupon_by_id(d, env, ident, field), start)
    if given is not None and given.discount is not None:
        try:
            coupon = coupon_from_discount(msgspec.to_builtins(given.discount))
        except MoneyError as exc:
            raise bad_input(exc.reason, exc.field) from None
        return _Applied(coupon, start)
    return None


async def _stored_coupon(d: Domain, env: str, ident: str | None, start: int) -> _Applied | None:
    """A coupon a customer (`couponId`) or subscription (`coupons[0].id`) carries; one
    deleted since is ignored, an archived one still counts (it was applied before)."""
    if not ident:
        return None
    doc = await d.documents.get("coupons", env, ident)
    return None if doc is None else _Applied(_pricing_coupon(doc), start)


# --- pricing ---------------------------------------------------------------------------

def _quantities(unit_quantity: Decimal | int | None, features: list[BillableFeature] | None,
                charges: list[ChargeIn] | None, base: Quantities | None = None) -> Quantities:
    feature_q = dict(base.features) if base else {}
    credit_q = dict(base.credits) if base else {}
    for i, f in enumerate(features or ()):
        feature_q[f.feature_id] = _feature_quantity(f.quantity,
                                                    f"billableFeatures[{i}].quantity")
    for i, c in enumerate(charges or ()):
        (feature_q if c.type == "FEATURE" else credit_q)[c.id] = _feature_quantity(
            c.quantity, f"charges[{i}].quantity")
    unit = base.unit_quantity if base else None
    if unit_quantity is not None:
        if unit_quantity < 0:
            raise bad_input("must not be negative", "unitQuantity")
        unit = Decimal(unit_quantity)
    return Quantities(unit_quantity=unit, features=feature_q, credits=credit_q)


def _feature_quantity(quantity: Decimal, field: str) -> Decimal:
    """A feature or credit quantity priced (`billableFeatures`, `charges`) as the API takes
    any amount (engine.domain.values.units_in): at most 10^12, rounded to 5 decimals."""
    if quantity < 0:
        raise bad_input("must not be negative", field)
    return from_units(units_in(quantity, field, allow_zero=True))


def _unit_quantity(plan: Package, unit: Decimal | int | None) -> int | None:
    """A `unitQuantity` asked for, checked as provisioning checks it (a whole number, 1 to
    QUANTITY_MAX, within the plan's per-unit bounds) before anything is priced."""
    if unit is None:
        return None
    if isinstance(unit, Decimal) and unit != unit.to_integral_value():
        raise bad_input("must be a whole number", "unitQuantity")
    check_unit_quantity(plan, unit)  # compares only: a huge Decimal is never converted
    return int(unit)


def _lines(plan: Package, addons: list[tuple[Package, int]], period: str,
           country: str | None, quantities: Quantities) -> list[Line]:
    try:
        lines = price_package(plan.charges, billing_period=period, country=country,
                              quantities=quantities, package_id=plan.id,
                              name=plan.display_name or plan.id)
        for addon, quantity in addons:
            lines += price_package(addon.charges, billing_period=period,
                                   country=country, quantities=quantities,
                                   package_id=addon.id, multiplier=quantity,
                                   name=addon.display_name or addon.id)
        invoice_currency(lines)
    except MoneyError as exc:
        raise bad_input(exc.reason, exc.field) from None
    return lines


def _invoice(plan: Package, lines: list[Line], period: str, currency: str,
             applied: _Applied | None, invoice_start: int, first: bool,
             tax_rate: Decimal | None) -> Invoice:
    """An invoice of these lines (with the plan's minimum spend) for a period starting at
    `invoice_start`, discounted if the coupon still applies then."""
    sub_total = sum((ln.sub_total for ln in lines), Decimal(0))
    extra = minimum_spend_line(plan.charges, period, sub_total, currency)
    if extra is not None:
        lines = [*lines, extra]
    coupon = None
    if applied is not None and coupon_applies(
            applied.coupon, months_elapsed=months_between(applied.start, invoice_start),
            first_invoice=first):
        coupon = applied.coupon
    return build_invoice(lines, currency, coupon=coupon, tax_rate=tax_rate)


def _tax_rate(d: Domain, info: dict[str, Any] | None,
              country: str | None) -> Decimal | None:
    given = (info or {}).get("taxPercentage")
    if given is not None:
        try:
            rate = Decimal(str(given))
        except ArithmeticError:
            raise bad_input("must be a number", "billingInformation.taxPercentage") from None
        if not rate.is_finite() or not 0 <= rate <= 100:
            raise bad_input("must be from 0 to 100", "billingInformation.taxPercentage")
        return rate
    return tax_rate_for(d.tax_rates, country)


# --- a running subscription's price ------------------------------------------------------

async def _running_price(d: Domain, env: str, doc: Subscription, at: int,
                         ) -> tuple[Package, list[tuple[Package, int]],
                                    Quantities, _Applied | None]:
    plan = await _package(d, env, "plan", doc.plan_id, "subscriptionId",
                          version=doc.plan_version)
    addons = [(await _package(d, env, "addon", a.id, "subscriptionId", version=a.version),
               int(a.quantity)) for a in doc.addons]
    charges = [ChargeIn(c["id"], Decimal(str(c["quantity"])), c.get("type") or "FEATURE")
               for c in doc.charges or ()]
    unit = doc.unit_quantity
    quantities = _quantities(None if unit is None else Decimal(str(unit)), None, charges)
    held = doc.coupons or [{}]
    applied = await _stored_coupon(d, env, held[0].get("id"), doc.start or at)
    return plan, addons, quantities, applied


def _in_advance(lines: list[Line]) -> list[Line]:
    """What is paid at the start of a period (and prorated by a change): recurring charges
    that are not billed in arrears."""
    return [ln for ln in lines if ln.recurring and not ln.in_arrears]


# --- the operations ----------------------------------------------------------------------

async def _estimate_new(d: Domain, env: str, body: PreviewBody | EstimateBody,
                        addon_items: list[tuple[str, int]], skip_trial: bool,
                        promotion_code: str | None) -> Estimate:
    if not body.customer_id:
        raise bad_input("is required", "customerId")
    if not body.plan_id:
        raise bad_input("is required", "planId")
    customer = await require_customer(d, env, body.customer_id)
    if body.paying_customer_id:
        await require_customer(d, env, body.paying_customer_id, field="payingCustomerId")
    now = d.now_ms()
    start = time_in(body.start_date, "startDate") or now
    plan = await _package(d, env, "plan", body.plan_id, "planId")
    priced = price_periods(plan)
    period = body.billing_period or ("MONTHLY" if not priced or "MONTHLY" in priced
                                     else sorted(priced)[0])
    if priced and period not in priced:
        raise bad_input(f"plan {body.plan_id!r} has no {period} price (it has "
                        f"{', '.join(sorted(priced))})", "billingPeriod")
    addons = await resolve_addons(d, env, plan, addon_items)
    unit = _unit_quantity(plan, body.unit_quantity)
    quantities = _quantities(unit, body.billable_features, body.charges)
    country = country_code(body.billing_country_code)
    lines = _lines(plan, addons, period, country, quantities)
    currency = invoice_currency(lines)
    applied = await _applied(d, env, body.applied_coupon, promotion_code, start)
    if applied is None and body.applied_coupon is None and promotion_code is None:
        applied = await _stored_coupon(d, env, unset_none(customer.coupon_id), start)
    tax_rate = _tax_rate(d, body.billing_information, country)


    # The trial provisioning would give (the plan's default only once per customer and
    # product), by the same function.
    trial_end, _ = await trial_terms(
        plan, start, trial_override(body.trial_override_configuration),
        lambda: trial_eligible(d, env, body.customer_id,
                               plan.product_id), skip=skip_trial)
    paid_start = trial_end if trial_end is not None else start
    first = billing_period(paid_start, period, paid_start)
    if trial_end is not None:
        now_range = (start, trial_end)
        now_inv = build_invoice([], currency, tax_rate=tax_rate)
        next_range = first
        # The first paid invoice, at the trial's end: in advance, with one-off charges.
        next_inv = _invoice(plan, [ln for ln in lines if not ln.in_arrears], period, currency,
                            applied, first[0], True, tax_rate)
    else:
        now_range = first
        now_inv = _invoice(plan, [ln for ln in lines if not ln.in_arrears], period, currency,
                           applied, first[0], True, tax_rate)
        next_range = billing_period(paid_start, period, first[1])
        next_inv = _invoice(plan, [ln for ln in lines if ln.recurring], period, currency,
                            applied, next_range[0], False, tax_rate)

    proration, downgrade = None, False
    replaced = await _replaced(d, env, body.customer_id, body.resource_id, plan)
    if replaced is not None:
        r_plan, r_addons, r_quantities, r_applied = await _running_price(d, env, replaced, start)
        r_period = replaced.billing_period or "MONTHLY"
        r_lines = _lines(r_plan, r_addons, r_period, replaced.billing_country_code,
                         r_quantities)
        r_currency = invoice_currency(r_lines, currency)
        p_start, p_end = replaced.period_start, replaced.period_end
        r_inv = _invoice(r_plan, _in_advance(r_lines), r_period, r_currency, r_applied,
                         p_start or start, False, None)
        new_recurring = _invoice(plan, _in_advance(lines), period, currency, applied,
                                 next_range[0], False, None)
        if r_currency == currency and months_of(r_period) == months_of(period):
            downgrade = new_recurring.total_excluding_tax < r_inv.total_excluding_tax
        if (r_currency == currency and replaced.status == "ACTIVE"
                and p_start is not None and p_end is not None and p_end > p_start):
            credit = prorated(r_inv.total_excluding_tax, p_start, p_end, start, currency)
            debit = now_inv.total_excluding_tax
            proration = Proration(proration_date_ms=min(max(start, p_start), p_end),
                                  credit=credit, debit=debit, net_amount=debit - credit,
                                  currency=currency)
    free = [{"id": addon.id, "quantity": quantity} for addon, quantity in addons
            if not any(ln.package_id == addon.id for ln in lines)]
    return Estimate(now_inv, now_range, next_inv, next_range, country, proration, downgrade,
                    False, free)


async def _replaced(d: Domain, env: str, customer_id: str, resource_id: str | None,
                    plan: Package) -> Subscription | None:
    """The customer's running subscription on the plan's product, which a new one replaces."""
    running = await subscriptions.active_subscriptions(
        d, env, customer_id, resource_id)
    for doc in running:
        if doc.product_id == plan.product_id:
            return doc
    return None


def _check_priceable(body: PreviewBody | EstimateBody | EstimateUpdateBody) -> None:
    """Refuse what would change the price but that creditd does not price (never
    estimate as if it were not there): billing-provider coupons and tax ids, a custom unit
    price, no proration, a billing address in another country than the prices'."""
    coupon = body.applied_coupon
    if coupon is not None and coupon.billing_coupon_id:
        raise bad_input("billing-provider coupons are not supported (no billing provider is "
                        "connected); give couponId, promotionCode or discount",
                        "appliedCoupon.billingCouponId")
    if getattr(body, "price_unit_amount", None) is not None:
        raise bad_input("a custom unit price is not supported; the plan's prices apply",
                        "priceUnitAmount")
    info = getattr(body, "billing_information", None) or {}
    if info.get("couponId"):
        raise bad_input("billing-provider coupons are not supported; give "
                        "appliedCoupon.couponId", "billingInformation.couponId")
    for name in ("taxRateIds", "taxIds"):
        if info.get(name):
            raise bad_input("not supported: tax is billingInformation.taxPercentage or the "
                            "billing country's rate", f"billingInformation.{name}")
    if info.get("prorationBehavior") == "NONE":
        raise bad_input("not supported: a replaced subscription's unused time is credited "
                        "(CREATE_PRORATIONS)", "billingInformation.prorationBehavior")
    address_country = (info.get("billingAddress") or {}).get("country")
    if address_country and address_country.strip().upper() != \
            (getattr(body, "billing_country_code", None) or "").strip().upper():
        raise bad_input("prices and tax follow billingCountryCode: give the same country "
                        "there", "billingInformation.billingAddress.country")


async def estimate_new(d: Domain, env: str, body: PreviewBody | EstimateBody) -> Estimate:
    """What subscribing would cost (REST's preview body or GraphQL's estimate input)."""
    _check_priceable(body)
    if isinstance(body, EstimateBody):
        items = [(a.addon_id, a.quantity) for a in body.addons or ()]
        return await _estimate_new(d, env, body, items, bool(body.skip_trial),
                                   body.promotion_code)
    return await _estimate_new(d, env, body, [(a.id, a.quantity) for a in body.addons or ()],
                               False, None)


async def estimate_update(d: Domain, env: str, body: EstimateUpdateBody) -> Estimate:
    """What changing a running subscription would cost now and at the next renewal."""
    _check_priceable(body)
    if not body.subscription_id:
        raise bad_input("is required", "subscriptionId")

    doc = await subscriptions.subscription_doc(d, env,
                                               body.subscription_id)
    if doc is None:
        raise DomainError(404, "SubscriptionNotFound",
                       f"subscription {body.subscription_id!r} was not found", "subscriptionId")
    if doc.status not in subscriptions.RUNNING:
        raise bad_input(f"subscription {body.subscription_id!r} is {doc.status}",
                        "subscriptionId")
    now = d.now_ms()
    plan, old_addons, old_q, old_applied = await _running_price(d, env, doc, now)
    period = doc.billing_period or "MONTHLY"
    new_period = body.billing_period or period
    new_plan = plan
    if body.plan_id is not None and body.plan_id != doc.plan_id:
        new_plan = await _package(d, env, "plan", body.plan_id, "planId")
        if new_plan.product_id != plan.product_id:
            raise bad_input(f"plan {body.plan_id!r} belongs to another product", "planId")
    priced = price_periods(new_plan)
    if priced and new_period not in priced:
        raise bad_input(f"plan {new_plan.id!r} has no {new_period} price",
                        "billingPeriod" if body.billing_period else "planId")
    country = doc.billing_country_code
    new_addons = old_addons
    if body.addons is not None:
        new_addons = await resolve_addons(d, env, new_plan,
                                          [(a.addon_id, a.quantity) for a in body.addons])
    unit = _unit_quantity(new_plan, body.unit_quantity)
    new_q = _quantities(unit, body.billable_features, body.charges, base=old_q)
    old_lines = _lines(plan, old_addons, period, country, old_q)
    new_lines = _lines(new_plan, new_addons, new_period, country, new_q)
    currency = invoice_currency(new_lines, invoice_currency(old_lines))
    new_applied = await _applied(d, env, body.applied_coupon, body.promotion_code,
                                 doc.start or now) or old_applied
    tax_rate = _tax_rate(d, doc.billing_information, country)

    p_start = doc.period_start or now
    p_end = doc.period_end or billing_period(p_start, period, p_start)[1]
    old_inv = _invoice(plan, _in_advance(old_lines), period, currency, old_applied, p_start,
                       False, None)
    new_inv = _invoice(new_plan, _in_advance(new_lines), new_period, currency, new_applied,
                       p_start, False, None)
    in_trial = doc.status == "IN_TRIAL"
    if in_trial:  # nothing was paid, nothing is due for a change
        old_price = new_price = Decimal(0)
    else:
        old_price, new_price = old_inv.total_excluding_tax, new_inv.total_excluding_tax
    if new_period == period or in_trial:
        p = prorate(old_price, new_price, start_ms=p_start, end_ms=p_end, at_ms=now,
                    currency=currency)
        now_range = (p_start, p_end)
        next_range = billing_period(doc.anchor or p_start, new_period, p_end)
    else:
        # Another billing period restarts the cycle at the change (as the update does):
        # credit for the old period's unused part, the whole new period due now.
        credit = prorated(old_price, p_start, p_end, now, currency)
        p = Proration(proration_date_ms=now, credit=credit, debit=new_price,
                      net_amount=new_price - credit, currency=currency)
        now_range = billing_period(now, new_period, now)
        next_range = billing_period(now, new_period, now_range[1])
    name = new_plan.display_name or new_plan.id
    old_name = plan.display_name or plan.id
    change = [Line(f"Remaining time on {name} after the change", Decimal(1), p.debit, p.debit,
                   currency),
              Line(f"Unused time on {old_name} before the change", Decimal(1), -p.credit,
                   -p.credit, currency)]
    now_inv = build_invoice([ln for ln in change if ln.sub_total], currency, tax_rate=tax_rate)
    next_inv = _invoice(new_plan, [ln for ln in new_lines if ln.recurring], new_period,
                        currency, new_applied, next_range[0], False, tax_rate)
    scheduled = any(u.status == "SCHEDULED" for u in doc.scheduled)
    free = [{"id": addon.id, "quantity": quantity} for addon, quantity in new_addons
            if not any(ln.package_id == addon.id for ln in new_lines)]
    # A downgrade: a lower recurring price per month of service.
    per_month_old = old_inv.total_excluding_tax / months_of(period)
    per_month_new = new_inv.total_excluding_tax / months_of(new_period)
    downgrade = new_plan is not plan and per_month_new < per_month_old
    return Estimate(now_inv, now_range, next_inv, next_range, country, p, downgrade, scheduled,
                    free)

