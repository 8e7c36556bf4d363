"""The subscription operations: provision, get, list, update, cancel, cancel a scheduled
update, migrate to the latest versions, transfer to another resource.

Each takes typed inputs (times as epoch ms, amounts as units) and answers the stored
document, caught up to now (`catch_up.py`); what is being changed is checked whole by
`changes.resolve` before anything is written. A change to a subscription is made under its
customer's lock (`catch_up.editing`), so two changes never write over each other.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any, Literal

import msgspec
from msgspec import UNSET, UnsetType

from engine.domain import customers, packages
from engine.domain.access import CustomerEntitlements, entitlements
from engine.domain.constraints import Quantity
from engine.domain.context import DocumentPage, Domain, check_key, require_customer
from engine.domain.errors import DomainError, bad_input
from engine.domain.stored import Customer, unset_none
from engine.domain.subscriptions import catch_up as subs
from engine.domain.subscriptions.changes import (
    Trial,
    apply_changes,
    country_code,
    resolve,
    trial_terms,
)
from engine.domain.subscriptions.document import ScheduledUpdate, Subscription, decode
from engine.domain.subscriptions.usage_windows import settle_usage

__all__ = ["STATUSES", "AddonIn", "CancelInput", "ChargeIn", "CouponIn", "ProvisionInput",
           "Provisioned", "SUBSCRIPTION_FIELD", "SubscriptionsQuery", "UpdateInput", "cancel",
           "cancel_schedule", "coupons_of", "get", "list_subscriptions", "migrate", "provision",
           "provision_customer", "publish", "transfer", "transfer_from", "update"]

STATUSES = ("PAYMENT_PENDING", "ACTIVE", "EXPIRED", "IN_TRIAL", "CANCELED", "NOT_STARTED")
PRICING_TYPES = ("FREE", "PAID", "CUSTOM")
_LIVE = (*subs.RUNNING, "NOT_STARTED")


# Items in the API's names: REST decodes into them directly.
class AddonIn(msgspec.Struct, forbid_unknown_fields=True):
    id: str
    quantity: Quantity


class ChargeIn(msgspec.Struct, forbid_unknown_fields=True):
    id: str
    quantity: Decimal
    type: Literal["FEATURE", "CREDIT"]


class CouponIn(msgspec.Struct, rename="camel"):
    coupon_id: str | None = None
    promotion_code: str | None = None
    billing_coupon_id: str | None = None
    configuration: Any = None
    discount: Any = None


class Budget(msgspec.Struct, frozen=True):
    has_soft_limit: bool
    limit: int  # units


class ProvisionInput(msgspec.Struct, frozen=True, kw_only=True):
    customer_id: str
    plan_id: str
    id: str | None = None
    addons: list[AddonIn] | None = None
    charges: list[ChargeIn] | None = None
    coupon: CouponIn | None = None
    billing_country_code: str | None = None
    billing_period: str | None = None
    resource_id: str | None = None
    start: int | None = None  # None: now
    cancel_at: int | None = None
    trial: Trial | None = None  # trialOverrideConfiguration
    unit_quantity: int | None = None
    # Kept and answered, changing nothing here (no billing provider is connected).
    metadata: dict[str, str] | None = None
    budget: Budget | None = None
    billing_id: str | None = None
    paying_customer_id: str | None = None
    payment_collection_method: str | None = None
    # The caller's Idempotency-Key and a digest of its request: a retry answers the
    # subscription the first request made; the key with another request is a 409.
    idempotency_key: str | None = None
    request_hash: str | None = None


class Provisioned(msgspec.Struct, frozen=True, kw_only=True):
    subscription: Subscription
    entitlements: CustomerEntitlements  # the customer's, once the subscription is in place


class UpdateInput(msgspec.Struct, frozen=True, kw_only=True):
    plan_id: str | None = None
    billing_period: str | None = None
    addons: list[AddonIn] | None = None
    charges: list[ChargeIn] | None = None
    unit_quantity: int | None = None
    coupon: CouponIn | None = None
    promotion_code: str | None = None
    trial_end: int | None = None
    cancel_at: int | None | UnsetType = UNSET  # None: undo a scheduled cancellation
    schedule_strategy: str | None = None  # IMMEDIATE (default) or at the period's end
    metadata: dict[str, str] | None = None
    budget: Budget | None = None


class CancelInput(msgspec.Struct, frozen=True, kw_only=True):
    revoke: bool = False  # REVOKE_ENTITLEMENTS: void the current recurring credits
    time: Literal["END_OF_BILLING_PERIOD", "IMMEDIATE", "SPECIFIC_DATE"] = "IMMEDIATE"
    end_date: int | None = None


class SubscriptionsQuery(msgspec.Struct, frozen=True, kw_only=True):
    limit: int = 20
    after: str | None = None
    before: str | None = None
    customer_id: str | None = None
    plan_id: str | None = None
    resource_id: str | None = None
    statuses: tuple[str, ...] = ()
    pricing_types: tuple[str, ...] = ()
    created: tuple[tuple[str, int], ...] = ()


def _check_id(ident: str, field: str) -> None:
    if not ident or "/" in ident or len(ident) > 255:
        raise bad_input("must be 1-255 characters without '/'", field)


def _budget(budget: Budget | None) -> dict[str, Any] | None:
    return None if budget is None else {"hasSoftLimit": budget.has_soft_limit,
                                        "limit": budget.limit}


async def coupons_of(d: Domain, env: str, coupon: CouponIn | None, promotion_code: str | None,
                     field: str) -> list[dict[str, Any]] | None:
    """The subscription's coupon list from `appliedCoupon` (a coupon id; a promotion code
    is a coupon id too, as creditd has no separate codes) or a top-level `promotionCode`.
    Errors name the field the id came from; an empty id is refused, not ignored."""
    candidates = [(promotion_code, "promotionCode")]
    if coupon is not None:
        candidates = [(coupon.coupon_id, f"{field}.couponId"),
                      (coupon.promotion_code, f"{field}.promotionCode"), *candidates]
    given = [(ident, name) for ident, name in candidates if ident is not None]
    if not given:
        if coupon is not None and coupon.discount is not None:
            raise bad_input("ad-hoc discounts are not supported; create a coupon and pass its "
                            "id", f"{field}.discount")
        return None
    ident, name = given[0]
    if not ident:
        raise bad_input("must not be empty", name)
    doc = await d.documents.get("coupons", env, ident)
    if doc is None:
        raise DomainError(404, "CouponNotFound", f"coupon {ident!r} was not found", name)
    if doc.archived_at is not None:
        raise bad_input(f"coupon {ident!r} is archived", name)
    return [{"id": doc.id, "name": doc.name, "status": "ACTIVE", "percentOff": doc.percent_off,
             "amountsOff": msgspec.to_builtins(doc.amounts_off)}]


async def _end(d: Domain, env: str, doc: Subscription, at: int, reason: str, *,
               revoke: bool) -> Subscription:
    """End `doc` (a private copy, its customer's lock held) at `at`, and write it (the
    catch-up that follows settles the usage its terms counted: usage_windows)."""
    doc.end = doc.cancel_at = at
    doc.cancel_reason = reason
    if revoke:
        await subs.void_current_credits(d, env, doc)
    return await subs.commit(d, env, doc)


async def _replace_running(d: Domain, env: str, doc: Subscription, now: int) -> int | None:
    """A product that does not allow several subscriptions: the customer's running one on
    it (same resource) ends now, replaced by the new one. Returns where the replaced one's
    usage windows were anchored (usage carries over, unless the product's
    usageResetCutoffRule says ALWAYS_RESET), or None if nothing was replaced."""
    product = await packages.get_product(d.documents, env, doc.product_id or "")
    if product and product.multiple_subscriptions:
        return None
    rule = product.usage_reset_cutoff_rule if product else None
    behavior = rule.behavior if rule else None
    anchor = None
    for other in await subs.customer_subscriptions(d, env, doc.customer_id):
        if other.id == doc.id or other.product_id != doc.product_id or (
                other.resource_id != doc.resource_id) or other.status not in _LIVE:
            continue
        async with subs.editing(d, env, other.id) as current:
            if current.status in _LIVE:
                await _end(d, env, current, now, "UPGRADE_OR_DOWNGRADE", revoke=True)
                if behavior != "ALWAYS_RESET" and current.status in subs.RUNNING:
                    anchor = current.usage_anchor or current.start
    return anchor


def _check_input(q: ProvisionInput) -> None:
    if not q.customer_id:
        raise bad_input("is required", "customerId")
    if not q.plan_id:
        raise bad_input("is required", "planId")
    if q.id is not None:
        _check_id(q.id, "id")
    if q.idempotency_key is not None:
        check_key(q.idempotency_key, "Idempotency-Key")


async def provision(d: Domain, env: str, q: ProvisionInput) -> Provisioned:
    """A new subscription of the customer to the plan. A second subscription to a product
    that allows one replaces the first (which ends, its unused recurring credits voided);
    provisioning is serialized per customer, so two at once never replace each other."""
    _check_input(q)
    async with subs.provision_lock(env, q.customer_id):
        return await _provision(d, env, q)


SUBSCRIPTION_FIELD = "subscription."


@contextmanager
def _fields_under(prefix: str) -> Iterator[None]:
    try:
        yield
    except DomainError as exc:
        if exc.field:
            exc.field = prefix + exc.field
        raise


async def provision_customer(d: Domain, env: str, customer_id: str, fields: dict[str, Any],
                             q: ProvisionInput) -> tuple[Customer, Provisioned]:
    """A new customer (`customers.provision`'s `fields`) with a first subscription (`q`,
    for that customer), made whole or not at all: the customer and the whole subscription
    request (plan, billing period, add-ons, quantities, charges, coupon, trial, dates, id)
    are checked against the customer to be before either is written, so a refused
    subscription leaves no customer behind. A refusal of the subscription names its field
    under SUBSCRIPTION_FIELD (`subscription.planId`); the customer's, as `provision` does
    (`id`: DuplicatedEntityNotAllowed if the customer exists)."""
    customer = customers.new_customer(d, customer_id, fields)
    q = msgspec.structs.replace(q, customer_id=customer_id)
    with _fields_under(SUBSCRIPTION_FIELD):
        _check_input(q)
    async with subs.provision_lock(env, customer_id):
        await customers.require_absent(d, env, customer_id)
        ident = q.id
        if ident is None and q.idempotency_key is not None:
            ident = subs.id_for_key(q.plan_id, customer_id, q.idempotency_key)
        with _fields_under(SUBSCRIPTION_FIELD):
            doc, now = await _checked(d, env, q, customer, ident)
        # Everything is checked: the customer is written, then its subscription.
        customer = await customers.insert_new(d, env, customer)
        return customer, await _store(d, env, doc, now)


async def _provision(d: Domain, env: str, q: ProvisionInput) -> Provisioned:
    ident = q.id
    key = q.idempotency_key
    if key is not None:
        ident = ident or subs.id_for_key(q.plan_id, q.customer_id, key)
        found = await d.documents.get("subscriptions", env, ident)
        existing = None if found is None else decode(found)
        if existing is not None and existing.idempotency == [key, q.request_hash]:
            doc = await subs.require_subscription(d, env, ident)
            return Provisioned(subscription=doc, entitlements=await entitlements(
                d, env, doc.customer_id, doc.resource_id))
        if existing is not None and existing.idempotency is not None:
            raise DomainError(409, "IdempotencyKeyReused", "this idempotency key was used with "
                              "a different request", "Idempotency-Key")
    customer = await require_customer(d, env, q.customer_id)
    doc, now = await _checked(d, env, q, customer, ident)
    return await _store(d, env, doc, now)


async def _checked(d: Domain, env: str, q: ProvisionInput, customer: Customer,
                   ident: str | None) -> tuple[Subscription, int]:
    """The subscription `q` makes for `customer` (stored or about to be), every rule
    checked, nothing written; and the time it was made at."""
    key = q.idempotency_key
    now = d.now_ms()
    start = now if q.start is None else q.start
    country = country_code(q.billing_country_code)
    changes = await resolve(d, env, None, plan_id=q.plan_id, billing_period=q.billing_period,
                            addons=q.addons, unit_quantity=q.unit_quantity, charges=q.charges,
                            country=country)
    coupons = await coupons_of(d, env, q.coupon, None, "appliedCoupon")
    if coupons is None and unset_none(customer.coupon_id):
        # The customer's own coupon applies to their subscriptions unless one is given
        # (not once it is archived or gone: the customer's record is not the request).
        try:
            coupons = await coupons_of(d, env, CouponIn(coupon_id=customer.coupon_id),
                                       None, "couponId")
        except DomainError:
            coupons = None
    plan = await packages.published(d.documents, env, "plan", q.plan_id,
                                    changes["planVersion"])
    trial_end, behavior = await trial_terms(
        plan, start, q.trial,
        lambda: subs.trial_eligible(d, env, q.customer_id, changes["productId"]))
    if q.cancel_at is not None and q.cancel_at <= start:
        raise bad_input("must be after the start date", "cancellationDate")
    if ident is not None and await d.documents.get("subscriptions", env, ident):
        raise DomainError(409, "DuplicatedEntityNotAllowed",
                          f"subscription {ident!r} exists already", "id")
    paid_from = trial_end if trial_end is not None else start
    doc = Subscription(
        id=ident or subs.new_id(q.plan_id), customer_id=q.customer_id,
        plan_id=changes["planId"], plan_version=changes["planVersion"],
        idempotency=None if key is None or q.request_hash is None else [key, q.request_hash],
        paying_customer_id=q.paying_customer_id, resource_id=q.resource_id,
        billing_country_code=country, coupons=coupons, metadata=q.metadata or {},
        budget=_budget(q.budget), billing_id=q.billing_id,
        payment_collection_method=q.payment_collection_method,
        start=start, anchor=paid_from, credit_anchor=paid_from, trial_end=trial_end,
        trial_end_behavior=behavior, end=q.cancel_at, cancel_at=q.cancel_at)
    doc.apply(changes)
    return doc, now


async def _store(d: Domain, env: str, doc: Subscription, now: int) -> Provisioned:
    """Write a subscription `_checked` made (its customer's provisioning lock held)."""
    async with subs.lock_of(env, doc.customer_id):
        doc = await subs.catch_up(d, env, doc, new=True)
    # Only once the new subscription is stored does the one it replaces end: a failure in
    # between leaves the customer with both for a moment, never with neither.
    usage_anchor = await _replace_running(d, env, doc, now)
    if usage_anchor is not None:
        async with subs.editing(d, env, doc.id) as new:
            new.usage_anchor = usage_anchor
            doc = await subs.commit(d, env, new)
    return Provisioned(subscription=doc, entitlements=await entitlements(
        d, env, doc.customer_id, doc.resource_id))


async def get(d: Domain, env: str, subscription_id: str) -> Subscription:
    """The subscription, caught up to now; SubscriptionNotFound."""
    return await subs.require_subscription(d, env, subscription_id)


async def list_subscriptions(d: Domain, env: str, q: SubscriptionsQuery) -> Any:
    """A page in creation order (`.items`: Subscriptions, `.next`, `.prev`), filtered."""
    for s in q.statuses:
        if s not in STATUSES:
            raise bad_input(f"must be among {', '.join(STATUSES)}", "status")
    for p in q.pricing_types:
        if p not in PRICING_TYPES:
            raise bad_input("must be FREE, PAID or CUSTOM", "pricingType")
    # Statuses move with time: bring every due subscription up to now before filtering.
    await subs.catch_up_all_due(d, d.now_ms())
    page = await d.documents.page(
        "subscriptions", env, q.limit, q.after, q.before, created=list(q.created),
        equal={"customer_id": q.customer_id, "plan_id": q.plan_id,
               "resource_id": q.resource_id},
        any_of={"status": list(q.statuses)})
    return DocumentPage([sub for sub in map(decode, page.items)
                         if not q.pricing_types or sub.pricing_type in q.pricing_types],
                        page.next, page.prev)


def _schedule(doc: Subscription, changes: dict[str, Any], kind: str) -> None:
    """Put `changes` in the subscription's futureUpdates, for the current period's end."""
    assert doc.period_end is not None  # caught up: the period is known
    doc.scheduled.append(ScheduledUpdate(at=doc.period_end, status="SCHEDULED", type=kind,
                                         changes=changes))


def _schedule_type(changes: dict[str, Any]) -> str:
    if "planId" in changes:
        return "PLAN"
    if "billingPeriod" in changes:
        return "BILLING_PERIOD"
    if "addons" in changes:
        return "ADDON"
    return "UNIT_AMOUNT"


async def update(d: Domain, env: str, subscription_id: str, q: UpdateInput) -> Subscription:
    """Change a running (or not yet started) subscription: plan, billing period, add-ons,
    quantities now or at the period's end (`futureUpdates`); coupon, trial end, scheduled
    cancellation, metadata, budget now."""
    async with subs.editing(d, env, subscription_id) as doc:
        if doc.status not in _LIVE:
            raise bad_input(f"the subscription is {doc.status}; only a running one can change",
                            "id")
        now = d.now_ms()
        changes = await resolve(d, env, doc, plan_id=q.plan_id, billing_period=q.billing_period,
                                addons=q.addons, unit_quantity=q.unit_quantity,
                                charges=q.charges)
        coupons = await coupons_of(d, env, q.coupon, q.promotion_code, "appliedCoupon")
        if q.trial_end is not None and (doc.trial_end is None or doc.status != "IN_TRIAL"):
            raise bad_input("the subscription is not in a trial", "trialEndDate")
        if q.trial_end is not None and q.trial_end <= now:
            raise bad_input("must be in the future", "trialEndDate")
        if q.cancel_at is not UNSET and q.cancel_at is not None and q.cancel_at <= now:
            raise bad_input("must be in the future", "cancellationDate")
        if q.metadata is not None:
            doc.metadata = q.metadata
        if coupons is not None:
            doc.coupons = coupons
        if q.budget is not None:
            doc.budget = _budget(q.budget)
        if q.trial_end is not None:
            # The paid phase (and its billing cycle) starts when the trial ends.
            doc.trial_end = doc.anchor = doc.credit_anchor = q.trial_end
        if q.cancel_at is not UNSET:
            doc.end = doc.cancel_at = q.cancel_at
            doc.cancel_reason = None
        strategy = q.schedule_strategy or "IMMEDIATE"
        if changes and strategy != "IMMEDIATE":
            _schedule(doc, changes, _schedule_type(changes))
        elif changes:
            await apply_changes(d, env, doc, changes, now)
        return await subs.commit(d, env, doc)


async def cancel(d: Domain, env: str, subscription_id: str, q: CancelInput) -> Subscription:
    """End the subscription now, at the period's end or on a date; REVOKE_ENTITLEMENTS
    also voids the recurring credits left in the current window."""
    async with subs.editing(d, env, subscription_id) as doc:
        if doc.status in ("CANCELED", "EXPIRED"):
            raise bad_input(f"the subscription is {doc.status} already", "id")
        now = d.now_ms()
        reason: str | None
        if q.time == "IMMEDIATE":
            if q.end_date is not None:
                raise bad_input("is only for SPECIFIC_DATE", "endDate")
            at, reason = now, "Immediate"
        elif q.time == "END_OF_BILLING_PERIOD":
            if q.end_date is not None:
                raise bad_input("is only for SPECIFIC_DATE", "endDate")
            at, reason = doc.period_end or now, None
            if doc.status == "NOT_STARTED":
                at = now
        else:
            if q.end_date is None:
                raise bad_input("is required with SPECIFIC_DATE", "endDate")
            if q.end_date <= now:
                raise bad_input("must be in the future", "endDate")
            at, reason = q.end_date, None
        if at <= now:
            return await _end(d, env, doc, now, reason or "Immediate", revoke=q.revoke)
        doc.end = doc.cancel_at = at
        doc.cancel_reason = None
        if q.revoke:
            await subs.void_current_credits(d, env, doc)
        return await subs.commit(d, env, doc)


async def cancel_schedule(d: Domain, env: str, subscription_id: str) -> Subscription:
    """Cancel the subscription's scheduled updates (a scheduled cancellation is undone by
    an update with `cancel_at=None`)."""
    async with subs.editing(d, env, subscription_id) as doc:
        if not any(u.status == "SCHEDULED" for u in doc.scheduled):
            raise bad_input("the subscription has no scheduled update", "id")
        for u in doc.scheduled:
            if u.status == "SCHEDULED":
                u.status = "CANCELED"
        return await subs.commit(d, env, doc)


async def migrate(d: Domain, env: str, subscription_id: str, *,
                  immediate: bool = True) -> Subscription:
    """Move to the latest published versions of the plan and add-ons, now or at the
    period's end."""
    async with subs.editing(d, env, subscription_id) as doc:
        if doc.status not in _LIVE:
            raise bad_input(f"the subscription is {doc.status}", "id")
        changes = await resolve(d, env, doc, latest=True)
        if immediate:
            await apply_changes(d, env, doc, changes, d.now_ms())
        else:
            _schedule(doc, changes, "MIGRATE_TO_LATEST")
        return await subs.commit(d, env, doc)


async def transfer(d: Domain, env: str, subscription_id: str,
                   resource_id: str) -> Subscription:
    """Move the subscription to another resource of the same customer. Recurring credits
    already granted stay with the resource they were granted to."""
    _check_id(resource_id, "destinationResourceId")
    async with subs.editing(d, env, subscription_id) as doc:
        if doc.status not in _LIVE:
            raise bad_input(f"the subscription is {doc.status}", "id")
        if await _taken(d, env, doc, resource_id):
            raise bad_input(f"resource {resource_id!r} has a running subscription to this "
                            "product, which allows one", "destinationResourceId")
        # The terms stop on the resource it leaves.
        await settle_usage(d, env, doc, d.now_ms())
        doc.resource_id = resource_id
        return await subs.commit(d, env, doc)


async def transfer_from(d: Domain, env: str, customer_id: str, source_resource_id: str,
                        resource_id: str) -> Subscription:
    """Move the customer's running subscription on `source_resource_id` to `resource_id`
    (Stigg's GraphQL transferSubscription names the subscription so): SubscriptionNotFound
    when the source holds none, a refusal when it holds several (move them by id)."""
    await require_customer(d, env, customer_id)
    running = await subs.active_subscriptions(d, env, customer_id, source_resource_id)
    if not running:
        raise DomainError(404, "SubscriptionNotFound",
                          f"customer {customer_id!r} has no running subscription on "
                          f"resource {source_resource_id!r}", "sourceResourceId")
    if len(running) > 1:
        raise bad_input(f"resource {source_resource_id!r} holds {len(running)} running "
                        "subscriptions; move them one by one, by id", "sourceResourceId")
    return await transfer(d, env, running[0].id, resource_id)


async def publish(d: Domain, env: str, kind: str, ident: str,
                  migration_type: str | None) -> dict[str, Any]:
    """Publish a plan's or add-on's draft. NEW_CUSTOMERS: existing subscriptions keep the
    version they have; ALL_CUSTOMERS: every running one moves to the new version now,
    before this returns (`catch_up.migrate_all`; one the new version does not fit stays)."""
    if migration_type is None:
        raise bad_input("is required: NEW_CUSTOMERS or ALL_CUSTOMERS", "migrationType")
    doc = await packages.publish(d.documents, env, kind, ident, migration_type=migration_type)
    if migration_type == "ALL_CUSTOMERS":
        await subs.migrate_all(d, env, kind, ident)
    d.package_published(env, {"packageType": kind.upper(), "packageRefId": ident,
                              "packageVersion": doc.version_number,
                              "migrationType": migration_type})
    return doc


async def _taken(d: Domain, env: str, doc: Subscription, resource_id: str) -> bool:
    """Whether `resource_id` already holds a running subscription on `doc`'s product and
    the product allows one (the caller holds the customer's lock: the documents are read
    as stored, without a catch-up)."""
    product = await packages.get_product(d.documents, env, doc.product_id or "")
    if product and product.multiple_subscriptions:
        return False
    return any(other.get("productId") == doc.product_id and other["id"] != doc.id
               for other in await d.store.running_subscriptions_on_resource(
                   env, doc.customer_id, resource_id))
