"""Store outages: the database goes away under load, then comes back.

PostgreSQL: a small TCP proxy (anyio, in this file) sits between the store and the server;
`cut()` closes every proxied connection and the listening socket (new connections are
refused), `restore()` listens again on the same port. SQLite: a second connection holds
`BEGIN EXCLUSIVE` on the file while the store runs with a 200 ms busy timeout.

What must hold: commands fail with StoreUnavailable (promptly, never anything else, never
a hang); nothing acknowledged is lost or applied twice; the in-memory state rolls back to
what is durable; once the database is back the store reconnects by itself and commands
succeed again. Nothing sleeps: the load is driven by tasks that await replies, the test
awaits events those tasks set, and `anyio.fail_after` bounds every wait.
"""

from __future__ import annotations

import os
import signal
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.abc
import pytest

from engine.core.commands import (
    BalancesReply,
    Consume,
    ConsumeReply,
    CreateGrant,
    GetBalances,
    GrantReply,
)
from engine.core.model import GrantType
from engine.runtime import ManualClock, Runtime, StoreUnavailable
from persistence import open_store

pytestmark = pytest.mark.anyio

CUR = "credits"
INITIAL = 10_000_000


def grant(grant_id: str, amount: int, **fields: Any) -> CreateGrant:
    fields.setdefault("display_name", grant_id)
    return CreateGrant(grant_id=grant_id, amount=amount, currency_id=CUR,
                       grant_type=GrantType.PAID, **fields)


# ---------------------------------------------------------------------------------------
# The proxy


class TcpProxy:
    """127.0.0.1:<port> → upstream, one pair of pump tasks per connection."""

    def __init__(self, tg: anyio.abc.TaskGroup, upstream: tuple[str, int]) -> None:
        self._tg = tg
        self._upstream = upstream
        self.port = 0
        self._listener: tuple[anyio.CancelScope, anyio.Event] | None = None
        self._connections: dict[anyio.CancelScope, anyio.Event] = {}
        self.accepted = 0
        # lose_reply_to(marker): forward the next client message carrying `marker`, then
        # drop the server's answer and close that connection — the write is durable, the
        # client cannot know. (A flush is one statement, an implicit transaction, and its
        # text is sent only when first prepared; its parameters, though, carry the data.)
        self._lose_reply_marker: bytes | None = None
        self.commit_replies_lost = 0

    async def restore(self) -> None:
        """Listen (again) on the same port."""
        assert self._listener is None
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1",
                                                   local_port=self.port)
        self.port = listener.extra(anyio.abc.SocketAttribute.local_port)
        scope, closed = anyio.CancelScope(), anyio.Event()
        self._listener = (scope, closed)
        self._tg.start_soon(self._serve, listener, scope, closed)

    async def cut(self) -> None:
        """Stop listening (connects are refused) and close every proxied connection; returns
        once all of it is closed."""
        assert self._listener is not None
        scope, closed = self._listener
        self._listener = None
        scope.cancel()
        await closed.wait()
        connections = list(self._connections.items())
        for scope, _ in connections:
            scope.cancel()
        for _, done in connections:
            await done.wait()

    def lose_reply_to(self, marker: bytes) -> None:
        self._lose_reply_marker = marker

    async def _serve(self, listener: Any, scope: anyio.CancelScope, closed: anyio.Event) -> None:
        try:
            with scope:
                async with listener:
                    await listener.serve(self._handle, task_group=self._tg)
        finally:
            closed.set()

    async def _handle(self, client: anyio.abc.SocketStream) -> None:
        scope, done = anyio.CancelScope(), anyio.Event()
        self._connections[scope] = done
        self.accepted += 1
        state = {"commit_sent": False}
        try:
            with scope:
                async with client:
                    upstream = await anyio.connect_tcp(*self._upstream)
                    async with upstream, anyio.create_task_group() as tg:
                        tg.start_soon(self._pump, client, upstream, tg, state, True)
                        tg.start_soon(self._pump, upstream, client, tg, state, False)
        except OSError:
            pass
        finally:
            del self._connections[scope]
            done.set()

    async def _pump(self, source: anyio.abc.SocketStream, sink: anyio.abc.SocketStream,
                    tg: anyio.abc.TaskGroup, state: dict[str, bool], from_client: bool) -> None:
        try:
            async for chunk in source:
                marker = self._lose_reply_marker
                if from_client and marker is not None and marker in chunk:
                    self._lose_reply_marker = None
                    state["commit_sent"] = True
                elif not from_client and state["commit_sent"]:
                    # The server answered the COMMIT: it is durable. Drop the answer, cut.
                    self.commit_replies_lost += 1
                    break
                await sink.send(chunk)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            pass
        tg.cancel_scope.cancel()  # either direction ending closes both


@asynccontextmanager
async def tcp_proxy(upstream: Any) -> AsyncIterator[TcpProxy]:
    """A proxy to the PostgreSQL server of `upstream` (a conftest PgDatabase)."""
    async with anyio.create_task_group() as tg:
        proxy = TcpProxy(tg, (upstream.host, upstream.port))
        await proxy.restore()
        try:
            yield proxy
        finally:
            tg.cancel_scope.cancel()


# ---------------------------------------------------------------------------------------
# Load through an outage


class Outcome:
    def __init__(self, customers: list[str]) -> None:
        self.acked: dict[str, dict[str, int]] = {c: {} for c in customers}
        self.failed: dict[str, dict[str, int]] = {c: {} for c in customers}
        self.other_errors: list[BaseException] = []


async def drive_through_outage(
    rt: Runtime,
    customers: list[str],
    cut: Callable[[], Awaitable[None]],
    restore: Callable[[], Awaitable[None]],
    during_outage: Callable[[Outcome], Awaitable[None]] | None = None,
) -> Outcome:
    """Every customer's task submits keyed consumptions back to back. After 300
    acknowledgements the database is cut; once every customer has seen StoreUnavailable it
    is restored, and each task goes on until it has 3 successes again."""
    out = Outcome(customers)
    cut_done, restored = anyio.Event(), anyio.Event()
    enough_acked, all_failed, all_recovered = anyio.Event(), anyio.Event(), anyio.Event()
    failed_while_down: set[str] = set()
    recovered: Counter[str] = Counter()
    attempts_after_restore: Counter[str] = Counter()

    async def customer(cid: str) -> None:
        i = 0
        while True:
            i += 1
            key, amount = f"{cid}-{i}", 1 + i % 7
            if restored.is_set():
                attempts_after_restore[cid] += 1
                if attempts_after_restore[cid] > 20:
                    out.other_errors.append(AssertionError(f"{cid}: no recovery in 20 tries"))
                    return
            try:
                with anyio.fail_after(15):  # a hang is a failure, not a wait
                    reply = await rt.submit(cid, Consume(currency_id=CUR, amount=amount,
                                                         idempotency_key=key))
            except StoreUnavailable:
                out.failed[cid][key] = amount
                if cut_done.is_set() and not restored.is_set():
                    failed_while_down.add(cid)
                    if len(failed_while_down) == len(customers):
                        all_failed.set()
                    await restored.wait()  # no point hammering a database that is down
                continue
            except Exception as exc:  # noqa: BLE001 - anything else is what we look for
                out.other_errors.append(exc)
                return
            assert isinstance(reply, ConsumeReply), reply
            out.acked[cid][key] = amount
            if sum(map(len, out.acked.values())) >= 300:
                enough_acked.set()
            if restored.is_set():
                recovered[cid] += 1
                if recovered[cid] == 3:
                    if all(recovered[c] >= 3 for c in customers):
                        all_recovered.set()
                    return

    async with anyio.create_task_group() as tg:
        for cid in customers:
            tg.start_soon(customer, cid)
        with anyio.fail_after(30):
            await enough_acked.wait()
        await cut()
        cut_done.set()
        with anyio.fail_after(30):
            await all_failed.wait()
        if during_outage is not None:
            await during_outage(out)
        await restore()
        restored.set()
        with anyio.fail_after(30):
            await all_recovered.wait()
    return out


async def check_after_recovery(store: Any, rt: Runtime, ledger_checked: Any,
                               keyed_ledger: Any, out: Outcome, *,
                               commits_can_be_ambiguous: bool) -> None:
    """Nothing acknowledged lost or doubled; the runtime's state is what is durable; and a
    client retrying its failed commands with their keys gets each applied exactly once."""
    assert out.other_errors == []
    for cid in out.acked:
        entries = await ledger_checked(store, rt, cid)  # in-memory balance == ledger sum
        sent = [*out.acked[cid], *out.failed[cid]]
        keys = await keyed_ledger(store, cid, entries, sent)
        assert all(n == 1 for n in keys.values()), cid
        assert set(out.acked[cid]) <= set(keys), f"{cid}: acknowledged consumptions lost"
        # A failure that reached the database anyway: the connection broke after the
        # server committed and before its answer arrived. Only a network cut can do that.
        ambiguous = {k: a for k, a in out.failed[cid].items() if k in keys}
        if not commits_can_be_ambiguous:
            assert ambiguous == {}, f"{cid}: failed commands were applied: {ambiguous}"
        assert set(keys) == set(out.acked[cid]) | set(ambiguous)
        balances = await rt.submit(cid, GetBalances())
        assert isinstance(balances, BalancesReply)
        spent = sum(out.acked[cid].values()) + sum(ambiguous.values())
        assert balances.balances[0].current_balance == INITIAL - spent

        for key, amount in out.failed[cid].items():  # the client retries
            reply = await rt.submit(cid, Consume(currency_id=CUR, amount=amount,
                                                 idempotency_key=key))
            assert isinstance(reply, ConsumeReply), reply
        entries = await ledger_checked(store, rt, cid)
        keys = await keyed_ledger(store, cid, entries, sent)
        assert keys == {k: 1 for k in sent}


# ---------------------------------------------------------------------------------------
# PostgreSQL


async def test_postgres_outage_mid_load(pg_database, engine, ledger_checked,
                                        keyed_ledger) -> None:
    customers = [f"pg{i:02}" for i in range(20)]
    async with tcp_proxy(pg_database) as proxy:
        url = pg_database.url(proxy.port)
        async with engine(url, ManualClock(), command_timeout_s=5) as (store, rt):
            for cid in customers:
                assert isinstance(await rt.submit(cid, grant(f"{cid}-g", INITIAL)), GrantReply)

            async def while_down(out: Outcome) -> None:
                # Still down: a fresh command (no state in memory) fails as promptly.
                with anyio.fail_after(15), pytest.raises(StoreUnavailable):
                    await rt.submit("pg-new", grant("g-new", 5))
                assert proxy.port  # refused, not hanging

            out = await drive_through_outage(rt, customers, proxy.cut, proxy.restore,
                                             while_down)
            assert sum(map(len, out.failed.values())) >= len(customers)
            await check_after_recovery(store, rt, ledger_checked, keyed_ledger, out,
                                       commits_can_be_ambiguous=True)
            assert isinstance(await rt.submit("pg-new", grant("g-new", 5)), GrantReply)

        # And all of it is durable across a restart.
        async with engine(url, ManualClock()) as (store, rt):
            for cid in customers:
                await ledger_checked(store, rt, cid)


async def test_postgres_runtime_starts_while_database_is_down(pg_database) -> None:
    """A runtime started while PostgreSQL is unreachable (a restart during an outage) must
    come up and answer StoreUnavailable, then work once the database is back."""
    async with tcp_proxy(pg_database) as proxy:
        url = pg_database.url(proxy.port)
        async with open_store(url, command_timeout_s=5) as store:
            await proxy.cut()
            with anyio.fail_after(30):
                async with Runtime(store, ManualClock()) as rt:
                    with pytest.raises(StoreUnavailable):
                        await rt.submit("c", grant("g", 100))
                    await proxy.restore()
                    for _attempt in range(5):
                        try:
                            reply = await rt.submit("c", grant("g", 100))
                            break
                        except StoreUnavailable:
                            continue
                    assert isinstance(reply, GrantReply)


async def test_postgres_commit_answer_lost(pg_database, engine, ledger_checked) -> None:
    """The connection breaks after the server committed a flush and before its answer
    arrived. The caller gets StoreUnavailable although the write is durable; a retry with
    its idempotency key must return the remembered reply (not apply twice); and the store
    must go on writing for everyone — in particular the outbox must stay gapless and
    writable after a flush whose outcome the writer could not know."""
    async with tcp_proxy(pg_database) as proxy:
        url = pg_database.url(proxy.port)
        async with engine(url, ManualClock(), command_timeout_s=5) as (store, rt):
            assert isinstance(await rt.submit("c1", grant("g1", 1_000)), GrantReply)
            proxy.lose_reply_to(b"grant-2")  # the key travels only in the flush
            with anyio.fail_after(15), pytest.raises(StoreUnavailable):
                await rt.submit("c1", grant("g2", 500, idempotency_key="grant-2"))
            assert proxy.commit_replies_lost == 1
            # It is durable: the grant, its key and its outbox row.
            outbox = await store.outbox_after(0, 100)
            assert [(i, cid) for i, cid, _ in outbox][-1] == (len(outbox), "c1")
            # The client's retry: the same body, with a fresh grant id the gateway made up.
            retry = await rt.submit("c1", grant("g2-retry", 500, idempotency_key="grant-2",
                                                display_name="g2"))
            assert isinstance(retry, GrantReply) and retry.grant.id == "g2", retry
            await ledger_checked(store, rt, "c1")

            # Everyone else goes on (a few tries: the first may meet a stale connection).
            outcomes = []
            for attempt in range(3):
                try:
                    outcomes.append(await rt.submit("c2", grant(f"g3-{attempt}", 100,
                                                                idempotency_key="g3")))
                    break
                except StoreUnavailable as exc:
                    outcomes.append(exc)
            assert isinstance(outcomes[-1], GrantReply), outcomes
            ids = [i for i, _, _ in await store.outbox_after(0, 1_000)]
            assert ids == list(range(1, len(ids) + 1))


# ---------------------------------------------------------------------------------------
# SQLite


def _sqlite_path(url: str) -> str:
    return url[len("sqlite:///"):]


class FileLock:
    """A second connection holding BEGIN EXCLUSIVE on the database file."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._db: sqlite3.Connection | None = None

    async def take(self) -> None:
        def take() -> sqlite3.Connection:
            db = sqlite3.connect(self._path, timeout=10, isolation_level=None,
                                 check_same_thread=False)
            db.execute("BEGIN EXCLUSIVE")
            return db

        self._db = await anyio.to_thread.run_sync(take)

    async def release(self) -> None:
        db, self._db = self._db, None
        assert db is not None

        def release() -> None:
            db.execute("ROLLBACK")
            db.close()

        await anyio.to_thread.run_sync(release)


async def test_sqlite_locked_mid_load(tmp_path, engine, ledger_checked, keyed_ledger) -> None:
    url = f"sqlite:///{tmp_path / 'creditd.db'}"
    customers = [f"sq{i:02}" for i in range(10)]
    lock = FileLock(_sqlite_path(url))
    async with engine(url, ManualClock(), busy_timeout_ms=200) as (store, rt):
        for cid in customers:
            assert isinstance(await rt.submit(cid, grant(f"{cid}-g", INITIAL)), GrantReply)

        async def while_locked(out: Outcome) -> None:
            # Reads still work in WAL mode: the state served now is what is durable, i.e.
            # the failed consumptions were rolled back in memory.
            for cid in customers:
                balances = await rt.submit(cid, GetBalances())
                assert isinstance(balances, BalancesReply)
                assert balances.balances[0].current_balance == INITIAL - sum(
                    out.acked[cid].values())
            with anyio.fail_after(15), pytest.raises(StoreUnavailable):
                await rt.submit("sq-new", grant("g-new", 5))

        out = await drive_through_outage(rt, customers, lock.take, lock.release, while_locked)
        await check_after_recovery(store, rt, ledger_checked, keyed_ledger, out,
                                   commits_can_be_ambiguous=False)

    async with engine(url, ManualClock()) as (store, rt):
        for cid in customers:
            await ledger_checked(store, rt, cid)


async def test_sqlite_async_durability_failed_flush_reloads_customers(tmp_path, engine, keyed_ledger,
                                                                      ledger_checked) -> None:
    """durability="async": a consumption is acknowledged, then its flush fails (the file
    is locked). The customer's in-memory state must not keep serving the lost change: a
    read shows what is durable, and the client's retry with the same key re-applies it
    durably instead of being answered from the lost state."""
    url = f"sqlite:///{tmp_path / 'creditd.db'}"
    lock = FileLock(_sqlite_path(url))
    consume = Consume(currency_id=CUR, amount=100, idempotency_key="k")
    async with engine(url, ManualClock(), durability="async", busy_timeout_ms=200) as (
            store, rt):
        assert isinstance(await rt.submit("c", grant("g", 1_000)), GrantReply)
        assert isinstance(await rt.submit("other", grant("g", 1_000)), GrantReply)
        await store.load("other")  # returns once "other"'s queued rows are flushed
        await lock.take()
        assert isinstance(await rt.submit("c", consume), ConsumeReply)  # acked, not durable
        assert isinstance(await rt.submit("other", Consume(currency_id=CUR, amount=1)),
                          ConsumeReply)
        with anyio.fail_after(15):
            await store.load("other")  # returns once that flush has failed (c's went too)
        await lock.release()

        balances = await rt.submit("c", GetBalances())
        assert isinstance(balances, BalancesReply)
        assert balances.balances[0].current_balance == 1_000, "a lost write is still served"
        assert isinstance(await rt.submit("c", consume), ConsumeReply)
    async with engine(url, ManualClock()) as (store, rt):
        entries = await ledger_checked(store, rt, "c")
        assert await keyed_ledger(store, "c", entries, ["k"]) == {"k": 1}, \
            "the retry was not applied"


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_sqlite_writer_process_killed_mid_load(tmp_path, engine, ledger_checked,
                                                     keyed_ledger) -> None:
    """SQLite's writer is a process (persistence/sqlite_writer.py): killed three times
    under load, each time the flush in flight fails as StoreUnavailable (or was committed
    just before: its answer is lost, so it counts as ambiguous), the store starts a new
    writer for the next one, and nothing acknowledged is lost or applied twice."""
    url = f"sqlite:///{tmp_path / 'creditd.db'}"
    customers = [f"wk{i:02}" for i in range(10)]
    async with engine(url, ManualClock()) as (store, rt):
        for cid in customers:
            assert isinstance(await rt.submit(cid, grant(f"{cid}-g", INITIAL)), GrantReply)
        out = Outcome(customers)
        acked = [0]
        milestone = anyio.Event()
        stop = anyio.Event()

        async def customer(cid: str) -> None:
            i = 0
            while not stop.is_set():
                i += 1
                key, amount = f"{cid}-{i}", 1 + i % 7
                try:
                    with anyio.fail_after(15):
                        reply = await rt.submit(cid, Consume(currency_id=CUR, amount=amount,
                                                             idempotency_key=key))
                except StoreUnavailable:
                    out.failed[cid][key] = amount
                    continue
                assert isinstance(reply, ConsumeReply), reply
                out.acked[cid][key] = amount
                acked[0] += 1
                if acked[0] % 100 == 0:
                    milestone.set()

        async def until_acked(n: int) -> None:
            nonlocal milestone
            with anyio.fail_after(30):
                while acked[0] < n:
                    await milestone.wait()
                    milestone = anyio.Event()

        async with anyio.create_task_group() as tg:
            for cid in customers:
                tg.start_soon(customer, cid)
            for kill in range(1, 4):
                await until_acked(200 * kill)
                os.kill(store._wdb.pid, signal.SIGKILL)
            await until_acked(1000)
            stop.set()
        assert store._wdb.started == 4
        assert sum(map(len, out.failed.values())) >= 3
        await check_after_recovery(store, rt, ledger_checked, keyed_ledger, out,
                                   commits_can_be_ambiguous=True)
