"""The credit state machine: `apply(state, command, now, effects) -> reply`.

Pure and synchronous: no I/O, no clock, no awaiting. The runtime passes `now` (epoch ms,
never decreasing for one customer) and an `Effects` collector; the machine mutates the
customer's state, appends ledger rows and domain events to the collector, and returns a
reply. A refusal (`Refused`) is returned before anything is mutated, so a refused command
leaves no trace. See `engine.core.refusals` for the order in which checks are made.
"""

from __future__ import annotations

from bisect import insort
from collections.abc import Callable
from heapq import heappop
from itertools import islice

import msgspec

from engine.core import ledger_ops as ops
from engine.core import recharge, recharge_settle, usage
from engine.core.amounts import AMOUNT_UNITS_MAX, SCALE
from engine.core.commands import (
    AutoRechargeReply,
    BalancesReply,
    Command,
    ConfigureAutoRecharge,
    ConfigurePool,
    ConfirmPayment,
    Consume,
    ConsumeReply,
    CreateGrant,
    GetAutoRecharge,
    GetBalances,
    GetUsage,
    GrantReply,
    IngestEvents,
    PendingRecharges,
    PendingRechargesReply,
    PoolSettingsReply,
    Refused,
    Release,
    ReleaseReply,
    Reply,
    ReportUsage,
    Reserve,
    ReserveReply,
    RollUsage,
    SetGrantExpiry,
    SettleRecharge,
    Tick,
    TickReply,
    UsageCountersReply,
    VoidGrant,
)
from engine.core.effects import Bucket, Effects
from engine.core.idempotency import (
    IdempotencyRecord,
    created_at_of,
    is_replay,
    recall,
    remember,
    request_digest,
    same_request,
)
from engine.core.model import (
    AutoRecharge,
    CustomerState,
    EventType,
    Grant,
    GrantStatus,
    GrantType,
    Pool,
    Reservation,
    ReservationStatus,
)
from engine.core.refusals import Refusal, refuse
from engine.core.views import balance_view, grant_view, pool_view, reservation_view

__all__ = ["apply", "advance", "same_request", "purge", "trim_keys", "check_pool"]

_GRANTABLE = (GrantType.PAID, GrantType.PROMOTIONAL, GrantType.RECURRING)
# Grant ids the engine makes for itself.
_RESERVED_ID_PREFIXES = (ops.OVERDRAFT_ID_PREFIX, recharge.GRANT_ID_PREFIX)


# ---------------------------------------------------------------------------------------
# Validation of a command's own fields (precedence 1)


def _bad_amount(value: object, field: str, *, allow_zero: bool = False) -> Refused | None:
    if type(value) is not int:
        return refuse(Refusal.INVALID_AMOUNT, "must be an integer number of units", field)
    if value < 0 or (value == 0 and not allow_zero):
        return refuse(Refusal.INVALID_AMOUNT, "must be greater than zero", field)
    if value > AMOUNT_UNITS_MAX:
        return refuse(Refusal.INVALID_AMOUNT, "exceeds the maximum amount", field)
    return None


def _validate_grant(cmd: CreateGrant, now: int) -> Refused | None:
    if bad := _bad_amount(cmd.amount, "amount"):
        return bad
    if not cmd.grant_id or cmd.grant_id.startswith(_RESERVED_ID_PREFIXES):
        return refuse(Refusal.INVALID_GRANT_ID, "must be non-empty and not start with "
                      f"{' or '.join(map(repr, _RESERVED_ID_PREFIXES))}", "id")
    if cmd.cost_amount is not None and (
        bad := _bad_amount(cmd.cost_amount, "cost.amount", allow_zero=True)
    ):
        return bad
    if cmd.grant_type not in _GRANTABLE:
        return refuse(Refusal.INVALID_AMOUNT, "OVERDRAFT grants are created by the engine", "grantType")
    if type(cmd.priority) is not int or not 0 <= cmd.priority <= 100:
        return refuse(Refusal.INVALID_PRIORITY, "must be an integer from 0 to 100", "priority")
    if cmd.expire_at is not None and cmd.effective_at is not None:
        if cmd.expire_at <= cmd.effective_at:
            return refuse(Refusal.INVALID_DATES, "must be later than effectiveAt", "expireAt")
    return None


def _validate_consume(cmd: Consume, now: int) -> Refused | None:
    amount = cmd.amount
    if type(amount) is int and 0 < amount <= AMOUNT_UNITS_MAX:
        return None
    return _bad_amount(amount, "amount")


def _validate_reserve(cmd: Reserve, now: int) -> Refused | None:
    return _bad_amount(cmd.amount, "amount")


def _validate_release(cmd: Release, now: int) -> Refused | None:
    return _bad_amount(cmd.consumed_amount, "consumedAmount", allow_zero=True)


def _validate_configure(cmd: ConfigurePool, now: int) -> Refused | None:
    if cmd.low_balance_units is not None and (
        bad := _bad_amount(cmd.low_balance_units, "lowBalanceThreshold", allow_zero=True)
    ):
        return bad
    if cmd.usage_low_percent is not None and (
        type(cmd.usage_low_percent) is not int or not 1 <= cmd.usage_low_percent <= 100
    ):
        return refuse(Refusal.INVALID_PERCENT, "must be an integer from 1 to 100", "usageLowPercent")
    return None


def _validate_usage(cmd: ReportUsage, now: int) -> Refused | None:
    if cmd.idempotency_key is not None:
        return refuse(Refusal.INVALID_AMOUNT, "usage carries a key per measurement",
                      "idempotencyKey")
    for i, m in enumerate(cmd.measurements):
        at = f"usages[{i}]"
        if type(m.value) is not int or abs(m.value) > AMOUNT_UNITS_MAX:
            return refuse(Refusal.INVALID_AMOUNT, "must be an integer number of units within "
                          "the maximum amount", f"{at}.value")
        if m.set_value and m.value < 0:
            return refuse(Refusal.INVALID_AMOUNT, "a SET value must not be negative",
                          f"{at}.value")
        if m.credit_rate is not None and (
                bad := _bad_amount(m.credit_rate, f"{at}.creditRate")):
            return bad
        if (m.credit_rate is None) != (m.currency_id is None):
            return refuse(Refusal.INVALID_AMOUNT, "a credit rate needs its currency",
                          f"{at}.creditRate")
    return None


def _validate_events(cmd: IngestEvents, now: int) -> Refused | None:
    for i, event in enumerate(cmd.events):
        for m in event.metered:
            if m.credit_rate is not None and (
                    bad := _bad_amount(m.credit_rate, f"events[{i}].creditRate")):
                return bad
            if m.function == "UNIQUE" and type(m.value) is not str or (
                    m.function != "UNIQUE" and type(m.value) is not int):
                return refuse(Refusal.INVALID_AMOUNT, "a contribution of the wrong kind",
                              f"events[{i}]")
    return None


def _validate_auto_recharge(cmd: ConfigureAutoRecharge, now: int) -> Refused | None:
    def bad(message: str, field: str) -> Refused:
        return refuse(Refusal.INVALID_AUTO_RECHARGE, message, field)

    if cmd.threshold_type not in (recharge.CREDIT_AMOUNT, recharge.DOLLAR_AMOUNT):
        return bad("must be CREDIT_AMOUNT or DOLLAR_AMOUNT", "thresholdType")
    if cmd.expiration not in recharge.PERIOD_MONTHS:
        return bad("must be 1_MONTH or 1_YEAR", "grantExpirationPeriod")
    for value, field in ((cmd.threshold_value, "thresholdValue"),
                         (cmd.target_balance, "targetBalance"), (cmd.price, "topUpPrice"),
                         (cmd.max_spend, "maxSpendLimit"), (cmd.min_purchase, "minimumPurchase"),
                         (cmd.max_purchase, "maximumPurchase")):
        if value is not None and (refused := _bad_amount(value, field)):
            return refused
    # The target must be above the threshold, compared in the threshold's own terms.
    if cmd.threshold_type == recharge.DOLLAR_AMOUNT:
        above = cmd.target_balance * cmd.price > cmd.threshold_value * SCALE
    else:
        above = cmd.target_balance > cmd.threshold_value
    if not above:
        return bad("must be above the threshold", "targetBalance")
    if recharge.cost_of(cmd.target_balance, cmd.price) > AMOUNT_UNITS_MAX:
        return bad("a recharge to this target would cost more than the maximum amount",
                   "targetBalance")
    if (cmd.min_purchase is not None and cmd.max_purchase is not None
            and cmd.min_purchase > cmd.max_purchase):
        return bad("the minimum purchase is above the maximum", "minimumPurchase")
    return None


def _no_validation(cmd: Command, now: int) -> Refused | None:
    return None


# ---------------------------------------------------------------------------------------
# Handlers (precedence 3-5, then the mutation)


def _next_op(state: CustomerState) -> int:
    state.op_seq += 1
    return state.op_seq


def _create_grant(state: CustomerState, cmd: CreateGrant, now: int, fx: Effects) -> Reply:
    if cmd.grant_id in state.grants:
        return refuse(Refusal.GRANT_ID_TAKEN, "a grant with this id exists", "id")
    # Checks against `now` come after idempotency (here, not in the validator): a replay
    # of a request that was valid when first applied must get its original reply.
    if cmd.expire_at is not None and cmd.expire_at <= now:
        return refuse(Refusal.INVALID_DATES, "must be in the future", "expireAt")
    if _outstanding(state, cmd.currency_id, cmd.resource_id) + cmd.amount > AMOUNT_UNITS_MAX:
        return refuse(
            Refusal.BALANCE_LIMIT_EXCEEDED, "the pool's credits would exceed the maximum", "amount"
        )
    op = _next_op(state)
    pool = ops.pool_for(state, cmd.currency_id, cmd.resource_id)
    fx.pools[pool.key] = pool
    effective = now if cmd.effective_at is None else cmd.effective_at
    state.grant_seq += 1
    g = Grant(
        id=cmd.grant_id,
        seq=state.grant_seq,
        currency_id=cmd.currency_id,
        resource_id=cmd.resource_id,
        grant_type=cmd.grant_type,
        status=GrantStatus.ACTIVE,
        priority=cmd.priority,
        effective_at=effective,
        expire_at=cmd.expire_at,
        created_at=now,
        amount=cmd.amount,
        cost_amount=cmd.cost_amount,
        cost_currency=cmd.cost_currency,
        display_name=cmd.display_name,
        comment=cmd.comment,
        metadata=dict(cmd.metadata) if cmd.metadata else None,
    )
    state.grants[g.id] = g
    fx.grants[g.id] = g
    if cmd.await_payment:
        g.status = GrantStatus.PAYMENT_PENDING
    elif effective > now:
        g.status = GrantStatus.SCHEDULED
        ops.push_timer(state, effective, ops.TIMER_ACTIVATE, g.id)
    else:
        ops.activate(state, pool, g, now, fx, op)
    if g.expire_at is not None:
        ops.push_timer(state, g.expire_at, ops.TIMER_EXPIRE, g.id)
    ops.pool_thresholds(state, pool, now, fx)
    return GrantReply(grant=grant_view(g), balance=balance_view(pool, now))


def _outstanding(state: CustomerState, currency_id: str, resource_id: str | None) -> int:
    """Credits a pool has or will have: its balance, its holds, and grants waiting to
    become active. Bounded by AMOUNT_UNITS_MAX so no stored amount overflows. Grant
    creation is rare, so walking the pool's grants here costs nothing that matters."""
    pool = state.pools.get((currency_id, resource_id))
    if pool is None:
        return 0
    waiting = sum(
        g.amount
        for g in state.grants.values()
        if g.status in (GrantStatus.SCHEDULED, GrantStatus.PAYMENT_PENDING)
        and g.currency_id == currency_id
        and g.resource_id == resource_id
    )
    return max(pool.balance, 0) + pool.reserved + waiting


def _grant_of(state: CustomerState, grant_id: str) -> Grant | Refused:
    g = state.grants.get(grant_id)
    if g is None:
        return refuse(Refusal.GRANT_NOT_FOUND, "no such grant for this customer", "id")
    return g


def _live_grant(state: CustomerState, grant_id: str, overdraft: str) -> Grant | Refused:
    """The grant, if it exists and is neither an overdraft (`overdraft`: why not), voided
    nor expired."""
    g = _grant_of(state, grant_id)
    if isinstance(g, Refused):
        return g
    if g.grant_type is GrantType.OVERDRAFT:
        return refuse(Refusal.GRANT_NOT_VOIDABLE, overdraft, "id")
    if g.status is GrantStatus.VOIDED:
        return refuse(Refusal.GRANT_ALREADY_VOIDED, "the grant is already voided", "id")
    if g.status is GrantStatus.EXPIRED:
        return refuse(Refusal.GRANT_ALREADY_EXPIRED, "the grant has expired", "id")
    return g


def _void_grant(state: CustomerState, cmd: VoidGrant, now: int, fx: Effects) -> Reply:
    g = _live_grant(state, cmd.grant_id, "an overdraft is repaid, not voided")
    if isinstance(g, Refused):
        return g
    op = _next_op(state)
    pool = state.pools[(g.currency_id, g.resource_id)]
    if pool.recharge is not None and pool.recharge.in_flight == g.id:
        # An operator voiding a recharge in flight: it failed, as if the payment had.
        recharge_settle.settle(state, pool, g, False, "voided by an operator", now, fx, op)
        return GrantReply(grant=grant_view(g), balance=balance_view(pool, now))
    ops.forfeit(state, pool, g, GrantStatus.VOIDED, now, fx, op)
    ops.event(state, fx, EventType.GRANT_UPDATED, pool, now, g)
    fx.pools[pool.key] = pool  # its balance moved: the feed shows it (gateway/feed/hub.py)
    ops.pool_thresholds(state, pool, now, fx)
    return GrantReply(grant=grant_view(g), balance=balance_view(pool, now))


def _set_grant_expiry(state: CustomerState, cmd: SetGrantExpiry, now: int,
                      fx: Effects) -> Reply:
    g = _live_grant(state, cmd.grant_id, "an overdraft has no expiry")
    if isinstance(g, Refused):
        return g
    pool = state.pools[(g.currency_id, g.resource_id)]
    if g.expire_at == cmd.expire_at:
        return GrantReply(grant=grant_view(g), balance=balance_view(pool, now))
    if cmd.expire_at is not None and (cmd.expire_at <= now or cmd.expire_at <= g.effective_at):
        return refuse(Refusal.INVALID_DATES, "must be later than now and than effectiveAt",
                      "expireAt")
    _next_op(state)
    # The expiry orders consumption (soonest first): re-file an active grant under its new
    # key. A timer for the old expiry finds the expiry changed and skips (`advance`).
    listed = g in pool.active
    if listed:
        pool.active.remove(g)
    g.set_expiry(cmd.expire_at)
    if listed:
        insort(pool.active, g, key=lambda x: x.order_key)
    if cmd.expire_at is not None:
        ops.push_timer(state, cmd.expire_at, ops.TIMER_EXPIRE, g.id)
    fx.grants[g.id] = g
    fx.pools[pool.key] = pool
    ops.event(state, fx, EventType.GRANT_UPDATED, pool, now, g)
    return GrantReply(grant=grant_view(g), balance=balance_view(pool, now))


def _confirm_payment(state: CustomerState, cmd: ConfirmPayment, now: int, fx: Effects) -> Reply:
    g = _grant_of(state, cmd.grant_id)
    if isinstance(g, Refused):
        return g
    if g.status is not GrantStatus.PAYMENT_PENDING:
        return refuse(Refusal.GRANT_NOT_PENDING, f"the grant is {g.status}, not PAYMENT_PENDING", "id")
    op = _next_op(state)
    pool = state.pools[(g.currency_id, g.resource_id)]
    if pool.recharge is not None and pool.recharge.in_flight == g.id:
        recharge_settle.settle(state, pool, g, True, None, now, fx, op)  # paid out of band
        return GrantReply(grant=grant_view(g), balance=balance_view(pool, now))
    fx.grants[g.id] = g
    if g.effective_at > now:
        g.status = GrantStatus.SCHEDULED
        g.updated_at = now
        ops.push_timer(state, g.effective_at, ops.TIMER_ACTIVATE, g.id)
    else:
        ops.activate(state, pool, g, now, fx, op)
    return GrantReply(grant=grant_view(g), balance=balance_view(pool, now))


def _consume(state: CustomerState, cmd: Consume, now: int, fx: Effects) -> Reply:
    pool_key = (cmd.currency_id, cmd.resource_id)
    pool = state.pools.get(pool_key)
    amount = cmd.amount
    if pool is None or (amount > pool.balance and pool.hard_limit):
        available = 0 if pool is None else max(pool.balance, 0)
        return refuse(
            Refusal.INSUFFICIENT_CREDITS,
            f"requested {amount} units, {available} available",
            "amount",
        )
    if pool.balance - amount < -AMOUNT_UNITS_MAX:
        # A soft limit still has a floor: the overdraft is an amount like any other.
        return refuse(Refusal.BALANCE_LIMIT_EXCEEDED,
                      "the overdraft would exceed the maximum amount", "amount")
    state.op_seq = op = state.op_seq + 1
    key = cmd.idempotency_key
    breakdown, rest = ops.draw(
        state, pool, amount, now, fx, op, cmd.feature_id, key, cmd.dimensions
    )
    if rest:
        breakdown += (ops.overdraw(
            state, pool, rest, now, fx, op, cmd.feature_id, key, cmd.dimensions
        ),)
    fx.pools[pool_key] = pool
    # Credit-usage analytics count direct consumption too (as feature-less usage).
    at = now if cmd.created_at is None else cmd.created_at
    fx.buckets.append(Bucket(cmd.feature_id, cmd.resource_id, cmd.currency_id, cmd.dimensions,
                             at - at % usage.HOUR_MS, 0, amount, 1))
    # Consumption only lowers the balance, so only an unset flag can flip, and only once
    # the balance has reached its line: most consumptions skip the threshold check.
    balance = pool.balance
    low_line = pool.low_line
    recharge_line = pool.recharge_line
    if (balance <= 0 and not pool.depleted_fired) or (
        low_line is not None and balance <= low_line and not pool.usage_low_fired
    ) or (recharge_line is not None and balance < recharge_line):
        ops.pool_thresholds(state, pool, now, fx)
    return ConsumeReply(
        amount=amount, breakdown=breakdown, balance=balance_view(pool, now),
        timestamp=now, overdraft=rest,
    )


def _reserve(state: CustomerState, cmd: Reserve, now: int, fx: Effects) -> Reply:
    if cmd.reservation_id in state.reservations:
        return refuse(Refusal.RESERVATION_ID_TAKEN, "a reservation with this id exists", "reservationId")
    if cmd.expires_at <= now:
        return refuse(Refusal.INVALID_DATES, "must be in the future", "expiresAt")
    pool = state.pools.get((cmd.currency_id, cmd.resource_id))
    # A hold must be backed by real credits, so reservations never overdraw, soft limit or not.
    if pool is None or cmd.amount > pool.balance:
        available = 0 if pool is None else max(pool.balance, 0)
        return refuse(
            Refusal.INSUFFICIENT_CREDITS,
            f"requested {cmd.amount} units, {available} available",
            "reserveAmount",
        )
    op = _next_op(state)
    r = Reservation(
        id=cmd.reservation_id,
        currency_id=cmd.currency_id,
        resource_id=cmd.resource_id,
        amount=cmd.amount,
        holds={},
        created_at=now,
        expires_at=cmd.expires_at,
        metadata=dict(cmd.metadata) if cmd.metadata else None,
    )
    ops.hold(state, pool, r, now, fx, op)
    state.reservations[r.id] = r
    fx.reservations[r.id] = r
    fx.pools[pool.key] = pool
    ops.push_timer(state, r.expires_at, ops.TIMER_RESERVATION, r.id)
    ops.pool_thresholds(state, pool, now, fx)
    return ReserveReply(reservation=reservation_view(r), balance=balance_view(pool, now))


def _release(state: CustomerState, cmd: Release, now: int, fx: Effects) -> Reply:
    r = state.reservations.get(cmd.reservation_id)
    if r is None:
        return refuse(Refusal.RESERVATION_NOT_FOUND, "no such reservation for this customer", "reservationId")
    if cmd.currency_id is not None and cmd.currency_id != r.currency_id:
        return refuse(Refusal.RESERVATION_POOL_MISMATCH,
                      "the reservation belongs to another currency", "currencyId")
    if cmd.resource_id is not None and cmd.resource_id != r.resource_id:
        return refuse(Refusal.RESERVATION_POOL_MISMATCH,
                      "the reservation belongs to another resource", "resourceId")
    if r.status is not ReservationStatus.ACTIVE:
        return refuse(Refusal.RESERVATION_NOT_ACTIVE, f"the reservation is {r.status}", "reservationId")
    pool = state.pools[(r.currency_id, r.resource_id)]
    # The contract: what goes beyond the reservation is consumed normally, under the
    # pool's limit. Decided before anything moves, so a refusal leaves the hold in place.
    excess = cmd.consumed_amount - r.amount
    if excess > 0:
        if excess > pool.balance and pool.hard_limit:
            return refuse(
                Refusal.INSUFFICIENT_CREDITS,
                f"consumed {excess} units beyond the reservation, "
                f"{max(pool.balance, 0)} available", "consumedAmount")
        if pool.balance - excess < -AMOUNT_UNITS_MAX:
            return refuse(Refusal.BALANCE_LIMIT_EXCEEDED,
                          "the overdraft would exceed the maximum amount", "consumedAmount")
    op = _next_op(state)
    ops.settle(
        state, pool, r, min(cmd.consumed_amount, r.amount), now, fx, op, expired=False,
        feature_id=cmd.feature_id, key=cmd.idempotency_key,
    )
    if excess > 0:
        # Tagged with the reservation, so the ledger alone still says what it consumed.
        _, rest = ops.draw(state, pool, excess, now, fx, op, cmd.feature_id,
                           cmd.idempotency_key, None, r.id)
        if rest:
            ops.overdraw(state, pool, rest, now, fx, op, cmd.feature_id, cmd.idempotency_key,
                         None, r.id)
        r.consumed_amount = cmd.consumed_amount
    fx.pools[pool.key] = pool
    if cmd.consumed_amount:
        fx.buckets.append(Bucket(cmd.feature_id, r.resource_id, r.currency_id, None,
                                 now - now % usage.HOUR_MS, 0, cmd.consumed_amount, 1))
    ops.pool_thresholds(state, pool, now, fx)
    return ReleaseReply(reservation=reservation_view(r), balance=balance_view(pool, now))


def _get_usage(state: CustomerState, cmd: GetUsage, now: int, fx: Effects) -> Reply:
    found = [usage.usage_view(c) for (feature_id, resource_id), c in state.usage.items()
             if resource_id == cmd.resource_id
             and (cmd.feature_id is None or feature_id == cmd.feature_id)]
    return UsageCountersReply(usages=tuple(found))


def _configure_pool(state: CustomerState, cmd: ConfigurePool, now: int, fx: Effects) -> Reply:
    pool = ops.pool_for(state, cmd.currency_id, cmd.resource_id)
    if cmd.hard_limit is not None:
        pool.hard_limit = cmd.hard_limit
    if cmd.clear_low_balance:
        pool.low_balance_units = None
    elif cmd.low_balance_units is not None:
        pool.low_balance_units = cmd.low_balance_units
    if cmd.usage_low_percent is not None:
        pool.usage_low_percent = cmd.usage_low_percent
        for g in state.grants.values():
            if (g.currency_id, g.resource_id) == pool.key:
                ops.grant_thresholds(state, pool, g, now, fx)
    pool.low_line = ops.low_line(pool)
    _next_op(state)
    fx.pools[pool.key] = pool
    ops.pool_thresholds(state, pool, now, fx)
    return PoolSettingsReply(
        balance=pool_view(pool, now),
        low_balance_units=pool.low_balance_units,
        usage_low_percent=pool.usage_low_percent,
    )


def _get_balances(state: CustomerState, cmd: GetBalances, now: int, fx: Effects) -> Reply:
    views = tuple(
        pool_view(p, now)
        for p in state.pools.values()
        if (cmd.currency_id is None or p.currency_id == cmd.currency_id)
        and (not cmd.match_resource or p.resource_id == cmd.resource_id)
    )
    return BalancesReply(balances=views, seq=state.event_seq, op=state.op_seq)


def _recharge_reply(pool: Pool, now: int) -> AutoRechargeReply:
    r = pool.recharge
    return AutoRechargeReply(
        settings=None if r is None else msgspec.structs.replace(r),
        balance=balance_view(pool, now),
        current_monthly_spend=0 if r is None else recharge.current_spend(r, now))


def _configure_auto_recharge(state: CustomerState, cmd: ConfigureAutoRecharge, now: int,
                             fx: Effects) -> Reply:
    pool = ops.pool_for(state, cmd.currency_id, cmd.resource_id)
    recharge.configure(state, pool, AutoRecharge(
        enabled=cmd.enabled, threshold_type=cmd.threshold_type,
        threshold_value=cmd.threshold_value, target_balance=cmd.target_balance,
        max_spend=cmd.max_spend, expiration=cmd.expiration, price=cmd.price,
        price_currency=cmd.price_currency, min_purchase=cmd.min_purchase,
        max_purchase=cmd.max_purchase), now, fx)
    return _recharge_reply(pool, now)


def _get_auto_recharge(state: CustomerState, cmd: GetAutoRecharge, now: int,
                       fx: Effects) -> Reply:
    pool = state.pools.get((cmd.currency_id, cmd.resource_id))
    if pool is None:
        pool = Pool(cmd.currency_id, cmd.resource_id)  # not kept: a read creates nothing
    return _recharge_reply(pool, now)


def _settle_recharge(state: CustomerState, cmd: SettleRecharge, now: int,
                     fx: Effects) -> Reply:
    g = state.grants.get(cmd.grant_id)
    pool = None if g is None else state.pools.get((g.currency_id, g.resource_id))
    if (g is None or pool is None or pool.recharge is None
            or pool.recharge.in_flight != g.id or g.status is not GrantStatus.PAYMENT_PENDING):
        return refuse(Refusal.GRANT_NOT_PENDING, "no recharge in flight with this grant", "id")
    recharge_settle.settle(state, pool, g, cmd.paid, cmd.reason, now, fx, _next_op(state))
    return _recharge_reply(pool, now)


def _pending_recharges(state: CustomerState, cmd: PendingRecharges, now: int,
                       fx: Effects) -> Reply:
    found = []
    for pool in state.pools.values():
        r = pool.recharge
        if r is not None and r.in_flight is not None:
            g = state.grants[r.in_flight]
            found.append((g.id, pool.currency_id, pool.resource_id, g.amount,
                          r.in_flight_cost, r.price_currency))
    return PendingRechargesReply(recharges=tuple(found))


def _tick(state: CustomerState, cmd: Tick, now: int, fx: Effects) -> Reply:
    return TickReply(next_due=state.next_due())


_Validator = Callable[[Command, int], Refused | None]
_Handler = Callable[[CustomerState, Command, int, Effects], Reply]

_DISPATCH: dict[type, tuple[_Validator, _Handler]] = {
    CreateGrant: (_validate_grant, _create_grant),
    VoidGrant: (_no_validation, _void_grant),
    SetGrantExpiry: (_no_validation, _set_grant_expiry),
    ConfirmPayment: (_no_validation, _confirm_payment),
    Consume: (_validate_consume, _consume),
    Reserve: (_validate_reserve, _reserve),
    Release: (_validate_release, _release),
    ConfigurePool: (_validate_configure, _configure_pool),
    GetBalances: (_no_validation, _get_balances),
    GetUsage: (_no_validation, _get_usage),
    RollUsage: (_no_validation, usage.roll_usage),
    Tick: (_no_validation, _tick),
    ReportUsage: (_validate_usage, usage.report_usage),
    IngestEvents: (_validate_events, usage.ingest_events),
    ConfigureAutoRecharge: (_validate_auto_recharge, _configure_auto_recharge),
    GetAutoRecharge: (_no_validation, _get_auto_recharge),
    SettleRecharge: (_no_validation, _settle_recharge),
    PendingRecharges: (_no_validation, _pending_recharges),
}


# ---------------------------------------------------------------------------------------
# Entry points


def apply(state: CustomerState, cmd: Command, now: int, fx: Effects) -> Reply:
    """Apply one command at time `now`. Never raises for a business outcome."""
    timers = state.timers
    if timers and timers[0][0] <= now:
        advance(state, now, fx)
    validate, handle = _DISPATCH[type(cmd)]
    bad = validate(cmd, now)
    if bad is not None:
        return bad
    key = cmd.idempotency_key
    if key is None:
        return handle(state, cmd, now, fx)
    memo = state.idempotency.get(key)
    request = request_digest(cmd)
    if memo is not None:
        if is_replay(memo, request):
            return recall(memo)
        return refuse(
            Refusal.IDEMPOTENCY_KEY_REUSED,
            "this idempotency key was used with a different request",
            "idempotencyKey",
        )
    op_before = state.op_seq
    reply = handle(state, cmd, now, fx)
    if type(reply) is not Refused:
        memo = remember(request, reply, now)
        state.idempotency[key] = memo
        fx.keys.append(IdempotencyRecord(
            key=key, memo=memo, op_seq=state.op_seq if state.op_seq != op_before else None))
    return reply


def advance(state: CustomerState, now: int, fx: Effects) -> None:
    """Fire every timer due at or before `now`, in time order, each at its own due time.

    Timers are checked when popped: a grant voided before its expiry, or a reservation
    released before its TTL, leaves a stale timer that is skipped here.
    """
    timers = state.timers
    while timers and timers[0][0] <= now:
        due, kind, ident = heappop(timers)
        if kind == ops.TIMER_RECHARGE:
            pool = recharge.pool_of_timer(state, ident)
            if pool is not None:
                recharge.check(state, pool, due, fx)
            continue
        if kind == ops.TIMER_RESERVATION:
            r = state.reservations.get(ident)
            if r is None or r.status is not ReservationStatus.ACTIVE or r.expires_at != due:
                continue
            pool = state.pools[(r.currency_id, r.resource_id)]
            ops.settle(state, pool, r, 0, due, fx, _next_op(state), expired=True)
        else:
            g = state.grants.get(ident)
            if g is None:
                continue
            pool = state.pools[(g.currency_id, g.resource_id)]
            if kind == ops.TIMER_ACTIVATE:
                if g.status is not GrantStatus.SCHEDULED or g.effective_at != due:
                    continue
                ops.activate(state, pool, g, due, fx, _next_op(state))
            else:
                if g.expire_at != due or g.status in (GrantStatus.EXPIRED, GrantStatus.VOIDED):
                    continue
                x = ops.forfeit(state, pool, g, GrantStatus.EXPIRED, due, fx, _next_op(state))
                ops.event(state, fx, EventType.EXPIRED, pool, due, g, x)
        fx.pools[pool.key] = pool
        ops.pool_thresholds(state, pool, due, fx)


def purge(state: CustomerState, before: int, limit: int) -> int:
    """Forget idempotency keys and settled reservations older than `before`, at most
    `limit` of them (so a purge never stalls the actor); returns how many went."""
    removed = 0
    for key in [k for k, memo in state.idempotency.items()
                if created_at_of(memo) < before][:limit]:
        del state.idempotency[key]
        removed += 1
    if removed < limit:
        done = [
            rid
            for rid, r in state.reservations.items()
            if r.status is not ReservationStatus.ACTIVE and (r.released_at or 0) < before
        ][: limit - removed]
        for rid in done:
            del state.reservations[rid]
        removed += len(done)
    return removed


def trim_keys(state: CustomerState, keep: int) -> int:
    """Drop the oldest remembered keys beyond `keep` from memory (they stay in the store);
    returns how many were dropped."""
    excess = len(state.idempotency) - keep
    if excess <= 0:
        return 0
    state.keys_complete = False
    if keep == 0:
        # clear() hands the table back; deleting every key would keep it at its largest.
        state.idempotency.clear()
        return excess
    # Dicts keep insertion (= age) order, so the oldest are the first `excess`; take just
    # those (islice), not a copy of every key: this runs after every batch of a customer
    # at its limit, and copying all of them was a third of the server's time under load.
    for key in list(islice(state.idempotency, excess)):
        del state.idempotency[key]
    return excess


def check_pool(state: CustomerState, pool: Pool) -> None:
    """Assert that a pool's projections agree with its grants (used by tests and replay)."""
    grants = [g for g in state.grants.values() if (g.currency_id, g.resource_id) == pool.key]
    for g in grants:
        g.check()
    assert pool.balance == sum(g.available for g in grants if g.status is GrantStatus.ACTIVE)
    assert pool.reserved == sum(g.held for g in grants)
    assert pool.consumed == sum(g.consumed for g in grants)
    assert pool.expired == sum(g.expired for g in grants)
    assert pool.voided == sum(g.voided for g in grants)
    assert pool.granted == sum(g.amount for g in grants if g.activated)
    assert pool.balance == pool.granted - pool.consumed - pool.expired - pool.voided - pool.reserved
    assert pool.active_granted == sum(g.amount for g in grants if g.status is GrantStatus.ACTIVE
                                      and g.grant_type is not GrantType.OVERDRAFT)
    assert pool.low_line == ops.low_line(pool)
    assert pool.recharge_line == recharge.recharge_line(pool)
    assert pool.usage_low_fired is ops.pool_is_low(pool)
    assert pool.depleted_fired is (pool.balance <= 0)
    active = [g for g in grants if g.status is GrantStatus.ACTIVE and g.available > 0
              and g.grant_type is not GrantType.OVERDRAFT]
    assert pool.active == sorted(active, key=lambda g: g.order_key)
    if pool.overdraft is not None and pool.overdraft.available < 0:
        assert not pool.active, "an open overdraft must be repaid before credits are available"
