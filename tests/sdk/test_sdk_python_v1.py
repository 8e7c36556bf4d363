"""Stigg's first Python GraphQL client, `stigg-api-client` 6.25.0 (sgqlc; deprecated by Stigg
for stigg-api-client-v2, still on PyPI), in its own venv, against creditd: the operations
test_sdk_python.py makes through v2, made as the client's README does
(`client.request(Stigg.mutation.report_usage, {"input": {...}})`), with Edge off and on,
effects asserted exactly.

Eight of the client's documents for served operations are invalid GraphQL as sent: sgqlc
16.5 (the newest the client allows, `sgqlc<17`) renders a named fragment spread inside an
inline fragment of another fragment (`... on FeatureEntitlement {
...FeatureEntitlementFragment }`) but never collects it into the document's definitions
(`SelectionList.__collect_fragments__` walks selections and fragments, not `__casts__`).
creditd completes them with the same fragments' definitions from Stigg's v2 client, which
is generated from the same operation files (gateway/graphql/recorded.py), so these
operations work; `test_the_documents_the_client_sends` records exactly which documents and
fragments.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from graphql import parse, validate

from tests.sdk.harness import Catalog, Driver, error_of, served

COUNT_LOGINS = {"aggregation": {"function": "COUNT"}, "filters": [{"conditions": [
    {"field": "eventName", "operation": "EQUALS", "value": "user_login"}]}]}

_PACKAGE = ["Unknown fragment 'PackageFeatureEntitlementFragment'.",
            "Unknown fragment 'PackageCreditEntitlementFragment'."]
_ENTITLEMENT = ["Unknown fragment 'FeatureEntitlementFragment'.",
                "Unknown fragment 'CreditEntitlementFragment'."]
# Every document of stigg-api-client 6.25.0 that Stigg's own schema (gateway/graphql/
# stigg.graphql) refuses, with graphql-core's validation messages: only undefined fragments.
INVALID = {
    # Operations creditd serves.
    "query.get_active_subscriptions": _PACKAGE,      # SubscriptionFragment > PlanFragment
    "query.get_customer_by_id": _PACKAGE,            # CustomerWithSubscriptionsFragment
    "query.get_paywall": _PACKAGE,                   # PaywallFragment > PlanFragment
    "query.get_subscription": _PACKAGE,              # SubscriptionFragment > PlanFragment
    "query.get_entitlement_v2": _ENTITLEMENT,        # EntitlementUnionFragment
    "query.get_entitlements_state": _ENTITLEMENT,    # entitlementsV2: EntitlementUnionFragment
    "mutation.provision_customer": _ENTITLEMENT,     # subscription's entitlements
    "mutation.provision_subscription": _ENTITLEMENT,  # subscription's entitlements
    # Operations creditd does not serve (docs/graphql.md), invalid anyway.
    "query.get_checkout_state": [
        "Unknown fragment 'StripeCheckoutCredentialsFragment'.",
        "Unknown fragment 'ZuoraCheckoutCredentialsFragment'.",
        "Unknown fragment 'AirwallexCheckoutCredentialsFragment'.", *_PACKAGE],
    "query.get_customer_portal_by_ref_id": _ENTITLEMENT,
    "query.get_mock_paywall": _PACKAGE,
    "mutation.apply_subscription": [*_PACKAGE, *_ENTITLEMENT],
}


class Refused(AssertionError):
    """The server answered errors where the test wants data."""


def v1(operation: str, variables: dict[str, Any] | None = None, *,
       key: str | None = None) -> dict[str, Any]:
    """`client.request(Stigg.<operation>, variables)`, e.g. "mutation.report_usage"."""
    out: dict[str, Any] = {"call": "request", "operation": operation,
                           "variables": variables or {}}
    if key:
        out["key"] = key
    return out


def read(call: str, variables: dict[str, Any], *, key: str | None = None) -> dict[str, Any]:
    """The client's own `get_entitlements` / `get_entitlements_state` / `get_paywall`:
    Edge with Edge on, else the operation over GraphQL answered raw."""
    out: dict[str, Any] = {"call": call, "variables": variables}
    if key:
        out["key"] = key
    return out


def answers(results: list[dict[str, Any]]) -> list[Any]:
    """Each step's answer; a refusal raises. A raw answer (`{"data", "errors"}`, the client's Edge-capable reads) is unwrapped."""
    out = []
    for result in results:
        if "ok" in result and isinstance(result["ok"], dict) and "errors" in result["ok"]:
            messages = [e["message"] for e in result["ok"]["errors"]]
        elif "error" in result:
            messages = result["error"]["messages"] or [result["error"]["message"]]
        else:
            out.append(result["ok"])
            continue
        raise Refused(f"{result['requests']}: {messages}")
    return out


def credit_feature(client: Any, uid: Any, currency: str, rate: float, **kw: Any) -> str:
    fid = uid("sdk-feature")
    client.v1.features.create_feature(
        id=fid, display_name="Metered", feature_type="NUMBER",
        extra_body={"creditRate": {"amount": rate, "currencyId": currency}}, **kw)
    return fid


def test_the_documents_the_client_sends(py_v1_sdk: Driver, catalog: Catalog) -> None:
    """Every document the client can send, rendered by its sgqlc operations, checked
    against Stigg's whole schema: exactly those in INVALID fail, only for undefined
    fragments; every valid one of a served root field validates against the schema creditd
    serves, and so does every invalid one once creditd completed it."""
    from gateway.graphql.resolvers import ROOTS
    from gateway.graphql.schema import served_schema, stigg_schema

    [documents] = py_v1_sdk.ok([{"call": "documents"}])
    assert len(documents) == 64
    stigg, mine = stigg_schema(), served_schema(ROOTS)
    refused = {}
    for operation, document in documents.items():
        errors = [e.message for e in validate(stigg, parse(document))]
        if errors:
            refused[operation] = errors
            continue
        root = parse(document).definitions[0].selection_set.selections[0].name.value
        if root in served():
            assert validate(mine, parse(document)) == [], operation
    assert refused == INVALID

    from graphql import DocumentNode

    from gateway.graphql.recorded import complete
    for operation in INVALID:
        root = parse(documents[operation]).definitions[0].selection_set.selections[0]
        if root.name.value in served():
            completed = complete(parse(documents[operation]))
            assert isinstance(completed, DocumentNode), operation
            assert validate(mine, completed) == [], operation


def test_usage_and_event_reports_burn_credits_once(py_v1_sdk: Driver, client: Any, uid: Any,
                                                   customer: str, currency: str) -> None:
    """The client as users create it (Edge on, its default): reports still go to /graphql;
    the resource's balance moves by the mapped amounts, and a repeated event key counts
    once."""
    campaigns = credit_feature(client, uid, currency, 0.5, meter_type="INCREMENTAL")
    credit_feature(client, uid, currency, 2.5, meter=COUNT_LOGINS)  # counts user_login
    event = {"customerId": customer, "resourceId": "resource-01", "eventName": "user_login",
             "idempotencyKey": uid("227c1b73"),
             "dimensions": {"user_id": "user-01", "user_email": "john@example.com"}}
    report = v1("mutation.report_usage", {"input": {
        "value": 5, "customerId": customer, "featureId": campaigns,
        "resourceId": "resource-01"}})
    results = py_v1_sdk.run([
        v1("mutation.grant_credits", {"input": {
            "customerId": customer, "currencyId": currency, "amount": 100,
            "displayName": "welcome", "grantType": "PAID", "resourceId": "resource-01"}}),
        report, report,
        v1("mutation.report_event", {"input": {"usageEvents": [event]}}),
        v1("mutation.report_event", {"input": {"usageEvents": [event]}}),
        v1("query.get_credit_balance", {"input": {
            "customerId": customer, "currencyId": currency, "resourceId": "resource-01"}}),
    ], edge=True)
    grant, first, second, event1, event2, balance = answers(results)
    assert [r["requests"] for r in results] == [[f"POST /graphql {name}"] for name in (
        "GrantCredits", "ReportUsage", "ReportUsage", "ReportEvent", "ReportEvent",
        "GetCreditBalance")]
    g = grant["createCreditGrant"]
    assert (g["amount"], g["grantType"], g["status"], g["resourceId"]) == (
        100, "PAID", "ACTIVE", "resource-01")
    used = first["reportUsage"]
    assert (used["__typename"], used["customerId"], used["featureId"], used["resourceId"],
            used["currentUsage"]) == ("UsageMeasurementWithCurrentUsage", customer, campaigns,
                                      "resource-01", 5)
    assert (used["credit"]["currencyId"], used["credit"]["consumed"]) == (
        currency, Decimal("2.5"))
    assert second["reportUsage"]["currentUsage"] == 10
    assert event1 == event2 == {"reportEvent": None}
    [b] = balance["creditBalanceSummary"]["balances"]
    # 100 − 2 × 5 × 0.5 − 1 × 2.5 (the second event repeats the first's key).
    assert (b["currentBalance"], b["totalGranted"], b["totalConsumed"]) == (
        Decimal("92.5"), 100, Decimal("7.5"))
    assert b["resourceId"] == "resource-01"


def test_credits_exactly(py_v1_sdk: Driver, client: Any, uid: Any, customer: str,
                         currency: str) -> None:
    """Grants, an idempotent consumption, the balance, estimates, a void and a bulk
    report, Edge off: 0.1 + 0.2 − 0.3 is 0 (the client's floats carry the server's
    decimals), and the promotional grant is consumed first."""
    images = credit_feature(client, uid, currency, 2.5, meter_type="INCREMENTAL")
    consume = v1("mutation.consume_credits", {"input": {
        "customerId": customer, "currencyId": currency, "amount": 0.3,
        "idempotencyKey": uid("consume")}})
    (promo, paid, consumed, again, balance, estimate, events, voided, after, bulk, grants,
     ledger) = answers(py_v1_sdk.run([
        v1("mutation.grant_credits", {"input": {
            "customerId": customer, "currencyId": currency, "amount": 0.1,
            "displayName": "welcome", "grantType": "PROMOTIONAL", "priority": 10,
            "cost": {"amount": 0, "currency": "USD"}}}),
        v1("mutation.grant_credits", {"input": {
            "customerId": customer, "currencyId": currency, "amount": 0.2,
            "displayName": "top-up", "grantType": "PAID"}}),
        consume, consume,
        v1("query.get_credit_balance", {"input": {"customerId": customer,
                                                  "currencyId": currency}}),
        v1("query.estimate_usage_cost", {"input": {"customerId": customer,
                                                   "featureId": images, "value": 3}}),
        v1("query.estimate_event_cost", {"input": {"customerId": customer,
                                                   "eventName": "nothing-meters"}}),
        v1("mutation.void_credit_grant", {"input": {"id": "$0.createCreditGrant.grantId"}}),
        v1("query.get_credit_balance", {"input": {"customerId": customer}}),
        v1("mutation.report_usage_bulk", {"input": {"usages": [
            {"customerId": customer, "featureId": images, "value": 0},
            {"customerId": customer, "featureId": images, "value": 0,
             "updateBehavior": "SET"}]}}),
        v1("query.get_credit_grants", {"input": {"customerId": customer}}),
        v1("query.get_credit_ledger", {"input": {"customerId": customer}}),
    ]))
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
    assert (events["estimateEventCost"]["estimates"],
            events["estimateEventCost"]["warnings"]) == ([], ["FEATURE_NOT_FOUND"])
    assert voided["voidCreditGrant"]["status"] == "VOIDED"
    assert voided["voidCreditGrant"]["voidedAt"] is not None
    [b] = after["creditBalanceSummary"]["balances"]
    assert b["currentBalance"] == 0  # the promotional 0.1 was consumed first
    assert [u["currentUsage"] for u in bulk["reportUsageBulk"]] == [0, 0]
    page = grants["creditGrants"]
    assert page["totalCount"] == 2
    assert sorted((g["node"]["amount"], g["node"]["status"]) for g in page["edges"]) == [
        (Decimal("0.1"), "VOIDED"), (Decimal("0.2"), "ACTIVE")]
    # The entries add up to the balance: +0.1 +0.2 −0.3, the void of a spent grant 0.
    assert sum(e["node"]["amount"] for e in ledger["creditsLedger"]["edges"]) == 0
    assert ledger["creditsLedger"]["totalCount"] == len(ledger["creditsLedger"]["edges"])


def test_auto_recharge_settings(py_v1_sdk: Driver, client: Any, customer: str,
                                currency: str) -> None:
    client.v1.credits.custom_currencies.update(
        currency, extra_body={"topUp": {"pricePerCredit": 0.01}})
    key = {"customerId": customer, "currencyId": currency}
    # Above the threshold, so saving does not set off a recharge.
    client.v1.credits.grants.create(customer_id=customer, currency_id=currency, amount=10,
                                    display_name="g", grant_type="PAID")
    before, saved, after = answers(py_v1_sdk.run([
        v1("query.get_automatic_recharge_configuration", {"input": key}),
        v1("mutation.save_automatic_recharge_configuration", {"input": {
            **key, "isEnabled": True, "thresholdType": "CreditAmount", "thresholdValue": 5,
            "targetBalance": 20.5, "maxSpendLimit": 100, "grantExpirationPeriod": "OneYear"}}),
        v1("query.get_automatic_recharge_configuration", {"input": key}),
    ]))
    before = before["getAutoRechargeSettings"]
    assert (before["isEnabled"], before["grantExpirationPeriod"]) == (False, "OneMonth")
    s = saved["saveAutoRechargeSettings"]
    assert (s["isEnabled"], s["thresholdType"], s["thresholdValue"], s["targetBalance"],
            s["maxSpendLimit"], s["grantExpirationPeriod"], s["currentMonthlySpend"]) == (
        True, "CreditAmount", 5, Decimal("20.5"), 100, "OneYear", 0)
    assert after["getAutoRechargeSettings"] == s


def test_refusals_reach_the_client_with_stiggs_codes(py_v1_sdk: Driver, customer: str,
                                                     currency: str) -> None:
    """What the server refuses arrives as sgqlc's GraphQLErrors with Stigg's ErrorCode.
    An Edge read with a wrong key is HTTP 401: the client's retry (tenacity, on HTTPError)
    tries again with the variables its first try consumed (`params.pop("customerId")`), so
    what it raises is a KeyError, after that one request (the client's own bug)."""
    unknown, void, consume, wrong_key, wrong_edge = py_v1_sdk.run([
        v1("query.get_credit_balance", {"input": {"customerId": "nobody"}}),
        v1("mutation.void_credit_grant", {"input": {"id": "no-such-grant"}}),
        v1("mutation.consume_credits", {"input": {
            "customerId": customer, "currencyId": currency, "amount": 1,
            "idempotencyKey": "over"}}),
        v1("query.get_credit_balance", {"input": {"customerId": customer}}, key="cd_wrong"),
        read("get_entitlements", {"query": {"customerId": customer}}, key="cd_wrong"),
    ], edge=True)
    assert error_of(unknown)["codes"] == ["CustomerNotFound"]
    assert error_of(void)["codes"] == ["CreditGrantNotFound"]
    refused = error_of(consume)  # nothing granted: refused, naming the field
    assert (refused["type"], refused["codes"]) == ("GraphQLErrors", ["BadUserInput"])
    assert refused["message"].startswith("amount: ")
    assert error_of(wrong_key)["codes"] == ["Unauthenticated"]
    assert (error_of(wrong_edge)["type"], error_of(wrong_edge)["message"]) == (
        "KeyError", "'customerId'")
    assert wrong_edge["requests"] == [f"GET /v1/c/{customer}/entitlements.json"]


def test_estimates_promotions_and_coupons(py_v1_sdk: Driver, client: Any,
                                          catalog: Catalog) -> None:
    """Estimates with hand-computed totals; a promotion flips the entitlement check and its
    revocation flips it back; the coupon listed; a coupon created through the client."""
    customer = catalog.customer()
    made = client.v1.subscriptions.provision(customer_id=customer, plan_id=catalog.plan,
                                             unit_quantity=2).data
    end = (datetime.now(UTC) + timedelta(days=30)).isoformat()
    check = v1("query.get_entitlement", {"query": {"customerId": customer,
                                                   "featureId": catalog.analytics}})
    coupon = catalog.uid("ten-off")
    (estimate, update, granted, memory, on, revoked, off, created, coupons) = answers(
        py_v1_sdk.run([
            v1("mutation.estimate_subscription", {"input": {
                "customerId": customer, "billingPeriod": "MONTHLY", "planId": catalog.plan,
                "billableFeatures": [{"featureId": catalog.seats, "quantity": 2}],
                "addons": [{"addonId": catalog.addon, "quantity": 2}],
                "billingCountryCode": "DK", "resourceId": "resource-01"}}),
            v1("mutation.estimate_subscription_update", {"input": {
                "subscriptionId": made.subscription.id,
                "billableFeatures": [{"featureId": catalog.seats, "quantity": 7}],
                "addons": [{"addonId": catalog.addon, "quantity": 2}]}}),
            v1("mutation.grant_promotional_entitlements", {"input": {
                "customerId": customer, "promotionalEntitlements": [
                    {"featureId": catalog.analytics, "period": "ONE_MONTH"},
                    {"featureId": catalog.campaigns, "period": "CUSTOM",
                     "customEndDate": end, "usageLimit": 100}]}}),
            v1("query.get_entitlement", {"query": {
                "customerId": customer, "featureId": catalog.campaigns,
                "options": {"requestedUsage": 200}}}),
            check,
            v1("mutation.revoke_promotional_entitlement", {"input": {
                "customerId": customer, "featureId": catalog.analytics}}),
            check,
            v1("mutation.create_coupon", {"input": {
                "refId": coupon, "name": "Ten off", "type": "FIXED",
                "amountsOff": [{"amount": 10, "currency": "USD"}]}}),
            v1("query.get_coupons"),
        ]))
    e = estimate["estimateSubscription"]
    # $10 + 2 seats × $4 + 2 add-ons × $3 = $24 a month (no tax rate configured for DK).
    assert (e["subTotal"], e["total"]) == ({"amount": 24, "currency": "USD"},) * 2
    assert e["subscription"]["total"] == {"amount": 24, "currency": "USD"}
    u = update["estimateSubscriptionUpdate"]
    # The new recurring price: $10 + 7 × $4 + 2 × $3 = $44; due now, the prorated
    # difference.
    assert u["subscription"]["total"] == {"amount": 44, "currency": "USD"}
    p = u["proration"]
    assert p["netAmount"]["amount"] == p["debit"]["amount"] - p["credit"]["amount"]
    assert u["total"]["amount"] == p["netAmount"]["amount"]
    by_feature = {g["feature"]["refId"]: g for g in granted["grantPromotionalEntitlements"]}
    assert by_feature[catalog.analytics]["status"] == "Active"
    assert by_feature[catalog.campaigns]["usageLimit"] == 100
    m = memory["entitlement"]  # the plan's 100 and the promotion's 100 add up
    assert (m["isGranted"], m["usageLimit"], m["requestedUsage"]) == (True, 200, 200)
    assert on["entitlement"]["isGranted"] is True
    assert revoked["revokePromotionalEntitlement"]["id"]
    assert off["entitlement"]["isGranted"] is False
    assert off["entitlement"]["accessDeniedReason"] is not None
    c = created["createOneCoupon"]
    assert (c["refId"], c["type"], c["amountsOff"], c["status"]) == (
        coupon, "FIXED", [{"amount": 10, "currency": "USD"}], "ACTIVE")
    listed = {c["node"]["refId"]: c["node"] for c in coupons["coupons"]["edges"]}
    c = listed[catalog.coupon]
    assert (c["name"], c["type"], c["discountValue"], c["percentOff"], c["status"]) == (
        "Save 20", "PERCENTAGE", 20, 20, "ACTIVE")
    assert listed[coupon]["amountsOff"] == [{"amount": 10, "currency": "USD"}]


def test_customers_and_subscriptions(py_v1_sdk: Driver, catalog: Catalog) -> None:
    """What the client's valid documents do with customers and subscriptions: update,
    archive and unarchive a customer; create a subscription, list it, change its seats,
    cancel it; the products, the entitlements and the SDK configuration."""
    customer = catalog.customer()
    subscription = {"subscriptionId": "$3.createSubscription.subscriptionId"}
    (updated, archived, unarchived, created, active, listed, changed, entitlements,
     cancelled, after, products, config) = answers(py_v1_sdk.run([
        v1("mutation.update_customer", {"input": {
            "customerId": customer, "name": "Acme Inc", "email": "billing@acme.test"}}),
        v1("mutation.archive_customer", {"input": {"customerId": customer}}),
        v1("mutation.unarchive_customer", {"input": {"customerId": customer}}),
        v1("mutation.create_subscription", {"input": {
            "customerId": customer, "planId": catalog.plan, "billingPeriod": "MONTHLY",
            "unitQuantity": 3, "addons": [{"addonId": catalog.addon, "quantity": 1}]}}),
        v1("query.get_active_subscriptions_list", {"input": {"customerId": customer}}),
        v1("query.get_subscriptions", {"filter": {"customerId": {"eq": customer}}}),
        v1("mutation.update_subscription", {"input": {
            **subscription, "addons": [{"addonId": catalog.addon, "quantity": 3}]}}),
        v1("query.get_entitlements", {"query": {"customerId": customer}}),
        v1("mutation.cancel_subscription", {"input": {
            "subscriptionRefId": subscription["subscriptionId"],
            "subscriptionCancellationTime": "IMMEDIATE"}}),
        v1("query.get_active_subscriptions_list", {"input": {"customerId": customer}}),
        v1("query.get_products"),
        v1("query.get_sdk_configuration"),
    ]))
    u = updated["update_customer"]
    assert (u["customerId"], u["name"], u["email"]) == (customer, "Acme Inc",
                                                        "billing@acme.test")
    assert archived["archiveCustomer"]["customerId"] == customer
    assert unarchived["unarchiveCustomer"]["customerId"] == customer
    s = created["createSubscription"]
    assert (s["status"], s["plan"]["refId"], s["customer"]["refId"]) == (
        "ACTIVE", catalog.plan, customer)
    assert [(a["addon"]["refId"], a["quantity"]) for a in s["addons"]] == [(catalog.addon, 1)]
    assert sorted((p["price"]["billingModel"], p["price"]["billingPeriod"],
                   p["price"]["price"]["amount"]) for p in s["prices"]) == [
        ("FLAT_FEE", "MONTHLY", 3), ("FLAT_FEE", "MONTHLY", 10), ("PER_UNIT", "MONTHLY", 4)]
    [a] = active["getActiveSubscriptions"]
    assert (a["subscriptionId"], a["plan"]["plan_id"], a["customer"]["customerId"]) == (
        s["subscriptionId"], catalog.plan, customer)
    [node] = [e["node"] for e in listed["subscriptions"]["edges"]]
    assert (node["subscriptionId"], node["status"]) == (s["subscriptionId"], "ACTIVE")
    c = changed["update_subscription"]
    assert c["subscriptionId"] == s["subscriptionId"]
    assert [(a["addon"]["refId"], a["quantity"]) for a in c["addons"]] == [(catalog.addon, 3)]
    [e] = entitlements["entitlements"]
    assert (e["feature"]["refId"], e["usageLimit"], e["resetPeriod"]) == (
        catalog.campaigns, 100, "MONTH")
    assert cancelled["cancelSubscription"]["status"] in ("CANCELED", "EXPIRED")
    assert after["getActiveSubscriptions"] == []
    assert catalog.product in {e["node"]["refId"] for e in products["products"]["edges"]}
    assert config["sdkConfiguration"] == {"sentryDsn": None, "isWidgetWatermarkEnabled": False,
                                          "showWatermark": False}


def _common(edge: Any, graphql: Any) -> Any:
    """`edge` cut to what `graphql` selects as well (the Edge file holds v2's selection)."""
    if isinstance(edge, dict) and isinstance(graphql, dict):
        return {k: _common(edge[k], graphql[k]) for k in graphql if k in edge}
    if isinstance(edge, list) and isinstance(graphql, list) and len(edge) == len(graphql):
        return [_common(e, g) for e, g in zip(edge, graphql, strict=True)]
    return edge


def test_edge_reads(py_v1_sdk: Driver, client: Any, catalog: Catalog) -> None:
    """Edge on (`edge_api_url` = the server): the client's `get_entitlements`,
    `get_entitlements_state` and `get_paywall` are GETs of the Edge files, answered raw
    with exact values; `get_entitlements` answers the same over GraphQL with Edge off (on
    the fields both select). An unknown customer's state says CustomerNotFound."""
    customer = catalog.customer()
    client.v1.subscriptions.provision(customer_id=customer, plan_id=catalog.plan,
                                      unit_quantity=2)
    query = {"customerId": customer}
    listing = read("get_entitlements", {"query": query})
    results = py_v1_sdk.run([
        v1("mutation.report_usage", {"input": {**query, "featureId": catalog.campaigns,
                                               "value": 30}}),
        read("get_entitlements_state", {"query": query}),
        listing,
        read("get_paywall", {"input": {"productId": catalog.product}}),
        read("get_paywall", {"input": {}}),
        read("get_entitlements_state", {"query": {"customerId": "nobody"}}),
    ], edge=True)
    [graphql] = py_v1_sdk.run([listing])
    used, state, listed, product, everything, unknown = answers(results)
    c = f"/v1/c/{customer}"
    assert [r["requests"] for r in results] == [
        ["POST /graphql ReportUsage"], [f"GET {c}/entitlements-state.json"],
        [f"GET {c}/entitlements.json"], [f"GET /v1/p/{catalog.product}/paywall.json"],
        ["GET /v1/paywall.json"], ["GET /v1/c/nobody/entitlements-state.json"]]
    assert graphql["requests"] == ["POST /graphql GetEntitlements"]
    assert used["reportUsage"]["currentUsage"] == 30

    s = state["data"]["entitlementsState"]
    [e] = s["entitlements"]
    assert (e["feature"]["refId"], e["isGranted"], e["usageLimit"], e["currentUsage"],
            e["resetPeriod"]) == (catalog.campaigns, True, 100, 30, "MONTH")
    [v2] = s["entitlementsV2"]
    assert (v2["__typename"], v2["usageLimit"], v2["currentUsage"]) == (
        "FeatureEntitlement", 100, 30)
    [x] = listed["data"]["entitlements"]
    assert (x["feature"]["refId"], x["currentUsage"]) == (catalog.campaigns, 30)
    over_graphql = answers([graphql])[0]["data"]
    assert _common(listed["data"], over_graphql) == over_graphql
    [plan] = product["data"]["paywall"]["plans"]
    assert (plan["refId"], plan["displayName"], plan["product"]["refId"]) == (
        catalog.plan, "Growth", catalog.product)
    assert sorted((p["billingModel"], p["price"]["amount"]) for p in plan["prices"]) == [
        ("FLAT_FEE", 10), ("PER_UNIT", 4)]
    assert catalog.plan in {p["refId"] for p in everything["data"]["paywall"]["plans"]}
    assert unknown["data"]["entitlementsState"] == {
        "__typename": "EntitlementsState", "entitlements": [], "entitlementsV2": [],
        "accessDeniedReason": "CustomerNotFound"}


def test_edge_paywall_with_the_clients_booleans(py_v1_sdk: Driver, catalog: Catalog) -> None:
    """The client puts booleans into the Edge query string as Python prints them
    (`fetchAllCountriesPrices=False&includeHiddenPlans=True`): read as booleans."""
    [paywall] = answers(py_v1_sdk.run([read("get_paywall", {"input": {
        "productId": catalog.product, "fetchAllCountriesPrices": False,
        "includeHiddenPlans": True}})], edge=True))
    assert [p["refId"] for p in paywall["data"]["paywall"]["plans"]] == [catalog.plan]


# The operations whose v1 documents are invalid as sent (INVALID), completed by creditd.

def test_provision_customer(py_v1_sdk: Driver, catalog: Catalog) -> None:
    customer = catalog.uid("cust")
    [provisioned] = answers(py_v1_sdk.run([v1("mutation.provision_customer", {"input": {
        "customerId": customer, "name": "Acme", "email": "billing@acme.test"}})]))
    c = provisioned["provisionCustomer"]["customer"]
    assert (c["customerId"], c["name"], c["email"]) == (customer, "Acme", "billing@acme.test")
    assert catalog.client.v1.customers.retrieve(customer).data.name == "Acme"


def test_provision_subscription(py_v1_sdk: Driver, catalog: Catalog) -> None:
    customer = catalog.customer()
    [subscribed, active] = answers(py_v1_sdk.run([
        v1("mutation.provision_subscription", {"input": {
            "customerId": customer, "planId": catalog.plan, "billingPeriod": "MONTHLY",
            "unitQuantity": 3}}),
        v1("query.get_active_subscriptions_list", {"input": {"customerId": customer}})]))
    s = subscribed["provision_subscription"]
    assert (s["status"], s["subscription"]["status"]) == ("SUCCESS", "ACTIVE")
    assert [a["plan"]["plan_id"] for a in active["getActiveSubscriptions"]] == [catalog.plan]


def test_get_customer_by_id(py_v1_sdk: Driver, catalog: Catalog) -> None:
    customer = catalog.customer()
    [got] = answers(py_v1_sdk.run([v1("query.get_customer_by_id", {
        "input": {"customerId": customer}})]))
    assert (got["getCustomerByRefId"]["customerId"], got["getCustomerByRefId"]["name"]) == (
        customer, "Acme")


def test_get_subscription(py_v1_sdk: Driver, client: Any, catalog: Catalog) -> None:
    customer = catalog.customer()
    made = client.v1.subscriptions.provision(customer_id=customer, plan_id=catalog.plan,
                                             unit_quantity=2).data
    [sub] = answers(py_v1_sdk.run([v1("query.get_subscription", {
        "input": {"subscriptionId": made.subscription.id}})]))
    assert sub["getSubscription"]["plan"]["refId"] == catalog.plan


def test_get_active_subscriptions(py_v1_sdk: Driver, client: Any, catalog: Catalog) -> None:
    customer = catalog.customer()
    client.v1.subscriptions.provision(customer_id=customer, plan_id=catalog.plan,
                                      unit_quantity=2)
    [active] = answers(py_v1_sdk.run([v1("query.get_active_subscriptions", {
        "input": {"customerId": customer}})]))
    assert [a["plan"]["refId"] for a in active["getActiveSubscriptions"]] == [catalog.plan]


def test_get_entitlement_v2(py_v1_sdk: Driver, client: Any, catalog: Catalog) -> None:
    customer = catalog.customer()
    client.v1.subscriptions.provision(customer_id=customer, plan_id=catalog.plan,
                                      unit_quantity=2)
    [v2] = answers(py_v1_sdk.run([v1("query.get_entitlement_v2", {"query": {
        "customerId": customer, "featureId": catalog.campaigns}})]))
    assert (v2["entitlementV2"]["__typename"], v2["entitlementV2"]["isGranted"]) == (
        "FeatureEntitlement", True)


def test_get_entitlements_state_with_edge_off(py_v1_sdk: Driver, client: Any,
                                              catalog: Catalog) -> None:
    customer = catalog.customer()
    client.v1.subscriptions.provision(customer_id=customer, plan_id=catalog.plan,
                                      unit_quantity=2)
    [state] = answers(py_v1_sdk.run([read("get_entitlements_state", {
        "query": {"customerId": customer}})]))
    [e] = state["data"]["entitlementsState"]["entitlements"]
    assert (e["feature"]["refId"], e["usageLimit"]) == (catalog.campaigns, 100)


def test_get_paywall_with_edge_off(py_v1_sdk: Driver, catalog: Catalog) -> None:
    [paywall] = answers(py_v1_sdk.run([read("get_paywall", {
        "input": {"productId": catalog.product}})]))
    [plan] = paywall["data"]["paywall"]["plans"]
    assert (plan["refId"], plan["displayName"]) == (catalog.plan, "Growth")
