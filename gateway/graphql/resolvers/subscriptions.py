"""Subscriptions: provision, create, update, cancel, cancel scheduled updates, migrate,
transfer, read, list, the active ones. The GraphQL forms of the REST routes
(gateway/routes/subscriptions.py), decided by engine/domain/subscriptions/operations.py.

    provisionSubscriptionV2      operations.provision            -> ProvisionSubscriptionResult
    createSubscription           operations.provision            -> CustomerSubscription
    updateOneSubscription        operations.update
    cancelSubscription           operations.cancel
    cancelSchedule               operations.cancel_schedule      -> the subscription's id
    migrateSubscriptionToLatest  operations.migrate
    transferSubscription         operations.transfer_from
    getSubscription              operations.get
    subscriptions                operations.list_subscriptions   -> SubscriptionQueryConnection
    getActiveSubscriptions       catch_up.active_subscriptions (running: ACTIVE, IN_TRIAL)

A subscription answers whole (gateway.shapes.customers: its plan's and add-ons' published
versions as Stigg's Plan and Addon). Stigg's enums are the domain's here (BillingPeriod
MONTHLY/ANNUALLY, SubscriptionStatus, SubscriptionCancellationTime, …); what creditd does
not build (subscription-level entitlements, price overrides, minimum spend, checkout,
custom-price subscriptions) is a BadUserInput naming the field, never silently dropped;
billing-provider details (billingInformation, awaitPaymentConfirmation, billingCycleAnchor,
salesforceId, crmId) are accepted and change nothing, as over REST.

`subscriptions` pages in creation order, oldest first (`createdAt ASC`) or newest first
(`createdAt DESC`, Stigg's default); the cursors are those of the REST list. Its filter
takes `eq`/`in` on subscriptionId, customerId, resourceId, status, pricingType,
plan.refId, customer.customerId, resource.resourceId and bounds on createdAt.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

from graphql import GraphQLResolveInfo
from msgspec import UNSET

from engine.domain.context import require_customer
from engine.domain.errors import DomainError, bad_input
from engine.domain.subscriptions import catch_up, operations
from engine.domain.subscriptions.changes import Trial
from engine.domain.subscriptions.document import Subscription
from engine.domain.subscriptions.operations import AddonIn, ChargeIn, CouponIn
from engine.domain.values import time_in
from gateway.graphql.resolvers.common import context
from gateway.graphql.resolvers.entitlements import (
    credit_entitlement_json,
    entitlement_json,
    feature_entitlement_json,
)
from gateway.shapes.customers import customer_subscription_json, subscription_packages
from gateway.wire import amount_in

__all__ = ["MUTATIONS", "QUERIES", "entitlements_json", "provision_input", "renamed",
           "subscription_out"]

# Fields creditd does not build: refused when given (not null, not empty).
_UNSUPPORTED = ("entitlements", "subscriptionEntitlements", "priceOverrides", "minimumSpend",
                "checkoutOptions", "priceUnitAmount")


async def subscription_out(d: Any, env: str, doc: Subscription) -> dict[str, Any]:
    """The subscription as Stigg's whole CustomerSubscription."""
    return customer_subscription_json(doc, await subscription_packages(d, env, doc))


def entitlements_json(found: Any, customer_id: str, resource_id: str | None
                      ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A customer's entitlements (access.CustomerEntitlements) as (Entitlement list,
    EntitlementUnion list)."""
    return ([entitlement_json(f, customer_id, resource_id) for f in found.features],
            [feature_entitlement_json(f) for f in found.features]
            + [credit_entitlement_json(c) for c in found.credits])


@contextmanager
def renamed(**fields: str) -> Iterator[None]:
    """Refusals naming a field by its REST name (`id`, `before`) name it as the GraphQL
    input does (`subscriptionId`, `paging.after`)."""
    try:
        yield
    except DomainError as exc:
        if exc.field in fields:
            exc.field = fields[exc.field]
        raise


# -- inputs ----------------------------------------------------------------------------------

def _unsupported(input: dict[str, Any], prefix: str = "") -> None:
    for name in _UNSUPPORTED:
        if input.get(name) not in (None, []):
            raise bad_input("is not supported by creditd (define it on the plan instead)",
                            prefix + name)
    if input.get("isCustomPriceSubscription"):
        raise bad_input("custom-price subscriptions are not supported by creditd",
                        prefix + "isCustomPriceSubscription")


def _time(value: Any, field: str) -> int | None:
    if value is not None and not isinstance(value, str):
        raise bad_input("must be an ISO-8601 date-time", field)
    return time_in(value, field)


def _whole(value: Any, field: str) -> int | None:
    """A Float the domain takes as a whole number (quantities)."""
    if value is None:
        return None
    number = Decimal(value)
    if number != number.to_integral_value():
        raise bad_input("must be a whole number", field)
    return int(number)


def _metadata(value: Any, field: str) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                              for k, v in value.items()):
        raise bad_input("must be an object of string values", field)
    return value


def _addons(items: list[dict[str, Any]] | None, prefix: str) -> list[AddonIn] | None:
    if items is None:
        return None
    out = []
    for i, a in enumerate(items):
        quantity = 1 if a.get("quantity") is None else a["quantity"]
        if quantity < 1:
            raise bad_input("must be at least 1", f"{prefix}addons[{i}].quantity")
        out.append(AddonIn(id=a["addonId"], quantity=quantity))
    return out


def _charges(input: dict[str, Any], prefix: str) -> list[ChargeIn] | None:
    """`charges` ({id, quantity, type}) and `billableFeatures` ({featureId, quantity}, the
    older name of FEATURE charges) as the domain's charges."""
    charges, billable = input.get("charges"), input.get("billableFeatures")
    if charges is not None and billable is not None:
        raise bad_input("give charges or billableFeatures, not both", prefix + "charges")
    if billable is not None:
        return [ChargeIn(id=b["featureId"], quantity=b["quantity"], type="FEATURE")
                for b in billable]
    if charges is not None:
        return [ChargeIn(id=c["id"], quantity=c["quantity"], type=c["type"]) for c in charges]
    return None


def _coupon(input: dict[str, Any]) -> CouponIn | None:
    c = input.get("appliedCoupon")
    if c is not None:
        return CouponIn(coupon_id=c.get("couponId"), promotion_code=c.get("promotionCode"),
                        billing_coupon_id=c.get("billingCouponId"),
                        configuration=c.get("configuration"), discount=c.get("discount"))
    if input.get("promotionCode") is not None:
        return CouponIn(promotion_code=input["promotionCode"])
    return None


def _budget(value: dict[str, Any] | None, field: str) -> operations.Budget | None:
    if value is None:
        return None
    return operations.Budget(value["hasSoftLimit"],
                             amount_in(value["limit"], f"{field}.limit", allow_zero=True))


def _trial(input: dict[str, Any], prefix: str) -> Trial | None:
    """trialOverrideConfiguration, or SubscriptionInput's isTrial/trialEndBehavior, or
    skipTrial."""
    override = input.get("trialOverrideConfiguration")
    if override is not None:
        return Trial(override["isTrial"],
                     _time(override.get("trialEndDate"),
                           f"{prefix}trialOverrideConfiguration.trialEndDate"),
                     override.get("trialEndBehavior"))
    if input.get("isTrial") is not None:
        return Trial(input["isTrial"], None, input.get("trialEndBehavior"))
    if input.get("skipTrial"):
        return Trial(False)
    return None


def provision_input(input: dict[str, Any], customer_id: str, *,
                    prefix: str = "") -> operations.ProvisionInput:
    """ProvisionSubscriptionInput, SubscriptionInput or ProvisionCustomerSubscriptionInput
    (fields named under `prefix`) as the domain's ProvisionInput."""
    _unsupported(input, prefix)
    cancel_at = input.get("cancellationDate")
    field = "cancellationDate"
    if cancel_at is None and input.get("endDate") is not None:
        cancel_at, field = input["endDate"], "endDate"
    ident = input.get("subscriptionId") or input.get("refId")
    return operations.ProvisionInput(
        customer_id=customer_id, plan_id=input["planId"], id=ident,
        addons=_addons(input.get("addons"), prefix), charges=_charges(input, prefix),
        coupon=_coupon(input), billing_country_code=input.get("billingCountryCode"),
        billing_period=input.get("billingPeriod"), resource_id=input.get("resourceId"),
        start=_time(input.get("startDate"), prefix + "startDate"),
        cancel_at=_time(cancel_at, prefix + field), trial=_trial(input, prefix),
        unit_quantity=_whole(input.get("unitQuantity"), prefix + "unitQuantity"),
        metadata=_metadata(input.get("additionalMetaData"), prefix + "additionalMetaData"),
        budget=_budget(input.get("budget"), prefix + "budget"),
        billing_id=input.get("billingId"), paying_customer_id=input.get("payingCustomerId"),
        payment_collection_method=input.get("paymentCollectionMethod"))


def _subscription_id(input: dict[str, Any], *names: str) -> str:
    for name in names:
        if input.get(name):
            return input[name]
    raise bad_input("is required", names[0])


# -- resolvers -----------------------------------------------------------------------------

async def provision_subscription(_: Any, info: GraphQLResolveInfo, input: dict) -> dict:
    d, env = context(info)
    made = await operations.provision(d, env, provision_input(input, input["customerId"]))
    doc = made.subscription
    entitlements, v2 = entitlements_json(made.entitlements, doc.customer_id, doc.resource_id)
    return {"__typename": "ProvisionSubscriptionResult", "id": doc.id, "status": "SUCCESS",
            "isScheduled": doc.status == "NOT_STARTED", "checkoutUrl": None,
            "checkoutBillingId": None, "subscription": await subscription_out(d, env, doc),
            "entitlements": entitlements, "entitlementsV2": v2}


async def create_subscription(_: Any, info: GraphQLResolveInfo, subscription: dict) -> dict:
    d, env = context(info)
    made = await operations.provision(d, env, provision_input(subscription,
                                                              subscription["customerId"]))
    return await subscription_out(d, env, made.subscription)


async def update_subscription(_: Any, info: GraphQLResolveInfo, input: dict) -> dict:
    d, env = context(info)
    ident = _subscription_id(input, "subscriptionId", "refId")
    _unsupported(input)
    q = operations.UpdateInput(
        billing_period=input.get("billingPeriod"), addons=_addons(input.get("addons"), ""),
        charges=_charges(input, ""),
        unit_quantity=_whole(input.get("unitQuantity"), "unitQuantity"),
        coupon=_coupon({"appliedCoupon": input.get("appliedCoupon")}),
        promotion_code=input.get("promotionCode"),
        trial_end=_time(input.get("trialEndDate"), "trialEndDate"),
        # Absent leaves a scheduled cancellation alone; null undoes it.
        cancel_at=(UNSET if "cancellationDate" not in input
                   else _time(input["cancellationDate"], "cancellationDate")),
        schedule_strategy=input.get("scheduleStrategy"),
        metadata=_metadata(input.get("additionalMetaData"), "additionalMetaData"),
        budget=_budget(input.get("budget"), "budget"))
    with renamed(id="subscriptionId"):
        doc = await operations.update(d, env, ident, q)
    return await subscription_out(d, env, doc)


async def cancel_subscription(_: Any, info: GraphQLResolveInfo, input: dict) -> dict:
    d, env = context(info)
    q = operations.CancelInput(
        revoke=input.get("subscriptionCancellationAction") == "REVOKE_ENTITLEMENTS",
        time=input.get("subscriptionCancellationTime") or "IMMEDIATE",
        end_date=_time(input.get("endDate"), "endDate"))
    with renamed(id="subscriptionRefId"):
        doc = await operations.cancel(d, env, input["subscriptionRefId"], q)
    return await subscription_out(d, env, doc)


async def cancel_schedule(_: Any, info: GraphQLResolveInfo, input: dict) -> str:
    d, env = context(info)
    status = input.get("status")
    if status not in (None, "Scheduled"):
        raise bad_input("only Scheduled updates can be cancelled", "status")
    with renamed(id="subscriptionId"):
        doc = await operations.cancel_schedule(d, env, input["subscriptionId"])
    return doc.id


async def migrate_subscription(_: Any, info: GraphQLResolveInfo, input: dict) -> dict:
    d, env = context(info)
    when = input.get("subscriptionMigrationTime") or "IMMEDIATE"
    with renamed(id="subscriptionId"):
        doc = await operations.migrate(d, env, input["subscriptionId"],
                                       immediate=when == "IMMEDIATE")
    return await subscription_out(d, env, doc)


async def transfer_subscription(_: Any, info: GraphQLResolveInfo, input: dict) -> dict:
    d, env = context(info)
    return await subscription_out(d, env, await operations.transfer_from(
        d, env, input["customerId"], input["sourceResourceId"],
        input["destinationResourceId"]))


async def get_subscription(_: Any, info: GraphQLResolveInfo, input: dict) -> dict:
    d, env = context(info)
    with renamed(id="subscriptionId"):
        doc = await operations.get(d, env, input["subscriptionId"])
    return await subscription_out(d, env, doc)


async def get_active_subscriptions(_: Any, info: GraphQLResolveInfo, input: dict) -> list:
    """The customer's running subscriptions on `resourceId`, or on each of `resourceIds`,
    or (neither given) those without a resource."""
    d, env = context(info)
    customer_id = input["customerId"]
    await require_customer(d, env, customer_id, allow_archived=True)
    resources: list[str | None] = [input["resourceId"]] if input.get("resourceId") else []
    resources += [r for r in input.get("resourceIds") or () if r not in resources]
    out = []
    for resource in resources or [None]:
        for doc in await catch_up.active_subscriptions(d, env, customer_id, resource):
            out.append(await subscription_out(d, env, doc))
    return out


# -- the list ------------------------------------------------------------------------------

_CURSOR_END = "999999999999999999.~"  # after every cursor the store issues (createdAt.id)
_FILTERS = ("subscriptionId", "customerId", "resourceId", "status", "pricingType", "plan",
            "customer", "resource", "createdAt")


def _equal(value: dict[str, Any] | None, field: str) -> list[str]:
    """The values a {eq | in} comparison allows ([]: no condition)."""
    if value is None:
        return []
    unknown = set(value) - {"eq", "in"}
    if unknown:
        raise bad_input("only eq and in are supported", f"{field}.{sorted(unknown)[0]}")
    if "eq" in value and "in" in value:
        raise bad_input("give eq or in, not both", field)
    if value.get("eq") is not None:
        return [value["eq"]]
    if "in" in value:
        if not value["in"]:
            raise bad_input("must not be empty", f"{field}.in")
        return list(value["in"])
    return []


def _one(values: list[str], field: str) -> str | None:
    if len(values) > 1:
        raise bad_input("takes one value (eq)", field)
    return values[0] if values else None


def _nested(value: dict[str, Any] | None, key: str, field: str) -> list[str]:
    if value is None:
        return []
    unknown = set(value) - {key}
    if unknown:
        raise bad_input(f"only {key} is supported", f"{field}.{sorted(unknown)[0]}")
    return _equal(value.get(key), f"{field}.{key}")


def _created(value: dict[str, Any] | None) -> tuple[tuple[str, int], ...]:
    if value is None:
        return ()
    ops = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
    unknown = set(value) - set(ops)
    if unknown:
        raise bad_input("only gt, gte, lt and lte are supported",
                        f"filter.createdAt.{sorted(unknown)[0]}")
    return tuple((ops[k], _time(v, f"filter.createdAt.{k}")) for k, v in value.items()
                 if v is not None)  # type: ignore[misc]


def _query(filter: dict[str, Any] | None, limit: int, after: str | None,
           before: str | None) -> operations.SubscriptionsQuery:
    f = filter or {}
    unknown = set(f) - set(_FILTERS)
    if unknown:
        raise bad_input("is not a filter creditd supports", f"filter.{sorted(unknown)[0]}")
    ids = _equal(f.get("subscriptionId"), "filter.subscriptionId")
    if ids:
        raise bad_input("use getSubscription to read one subscription",
                        "filter.subscriptionId")
    customers = (_equal(f.get("customerId"), "filter.customerId")
                 + _nested(f.get("customer"), "customerId", "filter.customer"))
    resources = (_equal(f.get("resourceId"), "filter.resourceId")
                 + _nested(f.get("resource"), "resourceId", "filter.resource"))
    plans = _nested(f.get("plan"), "refId", "filter.plan")
    return operations.SubscriptionsQuery(
        limit=limit, after=after, before=before,
        customer_id=_one(customers, "filter.customerId"),
        resource_id=_one(resources, "filter.resourceId"),
        plan_id=_one(plans, "filter.plan.refId"),
        statuses=tuple(_equal(f.get("status"), "filter.status")),
        pricing_types=tuple(_equal(f.get("pricingType"), "filter.pricingType")),
        created=_created(f.get("createdAt")))


def _cursor(doc: Subscription) -> str:
    return f"{doc.created_at}.{doc.id}"


async def list_subscriptions(_: Any, info: GraphQLResolveInfo, filter: Any = None,
                             paging: Any = None, sorting: Any = None) -> dict:
    d, env = context(info)
    descending = False
    for i, s in enumerate(sorting or ()):
        if s["field"] != "createdAt" or i > 0:
            raise bad_input("creditd sorts subscriptions by createdAt only",
                            f"sorting[{i}].field")
        descending = s["direction"] == "DESC"
    paging = paging or {}
    if paging.get("first") is not None and paging.get("last") is not None:
        raise bad_input("give first or last, not both", "paging.last")
    if paging.get("after") is not None and paging.get("before") is not None:
        raise bad_input("give after or before, not both", "paging.before")
    size = paging.get("last") if paging.get("last") is not None else paging.get("first")
    size = 10 if size is None else size
    if not 1 <= size <= 100:
        raise bad_input("must be from 1 to 100", "paging.first")
    given_after, given_before = paging.get("after"), paging.get("before")
    from_end = paging.get("last") is not None and given_after is None and given_before is None
    # The store pages oldest first (`after`: the next newer ones; `before`: the older
    # ones just before): newest first is the same walk the other way round.
    if descending:
        after = given_before
        before = given_after or (None if given_before or from_end else _CURSOR_END)
    else:
        after, before = given_after, given_before or (_CURSOR_END if from_end else None)
    # The store's cursors are named by where they came from in the request.
    cursors = {"after": "paging.before", "before": "paging.after"} if descending else {
        "after": "paging.after", "before": "paging.before"}
    with renamed(**cursors, status="filter.status", pricingType="filter.pricingType"):
        page = await operations.list_subscriptions(d, env,
                                                   _query(filter, size, after, before))
    items = list(reversed(page.items)) if descending else list(page.items)
    # What lies beyond the page in the store's order: `next` after a walk forward
    # (`after` or none), `prev` after a walk back (`before`).
    if before is not None:
        older, newer = page.prev is not None, True
    else:
        older, newer = after is not None, page.next is not None
    if before == _CURSOR_END:
        newer = False  # the newest page
    if before is None and after is None:
        older = False  # the oldest page
    more_after, more_before = (older, newer) if descending else (newer, older)
    edges = [{"__typename": "SubscriptionQueryEdge", "cursor": _cursor(doc),
              "node": await subscription_out(d, env, doc)} for doc in items]

    async def total_count(_info: Any) -> int:
        count, cursor = 0, None
        while True:
            p = await operations.list_subscriptions(d, env, _query(filter, 100, cursor, None))
            count += len(p.items)
            if p.next is None:
                return count
            cursor = p.next

    return {
        "__typename": "SubscriptionQueryConnection",
        "edges": edges,
        "pageInfo": {"__typename": "PageInfo",
                     "startCursor": edges[0]["cursor"] if edges else None,
                     "endCursor": edges[-1]["cursor"] if edges else None,
                     "hasNextPage": more_after, "hasPreviousPage": more_before},
        "totalCount": total_count,
    }


QUERIES = {"getSubscription": get_subscription, "subscriptions": list_subscriptions,
           "getActiveSubscriptions": get_active_subscriptions}
MUTATIONS = {"provisionSubscriptionV2": provision_subscription,
             "createSubscription": create_subscription,
             "updateOneSubscription": update_subscription,
             "cancelSubscription": cancel_subscription, "cancelSchedule": cancel_schedule,
             "migrateSubscriptionToLatest": migrate_subscription,
             "transferSubscription": transfer_subscription}
