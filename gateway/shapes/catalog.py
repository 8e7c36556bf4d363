"""Stigg's GraphQL catalog types as JSON (field names as the schema has them, with
`__typename`): Plan, Addon, Product, Feature, Price, PackageEntitlement and its union,
DefaultTrialConfig, PaywallPricePoint, Coupon, PromotionalEntitlement. The GraphQL
resolvers, the Edge reads and the REST paywall (which answers in GraphQL's names) build
them here."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import msgspec

from engine.core.amounts import units_to_json
from engine.domain.paywall import PackageView, PlanView, PricePoint, localized_periods
from engine.domain.promotions import status_of
from engine.domain.stored import (
    Addon,
    Coupon,
    Feature,
    Grant,
    Package,
    Plan,
    Product,
    Promotion,
)
from engine.times import iso

__all__ = ["PROMOTION_PERIODS", "addon_json", "coupon_json", "feature_json", "features_by_id",
           "money_json", "package_entitlements_json", "plan_json", "point_json",
           "prices_json", "product_json", "promotional_entitlement_json",
           "reset_configuration_json", "trial_json"]


def money_json(m: dict[str, Any] | None) -> dict[str, Any] | None:
    if m is None:
        return None
    return {"amount": Decimal(m["amount"]), "currency": m["currency"].upper()}


def reset_configuration_json(e: Grant) -> dict[str, Any] | None:
    """A package entitlement's or a promotion's reset anchor as ResetPeriodConfiguration."""
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
            # Stigg's entitlement UUID: unique per package and feature or currency here.
            "id": f"{plan.id}:{e.id}",
            "packageId": plan.id,
            "isGranted": e.is_granted,
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
                    "enumValues": e.enum_values,
                    "feature": feature_json(doc, e.id), **common}
            features.append(item)
            # The same entitlement as the union's member (its own type name).
            depends = e.dependency_feature_id
            union.append({**item, "__typename": "PackageFeatureEntitlement",
                          "dependencyFeature": None if depends is None else feature_json(
                              view.features.get(depends), depends)})
        else:
            c = view.currencies.get(e.id)
            units = None if c is None else c.units
            union.append({
                "__typename": "PackageCreditEntitlement", "customCurrencyId": e.id,
                "amount": Decimal(e.amount or 0), "cadence": e.cadence,
                "customCurrency": {"__typename": "CustomCurrency", "id": e.id,
                                   "currencyId": e.id,
                                   "displayName": (c and c.display_name) or e.id,
                                   "description": c and c.description,
                                   "symbol": c and c.symbol,
                                   "units": None if units is None else {
                                       "singular": units.singular, "plural": units.plural},
                                   "unitSingular": units and units.singular,
                                   "unitPlural": units and units.plural,
                                   "additionalMetaData": c.metadata if c else {}},
                "dependencyFeature": None, **common})
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


# Stigg's product settings when none were set (ProductSettings is non-null there).
_DEFAULT_SETTINGS = {"subscriptionCancellationTime": "END_OF_BILLING_PERIOD",
                     "subscriptionEndSetup": "CANCEL_SUBSCRIPTION",
                     "subscriptionStartSetup": "PLAN_SELECTION", "downgradePlanId": None,
                     "prorateAtEndOfBillingPeriod": None, "subscriptionStartPlanId": None}


def product_json(ident: str, doc: Product | None) -> dict[str, Any]:
    if doc is None:  # gone since the plan named it
        return {"__typename": "Product", "id": ident, "refId": ident, "displayName": None,
                "description": None, "additionalMetaData": {}, "multipleSubscriptions": False,
                "productSettings": dict(_DEFAULT_SETTINGS)}
    return {"__typename": "Product", "id": doc.id, "refId": doc.id,
            "displayName": doc.display_name, "description": doc.description,
            "additionalMetaData": doc.metadata,
            "multipleSubscriptions": doc.multiple_subscriptions,
            "productSettings": msgspec.to_builtins(doc.product_settings)
            if doc.product_settings is not None else dict(_DEFAULT_SETTINGS)}


def features_by_id(features: list[dict[str, Any]], view: PackageView) -> dict[str, dict[str, Any]]:
    """Features as Feature JSON by id: those of the entitlements, then those only priced."""
    by_id = {f["featureId"]: f["feature"] for f in features}
    for fid, doc in view.features.items():
        by_id.setdefault(fid, feature_json(doc, fid))
    return by_id


def _dependency(ident: str, doc: Package | None) -> dict[str, Any]:
    return {"__typename": "Addon", "id": ident, "refId": ident,
            "displayName": doc.display_name if doc is not None else ident,
            "description": None if doc is None else doc.description}


def addon_json(view: PackageView, country: str | None, all_countries: bool,
               siblings: dict[str, Package] | None = None) -> dict[str, Any]:
    """An add-on as Stigg's `Addon`; the add-ons it depends on as `Addon`s named from
    `siblings` (by id: the plan's other compatible add-ons) where there."""
    addon = view.package
    assert isinstance(addon, Addon)
    features, union = package_entitlements_json(view)
    return {"__typename": "Addon", "id": addon.id, "refId": addon.id,
            "displayName": addon.display_name, "description": addon.description,
            "billingId": addon.billing_id, "versionNumber": addon.version_number,
            "additionalMetaData": addon.metadata,
            "hiddenFromWidgets": [], "pricingType": addon.pricing_type,
            "maxQuantity": addon.max_quantity, "dependencies": [_dependency(a, (siblings or {}).get(a))
                                          for a in addon.dependencies or ()],
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
    siblings = {a.package.id: a.package for a in view.addons}
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
        "compatibleAddons": [addon_json(a, country, all_countries, siblings)
                             for a in view.addons],
        "compatiblePackageGroups": [],
        "prices": prices, "overagePrices": [],
        "pricingType": plan.pricing_type,
        "defaultTrialConfig": trial_json(plan),
        "awsMarketplacePlanDimension": None,
    }


def coupon_json(coupon: Coupon) -> dict[str, Any]:
    """A coupon as Stigg's `Coupon` (`id` and `refId` are both the coupon's id; amounts
    exact, currencies as the `Currency` enum spells them)."""
    amounts = None if coupon.amounts_off is None else [
        {"amount": units_to_json(a.amount) if isinstance(a.amount, int) else Decimal(a.amount),
         "currency": a.currency.upper()} for a in coupon.amounts_off]
    if coupon.percent_off is not None:
        value: Any = coupon.percent_off
    else:
        value = amounts[0]["amount"] if amounts else 0
    return {
        "__typename": "Coupon", "id": coupon.id, "refId": coupon.id,
        "name": coupon.name, "description": coupon.description, "type": coupon.type,
        "discountValue": value, "percentOff": coupon.percent_off, "amountsOff": amounts,
        "durationInMonths": coupon.duration_in_months,
        "additionalMetaData": coupon.metadata,
        "billingId": None, "billingLinkUrl": None, "source": "STIGG",
        "status": "ARCHIVED" if coupon.archived_at is not None else "ACTIVE",
        "syncStates": [],
        "createdAt": iso(coupon.created_at), "updatedAt": iso(coupon.updated_at),
    }


# REST's promotion periods (engine/domain/promotions.py) by GraphQL's
# PromotionalEntitlementPeriod.
PROMOTION_PERIODS = {"ONE_WEEK": "1 week", "ONE_MONTH": "1 month", "SIX_MONTH": "6 month",
                     "ONE_YEAR": "1 year", "LIFETIME": "lifetime", "CUSTOM": "custom"}
_PERIODS_OUT = {rest: gql for gql, rest in PROMOTION_PERIODS.items()}


def promotional_entitlement_json(promotion: Promotion, feature: Feature | None, *,
                                 now: int | None = None) -> dict[str, Any]:
    """A promotion as Stigg's `PromotionalEntitlement`: `featureId` (a UUID in Stigg's
    schema) is the feature's id, as is `feature.refId`. `status` is as of `now` (epoch ms;
    the domain's clock, `d.documents.now_ms()`); without it, a revoked promotion is
    Expired and any other Active."""
    if now is not None:
        status = status_of(promotion, now)
    else:
        status = "Expired" if promotion.archived_at is not None else "Active"
    return {
        "__typename": "PromotionalEntitlement", "id": promotion.id,
        "featureId": promotion.feature_id,
        "feature": feature_json(feature, promotion.feature_id),
        "description": promotion.description,
        "period": _PERIODS_OUT.get(promotion.period or "", "CUSTOM"),
        "status": status,
        "startDate": iso(promotion.start if promotion.start is not None
                         else promotion.created_at),
        "endDate": iso(promotion.end),
        "usageLimit": promotion.usage_limit,
        "hasUnlimitedUsage": promotion.has_unlimited_usage,
        "unlimited": promotion.has_unlimited_usage,
        "hasSoftLimit": promotion.has_soft_limit,
        "resetPeriod": promotion.reset_period,
        "resetPeriodConfiguration": reset_configuration_json(promotion),
        "enumValues": promotion.enum_values,
        "isVisible": promotion.is_visible,
        "featureGroupIds": None,
        "createdAt": iso(promotion.created_at), "updatedAt": iso(promotion.updated_at),
    }
