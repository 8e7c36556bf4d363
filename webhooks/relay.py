"""The outbox relay: tails the store's outbox and turns each event into one delivery per
endpoint that wants it.

The outbox is the source of truth. Its ids are gapless in commit order (persistence/
durable.py), so reading `id > cursor` in order never skips an event. Each step reads at
most `outbox_rows_per_step_max` rows, stores their payloads and deliveries (at most
`deliveries_per_step_max`; the rest of the rows wait for the next step) and moves the
cursor past exactly the rows it handled, all in one transaction: a crash before the commit
re-reads those rows, a crash after it never sees them again. So every event is fanned out
exactly once, in commit order, and a customer's deliveries to an endpoint get increasing
ids in the order the engine committed the events.

Waking. The runtime's `on_committed` hook calls `wake()` after each durable batch, so the
relay reads new events within milliseconds; it also polls every `outbox_poll_ms` (async
durability calls the hook before the flush, and nothing is lost if a wake-up is). With no
endpoint anywhere it reads nothing: each poll moves the cursor to the newest event
(`_pass_by`).

Backlog limit. An endpoint with `endpoint_backlog_max` pending deliveries gets new ones as
dead on arrival (error "backlog full"): visible, and replayable once it drains, while
memory and the other endpoints are unaffected.
"""

from __future__ import annotations

from collections.abc import Callable

import anyio
import structlog

from engine.runtime.errors import StoreUnavailable
from webhooks.events import build
from webhooks.shared import Shared

__all__ = ["Relay"]

log = structlog.get_logger("creditd.webhooks")
# Persisting the cursor of a step that created nothing is deferred up to this long: under
# engine load with no endpoints it would otherwise cost a write per step for nothing. A
# crash re-reads at most this much of the outbox, which again creates nothing.
_IDLE_CURSOR_WRITE_MS = 1000


class Relay:
    def __init__(self, shared: Shared, on_fanned_out: object) -> None:
        self.shared = shared
        self._on_fanned_out = on_fanned_out  # Callable[[set[str]], None]
        self._wake = anyio.Event()
        self._added = anyio.Event()
        self.cursor = 0
        self._cursor_written = 0
        self._cursor_written_at = 0
        self.events_read = 0
        self.deliveries_created = 0
        self._stepped = anyio.Event()

    def wake(self) -> None:
        self._wake.set()

    def endpoint_added(self) -> None:
        """An endpoint now exists: stop passing the outbox by (see `_pass_by`)."""
        self._added.set()

    async def wait_for(self, condition: Callable[[], bool]) -> None:
        """Return once `condition()` holds, checking it after each step."""
        while not condition():
            await self._stepped.wait()

    async def run(self) -> None:
        shared = self.shared
        self.cursor = self._cursor_written = await shared.tables.cursor()
        poll_s = shared.options.outbox_poll_ms / 1000
        rows_max = shared.options.outbox_rows_per_step_max
        while True:
            # A fresh event before reading: a commit that lands during the read sets it.
            self._wake = anyio.Event()
            passing = not len(shared.registry)
            try:
                if passing:
                    await self._pass_by()
                else:
                    rows = await shared.store.outbox_after(self.cursor, rows_max)
                    if rows:
                        await self._fan_out(rows)
                        continue
            except Exception as exc:
                # A store outage (or a bug) must not stop the relay for good, nor take the
                # engine's process down: log, wait, read again from the same cursor.
                if isinstance(exc, StoreUnavailable):
                    log.warning("webhook relay: store unavailable, retrying", error=str(exc))
                else:
                    log.exception("webhook relay: fan-out failed, retrying")
                await anyio.sleep(shared.options.store_retry_ms / 1000)
                continue
            with anyio.move_on_after(poll_s):
                # Passing by, a commit's wake-up changes nothing: poll, or go on at once
                # when an endpoint is added.
                await (self._added if passing else self._wake).wait()
            if passing and self._added.is_set():
                self._added = anyio.Event()

    async def _pass_by(self) -> None:
        """No endpoint anywhere: no event is anyone's (events from before an endpoint
        existed are not its events), so move the cursor to the outbox's newest id without
        reading and decoding the rows. Under the lock endpoints are created with, so none
        appears between the look and the move; commits do not wake it, the poll does (an
        endpoint's creation too). A server without webhooks spent 5-8 % of its event loop
        reading every event it committed (py-spy under wrk)."""
        shared = self.shared
        async with shared.lock:
            if len(shared.registry):
                return  # one was created meanwhile: read rows from the next step on
            newest = await shared.store.outbox_newest()
            if newest <= self.cursor:
                return
            now = shared.clock.now_ms()
            if now - self._cursor_written_at >= _IDLE_CURSOR_WRITE_MS:
                await shared.tables.set_cursor(newest)
                self._cursor_written, self._cursor_written_at = newest, now
            self.events_read += newest - self.cursor  # ids are gapless
            self.cursor = newest
        self._stepped.set()
        self._stepped = anyio.Event()

    async def _fan_out(self, rows: list) -> None:
        shared = self.shared
        registry = shared.registry
        step_max = shared.options.deliveries_per_step_max
        async with shared.lock:
            await shared.ensure_ids()
            events: list[tuple] = []
            pending: list[tuple] = []
            dead: list[tuple] = []
            counted: dict[str, int] = {}
            cursor = self.cursor
            now = shared.clock.now_ms()
            for outbox_id, engine_customer_id, event in rows:
                if len(pending) + len(dead) >= step_max:
                    break  # the rest of the rows in the next step
                cursor = outbox_id
                environment = engine_customer_id.partition("/")[0]
                if "/" not in engine_customer_id or not registry.has_environment(environment):
                    continue
                built = build(outbox_id, engine_customer_id, event)
                # Stored for every environment that has endpoints, enabled or not, so that
                # a replay after a disabled spell can send what the endpoint missed.
                events.append((outbox_id, environment, built.event_id, built.type,
                               built.customer_id, built.timestamp, built.body))
                for endpoint in registry.in_environment(environment):
                    # Events from before an endpoint existed are not its events.
                    if (not endpoint.enabled or not endpoint.wants(built.type)
                            or built.timestamp < endpoint.created_at):
                        continue
                    ident = shared.delivery_id()
                    if shared.pending.get(endpoint.id, 0) + counted.get(endpoint.id, 0) \
                            >= shared.options.endpoint_backlog_max:
                        full = ("backlog full: the endpoint has "
                                f"{shared.options.endpoint_backlog_max} pending deliveries")
                        dead.append((ident, endpoint.id, outbox_id, built.customer_id, now,
                                     None, full))
                        continue
                    pending.append((ident, endpoint.id, outbox_id, built.customer_id,
                                    endpoint.id, built.customer_id, now, now, None))
                    counted[endpoint.id] = counted.get(endpoint.id, 0) + 1
            deferred = not events and now - self._cursor_written_at < _IDLE_CURSOR_WRITE_MS
            if deferred:
                self.cursor = cursor  # nothing to store: the write can wait (see above)
                self.events_read += len(rows)
            else:
                try:
                    if events:
                        await shared.tables.fan_out(events, pending, dead, cursor)
                    else:
                        await shared.tables.set_cursor(cursor)
                except BaseException:
                    shared.ids_uncertain()
                    raise
                self.cursor = self._cursor_written = cursor
                self._cursor_written_at = now
                self.events_read += len(rows)
                self.deliveries_created += len(pending)
                for endpoint_id, count in counted.items():
                    shared.count_pending(endpoint_id, count)
        if counted:
            self._on_fanned_out(set(counted))  # type: ignore[operator]
        self._stepped.set()
        self._stepped = anyio.Event()
