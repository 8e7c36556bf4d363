"""The actor runtime (engine.runtime.runtime), on asyncio and trio.

Time is driven with a ManualClock, and nothing here sleeps to synchronize: a test either
awaits a reply or calls `anyio.wait_all_tasks_blocked()` (every task, the runtime's workers
and timer loop included, has run until it waits on something). To hold a batch "in flight"
the tests use `BlockingStore`, a MemoryStore wrapper whose commit waits at a gate the test
opens.
"""

from __future__ import annotations

import ast
import functools
import inspect
import random
import typing
from pathlib import Path
from collections.abc import Sequence
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from engine.core import machine
from engine.core.amounts import SCALE
from engine.core.commands import (
    EventsReply,
    IngestEvents,
    Measurement,
    Metered,
    MeteredEvent,
    ReportUsage,
    RollUsage,
    UsageReply,
    BalancesReply,
    BalanceView,
    Command,
    AutoRechargeReply,
    ConfigureAutoRecharge,
    ConfigurePool,
    ConfirmPayment,
    Consume,
    ConsumeReply,
    GetAutoRecharge,
    PendingRecharges,
    PendingRechargesReply,
    SetGrantExpiry,
    SettleRecharge,
    CreateGrant,
    GetBalances,
    GetUsage,
    GrantReply,
    PoolSettingsReply,
    Refused,
    Release,
    ReleaseReply,
    Reply,
    Reserve,
    ReserveReply,
    Tick,
    TickReply,
    UsageCountersReply,
    VoidGrant,
)
from engine.core.effects import DomainEvent, Effects, LedgerEntry
from engine.core.recharge import grant_id_for
from engine.core.model import CustomerState, EventType, GrantType, LedgerEventType as L
from engine.core.refusals import Refusal
from engine.runtime import (
    EngineClosed,
    EngineFault,
    ManualClock,
    Overloaded,
    Runtime,
    StoreUnavailable,
)
from persistence import MemoryStore

pytestmark = pytest.mark.anyio

# A broken runtime tends to hang a test (a reply that never comes) rather than fail it.
# Every async test runs under this real-time limit so that it fails instead; it is a guard,
# never a means of synchronization (each test takes well under two seconds).
GUARD_S = 60

CUR = "credits"
CORE_DIR = Path(__file__).resolve().parents[2] / "engine" / "core"


# ---------------------------------------------------------------------------------------
# Helpers


class BlockingStore:
    """A MemoryStore whose commits can be held at a gate.

    While armed (`arm()`), every commit waits until `release()`; `blocked` counts the
    commits waiting at the gate right now. `fail_next` makes the next N commits (after the
    gate) raise StoreUnavailable without writing anything.

    Every other attribute is the inner MemoryStore's. The inner store takes its copy of the
    rows after the gate. That is within the store contract: the actor does not touch a
    customer's state while its batch is in flight.
    """

    def __init__(self, inner: MemoryStore | None = None) -> None:
        self.inner = inner if inner is not None else MemoryStore()
        self._gate: anyio.Event | None = None
        self.blocked = 0
        self.fail_next = 0

    def arm(self) -> None:
        assert self._gate is None, "already armed"
        self._gate = anyio.Event()

    def release(self) -> None:
        gate, self._gate = self._gate, None
        assert gate is not None, "not armed"
        gate.set()

    def __getattr__(self, name: str) -> Any:
        # Everything but commit behaves exactly as the MemoryStore (lookup_keys,
        # due_customers, ...), so the runtime sees the same optional capabilities.
        return getattr(self.inner, name)

    async def load(self, customer_id: str) -> CustomerState:
        return await self.inner.load(customer_id)

    async def commit(self, customer_id: str, state: CustomerState, fx: Effects,
                     new_keys: Sequence[str] = ()) -> None:
        gate = self._gate
        if gate is not None:
            self.blocked += 1
            try:
                await gate.wait()
            finally:
                self.blocked -= 1
        if self.fail_next:
            self.fail_next -= 1
            await anyio.lowlevel.checkpoint()
            raise StoreUnavailable("injected commit failure", retry_after_s=1.0)
        await self.inner.commit(customer_id, state, fx, new_keys)

    # Pass-throughs for assertions.
    def ledger(self, customer_id: str) -> list[LedgerEntry]:
        return self.inner.ledger(customer_id)

    @property
    def commits(self) -> int:
        return self.inner.commits


def grant(gid: str, amount: int, **kw: Any) -> CreateGrant:
    return CreateGrant(grant_id=gid, currency_id=CUR, amount=amount,
                       grant_type=GrantType.PAID, display_name=f"grant {gid}", **kw)


def consume(amount: int, key: str | None = None, **kw: Any) -> Consume:
    return Consume(currency_id=CUR, amount=amount, idempotency_key=key, **kw)


def reserve(rid: str, amount: int, expires_at: int, **kw: Any) -> Reserve:
    return Reserve(reservation_id=rid, currency_id=CUR, amount=amount, expires_at=expires_at,
                   **kw)


def entries_of(store: MemoryStore | BlockingStore, cid: str, event_type: L) -> list[LedgerEntry]:
    return [e for e in store.ledger(cid) if e.event_type is event_type]


async def settle() -> None:
    """Let every task (workers, timer loop, submitters) run until it waits."""
    await anyio.wait_all_tasks_blocked()


async def balance(rt: Runtime, cid: str) -> BalanceView:
    reply = await rt.submit(cid, GetBalances(currency_id=CUR))
    assert isinstance(reply, BalancesReply)
    (view,) = reply.balances
    return view


def without_timestamp(view: BalanceView) -> dict[str, Any]:
    d = {f: getattr(view, f) for f in view.__struct_fields__}
    del d["timestamp"]
    return d


async def submit_refused_at_the_door(rt: Runtime, cid: str, command: Command,
                                     **kw: Any) -> Exception:
    """Submit inside an already-cancelled scope and return what it raised. A submit that is
    refused "immediately" raises before its first checkpoint; one that queued the command
    and waits for a reply is cancelled at that wait instead, and that fails the test."""
    with anyio.CancelScope() as scope:
        scope.cancel()
        try:
            await rt.submit(cid, command, **kw)
        except Exception as exc:  # noqa: BLE001 - returned for the caller to check
            return exc
        pytest.fail("submit returned a reply without waiting for a commit")
    pytest.fail("submit queued the command and waited instead of refusing it at once")


class Results:
    """Outcomes of submits run as tasks: `results[name]` is a Reply or the raised error."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.out: dict[str, Reply | BaseException] = {}

    async def run(self, name: str, cid: str, command: Command,
                  deadline_ms: int | None = None) -> None:
        try:
            self.out[name] = await self.rt.submit(cid, command, deadline_ms=deadline_ms)
        except Exception as exc:  # noqa: BLE001 - recorded for the test to check
            self.out[name] = exc

    def __getitem__(self, name: str) -> Reply | BaseException:
        return self.out[name]

    def __contains__(self, name: str) -> bool:
        return name in self.out


# ---------------------------------------------------------------------------------------
# 1. Concurrency: one customer, many concurrent consumers


@pytest.mark.parametrize("batch_max", [512, 64, 1])
async def test_concurrent_consumers_never_overspend(batch_max: int) -> None:
    consumers, amount, covered = 1000, 7, 313
    initial = covered * amount + (amount - 1)  # covers exactly `covered` consumptions
    clock, store = ManualClock(), MemoryStore()
    replies: dict[int, Reply] = {}
    async with Runtime(store, clock, batch_max=batch_max, passivate_after_ms=None) as rt:
        assert isinstance(await rt.submit("c1", grant("g1", initial)), GrantReply)

        async def one(i: int) -> None:
            replies[i] = await rt.submit("c1", consume(amount, key=f"k{i}"))

        async with anyio.create_task_group() as tg:
            for i in range(consumers):
                tg.start_soon(one, i)

        accepted = {i for i, r in replies.items() if isinstance(r, ConsumeReply)}
        refused = {i for i, r in replies.items() if isinstance(r, Refused)}
        assert len(replies) == consumers
        assert len(accepted) == covered
        assert len(refused) == consumers - covered
        assert {replies[i].code for i in refused} == {Refusal.INSUFFICIENT_CREDITS.value}
        assert sum(replies[i].amount for i in accepted) == covered * amount

        # Every accepted reply saw a distinct balance: the consumptions were serialized.
        seen = sorted(replies[i].balance.current_balance for i in accepted)
        assert seen == [initial - amount * n for n in range(covered, 0, -1)]

        view = await balance(rt, "c1")
        assert view.current_balance == amount - 1
        assert view.total_consumed == covered * amount

        stats = rt.runtime_statistics()
        assert stats.pending == 0
        assert stats.commands == consumers + 2  # the grant, the consumers, GetBalances
        assert stats.overloads == 0
        assert rt.statistics("c1").waiting_senders == 0

    consumed = entries_of(store, "c1", L.CREDITS_CONSUMED)
    assert len(consumed) == covered
    assert sum(e.amount for e in consumed) == -covered * amount
    assert {e.idempotency_key for e in consumed} == {f"k{i}" for i in accepted}
    seqs = [e.seq for e in store.ledger("c1")]
    assert seqs == list(range(1, len(seqs) + 1))  # gapless, in apply order


async def test_concurrent_consumers_varied_amounts() -> None:
    rng = random.Random(20260101)
    amounts = [rng.randint(1, 40) for _ in range(1000)]
    initial = sum(amounts) // 2
    clock, store = ManualClock(), MemoryStore()
    replies: dict[int, Reply] = {}
    async with Runtime(store, clock, batch_max=37, passivate_after_ms=None) as rt:
        await rt.submit("c1", grant("g1", initial // 3, priority=10))
        await rt.submit("c1", grant("g2", initial - initial // 3, priority=20))

        async def one(i: int) -> None:
            replies[i] = await rt.submit("c1", consume(amounts[i], key=f"k{i}"))

        async def reader() -> None:
            for _ in range(20):
                view = await balance(rt, "c1")
                assert 0 <= view.current_balance <= initial

        async with anyio.create_task_group() as tg:
            for i in range(len(amounts)):
                tg.start_soon(one, i)
            tg.start_soon(reader)

        accepted = [i for i, r in replies.items() if isinstance(r, ConsumeReply)]
        refused = [i for i, r in replies.items() if isinstance(r, Refused)]
        assert len(accepted) + len(refused) == len(amounts)
        assert {replies[i].code for i in refused} == {Refusal.INSUFFICIENT_CREDITS.value}
        spent = sum(amounts[i] for i in accepted)
        final = (await balance(rt, "c1")).current_balance
        assert spent + final == initial
        assert final >= 0
        # The balance only goes down, so whatever was refused could not be covered at the
        # end either; and what was accepted went through one at a time.
        assert all(amounts[i] > final for i in refused)
        after = sorted((replies[i].balance.current_balance for i in accepted), reverse=True)
        assert len(set(after)) == len(after)
        chain = sorted(accepted, key=lambda i: -replies[i].balance.current_balance)
        prev = initial
        for i in chain:
            assert replies[i].balance.current_balance == prev - amounts[i]
            prev -= amounts[i]

    consumed = entries_of(store, "c1", L.CREDITS_CONSUMED)
    assert -sum(e.amount for e in consumed) == spent
    assert {e.idempotency_key for e in consumed} == {f"k{i}" for i in accepted}
    for i in accepted:
        assert -sum(e.amount for e in consumed if e.idempotency_key == f"k{i}") == amounts[i]


async def test_concurrent_duplicate_deliveries_apply_once() -> None:
    # 1,000 tasks, but only 500 distinct requests: each is delivered twice, concurrently.
    clock, store = ManualClock(), MemoryStore()
    replies: dict[int, Reply] = {}
    amount_of = lambda k: 1 + k % 9  # noqa: E731
    initial = 1500
    async with Runtime(store, clock, batch_max=50, passivate_after_ms=None) as rt:
        await rt.submit("c1", grant("g1", initial))

        async def one(i: int) -> None:
            k = i % 500
            replies[i] = await rt.submit("c1", consume(amount_of(k), key=f"k{k}"))

        async with anyio.create_task_group() as tg:
            for i in range(1000):
                tg.start_soon(one, i)

        accepted_keys = set()
        for k in range(500):
            a, b = replies[k], replies[k + 500]
            if isinstance(a, ConsumeReply) or isinstance(b, ConsumeReply):
                assert a == b  # the replay returns the original reply
                accepted_keys.add(f"k{k}")
            else:
                assert a.code == b.code == Refusal.INSUFFICIENT_CREDITS.value
        final = (await balance(rt, "c1")).current_balance

    consumed = entries_of(store, "c1", L.CREDITS_CONSUMED)
    assert [e.idempotency_key for e in consumed].count(None) == 0
    assert len({e.idempotency_key for e in consumed}) == len(consumed)  # one entry per key
    assert {e.idempotency_key for e in consumed} == accepted_keys
    spent = sum(amount_of(int(k[1:])) for k in accepted_keys)
    assert spent + final == initial


async def test_concurrent_customers_are_independent() -> None:
    clock, store = ManualClock(), MemoryStore()
    customers = [f"c{n}" for n in range(20)]
    async with Runtime(store, clock, workers_count=3, batch_max=8,
                       passivate_after_ms=None) as rt:
        async with anyio.create_task_group() as tg:
            for n, cid in enumerate(customers):
                tg.start_soon(rt.submit, cid, grant("g", 10 * (n + 1)))
        async with anyio.create_task_group() as tg:
            for n, cid in enumerate(customers):
                for i in range(30):
                    tg.start_soon(rt.submit, cid, consume(1, key=f"{cid}-{i}"))
        for n, cid in enumerate(customers):
            covered = min(30, 10 * (n + 1))
            assert (await balance(rt, cid)).current_balance == 10 * (n + 1) - covered
            assert len(entries_of(store, cid, L.CREDITS_CONSUMED)) == covered


# ---------------------------------------------------------------------------------------
# 2. The core apply step is pure and never awaits


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_core_apply_never_checkpoints() -> None:
    import trio.testing

    t0 = 1_767_225_600_000
    state = CustomerState("c1")
    steps: list[tuple[int, Command, type[Reply]]] = [
        (t0, grant("g1", 1000, expire_at=t0 + 10_000), GrantReply),
        (t0, grant("g2", 500, effective_at=t0 + 5_000), GrantReply),
        (t0, grant("g3", 200, await_payment=True), GrantReply),
        (t0, ConfirmPayment(grant_id="g3"), GrantReply),
        (t0, ConfigurePool(currency_id=CUR, low_balance_units=100, usage_low_percent=50),
         PoolSettingsReply),
        (t0 + 1, consume(100, key="k1"), ConsumeReply),
        (t0 + 2, consume(100, key="k1"), ConsumeReply),  # idempotent replay
        (t0 + 2, consume(999_999), Refused),
        (t0 + 3, reserve("r1", 50, t0 + 3_000), ReserveReply),
        (t0 + 4, Release(reservation_id="r1", consumed_amount=20), ReleaseReply),
        (t0 + 5, reserve("r2", 40, t0 + 2_000), ReserveReply),
        (t0 + 6, GetBalances(), BalancesReply),
        (t0 + 6, GetUsage(), UsageCountersReply),
        (t0 + 6, SetGrantExpiry(grant_id="g1", expire_at=t0 + 12_000), GrantReply),
        (t0 + 7, VoidGrant(grant_id="g3"), GrantReply),
        # Due timers (r2's TTL, g2's activation, g1's expiry) fire inside apply.
        (t0 + 20_000, Tick(), TickReply),
        (t0 + 20_001, consume(10, key="k2"), ConsumeReply),
        # Usage burning 1 unit of credit per unit of usage, then an event burning 1 unit.
        (t0 + 20_002, ReportUsage(measurements=(Measurement(
            feature_id="f", value=3, currency_id=CUR, credit_rate=SCALE,
            idempotency_key="u1"),)), UsageReply),
        (t0 + 20_003, IngestEvents(events=(MeteredEvent(
            key="e1", event_name="call", timestamp=t0, metered=(
                Metered("f", "COUNT", SCALE, CUR, 1),)),)), EventsReply),
        # Auto-recharge: saving settings below the balance starts one at once.
        (t0 + 20_004, ConfigureAutoRecharge(
            currency_id=CUR, enabled=True, threshold_type="CREDIT_AMOUNT",
            threshold_value=5_000, target_balance=10_000, price=SCALE), AutoRechargeReply),
        (t0 + 20_005, PendingRecharges(), PendingRechargesReply),
        (t0 + 20_006, SettleRecharge(grant_id=grant_id_for("c1", CUR, None, 1), paid=True),
         AutoRechargeReply),
        (t0 + 20_007, ConfigureAutoRecharge(
            currency_id=CUR, enabled=False, threshold_type="CREDIT_AMOUNT",
            threshold_value=5_000, target_balance=10_000, price=SCALE), AutoRechargeReply),
        (t0 + 20_008, GetAutoRecharge(currency_id=CUR), AutoRechargeReply),
        (t0 + 20_009, RollUsage(windows=(("f", None, t0 + 20_009),)), UsageCountersReply),
        # Past the recharge grant's expiry (one month on): no timer left.
        (t0 + 40 * 86_400_000, Tick(), TickReply),
    ]
    covered = set()
    for now, command, expected in steps:
        fx = Effects()
        with trio.testing.assert_no_checkpoints():
            reply = machine.apply(state, command, now, fx)
        assert type(reply) is expected, (command, reply)
        assert not inspect.isawaitable(reply)
        covered.add(type(command))
        if isinstance(command, Tick) and now == t0 + 20_000:
            # The due timers really fired inside this synchronous call.
            assert {e.event_type for e in fx.entries} >= {
                L.CREDITS_RESERVATION_EXPIRED, L.CREDITS_GRANTED, L.CREDITS_EXPIRED}
    assert covered == set(typing.get_args(Command))
    assert not state.timers
    assert not inspect.iscoroutinefunction(machine.apply)
    assert not inspect.iscoroutinefunction(machine.advance)


_FORBIDDEN_MODULES = {
    "asyncio", "anyio", "trio", "sniffio", "socket", "ssl", "select", "selectors", "os",
    "sys", "time", "datetime", "sqlite3", "aiosqlite", "asyncpg", "threading",
    "multiprocessing", "concurrent", "subprocess", "signal", "io", "pathlib", "shutil",
    "tempfile", "random", "secrets", "uuid", "logging", "structlog", "http", "urllib",
    "websockets", "litestar", "uvicorn", "importlib", "ctypes", "engine.runtime",
    "persistence", "gateway", "webhooks",
}
_FORBIDDEN_CALLS = {"open", "input", "print", "eval", "exec", "__import__", "breakpoint"}
_CORE_FILES = sorted(CORE_DIR.glob("*.py"))


def test_core_files_found() -> None:
    names = {p.name for p in _CORE_FILES}
    assert {"machine.py", "commands.py", "model.py", "ledger_ops.py"} <= names


@pytest.mark.parametrize("path", _CORE_FILES, ids=lambda p: p.name)
def test_core_module_is_pure(path: Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path))
    problems = []
    for node in ast.walk(tree):
        modules: list[str] = []
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module:
                modules = [node.module]
        for mod in modules:
            for bad in _FORBIDDEN_MODULES:
                if mod == bad or mod.startswith(bad + "."):
                    problems.append(f"line {node.lineno}: imports {mod}")
        if isinstance(node, (ast.AsyncFunctionDef, ast.Await, ast.AsyncFor, ast.AsyncWith)):
            problems.append(f"line {node.lineno}: {type(node).__name__}")
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id in _FORBIDDEN_CALLS):
            problems.append(f"line {node.lineno}: calls {node.func.id}()")
    assert not problems, f"{path.name} is not pure: {problems}"


_BILLING_FILES = sorted((CORE_DIR.parent / "billing").glob("*.py"))


@pytest.mark.parametrize("path", _BILLING_FILES, ids=lambda p: p.name)
def test_billing_module_is_pure(path: Path) -> None:
    """engine/billing (periods, lifecycle, prices) is pure like the core, except that it
    may use `datetime` for calendar arithmetic — never to read the clock."""
    tree = ast.parse(path.read_text(), filename=str(path))
    problems = []
    for node in ast.walk(tree):
        modules: list[str] = []
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules = [node.module]
        for mod in modules:
            for bad in _FORBIDDEN_MODULES - {"datetime"}:
                if mod == bad or mod.startswith(bad + "."):
                    problems.append(f"line {node.lineno}: imports {mod}")
        if isinstance(node, (ast.AsyncFunctionDef, ast.Await, ast.AsyncFor, ast.AsyncWith)):
            problems.append(f"line {node.lineno}: {type(node).__name__}")
        if isinstance(node, ast.Attribute) and node.attr in ("now", "today", "utcnow"):
            problems.append(f"line {node.lineno}: reads the clock ({node.attr})")
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id in _FORBIDDEN_CALLS):
            problems.append(f"line {node.lineno}: calls {node.func.id}()")
    assert not problems, f"{path.name} is not pure: {problems}"


def test_billing_files_found() -> None:
    assert {"periods.py", "lifecycle.py", "pricing.py", "money.py", "proration.py"} <= {
        p.name for p in _BILLING_FILES}


# ---------------------------------------------------------------------------------------
# 3. Overload: mailbox_max, pending_max, resident_max


async def test_mailbox_max_overload_and_statistics() -> None:
    clock, store = ManualClock(), BlockingStore()
    res: Results
    async with Runtime(store, clock, mailbox_max=3, passivate_after_ms=None) as rt:
        res = Results(rt)
        await rt.submit("c1", grant("g1", 100))
        store.arm()
        async with anyio.create_task_group() as tg:
            tg.start_soon(res.run, "k0", "c1", consume(10, key="k0"))
            await settle()
            assert store.blocked == 1  # k0's batch is in flight, held at the gate
            s = rt.statistics("c1")
            assert (s.fill, s.peak, s.capacity, s.waiting_senders) == (0, 1, 3, 1)

            for i in (1, 2, 3):
                tg.start_soon(res.run, f"k{i}", "c1", consume(10, key=f"k{i}"))
            await settle()
            s = rt.statistics("c1")
            assert (s.fill, s.peak, s.capacity, s.waiting_senders, s.resident) == (
                3, 3, 3, 4, True)
            assert rt.runtime_statistics().pending == 4

            exc = await submit_refused_at_the_door(rt, "c1", consume(10, key="k4"))
            assert isinstance(exc, Overloaded), exc
            assert exc.retry_after_s > 0
            s = rt.statistics("c1")
            assert (s.fill, s.peak, s.waiting_senders) == (3, 3, 4)
            stats = rt.runtime_statistics()
            assert stats.pending == 4 and stats.overloads == 1
            assert not res.out  # nobody has been answered: the commit is still held

            store.release()
        for i in range(4):
            assert isinstance(res[f"k{i}"], ConsumeReply), res[f"k{i}"]
        s = rt.statistics("c1")
        assert (s.fill, s.peak, s.waiting_senders) == (0, 3, 0)
        assert (await balance(rt, "c1")).current_balance == 60
        keys = [e.idempotency_key for e in entries_of(store, "c1", L.CREDITS_CONSUMED)]
        assert sorted(keys) == ["k0", "k1", "k2", "k3"]  # nothing of k4

        # k4 left no idempotency record: sending it again applies it, once.
        again = await rt.submit("c1", consume(10, key="k4"))
        assert isinstance(again, ConsumeReply) and again.balance.current_balance == 50


async def test_pending_max_overload() -> None:
    clock, store = ManualClock(), BlockingStore()
    async with Runtime(store, clock, pending_max=4, passivate_after_ms=None) as rt:
        res = Results(rt)
        await rt.submit("a", grant("g", 100))
        await rt.submit("b", grant("g", 100))
        store.arm()
        async with anyio.create_task_group() as tg:
            tg.start_soon(res.run, "a1", "a", consume(1, key="a1"))
            tg.start_soon(res.run, "b1", "b", consume(1, key="b1"))
            await settle()
            assert store.blocked == 2
            tg.start_soon(res.run, "a2", "a", consume(1, key="a2"))
            tg.start_soon(res.run, "b2", "b", consume(1, key="b2"))
            await settle()
            assert rt.runtime_statistics().pending == 4
            for cid in ("a", "b"):
                s = rt.statistics(cid)
                assert (s.fill, s.peak, s.waiting_senders) == (1, 1, 2)

            exc = await submit_refused_at_the_door(rt, "c", grant("g", 5))
            assert isinstance(exc, Overloaded), exc
            exc = await submit_refused_at_the_door(rt, "a", consume(1, key="a3"))
            assert isinstance(exc, Overloaded), exc
            stats = rt.runtime_statistics()
            assert stats.pending == 4 and stats.overloads == 2
            assert rt.statistics("a").fill == 1
            assert not rt.statistics("c").resident  # refused before an actor was made
            store.release()
        assert all(isinstance(res[n], ConsumeReply) for n in ("a1", "a2", "b1", "b2"))
        assert rt.runtime_statistics().pending == 0
        assert "c" not in store.inner.customers
        assert [e.idempotency_key for e in entries_of(store, "a", L.CREDITS_CONSUMED)] \
            .count("a3") == 0
        # Room again: the refused commands go through when retried.
        assert isinstance(await rt.submit("c", grant("g", 5)), GrantReply)
        assert isinstance(await rt.submit("a", consume(1, key="a3")), ConsumeReply)
        assert (await balance(rt, "a")).current_balance == 97


async def test_resident_max_overload_when_nobody_is_idle() -> None:
    clock, store = ManualClock(), BlockingStore()
    async with Runtime(store, clock, resident_max=2, passivate_after_ms=None) as rt:
        res = Results(rt)
        store.arm()
        async with anyio.create_task_group() as tg:
            tg.start_soon(res.run, "a", "a", grant("g", 10))
            tg.start_soon(res.run, "b", "b", grant("g", 10))
            await settle()
            assert store.blocked == 2
            exc = await submit_refused_at_the_door(rt, "c", grant("g", 10))
            assert isinstance(exc, Overloaded), exc
            stats = rt.runtime_statistics()
            assert stats.resident == 2 and stats.overloads == 1 and stats.passivations == 0
            store.release()
        # Now "a" and "b" are idle, so "c" gets in by passivating the least recently used.
        assert isinstance(await rt.submit("c", grant("g", 10)), GrantReply)
        stats = rt.runtime_statistics()
        assert stats.resident == 2 and stats.passivations == 1
        assert "c" in store.inner.customers


# ---------------------------------------------------------------------------------------
# 4. Deadlines


async def test_command_past_its_deadline_is_not_applied() -> None:
    clock, store = ManualClock(), BlockingStore()
    async with Runtime(store, clock, passivate_after_ms=None) as rt:
        res = Results(rt)
        await rt.submit("c1", grant("g1", 100))
        t0 = clock.now_ms()
        store.arm()
        async with anyio.create_task_group() as tg:
            tg.start_soon(res.run, "first", "c1", consume(10, key="first"))
            await settle()
            assert store.blocked == 1
            tg.start_soon(res.run, "late", "c1", consume(20, key="late"), t0 + 100)
            tg.start_soon(res.run, "patient", "c1", consume(30, key="patient"), t0 + 10_000)
            tg.start_soon(res.run, "no_deadline", "c1", consume(40, key="no_deadline"))
            await settle()
            assert rt.statistics("c1").fill == 3
            clock.advance(101)  # while the first batch is held: "late" is now too late
            await settle()
            store.release()

        assert isinstance(res["first"], ConsumeReply)
        assert isinstance(res["late"], Overloaded), res["late"]
        assert res["late"].retry_after_s > 0
        assert isinstance(res["patient"], ConsumeReply)
        assert isinstance(res["no_deadline"], ConsumeReply)
        assert (await balance(rt, "c1")).current_balance == 100 - 10 - 30 - 40
        keys = {e.idempotency_key for e in entries_of(store, "c1", L.CREDITS_CONSUMED)}
        assert keys == {"first", "patient", "no_deadline"}
        # Not remembered under its key either: a retry is applied.
        assert isinstance(await rt.submit("c1", consume(20, key="late")), ConsumeReply)
        assert (await balance(rt, "c1")).current_balance == 0


async def test_deadline_overload_is_counted() -> None:
    """Every Overloaded is an overload; the runtime docstring lists the deadline among them."""
    clock, store = ManualClock(), BlockingStore()
    async with Runtime(store, clock, passivate_after_ms=None) as rt:
        res = Results(rt)
        await rt.submit("c1", grant("g1", 100))
        store.arm()
        async with anyio.create_task_group() as tg:
            tg.start_soon(res.run, "first", "c1", consume(10))
            await settle()
            tg.start_soon(res.run, "late", "c1", consume(20), clock.now_ms() + 1)
            await settle()
            clock.advance(2)
            store.release()
        assert isinstance(res["late"], Overloaded)
        assert rt.runtime_statistics().overloads == 1


# ---------------------------------------------------------------------------------------
# 5. Timers fire on time, through the actor, without any submit


DUE = 10_000


async def _arm_timer(rt: Runtime, clock: ManualClock, kind: str, cid: str) -> tuple[L, int]:
    """Give `cid` one timer due at now + DUE; return the ledger entry it must produce."""
    t0 = clock.now_ms()
    if kind == "expire":
        assert isinstance(await rt.submit(cid, grant("g", 100, expire_at=t0 + DUE)), GrantReply)
        return L.CREDITS_EXPIRED, -100
    if kind == "activate":
        reply = await rt.submit(cid, grant("g", 100, effective_at=t0 + DUE))
        assert isinstance(reply, GrantReply) and reply.grant.status == "SCHEDULED"
        return L.CREDITS_GRANTED, 100
    assert kind == "reservation"
    await rt.submit(cid, grant("g", 100))
    assert isinstance(await rt.submit(cid, reserve("r", 30, t0 + DUE)), ReserveReply)
    return L.CREDITS_RESERVATION_EXPIRED, 30


@pytest.mark.parametrize("passivated", [False, True], ids=["resident", "passivated"])
@pytest.mark.parametrize("kind", ["expire", "activate", "reservation"])
async def test_timer_fires_on_time_without_a_submit(kind: str, passivated: bool) -> None:
    clock, store = ManualClock(), MemoryStore()
    async with Runtime(store, clock, passivate_after_ms=None) as rt:
        t0 = clock.now_ms()
        event_type, amount = await _arm_timer(rt, clock, kind, "c1")
        assert rt.runtime_statistics().timers == 1
        if passivated:
            assert rt.passivate_idle() == 1
            assert not rt.statistics("c1").resident
        loads, commits = store.loads, store.commits

        clock.advance(DUE - 1)
        await settle()
        assert entries_of(store, "c1", event_type) == []
        assert store.commits == commits and store.loads == loads  # nothing ran early
        assert rt.statistics("c1").resident is not passivated

        clock.advance(1)
        await settle()
        fired = entries_of(store, "c1", event_type)
        assert [(e.grant_id, e.amount, e.timestamp) for e in fired] == [("g", amount, t0 + DUE)]
        if kind == "reservation":
            assert fired[0].reservation_id == "r"
        assert store.commits == commits + 1
        assert store.loads == loads + (1 if passivated else 0)
        stats = rt.runtime_statistics()
        assert stats.timers == 0 and stats.pending == 0
        assert stats.activations == (2 if passivated else 1)

        expected_balance = {"expire": 0, "activate": 100, "reservation": 100}[kind]
        view = await balance(rt, "c1")
        assert view.current_balance == expected_balance and view.reserved == 0
        # Nothing fires twice.
        clock.advance(DUE)
        await settle()
        assert len(entries_of(store, "c1", event_type)) == 1


async def test_timers_of_many_customers_fire_in_due_order() -> None:
    clock, store = ManualClock(), MemoryStore()
    customers = [f"c{n}" for n in range(12)]
    async with Runtime(store, clock, resident_max=4, passivate_after_ms=None) as rt:
        t0 = clock.now_ms()
        # Registered in reverse due order, so the heap (not submission order) decides.
        for n in reversed(range(len(customers))):
            await rt.submit(customers[n], grant("g", 10 + n, expire_at=t0 + 100 * (n + 1)))
        assert rt.runtime_statistics().timers == len(customers)
        assert rt.runtime_statistics().passivations > 0  # most are not resident
        for n in range(len(customers)):
            clock.advance(100)
            await settle()
            expired = [cid for cid in customers if entries_of(store, cid, L.CREDITS_EXPIRED)]
            assert expired == customers[: n + 1]
            (e,) = entries_of(store, customers[n], L.CREDITS_EXPIRED)
            assert (e.amount, e.timestamp) == (-(10 + n), t0 + 100 * (n + 1))
        assert rt.runtime_statistics().timers == 0


async def test_one_advance_past_several_timers_fires_each_at_its_time() -> None:
    clock, store = ManualClock(), MemoryStore()
    async with Runtime(store, clock, passivate_after_ms=None) as rt:
        t0 = clock.now_ms()
        await rt.submit("c1", grant("g1", 100, expire_at=t0 + 3_000))
        await rt.submit("c1", grant("g2", 50, effective_at=t0 + 1_000, expire_at=t0 + 5_000))
        await rt.submit("c1", reserve("r1", 40, t0 + 2_000))
        clock.advance(60_000)
        await settle()
        fired = [(e.event_type, e.grant_id, e.amount, e.timestamp - t0)
                 for e in store.ledger("c1") if e.timestamp > t0]
        assert fired == [
            (L.CREDITS_GRANTED, "g2", 50, 1_000),
            (L.CREDITS_RESERVATION_EXPIRED, "g1", 40, 2_000),
            (L.CREDITS_EXPIRED, "g1", -100, 3_000),
            (L.CREDITS_EXPIRED, "g2", -50, 5_000),
        ]
        assert (await balance(rt, "c1")).current_balance == 0


async def test_timer_registered_after_its_due_time_fires_at_once() -> None:
    # The clock passes the expiry while the grant's own commit is held: the timer is
    # registered already due, and must fire (at its own due time) without another submit.
    clock, store = ManualClock(), BlockingStore()
    async with Runtime(store, clock, passivate_after_ms=None) as rt:
        res = Results(rt)
        t0 = clock.now_ms()
        store.arm()
        async with anyio.create_task_group() as tg:
            tg.start_soon(res.run, "grant", "c1", grant("g", 100, expire_at=t0 + 1_000))
            await settle()
            clock.advance(5_000)
            await settle()
            assert store.ledger("c1") == []
            store.release()
        await settle()
        assert isinstance(res["grant"], GrantReply)
        (e,) = entries_of(store, "c1", L.CREDITS_EXPIRED)
        assert (e.amount, e.timestamp) == (-100, t0 + 1_000)


async def test_timer_survives_a_failed_tick_commit() -> None:
    """A Tick whose commit fails must not lose the customer's timer: once the store is
    back (and well past the error's retry_after_s), the expiry lands without a submit."""
    clock, store = ManualClock(), MemoryStore()
    async with Runtime(store, clock, passivate_after_ms=None) as rt:
        t0 = clock.now_ms()
        await rt.submit("c1", grant("g", 100, expire_at=t0 + 1_000))
        store.fail_commits = True
        clock.advance(1_000)
        await settle()
        assert entries_of(store, "c1", L.CREDITS_EXPIRED) == []  # the Tick's commit failed
        store.fail_commits = False
        for _ in range(60):
            clock.advance(1_000)
            await settle()
        (e,) = entries_of(store, "c1", L.CREDITS_EXPIRED)
        assert e.timestamp == t0 + 1_000


async def test_timer_survives_a_resident_limit_overload() -> None:
    """When a timer comes due while the resident limit is full of busy actors, the Tick
    cannot be enqueued; the timer must still fire once there is room again."""
    clock, store = ManualClock(), BlockingStore()
    async with Runtime(store, clock, resident_max=1, passivate_after_ms=None) as rt:
        res = Results(rt)
        t0 = clock.now_ms()
        await rt.submit("b", grant("g", 100, expire_at=t0 + 1_000))
        store.arm()
        async with anyio.create_task_group() as tg:
            tg.start_soon(res.run, "a", "a", grant("g", 5))  # passivates "b", then is held
            await settle()
            assert store.blocked == 1 and not rt.statistics("b").resident
            clock.advance(1_000)  # b's expiry is due, but there is no room for b
            await settle()
            store.release()
        await settle()
        for _ in range(60):
            clock.advance(1_000)
            await settle()
        (e,) = entries_of(store, "b", L.CREDITS_EXPIRED)
        assert e.timestamp == t0 + 1_000


# ---------------------------------------------------------------------------------------
# 6. Passivation and reload


async def test_passivation_reloads_state_exactly() -> None:
    clock, store = ManualClock(), MemoryStore()
    customers = [f"c{n}" for n in range(8)]
    originals: dict[str, ConsumeReply] = {}
    reads: dict[str, BalanceView] = {}
    async with Runtime(store, clock, resident_max=3, passivate_after_ms=None) as rt:
        t0 = clock.now_ms()
        for n, cid in enumerate(customers):
            await rt.submit(cid, grant("g1", 1000 + n, expire_at=t0 + 1_000_000))
            await rt.submit(cid, grant("g2", 50, priority=10))
            await rt.submit(cid, reserve("r1", 5, t0 + 500_000))
            reply = await rt.submit(cid, consume(60 + n, key=f"k-{cid}", feature_id="f"))
            assert isinstance(reply, ConsumeReply)
            originals[cid] = reply
            reads[cid] = await balance(rt, cid)  # a read: with the pool's low line
            stats = rt.runtime_statistics()
            assert stats.resident == min(n + 1, 3)
        stats = rt.runtime_statistics()
        assert stats.passivations == len(customers) - 3
        assert stats.activations == len(customers)
        assert sum(rt.statistics(c).resident for c in customers) == 3

        clock.advance(1_000)  # so a fresh reply would carry a different timestamp
        loads = store.loads
        for n, cid in enumerate(customers):
            view = await balance(rt, cid)
            assert without_timestamp(view) == without_timestamp(reads[cid])
            assert view.low_line is not None
            assert without_timestamp(view) == {**without_timestamp(originals[cid].balance),
                                               "low_line": view.low_line}
            assert view.current_balance == 1000 + n + 50 - 5 - (60 + n)
            # The idempotent replay after reload returns the original reply, unchanged.
            again = await rt.submit(cid, consume(60 + n, key=f"k-{cid}", feature_id="f"))
            assert again == originals[cid]
            # The key's fingerprint survived too: same key, other body, is refused.
            other = await rt.submit(cid, consume(1, key=f"k-{cid}"))
            assert isinstance(other, Refused)
            assert other.code == Refusal.IDEMPOTENCY_KEY_REUSED.value
            assert len([e for e in entries_of(store, cid, L.CREDITS_CONSUMED)
                        if e.idempotency_key == f"k-{cid}"]) == 2  # drawn from g2 then g1
            assert rt.runtime_statistics().resident <= 3
        # The first five were passivated and had to be loaded again; the last three (c5..c7)
        # were resident, but touching c0..c4 evicted them, so they were loaded again too.
        # Each replay then loaded once more: a reloaded customer's keys are not in memory,
        # so the replay was applied as new, the store's commit found the key remembered
        # and wrote nothing, and the batch was applied again on a reload, the key known.
        assert store.loads == loads + 2 * len(customers)
        assert rt.runtime_statistics().key_replays == len(customers)
        assert rt.runtime_statistics().passivations == 2 * len(customers) - 3

        # Sequences continue where the durable state left them (no reuse, no gaps).
        await rt.submit("c0", consume(1, key="after"))
        seqs = [e.seq for e in store.ledger("c0")]
        assert seqs == list(range(1, len(seqs) + 1))


async def test_passivate_idle_spares_busy_actors() -> None:
    clock, store = ManualClock(), BlockingStore()
    async with Runtime(store, clock, passivate_after_ms=None) as rt:
        res = Results(rt)
        for cid in ("a", "b", "c"):
            await rt.submit(cid, grant("g", 10))
        store.arm()
        async with anyio.create_task_group() as tg:
            tg.start_soon(res.run, "a", "a", consume(1))
            await settle()
            assert rt.passivate_idle() == 2
            assert rt.statistics("a").resident
            assert not rt.statistics("b").resident and not rt.statistics("c").resident
            store.release()
        assert isinstance(res["a"], ConsumeReply)
        assert (await balance(rt, "b")).current_balance == 10
        assert (await balance(rt, "a")).current_balance == 9


# ---------------------------------------------------------------------------------------
# 7. Store failure


async def test_store_failure_rolls_back_and_retry_applies_once() -> None:
    clock, store = ManualClock(), MemoryStore()
    async with Runtime(store, clock, passivate_after_ms=None) as rt:
        await rt.submit("c1", grant("g1", 1000))
        await rt.submit("c1", consume(100, key="k1"))
        ledger_before, outbox_before, commits = store.ledger("c1"), list(store.outbox), store.commits
        loads = store.loads

        store.fail_commits = True
        with pytest.raises(StoreUnavailable) as info:
            await rt.submit("c1", consume(50, key="k2"))
        assert info.value.retry_after_s > 0
        with pytest.raises(StoreUnavailable):
            await rt.submit("c1", grant("g2", 500))
        assert store.ledger("c1") == ledger_before
        assert store.outbox == outbox_before
        assert store.commits == commits
        store.fail_commits = False

        view = await balance(rt, "c1")
        assert view.current_balance == 900 and view.total_granted == 1000
        assert store.loads > loads  # the state was dropped and reloaded

        # g2 was rolled back in memory too: creating it again is not GRANT_ID_TAKEN.
        assert isinstance(await rt.submit("c1", grant("g2", 500)), GrantReply)
        first = await rt.submit("c1", consume(50, key="k2"))
        assert isinstance(first, ConsumeReply) and first.balance.current_balance == 1350
        clock.advance(10)
        assert await rt.submit("c1", consume(50, key="k2")) == first
        assert [e.idempotency_key for e in entries_of(store, "c1", L.CREDITS_CONSUMED)
                ].count("k2") == 1
        assert (await balance(rt, "c1")).current_balance == 1350
        seqs = [e.seq for e in store.ledger("c1")]
        assert seqs == list(range(1, len(seqs) + 1))


async def test_an_unexpected_error_fails_the_batch_and_the_engine_lives_on() -> None:
    """A bug (here a store raising something it should have translated) must not stop the
    runtime: the batch fails with EngineFault, the customer's state is dropped and
    reloaded from the store, and every other customer goes on."""
    clock, store = ManualClock(), MemoryStore()
    async with Runtime(store, clock, passivate_after_ms=None, workers_count=1) as rt:
        await rt.submit("c1", grant("g1", 100))
        await rt.submit("c2", grant("g1", 100))
        real_commit = store.commit

        async def broken(customer_id: str, state: Any, fx: Any, new_keys: Any = ()) -> None:
            if customer_id == "c1":
                raise RuntimeError("a bug")
            await real_commit(customer_id, state, fx, new_keys)

        store.commit = broken  # type: ignore[method-assign]
        with pytest.raises(EngineFault) as info:
            await rt.submit("c1", consume(10, key="k"))
        assert isinstance(info.value.__cause__, RuntimeError)
        # The one worker survived and serves everyone.
        assert isinstance(await rt.submit("c2", consume(10, key="k")), ConsumeReply)
        store.commit = real_commit  # type: ignore[method-assign]
        assert (await balance(rt, "c1")).current_balance == 100  # reloaded: nothing applied
        assert isinstance(await rt.submit("c1", consume(10, key="k")), ConsumeReply)
        assert (await balance(rt, "c1")).current_balance == 90
        assert rt.runtime_statistics().faults == 1


async def test_store_failure_fails_the_whole_batch() -> None:
    clock, store = ManualClock(), BlockingStore()
    async with Runtime(store, clock, passivate_after_ms=None) as rt:
        res = Results(rt)
        await rt.submit("c1", grant("g1", 100))
        store.arm()
        async with anyio.create_task_group() as tg:
            tg.start_soon(res.run, "first", "c1", consume(1, key="first"))
            await settle()
            for i in range(5):
                tg.start_soon(res.run, f"q{i}", "c1", consume(10, key=f"q{i}"))
            await settle()
            assert rt.statistics("c1").fill == 5
            store.inner.fail_commits = True
            store.release()
        assert all(isinstance(res[n], StoreUnavailable) for n in res.out), res.out
        assert len(res.out) == 6
        assert entries_of(store, "c1", L.CREDITS_CONSUMED) == []
        assert rt.runtime_statistics().pending == 0
        store.inner.fail_commits = False
        assert (await balance(rt, "c1")).current_balance == 100


async def test_commands_queued_behind_a_failed_batch_see_the_rolled_back_state() -> None:
    clock, store = ManualClock(), BlockingStore()
    async with Runtime(store, clock, passivate_after_ms=None) as rt:
        res = Results(rt)
        await rt.submit("c1", grant("g1", 100))
        store.arm()
        async with anyio.create_task_group() as tg:
            tg.start_soon(res.run, "doomed", "c1", consume(80, key="doomed"))
            await settle()
            tg.start_soon(res.run, "next", "c1", consume(80, key="next"))
            await settle()
            store.fail_next = 1  # the held batch ("doomed") fails; the next one commits
            store.release()
        assert isinstance(res["doomed"], StoreUnavailable)
        # Had "doomed" survived in memory, 20 would be left and "next" would be refused.
        assert isinstance(res["next"], ConsumeReply), res["next"]
        assert res["next"].balance.current_balance == 20
        keys = [e.idempotency_key for e in entries_of(store, "c1", L.CREDITS_CONSUMED)]
        assert keys == ["next"]


# ---------------------------------------------------------------------------------------
# 8. on_committed and durability ordering


async def test_on_committed_receives_each_batch_in_order() -> None:
    clock, store = ManualClock(), MemoryStore()
    calls: list[tuple[str, list[LedgerEntry], list[DomainEvent], int, int]] = []

    def hook(cid: str, fx: Effects) -> None:
        # Called after the commit: everything in fx is durable already.
        calls.append((cid, list(fx.entries), list(fx.events), len(store.ledger(cid)),
                      store.commits))

    async with Runtime(store, clock, batch_max=16, on_committed=hook,
                       passivate_after_ms=None) as rt:
        t0 = clock.now_ms()
        await rt.submit("a", grant("g1", 1000, expire_at=t0 + 5_000))
        await rt.submit("b", grant("g1", 10))
        await rt.submit("a", reserve("r1", 100, t0 + 1_000))
        await rt.submit("a", Release(reservation_id="r1", consumed_amount=40))
        n = len(calls)
        await rt.submit("a", GetBalances())  # read-only: no commit, no hook
        await rt.submit("b", consume(11))  # refused: nothing to commit
        assert len(calls) == n
        async with anyio.create_task_group() as tg:
            for i in range(40):
                tg.start_soon(rt.submit, "a" if i % 2 else "b", consume(1, key=f"x{i}"))
        clock.advance(5_000)  # a's grant expires through a Tick
        await settle()

    assert len(calls) == store.commits
    for cid in ("a", "b"):
        mine = [c for c in calls if c[0] == cid]
        assert [e for c in mine for e in c[1]] == store.ledger(cid)
        assert [e for c in mine for e in c[2]] == [e for _, c, e in store.outbox if c == cid]
        total = 0
        for _, entries, _, ledger_len_at_call, _ in mine:
            total += len(entries)
            assert ledger_len_at_call == total  # durable before the hook saw it
    assert [c[4] for c in calls] == list(range(1, len(calls) + 1))  # one call per commit
    assert calls[-1][0] == "a"
    assert [e.event_type for e in calls[-1][1]] == [L.CREDITS_EXPIRED]
    assert EventType.EXPIRED in [e.type for e in calls[-1][2]]


async def test_reply_comes_only_after_the_commit() -> None:
    clock, store = ManualClock(), BlockingStore()
    hooked: list[int] = []
    seen_at_reply: dict[str, int] = {}
    async with Runtime(store, clock, passivate_after_ms=None,
                       on_committed=lambda cid, fx: hooked.append(len(fx.entries))) as rt:
        await rt.submit("c1", grant("g1", 100))
        hooked.clear()

        async def submitter(name: str, amount: int) -> None:
            reply = await rt.submit("c1", consume(amount, key=name))
            assert isinstance(reply, ConsumeReply)
            # At the moment the caller hears back, its entry is durable.
            seen_at_reply[name] = len([e for e in store.ledger("c1")
                                       if e.idempotency_key == name])

        store.arm()
        async with anyio.create_task_group() as tg:
            tg.start_soon(submitter, "k1", 10)
            await settle()
            assert store.blocked == 1
            # Applied in memory, but not durable: no reply, no hook, nothing in the ledger.
            assert seen_at_reply == {} and hooked == []
            assert entries_of(store, "c1", L.CREDITS_CONSUMED) == []
            assert rt.statistics("c1").waiting_senders == 1
            clock.advance(1_000)
            await settle()
            assert seen_at_reply == {} and store.blocked == 1  # time alone releases nothing
            store.release()
        assert seen_at_reply == {"k1": 1}
        assert hooked == [1]
        assert rt.statistics("c1").waiting_senders == 0


# ---------------------------------------------------------------------------------------
# Shutdown


async def test_submit_after_close_raises_engine_closed() -> None:
    clock, store = ManualClock(), MemoryStore()
    async with Runtime(store, clock, passivate_after_ms=None) as rt:
        await rt.submit("c1", grant("g1", 10))
    with pytest.raises(EngineClosed):
        await rt.submit("c1", consume(1))
    assert entries_of(store, "c1", L.CREDITS_CONSUMED) == []


async def test_shutdown_wakes_every_waiting_caller() -> None:
    """Closing the runtime answers the batch in flight and the commands still queued with
    EngineClosed; no caller is left waiting forever."""
    clock, store = ManualClock(), BlockingStore()
    async with anyio.create_task_group() as outer:
        async with Runtime(store, clock, passivate_after_ms=None) as rt:
            res = Results(rt)
            await rt.submit("c1", grant("g1", 100))
            store.arm()
            outer.start_soon(res.run, "in_flight", "c1", consume(1, key="in_flight"))
            await settle()
            assert store.blocked == 1
            outer.start_soon(res.run, "queued", "c1", consume(1, key="queued"))
            await settle()
            assert rt.statistics("c1").fill == 1
        await settle()
        outcome = dict(res.out)
        outer.cancel_scope.cancel()  # do not hang on a caller the runtime forgot
    assert isinstance(outcome.get("in_flight"), EngineClosed), outcome
    assert isinstance(outcome.get("queued"), EngineClosed), outcome
    assert entries_of(store, "c1", L.CREDITS_CONSUMED) == []


# ---------------------------------------------------------------------------------------


def _guarded(test: Any) -> Any:
    @functools.wraps(test)
    async def guarded(*args: Any, **kwargs: Any) -> None:
        with anyio.fail_after(GUARD_S):
            await test(*args, **kwargs)

    return guarded


for _name, _test in list(globals().items()):
    if _name.startswith("test_") and inspect.iscoroutinefunction(_test):
        globals()[_name] = _guarded(_test)
