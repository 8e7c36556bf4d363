"""The catalog's documents as stored: typed, frozen msgspec Structs.

Customers' profiles, currencies, features and coupons are kept as JSON documents
(persistence/documents.py decodes them into these types once and caches the result). A
field's stored name is the JSON key every earlier version wrote — the wire name for what
the API shows, `_`-prefixed for the times only creditd reads — so stored rows decode as
they are, with no migration, and are written back in the same shape.

Customers, currencies, features and coupons are frozen: the cache hands the same object
to every reader, so a change is a new document (`msgspec.structs.replace`) that the store
then writes. Products, plans and add-ons are edited as a private deep copy under their
lock (packages/store.py), as subscriptions are.

    Stored    what every document has: id, created, updated, archived (epoch ms)
    Customer  a customer's profile: the optional fields the client sent
    Currency  a custom currency (credit type), its unit names and top-up price
    Feature   a feature: type, meter, unit transformation, credit rate
    Coupon    a percentage or fixed amounts off, and for how long
    Product   a product and its subscription settings
    Plan      a plan's version (working copy or published), its entitlements and prices
    Addon     an add-on's version, likewise
    PackageEntitlement  what a plan or add-on grants of one feature or currency
    Promotion a feature granted to one customer for a while (its own table)

Subscriptions have their own typed document (subscriptions/document.py).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, TypeVar

import msgspec
from msgspec import UNSET, UnsetType, field

from engine.core.meters import Meter

__all__ = ["DOCUMENT_TYPES", "Addon", "AmountOff", "Coupon", "CreditRate", "Currency",
           "CurrencyUnits", "Customer", "Edited", "EnumValue", "Feature", "Grant", "Package",
           "PackageEntitlement", "Plan", "Product", "Promotion", "Stored", "TopUp",
           "UnitTransformation", "unset_none"]


T = TypeVar("T")


def unset_none(value: T | UnsetType) -> T | None:
    """An optional field's value, None when the client never sent it."""
    return None if value is UNSET else value


class Stored(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    created_at: int = field(default=0, name="_createdAt")
    updated_at: int = field(default=0, name="_updatedAt")
    archived_at: int | None = field(default=None, name="_archivedAt")


class Customer(Stored, frozen=True, kw_only=True):
    """UNSET: the client never sent the field (it is then absent from the API's answer,
    as it always was); None: sent as null."""
    metadata: dict[str, str] = {}
    billing_currency: str | None | UnsetType = field(default=UNSET, name="billingCurrency")
    billing_id: str | None | UnsetType = field(default=UNSET, name="billingId")
    coupon_id: str | None | UnsetType = field(default=UNSET, name="couponId")
    default_payment_method: dict[str, Any] | None | UnsetType = field(
        default=UNSET, name="defaultPaymentMethod")
    email: str | None | UnsetType = UNSET
    integrations: list[dict[str, Any]] | None | UnsetType = UNSET
    language: str | None | UnsetType = UNSET
    name: str | None | UnsetType = UNSET
    passthrough: dict[str, Any] | None | UnsetType = UNSET
    timezone: str | None | UnsetType = UNSET


class CurrencyUnits(msgspec.Struct, frozen=True):
    plural: str
    singular: str


class TopUp(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    price_per_credit: int  # units (10^-5)
    price_currency: str  # ISO 4217, lower case
    minimum_purchase: int | None = None  # credits
    maximum_purchase: int | None = None


class Currency(Stored, frozen=True, kw_only=True):
    display_name: str = field(name="displayName")
    description: str | None = None
    metadata: dict[str, str] = {}
    symbol: str | None = None
    units: CurrencyUnits | None = None
    top_up: TopUp | None = field(default=None, name="topUp")


class EnumValue(msgspec.Struct, frozen=True, rename="camel"):
    display_name: str
    value: str


class UnitTransformation(msgspec.Struct, frozen=True, rename="camel"):
    divide: int
    feature_units: str | None = None
    feature_units_plural: str | None = None
    round: str = "DOWN"  # UP or DOWN


class CreditRate(msgspec.Struct, frozen=True, rename="camel"):
    # Credits per unit of usage, exact (stored as a JSON number or a decimal's text).
    amount: Decimal
    currency_id: str


class Feature(Stored, frozen=True, kw_only=True):
    display_name: str = field(default="", name="displayName")
    feature_type: str = field(name="featureType")  # BOOLEAN, NUMBER, ENUM
    meter_type: str = field(default="None", name="meterType")  # None, FLUCTUATING, INCREMENTAL
    feature_status: str = field(default="NEW", name="featureStatus")
    description: str | None = None
    feature_units: str | None = field(default=None, name="featureUnits")
    feature_units_plural: str | None = field(default=None, name="featureUnitsPlural")
    metadata: dict[str, str] = {}
    meter: Meter | None = None
    unit_transformation: UnitTransformation | None = field(default=None,
                                                           name="unitTransformation")
    enum_configuration: list[EnumValue] | None = field(default=None, name="enumConfiguration")
    credit_rate: CreditRate | None = field(default=None, name="creditRate")


class AmountOff(msgspec.Struct, frozen=True):
    # Units (10^-5); documents written before amounts were kept in units hold the
    # decimal's text.
    amount: int | str
    currency: str


class Coupon(Stored, frozen=True, kw_only=True):
    name: str
    description: str | None = None
    metadata: dict[str, str] = {}
    type: str  # PERCENTAGE or FIXED
    percent_off: int | None = field(default=None, name="percentOff")
    amounts_off: list[AmountOff] | None = field(default=None, name="amountsOff")
    duration: str = "FOREVER"  # ONCE, REPEATING, FOREVER
    duration_in_months: int | None = field(default=None, name="durationInMonths")


# -- products, plans and add-ons (engine/domain/packages) ------------------------------
#
# These are written by editing a working copy under the package's lock (packages/store.py
# `_working` hands out a deep copy), so they are mutable; a published version is never
# changed once written.

class Edited(msgspec.Struct, kw_only=True):
    id: str
    created_at: int = field(default=0, name="_createdAt")
    updated_at: int = field(default=0, name="_updatedAt")
    archived_at: int | None = field(default=None, name="_archivedAt")


class ProductSettings(msgspec.Struct, kw_only=True, rename="camel"):
    subscription_cancellation_time: str  # END_OF_BILLING_PERIOD, IMMEDIATE, SPECIFIC_DATE
    subscription_end_setup: str  # DOWNGRADE_TO_FREE, CANCEL_SUBSCRIPTION
    subscription_start_setup: str  # PLAN_SELECTION, TRIAL_PERIOD, FREE_PLAN
    downgrade_plan_id: str | None = None
    prorate_at_end_of_billing_period: bool | None = None
    subscription_start_plan_id: str | None = None


class UsageResetCutoffRule(msgspec.Struct):
    behavior: str  # NEVER_RESET, ALWAYS_RESET, BILLING_PERIOD_CHANGE


class TrialBudget(msgspec.Struct, kw_only=True, rename="camel"):
    has_soft_limit: bool
    limit: str  # money, a decimal's text


class TrialConfig(msgspec.Struct, kw_only=True, rename="camel"):
    duration: int
    units: str  # DAY or MONTH
    trial_end_behavior: str = "CONVERT_TO_PAID"  # or CANCEL_SUBSCRIPTION
    budget: TrialBudget | None = None


class Product(Edited, kw_only=True):
    display_name: str = field(default="", name="displayName")
    description: str | None = None
    metadata: dict[str, str] = {}
    multiple_subscriptions: bool = field(default=False, name="multipleSubscriptions")
    product_settings: ProductSettings | None = field(default=None, name="productSettings")
    usage_reset_cutoff_rule: UsageResetCutoffRule | None = field(
        default=None, name="usageResetCutoffRule")


class Grant(msgspec.Struct, kw_only=True):
    """What an entitlement to a feature grants: shared by a package's FEATURE
    entitlements and promotional entitlements (engine/domain/entitlements.py adds them
    up)."""
    is_granted: bool = field(default=True, name="isGranted")
    has_unlimited_usage: bool = field(default=False, name="hasUnlimitedUsage")
    usage_limit: int | None = field(default=None, name="usageLimit")
    has_soft_limit: bool = field(default=False, name="hasSoftLimit")
    enum_values: list[str] | None = field(default=None, name="enumValues")
    reset_period: str | None = field(default=None, name="resetPeriod")  # YEAR … HOUR
    reset_period_configuration: dict[str, Any] | None = field(  # {accordingTo}
        default=None, name="resetPeriodConfiguration")
    created_at: int = field(default=0, name="_createdAt")
    updated_at: int = field(default=0, name="_updatedAt")


class PackageEntitlement(Grant, kw_only=True):
    """An entitlement of a plan or add-on: to a feature (FEATURE: the grant's fields) or
    to credits of a custom currency each cadence (CREDIT: amount, cadence)."""
    id: str  # the feature's or the currency's
    type: str = "FEATURE"
    behavior: str = "Increment"
    description: str | None = None
    display_name_override: str | None = field(default=None, name="displayNameOverride")
    hidden_from_widgets: list[str] = field(default_factory=list, name="hiddenFromWidgets")
    is_custom: bool = field(default=False, name="isCustom")
    order: str | None = None  # a decimal's text
    amount: str | None = None  # credits each cadence, a decimal's text
    cadence: str | None = None  # MONTH or YEAR
    dependency_feature_id: str | None = field(default=None, name="dependencyFeatureId")


class Promotion(Grant, kw_only=True):
    """A promotional entitlement: a feature granted to one customer from `start` until
    `end` (None: for good), unless revoked (`archived_at`)."""
    id: str
    feature_id: str = field(name="featureId")
    description: str | None = None
    period: str | None = None  # the grant's length as asked (1 week … lifetime)
    is_visible: bool = field(default=True, name="isVisible")
    start: int | None = field(default=None, name="_startDate")
    end: int | None = field(default=None, name="_endDate")
    archived_at: int | None = field(default=None, name="_archivedAt")
    # Set from the row's status when read (persistence/promotions.py): True once the usage
    # it counted was settled at its end by the clock (subscriptions/usage_windows.py).
    usage_settled: bool = field(default=False, name="_usageSettled")


class Package(Edited, kw_only=True):
    """What plans and add-ons share. `entitlements` are the stored entitlement objects
    (packages/entitlements.py), `charges` the prices in the shape engine/billing/pricing.py
    reads."""
    product_id: str = field(name="productId")
    display_name: str = field(default="", name="displayName")
    description: str | None = None
    billing_id: str | None = field(default=None, name="billingId")
    metadata: dict[str, str] = {}
    pricing_type: str | None = field(default=None, name="pricingType")  # FREE, PAID, CUSTOM
    status: str = "DRAFT"  # DRAFT, PUBLISHED, ARCHIVED
    version_number: int = field(default=1, name="versionNumber")
    hidden: bool = False
    entitlements: list[PackageEntitlement] = []
    charges: dict[str, Any] | None = None
    # Set when a version is published; ALL_CUSTOMERS moves existing subscribers to it.
    published_at: int | None = field(default=None, name="_publishedAt")
    migration_type: str | None = field(default=None, name="_migrationType")


class Plan(Package, kw_only=True):
    parent_plan_id: str | None = field(default=None, name="parentPlanId")
    compatible_addon_ids: list[str] = field(default_factory=list, name="compatibleAddonIds")
    default_trial_config: TrialConfig | None = field(default=None, name="defaultTrialConfig")


class Addon(Package, kw_only=True):
    max_quantity: int | None = field(default=None, name="maxQuantity")
    dependencies: list[str] = []


# The catalog's tables whose documents are typed (persistence/documents.py decodes them).
DOCUMENT_TYPES: dict[str, type] = {
    "customer_profiles": Customer,
    "currencies": Currency,
    "features": Feature,
    "coupons": Coupon,
    "products": Product,
    "plans": Plan,
    "addons": Addon,
}
