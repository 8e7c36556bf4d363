#!/usr/bin/env python3
"""Engine benchmark: pure core, actor runtime, and resident memory per idle customer.

Prints the median of --runs runs for each figure, on asyncio, trio, and asyncio on uvloop
(the loop `creditd serve` runs on: uvicorn installs it when it is available):
  - pure-core consumptions/s (engine.core.machine.apply, no runtime), with and without
    idempotency keys;
  - actor consumptions/s through Runtime.submit with 1 and 64 concurrent senders on one
    customer, with the in-process MemoryStore (every batch is copied into store rows);
  - resident memory per idle customer holding one grant, over --customers customers
    (tracemalloc: bytes allocated when the customers are activated from the store).

Usage: .venv/bin/python scripts/bench_engine.py [--runs 5] [--customers 100000]
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import anyio  # noqa: E402

from engine.core.commands import Consume, CreateGrant, GetBalances  # noqa: E402
from engine.core.effects import Effects  # noqa: E402
from engine.core.machine import apply  # noqa: E402
from engine.core.model import CustomerState, GrantType  # noqa: E402
from engine.runtime import ManualClock, Runtime  # noqa: E402
from persistence import MemoryStore  # noqa: E402

BIG = 10**15  # units: enough credits never to run out during a run


def bench_core(n: int, with_keys: bool) -> float:
    state = CustomerState("c")
    fx = Effects()
    now = 1_000
    apply(state, CreateGrant(grant_id="g1", currency_id="tok", amount=BIG, grant_type=GrantType.PAID,
                             display_name="g"), now, fx)
    apply(state, CreateGrant(grant_id="g2", currency_id="tok", amount=BIG, grant_type=GrantType.PROMOTIONAL,
                             display_name="g", priority=10), now, fx)
    if with_keys:
        commands = [Consume(currency_id="tok", amount=7, idempotency_key=f"k{i}") for i in range(n)]
    else:
        commands = [Consume(currency_id="tok", amount=7)] * n
    # Batches of 512, as the runtime hands them to the core, with the effects cleared
    # between batches as the store would take them.
    gc.collect()
    start = time.perf_counter()
    for i in range(0, n, 512):
        fx = Effects()
        for cmd in commands[i : i + 512]:
            apply(state, cmd, now, fx)
    elapsed = time.perf_counter() - start
    return n / elapsed


async def bench_actor(n: int, senders: int) -> float:
    async with Runtime(MemoryStore(), ManualClock(), passivate_after_ms=None) as rt:
        await rt.submit("c", CreateGrant(grant_id="g1", currency_id="tok", amount=BIG,
                                         grant_type=GrantType.PAID, display_name="g"))
        per_sender = n // senders
        cmd = Consume(currency_id="tok", amount=7)

        async def sender() -> None:
            submit = rt.submit
            for _ in range(per_sender):
                await submit("c", cmd)

        start = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for _ in range(senders):
                tg.start_soon(sender)
        elapsed = time.perf_counter() - start
        return per_sender * senders / elapsed


async def bench_memory(customers: int) -> float:
    store = MemoryStore()
    async with Runtime(store, ManualClock(), passivate_after_ms=None,
                       resident_max=customers + 10) as rt:
        for i in range(customers):
            await rt.submit(f"cust-{i:07d}", CreateGrant(
                grant_id=f"grant-{i:07d}", currency_id="tok", amount=100 * 100_000,
                grant_type=GrantType.PAID, display_name="Welcome credits"))
        rt.passivate_idle()
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        read = GetBalances()
        for i in range(customers):
            await rt.submit(f"cust-{i:07d}", read)
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        assert rt.runtime_statistics().resident == customers
        return (after - before) / customers


def median(values: list[float]) -> float:
    return statistics.median(values)


def _has_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--ops", type=int, default=200_000)
    parser.add_argument("--customers", type=int, default=100_000)
    args = parser.parse_args()
    print(f"# creditd engine benchmark — Python {platform.python_version()}, "
          f"{platform.machine()}, {os.cpu_count()} cores, median of {args.runs} runs")
    for keys in (False, True):
        runs = [bench_core(args.ops, keys) for _ in range(args.runs)]
        label = "with idempotency keys" if keys else "no keys"
        print(f"pure core consumptions/s ({label}): {median(runs):,.0f}")
    loops = [("asyncio", "asyncio", {}), ("trio", "trio", {})]
    if _has_uvloop():
        loops.append(("asyncio on uvloop", "asyncio", {"use_uvloop": True}))
    for label, backend, options in loops:
        for senders in (1, 64):
            n = args.ops // 4 if senders == 1 else args.ops
            runs = [anyio.run(bench_actor, n, senders, backend=backend, backend_options=options)
                    for _ in range(args.runs)]
            print(f"actor consumptions/s, {label}, {senders} sender(s): {median(runs):,.0f}")
    for backend in ("asyncio", "trio"):
        runs = [anyio.run(bench_memory, args.customers, backend=backend) for _ in range(max(1, args.runs // 2))]
        print(f"resident bytes per idle customer with one grant, {backend} "
              f"({args.customers:,} customers): {median(runs):,.0f}")


if __name__ == "__main__":
    main()
