"""Rows and rebuilding: how a customer's state is stored, restored, and re-derived.

- `GrantRow`, `ReservationRow`, `PoolRow`, `CustomerRow` are what a store keeps.
- `restore()` builds a live `CustomerState` from rows (what activation after a restart does).
- `rebuild()` re-derives every amount and status from the append-only ledger alone, given
  only the grants' and reservations' definitions; tests use it to prove that the ledger is
  the truth and the rows are its projection.

Everything the rows do not hold is derived: pool totals and active lists, threshold flags
(which always equal their condition), and the timer heap.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from engine.core import ledger_ops as ops
from engine.core import recharge
from engine.core.effects import IdempotencyRecord, LedgerEntry
from engine.core.model import (
    AutoRecharge,
    CustomerState,
    Grant,
    GrantStatus,
    GrantType,
    Pool,
    Reservation,
    ReservationStatus,
)
from engine.core.model import (
    LedgerEventType as L,
)

__all__ = [
    "GrantRow",
    "ReservationRow",
    "PoolRow",
    "CustomerRow",
    "grant_row",
    "reservation_row",
    "pool_row",
    "customer_row",
    "restore",
    "rebuild",
]


class GrantRow(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    seq: int
    currency_id: str
    resource_id: str | None
    grant_type: GrantType
    status: GrantStatus
    priority: int
    effective_at: int
    expire_at: int | None
    created_at: int
    updated_at: int
    voided_at: int | None
    amount: int
    available: int
    held: int
    consumed: int
    expired: int
    voided: int
    activated: bool
    cost_amount: int | None
    cost_currency: str | None
    display_name: str
    comment: str | None
    metadata: dict[str, str] | None


class ReservationRow(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    currency_id: str
    resource_id: str | None
    amount: int
    holds: list[tuple[str, int]]  # in hold order
    status: ReservationStatus
    created_at: int
    expires_at: int
    released_at: int | None
    consumed_amount: int | None
    metadata: dict[str, str] | None


class PoolRow(msgspec.Struct, frozen=True, kw_only=True):
    currency_id: str
    resource_id: str | None
    hard_limit: bool
    low_balance_units: int | None
    usage_low_percent: int
    recharge: AutoRecharge | None = None  # a copy: the live one keeps changing


class CustomerRow(msgspec.Struct, frozen=True, kw_only=True):
    customer_id: str
    ledger_seq: int
    event_seq: int
    op_seq: int
    grant_seq: int


def grant_row(g: Grant) -> GrantRow:
    return GrantRow(
        id=g.id, seq=g.seq, currency_id=g.currency_id, resource_id=g.resource_id,
        grant_type=g.grant_type, status=g.status, priority=g.priority,
        effective_at=g.effective_at, expire_at=g.expire_at, created_at=g.created_at,
        updated_at=g.updated_at, voided_at=g.voided_at, amount=g.amount,
        available=g.available, held=g.held, consumed=g.consumed, expired=g.expired,
        voided=g.voided, activated=g.activated, cost_amount=g.cost_amount,
        cost_currency=g.cost_currency, display_name=g.display_name, comment=g.comment,
        metadata=dict(g.metadata) if g.metadata else None,
    )


def reservation_row(r: Reservation) -> ReservationRow:
    return ReservationRow(
        id=r.id, currency_id=r.currency_id, resource_id=r.resource_id, amount=r.amount,
        holds=list(r.holds.items()), status=r.status, created_at=r.created_at,
        expires_at=r.expires_at, released_at=r.released_at,
        consumed_amount=r.consumed_amount, metadata=r.metadata,
    )


def pool_row(p: Pool) -> PoolRow:
    return PoolRow(
        currency_id=p.currency_id, resource_id=p.resource_id, hard_limit=p.hard_limit,
        low_balance_units=p.low_balance_units, usage_low_percent=p.usage_low_percent,
        recharge=None if p.recharge is None else msgspec.structs.replace(p.recharge),
    )


def customer_row(s: CustomerState) -> CustomerRow:
    return CustomerRow(
        customer_id=s.customer_id, ledger_seq=s.ledger_seq, event_seq=s.event_seq,
        op_seq=s.op_seq, grant_seq=s.grant_seq,
    )


def _grant_from_row(row: GrantRow, *, dynamics: bool) -> Grant:
    g = Grant(
        id=row.id, seq=row.seq, currency_id=row.currency_id, resource_id=row.resource_id,
        grant_type=row.grant_type, status=row.status, priority=row.priority,
        effective_at=row.effective_at, expire_at=row.expire_at, created_at=row.created_at,
        amount=row.amount, cost_amount=row.cost_amount, cost_currency=row.cost_currency,
        display_name=row.display_name, comment=row.comment,
        metadata=dict(row.metadata) if row.metadata else None,
    )
    g.updated_at = row.updated_at
    g.voided_at = row.voided_at
    if dynamics:
        g.available, g.held, g.consumed = row.available, row.held, row.consumed
        g.expired, g.voided, g.activated = row.expired, row.voided, row.activated
    return g


def _reservation_from_row(row: ReservationRow, *, dynamics: bool) -> Reservation:
    r = Reservation(
        id=row.id, currency_id=row.currency_id, resource_id=row.resource_id,
        amount=row.amount, holds=dict(row.holds) if dynamics else {},
        created_at=row.created_at, expires_at=row.expires_at, metadata=row.metadata,
    )
    if dynamics:
        r.status, r.released_at, r.consumed_amount = row.status, row.released_at, row.consumed_amount
    return r


def _finish(state: CustomerState, pool_rows: Iterable[PoolRow]) -> CustomerState:
    """Derive pools, flags and timers from grants and reservations."""
    for row in pool_rows:
        pool = ops.pool_for(state, row.currency_id, row.resource_id)
        pool.hard_limit = row.hard_limit
        pool.low_balance_units = row.low_balance_units
        pool.usage_low_percent = row.usage_low_percent
        if row.recharge is not None:
            pool.recharge = msgspec.structs.replace(row.recharge)
    for g in sorted(state.grants.values(), key=lambda g: g.seq):
        pool = ops.pool_for(state, g.currency_id, g.resource_id)
        state.grant_seq = max(state.grant_seq, g.seq)
        if g.grant_type is GrantType.OVERDRAFT:
            pool.overdraft = g
        elif g.activated:
            pool.granted += g.amount
        if g.status is GrantStatus.ACTIVE:
            pool.balance += g.available
            if g.grant_type is not GrantType.OVERDRAFT:
                pool.active_granted += g.amount
                if g.available > 0:
                    pool.active.append(g)
        pool.reserved += g.held
        pool.consumed += g.consumed
        pool.expired += g.expired
        pool.voided += g.voided
        if g.status is GrantStatus.SCHEDULED:
            ops.push_timer(state, g.effective_at, ops.TIMER_ACTIVATE, g.id)
        if g.expire_at is not None and g.status not in (GrantStatus.EXPIRED, GrantStatus.VOIDED):
            ops.push_timer(state, g.expire_at, ops.TIMER_EXPIRE, g.id)
    for pool in state.pools.values():
        pool.active.sort(key=lambda g: g.order_key)
        pool.low_line = ops.low_line(pool)
        pool.recharge_line = recharge.recharge_line(pool)
        if pool.recharge is not None and (due := recharge.limit_timer(pool.recharge)):
            ops.push_timer(state, due, ops.TIMER_RECHARGE, recharge.timer_id(pool))
        pool.usage_low_fired = ops.pool_is_low(pool)
        pool.depleted_fired = pool.balance <= 0
    for g in state.grants.values():
        pool = state.pools[(g.currency_id, g.resource_id)]
        g.usage_low_fired = ops.grant_is_low(pool, g)
        g.depleted_fired = ops.grant_is_depleted(g)
    for r in state.reservations.values():
        if r.status is ReservationStatus.ACTIVE:
            ops.push_timer(state, r.expires_at, ops.TIMER_RESERVATION, r.id)
    return state


def restore(
    customer: CustomerRow,
    grants: Iterable[GrantRow],
    reservations: Iterable[ReservationRow],
    pools: Iterable[PoolRow],
    keys: Iterable[IdempotencyRecord] = (),
) -> CustomerState:
    state = CustomerState(customer.customer_id)
    state.ledger_seq, state.event_seq = customer.ledger_seq, customer.event_seq
    state.op_seq, state.grant_seq = customer.op_seq, customer.grant_seq
    for row in grants:
        state.grants[row.id] = _grant_from_row(row, dynamics=True)
    for row in reservations:
        state.reservations[row.id] = _reservation_from_row(row, dynamics=True)
    for rec in keys:
        state.idempotency[rec.key] = rec.memo
    return _finish(state, pools)


# How each ledger event type moves a grant's components; the amount is the balance delta.
def _apply_entry(state: CustomerState, e: LedgerEntry) -> None:
    g = state.grants[e.grant_id]
    a = e.amount
    t = e.event_type
    if t is L.CREDITS_GRANTED:
        g.activated = True
        g.status = GrantStatus.ACTIVE
        g.available += a
    elif t is L.CREDITS_CONSUMED or t is L.CREDITS_CONSUMPTION_TRANSFER_SOURCE:
        g.available += a
        g.consumed -= a
    elif t is L.CREDITS_CONSUMPTION_TRANSFER_TARGET:
        g.available += a
        g.consumed -= a
    elif t is L.CREDITS_EXPIRED:
        g.available += a
        g.expired -= a
        g.status = GrantStatus.EXPIRED
    elif t is L.CREDITS_VOIDED:
        g.available += a
        g.voided -= a
        g.status = GrantStatus.VOIDED
    elif t is L.CREDITS_RESERVED:
        g.available += a
        g.held -= a
        r = state.reservations[e.reservation_id]
        r.holds[g.id] = -a
    elif t is L.CREDITS_RESERVATION_RELEASED or t is L.CREDITS_RESERVATION_EXPIRED:
        g.available += a
        g.held -= a
        r = state.reservations[e.reservation_id]
        r.status = (
            ReservationStatus.RELEASED
            if t is L.CREDITS_RESERVATION_RELEASED
            else ReservationStatus.EXPIRED
        )
        r.released_at = e.timestamp
        r.consumed_amount = r.consumed_amount or 0
    else:  # CREDITS_UPDATED carries no amount
        assert a == 0, e
    if e.reservation_id is not None and t is L.CREDITS_CONSUMED:
        r = state.reservations[e.reservation_id]
        r.consumed_amount = (r.consumed_amount or 0) - a
    state.ledger_seq = e.seq


def rebuild(
    customer: CustomerRow,
    grants: Iterable[GrantRow],
    reservations: Iterable[ReservationRow],
    pools: Iterable[PoolRow],
    entries: Iterable[LedgerEntry],
    keys: Iterable[IdempotencyRecord] = (),
) -> CustomerState:
    """Re-derive a customer's state from the ledger and the definitions alone.

    Statuses come from the ledger too: every status change writes an entry (with amount 0
    when nothing moved), so only the initial status of a never-activated grant (SCHEDULED
    or PAYMENT_PENDING) is taken from its definition.
    """
    state = CustomerState(customer.customer_id)
    state.event_seq, state.op_seq = customer.event_seq, customer.op_seq
    for row in grants:
        g = _grant_from_row(row, dynamics=False)
        if row.grant_type is GrantType.OVERDRAFT:
            g.activated = True
            g.status = GrantStatus.ACTIVE
        elif row.activated or row.status in (GrantStatus.EXPIRED, GrantStatus.VOIDED):
            # The ledger decides; a grant never activated keeps its initial waiting status.
            g.status = GrantStatus.SCHEDULED if row.effective_at > row.created_at else GrantStatus.ACTIVE
        state.grants[row.id] = g
    for row in reservations:
        state.reservations[row.id] = _reservation_from_row(row, dynamics=False)
    for e in entries:
        _apply_entry(state, e)
    for rec in keys:
        state.idempotency[rec.key] = rec.memo
    return _finish(state, pools)
