"""Comparing what the file says with what is stored: `same`, the changed keys of a body,
and a stored entitlement in the input shape."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from .bodies import _reset_config

# -- comparing what the file says with what is stored --------------------------------------

def _empty(value: Any) -> bool:
    return value is None or value is False or value == "" or value == [] or value == {}


def _number(value: Any) -> Decimal | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, Decimal)):
        return Decimal(value)
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, str) and re.fullmatch(r"-?\d+(\.\d+)?", value.strip()):
        return Decimal(value)
    return None


_ANY_CASE = ("billingCountryCode", "currency")


def same(wanted: Any, stored: Any) -> bool:
    """Whether the stored value says what the file wants: numbers compare by value (the
    store keeps money as decimal strings), an absent key equals null/false/empty, and keys
    the store adds on its own (timestamps, defaults) are ignored."""
    if _empty(wanted) and _empty(stored):
        return True
    a, b = _number(wanted), _number(stored)
    if a is not None and b is not None:
        return a == b
    if isinstance(wanted, dict):
        if not isinstance(stored, dict):
            return False
        return all(same(v, stored.get(k)) if k not in _ANY_CASE else
                   str(v).lower() == str(stored.get(k)).lower()
                   for k, v in wanted.items())
    if isinstance(wanted, (list, tuple)):
        if not isinstance(stored, (list, tuple)) or len(wanted) != len(stored):
            return False
        return all(same(x, y) for x, y in zip(wanted, stored))
    return bool(wanted == stored)


def _differs(wanted: dict[str, Any], stored: dict[str, Any]) -> list[str]:
    return [k for k, v in wanted.items() if not same(v, stored.get(k))]


def _stored_entitlement(e: dict[str, Any]) -> dict[str, Any]:
    """A stored entitlement in the input shape (the store keeps one resetPeriodConfiguration;
    the input names it per period)."""
    out = dict(e)
    config = out.pop("resetPeriodConfiguration", None)
    if config and out.get("resetPeriod") in ("MONTH", "WEEK", "YEAR"):
        out.update(_reset_config(out["resetPeriod"], config.get("accordingTo")))
    return out
