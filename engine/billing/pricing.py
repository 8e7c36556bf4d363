"""Prices of plans and add-ons, coupon discounts, tax and invoice totals (pure).

Input: a package's stored `charges` (the design's shape, money amounts as decimal strings):
``{"pricingType", "pricingModels": [{"billingModel", "billingCadence", "featureId",
"tiersMode", "minUnitQuantity", "maxUnitQuantity", "topUpCustomCurrencyId", "pricePeriods":
[{"billingPeriod", "billingCountryCode", "price": {"amount", "currency"}, "tiers": [{"upTo",
"unitPrice", "flatPrice"}], "blockSize"}]}], "minimumSpend": [{"billingPeriod", "minimum"}]}``.

Price period. For each pricing model, the price periods of the asked billing period
(MONTHLY | ANNUALLY) are looked at: one whose `billingCountryCode` equals the billing
country (case-insensitive; "eu" is a code like any other) wins, else the one without a
country code (the default price). A model with neither is not offered for that billing
period and adds nothing.

Billing models (the quantity each one bills):
- FLAT_FEE: one unit at `price.amount`.
- PER_UNIT: the feature's quantity (`Quantities.features[featureId]`), else the
  subscription's `unitQuantity`, else `minUnitQuantity`, else 1; must lie within
  [minUnitQuantity, maxUnitQuantity].
- USAGE_BASED: the billable feature quantity given (0 if none); billed in arrears
  (`Line.in_arrears`), so the caller leaves it off an invoice due now.
- CREDIT_BASED: credits bought of `topUpCustomCurrencyId` (`Quantities.credits[id]`, else
  `minUnitQuantity`, else 0) at `price.amount` per credit, within [min, max].
- MINIMUM_SPEND models add no line; `charges.minimumSpend` is applied by
  `minimum_spend_line` instead.
`blockSize` S bills ceil(quantity / S) blocks at the price of one block. Tiers (PER_UNIT,
USAGE_BASED, CREDIT_BASED) replace `price`: VOLUME bills every unit at the unit price of
the tier the whole quantity falls in, plus that tier's flat price; GRADUATED bills the units
inside each tier at that tier's unit price, plus the flat price of every tier reached.
A tier's `upTo` is inclusive; the last tier's `upTo` is null (no bound). A quantity of 0
bills nothing (no flat price either). With a block size, tiers count blocks.
`billingCadence` ONE_OFF lines are marked `recurring=False` (charged once, never prorated).

Rounding (see `money`): a line's `subTotal` is `round_money(quantity × unitPrice)` — one
rounding per line, unit prices keep every decimal they were set with. An invoice's
`subTotal` is the exact sum of its lines; `discount` is rounded once (a percentage of the
subtotal, or the fixed amount in the invoice currency) and never exceeds the subtotal;
`tax` is rounded once on `subTotal − discount` (exclusive tax, rate in percent per
billing country); `total = subTotal − discount + tax` exactly.

Coupons: `coupon_from_doc` reads a document written by gateway/routes/coupons.py (fixed
amounts stored as integer 10^-5 units), `coupon_from_discount` an ad-hoc
`appliedCoupon.discount`. Duration: ONCE discounts the first invoice only, REPEATING N
discounts invoices that start within N months of the coupon's start, FOREVER all.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from typing import Any, Iterable, Literal, Mapping, Sequence

from engine.billing.money import (
    MoneyError,
    normalize_currency,
    round_money,
    to_decimal,
    to_fraction,
    zero,
)
from engine.billing.periods import add_months
from engine.core.amounts import AMOUNT_UNITS_MAX, SCALE

__all__ = [
    "DEFAULT_CURRENCY",
    "DISCOUNT_AMOUNT_MAX",
    "DURATION_MONTHS_MAX",
    "PricingError",
    "Quantities",
    "Line",
    "Tier",
    "Coupon",
    "Invoice",
    "select_price_period",
    "parse_tiers",
    "tier_amount",
    "price_package",
    "invoice_currency",
    "minimum_spend_line",
    "coupon_from_doc",
    "coupon_from_discount",
    "coupon_applies",
    "months_between",
    "discount_amount",
    "parse_tax_rates",
    "tax_rate_for",
    "tax_amount",
    "build_invoice",
]

DEFAULT_CURRENCY = "usd"
_COUPON_UNIT_SCALE = 10**5  # gateway/routes/coupons.py stores amountsOff as 10^-5 units
# Coupon bounds, the same for stored coupons (gateway/routes/coupons.py) and ad-hoc
# discounts: an amount off is at most what any amount of the API may be (10^12), a
# repeating discount lasts 1 to 120 months.
DISCOUNT_AMOUNT_MAX = AMOUNT_UNITS_MAX // SCALE
DURATION_MONTHS_MAX = 120


class PricingError(MoneyError):
    """A price that cannot be computed from what was asked (400 naming `field`)."""


@dataclass(frozen=True)
class Quantities:
    """What a subscription buys: `unit_quantity` (the contract's unitQuantity), per-feature
    quantities (billableFeatures and FEATURE charges) and credits bought (CREDIT charges)."""

    unit_quantity: Decimal | None = None
    features: Mapping[str, Decimal] = field(default_factory=dict)
    credits: Mapping[str, Decimal] = field(default_factory=dict)


@dataclass(frozen=True)
class Line:
    description: str
    quantity: Decimal
    unit_price: Decimal  # exact, as set on the plan
    sub_total: Decimal  # round_money(quantity × unit_price)
    currency: str
    billing_model: str = "FLAT_FEE"
    feature_id: str | None = None
    package_id: str | None = None
    recurring: bool = True  # False: ONE_OFF charge
    in_arrears: bool = False  # USAGE_BASED: billed at the end of the period


@dataclass(frozen=True)
class Tier:
    up_to: Fraction | None  # inclusive; None = no upper bound
    unit_price: Fraction
    flat_price: Fraction


@dataclass(frozen=True)
class Coupon:
    type: Literal["PERCENTAGE", "FIXED"]
    percent_off: Decimal | None = None
    amounts_off: Mapping[str, Decimal] = field(default_factory=dict)
    duration: Literal["ONCE", "REPEATING", "FOREVER"] = "FOREVER"
    duration_in_months: int | None = None
    name: str | None = None
    code: str | None = None  # the coupon id, None for an ad-hoc discount

    def value(self, currency: str) -> Decimal | None:
        """SubscriptionPreviewDiscount.value: the percentage, or the fixed amount in the
        invoice currency (None if the coupon has none in it)."""
        if self.type == "PERCENTAGE":
            return self.percent_off
        return self.amounts_off.get(currency.lower())


@dataclass(frozen=True)
class Invoice:
    currency: str
    lines: tuple[Line, ...]
    sub_total: Decimal
    discount: Decimal
    total_excluding_tax: Decimal
    tax: Decimal
    total: Decimal
    tax_rate: Decimal | None = None
    coupon: Coupon | None = None  # the coupon that discounted this invoice


# --- price periods and tiers -----------------------------------------------------------

def select_price_period(model: Mapping[str, Any], billing_period: str,
                        country: str | None) -> Mapping[str, Any] | None:
    """The model's price period for the billing period and country, or None."""
    default = None
    wanted = country.strip().lower() if country else None
    for period in model.get("pricePeriods") or ():
        if period.get("billingPeriod") != billing_period:
            continue
        code = period.get("billingCountryCode")
        if code:
            if wanted is not None and code.strip().lower() == wanted:
                return period
        elif default is None:
            default = period
    return default


def _money_of(value: Any, field_name: str) -> tuple[Fraction, str | None]:
    """(amount, currency or None) of a stored `{amount, currency}` (or a bare number)."""
    if isinstance(value, Mapping):
        currency = value.get("currency")
        return (to_fraction(value.get("amount"), field_name),
                normalize_currency(currency) if currency else None)
    return to_fraction(value, field_name), None


def parse_tiers(raw: Iterable[Mapping[str, Any]]) -> tuple[list[Tier], str | None]:
    """Tiers in ascending `upTo` (the unbounded one last) and their currency, if named."""
    tiers: list[Tier] = []
    currency: str | None = None
    for i, t in enumerate(raw):
        up_to = t.get("upTo")
        bound = None if up_to is None else to_fraction(up_to, f"tiers[{i}].upTo")
        unit, cur1 = (Fraction(0), None) if t.get("unitPrice") is None else _money_of(
            t["unitPrice"], f"tiers[{i}].unitPrice")
        flat, cur2 = (Fraction(0), None) if t.get("flatPrice") is None else _money_of(
            t["flatPrice"], f"tiers[{i}].flatPrice")
        for cur in (cur1, cur2):
            if cur is not None:
                if currency is not None and cur != currency:
                    raise PricingError("tiers must share one currency", "charges")
                currency = cur
        tiers.append(Tier(bound, unit, flat))
    tiers.sort(key=lambda t: (t.up_to is None, t.up_to or 0))
    if any(t.up_to is None for t in tiers[:-1]):
        raise PricingError("only the last tier may be unbounded", "charges")
    return tiers, currency


def _tier_parts(tiers: Sequence[Tier], mode: str,
                quantity: Fraction) -> list[tuple[int, Fraction, Fraction, Fraction]]:
    """[(tier index, units billed in it, unit price, flat price)] for a quantity."""
    if quantity <= 0 or not tiers:
        return []
    if mode == "VOLUME":
        for i, t in enumerate(tiers):
            if t.up_to is None or quantity <= t.up_to:
                return [(i, quantity, t.unit_price, t.flat_price)]
        last = len(tiers) - 1  # above every bound: the last tier's prices
        return [(last, quantity, tiers[last].unit_price, tiers[last].flat_price)]
    if mode != "GRADUATED":
        raise PricingError("tiersMode must be VOLUME or GRADUATED", "charges")
    parts = []
    below = Fraction(0)
    for i, t in enumerate(tiers):
        top = quantity if t.up_to is None else min(quantity, t.up_to)
        if top <= below:
            break
        parts.append((i, top - below, t.unit_price, t.flat_price))
        below = top
    if below < quantity:  # bounded last tier: the rest at its unit price
        i = len(tiers) - 1
        parts.append((i, quantity - below, tiers[i].unit_price, Fraction(0)))
    return parts


def tier_amount(tiers: Sequence[Tier], mode: str, quantity: Fraction | Decimal | int) -> Fraction:
    """Exact (unrounded) price of a quantity under tiers."""
    return sum((units * unit + flat
                for _, units, unit, flat in _tier_parts(tiers, mode, Fraction(quantity))),
               Fraction(0))


# --- package prices --------------------------------------------------------------------

def _dec(value: Fraction) -> Decimal:
    """A Fraction that is a finite decimal (quantities, prices as set) as the exact Decimal;
    any other (never produced here today) to 12 places, toward zero."""
    d, twos, fives = value.denominator, 0, 0
    while d % 2 == 0:
        d, twos = d // 2, twos + 1
    while d % 5 == 0:
        d, fives = d // 5, fives + 1
    digits = max(twos, fives) if d == 1 else 12
    q = abs(value.numerator) * 10**digits // value.denominator
    number = Decimal((1 if value < 0 else 0, tuple(int(c) for c in str(q)), -digits))
    return number.normalize() if digits else number


def _quantity(value: Any, field_name: str) -> Fraction:
    q = to_fraction(value, field_name)
    if q < 0:
        raise PricingError("must not be negative", field_name)
    return q


def _bounded(model: Mapping[str, Any], q: Fraction, field_name: str) -> Fraction:
    low = model.get("minUnitQuantity")
    high = model.get("maxUnitQuantity")
    if low is not None and q < to_fraction(low):
        raise PricingError(f"must be at least {low}", field_name)
    if high is not None and q > to_fraction(high):
        raise PricingError(f"must be at most {high}", field_name)
    return q


def _model_quantity(model: Mapping[str, Any], kind: str,
                    quantities: Quantities) -> tuple[Fraction, str]:
    feature_id = model.get("featureId")
    if kind == "FLAT_FEE":
        return Fraction(1), "charges"
    if kind == "PER_UNIT":
        if feature_id and feature_id in quantities.features:
            q = _quantity(quantities.features[feature_id], "billableFeatures")
            return _bounded(model, q, "billableFeatures"), "billableFeatures"
        if quantities.unit_quantity is not None:
            q = _quantity(quantities.unit_quantity, "unitQuantity")
        else:
            low = model.get("minUnitQuantity")
            q = Fraction(1) if low is None else _quantity(low, "unitQuantity")
        return _bounded(model, q, "unitQuantity"), "unitQuantity"
    if kind == "USAGE_BASED":
        raw = quantities.features.get(feature_id) if feature_id else None
        return (Fraction(0) if raw is None else _quantity(raw, "billableFeatures"),
                "billableFeatures")
    if kind == "CREDIT_BASED":
        currency_id = model.get("topUpCustomCurrencyId")
        raw = quantities.credits.get(currency_id) if currency_id else None
        if raw is None:
            low = model.get("minUnitQuantity")
            q = Fraction(0) if low is None else _quantity(low, "charges")
            return q, "charges"
        return _bounded(model, _quantity(raw, "charges"), "charges"), "charges"
    raise PricingError(f"unknown billingModel {kind!r}", "charges")


def _ceil(value: Fraction) -> Fraction:
    return Fraction(-(-value.numerator // value.denominator))


def price_package(charges: Mapping[str, Any] | None, *, billing_period: str,
                  country: str | None = None, quantities: Quantities = Quantities(),
                  name: str = "", package_id: str | None = None,
                  multiplier: int | Decimal = 1) -> list[Line]:
    """Invoice lines of one package for one full billing period.

    `multiplier` is the add-on quantity: every line's quantity is multiplied by it.
    Lines of zero quantity are left out. Raises PricingError (field named) on a quantity
    outside the model's bounds or malformed charges.
    """
    if not charges:
        return []
    times = to_fraction(multiplier)
    lines: list[Line] = []
    for model in charges.get("pricingModels") or ():
        kind = model.get("billingModel") or "FLAT_FEE"
        if kind == "MINIMUM_SPEND":
            continue
        period = select_price_period(model, billing_period, country)
        if period is None:
            continue
        quantity, _ = _model_quantity(model, kind, quantities)
        feature_id = model.get("featureId")
        label = name
        if kind in ("PER_UNIT", "USAGE_BASED") and feature_id:
            label = f"{name} – {feature_id}" if name else feature_id
        elif kind == "CREDIT_BASED":
            cid = model.get("topUpCustomCurrencyId") or "credits"
            label = f"{name} – {cid}" if name else cid
        block = period.get("blockSize")
        block_size = None if block in (None, 0) else to_fraction(block, "blockSize")
        if block_size is not None and block_size < 0:
            raise PricingError("blockSize must be positive", "charges")
        if block_size is not None and kind != "FLAT_FEE":
            billed = _ceil(quantity / block_size)
            label = f"{label} (blocks of {_dec(block_size)})"
        else:
            billed = quantity
        common = dict(billing_model=kind, feature_id=feature_id, package_id=package_id,
                      recurring=(model.get("billingCadence") or "RECURRING") != "ONE_OFF",
                      in_arrears=kind == "USAGE_BASED")
        raw_tiers = period.get("tiers")
        if raw_tiers and kind != "FLAT_FEE":
            tiers, tier_currency = parse_tiers(raw_tiers)
            price_currency = None
            if period.get("price") is not None:
                _, price_currency = _money_of(period["price"], "price")
            currency = tier_currency or price_currency or DEFAULT_CURRENCY
            mode = model.get("tiersMode") or "VOLUME"
            parts = _tier_parts(tiers, mode, billed)
            many = len(parts) > 1
            for i, units, unit, flat in parts:
                tier_label = f"{label} (tier {i + 1})" if many else label
                qty = units * times
                if unit and qty:
                    lines.append(Line(tier_label, _dec(qty), _dec(unit),
                                      round_money(qty * unit, currency), currency, **common))
                if flat and times:
                    lines.append(Line(f"{tier_label} flat fee", _dec(times), _dec(flat),
                                      round_money(times * flat, currency), currency,
                                      **common))
            continue
        if period.get("price") is None:
            raise PricingError("a price period needs a price or tiers", "charges")
        unit, currency = _money_of(period["price"], "price")
        currency = currency or DEFAULT_CURRENCY
        qty = billed * times
        if qty == 0:
            continue
        lines.append(Line(label, _dec(qty), _dec(unit), round_money(qty * unit, currency),
                          currency, **common))
    return lines


def invoice_currency(lines: Iterable[Line], default: str = DEFAULT_CURRENCY) -> str:
    """The one currency of the lines (the default when there are none)."""
    currencies = {line.currency for line in lines}
    if len(currencies) > 1:
        raise PricingError(
            f"the plan and add-ons are priced in different currencies: "
            f"{', '.join(sorted(currencies))}", "billingCountryCode")
    return currencies.pop() if currencies else default


def minimum_spend_line(charges: Mapping[str, Any] | None, billing_period: str,
                       sub_total: Decimal, currency: str) -> Line | None:
    """The line that lifts a period's subtotal to the package's minimum spend, if any."""
    for entry in (charges or {}).get("minimumSpend") or ():
        if entry.get("billingPeriod") != billing_period or entry.get("minimum") is None:
            continue
        amount, cur = _money_of(entry["minimum"], "minimumSpend")
        if (cur or currency) != currency:
            continue
        minimum = round_money(amount, currency)
        if sub_total < minimum:
            gap = minimum - sub_total
            return Line("Minimum spend adjustment", Decimal(1), gap, gap, currency,
                        billing_model="MINIMUM_SPEND")
    return None


# --- coupons ---------------------------------------------------------------------------

def coupon_from_doc(doc: Mapping[str, Any]) -> Coupon:
    """A coupon document of gateway/routes/coupons.py (fixed amounts in 10^-5 units)."""
    amounts: dict[str, Decimal] = {}
    for a in doc.get("amountsOff") or ():
        value = a["amount"]
        amount = (Decimal(value) / _COUPON_UNIT_SCALE if isinstance(value, int)
                  and not isinstance(value, bool) else to_decimal(value))
        amounts[a["currency"].lower()] = amount
    percent = doc.get("percentOff")
    kind = doc.get("type") or ("PERCENTAGE" if percent is not None else "FIXED")
    months = doc.get("durationInMonths")
    return Coupon(type=kind, percent_off=None if percent is None else to_decimal(percent),
                  amounts_off=amounts,
                  duration=doc.get("duration") or ("REPEATING" if months else "FOREVER"),
                  duration_in_months=None if months is None else int(months),
                  name=doc.get("name"), code=doc.get("id"))


def coupon_from_discount(discount: Mapping[str, Any]) -> Coupon:
    """An ad-hoc `appliedCoupon.discount` ({percentOff} or {amountsOff}, durationInMonths,
    name, description); amounts are plain decimals."""
    percent = discount.get("percentOff")
    amounts_raw = discount.get("amountsOff")
    if (percent is None) == (not amounts_raw):
        raise PricingError("give either percentOff or amountsOff",
                           "appliedCoupon.discount.percentOff")
    if percent is not None:
        p = to_decimal(percent, "appliedCoupon.discount.percentOff")
        if not 0 < p <= 100:
            raise PricingError("must be more than 0 and at most 100",
                               "appliedCoupon.discount.percentOff")
        kind: Literal["PERCENTAGE", "FIXED"] = "PERCENTAGE"
        amounts: dict[str, Decimal] = {}
    else:
        kind, p = "FIXED", None
        amounts = {}
        for i, a in enumerate(amounts_raw):
            f = f"appliedCoupon.discount.amountsOff[{i}]"
            amount = to_decimal(a.get("amount"), f"{f}.amount")
            if not 0 < amount <= DISCOUNT_AMOUNT_MAX:
                raise PricingError(f"must be more than 0 and at most {DISCOUNT_AMOUNT_MAX}",
                                   f"{f}.amount")
            amounts[normalize_currency(str(a.get("currency", "")), f"{f}.currency")] = amount
    months = discount.get("durationInMonths")
    if months is not None:
        f = "appliedCoupon.discount.durationInMonths"
        m = to_decimal(months, f)
        if m != m.to_integral_value() or not 1 <= m <= DURATION_MONTHS_MAX:
            raise PricingError(f"must be a whole number of months from 1 to "
                               f"{DURATION_MONTHS_MAX}", f)
        months = int(m)
    return Coupon(type=kind, percent_off=p, amounts_off=amounts,
                  duration="REPEATING" if months else "FOREVER", duration_in_months=months,
                  name=discount.get("name") or discount.get("description"), code=None)


def months_between(start_ms: int, at_ms: int) -> int:
    """Whole calendar months (UTC) from start to at: a month is complete on the same day
    and time of the next month, the day clamped to the month's end (`periods.add_months`).
    0 when at ≤ start."""
    if at_ms <= start_ms:
        return 0
    a, b = _dt.datetime.fromtimestamp(start_ms // 1000, _dt.timezone.utc), \
        _dt.datetime.fromtimestamp(at_ms // 1000, _dt.timezone.utc)
    months = max((b.year - a.year) * 12 + (b.month - a.month), 0)
    while months > 0 and add_months(start_ms, months) > at_ms:
        months -= 1
    while add_months(start_ms, months + 1) <= at_ms:
        months += 1
    return months


def coupon_applies(coupon: Coupon, *, months_elapsed: int, first_invoice: bool) -> bool:
    """Whether the coupon discounts an invoice starting `months_elapsed` whole months after
    the coupon's start (first_invoice: the subscription's first invoice under it)."""
    if coupon.duration == "ONCE":
        return first_invoice
    if coupon.duration == "REPEATING":
        return months_elapsed < (coupon.duration_in_months or 0)
    return True


def discount_amount(coupon: Coupon | None, sub_total: Decimal, currency: str) -> Decimal:
    """The coupon's discount on a subtotal, rounded once, within [0, subtotal]. A FIXED
    coupon without an amount in the invoice currency discounts nothing."""
    if coupon is None or sub_total <= 0:
        return zero(currency)
    if coupon.type == "PERCENTAGE":
        raw: Fraction = Fraction(sub_total) * Fraction(coupon.percent_off or 0) / 100
    else:
        fixed = coupon.amounts_off.get(currency.lower())
        raw = Fraction(0) if fixed is None else Fraction(fixed)
    amount = round_money(raw, currency)
    return min(max(amount, zero(currency)), round_money(sub_total, currency))


# --- tax -------------------------------------------------------------------------------

def parse_tax_rates(text: str | None) -> dict[str, Decimal]:
    """`"DE=19,GB=20,eu=21.5"` → {"DE": 19, "GB": 20, "EU": 21.5} (percent, exact).
    Raises ValueError naming the bad entry."""
    rates: dict[str, Decimal] = {}
    for entry in (text or "").split(","):
        entry = entry.strip()
        if not entry:
            continue
        code, sep, value = entry.partition("=")
        code = code.strip().upper()
        if not sep or not code or not code.isascii() or not code.isalnum():
            raise ValueError(f"tax rate {entry!r} is not COUNTRY=PERCENT")
        try:
            rate = to_decimal(value.strip())
        except MoneyError:
            raise ValueError(f"tax rate {entry!r}: the percent is not a number") from None
        if not 0 <= rate <= 100:
            raise ValueError(f"tax rate {entry!r}: the percent must be from 0 to 100")
        if code in rates:
            raise ValueError(f"tax rate for {code} given twice")
        rates[code] = rate
    return rates


def tax_rate_for(rates: Mapping[str, Decimal], country: str | None) -> Decimal | None:
    if not country:
        return None
    return rates.get(country.strip().upper())


def tax_amount(taxable: Decimal, rate: Decimal | None, currency: str) -> Decimal:
    """Exclusive tax on an amount, rounded once (negative on a negative amount: a credit
    gives the tax back)."""
    if rate is None:
        return zero(currency)
    return round_money(Fraction(taxable) * Fraction(rate) / 100, currency)


# --- invoices --------------------------------------------------------------------------

def build_invoice(lines: Sequence[Line], currency: str, *, coupon: Coupon | None = None,
                  tax_rate: Decimal | None = None) -> Invoice:
    """Totals of lines: subTotal (exact sum), discount, tax, total (see the module doc)."""
    sub_total = sum((line.sub_total for line in lines), zero(currency))
    discount = discount_amount(coupon, sub_total, currency)
    excluding = sub_total - discount
    tax = tax_amount(excluding, tax_rate, currency)
    return Invoice(currency=currency, lines=tuple(lines), sub_total=sub_total,
                   discount=discount, total_excluding_tax=excluding, tax=tax,
                   total=excluding + tax, tax_rate=tax_rate,
                   coupon=coupon if discount else None)
