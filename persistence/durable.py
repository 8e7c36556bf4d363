"""What both database stores share: group commit, loading, and the outbox sequence.

Group commit. `commit()` turns a batch's effects into a `Unit` of rows (synchronously, as
the store contract requires) and appends it to the batch being accumulated. One writer
task flushes batches one at a time, each in a single transaction: while a flush is in
flight the next batch accumulates, so under load every transaction carries many actors'
units. A unit is never split across transactions. Limits:

- `flush_rows_max` rows per transaction (a batch closes when it reaches this; the next
  unit starts a new one);
- a batch begun while the writer is idle closes at half the commands the engine has
  waiting (`demand`, which the runtime sets), so that two batches alternate: clients that
  each wait for their answer before sending again otherwise move in lockstep, all their
  units in one flush, the database idle while the actors apply the next round and the
  actors idle while it writes (spread over 10,000 customers, 64 clients on PostgreSQL:
  a flush of 64 units, then 4-5 ms with no flush; split, the two overlap, +20-37 %,
  docs/benchmarks.md);
- `backlog_rows_max` rows waiting in total; past it `commit()` blocks until the writer
  catches up (backpressure reaches the actors, whose mailboxes then fill and refuse with
  Overloaded — nothing grows without bound).

Gapless outbox. The single writer assigns outbox ids itself, in flush order, starting
from max(id)+1 read at start-up; after a failed flush (which may have committed even so,
if only its answer was lost) the next flush re-reads max(id) first. One
writer per database is what makes the order gapless in commit order; a second process
writing the same database would need a lock around the flush (scale-out, later).

Durability. `sync` (default): `commit()` returns when the transaction has committed, so
the runtime acknowledges only durable changes. `async`: `commit()` returns once the unit
is queued; a crash loses what was queued and not yet flushed (at most `backlog_rows_max`
rows, typically one flush, a few milliseconds). If a flush fails in async mode, every
queued unit is dropped and their customers are marked lost: their next commit fails with
StoreUnavailable, which makes the runtime reload them from what is durable.
"""

from __future__ import annotations

import secrets
import time
from bisect import bisect_left
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import Any, Literal

import anyio
import structlog
from anyio.abc import TaskGroup

from engine.core.effects import DomainEvent, Effects, IdempotencyRecord, LedgerEntry
from engine.core.model import CustomerState
from engine.core.replay import GrantRow, restore
from engine.core.usage import restore_usage
from engine.domain.stored import Promotion
from engine.runtime.errors import KeysRemembered, ShardMoved, StoreUnavailable
from persistence import analytics, pages, promotions, sql, subscriptions
from persistence.cluster import Leases, shard_of
from persistence.codec import (
    StoredCustomer,
    Unit,
    customer_from,
    entry_from,
    event_from,
    grant_from,
    key_from,
    key_period,
    make_unit,
    pool_from,
    reservation_from,
    stored_from,
)
from persistence.key_filter import SCHEME as KEY_FILTER_SCHEME
from persistence.key_filter import KeyFilter
from persistence.schema import LATEST_VERSION, SchemaTooNew

__all__ = ["DurableStore", "Durability", "OutboxRow", "FLUSH_SECONDS_BUCKETS",
           "FLUSH_UNITS_BUCKETS"]

# Upper bounds of the flush-time and flush-size distributions `statistics()` reports
# (counts per bucket, the last past every bound): what /metrics shows as the group
# commit's latency and size histograms. Units: actor batches (one customer's commands).
FLUSH_SECONDS_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25,
                         0.5, 1.0, 2.5, 10.0)
FLUSH_UNITS_BUCKETS = tuple(1 << n for n in range(14))  # 1, 2, 4, ... 8192

_KEY_UNITS = sql.KEY_UNITS
_COMPUTED = {"outbox", *_KEY_UNITS}  # rows the writer makes from a unit's (ids, split)

log = structlog.get_logger("creditd.store")

Durability = Literal["sync", "async"]
OutboxRow = tuple[int, str, DomainEvent]


class _Batch:
    __slots__ = ("units", "rows", "units_max", "done", "error", "customers", "checks",
                 "remembered", "fenced")

    def __init__(self, units_max: int | None = None) -> None:
        self.units: list[Unit] = []
        self.rows = 0
        self.units_max = units_max  # the batch closes at this many units (None: rows only)
        self.done = anyio.Event()
        self.error: StoreUnavailable | None = None
        self.customers: set[str] = set()
        # Per customer, the keys its unit applied as new (Store.commit's `new_keys`), to
        # check in the flush (or already being looked up: `checks_ahead`); and those the
        # check found remembered, whose customers' units were left out of it.
        self.checks: dict[str, _Lookup] = {}
        self.remembered: dict[str, list[IdempotencyRecord]] = {}
        # Customers whose units the cluster's fence left out: their shard's lease changed
        # hands since they were loaded (persistence/cluster.py).
        self.fenced: set[str] = set()


# Pairs of (customer, key) per lookup query.
LOOKUP_PAIRS_MAX = 512
# Rows per page when the key filter reads the key tables at start.
KEY_PAGE_ROWS = 10_000
# Bytes of the key filter's bits per saved row, and per transaction and copy when saving:
# a whole table (16 MiB by default) at once held the writer ~0.1 s and raised the server's
# and SQLite writer's resident memory by 48 MiB for a moment, and parts of 1 MiB left
# 6 MiB of them in the allocators' heaps (tests/gateway/test_soak.py); 256 KiB parts take
# 1.5-2.5 ms each, 0.1-0.16 s for a table, between flushes.
FILTER_PART_BYTES = 1 << 18


class _Lookup:
    __slots__ = ("customer_id", "keys", "done", "found", "error")

    def __init__(self, customer_id: str, keys: list[str]) -> None:
        self.customer_id = customer_id
        self.keys = keys
        self.done = anyio.Event()
        self.found: list[IdempotencyRecord] = []
        self.error: BaseException | None = None


class DurableStore:
    """Base of SQLiteStore and PostgresStore; subclasses provide the driver calls."""

    dialect: str = ""
    # Check the keys a unit applied as new with a lookup started as the unit is queued,
    # while the flush before it runs (PostgreSQL: a query on another pooled connection,
    # no thread), instead of in the flush itself (SQLite: a trip to a reader thread waits
    # for the GIL under load, so the writer checks on its own connection and trip).
    checks_ahead: bool = False

    def __init__(
        self,
        *,
        durability: Durability = "sync",
        flush_rows_max: int = 8192,
        backlog_rows_max: int = 131_072,
        key_filter_bytes: int = 32 << 20,
    ) -> None:
        assert durability in ("sync", "async")
        assert 0 < flush_rows_max <= backlog_rows_max
        self.durability = durability
        self.flush_rows_max = flush_rows_max
        self.backlog_rows_max = backlog_rows_max
        # The period each key generation table holds (persistence/sql.py); the writer
        # alone changes it.
        self._generations = [-1, -1]
        # Each generation's runs (persistence/sql.py, KEY_RUN_ROWS): how many tables it
        # has, which one is written, and how many keys that one holds.
        self._runs = [1, 1]
        self._run = [0, 0]
        self._run_rows = [0, 0]
        # Which keys were surely never written (persistence/key_filter.py): the keys a
        # commit applied as new that it does not hold need no check. 0 bytes: no filter.
        self.key_filter_bytes = key_filter_bytes
        self.key_filter: KeyFilter | None = None
        # Set once the read-back of the keys written before open is over (or there is no
        # filter): `key_filter.ready` says whether the filter holds them.
        self.keys_indexed = anyio.Event()
        # Generations whose filter bits are due to be saved (a new run started), and the
        # counts a restart's read-back is judged by: runs taken from saved bits, keys read.
        self._filter_saves: set[int] = set()
        self._filter_save_due = anyio.Event()
        self._filter_save_lock = anyio.Lock()
        self.key_filter_saves = 0
        self.key_filter_runs_restored = 0
        self.key_filter_keys_read = 0
        # Key lookups waiting for the reader (bounded: one per actor batch in flight).
        self._lookups: deque[_Lookup] = deque()
        self._lookup_work = anyio.Event()
        self._batches: deque[_Batch] = deque()
        self._backlog_rows = 0
        self._work = anyio.Event()
        self._space = anyio.Event()
        self._next_outbox_id = 1
        self._outbox_id_uncertain = False
        self._lost: set[str] = set()
        self._unflushed: dict[str, _Batch] = {}  # customer -> last batch holding its rows
        self._inflight: _Batch | None = None
        # How many commands the engine above has waiting for their answers (the runtime
        # sets it): half of them is where a batch begun while the writer idles closes.
        self.demand: Callable[[], int] | None = None
        self._tg: TaskGroup | None = None
        # A cluster node's leases (persistence/cluster.py), set before the store opens:
        # loads need the customer's shard held, flushes are fenced on its epoch, and the
        # key filter answers only for shards whose keys it read after taking them.
        self.fence: Leases | None = None
        # Called after every flush that wrote (a cluster node wakes its peers' readers).
        self.on_flushed: Callable[[], None] | None = None
        self.fenced = 0  # units left out by the fence
        self.flushes = 0
        self.flushed_units = 0
        self.flushed_rows = 0
        # Time spent, for `statistics()`: what a soak watches to see which part slows down.
        self.flush_s = 0.0
        self._flush_seconds = [0] * (len(FLUSH_SECONDS_BUCKETS) + 1)
        self._flush_units = [0] * (len(FLUSH_UNITS_BUCKETS) + 1)
        self.loads = 0
        self.load_s = 0.0
        self.lookups = 0  # queries (each for every lookup waiting: `_reader`)
        self.lookup_s = 0.0

    # -- driver hooks ---------------------------------------------------------------------

    async def _connect(self) -> None:
        raise NotImplementedError

    async def _opened(self) -> None:
        """After migrations, before the writer starts (a dialect reads what it needs)."""

    def _tasks(self) -> list[Callable[[], Awaitable[None]]]:
        """A dialect's own background tasks, run beside the writer while the store is open."""
        return []

    async def _disconnect(self) -> None:
        raise NotImplementedError

    async def _fetch(self, query: str, *params: Any) -> Sequence[Sequence[Any]]:
        raise NotImplementedError

    async def execute(self, query: str, *params: Any) -> int:
        """One statement outside the group commit (catalog writes: rare, admin-paced).
        Returns the number of rows it changed."""
        raise NotImplementedError

    async def fetch(self, query: str, *params: Any) -> Sequence[Sequence[Any]]:
        try:
            return await self._fetch(query, *params)
        except Exception as exc:
            raise self._translate(exc) from exc

    async def transact(self, steps: Sequence[tuple[str, Sequence[Sequence[Any]]]]) -> None:
        """Several statements in one transaction, outside the group commit: each statement
        runs once per parameter row (an executemany), and either every row of every
        statement applies or none does. For writers that must move two things together,
        such as the webhook relay's cursor and the deliveries it created. Statements with
        no rows are skipped."""
        steps = [(query, rows) for query, rows in steps if rows]
        if not steps:
            return
        try:
            await self._transact(steps)
        except Exception as exc:
            raise self._translate(exc) from exc

    async def _transact(self, steps: list[tuple[str, Sequence[Sequence[Any]]]]) -> None:
        raise NotImplementedError

    async def _write(self, rows: dict[str, list[tuple]]) -> None:
        """Write every table's rows (by `sql.Write.unit`) in one transaction."""
        raise NotImplementedError

    async def _rotate(self, generation: int, period: int, tables: list[str]) -> None:
        """Empty a key generation's `tables` and record the period it holds from now on
        and its first run as the one written, in one transaction."""
        raise NotImplementedError

    async def _start_run(self, generation: int, run: int, create: list[str]) -> None:
        """Record `run` as the generation's run written from now on (and `run + 1` runs,
        if more than it had), running the `create` statements first, in one
        transaction."""
        raise NotImplementedError

    async def _count(self, table: str) -> int:
        (row,) = await self._fetch(f"SELECT count(*) FROM {table}")
        return int(row[0])

    async def _new_number(self) -> int:
        """A number for a customer the database has no row for."""
        raise NotImplementedError

    async def _migrate(self) -> int:
        """Apply pending migrations; return the schema version now in force."""
        raise NotImplementedError

    def _unavailable(self, exc: BaseException) -> StoreUnavailable | None:
        """Translate a driver error into StoreUnavailable, or None if it is a bug."""
        raise NotImplementedError

    # -- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> DurableStore:
        await self._connect()
        try:
            version = await self._migrate()
            if version > LATEST_VERSION:
                raise SchemaTooNew(
                    f"the database schema is version {version}, newer than this creditd "
                    f"understands ({LATEST_VERSION}); upgrade creditd or use another database"
                )
            (row,) = await self._fetch(sql.MAX_OUTBOX_ID)
            for generation, period, runs, run in await self._fetch(
                    sql.SELECT_KEY_GENERATIONS):
                g = int(generation)
                self._generations[g], self._runs[g], self._run[g] = (
                    int(period), int(runs), int(run))
                # At most a run's worth (a week's, for the first run of a database
                # from before runs).
                self._run_rows[g] = await self._count(sql.key_table(g, self._run[g]))
            await self._opened()
        except BaseException:
            # A store that failed to open must not keep its connections open (a pool, or
            # SQLite connections holding the file).
            with anyio.CancelScope(shield=True):
                await self._disconnect()
            raise
        self._next_outbox_id = int(row[0]) + 1
        # A fresh filter each time the store opens: keys may have been written meanwhile.
        # Its positions are keyed with the database's own secret, the same in every
        # process, so that saved bits can be taken back (persistence/key_filter.py).
        self.key_filter = None
        if self.key_filter_bytes > 0:
            try:
                salt = await self.server_secret("key_filter", secrets.token_hex(32),
                                                int(time.time() * 1000))
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await self._disconnect()
                raise
            self.key_filter = KeyFilter(self.key_filter_bytes, bytes.fromhex(salt))
        self.keys_indexed = anyio.Event()
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._tg.start_soon(self._writer)
        self._tg.start_soon(self._reader)
        for task in self._tasks():
            self._tg.start_soon(task)
        if self.key_filter is not None:
            self._tg.start_soon(self._filter_saver)
        if self.fence is None:
            self._tg.start_soon(self._index_keys)
        else:
            # A cluster node reads the keys back per shard it takes (`reindex_keys`).
            if self.key_filter is not None:
                self.key_filter.ready = True
            self.keys_indexed.set()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Flush what is queued before closing (async mode relies on this for a clean stop).
        with anyio.move_on_after(10):
            while self._batches or self._inflight is not None:
                last = self._batches[-1] if self._batches else self._inflight
                assert last is not None
                await last.done.wait()
        # A run started since the last save: save its generation's bits now, so that the
        # next start reads back only the run being written.
        with anyio.move_on_after(10):
            await self._save_filters()
        assert self._tg is not None
        self._tg.cancel_scope.cancel()
        try:
            await self._tg.__aexit__(exc_type, exc, tb)
        finally:
            while self._lookups:  # never to be run: their callers must not wait forever
                request = self._lookups.popleft()
                request.error = StoreUnavailable("the store closed before this lookup")
                request.done.set()
            # Whatever ends the store, its connections close (a pool left open, or SQLite
            # connections holding the file).
            with anyio.CancelScope(shield=True):
                await self._disconnect()

    # -- the engine seam ------------------------------------------------------------------

    def statistics(self) -> dict[str, int | float | bool]:
        """Counters since start: flushes (transactions), the units and rows they carried
        and their time; loads and key lookup queries and their time; rows waiting."""
        return {"flushes": self.flushes, "flushed_units": self.flushed_units,
                "flushed_rows": self.flushed_rows, "flush_s": round(self.flush_s, 3),
                "loads": self.loads, "load_s": round(self.load_s, 3),
                "lookups": self.lookups, "lookup_s": round(self.lookup_s, 3),
                "backlog_rows": self._backlog_rows,
                # The newest outbox id handed out: the webhook relay's cursor trails it.
                "outbox_last_id": self._next_outbox_id - 1,
                "flush_seconds_buckets": tuple(self._flush_seconds),
                "flush_units_buckets": tuple(self._flush_units),
                **(self._filter_statistics() if self.key_filter is not None else {})}

    def _filter_statistics(self) -> dict[str, int | bool]:
        assert self.key_filter is not None
        stats = self.key_filter.statistics()
        if self.fence is not None:  # a node's filter answers per shard
            stats["key_filter_ready"] = self.fence.trusts_held_shards()
        return {**stats, "key_filter_saves": self.key_filter_saves,
                "key_filter_runs_restored": self.key_filter_runs_restored,
                "key_filter_keys_read": self.key_filter_keys_read}

    async def load(self, customer_id: str) -> CustomerState:
        epoch = None
        if self.fence is not None:
            epoch = self.fence.epoch_if_held(shard_of(customer_id))
            if epoch is None:
                raise ShardMoved(f"customer {customer_id!r} is not owned by this node")
        await self._written(customer_id)
        self._lost.discard(customer_id)
        self.loads += 1
        started = time.perf_counter()
        try:
            state = await self._load(customer_id)
        finally:
            self.load_s += time.perf_counter() - started
        state.stored.epoch = epoch
        return state

    async def _load(self, customer_id: str) -> CustomerState:
        try:
            customer = await self._fetch(sql.SELECT_CUSTOMER, customer_id)
            if not customer:
                state = CustomerState(customer_id)
                state.stored = StoredCustomer(await self._new_number(), None)
                return state
            grants = await self._fetch(sql.SELECT_GRANTS, customer_id)
            reservations = await self._fetch(sql.SELECT_RESERVATIONS, customer_id)
            pools = await self._fetch(sql.SELECT_POOLS, customer_id)
            counters = await self._fetch(sql.SELECT_USAGE, customer_id)
            uniques = await self._fetch(sql.SELECT_UNIQUES, customer_id) if any(
                r[4] == "UNIQUE" for r in counters) else []
        except Exception as exc:
            raise self._translate(exc) from exc
        state = restore(
            customer_from(customer[0]),
            [grant_from(r) for r in grants],
            [reservation_from(r) for r in reservations],
            [pool_from(r) for r in pools],
        )
        restore_usage(state, [(r[1], r[3], r[4], r[5], r[6], r[7], r[8], r[9])
                              for r in counters],
                      [(r[0], r[1] or None, r[2]) for r in uniques])
        state.stored = stored = stored_from(customer[0])
        # Remembered keys are not loaded: the runtime looks up the ones a batch names
        # (memory keeps recent ones within its budget). None to look up once both key
        # generation tables were emptied after the customer's last key.
        state.keys_complete = (stored.key_period is None
                               or stored.key_period < min(self._generations))
        return state

    async def commit(self, customer_id: str, state: CustomerState, fx: Effects,
                     new_keys: Sequence[str] = ()) -> None:
        """Queue the batch's rows for the writer and, in sync durability, wait until they
        are written. Keys in `new_keys` are checked by the writer in the flush that
        writes the unit (`_write_checked`), or looked up from here on while the flush
        before it runs (`checks_ahead`): found ones leave the unit out and raise
        KeysRemembered (the contract in engine/runtime/store.py). In async durability,
        which returns before the write, and for a batch with nothing to write, they are
        looked up first."""
        if customer_id in self._lost:
            raise StoreUnavailable("earlier writes for this customer were lost; reloading",
                                   retry_after_s=0.1)
        unit = make_unit(customer_id, state, fx) if fx else None  # before any await
        if new_keys and unit is not None and self.key_filter is not None and (
                self.durability == "sync") and self._filter_answers(customer_id):
            # The customer's earlier commits are written (sync: each waited for its
            # flush), so the filter holds their keys. Async durability looks up first,
            # after its earlier writes are in (`lookup_keys`).
            new_keys = self.key_filter.unknown(customer_id, list(new_keys))
        if new_keys and (unit is None or self.durability == "async"):
            found = await self.lookup_keys(customer_id, list(new_keys))
            if found:
                raise KeysRemembered(found)
            new_keys = ()
        if unit is None:
            return
        while self._backlog_rows >= self.backlog_rows_max:
            self._space = anyio.Event() if self._space.is_set() else self._space
            await self._space.wait()
        batch = self._batches[-1] if self._batches else None
        if batch is None or batch.rows >= self.flush_rows_max or (
                batch.units_max is not None and len(batch.units) >= batch.units_max):
            batch = _Batch(self._units_max())
            self._batches.append(batch)
        batch.units.append(unit)
        batch.rows += unit.rows
        batch.customers.add(customer_id)
        self._backlog_rows += unit.rows
        self._unflushed[customer_id] = batch
        if new_keys:
            check = batch.checks[customer_id] = _Lookup(customer_id, list(new_keys))
            if self.checks_ahead:
                self._lookups.append(check)
                self._lookup_work.set()
        self._work.set()
        if self.durability == "async":
            return
        await batch.done.wait()
        if batch.error is not None:
            raise batch.error
        if customer_id in batch.fenced:
            raise ShardMoved(f"customer {customer_id!r} moved to another node before its "
                             "changes were written; nothing was applied")
        if customer_id in batch.remembered:
            raise KeysRemembered(batch.remembered[customer_id])
        if customer_id in batch.checks and batch.checks[customer_id].error is not None:
            raise self._translate(batch.checks[customer_id].error)

    async def _written(self, customer_id: str) -> None:
        """Wait until what was committed for the customer is in the database (async mode
        returns from `commit()` before): reads of its rows must see its own writes."""
        pending = self._unflushed.get(customer_id)
        if pending is not None:
            await pending.done.wait()

    async def lookup_keys(self, customer_id: str, keys: list[str]) -> list[IdempotencyRecord]:
        """Remembered keys among `keys` (for customers whose keys are not all in memory).

        Lookups are grouped like commits: the ones waiting while a lookup is in flight go
        to the database together, in one query (`_reader`). Under load every batch of a
        customer whose keys memory has forgotten looks its keys up; a trip per batch
        queued them behind each other (3 ms each at 1,700 lookups/s on SQLite, against
        1.5 ms per query of ~10 batches grouped)."""
        await self._written(customer_id)
        if self.key_filter is not None and self._filter_answers(customer_id):
            keys = self.key_filter.unknown(customer_id, keys)
            if not keys:
                return []
        request = _Lookup(customer_id, keys)
        self._lookups.append(request)
        self._lookup_work.set()
        await request.done.wait()
        if request.error is not None:
            raise request.error
        return request.found

    async def _reader(self) -> None:
        """Runs the waiting key lookups, at most LOOKUP_PAIRS_MAX pairs per query."""
        while True:
            while not self._lookups:
                self._lookup_work = anyio.Event()
                await self._lookup_work.wait()
            group: list[_Lookup] = []
            pairs: list[tuple[str, str]] = []
            while self._lookups and (not group or len(pairs) + len(self._lookups[0].keys)
                                     <= LOOKUP_PAIRS_MAX):
                request = self._lookups.popleft()
                group.append(request)
                pairs += [(request.customer_id, key) for key in request.keys]
            started = time.perf_counter()
            try:
                rows = []
                for i in range(0, len(pairs), LOOKUP_PAIRS_MAX):
                    rows += await self._fetch_keys(pairs[i:i + LOOKUP_PAIRS_MAX])
                    self.lookups += 1
                by_customer: dict[str, list[IdempotencyRecord]] = {}
                for r in rows:
                    by_customer.setdefault(r[0], []).append(key_from(r))
                for request in group:
                    request.found = by_customer.get(request.customer_id, [])
            except Exception as exc:
                try:
                    error = self._translate(exc)
                except Exception as bug:  # noqa: BLE001 - handed to the callers, who raise it
                    error = bug
                for request in group:
                    request.error = error
            except BaseException:  # cancelled: the store is closing
                for request in group:
                    request.error = StoreUnavailable("the store closed before this lookup")
                raise
            finally:
                self.lookup_s += time.perf_counter() - started
                for request in group:
                    request.done.set()

    async def _fetch_keys(self, pairs: list[tuple[str, str]]) -> Sequence[Sequence[Any]]:
        """Rows of the keys among (customer id, key) `pairs`, customer id first."""
        raise NotImplementedError

    def _filter_answers(self, customer_id: str) -> bool:
        """Whether the key filter may say a key of this customer was never written: always
        for one process; in a cluster, only for shards whose keys it read after taking
        them (their earlier owners wrote keys it never saw)."""
        fence = self.fence
        return fence is None or shard_of(customer_id) in fence.trusted

    async def reindex_keys(self, shards: dict[int, int]) -> None:
        """Read every key table into the filter, then trust it for `shards` (shard ->
        epoch) still held at those epochs: their earlier owners' keys were all committed
        before this node took them (the takeover waits for a fenced flush in flight), so
        a read that starts after taking them sees every one."""
        fence = self.fence
        if self.key_filter is None or fence is None:
            return
        # Saved bits hold every key of the runs they name (only a node holding every key
        # saves them, `_may_save_filter`), whoever saved them: take them, read the rest.
        # The generations as the database has them now: a stale view would skip runs that
        # another node's rotation has filled again since.
        await self.refresh_key_generations()
        periods = list(self._generations)
        await self._read_keys(await self._restore_filter())
        await self.refresh_key_generations()
        if self._generations != periods:
            await self._read_keys()  # rotated meanwhile: every run of the new period
        fence.trusted |= {s for s, e in shards.items() if fence.current(s, e)}
        if fence.trusts_every_shard():
            self._due_filter_save(*range(len(sql.KEY_TABLES)))

    async def _read_keys(self, first_runs: Sequence[int] = (0, 0)) -> None:
        """Add every key of every run there is now, from each generation's run
        `first_runs[generation]` on, to the key filter (later runs hold only keys written
        since, which the writer added)."""
        filt = self.key_filter
        assert filt is not None
        for generation in range(len(sql.KEY_TABLES)):
            def take(page: Sequence[Sequence[Any]], generation: int = generation) -> None:
                for row in page:
                    filt.add(generation, row[0], row[1])
                self.key_filter_keys_read += len(page)

            for table in self._tables(generation)[first_runs[generation]:]:
                await self._scan_keys(table, take)

    async def refresh_key_generations(self) -> None:
        """Adopt what other nodes changed in the key generations (a rotation, new runs):
        before serving shards taken over, whose keys lookups must find in every run."""
        self._adopt_generations(await self.fetch(sql.SELECT_KEY_GENERATIONS))

    def _adopt_generations(self, rows: Sequence[Sequence[Any]]) -> None:
        for generation, period, runs, run in rows:
            g = int(generation)
            if int(period) != self._generations[g]:
                # Rotated by another node: its runs start again from the first.
                self._generations[g] = int(period)
                self._run[g] = self._run_rows[g] = 0
            self._runs[g] = max(self._runs[g], int(runs))
            if int(run) > self._run[g]:
                self._run[g], self._run_rows[g] = int(run), 0

    async def _index_keys(self) -> None:
        """Read the keys written before the store opened into the key filter, then mark
        it ready. The writer adds what it writes from the start, so whatever this read's
        snapshot misses, the filter holds already. Retried while the database is away; a
        bug leaves the filter unready (every key checked, as without it) and is logged."""
        filt = self.key_filter
        if filt is None:
            self.keys_indexed.set()
            return
        delay = 1.0
        while True:
            try:
                await self._read_keys(await self._restore_filter())
                break
            except Exception as exc:  # noqa: BLE001 - sorted here: outage or bug
                if self._unavailable(exc) is None:
                    log.error("key filter not built; every forgotten key is checked",
                              error=repr(exc))
                    self.keys_indexed.set()
                    return
                # The database is away: try again, less often the longer it stays away.
                await anyio.sleep(delay)
                delay = min(delay * 2, 60.0)
        filt.ready = True
        self.keys_indexed.set()
        # Every run before each generation's current one is in the filter now: save them,
        # so that the next start need not read them again.
        self._due_filter_save(*range(len(sql.KEY_TABLES)))

    async def _restore_filter(self) -> list[int]:
        """Take back each generation's saved filter bits when they are whole, of its
        current period and of this filter's size and scheme; the runs they hold, which
        need no reading back."""
        filt = self.key_filter
        assert filt is not None
        covered = [0] * len(sql.KEY_TABLES)
        for g, table in enumerate(sql.KEY_FILTER_TABLES):
            parts = await self._fetch(
                f"SELECT part, period, runs, scheme, length(bits) FROM {table} ORDER BY part")
            runs = _whole_filter(parts, self._generations[g], filt.table_bytes())
            if runs is None:
                continue
            offset = 0
            for part, *_, size in parts:
                rows = await self._fetch(
                    f"SELECT period, runs, bits FROM {table} WHERE part = ?", part)
                # In a cluster another node may be saving meanwhile: a part of a later
                # save of the period holds every key of at least as many runs (any
                # saver held every key), a missing one or one of another period none.
                if not rows or int(rows[0][0]) != self._generations[g] or int(
                        rows[0][1]) < runs or len(rows[0][2]) != int(size):
                    break  # the bits taken so far are extra bits, never wrong ones
                filt.restore_part(g, offset, bytes(rows[0][2]))
                offset += int(size)
            else:
                covered[g] = min(runs, self._runs[g])
        self.key_filter_runs_restored = sum(covered)
        return covered

    def _due_filter_save(self, *generations: int) -> None:
        """Have the saver save these generations' bits (it does only while the filter
        holds every key, `_may_save_filter`)."""
        if self.key_filter is None:
            return
        self._filter_saves.update(generations)
        self._filter_save_due.set()

    def _may_save_filter(self) -> bool:
        """Whether the filter holds every key written so far: a lone process's once it
        has read back the keys from before it opened; a cluster node's only while it holds
        every shard and has read their keys (`Leases.trusts_every_shard`: no other node
        writes keys then). A node holding some shards holds only their keys, and keys
        written by others meanwhile, even to earlier runs (each node starts runs by its
        own count), are in no filter of its."""
        filt = self.key_filter
        if filt is None or not filt.ready:
            return False
        return self.fence is None or self.fence.trusts_every_shard()

    async def _filter_saver(self) -> None:
        while True:
            await self._filter_save_due.wait()
            self._filter_save_due = anyio.Event()
            await self._save_filters()

    async def _save_filters(self) -> None:
        """Save the bits of the generations due, each with the runs they hold: every run
        before the one being written (full runs are never written again, and the writer
        adds a key to the filter before writing it). A part at a time, each its own short
        transaction and copy (FILTER_PART_BYTES), so that neither the writer nor memory
        takes the whole table at once; parts copied later hold more keys, never fewer,
        unless the generation was emptied meanwhile, and then the parts saved are of a
        period it no longer holds, which no start takes. A failure is logged: the next
        start reads back more, no more."""
        filt = self.key_filter
        async with self._filter_save_lock:  # one save at a time: parts of one set
            while self._filter_saves:
                if not self._may_save_filter():
                    self._filter_saves.clear()  # due again when it holds every key
                    return
                g = self._filter_saves.pop()
                period, runs = self._generations[g], self._run[g]
                if runs == 0:
                    continue
                empty, insert = sql.save_key_filter(self.dialect, g)
                try:
                    for part, offset in enumerate(range(0, filt.table_bytes(),
                                                        FILTER_PART_BYTES)):
                        if self._generations[g] != period:
                            break  # emptied: what was saved is of the period before
                        row = (part, period, runs, KEY_FILTER_SCHEME,
                               filt.part(g, offset, FILTER_PART_BYTES))
                        await self.transact([(empty, [()])] * (part == 0) + [(insert, [row])])
                    else:
                        self.key_filter_saves += 1
                except Exception as exc:  # noqa: BLE001 - an outage or a bug: costs reads
                    log.warning("key filter not saved", generation=g, error=repr(exc))
                    return

    async def _scan_keys(self, table: str,
                         take: Callable[[Sequence[Sequence[Any]]], None]) -> None:
        """Hand the (customer id, key) pairs of a key table to `take`, a page at
        a time, each page its own short read: a read held open across the table would keep
        the writer from emptying it when a new week's first key arrives."""
        raise NotImplementedError

    async def _check(self, pairs: list[tuple[str, str]]) -> list[Sequence[Any]]:
        """Rows of the remembered keys among (customer id, key) `pairs`, customer id first,
        any number of pairs."""
        found: list[Sequence[Any]] = []
        for i in range(0, len(pairs), LOOKUP_PAIRS_MAX):
            found += await self._fetch_keys(pairs[i:i + LOOKUP_PAIRS_MAX])
        return found

    async def _write_checked(self, rows: dict[str, list[tuple]],
                             pairs: list[tuple[str, str]]) -> Sequence[Sequence[Any]]:
        """Write a flush's rows unless the store remembers any of the (customer id, key)
        `pairs`; returns the rows of those it remembers (as `_check`), having written
        nothing, or none. Only this writer adds keys, so the check and the write need not
        share a transaction; SQLite's does both in one trip to its thread."""
        found = await self._check(pairs)
        if not found:
            await self._write(rows)
        return found

    async def key_operations(self, customer_id: str, keys: list[str]) -> dict[str, int | None]:
        """The ledger operation (`op_seq`) each remembered key among `keys` made (None: it
        made none): how a key leads to its ledger entries while it is kept."""
        return {r.key: r.op_seq for r in await self.lookup_keys(customer_id, keys)}

    def stale(self, customer_id: str, state: CustomerState | None = None) -> bool:
        """True when writes acknowledged for this customer were lost (async durability, a
        failed flush), or, in a cluster, when the lease its state was loaded under lapsed
        or changed hands: the runtime must reload its state before serving it again, reads
        included (a load on a shard not held raises ShardMoved)."""
        if self.fence is not None and state is not None and not self.fence.current(
                shard_of(customer_id), state.stored.epoch):
            return True
        return customer_id in self._lost

    async def lookup_event_keys(self, customer_id: str, keys: list[str]) -> dict[str, int]:
        """Raw-event keys among `keys` that were accepted before -> their event time."""
        await self._written(customer_id)
        found: dict[str, int] = {}
        try:
            for i in range(0, len(keys), 500):
                chunk = keys[i : i + 500]
                query = sql.SELECT_EVENT_KEYS_IN.replace("{marks}", ", ".join("?" for _ in chunk))
                found.update((r[0], int(r[1])) for r in await self._fetch(query, customer_id,
                                                                          *chunk))
        except Exception as exc:
            raise self._translate(exc) from exc
        return found

    async def due_customers(self, until_ms: int, limit: int) -> list[tuple[str, int]]:
        rows = await self.fetch(sql.SELECT_DUE, until_ms, limit)
        return [(r[0], int(r[1])) for r in rows if self._owns(r[0])]

    def _owns(self, customer_id: str) -> bool:
        """Whether this process serves the customer (always, but in a cluster)."""
        return self.fence is None or self.fence.holds(shard_of(customer_id))

    # -- reading the log ------------------------------------------------------------------

    async def ledger(self, customer_id: str, after_seq: int = 0, limit: int = 1000) -> list[LedgerEntry]:
        rows = await self.fetch(sql.SELECT_LEDGER, customer_id, after_seq, limit)
        return [entry_from(r) for r in rows]

    # -- small reads and writes of the gateway -----------------------------------------

    async def ping(self) -> None:
        """A round trip to the database (readiness); raises if it cannot be reached."""
        await self._fetch("SELECT 1")

    async def server_secret(self, name: str, candidate: str, now_ms: int) -> str:
        """The database's secret called `name`, `candidate` if it has none yet. Two
        servers starting at once both insert; the conflict keeps the first, and both read
        it back."""
        await self.execute("INSERT INTO server_secrets (name, value, created_at) "
                           "VALUES (?, ?, ?) ON CONFLICT (name) DO NOTHING",
                           name, candidate, now_ms)
        rows = await self.fetch("SELECT value FROM server_secrets WHERE name = ?", name)
        return str(rows[0][0])

    async def plan_ids(self, environment: str, product_id: str | None) -> list[str]:
        """The ids of the environment's plans that are not archived (of one product if
        given), in creation order."""
        where = "environment = ? AND archived_at IS NULL AND status <> 'ARCHIVED'"
        params: list[Any] = [environment]
        if product_id is not None:
            where += " AND product_id = ?"
            params.append(product_id)
        rows = await self.fetch(f"SELECT id FROM plans WHERE {where} ORDER BY created_at, id",
                                *params)
        return [r[0] for r in rows]

    # -- subscriptions (persistence/subscriptions.py) ----------------------------------

    async def customer_subscriptions(self, environment: str,
                                     customer_id: str) -> list[dict[str, Any]]:
        """Every subscription of the customer as stored, oldest first."""
        return await subscriptions.of_customer(self, environment, customer_id)

    async def due_subscriptions(self, now: int, limit: int) -> list[tuple[str, str, str]]:
        """(environment, id, customer id) of the subscriptions due by `now`."""
        return await subscriptions.due(self, now, limit)

    async def next_subscription_due(self) -> int | None:
        return await subscriptions.next_due(self)

    async def running_subscriptions_on_plan(self, environment: str,
                                            plan_id: str) -> list[tuple[str, str]]:
        """(customer id, id) of the running or scheduled subscriptions to the plan."""
        return await subscriptions.running_on_plan(self, environment, plan_id)

    async def running_subscriptions(self, environment: str) -> list[dict[str, Any]]:
        """The environment's running or scheduled subscriptions, as stored."""
        return await subscriptions.running(self, environment)

    async def running_subscriptions_on_resource(self, environment: str, customer_id: str,
                                                resource_id: str) -> list[dict[str, Any]]:
        return await subscriptions.running_on_resource(self, environment, customer_id,
                                                       resource_id)

    # -- usage analytics (persistence/analytics.py) -------------------------------------

    async def credit_buckets(self, customer: str, start_hour: int, end: int,
                             currency_id: str | None, resource_id: str | None,
                             ) -> list[tuple[int, str | None, dict[str, Any], str, int, int]]:
        """(hour, feature, dimensions, currency, credits, events) of the hourly buckets
        of engine customer `customer` in [start_hour, end) that consumed credits."""
        return await analytics.credit_buckets(self, customer, start_hour, end, currency_id,
                                              resource_id)

    async def dimension_keys(self, customer: str) -> list[str]:
        """The dimension keys seen in the customer's usage, sorted."""
        return await analytics.dimension_keys(self, customer)

    async def usage_buckets(self, customer: str, feature_id: str, resource_id: str | None,
                            end: int) -> list[tuple[int, dict[str, Any], int]]:
        """(hour, dimensions, usage change) of the feature's hourly buckets before `end`."""
        return await analytics.usage_buckets(self, customer, feature_id, resource_id, end)

    # -- promotional entitlements (persistence/promotions.py) --------------------------

    async def promotions(self, environment: str, customer_id: str) -> list[Promotion]:
        """Every promotional entitlement of the customer, revoked ones included."""
        return await promotions.of_customer(self, environment, customer_id)

    async def promotion(self, environment: str, customer_id: str,
                        feature_id: str) -> Promotion | None:
        """The customer's promotion for the feature, unless revoked."""
        return await promotions.one(self, environment, customer_id, feature_id)

    async def save_promotions(self, environment: str, customer_id: str,
                              docs: list[Promotion], now: int) -> None:
        """Grant `docs`, replacing the customer's promotions for their features."""
        await promotions.save(self, environment, customer_id, docs, now)

    async def settled_promotion(self, environment: str, customer_id: str,
                                doc: Promotion) -> None:
        """Record that the usage `doc` counted was settled at its end by the clock."""
        await promotions.settled(self, environment, customer_id, doc)

    async def end_promotion(self, environment: str, customer_id: str, doc: Promotion,
                            now: int) -> bool:
        """Write `doc` as revoked at `now`; False if its row holds another grant by now."""
        return await promotions.end(self, environment, customer_id, doc, now)

    async def grant_customer(self, environment: str, grant_id: str) -> str | None:
        """The customer (engine id) owning grant `grant_id` in `environment`, or None."""
        try:
            return await pages.grant_customer(self, environment, grant_id)
        except Exception as exc:
            raise self._translate(exc) from exc

    async def grants_page(self, customer_id: str, *, currency_id: str | None,
                          resource_id: str | None, created: list[tuple[str, int]],
                          limit: int, after: str | None, before: str | None,
                          ) -> tuple[list[GrantRow], str | None, str | None]:
        """A page of the customer's grants in creation order, and the cursors of the next
        and previous pages (persistence/pages.py)."""
        rows, after_page, before_page = await pages.grants_page(
            self, customer_id, currency_id=currency_id, resource_id=resource_id,
            created=created, limit=limit, after=after, before=before)
        return [grant_from(r) for r in rows], after_page, before_page

    async def grants_count(self, customer_id: str, *, currency_id: str | None,
                           resource_id: str | None, created: list[tuple[str, int]]) -> int:
        """How many grants `grants_page` pages through with these filters."""
        return await pages.grants_count(self, customer_id, currency_id=currency_id,
                                        resource_id=resource_id, created=created)

    async def ledger_count(self, customer_id: str, *, event_types: Sequence[str] = (),
                           currency_id: str | None = None, resource_id: str | None = None,
                           reservation_id: str | None = None, since: int | None = None,
                           until: int | None = None) -> int:
        """How many ledger entries `ledger_page` pages through with these filters."""
        query = sql.select_ledger_count(kinds=len(event_types), currency=bool(currency_id),
                                        resource=bool(resource_id),
                                        reservation=bool(reservation_id),
                                        since=since is not None, until=until is not None)
        rows = await self.fetch(query, *_ledger_params(customer_id, event_types, currency_id,
                                                       resource_id, reservation_id, since,
                                                       until))
        return int(rows[0][0])

    async def ledger_page(self, customer_id: str, *, event_types: Sequence[str] = (),
                          currency_id: str | None = None, resource_id: str | None = None,
                          reservation_id: str | None = None, after: int | None = None,
                          before: int | None = None, limit: int = 100,
                          since: int | None = None, until: int | None = None,
                          ) -> list[LedgerEntry]:
        """A page of a customer's ledger, filtered (`since` inclusive, `until` exclusive,
        epoch ms): newest first, older than `after`; or, with `before`, the entries just
        newer than it, oldest first."""
        cursor = "after" if after is not None else "before" if before is not None else None
        query = sql.select_ledger_page(kinds=len(event_types), currency=bool(currency_id),
                                       resource=bool(resource_id),
                                       reservation=bool(reservation_id), cursor=cursor,
                                       since=since is not None, until=until is not None)
        params = _ledger_params(customer_id, event_types, currency_id, resource_id,
                                reservation_id, since, until)
        if cursor is not None:
            params.append(after if after is not None else before)
        rows = await self.fetch(query, *params, limit)
        return [entry_from(r) for r in rows]

    async def outbox_after(self, after_id: int, limit: int = 1000) -> list[OutboxRow]:
        rows = await self.fetch(sql.SELECT_OUTBOX_AFTER, after_id, limit)
        return [(int(r[0]), r[1], event_from(r[4])) for r in rows]

    async def outbox_newest(self) -> int:
        """The newest outbox id (0: none); every id up to it is committed."""
        (row,) = await self.fetch(sql.MAX_OUTBOX_ID)
        return int(row[0])

    async def pending_recharges(self) -> list[str]:
        """Customers with an auto-recharge in flight."""
        rows = await self.fetch(sql.SELECT_PENDING_RECHARGES)
        return [r[0] for r in rows if self._owns(r[0])]

    async def customer_events(self, customer_id: str, after_seq: int,
                              limit: int = 1000) -> list[DomainEvent]:
        """A customer's outbox events with sequence numbers above `after_seq`, in order
        (what the live feed replays on resume). Purged rows are simply absent: the caller
        checks the first sequence number for a gap."""
        rows = await self.fetch(sql.SELECT_CUSTOMER_OUTBOX, customer_id, after_seq, limit)
        return [event_from(r[1]) for r in rows]

    async def purge(self, before_ms: int, limit: int) -> int:
        """Forget idempotency keys and settled reservations older than `before_ms`, at
        most `limit` rows of each; returns how many rows went."""
        try:
            return await self._purge(before_ms, limit)
        except Exception as exc:
            raise self._translate(exc) from exc

    async def _purge(self, before_ms: int, limit: int) -> int:
        raise NotImplementedError

    # -- the writer -----------------------------------------------------------------------

    async def _writer(self) -> None:
        while True:
            while not self._batches:
                self._work = anyio.Event()
                await self._work.wait()
            # Taking the batch off the queue lets commit() start accumulating the next one
            # while this one is in flight.
            batch = self._inflight = self._batches.popleft()
            try:
                if self._outbox_id_uncertain:
                    # The last flush failed, and it may have committed anyway (the
                    # connection broke after the server committed, before its answer came):
                    # only the database knows where the outbox ends now.
                    (row,) = await self._fetch(sql.MAX_OUTBOX_ID)
                    self._next_outbox_id = int(row[0]) + 1
                    self._outbox_id_uncertain = False
                first = self._next_outbox_id
                started = time.perf_counter()
                rows = await self._flush(batch, first)
                took = time.perf_counter() - started
                self.flush_s += took
                self._flush_seconds[bisect_left(FLUSH_SECONDS_BUCKETS, took)] += 1
                self._flush_units[bisect_left(FLUSH_UNITS_BUCKETS, len(batch.units))] += 1
                if rows["outbox"]:  # (a fenced flush numbers from the database's end)
                    self._next_outbox_id = rows["outbox"][-1][0] + 1
                self.flushes += 1
                self.flushed_units += len(batch.units)
                self.flushed_rows += batch.rows
            except anyio.get_cancelled_exc_class():
                self._outbox_id_uncertain = True
                batch.error = StoreUnavailable("the store closed before this was written")
                self._settle(batch)
                raise
            except Exception as exc:
                self._outbox_id_uncertain = True
                batch.error = self._unavailable(exc) or StoreUnavailable(
                    f"the store failed to write: {exc!r}", retry_after_s=1.0)
                if self.durability == "async":
                    # Later units were built on state this flush lost: drop them too, and
                    # make their customers reload (see the module docstring).
                    while self._batches:
                        later = self._batches.popleft()
                        later.error = StoreUnavailable("dropped after an earlier flush failed")
                        self._settle(later)
            self._inflight = None
            self._settle(batch)
            if batch.error is None and batch.units and self.on_flushed is not None:
                self.on_flushed()

    def _units_max(self) -> int | None:
        """How many units a batch begun now may hold: half the engine's waiting commands
        if the writer is idle (nothing in flight, nothing queued), so that a round of
        clients in lockstep splits into two batches that alternate (see the module
        docstring); otherwise no limit but `flush_rows_max`, since a batch that gathers
        while a flush runs is the group commit working. Async durability answers before
        the flush, so its clients never wait on it in lockstep."""
        if (self.demand is None or self.durability != "sync" or self._inflight is not None
                or self._batches):
            return None
        return max(1, (self.demand() + 1) // 2)

    def _rows(self, units: list[Unit], first_outbox_id: int) -> dict[str, list[tuple]]:
        """A flush's rows per table (by `sql.Write.unit`): outbox rows numbered from
        `first_outbox_id` in unit order, key rows split by generation."""
        rows: dict[str, list[tuple]] = {w.unit: [] for w in sql.WRITES}
        events: list[tuple] = []
        for u in units:
            for w in sql.WRITES:
                if w.unit not in _COMPUTED:
                    rows[w.unit] += getattr(u, w.unit)
            events += u.events
            for key in u.keys:
                rows[_KEY_UNITS[key_period(key[2]) % 2]].append(key)
        rows["outbox"] = [(first_outbox_id + i, *e) for i, e in enumerate(events)]
        return rows

    async def _flush(self, batch: _Batch, first_outbox_id: int) -> dict[str, list[tuple]]:
        """Write a batch's units, but for those of customers whose keys applied as new
        (`batch.checks`) the store remembers: those it leaves out and lists in
        `batch.remembered`. Returns the rows written."""
        pairs: list[tuple[str, str]] = []
        if self.checks_ahead:
            await self._leave_out_ahead(batch)
        else:
            pairs = [(cid, key) for cid, check in batch.checks.items() for key in check.keys]
        rows = self._rows(batch.units, first_outbox_id)
        rotations = self._rotations(rows)
        if pairs and rotations:
            # Emptying a generation table forgets keys: check before (once a week).
            if self._leave_out(batch, await self._check(pairs)):
                rows = self._rows(batch.units, first_outbox_id)
                rotations = self._rotations(rows)
            pairs = []
        for generation, period in rotations:
            await self._rotate(generation, period, self._tables(generation))
            self._generations[generation] = period
            self._run[generation] = self._run_rows[generation] = 0
            if self.key_filter is not None:
                self.key_filter.clear(generation)
        await self._next_runs(rows)
        if self.key_filter is not None:
            # Before the write: no key is durable before the filter holds it. (Keys of a
            # unit left out below stay in it: a false positive costs a check, no more.)
            add = self.key_filter.add
            for u in batch.units:
                for key in u.keys:
                    add(key_period(key[2]) % 2, u.customer_id, key[1])
        if not pairs:
            await self._write(rows)
        elif self._leave_out(batch, await self._write_checked(rows, pairs)):
            # Nothing was written: write the others, whose keys the check found new.
            rows = self._rows(batch.units, first_outbox_id)
            await self._write(rows)
        for generation, unit in enumerate(_KEY_UNITS):
            self._run_rows[generation] += len(rows[unit])
        return rows

    @staticmethod
    async def _leave_out_ahead(batch: _Batch) -> None:
        """Wait for the lookups started as the units were queued (`checks_ahead`) and
        leave out the units of customers whose keys were found or could not be looked up
        (their commits raise KeysRemembered or the error). They ran before this flush
        empties any generation table."""
        out = set()
        for customer_id, check in batch.checks.items():
            await check.done.wait()
            if check.found:
                batch.remembered[customer_id] = check.found
            if check.found or check.error is not None:
                out.add(customer_id)
        if out:
            batch.units = [u for u in batch.units if u.customer_id not in out]

    @staticmethod
    def _leave_out(batch: _Batch, found: Sequence[Sequence[Any]]) -> bool:
        """Leave out the units of customers with remembered keys among `found` (replays of
        keys memory had forgotten: the runtime applies their batches again)."""
        for r in found:
            batch.remembered.setdefault(r[0], []).append(key_from(r))
        if found:
            batch.units = [u for u in batch.units if u.customer_id not in batch.remembered]
        return bool(found)

    def _tables(self, generation: int) -> list[str]:
        """The tables of a generation's runs."""
        return [sql.key_table(generation, run) for run in range(self._runs[generation])]

    def key_tables(self) -> tuple[str, ...]:
        """Every key table, the ones a lookup probes."""
        return tuple(t for g in range(len(sql.KEY_TABLES)) for t in self._tables(g))

    def _written_tables(self) -> tuple[str, str]:
        """The table each generation's keys are written to: its current run's."""
        return (sql.key_table(0, self._run[0]), sql.key_table(1, self._run[1]))

    async def _next_runs(self, rows: dict[str, list[tuple]]) -> None:
        """Start a generation's next run before these rows would take the current one
        past its size (`sql.key_run_rows`): the run being written stays small."""
        for generation, unit in enumerate(_KEY_UNITS):
            run, held = self._run[generation], self._run_rows[generation]
            if held and held + len(rows[unit]) > sql.key_run_rows(run):
                run += 1
                table = sql.key_table(generation, run)
                # A run the generation had before its last rotation is there, empty.
                create = (sql.key_table_statements(self.dialect, table)
                          if run >= self._runs[generation] else [])
                await self._start_run(generation, run, create)
                self._run[generation] = run
                self._runs[generation] = max(self._runs[generation], run + 1)
                self._run_rows[generation] = 0
                self._due_filter_save(generation)

    def _rotations(self, rows: dict[str, list[tuple]]) -> list[tuple[int, int]]:
        """The generation tables to empty before these rows' keys go in, and their new
        periods: a table holds keys two or more periods old when keys of a new period
        arrive for it (persistence/sql.py, KEY_GENERATION_MS)."""
        due = []
        for generation, unit in enumerate(_KEY_UNITS):
            if rows[unit]:
                period = max(key_period(r[2]) for r in rows[unit])
                if period > self._generations[generation]:
                    due.append((generation, period))
        return due

    def _settle(self, batch: _Batch) -> None:
        if batch.error is not None and self.durability == "async":
            self._lost |= batch.customers
        self._backlog_rows -= batch.rows
        for cid in batch.customers:
            if self._unflushed.get(cid) is batch:
                del self._unflushed[cid]
        batch.done.set()
        self._space.set()

    def _translate(self, exc: BaseException) -> StoreUnavailable:
        """Reads: a driver failure becomes StoreUnavailable; anything else is a bug."""
        if isinstance(exc, StoreUnavailable):
            return exc
        translated = self._unavailable(exc)
        if translated is None:
            raise exc
        return translated


def _whole_filter(parts: Sequence[Sequence[Any]], period: int, size: int) -> int | None:
    """The runs a generation's saved filter parts (part, period, runs, scheme, length) hold,
    if they are one whole save of `period` in this filter's size and scheme; else None."""
    if not parts:
        return None
    first = parts[0]
    whole = (all(int(p[0]) == i for i, p in enumerate(parts))
             and all((p[1], p[2], p[3]) == (first[1], first[2], first[3]) for p in parts)
             and sum(int(p[4]) for p in parts) == size)
    if not whole or int(first[1]) != period or first[3] != KEY_FILTER_SCHEME:
        return None
    return int(first[2])


def _ledger_params(customer_id: str, event_types: Sequence[str], currency_id: str | None,
                   resource_id: str | None, reservation_id: str | None, since: int | None,
                   until: int | None) -> list[Any]:
    """The parameters of sql.select_ledger_page/_count in their order, cursor aside."""
    params: list[Any] = [customer_id, *(sql.LEDGER_KINDS[t] for t in event_types)]
    params += [v for v in (currency_id, resource_id, reservation_id) if v]
    return params + [v for v in (since, until) if v is not None]
