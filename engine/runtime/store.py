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
"""

from __future__ import annotations

from typing import Protocol

from engine.core.effects import Effects
from engine.core.model import CustomerState

__all__ = ["Store"]


class Store(Protocol):
    async def load(self, customer_id: str) -> CustomerState: ...

    async def commit(self, customer_id: str, state: CustomerState, fx: Effects) -> None: ...
