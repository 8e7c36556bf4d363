"""The catalog's documents as stored: typed, frozen msgspec Structs.

Customers' profiles, currencies, features and coupons are kept as JSON documents
(persistence/documents.py decodes them into these types once and caches the result). A
field's stored name is the JSON key every earlier version wrote — the wire name for what
the API shows, `_`-prefixed for the times only creditd reads — so stored rows decode as
they are, with no migration, and are written back in the same shape.

The documents are frozen: the cache hands the same object to every reader, so a change
is a new document (`msgspec.structs.replace`) that the store then writes.

    Stored    what every document has: id, created, updated, archived (epoch ms)
    Customer  a customer's profile: the optional fields the client sent
    Currency  a custom currency (credit type), its unit names and top-up price
    Feature   a feature: type, meter, unit transformation, credit rate
    Coupon    a percentage or fixed amounts off, and for how long

Subscriptions have their own typed document (subscriptions/document.py).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, TypeVar

import msgspec
from msgspec import UNSET, UnsetType, field

from engine.core.meters import Meter

__all__ = ["DOCUMENT_TYPES", "AmountOff", "Coupon", "CreditRate", "Currency", "CurrencyUnits",
           "Customer", "EnumValue", "Feature", "Stored", "TopUp", "UnitTransformation",
           "unset_none"]


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


# The catalog's tables whose documents are typed (persistence/documents.py decodes them).
DOCUMENT_TYPES: dict[str, type[Stored]] = {
    "customer_profiles": Customer,
    "currencies": Currency,
    "features": Feature,
    "coupons": Coupon,
}
