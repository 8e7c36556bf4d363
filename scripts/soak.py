#!/usr/bin/env python3
"""Soak test: sustained durable consumptions over HTTP, watching the server for drift.

A benchmark's 10-second runs cannot show what only time shows: memory that grows with
every request (a cache or a table that is never trimmed), descriptors that leak, a store
that grows faster than its ledger, throughput that sinks as tables and indexes fill. This
driver runs one load for a long time and samples the server while it does.

It starts `creditd serve` as scripts/bench_http.py does, on a fresh SQLite file and on a
fresh PostgreSQL database (created and dropped afterwards), provisions --customers
customers with large grants, and then drives `POST /api/v1/credits/consumption` with wrk
at --connections connections, a fresh idempotency key per request, in back-to-back runs of
--interval seconds until --minutes of load have run. A thread reads the server process's
RSS, open descriptors and CPU time from /proc every second.

Per interval it prints requests/s, wrk's p50/p99, the non-2xx answers and socket errors,
the RSS at the end and the highest during the interval, the open descriptors, the server's
CPU use, the database's size on disk and its growth per 2xx answer; and, on a second line,
the server's own counters over the interval (`GET /health?detail=true`): group-commit
flushes (time each, rows each), key lookups and customer loads (per second, time each),
the runtime's memory estimate against its budget, and the keys it holds and has
forgotten — what slows down when throughput does. On PostgreSQL a third line gives the database
server's counters over the interval: log bytes and whole-page images per consumption,
checkpoints, who wrote the dirty pages, the buffer pool's hit rate and the indexes' size.
At the end it reports, per backend, against targets:

- memory growth after --warmup minutes: the least-squares slope of the 1-second RSS
  samples, < 1 MiB/min;
- throughput of the last interval against the first, >= 95 %; and, because this kind of
  host drifts by 10-20 % from minute to minute whatever runs on it, the soaked server
  against a fresh one (new database, same customers) loaded in turn for --compare-rounds
  rounds of --compare-seconds each, medians >= 95 %: what the server's age alone costs;
- bytes on disk per consumption over the whole run, measured checkpointed (SQLite
  `wal_checkpoint(TRUNCATE)`, PostgreSQL `CHECKPOINT`) after provisioning and at the end,
  <= 400;
- the ledger: the customers' consumed credits grew by 0.5 per 2xx answer, up to the
  requests in flight when each wrk run ended (nothing acknowledged lost, nothing doubled);

and, for information, p99 first against last and the non-2xx total. It exits 0 whether
the targets are met or not (it measures), non-zero only if the run itself broke.

Usage: .venv/bin/python scripts/soak.py [--minutes 30] [--interval 60] [--customers 2000]
       [--connections 32] [--warmup 2] [--env CREDITD_X=value ...] [--json PATH]
       [--log PATH] [--compare-rounds 3] [--compare-seconds 30] [--only sqlite|postgresql]
       [--pg postgresql://postgres@127.0.0.1:5432/postgres]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import secrets
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import closing, nullcontext, suppress
from pathlib import Path
from typing import IO, Any, Self
from unittest import mock

import anyio
import asyncpg
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_http  # noqa: E402 (after the sys.path line)
from bench_http import LUA, consumed_total, provision, wrk  # noqa: E402

MIB = 1024 * 1024
TICKS = os.sysconf("SC_CLK_TCK")
AMOUNT = 0.5  # what bench_http's LUA consumes per request
WRK_TIMEOUT_S = 5

MAX_GROWTH_MIB_PER_MIN = 1.0
MIN_THROUGHPUT_RATIO = 0.95
MAX_BYTES_PER_OP = 400


class Server(bench_http.Server):
    """bench_http's server, with its stdout and stderr going to `log` when one is given."""

    def __init__(self, database_url: str, env: dict[str, str], log: IO[str] | None) -> None:
        if log is None:
            super().__init__(database_url, env)
            return
        popen = subprocess.Popen

        def popen_to_log(*args: Any, **kwargs: Any) -> subprocess.Popen:
            return popen(*args, **{**kwargs, "stdout": log, "stderr": subprocess.STDOUT})

        # bench_http.Server hard-codes /dev/null. Swapping Popen while it starts the process
        # (no other thread runs then) reuses it rather than copying it.
        with mock.patch.object(subprocess, "Popen", popen_to_log):
            super().__init__(database_url, env)


def _rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE).group(1))


def read_proc(pid: int) -> dict[str, float]:
    """The server's RSS (MiB) and CPU seconds (user + system), its own and its child's
    (SQLite's writer process), and its open descriptors, now."""
    proc = Path(f"/proc/{pid}")
    rss_kib = _rss_kib(pid)
    for child in bench_http.child_pids(pid):
        with suppress(OSError, AttributeError):  # it may have just ended
            rss_kib += _rss_kib(child)
    # The fields after the command name, which is in parentheses and may hold spaces:
    # utime and stime are fields 14 and 15 of stat, so 11 and 12 from the state on.
    stat = (proc / "stat").read_text().rsplit(")", 1)[1].split()
    return {"t": time.monotonic(), "rss": int(rss_kib) / 1024,
            "fds": len(os.listdir(proc / "fd")),
            "cpu": ((int(stat[11]) + int(stat[12])) / TICKS
                    + sum(bench_http.children_cpu_s(pid).values()))}


class Sampler:
    """Reads the server process every second, on its own thread, while the load runs."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[dict[str, float]] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._done.wait(1.0):
            try:
                self.samples.append(read_proc(self.pid))
            except (FileNotFoundError, ProcessLookupError):
                return  # the server is gone; the main thread notices and says so

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()


async def _pg_size(url: str, checkpoint: bool) -> int:
    conn = await asyncpg.connect(url, timeout=5)
    try:
        if checkpoint:
            await conn.execute("CHECKPOINT")
        return await conn.fetchval("SELECT pg_database_size(current_database())")
    finally:
        await conn.close()


async def _pg_tables(url: str, vacuum: bool) -> str:
    conn = await asyncpg.connect(url, timeout=5)
    try:
        if vacuum:
            await conn.execute("VACUUM (ANALYZE)")
        rows = await conn.fetch(
            "SELECT relname, pg_total_relation_size(relid) AS bytes, n_live_tup, n_dead_tup,"
            " n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables"
            " ORDER BY pg_total_relation_size(relid) DESC LIMIT 6")
    finally:
        await conn.close()
    return "  tables: " + "; ".join(
        f"{r['relname']} {r['bytes'] / MIB:.0f} MiB live {r['n_live_tup']:,} "
        f"dead {r['n_dead_tup']:,} hot {r['n_tup_hot_upd']:,}/{r['n_tup_upd']:,}" for r in rows)


def pg_tables(database_url: str, vacuum: bool) -> str | None:
    """PostgreSQL only: the largest tables with their dead rows and HOT updates (what an
    aging server writes into), after a `VACUUM (ANALYZE)` when asked — --vacuum-minutes
    stands in for autovacuum on a server where it is off, to tell the two apart."""
    if database_url.startswith("sqlite:///"):
        return None
    return anyio.run(_pg_tables, database_url, vacuum)


# The database server's own counters, read before and after each interval (PostgreSQL):
# what it wrote to its log and how much of that was whole pages (the first change to a page
# after a checkpoint logs all 8 KB of it), the checkpoints that ran and who wrote the dirty
# pages (the checkpointer, the background writer, or the backends themselves when the
# buffer pool had no clean page), and how many pages had to be read rather than found in
# shared_buffers. pg_stat_wal and pg_stat_bgwriter are server-wide: during a soak the
# soak's server is all that writes.
PG_COUNTERS = """
SELECT w.wal_records, w.wal_fpi, w.wal_bytes::bigint AS wal_bytes,
       b.checkpoints_timed, b.checkpoints_req, b.buffers_checkpoint, b.buffers_clean,
       b.buffers_backend, b.checkpoint_write_time, b.checkpoint_sync_time,
       d.blks_read, d.blks_hit,
       (SELECT coalesce(sum(autovacuum_count + autoanalyze_count), 0)
          FROM pg_stat_user_tables) AS autovacuums,
       (SELECT setting FROM pg_settings WHERE name = 'shared_buffers')::bigint * 8192
          AS shared_buffers,
       (SELECT coalesce(sum(pg_relation_size(indexrelid)), 0) FROM pg_stat_user_indexes)
          AS index_bytes
  FROM pg_stat_wal w, pg_stat_bgwriter b, pg_stat_database d
 WHERE d.datname = current_database()
"""


async def _pg_counters(url: str) -> dict[str, int] | None:
    conn = await asyncpg.connect(url, timeout=5)
    try:
        return dict(await conn.fetchrow(PG_COUNTERS))
    except (asyncpg.UndefinedColumnError, asyncpg.UndefinedTableError):
        # PostgreSQL 17 moved the checkpoint counters to pg_stat_checkpointer and the
        # backends' writes to pg_stat_io; before 14 there is no pg_stat_wal. The soak runs
        # without the third line there rather than failing.
        return None
    finally:
        await conn.close()


def pg_counters(database_url: str) -> dict[str, int] | None:
    if database_url.startswith("sqlite:///"):
        return None
    return anyio.run(_pg_counters, database_url)


def pg_row(before: dict[str, int], after: dict[str, int], ok: int) -> dict[str, Any]:
    """What PostgreSQL did over an interval, per 2xx answer where it is a rate."""
    def d(name: str) -> int:
        return after[name] - before[name]

    reads = d("blks_read") + d("blks_hit")
    return {
        "wal_bytes_per_op": d("wal_bytes") / ok if ok else None,
        "fpi_per_op": d("wal_fpi") / ok if ok else None,
        "fpi_share": d("wal_fpi") / d("wal_records") if d("wal_records") else None,
        "checkpoints": d("checkpoints_timed") + d("checkpoints_req"),
        "checkpoints_req": d("checkpoints_req"),
        "written_checkpoint": d("buffers_checkpoint"), "written_bgwriter": d("buffers_clean"),
        "written_backend": d("buffers_backend"),
        "checkpoint_write_s": d("checkpoint_write_time") / 1000,
        "checkpoint_sync_s": d("checkpoint_sync_time") / 1000,
        "hit_share": d("blks_hit") / reads if reads else None,
        "pages_read": d("blks_read"), "autovacuums": d("autovacuums"),
        "index_mib": after["index_bytes"] / MIB,
        "shared_buffers_mib": after["shared_buffers"] / MIB,
    }


def pg_row_text(p: dict[str, Any]) -> str:
    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.1f} %"

    wal = "-" if p["wal_bytes_per_op"] is None else f"{p['wal_bytes_per_op']:,.0f} B"
    fpi = "-" if p["fpi_per_op"] is None else f"{p['fpi_per_op']:.3f}"
    return (f"      postgres: WAL {wal}/op, whole pages {fpi}/op ({pct(p['fpi_share'])} of "
            f"records); checkpoints {p['checkpoints']} ({p['checkpoints_req']} requested, "
            f"write {p['checkpoint_write_s']:.0f} s, sync {p['checkpoint_sync_s']:.1f} s); "
            f"pages written by checkpointer/bgwriter/backends {p['written_checkpoint']:,}/"
            f"{p['written_bgwriter']:,}/{p['written_backend']:,}; read {p['pages_read']:,} "
            f"(hit {pct(p['hit_share'])}); indexes {p['index_mib']:.0f} MiB of "
            f"{p['shared_buffers_mib']:.0f} MiB shared_buffers; "
            f"autovacuum/analyze runs {p['autovacuums']}")


def disk_bytes(database_url: str, checkpoint: bool = False) -> int:
    """The database's size on disk; checkpointed first if asked, so that what the log (WAL)
    holds is counted once, in the tables, and the figure does not depend on when the last
    automatic checkpoint ran."""
    if not database_url.startswith("sqlite:///"):
        return anyio.run(_pg_size, database_url, checkpoint)
    path = database_url[len("sqlite:///"):]
    if checkpoint:
        # Safe beside the running server: WAL mode allows another connection, and
        # TRUNCATE waits (the busy timeout) for the server's writers instead of tearing.
        with closing(sqlite3.connect(path, timeout=30)) as db:
            busy, _, _ = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if busy:
            print(f"  (note: the checkpoint of {path} could not finish; the size includes "
                  "the WAL)", flush=True)
    files = (Path(path), Path(path + "-wal"), Path(path + "-shm"))
    return sum(f.stat().st_size for f in files if f.exists())


HEADER = (f"{'min':>5} {'req/s':>7} {'p50ms':>6} {'p99ms':>7} {'non2xx':>6} {'sockerr':>7} "
          f"{'rss_MiB':>7} {'rss_max':>7} {'fds':>4} {'cpu%':>5} {'disk_MiB':>8} {'B/op':>6}")


def row(iv: dict[str, Any]) -> str:
    bpo = f"{iv['bytes_per_op']:6.0f}" if iv["bytes_per_op"] is not None else f"{'-':>6}"
    return (f"{iv['minute']:5.1f} {iv['rps']:7.0f} {iv['p50_ms']:6.2f} {iv['p99_ms']:7.2f} "
            f"{iv['non2xx']:6d} {iv['socket_errors']:7d} {iv['rss_mib']:7.1f} "
            f"{iv['rss_max_mib']:7.1f} {iv['fds']:4d} {iv['cpu_pct']:5.0f} "
            f"{iv['disk_bytes'] / MIB:8.2f} {bpo}")


def server_detail(server: Server) -> dict[str, Any]:
    """The server's runtime and store counters (GET /health?detail=true)."""
    with httpx.Client(base_url=server.url, headers={"X-API-KEY": bench_http.KEY},
                      timeout=30) as http:
        r = http.get("/health", params={"detail": "true"})
        r.raise_for_status()
        return r.json()


def internals(before: dict[str, Any], after: dict[str, Any], seconds: float) -> dict[str, Any]:
    """What the server's counters did over an interval."""
    a, b = after["store"] or {}, before["store"] or {}

    def delta(name: str) -> float:
        return a.get(name, 0) - b.get(name, 0)

    def each_ms(time_name: str, count_name: str) -> float | None:
        n = delta(count_name)
        return 1000 * delta(time_name) / n if n else None

    rt = after["runtime"]
    return {
        "flush_ms": each_ms("flush_s", "flushes"),
        "rows_per_flush": delta("flushed_rows") / delta("flushes") if delta("flushes") else None,
        "lookups_per_s": delta("lookups") / seconds, "lookup_ms": each_ms("lookup_s", "lookups"),
        "loads_per_s": delta("loads") / seconds, "load_ms": each_ms("load_s", "loads"),
        "memory_mib": rt["memory_bytes"] / MIB,
        "memory_max_mib": (rt["memory_max_bytes"] or 0) / MIB,
        # SQLite's own allocations in the server (its reader's page cache): not in the
        # runtime's estimate, bounded by CREDITD_SQLITE_CACHE_MB (-1: not readable).
        "sqlite_mib": (a["sqlite_memory_bytes"] / MIB
                       if a.get("sqlite_memory_bytes", -1) >= 0 else None),
        "keys": rt["keys"], "event_keys": rt["event_keys"],
        "keys_forgotten": rt["keys_forgotten"], "resident": rt["resident"],
        # The store's key filter: keys a commit took for new that it let through with no
        # check, and those it checked (persistence/key_filter.py).
        "filter_passed_per_s": delta("key_filter_passed") / seconds,
        "filter_held_per_s": delta("key_filter_held") / seconds,
        # The cyclic collector: share of the interval spent collecting, and full (oldest
        # generation) collections with their time each.
        "gc_share": (sum(after.get("gc", {}).get("seconds", [0, 0, 0]))
                     - sum(before.get("gc", {}).get("seconds", [0, 0, 0]))) / seconds,
        "gc_full": (after.get("gc", {}).get("collections", [0, 0, 0])[2]
                    - before.get("gc", {}).get("collections", [0, 0, 0])[2]),
        "gc_full_s": (after.get("gc", {}).get("seconds", [0, 0, 0])[2]
                      - before.get("gc", {}).get("seconds", [0, 0, 0])[2]),
    }


def internals_row(d: dict[str, Any]) -> str:
    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f} ms"

    return (f"      flush {ms(d['flush_ms'])} x {d['rows_per_flush'] or 0:.0f} rows; "
            f"lookups {d['lookups_per_s']:,.0f}/s {ms(d['lookup_ms'])}; "
            f"loads {d['loads_per_s']:,.0f}/s {ms(d['load_ms'])}; "
            f"memory {d['memory_mib']:.0f}/{d['memory_max_mib']:.0f} MiB, "
            f"{d['resident']:,} customers, {d['keys']:,} keys, "
            f"{d['keys_forgotten']:,} forgotten"
            + ("" if d["sqlite_mib"] is None else f", SQLite {d['sqlite_mib']:.1f} MiB")
            + f"; key filter: {d['filter_passed_per_s']:,.0f}/s "
            f"new, {d['filter_held_per_s']:,.0f}/s checked; gc {100 * d['gc_share']:.1f} % "
            f"of the time, {d['gc_full']} full taking {d['gc_full_s']:.2f} s")


def soak_backend(label: str, database_url: str, args: argparse.Namespace, script: Path,
                 log: IO[str] | None) -> dict[str, Any]:
    if log is not None:
        log.write(f"\n===== soak.py: {label} server, {time.strftime('%Y-%m-%d %H:%M:%S')} =====\n")
        log.flush()  # before the child writes to the same file
    server = Server(database_url, args.env, log)
    try:
        started = time.monotonic()
        provision(server, args.customers)
        consumed_before = consumed_total(server, args.customers)
        disk_start = disk_bytes(database_url, checkpoint=True)
        base = read_proc(server.proc.pid)
        print(f"\n## {label}: provisioned {args.customers:,} customers in "
              f"{time.monotonic() - started:.0f} s; RSS {base['rss']:.1f} MiB, "
              f"{base['fds']} fds, disk {disk_start / MIB:.2f} MiB (checkpointed)", flush=True)
        print(HEADER, flush=True)

        intervals: list[dict[str, Any]] = []
        runs = max(1, round(args.minutes * 60 / args.interval))
        disk_prev = disk_start
        with Sampler(server.proc.pid) as sampler:
            load_start = read_proc(server.proc.pid)
            for n in range(runs):
                start = read_proc(server.proc.pid)
                detail_before = server_detail(server)
                pg_before = pg_counters(database_url)
                r = wrk(server, script, args.connections, args.interval, args.customers,
                        f"soak-{label}-{n}-{secrets.token_hex(3)}", timeout_s=WRK_TIMEOUT_S)
                end = read_proc(server.proc.pid)
                inside = internals(detail_before, server_detail(server), end["t"] - start["t"])
                pg_after = pg_counters(database_url)
                disk = disk_bytes(database_url)
                # Read a moment after wrk exits: the server closes wrk's connections on its
                # own loop, and an idle count that rises from interval to interval is a leak.
                time.sleep(1)
                fds = read_proc(server.proc.pid)["fds"]
                ok = r["requests"] - r["non2xx"]
                during = [s["rss"] for s in sampler.samples if start["t"] <= s["t"] <= end["t"]]
                intervals.append({
                    "minute": (end["t"] - load_start["t"]) / 60,
                    "rps": r["rps"], "p50_ms": r["p50"], "p99_ms": r["p99"],
                    "requests": r["requests"], "ok": ok, "non2xx": r["non2xx"],
                    "socket_errors": r["socket_errors"],
                    "rss_mib": end["rss"], "rss_max_mib": max(during + [end["rss"]]),
                    "fds": fds,
                    "cpu_pct": 100 * (end["cpu"] - start["cpu"]) / (end["t"] - start["t"]),
                    "disk_bytes": disk,
                    "bytes_per_op": (disk - disk_prev) / ok if ok else None,
                    "server": inside,
                    "postgres": (pg_row(pg_before, pg_after, ok)
                                 if pg_before and pg_after else None),
                })
                print(row(intervals[-1]), flush=True)
                print(internals_row(inside), flush=True)
                if intervals[-1]["postgres"]:
                    print(pg_row_text(intervals[-1]["postgres"]), flush=True)
                every = args.vacuum_minutes
                vacuum = bool(every) and round(intervals[-1]["minute"]) % every == 0
                tables = pg_tables(database_url, vacuum) if args.pg_tables or vacuum else None
                if tables:
                    print(tables + (" (vacuumed)" if vacuum else ""), flush=True)
                disk_prev = disk
        samples = [{"t_s": s["t"] - load_start["t"], "rss_mib": s["rss"], "fds": s["fds"],
                    "cpu_s": s["cpu"]} for s in sampler.samples]

        disk_end = disk_bytes(database_url, checkpoint=True)
        spent = consumed_total(server, args.customers) - consumed_before
        compared = compare_fresh(label, server, database_url, args, script, log)
    except Exception as exc:
        # A dead server shows up as a reset connection, a wrk output without figures or a
        # missing /proc entry: say so instead. Its sockets close a moment before it can be
        # reaped, hence the wait.
        try:
            server.proc.wait(timeout=1)
        except subprocess.TimeoutExpired:
            pass
        if server.proc.returncode is None:
            raise
        raise RuntimeError(f"{label}: the server exited with status {server.proc.returncode} "
                           "(--log FILE keeps its output)") from exc
    finally:
        server.stop()

    answered = sum(iv["ok"] for iv in intervals)
    # wrk does not count the requests still in flight when a run ends (at most one per
    # connection), which the server may still have applied; none may be missing.
    in_flight_max = runs * args.connections
    applied = spent / AMOUNT
    verdict = {
        "memory_growth_mib_per_min": rss_slope(samples, args.warmup),
        "throughput_first_rps": intervals[0]["rps"],
        "throughput_last_rps": intervals[-1]["rps"],
        "throughput_ratio": intervals[-1]["rps"] / intervals[0]["rps"],
        "p99_first_ms": intervals[0]["p99_ms"],
        "p99_last_ms": intervals[-1]["p99_ms"],
        "disk_start_bytes": disk_start,
        "disk_end_bytes": disk_end,
        "bytes_per_op": (disk_end - disk_start) / answered if answered else None,
        "answered_2xx": answered,
        "non2xx_total": sum(iv["non2xx"] for iv in intervals),
        "socket_errors_total": sum(iv["socket_errors"] for iv in intervals),
        "ledger_applied": applied,
        "ledger_in_flight_allowed": in_flight_max,
        "ledger_ok": answered <= applied <= answered + in_flight_max,
        **compared,
    }
    print_verdict(label, verdict, args.warmup)
    return {"intervals": intervals, "samples": samples, "verdict": verdict}


def compare_fresh(label: str, aged: Server, database_url: str, args: argparse.Namespace,
                  script: Path, log: IO[str] | None) -> dict[str, Any]:
    """The soaked server against a fresh one (a new database, the same customers, memory
    empty), loaded in turn, aged-fresh-fresh-aged and so on, --compare-seconds each: what
    the machine does meanwhile (this host's speed drifts by 10-20 % from minute to minute)
    falls on both alike, so their ratio is what the server's age costs. The first and the
    last minute of the soak compare the same server across that drift.

    Then a new process on the soaked database against the fresh one, the same way: what
    the database's age costs apart from the process's. SQLite's is on a copy of the file,
    beside the soaked server; PostgreSQL's on the soaked database itself, once the soaked
    server has stopped (a copy of a database in use cannot be made). Each run's CPU per
    answer is printed too: the server's event loop and, on PostgreSQL, the database
    server's processes (every one on the machine: the others are idle meanwhile)."""
    if not args.compare_rounds:
        return {}
    fresh_url, drop = _fresh_database(database_url, args)
    servers: dict[str, Server] = {"aged": aged}
    pg = not database_url.startswith("sqlite:///")
    try:
        servers["fresh"] = Server(fresh_url, args.env, log)
        provision(servers["fresh"], args.customers)
        out = _in_turn(label, servers, args, script, "aged", pg)
        # A new process on the soaked database, measured once it has read the stored keys
        # into its key filter (millions after a long soak, seconds of CPU beside the load)
        # and had one run to warm up, as the fresh server has had its provisioning: its
        # first seconds are a restart's cost, not the database's.
        if pg:
            aged.stop()
            restarted = Server(database_url, args.env, log)
        else:
            restarted = Server(_copy_sqlite(database_url), args.env, log)
        servers = {"restarted": restarted, "fresh": servers["fresh"]}
        ready_s = _key_filter_ready(restarted)
        print(f"  a new process on the soaked database: its key filter ready after "
              f"{ready_s:.1f} s", flush=True)
        wrk(restarted, script, args.connections, args.compare_seconds, args.customers,
            f"cmp-{label}-restarted-warm-{secrets.token_hex(3)}", timeout_s=WRK_TIMEOUT_S)
        again = _in_turn(label, servers, args, script, "restarted", pg)
        out |= {"restarted_ready_s": ready_s, "restarted_rps": again["restarted_rps"],
                "restarted_fresh_rps": again["fresh_rps"],
                "restarted_vs_fresh": again["restarted_vs_fresh"],
                "compare_runs_restarted": again["compare_runs"]}
        print(f"  a new process on the soaked database: "
              f"{100 * out['restarted_vs_fresh']:.1f} % of fresh", flush=True)
        return out
    finally:
        for which, server in servers.items():
            if which != "aged":
                server.stop()
        drop()


def _in_turn(label: str, servers: dict[str, Server], args: argparse.Namespace, script: Path,
             first: str, pg: bool) -> dict[str, Any]:
    """--compare-rounds rounds of `servers` loaded in turn; their median rates."""
    rps: dict[str, list[float]] = {which: [] for which in servers}
    cpu: dict[str, list[str]] = {which: [] for which in servers}
    for n in range(args.compare_rounds):
        order = list(servers) if n % 2 == 0 else list(reversed(servers))
        for which in order:
            db_before = postgres_cpu_s() if pg else 0.0
            r = wrk(servers[which], script, args.connections, args.compare_seconds,
                    args.customers, f"cmp-{label}-{which}-{n}-{secrets.token_hex(3)}",
                    timeout_s=WRK_TIMEOUT_S)
            rps[which].append(r["rps"])
            cpu[which].append(f"{r['loop_us']:.0f}")
            if pg:
                db = (postgres_cpu_s() - db_before) / max(r["requests"], 1) * 1e6
                # (A PostgreSQL process that ended during the run takes its CPU time with
                # it: the sum can fall, and the run's figure is unknown.)
                cpu[which][-1] += f"+{db:.0f}" if db >= 0 else "+?"
    medians = {which: statistics.median(runs) for which, runs in rps.items()}
    print(f"  {' vs '.join(servers)}, {args.compare_rounds} rounds of "
          f"{args.compare_seconds} s each, alternating: " + "; ".join(
              f"{which} {', '.join(f'{x:,.0f}' for x in runs)}"
              for which, runs in rps.items()) + " req/s", flush=True)
    print("    CPU per answer, µs (the server's loop" + (" + PostgreSQL's processes" if pg
          else "") + "): " + "; ".join(f"{which} {', '.join(c)}" for which, c in cpu.items()),
          flush=True)
    return {f"{first}_rps": medians[first], "fresh_rps": medians["fresh"],
            f"{first}_vs_fresh": medians[first] / medians["fresh"], "compare_runs": rps}


def postgres_cpu_s() -> float:
    """CPU seconds (user + system) of every PostgreSQL server process on the machine."""
    total = 0
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with suppress(OSError):  # (it may have just ended)
                if (proc / "comm").read_text().strip() == "postgres":
                    total += bench_http.stat_ticks(str(proc / "stat")) or 0
    return total / TICKS


def _key_filter_ready(server: Server, timeout_s: float = 300) -> float:
    """Wait until the server's key filter holds every stored key (persistence/key_filter.py):
    a lone process's once it is ready, a cluster node's (PostgreSQL's default) once it
    trusts every shard it holds (it reads the keys back after taking them); the seconds
    that took."""
    started = time.monotonic()
    deadline = started + timeout_s
    while time.monotonic() < deadline:
        with suppress(httpx.HTTPError):
            detail = server_detail(server)
            cluster = detail.get("cluster")
            if detail.get("store", {}).get("key_filter_ready", True) and (
                    cluster is None or (cluster["shards_held"] > 0 and
                                        cluster["shards_trusted"] == cluster["shards_held"])):
                return time.monotonic() - started
        time.sleep(0.2)
    raise RuntimeError(f"the key filter was not ready after {timeout_s} s")


def _copy_sqlite(database_url: str) -> str:
    """A checkpointed copy of a SQLite database beside it (sqlite3's online backup, safe
    beside the running server)."""
    path = Path(database_url[len("sqlite:///"):])
    copy = path.with_name(f"restarted-{path.name}")
    with closing(sqlite3.connect(path, timeout=30)) as src, \
            closing(sqlite3.connect(copy)) as dst:
        src.backup(dst)
        dst.execute("PRAGMA journal_mode=WAL")
    return f"sqlite:///{copy}"


def _fresh_database(database_url: str, args: argparse.Namespace) -> tuple[str, Any]:
    """A second, empty database beside the soaked one, and how to remove it."""
    if database_url.startswith("sqlite:///"):
        path = Path(database_url[len("sqlite:///"):])
        fresh = path.with_name(f"fresh-{path.name}")
        return f"sqlite:///{fresh}", lambda: None  # the temporary directory goes anyway
    name = f"creditd_fresh_{secrets.token_hex(4)}"
    anyio.run(bench_http._pg, args.pg, f'CREATE DATABASE "{name}"')
    return (f"{args.pg.rsplit('/', 1)[0]}/{name}", lambda: anyio.run(
        bench_http._pg, args.pg, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def rss_slope(samples: list[dict[str, float]], warmup_min: float) -> float | None:
    """Least-squares slope of RSS over time after the warm-up, MiB per minute: start-up,
    caches and allocator arenas filling to their working size belong to the warm-up, and
    what grows after it grows with the load."""
    after = [s for s in samples if s["t_s"] >= warmup_min * 60]
    if len(after) < 2:
        return None
    fit = statistics.linear_regression([s["t_s"] / 60 for s in after],
                                       [s["rss_mib"] for s in after])
    return fit.slope


def print_verdict(label: str, v: dict[str, Any], warmup: float) -> None:
    def mark(ok: bool | None) -> str:
        return "n/a" if ok is None else "PASS" if ok else "FAIL"

    growth, bpo = v["memory_growth_mib_per_min"], v["bytes_per_op"]
    lines = [
        (f"memory growth after {warmup:g} min warm-up",
         "too few samples" if growth is None else f"{growth:+.3f} MiB/min",
         f"< {MAX_GROWTH_MIB_PER_MIN:g}",
         mark(None if growth is None else growth < MAX_GROWTH_MIB_PER_MIN)),
        ("throughput last / first",
         (f"{v['throughput_last_rps']:,.0f} / {v['throughput_first_rps']:,.0f} req/s "
          f"= {100 * v['throughput_ratio']:.1f} %"),
         f">= {100 * MIN_THROUGHPUT_RATIO:g} %",
         mark(v["throughput_ratio"] >= MIN_THROUGHPUT_RATIO)),
        ("p99 first -> last", f"{v['p99_first_ms']:.2f} -> {v['p99_last_ms']:.2f} ms", "", ""),
        *([] if v.get("aged_vs_fresh") is None else [(
            "aged / fresh server, alternating",
            (f"{v['aged_rps']:,.0f} / {v['fresh_rps']:,.0f} req/s "
             f"= {100 * v['aged_vs_fresh']:.1f} %"),
            f">= {100 * MIN_THROUGHPUT_RATIO:g} %",
            mark(v["aged_vs_fresh"] >= MIN_THROUGHPUT_RATIO))]),
        *([] if v.get("restarted_vs_fresh") is None else [(
            "new process on the soaked database",
            (f"{v['restarted_rps']:,.0f} / {v['restarted_fresh_rps']:,.0f} req/s "
             f"= {100 * v['restarted_vs_fresh']:.1f} %"), "", "")]),
        ("bytes on disk per consumption",
         "no 2xx answers" if bpo is None else
         f"{bpo:,.0f} B ({(v['disk_end_bytes'] - v['disk_start_bytes']) / MIB:,.2f} MiB "
         f"/ {v['answered_2xx']:,})",
         f"<= {MAX_BYTES_PER_OP}", mark(None if bpo is None else bpo <= MAX_BYTES_PER_OP)),
        ("non-2xx / socket errors", f"{v['non2xx_total']:,} / {v['socket_errors_total']:,}",
         "", ""),
        ("ledger: applied vs 2xx answers",
         (f"{v['ledger_applied']:,.0f} vs {v['answered_2xx']:,} "
          f"(+ up to {v['ledger_in_flight_allowed']:,} in flight)"), "", mark(v["ledger_ok"])),
    ]
    print(f"\n## {label} verdict", flush=True)
    for name, value, target, result in lines:
        print(f"  {name:34} {value:48} {target:9} {result}".rstrip(), flush=True)


def env_pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    return key, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30, help="total load time")
    parser.add_argument("--interval", type=int, default=60, help="seconds per wrk run")
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--warmup", type=float, default=2,
                        help="minutes of load left out of the memory slope")
    parser.add_argument("--env", type=env_pair, action="append", default=[],
                        metavar="KEY=VALUE", help="set in the server's environment (repeatable)")
    parser.add_argument("--json", type=Path, help="write the samples and verdicts here")
    parser.add_argument("--log", type=Path, help="the server's output (default /dev/null)")
    parser.add_argument("--compare-rounds", type=int, default=3,
                        help="after the soak, rounds of the soaked server against a fresh "
                             "one, loaded in turn (0: none)")
    parser.add_argument("--compare-seconds", type=int, default=30)
    parser.add_argument("--only", choices=["sqlite", "postgresql"])
    parser.add_argument("--pg-tables", action="store_true",
                        help="print the largest tables' sizes, dead rows and HOT updates "
                        "after each interval (PostgreSQL)")
    parser.add_argument("--vacuum-minutes", type=int, default=0,
                        help="VACUUM (ANALYZE) the database every N minutes, between "
                        "intervals (PostgreSQL; for a server running without autovacuum)")
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    args.env = dict(args.env)
    if shutil.which("wrk") is None:
        sys.exit("soak needs wrk (Debian/Ubuntu: apt-get install wrk)")

    settings = {k: v for k, v in vars(args).items() if k not in ("json", "log")}
    machine = {"python": platform.python_version(), "cores": os.cpu_count(),
               "platform": platform.platform()}
    print(f"# creditd soak: Python {machine['python']}, {machine['cores']} cores, "
          f"{machine['platform']}; server, database and wrk on the same machine")
    print(f"# {args.minutes:g} min of load in {args.interval} s intervals, "
          f"{args.customers:,} customers, {args.connections} connections, "
          f"wrk timeout {WRK_TIMEOUT_S} s, warm-up {args.warmup:g} min, "
          f"server env {args.env or '{}'}", flush=True)

    report: dict[str, Any] = {"machine": machine, "settings": settings, "backends": {}}
    with (open(args.log, "w") if args.log else nullcontext()) as log, \
            tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "consume.lua"
        script.write_text(LUA)

        def soak(label: str, url: str) -> None:
            report["backends"][label] = soak_backend(label, url, args, script, log)
            # After each backend, so a run that breaks later keeps what it measured.
            if args.json:
                args.json.write_text(json.dumps(report, indent=1, default=float))

        bench_http.each_backend(args, tmp, soak)


if __name__ == "__main__":
    main()
