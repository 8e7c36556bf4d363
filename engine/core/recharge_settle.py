"""What the payment of a recharge leads to (step 3 of engine.core.recharge): paid, its
grant activates, the month's spend grows and the spend alerts fire; failed, the grant is
voided and auto-recharge is disabled. Above both recharge and ledger_ops: activating the
grant goes through ledger_ops, whose thresholds may start the next recharge (recharge).

Pure: no I/O, time passed in.
"""

from __future__ import annotations

from engine.core import emit
from engine.core import ledger_ops as ops
from engine.core.effects import Effects
from engine.core.model import CustomerState, EventType, Grant, GrantStatus, Pool
from engine.core.recharge import (
    ALERT_PERCENTS,
    PERIOD_MONTHS,
    add_months,
    check,
    details,
    recharge_event,
    recharge_line,
    roll_month,
)

__all__ = ["settle"]


def settle(state: CustomerState, pool: Pool, g: Grant, paid: bool, reason: str | None,
           now: int, fx: Effects, op: int) -> None:
    """The payment for in-flight recharge `g` succeeded or failed (see the module doc)."""
    r = pool.recharge
    assert r is not None and r.in_flight == g.id and g.status is GrantStatus.PAYMENT_PENDING
    cost = r.in_flight_cost
    r.in_flight, r.in_flight_cost, r.updated_at = None, 0, now
    fx.pools[pool.key] = pool
    fx.grants[g.id] = g
    if paid:
        roll_month(r, now)
        r.spent += cost
        g.set_expiry(add_months(now, PERIOD_MONTHS[r.expiration]))  # not filed yet: pending
        emit.push_timer(state, g.expire_at, emit.TIMER_EXPIRE, g.id)
        # The line stays down while the grant activates, so what the success leads to (a
        # further recharge, the cap) is reported after the success itself.
        ops.activate(state, pool, g, now, fx, op)
        recharge_event(state, fx, EventType.AUTO_RECHARGE_SUCCEEDED, pool, now,
                       details(r, now, rechargeId=g.id, credits=g.amount, cost=cost), g,
                       g.amount)
        if r.max_spend:
            for percent in ALERT_PERCENTS:
                if percent > r.alerts and r.spent * 100 >= r.max_spend * percent:
                    r.alerts = percent
                    recharge_event(state, fx, EventType.AUTO_RECHARGE_SPEND_ALERT, pool, now,
                                   details(r, now, percent=percent))
        pool.recharge_line = recharge_line(pool)
        check(state, pool, now, fx)
        return
    g.status = GrantStatus.VOIDED
    g.voided_at = g.updated_at = now
    r.enabled = False
    r.failure = reason or "the payment failed"
    pool.recharge_line = None
    recharge_event(state, fx, EventType.AUTO_RECHARGE_FAILED, pool, now,
                   details(r, now, rechargeId=g.id, credits=g.amount, cost=cost,
                           reason=r.failure), g, g.amount)
