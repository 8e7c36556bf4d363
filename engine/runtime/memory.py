"""What a resident customer costs in memory, estimated in bytes.

The runtime keeps its total under a budget (`Runtime(memory_max_bytes=...)`, `creditd serve
--memory-mb`): remembered idempotency and raw-event keys are forgotten first (they stay in
the store, which answers replays of the keys memory no longer holds), then the least
recently used idle customers are passivated (their state is in the store too). Counting
bytes rather than entries bounds a customer with many grants or keys as surely as many
customers with few.

The figures are what tracemalloc measured per object on CPython 3.11 (a 44-character
idempotency key with a consumption's reply, a grant with a UUID id, and so on;
`tests/engine/test_memory_budget.py` checks them against tracemalloc), rounded up. They
are estimates: the process also holds the interpreter, the HTTP server, database caches
and allocator slack (docs/operations.md, "Memory").

The two dicts of remembered keys are counted as they are, not per key: `sys.getsizeof`
gives a dict's table in constant time. A dict's table does not shrink when keys are
deleted, and one that was emptied and refilled past 682 keys doubles to 2,048 slots; under
a soak's churn the customers' tables grew from 25 to 35 MiB at a steady count of keys,
memory the old per-key share (40 bytes) did not see, and the resident size climbed in
steps for twenty minutes after the budget was full (docs/benchmarks.md, "The soak's
steps"). Counted as they are, the budget sheds keys when a table grows.
"""

from __future__ import annotations

import sys

from engine.core.model import CustomerState

__all__ = ["ACTOR_BYTES", "GRANT_BYTES", "POOL_BYTES", "RESERVATION_BYTES", "COUNTER_BYTES",
           "UNIQUE_VALUE_BYTES", "KEY_BYTES", "EVENT_KEY_BYTES", "state_bytes", "unique_values"]

ACTOR_BYTES = 800  # the actor, its empty state, its place in the runtime's maps
GRANT_BYTES = 450
# A pool, and the copy of its stored row a database store keeps to write it only when it
# changes (persistence/codec.py, StoredCustomer.pool_rows: about 370 bytes measured).
POOL_BYTES = 1_000
RESERVATION_BYTES = 450
COUNTER_BYTES = 300  # a usage counter
UNIQUE_VALUE_BYTES = 90  # a distinct value of a UNIQUE meter
# Per key, the objects only (the key, its memo: engine.core.idempotency; a raw event's key
# and time); the dicts' tables are counted as they are (`state_bytes`).
KEY_BYTES = 240
EVENT_KEY_BYTES = 120


def unique_values(state: CustomerState) -> int:
    """Distinct values held by the state's UNIQUE counters (counted once, at load: the
    runtime adds the new ones each batch reports instead of walking every counter)."""
    return sum(len(c.uniques) for c in state.usage.values() if c.uniques)


def state_bytes(state: CustomerState, uniques: int) -> int:
    """The estimated bytes of a resident customer whose counters hold `uniques` values."""
    return (ACTOR_BYTES + GRANT_BYTES * len(state.grants) + POOL_BYTES * len(state.pools)
            + RESERVATION_BYTES * len(state.reservations) + COUNTER_BYTES * len(state.usage)
            + UNIQUE_VALUE_BYTES * uniques
            + KEY_BYTES * len(state.idempotency) + sys.getsizeof(state.idempotency)
            + EVENT_KEY_BYTES * len(state.event_keys) + sys.getsizeof(state.event_keys))
