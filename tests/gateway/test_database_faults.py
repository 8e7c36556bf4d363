"""Database faults under load: a real `creditd serve` process, real HTTP, a real database
that goes away, stalls or fills up while consumptions are coming in.

A database fault is never a 500. Whatever the driver or SQLSTATE says while connecting,
acquiring from the pool or committing, it is unavailability: 503 with Retry-After, nothing
half-applied, the actor reloaded from what is durable; once the fault is gone the server
recovers by itself within seconds.

Each test starts the server (conftest's `Server`) on a database of its own, provisions a
currency and CUSTOMERS customers with a large grant, and runs WORKERS concurrent loops,
each sending `POST /api/v1/credits/consumption` with a fresh idempotency key (sometimes,
after a failure, the same key and body again, as a client retrying would). The load runs
~1 s, then the fault is injected and held for a few seconds, then removed; the load goes
on until a 200 comes back and ~2 s more. Every answer is recorded (status, Retry-After,
key, body, when it was sent). Then:

1. every answer is 200, 429 or 503 (a 500, any other status or a transport error such as
   a read timeout fails the test); every 429/503 carries `Retry-After: <positive int>`;
2. the fault showed: 503s were answered to requests sent during it (for the lock held
   within the database timeout: requests stalled, or got 429/503);
3. recovery: a 200 within 10 s of the fault's end, and every request sent in the last
   second of the load got 200;
4. exactly once: every key that was not acknowledged is sent again (same key, same body)
   until it gets a 200; a sample of the acknowledged ones is replayed and must get 200
   with the byte-identical body of the first answer; then for every customer the balance's
   `totalConsumed` equals the sum of the amounts of its distinct keys, and its ledger holds
   exactly one CREDITS_CONSUMED row (one operation) per key, summing to the same;
5. the server's output holds no "engine fault", "unhandled error" or traceback (but the
   one asyncpg's pool attaches to its own reconnect warning), and the server still runs;
6. then a new server process on the same database (after `PRAGMA integrity_check` for
   SQLite) shows the same balances and ledgers, and replays keys from the database.

Faults:
- PostgreSQL: `ALLOW_CONNECTIONS false` + every session of the database terminated (the
  connect fails with SQLSTATE 55000); a fast restart of the cluster (`pg_ctlcluster …
  restart -m fast`); the `ledger` table locked ACCESS EXCLUSIVE by another session, shorter
  than the server's database timeout (writes stall) and longer than it
  (`CREDITD_DB_TIMEOUT_S=2`: writes time out, 503).
- SQLite (`PRAGMA integrity_check` afterwards): the disk full (the file on a small tmpfs
  filled with a filler file; without the right to mount, a file-size limit on the server
  process instead, which fails writes past it with EFBIG as a full disk fails them with
  ENOSPC); and the files made read-only. Linux refuses to remount a file system read-only
  while a process holds files on it open for writing (EBUSY), which the server always does,
  so the database and its WAL are made immutable (`chattr +i`) instead: on ext4 that
  refuses every write, through descriptors already open too, even to root.

Fault windows are times (they are the scenario); everything the test's verdict depends on
is waited for as a condition, with a deadline.
"""

from __future__ import annotations

import errno
import json
import contextlib
import os
import random
import resource
import shutil
import signal
import sqlite3
import subprocess
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import httpx
import pytest

from tests.gateway.conftest import PG_ADMIN, Server, child_pids, fresh_pg_url

# This module's own key: pytest loads the conftest as a module of its own, so the conftest's
# KEY imported here is not the one its `Server` defaults to.
KEY = "test-key-faults-" + uuid.uuid4().hex[:16]

CUSTOMERS = 20
WORKERS = 24
AMOUNTS = ("0.5", "1", "1.25", "2.00001", "0.33333")  # exact at 5 decimal places
ALLOWED = frozenset({200, 429, 503})
RECOVERY_S = 10.0  # a 200 must come back within this after the fault ends
AFTER_RECOVERY_S = 2.0  # load kept up after the first 200 past the fault
LAST_WINDOW_S = 1.0  # requests sent in this last stretch of the load must all get 200
# A worker's pause after a non-2xx: shorter than Retry-After, to keep the pressure on.
PAUSE_AFTER_FAILURE_S = 0.1
# A 500's log lines, and any traceback (an exception logged rather than handled).
FORBIDDEN_OUTPUT = ("engine fault", "unhandled error", "Traceback")


def _missing(reason: str) -> None:
    """The conftest's rule for a missing PostgreSQL, for the tools a fault needs."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; CI=true requires it", pytrace=False)
    pytest.skip(reason)


# ---------------------------------------------------------------------------------------
# The load


@dataclass
class Answer:
    phase: str  # "load", "retry" (an unacknowledged key again) or "replay"
    sent: float  # anyio.current_time() when sent
    took: float
    status: int | None  # None: a transport error
    retry_after: str | None
    body: bytes
    error: str | None = None

    def describe(self) -> str:
        what = f"{self.status}" if self.status is not None else f"transport error {self.error}"
        return f"{what} after {self.took:.2f} s ({self.phase}): {self.body[:300]!r}"


@dataclass
class Sent:
    """One idempotency key: the consumption it names and every answer it got."""

    key: str
    customer: str
    amount: Decimal
    content: bytes  # the exact request body, sent again byte for byte
    answers: list[Answer] = field(default_factory=list)
    acknowledged: bytes | None = None  # the body of its first 200


class Load:
    def __init__(self, http: httpx.AsyncClient, customers: list[str], currency: str) -> None:
        self.http = http
        self.customers = customers
        self.currency = currency
        self.run = uuid.uuid4().hex[:8]
        self.sent: dict[str, Sent] = {}
        self.answers: list[Answer] = []
        self.stop_called: float | None = None
        self._stopping = False
        self._news = anyio.Event()
        self._counter = 0

    # -- sending --------------------------------------------------------------------------

    def new(self, rng: random.Random) -> Sent:
        self._counter += 1
        key = f"{self.run}-{self._counter}"
        customer = rng.choice(self.customers)
        amount = rng.choice(AMOUNTS)
        content = json.dumps({"customerId": customer, "currencyId": self.currency,
                              "amount": float(amount), "idempotencyKey": key}).encode()
        sent = Sent(key, customer, Decimal(amount), content)
        self.sent[key] = sent
        return sent

    async def send(self, sent: Sent, phase: str) -> Answer:
        t0 = anyio.current_time()
        try:
            r = await self.http.post("/api/v1/credits/consumption", content=sent.content,
                                     headers={"content-type": "application/json"})
        except httpx.HTTPError as exc:
            answer = Answer(phase, t0, anyio.current_time() - t0, None, None, b"", repr(exc))
        else:
            answer = Answer(phase, t0, anyio.current_time() - t0, r.status_code,
                            r.headers.get("retry-after"), r.content)
        self.answers.append(answer)
        sent.answers.append(answer)
        if answer.status == 200 and sent.acknowledged is None:
            sent.acknowledged = answer.body
        self._news.set()
        self._news = anyio.Event()
        return answer

    async def _worker(self, n: int) -> None:
        rng = random.Random(f"{self.run}-{n}")
        again: Sent | None = None
        while not self._stopping:
            # After a failure, half the time the same key and body again (a client's
            # retry); the other keys left unacknowledged are retried after the load.
            sent = again if again is not None and rng.random() < 0.5 else self.new(rng)
            answer = await self.send(sent, "load")
            again = None
            if answer.status != 200:
                again = sent
                await anyio.sleep(PAUSE_AFTER_FAILURE_S)

    async def run_workers(self) -> None:
        async with anyio.create_task_group() as tg:
            for n in range(WORKERS):
                tg.start_soon(self._worker, n)

    def stop(self) -> None:
        """Workers finish the request they are in (never cancelled: every answer counts)."""
        self._stopping = True
        self.stop_called = anyio.current_time()

    # -- conditions -----------------------------------------------------------------------

    def load_answers(self, since: float = 0.0, until: float = float("inf")) -> list[Answer]:
        return [a for a in self.answers if a.phase == "load" and since <= a.sent < until]

    def seen(self, status: int, since: float) -> bool:
        return any(a.status == status for a in self.answers if a.sent >= since)

    async def wait_for(self, predicate: Callable[[], bool], timeout: float, what: str) -> float:
        """Wait until `predicate()` holds (checked after every answer); the time it took."""
        t0 = anyio.current_time()
        deadline = t0 + timeout
        while not predicate():
            left = deadline - anyio.current_time()
            if left <= 0:
                raise AssertionError(f"{what}: not within {timeout} s\n{self.summary()}")
            with anyio.move_on_after(left):
                await self._news.wait()
        return anyio.current_time() - t0

    def summary(self) -> str:
        by_phase: dict[str, Counter[Any]] = {}
        for a in self.answers:
            by_phase.setdefault(a.phase, Counter())[a.status] += 1
        slowest = max((a.took for a in self.answers), default=0.0)
        text = (f"keys {len(self.sent)}, answers by phase and status "
                f"{ {p: dict(c) for p, c in by_phase.items()} }, slowest {slowest:.2f} s")
        bad = next((a for a in self.answers if a.status not in ALLOWED), None)
        return text if bad is None else f"{text}; the first wrong answer: {bad.describe()}"

    # -- after the load: every key acknowledged, replays, exactly once -------------------

    async def acknowledge_all(self, timeout: float = 20.0) -> None:
        """Send every key that got no 200 again, same key and body, until it does."""
        pending = [s for s in self.sent.values() if s.acknowledged is None]
        deadline = anyio.current_time() + timeout
        stuck: list[Sent] = []
        limiter = anyio.CapacityLimiter(16)

        async def retry(sent: Sent) -> None:
            async with limiter:
                while True:
                    answer = await self.send(sent, "retry")
                    if answer.status == 200:
                        return
                    if anyio.current_time() >= deadline:
                        stuck.append(sent)
                        return
                    await anyio.sleep(0.2)

        async with anyio.create_task_group() as tg:
            for sent in pending:
                tg.start_soon(retry, sent)
        assert not stuck, (f"{len(stuck)} keys got no 200 within {timeout} s after the fault; "
                           f"last answers: {[s.answers[-1].describe() for s in stuck[:5]]}")

    async def replay_sample(self, size: int = 120) -> None:
        """Acknowledged keys sent again: 200 with the body of the first answer, byte for
        byte, and nothing applied (checked by `check_exactly_once`). Half the sample, when
        there are enough, are keys that got a non-2xx before their 200."""
        rng = random.Random(f"{self.run}-{len(self.answers)}")
        troubled = [s for s in self.sent.values() if any(a.status != 200 for a in s.answers)]
        others = [s for s in self.sent.values() if all(a.status == 200 for a in s.answers)]
        sample = rng.sample(troubled, min(len(troubled), size // 2))
        sample += rng.sample(others, min(len(others), size - len(sample)))
        wrong = []
        for sent in sample:
            answer = await self.send(sent, "replay")
            if answer.status != 200 or answer.body != sent.acknowledged:
                wrong.append(f"{sent.key}: first {sent.acknowledged!r}, replay "
                             f"{answer.describe()}")
        assert not wrong, f"{len(wrong)} of {len(sample)} replays differ: {wrong[:5]}"

    async def check_exactly_once(self) -> None:
        """Per customer: consumed = the sum of its keys' amounts, and one ledger
        consumption per key."""
        expected_total: dict[str, Decimal] = {c: Decimal(0) for c in self.customers}
        expected_count: Counter[str] = Counter()
        for s in self.sent.values():
            expected_total[s.customer] += s.amount
            expected_count[s.customer] += 1
        problems = []
        for customer in self.customers:
            r = await self.http.get("/api/v1/credits/balance", params={"customerId": customer})
            assert r.status_code == 200, r.text
            (balance,) = json.loads(r.content, parse_float=Decimal)["data"]["balances"]
            consumed = Decimal(str(balance["totalConsumed"]))
            rows = await self._consumptions(customer)
            operations = {row["eventId"] for row in rows}
            ledger_total = -sum((Decimal(str(row["amount"])) for row in rows), Decimal(0))
            if (consumed, len(rows), len(operations), ledger_total) != (
                    expected_total[customer], expected_count[customer],
                    expected_count[customer], expected_total[customer]):
                problems.append(
                    f"{customer}: {expected_count[customer]} keys summing to "
                    f"{expected_total[customer]}; totalConsumed {consumed}, ledger "
                    f"{len(rows)} rows in {len(operations)} operations summing to "
                    f"{ledger_total}")
        assert not problems, "not exactly once:\n" + "\n".join(problems)

    async def _consumptions(self, customer: str) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        params = {"customerId": customer, "eventType": "CREDITS_CONSUMED", "limit": 100}
        while True:
            r = await self.http.get("/api/v1/credits/ledger", params=params)
            assert r.status_code == 200, r.text
            page = json.loads(r.content, parse_float=Decimal)
            rows += page["data"]
            following = page["pagination"]["next"]
            if not following:
                return rows
            params = {**params, "after": following}


# ---------------------------------------------------------------------------------------
# A scenario: load, fault, recovery, checks


class Fault:
    """A fault: `inject()` starts it; it is held `hold_s`, and, when `expect_503`, until a
    503 has been answered to a request sent during it (up to `appear_s`); then `remove()`
    ends it (always called, also when the test fails)."""

    hold_s = 4.0
    expect_503 = True
    appear_s = 15.0

    async def inject(self) -> None:
        raise NotImplementedError

    async def remove(self) -> None:
        raise NotImplementedError


@dataclass
class Outcome:
    load: Load
    fault_at: float
    fault_end: float
    recovered_after: float

    def during(self) -> list[Answer]:
        return self.load.load_answers(self.fault_at, self.fault_end)


def provision(server: Server) -> tuple[list[str], str]:
    tag = uuid.uuid4().hex[:8]
    currency = f"tokens-{tag}"
    customers = [f"cust-{tag}-{i}" for i in range(CUSTOMERS)]
    with httpx.Client(base_url=server.url, headers={"X-API-KEY": KEY}, timeout=30) as http:
        r = http.post("/api/v1/credits/custom-currencies",
                      json={"id": currency, "displayName": "Tokens"})
        assert r.status_code == 200, r.text
        for customer in customers:
            r = http.post("/api/v1/customers", json={"id": customer})
            assert r.status_code == 200, r.text
            r = http.post("/api/v1/credits/grants", json={
                "customerId": customer, "currencyId": currency, "amount": 10**9,
                "displayName": "load", "grantType": "PAID"})
            assert r.status_code == 200, r.text
    return customers, currency


def run_scenario(server: Server, fault: Fault) -> Outcome:
    customers, currency = provision(server)

    async def scenario() -> Outcome:
        limits = httpx.Limits(max_connections=WORKERS + 24, max_keepalive_connections=WORKERS + 24)
        async with httpx.AsyncClient(base_url=server.url, headers={"X-API-KEY": KEY},
                                     timeout=30, limits=limits) as http:
            load = Load(http, customers, currency)
            with _unwrapped():
                fault_at, fault_end, recovered_after = await drive(load, fault)
            outcome = Outcome(load, fault_at, fault_end, recovered_after)
            print(f"\n{type(fault).__name__}: fault held {fault_end - fault_at:.1f} s, "
                  f"recovered {recovered_after:.2f} s after; {load.summary()}; "
                  f"during the fault: {dict(Counter(a.status for a in outcome.during()))}")
            check_answers(outcome)
            with _unwrapped():
                await load.acknowledge_all()
            await load.replay_sample()
            await load.check_exactly_once()
            check_answers(outcome)  # the retries' and replays' answers too
            print(f"after retries and replays: {load.summary()}")
            return outcome

    outcome = anyio.run(scenario, backend="asyncio")
    check_output(server)
    return outcome


@contextmanager
def _unwrapped() -> Iterator[None]:
    """A task group's failure as itself rather than a group of one (readable reports)."""
    try:
        yield
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise


async def drive(load: Load, fault: Fault) -> tuple[float, float, float]:
    """Load; the fault injected, held, removed; load until recovered and a little more.
    Returns when the fault began and ended, and how long recovery took."""
    async with anyio.create_task_group() as tg:
        tg.start_soon(load.run_workers)
        await load.wait_for(lambda: sum(a.status == 200 for a in load.answers) >= 100,
                            20, "100 consumptions acknowledged before the fault")
        await anyio.sleep(1.0)
        fault_at = anyio.current_time()
        try:
            await fault.inject()
            await anyio.sleep(max(0.0, fault_at + fault.hold_s - anyio.current_time()))
            if fault.expect_503:
                await load.wait_for(lambda: load.seen(503, since=fault_at),
                                    fault.appear_s, "a 503 during the fault")
        finally:
            with anyio.CancelScope(shield=True):
                await fault.remove()
        fault_end = anyio.current_time()
        recovered_after = await load.wait_for(
            lambda: any(a.status == 200 and a.sent >= fault_end for a in load.answers),
            RECOVERY_S, "a 200 after the fault ended")
        await anyio.sleep(AFTER_RECOVERY_S)
        load.stop()
    return fault_at, fault_end, recovered_after


def check_after_restart(server: Server, load: Load) -> None:
    """A new server process on the same database reads back exactly what was
    acknowledged: the balances and ledgers again, and replays of a sample of keys (now
    from the database)."""
    if server.proc is not None:
        stop_cleanly(server)
    server.start()

    async def check() -> None:
        async with httpx.AsyncClient(base_url=server.url, headers={"X-API-KEY": KEY},
                                     timeout=30) as http:
            load.http = http
            await load.check_exactly_once()
            await load.replay_sample(40)

    anyio.run(check, backend="asyncio")
    check_output(server)


def check_answers(outcome: Outcome) -> None:
    load = outcome.load
    bad = [a for a in load.answers if a.status not in ALLOWED]
    assert not bad, (f"{len(bad)} answers not 200/429/503 "
                     f"({dict(Counter(a.status or a.error for a in bad))}): "
                     f"{[a.describe() for a in bad[:5]]}\n{load.summary()}")
    no_retry_after = [a for a in load.answers if a.status in (429, 503) and not (
        a.retry_after is not None and a.retry_after.isdigit() and int(a.retry_after) > 0)]
    assert not no_retry_after, (f"{len(no_retry_after)} 429/503 answers without a positive "
                                f"Retry-After: {[a.retry_after for a in no_retry_after[:5]]}")
    assert load.stop_called is not None
    last = load.load_answers(since=load.stop_called - LAST_WINDOW_S)
    assert last, "no request in the last stretch of the load"
    not_ok = [a for a in last if a.status != 200]
    assert not not_ok, (f"{len(not_ok)} of {len(last)} requests sent in the last "
                        f"{LAST_WINDOW_S:.0f} s of the load did not get 200: "
                        f"{[a.describe() for a in not_ok[:5]]}")


def _pool_warning(lines: list[str], i: int) -> bool:
    """Whether line i is the traceback asyncpg's pool attaches to its own warning while it
    fails to reconnect in the background ("Failed to restore the pool connection floor;
    retrying", asyncpg >= 0.30): the library's noise during an outage, not a creditd
    failure."""
    return (lines[i].startswith("Traceback") and i > 0 and "WARNING" in lines[i - 1]
            and "asyncpg.pool" in lines[i - 1])


def check_output(server: Server) -> None:
    assert server.proc is not None and server.proc.poll() is None, (
        "the server exited:\n" + "\n".join(server.lines[-50:]))
    lines = list(server.lines)
    bad = [i for i, line in enumerate(lines) if any(w in line for w in FORBIDDEN_OUTPUT)
           and not _pool_warning(lines, i)]
    # Each failure with what follows it (a traceback's frames and message), the first few.
    shown = "\n---\n".join("\n".join(lines[i:i + 40]) for i in bad[:3])
    assert not bad, f"the server logged {len(bad)} failures; the first:\n{shown}"


# ---------------------------------------------------------------------------------------
# PostgreSQL


async def _admin(statement: str, url: str = PG_ADMIN) -> None:
    conn = await asyncpg.connect(url, timeout=5)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database (skipped without PostgreSQL, a failure under CI=true).
    Requested before `make_server`, so the server stops before the database is dropped."""
    url, drop = fresh_pg_url()
    try:
        yield url
    finally:
        drop()


def _db_name(url: str) -> str:
    return url.rsplit("/", 1)[1]


class RefuseConnections(Fault):
    """The database stops accepting connections (a connect fails with SQLSTATE 55000,
    "database … is not currently accepting connections") and every session it has is
    terminated; after `hold_s`, it accepts them again."""

    def __init__(self, url: str) -> None:
        self.db = _db_name(url)

    async def inject(self) -> None:
        await _admin(f'ALTER DATABASE "{self.db}" ALLOW_CONNECTIONS false')
        await _admin("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                     f"WHERE datname = '{self.db}' AND pid <> pg_backend_pid()")

    async def remove(self) -> None:
        await _admin(f'ALTER DATABASE "{self.db}" ALLOW_CONNECTIONS true')


def test_postgres_connections_refused_and_sessions_terminated(pg_url, make_server) -> None:
    server = make_server(pg_url, api_keys=KEY).start()
    outcome = run_scenario(server, RefuseConnections(pg_url))
    assert any(a.status == 503 for a in outcome.during())
    check_after_restart(server, outcome.load)


def _cluster() -> tuple[str, str]:
    """The Debian cluster (version, name) serving PG_ADMIN's port."""
    if shutil.which("pg_ctlcluster") is None or shutil.which("pg_lsclusters") is None:
        _missing("pg_ctlcluster is not available to restart PostgreSQL")
    port = str(httpx.URL(PG_ADMIN).port or 5432)
    out = subprocess.run(["pg_lsclusters", "--no-header"], capture_output=True, text=True,
                         check=True).stdout
    for line in out.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[2] == port:
            return fields[0], fields[1]
    _missing(f"no PostgreSQL cluster on port {port} in `pg_lsclusters`:\n{out}")
    raise AssertionError("unreachable")


async def _ensure_running(version: str, name: str, timeout: float = 60.0) -> None:
    """Start the cluster if it is not running, then wait until it takes connections."""
    status = await anyio.run_process(["pg_ctlcluster", version, name, "status"], check=False)
    if status.returncode != 0:
        await anyio.run_process(["pg_ctlcluster", version, name, "start"], check=False)
    with anyio.fail_after(timeout):
        while True:
            try:
                await _admin("SELECT 1")
                return
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                await anyio.sleep(0.2)


class FastRestart(Fault):
    """`pg_ctlcluster … restart -m fast`: every session is cut, new connections are
    refused until the server is up again. The fault lasts as long as the restart."""

    hold_s = 0.0

    def __init__(self, version: str, name: str) -> None:
        self.cluster = (version, name)

    async def inject(self) -> None:
        result = await anyio.run_process(
            ["pg_ctlcluster", *self.cluster, "restart", "-m", "fast"], check=False)
        assert result.returncode == 0, result.stderr.decode()

    async def remove(self) -> None:
        await _ensure_running(*self.cluster)


def test_postgres_fast_restart(pg_url, make_server) -> None:
    version, name = _cluster()
    try:
        server = make_server(pg_url, api_keys=KEY).start()
        outcome = run_scenario(server, FastRestart(version, name))
        assert any(a.status == 503 for a in outcome.during())
        check_after_restart(server, outcome.load)
    finally:
        anyio.run(_ensure_running, version, name, backend="asyncio")


class LedgerLocked(Fault):
    """Another session holds `LOCK TABLE ledger IN ACCESS EXCLUSIVE MODE` for `hold_s`:
    every flush (it writes the ledger) waits on it."""

    def __init__(self, url: str, hold_s: float, expect_503: bool) -> None:
        self.url = url
        self.hold_s = hold_s
        self.expect_503 = expect_503
        self.appear_s = 5.0
        self.conn: asyncpg.Connection | None = None
        self.tx: Any = None

    async def inject(self) -> None:
        self.conn = await asyncpg.connect(self.url, timeout=5)
        self.tx = self.conn.transaction()
        await self.tx.start()
        await self.conn.execute("LOCK TABLE ledger IN ACCESS EXCLUSIVE MODE", timeout=10)

    async def remove(self) -> None:
        if self.conn is not None:
            try:
                if self.tx is not None:
                    await self.tx.rollback()
            finally:
                await self.conn.close()
                self.conn = None


def test_postgres_ledger_locked_within_the_database_timeout(pg_url, make_server) -> None:
    """Held 3 s, under the default 10 s database timeout: writes wait; whatever is answered
    meanwhile is 200, 429 or 503, and everything recovers."""
    server = make_server(pg_url, api_keys=KEY).start()
    outcome = run_scenario(server, LedgerLocked(pg_url, hold_s=3.0, expect_503=False))
    # The lock did hold writes back: requests sent under it waited (or were refused).
    during = outcome.during()
    assert any(a.took >= 1.5 or a.status != 200 for a in during), (
        f"nothing stalled under the lock: {outcome.load.summary()}")
    check_after_restart(server, outcome.load)


def test_postgres_ledger_locked_past_the_database_timeout(pg_url, make_server) -> None:
    """Held 5 s with `CREDITD_DB_TIMEOUT_S=2`: flushes time out, and that is a 503."""
    server = make_server(pg_url, api_keys=KEY, env={"CREDITD_DB_TIMEOUT_S": "2"}).start()
    outcome = run_scenario(server, LedgerLocked(pg_url, hold_s=5.0, expect_503=True))
    assert any(a.status == 503 for a in outcome.during())
    check_after_restart(server, outcome.load)


# ---------------------------------------------------------------------------------------
# SQLite


def stop_cleanly(server: Server) -> None:
    # uvicorn re-raises the SIGTERM it handled once it has shut down: -15 is a clean stop.
    code = server.stop()
    assert code in (0, -signal.SIGTERM), f"exit {code}:\n" + "\n".join(server.lines[-30:])


def _integrity(db: Path) -> None:
    conn = sqlite3.connect(db)
    try:
        result = conn.execute("PRAGMA integrity_check").fetchall()
    finally:
        conn.close()
    assert result == [("ok",)], result


class DiskFull(Fault):
    """The file system holding the database filled to the last byte by a filler file;
    removing the filler frees the space."""

    hold_s = 3.0

    def __init__(self, directory: Path) -> None:
        self.filler = directory / "filler"

    def _fill(self) -> None:
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            for size in (1 << 20, 1 << 12, 1 << 9):
                block = bytes(size)
                while True:
                    try:
                        if os.write(fd, block) == 0:
                            break
                    except OSError as exc:
                        if exc.errno != errno.ENOSPC:
                            raise
                        break
        finally:
            os.close(fd)

    async def inject(self) -> None:
        await anyio.to_thread.run_sync(self._fill)

    async def remove(self) -> None:
        self.filler.unlink(missing_ok=True)


class FileSizeLimited(Fault):
    """Without the right to mount a tmpfs: the server's processes (its own and SQLite's
    writer's) may not write files past their current size (RLIMIT_FSIZE, soft limit only,
    so it can be raised back): SQLite's writes past it fail with EFBIG as they would with
    ENOSPC on a full disk."""

    hold_s = 3.0

    def __init__(self, server: Server, db: Path) -> None:
        self.server = server
        self.db = db
        self.before: dict[int, tuple[int, int]] = {}

    async def inject(self) -> None:
        assert self.server.proc is not None
        sizes = [p.stat().st_size for p in (self.db, Path(f"{self.db}-wal")) if p.exists()]
        server = self.server.proc.pid
        for pid in [server, *child_pids(server)]:
            self.before[pid] = before = resource.prlimit(pid, resource.RLIMIT_FSIZE)
            resource.prlimit(pid, resource.RLIMIT_FSIZE, (min(sizes), before[1]))

    async def remove(self) -> None:
        for pid, before in self.before.items():
            with contextlib.suppress(ProcessLookupError):
                resource.prlimit(pid, resource.RLIMIT_FSIZE, before)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path | None]:
    """A 64 MiB tmpfs mounted for the test (None when mounting is not permitted).
    Requested before `make_server`, so the server stops before it is unmounted."""
    directory = tmp_path / "disk"
    directory.mkdir()
    mounted = shutil.which("mount") is not None and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(directory)],
        capture_output=True, text=True).returncode == 0
    try:
        yield directory if mounted else None
    finally:
        if mounted:
            if subprocess.run(["umount", str(directory)]).returncode != 0:
                subprocess.run(["umount", "-l", str(directory)])


def test_sqlite_disk_full(small_disk, tmp_path, make_server) -> None:
    db = (small_disk or tmp_path) / "creditd.db"
    server = make_server(f"sqlite:///{db}", api_keys=KEY).start()
    fault: Fault = DiskFull(small_disk) if small_disk is not None else FileSizeLimited(server, db)
    outcome = run_scenario(server, fault)
    assert any(a.status == 503 for a in outcome.during())
    stop_cleanly(server)
    _integrity(db)
    check_after_restart(server, outcome.load)


def _immutable_works(directory: Path) -> str | None:
    """None if `chattr +i` refuses writes through an already-open descriptor here, else
    why not."""
    if shutil.which("chattr") is None:
        return "chattr is not available"
    probe = directory / "probe"
    fd = os.open(probe, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        done = subprocess.run(["chattr", "+i", str(probe)], capture_output=True, text=True)
        if done.returncode != 0:
            return f"chattr +i failed: {done.stderr.strip()}"
        try:
            os.write(fd, b"x")
        except PermissionError:
            return None
        return "an immutable file is still writable through an open descriptor here"
    finally:
        subprocess.run(["chattr", "-i", str(probe)], capture_output=True)
        os.close(fd)
        probe.unlink()


class ReadOnly(Fault):
    """The database file and its WAL made immutable (`chattr +i`): every write to them is
    refused (EPERM), through descriptors already open too, even to root."""

    hold_s = 3.0

    def __init__(self, db: Path) -> None:
        self.files = [db, Path(f"{db}-wal")]

    async def inject(self) -> None:
        await anyio.run_process(["chattr", "+i", *map(str, self.files)], check=True)

    async def remove(self) -> None:
        await anyio.run_process(["chattr", "-i", *map(str, self.files)], check=True)


def test_sqlite_read_only(tmp_path, make_server) -> None:
    directory = tmp_path / "ro"
    directory.mkdir()
    why_not = _immutable_works(directory)
    if why_not is not None:
        _missing(f"cannot make a file read-only for a running root process: {why_not}")
    db = directory / "creditd.db"
    server = make_server(f"sqlite:///{db}", api_keys=KEY).start()
    fault = ReadOnly(db)
    try:
        outcome = run_scenario(server, fault)
        assert any(a.status == 503 for a in outcome.during())
        stop_cleanly(server)
    finally:
        # Never leave an immutable file behind (pytest could not remove its tmp_path).
        subprocess.run(["chattr", "-i", *map(str, fault.files)], capture_output=True)
    _integrity(db)
    check_after_restart(server, outcome.load)
