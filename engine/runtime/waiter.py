"""One-shot reply waiters native to the running backend.

Every `submit()` waits for exactly one wake-up. `anyio.Event()` costs ~1.5 µs to create on
this machine (backend detection on each construction), which alone would cap the actor at
well under 200 k commands/s, so the runtime picks the backend's own primitive once, at
start-up: an asyncio future (~0.25 µs), or trio's park/reschedule of the current task (no
allocation). Any other backend falls back to anyio.Event.

A waiter is created and parked in the same synchronous step as the command is enqueued, so
a wake-up can never come before the wait.

The same primitives park the runtime's idle workers, and `checkpoint` is the backend's own
yield, which the workers take between batches.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.lowlevel
import sniffio

__all__ = ["Waiters", "waiters_for_current_backend"]


class Waiters:
    """`new()` makes a token; `await wait(token)` parks until `wake(token)`. A waiter
    cancelled while parked is simply never woken; `wake()` on it is a no-op.
    `checkpoint()` yields to the scheduler once."""

    __slots__ = ("new", "wait", "wake", "checkpoint")

    def __init__(
        self,
        new: Callable[[], Any],
        wait: Callable[[Any], Awaitable[None]],
        wake: Callable[[Any], None],
        checkpoint: Callable[[], Awaitable[None]],
    ) -> None:
        self.new = new
        self.wait = wait
        self.wake = wake
        self.checkpoint = checkpoint


def _asyncio_waiters() -> Waiters:
    import asyncio

    loop = asyncio.get_running_loop()

    # A future is awaitable itself: returning it, rather than awaiting it inside a
    # coroutine, saves creating and running a coroutine for every command.
    def wait(future: asyncio.Future[None]) -> asyncio.Future[None]:
        return future

    def wake(future: asyncio.Future[None]) -> None:
        if not future.done():
            future.set_result(None)

    async def checkpoint() -> None:
        await asyncio.sleep(0)

    return Waiters(loop.create_future, wait, wake, checkpoint)


class _TrioSlot:
    __slots__ = ("task",)

    def __init__(self) -> None:
        self.task: Any = None


def _trio_waiters() -> Waiters:
    import trio

    lowlevel = trio.lowlevel

    async def wait(slot: _TrioSlot) -> None:
        if slot.task is False:  # woken before parking (cannot happen, kept for safety)
            await lowlevel.checkpoint()
            return
        slot.task = lowlevel.current_task()

        def abort(_raise_cancel: Any) -> Any:
            slot.task = None
            return lowlevel.Abort.SUCCEEDED

        await lowlevel.wait_task_rescheduled(abort)

    def wake(slot: _TrioSlot) -> None:
        task = slot.task
        slot.task = False
        if task:
            lowlevel.reschedule(task)

    return Waiters(_TrioSlot, wait, wake, lowlevel.checkpoint)


def _anyio_waiters() -> Waiters:
    async def wait(event: anyio.Event) -> None:
        await event.wait()

    return Waiters(anyio.Event, wait, lambda event: event.set(), anyio.lowlevel.checkpoint)


def waiters_for_current_backend() -> Waiters:
    library = sniffio.current_async_library()
    if library == "asyncio":
        return _asyncio_waiters()
    if library == "trio":
        return _trio_waiters()
    return _anyio_waiters()
