"""Auto-recharge in the pure core (engine.core.recharge through `machine.apply`).

`Book` applies one command at a time with a fresh `Effects`, keeps every event and ledger
entry, and after every command checks each pool with `check_pool` (which also asserts that
`pool.recharge_line` is what `recharge_line()` derives) and that a pool's only
PAYMENT_PENDING recharge grant is the one its settings say is in flight.

`RechargeMachine` drives random sequences of consumptions (hard- and soft-limited pools),
grants (some expiring), settings saved with random thresholds, targets, caps, prices and
purchase bounds, payment outcomes (paid, declined, voided, confirmed out of band, or left
pending for a while) and time moving across calendar months, against a small model of the
month's spend; see its docstring for the invariants.

Amounts are integer units of 10^-5 (credits, or money for prices, caps and DOLLAR_AMOUNT
thresholds); times are epoch milliseconds.
"""

from __future__ import annotations

import math
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from engine.core import recharge
from engine.core.amounts import AMOUNT_UNITS_MAX, SCALE
from engine.core.commands import (
    AutoRechargeReply,
    ConfigureAutoRecharge,
    ConfigurePool,
    ConfirmPayment,
    Consume,
    CreateGrant,
    GetAutoRecharge,
    PendingRecharges,
    PendingRechargesReply,
    Refused,
    SettleRecharge,
    Tick,
    VoidGrant,
)
from engine.core.effects import Effects
from engine.core.idempotency import records
from engine.core.machine import apply, check_pool
from engine.core.model import (
    CustomerState,
    GrantStatus,
    GrantType,
)
from engine.core.model import (
    EventType as E,
)
from engine.core.model import (
    LedgerEventType as L,
)
from engine.core.recharge import GRANT_ID_PREFIX, add_months, grant_id_for, month_of
from engine.core.refusals import Refusal
from engine.core.replay import customer_row, grant_row, pool_row, reservation_row, restore

CUR = "credits"
C = SCALE  # one credit, or one unit of money
DAY = 86_400_000
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
FEB = 1_769_904_000_000  # 2026-02-01T00:00:00Z
MAR = 1_772_323_200_000  # 2026-03-01T00:00:00Z


def _civil_day(ms: int) -> int:
    """The day of the month (UTC) of epoch milliseconds `ms`."""
    return (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)).day


def utc_ms(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp() * 1000)


def rid(n: int, resource: str | None = None, customer: str = "cust-1") -> str:
    """The engine's grant id for the pool's n-th recharge."""
    return grant_id_for(customer, CUR, resource, n)


def pending_recharge_ids(state: CustomerState, key: tuple[str, str | None]) -> list[str]:
    return [g.id for g in state.grants.values()
            if g.id.startswith(GRANT_ID_PREFIX) and (g.currency_id, g.resource_id) == key
            and g.status is GrantStatus.PAYMENT_PENDING]


def check_in_flight(state: CustomerState) -> None:
    """A pool has at most one PAYMENT_PENDING recharge grant: the one in flight."""
    for key, pool in state.pools.items():
        r = pool.recharge
        expected = [] if r is None or r.in_flight is None else [r.in_flight]
        assert pending_recharge_ids(state, key) == expected, (key, r)
        if r is not None and r.in_flight is not None:
            g = state.grants[r.in_flight]
            assert g.cost_amount == r.in_flight_cost
            assert g.grant_type is GrantType.PAID and not g.activated


def rows(state: CustomerState):
    return (customer_row(state), [grant_row(g) for g in state.grants.values()],
            [reservation_row(r) for r in state.reservations.values()],
            [pool_row(p) for p in state.pools.values()], records(state.idempotency))


def snapshot(state: CustomerState):
    c, g, r, p, _ = rows(state)
    return c, g, r, p, sorted(state.timers), dict(state.idempotency)


def types(events) -> list[E]:
    return [e.type for e in events]


# ---------------------------------------------------------------------------------------
# Harness


class Book:
    def __init__(self, now: int = T0, customer_id: str = "cust-1") -> None:
        self.state = CustomerState(customer_id)
        self.now = now
        self.events: list = []
        self.entries: list = []

    def apply(self, cmd, at: int | None = None):
        if at is not None:
            assert at >= self.now
            self.now = at
        fx = Effects()
        reply = apply(self.state, cmd, self.now, fx)
        self.events.extend(fx.events)
        self.entries.extend(fx.entries)
        for pool in self.state.pools.values():
            check_pool(self.state, pool)
        check_in_flight(self.state)
        assert [e.seq for e in self.events] == list(range(1, len(self.events) + 1))
        if isinstance(reply, Refused):
            assert not fx and not fx.recharges, (cmd, reply)
        return reply, fx

    def ok(self, cmd, at: int | None = None):
        reply, fx = self.apply(cmd, at)
        assert not isinstance(reply, Refused), (cmd, reply)
        return reply, fx

    def refused(self, cmd, code: Refusal, field: str | None = None) -> Refused:
        before = snapshot(self.state)
        reply, fx = self.apply(cmd)
        assert isinstance(reply, Refused), reply
        assert reply.code == code.value, reply
        if field is not None:
            assert reply.field == field, reply
        assert not fx and not fx.recharges
        assert snapshot(self.state) == before
        return reply

    def grant(self, amount: int, resource: str | None = None, *, at=None, **kw):
        kw.setdefault("grant_id", f"g{len(self.state.grants) + 1}")
        kw.setdefault("grant_type", GrantType.PROMOTIONAL)
        return self.ok(CreateGrant(currency_id=CUR, resource_id=resource, amount=amount,
                                   display_name="seed", **kw), at)

    def consume(self, amount: int, resource: str | None = None, *, at=None):
        return self.ok(Consume(currency_id=CUR, resource_id=resource, amount=amount), at)

    def auto(self, resource: str | None = None, *, at=None, **kw):
        """Save auto-recharge settings: by default below 10 credits, up to 100, $0.10 each."""
        cmd = ConfigureAutoRecharge(**{
            "currency_id": CUR, "resource_id": resource, "enabled": True,
            "threshold_type": "CREDIT_AMOUNT", "threshold_value": 10 * C,
            "target_balance": 100 * C, "price": C // 10, **kw})
        return self.ok(cmd, at)

    def settle(self, grant_id: str, paid: bool = True, reason: str | None = None, *, at=None):
        return self.ok(SettleRecharge(grant_id=grant_id, paid=paid, reason=reason), at)

    def pool(self, resource: str | None = None):
        return self.state.pools[(CUR, resource)]

    def r(self, resource: str | None = None):
        return self.pool(resource).recharge

    def get(self, resource: str | None = None) -> AutoRechargeReply:
        reply, fx = self.apply(GetAutoRecharge(currency_id=CUR, resource_id=resource))
        assert isinstance(reply, AutoRechargeReply) and not fx
        return reply


def only(events, type_: E) -> list:
    return [e for e in events if e.type is type_]


# ---------------------------------------------------------------------------------------
# The line, the amount, the cost


def test_a_consumption_below_the_line_starts_one_recharge_to_the_target() -> None:
    b = Book()
    b.grant(100 * C)
    _, fx = b.auto()
    assert types(fx.events) == [E.AUTO_RECHARGE_CONFIGURATION_CHANGED]
    assert fx.events[0].details["isEnabled"] is True
    assert not fx.recharges
    assert b.pool().recharge_line == 10 * C

    _, fx = b.consume(90 * C)  # balance 10: at the line, not below it
    assert not only(fx.events, E.AUTO_RECHARGE_ATTEMPTED) and not fx.recharges
    _, fx = b.consume(1)  # 9.99999: below
    [attempted] = only(fx.events, E.AUTO_RECHARGE_ATTEMPTED)
    g = b.state.grants[rid(1)]
    assert (g.status, g.grant_type, g.amount) == (GrantStatus.PAYMENT_PENDING, GrantType.PAID,
                                                  100 * C - (10 * C - 1))
    assert g.cost_amount == math.ceil(Fraction(g.amount * (C // 10), SCALE))
    assert g.cost_currency == "usd" and g.metadata == {"autoRecharge": "true", "capped": "false"}
    assert g.expire_at is None  # no expiry while the payment is pending
    assert attempted.grant_id == rid(1) and attempted.amount == g.amount
    assert attempted.balance.current_balance == 10 * C - 1
    assert attempted.details["rechargeId"] == rid(1) and attempted.details["capped"] is False
    [request] = fx.recharges
    assert (request.customer_id, request.grant_id, request.credits, request.cost,
            request.price_currency) == ("cust-1", rid(1), g.amount, g.cost_amount, "usd")
    r = b.r()
    assert (r.in_flight, r.in_flight_cost, b.pool().recharge_line) == (rid(1), g.cost_amount, None)

    # In flight: further consumption below the line starts nothing.
    _, fx = b.consume(5 * C)
    assert not only(fx.events, E.AUTO_RECHARGE_ATTEMPTED) and not fx.recharges
    reply, _ = b.apply(PendingRecharges())
    assert isinstance(reply, PendingRechargesReply)
    assert reply.recharges == ((rid(1), CUR, None, g.amount, g.cost_amount, "usd"),)

    # Paid: the grant's whole amount lands (the balance is 5 credits short of the target
    # because of the consumption made while the payment ran).
    before = b.pool().balance
    _, fx = b.settle(rid(1))
    assert types(fx.events) == [E.GRANTED, E.AUTO_RECHARGE_SUCCEEDED]
    assert b.pool().balance == before + g.amount == 95 * C
    assert [(e.event_type, e.amount) for e in fx.entries] == [(L.CREDITS_GRANTED, g.amount)]
    assert b.state.grants[rid(1)].status is GrantStatus.ACTIVE
    assert (b.r().in_flight, b.r().spent, b.pool().recharge_line) == (None, g.cost_amount, 10 * C)
    assert b.get().current_monthly_spend == g.cost_amount
    reply, _ = b.apply(PendingRecharges())
    assert reply.recharges == ()


def test_a_recharge_lands_exactly_on_the_target_when_nothing_else_moves() -> None:
    b = Book()
    b.grant(50 * C)
    b.auto(target_balance=250 * C, threshold_value=40 * C)
    b.consume(17 * C + 3)
    [g] = [b.state.grants[rid(1)]]
    assert g.amount == 250 * C - (33 * C - 3)
    b.settle(rid(1))
    assert b.pool().balance == 250 * C


def test_saving_settings_below_the_line_starts_a_recharge_at_once() -> None:
    b = Book()
    _, fx = b.auto(threshold_value=5 * C, target_balance=20 * C)  # an empty (new) pool
    assert types(fx.events) == [E.AUTO_RECHARGE_CONFIGURATION_CHANGED,
                                E.AUTO_RECHARGE_ATTEMPTED]
    assert b.state.grants[rid(1)].amount == 20 * C and len(fx.recharges) == 1


@pytest.mark.parametrize("price, threshold", [
    (3_000, 1 * C),  # $0.03 a credit, below $1: the line is 33.33334 credits
    (C, 10 * C),  # $1 a credit, below $10: exactly 10 credits
    (7, 10),  # $0.00007 a credit, below $0.0001: 1.42858 credits
    (C // 10, 25 * C),  # $0.10, below $25: 250 credits
])
def test_dollar_threshold_line_is_exact(price: int, threshold: int) -> None:
    """Below the line means balance * price < threshold * SCALE, compared exactly."""
    line = math.ceil(Fraction(threshold * SCALE, price))
    assert line * price >= threshold * SCALE > (line - 1) * price
    b = Book()
    start = line + 5 * C
    b.grant(start)
    b.auto(threshold_type="DOLLAR_AMOUNT", threshold_value=threshold,
           target_balance=line + 100 * C, price=price)
    assert b.pool().recharge_line == line
    _, fx = b.consume(start - line)  # worth exactly the threshold: not below
    assert b.pool().balance == line and not fx.recharges
    _, fx = b.consume(1)  # one unit less: worth less than the threshold
    [request] = fx.recharges
    assert request.credits == 100 * C + 1
    assert request.cost == math.ceil(Fraction(request.credits * price, SCALE))


def test_dollar_target_must_be_worth_more_than_the_threshold() -> None:
    b = Book()
    b.grant(100 * C)
    # 25 credits at $2 = $50: not above a $50 threshold; one unit more is.
    b.refused(ConfigureAutoRecharge(currency_id=CUR, enabled=True, threshold_type="DOLLAR_AMOUNT",
                                    threshold_value=50 * C, target_balance=25 * C, price=2 * C),
              Refusal.INVALID_AUTO_RECHARGE, "targetBalance")
    b.auto(threshold_type="DOLLAR_AMOUNT", threshold_value=50 * C, target_balance=25 * C + 1,
           price=2 * C)
    assert b.pool().recharge_line == 25 * C


@pytest.mark.parametrize("target, price, cost", [
    (150_000, 1, 2),  # 1.5 credits at $0.00001: $0.000015 -> $0.00002
    (300_000, 33_333, 99_999),  # 3 credits at $0.33333: exact
    (2, 33_333, 1),  # 0.00002 credits at $0.33333: $0.0000066666 -> $0.00001
    (1_000_001, C, 1_000_001),  # 10.00001 credits at $1: exact
    (7 * C, C // 3, 233_331),  # 7 credits at $0.03333: $2.33331
    (2, 1, 1),  # two units at the smallest price still cost a unit
])
def test_cost_rounds_up_never_down(target: int, price: int, cost: int) -> None:
    b = Book()
    _, fx = b.auto(threshold_value=1, target_balance=target, price=price)
    [request] = fx.recharges
    assert (request.credits, request.cost) == (target, cost)
    assert cost == math.ceil(Fraction(target * price, SCALE))
    assert cost == recharge.cost_of(target, price)
    g = b.state.grants[rid(1)]
    assert (g.cost_amount, b.r().in_flight_cost) == (cost, cost)
    b.settle(rid(1))
    assert b.r().spent == cost and b.get().current_monthly_spend == cost


def test_maximum_purchase_bounds_a_recharge_without_calling_it_capped() -> None:
    b = Book()
    b.grant(100 * C)
    b.auto(max_purchase=30 * C)
    _, fx = b.consume(95 * C)
    [attempted] = only(fx.events, E.AUTO_RECHARGE_ATTEMPTED)
    assert attempted.amount == 30 * C and attempted.details["capped"] is False
    b.settle(rid(1))
    assert b.pool().balance == 35 * C


def test_minimum_purchase_above_what_is_wanted_buys_nothing_and_tells_once() -> None:
    b = Book()
    b.grant(100 * C)
    b.auto(threshold_value=10 * C, target_balance=12 * C, min_purchase=5 * C)
    _, fx = b.consume(91 * C)  # balance 9: wants 3 credits, less than the minimum
    assert types(fx.events)[-1] is E.AUTO_RECHARGE_LIMIT_EXCEEDED and not fx.recharges
    assert fx.events[-1].details["wanted"] == 3 * C
    _, fx = b.consume(1 * C)  # wants 4: still nothing, and no second event
    assert not only(fx.events, E.AUTO_RECHARGE_LIMIT_EXCEEDED) and not fx.recharges
    _, fx = b.consume(1 * C)  # wants 5: buys
    assert [r.credits for r in fx.recharges] == [5 * C]


def test_a_soft_limited_pool_in_overdraft_is_recharged_to_the_target() -> None:
    b = Book()
    b.grant(50 * C, "r1")
    b.ok(ConfigurePool(currency_id=CUR, resource_id="r1", hard_limit=False))
    b.auto("r1", threshold_value=10 * C, target_balance=100 * C)
    _, fx = b.consume(80 * C, "r1")  # balance -30
    [request] = fx.recharges
    assert (request.grant_id, request.credits) == (rid(1, "r1"), 130 * C)
    _, fx = b.settle(rid(1, "r1"))
    assert b.pool("r1").balance == 100 * C
    kinds = [e.event_type for e in fx.entries]
    assert L.CREDITS_CONSUMPTION_TRANSFER_SOURCE in kinds  # the overdraft was repaid


def test_one_year_expiration_and_a_resource_pool_of_its_own() -> None:
    b = Book(now=utc_ms(2024, 2, 29, 12))
    b.grant(20 * C, "r9")
    b.auto("r9", expiration="1_YEAR")
    b.consume(15 * C, "r9")
    g = b.state.grants[rid(1, "r9")]
    assert g.expire_at is None
    b.settle(rid(1, "r9"))  # paid the same day: expires a year after the payment
    assert g.expire_at == utc_ms(2025, 2, 28, 12)
    assert (CUR, None) not in b.state.pools or b.pool().recharge is None


# ---------------------------------------------------------------------------------------
# The monthly cap, limit_exceeded and spend alerts


def test_cap_buys_part_then_limit_exceeded_once_a_month_then_next_month_again() -> None:
    b = Book()
    b.grant(100 * C)
    # $5 a month at $0.10: 50 credits. (Grants for a year: none expires in this test.)
    b.auto(max_spend=5 * C, expiration="1_YEAR")
    _, fx = b.consume(95 * C)  # balance 5 wants 95
    [attempted] = only(fx.events, E.AUTO_RECHARGE_ATTEMPTED)
    g = b.state.grants[rid(1)]
    assert (g.amount, g.cost_amount, g.metadata["capped"]) == (50 * C, 5 * C, "true")
    assert attempted.details["capped"] is True
    _, fx = b.settle(rid(1))
    assert b.pool().balance == 55 * C and b.r().spent == 5 * C
    assert [e.details["percent"] for e in only(fx.events, E.AUTO_RECHARGE_SPEND_ALERT)] == [
        80, 90, 100]

    _, fx = b.consume(50 * C)  # balance 5: the cap leaves nothing
    [limit] = only(fx.events, E.AUTO_RECHARGE_LIMIT_EXCEEDED)
    assert not fx.recharges and rid(2) not in b.state.grants
    assert limit.details["wanted"] == 95 * C and limit.details["currentMonthlySpend"] == 5 * C
    assert limit.details["maxSpendLimit"] == 5 * C
    for _ in range(3):  # once a month
        _, fx = b.consume(1 * C, at=b.now + DAY)
        assert not only(fx.events, E.AUTO_RECHARGE_LIMIT_EXCEEDED) and not fx.recharges
    _, fx = b.consume(1, at=FEB - 1)  # the last millisecond of January
    assert not fx.events and not fx.recharges
    assert b.get().current_monthly_spend == 5 * C

    # February: the spend starts again at 0, and the capped pool looks again by itself
    # when the month turns (a timer): no change is needed to start the recharge.
    _, fx = b.apply(Tick(), at=FEB)
    [request] = fx.recharges
    assert (request.grant_id, request.credits, request.cost) == (rid(2), 50 * C, 5 * C)
    assert b.get().current_monthly_spend == 0
    _, fx = b.consume(1 * C)
    assert not fx.recharges  # one in flight already
    _, fx = b.settle(rid(2))
    assert len(only(fx.events, E.AUTO_RECHARGE_SPEND_ALERT)) == 3
    assert b.r().spent == 5 * C and b.r().month == month_of(FEB)
    _, fx = b.consume(50 * C)
    assert len(only(fx.events, E.AUTO_RECHARGE_LIMIT_EXCEEDED)) == 1  # February's


def test_spend_alerts_fire_once_each_per_month_and_together_when_crossed_together() -> None:
    b = Book()
    b.auto(threshold_value=1 * C, target_balance=8 * C, price=C, max_spend=10 * C,
           expiration="1_YEAR")
    _, fx = b.settle(rid(1))  # $8 of $10
    assert [e.details["percent"] for e in only(fx.events, E.AUTO_RECHARGE_SPEND_ALERT)] == [80]
    _, fx = b.consume(7 * C + C // 2)  # 0.5 left: wants 7.5, the cap buys 2
    assert [r.credits for r in fx.recharges] == [2 * C]
    _, fx = b.settle(rid(2))  # $10 of $10: 90 and 100 in one settle, in order
    alerts = only(fx.events, E.AUTO_RECHARGE_SPEND_ALERT)
    assert [e.details["percent"] for e in alerts] == [90, 100]
    assert all(e.details["currentMonthlySpend"] == 10 * C for e in alerts)
    _, fx = b.consume(2 * C)
    assert types(fx.events)[-1] is E.AUTO_RECHARGE_LIMIT_EXCEEDED

    # February: the month turns, the capped pool looks again (a timer): a fresh month.
    _, fx = b.apply(Tick(), at=FEB)  # 0.5 left: wants 7.5 ($7.50): under 80 %
    assert [r.credits for r in fx.recharges] == [7 * C + C // 2]
    _, fx = b.settle(rid(3))
    assert not only(fx.events, E.AUTO_RECHARGE_SPEND_ALERT)
    _, fx = b.consume(7 * C + C // 2)  # 0.5 left: wants 7.5, the cap buys 2.5
    assert [r.credits for r in fx.recharges] == [2 * C + C // 2]
    _, fx = b.settle(rid(4))
    assert [e.details["percent"] for e in only(fx.events, E.AUTO_RECHARGE_SPEND_ALERT)] == [
        80, 90, 100]

    by_month: dict[int, list[int]] = defaultdict(list)
    for e in only(b.events, E.AUTO_RECHARGE_SPEND_ALERT):
        by_month[month_of(e.timestamp)].append(e.details["percent"])
    assert dict(by_month) == {month_of(T0): [80, 90, 100], month_of(FEB): [80, 90, 100]}


def test_lowering_the_cap_below_the_spend_stops_recharges_for_the_month() -> None:
    b = Book()
    b.auto(threshold_value=1 * C, target_balance=8 * C, price=C, max_spend=20 * C)
    b.settle(rid(1))  # $8
    _, fx = b.auto(threshold_value=1 * C, target_balance=8 * C, price=C, max_spend=5 * C)
    assert b.r().spent == 8 * C  # saving keeps the month's spend
    _, fx = b.consume(7 * C + C // 2)
    assert types(fx.events)[-1] is E.AUTO_RECHARGE_LIMIT_EXCEEDED and not fx.recharges
    _, fx = b.auto(threshold_value=1 * C, target_balance=8 * C, price=C, max_spend=12 * C)
    [request] = fx.recharges  # raising it buys what the new cap leaves: $4
    assert (request.credits, request.cost) == (4 * C, 4 * C)


# ---------------------------------------------------------------------------------------
# Failure, settle refusals, operator actions


def test_decline_voids_disables_keeps_the_configuration_and_reenabling_clears_it() -> None:
    b = Book()
    b.grant(100 * C)
    b.auto(max_spend=50 * C, expiration="1_YEAR")
    b.consume(95 * C)
    balance = b.pool().balance
    _, fx = b.settle(rid(1), paid=False, reason="card declined")
    [failed] = only(fx.events, E.AUTO_RECHARGE_FAILED)
    assert failed.details["reason"] == "card declined" and failed.grant_id == rid(1)
    assert not only(fx.events, E.GRANTED) and not fx.entries
    g = b.state.grants[rid(1)]
    assert (g.status, g.available, g.activated) == (GrantStatus.VOIDED, 0, False)
    assert b.pool().balance == balance
    r = b.r()
    assert (r.enabled, r.failure, r.in_flight, r.spent) == (False, "card declined", None, 0)
    assert (r.threshold_value, r.target_balance, r.max_spend, r.expiration) == (
        10 * C, 100 * C, 50 * C, "1_YEAR")
    assert b.pool().recharge_line is None
    _, fx = b.consume(1 * C)  # disabled: nothing starts
    assert not fx.recharges
    assert b.get().settings.failure == "card declined"

    # Saving it disabled keeps the failure; enabling clears it and checks the line at once.
    _, fx = b.auto(enabled=False, max_spend=50 * C, expiration="1_YEAR")
    assert b.r().failure == "card declined" and not fx.recharges
    _, fx = b.auto(max_spend=50 * C, expiration="1_YEAR")
    assert b.r().failure is None and b.r().enabled
    assert types(fx.events) == [E.AUTO_RECHARGE_CONFIGURATION_CHANGED,
                                E.AUTO_RECHARGE_ATTEMPTED]
    assert [r.grant_id for r in fx.recharges] == [rid(2)]


def test_a_decline_without_a_reason_still_records_one() -> None:
    b = Book()
    b.auto()
    _, fx = b.settle(rid(1), paid=False)
    assert b.r().failure and only(fx.events, E.AUTO_RECHARGE_FAILED)[0].details["reason"]


def test_settling_anything_but_the_recharge_in_flight_is_refused() -> None:
    b = Book()
    b.grant(100 * C, grant_id="plain")
    b.ok(CreateGrant(grant_id="awaiting", currency_id=CUR, amount=5 * C,
                     grant_type=GrantType.PAID, display_name="x", await_payment=True))
    b.auto()
    b.consume(95 * C)
    for gid in ("nope", "plain", "awaiting", rid(2), rid(1, "r1")):
        for paid in (True, False):
            b.refused(SettleRecharge(grant_id=gid, paid=paid), Refusal.GRANT_NOT_PENDING, "id")
    b.settle(rid(1))
    for paid in (True, False):  # settled already
        b.refused(SettleRecharge(grant_id=rid(1), paid=paid), Refusal.GRANT_NOT_PENDING, "id")
    b.consume(91 * C)  # below the line again
    b.settle(rid(2), paid=False)
    b.refused(SettleRecharge(grant_id=rid(2), paid=True), Refusal.GRANT_NOT_PENDING, "id")
    b.refused(ConfirmPayment(grant_id=rid(2)), Refusal.GRANT_NOT_PENDING, "id")


def test_voiding_the_grant_in_flight_is_a_failure() -> None:
    b = Book()
    b.grant(100 * C)
    b.auto()
    b.consume(95 * C)
    _, fx = b.ok(VoidGrant(grant_id=rid(1)))
    assert E.AUTO_RECHARGE_FAILED in types(fx.events)
    r = b.r()
    assert (r.enabled, r.in_flight, r.failure) == (False, None, "voided by an operator")
    assert b.state.grants[rid(1)].status is GrantStatus.VOIDED
    b.refused(SettleRecharge(grant_id=rid(1), paid=True), Refusal.GRANT_NOT_PENDING, "id")


def test_confirming_the_grant_in_flight_is_a_success() -> None:
    b = Book()
    b.grant(100 * C)
    b.auto()
    b.consume(95 * C)
    cost = b.r().in_flight_cost
    _, fx = b.ok(ConfirmPayment(grant_id=rid(1)))
    assert E.AUTO_RECHARGE_SUCCEEDED in types(fx.events)
    assert b.pool().balance == 100 * C and b.r().spent == cost and b.r().in_flight is None
    b.refused(SettleRecharge(grant_id=rid(1), paid=True), Refusal.GRANT_NOT_PENDING, "id")


def test_disabling_while_in_flight_lets_the_payment_land_and_starts_nothing_more() -> None:
    b = Book()
    b.grant(100 * C)
    b.auto()
    b.consume(95 * C)
    b.auto(enabled=False)
    assert b.r().in_flight == rid(1)  # saving keeps the recharge in flight
    b.settle(rid(1))
    assert b.pool().balance == 100 * C and b.pool().recharge_line is None
    _, fx = b.consume(99 * C)
    assert not fx.recharges


def test_an_expiry_that_takes_the_balance_below_the_line_starts_a_recharge() -> None:
    b = Book()
    b.grant(100 * C, expire_at=T0 + 10 * DAY)
    b.grant(5 * C)
    b.auto()
    _, fx = b.apply(Tick(), at=T0 + 11 * DAY)
    assert [r.grant_id for r in fx.recharges] == [rid(1)]
    g = b.state.grants[rid(1)]
    assert g.created_at == T0 + 10 * DAY and g.amount == 95 * C  # at the expiry's own time


def test_the_state_restored_from_rows_resumes_the_recharge() -> None:
    b = Book()
    b.grant(100 * C)
    b.auto(max_spend=7 * C)
    b.consume(95 * C)
    restored = restore(*rows(b.state))
    pool = restored.pools[(CUR, None)]
    assert pool.recharge == b.r() and pool.recharge_line is None
    fx = Effects()
    reply = apply(restored, PendingRecharges(), b.now, fx)
    assert reply.recharges[0][0] == rid(1)
    reply = apply(restored, SettleRecharge(grant_id=rid(1), paid=True), b.now, fx)
    assert isinstance(reply, AutoRechargeReply)
    check_pool(restored, pool)
    assert pool.balance == 5 * C + 70 * C and pool.recharge.spent == 7 * C


# ---------------------------------------------------------------------------------------
# Validation


def auto_cmd(**kw: Any) -> ConfigureAutoRecharge:
    return ConfigureAutoRecharge(**{
        "currency_id": CUR, "enabled": True, "threshold_type": "CREDIT_AMOUNT",
        "threshold_value": 10 * C, "target_balance": 100 * C, "price": C // 10, **kw})


_AMOUNT_FIELDS = [("threshold_value", "thresholdValue"), ("target_balance", "targetBalance"),
                  ("price", "topUpPrice"), ("max_spend", "maxSpendLimit"),
                  ("min_purchase", "minimumPurchase"), ("max_purchase", "maximumPurchase")]
VALIDATION = [
    *[(f"{name}_{label}", {name: bad}, Refusal.INVALID_AMOUNT, field)
      for name, field in _AMOUNT_FIELDS
      for label, bad in (("zero", 0), ("negative", -1), ("float", 1.5), ("bool", True),
                         ("string", "5"), ("too_big", AMOUNT_UNITS_MAX + 1))],
    ("threshold_type", {"threshold_type": "PERCENT"}, Refusal.INVALID_AUTO_RECHARGE,
     "thresholdType"),
    ("threshold_type_lower", {"threshold_type": "credit_amount"},
     Refusal.INVALID_AUTO_RECHARGE, "thresholdType"),
    ("expiration", {"expiration": "1_WEEK"}, Refusal.INVALID_AUTO_RECHARGE,
     "grantExpirationPeriod"),
    ("target_equal", {"target_balance": 10 * C}, Refusal.INVALID_AUTO_RECHARGE,
     "targetBalance"),
    ("target_below", {"target_balance": 10 * C - 1}, Refusal.INVALID_AUTO_RECHARGE,
     "targetBalance"),
    ("dollar_target_equal", {"threshold_type": "DOLLAR_AMOUNT", "threshold_value": 10 * C,
                             "target_balance": 100 * C, "price": C // 10},
     Refusal.INVALID_AUTO_RECHARGE, "targetBalance"),
    ("min_above_max", {"min_purchase": 5 * C + 1, "max_purchase": 5 * C},
     Refusal.INVALID_AUTO_RECHARGE, "minimumPurchase"),
]


@pytest.mark.parametrize("changes, code, field",
                         [pytest.param(*row[1:], id=row[0]) for row in VALIDATION])
def test_invalid_settings_are_refused_naming_the_field(changes, code, field) -> None:
    b = Book()
    b.grant(100 * C)
    b.auto(max_spend=9 * C)
    b.consume(50 * C)
    b.refused(auto_cmd(**changes), code, field)
    assert b.r().max_spend == 9 * C  # the saved settings stand


@pytest.mark.parametrize("changes", [
    {"target_balance": 10 * C + 1},
    {"min_purchase": 5 * C, "max_purchase": 5 * C},
    {"threshold_type": "DOLLAR_AMOUNT", "threshold_value": 10 * C, "target_balance": 100 * C + 1},
    {"threshold_value": 1, "target_balance": 2, "price": 1, "max_spend": 1},
    {"threshold_value": AMOUNT_UNITS_MAX - 1, "target_balance": AMOUNT_UNITS_MAX},
])
def test_the_edges_of_valid_settings_are_accepted(changes) -> None:
    b = Book()
    b.grant(100 * C)
    reply, _ = b.ok(auto_cmd(**changes))
    assert isinstance(reply, AutoRechargeReply) and reply.settings is not None


# ---------------------------------------------------------------------------------------
# Calendar arithmetic


def _month_index(dt: datetime) -> int:
    return dt.year * 12 + dt.month - 1


def _add_months_reference(ms: int, months: int) -> int:
    dt = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
    index = dt.year * 12 + dt.month - 1 + months
    year, month = divmod(index, 12)
    month += 1
    following = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)
    last = (following - timedelta(days=1)).day
    moved = dt.replace(year=year, month=month, day=min(dt.day, last))
    return (moved - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


EPOCH_MS = st.integers(utc_ms(1900, 1, 1), utc_ms(2400, 1, 1))


@settings(max_examples=500, deadline=None)
@given(ms=EPOCH_MS, months=st.integers(0, 1200))
@example(ms=utc_ms(2024, 1, 31, 23, 59, 59) + 999, months=1)
@example(ms=utc_ms(2023, 1, 31, 8), months=1)
@example(ms=utc_ms(2024, 2, 29), months=12)
@example(ms=utc_ms(2025, 12, 31, 23, 59), months=1)
@example(ms=-1, months=1)
@example(ms=utc_ms(2000, 2, 29), months=1200)
def test_month_of_and_add_months_agree_with_datetime(ms: int, months: int) -> None:
    dt = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
    assert month_of(ms) == _month_index(dt)
    moved = add_months(ms, months)
    assert moved == _add_months_reference(ms, months)
    assert month_of(moved) == month_of(ms) + months
    assert moved % DAY == ms % DAY  # the same time of day


@pytest.mark.parametrize("start, months, expected", [
    (utc_ms(2024, 1, 31, 10, 30), 1, utc_ms(2024, 2, 29, 10, 30)),  # leap year
    (utc_ms(2023, 1, 31, 10, 30), 1, utc_ms(2023, 2, 28, 10, 30)),
    (utc_ms(2023, 3, 31), 1, utc_ms(2023, 4, 30)),
    (utc_ms(2023, 12, 15, 23, 59, 59), 1, utc_ms(2024, 1, 15, 23, 59, 59)),
    (utc_ms(2024, 2, 29), 12, utc_ms(2025, 2, 28)),
    (utc_ms(2024, 2, 29), 48, utc_ms(2028, 2, 29)),
    (utc_ms(2100, 1, 31), 1, utc_ms(2100, 2, 28)),  # not a leap year
])
def test_add_months_examples(start: int, months: int, expected: int) -> None:
    assert add_months(start, months) == expected


def test_month_of_boundaries() -> None:
    assert month_of(FEB - 1) == month_of(T0) == 2026 * 12
    assert month_of(FEB) == 2026 * 12 + 1
    assert month_of(utc_ms(2026, 12, 31, 23, 59, 59) + 999) + 1 == month_of(utc_ms(2027, 1, 1))


# ---------------------------------------------------------------------------------------
# Defects found and fixed: each would come back as a failure


@pytest.mark.parametrize("how", ["slow_payment", "timers_caught_up_late"])
def test_a_recharge_pending_past_its_grant_expiry_does_not_wedge_auto_recharge(how) -> None:
    b = Book()
    if how == "slow_payment":
        b.grant(100 * C)
        b.auto()
        b.consume(95 * C)
        b.apply(Tick(), at=add_months(T0, 1) + DAY)  # the provider took a month to answer
    else:
        # An idle customer whose timers fire late (a server down for weeks): the expiry of
        # 1 February starts a recharge dated 1 February, expiring 1 March, and the same
        # catch-up expires it before the executor has even seen it.
        b.grant(100 * C, expire_at=FEB)
        b.grant(5 * C)
        b.auto()
        b.apply(Tick(), at=MAR + DAY)
    # Either the late payment still lands, or the recharge ended (failed) and a new one can
    # start: what must not happen is a recharge in flight whose grant is gone.
    r = b.r()
    if r.in_flight is not None:
        reply, _ = b.apply(SettleRecharge(grant_id=r.in_flight, paid=True))
        assert not isinstance(reply, Refused), reply
    reply, _ = b.apply(PendingRecharges())
    for grant_id, *_ in reply.recharges:
        assert b.state.grants[grant_id].status is GrantStatus.PAYMENT_PENDING


def test_client_grant_ids_cannot_take_the_recharge_id_space() -> None:
    b = Book()
    reply, _ = b.apply(CreateGrant(grant_id=rid(1), currency_id=CUR, amount=100 * C,
                                   grant_type=GrantType.PAID, display_name="x"))
    if isinstance(reply, Refused):
        assert reply.code == Refusal.INVALID_GRANT_ID.value
        return
    b.auto()
    b.consume(95 * C)  # Book.apply runs check_pool


def test_a_settle_reports_success_before_what_the_success_leads_to() -> None:
    b = Book()
    b.grant(50 * C)
    b.ok(ConfigurePool(currency_id=CUR, hard_limit=False))
    b.auto()
    b.consume(45 * C)  # recharge 1: 95 credits
    b.consume(100 * C)  # while it is paid: balance -95
    _, fx = b.settle(rid(1))  # lands at 0: below the line, recharge 2 starts
    kinds = types(fx.events)
    assert E.AUTO_RECHARGE_ATTEMPTED in kinds
    assert kinds.index(E.AUTO_RECHARGE_SUCCEEDED) < kinds.index(E.AUTO_RECHARGE_ATTEMPTED)


# ---------------------------------------------------------------------------------------
# Property: random histories against a model of the month's spend


POOLS = [(CUR, None), (CUR, "soft")]  # the second is soft-limited
SMALL_OR_BIG = st.one_of(st.integers(1, 3 * C), st.integers(1, 150 * C))


class _InFlight(msgspec.Struct):
    grant_id: str
    amount: int
    cap: int | None  # the cap in force when it started
    capped: bool
    balance: int  # the balance when it started
    target: int  # the target then
    bounded: bool  # a maximum purchase was in force then


class RechargeMachine(RuleBasedStateMachine):
    """Invariants after every step, per pool:

    - at most one PAYMENT_PENDING recharge grant, and it is `recharge.in_flight`
      (`check_in_flight`); `check_pool` holds (recharge_line included);
    - no recharge starts while one is in flight (a settle that leaves the balance below the
      line may start the next one in the same step);
    - each recharge buys target - balance at its start, unless the maximum purchase or
      what the month's cap buys is less (then `capped` says which), at cost
      ceil(amount * price / SCALE), and never takes the month's spend past the cap;
    - a paid settle adds the grant's whole amount to the balance and its cost to the spend
      of the calendar month (UTC) it was settled in, which never exceeds the cap that was in
      force when that recharge started;
    - `current_spend` (and GetAutoRecharge's `current_monthly_spend`) equals the model's
      spend of the current month;
    - limit_exceeded fires at most once per month, each spend alert at most once per month
      and only once the spend has reached its percentage;
    - a state restored from the rows answers like the live one.

    Time moves by milliseconds, hours, days or to a month's edge, in Ticks of at most 27
    days. Payments are left pending for a while but resolve before their grant's expiry
    (see test_a_recharge_pending_past_its_grant_expiry_does_not_wedge_auto_recharge for
    what happens otherwise).
    """

    def __init__(self) -> None:
        super().__init__()
        self.state = CustomerState("cust-p")
        self.now = T0
        self.n = 0
        self.spend: dict[tuple, dict[int, int]] = defaultdict(lambda: defaultdict(int))
        self.in_flight: dict[tuple, _InFlight | None] = defaultdict(lambda: None)
        self.limits: dict[tuple, set[int]] = defaultdict(set)
        self.alerts: dict[tuple, set[tuple[int, int]]] = defaultdict(set)
        self.settled: list[str] = []
        self.attempts = 0

    # -- helpers -------------------------------------------------------------------------

    def run(self, cmd):
        shadow = restore(*rows(self.state))
        before = snapshot(self.state)
        fx = Effects()
        reply = apply(self.state, cmd, self.now, fx)
        sfx = Effects()
        sreply = apply(shadow, cmd, self.now, sfx)
        if not isinstance(cmd, Tick):
            assert sreply == reply, (cmd, reply, sreply)
        assert sfx.events == fx.events and sfx.entries == fx.entries
        assert sfx.recharges == fx.recharges
        if isinstance(reply, Refused):
            assert not fx and not fx.recharges
            assert snapshot(self.state) == before
        for pool in self.state.pools.values():
            check_pool(self.state, pool)
        check_in_flight(self.state)
        self.absorb(fx)
        return reply, fx

    def absorb(self, fx: Effects) -> None:
        state = self.state
        events = fx.events
        # Settlements first: the engine books a paid recharge's cost before the activation
        # that may start the next one (whose event can come first in the stream).
        for e in events:
            if e.type not in (E.AUTO_RECHARGE_SUCCEEDED, E.AUTO_RECHARGE_FAILED):
                continue
            key = (e.currency_id, e.resource_id)
            flight = self.in_flight[key]
            assert flight is not None and flight.grant_id == e.grant_id, (e, flight)
            g = state.grants[e.grant_id]
            if e.type is E.AUTO_RECHARGE_SUCCEEDED:
                assert g.activated and g.amount == flight.amount
                granted = [x for x in fx.entries
                           if x.grant_id == g.id and x.event_type is L.CREDITS_GRANTED]
                assert [x.amount for x in granted] == [flight.amount]
                month = month_of(e.timestamp)
                self.spend[key][month] += g.cost_amount
                if flight.cap is not None:
                    assert self.spend[key][month] <= flight.cap, (self.spend[key], flight)
            else:
                assert g.status is GrantStatus.VOIDED and not g.activated
                assert e.details["reason"]
            self.settled.append(g.id)
            self.in_flight[key] = None
        for e in events:
            key = (e.currency_id, e.resource_id)
            pool = state.pools[key]
            r = pool.recharge
            month = month_of(e.timestamp)
            if e.type is E.AUTO_RECHARGE_ATTEMPTED:
                assert self.in_flight[key] is None, "a second recharge while one is in flight"
                self.attempts += 1
                g = state.grants[e.grant_id]
                start = e.balance.current_balance
                want = r.target_balance - start
                if r.max_purchase is not None:
                    want = min(want, r.max_purchase)
                spent = self.spend[key][month]
                capped = False
                if r.max_spend is not None:
                    affordable = max(r.max_spend - spent, 0) * SCALE // r.price
                    if affordable < want:
                        want, capped = affordable, True
                assert g.amount == e.amount == want > 0, (g, want, r)
                if not capped and r.max_purchase is None:
                    assert g.amount == r.target_balance - start
                assert r.min_purchase is None or g.amount >= r.min_purchase
                assert e.details["capped"] is capped
                assert g.metadata["capped"] == ("true" if capped else "false")
                assert g.cost_amount == math.ceil(Fraction(g.amount * r.price, SCALE))
                if r.max_spend is not None:
                    assert spent + g.cost_amount <= r.max_spend
                assert g.expire_at is None  # set when paid
                self.in_flight[key] = _InFlight(grant_id=g.id, amount=g.amount,
                                                cap=r.max_spend, capped=capped, balance=start,
                                                target=r.target_balance,
                                                bounded=r.max_purchase is not None)
            elif e.type is E.AUTO_RECHARGE_LIMIT_EXCEEDED:
                assert month not in self.limits[key], "limit_exceeded twice in a month"
                self.limits[key].add(month)
                assert self.in_flight[key] is None
            elif e.type is E.AUTO_RECHARGE_SPEND_ALERT:
                percent = e.details["percent"]
                assert (month, percent) not in self.alerts[key], "an alert twice in a month"
                self.alerts[key].add((month, percent))
                assert self.spend[key][month] * 100 >= r.max_spend * percent
        assert [r.grant_id for r in fx.recharges] == [
            e.grant_id for e in events if e.type is E.AUTO_RECHARGE_ATTEMPTED]
        for e in events:  # coverage, in --hypothesis-show-statistics
            if e.type.value.startswith("credits.auto_recharge."):
                event(e.type.value)

    def fresh(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}{self.n}"

    # -- rules ---------------------------------------------------------------------------

    @initialize(start=st.one_of(st.integers(utc_ms(2000, 1, 1), utc_ms(2100, 1, 1)),
                                st.sampled_from([FEB - 3 * DAY, utc_ms(2024, 2, 27),
                                                 utc_ms(2027, 12, 30, 23)])),
                amounts=st.lists(st.integers(0, 200 * C), min_size=2, max_size=2))
    def seed(self, start: int, amounts: list[int]) -> None:
        self.now = start
        self.run(ConfigurePool(currency_id=CUR, resource_id="soft", hard_limit=False))
        for (cur, res), amount in zip(POOLS, amounts):
            if amount:
                self.run(CreateGrant(grant_id=self.fresh("seed"), currency_id=cur,
                                     resource_id=res, amount=amount,
                                     grant_type=GrantType.PAID, display_name="seed"))

    @rule(pool_i=st.sampled_from([0, 0, 1]), amount=SMALL_OR_BIG)
    def consume(self, pool_i: int, amount: int) -> None:
        cur, res = POOLS[pool_i]
        pool = self.state.pools.get((cur, res))
        covered = pool is not None and (not pool.hard_limit or amount <= pool.balance)
        reply, _ = self.run(Consume(currency_id=cur, resource_id=res, amount=amount))
        assert isinstance(reply, Refused) is not covered, reply

    @rule(pool_i=st.sampled_from([0, 1]), amount=SMALL_OR_BIG,
          expires_in=st.one_of(st.none(), st.integers(1, 40 * DAY)))
    def grant(self, pool_i: int, amount: int, expires_in: int | None) -> None:
        cur, res = POOLS[pool_i]
        reply, _ = self.run(CreateGrant(
            grant_id=self.fresh("g"), currency_id=cur, resource_id=res, amount=amount,
            grant_type=GrantType.PROMOTIONAL, display_name="g",
            expire_at=None if expires_in is None else self.now + expires_in))
        assert not isinstance(reply, Refused), reply

    @rule(pool_i=st.sampled_from([0, 1]), enabled=st.integers(0, 5).map(bool),
          dollar=st.booleans(), threshold=st.integers(1, 60 * C), gap=SMALL_OR_BIG,
          price=st.one_of(st.integers(1, 3 * C), st.sampled_from([C // 10, C, 33_333])),
          cap=st.one_of(st.none(), st.integers(1, 40 * C), st.integers(1, 400 * C)),
          bounds=st.tuples(st.one_of(st.none(), st.integers(1, 20 * C)),
                           st.one_of(st.none(), st.integers(1, 120 * C))),
          expiration=st.sampled_from(["1_MONTH", "1_YEAR"]))
    def configure(self, pool_i, enabled, dollar, threshold, gap, price, cap, bounds,
                  expiration) -> None:
        cur, res = POOLS[pool_i]
        if dollar:  # thresholds in money: the target must be worth more
            target = threshold * SCALE // price + gap
        else:
            target = threshold + gap
        low, high = bounds
        if low is not None and high is not None and low > high:
            low, high = high, low
        reply, _ = self.run(ConfigureAutoRecharge(
            currency_id=cur, resource_id=res, enabled=enabled,
            threshold_type="DOLLAR_AMOUNT" if dollar else "CREDIT_AMOUNT",
            threshold_value=threshold, target_balance=min(target, AMOUNT_UNITS_MAX),
            max_spend=cap, expiration=expiration, price=price, min_purchase=low,
            max_purchase=high))
        if target <= AMOUNT_UNITS_MAX:
            assert isinstance(reply, AutoRechargeReply), reply
            r = self.state.pools[(cur, res)].recharge
            assert (r.enabled, r.max_spend, r.price) == (enabled, cap, price)
            if enabled:
                assert r.failure is None

    def _flying(self) -> list[tuple]:
        return [k for k, f in self.in_flight.items() if f is not None]

    @precondition(lambda self: self._flying())
    @rule(data=st.data(), outcome=st.sampled_from(["paid", "paid", "declined", "void",
                                                   "confirm"]))
    def settle(self, data, outcome: str) -> None:
        key = data.draw(st.sampled_from(sorted(self._flying(), key=str)))
        flight = self.in_flight[key]
        pool = self.state.pools[key]
        before = pool.balance
        if outcome == "void":
            cmd = VoidGrant(grant_id=flight.grant_id)
        elif outcome == "confirm":
            cmd = ConfirmPayment(grant_id=flight.grant_id)
        else:
            cmd = SettleRecharge(grant_id=flight.grant_id, paid=outcome == "paid",
                                 reason=None if outcome == "paid" else "declined")
        reply, fx = self.run(cmd)
        assert not isinstance(reply, Refused), reply
        kinds = types(fx.events)
        if outcome in ("paid", "confirm"):
            assert E.AUTO_RECHARGE_SUCCEEDED in kinds
            # The whole amount lands (what moved besides is the overdraft's repayment,
            # which does not change the balance).
            assert pool.balance == before + flight.amount
            if not flight.capped and not flight.bounded and before == flight.balance:
                assert pool.balance == flight.target  # exactly on the target
        else:
            assert E.AUTO_RECHARGE_FAILED in kinds and pool.balance == before
            assert not pool.recharge.enabled and pool.recharge.failure

    @rule(data=st.data())
    def settle_the_wrong_grant(self, data) -> None:
        candidates = ["nope", *self.settled, *list(self.state.grants)[:3]]
        gid = data.draw(st.sampled_from(candidates))
        flying = {f.grant_id for f in self.in_flight.values() if f is not None}
        if gid in flying:
            return
        reply, _ = self.run(SettleRecharge(grant_id=gid, paid=data.draw(st.booleans())))
        assert isinstance(reply, Refused) and reply.code == Refusal.GRANT_NOT_PENDING.value

    @rule(kind=st.sampled_from(["ms", "hours", "days", "month_end", "month_start"]),
          amount=st.integers(1, 60))
    def advance(self, kind: str, amount: int) -> None:
        if kind == "ms":
            target = self.now + amount
        elif kind == "hours":
            target = self.now + amount * 3_600_000
        elif kind == "days":
            target = self.now + amount * DAY
        else:  # the last or the first millisecond of a month to come
            months = 1 + amount % 2
            start = add_months(self.now - self.now % DAY, months)
            start -= (_civil_day(start) - 1) * DAY  # the 1st of that month
            target = start - 1 if kind == "month_end" else start
        # Ticks of at most 27 days; a recharge grant in flight has no expiry to wait for.
        while self.now < target:
            step_to = min(target, self.now + 27 * DAY)
            self.now = step_to
            self.run(Tick())

    # -- invariants ----------------------------------------------------------------------

    @invariant()
    def spend_and_in_flight_agree_with_the_model(self) -> None:
        for key, pool in self.state.pools.items():
            r = pool.recharge
            flight = self.in_flight[key]
            assert (None if r is None else r.in_flight) == (
                None if flight is None else flight.grant_id)
            if r is None:
                continue
            expected = self.spend[key][month_of(self.now)]
            assert recharge.current_spend(r, self.now) == expected
            fx = Effects()
            reply = apply(self.state, GetAutoRecharge(currency_id=key[0], resource_id=key[1]),
                          self.now, fx)
            assert reply.current_monthly_spend == expected and not fx
            for month, total in self.spend[key].items():
                assert total >= 0
                if month == r.month:
                    assert total == r.spent


RechargeMachine.TestCase.settings = settings(
    max_examples=300, stateful_step_count=60, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
TestRechargeMachine = RechargeMachine.TestCase
