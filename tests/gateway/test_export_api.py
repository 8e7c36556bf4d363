"""`GET /api/v1/credits/ledger/export`: one customer's ledger as CSV, streamed page after
page, the same rows `creditd export` writes from the running server's database; an
operator's call (API key); bad input answered 4xx naming the field."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from tests.gateway.conftest import Server

ROOT = Path(__file__).resolve().parents[2]
URL = "/api/v1/credits/ledger/export"


@pytest.fixture(scope="module")
def world(server: Server) -> dict[str, str]:
    """A customer with 2,000+ ledger entries (more than one page), another with a few."""
    with server.http() as raw:
        assert raw.post("/api/v1/credits/custom-currencies", json={
            "id": "exp", "displayName": "Export credits"}).status_code == 200
        for c in ("exp-a", "exp-b"):
            assert raw.post("/api/v1/customers", json={"id": c}).status_code in (200, 201)
            r = raw.post("/api/v1/credits/grants", json={
                "customerId": c, "currencyId": "exp", "amount": 10_000,
                "displayName": "Welcome", "grantType": "PAID"})
            assert r.status_code == 200, r.text
        for batch in range(2):
            r = raw.post("/api/v1/credits/consumption/async", json={"consumptions": [
                {"customerId": "exp-a", "currencyId": "exp", "amount": "0.00125",
                 "idempotencyKey": f"k-{batch}-{i}", "dimensions": {"model": "m"}}
                for i in range(1_000)]})
            assert r.status_code == 200, r.text
        r = raw.post("/api/v1/credits/consumption", json={
            "customerId": "exp-b", "currencyId": "exp", "amount": 2.5,
            "idempotencyKey": "b-1"})
        assert r.status_code == 200, r.text
    return {"a": "exp-a", "b": "exp-b"}


def _csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_the_download_is_the_whole_ledger_and_sums_to_the_balance(
        server: Server, world: dict[str, str], tmp_path: Path) -> None:
    with server.http() as raw:
        r = raw.get(URL, params={"customerId": world["a"], "currencyId": "exp"})
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "text/csv; charset=utf-8"
        assert r.headers["content-disposition"] == 'attachment; filename="ledger-exp-a.csv"'
        rows = _csv(r.text)
        balance = raw.get("/api/v1/credits/balance", params={
            "customerId": world["a"], "currencyId": "exp"}).json()["data"]["balances"][0]
    assert [int(x["seq"]) for x in rows] == list(range(1, 2_002))  # oldest first, gapless
    assert sum(Decimal(x["amount"]) for x in rows) == Decimal(str(balance["currentBalance"]))
    assert rows[1]["amount"] == "-0.00125"
    assert rows[1]["dimensions"] == '{"model":"m"}'
    assert {x["environment"] for x in rows} == {"default"}

    # The CLI export, run against the same database while the server serves it, has the
    # same rows for this customer.
    env = {k: v for k, v in os.environ.items() if not k.startswith("CREDITD_")}
    done = subprocess.run([sys.executable, "-m", "gateway.cli", "export", "--database-url",
                           server.database_url, "--out", str(tmp_path / "x"), "--tables",
                           "ledger", "--environment", "default"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr
    with open(tmp_path / "x" / "ledger.csv", newline="", encoding="utf-8") as f:
        cli = [x for x in csv.DictReader(f) if x["customer_id"] == world["a"]]
    assert cli == rows


def test_filters_and_bad_input(server: Server, world: dict[str, str]) -> None:
    with server.http() as raw:
        r = raw.get(URL, params={"customerId": world["b"], "eventType": "CREDITS_CONSUMED"})
        assert r.status_code == 200, r.text
        assert [(x["event_type"], x["amount"]) for x in _csv(r.text)] == [
            ("CREDITS_CONSUMED", "-2.50000")]
        for params, status, field in [
            ({}, 400, "customerId"),
            ({"customerId": "nobody"}, 404, "customerId"),
            ({"customerId": world["b"], "startDate": "yesterday"}, 400, "startDate"),
            ({"customerId": world["b"], "eventType": "CREDITS_STOLEN"}, 400, "eventType"),
        ]:
            r = raw.get(URL, params=params)
            assert (r.status_code, r.json().get("field")) == (status, field), r.text
    with server.http(key=None) as anonymous:
        r = anonymous.get(URL, params={"customerId": world["b"]})
        assert r.status_code == 401
    with server.http(key=server.other_key) as other:  # another environment's key
        assert other.get(URL, params={"customerId": world["b"]}).status_code == 404
