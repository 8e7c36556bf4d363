"""Promotional entitlements through the official client and raw HTTP, on a server whose
clock the tests move (CREDITD_CLOCK=manual): grant, replace, list with filters and
cursors, revoke, expiry on time, and what they grant in entitlement checks."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
import stigg
from stigg import Stigg

START = "2026-01-01T00:00:00Z"
DAY_S = 86_400


SERVER_ENV = {"CREDITD_CLOCK": f"manual:{START}"}


def promo(feature_id: str, **kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "feature_id": feature_id, "period": "1 month", "custom_end_date": None,
        "enum_values": None, "has_soft_limit": None, "has_unlimited_usage": None,
        "is_visible": None, "monthly_reset_period_configuration": None, "reset_period": None,
        "usage_limit": None, "weekly_reset_period_configuration": None,
        "yearly_reset_period_configuration": None}
    base.update(kw)
    return base


@pytest.fixture
def setup(client: Stigg, uid: Callable[[str], str]) -> tuple[str, dict[str, str]]:
    cust = uid("cust")
    client.v1.customers.provision(id=cust)
    f = {k: uid(k) for k in ("flag", "api", "tier")}
    client.v1.features.create_feature(id=f["flag"], display_name="Flag",
                                      feature_type="BOOLEAN")
    client.v1.features.create_feature(id=f["api"], display_name="API calls",
                                      feature_type="NUMBER", meter_type="INCREMENTAL")
    client.v1.features.create_feature(
        id=f["tier"], display_name="Tier", feature_type="ENUM",
        enum_configuration=[{"display_name": "Gold", "value": "gold"},
                            {"display_name": "Silver", "value": "silver"}])
    return cust, f


def test_grant_list_and_check(client: Stigg, raw: httpx.Client,
                              setup: tuple[str, dict[str, str]], clock) -> None:
    cust, f = setup
    t0 = clock.now()
    # Nothing yet: no subscription, no promotion.
    check = client.v1.customers.check_entitlement(cust, feature_id=f["flag"]).data
    assert (check.is_granted, check.access_denied_reason) == (False, "NoActiveSubscription")
    granted = client.v1.customers.promotional_entitlements.create(cust, promotional_entitlements=[
        promo(f["flag"], period="1 week"),
        promo(f["api"], usage_limit=10, reset_period="MONTH",
              monthly_reset_period_configuration={"according_to": "SubscriptionStart"}),
        promo(f["tier"], period="lifetime", enum_values=["gold"]),
    ]).data
    by = {p.feature_id: p for p in granted}
    assert by[f["flag"]].status == "Active"
    assert by[f["flag"]].start_date == t0
    assert (by[f["flag"]].end_date - t0).days == 7
    assert by[f["api"]].usage_limit == 10
    assert by[f["api"]].reset_period == "MONTH"
    assert by[f["tier"]].end_date is None and by[f["tier"]].enum_values == ["gold"]
    assert by[f["flag"]].is_visible is True
    listed = list(client.v1.customers.promotional_entitlements.list(cust))
    assert sorted(p.feature_id for p in listed) == sorted(f.values())
    flag = client.v1.customers.check_entitlement(cust, feature_id=f["flag"]).data
    assert (flag.is_granted, flag.access_denied_reason) == (True, None)
    assert flag.feature.id == f["flag"] and flag.feature.feature_type == "BOOLEAN"
    assert flag.valid_until == by[f["flag"]].end_date
    api = client.v1.customers.check_entitlement(cust, feature_id=f["api"],
                                                requested_usage=10).data
    assert (api.is_granted, api.usage_limit, api.current_usage) == (True, 10, 0)
    assert api.reset_period == "MONTH"
    assert api.usage_period_start == t0
    over = client.v1.customers.check_entitlement(cust, feature_id=f["api"],
                                                 requested_usage=11).data
    assert (over.is_granted, over.access_denied_reason) == (False,
                                                            "RequestedUsageExceedingLimit")
    tier = raw.get(f"/api/v1/customers/{cust}/entitlements/check",
                   params={"featureId": f["tier"], "requestedValues": "gold"}).json()["data"]
    assert tier["isGranted"] is True
    silver = raw.get(f"/api/v1/customers/{cust}/entitlements/check",
                     params={"featureId": f["tier"], "requestedValues": "silver"}).json()["data"]
    assert (silver["isGranted"], silver["accessDeniedReason"]) == (False,
                                                                   "RequestedValuesMismatch")
    entitlements = client.v1.customers.retrieve_entitlements(cust).data
    assert {e.feature.id for e in entitlements.entitlements if e.type == "FEATURE"} == set(
        f.values())


def test_expiry_on_time_and_status_filter(client: Stigg, raw: httpx.Client,
                                          setup: tuple[str, dict[str, str]], clock) -> None:
    cust, f = setup
    client.v1.customers.promotional_entitlements.create(cust, promotional_entitlements=[
        promo(f["flag"], period="1 week"), promo(f["tier"], period="1 month",
                                                   enum_values=["gold"])])
    clock.move(by=timedelta(seconds=7 * DAY_S - 1))
    assert client.v1.customers.check_entitlement(cust, feature_id=f["flag"]).data.is_granted
    clock.move(by=timedelta(seconds=1))  # exactly the end date: expired
    check = client.v1.customers.check_entitlement(cust, feature_id=f["flag"]).data
    assert (check.is_granted, check.access_denied_reason) == (
        False, "NoFeatureEntitlementInSubscription")
    expired = list(client.v1.customers.promotional_entitlements.list(cust, status=["Expired"]))
    assert [p.feature_id for p in expired] == [f["flag"]]
    assert expired[0].status == "Expired"
    active = list(client.v1.customers.promotional_entitlements.list(cust, status=["Active"]))
    assert [p.feature_id for p in active] == [f["tier"]]
    both = raw.get(f"/api/v1/customers/{cust}/promotional-entitlements",
                   params={"status": "Active,Expired"}).json()["data"]
    assert len(both) == 2
    clock.move(by=timedelta(seconds=31 * DAY_S))
    check = client.v1.customers.check_entitlement(cust, feature_id=f["tier"]).data
    assert (check.is_granted, check.access_denied_reason) == (False, "NoActiveSubscription")


def test_granting_again_replaces(client: Stigg, raw: httpx.Client,
                                 setup: tuple[str, dict[str, str]]) -> None:
    cust, f = setup
    client.v1.customers.promotional_entitlements.create(cust, promotional_entitlements=[
        promo(f["api"], usage_limit=5)])
    again = client.v1.customers.promotional_entitlements.create(
        cust, promotional_entitlements=[promo(f["api"], has_unlimited_usage=True,
                                              period="lifetime")]).data
    assert again[0].has_unlimited_usage is True and again[0].usage_limit is None
    listed = list(client.v1.customers.promotional_entitlements.list(cust))
    assert len(listed) == 1 and listed[0].period == "lifetime"
    check = client.v1.customers.check_entitlement(cust, feature_id=f["api"],
                                                  requested_usage=10**6).data
    assert (check.is_granted, check.has_unlimited_usage, check.usage_limit) == (True, True, None)


def test_revoke(client: Stigg, raw: httpx.Client, setup: tuple[str, dict[str, str]]) -> None:
    cust, f = setup
    client.v1.customers.promotional_entitlements.create(cust, promotional_entitlements=[
        promo(f["flag"], period="lifetime")])
    revoked = client.v1.customers.promotional_entitlements.revoke(f["flag"], id=cust).data
    assert revoked.feature_id == f["flag"] and revoked.status == "Expired"
    assert not client.v1.customers.check_entitlement(cust, feature_id=f["flag"]).data.is_granted
    assert list(client.v1.customers.promotional_entitlements.list(cust)) == []
    with pytest.raises(stigg.NotFoundError):
        client.v1.customers.promotional_entitlements.revoke(f["flag"], id=cust)
    # Granted again after a revoke: active again.
    client.v1.customers.promotional_entitlements.create(cust, promotional_entitlements=[
        promo(f["flag"], period="lifetime")])
    assert client.v1.customers.check_entitlement(cust, feature_id=f["flag"]).data.is_granted


def test_custom_period_and_pages(client: Stigg, raw: httpx.Client,
                                 setup: tuple[str, dict[str, str]],
                                 uid: Callable[[str], str], clock) -> None:
    cust, f = setup
    end = datetime(2100, 1, 1, tzinfo=timezone.utc)
    features = [uid("p") for _ in range(5)]
    for feature in features:
        client.v1.features.create_feature(id=feature, display_name=feature,
                                          feature_type="BOOLEAN")
    for feature in features:  # one call each: distinct creation times
        client.v1.customers.promotional_entitlements.create(cust, promotional_entitlements=[
            promo(feature, period="custom", custom_end_date=end)])
        clock.move(by=timedelta(seconds=1))
    page = client.v1.customers.promotional_entitlements.list(cust, limit=2)
    assert [p.feature_id for p in page.data] == features[:2]
    assert [p.feature_id for p in page] == features  # the auto-pager follows `next`
    assert all(p.end_date == end for p in page.data)
    second = raw.get(f"/api/v1/customers/{cust}/promotional-entitlements",
                     params={"limit": 2, "after": page.pagination.next}).json()
    assert [p["featureId"] for p in second["data"]] == features[2:4]
    back = raw.get(f"/api/v1/customers/{cust}/promotional-entitlements",
                   params={"limit": 2, "before": second["pagination"]["prev"]}).json()
    assert [p["featureId"] for p in back["data"]] == features[:2]
    created = page.data[1].created_at.isoformat()
    since = raw.get(f"/api/v1/customers/{cust}/promotional-entitlements",
                    params={"createdAt[gte]": created}).json()["data"]
    assert [p["featureId"] for p in since] == features[1:]


@pytest.mark.parametrize("item, field", [
    ({"period": "custom"}, "promotionalEntitlements[0].customEndDate"),
    ({"period": "custom", "customEndDate": "2000-01-01T00:00:00Z"},
     "promotionalEntitlements[0].customEndDate"),
    ({"period": "1 week", "customEndDate": "2100-01-01T00:00:00Z"},
     "promotionalEntitlements[0].customEndDate"),
    ({"period": "forever"}, "promotionalEntitlements[0].period"),
    ({"period": "1 week", "usageLimit": 5}, "promotionalEntitlements[0].usageLimit"),
    ({"period": "1 week", "resetPeriod": "MONTH"}, "promotionalEntitlements[0].resetPeriod"),
    ({"period": "1 week", "weeklyResetPeriodConfiguration": {"accordingTo": "EveryMonday"}},
     "promotionalEntitlements[0].weeklyResetPeriodConfiguration"),
])
def test_bad_input_names_the_field(raw: httpx.Client, setup: tuple[str, dict[str, str]],
                                   item: dict[str, Any], field: str) -> None:
    cust, f = setup
    body = {"promotionalEntitlements": [{"featureId": f["flag"], **item}]}
    r = raw.post(f"/api/v1/customers/{cust}/promotional-entitlements", json=body)
    assert r.status_code == 400, r.text
    assert field in r.text
    assert raw.get(f"/api/v1/customers/{cust}/promotional-entitlements").json()["data"] == []


def test_a_bad_item_applies_nothing(raw: httpx.Client,
                                    setup: tuple[str, dict[str, str]]) -> None:
    cust, f = setup
    body = {"promotionalEntitlements": [
        {"featureId": f["flag"], "period": "1 week"},
        {"featureId": f["api"], "period": "1 week"},  # a NUMBER feature needs a limit
    ]}
    r = raw.post(f"/api/v1/customers/{cust}/promotional-entitlements", json=body)
    assert r.status_code == 400 and "promotionalEntitlements[1].usageLimit" in r.text
    assert raw.get(f"/api/v1/customers/{cust}/promotional-entitlements").json()["data"] == []
    unknown = raw.post(f"/api/v1/customers/{cust}/promotional-entitlements", json={
        "promotionalEntitlements": [{"featureId": "nope", "period": "1 week"}]})
    assert unknown.status_code == 404
    nobody = raw.post("/api/v1/customers/nobody-here/promotional-entitlements", json={
        "promotionalEntitlements": [{"featureId": f["flag"], "period": "1 week"}]})
    assert nobody.status_code == 404
