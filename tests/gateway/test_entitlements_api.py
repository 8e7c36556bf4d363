"""Feature entitlement checks and lists through the official client and raw HTTP, on a
server whose clock the tests move: usage limits, reset windows that reset on time
(calculated usage and metered events), denial reasons, and plan + promotion sums."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
from stigg import Stigg

START = "2026-01-01T00:00:00Z"
HOUR_S = 3600
DAY_S = 24 * HOUR_S


SERVER_ENV = {"CREDITD_CLOCK": f"manual:{START}"}


def grant(client: Stigg, cust: str, feature_id: str, **kw: Any) -> None:
    item: dict[str, Any] = {
        "feature_id": feature_id, "period": "lifetime", "custom_end_date": None,
        "enum_values": None, "has_soft_limit": None, "has_unlimited_usage": None,
        "is_visible": None, "monthly_reset_period_configuration": None, "reset_period": None,
        "usage_limit": None, "weekly_reset_period_configuration": None,
        "yearly_reset_period_configuration": None, **kw}
    client.v1.customers.promotional_entitlements.create(cust, promotional_entitlements=[item])


@pytest.fixture
def cust(client: Stigg, uid: Callable[[str], str]) -> str:
    c = uid("cust")
    client.v1.customers.provision(id=c)
    return c


def number_feature(client: Stigg, uid: Callable[[str], str], **kw: Any) -> str:
    f = uid("api")
    client.v1.features.create_feature(id=f, display_name="API", feature_type="NUMBER", **kw)
    return f


def check(client: Stigg, cust: str, feature: str, **kw: Any) -> Any:
    return client.v1.customers.check_entitlement(cust, feature_id=feature, **kw).data


def test_denial_reasons(client: Stigg, raw: httpx.Client, cust: str,
                        uid: Callable[[str], str]) -> None:
    feature = number_feature(client, uid, meter_type="INCREMENTAL")
    other = number_feature(client, uid, meter_type="INCREMENTAL")
    assert check(client, cust, "no-such-feature").access_denied_reason == "FeatureNotFound"
    assert check(client, "nobody-" + cust, feature).access_denied_reason == "CustomerNotFound"
    assert check(client, cust, feature).access_denied_reason == "NoActiveSubscription"
    grant(client, cust, other, usage_limit=1)
    denied = check(client, cust, feature)
    assert (denied.is_granted, denied.access_denied_reason) == (
        False, "NoFeatureEntitlementInSubscription")
    assert denied.feature.id == feature and denied.feature.display_name == "API"
    archived = uid("gone")
    client.v1.customers.provision(id=archived)
    client.v1.customers.archive(archived)
    assert check(client, archived, feature).access_denied_reason == "CustomerIsArchived"


def test_limit_usage_and_daily_reset_on_time(client: Stigg, raw: httpx.Client, cust: str,
                                             uid: Callable[[str], str], clock) -> None:
    feature = number_feature(client, uid, meter_type="INCREMENTAL")
    t0 = clock.now()
    grant(client, cust, feature, usage_limit=10, reset_period="DAY")
    reply = client.v2.usage.report(usages=[{"customer_id": cust, "feature_id": feature,
                                            "value": 7}]).data.usages[0]
    assert reply.current_usage == 7
    assert reply.usage_period_start == t0 and reply.usage_period_end == t0 + timedelta(days=1)
    assert reply.next_reset_date == t0 + timedelta(days=1)
    e = check(client, cust, feature, requested_usage=3)
    assert (e.is_granted, e.current_usage, e.usage_limit, e.reset_period) == (
        True, 7, 10, "DAY")
    assert (e.usage_period_start, e.usage_period_end, e.usage_period_anchor) == (
        t0, t0 + timedelta(days=1), t0)
    e = check(client, cust, feature, requested_usage=4)
    assert (e.is_granted, e.access_denied_reason) == (False, "RequestedUsageExceedingLimit")
    clock.move(by=timedelta(seconds=DAY_S - 1))
    assert check(client, cust, feature).current_usage == 7
    # The boundary: a new window, usage reads 0 before any report.
    clock.move(by=timedelta(seconds=1))
    e = check(client, cust, feature, requested_usage=10)
    assert (e.is_granted, e.current_usage) == (True, 0)
    assert e.usage_period_start == t0 + timedelta(days=1)
    reply = client.v2.usage.report(usages=[{"customer_id": cust, "feature_id": feature,
                                            "value": 2}]).data.usages[0]
    assert reply.current_usage == 2  # the counter restarted from 0
    listed = client.v1.customers.retrieve_entitlements(cust).data.entitlements
    [mine] = [x for x in listed if x.type == "FEATURE"]
    assert (mine.feature.id, mine.current_usage, mine.usage_limit, mine.is_granted) == (
        feature, 2, 10, True)


def test_events_reset_hourly(client: Stigg, raw: httpx.Client, cust: str,
                             uid: Callable[[str], str], clock) -> None:
    name = uid("call")
    feature = number_feature(client, uid, meter={
        "aggregation": {"function": "COUNT"},
        "filters": [{"conditions": [{"field": "eventName", "operation": "EQUALS",
                                     "value": name}]}]})
    grant(client, cust, feature, usage_limit=3, reset_period="HOUR")

    def send(n: int) -> None:
        client.v1.events.report(events=[{"customer_id": cust, "event_name": name,
                                         "idempotency_key": uid("e")} for _ in range(n)])

    send(3)
    e = check(client, cust, feature)
    assert (e.is_granted, e.current_usage, e.access_denied_reason) == (
        False, 3, "RequestedUsageExceedingLimit")
    clock.move(by=timedelta(seconds=HOUR_S))
    e = check(client, cust, feature)
    assert (e.is_granted, e.current_usage) == (True, 0)
    send(1)
    assert check(client, cust, feature).current_usage == 1


def test_soft_and_unlimited(client: Stigg, cust: str, uid: Callable[[str], str]) -> None:
    soft = number_feature(client, uid, meter_type="INCREMENTAL")
    unlimited = number_feature(client, uid, meter_type="INCREMENTAL")
    grant(client, cust, soft, usage_limit=1, has_soft_limit=True)
    grant(client, cust, unlimited, has_unlimited_usage=True)
    assert check(client, cust, soft, requested_usage=5).is_granted
    e = check(client, cust, unlimited, requested_usage=10**9)
    assert (e.is_granted, e.has_unlimited_usage, e.usage_limit) == (True, True, None)


def _catalog_ready(raw: httpx.Client) -> bool:
    return raw.get("/api/v1/products").status_code == 200 and raw.get(
        "/api/v1/subscriptions", params={"customerId": "x"}).status_code != 404


def test_plan_and_promotion_add_up(client: Stigg, raw: httpx.Client, cust: str,
                                   uid: Callable[[str], str], clock) -> None:
    if not _catalog_ready(raw):
        pytest.skip("plans and subscriptions are not mounted yet")
    feature = number_feature(client, uid, meter_type="INCREMENTAL")
    flag = uid("flag")
    client.v1.features.create_feature(id=flag, display_name="Flag", feature_type="BOOLEAN")
    product, plan = uid("prod"), uid("plan")
    client.v1.products.create_product(id=product, display_name="Product")
    client.v1.plans.create(id=plan, display_name="Plan", product_id=product)
    client.v1.plans.entitlements.create(plan, entitlements=[
        {"type": "FEATURE", "id": feature, "usage_limit": 100, "reset_period": "MONTH"},
        {"type": "FEATURE", "id": flag}])
    client.v1.plans.publish(plan, migration_type="NEW_CUSTOMERS")
    t0 = clock.now()
    client.v1.subscriptions.provision(customer_id=cust, plan_id=plan)
    assert check(client, cust, flag).is_granted
    e = check(client, cust, feature)
    assert (e.is_granted, e.usage_limit, e.reset_period, e.usage_period_start) == (
        True, 100, "MONTH", t0)
    grant(client, cust, feature, usage_limit=50, reset_period="DAY")
    e = check(client, cust, feature, requested_usage=150)
    # Limits add up; the plan's reset period wins over the promotion's.
    assert (e.is_granted, e.usage_limit, e.reset_period) == (True, 150, "MONTH")
    assert not check(client, cust, feature, requested_usage=151).is_granted


def test_a_credit_backed_feature_needs_credits(client: Stigg, raw: httpx.Client, cust: str,
                                               uid: Callable[[str], str]) -> None:
    """A feature with a credit rate is used by spending credits: entitled or not, it is
    denied InsufficientCredits while its currency's pool holds nothing, or less than the
    requested usage costs (as Stigg's SDKs decide it from a balance update)."""
    currency = uid("tok")
    client.v1.credits.custom_currencies.create(id=currency, display_name="Tokens")
    feature = number_feature(client, uid, meter_type="INCREMENTAL",
                             extra_body={"creditRate": {"amount": 2.5, "currencyId": currency}})
    grant(client, cust, feature, has_unlimited_usage=True)
    assert check(client, cust, feature).access_denied_reason == "InsufficientCredits"
    r = raw.post("/api/v1/credits/grants", json={
        "customerId": cust, "currencyId": currency, "amount": 5, "displayName": "g",
        "grantType": "PAID"})
    assert r.status_code == 200, r.text
    assert check(client, cust, feature).is_granted is True
    # 2 units cost 5 credits (all there is), 2.00001 cost more.
    assert check(client, cust, feature, requested_usage=2).is_granted is True
    over = check(client, cust, feature, requested_usage=2.00001)
    assert (over.is_granted, over.access_denied_reason) == (False, "InsufficientCredits")
    listed = raw.get(f"/api/v1/customers/{cust}/entitlements").json()["data"]
    [entry] = [e for e in listed["entitlements"] if e.get("feature", {}).get("id") == feature]
    assert entry["isGranted"] is True
