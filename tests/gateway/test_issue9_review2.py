"""Issue 9, second review: subscriptions, entitlements and usage over time (plan changes
mid-window, replacements, add-on quantities, promotions beside plans, ALL_CUSTOMERS
publishes while in trial or not started, resources, boundaries), the TOML catalog applied
through the CLI, and concurrent requests on one customer. Tests marked xfail(strict=True)
document bugs found in this review; the reason says what is wrong."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.gateway.conftest import ROOT, fresh_pg_url
from tests.gateway.test_bad_input import assert_error
from tests.gateway.test_issue9_hardening import Cat, _t

DAY = timedelta(days=1)
HOUR = timedelta(hours=1)
CLOCK_START = "2026-01-01T00:00:00+00:00"
SERVER_ENV = {"CREDITD_CLOCK": f"manual:{CLOCK_START}"}


@pytest.fixture
def cat(raw, uid) -> Cat:
    return Cat(raw, uid)


def usage(raw: httpx.Client, customer: str, feature: str, value: float,
          resource: str | None = None, behavior: str = "DELTA") -> httpx.Response:
    item: dict[str, Any] = {"customerId": customer, "featureId": feature, "value": value,
                            "updateBehavior": behavior}
    if resource is not None:
        item["resourceId"] = resource
    return raw.post("/api/v2/usage", json={"usages": [item]})


def feat(limit: int | None = None, reset: str | None = None, **extra: Any):
    def make(feature: str) -> dict[str, Any]:
        e: dict[str, Any] = {"type": "FEATURE", "id": feature, **extra}
        if limit is not None:
            e["usageLimit"] = limit
        if reset is not None:
            e["resetPeriod"] = reset
        return e
    return make


def running(cat: Cat, customer: str) -> list[dict[str, Any]]:
    return [s for s in cat.subs_of(customer) if s["status"] in ("ACTIVE", "IN_TRIAL")]


# --- usage windows across plan changes ----------------------------------------------------

def test_usage_carries_over_a_plan_change_by_patch(raw, clock, cat) -> None:
    api = cat.feature()
    small = cat.plan(credits=0, entitlements=[feat(10, "MONTH")(api)])
    big = cat.plan(credits=0, entitlements=[feat(100, "MONTH")(api)])
    customer = cat.customer()
    sub = cat.provision(customer, small)
    clock.move(by=3 * DAY)
    assert usage(raw, customer, api, 7).status_code == 200
    cat.ok(raw.patch(f"/api/v1/subscriptions/{sub['id']}", json={"planId": big}))
    d = cat.check(customer, api)
    assert (d["currentUsage"], d["usageLimit"]) == (7, 100)
    assert _t(d["usagePeriodStart"]) == _t(sub["startDate"])


def test_usage_carries_over_a_replacement_by_provisioning(raw, clock, cat) -> None:
    api = cat.feature()
    small = cat.plan(credits=0, entitlements=[feat(10, "MONTH")(api)])
    big = cat.plan(credits=0, entitlements=[feat(100, "MONTH")(api)])
    customer = cat.customer()
    cat.provision(customer, small)
    clock.move(by=3 * DAY)
    assert usage(raw, customer, api, 9).status_code == 200
    cat.provision(customer, big)
    cat.provision(customer, small)  # and back: the quota of 10 is not refilled
    d = cat.check(customer, api, requestedUsage=2)
    assert d["currentUsage"] == 9
    assert (d["isGranted"], d["accessDeniedReason"]) == (False, "RequestedUsageExceedingLimit")


def monthly_with_usage(raw: httpx.Client, cat: Cat, *, other_product: bool = False,
                       resource: str | None = None) -> tuple[str, str, str, dict[str, Any]]:
    """A feature, a monthly plan with 10 of it and a lifetime plan with 10 (of another
    product: `other_product`), and a customer on the monthly plan who used 8: (feature,
    lifetime plan, customer, subscription)."""
    api = cat.feature()
    monthly = cat.plan(credits=0, entitlements=[feat(10, "MONTH")(api)])
    lifetime = cat.plan(credits=0, entitlements=[feat(10)(api)],
                        product=cat.new_product() if other_product else None)
    customer = cat.customer()
    extra = {} if resource is None else {"resourceId": resource}
    sub = cat.provision(customer, monthly, **extra)
    assert usage(raw, customer, api, 8, resource=resource).status_code == 200
    return api, lifetime, customer, sub


def test_usage_that_reset_does_not_come_back_after_a_change_to_no_reset(raw, clock,
                                                                          cat) -> None:
    api, lifetime, customer, sub = monthly_with_usage(raw, cat)
    clock.move(to=_t(sub["currentBillingPeriodEnd"]) + DAY)
    assert cat.check(customer, api)["currentUsage"] == 0  # reset on time
    cat.ok(raw.patch(f"/api/v1/subscriptions/{sub['id']}", json={"planId": lifetime}))
    d = cat.check(customer, api, requestedUsage=5)
    assert d["currentUsage"] == 0
    assert d["isGranted"] is True


def test_usage_of_the_current_window_carries_over_a_change_to_no_reset(raw, clock,
                                                                        cat) -> None:
    api, lifetime, customer, sub = monthly_with_usage(raw, cat)
    clock.move(by=DAY)
    cat.ok(raw.patch(f"/api/v1/subscriptions/{sub['id']}", json={"planId": lifetime}))
    d = cat.check(customer, api, requestedUsage=5)
    assert (d["currentUsage"], d["isGranted"]) == (8, False)
    assert usage(raw, customer, api, 1).status_code == 200
    assert cat.check(customer, api)["currentUsage"] == 9


@pytest.mark.parametrize("how", ["scheduled change", "replaced", "changed later"])
def test_usage_that_reset_stays_reset_whatever_ends_the_monthly_terms(raw, clock, cat,
                                                                      how) -> None:
    api, lifetime, customer, sub = monthly_with_usage(raw, cat)
    end = _t(sub["currentBillingPeriodEnd"])
    if how == "scheduled change":
        # Applied by the scheduler at the period's end, when the usage has just reset.
        cat.ok(raw.patch(f"/api/v1/subscriptions/{sub['id']}", json={
            "planId": lifetime, "scheduleStrategy": "END_OF_BILLING_PERIOD"}))
        clock.move(to=end + HOUR)
    elif how == "replaced":
        clock.move(to=end + HOUR)
        cat.provision(customer, lifetime)  # the same product: the monthly one ends now
    else:
        clock.move(to=end + HOUR)
        assert usage(raw, customer, api, 2).status_code == 200  # the new window's
        cat.ok(raw.patch(f"/api/v1/subscriptions/{sub['id']}", json={"planId": lifetime}))
    expected = 2 if how == "changed later" else 0
    assert cat.check(customer, api)["currentUsage"] == expected
    assert usage(raw, customer, api, 3).status_code == 200
    assert cat.check(customer, api)["currentUsage"] == expected + 3


def test_ending_one_source_keeps_the_usage_another_sources_window_shows(raw, clock,
                                                                          cat) -> None:
    """Two subscriptions (two products) grant the feature: the older one's monthly window
    is the effective one. Ending or changing the younger, which resets daily, must not
    restart usage that the monthly window still shows."""
    api = cat.feature()
    monthly = cat.plan(credits=0, entitlements=[feat(10, "MONTH")(api)])
    daily = cat.plan(credits=0, entitlements=[feat(5, "DAY")(api)],
                     product=cat.new_product())
    lifetime = cat.plan(credits=0, entitlements=[feat(5)(api)], product=cat.new_product())
    customer = cat.customer()
    cat.provision(customer, monthly)
    clock.move(by=10 * DAY)
    second = cat.provision(customer, daily)
    clock.move(by=2 * DAY)
    assert usage(raw, customer, api, 8).status_code == 200
    clock.move(by=3 * DAY)
    assert cat.check(customer, api)["currentUsage"] == 8  # the monthly window counts
    cat.ok(raw.patch(f"/api/v1/subscriptions/{second['id']}", json={"planId": lifetime}))
    assert cat.check(customer, api)["currentUsage"] == 8
    clock.move(by=DAY)
    cat.ok(raw.post(f"/api/v1/subscriptions/{second['id']}/cancel",
                    json={"cancellationTime": "IMMEDIATE"}))
    assert cat.check(customer, api)["currentUsage"] == 8


def test_a_subscription_that_has_not_started_settles_nothing(raw, clock, cat) -> None:
    api = cat.feature()
    monthly = cat.plan(credits=0, entitlements=[feat(10, "MONTH")(api)])
    daily = cat.plan(credits=0, entitlements=[feat(5, "DAY")(api)],
                     product=cat.new_product())
    customer = cat.customer()
    cat.provision(customer, monthly)
    assert usage(raw, customer, api, 8).status_code == 200
    start = clock.now() + 30 * DAY
    later = cat.provision(customer, daily, startDate=start.isoformat())
    cat.ok(raw.post(f"/api/v1/subscriptions/{later['id']}/cancel",
                    json={"cancellationTime": "IMMEDIATE"}))
    assert cat.check(customer, api)["currentUsage"] == 8
    clock.move(by=DAY)
    assert usage(raw, customer, api, 1).status_code == 200
    assert cat.check(customer, api)["currentUsage"] == 9


def test_usage_that_reset_at_a_period_end_cancellation_stays_reset(raw, clock, cat) -> None:
    api, lifetime, customer, sub = monthly_with_usage(raw, cat, other_product=True)
    cat.ok(raw.post(f"/api/v1/subscriptions/{sub['id']}/cancel",
                    json={"cancellationTime": "END_OF_BILLING_PERIOD"}))
    clock.move(to=_t(sub["currentBillingPeriodEnd"]) + HOUR)
    assert cat.sub(sub["id"])["status"] == "CANCELED"
    cat.provision(customer, lifetime)
    assert cat.check(customer, api)["currentUsage"] == 0


def test_usage_that_reset_stays_reset_on_the_resource_a_subscription_leaves(raw, clock,
                                                                             cat) -> None:
    api, lifetime, customer, sub = monthly_with_usage(raw, cat, other_product=True,
                                                      resource="site-1")
    clock.move(to=_t(sub["currentBillingPeriodEnd"]) + HOUR)
    assert cat.check(customer, api, resourceId="site-1")["currentUsage"] == 0
    cat.ok(raw.post(f"/api/v1/subscriptions/{sub['id']}/transfer",
                    json={"destinationResourceId": "site-2"}))
    cat.provision(customer, lifetime, resourceId="site-1")
    assert cat.check(customer, api, resourceId="site-1")["currentUsage"] == 0


def test_current_usage_right_after_changes_and_at_window_boundary(raw, clock, cat) -> None:
    api = cat.feature()
    plan = cat.plan(credits=0, entitlements=[feat(10, "DAY")(api)])
    customer = cat.customer()
    t0 = clock.now()
    cat.provision(customer, plan)
    assert usage(raw, customer, api, 4).status_code == 200
    clock.move(to=t0 + DAY - timedelta(seconds=1))
    d = cat.check(customer, api)
    assert d["currentUsage"] == 4
    assert _t(d["usagePeriodEnd"]) == t0 + DAY
    clock.move(to=t0 + DAY)  # exactly the boundary: a new window
    d = cat.check(customer, api, requestedUsage=10)
    assert (d["currentUsage"], d["isGranted"]) == (0, True)
    assert _t(d["usagePeriodStart"]) == t0 + DAY
    assert _t(d["usagePeriodEnd"]) == t0 + 2 * DAY
    r = usage(raw, customer, api, 3)
    assert r.status_code == 200, r.text
    assert r.json()["data"]["usages"][0]["currentUsage"] == 3
    listed = cat.ok(raw.get(f"/api/v1/customers/{customer}/entitlements"))["entitlements"]
    [row] = [e for e in listed if e.get("feature") and e["feature"]["id"] == api]
    assert row["currentUsage"] == 3


def test_promotion_and_plan_with_different_reset_periods(raw, clock, cat) -> None:
    api = cat.feature()
    plan = cat.plan(credits=0, entitlements=[feat(10, "MONTH")(api)])
    customer = cat.customer()
    t0 = clock.now()
    sub = cat.provision(customer, plan)
    cat.ok(raw.post(f"/api/v1/customers/{customer}/promotional-entitlements", json={
        "promotionalEntitlements": [{"featureId": api, "period": "1 month", "usageLimit": 5,
                                     "resetPeriod": "DAY"}]}))
    d = cat.check(customer, api)
    assert (d["usageLimit"], d["resetPeriod"]) == (15, "MONTH")
    assert usage(raw, customer, api, 12).status_code == 200
    clock.move(to=t0 + 2 * DAY)  # the promotion's DAY would have reset; the plan's MONTH wins
    d = cat.check(customer, api, requestedUsage=3)
    assert (d["currentUsage"], d["isGranted"]) == (12, True)
    assert cat.check(customer, api, requestedUsage=4)["isGranted"] is False
    # Without the subscription, the promotion's own DAY window applies.
    cat.ok(raw.post(f"/api/v1/subscriptions/{sub['id']}/cancel",
                    json={"cancellationTime": "IMMEDIATE"}))
    d = cat.check(customer, api)
    assert (d["usageLimit"], d["resetPeriod"], d["currentUsage"]) == (5, "DAY", 0)


def test_feature_granted_only_by_an_add_on_whose_quantity_changes(raw, clock, cat) -> None:
    api = cat.feature()
    addon = cat.addon(credits=10, entitlements=[feat(4, "MONTH")(api)])
    plan = cat.plan(credits=0, addons=[addon])
    customer = cat.customer()
    sub = cat.provision(customer, plan)
    assert cat.check(customer, api)["accessDeniedReason"] == \
        "NoFeatureEntitlementInSubscription"
    cat.ok(raw.patch(f"/api/v1/subscriptions/{sub['id']}",
                     json={"addons": [{"id": addon, "quantity": 3}]}))
    d = cat.check(customer, api, requestedUsage=12)
    assert (d["isGranted"], d["usageLimit"], d["resetPeriod"]) == (True, 12, "MONTH")
    assert _t(d["usagePeriodStart"]) == _t(sub["startDate"])
    assert cat.balance(customer) == 30
    assert usage(raw, customer, api, 10).status_code == 200
    cat.ok(raw.patch(f"/api/v1/subscriptions/{sub['id']}",
                     json={"addons": [{"id": addon, "quantity": 2}]}))
    d = cat.check(customer, api)
    assert (d["isGranted"], d["usageLimit"], d["currentUsage"]) == (
        False, 8, 10)
    assert cat.balance(customer) == 30  # credits granted stay
    cat.ok(raw.patch(f"/api/v1/subscriptions/{sub['id']}",
                     json={"addons": [{"id": addon, "quantity": 3}]}))
    assert cat.balance(customer) == 30  # back to 3 in the same window: no second grant
    cat.ok(raw.patch(f"/api/v1/subscriptions/{sub['id']}", json={"addons": []}))
    assert cat.check(customer, api)["accessDeniedReason"] == \
        "NoFeatureEntitlementInSubscription"
    clock.move(to=_t(sub["currentBillingPeriodEnd"]))
    assert cat.balance(customer) == 0
    assert [g["amount"] for g in cat.grants(customer)] == [30]


# --- ALL_CUSTOMERS while in trial or not started --------------------------------------------

def test_all_customers_publish_moves_trial_and_not_started_subscriptions(raw, clock,
                                                                           cat) -> None:
    api, extra = cat.feature(), cat.feature("BOOLEAN")
    plan = cat.plan(credits=0, trial={"duration": 7, "units": "DAY"},
                    entitlements=[feat(10, "MONTH")(api)])
    trialing, later = cat.customer(), cat.customer()
    t_sub = cat.provision(trialing, plan)
    start = clock.now() + 3 * DAY
    n_sub = cat.provision(later, plan, startDate=start.isoformat())
    assert (t_sub["status"], n_sub["status"]) == ("IN_TRIAL", "NOT_STARTED")
    cat.ok(raw.post(f"/api/v1/plans/{plan}/draft"))
    cat.ok(raw.post(f"/api/v1/plans/{plan}/entitlements", json={"entitlements": [
        {"type": "CREDIT", "id": cat.currency, "amount": 250, "cadence": "MONTH"},
        {"type": "FEATURE", "id": extra}]}))
    cat.ok(raw.post(f"/api/v1/plans/{plan}/publish", json={"migrationType": "ALL_CUSTOMERS"}))
    got = cat.sub(t_sub["id"])
    assert (got["planVersion"], got["status"]) == (2, "IN_TRIAL")
    assert got["trialEndDate"] == t_sub["trialEndDate"]
    assert cat.balance(trialing) == 250  # the trial window gets the new credits now
    assert cat.check(trialing, extra)["isGranted"] is True
    assert cat.check(trialing, api)["usageLimit"] == 10
    got = cat.sub(n_sub["id"])
    assert (got["planVersion"], got["status"]) == (2, "NOT_STARTED")
    assert _t(got["startDate"]) == start
    assert cat.grants(later) == []
    assert cat.check(later, extra)["accessDeniedReason"] == "NoActiveSubscription"
    clock.move(to=start)
    assert cat.sub(n_sub["id"])["status"] == "IN_TRIAL"
    assert [g["amount"] for g in cat.grants(later)] == [250]
    assert cat.check(later, extra)["isGranted"] is True
    # The first trial's end converts on the new version and renews its credits once.
    clock.move(to=_t(t_sub["trialEndDate"]))
    got = cat.sub(t_sub["id"])
    assert (got["status"], got["planVersion"]) == ("ACTIVE", 2)
    assert [g["amount"] for g in cat.grants(trialing)] == [250, 250]
    assert cat.balance(trialing) == 250


# --- resources --------------------------------------------------------------------------------

def test_entitlements_per_resource(raw, clock, cat) -> None:
    api = cat.feature()
    plan = cat.plan(credits=20, entitlements=[feat(5, "MONTH")(api)])
    customer = cat.customer()
    sub = cat.provision(customer, plan, resourceId="site-1")
    assert cat.check(customer, api)["accessDeniedReason"] == "NoActiveSubscription"
    assert cat.check(customer, api, resourceId="site-2")["accessDeniedReason"] == \
        "NoActiveSubscription"
    d = cat.check(customer, api, resourceId="site-1", requestedUsage=5)
    assert (d["isGranted"], d["usageLimit"]) == (True, 5)
    assert usage(raw, customer, api, 4, resource="site-1").status_code == 200
    assert cat.check(customer, api, resourceId="site-1")["currentUsage"] == 4
    # A second subscription on another resource is not a replacement.
    other = cat.provision(customer, plan, resourceId="site-2")
    assert cat.sub(sub["id"])["status"] == "ACTIVE"
    d = cat.check(customer, api, resourceId="site-2")
    assert (d["currentUsage"], d["usageLimit"]) == (0, 5)
    listed = cat.ok(raw.get(f"/api/v1/customers/{customer}/entitlements",
                            params={"resourceId": "site-1"}))["entitlements"]
    assert any(e.get("feature") and e["feature"]["id"] == api for e in listed)
    listed = cat.ok(raw.get(f"/api/v1/customers/{customer}/entitlements"))["entitlements"]
    assert not any(e.get("feature") and e["feature"]["id"] == api for e in listed)
    # Credits were granted to each resource's pool.
    bal = cat.ok(raw.get("/api/v1/credits/balance", params={
        "customerId": customer, "currencyId": cat.currency, "resourceId": "site-2"}))
    assert [b["currentBalance"] for b in bal["balances"]] == [20]
    assert other["resourceId"] == "site-2"


def test_transfer_onto_a_resource_with_a_running_subscription(raw, clock, cat) -> None:
    plan = cat.plan(credits=0)
    customer = cat.customer()
    a = cat.provision(customer, plan, resourceId="r-a")
    cat.provision(customer, plan, resourceId="r-b")
    r = raw.post(f"/api/v1/subscriptions/{a['id']}/transfer",
                 json={"destinationResourceId": "r-b"})
    assert r.status_code < 500, r.text
    on_b = [s for s in running(cat, customer) if s["resourceId"] == "r-b"]
    assert len(on_b) == 1, on_b


# --- boundaries ------------------------------------------------------------------------------

def test_cancellation_at_the_renewal_instant(raw, clock, cat) -> None:
    api = cat.feature()
    plan = cat.plan(credits=100, entitlements=[feat(10, "MONTH")(api)])
    customer = cat.customer()
    sub = cat.provision(customer, plan)
    end = _t(sub["currentBillingPeriodEnd"])
    done = cat.ok(raw.post(f"/api/v1/subscriptions/{sub['id']}/cancel", json={
        "cancellationTime": "SPECIFIC_DATE", "endDate": end.isoformat()}))
    assert _t(done["cancellationDate"]) == end
    d = cat.check(customer, api)
    assert _t(d["validUntil"]) == end
    clock.move(to=end - timedelta(seconds=1))
    assert cat.check(customer, api)["isGranted"] is True
    assert cat.sub(sub["id"])["status"] == "ACTIVE"
    clock.move(to=end)
    got = cat.sub(sub["id"])
    assert got["status"] == "CANCELED"
    assert cat.check(customer, api)["accessDeniedReason"] == "NoActiveSubscription"
    assert [g["amount"] for g in cat.grants(customer)] == [100]
    assert cat.balance(customer) == 0
    # A new subscription at that same instant starts fresh, once.
    cat.provision(customer, plan)
    assert [g["amount"] for g in cat.grants(customer)] == [100, 100]
    assert cat.balance(customer) == 100
    assert len(running(cat, customer)) == 1


def test_a_billing_period_change_does_not_double_the_window_credits(raw, clock, cat) -> None:
    plan = cat.plan(credits=100)
    customer = cat.customer()
    sub = cat.provision(customer, plan)
    clock.move(by=10 * DAY)
    for period in ("ANNUALLY", "MONTHLY", "ANNUALLY"):
        cat.ok(raw.patch(f"/api/v1/subscriptions/{sub['id']}", json={"billingPeriod": period}))
        clock.move(by=HOUR)
    # Monthly credits of 100: flipping the billing period must not mint more.
    assert cat.balance(customer) <= 100


# --- concurrency ------------------------------------------------------------------------------

def _parallel(server, jobs: list[Callable[[httpx.Client], Any]], workers: int = 12) -> list:
    local = threading.local()

    def run(job: Callable[[httpx.Client], Any]) -> Any:
        if not hasattr(local, "c"):
            local.c = server.http()
        return job(local.c)

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(run, jobs))


def test_parallel_provisioning_leaves_one_running_subscription(server, raw, clock,
                                                                 cat) -> None:
    plans = [cat.plan(credits=10 * (i + 1)) for i in range(3)]
    customer = cat.customer()
    jobs = [lambda c, p=plans[i % 3]: c.post("/api/v1/subscriptions", json={
        "customerId": customer, "planId": p}).status_code for i in range(18)]
    codes = _parallel(server, jobs)
    assert all(code == 201 for code in codes), codes
    alive = running(cat, customer)
    assert len(alive) == 1, alive
    # Replaced ones were voided: what is left is the survivor's window.
    survivor = next(p for p in plans if p == alive[0]["planId"])
    assert cat.balance(customer) == 10 * (plans.index(survivor) + 1)


def test_parallel_updates_and_replacements_leave_one_running(server, raw, clock, cat) -> None:
    plans = [cat.plan(credits=10), cat.plan(credits=20)]
    bad = 0
    for _round in range(20):
        customer = cat.customer()
        first = cat.provision(customer, plans[0])
        jobs: list[Callable[[httpx.Client], Any]] = [
            lambda c, i=i, s=first["id"]: c.patch(f"/api/v1/subscriptions/{s}",
                                                 json={"metadata": {"n": str(i)}}).status_code
            for i in range(16)]
        jobs.insert(8, lambda c, who=customer: c.post("/api/v1/subscriptions", json={
            "customerId": who, "planId": plans[1]}).status_code)
        codes = _parallel(server, jobs)
        assert codes[8] == 201, codes
        assert all(code < 500 for code in codes), codes
        if len(running(cat, customer)) != 1:
            bad += 1
    assert bad == 0


def test_cancel_racing_with_updates_stays_cancelled(server, raw, clock, cat) -> None:
    plan = cat.plan(credits=10)
    lost = 0
    for _round in range(10):
        customer = cat.customer()
        sub = cat.provision(customer, plan)
        jobs: list[Callable[[httpx.Client], Any]] = [
            lambda c, i=i, s=sub["id"]: c.patch(f"/api/v1/subscriptions/{s}",
                                               json={"metadata": {"n": str(i)}}).status_code
            for i in range(10)]
        jobs.insert(5, lambda c, s=sub["id"]: c.post(
            f"/api/v1/subscriptions/{s}/cancel",
            json={"cancellationTime": "IMMEDIATE"}).status_code)
        codes = _parallel(server, jobs)
        assert codes[5] == 200, codes
        assert all(code < 500 for code in codes), codes
        if cat.sub(sub["id"])["status"] != "CANCELED":
            lost += 1
    assert lost == 0


def test_parallel_quantity_changes_grant_each_window_once(server, raw, clock, cat) -> None:
    addon = cat.addon(credits=10, max_quantity=10)
    plan = cat.plan(credits=0, addons=[addon])
    wrong = []
    for _round in range(5):
        customer = cat.customer()
        sub = cat.provision(customer, plan, addons=[{"id": addon, "quantity": 1}])
        jobs = [lambda c, q=q, s=sub["id"]: c.patch(f"/api/v1/subscriptions/{s}", json={
            "addons": [{"id": addon, "quantity": q}]}).status_code for q in range(1, 11)]
        codes = _parallel(server, jobs, workers=10)
        assert all(code == 200 for code in codes), codes
        final = cat.sub(sub["id"])["addons"][0]["quantity"]
        # Granted in this window: at least what the final quantity gives, at most the
        # highest quantity's 10 × 10.
        balance = cat.balance(customer)
        if not 10 * final <= balance <= 100:
            wrong.append((final, balance))
    assert wrong == []


def test_checks_while_the_clock_moves_and_quantity_changes(server, raw, clock, cat) -> None:
    api = cat.feature()
    addon = cat.addon(credits=0, max_quantity=10, entitlements=[feat(1)(api)])
    plan = cat.plan(credits=5, addons=[addon])
    customer = cat.customer()
    sub = cat.provision(customer, plan, addons=[{"id": addon, "quantity": 1}])
    end = _t(sub["currentBillingPeriodEnd"])
    jobs: list[Callable[[httpx.Client], Any]] = []
    for i in range(30):
        jobs.append(lambda c: c.get(f"/api/v1/customers/{customer}/entitlements/check",
                                    params={"featureId": api}).status_code)
        if i % 10 == 5:
            jobs.append(lambda c, q=i // 10 + 2: c.patch(
                f"/api/v1/subscriptions/{sub['id']}",
                json={"addons": [{"id": addon, "quantity": q}]}).status_code)
        if i == 15:
            jobs.append(lambda c: c.put("/api/v1/test-clock",
                                        json={"now": end.isoformat()}).status_code)
    codes = _parallel(server, jobs)
    assert all(code == 200 for code in codes), codes
    assert cat.sub(sub["id"])["status"] == "ACTIVE"
    assert sorted(g["amount"] for g in cat.grants(customer)) == [5, 5]


def test_checks_racing_with_a_change_see_it_afterwards(server, raw, clock, cat) -> None:
    api = cat.feature()
    addon = cat.addon(credits=0, max_quantity=50, entitlements=[feat(1)(api)])
    plan = cat.plan(credits=0, addons=[addon])
    stale = []
    for q in range(2, 24):
        customer = cat.customer()
        sub = cat.provision(customer, plan, addons=[{"id": addon, "quantity": 1}])
        end = _t(sub["currentBillingPeriodEnd"])
        jobs: list[Callable[[httpx.Client], Any]] = [
            lambda c, who=customer: c.get(f"/api/v1/customers/{who}/entitlements/check",
                                          params={"featureId": api}).status_code
            for _ in range(16)]
        jobs.insert(8, lambda c, q=q, s=sub["id"]: c.patch(f"/api/v1/subscriptions/{s}", json={
            "addons": [{"id": addon, "quantity": q}]}).status_code)
        jobs.insert(4, lambda c, end=end: c.put("/api/v1/test-clock",
                                                json={"now": end.isoformat()}).status_code)
        codes = _parallel(server, jobs)
        assert all(code == 200 for code in codes), codes
        stored = cat.sub(sub["id"])["addons"][0]["quantity"]
        limit = cat.check(customer, api)["usageLimit"]
        if (stored, limit) != (q, q):
            stale.append((q, stored, limit))
    assert stale == []


# --- 4xx without a field / 500 --------------------------------------------------------------

def test_transfer_and_migrate_of_unknown_subscriptions(raw, cat) -> None:
    r = raw.post("/api/v1/subscriptions/nope/transfer", json={"destinationResourceId": "x"})
    assert_error(r, 404, "id")
    r = raw.post("/api/v1/subscriptions/nope/migrate", json={})
    assert_error(r, 404, "id")
    r = raw.delete("/api/v1/subscriptions/nope/future-update/schedule")
    assert_error(r, 404, "id")


def test_transfer_of_a_cancelled_subscription_is_refused(raw, cat) -> None:
    plan = cat.plan(credits=0)
    customer = cat.customer()
    sub = cat.provision(customer, plan)
    cat.ok(raw.post(f"/api/v1/subscriptions/{sub['id']}/cancel",
                    json={"cancellationTime": "IMMEDIATE"}))
    r = raw.post(f"/api/v1/subscriptions/{sub['id']}/transfer",
                 json={"destinationResourceId": "r"})
    assert r.status_code == 400, r.text
    assert_error(r, 400, "id")


# --- the TOML catalog through the CLI --------------------------------------------------------

@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('review2') / 'creditd.db'}"
        return
    url, drop = fresh_pg_url()
    try:
        yield url
    finally:
        drop()


def creditd(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CREDITD_")}
    try:
        return subprocess.run([sys.executable, "-m", "gateway.cli", *args], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=timeout,
                              check=False)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"creditd {' '.join(args)} hung: {exc.stderr!r}"[:2000]) from None


def apply(db: str, tmp_path: Path, text: str, *extra: str,
          timeout: float = 60) -> subprocess.CompletedProcess[str]:
    path = tmp_path / f"catalog-{abs(hash(text))}.toml"
    path.write_text(text)
    return creditd("catalog", "apply", str(path), "--database-url", db, *extra,
                   timeout=timeout)


def refused_file(result: subprocess.CompletedProcess[str], *names: str) -> None:
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    for name in names:
        assert name in result.stderr, result.stderr


def base_catalog(p: str) -> str:
    return f"""\
[currencies.{p}-gold]
display_name = "Gold"

[features.{p}-api]
display_name = "API"
type = "NUMBER"

[products.{p}-shop]
display_name = "Shop"

[addons.{p}-boost]
product = "{p}-shop"
display_name = "Boost"

[plans.{p}-basic]
product = "{p}-shop"
display_name = "Basic"
compatible_addons = ["{p}-boost"]

[plans.{p}-basic.entitlements.{p}-api]
usage_limit = 10
reset_period = "MONTH"

[plans.{p}-basic.credits.{p}-gold]
amount = 100

[[plans.{p}-basic.prices]]
model = "FLAT_FEE"
periods = [{{ billing_period = "MONTHLY", amount = "10" }}]
"""


@pytest.mark.parametrize("extra, names", [
    (('\n[plans.P-x]\nproduct = "P-shop"\ndisplay_name = "X"\n'
     '[plans.P-x.credits.nowhere]\namount = 5\n'), ["plans.P-x.credits.nowhere"]),
    (('\n[plans.P-x]\nproduct = "P-shop"\ndisplay_name = "X"\n'
     'compatible_addons = ["no-such-addon"]\n'), ["plans.P-x.compatible_addons"]),
    ('\n[plans.P-x]\nproduct = "P-shop"\ndisplay_name = "X"\nparent = "no-such-plan"\n',
     ["plans.P-x.parent"]),
    ('\n[plans.P-x]\nproduct = "no-such-product"\ndisplay_name = "X"\n',
     ["plans.P-x.product"]),
    (('\n[plans.P-x]\nproduct = "P-shop"\ndisplay_name = "X"\n'
     '[plans.P-x.entitlements.P-api]\nusage_limit = "ten"\n'),
     ["plans.P-x.entitlements.P-api.usage_limit"]),
    (('\n[plans.P-x]\nproduct = "P-shop"\ndisplay_name = "X"\n'
     '[plans.P-x.entitlements.P-api]\nusage_limit = -3\n'),
     ["plans.P-x.entitlements.P-api.usage_limit"]),
    (('\n[plans.P-x]\nproduct = "P-shop"\ndisplay_name = "X"\n'
     '[plans.P-x.entitlements.P-api]\nlimit = 3\n'), ["plans.P-x.entitlements.P-api.limit"]),
    (('\n[plans.P-x]\nproduct = "P-shop"\ndisplay_name = "X"\n'
     'trial = { duration = 99999999999, units = "DAY" }\n'), ["plans.P-x.trial"]),
    ('\n[addons.P-y]\nproduct = "P-shop"\ndisplay_name = "Y"\nmax_quantity = 0\n',
     ["addons.P-y.max_quantity"]),
    (('\n[addons.P-y]\nproduct = "P-shop"\ndisplay_name = "Y"\n'
     'dependencies = ["no-such-addon"]\n'), ["addons.P-y.dependencies"]),
])
def test_catalog_bad_items_are_refused_whole(db, tmp_path, uid, extra, names) -> None:
    p = uid("c")
    text = base_catalog(p) + extra.replace("P-", f"{p}-")
    r = apply(db, tmp_path, text)
    refused_file(r, *[n.replace("P-", f"{p}-") for n in names])
    # Nothing of the file was applied: the valid items are still to be created.
    dry = apply(db, tmp_path, base_catalog(p), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"would create          product {p}-shop" in dry.stdout or (
        f"product {p}-shop" in dry.stdout and "would create" in dry.stdout), dry.stdout


@pytest.mark.parametrize("extra, name", [
    ('[plans.P-x.credits.P-gold]\namount = nan\n', "plans.P-x.credits.P-gold.amount"),
    ('[plans.P-x.credits.P-gold]\namount = inf\n', "plans.P-x.credits.P-gold.amount"),
    (('[[plans.P-x.prices]]\nmodel = "FLAT_FEE"\n'
     'periods = [{ billing_period = "MONTHLY", amount = inf }]\n'),
     "plans.P-x.prices[0].periods[0].amount"),
])
def test_catalog_nan_and_inf_amounts_are_refused(db, tmp_path, uid, extra, name) -> None:
    p = uid("c")
    text = base_catalog(p) + (f'\n[plans.{p}-x]\nproduct = "{p}-shop"\ndisplay_name = "X"\n'
                              + extra.replace("P-", f"{p}-"))
    refused_file(apply(db, tmp_path, text, timeout=15), name.replace("P-", f"{p}-"))


def test_catalog_parent_cycle_through_the_stored_catalog(db, tmp_path, uid) -> None:
    p = uid("c")
    first = base_catalog(p) + f"""
[plans.{p}-a]
product = "{p}-shop"
display_name = "A"

[plans.{p}-b]
product = "{p}-shop"
display_name = "B"
parent = "{p}-a"
"""
    r = apply(db, tmp_path, first)
    assert r.returncode == 0, r.stderr
    # The file names only a; b (stored) inherits from a: a inheriting from b is a cycle.
    second = base_catalog(p) + f"""
[plans.{p}-a]
product = "{p}-shop"
display_name = "A"
parent = "{p}-b"
"""
    refused_file(apply(db, tmp_path, second), f"plans.{p}-a.parent")


def test_catalog_failing_late_applies_nothing(db, tmp_path, uid) -> None:
    p = uid("c")
    text = base_catalog(p) + f"""
[coupons.{p}-off]
name = "Off"
percent_off = 10
"""
    assert apply(db, tmp_path, text).returncode == 0
    # A new price for the plan (a new version) and a coupon whose discount cannot change:
    # the coupon, applied last, fails; the plan must not have moved.
    changed = text.replace('amount = "10"', 'amount = "12"').replace(
        "percent_off = 10", "percent_off = 20")
    refused_file(apply(db, tmp_path, changed), f"coupons.{p}-off")
    dry = apply(db, tmp_path, text, "--dry-run")
    assert dry.returncode == 0 and "no changes" in dry.stdout, dry.stdout


def test_catalog_dry_run_changes_nothing(db, tmp_path, uid) -> None:
    p = uid("c")
    text = base_catalog(p)
    first = apply(db, tmp_path, text, "--dry-run")
    assert first.returncode == 0 and "would create" in first.stdout, first.stdout
    again = apply(db, tmp_path, text, "--dry-run")
    assert again.stdout == first.stdout
    assert apply(db, tmp_path, text).returncode == 0
    changed = text.replace("usage_limit = 10", "usage_limit = 20")
    preview = apply(db, tmp_path, changed, "--dry-run")
    assert f"would publish-new-version plan {p}-basic" in preview.stdout, preview.stdout
    assert "no changes" in apply(db, tmp_path, text).stdout


def test_catalog_new_version_leaves_subscribers_on_theirs(db, tmp_path, uid,
                                                          make_server) -> None:
    p = uid("c")
    text = base_catalog(p)
    assert apply(db, tmp_path, text).returncode == 0
    key = "k-review2-catalog"
    env_key = f"{key}"

    def serve():
        return make_server(db, api_keys=env_key,
                           env={"CREDITD_CLOCK": f"manual:{CLOCK_START}"}).start()

    server = serve()
    with server.http(key=key) as raw:
        cat = Cat.__new__(Cat)
        cat.raw, cat.uid, cat.currency = raw, uid, f"{p}-gold"
        old = cat.customer()
        sub = cat.provision(old, f"{p}-basic")
        assert sub["planVersion"] == 1
    server.stop()
    changed = text.replace("amount = 100", "amount = 300").replace(
        "usage_limit = 10", "usage_limit = 20")
    r = apply(db, tmp_path, changed)
    assert r.returncode == 0, r.stderr
    assert f"plan {p}-basic" in r.stdout and "v2" in r.stdout, r.stdout
    server = serve()
    with server.http(key=key) as raw:
        cat.raw = raw
        got = cat.sub(sub["id"])
        assert got["planVersion"] == 1
        assert cat.check(old, f"{p}-api")["usageLimit"] == 10
        assert cat.balance(old) == 100
        new = cat.customer()
        assert cat.provision(new, f"{p}-basic")["planVersion"] == 2
        assert cat.check(new, f"{p}-api")["usageLimit"] == 20
        assert cat.balance(new) == 300
    server.stop()
