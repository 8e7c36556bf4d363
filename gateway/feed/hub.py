"""The feed's fan-out: committed effects in, per-subscriber bounded backlogs out.

The runtime calls `Hub.publish` synchronously after each durable batch (its `on_committed`
hook), on the engine's worker. So `publish` never awaits and never blocks: it encodes the
batch's frames once per customer and appends them to each subscriber's backlog; the
subscriber's own task (gateway/feed/stream.py) sends them at whatever pace its socket
takes. A customer nobody watches costs one dict lookup per batch.

Watchers. A `Watcher` sees every customer of one environment (Stigg's GraphQL
subscriptions, gateway/graphql/realtime.py): committed pool balances and usage counters as
immutable views, and the notices the domain gives outside the engine (a customer's
entitlements changed, a package version was published). Everything it holds is keyed and
coalesces (a newer balance, counter or notice replaces an unsent one), at most
`backlog_max` keys; one more and it overflows like a subscriber (its task closes the
connection). An environment nobody watches costs one dict lookup per batch more.

Backlog. Balance frames coalesce: a subscriber that has not sent a pool's balance yet has it
replaced by the newer one, moved to the end so it stays after the events it follows. So
balances take at most one slot per pool. Event frames cannot be dropped: when a
subscriber has `backlog_max` unsent events it is marked overflowed and its task closes
the socket (code 4409, docs/feed.md); the client resumes from the last sequence it saw.

Ordering against the snapshot. A subscriber registers before it reads its snapshot, so
nothing committed after the snapshot can be missed, and batches committed just before it
may land in the backlog too. The snapshot reports the customer's event sequence and
operation counter at the read; the sender drops events at or below the first and balance
frames at or below the second (engine.core.effects.Effects.seq/op).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import anyio
import msgspec
import structlog

from engine.core.commands import BalanceView, UsageView
from engine.core.effects import DomainEvent, Effects
from engine.core.usage import usage_view
from engine.core.views import pool_view
from gateway.wire import amount_out, iso
from webhooks.events import event_data

__all__ = ["Hub", "LimitReached", "Subscriber", "Watcher", "balance_json", "event_frame"]

log = structlog.get_logger("creditd.feed")
_encode = msgspec.json.Encoder(decimal_format="number").encode


def views_of(fx: Effects, now_ms: int) -> tuple[list[BalanceView], list[UsageView]]:
    """What subscribers see of a batch's pools and usage counters: views taken now (the
    live objects change with the next batch)."""
    return ([pool_view(p, now_ms) for p in fx.pools.values()],
            [usage_view(c) for c in fx.usage.values()])


class LimitReached(Exception):
    """No room for another subscriber; the message says which limit."""


def balance_json(b: BalanceView) -> dict[str, Any]:
    return {
        "currencyId": b.currency_id,
        "resourceId": b.resource_id,
        "currentBalance": amount_out(b.current_balance),
        "totalGranted": amount_out(b.total_granted),
        "totalConsumed": amount_out(b.total_consumed),
        "reserved": amount_out(b.reserved),
        "hardLimit": b.hard_limit,
        "lowBalanceAt": None if b.low_line is None else amount_out(b.low_line),
        "timestamp": iso(b.timestamp),
    }


def event_frame(customer_id: str, e: DomainEvent) -> str:
    return _encode({"type": e.type.value, "seq": e.seq, "timestamp": iso(e.timestamp),
                    "data": event_data(customer_id, e)}).decode()


class Subscriber:
    """One websocket's view of one customer's feed, optionally narrowed to a currency
    and/or a resource (`resource_id` None with `match_resource` False: every resource)."""

    __slots__ = (
        "backlog",
        "backlog_max",
        "currency_id",
        "engine_customer_id",
        "events",
        "expired",
        "expires_at_ms",
        "heartbeat_due",
        "match_resource",
        "on_overflow",
        "op_floor",
        "overflowed",
        "pong_due",
        "quiet_since",
        "resource_id",
        "seq_floor",
        "wake",
    )

    def __init__(self, engine_customer_id: str, *, currency_id: str | None,
                 resource_id: str | None, match_resource: bool, backlog_max: int) -> None:
        self.engine_customer_id = engine_customer_id
        self.currency_id = currency_id
        self.resource_id = resource_id
        self.match_resource = match_resource
        # key -> (seq or op, seq, frame text): events are keyed by their sequence number,
        # balances by ("b", currency, resource) so a newer one replaces an unsent one.
        self.backlog: OrderedDict[Any, tuple[int, int, str]] = OrderedDict()
        self.events = 0  # events in the backlog
        self.backlog_max = backlog_max
        self.wake = anyio.Event()
        self.overflowed = False
        self.seq_floor = -1  # set from the snapshot (see the module docstring)
        self.op_floor = -1
        self.on_overflow: Callable[[], None] | None = None
        self.pong_due = False  # the client sent a ping
        # Set by the hub's ticker (`Hub.tick`), which keeps time for every subscriber at
        # once: a timeout per subscriber per wake-up costs more than the frames themselves.
        self.expires_at_ms: int | None = None  # the token's expiry (wall clock)
        self.expired = False
        self.quiet_since = time.monotonic()  # when the last frame went out
        self.heartbeat_due = False

    def wants(self, currency_id: str, resource_id: str | None) -> bool:
        return ((self.currency_id is None or currency_id == self.currency_id)
                and (not self.match_resource or resource_id == self.resource_id))

    def offer_event(self, seq: int, frame: str) -> bool:
        """False when this event overflows the backlog (the subscriber is then closed)."""
        if self.overflowed:
            return True
        if self.events >= self.backlog_max:
            self.overflowed = True
            self.backlog.clear()
            self.wake.set()
            if self.on_overflow is not None:
                self.on_overflow()
            return False
        self.backlog[seq] = (seq, seq, frame)
        self.events += 1
        self.wake.set()
        return True

    def offer_balance(self, key: tuple[str, str, str | None], op: int, seq: int,
                      frame: str) -> None:
        if self.overflowed:
            return
        self.backlog.pop(key, None)
        self.backlog[key] = (op, seq, frame)
        self.wake.set()

    def take(self) -> list[tuple[int, str]]:
        """Everything unsent as (seq, frame), in order, less what the snapshot covered."""
        out: list[tuple[int, str]] = []
        seq_floor, op_floor = self.seq_floor, self.op_floor
        for key, (n, seq, frame) in self.backlog.items():
            if (n > op_floor) if type(key) is tuple else (n > seq_floor):
                out.append((seq, frame))
        self.backlog.clear()
        self.events = 0
        self.wake = anyio.Event()
        return out


class Watcher:
    """One environment-wide subscription (see the module docstring). `kinds` are what it
    wants: "balance" (customer id, BalanceView), "usage" (customer id, UsageView),
    "entitlements" (customer id) and "package" (the published package's facts)."""

    __slots__ = ("backlog", "backlog_max", "environment", "kinds", "on_overflow",
                 "overflowed", "wake")

    def __init__(self, environment: str, kinds: frozenset[str], backlog_max: int) -> None:
        self.environment = environment
        self.kinds = kinds
        self.backlog: OrderedDict[Any, Any] = OrderedDict()
        self.backlog_max = backlog_max
        self.wake = anyio.Event()
        self.overflowed = False
        self.on_overflow: Callable[[], None] | None = None

    def offer(self, key: Any, item: Any) -> bool:
        """False when this item overflows the backlog (the watcher is then closed)."""
        if self.overflowed:
            return True
        backlog = self.backlog
        if backlog.pop(key, None) is None and len(backlog) >= self.backlog_max:
            self.overflowed = True
            backlog.clear()
            self.wake.set()
            if self.on_overflow is not None:
                self.on_overflow()
            return False
        backlog[key] = item  # moved to the end: after what it follows
        self.wake.set()
        return True

    def take(self) -> list[tuple[Any, Any]]:
        """Everything unsent as (key, item), oldest first."""
        out = list(self.backlog.items())
        self.backlog.clear()
        self.wake = anyio.Event()
        return out


class Hub:
    def __init__(self, *, subscribers_max: int, customer_subscribers_max: int,
                 backlog_max: int, now_ms: Callable[[], int]) -> None:
        self.subscribers_max = subscribers_max
        self.customer_subscribers_max = customer_subscribers_max
        self.backlog_max = backlog_max
        self._now_ms = now_ms
        self._by_customer: dict[str, list[Subscriber]] = {}
        self._by_environment: dict[str, list[Watcher]] = {}
        self.count = 0
        self.overflows = 0
        self.frames_offered = 0
        # Called with (key, True) when a customer (its engine id) or an environment
        # ("@" + name) gets its first subscriber here, (key, False) when its last one
        # leaves: a cluster node tells its peers which commits to send it.
        self.on_interest: Callable[[str, bool], None] | None = None

    def interests(self) -> list[str]:
        """The customers and environments ("@" + name) with subscribers here."""
        return [*self._by_customer, *("@" + env for env in self._by_environment)]

    def subscribed(self, engine_customer_id: str) -> bool:
        return engine_customer_id in self._by_customer

    def seq_floor(self, engine_customer_id: str) -> int | None:
        """The lowest snapshot sequence number of the customer's subscribers (None: no
        subscriber has its snapshot yet): where a catch-up from the store starts."""
        floors = [s.seq_floor for s in self._by_customer.get(engine_customer_id, ())
                  if s.seq_floor >= 0]
        return min(floors) if floors else None

    def _interest(self, key: str, present: bool) -> None:
        if self.on_interest is not None:
            self.on_interest(key, present)

    def subscribe(self, engine_customer_id: str, *, currency_id: str | None = None,
                  resource_id: str | None = None, match_resource: bool = False) -> Subscriber:
        subs = self._by_customer.get(engine_customer_id)
        if self.count >= self.subscribers_max:
            raise LimitReached(f"the server has {self.subscribers_max} subscribers, its limit")
        if subs is not None and len(subs) >= self.customer_subscribers_max:
            raise LimitReached(f"this customer has {self.customer_subscribers_max} "
                               "subscribers, the limit per customer")
        sub = Subscriber(engine_customer_id, currency_id=currency_id, resource_id=resource_id,
                         match_resource=match_resource, backlog_max=self.backlog_max)
        if subs is None:
            self._by_customer[engine_customer_id] = [sub]
            self._interest(engine_customer_id, True)
        else:
            subs.append(sub)
        self.count += 1
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        subs = self._by_customer.get(sub.engine_customer_id)
        if subs is None or sub not in subs:
            return
        subs.remove(sub)
        self.count -= 1
        if not subs:
            del self._by_customer[sub.engine_customer_id]
            self._interest(sub.engine_customer_id, False)

    def watch(self, environment: str, kinds: frozenset[str]) -> Watcher:
        """A watcher of every customer of `environment` (LimitReached past the server's
        subscriber limit, which watchers count against too)."""
        if self.count >= self.subscribers_max:
            raise LimitReached(f"the server has {self.subscribers_max} subscribers, its limit")
        watcher = Watcher(environment, kinds, self.backlog_max)
        if environment not in self._by_environment:
            self._interest("@" + environment, True)
        self._by_environment.setdefault(environment, []).append(watcher)
        self.count += 1
        return watcher

    def unwatch(self, watcher: Watcher) -> None:
        watchers = self._by_environment.get(watcher.environment)
        if watchers is None or watcher not in watchers:
            return
        watchers.remove(watcher)
        self.count -= 1
        if not watchers:
            del self._by_environment[watcher.environment]
            self._interest("@" + watcher.environment, False)

    def _notify(self, environment: str, kind: str, key: Any, item: Any) -> None:
        for watcher in self._by_environment.get(environment, ()):
            if kind in watcher.kinds and not watcher.offer(key, item):
                self.overflows += 1

    def entitlements_changed(self, environment: str, customer_id: str) -> None:
        """The domain's notice that a customer's entitlements changed outside the engine
        (a subscription or promotion written: `Domain.on_entitlements_changed`)."""
        self._notify(environment, "entitlements", ("e", customer_id), customer_id)

    def package_published(self, environment: str, package: dict[str, Any]) -> None:
        """A plan or add-on version was published: `package` is Stigg's PackagePublished
        without the environment (packageType, packageRefId, packageVersion,
        migrationType, accountId)."""
        self._notify(environment, "package",
                     ("p", package["packageType"], package["packageRefId"]), package)

    def publish(self, engine_customer_id: str, fx: Effects) -> None:
        """The runtime's commit hook. Must not raise: it runs on the engine's worker."""
        subs = self._by_customer.get(engine_customer_id)
        watchers = self._by_environment.get(engine_customer_id.partition("/")[0]) \
            if self._by_environment else None
        if not subs and not watchers:
            return
        try:
            pools, usage = views_of(fx, self._now_ms())
            self._publish_views(engine_customer_id, fx.seq, fx.op, fx.events, pools, usage,
                                subs, watchers)
        except Exception:  # a bug here must cost the feed, never the engine
            log.exception("feed: publishing a committed batch failed",
                          customer=engine_customer_id)

    def publish_views(self, engine_customer_id: str, seq: int, op: int,
                      events: list[DomainEvent], pools: list[BalanceView],
                      usage: list[UsageView]) -> None:
        """`publish` of a batch committed by another node of a cluster, as views
        (`views_of`): what its owner sent here because subscribers are here."""
        subs = self._by_customer.get(engine_customer_id)
        watchers = self._by_environment.get(engine_customer_id.partition("/")[0])
        if subs or watchers:
            self._publish_views(engine_customer_id, seq, op, events, pools, usage, subs,
                                watchers)

    def _publish_views(self, engine_customer_id: str, seq: int, op: int,
                       events: list[DomainEvent], pools: list[BalanceView],
                       usage: list[UsageView], subs: list[Subscriber] | None,
                       watchers: list[Watcher] | None) -> None:
        if subs:
            self._publish(engine_customer_id, seq, op, events, pools, subs)
        if watchers:
            self._publish_watched(engine_customer_id, pools, usage, watchers)

    def _publish_watched(self, engine_customer_id: str, pools: list[BalanceView],
                         usage: list[UsageView], watchers: list[Watcher]) -> None:
        customer_id = engine_customer_id.partition("/")[2]
        items: list[tuple[str, Any, Any]] = []
        items += [("balance", ("b", customer_id, p.currency_id, p.resource_id),
                   (customer_id, p)) for p in pools]
        items += [("usage", ("u", customer_id, c.feature_id, c.resource_id),
                   (customer_id, c)) for c in usage]
        for watcher in watchers:
            for kind, key, item in items:
                if kind in watcher.kinds:
                    if not watcher.offer(key, item):
                        self.overflows += 1
                    self.frames_offered += 1

    def _publish(self, engine_customer_id: str, seq: int, op: int, events: list[DomainEvent],
                 pools: list[BalanceView], subs: list[Subscriber]) -> None:
        customer_id = engine_customer_id.partition("/")[2]
        for e in events:
            frame = event_frame(customer_id, e)
            for sub in subs:
                if sub.wants(e.currency_id, e.resource_id):
                    if not sub.offer_event(e.seq, frame):
                        self.overflows += 1
                    self.frames_offered += 1
        for pool in pools:
            frame = _encode({"type": "balance", "seq": seq, **balance_json(pool)}).decode()
            key = ("b", pool.currency_id, pool.resource_id)
            for sub in subs:
                if sub.wants(pool.currency_id, pool.resource_id):
                    sub.offer_balance(key, op, seq, frame)
                    self.frames_offered += 1

    def tick(self, now_wall_ms: int, now_monotonic: float, heartbeat_s: float) -> None:
        """Wake the subscribers whose token has expired or who have been quiet for a
        heartbeat period; the ticker (`run_ticker`) calls this a few times a period."""
        for subs in self._by_customer.values():
            for sub in subs:
                if sub.expires_at_ms is not None and now_wall_ms >= sub.expires_at_ms:
                    sub.expired = True
                    sub.wake.set()
                elif now_monotonic - sub.quiet_since >= heartbeat_s:
                    sub.heartbeat_due = True
                    sub.wake.set()

    async def run_ticker(self, heartbeat_s: float) -> None:
        period = min(1.0, heartbeat_s / 2)
        while True:
            await anyio.sleep(period)
            self.tick(self._now_ms(), time.monotonic(), heartbeat_s)

    def statistics(self) -> dict[str, int]:
        """Counts, and the unsent items of every subscriber and watcher (a walk over all
        of them, bounded by `subscribers_max`: for a scrape, not for a hot path)."""
        watchers = [w for ws in self._by_environment.values() for w in ws]
        return {"subscribers": self.count, "customers": len(self._by_customer),
                "environmentsWatched": len(self._by_environment),
                "overflows": self.overflows, "framesOffered": self.frames_offered,
                "watchers": len(watchers),
                "subscriberBacklog": sum(len(sub.backlog) for subs in self._by_customer.values()
                                         for sub in subs),
                "watcherBacklog": sum(len(w.backlog) for w in watchers)}
