#!/usr/bin/env python3
"""Scale-out on PostgreSQL: 1, 2 and 3 `creditd serve` processes, and failover.

Every `creditd serve` on PostgreSQL is a cluster node (persistence/cluster.py,
gateway/cluster/node.py): customers hash to 1,024 shards leased in PostgreSQL, and a
node forwards a command for a customer it does not own to the owner over the internal
channel. This script measures what that gives on this machine.

**Throughput.** For N in --processes (default 1, 2, 3): a fresh PostgreSQL database, N
separate `creditd serve` processes on their own ports (the first one starts alone and
creates the schema, the others join; the script waits until the shards are spread
evenly), --customers customers with a large grant each, then --connections connections
(c=64) of durable consumptions spread over the customers, each with a fresh idempotency
key (the Lua script of scripts/bench_http.py, with a per-wrk offset), split over the N
ports as a load balancer would: one wrk per port with 64/N connections each, run at the
same time. A request that lands on a node not owning its customer takes the forwarding
hop (about (N-1)/N of them). Per run it prints durable consumptions/s (2xx answers only,
summed over the wrks), the non-2xx answers and socket errors, the p99 latency (combined
conservatively: the max of the per-wrk p99s), the share of requests forwarded (the nodes'
`forwarded` counters in /health?detail=true, over wrk's answered requests), and the CPU
each process used in the measured window (utime+stime from /proc/<pid>/stat, % of one
core), with wrk's (its processes' rusage) and PostgreSQL's (every `pgrep postgres`
process: other databases' activity on this server counts too). On a 2-core machine the
total cannot exceed 200 %, so throughput cannot grow much with N; the CPU columns show
where the cores go. Median over --runs runs; at the end, the ledger is checked to hold
one consumption per 2xx answer (as scripts/bench_http.py does).

**Failover.** Three processes under a light load (a few client threads, one request at
a time each, spread over the customers, through the live nodes). Per run: pick a node
(round-robin), a customer whose shard it owns (`shard_leases`), consume once for it
through another node (the customer is resident on its owner), then `kill -9` the owner
and send consumptions for that customer through the other node in a loop (one
idempotency key, as a client retrying would; while the shard has no live owner the node
waits up to ~3 s, then answers 503) and record the time from the kill to the first 200.
Then the killed node is started again and the script waits until the shards are spread
over three nodes again. It prints the median and max against the 5 s target (default
lease settings: CREDITD_LEASE_TTL_S=3, CREDITD_LEASE_RENEW_S=0.5; a dead owner's leases
expire within the TTL of its last renewal, and a survivor takes them at its next round).

Usage: .venv/bin/python scripts/bench_cluster.py [--only throughput|failover]
       [--processes 1,2,3] [--runs 3] [--seconds 10] [--customers 1000]
       [--connections 64] [--pg postgresql://postgres@127.0.0.1:5432/postgres]
Every process it starts is stopped and every database it creates is dropped on exit,
Ctrl-C included. Server, PostgreSQL and wrk share the machine; other activity on it adds
noise (the load average is printed at the start).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import resource
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path
from typing import Any, Self

import anyio
import asyncpg
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import bench_http  # noqa: E402
from bench_http import CURRENCY, KEY, _ms, _pg, consumed_total, provision, stat_ticks  # noqa: E402

from persistence.cluster import SHARDS, shard_of  # noqa: E402

ENVIRONMENT = "default"  # CREDITD_API_KEYS=KEY puts the key in environment "default"
CLK_TCK = os.sysconf("SC_CLK_TCK")
FAILOVER_TARGET_S = 5.0

# bench_http's consumptions (one fresh idempotency key each, customers round-robin) with
# an offset per wrk, so wrks on different ports do not walk the customers in lockstep,
# and a count of answers per status class (printed by done()).
LUA = textwrap.dedent("""
    local counter = 0
    local thread_id = 0
    local customers = tonumber(os.getenv("BENCH_CUSTOMERS"))
    local offset = tonumber(os.getenv("BENCH_OFFSET"))
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
      s2, s4, s429, s5 = 0, 0, 0, 0
    end
    function request()
      counter = counter + 1
      local customer = "cust-" .. ((counter * 7919 + thread_id + offset) % customers)
      local body = '{"customerId":"' .. customer .. '","currencyId":"tokens","amount":0.5,'
        .. '"idempotencyKey":"' .. run .. '-' .. thread_id .. '-' .. counter .. '"}'
      return wrk.format("POST", "/api/v1/credits/consumption",
        {["Content-Type"] = "application/json", ["X-API-KEY"] = os.getenv("BENCH_KEY")}, body)
    end
    function response(status, headers, body)
      if status < 300 then s2 = s2 + 1
      elseif status == 429 then s429 = s429 + 1
      elseif status >= 500 then s5 = s5 + 1
      else s4 = s4 + 1 end
      if status >= 300 and first == nil then first = status .. " " .. body end
    end
    function done(summary, latency, requests)
      local t = {0, 0, 0, 0}
      for _, thread in ipairs(threads) do
        t[1] = t[1] + thread:get("s2"); t[2] = t[2] + thread:get("s4")
        t[3] = t[3] + thread:get("s429"); t[4] = t[4] + thread:get("s5")
      end
      io.write(string.format("STATUS 2xx=%d 4xx=%d 429=%d 5xx=%d\\n", t[1], t[2], t[3], t[4]))
      for _, thread in ipairs(threads) do
        local first = thread:get("first")
        if first then
          io.write("FIRST " .. string.gsub(first, "%s+", " ") .. "\\n")
          break
        end
      end
    end
""")

# Everything to clean up on the way out, whatever happens.
NODES: list[Node] = []
WRKS: list[subprocess.Popen] = []
DATABASES: list[str] = []


class Interrupted(BaseException):
    """SIGTERM/SIGHUP: unwind like Ctrl-C so every finally runs."""


def _interrupt(signum: int, frame: Any) -> None:
    raise Interrupted(signal.Signals(signum).name)


# -- processes ---------------------------------------------------------------------------


class Node:
    """One `creditd serve` process on its own port (a socket bound here and passed with
    --fd, as scripts/bench_http.py does, so the port is known before it starts). Its own
    session: Ctrl-C reaches this script only, which stops the nodes in its finally."""

    def __init__(self, database_url: str, log_dir: Path, name: str,
                 extra_env: dict[str, str] | None = None) -> None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(4096)
        self.port = sock.getsockname()[1]
        self.name = name
        self.log = log_dir / f"{name}-{self.port}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("CREDITD_")}
        env["CREDITD_API_KEYS"] = KEY
        env.update(extra_env or {})
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gateway.cli", "serve", "--fd", str(sock.fileno()),
                 "--database-url", database_url],
                cwd=bench_http.SERVER_ROOT, env=env, pass_fds=[sock.fileno()],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        sock.close()
        NODES.append(self)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        """SIGTERM (the node hands its leases over), SIGKILL if it takes too long."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self in NODES:
            NODES.remove(self)


def stop_all(nodes: list[Node]) -> None:
    for node in nodes:
        if node.alive():
            node.proc.send_signal(signal.SIGTERM)
    for node in list(nodes):
        node.stop()


def dump_logs(nodes: list[Node]) -> None:
    """What the nodes of a failed phase said (their logs go with the temp dir)."""
    for node in nodes:
        print(f"# {node.name} (port {node.port}, exit code {node.proc.returncode}) log, "
              f"last lines:\n{node.log_tail()}", file=sys.stderr, flush=True)


def health(node: Node, timeout: float = 2.0) -> dict | None:
    """The node's /health?detail=true, or None (not answering yet, or gone)."""
    try:
        r = httpx.get(f"{node.url}/health", params={"detail": "true"},
                      headers={"X-API-KEY": KEY}, timeout=timeout)
    except httpx.HTTPError:
        return None
    return r.json() if r.status_code == 200 else None


def wait_cluster(nodes: list[Node], timeout_s: float = 90.0) -> list[dict]:
    """Until every node answers, sees all the others as live, and the shards are spread
    evenly (all 1,024 held, each node within 2 of its share): the steady state a load
    balancer in front of them would see. Returns the nodes' cluster statistics."""
    deadline = time.monotonic() + timeout_s
    share = SHARDS // len(nodes)
    last: list[Any] = []
    while time.monotonic() < deadline:
        for node in nodes:
            if not node.alive():
                raise RuntimeError(f"{node.name} (port {node.port}) exited with "
                                   f"{node.proc.returncode}:\n{node.log_tail()}")
        last = [health(node) for node in nodes]
        if all(last) and all("cluster" not in h for h in last):
            return []  # CREDITD_CLUSTER=off (--baseline): no leases to wait for
        stats = [h.get("cluster") if h else None for h in last]
        if all(stats) and all(len(s["nodes"]) == len(nodes) for s in stats):
            held = [s["shards_held"] for s in stats]
            if sum(held) == SHARDS and min(held) >= share - 2:
                return stats
        time.sleep(0.1)
    raise RuntimeError(f"the cluster did not settle within {timeout_s:.0f} s: "
                       f"{[(h or {}).get('cluster') for h in last]}")


def start_cluster(database_url: str, count: int, log_dir: Path, label: str,
                  extra_env: dict[str, str] | None = None) -> list[Node]:
    """The first node alone (it creates the schema and takes every shard), then the rest
    at once; returns once the shards are spread."""
    nodes = [Node(database_url, log_dir, f"{label}-node1", extra_env)]
    wait_cluster(nodes)
    nodes += [Node(database_url, log_dir, f"{label}-node{i + 1}") for i in range(1, count)]
    wait_cluster(nodes)
    return nodes


# -- CPU ---------------------------------------------------------------------------------


def cpu_ticks(pid: int) -> int | None:
    """utime + stime of a process (all its threads), in clock ticks; None if gone."""
    return stat_ticks(f"/proc/{pid}/stat")


def postgres_ticks() -> dict[int, int]:
    out = subprocess.run(["pgrep", "postgres"], check=False, capture_output=True, text=True).stdout
    ticks = {}
    for pid in map(int, out.split()):
        t = cpu_ticks(pid)
        if t is not None:
            ticks[pid] = t
    return ticks


def machine_ticks() -> int:
    """Busy time of all the machine's cores (/proc/stat: everything but idle and iowait)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return user + nice + system + irq + softirq + steal


def children_cpu_s() -> float:
    """CPU seconds of this script's finished (waited-for) children: the wrks'."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# -- throughput --------------------------------------------------------------------------


def run_wrk(url: str, script: Path, connections: int, seconds: int, customers: int,
            offset: int, threads: int, run: str, out: dict) -> None:
    env = {**os.environ, "BENCH_CUSTOMERS": str(customers), "BENCH_OFFSET": str(offset),
           "BENCH_RUN": run, "BENCH_KEY": KEY}
    proc = subprocess.Popen(
        ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s", "--latency",
         "--timeout", "10s", "-s", str(script), url],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True)
    WRKS.append(proc)
    text, err = proc.communicate()
    if proc.returncode != 0:
        out["error"] = f"wrk exited with {proc.returncode}: {err}{text}"
        return
    try:
        status = dict(re.findall(r"(\w+)=(\d+)", re.search(r"STATUS (.*)", text).group(1)))
        out.update({k: int(v) for k, v in status.items()})
        out["requests"] = int(re.search(r"(\d+) requests in", text).group(1))
        out["duration"] = _ms(re.search(r"requests in ([\d.]+\w+),", text).group(1), text) / 1000
        out["p50"] = _ms(re.search(r"^\s+50%\s+(\S+)", text, re.MULTILINE).group(1), text)
        out["p99"] = _ms(re.search(r"^\s+99%\s+(\S+)", text, re.MULTILINE).group(1), text)
        errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), "
                           r"timeout (\d+)", text)
        out["socket_errors"] = sum(map(int, errors.groups())) if errors else 0
        first = re.search(r"^FIRST (.*)$", text, re.MULTILINE)
        out["first_error"] = first.group(1)[:300] if first else None
    except (AttributeError, RuntimeError) as exc:
        out["error"] = f"cannot read wrk's output ({exc}):\n{text}"


def forwarded(nodes: list[Node]) -> tuple[int, int]:
    """Sum over the nodes of (forwarded, served_for_peers)."""
    fwd = served = 0
    for node in nodes:
        h = health(node, timeout=10)
        if h is None:
            raise RuntimeError(f"{node.name} does not answer /health:\n{node.log_tail()}")
        fwd += h.get("cluster", {}).get("forwarded", 0)
        served += h.get("cluster", {}).get("served_for_peers", 0)
    return fwd, served


def measure(nodes: list[Node], script: Path, args: argparse.Namespace, tag: str) -> dict:
    """One run: a wrk per node, all at once; the CPU of every process over the window."""
    n = len(nodes)
    split = [args.connections // n + (1 if i < args.connections % n else 0) for i in range(n)]
    threads = max(1, 2 // n)  # two wrk threads in all for one node, one per wrk beyond
    outs: list[dict] = [{} for _ in nodes]
    workers = [threading.Thread(
        target=run_wrk, daemon=True,
        args=(node.url, script, split[i], args.seconds, args.customers,
              i * (args.customers // n) + i, threads, f"{tag}-{i}", outs[i]))
        for i, node in enumerate(nodes)]
    fwd0, served0 = forwarded(nodes)
    pg0 = postgres_ticks()
    wrk0 = children_cpu_s()
    node0 = [cpu_ticks(node.pid) for node in nodes]
    all0 = machine_ticks()
    t0 = time.monotonic()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    wall = time.monotonic() - t0
    all1 = machine_ticks()
    node1 = [cpu_ticks(node.pid) for node in nodes]
    wrk1 = children_cpu_s()
    pg1 = postgres_ticks()
    fwd1, served1 = forwarded(nodes)
    for out in outs:
        if "error" in out:
            raise RuntimeError(out["error"])
    for node, a, b in zip(nodes, node0, node1):
        if a is None or b is None:
            raise RuntimeError(f"{node.name} exited during the run:\n{node.log_tail()}")
    requests = sum(o["requests"] for o in outs)
    cpu_nodes = [100 * (b - a) / CLK_TCK / wall for a, b in zip(node0, node1)]
    cpu_wrk = 100 * (wrk1 - wrk0) / wall
    cpu_pg = 100 * sum(t - pg0.get(pid, 0) for pid, t in pg1.items()) / CLK_TCK / wall
    cpu_all = 100 * (all1 - all0) / CLK_TCK / wall
    return {
        "rps_2xx": sum(o["2xx"] / o["duration"] for o in outs),
        "ok": sum(o["2xx"] for o in outs),
        "requests": requests,
        "non2xx": sum(o["4xx"] + o["429"] + o["5xx"] for o in outs),
        "by_class": {k: sum(o[k] for o in outs) for k in ("4xx", "429", "5xx")},
        "socket_errors": sum(o["socket_errors"] for o in outs),
        "p50": max(o["p50"] for o in outs),
        "p99": max(o["p99"] for o in outs),
        "forwarded": (fwd1 - fwd0) / requests if requests else 0.0,
        "served_for_peers": served1 - served0,
        "cpu_nodes": cpu_nodes,
        "cpu_wrk": cpu_wrk,
        "cpu_pg": cpu_pg,
        # Everything else the machine ran meanwhile (this script, the kernel's share not
        # charged to a process, other work on the machine): the noise.
        "cpu_other": max(0.0, cpu_all - sum(cpu_nodes) - cpu_wrk - cpu_pg),
        "split": split,
        "first_error": next((o["first_error"] for o in outs if o["first_error"]), None),
    }


def throughput(n: int, args: argparse.Namespace, script: Path, log_dir: Path,
               baseline: bool = False) -> dict:
    """`baseline`: one process with CREDITD_CLUSTER=off (no leases, no fence): what the
    cluster's fenced flush costs a single process."""
    name = create_database(args.pg)
    nodes: list[Node] = []
    try:
        url = f"{args.pg.rsplit('/', 1)[0]}/{name}"
        nodes = start_cluster(url, n, log_dir, "off" if baseline else f"n{n}",
                              {"CREDITD_CLUSTER": "off"} if baseline else None)
        started = time.monotonic()
        provision(nodes[0], args.customers)  # through one node: grants forwarded to owners
        print(f"  {n} process(es): cluster settled, {args.customers:,} customers provisioned "
              f"in {time.monotonic() - started:.1f} s", flush=True)
        before = consumed_total(nodes[0], args.customers)
        runs = []
        for r in range(args.runs):
            m = measure(nodes, script, args, f"{name}-{r}-{secrets.token_hex(3)}")
            runs.append(m)
            print(f"  {n} process(es) run {r + 1}: {m['rps_2xx']:>7,.0f} durable consumptions/s"
                  f"  p50 {m['p50']:6.2f} ms  p99 {m['p99']:6.2f} ms  non-2xx {m['non2xx']} "
                  f"{m['by_class']}  socket errors {m['socket_errors']}  forwarded "
                  f"{m['forwarded']:.0%}  CPU nodes "
                  f"{' + '.join(f'{c:.0f}' for c in m['cpu_nodes'])} = "
                  f"{sum(m['cpu_nodes']):.0f}%  wrk {m['cpu_wrk']:.0f}%  PostgreSQL "
                  f"{m['cpu_pg']:.0f}%  other {m['cpu_other']:.0f}%  (wrk connections per "
                  f"port {m['split']})", flush=True)
            if m["first_error"]:
                print(f"    a non-2xx answer: {m['first_error']}", flush=True)
        # One consumption of 0.5 per 2xx answer, plus at most one in flight per connection
        # when each wrk stopped (not counted by wrk, possibly applied).
        spent = consumed_total(nodes[0], args.customers) - before
        ok = sum(m["ok"] for m in runs)
        in_flight = args.runs * args.connections
        exact = 0.5 * ok <= spent <= 0.5 * (ok + in_flight)
        print(f"  {n} process(es) ledger: {spent / 0.5:,.0f} consumptions for {ok:,} 2xx "
              f"answers (+ up to {in_flight} in flight)  {'PASS' if exact else 'FAIL'}",
              flush=True)
        med = {k: statistics.median(m[k] for m in runs)
               for k in ("rps_2xx", "p50", "p99", "forwarded", "cpu_wrk", "cpu_pg",
                         "cpu_other")}
        med["cpu_nodes"] = [statistics.median(m["cpu_nodes"][i] for m in runs)
                            for i in range(n)]
        med["non2xx"] = sum(m["non2xx"] for m in runs)
        med["socket_errors"] = sum(m["socket_errors"] for m in runs)
        med["ledger"] = exact
        stop_all(nodes)
        med["deadlocks"] = anyio.run(_deadlocks, args.pg, name)
        print(f"  {n} process(es): {med['deadlocks']} deadlock(s) detected by PostgreSQL in "
              f"this database (pg_stat_database, provisioning and runs)", flush=True)
        return med
    except Exception:
        dump_logs(nodes)
        raise
    finally:
        stop_all(nodes)
        drop_database(args.pg, name)


# -- failover ----------------------------------------------------------------------------


class LightLoad:
    """A few client threads, one consumption at a time each with a short pause, spread
    over the customers, through the live nodes round-robin (the load balancer's list:
    `urls`, changed by the failover as a health-checking balancer would)."""

    def __init__(self, urls: list[str], customers: int, threads: int = 3,
                 pause_s: float = 0.01) -> None:
        self.urls = list(urls)
        self.customers = customers
        self.excluded: set[int] = set()
        self.pause_s = pause_s
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.counts = {"2xx": 0, "503": 0, "other": 0, "errors": 0}
        self.run = secrets.token_hex(4)
        self.threads = [threading.Thread(target=self._loop, args=(i,), daemon=True)
                        for i in range(threads)]

    def __enter__(self) -> Self:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=15)

    def snapshot(self) -> dict[str, int]:
        with self.lock:
            return dict(self.counts)

    def _loop(self, i: int) -> None:
        n = 0
        with httpx.Client(headers={"X-API-KEY": KEY}, timeout=15) as http:
            while not self.stop.is_set():
                n += 1
                customer = (n * 7919 + i * 331) % self.customers
                urls = self.urls
                if customer in self.excluded or not urls:
                    continue
                url = urls[n % len(urls)]
                try:
                    r = http.post(f"{url}/api/v1/credits/consumption", json={
                        "customerId": f"cust-{customer}", "currencyId": CURRENCY,
                        "amount": 0.5, "idempotencyKey": f"light-{self.run}-{i}-{n}"})
                    kind = ("2xx" if r.status_code < 300 else
                            "503" if r.status_code == 503 else "other")
                except httpx.HTTPError:
                    kind = "errors"
                with self.lock:
                    self.counts[kind] += 1
                self.stop.wait(self.pause_s)


async def _deadlocks(admin: str, name: str) -> int:
    """Deadlocks PostgreSQL detected in database `name` (pg_stat_database), read once its
    sessions ended: a backend reports its counts when it exits at the latest."""
    conn = await asyncpg.connect(admin, timeout=5)
    try:
        with anyio.move_on_after(10):
            while await conn.fetchval("SELECT count(*) FROM pg_stat_activity "
                                      "WHERE datname = $1", name):
                await anyio.sleep(0.1)
        await conn.execute("SELECT pg_stat_clear_snapshot()")
        return await conn.fetchval("SELECT deadlocks FROM pg_stat_database "
                                   "WHERE datname = $1", name) or 0
    finally:
        await conn.close()


async def _leases(url: str) -> dict[int, tuple[str | None, int]]:
    conn = await asyncpg.connect(url, timeout=5)
    try:
        rows = await conn.fetch("SELECT shard, owner, epoch FROM shard_leases")
    finally:
        await conn.close()
    return {r["shard"]: (r["owner"], r["epoch"]) for r in rows}


def failover(args: argparse.Namespace, log_dir: Path) -> list[float]:
    name = create_database(args.pg)
    nodes: list[Node] = []
    killed: list[Node] = []
    times: list[float] = []
    try:
        url = f"{args.pg.rsplit('/', 1)[0]}/{name}"
        nodes = start_cluster(url, 3, log_dir, "failover")
        provision(nodes[0], args.customers)
        used: set[int] = set()
        with LightLoad([n.url for n in nodes], args.customers) as load:
            time.sleep(1)  # the light load running before the first kill
            for r in range(args.runs):
                victim_i = r % 3
                victim = nodes[victim_i]
                via = nodes[(victim_i + 1) % 3]
                stats = health(victim)
                assert stats is not None, victim.log_tail()
                victim_id = stats["cluster"]["node"]
                leader = stats["cluster"]["leader"]
                leases = anyio.run(_leases, url)
                customer = next(
                    i for i in range(args.customers) if i not in used
                    and leases[shard_of(f"{ENVIRONMENT}/cust-{i}")][0] == victim_id)
                used.add(customer)
                load.excluded.add(customer)
                shard = shard_of(f"{ENVIRONMENT}/cust-{customer}")
                body = {"customerId": f"cust-{customer}", "currencyId": CURRENCY,
                        "amount": 0.5}
                with httpx.Client(base_url=via.url, headers={"X-API-KEY": KEY},
                                  timeout=30) as http:
                    # Resident on its owner, reached through the forwarding hop.
                    warm = http.post("/api/v1/credits/consumption",
                                     json={**body, "idempotencyKey": f"warm-{name}-{r}"})
                    assert warm.status_code == 200, warm.text
                    before = load.snapshot()
                    # The balancer takes the dead node out of its list at once.
                    load.urls = [n.url for n in nodes if n is not victim]
                    key = f"failover-{name}-{r}"
                    attempts: dict[str, int] = {}
                    kill_at = time.monotonic()
                    victim.kill9()
                    killed.append(victim)
                    while True:
                        try:
                            answer = http.post("/api/v1/credits/consumption",
                                               json={**body, "idempotencyKey": key})
                            status = str(answer.status_code)
                        except httpx.HTTPError as exc:
                            answer, status = None, type(exc).__name__
                        attempts[status] = attempts.get(status, 0) + 1
                        if answer is not None and answer.status_code == 200:
                            elapsed = time.monotonic() - kill_at
                            break
                        if time.monotonic() - kill_at > 60:
                            raise RuntimeError(f"no 200 within 60 s of the kill: {attempts}")
                        if answer is None or answer.status_code != 503:
                            time.sleep(0.05)
                times.append(elapsed)
                after = load.snapshot()
                owner, epoch = anyio.run(_leases, url)[shard]
                taker = next((n.name for n in nodes if n is not victim
                              and (health(n) or {}).get("cluster", {}).get("node") == owner),
                             owner)
                hop = "served by the node asked" if taker == via.name else "forwarded to it"
                print(f"  failover run {r + 1}: kill -9 {victim.name} (port {victim.port}"
                      f"{', the leader' if leader else ''}); cust-{customer} (shard {shard}) "
                      f"answered 200 via {via.name} after {elapsed:.2f} s; attempts "
                      f"{attempts}; shard now on {taker} at epoch {epoch} ({hop}); light load "
                      f"meanwhile: {after['2xx'] - before['2xx']} ok, "
                      f"{after['503'] - before['503']} 503, {after['other'] - before['other']} "
                      f"other status, {after['errors'] - before['errors']} connection errors "
                      f"(requests in flight to the killed node)", flush=True)
                # The killed process back (a restart after a crash), the shards spread again.
                started = time.monotonic()
                nodes[victim_i] = Node(url, log_dir, f"failover-node{victim_i + 1}")
                NODES.remove(victim)
                wait_cluster(nodes)
                load.urls = [n.url for n in nodes]
                print(f"  failover run {r + 1}: {nodes[victim_i].name} restarted; shards "
                      f"spread over 3 nodes again {time.monotonic() - started:.1f} s later",
                      flush=True)
        stop_all(nodes)
        deadlocks = anyio.run(_deadlocks, args.pg, name)
        print(f"  failover: {deadlocks} deadlock(s) detected by PostgreSQL in this database "
              f"(pg_stat_database)", flush=True)
        return times
    except Exception:
        dump_logs(nodes + killed)
        raise
    finally:
        stop_all(nodes)
        drop_database(args.pg, name)


# -- main --------------------------------------------------------------------------------


def create_database(admin: str) -> str:
    name = f"creditd_bench_cluster_{secrets.token_hex(4)}"
    anyio.run(_pg, admin, f'CREATE DATABASE "{name}"')
    DATABASES.append(name)
    return name


def drop_database(admin: str, name: str) -> None:
    """Dropped, retrying for a while if PostgreSQL is away (restarting) meanwhile."""
    deadline = time.monotonic() + 30
    while True:
        try:
            anyio.run(_pg, admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            break
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            if time.monotonic() > deadline:
                raise
            time.sleep(1)
    if name in DATABASES:
        DATABASES.remove(name)


def cleanup(admin: str) -> None:
    for proc in WRKS:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stop_all(list(NODES))
    for name in list(DATABASES):
        try:
            drop_database(admin, name)
        except Exception as exc:  # noqa: BLE001 - say so, keep cleaning
            print(f"# could not drop database {name}: {exc!r}", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=["throughput", "failover"])
    parser.add_argument("--processes", default="1,2,3",
                        help="comma-separated process counts (default 1,2,3)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--baseline", action="store_true",
                        help="first, one process with CREDITD_CLUSTER=off (row 'off'): the "
                             "fence's cost")
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres",
                        help="an admin connection: the script creates and drops its databases")
    parser.add_argument("--root", type=Path, default=bench_http.ROOT,
                        help="run the servers from this checkout (default: this one)")
    args = parser.parse_args()
    counts = [int(x) for x in args.processes.split(",") if x.strip()]
    if any(n < 1 for n in counts) or args.connections < max(counts):
        sys.exit("--processes: counts of at least 1, and no more than --connections")
    bench_http.SERVER_ROOT = args.root.resolve()
    if args.only != "failover" and shutil.which("wrk") is None:
        sys.exit("bench_cluster needs wrk (Debian/Ubuntu: apt-get install wrk)")
    commit = subprocess.run(["git", "-C", str(bench_http.SERVER_ROOT), "rev-parse", "--short",
                             "HEAD"], check=False, capture_output=True, text=True).stdout.strip()
    load1, load5, _ = os.getloadavg()
    print(f"# creditd cluster benchmark: Python {platform.python_version()}, "
          f"{platform.machine()}, {os.cpu_count()} cores; nodes, PostgreSQL and wrk on the "
          f"same machine; server code {bench_http.SERVER_ROOT} ({commit or 'not git'}); "
          f"median of {args.runs} runs of {args.seconds} s; c={args.connections} split over "
          f"the nodes' ports; {args.customers:,} customers; durability=sync; default lease "
          f"settings (TTL 3 s, renewal 0.5 s); load average before start {load1:.2f} (1 min), "
          f"{load5:.2f} (5 min)", flush=True)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    results: dict[int, dict] = {}
    fail_times: list[float] = []
    log_dir = Path(tempfile.mkdtemp(prefix="creditd-bench-cluster-"))
    try:
        script = log_dir / "consume.lua"
        script.write_text(LUA)
        if args.only in (None, "throughput"):
            print("## throughput", flush=True)
            if args.baseline:
                print("  (1 process with CREDITD_CLUSTER=off: no leases, no fence)", flush=True)
                results[0] = throughput(1, args, script, log_dir, baseline=True)
            for n in counts:
                results[n] = throughput(n, args, script, log_dir)
        if args.only in (None, "failover"):
            print("## failover (3 processes, light load)", flush=True)
            fail_times = failover(args, log_dir)
    except (KeyboardInterrupt, Interrupted) as exc:
        print(f"\n# interrupted ({type(exc).__name__} {exc}); stopping the nodes, dropping "
              "the databases", file=sys.stderr, flush=True)
        raise SystemExit(130) from None
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not stop this
        cleanup(args.pg)
        shutil.rmtree(log_dir, ignore_errors=True)
        signal.signal(signal.SIGINT, signal.default_int_handler)

    print(f"\n## summary (median of {args.runs} runs; p50/p99: the max over the per-port "
          f"wrks' figures; CPU in % of one core over the measured window, {os.cpu_count()} "
          f"cores = {100 * (os.cpu_count() or 1)}%)")
    if results:
        base = results.get(1, results.get(min(results), {})).get("rps_2xx")
        print(f"{'procs':>5} {'consumptions/s':>14} {'vs 1st':>6} {'p50 ms':>7} {'p99 ms':>7} "
              f"{'non-2xx':>7} {'forwarded':>9}  {'CPU per process':<20} {'procs':>6} "
              f"{'wrk':>5} {'PG':>5} {'total':>6} {'other':>6}  ledger  deadlocks")
        for n, m in results.items():
            nodes_cpu = sum(m["cpu_nodes"])
            total = nodes_cpu + m["cpu_wrk"] + m["cpu_pg"]
            print(f"{n if n else 'off':>5} {m['rps_2xx']:>14,.0f} {m['rps_2xx'] / base:>5.2f}x "
                  f"{m['p50']:>7.2f} {m['p99']:>7.2f} {m['non2xx'] + m['socket_errors']:>7} "
                  f"{m['forwarded']:>9.0%}  "
                  f"{' + '.join(f'{c:.0f}' for c in m['cpu_nodes']):<20} {nodes_cpu:>5.0f}% "
                  f"{m['cpu_wrk']:>4.0f}% {m['cpu_pg']:>4.0f}% {total:>5.0f}% "
                  f"{m['cpu_other']:>5.0f}%  "
                  f"{'PASS' if m['ledger'] else 'FAIL':>6}  {m['deadlocks']:>9}")
        print("(non-2xx: non-2xx answers plus socket errors, summed over the runs; "
              "forwarded: share of requests sent on to the owner over the internal channel; "
              "PG: every postgres process on the machine; total: nodes + wrk + PG; other: the "
              "rest of the machine's busy CPU (/proc/stat), i.e. noise; deadlocks: detected by PostgreSQL "
              "in the phase's database, provisioning included)")
    if fail_times:
        median, worst = statistics.median(fail_times), max(fail_times)
        print(f"failover: kill -9 of a node -> first 200 for one of its customers through "
              f"another node: median {median:.2f} s, max {worst:.2f} s over {len(fail_times)} "
              f"run(s) ({', '.join(f'{t:.2f}' for t in fail_times)}); target <= "
              f"{FAILOVER_TARGET_S:.0f} s: {'PASS' if worst <= FAILOVER_TARGET_S else 'FAIL'}")


if __name__ == "__main__":
    main()
