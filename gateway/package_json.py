"""The JSON forms the routes answer with: packages, entitlements, charges (the client's
PlanListChargesResponse rows) and products."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import msgspec

from engine.domain.stored import Addon, Package, PackageEntitlement, Plan, Product
from engine.times import iso

# -- wire forms ---------------------------------------------------------------------------

def _number(value: str | None) -> Decimal | None:
    return None if value is None else Decimal(value)


def _money_out(m: dict[str, str] | None) -> dict[str, Any] | None:
    return None if m is None else {"amount": Decimal(m["amount"]), "currency": m["currency"]}


def entitlement_json(e: PackageEntitlement) -> dict[str, Any]:
    out = {
        "id": e.id, "type": e.type, "behavior": e.behavior,
        "description": e.description, "displayNameOverride": e.display_name_override,
        "hiddenFromWidgets": e.hidden_from_widgets, "isCustom": e.is_custom,
        "isGranted": e.is_granted, "hasSoftLimit": e.has_soft_limit,
        "order": _number(e.order),
        "createdAt": iso(e.created_at), "updatedAt": iso(e.updated_at),
    }
    if e.type == "FEATURE":
        out.update({"enumValues": e.enum_values, "hasUnlimitedUsage": e.has_unlimited_usage,
                    "usageLimit": e.usage_limit, "resetPeriod": e.reset_period,
                    "resetPeriodConfiguration": e.reset_period_configuration})
    else:
        out.update({"amount": _number(e.amount), "cadence": e.cadence,
                    "dependencyFeatureId": e.dependency_feature_id})
    return out


def package_json(doc: Package, kind: str, *, is_latest: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": doc.id, "productId": doc.product_id, "displayName": doc.display_name,
        "description": doc.description, "billingId": doc.billing_id,
        "metadata": doc.metadata, "pricingType": doc.pricing_type,
        "status": doc.status, "versionNumber": doc.version_number, "isLatest": is_latest,
        "hidden": doc.hidden,
        "entitlements": [{"id": e.id, "type": e.type} for e in doc.entitlements],
        "createdAt": iso(doc.created_at), "updatedAt": iso(doc.updated_at),
        "archivedAt": iso(doc.archived_at),
    }
    if isinstance(doc, Plan):
        t = doc.default_trial_config
        trial = None if t is None else {
            "duration": t.duration, "units": t.units, "trialEndBehavior": t.trial_end_behavior,
            "budget": None if t.budget is None else {
                "hasSoftLimit": t.budget.has_soft_limit, "limit": Decimal(t.budget.limit)}}
        out.update({"parentPlanId": doc.parent_plan_id,
                    "compatibleAddonIds": doc.compatible_addon_ids,
                    "defaultTrialConfig": trial})
    elif isinstance(doc, Addon):
        out.update({"maxQuantity": doc.max_quantity, "dependencies": doc.dependencies})
    return out


def _charge_row(model: dict[str, Any], p: dict[str, Any], set_at: int) -> dict[str, Any]:
    rate = p["creditRate"]
    return {
        "id": p["id"], "billingModel": model["billingModel"],
        "billingCadence": model["billingCadence"], "billingPeriod": p["billingPeriod"],
        "billingCountryCode": p["billingCountryCode"], "billingId": None,
        "featureId": model.get("featureId"), "tiersMode": model.get("tiersMode"),
        "minUnitQuantity": model.get("minUnitQuantity"),
        "maxUnitQuantity": model.get("maxUnitQuantity"),
        "topUpCustomCurrencyId": model.get("topUpCustomCurrencyId"),
        "price": _money_out(p["price"]),
        "tiers": None if p["tiers"] is None else [
            {"upTo": t["upTo"], "unitPrice": _money_out(t["unitPrice"]),
             "flatPrice": _money_out(t["flatPrice"])} for t in p["tiers"]],
        "blockSize": p["blockSize"],
        "creditRate": None if rate is None else {
            "amount": Decimal(rate["amount"]), "currencyId": rate["currencyId"],
            "costFormula": rate["costFormula"]},
        "creditGrantCadence": p["creditGrantCadence"],
        "resetPeriod": model.get("resetPeriod"),
        "resetPeriodConfiguration": model.get("resetPeriodConfiguration"),
        "createdAt": iso(set_at), "crmId": None, "crmLinkUrl": None,
        "usedInSubscriptions": None,
    }


def charge_rows(doc: Package, *, overage: bool = False) -> list[dict[str, Any]]:
    """The package's prices as the client's PlanListChargesResponse rows: one per pricing
    model and price period (overage models with `overage`)."""
    charges = doc.charges
    if not charges:
        return []
    models = charges["overagePricingModels" if overage else "pricingModels"] or []
    set_at = charges.get("_setAt") or doc.updated_at
    return [_charge_row(m, p, set_at) for m in models for p in m["pricePeriods"]]


def product_json(doc: Product) -> dict[str, Any]:
    return {
        "id": doc.id, "displayName": doc.display_name, "description": doc.description,
        "metadata": doc.metadata, "multipleSubscriptions": doc.multiple_subscriptions,
        "productSettings": msgspec.to_builtins(doc.product_settings),
        "usageResetCutoffRule": msgspec.to_builtins(doc.usage_reset_cutoff_rule),
        "status": "ARCHIVED" if doc.archived_at is not None else "PUBLISHED",
        "createdAt": iso(doc.created_at), "updatedAt": iso(doc.updated_at),
        "archivedAt": iso(doc.archived_at),
    }

