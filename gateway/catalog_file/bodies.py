"""The file's items as the REST API receives them: currency, feature and coupon bodies,
a package's fields, entitlements and charges."""

from __future__ import annotations

from typing import Any

import msgspec

from .schema import (
    Addon,
    CatalogFile,
    Coupon,
    CreditEntitlement,
    Currency,
    Feature,
    FeatureEntitlement,
    Plan,
)

# -- what the REST API would receive ----------------------------------------------------


def _currency_body(ident: str, c: Currency) -> dict[str, Any]:
    return {"id": ident, "displayName": c.display_name, "description": c.description,
            "metadata": c.metadata, "symbol": c.symbol,
            "units": None if c.units is None else {"singular": c.units.singular,
                                                   "plural": c.units.plural},
            "topUp": None if c.top_up is None else {
                "pricePerCredit": c.top_up.price_per_credit,
                "priceCurrency": c.top_up.price_currency,
                "minimumPurchase": c.top_up.minimum_purchase,
                "maximumPurchase": c.top_up.maximum_purchase}}


def _feature_body(ident: str, f: Feature, *, create: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "displayName": f.display_name, "description": f.description,
        "featureUnits": f.units, "featureUnitsPlural": f.units_plural,
        "metadata": f.metadata,
        "meter": None if f.meter is None else msgspec.to_builtins(f.meter),
        "creditRate": None if f.credit_rate is None else {
            "amount": f.credit_rate.amount, "currencyId": f.credit_rate.currency},
        "enumConfiguration": None if f.enum_values is None else [
            {"value": v.value, "displayName": v.display_name} for v in f.enum_values],
        "unitTransformation": None if f.unit_transformation is None else {
            "divide": f.unit_transformation.divide, "round": f.unit_transformation.round,
            "featureUnits": f.unit_transformation.units,
            "featureUnitsPlural": f.unit_transformation.units_plural},
    }
    if f.status is not None:
        body["featureStatus"] = f.status
    if create:
        body["id"] = ident
        body["featureType"] = f.type
        if f.meter_type is not None:
            body["meterType"] = f.meter_type
    return body


def _coupon_body(ident: str, c: Coupon) -> dict[str, Any]:
    body: dict[str, Any] = {"id": ident, "name": c.name, "description": c.description,
                            "metadata": c.metadata}
    if c.percent_off is not None:
        body["percentOff"] = c.percent_off
    if c.amounts_off is not None:
        body["amountsOff"] = [{"amount": a.amount, "currency": a.currency}
                              for a in c.amounts_off]
    if c.duration_in_months is not None:
        body["durationInMonths"] = c.duration_in_months
    if c.duration is not None:
        body["duration"] = c.duration
    return body


def _reset_config(period: str | None, anchor: str | None) -> dict[str, Any]:
    if period not in ("MONTH", "WEEK", "YEAR"):
        return {}
    anchor = anchor or "SubscriptionStart"
    name = {"MONTH": "monthly", "WEEK": "weekly", "YEAR": "yearly"}[period]
    return {f"{name}ResetPeriodConfiguration": {"accordingTo": anchor}}


def _entitlements(file: CatalogFile, table: str, ident: str) -> list[dict[str, Any]]:
    """The package's entitlements as the entitlements endpoint takes them, in file order."""
    out: list[dict[str, Any]] = []
    for fid, e in file.feature_entitlements[(table, ident)].items():
        item: dict[str, Any] = {"type": "FEATURE", "id": fid, "hasSoftLimit": e.soft_limit,
                                "hasUnlimitedUsage": e.unlimited, "usageLimit": e.usage_limit,
                                "isGranted": e.granted}
        if e.reset_period is not None:
            item["resetPeriod"] = e.reset_period
            item.update(_reset_config(e.reset_period, e.reset_anchor))
        if e.enum_values is not None:
            item["enumValues"] = e.enum_values
        _common_entitlement(item, e)
        out.append(item)
    for cid, c in file.credit_entitlements[(table, ident)].items():
        item = {"type": "CREDIT", "id": cid, "amount": c.amount, "cadence": c.cadence,
                "hasSoftLimit": c.soft_limit}
        _common_entitlement(item, c)
        out.append(item)
    for order, item in enumerate(out):
        item["order"] = order
    return out


def _common_entitlement(item: dict[str, Any], e: FeatureEntitlement | CreditEntitlement) -> None:
    if e.behavior is not None:
        item["behavior"] = e.behavior
    if e.description is not None:
        item["description"] = e.description
    if e.display_name is not None:
        item["displayNameOverride"] = e.display_name
    if e.hidden_from:
        item["hiddenFromWidgets"] = list(e.hidden_from)


def _charges(pkg: Plan | Addon) -> dict[str, Any]:
    """The package's prices in the `charges` shape of PATCH /api/v1/plans/{id}."""
    models: list[dict[str, Any]] = []
    for price in pkg.prices:
        model: dict[str, Any] = {"billingModel": price.model, "billingCadence": price.cadence,
                                 "pricePeriods": []}
        if price.feature is not None:
            model["featureId"] = price.feature
        if price.tiers_mode is not None:
            model["tiersMode"] = price.tiers_mode
        if price.min_units is not None:
            model["minUnitQuantity"] = price.min_units
        if price.max_units is not None:
            model["maxUnitQuantity"] = price.max_units
        if price.reset_period is not None:
            model["resetPeriod"] = price.reset_period
        for period in price.periods:
            currency = period.currency.lower()
            out: dict[str, Any] = {"billingPeriod": period.billing_period}
            if period.country is not None:
                out["billingCountryCode"] = period.country
            if period.amount is not None:
                out["price"] = {"amount": period.amount, "currency": currency}
            if period.tiers is not None:
                out["tiers"] = [
                    {k: v for k, v in {
                        "upTo": t.up_to,
                        "unitPrice": None if t.unit_price is None else
                        {"amount": t.unit_price, "currency": currency},
                        "flatPrice": None if t.flat_price is None else
                        {"amount": t.flat_price, "currency": currency}}.items()
                     if v is not None}
                    for t in period.tiers]
            if period.block_size is not None:
                out["blockSize"] = period.block_size
            model["pricePeriods"].append(out)
        models.append(model)
    top = pkg.top_up if isinstance(pkg, Plan) else None
    if top is not None:
        # A prepaid credit plan sells more credits at a price per credit, bought in one go
        # (ONE_OFF) between a minimum and a maximum quantity.
        model = {"billingModel": "CREDIT_BASED", "billingCadence": "ONE_OFF",
                 "topUpCustomCurrencyId": top.currency,
                 "pricePeriods": [{"billingPeriod": top.billing_period,
                                   "price": {"amount": top.price_per_credit,
                                             "currency": top.price_currency.lower()}}]}
        if top.minimum_purchase is not None:
            model["minUnitQuantity"] = top.minimum_purchase
        if top.maximum_purchase is not None:
            model["maxUnitQuantity"] = top.maximum_purchase
        models.append(model)
    return {"pricingType": _pricing_type(pkg), "pricingModels": models}


def _pricing_type(pkg: Plan | Addon) -> str:
    if pkg.pricing_type is not None:
        return pkg.pricing_type
    has_price = bool(pkg.prices) or (isinstance(pkg, Plan) and pkg.top_up is not None)
    return "PAID" if has_price else "FREE"


def _package_fields(pkg: Plan | Addon) -> dict[str, Any]:
    """The package's own fields (not entitlements or prices) as create/update take them."""
    body: dict[str, Any] = {"displayName": pkg.display_name, "description": pkg.description,
                            "metadata": pkg.metadata, "billingId": pkg.billing_id,
                            "pricingType": _pricing_type(pkg), "hidden": pkg.hidden}
    if isinstance(pkg, Plan):
        body["parentPlanId"] = pkg.parent
        body["compatibleAddonIds"] = list(pkg.compatible_addons)
        body["defaultTrialConfig"] = None if pkg.trial is None else {
            "duration": pkg.trial.duration, "units": pkg.trial.units,
            "trialEndBehavior": pkg.trial.end_behavior,
            "budget": None if pkg.trial.budget is None else {
                "limit": pkg.trial.budget.limit, "hasSoftLimit": pkg.trial.budget.soft_limit}}
    else:
        body["maxQuantity"] = pkg.max_quantity
        body["dependencies"] = list(pkg.dependencies)
    return body
