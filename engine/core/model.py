"""The engine's state: grants, reservations, pools and the customer that owns them.

These are plain mutable objects with `__slots__`, owned by exactly one actor at a time; the
actor applies commands to them synchronously (see `engine.core.machine`). Nothing here
does I/O or reads a clock. Times are integer milliseconds since the Unix epoch; amounts
are integer units of 10^-5 credits (`engine.core.amounts`).

Per-grant accounting, which every mutation keeps exact:

    amount = available + held + consumed + expired + voided

`available` is what consumption can draw on now; `held` is reserved by reservations;
`expired`/`voided` are what left the balance without being consumed. The OVERDRAFT grant is
the one exception: its `amount` stays 0 and its `available` is minus its `consumed` (the
deficit), until later grants repay it by a consumption transfer.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

import msgspec

__all__ = [
    "GrantType",
    "GrantStatus",
    "LedgerEventType",
    "ReservationStatus",
    "EventType",
    "Grant",
    "Reservation",
    "Pool",
    "CustomerState",
    "PoolKey",
    "UsageCounter",
]


class GrantType(StrEnum):
    PAID = "PAID"
    PROMOTIONAL = "PROMOTIONAL"
    RECURRING = "RECURRING"
    OVERDRAFT = "OVERDRAFT"


class GrantStatus(StrEnum):
    SCHEDULED = "SCHEDULED"
    ACTIVE = "ACTIVE"
    EXPIRED = "EXPIRED"
    VOIDED = "VOIDED"
    PAYMENT_PENDING = "PAYMENT_PENDING"


class LedgerEventType(StrEnum):
    CREDITS_GRANTED = "CREDITS_GRANTED"
    CREDITS_CONSUMED = "CREDITS_CONSUMED"
    CREDITS_EXPIRED = "CREDITS_EXPIRED"
    CREDITS_VOIDED = "CREDITS_VOIDED"
    CREDITS_UPDATED = "CREDITS_UPDATED"
    CREDITS_CONSUMPTION_TRANSFER_SOURCE = "CREDITS_CONSUMPTION_TRANSFER_SOURCE"
    CREDITS_CONSUMPTION_TRANSFER_TARGET = "CREDITS_CONSUMPTION_TRANSFER_TARGET"
    CREDITS_RESERVED = "CREDITS_RESERVED"
    CREDITS_RESERVATION_RELEASED = "CREDITS_RESERVATION_RELEASED"
    CREDITS_RESERVATION_EXPIRED = "CREDITS_RESERVATION_EXPIRED"


class ReservationStatus(StrEnum):
    ACTIVE = "ACTIVE"
    RELEASED = "RELEASED"
    EXPIRED = "EXPIRED"


class EventType(StrEnum):
    """Domain events; the names are the webhook and feed event names."""

    GRANTED = "credits.granted"
    GRANT_UPDATED = "credits.grant.updated"
    GRANT_USAGE_LOW = "credits.grant.usage_low"
    GRANT_DEPLETED = "credits.grant.depleted"
    EXPIRED = "credits.expired"
    BALANCE_USAGE_LOW = "credits.balance.usage_low"
    BALANCE_DEPLETED = "credits.balance.depleted"
    # Auto-recharge (engine.core.recharge).
    AUTO_RECHARGE_ATTEMPTED = "credits.auto_recharge.attempted"
    AUTO_RECHARGE_SUCCEEDED = "credits.auto_recharge.succeeded"
    AUTO_RECHARGE_FAILED = "credits.auto_recharge.failed"
    AUTO_RECHARGE_LIMIT_EXCEEDED = "credits.auto_recharge.limit_exceeded"
    AUTO_RECHARGE_SPEND_ALERT = "credits.auto_recharge.spend_alert"
    AUTO_RECHARGE_CONFIGURATION_CHANGED = "credits.auto_recharge.configuration_changed"


# Consumption order puts free credits before paid ones; RECURRING plan credits count as free
# because they expire at the period end anyway.
_TYPE_RANK = {GrantType.PROMOTIONAL: 0, GrantType.RECURRING: 0, GrantType.PAID: 1}
_NEVER = 1 << 62  # sorts "no expiry" after every real timestamp

PoolKey = tuple[str, str | None]  # (currency id, resource id or None)


class Grant:
    __slots__ = (
        "id",
        "seq",
        "currency_id",
        "resource_id",
        "grant_type",
        "status",
        "priority",
        "effective_at",
        "expire_at",
        "created_at",
        "updated_at",
        "voided_at",
        "amount",
        "available",
        "held",
        "consumed",
        "expired",
        "voided",
        "cost_amount",
        "cost_currency",
        "display_name",
        "comment",
        "metadata",
        "activated",
        "usage_low_fired",
        "depleted_fired",
        "order_key",
    )

    def __init__(
        self,
        *,
        id: str,
        seq: int,
        currency_id: str,
        resource_id: str | None,
        grant_type: GrantType,
        status: GrantStatus,
        priority: int,
        effective_at: int,
        expire_at: int | None,
        created_at: int,
        amount: int,
        cost_amount: int | None = None,
        cost_currency: str | None = None,
        display_name: str = "",
        comment: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> None:
        self.id = id
        self.seq = seq
        self.currency_id = currency_id
        self.resource_id = resource_id
        self.grant_type = grant_type
        self.status = status
        self.priority = priority
        self.effective_at = effective_at
        self.expire_at = expire_at
        self.created_at = created_at
        self.updated_at = created_at
        self.voided_at: int | None = None
        self.amount = amount
        # Credits become available only when the grant turns ACTIVE.
        self.available = 0
        self.held = 0
        self.consumed = 0
        self.expired = 0
        self.voided = 0
        self.cost_amount = cost_amount
        self.cost_currency = cost_currency
        self.display_name = display_name
        self.comment = comment
        self.metadata = metadata
        self.activated = False
        self.usage_low_fired = False
        self.depleted_fired = False
        self.order_key = (
            priority,
            _NEVER if expire_at is None else expire_at,
            _TYPE_RANK.get(grant_type, 2),
            effective_at,
            created_at,
            seq,
        )

    def set_expiry(self, expire_at: int | None) -> None:
        """Change the expiry, and with it the consumption order (soonest expiry first). A
        grant filed in `pool.active` must be taken out first and filed again after."""
        self.expire_at = expire_at
        self.order_key = (self.priority, _NEVER if expire_at is None else expire_at,
                          *self.order_key[2:])

    @property
    def remaining(self) -> int:
        """What the grant still holds for the customer: available plus held."""
        return self.available + self.held

    def check(self) -> None:
        """Assert the per-grant accounting identity (programmer errors, not refusals)."""
        if self.grant_type is GrantType.OVERDRAFT:
            assert self.amount == 0 and self.held == 0, self
            assert self.available == -self.consumed <= 0, self
            return
        assert min(self.available, self.held, self.consumed, self.expired, self.voided) >= 0, self
        flowed = self.available + self.held + self.consumed + self.expired + self.voided
        # Credits flow into a grant only when it turns ACTIVE (its CREDITS_GRANTED entry).
        assert flowed == (self.amount if self.activated else 0), self
        if self.status is not GrantStatus.ACTIVE:
            assert self.available == 0, self

    def __repr__(self) -> str:
        return (
            f"Grant({self.id!r}, {self.grant_type}, {self.status}, amount={self.amount}, "
            f"available={self.available}, held={self.held}, consumed={self.consumed})"
        )


class Reservation:
    """Credits held for one caller until it reports what it really used.

    `holds` maps grant id -> units held on that grant, taken in consumption order when the
    reservation was made; the release consumes from the same grants in the same order.
    """

    __slots__ = (
        "id",
        "currency_id",
        "resource_id",
        "amount",
        "holds",
        "status",
        "created_at",
        "expires_at",
        "released_at",
        "consumed_amount",
        "metadata",
    )

    def __init__(
        self,
        *,
        id: str,
        currency_id: str,
        resource_id: str | None,
        amount: int,
        holds: dict[str, int],
        created_at: int,
        expires_at: int,
        metadata: dict[str, str] | None = None,
    ) -> None:
        self.id = id
        self.currency_id = currency_id
        self.resource_id = resource_id
        self.amount = amount
        self.holds = holds
        self.status = ReservationStatus.ACTIVE
        self.created_at = created_at
        self.expires_at = expires_at
        self.released_at: int | None = None
        self.consumed_amount: int | None = None
        self.metadata = metadata


class Pool:
    """One customer's credits of one currency, optionally scoped to one resource."""

    __slots__ = (
        "currency_id",
        "resource_id",
        "active",
        "overdraft",
        "hard_limit",
        "low_balance_units",
        "usage_low_percent",
        "balance",
        "reserved",
        "granted",
        "consumed",
        "expired",
        "voided",
        "active_granted",
        "low_line",
        "usage_low_fired",
        "depleted_fired",
        "recharge",
        "recharge_line",
    )

    def __init__(self, currency_id: str, resource_id: str | None) -> None:
        self.currency_id = currency_id
        self.resource_id = resource_id
        # ACTIVE non-overdraft grants with available > 0, sorted by consumption order.
        self.active: list[Grant] = []
        self.overdraft: Grant | None = None
        # Settings. Hard limit by default: refuse what the balance cannot cover.
        self.hard_limit = True
        self.low_balance_units: int | None = None
        self.usage_low_percent = 80
        # Projections, kept incrementally; `balance` = Σ available over ACTIVE grants,
        # including the overdraft's negative available.
        self.balance = 0
        self.reserved = 0
        self.granted = 0
        self.consumed = 0
        self.expired = 0
        self.voided = 0
        # Σ amount over ACTIVE non-overdraft grants: the base for the usage-low percentage.
        self.active_granted = 0
        # The balance at or below which the pool counts as low (None: it cannot be),
        # derived from the settings and `active_granted` by `ledger_ops.low_line` whenever
        # one of them changes, so a consumption checks its threshold with one comparison.
        self.low_line: int | None = None
        # Threshold flags equal their condition: an empty pool is depleted, not low.
        self.usage_low_fired = False
        self.depleted_fired = True
        # Auto-recharge settings and month state (engine.core.recharge), and the balance
        # below which a recharge starts (None: it cannot start one now), derived like
        # `low_line` so that a consumption checks it with one comparison.
        self.recharge: AutoRecharge | None = None
        self.recharge_line: int | None = None

    @property
    def key(self) -> PoolKey:
        return (self.currency_id, self.resource_id)


class AutoRecharge(msgspec.Struct, kw_only=True):
    """Settings and the month's state of one pool's auto-recharge (kept on the pool row;
    engine.core.recharge has the rules). Money is in units of 10^-5 of `price_currency`."""

    enabled: bool
    threshold_type: str  # CREDIT_AMOUNT (credit units) | DOLLAR_AMOUNT (money units)
    threshold_value: int
    target_balance: int  # credit units
    max_spend: int | None  # money units per calendar month (UTC); None: no cap
    expiration: str  # 1_MONTH | 1_YEAR
    price: int  # money units per credit
    price_currency: str = "usd"
    min_purchase: int | None = None  # credit units
    max_purchase: int | None = None
    month: int = 0  # recharge.month_of() of the month `spent` belongs to
    spent: int = 0  # money units paid this month
    alerts: int = 0  # the highest spend alert fired this month (0, 80, 90, 100)
    limit_fired: bool = False  # limit_exceeded fired this month
    attempts: int = 0  # recharges started, ever: numbers the grant ids
    in_flight: str | None = None  # the PAYMENT_PENDING grant of the running recharge
    in_flight_cost: int = 0
    failure: str | None = None  # why the last recharge failed (auto-recharge disabled)
    created_at: int = 0
    updated_at: int = 0


class CustomerState:
    """Everything one actor owns: a customer's pools, grants, reservations and keys."""

    __slots__ = (
        "customer_id",
        "pools",
        "grants",
        "reservations",
        "idempotency",
        "timers",
        "ledger_seq",
        "event_seq",
        "grant_seq",
        "op_seq",
        "keys_complete",
        "usage",
        "event_keys",
        "stored",
    )

    def __init__(self, customer_id: str) -> None:
        self.customer_id = customer_id
        self.pools: dict[PoolKey, Pool] = {}
        self.grants: dict[str, Grant] = {}
        self.reservations: dict[str, Reservation] = {}
        # idempotency key -> its memo (bytes); see engine.core.idempotency.
        self.idempotency: dict[str, Any] = {}
        # Min-heap of (due ms, kind, id) for expiries, activations and reservation TTLs.
        # Entries are checked when popped, so a voided grant's expiry is skipped lazily.
        self.timers: list[tuple[int, int, str]] = []
        self.ledger_seq = 0
        self.event_seq = 0
        self.grant_seq = 0
        self.op_seq = 0
        # False when the store remembers keys for this customer that are not in
        # `idempotency` (too many to load, or trimmed): the runtime then looks up unknown
        # keys in the store before applying a batch.
        self.keys_complete = True
        # (feature id, resource id) -> UsageCounter; see engine.core.usage.
        self.usage: dict[tuple[str, str | None], UsageCounter] = {}
        # Recent raw-event idempotency keys -> event time, oldest first (bounded; the
        # runtime looks up the others in the store before a batch that names them).
        self.event_keys: dict[str, int] = {}
        # What the store keeps beside the state (its number for the customer, say); set
        # and read by the store only, never by the core.
        self.stored: Any = None

    def next_due(self) -> int | None:
        return self.timers[0][0] if self.timers else None


class UsageCounter:
    """A customer's current usage of one feature (optionally per resource), in units.

    `function` is how the value moves: CALCULATED (reported usage: DELTA/SET), or a meter's
    aggregation (COUNT, SUM, MAX, MIN, AVG, UNIQUE). `total` and `count` carry what AVG
    (sum, events) and MAX/MIN (events seen) need; `uniques` the distinct values of UNIQUE.
    `period_start` is the start (ms) of the usage period it counts, for a feature whose
    entitlement resets (None: it never resets); a later period restarts it from 0.
    """

    __slots__ = ("feature_id", "resource_id", "function", "value", "total", "count",
                 "uniques", "updated_at", "period_start")

    def __init__(self, feature_id: str, resource_id: str | None, function: str,
                 updated_at: int) -> None:
        self.feature_id = feature_id
        self.resource_id = resource_id
        self.function = function
        self.value = 0
        self.total = 0
        self.count = 0
        self.uniques: set[str] = set()
        self.updated_at = updated_at
        self.period_start: int | None = None
