"""Stigg's GraphQL catalog types as JSON (field names as the schema has them, with
`__typename`): Plan, Addon, Product, Feature, Price, PackageEntitlement and its union,
DefaultTrialConfig, PaywallPricePoint. The GraphQL resolvers, the Edge reads and the REST
paywall (which answers in GraphQL's names) build them here."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import msgspec

from engine.domain.paywall import PackageView, PlanView, PricePoint, localized_periods
from engine.domain.stored import Addon, Feature, Package, PackageEntitlement, Plan, Product

__all__ = ["addon_json", "feature_json", "features_by_id", "money_json",
           "package_entitlements_json", "plan_json", "point_json", "prices_json",
           "product_json", "reset_configuration_json", "trial_json"]


def money_json(m: dict[str, Any] | None) -> dict[str, Any] | None:
    if m is None:
        return None
    return {"amount": Decimal(m["amount"]), "currency": m["currency"].upper()}


def reset_configuration_json(e: PackageEntitlement) -> dict[str, Any] | None:
    config = e.reset_period_configuration
    period = e.reset_period
    if not config or period not in ("MONTH", "WEEK", "YEAR"):
        return None
    name = {"MONTH": "monthly", "WEEK": "weekly", "YEAR": "yearly"}[period]
    kind = {"MONTH": "MonthlyResetPeriodConfig", "WEEK": "WeeklyResetPeriodConfig",
            "YEAR": "YearlyResetPeriodConfig"}[period]
    return {"__typename": kind, f"{name}AccordingTo": config.get("accordingTo")}


def feature_json(doc: Feature | None, ident: str) -> dict[str, Any]:
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


def package_entitlements_json(view: PackageView) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
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
                    "resetPeriodConfiguration": reset_configuration_json(e),
                    "enumValues": e.enum_values, "isGranted": e.is_granted,
                    "feature": feature_json(doc, e.id), **common}
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


def prices_json(plan: Package, country: str | None, all_countries: bool,
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
                "price": money_json(p.get("price")),
                "tiersMode": model.get("tiersMode"),
                "tiers": None if tiers is None else [
                    {"upTo": None if t.get("upTo") is None else Decimal(str(t["upTo"])),
                     "unitPrice": money_json(t.get("unitPrice")),
                     "flatPrice": money_json(t.get("flatPrice"))} for t in tiers],
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


def trial_json(plan: Plan) -> dict[str, Any] | None:
    t = plan.default_trial_config
    if t is None:
        return None
    budget = t.budget
    return {"__typename": "DefaultTrialConfig", "duration": Decimal(t.duration),
            "units": t.units, "trialEndBehavior": t.trial_end_behavior,
            "budget": None if budget is None else {"limit": Decimal(budget.limit),
                                                   "hasSoftLimit": budget.has_soft_limit}}


def product_json(ident: str, doc: Product | None) -> dict[str, Any]:
    if doc is None:  # gone since the plan named it
        return {"__typename": "Product", "id": ident, "refId": ident, "displayName": None,
                "description": None, "additionalMetaData": {}, "multipleSubscriptions": False,
                "productSettings": None}
    return {"__typename": "Product", "id": doc.id, "refId": doc.id,
            "displayName": doc.display_name, "description": doc.description,
            "additionalMetaData": doc.metadata,
            "multipleSubscriptions": doc.multiple_subscriptions,
            "productSettings": msgspec.to_builtins(doc.product_settings)}


def features_by_id(features: list[dict[str, Any]], view: PackageView) -> dict[str, dict[str, Any]]:
    """Features as Feature JSON by id: those of the entitlements, then those only priced."""
    by_id = {f["featureId"]: f["feature"] for f in features}
    for fid, doc in view.features.items():
        by_id.setdefault(fid, feature_json(doc, fid))
    return by_id


def addon_json(view: PackageView, country: str | None, all_countries: bool) -> dict[str, Any]:
    addon = view.package
    assert isinstance(addon, Addon)
    features, union = package_entitlements_json(view)
    return {"__typename": "Addon", "id": addon.id, "refId": addon.id,
            "displayName": addon.display_name, "description": addon.description,
            "billingId": addon.billing_id, "versionNumber": addon.version_number,
            "additionalMetaData": addon.metadata,
            "hiddenFromWidgets": [], "pricingType": addon.pricing_type,
            "maxQuantity": addon.max_quantity, "dependencies": addon.dependencies,
            "entitlements": features, "packageEntitlements": union,
            # (an add-on's price rows name only the features it grants)
            "prices": prices_json(addon, country, all_countries,
                              {f["featureId"]: f["feature"] for f in features}),
            "overagePrices": []}


def point_json(p: PricePoint, features: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {"__typename": "PaywallPricePoint", "planId": p.plan_id,
            "billingPeriod": p.billing_period, "billingCountryCode": p.country,
            "amount": p.amount, "currency": p.currency,
            "additionalChargesMayApply": p.more_may_apply,
            "feature": None if p.feature_id is None else features.get(p.feature_id)}


def plan_json(view: PlanView, products: dict[str, dict[str, Any]], country: str | None,
              all_countries: bool) -> dict[str, Any]:
    """A published plan as Stigg's `Plan`: its entitlements (and those it inherits), its
    prices localized for `country`, its product (from `products`, by id, as
    `product_json`) and its compatible add-ons."""
    plan = view.plan.package
    assert isinstance(plan, Plan)
    ident = plan.id
    features, union = package_entitlements_json(view.plan)
    by_id = features_by_id(features, view.plan)
    prices = prices_json(plan, country, all_countries, by_id)
    base = None if view.base is None else view.base.package
    inherited, inherited_union = ([], []) if view.base is None else package_entitlements_json(
        view.base)
    return {
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
        "compatibleAddons": [addon_json(a, country, all_countries) for a in view.addons],
        "compatiblePackageGroups": [],
        "prices": prices, "overagePrices": [],
        "pricingType": plan.pricing_type,
        "defaultTrialConfig": trial_json(plan),
        "awsMarketplacePlanDimension": None,
    }
