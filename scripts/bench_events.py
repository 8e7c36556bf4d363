#!/usr/bin/env python3
"""Raw events and usage reports over HTTP against a running creditd, durable mode.

Starts `creditd serve` on a fresh SQLite file and a fresh PostgreSQL database, creates a
credit-backed COUNT feature (1 credit per `call` event) and customers with large grants,
then drives, with wrk (a C load generator in its own process):

- `POST /api/v1/events` in batches of 1,000 events spread over the customers, each with a
  fresh idempotency key: events/s durably accepted *and applied* (the answer comes after
  the balances moved and the change committed), and the request latency p50/p99 — which is
  the acceptance-to-balance latency, since the balance changes before the answer;
- `POST /api/v2/usage` with one measurement per request: usage reports/s and p50/p99.

Afterwards it checks that every accepted event burned exactly one credit (the customers'
consumed totals equal the events answered, up to the requests in flight at the end).

Usage: .venv/bin/python scripts/bench_events.py [--runs 3] [--seconds 10]
       [--only sqlite|postgresql] [--connections 8]
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
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_http  # noqa: E402 (after the sys.path line)
from bench_http import KEY, Server, wrk  # noqa: E402

CUSTOMERS = 100
FEATURE = "calls"
CURRENCY = "tokens"

# What both wrk scripts start with: a counter, and an id per wrk thread (for unique keys).
_LUA_PROLOGUE = textwrap.dedent("""
    local counter = 0
    local thread_id = 0
    local ids = 0
    local customers = tonumber(os.getenv("BENCH_CUSTOMERS"))
    local run = os.getenv("BENCH_RUN")
    function setup(thread)
      ids = ids + 1
      thread:set("tid", ids)
    end
    function init(args)
      thread_id = tid
    end
""")

EVENTS_LUA = _LUA_PROLOGUE + textwrap.dedent("""
    -- A batch of 1,000 `call` events over the customers, fresh keys every time.
    function request()
      local parts = {}
      for i = 1, 1000 do
        counter = counter + 1
        parts[i] = '{"customerId":"cust-' .. (counter % customers) .. '","eventName":"call",'
          .. '"idempotencyKey":"' .. run .. '-' .. thread_id .. '-' .. counter .. '",'
          .. '"dimensions":{"model":"m' .. (counter % 3) .. '"}}'
      end
      local body = '{"events":[' .. table.concat(parts, ",") .. ']}'
      return wrk.format("POST", "/api/v1/events",
        {["Content-Type"] = "application/json", ["X-API-KEY"] = os.getenv("BENCH_KEY")}, body)
    end
""")

USAGE_LUA = _LUA_PROLOGUE + textwrap.dedent("""
    function request()
      counter = counter + 1
      local body = '{"usages":[{"customerId":"cust-' .. ((counter * 7919 + thread_id) % customers)
        .. '","featureId":"images","value":1,"idempotencyKey":"' .. run .. '-' .. thread_id
        .. '-' .. counter .. '"}]}'
      return wrk.format("POST", "/api/v2/usage",
        {["Content-Type"] = "application/json", ["X-API-KEY"] = os.getenv("BENCH_KEY")}, body)
    end
""")


def provision(server: Server) -> None:
    with httpx.Client(base_url=server.url, headers={"X-API-KEY": KEY}, timeout=60) as http:
        http.post("/api/v1/credits/custom-currencies",
                  json={"id": CURRENCY, "displayName": "Tokens"}).raise_for_status()
        http.post("/api/v1/features", json={
            "id": FEATURE, "displayName": "Calls", "featureType": "NUMBER",
            "meter": {"aggregation": {"function": "COUNT"}, "filters": [{"conditions": [
                {"field": "eventName", "operation": "EQUALS", "value": "call"}]}]},
            "creditRate": {"amount": 1, "currencyId": CURRENCY}}).raise_for_status()
        http.post("/api/v1/features", json={
            "id": "images", "displayName": "Images", "featureType": "NUMBER",
            "meterType": "INCREMENTAL",
            "creditRate": {"amount": 1, "currencyId": CURRENCY}}).raise_for_status()
        for i in range(CUSTOMERS):
            http.post("/api/v1/customers", json={"id": f"cust-{i}"}).raise_for_status()
            http.post("/api/v1/credits/grants", json={
                "customerId": f"cust-{i}", "currencyId": CURRENCY, "amount": 10**11,
                "displayName": "bench", "grantType": "PAID"}).raise_for_status()


def consumed(server: Server) -> float:
    total = 0.0
    with httpx.Client(base_url=server.url, headers={"X-API-KEY": KEY}, timeout=60) as http:
        for i in range(CUSTOMERS):
            r = http.get("/api/v1/credits/balance", params={"customerId": f"cust-{i}"})
            total += sum(b["totalConsumed"] for b in r.json()["data"]["balances"])
    return total


def bench_backend(label: str, url: str, args: argparse.Namespace, tmp: Path) -> None:
    events_script, usage_script = tmp / "events.lua", tmp / "usage.lua"
    events_script.write_text(EVENTS_LUA)
    usage_script.write_text(USAGE_LUA)
    server = Server(url)
    try:
        provision(server)
        for name, script, per_request, connections in (
                ("events", events_script, 1000, args.connections),
                ("usage reports", usage_script, 1, 64)):
            before = consumed(server)
            answered, results = 0, []
            for n in range(args.runs):
                r = wrk(server, script, connections, args.seconds, CUSTOMERS,
                        f"{label}-{name[0]}-{n}-{secrets.token_hex(3)}")
                assert r["non2xx"] == 0 and r["socket_errors"] == 0, r
                answered += r["requests"]
                results.append(r)
            rate = statistics.median(r["rps"] for r in results) * per_request
            p50 = statistics.median(r["p50"] for r in results)
            p99 = statistics.median(r["p99"] for r in results)
            print(f"{label:10} {name:13} c={connections:<3} {rate:>9,.0f}/s   "
                  f"p50 {p50:7.2f} ms   p99 {p99:7.2f} ms", flush=True)
            # One credit per event or report, exactly once; wrk does not count the
            # requests still in flight when a run ends.
            spent = consumed(server) - before
            in_flight = args.runs * connections * per_request
            assert answered * per_request <= spent <= answered * per_request + in_flight, (
                spent, answered)
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--connections", type=int, default=8)
    args = bench_http.wrk_arguments(parser, "bench_events")
    print(f"# creditd events benchmark: Python {platform.python_version()}, "
          f"{platform.machine()}, {os.cpu_count()} cores; server, database and wrk on the same "
          f"machine; median of {args.runs} runs of {args.seconds} s; durability=sync; "
          f"{CUSTOMERS} customers")
    with tempfile.TemporaryDirectory() as tmp:
        bench_http.each_backend(
            args, tmp, lambda label, url: bench_backend(label, url, args, Path(tmp)))


if __name__ == "__main__":
    main()
