"""Auto-recharge: threshold top-ups with a target balance and a monthly spend cap.

A pool may carry an `AutoRecharge`. When a change takes the pool's balance below the
threshold, the actor starts one recharge there and then, serialized with every other
change of the customer:

1. it creates a PAID grant of `target - balance` credits (less if the month's cap or the
   currency's maximum purchase says so) in status PAYMENT_PENDING, with its cost and an
   expiry one month or one year on, and emits `credits.auto_recharge.attempted`;
2. the runtime's recharge executor (engine.runtime.recharge) charges the payment provider
   with the grant id as the idempotency key, and reports back with `SettleRecharge`;
3. paid: the grant activates (the balance lands on the target), the cost is added to the
   month's spend, `credits.auto_recharge.succeeded` and the 80/90/100 % spend alerts fire.
   Failed: the grant is voided, auto-recharge is disabled (its configuration kept) and
   `credits.auto_recharge.failed` fires (engine.core.recharge_settle: it activates the
   grant through ledger_ops, which starts recharges through this module).

While a recharge is in flight the pool has no recharge line, so no second one starts.
The in-flight grant is durable like any grant and the pool row keeps `in_flight`, so a
restart resumes the payment with the same key: a provider that honours idempotency keys
never charges twice.

Money is in units of 10^-5 of the price's currency (the same scale as credits). Costs
round up (a fraction of a cent is charged, never given away); what a remaining cap can buy
rounds down, so a recharge never takes the month's spend past the cap.

Pure: no I/O, time passed in.
"""

from __future__ import annotations

import hashlib
from typing import Any

from engine.core import emit
from engine.core.amounts import AMOUNT_UNITS_MAX, SCALE
from engine.core.effects import Effects, RechargeRequest
from engine.core.model import (
    AutoRecharge,
    CustomerState,
    EventType,
    Grant,
    GrantStatus,
    GrantType,
    Pool,
)

__all__ = ["grant_id_for", "next_month_start", "month_start", "limit_timer", "timer_id",
           "pool_of_timer", "AutoRecharge", "RechargeRequest", "recharge_line", "check", "AMOUNT_DETAILS",
           "configure", "month_of", "add_months", "cost_of", "current_spend",
           "ALERT_PERCENTS", "GRANT_ID_PREFIX", "details", "roll_month", "recharge_event"]

CREDIT_AMOUNT = "CREDIT_AMOUNT"
DOLLAR_AMOUNT = "DOLLAR_AMOUNT"
PERIOD_MONTHS = {"1_MONTH": 1, "1_YEAR": 12}
ALERT_PERCENTS = (80, 90, 100)
GRANT_ID_PREFIX = "autorecharge-"  # reserved: clients cannot create grants with it


_DAY_MS = 86_400_000


def _civil(days: int) -> tuple[int, int, int]:
    """(year, month, day) of a day number since 1970-01-01, proleptic Gregorian (H.
    Hinnant's algorithm: integer arithmetic, because the core does not import datetime)."""
    z = days + 719_468
    era = z // 146_097
    doe = z - era * 146_097
    yoe = (doe - doe // 1460 + doe // 36_524 - doe // 146_096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + 3 if mp < 10 else mp - 9
    return yoe + era * 400 + (month <= 2), month, day


def _days(year: int, month: int, day: int) -> int:
    """The inverse of `_civil`."""
    year -= month <= 2
    era = year // 400
    yoe = year - era * 400
    doy = (153 * (month - 3 if month > 2 else month + 9) + 2) // 5 + day - 1
    return era * 146_097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719_468


def month_of(ms: int) -> int:
    """The calendar month (UTC) of epoch milliseconds `ms`, as year * 12 + month - 1."""
    year, month, _ = _civil(ms // _DAY_MS)
    return year * 12 + month - 1


def add_months(ms: int, months: int) -> int:
    """The same day and time `months` calendar months later, UTC (the last day of a
    shorter month: 31 January + 1 month = 28 or 29 February)."""
    days, time_of_day = divmod(ms, _DAY_MS)
    year, month, day = _civil(days)
    index = year * 12 + month - 1 + months
    year, month = index // 12, index % 12 + 1
    following = _days(year + month // 12, month % 12 + 1, 1)
    last = following - _days(year, month, 1)
    return _days(year, month, min(day, last)) * _DAY_MS + time_of_day


def next_month_start(ms: int) -> int:
    return month_start(month_of(ms) + 1)


def month_start(month: int) -> int:
    """Epoch ms at the start of `month` (a month_of() value)."""
    return _days(month // 12, month % 12 + 1, 1) * _DAY_MS


def limit_timer(r: AutoRecharge) -> int | None:
    """When a capped pool looks again (the start of the month after the cap was hit), or
    None when it is not waiting for one."""
    if r.limit_fired and r.enabled and r.in_flight is None:
        return month_start(r.month + 1)
    return None


def grant_id_for(customer_id: str, currency_id: str, resource_id: str | None, n: int) -> str:
    """The id of a pool's n-th recharge grant; also the payment's idempotency key, so it
    must be unique across customers (a provider sees keys from all of them), and safe in a
    URL path (operators void a stuck one by id). A digest of the customer and pool does
    both whatever characters their ids hold."""
    pool = f"{customer_id}\0{currency_id}\0{resource_id or ''}".encode()
    return f"{GRANT_ID_PREFIX}{hashlib.blake2b(pool, digest_size=10).hexdigest()}-{n}"


def cost_of(credits: int, price: int) -> int:
    return -(-credits * price // SCALE)  # rounded up


def current_spend(r: AutoRecharge, now: int) -> int:
    return r.spent if r.month == month_of(now) else 0


def timer_id(pool: Pool) -> str:
    return f"{pool.currency_id}\0{pool.resource_id or ''}"


def pool_of_timer(state: CustomerState, ident: str) -> Pool | None:
    currency, _, resource = ident.partition("\0")
    return state.pools.get((currency, resource or None))


def recharge_line(pool: Pool) -> int | None:
    """The balance below which `pool` starts a recharge, or None when it cannot start one
    (none configured, disabled, or one in flight). Stored as `pool.recharge_line` and
    recomputed by whoever changes the settings or the in-flight state."""
    r = pool.recharge
    if r is None or not r.enabled or r.in_flight is not None:
        return None
    if r.threshold_type == DOLLAR_AMOUNT:
        # balance * price < value * SCALE  <=>  balance < ceil(value * SCALE / price)
        return -(-r.threshold_value * SCALE // r.price)
    return r.threshold_value


def recharge_event(state: CustomerState, fx: Effects, type_: EventType, pool: Pool,
                   now: int, details: dict[str, Any], g: Grant | None = None,
                   amount: int | None = None) -> None:
    emit.event(state, fx, type_, pool, now, g, amount, details=details)


# Details that are amounts, in units (money or credits); the wire shows them as numbers.
AMOUNT_DETAILS = frozenset({"maxSpendLimit", "currentMonthlySpend", "credits", "cost", "wanted"})


def details(r: AutoRecharge, now: int, **extra: Any) -> dict[str, Any]:
    return {"maxSpendLimit": r.max_spend, "currentMonthlySpend": current_spend(r, now),
            "priceCurrency": r.price_currency, **extra}


def roll_month(r: AutoRecharge, now: int) -> None:
    month = month_of(now)
    if r.month != month:
        r.month, r.spent, r.alerts, r.limit_fired = month, 0, 0, False


def check(state: CustomerState, pool: Pool, now: int, fx: Effects) -> None:
    """Start a recharge if the pool's balance is below its line (see the module doc)."""
    line = pool.recharge_line
    if line is None or pool.balance >= line:
        return
    r = pool.recharge
    assert r is not None
    roll_month(r, now)
    want = r.target_balance - pool.balance
    if r.max_purchase is not None:
        want = min(want, r.max_purchase)
    # Within what any stored amount may be: the grant, the pool's total and the cost (a
    # soft-limited pool deep in overdraft could otherwise ask for more).
    want = min(want, AMOUNT_UNITS_MAX - max(pool.balance, 0) - pool.reserved,
               AMOUNT_UNITS_MAX * SCALE // r.price)
    capped = False
    if r.max_spend is not None:
        affordable = max(r.max_spend - r.spent, 0) * SCALE // r.price
        if affordable < want:
            want, capped = affordable, True
    if want <= 0 or (r.min_purchase is not None and want < r.min_purchase):
        # Nothing the cap allows (or less than the smallest purchase): stop until next
        # month, telling once. A timer looks again when the month turns, so a pool that
        # can take no more consumptions (a hard limit at 0) is topped up then, not only
        # after its next change.
        if not r.limit_fired:
            r.limit_fired = True
            recharge_event(state, fx, EventType.AUTO_RECHARGE_LIMIT_EXCEEDED, pool, now,
                           details(r, now, wanted=r.target_balance - pool.balance))
            fx.pools[pool.key] = pool
            emit.push_timer(state, month_start(r.month + 1), emit.TIMER_RECHARGE, timer_id(pool))
        return
    cost = cost_of(want, r.price)
    r.attempts += 1
    grant_id = grant_id_for(state.customer_id, pool.currency_id, pool.resource_id, r.attempts)
    state.grant_seq += 1
    g = Grant(
        id=grant_id, seq=state.grant_seq, currency_id=pool.currency_id,
        resource_id=pool.resource_id, grant_type=GrantType.PAID,
        # No expiry while the payment is pending: however long that takes, the grant must
        # still be there to settle. It gets one when it is paid (`settle`).
        status=GrantStatus.PAYMENT_PENDING, priority=50, effective_at=now,
        expire_at=None, created_at=now,
        amount=want, cost_amount=cost, cost_currency=r.price_currency,
        display_name="Automatic recharge", comment=None,
        metadata={"autoRecharge": "true", "capped": "true" if capped else "false"},
    )
    state.grants[g.id] = g
    fx.grants[g.id] = g
    r.in_flight, r.in_flight_cost, r.updated_at = grant_id, cost, now
    pool.recharge_line = None
    fx.pools[pool.key] = pool
    recharge_event(state, fx, EventType.AUTO_RECHARGE_ATTEMPTED, pool, now,
                   details(r, now, rechargeId=grant_id, credits=want, cost=cost,
                           capped=capped), g, want)
    fx.recharges.append(RechargeRequest(
        customer_id=state.customer_id, grant_id=grant_id, currency_id=pool.currency_id,
        resource_id=pool.resource_id, credits=want, cost=cost, price_currency=r.price_currency))


def configure(state: CustomerState, pool: Pool, settings: AutoRecharge, now: int,
              fx: Effects) -> AutoRecharge:
    """Save `settings` (validated by the caller) on the pool, keeping the month's state and
    any recharge in flight; enabling clears the last failure. Then check the line."""
    old = pool.recharge
    if old is not None:
        settings.month, settings.spent, settings.alerts = old.month, old.spent, old.alerts
        settings.limit_fired, settings.attempts = old.limit_fired, old.attempts
        settings.in_flight, settings.in_flight_cost = old.in_flight, old.in_flight_cost
        settings.created_at = old.created_at
        settings.failure = None if settings.enabled else old.failure
    else:
        settings.created_at = now
    settings.updated_at = now
    pool.recharge = settings
    pool.recharge_line = recharge_line(pool)
    fx.pools[pool.key] = pool
    recharge_event(state, fx, EventType.AUTO_RECHARGE_CONFIGURATION_CHANGED, pool, now,
                   details(settings, now, isEnabled=settings.enabled))
    check(state, pool, now, fx)
    return settings
