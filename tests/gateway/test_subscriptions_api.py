"""Subscriptions through the official client and raw HTTP, on a server whose clock the
tests move (`clock` fixture): provisioning, recurring credits granted exactly once per
period, trials, cancellations, updates (immediate and scheduled), migrations, listing, and
the refusals. Periods are checked against hand-computed calendar dates."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import stigg

DAY = timedelta(days=1)
SERVER_ENV = {"CREDITD_CLOCK": "manual:2026-01-01T00:00:00Z"}


def _t(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc)
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


class Catalog:
    """A product with a currency, a monthly credits plan (priced), a trial plan and a
    credits add-on, made through the official client."""

    def __init__(self, client, uid) -> None:
        self.client = client
        self.currency = uid("tokens")
        client.v1.credits.custom_currencies.create(id=self.currency, display_name="Tokens")
        self.product = uid("product")
        client.v1.products.create_product(id=self.product, display_name="AI")
        self.uid = uid

    def plan(self, *, credits: int = 1000, cadence: str = "MONTH", price: str | None = "20",
             trial: dict | None = None, addons: list[str] | None = None,
             annual_price: str | None = None) -> str:
        c = self.client
        plan_id = self.uid("plan")
        c.v1.plans.create(id=plan_id, display_name=f"Plan {plan_id}", product_id=self.product,
                          **({"default_trial_config": trial} if trial else {}))
        if credits:
            c.v1.plans.entitlements.create(plan_id, entitlements=[
                {"type": "CREDIT", "id": self.currency, "amount": credits,
                 "cadence": cadence}])
        periods = []
        if price is not None:
            periods.append({"billingPeriod": "MONTHLY", "price": {"amount": price,
                                                                   "currency": "usd"}})
        if annual_price is not None:
            periods.append({"billingPeriod": "ANNUALLY", "price": {"amount": annual_price,
                                                                    "currency": "usd"}})
        changes: dict[str, Any] = {}
        if periods:
            changes["charges"] = {"pricingType": "PAID", "pricingModels": [
                {"billingModel": "FLAT_FEE", "pricePeriods": periods}]}
        if addons is not None:
            changes["compatible_addon_ids"] = addons
        if changes:
            c.v1.plans.update(plan_id, **changes)
        c.v1.plans.publish(plan_id, migration_type="NEW_CUSTOMERS")
        return plan_id

    def addon(self, *, credits: int = 100, max_quantity: int | None = 5) -> str:
        c = self.client
        addon_id = self.uid("addon")
        c.v1.addons.create(id=addon_id, display_name="More tokens", product_id=self.product,
                           **({"max_quantity": max_quantity} if max_quantity else {}))
        c.v1.addons.entitlements.create(addon_id, entitlements=[
            {"type": "CREDIT", "id": self.currency, "amount": credits, "cadence": "MONTH"}])
        c.v1.addons.publish(addon_id, migration_type="NEW_CUSTOMERS")
        return addon_id

    def customer(self) -> str:
        customer_id = self.uid("cust")
        self.client.v1.customers.provision(id=customer_id)
        return customer_id


@pytest.fixture
def catalog(client, uid) -> Catalog:
    return Catalog(client, uid)


def grants(client, customer_id: str, currency: str) -> list[Any]:
    return list(client.v1.credits.grants.list(customer_id=customer_id, currency_id=currency))


def recurring(client, customer_id: str, currency: str) -> list[Any]:
    return sorted((g for g in grants(client, customer_id, currency)
                   if g.grant_type == "RECURRING"), key=lambda g: g.created_at)


def balance(raw, customer_id: str, currency: str) -> float:
    r = raw.get(f"/api/v1/customers/{customer_id}/entitlements/check",
                params={"currencyId": currency})
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    return data["usageLimit"] - data["currentUsage"]


def test_provision_grants_the_first_period_and_renewals_exactly_once(
        client, raw, clock, catalog) -> None:
    plan = catalog.plan(credits=1000)
    customer = catalog.customer()
    t0 = clock.now()
    made = client.v1.subscriptions.provision(customer_id=customer, plan_id=plan).data
    assert made.status == "SUCCESS"
    sub = made.subscription
    assert (sub.status, sub.plan_id, sub.customer_id) == ("ACTIVE", plan, customer)
    assert _t(sub.start_date) == t0
    # A month from the start date: computed by hand from the clock's reading.
    first_end = t0.replace(month=t0.month % 12 + 1, year=t0.year + (t0.month == 12))
    assert (_t(sub.current_billing_period_start), _t(sub.current_billing_period_end)) == (
        t0, first_end)
    [g] = recurring(client, customer, catalog.currency)
    assert (g.amount, g.status, _t(g.expire_at)) == (1000, "ACTIVE", first_end)
    assert balance(raw, customer, catalog.currency) == 1000
    # The credit entitlement says when its credits renew.
    check = client.v1.customers.check_entitlement(customer, currency_id=catalog.currency).data
    assert _t(check.usage_period_end) == first_end
    # Reads inside the period grant nothing more.
    clock.move(by=10 * DAY)
    for _ in range(3):
        client.v1.subscriptions.retrieve(sub.id)
    assert len(recurring(client, customer, catalog.currency)) == 1
    # The renewal: the next period's credits, once, whatever reads the subscription.
    clock.move(to=first_end)
    again = client.v1.subscriptions.retrieve(sub.id).data
    assert _t(again.current_billing_period_start) == first_end
    list(client.v1.subscriptions.list(customer_id=customer))
    got = recurring(client, customer, catalog.currency)
    assert [g.amount for g in got] == [1000, 1000]
    assert got[0].status == "EXPIRED" and got[1].status == "ACTIVE"
    assert balance(raw, customer, catalog.currency) == 1000  # last month's expired


def test_periods_missed_whole_are_not_granted_late(client, clock, catalog) -> None:
    plan = catalog.plan(credits=50)
    customer = catalog.customer()
    sub = client.v1.subscriptions.provision(customer_id=customer, plan_id=plan).data.subscription
    start = _t(sub.start_date)
    clock.move(by=95 * DAY)  # three renewals passed while nobody looked
    now = clock.now()
    current = client.v1.subscriptions.retrieve(sub.id).data
    assert _t(current.current_billing_period_start) <= now < _t(
        current.current_billing_period_end)
    got = recurring(client, customer, catalog.currency)
    # The first period's and the current one's: the two in between had expired unseen.
    assert len(got) == 2
    assert _t(got[1].expire_at) == _t(current.current_billing_period_end)
    assert _t(current.start_date) == start


def test_trial_grants_trial_credits_then_converts_once(client, clock, catalog) -> None:
    plan = catalog.plan(credits=300, trial={"duration": 14, "units": "DAY"})
    customer = catalog.customer()
    t0 = clock.now()
    sub = client.v1.subscriptions.provision(customer_id=customer, plan_id=plan).data.subscription
    assert sub.status == "IN_TRIAL"
    assert _t(sub.trial_end_date) == t0 + 14 * DAY
    assert sub.trial.trial_end_behavior == "CONVERT_TO_PAID"
    [trial_grant] = recurring(client, customer, catalog.currency)
    assert trial_grant.amount == 300 and _t(trial_grant.expire_at) == t0 + 14 * DAY
    clock.move(to=t0 + 14 * DAY)
    paid = client.v1.subscriptions.retrieve(sub.id).data
    assert paid.status == "ACTIVE"
    # The billing cycle starts when the trial ends.
    assert _t(paid.current_billing_period_start) == t0 + 14 * DAY
    assert _t(paid.billing_cycle_anchor) == t0 + 14 * DAY
    assert len(recurring(client, customer, catalog.currency)) == 2
    # One trial per product: a second subscription to it starts paid, and the estimate
    # says so (due now), while a new customer's estimate starts with the free trial.
    other = catalog.plan(credits=10, trial={"duration": 7, "units": "DAY"})
    for who, due in ((customer, 20), (catalog.customer(), 0)):
        r = client.post("/api/v1/subscriptions/estimate", cast_to=object,
                        body={"customerId": who, "planId": other})
        assert r["data"]["total"]["amount"] == due, r
    second = client.v1.subscriptions.provision(customer_id=customer, plan_id=other)
    assert second.data.subscription.status == "ACTIVE"
    assert second.data.subscription.trial_end_date is None


def test_a_trial_that_cancels_expires_and_grants_nothing_more(client, raw, clock,
                                                              catalog) -> None:
    plan = catalog.plan(credits=40, trial={"duration": 3, "units": "DAY",
                                          "trial_end_behavior": "CANCEL_SUBSCRIPTION"})
    customer = catalog.customer()
    sub = client.v1.subscriptions.provision(customer_id=customer, plan_id=plan).data.subscription
    assert sub.status == "IN_TRIAL"
    clock.move(by=3 * DAY)
    ended = client.v1.subscriptions.retrieve(sub.id).data
    assert (ended.status, ended.cancel_reason) == ("EXPIRED", "TRIAL_ENDED")
    clock.move(by=40 * DAY)
    assert len(recurring(client, customer, catalog.currency)) == 1
    assert balance(raw, customer, catalog.currency) == 0


def test_trial_override(client, clock, catalog) -> None:
    plan = catalog.plan(credits=5)
    customer = catalog.customer()
    end = clock.now() + 5 * DAY
    sub = client.v1.subscriptions.provision(
        customer_id=customer, plan_id=plan,
        trial_override_configuration={"is_trial": True, "trial_end_date": end}
    ).data.subscription
    assert sub.status == "IN_TRIAL" and _t(sub.trial_end_date) == end


def test_cancel_immediately_and_revoke(client, raw, clock, catalog) -> None:
    plan = catalog.plan(credits=100)
    keep, revoke = catalog.customer(), catalog.customer()
    for customer, action in ((keep, "DEFAULT"), (revoke, "REVOKE_ENTITLEMENTS")):
        sub = client.v1.subscriptions.provision(customer_id=customer,
                                                plan_id=plan).data.subscription
        now = clock.now()
        done = client.v1.subscriptions.cancel(sub.id, cancellation_time="IMMEDIATE",
                                              cancellation_action=action).data
        assert (done.status, done.cancel_reason) == ("CANCELED", "Immediate")
        assert _t(done.end_date) == now
    # DEFAULT leaves this period's credits to expire; REVOKE_ENTITLEMENTS voids them.
    assert balance(raw, keep, catalog.currency) == 100
    assert balance(raw, revoke, catalog.currency) == 0
    clock.move(by=40 * DAY)
    for customer in (keep, revoke):
        assert len(recurring(client, customer, catalog.currency)) == 1
    r = raw.post(f"/api/v1/subscriptions/{sub.id}/cancel", json={})
    assert r.status_code == 400 and r.json()["field"] == "id"


def test_cancel_at_period_end_and_on_a_date(client, clock, catalog, raw) -> None:
    plan = catalog.plan(credits=10)
    customer = catalog.customer()
    sub = client.v1.subscriptions.provision(customer_id=customer, plan_id=plan).data.subscription
    period_end = _t(sub.current_billing_period_end)
    later = client.v1.subscriptions.cancel(sub.id,
                                           cancellation_time="END_OF_BILLING_PERIOD").data
    assert later.status == "ACTIVE" and _t(later.cancellation_date) == period_end
    clock.move(to=period_end)
    gone = client.v1.subscriptions.retrieve(sub.id).data
    assert (gone.status, gone.cancel_reason) == ("CANCELED", "ScheduledCancellation")
    assert len(recurring(client, customer, catalog.currency)) == 1  # no renewal
    # A specific date inside the period cuts the last credit window there.
    other = catalog.customer()
    sub2 = client.v1.subscriptions.provision(customer_id=other, plan_id=plan).data.subscription
    date = clock.now() + 40 * DAY
    cut = client.v1.subscriptions.cancel(sub2.id, cancellation_time="SPECIFIC_DATE",
                                         end_date=date).data
    assert cut.status == "ACTIVE" and _t(cut.end_date) == date
    clock.move(by=35 * DAY)  # the second period, cut short at `date`
    last = recurring(client, other, catalog.currency)[-1]
    assert _t(last.expire_at) == date
    for body, field in (({"cancellationTime": "SPECIFIC_DATE"}, "endDate"),
                        ({"cancellationTime": "SPECIFIC_DATE",
                          "endDate": "2020-01-01T00:00:00Z"}, "endDate"),
                        ({"cancellationTime": "IMMEDIATE", "endDate": date.isoformat()},
                         "endDate"),
                        ({"cancellationTime": "SOMETIME"}, "cancellationTime")):
        r = raw.post(f"/api/v1/subscriptions/{sub2.id}/cancel", json=body)
        assert r.status_code == 400 and r.json()["field"] == field, (body, r.text)


def test_add_ons_multiply_credits_and_top_up_at_once(client, raw, clock, catalog) -> None:
    addon = catalog.addon(credits=100, max_quantity=5)
    plan = catalog.plan(credits=1000, addons=[addon])
    customer = catalog.customer()
    sub = client.v1.subscriptions.provision(customer_id=customer, plan_id=plan,
                                            addons=[{"id": addon, "quantity": 2}]
                                            ).data.subscription
    assert [(a.id, a.quantity) for a in sub.addons] == [(addon, 2)]
    assert sorted(g.amount for g in recurring(client, customer, catalog.currency)) == [200, 1000]
    # Three more add-ons now: the current window is topped up by the difference.
    updated = client.v1.subscriptions.update(sub.id, addons=[{"id": addon, "quantity": 5}]).data
    assert updated.addons[0].quantity == 5
    assert sorted(g.amount for g in recurring(client, customer, catalog.currency)) == [
        200, 300, 1000]
    assert balance(raw, customer, catalog.currency) == 1500
    # Fewer add-ons keep what was granted this period; the next period gets the new amount.
    client.v1.subscriptions.update(sub.id, addons=[{"id": addon, "quantity": 1}])
    assert balance(raw, customer, catalog.currency) == 1500
    clock.move(to=_t(sub.current_billing_period_end))
    assert balance(raw, customer, catalog.currency) == 1100
    for addons, field in (([{"id": addon, "quantity": 6}], "addons[0].quantity"),
                          ([{"id": addon, "quantity": 0}], "addons[0].quantity"),
                          ([{"id": "nope", "quantity": 1}], "addons[0].id"),
                          ([{"id": addon, "quantity": 1}, {"id": addon, "quantity": 1}],
                           "addons[1].id")):
        r = raw.patch(f"/api/v1/subscriptions/{sub.id}", json={"addons": addons})
        assert r.status_code in (400, 404) and r.json()["field"] == field, (addons, r.text)


def test_scheduled_update_waits_for_the_period_end(client, raw, clock, catalog) -> None:
    small = catalog.plan(credits=100)
    big = catalog.plan(credits=500)
    customer = catalog.customer()
    sub = client.v1.subscriptions.provision(customer_id=customer, plan_id=big).data.subscription
    end = _t(sub.current_billing_period_end)
    r = raw.patch(f"/api/v1/subscriptions/{sub.id}",
                  json={"planId": small, "scheduleStrategy": "END_OF_BILLING_PERIOD"})
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert data["planId"] == big
    [update] = data["futureUpdates"]
    assert (update["scheduleStatus"], update["subscriptionScheduleType"]) == ("SCHEDULED",
                                                                             "PLAN")
    assert _t(update["scheduledExecutionTime"]) == end
    clock.move(to=end)
    now_small = client.v1.subscriptions.retrieve(sub.id).data
    assert now_small.plan_id == small
    assert now_small.future_updates[0].schedule_status == "DONE"
    assert [g.amount for g in recurring(client, customer, catalog.currency)] == [500, 100]
    # A scheduled update can be called off.
    r = raw.patch(f"/api/v1/subscriptions/{sub.id}",
                  json={"planId": big, "scheduleStrategy": "END_OF_BILLING_PERIOD"})
    assert r.status_code == 200
    off = client.v1.subscriptions.future_update.cancel_schedule(sub.id)
    assert off.data.id == sub.id
    updates = client.v1.subscriptions.retrieve(sub.id).data.future_updates
    assert updates[-1].schedule_status == "CANCELED"
    clock.move(by=32 * DAY)
    assert client.v1.subscriptions.retrieve(sub.id).data.plan_id == small


def test_billing_period_change_restarts_the_cycle(client, raw, clock, catalog) -> None:
    plan = catalog.plan(credits=0, price="10", annual_price="100")
    customer = catalog.customer()
    sub = client.v1.subscriptions.provision(customer_id=customer, plan_id=plan).data.subscription
    clock.move(by=10 * DAY)
    now = clock.now()
    yearly = client.v1.subscriptions.update(sub.id, billing_period="ANNUALLY").data
    assert _t(yearly.current_billing_period_start) == now
    assert _t(yearly.current_billing_period_end) == now.replace(year=now.year + 1)
    assert raw.get(f"/api/v1/subscriptions/{sub.id}").json()["data"]["billingPeriod"] == (
        "ANNUALLY")
    monthly_only = catalog.plan(credits=0, price="10")
    r = raw.post("/api/v1/subscriptions", json={"customerId": customer, "planId": monthly_only,
                                                 "billingPeriod": "ANNUALLY"})
    assert r.status_code == 400 and r.json()["field"] == "billingPeriod"


def test_a_product_holds_one_subscription_per_customer(client, catalog) -> None:
    first, second = catalog.plan(credits=10), catalog.plan(credits=20)
    customer = catalog.customer()
    a = client.v1.subscriptions.provision(customer_id=customer, plan_id=first).data.subscription
    b = client.v1.subscriptions.provision(customer_id=customer, plan_id=second).data.subscription
    old = client.v1.subscriptions.retrieve(a.id).data
    assert (old.status, old.cancel_reason) == ("CANCELED", "UPGRADE_OR_DOWNGRADE")
    assert client.v1.subscriptions.retrieve(b.id).data.status == "ACTIVE"
    running = list(client.v1.subscriptions.list(customer_id=customer, status=["ACTIVE"]))
    assert [s.id for s in running] == [b.id]


def _subscribe_then_republish(client, catalog, migration: str) -> tuple[str, Any]:
    """A subscription to a plan of 10 credits, then version 2 of the plan with 70."""
    plan = catalog.plan(credits=10)
    customer = catalog.customer()
    sub = client.v1.subscriptions.provision(customer_id=customer, plan_id=plan).data.subscription
    c = catalog.client
    c.v1.plans.create_draft(plan)
    [ent] = c.v1.plans.entitlements.list(plan).data
    c.v1.plans.entitlements.update(ent.id, plan_id=plan, type="CREDIT", amount=70)
    c.v1.plans.publish(plan, migration_type=migration)
    return customer, sub


def test_migrate_moves_to_the_latest_version(client, catalog) -> None:
    customer, sub = _subscribe_then_republish(client, catalog, "NEW_CUSTOMERS")
    assert client.v1.subscriptions.retrieve(sub.id).data.model_extra["planVersion"] == 1
    moved = client.v1.subscriptions.migrate(sub.id, subscription_migration_time="IMMEDIATE")
    assert moved.data.model_extra["planVersion"] == 2
    assert sorted(g.amount for g in recurring(client, customer, catalog.currency)) == [10, 60]


def test_list_filters_and_pages(client, raw, catalog, clock, uid) -> None:
    plan = catalog.plan(credits=0)
    customers = [catalog.customer() for _ in range(3)]
    ids = []
    for c in customers:
        ids.append(client.v1.subscriptions.provision(customer_id=c, plan_id=plan).data.id)
        # Created a second apart by the server's clock, which stamps every document (the
        # same millisecond would order them by id).
        clock.move(by=timedelta(seconds=1))
    client.v1.subscriptions.cancel(ids[0], cancellation_time="IMMEDIATE")
    everything = list(client.v1.subscriptions.list(plan_id=plan, limit=1))
    assert [s.id for s in everything] == ids
    active = [s.id for s in client.v1.subscriptions.list(plan_id=plan, status=["ACTIVE"])]
    assert active == ids[1:]
    assert [s.id for s in client.v1.subscriptions.list(customer_id=customers[2])] == [ids[2]]
    r = raw.get("/api/v1/subscriptions", params={"status": "SOMETIMES"})
    assert r.status_code == 400 and r.json()["field"] == "status"


def test_bad_provisions_are_refused_whole(client, raw, catalog, uid) -> None:
    plan = catalog.plan(credits=10)
    customer = catalog.customer()
    draft = uid("draft")
    client.v1.plans.create(id=draft, display_name="Draft", product_id=catalog.product)

    def post(**body: Any):
        return raw.post("/api/v1/subscriptions", json={"customerId": customer, "planId": plan,
                                                        **body})
    for body, status, field in (
        ({"planId": "nope"}, 404, "planId"),
        ({"planId": draft}, 400, "planId"),  # never published
        ({"customerId": "nobody"}, 404, "customerId"),
        ({"billingPeriod": "WEEKLY"}, 400, "billingPeriod"),
        ({"addons": [{"id": "x", "quantity": 1}]}, 404, "addons[0].id"),
        ({"appliedCoupon": {"couponId": "nope"}}, 404, "appliedCoupon.couponId"),
        ({"entitlements": [{"id": "f", "type": "FEATURE"}]}, 400, "entitlements"),
        ({"surprise": 1}, 400, None),
        ({"startDate": "yesterday"}, 400, "startDate"),
        ({"trialOverrideConfiguration": {"isTrial": True}}, 400,
         "trialOverrideConfiguration.trialEndDate"),
    ):
        r = post(**body)
        assert r.status_code == status, (body, r.text)
        if field is not None:
            assert r.json()["field"] == field, (body, r.text)
    # Nothing was half-made.
    assert list(client.v1.subscriptions.list(customer_id=customer)) == []
    assert recurring(client, customer, catalog.currency) == []
    with pytest.raises(stigg.NotFoundError):
        client.v1.subscriptions.retrieve("nope")


def test_a_future_start_waits(client, clock, catalog) -> None:
    plan = catalog.plan(credits=25)
    customer = catalog.customer()
    start = clock.now() + 3 * DAY
    made = client.v1.subscriptions.provision(customer_id=customer, plan_id=plan,
                                             start_date=start).data
    assert made.subscription.status == "NOT_STARTED" and made.is_scheduled
    assert recurring(client, customer, catalog.currency) == []
    clock.move(to=start)
    assert client.v1.subscriptions.retrieve(made.id).data.status == "ACTIVE"
    [g] = recurring(client, customer, catalog.currency)
    assert g.amount == 25


def test_publishing_for_all_customers_migrates_running_subscriptions(client, catalog) -> None:
    customer, sub = _subscribe_then_republish(client, catalog, "ALL_CUSTOMERS")
    assert client.v1.subscriptions.retrieve(sub.id).data.model_extra["planVersion"] == 2
    assert sorted(g.amount for g in recurring(client, customer, catalog.currency)) == [10, 60]


def test_provisioning_answers_the_entitlements(client, catalog, uid) -> None:
    feature = uid("sso")
    client.v1.features.create_feature(id=feature, display_name="SSO", feature_type="BOOLEAN")
    plan = catalog.plan(credits=100)
    c = catalog.client
    c.v1.plans.create_draft(plan)
    c.v1.plans.entitlements.create(plan, entitlements=[{"type": "FEATURE", "id": feature}])
    c.v1.plans.publish(plan, migration_type="NEW_CUSTOMERS")
    customer = catalog.customer()
    made = client.v1.subscriptions.provision(customer_id=customer, plan_id=plan).data
    kinds = {(e.type, e.is_granted) for e in made.entitlements}
    assert kinds == {("FEATURE", True), ("CREDIT", True)}
    [feat] = [e for e in made.entitlements if e.type == "FEATURE"]
    assert feat.feature.id == feature
    assert feat.valid_until is None  # the subscription has no end
    [credit] = [e for e in made.entitlements if e.type == "CREDIT"]
    assert _t(credit.usage_period_end) == _t(made.subscription.current_billing_period_end)
    # Once it is cancelled at the period's end, the feature is granted until then.
    client.v1.subscriptions.cancel(made.id, cancellation_time="END_OF_BILLING_PERIOD")
    listed = client.v1.customers.retrieve_entitlements(customer).data.entitlements
    [feat] = [e for e in listed if e.type == "FEATURE"]
    assert _t(feat.valid_until) == _t(made.subscription.current_billing_period_end)


def test_prices_follow_the_billing_country_and_customer_coupon(client, raw, catalog,
                                                               uid) -> None:
    c = catalog.client
    plan = uid("plan")
    c.v1.plans.create(id=plan, display_name="Priced", product_id=catalog.product)
    c.v1.plans.update(plan, charges={"pricingType": "PAID", "pricingModels": [
        {"billingModel": "FLAT_FEE", "pricePeriods": [
            {"billingPeriod": "MONTHLY", "price": {"amount": "20", "currency": "usd"}},
            {"billingPeriod": "MONTHLY", "billingCountryCode": "DE",
             "price": {"amount": "18.5", "currency": "eur"}}]}]})
    c.v1.plans.publish(plan, migration_type="NEW_CUSTOMERS")
    coupon = uid("coupon")
    c.v1.coupons.create(id=coupon, name="Ten", percent_off=10, amounts_off=None,
                        description=None, duration_in_months=None, metadata=None)
    customer = uid("cust")
    c.v1.customers.provision(id=customer, coupon_id=coupon)
    german = client.v1.subscriptions.provision(customer_id=customer, plan_id=plan,
                                               billing_country_code="de").data.subscription
    [price] = german.prices
    assert (price.amount, price.currency, price.billing_country_code) == (18.5, "eur", "de")
    assert price.base_charge is True
    assert [(cp.id, cp.percent_off) for cp in german.coupons] == [(coupon, 10)]
    other = catalog.customer()
    plain = client.v1.subscriptions.provision(customer_id=other, plan_id=plan
                                              ).data.subscription
    assert [(p.amount, p.currency) for p in plain.prices] == [(20, "usd")]
    assert plain.coupons == []
    # Stored prices come back as numbers.
    again = raw.get(f"/api/v1/subscriptions/{plain.id}").json()["data"]
    assert again["prices"][0]["amount"] == 20


def test_a_retried_provision_with_an_idempotency_key_makes_one_subscription(
        client, raw, catalog, uid) -> None:
    plan = catalog.plan(credits=40)
    customer = catalog.customer()
    key = {"Idempotency-Key": uid("provision")}
    first = client.v1.subscriptions.provision(customer_id=customer, plan_id=plan,
                                              extra_headers=key).data
    again = client.v1.subscriptions.provision(customer_id=customer, plan_id=plan,
                                              extra_headers=key).data
    assert again.id == first.id and again.subscription.status == "ACTIVE"
    assert [s.id for s in client.v1.subscriptions.list(customer_id=customer)] == [first.id]
    assert [g.amount for g in recurring(client, customer, catalog.currency)] == [40]
    r = raw.post("/api/v1/subscriptions", headers=key,
                 json={"customerId": customer, "planId": plan, "billingPeriod": "MONTHLY"})
    assert r.status_code == 409 and r.json()["field"] == "Idempotency-Key", r.text
    r = raw.post("/api/v1/subscriptions", headers={"Idempotency-Key": ""},
                 json={"customerId": customer, "planId": plan})
    assert r.status_code == 400 and r.json()["field"] == "Idempotency-Key", r.text
