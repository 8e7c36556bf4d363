"""The runtime's memory budget (engine/runtime/memory.py, Runtime(memory_max_bytes=...)).

- the estimate tracks what Python really allocates (tracemalloc), so a budget in bytes
  means bytes;
- the budget holds whatever the traffic: many customers, one hot customer, raw events;
- remembered keys forgotten from memory still answer replays exactly (looked up in the
  store), and a key with another request is still refused; nothing is applied twice;
- a batch naming forgotten keys applies them as new and the store's commit checks them:
  a replay among them voids the batch, which is applied again with the key known.

On asyncio and trio (tests/conftest.py), with the in-memory store, which keeps keys out of
the actor's state like the database stores do.
"""

from __future__ import annotations

import gc
import tracemalloc
import uuid
from collections.abc import Sequence
from typing import Any

import anyio
import pytest

from engine.core.commands import (
    Consume,
    ConsumeReply,
    CreateGrant,
    GetBalances,
    IngestEvents,
    MeteredEvent,
    Refused,
)
from engine.core.effects import Effects
from engine.core.machine import trim_keys
from engine.core.model import CustomerState, GrantType
from engine.core.model import LedgerEventType as L
from engine.core.refusals import Refusal
from engine.runtime import ManualClock, Runtime, memory
from persistence import MemoryStore

pytestmark = pytest.mark.anyio

MiB = 1024 * 1024


def grant(cid: str, amount: int = 10**12) -> CreateGrant:
    return CreateGrant(grant_id=f"g-{cid}", currency_id="tokens", amount=amount,
                       grant_type=GrantType.PAID, display_name="Welcome credits")


def consume(key: str, amount: int = 5_000) -> Consume:
    # A key the way the gateway scopes a client's UUID.
    return Consume(currency_id="tokens", amount=amount, idempotency_key=key)


class NullStore:
    """Keeps nothing: what tracemalloc sees is the runtime's own memory."""

    async def load(self, customer_id: str) -> CustomerState:
        return CustomerState(customer_id)

    async def commit(self, customer_id: str, state: CustomerState, fx: Effects,
                     new_keys: object = ()) -> None:
        pass

    async def lookup_keys(self, customer_id: str, keys: list[str]) -> list[Any]:
        return []

    async def lookup_event_keys(self, customer_id: str, keys: list[str]) -> dict[str, int]:
        return {}

    async def due_customers(self, until_ms: int, limit: int) -> list[tuple[str, int]]:
        return []

    async def purge(self, before_ms: int, limit: int) -> int:
        return 0

    def stale(self, customer_id: str, state: object = None) -> bool:
        return False

    def statistics(self) -> dict[str, int]:
        return {}


def traced() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_the_estimate_tracks_what_python_allocates() -> None:
    """Customers with a grant, then remembered consumption keys, then raw-event keys: the
    runtime's estimate of each step's growth is within 25 % of tracemalloc's (the
    figures in memory.py are rounded up, so mostly above)."""
    n = 5_000
    customers = [f"default/cust-{i:06d}" for i in range(n)]
    async with Runtime(NullStore(), ManualClock(), passivate_after_ms=None,
                       memory_max_bytes=None, resident_max=n + 1) as rt:
        # Built as they are sent (generators), inside the traced span: in the server each
        # command, its key included, is decoded from a request and kept by the runtime.
        steps = [
            ("customers with a grant", ((c, grant(c)) for c in customers)),
            ("remembered keys", ((customers[i % 100], consume(f"consume:{uuid.uuid4()}"))
                                 for i in range(n))),
            ("raw-event keys", ((customers[i % 100], IngestEvents(events=(MeteredEvent(
                key=str(uuid.uuid4()), event_name="e", timestamp=1, resource_id=None,
                dimensions=None, metered=()),))) for i in range(n))),
        ]
        tracemalloc.start()
        try:
            for label, commands in steps:
                before_real = traced()
                before_estimate = rt.runtime_statistics().memory_bytes
                for cid, command in commands:
                    await rt.submit(cid, command)
                grew = traced() - before_real
                estimated = rt.runtime_statistics().memory_bytes - before_estimate
                assert 0.75 * estimated <= grew <= 1.25 * estimated, (label, grew, estimated)
        finally:
            tracemalloc.stop()


class KeepingStore(NullStore):
    """Keeps the last state committed, to look at what the runtime holds."""

    state: CustomerState

    async def commit(self, customer_id: str, state: CustomerState, fx: Effects,
                     new_keys: object = ()) -> None:
        self.state = state


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_keys_table_is_counted_as_it_is_after_keys_are_forgotten() -> None:
    """A dict's table does not shrink as keys are deleted: 1,000 keys grow it to 2,048
    slots, and forgetting all but 100 leaves it so. The estimate counts the table as it is
    (it was a share per key, a quarter of what 100 keys then held); forgetting every key
    hands the table back."""
    store = KeepingStore()
    async with Runtime(store, ManualClock(), passivate_after_ms=None,
                       memory_max_bytes=None) as rt:
        await rt.submit("c", grant("c"))
        tracemalloc.start()
        try:
            before_real = traced()
            before_estimate = memory.state_bytes(store.state, 0)
            for _ in range(1_000):
                await rt.submit("c", consume(f"consume:{uuid.uuid4()}"))
            state = store.state
            assert trim_keys(state, 100) == 900
            grew = traced() - before_real
            estimated = memory.state_bytes(state, 0) - before_estimate
            assert 0.75 * estimated <= grew <= 1.25 * estimated, (grew, estimated)
            assert trim_keys(state, 0) == 100 and not state.idempotency
            assert traced() - before_real <= 0.1 * grew
            assert memory.state_bytes(state, 0) == before_estimate
        finally:
            tracemalloc.stop()


async def test_the_budget_holds_over_many_customers_and_replays_stay_exact() -> None:
    budget = 1 * MiB
    store = MemoryStore()
    customers = [f"c{i}" for i in range(200)]
    replies: dict[tuple[str, str], ConsumeReply] = {}
    peak = 0
    async with Runtime(store, ManualClock(), passivate_after_ms=None,
                       memory_max_bytes=budget) as rt:
        for c in customers:
            await rt.submit(c, grant(c))

        async def client(i: int) -> None:
            nonlocal peak
            for n in range(100):
                cid = customers[(n * 31 + i) % len(customers)]
                key = f"consume:{i}-{n}"
                reply = await rt.submit(cid, consume(key, amount=1 + n))
                assert isinstance(reply, ConsumeReply)
                replies[(cid, key)] = reply
                peak = max(peak, rt.runtime_statistics().memory_bytes)

        async with anyio.create_task_group() as tg:
            for i in range(32):
                tg.start_soon(client, i)
        stats = rt.runtime_statistics()
        # 3,200 keys would take ~0.9 MB on top of 200 customers: the budget made it forget.
        assert stats.keys_forgotten > 0 and stats.keys < len(replies)
        assert peak <= budget + memory.KEY_BYTES * 32  # at most a batch's keys over, briefly
        assert stats.memory_bytes <= budget
        ledger_before = {c: len(store.ledger(c)) for c in customers}

        # Every key answers its replay with the first reply, in memory or not.
        for (cid, key), reply in replies.items():
            assert await rt.submit(cid, consume(key, amount=reply.amount)) == reply
        # ...and refuses the same key with another amount.
        (cid, key), reply = next(iter(replies.items()))
        other = await rt.submit(cid, consume(key, amount=reply.amount + 1))
        assert isinstance(other, Refused) and other.code == Refusal.IDEMPOTENCY_KEY_REUSED
        assert {c: len(store.ledger(c)) for c in customers} == ledger_before
        for c in customers:
            consumed = [e for e in store.ledger(c) if e.event_type is L.CREDITS_CONSUMED]
            assert len(consumed) == len({k for cc, k in replies if cc == c})
            assert rt.runtime_statistics().memory_bytes <= budget


async def test_one_hot_customer_stays_within_the_budget() -> None:
    budget = 1 * MiB
    async with Runtime(MemoryStore(), ManualClock(), passivate_after_ms=None,
                       memory_max_bytes=budget) as rt:
        await rt.submit("hot", grant("hot"))
        first = await rt.submit("hot", consume("consume:first"))
        for n in range(5_000):  # ~1.4 MB of keys if all were kept
            await rt.submit("hot", consume(f"consume:{n}"))
            assert rt.runtime_statistics().memory_bytes <= budget + memory.KEY_BYTES
        assert rt.runtime_statistics().keys < 5_000
        assert await rt.submit("hot", consume("consume:first")) == first


async def test_past_the_keys_idle_customers_are_passivated_and_come_back() -> None:
    budget = 256 * 1024  # about 100 customers with a grant
    store = MemoryStore()
    async with Runtime(store, ManualClock(), passivate_after_ms=None,
                       memory_max_bytes=budget) as rt:
        for i in range(1_000):
            await rt.submit(f"c{i}", grant(f"c{i}", amount=1_000 + i))
        stats = rt.runtime_statistics()
        assert stats.memory_bytes <= budget and stats.resident < 1_000
        assert stats.passivations >= 1_000 - stats.resident
        for i in range(1_000):  # each comes back from the store as it was
            reply = await rt.submit(f"c{i}", GetBalances())
            assert reply.balances[0].current_balance == 1_000 + i


async def test_raw_event_keys_count_and_are_forgotten_too() -> None:
    budget = 512 * 1024
    store = MemoryStore()
    async with Runtime(store, ManualClock(), passivate_after_ms=None,
                       memory_max_bytes=budget) as rt:
        keys = [str(uuid.uuid4()) for _ in range(6_000)]  # ~700 KB of event keys

        def event(key: str) -> IngestEvents:
            return IngestEvents(events=(MeteredEvent(key=key, event_name="e", timestamp=1,
                                                     resource_id=None, dimensions=None,
                                                     metered=()),))

        for key in keys:
            assert (await rt.submit("c", event(key))).accepted == 1
        stats = rt.runtime_statistics()
        assert stats.memory_bytes <= budget and stats.event_keys < len(keys)
        for key in keys[:100]:  # the oldest: long forgotten, still duplicates
            assert (await rt.submit("c", event(key))).duplicates == 1


class GatedStore(MemoryStore):
    """Holds customer `a`'s commits while `gate` is clear, and records the keys each of
    its commits was asked to check."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = anyio.Event()
        self.gate.set()
        self.holding = anyio.Event()
        self.checked: list[list[str]] = []

    async def commit(self, customer_id: str, state: CustomerState, fx: Effects,
                     new_keys: Sequence[str] = ()) -> None:
        if customer_id == "a":
            if not self.gate.is_set():
                self.holding.set()
                await self.gate.wait()
            self.checked.append(list(new_keys))
        await super().commit(customer_id, state, fx, new_keys)


async def test_a_batch_mixing_forgotten_replays_known_and_new_keys_applies_each_once() -> None:
    """Customer `a` remembers `k1` in memory but not its oldest keys (forgotten to stay in
    the budget). One batch names a forgotten key (a replay), `k1` (a replay answered from
    memory) and a new key: it applies the forgotten and the new one as new, the store's
    commit finds the forgotten one remembered and writes nothing, and the batch is applied
    again on what is durable — every key answered as the first time, and each applied
    once. Memory filling meanwhile, while the commit waits, changes nothing."""
    store = GatedStore()
    budget = 32 * 1024  # about 110 keys
    async with Runtime(store, ManualClock(), passivate_after_ms=None,
                       memory_max_bytes=budget) as rt:
        await rt.submit("a", grant("a"))
        old: dict[str, Any] = {}
        for n in range(200):  # more keys than the budget holds: some are forgotten
            old[f"consume:old-{n}"] = await rt.submit("a", consume(f"consume:old-{n}"))
        first = await rt.submit("a", consume("consume:k1"))
        assert isinstance(first, ConsumeReply)
        assert rt.runtime_statistics().keys_forgotten > 0
        store.gate = anyio.Event()
        results: dict[str, Any] = {}

        async def submit(key: str) -> None:
            results[key] = await rt.submit("a", consume(key))

        async with anyio.create_task_group() as tg:
            tg.start_soon(submit, "consume:blocker")  # held at the gate: the rest queue up
            await store.holding.wait()
            for key in ("consume:old-0", "consume:k1", "consume:new"):
                tg.start_soon(submit, key)
            await anyio.wait_all_tasks_blocked()
            for i in range(200):  # others fill memory past the budget meanwhile
                await rt.submit(f"b{i}", grant(f"b{i}"))
            store.gate.set()
        assert results["consume:old-0"] == old["consume:old-0"]
        assert results["consume:k1"] == first
        assert isinstance(results["consume:new"], ConsumeReply)
        # The batch asked to check its forgotten key and its new one (k1 too if memory
        # forgot it while the blocker waited); found remembered, it was applied again
        # with only the new key left to check.
        assert {"consume:old-0", "consume:new"} <= set(store.checked[-2])
        assert store.checked[-1] == ["consume:new"]
        assert rt.runtime_statistics().key_replays == 1
        consumed = [e for e in store.ledger("a") if e.event_type is L.CREDITS_CONSUMED]
        assert len(consumed) == 200 + 3  # old-0..199, k1, blocker and new: each once
