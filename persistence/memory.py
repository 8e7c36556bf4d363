"""An in-process store: durable only for the life of the process.

It keeps exactly what a database store keeps (rows, ledger, outbox, keys), in dicts, and
rebuilds actors from those rows the same way, so passivation and reload are exercised
without a database. Tests use `fail_commits` to simulate an outage.
"""

from __future__ import annotations

from collections.abc import Sequence

import anyio

from engine.core.effects import DomainEvent, Effects, IdempotencyRecord, LedgerEntry
from engine.core.model import CustomerState
from engine.core.replay import (
    CustomerRow,
    GrantRow,
    PoolRow,
    ReservationRow,
    customer_row,
    grant_row,
    pool_row,
    reservation_row,
    restore,
)
from engine.core.usage import restore_usage
from engine.runtime.errors import KeysRemembered, StoreUnavailable

__all__ = ["MemoryStore"]


class _Customer:
    __slots__ = ("row", "grants", "reservations", "pools", "keys", "ledger", "next_due",
                 "usage", "uniques", "event_keys")

    def __init__(self, customer_id: str) -> None:
        self.row = CustomerRow(customer_id=customer_id, ledger_seq=0, event_seq=0, op_seq=0,
                               grant_seq=0)
        self.grants: dict[str, GrantRow] = {}
        self.reservations: dict[str, ReservationRow] = {}
        self.pools: dict[tuple[str, str | None], PoolRow] = {}
        self.keys: dict[str, IdempotencyRecord] = {}
        self.ledger: list[LedgerEntry] = []
        self.next_due: int | None = None
        self.usage: dict[tuple[str, str | None], tuple] = {}
        self.uniques: set[tuple[str, str | None, str]] = set()
        self.event_keys: dict[str, int] = {}


class MemoryStore:
    def __init__(self) -> None:
        self.customers: dict[str, _Customer] = {}
        # Outbox: (global sequence, customer id, event), gapless in commit order.
        self.outbox: list[tuple[int, str, DomainEvent]] = []
        self.fail_commits = False
        self.commits = 0
        self.loads = 0

    async def __aenter__(self) -> MemoryStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        return None

    async def lookup_keys(self, customer_id: str, keys: list[str]) -> list[IdempotencyRecord]:
        c = self.customers.get(customer_id)
        return [c.keys[k] for k in keys if c is not None and k in c.keys]

    async def key_operations(self, customer_id: str, keys: list[str]) -> dict[str, int | None]:
        return {r.key: r.op_seq for r in await self.lookup_keys(customer_id, keys)}

    async def lookup_event_keys(self, customer_id: str, keys: list[str]) -> dict[str, int]:
        c = self.customers.get(customer_id)
        return {k: c.event_keys[k] for k in keys if c is not None and k in c.event_keys}

    def stale(self, customer_id: str, state: object = None) -> bool:
        return False  # nothing acknowledged is ever unwritten here

    def statistics(self) -> dict[str, int | float | bool]:
        return {}

    async def due_customers(self, until_ms: int, limit: int) -> list[tuple[str, int]]:
        due = sorted((c.next_due, cid) for cid, c in self.customers.items()
                     if c.next_due is not None and c.next_due <= until_ms)
        return [(cid, at) for at, cid in due[:limit]]

    async def purge(self, before_ms: int, limit: int) -> int:
        removed = 0
        for c in self.customers.values():
            for key in [k for k, rec in c.keys.items() if rec.created_at < before_ms]:
                if removed >= limit:
                    return removed
                del c.keys[key]
                removed += 1
        return removed

    async def load(self, customer_id: str) -> CustomerState:
        await anyio.lowlevel.checkpoint()
        self.loads += 1
        c = self.customers.get(customer_id)
        if c is None:
            return CustomerState(customer_id)
        state = restore(c.row, c.grants.values(), c.reservations.values(), c.pools.values())
        restore_usage(state, c.usage.values(), c.uniques)
        # Like the database stores: remembered keys stay here and are looked up by the
        # runtime when a batch names them.
        state.keys_complete = not c.keys
        return state

    async def commit(self, customer_id: str, state: CustomerState, fx: Effects,
                     new_keys: Sequence[str] = ()) -> None:
        # Copy before the first await: the store contract.
        row = customer_row(state)
        next_due = state.next_due()
        grants = [grant_row(g) for g in fx.grants.values()]
        reservations = [reservation_row(r) for r in fx.reservations.values()]
        pools = [pool_row(p) for p in fx.pools.values()]
        entries = list(fx.entries)
        events = list(fx.events)
        keys = list(fx.keys)
        usage = [(u.feature_id, u.resource_id, u.function, u.value, u.total, u.count,
                  u.updated_at, u.period_start) for u in fx.usage.values()]
        uniques = list(fx.unique_values)
        event_keys = [(e.key, e.timestamp) for e, _ in fx.event_keys]
        await anyio.lowlevel.checkpoint()
        if self.fail_commits:
            raise StoreUnavailable("the store is unavailable (simulated)", retry_after_s=1.0)
        c = self.customers.get(customer_id)
        remembered = [c.keys[k] for k in new_keys if c is not None and k in c.keys]
        if remembered:
            raise KeysRemembered(remembered)
        if c is None:
            c = self.customers[customer_id] = _Customer(customer_id)
        c.row = row
        c.next_due = next_due
        for g in grants:
            c.grants[g.id] = g
        for r in reservations:
            c.reservations[r.id] = r
        for p in pools:
            c.pools[(p.currency_id, p.resource_id)] = p
        for k in keys:
            c.keys[k.key] = k
        c.ledger.extend(entries)
        for row in usage:
            c.usage[(row[0], row[1])] = row
        c.uniques.update(uniques)
        c.event_keys.update(event_keys)
        base = len(self.outbox)
        self.outbox.extend((base + i + 1, customer_id, e) for i, e in enumerate(events))
        self.commits += 1

    async def pending_recharges(self) -> list[str]:
        return [cid for cid, c in self.customers.items()
                if any(p.recharge is not None and p.recharge.in_flight is not None
                       for p in c.pools.values())]

    async def customer_events(self, customer_id: str, after_seq: int,
                              limit: int = 1000) -> list[DomainEvent]:
        found = [e for _, c, e in self.outbox if c == customer_id and e.seq > after_seq]
        return found[:limit]

    def ledger(self, customer_id: str) -> list[LedgerEntry]:
        c = self.customers.get(customer_id)
        return list(c.ledger) if c else []
