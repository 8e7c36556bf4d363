"""Scenarios for the pure credit state machine: `apply(state, command, now, effects)`.

Every scenario goes through `Customer`, which applies one command at a time with a fresh
`Effects`, keeps every ledger entry and domain event, and after every command checks that
each pool agrees with its grants (`check_pool`), that ledger and event sequence numbers are
gapless, and that a pool's balance is the sum of its ledger entries.
Amounts are integer units; times are epoch milliseconds.
"""

from __future__ import annotations

import itertools
import random
from collections import defaultdict
from decimal import Decimal

import pytest

from engine.core.amounts import AMOUNT_UNITS_MAX, SCALE
from engine.core.commands import (
    BalancesReply,
    ConfigureAutoRecharge,
    ConfigurePool,
    ConfirmPayment,
    Consume,
    ConsumeReply,
    CreateGrant,
    GetBalances,
    GrantReply,
    PoolSettingsReply,
    Refused,
    Release,
    ReleaseReply,
    Reserve,
    ReserveReply,
    Tick,
    TickReply,
    VoidGrant,
)
from engine.core.effects import Effects
from engine.core.machine import apply, check_pool
from engine.core.model import (
    CustomerState,
    EventType as E,
    GrantStatus,
    GrantType,
    LedgerEventType as L,
    ReservationStatus,
)
from engine.core.refusals import Refusal

CUR = "credits"
T0 = 1_700_000_000_000
PAID, PROMO, RECUR, OVERDRAFT = (
    GrantType.PAID, GrantType.PROMOTIONAL, GrantType.RECURRING, GrantType.OVERDRAFT,
)
OD = f"overdraft:{CUR}:"  # the engine's overdraft grant id for the default pool


# ---------------------------------------------------------------------------------------
# Test harness


class Customer:
    """One customer's state plus everything its commands produced so far."""

    def __init__(self, customer_id: str = "cust-1", now: int = T0) -> None:
        self.state = CustomerState(customer_id)
        self.now = now
        self.entries: list = []
        self.events: list = []

    # -- applying ------------------------------------------------------------------------

    def apply(self, cmd, at: int | None = None):
        if at is not None:
            assert at >= self.now, "time never runs backwards for one customer"
            self.now = at
        fx = Effects()
        reply = apply(self.state, cmd, self.now, fx)
        self.entries.extend(fx.entries)
        self.events.extend(fx.events)
        self.check()
        return reply, fx

    def ok(self, cmd, at: int | None = None):
        reply, fx = self.apply(cmd, at)
        assert not isinstance(reply, Refused), reply
        return reply, fx

    def grant(self, gid: str, amount: int = 100, grant_type: GrantType = PAID, *, at=None, **kw):
        kw.setdefault("currency_id", CUR)
        kw.setdefault("display_name", gid)
        return self.apply(CreateGrant(grant_id=gid, amount=amount, grant_type=grant_type, **kw), at)

    def consume(self, amount: int, *, at=None, **kw):
        kw.setdefault("currency_id", CUR)
        return self.apply(Consume(amount=amount, **kw), at)

    def reserve(self, rid: str, amount: int, *, ttl: int = 60_000, at=None, **kw):
        kw.setdefault("currency_id", CUR)
        kw.setdefault("expires_at", (self.now if at is None else at) + ttl)
        return self.apply(Reserve(reservation_id=rid, amount=amount, **kw), at)

    def release(self, rid: str, consumed: int, *, at=None, **kw):
        return self.apply(Release(reservation_id=rid, consumed_amount=consumed, **kw), at)

    def void(self, gid: str, *, at=None, **kw):
        return self.apply(VoidGrant(grant_id=gid, **kw), at)

    def confirm(self, gid: str, *, at=None, **kw):
        return self.apply(ConfirmPayment(grant_id=gid, **kw), at)

    def configure(self, *, at=None, **kw):
        kw.setdefault("currency_id", CUR)
        return self.apply(ConfigurePool(**kw), at)

    def tick(self, at: int):
        return self.apply(Tick(), at)

    # -- looking -------------------------------------------------------------------------

    @property
    def pool(self):
        return self.state.pools[(CUR, None)]

    @property
    def balance(self) -> int:
        return self.pool.balance

    def g(self, gid: str):
        return self.state.grants[gid]

    # -- invariants ----------------------------------------------------------------------

    def check(self) -> None:
        state = self.state
        for pool in state.pools.values():
            check_pool(state, pool)
        assert [e.seq for e in self.entries] == list(range(1, len(self.entries) + 1))
        assert [e.seq for e in self.events] == list(range(1, len(self.events) + 1))
        assert state.ledger_seq == len(self.entries)
        assert state.event_seq == len(self.events)
        ops = [e.op_seq for e in self.entries]
        assert ops == sorted(ops)
        # A pool's balance is the sum of its ledger entries' amounts.
        sums: dict = defaultdict(int)
        for e in self.entries:
            sums[(e.currency_id, e.resource_id)] += e.amount
            assert e.grant_id in state.grants
        for key, pool in state.pools.items():
            assert sums.get(key, 0) == pool.balance, key
        for e in self.events:
            assert e.customer_id == state.customer_id


def snapshot(state: CustomerState):
    """Everything a refused command must leave untouched."""
    return (
        {
            k: (p.balance, p.reserved, p.granted, p.consumed, p.expired, p.voided,
                p.active_granted, p.usage_low_fired, p.depleted_fired, p.hard_limit,
                p.low_balance_units, p.usage_low_percent, [g.id for g in p.active],
                p.overdraft.id if p.overdraft else None)
            for k, p in state.pools.items()
        },
        {
            gid: (g.status, g.amount, g.available, g.held, g.consumed, g.expired, g.voided,
                  g.updated_at, g.voided_at, g.usage_low_fired, g.depleted_fired)
            for gid, g in state.grants.items()
        },
        {
            rid: (r.status, dict(r.holds), r.consumed_amount, r.released_at)
            for rid, r in state.reservations.items()
        },
        dict(state.idempotency),
        sorted(state.timers),
        (state.ledger_seq, state.event_seq, state.grant_seq, state.op_seq),
    )


def assert_refused(c: Customer, cmd, code: Refusal, field: str | None = None) -> Refused:
    """Apply `cmd`, expect the refusal `code`, and prove nothing was applied."""
    before = snapshot(c.state)
    reply, fx = c.apply(cmd)
    assert isinstance(reply, Refused), reply
    assert reply.code == code.value, reply
    if field is not None:
        assert reply.field == field, reply
    assert not fx, "a refused command must leave no effects"
    assert snapshot(c.state) == before
    return reply


def types(fx_or_events) -> list:
    events = fx_or_events.events if isinstance(fx_or_events, Effects) else fx_or_events
    return [e.type for e in events]


def rows(fx: Effects) -> list[tuple]:
    return [(e.event_type, e.grant_id, e.amount) for e in fx.entries]


# ---------------------------------------------------------------------------------------
# 1. Consumption order


def drawn_order(specs: dict[str, dict], creation_order, chunk: int | None = None) -> list[str]:
    """Create 10-unit grants in `creation_order` at T0, consume them all (in chunks if
    asked) and return the grant ids in the order they were drawn."""
    c = Customer()
    for gid in creation_order:
        c.ok(CreateGrant(grant_id=gid, currency_id=CUR, amount=10, display_name=gid,
                         **{"grant_type": PAID, **specs[gid]}))
    total = 10 * len(specs)
    breakdown: list[tuple[str, int]] = []
    while total:
        step = total if chunk is None else min(chunk, total)
        reply, _ = c.ok(Consume(currency_id=CUR, amount=step))
        assert sum(units for _, units in reply.breakdown) == step
        breakdown.extend(reply.breakdown)
        total -= step
    order: list[str] = []
    taken: dict[str, int] = defaultdict(int)
    for gid, units in breakdown:
        if not order or order[-1] != gid:
            assert gid not in order, f"{gid} drawn again after another grant"
            order.append(gid)
        taken[gid] += units
    assert all(v == 10 for v in taken.values()), taken
    assert c.balance == 0
    return order


def both_orders(specs: dict[str, dict]):
    return list(itertools.permutations(specs))


PRIORITY = {
    # The lower priority number wins although the other grant beats it on every later rule.
    "low_number": dict(priority=10, grant_type=PAID, effective_at=T0 - 1),
    "high_number": dict(priority=20, grant_type=PROMO, expire_at=T0 + 1_000,
                        effective_at=T0 - 9_000),
}
EXPIRY = {
    "expires_first": dict(expire_at=T0 + 1_000, grant_type=PAID, effective_at=T0 - 1),
    "expires_later": dict(expire_at=T0 + 2_000, grant_type=PROMO, effective_at=T0 - 9_000),
}
NEVER_LAST = {
    "expires_in_a_century": dict(expire_at=T0 + 100 * 365 * 86_400_000, grant_type=PAID),
    "never_expires": dict(grant_type=PROMO, effective_at=T0 - 9_000),
}
PROMO_FIRST = {
    "promotional": dict(grant_type=PROMO, expire_at=T0 + 5_000, effective_at=T0 - 1),
    "paid": dict(grant_type=PAID, expire_at=T0 + 5_000, effective_at=T0 - 9_000),
}
RECURRING_FIRST = {
    "recurring": dict(grant_type=RECUR, effective_at=T0 - 1),
    "paid": dict(grant_type=PAID, effective_at=T0 - 9_000),
}
FREE_TYPES_TIE = {
    # PROMOTIONAL and RECURRING rank the same, so the earlier effectiveAt decides.
    "recurring_older": dict(grant_type=RECUR, effective_at=T0 - 2_000),
    "promotional_newer": dict(grant_type=PROMO, effective_at=T0 - 1_000),
}
EFFECTIVE = {
    "effective_earlier": dict(grant_type=PAID, effective_at=T0 - 2_000),
    "effective_later": dict(grant_type=PAID, effective_at=T0 - 1_000),
}


@pytest.mark.parametrize("creation_order", both_orders(PRIORITY))
def test_burns_down_lower_priority_number_first(creation_order):
    assert drawn_order(PRIORITY, creation_order) == ["low_number", "high_number"]


@pytest.mark.parametrize("creation_order", both_orders(EXPIRY))
def test_burns_down_earliest_expiry_first_within_a_priority(creation_order):
    assert drawn_order(EXPIRY, creation_order) == ["expires_first", "expires_later"]


@pytest.mark.parametrize("creation_order", both_orders(NEVER_LAST))
def test_burns_down_never_expiring_grants_after_every_expiring_one(creation_order):
    assert drawn_order(NEVER_LAST, creation_order) == ["expires_in_a_century", "never_expires"]


@pytest.mark.parametrize("creation_order", both_orders(PROMO_FIRST))
def test_burns_down_promotional_before_paid_when_expiry_ties(creation_order):
    assert drawn_order(PROMO_FIRST, creation_order) == ["promotional", "paid"]


@pytest.mark.parametrize("creation_order", both_orders(RECURRING_FIRST))
def test_burns_down_recurring_before_paid_when_expiry_ties(creation_order):
    assert drawn_order(RECURRING_FIRST, creation_order) == ["recurring", "paid"]


@pytest.mark.parametrize("creation_order", both_orders(FREE_TYPES_TIE))
def test_ranks_promotional_and_recurring_alike_so_effective_at_decides(creation_order):
    assert drawn_order(FREE_TYPES_TIE, creation_order) == ["recurring_older", "promotional_newer"]


@pytest.mark.parametrize("creation_order", both_orders(EFFECTIVE))
def test_burns_down_earliest_effective_at_first_when_type_ties(creation_order):
    assert drawn_order(EFFECTIVE, creation_order) == ["effective_earlier", "effective_later"]


def test_burns_down_earliest_created_at_first_when_everything_else_ties():
    c = Customer()
    # Ids sort the other way round, so id order cannot explain the result.
    for i, gid in enumerate(["z", "y", "x"]):
        c.grant(gid, 10, PAID, effective_at=T0 - 5_000, at=T0 + i)
    reply, _ = c.ok(Consume(currency_id=CUR, amount=30))
    assert list(reply.breakdown) == [("z", 10), ("y", 10), ("x", 10)]


def test_breaks_a_full_tie_in_the_same_millisecond_by_creation_sequence_not_id():
    c = Customer()
    for gid in ["b", "c", "a"]:
        c.grant(gid, 10)
    reply, _ = c.consume(30)
    assert list(reply.breakdown) == [("b", 10), ("c", 10), ("a", 10)]


@pytest.mark.parametrize("creation_order", [("late", "early"), ("early", "late")])
def test_a_scheduled_grant_ranks_by_its_effective_at_once_active(creation_order):
    c = Customer()
    effective = {"early": T0 + 500, "late": T0 + 1_000}
    for gid in creation_order:
        c.grant(gid, 10, effective_at=effective[gid])
    c.tick(T0 + 2_000)
    reply, _ = c.consume(20)
    assert list(reply.breakdown) == [("early", 10), ("late", 10)]


# Eight grants exercising every rule at once, listed in the order they must be drawn.
ALL_RULES = {
    "p0_paid_never": dict(priority=0, grant_type=PAID),
    "p50_expires_1s_paid": dict(expire_at=T0 + 1_000, grant_type=PAID),
    "p50_expires_2s_promo": dict(expire_at=T0 + 2_000, grant_type=PROMO),
    "p50_expires_2s_paid_old": dict(expire_at=T0 + 2_000, grant_type=PAID, effective_at=T0 - 9_000),
    "p50_never_promo_old": dict(grant_type=PROMO, effective_at=T0 - 2_000),
    "p50_never_recurring_new": dict(grant_type=RECUR, effective_at=T0 - 1_000),
    "p50_never_paid_oldest": dict(grant_type=PAID, effective_at=T0 - 5_000),
    "p100_promo_expires_soon": dict(priority=100, grant_type=PROMO, expire_at=T0 + 500,
                                    effective_at=T0 - 9_999),
}
EXPECTED_ALL_RULES = list(ALL_RULES)


@pytest.mark.parametrize("creation_order", list(itertools.permutations(EXPECTED_ALL_RULES[:5])))
def test_consumption_order_does_not_depend_on_creation_order(creation_order):
    specs = {gid: ALL_RULES[gid] for gid in creation_order}
    assert drawn_order(specs, creation_order) == EXPECTED_ALL_RULES[:5]


def _shuffles(n: int, seed: int = 20240521):
    rng = random.Random(seed)
    out = [list(reversed(EXPECTED_ALL_RULES))]
    for _ in range(n):
        order = list(EXPECTED_ALL_RULES)
        rng.shuffle(order)
        out.append(order)
    return out


@pytest.mark.parametrize("creation_order", _shuffles(40))
@pytest.mark.parametrize("chunk", [None, 7])
def test_every_rule_together_gives_one_order_for_any_shuffle_and_any_chunking(
    creation_order, chunk
):
    assert drawn_order(ALL_RULES, creation_order, chunk) == EXPECTED_ALL_RULES


def test_one_consumption_spanning_several_grants_records_a_per_grant_breakdown():
    c = Customer()
    c.grant("a", 30, priority=1)
    c.grant("b", 50, priority=2)
    c.grant("c", 40, priority=3)
    reply, fx = c.consume(100, feature_id="feat", idempotency_key="k1", dimensions={"model": "m"})
    assert isinstance(reply, ConsumeReply)
    assert reply.amount == 100 and reply.overdraft == 0 and reply.timestamp == T0
    assert list(reply.breakdown) == [("a", 30), ("b", 50), ("c", 20)]
    assert rows(fx) == [
        (L.CREDITS_CONSUMED, "a", -30),
        (L.CREDITS_CONSUMED, "b", -50),
        (L.CREDITS_CONSUMED, "c", -20),
    ]
    assert len({e.op_seq for e in fx.entries}) == 1
    assert all(e.feature_id == "feat" and e.idempotency_key == "k1" for e in fx.entries)
    assert all(e.dimensions == {"model": "m"} and e.timestamp == T0 for e in fx.entries)
    assert reply.balance.current_balance == 20 == c.balance
    assert reply.balance.total_consumed == 100 and reply.balance.total_granted == 120
    assert [(c.g(x).consumed, c.g(x).available) for x in "abc"] == [(30, 0), (50, 0), (20, 20)]


def test_a_consumption_within_one_grant_touches_only_that_grant():
    c = Customer()
    c.grant("a", 30, priority=1)
    c.grant("b", 50, priority=2)
    reply, fx = c.consume(30)
    assert list(reply.breakdown) == [("a", 30)]
    assert rows(fx) == [(L.CREDITS_CONSUMED, "a", -30)]
    reply, fx = c.consume(5)
    assert list(reply.breakdown) == [("b", 5)]


def test_credits_of_a_resource_pool_serve_only_that_resource():
    c = Customer()
    c.grant("res", 100, resource_id="r1")
    assert_refused(c, Consume(currency_id=CUR, amount=1), Refusal.INSUFFICIENT_CREDITS)
    assert_refused(c, Consume(currency_id=CUR, amount=1, resource_id="r2"),
                   Refusal.INSUFFICIENT_CREDITS)
    reply, _ = c.consume(40, resource_id="r1")
    assert reply.balance.current_balance == 60 and reply.balance.resource_id == "r1"


# ---------------------------------------------------------------------------------------
# 2. Refusals and their precedence


def _granted(c: Customer, amount: int = 100) -> None:
    c.grant("g1", amount)


def _reserved(c: Customer) -> None:
    c.grant("g1", 100)
    c.reserve("r1", 40)


def _released(c: Customer) -> None:
    _reserved(c)
    c.release("r1", 10)


def _reservation_expired(c: Customer) -> None:
    _reserved(c)
    c.tick(c.now + 60_000)


def _voided(c: Customer) -> None:
    c.grant("g1", 100)
    c.void("g1")


def _expired(c: Customer) -> None:
    c.grant("g1", 100, expire_at=T0 + 10)
    c.tick(T0 + 10)


def _overdrawn(c: Customer) -> None:
    c.configure(hard_limit=False)
    c.consume(10)


def _at_max(c: Customer) -> None:
    c.grant("g1", AMOUNT_UNITS_MAX)


def _keyed_consume(c: Customer) -> None:
    c.grant("g1", 100)
    c.consume(10, idempotency_key="k")


def _nothing(c: Customer) -> None:
    pass


def grant_cmd(**kw):
    base = dict(grant_id="new", currency_id=CUR, amount=10, grant_type=PAID, display_name="n")
    return lambda c: CreateGrant(**{**base, **kw})


def consume_cmd(**kw):
    return lambda c: Consume(**{"currency_id": CUR, "amount": 10, **kw})


def reserve_cmd(ttl: int = 1_000, **kw):
    return lambda c: Reserve(**{"reservation_id": "new", "currency_id": CUR, "amount": 10,
                                "expires_at": c.now + ttl, **kw})


def recharge_cmd(**kw):
    return lambda c: ConfigureAutoRecharge(**{
        "currency_id": CUR, "enabled": True, "threshold_type": "CREDIT_AMOUNT",
        "threshold_value": 10, "target_balance": 100, "price": SCALE, **kw})


def release_cmd(**kw):
    return lambda c: Release(**{"reservation_id": "r1", "consumed_amount": 10, **kw})


def configure_cmd(**kw):
    return lambda c: ConfigurePool(**{"currency_id": CUR, **kw})


R = Refusal
REFUSALS = [
    # (id, setup, command, code, field)
    # -- INVALID_AMOUNT: a command's amounts must be int units in 1..AMOUNT_UNITS_MAX
    ("consume_zero", _granted, consume_cmd(amount=0), R.INVALID_AMOUNT, "amount"),
    ("consume_negative", _granted, consume_cmd(amount=-1), R.INVALID_AMOUNT, "amount"),
    ("consume_float", _granted, consume_cmd(amount=1.0), R.INVALID_AMOUNT, "amount"),
    ("consume_decimal", _granted, consume_cmd(amount=Decimal(1)), R.INVALID_AMOUNT, "amount"),
    ("consume_string", _granted, consume_cmd(amount="10"), R.INVALID_AMOUNT, "amount"),
    ("consume_bool", _granted, consume_cmd(amount=True), R.INVALID_AMOUNT, "amount"),
    ("consume_none", _granted, consume_cmd(amount=None), R.INVALID_AMOUNT, "amount"),
    ("consume_above_max", _granted, consume_cmd(amount=AMOUNT_UNITS_MAX + 1), R.INVALID_AMOUNT,
     "amount"),
    ("grant_zero", _nothing, grant_cmd(amount=0), R.INVALID_AMOUNT, "amount"),
    ("grant_negative", _nothing, grant_cmd(amount=-5), R.INVALID_AMOUNT, "amount"),
    ("grant_float", _nothing, grant_cmd(amount=2.5), R.INVALID_AMOUNT, "amount"),
    ("grant_bool", _nothing, grant_cmd(amount=True), R.INVALID_AMOUNT, "amount"),
    ("grant_above_max", _nothing, grant_cmd(amount=AMOUNT_UNITS_MAX + 1), R.INVALID_AMOUNT,
     "amount"),
    ("grant_negative_cost", _nothing, grant_cmd(cost_amount=-1), R.INVALID_AMOUNT, "cost.amount"),
    ("grant_float_cost", _nothing, grant_cmd(cost_amount=1.5), R.INVALID_AMOUNT, "cost.amount"),
    ("grant_overdraft_type", _nothing, grant_cmd(grant_type=OVERDRAFT), R.INVALID_AMOUNT,
     "grantType"),
    ("reserve_zero", _granted, reserve_cmd(amount=0), R.INVALID_AMOUNT, "amount"),
    ("reserve_above_max", _granted, reserve_cmd(amount=AMOUNT_UNITS_MAX + 1), R.INVALID_AMOUNT,
     "amount"),
    ("release_negative", _reserved, release_cmd(consumed_amount=-1), R.INVALID_AMOUNT,
     "consumedAmount"),
    ("release_float", _reserved, release_cmd(consumed_amount=1.0), R.INVALID_AMOUNT,
     "consumedAmount"),
    ("release_above_max", _reserved, release_cmd(consumed_amount=AMOUNT_UNITS_MAX + 1),
     R.INVALID_AMOUNT, "consumedAmount"),
    ("low_balance_negative", _nothing, configure_cmd(low_balance_units=-1), R.INVALID_AMOUNT,
     "lowBalanceThreshold"),
    ("low_balance_float", _nothing, configure_cmd(low_balance_units=0.5), R.INVALID_AMOUNT,
     "lowBalanceThreshold"),
    # -- INVALID_PRIORITY: an int in 0..100
    ("priority_negative", _nothing, grant_cmd(priority=-1), R.INVALID_PRIORITY, "priority"),
    ("priority_101", _nothing, grant_cmd(priority=101), R.INVALID_PRIORITY, "priority"),
    ("priority_float", _nothing, grant_cmd(priority=50.0), R.INVALID_PRIORITY, "priority"),
    ("priority_bool", _nothing, grant_cmd(priority=True), R.INVALID_PRIORITY, "priority"),
    ("priority_string", _nothing, grant_cmd(priority="5"), R.INVALID_PRIORITY, "priority"),
    # -- INVALID_DATES: expireAt after effectiveAt and after now; a reservation ends later
    ("expire_now", _nothing, grant_cmd(expire_at=T0), R.INVALID_DATES, "expireAt"),
    ("expire_past", _nothing, grant_cmd(expire_at=T0 - 1), R.INVALID_DATES, "expireAt"),
    ("expire_at_effective", _nothing, grant_cmd(effective_at=T0 + 500, expire_at=T0 + 500),
     R.INVALID_DATES, "expireAt"),
    ("expire_before_effective", _nothing, grant_cmd(effective_at=T0 + 500, expire_at=T0 + 400),
     R.INVALID_DATES, "expireAt"),
    ("backdated_grant_already_expired", _nothing,
     grant_cmd(effective_at=T0 - 500, expire_at=T0 - 100), R.INVALID_DATES, "expireAt"),
    ("reserve_expires_now", _granted, reserve_cmd(ttl=0), R.INVALID_DATES, "expiresAt"),
    ("reserve_expires_past", _granted, reserve_cmd(ttl=-1), R.INVALID_DATES, "expiresAt"),
    # -- INVALID_PERCENT: an int in 1..100
    ("percent_zero", _nothing, configure_cmd(usage_low_percent=0), R.INVALID_PERCENT,
     "usageLowPercent"),
    ("percent_101", _nothing, configure_cmd(usage_low_percent=101), R.INVALID_PERCENT,
     "usageLowPercent"),
    ("percent_negative", _nothing, configure_cmd(usage_low_percent=-5), R.INVALID_PERCENT,
     "usageLowPercent"),
    ("percent_float", _nothing, configure_cmd(usage_low_percent=80.0), R.INVALID_PERCENT,
     "usageLowPercent"),
    ("percent_bool", _nothing, configure_cmd(usage_low_percent=True), R.INVALID_PERCENT,
     "usageLowPercent"),
    # -- IDEMPOTENCY_KEY_REUSED
    ("key_reused_other_amount", _keyed_consume, consume_cmd(amount=11, idempotency_key="k"),
     R.IDEMPOTENCY_KEY_REUSED, "idempotencyKey"),
    ("key_reused_other_command", _keyed_consume, lambda c: VoidGrant(grant_id="g1",
     idempotency_key="k"), R.IDEMPOTENCY_KEY_REUSED, "idempotencyKey"),
    # -- existence
    ("void_unknown_grant", _granted, lambda c: VoidGrant(grant_id="nope"), R.GRANT_NOT_FOUND, "id"),
    ("confirm_unknown_grant", _granted, lambda c: ConfirmPayment(grant_id="nope"),
     R.GRANT_NOT_FOUND, "id"),
    ("release_unknown_reservation", _reserved, release_cmd(reservation_id="nope"),
     R.RESERVATION_NOT_FOUND, "reservationId"),
    # -- state of what is named
    ("grant_id_taken", _granted, grant_cmd(grant_id="g1"), R.GRANT_ID_TAKEN, "id"),
    ("grant_id_with_the_overdraft_prefix", _overdrawn, grant_cmd(grant_id=OD), R.INVALID_GRANT_ID,
     "id"),
    ("reservation_id_taken", _reserved, reserve_cmd(reservation_id="r1"), R.RESERVATION_ID_TAKEN,
     "reservationId"),
    ("void_voided", _voided, lambda c: VoidGrant(grant_id="g1"), R.GRANT_ALREADY_VOIDED, "id"),
    ("void_expired", _expired, lambda c: VoidGrant(grant_id="g1"), R.GRANT_ALREADY_EXPIRED, "id"),
    ("void_overdraft", _overdrawn, lambda c: VoidGrant(grant_id=OD), R.GRANT_NOT_VOIDABLE, "id"),
    ("confirm_active", _granted, lambda c: ConfirmPayment(grant_id="g1"), R.GRANT_NOT_PENDING,
     "id"),
    ("confirm_voided", _voided, lambda c: ConfirmPayment(grant_id="g1"), R.GRANT_NOT_PENDING, "id"),
    ("confirm_overdraft", _overdrawn, lambda c: ConfirmPayment(grant_id=OD), R.GRANT_NOT_PENDING,
     "id"),
    ("release_other_currency", _reserved, release_cmd(currency_id="other"),
     R.RESERVATION_POOL_MISMATCH, "currencyId"),
    ("release_other_resource", _reserved, release_cmd(currency_id=CUR, resource_id="r9"),
     R.RESERVATION_POOL_MISMATCH, "resourceId"),
    ("release_released", _released, release_cmd(), R.RESERVATION_NOT_ACTIVE, "reservationId"),
    ("release_expired", _reservation_expired, release_cmd(), R.RESERVATION_NOT_ACTIVE,
     "reservationId"),
    # -- amounts against the state
    ("release_beyond_reserved_and_balance", _reserved, release_cmd(consumed_amount=101),
     R.INSUFFICIENT_CREDITS, "consumedAmount"),
    ("grant_beyond_max_balance", _at_max, grant_cmd(amount=1), R.BALANCE_LIMIT_EXCEEDED, "amount"),
    ("consume_more_than_balance", _granted, consume_cmd(amount=101), R.INSUFFICIENT_CREDITS,
     "amount"),
    ("consume_unknown_pool", _nothing, consume_cmd(), R.INSUFFICIENT_CREDITS, "amount"),
    ("consume_other_currency", _granted, consume_cmd(currency_id="other"), R.INSUFFICIENT_CREDITS,
     "amount"),
    ("consume_more_than_unreserved", _reserved, consume_cmd(amount=61), R.INSUFFICIENT_CREDITS,
     "amount"),
    ("reserve_more_than_balance", _granted, reserve_cmd(amount=101), R.INSUFFICIENT_CREDITS,
     "reserveAmount"),
    ("reserve_unknown_pool", _nothing, reserve_cmd(), R.INSUFFICIENT_CREDITS, "reserveAmount"),
    ("reserve_while_overdrawn_soft_limit", _overdrawn, reserve_cmd(amount=1),
     R.INSUFFICIENT_CREDITS, "reserveAmount"),
    # -- INVALID_AUTO_RECHARGE: settings that cannot work (amount fields: INVALID_AMOUNT)
    ("recharge_target_at_threshold", _nothing, recharge_cmd(target_balance=10),
     R.INVALID_AUTO_RECHARGE, "targetBalance"),
    ("recharge_dollar_target_below", _nothing,
     recharge_cmd(threshold_type="DOLLAR_AMOUNT", threshold_value=50 * SCALE,
                  target_balance=25 * SCALE, price=2 * SCALE),
     R.INVALID_AUTO_RECHARGE, "targetBalance"),
    ("recharge_bad_threshold_type", _nothing, recharge_cmd(threshold_type="PERCENT"),
     R.INVALID_AUTO_RECHARGE, "thresholdType"),
    ("recharge_bad_period", _nothing, recharge_cmd(expiration="1_WEEK"),
     R.INVALID_AUTO_RECHARGE, "grantExpirationPeriod"),
    ("recharge_min_above_max", _nothing, recharge_cmd(min_purchase=50, max_purchase=40),
     R.INVALID_AUTO_RECHARGE, "minimumPurchase"),
    ("recharge_zero_price", _nothing, recharge_cmd(price=0), R.INVALID_AMOUNT, "topUpPrice"),
    ("recharge_zero_cap", _nothing, recharge_cmd(max_spend=0), R.INVALID_AMOUNT,
     "maxSpendLimit"),
]


@pytest.mark.parametrize(
    "setup, make_cmd, code, field", [pytest.param(*row[1:], id=row[0]) for row in REFUSALS]
)
def test_refuses_with_the_documented_code_and_applies_nothing(setup, make_cmd, code, field):
    c = Customer()
    setup(c)
    assert_refused(c, make_cmd(c), code, field)


def test_every_refusal_code_is_exercised():
    assert {row[3] for row in REFUSALS} == set(Refusal)


def test_release_naming_another_resource_only_blames_the_resource_field():
    # The currency is not given (allowed), the resource is wrong: the field is resourceId.
    c = Customer()
    _reserved(c)
    assert_refused(c, Release(reservation_id="r1", consumed_amount=0, resource_id="r9"),
                   R.RESERVATION_POOL_MISMATCH, "resourceId")


@pytest.mark.parametrize(
    "kw",
    [dict(priority=0), dict(priority=100), dict(cost_amount=0, cost_currency="USD"),
     dict(amount=AMOUNT_UNITS_MAX), dict(amount=1), dict(expire_at=T0 + 1),
     dict(effective_at=T0 - 500, expire_at=T0 + 1), dict(effective_at=T0 + 5, expire_at=T0 + 6)],
    ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()),
)
def test_accepts_the_edges_of_the_valid_ranges(kw):
    c = Customer()
    c.ok(grant_cmd(**kw)(c))


@pytest.mark.parametrize("kw", [dict(usage_low_percent=1), dict(usage_low_percent=100),
                                dict(low_balance_units=0),
                                dict(low_balance_units=AMOUNT_UNITS_MAX)])
def test_accepts_the_edges_of_the_valid_pool_settings(kw):
    c = Customer()
    c.grant("g1", 100)
    reply, _ = c.ok(configure_cmd(**kw)(c))
    assert isinstance(reply, PoolSettingsReply)


PRECEDENCE = [
    # (id, setup, command, winning code): the first failing check wins
    ("invalid_amount_beats_key_conflict", _keyed_consume,
     consume_cmd(amount=0, idempotency_key="k"),
     R.INVALID_AMOUNT),
    ("expiry_not_after_effective_beats_key_conflict", _keyed_consume,
     grant_cmd(effective_at=T0 + 500, expire_at=T0 + 400, idempotency_key="k"), R.INVALID_DATES),
    # An expiry not in the future is checked against `now`, after idempotency and ids.
    ("key_conflict_beats_reservation_expiring_now", _keyed_consume,
     reserve_cmd(ttl=0, idempotency_key="k"), R.IDEMPOTENCY_KEY_REUSED),
    ("key_conflict_beats_grant_expire_at_in_the_past", _keyed_consume,
     grant_cmd(expire_at=T0 - 1, idempotency_key="k"), R.IDEMPOTENCY_KEY_REUSED),
    ("grant_id_taken_beats_expire_at_in_the_past", _granted, grant_cmd(grant_id="g1",
     expire_at=T0 - 1), R.GRANT_ID_TAKEN),
    ("reservation_id_taken_beats_expiry_in_the_past", _reserved,
     reserve_cmd(reservation_id="r1", ttl=0), R.RESERVATION_ID_TAKEN),
    ("expire_at_in_the_past_beats_balance_limit", _at_max, grant_cmd(amount=1, expire_at=T0),
     R.INVALID_DATES),
    ("expiry_in_the_past_beats_insufficient_credits", _granted, reserve_cmd(ttl=-5, amount=10_000),
     R.INVALID_DATES),
    ("invalid_priority_beats_key_conflict", _keyed_consume,
     grant_cmd(priority=101, idempotency_key="k"), R.INVALID_PRIORITY),
    ("invalid_percent_beats_key_conflict", _keyed_consume,
     configure_cmd(usage_low_percent=0, idempotency_key="k"), R.INVALID_PERCENT),
    ("invalid_amount_beats_invalid_priority", _nothing, grant_cmd(amount=0, priority=500),
     R.INVALID_AMOUNT),
    ("overdraft_type_beats_invalid_priority", _nothing,
     grant_cmd(grant_type=OVERDRAFT, priority=500),
     R.INVALID_AMOUNT),
    ("invalid_priority_beats_invalid_dates", _nothing, grant_cmd(priority=500, expire_at=T0 - 1),
     R.INVALID_PRIORITY),
    ("invalid_low_balance_beats_invalid_percent", _nothing,
     configure_cmd(low_balance_units=-1, usage_low_percent=0), R.INVALID_AMOUNT),
    ("invalid_amount_beats_unknown_reservation", _nothing,
     release_cmd(reservation_id="nope", consumed_amount=-1), R.INVALID_AMOUNT),
    ("key_conflict_beats_grant_not_found", _keyed_consume,
     lambda c: VoidGrant(grant_id="nope", idempotency_key="k"), R.IDEMPOTENCY_KEY_REUSED),
    ("key_conflict_beats_reservation_not_found", _keyed_consume,
     release_cmd(reservation_id="nope", idempotency_key="k"), R.IDEMPOTENCY_KEY_REUSED),
    ("key_conflict_beats_grant_id_taken", _keyed_consume,
     grant_cmd(grant_id="g1", idempotency_key="k"), R.IDEMPOTENCY_KEY_REUSED),
    ("key_conflict_beats_insufficient_credits", _keyed_consume,
     consume_cmd(amount=10_000, idempotency_key="k"), R.IDEMPOTENCY_KEY_REUSED),
    ("grant_id_taken_beats_balance_limit", _at_max, grant_cmd(grant_id="g1", amount=1),
     R.GRANT_ID_TAKEN),
    ("reservation_id_taken_beats_insufficient", _reserved, reserve_cmd(reservation_id="r1",
     amount=10_000), R.RESERVATION_ID_TAKEN),
    ("pool_mismatch_beats_not_active", _released, release_cmd(currency_id="other"),
     R.RESERVATION_POOL_MISMATCH),
    ("pool_mismatch_beats_release_exceeds", _reserved,
     release_cmd(currency_id="other", consumed_amount=10_000), R.RESERVATION_POOL_MISMATCH),
    ("not_active_beats_release_exceeds", _released, release_cmd(consumed_amount=10_000),
     R.RESERVATION_NOT_ACTIVE),
    ("voided_beats_a_later_expiry", lambda c: (c.grant("g1", 100, expire_at=T0 + 10), c.void("g1"),
     c.tick(T0 + 20)), lambda c: VoidGrant(grant_id="g1"), R.GRANT_ALREADY_VOIDED),
]


@pytest.mark.parametrize(
    "setup, make_cmd, code", [pytest.param(*row[1:], id=row[0]) for row in PRECEDENCE]
)
def test_the_first_failing_check_in_precedence_order_is_the_refusal(setup, make_cmd, code):
    c = Customer()
    setup(c)
    assert_refused(c, make_cmd(c), code)


def test_insufficient_credits_is_refused_whole_with_nothing_consumed():
    c = Customer()
    c.grant("a", 50, PROMO)
    c.grant("b", 40, PAID)
    c.consume(5)
    reply = assert_refused(c, Consume(currency_id=CUR, amount=86), R.INSUFFICIENT_CREDITS, "amount")
    assert reply.message == "requested 86 units, 85 available"
    assert (c.g("a").consumed, c.g("b").consumed, c.balance) == (5, 0, 85)
    # Exactly the balance is fine.
    reply, _ = c.ok(Consume(currency_id=CUR, amount=85))
    assert list(reply.breakdown) == [("a", 45), ("b", 40)] and c.balance == 0


# ---------------------------------------------------------------------------------------
# 3. Hard and soft limits, overdraft and repayment


def test_pools_have_a_hard_limit_by_default():
    c = Customer()
    reply, _ = c.grant("a", 100)
    assert reply.balance.hard_limit is True
    assert_refused(c, Consume(currency_id=CUR, amount=101), R.INSUFFICIENT_CREDITS)
    assert OD not in c.state.grants


def test_soft_limit_puts_the_deficit_on_an_overdraft_grant_and_the_balance_goes_negative():
    c = Customer()
    reply, _ = c.configure(hard_limit=False)
    assert reply.balance.hard_limit is False
    c.grant("a", 100)
    reply, fx = c.consume(150)
    assert reply.overdraft == 50
    assert list(reply.breakdown) == [("a", 100), (OD, 50)]  # the overdraft last
    assert rows(fx) == [(L.CREDITS_CONSUMED, "a", -100), (L.CREDITS_CONSUMED, OD, -50)]
    assert reply.balance.current_balance == -50 == c.balance
    assert reply.balance.total_consumed == 150
    od = c.g(OD)
    assert od.grant_type is OVERDRAFT and od.status is GrantStatus.ACTIVE
    assert (od.amount, od.available, od.consumed) == (0, -50, 50)
    # Further consumption deepens the same overdraft.
    reply, _ = c.consume(7)
    assert list(reply.breakdown) == [(OD, 7)] and reply.overdraft == 7 and c.balance == -57


def test_next_grant_repays_the_overdraft_first_with_transfer_entries():
    c = Customer()
    c.configure(hard_limit=False)
    c.grant("a", 100)
    c.consume(150)
    reply, fx = c.grant("b", 80)
    assert rows(fx) == [
        (L.CREDITS_GRANTED, "b", 80),
        (L.CREDITS_CONSUMPTION_TRANSFER_SOURCE, "b", -50),
        (L.CREDITS_CONSUMPTION_TRANSFER_TARGET, OD, 50),
    ]
    assert len({e.op_seq for e in fx.entries}) == 1
    assert reply.balance.current_balance == 30 == c.balance
    assert reply.grant.available == 30 and reply.grant.consumed_amount == 50
    assert (c.g(OD).available, c.g(OD).consumed) == (0, 0)
    # Consumption moved, the total did not.
    assert (c.pool.granted, c.pool.consumed) == (180, 150)


def test_soft_limit_balance_arithmetic_is_exact_through_overdraw_and_repay_cycles():
    c = Customer()
    c.configure(hard_limit=False)
    steps = [
        (lambda: c.grant("a", 100), 100),
        (lambda: c.consume(150), -50),
        (lambda: c.grant("b", 80), 30),
        (lambda: c.consume(100), -70),
        (lambda: c.grant("c", 20), -50),  # repays part of the deficit, nothing available
        (lambda: c.grant("d", 200), 150),
        (lambda: c.consume(150), 0),
    ]
    for run, balance in steps:
        reply, _ = run()
        assert not isinstance(reply, Refused), reply
        assert c.balance == balance
    assert (c.pool.granted, c.pool.consumed) == (400, 400)
    assert [c.g(x).consumed for x in "abcd"] == [100, 80, 20, 200]
    assert c.g(OD).consumed == 0


def test_a_grant_smaller_than_the_deficit_repays_part_of_it_and_leaves_nothing_available():
    c = Customer()
    c.configure(hard_limit=False)
    c.consume(100)
    reply, fx = c.grant("a", 30)
    assert rows(fx) == [
        (L.CREDITS_GRANTED, "a", 30),
        (L.CREDITS_CONSUMPTION_TRANSFER_SOURCE, "a", -30),
        (L.CREDITS_CONSUMPTION_TRANSFER_TARGET, OD, 30),
    ]
    assert c.balance == -70 and c.g("a").available == 0 and c.g(OD).available == -70
    assert E.GRANT_DEPLETED in types(fx)
    assert_refused(c, Reserve(reservation_id="r", currency_id=CUR, amount=1, expires_at=T0 + 9),
                   R.INSUFFICIENT_CREDITS)


def test_a_soft_limit_pool_without_any_grant_overdraws_from_the_first_consumption():
    c = Customer()
    c.configure(hard_limit=False)
    reply, fx = c.consume(10)
    assert list(reply.breakdown) == [(OD, 10)] and reply.overdraft == 10 and c.balance == -10


def test_scheduled_activation_and_payment_confirmation_repay_the_overdraft_too():
    c = Customer()
    c.configure(hard_limit=False)
    c.consume(60)
    c.grant("later", 40, effective_at=T0 + 100)
    c.grant("invoice", 40, await_payment=True)
    assert c.balance == -60
    _, fx = c.tick(T0 + 100)
    assert rows(fx)[1:] == [
        (L.CREDITS_CONSUMPTION_TRANSFER_SOURCE, "later", -40),
        (L.CREDITS_CONSUMPTION_TRANSFER_TARGET, OD, 40),
    ]
    assert c.balance == -20
    _, fx = c.confirm("invoice")
    assert rows(fx) == [
        (L.CREDITS_GRANTED, "invoice", 40),
        (L.CREDITS_CONSUMPTION_TRANSFER_SOURCE, "invoice", -20),
        (L.CREDITS_CONSUMPTION_TRANSFER_TARGET, OD, 20),
    ]
    assert c.balance == 20


def test_repayment_from_returned_holds_follows_consumption_order():
    c = Customer()
    c.configure(hard_limit=False)
    c.grant("first", 50, priority=10)
    c.grant("second", 50, priority=20)
    c.reserve("r", 100)
    c.consume(30)  # all on the overdraft: everything else is held
    assert c.balance == -30
    _, fx = c.release("r", 0)
    assert rows(fx) == [
        (L.CREDITS_RESERVATION_RELEASED, "first", 50),
        (L.CREDITS_RESERVATION_RELEASED, "second", 50),
        (L.CREDITS_CONSUMPTION_TRANSFER_SOURCE, "first", -30),
        (L.CREDITS_CONSUMPTION_TRANSFER_TARGET, OD, 30),
    ]
    assert c.balance == 70 and c.g("first").available == 20 and c.g("second").available == 50


def test_switching_back_to_a_hard_limit_refuses_consumption_while_in_deficit():
    c = Customer()
    c.configure(hard_limit=False)
    c.grant("a", 10)
    c.consume(30)
    c.configure(hard_limit=True)
    reply = assert_refused(c, Consume(currency_id=CUR, amount=1), R.INSUFFICIENT_CREDITS)
    assert reply.message == "requested 1 units, 0 available"
    c.grant("b", 25)
    assert c.balance == 5
    c.ok(Consume(currency_id=CUR, amount=5))


# ---------------------------------------------------------------------------------------
# 4. Void, expiry, scheduled grants and payment


def test_void_takes_the_remaining_credits_out_of_the_balance_at_once_and_keeps_what_was_consumed():
    c = Customer()
    c.grant("a", 100)
    c.grant("b", 50, priority=90)
    c.consume(30, at=T0 + 5)
    reply, fx = c.void("a", at=T0 + 10)
    assert isinstance(reply, GrantReply)
    assert rows(fx) == [(L.CREDITS_VOIDED, "a", -70)]
    assert reply.grant.status is GrantStatus.VOIDED and reply.grant.voided_at == T0 + 10
    assert reply.grant.consumed_amount == 30 and reply.grant.available == 0
    assert reply.balance.current_balance == 50 == c.balance
    assert reply.balance.total_consumed == 30
    assert (c.g("a").voided, c.pool.voided) == (70, 70)
    assert types(fx) == [E.GRANT_UPDATED]
    reply, _ = c.consume(50)
    assert list(reply.breakdown) == [("b", 50)]


def test_voiding_twice_is_refused_as_already_voided():
    c = Customer()
    _voided(c)
    assert_refused(c, VoidGrant(grant_id="g1"), R.GRANT_ALREADY_VOIDED)


def test_voiding_an_expired_grant_is_refused_as_already_expired():
    c = Customer()
    c.grant("g1", 100, expire_at=T0 + 10)
    # The expiry is due at the very millisecond of the void, so it happens first.
    c.tick(T0 + 10)
    assert c.g("g1").status is GrantStatus.EXPIRED
    assert_refused(c, VoidGrant(grant_id="g1"), R.GRANT_ALREADY_EXPIRED)


def test_voiding_at_the_expiry_millisecond_finds_the_grant_already_expired():
    c = Customer()
    c.grant("g1", 100, expire_at=T0 + 10)
    reply, fx = c.void("g1", at=T0 + 10)
    assert isinstance(reply, Refused) and reply.code == R.GRANT_ALREADY_EXPIRED
    assert rows(fx) == [(L.CREDITS_EXPIRED, "g1", -100)]  # the timer fired, not the void


def test_voiding_a_scheduled_grant_means_it_never_becomes_active():
    c = Customer()
    c.grant("s", 100, effective_at=T0 + 500, expire_at=T0 + 900)
    reply, fx = c.void("s", at=T0 + 100)
    assert reply.grant.status is GrantStatus.VOIDED and c.balance == 0
    assert rows(fx) == [(L.CREDITS_VOIDED, "s", 0)]  # nothing moves: a 0-amount entry
    _, fx = c.tick(T0 + 1_000)
    assert not fx.entries and not fx.events
    assert c.g("s").status is GrantStatus.VOIDED and not c.g("s").activated
    assert c.pool.granted == 0
    assert not any(e.event_type is L.CREDITS_GRANTED for e in c.entries)


def test_voiding_a_payment_pending_grant_means_it_can_no_longer_be_confirmed():
    c = Customer()
    c.grant("inv", 100, await_payment=True)
    reply, _ = c.void("inv")
    assert reply.grant.status is GrantStatus.VOIDED
    assert_refused(c, ConfirmPayment(grant_id="inv"), R.GRANT_NOT_PENDING)
    assert c.balance == 0 and c.pool.granted == 0


def test_void_leaves_held_credits_with_their_reservation_and_voids_them_when_it_settles():
    c = Customer()
    c.grant("a", 100)
    c.reserve("r", 40)
    _, fx = c.void("a")
    assert rows(fx) == [(L.CREDITS_VOIDED, "a", -60)]
    assert (c.balance, c.pool.reserved, c.g("a").held) == (0, 40, 40)
    _, fx = c.release("r", 10)
    assert rows(fx) == [
        (L.CREDITS_RESERVATION_RELEASED, "a", 40),
        (L.CREDITS_CONSUMED, "a", -10),
        (L.CREDITS_VOIDED, "a", -30),
    ]
    assert all(e.reservation_id == "r" for e in fx.entries)
    a = c.g("a")
    assert (a.consumed, a.voided, a.held, a.available) == (10, 90, 0, 0)
    assert (c.balance, c.pool.reserved) == (0, 0)


def test_a_grant_is_usable_until_the_millisecond_before_expire_at_and_not_at_it():
    c = Customer()
    c.grant("a", 100, expire_at=T0 + 1_000)
    c.ok(Consume(currency_id=CUR, amount=10), at=T0 + 999)
    reply, fx = c.consume(10, at=T0 + 1_000)
    assert isinstance(reply, Refused) and reply.code == R.INSUFFICIENT_CREDITS
    assert rows(fx) == [(L.CREDITS_EXPIRED, "a", -90)]
    assert fx.entries[0].timestamp == T0 + 1_000
    assert c.g("a").status is GrantStatus.EXPIRED
    assert (c.g("a").consumed, c.g("a").expired, c.pool.expired) == (10, 90, 90)


def test_expiry_fires_on_tick_at_expire_at_exactly_and_not_before():
    c = Customer()
    c.grant("a", 100, expire_at=T0 + 1_000)
    reply, fx = c.tick(T0 + 999)
    assert isinstance(reply, TickReply) and reply.next_due == T0 + 1_000
    assert not fx
    reply, fx = c.tick(T0 + 1_000)
    assert rows(fx) == [(L.CREDITS_EXPIRED, "a", -100)]
    assert reply.next_due is None


def test_timers_fire_in_time_order_at_their_own_due_time_when_time_jumps():
    c = Customer()
    c.grant("soon", 10, expire_at=T0 + 300)
    c.grant("later", 20, effective_at=T0 + 200, expire_at=T0 + 400)
    c.grant("scheduled", 30, effective_at=T0 + 100)
    _, fx = c.consume(5, at=T0 + 10_000)
    assert [(e.event_type, e.grant_id, e.amount, e.timestamp) for e in fx.entries] == [
        (L.CREDITS_GRANTED, "scheduled", 30, T0 + 100),
        (L.CREDITS_GRANTED, "later", 20, T0 + 200),
        (L.CREDITS_EXPIRED, "soon", -10, T0 + 300),
        (L.CREDITS_EXPIRED, "later", -20, T0 + 400),
        (L.CREDITS_CONSUMED, "scheduled", -5, T0 + 10_000),
    ]
    assert c.balance == 25


def test_a_scheduled_grant_becomes_active_at_effective_at_exactly():
    c = Customer()
    reply, fx = c.grant("s", 100, effective_at=T0 + 500)
    assert reply.grant.status is GrantStatus.SCHEDULED
    assert reply.balance.current_balance == 0 and not fx.entries and not fx.events
    reply, _ = c.tick(T0 + 1)
    assert reply.next_due == T0 + 500
    assert_refused(c, Consume(currency_id=CUR, amount=1), R.INSUFFICIENT_CREDITS)
    c.now = T0 + 499
    assert_refused(c, Consume(currency_id=CUR, amount=1), R.INSUFFICIENT_CREDITS)
    reply, fx = c.consume(1, at=T0 + 500)
    assert isinstance(reply, ConsumeReply)
    assert rows(fx) == [(L.CREDITS_GRANTED, "s", 100), (L.CREDITS_CONSUMED, "s", -1)]
    assert types(fx)[0] is E.GRANTED
    assert c.g("s").status is GrantStatus.ACTIVE and c.g("s").updated_at == T0 + 500


def test_a_payment_pending_grant_holds_nothing_until_payment_is_confirmed():
    c = Customer()
    reply, fx = c.grant("inv", 100, await_payment=True)
    assert reply.grant.status is GrantStatus.PAYMENT_PENDING
    assert not fx.entries and E.GRANTED not in types(fx)
    assert_refused(c, Consume(currency_id=CUR, amount=1), R.INSUFFICIENT_CREDITS)
    reply, fx = c.confirm("inv", at=T0 + 50)
    assert reply.grant.status is GrantStatus.ACTIVE
    assert rows(fx) == [(L.CREDITS_GRANTED, "inv", 100)]
    assert types(fx)[0] is E.GRANTED and fx.events[0].amount == 100
    assert reply.balance.current_balance == 100
    assert_refused(c, ConfirmPayment(grant_id="inv"), R.GRANT_NOT_PENDING)


def test_confirming_payment_before_effective_at_schedules_the_grant():
    c = Customer()
    c.grant("inv", 100, await_payment=True, effective_at=T0 + 1_000)
    reply, fx = c.confirm("inv", at=T0 + 10)
    assert reply.grant.status is GrantStatus.SCHEDULED and not fx.entries
    _, fx = c.tick(T0 + 1_000)
    assert rows(fx) == [(L.CREDITS_GRANTED, "inv", 100)] and c.balance == 100


def test_a_payment_pending_grant_that_reaches_expire_at_can_no_longer_be_confirmed():
    c = Customer()
    c.grant("inv", 100, await_payment=True, expire_at=T0 + 100)
    c.tick(T0 + 100)
    assert c.g("inv").status is GrantStatus.EXPIRED
    assert_refused(c, ConfirmPayment(grant_id="inv"), R.GRANT_NOT_PENDING)
    assert c.balance == 0 and c.pool.granted == 0


# ---------------------------------------------------------------------------------------
# 5. Reservations


def test_a_reservation_holds_credits_in_consumption_order_and_keeps_them_from_others():
    c = Customer()
    c.grant("a", 30, priority=1)
    c.grant("b", 100, priority=2)
    reply, fx = c.reserve("r", 50, ttl=1_000)
    assert isinstance(reply, ReserveReply)
    assert reply.reservation.status is ReservationStatus.ACTIVE
    assert reply.reservation.expires_at == T0 + 1_000
    assert rows(fx) == [(L.CREDITS_RESERVED, "a", -30), (L.CREDITS_RESERVED, "b", -20)]
    assert all(e.reservation_id == "r" for e in fx.entries)
    assert c.state.reservations["r"].holds == {"a": 30, "b": 20}
    assert (reply.balance.current_balance, reply.balance.reserved) == (80, 50)
    assert_refused(c, Consume(currency_id=CUR, amount=81), R.INSUFFICIENT_CREDITS)
    assert_refused(c, Reserve(reservation_id="r2", currency_id=CUR, amount=81,
                              expires_at=T0 + 10), R.INSUFFICIENT_CREDITS)
    reply, _ = c.consume(80)
    assert list(reply.breakdown) == [("b", 80)]
    assert c.balance == 0 and c.pool.reserved == 50


def test_release_consumes_from_the_holds_in_order_and_returns_the_rest():
    c = Customer()
    c.grant("a", 30, priority=1)
    c.grant("b", 100, priority=2)
    c.reserve("r", 50)
    reply, fx = c.release("r", 40, at=T0 + 5, feature_id="f", currency_id=CUR)
    assert isinstance(reply, ReleaseReply)
    assert reply.reservation.status is ReservationStatus.RELEASED
    assert reply.reservation.consumed_amount == 40
    assert rows(fx) == [
        (L.CREDITS_RESERVATION_RELEASED, "a", 30),
        (L.CREDITS_CONSUMED, "a", -30),
        (L.CREDITS_RESERVATION_RELEASED, "b", 20),
        (L.CREDITS_CONSUMED, "b", -10),
    ]
    assert [e.feature_id for e in fx.entries if e.event_type is L.CREDITS_CONSUMED] == ["f", "f"]
    assert (reply.balance.current_balance, reply.balance.reserved) == (90, 0)
    assert reply.balance.total_consumed == 40
    assert (c.g("a").consumed, c.g("b").consumed, c.g("b").available) == (30, 10, 90)
    assert c.state.reservations["r"].released_at == T0 + 5


@pytest.mark.parametrize("consumed, balance", [(0, 100), (1, 99), (39, 61), (40, 60)])
def test_release_with_consumed_at_most_reserved_returns_the_rest(consumed, balance):
    c = Customer()
    c.grant("a", 100)
    c.reserve("r", 40)
    reply, _ = c.release("r", consumed)
    assert reply.balance.current_balance == balance == c.balance
    assert c.pool.consumed == consumed and c.pool.reserved == 0


def test_release_beyond_the_reservation_consumes_the_excess_normally():
    c = Customer()
    c.grant("a", 100)
    c.reserve("r", 40)
    reply, fx = c.release("r", 45)
    assert reply.reservation.consumed_amount == 45
    assert reply.balance.current_balance == c.balance == 55
    assert c.pool.consumed == 45 and c.pool.reserved == 0
    # Every row of the release names the reservation, the excess included.
    assert {e.reservation_id for e in fx.entries} == {"r"}


def test_release_beyond_the_reservation_and_the_balance_is_refused_whole():
    c = Customer()
    c.grant("a", 100)
    c.reserve("r", 40)
    reply = assert_refused(c, Release(reservation_id="r", consumed_amount=101),
                           R.INSUFFICIENT_CREDITS)
    assert reply.field == "consumedAmount"
    assert c.state.reservations["r"].status is ReservationStatus.ACTIVE
    assert c.balance == 60
    c.ok(Release(reservation_id="r", consumed_amount=100))
    assert c.balance == 0


def test_a_reservation_that_reaches_its_ttl_returns_everything():
    c = Customer()
    c.grant("a", 30, priority=1)
    c.grant("b", 100, priority=2)
    c.reserve("r", 50, ttl=1_000)
    _, fx = c.tick(T0 + 999)
    assert not fx
    _, fx = c.tick(T0 + 1_000)
    assert rows(fx) == [
        (L.CREDITS_RESERVATION_EXPIRED, "a", 30),
        (L.CREDITS_RESERVATION_EXPIRED, "b", 20),
    ]
    assert all(e.timestamp == T0 + 1_000 for e in fx.entries)
    r = c.state.reservations["r"]
    assert (r.status, r.consumed_amount) == (ReservationStatus.EXPIRED, 0)
    assert (c.balance, c.pool.reserved, c.pool.consumed) == (130, 0, 0)
    assert_refused(c, Release(reservation_id="r", consumed_amount=0), R.RESERVATION_NOT_ACTIVE)


def test_a_hold_on_a_grant_that_expires_while_reserved_is_still_consumed_by_the_release():
    c = Customer()
    c.grant("a", 100, expire_at=T0 + 100)
    c.reserve("r", 60, ttl=10_000)
    _, fx = c.tick(T0 + 100)
    assert rows(fx) == [(L.CREDITS_EXPIRED, "a", -40)]
    assert fx.events[0].type is E.EXPIRED and fx.events[0].amount == 40
    assert (c.balance, c.pool.reserved, c.g("a").held) == (0, 60, 60)
    reply, fx = c.release("r", 20, at=T0 + 200)
    assert rows(fx) == [
        (L.CREDITS_RESERVATION_RELEASED, "a", 60),
        (L.CREDITS_CONSUMED, "a", -20),
        (L.CREDITS_EXPIRED, "a", -40),
    ]
    a = c.g("a")
    assert (a.consumed, a.expired, a.held, a.available) == (20, 80, 0, 0)
    assert reply.balance.current_balance == 0 and reply.balance.total_consumed == 20
    assert c.pool.expired == 80


def test_a_hold_on_an_expired_grant_expires_in_full_when_the_reservation_ttl_passes():
    c = Customer()
    c.grant("a", 100, expire_at=T0 + 100)
    c.reserve("r", 60, ttl=500)
    _, fx = c.tick(T0 + 10_000)
    assert [(e.event_type, e.amount, e.timestamp) for e in fx.entries] == [
        (L.CREDITS_EXPIRED, -40, T0 + 100),
        (L.CREDITS_RESERVATION_EXPIRED, 60, T0 + 500),
        (L.CREDITS_EXPIRED, -60, T0 + 500),
    ]
    assert (c.g("a").expired, c.g("a").consumed, c.balance) == (100, 0, 0)


def test_holds_return_before_the_grant_expires_when_both_are_due_in_the_same_millisecond():
    c = Customer()
    c.grant("a", 100, expire_at=T0 + 100)
    c.reserve("r", 60, ttl=100)
    _, fx = c.tick(T0 + 100)
    assert rows(fx) == [
        (L.CREDITS_RESERVATION_EXPIRED, "a", 60),
        (L.CREDITS_EXPIRED, "a", -100),
    ]
    assert fx.events[[e.type for e in fx.events].index(E.EXPIRED)].amount == 100


def test_a_released_reservation_cannot_be_released_again():
    c = Customer()
    _released(c)
    assert_refused(c, Release(reservation_id="r1", consumed_amount=0), R.RESERVATION_NOT_ACTIVE)


def test_reservations_never_overdraw_even_under_a_soft_limit():
    c = Customer()
    c.configure(hard_limit=False)
    c.grant("a", 50)
    assert_refused(c, Reserve(reservation_id="r", currency_id=CUR, amount=51, expires_at=T0 + 5),
                   R.INSUFFICIENT_CREDITS)
    c.ok(Reserve(reservation_id="r", currency_id=CUR, amount=50, expires_at=T0 + 5))


def test_consumption_under_a_soft_limit_overdraws_around_held_credits():
    c = Customer()
    c.configure(hard_limit=False)
    c.grant("a", 100)
    c.reserve("r", 60)
    reply, _ = c.consume(50)
    assert list(reply.breakdown) == [("a", 40), (OD, 10)] and c.balance == -10
    c.release("r", 60)
    assert c.balance == -10 and c.pool.consumed == 110
    c2 = Customer("cust-2")
    c2.configure(hard_limit=False)
    c2.grant("a", 100)
    c2.reserve("r", 60)
    c2.consume(50)
    c2.release("r", 0)  # the returned hold repays the overdraft
    assert c2.balance == 50 and c2.g(OD).available == 0


def test_balance_limit_counts_reserved_credits():
    c = Customer()
    c.grant("a", AMOUNT_UNITS_MAX)
    c.reserve("r", 10)
    assert_refused(c, grant_cmd(amount=1)(c), R.BALANCE_LIMIT_EXCEEDED)
    c.release("r", 10)
    c.ok(grant_cmd(amount=10)(c))
    assert c.balance == AMOUNT_UNITS_MAX


def test_balance_never_exceeds_the_maximum_when_a_scheduled_grant_activates():
    c = Customer()
    c.grant("later", AMOUNT_UNITS_MAX, effective_at=T0 + 100)
    c.grant("invoice", AMOUNT_UNITS_MAX, await_payment=True)
    c.grant("now", AMOUNT_UNITS_MAX)
    c.confirm("invoice")
    c.tick(T0 + 100)
    assert c.balance <= AMOUNT_UNITS_MAX


# ---------------------------------------------------------------------------------------
# 6. Threshold events


def test_grant_usage_low_fires_once_when_80_percent_is_consumed_and_depleted_once_at_zero():
    c = Customer()
    c.grant("a", 100, priority=1)
    c.grant("big", 10_000, priority=2)  # keeps the pool's own thresholds out of the way
    _, fx = c.consume(79)
    assert types(fx) == []
    _, fx = c.consume(1)
    assert types(fx) == [E.GRANT_USAGE_LOW]
    ev = fx.events[0]
    assert ev.grant_id == "a" and ev.grant.consumed_amount == 80
    _, fx = c.consume(19)
    assert types(fx) == []
    _, fx = c.consume(1)
    assert types(fx) == [E.GRANT_DEPLETED] and fx.events[0].grant_id == "a"
    _, fx = c.consume(10)
    assert types(fx) == []


def test_events_fired_by_a_consumption_carry_the_balance_right_after_it():
    c = Customer()
    c.grant("a", 100)
    reply, fx = c.consume(100)
    assert types(fx) == [E.GRANT_USAGE_LOW, E.GRANT_DEPLETED, E.BALANCE_USAGE_LOW,
                         E.BALANCE_DEPLETED]
    for ev in fx.events:
        assert ev.balance == reply.balance, ev.type  # balance 0, total consumed 100
    c2 = Customer("cust-2")
    c2.grant("a", 100, priority=1)
    c2.grant("big", 10_000, priority=2)
    c2.consume(79)
    reply, fx = c2.consume(1)
    assert types(fx) == [E.GRANT_USAGE_LOW]
    assert fx.events[0].balance.current_balance == 10_020 == reply.balance.current_balance
    assert fx.events[0].balance.total_consumed == 80 == fx.events[0].grant.consumed_amount


def test_one_consumption_crossing_both_lines_fires_usage_low_then_depleted():
    c = Customer()
    c.grant("a", 100, priority=1)
    c.grant("big", 10_000, priority=2)
    _, fx = c.consume(150)
    assert types(fx) == [E.GRANT_USAGE_LOW, E.GRANT_DEPLETED]
    assert {e.grant_id for e in fx.events} == {"a"}


@pytest.mark.parametrize("percent, fires_at", [(50, 50), (1, 1), (100, 100), (33, 33)])
def test_grant_usage_low_follows_the_pools_usage_low_percent(percent, fires_at):
    c = Customer()
    c.configure(usage_low_percent=percent)
    c.grant("a", 100, priority=1)
    c.grant("big", 10_000, priority=2)
    if fires_at > 1:
        _, fx = c.consume(fires_at - 1)
        assert E.GRANT_USAGE_LOW not in types(fx)
    _, fx = c.consume(1)
    assert [e.grant_id for e in fx.events if e.type is E.GRANT_USAGE_LOW] == ["a"]


def test_lowering_usage_low_percent_fires_for_grants_already_past_the_new_line():
    c = Customer()
    c.grant("a", 100, priority=1)
    c.grant("big", 10_000, priority=2)
    c.consume(60)
    reply, fx = c.configure(usage_low_percent=50)
    assert reply.usage_low_percent == 50
    assert [(e.type, e.grant_id) for e in fx.events] == [(E.GRANT_USAGE_LOW, "a")]


def test_raising_usage_low_percent_rearms_the_grant_event():
    c = Customer()
    c.grant("a", 100, priority=1)
    c.grant("big", 10_000, priority=2)
    _, fx = c.consume(80)
    assert types(fx) == [E.GRANT_USAGE_LOW]
    _, fx = c.configure(usage_low_percent=90)
    assert types(fx) == []
    _, fx = c.consume(9)
    assert types(fx) == []
    _, fx = c.consume(1)
    assert types(fx) == [E.GRANT_USAGE_LOW]


@pytest.mark.parametrize("end", ["void", "expire"])
def test_grant_usage_low_is_not_announced_for_a_voided_or_expired_grant(end):
    c = Customer()
    c.grant("a", 100, priority=1, expire_at=T0 + 1_000)
    c.grant("big", 10_000, priority=2)
    c.consume(60)
    if end == "void":
        c.void("a")
    else:
        c.tick(T0 + 1_000)
    _, fx = c.configure(usage_low_percent=50)
    assert [e for e in fx.events if e.type is E.GRANT_USAGE_LOW] == []


def test_grant_depleted_waits_while_credits_are_held_and_fires_when_the_release_consumes_them():
    c = Customer()
    c.grant("a", 100, priority=1)
    c.grant("big", 10_000, priority=2)
    c.consume(50)
    _, fx = c.reserve("r", 50)
    assert E.GRANT_DEPLETED not in types(fx)
    _, fx = c.release("r", 50)
    assert [(e.type, e.grant_id) for e in fx.events] == [(E.GRANT_USAGE_LOW, "a"),
                                                          (E.GRANT_DEPLETED, "a")]


def test_grant_depleted_fires_when_repaying_an_overdraft_uses_the_whole_grant():
    c = Customer()
    c.configure(hard_limit=False)
    c.consume(100)
    _, fx = c.grant("a", 100)
    assert [(e.type, e.grant_id) for e in fx.events if e.grant_id == "a"] == [
        (E.GRANTED, "a"), (E.GRANT_USAGE_LOW, "a"), (E.GRANT_DEPLETED, "a")]


def test_balance_usage_low_in_percentage_mode_fires_once_per_crossing_and_rearms():
    c = Customer()
    c.grant("a", 100)
    _, fx = c.consume(79)
    assert E.BALANCE_USAGE_LOW not in types(fx)
    _, fx = c.consume(1)  # balance 20 of 100 granted: 80% used
    assert types(fx).count(E.BALANCE_USAGE_LOW) == 1
    ev = next(e for e in fx.events if e.type is E.BALANCE_USAGE_LOW)
    assert ev.grant_id is None and ev.balance.current_balance == 20
    _, fx = c.consume(5)
    assert E.BALANCE_USAGE_LOW not in types(fx)
    _, fx = c.grant("b", 100)  # balance 115 of 200: above the line again, re-armed
    assert E.BALANCE_USAGE_LOW not in types(fx)
    assert c.pool.usage_low_fired is False
    _, fx = c.consume(74)  # 41 of 200 left
    assert E.BALANCE_USAGE_LOW not in types(fx)
    _, fx = c.consume(1)  # 40 of 200 left
    assert types(fx).count(E.BALANCE_USAGE_LOW) == 1


def test_balance_usage_low_percentage_follows_usage_low_percent():
    c = Customer()
    c.configure(usage_low_percent=50)
    c.grant("a", 100)
    _, fx = c.consume(49)
    assert E.BALANCE_USAGE_LOW not in types(fx)
    _, fx = c.consume(1)
    assert E.BALANCE_USAGE_LOW in types(fx)


def test_balance_usage_low_in_absolute_mode_fires_at_the_configured_balance_and_rearms():
    c = Customer()
    c.grant("a", 100)
    reply, fx = c.configure(low_balance_units=30)
    assert reply.low_balance_units == 30 and types(fx) == []
    _, fx = c.consume(69)
    assert E.BALANCE_USAGE_LOW not in types(fx)  # 31 left
    _, fx = c.consume(1)
    assert E.BALANCE_USAGE_LOW in types(fx)  # 30 left
    _, fx = c.consume(1)
    assert E.BALANCE_USAGE_LOW not in types(fx)
    c.grant("b", 100)  # 129: re-armed
    _, fx = c.consume(98)
    assert E.BALANCE_USAGE_LOW not in types(fx)  # 31
    _, fx = c.consume(1)
    assert E.BALANCE_USAGE_LOW in types(fx)


def test_absolute_low_balance_overrides_the_percentage_until_cleared():
    c = Customer()
    c.grant("a", 1_000)
    c.configure(low_balance_units=100)
    _, fx = c.consume(850)  # 150 left: 85% used but above the absolute line
    assert E.BALANCE_USAGE_LOW not in types(fx)
    reply, fx = c.configure(clear_low_balance=True)
    assert reply.low_balance_units is None
    assert types(fx) == [E.BALANCE_USAGE_LOW]  # back to percentage mode: 85% used


def test_balance_depleted_fires_once_per_crossing_and_rearms_after_a_top_up():
    c = Customer()
    _, fx = c.grant("a", 100)
    assert E.BALANCE_DEPLETED not in types(fx)  # an empty pool starts out depleted
    _, fx = c.consume(100)
    assert types(fx).count(E.BALANCE_DEPLETED) == 1
    c.grant("b", 50)
    _, fx = c.consume(50)
    assert types(fx).count(E.BALANCE_DEPLETED) == 1


def test_balance_depleted_fires_when_a_reservation_holds_the_rest():
    c = Customer()
    c.grant("a", 100)
    _, fx = c.reserve("r", 100)
    assert E.BALANCE_DEPLETED in types(fx)
    _, fx = c.release("r", 0)
    assert E.BALANCE_DEPLETED not in types(fx) and c.pool.depleted_fired is False


def test_balance_depleted_fires_once_when_overdrawing_further():
    c = Customer()
    c.configure(hard_limit=False)
    c.grant("a", 100)
    _, fx = c.consume(150)
    assert types(fx).count(E.BALANCE_DEPLETED) == 1
    _, fx = c.consume(10)
    assert E.BALANCE_DEPLETED not in types(fx)


@pytest.mark.parametrize("end", ["void", "expire"])
def test_balance_depleted_fires_when_the_last_grant_is_voided_or_expires(end):
    c = Customer()
    c.grant("a", 100, expire_at=T0 + 50)
    _, fx = c.void("a") if end == "void" else c.tick(T0 + 50)
    assert types(fx)[-1] is E.BALANCE_DEPLETED
    assert E.BALANCE_DEPLETED in types(fx)


def test_credits_granted_event_carries_the_amount_grant_and_balance():
    c = Customer()
    _, fx = c.grant("a", 250, PROMO, priority=7, metadata={"k": "v"})
    assert types(fx) == [E.GRANTED]
    ev = fx.events[0]
    assert (ev.grant_id, ev.amount, ev.customer_id, ev.currency_id) == ("a", 250, "cust-1", CUR)
    assert ev.grant.grant_type is PROMO and ev.grant.priority == 7
    assert ev.grant.metadata == {"k": "v"}
    assert ev.balance.current_balance == 250 and ev.timestamp == T0


def test_credits_expired_event_carries_the_forfeited_amount():
    c = Customer()
    c.grant("a", 100, expire_at=T0 + 50)
    c.consume(30)
    _, fx = c.tick(T0 + 50)
    ev = next(e for e in fx.events if e.type is E.EXPIRED)
    assert (ev.grant_id, ev.amount, ev.timestamp) == ("a", 70, T0 + 50)
    assert ev.grant.status is GrantStatus.EXPIRED and ev.balance.current_balance == 0


def test_credits_grant_updated_fires_on_void_with_the_voided_grant():
    c = Customer()
    c.grant("a", 100)
    c.grant("b", 100)
    _, fx = c.void("a")
    assert types(fx) == [E.GRANT_UPDATED]
    assert fx.events[0].grant.status is GrantStatus.VOIDED
    assert fx.events[0].balance.current_balance == 100


def test_event_and_ledger_sequence_numbers_are_gapless_per_customer():
    one, two = Customer("one"), Customer("two")
    for c in (one, two):
        c.configure(hard_limit=False, usage_low_percent=50)
        c.grant("a", 100, expire_at=T0 + 1_000)
        c.grant("s", 100, effective_at=T0 + 500)
        c.consume(60)
        c.reserve("r", 30, ttl=200)
        c.consume(5)  # refusals and replays in between must not leave gaps
        assert_refused(c, VoidGrant(grant_id="nope"), R.GRANT_NOT_FOUND)
        c.tick(T0 + 600)
        c.consume(200)
        c.void("s")
        c.grant("b", 500)
        c.tick(T0 + 2_000)
    assert [e.seq for e in one.events] == [e.seq for e in two.events]
    assert [e.seq for e in one.events] == list(range(1, len(one.events) + 1))
    assert [e.seq for e in one.entries] == list(range(1, len(one.entries) + 1))
    assert len(one.events) > 8
    assert {e.customer_id for e in one.events} == {"one"}


# ---------------------------------------------------------------------------------------
# 7. Idempotency


def test_same_key_same_body_returns_the_original_reply_and_applies_nothing_new():
    c = Customer()
    c.grant("a", 100)
    first, fx = c.consume(10, idempotency_key="k")
    assert len(fx.keys) == 1 and fx.keys[0].key == "k"
    c.consume(5, at=T0 + 10)
    before = snapshot(c.state)
    again, fx = c.consume(10, idempotency_key="k", at=T0 + 20)
    assert again == first and again.balance.current_balance == 90  # the original balance
    assert not fx and snapshot(c.state) == before
    assert c.balance == 85


@pytest.mark.parametrize(
    "do",
    [
        lambda c, key: c.grant("g", 10, idempotency_key=key),
        lambda c, key: c.reserve("r", 10, expires_at=T0 + 5_000, idempotency_key=key),
        lambda c, key: c.release("held", 10, idempotency_key=key),
        lambda c, key: c.void("v", idempotency_key=key),
        lambda c, key: c.confirm("inv", idempotency_key=key),
        lambda c, key: c.configure(low_balance_units=5, idempotency_key=key),
        lambda c, key: c.consume(10, idempotency_key=key),
    ],
    ids=["grant", "reserve", "release", "void", "confirm", "configure", "consume"],
)
def test_every_mutating_command_replays_its_original_reply(do):
    c = Customer()
    c.grant("base", 1_000)
    c.grant("v", 10, priority=99)
    c.grant("inv", 10, await_payment=True)
    c.reserve("held", 20)
    first, fx = do(c, "key")
    assert not isinstance(first, Refused), first
    before = snapshot(c.state)
    again, fx = do(c, "key")
    assert again == first and not fx
    assert snapshot(c.state) == before


def test_same_key_different_body_is_refused_as_key_reused():
    c = Customer()
    c.grant("a", 100)
    c.consume(10, idempotency_key="k")
    for cmd in [
        Consume(currency_id=CUR, amount=11, idempotency_key="k"),
        Consume(currency_id=CUR, amount=10, feature_id="f", idempotency_key="k"),
        Consume(currency_id="other", amount=10, idempotency_key="k"),
        Reserve(reservation_id="r", currency_id=CUR, amount=10, expires_at=T0 + 9,
                idempotency_key="k"),
    ]:
        reply = assert_refused(c, cmd, R.IDEMPOTENCY_KEY_REUSED, "idempotencyKey")
        assert reply.message == "this idempotency key was used with a different request"


@pytest.mark.parametrize(
    "first, again",
    [({"flag": True}, {"flag": 1}), ({"n": 1}, {"n": "1"}), ({"n": 1}, {"n": 2}),
     ({"a": "x"}, {"a": "x", "b": "y"}), ({"a": "x"}, None)],
    ids=["bool_vs_int", "int_vs_string", "other_value", "extra_key", "dropped"],
)
def test_a_replay_with_different_dimensions_is_a_different_body(first, again):
    c = Customer()
    c.grant("a", 100)
    c.consume(10, dimensions=first, idempotency_key="k")
    assert_refused(c, Consume(currency_id=CUR, amount=10, dimensions=again, idempotency_key="k"),
                   R.IDEMPOTENCY_KEY_REUSED)


def test_a_replay_with_metadata_keys_in_another_order_is_the_same_body():
    c = Customer()
    first, _ = c.grant("g", 10, metadata={"a": "1", "b": "2"}, idempotency_key="k")
    again, fx = c.grant("g", 10, metadata={"b": "2", "a": "1"}, idempotency_key="k")
    assert again == first and not fx


def test_refused_commands_are_not_remembered_so_a_retry_after_a_top_up_succeeds():
    c = Customer()
    c.grant("a", 50)
    reply, fx = c.consume(80, idempotency_key="k")
    assert reply.code == R.INSUFFICIENT_CREDITS and not fx.keys
    assert "k" not in c.state.idempotency
    c.grant("b", 50)
    reply, fx = c.consume(80, idempotency_key="k")
    assert isinstance(reply, ConsumeReply) and c.balance == 20
    again, _ = c.consume(80, idempotency_key="k")
    assert again == reply and c.balance == 20


def test_a_refused_key_may_be_reused_with_a_different_body():
    c = Customer()
    c.grant("a", 50)
    reply, _ = c.consume(80, idempotency_key="k")
    assert isinstance(reply, Refused)
    reply, _ = c.consume(40, idempotency_key="k")
    assert isinstance(reply, ConsumeReply) and c.balance == 10


def test_a_create_grant_retry_with_a_new_generated_id_is_the_same_request():
    c = Customer()
    first, _ = c.grant("id-1", 100, display_name="Top-up", idempotency_key="k")
    again, fx = c.grant("id-2", 100, display_name="Top-up", idempotency_key="k")
    assert again == first and again.grant.id == "id-1"
    assert not fx and "id-2" not in c.state.grants and c.balance == 100
    assert_refused(c, grant_cmd(grant_id="id-3", amount=101, display_name="Top-up",
                                idempotency_key="k")(c), R.IDEMPOTENCY_KEY_REUSED)


def test_a_late_replay_gets_its_original_reply_even_after_the_expiry_it_named_has_passed():
    c = Customer()
    first, _ = c.grant("g", 100, expire_at=T0 + 100, idempotency_key="kg")
    reserved, _ = c.reserve("r", 10, expires_at=T0 + 50, idempotency_key="kr")
    c.tick(T0 + 1_000)
    assert c.g("g").status is GrantStatus.EXPIRED
    before = snapshot(c.state)
    again, fx = c.grant("g", 100, expire_at=T0 + 100, idempotency_key="kg")
    assert again == first and not fx
    again, fx = c.reserve("r", 10, expires_at=T0 + 50, idempotency_key="kr")
    assert again == reserved and not fx
    assert snapshot(c.state) == before
    # Without the key the same command is judged against the time now.
    assert_refused(c, grant_cmd(grant_id="g2", expire_at=T0 + 100)(c), R.INVALID_DATES, "expireAt")


def test_a_reserve_retry_with_a_new_generated_id_is_the_same_request():
    c = Customer()
    c.grant("a", 100)
    first, _ = c.reserve("r-1", 10, expires_at=T0 + 1_000, idempotency_key="k")
    again, fx = c.reserve("r-2", 10, expires_at=T0 + 1_000, idempotency_key="k")
    assert again == first and again.reservation.id == "r-1"
    assert not fx and "r-2" not in c.state.reservations and c.pool.reserved == 10


def test_a_caller_request_hash_decides_what_the_same_body_is():
    c = Customer()
    c.grant("a", 100)
    first, _ = c.reserve("r-1", 10, expires_at=T0 + 1_000, idempotency_key="k", request_hash="h")
    # A TTL turned into an absolute expiry differs on the retry; the request hash does not.
    again, fx = c.reserve("r-2", 10, expires_at=T0 + 1_500, idempotency_key="k",
                          request_hash="h", at=T0 + 500)
    assert again == first and not fx
    assert_refused(c, Reserve(reservation_id="r-3", currency_id=CUR, amount=10,
                              expires_at=T0 + 2_000, idempotency_key="k", request_hash="h2"),
                   R.IDEMPOTENCY_KEY_REUSED)


def test_idempotency_keys_are_per_customer():
    one, two = Customer("one"), Customer("two")
    for c in (one, two):
        c.grant("a", 100)
        reply, _ = c.consume(10, idempotency_key="shared")
        assert isinstance(reply, ConsumeReply)
    assert one.balance == two.balance == 90


def test_read_only_commands_change_nothing():
    c = Customer()
    c.grant("a", 100)
    c.grant("r", 5, resource_id="res")
    before = snapshot(c.state)
    reply, fx = c.apply(GetBalances())
    assert isinstance(reply, BalancesReply) and not fx
    assert sorted((b.resource_id or "", b.current_balance) for b in reply.balances) == [
        ("", 100), ("res", 5)]
    reply, _ = c.apply(GetBalances(currency_id=CUR, resource_id=None, match_resource=True))
    assert [b.current_balance for b in reply.balances] == [100]
    assert snapshot(c.state) == before


def test_amounts_in_credits_scale_exactly():
    # 1 credit = 100_000 units; fractional credits stay exact.
    c = Customer()
    c.grant("a", 3 * SCALE)
    reply, _ = c.consume(SCALE // 3)  # 0.33333 credits
    assert reply.balance.current_balance == 3 * SCALE - 33_333
    reply, _ = c.consume(1)  # 0.00001 credits
    assert c.balance == 266_666


def test_a_client_grant_cannot_be_clobbered_by_the_engines_overdraft_grant():
    # Grant ids are chosen by the caller; the overdraft's id is derived from the pool. Either
    # the id is refused up front, or the two grants must stay distinct.
    c = Customer()
    c.configure(hard_limit=False)
    reply, _ = c.apply(grant_cmd(grant_id=OD, amount=100)(c))
    assert isinstance(reply, Refused) and reply.code == R.INVALID_GRANT_ID
    c.grant("g1", 100)
    c.consume(150)  # Customer.apply runs check_pool and the ledger checks
    assert c.state.grants["g1"].consumed == 100 and c.state.grants[OD].consumed == 50
    paid = [g for g in c.state.grants.values() if g.grant_type is PAID]
    assert [(g.amount, g.consumed) for g in paid] == [(100, 100)]
    assert c.balance == -50


# ---------------------------------------------------------------------------------------
# Moving a grant's expiry (SetGrantExpiry: a subscription's credit window grew)


def test_a_later_expiry_keeps_the_credits_and_reorders_consumption() -> None:
    from engine.core.commands import SetGrantExpiry

    c = Customer()
    c.grant("soon", 100, RECUR, expire_at=T0 + 1_000)
    c.grant("later", 100, RECUR, expire_at=T0 + 2_000)
    reply, _ = c.ok(SetGrantExpiry(grant_id="soon", expire_at=T0 + 5_000))
    assert reply.grant.expire_at == T0 + 5_000
    # "later" now expires first, so it is consumed first.
    c.consume(30)
    assert c.state.grants["later"].consumed == 30 and c.state.grants["soon"].consumed == 0
    # The old expiry passes: nothing expires; the new one does.
    c.apply(Tick(), at=T0 + 1_500)
    assert c.state.grants["soon"].status is GrantStatus.ACTIVE
    c.apply(Tick(), at=T0 + 5_000)
    assert c.state.grants["soon"].status is GrantStatus.EXPIRED
    assert [e.type for e in c.events].count(E.GRANT_UPDATED) == 1


def test_expiry_changes_that_make_no_sense_are_refused() -> None:
    from engine.core.commands import SetGrantExpiry

    c = Customer()
    c.grant("g", 100, RECUR, expire_at=T0 + 1_000)
    for cmd, code in (
            (SetGrantExpiry(grant_id="nope", expire_at=T0 + 5), Refusal.GRANT_NOT_FOUND),
            (SetGrantExpiry(grant_id="g", expire_at=T0), Refusal.INVALID_DATES),
    ):
        reply, fx = c.apply(cmd)
        assert isinstance(reply, Refused) and reply.code == code, reply
        assert not fx.grants
    c.apply(Tick(), at=T0 + 1_000)
    reply, _ = c.apply(SetGrantExpiry(grant_id="g", expire_at=T0 + 9_000))
    assert isinstance(reply, Refused) and reply.code == Refusal.GRANT_ALREADY_EXPIRED
    # Setting the same expiry again is a no-op that answers the grant.
    c.grant("h", 10, RECUR, expire_at=T0 + 9_000)
    reply, fx = c.ok(SetGrantExpiry(grant_id="h", expire_at=T0 + 9_000))
    assert reply.grant.id == "h" and not fx.grants
