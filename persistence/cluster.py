"""Scale-out on PostgreSQL: virtual shards, their leases, and the fence every flush checks.

Every customer (by its engine id, `environment/customer`) belongs to one of `SHARDS`
virtual shards (`shard_of`: CRC-32 of the id; the hash and the count never change without
a migration). Table `shard_leases` holds one row per shard: the node that owns it, the
address where that node takes forwarded commands, and an **epoch** bumped on every change
of owner. A lease lasts while its owner's heartbeat (`cluster_nodes.seen_at`, the
database's clock: nodes' clocks may disagree) is younger than `ttl_s`. Row -1 is the
leader's lease: the once-only jobs (webhooks, the subscription scheduler, the purges) run
on its holder.

A node (`LeaseManager.run`) beats every `renew_s` — one row, which renews every lease it
holds —, and checks that its shards are still its own at their epochs; in a task of its
own, so that a round held up (a takeover's reads, a hand-over waiting for a flush) never
delays it. Every `renew_s` too, a round reads the table and
takes free shards (no owner, or an owner whose heartbeat is stale) up to its fair share
of the live nodes; above its share it gives shards up, a few at a time. Its own view
(`Leases`) counts a lease valid until `ttl_s` after the heartbeat *started*, less a
margin, so it stops serving a shard before the database lets another node take it.

Fencing. The group commit checks, in the flush's own transaction, that this node still
owns every shard it writes at the epoch its customers were loaded with, and locks those
lease rows (FOR SHARE) until it commits: a takeover (an UPDATE of the row) waits for the
flush in flight, and a flush that starts after a takeover finds the epoch changed and
leaves those customers out (`ShardMoved`: nothing acknowledged). So a node paused past its
lease (GC, SIGSTOP, a partition) can never commit for a customer someone else owns now.
"""

from __future__ import annotations

import math
import random
import time
import zlib
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import anyio
import structlog

__all__ = ["SHARDS", "LEADER", "shard_of", "Leases", "LeaseManager"]

SHARDS = 1024
LEADER = -1

log = structlog.get_logger("creditd.cluster")


def shard_of(customer_id: str) -> int:
    """The virtual shard of an engine customer id (stable across processes and versions)."""
    return zlib.crc32(customer_id.encode()) % SHARDS


class Lease:
    __slots__ = ("epoch", "valid_until")

    def __init__(self, epoch: int, valid_until: float) -> None:
        self.epoch = epoch
        self.valid_until = valid_until  # time.monotonic()


class Leases:
    """This node's view of the leases: the ones it holds (with their epochs and how long
    its last renewal lets it trust them) and, for forwarding, who held every shard at the
    last read of the table."""

    def __init__(self, node_id: str, address: str, *, ttl_s: float = 3.0,
                 renew_s: float = 0.5, clock: Callable[[], float] = time.monotonic) -> None:
        assert 0 < renew_s < ttl_s
        self.node_id = node_id
        self.address = address
        self.ttl_s = ttl_s
        self.renew_s = renew_s
        # A renewal that took this long (of the ttl) is not trusted to its end.
        self.margin_s = min(renew_s, ttl_s / 4)
        self.clock = clock
        self.held: dict[int, Lease] = {}
        # shard -> (owner node, its address, epoch), from the last read; only live owners.
        self.owners: dict[int, tuple[str, str, int]] = {}
        self.nodes: dict[str, str] = {}  # live node -> address, from the last read
        # Shards whose keys this node's key filter holds (persistence/durable.py).
        self.trusted: set[int] = set()
        self.changed = anyio.Event()  # set after every round that read the table
        self.rounds = self.acquired = self.released = self.lost = 0
        self.beat_at = float("-inf")  # when the last heartbeat that landed started

    def holds(self, shard: int) -> bool:
        lease = self.held.get(shard)
        return lease is not None and self.clock() < lease.valid_until

    def epoch_if_held(self, shard: int) -> int | None:
        lease = self.held.get(shard)
        if lease is None or self.clock() >= lease.valid_until:
            return None
        return lease.epoch

    def current(self, shard: int, epoch: int | None) -> bool:
        """Whether state loaded at `epoch` may still be served: the lease is held, valid,
        and has not changed hands since."""
        lease = self.held.get(shard)
        return lease is not None and lease.epoch == epoch and self.clock() < lease.valid_until

    def owner_address(self, shard: int) -> str | None:
        """Where the shard's owner takes forwarded commands (None: no live owner known)."""
        found = self.owners.get(shard)
        return None if found is None else found[1]

    def is_leader(self) -> bool:
        return self.holds(LEADER)

    def trusts_held_shards(self) -> bool:
        """Whether this node holds shards and its key filter holds the keys of each (it
        reads them back after taking them): the filter's `ready` on a node."""
        held = {s for s in self.held if s != LEADER}
        return bool(held) and held <= self.trusted

    def trusts_every_shard(self) -> bool:
        """Whether this node holds every shard and its key filter holds their keys: then
        no other node writes keys (flushes are fenced) and the filter holds every key
        there is, as a lone process's does (what saved filter bits must hold)."""
        return self.trusts_held_shards() and all(self.holds(s) for s in range(SHARDS))

    def statistics(self) -> dict[str, Any]:
        shards = sorted(s for s in self.held if s != LEADER)
        return {"node": self.node_id, "address": self.address, "leader": self.is_leader(),
                "shards_held": len(shards), "shards": _ranges(shards),
                "epochs_sum": sum(self.held[s].epoch for s in shards),
                "shards_trusted": len(self.trusted & set(shards)),
                "nodes": dict(sorted(self.nodes.items())), "rounds": self.rounds,
                "acquired": self.acquired, "released": self.released, "lost": self.lost,
                "lease_ttl_s": self.ttl_s, "renew_s": self.renew_s}


def _ranges(shards: list[int]) -> str:
    """1,2,3,7 -> "1-3,7": what /health shows of the shards held."""
    out: list[str] = []
    start = prev = None
    for s in shards:
        if prev is not None and s == prev + 1:
            prev = s
            continue
        if start is not None:
            out.append(str(start) if start == prev else f"{start}-{prev}")
        start = prev = s
    if start is not None:
        out.append(str(start) if start == prev else f"{start}-{prev}")
    return ",".join(out)


# The lease rows this node holds among (shard, epoch) pairs, locked in shard order. Every
# statement that locks several lease rows (renewals, takeovers, hand-overs, the flush's
# fence in persistence/postgres.py) locks them in shard order: in any other order a
# renewal and a flush deadlock (PostgreSQL detects it after a second and aborts one).
_LOCK_HELD = ("SELECT l.shard FROM shard_leases l "
              "JOIN unnest(?::int[], ?::bigint[]) AS h(shard, epoch) "
              "ON l.shard = h.shard AND l.epoch = h.epoch WHERE l.owner = ? "
              "ORDER BY l.shard FOR UPDATE OF l")

Shards = Callable[[list[int]], Awaitable[None]]


async def _nothing(shards: list[int]) -> None:
    return None


class LeaseManager:
    """Renews, takes and gives up this node's leases (see the module docstring).

    `on_acquired(shards)` runs after shards were taken and before they are served
    (the store re-reads what other nodes changed, the runtime reads their timers);
    `on_released(shards)` after they stopped being served and before the rows are freed
    (the node drops their customers and lets batches in flight finish); `on_lost(shards)`
    when a renewal found them taken (the node drops their customers)."""

    # Shards given up per round above the fair share: a move costs their customers a
    # reload, so a joining node takes its share over a few rounds, not in one step.
    RELEASE_PER_ROUND = 128

    def __init__(self, store: Any, leases: Leases, *, started_at_ms: int,
                 on_acquired: Shards = _nothing, on_released: Shards = _nothing,
                 on_lost: Shards = _nothing) -> None:
        self.store = store
        self.leases = leases
        self.started_at_ms = started_at_ms
        self.on_acquired = on_acquired
        self.on_released = on_released
        self.on_lost = on_lost
        self.leaving = False
        self._rng = random.Random()

    async def run(self) -> None:
        """Heartbeats and rounds, each every `renew_s`, until cancelled. The heartbeat has
        a task of its own: a round can wait (a takeover's reads, a hand-over waiting for a
        flush's lock on its rows) and the node's leases must not lapse meanwhile. A failed
        heartbeat or round (the database away) is logged and tried again (the leases lapse
        on their own meanwhile)."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._beats)
            while True:
                try:
                    await self.round(beat=False)
                except Exception as exc:  # noqa: BLE001 - the database is away: next round
                    log.warning("lease round failed", error=repr(exc))
                await anyio.sleep(self.leases.renew_s)

    async def _beats(self) -> None:
        while True:
            try:
                await self.beat()
            except Exception as exc:  # noqa: BLE001 - the database is away: next beat
                log.warning("lease heartbeat failed", error=repr(exc))
            await anyio.sleep(self.leases.renew_s)

    async def beat(self) -> None:
        """The heartbeat renews every lease this node holds at once: a lease lasts while
        its owner's heartbeat is younger than the TTL. (One row, which no flush locks:
        renewing shard rows one by one waited behind the flushes' FOR SHARE locks.)"""
        leases = self.leases
        started = leases.clock()
        await self.store.fetch(
            "INSERT INTO cluster_nodes (node_id, address, started_at, seen_at, "
            "leaving) VALUES (?, ?, ?, clock_timestamp(), ?) ON CONFLICT (node_id) "
            "DO UPDATE SET seen_at = clock_timestamp(), address = excluded.address, "
            "leaving = excluded.leaving RETURNING 1", leases.node_id, leases.address,
            self.started_at_ms, self.leaving)
        leases.beat_at = max(leases.beat_at, started)
        await self._renew(started)

    async def round(self, *, beat: bool = True) -> None:
        """One round: (the heartbeat, unless `run`'s own task beats), the table read, and
        the shards taken or given up."""
        leases = self.leases
        fetch = self.store.fetch
        if beat:
            await self.beat()
        table = await fetch(
            "SELECT l.shard, l.owner, l.address, l.epoch, (l.owner IS NULL OR n.node_id IS NULL "
            "OR n.seen_at < clock_timestamp() - make_interval(secs => ?)) "
            "FROM shard_leases l LEFT JOIN cluster_nodes n ON n.node_id = l.owner",
            float(leases.ttl_s))
        nodes = await fetch("SELECT node_id, address FROM cluster_nodes WHERE NOT leaving "
                            "AND seen_at > clock_timestamp() - make_interval(secs => ?)",
                            float(leases.ttl_s))
        leases.nodes = {r[0]: r[1] for r in nodes}
        leases.nodes.setdefault(leases.node_id, leases.address)
        leases.owners = {int(r[0]): (r[1], r[2], int(r[3])) for r in table
                         if r[1] is not None and not r[4]}
        free = [int(r[0]) for r in table
                if (r[1] is None or r[4]) and int(r[0]) not in leases.held]
        mine = [s for s in leases.held if s != LEADER]
        target = math.ceil(SHARDS / max(1, len(leases.nodes)))
        want = [s for s in free if s != LEADER]
        # Taken shards are good until the last heartbeat's TTL: none are taken while it
        # is stale (the others would see this node dead and take them straight back).
        taking = not self.leaving and leases.clock() < leases.beat_at + leases.ttl_s \
            - leases.margin_s
        if LEADER in free and taking:
            await self._acquire([LEADER], leases.beat_at)
        if len(mine) < target and want and taking:
            self._rng.shuffle(want)  # two nodes taking at once mostly take different ones
            await self._acquire(want[: target - len(mine)], leases.beat_at)
        elif len(mine) > target and len(leases.nodes) > 1:
            surplus = len(mine) - target
            await self.release(sorted(mine)[-min(surplus, self.RELEASE_PER_ROUND):])
        leases.rounds += 1
        changed, leases.changed = leases.changed, anyio.Event()
        changed.set()

    async def _renew(self, started: float) -> None:
        """After the heartbeat: the shards still this node's at the epochs it holds are
        good for another TTL from `started`; the others were taken (this node's heartbeat
        had gone stale: a pause, a partition) and are dropped. A round may take or give up
        shards meanwhile: only leases unchanged across the read are touched."""
        leases = self.leases
        if not leases.held:
            return
        before = dict(leases.held)
        rows = await self.store.fetch(
            "SELECT shard, epoch FROM shard_leases WHERE owner = ?", leases.node_id)
        ours = {int(r[0]): int(r[1]) for r in rows}
        until = started + leases.ttl_s - leases.margin_s
        lost = []
        for s, lease in before.items():
            if leases.held.get(s) is not lease:
                continue  # given up (or taken again) while the read ran
            if ours.get(s) == lease.epoch:
                lease.valid_until = max(lease.valid_until, until)
            else:
                lost.append(s)
        if lost:
            for s in lost:
                del leases.held[s]
                leases.trusted.discard(s)
            leases.lost += len(lost)
            log.warning("leases lost to another node", shards=_ranges(sorted(lost)),
                        node=leases.node_id)
            await self.on_lost(lost)

    async def _acquire(self, shards: list[int], started: float) -> None:
        leases = self.leases
        rows = await self.store.fetch(
            "UPDATE shard_leases l SET owner = ?, address = ?, epoch = l.epoch + 1, "
            "expires_at = NULL "
            "FROM (SELECT s.shard FROM shard_leases s LEFT JOIN cluster_nodes n "
            "ON n.node_id = s.owner WHERE s.shard = ANY(?::int[]) AND (s.owner IS NULL "
            "OR n.node_id IS NULL OR n.seen_at < clock_timestamp() - make_interval(secs => ?)) "
            "ORDER BY s.shard "
            # A row a flush still holds (FOR SHARE: its lapsed owner's statement is still
            # running) is skipped, taken at a later round: a round never waits on it.
            "FOR UPDATE OF s SKIP LOCKED) AS f WHERE l.shard = f.shard "
            "RETURNING l.shard, l.epoch",
            leases.node_id, leases.address, shards, float(leases.ttl_s))
        if not rows:
            return
        taken = sorted(int(r[0]) for r in rows)
        await self.on_acquired(taken)
        until = started + leases.ttl_s - leases.margin_s
        for r in rows:
            leases.held[int(r[0])] = Lease(int(r[1]), until)
        leases.acquired += len(taken)
        log.info("leases taken", shards=_ranges(taken), node=leases.node_id,
                 epochs=[int(r[1]) for r in rows][:8])

    async def release(self, shards: Iterable[int]) -> None:
        """Stop serving `shards`, let their batches in flight finish, then free their rows
        so another node takes them at its next round (no wait for expiry)."""
        leases = self.leases
        gone = {s: leases.held.pop(s) for s in list(shards) if s in leases.held}
        if not gone:
            return
        for s in gone:
            leases.trusted.discard(s)
        await self.on_released(sorted(gone))
        await self.store.fetch(
            "UPDATE shard_leases l SET owner = NULL, address = NULL, expires_at = NULL "
            f"FROM ({_LOCK_HELD}) AS h WHERE l.shard = h.shard RETURNING l.shard",
            list(gone), [lease.epoch for lease in gone.values()], leases.node_id)
        leases.released += len(gone)
        log.info("leases handed over", shards=_ranges(sorted(s for s in gone if s != LEADER)),
                 leader=LEADER in gone, node=leases.node_id)

    async def leave(self) -> None:
        """Graceful shutdown: say this node is leaving (the others stop counting it for
        their share), then hand every lease over."""
        self.leaving = True
        await self.store.execute("UPDATE cluster_nodes SET leaving = TRUE WHERE node_id = ?",
                                 self.leases.node_id)
        await self.release(list(self.leases.held))
        await self.store.execute("DELETE FROM cluster_nodes WHERE node_id = ?",
                                 self.leases.node_id)
