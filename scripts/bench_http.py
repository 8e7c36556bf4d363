#!/usr/bin/env python3
"""Synchronous consumptions over HTTP against a running creditd, durable mode.

Starts `creditd serve` (a subprocess) on a fresh SQLite file and on a fresh PostgreSQL
database, provisions a currency and customers with large grants, then drives
`POST /api/v1/credits/consumption` with wrk (a C load generator in a separate process;
Debian package `wrk`) at concurrency 1, 16 and 64. Every request carries a fresh
idempotency key, so each one is a real, durable consumption. Server, database and load
generator share the machine, as they would on a small host.

First, per backend, the HTTP floor: GET /health at c=64 through the same server and
middleware, no engine or database work behind it (FLOOR_LUA says what it does and does not
bound).
Then per backend, concurrency and customer spread it prints the median over --runs runs of
requests/s, of wrk's p50/p99 latency and of the server's CPU per consumption (its event
loop's thread, and its other threads: SQLite's connections), and checks afterwards that the ledger holds
exactly one consumption per 2xx answer (nothing acknowledged lost, nothing doubled).

Usage: .venv/bin/python scripts/bench_http.py [--runs 3] [--seconds 10]
       [--customers 1 1000] [--connections 1 16 64] [--only sqlite|postgresql] [--pg postgresql://postgres@127.0.0.1:5432/postgres]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import anyio
import asyncpg
import httpx

ROOT = Path(__file__).resolve().parent.parent
# The checkout the server runs from (`--root`: another one, to compare two versions of the
# code on the same machine in the same hour; `python -m` puts its directory first).
SERVER_ROOT = ROOT
KEY = "bench-" + secrets.token_hex(8)
CURRENCY = "tokens"

LUA = textwrap.dedent("""
    -- One consumption per request: a fresh idempotency key (thread id + counter) and a
    -- customer picked round-robin from the provisioned ones.
    local counter = 0
    local thread_id = 0
    local customers = tonumber(os.getenv("BENCH_CUSTOMERS"))
    local run = os.getenv("BENCH_RUN")
    local ids = 0
    function setup(thread)
      ids = ids + 1
      thread:set("tid", ids)
    end
    function init(args)
      thread_id = tid
    end
    function request()
      counter = counter + 1
      local customer = "cust-" .. ((counter * 7919 + thread_id) % customers)
      local body = '{"customerId":"' .. customer .. '","currencyId":"tokens","amount":0.5,'
        .. '"idempotencyKey":"' .. run .. '-' .. thread_id .. '-' .. counter .. '"}'
      return wrk.format("POST", "/api/v1/credits/consumption",
        {["Content-Type"] = "application/json", ["X-API-KEY"] = os.getenv("BENCH_KEY")}, body)
    end
""")


# The HTTP floor: GET /health, a Litestar route that does no engine or database work,
# through the same server and middleware. The consumption is a raw ASGI handler (it skips
# Litestar's per-route work), so it can beat this figure on one customer, but the floor
# shows what uvicorn, the event loop and wrk on the same two cores leave at c=64.
FLOOR_LUA = textwrap.dedent("""
    function request()
      return wrk.format("GET", "/health")
    end
""")


class Server:
    def __init__(self, database_url: str, env: dict[str, str] | None = None) -> None:
        self.database_url = database_url
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(4096)
        self.port = sock.getsockname()[1]
        extra = env or {}
        env = {k: v for k, v in os.environ.items() if not k.startswith("CREDITD_")}
        env["CREDITD_API_KEYS"] = KEY
        env.update(extra)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "serve", "--fd", str(sock.fileno()),
             "--database-url", database_url],
            cwd=SERVER_ROOT, env=env, pass_fds=[sock.fileno()], stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        sock.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)


def provision(server: Server, customers: int) -> None:
    with httpx.Client(base_url=server.url, headers={"X-API-KEY": KEY}, timeout=60) as http:
        r = http.post("/api/v1/credits/custom-currencies",
                      json={"id": CURRENCY, "displayName": "Tokens"})
        assert r.status_code in (200, 409), r.text
        for i in range(customers):
            cid = f"cust-{i}"
            if http.post("/api/v1/customers", json={"id": cid}).status_code == 409:
                continue
            r = http.post("/api/v1/credits/grants", json={
                "customerId": cid, "currencyId": CURRENCY, "amount": 10**11,
                "displayName": "bench", "grantType": "PAID"})
            assert r.status_code == 200, r.text


def consumed_total(server: Server, customers: int) -> float:
    total = 0.0
    with httpx.Client(base_url=server.url, headers={"X-API-KEY": KEY}, timeout=60) as http:
        for i in range(customers):
            r = http.get("/api/v1/credits/balance", params={"customerId": f"cust-{i}"})
            total += sum(b["totalConsumed"] for b in r.json()["data"]["balances"])
    return total


_UNIT = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def _ms(text: str, out: str) -> float:
    """wrk's latency figure ("812.00us", "1.62ms", "2.01s", "1.00m") in milliseconds."""
    found = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if found is None:
        raise RuntimeError(f"cannot read wrk's latency {text!r} in:\n{out}")
    value, unit = found.groups()
    return float(value) * _UNIT[unit]


def quiet(server: Server) -> None:
    """Wait until the server has no request in progress. wrk closes its connections when
    its time is up with their requests still being worked on; the next run, started at
    once, would find the server's door (gateway/admission.py) holding those as well as its
    own and get 429s it did not cause."""
    with httpx.Client(base_url=server.url, headers={"X-API-KEY": KEY}, timeout=10) as http:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            detail = http.get("/health", params={"detail": "true"}).json()
            if detail.get("admission", {}).get("in_flight", 0) == 0:
                return
            time.sleep(0.01)
    raise RuntimeError("the server still has requests in progress after 30 s")


def stat_ticks(path: str) -> int | None:
    """utime + stime, in clock ticks, from a /proc stat file (a process's, or a thread's
    under /proc/<pid>/task); None if it is gone."""
    try:
        with open(path) as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rindex(")") + 2:].split()
    return int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)


def thread_cpu_s(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) of each thread of process `pid` (Linux's /proc; empty
    elsewhere)."""
    tick = os.sysconf("SC_CLK_TCK")
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return {}
    ticks = {int(t): stat_ticks(f"/proc/{pid}/task/{t}/stat") for t in tids}
    return {t: n / tick for t, n in ticks.items() if n is not None}


def child_pids(pid: int) -> list[int]:
    """The child processes of `pid` (SQLite's writer process), whichever of its threads
    started them; empty if it is gone (or not Linux)."""
    pids: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                pids += [int(p) for p in f.read().split()]
    except OSError:
        return []
    return pids


def children_cpu_s(pid: int) -> dict[int, float]:
    """CPU seconds of each child process of `pid`, by pid."""
    tick = os.sysconf("SC_CLK_TCK")
    ticks = {p: stat_ticks(f"/proc/{p}/stat") for p in child_pids(pid)}
    return {p: n / tick for p, n in ticks.items() if n is not None}


def store_figures(server: Server) -> tuple[int, int, float]:
    """The store's flushes, the units they carried and their time (s) so far."""
    with httpx.Client(base_url=server.url, headers={"X-API-KEY": KEY}, timeout=10) as http:
        store = http.get("/health", params={"detail": "true"}).json()["store"]
    return store["flushes"], store["flushed_units"], store["flush_s"]


def wrk(server: Server, script: Path, connections: int, seconds: int, customers: int,
        run: str, timeout_s: int = 2) -> dict[str, float]:
    """One wrk run. wrk leaves answers slower than its request timeout (`timeout_s`, wrk's
    default 2 s) out of the latency histogram and counts them as socket errors; a run that
    expects slow answers raises it so they show in the p99 instead."""
    quiet(server)
    threads = min(connections, 2)
    env = {**os.environ, "BENCH_CUSTOMERS": str(customers), "BENCH_RUN": run,
           "BENCH_KEY": KEY}
    pid = server.proc.pid
    cpu_before = thread_cpu_s(pid)
    children_before = children_cpu_s(pid)
    store_before = store_figures(server)
    out = subprocess.run(
        ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s", "--latency",
         "--timeout", f"{timeout_s}s", "-s", str(script), server.url],
        env=env, capture_output=True, text=True, check=True).stdout
    cpu = {t: s - cpu_before.get(t, 0.0) for t, s in thread_cpu_s(pid).items()}
    children = sum(s - children_before.get(p, 0.0) for p, s in children_cpu_s(pid).items())
    flushes, units, flush_s = (b - a for a, b in zip(store_before, store_figures(server),
                                                     strict=True))
    ok = int(re.search(r"(\d+) requests in", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        # Anchored: "60.50%" in the thread stats above the distribution must not match.
        "p50": _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1), out),
        "p99": _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1), out),
        "requests": ok,
        "non2xx": int(bad.group(1)) if bad else 0,
        "socket_errors": sum(map(int, errors.groups())) if errors else 0,
        # The server's CPU per answer, in µs: its event loop's thread (the main thread,
        # where every request's Python runs), its other threads (SQLite's reader and
        # checkpointer, and the threads anyio starts) and its child process (SQLite's
        # writer). Requests still in flight at the end are not counted: a slight
        # overstatement.
        "loop_us": cpu.get(pid, 0.0) / max(ok, 1) * 1e6,
        "others_us": (sum(cpu.values()) - cpu.get(pid, 0.0)) / max(ok, 1) * 1e6,
        "writer_us": children / max(ok, 1) * 1e6,
        # The store's group commits over the run: mean time and units per flush.
        "flush_ms": flush_s / max(flushes, 1) * 1e3,
        "flush_units": units / max(flushes, 1),
    }


async def _pg(admin: str, statement: str) -> None:
    conn = await asyncpg.connect(admin, timeout=5)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


def floor(server: Server, args: argparse.Namespace, label: str) -> None:
    """The HTTP floor at c=64 (FLOOR_LUA), median of --runs runs, printed."""
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "floor.lua"
        script.write_text(FLOOR_LUA)
        results = [wrk(server, script, 64, args.seconds, 1, f"floor-{n}")
                   for n in range(args.runs)]
    assert all(r["non2xx"] == 0 and r["socket_errors"] == 0 for r in results), results
    med = {k: statistics.median(r[k] for r in results) for k in ("rps", "p50", "p99")}
    print(f"{label:10} HTTP floor: GET /health c=64 {med['rps']:>8,.0f} answers/s   "
          f"p50 {med['p50']:6.2f} ms   p99 {med['p99']:6.2f} ms", flush=True)


def bench_backend(label: str, database_url: str, args: argparse.Namespace,
                  script: Path) -> None:
    server = Server(database_url)
    try:
        floor(server, args, label)
        for customers in args.customers:
            provision(server, customers)
            before = consumed_total(server, customers)
            answered = 0
            for connections in args.connections:
                results = []
                for n in range(args.runs):
                    r = wrk(server, script, connections, args.seconds, customers,
                            f"{label}-{customers}-{connections}-{n}-{secrets.token_hex(3)}")
                    assert r["non2xx"] == 0 and r["socket_errors"] == 0, r
                    answered += r["requests"]
                    results.append(r)
                med = {k: statistics.median(r[k] for r in results)
                       for k in ("rps", "p50", "p99", "loop_us", "others_us", "writer_us",
                                 "flush_ms", "flush_units")}
                print(f"{label:10} {customers:>5} customer(s)  c={connections:<3} "
                      f"{med['rps']:>8,.0f} consumptions/s   p50 {med['p50']:6.2f} ms   "
                      f"p99 {med['p99']:6.2f} ms   server CPU {med['loop_us']:4.0f} µs loop "
                      f"+ {med['others_us']:3.0f} µs other threads + {med['writer_us']:3.0f} µs "
                      f"writer process; flush {med['flush_ms']:5.2f} ms x "
                      f"{med['flush_units']:4.1f} units", flush=True)
            # Every answered request consumed 0.5 credits exactly once. wrk does not count
            # the requests still in flight when a run ends (at most one per connection),
            # which the server may still have applied.
            spent = consumed_total(server, customers) - before
            in_flight_max = args.runs * sum(args.connections)
            assert 0.5 * answered <= spent <= 0.5 * (answered + in_flight_max), (spent, answered)
    finally:
        server.stop()


def wrk_arguments(parser: argparse.ArgumentParser, name: str) -> argparse.Namespace:
    """The wrk benchmarks' shared flags (--runs, --seconds, --only, --pg) parsed, after the
    script's own were added; exits if wrk is missing."""
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--only", choices=["sqlite", "postgresql"])
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--root", type=Path, default=ROOT,
                        help="run the server from this checkout (default: this one)")
    parser.add_argument("--env", action="append", default=[], metavar="CREDITD_X=VALUE",
                        type=lambda text: tuple(text.split("=", 1)),
                        help="set in the server's environment (repeatable)")
    args = parser.parse_args()
    args.env = dict(args.env)
    global SERVER_ROOT
    SERVER_ROOT = args.root.resolve()
    commit = subprocess.run(["git", "-C", str(SERVER_ROOT), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    print(f"# server code: {SERVER_ROOT} ({commit or 'not a git checkout'})", flush=True)
    if shutil.which("wrk") is None:
        sys.exit(f"{name} needs wrk (Debian/Ubuntu: apt-get install wrk)")
    return args


def each_backend(args: argparse.Namespace, tmp: str, bench: Callable[[str, str], None]) -> None:
    """Run `bench(label, database_url)` on a SQLite file in `tmp` and on a fresh
    PostgreSQL database (dropped afterwards), or on the one `--only` names."""
    if args.only in (None, "sqlite"):
        bench("sqlite", f"sqlite:///{tmp}/bench.db")
    if args.only in (None, "postgresql"):
        name = f"creditd_bench_{secrets.token_hex(4)}"
        anyio.run(_pg, args.pg, f'CREATE DATABASE "{name}"')
        try:
            bench("postgresql", f"{args.pg.rsplit('/', 1)[0]}/{name}")
        finally:
            anyio.run(_pg, args.pg, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser()
    # One shape alone (`--customers 1000 --connections 64`: issue 20's) runs on a server
    # that has done nothing else, as a fresh deployment would.
    parser.add_argument("--customers", type=int, nargs="+", default=[1, 1000])
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 16, 64])
    args = wrk_arguments(parser, "bench_http")
    print(f"# creditd HTTP benchmark: Python {platform.python_version()}, {platform.machine()}, "
          f"{os.cpu_count()} cores; server, database and wrk on the same machine; "
          f"median of {args.runs} runs of {args.seconds} s; durability=sync")
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "consume.lua"
        script.write_text(LUA)
        each_backend(args, tmp, lambda label, url: bench_backend(label, url, args, script))


if __name__ == "__main__":
    main()
