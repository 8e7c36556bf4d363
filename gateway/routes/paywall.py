"""The paywall: `GET /api/v1/paywall`, what a pricing page shows, with the field names of
Stigg's GraphQL `Paywall` (query GetPaywall; the Edge `paywall.json` answers the same).

Query: `productId`, `billingCountryCode`, `customerId`, `resourceId`, `includeHiddenPlans`,
`fetchAllCountriesPrices` (GetPaywallInput). Plans are the latest published versions of
live (not archived) plans, hidden ones only when asked, in creation order. Prices are those
for `billingCountryCode` where the plan has some for that country, else its default
(country-less) prices; `fetchAllCountriesPrices` lists every country's. GraphQL's `id`
(a UUID there) and `refId` are both the plan's own id here.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import msgspec
from litestar import Request, Response, get

from engine.domain.paywall import (
    CustomerView,
    PackageView,
    Paywall,
    PaywallQuery,
    PricePoint,
    localized_periods,
    paywall,
)
from engine.domain.stored import (
    Addon,
    Feature,
    Package,
    PackageEntitlement,
    Plan,
    Product,
    unset_none,
)
from engine.domain.subscriptions.document import Subscription
from gateway.context import domain, environment, ok
from gateway.errors import bad_input
from gateway.routes.subscriptions import subscription_json
from gateway.wire import iso

__all__ = ["ROUTES", "paywall_json"]

_SYMBOLS = {"usd": "$", "eur": "€", "gbp": "£", "jpy": "¥", "inr": "₹", "cad": "CA$",
            "aud": "A$", "chf": "CHF", "brl": "R$", "cny": "CN¥", "krw": "₩", "sek": "kr",
            "nok": "kr", "dkk": "kr", "pln": "zł", "ils": "₪", "mxn": "MX$"}


def _money(m: dict[str, Any] | None) -> dict[str, Any] | None:
    if m is None:
        return None
    return {"amount": Decimal(m["amount"]), "currency": m["currency"].upper()}


def _reset_configuration(e: PackageEntitlement) -> dict[str, Any] | None:
    config = e.reset_period_configuration
    period = e.reset_period
    if not config or period not in ("MONTH", "WEEK", "YEAR"):
        return None
    name = {"MONTH": "monthly", "WEEK": "weekly", "YEAR": "yearly"}[period]
    kind = {"MONTH": "MonthlyResetPeriodConfig", "WEEK": "WeeklyResetPeriodConfig",
            "YEAR": "YearlyResetPeriodConfig"}[period]
    return {"__typename": kind, f"{name}AccordingTo": config.get("accordingTo")}


def _feature_json(doc: Feature | None, ident: str) -> dict[str, Any]:
    if doc is None:  # gone since the package named it
        return {"__typename": "Feature", "id": ident, "refId": ident, "displayName": ident,
                "description": None, "featureType": None, "meterType": "None",
                "featureUnits": None, "featureUnitsPlural": None, "additionalMetaData": {},
                "unitTransformation": None}
    meter = doc.meter_type
    t = doc.unit_transformation
    return {
        "__typename": "Feature", "id": ident, "refId": ident,
        "displayName": doc.display_name or ident, "description": doc.description,
        "featureType": doc.feature_type,
        "meterType": meter.capitalize() if meter != "None" else "None",
        "featureUnits": doc.feature_units, "featureUnitsPlural": doc.feature_units_plural,
        "additionalMetaData": doc.metadata,
        "unitTransformation": None if t is None else {"divide": t.divide, "round": t.round},
    }


def _entitlements(view: PackageView) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(feature entitlements as PackageEntitlement, all as PackageEntitlementUnion)."""
    plan = view.package
    features: list[dict[str, Any]] = []
    union: list[dict[str, Any]] = []
    for e in plan.entitlements:
        common = {
            "hasSoftLimit": e.has_soft_limit,
            "hiddenFromWidgets": e.hidden_from_widgets,
            "isCustom": e.is_custom,
            "displayNameOverride": e.display_name_override,
            "description": e.description,
            "order": None if e.order is None else Decimal(e.order),
            "behavior": e.behavior,
        }
        if e.type == "FEATURE":
            doc = view.features.get(e.id)
            item = {"__typename": "PackageEntitlement", "featureId": e.id,
                    "usageLimit": e.usage_limit,
                    "hasUnlimitedUsage": e.has_unlimited_usage,
                    "resetPeriod": e.reset_period,
                    "resetPeriodConfiguration": _reset_configuration(e),
                    "enumValues": e.enum_values, "isGranted": e.is_granted,
                    "feature": _feature_json(doc, e.id), **common}
            features.append(item)
            union.append(item)
        else:
            c = view.currencies.get(e.id)
            units = None if c is None else c.units
            union.append({
                "__typename": "PackageCreditEntitlement", "customCurrencyId": e.id,
                "amount": Decimal(e.amount or 0), "cadence": e.cadence,
                "customCurrency": {"currencyId": e.id,
                                   "displayName": (c and c.display_name) or e.id,
                                   "description": c and c.description,
                                   "symbol": c and c.symbol,
                                   "unitSingular": units and units.singular,
                                   "unitPlural": units and units.plural,
                                   "additionalMetaData": c.metadata if c else {}},
                **common})
    return features, union


def _prices(plan: Package, country: str | None, all_countries: bool,
            features: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The plan's prices as GraphQL `Price` rows, localized (`localized_periods`)."""
    out: list[dict[str, Any]] = []
    for model in (plan.charges or {}).get("pricingModels") or []:
        for p in localized_periods(model, country, all_countries):
            feature_id = model.get("featureId")
            tiers = p.get("tiers")
            out.append({
                "__typename": "Price",
                "id": p.get("id"),
                "billingModel": model["billingModel"],
                "billingPeriod": p["billingPeriod"],
                "billingCadence": model.get("billingCadence", "RECURRING"),
                "billingCountryCode": p.get("billingCountryCode"),
                "price": _money(p.get("price")),
                "tiersMode": model.get("tiersMode"),
                "tiers": None if tiers is None else [
                    {"upTo": None if t.get("upTo") is None else Decimal(str(t["upTo"])),
                     "unitPrice": _money(t.get("unitPrice")),
                     "flatPrice": _money(t.get("flatPrice"))} for t in tiers],
                "minUnitQuantity": model.get("minUnitQuantity"),
                "maxUnitQuantity": model.get("maxUnitQuantity"),
                "blockSize": p.get("blockSize"),
                "creditRate": p.get("creditRate"),
                "creditGrantCadence": p.get("creditGrantCadence"),
                "topUpCustomCurrencyId": model.get("topUpCustomCurrencyId"),
                "featureId": feature_id,
                "feature": None if feature_id is None else features.get(feature_id),
                "resetPeriod": model.get("resetPeriod"),
            })
    return out


def _trial(plan: Plan) -> dict[str, Any] | None:
    t = plan.default_trial_config
    if t is None:
        return None
    budget = t.budget
    return {"__typename": "DefaultTrialConfig", "duration": Decimal(t.duration),
            "units": t.units, "trialEndBehavior": t.trial_end_behavior,
            "budget": None if budget is None else {"limit": Decimal(budget.limit),
                                                   "hasSoftLimit": budget.has_soft_limit}}


def _product_json(ident: str, doc: Product | None) -> dict[str, Any]:
    if doc is None:  # gone since the plan named it
        return {"__typename": "Product", "id": ident, "refId": ident, "displayName": None,
                "description": None, "additionalMetaData": {}, "multipleSubscriptions": False,
                "productSettings": None}
    return {"__typename": "Product", "id": doc.id, "refId": doc.id,
            "displayName": doc.display_name, "description": doc.description,
            "additionalMetaData": doc.metadata,
            "multipleSubscriptions": doc.multiple_subscriptions,
            "productSettings": msgspec.to_builtins(doc.product_settings)}


def _by_id(features: list[dict[str, Any]], view: PackageView) -> dict[str, dict[str, Any]]:
    """Features as Feature JSON by id: those of the entitlements, then those only priced."""
    by_id = {f["featureId"]: f["feature"] for f in features}
    for fid, doc in view.features.items():
        by_id.setdefault(fid, _feature_json(doc, fid))
    return by_id


def _addon_json(view: PackageView, q: PaywallQuery) -> dict[str, Any]:
    addon = view.package
    assert isinstance(addon, Addon)
    features, union = _entitlements(view)
    return {"__typename": "Addon", "id": addon.id, "refId": addon.id,
            "displayName": addon.display_name, "description": addon.description,
            "billingId": addon.billing_id, "versionNumber": addon.version_number,
            "additionalMetaData": addon.metadata,
            "hiddenFromWidgets": [], "pricingType": addon.pricing_type,
            "maxQuantity": addon.max_quantity, "dependencies": addon.dependencies,
            "entitlements": features, "packageEntitlements": union,
            # (an add-on's price rows name only the features it grants)
            "prices": _prices(addon, q.country, q.all_countries,
                              {f["featureId"]: f["feature"] for f in features}),
            "overagePrices": []}


def _point_json(p: PricePoint, features: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {"__typename": "PaywallPricePoint", "planId": p.plan_id,
            "billingPeriod": p.billing_period, "billingCountryCode": p.country,
            "amount": p.amount, "currency": p.currency,
            "additionalChargesMayApply": p.more_may_apply,
            "feature": None if p.feature_id is None else features.get(p.feature_id)}


def paywall_json(found: Paywall) -> dict[str, Any]:
    """The paywall in the field names of Stigg's GraphQL `Paywall`."""
    q = found.query
    products = {pid: _product_json(pid, doc) for pid, doc in found.products.items()}
    plans: list[dict[str, Any]] = []
    points: list[dict[str, Any]] = []
    currencies: list[str] = []
    for view in found.plans:
        plan = view.plan.package
        assert isinstance(plan, Plan)
        ident = plan.id
        features, union = _entitlements(view.plan)
        by_id = _by_id(features, view.plan)
        prices = _prices(plan, q.country, q.all_countries, by_id)
        currencies += [p["price"]["currency"] for p in prices if p["price"]]
        currencies += [t["unitPrice"]["currency"] for p in prices for t in p["tiers"] or ()
                       if t["unitPrice"]]
        base = None if view.base is None else view.base.package
        inherited, inherited_union = ([], []) if view.base is None else _entitlements(view.base)
        plans.append({
            "__typename": "Plan", "id": ident, "refId": ident,
            "displayName": plan.display_name, "description": plan.description,
            "billingId": plan.billing_id, "versionNumber": plan.version_number,
            "additionalMetaData": plan.metadata,
            "hiddenFromWidgets": ["PAYWALL"] if plan.hidden else [],
            "product": products[plan.product_id],
            "basePlan": None if base is None else {
                "__typename": "Plan", "id": base.id, "refId": base.id,
                "displayName": base.display_name},
            "entitlements": features, "inheritedEntitlements": inherited,
            "packageEntitlements": union, "inheritedPackageEntitlements": inherited_union,
            "compatibleAddons": [_addon_json(a, q) for a in view.addons],
            "compatiblePackageGroups": [],
            "prices": prices, "overagePrices": [],
            "pricingType": plan.pricing_type,
            "defaultTrialConfig": _trial(plan),
            "awsMarketplacePlanDimension": None,
        })
        points += [_point_json(p, by_id) for p in view.points]
    code = (currencies[0] if currencies else "USD").upper()
    customer, active = (None, None) if found.customer is None else _customer_json(
        found.customer)
    return {
        "__typename": "Paywall",
        "plans": plans,
        "currency": {"__typename": "PaywallCurrency", "code": code,
                     "symbol": _SYMBOLS.get(code.lower(), code)},
        "configuration": None,
        "customer": customer,
        "activeSubscriptions": active,
        "resource": None if q.resource_id is None else {"__typename": "CustomerResource",
                                                        "resourceId": q.resource_id},
        "paywallCalculatedPricePoints": points,
    }


def _customer_json(view: CustomerView) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    customer = view.customer
    customer_id = customer.id
    active = [_subscription_json(d) for d in view.active]
    out = {
        "__typename": "Customer", "id": customer_id, "refId": customer_id,
        "customerId": customer_id, "name": unset_none(customer.name),
        "email": unset_none(customer.email), "billingId": unset_none(customer.billing_id),
        "additionalMetaData": customer.metadata,
        "createdAt": iso(customer.created_at), "updatedAt": iso(customer.updated_at),
        "hasPaymentMethod": False, "hasActiveSubscription": bool(active),
        "trialedPlans": [{"__typename": "TrialedPlan", "planId": s.plan_id,
                          "planRefId": s.plan_id, "productId": s.product_id,
                          "productRefId": s.product_id} for s in view.trialed],
        "eligibleForTrial": [{"__typename": "EligibleForTrial", "productId": pid,
                              "productRefId": pid, "eligible": eligible}
                             for pid, eligible in view.eligible.items()],
        "promotionalEntitlements": [], "coupon": None, "experimentInfo": None,
        "awsMarketplaceCustomerId": None,
    }
    return out, active


def _subscription_json(doc: Subscription) -> dict[str, Any]:
    """A running subscription in CustomerSubscription's field names."""
    base = subscription_json(doc)
    return {
        **base,
        "__typename": "CustomerSubscription", "id": doc.id, "subscriptionId": doc.id,
        "refId": doc.id, "status": doc.status,
        "plan": {"__typename": "Plan", "id": doc.plan_id, "refId": doc.plan_id,
                 "versionNumber": doc.plan_version},
        "addons": [{"addon": {"id": a.id, "refId": a.id}, "quantity": a.quantity}
                   for a in doc.addons],
        "resource": None if not doc.resource_id else {"resourceId": doc.resource_id},
    }


def _flag(value: str | None, field: str) -> bool:
    if value is None:
        return False
    lowered = value.strip().lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0", ""):
        return False
    raise bad_input("must be true or false", field)


@get("/api/v1/paywall")
async def get_paywall(request: Request) -> Response:
    query = request.query_params
    return ok(paywall_json(await paywall(domain(request), environment(request), PaywallQuery(
        product_id=query.get("productId") or None,
        country=query.get("billingCountryCode") or None,
        customer_id=query.get("customerId") or None,
        resource_id=query.get("resourceId") or None,
        include_hidden=_flag(query.get("includeHiddenPlans"), "includeHiddenPlans"),
        all_countries=_flag(query.get("fetchAllCountriesPrices"), "fetchAllCountriesPrices")))))


ROUTES = [get_paywall]
