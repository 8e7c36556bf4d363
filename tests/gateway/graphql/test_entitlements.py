"""Entitlement checks through GraphQL (GetEntitlementsState, GetEntitlementV2,
GetEntitlement, GetEntitlements), the SDK configuration and entitlement-check reports:
the documents stigg-api-client-v2 sends, against a customer with a plan subscription (a
metered feature with a monthly limit and usage, a boolean feature, recurring credits), on
a manual clock so every time in the answers is exact."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from tests.gateway.graphql.wire import code, data, gql

SERVER_ENV = {"CREDITD_CLOCK": "manual:2026-01-01T00:00:00Z"}


def z(t: datetime) -> str:
    """An ISO time as the API writes it (milliseconds, Z)."""
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def month_after(t: datetime) -> datetime:
    return t.replace(year=t.year + t.month // 12, month=t.month % 12 + 1)


@dataclass
class Setup:
    customer: str
    calls: str  # NUMBER, limit 100 a month (from the subscription's start), 7.25 used
    flag: str  # BOOLEAN
    other: str  # NUMBER, not in the plan
    currency: str  # 50.5 credits a month from the plan
    t0: datetime  # the subscription's start
    product: str
    plan: str


def plan_subscription(client: Any, uid: Callable[[str], str], clock: Any) -> Setup:
    calls, flag, other = uid("calls"), uid("flag"), uid("other")
    currency, product, plan, customer = uid("tok"), uid("prod"), uid("plan"), uid("cust")
    client.v1.features.create_feature(id=calls, display_name="Calls", feature_type="NUMBER",
                                      meter_type="INCREMENTAL", feature_units="call",
                                      feature_units_plural="calls")
    client.v1.features.create_feature(id=flag, display_name="Flag", feature_type="BOOLEAN")
    client.v1.features.create_feature(id=other, display_name="Other", feature_type="NUMBER",
                                      meter_type="INCREMENTAL")
    client.v1.credits.custom_currencies.create(
        id=currency, display_name="Tokens", symbol="T",
        units={"singular": "token", "plural": "tokens"})
    client.v1.products.create_product(id=product, display_name="Product")
    client.v1.plans.create(id=plan, display_name="Plan", product_id=product)
    client.v1.plans.entitlements.create(plan, entitlements=[
        {"type": "FEATURE", "id": calls, "usage_limit": 100, "reset_period": "MONTH",
         "monthly_reset_period_configuration": {"according_to": "SubscriptionStart"}},
        {"type": "FEATURE", "id": flag},
        {"type": "CREDIT", "id": currency, "amount": 50.5, "cadence": "MONTH"}])
    client.v1.plans.publish(plan, migration_type="NEW_CUSTOMERS")
    client.v1.customers.provision(id=customer, name="Acme")
    t0 = clock.now()
    client.v1.subscriptions.provision(customer_id=customer, plan_id=plan)
    return Setup(customer, calls, flag, other, currency, t0, product, plan)


@pytest.fixture
def subscribed(server: Any, client: Any, uid: Callable[[str], str], clock: Any) -> Setup:
    s = plan_subscription(client, uid, clock)
    data(gql(server, "ReportUsage", {"input": {
        "customerId": s.customer, "featureId": s.calls, "value": Decimal("7.25")}}))
    return s


def _state(server: Any, customer: str, **more: Any) -> dict[str, Any]:
    return data(gql(server, "GetEntitlementsState", {"query": {
        "customerId": customer, **more}}))["entitlementsState"]


def test_the_state_of_a_plan_subscription_exactly(server: Any, raw: Any,
                                                  subscribed: Setup) -> None:
    s, t0 = subscribed, subscribed.t0
    end = month_after(t0)
    state = _state(server, s.customer)
    assert state["__typename"] == "EntitlementsState" and state["accessDeniedReason"] is None
    calls, flag, credit = state["entitlementsV2"]
    feature = {"__typename": "EntitlementFeature", "featureType": "NUMBER",
               "meterType": "Incremental", "featureUnits": "call",
               "featureUnitsPlural": "calls", "description": None, "displayName": "Calls",
               "refId": s.calls, "unitTransformation": None}
    assert calls == {
        "__typename": "FeatureEntitlement", "isGranted": True, "accessDeniedReason": None,
        "usageLimit": 100, "hasUnlimitedUsage": False, "hasSoftLimit": False,
        "currentUsage": Decimal("7.25"), "enumValues": None,
        "entitlementUpdatedAt": calls["entitlementUpdatedAt"],
        "usageUpdatedAt": z(t0), "usagePeriodAnchor": z(t0), "usagePeriodStart": z(t0),
        "usagePeriodEnd": z(end), "resetPeriod": "MONTH",
        "resetPeriodConfiguration": {"__typename": "MonthlyResetPeriodConfig",
                                     "monthlyAccordingTo": "SubscriptionStart"},
        "feature": feature, "creditRate": None, "validUntil": None}
    # The plan's entitlement was published before the subscription started.
    assert calls["entitlementUpdatedAt"] <= z(t0)
    assert (flag["__typename"], flag["isGranted"], flag["feature"]["refId"],
            flag["feature"]["featureType"], flag["currentUsage"], flag["usageLimit"],
            flag["hasUnlimitedUsage"], flag["resetPeriodConfiguration"]) == (
        "FeatureEntitlement", True, s.flag, "BOOLEAN", None, None, False, None)
    assert flag["entitlementUpdatedAt"] is not None
    assert credit == {
        "__typename": "CreditEntitlement", "isGranted": True, "accessDeniedReason": None,
        "currency": {"currencyId": s.currency, "displayName": "Tokens", "description": None,
                     "unitSingular": "token", "unitPlural": "tokens",
                     "additionalMetaData": None},
        "usageLimit": Decimal("50.5"), "currentUsage": 0, "hasSoftLimit": False,
        "usageUpdatedAt": z(t0), "entitlementUpdatedAt": z(t0),
        "usagePeriodEnd": z(end), "validUntil": None}

    # The first version of the type: the same features, with the customer and the
    # next reset; no credits.
    [e_calls, e_flag] = state["entitlements"]
    assert e_calls == {**{k: v for k, v in calls.items() if k != "__typename"},
                       "__typename": "Entitlement", "customerId": s.customer,
                       "resourceId": None, "requestedUsage": None, "requestedValues": None,
                       "nextResetDate": z(end), "validUntil": None}
    assert e_flag["feature"]["refId"] == s.flag and e_flag["nextResetDate"] is None

    # The REST check decides the same.
    rest = raw.get(f"/api/v1/customers/{s.customer}/entitlements").json()["data"]
    [r_calls] = [e for e in rest["entitlements"] if e.get("feature") and
                 e["feature"]["id"] == s.calls]
    assert (r_calls["currentUsage"], r_calls["usageLimit"], r_calls["usagePeriodEnd"]) == (
        7.25, 100, z(end))

    # Credits consumed show as usage of the credit entitlement, exactly.
    data(gql(server, "ConsumeCredits", {"input": {
        "customerId": s.customer, "currencyId": s.currency, "amount": Decimal("0.1"),
        "idempotencyKey": "c-1"}}))
    data(gql(server, "ConsumeCredits", {"input": {
        "customerId": s.customer, "currencyId": s.currency, "amount": Decimal("0.2"),
        "idempotencyKey": "c-2"}}))
    credit = _state(server, s.customer)["entitlementsV2"][2]
    assert (credit["currentUsage"], credit["usageLimit"]) == (Decimal("0.3"),
                                                              Decimal("50.5"))
    # Usage reported later moves the state and its time.
    data(gql(server, "ReportUsage", {"input": {
        "customerId": s.customer, "featureId": s.calls, "value": Decimal("0.75")}}))
    calls = _state(server, s.customer)["entitlementsV2"][0]
    assert calls["currentUsage"] == 8


def test_cached_entitlements_list_the_features(server: Any, subscribed: Setup) -> None:
    s = subscribed
    listed = data(gql(server, "GetEntitlements", {"query": {
        "customerId": s.customer}}))["entitlements"]
    assert [(e["__typename"], e["feature"]["refId"], e["isGranted"], e["currentUsage"],
             e["usageLimit"]) for e in listed] == [
        ("Entitlement", s.calls, True, Decimal("7.25"), 100),
        ("Entitlement", s.flag, True, None, None)]
    assert listed == _state(server, s.customer)["entitlements"]


def test_a_check_with_requested_usage(server: Any, subscribed: Setup) -> None:
    s = subscribed

    def check(feature: str, **options: Any) -> dict[str, Any]:
        query: dict[str, Any] = {"customerId": s.customer, "featureId": feature}
        if options:
            query["options"] = options
        return data(gql(server, "GetEntitlement", {"query": query}))["entitlement"]

    # 7.25 used of 100: 92.75 more fits exactly; 92.76 does not.
    fits = check(s.calls, requestedUsage=Decimal("92.75"))
    assert (fits["isGranted"], fits["accessDeniedReason"], fits["requestedUsage"],
            fits["currentUsage"], fits["usageLimit"]) == (
        True, None, Decimal("92.75"), Decimal("7.25"), 100)
    over = check(s.calls, requestedUsage=Decimal("92.76"), shouldTrack=False)
    assert (over["isGranted"], over["accessDeniedReason"], over["requestedUsage"]) == (
        False, "RequestedUsageExceedingLimit", Decimal("92.76"))
    assert over["customerId"] == s.customer and over["nextResetDate"] == z(
        month_after(s.t0))
    assert check(s.flag)["isGranted"] is True
    missing = check(s.other)
    assert (missing["isGranted"], missing["accessDeniedReason"],
            missing["feature"]["refId"], missing["hasUnlimitedUsage"]) == (
        False, "NoFeatureEntitlementInSubscription", s.other, False)
    unknown = check("no-such-feature")
    assert (unknown["accessDeniedReason"], unknown["feature"]) == ("FeatureNotFound", None)
    nobody = data(gql(server, "GetEntitlement", {"query": {
        "customerId": "nobody-" + s.customer, "featureId": s.calls}}))["entitlement"]
    assert (nobody["isGranted"], nobody["accessDeniedReason"]) == (False, "CustomerNotFound")

    bad = gql(server, "GetEntitlement", {"query": {
        "customerId": s.customer, "featureId": s.calls,
        "options": {"requestedUsage": -1}}})
    assert code(bad) == "BadUserInput" and bad["data"] is None
    assert bad["errors"][0]["extensions"]["field"] == "options.requestedUsage"


def test_entitlement_v2_features_and_credits(server: Any, subscribed: Setup) -> None:
    s = subscribed

    def v2(**query: Any) -> dict[str, Any]:
        return gql(server, "GetEntitlementV2", {"query": {"customerId": s.customer,
                                                          **query}})

    feature = data(v2(featureId=s.calls, options={"requestedUsage": 93}))["entitlementV2"]
    assert (feature["__typename"], feature["isGranted"], feature["accessDeniedReason"],
            feature["currentUsage"]) == (
        "FeatureEntitlement", False, "RequestedUsageExceedingLimit", Decimal("7.25"))
    assert feature == {**_state(server, s.customer)["entitlementsV2"][0],
                       "isGranted": False,
                       "accessDeniedReason": "RequestedUsageExceedingLimit"}
    enough = data(v2(currencyId=s.currency, options={"requestedUsage": Decimal("50.5")}))
    assert (enough["entitlementV2"]["__typename"], enough["entitlementV2"]["isGranted"]) == (
        "CreditEntitlement", True)
    short = data(v2(currencyId=s.currency, options={
        "requestedUsage": Decimal("50.50001")}))["entitlementV2"]
    assert (short["isGranted"], short["accessDeniedReason"], short["usageLimit"]) == (
        False, "InsufficientCredits", Decimal("50.5"))
    assert code(v2(currencyId="no-such-currency")) == "CustomCurrencyNotFound"
    both = v2(featureId=s.calls, currencyId=s.currency)
    assert code(both) == "BadUserInput" and both["errors"][0]["extensions"]["field"] == \
        "featureId"
    assert code(v2()) == "BadUserInput"


def test_customers_without_access(server: Any, client: Any, uid: Callable[[str], str],
                                  clock: Any) -> None:
    nobody = uid("nobody")
    state = _state(server, nobody)
    assert (state["accessDeniedReason"], state["entitlements"], state["entitlementsV2"]) == (
        "CustomerNotFound", [], [])
    # A bare list has no place for the reason: the customer is not found.
    assert code(gql(server, "GetEntitlements", {"query": {"customerId": nobody}})) == \
        "CustomerNotFound"

    bare = uid("bare")
    client.v1.customers.provision(id=bare)
    assert _state(server, bare)["accessDeniedReason"] == "NoActiveSubscription"
    assert data(gql(server, "GetEntitlements", {"query": {"customerId": bare}})) == {
        "entitlements": []}

    # A promotion is something to grant from; it is valid until its end date.
    flag = uid("flag")
    client.v1.features.create_feature(id=flag, display_name="Flag", feature_type="BOOLEAN")
    end = clock.now() + timedelta(days=10)
    client.v1.customers.promotional_entitlements.create(bare, promotional_entitlements=[{
        "feature_id": flag, "period": "custom", "custom_end_date": end,
        "enum_values": None, "has_soft_limit": None, "has_unlimited_usage": None,
        "is_visible": None, "monthly_reset_period_configuration": None,
        "reset_period": None, "usage_limit": None,
        "weekly_reset_period_configuration": None,
        "yearly_reset_period_configuration": None}])
    state = _state(server, bare)
    assert state["accessDeniedReason"] is None
    [v2] = state["entitlementsV2"]
    [v1] = state["entitlements"]
    assert (v2["isGranted"], v2["validUntil"]) == (True, z(end))
    assert v2["entitlementUpdatedAt"] is not None
    # Entitlement.validUntil is a Float: epoch milliseconds.
    assert v1["validUntil"] == int(end.timestamp() * 1000)

    archived = uid("gone")
    client.v1.customers.provision(id=archived)
    client.v1.customers.archive(archived)
    assert _state(server, archived)["accessDeniedReason"] == "CustomerIsArchived"


def test_the_usage_window_resets_on_time(server: Any, client: Any,
                                         uid: Callable[[str], str], clock: Any) -> None:
    s = plan_subscription(client, uid, clock)
    data(gql(server, "ReportUsage", {"input": {
        "customerId": s.customer, "featureId": s.calls, "value": 100}}))
    calls = _state(server, s.customer)["entitlementsV2"][0]
    assert (calls["isGranted"], calls["accessDeniedReason"]) == (
        False, "RequestedUsageExceedingLimit")
    end = month_after(s.t0)
    clock.move(to=end)
    calls = _state(server, s.customer)["entitlementsV2"][0]
    assert (calls["isGranted"], calls["currentUsage"], calls["usagePeriodStart"],
            calls["usagePeriodEnd"], calls["usagePeriodAnchor"]) == (
        True, 0, z(end), z(month_after(end)), z(s.t0))


def test_sdk_configuration_and_check_reports(server: Any, customer: str) -> None:
    assert data(gql(server, "GetSdkConfiguration", {})) == {"sdkConfiguration": {
        "sentryDsn": None, "isWidgetWatermarkEnabled": False, "showWatermark": False}}

    def report(**more: Any) -> dict[str, Any]:
        return gql(server, "ReportEntitlementCheckRequested", {"entitlementCheckRequested": {
            "customerId": customer, "featureId": "f",
            "entitlementCheckResult": {"hasAccess": True, "accessDeniedReason": None},
            **more}})

    assert data(report(requestedUsage=2)) == {"reportEntitlementCheckRequested": True}
    nobody = report(customerId="nobody-" + customer)
    assert code(nobody) == "CustomerNotFound" and nobody["data"] is None
    assert code(report(requestedUsage=-1)) == "BadUserInput"
    # The check result is required, as the schema says.
    assert code(gql(server, "ReportEntitlementCheckRequested", {"entitlementCheckRequested": {
        "customerId": customer, "featureId": "f"}})) == "BadUserInput"
    assert code(report(entitlementCheckResult={"hasAccess": True,
                                               "accessDeniedReason": "Nope"})) == \
        "BadUserInput"
