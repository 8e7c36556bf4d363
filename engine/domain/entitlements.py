"""The effective feature entitlements of a customer (docs/subscriptions.md, Entitlements).

Sources: the customer's active subscriptions (`engine.domain.subscriptions`)
through the published plan and add-on versions they point at (`engine.domain.packages.published`),
and the customer's promotional entitlements (table `promotional_entitlements`, written by
`engine.domain.promotions`). Per feature they combine as:

- granted if any source grants it (a plan entitlement with `isGranted: false` grants
  nothing);
- usage limits add up (an add-on's times its quantity); unlimited if any is unlimited;
  a soft limit if any source has one; enum values are the union;
- the reset period is the plan's (or the first add-on's that has one); the promotion's
  own only when no subscription source resets; the usage window is
  `engine.billing.periods.reset_window` anchored at the subscription's start (the
  promotion's start for the promotion's own period);
- a promotion counts from its start until its end date (`now >= endDate`: expired), by
  the injected clock.

Usage counters count the window they were last written in (`engine.core.usage`); reads
here treat a counter of an earlier window as 0 (`usage_in_period`).

The combination itself is `engine.domain.entitlement_sources.combine`; here are the reads:
which sources are running now, the cache, and the usage counters.
"""

from __future__ import annotations

import msgspec

from engine.core.commands import GetUsage, UsageCountersReply
from engine.core.usage import usage_in_period
from engine.domain.context import Domain, engine_id
from engine.domain.entitlement_sources import FOREVER, Effective, Sources, combine, promo_active
from engine.domain.subscriptions.catch_up import RUNNING, customer_subscriptions, lock_of
from engine.domain.subscriptions.document import Subscription
from engine.domain.subscriptions.usage_windows import (
    expired_unsettled,
    settle_expired_promotions,
)

__all__ = [
    "Effective",
    "Sources",
    "credit_period_end",
    "effective_entitlements",
    "period_starts",
    "promo_active",
    "usage_of",
]

_unjson = msgspec.json.decode


async def _subscriptions(d: Domain, env: str, customer_id: str, resource_id: str | None,
                         now: int) -> tuple[list[Subscription], int]:
    """The running subscriptions for the resource, and the next time any of the
    customer's subscriptions changes (a future start, a renewal, an end)."""
    subs = await customer_subscriptions(d, env, customer_id)
    due = [s.due_at for s in subs if isinstance(s.due_at, int) and s.due_at > now]
    running = [s for s in subs if s.status in RUNNING and s.resource_id == resource_id]
    return running, min(due, default=FOREVER)


async def effective_entitlements(d: Domain, env: str, customer_id: str,
                                 resource_id: str | None, now: int) -> Sources:
    """The customer's feature entitlements at `now` (see the module docstring). Shared
    with other callers: read it, do not change it."""
    cache = d.state.entitlements
    key = (env, customer_id)
    entry = cache.entries.get(key, {}).get(resource_id)
    if entry is not None and entry[1] <= now < entry[2]:
        cache.entries.move_to_end(key)
        return entry[0]
    epoch = cache.epoch
    sources, valid_until = await _effective(d, env, customer_id, resource_id, now)
    if cache.epoch != epoch:
        return sources  # something changed meanwhile: do not keep what may predate it
    cache.entries.setdefault(key, {})[resource_id] = (sources, now, valid_until)
    cache.entries.move_to_end(key)
    while len(cache.entries) > d.documents.docs_cached_max:
        cache.entries.popitem(last=False)
    return sources


async def _effective(d: Domain, env: str, customer_id: str, resource_id: str | None,
                     now: int) -> tuple[Sources, int]:
    """The entitlements at `now`, and until when they hold (the next boundary: a usage
    window's end, a promotion's start or end, a subscription's next change)."""
    subscriptions, boundary = await _subscriptions(d, env, customer_id, resource_id, now)
    promos = await d.store.promotions(env, customer_id)
    if any(expired_unsettled(promo, now) for promo in promos):
        # Expired by the clock since last read: the usage it counted is settled at its end
        # before anything reads or writes usage under the terms after it — under the lock
        # of the customer's subscriptions, which must stay as they were at that end date.
        async with lock_of(env, customer_id):
            await settle_expired_promotions(d, env, customer_id, now)
    out, edge = await combine(d, env, subscriptions, promos, now)
    return out, min(boundary, edge)


def credit_period_end(sources: Sources, currency_id: str, now: int) -> int | None:
    """When the customer's recurring credits of `currency_id` next renew: the earliest
    end of a current credit window of its running subscriptions (None: none recur)."""
    ends = [got.end for sub in sources.subscriptions for key, got in sub.credits.items()
            if key.rpartition("|")[2] == currency_id and got.window <= now < got.end]
    return min(ends, default=None)


def period_starts(sources: Sources) -> dict[str, tuple[int, int]]:
    """The current usage window of each feature whose entitlement resets."""
    return {f: e.window for f, e in sources.features.items() if e.window is not None}


async def usage_of(d: Domain, env: str, customer_id: str,
                   resource_id: str | None, windows: dict[str, tuple[int, int]]
                   ) -> dict[str, tuple[int, int]]:
    """feature id -> (usage units in the current window, updated at) from the customer's
    counters, read from its actor (what was last acknowledged, without a database read);
    a counter of an earlier window counts 0."""
    reply = await d.runtime.submit(engine_id(env, customer_id),
                                          GetUsage(resource_id=resource_id))
    assert isinstance(reply, UsageCountersReply)
    out = {}
    for c in reply.usages:
        window = windows.get(c.feature_id)
        out[c.feature_id] = (usage_in_period(c.current_usage, c.period_start,
                                             window[0] if window else None), c.updated_at)
    return out
