"""The primitive moves of credits between a pool's grants, each written to the ledger.

Every function here mutates state *and* appends the ledger rows and domain events that
describe the mutation, so the two cannot drift apart. Callers (engine.core.machine) have
already checked that the move is allowed; the asserts here guard programmer errors only.

Invariant kept by every move: an ACTIVE non-overdraft grant is in `pool.active` exactly
when its `available` is positive, and while the pool's overdraft has a deficit no active
grant has anything available (new credits repay the overdraft first).
"""

from __future__ import annotations

from bisect import insort

from engine.core import recharge
from engine.core.effects import Effects, LedgerEntry
from engine.core.emit import (
    TIMER_ACTIVATE,
    TIMER_EXPIRE,
    TIMER_RECHARGE,
    TIMER_RESERVATION,
    event,
    push_timer,
)
from engine.core.model import (
    CustomerState,
    EventType,
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
    "OVERDRAFT_ID_PREFIX",
    "TIMER_ACTIVATE",
    "TIMER_RESERVATION",
    "TIMER_EXPIRE",
    "TIMER_RECHARGE",
    "entry",
    "event",
    "pool_for",
    "activate",
    "draw",
    "overdraw",
    "repay",
    "forfeit",
    "hold",
    "settle",
    "pool_thresholds",
    "grant_thresholds",
    "grant_is_low",
    "grant_is_depleted",
    "pool_is_low",
    "low_line",
    "push_timer",
]

_order = lambda g: g.order_key  # noqa: E731 - the sort key for pool.active
_CONSUMED = L.CREDITS_CONSUMED
# Grant ids with this prefix belong to the engine's overdraft grants; clients cannot use it.
OVERDRAFT_ID_PREFIX = "overdraft:"


def entry(
    state: CustomerState,
    fx: Effects,
    op: int,
    event_type: L,
    g: Grant,
    amount: int,
    now: int,
    reservation_id: str | None = None,
    feature_id: str | None = None,
    key: str | None = None,
    dimensions: dict | None = None,
) -> None:
    state.ledger_seq += 1
    fx.entries.append(LedgerEntry(
        state.ledger_seq, op, event_type, g.id, g.currency_id, g.resource_id, amount, now,
        reservation_id, feature_id, key, dimensions,
    ))
    fx.grants[g.id] = g


def pool_for(state: CustomerState, currency_id: str, resource_id: str | None) -> Pool:
    key = (currency_id, resource_id)
    pool = state.pools.get(key)
    if pool is None:
        pool = Pool(currency_id, resource_id)
        state.pools[key] = pool
    return pool


def activate(state: CustomerState, pool: Pool, g: Grant, now: int, fx: Effects, op: int) -> None:
    assert g.status in (GrantStatus.SCHEDULED, GrantStatus.PAYMENT_PENDING, GrantStatus.ACTIVE)
    assert not g.activated and g.grant_type is not GrantType.OVERDRAFT
    g.status = GrantStatus.ACTIVE
    g.activated = True
    g.available = g.amount
    g.updated_at = now
    pool.balance += g.amount
    pool.granted += g.amount
    pool.active_granted += g.amount
    pool.low_line = low_line(pool)
    insort(pool.active, g, key=_order)
    entry(state, fx, op, L.CREDITS_GRANTED, g, g.amount, now)
    event(state, fx, EventType.GRANTED, pool, now, g, g.amount)
    repay(state, pool, now, fx, op)
    pool_thresholds(state, pool, now, fx)


def draw(
    state: CustomerState,
    pool: Pool,
    amount: int,
    now: int,
    fx: Effects,
    op: int,
    feature_id: str | None = None,
    key: str | None = None,
    dimensions: dict | None = None,
    reservation_id: str | None = None,
) -> tuple[tuple[tuple[str, int], ...], int]:
    """Consume up to `amount` from active grants in consumption order; return the
    breakdown ((grant id, units) per grant drawn) and the rest that was not covered.

    This is the hottest loop in creditd, so the ledger row is built inline and the
    threshold checks run only when a flag can flip: consumption only raises `consumed` and
    lowers `available`, so a flag already set cannot change here.
    """
    active = pool.active
    entries = fx.entries
    touched = fx.grants
    pct = pool.usage_low_percent
    seq = state.ledger_seq
    rest = amount
    spent = 0
    # A tuple from the start, because that is what the reply stores: almost every
    # consumption touches one grant, and `() + (x,)` returns `(x,)` without a copy.
    breakdown: tuple[tuple[str, int], ...] = ()
    for g in active:
        avail = g.available
        take = avail if avail < rest else rest
        g.available = avail = avail - take
        g.consumed += take
        g.updated_at = now
        # Pool totals move with each grant, so an event fired below shows the balance
        # right after this consumption.
        pool.balance -= take
        pool.consumed += take
        rest -= take
        seq += 1
        entries.append(LedgerEntry(
            seq, op, _CONSUMED, g.id, g.currency_id, g.resource_id, -take, now,
            reservation_id, feature_id, key, dimensions,
        ))
        touched[g.id] = g
        breakdown += ((g.id, take),)
        if (not g.usage_low_fired and g.consumed * 100 >= g.amount * pct) or (
            not avail and not g.depleted_fired and not g.held
        ):
            state.ledger_seq = seq
            grant_thresholds(state, pool, g, now, fx)
        if avail:
            break
        spent += 1
        if not rest:
            break
    state.ledger_seq = seq
    if spent:
        del active[:spent]
    return breakdown, rest


def overdraw(
    state: CustomerState,
    pool: Pool,
    amount: int,
    now: int,
    fx: Effects,
    op: int,
    feature_id: str | None = None,
    key: str | None = None,
    dimensions: dict | None = None,
    reservation_id: str | None = None,
) -> tuple[str, int]:
    """Soft limit: put a consumption the grants could not cover on the pool's overdraft;
    return its breakdown line."""
    assert not pool.hard_limit and amount > 0
    od = pool.overdraft
    if od is None:
        # A sequence number of its own, like every grant: ledger rows name grants by it.
        state.grant_seq += 1
        od = Grant(
            id=f"{OVERDRAFT_ID_PREFIX}{pool.currency_id}:{pool.resource_id or ''}",
            seq=state.grant_seq,
            currency_id=pool.currency_id,
            resource_id=pool.resource_id,
            grant_type=GrantType.OVERDRAFT,
            status=GrantStatus.ACTIVE,
            priority=100,
            effective_at=now,
            expire_at=None,
            created_at=now,
            amount=0,
            display_name="Overdraft",
        )
        od.activated = True
        pool.overdraft = od
        state.grants[od.id] = od
    od.available -= amount
    od.consumed += amount
    od.updated_at = now
    pool.balance -= amount
    pool.consumed += amount
    entry(state, fx, op, L.CREDITS_CONSUMED, od, -amount, now, reservation_id, feature_id, key,
          dimensions)
    return (od.id, amount)


def repay(state: CustomerState, pool: Pool, now: int, fx: Effects, op: int) -> None:
    """Move an open overdraft's consumption onto grants that have credits available.

    The balance does not change: consumption moves from the overdraft (whose deficit
    shrinks) to the paying grant, recorded as a TRANSFER_SOURCE/TRANSFER_TARGET pair.
    """
    od = pool.overdraft
    if od is None or od.available >= 0 or not pool.active:
        return
    deficit = -od.available
    active = pool.active
    spent = 0
    for g in active:
        x = g.available if g.available < deficit else deficit
        g.available -= x
        g.consumed += x
        g.updated_at = now
        od.available += x
        od.consumed -= x
        deficit -= x
        entry(state, fx, op, L.CREDITS_CONSUMPTION_TRANSFER_SOURCE, g, -x, now)
        entry(state, fx, op, L.CREDITS_CONSUMPTION_TRANSFER_TARGET, od, x, now)
        grant_thresholds(state, pool, g, now, fx)
        if g.available:
            break
        spent += 1
        if not deficit:
            break
    del active[:spent]
    od.updated_at = now


def forfeit(
    state: CustomerState, pool: Pool, g: Grant, status: GrantStatus, now: int, fx: Effects, op: int
) -> int:
    """Expire or void what is left available on a grant; held credits stay with their
    reservation and are forfeited when it settles. Returns the units forfeited."""
    assert status in (GrantStatus.EXPIRED, GrantStatus.VOIDED)
    x = g.available
    if g.status is GrantStatus.ACTIVE:
        if x:
            pool.active.remove(g)
        pool.active_granted -= g.amount
        pool.low_line = low_line(pool)
    g.available = 0
    pool.balance -= x
    if status is GrantStatus.EXPIRED:
        g.expired += x
        pool.expired += x
        entry(state, fx, op, L.CREDITS_EXPIRED, g, -x, now)
    else:
        g.voided += x
        pool.voided += x
        g.voided_at = now
        entry(state, fx, op, L.CREDITS_VOIDED, g, -x, now)
    g.status = status
    g.updated_at = now
    grant_thresholds(state, pool, g, now, fx)
    return x


def hold(
    state: CustomerState, pool: Pool, r: Reservation, now: int, fx: Effects, op: int
) -> None:
    """Hold `r.amount` on active grants in consumption order (the caller checked cover)."""
    rest = r.amount
    active = pool.active
    spent = 0
    for g in active:
        take = g.available if g.available < rest else rest
        g.available -= take
        g.held += take
        g.updated_at = now
        r.holds[g.id] = take
        rest -= take
        entry(state, fx, op, L.CREDITS_RESERVED, g, -take, now, r.id)
        if g.available:
            break
        spent += 1
        if not rest:
            break
    del active[:spent]
    assert rest == 0, "hold() needs a covered amount"
    pool.balance -= r.amount
    pool.reserved += r.amount


def settle(
    state: CustomerState,
    pool: Pool,
    r: Reservation,
    consumed: int,
    now: int,
    fx: Effects,
    op: int,
    expired: bool,
    feature_id: str | None = None,
    key: str | None = None,
) -> None:
    """End a reservation: consume `consumed` from its holds in order, return the rest.

    Each hold is first returned whole (a RELEASED or RESERVATION_EXPIRED row), then the
    consumed part is drawn from it (a CONSUMED row). Returned credits on a grant that has
    expired or been voided meanwhile leave the balance at once (EXPIRED/VOIDED row).
    """
    assert r.status is ReservationStatus.ACTIVE and 0 <= consumed <= r.amount
    returned_type = L.CREDITS_RESERVATION_EXPIRED if expired else L.CREDITS_RESERVATION_RELEASED
    rest = consumed
    for gid, h in r.holds.items():
        g = state.grants[gid]
        was_available = g.available > 0
        take = h if h < rest else rest
        rest -= take
        g.held -= h
        g.available += h
        g.updated_at = now
        pool.reserved -= h
        pool.balance += h
        entry(state, fx, op, returned_type, g, h, now, r.id)
        if take:
            g.available -= take
            g.consumed += take
            pool.balance -= take
            pool.consumed += take
            entry(state, fx, op, L.CREDITS_CONSUMED, g, -take, now, r.id, feature_id, key)
        left = h - take
        if g.status is GrantStatus.ACTIVE:
            if g.available and not was_available:
                insort(pool.active, g, key=_order)
        elif left:
            g.available -= left
            pool.balance -= left
            if g.status is GrantStatus.EXPIRED:
                g.expired += left
                pool.expired += left
                entry(state, fx, op, L.CREDITS_EXPIRED, g, -left, now, r.id)
            else:
                g.voided += left
                pool.voided += left
                entry(state, fx, op, L.CREDITS_VOIDED, g, -left, now, r.id)
        grant_thresholds(state, pool, g, now, fx)
    assert rest == 0
    r.status = ReservationStatus.EXPIRED if expired else ReservationStatus.RELEASED
    r.consumed_amount = consumed
    r.released_at = now
    fx.reservations[r.id] = r
    repay(state, pool, now, fx, op)


def grant_is_low(pool: Pool, g: Grant) -> bool:
    # Only an ACTIVE grant can run low: an expired or voided one is gone, not low.
    return (
        g.status is GrantStatus.ACTIVE
        and g.grant_type is not GrantType.OVERDRAFT
        and g.amount > 0
        and g.consumed * 100 >= g.amount * pool.usage_low_percent
    )


def grant_is_depleted(g: Grant) -> bool:
    return (
        g.grant_type is not GrantType.OVERDRAFT
        and g.status is GrantStatus.ACTIVE
        and g.available + g.held == 0
    )


def pool_is_low(pool: Pool) -> bool:
    line = pool.low_line
    return line is not None and pool.balance <= line


def low_line(pool: Pool) -> int | None:
    """The balance at or below which `pool` counts as low, or None when it cannot be low:
    `low_balance_units` when set, else (100 - usage_low_percent) % of the active granted
    amount. For an integer balance, `balance * 100 <= granted * (100 - percent)` holds
    exactly when `balance <= granted * (100 - percent) // 100`, so the line is exact.

    Stored as `pool.low_line`; whoever changes the settings or `active_granted` calls
    this again (`check_pool` asserts that nobody forgot)."""
    if pool.low_balance_units is not None:
        return pool.low_balance_units
    granted = pool.active_granted
    if granted <= 0:
        return None
    return granted * (100 - pool.usage_low_percent) // 100


def grant_thresholds(state: CustomerState, pool: Pool, g: Grant, now: int, fx: Effects) -> None:
    """Fire credits.grant.usage_low / credits.grant.depleted once per crossing.

    The `*_fired` flags always equal their condition after every command, so they are
    derivable: a restored state recomputes them (engine.core.replay) instead of storing them.
    """
    low = grant_is_low(pool, g)
    if low is not g.usage_low_fired:
        g.usage_low_fired = low
        if low:
            event(state, fx, EventType.GRANT_USAGE_LOW, pool, now, g)
    depleted = grant_is_depleted(g)
    if depleted is not g.depleted_fired:
        g.depleted_fired = depleted
        if depleted:
            event(state, fx, EventType.GRANT_DEPLETED, pool, now, g)


def pool_thresholds(state: CustomerState, pool: Pool, now: int, fx: Effects) -> None:
    """Fire credits.balance.usage_low / credits.balance.depleted once per crossing; a
    balance that recovers above the line re-arms the event."""
    low = pool_is_low(pool)
    if low is not pool.usage_low_fired:
        pool.usage_low_fired = low
        if low:
            event(state, fx, EventType.BALANCE_USAGE_LOW, pool, now)
    depleted = pool.balance <= 0
    if depleted is not pool.depleted_fired:
        pool.depleted_fired = depleted
        if depleted:
            event(state, fx, EventType.BALANCE_DEPLETED, pool, now)
    line = pool.recharge_line
    if line is not None and pool.balance < line:
        recharge.check(state, pool, now, fx)
