"""`PUT /api/v1/credits/pools`: a pool's soft or hard limit and its low-balance line, as
the balance, the feed's frames and consumption then see them."""

from __future__ import annotations

from typing import Any

import httpx
import pytest


@pytest.fixture
def pool(raw: httpx.Client, uid: Any) -> tuple[str, str]:
    currency, customer = uid("cur"), uid("cust")
    assert raw.post("/api/v1/credits/custom-currencies",
                    json={"id": currency, "displayName": currency}).status_code == 200
    assert raw.post("/api/v1/customers", json={"id": customer}).status_code in (200, 201)
    r = raw.post("/api/v1/credits/grants", json={
        "customerId": customer, "currencyId": currency, "amount": 100,
        "displayName": "g", "grantType": "PAID"})
    assert r.status_code == 200, r.text
    return customer, currency


def _consume(raw: httpx.Client, customer: str, currency: str, amount: Any,
             key: str) -> httpx.Response:
    return raw.post("/api/v1/credits/consumption", json={
        "customerId": customer, "currencyId": currency, "amount": amount,
        "idempotencyKey": key})


def _balance(raw: httpx.Client, customer: str, currency: str) -> dict[str, Any]:
    r = raw.get("/api/v1/credits/balance", params={"customerId": customer,
                                                    "currencyId": currency})
    assert r.status_code == 200, r.text
    (b,) = r.json()["data"]["balances"]
    return b


def test_a_soft_limit_lets_the_balance_go_negative_and_a_hard_one_stops_it(
        raw: httpx.Client, pool: tuple[str, str]) -> None:
    customer, currency = pool
    refused = _consume(raw, customer, currency, 150, "over-1")
    assert (refused.status_code, refused.json()["code"]) == (402, "InsufficientCredits")
    assert _balance(raw, customer, currency)["hardLimit"] is True

    r = raw.put("/api/v1/credits/pools", json={"customerId": customer,
                                               "currencyId": currency, "hardLimit": False})
    assert r.status_code == 200, r.text
    assert (r.json()["data"]["hardLimit"], r.json()["data"]["currentBalance"]) == (False, 100)
    assert _consume(raw, customer, currency, 150.5, "over-2").status_code == 200
    b = _balance(raw, customer, currency)
    assert (b["currentBalance"], b["hardLimit"]) == (-50.5, False)

    # Back to a hard limit: nothing more is consumed while the pool is overdrawn.
    r = raw.put("/api/v1/credits/pools", json={"customerId": customer,
                                               "currencyId": currency, "hardLimit": True})
    assert r.json()["data"]["hardLimit"] is True
    again = _consume(raw, customer, currency, 1, "over-3")
    assert again.status_code == 402
    assert _balance(raw, customer, currency)["currentBalance"] == -50.5


def test_the_low_balance_line_is_set_cleared_and_shown(raw: httpx.Client,
                                                       pool: tuple[str, str]) -> None:
    customer, currency = pool
    assert _balance(raw, customer, currency)["lowBalanceAt"] == 20  # 80 % of 100 used
    r = raw.put("/api/v1/credits/pools", json={
        "customerId": customer, "currencyId": currency, "lowBalanceThreshold": 42.5})
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert (data["lowBalanceThreshold"], data["lowBalanceAt"], data["usageLowPercent"]) == (
        42.5, 42.5, 80)
    assert _balance(raw, customer, currency)["lowBalanceAt"] == 42.5
    # Other settings left alone leave the line alone; null clears it.
    r = raw.put("/api/v1/credits/pools", json={
        "customerId": customer, "currencyId": currency, "usageLowPercent": 50})
    assert r.json()["data"]["lowBalanceAt"] == 42.5
    r = raw.put("/api/v1/credits/pools", json={
        "customerId": customer, "currencyId": currency, "lowBalanceThreshold": None})
    data = r.json()["data"]
    assert (data["lowBalanceThreshold"], data["lowBalanceAt"]) == (None, 50)


@pytest.mark.parametrize("body,field", [
    ({"usageLowPercent": 0}, "usageLowPercent"),
    ({"usageLowPercent": 101}, "usageLowPercent"),
    ({"usageLowPercent": 1.5}, "usageLowPercent"),
    ({"lowBalanceThreshold": -1}, "lowBalanceThreshold"),
    ({"lowBalanceThreshold": "lots"}, "lowBalanceThreshold"),
    ({"hardLimit": "no"}, "hardLimit"),
    ({"overdraft": True}, "overdraft"),
])
def test_bad_settings_are_refused_naming_the_field(raw: httpx.Client, pool: tuple[str, str],
                                                   body: dict[str, Any], field: str) -> None:
    customer, currency = pool
    r = raw.put("/api/v1/credits/pools", json={"customerId": customer,
                                               "currencyId": currency, **body})
    assert r.status_code == 400, r.text
    assert r.json()["field"] == field, r.text
    b = _balance(raw, customer, currency)
    assert (b["hardLimit"], b["lowBalanceAt"]) == (True, 20)  # nothing applied


def test_unknown_customer_or_currency(raw: httpx.Client, pool: tuple[str, str]) -> None:
    customer, currency = pool
    r = raw.put("/api/v1/credits/pools", json={"customerId": "nobody-x",
                                               "currencyId": currency, "hardLimit": False})
    assert (r.status_code, r.json()["code"]) == (404, "CustomerNotFound")
    r = raw.put("/api/v1/credits/pools", json={"customerId": customer,
                                               "currencyId": "no-such", "hardLimit": False})
    assert (r.status_code, r.json()["code"]) == (404, "CustomCurrencyNotFound")
