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
from litestar.params import FromPath
from msgspec import UNSET, UnsetType

from engine.domain.subscriptions import operations
from engine.domain.subscriptions.changes import TrialOverride, trial_override
from engine.domain.subscriptions.document import Subscription
from engine.domain.subscriptions.operations import AddonIn, ChargeIn, CouponIn
from gateway.context import domain, environment, ok
from gateway.errors import bad_input
from gateway.openapi import request_body
from gateway.routes.entitlements import entitlements_json
from gateway.wire import (
    PageQuery,
    amount_in,
    amount_out,
    created_at_bounds,
    decode_body,
    iso,
    parse_time,
)

__all__ = ["ROUTES", "subscription_json"]

_BASE = "/api/v1/subscriptions"


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
    customer_id: str = ""  # required: refused by the domain when absent, naming it
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


def subscription_json(doc: Subscription) -> dict[str, Any]:
    trial_end = doc.trial_end
    return {
        "id": doc.id,
        "customerId": doc.customer_id,
        "payingCustomerId": doc.paying_customer_id,
        "resourceId": doc.resource_id,
        "planId": doc.plan_id,
        "planVersion": doc.plan_version,
        "pricingType": doc.pricing_type,
        "status": doc.status,
        "billingPeriod": doc.billing_period,
        "unitQuantity": doc.unit_quantity,
        "billingCountryCode": doc.billing_country_code,
        "addons": [{"id": a.id, "quantity": a.quantity} for a in doc.addons],
        "charges": doc.charges or [],
        "startDate": iso(doc.start),
        "billingCycleAnchor": iso(doc.anchor),
        "currentBillingPeriodStart": iso(doc.period_start),
        "currentBillingPeriodEnd": iso(doc.period_end),
        "trialEndDate": iso(trial_end),
        "trial": {"trialEndBehavior": doc.trial_end_behavior or "CONVERT_TO_PAID"}
        if trial_end is not None else None,
        "cancellationDate": iso(doc.cancel_at),
        "cancelReason": doc.cancel_reason,
        "endDate": iso(doc.end),
        "effectiveEndDate": iso(doc.end),
        "coupons": doc.coupons or [],
        "futureUpdates": [
            {"scheduledExecutionTime": iso(u.at), "scheduleStatus": u.status,
             "subscriptionScheduleType": u.type,
             "targetPackage": {"id": u.changes["planId"]} if "planId" in u.changes else None}
            for u in doc.scheduled],
        "metadata": doc.metadata or {},
        "budget": None if doc.budget is None else {
            "hasSoftLimit": doc.budget["hasSoftLimit"],
            "limit": amount_out(doc.budget["limit"])},
        "paymentCollection": "NOT_REQUIRED",
        "paymentCollectionMethod": doc.payment_collection_method or "NONE",
        "billingId": doc.billing_id,
        "latestInvoice": None,
        "minimumSpend": None,
        "contractId": None,
        "prices": [_price_json(p) for p in doc.prices or ()],
        "subscriptionEntitlements": [],
        "createdAt": iso(doc.created_at),
        "updatedAt": iso(doc.updated_at),
    }


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


def _budget(budget: Budget | None) -> operations.Budget | None:
    if budget is None:
        return None
    # Stored in units (10^-5), like every amount; answered as a number.
    return operations.Budget(budget.has_soft_limit,
                             amount_in(budget.limit, "budget.limit", allow_zero=True))


def _provisioned_json(p: operations.Provisioned) -> dict[str, Any]:
    doc = p.subscription
    return {"id": doc.id, "status": "SUCCESS", "subscription": subscription_json(doc),
            "entitlements": entitlements_json(p.entitlements),
            "isScheduled": doc.status == "NOT_STARTED",
            "checkoutUrl": None, "checkoutBillingId": None}


@post(_BASE, opt=request_body(ProvisionBody))
async def provision(request: Request) -> Response:
    """With an `Idempotency-Key` header a retry answers the subscription the first request
    made (the id is derived from the key when none is given); the key with another body
    is a 409."""
    raw_body = await request.body()
    body = await decode_body(request, ProvisionBody, raw_body)
    _unsupported(body)
    q = operations.ProvisionInput(
        customer_id=body.customer_id, plan_id=body.plan_id, id=body.id, addons=body.addons,
        charges=body.charges, coupon=body.applied_coupon,
        billing_country_code=body.billing_country_code, billing_period=body.billing_period,
        resource_id=body.resource_id, start=parse_time(body.start_date, "startDate"),
        cancel_at=parse_time(body.cancellation_date, "cancellationDate"),
        trial=trial_override(body.trial_override_configuration),
        unit_quantity=body.unit_quantity, metadata=body.metadata, budget=_budget(body.budget),
        billing_id=body.billing_id, paying_customer_id=body.paying_customer_id,
        payment_collection_method=body.payment_collection_method,
        idempotency_key=request.headers.get("idempotency-key"),
        request_hash=hashlib.sha256(raw_body).hexdigest())
    return ok(_provisioned_json(await operations.provision(domain(request),
                                                           environment(request), q)),
              status=201)


@get(_BASE)
async def list_subscriptions(
    request: Request,
    page: PageQuery,
) -> Response:
    q = request.query_params

    def listed(name: str) -> tuple[str, ...]:
        return tuple(s.strip() for v in q.getall(name, []) for s in v.split(",") if s.strip())

    page = await operations.list_subscriptions(domain(request), environment(request),
                                               operations.SubscriptionsQuery(
        limit=page.limit, after=page.after, before=page.before, customer_id=q.get("customerId"),
        plan_id=q.get("planId"), resource_id=q.get("resourceId"), statuses=listed("status"),
        pricing_types=listed("pricingType"), created=tuple(created_at_bounds(request))))
    return ok([subscription_json(d) for d in page.items],
              pagination={"next": page.next, "prev": page.prev})


@get(_BASE + "/{subscription_id:str}")
async def retrieve(request: Request, subscription_id: FromPath[str]) -> Response:
    return ok(subscription_json(await operations.get(domain(request), environment(request),
                                                     subscription_id)))


@patch(_BASE + "/{subscription_id:str}", opt=request_body(UpdateBody))
async def update(request: Request, subscription_id: FromPath[str]) -> Response:
    body = await decode_body(request, UpdateBody)
    _unsupported(body)
    q = operations.UpdateInput(
        plan_id=body.plan_id, billing_period=body.billing_period, addons=body.addons,
        charges=body.charges, unit_quantity=body.unit_quantity, coupon=body.applied_coupon,
        promotion_code=body.promotion_code,
        trial_end=parse_time(body.trial_end_date, "trialEndDate"),
        cancel_at=(UNSET if body.cancellation_date is UNSET
                   else parse_time(body.cancellation_date, "cancellationDate")),
        schedule_strategy=body.schedule_strategy, metadata=body.metadata,
        budget=_budget(body.budget))
    return ok(subscription_json(await operations.update(
        domain(request), environment(request), subscription_id, q)))


@post(_BASE + "/{subscription_id:str}/cancel", opt=request_body(CancelBody))
async def cancel(request: Request, subscription_id: FromPath[str]) -> Response:
    body = await decode_body(request, CancelBody)
    q = operations.CancelInput(revoke=body.cancellation_action == "REVOKE_ENTITLEMENTS",
                               time=body.cancellation_time,
                               end_date=parse_time(body.end_date, "endDate"))
    return ok(subscription_json(await operations.cancel(
        domain(request), environment(request), subscription_id, q)))


@delete(_BASE + "/{subscription_id:str}/future-update/schedule", status_code=200)
async def cancel_schedule(request: Request, subscription_id: FromPath[str]) -> Response:
    """Cancel the subscription's scheduled updates (a scheduled cancellation is undone
    with PATCH cancellationDate: null)."""
    return ok(subscription_json(await operations.cancel_schedule(
        domain(request), environment(request), subscription_id)))


@post(_BASE + "/{subscription_id:str}/migrate", opt=request_body(MigrateBody))
async def migrate(request: Request, subscription_id: FromPath[str]) -> Response:
    """Move to the latest published versions of the plan and add-ons."""
    body = await decode_body(request, MigrateBody)
    return ok(subscription_json(await operations.migrate(
        domain(request), environment(request), subscription_id,
        immediate=body.subscription_migration_time == "IMMEDIATE")))


@post(_BASE + "/{subscription_id:str}/transfer", opt=request_body(TransferBody))
async def transfer(request: Request, subscription_id: FromPath[str]) -> Response:
    """Move the subscription to another resource of the same customer."""
    body = await decode_body(request, TransferBody)
    return ok(subscription_json(await operations.transfer(
        domain(request), environment(request), subscription_id,
        body.destination_resource_id)))


ROUTES = [provision, list_subscriptions, retrieve, update, cancel, cancel_schedule, migrate,
          transfer]
