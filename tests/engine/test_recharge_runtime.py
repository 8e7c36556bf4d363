"""Auto-recharge through the runtime and the recharge executor (engine.runtime.recharge),
in process, over a MemoryStore, on asyncio and trio.

The runtime runs on a ManualClock; the executor's timeouts and retry delays are real time
(small where a test needs a retry). Nothing sleeps to synchronize: a test waits for a
committed event (`Hook.wait_for`, woken by the runtime's on_committed hook) or for every
task to be blocked (`anyio.wait_all_tasks_blocked`), always under a real-time guard.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest

from engine.core.amounts import SCALE
from engine.core.commands import (
    AutoRechargeReply,
    BalancesReply,
    ConfigureAutoRecharge,
    Consume,
    ConsumeReply,
    CreateGrant,
    GetAutoRecharge,
    GetBalances,
    GrantReply,
)
from engine.core.effects import DomainEvent, Effects, RechargeRequest
from engine.core.model import EventType as E
from engine.core.model import GrantStatus, GrantType
from engine.core.recharge import grant_id_for
from engine.runtime import ManualClock, Runtime
from engine.runtime.recharge import RechargeExecutor, ScriptedProvider
from persistence import MemoryStore

pytestmark = pytest.mark.anyio

GUARD_S = 60  # a guard against hangs, never a means of synchronization
CUR = "credits"
C = SCALE
RID = grant_id_for("c1", CUR, None, 1)  # customer c1's first recharge


class Hook:
    """The runtime's on_committed hook: hands each batch to the executor (as the gateway
    does) and keeps every committed event, waking `wait_for` callers."""

    def __init__(self, executor: RechargeExecutor) -> None:
        self.executor = executor
        self.events: list[DomainEvent] = []
        self._changed: anyio.Event | None = None

    def __call__(self, customer_id: str, fx: Effects) -> None:
        self.events.extend(fx.events)
        self.executor.on_committed(customer_id, fx)
        if self._changed is not None:
            self._changed.set()

    def of(self, type_: E) -> list[DomainEvent]:
        return [e for e in self.events if e.type is type_]

    async def wait_for(self, condition: Callable[[], bool]) -> None:
        """Until `condition()` holds for the committed events, and then until every task
        is blocked (the hook runs before the submitter gets its reply: the executor counts
        a settle only once its submit has returned)."""
        while not condition():
            self._changed = anyio.Event()
            await self._changed.wait()
        await anyio.wait_all_tasks_blocked()


class Bank:
    """A payment provider's books, shared by the providers of a test: one charge per
    idempotency key, however often it is asked."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.charges: dict[str, RechargeRequest] = {}

    async def charge(self, request: RechargeRequest) -> str:
        self.calls.append(request.grant_id)
        self.charges.setdefault(request.grant_id, request)
        return f"ch_{request.grant_id}"


class Flaky:
    """No answer to the first call (before or after the money moved), then answers."""

    def __init__(self, charge_first: bool) -> None:
        self.charge_first = charge_first
        self.calls: list[str] = []
        self.charges: dict[str, RechargeRequest] = {}

    async def charge(self, request: RechargeRequest) -> str:
        self.calls.append(request.grant_id)
        if len(self.calls) == 1:
            if self.charge_first:
                self.charges.setdefault(request.grant_id, request)
            await anyio.sleep_forever()
        self.charges.setdefault(request.grant_id, request)
        return f"ch_{request.grant_id}"


@asynccontextmanager
async def engine(store: MemoryStore, provider: Any, **executor_options: Any
                 ) -> AsyncIterator[tuple[Runtime, RechargeExecutor, Hook]]:
    executor = RechargeExecutor(provider, **executor_options)
    hook = Hook(executor)
    async with Runtime(store, ManualClock(), passivate_after_ms=None,
                       on_committed=hook) as rt, anyio.create_task_group() as tg:
        tg.start_soon(executor.run, rt, store)
        try:
            yield rt, executor, hook
        finally:
            tg.cancel_scope.cancel()


def settings(**kw: Any) -> ConfigureAutoRecharge:
    return ConfigureAutoRecharge(**{
        "currency_id": CUR, "enabled": True, "threshold_type": "CREDIT_AMOUNT",
        "threshold_value": 10 * C, "target_balance": 100 * C, "price": C // 10, **kw})


def grant(gid: str, amount: int) -> CreateGrant:
    return CreateGrant(grant_id=gid, currency_id=CUR, amount=amount,
                       grant_type=GrantType.PROMOTIONAL, display_name=gid)


async def ok(rt: Runtime, cid: str, command: Any, reply_type: type) -> Any:
    reply = await rt.submit(cid, command)
    assert isinstance(reply, reply_type), reply
    return reply


async def balance(rt: Runtime, cid: str) -> int:
    reply = await ok(rt, cid, GetBalances(currency_id=CUR), BalancesReply)
    (view,) = reply.balances
    return view.current_balance


async def auto_recharge(rt: Runtime, cid: str) -> AutoRechargeReply:
    return await ok(rt, cid, GetAutoRecharge(currency_id=CUR), AutoRechargeReply)


def grant_status(store: MemoryStore, cid: str, gid: str) -> GrantStatus:
    return store.customers[cid].grants[gid].status


def outbox_types(store: MemoryStore, cid: str) -> list[E]:
    return [e.type for _, c, e in store.outbox if c == cid]


# ---------------------------------------------------------------------------------------


async def test_a_thousand_concurrent_consumptions_crossing_the_line_start_one_recharge() -> None:
    consumers, amount = 1000, 7 * C
    initial = consumers * amount + 5_000 * C
    line, target, price = 8_500 * C, 20_000 * C, C // 100
    store, provider = MemoryStore(), ScriptedProvider("ok")
    provider.gate = anyio.Event()  # the payment waits until every consumption is done
    async with engine(store, provider) as (rt, executor, hook):
        await ok(rt, "c1", grant("g1", initial), GrantReply)
        await ok(rt, "c1", settings(threshold_value=line, target_balance=target, price=price),
                 AutoRechargeReply)
        replies: list[Any] = []

        async def one(i: int) -> None:
            replies.append(await rt.submit("c1", Consume(currency_id=CUR, amount=amount,
                                                         idempotency_key=f"k{i}")))

        async with anyio.create_task_group() as tg:
            for i in range(consumers):
                tg.start_soon(one, i)
        assert len(replies) == consumers
        assert all(isinstance(r, ConsumeReply) for r in replies)
        await anyio.wait_all_tasks_blocked()  # the executor is at the provider's gate

        [attempted] = hook.of(E.AUTO_RECHARGE_ATTEMPTED)
        started_at = attempted.balance.current_balance
        assert line - amount <= started_at < line
        assert attempted.amount == target - started_at
        assert provider.calls == [RID]
        assert grant_status(store, "c1", RID) is GrantStatus.PAYMENT_PENDING
        assert (await auto_recharge(rt, "c1")).settings.in_flight == RID
        assert await balance(rt, "c1") == initial - consumers * amount

        provider.gate.set()
        await hook.wait_for(lambda: hook.of(E.AUTO_RECHARGE_SUCCEEDED))
        assert provider.calls == [RID] and list(provider.charges) == [RID]
        assert executor.settled == 1 and executor.retries == 0
        assert grant_status(store, "c1", RID) is GrantStatus.ACTIVE
        after = await auto_recharge(rt, "c1")
        cost = -(-attempted.amount * price // SCALE)
        assert (after.settings.in_flight, after.current_monthly_spend) == (None, cost)
        assert await balance(rt, "c1") == initial - consumers * amount + attempted.amount
    assert outbox_types(store, "c1").count(E.AUTO_RECHARGE_ATTEMPTED) == 1
    assert outbox_types(store, "c1").count(E.AUTO_RECHARGE_SUCCEEDED) == 1


@pytest.mark.parametrize("charge_first", [False, True], ids=["lost_request", "lost_answer"])
async def test_a_timed_out_payment_is_retried_with_the_same_key_and_charged_once(
        charge_first: bool) -> None:
    store, provider = MemoryStore(), Flaky(charge_first)
    async with engine(store, provider, timeout_s=0.05, retry_base_s=0.01) as (rt, executor,
                                                                              hook):
        await ok(rt, "c1", grant("g1", 100 * C), GrantReply)
        await ok(rt, "c1", settings(), AutoRechargeReply)
        await ok(rt, "c1", Consume(currency_id=CUR, amount=95 * C), ConsumeReply)
        await hook.wait_for(lambda: hook.of(E.AUTO_RECHARGE_SUCCEEDED))
        assert provider.calls == [RID, RID]  # the same key twice ...
        assert list(provider.charges) == [RID]  # ... one charge
        assert executor.retries == 1 and executor.settled == 1
        assert await balance(rt, "c1") == 100 * C
        assert grant_status(store, "c1", RID) is GrantStatus.ACTIVE
    assert outbox_types(store, "c1").count(E.AUTO_RECHARGE_SUCCEEDED) == 1
    assert outbox_types(store, "c1").count(E.AUTO_RECHARGE_ATTEMPTED) == 1


async def test_a_declined_payment_gives_no_credits_and_disables_auto_recharge() -> None:
    store, provider = MemoryStore(), ScriptedProvider("decline")
    async with engine(store, provider) as (rt, executor, hook):
        await ok(rt, "c1", grant("g1", 100 * C), GrantReply)
        await ok(rt, "c1", settings(max_spend=50 * C), AutoRechargeReply)
        await ok(rt, "c1", Consume(currency_id=CUR, amount=95 * C), ConsumeReply)
        await hook.wait_for(lambda: hook.of(E.AUTO_RECHARGE_FAILED))
        [failed] = hook.of(E.AUTO_RECHARGE_FAILED)
        assert failed.grant_id == RID and failed.details["reason"] == "the card was declined"
        assert provider.calls == [RID] and provider.charges == {}
        assert executor.settled == 1
        assert await balance(rt, "c1") == 5 * C
        state = await auto_recharge(rt, "c1")
        r = state.settings
        assert (r.enabled, r.failure, r.in_flight) == (False, "the card was declined", None)
        assert (r.threshold_value, r.target_balance, r.max_spend) == (10 * C, 100 * C, 50 * C)
        assert state.current_monthly_spend == 0
        assert grant_status(store, "c1", RID) is GrantStatus.VOIDED
        # Disabled: going lower starts nothing.
        await ok(rt, "c1", Consume(currency_id=CUR, amount=4 * C), ConsumeReply)
        await anyio.wait_all_tasks_blocked()
        assert provider.calls == [RID] and len(hook.of(E.AUTO_RECHARGE_ATTEMPTED)) == 1
        # Re-enabled: the failure is cleared and a recharge starts at once (balance 1).
        enabled = await ok(rt, "c1", settings(max_spend=50 * C), AutoRechargeReply)
        assert enabled.settings.failure is None
        await hook.wait_for(lambda: len(hook.of(E.AUTO_RECHARGE_FAILED)) == 2)
        assert provider.calls == [RID, grant_id_for("c1", CUR, None, 2)]


@pytest.mark.parametrize("first_mode", ["hang", "charge-then-hang"])
async def test_a_restart_during_a_recharge_resumes_it_with_the_same_key(first_mode: str) -> None:
    store, bank = MemoryStore(), Bank()
    first = ScriptedProvider(first_mode, inner=bank)
    async with engine(store, first, timeout_s=3_600) as (rt, executor, hook):
        await ok(rt, "c1", grant("g1", 100 * C), GrantReply)
        await ok(rt, "c1", settings(), AutoRechargeReply)
        await ok(rt, "c1", Consume(currency_id=CUR, amount=95 * C), ConsumeReply)
        await hook.wait_for(lambda: hook.of(E.AUTO_RECHARGE_ATTEMPTED))
        await anyio.wait_all_tasks_blocked()  # the provider has the call and never answers
        assert first.calls == [RID] and executor.settled == 0
    # The process is gone; the store keeps the grant in flight.
    assert grant_status(store, "c1", RID) is GrantStatus.PAYMENT_PENDING
    assert await store.pending_recharges() == ["c1"]
    assert bank.calls == ([RID] if first_mode == "charge-then-hang" else [])

    second = ScriptedProvider("ok", inner=bank)
    async with engine(store, second) as (rt, executor, hook):
        # Nothing is submitted: the executor's start-up sweep finds the recharge.
        await hook.wait_for(lambda: hook.of(E.AUTO_RECHARGE_SUCCEEDED))
        assert second.calls == [RID] and executor.settled == 1
        assert list(bank.charges) == [RID]  # charged once, whatever happened before
        assert bank.calls == ([RID, RID] if first_mode == "charge-then-hang" else [RID])
        assert await balance(rt, "c1") == 100 * C
        state = await auto_recharge(rt, "c1")
        assert state.settings.in_flight is None and state.settings.enabled
        assert state.current_monthly_spend == 95 * C // 10
        assert not hook.of(E.AUTO_RECHARGE_ATTEMPTED)
    assert grant_status(store, "c1", RID) is GrantStatus.ACTIVE
    assert await store.pending_recharges() == []
    assert outbox_types(store, "c1").count(E.AUTO_RECHARGE_ATTEMPTED) == 1
    assert outbox_types(store, "c1").count(E.AUTO_RECHARGE_SUCCEEDED) == 1


async def test_customers_recharge_independently_and_concurrently() -> None:
    store, provider = MemoryStore(), ScriptedProvider("ok")
    provider.gate = anyio.Event()
    customers = [f"c{i}" for i in range(20)]
    async with engine(store, provider, concurrency_max=4) as (rt, executor, hook):
        for cid in customers:
            await ok(rt, cid, grant("g1", 100 * C), GrantReply)
            await ok(rt, cid, settings(), AutoRechargeReply)
        async with anyio.create_task_group() as tg:
            for cid in customers:
                tg.start_soon(ok, rt, cid, Consume(currency_id=CUR, amount=95 * C),
                              ConsumeReply)
        await anyio.wait_all_tasks_blocked()
        assert len(provider.calls) == 4  # at most concurrency_max payments at once
        provider.gate.set()
        await hook.wait_for(lambda: len(hook.of(E.AUTO_RECHARGE_SUCCEEDED)) == len(customers))
        assert sorted(provider.calls) == sorted(grant_id_for(c, CUR, None, 1) for c in customers)
        assert executor.settled == len(customers)
        for cid in customers:
            assert await balance(rt, cid) == 100 * C


async def test_the_payment_key_is_unique_across_customers() -> None:
    store, bank = MemoryStore(), Bank()
    async with engine(store, bank) as (rt, executor, hook):
        for cid in ("alice", "bob"):
            await ok(rt, cid, grant("g1", 100 * C), GrantReply)
            await ok(rt, cid, settings(), AutoRechargeReply)
            await ok(rt, cid, Consume(currency_id=CUR, amount=95 * C), ConsumeReply)
        await hook.wait_for(lambda: len(hook.of(E.AUTO_RECHARGE_SUCCEEDED)) == 2)
        assert executor.settled == 2 and len(bank.calls) == 2
        assert len(bank.charges) == 2  # two customers, two charges


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
