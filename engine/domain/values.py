"""Small value rules the domain and the store share."""

from __future__ import annotations

from typing import Any

from engine.core.amounts import AmountError, to_units
from engine.domain.errors import bad_input

__all__ = ["ascii_int", "units_in"]


def units_in(value: Any, field: str, *, allow_zero: bool = False) -> int:
    """An amount of credits (a number, exact to 5 decimals, within 10^12) as units;
    BadUserInput naming `field` otherwise."""
    try:
        return to_units(value, allow_zero=allow_zero)
    except AmountError as exc:
        raise bad_input(exc.reason, field) from None


def ascii_int(text: str, *, digits_max: int = 18) -> int | None:
    """`text` as a non-negative integer if it is 1 to `digits_max` ASCII digits, else None.
    Every id or cursor the server issued as a number is read through here: str.isdigit()
    also accepts digits of other scripts ('²', '٣'), which int() refuses (a 500) or reads as
    another number, and a longer string would overflow the database's 64-bit integers."""
    if 0 < len(text) <= digits_max and text.isascii() and text.isdigit():
        return int(text)
    return None
