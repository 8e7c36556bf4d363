"""Customers through Stigg's GraphQL documents (stigg-api-client-v2): ProvisionCustomer
(with a first subscription), GetCustomerById, UpdateCustomer, ArchiveCustomer,
UnarchiveCustomer — the catalog, coupons and promotions made through REST."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from tests.gateway.graphql.wire import code, data, gql
from tests.gateway.test_subscriptions_api import Catalog


def _error(answer: dict[str, Any]) -> tuple[str, str | None]:
    [error] = answer["errors"]
    return error["extensions"]["code"], error["extensions"].get("field")


def test_provision_with_a_subscription_and_read_it_back(server: Any, client: Any,
                                                        uid: Any) -> None:
    catalog = Catalog(client, uid)
    addon = catalog.addon(credits=100, max_quantity=5)
    plan = catalog.plan(credits=1000, price="20", addons=[addon])
    coupon = uid("coupon")
    client.v1.coupons.create(id=coupon, name="Ten", percent_off=10, amounts_off=None,
                             description=None, duration_in_months=None, metadata=None)
    customer_id = uid("cust")
    made = data(gql(server, "ProvisionCustomer", {"input": {
        "customerId": customer_id, "name": "Acme", "email": "ops@acme.test",
        "additionalMetaData": {"tier": "gold"}, "couponRefId": coupon,
        "subscriptionParams": {"planId": plan, "billingPeriod": "MONTHLY",
                               "addons": [{"addonId": addon, "quantity": 2}]}}}))[
        "provisionCustomer"]
    assert made["subscriptionDecisionStrategy"] == "REQUESTED_PLAN"
    customer = made["customer"]
    assert (customer["id"], customer["refId"], customer["customerId"]) == (
        customer_id, customer_id, customer_id)
    assert (customer["name"], customer["email"], customer["additionalMetaData"]) == (
        "Acme", "ops@acme.test", {"tier": "gold"})
    sub = made["subscription"]
    assert (sub["status"], sub["plan"]["refId"], sub["customer"]["refId"]) == (
        "ACTIVE", plan, customer_id)
    assert [(a["addon"]["refId"], a["quantity"]) for a in sub["addons"]] == [(addon, 2)]
    # The entitlements answered are those the subscription grants: 1000 + 2 x 100 credits.
    [credit] = [e for e in made["entitlementsV2"] if e["__typename"] == "CreditEntitlement"]
    assert credit["usageLimit"] - credit["currentUsage"] == 1200
    assert credit["currency"]["currencyId"] == catalog.currency

    # A promotion granted through REST shows on the customer.
    feature = uid("sso")
    client.v1.features.create_feature(id=feature, display_name="SSO", feature_type="BOOLEAN")
    client.v1.customers.promotional_entitlements.create(customer_id, promotional_entitlements=[{
        "feature_id": feature, "period": "1 month", "custom_end_date": None,
        "enum_values": None, "has_soft_limit": None, "has_unlimited_usage": None,
        "is_visible": None, "monthly_reset_period_configuration": None, "reset_period": None,
        "usage_limit": None, "weekly_reset_period_configuration": None,
        "yearly_reset_period_configuration": None}])

    got = data(gql(server, "GetCustomerById", {"input": {"customerId": customer_id}}))[
        "getCustomerByRefId"]
    assert (got["customerId"], got["name"], got["email"]) == (customer_id, "Acme",
                                                               "ops@acme.test")
    assert got["hasActiveSubscription"] is True and got["hasPaymentMethod"] is False
    assert got["trialedPlans"] == []
    assert {"productId": catalog.product, "productRefId": catalog.product,
            "eligible": True} in got["eligibleForTrial"]
    assert (got["coupon"]["refId"], got["coupon"]["percentOff"], got["coupon"]["type"]) == (
        coupon, 10, "PERCENTAGE")
    [promo] = got["promotionalEntitlements"]
    assert (promo["featureId"], promo["status"], promo["feature"]["refId"]) == (
        feature, "Active", feature)
    [s] = got["subscriptions"]
    assert (s["subscriptionId"], s["status"], s["pricingType"]) == (sub["subscriptionId"],
                                                                   "ACTIVE", "PAID")
    # The plan whole, as the paywall shows it: its product, prices, compatible add-on.
    assert (s["plan"]["refId"], s["plan"]["versionNumber"], s["plan"]["product"]["refId"]) == (
        plan, 1, catalog.product)
    assert [a["refId"] for a in s["plan"]["compatibleAddons"]] == [addon]
    [price] = s["prices"]
    assert (price["price"]["billingPeriod"], price["price"]["price"]) == (
        "MONTHLY", {"amount": 20, "currency": "USD"})
    [held] = s["addons"]
    assert (held["quantity"], held["addon"]["refId"], held["addon"]["maxQuantity"]) == (
        2, addon, 5)
    [credits] = held["addon"]["packageEntitlements"]
    assert (credits["__typename"], credits["amount"]) == ("PackageCreditEntitlement", 100)
    assert s["futureUpdates"] == [] and s["trialConfiguration"] is None

    # Without subscriptionParams no subscription is made.
    bare = uid("cust")
    alone = data(gql(server, "ProvisionCustomer", {"input": {"customerId": bare}}))[
        "provisionCustomer"]
    assert alone["subscriptionDecisionStrategy"] == "SKIPPED_SUBSCRIPTION_CREATION"
    assert alone["subscription"] is None and alone["customer"]["name"] is None
    again = data(gql(server, "GetCustomerById", {"input": {"customerId": bare}}))[
        "getCustomerByRefId"]
    assert again["subscriptions"] == [] and again["hasActiveSubscription"] is False
    assert again["coupon"] is None and again["promotionalEntitlements"] == []


def test_update_archive_and_unarchive(server: Any, client: Any, customer: str,
                                      uid: Any) -> None:
    before = data(gql(server, "GetCustomerById", {"input": {"customerId": customer}}))[
        "getCustomerByRefId"]
    updated = data(gql(server, "UpdateCustomer", {"input": {
        "customerId": customer, "name": "Acme Ltd", "email": "billing@acme.test",
        "additionalMetaData": {"region": "eu"}}}))["updateCustomer"]
    assert (updated["name"], updated["email"], updated["additionalMetaData"]) == (
        "Acme Ltd", "billing@acme.test", {"region": "eu"})
    assert updated["createdAt"] == before["createdAt"]
    got = data(gql(server, "GetCustomerById", {"input": {"customerId": customer}}))[
        "getCustomerByRefId"]
    assert (got["name"], got["email"], got["additionalMetaData"]) == (
        "Acme Ltd", "billing@acme.test", {"region": "eu"})
    # Only what is given changes.
    data(gql(server, "UpdateCustomer", {"input": {"customerId": customer, "name": "Acme"}}))
    got = data(gql(server, "GetCustomerById", {"input": {"customerId": customer}}))[
        "getCustomerByRefId"]
    assert (got["name"], got["email"]) == ("Acme", "billing@acme.test")

    archived = data(gql(server, "ArchiveCustomer", {"input": {"customerId": customer}}))
    assert archived == {"archiveCustomer": {"customerId": customer}}
    # An archived customer is read but not changed, and takes no subscription.
    assert data(gql(server, "GetCustomerById", {"input": {"customerId": customer}}))[
        "getCustomerByRefId"]["name"] == "Acme"
    refused = gql(server, "UpdateCustomer", {"input": {"customerId": customer, "name": "X"}})
    # (the domain's CustomerIsArchived is Stigg's EntityIsArchivedError)
    assert _error(refused) == ("EntityIsArchivedError", "customerId")
    assert refused["data"] is None
    assert "archived" in refused["errors"][0]["message"]
    catalog = Catalog(client, uid)
    plan = catalog.plan(credits=10)
    assert _error(gql(server, "ProvisionSubscription", {"input": {
        "customerId": customer, "planId": plan}})) == ("EntityIsArchivedError", "customerId")
    back = data(gql(server, "UnarchiveCustomer", {"input": {"customerId": customer}}))[
        "unarchiveCustomer"]
    assert (back["customerId"], back["name"]) == (customer, "Acme")
    assert data(gql(server, "UpdateCustomer", {"input": {
        "customerId": customer, "name": "X"}}))["updateCustomer"]["name"] == "X"


def test_refusals_name_their_field_and_leave_nothing(server: Any, client: Any, customer: str,
                                                     uid: Any) -> None:
    missing = gql(server, "GetCustomerById", {"input": {"customerId": "nobody"}})
    assert _error(missing) == ("CustomerNotFound", "customerId")
    assert code(gql(server, "UpdateCustomer", {"input": {"customerId": "nobody",
                                                         "name": "x"}})) == "CustomerNotFound"
    assert code(gql(server, "ArchiveCustomer", {"input": {"customerId": "nobody"}})) == \
        "CustomerNotFound"
    assert _error(gql(server, "ProvisionCustomer", {"input": {"customerId": customer}})) == (
        "DuplicatedEntityNotAllowed", "customerId")
    assert _error(gql(server, "ProvisionCustomer", {"input": {"name": "x"}})) == (
        "BadUserInput", "customerId")
    fresh = uid("cust")
    assert _error(gql(server, "ProvisionCustomer", {"input": {
        "customerId": fresh, "salesforceId": "sf-1"}})) == ("BadUserInput", "salesforceId")
    assert _error(gql(server, "ProvisionCustomer", {"input": {
        "customerId": fresh, "additionalMetaData": {"n": 1}}})) == (
        "BadUserInput", "additionalMetaData")
    # A refused first subscription leaves no customer behind.
    catalog = Catalog(client, uid)
    plan = catalog.plan(credits=10)
    assert _error(gql(server, "ProvisionCustomer", {"input": {
        "customerId": fresh, "subscriptionParams": {"planId": "no-such-plan"}}})) == (
        "PlanNotFound", "subscriptionParams.planId")
    assert _error(gql(server, "ProvisionCustomer", {"input": {
        "customerId": fresh, "subscriptionParams": {
            "planId": plan, "addons": [{"addonId": "nope", "quantity": 1}]}}})) == (
        "AddonNotFound", "subscriptionParams.addons[0].id")
    assert _error(gql(server, "ProvisionCustomer", {"input": {
        "customerId": fresh, "subscriptionParams": {
            "planId": plan, "priceOverrides": [{"featureId": "f"}]}}})) == (
        "BadUserInput", "subscriptionParams.priceOverrides")
    assert code(gql(server, "GetCustomerById", {"input": {"customerId": fresh}})) == \
        "CustomerNotFound"
    # An enum value Stigg's schema does not have is refused, naming the field.
    wrong = gql(server, "ProvisionCustomer", {"input": {
        "customerId": fresh, "subscriptionParams": {"planId": plan,
                                                    "billingPeriod": "WEEKLY"}}})
    assert code(wrong) == "BadUserInput" and "billingPeriod" in wrong["errors"][0]["message"]
    assert code(gql(server, "GetCustomerById", {"input": {"customerId": fresh}})) == \
        "CustomerNotFound"


def test_a_subscription_refused_past_the_plan_checks_leaves_no_customer(
        server: Any, client: Any, uid: Any) -> None:
    catalog = Catalog(client, uid)
    plan = catalog.plan(credits=10)  # a plan without a default trial
    start = datetime.now(timezone.utc).replace(microsecond=0)
    fresh = uid("cust")

    def provision(params: dict[str, Any], customer_id: str = fresh) -> dict[str, Any]:
        return gql(server, "ProvisionCustomer", {"input": {
            "customerId": customer_id, "name": "Acme",
            "subscriptionParams": {"planId": plan, **params}}})

    def absent(customer_id: str = fresh) -> bool:
        answer = gql(server, "GetCustomerById", {"input": {"customerId": customer_id}})
        return not (answer.get("data") or {}).get("getCustomerByRefId") and _error(
            answer) == ("CustomerNotFound", "customerId")

    # Plan, add-ons and coupon are fine; the trial is what the subscription rules refuse.
    for trial in ({"isTrial": True, "trialEndDate": _iso(start - timedelta(days=1))},
                  {"isTrial": True}):
        refused = provision({"startDate": _iso(start), "trialOverrideConfiguration": trial})
        assert absent(), trial
        assert _error(refused) == (
            "BadUserInput", "subscriptionParams.trialOverrideConfiguration.trialEndDate"), trial
    # A subscription id taken by another customer's subscription.
    taken = uid("sub")
    other = uid("cust")
    data(provision({"subscriptionId": taken}, other))
    refused = provision({"subscriptionId": taken})
    assert absent()
    assert _error(refused) == ("DuplicatedEntityNotAllowed", "subscriptionParams.subscriptionId")

    # The same call with a trial ending after the start makes both.
    trial_end = start + timedelta(days=14)
    made = data(provision({"startDate": _iso(start), "trialOverrideConfiguration": {
        "isTrial": True, "trialEndDate": _iso(trial_end)}}))["provisionCustomer"]
    assert made["customer"]["customerId"] == fresh
    assert (made["subscription"]["status"], made["subscription"]["plan"]["refId"]) == (
        "IN_TRIAL", plan)
    got = data(gql(server, "GetCustomerById", {"input": {"customerId": fresh}}))[
        "getCustomerByRefId"]
    assert got["name"] == "Acme"
    assert [s["status"] for s in got["subscriptions"]] == ["IN_TRIAL"]
    # Once it exists, the customer is a duplicate, whatever the subscription.
    assert _error(provision({})) == ("DuplicatedEntityNotAllowed", "customerId")


def _iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")
