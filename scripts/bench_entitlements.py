#!/usr/bin/env python3
"""Entitlement checks and metered usage over HTTP against a running creditd, durable mode.

Starts `creditd serve` on a fresh SQLite file and a fresh PostgreSQL database, provisions
through the REST API a currency, three features (boolean `sso`, unmetered NUMBER `seats`,
metered `calls` burning 1 credit per unit), a product and a published plan granting them
(sso; seats 10; calls 1,000,000 a month; 10^9 credits a month), then --customers customers
each subscribed to the plan. It then drives, with wrk (a C load generator in its own
process) at concurrency --connections, requests spread over the customers:

- `GET /api/v1/customers/{id}/entitlements/check?featureId=calls&requestedUsage=1`;
- the same for `featureId=sso`;
- `GET /api/v1/customers/{id}/entitlements` (the full list);
- `POST /api/v2/usage`, one measurement of `calls` (value 1) with a fresh idempotency key
  per request: the feature resets monthly, so each report resolves the usage window.

Per backend and scenario it prints the median over --runs runs of requests/s and of wrk's
p50/p99 latency. After the usage runs it checks that the customers' `calls` usage (summed
over the entitlement checks) and the credits they consumed both grew by exactly the
number of 2xx answers, up to the requests in flight when each run ended — nothing
acknowledged lost, nothing doubled.

Usage: .venv/bin/python scripts/bench_entitlements.py [--runs 3] [--seconds 10]
       [--customers 1000] [--connections 64] [--only sqlite|postgresql]
       [--pg postgresql://postgres@127.0.0.1:5432/postgres]
"""

from __future__ import annotations

import argparse
import os
import platform
import secrets
import statistics
import sys
import tempfile
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_http  # noqa: E402 (after the sys.path line)
from bench_http import KEY, Server

CURRENCY = "tokens"
PRODUCT = "bench-product"
PLAN = "bench-plan"
CALLS_LIMIT = 1_000_000

# What every wrk script starts with: a counter, an id per wrk thread (for unique keys) and
# a customer picked from the provisioned ones, spread rather than in sequence.
_LUA_PROLOGUE = textwrap.dedent("""
    local counter = 0
    local thread_id = 0
    local ids = 0
    local customers = tonumber(os.getenv("BENCH_CUSTOMERS"))
    local run = os.getenv("BENCH_RUN")
    local headers = {["Content-Type"] = "application/json", ["X-API-KEY"] = os.getenv("BENCH_KEY")}
    function setup(thread)
      ids = ids + 1
      thread:set("tid", ids)
    end
    function init(args)
      thread_id = tid
    end
    local function customer()
      counter = counter + 1
      return "cust-" .. ((counter * 7919 + thread_id) % customers)
    end
""")


def _get_lua(path_template: str) -> str:
    """A wrk script GETting `path_template` with `{customer}` filled in per request."""
    before, after = path_template.split("{customer}")
    return _LUA_PROLOGUE + textwrap.dedent(f"""
        function request()
          return wrk.format("GET", "{before}" .. customer() .. "{after}", headers)
        end
    """)


USAGE_LUA = _LUA_PROLOGUE + textwrap.dedent("""
    function request()
      local who = customer()
      local body = '{"usages":[{"customerId":"' .. who .. '","featureId":"calls","value":1,'
        .. '"idempotencyKey":"' .. run .. '-' .. thread_id .. '-' .. counter .. '"}]}'
      return wrk.format("POST", "/api/v2/usage", headers, body)
    end
""")

SCENARIOS = (
    # (name, wrk script, whether it records usage)
    ("check calls", _get_lua(
        "/api/v1/customers/{customer}/entitlements/check?featureId=calls&requestedUsage=1"),
     False),
    ("check sso", _get_lua(
        "/api/v1/customers/{customer}/entitlements/check?featureId=sso"), False),
    ("list entitlements", _get_lua("/api/v1/customers/{customer}/entitlements"), False),
    ("usage report", USAGE_LUA, True),
)


def wrk(server: Server, script: Path, connections: int, seconds: int, customers: int,
        run: str) -> dict[str, float]:
    """bench_http's wrk run with a 30 s request timeout: on a busy 2-core host a few list
    requests can take longer than wrk's default 2 s, and they belong in the p99."""
    return bench_http.wrk(server, script, connections, seconds, customers, run, timeout_s=30)


def _ok(r: httpx.Response) -> dict:
    assert r.status_code in (200, 201), (r.request.method, r.request.url, r.status_code, r.text)
    return r.json()


def provision(server: Server, customers: int) -> None:
    with httpx.Client(base_url=server.url, headers={"X-API-KEY": KEY}, timeout=60) as http:
        _ok(http.post("/api/v1/credits/custom-currencies",
                      json={"id": CURRENCY, "displayName": "Tokens"}))
        _ok(http.post("/api/v1/features", json={
            "id": "sso", "displayName": "SSO", "featureType": "BOOLEAN"}))
        _ok(http.post("/api/v1/features", json={
            "id": "seats", "displayName": "Seats", "featureType": "NUMBER"}))
        _ok(http.post("/api/v1/features", json={
            "id": "calls", "displayName": "Calls", "featureType": "NUMBER",
            "meterType": "INCREMENTAL", "creditRate": {"amount": 1, "currencyId": CURRENCY}}))
        _ok(http.post("/api/v1/products", json={"id": PRODUCT, "displayName": "Bench"}))
        _ok(http.post("/api/v1/plans", json={
            "id": PLAN, "displayName": "Bench plan", "productId": PRODUCT}))
        _ok(http.post(f"/api/v1/plans/{PLAN}/entitlements", json={"entitlements": [
            {"type": "FEATURE", "id": "sso"},
            {"type": "FEATURE", "id": "seats", "usageLimit": 10},
            {"type": "FEATURE", "id": "calls", "usageLimit": CALLS_LIMIT,
             "resetPeriod": "MONTH"},
            {"type": "CREDIT", "id": CURRENCY, "amount": 10**9, "cadence": "MONTH"}]}))
        _ok(http.post(f"/api/v1/plans/{PLAN}/publish", json={"migrationType": "NEW_CUSTOMERS"}))

        def subscribe(i: int) -> None:
            _ok(http.post("/api/v1/customers", json={"id": f"cust-{i}"}))
            sub = _ok(http.post("/api/v1/subscriptions",
                                json={"customerId": f"cust-{i}", "planId": PLAN}))["data"]
            assert sub["subscription"]["status"] == "ACTIVE", sub

        # httpx.Client is thread-safe; a few provisioning requests in flight at once.
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(subscribe, range(customers)))

        # What the scenarios will read is what the plan grants.
        calls = _ok(http.get("/api/v1/customers/cust-0/entitlements/check",
                             params={"featureId": "calls", "requestedUsage": 1}))["data"]
        assert calls["isGranted"] and calls["usageLimit"] == CALLS_LIMIT, calls
        assert calls["resetPeriod"] == "MONTH" and calls["currentUsage"] == 0, calls
        sso = _ok(http.get("/api/v1/customers/cust-0/entitlements/check",
                           params={"featureId": "sso"}))["data"]
        assert sso["isGranted"], sso
        listed = _ok(http.get("/api/v1/customers/cust-0/entitlements"))["data"]
        granted = {(e["type"], e["feature"]["id"] if e["type"] == "FEATURE"
                    else e["currency"]["currencyId"])
                   for e in listed["entitlements"] if e["isGranted"]}
        assert granted == {("FEATURE", "sso"), ("FEATURE", "seats"), ("FEATURE", "calls"),
                           ("CREDIT", CURRENCY)}, listed


def totals(server: Server, customers: int) -> tuple[float, float]:
    """The customers' `calls` usage (from the entitlement checks) and credits consumed."""
    with httpx.Client(base_url=server.url, headers={"X-API-KEY": KEY}, timeout=60) as http:
        def one(i: int) -> tuple[float, float]:
            check = _ok(http.get(f"/api/v1/customers/cust-{i}/entitlements/check",
                                 params={"featureId": "calls"}))["data"]
            balance = _ok(http.get("/api/v1/credits/balance",
                                   params={"customerId": f"cust-{i}"}))["data"]
            return (check["currentUsage"],
                    sum(b["totalConsumed"] for b in balance["balances"]))

        with ThreadPoolExecutor(8) as pool:
            got = list(pool.map(one, range(customers)))
    return sum(u for u, _ in got), sum(c for _, c in got)


def bench_backend(label: str, url: str, args: argparse.Namespace, tmp: Path) -> None:
    server = Server(url)
    try:
        provision(server, args.customers)
        # Every customer read once before timing (their entitlements cached as in steady
        # state), and nothing used or consumed yet.
        assert totals(server, args.customers) == (0, 0)
        for name, lua, records in SCENARIOS:
            script = tmp / f"{name.replace(' ', '_')}.lua"
            script.write_text(lua)
            if records:
                usage_before, consumed_before = totals(server, args.customers)
            answered, results = 0, []
            for n in range(args.runs):
                r = wrk(server, script, args.connections, args.seconds, args.customers,
                        f"{label}-{n}-{secrets.token_hex(3)}")
                assert r["non2xx"] == 0 and r["socket_errors"] == 0, (name, r)
                answered += r["requests"]
                results.append(r)
            med = {k: statistics.median(r[k] for r in results) for k in ("rps", "p50", "p99")}
            print(f"{label:10} {name:17} c={args.connections:<3} {med['rps']:>8,.0f} req/s   "
                  f"p50 {med['p50']:7.2f} ms   p99 {med['p99']:7.2f} ms", flush=True)
            if records:
                # One unit of usage and one credit per answered report, exactly once; wrk
                # does not count the requests still in flight when a run ends (at most one
                # per connection), which the server may still have applied.
                usage_after, consumed_after = totals(server, args.customers)
                used = usage_after - usage_before
                spent = consumed_after - consumed_before
                in_flight = args.runs * args.connections
                assert answered <= used <= answered + in_flight, (used, answered)
                assert spent == used, (spent, used)
                print(f"{label:10} verified: {answered:,} reports answered 2xx, "
                      f"calls usage +{used:,.0f}, credits consumed +{spent:,.0f} "
                      f"(in flight at run ends: {used - answered:,.0f} ≤ {in_flight})",
                      flush=True)
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument("--connections", type=int, default=64)
    args = bench_http.wrk_arguments(parser, "bench_entitlements")
    print(f"# creditd entitlements benchmark: Python {platform.python_version()}, "
          f"{platform.machine()}, {os.cpu_count()} cores; server, database and wrk on the same "
          f"machine; median of {args.runs} runs of {args.seconds} s; durability=sync; "
          f"{args.customers} customers subscribed to one plan")
    with tempfile.TemporaryDirectory() as tmp:
        bench_http.each_backend(
            args, tmp, lambda label, url: bench_backend(label, url, args, Path(tmp)))


if __name__ == "__main__":
    main()
