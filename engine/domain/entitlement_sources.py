"""What a customer's entitlements are made of, combined (docs/subscriptions.md,
Entitlements; the rules in `engine.domain.entitlements`' docstring), for a given set of
subscriptions and promotions at a given time: what reads the entitlements now and what
settles usage when terms change (`engine.domain.subscriptions.usage_windows`) combine the
sources by one rule."""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.billing.periods import reset_window
from engine.domain.context import Domain
from engine.domain.packages import published
from engine.domain.stored import Grant, Package, Promotion
from engine.domain.subscriptions.document import Subscription, timeline_of

__all__ = ["FOREVER", "Effective", "Sources", "combine", "promo_active"]


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


FOREVER = 1 << 62


async def combine(d: Domain, env: str, subscriptions: list[Subscription],
                  promos: list[Promotion], now: int) -> tuple[Sources, int]:
    """The entitlements at `now` from `subscriptions` (those running then) and the active
    ones of `promos` (all the customer's: their starts and ends are boundaries), and the
    next boundary they make (a usage window's end, a promotion's start or end)."""
    out = Sources(subscriptions=subscriptions)
    # When each feature's sources stop granting it (None: one of them never stops).
    ends: dict[str, list[int | None]] = {}
    for sub in out.subscriptions:
        stop = timeline_of(sub).stop
        sub_end = None if stop >= FOREVER else stop
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
    edges = [FOREVER]
    edges += [e.window[1] for e in out.features.values() if e.window is not None]
    for promo in promos:
        edges += [t for t in (promo.start, promo.end) if t is not None and t > now]
    return out, min(edges)
