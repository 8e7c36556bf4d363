"""The JSON forms the routes answer with: packages, entitlements, charges (the client's
PlanListChargesResponse rows) and products."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from engine.times import iso

# -- wire forms ---------------------------------------------------------------------------

def _number(value: str | None) -> Decimal | None:
    return None if value is None else Decimal(value)


def _money_out(m: dict[str, str] | None) -> dict[str, Any] | None:
    return None if m is None else {"amount": Decimal(m["amount"]), "currency": m["currency"]}


def entitlement_json(e: dict[str, Any]) -> dict[str, Any]:
    out = {
        "id": e["id"], "type": e["type"], "behavior": e["behavior"],
        "description": e["description"], "displayNameOverride": e["displayNameOverride"],
        "hiddenFromWidgets": e["hiddenFromWidgets"], "isCustom": e["isCustom"],
        "isGranted": e["isGranted"], "hasSoftLimit": e["hasSoftLimit"],
        "order": _number(e["order"]),
        "createdAt": iso(e["_createdAt"]), "updatedAt": iso(e["_updatedAt"]),
    }
    if e["type"] == "FEATURE":
        out.update({"enumValues": e["enumValues"], "hasUnlimitedUsage": e["hasUnlimitedUsage"],
                    "usageLimit": e["usageLimit"], "resetPeriod": e["resetPeriod"],
                    "resetPeriodConfiguration": e["resetPeriodConfiguration"]})
    else:
        out.update({"amount": _number(e["amount"]), "cadence": e["cadence"],
                    "dependencyFeatureId": e["dependencyFeatureId"]})
    return out


def package_json(doc: dict[str, Any], kind: str, *, is_latest: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": doc["id"], "productId": doc["productId"], "displayName": doc["displayName"],
        "description": doc["description"], "billingId": doc["billingId"],
        "metadata": doc["metadata"], "pricingType": doc["pricingType"],
        "status": doc["status"], "versionNumber": doc["versionNumber"], "isLatest": is_latest,
        "hidden": doc.get("hidden", False),
        "entitlements": [{"id": e["id"], "type": e["type"]} for e in doc["entitlements"]],
        "createdAt": iso(doc["_createdAt"]), "updatedAt": iso(doc["_updatedAt"]),
        "archivedAt": iso(doc.get("_archivedAt")),
    }
    if kind == "plan":
        trial = doc.get("defaultTrialConfig")
        if trial is not None:
            trial = dict(trial)
            if trial.get("budget"):
                trial["budget"] = {"hasSoftLimit": trial["budget"]["hasSoftLimit"],
                                   "limit": Decimal(trial["budget"]["limit"])}
        out.update({"parentPlanId": doc.get("parentPlanId"),
                    "compatibleAddonIds": doc.get("compatibleAddonIds") or [],
                    "defaultTrialConfig": trial})
    else:
        out.update({"maxQuantity": doc.get("maxQuantity"),
                    "dependencies": doc.get("dependencies") or []})
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


def charge_rows(doc: dict[str, Any], *, overage: bool = False) -> list[dict[str, Any]]:
    """The package's prices as the client's PlanListChargesResponse rows: one per pricing
    model and price period (overage models with `overage`)."""
    charges = doc.get("charges")
    if not charges:
        return []
    models = charges["overagePricingModels" if overage else "pricingModels"] or []
    set_at = charges.get("_setAt") or doc["_updatedAt"]
    return [_charge_row(m, p, set_at) for m in models for p in m["pricePeriods"]]


def product_json(doc: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": doc["id"], "displayName": doc["displayName"], "description": doc["description"],
        "metadata": doc["metadata"], "multipleSubscriptions": doc["multipleSubscriptions"],
        "productSettings": doc.get("productSettings"),
        "usageResetCutoffRule": doc.get("usageResetCutoffRule"),
        "status": "ARCHIVED" if doc.get("_archivedAt") is not None else "PUBLISHED",
        "createdAt": iso(doc["_createdAt"]), "updatedAt": iso(doc["_updatedAt"]),
        "archivedAt": iso(doc.get("_archivedAt")),
    }

