"""The subsystems' counters as Prometheus families, read when /metrics is scraped.

Every subsystem already counts what it does for its `statistics()` (the runtime, the
store, the webhooks, the feed's hub, the recharge executor, the subscription scheduler);
this turns one reading of each into families, so nothing is done between scrapes. Names,
types and labels are listed in docs/metrics.md; a test checks that every family a server
exposes is there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.registry import Collector

from engine import __version__
from engine.runtime.runtime import BATCH_SIZE_BUCKETS, COMMIT_SECONDS_BUCKETS, RuntimeStatistics
from persistence.durable import FLUSH_SECONDS_BUCKETS, FLUSH_UNITS_BUCKETS
from webhooks.dispatcher import DELIVERY_LAG_BUCKETS

__all__ = ["Subsystems"]


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def _labelled(family: Any, label: str, values: Iterable[tuple[str, float]]) -> Any:
    for key, value in values:
        family.add_metric([key], value)
    return family


def _histogram(name: str, doc: str, bounds: Iterable[float], counts: Iterable[int],
               total: float) -> HistogramMetricFamily:
    """Counts per bucket (the last past every bound) as the cumulative buckets Prometheus
    reads."""
    buckets, running = [], 0
    for bound, count in zip([*map(str, bounds), "+Inf"], counts):
        running += count
        buckets.append((bound, running))
    return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=total)


class Subsystems(Collector):
    """Reads `state` (the app's: services, webhooks, feed, recharges, scheduler) when
    collected; before the app has started there is nothing to read."""

    def __init__(self, state: Any, gc_statistics: Callable[[], dict[str, Any]]) -> None:
        self._state = state
        self._gc_statistics = gc_statistics

    def collect(self) -> Iterator[Metric]:
        state = self._state
        svc = getattr(state, "services", None)
        if svc is None:
            return
        store = svc.store
        store_stats = store.statistics()
        yield InfoMetricFamily("creditd", "This server: its version and store", value={
            "version": __version__, "store": getattr(store, "dialect", "") or "memory"})
        yield from _runtime(svc.runtime.runtime_statistics(), svc.runtime.mailbox_max)
        yield from _store(store_stats, getattr(store, "backlog_rows_max", None))
        admission = getattr(state, "admission", None)
        if admission is not None:
            yield from _admission(admission.statistics())
        webhooks = getattr(state, "webhooks", None)
        if webhooks is not None:
            yield from _webhooks(webhooks.statistics(), store_stats.get("outbox_last_id"))
        feed = getattr(state, "feed", None)
        if feed is not None:
            yield from _feed(feed.hub.statistics())
        recharges = getattr(state, "recharges", None)
        if recharges is not None:
            yield from _recharge(recharges.statistics())
        scheduler = getattr(state, "scheduler", None)
        if scheduler is not None:
            yield from _scheduler(scheduler.statistics(svc.clock.now_ms()))
        node = getattr(state, "cluster", None)
        if node is not None:
            yield from _cluster(node.statistics())
        gc = self._gc_statistics()
        yield _labelled(CounterMetricFamily(
            "creditd_gc_pause_seconds", "Time the cyclic garbage collector paused the process, "
            "by generation (counted under `creditd serve` only)", labels=["generation"]),
            "generation", [(str(g), s) for g, s in enumerate(gc["seconds"])])


def _admission(s: dict[str, Any]) -> Iterator[Metric]:
    p = "creditd_http_"
    yield _gauge(p + "in_flight_requests", "HTTP requests in progress (admitted)", s["in_flight"])
    yield _gauge(p + "in_flight_requests_max", "CREDITD_IN_FLIGHT_MAX", s["limit"])
    yield _gauge(p + "waiting_requests", "Requests waiting for a slot", s["waiting"])
    yield _gauge(p + "held_refusals", "429 answers held until their paced turn", s["held"])
    yield _counter(p + "admitted_requests", "Requests taken into progress", s["admitted"])
    yield _counter(p + "waited_requests", "Requests that found every slot taken and waited",
                   s["waited"])
    yield _labelled(CounterMetricFamily(
        p + "refused_requests", "Requests answered 429 at the door, by reason: `waited` (no "
        "slot within CREDITD_IN_FLIGHT_WAIT_MS), `share` (the customer over its share), "
        "`line` (the waiting line full)", labels=["reason"]), "reason", s["refused"].items())


def _runtime(s: RuntimeStatistics, mailbox_max: int) -> Iterator[Metric]:
    p = "creditd_runtime_"
    yield _gauge(p + "resident_customers", "Customers in memory", s.resident)
    yield _gauge(p + "resident_customers_max", "CREDITD_RESIDENT_MAX", s.resident_max)
    yield _gauge(p + "memory_bytes", "Estimated bytes of the resident customers and the keys "
                 "they remember", s.memory_bytes)
    if s.memory_max_bytes is not None:
        yield _gauge(p + "memory_budget_bytes", "CREDITD_MEMORY_MB in bytes", s.memory_max_bytes)
    yield _gauge(p + "remembered_keys", "Idempotency keys held in memory", s.keys)
    yield _gauge(p + "event_keys", "Raw-event keys held in memory", s.event_keys)
    yield _counter(p + "keys_forgotten", "Keys dropped from memory to stay in the budget",
                   s.keys_forgotten)
    yield _counter(p + "key_replays", "Batches applied again because the store remembered "
                   "a key memory had forgotten", s.key_replays)
    yield _gauge(p + "pending_commands", "Commands queued in all mailboxes", s.pending)
    yield _gauge(p + "pending_commands_max", "CREDITD_PENDING_MAX", s.pending_max)
    yield _gauge(p + "mailbox_peak_commands", "The most commands one mailbox has held at once",
                 s.mailbox_peak)
    yield _gauge(p + "mailbox_capacity_commands", "CREDITD_MAILBOX_MAX", mailbox_max)
    yield _gauge(p + "ready_actors", "Customers with commands waiting for a worker", s.ready)
    yield _gauge(p + "timers", "Customers with a timer due", s.timers)
    yield _counter(p + "activations", "Customer states loaded from the store", s.activations)
    yield _counter(p + "passivations", "Idle customers taken out of memory", s.passivations)
    yield _counter(p + "batches", "Actor batches applied (and made durable)", s.batches)
    yield _counter(p + "commands", "Commands applied in those batches", s.commands)
    yield _counter(p + "faults", "Batches failed by an unexpected error (a bug)", s.faults)
    yield _histogram(p + "batch_size_commands", "Commands per committed actor batch",
                     BATCH_SIZE_BUCKETS, s.batch_sizes, s.commands)
    yield _histogram(p + "commit_duration_seconds", "Time a batch waited for the store to "
                     "make it durable (group commit included)", COMMIT_SECONDS_BUCKETS,
                     s.commit_seconds, s.commit_seconds_sum)
    yield _labelled(CounterMetricFamily(
        p + "overloads", "Commands refused with Overloaded (429), by the limit reached",
        labels=["reason"]), "reason", sorted(s.overloads_by_reason.items()))
    yield _labelled(CounterMetricFamily(
        p + "refusals", "Business refusals of committed batches, by refusal code",
        labels=["code"]), "code", sorted(s.refusals.items()))


def _summary(name: str, doc: str, count: int, seconds: float) -> SummaryMetricFamily:
    return SummaryMetricFamily(name, doc, count_value=count, sum_value=seconds)


def _store(s: dict[str, Any], backlog_rows_max: int | None) -> Iterator[Metric]:
    if "flushes" not in s:
        return  # the in-memory store counts nothing
    p = "creditd_store_"
    yield _histogram(p + "flush_duration_seconds", "Group-commit transactions by their time",
                     FLUSH_SECONDS_BUCKETS, s["flush_seconds_buckets"], s["flush_s"])
    yield _histogram(p + "flush_units", "Group-commit transactions by how many actor "
                     "batches they wrote", FLUSH_UNITS_BUCKETS, s["flush_units_buckets"],
                     s["flushed_units"])
    yield _counter(p + "flushed_units", "Actor batches written by group commits",
                   s["flushed_units"])
    yield _counter(p + "flushed_rows", "Rows written by group commits", s["flushed_rows"])
    yield _gauge(p + "backlog_rows", "Rows waiting to be written", s["backlog_rows"])
    if backlog_rows_max is not None:
        yield _gauge(p + "backlog_rows_max", "CREDITD_BACKLOG_ROWS_MAX", backlog_rows_max)
    yield _summary(p + "load_duration_seconds", "Customer states read and their time",
                   s["loads"], s["load_s"])
    yield _summary(p + "key_lookup_duration_seconds", "Idempotency-key lookup queries and "
                   "their time", s["lookups"], s["lookup_s"])
    yield _gauge(p + "outbox_last_id", "The newest outbox id written", s["outbox_last_id"])
    if "key_filter_ready" in s:
        yield _gauge(p + "key_filter_ready", "1 once the key filter holds every key written "
                     "before start", int(s["key_filter_ready"]))
        yield _labelled(CounterMetricFamily(
            p + "key_filter_keys", "New keys the filter answered: surely new (passed) or "
            "checked against the database (held)", labels=["answer"]), "answer",
            [("passed", s["key_filter_passed"]), ("held", s["key_filter_held"])])
    if "key_filter_saves" in s:
        yield _counter(p + "key_filter_saves", "Key filter bits saved in the database (as a "
                       "key generation starts a new run)", s["key_filter_saves"])
        yield _gauge(p + "key_filter_keys_read", "Keys read back into the filter since start "
                     "(the runs its saved bits did not hold)", s["key_filter_keys_read"])
    if "checkpoints" in s:
        yield _counter(p + "checkpoints", "SQLite only: checkpoints run beside the writer",
                       s["checkpoints"])
        yield _gauge(p + "log_pages", "SQLite only: pages in the write-ahead log at the "
                     "last checkpoint", s["log_pages"])
        yield _counter(p + "checkpoint_failures", "SQLite only: checkpoints that failed "
                       "(the log grows until one succeeds)", s["checkpoint_failures"])
        if s.get("sqlite_memory_bytes", -1) >= 0:
            yield _gauge(p + "sqlite_memory_bytes", "SQLite only: what SQLite holds in this "
                         "process (the reader's page cache, statements; not the writer "
                         "process's)", s["sqlite_memory_bytes"])
    if "pool_size" in s:
        yield _labelled(GaugeMetricFamily(
            p + "pool_connections", "PostgreSQL connections open, by state",
            labels=["state"]), "state",
            [("in_use", s["pool_size"] - s["pool_idle"]), ("idle", s["pool_idle"])])
        yield _gauge(p + "pool_connections_max", "CREDITD_PG_POOL_MAX", s["pool_max"])


def _webhooks(s: Any, outbox_last_id: int | None) -> Iterator[Metric]:
    p = "creditd_webhook_"
    yield _gauge(p + "endpoints", "Webhook endpoints", s.endpoints)
    yield _gauge(p + "backlog_deliveries", "Deliveries pending, across endpoints", s.pending)
    yield _gauge(p + "in_flight_requests", "Webhook requests being sent", s.in_flight)
    yield _gauge(p + "in_flight_requests_max", "CREDITD_WEBHOOKS_CONCURRENCY_MAX",
                 s.in_flight_max)
    yield _counter(p + "events_read", "Outbox events the relay read", s.events_read)
    yield _counter(p + "deliveries_created", "Deliveries the relay created",
                   s.deliveries_created)
    failed = s.attempts - s.delivered - s.dead
    yield _labelled(CounterMetricFamily(
        p + "attempts", "Delivery attempts recorded, by outcome (failed: to be retried)",
        labels=["outcome"]), "outcome",
        [("delivered", s.delivered), ("failed", failed), ("dead", s.dead)])
    yield _summary(p + "attempt_delay_seconds", "How late attempts started after they were "
                   "due", s.attempts, s.attempt_delay_ms / 1000)
    yield _histogram(p + "delivery_lag_seconds", "Time from an event to its delivery (first "
                     "deliveries, not replays)", DELIVERY_LAG_BUCKETS, s.delivery_lag,
                     s.delivery_lag_ms / 1000)
    if outbox_last_id is not None:
        yield _gauge(p + "relay_lag_events", "Outbox events the relay has not read yet",
                     max(0, outbox_last_id - s.outbox_cursor))


def _feed(s: dict[str, int]) -> Iterator[Metric]:
    p = "creditd_feed_"
    feed = s["subscribers"] - s["watchers"]
    yield _labelled(GaugeMetricFamily(
        p + "subscribers", "Live-feed websockets (feed) and GraphQL subscriptions (graphql)",
        labels=["kind"]), "kind", [("feed", feed), ("graphql", s["watchers"])])
    yield _labelled(GaugeMetricFamily(
        p + "backlog_items", "Unsent items queued for subscribers", labels=["kind"]), "kind",
        [("feed", s["subscriberBacklog"]), ("graphql", s["watcherBacklog"])])
    yield _counter(p + "overflows", "Subscribers closed because their backlog overflowed",
                   s["overflows"])
    yield _counter(p + "frames_offered", "Frames offered to subscribers", s["framesOffered"])


def _recharge(s: dict[str, int]) -> Iterator[Metric]:
    p = "creditd_recharge_"
    yield _gauge(p + "payments_in_flight", "Auto-recharge payments being charged or settled",
                 s["in_flight"])
    yield _gauge(p + "payments_in_flight_max", "CREDITD_RECHARGE_CONCURRENCY_MAX",
                 s["concurrency_max"])
    yield _gauge(p + "queue_payments", "Auto-recharge payments waiting", s["queued"])
    yield _gauge(p + "queue_payments_max", "CREDITD_RECHARGE_QUEUE_MAX", s["queue_max"])
    yield _labelled(CounterMetricFamily(
        p + "payments", "Auto-recharge payments settled, by outcome", labels=["outcome"]),
        "outcome", [(k, s[k]) for k in ("paid", "declined", "already_settled")])
    yield _counter(p + "retries", "Payment attempts with no answer, retried with the same key",
                   s["retries"])
    yield _counter(p + "queue_full", "Recharges left to the sweep because the queue was full",
                   s["queue_full"])


def _cluster(s: dict[str, Any]) -> Iterator[Metric]:
    p = "creditd_cluster_"
    yield _gauge(p + "shards_held", "Virtual shards this node holds the lease of",
                 s["shards_held"])
    yield _gauge(p + "leader", "1 while this node holds the leader's lease", int(s["leader"]))
    yield _gauge(p + "nodes", "Live nodes this node saw at its last lease round",
                 len(s["nodes"]))
    yield _gauge(p + "lease_epochs_sum", "Sum of the epochs of the shards held (changes "
                 "whenever one changes hands)", s["epochs_sum"])
    yield _labelled(CounterMetricFamily(
        p + "shard_moves", "Shards this node took, handed over, or found taken",
        labels=["kind"]), "kind",
        [("acquired", s["acquired"]), ("released", s["released"]), ("lost", s["lost"])])
    yield _counter(p + "forwarded", "Commands sent to the owner of their customer",
                   s["forwarded"])
    yield _counter(p + "served_for_peers", "Commands other nodes sent here",
                   s["served_for_peers"])
    yield _counter(p + "move_waits", "Commands that waited for their customer's shard to "
                   "get an owner", s["moved_waits"])
    yield _counter(p + "unknown_outcomes", "Forwarded commands whose owner stopped "
                   "answering (503; the outcome is unknown)", s["unknown_outcomes"])
    yield _counter(p + "fenced_units", "Actor batches a flush left out because their "
                   "shard changed hands (never acknowledged)", s["fenced"])


def _scheduler(s: dict[str, Any]) -> Iterator[Metric]:
    p = "creditd_scheduler_"
    yield _counter(p + "steps", "Subscription scheduler steps", s["steps"])
    yield _counter(p + "caught_up", "Subscriptions brought up to date", s["caught_up"])
    yield _counter(p + "failures", "Subscriptions whose catch-up failed (retried)",
                   s["failures"])
    yield _gauge(p + "due_subscriptions", "Subscriptions the last step found due",
                 s["due"])
    yield _gauge(p + "lag_seconds", "How long ago the earliest known due time passed",
                 s["lag_s"])
