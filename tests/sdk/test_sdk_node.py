"""Stigg's Node.js server SDK (@stigg/node-server-sdk, npm, pinned in tests/sdk/node) against
creditd, initialized as its README shows (`Stigg.initialize({apiKey, baseUri})`) and called
as users do: amounts exact, effects asserted, and errors arriving with Stigg's codes.

Most tests run with Edge and realtime updates off (everything over /graphql); the Edge test
turns Edge on (`enableEdge`, `baseEdgeUri`: its reads become GETs of the Edge JSON files),
and the realtime tests run the SDK as by default, Edge and realtime on (its websocket at
/graphql), kept running by the `node_listener` fixture while the test changes things
through REST and GraphQL. Every HTTP request the SDK makes is recorded by the driver, so a
test sees which reads went where, and which checks were answered from the SDK's cache.

Start-up needs the SDK configuration (GraphQL `GetSdkConfiguration`). Until /graphql serves
it, the tests other than `test_start_up_as_users_do` turn that check off with the SDK's own
option (`enableRemoteConfig: false`); once it is served they run with the defaults."""

from __future__ import annotations

import json
import subprocess
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from graphql import parse, validate

from gateway.graphql import endpoint
from tests.gateway.graphql.wire import gql
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


def assert_holds(edge: Any, graphql: Any, path: str = "") -> None:
    """`edge` holds every value of `graphql` (its `__typename`s aside) at the same place."""
    if isinstance(graphql, dict):
        assert isinstance(edge, dict), (path, edge, graphql)
        for key, value in graphql.items():
            if key != "__typename":
                assert key in edge, (f"{path}.{key}", edge)
                assert_holds(edge[key], value, f"{path}.{key}")
    elif isinstance(graphql, list):
        assert isinstance(edge, list) and len(edge) == len(graphql), (path, edge, graphql)
        for index, (e, g) in enumerate(zip(edge, graphql, strict=True)):
            assert_holds(e, g, f"{path}[{index}]")
    else:
        assert edge == graphql, (path, edge, graphql)


@needs("sdkConfiguration")
def test_start_up_as_users_do(node_driver: Driver) -> None:
    """`waitForInitialization()` with the SDK's defaults (it loads the SDK configuration);
    a wrong key fails it with the SDK's authentication error."""
    assert node_driver.start() == {"ok": True,
                                   "requests": ["POST /graphql GetSdkConfiguration"]}
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


def test_edge_on_as_by_default(node_driver: Driver, server: Any, catalog: Catalog) -> None:
    """`Stigg.initialize({apiKey, baseUri, baseEdgeUri, enableEdge: true})` (Edge is the
    SDK's default): start-up loads the SDK configuration from Edge, the entitlement reads,
    the paywall without a customer and the subscriptions list are GETs of the Edge JSON
    files (every HTTP request the SDK makes is recorded), with the values the same calls
    answer with Edge off (every field, but for the `__typename`s Apollo adds over GraphQL;
    the Edge files hold the Python client's selections, which select more of a
    subscription); writes and the customer's paywall still go to /graphql."""
    customer = catalog.customer()
    edge = {"enableEdge": True, "baseEdgeUri": server.url}
    assert node_driver.start(config=edge) == {
        "ok": True, "requests": ["GET /v1/config/server-sdk-configuration.json"]}
    subscribed, used = node_driver.ok([
        step("provisionSubscription", {"customerId": customer, "planId": catalog.plan,
                                       "billingPeriod": "MONTHLY", "unitQuantity": 2}),
        step("reportUsage", {"customerId": customer, "featureId": catalog.campaigns,
                             "value": 30}),
    ], config=edge)
    assert subscribed["provisionStatus"] == "SUCCESS" and used["currentUsage"] == 30
    reads = [
        step("getMeteredEntitlement", {"customerId": customer, "featureId": catalog.campaigns,
                                       "options": {"requestedUsage": 70}}),
        step("getMeteredEntitlement", {"customerId": customer, "featureId": catalog.campaigns,
                                       "options": {"requestedUsage": 71}}),
        step("getBooleanEntitlement", {"customerId": customer,
                                       "featureId": catalog.analytics}),
        step("getEntitlements", customer),
        step("getPaywall", {}),
        step("getPaywall", {"productId": catalog.product}),
        step("getPaywall", {"productId": catalog.product, "customerId": customer}),
        step("getActiveSubscriptionsList", {"customerId": customer}),
    ]
    on = node_driver.traced(reads, config=edge)
    off = node_driver.traced(reads, config=CONFIG)
    c = f"/v1/c/{customer}"
    assert [requests for _, requests in on] == [
        # Realtime off: nothing keeps the SDK's cache current, so each check reads.
        [f"GET {c}/entitlements.json"], [f"GET {c}/entitlements.json"],
        [f"GET {c}/entitlements.json"], [f"GET {c}/entitlements.json"],
        ["GET /v1/paywall.json?fetchAllCountriesPrices=undefined"],
        [f"GET /v1/p/{catalog.product}/paywall.json?fetchAllCountriesPrices=undefined"],
        ["POST /graphql GetPaywall"],
        [f"GET {c}/subscriptions.json"]]
    assert [requests for _, requests in off] == [[f"POST /graphql {name}"] for name in (
        "GetEntitlements", "GetEntitlements", "GetEntitlements", "GetEntitlements",
        "GetPaywall", "GetPaywall", "GetPaywall", "GetActiveSubscriptionsList")]
    for (edge_answer, _), (answer, _) in zip(on, off, strict=True):
        assert_holds(edge_answer, answer)

    fits, over, flag, listed, everything, product, _, subscriptions = (a for a, _ in on)
    assert (fits["hasAccess"], fits["usageLimit"], fits["currentUsage"],
            fits["requestedUsage"]) == (True, 100, 30, 70)
    assert (over["hasAccess"], over["accessDeniedReason"]) == (
        False, "RequestedUsageExceedingLimit")
    assert (flag["hasAccess"], flag["accessDeniedReason"]) == (
        False, "NoFeatureEntitlementInSubscription")
    assert [(e["feature"]["id"], e["usageLimit"], e["currentUsage"]) for e in listed] == [
        (catalog.campaigns, 100, 30)]
    assert catalog.plan in {p["id"] for p in everything["plans"]}
    [plan] = product["plans"]
    prices = sorted((p["pricingModel"], p["billingPeriod"], p["amount"])
                    for p in plan["pricePoints"])
    assert (plan["id"], plan["product"]["id"], prices) == (
        catalog.plan, catalog.product, [("FLAT_FEE", "MONTHLY", 10),
                                        ("PER_UNIT", "MONTHLY", 4)])
    [sub] = subscriptions
    assert (sub["status"], sub["plan"]["planId"], sub["customer"]["customerId"]) == (
        "ACTIVE", catalog.plan, customer)
    assert sub["subscriptionId"] == subscribed["subscription"]["id"]



# -- realtime updates (the SDK's websocket at /graphql) ---------------------------------------
# The SDK as users run it by default: Edge on, realtime updates on. With realtime on, its
# checks are answered from its cache (no HTTP) once a customer's entitlements are loaded,
# and the subscriptions keep that cache current.


def next_of(listener: Any, field: str, matches: Any = lambda _: True) -> Any:
    """The payload of the next `next` frame the server sent for subscription `field`."""
    def wanted(line: dict[str, Any]) -> bool:
        message = line["frame"]["message"]
        return (line["frame"]["dir"] == "in" and message.get("type") == "next"
                and field in ((message.get("payload") or {}).get("data") or {})
                and matches(message["payload"]["data"][field]))
    frame = listener.wait("frame", wanted)["frame"]["message"]
    assert "errors" not in frame["payload"], frame
    return frame["payload"]["data"][field]


def realtime(server: Any) -> dict[str, Any]:
    return {"enableEdge": True, "baseEdgeUri": server.url,
            "wsUrl": server.url.replace("http://", "ws://")}


def test_realtime_usage_reaches_the_sdks_cache(node_listener: Any, server: Any, client: Any,
                                               catalog: Catalog) -> None:
    """Usage reported elsewhere (GraphQL, another process) reaches a running SDK as its
    `usageUpdated` event, exact, and its next check (requested usage against the cached
    limit) counts it without another HTTP read."""
    customer = catalog.customer()
    client.v1.subscriptions.provision(customer_id=customer, plan_id=catalog.plan,
                                      unit_quantity=2)
    check = step("getMeteredEntitlement", {"customerId": customer,
                                           "featureId": catalog.campaigns,
                                           "options": {"requestedUsage": 80}})
    sdk = node_listener(config=realtime(server), steps=[check])
    [loaded] = sdk.ready()
    # Start-up: the SDK configuration from Edge, and the websocket to /graphql on which
    # the server acknowledged the key and took the SDK's four subscriptions.
    assert sorted(sdk.init["requests"]) == [
        "GET /graphql (websocket)", "GET /v1/config/server-sdk-configuration.json"]
    assert [m["payload"]["operationName"] for m in sdk.frames("out")
            if m["type"] == "subscribe"] == ["OnEntitlementsUpdated", "OnUsageUpdated",
                                             "OnPackagePublished", "OnCreditBalanceUpdated"]
    assert loaded["requests"] == [f"GET /v1/c/{customer}/entitlements.json"]
    assert (loaded["ok"]["hasAccess"], loaded["ok"]["currentUsage"]) == (True, 0)
    cached = sdk.call(check)
    assert (cached["ok"], cached["requests"]) == (loaded["ok"], [])  # from the cache

    reported = gql(server, "ReportUsage", {"input": {
        "customerId": customer, "featureId": catalog.campaigns, "value": 30}})
    assert reported["data"]["reportUsage"]["currentUsage"] == 30
    event = sdk.event("usageUpdated", lambda e: e["usage"]["customerId"] == customer)
    u = event["usage"]
    assert (u["featureId"], u["resourceId"], u["currentUsage"]) == (
        catalog.campaigns, None, 30)
    e = event["entitlement"]
    assert (e["feature"]["refId"], e["isGranted"], e["usageLimit"], e["currentUsage"]) == (
        catalog.campaigns, True, 100, 30)
    # UsageMeasurementUpdated's period is in epoch milliseconds: the entitlement's window.
    assert u["usagePeriodEnd"] == loaded_ms(loaded["ok"]["usagePeriodEnd"])

    over = sdk.call(check)  # 30 + 80 > 100, decided from the cache
    assert over["requests"] == []
    assert (over["ok"]["hasAccess"], over["ok"]["accessDeniedReason"],
            over["ok"]["currentUsage"], over["ok"]["usageLimit"]) == (
        False, "RequestedUsageExceedingLimit", 30, 100)
    fits = sdk.call(step("getMeteredEntitlement", {
        "customerId": customer, "featureId": catalog.campaigns,
        "options": {"requestedUsage": 70}}))
    assert (fits["ok"]["hasAccess"], fits["requests"]) == (True, [])
    # Nothing refused or ended on the socket.
    assert [m["type"] for m in sdk.frames("in")
            if m["type"] not in ("next", "pong")] == ["connection_ack"]
    assert sdk.frames("close") == []


def loaded_ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


def test_realtime_promotion_reaches_the_sdks_cache(node_listener: Any, server: Any,
                                                   client: Any, catalog: Catalog) -> None:
    """A promotion granted (REST) reaches a running SDK as `entitlementsUpdated` with the
    customer's whole entitlements, and its next check of the promoted flag says yes
    without an HTTP read; revoking it says no again the same way."""
    customer = catalog.customer()
    client.v1.subscriptions.provision(customer_id=customer, plan_id=catalog.plan,
                                      unit_quantity=2)
    flag = step("getBooleanEntitlement", {"customerId": customer,
                                          "featureId": catalog.analytics})
    sdk = node_listener(config=realtime(server), steps=[flag])
    [before] = sdk.ready()
    assert (before["ok"]["hasAccess"], before["ok"]["accessDeniedReason"]) == (
        False, "NoFeatureEntitlementInSubscription")

    client.v1.customers.promotional_entitlements.create(customer, promotional_entitlements=[{
        "feature_id": catalog.analytics, "period": "1 month", "custom_end_date": None,
        "enum_values": None, "has_soft_limit": None, "has_unlimited_usage": None,
        "is_visible": None, "monthly_reset_period_configuration": None, "reset_period": None,
        "usage_limit": None, "weekly_reset_period_configuration": None,
        "yearly_reset_period_configuration": None}])
    granted = sdk.event("entitlementsUpdated", lambda e: e["customerId"] == customer)
    assert granted["resourceId"] is None
    by_feature = {e["feature"]["refId"]: e for e in granted["entitlements"]}
    assert sorted(by_feature) == sorted([catalog.analytics, catalog.campaigns])
    assert by_feature[catalog.analytics]["isGranted"] is True
    assert by_feature[catalog.analytics]["feature"]["featureType"] == "BOOLEAN"
    assert (by_feature[catalog.campaigns]["usageLimit"],
            by_feature[catalog.campaigns]["currentUsage"]) == (100, 0)
    on = sdk.call(flag)
    assert (on["ok"]["hasAccess"], on["requests"]) == (True, [])

    client.v1.customers.promotional_entitlements.revoke(catalog.analytics, id=customer)
    revoked = sdk.event("entitlementsUpdated", lambda e: e["customerId"] == customer)
    assert [e["feature"]["refId"] for e in revoked["entitlements"]] == [catalog.campaigns]
    off = sdk.call(flag)
    assert (off["ok"]["hasAccess"], off["requests"]) == (False, [])


def promoted_credit_feature(client: Any, uid: Any, customer: str, currency: str) -> str:
    """A feature burning 0.5 `currency` a unit, promoted to `customer` without a limit:
    its entitlement carries the credit rate."""
    feature = credit_feature(client, uid, currency, 0.5, meter_type="INCREMENTAL")
    client.v1.customers.promotional_entitlements.create(customer, promotional_entitlements=[{
        "feature_id": feature, "period": "lifetime", "custom_end_date": None,
        "enum_values": None, "has_soft_limit": None, "has_unlimited_usage": True,
        "is_visible": None, "monthly_reset_period_configuration": None, "reset_period": None,
        "usage_limit": None, "weekly_reset_period_configuration": None,
        "yearly_reset_period_configuration": None}])
    client.v1.credits.grants.create(customer_id=customer, currency_id=currency, amount=1,
                                    display_name="welcome", grant_type="PAID")
    return feature


def test_realtime_credit_balance_reaches_the_sdks_cache(node_listener: Any, server: Any,
                                                        client: Any, uid: Any, customer: str,
                                                        currency: str) -> None:
    """The balance of a running SDK's customer changes (usage burning the last credit, then
    a grant): the server's `creditBalanceUpdated` arrives exact, and the SDK's next check of
    the credit-rated feature says InsufficientCredits, then yes again, without an HTTP
    read. (The 3.95 SDK only updates its cache on this subscription: it emits no
    `creditBalanceUpdated` event to listeners, so the frame is what is asserted.)"""
    feature = promoted_credit_feature(client, uid, customer, currency)
    check = step("getMeteredEntitlement", {"customerId": customer, "featureId": feature,
                                           "options": {"requestedUsage": 1}})
    sdk = node_listener(config=realtime(server), steps=[check])
    [loaded] = sdk.ready()
    assert (loaded["ok"]["hasAccess"], loaded["ok"]["isUnlimited"]) == (True, True)

    gql(server, "ReportUsage", {"input": {"customerId": customer, "featureId": feature,
                                          "value": 2}})  # 2 × 0.5: the last credit
    spent = next_of(sdk, "creditBalanceUpdated", lambda b: b["customerId"] == customer)
    assert {k: spent[k] for k in ("currencyId", "resourceId", "currentBalance",
                                  "totalGranted", "totalConsumed", "validUntil")} == {
        "currencyId": currency, "resourceId": None, "currentBalance": 0,
        "totalGranted": 1, "totalConsumed": 1, "validUntil": None}
    assert spent["currency"] == {
        "currencyId": currency, "displayName": "AI Tokens", "symbol": "T",
        "units": {"singular": "token", "plural": "tokens", "__typename": "Units"},
        "__typename": "SlimCustomCurrency"}
    used = sdk.event("usageUpdated", lambda e: e["usage"]["customerId"] == customer)
    assert (used["usage"]["featureId"], used["usage"]["currentUsage"]) == (feature, 2)
    out = sdk.call(check)
    assert out["requests"] == []
    assert (out["ok"]["hasAccess"], out["ok"]["accessDeniedReason"],
            out["ok"]["currentUsage"]) == (False, "InsufficientCredits", 2)

    client.v1.credits.grants.create(customer_id=customer, currency_id=currency,
                                    amount="2.5", display_name="top-up", grant_type="PAID")
    topped = next_of(sdk, "creditBalanceUpdated", lambda b: b["customerId"] == customer)
    assert (topped["currentBalance"], topped["totalGranted"], topped["totalConsumed"]) == (
        Decimal("2.5"), Decimal("3.5"), 1)
    back = sdk.call(check)
    assert (back["ok"]["hasAccess"], back["requests"]) == (True, [])
    assert not [line for line in sdk.lines if line.get("event") == "creditBalanceUpdated"]


def test_a_fresh_read_agrees_with_the_realtime_cache_when_credits_run_out(
        node_driver: Driver, server: Any, client: Any, uid: Any, customer: str,
        currency: str) -> None:
    feature = promoted_credit_feature(client, uid, customer, currency)
    gql(server, "ReportUsage", {"input": {"customerId": customer, "featureId": feature,
                                          "value": 2}})  # the balance is 0 now
    [fresh] = node_driver.ok([step("getMeteredEntitlement", {
        "customerId": customer, "featureId": feature, "options": {"requestedUsage": 1}})],
        config={"enableEdge": True, "baseEdgeUri": server.url})
    assert (fresh["hasAccess"], fresh.get("accessDeniedReason")) == (
        False, "InsufficientCredits")
