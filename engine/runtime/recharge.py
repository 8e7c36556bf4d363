"""The recharge executor: pays for the recharges customers' actors start.

An actor starts a recharge by committing a PAYMENT_PENDING grant (engine.core.recharge);
the committed effects carry a `RechargeRequest`, which the runtime's `on_committed` hook
hands to `RechargeExecutor.submit`. The executor charges the payment provider with the
grant id as the idempotency key and reports the outcome to the actor (`SettleRecharge`).

Outcomes:
- the provider charged: the grant activates; the balance lands on the target.
- the provider declined (`ChargeDeclined`): no credits, auto-recharge disabled, event.
- no answer (timeout, connection error, crash): the outcome is unknown, so the executor
  retries with the *same key*, with backoff, for as long as it takes. Giving up could leave
  a customer charged without credits; retrying with the key cannot charge twice. An
  operator can end a stuck recharge by voiding its grant.

After a restart, `run` asks the store which customers have a recharge in flight and resumes
each with its key. Bounded: at most `concurrency_max` payments at once and `queue_max`
waiting; a request that does not fit is picked up by the periodic sweep of pending ones.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

import anyio
import structlog

from engine.core.commands import PendingRecharges, PendingRechargesReply, Refused, SettleRecharge
from engine.core.effects import Effects, RechargeRequest
from engine.runtime.errors import EngineError

__all__ = ["ChargeDeclined", "Provider", "RecordingProvider", "ScriptedProvider",
           "RechargeExecutor", "PROVIDERS"]

log = structlog.get_logger("creditd.recharge")


class ChargeDeclined(Exception):
    """The provider refused the payment: definite, not worth retrying."""


class Provider(Protocol):
    async def charge(self, request: RechargeRequest) -> str:
        """Charge for `request` once per `request.grant_id` (the idempotency key) and return
        a charge id. Raise `ChargeDeclined` for a refusal; anything else (or no answer)
        means the outcome is unknown and the call will be repeated with the same key."""
        ...


class RecordingProvider:
    """The default: records the charge invoice-style in the `recharge_charges` table (one
    row per key), for an operator or a billing system to collect."""

    def __init__(self, store: Any, now_ms: Callable[[], int]) -> None:
        self.store = store
        self.now_ms = now_ms

    async def charge(self, request: RechargeRequest) -> str:
        await self.store.execute(
            "INSERT INTO recharge_charges (idempotency_key, customer_id, currency_id, "
            "resource_id, credits, amount, amount_currency, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (idempotency_key) DO NOTHING",
            request.grant_id, request.customer_id, request.currency_id, request.resource_id,
            request.credits, request.cost, request.price_currency, self.now_ms())
        return request.grant_id


class ScriptedProvider:
    """For tests and demonstrations: `mode` is what every charge does — "ok" (charge),
    "decline", "hang" (never answer), "charge-then-hang" (charge, then never answer: a
    timeout after the money moved). Charges are kept per key, as a real provider would."""

    def __init__(self, mode: str = "ok", inner: Provider | None = None) -> None:
        self.mode = mode
        self.inner = inner
        self.calls: list[str] = []
        self.charges: dict[str, RechargeRequest] = {}
        self.gate: anyio.Event | None = None  # when set, charges wait for it

    async def charge(self, request: RechargeRequest) -> str:
        self.calls.append(request.grant_id)
        if self.gate is not None:
            await self.gate.wait()
        if self.mode == "decline":
            raise ChargeDeclined("the card was declined")
        if self.mode == "hang":
            await anyio.sleep_forever()
        self.charges.setdefault(request.grant_id, request)
        if self.inner is not None:
            await self.inner.charge(request)
        if self.mode == "charge-then-hang":
            await anyio.sleep_forever()
        return request.grant_id


# CREDITD_RECHARGE_PROVIDER values; all but "record" are for tests and demonstrations.
PROVIDERS = ("record", "decline", "hang", "charge-then-hang")


class RechargeExecutor:
    def __init__(self, provider: Provider, *, timeout_s: float = 30.0,
                 retry_base_s: float = 1.0, retry_cap_s: float = 300.0,
                 concurrency_max: int = 16, queue_max: int = 10_000,
                 sweep_s: float = 60.0) -> None:
        self.provider = provider
        self.timeout_s = timeout_s
        self.retry_base_s = retry_base_s
        self.retry_cap_s = retry_cap_s
        self.concurrency_max = concurrency_max
        self.queue_max = queue_max
        self.sweep_s = sweep_s
        self.runtime: Any = None
        self._queue: deque[RechargeRequest] = deque()
        self._active: set[tuple[str, str]] = set()  # (customer, grant) being paid
        self._wake = anyio.Event()
        self._resweep = anyio.Event()
        self.settled = 0
        self.retries = 0
        # For `statistics()` (what /metrics shows): settled payments by outcome, and
        # requests the full queue left to the sweep.
        self.paid = self.declined = self.already_settled = self.queue_full = 0

    def on_committed(self, customer_id: str, fx: Effects) -> None:
        """The runtime's commit hook: queue what the batch started. Never blocks."""
        for request in fx.recharges:
            self.submit(request)

    def submit(self, request: RechargeRequest) -> None:
        if len(self._queue) >= self.queue_max:
            self.queue_full += 1
            log.warning("recharge queue full; the sweep will pick this one up",
                        customer=request.customer_id, grant=request.grant_id)
            return
        self._queue.append(request)
        self._wake.set()

    async def run(self, runtime: Any, store: Any) -> None:
        """Pay queued recharges until cancelled; first (and every `sweep_s`) resume the
        ones in flight in the store."""
        self.runtime = runtime
        limiter = anyio.CapacityLimiter(self.concurrency_max)
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._sweep, store)
            while True:
                while not self._queue:
                    self._wake = anyio.Event()
                    await self._wake.wait()
                request = self._queue.popleft()
                ident = (request.customer_id, request.grant_id)
                if ident in self._active:
                    continue
                self._active.add(ident)
                await limiter.acquire_on_behalf_of(ident)
                tg.start_soon(self._pay, request, limiter, ident)

    async def _sweep(self, store: Any) -> None:
        while True:
            try:
                for customer_id in await store.pending_recharges():
                    reply = await self.runtime.submit(customer_id, PendingRecharges())
                    if isinstance(reply, PendingRechargesReply):
                        for grant_id, currency, resource, credits, cost, money in reply.recharges:
                            if (customer_id, grant_id) not in self._active:
                                self.submit(RechargeRequest(
                                    customer_id=customer_id, grant_id=grant_id,
                                    currency_id=currency, resource_id=resource,
                                    credits=credits, cost=cost, price_currency=money))
            except Exception as exc:  # noqa: BLE001  # the store or engine is down: next sweep
                log.warning("recharge sweep failed", error=repr(exc))
            self._resweep = anyio.Event()
            with anyio.move_on_after(self.sweep_s):
                await self._resweep.wait()

    def sweep_now(self) -> None:
        """Sweep again now (a cluster node took over customers: the recharges they have
        in flight are its own to finish)."""
        self._resweep.set()

    async def _pay(self, request: RechargeRequest, limiter: anyio.CapacityLimiter,
                   ident: tuple[str, str]) -> None:
        try:
            delay = self.retry_base_s
            while True:
                try:
                    with anyio.fail_after(self.timeout_s):
                        await self.provider.charge(request)
                except ChargeDeclined as exc:
                    await self._settle(request, False, str(exc) or "the payment was declined")
                    return
                except Exception as exc:  # noqa: BLE001  # unknown outcome: retry, same key
                    self.retries += 1
                    log.warning("recharge payment: no answer; retrying with the same key",
                                customer=request.customer_id, grant=request.grant_id,
                                error=repr(exc), retry_in_s=delay)
                    await anyio.sleep(delay)
                    delay = min(delay * 2, self.retry_cap_s)
                    continue
                await self._settle(request, True, None)
                return
        finally:
            self._active.discard(ident)
            limiter.release_on_behalf_of(ident)

    async def _settle(self, request: RechargeRequest, paid: bool, reason: str | None) -> None:
        delay = self.retry_base_s
        while True:
            try:
                reply = await self.runtime.submit(request.customer_id, SettleRecharge(
                    grant_id=request.grant_id, paid=paid, reason=reason))
            except EngineError as exc:
                # Overloaded or the store is down: the payment's outcome is known and the
                # provider's key makes a repeat harmless, so keep trying to record it.
                log.warning("recharge settle failed; retrying", error=repr(exc))
                await anyio.sleep(delay)
                delay = min(delay * 2, self.retry_cap_s)
                continue
            if isinstance(reply, Refused):  # settled already (a sweep raced us, or voided)
                self.already_settled += 1
                log.info("recharge already settled", customer=request.customer_id,
                         grant=request.grant_id)
            else:
                self.settled += 1
                if paid:
                    self.paid += 1
                else:
                    self.declined += 1
            return

    def statistics(self) -> dict[str, int]:
        """Payments in flight (being charged or settled, retries included) and waiting;
        settled ones by outcome; unknown outcomes retried; requests left to the sweep."""
        return {"in_flight": len(self._active), "queued": len(self._queue),
                "concurrency_max": self.concurrency_max, "queue_max": self.queue_max,
                "paid": self.paid, "declined": self.declined,
                "already_settled": self.already_settled, "retries": self.retries,
                "queue_full": self.queue_full}
