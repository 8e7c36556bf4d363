"""What a subscription's change or end does to the usage it counted.

Usage counters count the window they were last written in, and reads treat a counter of an
earlier window as 0 (`engine.core.usage`). That holds while the feature resets. When a
change of plan or the subscription's end leaves the feature with terms that do not reset
(another plan, a promotion), there is no window left to compare with, and a counter of a
window that had already reset would be read as it stands: usage that had gone back to 0
would come back.

So at the moment a subscription's terms stop applying (`at`), each feature they grant
whose effective entitlement resets at that moment has its counter brought to the
effective window current then (`RollUsage`): a counter of an earlier window restarts
from 0, one of the current window keeps its value (usage carries over the change, as it
does between plans that reset). The window is the customer's effective one at `at` —
every running subscription of the resource and every active promotion, combined by the
entitlements' own rule (`engine.domain.entitlement_sources.combine`) — not this
subscription's alone, since another source's window may be the one that counts. So
nothing that was visible changes: a counter restarted here already read 0.

Where the terms stop: a change (`apply_changes`: now, scheduled, a migration), an end now
(a cancellation, a replacement on the product), the end by the clock (a cancellation for a
date or the period's end, a trial that expires: catch-up, at the subscription's stop) and
a move to another resource (`transfer`).

A promotion's terms stop the same way, and its feature's counters are settled the same way
(`settle_promotion`): when it is revoked or granted again (now), and when it expires by the
clock (at its end date: the first read of the customer's entitlements after it, which every
usage report makes before it writes, settles it and marks it so: `entitlements._effective`).
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from engine.billing.lifecycle import status_at
from engine.core.commands import RollUsage
from engine.domain.context import Domain, engine_id
from engine.domain.entitlement_sources import combine, promo_active
from engine.domain.stored import Promotion
from engine.domain.subscriptions.document import RUNNING, Subscription, decode, timeline_of

__all__ = ["expired_unsettled", "promotion_stop", "settle_expired_promotions",
           "settle_promotion", "settle_usage", "usage_windows"]


async def _subscriptions(d: Domain, env: str, customer_id: str,
                         held: Sequence[Subscription]) -> list[Subscription]:
    """The customer's subscriptions as stored, but those in `held` as the caller holds
    them (changed in a catch-up step, not written yet)."""
    mine = {sub.id: sub for sub in held}
    return [mine.get(sub.id, sub) for sub in map(
        decode, await d.store.customer_subscriptions(env, customer_id))]


async def usage_windows(d: Domain, env: str, sub: Subscription, at: int, *,
                        ending: bool = False, pending: Sequence[Subscription] = (),
                        promos: list[Promotion] | None = None,
                        ) -> dict[str, tuple[int, int]]:
    """feature id -> the customer's effective usage window at `at`, for each feature
    `sub` grants whose effective entitlement resets then. `sub` as it is before the
    change; it counts if it runs at `at`, or (`ending`: its end by the clock, at its stop)
    as it ran until then. Other subscriptions are read as stored (or as `pending` holds
    them: changed in this catch-up step, not written yet), with their status at `at` from
    their dates (no catch-up: the caller holds the customer's lock), those that started
    before `at`. `promos`: the customer's promotions, if the caller has read them."""
    if not ending and status_at(timeline_of(sub), at) not in RUNNING:
        return {}  # not started (or over): its terms count for nothing at `at`
    running: list[Subscription] = []
    for other in await _subscriptions(d, env, sub.customer_id, pending):
        if other.id == sub.id:
            running.append(sub)  # in its place: the first source found wins
        elif other.resource_id == sub.resource_id and other.start < at and (
                status_at(timeline_of(other), at) in RUNNING):
            # Not one starting at `at`: a subscription that replaces this one is stored
            # (without its usage anchor yet) before this one ends, and is no source of the
            # terms that stop here.
            running.append(other)
    if all(s.id != sub.id for s in running):
        running.append(sub)
    if promos is None:
        promos = await d.store.promotions(env, sub.customer_id)
    active = [p for p in promos if promo_active(p, at)]
    effective, _ = await combine(d, env, running, active, at)
    own, _ = await combine(d, env, [sub], [], at)
    return {f: e.window for f, e in effective.features.items()
            if e.window is not None and f in own.features}


async def settle_usage(d: Domain, env: str, sub: Subscription, at: int, *,
                       ending: bool = False, pending: Sequence[Subscription] = ()) -> None:
    """Bring the counters of `sub`'s resetting features to their effective windows at
    `at`, before its terms change or end there (the module docstring). `pending`: the
    customer's other subscriptions changed and not written yet (a catch-up step)."""
    # Promotions that ended before `at` are settled with the subscriptions as they were
    # then: before this one changes.
    promos = await d.store.promotions(env, sub.customer_id)
    await settle_expired_promotions(d, env, sub.customer_id, at, current=(*pending, sub),
                                    promos=promos)
    windows = await usage_windows(d, env, sub, at, ending=ending, pending=pending,
                                  promos=promos)
    if windows:
        await d.runtime.submit(engine_id(env, sub.customer_id), RollUsage(windows=tuple(
            (feature_id, sub.resource_id, start) for feature_id, (start, _) in windows.items())))


def expired_unsettled(doc: Promotion, now: int) -> bool:
    """Whether `doc` expired by the clock by `now` and its usage is not settled yet."""
    return (doc.archived_at is None and doc.end is not None and doc.end <= now
            and not doc.usage_settled)


def promotion_stop(doc: Promotion, now: int) -> int | None:
    """When `doc`'s terms stop if it is revoked or replaced at `now`, where its usage is
    to be settled: now, or its end date if that has passed and was not settled yet; None
    if there is nothing to settle (revoked, not started, or settled at its end)."""
    if doc.archived_at is not None:
        return None
    at = now if doc.end is None or now < doc.end else doc.end
    if doc.end is not None and at == doc.end and doc.usage_settled:
        return None
    return at if doc.start is None or doc.start < at else None


async def settle_promotion(d: Domain, env: str, customer_id: str, doc: Promotion,
                           at: int, *, current: Sequence[Subscription] = ()) -> None:
    """Bring the customer's counters of `doc`'s feature to the effective windows at `at`,
    the promotion counted, before it stops there (the module docstring): per resource,
    with the customer's subscriptions of it running then, and on every other resource
    with the promotion alone (it counted on all of them). Stopped at its end date (`at`
    is `doc.end`), it expired: a counter written since then is left as it is.
    `current`: subscriptions as the caller holds them, changed since they were stored (a
    catch-up applying what came due in turn, writing them afterwards), read in place of
    their stored versions."""
    counted = msgspec.structs.replace(doc, end=None, archived_at=None)
    expired = at == doc.end
    # The last moment the promotion counted: a revoked one at `at` itself (it was active
    # then, a window of its that began then had begun), an expired one the millisecond
    # before its end date (it is not active at it: a reset falling on the end date is one
    # it never reached, and the usage of its last window carries over).
    last = at - 1 if expired else at
    by_resource: dict[str | None, list[Subscription]] = {None: []}
    for sub in await _subscriptions(d, env, customer_id, current):
        if sub.start < at and status_at(timeline_of(sub), last) in RUNNING:
            by_resource.setdefault(sub.resource_id, []).append(sub)
    windows = []
    for resource_id, subs in by_resource.items():
        effective, _ = await combine(d, env, subs, [counted], last)
        got = effective.features.get(doc.feature_id)
        if got is not None and got.window is not None:
            windows.append((doc.feature_id, resource_id, got.window[0]))
    alone, _ = await combine(d, env, [], [counted], last)
    got = alone.features.get(doc.feature_id)
    others = ((doc.feature_id, got.window[0]),) if got is not None and got.window else ()
    if windows or others:
        await d.runtime.submit(engine_id(env, customer_id), RollUsage(
            windows=tuple(windows), others=others, written_before=at if expired else None))


async def settle_expired_promotions(d: Domain, env: str, customer_id: str, upto: int, *,
                                    current: Sequence[Subscription] = (),
                                    promos: list[Promotion] | None = None) -> None:
    """Settle, at its end date, each of the customer's promotions that expired by `upto`
    and was not settled yet, and record it; the caller holds the customer's subscription
    lock (`catch_up.lock_of`), so no subscription changes meanwhile. Called before
    anything reads or writes usage under the terms that follow (`entitlements._effective`),
    and before a subscription changes (`settle_usage`, `current` the subscriptions as they
    stand before that change): the settling reads the subscriptions as they were at that
    end date. `promos`: the customer's promotions, read under that lock."""
    if promos is None:
        promos = await d.store.promotions(env, customer_id)
    for promo in promos:
        if expired_unsettled(promo, upto):
            assert promo.end is not None  # (expired)
            await settle_promotion(d, env, customer_id, promo, promo.end, current=current)
            await d.store.settled_promotion(env, customer_id, promo)
            promo.usage_settled = True
