"""Stigg's Edge JSON API (gateway/graphql/edge.py): each GET answers exactly what the
GraphQL operation answers for the same inputs (the same document runs), with the API key
of REST and GraphQL (401 Unauthenticated in GraphQL's error shape without one), and the
Node SDK's literal `undefined` for parameters it leaves unset."""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import httpx
import pytest

from tests.gateway.graphql.test_entitlements import Setup, plan_subscription
from tests.gateway.graphql.wire import data, gql

# The same instant for both reads: times such as a credit entitlement's update time are
# "now" when nothing changed, and must be equal in the two answers.
SERVER_ENV = {"CREDITD_CLOCK": "manual:2026-01-01T00:00:00Z"}


@pytest.fixture
def subscribed(server: Any, client: Any, uid: Callable[[str], str], clock: Any) -> Setup:
    s = plan_subscription(client, uid, clock)
    data(gql(server, "ReportUsage", {"input": {
        "customerId": s.customer, "featureId": s.calls, "value": Decimal("7.25")}}))
    return s


def edge(server: Any, path: str, params: Any = None, **kw: Any) -> httpx.Response:
    with server.http(**kw) as http:
        return http.get(path, params=params, headers={"X-API-VERSION": "1"})


def body(r: httpx.Response) -> dict[str, Any]:
    assert r.headers["content-type"].startswith("application/json"), r.text
    return json.loads(r.text, parse_float=Decimal)


def same(edge_answer: dict[str, Any], graphql_answer: dict[str, Any]) -> None:
    """The same data and the same errors (but for their trace ids)."""
    def errors(answer: dict[str, Any]) -> list[Any]:
        return [{**e, "extensions": {k: v for k, v in e["extensions"].items()
                                     if k != "traceId"}} for e in answer.get("errors", [])]

    assert edge_answer["data"] == graphql_answer["data"]
    assert errors(edge_answer) == errors(graphql_answer)


def test_entitlement_reads_answer_what_graphql_answers(server: Any, subscribed: Setup) -> None:
    s = subscribed
    r = edge(server, f"/v1/c/{s.customer}/entitlements-state.json")
    assert r.status_code == 200
    state = body(r)
    assert "errors" not in state
    same(state, gql(server, "GetEntitlementsState", {"query": {"customerId": s.customer}}))
    calls = state["data"]["entitlementsState"]["entitlementsV2"][0]
    assert (calls["feature"]["refId"], calls["currentUsage"], calls["usageLimit"]) == (
        s.calls, Decimal("7.25"), 100)

    listed = body(edge(server, f"/v1/c/{s.customer}/entitlements.json"))
    same(listed, gql(server, "GetEntitlements", {"query": {"customerId": s.customer}}))
    assert [e["feature"]["refId"] for e in listed["data"]["entitlements"]] == [s.calls,
                                                                              s.flag]

    # One feature, with the usage asked for (the Python client sends floats: "92.76").
    for asked, granted in (("92.75", True), ("92.76", False)):
        one = body(edge(server, f"/v1/c/{s.customer}/entitlements.json",
                        {"featureId": s.calls, "requestedUsage": asked}))
        same(one, gql(server, "GetEntitlement", {"query": {
            "customerId": s.customer, "featureId": s.calls,
            "options": {"requestedUsage": Decimal(asked)}}}))
        assert one["data"]["entitlement"]["isGranted"] is granted
        assert one["data"]["entitlement"]["requestedUsage"] == Decimal(asked)
    denied = body(edge(server, f"/v1/c/{s.customer}/entitlements.json",
                       {"featureId": s.calls, "requestedUsage": "93"}))
    assert denied["data"]["entitlement"]["accessDeniedReason"] == \
        "RequestedUsageExceedingLimit"

    # A resource the customer has no subscription for.
    scoped = body(edge(server, f"/v1/c/{s.customer}/entitlements-state.json",
                       {"resourceId": "site-1"}))
    same(scoped, gql(server, "GetEntitlementsState", {"query": {
        "customerId": s.customer, "resourceId": "site-1"}}))

    nobody = body(edge(server, "/v1/c/nobody/entitlements-state.json"))
    assert nobody["data"]["entitlementsState"]["accessDeniedReason"] == "CustomerNotFound"
    missing = body(edge(server, "/v1/c/nobody/entitlements.json"))
    assert missing["data"] is None
    assert missing["errors"][0]["extensions"]["code"] == "CustomerNotFound"


def test_sdk_configuration(server: Any) -> None:
    r = edge(server, "/v1/config/server-sdk-configuration.json")
    assert r.status_code == 200
    assert body(r) == {"data": {"sdkConfiguration": {
        "sentryDsn": None, "isWidgetWatermarkEnabled": False, "showWatermark": False}}}


def test_the_api_key_is_required(server: Any, subscribed: Setup) -> None:
    for path in (f"/v1/c/{subscribed.customer}/entitlements-state.json",
                 "/v1/config/server-sdk-configuration.json", "/v1/paywall.json",
                 f"/v1/c/{subscribed.customer}/subscriptions.json"):
        for key in (None, "cd_wrong"):
            r = edge(server, path, key=key)
            assert r.status_code == 401, (path, r.text)
            answer = body(r)
            assert answer["data"] is None
            [error] = answer["errors"]
            assert error["extensions"]["code"] == "Unauthenticated"
            assert error["extensions"]["traceId"]
    # Another environment's key sees another environment's customers.
    other = body(edge(server, f"/v1/c/{subscribed.customer}/entitlements-state.json",
                      key=server.other_key))
    assert other["data"]["entitlementsState"]["accessDeniedReason"] == "CustomerNotFound"


def test_bad_parameters_are_graphql_errors(server: Any, subscribed: Setup) -> None:
    r = edge(server, f"/v1/c/{subscribed.customer}/entitlements.json",
             {"featureId": subscribed.calls, "requestedUsage": "lots"})
    assert r.status_code == 200
    [error] = body(r)["errors"]
    assert error["extensions"]["code"] == "BadUserInput"
    assert "requestedUsage" in error["message"]
    r = edge(server, "/v1/paywall.json", {"includeHiddenPlans": "maybe"})
    [error] = body(r)["errors"]
    assert error["extensions"]["code"] == "BadUserInput"
    assert "includeHiddenPlans" in error["message"]


def test_paywall_reads(server: Any, subscribed: Setup) -> None:
    """GetPaywall through Edge, by product and for all products; `undefined` (what the
    Node SDK sends for an unset flag) is absent."""
    product = body(edge(server, f"/v1/p/{subscribed.product}/paywall.json",
                        {"fetchAllCountriesPrices": "undefined",
                         "includeHiddenPlans": "false"}))
    same(product, gql(server, "GetPaywall", {"input": {
        "productId": subscribed.product, "includeHiddenPlans": False}}))
    everything = body(edge(server, "/v1/paywall.json", {"billingCountryCode": "undefined"}))
    same(everything, gql(server, "GetPaywall", {"input": {}}))
    assert [p["refId"] for p in product["data"]["paywall"]["plans"]] == [subscribed.plan]
    assert subscribed.plan in [p["refId"] for p in everything["data"]["paywall"]["plans"]]


def test_subscription_reads(server: Any, subscribed: Setup) -> None:
    """GetActiveSubscriptionsList through Edge: resourceIds repeated or comma-separated."""
    s = subscribed
    alone = body(edge(server, f"/v1/c/{s.customer}/subscriptions.json"))
    same(alone, gql(server, "GetActiveSubscriptionsList", {"input": {
        "customerId": s.customer}}))
    listed = body(edge(server, f"/v1/c/{s.customer}/subscriptions.json",
                       [("resourceIds", "a"), ("resourceIds", "b,c")]))
    same(listed, gql(server, "GetActiveSubscriptionsList", {"input": {
        "customerId": s.customer, "resourceIds": ["a", "b", "c"]}}))
    assert [x["plan"]["planId"] for x in alone["data"]["getActiveSubscriptions"]] == [s.plan]
    assert listed["data"] == {"getActiveSubscriptions": []}  # none on those resources
