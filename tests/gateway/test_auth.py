"""Authentication, environments, liveness/readiness and the API description."""

from __future__ import annotations

import re

import pytest
import stigg


def test_health_ready_and_schema_need_no_key(server) -> None:
    with server.http(key=None) as http:
        assert http.get("/health").json() == {"status": "ok"}
        assert http.get("/ready").json() == {"status": "ready"}
        schema = http.get("/schema/openapi.json").json()
        assert "/api/v1/credits/grants" in schema["paths"]
        assert http.get("/schema/swagger").status_code == 200


def test_health_detail_needs_a_key_and_shows_the_counters_move(server, uid) -> None:
    with server.http(key=None) as anonymous:
        r = anonymous.get("/health", params={"detail": "true"})
        assert r.status_code == 401 and r.json()["field"] == "X-API-KEY"
    with server.http() as http:
        before = http.get("/health", params={"detail": "true"}).json()
        customer = uid("health")
        assert http.post("/api/v1/credits/custom-currencies",
                         json={"id": "health-tokens", "displayName": "T"}).status_code in (200, 409)
        assert http.post("/api/v1/customers", json={"id": customer}).status_code == 200
        assert http.post("/api/v1/credits/grants", json={
            "customerId": customer, "currencyId": "health-tokens", "amount": 10,
            "displayName": "g", "grantType": "PAID"}).status_code == 200
        after = http.get("/health", params={"detail": "true"}).json()
    assert after["status"] == "ok"
    runtime, store = after["runtime"], after["store"]
    assert runtime["memory_max_bytes"] == 256 * 1024 * 1024  # CREDITD_MEMORY_MB's default
    assert runtime["memory_bytes"] > 0 and runtime["commands"] > before["runtime"]["commands"]
    assert store["flushes"] > before["store"]["flushes"] and store["flush_s"] > 0
    # The garbage collector's collections and seconds per generation (gateway/app.py).
    gc_before, gc_after = before["gc"], after["gc"]
    assert len(gc_after["collections"]) == len(gc_after["seconds"]) == 3
    assert all(a >= b >= 0 for a, b in zip(gc_after["collections"], gc_before["collections"]))
    assert all(a >= b >= 0 for a, b in zip(gc_after["seconds"], gc_before["seconds"]))


@pytest.mark.parametrize("headers, status, field", [
    ({}, 401, "X-API-KEY"),
    ({"X-API-KEY": "not-a-key"}, 401, "X-API-KEY"),
    ({"X-API-KEY": ""}, 401, "X-API-KEY"),
])
def test_missing_or_wrong_key_is_401_json(server, headers, status, field) -> None:
    with server.http(key=None) as http:
        for method, path in (("GET", "/api/v1/customers"), ("POST", "/api/v1/credits/grants"),
                             ("GET", "/api/v1/credits/ledger")):
            r = http.request(method, path, headers=headers)
            assert r.status_code == status, (method, path, r.text)
            assert r.json()["statusCode"] == status
            assert r.json()["code"] == "Unauthenticated"
            assert r.json()["field"] == field


def test_the_official_client_raises_authentication_error(server) -> None:
    with server.stigg(key="wrong") as c, pytest.raises(stigg.AuthenticationError):
        c.v1.customers.list()


def test_environment_header_must_match_the_key(server, uid) -> None:
    with server.http() as http:
        r = http.get("/api/v1/customers", headers={"X-ENVIRONMENT-ID": "default"})
        assert r.status_code == 200
        r = http.get("/api/v1/customers", headers={"X-ENVIRONMENT-ID": "other"})
        assert r.status_code == 403
        assert r.json()["code"] == "Forbidden" and r.json()["field"] == "X-ENVIRONMENT-ID"
    with server.stigg() as c, pytest.raises(stigg.PermissionDeniedError):
        c.v1.customers.list(x_environment_id="other")


def test_a_key_never_sees_another_environments_data(server, uid) -> None:
    customer, currency = uid("cust"), uid("cur")
    with server.stigg() as mine, server.stigg(key=server.other_key) as theirs:
        mine.v1.credits.custom_currencies.create(id=currency, display_name="Tokens")
        mine.v1.customers.provision(id=customer)
        grant = mine.v1.credits.grants.create(customer_id=customer, currency_id=currency,
                                              amount=10, display_name="g", grant_type="PAID")
        # The other environment sees none of it, by id or in lists...
        with pytest.raises(stigg.NotFoundError):
            theirs.v1.customers.retrieve(customer)
        assert customer not in [c.id for c in theirs.v1.customers.list()]
        assert currency not in [c.id for c in theirs.v1.credits.custom_currencies.list()]
        with pytest.raises(stigg.NotFoundError):
            theirs.v1.credits.grants.list(customer_id=customer)
        with pytest.raises(stigg.NotFoundError):
            theirs.v1.credits.grants.void(grant.data.id)
        with pytest.raises(stigg.NotFoundError):
            theirs.v1.credits.consumption.consume(customer_id=customer, currency_id=currency,
                                                  amount=1, idempotency_key=uid("k"))
        # ...and the same ids are free to use there, as separate records.
        theirs.v1.credits.custom_currencies.create(id=currency, display_name="Theirs")
        theirs.v1.customers.provision(id=customer, name="Theirs")
        theirs.v1.credits.grants.create(customer_id=customer, currency_id=currency, amount=3,
                                        display_name="g", grant_type="PAID")
        with server.http(key=server.other_key) as http:
            balance = http.get("/api/v1/credits/balance", params={"customerId": customer}).json()
        assert [b["currentBalance"] for b in balance["data"]["balances"]] == [3]
        assert mine.v1.customers.retrieve(customer).data.name is None
        # The grant voided in `default` is untouched by the other environment's attempt.
        assert [g.status for g in mine.v1.credits.grants.list(customer_id=customer)] == ["ACTIVE"]


def test_a_key_is_generated_once_when_none_is_configured(make_server) -> None:
    first = make_server(api_keys=None).start()
    line = first.wait_for_line("generated an API key")
    key = re.search(r"'default': (\S+)", line).group(1)
    with first.http(key=key) as http:
        assert http.get("/api/v1/customers").status_code == 200
    first.stop()
    # Restarted on the same database: the stored (hashed) key still works and no new key
    # is printed.
    second = make_server(first.database_url, api_keys=None).start()
    with second.http(key=key) as http:
        assert http.get("/api/v1/customers").status_code == 200
    second.stop()
    assert not any("generated an API key" in line for line in second.lines)
    assert all(key not in line for line in second.lines)


def test_configured_keys_are_the_whole_set(make_server) -> None:
    """A key taken out of CREDITD_API_KEYS stops working at the next start, and so does a
    key generated before keys were configured."""
    first = make_server(api_keys=None).start()
    generated = re.search(r"'default': (\S+)", first.wait_for_line("generated an API key")
                          ).group(1)
    first.stop()
    second = make_server(first.database_url, api_keys="key-a-0123456789,other:key-b-0123456789"
                         ).start()
    with second.http(key=generated) as http:
        assert http.get("/api/v1/customers").status_code == 401
    for key in ("key-a-0123456789", "key-b-0123456789"):
        with second.http(key=key) as http:
            assert http.get("/api/v1/customers").status_code == 200
    second.stop()
    third = make_server(first.database_url, api_keys="other:key-b-0123456789").start()
    with third.http(key="key-a-0123456789") as http:
        assert http.get("/api/v1/customers").status_code == 401
    with third.http(key="key-b-0123456789") as http:
        assert http.get("/api/v1/customers").status_code == 200
    third.stop()
    assert not any("generated an API key" in line for line in third.lines)


def test_every_response_carries_its_request_id(server) -> None:
    """X-Request-ID ties a response to the server's log lines: the caller's own id when it
    sends a sane one, else a fresh one; on errors too."""
    with server.http() as http:
        mine = http.get("/api/v1/customers", headers={"X-Request-ID": "req-7f3a"})
        assert mine.status_code == 200 and mine.headers["x-request-id"] == "req-7f3a"
        fresh = http.get("/api/v1/customers")
        assert re.fullmatch(r"[0-9a-f]{32}", fresh.headers["x-request-id"])
        other = http.get("/api/v1/customers")
        assert other.headers["x-request-id"] != fresh.headers["x-request-id"]
        too_long = http.get("/api/v1/customers", headers={"X-Request-ID": "x" * 200})
        assert re.fullmatch(r"[0-9a-f]{32}", too_long.headers["x-request-id"])
    with server.http(key=None) as http:
        refused = http.get("/api/v1/customers", headers={"X-Request-ID": "req-401"})
        assert refused.status_code == 401 and refused.headers["x-request-id"] == "req-401"


def test_gc_statistics_count_and_time_each_collection() -> None:
    """What /health?detail=true shows under `gc`: every collection, by generation."""
    import gc

    from gateway import app

    gc.callbacks.append(app._gc_timer)
    try:
        before = app.gc_statistics()
        gc.collect()  # a full collection: generation 2
        after = app.gc_statistics()
    finally:
        gc.callbacks.remove(app._gc_timer)
    assert after["collections"][2] == before["collections"][2] + 1
    assert after["seconds"][2] >= before["seconds"][2]
