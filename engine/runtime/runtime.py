"""Per-customer actors served by a fixed set of worker tasks.

Why not one task per customer: a parked task costs 5-9 KB, and most customers are idle
most of the time. An actor here is a small object (state + mailbox); when its mailbox goes
from empty to non-empty it is put on the ready queue once, and one of `workers_count`
worker tasks drains it: it takes everything queued (up to `batch_max`) as one batch,
applies it synchronously through the pure core, hands the batch's effects to the store,
and replies once the store says they are durable. While an actor's batch is in flight no
other worker touches it, which is what serializes a customer's commands.

Limits and what happens at each (all raise `Overloaded`, nothing applied):
- `mailbox_max` commands queued for one customer;
- `pending_max` commands queued across all customers;
- `resident_max` customers in memory, when none idle can be passivated to make room;
- a command's deadline passing before its batch is applied.
The ready queue holds each resident actor at most once, so it is bounded by `resident_max`.

Memory. Resident customers and the keys they remember are counted in estimated bytes
(engine/runtime/memory.py) against `memory_max_bytes`. Past it, the runtime forgets the
remembered keys of the customers that added keys least recently (the store keeps them and
answers replays: a customer whose keys were forgotten has its batch's keys looked up
first), then passivates the least recently used idle customers, until the total is back
under seven eighths of the budget.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections import deque
from collections.abc import Callable
from heapq import heappop, heappush
from itertools import islice
from types import TracebackType
from typing import Any

import anyio
import msgspec
from anyio.abc import TaskGroup

from engine.core.commands import Command, IngestEvents, Refused, Reply, ReportUsage, Tick
from engine.core.effects import Effects, IdempotencyRecord
from engine.core.machine import apply, trim_keys
from engine.core.model import CustomerState
from engine.runtime import memory
from engine.runtime.clock import Clock, SystemClock
from engine.runtime.errors import (
    EngineClosed,
    EngineError,
    EngineFault,
    KeysRemembered,
    Overloaded,
    ShardMoved,
    StoreUnavailable,
)
from engine.runtime.store import Store
from engine.runtime.waiter import Waiters, waiters_for_current_backend

__all__ = ["Runtime", "MailboxStatistics", "RuntimeStatistics", "BATCH_SIZE_BUCKETS",
           "COMMIT_SECONDS_BUCKETS"]

# Upper bounds of the batch-size and commit-time distributions `runtime_statistics()`
# reports (counts per bucket, the last one past every bound): what /metrics exposes as
# histograms. Counted here, per batch, because only the worker sees each batch.
BATCH_SIZE_BUCKETS = tuple(1 << n for n in range(13))  # 1, 2, 4, ... 4096 commands
COMMIT_SECONDS_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25,
                          0.5, 1.0, 2.5, 10.0)


class MailboxStatistics(msgspec.Struct, frozen=True, kw_only=True):
    customer_id: str
    fill: int  # commands queued now
    peak: int  # most ever queued at once
    capacity: int  # mailbox_max
    waiting_senders: int  # callers awaiting a reply (queued plus in the batch in flight)
    resident: bool


class RuntimeStatistics(msgspec.Struct, frozen=True, kw_only=True):
    resident: int
    resident_max: int
    memory_bytes: int  # estimated (engine/runtime/memory.py)
    memory_max_bytes: int | None
    keys: int  # remembered idempotency keys in memory
    event_keys: int  # raw-event keys in memory
    keys_forgotten: int  # keys (of both kinds) dropped from memory to stay in the budget
    key_replays: int  # batches applied again because the store remembered a key (Store.commit)
    pending: int
    pending_max: int
    ready: int
    timers: int
    activations: int
    passivations: int
    batches: int
    commands: int
    overloads: int
    faults: int  # batches failed by an unexpected error (see EngineFault)
    # Overloads by the limit that refused them: "pending", "mailbox", "resident", "deadline".
    overloads_by_reason: dict[str, int] = {}
    # Business refusals (`Refused` replies) of committed batches, by refusal code.
    refusals: dict[str, int] = {}
    mailbox_peak: int = 0  # the most commands any one mailbox has held at once
    # Per bucket of BATCH_SIZE_BUCKETS (then one more: larger), batches of that many commands.
    batch_sizes: tuple[int, ...] = ()
    # Per bucket of COMMIT_SECONDS_BUCKETS (then one more), the time `store.commit` took
    # for a batch as its worker waited (queueing behind other flushes included), and the sum.
    commit_seconds: tuple[int, ...] = ()
    commit_seconds_sum: float = 0.0


class _Call(msgspec.Struct):
    """One queued command and what became of it. A Struct rather than a class with
    `__slots__`: it is built once per command, and its constructor runs in C."""

    command: Command
    deadline_ms: int | None
    done: Any  # a waiter token (engine.runtime.waiter); None: nobody waits
    reply: Reply | None = None
    error: EngineError | None = None


class _Actor:
    __slots__ = ("customer_id", "state", "mailbox", "busy", "in_flight", "peak", "last_now",
                 "last_used_ms", "bytes", "keys", "event_keys", "uniques", "pinned")

    def __init__(self, customer_id: str) -> None:
        self.customer_id = customer_id
        self.state: CustomerState | None = None
        self.mailbox: list[_Call] | None = None  # None while empty: idle actors stay small
        self.busy = False  # on the ready queue or being served
        self.in_flight = 0
        self.peak = 0
        self.last_now = 0
        self.last_used_ms = 0
        # What this actor counts for in the runtime's memory totals, as last accounted.
        self.bytes = memory.ACTOR_BYTES
        self.keys = 0
        self.event_keys = 0
        self.uniques = 0  # distinct values of UNIQUE counters (memory.unique_values)
        # From deciding which of a batch's keys to look up in the store until the batch is
        # applied: memory must not forget this actor's keys meanwhile, or a key thought
        # remembered (so not looked up) would be missing when the batch runs.
        self.pinned = False


class Runtime:
    """Use as `async with Runtime(store) as rt: reply = await rt.submit(cid, cmd)`."""

    def __init__(
        self,
        store: Store,
        clock: Clock | None = None,
        *,
        mailbox_max: int = 4096,
        pending_max: int = 200_000,
        resident_max: int = 200_000,
        batch_max: int = 512,
        workers_count: int = 128,
        passivate_after_ms: int | None = 600_000,
        memory_max_bytes: int | None = 256 * 1024 * 1024,
        timer_horizon_ms: int = 3_600_000,
        key_retention_ms: int = 7 * 24 * 3_600_000,
        purge_every_ms: int = 3_600_000,
        purge_rows_max: int = 10_000,
        on_committed: Callable[[str, Effects], None] | None = None,
    ) -> None:
        assert mailbox_max > 0 and pending_max > 0 and resident_max > 0 and batch_max > 0
        assert workers_count > 0
        self.store = store
        self.clock = clock or SystemClock()
        self.mailbox_max = mailbox_max
        self.pending_max = pending_max
        self.resident_max = resident_max
        self.batch_max = batch_max
        self.workers_count = workers_count
        self.passivate_after_ms = passivate_after_ms
        # The budget for resident customers and the keys they remember, in estimated bytes
        # (None: unbounded, for tests and benchmarks that keep everything). Keys forgotten
        # are checked by the store as it commits a command that names them (Store.commit).
        assert memory_max_bytes is None or memory_max_bytes > 0
        self.memory_max_bytes = memory_max_bytes
        self._memory = 0  # estimated bytes of all resident actors
        self._keys = self._event_keys = self._keys_forgotten = self._key_replays = 0
        # Actors holding remembered keys, least recent adder first: forgotten in this order.
        self._key_holders: dict[str, _Actor] = {}
        # How far ahead timers are read from the store (`due_customers`), so start-up
        # finds due customers through an index instead of loading every customer.
        self.timer_horizon_ms = timer_horizon_ms
        # Idempotency keys are remembered at least this long; then the purge job deletes
        # them (and settled reservations) from the store, at most `purge_rows_max` rows
        # per step so it never holds a long transaction.
        assert key_retention_ms > 0 and purge_every_ms > 0 and purge_rows_max > 0
        self.key_retention_ms = key_retention_ms
        self.purge_every_ms = purge_every_ms
        self.purge_rows_max = purge_rows_max
        # Called synchronously after each durable batch, with its effects: the webhook relay
        # (a wake-up), the live feed and the auto-recharge executor hook in here (gateway/
        # app.py). Must not block.
        self.on_committed = on_committed
        # A cluster node runs the purge only while it leads (None: always).
        self.purge_gate: Callable[[], bool] | None = None
        self._actors: dict[str, _Actor] = {}  # in least-recently-used order
        self._pending = 0
        # Actors with commands queued and no worker yet, and the waiter tokens of the
        # workers parked because there was nothing to serve.
        self._ready: deque[_Actor] = deque()
        self._idle_workers: list[Any] = []
        # Global timer heap: (due ms, customer id); `_timer_due` holds the live entry per
        # customer, so stale heap entries are skipped when popped.
        self._timers: list[tuple[int, str]] = []
        self._timer_due: dict[str, int] = {}
        self._timer_wakeup = anyio.Event()
        self._recovery_wakeup = anyio.Event()
        self._tg: TaskGroup | None = None
        self._waiters: Waiters | None = None
        self._closed = False
        self._activations = self._passivations = self._batches = 0
        self._commands = self._overloads = self._faults = 0
        # For `runtime_statistics()` only (what /metrics shows); nothing reads them back.
        self._overload_reasons = {"pending": 0, "mailbox": 0, "resident": 0, "deadline": 0}
        self._refusals: dict[str, int] = {}
        self._mailbox_peak = 0
        self._batch_sizes = [0] * (len(BATCH_SIZE_BUCKETS) + 1)
        self._commit_seconds = [0] * (len(COMMIT_SECONDS_BUCKETS) + 1)
        self._commit_seconds_sum = 0.0

    # -- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> Runtime:
        self._waiters = waiters_for_current_backend()
        if hasattr(self.store, "demand"):
            # A group-committing store splits rounds of clients that move in lockstep by
            # how many commands wait here (persistence/durable.py, `_units_max`).
            self.store.demand = self._demand
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        for _ in range(self.workers_count):
            self._tg.start_soon(self._worker)
        self._tg.start_soon(self._timer_loop)
        self._tg.start_soon(self._timer_recovery)
        self._tg.start_soon(self._purger)
        if self.passivate_after_ms is not None:
            self._tg.start_soon(self._janitor)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        self._closed = True
        assert self._tg is not None
        self._tg.cancel_scope.cancel()
        try:
            return await self._tg.__aexit__(exc_type, exc, tb)
        finally:
            # Callers still queued were never applied: tell them, rather than leave them
            # parked forever. (Batches in flight were failed by their worker's cancellation.)
            for actor in self._actors.values():
                if actor.mailbox:
                    batch, actor.mailbox = actor.mailbox, None
                    for call in batch:
                        call.error = EngineClosed("the engine stopped before this command ran")
                    self._finish(actor, batch)

    # -- submitting -----------------------------------------------------------------------

    async def submit(
        self, customer_id: str, command: Command, *, deadline_ms: int | None = None
    ) -> Reply:
        """Apply `command` to the customer's state; return its reply once durable.

        Raises `Overloaded` (nothing applied) or `StoreUnavailable` (nothing applied).
        A business refusal is a reply (`Refused`), not an exception.
        """
        waiters = self._waiters
        if waiters is None:
            raise EngineClosed("the runtime is not running (use `async with Runtime(...)`)")
        done = waiters.new()
        call = self._enqueue(customer_id, command, deadline_ms, done)
        await waiters.wait(done)
        if call.error is not None:
            raise call.error
        assert call.reply is not None
        return call.reply

    def _demand(self) -> int:
        """Commands submitted and not yet answered."""
        return self._pending

    def _enqueue(
        self, customer_id: str, command: Command, deadline_ms: int | None, done: Any
    ) -> _Call:
        if self._closed:
            raise EngineClosed("the engine is shutting down")
        if self._pending >= self.pending_max:
            self._overloads += 1
            self._overload_reasons["pending"] += 1
            raise Overloaded("too many commands queued", retry_after_s=1.0)
        actor = self._actors.get(customer_id)
        if actor is None:
            actor = self._activate(customer_id)
        mailbox = actor.mailbox
        if mailbox is None:
            mailbox = actor.mailbox = []
        elif len(mailbox) >= self.mailbox_max:
            self._overloads += 1
            self._overload_reasons["mailbox"] += 1
            raise Overloaded(f"customer {customer_id!r} has too many commands queued",
                             retry_after_s=0.5)
        call = _Call(command, deadline_ms, done)
        mailbox.append(call)
        self._pending += 1
        actor.in_flight += 1
        if len(mailbox) > actor.peak:
            actor.peak = len(mailbox)
            if actor.peak > self._mailbox_peak:
                self._mailbox_peak = actor.peak
        if not actor.busy:
            actor.busy = True
            self._ready.append(actor)
            if self._idle_workers:
                self._waiters.wake(self._idle_workers.pop())  # type: ignore[union-attr]
        return call

    def _activate(self, customer_id: str) -> _Actor:
        """A resident actor for a customer that has none (its state loads on first use)."""
        actors = self._actors
        if len(actors) >= self.resident_max and not self._evict(len(actors) - self.resident_max + 1):
            self._overloads += 1
            self._overload_reasons["resident"] += 1
            raise Overloaded("too many customers resident; none idle to passivate",
                             retry_after_s=1.0)
        actor = actors[customer_id] = _Actor(customer_id)  # most recently used last
        self._memory += actor.bytes
        return actor

    def _touch(self, actor: _Actor) -> None:
        """Move a resident actor to the most recently used end once a batch is served.

        Per batch rather than per command: a busy actor is never passivated, so only its
        place once idle matters, and that then follows `last_used_ms`. An actor that is
        the most recent already (a new one, or one customer's burst) stays put: moving it
        would only leave a deleted entry in the dict, which holds its memory until the
        dict is resized."""
        actors = self._actors
        customer_id = actor.customer_id
        if next(reversed(actors)) != customer_id:
            del actors[customer_id]
            actors[customer_id] = actor

    def _evict(self, count: int, scan_max: int = 1024, *, freeing: int = 0) -> bool:
        """Passivate idle actors, least recently used first, until `count` of them went and
        they freed at least `freeing` bytes, looking at no more than `scan_max` of them (so
        a full runtime answers fast). A passivated actor's state is durable in the store
        and is loaded again on its next command."""
        victims = []
        freed = 0
        for scanned, (cid, actor) in enumerate(self._actors.items()):
            if (len(victims) >= count and freed >= freeing) or scanned >= scan_max:
                break
            if not actor.busy and actor.mailbox is None:
                victims.append(cid)
                freed += actor.bytes
        for cid in victims:
            self._passivate(cid)
        return len(victims) >= count

    def _passivate(self, customer_id: str) -> None:
        """Take an idle actor out of memory; its state is durable in the store."""
        actor = self._actors.pop(customer_id)
        self._drop_state(actor)
        self._memory -= actor.bytes
        self._passivations += 1

    def _drop_state(self, actor: _Actor) -> None:
        """Forget an actor's state (passivation, or a batch that failed: what is durable
        reloads on its next command) and what it counted for."""
        actor.state = None
        self._memory += memory.ACTOR_BYTES - actor.bytes
        self._keys -= actor.keys
        self._event_keys -= actor.event_keys
        actor.bytes, actor.keys, actor.event_keys, actor.uniques = memory.ACTOR_BYTES, 0, 0, 0
        self._key_holders.pop(actor.customer_id, None)

    def _account(self, actor: _Actor, state: CustomerState, fx: Effects) -> None:
        """Count what a batch changed in the actor's memory, and shed if over budget."""
        actor.uniques += len(fx.unique_values)
        self._recount(actor, state)
        if actor.keys or actor.event_keys:
            holders = self._key_holders
            if fx.keys or fx.event_keys or actor.customer_id not in holders:
                holders.pop(actor.customer_id, None)
                holders[actor.customer_id] = actor  # the most recent adder last
        budget = self.memory_max_bytes
        if budget is not None and self._memory > budget:
            self._shed(budget - budget // 8)

    def _shed(self, target: int, scan_max: int = 1024) -> None:
        """Bring the memory estimate down to `target`: forget remembered keys, least recent
        adders first (of the last one needed, only its oldest keys, as many as it takes),
        then passivate least recently used idle actors; looking at no more than `scan_max`
        of each per call, so that one call stays short."""
        holders = self._key_holders
        for cid in list(islice(holders, scan_max)):
            if self._memory <= target:
                return
            actor = holders[cid]
            state = actor.state
            if actor.pinned or state is None:
                continue  # a pinned actor's keys are forgotten by a later call
            excess = self._memory - target
            keys = len(state.idempotency)
            if keys * memory.KEY_BYTES > excess:  # its oldest keys are enough
                forgotten = trim_keys(state, keys - -(-excess // memory.KEY_BYTES))
            else:
                forgotten = trim_keys(state, 0) + len(state.event_keys)
                state.event_keys.clear()  # raw-event keys are looked up in the store anyway
                del holders[cid]
            self._keys_forgotten += forgotten
            self._recount(actor, state)
        if self._memory > target:
            self._evict(0, scan_max, freeing=self._memory - target)

    def _recount(self, actor: _Actor, state: CustomerState) -> None:
        keys, event_keys = len(state.idempotency), len(state.event_keys)
        size = memory.state_bytes(state, actor.uniques)
        self._memory += size - actor.bytes
        self._keys += keys - actor.keys
        self._event_keys += event_keys - actor.event_keys
        actor.bytes, actor.keys, actor.event_keys = size, keys, event_keys

    # -- serving --------------------------------------------------------------------------

    async def _worker(self) -> None:
        ready = self._ready
        waiters = self._waiters
        assert waiters is not None
        while True:
            if not ready:
                token = waiters.new()
                self._idle_workers.append(token)
                await waiters.wait(token)
                continue
            await self._serve(ready.popleft())
            if ready:
                # Yield before the next batch even if this one never awaited (nothing to
                # commit), so one worker cannot serve a long ready queue in one go.
                await waiters.checkpoint()

    async def _serve(self, actor: _Actor) -> None:
        try:
            while actor.mailbox:
                batch = actor.mailbox
                if len(batch) > self.batch_max:
                    actor.mailbox = batch[self.batch_max:]
                    batch = batch[: self.batch_max]
                else:
                    actor.mailbox = None
                await self._serve_batch(actor, batch)
        finally:
            actor.busy = False
            actor.last_used_ms = self.clock.now_ms()
            self._touch(actor)

    async def _serve_batch(self, actor: _Actor, batch: list[_Call]) -> None:
        try:
            remembered: list[IdempotencyRecord] = []
            while True:
                state, fx, unverified = await self._apply_batch(actor, batch, remembered)
                try:
                    if fx or unverified:
                        started = time.perf_counter()
                        await self.store.commit(actor.customer_id, state, fx,
                                                new_keys=unverified)
                        self._count_commit(time.perf_counter() - started)
                    break
                except KeysRemembered as exc:
                    # Keys this batch took for new were remembered after all (replays of
                    # keys memory had forgotten): what it applied is void and nothing was
                    # written. Apply it again on what is durable, those keys known. Bounded:
                    # known keys are never checked again (they go into the state with no
                    # await before the batch's unknown keys are chosen), so each round
                    # checks fewer keys, at most one round per key of the batch.
                    self._key_replays += 1
                    self._drop_state(actor)
                    remembered += exc.records
        except StoreUnavailable as exc:
            # Roll back to what is durable: drop the state, reload on next use. Whatever
            # timer this batch was firing is still due in the durable state, so try again.
            self._drop_state(actor)
            for call in batch:
                call.reply = None
                call.error = exc
            self._finish(actor, batch)
            if not isinstance(exc, ShardMoved):  # a moved customer's timers are its owner's
                self._schedule_timer(actor.customer_id,
                                     self.clock.now_ms() + int(exc.retry_after_s * 1000))
            return
        except anyio.get_cancelled_exc_class():
            self._drop_state(actor)
            for call in batch:
                call.reply = None
                call.error = EngineClosed("the engine stopped before this command was durable")
            self._finish(actor, batch)
            raise
        except Exception as exc:
            # A bug, in the core (a broken invariant is an assertion) or in a store (an
            # error it should have translated). The in-memory state may be half-mutated and
            # the batch's durability is unknown, so it is handled like a failed commit:
            # drop the state, reload what is durable next time, and fail these commands
            # with EngineFault. The worker lives on: one customer's bug must not stop the
            # engine for everyone.
            self._faults += 1
            self._drop_state(actor)
            fault = EngineFault(f"an internal error stopped this command: {exc!r}")
            fault.__cause__ = exc
            for call in batch:
                call.reply = None
                call.error = fault
            self._finish(actor, batch)
            return
        finally:
            actor.pinned = False
        self._batches += 1
        self._commands += len(batch)
        self._count_batch(batch)
        self._finish(actor, batch)
        self._account(actor, state, fx)
        if fx and self.on_committed is not None:
            fx.seq = state.event_seq
            fx.op = state.op_seq
            self.on_committed(actor.customer_id, fx)
        self._schedule_timer(actor.customer_id, state.next_due())

    async def _apply_batch(self, actor: _Actor, batch: list[_Call],
                           remembered: list[IdempotencyRecord],
                           ) -> tuple[CustomerState, Effects, tuple[str, ...]]:
        """Apply a batch to the actor's state (loaded first if need be), `remembered` keys
        added to what it knows; returns the state, the effects and the keys it applied as
        new without knowing (the store checks them as it commits)."""
        # A store that can lose acknowledged writes (async durability) says which
        # customers' state in memory no longer matches what is durable: reload those.
        if actor.state is None or self.store.stale(actor.customer_id, actor.state):
            actor.state = await self.store.load(actor.customer_id)
            actor.uniques = memory.unique_values(actor.state)
            self._activations += 1
        state = actor.state
        for record in remembered:
            state.idempotency[record.key] = record.memo
        actor.pinned = True
        unverified = () if state.keys_complete else self._unknown_keys(state, batch)
        for call in batch:
            if type(call.command) is IngestEvents:
                await self._prefetch_event_keys(actor.customer_id, state, batch)
                break
        now = self.clock.now_ms()
        if now < actor.last_now:
            now = actor.last_now  # the core needs time that never goes back
        actor.last_now = now
        fx = Effects()
        for call in batch:
            if call.deadline_ms is not None and now > call.deadline_ms:
                self._overloads += 1
                self._overload_reasons["deadline"] += 1
                call.reply = None
                call.error = Overloaded("deadline passed before the command ran",
                                        retry_after_s=0.5)
            else:
                call.error = None
                call.reply = apply(state, call.command, now, fx)
        # Applied: its keys may be forgotten from here on, during the commit too (a
        # customer that is always committing must not hold its keys forever).
        actor.pinned = False
        return state, fx, unverified

    @staticmethod
    def _unknown_keys(state: CustomerState, batch: list[_Call]) -> tuple[str, ...]:
        """The keys this batch names that memory does not hold, for a customer whose keys
        memory does not all hold (some were forgotten, or were never loaded). They are
        applied as new, and the store checks, in the commit, that it does not remember
        them (`Store.commit`): a lookup before applying put a trip to the database on
        every such batch's path, and on a database of millions of keys that trip cost a
        sixth of the throughput (docs/benchmarks.md, "Soak")."""
        known = state.idempotency
        named = [c.command.idempotency_key for c in batch]
        for c in batch:
            if type(c.command) is ReportUsage:  # usage measurements carry keys of their own
                named += [m.idempotency_key for m in c.command.measurements]
        return tuple(dict.fromkeys(key for key in named if key is not None and key not in known))

    async def _prefetch_event_keys(self, customer_id: str, state: CustomerState,
                                   batch: list[_Call]) -> None:
        """Raw events deduplicate on keys kept for the whole retention, far more than
        memory holds: look up the store for the keys of this batch's events that memory
        does not have, so the core can skip the ones accepted before."""
        seen = state.event_keys
        missing = [e.key for c in batch if type(c.command) is IngestEvents
                   for e in c.command.events if e.key not in seen]
        if missing:
            seen.update(await self.store.lookup_event_keys(customer_id, missing))

    async def _timer_recovery(self) -> None:
        """Register timers of customers not resident here (after a restart), read from
        the store within the horizon, then again every half horizon."""
        while True:
            until = self.clock.now_ms() + self.timer_horizon_ms
            try:
                due = await self.store.due_customers(until, 10_000)
            except StoreUnavailable:
                due = []
            for customer_id, at in due:
                self._schedule_timer(customer_id, at)
            self._recovery_wakeup = anyio.Event()
            with anyio.move_on_after(self.timer_horizon_ms / 2000):
                await self._recovery_wakeup.wait()

    def recover_timers(self) -> None:
        """Read the store's due customers again now (a cluster node that took shards over:
        their customers' timers are its own from now on)."""
        self._recovery_wakeup.set()

    def release_customers(self, match: Callable[[str], bool]) -> int:
        """Forget the customers `match` accepts (a cluster node that gave their shards up):
        idle actors are passivated, and their timers dropped; a busy one is left to its
        batch, whose commit the store fences (ShardMoved). Returns the actors passivated."""
        for cid in [c for c in self._timer_due if match(c)]:
            del self._timer_due[cid]  # its heap entry is skipped as stale
        victims = [cid for cid, actor in self._actors.items()
                   if match(cid) and not actor.busy and actor.mailbox is None]
        for cid in victims:
            self._passivate(cid)
        return len(victims)

    def busy_customers(self, match: Callable[[str], bool]) -> int:
        """How many customers `match` accepts have commands queued or in flight."""
        return sum(1 for cid, actor in self._actors.items() if actor.busy and match(cid))

    async def purge_once(self) -> int:
        """One bounded purge round; returns the rows removed (tests call it directly)."""
        before = self.clock.now_ms() - self.key_retention_ms
        removed = 0
        for _ in range(100):  # at most 100 steps per round; the rest waits for the next
            step = await self.store.purge(before, self.purge_rows_max)
            removed += step
            if step < self.purge_rows_max:
                break
        return removed

    async def _purger(self) -> None:
        while True:
            await anyio.sleep(self.purge_every_ms / 1000)
            if self.purge_gate is not None and not self.purge_gate():
                continue
            try:
                await self.purge_once()
            except StoreUnavailable:
                pass  # the next round tries again

    def _count_commit(self, seconds: float) -> None:
        self._commit_seconds[bisect_left(COMMIT_SECONDS_BUCKETS, seconds)] += 1
        self._commit_seconds_sum += seconds

    def _count_batch(self, batch: list[_Call]) -> None:
        """A committed batch's size, and its refusals by code (a few tens of ns a command:
        the refusals are counted after the commit so a batch applied again is counted
        once)."""
        self._batch_sizes[min((len(batch) - 1).bit_length(), len(BATCH_SIZE_BUCKETS))] += 1
        refusals = self._refusals
        for call in batch:
            reply = call.reply
            if type(reply) is Refused:
                refusals[reply.code] = refusals.get(reply.code, 0) + 1

    def _finish(self, actor: _Actor, batch: list[_Call]) -> None:
        self._pending -= len(batch)
        actor.in_flight -= len(batch)
        wake = self._waiters.wake  # type: ignore[union-attr]
        for call in batch:
            done = call.done
            if done is not None:
                wake(done)

    # -- timers ---------------------------------------------------------------------------

    def _schedule_timer(self, customer_id: str, due: int | None) -> None:
        if due is None:
            return
        current = self._timer_due.get(customer_id)
        if current is not None and current <= due:
            return
        self._timer_due[customer_id] = due
        earliest = self._timers[0][0] if self._timers else None
        heappush(self._timers, (due, customer_id))
        if earliest is None or due < earliest:
            self._timer_wakeup.set()

    def fire_due_timers(self) -> int:
        """Send a Tick to every customer whose earliest timer is due; return how many.

        A customer whose mailbox is full is skipped: whatever is queued for it advances its
        time first anyway, and the next batch re-registers its timer.
        """
        now = self.clock.now_ms()
        fired = 0
        timers = self._timers
        while timers and timers[0][0] <= now:
            due, cid = heappop(timers)
            if self._timer_due.get(cid) != due:
                continue  # stale
            del self._timer_due[cid]
            try:
                self._enqueue(cid, Tick(), None, None)  # nobody waits for a timer's reply
            except Overloaded as exc:
                # No room now: keep the timer, due again after the overload's retry delay.
                retry = now + int(exc.retry_after_s * 1000)
                self._timer_due[cid] = retry
                heappush(timers, (retry, cid))
                continue
            fired += 1
        # Drop stale entries when they dominate, so the heap stays near one per customer.
        if len(timers) > 2 * len(self._timer_due) + 1024:
            self._timers = [(d, c) for d, c in timers if self._timer_due.get(c) == d]
            self._timers.sort()
        return fired

    async def _timer_loop(self) -> None:
        while True:
            self.fire_due_timers()
            self._timer_wakeup = anyio.Event()
            next_due = self._timers[0][0] if self._timers else None
            await self.clock.wait_until(next_due, self._timer_wakeup)

    async def _janitor(self) -> None:
        """Passivate actors idle for `passivate_after_ms`, a bounded number per sweep."""
        assert self.passivate_after_ms is not None
        period_s = max(self.passivate_after_ms / 4000, 0.05)
        while True:
            await anyio.sleep(period_s)
            cutoff = self.clock.now_ms() - self.passivate_after_ms
            victims = []
            for cid, actor in self._actors.items():
                if len(victims) >= 10_000 or actor.last_used_ms > cutoff:
                    break
                if not actor.busy and actor.mailbox is None:
                    victims.append(cid)
            for cid in victims:
                self._passivate(cid)

    # -- inspection -----------------------------------------------------------------------

    def statistics(self, customer_id: str) -> MailboxStatistics:
        actor = self._actors.get(customer_id)
        if actor is None:
            return MailboxStatistics(customer_id=customer_id, fill=0, peak=0,
                                     capacity=self.mailbox_max, waiting_senders=0,
                                     resident=False)
        return MailboxStatistics(
            customer_id=customer_id,
            fill=len(actor.mailbox) if actor.mailbox else 0,
            peak=actor.peak,
            capacity=self.mailbox_max,
            waiting_senders=actor.in_flight,
            resident=True,
        )

    def runtime_statistics(self) -> RuntimeStatistics:
        return RuntimeStatistics(
            resident=len(self._actors), resident_max=self.resident_max,
            memory_bytes=self._memory, memory_max_bytes=self.memory_max_bytes,
            keys=self._keys, event_keys=self._event_keys, keys_forgotten=self._keys_forgotten,
            key_replays=self._key_replays,
            pending=self._pending, pending_max=self.pending_max, ready=len(self._ready),
            timers=len(self._timer_due), activations=self._activations,
            passivations=self._passivations, batches=self._batches,
            commands=self._commands, overloads=self._overloads, faults=self._faults,
            overloads_by_reason=dict(self._overload_reasons), refusals=dict(self._refusals),
            mailbox_peak=self._mailbox_peak, batch_sizes=tuple(self._batch_sizes),
            commit_seconds=tuple(self._commit_seconds),
            commit_seconds_sum=self._commit_seconds_sum,
        )

    def passivate_idle(self) -> int:
        """Passivate every idle resident actor now (operators, tests); returns the count."""
        before = self._passivations
        self._evict(len(self._actors), scan_max=len(self._actors))
        return self._passivations - before
