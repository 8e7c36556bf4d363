"""The inputs of products, plans and add-ons: msgspec Structs in the official client's
request types' names (REST bodies and the TOML catalog's items decode into them), and the
conversion of a camelCase body to and from them."""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Literal

import msgspec
from msgspec import UNSET, UnsetType

from engine.domain.constraints import PackageIdent
from engine.domain.errors import bad_input, field_of

ResetPeriod = Literal["YEAR", "MONTH", "WEEK", "DAY", "HOUR"]
BillingPeriod = Literal["MONTHLY", "ANNUALLY"]
Widget = Literal["PAYWALL", "CUSTOMER_PORTAL", "CHECKOUT"]
Weekday = Literal["SubscriptionStart", "EverySunday", "EveryMonday", "EveryTuesday",
                  "EveryWednesday", "EveryThursday", "EveryFriday", "EverySaturday"]


# -- inputs (the official client's request types) ----------------------------------------

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
    id: PackageIdent = ""  # absent: refused by create_package, naming `id`
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
    id: PackageIdent = ""


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


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)
