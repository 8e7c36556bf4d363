"""The webhook service in-process, on a real store and a real engine runtime, with a
manual clock and an httpx.MockTransport receiver whose answers the test decides.

Nothing here sleeps: tests wait on the dispatcher's and relay's `wait_for(condition)`,
which re-check after every settled batch or fan-out step, and move time with the clock.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
import msgspec

from engine.core.commands import ConfigurePool, Consume, CreateGrant, VoidGrant
from engine.core.model import GrantType
from engine.runtime import ManualClock, Runtime
from persistence import open_store
from webhooks import HttpxSender, Options, Webhooks
from webhooks.tables import PENDING

UNIT = 100_000  # engine units per credit
WAIT_S = 20  # an upper bound on any wait; a hang fails the test instead of the suite


@dataclass
class Seen:
    at_ms: int  # the manual clock when the request was answered
    request: httpx.Request
    status: int

    @property
    def json(self) -> Any:
        return msgspec.json.decode(self.request.content)


@dataclass
class Harness:
    store: Any
    clock: ManualClock
    webhooks: Webhooks
    runtime: Runtime
    seen: list[Seen] = field(default_factory=list)
    answer: Callable[[httpx.Request], int] = lambda request: 200

    async def grant(self, customer: str, grant_id: str, amount: float, *,
                    currency: str = "tokens", env: str = "default", **fields: Any) -> Any:
        return await self.runtime.submit(f"{env}/{customer}", CreateGrant(
            grant_id=grant_id, currency_id=currency, amount=round(amount * UNIT),
            grant_type=GrantType.PAID, display_name=grant_id, **fields))

    async def consume(self, customer: str, amount: float, *, currency: str = "tokens",
                      env: str = "default") -> Any:
        return await self.runtime.submit(f"{env}/{customer}", Consume(
            currency_id=currency, amount=round(amount * UNIT)))

    async def void(self, customer: str, grant_id: str, env: str = "default") -> Any:
        return await self.runtime.submit(f"{env}/{customer}", VoidGrant(grant_id=grant_id))

    async def configure(self, customer: str, currency: str = "tokens", **fields: Any) -> Any:
        return await self.runtime.submit(f"default/{customer}", ConfigurePool(
            currency_id=currency, **fields))

    async def wait_seen(self, count: int) -> None:
        """Until at least `count` requests have been answered and recorded."""
        with anyio.fail_after(WAIT_S):
            await self.webhooks.dispatcher.wait_for(
                lambda: len(self.seen) >= count and self.webhooks.dispatcher.in_flight == 0)

    async def wait_attempts(self, count: int) -> None:
        with anyio.fail_after(WAIT_S):
            await self.webhooks.dispatcher.wait_for(
                lambda: self.webhooks.dispatcher.attempts >= count)

    async def wait_relayed(self) -> None:
        """Until the relay has read everything the outbox holds now."""
        (row,) = await self.store.fetch("SELECT coalesce(max(id), 0) FROM outbox")
        with anyio.fail_after(WAIT_S):
            await self.webhooks.relay.wait_for(lambda: self.webhooks.relay.cursor >= row[0])

    async def lanes_hold_their_invariant(self) -> None:
        """Every (endpoint, customer) lane with pending deliveries has exactly one head (a
        pending row with a due time), and it is the lane's oldest pending row."""
        rows = await self.store.fetch(
            "SELECT endpoint_id, customer_id, id, next_attempt_at FROM webhook_deliveries "
            "WHERE status = ? ORDER BY endpoint_id, customer_id, id", PENDING)
        lanes: dict[tuple[str, str], list[tuple[int, Any]]] = {}
        for endpoint_id, customer_id, ident, next_at in rows:
            lanes.setdefault((endpoint_id, customer_id), []).append((ident, next_at))
        for lane, members in lanes.items():
            heads = [ident for ident, next_at in members if next_at is not None]
            assert heads == [members[0][0]], (lane, members)
        heads = await self.store.fetch(
            "SELECT count(*) FROM webhook_deliveries WHERE next_attempt_at IS NOT NULL "
            "AND status <> ?", PENDING)
        assert heads[0][0] == 0


@asynccontextmanager
async def harness(store_url: str, *, clock: ManualClock | None = None,
                  options: Options | None = None, seed: int = 7,
                  answer: Callable[[httpx.Request], int] | None = None,
                  seen: list[Seen] | None = None) -> AsyncIterator[Harness]:
    clock = clock or ManualClock()
    box: dict[str, Harness] = {}
    records = seen if seen is not None else []

    def handle(request: httpx.Request) -> httpx.Response:
        h = box["h"]
        status = h.answer(request)
        h.seen.append(Seen(h.clock.now_ms(), request, status))
        return httpx.Response(status, content=b"" if status < 300 else b"no thanks")

    options = options or Options(allow_private=True)
    store = open_store(store_url)
    async with store:
        webhooks = Webhooks(store, clock=clock, options=options,
                            sender=HttpxSender(httpx.MockTransport(handle)),
                            rng=random.Random(seed))
        async with webhooks, Runtime(store, clock, on_committed=webhooks.wake) as runtime:
            h = box["h"] = Harness(store, clock, webhooks, runtime, records)
            if answer is not None:
                h.answer = answer
            yield h
