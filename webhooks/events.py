"""Domain events as webhook payloads: `{id, type, timestamp, data}` (docs/webhooks.md).

A payload is built once, when the relay reads the event from the outbox, and stored; every
attempt, endpoint and replay sends the same bytes with the same id.
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec

from engine.core.amounts import units_to_json as amount_out
from engine.core.commands import BalanceView, GrantView
from engine.core.effects import DomainEvent
from engine.core.model import EventType
from engine.core.recharge import AMOUNT_DETAILS
from engine.times import iso

__all__ = ["EVENT_TYPES", "Built", "build", "event_data", "split_customer"]

# Every event type the engine emits; a new engine event type (auto-recharge) becomes
# deliverable and filterable without a change here.
EVENT_TYPES: tuple[str, ...] = tuple(t.value for t in EventType)

_encode = msgspec.json.Encoder(decimal_format="number").encode


class Built(msgspec.Struct, frozen=True):
    environment: str
    customer_id: str  # the customer's own id, without the environment
    event_id: str
    type: str
    timestamp: int
    body: bytes


def split_customer(engine_customer_id: str) -> tuple[str, str]:
    """`"<environment>/<customer id>"` (gateway.routes.common.engine_id) -> both parts."""
    environment, sep, customer = engine_customer_id.partition("/")
    assert sep, engine_customer_id
    return environment, customer


def event_id(outbox_id: int, engine_customer_id: str, seq: int, timestamp: int) -> str:
    """Stable for the event (the same on every attempt, endpoint and replay) and derived
    from it, so it needs no storage of its own to stay stable. The customer's sequence and
    the time are part of it so that a database restored from a backup, whose outbox ids
    start again where the backup ended, does not reuse ids receivers have seen."""
    digest = hashlib.blake2b(f"{outbox_id}:{engine_customer_id}:{seq}:{timestamp}".encode(),
                             digest_size=10).hexdigest()
    return f"evt_{digest}"


def _grant(customer_id: str, g: GrantView) -> dict[str, Any]:
    return {
        "id": g.id,
        "customerId": customer_id,
        "currencyId": g.currency_id,
        "resourceId": g.resource_id,
        "grantType": g.grant_type.value,
        "status": g.status.value,
        "priority": g.priority,
        "amount": amount_out(g.amount),
        "consumedAmount": amount_out(g.consumed_amount),
        # What is left on the grant: spendable now, and held by open reservations.
        "availableAmount": amount_out(g.available),
        "heldAmount": amount_out(g.held),
        "effectiveAt": iso(g.effective_at),
        "expireAt": iso(g.expire_at),
        "createdAt": iso(g.created_at),
        "updatedAt": iso(g.updated_at),
        "voidedAt": iso(g.voided_at),
        "cost": None if g.cost_amount is None else {
            "amount": amount_out(g.cost_amount), "currency": g.cost_currency or "usd"},
        "displayName": g.display_name,
        "comment": g.comment,
        "metadata": dict(g.metadata),
    }


def _balance(b: BalanceView) -> dict[str, Any]:
    return {
        "currentBalance": amount_out(b.current_balance),
        "totalGranted": amount_out(b.total_granted),
        "totalConsumed": amount_out(b.total_consumed),
        "reserved": amount_out(b.reserved),
        "hardLimit": b.hard_limit,
    }


def _details(details: dict[str, Any]) -> dict[str, Any]:
    return {k: amount_out(v) if k in AMOUNT_DETAILS and isinstance(v, int) else v
            for k, v in details.items()}


def event_data(customer_id: str, e: DomainEvent) -> dict[str, Any]:
    """The `data` of an event: the same in webhook payloads and live feed frames."""
    return {
        "customerId": customer_id,
        "currencyId": e.currency_id,
        "resourceId": e.resource_id,
        # Gapless per customer: a receiver can order a customer's events and spot one
        # it missed (replayed or dead-lettered deliveries arrive out of order).
        "sequence": e.seq,
        "amount": None if e.amount is None else amount_out(e.amount),
        "grant": None if e.grant is None else _grant(customer_id, e.grant),
        "balance": None if e.balance is None else _balance(e.balance),
        # Facts particular to the type (auto-recharge: cost, spend, cap, reason), else null.
        "details": None if e.details is None else _details(e.details),
    }


def build(outbox_id: int, engine_customer_id: str, e: DomainEvent) -> Built:
    environment, customer_id = split_customer(engine_customer_id)
    ident = event_id(outbox_id, engine_customer_id, e.seq, e.timestamp)
    body = _encode({
        "id": ident,
        "type": e.type.value,
        "timestamp": iso(e.timestamp),
        "data": event_data(customer_id, e),
    })
    return Built(environment, customer_id, ident, e.type.value, e.timestamp, body)
