"""Promotional entitlements: feature access granted to one customer outside their plan.

Granting several at once validates them all before writing any (one transaction);
granting again for the same feature replaces the previous grant. When one stops (revoked,
replaced, or expired), the usage it counted is settled as a subscription's is
(engine/domain/subscriptions/usage_windows.py). The period ('1 week',
'1 month', '6 month', '1 year', 'lifetime', or 'custom' with `customEndDate`) runs from
the moment of the grant by the process's clock; at its end date the promotion is Expired:
it stops counting in the customer's entitlements and lists as Expired. Revoking ends it
at once (it is then no longer listed). A promotion adds to what the customer's
subscriptions grant for the feature: its usage limit adds to theirs, unlimited wins.

Stored by the store (`promotions`, `save_promotions`, `end_promotion`:
persistence/promotions.py) as documents of the wire fields plus `_startDate`/`_endDate`
(ms) and the stamps. The inputs are Structs in the API's field names.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any, Literal

import msgspec

from engine.billing.periods import ANCHORS, WEEK_MS, add_months
from engine.domain.constraints import Reference
from engine.domain.context import Domain, require_customer
from engine.domain.errors import DomainError, bad_input
from engine.domain.features import require_feature
from engine.domain.stored import Promotion
from engine.domain.subscriptions.catch_up import promotions_lock
from engine.domain.subscriptions.usage_windows import promotion_stop, settle_promotion
from engine.domain.values import time_in

__all__ = ["ITEMS_MAX", "USAGE_LIMIT_MAX", "AnchorConfig", "PromotionIn", "PromotionsQuery",
           "grant", "list_promotions", "revoke", "status_of"]

ITEMS_MAX = 100
USAGE_LIMIT_MAX = 10**12
Period = Literal["1 week", "1 month", "6 month", "1 year", "lifetime", "custom"]
ResetPeriod = Literal["YEAR", "MONTH", "WEEK", "DAY", "HOUR"]
Status = Literal["Active", "Expired", "Paused"]


class AnchorConfig(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    according_to: str


class PromotionIn(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    feature_id: Reference
    period: Period
    custom_end_date: str | None = None
    enum_values: list[str] | None = None
    has_soft_limit: bool | None = None
    has_unlimited_usage: bool | None = None
    is_visible: bool | None = None
    reset_period: ResetPeriod | None = None
    usage_limit: int | None = None
    monthly_reset_period_configuration: AnchorConfig | None = None
    weekly_reset_period_configuration: AnchorConfig | None = None
    yearly_reset_period_configuration: AnchorConfig | None = None
    description: str | None = None  # extension


class PromotionsQuery(msgspec.Struct, frozen=True):
    """A page of a customer's promotions in creation order (then feature id)."""

    customer_id: str
    limit: int
    statuses: frozenset[str] = frozenset()  # empty: any
    created: Sequence[tuple[str, int]] = ()  # (operator, ms) bounds on the creation time
    after: tuple[int, str] | None = None  # (created, feature id) cursors
    before: tuple[int, str] | None = None


def status_of(doc: Promotion, now: int) -> str:
    end = doc.end
    return "Expired" if end is not None and now >= end else "Active"


def _end_date(item: PromotionIn, now: int, at: str) -> int | None:
    if item.period == "custom":
        end = time_in(item.custom_end_date, f"{at}.customEndDate")
        if end is None:
            raise bad_input("is required with period 'custom'", f"{at}.customEndDate")
        if end <= now:
            raise bad_input("must be in the future", f"{at}.customEndDate")
        return end
    if item.custom_end_date is not None:
        raise bad_input("is only for period 'custom'", f"{at}.customEndDate")
    if item.period == "lifetime":
        return None
    if item.period == "1 week":
        return now + WEEK_MS
    return add_months(now, {"1 month": 1, "6 month": 6, "1 year": 12}[item.period])


_CONFIGS = {"MONTH": "monthlyResetPeriodConfiguration",
            "WEEK": "weeklyResetPeriodConfiguration",
            "YEAR": "yearlyResetPeriodConfiguration"}


def _reset(item: PromotionIn, at: str) -> dict[str, Any] | None:
    given = {"MONTH": item.monthly_reset_period_configuration,
             "WEEK": item.weekly_reset_period_configuration,
             "YEAR": item.yearly_reset_period_configuration}
    for period, config in given.items():
        if config is not None and item.reset_period != period:
            raise bad_input(f"is only for resetPeriod {period}", f"{at}.{_CONFIGS[period]}")
    if item.reset_period is None:
        return None
    config = given.get(item.reset_period)
    if config is None:
        return None
    if config.according_to not in ANCHORS[item.reset_period]:
        raise bad_input(f"must be one of {', '.join(ANCHORS[item.reset_period])}",
                        f"{at}.{_CONFIGS[item.reset_period]}.accordingTo")
    return {"accordingTo": config.according_to}


async def _document(d: Domain, env: str, item: PromotionIn, at: str,
                    now: int) -> Promotion:
    """The promotion `item` grants, checked against its feature."""
    feature = await require_feature(d, env, item.feature_id, field=f"{at}.featureId")
    kind = feature.feature_type
    if item.usage_limit is not None:
        if kind != "NUMBER":
            raise bad_input(f"only a NUMBER feature has a usage limit ({item.feature_id!r} is "
                            f"{kind})", f"{at}.usageLimit")
        if not 0 <= item.usage_limit <= USAGE_LIMIT_MAX:
            raise bad_input(f"must be from 0 to {USAGE_LIMIT_MAX}", f"{at}.usageLimit")
    if item.has_unlimited_usage and item.usage_limit is not None:
        raise bad_input("give usageLimit or hasUnlimitedUsage, not both", f"{at}.usageLimit")
    if kind == "NUMBER" and item.usage_limit is None and not item.has_unlimited_usage:
        raise bad_input("a NUMBER feature needs usageLimit or hasUnlimitedUsage",
                        f"{at}.usageLimit")
    if item.reset_period is not None and kind != "NUMBER":
        raise bad_input("only a NUMBER feature's usage resets", f"{at}.resetPeriod")
    if item.enum_values is not None:
        if kind != "ENUM":
            raise bad_input(f"only an ENUM feature has values ({item.feature_id!r} is {kind})",
                            f"{at}.enumValues")
        known = {v.value for v in feature.enum_configuration or ()}
        unknown = [v for v in item.enum_values if v not in known]
        if unknown:
            raise bad_input(f"not values of feature {item.feature_id!r}: {unknown}",
                            f"{at}.enumValues")
    reset_config = _reset(item, at)
    end = _end_date(item, now, at)
    return Promotion(
        id=str(uuid.uuid4()), feature_id=item.feature_id, description=item.description,
        period=item.period, usage_limit=item.usage_limit,
        has_unlimited_usage=bool(item.has_unlimited_usage),
        has_soft_limit=bool(item.has_soft_limit), reset_period=item.reset_period,
        reset_period_configuration=reset_config, enum_values=item.enum_values,
        is_visible=True if item.is_visible is None else item.is_visible,
        start=now, end=end, created_at=now, updated_at=now)


async def grant(d: Domain, env: str, customer_id: str,
                items: Sequence[PromotionIn]) -> list[Promotion]:
    """Grant the customer `items` (1 to ITEMS_MAX, one per feature), all or none; errors
    name `promotionalEntitlements[i]`. Returns the stored documents."""
    if not 1 <= len(items) <= ITEMS_MAX:
        raise bad_input(f"must hold 1 to {ITEMS_MAX} items", "promotionalEntitlements")
    await require_customer(d, env, customer_id, field="id")
    now = d.documents.now_ms()
    docs = []
    seen: set[str] = set()
    for i, item in enumerate(items):
        at = f"promotionalEntitlements[{i}]"
        if item.feature_id in seen:
            raise bad_input(f"feature {item.feature_id!r} is granted twice in this request",
                            f"{at}.featureId")
        seen.add(item.feature_id)
        docs.append(await _document(d, env, item, at, now))
    async with promotions_lock(env, customer_id):
        # The promotions these replace stop now: the usage they counted is settled first.
        for old in await d.store.promotions(env, customer_id):
            stop = promotion_stop(old, now) if old.feature_id in seen else None
            if stop is not None:
                await settle_promotion(d, env, customer_id, old, stop)
        await d.store.save_promotions(env, customer_id, docs, now)
    d.entitlements_changed(env, customer_id)
    return docs


def _key(doc: Promotion) -> tuple[int, str]:
    return doc.created_at, doc.feature_id


_OPS = {">": lambda a, b: a > b, ">=": lambda a, b: a >= b, "<": lambda a, b: a < b,
        "<=": lambda a, b: a <= b}


async def list_promotions(d: Domain, env: str, q: PromotionsQuery,
                          ) -> tuple[list[Promotion], tuple[int, str] | None,
                                     tuple[int, str] | None]:
    """A page of the customer's promotions (revoked ones left out) and the cursors of the
    pages after and before it. A customer holds at most one promotion per feature, so
    the page is cut from its promotions in memory."""
    if q.statuses - {"Active", "Expired", "Paused"}:
        raise bad_input("must be Active, Expired or Paused, comma-separated", "status")
    await require_customer(d, env, q.customer_id, field="id", allow_archived=True)
    now = d.documents.now_ms()
    docs = sorted((doc for doc in await d.store.promotions(env, q.customer_id)
                   if doc.archived_at is None
                   and (not q.statuses or status_of(doc, now) in q.statuses)
                   and all(_OPS[op](doc.created_at, ms) for op, ms in q.created)),
                  key=_key)
    size = q.limit
    if q.after is not None:
        rest = [doc for doc in docs if _key(doc) > q.after]
        page = rest[:size]
        nxt = _key(page[-1]) if len(rest) > size else None
        prev = _key(page[0]) if page else None
    elif q.before is not None:
        rest = [doc for doc in docs if _key(doc) < q.before]
        page = rest[-size:]
        prev = _key(page[0]) if len(rest) > size else None
        nxt = _key(page[-1]) if page else None
    else:
        page = docs[:size]
        nxt = _key(page[-1]) if len(docs) > size else None
        prev = None
    return page, nxt, prev


async def revoke(d: Domain, env: str, customer_id: str, feature_id: str) -> Promotion:
    """End the customer's promotion for the feature now; 404 if it has none. A grant for
    the feature at the same time goes before or after it, never between its read and its
    write (`promotions_lock`)."""
    async with promotions_lock(env, customer_id):
        doc = await d.store.promotion(env, customer_id, feature_id)
        if doc is None:
            await require_customer(d, env, customer_id, field="id", allow_archived=True)
            raise DomainError(404, "NotFound", f"customer {customer_id!r} has no promotional "
                              f"entitlement for feature {feature_id!r}", "featureId")
        now = d.documents.now_ms()
        stop = promotion_stop(doc, now)
        if stop is not None:  # the usage it counted, settled where its terms stop
            await settle_promotion(d, env, customer_id, doc, stop)
        if doc.end is None or doc.end > now:
            doc.end = now  # it ends now: it shows Expired from here on
        doc.archived_at = doc.updated_at = now
        if not await d.store.end_promotion(env, customer_id, doc, now):
            # Another process of a cluster granted or revoked it meanwhile.
            raise DomainError(409, "ObjectAlreadyBeingUsedByAnotherRequestError",
                              f"the promotional entitlement for feature {feature_id!r} "
                              "changed while it was being revoked; try again", "featureId")
    d.entitlements_changed(env, customer_id)
    return doc
