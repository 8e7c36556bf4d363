"""What the relay, the dispatcher and the endpoint API share: the tables, the endpoint
registry, the write lock, id allocation and the per-endpoint backlog counts.

The write lock. Every write that touches lanes or the registry (fan-out, settling
attempts, replays, endpoint changes, purge steps) runs under one lock. That is what keeps
the lane invariant (webhooks/tables.py) on PostgreSQL, where two transactions could
otherwise each see the other's lane as empty or busy, and what makes an endpoint's
creation and the relay's matching of events against endpoints happen in a definite order.
Each holder does one bounded transaction, so the lock is held for milliseconds.
"""

from __future__ import annotations

import random
from typing import Any

import anyio
import structlog

from engine.runtime.clock import Clock
from webhooks.endpoints import Registry
from webhooks.schedule import RetryPolicy
from webhooks.tables import Tables

__all__ = ["Shared", "Options"]

log = structlog.get_logger("creditd.webhooks")


class Options:
    """Limits and settings, with their defaults (docs/webhooks.md lists them all)."""

    def __init__(
        self,
        *,
        allow_private: bool = False,
        retry: RetryPolicy | None = None,
        timeout_s: float = 10.0,
        concurrency_max: int = 64,
        endpoint_concurrency_max: int = 32,
        endpoint_backlog_max: int = 1_000_000,
        outbox_rows_per_step_max: int = 1000,
        deliveries_per_step_max: int = 5000,
        results_per_step_max: int = 512,
        outbox_poll_ms: int = 200,
        replay_events_max: int = 10_000,
        secret_overlap_ms: int = 24 * 3_600_000,
        retention_ms: int = 30 * 24 * 3_600_000,
        purge_every_ms: int = 3_600_000,
        purge_rows_max: int = 10_000,
        store_retry_ms: int = 1000,
        close_grace_s: float = 5.0,
    ) -> None:
        assert timeout_s > 0 and 0 < endpoint_concurrency_max <= concurrency_max
        assert endpoint_backlog_max > 0 and outbox_rows_per_step_max > 0
        assert deliveries_per_step_max > 0 and results_per_step_max > 0
        assert replay_events_max > 0 and purge_rows_max > 0 and retention_ms > 0
        self.allow_private = allow_private
        self.retry = retry or RetryPolicy()
        self.timeout_s = timeout_s
        self.concurrency_max = concurrency_max
        self.endpoint_concurrency_max = endpoint_concurrency_max
        self.endpoint_backlog_max = endpoint_backlog_max
        self.outbox_rows_per_step_max = outbox_rows_per_step_max
        self.deliveries_per_step_max = deliveries_per_step_max
        self.results_per_step_max = results_per_step_max
        self.outbox_poll_ms = outbox_poll_ms
        self.replay_events_max = replay_events_max
        self.secret_overlap_ms = secret_overlap_ms
        self.retention_ms = retention_ms
        self.purge_every_ms = purge_every_ms
        self.purge_rows_max = purge_rows_max
        self.store_retry_ms = store_retry_ms
        self.close_grace_s = close_grace_s


class Shared:
    def __init__(self, store: Any, clock: Clock, options: Options,
                 rng: random.Random | None = None) -> None:
        self.store = store
        self.tables = Tables(store)
        self.clock = clock
        self.options = options
        self.rng = rng or random.Random()
        self.registry = Registry()
        self.lock = anyio.Lock()
        # Pending deliveries per endpoint: the backlog `endpoint_backlog_max` bounds.
        self.pending: dict[str, int] = {}
        self._next_delivery_id = 0
        self._next_attempt_id = 0
        self._ids_known = False

    async def ensure_ids(self) -> None:
        """Call under the lock before taking ids: ids are assigned here, by the one
        process that owns the database, like the store's outbox ids."""
        assert self.lock.locked()
        if not self._ids_known:
            self._next_delivery_id, self._next_attempt_id = await self.tables.next_ids()
            self._ids_known = True

    def ids_uncertain(self) -> None:
        """After a failed write, which may have committed anyway (its answer was lost):
        only the database knows which ids are taken now."""
        self._ids_known = False

    def delivery_id(self) -> int:
        assert self._ids_known
        self._next_delivery_id += 1
        return self._next_delivery_id - 1

    def attempt_id(self) -> int:
        assert self._ids_known
        self._next_attempt_id += 1
        return self._next_attempt_id - 1

    def backlog_full(self, endpoint_id: str) -> bool:
        return self.pending.get(endpoint_id, 0) >= self.options.endpoint_backlog_max

    def count_pending(self, endpoint_id: str, change: int) -> None:
        self.pending[endpoint_id] = self.pending.get(endpoint_id, 0) + change
