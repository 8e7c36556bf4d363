#!/usr/bin/env python3
"""Live feed latency: from a consumption's HTTP acknowledgement to its balance frame.

Starts `creditd serve` on a fresh SQLite file (durability sync), provisions customers with
a grant, and opens websocket subscribers in a separate process (asyncio on uvloop, the
`websockets` client): 1,000 and 10,000 of them, spread one per customer, or all on one
customer. A driver then makes consumptions of one credit at a fixed pace, one at a time,
and notes when each is acknowledged. Every subscriber notes when the balance frame
showing that consumption arrives (the frame's totalConsumed says which one). All three
processes share the machine's cores and its monotonic clock.

Per scenario it prints the median over --runs runs of the p50/p99 latency over every
(consumption, subscriber) pair, the frames delivered per second, and how many balance
updates a subscriber never saw because a newer one replaced them (coalescing: expected
only when a subscriber falls behind). Then the sustained rate: consumptions at
concurrency 16 over 1,000 customers with a subscriber each, and the frames per second
the feed delivered alongside.

Usage: .venv/bin/python scripts/bench_feed.py [--runs 3] [--seconds 5] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_http import CURRENCY, KEY, Server

# (subscribers, "spread" one per customer | "one" customer, consumptions per second)
SCENARIOS = [(1_000, "spread", 100), (1_000, "one", 20), (10_000, "spread", 100),
             (10_000, "one", 2)]


# -- the subscriber process ------------------------------------------------------------


async def _subscribers(url: str, key: str, customers: list[str], per_customer: int,
                       out: str) -> None:
    import msgspec
    import websockets

    decode = msgspec.json.decode
    seen: list[tuple[str, int, int]] = []  # (customer, totalConsumed, monotonic ns)
    sockets = []

    async def read(ws, customer: str) -> None:
        try:
            async for message in ws:
                now = time.monotonic_ns()
                frame = decode(message)
                if frame["type"] == "balance":
                    seen.append((customer, int(frame["totalConsumed"]), now))
        except websockets.ConnectionClosed:
            pass

    async def connect(customer: str) -> None:
        ws = await websockets.connect(f"{url}?customerId={customer}",
                                      additional_headers={"X-API-KEY": key},
                                      ping_interval=None, max_queue=None)
        first = decode(await ws.recv())
        assert first["type"] == "snapshot", first
        sockets.append(ws)
        asyncio.get_running_loop().create_task(read(ws, customer))

    wanted = [c for c in customers for _ in range(per_customer)]
    for i in range(0, len(wanted), 200):  # 200 handshakes at a time
        await asyncio.gather(*(connect(c) for c in wanted[i:i + 200]))
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    Path(out).write_text(json.dumps(seen))  # the run is over: blocking is fine
    for ws in sockets:
        ws.transport.abort()


# -- the driver ------------------------------------------------------------------------


def provision(http: httpx.Client, customers: list[str]) -> None:
    r = http.post("/api/v1/credits/custom-currencies", json={"id": CURRENCY,
                                                           "displayName": "Tokens"})
    assert r.status_code in (200, 409), r.text

    async def one(client: httpx.AsyncClient, cid: str) -> None:
        r = await client.post("/api/v1/customers", json={"id": cid})
        if r.status_code == 409:
            return
        r = await client.post("/api/v1/credits/grants", json={
            "customerId": cid, "currencyId": CURRENCY, "amount": 10**9,
            "displayName": "bench", "grantType": "PAID"})
        assert r.status_code == 200, r.text

    async def run() -> None:
        async with httpx.AsyncClient(base_url=str(http.base_url), headers=dict(http.headers),
                                     timeout=60) as client:
            for i in range(0, len(customers), 32):
                await asyncio.gather(*(one(client, c) for c in customers[i:i + 32]))

    asyncio.run(run())


def scenario(server: Server, subscribers: int, shape: str, rate: int, seconds: float,
             tmp: str) -> dict[str, float]:
    customers = ([f"feed-{i}" for i in range(subscribers)] if shape == "spread"
                 else ["feed-one"])
    per_customer = 1 if shape == "spread" else subscribers
    http = httpx.Client(base_url=server.url, headers={"X-API-KEY": KEY}, timeout=60)
    provision(http, customers)
    out = os.path.join(tmp, f"seen-{subscribers}-{shape}.json")
    sub = subprocess.Popen(
        [sys.executable, __file__, "--subscriber", server.url.replace("http", "ws")
         + "/api/v1/credits/stream", KEY, str(per_customer), out, *customers],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert sub.stdout is not None and sub.stdin is not None
    line = sub.stdout.readline()
    assert line.strip() == "ready", line
    acks: dict[tuple[str, int], int] = {}
    start = time.monotonic()
    n = 0
    while time.monotonic() - start < seconds:
        due = start + n / rate
        pause = due - time.monotonic()
        if pause > 0:
            time.sleep(pause)  # pacing the load, not synchronizing anything
        customer = customers[(n * 7919) % len(customers)]
        r = http.post("/api/v1/credits/consumption", json={
            "customerId": customer, "currencyId": CURRENCY, "amount": 1,
            "idempotencyKey": f"feed-{time.time_ns()}-{n}"})
        now = time.monotonic_ns()
        assert r.status_code == 200, r.text
        total = int(r.json()["data"]["credit"]["currentUsage"])
        acks[(customer, total)] = now
        n += 1
    time.sleep(1.0)  # frames still in flight; one missing after a second counts as missed
    sub.stdin.write("stop\n")
    sub.stdin.flush()
    sub.wait(timeout=120)
    with open(out) as f:
        seen = json.load(f)
    latencies = []
    for customer, total, at in seen:
        ack = acks.get((customer, total))
        if ack is not None:
            latencies.append(max(0, at - ack) / 1e6)
    expected = len(acks) * per_customer
    latencies.sort()
    http.close()
    return {
        "updates": len(acks),
        "p50": statistics.median(latencies) if latencies else float("nan"),
        "p99": latencies[int(0.99 * (len(latencies) - 1))] if latencies else float("nan"),
        "frames_per_s": len(seen) / seconds,
        "missed": expected - len(latencies),
    }


def sustained(server: Server, seconds: float, tmp: str) -> dict[str, float]:
    """Consumptions at concurrency 16 over 1,000 subscribed customers, as fast as they go."""
    customers = [f"feed-{i}" for i in range(1000)]
    http = httpx.Client(base_url=server.url, headers={"X-API-KEY": KEY}, timeout=60)
    provision(http, customers)
    out = os.path.join(tmp, "seen-sustained.json")
    sub = subprocess.Popen(
        [sys.executable, __file__, "--subscriber", server.url.replace("http", "ws")
         + "/api/v1/credits/stream", KEY, "1", out, *customers],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert sub.stdout is not None and sub.stdin is not None
    assert sub.stdout.readline().strip() == "ready"

    async def drive() -> int:
        done = 0
        deadline = time.monotonic() + seconds

        async def worker(w: int, client: httpx.AsyncClient) -> None:
            nonlocal done
            i = 0
            while time.monotonic() < deadline:
                customer = customers[(w * 7919 + i * 31) % len(customers)]
                r = await client.post("/api/v1/credits/consumption", json={
                    "customerId": customer, "currencyId": CURRENCY, "amount": 1,
                    "idempotencyKey": f"s-{w}-{i}-{time.time_ns()}"})
                assert r.status_code == 200, r.text
                done += 1
                i += 1

        async with httpx.AsyncClient(base_url=server.url, headers={"X-API-KEY": KEY},
                                     timeout=60) as client:
            await asyncio.gather(*(worker(w, client) for w in range(16)))
        return done

    done = asyncio.run(drive())
    time.sleep(1.0)
    sub.stdin.write("stop\n")
    sub.stdin.flush()
    sub.wait(timeout=120)
    with open(out) as f:
        seen = json.load(f)
    http.close()
    return {"updates_per_s": done / seconds, "frames_per_s": len(seen) / seconds,
            "coalesced": done - len(seen)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--quick", action="store_true", help="only the 1,000-subscriber cases")
    parser.add_argument("--subscriber", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.subscriber:
        url, key, per_customer, out, *customers = args.subscriber
        try:
            import uvloop
            uvloop.install()
        except ImportError:
            pass
        asyncio.run(_subscribers(url, key, customers, int(per_customer), out))
        return
    print(f"# creditd feed benchmark: Python {platform.python_version()}, "
          f"{platform.machine()}, {os.cpu_count()} cores; server (SQLite, durability=sync), "
          f"driver and subscriber process on the same machine; median of {args.runs} runs "
          f"of {args.seconds:g} s", flush=True)
    env = {"CREDITD_FEED_SUBSCRIBERS_MAX": "20000",
           "CREDITD_FEED_CUSTOMER_SUBSCRIBERS_MAX": "20000",
           "CREDITD_FEED_HEARTBEAT_S": "3600"}
    scenarios = [s for s in SCENARIOS if not args.quick or s[0] == 1_000]
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(f"sqlite:///{tmp}/bench.db", env=env)
        try:
            for subscribers, shape, rate in scenarios:
                runs = [scenario(server, subscribers, shape, rate, args.seconds, tmp)
                        for _ in range(args.runs)]
                med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
                where = "one per customer" if shape == "spread" else "all on one customer"
                print(f"{subscribers:>6,} subscribers, {where:20} {rate:>4}/s consumptions: "
                      f"ack->frame p50 {med['p50']:6.2f} ms  p99 {med['p99']:7.2f} ms  "
                      f"{med['frames_per_s']:>9,.0f} frames/s  missed {med['missed']:.0f}",
                      flush=True)
            runs = [sustained(server, args.seconds, tmp) for _ in range(args.runs)]
            med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            print(f"sustained, 1,000 subscribed customers, 16 concurrent consumers: "
                  f"{med['updates_per_s']:,.0f} consumptions/s, {med['frames_per_s']:,.0f} "
                  f"balance frames/s delivered, {med['coalesced']:,.0f} coalesced", flush=True)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
