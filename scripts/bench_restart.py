#!/usr/bin/env python3
"""How long a start takes to fill the key filter on a database holding many keys, with and
without the filter's bits saved in the database (issue 15).

Until the filter holds every key written before the start, every new key is checked
against the database (persistence/key_filter.py): after a 30-minute soak (10 M keys) a new
process answered 24 % of a fresh one's rate in its first 20 s. This script writes --keys
idempotency keys straight into the current week's key tables (runs of
`sql.key_run_rows` keys, over --customers customers provisioned through the engine), then
opens the store in this process, in turn: with the saved bits removed (every run is read
back) and with them (only the run being written is), --runs times each, and prints the
median time until the filter is ready and the keys read.

It opens the store without a cluster, as `creditd serve` on SQLite (or with
CREDITD_CLUSTER=off) does. On PostgreSQL `creditd serve` is a cluster node by default, which
takes the same saved bits back when it reads the keys back for the shards it takes
(`DurableStore.reindex_keys`); docs/benchmarks.md has that start measured on a soaked
database ("A new process on the soaked database: the cluster node's read-back").

Usage: .venv/bin/python scripts/bench_restart.py [--keys 5000000] [--customers 2000]
       [--runs 3] [--only sqlite|postgresql] [--pg postgresql://postgres@127.0.0.1:5432/postgres]
"""

from __future__ import annotations

import argparse
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import anyio  # noqa: E402
import asyncpg  # noqa: E402
import bench_store  # noqa: E402

from engine.core.commands import CreateGrant  # noqa: E402
from engine.core.model import GrantType  # noqa: E402
from engine.runtime import Runtime  # noqa: E402
from persistence import open_store, sql  # noqa: E402

BATCH = 100_000


def runs_for(keys: int) -> list[int]:
    """How many keys each run holds when `keys` were written in order."""
    sizes, run = [], 0
    while keys > 0:
        sizes.append(min(keys, sql.key_run_rows(run)))
        keys -= sizes[-1]
        run += 1
    return sizes


async def provision(url: str, customers: list[str]) -> None:
    async with open_store(url) as store, Runtime(store, passivate_after_ms=None) as rt:
        async with anyio.create_task_group() as tg:
            for c in customers:
                tg.start_soon(rt.submit, c, CreateGrant(
                    grant_id=str(uuid.uuid4()), currency_id="tokens", amount=10**12,
                    grant_type=GrantType.PAID, display_name="bench"))


def rows(first: int, count: int, customers: int, now_ms: int) -> list[tuple]:
    return [(1 + i % customers, now_ms, None, f"consume:{uuid.UUID(int=i)}", b"r", b"a")
            for i in range(first, first + count)]


async def fill_pg(url: str, sizes: list[int], customers: int, generation: int,
                  period: int, now_ms: int) -> None:
    conn = await asyncpg.connect(url)
    try:
        nums = [r[0] for r in await conn.fetch("SELECT num FROM customers ORDER BY num")]
        assert len(nums) == customers
        done = 0
        for run, size in enumerate(sizes):
            table = sql.key_table(generation, run)
            if run > 0:
                for statement in sql.key_table_statements("postgresql", table):
                    await conn.execute(statement)
            for start in range(0, size, BATCH):
                batch = rows(done + start, min(BATCH, size - start), customers, now_ms)
                await conn.copy_records_to_table(
                    table, records=[(nums[r[0] - 1], *r[1:]) for r in batch],
                    columns=["customer", "created_at", "op_seq", "key", "request", "reply"])
            done += size
        await conn.execute("UPDATE key_generations SET period = $1, runs = $2, run = $3 "
                           "WHERE generation = $4", period, len(sizes), len(sizes) - 1,
                           generation)
        await conn.execute("VACUUM ANALYZE")
    finally:
        await conn.close()


def fill_sqlite(path: str, sizes: list[int], customers: int, generation: int, period: int,
                now_ms: int) -> None:
    db = sqlite3.connect(path, isolation_level=None)
    try:
        nums = [r[0] for r in db.execute("SELECT num FROM customers ORDER BY num")]
        assert len(nums) == customers
        done = 0
        for run, size in enumerate(sizes):
            table = sql.key_table(generation, run)
            db.execute("BEGIN")
            if run > 0:
                for statement in sql.key_table_statements("sqlite", table):
                    db.execute(statement)
            for start in range(0, size, BATCH):
                batch = rows(done + start, min(BATCH, size - start), customers, now_ms)
                db.executemany(f"INSERT INTO {table} (customer, created_at, op_seq, key, "
                               "request, reply) VALUES (?, ?, ?, ?, ?, ?)",
                               [(nums[r[0] - 1], *r[1:]) for r in batch])
            db.execute("COMMIT")
            done += size
        db.execute("UPDATE key_generations SET period = ?, runs = ?, run = ? "
                   "WHERE generation = ?", (period, len(sizes), len(sizes) - 1, generation))
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        db.close()


async def open_once(url: str, keep_saved: bool) -> tuple[float, int, int]:
    """Open the store, wait for the filter; (seconds, keys read, runs restored)."""
    if not keep_saved:
        async with open_store(url, key_filter_bytes=0) as store:
            for table in sql.KEY_FILTER_TABLES:
                await store.execute(f"DELETE FROM {table}")
    started = time.perf_counter()
    async with open_store(url) as store:
        await store.keys_indexed.wait()
        took = time.perf_counter() - started
        stats = store.statistics()
        assert stats["key_filter_ready"]
    return took, int(stats["key_filter_keys_read"]), int(stats["key_filter_runs_restored"])


async def bench(name: str, url: str, keys: int, customers: int,
                runs: int) -> None:
    now_ms = int(time.time() * 1000)
    period = now_ms // sql.KEY_GENERATION_MS
    generation = period % 2
    ids = [f"bench/c{i}" for i in range(customers)]
    started = time.perf_counter()
    await provision(url, ids)
    sizes = runs_for(keys)
    if name == "postgresql":
        await fill_pg(url, sizes, customers, generation, period, now_ms)
    else:
        await anyio.to_thread.run_sync(fill_sqlite, url.removeprefix("sqlite:///"), sizes,
                                       customers, generation, period, now_ms)
    print(f"  {name}: {keys:,} keys in {len(sizes)} runs (the last holding {sizes[-1]:,}), "
          f"written in {time.perf_counter() - started:.0f} s", flush=True)
    results: dict[bool, list[tuple[float, int, int]]] = {False: [], True: []}
    await open_once(url, keep_saved=True)  # a first start reads every run and saves
    for _ in range(runs):
        for keep in (False, True):
            results[keep].append(await open_once(url, keep))
            took, read, restored = results[keep][-1]
            print(f"    {'saved bits  ' if keep else 'no saved bits'}  ready in {took:6.2f} s, "
                  f"{read:,} keys read, {restored} runs restored", flush=True)
    without = statistics.median(r[0] for r in results[False])
    with_ = statistics.median(r[0] for r in results[True])
    print(f"  {name:<10} without saved bits {without:6.2f} s ({results[False][0][1]:,} keys "
          f"read)   with {with_:6.2f} s ({results[True][0][1]:,} keys read)   "
          f"{without / with_:.1f}x sooner", flush=True)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=5_000_000)
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", choices=["sqlite", "postgresql"])
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    print(f"# creditd restart benchmark: Python {platform.python_version()}, "
          f"{platform.machine()}, key filter 32 MiB (the default); median of {args.runs} "
          "starts each", flush=True)
    if args.only != "postgresql":
        with tempfile.TemporaryDirectory() as tmp:
            await bench("sqlite", f"sqlite:///{Path(tmp) / 'restart.db'}", args.keys,
                        args.customers, args.runs)
    if args.only != "sqlite":
        name, url = await bench_store.fresh_pg_database(args.pg)
        try:
            await bench("postgresql", url, args.keys, args.customers, args.runs)
        finally:
            await bench_store.drop_pg_database(args.pg, name)


if __name__ == "__main__":
    anyio.run(main)
