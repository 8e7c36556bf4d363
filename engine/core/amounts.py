"""Exact amounts: every credit amount is an integer count of 10^-5 credits ("units").

The wire contract rounds usage values half away from zero to five decimal places, so an
integer of 10^-5 credits represents every value the wire can carry exactly, adds and
compares at integer speed, and fits PostgreSQL's BIGINT. Binary floats never enter the
engine: `to_units` converts what the gateway decoded (int, Decimal or str) once, at the edge.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

__all__ = [
    "DECIMALS",
    "SCALE",
    "AMOUNT_UNITS_MAX",
    "AmountError",
    "to_units",
    "from_units",
    "units_to_json",
]

DECIMALS = 5
SCALE = 10**DECIMALS
# The largest amount accepted anywhere (a grant, a consumption, a pool's outstanding credits
# or overdraft): 10^12 credits = 10^17 units, so every stored amount fits a BIGINT (< 9.2e18)
# with room to spare. Lifetime totals (granted, consumed) are derived, never stored, and
# Python integers do not overflow.
AMOUNT_UNITS_MAX = 10**12 * SCALE

_QUANTUM = Decimal(1).scaleb(-DECIMALS)
_AMOUNT_MAX_DECIMAL = Decimal(AMOUNT_UNITS_MAX // SCALE) + 1


class AmountError(ValueError):
    """A value that cannot be an amount; `reason` says why in words a client can act on."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def to_units(value: object, *, allow_zero: bool = False) -> int:
    """Convert a wire number to units, rounding half away from zero to 5 decimals.

    Floats are refused on purpose: by the time a float exists, the decimal the client sent
    is already lost. The gateway decodes JSON numbers as Decimal.
    """
    if isinstance(value, bool):
        raise AmountError("must be a number, not a boolean")
    if isinstance(value, int):
        units = value * SCALE
    elif isinstance(value, (Decimal, str)):
        try:
            number = Decimal(value)
        except InvalidOperation:
            raise AmountError("must be a decimal number") from None
        if not number.is_finite():
            raise AmountError("must be a finite number")
        # Check the magnitude before quantizing: quantize() raises on values whose digits
        # exceed the context precision (1E+1000), and we want our own error for those.
        if number < -_AMOUNT_MAX_DECIMAL:
            raise AmountError("must not be negative")
        if number > _AMOUNT_MAX_DECIMAL:
            raise AmountError(f"must be at most {AMOUNT_UNITS_MAX // SCALE}")
        # ROUND_HALF_UP in the decimal module rounds half away from zero, as the contract does.
        units = int(number.quantize(_QUANTUM, rounding=ROUND_HALF_UP).scaleb(DECIMALS))
    else:
        raise AmountError(f"must be a number, not {type(value).__name__}")
    if units < 0:
        raise AmountError("must not be negative")
    if units == 0 and not allow_zero:
        raise AmountError("must be greater than zero")
    if units > AMOUNT_UNITS_MAX:
        raise AmountError(f"must be at most {AMOUNT_UNITS_MAX // SCALE}")
    return units


def from_units(units: int) -> Decimal:
    """Units back to an exact Decimal with no trailing zeros beyond what is needed."""
    number = Decimal(units).scaleb(-DECIMALS)
    # normalize() would turn 100 into 1E+2; keep integers plain for JSON.
    if units % SCALE == 0:
        return Decimal(units // SCALE)
    return number.normalize()


def units_to_json(units: int) -> int | Decimal:
    """The JSON number for an amount: a plain integer when whole, else an exact decimal."""
    if units % SCALE == 0:
        return units // SCALE
    return Decimal(units).scaleb(-DECIMALS).normalize()
