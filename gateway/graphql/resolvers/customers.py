"""Customers: provision (with a first subscription), read, update, archive, unarchive. The
GraphQL forms of the REST routes (gateway/routes/customers.py), decided by
engine/domain/customers.py.

    provisionCustomer    customers.provision (operations.provision_customer
                         with `subscriptionParams`)               -> ProvisionedCustomer
    getCustomerByRefId   customers.get                            -> Customer
    updateOneCustomer    customers.update                         -> Customer
    archiveCustomer      customers.archive(archived=True)         -> Customer
    unarchiveCustomer    customers.archive(archived=False)        -> Customer

A Customer answers whole: its profile, running subscriptions (whole, as
resolvers.subscriptions answers them), trials taken and the products it may still trial,
its coupon and promotional entitlements. `id`, `refId` and `customerId` are all the
customer's id. `customerId` (or `refId`) names the customer; a provisioned customer that
exists already is DuplicatedEntityNotAllowed, as over REST.

`subscriptionParams` is checked whole with the customer by the domain
(operations.provision_customer: plan, billing period, add-ons, quantities, coupon, trial,
dates, id) before either is written, so a refused subscription leaves no customer; without
it no subscription is made (SKIPPED_SUBSCRIPTION_CREATION: creditd has no default plan to
fall back on). Billing-provider fields creditd has no place for (awsMarketplaceCustomerId,
crmId, salesforceId, most of billingInformation) are a BadUserInput naming them when set.
"""

from __future__ import annotations

from typing import Any

from graphql import GraphQLResolveInfo

from engine.domain import customers, packages
from engine.domain.errors import DomainError, bad_input
from engine.domain.paywall import customer_view
from engine.domain.promotions import PromotionsQuery, list_promotions
from engine.domain.stored import Customer, unset_none
from engine.domain.subscriptions import catch_up, operations
from gateway.graphql.resolvers.common import context
from gateway.graphql.resolvers.subscriptions import (
    entitlements_json,
    provision_input,
    renamed,
    subscription_out,
)
from gateway.shapes.catalog import coupon_json, promotional_entitlement_json
from gateway.shapes.customers import customer_json

__all__ = ["MUTATIONS", "QUERIES", "customer_out"]

_PRODUCTS_SHOWN = 100  # eligibleForTrial: the environment's first products
_PROMOTIONS_SHOWN = 1000
_UNSUPPORTED = ("awsMarketplaceCustomerId", "crmId", "salesforceId")
_BILLING_INFO = {"currency": "billing_currency", "language": "language",
                 "timezone": "timezone"}


async def customer_out(d: Any, env: str, customer: Customer) -> dict[str, Any]:
    """The customer as Stigg's whole Customer."""
    found = await packages.list_products(d.documents, env, packages.ProductsQuery(
        limit=_PRODUCTS_SHOWN, statuses=("PUBLISHED",)))
    products = {p.id: p for p in found.items}
    view = await customer_view(d, env, customer, None, products)
    running = [s for s in await catch_up.customer_subscriptions(d, env, customer.id)
               if s.status in catch_up.RUNNING]
    coupon = None
    coupon_id = unset_none(customer.coupon_id)
    if coupon_id:
        doc = await d.documents.get("coupons", env, coupon_id)
        coupon = None if doc is None else coupon_json(doc)
    promotions, _, _ = await list_promotions(d, env, PromotionsQuery(
        customer_id=customer.id, limit=_PROMOTIONS_SHOWN))
    now = d.now_ms()
    shown = [promotional_entitlement_json(
        p, await d.documents.get("features", env, p.feature_id), now=now) for p in promotions]
    out, _ = customer_json(view, subscriptions=[await subscription_out(d, env, s)
                                                for s in running],
                           coupon=coupon, promotional_entitlements=shown)
    return out


def _customer_id(input: dict[str, Any]) -> str:
    ident = input.get("customerId") or input.get("refId")
    if not ident:
        raise bad_input("is required", "customerId")
    return ident


def _fields(input: dict[str, Any]) -> dict[str, Any]:
    """The profile fields given (absent ones left out; by the domain's attribute names)."""
    for name in _UNSUPPORTED:
        if input.get(name) is not None:
            raise bad_input("is not kept by creditd", name)
    out: dict[str, Any] = {}
    for wire, attr in (("name", "name"), ("email", "email"), ("billingId", "billing_id"),
                       ("couponRefId", "coupon_id")):
        if wire in input:
            out[attr] = input[wire]
    if "additionalMetaData" in input:
        metadata = input["additionalMetaData"]
        if metadata is not None and (not isinstance(metadata, dict) or not all(
                isinstance(v, str) for v in metadata.values())):
            raise bad_input("must be an object of string values", "additionalMetaData")
        out["metadata"] = metadata
    info = input.get("billingInformation")
    for name, value in (info or {}).items():
        if value is None:
            continue
        if name not in _BILLING_INFO:
            raise bad_input("is not kept by creditd", f"billingInformation.{name}")
        out[_BILLING_INFO[name]] = value.lower() if name == "currency" else value
    return out


def _subscription_field(field: str) -> str:
    """A field of the domain's subscription request as ProvisionCustomerInput names it."""
    name = field.removeprefix(operations.SUBSCRIPTION_FIELD)
    return "subscriptionParams." + ("subscriptionId" if name == "id" else name)


async def provision_customer(_: Any, info: GraphQLResolveInfo, input: dict) -> dict:
    d, env = context(info)
    customer_id = _customer_id(input)
    fields = _fields(input)
    params = input.get("subscriptionParams")
    made = None
    try:
        if params is None:
            customer = await customers.provision(d, env, customer_id, fields)
        else:
            wanted = provision_input(params, customer_id, prefix="subscriptionParams.")
            customer, made = await operations.provision_customer(d, env, customer_id, fields,
                                                                 wanted)
    except DomainError as exc:
        if exc.field == "id":
            exc.field = "customerId"
        elif exc.field and exc.field.startswith(operations.SUBSCRIPTION_FIELD):
            exc.field = _subscription_field(exc.field)
        raise
    subscription = entitlements = v2 = None
    if made is not None:
        doc = made.subscription
        subscription = await subscription_out(d, env, doc)
        entitlements, v2 = entitlements_json(made.entitlements, customer_id, doc.resource_id)
    strategy = "REQUESTED_PLAN" if made is not None else "SKIPPED_SUBSCRIPTION_CREATION"
    return {"__typename": "ProvisionedCustomer",
            "customer": await customer_out(d, env, customer),
            "subscriptionDecisionStrategy": strategy,
            "subscriptionStrategyDecision": strategy,
            "subscription": subscription, "entitlements": entitlements,
            "entitlementsV2": v2}


async def get_customer(_: Any, info: GraphQLResolveInfo, input: dict) -> dict:
    d, env = context(info)
    with renamed(id="customerId"):
        customer = await customers.get(d, env, input["customerId"])
    return await customer_out(d, env, customer)


async def update_customer(_: Any, info: GraphQLResolveInfo, input: dict) -> dict:
    d, env = context(info)
    customer_id = _customer_id(input)
    with renamed(id="customerId"):
        customer = await customers.update(d, env, customer_id, _fields(input))
    return await customer_out(d, env, customer)


async def _archive(info: GraphQLResolveInfo, customer_id: str, archived: bool) -> dict:
    d, env = context(info)
    with renamed(id="customerId"):
        customer = await customers.archive(d, env, customer_id, archived)
    return await customer_out(d, env, customer)


async def archive_customer(_: Any, info: GraphQLResolveInfo, input: dict) -> dict:
    return await _archive(info, input["customerId"], True)


async def unarchive_customer(_: Any, info: GraphQLResolveInfo, input: dict) -> dict:
    return await _archive(info, input["customerId"], False)


QUERIES = {"getCustomerByRefId": get_customer}
MUTATIONS = {"provisionCustomer": provision_customer, "updateOneCustomer": update_customer,
             "archiveCustomer": archive_customer, "unarchiveCustomer": unarchive_customer}
