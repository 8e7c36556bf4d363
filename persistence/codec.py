"""Between engine rows and SQL parameters, for both backends.

A commit is turned into a `Unit` of plain tuples synchronously, before the store's first
await (the store contract in engine/runtime/store.py): after that the actor may mutate its
state again. Column order here is the column order of the INSERT statements in
persistence/sql.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import msgspec

from engine.core.commands import Command
from engine.core.effects import DomainEvent, Effects, LedgerEntry
from engine.core.idempotency import (
    IdempotencyRecord,
    memo_from,
    request_digest,
)
from engine.core.model import (
    AutoRecharge,
    CustomerState,
    GrantStatus,
    GrantType,
    LedgerEventType,
    ReservationStatus,
)
from engine.core.replay import CustomerRow, GrantRow, PoolRow, ReservationRow
from persistence.sql import KEY_GENERATION_MS, LEDGER_KINDS

__all__ = ["Unit", "StoredCustomer", "make_unit", "grant_from", "reservation_from",
           "decode_json",
           "pool_from", "customer_from", "key_from", "entry_from", "event_from",
           "encode_event", "key_period"]

# Decimals (dimension values with a fraction) are written as JSON numbers with the digits
# the client sent, and read back as Decimal: never through a binary float.
_json_encode = msgspec.json.Encoder(order="deterministic", decimal_format="number").encode
_json_decode = msgspec.json.Decoder(float_hook=Decimal).decode
# Stored JSON (dimensions, metadata) as written: numbers with a fraction as Decimal.
decode_json = _json_decode
_pack = msgspec.msgpack.Encoder().encode
_unpack_command = msgspec.msgpack.Decoder(Command).decode
_unpack_event = msgspec.msgpack.Decoder(DomainEvent).decode
_unpack_recharge = msgspec.msgpack.Decoder(AutoRecharge).decode


def _json(value: Any) -> str | None:
    return None if value is None else _json_encode(value).decode()


_KIND_CODES = {LedgerEventType(name): code for name, code in LEDGER_KINDS.items()}
_KINDS = {code: LedgerEventType(name) for name, code in LEDGER_KINDS.items()}


class StoredCustomer:
    """What a database store keeps beside a customer's state (`CustomerState.stored`):
    its number, which its ledger and key rows carry instead of its id, and the latest key
    generation period it wrote a key in (None: never)."""

    __slots__ = ("number", "key_period", "epoch", "pool_rows")

    def __init__(self, number: int, key_period: int | None) -> None:
        self.number = number
        self.key_period = key_period
        # A cluster node's lease epoch on the customer's shard when it was loaded
        # (persistence/cluster.py): its flushes are fenced on it. None: no cluster.
        self.epoch: int | None = None
        # Each pool's row as last handed to the writer since the state was loaded (None:
        # none yet). A pool's stored columns are its settings, which a consumption does
        # not change, so its row is written only when they do (`make_unit`). The cache
        # lives and dies with the state: a commit that fails drops the state, and the
        # state loaded again starts with none, so a row is never skipped that the
        # database may not hold.
        self.pool_rows: dict[tuple[str, str | None], tuple] | None = None


def key_period(created_at: int) -> int:
    """The generation period a key created at `created_at` belongs to (persistence/sql.py)."""
    return created_at // KEY_GENERATION_MS


class Unit:
    """One actor batch's rows: written all-or-nothing, in one transaction with others.
    Each attribute holds the rows of one table (persistence.sql.WRITES says which)."""

    __slots__ = ("customer_id", "customers", "grants", "reservations", "pools", "ledger",
                 "keys", "events", "usage", "uniques", "buckets", "dimension_keys", "epoch",
                 "raw_events", "rows")

    def __init__(self, customer_id: str) -> None:
        self.customer_id = customer_id
        self.customers: list[tuple] = []  # the customer's row
        self.grants: list[tuple] = []
        self.reservations: list[tuple] = []
        self.pools: list[tuple] = []
        self.ledger: list[tuple] = []
        self.keys: list[tuple] = []
        self.events: list[tuple] = []  # outbox rows without their id (the writer assigns it)
        self.usage: list[tuple] = []
        self.uniques: list[tuple] = []
        self.buckets: list[tuple] = []
        self.dimension_keys: list[tuple] = []
        self.raw_events: list[tuple] = []
        self.rows = 0
        self.epoch: int | None = None  # StoredCustomer.epoch when the unit was made


def make_unit(customer_id: str, state: CustomerState, fx: Effects) -> Unit:
    u = Unit(customer_id)
    cid = customer_id
    stored: StoredCustomer = state.stored
    num = stored.number
    u.epoch = stored.epoch
    if fx.keys:
        latest = key_period(max(k.created_at for k in fx.keys))
        if stored.key_period is None or latest > stored.key_period:
            stored.key_period = latest
    u.customers = [(cid, state.ledger_seq, state.event_seq, state.op_seq, state.grant_seq,
                    state.next_due(), num, stored.key_period)]
    u.grants = [
        (cid, g.id, g.seq, g.currency_id, g.resource_id, g.grant_type.value, g.status.value,
         g.priority, g.effective_at, g.expire_at, g.created_at, g.updated_at, g.voided_at,
         g.amount, g.available, g.held, g.consumed, g.expired, g.voided, g.activated,
         g.cost_amount, g.cost_currency, g.display_name, g.comment, _json(g.metadata))
        for g in fx.grants.values()
    ]
    u.reservations = [
        (cid, r.id, r.currency_id, r.resource_id, r.amount, _json(list(r.holds.items())),
         r.status.value, r.created_at, r.expires_at, r.released_at, r.consumed_amount,
         _json(r.metadata))
        for r in fx.reservations.values()
    ]
    if fx.pools:
        written = stored.pool_rows
        if written is None:
            written = stored.pool_rows = {}
        for p in fx.pools.values():
            row = (cid, p.currency_id, p.resource_id or "", p.resource_id, p.hard_limit,
                   p.low_balance_units, p.usage_low_percent,
                   None if p.recharge is None else _pack(p.recharge),
                   None if p.recharge is None else p.recharge.in_flight)
            # Only a changed row: every consumption names its pool (its balance moved,
            # for the feed), and rewriting the same row was one write in five of a
            # consumption's, on the writer's path (docs/benchmarks.md).
            if written.get(p.key) != row:
                written[p.key] = row
                u.pools.append(row)
    grants = state.grants
    u.ledger = [
        (num, e.seq, e.op_seq, e.amount, e.timestamp, grants[e.grant_id].seq,
         _KIND_CODES[e.event_type], e.reservation_id, e.feature_id, _json(e.dimensions))
        for e in fx.entries
    ]
    u.keys = [(num, k.key, k.created_at, k.op_seq, k.request, k.stored_reply)
              for k in fx.keys]
    u.events = [(cid, e.seq, e.type.value, _pack(e), e.timestamp) for e in fx.events]
    if fx.usage or fx.buckets or fx.event_keys:
        _metering(u, fx)
    u.rows = (1 + len(u.grants) + len(u.reservations) + len(u.pools) + len(u.ledger)
              + len(u.keys) + len(u.events) + len(u.usage) + len(u.uniques) + len(u.buckets)
              + len(u.dimension_keys) + len(u.raw_events))
    return u


def _metering(u: Unit, fx: Effects) -> None:
    cid = u.customer_id
    u.usage = [(cid, c.feature_id, c.resource_id or "", c.resource_id, c.function, c.value,
                c.total, c.count, c.updated_at, c.period_start) for c in fx.usage.values()]
    u.uniques = [(cid, f, r or "", v) for f, r, v in fx.unique_values]
    # Increments of the same bucket are summed here: a flush may not touch a row twice.
    sums: dict[tuple, list[int]] = {}
    keys: set[str] = set()
    for b in fx.buckets:
        dims = _json(b.dimensions) or ""
        if b.dimensions:
            keys.update(b.dimensions)
        k = (b.hour, b.feature_id or "", b.resource_id or "", b.currency_id or "", dims,
             b.feature_id, b.resource_id, b.currency_id)
        tally = sums.get(k)
        if tally is None:
            sums[k] = [b.usage, b.credits, b.events]
        else:
            tally[0] += b.usage
            tally[1] += b.credits
            tally[2] += b.events
    u.buckets = [(cid, *k, *t) for k, t in sums.items()]
    u.dimension_keys = [(cid, key) for key in sorted(keys)]
    # Kept (and purged) by the time they were accepted, not the time they say they happened:
    # a late event stays deduplicated for the whole retention too.
    u.raw_events = [(cid, e.key, e.event_name, e.timestamp, e.resource_id,
                     _json(e.dimensions), accepted_at) for e, accepted_at in fx.event_keys]


# -- reading back ----------------------------------------------------------------------
# Each takes a row in SELECT column order (see persistence/sql.py).


def customer_from(r: Sequence[Any]) -> CustomerRow:
    return CustomerRow(customer_id=r[0], ledger_seq=r[1], event_seq=r[2], op_seq=r[3],
                       grant_seq=r[4])


def stored_from(r: Sequence[Any]) -> StoredCustomer:
    """A customers row's store columns (num, key_period: SELECT_CUSTOMER's last two)."""
    return StoredCustomer(int(r[6]), None if r[7] is None else int(r[7]))


def grant_from(r: Sequence[Any]) -> GrantRow:
    return GrantRow(
        id=r[1], seq=r[2], currency_id=r[3], resource_id=r[4], grant_type=GrantType(r[5]),
        status=GrantStatus(r[6]), priority=r[7], effective_at=r[8], expire_at=r[9],
        created_at=r[10], updated_at=r[11], voided_at=r[12], amount=r[13], available=r[14],
        held=r[15], consumed=r[16], expired=r[17], voided=r[18], activated=bool(r[19]),
        cost_amount=r[20], cost_currency=r[21], display_name=r[22], comment=r[23],
        metadata=_json_decode(r[24]) if r[24] is not None else None,
    )


def reservation_from(r: Sequence[Any]) -> ReservationRow:
    return ReservationRow(
        id=r[1], currency_id=r[2], resource_id=r[3], amount=r[4],
        holds=[(gid, units) for gid, units in _json_decode(r[5])],
        status=ReservationStatus(r[6]), created_at=r[7], expires_at=r[8], released_at=r[9],
        consumed_amount=r[10], metadata=_json_decode(r[11]) if r[11] is not None else None,
    )


def pool_from(r: Sequence[Any]) -> PoolRow:
    return PoolRow(currency_id=r[1], resource_id=r[3], hard_limit=bool(r[4]),
                   low_balance_units=r[5], usage_low_percent=r[6],
                   recharge=None if r[7] is None else _unpack_recharge(bytes(r[7])))


def key_from(r: Sequence[Any]) -> IdempotencyRecord:
    """A row in KEY_COLUMNS order (customer, key, created_at, op_seq, request, reply)."""
    memo = memo_from(_request(bytes(r[4])), r[2], bytes(r[5]))  # the reply left encoded
    return IdempotencyRecord(key=r[1], memo=memo, op_seq=r[3])


def _request(stored: bytes) -> bytes:
    """The request digest, from a row that holds it, or from one written before digests
    (schema v8 and earlier: the whole command, msgpack)."""
    return stored if len(stored) == 16 else request_digest(_unpack_command(stored))


def entry_from(r: Sequence[Any]) -> LedgerEntry:
    """A row of sql.SELECT_LEDGER: seq, op_seq, kind, grant id, currency, resource, amount,
    time, reservation, feature, dimensions. Ledger rows do not keep the idempotency key:
    the key's own row names its operation (`op_seq`) for as long as it is kept."""
    return LedgerEntry(
        r[0], r[1], _KINDS[r[2]], r[3], r[4], r[5], r[6], r[7], r[8], r[9], None,
        _json_decode(r[10]) if r[10] is not None else None,
    )


def event_from(payload: bytes) -> DomainEvent:
    return _unpack_event(bytes(payload))


def encode_event(e: DomainEvent) -> bytes:
    return _pack(e)
