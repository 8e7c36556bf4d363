"""Immutable snapshots of live state, for replies, events and stores."""

from __future__ import annotations

from engine.core.commands import BalanceView, GrantView, ReservationView
from engine.core.model import Grant, Pool, Reservation

__all__ = ["balance_view", "grant_view", "pool_view", "reservation_view"]

_EMPTY: dict[str, str] = {}


def balance_view(pool: Pool, now: int) -> BalanceView:
    # Positional: this runs once per consumption.
    return BalanceView(
        pool.currency_id, pool.resource_id, pool.balance, pool.granted, pool.consumed,
        pool.reserved, now, pool.hard_limit,
    )


def pool_view(pool: Pool, now: int) -> BalanceView:
    """A balance with the pool's low line, for reads (balances, the feed, settings). The
    answers to writes leave the line out: a replayed answer must equal the first one, and
    the stored answer (persistence/codec.py) keeps the balance only, not the line."""
    return BalanceView(
        pool.currency_id, pool.resource_id, pool.balance, pool.granted, pool.consumed,
        pool.reserved, now, pool.hard_limit, pool.low_line,
    )


def grant_view(g: Grant) -> GrantView:
    return GrantView(
        id=g.id,
        currency_id=g.currency_id,
        resource_id=g.resource_id,
        grant_type=g.grant_type,
        status=g.status,
        priority=g.priority,
        amount=g.amount,
        consumed_amount=g.consumed,
        available=g.available,
        held=g.held,
        effective_at=g.effective_at,
        expire_at=g.expire_at,
        created_at=g.created_at,
        updated_at=g.updated_at,
        voided_at=g.voided_at,
        cost_amount=g.cost_amount,
        cost_currency=g.cost_currency,
        display_name=g.display_name,
        comment=g.comment,
        metadata=dict(g.metadata) if g.metadata else _EMPTY,
    )


def reservation_view(r: Reservation) -> ReservationView:
    return ReservationView(
        id=r.id,
        currency_id=r.currency_id,
        resource_id=r.resource_id,
        amount=r.amount,
        status=r.status,
        expires_at=r.expires_at,
        consumed_amount=r.consumed_amount,
    )
