"""engine.core.amounts: the one place wire numbers become integer units and back."""

from __future__ import annotations

from decimal import Decimal

import pytest

from engine.core.amounts import (
    AMOUNT_UNITS_MAX,
    DECIMALS,
    SCALE,
    AmountError,
    from_units,
    to_units,
    units_to_json,
)

MAX_CREDITS = AMOUNT_UNITS_MAX // SCALE


def test_one_credit_is_one_hundred_thousand_units_and_the_max_is_a_trillion_credits():
    assert DECIMALS == 5
    assert SCALE == 100_000
    assert AMOUNT_UNITS_MAX == 10**12 * 100_000
    assert MAX_CREDITS == 10**12


@pytest.mark.parametrize(
    "value, units",
    [
        # ints are whole credits
        (1, 100_000),
        (7, 700_000),
        (MAX_CREDITS, AMOUNT_UNITS_MAX),
        # exact decimals
        (Decimal("1.5"), 150_000),
        (Decimal("0.00001"), 1),
        (Decimal("123.45678"), 12_345_678),
        (Decimal("1E+2"), 10_000_000),
        (Decimal("1.000000000"), 100_000),
        # strings are parsed as decimals
        ("1.5", 150_000),
        ("0.00001", 1),
        ("1e3", 100_000_000),
        (" 2.5 ", 250_000),
        (str(MAX_CREDITS), AMOUNT_UNITS_MAX),
    ],
)
def test_converts_ints_decimals_and_strings_to_exact_units(value, units):
    assert to_units(value) == units
    assert type(to_units(value)) is int


@pytest.mark.parametrize(
    "value, units",
    [
        # half rounds away from zero at the fifth decimal ...
        (Decimal("0.000005"), 1),
        (Decimal("0.000015"), 2),
        (Decimal("0.000025"), 3),  # banker's rounding would give 2
        (Decimal("2.000025"), 200_003),
        (Decimal("2.0000250000000001"), 200_003),
        # ... and anything below half rounds down
        (Decimal("0.0000149999"), 1),
        (Decimal("1.000004999999"), 100_000),
        (Decimal("0.000009"), 1),
        ("0.000005", 1),
        ("9.999995", 1_000_000),
    ],
)
def test_rounds_half_away_from_zero_at_five_decimals(value, units):
    assert to_units(value) == units


@pytest.mark.parametrize(
    "value",
    [Decimal("0.000004999"), Decimal("0.000004"), "0.0000049", Decimal("0"), 0, "0", "-0",
     Decimal("-0.000004")],
)
def test_refuses_values_that_round_to_zero(value):
    with pytest.raises(AmountError) as err:
        to_units(value)
    assert err.value.reason == "must be greater than zero"


@pytest.mark.parametrize("value", [0, Decimal("0"), "0.000004", Decimal("-0.000004")])
def test_allows_zero_when_asked(value):
    assert to_units(value, allow_zero=True) == 0


@pytest.mark.parametrize("value", [-1, Decimal("-0.00001"), "-1.5", Decimal("-0.000005")])
def test_refuses_negative_values(value):
    with pytest.raises(AmountError) as err:
        to_units(value, allow_zero=True)
    assert err.value.reason == "must not be negative"


@pytest.mark.parametrize("value", [True, False])
def test_refuses_booleans_even_though_they_are_ints(value):
    with pytest.raises(AmountError) as err:
        to_units(value, allow_zero=True)
    assert "boolean" in err.value.reason


@pytest.mark.parametrize("value", [1.0, 0.5, 1e3, float("nan"), float("inf")])
def test_refuses_floats_because_the_decimal_is_already_lost(value):
    with pytest.raises(AmountError) as err:
        to_units(value)
    assert err.value.reason == "must be a number, not float"


@pytest.mark.parametrize("value", [None, [1], {"a": 1}, b"1", object()])
def test_refuses_values_that_are_not_numbers(value):
    with pytest.raises(AmountError) as err:
        to_units(value)
    assert err.value.reason.startswith("must be a number, not ")


@pytest.mark.parametrize("value", ["", "abc", "1,5", "1.2.3", "one", "0x10"])
def test_refuses_strings_that_are_not_decimals(value):
    with pytest.raises(AmountError) as err:
        to_units(value)
    assert err.value.reason == "must be a decimal number"


@pytest.mark.parametrize(
    "value",
    [Decimal("NaN"), Decimal("sNaN"), Decimal("Infinity"), Decimal("-Infinity"),
     "NaN", "nan", "Infinity", "-inf", "sNaN"],
)
def test_refuses_nan_and_infinity(value):
    with pytest.raises(AmountError) as err:
        to_units(value)
    assert err.value.reason == "must be a finite number"


@pytest.mark.parametrize(
    "value",
    [MAX_CREDITS, Decimal(MAX_CREDITS), str(MAX_CREDITS), Decimal("1000000000000.000004")],
)
def test_accepts_exactly_the_maximum(value):
    assert to_units(value) == AMOUNT_UNITS_MAX


@pytest.mark.parametrize(
    "value",
    [MAX_CREDITS + 1, 10**30, Decimal("1000000000000.00001"), Decimal("1000000000000.000005"),
     "1000000000001", Decimal("1e22")],
)
def test_refuses_more_than_the_maximum(value):
    with pytest.raises(AmountError) as err:
        to_units(value)
    assert err.value.reason == f"must be at most {MAX_CREDITS}"


@pytest.mark.parametrize(
    "value",
    [Decimal("1e23"), "1e23", "123456789012345678901234.5", Decimal("1E+30"), "1e100000"],
)
def test_refuses_huge_decimals_with_an_amount_error_not_a_decimal_exception(value):
    # The gateway catches AmountError to answer 400; any other exception is a 500.
    with pytest.raises(AmountError) as err:
        to_units(value)
    assert err.value.reason == f"must be at most {MAX_CREDITS}"


def test_amount_error_is_a_value_error_carrying_its_reason():
    with pytest.raises(ValueError) as err:
        to_units(-1)
    assert isinstance(err.value, AmountError)
    assert str(err.value) == err.value.reason


@pytest.mark.parametrize(
    "units, number",
    [
        (0, Decimal(0)),
        (1, Decimal("0.00001")),
        (10, Decimal("0.0001")),
        (150_000, Decimal("1.5")),
        (100_000, Decimal(1)),
        (10_000_000, Decimal(100)),
        (12_345_678, Decimal("123.45678")),
        (AMOUNT_UNITS_MAX, Decimal(MAX_CREDITS)),
        (AMOUNT_UNITS_MAX - 1, Decimal("999999999999.99999")),
        (-150_000, Decimal("-1.5")),
    ],
)
def test_from_units_gives_the_exact_decimal(units, number):
    got = from_units(units)
    assert got == number
    assert str(got) == str(number)  # no exponent notation, no trailing zeros


@pytest.mark.parametrize("units", [0, 100_000, 10_000_000, AMOUNT_UNITS_MAX, 500_000])
def test_units_to_json_gives_plain_ints_for_whole_credits(units):
    got = units_to_json(units)
    assert type(got) is int
    assert got == units // SCALE


@pytest.mark.parametrize(
    "units, number",
    [(1, "0.00001"), (150_000, "1.5"), (12_345_678, "123.45678"), (10_010, "0.1001")],
)
def test_units_to_json_gives_exact_decimals_for_fractions(units, number):
    got = units_to_json(units)
    assert isinstance(got, Decimal)
    assert str(got) == number


ROUND_TRIP = [1, 9, 10, 99_999, 100_000, 100_001, 150_000, 123_456_789, 10**12,
              AMOUNT_UNITS_MAX - 1, AMOUNT_UNITS_MAX]


@pytest.mark.parametrize("units", ROUND_TRIP)
def test_units_round_trip_through_from_units_json_and_strings(units):
    assert to_units(from_units(units)) == units
    assert to_units(units_to_json(units)) == units
    assert to_units(str(from_units(units))) == units
    assert to_units(str(units_to_json(units))) == units
