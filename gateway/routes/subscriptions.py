"""Subscriptions over REST: provision, retrieve, list, update, cancel, migrate, transfer,
and cancelling a scheduled update. The life of a subscription in time (renewals, trials,
recurring credits, scheduled changes) is in engine/domain/subscriptions/catch_up.py.

Extensions to the contract, all optional: `planId` and `unitQuantity` on PATCH (a change of
plan keeps the subscription's id; the contract's way — provisioning the other plan of the
product — works too), and `billingPeriod`, `unitQuantity`, `planVersion`,
`billingCountryCode` in the answer."""

from __future__ import annotations

import hashlib
from decimal import Decimal
from typing import Any, Literal

import msgspec
from litestar import Request, Response, delete, get, patch, post
from litestar.params import FromPath, FromQuery
from msgspec import UNSET, UnsetType

from engine.domain import packages
from engine.domain.subscriptions import catch_up as subs
from engine.domain.subscriptions.changes import Trial, apply_changes, resolve, trial_terms
from engine.domain.subscriptions.changes import country_code as _country
from gateway.context import domain, environment, ok, services
from gateway.errors import ApiError, bad_input
from gateway.openapi import request_body
from gateway.routes.common import check_key, require_customer
from gateway.wire import (
    amount_in,
    amount_out,
    created_at_bounds,
    decode_body,
    iso,
    limit_in,
    parse_time,
)

__all__ = ["ROUTES", "subscription_json"]

_BASE = "/api/v1/subscriptions"
_STATUSES = ("PAYMENT_PENDING", "ACTIVE", "EXPIRED", "IN_TRIAL", "CANCELED", "NOT_STARTED")


class AddonIn(msgspec.Struct, forbid_unknown_fields=True):
    id: str
    quantity: int


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


class TrialOverride(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    is_trial: bool
    trial_end_date: str | None = None
    trial_end_behavior: Literal["CONVERT_TO_PAID", "CANCEL_SUBSCRIPTION"] | None = None


def trial_override(body: TrialOverride | None) -> Trial | None:
    """`trialOverrideConfiguration` as `engine.domain.subscriptions.changes.trial_terms` takes it."""
    if body is None:
        return None
    return Trial(
        body.is_trial, parse_time(body.trial_end_date, "trialOverrideConfiguration.trialEndDate"),
        body.trial_end_behavior)


class Budget(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    has_soft_limit: bool
    limit: Decimal


# Fields of the contract that creditd accepts and keeps but that change nothing here (no
# billing provider is connected): billing details, payment confirmation, CRM ids, budget.
class _Passive(msgspec.Struct, rename="camel"):
    await_payment_confirmation: bool | None = None
    billing_id: str | None = None
    billing_information: Any = None
    payment_collection_method: Literal["CHARGE", "INVOICE", "NONE"] | None = None
    salesforce_id: str | None = None
    billing_cycle_anchor: Literal["UNCHANGED", "NOW"] | None = None
    paying_customer_id: str | None = None
    metadata: dict[str, str] | None = None
    budget: Budget | None = None


class ProvisionBody(_Passive, forbid_unknown_fields=True, rename="camel"):
    customer_id: str = ""
    plan_id: str = ""
    id: str | None = None
    addons: list[AddonIn] | None = None
    applied_coupon: CouponIn | None = None
    billing_country_code: str | None = None
    billing_period: Literal["MONTHLY", "ANNUALLY"] | None = None
    charges: list[ChargeIn] | None = None
    resource_id: str | None = None
    schedule_strategy: Literal["END_OF_BILLING_PERIOD", "END_OF_BILLING_MONTH",
                               "IMMEDIATE"] | None = None
    start_date: str | None = None
    cancellation_date: str | None = None
    trial_override_configuration: TrialOverride | None = None
    unit_quantity: int | None = None
    # Custom subscription-level entitlements, price overrides, minimum spend and hosted
    # checkout are not built; sending them is a 400 naming the field, not a silent no-op.
    entitlements: Any = UNSET
    price_overrides: Any = UNSET
    minimum_spend: Any = UNSET
    checkout_options: Any = UNSET
    salesforce_id: str | None = None


class UpdateBody(_Passive, forbid_unknown_fields=True, rename="camel"):
    addons: list[AddonIn] | None = None
    applied_coupon: CouponIn | None = None
    billing_period: Literal["MONTHLY", "ANNUALLY"] | None = None
    cancellation_date: str | None | UnsetType = UNSET
    charges: list[ChargeIn] | None = None
    promotion_code: str | None = None
    schedule_strategy: Literal["END_OF_BILLING_PERIOD", "END_OF_BILLING_MONTH",
                               "IMMEDIATE"] | None = None
    trial_end_date: str | None = None
    plan_id: str | None = None  # extension
    unit_quantity: int | None = None  # extension
    entitlements: Any = UNSET
    price_overrides: Any = UNSET
    minimum_spend: Any = UNSET


class CancelBody(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    cancellation_action: Literal["DEFAULT", "REVOKE_ENTITLEMENTS"] = "DEFAULT"
    cancellation_time: Literal["END_OF_BILLING_PERIOD", "IMMEDIATE",
                               "SPECIFIC_DATE"] = "IMMEDIATE"
    end_date: str | None = None
    prorate: bool | None = None


class MigrateBody(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    subscription_migration_time: Literal["END_OF_BILLING_PERIOD", "IMMEDIATE"] = "IMMEDIATE"


class TransferBody(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    destination_resource_id: str


def _unsupported(body: Any) -> None:
    for name, wire in (("entitlements", "entitlements"), ("price_overrides", "priceOverrides"),
                       ("minimum_spend", "minimumSpend"), ("checkout_options", "checkoutOptions")):
        if getattr(body, name, UNSET) not in (UNSET, None, []):
            raise bad_input("is not supported by creditd (define it on the plan instead)", wire)


def subscription_json(doc: dict[str, Any]) -> dict[str, Any]:
    trial_end = doc.get("_trialEnd")
    return {
        "id": doc["id"],
        "customerId": doc["customerId"],
        "payingCustomerId": doc.get("payingCustomerId"),
        "resourceId": doc.get("resourceId"),
        "planId": doc["planId"],
        "planVersion": doc["planVersion"],
        "pricingType": doc["pricingType"],
        "status": doc["status"],
        "billingPeriod": doc["billingPeriod"],
        "unitQuantity": doc.get("unitQuantity"),
        "billingCountryCode": doc.get("billingCountryCode"),
        "addons": [{"id": a["id"], "quantity": a["quantity"]} for a in doc.get("addons") or ()],
        "charges": doc.get("charges") or [],
        "startDate": iso(doc["_start"]),
        "billingCycleAnchor": iso(doc["_anchor"]),
        "currentBillingPeriodStart": iso(doc.get("_periodStart")),
        "currentBillingPeriodEnd": iso(doc.get("_periodEnd")),
        "trialEndDate": iso(trial_end),
        "trial": {"trialEndBehavior": doc.get("_trialEndBehavior") or "CONVERT_TO_PAID"}
        if trial_end is not None else None,
        "cancellationDate": iso(doc.get("_cancelAt")),
        "cancelReason": doc.get("cancelReason"),
        "endDate": iso(doc.get("_end")),
        "effectiveEndDate": iso(doc.get("_end")),
        "coupons": doc.get("coupons") or [],
        "futureUpdates": [
            {"scheduledExecutionTime": iso(u["at"]), "scheduleStatus": u["status"],
             "subscriptionScheduleType": u["type"],
             "targetPackage": {"id": u["changes"]["planId"]} if "planId" in u["changes"]
             else None}
            for u in doc.get("_scheduled") or ()],
        "metadata": doc.get("metadata") or {},
        "budget": None if doc.get("budget") is None else {
            "hasSoftLimit": doc["budget"]["hasSoftLimit"],
            "limit": amount_out(doc["budget"]["limit"])},
        "paymentCollection": "NOT_REQUIRED",
        "paymentCollectionMethod": doc.get("paymentCollectionMethod") or "NONE",
        "billingId": doc.get("billingId"),
        "latestInvoice": None,
        "minimumSpend": None,
        "contractId": None,
        "prices": [_price_json(p) for p in doc.get("prices") or ()],
        "subscriptionEntitlements": [],
        "createdAt": iso(doc["_createdAt"]),
        "updatedAt": iso(doc["_updatedAt"]),
    }


def _budget(budget: Budget | None) -> dict[str, Any] | None:
    if budget is None:
        return None
    # Stored in units (10^-5), like every amount; answered as a number.
    return {"hasSoftLimit": budget.has_soft_limit,
            "limit": amount_in(budget.limit, "budget.limit", allow_zero=True)}


def _number(value: Any) -> Decimal | None:
    return None if value is None else Decimal(str(value))


def _price_json(p: dict[str, Any]) -> dict[str, Any]:
    """A stored price (decimal strings) as JSON numbers."""
    def money(m: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if m is None else {"amount": _number(m["amount"]),
                                       "currency": m.get("currency")}
    return {**p, "amount": _number(p.get("amount")), "blockSize": _number(p.get("blockSize")),
            "tiers": None if p.get("tiers") is None else [
                {"upTo": _number(t.get("upTo")), "unitPrice": money(t.get("unitPrice")),
                 "flatPrice": money(t.get("flatPrice"))} for t in p["tiers"]]}


async def _coupon_of(request: Request, body: CouponIn | None, promotion_code: str | None,
                     field: str) -> list[dict[str, Any]] | None:
    """The subscription's coupon list from `appliedCoupon` (a coupon id; a promotion code
    is a coupon id too, as creditd has no separate codes) or a top-level `promotionCode`.
    Errors name the field the id came from; an empty id is refused, not ignored."""
    candidates = [(promotion_code, "promotionCode")]
    if body is not None:
        candidates = [(body.coupon_id, f"{field}.couponId"),
                      (body.promotion_code, f"{field}.promotionCode"), *candidates]
    given = [(ident, name) for ident, name in candidates if ident is not None]
    if not given:
        if body is not None and body.discount is not None:
            raise bad_input("ad-hoc discounts are not supported; create a coupon and pass its "
                            "id", f"{field}.discount")
        return None
    ident, name = given[0]
    if not ident:
        raise bad_input("must not be empty", name)
    coupon = await services(request).catalog.get("coupons", environment(request), ident)
    if coupon is None:
        raise ApiError(404, "CouponNotFound", f"coupon {ident!r} was not found", name)
    if coupon.get("_archivedAt") is not None:
        raise bad_input(f"coupon {ident!r} is archived", name)
    return [{"id": coupon["id"], "name": coupon["name"], "status": "ACTIVE",
             "percentOff": coupon.get("percentOff"),
             "amountsOff": coupon.get("amountsOff")}]


async def _replace_running(request: Request, env: str, doc: dict[str, Any],
                           now: int) -> int | None:
    """A product that does not allow several subscriptions: the customer's running one on
    it (same resource) ends now, replaced by the new one. Returns where the replaced one's
    usage windows were anchored (usage carries over, unless the product's
    usageResetCutoffRule says ALWAYS_RESET), or None if nothing was replaced."""

    product = await packages.get_product(services(request).catalog, env, doc["productId"])
    if product and product.get("multipleSubscriptions"):
        return None
    rule = ((product or {}).get("usageResetCutoffRule") or {}).get("behavior")
    anchor = None
    for other in await subs.customer_subscriptions(domain(request), env, doc["customerId"]):
        if other["id"] == doc["id"] or other.get("productId") != doc["productId"] or (
                other.get("resourceId") != doc.get("resourceId")) or other["status"] not in (
                *subs.RUNNING, "NOT_STARTED"):
            continue
        async with subs.editing(domain(request), env, other["id"]) as current:
            if current["status"] in (*subs.RUNNING, "NOT_STARTED"):
                await _end(request, env, current, now, "UPGRADE_OR_DOWNGRADE", revoke=True)
                if rule != "ALWAYS_RESET" and current["status"] in subs.RUNNING:
                    anchor = current.get("_usageAnchor") or current["_start"]
    return anchor


async def _end(request: Request, env: str, doc: dict[str, Any], at: int, reason: str, *,
               revoke: bool) -> dict[str, Any]:
    """End `doc` (a private copy, its customer's lock held) at `at`, and write it."""
    svc = services(request)
    doc["_end"] = at
    doc["_cancelAt"] = at
    doc["cancelReason"] = reason
    if revoke:
        await subs.void_current_credits(svc.domain, env, doc)
    return await subs.commit(svc.domain, env, doc)


@post(_BASE, opt=request_body(ProvisionBody))
async def provision(request: Request) -> Response:
    """Provisioning is serialized per customer (a second subscription to a product replaces
    the first: two at once must not replace each other). With an `Idempotency-Key` header
    a retry answers the subscription the first request made (the id is derived from the
    key when none is given); the key with another body is a 409."""
    svc = services(request)
    env = environment(request)
    raw_body = await request.body()
    body = await decode_body(request, ProvisionBody, raw_body)
    if not body.customer_id:
        raise bad_input("is required", "customerId")
    if not body.plan_id:
        raise bad_input("is required", "planId")
    _unsupported(body)
    if body.id is not None and (not body.id or "/" in body.id or len(body.id) > 255):
        raise bad_input("must be 1-255 characters without '/'", "id")
    key = request.headers.get("idempotency-key")
    if key is not None:
        check_key(key, "Idempotency-Key")
    async with subs.provision_lock(env, body.customer_id):
        return await _provision(request, svc, env, body, key,
                                hashlib.sha256(raw_body).hexdigest())


async def _provision(request: Request, svc: Any, env: str, body: ProvisionBody,
                     key: str | None, body_hash: str) -> Response:
    ident = body.id
    if key is not None:
        ident = ident or subs.id_for_key(body.plan_id, body.customer_id, key)
        existing = await svc.catalog.get("subscriptions", env, ident)
        if existing is not None and existing.get("_idempotency") == [key, body_hash]:
            doc = await subs.require_subscription(svc.domain, env, ident)
            return ok({"id": doc["id"], "status": "SUCCESS",
                       "subscription": subscription_json(doc),
                       "entitlements": await _entitlements(request, env, doc),
                       "isScheduled": doc["status"] == "NOT_STARTED",
                       "checkoutUrl": None, "checkoutBillingId": None}, status=201)
        if existing is not None and existing.get("_idempotency") is not None:
            raise ApiError(409, "IdempotencyKeyReused", "this idempotency key was used with a "
                           "different request", "Idempotency-Key")
    customer = await require_customer(request, body.customer_id)
    now = svc.clock.now_ms()
    start = parse_time(body.start_date, "startDate")
    start = now if start is None else start
    country = _country(body.billing_country_code)
    changes = await resolve(svc.domain, env, None, plan_id=body.plan_id,
                            billing_period=body.billing_period, addons=body.addons,
                            unit_quantity=body.unit_quantity, charges=body.charges,
                            country=country)
    coupons = await _coupon_of(request, body.applied_coupon, None, "appliedCoupon")
    if coupons is None and customer.get("couponId"):
        # The customer's own coupon applies to their subscriptions unless one is given
        # (not once it is archived or gone: the customer's record is not the request).
        try:
            coupons = await _coupon_of(request, CouponIn(coupon_id=customer["couponId"]),
                                       None, "couponId")
        except ApiError:
            coupons = None

    plan = await packages.published(svc.catalog, env, "plan", body.plan_id,
                                    changes["planVersion"])
    trial_end, behavior = await trial_terms(
        plan, start,
        trial_override(body.trial_override_configuration),
        lambda: subs.trial_eligible(svc.domain, env, body.customer_id, changes["productId"]))
    cancel_at = parse_time(body.cancellation_date, "cancellationDate")
    if cancel_at is not None and cancel_at <= start:
        raise bad_input("must be after the start date", "cancellationDate")
    if ident is not None and await svc.catalog.get("subscriptions", env, ident):
        raise ApiError(409, "DuplicatedEntityNotAllowed", f"subscription {ident!r} exists "
                       "already", "id")
    doc: dict[str, Any] = {
        "id": ident or subs.new_id(body.plan_id),
        "_idempotency": None if key is None else [key, body_hash],
        "customerId": body.customer_id,
        "payingCustomerId": body.paying_customer_id,
        "resourceId": body.resource_id,
        "status": "NOT_STARTED",
        "billingCountryCode": country,
        "coupons": coupons,
        "metadata": body.metadata or {},
        "budget": _budget(body.budget),
        "billingId": body.billing_id,
        "paymentCollectionMethod": body.payment_collection_method,
        "_start": start,
        "_anchor": trial_end if trial_end is not None else start,
        "_creditAnchor": trial_end if trial_end is not None else start,
        "_trialEnd": trial_end,
        "_trialEndBehavior": behavior,
        "_end": cancel_at,
        "_cancelAt": cancel_at,
        "_scheduled": [],
        **changes,
    }
    async with subs.lock_of(env, body.customer_id):
        doc = await subs.catch_up(svc.domain, env, doc, new=True)
    # Only once the new subscription is stored does the one it replaces end: a failure in
    # between leaves the customer with both for a moment, never with neither.
    usage_anchor = await _replace_running(request, env, doc, now)
    if usage_anchor is not None:
        async with subs.editing(svc.domain, env, doc["id"]) as new:
            new["_usageAnchor"] = usage_anchor
            doc = await subs.commit(svc.domain, env, new)
    entitlements = await _entitlements(request, env, doc)
    return ok({"id": doc["id"], "status": "SUCCESS", "subscription": subscription_json(doc),
               "entitlements": entitlements, "isScheduled": doc["status"] == "NOT_STARTED",
               "checkoutUrl": None, "checkoutBillingId": None}, status=201)


async def _entitlements(request: Request, env: str, doc: dict[str, Any]) -> list[Any]:
    """The customer's entitlements once the subscription is in place."""
    from gateway.routes.entitlements import entitlements_of  # noqa: PLC0415

    return await entitlements_of(request, doc["customerId"], doc.get("resourceId"))


@get(_BASE)
async def list_subscriptions(
    request: Request,
    limit: FromQuery[int | None] = None,
    after: FromQuery[str | None] = None,
    before: FromQuery[str | None] = None,
) -> Response:
    svc = services(request)
    env = environment(request)
    q = request.query_params
    statuses = [s.strip() for v in q.getall("status", []) for s in v.split(",") if s.strip()]
    for s in statuses:
        if s not in _STATUSES:
            raise bad_input(f"must be among {', '.join(_STATUSES)}", "status")
    pricing = [s.strip() for v in q.getall("pricingType", []) for s in v.split(",") if s.strip()]
    for p in pricing:
        if p not in ("FREE", "PAID", "CUSTOM"):
            raise bad_input("must be FREE, PAID or CUSTOM", "pricingType")
    # Statuses move with time: bring every due subscription up to now before filtering.
    await subs.catch_up_all_due(svc.domain, svc.clock.now_ms())
    page = await svc.catalog.page(
        "subscriptions", env, limit_in(limit), after, before,
        created=created_at_bounds(request),
        equal={"customer_id": q.get("customerId"), "plan_id": q.get("planId"),
               "resource_id": q.get("resourceId")},
        any_of={"status": statuses})
    items = [d for d in page.items if not pricing or d.get("pricingType") in pricing]
    return ok([subscription_json(d) for d in items],
              pagination={"next": page.next, "prev": page.prev})


@get(_BASE + "/{subscription_id:str}")
async def retrieve(request: Request, subscription_id: FromPath[str]) -> Response:
    doc = await subs.require_subscription(domain(request), environment(request),
                                          subscription_id)
    return ok(subscription_json(doc))


def _schedule(doc: dict[str, Any], changes: dict[str, Any], kind: str) -> None:
    """Put `changes` in the subscription's futureUpdates, for the current period's end."""
    doc["_scheduled"] = [*(doc.get("_scheduled") or ()), {
        "at": doc["_periodEnd"], "status": "SCHEDULED", "type": kind, "changes": changes}]


def _schedule_type(changes: dict[str, Any]) -> str:
    if "planId" in changes:
        return "PLAN"
    if "billingPeriod" in changes:
        return "BILLING_PERIOD"
    if "addons" in changes:
        return "ADDON"
    return "UNIT_AMOUNT"


@patch(_BASE + "/{subscription_id:str}", opt=request_body(UpdateBody))
async def update(request: Request, subscription_id: FromPath[str]) -> Response:
    svc = services(request)
    env = environment(request)
    body = await decode_body(request, UpdateBody)
    _unsupported(body)
    async with subs.editing(svc.domain, env, subscription_id) as doc:
        if doc["status"] not in (*subs.RUNNING, "NOT_STARTED"):
            raise bad_input(f"the subscription is {doc['status']}; only a running one can change",
                            "id")
        now = svc.clock.now_ms()
        changes = await resolve(svc.domain, env, doc, plan_id=body.plan_id,
                                billing_period=body.billing_period, addons=body.addons,
                                unit_quantity=body.unit_quantity, charges=body.charges)
        coupons = await _coupon_of(request, body.applied_coupon, body.promotion_code,
                                   "appliedCoupon")
        trial_end = parse_time(body.trial_end_date, "trialEndDate")
        if trial_end is not None and (doc.get("_trialEnd") is None or doc["status"] != "IN_TRIAL"):
            raise bad_input("the subscription is not in a trial", "trialEndDate")
        if trial_end is not None and trial_end <= now:
            raise bad_input("must be in the future", "trialEndDate")
        cancel: int | None | UnsetType = UNSET
        if body.cancellation_date is not UNSET:
            cancel = parse_time(body.cancellation_date, "cancellationDate")
            if cancel is not None and cancel <= now:
                raise bad_input("must be in the future", "cancellationDate")
        if body.metadata is not None:
            doc["metadata"] = body.metadata
        if coupons is not None:
            doc["coupons"] = coupons
        if body.budget is not None:
            doc["budget"] = _budget(body.budget)
        if trial_end is not None:
            # The paid phase (and its billing cycle) starts when the trial ends.
            doc["_trialEnd"] = doc["_anchor"] = doc["_creditAnchor"] = trial_end
        if cancel is not UNSET:
            doc["_end"] = doc["_cancelAt"] = cancel
            doc["cancelReason"] = None
        strategy = body.schedule_strategy or "IMMEDIATE"
        if changes and strategy != "IMMEDIATE":
            _schedule(doc, changes, _schedule_type(changes))
        elif changes:
            await apply_changes(svc.domain, env, doc, changes, now)
        doc = await subs.commit(svc.domain, env, doc)
        return ok(subscription_json(doc))


@post(_BASE + "/{subscription_id:str}/cancel", opt=request_body(CancelBody))
async def cancel(request: Request, subscription_id: FromPath[str]) -> Response:
    svc = services(request)
    env = environment(request)
    body = await decode_body(request, CancelBody)
    async with subs.editing(svc.domain, env, subscription_id) as doc:
        if doc["status"] in ("CANCELED", "EXPIRED"):
            raise bad_input(f"the subscription is {doc['status']} already", "id")
        now = svc.clock.now_ms()
        revoke = body.cancellation_action == "REVOKE_ENTITLEMENTS"
        if body.cancellation_time == "IMMEDIATE":
            if body.end_date is not None:
                raise bad_input("is only for SPECIFIC_DATE", "endDate")
            at, reason = now, "Immediate"
        elif body.cancellation_time == "END_OF_BILLING_PERIOD":
            if body.end_date is not None:
                raise bad_input("is only for SPECIFIC_DATE", "endDate")
            at, reason = doc["_periodEnd"], None
            if doc["status"] == "NOT_STARTED":
                at = now
        else:
            at = parse_time(body.end_date, "endDate")
            if at is None:
                raise bad_input("is required with SPECIFIC_DATE", "endDate")
            if at <= now:
                raise bad_input("must be in the future", "endDate")
            reason = None
        if at <= now:
            return ok(subscription_json(await _end(request, env, doc, now, reason or "Immediate",
                                                   revoke=revoke)))
        doc["_end"] = doc["_cancelAt"] = at
        doc["cancelReason"] = None
        if revoke:
            await subs.void_current_credits(svc.domain, env, doc)
        doc = await subs.commit(svc.domain, env, doc)
        return ok(subscription_json(doc))


@delete(_BASE + "/{subscription_id:str}/future-update/schedule", status_code=200)
async def cancel_schedule(request: Request, subscription_id: FromPath[str]) -> Response:
    """Cancel the subscription's scheduled updates (a scheduled cancellation is undone
    with PATCH cancellationDate: null)."""
    svc = services(request)
    env = environment(request)
    async with subs.editing(svc.domain, env, subscription_id) as doc:
        pending = [u for u in doc.get("_scheduled") or () if u["status"] == "SCHEDULED"]
        if not pending:
            raise bad_input("the subscription has no scheduled update", "id")
        doc["_scheduled"] = [{**u, "status": "CANCELED"} if u["status"] == "SCHEDULED" else u
                             for u in doc["_scheduled"]]
        doc = await subs.commit(svc.domain, env, doc)
        return ok(subscription_json(doc))


@post(_BASE + "/{subscription_id:str}/migrate", opt=request_body(MigrateBody))
async def migrate(request: Request, subscription_id: FromPath[str]) -> Response:
    """Move to the latest published versions of the plan and add-ons."""
    svc = services(request)
    env = environment(request)
    body = await decode_body(request, MigrateBody)
    async with subs.editing(svc.domain, env, subscription_id) as doc:
        if doc["status"] not in (*subs.RUNNING, "NOT_STARTED"):
            raise bad_input(f"the subscription is {doc['status']}", "id")
        changes = await resolve(svc.domain, env, doc, latest=True)
        now = svc.clock.now_ms()
        if body.subscription_migration_time == "IMMEDIATE":
            await apply_changes(svc.domain, env, doc, changes, now)
        else:
            _schedule(doc, changes, "MIGRATE_TO_LATEST")
        doc = await subs.commit(svc.domain, env, doc)
        return ok(subscription_json(doc))


@post(_BASE + "/{subscription_id:str}/transfer", opt=request_body(TransferBody))
async def transfer(request: Request, subscription_id: FromPath[str]) -> Response:
    """Move the subscription to another resource of the same customer. Recurring credits
    already granted stay with the resource they were granted to."""
    svc = services(request)
    env = environment(request)
    body = await decode_body(request, TransferBody)
    target = body.destination_resource_id
    if not target or "/" in target or len(target) > 255:
        raise bad_input("must be 1-255 characters without '/'", "destinationResourceId")
    async with subs.editing(svc.domain, env, subscription_id) as doc:
        if doc["status"] not in (*subs.RUNNING, "NOT_STARTED"):
            raise bad_input(f"the subscription is {doc['status']}", "id")
        if await _taken(request, env, doc, target):
            raise bad_input(f"resource {target!r} has a running subscription to this product, "
                            "which allows one", "destinationResourceId")
        doc["resourceId"] = target
        doc = await subs.commit(svc.domain, env, doc)
        return ok(subscription_json(doc))


async def _taken(request: Request, env: str, doc: dict[str, Any], resource_id: str) -> bool:
    """Whether `resource_id` already holds a running subscription on `doc`'s product and
    the product allows one (the caller holds the customer's lock: the documents are read
    as stored, without a catch-up)."""

    product = await packages.get_product(services(request).catalog, env, doc["productId"])
    if product and product.get("multipleSubscriptions"):
        return False
    return any(other.get("productId") == doc["productId"] and other["id"] != doc["id"]
               for other in await services(request).store.running_subscriptions_on_resource(
                   env, doc["customerId"], resource_id))


ROUTES = [provision, list_subscriptions, retrieve, update, cancel, cancel_schedule, migrate,
          transfer]
