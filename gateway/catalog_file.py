"""A declarative catalog in TOML: custom currencies, features, products, plans, add-ons and
coupons, applied to an environment with `creditd catalog apply FILE` (or at start-up with
`creditd serve --catalog FILE`). The format is described in docs/catalog.md.

`load(text, name)` parses and validates the file into a `CatalogFile` (errors name the
table and key, with the line). `apply(catalog, env, file, dry_run)` compares every item with
what is stored and creates, updates, or (plans and add-ons) publishes a new version where
they differ, through the same code the REST API runs: the route handlers of currencies,
features and coupons, and `gateway.packages` for products, plans and add-ons. Applying the
same file again changes nothing.

Nothing is half-applied: the whole change set is first applied to a scratch copy of the
environment's catalog (a temporary SQLite database), and only when that succeeds is it
applied to the real one. A dry run stops after the scratch run, so what it prints is exactly
what the real run would do.
"""

from __future__ import annotations

import re
import tempfile
import tomllib
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Literal

import msgspec

from engine.core.meters import Meter
from gateway.errors import ApiError

__all__ = ["CatalogError", "CatalogFile", "Change", "apply", "apply_path", "load"]

_unjson = msgspec.json.decode
# Decimals as JSON numbers, as a client sends them (decoded back into Decimals by the route).
_json = msgspec.json.Encoder(decimal_format="number").encode
_decimal_json = msgspec.json.Decoder(float_hook=Decimal).decode


class CatalogError(Exception):
    """A catalog file that cannot be applied; the message names the key and the line."""


# -- the file's schema (TOML keys are snake_case; each table is keyed by the item's id) ---


class _S(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    pass


class Units(_S):
    singular: str
    plural: str


class CurrencyTopUp(_S):
    price_per_credit: Decimal
    price_currency: str = "usd"
    minimum_purchase: Decimal | None = None
    maximum_purchase: Decimal | None = None


class Currency(_S):
    display_name: str
    description: str | None = None
    symbol: str | None = None
    units: Units | None = None
    metadata: dict[str, str] = {}
    top_up: CurrencyTopUp | None = None


class CreditRate(_S):
    amount: Decimal
    currency: str


class EnumValue(_S):
    value: str
    display_name: str


class UnitTransformation(_S):
    divide: int
    round: Literal["UP", "DOWN"] = "DOWN"
    units: str | None = None
    units_plural: str | None = None


class Feature(_S):
    display_name: str
    type: Literal["BOOLEAN", "NUMBER", "ENUM"]
    description: str | None = None
    units: str | None = None
    units_plural: str | None = None
    metadata: dict[str, str] = {}
    meter: Meter | None = None
    meter_type: Literal["None", "FLUCTUATING", "INCREMENTAL"] | None = None
    credit_rate: CreditRate | None = None
    enum_values: list[EnumValue] | None = None
    unit_transformation: UnitTransformation | None = None
    status: Literal["NEW", "SUSPENDED", "ACTIVE"] | None = None


class Product(_S):
    display_name: str
    description: str | None = None
    metadata: dict[str, str] = {}
    multiple_subscriptions: bool = False


ResetPeriod = Literal["HOUR", "DAY", "WEEK", "MONTH", "YEAR"]
_ANCHORS = {
    "MONTH": ("SubscriptionStart", "StartOfTheMonth"),
    "WEEK": ("SubscriptionStart", "EverySunday", "EveryMonday", "EveryTuesday",
             "EveryWednesday", "EveryThursday", "EveryFriday", "EverySaturday"),
    "YEAR": ("SubscriptionStart",),
}
Widget = Literal["PAYWALL", "CUSTOMER_PORTAL", "CHECKOUT"]


class FeatureEntitlement(_S):
    usage_limit: int | None = None
    unlimited: bool = False
    soft_limit: bool = False
    reset_period: ResetPeriod | None = None
    reset_anchor: str | None = None
    enum_values: list[str] | None = None
    granted: bool = True
    behavior: Literal["Increment", "Override"] | None = None
    description: str | None = None
    display_name: str | None = None
    hidden_from: list[Widget] = []


class CreditEntitlement(_S):
    amount: Decimal
    cadence: Literal["MONTH", "YEAR"] = "MONTH"
    soft_limit: bool = False
    behavior: Literal["Increment", "Override"] | None = None
    description: str | None = None
    display_name: str | None = None
    hidden_from: list[Widget] = []


class Tier(_S):
    up_to: Decimal | None = None
    unit_price: Decimal | None = None
    flat_price: Decimal | None = None


class PricePeriod(_S):
    billing_period: Literal["MONTHLY", "ANNUALLY"]
    amount: Decimal | None = None
    currency: str = "usd"
    country: str | None = None
    tiers: list[Tier] | None = None
    block_size: Decimal | None = None


class Price(_S):
    model: Literal["FLAT_FEE", "PER_UNIT", "USAGE_BASED"]
    periods: list[PricePeriod]
    feature: str | None = None
    cadence: Literal["RECURRING", "ONE_OFF"] = "RECURRING"
    tiers_mode: Literal["VOLUME", "GRADUATED"] | None = None
    min_units: int | None = None
    max_units: int | None = None
    reset_period: ResetPeriod | None = None


class PlanTopUp(_S):
    currency: str
    price_per_credit: Decimal
    price_currency: str = "usd"
    minimum_purchase: int | None = None
    maximum_purchase: int | None = None
    billing_period: Literal["MONTHLY", "ANNUALLY"] = "MONTHLY"


class TrialBudget(_S):
    limit: Decimal
    soft_limit: bool = False


class Trial(_S):
    duration: int
    units: Literal["DAY", "MONTH"] = "DAY"
    end_behavior: Literal["CONVERT_TO_PAID", "CANCEL_SUBSCRIPTION"] | None = None
    budget: TrialBudget | None = None


class _Package(_S):
    product: str
    display_name: str
    description: str | None = None
    metadata: dict[str, str] = {}
    billing_id: str | None = None
    pricing_type: Literal["FREE", "PAID", "CUSTOM"] | None = None
    hidden: bool = False
    # Checked one entry at a time (below), so an error names the feature.
    entitlements: dict[str, dict[str, Any]] = {}
    credits: dict[str, dict[str, Any]] = {}
    prices: list[Price] = []


class Plan(_Package):
    parent: str | None = None
    compatible_addons: list[str] = []
    trial: Trial | None = None
    top_up: PlanTopUp | None = None


class Addon(_Package):
    max_quantity: int | None = None
    dependencies: list[str] = []


class AmountOff(_S):
    amount: Decimal
    currency: str


class Coupon(_S):
    name: str
    description: str | None = None
    metadata: dict[str, str] = {}
    percent_off: Decimal | None = None
    amounts_off: list[AmountOff] | None = None
    duration_in_months: int | None = None
    duration: Literal["ONCE", "REPEATING", "FOREVER"] | None = None


_TABLES: dict[str, type[_S]] = {"currencies": Currency, "features": Feature,
                                "products": Product, "addons": Addon, "plans": Plan,
                                "coupons": Coupon}
# What each table holds, in the singular, for messages.
_KIND = {"currencies": "currency", "features": "feature", "products": "product",
         "addons": "addon", "plans": "plan", "coupons": "coupon"}


@dataclass
class CatalogFile:
    name: str
    text: str
    currencies: dict[str, Currency] = field(default_factory=dict)
    features: dict[str, Feature] = field(default_factory=dict)
    products: dict[str, Product] = field(default_factory=dict)
    addons: dict[str, Addon] = field(default_factory=dict)
    plans: dict[str, Plan] = field(default_factory=dict)
    coupons: dict[str, Coupon] = field(default_factory=dict)
    # (plan or add-on table, id) -> {feature id: entitlement}, {currency id: credits}
    feature_entitlements: dict[tuple[str, str], dict[str, FeatureEntitlement]] = \
        field(default_factory=dict)
    credit_entitlements: dict[tuple[str, str], dict[str, CreditEntitlement]] = \
        field(default_factory=dict)

    def error(self, path: str, message: str) -> CatalogError:
        line = locate(self.text, path)
        where = f" (line {line[0]}: {line[1].strip()})" if line else ""
        return CatalogError(f"{self.name}: {path}: {message}{where}")


# -- locating a key path in the text -------------------------------------------------------

_KEY_LINE = re.compile(r"""^\s*((?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*')"""
                       r"""(?:\s*\.\s*(?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*'))*)\s*=""")


def _split_key(text: str) -> list[str]:
    parts, current, quote = [], "", None
    for ch in text.strip():
        if quote:
            if ch == quote:
                quote = None
            else:
                current += ch
        elif ch in "\"'":
            quote = ch
        elif ch == ".":
            parts.append(current.strip())
            current = ""
        else:
            current += ch
    parts.append(current.strip())
    return parts


def _path_tokens(path: str) -> list[str]:
    """`plans.pro.prices[0].amount` -> ['plans', 'pro', 'prices', '0', 'amount'] (ids
    containing dots are written quoted: plans."a.b".x)."""
    tokens: list[str] = []
    for part in _split_key(re.sub(r"\[(\d+)\]", r".\1", path)):
        tokens.append(part)
    return [t for t in tokens if t != ""]


def _format_path(tokens: list[str | int]) -> str:
    out = ""
    for t in tokens:
        if isinstance(t, int):
            out += f"[{t}]"
        else:
            text = t if re.fullmatch(r"[A-Za-z0-9_-]+", t) else f'"{t}"'
            out += f".{text}" if out else text
    return out


def locate(text: str, path: str) -> tuple[int, str] | None:
    """The line that defines `path`, or failing that its nearest enclosing key or table:
    a small line scanner (tomllib keeps no positions) that follows table headers, arrays of
    tables and dotted keys."""
    want = _path_tokens(path)
    header: list[str] = []
    arrays: dict[tuple[str, ...], int] = {}
    best: tuple[int, int, str] | None = None  # (matched tokens, line number, line)

    def consider(tokens: list[str], number: int, line: str) -> None:
        nonlocal best
        n = 0
        while n < min(len(tokens), len(want)) and tokens[n] == want[n]:
            n += 1
        if n == len(tokens) and n > 0 and (best is None or n > best[0]):
            best = (n, number, line)

    def with_indices(keys: list[str]) -> list[str]:
        out: list[str] = []
        for i, key in enumerate(keys):
            out.append(key)
            index = arrays.get(tuple(keys[: i + 1]))
            if index is not None:
                out.append(str(index))
        return out

    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("[["):
            keys = _split_key(stripped[2:stripped.find("]]")])
            arrays[tuple(keys)] = arrays.get(tuple(keys), -1) + 1
            # A new element: forget the counts of arrays nested in the previous one.
            for other in [k for k in arrays if len(k) > len(keys) and k[:len(keys)] == tuple(keys)]:
                del arrays[other]
            header = with_indices(keys)
            consider(header, number, line)
        elif stripped.startswith("["):
            header = with_indices(_split_key(stripped[1:stripped.find("]")]))
            consider(header, number, line)
        else:
            match = _KEY_LINE.match(line)
            if match:
                consider(header + _split_key(match.group(1)), number, line)
    return None if best is None else (best[1], best[2])


# -- parsing and validation ----------------------------------------------------------------

_ID = re.compile(r"^[^/]{1,200}$")


def _convert(file: CatalogFile, raw: Any, kind: type[Any], prefix: list[str | int]) -> Any:
    try:
        return msgspec.convert(raw, kind, strict=False)
    except msgspec.ValidationError as exc:
        text = str(exc)
        match = re.search(r" - at `\$(.*)`$", text)
        message = text if match is None else text[: match.start()]
        sub = [] if match is None else _path_tokens(match.group(1).lstrip("."))
        named = re.search(r"(?:missing required|unknown) field `([^`]+)`", message)
        if named:
            sub.append(named.group(1))
        tokens: list[str | int] = [*prefix, *(int(t) if t.isdigit() else t for t in sub)]
        raise file.error(_format_path(tokens), message[0].lower() + message[1:]) from None


def load(text: str, name: str = "catalog.toml") -> CatalogFile:
    """Parse and check a catalog file: its shape, and that every reference (a plan's
    product, an entitlement's feature, a compatible add-on, …) names an item of the file
    or one already stored (checked again when applied)."""
    file = CatalogFile(name, text)
    try:
        data = tomllib.loads(text, parse_float=Decimal)
    except tomllib.TOMLDecodeError as exc:
        raise CatalogError(f"{name}: not valid TOML: {exc}") from None
    for key in data:
        if key not in _TABLES:
            raise file.error(key, f"unknown table; the tables are {', '.join(_TABLES)}")
    for table, kind in _TABLES.items():
        items = data.get(table, {})
        if not isinstance(items, dict):
            raise file.error(table, "must be a table of items keyed by id")
        for ident, raw in items.items():
            if not _ID.match(ident):
                raise file.error(_format_path([table, ident]),
                                 "an id is 1-200 characters without '/'")
            if not isinstance(raw, dict):
                raise file.error(_format_path([table, ident]), "must be a table")
            item = _convert(file, raw, kind, [table, ident])
            getattr(file, table)[ident] = item
            if isinstance(item, _Package):
                file.feature_entitlements[(table, ident)] = {
                    fid: _convert(file, e, FeatureEntitlement,
                                  [table, ident, "entitlements", fid])
                    for fid, e in item.entitlements.items()}
                file.credit_entitlements[(table, ident)] = {
                    cid: _convert(file, e, CreditEntitlement, [table, ident, "credits", cid])
                    for cid, e in item.credits.items()}
    _check(file)
    return file


def _check(file: CatalogFile) -> None:
    """What the schema alone cannot say. References to items not in the file are left to
    the apply step (they may be stored already)."""
    for table in ("plans", "addons"):
        for ident, pkg in getattr(file, table).items():
            base = [table, ident]
            for fid, ent in file.feature_entitlements[(table, ident)].items():
                path = [*base, "entitlements", fid]
                if ent.unlimited and ent.usage_limit is not None:
                    raise file.error(_format_path([*path, "usage_limit"]),
                                     "an unlimited entitlement has no usage_limit")
                if ent.usage_limit is not None and ent.usage_limit < 0:
                    raise file.error(_format_path([*path, "usage_limit"]), "must not be negative")
                if ent.reset_anchor is not None:
                    allowed = _ANCHORS.get(ent.reset_period or "", ())
                    if ent.reset_anchor not in allowed:
                        raise file.error(
                            _format_path([*path, "reset_anchor"]),
                            f"a {ent.reset_period or 'missing'} reset_period takes "
                            + (f"one of {', '.join(allowed)}" if allowed else "no anchor"))
                if ent.reset_period is not None and ent.usage_limit is None and not ent.unlimited:
                    raise file.error(_format_path([*path, "reset_period"]),
                                     "only a usage_limit (or unlimited usage) resets")
                feature = file.features.get(fid)
                if feature is not None and feature.type != "NUMBER" and (
                        ent.usage_limit is not None or ent.unlimited or ent.reset_period):
                    raise file.error(_format_path([*path, "usage_limit"]),
                                     f"feature {fid!r} is {feature.type}: it has no usage limit")
            for i, price in enumerate(pkg.prices):
                path = [*base, "prices", i]
                if price.model != "FLAT_FEE" and price.feature is None:
                    raise file.error(_format_path([*path, "model"]),
                                     f"a {price.model} price names its feature")
                if price.model == "FLAT_FEE" and price.feature is not None:
                    raise file.error(_format_path([*path, "feature"]),
                                     "a FLAT_FEE price is not per feature")
                if not price.periods:
                    raise file.error(_format_path([*path, "periods"]),
                                     "needs at least one billing period")
                seen: set[tuple[str, str | None]] = set()
                for j, period in enumerate(price.periods):
                    ppath = [*path, "periods", j]
                    key = (period.billing_period, period.country)
                    if key in seen:
                        raise file.error(_format_path([*ppath, "billing_period"]),
                                         "the same billing period and country twice")
                    seen.add(key)
                    if (period.amount is None) == (period.tiers is None):
                        raise file.error(_format_path([*ppath, "amount"]),
                                         "give either amount or tiers")
                    if period.tiers is not None and price.model == "FLAT_FEE":
                        raise file.error(_format_path([*ppath, "tiers"]),
                                         "a FLAT_FEE price has no tiers")
                    if period.tiers is not None and price.tiers_mode is None:
                        raise file.error(_format_path([*path, "tiers_mode"]),
                                         "tiered prices say VOLUME or GRADUATED")
                    if period.amount is not None and period.amount < 0:
                        raise file.error(_format_path([*ppath, "amount"]), "must not be negative")
                    if not re.fullmatch(r"[A-Za-z]{3}", period.currency):
                        raise file.error(_format_path([*ppath, "currency"]),
                                         "must be a three-letter currency code")
                    for k, tier in enumerate(period.tiers or ()):
                        last = k == len(period.tiers or ()) - 1
                        if (tier.up_to is None) != last:
                            raise file.error(_format_path([*ppath, "tiers", k, "up_to"]),
                                             "every tier but the last has up_to; the last "
                                             "has none")
                        if tier.unit_price is None and tier.flat_price is None:
                            raise file.error(_format_path([*ppath, "tiers", k, "unit_price"]),
                                             "a tier has a unit_price, a flat_price or both")
            if isinstance(pkg, Plan):
                if pkg.parent == ident:
                    raise file.error(_format_path([*base, "parent"]),
                                     "a plan cannot be its own parent")
                if pkg.trial is not None and pkg.trial.duration < 1:
                    raise file.error(_format_path([*base, "trial", "duration"]),
                                     "must be at least 1")
                top = pkg.top_up
                if top is not None:
                    if top.price_per_credit <= 0:
                        raise file.error(_format_path([*base, "top_up", "price_per_credit"]),
                                         "must be positive")
                    low, high = top.minimum_purchase, top.maximum_purchase
                    if low is not None and low < 1:
                        raise file.error(_format_path([*base, "top_up", "minimum_purchase"]),
                                         "must be at least 1")
                    if low is not None and high is not None and low > high:
                        raise file.error(_format_path([*base, "top_up", "minimum_purchase"]),
                                         "must not be above maximum_purchase")
    # Parents form no cycle (a parent outside the file was stored earlier, so it cannot
    # point back into the file's new plans... but it may name one of them: checked too).
    for ident in file.plans:
        seen_ids = [ident]
        parent = file.plans[ident].parent
        while parent is not None and parent in file.plans:
            if parent in seen_ids:
                raise file.error(_format_path(["plans", ident, "parent"]),
                                 f"plans inherit in a cycle: {' -> '.join([*seen_ids, parent])}")
            seen_ids.append(parent)
            parent = file.plans[parent].parent


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


# -- comparing what the file says with what is stored --------------------------------------

def _empty(value: Any) -> bool:
    return value is None or value is False or value == "" or value == [] or value == {}


def _number(value: Any) -> Decimal | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, Decimal)):
        return Decimal(value)
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, str) and re.fullmatch(r"-?\d+(\.\d+)?", value.strip()):
        return Decimal(value)
    return None


_ANY_CASE = ("billingCountryCode", "currency")


def same(wanted: Any, stored: Any) -> bool:
    """Whether the stored value says what the file wants: numbers compare by value (the
    store keeps money as decimal strings), an absent key equals null/false/empty, and keys
    the store adds on its own (timestamps, defaults) are ignored."""
    if _empty(wanted) and _empty(stored):
        return True
    a, b = _number(wanted), _number(stored)
    if a is not None and b is not None:
        return a == b
    if isinstance(wanted, dict):
        if not isinstance(stored, dict):
            return False
        return all(same(v, stored.get(k)) if k not in _ANY_CASE else
                   str(v).lower() == str(stored.get(k)).lower()
                   for k, v in wanted.items())
    if isinstance(wanted, (list, tuple)):
        if not isinstance(stored, (list, tuple)) or len(wanted) != len(stored):
            return False
        return all(same(x, y) for x, y in zip(wanted, stored))
    return bool(wanted == stored)


def _differs(wanted: dict[str, Any], stored: dict[str, Any]) -> list[str]:
    return [k for k, v in wanted.items() if not same(v, stored.get(k))]


def _stored_entitlement(e: dict[str, Any]) -> dict[str, Any]:
    """A stored entitlement in the input shape (the store keeps one resetPeriodConfiguration;
    the input names it per period)."""
    out = dict(e)
    config = out.pop("resetPeriodConfiguration", None)
    if config and out.get("resetPeriod") in ("MONTH", "WEEK", "YEAR"):
        out.update(_reset_config(out["resetPeriod"], config.get("accordingTo")))
    return out


# -- applying ------------------------------------------------------------------------------


@dataclass
class Change:
    action: Literal["create", "update", "publish", "unchanged"]
    kind: str
    ident: str
    detail: str = ""

    def line(self) -> str:
        label = {"create": "create", "update": "update", "publish": "publish-new-version",
                 "unchanged": "unchanged"}[self.action]
        text = f"{label:<20}{self.kind} {self.ident}"
        return f"{text}  ({self.detail})" if self.detail else text


class _Request:
    """What a route handler reads from its request (services, environment, body): the
    file's items go through the very handlers the REST API runs."""

    def __init__(self, services: Any, env: str, body: dict[str, Any] | None) -> None:
        self.app = SimpleNamespace(state=SimpleNamespace(services=services))
        self.scope = {"state": {"environment": env}}
        self._body = b"" if body is None else _json(body)
        self.query_params: dict[str, str] = {}
        self.headers: dict[str, str] = {}

    async def body(self) -> bytes:
        return self._body


async def _call(handler: Any, services: Any, env: str, body: dict[str, Any] | None,
                *args: Any) -> dict[str, Any]:
    response = await handler.fn(_Request(services, env, body), *args)
    return _unjson(response.content)["data"]


# Wire field names (as an ApiError names them) -> the file's key names, where they differ.
_FILE_NAMES = {"featureUnits": "units", "featureUnitsPlural": "units_plural",
               "featureType": "type", "featureStatus": "status",
               "enumConfiguration": "enum_values", "currencyId": "currency",
               "pricingModels": "prices", "pricePeriods": "periods",
               "billingCountryCode": "country", "featureId": "feature",
               "billingModel": "model", "billingCadence": "cadence",
               "minUnitQuantity": "min_units", "maxUnitQuantity": "max_units",
               "topUpCustomCurrencyId": "top_up", "parentPlanId": "parent",
               "compatibleAddonIds": "compatible_addons", "defaultTrialConfig": "trial",
               "trialEndBehavior": "end_behavior", "hasSoftLimit": "soft_limit",
               "hasUnlimitedUsage": "unlimited", "displayNameOverride": "display_name",
               "hiddenFromWidgets": "hidden_from", "isGranted": "granted",
               "amountsOff": "amounts_off", "percentOff": "percent_off", "price": "amount"}


def _file_path(field_name: str | None) -> list[str | int]:
    if not field_name:
        return []
    out: list[str | int] = []
    for token in _path_tokens(field_name):
        if token.isdigit():
            out.append(int(token))
        else:
            out.append(_FILE_NAMES.get(token, re.sub(r"(?<!^)([A-Z])", r"_\1", token).lower()))
    return out


class _Applier:
    def __init__(self, file: CatalogFile, catalog: Any, env: str) -> None:
        from engine.runtime.clock import SystemClock

        self.file = file
        self.catalog = catalog
        self.env = env
        self.services = SimpleNamespace(catalog=catalog, store=catalog.store,
                                        clock=SystemClock(), settings=None, runtime=None)
        self.changes: list[Change] = []

    def fail(self, path: list[str | int], exc: ApiError) -> CatalogError:
        tokens = [*path, *_file_path(exc.field)]
        return self.file.error(_format_path(tokens), exc.message)

    async def run(self) -> list[Change]:
        f = self.file
        for ident, c in f.currencies.items():
            await self._guard(["currencies", ident], self._currency(ident, c))
        for ident, feat in f.features.items():
            await self._guard(["features", ident], self._feature(ident, feat))
        for ident, p in f.products.items():
            await self._guard(["products", ident], self._product(ident, p))
        for ident, a in f.addons.items():
            await self._guard(["addons", ident], self._package("addons", ident, a))
        for ident in _parents_first(f.plans):
            await self._guard(["plans", ident], self._package("plans", ident, f.plans[ident]))
        for ident, cp in f.coupons.items():
            await self._guard(["coupons", ident], self._coupon(ident, cp))
        return self.changes

    async def _guard(self, path: list[str | int], work: Any) -> None:
        try:
            await work
        except ApiError as exc:
            raise self.fail(path, exc) from None

    def note(self, action: Any, table: str, ident: str, detail: str = "") -> None:
        self.changes.append(Change(action, _KIND[table], ident, detail))

    async def _currency(self, ident: str, c: Currency) -> None:
        from gateway.routes import currencies as routes

        body = _currency_body(ident, c)
        stored = await self.catalog.get("currencies", self.env, ident)
        if stored is None:
            await _call(routes.create_currency, self.services, self.env, body)
            self.note("create", "currencies", ident)
            return
        del body["id"]
        # Compare in the stored shape: top-up amounts are kept as units.
        wanted = dict(body)
        wanted["topUp"] = routes._top_up(msgspec.convert(body["topUp"], routes.TopUp)) \
            if body["topUp"] is not None else None
        changed = _differs(wanted, stored)
        if stored.get("_archivedAt") is not None:
            await _call(routes.unarchive_currency, self.services, self.env, None, ident)
            changed.insert(0, "unarchived")
        if changed:
            await _call(routes.update_currency, self.services, self.env, body, ident)
            self.note("update", "currencies", ident, ", ".join(changed))
        else:
            self.note("unchanged", "currencies", ident)

    async def _feature(self, ident: str, feat: Feature) -> None:
        from gateway.routes import features as routes

        stored = await self.catalog.get("features", self.env, ident)
        if stored is None:
            await _call(routes.create_feature, self.services, self.env,
                        _feature_body(ident, feat, create=True))
            self.note("create", "features", ident)
            return
        if stored["featureType"] != feat.type:
            raise ApiError(400, "BadUserInput", f"a feature's type cannot change (it is "
                           f"{stored['featureType']}); archive it and use a new id",
                           "featureType")
        if feat.meter_type is not None and stored["meterType"] != feat.meter_type:
            raise ApiError(400, "BadUserInput", f"a feature's meter type cannot change (it is "
                           f"{stored['meterType']})", "meterType")
        body = _feature_body(ident, feat, create=False)
        wanted = dict(body)
        if feat.credit_rate is not None:
            wanted["creditRate"] = {"amount": feat.credit_rate.amount,
                                    "currencyId": feat.credit_rate.currency}
        changed = _differs(wanted, stored)
        if stored.get("_archivedAt") is not None:
            await _call(routes.unarchive_feature, self.services, self.env, None, ident)
            changed.insert(0, "unarchived")
        if changed:
            await _call(routes.update_feature, self.services, self.env, body, ident)
            self.note("update", "features", ident, ", ".join(changed))
        else:
            self.note("unchanged", "features", ident)

    async def _coupon(self, ident: str, c: Coupon) -> None:
        from gateway.routes import coupons as routes

        body = _coupon_body(ident, c)
        stored = await self.catalog.get("coupons", self.env, ident)
        if stored is None:
            await _call(routes.create_coupon, self.services, self.env, body)
            self.note("create", "coupons", ident)
            return
        # The discount and duration of a coupon are fixed once created (as the API has it).
        parsed = msgspec.convert(body, routes.CouponCreate)
        fixed = {**routes._discount(parsed), **routes._duration(parsed)}
        for key, value in fixed.items():
            if not same(value, stored.get(key)):
                raise ApiError(400, "BadUserInput",
                               "a coupon's discount and duration cannot change once created; "
                               "archive it and use a new id", key)
        if stored.get("_archivedAt") is not None:
            raise ApiError(400, "BadUserInput", f"coupon {ident!r} is archived; archived "
                           "coupons cannot come back, use a new id")
        update = {"name": c.name, "description": c.description, "metadata": c.metadata}
        changed = _differs(update, stored)
        if changed:
            await _call(routes.update_coupon, self.services, self.env, update, ident)
            self.note("update", "coupons", ident, ", ".join(changed))
        else:
            self.note("unchanged", "coupons", ident)

    async def _product(self, ident: str, p: Product) -> None:
        from gateway import packages

        body = {"displayName": p.display_name, "description": p.description,
                "metadata": p.metadata, "multipleSubscriptions": p.multiple_subscriptions}
        stored = await packages.get_product(self.catalog, self.env, ident)
        if stored is None:
            await packages.create_product(self.catalog, self.env, {"id": ident, **body})
            self.note("create", "products", ident)
            return
        changed = _differs(body, stored)
        if changed:
            await packages.update_product(self.catalog, self.env, ident, body)
            self.note("update", "products", ident, ", ".join(changed))
        else:
            self.note("unchanged", "products", ident)

    async def _package(self, table: str, ident: str, pkg: Plan | Addon) -> None:
        from gateway import packages

        kind = "plan" if table == "plans" else "addon"
        fields = _package_fields(pkg)
        entitlements = _entitlements(self.file, table, ident)
        charges = _charges(pkg)
        stored = await packages.get_package(self.catalog, self.env, kind, ident)
        if stored is None:
            create = {"id": ident, "productId": pkg.product,
                      **{k: fields[k] for k in _CREATE_FIELDS if k in fields}}
            await packages.create_package(self.catalog, self.env, kind, _plain(create))
            await self._fill(table, ident, fields, entitlements, charges)
            doc = await packages.publish(self.catalog, self.env, kind, ident)
            self.note("create", table, ident, f"v{doc.get('versionNumber', 1)}")
            return
        if stored.get("productId") != pkg.product:
            raise ApiError(400, "BadUserInput", f"a {kind} cannot move to another product "
                           f"(it is in {stored.get('productId')!r})", "product")
        if stored.get("status") == "ARCHIVED" or stored.get("_archivedAt") is not None:
            raise ApiError(400, "BadUserInput", f"{kind} {ident!r} is archived; use a new id")
        current = await packages.published(self.catalog, self.env, kind, ident)
        if current is None:
            changed = ["first version"]
        else:
            changed = _differs(fields, current)
            if not same(entitlements, [_stored_entitlement(e) for e in
                                       current.get("entitlements") or []]):
                changed.append("entitlements")
            if not same(charges, current.get("charges")):
                changed.append("prices")
        if not changed:
            # The published version says what the file says (a draft someone is working on
            # through the API is left alone).
            self.note("unchanged", table, ident)
            return
        if stored.get("status") == "PUBLISHED" and set(changed) <= set(_COSMETIC):
            # Names, descriptions and metadata are not prices: they change in place, on the
            # published version too, as PATCH does.
            await packages.update_package(self.catalog, self.env, kind, ident,
                                          _plain({k: fields[k] for k in changed}))
            self.note("update", table, ident, ", ".join(changed))
            return
        # Any change makes a new version: subscriptions on the old one keep what they have.
        if stored.get("status") != "DRAFT":
            await packages.create_draft(self.catalog, self.env, kind, ident)
        await self._fill(table, ident, fields, entitlements, charges)
        doc = await packages.publish(self.catalog, self.env, kind, ident)
        self.note("publish", table, ident,
                  f"v{doc.get('versionNumber', '?')}: {', '.join(changed)}")

    async def _fill(self, table: str, ident: str, fields: dict[str, Any],
                    entitlements: list[dict[str, Any]], charges: dict[str, Any] | None) -> None:
        """Set a draft's fields, prices and entitlements; an error is reported at the
        file's key (entitlements are keyed by feature id there, prices by position)."""
        from gateway import packages

        kind = "plan" if table == "plans" else "addon"
        try:
            update = {k: v for k, v in fields.items() if k != "pricingType"}
            await packages.update_package(self.catalog, self.env, kind, ident,
                                          _plain({**update, "charges": charges}))
        except ApiError as exc:
            raise self._package_error(table, ident, exc) from None
        try:
            await packages.set_entitlements(self.catalog, self.env, kind, ident,
                                            _plain(entitlements), True)
        except ApiError as exc:
            raise self._package_error(table, ident, exc, entitlements) from None

    def _package_error(self, table: str, ident: str, exc: ApiError,
                       entitlements: list[dict[str, Any]] | None = None) -> CatalogError:
        base: list[str | int] = [table, ident]
        tokens = _path_tokens(exc.field or "")
        if tokens and tokens[0] == "charges":
            tokens = tokens[1:]
        if entitlements is not None and tokens and tokens[0] == "entitlements":
            tokens = tokens[1:]
            if tokens and tokens[0].isdigit() and int(tokens[0]) < len(entitlements):
                e = entitlements[int(tokens[0])]
                base += ["entitlements" if e["type"] == "FEATURE" else "credits", e["id"]]
                tokens = tokens[1:]
                if tokens == ["id"]:  # the file's key is the id
                    tokens = []
            else:
                base.append("entitlements")
        elif tokens and tokens[0] == "pricingModels":
            pkg = getattr(self.file, table)[ident]
            if len(tokens) > 1 and tokens[1].isdigit() and int(tokens[1]) >= len(pkg.prices):
                base.append("top_up")
                tokens = tokens[2:]
        rest = _file_path(".".join(tokens)) if tokens else []
        return self.file.error(_format_path([*base, *rest]), exc.message)


_COSMETIC = ("displayName", "description", "billingId", "metadata", "hidden")
# The package fields creating one takes (the rest are set on its first draft).
_CREATE_FIELDS = ("displayName", "description", "metadata", "billingId", "pricingType",
                  "parentPlanId", "maxQuantity")


def _plain(value: Any) -> Any:
    """Decimals as JSON would carry them (the package functions take decoded bodies)."""
    return _decimal_json(_json(value))


def _parents_first(plans: dict[str, Plan]) -> list[str]:
    order: list[str] = []

    def visit(ident: str) -> None:
        if ident in order:
            return
        parent = plans[ident].parent
        if parent is not None and parent in plans:
            visit(parent)
        order.append(ident)

    for ident in plans:
        visit(ident)
    return order


# The catalog tables a scratch copy needs (documents), and the versions table.
_DOC_TABLES = ("currencies", "features", "coupons", "products", "plans", "addons")


async def _scratch_copy(catalog: Any, env: str, scratch: Any) -> None:
    for table in _DOC_TABLES:
        for (doc,) in await catalog.store.fetch(
                f"SELECT doc FROM {table} WHERE environment = ?", env):
            await scratch.insert(table, env, _unjson(doc))
    for row in await catalog.store.fetch(
            "SELECT environment, kind, id, version, doc, published_at FROM package_versions "
            "WHERE environment = ?", env):
        await scratch.store.execute(
            "INSERT INTO package_versions (environment, kind, id, version, doc, published_at) "
            "VALUES (?, ?, ?, ?, ?, ?)", *row)


async def apply(catalog: Any, env: str, file: CatalogFile, *,
                dry_run: bool = False) -> list[Change]:
    """Make the environment's catalog say what `file` says; the changes, one per item.
    Raises CatalogError (nothing applied) if any item cannot be applied."""
    from gateway.catalog import Catalog
    from persistence import open_store

    failed: CatalogError | None = None
    with tempfile.TemporaryDirectory(prefix="creditd-catalog-") as tmp:
        async with open_store(f"sqlite:///{Path(tmp) / 'scratch.db'}",
                              durability="async") as store:
            scratch = Catalog(store)
            await _scratch_copy(catalog, env, scratch)
            try:
                changes = await _Applier(file, scratch, env).run()
            except CatalogError as exc:
                # Raised outside the store's task group, which would wrap it in a group.
                failed = exc
    if failed is not None:
        raise failed
    if dry_run or all(c.action == "unchanged" for c in changes):
        return changes
    return await _Applier(file, catalog, env).run()


async def apply_path(database_url: str | None, env: str, path: str, *,
                     dry_run: bool = False) -> list[Change]:
    """Read, check and apply a catalog file to a database (what the CLI runs)."""
    from gateway.catalog import Catalog
    from persistence import open_store

    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise CatalogError(f"{path}: cannot read: {exc.strerror or exc}") from None
    file = load(text, path)
    failed: CatalogError | None = None
    async with open_store(database_url) as store:
        try:
            changes = await apply(Catalog(store), env, file, dry_run=dry_run)
        except CatalogError as exc:
            failed = exc
    if failed is not None:
        raise failed
    return changes
