"""The catalog file's schema: the TOML tables as msgspec structs (keys are snake_case),
the `CatalogFile` they are loaded into, and `CatalogError` (which names the key and line)."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

import msgspec

from engine.core.meters import Meter

from .keypath import locate


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
