"""Commands an actor applies, and the replies it gives.

Commands are frozen, tagged msgspec Structs: one tagged union decodes and encodes all of
them, and an idempotency replay is recognised by comparing commands field by field.
Amounts are units (`engine.core.amounts`), times are epoch milliseconds, and every id the
command creates (grant, reservation) is chosen by the caller so the core stays
deterministic.
"""

from __future__ import annotations

from typing import Any

import msgspec

from engine.core.model import AutoRecharge, GrantStatus, GrantType, ReservationStatus

# Dimension values as the client sent them: str, int, bool, or an exact decimal.Decimal
# for a JSON number with a fraction or an exponent (never a binary float: the gateway
# decodes them so). `Any` because a msgspec union may not hold both str and Decimal.
Dimensions = dict[str, Any]

__all__ = [
    "Command",
    "CreateGrant",
    "VoidGrant",
    "Consume",
    "Reserve",
    "Release",
    "ConfigurePool",
    "ConfirmPayment",
    "GetBalances",
    "GetUsage",
    "RollUsage",
    "UsageCountersReply",
    "SetGrantExpiry",
    "ConfigureAutoRecharge",
    "GetAutoRecharge",
    "SettleRecharge",
    "PendingRecharges",
    "AutoRechargeReply",
    "PendingRechargesReply",
    "Tick",
    "Reply",
    "Refused",
    "BalanceView",
    "GrantView",
    "ReservationView",
    "ConsumeReply",
    "GrantReply",
    "ReserveReply",
    "ReleaseReply",
    "BalancesReply",
    "TickReply",
    "PoolSettingsReply",
    "MUTATING",
    "AnyReply",
    "ReportUsage",
    "Measurement",
    "UsageResult",
    "Metered",
    "MeteredEvent",
    "IngestEvents",
    "UsageView",
    "UsageReply",
    "Burn",
    "EventsReply",
]


# gc=False on commands, replies and views: they hold only strings, numbers and flat
# containers, so they cannot form reference cycles, and keeping hundreds of thousands of
# remembered replies out of the cycle collector's walk is worth ~2x on the hot path.
class _Command(msgspec.Struct, frozen=True, tag=True, kw_only=True, gc=False):
    # Optional: a command with a key is applied at most once per customer.
    idempotency_key: str | None = None
    # Optional: the caller's hash of the request as the client sent it. When given, replays
    # are matched on it; otherwise on the command's fields, less the ids the caller
    # generated for it. Callers that derive fields from the clock (a TTL turned into an
    # absolute expiry) must pass it, or a retry would look like a different body.
    request_hash: str | None = None


class CreateGrant(_Command, frozen=True, kw_only=True, tag="grant", gc=False):
    grant_id: str
    currency_id: str
    amount: int
    grant_type: GrantType
    display_name: str
    resource_id: str | None = None
    priority: int = 50
    effective_at: int | None = None  # None = now
    expire_at: int | None = None
    cost_amount: int | None = None
    cost_currency: str | None = None
    comment: str | None = None
    metadata: dict[str, str] | None = None
    # PAYMENT_PENDING until ConfirmPayment (invoice-style grants).
    await_payment: bool = False


class VoidGrant(_Command, frozen=True, kw_only=True, tag="void", gc=False):
    grant_id: str


class SetGrantExpiry(_Command, frozen=True, kw_only=True, tag="set_grant_expiry", gc=False):
    """Move a live grant's expiry (None: never). The credit window a recurring grant was
    made for grew — a trial extended — so its credits last until the new end."""

    grant_id: str
    expire_at: int | None


class ConfirmPayment(_Command, frozen=True, kw_only=True, tag="confirm_payment", gc=False):
    grant_id: str


class Consume(_Command, frozen=True, kw_only=True, tag="consume", gc=False):
    currency_id: str
    amount: int
    resource_id: str | None = None
    feature_id: str | None = None
    dimensions: Dimensions | None = None
    # When the usage happened, if the client said so; ordering uses `now` regardless.
    created_at: int | None = None


class Reserve(_Command, frozen=True, kw_only=True, tag="reserve", gc=False):
    reservation_id: str
    currency_id: str
    amount: int
    expires_at: int
    resource_id: str | None = None
    metadata: dict[str, str] | None = None


class Release(_Command, frozen=True, kw_only=True, tag="release", gc=False):
    reservation_id: str
    consumed_amount: int
    # When given, they must match the reservation's pool (the contract sends them).
    currency_id: str | None = None
    resource_id: str | None = None
    feature_id: str | None = None


class ConfigurePool(_Command, frozen=True, kw_only=True, tag="configure_pool", gc=False):
    currency_id: str
    resource_id: str | None = None
    hard_limit: bool | None = None
    low_balance_units: int | None = None
    clear_low_balance: bool = False
    usage_low_percent: int | None = None


class GetBalances(_Command, frozen=True, kw_only=True, tag="balances", gc=False):
    currency_id: str | None = None
    resource_id: str | None = None
    # Filter by resource only when asked: None means "any resource" unless this is set.
    match_resource: bool = False


class GetUsage(_Command, frozen=True, kw_only=True, tag="get_usage", gc=False):
    """The customer's usage counters for one resource (None: those without a resource),
    optionally of one feature. Read from the actor: what was last acknowledged."""

    resource_id: str | None = None
    feature_id: str | None = None


class RollUsage(_Command, frozen=True, kw_only=True, tag="roll_usage", gc=False):
    """Restart the counters that count a usage window earlier than the one given, per
    (feature id, resource id, window start): what a subscription change or end does to
    the features whose windows it ends, so that usage which has already reset under the
    old terms does not come back under terms without a reset (engine.core.usage)."""

    windows: tuple[tuple[str, str | None, int], ...]
    # (feature id, window start) for every other resource's counter of the feature, those
    # `windows` does not name (a promotion's end: it counted on every resource).
    others: tuple[tuple[str, int], ...] = ()
    # Counters written after this (ms) are left as they are: usage reported under the
    # terms that followed the stop, before the stop was settled (written by a version that
    # did not settle it), belongs to those terms.
    written_before: int | None = None


class Tick(_Command, frozen=True, kw_only=True, tag="tick", gc=False):
    """Fire whatever is due (expiries, activations, reservation TTLs) at `now`."""


class Measurement(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """Calculated usage of a feature: `value` units added (DELTA) or the new total (SET).
    For a credit-backed feature, `credit_rate` credit units burn per unit of usage, from
    the (currency, resource) pool, atomically with the usage update."""

    feature_id: str
    value: int  # signed units of usage (10^-5)
    set_value: bool = False  # SET: `value` is the new total; the delta is computed
    resource_id: str | None = None
    created_at: int | None = None  # when it happened (analytics bucket); default now
    dimensions: Dimensions | None = None
    currency_id: str | None = None
    credit_rate: int | None = None
    # Per measurement: a replay answers as first applied (with nothing burned this time).
    idempotency_key: str | None = None
    # The start (ms) of the feature's current usage period when its entitlement resets
    # (the gateway computes it from the clock): a counter whose period started earlier
    # restarts from 0 in this one. None: no reset period.
    period_start: int | None = None


class ReportUsage(_Command, frozen=True, kw_only=True, tag="usage", gc=False):
    """One customer's measurements, applied together or not at all: if any would burn more
    than a hard-limited pool holds (counting the others), none is applied."""

    measurements: tuple[Measurement, ...]


class Metered(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """What one raw event means for one feature whose meter it matched (the gateway
    evaluates meters, `engine.core.meters`): the aggregation, the event's contribution
    (units, or the distinct value's text for UNIQUE), and the feature's credit rate."""

    feature_id: str
    function: str
    value: int | str
    currency_id: str | None = None
    credit_rate: int | None = None
    period_start: int | None = None  # as Measurement.period_start


class MeteredEvent(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    key: str  # the client's idempotency key: an event is applied at most once
    event_name: str
    timestamp: int
    resource_id: str | None = None
    dimensions: Dimensions | None = None
    metered: tuple[Metered, ...] = ()


class IngestEvents(_Command, frozen=True, kw_only=True, tag="events", gc=False):
    """Raw events of one customer, applied in order; duplicates (a key seen before) skip."""

    events: tuple[MeteredEvent, ...]


class ConfigureAutoRecharge(_Command, frozen=True, kw_only=True, tag="auto_recharge",
                            gc=False):
    """Save a pool's auto-recharge settings (engine.core.recharge). Amounts in units:
    credits for thresholds of type CREDIT_AMOUNT, target and purchases; money (10^-5 of
    `price_currency`) for DOLLAR_AMOUNT thresholds, the cap and the price per credit. The
    price comes from the currency's top-up price when the settings are saved."""

    currency_id: str
    resource_id: str | None = None
    enabled: bool
    threshold_type: str
    threshold_value: int
    target_balance: int
    max_spend: int | None = None
    expiration: str = "1_MONTH"
    price: int
    price_currency: str = "usd"
    min_purchase: int | None = None
    max_purchase: int | None = None


class GetAutoRecharge(_Command, frozen=True, kw_only=True, tag="get_auto_recharge", gc=False):
    currency_id: str
    resource_id: str | None = None


class SettleRecharge(_Command, frozen=True, kw_only=True, tag="settle_recharge", gc=False):
    """The payment for an in-flight recharge (its grant) succeeded or failed."""

    grant_id: str
    paid: bool
    reason: str | None = None


class PendingRecharges(_Command, frozen=True, kw_only=True, tag="pending_recharges", gc=False):
    """The customer's recharges in flight (the executor resumes them after a restart)."""


Command = (
    CreateGrant | VoidGrant | SetGrantExpiry | ConfirmPayment | Consume | Reserve | Release
    | ConfigurePool | GetBalances | GetUsage | RollUsage | Tick | ReportUsage | IngestEvents
    | ConfigureAutoRecharge | GetAutoRecharge | SettleRecharge | PendingRecharges
)

# Read-only commands never produce rows; the runtime may skip the store for them.
MUTATING = (CreateGrant, VoidGrant, SetGrantExpiry, ConfirmPayment, Consume, Reserve, Release,
            ConfigurePool, RollUsage, Tick, ReportUsage, IngestEvents, ConfigureAutoRecharge,
            SettleRecharge)


# ---------------------------------------------------------------------------------------
# Replies


class Reply(msgspec.Struct, frozen=True, tag=True, kw_only=True, gc=False):
    pass


class Refused(Reply, frozen=True, kw_only=True, tag="refused", gc=False):
    """A business refusal: nothing was applied. `code` is a `engine.core.refusals.Refusal`."""

    code: str
    message: str
    field: str | None = None


class BalanceView(msgspec.Struct, frozen=True, gc=False):
    currency_id: str
    resource_id: str | None
    current_balance: int
    total_granted: int
    total_consumed: int
    reserved: int
    timestamp: int
    hard_limit: bool = True
    # The balance at or below which the pool counts as low (the usage_low events' line),
    # None when it cannot be low (nothing granted); set in reads only (views.pool_view).
    low_line: int | None = None


class GrantView(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    id: str
    currency_id: str
    resource_id: str | None
    grant_type: GrantType
    status: GrantStatus
    priority: int
    amount: int
    consumed_amount: int
    available: int
    held: int
    effective_at: int
    expire_at: int | None
    created_at: int
    updated_at: int
    voided_at: int | None
    cost_amount: int | None
    cost_currency: str | None
    display_name: str
    comment: str | None
    metadata: dict[str, str]


class ReservationView(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    id: str
    currency_id: str
    resource_id: str | None
    amount: int
    status: ReservationStatus
    expires_at: int
    consumed_amount: int | None = None


class ConsumeReply(Reply, frozen=True, kw_only=True, tag="consumed", gc=False):
    amount: int
    # ((grant id, units), ...) in the order the grants were drawn; the overdraft last.
    breakdown: tuple[tuple[str, int], ...]
    balance: BalanceView
    timestamp: int
    overdraft: int = 0


class GrantReply(Reply, frozen=True, kw_only=True, tag="grant", gc=False):
    grant: GrantView
    balance: BalanceView


class ReserveReply(Reply, frozen=True, kw_only=True, tag="reserved", gc=False):
    reservation: ReservationView
    balance: BalanceView


class ReleaseReply(Reply, frozen=True, kw_only=True, tag="released", gc=False):
    reservation: ReservationView
    balance: BalanceView


class BalancesReply(Reply, frozen=True, kw_only=True, tag="balances", gc=False):
    balances: tuple[BalanceView, ...]
    # Where the customer's sequences stood when the balances were read: the last domain
    # event (the feed's resume point) and the last operation (orders the read against
    # committed batches; see gateway/feed).
    seq: int = 0
    op: int = 0


class PoolSettingsReply(Reply, frozen=True, kw_only=True, tag="pool_settings", gc=False):
    balance: BalanceView
    low_balance_units: int | None
    usage_low_percent: int


class TickReply(Reply, frozen=True, kw_only=True, tag="tick", gc=False):
    next_due: int | None


class UsageView(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    feature_id: str
    resource_id: str | None
    current_usage: int  # units
    updated_at: int
    period_start: int | None = None  # the usage period the counter counts (None: no reset)


class UsageResult(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    usage: UsageView
    previous_usage: int
    consumed: int  # credit units burned (0 when this was a replay)
    currency_id: str | None
    balance: BalanceView | None
    timestamp: int


class UsageReply(Reply, frozen=True, kw_only=True, tag="usage", gc=False):
    results: tuple[UsageResult, ...]  # one per measurement, in order


class UsageCountersReply(Reply, frozen=True, kw_only=True, tag="usage_counters", gc=False):
    usages: tuple[UsageView, ...]


class Burn(msgspec.Struct, frozen=True, array_like=True, gc=False):
    currency_id: str
    resource_id: str | None
    consumed: int  # credit units taken from the pool
    uncovered: int  # credit units a hard-limited pool could not cover


class EventsReply(Reply, frozen=True, kw_only=True, tag="events", gc=False):
    accepted: int
    duplicates: int
    burns: tuple[Burn, ...]
    usage: tuple[UsageView, ...]  # counters the batch changed, as they are now
    timestamp: int


class AutoRechargeReply(Reply, frozen=True, kw_only=True, tag="auto_recharge", gc=False):
    settings: AutoRecharge | None  # a copy; None: never configured
    balance: BalanceView
    current_monthly_spend: int


class PendingRechargesReply(Reply, frozen=True, kw_only=True, tag="pending_recharges",
                            gc=False):
    # (grant id, currency id, resource id, credits, cost, price currency)
    recharges: tuple[tuple[str, str, str | None, int, int, str], ...]


AnyReply = (
    Refused | ConsumeReply | GrantReply | ReserveReply | ReleaseReply | BalancesReply
    | PoolSettingsReply | TickReply | UsageReply | EventsReply | AutoRechargeReply
    | PendingRechargesReply | UsageCountersReply
)
