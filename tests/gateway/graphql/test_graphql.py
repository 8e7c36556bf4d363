"""Stigg's GraphQL API at /graphql (gateway/graphql/): the documents Stigg's Python client
sends (stigg-api-client-v2, recorded in graphql/documents.json), answered in Stigg's
schema with exact amounts and Stigg's error shape; the served schema is Stigg's own."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

from graphql import parse, print_type, validate

from gateway.graphql import endpoint
from gateway.graphql import schema as schema_module
from gateway.graphql.schema import served_sdl, stigg_schema
from tests.gateway.graphql.wire import DOCUMENTS, code, data, gql


def test_grant_consume_and_balance_exactly(server: Any, customer: str, currency: str) -> None:
    grant = data(gql(server, "GrantCredits", {"input": {
        "customerId": customer, "currencyId": currency, "amount": Decimal("0.1"),
        "displayName": "welcome", "grantType": "PROMOTIONAL", "priority": 10,
        "cost": {"amount": 0, "currency": "USD"}}}))["createCreditGrant"]
    assert grant["amount"] == Decimal("0.1") and grant["status"] == "ACTIVE"
    assert grant["grantType"] == "PROMOTIONAL" and grant["cost"]["currency"] == "USD"
    data(gql(server, "GrantCredits", {"input": {
        "customerId": customer, "currencyId": currency, "amount": Decimal("0.2"),
        "displayName": "top-up", "grantType": "PAID"}}))
    consumed = data(gql(server, "ConsumeCredits", {"input": {
        "customerId": customer, "currencyId": currency, "amount": Decimal("0.3"),
        "idempotencyKey": "gql-1"}}))["consumeCredits"]
    # 0.1 + 0.2 − 0.3 is 0 exactly (binary floats would leave 5.55e-17).
    assert consumed["amount"] == Decimal("0.3")
    assert consumed["credit"]["usageLimit"] - consumed["credit"]["currentUsage"] == 0
    again = data(gql(server, "ConsumeCredits", {"input": {
        "customerId": customer, "currencyId": currency, "amount": Decimal("0.3"),
        "idempotencyKey": "gql-1"}}))["consumeCredits"]
    assert again == consumed  # the same key: the same answer, applied once

    summary = data(gql(server, "GetCreditBalance", {"input": {
        "customerId": customer, "currencyId": currency}}))["creditBalanceSummary"]
    [b] = summary["balances"]
    assert b["currentBalance"] == 0 and b["totalGranted"] == Decimal("0.3")
    assert b["totalConsumed"] == Decimal("0.3")
    assert b["currency"] == {"currencyId": currency, "displayName": "AI Tokens", "symbol": "T",
                             "units": {"singular": "token", "plural": "tokens"}}

    voided = data(gql(server, "VoidCreditGrant", {"input": {"id": grant["grantId"]}}))
    assert voided["voidCreditGrant"]["status"] == "VOIDED"
    assert code(gql(server, "VoidCreditGrant", {"input": {"id": "nope"}})) == \
        "CreditGrantNotFound"


def test_report_usage_and_events(server: Any, client: Any, customer: str, uid: Any) -> None:
    feature = uid("gql-calls")
    client.v1.features.create_feature(id=feature, display_name="Calls", feature_type="NUMBER",
                                      meter_type="INCREMENTAL")
    first = data(gql(server, "ReportUsage", {"input": {
        "customerId": customer, "featureId": feature, "value": 3,
        "idempotencyKey": "u-1"}}))["reportUsage"]
    assert (first["customerId"], first["featureId"], first["currentUsage"]) == (
        customer, feature, 3)
    bulk = data(gql(server, "ReportUsageBulk", {"input": {"usages": [
        {"customerId": customer, "featureId": feature, "value": 2},
        {"customerId": customer, "featureId": feature, "value": 5,
         "updateBehavior": "SET"}]}}))["reportUsageBulk"]
    assert [u["currentUsage"] for u in bulk] == [5, 5]
    # Raw events are accepted (metered into every matching feature's usage).
    assert data(gql(server, "ReportEvent", {"input": {"usageEvents": [
        {"customerId": customer, "eventName": "call", "idempotencyKey": "e-1",
         "dimensions": {"model": "small"}}]}})) == {"reportEvent": None}
    # A refusal names its field and code, and nothing of the batch is applied.
    bad = gql(server, "ReportUsageBulk", {"input": {"usages": [
        {"customerId": customer, "featureId": feature, "value": 1},
        {"customerId": "nobody", "featureId": feature, "value": 1}]}})
    assert code(bad) == "CustomerNotFound" and bad["data"] is None
    assert bad["errors"][0]["extensions"]["field"] == "usages[1].customerId"
    after = data(gql(server, "ReportUsage", {"input": {
        "customerId": customer, "featureId": feature, "value": 0}}))["reportUsage"]
    assert after["currentUsage"] == 5


def test_errors_in_stiggs_shape(server: Any, customer: str, currency: str) -> None:
    assert code(gql(server, "GetCreditBalance", {"input": {"customerId": customer}},
                    key=None)) == "Unauthenticated"
    assert code(gql(server, "GetCreditBalance", {"input": {"customerId": customer}},
                    key="cd_wrong")) == "Unauthenticated"
    assert code(gql(server, "GetCreditBalance", {"input": {"customerId": "nobody"}})) == \
        "CustomerNotFound"
    # A variable that does not coerce (a string amount) is named; nothing is applied.
    wrong = gql(server, "ConsumeCredits", {"input": {
        "customerId": customer, "currencyId": currency, "amount": "lots",
        "idempotencyKey": "k"}})
    assert code(wrong) == "BadUserInput" and "amount" in wrong["errors"][0]["message"]
    # What creditd does not serve (yet) is named, never a 500.
    unserved = gql(server, "GetMockPaywall", {}, query="query GetMockPaywall { "
                   "mockPaywall(input: {}) { plans { id } } }")
    assert code(unserved) == "BadUserInput"
    assert "mockPaywall" in unserved["errors"][0]["message"]
    assert code(gql(server, "X", {}, query="query X { ")) == "BadUserInput"
    with server.http() as http:
        assert http.post("/graphql", content=b"[1]").json()["errors"][0]["extensions"][
            "code"] == "BadUserInput"
        # GET runs queries, not mutations.
        r = http.get("/graphql", params={
            "query": DOCUMENTS["ConsumeCredits"]["query"], "operationName": "ConsumeCredits",
            "variables": json.dumps({"input": {"customerId": customer, "currencyId": currency,
                                               "amount": 1, "idempotencyKey": "g"}})})
        assert r.json()["errors"][0]["extensions"]["code"] == "BadUserInput"
        r = http.get("/graphql", params={
            "query": DOCUMENTS["GetCreditBalance"]["query"],
            "operationName": "GetCreditBalance",
            "variables": json.dumps({"input": {"customerId": customer}})})
        assert "errors" not in r.json(), r.text


def test_the_served_schema_is_stiggs(server: Any) -> None:
    """Every type the endpoint serves is defined exactly as in Stigg's schema (names,
    fields, arguments, nullability, enum values), and the root fields are Stigg's."""
    # served.graphql is the cut of Stigg's schema for exactly the resolved root fields.
    assert (Path(schema_module.__file__).with_name("served.graphql").read_text()
            == served_sdl(endpoint.ROOTS)), "run scripts/served_schema.py"
    with server.http() as http:
        r = http.post("/graphql", json={"query": "{ __schema { types { name } } }"})
    served_names = {t["name"] for t in r.json()["data"]["__schema"]["types"]}
    full = stigg_schema()
    served = endpoint.schema()
    assert {t for t in served_names if not t.startswith("__")} == {
        t for t in served.type_map if not t.startswith("__")}
    for name, t in served.type_map.items():
        if name.startswith("__") or name in ("Query", "Mutation"):
            continue
        assert print_type(t) == print_type(full.get_type(name)), name
    for root in ("Query", "Mutation", "Subscription"):
        for field, definition in served.get_type(root).fields.items():
            stigg = full.get_type(root).fields[field]
            assert str(definition.type) == str(stigg.type), field
            assert {a: str(v.type) for a, v in definition.args.items()} == {
                a: str(v.type) for a, v in stigg.args.items()}, field
    # Every recorded client document (the operations issue 17 names, and ConsumeCreditsAsync)
    # validates against
    # what is served.
    assert len(DOCUMENTS) == 46
    for name, doc in DOCUMENTS.items():
        assert validate(served, parse(doc["query"])) == [], name


def test_cost_estimates_and_auto_recharge(server: Any, client: Any, customer: str,
                                          currency: str, uid: Any) -> None:
    feature = uid("gql-images")
    client.v1.features.create_feature(
        id=feature, display_name="Images", feature_type="NUMBER", meter_type="INCREMENTAL",
        extra_body={"creditRate": {"amount": 2.5, "currencyId": currency}})
    data(gql(server, "GrantCredits", {"input": {
        "customerId": customer, "currencyId": currency, "amount": 10,
        "displayName": "g", "grantType": "PAID"}}))
    estimate = data(gql(server, "EstimateUsageCost", {"input": {
        "customerId": customer, "featureId": feature, "value": 3}}))["estimateUsageCost"]
    [e] = estimate["estimates"]
    assert (e["currencyId"], e["estimatedCost"], e["currentBalance"]) == (currency, Decimal(
        "7.5"), 10)
    assert e["balanceAfterEstimate"] == Decimal("2.5") and e["wouldOverdraft"] is False
    assert e["breakdown"] == [{"featureId": feature, "cost": Decimal("7.5"),
                               "warningCode": None}]
    missing = data(gql(server, "EstimateUsageCost", {"input": {
        "customerId": customer, "featureId": "no-such", "value": 1}}))["estimateUsageCost"]
    assert missing == {"estimates": [], "warnings": ["FEATURE_NOT_FOUND"]}
    events = data(gql(server, "EstimateEventCost", {"input": {
        "customerId": customer, "eventName": "nothing-meters-this"}}))["estimateEventCost"]
    assert events["estimates"] == [] and events["warnings"] == ["FEATURE_NOT_FOUND"]

    # Auto-recharge: the currency needs a top-up price first (a refusal naming it).
    got = data(gql(server, "GetAutomaticRechargeConfiguration", {"input": {
        "customerId": customer, "currencyId": currency}}))["getAutoRechargeSettings"]
    assert got["isEnabled"] is False and got["grantExpirationPeriod"] == "OneMonth"
    save = {"input": {"customerId": customer, "currencyId": currency, "isEnabled": True,
                      "thresholdType": "CreditAmount", "thresholdValue": 5,
                      "targetBalance": Decimal("20.5"), "grantExpirationPeriod": "OneYear"}}
    refused = gql(server, "SaveAutomaticRechargeConfiguration", save)
    assert code(refused) == "BadUserInput"
    assert refused["errors"][0]["extensions"]["field"] == "currencyId"
    client.v1.credits.custom_currencies.update(
        currency, extra_body={"topUp": {"pricePerCredit": 0.01}})
    saved = data(gql(server, "SaveAutomaticRechargeConfiguration", save))[
        "saveAutoRechargeSettings"]
    assert (saved["isEnabled"], saved["thresholdValue"], saved["targetBalance"],
            saved["grantExpirationPeriod"], saved["thresholdType"]) == (
        True, 5, Decimal("20.5"), "OneYear", "CreditAmount")
    again = data(gql(server, "GetAutomaticRechargeConfiguration", {"input": {
        "customerId": customer, "currencyId": currency}}))["getAutoRechargeSettings"]
    assert again == saved


def test_hostile_documents_are_refused_not_crashed(server: Any) -> None:
    """Documents no client sends — nested past the interpreter's stack, or with a huge
    number of tokens — are a BadUserInput, not a 500."""
    deep = "query Deep { " + "a { " * 5000 + "b" + " }" * 5001  # 10,000 tokens
    assert code(gql(server, "Deep", {}, query=deep)) == "BadUserInput"
    wide = "query Wide { " + " ".join("__typename" for _ in range(60_000)) + " }"
    assert code(gql(server, "Wide", {}, query=wide)) == "BadUserInput"


def test_bad_documents_are_graphql_errors(server: Any, customer: str) -> None:
    """Wrong types, unknown fields, missing variables, an unknown operation, documents
    nesting past DEPTH_MAX or with more than ALIASES_MAX aliases, fragments multiplying
    fragments: each an error with a code naming the problem, HTTP 200, never a 500."""
    balance = DOCUMENTS["GetCreditBalance"]["query"]
    missing = gql(server, "GetCreditBalance", {})
    assert code(missing) == "BadUserInput" and "$input" in missing["errors"][0]["message"]
    wrong = gql(server, "GetCreditBalance", {"input": {"customerId": 7}})
    assert code(wrong) == "BadUserInput" and "customerId" in wrong["errors"][0]["message"]
    extra = gql(server, "GetCreditBalance", {"input": {"customerId": customer, "bogus": 1}})
    assert code(extra) == "BadUserInput" and "bogus" in extra["errors"][0]["message"]
    field = gql(server, "X", {}, query="query X { creditBalanceSummary(input: "
                "{customerId: \"c\"}) { customerId noSuchField } }")
    assert code(field) == "BadUserInput" and "noSuchField" in field["errors"][0]["message"]
    assert code(gql(server, "Other", {"input": {"customerId": customer}}, query=balance)) == \
        "BadUserInput"  # the operation name is not in the document

    nested = ("query D($c: String!) { creditBalanceSummary(input: {customerId: $c}) { "
              "balances { currency { units { plural } } } } }")
    assert "errors" not in gql(server, "D", {"c": customer}, query=nested)
    fragments = "".join(f"fragment F{i} on CreditBalanceSummary {{ customerId ...F{i + 1} }} "
                        for i in range(25)) + "fragment F25 on CreditBalanceSummary { customerId }"
    deep = ("query D { creditBalanceSummary(input: {customerId: \"c\"}) { ...F0 } } "
            + fragments)
    # (fragments add no depth: every field is one level below the root field)
    assert code(gql(server, "D", {}, query=deep)) == "CustomerNotFound"
    too_deep = "query D { " + "a { " * (endpoint.DEPTH_MAX + 1) + "b" + " }" * (
        endpoint.DEPTH_MAX + 2)
    refused = gql(server, "D", {}, query=too_deep)
    assert code(refused) == "BadUserInput" and "deep" in refused["errors"][0]["message"]
    aliases = "query A { " + " ".join(
        f"a{i}: creditBalanceSummary(input: {{customerId: \"c\"}}) {{ customerId }}"
        for i in range(endpoint.ALIASES_MAX + 1)) + " }"
    assert code(gql(server, "A", {}, query=aliases)) == "GraphQLAliasesLimitExceeded"
    # Each fragment spreads the next one twice: 2^40 fields if expanded naively.
    bomb = "".join(f"fragment B{i} on CreditBalanceSummary {{ ...B{i + 1} ...B{i + 1} }} "
                   for i in range(40)) + "fragment B40 on CreditBalanceSummary { customerId }"
    answer = gql(server, "Q", {}, query="query Q { creditBalanceSummary(input: "
                 "{customerId: \"c\"}) { ...B0 } } " + bomb)
    assert code(answer) == "CustomerNotFound"  # validated and run in bounded time


def test_consume_credits_async_applies_a_batch(server: Any, customer: str,
                                               currency: str) -> None:
    data(gql(server, "GrantCredits", {"input": {
        "customerId": customer, "currencyId": currency, "amount": Decimal("1.5"),
        "displayName": "g", "grantType": "PAID"}}))
    batch = [{"customerId": customer, "currencyId": currency, "amount": Decimal(a),
              "idempotencyKey": f"async-{i}"} for i, a in enumerate(("0.5", "0.7", "0.6"))]
    answer = data(gql(server, "ConsumeCreditsAsync", {"input": {"consumptions": batch}}))
    # The third does not fit what is left (0.3): refused alone, by index and code.
    assert answer == {"consumeCreditsAsync":
                      "accepted 2 of 3; refused: consumptions[2] InsufficientCredits"}
    [b] = data(gql(server, "GetCreditBalance", {"input": {
        "customerId": customer, "currencyId": currency}}))["creditBalanceSummary"]["balances"]
    assert b["currentBalance"] == Decimal("0.3")
    # Validated whole before anything is applied: an unknown customer refuses the batch.
    refused = gql(server, "ConsumeCreditsAsync", {"input": {"consumptions": [
        {**batch[0], "idempotencyKey": "async-x"},
        {**batch[0], "customerId": "nobody", "idempotencyKey": "async-y"}]}})
    assert code(refused) == "CustomerNotFound"
    assert refused["errors"][0]["extensions"]["field"] == "consumptions[1].customerId"
    [after] = data(gql(server, "GetCreditBalance", {"input": {
        "customerId": customer, "currencyId": currency}}))["creditBalanceSummary"]["balances"]
    assert after["currentBalance"] == Decimal("0.3")


def test_fragments_the_v1_client_leaves_out_are_completed(server: Any, customer: str,
                                                          currency: str) -> None:
    """Stigg's v1 client (sgqlc) spreads fragments inside inline fragments without defining
    them; a fragment Stigg's clients define (recorded.py) is added, any other refused."""
    data(gql(server, "GrantCredits", {"input": {
        "customerId": customer, "currencyId": currency, "amount": 2, "displayName": "g",
        "grantType": "PAID"}}))
    query = ("query GetEntitlementV2($query: GetEntitlementV2Input!) { entitlementV2(query: "
             "$query) { __typename ... on CreditEntitlement { ...CreditEntitlementFragment } "
             "} }")
    answer = data(gql(server, "GetEntitlementV2", {"query": {
        "customerId": customer, "currencyId": currency}}, query=query))["entitlementV2"]
    assert answer["__typename"] == "CreditEntitlement" and answer["isGranted"] is True
    assert answer["currency"]["currencyId"] == currency and answer["usageLimit"] == 2
    unknown = gql(server, "GetEntitlementV2", {"query": {"customerId": customer}},
                  query=query.replace("CreditEntitlementFragment", "NoSuchFragment"))
    assert code(unknown) == "BadUserInput"
    assert "NoSuchFragment" in unknown["errors"][0]["message"]
