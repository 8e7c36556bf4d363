"""Products, plans and add-ons (issue 9): the one way to read and write packages.

A plan or add-on ("package", `kind` "plan" | "addon") is a document whose row in `plans` /
`addons` is its *working copy*: the latest version, DRAFT, PUBLISHED or ARCHIVED. Every
published version is kept, immutable, in `package_versions` (subscriptions point at one).

    create_package      a new package, DRAFT v1 (or published at once with status PUBLISHED)
    update_package      cosmetic fields (name, description, metadata, billingId, hidden) on
                        any live package; structure (charges, parent, compatible add-ons,
                        trial, maxQuantity, dependencies) only on a DRAFT (409 otherwise)
    set_entitlements    add to / replace the entitlements of a DRAFT
    publish             DRAFT -> PUBLISHED, the doc copied into package_versions
    create_draft        PUBLISHED vN -> DRAFT vN+1 (returns the draft if there is one)
    remove_draft        DRAFT vN+1 -> the published vN again
    archive             the package can no longer be subscribed to

Documents have the shapes of docs/subscriptions.md (Packages and versions). Bodies are
camelCase dicts (what the REST routes decode and what the TOML catalog builds); they are
validated as a whole before anything is written, and every refusal names its field.
Money is exact: decimal strings in documents (`"9.99"`), Decimal on the way in, never a
float. Writers of one package are serialized (a lock per package in this process, which
owns the database).
"""

from __future__ import annotations

import copy
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any, Literal

import anyio
import msgspec
from msgspec import UNSET, UnsetType

from engine.billing.pricing import select_price_period
from gateway.catalog import Catalog, now_ms
from gateway.errors import ApiError, bad_input, field_of
from gateway.wire import amount_in, iso

__all__ = [
    "KINDS", "get_package", "require_package", "published", "require_published", "create_package",
    "update_package", "set_entitlements", "update_entitlement", "delete_entitlement",
    "publish", "create_draft", "remove_draft", "archive", "get_product", "create_product",
    "update_product", "archive_product", "unarchive_product", "duplicate_product",
    "package_json", "entitlement_json", "charge_rows", "product_json", "money",
]

KINDS = {"plan": "plans", "addon": "addons"}
_NAMES = {"plan": "plan", "addon": "add-on"}
_NOT_FOUND = {"plan": "PlanNotFound", "addon": "AddonNotFound"}

ResetPeriod = Literal["YEAR", "MONTH", "WEEK", "DAY", "HOUR"]
BillingPeriod = Literal["MONTHLY", "ANNUALLY"]
Widget = Literal["PAYWALL", "CUSTOMER_PORTAL", "CHECKOUT"]
Weekday = Literal["SubscriptionStart", "EverySunday", "EveryMonday", "EveryTuesday",
                  "EveryWednesday", "EveryThursday", "EveryFriday", "EverySaturday"]
_CONFIG_OF = {"MONTH": "monthlyResetPeriodConfiguration",
              "WEEK": "weeklyResetPeriodConfiguration",
              "YEAR": "yearlyResetPeriodConfiguration"}
PRICE_MAX = Decimal(10) ** 12
PRICE_DECIMALS = 10


# -- wire shapes (the official client's request types) -----------------------------------

class _Struct(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    pass


class MonthlyConfig(_Struct):
    according_to: Literal["SubscriptionStart", "StartOfTheMonth"]


class WeeklyConfig(_Struct):
    according_to: Weekday


class YearlyConfig(_Struct):
    according_to: Literal["SubscriptionStart"]


class EntitlementIn(_Struct):
    """A FEATURE or CREDIT entitlement, on create (id and type given) or update (type
    given, id from the path). Fields of the other type are refused by name."""
    type: Literal["FEATURE", "CREDIT"]
    id: str | UnsetType = UNSET
    behavior: Literal["Increment", "Override"] | UnsetType = UNSET
    description: str | None | UnsetType = UNSET
    display_name_override: str | None | UnsetType = UNSET
    hidden_from_widgets: list[Widget] | None | UnsetType = UNSET
    is_custom: bool | None | UnsetType = UNSET
    is_granted: bool | None | UnsetType = UNSET
    has_soft_limit: bool | None | UnsetType = UNSET
    order: Decimal | None | UnsetType = UNSET
    # FEATURE
    enum_values: list[str] | None | UnsetType = UNSET
    has_unlimited_usage: bool | None | UnsetType = UNSET
    usage_limit: int | None | UnsetType = UNSET
    reset_period: ResetPeriod | None | UnsetType = UNSET
    monthly_reset_period_configuration: MonthlyConfig | None | UnsetType = UNSET
    weekly_reset_period_configuration: WeeklyConfig | None | UnsetType = UNSET
    yearly_reset_period_configuration: YearlyConfig | None | UnsetType = UNSET
    # CREDIT
    amount: Decimal | None | UnsetType = UNSET
    cadence: Literal["MONTH", "YEAR"] | UnsetType = UNSET
    dependency_feature_id: str | None | UnsetType = UNSET


class Money(_Struct):
    amount: Decimal
    currency: str = "usd"


class Tier(_Struct):
    flat_price: Money | None = None
    unit_price: Money | None = None
    up_to: Decimal | None = None


class CreditRate(_Struct):
    amount: Decimal
    currency_id: str
    cost_formula: str | None = None


class PricePeriod(_Struct):
    billing_period: BillingPeriod
    billing_country_code: str | None = None
    block_size: Decimal | None = None
    credit_grant_cadence: Literal["BEGINNING_OF_BILLING_PERIOD", "MONTHLY"] | None = None
    credit_rate: CreditRate | None = None
    price: Money | None = None
    tiers: list[Tier] | None = None


class PricingModel(_Struct):
    billing_model: Literal["FLAT_FEE", "MINIMUM_SPEND", "PER_UNIT", "USAGE_BASED",
                           "CREDIT_BASED"]
    price_periods: list[PricePeriod]
    billing_cadence: Literal["RECURRING", "ONE_OFF"] = "RECURRING"
    feature_id: str | None = None
    max_unit_quantity: int | None = None
    min_unit_quantity: int | None = None
    reset_period: ResetPeriod | None = None
    monthly_reset_period_configuration: MonthlyConfig | None = None
    weekly_reset_period_configuration: WeeklyConfig | None = None
    yearly_reset_period_configuration: YearlyConfig | None = None
    tiers_mode: Literal["VOLUME", "GRADUATED"] | None = None
    top_up_custom_currency_id: str | None = None


class OverageEntitlement(_Struct):
    feature_id: str
    has_soft_limit: bool | None = None
    has_unlimited_usage: bool | None = None
    usage_limit: Decimal | None = None
    reset_period: ResetPeriod | None = None
    monthly_reset_period_configuration: MonthlyConfig | None = None
    weekly_reset_period_configuration: WeeklyConfig | None = None
    yearly_reset_period_configuration: YearlyConfig | None = None


class OverageCreditEntitlement(_Struct):
    amount: Decimal
    cadence: Literal["MONTH", "YEAR"]
    custom_currency_id: str


class OveragePricingModel(_Struct):
    price_periods: list[PricePeriod]
    feature_id: str | None = None
    currency_id: str | None = None
    entitlement: OverageEntitlement | None = None
    credit_entitlement: OverageCreditEntitlement | None = None


class MinimumSpend(_Struct):
    billing_period: BillingPeriod
    minimum: Money


class Charges(_Struct):
    pricing_type: Literal["FREE", "PAID", "CUSTOM"]
    billing_id: str | None = None
    minimum_spend: list[MinimumSpend] | None = None
    overage_billing_period: Literal["ON_SUBSCRIPTION_RENEWAL", "MONTHLY"] | None = None
    overage_pricing_models: list[OveragePricingModel] | None = None
    pricing_models: list[PricingModel] | None = None


class TrialBudget(_Struct):
    has_soft_limit: bool
    limit: Decimal


class TrialConfig(_Struct):
    duration: Decimal
    units: Literal["DAY", "MONTH"]
    budget: TrialBudget | None = None
    trial_end_behavior: Literal["CONVERT_TO_PAID", "CANCEL_SUBSCRIPTION"] | None = None


class PackageUpdate(_Struct):
    display_name: str | UnsetType = UNSET
    description: str | None | UnsetType = UNSET
    billing_id: str | None | UnsetType = UNSET
    metadata: dict[str, str] | None | UnsetType = UNSET
    hidden: bool | UnsetType = UNSET  # extension: left out of the paywall unless asked
    charges: Charges | None | UnsetType = UNSET
    status: Literal["DRAFT", "PUBLISHED", "ARCHIVED"] | UnsetType = UNSET
    # plans
    parent_plan_id: str | None | UnsetType = UNSET
    compatible_addon_ids: list[str] | None | UnsetType = UNSET
    default_trial_config: TrialConfig | None | UnsetType = UNSET
    # add-ons
    max_quantity: int | None | UnsetType = UNSET
    dependencies: list[str] | None | UnsetType = UNSET


class PackageCreate(PackageUpdate):
    id: str = ""
    product_id: str = ""
    pricing_type: Literal["FREE", "PAID", "CUSTOM"] | None = None


_PLAN_ONLY = ("parent_plan_id", "compatible_addon_ids", "default_trial_config")
_ADDON_ONLY = ("max_quantity", "dependencies")
_COSMETIC = ("display_name", "description", "billing_id", "metadata", "hidden")


class ProductSettings(_Struct):
    subscription_cancellation_time: Literal["END_OF_BILLING_PERIOD", "IMMEDIATE",
                                            "SPECIFIC_DATE"]
    subscription_end_setup: Literal["DOWNGRADE_TO_FREE", "CANCEL_SUBSCRIPTION"]
    subscription_start_setup: Literal["PLAN_SELECTION", "TRIAL_PERIOD", "FREE_PLAN"]
    downgrade_plan_id: str | None = None
    prorate_at_end_of_billing_period: bool | None = None
    subscription_start_plan_id: str | None = None


class UsageResetCutoffRule(_Struct):
    behavior: Literal["NEVER_RESET", "ALWAYS_RESET", "BILLING_PERIOD_CHANGE"]


class ProductUpdate(_Struct):
    display_name: str | UnsetType = UNSET
    description: str | None | UnsetType = UNSET
    metadata: dict[str, str] | None | UnsetType = UNSET
    multiple_subscriptions: bool | UnsetType = UNSET
    product_settings: ProductSettings | None | UnsetType = UNSET
    usage_reset_cutoff_rule: UsageResetCutoffRule | None | UnsetType = UNSET


class ProductCreate(ProductUpdate):
    id: str = ""


def convert(body: Any, kind: type[Any], prefix: str = "") -> Any:
    """A camelCase dict (decoded JSON, Decimal numbers) as the Struct `kind`; a refusal
    names the field."""
    if isinstance(body, msgspec.Struct):
        return body
    try:
        return msgspec.convert(body, kind)
    except msgspec.ValidationError as exc:
        message, field = field_of(exc)
        if prefix:
            field = f"{prefix}.{field}" if field else prefix
        raise bad_input(message, field) from None


def to_dict(struct: msgspec.Struct) -> dict[str, Any]:
    """A decoded body back to its camelCase dict (absent fields stay absent)."""
    return msgspec.to_builtins(struct, builtin_types=(Decimal,))


# -- per-catalog state: locks and the immutable versions cache ----------------------------

class _State:
    def __init__(self) -> None:
        self.locks: dict[tuple[str, str, str], list[Any]] = {}  # [lock, users]
        self.versions: dict[tuple[str, str, str, int], dict[str, Any]] = {}
        self.latest: dict[tuple[str, str, str], int] = {}


_STATES: weakref.WeakKeyDictionary[Any, _State] = weakref.WeakKeyDictionary()


def _state(catalog: Catalog) -> _State:
    state = _STATES.get(catalog)
    if state is None:
        state = _STATES[catalog] = _State()
    return state


@asynccontextmanager
async def _lock(catalog: Catalog, env: str, kind: str, ident: str) -> AsyncIterator[None]:
    """Serialize the writers of one package (or product); the entry goes when no one
    holds or waits for it, so ids that were only ever refused leave nothing behind."""
    locks = _state(catalog).locks
    key = (env, kind, ident)
    entry = locks.get(key)
    if entry is None:
        entry = locks[key] = [anyio.Lock(), 0]
    entry[1] += 1
    try:
        async with entry[0]:
            yield
    finally:
        entry[1] -= 1
        if entry[1] == 0:
            del locks[key]


_json = msgspec.json.Encoder(order="deterministic").encode
_unjson = msgspec.json.decode


# -- small validators ---------------------------------------------------------------------

def _check_id(ident: str, field: str = "id") -> None:
    if not ident or "/" in ident or len(ident) > 255 or ident != ident.strip():
        raise bad_input("must be 1-255 characters without '/' or surrounding spaces", field)


def _name(value: str, field: str) -> str:
    if not value.strip():
        raise bad_input("must not be empty", field)
    return value


def decimal_str(value: Decimal) -> str:
    """An exact decimal as a plain string: 9.990 -> "9.99", 1E+1 -> "10"."""
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "0") else text


def money(value: Any, field: str, *, positive: bool = False) -> str:
    """A price: a finite decimal, 0 <= value < 10^12 (> 0 with `positive`), at most 10
    decimal places; its decimal string."""
    if isinstance(value, bool) or not isinstance(value, (int, Decimal, str)):
        raise bad_input("must be a number", field)
    try:
        number = Decimal(value)
    except ArithmeticError:
        raise bad_input("must be a decimal number", field) from None
    if not number.is_finite():
        raise bad_input("must be a finite number", field)
    if number < 0:
        raise bad_input("must not be negative", field)
    if positive and number == 0:
        raise bad_input("must be positive", field)
    if number >= PRICE_MAX:
        raise bad_input("must be less than 10^12", field)
    if -number.normalize().as_tuple().exponent > PRICE_DECIMALS:  # type: ignore[operator]
        raise bad_input(f"must have at most {PRICE_DECIMALS} decimal places", field)
    return decimal_str(number)


def _credits(value: Any, field: str) -> str:
    """A credits amount (5 decimals, like grants) as its decimal string."""
    units = amount_in(value, field)
    return decimal_str(Decimal(units).scaleb(-5))


def _whole(value: Decimal | int, field: str, minimum: int = 1) -> int:
    number = Decimal(value)
    if not number.is_finite() or number != number.to_integral_value() or number < minimum:
        raise bad_input(f"must be a whole number of at least {minimum}", field)
    if number > 10**15:
        raise bad_input("is too large", field)
    return int(number)


def _currency(code: str, field: str) -> str:
    code = code.lower()
    if not (len(code) == 3 and code.isascii() and code.isalpha()):
        raise bad_input("must be a three-letter currency code", field)
    return code


def _reset_config(period: str | None, given: dict[str, Any], field: str) -> dict | None:
    """The one resetPeriodConfiguration of `given` (monthly/weekly/yearly…Configuration),
    which must match `period`; the default (SubscriptionStart) where the period has one."""
    configs = {name: given[name] for name in _CONFIG_OF.values() if given.get(name)}
    wanted = _CONFIG_OF.get(period or "")
    for name in configs:
        if name != wanted:
            why = f"a {period} reset period" if period else "no reset period"
            raise bad_input(f"does not go with {why}", f"{field}{name}")
    if wanted is None:
        return None
    config = configs.get(wanted)
    return {"accordingTo": config["accordingTo"] if config else "SubscriptionStart"}


async def _feature(catalog: Catalog, env: str, ident: Any, field: str) -> dict[str, Any]:
    doc = await catalog.get("features", env, ident) if isinstance(ident, str) else None
    if doc is None:
        raise bad_input(f"feature {ident!r} was not found", field)
    if doc.get("_archivedAt") is not None:
        raise bad_input(f"feature {ident!r} is archived", field)
    return doc


async def _custom_currency(catalog: Catalog, env: str, ident: Any,
                           field: str) -> dict[str, Any]:
    doc = await catalog.get("currencies", env, ident) if isinstance(ident, str) else None
    if doc is None:
        raise bad_input(f"custom currency {ident!r} was not found", field)
    if doc.get("_archivedAt") is not None:
        raise bad_input(f"custom currency {ident!r} is archived", field)
    return doc


# -- reads ---------------------------------------------------------------------------------

def _table(kind: str) -> str:
    table = KINDS.get(kind)
    if table is None:
        raise ValueError(f"kind must be 'plan' or 'addon', not {kind!r}")
    return table


async def get_package(catalog: Catalog, env: str, kind: str, ident: str) -> dict | None:
    """The working copy (latest version: DRAFT, PUBLISHED or ARCHIVED), or None. Shared
    with the cache: do not mutate it."""
    return await catalog.get(_table(kind), env, ident)


async def published(catalog: Catalog, env: str, kind: str, ident: str,
                    version: int | None = None) -> dict | None:
    """Published version `version` of the package, or its latest published one; None if
    there is none. Versions are immutable (an archived package's versions stay readable:
    check `get_package(...)["status"]` before subscribing, or use `require_published`)."""
    _table(kind)
    state = _state(catalog)
    if version is None:
        key = (env, kind, ident)
        version = state.latest.get(key)
        if version is None:
            rows = await catalog.store.fetch(
                "SELECT MAX(version) FROM package_versions WHERE environment = ? AND kind = ? "
                "AND id = ?", env, kind, ident)
            if not rows or rows[0][0] is None:
                return None  # not remembered: it may be published later
            version = state.latest[key] = int(rows[0][0])
    vkey = (env, kind, ident, int(version))
    doc = state.versions.get(vkey)
    if doc is None:
        rows = await catalog.store.fetch(
            "SELECT doc FROM package_versions WHERE environment = ? AND kind = ? AND id = ? "
            "AND version = ?", env, kind, ident, int(version))
        if not rows:
            return None
        doc = state.versions[vkey] = _unjson(rows[0][0])
    return doc


async def require_published(catalog: Catalog, env: str, kind: str, ident: str, *,
                            field: str = "planId", version: int | None = None) -> dict:
    """What a new subscription may use: the latest (or given) published version of a live
    package. 404 for an unknown package, 400 for an archived or never published one."""
    working = await get_package(catalog, env, kind, ident)
    if working is None:
        raise ApiError(404, _NOT_FOUND[kind], f"{_NAMES[kind]} {ident!r} was not found", field)
    if working["status"] == "ARCHIVED":
        raise bad_input(f"{_NAMES[kind]} {ident!r} is archived", field)
    doc = await published(catalog, env, kind, ident, version)
    if doc is None:
        raise bad_input(f"{_NAMES[kind]} {ident!r} has no published version"
                        + ("" if version is None else f" {version}"), field)
    return doc


async def _working(catalog: Catalog, env: str, kind: str, ident: str,
                   field: str = "id") -> dict[str, Any]:
    doc = await get_package(catalog, env, kind, ident)
    if doc is None:
        raise ApiError(404, _NOT_FOUND[kind], f"{_NAMES[kind]} {ident!r} was not found", field)
    return copy.deepcopy(doc)


async def require_package(catalog: Catalog, env: str, kind: str, ident: str,
                          field: str = "id") -> dict[str, Any]:
    """The working copy (a copy the caller may change), 404 if there is none."""
    return await _working(catalog, env, kind, ident, field)


def _require_draft(doc: dict[str, Any], kind: str, what: str) -> None:
    if doc["status"] == "ARCHIVED":
        raise ApiError(409, "PackageArchived",
                       f"{_NAMES[kind]} {doc['id']!r} is archived; {what} cannot change")
    if doc["status"] != "DRAFT":
        raise ApiError(409, "PackageNotDraft",
                       f"{_NAMES[kind]} {doc['id']!r} is published; create a draft first "
                       f"(POST …/{doc['id']}/draft) to change its {what}")


def _touch(doc: dict[str, Any], *, created: bool = False) -> dict[str, Any]:
    now = now_ms()
    if created:
        doc["_createdAt"] = now
    doc["_updatedAt"] = now
    return doc


async def _store_version(catalog: Catalog, env: str, kind: str, doc: dict[str, Any]) -> None:
    version = int(doc["versionNumber"])
    await catalog.store.execute(
        "INSERT INTO package_versions (environment, kind, id, version, doc, published_at) "
        "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (environment, kind, id, version) DO UPDATE "
        "SET doc = excluded.doc", env, kind, doc["id"], version, _json(doc).decode(),
        now_ms())
    state = _state(catalog)
    state.versions[(env, kind, doc["id"], version)] = doc
    key = (env, kind, doc["id"])
    if (state.latest.get(key) or 0) < version:
        state.latest[key] = version


# -- entitlements -------------------------------------------------------------------------

_FEATURE_ONLY = ("enumValues", "hasUnlimitedUsage", "usageLimit", "resetPeriod",
                 *_CONFIG_OF.values())
_CREDIT_ONLY = ("amount", "cadence", "dependencyFeatureId")
_COMMON_DEFAULTS: dict[str, Any] = {
    "behavior": "Increment", "description": None, "displayNameOverride": None,
    "hiddenFromWidgets": [], "isCustom": False, "isGranted": True, "hasSoftLimit": False,
    "order": None,
}


async def _entitlement(catalog: Catalog, env: str, given: dict[str, Any],
                       existing: dict[str, Any] | None, field: str) -> dict[str, Any]:
    """One entitlement in its stored form: `given` (camelCase input) over `existing` (on
    update), validated against the feature or currency it names."""
    prefix = f"{field}." if field else ""
    kind = given["type"]
    if existing is not None and existing["type"] != kind:
        raise bad_input(f"the entitlement is a {existing['type']} entitlement", prefix + "type")
    for name in _CREDIT_ONLY if kind == "FEATURE" else _FEATURE_ONLY:
        if given.get(name) is not None:
            raise bad_input(f"not a field of a {kind} entitlement", prefix + name)
    out: dict[str, Any] = dict(_COMMON_DEFAULTS) if existing is None else dict(existing)
    out["type"] = kind
    if existing is None:
        out["id"] = given["id"]
    for name in _COMMON_DEFAULTS:
        if name in given:
            value = given[name]
            out[name] = _COMMON_DEFAULTS[name] if value is None else value
    if out["order"] is not None:
        out["order"] = decimal_str(Decimal(out["order"]))
    ident = out["id"]
    if kind == "CREDIT":
        await _custom_currency(catalog, env, ident, prefix + "id")
        if "amount" in given or existing is None:
            if given.get("amount") is None:
                raise bad_input("is required: the credits granted each cadence",
                                prefix + "amount")
            out["amount"] = _credits(given["amount"], prefix + "amount")
        if "cadence" in given:
            out["cadence"] = given["cadence"]
        if out.get("cadence") is None:
            raise bad_input("is required: MONTH or YEAR", prefix + "cadence")
        if "dependencyFeatureId" in given:
            out["dependencyFeatureId"] = given["dependencyFeatureId"]
        out.setdefault("dependencyFeatureId", None)
        if out["dependencyFeatureId"] is not None:
            await _feature(catalog, env, out["dependencyFeatureId"],
                           prefix + "dependencyFeatureId")
        return out
    feature = await _feature(catalog, env, ident, prefix + "id")
    for name in ("enumValues", "usageLimit", "resetPeriod"):
        if name in given:
            out[name] = given[name]
        out.setdefault(name, None)
    if "hasUnlimitedUsage" in given:
        out["hasUnlimitedUsage"] = bool(given["hasUnlimitedUsage"])
    out.setdefault("hasUnlimitedUsage", False)
    if "resetPeriod" in given or any(n in given for n in _CONFIG_OF.values()):
        out["resetPeriodConfiguration"] = _reset_config(out["resetPeriod"], given, prefix)
    out.setdefault("resetPeriodConfiguration", None)
    ftype = feature["featureType"]
    if ftype != "NUMBER":
        for name in ("usageLimit", "resetPeriod"):
            if out[name] is not None:
                raise bad_input(f"feature {ident!r} is {ftype}, not NUMBER", prefix + name)
        if out["hasUnlimitedUsage"]:
            raise bad_input(f"feature {ident!r} is {ftype}, not NUMBER",
                            prefix + "hasUnlimitedUsage")
    if ftype != "ENUM" and out["enumValues"] is not None:
        raise bad_input(f"feature {ident!r} is {ftype}, not ENUM", prefix + "enumValues")
    if ftype == "ENUM":
        allowed = {v["value"] for v in feature.get("enumConfiguration") or ()}
        values = out["enumValues"]
        if not values:
            raise bad_input("an ENUM entitlement lists the values it grants",
                            prefix + "enumValues")
        unknown = [v for v in values if v not in allowed]
        if unknown:
            raise bad_input(f"{unknown[0]!r} is not a value of feature {ident!r}",
                            prefix + "enumValues")
        if len(set(values)) != len(values):
            raise bad_input("lists a value twice", prefix + "enumValues")
    if ftype == "NUMBER":
        if out["hasUnlimitedUsage"]:
            if out["usageLimit"] is not None:
                if "usageLimit" in given:
                    raise bad_input("an unlimited entitlement has no usageLimit",
                                    prefix + "usageLimit")
                out["usageLimit"] = None  # made unlimited on update: the limit goes
        elif out["usageLimit"] is None:
            raise bad_input("is required unless hasUnlimitedUsage is true",
                            prefix + "usageLimit")
        elif out["usageLimit"] < 0:
            raise bad_input("must not be negative", prefix + "usageLimit")
        if out["resetPeriod"] is not None and feature.get("meterType") == "FLUCTUATING":
            raise bad_input(f"feature {ident!r} is FLUCTUATING (a level, not a count): "
                            "it does not reset", prefix + "resetPeriod")
    return out


def _entitlement_input(body: Any, field: str) -> dict[str, Any]:
    parsed = convert(body, EntitlementIn, field)
    return to_dict(parsed)


def _stamp_entitlement(ent: dict[str, Any], existing: dict[str, Any] | None) -> None:
    now = now_ms()
    ent["_createdAt"] = existing["_createdAt"] if existing else now
    ent["_updatedAt"] = now


async def set_entitlements(catalog: Catalog, env: str, kind: str, ident: str,
                           entitlements: list[dict], replace: bool) -> list[dict]:
    """Add `entitlements` to a DRAFT package (409 on one it has already), or with `replace`
    make them its whole list. Returns the stored entitlements written."""
    async with _lock(catalog, env, kind, ident):
        doc = await _working(catalog, env, kind, ident)
        _require_draft(doc, kind, "entitlements")
        if not isinstance(entitlements, list):
            raise bad_input("must be a list", "entitlements")
        current = [] if replace else list(doc["entitlements"])
        seen = {(e["type"], e["id"]) for e in current}
        written = []
        for i, body in enumerate(entitlements):
            field = f"entitlements[{i}]"
            given = _entitlement_input(body, field)
            if "id" not in given:
                raise bad_input("is required", f"{field}.id")
            key = (given["type"], given["id"])
            if key in seen:
                if any((e["type"], e["id"]) == key for e in written):
                    raise bad_input("is listed twice", f"{field}.id")
                raise ApiError(409, "DuplicatedEntityNotAllowed",
                               f"{_NAMES[kind]} {ident!r} has an entitlement to "
                               f"{given['id']!r} already; update it instead", f"{field}.id")
            seen.add(key)
            ent = await _entitlement(catalog, env, given, None, field)
            _stamp_entitlement(ent, None)
            written.append(ent)
        doc["entitlements"] = current + written
        await catalog.replace(_table(kind), env, _touch(doc))
        return written


def _find(doc: dict[str, Any], ent_id: str, kind: str) -> int:
    for i, e in enumerate(doc["entitlements"]):
        if e["id"] == ent_id:
            return i
    raise ApiError(404, "EntitlementNotFound",
                   f"{_NAMES[kind]} {doc['id']!r} has no entitlement {ent_id!r}", "id")


async def update_entitlement(catalog: Catalog, env: str, kind: str, ident: str,
                             ent_id: str, changes: dict) -> dict:
    """Change fields of one entitlement of a DRAFT package (`changes` names its `type`)."""
    async with _lock(catalog, env, kind, ident):
        doc = await _working(catalog, env, kind, ident)
        index = _find(doc, ent_id, kind)
        _require_draft(doc, kind, "entitlements")
        given = _entitlement_input(changes, "")
        given.pop("id", None)
        existing = doc["entitlements"][index]
        ent = await _entitlement(catalog, env, given, existing, "")
        _stamp_entitlement(ent, existing)
        doc["entitlements"][index] = ent
        await catalog.replace(_table(kind), env, _touch(doc))
        return ent


async def delete_entitlement(catalog: Catalog, env: str, kind: str, ident: str,
                             ent_id: str) -> dict:
    async with _lock(catalog, env, kind, ident):
        doc = await _working(catalog, env, kind, ident)
        index = _find(doc, ent_id, kind)
        _require_draft(doc, kind, "entitlements")
        gone = doc["entitlements"].pop(index)
        await catalog.replace(_table(kind), env, _touch(doc))
        return gone


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
        if feature["featureType"] != "NUMBER":
            raise bad_input(f"feature {m.feature_id!r} is {feature['featureType']}; priced "
                            "features are NUMBER features", f"{field}.featureId")
        if model == "USAGE_BASED" and feature.get("meterType") in (None, "None"):
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


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


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
            "_setAt": now_ms()}


# -- packages -----------------------------------------------------------------------------

# A trial of at most ten years (a longer one is a free plan, not a trial).
TRIAL_MAX = {"DAY": 3650, "MONTH": 120}


def _trial(t: TrialConfig) -> dict[str, Any]:
    duration = _whole(t.duration, "defaultTrialConfig.duration")
    if duration > TRIAL_MAX[t.units]:
        raise bad_input(f"must be at most {TRIAL_MAX[t.units]} for units {t.units}",
                        "defaultTrialConfig.duration")
    return {
        "duration": duration,
        "units": t.units,
        "trialEndBehavior": t.trial_end_behavior or "CONVERT_TO_PAID",
        "budget": None if t.budget is None else {
            "hasSoftLimit": t.budget.has_soft_limit,
            "limit": money(t.budget.limit, "defaultTrialConfig.budget.limit")},
    }


async def _sibling(catalog: Catalog, env: str, kind: str, ident: str, product_id: str,
                   field: str) -> dict[str, Any]:
    other = await get_package(catalog, env, kind, ident)
    if other is None:
        raise bad_input(f"{_NAMES[kind]} {ident!r} was not found", field)
    if other["productId"] != product_id:
        raise bad_input(f"{_NAMES[kind]} {ident!r} belongs to product "
                        f"{other['productId']!r}, not {product_id!r}", field)
    if other["status"] == "ARCHIVED":
        raise bad_input(f"{_NAMES[kind]} {ident!r} is archived", field)
    return other


async def _apply(catalog: Catalog, env: str, kind: str, doc: dict[str, Any],
                 body: PackageUpdate) -> None:
    """Copy what `body` sets onto `doc`, validating it (the status change is the caller's)."""
    for name in _PLAN_ONLY if kind == "addon" else _ADDON_ONLY:
        if getattr(body, name) is not UNSET:
            raise bad_input(f"not a field of a{'n add-on' if kind == 'addon' else ' plan'}",
                            _camel(name))
    structural = [n for n in ("charges", *_PLAN_ONLY, *_ADDON_ONLY)
                  if getattr(body, n) is not UNSET]
    if doc["status"] == "ARCHIVED" and (structural or any(
            getattr(body, n) is not UNSET for n in _COSMETIC)):
        raise ApiError(409, "PackageArchived",
                       f"{_NAMES[kind]} {doc['id']!r} is archived and cannot change")
    if structural and doc["status"] != "DRAFT":
        _require_draft(doc, kind, _camel(structural[0]))
    if body.display_name is not UNSET:
        doc["displayName"] = _name(body.display_name, "displayName")
    if body.description is not UNSET:
        doc["description"] = body.description
    if body.billing_id is not UNSET:
        doc["billingId"] = body.billing_id
    if body.metadata is not UNSET:
        doc["metadata"] = body.metadata or {}
    if body.hidden is not UNSET:
        doc["hidden"] = body.hidden
    product = doc["productId"]
    if kind == "plan":
        if body.parent_plan_id is not UNSET:
            parent = body.parent_plan_id
            if parent is not None:
                if parent == doc["id"]:
                    raise bad_input("a plan cannot be its own parent", "parentPlanId")
                seen = {doc["id"]}
                step: str | None = parent
                while step is not None:
                    if step in seen:
                        raise bad_input("the parent chain would loop back to this plan",
                                        "parentPlanId")
                    seen.add(step)
                    up = await _sibling(catalog, env, "plan", step, product, "parentPlanId")
                    step = up.get("parentPlanId")
            doc["parentPlanId"] = parent
        if body.compatible_addon_ids is not UNSET:
            ids = body.compatible_addon_ids or []
            if len(set(ids)) != len(ids):
                raise bad_input("lists an add-on twice", "compatibleAddonIds")
            for i, a in enumerate(ids):
                await _sibling(catalog, env, "addon", a, product, f"compatibleAddonIds[{i}]")
            doc["compatibleAddonIds"] = list(ids)
        if body.default_trial_config is not UNSET:
            t = body.default_trial_config
            doc["defaultTrialConfig"] = None if t is None else _trial(t)
    else:
        if body.max_quantity is not UNSET:
            q = body.max_quantity
            if q is not None and q < 1:
                raise bad_input("must be at least 1 (null: no maximum)", "maxQuantity")
            doc["maxQuantity"] = q
        if body.dependencies is not UNSET:
            ids = body.dependencies or []
            if len(set(ids)) != len(ids):
                raise bad_input("lists an add-on twice", "dependencies")
            for i, a in enumerate(ids):
                if a == doc["id"]:
                    raise bad_input("an add-on cannot depend on itself", f"dependencies[{i}]")
                await _sibling(catalog, env, "addon", a, product, f"dependencies[{i}]")
            doc["dependencies"] = list(ids)
    if body.charges is not UNSET:
        if body.charges is None:
            doc["charges"] = None
        else:
            doc["charges"] = await _charges(catalog, env, body.charges)
            doc["pricingType"] = doc["charges"]["pricingType"]


async def create_package(catalog: Catalog, env: str, kind: str, body: dict) -> dict:
    """A new plan or add-on: DRAFT version 1 (status PUBLISHED publishes it at once).
    409 if the id is taken; 400 for an unknown or archived product."""
    table = _table(kind)
    b = convert(body, PackageCreate)
    _check_id(b.id)
    if b.display_name is UNSET:
        raise bad_input("is required", "displayName")
    if not b.product_id:
        raise bad_input("is required", "productId")
    product = await get_product(catalog, env, b.product_id)
    if product is None:
        raise bad_input(f"product {b.product_id!r} was not found", "productId")
    if product.get("_archivedAt") is not None:
        raise bad_input(f"product {b.product_id!r} is archived", "productId")
    status = "DRAFT" if b.status is UNSET else b.status
    if status == "ARCHIVED":
        raise bad_input("a new package is DRAFT or PUBLISHED", "status")
    doc: dict[str, Any] = {
        "id": b.id, "productId": b.product_id, "displayName": "", "description": None,
        "billingId": None, "metadata": {}, "pricingType": b.pricing_type, "status": "DRAFT",
        "versionNumber": 1, "hidden": False, "entitlements": [], "charges": None,
    }
    if kind == "plan":
        doc.update({"parentPlanId": None, "compatibleAddonIds": [],
                    "defaultTrialConfig": None})
    else:
        doc.update({"maxQuantity": None, "dependencies": []})
    await _apply(catalog, env, kind, doc, b)
    if await get_package(catalog, env, kind, b.id) is not None:
        raise ApiError(409, "DuplicatedEntityNotAllowed",
                       f"{_NAMES[kind]} {b.id!r} exists already", "id")
    async with _lock(catalog, env, kind, b.id):
        _touch(doc, created=True)
        if not await catalog.insert(table, env, doc):
            raise ApiError(409, "DuplicatedEntityNotAllowed",
                           f"{_NAMES[kind]} {b.id!r} exists already", "id")
    if status == "PUBLISHED":
        doc = await publish(catalog, env, kind, b.id)
    return doc


async def update_package(catalog: Catalog, env: str, kind: str, ident: str,
                         changes: dict) -> dict:
    """Apply `changes` (the PATCH body: cosmetic fields on any live package, structure
    and `charges` on a DRAFT only; `status` PUBLISHED publishes, ARCHIVED archives, DRAFT
    creates a draft). Cosmetic changes to a PUBLISHED package reach its published version
    too (names are not prices)."""
    b = convert(changes, PackageUpdate)
    if b.status is UNSET or b.status == "DRAFT":
        async with _lock(catalog, env, kind, ident):
            doc = await _working(catalog, env, kind, ident)
            if b.status == "DRAFT" and doc["status"] == "ARCHIVED":
                raise ApiError(409, "PackageArchived", f"{_NAMES[kind]} {ident!r} is archived")
            if b.status == "DRAFT" and doc["status"] == "PUBLISHED":
                doc = _draft_of(doc)
            await _apply(catalog, env, kind, doc, b)
            await catalog.replace(_table(kind), env, _touch(doc))
            if doc["status"] == "PUBLISHED":
                await _store_version(catalog, env, kind, doc)
            return doc
    async with _lock(catalog, env, kind, ident):
        doc = await _working(catalog, env, kind, ident)
        await _apply(catalog, env, kind, doc, b)
        await catalog.replace(_table(kind), env, _touch(doc))
        if doc["status"] == "PUBLISHED":
            await _store_version(catalog, env, kind, doc)
    if b.status == "PUBLISHED" and doc["status"] != "PUBLISHED":
        return await publish(catalog, env, kind, ident)
    if b.status == "ARCHIVED":
        return await archive(catalog, env, kind, ident)
    return doc


def _check_publishable(doc: dict[str, Any], kind: str) -> None:
    if doc.get("pricingType") == "PAID" and not (doc.get("charges") or {}).get(
            "pricingModels"):
        raise bad_input("a PAID package is published with its prices: set charges first",
                        "charges")


async def publish(catalog: Catalog, env: str, kind: str, ident: str, *,
                  migration_type: str = "NEW_CUSTOMERS") -> dict:
    """DRAFT vN -> PUBLISHED vN, kept in package_versions. 409 if there is no draft.
    `migration_type` ALL_CUSTOMERS is recorded on the version (`_migrationType`) for the
    subscriptions side to move existing subscribers."""
    async with _lock(catalog, env, kind, ident):
        doc = await _working(catalog, env, kind, ident)
        if doc["status"] != "DRAFT":
            raise ApiError(409, "PackageNotDraft",
                           f"{_NAMES[kind]} {ident!r} is {doc['status']}: there is no draft "
                           "to publish")
        _check_publishable(doc, kind)
        if kind == "plan" and doc.get("parentPlanId"):
            if await published(catalog, env, "plan", doc["parentPlanId"]) is None:
                raise bad_input(f"parent plan {doc['parentPlanId']!r} is not published",
                                "parentPlanId")
        doc["status"] = "PUBLISHED"
        doc["_migrationType"] = migration_type
        _touch(doc)
        doc["_publishedAt"] = doc["_updatedAt"]
        await _store_version(catalog, env, kind, doc)
        await catalog.replace(_table(kind), env, doc)
        return doc


def _draft_of(doc: dict[str, Any]) -> dict[str, Any]:
    draft = copy.deepcopy(doc)
    draft["status"] = "DRAFT"
    draft["versionNumber"] = int(doc["versionNumber"]) + 1
    draft.pop("_migrationType", None)
    draft.pop("_publishedAt", None)
    return draft


async def create_draft(catalog: Catalog, env: str, kind: str, ident: str) -> dict:
    """PUBLISHED vN -> DRAFT vN+1 as the working copy (the published vN stays in force).
    A package that is a draft already is returned as it is; 409 on an archived one."""
    async with _lock(catalog, env, kind, ident):
        doc = await _working(catalog, env, kind, ident)
        if doc["status"] == "DRAFT":
            return doc
        if doc["status"] == "ARCHIVED":
            raise ApiError(409, "PackageArchived", f"{_NAMES[kind]} {ident!r} is archived")
        draft = _touch(_draft_of(doc))
        await catalog.replace(_table(kind), env, draft)
        return draft


async def remove_draft(catalog: Catalog, env: str, kind: str, ident: str) -> dict:
    """Drop the draft: the latest published version is the working copy again. 409 if
    there is no draft, or the package was never published (archive it instead)."""
    async with _lock(catalog, env, kind, ident):
        doc = await _working(catalog, env, kind, ident)
        if doc["status"] != "DRAFT":
            raise ApiError(409, "PackageNotDraft",
                           f"{_NAMES[kind]} {ident!r} is {doc['status']}: no draft to remove")
        latest = await published(catalog, env, kind, ident)
        if latest is None:
            raise ApiError(409, "PackageNeverPublished",
                           f"{_NAMES[kind]} {ident!r} was never published: its draft is all "
                           "there is (archive it instead)")
        restored = copy.deepcopy(latest)
        restored["_createdAt"] = doc["_createdAt"]
        await catalog.replace(_table(kind), env, _touch(restored))
        return restored


async def archive(catalog: Catalog, env: str, kind: str, ident: str) -> dict:
    """No new subscriptions to the package; its published versions stay readable for the
    subscriptions that have them. Archiving again is a no-op."""
    async with _lock(catalog, env, kind, ident):
        doc = await _working(catalog, env, kind, ident)
        if doc["status"] == "ARCHIVED":
            return doc
        doc["status"] = "ARCHIVED"
        _touch(doc)
        doc["_archivedAt"] = doc["_updatedAt"]
        await catalog.replace(_table(kind), env, doc)
        return doc


# -- products -----------------------------------------------------------------------------

async def get_product(catalog: Catalog, env: str, ident: str) -> dict | None:
    return await catalog.get("products", env, ident)


async def _product(catalog: Catalog, env: str, ident: str) -> dict[str, Any]:
    doc = await get_product(catalog, env, ident)
    if doc is None:
        raise ApiError(404, "ProductNotFound", f"product {ident!r} was not found", "id")
    return copy.deepcopy(doc)


async def _apply_product(catalog: Catalog, env: str, doc: dict[str, Any],
                         b: ProductUpdate) -> None:
    if b.display_name is not UNSET:
        doc["displayName"] = _name(b.display_name, "displayName")
    if b.description is not UNSET:
        doc["description"] = b.description
    if b.metadata is not UNSET:
        doc["metadata"] = b.metadata or {}
    if b.multiple_subscriptions is not UNSET:
        doc["multipleSubscriptions"] = b.multiple_subscriptions
    if b.usage_reset_cutoff_rule is not UNSET:
        rule = b.usage_reset_cutoff_rule
        doc["usageResetCutoffRule"] = None if rule is None else to_dict(rule)
    if b.product_settings is not UNSET:
        s = b.product_settings
        if s is None:
            doc["productSettings"] = None
        else:
            for name in ("downgrade_plan_id", "subscription_start_plan_id"):
                plan_id = getattr(s, name)
                if plan_id is not None:
                    await _sibling(catalog, env, "plan", plan_id, doc["id"],
                                   f"productSettings.{_camel(name)}")
            doc["productSettings"] = {
                "subscriptionCancellationTime": s.subscription_cancellation_time,
                "subscriptionEndSetup": s.subscription_end_setup,
                "subscriptionStartSetup": s.subscription_start_setup,
                "downgradePlanId": s.downgrade_plan_id,
                "prorateAtEndOfBillingPeriod": s.prorate_at_end_of_billing_period,
                "subscriptionStartPlanId": s.subscription_start_plan_id,
            }


async def create_product(catalog: Catalog, env: str, body: dict) -> dict:
    b = convert(body, ProductCreate)
    _check_id(b.id)
    if b.display_name is UNSET:
        raise bad_input("is required", "displayName")
    doc: dict[str, Any] = {"id": b.id, "displayName": "", "description": None, "metadata": {},
                           "multipleSubscriptions": False, "productSettings": None,
                           "usageResetCutoffRule": None}
    await _apply_product(catalog, env, doc, b)
    if not await catalog.insert("products", env, _touch(doc, created=True)):
        raise ApiError(409, "DuplicatedEntityNotAllowed", f"product {b.id!r} exists already",
                       "id")
    return doc


async def update_product(catalog: Catalog, env: str, ident: str, changes: dict) -> dict:
    b = convert(changes, ProductUpdate)
    async with _lock(catalog, env, "product", ident):
        doc = await _product(catalog, env, ident)
        await _apply_product(catalog, env, doc, b)
        await catalog.replace("products", env, _touch(doc))
        return doc


async def archive_product(catalog: Catalog, env: str, ident: str,
                          archived: bool = True) -> dict:
    """Archived products take no new plans, add-ons or subscriptions (their packages'
    subscriptions go on). `archived=False` restores it."""
    async with _lock(catalog, env, "product", ident):
        doc = await _product(catalog, env, ident)
        if (doc.get("_archivedAt") is not None) != archived:
            _touch(doc)
            doc["_archivedAt"] = doc["_updatedAt"] if archived else None
            await catalog.replace("products", env, doc)
        return doc


async def unarchive_product(catalog: Catalog, env: str, ident: str) -> dict:
    return await archive_product(catalog, env, ident, archived=False)


async def _all_packages(catalog: Catalog, env: str, kind: str,
                        product_id: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    after = None
    while True:
        page = await catalog.page(_table(kind), env, 100, after, None,
                                  equal={"product_id": product_id})
        out.extend(page.items)
        if page.next is None:
            return out
        after = page.next


async def duplicate_product(catalog: Catalog, env: str, ident: str, target_id: str, *,
                            display_name: str | None = None,
                            description: str | None | UnsetType = UNSET) -> dict:
    """A copy of product `ident` as `target_id`, with a DRAFT copy (version 1) of each of
    its live plans and add-ons, their working copies' entitlements and charges included.
    The copies' ids are `<targetId>-<original id>`; their references (parent plan,
    compatible add-ons, dependencies) point at the copies."""
    _check_id(target_id, "targetId")
    source = await _product(catalog, env, ident)
    if await get_product(catalog, env, target_id) is not None:
        raise ApiError(409, "DuplicatedEntityNotAllowed",
                       f"product {target_id!r} exists already", "targetId")
    packages = {kind: [d for d in await _all_packages(catalog, env, kind, ident)
                       if d["status"] != "ARCHIVED"] for kind in KINDS}
    rename: dict[str, dict[str, str]] = {k: {d["id"]: f"{target_id}-{d['id']}"
                                             for d in docs} for k, docs in packages.items()}
    for kind, names in rename.items():
        for new in names.values():
            _check_id(new, "targetId")
            if await get_package(catalog, env, kind, new) is not None:
                raise ApiError(409, "DuplicatedEntityNotAllowed",
                               f"{_NAMES[kind]} {new!r} (the copy) exists already",
                               "targetId")
    product = copy.deepcopy(source)
    product.update({"id": target_id, "_archivedAt": None})
    if display_name is not None:
        product["displayName"] = _name(display_name, "displayName")
    if description is not UNSET:
        product["description"] = description
    settings = product.get("productSettings")
    if settings:
        for name in ("downgradePlanId", "subscriptionStartPlanId"):
            if settings.get(name):
                settings[name] = rename["plan"].get(settings[name])
    if not await catalog.insert("products", env, _touch(product, created=True)):
        raise ApiError(409, "DuplicatedEntityNotAllowed",
                       f"product {target_id!r} exists already", "targetId")
    for kind in ("addon", "plan"):
        for d in packages[kind]:
            new = copy.deepcopy(d)
            for name in ("_archivedAt", "_migrationType", "_publishedAt"):
                new.pop(name, None)
            new.update({"id": rename[kind][d["id"]], "productId": target_id,
                        "status": "DRAFT", "versionNumber": 1})
            if kind == "plan":
                if new.get("parentPlanId"):
                    new["parentPlanId"] = rename["plan"].get(new["parentPlanId"])
                new["compatibleAddonIds"] = [rename["addon"][a] for a in
                                             new.get("compatibleAddonIds") or ()
                                             if a in rename["addon"]]
            else:
                new["dependencies"] = [rename["addon"][a] for a in new.get("dependencies") or ()
                                       if a in rename["addon"]]
            await catalog.insert(_table(kind), env, _touch(new, created=True))
    return product


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

