"""Proration of a change made at time t inside the billing period [start, end) (pure).

When a subscription changes at `t`, the customer gets back the unused part of what the old
recurring price paid for, and pays the new price for the rest of the period:

    remaining = (end − t) / (end − start)        exact Fraction of milliseconds
    credit    = round_money(old_price × remaining)
    debit     = round_money(new_price × remaining)
    netAmount = debit − credit                   (exact: both are already rounded)

Each of credit and debit is rounded exactly once, at the end, half away from zero to the
currency's minor units (`money.round_money`); the remaining fraction and the products stay
exact rationals until then. Hence an update that changes nothing (old = new) nets exactly
0, and 0 ≤ credit ≤ old price, 0 ≤ debit ≤ new price for non-negative prices (rounding to
the minor unit cannot leave [0, price] when the price is itself in minor units).

`t` before the start prorates nothing away (remaining = 1); at or after the end, nothing
remains (remaining = 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction

from engine.billing.money import round_money

__all__ = ["Proration", "remaining_fraction", "prorated", "prorate"]


@dataclass(frozen=True)
class Proration:
    proration_date_ms: int
    credit: Decimal
    debit: Decimal
    net_amount: Decimal
    currency: str


def remaining_fraction(start_ms: int, end_ms: int, at_ms: int) -> Fraction:
    """The unused share of [start, end) at `at_ms`, clamped to [0, 1]."""
    if end_ms <= start_ms:
        raise ValueError("a billing period must end after it starts")
    at = min(max(at_ms, start_ms), end_ms)
    return Fraction(end_ms - at, end_ms - start_ms)


def prorated(amount: Decimal, start_ms: int, end_ms: int, at_ms: int,
             currency: str) -> Decimal:
    """The part of a period's amount for the rest of the period, rounded once."""
    return round_money(Fraction(amount) * remaining_fraction(start_ms, end_ms, at_ms),
                       currency)


def prorate(old_price: Decimal, new_price: Decimal, *, start_ms: int, end_ms: int,
            at_ms: int, currency: str) -> Proration:
    """Credit for the old price's unused part, debit for the new price's rest, net."""
    remaining = remaining_fraction(start_ms, end_ms, at_ms)
    credit = round_money(Fraction(old_price) * remaining, currency)
    debit = round_money(Fraction(new_price) * remaining, currency)
    return Proration(proration_date_ms=min(max(at_ms, start_ms), end_ms), credit=credit,
                     debit=debit, net_amount=debit - credit, currency=currency)
