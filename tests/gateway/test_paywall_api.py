"""GET /api/v1/paywall on a server started with the example catalog
(`creditd serve` with CREDITD_CATALOG=scripts/example-catalog.toml, as scripts/serve runs)."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

EXAMPLE = str(Path(__file__).resolve().parents[2] / "scripts" / "example-catalog.toml")
SERVER_ENV = {"CREDITD_CATALOG": EXAMPLE}


def paywall(raw: httpx.Client, **params: Any) -> dict[str, Any]:
    response = raw.get("/api/v1/paywall", params=params)
    assert response.status_code == 200, response.text
    return response.json()["data"]


def by_id(plans: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {p["refId"]: p for p in plans}


def test_plans_entitlements_and_default_prices(raw: httpx.Client) -> None:
    data = paywall(raw)
    assert data["__typename"] == "Paywall"
    assert [p["refId"] for p in data["plans"]] == ["free", "pro", "team"]
    assert data["currency"] == {"__typename": "PaywallCurrency", "code": "USD", "symbol": "$"}
    plans = by_id(data["plans"])
    free, pro, team = plans["free"], plans["pro"], plans["team"]
    assert free["pricingType"] == "FREE" and free["prices"] == []
    assert pro["pricingType"] == "PAID" and pro["versionNumber"] == 1
    assert pro["product"]["refId"] == "ai-assistant"
    assert pro["product"]["additionalMetaData"]["category"] == "ai"
    assert pro["additionalMetaData"] == {"highlight": "true"}
    # Entitlements carry the feature.
    images = {e["featureId"]: e for e in pro["entitlements"]}["image-generations"]
    assert images["usageLimit"] == 200 and images["resetPeriod"] == "MONTH"
    assert images["resetPeriodConfiguration"]["monthlyAccordingTo"] == "StartOfTheMonth"
    assert images["feature"]["displayName"] == "Image generations"
    assert images["feature"]["featureType"] == "NUMBER"
    assert {e["featureId"] for e in team["entitlements"]} >= {"sso", "priority-support"}
    assert {e["featureId"]: e for e in team["entitlements"]}["image-generations"][
        "hasUnlimitedUsage"] is True
    credits = [e for e in pro["packageEntitlements"]
               if e["__typename"] == "PackageCreditEntitlement"]
    assert credits[0]["customCurrencyId"] == "tokens"
    assert Decimal(str(credits[0]["amount"])) == 2_000_000 and credits[0]["cadence"] == "MONTH"
    # Default (country-less) prices.
    flat = {(p["billingModel"], p["billingPeriod"]): p for p in pro["prices"]}
    assert flat[("FLAT_FEE", "MONTHLY")]["price"] == {"amount": 20, "currency": "USD"}
    assert flat[("FLAT_FEE", "ANNUALLY")]["price"] == {"amount": 200, "currency": "USD"}
    assert all(p["billingCountryCode"] is None for p in pro["prices"])
    top_up = flat[("CREDIT_BASED", "MONTHLY")]
    assert top_up["topUpCustomCurrencyId"] == "tokens"
    assert Decimal(str(top_up["price"]["amount"])) == Decimal("0.00002")
    # Tiered per-seat prices, with the feature.
    seats = [p for p in team["prices"] if p["billingModel"] == "PER_UNIT"]
    monthly = next(p for p in seats if p["billingPeriod"] == "MONTHLY")
    assert monthly["tiersMode"] == "GRADUATED" and monthly["minUnitQuantity"] == 3
    assert [t["upTo"] for t in monthly["tiers"]] == [10, None]
    assert monthly["tiers"][0]["unitPrice"] == {"amount": 30, "currency": "USD"}
    assert monthly["feature"]["refId"] == "seats"
    # Trial, parent plan, compatible add-ons.
    assert pro["defaultTrialConfig"]["duration"] == 14
    assert pro["defaultTrialConfig"]["units"] == "DAY"
    assert team["basePlan"]["refId"] == "pro"
    assert {e["featureId"] for e in team["inheritedEntitlements"]} >= {"priority-support"}
    addon = pro["compatibleAddons"][0]
    assert addon["refId"] == "extra-seats" and addon["maxQuantity"] == 100
    assert addon["prices"][0]["price"] == {"amount": 8, "currency": "USD"}
    assert addon["entitlements"][0]["featureId"] == "seats"


def test_price_points(raw: httpx.Client) -> None:
    points = {(p["planId"], p["billingPeriod"]): p
              for p in paywall(raw)["paywallCalculatedPricePoints"]}
    assert points[("pro", "MONTHLY")]["amount"] == 20
    assert points[("pro", "MONTHLY")]["currency"] == "USD"
    assert points[("pro", "MONTHLY")]["additionalChargesMayApply"] is False
    # 3 seats minimum at $30.
    team = points[("team", "MONTHLY")]
    assert team["amount"] == 90 and team["additionalChargesMayApply"] is True
    assert team["feature"]["refId"] == "seats"


def test_prices_localized_by_country(raw: httpx.Client) -> None:
    data = paywall(raw, billingCountryCode="DE")
    pro = by_id(data["plans"])["pro"]
    flat = {p["billingPeriod"]: p for p in pro["prices"] if p["billingModel"] == "FLAT_FEE"}
    assert flat["MONTHLY"]["price"] == {"amount": 19, "currency": "EUR"}
    assert flat["ANNUALLY"]["price"] == {"amount": 190, "currency": "EUR"}
    assert flat["MONTHLY"]["billingCountryCode"].upper() == "DE"
    # A plan without prices for the country falls back to its default prices.
    team = by_id(data["plans"])["team"]
    assert {p["price"]["currency"] if p["price"] else p["tiers"][0]["unitPrice"]["currency"]
            for p in team["prices"]} == {"USD"}
    # A country with no prices of its own: the defaults.
    fr = by_id(paywall(raw, billingCountryCode="FR")["plans"])["pro"]
    assert {p["billingPeriod"]: p for p in fr["prices"]
            if p["billingModel"] == "FLAT_FEE"}["MONTHLY"]["price"]["currency"] == "USD"
    every = by_id(paywall(raw, fetchAllCountriesPrices="true")["plans"])["pro"]
    assert len([p for p in every["prices"] if p["billingModel"] == "FLAT_FEE"]) == 4


def test_product_filter_and_hidden_plans(raw: httpx.Client, uid: Callable[[str], str]) -> None:
    assert [p["refId"] for p in paywall(raw, productId="ai-assistant")["plans"]] == \
        ["free", "pro", "team"]
    missing = raw.get("/api/v1/paywall", params={"productId": "nope"})
    assert missing.status_code == 404 and missing.json()["field"] == "productId"
    hidden = uid("internal")
    created = raw.post("/api/v1/plans", json={
        "id": hidden, "displayName": "Internal", "productId": "ai-assistant",
        "hidden": True, "status": "PUBLISHED"})
    assert created.status_code in (200, 201), created.text
    assert hidden not in [p["refId"] for p in paywall(raw)["plans"]]
    shown = by_id(paywall(raw, includeHiddenPlans="true")["plans"])
    assert shown[hidden]["hiddenFromWidgets"] == ["PAYWALL"]
    bad = raw.get("/api/v1/paywall", params={"includeHiddenPlans": "maybe"})
    assert bad.status_code == 400 and bad.json()["field"] == "includeHiddenPlans"


def test_customer_and_active_subscriptions(raw: httpx.Client,
                                           uid: Callable[[str], str]) -> None:
    missing = raw.get("/api/v1/paywall", params={"customerId": uid("ghost")})
    assert missing.status_code == 404 and missing.json()["field"] == "customerId"
    customer = uid("acme")
    assert raw.post("/api/v1/customers", json={"id": customer}).status_code in (200, 201)
    data = paywall(raw, customerId=customer)
    assert data["customer"]["customerId"] == customer
    assert data["customer"]["hasActiveSubscription"] is False
    assert data["customer"]["eligibleForTrial"] == [
        {"__typename": "EligibleForTrial", "productId": "ai-assistant",
         "productRefId": "ai-assistant", "eligible": True}]
    assert data["activeSubscriptions"] in ([], None)
    provisioned = raw.post("/api/v1/subscriptions", json={
        "customerId": customer, "planId": "pro", "billingPeriod": "MONTHLY"})
    if provisioned.status_code == 404 and "subscriptions" not in provisioned.text.lower():
        pytest.skip("subscriptions are not there yet")
    assert provisioned.status_code in (200, 201), provisioned.text
    data = paywall(raw, customerId=customer)
    active = data["activeSubscriptions"]
    assert [s["plan"]["refId"] for s in active] == ["pro"]
    assert active[0]["status"] in ("ACTIVE", "IN_TRIAL")
    assert data["customer"]["hasActiveSubscription"] is True
    if active[0]["status"] == "IN_TRIAL":
        # The pro plan's default trial was taken: no second one for this product.
        assert data["customer"]["eligibleForTrial"][0]["eligible"] is False
        assert [t["planRefId"] for t in data["customer"]["trialedPlans"]] == ["pro"]


def test_environments_are_separate(server) -> None:
    with server.http(key=server.other_key) as other:
        assert paywall(other)["plans"] == []
