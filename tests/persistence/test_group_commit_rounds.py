"""Group commit when clients move in lockstep (persistence/durable.py, `_units_max`).

Clients that each wait for their answer before sending again all land in one flush, and
then the next round of them all in the next one: the database idles while the actors
apply a round and the actors idle while it is written. A batch begun while the writer is
idle closes at half the commands the runtime has waiting, so a round splits in two and
the halves alternate. What these tests pin down: the split happens where it should
(sync durability, writer idle), not where it should not (async durability, a writer
already busy), and every answer is still durable, exactly once."""

from __future__ import annotations

from typing import Any

import anyio
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
from engine.runtime import ManualClock
from persistence import durable
from persistence.codec import make_unit

pytestmark = pytest.mark.anyio

CUR = "credits"
ROUND = 16  # clients, each on a customer of its own


def _grant(customer: str) -> CreateGrant:
    return CreateGrant(grant_id=f"{customer}-g", currency_id=CUR, amount=1_000,
                       grant_type=GrantType.PAID, display_name="round")


def _watch_flushes(store: Any, limits: list[int | None] | None = None) -> list[int]:
    """The units of each batch the writer takes, in order (and, into `limits`, the number
    of units each was to close at)."""
    sizes: list[int] = []
    flush = store._flush

    async def watched(batch: Any, first_outbox_id: int) -> Any:
        sizes.append(len(batch.units))
        if limits is not None:
            limits.append(batch.units_max)
        return await flush(batch, first_outbox_id)

    store._flush = watched
    return sizes


def _hold_writes(store: Any) -> tuple[anyio.Event, anyio.Event]:
    """Make the writer wait at its driver call until the second event is set; the first
    is set when a write reaches it (the writer then counts as busy)."""
    held, gate = anyio.Event(), anyio.Event()
    write = store._write

    async def held_write(rows: Any) -> None:
        held.set()
        await gate.wait()
        await write(rows)

    store._write = held_write
    return held, gate


async def _round(rt: Any, customers: list[str], n: int) -> None:
    async def use(customer: str) -> None:
        reply = await rt.submit(customer, Consume(currency_id=CUR, amount=1,
                                                  idempotency_key=f"{customer}-{n}"))
        assert isinstance(reply, ConsumeReply), reply

    async with anyio.create_task_group() as tg:
        for customer in customers:
            tg.start_soon(use, customer)


async def test_a_round_of_clients_on_an_idle_writer_is_written_in_two_halves(
        store_url: str, engine: Any) -> None:
    await _rounds_split(store_url, engine)


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_rounds_split_on_trio_too(tmp_path: Any, engine: Any) -> None:
    await _rounds_split(f"sqlite:///{tmp_path}/rounds.db", engine)


async def _rounds_split(store_url: str, engine: Any) -> None:
    customers = [f"r{i:02}" for i in range(ROUND)]
    clock = ManualClock()
    async with engine(store_url, clock) as (store, rt):
        with anyio.fail_after(30):
            for customer in customers:
                assert isinstance(await rt.submit(customer, _grant(customer)), GrantReply)
            sizes = _watch_flushes(store)
            for n in range(3):  # the writer is idle before each round: every one splits
                before = len(sizes)
                await _round(rt, customers, n)
                taken = sizes[before:]
                assert sum(taken) == ROUND, taken
                assert taken[0] <= ROUND // 2, taken  # unsplit: one flush of all 16
                assert len(taken) >= 2, taken
    # Every answer was durable: a new runtime on the same database sees 3 units spent.
    async with engine(store_url, clock) as (store, rt):
        for customer in customers:
            reply = await rt.submit(customer, GetBalances())
            assert isinstance(reply, BalancesReply)
            assert reply.balances[0].current_balance == 1_000 - 3


async def test_async_durability_does_not_split_a_round(store_url: str, engine: Any) -> None:
    """Async durability answers before the flush: its clients never wait on the writer
    in lockstep, and smaller batches would only cost transactions."""
    customers = [f"a{i:02}" for i in range(ROUND)]
    clock = ManualClock()
    async with engine(store_url, clock, durability="async") as (store, rt):
        with anyio.fail_after(30):
            for customer in customers:
                await rt.submit(customer, _grant(customer))
            # The grants were answered before they were written: let them be, so that the
            # round begins on an idle writer (where a sync store would split it).
            for queued in [store._inflight, *store._batches]:
                if queued is not None:
                    await queued.done.wait()
            _, gate = _hold_writes(store)
            limits: list[int | None] = []
            sizes = _watch_flushes(store, limits)
            await _round(rt, customers, 0)  # answered at once, nothing written yet
            gate.set()
    # Batches close by rows only: however the writer's turns fell between the round's
    # commits, none of its batches was to close at half of it.
    assert sum(sizes) >= ROUND, sizes
    assert limits == [None] * len(sizes), limits


async def test_a_writer_that_is_busy_gathers_the_next_batch_whole(
        store_url: str, engine: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """While a flush is in flight the next batch takes everything that arrives (group
    commit as before): only a batch begun on an idle writer closes at half."""
    customers = [f"b{i:02}" for i in range(ROUND)]
    clock = ManualClock()
    async with engine(store_url, clock) as (store, rt):
        with anyio.fail_after(30):
            for customer in customers:
                await rt.submit(customer, _grant(customer))
            held, gate = _hold_writes(store)
            sizes = _watch_flushes(store)
            queued = 0
            all_queued = anyio.Event()

            def counted(*args: Any) -> Any:
                # commit() queues the unit it makes in the same step, before any await:
                # by the time a waiter of `all_queued` runs, the unit is in its batch.
                nonlocal queued
                queued += 1
                if queued == ROUND:
                    all_queued.set()
                return make_unit(*args)

            monkeypatch.setattr(durable, "make_unit", counted)
            async with anyio.create_task_group() as tg:
                # One customer first: its flush holds the writer busy...
                tg.start_soon(_round, rt, customers[:1], 0)
                await held.wait()
                # ...while the others arrive: they gather in one batch behind it.
                tg.start_soon(_round, rt, customers[1:], 0)
                await all_queued.wait()
                gate.set()
    assert sizes == [1, ROUND - 1], sizes
