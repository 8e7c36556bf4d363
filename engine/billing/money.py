"""Money: currency minor units and the one rounding rule of the billing modules.

Every money amount is a `Decimal` (never a float). Arithmetic inside the billing modules
runs on exact rationals (`fractions.Fraction`, built from Decimals without loss), so a
product such as `quantity × unitPrice × remaining/period` is never rounded by a Decimal
context's precision on the way; a result is rounded exactly once, when it becomes an
amount someone is charged, by `round_money`:

- to the currency's minor units: 2 decimals by default; 0 for the zero-decimal currencies
  (bif clp djf gnf jpy kmf krw mga pyg rwf ugx vnd vuv xaf xof xpf); 3 for bhd jod kwd
  omr tnd;
- half away from zero (1.005 usd → 1.01, −1.005 usd → −1.01, 0.5 jpy → 1).

The result is a Decimal quantized to the minor units (`Decimal("1.50")`, `Decimal("150")`
for jpy), so sums of rounded amounts stay exact and `==` compares values.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Union

__all__ = [
    "ZERO_DECIMAL",
    "THREE_DECIMAL",
    "MoneyError",
    "Exact",
    "minor_units",
    "quantum",
    "normalize_currency",
    "to_decimal",
    "to_fraction",
    "round_money",
    "zero",
]

ZERO_DECIMAL = frozenset(
    "bif clp djf gnf jpy kmf krw mga pyg rwf ugx vnd vuv xaf xof xpf".split())
THREE_DECIMAL = frozenset("bhd jod kwd omr tnd".split())

Exact = Union[Decimal, Fraction, int]


class MoneyError(ValueError):
    """A value that cannot be money; `reason` is for the client, `field` names where."""

    def __init__(self, reason: str, field: str | None = None) -> None:
        super().__init__(reason if field is None else f"{field}: {reason}")
        self.reason = reason
        self.field = field


def normalize_currency(currency: str, field: str | None = None) -> str:
    """ISO 4217 code in the REST contract's spelling (lowercase); `field` names it in the
    error."""
    code = currency.strip().lower()
    if not (len(code) == 3 and code.isascii() and code.isalpha()):
        raise MoneyError("must be a three-letter currency code", field)
    return code


def minor_units(currency: str) -> int:
    """Decimals of the currency's minor unit: 0, 2 or 3."""
    code = currency.lower()
    if code in ZERO_DECIMAL:
        return 0
    if code in THREE_DECIMAL:
        return 3
    return 2


def quantum(currency: str) -> Decimal:
    """The smallest amount of the currency: Decimal('0.01'), Decimal('1'), Decimal('0.001')."""
    return Decimal(1).scaleb(-minor_units(currency))


def zero(currency: str) -> Decimal:
    return Decimal((0, (0,), -minor_units(currency)))


def to_decimal(value: object, field: str | None = None) -> Decimal:
    """A stored or decoded amount (decimal string, int, Decimal; a float through its repr,
    as a last resort for hand-written documents) as a finite Decimal."""
    if isinstance(value, bool):
        raise MoneyError("must be a number, not a boolean", field)
    if isinstance(value, Decimal):
        number = value
    elif isinstance(value, int):
        number = Decimal(value)
    elif isinstance(value, float):
        number = Decimal(repr(value))
    elif isinstance(value, str):
        try:
            number = Decimal(value.strip())
        except InvalidOperation:
            raise MoneyError("must be a decimal number", field) from None
    else:
        raise MoneyError(f"must be a number, not {type(value).__name__}", field)
    if not number.is_finite():
        raise MoneyError("must be a finite number", field)
    return number


def to_fraction(value: object, field: str | None = None) -> Fraction:
    """Exact rational of a money amount or quantity (no rounding)."""
    if isinstance(value, Fraction):
        return value
    return Fraction(to_decimal(value, field))


def round_money(value: Exact, currency: str) -> Decimal:
    """Round an exact amount to the currency's minor units, half away from zero.

    Integer arithmetic on the rational: no Decimal context, no precision limit.
    """
    digits = minor_units(currency)
    exact = value if isinstance(value, Fraction) else Fraction(value)
    scaled = exact * 10**digits
    q, r = divmod(abs(scaled.numerator), scaled.denominator)
    if 2 * r >= scaled.denominator:
        q += 1
    # Built from its digits, not through a context: exact at any size.
    return Decimal((1 if scaled < 0 and q else 0, tuple(int(c) for c in str(q)), -digits))
