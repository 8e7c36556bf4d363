"""The paywall: what a pricing page shows — the live plans with their entitlements,
compatible add-ons and prices localized for a billing country, what each costs per billing
period (price points), and, for a customer, their running subscriptions and the trials
they may still have.

Plans are the latest published versions of live (not archived) plans, hidden ones only
when asked, in creation order. Prices are those for the billing country where the plan has
some for that country, else its default (country-less) prices; `all_countries` lists every
country's. Price points are what the estimate would charge per billing period (a flat
price as is; a price that depends on a quantity — per unit, usage — at its minimum
quantity, flagged: additional charges may apply).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import msgspec

from engine.billing.pricing import select_price_period
from engine.domain import packages
from engine.domain.context import Domain
from engine.domain.errors import DomainError, bad_input
from engine.domain.stored import Currency, Customer, Feature, Package, Plan, Product
from engine.domain.subscriptions import catch_up as subscriptions
from engine.domain.subscriptions.document import Subscription

__all__ = ["CustomerView", "PackageView", "Paywall", "PaywallQuery", "PlanView", "PricePoint",
           "customer_view", "localized_periods", "package_view", "paywall"]


class PaywallQuery(msgspec.Struct, frozen=True, kw_only=True):
    product_id: str | None = None
    country: str | None = None  # billingCountryCode
    customer_id: str | None = None
    resource_id: str | None = None
    include_hidden: bool = False
    all_countries: bool = False


class PricePoint(msgspec.Struct, frozen=True, kw_only=True):
    plan_id: str
    billing_period: str
    country: str | None  # the country when one of its prices is the country's own
    amount: Decimal
    currency: str | None
    more_may_apply: bool  # a price depends on a quantity: priced at the minimum
    feature_id: str | None  # the first quantity-priced feature


class PackageView(msgspec.Struct, frozen=True, kw_only=True):
    """A published plan or add-on and the documents it names (features by id, None if
    gone; custom currencies by id)."""

    package: Package
    features: dict[str, Feature | None]
    currencies: dict[str, Currency | None]


class PlanView(msgspec.Struct, frozen=True, kw_only=True):
    plan: PackageView
    base: PackageView | None  # the plan it inherits entitlements from
    addons: list[PackageView]  # its compatible, live add-ons
    points: list[PricePoint]


class CustomerView(msgspec.Struct, frozen=True, kw_only=True):
    customer: Customer
    active: list[Subscription]  # running subscriptions (for the resource)
    trialed: list[Subscription]  # every subscription that had a trial
    eligible: dict[str, bool]  # product id -> may still get the plan's default trial


class Paywall(msgspec.Struct, frozen=True, kw_only=True):
    query: PaywallQuery
    plans: list[PlanView]
    products: dict[str, Product | None]  # the plans' products by id (None: gone)
    customer: CustomerView | None


def localized_periods(model: dict[str, Any], country: str | None,
                      all_countries: bool) -> list[dict[str, Any]]:
    """A pricing model's price periods as a customer in `country` sees them: per billing
    period, the country's own price where there is one, else the default; every one with
    `all_countries`."""
    periods = model.get("pricePeriods") or []
    if all_countries:
        return list(periods)
    wanted = country.lower() if country else None
    chosen: dict[str, dict[str, Any]] = {}
    for p in periods:
        code = (p.get("billingCountryCode") or "").lower() or None
        if code is None and p["billingPeriod"] not in chosen:
            chosen[p["billingPeriod"]] = p
        if code is not None and code == wanted:
            chosen[p["billingPeriod"]] = p
    return list(chosen.values())


def _money(m: dict[str, Any] | None) -> tuple[Decimal, str] | None:
    # Currencies as the GraphQL enum spells them (USD).
    return None if m is None else (Decimal(str(m["amount"])), m["currency"].upper())


def _model_point(model: dict[str, Any], period: dict[str, Any]
                 ) -> tuple[Decimal, str | None, bool]:
    """(amount, currency, additional charges may apply) of one pricing model's price period
    in a price point: a flat price as is; a price that depends on a quantity (per unit,
    usage) the first tier's unit price times the minimum quantity, flagged."""
    quantity = Decimal(str(model.get("minUnitQuantity") or 0))
    price = _money(period.get("price"))
    if price is not None:
        if model["billingModel"] == "FLAT_FEE":
            return price[0], price[1], False
        return price[0] * quantity, price[1], True
    tiers = period.get("tiers")
    if tiers:
        unit, flat = _money(tiers[0].get("unitPrice")), _money(tiers[0].get("flatPrice"))
        amount = Decimal(0)
        if unit is not None:
            amount += unit[0] * quantity
        if flat is not None and quantity:
            amount += flat[0]
        return amount, (unit or flat or (None, None))[1], True
    return Decimal(0), None, False


def _points_for(plan: Package, country: str | None) -> list[PricePoint]:
    """The plan's price points for one billing country (None: the default prices), one per
    billing period, as the estimate charges them: every pricing model's price period
    picked by `select_price_period` (the country's own, else the default). A period whose
    picked prices mix currencies cannot be charged (the estimate refuses it) and gets no
    point."""
    models = [m for m in (plan.charges or {}).get("pricingModels") or []
              if m.get("billingCadence", "RECURRING") != "ONE_OFF"
              and m["billingModel"] != "CREDIT_BASED"]
    periods = list(dict.fromkeys(p["billingPeriod"] for m in models
                                 for p in m.get("pricePeriods") or ()))
    out: list[PricePoint] = []
    for billing_period in periods:
        code: str | None = None
        amount = Decimal(0)
        currency: str | None = None
        more = False
        feature_id: str | None = None
        currencies: set[str] = set()
        for model in models:
            period = select_price_period(model, billing_period, country)
            if period is None:
                continue
            if period.get("billingCountryCode"):
                code = period["billingCountryCode"]
            part, part_currency, part_more = _model_point(model, period)
            if part_currency is not None:
                currencies.add(part_currency)
            amount += part
            currency = currency or part_currency
            more |= part_more
            if part_more and feature_id is None and model.get("featureId") is not None:
                feature_id = model["featureId"]
        if len(currencies) <= 1:
            out.append(PricePoint(plan_id=plan.id, billing_period=billing_period,
                                  country=code, amount=amount, currency=currency,
                                  more_may_apply=more, feature_id=feature_id))
    return out


def price_points(plan: Package, country: str | None,
                 all_countries: bool) -> list[PricePoint]:
    """What the plan costs per billing period for `country`; with `all_countries`, the
    default points and those of every country the plan has prices for (each country's
    points that use at least one of its own prices)."""
    if not all_countries:
        return _points_for(plan, country)
    points = _points_for(plan, None)
    codes = dict.fromkeys(
        p["billingCountryCode"].lower()
        for m in (plan.charges or {}).get("pricingModels") or []
        for p in m.get("pricePeriods") or () if p.get("billingCountryCode"))
    for code in codes:
        points += [p for p in _points_for(plan, code) if p.country is not None]
    return points


async def package_view(d: Domain, env: str, package: Package) -> PackageView:
    features: dict[str, Feature | None] = {}
    currencies: dict[str, Currency | None] = {}
    for e in package.entitlements:
        if e.type == "FEATURE":
            features[e.id] = await d.documents.get("features", env, e.id)
        else:
            currencies[e.id] = await d.documents.get("currencies", env, e.id)
    for model in (package.charges or {}).get("pricingModels") or []:
        fid = model.get("featureId")
        if fid and fid not in features:
            features[fid] = await d.documents.get("features", env, fid)
    return PackageView(package=package, features=features, currencies=currencies)


async def _addon(d: Domain, env: str, ident: str) -> PackageView | None:
    addon = await packages.published(d.documents, env, "addon", ident)
    working = await packages.get_package(d.documents, env, "addon", ident)
    if addon is None or working is None or working.status == "ARCHIVED":
        return None
    return await package_view(d, env, addon)


async def paywall(d: Domain, env: str, q: PaywallQuery) -> Paywall:
    """The paywall for `q` (ProductNotFound, CustomerNotFound if named and missing)."""
    if q.product_id is not None and await packages.get_product(
            d.documents, env, q.product_id) is None:
        raise DomainError(404, "ProductNotFound", f"product {q.product_id!r} was not found",
                          "productId")
    country = q.country
    if country is not None and not (2 <= len(country) <= 3 and country.isascii()
                                    and country.isalpha()):
        raise bad_input("must be an ISO country code (or 'eu')", "billingCountryCode")
    customer = None
    if q.customer_id is not None:
        customer = await d.documents.get("customer_profiles", env, q.customer_id)
        if customer is None:
            raise DomainError(404, "CustomerNotFound",
                              f"customer {q.customer_id!r} was not found", "customerId")
    plans: list[PlanView] = []
    products: dict[str, Product | None] = {}
    for ident in await d.store.plan_ids(env, q.product_id):
        plan = await packages.published(d.documents, env, "plan", ident)
        if plan is None or (plan.hidden and not q.include_hidden):
            continue
        assert isinstance(plan, Plan)
        pid = plan.product_id
        if pid not in products:
            products[pid] = await packages.get_product(d.documents, env, pid)
        addons = [a for a in [await _addon(d, env, a) for a in plan.compatible_addon_ids]
                  if a]
        parent = plan.parent_plan_id
        base = await packages.published(d.documents, env, "plan", parent) if parent else None
        plans.append(PlanView(plan=await package_view(d, env, plan),
                              base=None if base is None
                              else await package_view(d, env, base),
                              addons=addons,
                              points=price_points(plan, country, q.all_countries)))
    view = None
    if customer is not None:
        view = await customer_view(d, env, customer, q.resource_id, products)
    return Paywall(query=q, plans=plans, products=products, customer=view)


async def customer_view(d: Domain, env: str, customer: Customer, resource_id: str | None,
                    products: dict[str, Product | None]) -> CustomerView:
    customer_id = customer.id
    active = await subscriptions.active_subscriptions(d, env, customer_id, resource_id)
    everything = await subscriptions.customer_subscriptions(d, env, customer_id)
    eligible = {pid: await subscriptions.trial_eligible(d, env, customer_id, pid)
                for pid in products}
    return CustomerView(customer=customer, active=active,
                        trialed=[s for s in everything if s.trial_end is not None],
                        eligible=eligible)
