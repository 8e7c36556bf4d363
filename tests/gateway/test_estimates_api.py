"""Subscription estimates through the official client (`v1.subscriptions.preview`) and raw
HTTP (`/estimate`, `/estimate-update`): flat, per-unit and tiered prices, add-ons, country
prices, coupons, tax, trials, proration of an update, and the refusals. Every expected
amount is computed by hand in the comment next to it.

The server runs on a manual clock (CREDITD_CLOCK) with CREDITD_TAX_RATES=DE=19,JP=10;
previews pass an explicit `startDate`, so only the update test depends on the clock.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

START = "2026-03-31T00:00:00Z"  # a month later: April 30 (the day clamps)
APR_30 = "2026-04-30T00:00:00.000Z"
MAY_31 = "2026-05-31T00:00:00.000Z"


SERVER_ENV = {"CREDITD_CLOCK": "manual:2026-01-01T00:00:00+00:00",
              "CREDITD_TAX_RATES": "DE=19,JP=10"}


class Cat:
    """A product with a seats feature, made through the official client."""

    def __init__(self, client, uid) -> None:
        self.client, self.uid = client, uid
        self.product = uid("prod")
        client.v1.products.create_product(id=self.product, display_name="Main")
        self.seats = uid("seats")
        client.v1.features.create_feature(id=self.seats, display_name="Seats",
                                          feature_type="NUMBER", meter_type="FLUCTUATING")

    def plan(self, models: list[dict], *, trial: dict | None = None,
             addons: list[str] | None = None, name: str = "Pro") -> str:
        plan_id = self.uid("plan")
        self.client.v1.plans.create(id=plan_id, display_name=name, product_id=self.product,
                                    **({"default_trial_config": trial} if trial else {}))
        changes: dict[str, Any] = {"charges": {"pricingType": "PAID", "pricingModels": models}}
        if addons is not None:
            changes["compatible_addon_ids"] = addons
        self.client.v1.plans.update(plan_id, **changes)
        self.client.v1.plans.publish(plan_id, migration_type="NEW_CUSTOMERS")
        return plan_id

    def addon(self, models: list[dict] | None, *, max_quantity: int | None = 5) -> str:
        addon_id = self.uid("addon")
        self.client.v1.addons.create(id=addon_id, display_name="Extra", product_id=self.product,
                                     **({"max_quantity": max_quantity} if max_quantity else {}))
        if models:
            self.client.v1.addons.update(addon_id, charges={"pricingType": "PAID",
                                                            "pricingModels": models})
        self.client.v1.addons.publish(addon_id, migration_type="NEW_CUSTOMERS")
        return addon_id

    def customer(self, **fields: Any) -> str:
        customer_id = self.uid("cust")
        self.client.v1.customers.provision(id=customer_id, **fields)
        return customer_id


@pytest.fixture
def cat(client, uid) -> Cat:
    return Cat(client, uid)


def flat(amount: str, currency: str = "usd", *, period: str = "MONTHLY",
         country: str | None = None) -> dict:
    p: dict = {"billingPeriod": period, "price": {"amount": amount, "currency": currency}}
    if country:
        p["billingCountryCode"] = country
    return p


def _t(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc)
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_flat_plan_preview_through_the_official_client(client, cat):
    plan = cat.plan([{"billingModel": "FLAT_FEE", "pricePeriods": [flat("29.99")]}])
    customer = cat.customer()
    data = client.v1.subscriptions.preview(customer_id=customer, plan_id=plan,
                                           start_date=START).data
    now, nxt = data.immediate_invoice, data.recurring_invoice
    assert (now.sub_total, now.discount, now.tax, now.total, now.currency) == (
        29.99, 0, 0, 29.99, "usd")
    [line] = now.lines
    assert (line.description, line.quantity, line.unit_price, line.sub_total) == (
        "Pro", 1, 29.99, 29.99)
    # March 31 + 1 month = April 30; the next period April 30 → May 31 (the anchor's day).
    assert (_t(now.billing_period_range.start), _t(now.billing_period_range.end)) == (
        _t(START), _t(APR_30))
    assert (_t(nxt.billing_period_range.start), _t(nxt.billing_period_range.end)) == (
        _t(APR_30), _t(MAY_31))
    assert nxt.total == 29.99
    assert (data.is_plan_downgrade, data.has_scheduled_updates, data.free_items) == (
        False, False, [])


def test_per_unit_tiers_addons_coupon_and_tax(client, raw, cat, uid):
    addon = cat.addon([{"billingModel": "FLAT_FEE", "pricePeriods": [flat("4.50")]}])
    free = cat.addon(None)
    plan = cat.plan([
        {"billingModel": "FLAT_FEE", "pricePeriods": [flat("10")]},
        {"billingModel": "PER_UNIT", "featureId": cat.seats, "tiersMode": "GRADUATED",
         "pricePeriods": [{"billingPeriod": "MONTHLY", "tiers": [
             {"upTo": 5, "unitPrice": {"amount": "8", "currency": "usd"}},
             {"unitPrice": {"amount": "6.5", "currency": "usd"},
              "flatPrice": {"amount": "2", "currency": "usd"}}]}]}],
        addons=[addon, free])
    coupon = uid("save15")
    client.v1.coupons.create(id=coupon, name="Save 15", percent_off=15, amounts_off=None,
                             description=None, duration_in_months=None, metadata={})
    customer = cat.customer()
    data = client.v1.subscriptions.preview(
        customer_id=customer, plan_id=plan, start_date=START, unit_quantity=8,
        addons=[{"id": addon, "quantity": 2}, {"id": free, "quantity": 1}],
        applied_coupon={"coupon_id": coupon}, billing_country_code="DE").data
    inv = data.immediate_invoice
    # flat 10 + seats graduated: 5 × 8 = 40, 3 × 6.5 = 19.5, tier-2 flat 2 → 61.5;
    # add-on 2 × 4.50 = 9 → subtotal 80.50
    assert inv.sub_total == 80.5
    # 15% of 80.50 = 12.075 → 12.08 (half away from zero); taxable 68.42;
    # DE 19%: 12.9998 → 13.00; total 68.42 + 13.00 = 81.42
    assert (inv.discount, inv.tax, inv.total) == (12.08, 13, 81.42)
    assert [(ln.quantity, ln.unit_price, ln.sub_total) for ln in inv.lines] == [
        (1, 10, 10), (5, 8, 40), (3, 6.5, 19.5), (1, 2, 2), (2, 4.5, 9)]
    assert inv.discount_details.percentage == 15 and inv.discount_details.code == coupon
    assert [(d.amount, d.description) for d in inv.discounts] == [(12.08, "Save 15")]
    assert [(f.id, f.quantity) for f in data.free_items] == [(free, 1)]
    # The GraphQL fields in the same data (raw: the client's model has no such fields).
    body = {"customerId": customer, "planId": plan, "startDate": START, "unitQuantity": 8,
            "addons": [{"id": addon, "quantity": 2}, {"id": free, "quantity": 1}],
            "appliedCoupon": {"couponId": coupon}, "billingCountryCode": "de"}
    g = raw.post("/api/v1/subscriptions/preview", json=body).json()["data"]
    assert g["subTotal"] == {"amount": 80.5, "currency": "USD"}
    assert g["discountAmount"] == {"amount": 12.08, "currency": "USD"}
    assert g["totalExcludingTax"]["amount"] == 68.42
    assert (g["tax"]["amount"], g["total"]["amount"]) == (13, 81.42)
    assert g["taxDetails"] == {"displayName": "Tax (DE)", "percentage": 19, "inclusive": False}
    assert g["discount"] == {"name": "Save 15", "type": "PERCENTAGE", "value": 15,
                             "durationType": "FOREVER", "durationInMonths": None}
    assert g["subscription"]["total"]["amount"] == 81.42  # forever: the same next month
    assert g["proration"] is None and g["credits"] is None
    # billingInformation.taxPercentage wins over the country: 68.42 × 7% = 4.7894 → 4.79
    body["billingInformation"] = {"taxPercentage": 7}
    g = raw.post("/api/v1/subscriptions/preview", json=body).json()["data"]
    assert (g["tax"]["amount"], g["total"]["amount"]) == (4.79, 73.21)


def test_country_price_zero_decimal_currency_and_fixed_once_coupon(client, raw, cat, uid):
    plan = cat.plan([{"billingModel": "PER_UNIT", "featureId": cat.seats, "pricePeriods": [
        flat("9.99"), flat("1333.5", "jpy", country="JP")]}])
    coupon = uid("yen")
    # `duration: ONCE` is an extension field: raw HTTP.
    raw.post("/api/v1/coupons", json={
        "id": coupon, "name": "500 off", "duration": "ONCE",
        "amountsOff": [{"amount": 500, "currency": "jpy"}]}).raise_for_status()
    customer = cat.customer()
    data = client.v1.subscriptions.preview(
        customer_id=customer, plan_id=plan, start_date=START, unit_quantity=3,
        billing_country_code="JP", applied_coupon={"coupon_id": coupon}).data
    now, nxt = data.immediate_invoice, data.recurring_invoice
    # 3 × ¥1,333.5 = ¥4,000.5 → ¥4,001; ¥500 off once → ¥3,501; JP 10%: ¥350.1 → ¥350
    assert (now.currency, now.sub_total, now.discount, now.tax, now.total) == (
        "jpy", 4001, 500, 350, 3851)
    # the next month: no discount (ONCE); tax ¥400.1 → ¥400; total ¥4,401
    assert (nxt.sub_total, nxt.discount, nxt.tax, nxt.total) == (4001, 0, 400, 4401)
    # Elsewhere the default price: 3 × 9.99 = 29.97, the yen coupon has no usd amount.
    other = client.v1.subscriptions.preview(
        customer_id=customer, plan_id=plan, start_date=START, unit_quantity=3,
        billing_country_code="US", applied_coupon={"coupon_id": coupon}).data.immediate_invoice
    assert (other.currency, other.sub_total, other.discount, other.total) == (
        "usd", 29.97, 0, 29.97)


def test_trial_then_paid_and_the_graphql_estimate(raw, cat):
    plan = cat.plan([{"billingModel": "FLAT_FEE", "pricePeriods": [flat("20")]}],
                    trial={"duration": 14, "units": "DAY"})
    customer = cat.customer()
    body = {"customerId": customer, "planId": plan, "startDate": START}
    d = raw.post("/api/v1/subscriptions/preview", json=body).json()["data"]
    # In the trial nothing is due; the first paid period starts at its end (April 14).
    assert (d["immediateInvoice"]["total"], d["total"]["amount"]) == (0, 0)
    assert d["billingPeriodRange"] == {"start": "2026-03-31T00:00:00.000Z",
                                       "end": "2026-04-14T00:00:00.000Z"}
    assert d["recurringInvoice"]["billingPeriodRange"] == {
        "start": "2026-04-14T00:00:00.000Z", "end": "2026-05-14T00:00:00.000Z"}
    assert d["recurringInvoice"]["total"] == 20
    # GraphQL input: skipTrial charges the first period now; addons as {addonId}.
    r = raw.post("/api/v1/subscriptions/estimate", json={**body, "skipTrial": True})
    assert r.status_code == 200, r.text
    e = r.json()["data"]
    assert (e["subTotal"]["amount"], e["total"]["amount"]) == (20, 20)
    assert e["billingPeriodRange"]["end"] == APR_30
    r = raw.post("/api/v1/subscriptions/estimate",
                 json={**body, "trialOverrideConfiguration": {"isTrial": False}})
    assert r.json()["data"]["total"]["amount"] == 20


def test_an_estimate_and_provisioning_follow_the_same_rules(raw, cat):
    """Add-ons and trials are checked by one function for both (gateway/
    engine/domain/subscriptions/changes.py): a quantity over the add-on's maximum is refused alike, and a
    trial override without an end date gives the plan's default trial in both, where each
    used to have its own rule."""
    addon = cat.addon([{"billingModel": "FLAT_FEE", "pricePeriods": [flat("5")]}],
                      max_quantity=2)
    plan = cat.plan([{"billingModel": "FLAT_FEE", "pricePeriods": [flat("20")]}],
                    trial={"duration": 14, "units": "DAY"}, addons=[addon])
    customer = cat.customer()
    body = {"customerId": customer, "planId": plan, "startDate": START}
    too_many = [
        raw.post("/api/v1/subscriptions/preview",
                 json={**body, "addons": [{"id": addon, "quantity": 3}]}),
        raw.post("/api/v1/subscriptions/estimate",
                 json={**body, "addons": [{"addonId": addon, "quantity": 3}]}),
        raw.post("/api/v1/subscriptions",
                 json={**body, "addons": [{"id": addon, "quantity": 3}]}),
    ]
    assert {(r.status_code, r.json()["field"], r.json()["message"])
            for r in too_many} == {
        (400, "addons[0].quantity", "must be at most 2 (the add-on's maximum)")}

    override = {"trialOverrideConfiguration": {"isTrial": True}}
    estimate = raw.post("/api/v1/subscriptions/estimate", json={**body, **override})
    assert estimate.status_code == 200, estimate.text
    assert estimate.json()["data"]["billingPeriodRange"]["end"] == "2026-04-14T00:00:00.000Z"
    made = raw.post("/api/v1/subscriptions", json={**body, **override})
    assert made.status_code == 201, made.text
    assert made.json()["data"]["subscription"]["trialEndDate"] == "2026-04-14T00:00:00.000Z"
    # A plan without a default trial needs the end date, in both.
    plain = cat.plan([{"billingModel": "FLAT_FEE", "pricePeriods": [flat("20")]}])
    for path in ("/api/v1/subscriptions/estimate", "/api/v1/subscriptions"):
        r = raw.post(path, json={**body, "planId": plain, **override})
        assert r.status_code == 400, r.text
        assert r.json()["field"] == "trialOverrideConfiguration.trialEndDate"


def test_estimate_update_prorates_the_change(client, raw, cat, server):
    plan = cat.plan([{"billingModel": "PER_UNIT", "featureId": cat.seats,
                      "pricePeriods": [flat("10")]}])
    customer = cat.customer()
    made = client.v1.subscriptions.provision(customer_id=customer, plan_id=plan,
                                             unit_quantity=2).data
    sub = made.subscription
    start = _t(sub.current_billing_period_start)
    end = _t(sub.current_billing_period_end)
    at = start + timedelta(days=10)
    r = raw.put("/api/v1/test-clock", json={"now": at.isoformat()})
    assert r.status_code == 200, r.text
    r = raw.post("/api/v1/subscriptions/estimate-update",
                 json={"subscriptionId": sub.id, "unitQuantity": 5})
    assert r.status_code == 200, r.text
    d = r.json()["data"]
    # 2 → 5 seats at 10: old 20, new 50 a period. With a 31-day period (January, the
    # clock's start) 21/31 remains: credit 20 × 21/31 = 13.548… → 13.55,
    # debit 50 × 21/31 = 33.870… → 33.87, net 20.32. In general:
    from fractions import Fraction

    from engine.billing.money import round_money

    share = Fraction(int((end - at).total_seconds()), int((end - start).total_seconds()))
    credit, debit = round_money(20 * share, "usd"), round_money(50 * share, "usd")
    p = d["proration"]
    assert (p["credit"]["amount"], p["debit"]["amount"], p["netAmount"]["amount"]) == (
        float(credit), float(debit), float(debit - credit))
    assert _t(p["prorationDate"]) == at
    assert d["total"]["amount"] == float(debit - credit)  # no tax without a country
    assert d["subscription"]["total"]["amount"] == 50
    assert d["isPlanDowngrade"] is False and d["hasScheduledUpdates"] is False
    if (end - start).days == 31 and (at - start).days == 10:
        assert (p["credit"]["amount"], p["debit"]["amount"], p["netAmount"]["amount"]) == (
            13.55, 33.87, 20.32)
    # An update that changes nothing costs nothing.
    same = raw.post("/api/v1/subscriptions/estimate-update",
                    json={"subscriptionId": sub.id, "unitQuantity": 2}).json()["data"]
    assert same["proration"]["netAmount"]["amount"] == 0 and same["total"]["amount"] == 0
    # A new subscription on the same product would replace this one: a lower price is a
    # downgrade, and the unused part of the running one is credited.
    cheap = cat.plan([{"billingModel": "FLAT_FEE", "pricePeriods": [flat("5")]}])
    pv = raw.post("/api/v1/subscriptions/preview",
                  json={"customerId": customer, "planId": cheap}).json()["data"]
    assert pv["isPlanDowngrade"] is True
    assert pv["proration"]["credit"]["amount"] == float(credit)


@pytest.mark.parametrize("change, status, field", [
    ({"planId": "no-such-plan"}, 404, "planId"),
    ({"customerId": "no-such-customer"}, 404, "customerId"),
    ({"billingPeriod": "ANNUALLY"}, 400, "billingPeriod"),
    ({"unitQuantity": 11}, 400, "unitQuantity"),
    ({"appliedCoupon": {"couponId": "no-such-coupon"}}, 404, "appliedCoupon.couponId"),
    ({"appliedCoupon": {"discount": {"percentOff": 120}}}, 400,
     "appliedCoupon.discount.percentOff"),
    ({"addons": [{"id": "no-such-addon", "quantity": 1}]}, 404, "addons[0].id"),
    ({"startDate": "yesterday"}, 400, "startDate"),
    ({"bogus": 1}, 400, "bogus"),
    # What would change the price but creditd does not price is refused, not ignored.
    ({"billingInformation": {"taxRateIds": ["txr_1"]}}, 400, "billingInformation.taxRateIds"),
    ({"billingInformation": {"prorationBehavior": "NONE"}}, 400,
     "billingInformation.prorationBehavior"),
    ({"appliedCoupon": {"billingCouponId": "co_1"}}, 400, "appliedCoupon.billingCouponId"),
])
def test_refusals_name_the_field(raw, cat, change, status, field):
    plan = cat.plan([{"billingModel": "PER_UNIT", "featureId": cat.seats, "maxUnitQuantity": 10,
                      "pricePeriods": [flat("10")]}])
    body = {"customerId": cat.customer(), "planId": plan, **change}
    r = raw.post("/api/v1/subscriptions/preview", json=body)
    assert r.status_code == status, r.text
    assert field in r.text


def test_unknown_subscription_and_ad_hoc_discount(raw, cat):
    r = raw.post("/api/v1/subscriptions/estimate-update", json={"subscriptionId": "nope"})
    assert r.status_code == 404 and "subscriptionId" in r.text
    plan = cat.plan([{"billingModel": "FLAT_FEE", "pricePeriods": [flat("40")]}])
    body = {"customerId": cat.customer(), "planId": plan, "startDate": START,
            "appliedCoupon": {"discount": {"amountsOff": [{"amount": 12.5, "currency": "usd"}],
                                           "durationInMonths": 1, "name": "Launch"}}}
    d = raw.post("/api/v1/subscriptions/estimate", json=body).json()["data"]
    # 40 − 12.50 = 27.50 now; REPEATING 1 month: the next month pays 40
    assert (d["discountAmount"]["amount"], d["total"]["amount"]) == (12.5, 27.5)
    assert d["discount"] == {"name": "Launch", "type": "FIXED", "value": 12.5,
                             "durationType": "REPEATING", "durationInMonths": 1}
    assert d["subscription"]["total"]["amount"] == 40


def test_estimate_update_of_the_billing_period_and_the_plan(client, raw, cat, server):
    """Extensions of estimate-update (as PATCH takes them): another billing period restarts
    the cycle at the change; another plan of the product is prorated like any change."""
    plan = cat.plan([{"billingModel": "FLAT_FEE", "pricePeriods": [
        flat("30"), flat("300", period="ANNUALLY")]}])
    cheaper = cat.plan([{"billingModel": "FLAT_FEE", "pricePeriods": [flat("12")]}],
                       name="Lite")
    sub = client.v1.subscriptions.provision(customer_id=cat.customer(), plan_id=plan
                                            ).data.subscription
    start = _t(sub.current_billing_period_start)
    end = _t(sub.current_billing_period_end)
    at = start + timedelta(days=6)
    assert raw.put("/api/v1/test-clock", json={"now": at.isoformat()}).status_code == 200
    from fractions import Fraction

    from engine.billing.money import round_money

    share = Fraction(int((end - at).total_seconds()), int((end - start).total_seconds()))
    unused = round_money(30 * share, "usd")  # e.g. 30 × 25/31 days = 24.19 in January
    # Monthly → annual: credit the unused 30 × share, the whole year (300) due now; the new
    # cycle runs a year from the change.
    d = raw.post("/api/v1/subscriptions/estimate-update",
                 json={"subscriptionId": sub.id, "billingPeriod": "ANNUALLY"}).json()["data"]
    p = d["proration"]
    assert (p["credit"]["amount"], p["debit"]["amount"]) == (float(unused), 300)
    assert p["netAmount"]["amount"] == float(300 - unused) == d["total"]["amount"]
    assert _t(d["billingPeriodRange"]["start"]) == at
    assert _t(d["billingPeriodRange"]["end"]) == at.replace(year=at.year + 1)
    assert d["subscription"]["total"]["amount"] == 300 and d["isPlanDowngrade"] is False
    # To the cheaper plan, same period: credit 30 × share, debit 12 × share; a downgrade.
    d = raw.post("/api/v1/subscriptions/estimate-update",
                 json={"subscriptionId": sub.id, "planId": cheaper}).json()["data"]
    p = d["proration"]
    assert (p["credit"]["amount"], p["debit"]["amount"]) == (
        float(unused), float(round_money(12 * share, "usd")))
    assert d["isPlanDowngrade"] is True and d["subscription"]["total"]["amount"] == 12
    # The cheaper plan has no annual price; another product's plan is refused.
    other = Cat(client, cat.uid).plan([{"billingModel": "FLAT_FEE",
                                        "pricePeriods": [flat("1")]}])
    for body, field in (({"planId": cheaper, "billingPeriod": "ANNUALLY"}, "billingPeriod"),
                        ({"planId": other}, "planId")):
        r = raw.post("/api/v1/subscriptions/estimate-update",
                     json={"subscriptionId": sub.id, **body})
        assert r.status_code == 400 and r.json()["field"] == field, (body, r.text)
