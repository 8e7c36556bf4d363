"""A package's prices (`charges`): pricing models, price periods and tiers, overage models
and minimum spends validated into their stored form, each price with its id."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from engine.billing.pricing import select_price_period
from engine.domain.context import Documents as Catalog
from engine.domain.errors import bad_input
from engine.domain.packages.checks import (
    _credits,
    _currency,
    _custom_currency,
    _feature,
    _reset_config,
    _whole,
    decimal_str,
    money,
)
from engine.domain.packages.shapes import (
    Charges,
    Money,
    PricePeriod,
    PricingModel,
    _camel,
    convert,
    to_dict,
)

# -- charges ------------------------------------------------------------------------------

def _price(m: Money, field: str) -> dict[str, str]:
    return {"amount": money(m.amount, f"{field}.amount"),
            "currency": _currency(m.currency, f"{field}.currency")}


async def _price_period(catalog: Catalog, env: str, p: PricePeriod, model: str,
                        field: str) -> dict[str, Any]:
    tiered = model in ("PER_UNIT", "USAGE_BASED")
    if (p.price is None) == (p.tiers is None or not p.tiers):
        raise bad_input("give either price or tiers", f"{field}.price")
    if p.tiers and not tiered:
        raise bad_input(f"a {model} price has no tiers", f"{field}.tiers")
    country = p.billing_country_code
    if country is not None:
        country = country.strip().lower()
        if not (2 <= len(country) <= 3 and country.isascii() and country.isalpha()):
            raise bad_input("must be an ISO country code (or 'eu')",
                            f"{field}.billingCountryCode")
    tiers = None
    if p.tiers:
        tiers = []
        last: int | None = 0
        for j, t in enumerate(p.tiers):
            tf = f"{field}.tiers[{j}]"
            if t.unit_price is None and t.flat_price is None:
                raise bad_input("give unitPrice, flatPrice or both", f"{tf}.unitPrice")
            if last is None:
                raise bad_input("only the last tier is unbounded (no upTo)",
                                f"{field}.tiers[{j - 1}].upTo")
            up_to = None if t.up_to is None else _whole(t.up_to, f"{tf}.upTo")
            if up_to is not None and up_to <= last:
                raise bad_input("tiers must ascend: upTo must exceed the previous tier's",
                                f"{tf}.upTo")
            last = up_to
            tiers.append({
                "upTo": up_to,
                "unitPrice": None if t.unit_price is None
                else _price(t.unit_price, f"{tf}.unitPrice"),
                "flatPrice": None if t.flat_price is None
                else _price(t.flat_price, f"{tf}.flatPrice"),
            })
    block = None
    if p.block_size is not None:
        if not tiered:
            raise bad_input(f"a {model} price has no blockSize", f"{field}.blockSize")
        block = _whole(p.block_size, f"{field}.blockSize")
    rate = None
    if p.credit_rate is not None:
        await _custom_currency(catalog, env, p.credit_rate.currency_id,
                               f"{field}.creditRate.currencyId")
        rate = {"amount": _credits(p.credit_rate.amount, f"{field}.creditRate.amount"),
                "currencyId": p.credit_rate.currency_id,
                "costFormula": p.credit_rate.cost_formula}
    if p.credit_grant_cadence is not None and rate is None and model != "CREDIT_BASED":
        raise bad_input("goes with a creditRate", f"{field}.creditGrantCadence")
    return {
        "billingPeriod": p.billing_period,
        "billingCountryCode": country,
        "price": None if p.price is None else _price(p.price, f"{field}.price"),
        "tiers": tiers,
        "blockSize": block,
        "creditRate": rate,
        "creditGrantCadence": p.credit_grant_cadence,
    }


def _currencies_of(period: dict[str, Any]) -> set[str]:
    found = set()
    if period["price"]:
        found.add(period["price"]["currency"])
    for t in period["tiers"] or ():
        for name in ("unitPrice", "flatPrice"):
            if t[name]:
                found.add(t[name]["currency"])
    return found


async def _pricing_model(catalog: Catalog, env: str, m: PricingModel,
                         field: str) -> dict[str, Any]:
    model = m.billing_model
    if model in ("FLAT_FEE", "MINIMUM_SPEND"):
        if m.feature_id is not None:
            raise bad_input(f"a {model} price is not per feature", f"{field}.featureId")
    elif model in ("PER_UNIT", "USAGE_BASED"):
        if m.feature_id is None:
            raise bad_input(f"a {model} price names the feature it counts",
                            f"{field}.featureId")
    if m.feature_id is not None:
        feature = await _feature(catalog, env, m.feature_id, f"{field}.featureId")
        if feature.feature_type != "NUMBER":
            raise bad_input(f"feature {m.feature_id!r} is {feature.feature_type}; priced "
                            "features are NUMBER features", f"{field}.featureId")
        if model == "USAGE_BASED" and feature.meter_type == "None":
            raise bad_input(f"feature {m.feature_id!r} is not metered; USAGE_BASED prices "
                            "metered features (PER_UNIT prices a quantity)",
                            f"{field}.featureId")
    if model == "CREDIT_BASED":
        if m.top_up_custom_currency_id is None:
            raise bad_input("a CREDIT_BASED price names the custom currency it tops up",
                            f"{field}.topUpCustomCurrencyId")
        await _custom_currency(catalog, env, m.top_up_custom_currency_id,
                               f"{field}.topUpCustomCurrencyId")
    elif m.top_up_custom_currency_id is not None:
        raise bad_input("only a CREDIT_BASED price tops up a currency",
                        f"{field}.topUpCustomCurrencyId")
    if model == "USAGE_BASED" and m.billing_cadence == "ONE_OFF":
        raise bad_input("usage is billed per period: USAGE_BASED prices are RECURRING",
                        f"{field}.billingCadence")
    for name in ("min_unit_quantity", "max_unit_quantity"):
        value = getattr(m, name)
        if value is not None:
            # Seats bought (PER_UNIT), or credits bought in one top-up (CREDIT_BASED:
            # the prepaid plan's minimum and maximum purchase).
            if model not in ("PER_UNIT", "CREDIT_BASED"):
                raise bad_input(f"only a PER_UNIT or CREDIT_BASED price has a "
                                f"{_camel(name)}", f"{field}.{_camel(name)}")
            if value < 0:
                raise bad_input("must not be negative", f"{field}.{_camel(name)}")
    if (m.min_unit_quantity is not None and m.max_unit_quantity is not None
            and m.max_unit_quantity < m.min_unit_quantity):
        raise bad_input("must not be less than minUnitQuantity", f"{field}.maxUnitQuantity")
    if not m.price_periods:
        raise bad_input("must hold at least one price period", f"{field}.pricePeriods")
    periods = []
    seen: set[tuple[str, str | None]] = set()
    for j, p in enumerate(m.price_periods):
        pf = f"{field}.pricePeriods[{j}]"
        period = await _price_period(catalog, env, p, model, pf)
        key = (period["billingPeriod"], period["billingCountryCode"])
        if key in seen:
            raise bad_input("one price per billing period and country", f"{pf}.billingPeriod")
        seen.add(key)
        if period["tiers"] and m.tiers_mode is None:
            raise bad_input("tiered prices say VOLUME or GRADUATED", f"{field}.tiersMode")
        periods.append(period)
    if m.tiers_mode is not None and not any(p["tiers"] for p in periods):
        raise bad_input("goes with tiered prices", f"{field}.tiersMode")
    if m.reset_period is not None and model not in ("PER_UNIT", "USAGE_BASED"):
        raise bad_input(f"a {model} price has no reset period", f"{field}.resetPeriod")
    configs = {_camel(n): getattr(m, n) for n in (
        "monthly_reset_period_configuration", "weekly_reset_period_configuration",
        "yearly_reset_period_configuration")}
    configs = {k: to_dict(v) for k, v in configs.items() if v is not None}
    return {
        "billingModel": model,
        "billingCadence": m.billing_cadence,
        "featureId": m.feature_id,
        "tiersMode": m.tiers_mode,
        "minUnitQuantity": m.min_unit_quantity,
        "maxUnitQuantity": m.max_unit_quantity,
        "topUpCustomCurrencyId": m.top_up_custom_currency_id,
        "resetPeriod": m.reset_period,
        "resetPeriodConfiguration": _reset_config(m.reset_period, configs, f"{field}."),
        "pricePeriods": periods,
    }


def _charge_ids(model: dict[str, Any], prefix: str = "") -> None:
    subject = model.get("featureId") or model.get("topUpCustomCurrencyId") or \
        model.get("currencyId")
    for p in model["pricePeriods"]:
        parts = [prefix + model.get("billingModel", "OVERAGE")]
        if subject:
            parts.append(subject)
        parts.append(p["billingPeriod"])
        if p["billingCountryCode"]:
            parts.append(p["billingCountryCode"])
        p["id"] = ".".join(parts)


async def _charges(catalog: Catalog, env: str, body: Any) -> dict[str, Any]:
    """`charges` in its stored form (a full replace of the package's prices)."""
    c = convert(body, Charges, "charges")
    models = []
    subjects: set[tuple[str, str | None]] = set()
    for i, m in enumerate(c.pricing_models or ()):
        field = f"charges.pricingModels[{i}]"
        model = await _pricing_model(catalog, env, m, field)
        subject = (model["billingModel"], model["featureId"] or model["topUpCustomCurrencyId"])
        if subject in subjects:
            raise bad_input("one pricing model per billing model and feature",
                            f"{field}.billingModel")
        subjects.add(subject)
        _charge_ids(model)
        models.append(model)
    if c.pricing_type == "PAID" and not models:
        raise bad_input("a PAID package has at least one pricing model",
                        "charges.pricingModels")
    if c.pricing_type != "PAID" and models:
        raise bad_input(f"a {c.pricing_type} package has no pricing models",
                        "charges.pricingModels")
    # One currency per billing country (a plan is priced in one currency there) ...
    by_country: dict[str | None, str] = {}
    for i, model in enumerate(models):
        for j, p in enumerate(model["pricePeriods"]):
            for cur in _currencies_of(p):
                had = by_country.setdefault(p["billingCountryCode"], cur)
                if had != cur:
                    raise bad_input(f"prices for one billing country share a currency "
                                    f"({had}, not {cur})",
                                    f"charges.pricingModels[{i}].pricePeriods[{j}]")
    # ... and per invoice: for each billing country and period, the prices an invoice
    # takes (each model's price for that country, else its default — as estimates and the
    # paywall pick them, engine.billing.pricing.select_price_period) share a currency.
    # Credit top-ups are bought on their own, not on the subscription's invoice.
    billed = [(i, m) for i, m in enumerate(models) if m["billingModel"] != "CREDIT_BASED"]
    countries = {p["billingCountryCode"] for _, m in billed for p in m["pricePeriods"]}
    periods = {p["billingPeriod"] for _, m in billed for p in m["pricePeriods"]}
    for country in sorted(countries | {None}, key=lambda x: x or ""):
        for period in sorted(periods):
            seen: str | None = None
            for i, model in billed:
                chosen = select_price_period(model, period, country)
                if chosen is None:
                    continue
                j = model["pricePeriods"].index(chosen)
                for cur in _currencies_of(chosen):
                    seen = seen or cur
                    if cur != seen:
                        where = f"billing country {country}" if country else "the default"
                        raise bad_input(f"the {period} prices for {where} mix currencies "
                                        f"({seen}, {cur}): an invoice is in one currency",
                                        f"charges.pricingModels[{i}].pricePeriods[{j}]")
    overage = []
    for i, o in enumerate(c.overage_pricing_models or ()):
        field = f"charges.overagePricingModels[{i}]"
        if (o.feature_id is None) == (o.currency_id is None):
            raise bad_input("give either featureId or currencyId", f"{field}.featureId")
        if o.feature_id is not None:
            await _feature(catalog, env, o.feature_id, f"{field}.featureId")
        if o.currency_id is not None:
            await _custom_currency(catalog, env, o.currency_id, f"{field}.currencyId")
        if o.entitlement is not None:
            await _feature(catalog, env, o.entitlement.feature_id,
                           f"{field}.entitlement.featureId")
        credit_ent = None
        if o.credit_entitlement is not None:
            ce = o.credit_entitlement
            await _custom_currency(catalog, env, ce.custom_currency_id,
                                   f"{field}.creditEntitlement.customCurrencyId")
            credit_ent = {"amount": _credits(ce.amount, f"{field}.creditEntitlement.amount"),
                          "cadence": ce.cadence, "customCurrencyId": ce.custom_currency_id}
        if not o.price_periods:
            raise bad_input("must hold at least one price period", f"{field}.pricePeriods")
        periods = [await _price_period(catalog, env, p, "USAGE_BASED",
                                       f"{field}.pricePeriods[{j}]")
                   for j, p in enumerate(o.price_periods)]
        ent = None
        if o.entitlement is not None:
            ent = {k: (decimal_str(v) if isinstance(v, Decimal) else v)
                   for k, v in to_dict(o.entitlement).items()}
        item = {"billingModel": "USAGE_BASED", "billingCadence": "RECURRING",
                "featureId": o.feature_id, "currencyId": o.currency_id,
                "entitlement": ent, "creditEntitlement": credit_ent, "pricePeriods": periods}
        _charge_ids(item, "OVERAGE.")
        overage.append(item)
    minimum = None
    if c.minimum_spend is not None:
        minimum = []
        periods_seen: set[str] = set()
        for i, ms in enumerate(c.minimum_spend):
            field = f"charges.minimumSpend[{i}]"
            if ms.billing_period in periods_seen:
                raise bad_input("one minimum per billing period", f"{field}.billingPeriod")
            periods_seen.add(ms.billing_period)
            minimum.append({"billingPeriod": ms.billing_period,
                            "minimum": _price(ms.minimum, f"{field}.minimum")})
    return {"pricingType": c.pricing_type, "billingId": c.billing_id,
            "pricingModels": models, "overagePricingModels": overage,
            "overageBillingPeriod": c.overage_billing_period, "minimumSpend": minimum,
            "_setAt": catalog.now_ms()}
