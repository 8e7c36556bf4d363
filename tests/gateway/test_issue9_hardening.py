"""Issue 9 hardening (review): bad input on the catalog, subscription, estimate, paywall,
promotion and entitlement endpoints over raw HTTP (a 4xx JSON error naming the field,
never a 500, nothing half-applied), and lifecycle / entitlement / estimate / paywall edge
cases on a manual clock. Tests marked xfail(strict=True) document bugs found in review;
the reason says what is wrong."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import httpx
import pytest

from tests.gateway.test_bad_input import assert_error

DAY = timedelta(days=1)
CLOCK_START = "2026-01-01T00:00:00+00:00"


# The module's `server` (conftest) runs on a manual clock, with tax rates for the estimates.
SERVER_ENV = {"CREDITD_CLOCK": f"manual:{CLOCK_START}", "CREDITD_TAX_RATES": "DE=19,GB=20"}
OWN_KEY = "k-hardening-own-server"


def _t(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(timezone.utc)


def send(raw: httpx.Client, method: str, path: str, body: Any) -> httpx.Response:
    """A JSON body sent as is; the strings "__BIG__" / "__HUGE__" become the bare JSON
    numbers 1e5000 / 10^5000 (which Python's json cannot write)."""
    text = json.dumps(body).replace('"__BIG__"', "1e5000").replace(
        '"__HUGE__"', "1" + "0" * 5000)
    return raw.request(method, path, content=text,
                       headers={"content-type": "application/json"})


def refused(r: httpx.Response, field: str | None, statuses: tuple[int, ...] = (400,)) -> None:
    assert r.status_code in statuses, (r.status_code, r.text)
    assert_error(r, r.status_code, field)


class Cat:
    """A product with a custom currency and what the tests need of it, made over raw
    HTTP (the official client's wire shapes)."""

    def __init__(self, raw: httpx.Client, uid: Callable[[str], str]) -> None:
        self.raw, self.uid = raw, uid
        self.currency = uid("tok")
        self.ok(raw.post("/api/v1/credits/custom-currencies",
                         json={"id": self.currency, "displayName": "Tokens"}))
        self.product = self.new_product()

    @staticmethod
    def ok(r: httpx.Response) -> dict[str, Any]:
        assert r.status_code in (200, 201), r.text
        return r.json()["data"]

    def new_product(self) -> str:
        product = self.uid("prod")
        self.ok(self.raw.post("/api/v1/products", json={"id": product, "displayName": "P"}))
        return product

    def plan(self, *, credits: int = 100, monthly: str | None = "10",
             annual: str | None = "100", trial: dict | None = None,
             models: list[dict] | None = None, entitlements: list[dict] | None = None,
             addons: list[str] | None = None, product: str | None = None) -> str:
        plan = self.uid("plan")
        body: dict[str, Any] = {"id": plan, "displayName": f"Plan {plan}",
                                "productId": product or self.product}
        if trial:
            body["defaultTrialConfig"] = trial
        self.ok(self.raw.post("/api/v1/plans", json=body))
        ents = list(entitlements or [])
        if credits:
            ents.append({"type": "CREDIT", "id": self.currency, "amount": credits,
                         "cadence": "MONTH"})
        if ents:
            self.ok(self.raw.post(f"/api/v1/plans/{plan}/entitlements",
                                  json={"entitlements": ents}))
        if models is None:
            periods = []
            if monthly is not None:
                periods.append({"billingPeriod": "MONTHLY",
                                "price": {"amount": monthly, "currency": "usd"}})
            if annual is not None:
                periods.append({"billingPeriod": "ANNUALLY",
                                "price": {"amount": annual, "currency": "usd"}})
            models = [{"billingModel": "FLAT_FEE", "pricePeriods": periods}] if periods else []
        changes: dict[str, Any] = {}
        if models:
            changes["charges"] = {"pricingType": "PAID", "pricingModels": models}
        if addons is not None:
            changes["compatibleAddonIds"] = addons
        if changes:
            self.ok(self.raw.patch(f"/api/v1/plans/{plan}", json=changes))
        self.ok(self.raw.post(f"/api/v1/plans/{plan}/publish",
                              json={"migrationType": "NEW_CUSTOMERS"}))
        return plan

    def addon(self, *, credits: int = 50, max_quantity: int | None = 5,
              entitlements: list[dict] | None = None) -> str:
        addon = self.uid("addon")
        self.ok(self.raw.post("/api/v1/addons", json={
            "id": addon, "displayName": "Add-on", "productId": self.product,
            "maxQuantity": max_quantity}))
        ents = list(entitlements or [])
        if credits:
            ents.append({"type": "CREDIT", "id": self.currency, "amount": credits,
                         "cadence": "MONTH"})
        self.ok(self.raw.post(f"/api/v1/addons/{addon}/entitlements",
                              json={"entitlements": ents}))
        self.ok(self.raw.post(f"/api/v1/addons/{addon}/publish",
                              json={"migrationType": "NEW_CUSTOMERS"}))
        return addon

    def feature(self, kind: str = "NUMBER", **extra: Any) -> str:
        feature = self.uid("feat")
        body = {"id": feature, "displayName": "F", "featureType": kind, **extra}
        if kind == "NUMBER":
            body.setdefault("meterType", "INCREMENTAL")
        self.ok(self.raw.post("/api/v1/features", json=body))
        return feature

    def customer(self) -> str:
        customer = self.uid("cust")
        self.ok(self.raw.post("/api/v1/customers", json={"id": customer}))
        return customer

    def provision(self, customer: str, plan: str, **body: Any) -> dict[str, Any]:
        return self.ok(self.raw.post("/api/v1/subscriptions", json={
            "customerId": customer, "planId": plan, **body}))["subscription"]

    def sub(self, ident: str) -> dict[str, Any]:
        return self.ok(self.raw.get(f"/api/v1/subscriptions/{ident}"))

    def subs_of(self, customer: str) -> list[dict[str, Any]]:
        return self.ok(self.raw.get("/api/v1/subscriptions", params={"customerId": customer}))

    def grants(self, customer: str) -> list[dict[str, Any]]:
        got = self.ok(self.raw.get("/api/v1/credits/grants", params={
            "customerId": customer, "currencyId": self.currency, "limit": 100}))
        return sorted(got, key=lambda g: g["createdAt"])

    def balance(self, customer: str) -> float:
        d = self.ok(self.raw.get(f"/api/v1/customers/{customer}/entitlements/check",
                                 params={"currencyId": self.currency}))
        return d["usageLimit"] - d["currentUsage"]

    def check(self, customer: str, feature: str, **query: Any) -> dict[str, Any]:
        return self.ok(self.raw.get(f"/api/v1/customers/{customer}/entitlements/check",
                                    params={"featureId": feature, **query}))


@pytest.fixture
def cat(raw, uid) -> Cat:
    return Cat(raw, uid)


# --- bad input: subscriptions -----------------------------------------------------------

def test_provision_bad_bodies_are_refused_whole(raw, cat) -> None:
    plan = cat.plan()
    customer = cat.customer()
    cases: list[tuple[dict[str, Any], str | None, tuple[int, ...]]] = [
        ({"customerId": None}, "customerId", (400,)),
        ({"planId": 5}, "planId", (400,)),
        ({"planId": ""}, "planId", (400,)),
        ({"planId": "a/b"}, "planId", (404,)),
        ({"metadata": {"a": 1}}, "metadata", (400,)),
        ({"unitQuantity": 0}, "unitQuantity", (400,)),
        ({"unitQuantity": -1}, "unitQuantity", (400,)),
        ({"unitQuantity": 10**30}, "unitQuantity", (400,)),
        ({"unitQuantity": "__BIG__"}, "unitQuantity", (400,)),
        ({"unitQuantity": 1.5}, "unitQuantity", (400,)),
        ({"billingCountryCode": "D1"}, "billingCountryCode", (400,)),
        ({"billingPeriod": "WEEKLY"}, "billingPeriod", (400,)),
        ({"id": "a/b"}, "id", (400,)),
        ({"id": "x" * 300}, "id", (400,)),
        ({"charges": [{"id": "x", "quantity": 1, "type": "BOGUS"}]}, "charges[0].type",
         (400,)),
        ({"addons": [{"id": "x", "quantity": 1}, {"id": "x", "quantity": 1}]},
         "addons[0].id", (400, 404)),
        ({"addons": [{"id": "x"}]}, "addons[0].quantity", (400,)),
        ({"startDate": "yesterday"}, "startDate", (400,)),
        ({"startDate": 20260101}, "startDate", (400,)),
        ({"cancellationDate": "2000-01-01T00:00:00Z"}, "cancellationDate", (400,)),
        ({"trialOverrideConfiguration": {"isTrial": "yes"}},
         "trialOverrideConfiguration.isTrial", (400,)),
        ({"scheduleStrategy": "SOMETIME"}, "scheduleStrategy", (400,)),
        ({"surprise": 1}, "surprise", (400,)),
        ({"appliedCoupon": {"couponId": "nope"}}, "appliedCoupon.couponId", (404,)),
    ]
    for body, field, statuses in cases:
        r = send(raw, "POST", "/api/v1/subscriptions",
                 {"customerId": customer, "planId": plan, **body})
        refused(r, field, statuses)
    for content in (b"{", b"[]", b"null", b'"x"'):
        r = raw.post("/api/v1/subscriptions", content=content,
                     headers={"content-type": "application/json"})
        refused(r, None)
    assert cat.subs_of(customer) == []
    assert cat.grants(customer) == []


@pytest.mark.parametrize("start", ["9999-12-15T00:00:00Z", "0001-01-01T00:00:00+01:00"])
def test_provision_far_start_dates_are_a_4xx(raw, cat, start) -> None:
    plan = cat.plan()
    customer = cat.customer()
    r = raw.post("/api/v1/subscriptions",
                 json={"customerId": customer, "planId": plan, "startDate": start})
    refused(r, "startDate")


def test_provision_ancient_start_is_refused_or_answered_in_iso(raw, cat) -> None:
    plan = cat.plan(credits=0)
    customer = cat.customer()
    r = raw.post("/api/v1/subscriptions", json={
        "customerId": customer, "planId": plan, "startDate": "0001-01-02T00:00:00Z"})
    if r.status_code == 400:
        refused(r, "startDate")
        return
    assert r.status_code == 201, r.text
    sub = r.json()["data"]["subscription"]
    for name in ("startDate", "billingCycleAnchor", "currentBillingPeriodStart"):
        datetime.fromisoformat(sub[name].replace("Z", "+00:00"))  # parses


def test_budget_is_validated(raw, cat) -> None:
    plan = cat.plan()
    customer = cat.customer()
    r = raw.post("/api/v1/subscriptions",
                 json={"customerId": customer, "planId": plan, "budget": "x"})
    refused(r, "budget")
    assert cat.subs_of(customer) == []
    sub = cat.provision(customer, plan)
    for budget in ("x", {"hasSoftLimit": True}, {"limit": "ten", "hasSoftLimit": True}):
        r = raw.patch(f"/api/v1/subscriptions/{sub['id']}", json={"budget": budget})
        assert r.status_code == 400, (budget, r.text)
        assert r.json()["field"].startswith("budget"), r.text
    assert cat.sub(sub["id"])["budget"] is None


def test_update_bad_bodies_change_nothing(raw, cat) -> None:
    plan = cat.plan()
    customer = cat.customer()
    sub = cat.provision(customer, plan)
    before = cat.sub(sub["id"])
    cases: list[tuple[Any, str | None, tuple[int, ...]]] = [
        ({"unitQuantity": 0}, "unitQuantity", (400,)),
        ({"unitQuantity": "__HUGE__"}, "unitQuantity", (400,)),
        ({"trialEndDate": "bad"}, "trialEndDate", (400,)),
        ({"trialEndDate": "2030-01-01T00:00:00Z"}, "trialEndDate", (400,)),  # no trial
        ({"cancellationDate": "bad"}, "cancellationDate", (400,)),
        ({"cancellationDate": "2000-01-01T00:00:00Z"}, "cancellationDate", (400,)),
        ({"scheduleStrategy": "LATER"}, "scheduleStrategy", (400,)),
        ({"billingPeriod": "WEEKLY"}, "billingPeriod", (400,)),
        ({"planId": "x/y"}, "planId", (404,)),
        ({"addons": [{"id": "nope", "quantity": 1}]}, "addons[0].id", (404,)),
        ({"addons": [{"id": "nope", "quantity": -1}]}, "addons[0].quantity", (400, 404)),
        ({"entitlements": [{"id": "f", "type": "FEATURE"}]}, "entitlements", (400,)),
        ({"unknown": 1}, "unknown", (400,)),
        ([], None, (400,)),
        ({"metadata": [1]}, "metadata", (400,)),
    ]
    for body, field, statuses in cases:
        r = send(raw, "PATCH", f"/api/v1/subscriptions/{sub['id']}", body)
        if field == "addons[0].quantity" and r.status_code == 404:
            field = "addons[0].id"
        refused(r, field, statuses)
    after = cat.sub(sub["id"])
    assert {k: v for k, v in after.items() if k != "updatedAt"} == {
        k: v for k, v in before.items() if k != "updatedAt"}
    assert len(cat.grants(customer)) == 1


def test_update_unknown_promotion_code_names_promotion_code(raw, cat) -> None:
    plan = cat.plan()
    sub = cat.provision(cat.customer(), plan)
    r = raw.patch(f"/api/v1/subscriptions/{sub['id']}", json={"promotionCode": "nope"})
    refused(r, "promotionCode", (404,))


def test_cancel_migrate_transfer_and_schedule_bad_bodies(raw, cat) -> None:
    plan = cat.plan()
    customer = cat.customer()
    sub = cat.provision(customer, plan)
    path = f"/api/v1/subscriptions/{sub['id']}"
    for body, field in (({"cancellationTime": None}, "cancellationTime"),
                        ({"cancellationTime": "SOMETIME"}, "cancellationTime"),
                        ({"endDate": 5}, "endDate"),
                        ({"prorate": "yes"}, "prorate"),
                        ({"cancellationAction": "X"}, "cancellationAction"),
                        ({"cancellationTime": "SPECIFIC_DATE", "endDate": "garbage"},
                         "endDate"),
                        ({"surprise": True}, "surprise")):
        refused(raw.post(path + "/cancel", json=body), field)
    for body, field in (({"subscriptionMigrationTime": "X"}, "subscriptionMigrationTime"),
                        ({"x": 1}, "x")):
        refused(raw.post(path + "/migrate", json=body), field)
    for body, field in (({}, "destinationResourceId"),
                        ({"destinationResourceId": ""}, "destinationResourceId"),
                        ({"destinationResourceId": None}, "destinationResourceId"),
                        ({"destinationResourceId": 7}, "destinationResourceId")):
        refused(raw.post(path + "/transfer", json=body), field)
    # Nothing scheduled: cancelling the schedule is a 400 naming the subscription.
    refused(raw.delete(path + "/future-update/schedule"), "id")
    refused(raw.delete("/api/v1/subscriptions/nope/future-update/schedule"), "id", (404,))
    refused(raw.post("/api/v1/subscriptions/nope/cancel", json={}), "id", (404,))
    # Still running, untouched.
    got = cat.sub(sub["id"])
    assert (got["status"], got["cancellationDate"], got["resourceId"]) == ("ACTIVE", None,
                                                                           None)


def test_list_query_params_of_the_wrong_type(raw) -> None:
    for query, field in (({"limit": "abc"}, "limit"), ({"limit": 0}, "limit"),
                         ({"limit": 1000}, "limit"), ({"after": "garbage"}, "after"),
                         ({"before": "zzz"}, "before"), ({"status": "SOMETIMES"}, "status"),
                         ({"status": "ACTIVE,NOPE"}, "status"),
                         ({"pricingType": "X"}, "pricingType"),
                         ({"createdAt[gt]": "bad"}, "createdAt[gt]")):
        refused(raw.get("/api/v1/subscriptions", params=query), field)


# --- bad input: estimates ---------------------------------------------------------------

@pytest.fixture
def per_unit(cat) -> tuple[str, str]:
    seat = cat.feature()
    plan = cat.plan(credits=0, models=[{"billingModel": "PER_UNIT", "featureId": seat,
                                        "pricePeriods": [{"billingPeriod": "MONTHLY",
                                                          "price": {"amount": 3,
                                                                    "currency": "usd"}}]}])
    return plan, seat


def test_estimate_bad_bodies_name_the_field(raw, cat, per_unit) -> None:
    plan, seat = per_unit
    customer = cat.customer()
    for path in ("/api/v1/subscriptions/preview", "/api/v1/subscriptions/estimate"):
        for body, field in (
            ({"customerId": None}, "customerId"),
            ({"planId": 3}, "planId"),
            ({"billingInformation": {"taxPercentage": "abc"}},
             "billingInformation.taxPercentage"),
            ({"billingInformation": {"taxPercentage": "__BIG__"}},
             "billingInformation.taxPercentage"),
            ({"billingInformation": {"taxPercentage": -1}}, "billingInformation.taxPercentage"),
            ({"billingInformation": "x"}, "billingInformation"),
            ({"startDate": "bad"}, "startDate"),
            ({"billingPeriod": "WEEKLY"}, "billingPeriod"),
            ({"appliedCoupon": {"discount": {"percentOff": 150}}},
             "appliedCoupon.discount.percentOff"),
            ({"appliedCoupon": {"discount": {"percentOff": 0}}},
             "appliedCoupon.discount.percentOff"),
            ({"appliedCoupon": {"configuration": {"startDate": "bad"}}},
             "appliedCoupon.configuration.startDate"),
            ({"charges": [{"id": "x", "quantity": -1, "type": "FEATURE"}]},
             "charges[0].quantity"),
            ({"billableFeatures": [{"featureId": seat, "quantity": -1}]},
             "billableFeatures[0].quantity"),
            ({"trialOverrideConfiguration": {"isTrial": True}},
             "trialOverrideConfiguration.trialEndDate"),
            ({"surprise": 1}, "surprise"),
        ):
            r = send(raw, "POST", path, {"customerId": customer, "planId": plan, **body})
            refused(r, field)


@pytest.mark.parametrize("path", ["/api/v1/subscriptions/preview",
                                  "/api/v1/subscriptions/estimate"])
@pytest.mark.parametrize("body,field", [
    ({"billableFeatures": [{"featureId": "SEAT", "quantity": "__BIG__"}]},
     "billableFeatures[0].quantity"),
    ({"appliedCoupon": {"discount": {"amountsOff": [{"amount": "__BIG__",
                                                      "currency": "usd"}]}}},
     "appliedCoupon.discount.amountsOff[0].amount"),
    ({"appliedCoupon": {"discount": {"percentOff": 10, "durationInMonths": "__BIG__"}}},
     "appliedCoupon.discount.durationInMonths"),
    ({"startDate": "9999-12-31T00:00:00Z"}, "startDate"),
    ({"trialOverrideConfiguration": {"isTrial": True, "trialEndDate": "9999-12-31T00:00:00Z"}},
     "trialOverrideConfiguration.trialEndDate"),
])
def test_estimate_huge_values_are_a_4xx(raw, cat, per_unit, path, body, field) -> None:
    plan, seat = per_unit
    body = json.loads(json.dumps(body).replace("SEAT", seat))
    r = send(raw, "POST", path, {"customerId": cat.customer(), "planId": plan, **body})
    assert r.status_code < 500, r.text
    refused(r, field)


def test_estimate_huge_unit_quantity_is_a_4xx(raw, cat, per_unit) -> None:
    plan, _seat = per_unit
    r = send(raw, "POST", "/api/v1/subscriptions/estimate",
             {"customerId": cat.customer(), "planId": plan, "unitQuantity": "__BIG__"})
    refused(r, "unitQuantity")


def test_estimate_bad_discount_currency_names_the_field(raw, cat, per_unit) -> None:
    plan, _seat = per_unit
    r = raw.post("/api/v1/subscriptions/preview", json={
        "customerId": cat.customer(), "planId": plan,
        "appliedCoupon": {"discount": {"amountsOff": [{"amount": 5, "currency": "dollars"}]}}})
    refused(r, "appliedCoupon.discount.amountsOff[0].currency")


@pytest.mark.parametrize("body,field", [
    ({"unitQuantity": 0}, "unitQuantity"),
    ({"unitQuantity": 10**40}, "unitQuantity"),
    ({"billingCountryCode": "zzzzzzzz"}, "billingCountryCode"),
])
def test_estimate_refuses_what_provisioning_refuses(raw, cat, per_unit, body, field) -> None:
    plan, _seat = per_unit
    customer = cat.customer()
    r = raw.post("/api/v1/subscriptions", json={"customerId": customer, "planId": plan,
                                                 **body})
    refused(r, field)  # provisioning refuses it…
    r = raw.post("/api/v1/subscriptions/preview", json={"customerId": customer,
                                                         "planId": plan, **body})
    refused(r, field)  # …so the estimate of it should too


def test_estimate_update_bad_bodies(raw, cat) -> None:
    plan = cat.plan()
    sub = cat.provision(cat.customer(), plan)
    path = "/api/v1/subscriptions/estimate-update"
    refused(raw.post(path, json={}), "subscriptionId")
    refused(raw.post(path, json={"subscriptionId": 5}), "subscriptionId")
    refused(raw.post(path, json={"subscriptionId": "nope"}), "subscriptionId", (404,))
    for body, field, statuses in (
        ({"unitQuantity": -1}, "unitQuantity", (400,)),
        ({"unitQuantity": 0.5}, "unitQuantity", (400,)),
        ({"addons": [{"addonId": "x", "quantity": 1}]}, "addons[0].id", (404,)),
        ({"promotionCode": "nope"}, "promotionCode", (404,)),
        ({"appliedCoupon": {"discount": {"percentOff": "__BIG__"}}},
         "appliedCoupon.discount.percentOff", (400,)),
        ({"surprise": 1}, "surprise", (400,)),
    ):
        r = send(raw, "POST", path, {"subscriptionId": sub["id"], **body})
        refused(r, field, statuses)


# --- bad input: catalog, paywall, promotions, entitlement checks ---------------------------

def test_catalog_bad_bodies(raw, cat) -> None:
    for body, field in (({"id": "a/b", "displayName": "x"}, "id"),
                        ({"id": "x" * 300, "displayName": "x"}, "id"),
                        ({"id": " p ", "displayName": "x"}, "id"),
                        ({"id": cat.uid("p"), "displayName": None}, "displayName"),
                        ({"id": cat.uid("p"), "displayName": ""}, "displayName"),
                        ({"id": cat.uid("p"), "displayName": "x", "metadata": {"a": None}},
                         "metadata")):
        refused(raw.post("/api/v1/products", json=body), field)
    p = cat.product
    for body, field in (
        ({"id": "a/b", "displayName": "x", "productId": p}, "id"),
        ({"id": cat.uid("p"), "displayName": "x", "productId": None}, "productId"),
        ({"id": cat.uid("p"), "displayName": "x", "productId": p, "pricingType": "WEIRD"},
         "pricingType"),
        ({"id": cat.uid("p"), "displayName": "x", "productId": p,
          "defaultTrialConfig": {"duration": 0, "units": "DAY"}},
         "defaultTrialConfig.duration"),
        ({"id": cat.uid("p"), "displayName": "x", "productId": p,
          "defaultTrialConfig": {"duration": 1.5, "units": "DAY"}},
         "defaultTrialConfig.duration"),
        ({"id": cat.uid("p"), "displayName": "x", "productId": p,
          "defaultTrialConfig": {"duration": "__BIG__", "units": "DAY"}},
         "defaultTrialConfig.duration"),
        ({"id": cat.uid("p"), "displayName": "x", "productId": p,
          "defaultTrialConfig": {"duration": 3, "units": "WEEK"}},
         "defaultTrialConfig.units"),
        ({"id": cat.uid("p"), "displayName": "x", "productId": p,
          "compatibleAddonIds": ["nope"]}, "compatibleAddonIds[0]"),
        ({"id": cat.uid("p"), "displayName": "x", "productId": p, "status": "ARCHIVED"},
         "status"),
    ):
        refused(send(raw, "POST", "/api/v1/plans", body), field)
    plan = cat.uid("plan")
    cat.ok(raw.post("/api/v1/plans", json={"id": plan, "displayName": "P", "productId": p}))

    def charges(models: list[dict], **extra: Any) -> dict:
        return {"charges": {"pricingType": "PAID", "pricingModels": models, **extra}}

    def flat(**period: Any) -> dict:
        return {"billingModel": "FLAT_FEE", "pricePeriods": [
            {"billingPeriod": "MONTHLY", "price": {"amount": 5, "currency": "usd"},
             **period}]}

    at = "charges.pricingModels[0].pricePeriods[0]"
    for body, field in (
        (charges([]), "charges.pricingModels"),
        (charges([flat(price={"amount": -1, "currency": "usd"})]), f"{at}.price.amount"),
        (charges([flat(price={"amount": "__BIG__", "currency": "usd"})]),
         f"{at}.price.amount"),
        (charges([flat(price={"amount": 5, "currency": "dollars"})]), f"{at}.price.currency"),
        (charges([flat(price={"amount": None, "currency": "usd"})]), f"{at}.price.amount"),
        (charges([flat(billingCountryCode="xx1")]), f"{at}.billingCountryCode"),
        (charges([flat(billingPeriod="WEEKLY")]), f"{at}.billingPeriod"),
        (charges([flat(), flat()]), "charges.pricingModels[1].billingModel"),
        (charges([{"billingModel": "FLAT_FEE", "pricePeriods": []}]),
         "charges.pricingModels[0].pricePeriods"),
        (charges([flat()], minimumSpend=[{"billingPeriod": "MONTHLY",
                                          "minimum": {"amount": -5, "currency": "usd"}}]),
         "charges.minimumSpend[0].minimum.amount"),
        ({"charges": {"pricingType": "FREE", "pricingModels": [flat()]}},
         "charges.pricingModels"),
        ({"maxQuantity": 3}, "maxQuantity"),
        ({"parentPlanId": plan}, "parentPlanId"),
        ({"metadata": []}, "metadata"),
    ):
        refused(send(raw, "PATCH", f"/api/v1/plans/{plan}", body), field)
    for ents, field in (
        ([{"type": "CREDIT", "id": cat.currency, "amount": -5, "cadence": "MONTH"}],
         "entitlements[0].amount"),
        ([{"type": "CREDIT", "id": cat.currency, "amount": "__BIG__", "cadence": "MONTH"}],
         "entitlements[0].amount"),
        ([{"type": "CREDIT", "id": cat.currency, "amount": 5, "cadence": "WEEK"}],
         "entitlements[0].cadence"),
        ([{"type": "CREDIT", "id": "nope", "amount": 5, "cadence": "MONTH"}],
         "entitlements[0].id"),
        ([{"type": "FEATURE", "id": "nope"}], "entitlements[0].id"),
        ([{"type": "FEATURE"}], "entitlements[0].id"),
        ([{"type": "BOGUS", "id": "x"}], "entitlements[0].type"),
        ([{"type": "CREDIT", "id": cat.currency, "amount": 5, "cadence": "MONTH"},
          {"type": "CREDIT", "id": cat.currency, "amount": 6, "cadence": "MONTH"}],
         "entitlements[1].id"),
    ):
        refused(send(raw, "POST", f"/api/v1/plans/{plan}/entitlements",
                     {"entitlements": ents}), field)
    got = cat.ok(raw.get(f"/api/v1/plans/{plan}"))
    assert (got["entitlements"], got["status"]) == ([], "DRAFT")
    refused(raw.post(f"/api/v1/plans/{plan}/publish", json={}), "migrationType")
    refused(raw.post(f"/api/v1/plans/{plan}/publish", json={"migrationType": "X"}),
            "migrationType")
    for query, field in (({"limit": "x"}, "limit"), ({"status": "NOPE"}, "status"),
                         ({"after": "x"}, "after")):
        refused(raw.get("/api/v1/plans", params=query), field)
    for query, field in (({"limit": "x"}, "limit"), ({"after": "99999"}, "after"),
                         ({"before": "-1"}, "before")):
        refused(raw.get(f"/api/v1/plans/{plan}/charges", params=query), field)


def test_paywall_bad_queries(raw, cat) -> None:
    for query, field, status in (({"productId": "nope"}, "productId", 404),
                                 ({"productId": "a/b"}, "productId", 404),
                                 ({"billingCountryCode": "x"}, "billingCountryCode", 400),
                                 ({"billingCountryCode": "d1"}, "billingCountryCode", 400),
                                 ({"customerId": "nope"}, "customerId", 404),
                                 ({"includeHiddenPlans": "maybe"}, "includeHiddenPlans", 400),
                                 ({"fetchAllCountriesPrices": "2"}, "fetchAllCountriesPrices",
                                  400)):
        refused(raw.get("/api/v1/paywall", params=query), field, (status,))


def test_promotion_bad_bodies_grant_nothing(raw, cat) -> None:
    number, flag = cat.feature(), cat.feature("BOOLEAN")
    customer = cat.customer()
    url = f"/api/v1/customers/{customer}/promotional-entitlements"

    def item(**kw: Any) -> dict[str, Any]:
        return {"featureId": number, "period": "lifetime", "usageLimit": 5, **kw}

    at = "promotionalEntitlements[0]"
    for items, field, status in (
        ([], "promotionalEntitlements", 400),
        ([item(period="2 weeks")], f"{at}.period", 400),
        ([item(usageLimit=-1)], f"{at}.usageLimit", 400),
        ([item(usageLimit="__HUGE__")], f"{at}.usageLimit", 400),
        ([item(usageLimit=None)], f"{at}.usageLimit", 400),
        ([item(featureId=flag)], f"{at}.usageLimit", 400),
        ([item(featureId="nope")], f"{at}.featureId", 404),
        ([item(period="custom")], f"{at}.customEndDate", 400),
        ([item(period="custom", customEndDate="2000-01-01T00:00:00Z")],
         f"{at}.customEndDate", 400),
        ([item(period="custom", customEndDate="garbage")], f"{at}.customEndDate", 400),
        ([item(), item()], "promotionalEntitlements[1].featureId", 400),
        ([item(resetPeriod="FORTNIGHT")], f"{at}.resetPeriod", 400),
        ([item(resetPeriod="DAY",
               monthlyResetPeriodConfiguration={"accordingTo": "StartOfTheMonth"})],
         f"{at}.monthlyResetPeriodConfiguration", 400),
        ([item(hasUnlimitedUsage=True)], f"{at}.usageLimit", 400),
        ([item(surprise=1)], f"{at}.surprise", 400),
        ([item(), {"featureId": "nope", "period": "lifetime"}],
         "promotionalEntitlements[1].featureId", 404),
    ):
        refused(send(raw, "POST", url, {"promotionalEntitlements": items}), field, (status,))
    assert cat.ok(raw.get(url)) == []
    refused(raw.post("/api/v1/customers/nobody/promotional-entitlements",
                     json={"promotionalEntitlements": [item()]}), "id", (404,))
    for query, field in (({"status": "Nope"}, "status"), ({"limit": "x"}, "limit"),
                         ({"after": "x"}, "after")):
        refused(raw.get(url, params=query), field)
    refused(raw.delete(url + "/nope"), "featureId", (404,))


def test_entitlement_check_bad_queries(raw, cat) -> None:
    customer = cat.customer()
    feature = cat.feature()
    url = f"/api/v1/customers/{customer}/entitlements/check"
    for query, field, status in (
        ({"featureId": feature, "requestedUsage": "abc"}, "requestedUsage", 400),
        ({"featureId": feature, "requestedUsage": "-1"}, "requestedUsage", 400),
        ({"currencyId": cat.currency, "requestedUsage": "-5"}, "requestedUsage", 400),
        ({"currencyId": cat.currency, "requestedUsage": "1e5000"}, "requestedUsage", 400),
        ({"currencyId": cat.currency, "requestedUsage": "NaN"}, "requestedUsage", 400),
        ({"currencyId": cat.currency, "requestedUsage": "Infinity"}, "requestedUsage", 400),
        ({"currencyId": "nope"}, "currencyId", 404),
        ({}, "currencyId", 400),
        ({"currencyId": cat.currency, "featureId": feature}, "featureId", 400),
        # reserveAmount without a reservationId is a reservation under a made-up id
        # (issue 16; test_credits_api.py, test_a_reservation_without_an_id_gets_one).
        ({"currencyId": cat.currency, "reserveAmount": "5", "reservationId": "r",
          "reservationTtlSeconds": "soon"}, "reservationTtlSeconds", 400),
    ):
        refused(raw.get(url, params=query), field, (status,))


def test_test_clock_bad_bodies(raw, clock) -> None:
    before = clock.now()
    for body, field in (({}, "now"), ({"now": "garbage"}, "now"),
                        ({"now": "2000-01-01T00:00:00Z"}, "now"),
                        ({"advanceSeconds": -1}, "advanceSeconds"),
                        ({"advanceSeconds": "10"}, "advanceSeconds"),
                        ({"now": before.isoformat(), "advanceSeconds": 1}, "now"),
                        ({"surprise": 1}, "surprise")):
        refused(raw.put("/api/v1/test-clock", json=body), field)
    assert clock.now() == before


# --- far-out values that poison state (each on a server of its own) ----------------------

def _own_server(make_server, **env: str) -> Any:
    return make_server(api_keys=OWN_KEY, env={"CREDITD_CLOCK": f"manual:{CLOCK_START}",
                                              **env}).start()


def test_a_trial_past_year_9999_is_refused_up_front(make_server, uid) -> None:
    server = _own_server(make_server)
    with server.http(key=OWN_KEY) as raw:
        cat = Cat(raw, uid)
        plan = cat.uid("plan")
        r = raw.post("/api/v1/plans", json={
            "id": plan, "displayName": "Long trial", "productId": cat.product,
            "defaultTrialConfig": {"duration": 10**7, "units": "DAY"}})
        if r.status_code == 400:
            refused(r, "defaultTrialConfig.duration")
            return
        cat.ok(r)
        cat.ok(raw.post(f"/api/v1/plans/{plan}/publish",
                        json={"migrationType": "NEW_CUSTOMERS"}))
        customer = cat.customer()
        r = raw.post("/api/v1/subscriptions", json={"customerId": customer, "planId": plan})
        assert r.status_code < 500, r.text
        assert raw.get("/api/v1/subscriptions").status_code == 200
        assert raw.get("/api/v1/subscriptions",
                       params={"customerId": customer}).status_code == 200


def test_moving_the_clock_far_is_never_a_500(make_server, uid) -> None:
    server = _own_server(make_server)
    with server.http(key=OWN_KEY) as raw:
        cat = Cat(raw, uid)
        plan = cat.plan()
        sub = cat.provision(cat.customer(), plan)
        for body in ({"advanceSeconds": "__HUGE__"}, {"advanceSeconds": 10**15},
                     {"now": "9999-12-31T23:59:59Z"}):
            before = cat.ok(raw.get("/api/v1/test-clock"))["now"]
            r = send(raw, "PUT", "/api/v1/test-clock", body)
            assert r.status_code < 500, (body, r.text)
            if r.status_code >= 400:  # refused: the clock did not move
                assert cat.ok(raw.get("/api/v1/test-clock"))["now"] == before
        assert raw.get(f"/api/v1/subscriptions/{sub['id']}").status_code == 200
        assert raw.get("/api/v1/subscriptions").status_code == 200


# --- lifecycle edge cases ----------------------------------------------------------------

def test_billing_period_change_before_the_start_keeps_the_start(raw, clock, cat) -> None:
    plan = cat.plan()
    customer = cat.customer()
    start = clock.now() + 3 * DAY
    sub = cat.provision(customer, plan, startDate=start.isoformat())
    assert sub["status"] == "NOT_STARTED"
    r = raw.patch(f"/api/v1/subscriptions/{sub['id']}", json={"billingPeriod": "ANNUALLY"})
    assert r.status_code == 200, r.text
    clock.move(to=start)
    got = cat.sub(sub["id"])
    assert (got["status"], got["billingPeriod"]) == ("ACTIVE", "ANNUALLY")
    assert _t(got["billingCycleAnchor"]) == start
    assert _t(got["currentBillingPeriodStart"]) == start
    assert _t(got["currentBillingPeriodEnd"]) == start.replace(year=start.year + 1)


def test_a_not_started_subscription_can_change_and_be_cancelled(raw, clock, cat) -> None:
    small, big = cat.plan(credits=10), cat.plan(credits=40)
    customer = cat.customer()
    start = clock.now() + 2 * DAY
    sub = cat.provision(customer, small, startDate=start.isoformat())
    r = raw.patch(f"/api/v1/subscriptions/{sub['id']}", json={"planId": big})
    assert r.status_code == 200, r.text
    assert (r.json()["data"]["planId"], r.json()["data"]["status"]) == (big, "NOT_STARTED")
    assert cat.grants(customer) == []
    clock.move(to=start)
    assert [g["amount"] for g in cat.grants(customer)] == [40]
    other = cat.customer()
    later = cat.provision(other, small, startDate=(clock.now() + 2 * DAY).isoformat())
    done = cat.ok(raw.post(f"/api/v1/subscriptions/{later['id']}/cancel",
                           json={"cancellationTime": "END_OF_BILLING_PERIOD"}))
    assert done["status"] == "CANCELED"
    clock.move(by=5 * DAY)
    assert cat.grants(other) == []


def test_extending_a_trial_keeps_the_trial_credits(raw, clock, cat) -> None:
    plan = cat.plan(credits=300, trial={"duration": 7, "units": "DAY"})
    customer = cat.customer()
    sub = cat.provision(customer, plan)
    assert sub["status"] == "IN_TRIAL" and cat.balance(customer) == 300
    new_end = clock.now() + 20 * DAY
    r = raw.patch(f"/api/v1/subscriptions/{sub['id']}", json={"trialEndDate": new_end.isoformat()})
    assert r.status_code == 200, r.text
    assert _t(r.json()["data"]["trialEndDate"]) == new_end
    clock.move(by=10 * DAY)  # past the old trial end, inside the new one
    assert cat.sub(sub["id"])["status"] == "IN_TRIAL"
    assert cat.balance(customer) == 300


def test_scheduled_change_and_cancellation_at_the_same_period_end(raw, clock, cat) -> None:
    small, big = cat.plan(credits=100), cat.plan(credits=500)
    customer = cat.customer()
    sub = cat.provision(customer, small)
    end = _t(sub["currentBillingPeriodEnd"])
    done = cat.ok(raw.post(f"/api/v1/subscriptions/{sub['id']}/cancel",
                           json={"cancellationTime": "END_OF_BILLING_PERIOD"}))
    assert _t(done["cancellationDate"]) == end
    r = raw.patch(f"/api/v1/subscriptions/{sub['id']}",
                  json={"planId": big, "scheduleStrategy": "END_OF_BILLING_PERIOD"})
    if 400 <= r.status_code < 500:
        return  # refusing the change is right too
    assert r.status_code == 200, r.text
    clock.move(to=end)
    got = cat.sub(sub["id"])
    assert got["status"] == "CANCELED"
    assert got["planId"] == small
    assert all(u["scheduleStatus"] != "DONE" for u in got["futureUpdates"])
    assert [g["amount"] for g in cat.grants(customer)] == [100]


def test_uncancel_with_a_null_cancellation_date(raw, clock, cat) -> None:
    plan = cat.plan(credits=10)
    customer = cat.customer()
    sub = cat.provision(customer, plan)
    cat.ok(raw.post(f"/api/v1/subscriptions/{sub['id']}/cancel",
                    json={"cancellationTime": "END_OF_BILLING_PERIOD"}))
    back = cat.ok(raw.patch(f"/api/v1/subscriptions/{sub['id']}",
                            json={"cancellationDate": None}))
    assert (back["cancellationDate"], back["endDate"]) == (None, None)
    clock.move(to=_t(sub["currentBillingPeriodEnd"]))
    assert cat.sub(sub["id"])["status"] == "ACTIVE"
    assert [g["amount"] for g in cat.grants(customer)] == [10, 10]
    # Cancelled for good: an update is refused and changes nothing.
    cat.ok(raw.post(f"/api/v1/subscriptions/{sub['id']}/cancel",
                    json={"cancellationTime": "IMMEDIATE"}))
    refused(raw.patch(f"/api/v1/subscriptions/{sub['id']}", json={"billingPeriod": "ANNUALLY"}),
            "id")
    assert cat.sub(sub["id"])["billingPeriod"] == "MONTHLY"
    refused(raw.post(f"/api/v1/subscriptions/{sub['id']}/migrate", json={}), "id")


def test_trial_end_runs_a_scheduled_plan_change(raw, clock, cat) -> None:
    trial_plan = cat.plan(credits=300, trial={"duration": 7, "units": "DAY"})
    big = cat.plan(credits=700)
    customer = cat.customer()
    sub = cat.provision(customer, trial_plan)
    trial_end = _t(sub["trialEndDate"])
    r = raw.patch(f"/api/v1/subscriptions/{sub['id']}",
                  json={"planId": big, "scheduleStrategy": "END_OF_BILLING_PERIOD"})
    assert r.status_code == 200, r.text
    [update] = r.json()["data"]["futureUpdates"]
    assert _t(update["scheduledExecutionTime"]) == trial_end
    clock.move(to=trial_end)
    got = cat.sub(sub["id"])
    assert (got["status"], got["planId"]) == ("ACTIVE", big)
    assert _t(got["currentBillingPeriodStart"]) == trial_end
    assert [g["amount"] for g in cat.grants(customer)] == [300, 700]


def test_billing_period_change_during_a_trial_starts_at_the_trial_end(raw, clock, cat) -> None:
    plan = cat.plan(credits=30, trial={"duration": 7, "units": "DAY"})
    for strategy in ("IMMEDIATE", "END_OF_BILLING_PERIOD"):
        sub = cat.provision(cat.customer(), plan)
        trial_end = _t(sub["trialEndDate"])
        clock.move(by=2 * DAY)
        r = raw.patch(f"/api/v1/subscriptions/{sub['id']}",
                      json={"billingPeriod": "ANNUALLY", "scheduleStrategy": strategy})
        assert r.status_code == 200, r.text
        assert r.json()["data"]["status"] == "IN_TRIAL"
        clock.move(to=trial_end)
        got = cat.sub(sub["id"])
        assert (got["status"], got["billingPeriod"]) == ("ACTIVE", "ANNUALLY")
        assert _t(got["billingCycleAnchor"]) == trial_end
        assert _t(got["currentBillingPeriodEnd"]) == trial_end.replace(year=trial_end.year + 1)


def test_migrating_with_an_add_on_no_longer_compatible_is_refused_whole(raw, client, cat) -> None:
    addon = cat.addon(credits=50)
    plan = cat.plan(credits=100, addons=[addon])
    customer = cat.customer()
    sub = cat.provision(customer, plan, addons=[{"id": addon, "quantity": 2}])
    other = cat.addon(credits=5)
    cat.ok(raw.post(f"/api/v1/plans/{plan}/draft"))
    cat.ok(raw.patch(f"/api/v1/plans/{plan}", json={"compatibleAddonIds": [other]}))
    # ALL_CUSTOMERS: the subscription does not fit the new version, it stays where it is.
    cat.ok(raw.post(f"/api/v1/plans/{plan}/publish", json={"migrationType": "ALL_CUSTOMERS"}))
    assert cat.sub(sub["id"])["planVersion"] == 1
    for time in ("IMMEDIATE", "END_OF_BILLING_PERIOD"):
        r = raw.post(f"/api/v1/subscriptions/{sub['id']}/migrate",
                     json={"subscriptionMigrationTime": time})
        refused(r, "addons[0].id")
    got = cat.sub(sub["id"])
    assert (got["planVersion"], got["addons"], got["futureUpdates"]) == (
        1, [{"id": addon, "quantity": 2}], [])
    assert sorted(g["amount"] for g in cat.grants(customer)) == [100, 100]


# --- entitlement checks ------------------------------------------------------------------

def test_limits_sum_plan_addons_and_promotions_and_reset_on_time(raw, clock, cat) -> None:
    api, soft, unlimited = cat.feature(), cat.feature(), cat.feature()
    enum = cat.feature("ENUM", enumConfiguration=[
        {"value": v, "displayName": v.upper()} for v in ("a", "b", "c")])
    addon = cat.addon(credits=0, entitlements=[
        {"type": "FEATURE", "id": api, "usageLimit": 3},
        {"type": "FEATURE", "id": enum, "enumValues": ["b"]}])
    plan = cat.plan(credits=0, addons=[addon], entitlements=[
        {"type": "FEATURE", "id": api, "usageLimit": 10, "resetPeriod": "MONTH"},
        {"type": "FEATURE", "id": soft, "usageLimit": 5, "hasSoftLimit": True},
        {"type": "FEATURE", "id": unlimited, "hasUnlimitedUsage": True},
        {"type": "FEATURE", "id": enum, "enumValues": ["a"]}])
    customer = cat.customer()
    t0 = clock.now()
    sub = cat.provision(customer, plan, addons=[{"id": addon, "quantity": 2}])

    def check(feature: str, **q: Any) -> tuple[Any, ...]:
        d = cat.check(customer, feature, **q)
        return d["isGranted"], d["accessDeniedReason"], d["currentUsage"], d["usageLimit"]

    assert check(api, requestedUsage=16) == (True, None, 0, 16)  # 10 + 2 × 3
    assert check(api, requestedUsage=17) == (False, "RequestedUsageExceedingLimit", 0, 16)
    assert check(soft, requestedUsage=100)[:2] == (True, None)
    assert check(unlimited, requestedUsage=10**12)[:2] == (True, None)
    assert check(enum, requestedValues="a,b")[:2] == (True, None)
    assert check(enum, requestedValues="c")[:2] == (False, "RequestedValuesMismatch")
    r = raw.post("/api/v2/usage", json={"usages": [
        {"customerId": customer, "featureId": api, "value": 16},
        {"customerId": customer, "featureId": soft, "value": 50}]})
    assert r.status_code == 200, r.text
    assert check(api) == (False, "RequestedUsageExceedingLimit", 16, 16)
    assert check(soft, requestedUsage=1) == (True, None, 50, 5)
    # A one-week promotion adds 4 while it lasts.
    cat.ok(raw.post(f"/api/v1/customers/{customer}/promotional-entitlements", json={
        "promotionalEntitlements": [{"featureId": api, "period": "1 week", "usageLimit": 4}]}))
    assert check(api, requestedUsage=4) == (True, None, 16, 20)
    assert check(api, requestedUsage=5)[:2] == (False, "RequestedUsageExceedingLimit")
    clock.move(to=t0 + 7 * DAY)
    assert check(api, requestedUsage=1) == (False, "RequestedUsageExceedingLimit", 16, 16)
    # The plan's monthly window, anchored at the subscription start, resets on time.
    clock.move(to=_t(sub["currentBillingPeriodEnd"]) - timedelta(seconds=1))
    assert check(api)[2] == 16
    clock.move(to=_t(sub["currentBillingPeriodEnd"]))
    d = cat.check(customer, api, requestedUsage=16)
    assert (d["isGranted"], d["currentUsage"]) == (True, 0)
    assert _t(d["usagePeriodStart"]) == _t(sub["currentBillingPeriodEnd"])
    # Cancelled with REVOKE: nothing is granted any more.
    cat.ok(raw.post(f"/api/v1/subscriptions/{sub['id']}/cancel",
                    json={"cancellationTime": "IMMEDIATE",
                          "cancellationAction": "REVOKE_ENTITLEMENTS"}))
    assert check(api)[:2] == (False, "NoActiveSubscription")


# --- estimates -----------------------------------------------------------------------------

def _intl_plan(cat: Cat, product: str | None = None) -> str:
    return cat.plan(credits=0, product=product, models=[{
        "billingModel": "FLAT_FEE", "pricePeriods": [
            {"billingPeriod": "MONTHLY", "price": {"amount": "19.99", "currency": "usd"}},
            {"billingPeriod": "MONTHLY", "billingCountryCode": "DE",
             "price": {"amount": "17.49", "currency": "eur"}},
            {"billingPeriod": "MONTHLY", "billingCountryCode": "GB",
             "price": {"amount": "15.55", "currency": "gbp"}}]}])


def test_estimate_totals_add_up_with_coupon_and_tax(raw, cat) -> None:
    percent, fixed = cat.uid("pct"), cat.uid("fix")
    cat.ok(raw.post("/api/v1/coupons", json={
        "id": percent, "name": "15 off", "percentOff": 15, "amountsOff": None,
        "description": None, "durationInMonths": None, "metadata": None}))
    cat.ok(raw.post("/api/v1/coupons", json={
        "id": fixed, "name": "3.33 off", "percentOff": None,
        "amountsOff": [{"amount": 3.33, "currency": "usd"}, {"amount": 2, "currency": "gbp"}],
        "description": None, "durationInMonths": None, "metadata": None}))
    plan = _intl_plan(cat)
    customer = cat.customer()
    cases = [  # (country, coupon, currency, subTotal, discount, tax, total)
        ("DE", percent, "eur", "17.49", "2.62", "2.83", "17.70"),
        ("de", percent, "eur", "17.49", "2.62", "2.83", "17.70"),
        ("GB", fixed, "gbp", "15.55", "2.00", "2.71", "16.26"),
        ("US", fixed, "usd", "19.99", "3.33", "0.00", "16.66"),
        (None, percent, "usd", "19.99", "3.00", "0.00", "16.99"),
    ]
    for country, coupon, currency, sub_total, discount, tax, total in cases:
        body: dict[str, Any] = {"customerId": customer, "planId": plan,
                                "appliedCoupon": {"couponId": coupon}}
        if country:
            body["billingCountryCode"] = country
        r = raw.post("/api/v1/subscriptions/preview", content=json.dumps(body),
                     headers={"content-type": "application/json"})
        assert r.status_code == 200, r.text
        data = json.loads(r.text, parse_float=Decimal)["data"]
        for inv in (data["immediateInvoice"], data["recurringInvoice"]):
            assert inv["currency"] == currency, (country, inv)
            got = tuple(Decimal(inv[k]) for k in ("subTotal", "discount", "tax", "total"))
            assert got == tuple(Decimal(x) for x in (sub_total, discount, tax, total)), (
                country, coupon, inv)
            assert inv["total"] == inv["subTotal"] - inv["discount"] + inv["tax"]
            assert sum(Decimal(ln["subTotal"]) for ln in inv["lines"]) == inv["subTotal"]
        assert data["total"]["amount"] == data["subTotal"]["amount"] - (
            data["discountAmount"]["amount"] if data["discountAmount"] else 0) + (
            data["tax"]["amount"])
        assert data["total"]["currency"] == currency.upper()


# --- paywall -------------------------------------------------------------------------------

def test_paywall_localizes_prices_by_country(raw, cat) -> None:
    product = cat.new_product()
    plan = _intl_plan(cat, product)
    for country, amount, currency, code in (("DE", "17.49", "EUR", "de"),
                                            ("de", "17.49", "EUR", "de"),
                                            ("GB", "15.55", "GBP", "gb"),
                                            ("FR", "19.99", "USD", None),
                                            (None, "19.99", "USD", None)):
        query = {"productId": product}
        if country:
            query["billingCountryCode"] = country
        r = raw.get("/api/v1/paywall", params=query)
        assert r.status_code == 200, r.text
        data = json.loads(r.text, parse_float=Decimal)["data"]
        [p] = data["plans"]
        assert p["id"] == plan
        [price] = p["prices"]
        assert (price["price"]["amount"], price["price"]["currency"]) == (Decimal(amount),
                                                                          currency)
        assert (price["billingCountryCode"] or "").lower() == (code or "")
        assert data["currency"]["code"] == currency
        [point] = data["paywallCalculatedPricePoints"]
        assert (point["amount"], point["currency"]) == (Decimal(amount), currency)
    r = raw.get("/api/v1/paywall", params={"productId": product,
                                           "fetchAllCountriesPrices": "true"})
    assert len(r.json()["data"]["plans"][0]["prices"]) == 3


def test_paywall_price_point_is_one_per_billing_period(raw, cat) -> None:
    product = cat.new_product()
    seat = cat.feature()
    plan = cat.plan(credits=0, product=product, models=[
        {"billingModel": "FLAT_FEE", "pricePeriods": [
            {"billingPeriod": "MONTHLY", "price": {"amount": "20", "currency": "eur"}},
            {"billingPeriod": "MONTHLY", "billingCountryCode": "DE",
             "price": {"amount": "18", "currency": "eur"}}]},
        {"billingModel": "PER_UNIT", "featureId": seat, "minUnitQuantity": 2,
         "pricePeriods": [{"billingPeriod": "MONTHLY",
                           "price": {"amount": "5", "currency": "eur"}}]}])
    estimate = cat.ok(raw.post("/api/v1/subscriptions/preview", json={
        "customerId": cat.customer(), "planId": plan, "billingCountryCode": "DE"}))
    assert estimate["recurringInvoice"]["subTotal"] == 28
    data = cat.ok(raw.get("/api/v1/paywall", params={"productId": product,
                                                     "billingCountryCode": "DE"}))
    points = [p for p in data["paywallCalculatedPricePoints"] if p["planId"] == plan]
    assert [(p["billingPeriod"], p["amount"], p["currency"]) for p in points] == [
        ("MONTHLY", 28, "EUR")]
