"""Reads with a customer token (the widgets and the portal): exactly the balances, grants,
ledger, usage series, auto-recharge settings and currency definitions of the token's own
customer (and resource); every other call still needs an API key; nothing a token can do
moves money. Plus the usage series' `granularity` the chart's buckets use."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.portal.access import TOKEN_READS, RateLimiter
from tests.gateway.conftest import CLOCK_START, Server

SERVER_ENV = {"CREDITD_CLOCK": f"manual:{CLOCK_START}"}


def _token(raw: httpx.Client, customer: str, **body: Any) -> str:
    r = raw.post(f"/api/v1/customers/{customer}/tokens", json=body)
    assert r.status_code == 201, r.text
    return r.json()["data"]["token"]


def _bearer(server: Server, token: str) -> httpx.Client:
    return httpx.Client(base_url=server.url, timeout=30,
                        headers={"Authorization": f"Bearer {token}"})


@pytest.fixture(scope="module")
def world(server: Server) -> dict[str, Any]:
    """Two customers with a currency, grants and consumptions each."""
    with server.http() as raw:
        assert raw.post("/api/v1/credits/custom-currencies", json={
            "id": "tok", "displayName": "Tokens",
            "units": {"singular": "token", "plural": "tokens"}}).status_code == 200
        for c in ("cust-a", "cust-b"):
            assert raw.post("/api/v1/customers", json={"id": c}).status_code in (200, 201)
            for resource in (None, "ws-1"):
                r = raw.post("/api/v1/credits/grants", json={
                    "customerId": c, "currencyId": "tok", "amount": 100,
                    "displayName": "Welcome", "grantType": "PROMOTIONAL",
                    **({"resourceId": resource} if resource else {})})
                assert r.status_code == 200, r.text
        r = raw.post("/api/v1/credits/consumption", json={
            "customerId": "cust-a", "currencyId": "tok", "amount": 2.5,
            "idempotencyKey": "k-a-1"})
        assert r.status_code == 200, r.text
        return {"a_token": _token(raw, "cust-a"),
                "a_ws_token": _token(raw, "cust-a", resourceId="ws-1")}


SCOPED_READS = [
    "/api/v1/credits/balance?customerId={c}",
    "/api/v1/credits/grants?customerId={c}",
    "/api/v1/credits/ledger?customerId={c}",
    "/api/v1/credits/usage?customerId={c}&currencyId=tok",
    "/api/v1/credits/usage/dimensions?customerId={c}",
    "/api/v1/credits/auto-recharge?customerId={c}&currencyId=tok",
]


def test_a_token_does_not_read_the_operators_comment(server: Server,
                                                    world: dict[str, Any]) -> None:
    with server.http() as raw:
        assert raw.post("/api/v1/customers", json={"id": "cust-c"}).status_code in (200, 201)
        for comment in ("goodwill after the outage, do not repeat", None):
            r = raw.post("/api/v1/credits/grants", json={
                "customerId": "cust-c", "currencyId": "tok", "amount": 1, "grantType": "PAID",
                "displayName": "Bonus", "comment": comment})
            assert r.status_code == 200, r.text
        by_key = raw.get("/api/v1/credits/grants?customerId=cust-c").json()["data"]
        with _bearer(server, _token(raw, "cust-c")) as tok:
            by_token = tok.get("/api/v1/credits/grants?customerId=cust-c").json()["data"]
    assert sorted(g["comment"] or "" for g in by_key)[-1].startswith("goodwill")
    assert [g | {"comment": None} for g in by_key] == by_token


@pytest.mark.parametrize("path", SCOPED_READS)
def test_a_token_reads_what_the_api_key_reads_for_its_customer(
        server: Server, world: dict[str, Any], path: str) -> None:
    with server.http() as raw, _bearer(server, world["a_token"]) as tok:
        by_key = raw.get(path.format(c="cust-a"))
        by_token = tok.get(path.format(c="cust-a"))
        assert by_token.status_code == by_key.status_code == 200, by_token.text
        assert by_token.json() == by_key.json()  # (the world's grants carry no comment)
        # Another customer's id in the same call reads nothing of theirs.
        other = tok.get(path.format(c="cust-b"))
        assert other.status_code == 403, other.text
        assert other.json()["field"] == "customerId"
        assert "cust-b" not in other.text.replace(path.format(c="cust-b"), "")


def test_the_customer_must_be_named_once(server: Server, world: dict[str, Any]) -> None:
    with _bearer(server, world["a_token"]) as tok:
        missing = tok.get("/api/v1/credits/balance")
        assert (missing.status_code, missing.json()["field"]) == (400, "customerId")
        twice = tok.get("/api/v1/credits/balance?customerId=cust-a&customerId=cust-b")
        assert (twice.status_code, twice.json()["field"]) == (400, "customerId")


def test_a_resource_token_reads_its_resource_only(server: Server,
                                                   world: dict[str, Any]) -> None:
    with _bearer(server, world["a_ws_token"]) as tok:
        r = tok.get("/api/v1/credits/balance?customerId=cust-a&resourceId=ws-1")
        assert r.status_code == 200, r.text
        assert [b["resourceId"] for b in r.json()["data"]["balances"]] == ["ws-1"]
        # The pool's low line (what credits.balance.usage_low means: 20 % of 100 left),
        # for the balance widget's warning.
        assert r.json()["data"]["balances"][0]["lowBalanceAt"] == 20
        for query in ("", "&resourceId=ws-2"):
            refused = tok.get(f"/api/v1/credits/grants?customerId=cust-a{query}")
            assert refused.status_code == 403, refused.text
            assert refused.json()["field"] == "resourceId"


def test_the_session_exchange_names_what_the_token_grants(
        server: Server, world: dict[str, Any]) -> None:
    with _bearer(server, world["a_ws_token"]) as tok:
        r = tok.get("/api/v1/portal/session")
        assert r.status_code == 200, r.text
        data = r.json()["data"]
        assert (data["customerId"], data["resourceId"]) == ("cust-a", "ws-1")
        assert data["expiresAt"].endswith("Z")
    with server.http() as raw:  # an API key is not a customer token
        assert raw.get("/api/v1/portal/session").status_code == 401


def _api_calls(server: Server) -> list[tuple[str, str]]:
    """Every (method, path) the OpenAPI document lists, path parameters filled in."""
    with server.http() as raw:
        doc = raw.get("/schema/openapi.json").json()
    calls = []
    for path, item in doc["paths"].items():
        concrete = path
        while "{" in concrete:
            head, _, rest = concrete.partition("{")
            concrete = head + "cust-a" + rest.partition("}")[2]
        calls += [(method.upper(), concrete) for method in item
                  if method in ("get", "post", "put", "patch", "delete")]
    return calls


def test_every_other_call_needs_an_api_key(server: Server, world: dict[str, Any]) -> None:
    """Nothing a token can do moves money: every route the API documents, but the reads
    above, refuses a token (401) and applies nothing."""
    calls = _api_calls(server)
    assert ("POST", "/api/v1/credits/consumption") in calls
    assert ("POST", "/api/v1/credits/grants") in calls
    with server.http() as raw:
        before = raw.get("/api/v1/credits/ledger?customerId=cust-a&limit=100").json()["data"]
    body = {"customerId": "cust-a", "currencyId": "tok", "amount": 1, "idempotencyKey": "x",
            "grantType": "PAID", "displayName": "x"}
    refused = 0
    with _bearer(server, world["a_token"]) as tok:
        for method, path in calls:
            if method == "GET" and path in TOKEN_READS:
                continue
            query = "?customerId=cust-a&currencyId=tok"
            r = tok.request(method, path + query, json=body if method != "GET" else None)
            assert r.status_code == 401, (method, path, r.status_code, r.text)
            answer = r.json()
            if "errors" in answer:  # the Edge reads answer in GraphQL's shape
                answer = answer["errors"][0]["extensions"]
            assert answer["code"] == "Unauthenticated", (method, path, r.text)
            refused += 1
        # GraphQL authenticates with its own errors; a token is not a key there either.
        g = tok.post("/graphql", json={"query": "{ __typename }"})
        assert "Unauthenticated" in g.text
    assert refused > 50
    with server.http() as raw:
        after = raw.get("/api/v1/credits/ledger?customerId=cust-a&limit=100").json()["data"]
    assert after == before


def test_an_expired_or_forged_token_is_refused_with_a_clear_code(
        server: Server, clock: Any, world: dict[str, Any]) -> None:
    with server.http() as raw:
        token = _token(raw, "cust-a", ttlSeconds=60)
    with _bearer(server, token) as tok:
        assert tok.get("/api/v1/portal/session").status_code == 200
        clock.move(by=timedelta(seconds=61))
        r = tok.get("/api/v1/credits/balance?customerId=cust-a")
        assert (r.status_code, r.json()["code"]) == (401, "TokenExpired"), r.text
        assert tok.get("/api/v1/portal/session").json()["code"] == "TokenExpired"
    head, payload, _ = world["a_token"].split(".")
    with _bearer(server, f"{head}.{payload}.c2lnbmF0dXJl") as forged:
        r = forged.get("/api/v1/credits/balance?customerId=cust-a")
        assert (r.status_code, r.json()["code"]) == (401, "Unauthenticated"), r.text


def test_browsers_on_other_origins_may_call_the_token_reads_only(
        server: Server, world: dict[str, Any]) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as anon:
        pre = anon.options("/api/v1/credits/balance", headers={
            "Origin": "https://app.example.com", "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization"})
        assert pre.status_code == 204
        assert pre.headers["access-control-allow-origin"] == "*"
        assert "authorization" in pre.headers["access-control-allow-headers"]
    with _bearer(server, world["a_token"]) as tok:
        r = tok.get("/api/v1/credits/balance?customerId=cust-a")
        assert r.headers["access-control-allow-origin"] == "*"
    with server.http() as raw:
        assert "access-control-allow-origin" not in raw.post(
            "/api/v1/customers", json={"id": "cors-x"}).headers


def _usage(raw: httpx.Client, **query: str) -> httpx.Response:
    return raw.get("/api/v1/credits/usage", params={"customerId": "cust-g",
                                                    "currencyId": "tok", **query})


def test_usage_points_per_asked_granularity(server: Server, clock: Any) -> None:
    """Hour, day, week (from Monday, UTC) and month points; every granularity sums to
    the same total; a granularity that would make too many points is refused."""
    with server.http() as raw:
        assert raw.post("/api/v1/customers", json={"id": "cust-g"}).status_code in (200, 201)
        assert raw.post("/api/v1/credits/grants", json={
            "customerId": "cust-g", "currencyId": "tok", "amount": 1000,
            "displayName": "g", "grantType": "PAID"}).status_code == 200
        start = clock.now()
        amounts = [Decimal("1.25"), Decimal("2"), Decimal("0.00001"), Decimal("7.5")]
        for i, amount in enumerate(amounts):
            r = raw.post("/api/v1/credits/consumption", json={
                "customerId": "cust-g", "currencyId": "tok", "amount": str(amount),
                "idempotencyKey": f"g-{i}"})
            assert r.status_code == 200, r.text
            clock.move(by=timedelta(days=3, hours=5))
        end = clock.now()
        span = {"startDate": start.isoformat(), "endDate": end.isoformat()}
        totals = {}
        for granularity in ("HOUR", "DAY", "WEEK", "MONTH", "week"):
            r = _usage(raw, granularity=granularity, **span)
            assert r.status_code == 200, r.text
            (series,) = r.json()["data"]["series"]
            points = [datetime.fromisoformat(p["timestamp"].replace("Z", "+00:00"))
                      for p in series["points"]]
            assert points == sorted(points) and points[0] <= start
            totals[granularity] = sum(Decimal(str(p["value"])) for p in series["points"])
            if granularity.upper() == "WEEK":
                assert all(p.weekday() == 0 and p.time().hour == 0 for p in points)
                assert [b - a for a, b in zip(points, points[1:])] == \
                    [timedelta(days=7)] * (len(points) - 1)
            if granularity == "DAY":
                assert len(points) == (end.date() - start.date()).days + 1
        assert set(totals.values()) == {sum(amounts)}
        for bad, why in (("FORTNIGHT", "must be one of"), ("HOUR", "more than 2000")):
            r = _usage(raw, granularity=bad, timeRange="LAST_YEAR")
            assert r.status_code == 400, r.text
            assert r.json()["field"] == "granularity" and why in r.json()["message"]


def test_two_tokens_minted_at_once_are_two_tokens(server: Server, world: dict[str, Any]) -> None:
    """Minted in the same second (the manual clock stands still) for the same customer:
    still two strings, each with its own rate-limit bucket."""
    with server.http() as raw:
        assert _token(raw, "cust-a", ttlSeconds=600) != _token(raw, "cust-a", ttlSeconds=600)


def test_a_token_is_rate_limited_on_its_own(make_server: Any) -> None:
    key = "rate-key-0123456789"
    s = make_server(api_keys=key, env={"CREDITD_TOKEN_READS_PER_S": "0.01",
                                       "CREDITD_TOKEN_READS_BURST": "3"}).start()
    with s.http(key) as raw:
        assert raw.post("/api/v1/customers", json={"id": "r"}).status_code in (200, 201)
        first, second = _token(raw, "r"), _token(raw, "r", ttlSeconds=600)
        with _bearer(s, first) as tok:
            codes = [tok.get("/api/v1/credits/balance?customerId=r").status_code
                     for _ in range(4)]
            assert codes == [200, 200, 200, 429]
            last = tok.get("/api/v1/credits/balance?customerId=r")
            assert last.json()["code"] == "TooManyRequests"
            assert int(last.headers["retry-after"]) >= 1
        with _bearer(s, second) as other:
            assert other.get("/api/v1/credits/balance?customerId=r").status_code == 200
        # The API key is not limited by the tokens' budget.
        assert raw.get("/api/v1/credits/balance?customerId=r").status_code == 200


@settings(max_examples=200, deadline=None)
@given(rate=st.floats(0.1, 100), burst=st.integers(1, 50),
       gaps=st.lists(st.floats(0, 2), min_size=1, max_size=200))
def test_a_bucket_never_admits_more_than_burst_plus_rate_times_time(
        rate: float, burst: int, gaps: list[float]) -> None:
    limiter = RateLimiter(rate, burst, tracked_max=4)
    now, admitted = 0.0, 0
    for gap in gaps:
        now += gap
        wait = limiter.admit(b"t", now)
        admitted += wait == 0
        assert wait >= 0
    assert admitted <= burst + rate * now + 1e-9
    for i in range(10):  # the table stays bounded, least recently used dropped
        limiter.admit(str(i).encode(), now)
    assert len(limiter) == 4



def test_ledger_pages_within_a_date_range(server: Server, clock: Any) -> None:
    """The ledger widget's date filter: `startDate` inclusive, `endDate` exclusive, paged
    with the same cursors, counted the same way."""
    with server.http() as raw:
        assert raw.post("/api/v1/customers", json={"id": "cust-l"}).status_code in (200, 201)
        assert raw.post("/api/v1/credits/grants", json={
            "customerId": "cust-l", "currencyId": "tok", "amount": 100,
            "displayName": "l", "grantType": "PAID"}).status_code == 200
        times = []
        for i in range(6):
            clock.move(by=timedelta(days=1))
            times.append(clock.now())
            assert raw.post("/api/v1/credits/consumption", json={
                "customerId": "cust-l", "currencyId": "tok", "amount": i + 1,
                "idempotencyKey": f"l-{i}"}).status_code == 200
        query = {"customerId": "cust-l", "startDate": times[1].isoformat(),
                 "endDate": times[4].isoformat(), "limit": 2}
        first = raw.get("/api/v1/credits/ledger", params=query).json()
        rest = raw.get("/api/v1/credits/ledger",
                       params={**query, "after": first["pagination"]["next"]}).json()
        amounts = [e["amount"] for e in first["data"] + rest["data"]]
        assert amounts == [-4, -3, -2] and rest["pagination"]["next"] is None
        bad = raw.get("/api/v1/credits/ledger", params={**query, "endDate": query["startDate"]})
        assert (bad.status_code, bad.json()["field"]) == (400, "startDate")
        bad = raw.get("/api/v1/credits/ledger", params={**query, "startDate": "yesterday"})
        assert (bad.status_code, bad.json()["field"]) == (400, "startDate")
