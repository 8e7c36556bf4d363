"""Stigg's Python GraphQL client (stigg-api-client-v2 6.25.0, from PyPI, in its own venv)
against creditd, as the product documentation's Python snippets use it
(`await client.report_usage(ReportUsageInput(**{...}))`, ...): effects asserted exactly,
and every answer accepted by the client's strict pydantic models."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from tests.sdk.harness import Catalog, Driver, error_of, needs, step

COUNT_LOGINS = {"aggregation": {"function": "COUNT"}, "filters": [{"conditions": [
    {"field": "eventName", "operation": "EQUALS", "value": "user_login"}]}]}


def credit_feature(client: Any, uid: Any, currency: str, rate: float, **kw: Any) -> str:
    fid = uid("sdk-feature")
    client.v1.features.create_feature(
        id=fid, display_name="Metered", feature_type="NUMBER",
        extra_body={"creditRate": {"amount": rate, "currencyId": currency}}, **kw)
    return fid


def test_the_documentations_usage_and_event_snippets(py_sdk: Driver, client: Any, uid: Any,
                                                    customer: str, currency: str) -> None:
    """The "Usage reporting" snippets, async as written, on features that burn credits:
    the balance moves by the mapped amount, and a repeated event key counts once."""
    campaigns = credit_feature(client, uid, currency, 0.5, meter_type="INCREMENTAL")
    credit_feature(client, uid, currency, 2.5, meter=COUNT_LOGINS)  # counts user_login
    event = {
        "customerId": customer,
        "resourceId": "resource-01",  # optional
        "eventName": "user_login",
        "idempotencyKey": uid("227c1b73"),
        "dimensions": {"user_id": "user-01", "user_email": "john@example.com"},
    }
    report = step("report_usage", {"value": 5, "customerId": customer,
                                   "featureId": campaigns, "resourceId": "resource-01"},
                  input_type="ReportUsageInput")
    grant, first, second, event1, event2, balance = py_sdk.ok([
        # The resource's own credit pool, which its usage burns.
        step("grant_credits", {"customerId": customer, "currencyId": currency, "amount": 100,
                               "displayName": "welcome", "grantType": "PAID",
                               "resourceId": "resource-01"},
             input_type="CreditGrantInput"),
        report, report,
        step("report_event", {"usageEvents": [event]}, input_type="UsageEventsReportInput"),
        step("report_event", {"usageEvents": [event]}, input_type="UsageEventsReportInput"),
        step("get_credit_balance", {"customerId": customer, "currencyId": currency,
                                    "resourceId": "resource-01"},
             input_type="CreditBalanceSummaryInput"),
    ], mode="async")
    assert grant["createCreditGrant"]["amount"] == 100
    used = first["reportUsage"]
    assert (used["customerId"], used["featureId"], used["resourceId"], used["currentUsage"]) == (
        customer, campaigns, "resource-01", 5)
    assert (used["credit"]["currencyId"], used["credit"]["consumed"]) == (currency, Decimal(
        "2.5"))
    assert second["reportUsage"]["currentUsage"] == 10
    assert event1 == event2 == {"reportEvent": None}
    [b] = balance["creditBalanceSummary"]["balances"]
    # 100 − 2 × 5 × 0.5 − 1 × 2.5 (the second event repeats the first's key).
    assert b["currentBalance"] == Decimal("92.5")
    assert (b["totalGranted"], b["totalConsumed"]) == (100, Decimal("7.5"))


def test_credits_exactly_through_the_sync_client(py_sdk: Driver, client: Any, uid: Any,
                                                 customer: str, currency: str) -> None:
    """Grants, an idempotent consumption, the balance and a void, through
    `Stigg.create_client` (sync): 0.1 + 0.2 − 0.3 is 0, not 5.55e-17."""
    images = credit_feature(client, uid, currency, 2.5, meter_type="INCREMENTAL")
    key = uid("consume")
    consume = step("consume_credits", {"customerId": customer, "currencyId": currency,
                                       "amount": 0.3, "idempotencyKey": key},
                   input_type="ConsumeCreditInput")
    (promo, paid, consumed, again, balance, estimate, events, voided, after,
     bulk) = py_sdk.ok([
        step("grant_credits", {"customerId": customer, "currencyId": currency, "amount": 0.1,
                               "displayName": "welcome", "grantType": "PROMOTIONAL",
                               "priority": 10, "cost": {"amount": 0, "currency": "USD"}},
             input_type="CreditGrantInput"),
        step("grant_credits", {"customerId": customer, "currencyId": currency, "amount": 0.2,
                               "displayName": "top-up", "grantType": "PAID"},
             input_type="CreditGrantInput"),
        consume, consume,
        step("get_credit_balance", {"customerId": customer, "currencyId": currency},
             input_type="CreditBalanceSummaryInput"),
        step("estimate_usage_cost", {"customerId": customer, "featureId": images, "value": 3},
             input_type="EstimateUsageCostInput"),
        step("estimate_event_cost", {"customerId": customer, "eventName": "nothing-meters"},
             input_type="EstimateEventCostInput"),
        step("void_credit_grant", {"id": "$0.createCreditGrant.grantId"},
             input_type="VoidCreditGrantInput"),
        step("get_credit_balance", {"customerId": customer},
             input_type="CreditBalanceSummaryInput"),
        step("report_usage_bulk", {"usages": [
            {"customerId": customer, "featureId": images, "value": 0},
            {"customerId": customer, "featureId": images, "value": 0,
             "updateBehavior": "SET"}]}, input_type="ReportUsageBulkInput"),
    ])
    grant = promo["createCreditGrant"]
    assert (grant["amount"], grant["grantType"], grant["status"], grant["priority"]) == (
        Decimal("0.1"), "PROMOTIONAL", "ACTIVE", 10)
    assert grant["cost"] == {"amount": 0, "currency": "USD"}
    assert (grant["customerId"], grant["currencyId"]) == (customer, currency)
    assert paid["createCreditGrant"]["grantType"] == "PAID"
    c = consumed["consumeCredits"]
    assert (c["amount"], c["customerId"], c["currencyId"]) == (Decimal("0.3"), customer,
                                                               currency)
    assert c["credit"]["usageLimit"] - c["credit"]["currentUsage"] == 0
    assert again == consumed  # the same key: the same answer, applied once
    [b] = balance["creditBalanceSummary"]["balances"]
    assert (b["currentBalance"], b["totalGranted"], b["totalConsumed"]) == (
        0, Decimal("0.3"), Decimal("0.3"))
    assert b["currency"] == {"currencyId": currency, "displayName": "AI Tokens", "symbol": "T",
                             "units": {"singular": "token", "plural": "tokens"}}
    [e] = estimate["estimateUsageCost"]["estimates"]
    assert (e["estimatedCost"], e["currentBalance"], e["balanceAfterEstimate"],
            e["wouldOverdraft"]) == (Decimal("7.5"), 0, Decimal("-7.5"), True)
    assert events["estimateEventCost"] == {"estimates": [], "warnings": ["FEATURE_NOT_FOUND"]}
    assert voided["voidCreditGrant"]["status"] == "VOIDED"
    assert voided["voidCreditGrant"]["voidedAt"] is not None
    [b] = after["creditBalanceSummary"]["balances"]
    # The promotional grant was consumed first (its 0.1 gone): voiding it leaves 0.
    assert b["currentBalance"] == 0
    assert [u["currentUsage"] for u in bulk["reportUsageBulk"]] == [0, 0]


def test_auto_recharge_settings_through_the_async_client(py_sdk: Driver, client: Any,
                                                         customer: str, currency: str) -> None:
    client.v1.credits.custom_currencies.update(
        currency, extra_body={"topUp": {"pricePerCredit": 0.01}})
    key = {"customerId": customer, "currencyId": currency}
    # Above the threshold, so saving does not set off a recharge.
    client.v1.credits.grants.create(customer_id=customer, currency_id=currency, amount=10,
                                    display_name="g", grant_type="PAID")
    before, saved, after = py_sdk.ok([
        step("get_automatic_recharge_configuration", key,
             input_type="GetAutoRechargeSettingsInput"),
        step("save_automatic_recharge_configuration", {
            **key, "isEnabled": True, "thresholdType": "CreditAmount", "thresholdValue": 5,
            "targetBalance": 20.5, "maxSpendLimit": 100, "grantExpirationPeriod": "OneYear"},
            input_type="SaveAutoRechargeSettingsInput"),
        step("get_automatic_recharge_configuration", key,
             input_type="GetAutoRechargeSettingsInput"),
    ], mode="async")
    before = before["getAutoRechargeSettings"]
    assert (before["isEnabled"], before["grantExpirationPeriod"]) == (False, "OneMonth")
    s = saved["saveAutoRechargeSettings"]
    assert (s["isEnabled"], s["thresholdType"], s["thresholdValue"], s["targetBalance"],
            s["maxSpendLimit"], s["grantExpirationPeriod"], s["currentMonthlySpend"]) == (
        True, "CreditAmount", 5, Decimal("20.5"), 100, "OneYear", 0)
    assert after["getAutoRechargeSettings"] == s


def test_refusals_reach_the_client_with_stiggs_codes(py_sdk: Driver, customer: str,
                                                     currency: str) -> None:
    """What the server refuses arrives as the client's GraphQLClientGraphQLMultiError with
    Stigg's ErrorCode; nothing the client cannot parse."""
    unknown, void, consume, wrong_key = py_sdk.run([
        step("get_credit_balance", {"customerId": "nobody"},
             input_type="CreditBalanceSummaryInput"),
        step("void_credit_grant", {"id": "no-such-grant"}, input_type="VoidCreditGrantInput"),
        step("consume_credits", {"customerId": customer, "currencyId": currency, "amount": 1,
                                 "idempotencyKey": "over"}, input_type="ConsumeCreditInput"),
        step("get_credit_balance", {"customerId": customer},
             input_type="CreditBalanceSummaryInput", key="cd_wrong"),
    ], mode="async")
    assert error_of(unknown)["codes"] == ["CustomerNotFound"]
    assert error_of(void)["codes"] == ["CreditGrantNotFound"]
    refused = error_of(consume)  # nothing granted: refused, naming the field
    assert (refused["type"], refused["codes"]) == ("GraphQLClientGraphQLMultiError",
                                                   ["BadUserInput"])
    assert refused["message"].startswith("amount: ")
    assert error_of(wrong_key)["codes"] == ["Unauthenticated"]


@needs("estimateSubscription", "estimateSubscriptionUpdate", "grantPromotionalEntitlements",
       "revokePromotionalEntitlement", "entitlement", "coupons")
def test_the_documentations_estimate_promotion_and_coupon_snippets(
        py_sdk: Driver, client: Any, catalog: Catalog) -> None:
    """"Cost estimation", "Promotional entitlements" and "Coupons", async as written (the
    promotion's custom end date moved from 2023 into the future; the estimate called as
    `estimate_subscription`, the method the snippet's input is for). Totals by hand; the
    promotion flips the entitlement check and its revocation flips it back."""
    customer = catalog.customer()
    made = client.v1.subscriptions.provision(customer_id=customer, plan_id=catalog.plan,
                                             unit_quantity=2).data
    end = (datetime.now(UTC) + timedelta(days=30)).isoformat()
    check = step("get_entitlement", {"customerId": customer, "featureId": catalog.analytics},
                 input_type="FetchEntitlementQuery")
    (estimate, update, granted, memory, on, revoked, off, coupons) = py_sdk.ok([
        step("estimate_subscription", {
            "customerId": customer,
            "billingPeriod": "MONTHLY",
            "planId": catalog.plan,
            "billableFeatures": [{"featureId": catalog.seats, "quantity": 2}],
            "addons": [{"addonId": catalog.addon, "quantity": 2}],
            "billingCountryCode": "DK",
            "resourceId": "resource-01",
        }, input_type="EstimateSubscriptionInput"),
        step("estimate_subscription_update", {
            "subscriptionId": made.subscription.id,
            "billableFeatures": [{"featureId": catalog.seats, "quantity": 7}],
            "addons": [{"addonId": catalog.addon, "quantity": 2}],
        }, input_type="EstimateSubscriptionUpdateInput"),
        step("grant_promotional_entitlements", {
            "customer_id": customer,
            "promotional_entitlements": [
                {"feature_id": catalog.analytics, "period": "ONE_MONTH"},
                {"feature_id": catalog.campaigns, "period": "CUSTOM",
                 "custom_end_date": end, "usage_limit": 100},
            ]}, input_type="GrantPromotionalEntitlementsInput"),
        step("get_entitlement", {"customerId": customer, "featureId": catalog.campaigns,
                                 "options": {"requestedUsage": 200}},
             input_type="FetchEntitlementQuery"),
        check,
        step("revoke_promotional_entitlement", {
            "customer_id": customer, "feature_id": catalog.analytics},
            input_type="RevokePromotionalEntitlementInput"),
        check,
        step("get_coupons"),
    ], mode="async")
    e = estimate["estimateSubscription"]
    # $10 + 2 seats × $4 + 2 add-ons × $3 = $24 a month (no tax rate configured for DK).
    assert e["subTotal"] == {"amount": 24, "currency": "USD"}
    assert e["total"] == {"amount": 24, "currency": "USD"}
    u = update["estimateSubscriptionUpdate"]
    # The new recurring price: $10 + 7 × $4 + 2 × $3 = $44; what is due now is the
    # prorated difference.
    assert u["subscription"]["total"] == {"amount": 44, "currency": "USD"}
    p = u["proration"]
    assert p["netAmount"]["amount"] == p["debit"]["amount"] - p["credit"]["amount"]
    assert u["total"]["amount"] == p["netAmount"]["amount"]
    by_feature = {g["feature"]["refId"]: g for g in granted["grantPromotionalEntitlements"]}
    assert by_feature[catalog.analytics]["status"] == "Active"
    assert by_feature[catalog.campaigns]["usageLimit"] == 100
    # The plan's 100 and the promotion's 100 add up.
    m = memory["entitlement"]
    assert (m["isGranted"], m["usageLimit"], m["requestedUsage"]) == (True, 200, 200)
    assert on["entitlement"]["isGranted"] is True
    assert revoked["revokePromotionalEntitlement"]["id"]
    assert off["entitlement"]["isGranted"] is False
    listed = {c["node"]["refId"]: c["node"] for c in coupons["coupons"]["edges"]}
    c = listed[catalog.coupon]
    assert (c["name"], c["type"], c["discountValue"], c["percentOff"], c["status"]) == (
        "Save 20", "PERCENTAGE", 20, 20, "ACTIVE")


@needs("provisionCustomer", "getCustomerByRefId", "provisionSubscriptionV2",
       "getSubscription", "getActiveSubscriptions", "paywall", "products",
       "entitlementsState", "entitlementV2", "creditGrants", "creditsLedger",
       "sdkConfiguration")
def test_customers_subscriptions_paywall_and_entitlements(py_sdk: Driver, catalog: Catalog,
                                                         currency: str, uid: Any) -> None:
    """The rest of what the client offers, sync: provision a customer and a subscription,
    read them back, the paywall and products, the entitlements state, credit pages."""
    customer = uid("cust")
    (provisioned, subscribed, got, sub, active, paywall, products, state, v2, grant, grants,
     ledger, config) = py_sdk.ok([
        step("provision_customer", {"customerId": customer, "name": "Acme",
                                    "email": "billing@acme.test"},
             input_type="ProvisionCustomerInput"),
        step("provision_subscription", {"customerId": customer, "planId": catalog.plan,
                                        "billingPeriod": "MONTHLY", "unitQuantity": 3},
             input_type="ProvisionSubscriptionInput"),
        step("get_customer_by_id", {"customerId": customer},
             input_type="GetCustomerByRefIdInput"),
        step("get_subscription", {"subscriptionId": "$1.provisionSubscription.subscription.subscriptionId"},
             input_type="GetSubscriptionInput"),
        step("get_active_subscriptions_list", {"customerId": customer},
             input_type="GetActiveSubscriptionsInput"),
        step("get_paywall", {"productId": catalog.product}, input_type="GetPaywallInput"),
        step("get_products"),
        step("get_entitlements_state", {"customerId": customer},
             input_type="FetchEntitlementsQuery"),
        step("get_entitlement_v_2", {"customerId": customer, "featureId": catalog.campaigns},
             input_type="GetEntitlementV2Input"),
        step("grant_credits", {"customerId": customer, "currencyId": currency, "amount": 5,
                               "displayName": "g", "grantType": "PAID"},
             input_type="CreditGrantInput"),
        step("get_credit_grants", {"customerId": customer}, input_type="GetCreditGrantsInput"),
        step("get_credit_ledger", {"customerId": customer}, input_type="CreditLedgerInput"),
        step("get_sdk_configuration"),
    ])
    c = provisioned["provisionCustomer"]["customer"]
    assert (c["customerId"], c["name"], c["email"]) == (customer, "Acme", "billing@acme.test")
    s = subscribed["provisionSubscription"]
    assert s["status"] == "SUCCESS"
    assert s["subscription"]["status"] == "ACTIVE"
    assert s["subscription"]["plan"]["refId"] == catalog.plan
    assert got["getCustomerByRefId"]["customerId"] == customer
    assert sub["getSubscription"]["plan"]["refId"] == catalog.plan
    assert [a["plan"]["planId"] for a in active["getActiveSubscriptions"]] == [catalog.plan]
    plans = {p["refId"]: p for p in paywall["paywall"]["plans"]}
    assert plans[catalog.plan]["displayName"] == "Growth"
    assert catalog.product in {e["node"]["refId"] for e in products["products"]["edges"]}
    features = {e["feature"]["refId"]: e for e in state["entitlementsState"]["entitlements"]}
    assert features[catalog.campaigns]["usageLimit"] == 100
    assert v2["entitlementV2"]["__typename"] == "FeatureEntitlement"
    assert v2["entitlementV2"]["isGranted"] is True
    assert grant["createCreditGrant"]["amount"] == 5
    assert grants["creditGrants"]["totalCount"] == 1
    assert [e["node"]["amount"] for e in ledger["creditsLedger"]["edges"]] == [5]
    assert config["sdkConfiguration"] is not None



def test_reads_go_through_edge_as_by_default(py_sdk: Driver, client: Any,
                                             catalog: Catalog) -> None:
    """`Stigg.create_client(key, api_url=…, enable_edge=True, edge_api_url=…)`, the
    client's default: the entitlement, paywall and subscription reads are GETs of the Edge
    JSON files (each request seen on the client's own http_client), accepted by its strict
    models, with exact values, and answering exactly what the same reads answer over
    GraphQL with Edge off (refusals too); writes still go to /graphql."""
    customer = catalog.customer()
    client.v1.subscriptions.provision(customer_id=customer, plan_id=catalog.plan,
                                      unit_quantity=2)
    query = {"customerId": customer}
    report = step("report_usage", {**query, "featureId": catalog.campaigns, "value": 30},
                  input_type="ReportUsageInput")
    reads = [
        step("get_entitlements_state", query, input_type="FetchEntitlementsQuery"),
        step("get_entitlement", {**query, "featureId": catalog.campaigns,
                                 "options": {"requestedUsage": 70}},
             input_type="FetchEntitlementQuery"),
        step("get_entitlement", {**query, "featureId": catalog.campaigns,
                                 "options": {"requestedUsage": 71}},
             input_type="FetchEntitlementQuery"),
        step("get_entitlements", query, input_type="FetchEntitlementsQuery"),
        step("get_paywall", {}, input_type="GetPaywallInput"),
        step("get_paywall", {"productId": catalog.product}, input_type="GetPaywallInput"),
        step("get_active_subscriptions_list", query, input_type="GetActiveSubscriptionsInput"),
    ]
    refusals = [
        step("get_entitlements_state", query, input_type="FetchEntitlementsQuery",
             key="cd_wrong"),
        step("get_entitlements_state", {"customerId": "nobody"},
             input_type="FetchEntitlementsQuery"),
    ]
    [report_result, *edge, wrong, unknown] = py_sdk.run([report, *reads, *refusals],
                                                        edge=True)
    *graphql, wrong_graphql, unknown_graphql = py_sdk.run([*reads, *refusals])
    # A wrong API key on an Edge read is HTTP 401 (the client raises its
    # GraphQLClientHttpError; over GraphQL it is Unauthenticated); an unknown customer's
    # state says CustomerNotFound both ways.
    assert (error_of(wrong)["type"], error_of(wrong)["message"]) == (
        "GraphQLClientHttpError", "HTTP status code: 401")
    assert wrong["requests"] == [f"GET /v1/c/{customer}/entitlements-state.json"]
    assert error_of(wrong_graphql)["codes"] == ["Unauthenticated"]
    assert unknown["requests"] == ["GET /v1/c/nobody/entitlements-state.json"]
    assert unknown["ok"]["entitlementsState"] == {
        "__typename": "EntitlementsState", "entitlements": [], "entitlementsV2": [],
        "accessDeniedReason": "CustomerNotFound"}
    assert unknown_graphql["ok"] == unknown["ok"]

    for result in (report_result, *edge, *graphql):
        assert "ok" in result, result
    used, write = report_result["ok"], report_result["requests"]
    edge = [(r["ok"], r["requests"]) for r in edge]
    graphql = [(r["ok"], r["requests"]) for r in graphql]
    assert used["reportUsage"]["currentUsage"] == 30
    assert write == ["POST /graphql ReportUsage"]
    c, paywall = f"/v1/c/{customer}", "fetchAllCountriesPrices=false&includeHiddenPlans=false"
    assert [requests for _, requests in edge] == [
        [f"GET {c}/entitlements-state.json"],
        [f"GET {c}/entitlements.json?featureId={catalog.campaigns}&requestedUsage=70.0"],
        [f"GET {c}/entitlements.json?featureId={catalog.campaigns}&requestedUsage=71.0"],
        [f"GET {c}/entitlements.json"],
        [f"GET /v1/paywall.json?{paywall}"],
        [f"GET /v1/p/{catalog.product}/paywall.json?{paywall}"],
        [f"GET {c}/subscriptions.json"]]
    assert [requests for _, requests in graphql] == [[f"POST /graphql {name}"] for name in (
        "GetEntitlementsState", "GetEntitlement", "GetEntitlement", "GetEntitlements",
        "GetPaywall", "GetPaywall", "GetActiveSubscriptionsList")]
    assert [answer for answer, _ in edge] == [answer for answer, _ in graphql]

    state, fits, over, listed, everything, product, subscriptions = (a for a, _ in edge)
    [e] = state["entitlementsState"]["entitlements"]
    assert (e["feature"]["refId"], e["isGranted"], e["usageLimit"], e["currentUsage"],
            e["resetPeriod"]) == (catalog.campaigns, True, 100, 30, "MONTH")
    [v2] = state["entitlementsState"]["entitlementsV2"]
    assert (v2["__typename"], v2["usageLimit"], v2["currentUsage"]) == (
        "FeatureEntitlement", 100, 30)
    # 30 used: 70 more fits the plan's 100, 71 does not.
    f = fits["entitlement"]
    assert (f["isGranted"], f["requestedUsage"], f["accessDeniedReason"]) == (True, 70, None)
    o = over["entitlement"]
    assert (o["isGranted"], o["requestedUsage"], o["accessDeniedReason"]) == (
        False, 71, "RequestedUsageExceedingLimit")
    assert [x["feature"]["refId"] for x in listed["entitlements"]] == [catalog.campaigns]
    assert listed["entitlements"][0]["currentUsage"] == 30
    # Without a product the paywall holds every product's plans (the module's server is
    # shared), this one's among them.
    assert catalog.plan in {p["refId"] for p in everything["paywall"]["plans"]}
    [plan] = product["paywall"]["plans"]
    assert (plan["refId"], plan["displayName"], plan["product"]["refId"]) == (
        catalog.plan, "Growth", catalog.product)
    assert sorted((p["billingModel"], p["price"]["amount"]) for p in plan["prices"]) == [
        ("FLAT_FEE", 10), ("PER_UNIT", 4)]
    [addon] = plan["compatibleAddons"]
    assert (addon["refId"], addon["maxQuantity"], addon["prices"][0]["price"]["amount"]) == (
        catalog.addon, 5, 3)
    [sub] = subscriptions["getActiveSubscriptions"]
    assert (sub["status"], sub["plan"]["planId"], sub["customer"]["customerId"],
            sub["billingPeriod"]) == ("ACTIVE", catalog.plan, customer, "MONTHLY")
