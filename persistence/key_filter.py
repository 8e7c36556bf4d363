"""Which idempotency keys the store has surely never written: a Bloom filter per key
generation table.

Memory holds recent keys only (engine/runtime/memory.py). A batch naming a key memory
does not hold, of a customer whose older keys memory forgot, applies it as new and the
store checks it against the key tables (`Store.commit`'s `new_keys`). Under steady load
with a fresh key per request, that is every batch: on PostgreSQL the checks were a query
per ~20 batches on the writer's path, and a soaked server fell to 70 % of a fresh one
(docs/benchmarks.md, "Soak"). Almost every such key is new, and a Bloom filter says so
from memory: a key it does not hold was never written, and needs no query; one it holds
(every remembered key, and a small share of new ones — false positives) is checked as
before. So a filter can only save queries, never let a replay through, provided it holds
every key in the tables:

- the writer adds a flush's keys before writing them (`add`), so no key is durable before
  the filter holds it;
- keys written before the store opened are read back from the tables once, in the
  background (`DurableStore._index_keys`); until that is done (`ready` False) the filter
  answers "maybe" for every key;
- a generation table and its filter are emptied together, by the writer (`clear`).

One process writes a database's keys (docs/architecture.md); a process that did not
write them does not know them, so scale-out must fill the filter for the customers it
takes over, or answer "maybe" for them.

Fixed size, allocated when the store opens (`CREDITD_KEY_FILTER_MB`, split between the
two tables, each half rounded down to a power of two). With n keys in a table of m bits
and 4 hashes, the share of new keys checked anyway is about (1 - e^(-4n/m))^4: 0.3 % at
9 million keys in 16 MiB (15 bits a key), 12 % at 30 million. A full filter costs
queries, not correctness.
"""

from __future__ import annotations

__all__ = ["KeyFilter"]

_HASHES = 4
_U64 = (1 << 64) - 1


class KeyFilter:
    """Two Bloom filters of (customer id, key) pairs, one per key generation table.

    Positions come from the interpreter's hash of the pair (salted per process: the
    filter lives and dies with the process) by double hashing."""

    __slots__ = ("_bits", "_mask", "added", "bytes", "held", "passed", "ready")

    def __init__(self, bytes_max: int) -> None:
        per_table = max(bytes_max // 2, 1)
        bits = 1 << (per_table * 8).bit_length() - 1  # a power of two: positions by mask
        self._mask = bits - 1
        self._bits = (bytearray(bits // 8 or 1), bytearray(bits // 8 or 1))
        self.bytes = 2 * len(self._bits[0])
        # False until the keys written before the store opened are in: every key is then
        # "maybe" (held).
        self.ready = False
        self.added = 0  # pairs added
        self.passed = 0  # pairs asked about that need no check (surely new)
        self.held = 0  # pairs asked about that may be remembered (checked)

    def add(self, generation: int, customer_id: str, key: str) -> None:
        """Remember that (customer id, key) is written to the table of `generation`."""
        h = hash((customer_id, key)) & _U64
        step = (h >> 32) | 1
        mask = self._mask
        bits = self._bits[generation]
        for _ in range(_HASHES):
            p = h & mask
            bits[p >> 3] |= 1 << (p & 7)
            h += step
        self.added += 1

    def may_hold(self, customer_id: str, key: str) -> bool:
        """False only if neither table can hold (customer id, key)."""
        if not self.ready:
            self.held += 1
            return True
        h = hash((customer_id, key)) & _U64
        step = (h >> 32) | 1
        mask = self._mask
        a, b = self._bits
        in_a = in_b = True
        for _ in range(_HASHES):
            p = h & mask
            bit = 1 << (p & 7)
            in_a = in_a and bool(a[p >> 3] & bit)
            in_b = in_b and bool(b[p >> 3] & bit)
            if not (in_a or in_b):
                self.passed += 1
                return False
            h += step
        self.held += 1
        return True

    def unknown(self, customer_id: str, keys: list[str]) -> list[str]:
        """The keys among `keys` that may be remembered: the ones to check."""
        return [key for key in keys if self.may_hold(customer_id, key)]

    def clear(self, generation: int) -> None:
        """The table of `generation` was emptied."""
        bits = self._bits[generation]
        bits[:] = bytes(len(bits))

    def statistics(self) -> dict[str, int | bool]:
        return {"key_filter_bytes": self.bytes, "key_filter_ready": self.ready,
                "key_filter_added": self.added, "key_filter_passed": self.passed,
                "key_filter_held": self.held}
