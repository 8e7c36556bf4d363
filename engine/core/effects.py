"""What applying commands produces besides replies: ledger rows, domain events, and the
set of rows that changed. The runtime hands one `Effects` per batch to the store and
replies only once the store says it is durable.
"""

from __future__ import annotations

from typing import Any

import msgspec

from engine.core.commands import BalanceView, GrantView
from engine.core.idempotency import IdempotencyRecord
from engine.core.model import (
    EventType,
    Grant,
    LedgerEventType,
    Pool,
    Reservation,
    UsageCounter,
)

__all__ = ["LedgerEntry", "DomainEvent", "IdempotencyRecord", "Bucket", "Effects",
           "RechargeRequest"]


class LedgerEntry(msgspec.Struct, frozen=True, gc=False):
    """One append-only ledger row: one grant touched by one operation.

    `amount` is the signed change to the pool's current balance caused on this grant, so
    a pool's balance is the sum of its entries' amounts. The event type says which
    component moved (see `engine.core.replay`). Positional construction is allowed (the
    hot path uses it); the field order is part of the interface.
    """

    seq: int  # per customer, gapless, in apply order
    op_seq: int  # the operation (command) the entry belongs to; the wire's eventId
    event_type: LedgerEventType
    grant_id: str
    currency_id: str
    resource_id: str | None
    amount: int
    timestamp: int
    reservation_id: str | None = None
    feature_id: str | None = None
    idempotency_key: str | None = None
    dimensions: dict[str, Any] | None = None


class DomainEvent(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    seq: int  # per customer, gapless
    type: EventType
    customer_id: str
    currency_id: str
    resource_id: str | None
    timestamp: int
    grant_id: str | None = None
    # The pool's balance right after the event, and the grant it concerns (if any).
    balance: BalanceView | None = None
    grant: GrantView | None = None
    # The amount the event is about (expired, granted), where one applies.
    amount: int | None = None
    # Event-specific facts (auto-recharge: cost, spend, cap, reason), JSON-ready values.
    details: dict[str, Any] | None = None


class Bucket(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """An increment to an hourly usage bucket (analytics): the store adds the increments
    of equal keys (feature, resource, currency, dimensions, hour) together."""

    feature_id: str | None  # None: credits consumed directly, without a feature
    resource_id: str | None
    currency_id: str | None  # the currency burned, if any
    dimensions: dict[str, Any] | None
    hour: int  # epoch ms at the start of the hour the usage happened in
    usage: int  # change in usage, units
    credits: int  # credit units burned
    events: int


class RechargeRequest(msgspec.Struct, frozen=True, kw_only=True):
    """A recharge the actor started: what the executor (engine.runtime.recharge) charges.
    The grant id is the payment's idempotency key."""

    customer_id: str
    grant_id: str
    currency_id: str
    resource_id: str | None
    credits: int
    cost: int
    price_currency: str


class Effects:
    """Accumulates a batch's output. Touched rows are kept as live objects: the actor does
    not mutate them again until the store has taken its copy."""

    __slots__ = ("entries", "events", "grants", "reservations", "pools", "keys", "usage",
                 "buckets", "unique_values", "event_keys", "seq", "op", "recharges")

    def __init__(self) -> None:
        # The customer's last event and operation sequence numbers after the batch; the
        # runtime sets them before it hands committed effects to `on_committed`.
        self.seq = 0
        self.op = 0
        self.entries: list[LedgerEntry] = []
        self.events: list[DomainEvent] = []
        self.grants: dict[str, Grant] = {}
        self.reservations: dict[str, Reservation] = {}
        self.pools: dict[tuple[str, str | None], Pool] = {}
        self.keys: list[IdempotencyRecord] = []
        # Metering (engine.core.usage): counters changed, analytics increments, distinct
        # values new to UNIQUE counters, and raw events accepted (their keys deduplicate).
        self.usage: dict[tuple[str, str | None], UsageCounter] = {}
        self.buckets: list[Bucket] = []
        self.unique_values: list[tuple[str, str | None, str]] = []
        self.event_keys: list[tuple[Any, int]] = []  # (MeteredEvent, accepted at)
        self.recharges: list[RechargeRequest] = []  # started; for the executor

    def __bool__(self) -> bool:
        return bool(self.entries or self.events or self.grants or self.reservations
                    or self.pools or self.keys or self.usage or self.buckets
                    or self.event_keys)

    def clear(self) -> None:
        self.entries.clear()
        self.events.clear()
        self.grants.clear()
        self.reservations.clear()
        self.pools.clear()
        self.keys.clear()
        self.usage.clear()
        self.buckets.clear()
        self.unique_values.clear()
        self.event_keys.clear()
        self.recharges.clear()
