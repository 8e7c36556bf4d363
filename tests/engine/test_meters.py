"""Meters: every filter operation and aggregation, and the definitions that are refused."""

from __future__ import annotations

from decimal import Decimal

import msgspec
import pytest

from engine.core.meters import (
    ADDITIVE,
    Aggregation,
    Meter,
    MeterError,
    contribution,
    matches,
    validate_meter,
)


def meter(function: str = "COUNT", field: str | None = None, *filters: list[dict]) -> Meter:
    filters = filters or ([{"field": "eventName", "operation": "EQUALS", "value": "call"}],)
    return msgspec.convert({"aggregation": {"function": function, "field": field},
                            "filters": [{"conditions": f} for f in filters]}, Meter)


def one(field: str, operation: str, **kw) -> Meter:
    return meter("COUNT", None, [{"field": field, "operation": operation, **kw}])


@pytest.mark.parametrize("condition, dims, expected", [
    (("model", "EQUALS", {"value": "gpt"}), {"model": "gpt"}, True),
    (("model", "EQUALS", {"value": "gpt"}), {"model": "gpt-4"}, False),
    (("n", "EQUALS", {"value": "1"}), {"n": 1.0}, True),  # the same number
    (("n", "EQUALS", {"value": "1.00"}), {"n": 1}, True),
    (("flag", "EQUALS", {"value": "true"}), {"flag": True}, True),
    (("flag", "EQUALS", {"value": "True"}), {"flag": True}, False),
    (("model", "NOT_EQUALS", {"value": "gpt"}), {"model": "claude"}, True),
    (("model", "NOT_EQUALS", {"value": "gpt"}), {}, True),  # absent is not equal
    (("tokens", "GREATER_THAN", {"value": "10"}), {"tokens": 11}, True),
    (("tokens", "GREATER_THAN", {"value": "10"}), {"tokens": 10}, False),
    (("tokens", "GREATER_THAN", {"value": "10"}), {"tokens": "11"}, True),
    (("tokens", "GREATER_THAN", {"value": "10"}), {"tokens": "eleven"}, False),
    (("tokens", "GREATER_THAN_OR_EQUAL", {"value": "10"}), {"tokens": 10}, True),
    (("tokens", "LESS_THAN", {"value": "0.3"}), {"tokens": 0.1}, True),
    (("tokens", "LESS_THAN_OR_EQUAL", {"value": "0.3"}), {"tokens": 0.30}, True),
    (("tokens", "LESS_THAN_OR_EQUAL", {"value": "0.3"}), {"tokens": 0.30001}, False),
    (("region", "IS_NULL", {}), {}, True),
    (("region", "IS_NULL", {}), {"region": "eu"}, False),
    (("region", "IS_NOT_NULL", {}), {"region": "eu"}, True),
    (("region", "IS_NOT_NULL", {}), {}, False),
    (("path", "CONTAINS", {"value": "/v1/"}), {"path": "/api/v1/x"}, True),
    (("path", "STARTS_WITH", {"value": "/api"}), {"path": "/api/v1/x"}, True),
    (("path", "STARTS_WITH", {"value": "/v1"}), {"path": "/api/v1/x"}, False),
    (("path", "ENDS_WITH", {"value": "/x"}), {"path": "/api/v1/x"}, True),
    (("region", "IN", {"values": ["eu", "us"]}), {"region": "us"}, True),
    (("region", "IN", {"values": ["eu", "us"]}), {"region": "ap"}, False),
    (("dimensions.region", "EQUALS", {"value": "eu"}), {"region": "eu"}, True),
])
def test_each_operation(condition, dims, expected) -> None:
    field, operation, kw = condition
    assert matches(one(field, operation, **kw), "call", dims) is expected


def test_event_name_and_filters_are_or_of_and() -> None:
    m = meter("COUNT", None,
              [{"field": "eventName", "operation": "EQUALS", "value": "image"},
               {"field": "size", "operation": "EQUALS", "value": "large"}],
              [{"field": "eventName", "operation": "EQUALS", "value": "video"}])
    assert matches(m, "image", {"size": "large"})
    assert not matches(m, "image", {"size": "small"})
    assert matches(m, "video", {})
    assert not matches(m, "audio", {"size": "large"})


@pytest.mark.parametrize("function, field, dims, expected", [
    ("COUNT", None, {}, 100_000),
    ("SUM", "tokens", {"tokens": 1500}, 150_000_000),
    ("SUM", "tokens", {"tokens": 0.1}, 10_000),  # exact, not 0.1000000000000000055…
    ("SUM", "tokens", {"tokens": "2.5"}, 250_000),
    ("SUM", "tokens", {"tokens": 0.000015}, 2),  # half away from zero at 5 decimals
    ("SUM", "tokens", {"tokens": -3}, -300_000),
    ("SUM", "tokens", {}, None),
    ("SUM", "tokens", {"tokens": "n/a"}, None),
    ("SUM", "tokens", {"tokens": True}, None),
    ("SUM", "tokens", {"tokens": 1e300}, None),  # beyond 10^12
    ("MAX", "latency", {"latency": 7}, 700_000),
    ("UNIQUE", "user", {"user": "u-1"}, "u-1"),
    ("UNIQUE", "user", {"user": 42}, "42"),
])
def test_contribution(function, field, dims, expected) -> None:
    assert contribution(meter(function, field), dims) == expected


def test_only_count_and_sum_are_additive() -> None:
    assert ADDITIVE == {Aggregation.COUNT, Aggregation.SUM}


@pytest.mark.parametrize("definition, field", [
    ({"aggregation": {"function": "SUM"}, "filters": [{"conditions": [
        {"field": "eventName", "operation": "EQUALS", "value": "x"}]}]}, "meter.aggregation.field"),
    ({"aggregation": {"function": "COUNT", "field": "x"}, "filters": [{"conditions": [
        {"field": "eventName", "operation": "EQUALS", "value": "x"}]}]}, "meter.aggregation.field"),
    ({"aggregation": {"function": "COUNT"}, "filters": []}, "meter.filters"),
    ({"aggregation": {"function": "COUNT"}, "filters": [{"conditions": []}]},
     "meter.filters[0].conditions"),
    ({"aggregation": {"function": "COUNT"}, "filters": [{"conditions": [
        {"field": "n", "operation": "GREATER_THAN", "value": "ten"}]}]},
     "meter.filters[0].conditions[0].value"),
    ({"aggregation": {"function": "COUNT"}, "filters": [{"conditions": [
        {"field": "n", "operation": "IN", "value": "a"}]}]},
     "meter.filters[0].conditions[0].values"),
    ({"aggregation": {"function": "COUNT"}, "filters": [{"conditions": [
        {"field": "n", "operation": "IS_NULL", "value": "a"}]}]},
     "meter.filters[0].conditions[0].value"),
    ({"aggregation": {"function": "COUNT"}, "filters": [{"conditions": [
        {"field": "n", "operation": "EQUALS"}]}]}, "meter.filters[0].conditions[0].value"),
])
def test_refused_definitions_name_the_field(definition, field) -> None:
    with pytest.raises(MeterError) as raised:
        validate_meter(msgspec.convert(definition, Meter))
    assert raised.value.field == field


def test_decimal_dimension_values_stay_exact() -> None:
    assert contribution(meter("SUM", "x"), {"x": Decimal("0.30000")}) == 30_000
