"""A cluster node: the leases, the internal channel, routing to owners, once-only jobs and
the notices that keep peers' caches and feeds right (docs/operations.md, "Running a
cluster"; persistence/cluster.py has the leases and the fence).

- **Routing** (`submit`): a command for a customer whose shard this node holds runs here;
  otherwise it goes to the owner over the internal channel (`rpc.py`), and while the
  shard has no live owner (moving, or its owner died and the lease has not expired) it
  waits for the next lease round, up to `move_wait_s`, then answers ShardMoved (503 with
  Retry-After). A command sent to an owner that stopped answering has an unknown outcome:
  503 too, and a retry with its idempotency key is safe.
- **Once-only jobs** run on the holder of the leader's lease (`leader_jobs`): webhooks
  (relay, dispatcher, purge, and the endpoint API, which other nodes forward to it), the
  subscription scheduler and the store's purge.
- **Notices** between peers: cached documents and API keys written here, customers'
  entitlements changed, packages published, which customers and environments have feed
  subscribers here (`interest`), and the feed frames of commits that peers' subscribers
  want (`feed`). A node whose link from a peer broke drops its caches: notices may have
  been lost on it.
"""

from __future__ import annotations

import os
import socket
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import anyio
import msgspec
import structlog
from anyio.abc import TaskGroup

from engine.core.commands import AnyReply, BalanceView, Command, UsageView
from engine.core.effects import DomainEvent, Effects
from engine.runtime.errors import (
    EngineClosed,
    EngineError,
    EngineFault,
    Overloaded,
    ShardMoved,
    StoreUnavailable,
)
from gateway.cluster.rpc import Peer, PeerLost, Server
from gateway.feed.hub import views_of
from persistence.cluster import LEADER, LeaseManager, Leases, shard_of

__all__ = ["Node", "ClusterRuntime"]

log = structlog.get_logger("creditd.cluster")

_ERRORS: dict[str, type[EngineError]] = {
    cls.__name__: cls
    for cls in (Overloaded, StoreUnavailable, ShardMoved, EngineClosed, EngineFault)}
_command = msgspec.msgpack.Decoder(Command).decode
_reply = msgspec.msgpack.Decoder(AnyReply).decode
_events = msgspec.msgpack.Decoder(list[DomainEvent]).decode
_balances = msgspec.msgpack.Decoder(list[BalanceView]).decode
_usage = msgspec.msgpack.Decoder(list[UsageView]).decode
_encode = msgspec.msgpack.Encoder().encode

# Notes queued per peer at most; past it the oldest feed frames go (a subscriber that
# misses one sees the gap in its sequence numbers and resumes from the store).
_OUTGOING_MAX = 10_000
# Frames held for one customer while its catch-up reads the store; past it they are
# dropped and read from the store by a second catch-up.
_HELD_MAX = 10_000


def new_node_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{os.urandom(3).hex()}"


class _Outgoing:
    """Notes for one peer, sent in order by one task."""

    def __init__(self, peer: Peer) -> None:
        self.peer = peer
        self.queue: deque[tuple[str, Any]] = deque()
        self.wake = anyio.Event()
        self.dropped = 0

    def post(self, kind: str, body: Any) -> None:
        if len(self.queue) >= _OUTGOING_MAX:
            self.queue.popleft()
            self.dropped += 1
        self.queue.append((kind, body))
        self.wake.set()

    async def run(self) -> None:
        while True:
            while not self.queue:
                if self.peer.closed:
                    return
                self.wake = anyio.Event()
                await self.wake.wait()
            kind, body = self.queue.popleft()
            if not await self.peer.note(kind, body) and self.peer.closed:
                return


class Node:
    """One process of a cluster. Built before the store opens (the store's fence is
    `leases`), started with `start` once the runtime runs."""

    def __init__(self, *, secret_source: Callable[[], Any], host: str, port: int,
                 advertise: str | None, ttl_s: float, renew_s: float,
                 move_wait_s: float = 3.0, call_timeout_s: float = 10.0) -> None:
        self.node_id = new_node_id()
        self.host, self.port, self.advertise = host, port, advertise
        self.secret_source = secret_source
        self.leases = Leases(self.node_id, "", ttl_s=ttl_s, renew_s=renew_s)
        self.move_wait_s = move_wait_s
        self.call_timeout_s = call_timeout_s
        self.secret = ""
        self.store: Any = None
        self.runtime: Any = None
        self.manager: LeaseManager | None = None
        self.server: Server | None = None
        self._tg: TaskGroup | None = None
        self._peers: dict[str, Peer] = {}
        self._outgoing: dict[str, _Outgoing] = {}
        # Feed interest of peers: customer engine id or "@" + environment -> peer ids.
        self.remote_interest: dict[str, set[str]] = {}
        self._untrusted = anyio.Event()
        # Feed of customers subscribed here and owned elsewhere: the last sequence number
        # published here, the owner (node, epoch) it came from, and the notes held while a
        # catch-up from the store runs (`_catch_up`).
        self._seen: dict[str, int] = {}
        self._source: dict[str, tuple[str, int] | None] = {}
        self._catching: dict[str, list[Any]] = {}
        self._recatch: set[str] = set()
        self.catch_ups = 0
        self._wake_leader = anyio.Event()
        # Set by the app: what notices reach.
        self.hub: Any = None
        self.catalog: Any = None
        self.domain: Callable[[], Any] = lambda: None
        self.http: Callable[..., Any] | None = None  # the app, for forwarded HTTP calls
        self.recharges: Any = None  # the recharge executor: swept again after takeovers
        self.forwarded = self.served_for_peers = self.moved_waits = self.unknown_outcomes = 0

    # -- start and stop -------------------------------------------------------------------

    async def start(self, tg: TaskGroup, store: Any, runtime: Any) -> None:
        """Serve the internal channel, take leases, and wait until this node can route:
        it holds shards or sees their owners (a restart after a crash waits out the dead
        process's leases, `ttl_s` at most)."""
        self._tg, self.store, self.runtime = tg, store, runtime
        self.secret = await self.secret_source()
        self.server = Server(self.secret, self._on_call, self._on_note, self._peer_gone)
        port = await tg.start(self.server.serve, self.host, self.port)
        self.leases.address = self.advertise or f"{self.host}:{port}"
        self.manager = LeaseManager(store, self.leases, started_at_ms=int(time.time() * 1000),
                                    on_acquired=self._acquired, on_released=self._released,
                                    on_lost=self._lost)
        store.on_flushed = self._flushed
        runtime.purge_gate = self.leases.is_leader
        with anyio.move_on_after(self.leases.ttl_s + 2 * self.leases.renew_s + 1):
            while True:
                try:
                    await self.manager.round()
                except Exception as exc:  # noqa: BLE001 - the database is away: retry
                    log.warning("lease round failed", error=repr(exc))
                if len(self.leases.owners) >= 1024 or len(self.leases.held) > 1:
                    break
                await anyio.sleep(self.leases.renew_s)
        tg.start_soon(self._rounds)
        tg.start_soon(self._reindex)
        tg.start_soon(self._leader_waker)
        tg.start_soon(self._mesh)
        log.info("cluster node started", node=self.node_id, address=self.leases.address,
                 shards=len(self.leases.held))

    async def _rounds(self) -> None:
        assert self.manager is not None
        await anyio.sleep(self.leases.renew_s)
        await self.manager.run()

    async def _mesh(self) -> None:
        """After each lease round: a link to every live node (a node that joined learns
        which commits this node's subscribers want before it owns any of them), and the
        links to nodes that left dropped."""
        leases = self.leases
        while True:
            await leases.changed.wait()
            if self.hub is not None:
                self._watch_sources()
            for node_id, address in list(leases.nodes.items()):
                if node_id != self.node_id and node_id not in self._peers:
                    self._peer(node_id, address)
                    if self.hub is not None:
                        self._outgoing[node_id].post("interests", self.hub.interests())
            for node_id in [n for n in self._peers if n not in leases.nodes]:
                peer = self._peers.pop(node_id)
                out = self._outgoing.pop(node_id, None)
                peer.closed = True
                if out is not None:
                    out.wake.set()
                await peer.aclose()

    async def leave(self) -> None:
        """Hand every lease over (graceful shutdown), closing the links to peers."""
        if self.manager is not None:
            with anyio.CancelScope(shield=True), anyio.move_on_after(10):
                try:
                    await self.manager.leave()
                except Exception as exc:  # noqa: BLE001 - the leases lapse by themselves
                    log.warning("could not hand the leases over", error=repr(exc))
        for peer in list(self._peers.values()):
            await peer.aclose()

    # -- lease callbacks ------------------------------------------------------------------

    async def _acquired(self, shards: list[int]) -> None:
        # Runs between the database's takeover and serving: what earlier owners changed
        # in the key generations, then their timers (due customers are read again).
        await self.store.refresh_key_generations()
        self.runtime.recover_timers()
        if self.recharges is not None:
            self.recharges.sweep_now()
        self._untrusted.set()

    async def _released(self, shards: list[int]) -> None:
        gone = set(shards)

        def match(cid: str) -> bool:
            return shard_of(cid) in gone

        self.runtime.release_customers(match)
        # Let batches in flight finish, for one renewal period at most: this runs inside a
        # lease round, which holds up the next takeovers and hand-overs (the heartbeat has
        # its own task). Batches still in flight after it are fenced (503).
        with anyio.move_on_after(self.leases.renew_s):
            while self.runtime.busy_customers(match):
                await anyio.sleep(0.02)
        self.runtime.release_customers(match)

    async def _lost(self, shards: list[int]) -> None:
        gone = set(shards)
        self.runtime.release_customers(lambda cid: shard_of(cid) in gone)

    async def _reindex(self) -> None:
        """Read the keys into the store's filter for shards taken over (after the takeovers
        settle), so their new keys need no lookup (persistence/durable.py)."""
        leases = self.leases
        while True:
            await self._untrusted.wait()
            self._untrusted = anyio.Event()
            await anyio.sleep(2 * leases.renew_s)
            if self._untrusted.is_set():
                continue  # still taking shards: wait for them all
            todo = {s: lease.epoch for s, lease in list(leases.held.items())
                    if s != LEADER and s not in leases.trusted}
            if not todo:
                continue
            try:
                await self.store.reindex_keys(todo)
            except Exception as exc:  # noqa: BLE001 - keys are looked up meanwhile
                log.warning("key filter read-back failed; keys are looked up", error=repr(exc))
                self._untrusted.set()
                await anyio.sleep(5)

    # -- routing --------------------------------------------------------------------------

    async def submit(self, customer_id: str, command: Command, deadline_ms: int | None) -> Any:
        leases = self.leases
        shard = shard_of(customer_id)
        waited_until = None
        while True:
            if leases.holds(shard):
                try:
                    return await self.runtime.submit(customer_id, command,
                                                     deadline_ms=deadline_ms)
                except ShardMoved:
                    pass  # lost it meanwhile: nothing was applied; find the new owner
            else:
                owner = leases.owners.get(shard)
                if owner is not None and owner[0] != self.node_id:
                    try:
                        return await self._forward(owner[0], owner[1], customer_id, command,
                                                   deadline_ms)
                    except ShardMoved:
                        pass  # it gave the shard up meanwhile
                    except PeerLost as exc:
                        if exc.sent:
                            self.unknown_outcomes += 1
                            raise StoreUnavailable(
                                "the node that owns this customer stopped answering; the "
                                "command may have been applied: retry it with its "
                                "idempotency key", retry_after_s=1.0) from exc
            now = time.monotonic()
            if waited_until is None:
                waited_until = now + self.move_wait_s
                self.moved_waits += 1
            if now >= waited_until:
                raise ShardMoved("this customer is moving between nodes; retry shortly",
                                 retry_after_s=1.0)
            with anyio.move_on_after(min(waited_until - now, leases.renew_s)):
                await leases.changed.wait()

    def _peer(self, node_id: str, address: str) -> Peer:
        peer = self._peers.get(node_id)
        if peer is None or peer.address != address:
            assert self._tg is not None
            peer = self._peers[node_id] = Peer(
                node_id, address, own_id=self.node_id, secret=self.secret, tg=self._tg,
                on_note=self._on_note, on_connected=self._connected)
            out = self._outgoing[node_id] = _Outgoing(peer)
            self._tg.start_soon(out.run)
        return peer

    async def _forward(self, node_id: str, address: str, customer_id: str, command: Command,
                       deadline_ms: int | None) -> Any:
        self.forwarded += 1
        ok, body = await self._peer(node_id, address).call(
            "submit", [customer_id, _encode(command), deadline_ms], self.call_timeout_s)
        if ok:
            return _reply(body)
        raise _error(body)

    # -- the internal channel -------------------------------------------------------------

    async def _on_call(self, kind: str, body: Any, peer: str) -> tuple[bool, Any]:
        if kind == "submit":
            customer_id, raw, deadline_ms = body
            if not self.leases.holds(shard_of(customer_id)):
                return False, ["ShardMoved", "not the owner", 0.2]
            self.served_for_peers += 1
            try:
                reply = await self.runtime.submit(customer_id, _command(raw),
                                                  deadline_ms=deadline_ms)
            except EngineError as exc:
                return False, [type(exc).__name__, str(exc), exc.retry_after_s]
            return True, _encode(reply)
        if kind == "http" and self.http is not None:
            return True, await self.http(*body)
        return False, ["EngineFault", f"unknown call {kind!r}", 1.0]

    def _on_note(self, kind: str, body: Any, peer: str) -> None:
        if kind == "feed":
            if self.hub is not None:
                self._feed(body)
        elif kind == "interest":
            key, present = body
            if present:
                self.remote_interest.setdefault(key, set()).add(peer)
            else:
                self._drop_interest(key, peer)
        elif kind == "interests":
            for peers in self.remote_interest.values():
                peers.discard(peer)
            for key in body:
                self.remote_interest.setdefault(key, set()).add(peer)
        elif kind == "doc":
            self._forget_document(*body)
        elif kind == "ent":
            env, customer_id = body
            domain = self.domain()
            if domain is not None:
                domain.state.entitlements.invalidate(env, customer_id)
            if self.hub is not None:
                self.hub.entitlements_changed(env, customer_id)
        elif kind == "pkg":
            env, facts = body
            if self.hub is not None:
                self.hub.package_published(env, facts)
        elif kind == "wake":
            webhooks = self.webhooks()
            if webhooks is not None:
                webhooks.wake()

    webhooks: Callable[[], Any] = staticmethod(lambda: None)  # type: ignore[assignment]

    # -- the feed of customers owned elsewhere ------------------------------------------

    def _feed(self, body: Any) -> None:
        """A commit's frames from its owner. Published in sequence order with no gap and
        no repeat: a gap (frames lost with a dead owner or a broken link) is filled from
        the store first (`_catch_up`), and what arrives meanwhile waits for it."""
        customer_id, seq, op, events, pools, usage = body
        held = self._catching.get(customer_id)
        if held is not None:
            if len(held) < _HELD_MAX:
                held.append(body)
            else:  # bounded: what does not fit is read from the store by another round
                self._recatch.add(customer_id)
            return
        decoded = _events(events)
        seen = self._seen.get(customer_id)
        if seen is not None and decoded and decoded[0].seq > seen + 1:
            self._catching[customer_id] = [body]
            assert self._tg is not None
            self._tg.start_soon(self._catch_up, customer_id)
            return
        self._publish(customer_id, seq, op, decoded, _balances(pools), _usage(usage))

    def _publish(self, customer_id: str, seq: int, op: int, events: list[DomainEvent],
                 pools: list[BalanceView], usage: list[UsageView]) -> None:
        seen = self._seen.get(customer_id)
        if seen is not None:
            events = [e for e in events if e.seq > seen]
        if self.hub.subscribed(customer_id):
            self._seen[customer_id] = max(seq, seen or 0)
        self.hub.publish_views(customer_id, seq, op, events, pools, usage)

    async def _catch_up(self, customer_id: str) -> None:
        """Publish what the store has of the customer's events after the last one
        published here, then the frames that arrived meanwhile."""
        self.catch_ups += 1
        try:
            after = self._seen.get(customer_id)
            if after is None:
                after = self.hub.seq_floor(customer_id)
            if after is not None:
                for _ in range(100):
                    events = await self.store.customer_events(customer_id, after, 1000)
                    if not events:
                        break
                    self._publish(customer_id, events[-1].seq, 0, events, [], [])
                    after = events[-1].seq
        except Exception as exc:  # noqa: BLE001 - the frames that came are still sent
            log.warning("feed catch-up failed", customer=customer_id, error=repr(exc))
        finally:
            for body in self._catching.pop(customer_id, []):
                customer, seq, op, events, pools, usage = body
                self._publish(customer, seq, op, _events(events), _balances(pools),
                              _usage(usage))
            if customer_id in self._recatch:  # frames were dropped meanwhile: again
                self._recatch.discard(customer_id)
                self._catching[customer_id] = []
                assert self._tg is not None
                self._tg.start_soon(self._catch_up, customer_id)

    def _watch_sources(self) -> None:
        """After a lease round: the customers subscribed here whose owner changed (a
        failover or a move) may have lost frames on the way: catch them up."""
        for customer_id in list(self._source):
            if not self.hub.subscribed(customer_id):
                self._seen.pop(customer_id, None)
                del self._source[customer_id]
                continue
            source = self._source_of(customer_id)
            before = self._source.get(customer_id, source)
            self._source[customer_id] = source
            if source != before and customer_id not in self._catching:
                self._catching[customer_id] = []
                assert self._tg is not None
                self._tg.start_soon(self._catch_up, customer_id)

    def _drop_interest(self, key: str, peer: str) -> None:
        peers = self.remote_interest.get(key)
        if peers is not None:
            peers.discard(peer)
            if not peers:
                del self.remote_interest[key]

    def _forget_document(self, table: str, env: str, ident: str) -> None:
        catalog = self.catalog
        if catalog is None:
            return
        if table == "api_keys":
            assert self._tg is not None
            self._tg.start_soon(self._reload_keys)
        elif table == "package_versions":
            from engine.domain.packages.store import forget_latest  # noqa: PLC0415

            kind, _, package_id = ident.partition("/")
            forget_latest(catalog, env, kind, package_id)
        else:
            catalog.forget(table, env, ident)

    async def _reload_keys(self) -> None:
        try:
            await self.catalog.load_keys()
        except Exception as exc:  # noqa: BLE001
            log.warning("could not reload API keys", error=repr(exc))

    def _peer_gone(self, peer: str) -> None:
        """A peer's link to this node ended: it may have sent notices that never arrived,
        so every cache goes, and its feed interest with it."""
        for key in [k for k, peers in self.remote_interest.items() if peer in peers]:
            self._drop_interest(key, peer)
        # Frames it was sending may be lost: catch its customers up from the store.
        for customer_id in list(self._source):
            owner = self.leases.owners.get(shard_of(customer_id))
            if owner is not None and owner[0] == peer and customer_id not in self._catching:
                self._catching[customer_id] = []
                assert self._tg is not None
                self._tg.start_soon(self._catch_up, customer_id)
        if self.catalog is not None:
            from engine.domain.packages.store import forget_all_latest  # noqa: PLC0415

            self.catalog.forget_all()
            forget_all_latest(self.catalog)
            assert self._tg is not None
            self._tg.start_soon(self._reload_keys)
        domain = self.domain()
        if domain is not None:
            domain.state.entitlements.entries.clear()
            domain.state.entitlements.epoch += 1

    def _connected(self, peer: Peer) -> None:
        # A new link: the peer learns which commits this node's subscribers want.
        if self.hub is not None:
            self._outgoing[peer.node_id].post("interests", self.hub.interests())

    # -- notices out ----------------------------------------------------------------------

    def _broadcast(self, kind: str, body: Any) -> None:
        for node_id, address in list(self.leases.nodes.items()):
            if node_id != self.node_id:
                self._peer(node_id, address)
                self._outgoing[node_id].post(kind, body)

    def _source_of(self, customer_id: str) -> tuple[str, int] | None:
        """Who commits for the customer now: (node, epoch), None while nobody does."""
        shard = shard_of(customer_id)
        lease = self.leases.held.get(shard)
        if lease is not None:
            return (self.node_id, lease.epoch)
        owner = self.leases.owners.get(shard)
        return (owner[0], owner[2]) if owner is not None else None

    def interest(self, key: str, present: bool) -> None:
        if present and not key.startswith("@"):
            self._source.setdefault(key, self._source_of(key))
        self._broadcast("interest", [key, present])

    def document_changed(self, table: str, env: str, ident: str) -> None:
        self._broadcast("doc", [table, env, ident])

    def entitlements_changed(self, env: str, customer_id: str) -> None:
        self._broadcast("ent", [env, customer_id])

    def package_published(self, env: str, facts: dict[str, Any]) -> None:
        self._broadcast("pkg", [env, facts])

    def on_committed(self, customer_id: str, fx: Effects) -> None:
        """The runtime's commit hook: send the batch's feed frames to the peers whose
        subscribers want them. Never blocks."""
        if customer_id in self._source:  # subscribed here: the hub published it locally
            self._seen[customer_id] = fx.seq
        interest = self.remote_interest
        if not interest:
            return
        peers = interest.get(customer_id)
        env_peers = interest.get("@" + customer_id.partition("/")[0])
        if not peers and not env_peers:
            return
        pools, usage = views_of(fx, int(time.time() * 1000))
        body = [customer_id, fx.seq, fx.op, _encode(fx.events), _encode(pools), _encode(usage)]
        for node_id in (peers or set()) | (env_peers or set()):
            out = self._outgoing.get(node_id)
            if out is None:
                address = self.leases.nodes.get(node_id)
                if address is None:
                    continue
                self._peer(node_id, address)
                out = self._outgoing[node_id]
            out.post("feed", body)

    def _flushed(self) -> None:
        if not self.leases.is_leader():
            self._wake_leader.set()

    async def _leader_waker(self) -> None:
        """Tell the leader that the outbox grew (its webhook relay reads it), at most every
        few milliseconds however many flushes land."""
        while True:
            await self._wake_leader.wait()
            self._wake_leader = anyio.Event()
            leader = self.leases.owners.get(LEADER)
            if leader is not None and leader[0] != self.node_id:
                self._peer(leader[0], leader[1])
                self._outgoing[leader[0]].post("wake", None)
            await anyio.sleep(0.005)

    async def forward_http(self, method: str, path: str, query: bytes,
                           headers: list[tuple[bytes, bytes]], body: bytes) -> Any:
        """An HTTP request only the leader serves (the webhook endpoint API), sent to it;
        returns (status, headers, body)."""
        leader = self.leases.owners.get(LEADER)
        deadline = time.monotonic() + self.move_wait_s
        while leader is None or leader[0] == self.node_id:
            if time.monotonic() >= deadline:
                raise ShardMoved("no node leads the cluster right now; retry shortly",
                                 retry_after_s=1.0)
            with anyio.move_on_after(self.leases.renew_s):
                await self.leases.changed.wait()
            leader = self.leases.owners.get(LEADER)
        ok, result = await self._peer(leader[0], leader[1]).call(
            "http", [method, path, query, headers, body], self.call_timeout_s)
        if not ok:
            raise _error(result)
        return result

    def statistics(self) -> dict[str, Any]:
        return {**self.leases.statistics(), "forwarded": self.forwarded,
                "served_for_peers": self.served_for_peers, "moved_waits": self.moved_waits,
                "unknown_outcomes": self.unknown_outcomes,
                "fenced": getattr(self.store, "fenced", 0),
                "peers_connected": self.server.connections if self.server else 0,
                "notes_dropped": sum(o.dropped for o in self._outgoing.values()),
                "feed_interest_remote": len(self.remote_interest),
                "feed_catch_ups": self.catch_ups}


def _error(body: Any) -> EngineError:
    name, message, retry_after_s = body
    return _ERRORS.get(name, EngineFault)(message, retry_after_s=float(retry_after_s))


class ClusterRuntime:
    """The runtime as the domain and the gateway see it in a cluster: `submit` goes to
    the customer's owner (`Node.submit`); everything else is this process's runtime."""

    def __init__(self, runtime: Any, node: Node) -> None:
        self._runtime = runtime
        self._node = node

    async def submit(self, customer_id: str, command: Command, *,
                     deadline_ms: int | None = None) -> Any:
        return await self._node.submit(customer_id, command, deadline_ms)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._runtime, name)
