"""Stigg's Node.js server SDK (@stigg/node-server-sdk, npm, pinned in tests/sdk/node) against
creditd, initialized as its README shows (`Stigg.initialize({apiKey, baseUri})`, Edge off:
creditd answers everything at /graphql) and called as users do: amounts exact, effects
asserted, and errors arriving with Stigg's codes.

Start-up needs the SDK configuration (GraphQL `GetSdkConfiguration`). Until /graphql serves
it, the tests other than `test_start_up_as_users_do` turn that check off with the SDK's own
option (`enableRemoteConfig: false`); once it is served they run with the defaults."""

from __future__ import annotations

import json
import subprocess
from decimal import Decimal
from pathlib import Path
from typing import Any

from graphql import parse, validate

from gateway.graphql import endpoint
from tests.sdk.harness import Catalog, Driver, error_of, needs, served, step

NODE_DIR = Path(__file__).resolve().parent / "node"
# The SDK's defaults, once the start-up query is served.
CONFIG: dict[str, Any] = {} if "sdkConfiguration" in served() else {"enableRemoteConfig": False}
COUNT_LOGINS = {"aggregation": {"function": "COUNT"}, "filters": [{"conditions": [
    {"field": "eventName", "operation": "EQUALS", "value": "user_login"}]}]}


def credit_feature(client: Any, uid: Any, currency: str, rate: float, **kw: Any) -> str:
    fid = uid("node-feature")
    client.v1.features.create_feature(
        id=fid, display_name="Metered", feature_type="NUMBER",
        extra_body={"creditRate": {"amount": rate, "currencyId": currency}}, **kw)
    return fid


@needs("sdkConfiguration")
def test_start_up_as_users_do(node_driver: Driver) -> None:
    """`waitForInitialization()` with the SDK's defaults (it loads the SDK configuration);
    a wrong key fails it with the SDK's authentication error."""
    assert node_driver.start() == {"ok": True}
    refused = error_of(node_driver.start(key="cd_wrong"))
    assert refused["codes"] == ["Unauthenticated"], refused
    assert "Authentication failed" in refused["message"]


def test_credits_usage_and_events(node_driver: Driver, client: Any, uid: Any, customer: str,
                                  currency: str) -> None:
    """The credits guide's calls: grants, usage and events burning credits at the mapped
    rates, the balance exactly 0 at the end (2.3 − 0.2 − 0.1 − 2), a repeated event key
    counted once, and a void."""
    calls = credit_feature(client, uid, currency, 0.1, meter_type="INCREMENTAL")
    credit_feature(client, uid, currency, 2, meter=COUNT_LOGINS)
    event = {"customerId": customer, "eventName": "user_login",
             "idempotencyKey": uid("ccc4bbf4"), "timestamp": "2025-01-01T10:10:10.000Z",
             "dimensions": {"userId": "user-123", "actionTokens": 150}}
    balance = step("getCreditBalance", {"customerId": customer, "currencyId": currency})
    promo, paid, usage, bulk, ev1, ev2, summary, voided = node_driver.ok([
        step("grantCredits", {"customerId": customer, "currencyId": currency, "amount": 0.1,
                              "displayName": "welcome", "grantType": "PROMOTIONAL",
                              "priority": 10}),
        step("grantCredits", {"customerId": customer, "currencyId": currency, "amount": 2.2,
                              "displayName": "top-up", "grantType": "PAID"}),
        step("reportUsage", {"customerId": customer, "featureId": calls, "value": 2}),
        step("reportUsageBulk", {"usages": [
            {"customerId": customer, "featureId": calls, "value": 1}]}),
        step("reportEvent", event),
        step("reportEvent", [event]),
        balance,
        step("voidCreditGrant", {"id": "$0.grantId"}),
    ], config=CONFIG)
    assert (promo["amount"], promo["grantType"], promo["priority"], promo["currencyId"]) == (
        Decimal("0.1"), "PROMOTIONAL", 10, currency)
    assert (paid["amount"], paid["grantType"]) == (Decimal("2.2"), "PAID")
    assert (usage["customerId"], usage["featureId"], usage["currentUsage"]) == (
        customer, calls, 2)
    assert usage["measurementId"]
    assert [(u["featureId"], u["currentUsage"]) for u in bulk] == [(calls, 3)]
    assert ev1 is None and ev2 is None
    [b] = summary["balances"]
    assert (b["currentBalance"], b["totalGranted"], b["totalConsumed"]) == (
        0, Decimal("2.3"), Decimal("2.3"))
    assert b["currency"]["currencyId"] == currency
    assert voided["grantId"] == promo["grantId"]
    [grant] = [g for g in client.v1.credits.grants.list(customer_id=customer)
               if g.id == promo["grantId"]]
    assert grant.status == "VOIDED"


def test_refusals_arrive_with_stiggs_codes(node_driver: Driver, customer: str,
                                           currency: str) -> None:
    unknown, void, usage = node_driver.run([
        step("getCreditBalance", {"customerId": "nobody"}),
        step("voidCreditGrant", {"id": "no-such-grant"}),
        step("reportUsage", {"customerId": customer, "featureId": "no-such-feature",
                             "value": 1}),
    ], config=CONFIG)
    assert error_of(unknown)["codes"] == ["CustomerNotFound"]
    assert error_of(void)["codes"] == ["CreditGrantNotFound"]
    assert error_of(usage)["codes"] == ["FeatureNotFound"]
    [wrong_key] = node_driver.run([step("getCreditBalance", {"customerId": customer})],
                                  key="cd_wrong", config={"enableRemoteConfig": False})
    assert error_of(wrong_key)["codes"] == ["Unauthenticated"]


@needs("provisionCustomer", "provisionSubscriptionV2", "getCustomerByRefId",
       "cachedEntitlements", "paywall", "products", "coupons", "estimateSubscription",
       "getActiveSubscriptions")
def test_customers_subscriptions_entitlements_and_paywall(node_driver: Driver,
                                                          catalog: Catalog,
                                                          uid: Any) -> None:
    """provisionCustomer, provisionSubscription, the entitlement checks (decided by the SDK
    from the entitlements it loads, its usage cache updated by reportUsage's answer),
    getPaywall, getProducts, getCoupons, estimateSubscription."""
    customer = uid("node-cust")
    metered = step("getMeteredEntitlement", {"customerId": customer,
                                             "featureId": catalog.campaigns,
                                             "options": {"requestedUsage": 80}})
    (provisioned, subscribed, got, before, used, after, flag, paywall, products, coupons,
     estimate, active) = node_driver.ok([
        step("provisionCustomer", {"customerId": customer, "name": "Acme",
                                   "email": "billing@acme.test"}),
        step("provisionSubscription", {"customerId": customer, "planId": catalog.plan,
                                       "billingPeriod": "MONTHLY", "unitQuantity": 3}),
        step("getCustomer", customer),
        metered,
        step("reportUsage", {"customerId": customer, "featureId": catalog.campaigns,
                             "value": 30}),
        metered,
        step("getBooleanEntitlement", {"customerId": customer,
                                       "featureId": catalog.analytics}),
        step("getPaywall", {"productId": catalog.product}),
        step("getProducts"),
        step("getCoupons"),
        step("estimateSubscription", {
            "customerId": customer, "billingPeriod": "MONTHLY", "planId": catalog.plan,
            "billableFeatures": [{"featureId": catalog.seats, "quantity": 2}],
            "addons": [{"addonId": catalog.addon, "quantity": 1}]}),
        step("getActiveSubscriptions", {"customerId": customer}),
    ], config=CONFIG)
    assert (provisioned["customer"]["id"], provisioned["customer"]["name"]) == (
        customer, "Acme")
    assert subscribed["provisionStatus"] == "SUCCESS"
    assert (subscribed["subscription"]["planId"], subscribed["subscription"]["status"]) == (
        catalog.plan, "ACTIVE")
    assert got["id"] == customer and got["email"] == "billing@acme.test"
    assert (before["hasAccess"], before["usageLimit"], before["currentUsage"]) == (
        True, 100, 0)
    assert used["currentUsage"] == 30
    # 30 used + 80 requested is over the plan's 100: decided from the SDK's cache.
    assert (after["hasAccess"], after["currentUsage"]) == (False, 30)
    assert flag["hasAccess"] is False
    plans = {p["id"]: p for p in paywall["plans"]}
    prices = {(p["pricingModel"], p["billingPeriod"]): p
              for p in plans[catalog.plan]["pricePoints"]}
    assert prices[("FLAT_FEE", "MONTHLY")]["amount"] == 10
    assert prices[("PER_UNIT", "MONTHLY")]["amount"] == 4
    assert catalog.product in {p["id"] for p in products}
    [coupon] = [c for c in coupons if c["id"] == catalog.coupon]
    assert (coupon["name"], coupon["discountValue"], coupon["percentOff"]) == (
        "Save 20", 20, 20)
    # $10 + 2 seats × $4 + 1 add-on × $3 = $21.
    assert estimate["total"] == {"amount": 21, "currency": "USD"}
    assert estimate["subTotal"] == {"amount": 21, "currency": "USD"}
    assert [a["plan"]["id"] for a in active] == [catalog.plan]


@needs("grantPromotionalEntitlements", "revokePromotionalEntitlement", "cachedEntitlements")
def test_a_promotion_flips_the_check_and_revoking_flips_it_back(node_driver: Driver,
                                                                catalog: Catalog) -> None:
    """Each run is a fresh SDK (its entitlement cache filled from the server): granted,
    then revoked."""
    customer = catalog.customer()
    check = step("getBooleanEntitlement", {"customerId": customer,
                                           "featureId": catalog.analytics})
    granted, on = node_driver.ok([
        step("grantPromotionalEntitlements", {"customerId": customer, "promotionalEntitlements": [
            {"featureId": catalog.analytics, "period": "ONE_MONTH"}]}),
        check], config=CONFIG)
    assert [g["feature"]["refId"] for g in granted] == [catalog.analytics]
    assert on["hasAccess"] is True
    revoked, = node_driver.ok([step("revokePromotionalEntitlements", {
        "customerId": customer, "featureId": catalog.analytics})], config=CONFIG)
    assert revoked["id"]
    off, = node_driver.ok([check], config=CONFIG)
    assert off["hasAccess"] is False


def test_every_node_document_of_a_served_field_validates(node_sdk: Path) -> None:
    """The documents the Node SDK sends (from its @stigg/api-client-js) whose root field
    /graphql serves validate against the served schema: nothing it selects is missing or
    typed differently."""
    done = subprocess.run([str(node_sdk), "documents.js"], cwd=NODE_DIR, capture_output=True,
                          text=True, timeout=60, check=True)
    documents = json.loads(done.stdout)
    assert "GetCreditBalance" in documents and "ReportUsage" in documents
    schema = endpoint.schema()
    roots = {kind: schema.get_type(name) for kind, name in (
        ("query", "Query"), ("mutation", "Mutation"), ("subscription", "Subscription"))}
    checked, problems = [], {}
    for name, text in documents.items():
        operation = parse(text).definitions[0]
        root = roots[operation.operation.value]
        if root is None or operation.selection_set.selections[0].name.value not in root.fields:
            continue
        checked.append(name)
        errors = validate(schema, parse(text))
        if errors:
            problems[name] = [e.message for e in errors]
    assert problems == {}
    assert {"GetCreditBalance", "GrantCredits", "ReportUsage", "ReportEvent"} <= set(checked)
