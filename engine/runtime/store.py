"""The seam where persistence plugs into the runtime.

A store makes a batch's effects durable and gives a customer's durable state back. The
runtime calls `commit()` once per actor batch and replies to the batch's callers only after
it returns; if it raises `StoreUnavailable`, every caller in the batch gets that error and
the actor drops its in-memory state, so the next command reloads what is durable (nothing
half-applied survives).

Contract for implementations:
- `commit()` must take its copy of the touched rows *before its first await*: the actor
  does not mutate them while the commit is in flight, but it may right after.
- `commit()` is all-or-nothing for the batch.
- `load()` of a customer never seen returns an empty state.
- `commit(..., new_keys)`: the batch applied these idempotency keys as new without knowing
  them (memory does not hold all of the customer's keys). If the store remembers any of
  them, it writes nothing of the batch and raises `KeysRemembered` with their records;
  the runtime applies the batch again with them known. Checking in the commit, not
  before applying, keeps a trip to the database off every such batch's path.
- `lookup_keys()` gives the remembered keys among those asked (reads by key: the ledger
  entries a key made).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from engine.core.effects import Effects, IdempotencyRecord
from engine.core.model import CustomerState

__all__ = ["Store"]


class Store(Protocol):
    async def load(self, customer_id: str) -> CustomerState: ...

    async def commit(self, customer_id: str, state: CustomerState, fx: Effects,
                     new_keys: Sequence[str] = ()) -> None: ...

    async def lookup_keys(self, customer_id: str,
                          keys: list[str]) -> list[IdempotencyRecord]: ...

    async def lookup_event_keys(self, customer_id: str, keys: list[str]) -> dict[str, int]:
        """The raw-event keys among `keys` the store has accepted (key -> time)."""
        ...

    async def due_customers(self, until_ms: int, limit: int) -> list[tuple[str, int]]:
        """Customers with a timer due by `until_ms` (id, due time), earliest first."""
        ...

    async def purge(self, before_ms: int, limit: int) -> int:
        """Forget what the retention lets go of (older than `before_ms`), at most `limit`
        rows a table; returns how many went."""
        ...

    def stale(self, customer_id: str, state: CustomerState) -> bool:
        """Whether the customer's state in memory may no longer match what is durable (a
        store that acknowledges before writing lost a write, or a cluster node whose lease
        on the customer's shard changed since `state` was loaded): it is reloaded first."""
        ...

    def statistics(self) -> dict[str, int | float | bool]:
        """Counters for `/health?detail=true` (empty if the store keeps none)."""
        ...
