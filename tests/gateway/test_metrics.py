"""`GET /metrics` (gateway/metrics.py, docs/metrics.md): real traffic moves the right
series, on a real server process over SQLite and PostgreSQL; overloads and several apps
in one process are checked in-process. A series that moves in the background (a webhook's
attempt, a recharge's payment, a websocket's close) is read again until it has moved,
against a deadline: each read is an HTTP round trip, and nothing sleeps."""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from gateway.app import create_app
from gateway.config import ConfigError, Settings
from tests.gateway.conftest import Server
from tests.gateway.test_overload import GatedStore, serve
from tests.webhooks.receiver import Receiver

TOKEN = "metrics-token-" + uuid.uuid4().hex
SERVER_ENV = {"CREDITD_METRICS_TOKEN": TOKEN, "CREDITD_WEBHOOKS_ALLOW_PRIVATE": "true"}
DOC = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"
CONSUMPTION = "/api/v1/credits/consumption"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> tuple[Samples, dict[str, str]]:
    """Every sample by (name, labels), and every family's type by name."""
    samples: Samples = {}
    types: dict[str, str] = {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples, types


def scrape(server: Server) -> Samples:
    """What a Prometheus with the metrics token reads."""
    with server.http(key=None) as http:
        r = http.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse(r.text)[0]


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def eventually(read: Callable[[], Samples], done: Callable[[Samples], bool],
               timeout: float = 30.0) -> Samples:
    """Read again until `done` holds (a background step has been counted)."""
    deadline = time.monotonic() + timeout
    while True:
        samples = read()
        if done(samples):
            return samples
        assert time.monotonic() < deadline, "the series did not move"


def setup(raw: httpx.Client, amount: int = 100, **currency: Any) -> tuple[str, str]:
    customer, currency_id = f"cust-{uuid.uuid4().hex[:10]}", f"cur-{uuid.uuid4().hex[:10]}"
    assert raw.post("/api/v1/credits/custom-currencies", json={
        "id": currency_id, "displayName": "C", **currency}).status_code == 200
    assert raw.post("/api/v1/customers", json={"id": customer}).status_code == 200
    r = raw.post("/api/v1/credits/grants", json={
        "customerId": customer, "currencyId": currency_id, "amount": amount,
        "displayName": "g", "grantType": "PAID"})
    assert r.status_code == 200, r.text
    return customer, currency_id


def consume(raw: httpx.Client, customer: str, currency: str, amount: Any) -> httpx.Response:
    return raw.post(CONSUMPTION, json={"customerId": customer, "currencyId": currency,
                                       "amount": amount, "idempotencyKey": uuid.uuid4().hex})


def test_a_durable_consumption_counts_on_its_route_and_in_the_runtime(
        server: Server, raw: httpx.Client) -> None:
    customer, currency = setup(raw)
    before = scrape(server)
    assert consume(raw, customer, currency, 1).status_code == 200
    after = scrape(server)

    ok = {"route": CONSUMPTION, "method": "POST", "status": "200"}
    assert value(after, "creditd_http_requests_total", **ok) == \
        value(before, "creditd_http_requests_total", **ok) + 1
    assert value(after, "creditd_http_request_duration_seconds_count", **ok) == \
        value(before, "creditd_http_request_duration_seconds_count", **ok) + 1
    assert value(after, "creditd_http_request_duration_seconds_bucket", le="+Inf", **ok) == \
        value(after, "creditd_http_requests_total", **ok)
    # Durable: the runtime applied and committed it, the store wrote it.
    for name in ("creditd_runtime_commands_total", "creditd_runtime_batches_total",
                 "creditd_runtime_commit_duration_seconds_count",
                 "creditd_store_flush_duration_seconds_count", "creditd_store_flushed_rows_total"):
        assert value(after, name) > value(before, name), name
    # The group commit's size and time as histograms: every flush in a bucket of each.
    flushes = value(after, "creditd_store_flush_duration_seconds_count")
    assert value(after, "creditd_store_flush_duration_seconds_bucket", le="+Inf") == flushes
    assert value(after, "creditd_store_flush_units_count") == flushes
    assert value(after, "creditd_store_flush_units_bucket", le="8192") == flushes
    assert value(after, "creditd_store_flush_units_sum") >= flushes
    assert value(after, "creditd_runtime_resident_customers") >= 1
    assert 0 < value(after, "creditd_runtime_memory_bytes") \
        < value(after, "creditd_runtime_memory_budget_bytes")
    # The scrape before this one is counted too, by its route.
    assert value(after, "creditd_http_requests_total", route="/metrics", method="GET",
                 status="200") >= 1
    store = "postgresql" if server.database_url.startswith("postgresql") else "sqlite"
    assert value(after, "creditd_info", version="0.1.0", store=store) == 1
    if store == "postgresql":
        open_ = sum(value(after, "creditd_store_pool_connections", state=s)
                    for s in ("in_use", "idle"))
        assert 1 <= open_ <= value(after, "creditd_store_pool_connections_max")
    else:
        # The write wakes the checkpointer, which runs beside the writer (a background
        # step: read again until it has been counted).
        checked = eventually(lambda: scrape(server), lambda s: value(
            s, "creditd_store_checkpoints_total") > value(before, "creditd_store_checkpoints_total"))
        assert value(checked, "creditd_store_log_pages") > 0
        assert value(checked, "creditd_store_checkpoint_failures_total") == 0
        assert value(checked, "creditd_store_sqlite_memory_bytes") > 0  # the reader's cache


def test_a_refused_consumption_counts_by_its_refusal_code(server: Server,
                                                          raw: httpx.Client) -> None:
    customer, currency = setup(raw, amount=5)
    before = scrape(server)
    r = consume(raw, customer, currency, 6)
    assert (r.status_code, r.json()["code"]) == (402, "InsufficientCredits")
    after = scrape(server)
    refused = {"route": CONSUMPTION, "method": "POST", "status": "402"}
    assert value(after, "creditd_http_requests_total", **refused) == \
        value(before, "creditd_http_requests_total", **refused) + 1
    assert value(after, "creditd_runtime_refusals_total", code="INSUFFICIENT_CREDITS") == \
        value(before, "creditd_runtime_refusals_total", code="INSUFFICIENT_CREDITS") + 1


def test_not_found_and_unauthenticated_count_with_their_status(server: Server) -> None:
    before = scrape(server)
    with server.http() as raw:
        assert raw.get("/no/such/route").status_code == 404
        assert raw.get(f"/api/v1/customers/nobody-{uuid.uuid4().hex}").status_code == 404
    with server.http(key=None) as anonymous:
        assert anonymous.get("/api/v1/customers").status_code == 401
    after = scrape(server)
    for labels in ({"route": "unmatched", "method": "GET", "status": "404"},
                   {"route": "/api/v1/customers/{customer_id}", "method": "GET",
                    "status": "404"},
                   {"route": "/api/v1/customers", "method": "GET", "status": "401"}):
        assert value(after, "creditd_http_requests_total", **labels) == \
            value(before, "creditd_http_requests_total", **labels) + 1, labels


def test_a_scrape_needs_an_api_key_or_the_metrics_token(server: Server,
                                                        raw: httpx.Client) -> None:
    customer, _ = setup(raw)
    r = raw.post(f"/api/v1/customers/{customer}/tokens", json={})
    assert r.status_code == 201, r.text
    customer_token = r.json()["data"]["token"]
    refused = [{}, {"Authorization": f"Bearer {customer_token}"},
               {"Authorization": f"Bearer {TOKEN}x"}, {"Authorization": TOKEN},
               {"X-API-KEY": "not-a-key"}]
    with server.http(key=None) as http:
        for headers in refused:
            r = http.get("/metrics", headers=headers)
            assert (r.status_code, r.json()["code"]) == (401, "Unauthenticated"), headers
            assert r.headers["www-authenticate"] == "Bearer"
        # An API key of any environment reads the server-wide counts.
        for key in (server.key, server.other_key):
            assert http.get("/metrics", headers={"X-API-KEY": key}).status_code == 200
        r = http.post("/metrics", headers={"X-API-KEY": server.key})
        assert r.status_code == 405
        r = http.get("/metrics", headers={"X-API-KEY": server.key,
                                          "Accept": "application/openmetrics-text"})
        assert r.headers["content-type"].startswith("application/openmetrics-text")
        assert r.text.endswith("# EOF\n")
        # /metrics is not part of the API's document.
        assert "/metrics" not in http.get("/schema/openapi.json").json()["paths"]


def _documented() -> set[str]:
    return set(re.findall(r"^\| `([a-z_]+)` \|", DOC.read_text(), re.MULTILINE))


def _exposed_name(name: str, kind: str) -> str:
    """The name docs/metrics.md lists for a family: counters with `_total`, info with
    `_info` (the parser strips both)."""
    return {"counter": f"{name}_total", "info": f"{name}_info"}.get(kind, name)


def test_every_exposed_family_is_documented_and_every_documented_one_exposed(
        server: Server) -> None:
    with server.http() as http:
        r = http.get("/metrics")
    assert r.status_code == 200
    exposed = {_exposed_name(name, kind) for name, kind in parse(r.text)[1].items()}
    documented = _documented()
    assert exposed - documented == set(), "families docs/metrics.md does not list"
    expected = documented
    if server.database_url.startswith("postgresql"):
        expected -= {"creditd_store_checkpoints_total", "creditd_store_log_pages",
                     "creditd_store_checkpoint_failures_total",
                     "creditd_store_sqlite_memory_bytes"}  # SQLite's own
    else:
        expected -= {"creditd_store_pool_connections", "creditd_store_pool_connections_max"}
        # Only a PostgreSQL process is a cluster node (docs/operations.md).
        expected -= {name for name in documented if name.startswith("creditd_cluster_")}
    assert expected - exposed == set(), "documented families the server does not expose"
    # Each with the type the page gives it.
    rows = dict(re.findall(r"^\| `([a-z_]+)` \| (\w+) \|", DOC.read_text(), re.MULTILINE))
    for name, kind in parse(r.text)[1].items():
        assert rows[_exposed_name(name, kind)] == kind, name


def test_the_grafana_dashboard_reads_documented_series() -> None:
    dashboard = json.loads((DOC.parent / "grafana-creditd.json").read_text())
    documented = _documented()
    read = {name for panel in dashboard["panels"] for target in panel.get("targets", ())
            for name in re.findall(r"\b((?:creditd|process|python)_[a-z_]+)", target["expr"])}
    assert len(read) > 30
    for name in read:
        assert name in documented or re.sub(r"_(bucket|sum|count)$", "", name) in documented, name


def test_webhook_attempts_count_by_outcome(server: Server, raw: httpx.Client) -> None:
    with Receiver() as receiver:
        r = raw.post("/api/v1/webhooks/endpoints", json={
            "url": receiver.url, "eventTypes": ["credits.granted"]})
        assert r.status_code == 200, r.text
        try:
            before = scrape(server)
            setup(raw)  # one grant: one event, one delivery
            receiver.wait_for(lambda received: len(received) >= 1)
            delivered = value(before, "creditd_webhook_attempts_total", outcome="delivered")
            after = eventually(lambda: scrape(server), lambda s: value(
                s, "creditd_webhook_attempts_total", outcome="delivered") > delivered)
        finally:
            raw.delete(f"/api/v1/webhooks/endpoints/{r.json()['data']['id']}")
    for name in ("creditd_webhook_deliveries_created_total", "creditd_webhook_events_read_total",
                 "creditd_webhook_attempt_delay_seconds_count", "creditd_store_outbox_last_id",
                 "creditd_webhook_delivery_lag_seconds_count"):
        assert value(after, name) > value(before, name), name
    assert value(after, "creditd_webhook_endpoints") >= 1
    # The delivery came within seconds of its event: in a bucket no later than 60 s, and
    # the lag's sum moved by no more than that.
    lag = "creditd_webhook_delivery_lag_seconds"
    assert value(after, lag + "_bucket", le="60.0") > value(before, lag + "_bucket", le="60.0")
    assert 0 <= value(after, lag + "_sum") - value(before, lag + "_sum") < 60


def test_an_auto_recharge_counts_as_paid(server: Server, raw: httpx.Client) -> None:
    customer, currency = setup(raw, topUp={"pricePerCredit": 0.01})
    r = raw.put("/api/v1/credits/auto-recharge", json={
        "customerId": customer, "currencyId": currency, "isEnabled": True,
        "thresholdType": "CREDIT_AMOUNT", "thresholdValue": 20, "targetBalance": 150})
    assert r.status_code == 200, r.text
    paid = value(scrape(server), "creditd_recharge_payments_total", outcome="paid")
    assert consume(raw, customer, currency, 90).status_code == 200  # below the threshold
    eventually(lambda: scrape(server), lambda s: value(
        s, "creditd_recharge_payments_total", outcome="paid") == paid + 1)


def test_a_websocket_closed_by_the_server_counts_by_its_code(server: Server) -> None:
    route = {"route": "/api/v1/credits/stream", "code": "4401"}
    before = value(scrape(server), "creditd_websocket_closes_total", **route)

    async def refused() -> int:
        url = f"ws://127.0.0.1:{server.port}/api/v1/credits/stream?token=forged"
        async with connect(url, open_timeout=30) as ws:
            try:
                while True:
                    await asyncio.wait_for(ws.recv(), 30)
            except ConnectionClosed:
                pass
            assert ws.close_code is not None
            return ws.close_code

    assert anyio.run(refused, backend="asyncio") == 4401
    eventually(lambda: scrape(server), lambda s: value(
        s, "creditd_websocket_closes_total", **route) == before + 1)


# -- in-process: overloads, several apps, the settings ----------------------------------


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # as tests/gateway/test_overload.py: the in-process app on asyncio


async def _scrape(http: httpx.AsyncClient, key: str) -> Samples:
    r = await http.get("/metrics", headers={"X-API-KEY": key})
    assert r.status_code == 200, r.text
    return parse(r.text)[0]


@pytest.mark.anyio
async def test_overloads_count_by_the_limit_that_refused_them(tmp_path: Path) -> None:
    """A full mailbox refuses with 429; the refusal counts under `mailbox`, the request
    under its status. A second app in the same process keeps counts of its own."""
    key = "k-metrics"
    store = GatedStore(tmp_path / "a.db")
    app = create_app(Settings(api_keys=[key]), store=store, runtime_options={"mailbox_max": 1})
    other = create_app(Settings(api_keys=[key]), store=GatedStore(tmp_path / "b.db"))
    headers = {"X-API-KEY": key}
    async with serve(app) as http, serve(other) as other_http:
        for path, body in (("/api/v1/credits/custom-currencies", {"id": "t", "displayName": "T"}),
                           ("/api/v1/customers", {"id": "c"}),
                           ("/api/v1/credits/grants", {"customerId": "c", "currencyId": "t",
                                                       "amount": 100, "displayName": "g",
                                                       "grantType": "PAID"})):
            assert (await http.post(path, json=body, headers=headers)).status_code == 200
        store.gate = anyio.Event()  # hold the next commit
        store.waiting = anyio.Event()
        statuses: list[int] = []
        refused = anyio.Event()

        async def post(n: int) -> None:
            r = await http.post(CONSUMPTION, headers=headers, json={
                "customerId": "c", "currencyId": "t", "amount": 1, "idempotencyKey": f"k{n}"})
            statuses.append(r.status_code)
            if r.status_code == 429:
                refused.set()

        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                tg.start_soon(post, 1)
                await store.waiting.wait()  # its batch is being committed, and held
                tg.start_soon(post, 2)
                tg.start_soon(post, 3)
                await refused.wait()
                store.gate.set()
        assert sorted(statuses) == [200, 200, 429]
        samples = await _scrape(http, key)
        assert value(samples, "creditd_runtime_overloads_total", reason="mailbox") == 1
        assert value(samples, "creditd_runtime_overloads_total", reason="pending") == 0
        assert value(samples, "creditd_http_requests_total", route=CONSUMPTION, method="POST",
                     status="429") == 1
        assert value(samples, "creditd_runtime_mailbox_peak_commands") == 1
        assert value(samples, "creditd_runtime_mailbox_capacity_commands") == 1
        # The other app saw none of it.
        theirs = await _scrape(other_http, key)
        assert value(theirs, "creditd_http_requests_total", route=CONSUMPTION, method="POST",
                     status="200") == 0
        assert value(theirs, "creditd_runtime_overloads_total", reason="mailbox") == 0


@pytest.mark.anyio
async def test_metrics_off_has_no_route(tmp_path: Path) -> None:
    app = create_app(Settings(api_keys=["k"], metrics="off"), store=GatedStore(tmp_path / "c.db"))
    async with serve(app) as http:
        assert (await http.get("/metrics", headers={"X-API-KEY": "k"})).status_code == 404
    assert getattr(app.state, "metrics", None) is None


def test_the_settings_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    for bad in ({"metrics": "maybe"}, {"metrics_token": "short"},
                {"metrics_token": "has a space in it, sixteen+"}):
        with pytest.raises(ConfigError, match="CREDITD_METRICS"):
            Settings(**bad)  # type: ignore[arg-type]
    monkeypatch.setenv("CREDITD_METRICS", "OFF")
    monkeypatch.setenv("CREDITD_METRICS_TOKEN", " " + TOKEN + "\n")
    settings = Settings.from_env()
    assert (settings.metrics, settings.metrics_token) == ("off", TOKEN)
