"""Time as an input. The runtime asks a clock for `now` and waits on it for timers; tests
pass a `ManualClock` and move time explicitly, on asyncio and trio alike."""

from __future__ import annotations

import time
from typing import Protocol

import anyio

__all__ = ["Clock", "SystemClock", "ManualClock"]


class Clock(Protocol):
    def now_ms(self) -> int: ...

    async def wait_until(self, deadline_ms: int | None, wakeup: anyio.Event) -> None:
        """Return when `deadline_ms` is reached or `wakeup` is set (None: only `wakeup`)."""


class SystemClock:
    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000

    async def wait_until(self, deadline_ms: int | None, wakeup: anyio.Event) -> None:
        if deadline_ms is None:
            await wakeup.wait()
            return
        delay_s = (deadline_ms - self.now_ms()) / 1000
        if delay_s <= 0:
            return
        with anyio.move_on_after(delay_s):
            await wakeup.wait()


class ManualClock:
    """A clock that moves only when told to. `advance()` wakes the timers that came due."""

    def __init__(self, start_ms: int = 1_767_225_600_000) -> None:  # 2026-01-01T00:00:00Z
        self._now = start_ms
        self._waiters: list[tuple[int, anyio.Event]] = []

    def now_ms(self) -> int:
        return self._now

    def set(self, now_ms: int) -> None:
        assert now_ms >= self._now, "time never goes back"
        self._now = now_ms
        still = []
        for deadline, event in self._waiters:
            if deadline <= now_ms:
                event.set()
            elif not event.is_set():
                still.append((deadline, event))
        self._waiters = still

    def advance(self, ms: int) -> None:
        self.set(self._now + ms)

    async def wait_until(self, deadline_ms: int | None, wakeup: anyio.Event) -> None:
        if deadline_ms is not None:
            if deadline_ms <= self._now:
                return
            self._waiters.append((deadline_ms, wakeup))
        await wakeup.wait()
