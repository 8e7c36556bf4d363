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

from litestar import Request, Response, get

from engine.billing.pricing import select_price_period
from engine.domain import packages
from engine.domain.subscriptions import catch_up as subscriptions
from gateway.context import environment, ok, services
from gateway.errors import ApiError, bad_input
from gateway.wire import iso

__all__ = ["ROUTES", "paywall"]

_SYMBOLS = {"usd": "$", "eur": "€", "gbp": "£", "jpy": "¥", "inr": "₹", "cad": "CA$",
            "aud": "A$", "chf": "CHF", "brl": "R$", "cny": "CN¥", "krw": "₩", "sek": "kr",
            "nok": "kr", "dkk": "kr", "pln": "zł", "ils": "₪", "mxn": "MX$"}


def _money(m: dict[str, Any] | None) -> dict[str, Any] | None:
    if m is None:
        return None
    return {"amount": Decimal(m["amount"]), "currency": m["currency"].upper()}


def _reset_configuration(e: dict[str, Any]) -> dict[str, Any] | None:
    config = e.get("resetPeriodConfiguration")
    period = e.get("resetPeriod")
    if not config or period not in ("MONTH", "WEEK", "YEAR"):
        return None
    name = {"MONTH": "monthly", "WEEK": "weekly", "YEAR": "yearly"}[period]
    kind = {"MONTH": "MonthlyResetPeriodConfig", "WEEK": "WeeklyResetPeriodConfig",
            "YEAR": "YearlyResetPeriodConfig"}[period]
    return {"__typename": kind, f"{name}AccordingTo": config.get("accordingTo")}


def _feature_json(doc: dict[str, Any] | None, ident: str) -> dict[str, Any]:
    doc = doc or {}
    meter = doc.get("meterType") or "None"
    transformation = doc.get("unitTransformation")
    return {
        "__typename": "Feature", "id": ident, "refId": ident,
        "displayName": doc.get("displayName") or ident, "description": doc.get("description"),
        "featureType": doc.get("featureType"),
        "meterType": meter.capitalize() if meter != "None" else "None",
        "featureUnits": doc.get("featureUnits"),
        "featureUnitsPlural": doc.get("featureUnitsPlural"),
        "additionalMetaData": doc.get("metadata") or {},
        "unitTransformation": None if not transformation else {
            "divide": transformation.get("divide"), "round": transformation.get("round")},
    }


async def _entitlements(catalog: Any, env: str, plan: dict[str, Any]
                        ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(feature entitlements as PackageEntitlement, all as PackageEntitlementUnion)."""
    features: list[dict[str, Any]] = []
    union: list[dict[str, Any]] = []
    for e in plan.get("entitlements") or []:
        common = {
            "hasSoftLimit": bool(e.get("hasSoftLimit")),
            "hiddenFromWidgets": e.get("hiddenFromWidgets") or [],
            "isCustom": bool(e.get("isCustom")),
            "displayNameOverride": e.get("displayNameOverride"),
            "description": e.get("description"),
            "order": None if e.get("order") is None else Decimal(str(e["order"])),
            "behavior": e.get("behavior"),
        }
        if e["type"] == "FEATURE":
            doc = await catalog.get("features", env, e["id"])
            item = {"__typename": "PackageEntitlement", "featureId": e["id"],
                    "usageLimit": e.get("usageLimit"),
                    "hasUnlimitedUsage": bool(e.get("hasUnlimitedUsage")),
                    "resetPeriod": e.get("resetPeriod"),
                    "resetPeriodConfiguration": _reset_configuration(e),
                    "enumValues": e.get("enumValues"), "isGranted": e.get("isGranted", True),
                    "feature": _feature_json(doc, e["id"]), **common}
            features.append(item)
            union.append(item)
        else:
            doc = await catalog.get("currencies", env, e["id"]) or {}
            units = doc.get("units") or {}
            union.append({
                "__typename": "PackageCreditEntitlement", "customCurrencyId": e["id"],
                "amount": Decimal(str(e["amount"])), "cadence": e.get("cadence"),
                "customCurrency": {"currencyId": e["id"],
                                   "displayName": doc.get("displayName") or e["id"],
                                   "description": doc.get("description"),
                                   "symbol": doc.get("symbol"),
                                   "unitSingular": units.get("singular"),
                                   "unitPlural": units.get("plural"),
                                   "additionalMetaData": doc.get("metadata") or {}},
                **common})
    return features, union


def _prices(plan: dict[str, Any], country: str | None, all_countries: bool,
            features: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The plan's prices as GraphQL `Price` rows, localized: for each pricing model and
    billing period, the price of `country` where there is one, else the default price."""
    out: list[dict[str, Any]] = []
    charges = plan.get("charges") or {}
    wanted = country.lower() if country else None
    for model in charges.get("pricingModels") or []:
        periods = model.get("pricePeriods") or []
        if not all_countries:
            chosen: dict[str, dict[str, Any]] = {}
            for p in periods:
                code = (p.get("billingCountryCode") or "").lower() or None
                if code is None and p["billingPeriod"] not in chosen:
                    chosen[p["billingPeriod"]] = p
                if code is not None and code == wanted:
                    chosen[p["billingPeriod"]] = p
            periods = list(chosen.values())
        for p in periods:
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


def _trial(plan: dict[str, Any]) -> dict[str, Any] | None:
    t = plan.get("defaultTrialConfig")
    if not t:
        return None
    budget = t.get("budget")
    return {"__typename": "DefaultTrialConfig", "duration": Decimal(str(t["duration"])),
            "units": t["units"], "trialEndBehavior": t.get("trialEndBehavior"),
            "budget": None if not budget else {"limit": Decimal(str(budget["limit"])),
                                               "hasSoftLimit": budget["hasSoftLimit"]}}


def _product_json(doc: dict[str, Any]) -> dict[str, Any]:
    return {"__typename": "Product", "id": doc["id"], "refId": doc["id"],
            "displayName": doc.get("displayName"), "description": doc.get("description"),
            "additionalMetaData": doc.get("metadata") or {},
            "multipleSubscriptions": bool(doc.get("multipleSubscriptions")),
            "productSettings": doc.get("productSettings")}


async def _addon_json(catalog: Any, env: str, ident: str, country: str | None,
                      all_countries: bool) -> dict[str, Any] | None:
    addon = await packages.published(catalog, env, "addon", ident)
    working = await packages.get_package(catalog, env, "addon", ident)
    if addon is None or working is None or working.get("status") == "ARCHIVED":
        return None
    features, union = await _entitlements(catalog, env, addon)
    by_id = {f["featureId"]: f["feature"] for f in features}
    return {"__typename": "Addon", "id": ident, "refId": ident,
            "displayName": addon.get("displayName"), "description": addon.get("description"),
            "billingId": addon.get("billingId"), "versionNumber": addon.get("versionNumber"),
            "additionalMetaData": addon.get("metadata") or {},
            "hiddenFromWidgets": [], "pricingType": addon.get("pricingType"),
            "maxQuantity": addon.get("maxQuantity"),
            "dependencies": addon.get("dependencies") or [],
            "entitlements": features, "packageEntitlements": union,
            "prices": _prices(addon, country, all_countries, by_id), "overagePrices": []}


def _model_point(model: dict[str, Any], period: dict[str, Any]
                 ) -> tuple[Decimal, str | None, bool]:
    """(amount, currency, additional charges may apply) of one pricing model's price period
    in a price point: a flat price as is; a price that depends on a quantity (per unit,
    usage) the first tier's unit price times the minimum quantity, flagged."""
    quantity = Decimal(str(model.get("minUnitQuantity") or 0))
    price = _money(period.get("price"))
    if price is not None:
        if model["billingModel"] == "FLAT_FEE":
            return price["amount"], price["currency"], False
        return price["amount"] * quantity, price["currency"], True
    tiers = period.get("tiers")
    if tiers:
        unit, flat = _money(tiers[0].get("unitPrice")), _money(tiers[0].get("flatPrice"))
        amount = Decimal(0)
        if unit is not None:
            amount += unit["amount"] * quantity
        if flat is not None and quantity:
            amount += flat["amount"]
        return amount, (unit or flat or {}).get("currency"), True
    return Decimal(0), None, False


def _points_for(plan: dict[str, Any], country: str | None,
                features: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The plan's price points for one billing country (None: the default prices), one per
    billing period, as the estimate charges them: every pricing model's price period
    picked by `select_price_period` (the country's own, else the default). The point's
    `billingCountryCode` is the country when one of its prices is the country's own, else
    None (all defaults). A period whose picked prices mix currencies cannot be charged
    (the estimate refuses it) and gets no point."""
    models = [m for m in (plan.get("charges") or {}).get("pricingModels") or []
              if m.get("billingCadence", "RECURRING") != "ONE_OFF"
              and m["billingModel"] != "CREDIT_BASED"]
    periods = list(dict.fromkeys(p["billingPeriod"] for m in models
                                 for p in m.get("pricePeriods") or ()))
    out: list[dict[str, Any]] = []
    for billing_period in periods:
        point: dict[str, Any] = {
            "__typename": "PaywallPricePoint", "planId": plan["id"],
            "billingPeriod": billing_period, "billingCountryCode": None,
            "amount": Decimal(0), "currency": None,
            "additionalChargesMayApply": False, "feature": None}
        currencies: set[str] = set()
        for model in models:
            period = select_price_period(model, billing_period, country)
            if period is None:
                continue
            if period.get("billingCountryCode"):
                point["billingCountryCode"] = period["billingCountryCode"]
            amount, currency, more = _model_point(model, period)
            if currency is not None:
                currencies.add(currency)
            point["amount"] += amount
            point["currency"] = point["currency"] or currency
            point["additionalChargesMayApply"] |= more
            feature_id = model.get("featureId")
            if more and point["feature"] is None and feature_id is not None:
                point["feature"] = features.get(feature_id)
        if len(currencies) <= 1:
            out.append(point)
    return out


def _price_points(plan: dict[str, Any], country: str | None, all_countries: bool,
                  features: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """What the plan costs per billing period (PaywallPricePoint) for `country`; with
    `all_countries`, the default points and those of every country the plan has prices
    for (each country's points that use at least one of its own prices)."""
    if not all_countries:
        return _points_for(plan, country, features)
    points = _points_for(plan, None, features)
    codes = dict.fromkeys(
        p["billingCountryCode"].lower()
        for m in (plan.get("charges") or {}).get("pricingModels") or []
        for p in m.get("pricePeriods") or () if p.get("billingCountryCode"))
    for code in codes:
        points += [p for p in _points_for(plan, code, features)
                   if p["billingCountryCode"] is not None]
    return points


def _flag(value: str | None, field: str) -> bool:
    if value is None:
        return False
    lowered = value.strip().lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0", ""):
        return False
    raise bad_input("must be true or false", field)


async def paywall(svc: Any, env: str, *, product_id: str | None = None,
                  country: str | None = None, customer_id: str | None = None,
                  resource_id: str | None = None, include_hidden: bool = False,
                  all_countries: bool = False) -> dict[str, Any]:
    catalog = svc.catalog
    if product_id is not None:
        product = await packages.get_product(catalog, env, product_id)
        if product is None:
            raise ApiError(404, "ProductNotFound", f"product {product_id!r} was not found",
                           "productId")
    if country is not None and not (2 <= len(country) <= 3 and country.isascii()
                                    and country.isalpha()):
        raise bad_input("must be an ISO country code (or 'eu')", "billingCountryCode")
    customer = None
    if customer_id is not None:
        customer = await catalog.get("customer_profiles", env, customer_id)
        if customer is None:
            raise ApiError(404, "CustomerNotFound", f"customer {customer_id!r} was not found",
                           "customerId")
    plans: list[dict[str, Any]] = []
    points: list[dict[str, Any]] = []
    currencies: list[str] = []
    products: dict[str, dict[str, Any]] = {}
    for ident in await catalog.store.plan_ids(env, product_id):
        plan = await packages.published(catalog, env, "plan", ident)
        if plan is None or (plan.get("hidden") and not include_hidden):
            continue
        pid = plan["productId"]
        if pid not in products:
            products[pid] = _product_json(await packages.get_product(catalog, env, pid) or
                                          {"id": pid})
        features, union = await _entitlements(catalog, env, plan)
        by_id = {f["featureId"]: f["feature"] for f in features}
        for model in (plan.get("charges") or {}).get("pricingModels") or []:
            fid = model.get("featureId")
            if fid and fid not in by_id:
                by_id[fid] = _feature_json(await catalog.get("features", env, fid), fid)
        prices = _prices(plan, country, all_countries, by_id)
        currencies += [p["price"]["currency"] for p in prices if p["price"]]
        currencies += [t["unitPrice"]["currency"] for p in prices for t in p["tiers"] or ()
                       if t["unitPrice"]]
        addons = [a for a in [await _addon_json(catalog, env, a, country, all_countries)
                              for a in plan.get("compatibleAddonIds") or []] if a]
        parent = plan.get("parentPlanId")
        base = await packages.published(catalog, env, "plan", parent) if parent else None
        inherited: list[dict[str, Any]] = []
        inherited_union: list[dict[str, Any]] = []
        if base is not None:
            inherited, inherited_union = await _entitlements(catalog, env, base)
        plans.append({
            "__typename": "Plan", "id": ident, "refId": ident,
            "displayName": plan.get("displayName"), "description": plan.get("description"),
            "billingId": plan.get("billingId"), "versionNumber": plan.get("versionNumber"),
            "additionalMetaData": plan.get("metadata") or {},
            "hiddenFromWidgets": ["PAYWALL"] if plan.get("hidden") else [],
            "product": products[pid],
            "basePlan": None if base is None else {
                "__typename": "Plan", "id": base["id"], "refId": base["id"],
                "displayName": base.get("displayName")},
            "entitlements": features, "inheritedEntitlements": inherited,
            "packageEntitlements": union, "inheritedPackageEntitlements": inherited_union,
            "compatibleAddons": addons, "compatiblePackageGroups": [],
            "prices": prices, "overagePrices": [],
            "pricingType": plan.get("pricingType"),
            "defaultTrialConfig": _trial(plan),
            "awsMarketplacePlanDimension": None,
        })
        points += _price_points(plan, country, all_countries, by_id)
    code = (currencies[0] if currencies else "USD").upper()
    result: dict[str, Any] = {
        "__typename": "Paywall",
        "plans": plans,
        "currency": {"__typename": "PaywallCurrency", "code": code,
                     "symbol": _SYMBOLS.get(code.lower(), code)},
        "configuration": None,
        "customer": None,
        "activeSubscriptions": None,
        "resource": None if resource_id is None else {"__typename": "CustomerResource",
                                                      "resourceId": resource_id},
        "paywallCalculatedPricePoints": points,
    }
    if customer is not None:
        assert customer_id is not None
        result["customer"], result["activeSubscriptions"] = await _customer(
            svc, env, customer, resource_id, products)
    return result


async def _customer(svc: Any, env: str, customer: dict[str, Any], resource_id: str | None,
                    products: dict[str, dict[str, Any]]
                    ) -> tuple[dict[str, Any], list[dict[str, Any]] | None]:
    customer_id = customer["id"]
    eligible = [{"__typename": "EligibleForTrial", "productId": pid, "productRefId": pid,
                 "eligible": True} for pid in products]
    docs = await subscriptions.active_subscriptions(svc.domain, env, customer_id, resource_id)
    active: list[dict[str, Any]] | None = [_subscription_json(d) for d in docs]
    everything = await subscriptions.customer_subscriptions(svc.domain, env, customer_id)
    trialed = [{"__typename": "TrialedPlan", "planId": d["planId"],
                "planRefId": d["planId"], "productId": d.get("productId"),
                "productRefId": d.get("productId")}
               for d in everything if d.get("_trialEnd") is not None]
    for item in eligible:
        item["eligible"] = await subscriptions.trial_eligible(svc.domain, env, customer_id,
                                                              item["productId"])
    out = {
        "__typename": "Customer", "id": customer_id, "refId": customer_id,
        "customerId": customer_id, "name": customer.get("name"),
        "email": customer.get("email"), "billingId": customer.get("billingId"),
        "additionalMetaData": customer.get("metadata") or {},
        "createdAt": iso(customer.get("_createdAt")), "updatedAt": iso(customer.get("_updatedAt")),
        "hasPaymentMethod": False, "hasActiveSubscription": bool(active),
        "trialedPlans": trialed, "eligibleForTrial": eligible,
        "promotionalEntitlements": [], "coupon": None, "experimentInfo": None,
        "awsMarketplaceCustomerId": None,
    }
    return out, active


def _subscription_json(doc: dict[str, Any]) -> dict[str, Any]:
    """A running subscription in CustomerSubscription's field names."""
    try:
        from gateway.routes.subscriptions import subscription_json

        base = subscription_json(doc)
    except Exception:  # noqa: BLE001 - the REST form is optional here: fall back to ours
        base = {}
    ident = doc["id"]
    return {
        **base,
        "__typename": "CustomerSubscription", "id": ident, "subscriptionId": ident,
        "refId": ident, "status": doc.get("status"),
        "startDate": base.get("startDate"), "endDate": base.get("endDate"),
        "trialEndDate": base.get("trialEndDate") or iso(doc.get("_trialEnd")),
        "cancellationDate": base.get("cancellationDate"),
        "currentBillingPeriodEnd": base.get("currentBillingPeriodEnd")
        or iso(doc.get("_periodEnd")),
        "pricingType": doc.get("pricingType") or base.get("pricingType"),
        "plan": {"__typename": "Plan", "id": doc["planId"], "refId": doc["planId"],
                 "versionNumber": doc.get("planVersion")},
        "addons": [{"addon": {"id": a["id"], "refId": a["id"]}, "quantity": a.get("quantity")}
                   for a in doc.get("addons") or []],
        "resource": None if not doc.get("resourceId") else {
            "resourceId": doc["resourceId"]},
    }


@get("/api/v1/paywall")
async def get_paywall(request: Request) -> Response:
    query = request.query_params
    return ok(await paywall(
        services(request), environment(request),
        product_id=query.get("productId") or None,
        country=query.get("billingCountryCode") or None,
        customer_id=query.get("customerId") or None,
        resource_id=query.get("resourceId") or None,
        include_hidden=_flag(query.get("includeHiddenPlans"), "includeHiddenPlans"),
        all_countries=_flag(query.get("fetchAllCountriesPrices"), "fetchAllCountriesPrices")))


ROUTES = [get_paywall]
