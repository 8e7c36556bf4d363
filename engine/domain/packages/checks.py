"""Small validators of package and product fields (ids, names, prices, credits amounts,
whole numbers, currency codes, reset periods), and the features and custom currencies
they name; every refusal names its field."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from engine.domain.context import Documents as Catalog
from engine.domain.errors import bad_input
from engine.domain.stored import Currency, Feature
from engine.domain.values import units_in as amount_in

_CONFIG_OF = {"MONTH": "monthlyResetPeriodConfiguration",
              "WEEK": "weeklyResetPeriodConfiguration",
              "YEAR": "yearlyResetPeriodConfiguration"}
PRICE_MAX = Decimal(10) ** 12
PRICE_DECIMALS = 10


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


async def _feature(catalog: Catalog, env: str, ident: Any, field: str) -> Feature:
    doc = await catalog.get("features", env, ident) if isinstance(ident, str) else None
    if doc is None:
        raise bad_input(f"feature {ident!r} was not found", field)
    if doc.archived_at is not None:
        raise bad_input(f"feature {ident!r} is archived", field)
    return doc


async def _custom_currency(catalog: Catalog, env: str, ident: Any,
                           field: str) -> Currency:
    doc = await catalog.get("currencies", env, ident) if isinstance(ident, str) else None
    if doc is None:
        raise bad_input(f"custom currency {ident!r} was not found", field)
    if doc.archived_at is not None:
        raise bad_input(f"custom currency {ident!r} is archived", field)
    return doc
