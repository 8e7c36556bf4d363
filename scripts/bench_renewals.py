#!/usr/bin/env python3
"""Subscription renewals: how fast the scheduler catches up subscriptions that fall due at
the same instant (a migration, a server back after a stop, or many customers who
subscribed together).

Runs the app in this process on a manual clock (SQLite file, then a fresh PostgreSQL
database), provisions --subscriptions subscriptions to a plan with monthly credits — one
per customer — then moves the clock to the end of their first period and times the
catch-up: every subscription renews, which grants its next month's credits (a durable
engine command) and writes the subscription. Prints renewals/s (median of --runs rounds,
each one month later than the last) and checks that every customer got exactly one grant
per month.

Usage: .venv/bin/python scripts/bench_renewals.py [--subscriptions 2000] [--runs 3]
       [--only sqlite|postgresql] [--pg postgresql://postgres@127.0.0.1:5432/postgres]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import bench_http  # noqa: E402 (after the sys.path lines)

from engine.billing.periods import add_months  # noqa: E402
from engine.runtime.clock import ManualClock  # noqa: E402
from gateway.app import create_app  # noqa: E402
from gateway.config import Settings  # noqa: E402
from persistence import open_store  # noqa: E402
from tests.gateway.test_overload import serve  # noqa: E402

KEY = "bench-renewals"
H = {"X-API-KEY": KEY}


async def _ok(r: httpx.Response) -> Any:
    assert r.status_code in (200, 201), r.text
    return r.json()["data"]


async def bench(url: str, args: argparse.Namespace) -> list[float]:
    clock = ManualClock()
    store = open_store(url, durability="sync")
    app = create_app(Settings(api_keys=[KEY]), store=store, runtime_options={"clock": clock})
    rates = []
    async with serve(app) as http:
        for path, body in (
                ("/api/v1/credits/custom-currencies", {"id": "tokens", "displayName": "T"}),
                ("/api/v1/products", {"id": "ai", "displayName": "AI"}),
                ("/api/v1/plans", {"id": "pro", "displayName": "Pro", "productId": "ai"}),
                ("/api/v1/plans/pro/entitlements", {"entitlements": [
                    {"type": "CREDIT", "id": "tokens", "amount": 1000, "cadence": "MONTH"}]}),
                ("/api/v1/plans/pro/publish", {"migrationType": "NEW_CUSTOMERS"})):
            await _ok(await http.post(path, json=body, headers=H))
        n = args.subscriptions
        start = clock.now_ms()

        async def provision(i: int) -> None:
            await _ok(await http.post("/api/v1/customers", json={"id": f"c{i}"}, headers=H))
            await _ok(await http.post("/api/v1/subscriptions", headers=H,
                                      json={"customerId": f"c{i}", "planId": "pro"}))

        async with anyio.create_task_group() as tg:
            limiter = anyio.CapacityLimiter(32)

            async def one(i: int) -> None:
                async with limiter:
                    await provision(i)

            for i in range(n):
                tg.start_soon(one, i)
        for month in range(1, args.runs + 1):
            target = add_months(start, month)
            began = time.perf_counter()
            r = await http.put("/api/v1/test-clock", json={"now": _iso(target)}, headers=H)
            elapsed = time.perf_counter() - began
            assert r.status_code == 200, r.text
            rates.append(n / elapsed)
        # Exactly one grant per customer per month: the first period's and each renewal's.
        for i in range(0, n, max(1, n // 50)):
            grants = await _ok(await http.get("/api/v1/credits/grants", headers=H,
                                              params={"customerId": f"c{i}", "limit": 100}))
            assert len(grants) == args.runs + 1, (i, len(grants))
    return rates


def _iso(ms: int) -> str:
    from gateway.wire import iso  # noqa: PLC0415

    iso_text = iso(ms)
    assert iso_text is not None
    return iso_text


def main() -> None:
    import logging  # noqa: PLC0415

    logging.getLogger("httpx").setLevel(logging.WARNING)
    parser = argparse.ArgumentParser()
    parser.add_argument("--subscriptions", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", choices=["sqlite", "postgresql"])
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    print(f"# creditd renewals benchmark: Python {platform.python_version()}, "
          f"{platform.machine()}, {os.cpu_count()} cores; in-process app, manual clock; "
          f"{args.subscriptions} subscriptions falling due at once; median of {args.runs} "
          f"monthly rounds; durability=sync", flush=True)

    def run(label: str, url: str) -> None:
        rates = anyio.run(bench, url, args, backend="asyncio")
        print(f"{label:10} renewals  {statistics.median(rates):>9,.0f}/s   "
              f"(rounds: {', '.join(f'{r:,.0f}' for r in rates)})", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        bench_http.each_backend(args, tmp, run)


if __name__ == "__main__":
    main()
