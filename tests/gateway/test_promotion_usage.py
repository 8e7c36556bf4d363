"""Usage that had reset under a promotion's window stays reset when the promotion stops:
revoked, replaced by a grant for the same feature, or expired by the clock — the same rule
as for a subscription's terms (tests/gateway/test_issue9_review2.py, docs/subscriptions.md,
"Usage across changes"). Usage of the window current when it stops carries over."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

import httpx
import pytest

from tests.gateway.test_issue9_hardening import Cat
from tests.gateway.test_issue9_review2 import (  # noqa: F401 (SERVER_ENV: its manual clock)
    DAY,
    HOUR,
    SERVER_ENV,
    feat,
    usage,
)


@pytest.fixture
def cat(raw, uid) -> Cat:
    return Cat(raw, uid)


def promote(raw: httpx.Client, cat: Cat, customer: str, feature: str,
            **terms: Any) -> None:
    item = {"featureId": feature, "period": "1 year", "usageLimit": 5, "resetPeriod": "MONTH",
            **terms}
    cat.ok(raw.post(f"/api/v1/customers/{customer}/promotional-entitlements",
                    json={"promotionalEntitlements": [item]}))


def revoke(raw: httpx.Client, cat: Cat, customer: str, feature: str) -> None:
    cat.ok(raw.delete(f"/api/v1/customers/{customer}/promotional-entitlements/{feature}"))


def ending(day: datetime) -> dict[str, str]:
    """A promotion's terms that end on `day`."""
    return {"period": "custom", "customEndDate": day.isoformat()}


def plan_on_site_1_and_promotion_to_day_45(raw: httpx.Client, cat: Cat,
                                          start: datetime) -> tuple[str, str, dict[str, Any]]:
    """A customer on a plan granting 10 of a feature for good on resource site-1, and a
    monthly promotion of 5 more ending on day 45: (feature, customer, subscription)."""
    api = cat.feature()
    customer = cat.customer()
    sub = cat.provision(customer, cat.plan(credits=0, entitlements=[feat(10)(api)]),
                        resourceId="site-1")
    promote(raw, cat, customer, api, **ending(start + 45 * DAY))
    return api, customer, sub


def yearly_plan_changing_at_its_period_end(raw: httpx.Client, cat: Cat, start: datetime,
                                           ) -> tuple[str, str, dict[str, Any], str]:
    """A customer on a yearly-reset plan changing to one without a reset at its period's
    end (day 31), with a weekly promotion ending on day 40, who used 8 on day 2 (the
    clock left there): (feature, customer, subscription, the plan without a reset)."""
    api = cat.feature()
    customer = cat.customer()
    sub = cat.provision(customer, cat.plan(credits=0, entitlements=[feat(10, "YEAR")(api)]))
    lifetime = cat.plan(credits=0, entitlements=[feat(10)(api)])
    promote(raw, cat, customer, api, resetPeriod="WEEK", **ending(start + 40 * DAY))
    raw.put("/api/v1/test-clock", json={"now": (start + 2 * DAY).isoformat()}
            ).raise_for_status()
    assert usage(raw, customer, api, 8).status_code == 200
    cat.ok(raw.patch(f"/api/v1/subscriptions/{sub['id']}",
                     json={"planId": lifetime, "scheduleStrategy": "END_OF_BILLING_PERIOD"}))
    return api, customer, sub, lifetime


def cancel_on(raw: httpx.Client, cat: Cat, sub: dict[str, Any], day: datetime) -> None:
    cat.ok(raw.post(f"/api/v1/subscriptions/{sub['id']}/cancel", json={
        "cancellationTime": "SPECIFIC_DATE", "endDate": day.isoformat()}))


def lifetime_plan_and_monthly_promotion(raw: httpx.Client, cat: Cat,
                                        **terms: Any) -> tuple[str, str]:
    """A customer on a plan granting 10 of a feature for good (no reset) and a promotion of
    5 more that resets monthly (so the promotion's window is the one that counts), who
    used 8: (feature, customer)."""
    api = cat.feature()
    customer = cat.customer()
    cat.provision(customer, cat.plan(credits=0, entitlements=[feat(10)(api)]))
    promote(raw, cat, customer, api, **terms)
    d = cat.check(customer, api)
    assert (d["usageLimit"], d["resetPeriod"]) == (15, "MONTH")
    assert usage(raw, customer, api, 8).status_code == 200
    return api, customer


@pytest.mark.parametrize("how", ["revoked", "granted again without a reset"])
def test_usage_that_reset_stays_reset_when_the_promotion_stops(raw, clock, cat,
                                                               how) -> None:
    api, customer = lifetime_plan_and_monthly_promotion(raw, cat)
    clock.move(by=40 * DAY)  # the promotion's month has turned over
    assert cat.check(customer, api)["currentUsage"] == 0
    if how == "revoked":
        revoke(raw, cat, customer, api)
        limit = 10
    else:
        promote(raw, cat, customer, api, usageLimit=3, resetPeriod=None)
        limit = 13
    d = cat.check(customer, api, requestedUsage=limit)
    assert (d["usageLimit"], d["resetPeriod"]) == (limit, None)
    assert (d["currentUsage"], d["isGranted"]) == (0, True)
    assert usage(raw, customer, api, 3).status_code == 200
    assert cat.check(customer, api)["currentUsage"] == 3


def test_usage_that_reset_stays_reset_when_the_promotion_expires(raw, clock, cat) -> None:
    start = clock.now()
    api, customer = lifetime_plan_and_monthly_promotion(
        raw, cat, **ending(start + 45 * DAY))
    clock.move(to=start + 40 * DAY)
    assert usage(raw, customer, api, 2).status_code == 200  # the second month's
    clock.move(to=start + 50 * DAY)  # expired by the clock, nothing else happened
    d = cat.check(customer, api)
    assert (d["usageLimit"], d["resetPeriod"], d["currentUsage"]) == (10, None, 2)
    assert usage(raw, customer, api, 1).status_code == 200
    assert cat.check(customer, api)["currentUsage"] == 3


def test_usage_written_first_after_the_expiry_counts_from_the_last_window(raw, clock,
                                                                          cat) -> None:
    start = clock.now()
    api, customer = lifetime_plan_and_monthly_promotion(
        raw, cat, **ending(start + 45 * DAY))
    clock.move(to=start + 50 * DAY)
    # The first thing after the end is a usage report: written on the settled counter.
    assert usage(raw, customer, api, 4).status_code == 200
    assert cat.check(customer, api)["currentUsage"] == 4


def test_usage_of_the_current_window_carries_over_a_revocation(raw, clock, cat) -> None:
    api, customer = lifetime_plan_and_monthly_promotion(raw, cat)
    clock.move(by=10 * DAY)  # the same month
    revoke(raw, cat, customer, api)
    d = cat.check(customer, api, requestedUsage=2)
    assert (d["currentUsage"], d["isGranted"]) == (8, True)
    assert usage(raw, customer, api, 1).status_code == 200
    assert cat.check(customer, api)["currentUsage"] == 9


def test_a_subscriptions_window_is_kept_when_a_promotion_stops(raw, clock, cat) -> None:
    """The plan resets monthly from its own start: its window is the one that counts, and
    the promotion's end changes nothing the customer sees."""
    api = cat.feature()
    customer = cat.customer()
    start = clock.now()
    cat.provision(customer, cat.plan(credits=0, entitlements=[feat(10, "MONTH")(api)]))
    clock.move(to=start + 10 * DAY)
    promote(raw, cat, customer, api, resetPeriod="WEEK")
    assert usage(raw, customer, api, 8).status_code == 200
    clock.move(to=start + 20 * DAY)  # the promotion's week would have turned over
    assert cat.check(customer, api)["currentUsage"] == 8
    revoke(raw, cat, customer, api)
    assert cat.check(customer, api)["currentUsage"] == 8
    clock.move(to=start + 32 * DAY + HOUR)  # the plan's month turns over
    assert cat.check(customer, api)["currentUsage"] == 0


def test_usage_on_a_resource_stays_reset_when_the_promotion_expires(raw, clock, cat) -> None:
    start = clock.now()
    api, customer, _ = plan_on_site_1_and_promotion_to_day_45(raw, cat, start)
    assert usage(raw, customer, api, 8, resource="site-1").status_code == 200
    clock.move(to=start + 50 * DAY)
    assert cat.check(customer, api, resourceId="site-1")["currentUsage"] == 0


@pytest.mark.parametrize("read_between", [False, True])
def test_a_plan_change_after_an_expiry_settles_it_on_the_terms_before(raw, clock, cat,
                                                                     read_between) -> None:
    """The plan's month counts (a subscription's window wins over a promotion's week). The
    promotion expires, then the plan changes to one without a reset, with or without a
    read in between: the expiry is settled on the plan it ended under, and the month's
    usage carries over the change."""
    start = clock.now()
    api = cat.feature()
    customer = cat.customer()
    sub = cat.provision(customer, cat.plan(credits=0, entitlements=[feat(10, "MONTH")(api)]))
    lifetime = cat.plan(credits=0, entitlements=[feat(10)(api)])
    clock.move(to=start + 9 * DAY)
    promote(raw, cat, customer, api, resetPeriod="WEEK", **ending(start + 40 * DAY))
    clock.move(to=start + 33 * DAY)
    assert usage(raw, customer, api, 8).status_code == 200
    clock.move(to=start + 42 * DAY)
    if read_between:
        assert cat.check(customer, api)["currentUsage"] == 8
    cat.ok(raw.patch(f"/api/v1/subscriptions/{sub['id']}", json={"planId": lifetime}))
    clock.move(to=start + 43 * DAY)
    assert cat.check(customer, api)["currentUsage"] == 8


@pytest.mark.parametrize("read_between", [False, True])
def test_a_transfer_after_an_expiry_settles_the_resource_it_leaves(raw, clock, cat,
                                                                   read_between) -> None:
    start = clock.now()
    api, customer, sub = plan_on_site_1_and_promotion_to_day_45(raw, cat, start)
    assert usage(raw, customer, api, 8, resource="site-1").status_code == 200
    clock.move(to=start + 50 * DAY)
    if read_between:
        assert cat.check(customer, api, resourceId="site-1")["currentUsage"] == 0
    cat.ok(raw.post(f"/api/v1/subscriptions/{sub['id']}/transfer",
                    json={"destinationResourceId": "site-2"}))
    cat.provision(customer, cat.plan(credits=0, entitlements=[feat(10)(api)],
                                     product=cat.new_product()), resourceId="site-1")
    assert cat.check(customer, api, resourceId="site-1")["currentUsage"] == 0


def test_usage_on_a_resource_only_the_promotion_granted_stays_reset(raw, clock, cat) -> None:
    start = clock.now()
    api, customer, _ = plan_on_site_1_and_promotion_to_day_45(raw, cat, start)
    assert usage(raw, customer, api, 4, resource="site-2").status_code == 200
    clock.move(to=start + 50 * DAY)
    cat.provision(customer, cat.plan(credits=0, entitlements=[feat(10)(api)],
                                     product=cat.new_product()), resourceId="site-2")
    assert cat.check(customer, api, resourceId="site-2")["currentUsage"] == 0


def test_a_revocation_racing_a_grant_again_ends_as_one_of_them_after_the_other(
        server, raw, cat) -> None:
    """Revoked first, the new grant stays; granted first, the new grant is the one
    revoked. Before, the revocation could write the old grant back over the new one."""
    for _ in range(12):
        api, customer = cat.feature(), cat.customer()
        promote(raw, cat, customer, api)
        barrier = threading.Barrier(2)

        def revoke_it() -> httpx.Response:
            with server.http() as c:
                barrier.wait()
                return c.delete(f"/api/v1/customers/{customer}/promotional-entitlements/{api}")

        def grant_again() -> httpx.Response:
            with server.http() as c:
                barrier.wait()
                return c.post(f"/api/v1/customers/{customer}/promotional-entitlements",
                              json={"promotionalEntitlements": [
                                  {"featureId": api, "period": "1 year", "usageLimit": 7}]})

        with ThreadPoolExecutor(2) as pool:
            revoked, granted = pool.submit(revoke_it), pool.submit(grant_again)
            r, g = revoked.result(), granted.result()
        new = cat.ok(g)[0]["id"]
        active = cat.ok(raw.get(f"/api/v1/customers/{customer}/promotional-entitlements"))
        if cat.ok(r)["id"] == new:
            assert active == []
        else:
            assert [p["id"] for p in active] == [new]


@pytest.mark.parametrize("read_between", [False, True])
def test_one_catch_up_over_a_change_an_expiry_and_a_stop_settles_them_in_turn(
        raw, clock, cat, read_between) -> None:
    """A yearly plan changes to one without a reset at its period's end (day 31), a weekly
    promotion ends on day 40, and the subscription is cancelled for day 50; nothing is read
    until day 55, so one catch-up applies all three. From day 31 the promotion's week
    counts, so the 8 used on day 2 read 0 — and stay 0 once the promotion has ended: its
    end is settled on the plan it ended under (the changed one), not the stored one."""
    start = clock.now()
    api, customer, sub, lifetime = yearly_plan_changing_at_its_period_end(raw, cat, start)
    cancel_on(raw, cat, sub, start + 50 * DAY)
    if read_between:
        clock.move(to=start + 35 * DAY)
        assert cat.check(customer, api)["currentUsage"] == 0
    clock.move(to=start + 55 * DAY)
    cat.provision(customer, lifetime)
    assert cat.check(customer, api)["currentUsage"] == 0


def test_one_scheduler_step_over_two_subscriptions_settles_on_the_changed_one(
        raw, clock, cat) -> None:
    """As above, but the stop is another subscription's (of another product, without the
    feature): both come due in one step of the scheduler, which writes what it changed at
    the end of the step; the expiry between them is settled on the changed plan."""
    start = clock.now()
    api, customer, _, _ = yearly_plan_changing_at_its_period_end(raw, cat, start)
    other = cat.provision(customer, cat.plan(credits=0, entitlements=[],
                                             product=cat.new_product()))
    cancel_on(raw, cat, other, start + 50 * DAY)
    clock.move(to=start + 55 * DAY)
    assert cat.check(customer, api)["currentUsage"] == 0



@pytest.mark.parametrize("then", ["read after it", "revoked at its end",
                                  "granted again at its end"])
def test_usage_of_the_last_window_carries_over_an_expiry_on_its_reset(raw, clock, cat,
                                                                      then) -> None:
    """A promotion of a month that resets monthly ends where its window would reset: the
    usage of its last window counted until the end and carries over; the reset it never
    reached does not happen — however the expiry comes to be settled, a revocation or a
    new grant at that very moment included. (A revocation at a reset of a promotion that
    goes on is another matter: the promotion still counted then, its new window had
    begun.)"""
    api, customer = lifetime_plan_and_monthly_promotion(raw, cat, period="1 month")
    end = datetime.fromisoformat(cat.check(customer, api)["usagePeriodEnd"])
    limit = 10
    if then != "read after it":
        clock.move(to=end)
        if then == "revoked at its end":
            revoke(raw, cat, customer, api)
        else:
            promote(raw, cat, customer, api, usageLimit=3, resetPeriod=None)
            limit = 13
    clock.move(to=end + DAY)
    d = cat.check(customer, api)
    assert (d["usageLimit"], d["resetPeriod"], d["currentUsage"]) == (limit, None, 8)
    assert usage(raw, customer, api, 1).status_code == 200
    assert cat.check(customer, api)["currentUsage"] == 9
