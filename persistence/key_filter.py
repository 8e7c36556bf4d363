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

A process that did not write a key does not know it: a cluster node (PostgreSQL's
default, one or many) answers "maybe" for the shards it takes until it has read the keys
back (`DurableStore.reindex_keys`), and saves its bits only while it holds every shard and
their keys (`Leases.trusts_every_shard`), when it knows every key as a lone process does.

Reading every key back is slow on a large database: 25-29 s for 10 M keys with no load
(scripts/bench_restart.py), longer beside load, and until it is done every new key is
checked against the database. So a table's bits are saved in the database, a part at a time
(`part`), each time its generation starts a new run (a full run is never written again:
the saved bits hold every key of the runs before), and a process that opens the store
(or a cluster node that takes shards) takes them back (`restore_part`) and reads only the
runs written since. For that the positions must be the
same in every process: they come from a BLAKE2b of the pair keyed with a secret of the
database (so keys cannot be chosen to all land on set bits), not from the interpreter's
hash, which is salted per process.

Fixed size, allocated when the store opens (`CREDITD_KEY_FILTER_MB`, split between the
two tables, each half rounded down to a power of two). With n keys in a table of m bits
and 4 hashes, the share of new keys checked anyway is about (1 - e^(-4n/m))^4: 0.3 % at
9 million keys in 16 MiB (15 bits a key), 12 % at 30 million. A full filter costs
queries, not correctness.
"""

from __future__ import annotations

import hashlib

__all__ = ["KeyFilter"]

_HASHES = 4
# The positions' scheme, saved with the bits: bits of another scheme (or another size) are
# refused, never merged, since they would not hold the keys they claim to.
SCHEME = "blake2b-64 keyed, 4 positions"


class KeyFilter:
    """Two Bloom filters of (customer id, key) pairs, one per key generation table.

    Positions come from a 64-bit BLAKE2b of the pair keyed with `salt` (the database's:
    the same in every process, so saved bits can be taken back) by double hashing."""

    __slots__ = ("_bits", "_hasher", "_mask", "added", "bytes", "held", "passed", "ready")

    def __init__(self, bytes_max: int, salt: bytes = b"") -> None:
        self._hasher = hashlib.blake2b(digest_size=8, key=salt[:64])
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

    def _hash(self, customer_id: str, key: str) -> int:
        h = self._hasher.copy()
        # The id's length first: ("ab", "c") and ("a", "bc") are different pairs.
        h.update(f"{len(customer_id)}:{customer_id}{key}".encode("utf-8", "surrogatepass"))
        return int.from_bytes(h.digest(), "little")

    def add(self, generation: int, customer_id: str, key: str) -> None:
        """Remember that (customer id, key) is written to the table of `generation`."""
        h = self._hash(customer_id, key)
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
        h = self._hash(customer_id, key)
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

    def table_bytes(self) -> int:
        """The size of each generation's table of bits."""
        return len(self._bits[0])

    def part(self, generation: int, offset: int, size: int) -> bytes:
        """A copy of `size` bytes of the table of `generation` from `offset`, to be saved.
        Parts copied one after the other hold every key added before the first: bits are
        only ever set, but by `clear`."""
        return bytes(self._bits[generation][offset:offset + size])

    def restore_part(self, generation: int, offset: int, saved: bytes) -> None:
        """Add a saved `part` (of a filter of the same size and salt) to the table of
        `generation`: its bits are set here too."""
        bits = self._bits[generation]
        end = offset + len(saved)
        assert 0 <= offset and end <= len(bits)
        merged = int.from_bytes(bits[offset:end], "little") | int.from_bytes(saved, "little")
        bits[offset:end] = merged.to_bytes(len(saved), "little")

    def statistics(self) -> dict[str, int | bool]:
        return {"key_filter_bytes": self.bytes, "key_filter_ready": self.ready,
                "key_filter_added": self.added, "key_filter_passed": self.passed,
                "key_filter_held": self.held}
