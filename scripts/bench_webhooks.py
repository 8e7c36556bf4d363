#!/usr/bin/env python3
"""Webhook delivery: deliveries/s to a local receiver, and the lag from commit to delivery.

Starts `creditd serve` (a subprocess) on a fresh SQLite file and a fresh PostgreSQL
database, a receiver (another subprocess: a small uvloop HTTP server that checks every
signature, answers 200 and records when each event arrived), provisions customers and one
webhook endpoint, then measures, per backend:

1. drain: every stored event is replayed at once (`POST …/replay`) and delivered with the
   engine otherwise idle: the dispatcher's capacity in deliveries/s.
2. under load: events are made the way production makes them, by consumptions crossing
   thresholds. wrk gives each customer in turn a grant of 1 credit (`credits.granted`) and
   then consumes it (the grant's and the balance's usage_low and depleted: four more
   events), at a fixed rate, while a second wrk sends consumptions of another currency at a
   fixed rate (engine load that makes no events). The receiver measures deliveries/s and
   the lag from each event's commit timestamp to its arrival, p50 and p99.

Each figure is the median of --runs runs. Server, database, receiver and load generators
share the machine, as they would on a small host. Lag is measured against the event's
`timestamp` (the engine's clock when it applied the command, just before the commit), so
it includes the commit itself.

Usage: .venv/bin/python scripts/bench_webhooks.py [--runs 3] [--seconds 10] [--rate 1250]
       [--load-rate 500] [--drain 10000] [--only sqlite|postgresql] [--client pooled|httpx]
       [--pg postgresql://postgres@127.0.0.1:5432/postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
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
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KEY = "bench-" + secrets.token_hex(8)
CURRENCY = "tokens"
CUSTOMERS = 200

LUA = textwrap.dedent("""
    -- One request per call, paced by delay(): BENCH_DELAY_MS between a connection's
    -- requests. BENCH_KIND "events": each customer in turn gets a grant of 1 credit, then a
    -- consumption of 1 credit (five events: granted; the grant's and the balance's
    -- usage_low and depleted), in that order because each thread has one connection and
    -- its own customers. BENCH_KIND "load": consumptions of another currency, which has
    -- large grants (engine load that makes no events).
    local counter = 0
    local ids = 0  -- setup() numbers the threads; each sees its own number as global `tid`
    local customers = tonumber(os.getenv("BENCH_CUSTOMERS"))
    local threads = tonumber(os.getenv("BENCH_THREADS"))
    local kind = os.getenv("BENCH_KIND")
    local run = os.getenv("BENCH_RUN")
    local pause = tonumber(os.getenv("BENCH_DELAY_MS"))
    function setup(thread)
      ids = ids + 1
      thread:set("tid", ids)
    end
    function delay()
      return pause
    end
    function request()
      counter = counter + 1
      local headers = {["Content-Type"] = "application/json",
                       ["X-API-KEY"] = os.getenv("BENCH_KEY")}
      if kind == "events" then
        local turn = math.floor((counter - 1) / 2)
        local customer = "cust-" .. ((turn * threads + tid - 1) % customers)
        if counter % 2 == 1 then
          local body = '{"customerId":"' .. customer .. '","currencyId":"tokens","amount":1,'
            .. '"displayName":"bench","grantType":"PAID"}'
          return wrk.format("POST", "/api/v1/credits/grants", headers, body)
        end
        local body = '{"customerId":"' .. customer .. '","currencyId":"tokens","amount":1,'
          .. '"idempotencyKey":"' .. run .. '-' .. tid .. '-' .. counter .. '"}'
        return wrk.format("POST", "/api/v1/credits/consumption", headers, body)
      end
      local customer = "cust-" .. ((counter * threads + tid) % customers)
      local body = '{"customerId":"' .. customer .. '","currencyId":"load","amount":0.001,'
        .. '"idempotencyKey":"' .. run .. '-' .. tid .. '-' .. counter .. '"}'
      return wrk.format("POST", "/api/v1/credits/consumption", headers, body)
    end
""")


# -- the receiver (runs in its own process: `bench_webhooks.py --receiver FD`) -----------


def receiver_main(fd: int) -> None:
    import uvloop

    state = {"secret": b"", "lags": [], "arrivals": [], "bad": 0, "ids": set()}

    def verify(headers: dict[bytes, bytes], body: bytes) -> bool:
        signed = b"%s.%s.%s" % (headers[b"webhook-id"], headers[b"webhook-timestamp"], body)
        expected = base64.b64encode(hmac.new(state["secret"], signed, hashlib.sha256).digest())
        return any(hmac.compare_digest(expected, s.split(b",", 1)[1])
                   for s in headers[b"webhook-signature"].split(b" "))

    def on_request(path: bytes, headers: dict[bytes, bytes], body: bytes) -> bytes:
        now = time.time()
        if path == b"/control/reset":
            config = json.loads(body)
            state.update(secret=base64.b64decode(config["secret"][len("whsec_"):]), lags=[],
                         arrivals=[], bad=0, ids=set())
            return b"{}"
        if path == b"/control/stats":
            return json.dumps({"count": len(state["arrivals"]), "bad": state["bad"],
                               "unique": len(state["ids"]), "lags": state["lags"],
                               "arrivals": state["arrivals"]}).encode()
        if not verify(headers, body):
            state["bad"] += 1
        at = body.index(b'"timestamp":"') + 13
        stamp = datetime.fromisoformat(body[at : at + 24].decode().replace("Z", "+00:00"))
        state["lags"].append((now - stamp.timestamp()) * 1000)
        state["arrivals"].append(now)
        state["ids"].add(headers[b"webhook-id"])
        return b""

    class Protocol(asyncio.Protocol):
        def connection_made(self, transport: asyncio.Transport) -> None:
            self.transport = transport
            self.buffer = b""

        def data_received(self, data: bytes) -> None:
            self.buffer += data
            while True:
                end = self.buffer.find(b"\r\n\r\n")
                if end < 0:
                    return
                lines = self.buffer[:end].split(b"\r\n")
                headers = {}
                for line in lines[1:]:
                    name, _, value = line.partition(b":")
                    headers[name.strip().lower()] = value.strip()
                length = int(headers.get(b"content-length", b"0"))
                if len(self.buffer) < end + 4 + length:
                    return
                body = self.buffer[end + 4 : end + 4 + length]
                self.buffer = self.buffer[end + 4 + length :]
                answer = on_request(lines[0].split(b" ")[1], headers, body)
                self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s"
                                     % (len(answer), answer))

    async def serve() -> None:
        sock = socket.socket(fileno=fd)
        server = await asyncio.get_running_loop().create_server(Protocol, sock=sock)
        await server.serve_forever()

    uvloop.run(serve())


# -- the harness --------------------------------------------------------------------------


def listening_socket() -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(4096)
    return sock


class Process:
    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        sock = listening_socket()
        self.port = sock.getsockname()[1]
        self.proc = subprocess.Popen([*argv, "--fd" if "gateway.cli" in argv else "--receiver",
                                      str(sock.fileno())], cwd=ROOT, env=env,
                                     pass_fds=[sock.fileno()], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        sock.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cpu_s(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()


THREADS = 4  # wrk threads, one connection each (the event pairs must stay in order)


def wrk(url: str, kind: str, delay_ms: int, seconds: int, run: str) -> subprocess.Popen:
    """wrk pacing each of its connections with `delay_ms` between a response and the next
    request (see `pace`)."""
    env = {**os.environ, "BENCH_CUSTOMERS": str(CUSTOMERS), "BENCH_RUN": run, "BENCH_KEY": KEY,
           "BENCH_KIND": kind, "BENCH_DELAY_MS": str(delay_ms), "BENCH_THREADS": str(THREADS)}
    # One file per wrk: two start at once, and rewriting a shared file while the other
    # reads it made wrk fail now and then (a truncated script).
    script = Path(tempfile.gettempdir()) / f"creditd-bench-webhooks-{run}-{kind}.lua"
    script.write_text(LUA)
    return subprocess.Popen(["wrk", "-t", str(THREADS), "-c", str(THREADS), "-d", f"{seconds}s",
                             "-s", str(script), url], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def pace(url: str, rates: dict[str, int]) -> dict[str, int]:
    """The delay per connection that offers each kind's request rate: a connection sends
    one request per (delay + latency), so a 2-second trial at the naive delay measures the
    latency under this very load, and the delay is shortened by it."""
    naive = {kind: round(THREADS * 1000 / r) for kind, r in rates.items()}
    trials = {kind: wrk(url, kind, naive[kind], 2, f"pace-{secrets.token_hex(3)}")
              for kind in rates}
    paced = {}
    for kind, proc in trials.items():
        achieved = max(1.0, wrk_result(proc)["requests"] / 2)
        latency_ms = THREADS * 1000 / achieved - naive[kind]
        paced[kind] = max(0, round(naive[kind] - latency_ms))
    return paced


def wrk_result(proc: subprocess.Popen) -> dict[str, int]:
    out = proc.communicate(timeout=300)[0]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    done = re.search(r"(\d+) requests in", out)
    if done is None:
        raise RuntimeError(f"wrk did not report its requests:\n{out}")
    return {"requests": int(done.group(1)), "non2xx": int(bad.group(1)) if bad else 0}


def stats(http, receiver: Process) -> dict:
    return http.post(f"{receiver.url}/control/stats", content=b"{}").json()


def wait_count(http, receiver: Process, count: int, timeout: float = 120) -> dict:
    """The receiver's stats once it has seen `count` deliveries (or the timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        s = stats(http, receiver)
        if s["count"] >= count or time.monotonic() > deadline:
            return s
        time.sleep(0.1)  # a benchmark polling a counter, not a test synchronizing


def wait_quiet(http, receiver: Process, endpoint_id: str, timeout: float = 120) -> dict:
    """The receiver's stats once nothing is pending for the endpoint and nothing more has
    arrived for half a second."""
    deadline = time.monotonic() + timeout
    last = -1
    while True:
        s = stats(http, receiver)
        pending = http.get(f"/api/v1/webhooks/endpoints/{endpoint_id}").json()["data"][
            "pendingDeliveries"]
        if (pending == 0 and s["count"] == last) or time.monotonic() > deadline:
            return s
        last = s["count"]
        time.sleep(0.5)


def rate(arrivals: list[float]) -> float:
    arrivals = sorted(arrivals)
    if len(arrivals) < 2:
        return 0.0
    return (len(arrivals) - 1) / (arrivals[-1] - arrivals[0])


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def bench_backend(label: str, database_url: str, args: argparse.Namespace) -> None:
    import httpx

    env = {k: v for k, v in os.environ.items() if not k.startswith("CREDITD_")}
    env.update(CREDITD_API_KEYS=KEY, CREDITD_WEBHOOKS_ALLOW_PRIVATE="true",
               CREDITD_WEBHOOKS_CLIENT=args.client)
    receiver = Process([sys.executable, __file__], env)
    server = Process([sys.executable, "-m", "gateway.cli", "serve", "--database-url",
                      database_url], env)
    try:
        with httpx.Client(base_url=server.url, headers={"X-API-KEY": KEY}, timeout=120) as http:
            for currency in (CURRENCY, "load"):
                assert http.post("/api/v1/credits/custom-currencies",
                                 json={"id": currency, "displayName": "T"}).status_code == 200
            for i in range(CUSTOMERS):
                assert http.post("/api/v1/customers", json={"id": f"cust-{i}"}).status_code == 200
                # A large grant each for the consumption load (it makes no events).
                assert http.post("/api/v1/credits/grants", json={
                    "customerId": f"cust-{i}", "currencyId": "load", "amount": 10**9,
                    "displayName": "load", "grantType": "PAID"}).status_code == 200
            begin = datetime.now().astimezone().isoformat()
            endpoint = http.post("/api/v1/webhooks/endpoints", json={
                "url": f"{receiver.url}/hook", "eventTypes": []}).json()["data"]
            reset = {"secret": endpoint["secret"]}

            drains, loads = [], []
            # A grant and its consumption make five events: two requests per five events.
            delays = pace(server.url, {"events": max(1, args.rate * 2 // 5),
                                       "load": args.load_rate})
            for run in range(args.runs):
                # 1. Under load: events at --rate, consumptions at --load-rate.
                http.post(f"{receiver.url}/control/reset", json=reset)
                cpu0 = server.cpu_s()
                tag = f"{label}-{run}-{secrets.token_hex(3)}"
                events = wrk(server.url, "events", delays["events"], args.seconds, tag)
                load = wrk(server.url, "load", delays["load"], args.seconds, tag)
                made, consumed = wrk_result(events), wrk_result(load)
                # A consumption may find its grant not yet there when a run starts where the
                # last one stopped between the two: a refusal (402) makes no event, no harm.
                assert made["non2xx"] <= made["requests"] // 100, made
                assert consumed["non2xx"] == 0, consumed
                s = wait_quiet(http, receiver, endpoint["id"])
                cpu = (server.cpu_s() - cpu0) / args.seconds
                assert s["bad"] == 0, "a signature did not verify"
                assert s["unique"] == s["count"], "an event was delivered twice"
                loads.append({"events": s["count"] / args.seconds,
                              "grants": made["requests"] / 2 / args.seconds,
                              "consumptions": consumed["requests"] / args.seconds,
                              "rate": rate(s["arrivals"]),
                              "p50": pct(s["lags"], 0.50), "p99": pct(s["lags"], 0.99),
                              "cpu": cpu})

                # 2. Drain: replay what is stored, at once, with the engine idle.
                http.post(f"{receiver.url}/control/reset", json=reset)
                queued = 0
                since = begin
                while since is not None and queued < args.drain:
                    r = http.post(f"/api/v1/webhooks/endpoints/{endpoint['id']}/replay",
                                  json={"since": since}).json()["data"]
                    queued += r["queued"]
                    since = r["resumeFrom"]
                s = wait_count(http, receiver, queued)
                drains.append({"queued": queued, "rate": rate(s["arrivals"])})

            def med(rows: list[dict], key: str) -> float:
                return statistics.median(r[key] for r in rows)

            print(f"{label:10} drain      {med(drains, 'rate'):8,.0f} deliveries/s "
                  f"({med(drains, 'queued'):,.0f} replayed, engine idle)", flush=True)
            print(f"{label:10} under load {med(loads, 'rate'):8,.0f} deliveries/s of "
                  f"{med(loads, 'events'):,.0f} events/s made ({med(loads, 'grants'):,.0f} "
                  f"grants/s and their consumptions), with "
                  f"{med(loads, 'consumptions'):,.0f} consumptions/s; lag p50 "
                  f"{med(loads, 'p50'):,.0f} ms, p99 {med(loads, 'p99'):,.0f} ms; server CPU "
                  f"{med(loads, 'cpu') * 100:.0f} %", flush=True)
    finally:
        server.stop()
        receiver.stop()


async def _pg(admin: str, statement: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(admin, timeout=5)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--receiver", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rate", type=int, default=1250, help="events/s to make")
    parser.add_argument("--load-rate", type=int, default=500, help="consumptions/s offered")
    parser.add_argument("--drain", type=int, default=10_000, help="events replayed, at most")
    parser.add_argument("--only", choices=["sqlite", "postgresql"])
    parser.add_argument("--client", choices=["pooled", "httpx"], default="pooled")
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    if args.receiver is not None:
        receiver_main(args.receiver)
        return
    if shutil.which("wrk") is None:
        sys.exit("bench_webhooks needs wrk (Debian/Ubuntu: apt-get install wrk)")
    print(f"# creditd webhook benchmark: Python {platform.python_version()}, "
          f"{platform.machine()}, {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.1f}; server, database, receiver and wrk on one machine; "
          f"median of {args.runs} runs of {args.seconds} s; client={args.client}", flush=True)
    if args.only in (None, "sqlite"):
        with tempfile.TemporaryDirectory() as tmp:
            bench_backend("sqlite", f"sqlite:///{tmp}/bench.db", args)
    if args.only in (None, "postgresql"):
        import anyio

        name = f"creditd_bench_wh_{secrets.token_hex(4)}"
        anyio.run(_pg, args.pg, f'CREATE DATABASE "{name}"')
        try:
            bench_backend("postgresql", f"{args.pg.rsplit('/', 1)[0]}/{name}", args)
        finally:
            anyio.run(_pg, args.pg, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()

