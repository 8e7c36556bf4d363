"""engine.billing (money, pricing, proration): hand-computed tables and properties.

Every expected amount is worked out by hand in the comment next to it.
"""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.billing.money import MoneyError, minor_units, quantum, round_money, to_decimal
from engine.billing.pricing import (
    Coupon,
    Line,
    PricingError,
    Quantities,
    build_invoice,
    coupon_applies,
    coupon_from_discount,
    coupon_from_doc,
    discount_amount,
    invoice_currency,
    minimum_spend_line,
    months_between,
    parse_tax_rates,
    parse_tiers,
    price_package,
    select_price_period,
    tax_amount,
    tax_rate_for,
    tier_amount,
)
from engine.billing.proration import prorate, prorated, remaining_fraction

D = Decimal
DAY = 86_400_000
JAN_1_2026 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
FEB_1_2026 = JAN_1_2026 + 31 * DAY


def money(amount: str, currency: str = "usd") -> dict:
    return {"amount": amount, "currency": currency}


def period(price: str | None = None, *, billing: str = "MONTHLY", country: str | None = None,
           currency: str = "usd", tiers: list | None = None, block: int | None = None) -> dict:
    p: dict = {"billingPeriod": billing}
    if price is not None:
        p["price"] = money(price, currency)
    if country is not None:
        p["billingCountryCode"] = country
    if tiers is not None:
        p["tiers"] = tiers
    if block is not None:
        p["blockSize"] = block
    return p


def tier(up_to, unit: str | None = None, flat: str | None = None, currency: str = "usd") -> dict:
    t: dict = {"upTo": up_to}
    if unit is not None:
        t["unitPrice"] = money(unit, currency)
    if flat is not None:
        t["flatPrice"] = money(flat, currency)
    return t


def charges(*models: dict, minimum: list | None = None) -> dict:
    return {"pricingType": "PAID", "pricingModels": list(models), "minimumSpend": minimum}


def total(lines: list[Line]) -> Decimal:
    return sum((line.sub_total for line in lines), D(0))


# --- money -------------------------------------------------------------------------------

@pytest.mark.parametrize("currency, digits", [
    ("usd", 2), ("EUR", 2), ("gbp", 2),
    *[(c, 0) for c in "bif clp djf gnf jpy kmf krw mga pyg rwf ugx vnd vuv xaf xof xpf".split()],
    *[(c, 3) for c in "bhd jod kwd omr tnd".split()],
])
def test_minor_units(currency, digits):
    assert minor_units(currency) == digits
    assert quantum(currency) == D(1).scaleb(-digits)


@pytest.mark.parametrize("value, currency, expected", [
    (D("1.005"), "usd", "1.01"),     # half → away from zero
    (D("1.004999"), "usd", "1.00"),
    (D("-1.005"), "usd", "-1.01"),   # away from zero on the negative side too
    (D("2.5"), "jpy", "3"),          # zero-decimal: 2.5 yen → 3 (not banker's 2)
    (D("-2.5"), "jpy", "-3"),
    (D("1.0005"), "kwd", "1.001"),   # three decimals
    (Fraction(1, 3), "usd", "0.33"),  # 0.333… → 0.33
    (Fraction(2, 3), "usd", "0.67"),
    (Fraction(-1, 200), "usd", "-0.01"),  # −0.005 → −0.01
    (D("12345678901234567890123456789.125"), "usd", "12345678901234567890123456789.13"),
    (D("0"), "usd", "0.00"),
])
def test_round_money_half_away_from_zero(value, currency, expected):
    result = round_money(value, currency)
    assert result == D(expected)
    assert str(result) == expected  # quantized to the minor unit, beyond the context's 28 digits


def test_to_decimal_refuses_what_is_not_a_finite_number():
    assert to_decimal("9.99") == D("9.99")
    assert to_decimal(0.1) == D("0.1")  # a float through its repr
    for bad in ("abc", "NaN", "Infinity", True, None, [1]):
        with pytest.raises(ValueError):
            to_decimal(bad)


# --- price periods -----------------------------------------------------------------------

def test_country_price_overrides_the_default_and_billing_period_is_matched():
    model = {"billingModel": "FLAT_FEE", "pricePeriods": [
        period("10"), period("100", billing="ANNUALLY"),
        period("9", country="GB", currency="gbp"), period("11", country="eu", currency="eur")]}
    assert select_price_period(model, "MONTHLY", None)["price"]["amount"] == "10"
    # the country code matches case-insensitively
    assert select_price_period(model, "MONTHLY", "gb")["price"]["amount"] == "9"
    assert select_price_period(model, "MONTHLY", "EU")["price"]["amount"] == "11"
    assert select_price_period(model, "MONTHLY", "FR")["price"]["amount"] == "10"  # default
    # The GB override is monthly only: annual GB falls back to the annual default.
    assert select_price_period(model, "ANNUALLY", "GB")["price"]["amount"] == "100"
    only_annual = {"billingModel": "FLAT_FEE", "pricePeriods": [period("100", billing="ANNUALLY")]}
    assert select_price_period(only_annual, "MONTHLY", None) is None
    assert price_package(charges(only_annual), billing_period="MONTHLY") == []


def test_country_price_sets_the_currency():
    c = charges({"billingModel": "FLAT_FEE", "pricePeriods": [
        period("10"), period("1500", country="JP", currency="jpy")]})
    [line] = price_package(c, billing_period="MONTHLY", country="JP", name="Pro")
    assert (line.currency, line.sub_total, str(line.sub_total)) == ("jpy", D(1500), "1500")
    [line] = price_package(c, billing_period="MONTHLY", country="US", name="Pro")
    assert (line.currency, line.sub_total) == ("usd", D("10.00"))


# --- billing models ----------------------------------------------------------------------

def test_flat_fee():
    c = charges({"billingModel": "FLAT_FEE", "pricePeriods": [period("29.99"),
                                                               period("299", billing="ANNUALLY")]})
    [line] = price_package(c, billing_period="MONTHLY", name="Pro", package_id="pro")
    assert (line.description, line.quantity, line.unit_price, line.sub_total) == (
        "Pro", D(1), D("29.99"), D("29.99"))
    assert line.recurring and not line.in_arrears and line.package_id == "pro"
    [line] = price_package(c, billing_period="ANNUALLY", name="Pro")
    assert line.sub_total == D("299.00")


@pytest.mark.parametrize("quantities, expected_qty, expected", [
    (Quantities(unit_quantity=D(3)), 3, "29.97"),                     # 3 × 9.99 = 29.97
    # the feature's own quantity wins: 5 × 9.99
    (Quantities(unit_quantity=D(3), features={"seats": D(5)}), 5, "49.95"),
    (Quantities(), 2, "19.98"),                                       # minUnitQuantity 2 × 9.99
])
def test_per_unit(quantities, expected_qty, expected):
    c = charges({"billingModel": "PER_UNIT", "featureId": "seats", "minUnitQuantity": 2,
                 "maxUnitQuantity": 10, "pricePeriods": [period("9.99")]})
    [line] = price_package(c, billing_period="MONTHLY", name="Team", quantities=quantities)
    assert line.description == "Team – seats"
    assert (line.quantity, line.unit_price, line.sub_total) == (D(expected_qty), D("9.99"),
                                                                D(expected))


@pytest.mark.parametrize("quantities, field", [
    (Quantities(unit_quantity=D(1)), "unitQuantity"),                # below min 2
    (Quantities(unit_quantity=D(11)), "unitQuantity"),               # above max 10
    (Quantities(features={"seats": D(11)}), "billableFeatures"),
    (Quantities(unit_quantity=D(-1)), "unitQuantity"),
])
def test_per_unit_bounds_name_the_field(quantities, field):
    c = charges({"billingModel": "PER_UNIT", "featureId": "seats", "minUnitQuantity": 2,
                 "maxUnitQuantity": 10, "pricePeriods": [period("9.99")]})
    with pytest.raises(PricingError) as exc:
        price_package(c, billing_period="MONTHLY", quantities=quantities)
    assert exc.value.field == field


def test_per_unit_sub_cent_unit_price_rounds_once_per_line():
    # 333 × 0.015 = 4.995 → 5.00 (half away from zero); rounding the unit price first
    # would have given 333 × 0.02 = 6.66.
    c = charges({"billingModel": "PER_UNIT", "featureId": "calls",
                 "pricePeriods": [period("0.015")]})
    [line] = price_package(c, billing_period="MONTHLY", quantities=Quantities(unit_quantity=D(333)))
    assert (line.unit_price, line.sub_total) == (D("0.015"), D("5.00"))


VOLUME_TIERS = [tier(10, "5"), tier(50, "4", flat="10"), tier(None, "3", flat="20")]


@pytest.mark.parametrize("quantity, expected", [
    (0, "0"),      # nothing bought, nothing billed (no flat price either)
    (1, "5"),      # tier 1: 1 × 5
    (10, "50"),    # upTo is inclusive: 10 × 5
    (11, "54"),    # tier 2: 11 × 4 + 10 = 54
    (50, "210"),   # tier 2: 50 × 4 + 10 = 210
    (51, "173"),   # tier 3: 51 × 3 + 20 = 173 (volume: cheaper than 50!)
    (100, "320"),  # 100 × 3 + 20
])
def test_volume_tiers(quantity, expected):
    tiers, _ = parse_tiers(VOLUME_TIERS)
    assert tier_amount(tiers, "VOLUME", quantity) == Fraction(D(expected))
    c = charges({"billingModel": "PER_UNIT", "featureId": "seats", "tiersMode": "VOLUME",
                 "pricePeriods": [period(tiers=VOLUME_TIERS)]})
    lines = price_package(c, billing_period="MONTHLY",
                          quantities=Quantities(unit_quantity=D(quantity)))
    assert total(lines) == D(expected)


GRADUATED_TIERS = [tier(10, "5"), tier(50, "4", flat="10"), tier(None, "3", flat="20")]


@pytest.mark.parametrize("quantity, expected", [
    (0, "0"),
    (1, "5"),       # 1 × 5
    (10, "50"),     # 10 × 5
    (11, "64"),     # 10 × 5 + (1 × 4 + 10) = 50 + 14
    (50, "220"),    # 50 + (40 × 4 + 10) = 50 + 170
    (51, "243"),    # 220 + (1 × 3 + 20) = 243
    (100, "390"),   # 220 + (50 × 3 + 20) = 220 + 170
])
def test_graduated_tiers(quantity, expected):
    tiers, _ = parse_tiers(GRADUATED_TIERS)
    assert tier_amount(tiers, "GRADUATED", quantity) == Fraction(D(expected))
    c = charges({"billingModel": "PER_UNIT", "featureId": "seats", "tiersMode": "GRADUATED",
                 "pricePeriods": [period(tiers=GRADUATED_TIERS)]})
    lines = price_package(c, billing_period="MONTHLY", name="Team",
                          quantities=Quantities(unit_quantity=D(quantity)))
    assert total(lines) == D(expected)
    for line in lines:  # every line is quantity × unit price, rounded once
        assert line.sub_total == round_money(line.quantity * line.unit_price, "usd")


def test_graduated_lines_name_the_tiers():
    c = charges({"billingModel": "PER_UNIT", "featureId": "seats", "tiersMode": "GRADUATED",
                 "pricePeriods": [period(tiers=GRADUATED_TIERS)]})
    lines = price_package(c, billing_period="MONTHLY", name="Team",
                          quantities=Quantities(unit_quantity=D(12)))
    assert [(ln.description, ln.quantity, ln.unit_price, ln.sub_total) for ln in lines] == [
        ("Team – seats (tier 1)", D(10), D(5), D("50.00")),
        ("Team – seats (tier 2)", D(2), D(4), D("8.00")),
        ("Team – seats (tier 2) flat fee", D(1), D(10), D("10.00")),
    ]  # 50 + 8 + 10 = 68


def test_bounded_last_tier_bills_the_rest_at_its_price():
    tiers, _ = parse_tiers([tier(10, "2"), tier(20, "1")])
    assert tier_amount(tiers, "GRADUATED", 25) == 10 * 2 + 15 * 1  # 35
    assert tier_amount(tiers, "VOLUME", 25) == 25 * 1              # 25


def test_block_size():
    # 2,500 API calls in blocks of 1,000 at 3.00 a block: ceil(2.5) = 3 blocks → 9.00
    c = charges({"billingModel": "USAGE_BASED", "featureId": "calls",
                 "pricePeriods": [period("3", block=1000)]})
    [line] = price_package(c, billing_period="MONTHLY", quantities=Quantities(
        features={"calls": D(2500)}))
    assert (line.quantity, line.sub_total, line.in_arrears) == (D(3), D("9.00"), True)
    # exactly 2,000 calls: 2 blocks → 6.00
    [line] = price_package(c, billing_period="MONTHLY", quantities=Quantities(
        features={"calls": D(2000)}))
    assert line.sub_total == D("6.00")


def test_usage_based_without_usage_bills_nothing():
    c = charges({"billingModel": "USAGE_BASED", "featureId": "calls",
                 "pricePeriods": [period("0.01")]})
    assert price_package(c, billing_period="MONTHLY") == []
    # 1,234.5 GB at 0.01 = 12.345 → 12.35
    [line] = price_package(c, billing_period="MONTHLY",
                           quantities=Quantities(features={"calls": D("1234.5")}))
    assert line.sub_total == D("12.35")


def test_credit_based_top_up():
    c = charges({"billingModel": "CREDIT_BASED", "topUpCustomCurrencyId": "tokens",
                 "minUnitQuantity": 100, "maxUnitQuantity": 10000,
                 "pricePeriods": [period("0.002")]})
    # 5,000 tokens × 0.002 = 10.00
    [line] = price_package(c, billing_period="MONTHLY", name="Pro",
                           quantities=Quantities(credits={"tokens": D(5000)}))
    assert (line.description, line.sub_total) == ("Pro – tokens", D("10.00"))
    # none asked: the minimum purchase, 100 × 0.002 = 0.20
    [line] = price_package(c, billing_period="MONTHLY")
    assert line.sub_total == D("0.20")
    with pytest.raises(PricingError) as exc:
        price_package(c, billing_period="MONTHLY", quantities=Quantities(credits={"tokens": D(50)}))
    assert exc.value.field == "charges"


def test_add_on_quantity_multiplies_and_one_off_is_marked():
    c = charges({"billingModel": "FLAT_FEE", "pricePeriods": [period("4.50")]},
                {"billingModel": "FLAT_FEE", "billingCadence": "ONE_OFF",
                 "pricePeriods": [period("25")]})
    recurring, setup = price_package(c, billing_period="MONTHLY", name="Extra", multiplier=3)
    assert (recurring.quantity, recurring.sub_total, recurring.recurring) == (
        D(3), D("13.50"), True)  # 3 × 4.50
    assert (setup.sub_total, setup.recurring) == (D("75.00"), False)  # 3 × 25


def test_zero_decimal_currency_rounds_to_whole_units():
    # 7 seats × ¥333.5 = ¥2,334.5 → ¥2,335
    c = charges({"billingModel": "PER_UNIT", "featureId": "seats",
                 "pricePeriods": [period("333.5", currency="jpy")]})
    [line] = price_package(c, billing_period="MONTHLY", quantities=Quantities(unit_quantity=D(7)))
    assert str(line.sub_total) == "2335"
    # 10% off ¥2,335 = ¥233.5 → ¥234; tax 10% of ¥2,101 = ¥210.1 → ¥210; total 2,311
    inv = build_invoice([line], "jpy", coupon=Coupon("PERCENTAGE", percent_off=D(10)),
                        tax_rate=D(10))
    assert (inv.sub_total, inv.discount, inv.tax, inv.total) == (D(2335), D(234), D(210), D(2311))
    # three decimals: 3 × 1.2345 kwd = 3.7035 → 3.704
    c = charges({"billingModel": "PER_UNIT", "featureId": "seats",
                 "pricePeriods": [period("1.2345", currency="kwd")]})
    [line] = price_package(c, billing_period="MONTHLY", quantities=Quantities(unit_quantity=D(3)))
    assert str(line.sub_total) == "3.704"


def test_mixed_currencies_are_refused():
    lines = [Line("a", D(1), D(1), D("1.00"), "usd"), Line("b", D(1), D(1), D("1.00"), "eur")]
    with pytest.raises(PricingError):
        invoice_currency(lines)
    assert invoice_currency([]) == "usd"


def test_minimum_spend():
    c = charges(minimum=[{"billingPeriod": "MONTHLY", "minimum": money("50")}])
    line = minimum_spend_line(c, "MONTHLY", D("35.50"), "usd")
    assert (line.sub_total, line.unit_price) == (D("14.50"), D("14.50"))  # 50 − 35.50
    assert minimum_spend_line(c, "MONTHLY", D("50.00"), "usd") is None
    assert minimum_spend_line(c, "ANNUALLY", D("1"), "usd") is None


# --- coupons, tax, invoices ------------------------------------------------------------

def test_coupon_documents_and_ad_hoc_discounts():
    pct = coupon_from_doc({"id": "SAVE15", "name": "Save 15", "type": "PERCENTAGE",
                           "percentOff": 15, "amountsOff": None, "duration": "REPEATING",
                           "durationInMonths": 3})
    assert (pct.type, pct.percent_off, pct.duration, pct.duration_in_months, pct.code) == (
        "PERCENTAGE", D(15), "REPEATING", 3, "SAVE15")
    # coupons.py stores fixed amounts as 10^-5 units: 999000 = 9.99
    fixed = coupon_from_doc({"id": "FIVE", "name": "Five off", "type": "FIXED", "percentOff": None,
                             "amountsOff": [{"amount": 999_000, "currency": "usd"},
                                            {"amount": 850_000, "currency": "eur"}],
                             "duration": "ONCE", "durationInMonths": None})
    assert fixed.amounts_off == {"usd": D("9.99"), "eur": D("8.5")}
    adhoc = coupon_from_discount({"percentOff": 12.5, "durationInMonths": 2, "name": "Launch"})
    assert (adhoc.percent_off, adhoc.duration, adhoc.duration_in_months, adhoc.name) == (
        D("12.5"), "REPEATING", 2, "Launch")
    with pytest.raises(PricingError):
        coupon_from_discount({})
    with pytest.raises(PricingError):
        coupon_from_discount({"percentOff": 0})


@pytest.mark.parametrize("discount, field", [
    ({"amountsOff": [{"amount": D("1e5000"), "currency": "usd"}]},
     "appliedCoupon.discount.amountsOff[0].amount"),
    ({"amountsOff": [{"amount": 10**12 + 1, "currency": "usd"}]},
     "appliedCoupon.discount.amountsOff[0].amount"),
    ({"amountsOff": [{"amount": 5, "currency": "usd"}, {"amount": 5, "currency": "dollars"}]},
     "appliedCoupon.discount.amountsOff[1].currency"),
    ({"percentOff": 10, "durationInMonths": D("1e5000")},
     "appliedCoupon.discount.durationInMonths"),
    ({"percentOff": 10, "durationInMonths": 121}, "appliedCoupon.discount.durationInMonths"),
])
def test_ad_hoc_discount_bounds_name_the_field(discount, field) -> None:
    with pytest.raises(MoneyError) as err:  # PricingError, or money's for a currency
        coupon_from_discount(discount)
    assert err.value.field == field
    top = coupon_from_discount({"amountsOff": [{"amount": 10**12, "currency": "USD"}],
                                "durationInMonths": 120})
    assert (top.amounts_off, top.duration_in_months) == ({"usd": D(10**12)}, 120)


@pytest.mark.parametrize("coupon, sub_total, currency, expected", [
    (Coupon("PERCENTAGE", percent_off=D(15)), "29.99", "usd", "4.50"),   # 4.4985 → 4.50
    (Coupon("PERCENTAGE", percent_off=D("12.5")), "10.00", "usd", "1.25"),
    (Coupon("PERCENTAGE", percent_off=D(100)), "10.00", "usd", "10.00"),
    (Coupon("FIXED", amounts_off={"usd": D("9.99")}), "29.99", "usd", "9.99"),
    (Coupon("FIXED", amounts_off={"usd": D("50")}), "29.99", "usd", "29.99"),  # capped
    (Coupon("FIXED", amounts_off={"eur": D("5")}), "29.99", "usd", "0.00"),    # no usd amount
    (Coupon("FIXED", amounts_off={"jpy": D("500")}), "1200", "jpy", "500"),
    (None, "29.99", "usd", "0.00"),
])
def test_discount_amount(coupon, sub_total, currency, expected):
    assert discount_amount(coupon, D(sub_total), currency) == D(expected)


def test_coupon_duration():
    once = Coupon("PERCENTAGE", percent_off=D(10), duration="ONCE")
    three = Coupon("PERCENTAGE", percent_off=D(10), duration="REPEATING", duration_in_months=3)
    forever = Coupon("PERCENTAGE", percent_off=D(10))
    assert coupon_applies(once, months_elapsed=0, first_invoice=True)
    assert not coupon_applies(once, months_elapsed=1, first_invoice=False)
    assert [coupon_applies(three, months_elapsed=m, first_invoice=m == 0) for m in range(5)] == [
        True, True, True, False, False]
    assert coupon_applies(forever, months_elapsed=240, first_invoice=False)


def test_months_between():
    assert months_between(JAN_1_2026, JAN_1_2026) == 0
    assert months_between(JAN_1_2026, FEB_1_2026 - 1) == 0
    assert months_between(JAN_1_2026, FEB_1_2026) == 1
    jan31 = JAN_1_2026 + 30 * DAY
    feb28 = FEB_1_2026 + 27 * DAY
    assert months_between(jan31, feb28) == 1  # the day clamps to February's end
    assert months_between(jan31, feb28 - 1) == 0
    assert months_between(JAN_1_2026, JAN_1_2026 + 365 * DAY) == 12


def test_tax_rates_setting():
    rates = parse_tax_rates("DE=19, gb=20,eu=21.5")
    assert rates == {"DE": D(19), "GB": D(20), "EU": D("21.5")}
    assert tax_rate_for(rates, "de") == D(19)
    assert tax_rate_for(rates, "US") is None and tax_rate_for(rates, None) is None
    assert parse_tax_rates("") == {} and parse_tax_rates(None) == {}
    for bad in ("DE", "DE=x", "DE=101", "DE=-1", "DE=1,DE=2", "=5"):
        with pytest.raises(ValueError):
            parse_tax_rates(bad)


@pytest.mark.parametrize("taxable, rate, currency, expected", [
    ("100.00", "19", "usd", "19.00"),
    ("29.99", "19", "usd", "5.70"),    # 5.6981 → 5.70
    ("10.05", "10", "usd", "1.01"),    # 1.005 → 1.01 (half away from zero)
    ("-10.05", "10", "usd", "-1.01"),  # a credit gives tax back
    ("999", "8.25", "jpy", "82"),      # 82.4175 → 82
    ("1.000", "5", "kwd", "0.050"),
])
def test_tax_amount(taxable, rate, currency, expected):
    assert tax_amount(D(taxable), D(rate), currency) == D(expected)


def test_invoice_totals_worked_example():
    # Pro 29.99 + 3 seats × 9.99 (29.97) = 59.96; SAVE15: 15% of 59.96 = 8.994 → 8.99;
    # taxable 50.97; DE 19%: 9.6843 → 9.68; total 50.97 + 9.68 = 60.65
    c = charges({"billingModel": "FLAT_FEE", "pricePeriods": [period("29.99")]},
                {"billingModel": "PER_UNIT", "featureId": "seats",
                 "pricePeriods": [period("9.99")]})
    lines = price_package(c, billing_period="MONTHLY", name="Pro",
                          quantities=Quantities(unit_quantity=D(3)))
    inv = build_invoice(lines, "usd", coupon=Coupon("PERCENTAGE", percent_off=D(15)),
                        tax_rate=D(19))
    assert (inv.sub_total, inv.discount, inv.total_excluding_tax, inv.tax, inv.total) == (
        D("59.96"), D("8.99"), D("50.97"), D("9.68"), D("60.65"))
    assert inv.coupon is not None
    plain = build_invoice(lines, "usd")
    assert (plain.discount, plain.tax, plain.total, plain.coupon) == (
        D("0.00"), D("0.00"), D("59.96"), None)


# --- proration -------------------------------------------------------------------------

def test_proration_worked_examples():
    start, end = JAN_1_2026, FEB_1_2026  # 31 days
    # Upgrade 10.00 → 31.00 after 10 days: 21/31 remains.
    # credit 10 × 21/31 = 6.774… → 6.77; debit 31 × 21/31 = 21.00; net 14.23
    p = prorate(D("10.00"), D("31.00"), start_ms=start, end_ms=end, at_ms=start + 10 * DAY,
                currency="usd")
    assert (p.credit, p.debit, p.net_amount) == (D("6.77"), D("21.00"), D("14.23"))
    assert p.proration_date_ms == start + 10 * DAY
    # Downgrade 31.00 → 10.00 at the same time: net −14.23
    p = prorate(D("31.00"), D("10.00"), start_ms=start, end_ms=end, at_ms=start + 10 * DAY,
                currency="usd")
    assert p.net_amount == D("-14.23")
    # Half a 30-day period of ¥1,001: 500.5 → ¥501 (rounded once, away from zero)
    assert prorated(D(1001), 0, 30 * DAY, 15 * DAY, "jpy") == D(501)
    # At the start the whole price, at (or past) the end nothing, before the start all of it.
    assert prorated(D("9.99"), start, end, start, "usd") == D("9.99")
    assert prorated(D("9.99"), start, end, end, "usd") == D("0.00")
    assert prorated(D("9.99"), start, end, start - DAY, "usd") == D("9.99")
    # One millisecond in: the exact fraction, not a day count: 9.99 × (P−1)/P → 9.99
    assert remaining_fraction(start, end, start + 1) == Fraction(31 * DAY - 1, 31 * DAY)
    with pytest.raises(ValueError):
        remaining_fraction(end, start, start)


# --- properties --------------------------------------------------------------------------

CURRENCIES = st.sampled_from(["usd", "eur", "jpy", "krw", "kwd", "bhd", "gbp"])
PRICES = st.decimals(min_value=0, max_value=100_000, places=3, allow_nan=False,
                     allow_infinity=False)


@st.composite
def period_and_moment(draw):
    start = draw(st.integers(min_value=0, max_value=4_000_000_000_000))
    length = draw(st.integers(min_value=1, max_value=400 * DAY))
    at = draw(st.integers(min_value=start - DAY, max_value=start + length + DAY))
    return start, start + length, at


@settings(max_examples=300, deadline=None)
@given(price=PRICES, currency=CURRENCIES, window=period_and_moment())
def test_an_update_that_changes_nothing_costs_nothing(price, currency, window):
    start, end, at = window
    amount = round_money(price, currency)
    p = prorate(amount, amount, start_ms=start, end_ms=end, at_ms=at, currency=currency)
    assert p.net_amount == 0 and p.credit == p.debit


@settings(max_examples=300, deadline=None)
@given(old=PRICES, new=PRICES, currency=CURRENCIES, window=period_and_moment())
def test_proration_is_bounded_by_the_period_prices(old, new, currency, window):
    start, end, at = window
    old_price, new_price = round_money(old, currency), round_money(new, currency)
    p = prorate(old_price, new_price, start_ms=start, end_ms=end, at_ms=at, currency=currency)
    assert 0 <= p.credit <= old_price
    assert 0 <= p.debit <= new_price
    assert p.net_amount == p.debit - p.credit
    assert start <= p.proration_date_ms <= end


line_amounts = st.lists(PRICES, min_size=0, max_size=6)
coupons = st.one_of(
    st.none(),
    st.builds(lambda p: Coupon("PERCENTAGE", percent_off=p),
              st.decimals(min_value="0.01", max_value=100, places=2)),
    st.builds(lambda a, c: Coupon("FIXED", amounts_off={c: a}),
              st.decimals(min_value="0.01", max_value=200_000, places=3), CURRENCIES),
)
rates = st.one_of(st.none(), st.decimals(min_value=0, max_value=100, places=3))


@settings(max_examples=300, deadline=None)
@given(amounts=line_amounts, currency=CURRENCIES, coupon=coupons, rate=rates)
def test_invoice_totals_are_exact_and_discount_never_exceeds_the_subtotal(
        amounts, currency, coupon, rate):
    lines = [Line(f"l{i}", D(1), a, round_money(a, currency), currency)
             for i, a in enumerate(amounts)]
    inv = build_invoice(lines, currency, coupon=coupon, tax_rate=rate)
    assert inv.sub_total == sum((ln.sub_total for ln in lines), D(0))
    assert 0 <= inv.discount <= inv.sub_total
    assert inv.total_excluding_tax == inv.sub_total - inv.discount
    assert inv.total == inv.sub_total - inv.discount + inv.tax
    for amount in (inv.sub_total, inv.discount, inv.tax, inv.total):
        assert amount == round_money(amount, currency)  # already in minor units
    if rate is None:
        assert inv.tax == 0


TIER_LISTS = st.lists(
    st.tuples(st.integers(min_value=1, max_value=50), PRICES, PRICES), min_size=1, max_size=4)


@settings(max_examples=200, deadline=None)
@given(raw=TIER_LISTS, quantity=st.integers(min_value=0, max_value=500))
def test_graduated_tiers_are_monotone_and_split_into_exact_lines(raw, quantity):
    bound, tiers_json = 0, []
    for width, unit, flat in raw:
        bound += width
        tiers_json.append(tier(bound, str(unit), str(flat)))
    tiers_json[-1]["upTo"] = None
    tiers, _ = parse_tiers(tiers_json)
    amount = tier_amount(tiers, "GRADUATED", quantity)
    assert amount <= tier_amount(tiers, "GRADUATED", quantity + 1)
    c = charges({"billingModel": "PER_UNIT", "featureId": "f", "tiersMode": "GRADUATED",
                 "pricePeriods": [period(tiers=tiers_json)]})
    lines = price_package(c, billing_period="MONTHLY",
                          quantities=Quantities(unit_quantity=D(quantity)))
    if all(t.unit_price > 0 for t in tiers):  # the tier lines share out the whole quantity
        assert sum((ln.quantity for ln in lines if not ln.description.endswith("flat fee")),
                   D(0)) == quantity
    assert abs(total(lines) - round_money(tier_amount(tiers, "GRADUATED", quantity), "usd")) <= (
        D("0.01") * len(lines))  # per-line rounding stays within a cent a line
