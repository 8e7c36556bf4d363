#!/usr/bin/env python3
"""Durable consumptions through actor + store, against a hand-written baseline.

For SQLite and PostgreSQL, with 1 and 64 concurrent clients, on 1 hot customer and on
10,000 customers, it prints durable consumptions/s and p50/p99 latency (median of --runs
runs). Every consumption carries an idempotency key (the contract requires one) and is
acknowledged only after its transaction committed (durability=sync).

In the same run, the baseline a team would write by hand on PostgreSQL: per request, one
transaction doing `UPDATE balances SET balance = balance - $1 WHERE customer_id = $2 AND
balance >= $1 RETURNING balance` and an INSERT into a ledger table, from a pool of as many
connections as clients. The ratio column is creditd / baseline for the same shape. Both
run in this one process with the garbage collector set as `creditd serve` sets it
(`--default-gc` keeps Python's defaults).

And the baseline teams build on Redis (issue 20): one Lua script per request that checks
the balance, decrements it, remembers the idempotency key (a replay returns the first
answer) and appends a ledger entry, atomically, against a redis-server the script starts
itself with `appendonly yes` and `appendfsync always` (every write on disk before the
answer: the same promise as creditd's sync durability) and then `everysec` (up to a
second of acknowledged writes lost on a crash), through redis-py's asyncio client (with
hiredis) and a pool of as many connections as clients. Ratios: creditd PostgreSQL / Redis
for the same shape.

The PostgreSQL and Redis contestants of a shape run in turn: each round runs each once,
in an order rotated from round to round, and a ratio is the median of the rounds' ratios,
so the host's drift between minutes falls on both sides of it alike.

Usage: .venv/bin/python scripts/bench_store.py [--runs 3] [--ops 20000]
       [--pg postgresql://postgres@127.0.0.1/test] [--only sqlite|postgresql|redis]
       [--default-gc]
It creates and drops its own databases (PostgreSQL), files (SQLite, in a temp dir) and
Redis servers (`redis-server` on PATH, redis-py from the `bench` extra:
`.venv/bin/pip install -e '.[bench]'`).
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import anyio  # noqa: E402
import asyncpg  # noqa: E402

from engine.core.commands import Consume, ConsumeReply, CreateGrant  # noqa: E402
from engine.core.model import GrantType  # noqa: E402
from engine.runtime import Runtime  # noqa: E402
from persistence import open_store  # noqa: E402

BIG = 10**16


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


async def drive(clients: int, ops: int, customers: list[str], call) -> tuple[float, list[float]]:
    """Run `ops` calls spread over `clients` concurrent loops; return (ops/s, latencies)."""
    latencies: list[float] = []
    per_client = ops // clients
    rng = random.Random(7)
    picks = [[rng.choice(customers) for _ in range(per_client)] for _ in range(clients)]

    async def client(i: int) -> None:
        for n, customer in enumerate(picks[i]):
            t0 = time.perf_counter()
            await call(customer, f"{i}-{n}")
            latencies.append(time.perf_counter() - t0)

    start = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for i in range(clients):
            tg.start_soon(client, i)
    return per_client * clients / (time.perf_counter() - start), latencies


async def run_creditd(url: str, clients: int, ops: int, ncustomers: int) -> tuple[float, list[float]]:
    customers = [f"cust-{i}" for i in range(ncustomers)]
    async with open_store(url) as store:
        async with Runtime(store, passivate_after_ms=None) as rt:
            async def grant(c: str) -> None:
                await rt.submit(c, CreateGrant(grant_id=f"g-{c}", currency_id="tok", amount=BIG,
                                               grant_type=GrantType.PAID, display_name="bench"))
            async with anyio.create_task_group() as tg:
                for c in customers:
                    tg.start_soon(grant, c)
            run = uuid.uuid4().hex[:8]

            async def consume(customer: str, key: str) -> None:
                reply = await rt.submit(customer, Consume(currency_id="tok", amount=7,
                                                          idempotency_key=f"{run}-{key}"))
                assert isinstance(reply, ConsumeReply), reply

            return await drive(clients, ops, customers, consume)


BASELINE_SCHEMA = [
    "CREATE TABLE balances (customer_id TEXT PRIMARY KEY, balance BIGINT NOT NULL)",
    """CREATE TABLE ledger (id BIGSERIAL PRIMARY KEY, customer_id TEXT NOT NULL,
       amount BIGINT NOT NULL, idempotency_key TEXT NOT NULL UNIQUE,
       created_at TIMESTAMPTZ NOT NULL DEFAULT now())""",
]


async def run_baseline(dsn: str, clients: int, ops: int, ncustomers: int) -> tuple[float, list[float]]:
    customers = [f"cust-{i}" for i in range(ncustomers)]
    pool = await asyncpg.create_pool(dsn, min_size=clients, max_size=clients)
    try:
        async with pool.acquire() as c:
            await c.execute("DROP TABLE IF EXISTS balances, ledger")
            for statement in BASELINE_SCHEMA:
                await c.execute(statement)
            await c.executemany("INSERT INTO balances VALUES ($1, $2)", [(x, BIG) for x in customers])

        async def consume(customer: str, key: str) -> None:
            async with pool.acquire() as c, c.transaction():
                row = await c.fetchrow(
                    "UPDATE balances SET balance = balance - $1 WHERE customer_id = $2 "
                    "AND balance >= $1 RETURNING balance", 7, customer)
                assert row is not None
                await c.execute("INSERT INTO ledger (customer_id, amount, idempotency_key) "
                                "VALUES ($1, $2, $3)", customer, -7, key)

        return await drive(clients, ops, customers, consume)
    finally:
        await pool.close()


async def fresh_pg_database(admin_dsn: str) -> tuple[str, str]:
    name = f"creditd_bench_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(admin_dsn)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    base = admin_dsn.rsplit("/", 1)[0]
    return name, f"{base}/{name}"


async def drop_pg_database(admin_dsn: str, name: str) -> None:
    conn = await asyncpg.connect(admin_dsn)
    await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await conn.close()


# KEYS: the balance, the idempotency key, the ledger list. ARGV: amount, key, now (ms).
# Returns {1, reply} for a replay (the first answer), {0, "insufficient"} for a refusal,
# {2, balance after} for a new consumption. Lua's numbers are doubles: balances stay
# below 2^53 (REDIS_BALANCE).
REDIS_CONSUME = """
local prior = redis.call('GET', KEYS[2])
if prior then return {1, prior} end
local amount = tonumber(ARGV[1])
local balance = tonumber(redis.call('GET', KEYS[1]) or '0')
if balance < amount then return {0, 'insufficient'} end
local after = redis.call('DECRBY', KEYS[1], amount)
redis.call('SET', KEYS[2], after, 'EX', 604800)
redis.call('RPUSH', KEYS[3], ARGV[2] .. ' ' .. ARGV[3] .. ' -' .. amount .. ' ' .. after)
return {2, after}
"""
REDIS_BALANCE = 10**12


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A redis-server of our own, in a temp dir, with the append-only file on."""

    def __init__(self, fsync: str) -> None:
        self.fsync = fsync
        self.port = _free_port()
        self.dir = tempfile.mkdtemp(prefix="creditd-bench-redis-")

    def __enter__(self) -> RedisServer:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", self.dir, "--appendonly", "yes", "--appendfsync", self.fsync,
             "--save", "", "--protected-mode", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.05)

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


async def run_redis(port: int, clients: int, ops: int, ncustomers: int
                    ) -> tuple[float, list[float]]:
    import redis.asyncio as redis  # noqa: PLC0415 (the bench extra; only for this shape)

    customers = [f"cust-{i}" for i in range(ncustomers)]
    pool = redis.BlockingConnectionPool(host="127.0.0.1", port=port, max_connections=clients)
    r = redis.Redis(connection_pool=pool)
    try:
        await r.flushall()
        async with r.pipeline(transaction=False) as p:
            for c in customers:
                p.set(f"balance:{c}", REDIS_BALANCE)
            await p.execute()
        script = r.register_script(REDIS_CONSUME)
        run = uuid.uuid4().hex[:8]

        async def consume(customer: str, key: str) -> None:
            key = f"{run}-{key}"
            code, _ = await script(keys=[f"balance:{customer}", f"idem:{customer}:{key}",
                                         f"ledger:{customer}"],
                                   args=[7, key, int(time.time() * 1000)])
            assert code == 2, code

        return await drive(clients, ops, customers, consume)
    finally:
        await r.aclose()
        await pool.aclose()


def redis_available() -> str | None:
    """Why the Redis baseline cannot run here, or None."""
    if shutil.which("redis-server") is None:
        return "redis-server is not on PATH (Debian: apt install redis-server)"
    try:
        import redis  # noqa: F401, PLC0415
    except ImportError:
        return "redis-py is missing (.venv/bin/pip install -e '.[bench]')"
    return None


def measure(label: str, runs: int, once) -> tuple[float, float, float]:
    rates, p50s, p99s = [], [], []
    for _ in range(runs):
        rate, lat = once()
        rates.append(rate)
        p50s.append(percentile(lat, 0.50) * 1000)
        p99s.append(percentile(lat, 0.99) * 1000)
    result = (statistics.median(rates), statistics.median(p50s), statistics.median(p99s))
    print(f"{label:58s} {result[0]:>10,.0f}/s  p50 {result[1]:6.2f} ms  p99 {result[2]:6.2f} ms",
          flush=True)
    return result


def measure_in_turn(contestants: dict[str, Any], runs: int) -> dict[str, list[float]]:
    """`runs` rounds in which each contestant runs once, the order rotated each round, so
    that the host's drift (this host's speed moves by a fifth within minutes) falls on all
    of them alike; prints each one's median and returns each one's rate per round."""
    rates: dict[str, list[float]] = {label: [] for label in contestants}
    latencies: dict[str, list[tuple[float, float]]] = {label: [] for label in contestants}
    labels = list(contestants)
    for n in range(runs):
        for label in labels[n % len(labels):] + labels[:n % len(labels)]:
            rate, lat = contestants[label]()
            rates[label].append(rate)
            latencies[label].append((percentile(lat, 0.50) * 1000, percentile(lat, 0.99) * 1000))
    for label in labels:
        p50 = statistics.median(x[0] for x in latencies[label])
        p99 = statistics.median(x[1] for x in latencies[label])
        print(f"{label:58s} {statistics.median(rates[label]):>10,.0f}/s  p50 {p50:6.2f} ms  "
              f"p99 {p99:6.2f} ms", flush=True)
    return rates


def ratio(ours: list[float], theirs: list[float]) -> float:
    """The median of the rounds' ratios: each compares two runs minutes apart at most."""
    return statistics.median(a / b for a, b in zip(ours, theirs, strict=True))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--ops", type=int, default=20_000)
    parser.add_argument("--pg", default=os.environ.get("CREDITD_BENCH_PG",
                                                       "postgresql://postgres@127.0.0.1/test"))
    parser.add_argument("--only", choices=["sqlite", "postgresql", "redis"],
                        help="redis: creditd PostgreSQL and the Redis baselines only")
    parser.add_argument("--default-gc", action="store_true",
                        help="keep Python's default GC settings instead of creditd serve's")
    args = parser.parse_args()
    if not args.default_gc:
        # The process is tuned as `creditd serve` tunes its own (gateway.app.tune_gc): with
        # Python's defaults, full collections over 10,000 resident customers paused every
        # client for up to ~100 ms, which is the tail of a library, not of the server.
        from gateway.app import tune_gc

        tune_gc()
    print(f"# creditd store benchmark — Python {platform.python_version()}, {os.cpu_count()} cores, "
          f"durable (sync) consumptions with idempotency keys, median of {args.runs} runs")
    shapes = [(1, 1), (64, 1), (1, 10_000), (64, 10_000)]
    tmp = tempfile.mkdtemp(prefix="creditd-bench-")
    if args.only in (None, "sqlite"):
        for clients, ncust in shapes:
            ops = args.ops // 10 if clients == 1 else args.ops

            def once(clients=clients, ncust=ncust, ops=ops):
                path = Path(tmp) / f"{uuid.uuid4().hex}.db"
                return anyio.run(run_creditd, f"sqlite:///{path}", clients, ops, ncust)

            measure(f"creditd SQLite     clients={clients:<3} customers={ncust:<6}", args.runs, once)
    why_not_redis = redis_available()
    if why_not_redis:
        print(f"# no Redis baseline: {why_not_redis}")
    if args.only in (None, "postgresql", "redis"):
        for clients, ncust in shapes:
            ops = args.ops // 10 if clients == 1 else args.ops

            def once_creditd(clients=clients, ncust=ncust, ops=ops):
                async def go():
                    name, dsn = await fresh_pg_database(args.pg)
                    try:
                        return await run_creditd(dsn, clients, ops, ncust)
                    finally:
                        await drop_pg_database(args.pg, name)
                return anyio.run(go)

            def once_baseline(clients=clients, ncust=ncust, ops=ops):
                async def go():
                    name, dsn = await fresh_pg_database(args.pg)
                    try:
                        return await run_baseline(dsn, clients, ops, ncust)
                    finally:
                        await drop_pg_database(args.pg, name)
                return anyio.run(go)

            contestants = {
                f"creditd PostgreSQL clients={clients:<3} customers={ncust:<6}": once_creditd}
            if args.only != "redis":
                contestants[f"hand-written PG    clients={clients:<3} customers={ncust:<6}"] = \
                    once_baseline
            for fsync in () if why_not_redis else ("always", "everysec"):
                def once_redis(clients=clients, ncust=ncust, ops=ops, fsync=fsync):
                    with RedisServer(fsync) as server:
                        return anyio.run(run_redis, server.port, clients, ops, ncust)

                contestants[f"Redis Lua {fsync:<8} clients={clients:<3} customers={ncust:<6}"] = \
                    once_redis
            results = measure_in_turn(contestants, args.runs)
            ours, *others = contestants
            for other in others:
                what = ("creditd / hand-written" if other.startswith("hand-written")
                        else "creditd PostgreSQL / Redis " + other.split()[2])
                rounds = ", ".join(f"{a / b:.2f}" for a, b in zip(
                    results[ours], results[other], strict=True))
                print(f"{'  ratio ' + what:58s} {ratio(results[ours], results[other]):>10.2f}x"
                      f"  (per round: {rounds})")

if __name__ == "__main__":
    main()
