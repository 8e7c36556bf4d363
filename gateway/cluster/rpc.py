"""The nodes' internal channel: commands forwarded to a customer's owner, and notes.

One TCP connection from each node to each other node, multiplexed (many calls in flight,
answered in any order). Frames are a 4-byte big-endian length, then msgpack:

- the client's hello: `[HELLO, node id, token]`, the token an HMAC-SHA256 of the node id
  with the cluster secret (every node reads it from the database), checked before
  anything else is read;
- client to server: `[CALL, id, kind, body]`, answered `[RETURN, id, ok, body]`;
- either way: `[NOTE, kind, body]`, never answered (cache invalidations, feed frames,
  which commits a peer wants to see).

Why not HTTP: a forwarded consumption is the hot path of a cluster, and a length-prefixed
msgpack frame costs a few microseconds where an HTTP request through the framework costs
a hundred.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import struct
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import msgspec
import structlog
from anyio.abc import ByteStream, SocketAttribute, TaskGroup
from anyio.streams.buffered import BufferedByteReceiveStream

__all__ = ["Server", "Peer", "PeerLost", "token_for", "HELLO", "CALL", "RETURN", "NOTE"]

log = structlog.get_logger("creditd.cluster")

HELLO, CALL, RETURN, NOTE = 0, 1, 2, 3
FRAME_BYTES_MAX = 64 << 20  # a forwarded request body is at most the HTTP limit, and more
# Calls a peer may have in flight on one connection; past it they are answered Overloaded
# at once (429 to the client), never queued: the runtime's own limits are per process.
CALLS_IN_FLIGHT_MAX = 8192
_LENGTH = struct.Struct(">I")
_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder().decode

Call = Callable[[str, Any, str], Awaitable[tuple[bool, Any]]]
Note = Callable[[str, Any, str], None]


# What a connection's end looks like from either side.
_GONE = (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError,
         anyio.IncompleteRead, OSError, TimeoutError, ValueError, msgspec.DecodeError)


class PeerLost(Exception):
    """The connection to a peer failed. `sent`: whether the call had been written (its
    outcome is then unknown)."""

    def __init__(self, message: str, *, sent: bool) -> None:
        super().__init__(message)
        self.sent = sent


def token_for(secret: str, node_id: str) -> bytes:
    return hmac.new(secret.encode(), node_id.encode(), hashlib.sha256).digest()


async def _read(stream: BufferedByteReceiveStream) -> Any:
    (length,) = _LENGTH.unpack(await stream.receive_exactly(4))
    if length > FRAME_BYTES_MAX:
        raise ValueError(f"frame of {length} bytes")
    return _decode(await stream.receive_exactly(length))


def _frame(message: Any) -> bytes:
    body = _encode(message)
    return _LENGTH.pack(len(body)) + body


class _Connection:
    """One authenticated connection: frames written under a lock, read by one task."""

    def __init__(self, stream: ByteStream) -> None:
        self.stream = stream
        self.reader = BufferedByteReceiveStream(stream)
        self.lock = anyio.Lock()

    async def send(self, message: Any) -> None:
        data = _frame(message)
        async with self.lock:
            await self.stream.send(data)


class Server:
    """Accepts peers' connections on `host:port` (0: any free port; `port` says which)
    and hands their calls to `on_call(kind, body, peer) -> (ok, body)` (each in a task of
    its own) and their notes to `on_note(kind, body, peer)`. `on_peer_gone(peer)` runs
    when a peer's connection ends: notes it sent may have been lost."""

    def __init__(self, secret: str, on_call: Call, on_note: Note,
                 on_peer_gone: Callable[[str], None]) -> None:
        self.secret = secret
        self.on_call = on_call
        self.on_note = on_note
        self.on_peer_gone = on_peer_gone
        self.port = 0
        self.calls = 0
        self.connections = 0
        self.refused = 0
        self._in_flight = 0

    async def serve(self, host: str, port: int, *,
                    task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED) -> None:
        listener = await anyio.create_tcp_listener(local_host=host, local_port=port)
        self.port = int(listener.extra(SocketAttribute.local_port))
        task_status.started(self.port)
        async with listener:
            await listener.serve(self._connection)

    async def _connection(self, stream: ByteStream) -> None:
        conn = _Connection(stream)
        peer = "?"
        try:
            with anyio.fail_after(5):
                hello = await _read(conn.reader)
            if (not isinstance(hello, list) or len(hello) != 3 or hello[0] != HELLO
                    or not isinstance(hello[2], bytes)
                    or not hmac.compare_digest(hello[2], token_for(self.secret, str(hello[1])))):
                log.warning("cluster: a connection without the cluster's token, closed")
                return
            peer = str(hello[1])
            self.connections += 1
            async with anyio.create_task_group() as tg:
                try:
                    while True:
                        message = await _read(conn.reader)
                        if message[0] == CALL:
                            if self._in_flight >= CALLS_IN_FLIGHT_MAX:
                                self.refused += 1
                                tg.start_soon(conn.send, [RETURN, message[1], False, [
                                    "Overloaded", "too many forwarded calls in flight", 0.5]])
                                continue
                            self._in_flight += 1
                            tg.start_soon(self._answer, conn, message[1], message[2],
                                          message[3], peer)
                        elif message[0] == NOTE:
                            try:
                                self.on_note(message[1], message[2], peer)
                            except Exception:  # noqa: BLE001 - one bad note must not cut it
                                log.exception("cluster: a note failed", kind=message[1])
                except _GONE:
                    pass  # the peer went: calls it sent are answered into the void
                tg.cancel_scope.cancel()
        except _GONE:
            pass
        except Exception:  # noqa: BLE001 - one connection's trouble never stops the listener
            log.exception("cluster: a peer connection failed")
        finally:
            with anyio.CancelScope(shield=True):
                await stream.aclose()
            if peer != "?":
                self.connections -= 1
                self.on_peer_gone(peer)

    async def _answer(self, conn: _Connection, ident: int, kind: str, body: Any,
                      peer: str) -> None:
        self.calls += 1
        try:
            ok, result = await self.on_call(kind, body, peer)
        except Exception as exc:  # noqa: BLE001 - answered as an error, never left hanging
            log.exception("cluster: a forwarded call failed", kind=kind)
            ok, result = False, ["EngineFault", f"internal error: {exc!r}", 1.0]
        finally:
            self._in_flight -= 1
        try:
            await conn.send([RETURN, ident, ok, result])
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            pass  # the peer is gone; it fails the call itself


class _Pending:
    __slots__ = ("done", "ok", "body", "error")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.ok = False
        self.body: Any = None
        self.error: PeerLost | None = None


class Peer:
    """The connection to one other node, opened on first use and again after it broke.
    Its reader runs in `tg`; `on_note(kind, body, peer)` takes notes the peer sends back
    on it."""

    def __init__(self, node_id: str, address: str, *, own_id: str, secret: str,
                 tg: TaskGroup, on_note: Note, on_connected: Callable[[Peer], None]) -> None:
        self.node_id = node_id
        self.address = address
        self.own_id = own_id
        self.secret = secret
        self.tg = tg
        self.on_note = on_note
        self.on_connected = on_connected
        self._conn: _Connection | None = None
        self._connecting = anyio.Lock()
        self._pending: dict[int, _Pending] = {}
        self._ids = itertools.count(1)
        self.closed = False
        self.calls = 0

    async def _connection(self) -> _Connection:
        conn = self._conn
        if conn is not None:
            return conn
        async with self._connecting:
            if self._conn is not None:
                return self._conn
            if self.closed:
                raise PeerLost(f"peer {self.node_id} is gone", sent=False)
            host, _, port = self.address.rpartition(":")
            try:
                with anyio.fail_after(2):
                    stream = await anyio.connect_tcp(host.strip("[]"), int(port))
            except (OSError, TimeoutError) as exc:
                raise PeerLost(f"cannot reach {self.address}: {exc!r}", sent=False) from exc
            conn = _Connection(stream)
            await conn.send([HELLO, self.own_id, token_for(self.secret, self.own_id)])
            self._conn = conn
            self.tg.start_soon(self._reader, conn)
            self.on_connected(self)
            return conn

    async def _reader(self, conn: _Connection) -> None:
        try:
            while True:
                message = await _read(conn.reader)
                if message[0] == RETURN:
                    pending = self._pending.pop(message[1], None)
                    if pending is not None:
                        pending.ok, pending.body = message[2], message[3]
                        pending.done.set()
                elif message[0] == NOTE:
                    try:
                        self.on_note(message[1], message[2], self.node_id)
                    except Exception:  # noqa: BLE001
                        log.exception("cluster: a note failed", kind=message[1])
        except _GONE:
            pass
        except Exception:  # noqa: BLE001
            log.exception("cluster: reading from a peer failed", peer=self.node_id)
        finally:
            self._broken(conn)

    def _broken(self, conn: _Connection) -> None:
        if self._conn is conn:
            self._conn = None
        for pending in self._pending.values():
            pending.error = PeerLost(f"the connection to {self.address} broke", sent=True)
            pending.done.set()
        self._pending.clear()
        self.tg.start_soon(_close, conn)

    async def call(self, kind: str, body: Any, timeout_s: float) -> tuple[bool, Any]:
        conn = await self._connection()
        ident = next(self._ids)
        pending = self._pending[ident] = _Pending()
        self.calls += 1
        try:
            await conn.send([CALL, ident, kind, body])
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
            self._pending.pop(ident, None)
            self._broken(conn)
            raise PeerLost(f"cannot send to {self.address}: {exc!r}", sent=False) from exc
        with anyio.move_on_after(timeout_s):
            await pending.done.wait()
        if not pending.done.is_set():
            self._pending.pop(ident, None)
            raise PeerLost(f"{self.address} did not answer in {timeout_s} s", sent=True)
        if pending.error is not None:
            raise pending.error
        return pending.ok, pending.body

    async def note(self, kind: str, body: Any) -> bool:
        """Send a note; False if the peer cannot be reached (notes are best effort: a
        peer that lost its connection drops its caches, see `Server.on_peer_gone`)."""
        try:
            conn = await self._connection()
            await conn.send([NOTE, kind, body])
        except (PeerLost, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            return False
        return True

    async def aclose(self) -> None:
        self.closed = True
        if self._conn is not None:
            await _close(self._conn)


async def _close(conn: _Connection) -> None:
    with anyio.CancelScope(shield=True):
        try:
            await conn.stream.aclose()
        except Exception:  # noqa: BLE001
            pass
