"""A short soak: a real server under a minute of consumptions with a fresh idempotency key
each, spread over customers, with a small memory budget. Its resident memory must level
off once the budget is full, not grow with every request: unbounded, the remembered keys
alone would add about 40 MB here (550 bytes each). `scripts/soak.py` is the long version
(30 minutes, wrk, throughput and disk too: docs/benchmarks.md).

The load comes from a small HTTP/1.1 keep-alive client over raw asyncio streams: several
times faster than a general-purpose client, so the server gets enough requests on the
shared cores to fill its budget early.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import anyio
import pytest

from tests.gateway.conftest import Server, child_pids

pytestmark = pytest.mark.slow

KEY = "soak-key-0123456789abcdef"
CUSTOMERS = 200
CONNECTIONS = 16
LOAD_S = 60.0
WARM_UP_S = 25.0  # the budget fills well before this (checked below)
MEMORY_MB = 16
GROWTH_MAX_MB = 6.0  # RSS may move by allocator slack, not by the keys (tens of MB)


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def rss_mb(pid: int) -> float:
    """The server's resident memory, its own and its child's (SQLite's writer process)."""
    return sum(_rss_kib(p) for p in [pid, *child_pids(pid)]) / 1024


async def drive(port: int, deadline: float, client: int, statuses: dict[int, int]) -> int:
    """Consumptions on one keep-alive connection until `deadline`; returns how many."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    n = 0
    try:
        while time.monotonic() < deadline:
            body = json.dumps({"customerId": f"soak-{(n * 7 + client) % CUSTOMERS}",
                               "currencyId": "tokens", "amount": 0.5,
                               "idempotencyKey": f"soak-{client}-{n}"}).encode()
            writer.write(b"POST /api/v1/credits/consumption HTTP/1.1\r\nHost: x\r\n"
                         b"Content-Type: application/json\r\nX-API-KEY: " + KEY.encode()
                         + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n"
                         + body)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:"))
            await reader.readexactly(length)
            statuses[status] = statuses.get(status, 0) + 1
            n += 1
    finally:
        writer.close()
    return n


async def load(port: int, pid: int) -> tuple[int, dict[int, int], list[tuple[float, float]]]:
    statuses: dict[int, int] = {}
    samples: list[tuple[float, float]] = []
    start = time.monotonic()
    deadline = start + LOAD_S
    counts: list[int] = []

    async def one(i: int) -> None:
        counts.append(await drive(port, deadline, i, statuses))

    async with anyio.create_task_group() as tg:
        for i in range(CONNECTIONS):
            tg.start_soon(one, i)
        while time.monotonic() < deadline:
            samples.append((time.monotonic() - start, rss_mb(pid)))
            await anyio.sleep(1)
    return sum(counts), statuses, samples


def test_memory_levels_off_under_sustained_load(make_server) -> None:
    server: Server = make_server(api_keys=KEY, env={
        "CREDITD_MEMORY_MB": str(MEMORY_MB),
        # A small page cache, so what is measured is the runtime, not SQLite's cache
        # filling up as the database grows.
        "CREDITD_SQLITE_CACHE_MB": "2",
    }).start()
    with server.http(KEY) as http:
        assert http.post("/api/v1/credits/custom-currencies",
                         json={"id": "tokens", "displayName": "Tokens"}).status_code == 200
        for i in range(CUSTOMERS):
            assert http.post("/api/v1/customers", json={"id": f"soak-{i}"}).status_code == 200
            assert http.post("/api/v1/credits/grants", json={
                "customerId": f"soak-{i}", "currencyId": "tokens", "amount": 10**9,
                "displayName": "soak", "grantType": "PAID"}).status_code == 200
    assert server.proc is not None
    requests, statuses, samples = anyio.run(load, server.port, server.proc.pid)

    assert statuses == {200: requests}, statuses
    # Enough traffic that unbounded keys would have shown: at least twice the budget.
    assert requests * 550 > 2 * MEMORY_MB * 1024 * 1024, requests
    after_warm_up = [mb for t, mb in samples if t >= WARM_UP_S]
    growth = max(after_warm_up) - after_warm_up[0]
    table = ", ".join(f"{t:.0f}s {mb:.0f}" for t, mb in samples[::5])
    assert growth < GROWTH_MAX_MB, (
        f"RSS grew {growth:.1f} MiB after warm-up over {requests} requests: {table}")
