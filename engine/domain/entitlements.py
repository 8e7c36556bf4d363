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
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec

from engine.billing.periods import reset_window
from engine.core.commands import GetUsage, UsageCountersReply
from engine.core.usage import usage_in_period
from engine.domain.context import Domain, engine_id
from engine.domain.packages import published
from engine.domain.stored import Grant, Package, Promotion
from engine.domain.subscriptions.catch_up import RUNNING, customer_subscriptions, timeline_of
from engine.domain.subscriptions.document import Subscription

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


@dataclass
class Effective:
    feature_id: str
    granted: bool = False
    usage_limit: int | None = None  # plain usage units (not 10^-5)
    unlimited: bool = False
    soft_limit: bool = False
    reset_period: str | None = None
    according_to: str | None = None
    anchor_ms: int | None = None
    enum_values: list[str] | None = None
    valid_until: int | None = None
    updated_at: int | None = None
    from_subscription: bool = False
    window: tuple[int, int] | None = None  # the current usage window [start, end)


@dataclass
class Sources:
    """What the customer's entitlements come from, and the combined result per feature."""

    subscriptions: list[Subscription] = field(default_factory=list)
    promotions: list[Promotion] = field(default_factory=list)
    features: dict[str, Effective] = field(default_factory=dict)


def promo_active(doc: Promotion, now: int) -> bool:
    """A promotion counts from its start until its end date, unless revoked."""
    if doc.archived_at is not None:
        return False
    return (doc.start is None or doc.start <= now) and (doc.end is None or now < doc.end)


async def _subscriptions(d: Domain, env: str, customer_id: str, resource_id: str | None,
                         now: int) -> tuple[list[Subscription], int]:
    """The running subscriptions for the resource, and the next time any of the
    customer's subscriptions changes (a future start, a renewal, an end)."""
    subs = await customer_subscriptions(d, env, customer_id)
    due = [s.due_at for s in subs if isinstance(s.due_at, int) and s.due_at > now]
    running = [s for s in subs if s.status in RUNNING and s.resource_id == resource_id]
    return running, min(due, default=_FOREVER)


def _add(eff: Effective, ent: Grant, quantity: int, anchor: int | None,
         *, subscription: bool, now: int) -> None:
    if not ent.is_granted:
        return
    eff.granted = True
    if ent.has_unlimited_usage:
        eff.unlimited = True
    limit = ent.usage_limit
    if limit is not None:
        eff.usage_limit = (eff.usage_limit or 0) + int(limit) * quantity
    if ent.has_soft_limit:
        eff.soft_limit = True
    values = ent.enum_values
    if values:
        merged = list(eff.enum_values or [])
        merged += [v for v in values if v not in merged]
        eff.enum_values = merged
    period = ent.reset_period
    # The subscription's reset period wins over a promotion's; the first one found wins.
    if period and anchor is not None and (
            eff.reset_period is None or (subscription and not eff.from_subscription)):
        eff.reset_period = period
        eff.according_to = (ent.reset_period_configuration or {}).get("accordingTo")
        eff.anchor_ms = anchor
        eff.from_subscription = subscription
    elif subscription:
        eff.from_subscription = True
    if ent.updated_at:
        eff.updated_at = max(eff.updated_at or 0, ent.updated_at)


_FOREVER = 1 << 62


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
    out = Sources()
    out.subscriptions, boundary = await _subscriptions(d, env, customer_id,
                                                       resource_id, now)

    # When each feature's sources stop granting it (None: one of them never stops).
    ends: dict[str, list[int | None]] = {}
    for sub in out.subscriptions:
        stop = timeline_of(sub).stop
        sub_end = None if stop >= _FOREVER else stop
        # Usage windows count from the subscription's start — or, for one that replaced
        # another on its product, from the replaced one's (usage carries over an upgrade).
        anchor = sub.usage_anchor or sub.start
        plan = await published(d.documents, env, "plan", sub.plan_id, sub.plan_version)
        packages: list[tuple[Package, int]] = [(plan, 1)] if plan else []
        for addon in sub.addons:
            doc = await published(d.documents, env, "addon", addon.id, addon.version)
            if doc is not None:
                packages.append((doc, int(addon.quantity or 1)))
        for doc, quantity in packages:
            for ent in doc.entitlements:
                if ent.type != "FEATURE":
                    continue
                eff = out.features.setdefault(ent.id, Effective(ent.id))
                _add(eff, ent, quantity, anchor, subscription=True, now=now)
                ends.setdefault(ent.id, []).append(sub_end)
    promos = await d.store.promotions(env, customer_id)
    out.promotions = [p for p in promos if promo_active(p, now)]
    for promo in out.promotions:
        eff = out.features.setdefault(promo.feature_id, Effective(promo.feature_id))
        _add(eff, promo, 1, promo.start, subscription=False, now=now)
        ends.setdefault(promo.feature_id, []).append(promo.end)
    for feature_id, stops in ends.items():
        # Granted until the last source stops; for good if any source never does.
        if None not in stops:
            out.features[feature_id].valid_until = max(stops)  # type: ignore[type-var]
    for eff in out.features.values():
        if eff.reset_period and eff.anchor_ms is not None:
            try:
                eff.window = reset_window(eff.reset_period, eff.according_to, eff.anchor_ms,
                                          now)
            except ValueError:
                eff.window = None
    edges = [boundary]
    edges += [e.window[1] for e in out.features.values() if e.window is not None]
    for promo in promos:
        edges += [t for t in (promo.start, promo.end) if t is not None and t > now]
    return out, min(edges)


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
