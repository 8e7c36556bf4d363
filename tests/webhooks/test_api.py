"""Webhooks end to end: a creditd process (SQLite and PostgreSQL), the endpoint API over
HTTP, events made through the credits API, and a real local receiver. The server runs a
retry schedule of milliseconds (conftest.FAST_RETRIES) so that outages can be waited out;
the production schedule is tested with a manual clock in test_delivery.py."""

from __future__ import annotations

import random
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from receiver import RESET, Receiver
from servers import Server
from standardwebhooks import Webhook

from webhooks import EVENT_TYPES

BASE = "/api/v1/webhooks/endpoints"


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def http(webhook_server: Server) -> Iterator[httpx.Client]:
    with webhook_server.http() as client:
        yield client


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


@pytest.fixture
def endpoints(http: httpx.Client) -> Iterator[list[str]]:
    """Endpoint ids a test created; deleted afterwards, so later tests' events (the module
    shares one server) do not go to a receiver that is gone."""
    created: list[str] = []
    yield created
    for endpoint_id in created:
        http.delete(f"{BASE}/{endpoint_id}")


def create(http: httpx.Client, endpoints: list[str], url: str, **fields: Any) -> dict:
    r = http.post(BASE, json={"url": url, **fields})
    assert r.status_code == 200, r.text
    endpoints.append(r.json()["data"]["id"])
    return r.json()["data"]


def setup_customers(http: httpx.Client, *customers: str) -> str:
    currency = uid("tokens")
    assert http.post("/api/v1/credits/custom-currencies",
                     json={"id": currency, "displayName": "Tokens"}).status_code == 200
    for customer in customers:
        assert http.post("/api/v1/customers", json={"id": customer}).status_code == 200
    return currency


def grant(http: httpx.Client, customer: str, currency: str, amount: float, **fields: Any) -> dict:
    r = http.post("/api/v1/credits/grants", json={
        "customerId": customer, "currencyId": currency, "amount": amount,
        "displayName": "g", "grantType": "PAID", **fields})
    assert r.status_code == 200, r.text
    return r.json()["data"]


def consume(http: httpx.Client, customer: str, currency: str, amount: float) -> None:
    r = http.post("/api/v1/credits/consumption", json={
        "customerId": customer, "currencyId": currency, "amount": amount,
        "idempotencyKey": uuid.uuid4().hex})
    assert r.status_code == 200, r.text


def deliveries(http: httpx.Client, endpoint_id: str, **params: Any) -> list[dict]:
    r = http.get(f"{BASE}/{endpoint_id}/deliveries", params={"limit": 100, **params})
    assert r.status_code == 200, r.text
    return r.json()["data"]


def eventually(probe, timeout: float = 10.0):
    """Ask `probe()` again until it returns something true, for state the server records
    just after the receiver has answered (an attempt's outcome). Each probe is an HTTP
    round trip; the deadline turns a hang into a failure."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result or time.monotonic() > deadline:
            assert result, "the server did not reach the expected state in time"
            return result


def all_delivered(http: httpx.Client, endpoint_id: str) -> list[dict] | None:
    found = deliveries(http, endpoint_id)
    return found if {d["status"] for d in found} == {"DELIVERED"} else None


def disabled(http: httpx.Client, endpoint_id: str) -> dict | None:
    endpoint = http.get(f"{BASE}/{endpoint_id}").json()["data"]
    return None if endpoint["enabled"] else endpoint


def first_arrivals(received: list, customer: str) -> list[int]:
    """The sequence numbers of one customer's events in the order they were first
    acknowledged (a retry after a lost answer may repeat one)."""
    seen: list[int] = []
    for r in received:
        body = r.json
        if body["data"]["customerId"] == customer and body["data"]["sequence"] not in seen:
            seen.append(body["data"]["sequence"])
    return seen


# -- endpoint management ------------------------------------------------------------------


def test_endpoint_lifecycle(http, endpoints, receiver) -> None:
    created = create(http, endpoints, receiver.url, eventTypes=["credits.granted"],
                     description="finance")
    assert created["secret"].startswith("whsec_")
    assert (created["eventTypes"], created["enabled"], created["description"]) == (
        ["credits.granted"], True, "finance")
    endpoint_id = created["id"]

    got = http.get(f"{BASE}/{endpoint_id}").json()["data"]
    assert "secret" not in got and got["pendingDeliveries"] == 0
    assert any(e["id"] == endpoint_id for e in http.get(BASE).json()["data"])

    patched = http.patch(f"{BASE}/{endpoint_id}", json={
        "eventTypes": [], "enabled": False, "description": None}).json()["data"]
    assert (patched["eventTypes"], patched["enabled"], patched["disabledReason"],
            patched["description"]) == ([], False, "MANUAL", None)

    rotated = http.post(f"{BASE}/{endpoint_id}/rotate-secret", json={}).json()["data"]
    assert rotated["secret"] != created["secret"] and rotated["previousSecretExpiresAt"]

    # Another environment does not see it.
    with httpx.Client(base_url=http.base_url, headers={"X-API-KEY": Server.other_key}) as other:
        r = other.get(f"{BASE}/{endpoint_id}")
        assert (r.status_code, r.json()["code"]) == (404, "WebhookEndpointNotFound")

    assert http.delete(f"{BASE}/{endpoint_id}").json()["data"] == {"id": endpoint_id,
                                                                    "deleted": True}
    assert http.get(f"{BASE}/{endpoint_id}").status_code == 404


def test_endpoint_list_pages_in_creation_order(http, endpoints, receiver) -> None:
    with httpx.Client(base_url=http.base_url, headers={"X-API-KEY": Server.other_key}) as other:
        ids = [create(other, endpoints, receiver.url)["id"] for _ in range(3)]
        first = other.get(BASE, params={"limit": 2}).json()
        assert [e["id"] for e in first["data"]] == ids[:2]
        second = other.get(BASE, params={"limit": 2, "after": first["pagination"]["next"]}).json()
        assert [e["id"] for e in second["data"]] == ids[2:]
        back = other.get(BASE, params={"limit": 2, "before": second["pagination"]["prev"]}).json()
        assert [e["id"] for e in back["data"]] == ids[:2]
        for endpoint_id in ids:
            other.delete(f"{BASE}/{endpoint_id}")
    endpoints.clear()


@pytest.mark.parametrize("body, field", [
    ({}, "url"),
    ({"url": "ftp://example.com/x"}, "url"),
    ({"url": "http://user:pw@127.0.0.1/x"}, "url"),
    ({"url": "not a url"}, "url"),
    ({"url": "http://127.0.0.1/x", "eventTypes": ["credits.granted", "nope"]}, "eventTypes[1]"),
    ({"url": "http://127.0.0.1/x", "secret": "whsec_short"}, "secret"),
    ({"url": "http://127.0.0.1/x", "secret": "nope"}, "secret"),
    ({"url": "http://127.0.0.1/x", "enabled": "yes"}, "enabled"),
    ({"url": "http://127.0.0.1/x", "colour": "red"}, "colour"),
    ({"url": "http://127.0.0.1/x", "description": "d" * 1001}, "description"),
])
def test_bad_endpoints_are_refused_naming_the_field(http, body, field) -> None:
    r = http.post(BASE, json=body)
    assert r.status_code == 400, r.text
    assert (r.json()["code"], r.json()["field"]) == ("BadUserInput", field)


def test_bad_inspection_and_replay_requests_are_refused(http, endpoints, receiver) -> None:
    endpoint_id = create(http, endpoints, receiver.url)["id"]
    cases = [
        (http.get(f"{BASE}/{endpoint_id}/deliveries", params={"status": "LOST"}), 400, "status"),
        (http.get(f"{BASE}/{endpoint_id}/deliveries", params={"after": "x"}), 400, "after"),
        (http.get(f"{BASE}/{endpoint_id}/deliveries/123456789"), 404, "deliveryId"),
        (http.get(f"{BASE}/{endpoint_id}/deliveries/nope"), 404, "deliveryId"),
        (http.post(f"{BASE}/{endpoint_id}/replay", json={}), 400, "since"),
        (http.post(f"{BASE}/{endpoint_id}/replay", json={"since": "yesterday"}), 400, "since"),
        (http.post(f"{BASE}/{endpoint_id}/replay",
                   json={"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"}),
         400, "until"),
        (http.post(f"{BASE}/we_missing/replay", json={"since": "2026-01-01T00:00:00Z"}),
         404, "endpointId"),
        (http.patch(f"{BASE}/{endpoint_id}", json={"eventTypes": ["x"]}), 400, "eventTypes[0]"),
    ]
    for r, status, field in cases:
        assert (r.status_code, r.json().get("field")) == (status, field), r.text


def test_private_addresses_are_refused_unless_the_operator_allows_them(tmp_path) -> None:
    server = Server(f"sqlite:///{tmp_path / 'creditd.db'}", api_keys=Server.key).start()
    try:
        with server.http() as http:
            for url, why in [("http://127.0.0.1:9/x", "loopback"),
                             ("http://localhost:9/x", "loopback"),
                             ("http://10.1.2.3/x", "private"),
                             ("http://192.168.0.10/x", "private"),
                             ("http://169.254.169.254/latest/meta-data", "link-local"),
                             ("http://[::1]/x", "loopback"),
                             ("http://[::ffff:127.0.0.1]/x", "loopback")]:
                r = http.post(BASE, json={"url": url})
                assert (r.status_code, r.json()["field"]) == (400, "url"), r.text
                assert why in r.json()["message"]
                assert "CREDITD_WEBHOOKS_ALLOW_PRIVATE" in r.json()["message"]
    finally:
        server.stop()


# -- delivery -----------------------------------------------------------------------------


def test_every_event_type_reaches_a_real_receiver_with_a_verifiable_signature(
        http, endpoints, receiver) -> None:
    customer = uid("acme")
    currency = setup_customers(http, customer)
    endpoint = create(http, endpoints, receiver.url)
    grant(http, customer, currency, 100)
    consume(http, customer, currency, 85)  # grant and balance usage_low
    consume(http, customer, currency, 15)  # grant and balance depleted
    soon = datetime.now(timezone.utc) + timedelta(seconds=1)
    grant(http, customer, currency, 10, expireAt=soon.isoformat())
    voided = grant(http, customer, currency, 5)
    assert http.post(f"/api/v1/credits/grants/{voided['id']}/void").status_code == 200

    # Auto-recharge events have their own delivery test (tests/gateway/test_auto_recharge.py).
    credit_types = {t for t in EVENT_TYPES if not t.startswith("credits.auto_recharge.")}
    receiver.wait_for(lambda rs: {r.json["type"] for r in rs} >= credit_types)
    verifier = Webhook(endpoint["secret"])
    for r in receiver.delivered():
        body = verifier.verify(r.body, r.headers)
        assert r.id == body["id"] and body["data"]["customerId"] == customer
        assert r.headers["content-type"] == "application/json"
    assert first_arrivals(receiver.delivered(), customer) == sorted(
        first_arrivals(receiver.delivered(), customer))


def test_a_receiver_failing_half_the_time_ends_with_every_event_delivered(
        http, endpoints, receiver) -> None:
    coin = random.Random(5)
    lock = threading.Lock()

    def answer(r) -> int:
        with lock:
            return 200 if coin.random() < 0.5 else 500

    receiver.answer = answer
    customers = [uid("c") for _ in range(3)]
    currency = setup_customers(http, *customers)
    endpoint_id = create(http, endpoints, receiver.url, eventTypes=["credits.granted"])["id"]
    for i in range(30):
        grant(http, customers[i % 3], currency, 1)
    receiver.wait_for(lambda rs: len({r.id for r in rs if r.status == 200}) == 30, timeout=60)
    assert sum(r.status == 500 for r in receiver.received) > 5
    for customer in customers:
        assert first_arrivals(receiver.delivered(), customer) == list(range(1, 11))
    eventually(lambda: all_delivered(http, endpoint_id))


def test_a_receiver_down_for_a_while_and_a_restart_mid_retry_lose_nothing(
        webhook_server, http, endpoints, receiver) -> None:
    receiver.answer = lambda r: RESET
    customers = [uid("c") for _ in range(2)]
    currency = setup_customers(http, *customers)
    endpoint_id = create(http, endpoints, receiver.url, eventTypes=["credits.granted"])["id"]
    for i in range(10):
        grant(http, customers[i % 2], currency, 1)
    # Down: connections are reset. Wait until each lane's head has been tried a few times.
    receiver.wait_for(lambda rs: len(rs) >= 8)

    webhook_server.stop(signal.SIGKILL)  # mid-retry, without a chance to tidy up
    tried = len(receiver.received)
    webhook_server.start()
    receiver.wait_for(lambda rs: len(rs) >= tried + 4)  # retrying again after the restart

    receiver.answer = lambda r: 200
    receiver.wait_for(lambda rs: len({r.id for r in rs if r.status == 200}) == 10, timeout=60)
    for customer in customers:
        assert first_arrivals(receiver.delivered(), customer) == [1, 2, 3, 4, 5]
    with webhook_server.http() as again:
        found = eventually(lambda: all_delivered(again, endpoint_id))
        heads = [d for d in found if d["attempts"] > 1]
        for d in heads:
            detail = again.get(f"{BASE}/{endpoint_id}/deliveries/{d['id']}").json()["data"]
            # One schedule across the restart: attempt numbers go on, never back to 1.
            assert [a["attempt"] for a in detail["attemptsList"]] == list(
                range(1, d["attempts"] + 1))
            assert detail["attemptsList"][-1]["statusCode"] == 200
            assert "closed the connection" in detail["attemptsList"][0]["error"]


def test_410_disables_the_endpoint_until_it_is_enabled_again(http, endpoints, receiver) -> None:
    receiver.answer = lambda r: 410
    customer = uid("c")
    currency = setup_customers(http, customer)
    endpoint_id = create(http, endpoints, receiver.url)["id"]
    grant(http, customer, currency, 1)
    receiver.wait_for(lambda rs: len(rs) == 1)
    # The attempt is recorded just after the receiver has answered.
    got = eventually(lambda: disabled(http, endpoint_id))
    assert (got["enabled"], got["disabledReason"]) == (False, "GONE")

    receiver.answer = lambda r: 200
    r = http.patch(f"{BASE}/{endpoint_id}", json={"enabled": True})
    assert (r.json()["data"]["enabled"], r.json()["data"]["disabledReason"]) == (True, None)
    receiver.wait_for(lambda rs: len(rs) == 2)
    assert receiver.received[1].id == receiver.received[0].id


def test_an_endpoint_gets_only_the_event_types_it_asked_for(http, endpoints, receiver) -> None:
    customer = uid("c")
    currency = setup_customers(http, customer)
    create(http, endpoints, receiver.url, eventTypes=["credits.balance.depleted"])
    grant(http, customer, currency, 2)
    consume(http, customer, currency, 2)
    receiver.wait_for(lambda rs: len(rs) >= 1)
    grant(http, customer, currency, 1)
    consume(http, customer, currency, 1)
    receiver.wait_for(lambda rs: len(rs) >= 2)
    assert [r.json["type"] for r in receiver.received] == ["credits.balance.depleted"] * 2


def test_deliveries_and_attempts_can_be_inspected_and_replayed(http, endpoints, receiver) -> None:
    fail_first = {"left": 1}

    def answer(r) -> int:
        if fail_first["left"]:
            fail_first["left"] -= 1
            return 500
        return 200

    receiver.answer = answer
    customer = uid("c")
    currency = setup_customers(http, customer)
    started = datetime.now(timezone.utc)  # this environment's events from here on are ours
    endpoint_id = create(http, endpoints, receiver.url)["id"]
    for _ in range(3):
        grant(http, customer, currency, 1)
    receiver.wait_for(lambda rs: len({r.id for r in rs if r.status == 200}) == 3)
    receiver.wait_for(lambda rs: len(rs) == 4)

    found = eventually(lambda: all_delivered(http, endpoint_id))
    assert [d["eventType"] for d in found] == ["credits.granted"] * 3
    assert [int(d["id"]) for d in found] == sorted((int(d["id"]) for d in found), reverse=True)
    oldest = found[-1]
    assert (oldest["attempts"], oldest["lastStatusCode"]) == (2, 200)
    detail = http.get(f"{BASE}/{endpoint_id}/deliveries/{oldest['id']}").json()["data"]
    assert [(a["attempt"], a["statusCode"]) for a in detail["attemptsList"]] == [(1, 500),
                                                                                (2, 200)]
    assert detail["attemptsList"][0]["response"] == "ok"
    assert detail["payload"]["id"] == detail["eventId"]

    page = http.get(f"{BASE}/{endpoint_id}/deliveries", params={"limit": 2}).json()
    assert [d["id"] for d in page["data"]] == [d["id"] for d in found[:2]]
    rest = http.get(f"{BASE}/{endpoint_id}/deliveries",
                    params={"limit": 2, "after": page["pagination"]["next"]}).json()
    assert [d["id"] for d in rest["data"]] == [found[2]["id"]]
    assert rest["pagination"]["next"] is None
    attempts = http.get(f"{BASE}/{endpoint_id}/attempts").json()["data"]
    assert len(attempts) == 4 and attempts[-1]["statusCode"] == 500
    assert deliveries(http, endpoint_id, status="DEAD") == []

    replayed = http.post(f"{BASE}/{endpoint_id}/deliveries/{oldest['id']}/replay").json()["data"]
    assert (replayed["replayOf"], replayed["eventId"]) == (oldest["id"], oldest["eventId"])
    receiver.wait_for(lambda rs: len(rs) == 5)
    assert receiver.received[-1].id == oldest["eventId"]
    eventually(lambda: all_delivered(http, endpoint_id))  # else replay skips the pending one

    r = http.post(f"{BASE}/{endpoint_id}/replay", json={"since": started.isoformat()})
    assert r.status_code == 200, r.text
    assert r.json()["data"]["queued"] == 3
    receiver.wait_for(lambda rs: len(rs) == 8)
    assert [r.id for r in receiver.received[5:]] == [d["eventId"] for d in reversed(found)]
