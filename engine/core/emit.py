"""The two things every rule of the core emits besides ledger entries: domain events
(with the pool's balance as it is after the change) and timers (kept in the customer's
heap, fired by the state machine when due). Below both ledger_ops and recharge, which
use them and each other's rules only downwards (recharge -> emit; ledger_ops -> recharge,
emit)."""

from __future__ import annotations

from heapq import heappush
from typing import Any

from engine.core.effects import DomainEvent, Effects
from engine.core.model import CustomerState, EventType, Grant, Pool
from engine.core.views import balance_view, grant_view

__all__ = ["TIMER_ACTIVATE", "TIMER_RESERVATION", "TIMER_EXPIRE", "TIMER_RECHARGE", "event",
           "push_timer"]

# Timer kinds, in the order they fire when due at the same millisecond: a reservation's
# holds return before the grant they sit on expires.
TIMER_ACTIVATE = 0
TIMER_RESERVATION = 1
TIMER_EXPIRE = 2
TIMER_RECHARGE = 3  # the month turned: look at a capped auto-recharge again


def event(
    state: CustomerState,
    fx: Effects,
    type_: EventType,
    pool: Pool,
    now: int,
    g: Grant | None = None,
    amount: int | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    state.event_seq += 1
    fx.events.append(
        DomainEvent(
            seq=state.event_seq,
            type=type_,
            customer_id=state.customer_id,
            currency_id=pool.currency_id,
            resource_id=pool.resource_id,
            timestamp=now,
            grant_id=g.id if g is not None else None,
            balance=balance_view(pool, now),
            grant=grant_view(g) if g is not None else None,
            amount=amount,
            details=details,
        )
    )


def push_timer(state: CustomerState, due: int, kind: int, ident: str) -> None:
    heappush(state.timers, (due, kind, ident))
