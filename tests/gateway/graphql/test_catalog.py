"""The catalog over GraphQL (gateway/graphql/resolvers/catalog.py): GetPaywall, GetProducts,
GetCoupons, CreateCoupon, GrantPromotionalEntitlements, RevokePromotionalEntitlement —
the documents stigg-api-client-v2 sends, on a server holding the example catalog
(scripts/example-catalog.toml: plans free/pro/team, the extra-seats add-on, the
launch-20 coupon)."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

from tests.gateway.graphql.wire import code, data, gql

EXAMPLE = str(Path(__file__).resolve().parents[3] / "scripts" / "example-catalog.toml")
SERVER_ENV = {"CREDITD_CATALOG": EXAMPLE}


def _by_ref(plans: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {p["refId"]: p for p in plans}


def _refusal(answer: dict[str, Any]) -> tuple[str, str | None]:
    [error] = answer["errors"]
    return code(answer), error["extensions"].get("field")


def _check(raw: httpx.Client, customer: str, feature: str) -> dict[str, Any]:
    r = raw.get(f"/api/v1/customers/{customer}/entitlements/check",
                params={"featureId": feature})
    assert r.status_code == 200, r.text
    return r.json()["data"]


# -- paywall -----------------------------------------------------------------------------------

def test_paywall_is_the_rest_paywall_in_graphql(server: Any, raw: httpx.Client) -> None:
    paywall = data(gql(server, "GetPaywall", {"input": {}}))["paywall"]
    rest = raw.get("/api/v1/paywall").json()["data"]
    assert [p["refId"] for p in paywall["plans"]] == [p["refId"] for p in rest["plans"]]
    assert paywall["currency"] == {"code": "USD", "symbol": "$"}
    assert paywall["customer"] is None and paywall["activeSubscriptions"] is None
    plans = _by_ref(paywall["plans"])
    pro, team = plans["pro"], plans["team"]
    assert pro["displayName"] == "Pro" and pro["pricingType"] == "PAID"
    assert pro["product"]["refId"] == "ai-assistant"
    assert pro["product"]["productSettings"] == {"downgradePlan": None}
    flat = {(p["billingModel"], p["billingPeriod"]): p for p in pro["prices"]}
    assert flat[("FLAT_FEE", "MONTHLY")]["price"] == {"amount": 20, "currency": "USD"}
    # Exact: 0.00002 per token, not a binary float's neighbour.
    assert flat[("CREDIT_BASED", "MONTHLY")]["price"]["amount"] == Decimal("0.00002")
    assert pro["defaultTrialConfig"]["duration"] == 14
    assert pro["defaultTrialConfig"]["units"] == "DAY"
    # Union members by their own type names, with Stigg's required fields.
    members = {e["__typename"] for e in pro["packageEntitlements"]}
    assert members == {"PackageFeatureEntitlement", "PackageCreditEntitlement"}
    credit = next(e for e in pro["packageEntitlements"]
                  if e["__typename"] == "PackageCreditEntitlement")
    assert credit["amount"] == 2_000_000 and credit["cadence"] == "MONTH"
    assert credit["customCurrencyId"] == "tokens" and credit["id"] and credit["isGranted"]
    images = next(e for e in pro["packageEntitlements"]
                  if e.get("featureId") == "image-generations")
    assert images["usageLimit"] == 200 and images["feature"]["refId"] == "image-generations"
    [addon] = pro["compatibleAddons"]
    assert addon["refId"] == "extra-seats" and addon["maxQuantity"] == 100
    assert addon["prices"][0]["price"] == {"amount": 8, "currency": "USD"}
    assert addon["dependencies"] == []
    assert team["basePlan"] == {"refId": "pro", "displayName": "Pro"}
    points = {(p["planId"], p["billingPeriod"]): p
              for p in paywall["paywallCalculatedPricePoints"]}
    assert points[("team", "MONTHLY")]["amount"] == 90
    assert points[("team", "MONTHLY")]["additionalChargesMayApply"] is True
    # Country prices and the product filter go to the domain as REST's do.
    de = data(gql(server, "GetPaywall", {"input": {"billingCountryCode": "DE",
                                                     "productId": "ai-assistant"}}))
    de_pro = _by_ref(de["paywall"]["plans"])["pro"]
    assert {p["billingPeriod"]: p["price"] for p in de_pro["prices"]
            if p["billingModel"] == "FLAT_FEE"}["MONTHLY"] == {"amount": 19, "currency": "EUR"}


def test_paywall_for_a_customer(server: Any, raw: httpx.Client, customer: str,
                                uid: Callable[[str], str]) -> None:
    ghost = gql(server, "GetPaywall", {"input": {"customerId": uid("ghost")}})
    assert _refusal(ghost) == ("CustomerNotFound", "customerId") and ghost["data"] is None
    assert _refusal(gql(server, "GetPaywall", {"input": {"productId": "nope"}})) == (
        "ProductNotFoundError", "productId")
    assert _refusal(gql(server, "GetPaywall", {"input": {"offerId": "o"}})) == (
        "BadUserInput", "offerId")
    r = raw.post("/api/v1/subscriptions", json={
        "customerId": customer, "planId": "pro", "billingPeriod": "MONTHLY",
        "addons": [{"id": "extra-seats", "quantity": 2}]})
    assert r.status_code in (200, 201), r.text
    data(gql(server, "GrantPromotionalEntitlements", {"input": {
        "customerId": customer, "promotionalEntitlements": [
            {"featureId": "sso", "period": "LIFETIME"}]}}))
    assert raw.patch(f"/api/v1/customers/{customer}",
                     json={"couponId": "launch-20"}).status_code == 200
    paywall = data(gql(server, "GetPaywall", {"input": {"customerId": customer}}))["paywall"]
    c = paywall["customer"]
    assert (c["customerId"], c["name"], c["hasActiveSubscription"]) == (customer, "Acme", True)
    assert c["coupon"]["refId"] == "launch-20" and c["coupon"]["percentOff"] == 20
    [promo] = c["promotionalEntitlements"]
    assert (promo["featureId"], promo["status"], promo["endDate"]) == ("sso", "Active", None)
    [sub] = paywall["activeSubscriptions"]
    # The subscription's plan and add-on whole, as the client's model requires them.
    assert sub["plan"]["refId"] == "pro" and sub["plan"]["displayName"] == "Pro"
    assert sub["plan"]["product"]["refId"] == "ai-assistant"
    [held] = sub["addons"]
    assert held["quantity"] == 2 and held["addon"]["displayName"]
    assert sub["status"] in ("ACTIVE", "IN_TRIAL")


# -- products ----------------------------------------------------------------------------------

PRODUCTS_PAGE = """
query Products($paging: CursorPaging, $sorting: [ProductSort!], $filter: ProductFilter) {
  products(paging: $paging, sorting: $sorting, filter: $filter) {
    edges { cursor node { refId displayName productSettings { downgradePlan { refId } } } }
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
    totalCount
  }
}"""


def _products(server: Any, **variables: Any) -> dict[str, Any]:
    return data(gql(server, "Products", variables, query=PRODUCTS_PAGE))["products"]


def test_products_as_a_connection(server: Any, raw: httpx.Client,
                                  uid: Callable[[str], str]) -> None:
    made = [uid("prod") for _ in range(3)]
    for ident in made:
        assert raw.post("/api/v1/products", json={
            "id": ident, "displayName": ident.upper()}).status_code in (200, 201)
    assert raw.patch("/api/v1/products/ai-assistant", json={"productSettings": {
        "subscriptionCancellationTime": "END_OF_BILLING_PERIOD",
        "subscriptionEndSetup": "DOWNGRADE_TO_FREE", "subscriptionStartSetup": "PLAN_SELECTION",
        "downgradePlanId": "free"}}).status_code == 200
    listed = data(gql(server, "GetProducts", {}))["products"]["edges"]
    nodes = {e["node"]["refId"]: e["node"] for e in listed}
    assert set(made) <= nodes.keys()
    assert nodes["ai-assistant"]["productSettings"]["downgradePlan"] == {
        "refId": "free", "displayName": "Free"}
    assert nodes[made[0]]["displayName"] == made[0].upper()
    assert nodes[made[0]]["productSettings"] == {"downgradePlan": None}
    # Stigg's default order is newest first; pages follow their cursors.
    first = _products(server, paging={"first": 2})
    assert [e["node"]["refId"] for e in first["edges"]] == [made[2], made[1]]
    assert first["pageInfo"]["hasNextPage"] is True
    assert first["pageInfo"]["hasPreviousPage"] is False
    total = first["totalCount"]
    assert total >= 4
    second = _products(server, paging={"first": 2, "after": first["pageInfo"]["endCursor"]})
    assert second["edges"][0]["node"]["refId"] == made[0]
    assert second["pageInfo"]["hasPreviousPage"] is True
    oldest = _products(server, paging={"first": 1}, sorting=[
        {"field": "createdAt", "direction": "ASC"}])
    assert oldest["edges"][0]["node"]["refId"] == "ai-assistant"
    back = _products(server, paging={"last": 1, "before": second["edges"][0]["cursor"]})
    assert [e["node"]["refId"] for e in back["edges"]] == [made[1]]
    one = _products(server, filter={"refId": {"eq": made[1]}})
    assert [e["node"]["refId"] for e in one["edges"]] == [made[1]] and one["totalCount"] == 1
    assert raw.post(f"/api/v1/products/{made[1]}/archive").status_code == 200
    live = _products(server, filter={"status": {"eq": "PUBLISHED"}}, paging={"first": 100})
    assert made[1] not in {e["node"]["refId"] for e in live["edges"]}
    archived = _products(server, filter={"status": {"eq": "ARCHIVED"}})
    assert [e["node"]["refId"] for e in archived["edges"]] == [made[1]]
    # A filter the domain cannot answer is refused, naming it (not ignored).
    assert _refusal(gql(server, "Products", {"filter": {"displayName": {"eq": "x"}}},
                        query=PRODUCTS_PAGE)) == ("BadUserInput", "filter.displayName")
    assert _refusal(gql(server, "Products", {"paging": {"first": 1000}},
                        query=PRODUCTS_PAGE)) == ("BadUserInput", "paging.first")


# -- coupons -----------------------------------------------------------------------------------

def _coupons(server: Any) -> dict[str, dict[str, Any]]:
    edges = data(gql(server, "GetCoupons", {}))["coupons"]["edges"]
    return {e["node"]["refId"]: e["node"] for e in edges}


def test_create_and_list_coupons(server: Any, raw: httpx.Client,
                                 uid: Callable[[str], str]) -> None:
    fixed, percent = uid("fixed"), uid("pct")
    made = data(gql(server, "CreateCoupon", {"input": {
        "refId": fixed, "name": "Almost twenty off", "description": "exact",
        "amountsOff": [{"amount": Decimal("19.99"), "currency": "USD"},
                       {"amount": Decimal("0.1"), "currency": "EUR"}],
        "durationInMonths": 3.0, "additionalMetaData": {"campaign": "spring"}}}))[
        "createOneCoupon"]
    assert (made["id"], made["refId"], made["type"], made["status"]) == (
        fixed, fixed, "FIXED", "ACTIVE")
    assert made["amountsOff"] == [{"amount": Decimal("19.99"), "currency": "USD"},
                                  {"amount": Decimal("0.1"), "currency": "EUR"}]
    assert made["discountValue"] == Decimal("19.99") and made["percentOff"] is None
    assert made["additionalMetaData"] == {"campaign": "spring"} and made["syncStates"] == []
    # The same coupon through REST: the GraphQL input was mapped, not only echoed.
    rest = raw.get(f"/api/v1/coupons/{fixed}").json()["data"]
    assert (rest["durationInMonths"], rest["duration"]) == (3, "REPEATING")
    assert rest["metadata"] == {"campaign": "spring"}
    pct = data(gql(server, "CreateCoupon", {"input": {
        "refId": percent, "name": "Ten percent", "type": "PERCENTAGE",
        "discountValue": 10}}))["createOneCoupon"]
    assert (pct["type"], pct["percentOff"], pct["discountValue"]) == ("PERCENTAGE", 10, 10)

    listed = _coupons(server)
    assert {fixed, percent, "launch-20"} <= listed.keys()
    assert listed[fixed] == made
    # Newest first, as Stigg's default sorting has it.
    order = [e["node"]["refId"] for e in data(gql(server, "GetCoupons", {}))["coupons"]["edges"]]
    assert order.index(percent) < order.index(fixed) < order.index("launch-20")
    # GetCoupons asks for ACTIVE ones: an archived coupon leaves the list.
    assert raw.post(f"/api/v1/coupons/{percent}/archive").status_code == 200
    assert percent not in _coupons(server)


def test_coupon_refusals_name_the_field(server: Any, uid: Callable[[str], str]) -> None:
    def create(**fields: Any) -> tuple[str, str | None]:
        answer = gql(server, "CreateCoupon", {"input": {"refId": uid("bad"), "name": "Bad",
                                                        **fields}})
        assert answer["data"] is None
        return _refusal(answer)

    assert create(percentOff=10, amountsOff=[{"amount": 5, "currency": "USD"}]) == (
        "BadUserInput", "percentOff")
    assert create(amountsOff=[{"amount": -5, "currency": "USD"}]) == (
        "BadUserInput", "amountsOff[0].amount")
    assert create(percentOff=Decimal("12.5")) == ("BadUserInput", "percentOff")
    assert create(percentOff=101) == ("BadUserInput", "percentOff")
    assert create(percentOff=10, durationInMonths=Decimal("1.5")) == (
        "BadUserInput", "durationInMonths")
    assert create(type="FIXED", discountValue=5) == ("BadUserInput", "discountValue")
    assert create(percentOff=10, additionalMetaData={"n": 1}) == (
        "BadUserInput", "additionalMetaData")
    taken = gql(server, "CreateCoupon", {"input": {"refId": "launch-20", "name": "Again",
                                                   "percentOff": 5}})
    assert _refusal(taken) == ("DuplicatedEntityNotAllowed", "refId")
    # Nothing of a refused coupon was written.
    assert all(not ref.startswith("bad-") for ref in _coupons(server))


# -- promotional entitlements ------------------------------------------------------------------

def test_promotion_flips_the_entitlement_and_revoking_flips_it_back(
        server: Any, raw: httpx.Client, customer: str) -> None:
    assert _check(raw, customer, "sso")["isGranted"] is False
    granted = data(gql(server, "GrantPromotionalEntitlements", {"input": {
        "customerId": customer, "promotionalEntitlements": [
            {"featureId": "sso", "period": "ONE_MONTH"},
            {"featureId": "image-generations", "period": "LIFETIME", "usageLimit": 100.0,
             "resetPeriod": "MONTH",
             "monthlyResetPeriodConfiguration": {"accordingTo": "StartOfTheMonth"}}]}}))[
        "grantPromotionalEntitlements"]
    sso, images = granted
    assert (sso["featureId"], sso["status"], sso["isVisible"]) == ("sso", "Active", True)
    assert sso["endDate"] is not None and sso["feature"]["featureType"] == "BOOLEAN"
    assert sso["feature"]["refId"] == "sso"
    assert (images["usageLimit"], images["resetPeriod"], images["endDate"]) == (
        100, "MONTH", None)
    assert images["feature"]["meterType"] == "Incremental"
    assert _check(raw, customer, "sso")["isGranted"] is True
    checked = _check(raw, customer, "image-generations")
    assert (checked["isGranted"], checked["usageLimit"]) == (True, 100)
    # REST lists them with the mapped periods.
    listed = raw.get(f"/api/v1/customers/{customer}/promotional-entitlements").json()["data"]
    assert {p["featureId"]: p["period"] for p in listed} == {
        "sso": "1 month", "image-generations": "lifetime"}

    revoked = data(gql(server, "RevokePromotionalEntitlement", {"input": {
        "customerId": customer, "featureId": "sso"}}))["revokePromotionalEntitlement"]
    assert revoked["id"] == next(p["id"] for p in listed if p["featureId"] == "sso")
    assert _check(raw, customer, "sso")["isGranted"] is False
    again = gql(server, "RevokePromotionalEntitlement", {"input": {
        "customerId": customer, "featureId": "sso"}})
    assert _refusal(again) == ("PromotionalEntitlementNotFoundError", "featureId")


def test_promotion_refusals(server: Any, raw: httpx.Client, customer: str,
                            uid: Callable[[str], str]) -> None:
    def grant(customer_id: str, *items: dict[str, Any]) -> dict[str, Any]:
        return gql(server, "GrantPromotionalEntitlements", {"input": {
            "customerId": customer_id, "promotionalEntitlements": list(items)}})

    sso = {"featureId": "sso", "period": "LIFETIME"}
    assert _refusal(grant(uid("ghost"), sso)) == ("CustomerNotFound", "customerId")
    assert _refusal(grant(customer, sso, {"featureId": uid("nope"), "period": "ONE_WEEK"})) == (
        "FeatureNotFound", "promotionalEntitlements[1].featureId")
    assert _refusal(grant(customer, {"featureId": "image-generations", "period": "ONE_YEAR",
                                     "usageLimit": Decimal("2.5")})) == (
        "BadUserInput", "promotionalEntitlements[0].usageLimit")
    assert _refusal(grant(customer, {"featureId": "sso", "period": "CUSTOM"})) == (
        "BadUserInput", "promotionalEntitlements[0].customEndDate")
    assert _refusal(grant(customer, {"featureId": "sso", "period": "FOREVER"}))[0] == \
        "BadUserInput"  # not a PromotionalEntitlementPeriod
    # All or nothing: the valid first item of a refused batch was not granted.
    assert _check(raw, customer, "sso")["isGranted"] is False
    assert raw.get(f"/api/v1/customers/{customer}/promotional-entitlements").json()[
        "data"] == []
    assert _refusal(gql(server, "RevokePromotionalEntitlement", {"input": {
        "customerId": uid("ghost"), "featureId": "sso"}})) == ("CustomerNotFound",
                                                                "customerId")

