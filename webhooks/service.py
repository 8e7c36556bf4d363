"""`Webhooks`: the relay, the dispatcher and the purge as one service, and the operations
the endpoint API calls (every change to endpoints and every replay goes through here).

    async with Webhooks(store, options=Options(...)) as webhooks:
        async with Runtime(store, on_committed=webhooks.wake) as runtime:
            ...

Business refusals are `Refusal`s (status, code, message, field), which the gateway turns
into its JSON errors.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

import anyio
import msgspec
import structlog
from anyio.abc import TaskGroup

from engine.runtime.clock import Clock, SystemClock
from webhooks.addresses import AddressRefused, resolve
from webhooks.dispatcher import Dispatcher
from webhooks.endpoints import (
    DESCRIPTION_CHARS_MAX,
    ENDPOINTS_PER_ENVIRONMENT_MAX,
    MANUAL,
    Endpoint,
    check_event_types,
    new_endpoint_id,
)
from webhooks.relay import Relay
from webhooks.sender import HttpxSender, PooledSender, Sender, parse_target
from webhooks.shared import Options, Shared
from webhooks.signing import new_secret, secret_key
from webhooks.tables import Attempt, Delivery

__all__ = ["Webhooks", "Refusal", "Statistics", "ReplayResult", "UNCHANGED"]

log = structlog.get_logger("creditd.webhooks")

UNCHANGED: Any = msgspec.UNSET
RECOUNT_S = 10.0  # how often the pending counts are read again from the database


class Refusal(Exception):
    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field


def _not_found(endpoint_id: str) -> Refusal:
    return Refusal(404, "WebhookEndpointNotFound", f"endpoint {endpoint_id!r} was not found",
                   "endpointId")


class Statistics(msgspec.Struct, frozen=True, kw_only=True):
    endpoints: int
    outbox_cursor: int
    events_read: int
    deliveries_created: int
    pending: int  # across endpoints
    in_flight: int
    in_flight_max: int
    attempts: int
    delivered: int
    dead: int
    attempt_delay_ms: int = 0  # how late attempts started after they were due, summed
    # Deliveries (first ones, not replays) per bucket of DELIVERY_LAG_BUCKETS by the time
    # from their event to their delivery, and that time summed.
    delivery_lag: tuple[int, ...] = ()
    delivery_lag_ms: int = 0


class ReplayResult(msgspec.Struct, frozen=True, kw_only=True):
    queued: int
    already_pending: int
    # Set when the replay stopped at `replay_events_max` or at the endpoint's backlog
    # limit: the time of the first event not queued (replay again from there).
    resume_from: int | None


class Webhooks:
    def __init__(self, store: Any, *, clock: Clock | None = None,
                 options: Options | None = None, sender: Sender | None = None,
                 rng: random.Random | None = None,
                 wall_clock_s: Callable[[], float] = time.time) -> None:
        options = options or Options()
        self.shared = Shared(store, clock or SystemClock(), options, rng)
        self.sender = sender or PooledSender(timeout_s=options.timeout_s,
                                             allow_private=options.allow_private)
        self.dispatcher = Dispatcher(self.shared, self.sender, wall_clock_s=wall_clock_s)
        self.relay = Relay(self.shared, self.dispatcher.poke)
        self._tg: TaskGroup | None = None

    @staticmethod
    def make_sender(client: str, options: Options) -> Sender:
        """`pooled` (the default) or `httpx` (the stock httpx/httpcore client)."""
        if client == "httpx":
            return HttpxSender(timeout_s=options.timeout_s, allow_private=options.allow_private,
                               connections_max=options.concurrency_max)
        assert client == "pooled", client
        return PooledSender(timeout_s=options.timeout_s, allow_private=options.allow_private)

    # -- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> Webhooks:
        shared = self.shared
        for row in await shared.tables.endpoint_rows():
            shared.registry.put(Endpoint.from_row(row))
        shared.pending = await shared.tables.pending_counts()
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._tg.start_soon(self.relay.run)
        self._tg.start_soon(self.dispatcher.run)
        self._tg.start_soon(self._purge_loop)
        self._tg.start_soon(self._recount_loop)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        assert self._tg is not None
        with anyio.CancelScope(shield=True):
            await self.dispatcher.drain()
        self._tg.cancel_scope.cancel()
        await self._tg.__aexit__(exc_type, exc, tb)
        with anyio.CancelScope(shield=True):
            await self.sender.aclose()

    def wake(self, *_committed: object) -> None:
        """The runtime's `on_committed` hook: new events may be in the outbox. Never blocks."""
        self.relay.wake()

    def statistics(self) -> Statistics:
        return Statistics(
            endpoints=len(self.shared.registry), outbox_cursor=self.relay.cursor,
            events_read=self.relay.events_read,
            deliveries_created=self.relay.deliveries_created,
            pending=sum(self.shared.pending.values()), in_flight=self.dispatcher.in_flight,
            in_flight_max=self.shared.options.concurrency_max,
            attempts=self.dispatcher.attempts, delivered=self.dispatcher.delivered,
            dead=self.dispatcher.dead, attempt_delay_ms=self.dispatcher.attempt_delay_ms,
            delivery_lag=tuple(self.dispatcher.delivery_lag),
            delivery_lag_ms=self.dispatcher.delivery_lag_ms)

    def pending(self, endpoint_id: str) -> int:
        return self.shared.pending.get(endpoint_id, 0)

    # -- endpoints ------------------------------------------------------------------------

    def endpoint(self, environment: str, endpoint_id: str) -> Endpoint:
        endpoint = self.shared.registry.get(endpoint_id)
        if endpoint is None or endpoint.environment != environment:
            raise _not_found(endpoint_id)
        return endpoint

    def endpoints(self, environment: str) -> list[Endpoint]:
        """In creation order."""
        return sorted(self.shared.registry.in_environment(environment),
                      key=lambda e: (e.created_at, e.id))

    async def _check_url(self, url: str) -> None:
        try:
            target = parse_target(url)
        except ValueError as exc:
            raise Refusal(400, "BadUserInput", str(exc), "url") from None
        try:
            await resolve(target.host, target.port,
                          allow_private=self.shared.options.allow_private)
        except AddressRefused as exc:
            message = str(exc)
            if not self.shared.options.allow_private and "resolves to" in message:
                message += " (set CREDITD_WEBHOOKS_ALLOW_PRIVATE=true to allow it)"
            raise Refusal(400, "BadUserInput", message, "url") from None

    @staticmethod
    def _check_fields(event_types: list[str] | None, description: str | None,
                      secret: str | None) -> None:
        if event_types:
            unknown = check_event_types(event_types)
            if unknown is not None:
                raise Refusal(400, "BadUserInput", f"unknown event type {unknown[1]!r}",
                              f"eventTypes[{unknown[0]}]")
        if description is not None and len(description) > DESCRIPTION_CHARS_MAX:
            raise Refusal(400, "BadUserInput",
                          f"must be at most {DESCRIPTION_CHARS_MAX} characters", "description")
        if secret is not None:
            try:
                secret_key(secret)
            except ValueError as exc:
                raise Refusal(400, "BadUserInput", str(exc), "secret") from None

    async def create_endpoint(self, environment: str, *, url: str, event_types: list[str],
                              description: str | None = None, enabled: bool = True,
                              secret: str | None = None) -> Endpoint:
        self._check_fields(event_types, description, secret)
        await self._check_url(url)
        shared = self.shared
        # Under the lock: `created_at` and the relay's matching of events against endpoints
        # must happen in a definite order (webhooks/shared.py).
        async with shared.lock:
            if shared.registry.count(environment) >= ENDPOINTS_PER_ENVIRONMENT_MAX:
                raise Refusal(400, "BadUserInput", "an environment can have at most "
                              f"{ENDPOINTS_PER_ENVIRONMENT_MAX} webhook endpoints", "url")
            now = shared.clock.now_ms()
            endpoint = Endpoint(
                id=new_endpoint_id(), environment=environment, url=url,
                description=description, event_types=list(dict.fromkeys(event_types)),
                enabled=enabled, disabled_reason=None if enabled else MANUAL,
                secret=secret or new_secret(), previous_secret=None,
                previous_secret_until=None, created_at=now, updated_at=now)
            await shared.tables.insert_endpoint(endpoint.row())
            shared.registry.put(endpoint)
        self.relay.endpoint_added()
        self.dispatcher.poke([endpoint.id])
        return endpoint

    async def update_endpoint(self, environment: str, endpoint_id: str, *,
                              url: Any = UNCHANGED, event_types: Any = UNCHANGED,
                              description: Any = UNCHANGED, enabled: Any = UNCHANGED) -> Endpoint:
        """Absent (UNCHANGED) fields are left alone."""
        self.endpoint(environment, endpoint_id)
        self._check_fields(None if event_types is UNCHANGED else event_types,
                           None if description is UNCHANGED else description, None)
        if url is not UNCHANGED:
            await self._check_url(url)
        shared = self.shared
        async with shared.lock:
            current = self.endpoint(environment, endpoint_id)  # it may have gone meanwhile
            changed = msgspec.structs.replace(current)
            now = shared.clock.now_ms()
            if url is not UNCHANGED:
                changed.url = url
            if event_types is not UNCHANGED:
                changed.event_types = list(dict.fromkeys(event_types))
            if description is not UNCHANGED:
                changed.description = description
            hurry = None
            if enabled is not UNCHANGED and enabled != current.enabled:
                changed.enabled = enabled
                changed.disabled_reason = None if enabled else MANUAL
                hurry = now if enabled else None
            changed.updated_at = now
            await shared.tables.update_endpoint(changed.row(), hurry_at=hurry)
            shared.registry.put(changed)
        self.dispatcher.poke([endpoint_id])
        return changed

    async def rotate_secret(self, environment: str, endpoint_id: str,
                            secret: str | None = None) -> Endpoint:
        """A new secret signs from now on; the current one keeps signing too for
        `secret_overlap_ms` (a secret older than that is dropped)."""
        self._check_fields(None, None, secret)
        shared = self.shared
        async with shared.lock:
            current = self.endpoint(environment, endpoint_id)
            now = shared.clock.now_ms()
            changed = msgspec.structs.replace(
                current, secret=secret or new_secret(), previous_secret=current.secret,
                previous_secret_until=now + shared.options.secret_overlap_ms, updated_at=now)
            await shared.tables.update_endpoint(changed.row(), hurry_at=None)
            shared.registry.put(changed)
        return changed

    async def delete_endpoint(self, environment: str, endpoint_id: str) -> None:
        shared = self.shared
        async with shared.lock:
            self.endpoint(environment, endpoint_id)
            await shared.tables.delete_endpoint(endpoint_id, shared.clock.now_ms())
            shared.registry.remove(endpoint_id)
            shared.pending.pop(endpoint_id, None)

    # -- inspection -----------------------------------------------------------------------

    async def deliveries(self, environment: str, endpoint_id: str, *, status: str | None,
                         after: int | None, before: int | None, limit: int) -> list[Delivery]:
        self.endpoint(environment, endpoint_id)
        rows = await self.shared.tables.deliveries(endpoint_id, status=status, after=after,
                                                   before=before, limit=limit)
        return [Delivery(r) for r in rows]

    async def delivery(self, environment: str, endpoint_id: str,
                       delivery_id: int) -> tuple[Delivery, list[Attempt], bytes | None]:
        """The delivery, its attempts (at most `attempts_max` per delivery), its payload."""
        self.endpoint(environment, endpoint_id)
        tables = self.shared.tables
        row = await tables.delivery(endpoint_id, delivery_id)
        if row is None:
            raise Refusal(404, "WebhookDeliveryNotFound",
                          f"delivery {delivery_id} was not found", "deliveryId")
        delivery = Delivery(row)
        attempts = [Attempt(r) for r in await tables.attempts_of(delivery_id)]
        return delivery, attempts, await tables.payload(delivery.outbox_id)

    async def attempts(self, environment: str, endpoint_id: str, *, after: int | None,
                       before: int | None, limit: int) -> list[Attempt]:
        self.endpoint(environment, endpoint_id)
        rows = await self.shared.tables.attempts(endpoint_id, after=after, before=before,
                                                 limit=limit)
        return [Attempt(r) for r in rows]

    # -- replay ---------------------------------------------------------------------------

    def _check_replayable(self, endpoint: Endpoint) -> None:
        if not endpoint.enabled:
            raise Refusal(409, "WebhookEndpointDisabled",
                          "the endpoint is disabled; enable it first", "endpointId")

    async def replay_delivery(self, environment: str, endpoint_id: str,
                              delivery_id: int) -> Delivery:
        """Queue the delivery's event again, as a new delivery behind the lane's pending
        ones, with the same event id (receivers that already processed it can tell)."""
        endpoint = self.endpoint(environment, endpoint_id)
        self._check_replayable(endpoint)
        shared = self.shared
        original = await shared.tables.delivery(endpoint_id, delivery_id)
        if original is None:
            raise Refusal(404, "WebhookDeliveryNotFound",
                          f"delivery {delivery_id} was not found", "deliveryId")
        source = Delivery(original)
        if source.event_id is None:
            raise Refusal(409, "WebhookEventPurged",
                          "the event is older than the retention and was purged", "deliveryId")
        async with shared.lock:
            if shared.backlog_full(endpoint_id):
                raise Refusal(429, "TooManyRequests",
                              "the endpoint's backlog of pending deliveries is full")
            await shared.ensure_ids()
            ident = shared.delivery_id()
            now = shared.clock.now_ms()
            try:
                await shared.tables.insert_deliveries(
                    [(ident, endpoint_id, source.outbox_id, source.customer_id, endpoint_id,
                      source.customer_id, now, now, source.id)], [])
            except BaseException:
                shared.ids_uncertain()
                raise
            shared.count_pending(endpoint_id, 1)
        self.dispatcher.poke([endpoint_id])
        row = await shared.tables.delivery(endpoint_id, ident)
        assert row is not None
        return Delivery(row)

    async def replay_since(self, environment: str, endpoint_id: str, since_ms: int,
                           until_ms: int | None = None) -> ReplayResult:
        """Queue every stored event of the endpoint's environment from `since_ms` (until
        `until_ms`) that it subscribes to, in time order, except those already pending for
        it; at most `replay_events_max` per call."""
        endpoint = self.endpoint(environment, endpoint_id)
        self._check_replayable(endpoint)
        shared = self.shared
        limit = shared.options.replay_events_max
        rows = await shared.tables.events_since(environment, since_ms, until_ms,
                                                endpoint.event_types, limit + 1)
        resume_from = int(rows[limit][2]) if len(rows) > limit else None
        rows = rows[:limit]
        already = await shared.tables.pending_events(endpoint_id, [int(r[0]) for r in rows])
        async with shared.lock:
            self.endpoint(environment, endpoint_id)
            room = shared.options.endpoint_backlog_max - shared.pending.get(endpoint_id, 0)
            await shared.ensure_ids()
            now = shared.clock.now_ms()
            pending = []
            for outbox_id, customer_id, created_at in rows:
                if int(outbox_id) in already:
                    continue
                if len(pending) >= room:
                    resume_from = int(created_at)
                    break
                pending.append((shared.delivery_id(), endpoint_id, int(outbox_id), customer_id,
                                endpoint_id, customer_id, now, now, None))
            try:
                await shared.tables.insert_deliveries(pending, [])
            except BaseException:
                shared.ids_uncertain()
                raise
            shared.count_pending(endpoint_id, len(pending))
        self.dispatcher.poke([endpoint_id])
        return ReplayResult(queued=len(pending), already_pending=len(already),
                            resume_from=resume_from)

    # -- retention ------------------------------------------------------------------------

    async def _recount_loop(self) -> None:
        """Count the pending deliveries per endpoint again from the database every
        `RECOUNT_S`, under the write lock (every change to them and their counts holds it):
        the counts in memory are kept by this process alone, and after a cluster's
        leadership moved while the previous leader still settled, they may drift."""
        shared = self.shared
        while True:
            await anyio.sleep(RECOUNT_S)
            try:
                async with shared.lock:
                    shared.pending = await shared.tables.pending_counts()
            except Exception as exc:  # noqa: BLE001 - the store is away: the next round
                log.warning("webhook pending recount failed", error=repr(exc))

    async def _purge_loop(self) -> None:
        shared = self.shared
        options = shared.options
        while True:
            await shared.clock.wait_until(shared.clock.now_ms() + options.purge_every_ms,
                                          anyio.Event())
            try:
                await self.purge()
            except Exception:
                log.exception("webhook purge failed; trying again at the next round")

    async def purge(self, steps_max: int = 100) -> int:
        """Forget settled deliveries, attempts and events older than the retention, and
        deleted endpoints' deliveries: at most `purge_rows_max` rows of each kind per step
        and `steps_max` steps per call (the rest at the next round)."""
        shared = self.shared
        removed = 0
        for _ in range(steps_max):
            async with shared.lock:
                before = shared.clock.now_ms() - shared.options.retention_ms
                step = await shared.tables.purge(before, shared.options.purge_rows_max)
            removed += step
            if step == 0:
                break
        return removed
