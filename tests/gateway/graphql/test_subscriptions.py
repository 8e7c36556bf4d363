"""Subscriptions through Stigg's GraphQL documents (stigg-api-client-v2), on a server whose
clock stands still unless a test moves it: ProvisionSubscription, CreateSubscription,
UpdateSubscription, CancelSubscription, CancelSubscriptionUpdates,
MigrateSubscriptionToLatest, TransferSubscription, GetSubscription, GetSubscriptions,
GetActiveSubscriptions(List) — the catalog made through REST."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from tests.gateway.graphql.wire import code, data, gql
from tests.gateway.test_subscriptions_api import Catalog

SERVER_ENV = {"CREDITD_CLOCK": "manual:2026-01-01T00:00:00Z"}


def _error(answer: dict[str, Any]) -> tuple[str, str | None]:
    [error] = answer["errors"]
    assert answer["data"] is None
    return error["extensions"]["code"], error["extensions"].get("field")


def _get(server: Any, ident: str) -> dict[str, Any]:
    return data(gql(server, "GetSubscription", {"input": {"subscriptionId": ident}}))[
        "getSubscription"]


def _balance(server: Any, customer: str, currency: str) -> Any:
    summary = data(gql(server, "GetCreditBalance", {"input": {
        "customerId": customer, "currencyId": currency}}))["creditBalanceSummary"]
    return sum(b["currentBalance"] for b in summary["balances"])


def test_provision_update_cancel_and_read_back(server: Any, client: Any, uid: Any) -> None:
    catalog = Catalog(client, uid)
    addon = catalog.addon(credits=100, max_quantity=5)
    plan = catalog.plan(credits=1000, price="20", annual_price="200", addons=[addon])
    customer = catalog.customer()
    ident = uid("sub")
    made = data(gql(server, "ProvisionSubscription", {"input": {
        "customerId": customer, "planId": plan, "subscriptionId": ident,
        "billingPeriod": "MONTHLY", "addons": [{"addonId": addon, "quantity": 2}],
        "additionalMetaData": {"team": "a"}}}))["provisionSubscription"]
    assert (made["status"], made["checkoutUrl"]) == ("SUCCESS", None)
    sub = made["subscription"]
    assert (sub["subscriptionId"], sub["refId"], sub["status"], sub["pricingType"]) == (
        ident, ident, "ACTIVE", "PAID")
    assert sub["additionalMetaData"] == {"team": "a"}
    assert sub["currentBillingPeriodEnd"] == "2026-02-01T00:00:00.000Z"
    assert [(a["addon"]["refId"], a["quantity"]) for a in sub["addons"]] == [(addon, 2)]
    [credit] = [e for e in made["entitlementsV2"] if e["__typename"] == "CreditEntitlement"]
    assert credit["usageLimit"] - credit["currentUsage"] == 1200
    assert _balance(server, customer, catalog.currency) == 1200

    got = _get(server, ident)
    assert got["startDate"] == "2026-01-01T00:00:00.000Z"
    assert (got["plan"]["refId"], got["plan"]["displayName"], got["plan"]["product"]["refId"]
            ) == (plan, f"Plan {plan}", catalog.product)
    assert [p["price"]["price"] for p in got["prices"]] == [{"amount": 20, "currency": "USD"}]
    [held] = got["addons"]
    assert (held["quantity"], held["addon"]["refId"], held["addon"]["displayName"]) == (
        2, addon, "More tokens")
    assert got["futureUpdates"] == [] and got["paymentCollection"] == "NOT_REQUIRED"

    # Add-ons now: 4 of them, and their credits with them.
    now = data(gql(server, "UpdateSubscription", {"input": {
        "subscriptionId": ident, "addons": [{"addonId": addon, "quantity": 4}]}}))[
        "updateSubscription"]
    assert [(a["addon"]["refId"], a["quantity"]) for a in now["addons"]] == [(addon, 4)]
    assert [a["quantity"] for a in _get(server, ident)["addons"]] == [4]
    assert _balance(server, customer, catalog.currency) == 1400
    # The billing period at the period's end: a scheduled update, then cancelled.
    data(gql(server, "UpdateSubscription", {"input": {
        "subscriptionId": ident, "billingPeriod": "ANNUALLY",
        "scheduleStrategy": "END_OF_BILLING_PERIOD"}}))
    [future] = _get(server, ident)["futureUpdates"]
    assert future == {
        "subscriptionScheduleType": "BillingPeriod", "scheduleStatus": "Scheduled",
        "scheduledExecutionTime": "2026-02-01T00:00:00.000Z", "targetPackage": None,
        "scheduleVariables": {"__typename": "BillingPeriodChangeVariables",
                              "billingPeriod": "ANNUALLY"}}
    assert data(gql(server, "CancelSubscriptionUpdates", {"input": {
        "subscriptionId": ident}})) == {"cancelSchedule": ident}
    assert _get(server, ident)["futureUpdates"] == []
    assert _error(gql(server, "CancelSubscriptionUpdates", {"input": {
        "subscriptionId": ident}})) == ("BadUserInput", "subscriptionId")

    # Cancel at the period's end: still running until then; then at once.
    ending = data(gql(server, "CancelSubscription", {"input": {
        "subscriptionRefId": ident,
        "subscriptionCancellationTime": "END_OF_BILLING_PERIOD"}}))["cancelSubscription"]
    assert (ending["status"], ending["cancellationDate"], ending["effectiveEndDate"]) == (
        "ACTIVE", "2026-02-01T00:00:00.000Z", "2026-02-01T00:00:00.000Z")
    gone = data(gql(server, "CancelSubscription", {"input": {
        "subscriptionRefId": ident, "subscriptionCancellationTime": "IMMEDIATE",
        "subscriptionCancellationAction": "REVOKE_ENTITLEMENTS"}}))["cancelSubscription"]
    assert gone["status"] == "CANCELED" and _get(server, ident)["status"] == "CANCELED"
    assert _balance(server, customer, catalog.currency) == 0  # revoked
    assert data(gql(server, "GetActiveSubscriptions", {"input": {
        "customerId": customer}})) == {"getActiveSubscriptions": []}


def test_refusals_name_their_field_and_code(server: Any, client: Any, uid: Any) -> None:
    catalog = Catalog(client, uid)
    addon = catalog.addon(credits=100, max_quantity=5)
    plan = catalog.plan(credits=10, addons=[addon])
    customer = catalog.customer()

    def provision(**input: Any) -> tuple[str, str | None]:
        return _error(gql(server, "ProvisionSubscription", {"input": {
            "customerId": customer, "planId": plan, **input}}))

    assert provision(planId="no-plan") == ("PlanNotFound", "planId")
    assert provision(customerId="nobody") == ("CustomerNotFound", "customerId")
    assert provision(addons=[{"addonId": addon, "quantity": 9}]) == (
        "BadUserInput", "addons[0].quantity")
    assert provision(addons=[{"addonId": "nope"}]) == ("AddonNotFound", "addons[0].id")
    assert provision(unitQuantity=1.5) == ("BadUserInput", "unitQuantity")
    assert provision(priceOverrides=[{"featureId": "f"}]) == ("BadUserInput", "priceOverrides")
    assert provision(appliedCoupon={"couponId": "nope"}) == (
        "CouponNotFound", "appliedCoupon.couponId")
    assert provision(startDate="yesterday") == ("BadUserInput", "startDate")
    wrong = gql(server, "ProvisionSubscription", {"input": {
        "customerId": customer, "planId": plan, "billingPeriod": "WEEKLY"}})
    assert code(wrong) == "BadUserInput" and "billingPeriod" in wrong["errors"][0]["message"]
    # Nothing was made.
    assert data(gql(server, "GetActiveSubscriptions", {"input": {
        "customerId": customer}})) == {"getActiveSubscriptions": []}

    assert _error(gql(server, "GetSubscription", {"input": {"subscriptionId": "nope"}})) == (
        "SubscriptionNotFound", "subscriptionId")
    assert code(gql(server, "UpdateSubscription", {"input": {
        "subscriptionId": "nope", "unitQuantity": 2}})) == "SubscriptionNotFound"
    assert code(gql(server, "CancelSubscription", {"input": {
        "subscriptionRefId": "nope"}})) == "SubscriptionNotFound"
    assert code(gql(server, "MigrateSubscriptionToLatest", {"input": {
        "subscriptionId": "nope"}})) == "SubscriptionNotFound"
    assert code(gql(server, "GetActiveSubscriptions", {"input": {
        "customerId": "nobody"}})) == "CustomerNotFound"
    sub = data(gql(server, "ProvisionSubscription", {"input": {
        "customerId": customer, "planId": plan}}))["provisionSubscription"]["subscription"]
    ident = sub["subscriptionId"]
    assert _error(gql(server, "CancelSubscription", {"input": {
        "subscriptionRefId": ident, "subscriptionCancellationTime": "SPECIFIC_DATE"}})) == (
        "BadUserInput", "endDate")
    bad_time = gql(server, "CancelSubscription", {"input": {
        "subscriptionRefId": ident, "subscriptionCancellationTime": "TOMORROW"}})
    assert code(bad_time) == "BadUserInput"
    assert "subscriptionCancellationTime" in bad_time["errors"][0]["message"]
    assert _error(gql(server, "UpdateSubscription", {"input": {
        "subscriptionId": ident, "addons": [{"addonId": addon, "quantity": 6}]}})) == (
        "BadUserInput", "addons[0].quantity")
    assert _error(gql(server, "UpdateSubscription", {"input": {
        "subscriptionId": ident, "subscriptionEntitlements": [
            {"featureId": "f"}]}})) == ("BadUserInput", "subscriptionEntitlements")
    assert _error(gql(server, "UpdateSubscription", {"input": {}})) == (
        "BadUserInput", "subscriptionId")
    assert _get(server, ident)["addons"] == [] and _get(server, ident)["status"] == "ACTIVE"


def test_create_migrate_and_transfer(server: Any, client: Any, uid: Any) -> None:
    catalog = Catalog(client, uid)
    plan = catalog.plan(credits=10)
    customer = catalog.customer()
    ident = uid("sub")
    created = data(gql(server, "CreateSubscription", {"input": {
        "customerId": customer, "planId": plan, "subscriptionId": ident,
        "resourceId": "site-1"}}))["createSubscription"]
    assert (created["subscriptionId"], created["status"], created["resource"]) == (
        ident, "ACTIVE", {"resourceId": "site-1"})
    assert created["plan"] == {"id": plan, "refId": plan}
    assert created["customer"] == {"id": customer, "refId": customer}

    # Version 2 of the plan, for new customers: the subscription stays on version 1 until
    # it is migrated.
    c = catalog.client
    c.v1.plans.create_draft(plan)
    [ent] = c.v1.plans.entitlements.list(plan).data
    c.v1.plans.entitlements.update(ent.id, plan_id=plan, type="CREDIT", amount=70)
    c.v1.plans.publish(plan, migration_type="NEW_CUSTOMERS")
    assert _get(server, ident)["plan"]["versionNumber"] == 1
    moved = data(gql(server, "MigrateSubscriptionToLatest", {"input": {
        "subscriptionId": ident}}))
    assert moved == {"migrateSubscriptionToLatest": {"subscriptionId": ident}}
    plan_now = _get(server, ident)["plan"]
    assert plan_now["versionNumber"] == 2
    assert [e["amount"] for e in plan_now["packageEntitlements"]] == [70]

    # Transfer from one resource to another: the active ones follow.
    moved = data(gql(server, "TransferSubscription", {"input": {
        "customerId": customer, "sourceResourceId": "site-1",
        "destinationResourceId": "site-2"}}))["transferSubscription"]
    assert (moved["subscriptionId"], moved["resource"]) == (ident, {"resourceId": "site-2"})

    def active(**input: Any) -> list[str]:
        found = data(gql(server, "GetActiveSubscriptions", {"input": {
            "customerId": customer, **input}}))["getActiveSubscriptions"]
        return [s["subscriptionId"] for s in found]

    assert active(resourceId="site-2") == [ident]
    assert active(resourceId="site-1") == [] and active() == []
    listed = data(gql(server, "GetActiveSubscriptionsList", {"input": {
        "customerId": customer, "resourceIds": ["site-1", "site-2"]}}))[
        "getActiveSubscriptions"]
    [one] = listed
    assert (one["subscriptionId"], one["plan"]["planId"], one["resource"]) == (
        ident, plan, {"resourceId": "site-2"})
    assert one["customer"] == {"customerId": customer, "email": None}
    assert one["billingPeriod"] == "MONTHLY"
    assert [p["price"]["price"] for p in one["prices"]] == [{"amount": 20, "currency": "USD"}]
    assert _error(gql(server, "TransferSubscription", {"input": {
        "customerId": customer, "sourceResourceId": "site-1",
        "destinationResourceId": "site-3"}})) == ("SubscriptionNotFound", "sourceResourceId")
    assert code(gql(server, "TransferSubscription", {"input": {
        "customerId": "nobody", "sourceResourceId": "site-1",
        "destinationResourceId": "site-3"}})) == "CustomerNotFound"


def test_list_pages_both_ways_and_filters(server: Any, client: Any, clock: Any,
                                          uid: Any) -> None:
    catalog = Catalog(client, uid)
    plan = catalog.plan(credits=0)
    customers = [catalog.customer() for _ in range(3)]
    prefix = uid("sub")
    ids = [f"{prefix}-{i}" for i in range(3)]
    for customer, ident in zip(customers, ids, strict=True):
        data(gql(server, "ProvisionSubscription", {"input": {
            "customerId": customer, "planId": plan, "subscriptionId": ident}}))
        clock.move(by=timedelta(seconds=1))
    mine = {"plan": {"refId": {"eq": plan}}}

    def page(**variables: Any) -> tuple[list[str], dict[str, Any]]:
        found = data(gql(server, "GetSubscriptions", {"filter": mine, **variables}))[
            "subscriptions"]
        return [e["node"]["subscriptionId"] for e in found["edges"]], found["pageInfo"]

    oldest = [{"field": "createdAt", "direction": "ASC"}]
    first, info = page(paging={"first": 2}, sorting=oldest)
    assert first == ids[:2] and (info["hasNextPage"], info["hasPreviousPage"]) == (True, False)
    rest, info = page(paging={"first": 2, "after": info["endCursor"]}, sorting=oldest)
    assert rest == ids[2:] and (info["hasNextPage"], info["hasPreviousPage"]) == (False, True)
    # Stigg's default order: newest first.
    first, info = page(paging={"first": 2})
    assert first == ids[:0:-1] and info["hasNextPage"] is True
    rest, info = page(paging={"first": 2, "after": info["endCursor"]})
    assert rest == ids[:1] and info["hasNextPage"] is False
    # A page of nodes as the client asks for them.
    found = data(gql(server, "GetSubscriptions", {"filter": {
        "customerId": {"eq": customers[1]}}}))["subscriptions"]
    [edge] = found["edges"]
    assert edge["node"] == {
        "subscriptionId": ids[1], "status": "ACTIVE", "pricingType": "PAID",
        "startDate": "2026-01-01T00:00:01.000Z",
        "currentBillingPeriodEnd": "2026-02-01T00:00:01.000Z",
        "customer": {"customerId": customers[1]}, "payingCustomer": None, "resource": None,
        "plan": {"planId": plan, "displayName": f"Plan {plan}"}, "addons": [],
        "trialConfiguration": None, "trialEndDate": None}

    data(gql(server, "CancelSubscription", {"input": {"subscriptionRefId": ids[0]}}))
    canceled, _ = page(filter={**mine, "status": {"eq": "CANCELED"}})
    assert canceled == [ids[0]]
    running, _ = page(filter={**mine, "status": {"in": ["ACTIVE", "IN_TRIAL"]}},
                      sorting=oldest)
    assert running == ids[1:]
    assert _error(gql(server, "GetSubscriptions", {"filter": {"billingId": {"eq": "x"}}})) \
        == ("BadUserInput", "filter.billingId")
    assert _error(gql(server, "GetSubscriptions", {"filter": {"customerId": {
        "like": "x%"}}})) == ("BadUserInput", "filter.customerId.like")
    assert _error(gql(server, "GetSubscriptions", {"paging": {"first": 1, "after": "junk"}})) \
        == ("BadUserInput", "paging.after")
    assert _error(gql(server, "GetSubscriptions", {"sorting": [
        {"field": "status", "direction": "ASC"}]})) == ("BadUserInput", "sorting[0].field")
