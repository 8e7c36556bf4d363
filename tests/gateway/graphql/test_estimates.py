"""Subscription estimates through GraphQL (EstimateSubscription, EstimateSubscriptionUpdate
as stigg-api-client-v2 sends them): exact totals of a flat plus per-unit plan, coupons
(stored and ad hoc), tax, the proration of an update mid-period, and the refusals with
their codes and fields. Every expected amount is computed by hand next to it.

The server runs on a manual clock (CREDITD_CLOCK); estimates of a new subscription pass
an explicit `startDate`, the update test moves the clock through the test-clock route.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from tests.gateway.graphql.wire import data, gql

SERVER_ENV = {"CREDITD_CLOCK": "manual:2026-01-01T00:00:00+00:00",
              "CREDITD_TAX_RATES": "DE=19"}

START = "2026-03-31T00:00:00Z"  # a month later: April 30 (the day clamps)
USD = "USD"


def usd(amount: str) -> dict[str, Any]:
    return {"amount": Decimal(amount), "currency": USD}


class Cat:
    """A product with a seats feature and a plan: $20 a month flat plus $7.50 a seat."""

    def __init__(self, client: Any, uid: Any) -> None:
        self.client, self.uid = client, uid
        self.product = uid("prod")
        client.v1.products.create_product(id=self.product, display_name="Main")
        self.seats = uid("seats")
        client.v1.features.create_feature(id=self.seats, display_name="Seats",
                                          feature_type="NUMBER", meter_type="FLUCTUATING")
        self.plan = uid("plan")
        client.v1.plans.create(id=self.plan, display_name="Pro", product_id=self.product)
        client.v1.plans.update(self.plan, charges={"pricingType": "PAID", "pricingModels": [
            {"billingModel": "FLAT_FEE", "pricePeriods": [
                {"billingPeriod": "MONTHLY", "price": {"amount": "20", "currency": "usd"}}]},
            {"billingModel": "PER_UNIT", "featureId": self.seats, "maxUnitQuantity": 50,
             "pricePeriods": [{"billingPeriod": "MONTHLY",
                               "price": {"amount": "7.50", "currency": "usd"}}]}]})
        client.v1.plans.publish(self.plan, migration_type="NEW_CUSTOMERS")

    def customer(self) -> str:
        customer_id = self.uid("cust")
        self.client.v1.customers.provision(id=customer_id, name="Acme")
        return customer_id


@pytest.fixture
def cat(client: Any, uid: Any) -> Cat:
    return Cat(client, uid)


def estimate(server: Any, **input: Any) -> dict[str, Any]:
    return data(gql(server, "EstimateSubscription", {"input": input}))["estimateSubscription"]


def refusal(answer: dict[str, Any]) -> tuple[str, str | None]:
    assert answer["data"] is None, answer
    [error] = answer["errors"]
    return error["extensions"]["code"], error["extensions"].get("field")


def _t(value: str | datetime) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.astimezone(UTC)


def test_a_new_subscription_with_a_quantity(server: Any, cat: Cat) -> None:
    customer = cat.customer()
    e = estimate(server, customerId=customer, planId=cat.plan, startDate=START,
                 billingPeriod="MONTHLY", unitQuantity=Decimal("4.0"))
    # $20 + 4 × $7.50 = $50; no coupon, no tax without a country
    assert e["subTotal"] == e["totalExcludingTax"] == e["total"] == usd("50")
    assert e["tax"] == usd("0") and e["taxDetails"] is None
    assert e["discountAmount"] is None and e["discount"] is None
    assert (_t(e["billingPeriodRange"]["start"]), _t(e["billingPeriodRange"]["end"])) == (
        _t(START), _t("2026-04-30T00:00:00Z"))
    assert e["subscription"]["total"] == usd("50")  # the next month: the same
    assert (e["proration"], e["credits"]) == (None, None)
    assert (e["isPlanDowngrade"], e["hasScheduledUpdates"]) == (False, False)
    # The seats move the price: 11 seats → $20 + $82.50 = $102.50
    assert estimate(server, customerId=customer, planId=cat.plan, startDate=START,
                    unitQuantity=11)["total"] == usd("102.5")
    # Tax: the billing country's rate (DE 19 %: $50 × 0.19 = $9.50), or taxPercentage.
    de = estimate(server, customerId=customer, planId=cat.plan, startDate=START,
                  unitQuantity=4, billingCountryCode="DE")
    assert (de["tax"], de["total"]) == (usd("9.5"), usd("59.5"))
    assert de["taxDetails"] == {"displayName": "Tax (DE)", "percentage": 19,
                                "inclusive": False}
    # 7.25 % of $50 = $3.625 → $3.63 (half away from zero); details that change no price
    # (invoice terms, metadata, an address in the same country) are accepted.
    own = estimate(server, customerId=customer, planId=cat.plan, startDate=START,
                   unitQuantity=4, billingCountryCode="DE", billingInformation={
                       "taxPercentage": Decimal("7.25"), "invoiceDaysUntilDue": 30,
                       "metadata": {"po": "123"}, "billingAddress": {"country": "de"}})
    assert (own["tax"], own["total"]) == (usd("3.63"), usd("53.63"))
    # A trial override: nothing is due until the trial ends; the first paid month follows.
    trial = estimate(server, customerId=customer, planId=cat.plan, startDate=START,
                     unitQuantity=4, trialOverrideConfiguration={
                         "isTrial": True, "trialEndDate": "2026-04-14T00:00:00Z"})
    assert (trial["total"], trial["subscription"]["total"]) == (usd("0"), usd("50"))
    assert _t(trial["billingPeriodRange"]["end"]) == _t("2026-04-14T00:00:00Z")
    assert estimate(server, customerId=customer, planId=cat.plan, startDate=START,
                    unitQuantity=4, skipTrial=True, trialOverrideConfiguration={
                        "isTrial": True, "trialEndDate": "2026-04-14T00:00:00Z"}
                    )["total"] == usd("50")


def test_a_coupon_gives_the_discount(server: Any, client: Any, cat: Cat, uid: Any) -> None:
    coupon = uid("save10")
    client.v1.coupons.create(id=coupon, name="Save 10", percent_off=10, amounts_off=None,
                             description=None, duration_in_months=None, metadata={})
    customer = cat.customer()
    e = estimate(server, customerId=customer, planId=cat.plan, startDate=START,
                 unitQuantity=4, appliedCoupon={"couponId": coupon})
    # 10 % of $50 = $5 → $45, now and every month (FOREVER)
    assert (e["subTotal"], e["discountAmount"], e["totalExcludingTax"], e["total"]) == (
        usd("50"), usd("5"), usd("45"), usd("45"))
    assert e["discount"] == {"name": "Save 10", "type": "PERCENTAGE", "value": 10,
                             "durationType": "FOREVER", "durationInMonths": None}
    assert e["subscription"]["discountAmount"] == usd("5")
    assert e["subscription"]["total"] == usd("45")
    # A promotion code is a coupon id, as in provisioning.
    assert estimate(server, customerId=customer, planId=cat.plan, startDate=START,
                    unitQuantity=4, promotionCode=coupon)["total"] == usd("45")
    # Ad hoc: $12.25 off for one month: $37.75 now, $50 the next month.
    adhoc = estimate(server, customerId=customer, planId=cat.plan, startDate=START,
                     unitQuantity=4, appliedCoupon={"discount": {
                         "amountsOff": [{"amount": Decimal("12.25"), "currency": "USD"}],
                         "durationInMonths": 1, "name": "Launch"}})
    assert (adhoc["discountAmount"], adhoc["total"]) == (usd("12.25"), usd("37.75"))
    assert adhoc["discount"] == {"name": "Launch", "type": "FIXED", "value": Decimal("12.25"),
                                 "durationType": "REPEATING", "durationInMonths": 1}
    assert adhoc["subscription"]["total"] == usd("50")
    assert adhoc["subscription"]["discount"] is None


def test_an_update_mid_period_is_prorated(server: Any, client: Any, cat: Cat, clock: Any,
                                          uid: Any) -> None:
    # The clock starts on 2026-01-01 and this is the module's only test that moves it.
    clock.move(to=datetime(2026, 3, 1, tzinfo=UTC))
    customer = cat.customer()
    sub = client.v1.subscriptions.provision(customer_id=customer, plan_id=cat.plan,
                                            unit_quantity=2).data.subscription
    assert _t(sub.current_billing_period_start) == datetime(2026, 3, 1, tzinfo=UTC)
    clock.move(to=datetime(2026, 3, 11, tzinfo=UTC))  # 21 of March's 31 days left
    e = data(gql(server, "EstimateSubscriptionUpdate", {"input": {
        "subscriptionId": sub.id, "unitQuantity": 5}}))["estimateSubscriptionUpdate"]
    p = e["proration"]
    # 2 → 5 seats: $35 → $57.50 a month. Credit $35 × 21/31 = $23.709… → $23.71;
    # debit $57.50 × 21/31 = $38.951… → $38.95; net $15.24.
    assert (p["credit"], p["debit"], p["netAmount"]) == (
        usd("23.71"), usd("38.95"), usd("15.24"))
    assert _t(p["prorationDate"]) == datetime(2026, 3, 11, tzinfo=UTC)
    assert (e["subTotal"], e["total"]) == (usd("15.24"), usd("15.24"))  # no tax
    assert (_t(e["billingPeriodRange"]["start"]), _t(e["billingPeriodRange"]["end"])) == (
        datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC))
    assert e["subscription"]["total"] == usd("57.5")
    assert (e["isPlanDowngrade"], e["hasScheduledUpdates"]) == (False, False)
    # Fewer seats: a credit. 2 → 1: $35 → $27.50; debit $27.50 × 21/31 = $18.629… → $18.63;
    # net $18.63 − $23.71 = −$5.08.
    down = data(gql(server, "EstimateSubscriptionUpdate", {"input": {
        "subscriptionId": sub.id, "unitQuantity": 1}}))["estimateSubscriptionUpdate"]
    assert down["proration"]["netAmount"] == usd("-5.08")
    # A coupon on the change: 10 % off the new price (the debit), $57.50 → $51.75 a month;
    # debit $51.75 × 21/31 = $35.056… → $35.06; net $11.35.
    coupon = uid("upd10")
    client.v1.coupons.create(id=coupon, name="Ten", percent_off=10, amounts_off=None,
                             description=None, duration_in_months=None, metadata={})
    off = data(gql(server, "EstimateSubscriptionUpdate", {"input": {
        "subscriptionId": sub.id, "unitQuantity": 5, "appliedCoupon": {"couponId": coupon}}}
    ))["estimateSubscriptionUpdate"]
    assert (off["proration"]["debit"], off["proration"]["netAmount"]) == (
        usd("35.06"), usd("11.35"))
    assert off["subscription"]["total"] == usd("51.75")
    # Estimating changed nothing: the subscription still has 2 seats.
    same = data(gql(server, "EstimateSubscriptionUpdate", {"input": {
        "subscriptionId": sub.id, "unitQuantity": 2}}))["estimateSubscriptionUpdate"]
    assert same["proration"]["netAmount"] == usd("0") and same["total"] == usd("0")


@pytest.mark.parametrize("change, code, field", [
    ({"planId": "no-such-plan"}, "PlanNotFound", "planId"),
    ({"customerId": "no-such-customer"}, "CustomerNotFound", "customerId"),
    ({"appliedCoupon": {"couponId": "no-such-coupon"}}, "CouponNotFound",
     "appliedCoupon.couponId"),
    ({"addons": [{"addonId": "no-such-addon", "quantity": 1}]}, "AddonNotFound",
     "addons[0].id"),
    ({"unitQuantity": Decimal("2.5")}, "BadUserInput", "unitQuantity"),
    ({"unitQuantity": 51}, "BadUserInput", "unitQuantity"),
    ({"startDate": "yesterday"}, "BadUserInput", "startDate"),
    ({"billingPeriod": "ANNUALLY"}, "BadUserInput", "billingPeriod"),
    ({"appliedCoupon": {"discount": {"percentOff": 120}}}, "BadUserInput",
     "appliedCoupon.discount.percentOff"),
    # What would change the price but creditd does not price: refused, never ignored.
    ({"priceUnitAmount": 3}, "BadUserInput", "priceUnitAmount"),
    ({"appliedCoupon": {"billingCouponId": "stripe-coupon"}}, "BadUserInput",
     "appliedCoupon.billingCouponId"),
    ({"billingInformation": {"couponId": "stripe-coupon"}}, "BadUserInput",
     "billingInformation.couponId"),
    ({"billingInformation": {"taxRateIds": ["txr_1"]}}, "BadUserInput",
     "billingInformation.taxRateIds"),
    ({"billingInformation": {"taxIds": [{"type": "eu_vat", "value": "DE123"}]}},
     "BadUserInput", "billingInformation.taxIds"),
    ({"billingInformation": {"prorationBehavior": "NONE"}}, "BadUserInput",
     "billingInformation.prorationBehavior"),
    ({"billingInformation": {"billingAddress": {"country": "FR"}}}, "BadUserInput",
     "billingInformation.billingAddress.country"),
    ({"billingInformation": {"taxPercentage": 101}}, "BadUserInput",
     "billingInformation.taxPercentage"),
])
def test_estimate_refusals(server: Any, cat: Cat, change: dict, code: str,
                           field: str) -> None:
    input = {"customerId": cat.customer(), "planId": cat.plan, "startDate": START,
             "unitQuantity": 1, **change}
    assert refusal(gql(server, "EstimateSubscription", {"input": input})) == (code, field)


def test_update_refusals(server: Any, client: Any, cat: Cat) -> None:
    answer = gql(server, "EstimateSubscriptionUpdate", {"input": {"subscriptionId": "nope"}})
    assert refusal(answer) == ("SubscriptionNotFound", "subscriptionId")
    sub = client.v1.subscriptions.provision(customer_id=cat.customer(), plan_id=cat.plan,
                                            unit_quantity=1).data.subscription
    for change, field in (({"unitQuantity": 51}, "unitQuantity"),
                          ({"appliedCoupon": {"billingCouponId": "x"}},
                           "appliedCoupon.billingCouponId"),
                          ({"appliedCoupon": {"couponId": "no-such-coupon"}},
                           "appliedCoupon.couponId")):
        answer = gql(server, "EstimateSubscriptionUpdate", {"input": {
            "subscriptionId": sub.id, **change}})
        assert refusal(answer)[1] == field, answer
