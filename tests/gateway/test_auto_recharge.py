"""Auto-recharge over HTTP: a real creditd process (SQLite and PostgreSQL), the currency's
`topUp` extension, `GET/PUT /api/v1/credits/auto-recharge`, recharges paid by the payment
providers selected with CREDITD_RECHARGE_PROVIDER, webhooks to a real local receiver, and
restarts in the middle of a payment.

Recharges are paid in the background, so a test waits for their outcome: on the webhook
receiver (a condition variable) where it has one, else by asking the API again with a
deadline (`eventually`). The restart tests read the `recharge_charges` table of the
server's database directly (SQLite read-only, or PostgreSQL).
"""

from __future__ import annotations

import importlib.util
import json
import signal
import sqlite3
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import httpx
import pytest
from standardwebhooks import Webhook

from engine.core.recharge import GRANT_ID_PREFIX, grant_id_for

TESTS = Path(__file__).resolve().parents[1]


def _load(name: str, path: Path) -> Any:
    """A helper module by path (the test directories are not packages). The gateway
    conftest is loaded under the name tests/webhooks/servers.py uses, so both share it."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


_servers = _load("creditd_gateway_conftest", TESTS / "gateway" / "conftest.py")
Server = _servers.Server
fresh_pg_url = _servers.fresh_pg_url
Receiver = _load("creditd_webhooks_receiver", TESTS / "webhooks" / "receiver.py").Receiver

# Webhooks to 127.0.0.1 allowed, retried within milliseconds; recharge retries fast too.
ENV = {
    "CREDITD_WEBHOOKS_ALLOW_PRIVATE": "true",
    "CREDITD_WEBHOOKS_RETRY_BASE_MS": "20",
    "CREDITD_WEBHOOKS_RETRY_CAP_MS": "200",
    "CREDITD_WEBHOOKS_ATTEMPTS_MAX": "60",
    "CREDITD_WEBHOOKS_TIMEOUT_MS": "2000",
    "CREDITD_RECHARGE_RETRY_BASE_S": "0.05",
}
RECHARGE_TYPES = [
    "credits.auto_recharge.attempted",
    "credits.auto_recharge.succeeded",
    "credits.auto_recharge.failed",
    "credits.auto_recharge.limit_exceeded",
    "credits.auto_recharge.spend_alert",
    "credits.auto_recharge.configuration_changed",
]
AR = "/api/v1/credits/auto-recharge"
CURRENCIES = "/api/v1/credits/custom-currencies"
ENDPOINTS = "/api/v1/webhooks/endpoints"


# ---------------------------------------------------------------------------------------
# Servers


def _database(kind: str, tmp: Path) -> tuple[str, Callable[[], None] | None]:
    if kind == "sqlite":
        return f"sqlite:///{tmp / 'creditd.db'}", None
    return fresh_pg_url()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """This module's shared server (it overrides conftest's: webhooks to 127.0.0.1)."""
    url, drop = _database(request.param, tmp_path_factory.mktemp("creditd"))
    s = Server(url, api_keys=Server.key, env=ENV).start()
    try:
        yield s
    finally:
        if s.proc is not None:
            s.stop()
        if drop is not None:
            drop()


@pytest.fixture(scope="module")
def decline_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A server whose payment provider declines every charge (SQLite)."""
    url = f"sqlite:///{tmp_path_factory.mktemp('decline') / 'creditd.db'}"
    s = Server(url, api_keys=Server.key,
               env={**ENV, "CREDITD_RECHARGE_PROVIDER": "decline"}).start()
    try:
        yield s
    finally:
        if s.proc is not None:
            s.stop()


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """Start servers of a test's own; they are stopped (and PostgreSQL databases dropped)
    afterwards."""
    made: list[tuple[Any, Callable[[], None] | None]] = []

    def make(kind: str = "sqlite", **env: str) -> Any:
        directory = tmp_path / str(len(made))
        directory.mkdir()
        url, drop = _database(kind, directory)
        s = Server(url, api_keys=Server.key, env={**ENV, **env})
        made.append((s, drop))
        return s

    yield make
    for s, drop in made:
        if s.proc is not None:
            s.stop()
        if drop is not None:
            drop()


@pytest.fixture
def hooks(server: Any) -> Iterator[tuple[Receiver, dict]]:
    """A receiver with an endpoint for the auto-recharge events on `server` (deleted after
    the test, so later events of the module do not go to a receiver that is gone)."""
    with Receiver() as receiver, server.http() as http:
        endpoint = http.post(ENDPOINTS, json={"url": receiver.url,
                                              "eventTypes": RECHARGE_TYPES})
        assert endpoint.status_code == 200, endpoint.text
        try:
            yield receiver, endpoint.json()["data"]
        finally:
            http.delete(f"{ENDPOINTS}/{endpoint.json()['data']['id']}")


# ---------------------------------------------------------------------------------------
# Helpers


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def data(r: httpx.Response, status: int = 200) -> Any:
    """The response's `data`, with exact decimals."""
    assert r.status_code == status, r.text
    return json.loads(r.text, parse_float=Decimal)["data"]


def refused(r: httpx.Response, status: int, field: str | None) -> dict:
    body = json.loads(r.text)
    assert (r.status_code, body.get("field")) == (status, field), r.text
    return body


def eventually(probe: Callable[[], Any], timeout: float = 30.0) -> Any:
    """Ask `probe()` again (an HTTP round trip or a database read, then a short pause)
    until it returns something true; the deadline turns a hang into a failure."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result:
            return result
        assert time.monotonic() < deadline, "the server did not reach the expected state"
        time.sleep(0.05)


def setup(http: httpx.Client, price: str | None = "0.01", **top_up: Any) -> tuple[str, str]:
    """A fresh customer and a currency with a top-up price (None: without one)."""
    customer, currency = uid("cust"), uid("tokens")
    body: dict[str, Any] = {"id": currency, "displayName": "Tokens"}
    if price is not None:
        # A float's repr is its shortest decimal, and the server reads JSON numbers as
        # decimals: 0.01 arrives as exactly 0.01.
        body["topUp"] = {"pricePerCredit": float(price), **top_up}
    assert http.post(CURRENCIES, json=body).status_code == 200
    assert http.post("/api/v1/customers", json={"id": customer}).status_code == 200
    return customer, currency


def grant(http: httpx.Client, customer: str, currency: str, amount: Any) -> dict:
    return data(http.post("/api/v1/credits/grants", json={
        "customerId": customer, "currencyId": currency, "amount": amount,
        "displayName": "g", "grantType": "PROMOTIONAL"}))


def consume(http: httpx.Client, customer: str, currency: str, amount: Any) -> dict:
    return data(http.post("/api/v1/credits/consumption", json={
        "customerId": customer, "currencyId": currency, "amount": amount,
        "idempotencyKey": uuid.uuid4().hex}))


def save(http: httpx.Client, customer: str, currency: str, **fields: Any) -> httpx.Response:
    body = {"customerId": customer, "currencyId": currency, "isEnabled": True,
            "thresholdType": "CREDIT_AMOUNT", "thresholdValue": 20, "targetBalance": 150,
            **fields}
    return http.put(AR, json={k: v for k, v in body.items() if v is not ...})


def settings_of(http: httpx.Client, customer: str, currency: str) -> dict:
    return data(http.get(AR, params={"customerId": customer, "currencyId": currency}))


def balance_of(http: httpx.Client, customer: str, currency: str) -> Decimal:
    [b] = data(http.get("/api/v1/credits/balance",
                        params={"customerId": customer, "currencyId": currency}))["balances"]
    return b["currentBalance"]


def grants_of(http: httpx.Client, customer: str, currency: str) -> dict[str, dict]:
    found = data(http.get("/api/v1/credits/grants", params={
        "customerId": customer, "currencyId": currency, "limit": 100}))
    return {g["id"]: g for g in found}


def settled(http: httpx.Client, customer: str, currency: str) -> dict | None:
    """The settings once no recharge is in flight and one has started, else None."""
    s = settings_of(http, customer, currency)
    started = any(g.startswith(GRANT_ID_PREFIX) for g in grants_of(http, customer, currency))
    return s if s["inFlight"] is None and started else None


def rid(customer: str, currency: str, n: int = 1) -> str:
    """The engine's id for the customer's n-th recharge of `currency` (environment
    `default`): also the payment's idempotency key."""
    return grant_id_for(f"default/{customer}", currency, None, n)


def db_rows(url: str, query: str, *args: Any) -> list[tuple]:
    """Rows from the server's database (SQLite opened read-only); `?` placeholders."""
    if url.startswith("sqlite:///"):
        con = sqlite3.connect(f"file:{url[len('sqlite:///'):]}?mode=ro", uri=True, timeout=30)
        try:
            return [tuple(r) for r in con.execute(query, args).fetchall()]
        finally:
            con.close()
    parts = query.split("?")
    numbered = parts[0] + "".join(f"${i}{p}" for i, p in enumerate(parts[1:], 1))

    async def fetch() -> list[tuple]:
        conn = await asyncpg.connect(url, timeout=10)
        try:
            return [tuple(r) for r in await conn.fetch(numbered, *args)]
        finally:
            await conn.close()

    return anyio.run(fetch, backend="asyncio")


def charges(server: Any, customer: str) -> list[tuple]:
    return db_rows(server.database_url,
                   "SELECT idempotency_key, credits, amount, amount_currency FROM "
                   "recharge_charges WHERE customer_id = ? ORDER BY idempotency_key",
                   f"default/{customer}")


def outbox_count(server: Any, customer: str, type_: str) -> int:
    [(n,)] = db_rows(server.database_url,
                     "SELECT count(*) FROM outbox WHERE customer_id = ? AND type = ?",
                     f"default/{customer}", type_)
    return int(n)


# ---------------------------------------------------------------------------------------
# The currency's top-up price


def find_currency(http: httpx.Client, currency: str) -> dict:
    after = None
    while True:
        params: dict[str, Any] = {"limit": 100}
        if after:
            params["after"] = after
        r = http.get(CURRENCIES, params=params)
        page = data(r)
        for c in page:
            if c["id"] == currency:
                return c
        after = r.json()["pagination"]["next"]
        assert after, f"currency {currency} not listed"


def test_currency_top_up_round_trip(raw) -> None:
    cid = uid("cur")
    created = data(raw.post(CURRENCIES, json={
        "id": cid, "displayName": "Tokens", "topUp": {
            "pricePerCredit": 0.00125, "priceCurrency": "EUR", "minimumPurchase": 5,
            "maximumPurchase": 1000.5}}))
    expected = {"pricePerCredit": Decimal("0.00125"), "priceCurrency": "eur",
                "minimumPurchase": 5, "maximumPurchase": Decimal("1000.5")}
    assert created["topUp"] == expected
    assert find_currency(raw, cid)["topUp"] == expected

    # PATCH without topUp leaves it; a new topUp replaces it whole; null removes it.
    renamed = data(raw.patch(f"{CURRENCIES}/{cid}", json={"displayName": "Credits"}))
    assert renamed["topUp"] == expected
    replaced = data(raw.patch(f"{CURRENCIES}/{cid}", json={"topUp": {"pricePerCredit": 2}}))
    assert replaced["topUp"] == {"pricePerCredit": 2, "priceCurrency": "usd",
                                 "minimumPurchase": None, "maximumPurchase": None}
    assert find_currency(raw, cid)["topUp"] == replaced["topUp"]
    assert data(raw.patch(f"{CURRENCIES}/{cid}", json={"topUp": None}))["topUp"] is None
    assert find_currency(raw, cid)["topUp"] is None

    plain = data(raw.post(CURRENCIES, json={"id": uid("cur"), "displayName": "x"}))
    assert plain["topUp"] is None


@pytest.mark.parametrize("top_up, field", [
    ({"pricePerCredit": -1}, "topUp.pricePerCredit"),
    ({"pricePerCredit": 0}, "topUp.pricePerCredit"),
    ({"pricePerCredit": 0.000001}, "topUp.pricePerCredit"),  # rounds to 0
    ({}, "topUp.pricePerCredit"),
    ({"pricePerCredit": 1, "minimumPurchase": 10, "maximumPurchase": 9},
     "topUp.minimumPurchase"),
    ({"pricePerCredit": 1, "minimumPurchase": -3}, "topUp.minimumPurchase"),
    ({"pricePerCredit": 1, "maximumPurchase": 0}, "topUp.maximumPurchase"),
    ({"pricePerCredit": 1, "priceCurrency": "dollars"}, "topUp.priceCurrency"),
    ({"pricePerCredit": 1, "discount": 5}, "topUp.discount"),
])
def test_currency_top_up_validation(raw, top_up, field) -> None:
    cid = uid("cur")
    refused(raw.post(CURRENCIES, json={"id": cid, "displayName": "x", "topUp": top_up}),
            400, field)
    assert data(raw.post(CURRENCIES, json={"id": cid, "displayName": "x"}))["topUp"] is None
    refused(raw.patch(f"{CURRENCIES}/{cid}", json={"topUp": top_up}), 400, field)
    assert find_currency(raw, cid)["topUp"] is None  # nothing was saved


# ---------------------------------------------------------------------------------------
# Settings: GET / PUT


def test_get_returns_the_disabled_defaults_when_nothing_is_saved(raw, client) -> None:
    customer, currency = setup(raw)
    got = settings_of(raw, customer, currency)
    expected = {
        "id": None, "customerId": customer, "currencyId": currency, "resourceId": None,
        "isEnabled": False, "thresholdType": "CREDIT_AMOUNT", "thresholdValue": 0,
        "targetBalance": 0, "maxSpendLimit": None, "grantExpirationPeriod": "1_MONTH",
        "currentMonthlySpend": 0, "createdAt": None, "updatedAt": None, "inFlight": None,
        "lastFailure": None, "topUpPrice": None}
    assert {k: got.get(k, "absent") for k in expected} == expected
    # Reading creates nothing: the customer still has no balance for the currency.
    assert data(raw.get("/api/v1/credits/balance", params={"customerId": customer}))[
        "balances"] == []

    official = client.v1.credits.get_auto_recharge(customer_id=customer,
                                                   currency_id=currency).data
    assert (official.id, official.is_enabled, official.customer_id, official.currency_id,
            official.threshold_type, official.threshold_value, official.target_balance,
            official.max_spend_limit, official.grant_expiration_period) == (
        None, False, customer, currency, "CREDIT_AMOUNT", 0, 0, None, "1_MONTH")


def test_get_refuses_what_it_cannot_find(raw) -> None:
    customer, currency = setup(raw)
    refused(raw.get(AR, params={"currencyId": currency}), 400, "customerId")
    refused(raw.get(AR, params={"customerId": customer}), 400, "currencyId")
    assert refused(raw.get(AR, params={"customerId": uid("nobody"), "currencyId": currency}),
                   404, "customerId")["code"] == "CustomerNotFound"
    assert refused(raw.get(AR, params={"customerId": customer, "currencyId": uid("no")}),
                   404, "currencyId")["code"] == "CustomCurrencyNotFound"


def test_put_validation(raw) -> None:
    customer, currency = setup(raw)
    _, bare = setup(raw, price=None)
    cases = [
        (save(raw, customer, currency, targetBalance=20), 400, "targetBalance"),
        (save(raw, customer, currency, targetBalance=19.99999), 400, "targetBalance"),
        # $2 worth at $0.01 a credit is 200 credits: not above a $2 threshold.
        (save(raw, customer, currency, thresholdType="DOLLAR_AMOUNT", thresholdValue=2,
              targetBalance=200), 400, "targetBalance"),
        (save(raw, customer, bare), 400, "currencyId"),
        (save(raw, uid("nobody"), currency), 404, "customerId"),
        (save(raw, customer, uid("nothing")), 404, "currencyId"),
        (save(raw, customer, currency, thresholdValue=...), 400, "thresholdValue"),
        (save(raw, customer, currency, targetBalance=...), 400, "targetBalance"),
        (save(raw, customer, currency, thresholdValue=0), 400, "thresholdValue"),
        (save(raw, customer, currency, thresholdValue=-5), 400, "thresholdValue"),
        (save(raw, customer, currency, maxSpendLimit=-1), 400, "maxSpendLimit"),
        (save(raw, customer, currency, maxSpendLimit=0), 400, "maxSpendLimit"),
        (save(raw, customer, currency, thresholdType="PERCENT"), 400, "thresholdType"),
        (save(raw, customer, currency, grantExpirationPeriod="1_WEEK"), 400,
         "grantExpirationPeriod"),
        (save(raw, customer, currency, isEnabled="yes"), 400, "isEnabled"),
        (save(raw, customer, currency, surprise=1), 400, "surprise"),
        (save(raw, customer, currency, environmentId="other"), 400, "environmentId"),
    ]
    for r, status, field in cases:
        refused(r, status, field)
    # Nothing was saved by any of them.
    assert settings_of(raw, customer, currency)["id"] is None


def test_put_then_get_round_trip_and_disabling_keeps_the_configuration(raw, client) -> None:
    customer, currency = setup(raw, price="0.25")
    grant(raw, customer, currency, 1000)
    saved = data(save(raw, customer, currency, thresholdType="DOLLAR_AMOUNT",
                      thresholdValue=12.5, targetBalance=400, maxSpendLimit=99.99,
                      grantExpirationPeriod="1_YEAR"))
    assert saved["id"] and saved["id"].startswith("arc_")
    expected = {
        "id": saved["id"], "customerId": customer, "currencyId": currency, "resourceId": None,
        "isEnabled": True, "thresholdType": "DOLLAR_AMOUNT",
        "thresholdValue": Decimal("12.5"), "targetBalance": 400,
        "maxSpendLimit": Decimal("99.99"), "grantExpirationPeriod": "1_YEAR",
        "currentMonthlySpend": 0, "inFlight": None, "lastFailure": None,
        "topUpPrice": {"amount": Decimal("0.25"), "currency": "usd"}}
    assert {k: saved[k] for k in expected} == expected
    assert saved["createdAt"] and saved["updatedAt"]
    got = settings_of(raw, customer, currency)
    assert got == saved
    official = client.v1.credits.get_auto_recharge(customer_id=customer,
                                                   currency_id=currency).data
    assert (official.id, official.is_enabled, official.threshold_type,
            official.threshold_value, official.target_balance, official.max_spend_limit,
            official.grant_expiration_period) == (
        saved["id"], True, "DOLLAR_AMOUNT", 12.5, 400, 99.99, "1_YEAR")

    disabled = data(save(raw, customer, currency, isEnabled=False,
                         thresholdType="DOLLAR_AMOUNT", thresholdValue=12.5,
                         targetBalance=400, maxSpendLimit=99.99, grantExpirationPeriod="1_YEAR"))
    assert disabled["isEnabled"] is False
    assert {k: disabled[k] for k in expected if k != "isEnabled"} == {
        k: v for k, v in expected.items() if k != "isEnabled"}
    assert disabled["createdAt"] == saved["createdAt"]
    assert settings_of(raw, customer, currency) == disabled
    # Disabled: a consumption far below the threshold starts nothing.
    consume(raw, customer, currency, 990)
    assert settings_of(raw, customer, currency)["inFlight"] is None
    assert not any(g.startswith(GRANT_ID_PREFIX) for g in grants_of(raw, customer, currency))

    # The settings of a resource's pool are their own.
    other = settings_of(raw, customer, currency) | {}
    scoped = data(save(raw, customer, currency, resourceId="r-1", thresholdValue=1,
                       targetBalance=2))
    assert scoped["resourceId"] == "r-1" and scoped["id"] != saved["id"]
    assert settings_of(raw, customer, currency) == other
    assert data(raw.get(AR, params={"customerId": customer, "currencyId": currency,
                                    "resourceId": "r-1"}))["targetBalance"] == 2


# ---------------------------------------------------------------------------------------
# Recharges end to end (the default "record" provider)


def test_a_consumption_below_the_threshold_recharges_to_the_target(server, raw) -> None:
    customer, currency = setup(raw, price="0.01")
    grant(raw, customer, currency, 100)
    data(save(raw, customer, currency, thresholdValue=20, targetBalance=150))
    consume(raw, customer, currency, 84.5)  # balance 15.5: wants 134.5 credits, $1.345
    got = eventually(lambda: settled(raw, customer, currency))
    assert got["currentMonthlySpend"] == Decimal("1.345")
    assert got["isEnabled"] is True and got["lastFailure"] is None
    assert balance_of(raw, customer, currency) == 150

    g = grants_of(raw, customer, currency)[rid(customer, currency)]
    assert (g["status"], g["grantType"], g["amount"]) == ("ACTIVE", "PAID", Decimal("134.5"))
    assert g["cost"] == {"amount": Decimal("1.345"), "currency": "usd"}
    assert g["metadata"] == {"autoRecharge": "true", "capped": "false"}
    ledger = data(raw.get("/api/v1/credits/ledger", params={"customerId": customer,
                                                             "currencyId": currency}))
    granted = [e for e in ledger if e["creditGrantId"] == rid(customer, currency)]
    assert [(e["eventType"], e["amount"]) for e in granted] == [
        ("CREDITS_GRANTED", Decimal("134.5"))]
    assert charges(server, customer) == [(rid(customer, currency), 13_450_000, 134_500, "usd")]


def test_a_cap_buys_part_then_the_limit_is_reported(server, raw, hooks) -> None:
    receiver, _ = hooks
    customer, currency = setup(raw, price="0.1")
    grant(raw, customer, currency, 100)
    data(save(raw, customer, currency, thresholdValue=10, targetBalance=100, maxSpendLimit=5))
    consume(raw, customer, currency, 95)  # wants 95 credits; $5 buys 50
    got = eventually(lambda: settled(raw, customer, currency))
    assert got["currentMonthlySpend"] == 5
    assert balance_of(raw, customer, currency) == 55
    g = grants_of(raw, customer, currency)[rid(customer, currency)]
    assert (g["amount"], g["metadata"]["capped"]) == (50, "true")

    consume(raw, customer, currency, 50)  # balance 5, and the cap is spent

    def mine(type_: str) -> Callable[[list], list]:
        return lambda rs: [r for r in rs if r.json["type"] == type_
                           and r.json["data"]["customerId"] == customer]

    receiver.wait_for(lambda rs: mine("credits.auto_recharge.limit_exceeded")(rs))
    [limit] = mine("credits.auto_recharge.limit_exceeded")(receiver.received)
    details = json.loads(limit.body, parse_float=Decimal)["data"]["details"]
    assert (details["maxSpendLimit"], details["currentMonthlySpend"], details["wanted"]) == (
        5, 5, 95)
    consume(raw, customer, currency, 1)  # once a month: no second limit event
    assert settings_of(raw, customer, currency)["inFlight"] is None
    assert balance_of(raw, customer, currency) == 4
    assert charges(server, customer) == [(rid(customer, currency), 5_000_000, 500_000, "usd")]
    assert outbox_count(server, customer, "credits.auto_recharge.limit_exceeded") == 1
    assert outbox_count(server, customer, "credits.auto_recharge.attempted") == 1


def test_the_price_and_purchase_bounds_are_those_saved_with_the_settings(server, raw) -> None:
    customer, currency = setup(raw, price="0.01", maximumPurchase=50)
    grant(raw, customer, currency, 100)
    saved = data(save(raw, customer, currency, thresholdValue=20, targetBalance=150))
    assert saved["topUpPrice"] == {"amount": Decimal("0.01"), "currency": "usd"}
    data(raw.patch(f"{CURRENCIES}/{currency}", json={"topUp": {"pricePerCredit": 0.02}}))
    assert settings_of(raw, customer, currency)["topUpPrice"]["amount"] == Decimal("0.01")
    consume(raw, customer, currency, 90)  # wants 140; the maximum purchase then was 50
    got = eventually(lambda: settled(raw, customer, currency))
    assert got["currentMonthlySpend"] == Decimal("0.5")  # 50 credits at the saved $0.01
    assert balance_of(raw, customer, currency) == 60

    resaved = data(save(raw, customer, currency, thresholdValue=20, targetBalance=150))
    assert resaved["topUpPrice"]["amount"] == Decimal("0.02")
    consume(raw, customer, currency, 45)  # 15 left: 135 credits, no maximum any more
    eventually(lambda: settings_of(raw, customer, currency)["currentMonthlySpend"] == Decimal(
        "3.2"))  # $0.50 + 135 x $0.02
    assert balance_of(raw, customer, currency) == 150
    assert charges(server, customer) == [(rid(customer, currency), 5_000_000, 50_000, "usd"),
                                         (rid(customer, currency, 2), 13_500_000, 270_000, "usd")]


def test_concurrent_consumptions_over_http_start_one_recharge(server) -> None:
    with server.http() as http:
        customer, currency = setup(http, price="0.01")
        grant(http, customer, currency, 1_000)
        data(save(http, customer, currency, thresholdValue=500, targetBalance=2_000))
    requests = 120

    def one(i: int) -> int:
        with server.http() as http:
            return http.post("/api/v1/credits/consumption", json={
                "customerId": customer, "currencyId": currency, "amount": 7,
                "idempotencyKey": f"k{i}"}).status_code

    with ThreadPoolExecutor(max_workers=12) as pool:
        assert set(pool.map(one, range(requests))) == {200}
    with server.http() as http:
        eventually(lambda: settled(http, customer, currency))
        assert outbox_count(server, customer, "credits.auto_recharge.attempted") == 1
        assert outbox_count(server, customer, "credits.auto_recharge.succeeded") == 1
        [(key, credits, _, _)] = charges(server, customer)
        assert key == rid(customer, currency)
        # It started at the first balance below 500 and bought up to 2,000 from there.
        assert 2_000 * 10**5 - 500 * 10**5 < credits <= 2_000 * 10**5 - 493 * 10**5
        assert balance_of(http, customer, currency) == (
            1_000 - 7 * requests + Decimal(credits) / 10**5)


def test_settings_whose_recharge_cannot_be_stored_are_refused_not_a_500(raw) -> None:
    customer, currency = setup(raw, price="1000000")  # $1,000,000 a credit (allowed)
    grant(raw, customer, currency, 100)
    put = save(raw, customer, currency, thresholdValue=50, targetBalance=10**9)
    if put.status_code == 400:
        return  # refused up front: fine
    assert put.status_code == 200, put.text
    r = raw.post("/api/v1/credits/consumption", json={
        "customerId": customer, "currencyId": currency, "amount": 60,
        "idempotencyKey": uuid.uuid4().hex})
    assert r.status_code == 200, r.text


def test_every_customers_recharge_is_recorded(server, raw) -> None:
    currency = uid("tokens")
    assert raw.post(CURRENCIES, json={"id": currency, "displayName": "T",
                                      "topUp": {"pricePerCredit": 1}}).status_code == 200
    customers = [uid("cust"), uid("cust")]
    for customer in customers:
        assert raw.post("/api/v1/customers", json={"id": customer}).status_code == 200
        grant(raw, customer, currency, 100)
        data(save(raw, customer, currency, thresholdValue=20, targetBalance=150))
        consume(raw, customer, currency, 90)
    for customer in customers:
        eventually(lambda c=customer: settled(raw, c, currency))
        assert balance_of(raw, customer, currency) == 150  # credits for both ...
    for customer in customers:  # ... so a charge for both
        assert charges(server, customer) == [(rid(customer, currency), 14_000_000, 14_000_000, "usd")]


# ---------------------------------------------------------------------------------------
# Webhooks


def test_every_auto_recharge_event_reaches_a_real_receiver(server, decline_server) -> None:
    with Receiver() as receiver, server.http() as http, decline_server.http() as declining:
        secrets = {}
        created = []
        for s, client in ((server, http), (decline_server, declining)):
            r = client.post(ENDPOINTS, json={"url": receiver.url, "eventTypes": RECHARGE_TYPES})
            endpoint = data(r)
            created.append((client, endpoint["id"]))
            secrets[s.url] = endpoint["secret"]
        try:
            customer, currency = setup(http, price="1")
            # Empty pool: saving starts a 9-credit ($9) recharge at once: 80 and 90 %.
            data(save(http, customer, currency, thresholdValue=1, targetBalance=9,
                      maxSpendLimit=10))
            eventually(lambda: settled(http, customer, currency))
            consume(http, customer, currency, 8.5)  # wants 8.5; the cap buys 1: 100 %
            eventually(lambda: settings_of(http, customer, currency)[
                "currentMonthlySpend"] == 10)
            consume(http, customer, currency, 1)  # 0.5 left: the limit

            loser, its_currency = setup(declining, price="1")
            data(save(declining, loser, its_currency, thresholdValue=1, targetBalance=9))

            def arrived(rs: list) -> bool:
                seen = {(r.json["data"]["customerId"], r.json["type"]) for r in rs}
                return ({(customer, t) for t in RECHARGE_TYPES if not t.endswith("failed")}
                        <= seen and (loser, "credits.auto_recharge.failed") in seen)

            receiver.wait_for(arrived)
            receiver.wait_for(lambda rs: len([r for r in rs if r.json["type"].endswith(
                "spend_alert")]) >= 3)
        finally:
            for client, endpoint_id in created:
                client.delete(f"{ENDPOINTS}/{endpoint_id}")

        bodies: dict[str, list[dict]] = {}
        for r in receiver.delivered():
            sender = next(url for url, secret in secrets.items()
                          if _verifies(secret, r))  # signed by the server that sent it
            assert sender
            body = json.loads(r.body, parse_float=Decimal)
            bodies.setdefault(body["data"]["customerId"], []).append(body)
        mine = sorted({b["id"]: b for b in bodies[customer]}.values(),
                      key=lambda b: b["data"]["sequence"])
        kinds = [b["type"].removeprefix("credits.auto_recharge.") for b in mine]
        assert kinds.count("configuration_changed") == 1
        assert kinds.count("attempted") == 2 and kinds.count("succeeded") == 2
        assert kinds.count("limit_exceeded") == 1
        alerts = [b["data"]["details"]["percent"] for b in mine if b["type"].endswith("alert")]
        assert alerts == [80, 90, 100]

        first, second = [b for b in mine if b["type"].endswith("attempted")]
        assert first["data"]["details"]["rechargeId"] == rid(customer, currency)
        assert first["data"]["grant"]["status"] == "PAYMENT_PENDING"
        assert (first["data"]["amount"], first["data"]["details"]["capped"]) == (9, False)
        assert (second["data"]["amount"], second["data"]["details"]["capped"]) == (1, True)
        for done in (b for b in mine if b["type"].endswith("succeeded")):
            assert done["data"]["grant"]["status"] == "ACTIVE"
            assert done["data"]["details"]["rechargeId"] in (rid(customer, currency),
                                                             rid(customer, currency, 2))
        [limit] = [b for b in mine if b["type"].endswith("limit_exceeded")]
        assert limit["data"]["details"]["currentMonthlySpend"] == 10

        [failed] = [b for b in bodies[loser] if b["type"].endswith("failed")]
        assert failed["data"]["details"]["reason"] == "the card was declined"
        assert failed["data"]["grant"]["status"] == "VOIDED"
        assert failed["data"]["details"]["rechargeId"] == rid(loser, its_currency)


def _verifies(secret: str, r: Any) -> bool:
    try:
        Webhook(secret).verify(r.body, r.headers)
    except Exception:  # noqa: BLE001 - the other server's secret
        return False
    return True


# ---------------------------------------------------------------------------------------
# Failure: the "decline" provider


def test_a_declined_recharge_gives_no_credits_and_disables_until_reenabled(
        decline_server) -> None:
    with decline_server.http() as http:
        customer, currency = setup(http, price="0.01")
        grant(http, customer, currency, 100)
        data(save(http, customer, currency, maxSpendLimit=10, grantExpirationPeriod="1_YEAR"))
        consume(http, customer, currency, 85)
        def failed() -> dict | None:
            got = settings_of(http, customer, currency)
            return got if got["lastFailure"] else None

        got = eventually(failed)
        assert (got["isEnabled"], got["lastFailure"], got["inFlight"]) == (
            False, "the card was declined", None)
        assert (got["thresholdValue"], got["targetBalance"], got["maxSpendLimit"],
                got["grantExpirationPeriod"], got["currentMonthlySpend"]) == (
            20, 150, 10, "1_YEAR", 0)
        assert balance_of(http, customer, currency) == 15
        assert grants_of(http, customer, currency)[rid(customer, currency)]["status"] == "VOIDED"
        assert charges(decline_server, customer) == []
        consume(http, customer, currency, 10)  # disabled: nothing more starts
        assert rid(customer, currency, 2) not in grants_of(http, customer, currency)

        grant(http, customer, currency, 100)  # balance 105: above the threshold
        again = data(save(http, customer, currency, maxSpendLimit=10))
        assert (again["isEnabled"], again["lastFailure"]) == (True, None)
        assert settings_of(http, customer, currency)["lastFailure"] is None


# ---------------------------------------------------------------------------------------
# Restarts


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_restart_during_a_recharge_does_not_charge_twice(servers, kind) -> None:
    s = servers(kind, CREDITD_RECHARGE_PROVIDER="charge-then-hang",
                CREDITD_RECHARGE_TIMEOUT_S="3600").start()
    with s.http() as http:
        customer, currency = setup(http, price="0.01")
        grant(http, customer, currency, 100)
        data(save(http, customer, currency, thresholdValue=20, targetBalance=150))
        consume(http, customer, currency, 85)
        # The provider has charged (the row exists) and will never answer.
        eventually(lambda: charges(s, customer))
        stuck = settings_of(http, customer, currency)
        assert stuck["inFlight"] == {"grantId": rid(customer, currency), "cost": Decimal("1.35")}
        assert balance_of(http, customer, currency) == 15
    s.stop(signal.SIGKILL)

    s.extra_env["CREDITD_RECHARGE_PROVIDER"] = "record"
    s.start()
    with s.http() as http:
        got = eventually(lambda: settled(http, customer, currency))
        assert balance_of(http, customer, currency) == 150
        assert got["currentMonthlySpend"] == Decimal("1.35") and got["isEnabled"] is True
        ledger = data(http.get("/api/v1/credits/ledger", params={"customerId": customer}))
        assert [e["eventType"] for e in ledger if e["creditGrantId"] == rid(customer, currency)] == [
            "CREDITS_GRANTED"]
    assert charges(s, customer) == [(rid(customer, currency), 13_500_000, 135_000, "usd")]
    assert outbox_count(s, customer, "credits.auto_recharge.attempted") == 1
    assert outbox_count(s, customer, "credits.auto_recharge.succeeded") == 1


def test_an_operator_can_void_each_customers_stuck_recharge(servers) -> None:
    s = servers(CREDITD_RECHARGE_PROVIDER="hang", CREDITD_RECHARGE_TIMEOUT_S="3600").start()
    with s.http() as http:
        currency = uid("tokens")
        assert http.post(CURRENCIES, json={"id": currency, "displayName": "T",
                                           "topUp": {"pricePerCredit": 1}}).status_code == 200
        customers = [uid("cust"), uid("cust")]
        for customer in customers:
            assert http.post("/api/v1/customers", json={"id": customer}).status_code == 200
            data(save(http, customer, currency, thresholdValue=1, targetBalance=5))
            in_flight = settings_of(http, customer, currency)["inFlight"]
            assert in_flight["grantId"] == rid(customer, currency)
        for customer in customers:  # each customer's stuck recharge has an id of its own
            r = http.post(f"/api/v1/credits/grants/{rid(customer, currency)}/void")
            assert r.status_code == 200, r.text
        for customer in customers:
            got = settings_of(http, customer, currency)
            assert got["inFlight"] is None and got["lastFailure"] == "voided by an operator"
