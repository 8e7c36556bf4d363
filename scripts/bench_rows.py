#!/usr/bin/env python3
"""Bytes on disk per durable consumption, table by table, on SQLite and PostgreSQL.

Runs the engine and a store in this process (no HTTP): provisions --customers customers
with one grant each, checkpoints and measures, then applies --ops consumptions spread over
them from 64 concurrent clients, each with a fresh idempotency key (a UUID, as clients
send them), checkpoints and measures again. The difference, divided by the consumptions,
is what each one costs on disk: its ledger row, its remembered key, and their indexes,
plus its share of what is updated in place (balances, hourly buckets).

Measured after a checkpoint, indexes included: SQLite through `dbstat` (pages in use by
each table and index) after `wal_checkpoint(TRUNCATE)`; PostgreSQL through `pg_table_size`
(tables) and `pg_relation_size` (indexes) after `VACUUM` and `CHECKPOINT` (dead versions of
rows updated in place are what autovacuum reclaims anyway).

Usage: .venv/bin/python scripts/bench_rows.py [--ops 100000] [--customers 1000]
       [--only sqlite|postgresql] [--pg postgresql://postgres@127.0.0.1:5432/postgres]
"""

from __future__ import annotations

import argparse
import platform
import secrets
import sqlite3
import sys
import tempfile
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import anyio  # noqa: E402
import asyncpg  # noqa: E402

from engine.core.commands import Consume, ConsumeReply, CreateGrant  # noqa: E402
from engine.core.model import GrantType  # noqa: E402
from engine.runtime import Runtime  # noqa: E402
from persistence import open_store  # noqa: E402

CLIENTS = 64


async def load(url: str, customers: list[str], ops: int) -> int:
    """Grants (first call, ops=0) or consumptions; returns how many consumptions ran."""
    async with open_store(url) as store, Runtime(store, passivate_after_ms=None) as rt:
        if ops == 0:
            async with anyio.create_task_group() as tg:
                for c in customers:
                    tg.start_soon(rt.submit, c, CreateGrant(
                        grant_id=str(uuid.uuid4()), currency_id="tokens", amount=10**16,
                        grant_type=GrantType.PAID, display_name="bench"))
            return 0
        per_client = ops // CLIENTS

        async def client(i: int) -> None:
            for n in range(per_client):
                reply = await rt.submit(customers[(n * 7919 + i) % len(customers)], Consume(
                    currency_id="tokens", amount=50_000,
                    idempotency_key=f"consume:{uuid.uuid4()}"))
                assert isinstance(reply, ConsumeReply), reply

        async with anyio.create_task_group() as tg:
            for i in range(CLIENTS):
                tg.start_soon(client, i)
        return per_client * CLIENTS


def sqlite_sizes(path: str) -> dict[str, int]:
    db = sqlite3.connect(path)
    try:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return dict(db.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name"))
    finally:
        db.close()


async def pg_sizes(url: str) -> dict[str, int]:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("VACUUM")
        await conn.execute("CHECKPOINT")
        # Each table (its heap, free-space and visibility maps, TOAST) and each index.
        rows = await conn.fetch(
            "SELECT c.relname, CASE c.relkind WHEN 'i' THEN pg_relation_size(c.oid) "
            "ELSE pg_table_size(c.oid) END FROM pg_class c JOIN pg_namespace n "
            "ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relkind IN ('r', 'i')")
        return {r[0]: int(r[1]) for r in rows}
    finally:
        await conn.close()


def report(label: str, before: dict[str, int], after: dict[str, int], ops: int) -> None:
    grew = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
    print(f"{label}: {sum(grew.values()) / ops:,.1f} bytes per consumption "
          f"({ops:,} consumptions)", flush=True)
    for name, size in sorted(grew.items(), key=lambda kv: -kv[1]):
        print(f"  {name:40} {size / ops:8.1f}")


def bench_sqlite(args: argparse.Namespace, customers: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/rows.db"
        anyio.run(load, f"sqlite:///{path}", customers, 0)
        before = sqlite_sizes(path)
        ops = anyio.run(load, f"sqlite:///{path}", customers, args.ops)
        report("sqlite", before, sqlite_sizes(path), ops)


async def _admin(pg: str, statement: str) -> None:
    conn = await asyncpg.connect(pg)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


def bench_postgresql(args: argparse.Namespace, customers: list[str]) -> None:
    name = f"creditd_rows_{secrets.token_hex(4)}"
    url = f"{args.pg.rsplit('/', 1)[0]}/{name}"
    anyio.run(_admin, args.pg, f'CREATE DATABASE "{name}"')
    try:
        anyio.run(load, url, customers, 0)
        before = anyio.run(pg_sizes, url)
        ops = anyio.run(load, url, customers, args.ops)
        report("postgresql", before, anyio.run(pg_sizes, url), ops)
    finally:
        anyio.run(_admin, args.pg, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ops", type=int, default=100_000)
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument("--only", choices=["sqlite", "postgresql"])
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    print(f"# creditd bytes on disk per consumption: Python {platform.python_version()}, "
          f"SQLite {sqlite3.sqlite_version}; {args.customers:,} customers, keys are UUIDs")
    customers = [f"default/cust-{i}" for i in range(args.customers)]
    if args.only in (None, "sqlite"):
        bench_sqlite(args, customers)
    if args.only in (None, "postgresql"):
        bench_postgresql(args, customers)


if __name__ == "__main__":
    main()
