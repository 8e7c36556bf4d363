"""The dispatcher: sends due deliveries, records each attempt, schedules retries.

Three kinds of task, joined by two bounded channels:

    scan ──jobs──► `concurrency_max` workers ──results──► settle
     ▲                                                       │
     └──────────────── poke(endpoint ids) ◄──────────────────┘

- scan: for each enabled endpoint with room, reads its due lane heads (webhooks/tables.py)
  in due order, at most `endpoint_concurrency_max` in flight per endpoint and
  `concurrency_max` in all, and hands them to the workers. It then sleeps until the
  earliest known due time or a poke (new deliveries, settled attempts, endpoint changes).
- workers: sign and POST one delivery at a time (`webhooks.sender`), each attempt bounded
  by the sender's timeout.
- settle: takes up to `results_per_step_max` results at once and writes them in one
  transaction: the delivery's new state, one attempt row each, the lane's next head when a
  delivery is done, and the endpoint's state after a 410.

A delivery stays "in flight" from the scan until its result is committed, so no scan can
hand it out twice. If the process stops in between, the row still says pending with its
due time, and the next process sends it again: at least once. The channels cannot
overflow: a job exists only while its delivery is in flight, and in-flight deliveries are
capped at `concurrency_max`, the size of both channels.

Outcomes: 2xx delivered; 410 Gone disables the endpoint (the delivery stays pending and
goes first when the endpoint is enabled again); anything else, a timeout or a connection
error is a failed attempt, retried on the schedule (webhooks/schedule.py) and
dead-lettered after `attempts_max`.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Iterable

import anyio
import structlog
from anyio.streams.memory import MemoryObjectReceiveStream

from engine.runtime.errors import StoreUnavailable
from webhooks import signing
from webhooks.endpoints import GONE
from webhooks.sender import Answer, Sender
from webhooks.shared import Shared
from webhooks.tables import DEAD, DELIVERED, PENDING, DueRow

__all__ = ["Dispatcher", "RESPONSE_CHARS_KEPT", "DELIVERY_LAG_BUCKETS"]

# Upper bounds, in seconds, of the event-to-delivery lag distribution: most deliveries
# take milliseconds; retries after a receiver's outage take minutes to hours.
DELIVERY_LAG_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                        300.0, 1800.0, 3600.0, 21600.0)

log = structlog.get_logger("creditd.webhooks")

# Of a failed attempt's answer, this much of the body is kept for inspection.
RESPONSE_CHARS_KEPT = 512

_Job = tuple[str, DueRow]
_Result = tuple[str, DueRow, int, Answer]


class Dispatcher:
    def __init__(self, shared: Shared, sender: Sender, *,
                 wall_clock_s: Callable[[], float] = time.time) -> None:
        self.shared = shared
        self.sender = sender
        # Signatures carry wall-clock time (receivers compare it with theirs); retry
        # schedules use the injected clock.
        self._wall_clock_s = wall_clock_s
        options = shared.options
        self._jobs_in, self._jobs_out = anyio.create_memory_object_stream[_Job](
            options.concurrency_max)
        self._results_in, self._results_out = anyio.create_memory_object_stream[_Result](
            options.concurrency_max)
        self._wake = anyio.Event()
        self._in_flight: set[int] = set()
        self._busy: dict[str, int] = {}  # in-flight deliveries per endpoint
        # When to look at an endpoint's lanes next (ms); absent: now; None: only when poked.
        self._check_at: dict[str, int | None] = {}
        # Pokes per endpoint, so a scan can tell that one came while it was reading.
        self._pokes: dict[str, int] = {}
        # Deliveries settled since the scan pass before last began -> the settle's number.
        # A scan's read may have started before a settle committed and end after it: it
        # then shows the settled delivery as still due, and it must not go out again.
        self._settles = 0
        self._settled_lately: dict[int, int] = {}
        self._closing = False
        self._settled = anyio.Event()
        self.attempts = 0
        self.delivered = 0
        self.dead = 0
        # How late attempts started after they were due, summed (ms): with `attempts`, the
        # mean delivery lag (for /metrics; nothing here reads it back).
        self.attempt_delay_ms = 0
        # From each event's time to its delivery (first deliveries, not replays), per
        # bucket of DELIVERY_LAG_BUCKETS (the last past every bound), and their sum: what
        # /metrics shows as how far behind webhooks are.
        self.delivery_lag = [0] * (len(DELIVERY_LAG_BUCKETS) + 1)
        self.delivery_lag_ms = 0

    # -- control --------------------------------------------------------------------------

    def poke(self, endpoint_ids: Iterable[str]) -> None:
        for endpoint_id in endpoint_ids:
            self._check_at[endpoint_id] = 0
            self._pokes[endpoint_id] = self._pokes.get(endpoint_id, 0) + 1
        self._wake.set()

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    async def wait_for(self, condition: Callable[[], bool]) -> None:
        """Return once `condition()` holds, checking it after each settled batch (tests
        and benchmarks wait on this rather than sleeping)."""
        while not condition():
            await self._settled.wait()

    async def run(self) -> None:
        async with anyio.create_task_group() as tg:
            for _ in range(self.shared.options.concurrency_max):
                tg.start_soon(self._worker, self._jobs_out.clone())
            tg.start_soon(self._settle_loop)
            await self._scan_loop()

    async def drain(self) -> None:
        """Stop handing out work and wait (up to `close_grace_s`) for what is in flight to
        be answered and recorded, so a clean stop sends nothing twice."""
        self._closing = True
        self._wake.set()
        with anyio.move_on_after(self.shared.options.close_grace_s):
            while self._in_flight:
                self._wake = anyio.Event()
                await self._wake.wait()

    # -- scan -----------------------------------------------------------------------------

    async def _scan_loop(self) -> None:
        shared = self.shared
        options = shared.options
        while not self._closing:
            self._wake = anyio.Event()
            try:
                await self._scan()
            except Exception as exc:
                # A store outage (or a bug) must not stop deliveries for good, nor take the
                # engine's process down with it: log, wait, look again.
                _log_failure("webhook dispatcher: scan failed, retrying", exc)
                await anyio.sleep(options.store_retry_ms / 1000)
                continue
            if self._closing:
                break
            await shared.clock.wait_until(self._next_check(), self._wake)

    def _room(self, endpoint_id: str) -> int:
        options = self.shared.options
        return min(options.endpoint_concurrency_max - self._busy.get(endpoint_id, 0),
                   options.concurrency_max - len(self._in_flight))

    def _next_check(self) -> int | None:
        soonest = None
        for endpoint in self.shared.registry:
            at = self._check_at.get(endpoint.id, 0)
            if endpoint.enabled and at is not None and self._room(endpoint.id) > 0:
                soonest = at if soonest is None else min(soonest, at)
        return soonest

    async def _scan(self) -> None:
        shared = self.shared
        pass_began = self._settles
        for endpoint in shared.registry:
            now = shared.clock.now_ms()
            at = self._check_at.get(endpoint.id, 0)
            room = self._room(endpoint.id)
            if not endpoint.enabled or at is None or at > now or room <= 0:
                continue
            busy = self._busy.get(endpoint.id, 0)
            pokes = self._pokes.get(endpoint.id, 0)
            # In-flight heads are still due in the table: read past them.
            limit = room + busy
            rows = await shared.tables.due(endpoint.id, limit)
            next_at: int | None = None
            if len(rows) == limit:
                next_at = now  # there may be more due than were read
            skipped = False
            for row in rows:
                if row.next_attempt_at > now:
                    next_at = row.next_attempt_at
                    break
                if row.id in self._in_flight:
                    continue
                if row.id in self._settled_lately:
                    skipped = True  # maybe a stale read; the next pass reads it afresh
                    continue
                if room == 0:
                    next_at = now
                    break
                room -= 1
                self._in_flight.add(row.id)
                self._busy[endpoint.id] = self._busy.get(endpoint.id, 0) + 1
                self._jobs_in.send_nowait((endpoint.id, row))
            if skipped and (next_at is None or next_at > now):
                next_at = now
            if self._pokes.get(endpoint.id, 0) == pokes:
                # Not poked while reading: what was read decides the next look.
                self._check_at[endpoint.id] = next_at
        # Every read of the next pass begins after these settles committed, so this holds
        # at most the deliveries settled during two passes.
        self._settled_lately = {i: n for i, n in self._settled_lately.items() if n > pass_began}
        # Forget deleted endpoints once nothing of theirs is in flight.
        for endpoint_id in [e for e in self._check_at if shared.registry.get(e) is None]:
            if not self._busy.get(endpoint_id):
                for table in (self._check_at, self._pokes, self._busy):
                    table.pop(endpoint_id, None)

    # -- workers --------------------------------------------------------------------------

    async def _worker(self, jobs: MemoryObjectReceiveStream[_Job]) -> None:
        registry = self.shared.registry
        clock = self.shared.clock
        async with jobs:
            async for endpoint_id, row in jobs:
                endpoint = registry.get(endpoint_id)
                started = clock.now_ms()
                if endpoint is None:  # deleted meanwhile: nothing to send, nothing to record
                    answer = Answer(None, "endpoint deleted", b"", 0)
                else:
                    keys = endpoint.keys(started)
                    headers = signing.headers(keys, row.event_id, int(self._wall_clock_s()),
                                              row.payload)
                    answer = await self.sender.post(registry.target(endpoint_id), headers,
                                                    row.payload)
                # Never blocks: results exist only for deliveries in flight, at most
                # `concurrency_max`, the channel's size.
                self._results_in.send_nowait((endpoint_id, row, started, answer))

    # -- settle ---------------------------------------------------------------------------

    async def _settle_loop(self) -> None:
        batch_max = self.shared.options.results_per_step_max
        async with self._results_out:
            while True:
                batch = [await self._results_out.receive()]
                while len(batch) < batch_max:
                    try:
                        batch.append(self._results_out.receive_nowait())
                    except anyio.WouldBlock:
                        break
                await self._settle(batch)

    async def _settle(self, batch: list[_Result]) -> None:
        shared = self.shared
        registry = shared.registry
        policy = shared.options.retry
        settled: list[tuple] = []
        attempts: list[tuple] = []
        promoted: list[tuple] = []
        disabled: list[tuple] = []
        done: dict[str, int] = {}
        counts = [0, 0, 0]  # attempts, delivered, dead
        delay_ms = 0
        lags: list[int] = []
        try:
            async with shared.lock:
                await shared.ensure_ids()
                now = shared.clock.now_ms()
                for endpoint_id, row, started, answer in batch:
                    endpoint = registry.get(endpoint_id)
                    if endpoint is None:
                        continue
                    attempt = row.attempts + 1
                    status, next_at, delivered_at = PENDING, None, None
                    code = answer.status
                    if code is not None and 200 <= code < 300:
                        status, delivered_at = DELIVERED, now
                        if not row.replay:
                            lags.append(max(0, now - row.event_at))
                    elif code == 410:
                        # The receiver says this endpoint is gone: stop sending to it. The
                        # delivery waits, first in its lane, for the endpoint to be enabled.
                        next_at = now
                        if endpoint.enabled:
                            endpoint.enabled = False
                            endpoint.disabled_reason = GONE
                            endpoint.updated_at = now
                            disabled.append((False, GONE, now, endpoint_id))
                            log.warning("webhook endpoint disabled: the receiver answered 410",
                                        endpoint=endpoint_id, url=endpoint.url)
                    else:
                        next_at = policy.next_attempt_at(now, attempt, shared.rng)
                        if next_at is None:
                            status = DEAD
                    error = answer.error
                    if error is None and not (200 <= (code or 0) < 300):
                        error = f"HTTP {code}"
                    settled.append((status, attempt, next_at, started, code, answer.latency_ms,
                                    error, delivered_at, row.id))
                    response = None
                    if code is not None and not 200 <= code < 300 and answer.body:
                        response = answer.body.decode("utf-8", "replace")[:RESPONSE_CHARS_KEPT]
                    attempts.append((shared.attempt_id(), row.id, endpoint_id, attempt, started,
                                     code, answer.latency_ms, answer.error, response))
                    counts[0] += 1
                    delay_ms += max(0, started - row.next_attempt_at)
                    if status != PENDING:
                        promoted.append((now, endpoint_id, row.customer_id))
                        done[endpoint_id] = done.get(endpoint_id, 0) + 1
                        counts[1 if status == DELIVERED else 2] += 1
                try:
                    await shared.tables.settle(settled, attempts, promoted, disabled)
                except BaseException:
                    shared.ids_uncertain()
                    raise
                for endpoint_id, count in done.items():
                    shared.count_pending(endpoint_id, -count)
                self.attempts += counts[0]
                self.delivered += counts[1]
                self.dead += counts[2]
                self.attempt_delay_ms += delay_ms
                for lag_ms in lags:
                    self.delivery_lag[bisect_left(DELIVERY_LAG_BUCKETS, lag_ms / 1000)] += 1
                    self.delivery_lag_ms += lag_ms
        except Exception as exc:
            # The answers are lost; the deliveries are still pending and due in the table,
            # so they go out again: at least once.
            _log_failure("webhook dispatcher: could not record attempts", exc)
        finally:
            self._settles += 1
            for endpoint_id, row, _started, _answer in batch:
                self._in_flight.discard(row.id)
                self._settled_lately[row.id] = self._settles
                self._busy[endpoint_id] -= 1
            self.poke({endpoint_id for endpoint_id, *_ in batch})
            self._settled.set()
            self._settled = anyio.Event()


def _log_failure(message: str, exc: Exception) -> None:
    if isinstance(exc, StoreUnavailable):
        log.warning(message, error=str(exc))
    else:
        log.exception(message)
