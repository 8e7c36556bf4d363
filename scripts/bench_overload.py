#!/usr/bin/env python3
"""Overload: ten times the load the server sustains, and one customer flooding.

Starts `creditd serve` (as scripts/bench_http.py does) on a fresh SQLite file and/or a
fresh PostgreSQL database with 1,000 customers, then for --runs rounds:

1. nominal: wrk at c=64 sending durable consumptions spread over the customers (the rate
   the server sustains), while a *probe* — four light customers' clients, each one
   request at a time from this process, on customers wrk does not use — measures its own
   latency from the phase's second second on (the first is the ramp);
2. overload: wrk at c=640 (ten times the connections; each answered at once comes back
   for more, so the offered rate is ten times what is served), half of them on ONE
   customer (the flood) and half spread, with the same probe running.

It prints, per phase: wrk's answered rate, how many answers were 2xx, 429 and 5xx (a
Lua counter per status class; wrk ignores Retry-After and comes straight back, so the
server paces its 429s — gateway/admission.py — and the answered rate counts them as they
are let out), the probe's p50/p99 for its admitted (2xx) answers and
how many it was refused, and the server's RSS. The verdict: no 5xx, 429s carry
Retry-After, the probe's p99 under overload within 2x of its nominal p99, the probe
admitted (fairness), memory bounded; and the ledger holds exactly one consumption per 2xx
answer (nothing half-applied).

Usage: .venv/bin/python scripts/bench_overload.py [--runs 3] [--seconds 10]
       [--only sqlite|postgresql] [--pg postgresql://postgres@127.0.0.1:5432/postgres]
       [--env CREDITD_IN_FLIGHT_MAX=96 ...]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_http  # noqa: E402
from bench_http import (KEY, Server, consumed_total, each_backend, provision, quiet,  # noqa: E402
                        wrk_arguments)  # noqa: E402

CUSTOMERS = 1000
PROBE_CUSTOMERS = 10  # cust-990 .. cust-999: wrk's spread uses cust-0 .. cust-989
PROBES = 4  # probe clients, each one request at a time
# The probes' first second of each phase is its ramp, not counted: at the overload's start
# 640 connections open and send at once, a connection storm, not the sustained overload
# the target is about (a request admitted in that first wave waited for the loop to take
# in the other 639).
RAMP_S = 1.0

# Consumptions like bench_http's, spread over BENCH_CUSTOMERS customers, or all on
# cust-0 when BENCH_FLOOD is set; counts answers per status class (printed by done()).
LUA = textwrap.dedent("""
    local counter = 0
    local thread_id = 0
    local customers = tonumber(os.getenv("BENCH_CUSTOMERS"))
    local flood = os.getenv("BENCH_FLOOD") == "1"
    local run = os.getenv("BENCH_RUN")
    local threads = {}
    local ids = 0
    function setup(thread)
      ids = ids + 1
      thread:set("tid", ids)
      table.insert(threads, thread)
    end
    function init(args)
      thread_id = tid
      s2, s4, s429, s5, retry = 0, 0, 0, 0, 0
    end
    function request()
      counter = counter + 1
      local customer = "cust-0"
      if not flood then customer = "cust-" .. ((counter * 7919 + thread_id) % customers) end
      local body = '{"customerId":"' .. customer .. '","currencyId":"tokens","amount":0.5,'
        .. '"idempotencyKey":"' .. run .. '-' .. thread_id .. '-' .. counter .. '"}'
      return wrk.format("POST", "/api/v1/credits/consumption",
        {["Content-Type"] = "application/json", ["X-API-KEY"] = os.getenv("BENCH_KEY")}, body)
    end
    function response(status, headers, body)
      if status < 300 then s2 = s2 + 1
      elseif status == 429 then
        s429 = s429 + 1
        if headers["Retry-After"] or headers["retry-after"] then retry = retry + 1 end
      elseif status >= 500 then s5 = s5 + 1
      else s4 = s4 + 1 end
    end
    function done(summary, latency, requests)
      local t = {0, 0, 0, 0, 0}
      for _, thread in ipairs(threads) do
        t[1] = t[1] + thread:get("s2"); t[2] = t[2] + thread:get("s4")
        t[3] = t[3] + thread:get("s429"); t[4] = t[4] + thread:get("s5")
        t[5] = t[5] + thread:get("retry")
      end
      io.write(string.format("STATUS 2xx=%d 4xx=%d 429=%d 5xx=%d retry_after=%d\\n",
        t[1], t[2], t[3], t[4], t[5]))
    end
""")


def run_wrk(server: Server, script: Path, connections: int, seconds: int, flood: bool,
            run: str, out: dict) -> None:
    env = {**os.environ, "BENCH_CUSTOMERS": str(CUSTOMERS - PROBE_CUSTOMERS),
           "BENCH_RUN": run, "BENCH_KEY": KEY, "BENCH_FLOOD": "1" if flood else "0"}
    text = subprocess.run(
        ["wrk", "-t", "1", "-c", str(connections), "-d", f"{seconds}s", "--latency",
         "--timeout", "10s", "-s", str(script), server.url],
        env=env, capture_output=True, text=True, check=True).stdout
    status = dict(re.findall(r"(\w+)=(\d+)", re.search(r"STATUS (.*)", text).group(1)))
    out.update({k: int(v) for k, v in status.items()})
    out["rps"] = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                       text)
    out["socket_errors"] = sum(map(int, errors.groups())) if errors else 0


def probe(server: Server, stop: threading.Event, start: float, run: str, client: int,
          out: dict) -> None:
    """A light customer's client: one consumption at a time, its latency per answer from
    `start` (perf_counter) on: what comes before is the phase's ramp."""
    admitted: list[float] = []
    refused = errors = ramp = 0
    n = 0
    with httpx.Client(base_url=server.url, headers={"X-API-KEY": KEY}, timeout=30) as http:
        while not stop.is_set():
            n += 1
            customer = f"cust-{CUSTOMERS - PROBE_CUSTOMERS + (n * PROBES + client) % PROBE_CUSTOMERS}"
            started = time.perf_counter()
            r = http.post("/api/v1/credits/consumption", json={
                "customerId": customer, "currencyId": "tokens", "amount": 0.5,
                "idempotencyKey": f"{run}-probe-{client}-{n}"})
            elapsed = time.perf_counter() - started
            if started < start:
                ramp += r.status_code < 300  # still a consumption for the ledger check
            elif r.status_code < 300:
                admitted.append(elapsed)
            elif r.status_code == 429:
                refused += 1
            else:
                errors += 1
    out.update(admitted=len(admitted), refused=refused, errors=errors, latencies=admitted,
               ramp=ramp)


def _probes(outs: list[dict]) -> dict:
    """The probe clients' answers together."""
    latencies = sorted(x for out in outs for x in out["latencies"])
    return {"admitted": len(latencies), "ramp": sum(o["ramp"] for o in outs),
            "refused": sum(o["refused"] for o in outs), "errors": sum(o["errors"] for o in outs),
            "p50": 1000 * latencies[len(latencies) // 2] if latencies else float("nan"),
            "p99": 1000 * latencies[int(len(latencies) * 0.99)] if latencies else float("nan")}


def rss_mib(server: Server) -> float:
    with open(f"/proc/{server.proc.pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def phase(server: Server, script: Path, seconds: int, overload: bool) -> dict:
    quiet(server)  # the previous phase's closed connections' requests finished
    run = secrets.token_hex(4)
    stop = threading.Event()
    probe_outs: list[dict] = [{} for _ in range(PROBES)]
    start = time.perf_counter() + RAMP_S
    probers = [threading.Thread(target=probe, args=(server, stop, start, run, i, out))
               for i, out in enumerate(probe_outs)]
    loads: list[tuple[threading.Thread, dict]] = []
    shapes = [(320, True), (320, False)] if overload else [(64, False)]
    for i, (connections, flood) in enumerate(shapes):
        out: dict = {"connections": connections, "flood": flood}
        t = threading.Thread(target=run_wrk, args=(server, script, connections, seconds,
                                                   flood, f"{run}-{i}", out))
        loads.append((t, out))
    for prober in probers:
        prober.start()
    for t, _ in loads:
        t.start()
    rss_max = 0.0
    while any(t.is_alive() for t, _ in loads):
        rss_max = max(rss_max, rss_mib(server))
        time.sleep(0.5)
    for t, _ in loads:
        t.join()
    stop.set()
    for prober in probers:
        prober.join()
    return {"loads": [out for _, out in loads], "probe": _probes(probe_outs), "rss_max": rss_max}


def bench_backend(label: str, url: str, args: argparse.Namespace, script: Path) -> None:
    server = Server(url, args.env)
    try:
        provision(server, CUSTOMERS)
        before = consumed_total(server, CUSTOMERS)
        rounds = []
        for n in range(args.runs):
            for overload in (False, True):
                result = phase(server, script, args.seconds, overload)
                rounds.append((overload, result))
                name = "overload" if overload else "nominal "
                for load in result["loads"]:
                    what = "flood, 1 customer" if load["flood"] else "spread"
                    print(f"{label:10} {name} round {n + 1}: wrk c={load['connections']:<3} "
                          f"{what:17} {load['rps']:>8,.0f} answers/s  2xx {load['2xx']:>7,}  "
                          f"429 {load['429']:>7,}  5xx {load['5xx']}  4xx {load['4xx']}  "
                          f"socket errors {load['socket_errors']}", flush=True)
                p = result["probe"]
                print(f"{label:10} {name} round {n + 1}: probe admitted {p['admitted']:,} "
                      f"(p50 {p['p50']:.2f} ms, p99 {p['p99']:.2f} ms), refused "
                      f"{p['refused']}, errors {p['errors']}; server RSS max "
                      f"{result['rss_max']:.0f} MiB", flush=True)
        nominal = [r for o, r in rounds if not o]
        over = [r for o, r in rounds if o]
        p99_nominal = statistics.median(r["probe"]["p99"] for r in nominal)
        p99_over = statistics.median(r["probe"]["p99"] for r in over)
        served = statistics.median(sum(x["2xx"] for x in r["loads"]) for r in nominal)
        served_over = statistics.median(sum(x["2xx"] for x in r["loads"]) for r in over)
        answered_2xx = sum(x["2xx"] for _, r in rounds for x in r["loads"]) + sum(
            r["probe"]["admitted"] + r["probe"]["ramp"] for _, r in rounds)
        fives = sum(x["5xx"] for _, r in rounds for x in r["loads"]) + sum(
            r["probe"]["errors"] for _, r in rounds)
        refused = sum(x["429"] for r in over for x in r["loads"])
        with_retry = sum(x["retry_after"] for r in over for x in r["loads"])
        spent = consumed_total(server, CUSTOMERS) - before
        # wrk does not count requests in flight when it stops (at most one per connection).
        in_flight_max = args.runs * (64 + 640)
        exact = 0.5 * answered_2xx <= spent <= 0.5 * (answered_2xx + in_flight_max)
        print(f"\n## {label} verdict (median of {args.runs} rounds)")
        print(f"  served 2xx per round          nominal {served:,.0f}, overload {served_over:,.0f}"
              f" ({served_over / served:.0%})")
        print(f"  probe p99 (admitted)          {p99_nominal:.2f} -> {p99_over:.2f} ms = "
              f"{p99_over / p99_nominal:.2f}x nominal   <= 2x   "
              f"{'PASS' if p99_over <= 2 * p99_nominal else 'FAIL'}")
        print(f"  probe refused under overload  "
              f"{statistics.median(r['probe']['refused'] for r in over):.0f} per round, admitted "
              f"{statistics.median(r['probe']['admitted'] for r in over):.0f}")
        print(f"  429 with Retry-After          {with_retry:,} of {refused:,}   "
              f"{'PASS' if with_retry == refused else 'FAIL'}")
        print(f"  5xx answers                   {fives}   {'PASS' if fives == 0 else 'FAIL'}")
        print(f"  server RSS max                nominal "
              f"{max(r['rss_max'] for r in nominal):.0f} MiB, overload "
              f"{max(r['rss_max'] for r in over):.0f} MiB")
        print(f"  ledger = 2xx answers          {spent / 0.5:,.0f} consumptions vs "
              f"{answered_2xx:,} 2xx (+ up to {in_flight_max:,} in flight)   "
              f"{'PASS' if exact else 'FAIL'}", flush=True)
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    args = wrk_arguments(parser, "bench_overload")
    print(f"# creditd overload benchmark: Python {platform.python_version()}, "
          f"{os.cpu_count()} cores; server, database, wrk and the probe on the same machine; "
          f"{args.runs} rounds of {args.seconds} s per phase; server code {bench_http.SERVER_ROOT}",
          flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "overload.lua"
        script.write_text(LUA)
        each_backend(args, tmp, lambda label, url: bench_backend(label, url, args, script))


if __name__ == "__main__":
    main()
