"""Small value rules the domain and the store share."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from engine.core.amounts import AmountError, to_units
from engine.domain.errors import bad_input

__all__ = ["TIME_MAX_MS", "TIME_MIN_MS", "ascii_int", "time_in", "units_in"]


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


# Times the API takes: from 1970 to 9000. Renewals, trials and usage windows are computed
# months ahead of a time, so the calendar's end (year 9999) must stay far away.
TIME_MIN_MS = 0
TIME_MAX_MS = 221_845_392_000_000  # 9000-01-01T00:00:00Z


def time_in(value: str | None, field: str) -> int | None:
    """An ISO-8601 date-time (UTC if it names no zone) as epoch ms, None for None;
    BadUserInput naming `field` if it is not one or is outside 1970 to 9000."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise bad_input("must be an ISO-8601 date-time", field) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    try:
        ms = int(parsed.timestamp() * 1000)
    except (OverflowError, ValueError):
        ms = -1
    if not TIME_MIN_MS <= ms < TIME_MAX_MS:
        raise bad_input("must be from 1970-01-01 to 9000-01-01", field)
    return ms
