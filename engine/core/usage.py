"""Usage: what each customer has used of each feature, and the credits that usage burns.

Two ways in, both applied by the customer's actor (so usage and credits change together,
serialized with every other credit command):

- `ReportUsage` (calculated usage, `POST /api/v1|v2/usage`): DELTA adds `value`, SET makes
  it the new total. For a credit-backed feature the delta burns `credit_rate` credit units
  per unit of usage from the (currency, resource) pool in the same step; a hard-limited
  pool that cannot cover the burn refuses the report whole (`INSUFFICIENT_CREDITS`), and
  nothing is recorded. Only increases burn: usage that goes down (SET lower, a negative
  delta — seats removed) refunds nothing, as credits spent stay spent.
- `IngestEvents` (raw events, `POST /api/v1/events`): each event the gateway matched against
  the features' meters updates their counters by its aggregation (`engine.core.meters`).
  Events are facts: they are always metered. Additive aggregations (COUNT, SUM) burn
  credits per event; from a hard-limited pool the burn takes what the balance holds and
  the rest is reported as `uncovered` (a hard-limited balance never goes negative). Use
  `ReportUsage` or reservations to enforce a limit before the usage happens.

Event keys deduplicate events: a key seen before (in memory, or found in the store by the
runtime's prefetch) skips its event.

Reset periods: for a feature whose entitlement resets (hourly .. yearly), the gateway sends
the start of the current usage period with each measurement and metered event
(`period_start`, from its clock and the entitlement's anchor). A counter that counts an
earlier period restarts from 0 in the new one before the change applies (a DELTA adds to
0, a SET sets, an aggregation starts afresh); a period start at or before the counter's is
counted in the counter's period (late data never reopens a closed period). Reads compare
the counter's period with the current one and treat an older counter as 0, so usage
reads 0 on time even before anything is reported in the new period.
UNIQUE values are stored per period (`unique_text`), so a restart forgets them.

Analytics: every change also adds to an hourly bucket (feature, resource, currency,
dimensions, hour of the usage's own time), so late events land in the hour they happened;
the store sums the buckets (`Effects.buckets`).
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import islice
from typing import Any

import msgspec

from engine.core import ledger_ops as ops
from engine.core.amounts import AMOUNT_UNITS_MAX, SCALE
from engine.core.commands import (
    Burn,
    EventsReply,
    IngestEvents,
    Measurement,
    Reply,
    ReportUsage,
    RollUsage,
    UsageCountersReply,
    UsageReply,
    UsageResult,
    UsageView,
)
from engine.core.effects import Bucket, Effects
from engine.core.idempotency import (
    IdempotencyRecord,
    is_replay,
    recall,
    remember,
    request_digest,
)
from engine.core.model import CustomerState, Pool, UsageCounter
from engine.core.refusals import Refusal, refuse
from engine.core.views import balance_view

__all__ = ["report_usage", "ingest_events", "burn_units", "usage_view", "restore_usage", "HOUR_MS",
           "UNIQUE_VALUES_MAX", "EVENT_KEYS_CACHED_MAX", "roll_period", "roll_usage", "unique_text",
           "usage_in_period"]

HOUR_MS = 3_600_000
# A UNIQUE counter remembers at most this many distinct values; past it, new values are
# not counted (the counter saturates, and says so) until the period resets.
UNIQUE_VALUES_MAX = 10_000
# Recent event keys kept in memory per customer; older ones are looked up in the store.
EVENT_KEYS_CACHED_MAX = 50_000
# The first event's value starts MAX/MIN; AVG keeps its sum and count.
_CALCULATED = "CALCULATED"


def burn_units(usage_units: int, credit_rate: int) -> int:
    """Credit units burned by `usage_units` of usage at `credit_rate` credit units per unit
    of usage, rounded half away from zero to the unit (both are in units of 10^-5)."""
    assert usage_units >= 0 and credit_rate >= 0
    return (usage_units * credit_rate * 2 + SCALE) // (2 * SCALE)


def usage_view(c: UsageCounter) -> UsageView:
    return UsageView(feature_id=c.feature_id, resource_id=c.resource_id,
                     current_usage=c.value, updated_at=c.updated_at,
                     period_start=c.period_start)


def usage_in_period(value: int, counter_period: int | None, period_start: int | None) -> int:
    """A counter's usage as seen in the period starting at `period_start` (None: the
    feature does not reset): a counter of an earlier period counts 0 in a later one."""
    if period_start is not None and (counter_period is None or counter_period < period_start):
        return 0
    return value


def unique_text(period_start: int | None, value: str) -> str:
    """How a UNIQUE counter's distinct value is stored: as is without a reset period,
    else prefixed with the period (`<start ms>:value`), so that a restart of the counter
    does not bring back the previous periods' values when the customer is loaded again."""
    return value if period_start is None else f"{period_start}:{value}"


def restore_usage(state: CustomerState,
                  counters: Iterable[tuple[Any, ...]],
                  uniques: Iterable[tuple[str, str | None, str]]) -> None:
    """Put stored counters back: rows of (feature id, resource id, function, value,
    total, count, updated at[, period start]) and UNIQUE counters' stored distinct values
    (`unique_text`; those of other periods than the counter's are left out)."""
    for row in counters:
        feature_id, resource_id, function, value, total, count, updated_at = row[:7]
        c = UsageCounter(feature_id, resource_id, function, updated_at)
        c.value, c.total, c.count = value, total, count
        c.period_start = row[7] if len(row) > 7 else None
        state.usage[(feature_id, resource_id)] = c
    for feature_id, resource_id, stored in uniques:
        c = state.usage.get((feature_id, resource_id))
        if c is None:
            continue
        if c.period_start is None:
            c.uniques.add(stored)
        else:
            prefix = f"{c.period_start}:"
            if stored.startswith(prefix):
                c.uniques.add(stored[len(prefix):])


def roll_period(counter: UsageCounter, period_start: int | None) -> bool:
    """Restart `counter` from 0 if `period_start` is later than the period it counts (or
    it counted without a period so far). Returns whether it restarted."""
    if period_start is None:
        return False
    if counter.period_start is not None and period_start <= counter.period_start:
        return False
    counter.period_start = period_start
    if counter.value or counter.count or counter.total or counter.uniques:
        counter.value = counter.total = counter.count = 0
        counter.uniques = set()
        return True
    return False


def roll_usage(state: CustomerState, cmd: RollUsage, now: int, fx: Effects) -> Reply:
    """Bring each named counter to the window given (`roll_period`) and store it if that
    changed it; a counter that does not exist stays so. Answers the counters named."""
    named = []
    starts: dict[tuple[str, str | None], int] = {}
    for feature_id, resource_id, start in cmd.windows:
        starts[(feature_id, resource_id)] = start
    if cmd.others:
        others = dict(cmd.others)
        for key in state.usage:
            if key not in starts and key[0] in others:
                starts[key] = others[key[0]]
    for key, start in starts.items():
        counter = state.usage.get(key)
        if counter is None:
            continue
        before = counter.period_start
        written_later = (cmd.written_before is not None
                         and counter.updated_at > cmd.written_before)
        if not written_later and (roll_period(counter, start)
                                  or counter.period_start != before):
            fx.usage[key] = counter
        named.append(usage_view(counter))
    return UsageCountersReply(usages=tuple(named))


def _counter(state: CustomerState, feature_id: str, resource_id: str | None, function: str,
             now: int, period_start: int | None = None) -> UsageCounter:
    key = (feature_id, resource_id)
    counter = state.usage.get(key)
    if counter is None:
        counter = state.usage[key] = UsageCounter(feature_id, resource_id, function, now)
        counter.period_start = period_start
    else:
        roll_period(counter, period_start)
    return counter


def _bucket(fx: Effects, feature_id: str | None, resource_id: str | None,
            currency_id: str | None, dimensions: dict[str, Any] | None, at: int,
            usage: int, credits: int, events: int) -> None:
    fx.buckets.append(Bucket(feature_id, resource_id, currency_id, dimensions or None,
                             at - at % HOUR_MS, usage, credits, events))


def _burn(state: CustomerState, pool: Pool, amount: int, now: int, fx: Effects, op: int,
          feature_id: str, key: str | None, dimensions: dict[str, Any] | None) -> None:
    """Consume `amount` (already checked against the pool's limit) and fire thresholds."""
    _, rest = ops.draw(state, pool, amount, now, fx, op, feature_id, key, dimensions)
    if rest:
        ops.overdraw(state, pool, rest, now, fx, op, feature_id, key, dimensions)
    fx.pools[pool.key] = pool
    ops.pool_thresholds(state, pool, now, fx)


def _one(m: Measurement) -> ReportUsage:
    """The command a measurement's idempotency record remembers (one measurement). The
    period start is the gateway's, not the client's: a retry that crosses a period
    boundary is still the same request."""
    if m.period_start is not None:
        m = msgspec.structs.replace(m, period_start=None)
    return ReportUsage(measurements=(m,))


def report_usage(state: CustomerState, cmd: ReportUsage, now: int, fx: Effects) -> Reply:
    """Check every measurement against the state first (keys, usage bounds, and the burns
    of all of them together against each hard-limited pool), then apply them all, so a
    refusal leaves nothing behind."""
    replays: dict[int, UsageResult] = {}
    values: dict[tuple[str, str | None], int] = {}  # usage after the measurements so far
    burns: list[tuple[int, int]] = []  # (usage delta, credit units) per measurement
    claimed: dict[tuple[str, str | None], int] = {}  # credit units per pool
    for i, m in enumerate(cmd.measurements):
        at = f"usages[{i}]"
        if m.idempotency_key is not None:
            memo = state.idempotency.get(m.idempotency_key)
            if memo is not None:
                if not is_replay(memo, request_digest(_one(m))):
                    return refuse(Refusal.IDEMPOTENCY_KEY_REUSED,
                                  "this idempotency key was used with a different request",
                                  f"{at}.idempotencyKey")
                # As first applied, except that it burned nothing this time.
                replays[i] = msgspec.structs.replace(recall(memo).results[0], consumed=0)
                burns.append((0, 0))
                continue
        key = (m.feature_id, m.resource_id)
        counter = state.usage.get(key)
        if key in values:
            previous = values[key]
        elif counter is None:
            previous = 0
        elif m.period_start is not None and (counter.period_start is None
                                             or m.period_start > counter.period_start):
            previous = 0  # the counter restarts in this period (roll_period, below)
        else:
            previous = counter.value
        new = m.value if m.set_value else previous + m.value
        if new < 0:
            return refuse(Refusal.INVALID_AMOUNT,
                          f"usage would fall below zero (it is {previous} units)", f"{at}.value")
        if new > AMOUNT_UNITS_MAX:
            return refuse(Refusal.INVALID_AMOUNT, "usage would exceed the maximum amount",
                          f"{at}.value")
        values[key] = new
        delta = new - previous
        burn = 0
        if m.currency_id is not None and m.credit_rate and delta > 0:
            burn = burn_units(delta, m.credit_rate)
        if burn:
            pool_key = (m.currency_id, m.resource_id)
            pool = state.pools.get(pool_key)
            total = claimed.get(pool_key, 0) + burn
            claimed[pool_key] = total
            if pool is None or (total > pool.balance and pool.hard_limit):
                available = 0 if pool is None else max(pool.balance, 0)
                return refuse(Refusal.INSUFFICIENT_CREDITS,
                              f"the usage burns {total} units, {available} available",
                              f"{at}.value")
            if pool.balance - total < -AMOUNT_UNITS_MAX:
                return refuse(Refusal.BALANCE_LIMIT_EXCEEDED,
                              "the overdraft would exceed the maximum amount", f"{at}.value")
        burns.append((delta, burn))
    # Everything holds: apply.
    state.op_seq = op = state.op_seq + 1
    results = []
    for i, m in enumerate(cmd.measurements):
        if i in replays:
            results.append(replays[i])
            continue
        delta, burn = burns[i]
        pool = state.pools.get((m.currency_id, m.resource_id)) if m.currency_id else None
        if burn:
            assert pool is not None
            _burn(state, pool, burn, now, fx, op, m.feature_id, m.idempotency_key,
                  m.dimensions)
        counter = _counter(state, m.feature_id, m.resource_id, _CALCULATED, now,
                           m.period_start)
        previous = counter.value
        counter.value = previous + delta
        counter.updated_at = now
        fx.usage[(m.feature_id, m.resource_id)] = counter
        at = now if m.created_at is None else m.created_at
        _bucket(fx, m.feature_id, m.resource_id, m.currency_id if burn else None,
                m.dimensions, at, delta, burn, 1)
        result = UsageResult(
            usage=usage_view(counter), previous_usage=previous, consumed=burn,
            currency_id=m.currency_id,
            balance=balance_view(pool, now) if pool is not None else None, timestamp=now)
        results.append(result)
        if m.idempotency_key is not None:
            memo = remember(request_digest(_one(m)), UsageReply(results=(result,)), now)
            state.idempotency[m.idempotency_key] = memo
            fx.keys.append(IdempotencyRecord(key=m.idempotency_key, memo=memo,
                                             op_seq=op if burn else None))
    return UsageReply(results=tuple(results))


def _aggregate(counter: UsageCounter, function: str, value: int | str, fx: Effects) -> int:
    """Apply one event's contribution to `counter`; return the change in its value."""
    before = counter.value
    if function == "COUNT" or function == "SUM":
        assert isinstance(value, int)
        counter.value = min(max(before + value, -AMOUNT_UNITS_MAX), AMOUNT_UNITS_MAX)
    elif function == "MAX" or function == "MIN":
        assert isinstance(value, int)
        if counter.count == 0:
            counter.value = value
        else:
            counter.value = max(before, value) if function == "MAX" else min(before, value)
        counter.count += 1
    elif function == "AVG":
        assert isinstance(value, int)
        counter.total += value
        counter.count += 1
        # Rounded half away from zero to the unit, like every amount.
        q, r = divmod(abs(counter.total) * 2 + counter.count, 2 * counter.count)
        counter.value = q if counter.total >= 0 else -q
    else:
        assert function == "UNIQUE" and isinstance(value, str)
        uniques = counter.uniques
        if value not in uniques and len(uniques) < UNIQUE_VALUES_MAX:
            uniques.add(value)
            fx.unique_values.append((counter.feature_id, counter.resource_id,
                                     unique_text(counter.period_start, value)))
            counter.value = len(uniques) * SCALE
    return counter.value - before


def ingest_events(state: CustomerState, cmd: IngestEvents, now: int, fx: Effects) -> Reply:
    seen = state.event_keys
    accepted = duplicates = 0
    # Burns are summed per (pool, feature) and drawn once at the end: one ledger operation
    # per feature per batch, not per event. `held` is what this batch has claimed so far
    # on each pool, so the hard-limit check sees the balance the burns will leave.
    wanted_by: dict[tuple[str, str | None], list[int]] = {}  # pool -> [covered, uncovered]
    burns: dict[tuple[tuple[str, str | None], str], int] = {}
    held: dict[tuple[str, str | None], int] = {}
    touched: dict[tuple[str, str | None], UsageCounter] = {}
    for event in cmd.events:
        if event.key in seen:
            duplicates += 1
            continue
        seen[event.key] = event.timestamp
        fx.event_keys.append((event, now))
        accepted += 1
        for m in event.metered:
            counter = _counter(state, m.feature_id, event.resource_id, m.function, now,
                               m.period_start)
            change = _aggregate(counter, m.function, m.value, fx)
            counter.updated_at = now
            touched[(m.feature_id, event.resource_id)] = counter
            covered = 0
            if m.currency_id is not None and m.credit_rate and change > 0 and (
                    m.function == "COUNT" or m.function == "SUM"):
                pool_key = (m.currency_id, event.resource_id)
                pool = state.pools.get(pool_key)
                wanted = burn_units(change, m.credit_rate)
                if pool is not None:
                    left = pool.balance - held.get(pool_key, 0)
                    floor = 0 if pool.hard_limit else -AMOUNT_UNITS_MAX
                    covered = max(0, min(wanted, left - floor))
                if covered:
                    held[pool_key] = held.get(pool_key, 0) + covered
                    burns[(pool_key, m.feature_id)] = (
                        burns.get((pool_key, m.feature_id), 0) + covered)
                tally = wanted_by.setdefault(pool_key, [0, 0])
                tally[0] += covered
                tally[1] += wanted - covered
            _bucket(fx, m.feature_id, event.resource_id, m.currency_id if covered else None,
                    event.dimensions, event.timestamp, change, covered, 1)
    if burns:
        state.op_seq = op = state.op_seq + 1
        for (pool_key, feature_id), amount in burns.items():
            _burn(state, state.pools[pool_key], amount, now, fx, op, feature_id, None, None)
    for counter in touched.values():
        fx.usage[(counter.feature_id, counter.resource_id)] = counter
    if len(seen) > EVENT_KEYS_CACHED_MAX:
        # The oldest first (dicts keep insertion order); islice, not a copy of every key.
        for key in list(islice(seen, len(seen) - EVENT_KEYS_CACHED_MAX)):
            del seen[key]  # still in the store; the runtime looks them up when named
    return EventsReply(
        accepted=accepted, duplicates=duplicates,
        burns=tuple(Burn(c, r, t[0], t[1]) for (c, r), t in wanted_by.items()),
        usage=tuple(usage_view(c) for c in touched.values()), timestamp=now)
