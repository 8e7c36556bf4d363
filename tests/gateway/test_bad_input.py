"""Malformed requests over raw HTTP: every one gets a 4xx JSON error that names the field
and the problem, nothing is half-applied, and nothing answers 500."""

from __future__ import annotations

import json

import httpx
import pytest


@pytest.fixture
def setup(raw, uid):
    currency, customer = uid("cur"), uid("cust")
    assert raw.post("/api/v1/credits/custom-currencies",
                    json={"id": currency, "displayName": "T"}).status_code == 200
    assert raw.post("/api/v1/customers", json={"id": customer}).status_code == 200
    r = raw.post("/api/v1/credits/grants", json={
        "customerId": customer, "currencyId": currency, "amount": 100, "displayName": "g",
        "grantType": "PAID"})
    assert r.status_code == 200, r.text
    return customer, currency


def consumption(customer: str, currency: str, **fields) -> dict:
    return {"customerId": customer, "currencyId": currency, "amount": 1,
            "idempotencyKey": "k-" + json.dumps(fields, sort_keys=True), **fields}


def assert_error(r, status: int, field: str | None, *, code: str | None = None) -> dict:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert body["statusCode"] == status and body["message"], body
    assert body.get("field") == field, body
    if code is not None:
        assert body["code"] == code, body
    return body


def test_consumption_bodies(raw, setup) -> None:
    customer, currency = setup
    base = consumption(customer, currency)
    cases = [
        ({**base, "amount": "ten"}, "amount"),
        ({**base, "amount": None}, "amount"),
        ({**base, "amount": 0}, "amount"),
        ({**base, "amount": -1}, "amount"),
        ({**base, "amount": 1e13}, "amount"),
        ({**base, "amount": True}, "amount"),
        ({k: v for k, v in base.items() if k != "amount"}, "amount"),
        ({k: v for k, v in base.items() if k != "idempotencyKey"}, "idempotencyKey"),
        ({**base, "idempotencyKey": ""}, "idempotencyKey"),
        ({**base, "idempotencyKey": "x" * 256}, "idempotencyKey"),
        ({**base, "surprise": 1}, "surprise"),
        ({**base, "createdAt": "yesterday"}, "createdAt"),
        ({**base, "dimensions": {"a": [1]}}, "dimensions"),
        ({**base, "customerId": 5}, "customerId"),
    ]
    for body, field in cases:
        assert_error(raw.post("/api/v1/credits/consumption", json=body), 400, field,
                     code="BadUserInput")
    # None of it touched the balance.
    r = raw.get("/api/v1/credits/balance", params={"customerId": customer})
    assert r.json()["data"]["balances"][0]["currentBalance"] == 100


def test_amounts_with_more_than_five_decimals_round_half_away_from_zero(raw, setup) -> None:
    customer, currency = setup
    r = raw.post("/api/v1/credits/consumption",
                 json=consumption(customer, currency, amount=0.000015))
    assert r.status_code == 200, r.text
    assert r.json()["data"]["amount"] == 0.00002


def test_not_json_and_wrong_shapes(raw, setup) -> None:
    customer, currency = setup
    for content in (b"{", b"[1, 2]", b"null", b'"text"', b"\xff\xfe"):
        r = raw.post("/api/v1/credits/consumption", content=content,
                     headers={"content-type": "application/json"})
        assert_error(r, 400, None, code="BadUserInput")
    assert_error(raw.post("/api/v1/credits/grants", json={}), 400, "amount")


def test_oversize_body_is_413(raw, setup) -> None:
    customer, currency = setup
    big = consumption(customer, currency, dimensions={"pad": "x" * 2_000_000})
    r = raw.post("/api/v1/credits/consumption", json=big)
    assert r.status_code == 413, r.text
    assert r.json()["code"] == "PayloadTooLarge"


def test_grant_enums_dates_and_types(raw, setup) -> None:
    customer, currency = setup
    base = {"customerId": customer, "currencyId": currency, "amount": 5, "displayName": "g",
            "grantType": "PAID"}
    cases = [
        ({**base, "grantType": "FREE"}, "grantType"),
        ({**base, "grantType": "OVERDRAFT"}, "grantType"),
        ({**base, "priority": "high"}, "priority"),
        ({**base, "priority": 1.5}, "priority"),
        ({**base, "priority": -1}, "priority"),
        ({**base, "effectiveAt": "2026-13-40"}, "effectiveAt"),
        ({**base, "expireAt": 12345}, "expireAt"),
        ({**base, "metadata": {"a": 1}}, "metadata"),
        ({**base, "cost": {"amount": -1, "currency": "usd"}}, "cost.amount"),
        ({**base, "cost": {"amount": 1}}, "cost.currency"),
        ({**base, "paymentCollectionMethod": "CASH"}, "paymentCollectionMethod"),
    ]
    for body, field in cases:
        assert_error(raw.post("/api/v1/credits/grants", json=body), 400, field)
    grants = raw.get("/api/v1/credits/grants", params={"customerId": customer}).json()["data"]
    assert len(grants) == 1, "a refused grant was created anyway"


def test_query_parameters(raw, setup) -> None:
    customer, currency = setup
    cases = [
        ("/api/v1/credits/grants", {"customerId": customer, "limit": "many"}, "limit"),
        ("/api/v1/credits/grants", {"customerId": customer, "limit": 0}, "limit"),
        ("/api/v1/credits/grants", {"customerId": customer, "limit": 101}, "limit"),
        ("/api/v1/credits/grants", {"customerId": customer, "after": "nonsense"}, "after"),
        ("/api/v1/credits/grants", {"customerId": customer, "createdAt[gte]": "soon"},
         "createdAt[gte]"),
        ("/api/v1/credits/grants", {}, "customerId"),
        ("/api/v1/credits/ledger", {"customerId": customer, "before": "x1"}, "before"),
        ("/api/v1/credits/ledger", {"customerId": customer, "eventType": "NOPE"}, "eventType"),
        ("/api/v1/customers", {"after": "x1"}, "after"),
        ("/api/v1/customers", {"createdAt[lt]": "never"}, "createdAt[lt]"),
        ("/api/v1/credits/custom-currencies", {"status": "DELETED"}, "status"),
        (f"/api/v1/customers/{customer}/entitlements/check",
         {"currencyId": currency, "reserveAmount": "lots", "reservationId": "r"},
         "reserveAmount"),
        (f"/api/v1/customers/{customer}/entitlements/check",
         {"currencyId": currency, "reserveAmount": 1, "reservationId": "r",
          "reservationTtlSeconds": 86401}, "reservationTtlSeconds"),
        (f"/api/v1/customers/{customer}/entitlements/check",
         {"currencyId": currency, "reserveAmount": 1, "reservationId": "r",
          "reservationExpiresAt": "2020-01-01T00:00:00Z"}, "reservationExpiresAt"),
        (f"/api/v1/customers/{customer}/entitlements/check",
         {"currencyId": currency, "reserveAmount": 1, "reservationId": "r",
          "reservationMetadata": "[1]"}, "reservationMetadata"),
        (f"/api/v1/customers/{customer}/entitlements/check",
         {"currencyId": currency, "featureId": "f"}, "featureId"),
        (f"/api/v1/customers/{customer}/entitlements/check", {}, "currencyId"),
        ("/api/v1/credits/auto-recharge", {"customerId": customer}, "currencyId"),
    ]
    for path, params, field in cases:
        assert_error(raw.get(path, params=params), 400, field)
    # No reservation was made by any of the refused checks.
    r = raw.get("/api/v1/credits/balance", params={"customerId": customer})
    assert r.json()["data"]["balances"][0]["reserved"] == 0


def test_every_list_refuses_a_bad_page_size_alike(raw, setup) -> None:
    """Every list takes its paging from one place (gateway/wire.PageQuery): a size out of
    1-100 or not a number is a 400 naming `limit`, on each of them; 1 is a page of one."""
    customer, _ = setup
    lists = [
        ("/api/v1/customers", {}), ("/api/v1/credits/custom-currencies", {}),
        ("/api/v1/credits/grants", {"customerId": customer}),
        ("/api/v1/credits/ledger", {"customerId": customer}),
        ("/api/v1/credits/usage", {"customerId": customer}),
        ("/api/v1/features", {}), ("/api/v1/coupons", {}), ("/api/v1/products", {}),
        ("/api/v1/plans", {}), ("/api/v1/addons", {}), ("/api/v1/subscriptions", {}),
        (f"/api/v1/customers/{customer}/promotional-entitlements", {}),
    ]
    for path, params in lists:
        for bad in (0, 101, "many"):
            assert_error(raw.get(path, params={**params, "limit": bad}), 400, "limit")
        r = raw.get(path, params={**params, "limit": 1})
        assert r.status_code == 200, (path, r.text)
        data = r.json()["data"]
        rows = data["series"] if isinstance(data, dict) else data  # credit usage: series
        assert len(rows) <= 1, path


def test_unknown_ids_are_404_with_the_contract_codes(raw, setup, uid) -> None:
    customer, currency = setup
    cases = [
        ("GET", f"/api/v1/customers/{uid('x')}", None, "CustomerNotFound"),
        ("POST", f"/api/v1/customers/{uid('x')}/archive", None, "CustomerNotFound"),
        ("PATCH", f"/api/v1/credits/custom-currencies/{uid('x')}", {"displayName": "n"},
         "CustomCurrencyNotFound"),
        ("POST", f"/api/v1/credits/grants/{uid('g')}/void", None, "CreditGrantNotFound"),
        ("POST", "/api/v1/credits/consumption", consumption(uid("x"), currency),
         "CustomerNotFound"),
        ("POST", "/api/v1/credits/consumption", consumption(customer, uid("x")),
         "CustomCurrencyNotFound"),
        ("POST", f"/api/v1/credits/reservations/{uid('r')}/release",
         {"consumedAmount": 1, "currencyId": currency, "customerId": customer},
         "CreditReservationNotFound"),
    ]
    for method, path, body, code in cases:
        r = raw.request(method, path, json=body)
        assert r.status_code == 404, (path, r.text)
        assert r.json()["code"] == code, (path, r.text)


def test_idempotency_key_header_on_grants(raw, setup) -> None:
    customer, currency = setup
    body = {"customerId": customer, "currencyId": currency, "amount": 5, "displayName": "top-up",
            "grantType": "PAID"}
    first = raw.post("/api/v1/credits/grants", json=body, headers={"Idempotency-Key": "topup-1"})
    again = raw.post("/api/v1/credits/grants", json=body, headers={"Idempotency-Key": "topup-1"})
    assert first.status_code == again.status_code == 200
    assert first.json() == again.json()
    other = raw.post("/api/v1/credits/grants", json={**body, "amount": 6},
                     headers={"Idempotency-Key": "topup-1"})
    assert_error(other, 409, "idempotencyKey", code="IdempotencyKeyReused")
    r = raw.get("/api/v1/credits/balance", params={"customerId": customer})
    assert r.json()["data"]["balances"][0]["currentBalance"] == 105


# The raw ASGI routes (gateway/routes/hot.py): the same answers as any Litestar route.
HOT_ROUTES = ("/api/v1/credits/consumption", "/api/v1/usage", "/api/v2/usage",
              "/api/v1/events")


@pytest.mark.parametrize("path", HOT_ROUTES)
def test_hot_routes_refuse_like_every_route(server, raw, setup, path) -> None:
    customer, _ = setup
    assert_error(raw.get(path), 405, None, code="MethodNotAllowed")
    with httpx.Client(base_url=server.url) as anonymous:
        for headers in ({}, {"X-API-KEY": "not-a-key"}):
            r = anonymous.post(path, json={"customerId": customer}, headers=headers)
            assert_error(r, 401, "X-API-KEY", code="Unauthenticated")
    r = raw.post(path, content=b"{" + b" " * 2_000_000 + b"}",
                 headers={"content-type": "application/json"})
    assert_error(r, 413, None, code="PayloadTooLarge")
    for content in (b"{", b"[1, 2]", b"null", b"\xff\xfe"):
        r = raw.post(path, content=content, headers={"content-type": "application/json"})
        assert_error(r, 400, None, code="BadUserInput")
    items = {"/api/v1/credits/consumption": None, "/api/v1/events": "events"}.get(
        path, "usages")
    if items is not None:
        assert_error(raw.post(path, json={items: [{"customerId": customer}]}), 400,
                     f"{items}[0].{'eventName' if items == 'events' else 'featureId'}")
    # Each is in the API's document with its body.
    operation = raw.get("/schema/openapi.json").json()["paths"][path]["post"]
    assert operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
