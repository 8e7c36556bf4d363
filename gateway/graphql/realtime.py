"""Stigg's GraphQL over websockets: `ws(s)://HOST/graphql`, the graphql-transport-ws
protocol of the `graphql-ws` library (what Stigg's Node SDK speaks), for the Subscription
root and for queries and mutations.

A connection goes: the client offers the `graphql-transport-ws` subprotocol (4406
otherwise) and sends `connection_init` within INIT_TIMEOUT_S (4408) whose payload carries
the API key as `headers: {"X-API-KEY": …}` (the Node SDK's `connectionParams`; the
upgrade request's own X-API-KEY header is taken too); the server answers `connection_ack`,
or closes with 4401 (no key, or "Invalid API key": the reason the Node SDK reads as final)
or 4403 (X-ENVIRONMENT-ID does not match the key). Then `subscribe` {id, payload: {query,
operationName, variables}} runs an operation: a query or mutation answers one `next` and
`complete`; a subscription a `next` per event until either side sends `complete`. A
document that does not validate is an `error` message. `ping` is answered with `pong`.
Anything else closes the socket: 4400 for a malformed or unexpected message (the reason
says what), 4401 for `subscribe` before the ack, 4409 for an id already running, 4429 for a
second `connection_init`, 1009 for a message over MESSAGE_BYTES_MAX. At most
OPERATIONS_MAX operations run at once on a connection; one more is refused with an `error`
(RateLimitExceeded).

The environment of the key scopes everything: a subscription sees the events of that
environment's customers only.

Subscriptions are fed by the live feed's hub (gateway/feed/hub.py): each one is a hub
`Watcher` of its environment — committed pool balances and usage counters from the
runtime's commit hook, and the domain's notices (entitlements changed, package published)
— with the feed's bounded, coalescing backlog: a watcher holds at most the feed's
`backlog_max` distinct items (a customer's pool, counter or entitlements; a newer one
replaces an unsent one), and one more closes the connection with 1013 (try again later):
a client that fell behind reconnects and reloads (the Node SDK clears its cache on
reconnect). Watchers count against the feed's subscriber limit (1013 when it is reached).
A source that cannot build its payload (the database unreachable) closes with 1013 too.

The subscriptions and what feeds each are listed in resolvers/live.py, their sources.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable
from decimal import Decimal
from typing import Any

import anyio
import msgspec
import structlog
from graphql import (
    ExecutionResult,
    OperationType,
    get_operation_ast,
    subscribe,
)
from litestar import WebSocket

from engine.runtime.errors import EngineError, StoreUnavailable
from gateway.feed.hub import Hub, LimitReached
from gateway.graphql import endpoint

__all__ = ["INIT_TIMEOUT_S", "MESSAGE_BYTES_MAX", "OPERATIONS_MAX", "PROTOCOL", "serve"]

log = structlog.get_logger("creditd.graphql")
_encode = msgspec.json.Encoder(decimal_format="number").encode

PROTOCOL = "graphql-transport-ws"
INIT_TIMEOUT_S = 3.0  # graphql-ws's own default
MESSAGE_BYTES_MAX = 1 << 20  # as a POST /graphql body
OPERATIONS_MAX = 64  # running at once on one connection (the Node SDK runs 3 or 4)
_CLOSE_TIMEOUT_S = 2.0

# Close codes: graphql-ws's (CloseCode in its common.ts), and RFC 6455's.
BAD_REQUEST = 4400
UNAUTHORIZED = 4401
FORBIDDEN = 4403
SUBPROTOCOL_NOT_ACCEPTABLE = 4406
INIT_TIMEOUT = 4408
SUBSCRIBER_EXISTS = 4409
TOO_MANY_INITS = 4429
TOO_BIG = 1009
INTERNAL = 1011
TRY_AGAIN = 1013


class _Close(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


# -- the protocol ---------------------------------------------------------------------------


async def serve(socket: WebSocket) -> None:
    if PROTOCOL not in (socket.scope.get("subprotocols") or ()):
        await socket.accept()
        await _close(socket, SUBPROTOCOL_NOT_ACCEPTABLE, "Subprotocol not acceptable")
        return
    await socket.accept(subprotocols=PROTOCOL)
    conn = _Connection(socket)
    try:
        async with anyio.create_task_group() as tasks:
            conn.tasks = tasks
            try:
                await conn.receive_loop()
            except _Close as c:
                conn.close_soon(c.code, c.reason)
            except OSError:  # uvicorn's ClientDisconnected; the client is gone
                conn.gone = True
            tasks.cancel_scope.cancel()
    finally:
        for op in list(conn.operations.values()):
            op.release()
    if conn.closing is not None and not conn.gone:
        await _close(socket, *conn.closing)


async def _close(socket: WebSocket, code: int, reason: str) -> None:
    """Close, bounded in time: a stalled client cannot hold the handler. Close reasons are
    capped at 123 bytes."""
    with anyio.move_on_after(_CLOSE_TIMEOUT_S):
        try:
            await socket.close(code, reason.encode()[:120].decode(errors="ignore"))
        except Exception as exc:  # noqa: BLE001  # the client may be gone: nothing to tell it
            log.debug("graphql-ws: closing a gone client", error=repr(exc))


def _message(raw: str) -> dict[str, Any]:
    """A client message, checked as graphql-ws checks it (4400 naming what is wrong)."""
    try:
        # Amounts keep their digits (schema.py's Float takes Decimals).
        message = json.loads(raw, parse_float=Decimal)
    except ValueError:
        raise _Close(BAD_REQUEST, "Invalid message received: not JSON") from None
    if not isinstance(message, dict):
        raise _Close(BAD_REQUEST, "Invalid message received: not an object")
    kind = message.get("type")
    if not isinstance(kind, str) or not kind:
        raise _Close(BAD_REQUEST, "Invalid message received: 'type' must be a string")
    payload = message.get("payload")
    if kind in ("connection_init", "ping", "pong"):
        if payload is not None and not isinstance(payload, dict):
            raise _Close(BAD_REQUEST, f"Invalid message received: {kind} 'payload' must be "
                         "an object")
    elif kind in ("subscribe", "complete"):
        op_id = message.get("id")
        if not isinstance(op_id, str) or not op_id:
            raise _Close(BAD_REQUEST, f"Invalid message received: {kind} needs an 'id'")
        if kind == "subscribe":
            if not isinstance(payload, dict) or not isinstance(payload.get("query"), str):
                raise _Close(BAD_REQUEST, "Invalid message received: subscribe 'payload' "
                             "must be an object with a 'query' string")
            if payload.get("variables") is not None and \
                    not isinstance(payload["variables"], dict):
                raise _Close(BAD_REQUEST, "Invalid message received: 'variables' must be "
                             "an object")
            if payload.get("operationName") is not None and \
                    not isinstance(payload["operationName"], str):
                raise _Close(BAD_REQUEST, "Invalid message received: 'operationName' must "
                             "be a string")
    else:
        raise _Close(BAD_REQUEST, f"Invalid message received: unexpected type {kind!r}")
    return message


def _api_key(socket: WebSocket, params: dict[str, Any]) -> tuple[str | None, str | None]:
    """The API key and X-ENVIRONMENT-ID of `connection_init`'s payload (`headers`, any
    case), else of the upgrade request."""
    headers = params.get("headers")
    found: dict[str, Any] = {}
    if isinstance(headers, dict):
        found = {str(k).lower(): v for k, v in headers.items()}
    key = found.get("x-api-key") or socket.headers.get("x-api-key")
    env = found.get("x-environment-id") or socket.headers.get("x-environment-id")
    return (key if isinstance(key, str) else None), (env if isinstance(env, str) else None)


class _Connection:
    def __init__(self, socket: WebSocket) -> None:
        self.socket = socket
        self.hub: Hub = socket.app.state.feed.hub
        self.env: str | None = None
        self.init_received = False
        self.operations: dict[str, _Operation] = {}
        self.tasks: Any = None  # the connection's task group
        self.send_lock = anyio.Lock()
        self.closing: tuple[int, str] | None = None
        self.gone = False

    def close_soon(self, code: int, reason: str) -> None:
        """End the connection with this close (the first one asked for wins)."""
        if self.closing is None:
            self.closing = (code, reason)
        self.tasks.cancel_scope.cancel()

    def overflowed(self) -> None:
        self.close_soon(TRY_AGAIN, "the client fell too far behind; reconnect")

    async def send(self, message: dict[str, Any]) -> None:
        text = _encode(message).decode()
        async with self.send_lock:
            await self.socket.send_text(text)

    async def receive(self) -> str | None:
        event = await self.socket.receive()
        if event["type"] == "websocket.disconnect":
            self.gone = True
            return None
        raw = event.get("text")
        if raw is None:
            data = event.get("bytes") or b""
            if len(data) > MESSAGE_BYTES_MAX:
                raise _Close(TOO_BIG, f"a message is limited to {MESSAGE_BYTES_MAX} bytes")
            try:
                raw = data.decode()
            except UnicodeDecodeError:
                raise _Close(BAD_REQUEST, "Invalid message received: not UTF-8") from None
        if len(raw) > MESSAGE_BYTES_MAX or len(raw.encode()) > MESSAGE_BYTES_MAX:
            raise _Close(TOO_BIG, f"a message is limited to {MESSAGE_BYTES_MAX} bytes")
        return raw

    async def receive_loop(self) -> None:
        with anyio.move_on_after(INIT_TIMEOUT_S) as waiting:
            while not self.init_received:
                raw = await self.receive()
                if raw is None:
                    return
                await self.handle(_message(raw))
        if waiting.cancelled_caught:
            raise _Close(INIT_TIMEOUT, "Connection initialisation timeout")
        while True:
            raw = await self.receive()
            if raw is None:
                return
            await self.handle(_message(raw))

    async def handle(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "connection_init":
            if self.init_received:
                raise _Close(TOO_MANY_INITS, "Too many initialisation requests")
            self.init_received = True
            key, asked = _api_key(self.socket, message.get("payload") or {})
            env, why = endpoint.environment_of(self.socket, key)
            if env is None:
                # "Invalid API key" is what the Node SDK takes as final (it stops retrying).
                raise _Close(UNAUTHORIZED, "Invalid API key" if key else "Missing API key")
            if asked is not None and asked != env:
                raise _Close(FORBIDDEN, "Forbidden: X-ENVIRONMENT-ID does not match the "
                             "API key's environment")
            self.env = env
            self.socket.scope.setdefault("state", {})["environment"] = env  # type: ignore[typeddict-item]
            await self.send({"type": "connection_ack"})
        elif kind == "ping":
            payload = message.get("payload")
            await self.send({"type": "pong", **({"payload": payload} if payload else {})})
        elif kind == "pong":
            pass
        elif kind == "subscribe":
            self.start(message["id"], message["payload"])
        elif kind == "complete":
            op = self.operations.get(message["id"])
            if op is not None:
                op.complete_sent = True  # the client asked: no `complete` back
                op.cancel.cancel()
                op.release()

    def start(self, op_id: str, payload: dict[str, Any]) -> None:
        if self.env is None:
            raise _Close(UNAUTHORIZED, "Unauthorized")
        if op_id in self.operations:
            raise _Close(SUBSCRIBER_EXISTS, f"Subscriber for {op_id} already exists")
        op = _Operation(self, op_id)
        if len(self.operations) >= OPERATIONS_MAX:
            self.tasks.start_soon(op.refuse, [endpoint.error_json(
                f"a connection runs at most {OPERATIONS_MAX} operations at once",
                "RateLimitExceeded", op.trace)])
            return
        self.operations[op_id] = op
        self.tasks.start_soon(op.run, payload)


class _Operation:
    """One `subscribe`: its id, its cancel scope, the watchers its sources hold. It is the
    GraphQL context too, standing in for the HTTP request the resolvers read (`app`,
    `scope`, `headers`: gateway/context.py)."""

    def __init__(self, conn: _Connection, op_id: str) -> None:
        self.conn = conn
        self.id = op_id
        self.trace = uuid.uuid4().hex
        self.cancel = anyio.CancelScope()
        self.streams: list[Any] = []  # resolvers/live.py's source streams
        self.complete_sent = False
        socket = conn.socket
        self.app = socket.app
        self.scope = socket.scope
        self.headers = socket.headers

    def __getattr__(self, name: str) -> Any:  # whatever else a resolver reads of a request
        return getattr(self.conn.socket, name)

    @property
    def env(self) -> str:
        assert self.conn.env is not None
        return self.conn.env

    @property
    def domain(self) -> Any:
        return self.app.state.services.domain

    def release(self) -> None:
        for stream in self.streams:
            stream.close()
        if self.conn.operations.get(self.id) is self:
            del self.conn.operations[self.id]

    async def next(self, result: ExecutionResult) -> None:
        payload: dict[str, Any] = {"data": result.data}
        if result.errors:
            payload["errors"] = [endpoint.refusal_json(e, self.trace) for e in result.errors]
        await self.conn.send({"id": self.id, "type": "next", "payload": payload})

    async def refuse(self, errors: list[dict[str, Any]]) -> None:
        try:
            await self.conn.send({"id": self.id, "type": "error", "payload": errors})
        except OSError:
            self.conn.gone = True

    async def run(self, payload: dict[str, Any]) -> None:
        with self.cancel:
            try:
                await self._run(payload)
            except _Close as c:
                self.conn.close_soon(c.code, c.reason)
            except OSError:
                self.conn.gone = True
                self.conn.tasks.cancel_scope.cancel()
            except (StoreUnavailable, EngineError) as exc:
                log.warning("graphql-ws: a subscription source failed", error=repr(exc))
                self.conn.close_soon(TRY_AGAIN, "the server cannot serve this now; reconnect")
            except Exception as exc:  # noqa: BLE001  # a bug: this connection, not the server
                log.error("graphql-ws: an operation failed", trace_id=self.trace,
                          error=repr(exc), exc_info=exc)
                self.conn.close_soon(INTERNAL, "internal error")
            finally:
                self.release()

    async def _run(self, payload: dict[str, Any]) -> None:
        document = endpoint.documents.get(payload["query"])
        if isinstance(document, list):
            await self.refuse(endpoint.invalid_json(document, self.trace))
            return
        name, variables = payload.get("operationName"), payload.get("variables")
        chosen = get_operation_ast(document, name)
        if chosen is None:
            await self.refuse([endpoint.error_json("Unable to identify operation",
                                                   "BadUserInput", self.trace)])
            return
        schema = endpoint.schema()
        if chosen.operation is not OperationType.SUBSCRIPTION:
            await self.next(await endpoint.execute_operation(
                payload["query"], document, name, chosen, variables, self))
        else:
            stream = subscribe(schema, document, variable_values=variables,
                               operation_name=name, context_value=self)
            if isinstance(stream, Awaitable):
                stream = await stream
            if isinstance(stream, ExecutionResult):
                for error in stream.errors or ():
                    if isinstance(error.original_error, LimitReached):
                        raise _Close(TRY_AGAIN, str(error.original_error))
                await self.next(stream)
            else:
                async for result in stream:
                    await self.next(result)
        if not self.complete_sent:
            self.complete_sent = True
            await self.conn.send({"id": self.id, "type": "complete"})
