"""Meters: which raw events count toward a feature's usage, and how much each adds.

A feature's meter is a list of filters and an aggregation. An event matches the meter when
it matches any filter; a filter matches when all of its conditions hold. A condition looks
at the event's name (`eventName`) or one of its dimensions (`<key>` or `dimensions.<key>`).
The aggregation says what a matching event contributes:

    COUNT   1 per event                       additive: burns credits per event
    SUM     the numeric value of `field`      additive: burns credits per event
    MAX     the largest value of `field`      not additive: meters, never burns
    MIN     the smallest value of `field`     not additive
    AVG     the mean of `field`               not additive
    UNIQUE  the number of distinct `field`    not additive

Numbers are exact: dimension values are compared and summed as Decimals and turned into
units of 10^-5 (`engine.core.amounts`), never through binary floats. Pure functions only:
the gateway evaluates meters when events arrive, the actor applies the results.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from enum import StrEnum
from typing import Any

import msgspec

from engine.core.amounts import AMOUNT_UNITS_MAX, DECIMALS, SCALE

__all__ = [
    "Aggregation",
    "Operation",
    "Condition",
    "Filter",
    "Meter",
    "MeterError",
    "ADDITIVE",
    "validate_meter",
    "matches",
    "contribution",
    "signed_units",
]


class Aggregation(StrEnum):
    SUM = "SUM"
    MAX = "MAX"
    MIN = "MIN"
    AVG = "AVG"
    COUNT = "COUNT"
    UNIQUE = "UNIQUE"


# Usage from these grows by each event's contribution, so each event can burn credits as
# it arrives; the others are a statistic over events and burn nothing.
ADDITIVE = frozenset({Aggregation.COUNT, Aggregation.SUM})


class Operation(StrEnum):
    EQUALS = "EQUALS"
    NOT_EQUALS = "NOT_EQUALS"
    GREATER_THAN = "GREATER_THAN"
    GREATER_THAN_OR_EQUAL = "GREATER_THAN_OR_EQUAL"
    LESS_THAN = "LESS_THAN"
    LESS_THAN_OR_EQUAL = "LESS_THAN_OR_EQUAL"
    IS_NULL = "IS_NULL"
    IS_NOT_NULL = "IS_NOT_NULL"
    CONTAINS = "CONTAINS"
    STARTS_WITH = "STARTS_WITH"
    ENDS_WITH = "ENDS_WITH"
    IN = "IN"


_NUMERIC_OPS = {Operation.GREATER_THAN, Operation.GREATER_THAN_OR_EQUAL, Operation.LESS_THAN,
                Operation.LESS_THAN_OR_EQUAL}
_NO_VALUE_OPS = {Operation.IS_NULL, Operation.IS_NOT_NULL}


class Condition(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    field: str
    operation: Operation
    value: str | None = None
    values: list[str] | None = None


class Filter(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    conditions: list[Condition]


class MeterAggregation(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    function: Aggregation
    field: str | None = None


class Meter(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    aggregation: MeterAggregation
    filters: list[Filter]


class MeterError(ValueError):
    """A meter definition that cannot work; `field` is its path in the feature body."""

    def __init__(self, reason: str, field: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.reason = reason
        self.field = field


FILTERS_MAX = 20
CONDITIONS_MAX = 20
IN_VALUES_MAX = 1000


def _number(value: Any) -> Decimal | None:
    """A dimension or condition value as an exact number, or None if it is not one."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        # JSON numbers reach here as floats only when a caller decoded them so; repr() is
        # the shortest string that round-trips, i.e. the digits the client sent.
        value = repr(value)
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def validate_meter(meter: Meter) -> None:
    """Refuse definitions that could never meter anything sensibly (raises MeterError)."""
    function = meter.aggregation.function
    if function is Aggregation.COUNT:
        if meter.aggregation.field is not None:
            raise MeterError("COUNT takes no field", "meter.aggregation.field")
    elif not meter.aggregation.field:
        raise MeterError(f"{function} needs the dimension to aggregate",
                         "meter.aggregation.field")
    if not meter.filters:
        raise MeterError("at least one filter is needed (e.g. on eventName)", "meter.filters")
    if len(meter.filters) > FILTERS_MAX:
        raise MeterError(f"at most {FILTERS_MAX} filters", "meter.filters")
    for i, f in enumerate(meter.filters):
        at = f"meter.filters[{i}].conditions"
        if not f.conditions:
            raise MeterError("a filter needs at least one condition", at)
        if len(f.conditions) > CONDITIONS_MAX:
            raise MeterError(f"at most {CONDITIONS_MAX} conditions", at)
        for j, c in enumerate(f.conditions):
            where = f"{at}[{j}]"
            if not c.field:
                raise MeterError("must not be empty", f"{where}.field")
            if c.operation in _NO_VALUE_OPS:
                if c.value is not None or c.values is not None:
                    raise MeterError(f"{c.operation} takes no value", f"{where}.value")
            elif c.operation is Operation.IN:
                if not c.values or c.value is not None:
                    raise MeterError("IN needs `values` (and no `value`)", f"{where}.values")
                if len(c.values) > IN_VALUES_MAX:
                    raise MeterError(f"at most {IN_VALUES_MAX} values", f"{where}.values")
            else:
                if c.value is None or c.values is not None:
                    raise MeterError(f"{c.operation} needs `value`", f"{where}.value")
                if c.operation in _NUMERIC_OPS and _number(c.value) is None:
                    raise MeterError(f"{c.operation} compares numbers; {c.value!r} is not one",
                                     f"{where}.value")


def _field(name: str, event_name: str, dimensions: dict[str, Any]) -> Any:
    if name == "eventName":
        return event_name
    if name.startswith("dimensions."):
        name = name[len("dimensions."):]
    return dimensions.get(name)


def _text(value: Any) -> str:
    # Booleans as JSON spells them, so a condition value "true" matches a true dimension.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _equal(actual: Any, expected: str) -> bool:
    if _text(actual) == expected:
        return True
    # 1, 1.0 and "1.00" are the same number.
    a, b = _number(actual), _number(expected)
    return a is not None and b is not None and a == b


def _holds(c: Condition, event_name: str, dimensions: dict[str, Any]) -> bool:
    actual = _field(c.field, event_name, dimensions)
    op = c.operation
    if op is Operation.IS_NULL:
        return actual is None
    if actual is None:
        return op is Operation.NOT_EQUALS
    if op is Operation.IS_NOT_NULL:
        return True
    if op is Operation.EQUALS:
        return _equal(actual, c.value or "")
    if op is Operation.NOT_EQUALS:
        return not _equal(actual, c.value or "")
    if op is Operation.IN:
        return any(_equal(actual, v) for v in c.values or ())
    if op in _NUMERIC_OPS:
        a, b = _number(actual), _number(c.value)
        if a is None or b is None:
            return False
        if op is Operation.GREATER_THAN:
            return a > b
        if op is Operation.GREATER_THAN_OR_EQUAL:
            return a >= b
        if op is Operation.LESS_THAN:
            return a < b
        return a <= b
    text, needle = _text(actual), c.value or ""
    if op is Operation.CONTAINS:
        return needle in text
    if op is Operation.STARTS_WITH:
        return text.startswith(needle)
    return text.endswith(needle)


def matches(meter: Meter, event_name: str, dimensions: dict[str, Any]) -> bool:
    return any(all(_holds(c, event_name, dimensions) for c in f.conditions)
               for f in meter.filters)


_QUANTUM = Decimal(1).scaleb(-DECIMALS)
_LIMIT = Decimal(AMOUNT_UNITS_MAX // SCALE) + 1


def signed_units(number: Decimal) -> int | None:
    """An exact number as units (rounded half away from zero to 5 decimals), or None when
    it is beyond ±10^12."""
    if abs(number) > _LIMIT:  # before quantize(), which raises past its precision
        return None
    units = int(number.quantize(_QUANTUM, rounding=ROUND_HALF_UP).scaleb(DECIMALS))
    return units if -AMOUNT_UNITS_MAX <= units <= AMOUNT_UNITS_MAX else None


def contribution(meter: Meter, dimensions: dict[str, Any]) -> int | str | None:
    """What one matching event adds: units for COUNT (1 = SCALE units), SUM, MAX, MIN and
    AVG; the distinct value's text for UNIQUE; None when the event lacks a usable value
    (it then matches but contributes nothing)."""
    function = meter.aggregation.function
    if function is Aggregation.COUNT:
        return SCALE
    raw = dimensions.get(meter.aggregation.field or "")
    if raw is None:
        return None
    if function is Aggregation.UNIQUE:
        return _text(raw)
    number = _number(raw)
    return None if number is None else signed_units(number)
