"""A cluster of real `creditd serve` processes on one PostgreSQL database, and the clients
that drive it as a load balancer would.

- `Node`: one process (the gateway tests' `Server`: a socket bound here and handed over
  with `--fd`, so a node restarts on the same port), with signals (kill -9, SIGSTOP,
  SIGCONT) and its `/health?detail=true` cluster section.
- `Cluster`: the nodes of one database, waits for their leases to settle, and reads the
  database directly (`shard_leases`, the ledger) to check what the clients were told.
- `Balancer`: HTTP clients to every node; a request that meets a connection error or a 503
  goes to the next node with the same body (the same idempotency key), until a definitive
  answer: what a load balancer in front of the cluster does. Every answer is counted, so
  a test can assert that nothing but 200, 402 and retryable 503s (with Retry-After) came.
- `Book`: what the clients were told (acknowledged and refused consumptions, grants), and
  `verify` checks it against the database: each acknowledged key in the ledger exactly
  once, nothing else, and every grant's remainder what the acknowledgements leave.

Consumptions carry their idempotency key as a dimension ({"k": key}): the ledger row of a
consumption stores its dimensions, so the database says which request made each row.

Nothing sleeps to synchronize: waits poll a condition against a deadline.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import os
import random
import signal
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Self

import anyio
import asyncpg
import httpx

from persistence.cluster import SHARDS, shard_of
from tests.gateway.conftest import KEY, Server
from tests.webhooks.receiver import Received, Receiver

# Short leases keep the tests fast: a dead node's customers are served again within
# TTL_S (+ a round or two) of its death.
TTL_S = 2.0
RENEW_S = 0.25
CLUSTER_ENV = {"CREDITD_LEASE_TTL_S": str(TTL_S), "CREDITD_LEASE_RENEW_S": str(RENEW_S)}
SCALE = 100_000  # an amount of 1 is stored as 100,000 (persistence: fixed-point amounts)
CONSUMPTION = "/api/v1/credits/consumption"
CONSUMED = 2  # persistence.sql.LEDGER_KINDS["CREDITS_CONSUMED"]
# What a client of the cluster may see: an answer (201: something created), a refusal, or
# "retry" while a customer moves between nodes.
ALLOWED = frozenset({200, 201, 402, 503})


def engine_id(customer: str) -> str:
    return f"default/{customer}"  # KEY is configured without an environment: `default`


def shard(customer: str) -> int:
    return shard_of(engine_id(customer))


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def wait_until(probe: Callable[[], Awaitable[Any]], timeout: float, what: str,
                     every: float = 0.05) -> Any:
    """`await probe()` again until it returns something true; its last result. A bounded
    poll of a condition, never a sleep standing in for one."""
    deadline = time.monotonic() + timeout
    while True:
        result = await probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached in {timeout} s (last: {result!r})")
        await anyio.sleep(every)


async def eventually(probe: Callable[[], Awaitable[Any]], timeout: float,
                     every: float = 0.05) -> bool:
    """Whether `await probe()` became true within `timeout` (polled)."""
    deadline = time.monotonic() + timeout
    while True:
        if await probe():
            return True
        if time.monotonic() > deadline:
            return False
        await anyio.sleep(every)


class Node(Server):
    """One `creditd serve` process of a cluster (restartable on the same port)."""

    def __init__(self, database_url: str, *, name: str, env: dict[str, str]) -> None:
        super().__init__(database_url, api_keys=KEY, env=env)
        self.name = name
        self.paused = False
        self.starts = 0

    def __repr__(self) -> str:
        return f"<Node {self.name} :{self.port} pid={self.pid}>"

    def start(self) -> Node:
        super().start()
        self.starts += 1
        return self

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, timeout: float = 60) -> None:
        """Until this start of the process said "creditd ready" (restarts: the n-th)."""
        deadline = time.monotonic() + timeout
        while sum("creditd ready" in line for line in list(self.lines)) < self.starts:
            if not self.alive:
                raise AssertionError(f"{self} exited before it was ready: {self.lines[-20:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{self} not ready in {timeout} s: {self.lines[-20:]}")
            with self._changed:
                self._changed.wait(0.2)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.proc = None
        self.paused = False

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)
        self.paused = False

    def terminate(self, timeout: float = 30) -> int:
        """SIGTERM (a graceful stop: the node hands its leases over) and the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self.proc = None

    def discard(self) -> None:
        """Teardown: whatever state it is in, it is gone (SIGKILL works on stopped ones)."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGKILL)
            try:
                self.proc.wait(timeout=30)
            finally:
                self.proc = None

    def local_ports(self) -> set[int]:
        """The local TCP ports of this process's sockets (its database connections among
        them: PostgreSQL's pg_stat_activity.client_port), read from /proc; works while
        the process is stopped."""
        assert self.proc is not None
        inodes = set()
        fds = f"/proc/{self.proc.pid}/fd"
        for fd in os.listdir(fds):
            try:
                target = os.readlink(f"{fds}/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
        ports = set()
        for table in ("tcp", "tcp6"):
            with open(f"/proc/{self.proc.pid}/net/{table}") as f:
                for line in f.readlines()[1:]:
                    fields = line.split()
                    if fields[9] in inodes:
                        ports.add(int(fields[1].rsplit(":", 1)[1], 16))
        return ports

    async def cluster(self, timeout: float = 10) -> dict[str, Any]:
        """The `cluster` section of /health?detail=true."""
        async with httpx.AsyncClient(base_url=self.url, timeout=timeout,
                                     headers={"X-API-KEY": KEY}) as http:
            r = await http.get("/health", params={"detail": "true"})
        assert r.status_code == 200, r.text
        return r.json()["cluster"]


class Cluster:
    """The nodes of one database (started, killed, restarted by the tests)."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self.nodes: list[Node] = []

    async def start(self, count: int, env: dict[str, str] | None = None) -> list[Node]:
        """`count` more nodes, started together, once they are ready and the leases have
        settled over every live node."""
        env = {**CLUSTER_ENV, **(env or {})}
        new = [Node(self.database_url, name=f"n{len(self.nodes) + i}", env=env)
               for i in range(count)]
        self.nodes += new
        for node in new:
            node.start()
        for node in new:
            await anyio.to_thread.run_sync(node.wait_ready)
        await self.wait_balanced()
        return new

    async def restart(self, node: Node) -> None:
        """Start a stopped node again on its port, once it is ready and holds shards."""
        assert node.proc is None
        node.start()
        await anyio.to_thread.run_sync(node.wait_ready)

    @property
    def live(self) -> list[Node]:
        return [n for n in self.nodes if n.alive and not n.paused]

    def discard(self) -> None:
        for node in self.nodes:
            node.discard()

    async def views(self, nodes: Iterable[Node] | None = None) -> dict[str, dict[str, Any]]:
        """Node name -> its /health cluster section."""
        out = {}
        for node in nodes if nodes is not None else self.live:
            out[node.name] = await node.cluster()
        return out

    async def wait_balanced(self, timeout: float = 45) -> dict[str, dict[str, Any]]:
        """Until the live nodes hold every shard between them, each its fair share at
        most, one of them leads, each sees all of them, and each has read the table again
        since (it routes by what it read)."""
        live = self.live
        ceiling = math.ceil(SHARDS / len(live))

        async def settled() -> dict[str, dict[str, Any]] | None:
            views = await self.views(live)
            held = [v["shards_held"] for v in views.values()]
            ids = {v["node"] for v in views.values()}
            if (sum(held) == SHARDS and min(held) > 0 and max(held) <= ceiling
                    and sum(v["leader"] for v in views.values()) == 1
                    and all(set(v["nodes"]) == ids for v in views.values())):
                return views
            return None

        views = await wait_until(settled, timeout, "leases settled over the live nodes", 0.1)
        rounds = {name: v["rounds"] for name, v in views.items()}

        async def read_again() -> bool:
            now = await self.views(live)
            return all(now[name]["rounds"] >= rounds[name] + 2 for name in now)

        await wait_until(read_again, timeout, "two more lease rounds")
        return views

    # -- the database ---------------------------------------------------------------------

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        conn = await asyncpg.connect(self.database_url, timeout=10)
        try:
            return await conn.fetch(query, *args)
        finally:
            await conn.close()

    async def backends(self, node: Node) -> list[int]:
        """The PostgreSQL backends (pids) serving `node`'s connections."""
        rows = await self.fetch("SELECT pid FROM pg_stat_activity WHERE client_port = ANY($1)",
                                list(node.local_ports()))
        return [int(r["pid"]) for r in rows]

    async def waiting(self, backends: list[int], locktype: str | None = None) -> int:
        """How many lock requests of these backends wait (of `locktype`, if given)."""
        rows = await self.fetch("SELECT count(*) FROM pg_locks WHERE NOT granted "
                                "AND pid = ANY($1) AND ($2::text IS NULL OR locktype = $2)",
                                backends, locktype)
        return int(rows[0][0])

    async def owner(self, shard_: int) -> str | None:
        """Who the lease row of a shard names now (expired or not)."""
        rows = await self.fetch("SELECT owner FROM shard_leases WHERE shard = $1", shard_)
        return rows[0]["owner"]

    async def owners(self) -> dict[int, str]:
        """Shard (and LEADER) -> the node id holding an unexpired lease on it."""
        rows = await self.fetch(
            "SELECT l.shard, l.owner FROM shard_leases l JOIN cluster_nodes n "
            "ON n.node_id = l.owner WHERE n.seen_at > clock_timestamp() - "
            "make_interval(secs => $1)", float(TTL_S))
        return {int(r["shard"]): r["owner"] for r in rows}

    async def node_ids(self) -> dict[str, Node]:
        """Node id (this start's) -> node, for the live ones."""
        out = {}
        for node in self.live:
            out[(await node.cluster())["node"]] = node
        return out

    async def leader(self) -> Node:
        for node in self.live:
            if (await node.cluster())["leader"]:
                return node
        raise AssertionError("no live node leads")

    async def ledger_consumptions(self) -> dict[str, tuple[str, set[int], int]]:
        """Idempotency key (the `k` dimension) -> (customer, ledger operations, amount
        consumed in units) of every consumption in the ledger."""
        rows = await self.fetch(
            "SELECT c.customer_id, l.op_seq, l.amount, l.dimensions FROM ledger l "
            "JOIN customers c ON c.num = l.customer WHERE l.kind = $1", CONSUMED)
        out: dict[str, tuple[str, set[int], int]] = {}
        for r in rows:
            key = json.loads(r["dimensions"])["k"]
            customer = r["customer_id"].partition("/")[2]
            _, ops, amount = out.get(key, (customer, set(), 0))
            ops.add(int(r["op_seq"]))
            out[key] = (customer, ops, amount - int(r["amount"]))
        return out

    async def remainders(self) -> dict[str, tuple[int, int, int]]:
        """Customer -> (available, smallest available of a grant, held), in units×SCALE."""
        rows = await self.fetch("SELECT customer_id, sum(available) AS a, min(available) AS m, "
                                "sum(held) AS h FROM grants GROUP BY customer_id")
        return {r["customer_id"].partition("/")[2]: (int(r["a"]), int(r["m"]), int(r["h"]))
                for r in rows}


@dataclass
class Answer:
    status: int
    at: float  # time.monotonic() when it arrived
    node: str


class Balancer:
    """HTTP clients to every node of a cluster, used as a load balancer would: the next
    node for each request, and a connection error (a dead node, a connection cut) or a 503
    sends the same request to the next node, until a definitive answer (or `give_up_s`)."""

    def __init__(self, nodes: list[Node], *, connections: int = 32,
                 timeout: float = 30, give_up_s: float = 60) -> None:
        self.nodes: list[Node] = []
        self.clients: list[httpx.AsyncClient] = []
        self.give_up_s = give_up_s
        self._timeout = timeout
        self._limits = httpx.Limits(max_connections=connections,
                                    max_keepalive_connections=connections)
        for node in nodes:
            self.add(node)
        self._next = itertools.count(random.randrange(len(nodes)))
        self.statuses: Counter[int] = Counter()
        self.answers: list[Answer] = []  # every answer other than 200, in arrival order
        self.unexpected: list[tuple[int, str, str]] = []  # (status, node, body)
        self.no_retry_after: list[str] = []  # 503s without Retry-After
        self.transport_errors: Counter[str] = Counter()

    def add(self, node: Node) -> None:
        """One more node to spread requests over (a node that joined)."""
        self.nodes.append(node)
        self.clients.append(httpx.AsyncClient(base_url=node.url, headers={"X-API-KEY": KEY},
                                              timeout=self._timeout, limits=self._limits))

    async def aclose(self) -> None:
        for client in self.clients:
            await client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def request(self, method: str, path: str, *, json: Any = None,
                      params: dict[str, Any] | None = None,
                      node: int | None = None) -> httpx.Response:
        """The first definitive answer (anything but a 503, which is retried like a
        connection error); `node`: the index of the first node to ask."""
        first = next(self._next) if node is None else node
        give_up = time.monotonic() + self.give_up_s
        for attempt in itertools.count():
            index = (first + attempt) % len(self.nodes)
            target, client = self.nodes[index], self.clients[index]
            try:
                r = await client.request(method, path, json=json, params=params)
            except httpx.TransportError as exc:
                # A dead node (refused), a connection cut mid-request (unknown outcome: the
                # same key again is safe), a stopped node (timeout): the next node.
                self.transport_errors[type(exc).__name__] += 1
                if time.monotonic() > give_up:
                    raise
                await anyio.sleep(0.02)
                continue
            self.statuses[r.status_code] += 1
            if r.status_code != 200:
                self.answers.append(Answer(r.status_code, time.monotonic(), target.name))
            if r.status_code not in ALLOWED:
                self.unexpected.append((r.status_code, target.name, r.text[:500]))
            if r.status_code == 503:
                if "retry-after" not in r.headers:
                    self.no_retry_after.append(r.text[:300])
                if time.monotonic() > give_up:
                    return r
                await anyio.sleep(min(float(r.headers.get("retry-after", 1)), 0.1))
                continue
            return r
        raise AssertionError("unreachable")

    async def ok(self, method: str, path: str, json: Any = None, **kwargs: Any) -> Any:
        r = await self.request(method, path, json=json, **kwargs)
        assert r.status_code in (200, 201), (method, path, r.status_code, r.text)
        return r.json()["data"]


@dataclass
class Book:
    """What the clients were told: grants, and every consumption's definitive answer."""

    currency: str = ""
    granted: dict[str, int] = field(default_factory=dict)  # customer -> units granted
    bodies: dict[str, dict[str, Any]] = field(default_factory=dict)  # key -> request body
    acked: dict[str, dict[str, Any]] = field(default_factory=dict)  # key -> the 200's data
    refused: set[str] = field(default_factory=set)  # keys answered 402
    unresolved: dict[str, int] = field(default_factory=dict)  # key -> last status

    async def setup(self, balancer: Balancer, customers: list[str], grant: int) -> None:
        """A currency; the customers, each with one grant of `grant` units (concurrently,
        spread over the nodes)."""
        self.currency = uid("cur")
        await balancer.ok("POST", "/api/v1/credits/custom-currencies",
                          {"id": self.currency, "displayName": "C"})
        limit = anyio.Semaphore(16)

        async def one(customer: str) -> None:
            async with limit:
                await balancer.ok("POST", "/api/v1/customers", {"id": customer})
                await balancer.ok("POST", "/api/v1/credits/grants", {
                    "customerId": customer, "currencyId": self.currency, "amount": grant,
                    "displayName": "g", "grantType": "PAID"})
                self.granted[customer] = grant

        async with anyio.create_task_group() as tg:
            for customer in customers:
                tg.start_soon(one, customer)

    def body(self, customer: str, amount: int) -> dict[str, Any]:
        key = uuid.uuid4().hex
        body = {"customerId": customer, "currencyId": self.currency, "amount": amount,
                "idempotencyKey": key, "dimensions": {"k": key}}
        self.bodies[key] = body
        return body

    async def consume(self, balancer: Balancer, customer: str, amount: int, *,
                      node: int | None = None) -> int:
        """One consumption, retried (same key) until a definitive answer; its status."""
        body = self.body(customer, amount)
        r = await balancer.request("POST", CONSUMPTION, json=body, node=node)
        self.record(body, r)
        return r.status_code

    def record(self, body: dict[str, Any], r: httpx.Response) -> None:
        key = body["idempotencyKey"]
        if r.status_code == 200:
            assert key not in self.refused, key
            self.acked[key] = r.json()["data"]
            self.unresolved.pop(key, None)
        elif r.status_code == 402:
            assert key not in self.acked, key
            self.refused.add(key)
            self.unresolved.pop(key, None)
        else:
            self.unresolved[key] = r.status_code

    def consumed(self) -> Counter[str]:
        """Customer -> units acknowledged as consumed."""
        out: Counter[str] = Counter()
        for key in self.acked:
            out[self.bodies[key]["customerId"]] += self.bodies[key]["amount"]
        return out

    async def verify(self, cluster: Cluster) -> dict[str, tuple[str, set[int], int]]:
        """The database against what the clients were told; returns the ledger's
        consumptions (for a later comparison)."""
        assert not self.unresolved, f"requests left without a definitive answer: " \
                                    f"{dict(Counter(self.unresolved.values()))}"
        ledger = await cluster.ledger_consumptions()
        twice = {k: v for k, v in ledger.items() if len(v[1]) > 1}
        assert not twice, f"consumptions applied more than once: {list(twice.items())[:5]}"
        missing = set(self.acked) - set(ledger)
        assert not missing, f"{len(missing)} acknowledged consumptions are not in the " \
                            f"ledger, e.g. {[self.bodies[k] for k in list(missing)[:3]]}"
        extra = set(ledger) - set(self.acked)
        assert not extra, f"{len(extra)} consumptions in the ledger were never acknowledged " \
                          f"(refused: {len(extra & self.refused)}), e.g. {list(extra)[:3]}"
        for key, (customer, _, amount) in ledger.items():
            body = self.bodies[key]
            assert (customer, amount) == (body["customerId"], body["amount"] * SCALE), \
                (key, customer, amount, body)
        remainders = await cluster.remainders()
        consumed = self.consumed()
        wrong = {}
        for customer, granted in self.granted.items():
            available, smallest, held = remainders[customer]
            expected = (granted - consumed[customer]) * SCALE
            if (available, held) != (expected, 0) or smallest < 0:
                wrong[customer] = (available / SCALE, smallest / SCALE, expected / SCALE)
        assert not wrong, f"grant remainders differ from grant - acknowledged (available, " \
                          f"smallest, expected): {dict(list(wrong.items())[:5])}"
        return ledger

    async def verify_balances(self, balancer: Balancer, customers: Iterable[str]) -> None:
        """The balances the API answers (through any node): grant - acknowledged, >= 0."""
        consumed = self.consumed()
        limit = anyio.Semaphore(16)
        wrong: dict[str, Any] = {}

        async def one(customer: str) -> None:
            async with limit:
                data = await balancer.ok("GET", "/api/v1/credits/balance",
                                         params={"customerId": customer})
            [pool] = data["balances"]
            expected = self.granted[customer] - consumed[customer]
            if pool["currentBalance"] != expected or pool["currentBalance"] < 0:
                wrong[customer] = (pool["currentBalance"], expected)

        async with anyio.create_task_group() as tg:
            for customer in customers:
                tg.start_soon(one, customer)
        assert not wrong, f"balances (answered, expected): {wrong}"

    async def verify_replays(self, balancer: Balancer, keys: list[str]) -> None:
        """Acknowledged keys sent again, same body, to any node: 200 and the original
        answer, word for word."""
        limit = anyio.Semaphore(8)
        wrong: list[Any] = []

        async def one(key: str) -> None:
            async with limit:
                r = await balancer.request("POST", CONSUMPTION, json=self.bodies[key])
            if r.status_code != 200 or r.json()["data"] != self.acked[key]:
                wrong.append((key, r.status_code, r.text[:300], self.acked[key]))

        async with anyio.create_task_group() as tg:
            for key in keys:
                tg.start_soon(one, key)
        assert not wrong, f"replays that did not return the original answer: {wrong[:3]}"


def customers_on(owners: dict[int, str], node_id: str, customers: Iterable[str]) -> list[str]:
    return [c for c in customers if owners.get(shard(c)) == node_id]


def spread_customers(count: int, prefix: str = "cust") -> list[str]:
    """`count` fresh customer ids (crc32 spreads them over the shards, hence the nodes)."""
    return [uid(prefix) for _ in range(count)]


def ops_for(customers: list[str], per_customer: int, amounts: tuple[int, int],
            rng: random.Random) -> list[tuple[str, int]]:
    """(customer, amount) consumptions, shuffled: a spread load."""
    ops = [(c, rng.randint(*amounts)) for c in customers for _ in range(per_customer)]
    rng.shuffle(ops)
    return ops


def summary(balancer: Balancer) -> str:
    return (f"statuses {dict(balancer.statuses)}, transport errors "
            f"{dict(balancer.transport_errors)}")


class SlowReceiver(Receiver):
    """A webhook receiver (tests/webhooks/receiver.py) that answers 200 `delay` seconds
    after each request arrived (recorded on arrival), so deliveries are in flight for a
    while; `in_flight` counts the requests not answered yet."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay
        self.in_flight = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                headers = {}
                for line in head.decode("latin-1").split("\r\n")[1:]:
                    if ":" in line:
                        name, _, value = line.partition(":")
                        headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                with self._changed:
                    self.received.append(Received(headers, body, 200, time.time()))
                    self.in_flight += 1
                    self._changed.notify_all()
                try:
                    await asyncio.sleep(self.delay)
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    await writer.drain()
                finally:
                    with self._changed:
                        self.in_flight -= 1
                        self._changed.notify_all()
        except (asyncio.CancelledError, ConnectionError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()
