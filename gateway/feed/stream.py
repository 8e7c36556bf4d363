"""The websocket endpoint `/api/v1/credits/stream` and customer token minting.

A connection goes: authenticate (X-API-KEY header, or a customer token in `token=`),
subscribe to the hub, read a snapshot through the customer's actor, replay from the outbox
what a resuming client missed (`since=`), then send what the hub queues until the client
leaves, the token expires or the backlog overflows. Frames and close codes: docs/feed.md.

Refusals are sent after the handshake, as an `error` frame followed by a close with a code
of the 4000 range: a browser sees neither the HTTP status of a refused handshake nor why.
"""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass
from typing import Any

import anyio
import msgspec
import structlog
from litestar import Request, Response, WebSocket, post, websocket
from litestar.exceptions import WebSocketDisconnect
from litestar.params import FromPath

from engine.core.commands import BalancesReply, GetBalances
from engine.core.effects import DomainEvent
from engine.domain.context import engine_id, require_customer
from engine.runtime.errors import EngineError
from gateway.context import domain, environment, ok, services
from gateway.errors import bad_input
from gateway.feed.hub import LimitReached, Subscriber, balance_json, event_frame
from gateway.feed.service import Feed
from gateway.feed.tokens import TTL_DEFAULT_S, TTL_MAX_S, Claims, TokenError, TokenExpired
from gateway.openapi import request_body
from gateway.wire import decode_body, iso

__all__ = ["ROUTES", "Close"]

log = structlog.get_logger("creditd.feed")
_encode = msgspec.json.Encoder(decimal_format="number").encode

# Close codes (docs/feed.md). 1000-range codes are the protocol's own.
BAD_REQUEST = 4400
UNAUTHORIZED = 4401
FORBIDDEN = 4403
NOT_FOUND = 4404
TOKEN_EXPIRED = 4408
OVERFLOW = 4409
TOO_MANY = 4429
TRY_AGAIN = 1013  # the engine is overloaded or the database unreachable: reconnect later
_CLOSE_TIMEOUT_S = 2.0
_REPLAY_PAGE = 1000


class Close(Exception):
    def __init__(self, code: int, error: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.error = error
        self.message = message


class TokenCreate(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    resource_id: str | None = None
    ttl_seconds: int = TTL_DEFAULT_S


def _feed(app_state: Any) -> Feed:
    return app_state.feed


@post("/api/v1/customers/{customer_id:str}/tokens", opt=request_body(TokenCreate))
async def mint_token(request: Request, customer_id: FromPath[str]) -> Response:
    body = await decode_body(request, TokenCreate)
    if not 1 <= body.ttl_seconds <= TTL_MAX_S:
        raise bad_input(f"must be between 1 and {TTL_MAX_S} seconds", "ttlSeconds")
    if body.resource_id is not None and not body.resource_id:
        raise bad_input("must not be empty", "resourceId")
    await require_customer(domain(request), environment(request), customer_id,
                           field="customerId")
    token, expires_s = _feed(request.app.state).tokens.mint(
        environment(request), customer_id, body.resource_id,
        domain(request).now_ms() // 1000,
        body.ttl_seconds)
    return ok({"token": token, "expiresAt": iso(expires_s * 1000), "customerId": customer_id,
               "resourceId": body.resource_id}, status=201)


def _query(socket: WebSocket, name: str) -> str | None:
    value = socket.query_params.get(name)
    if value is not None and not value:
        raise Close(BAD_REQUEST, "BadUserInput", f"{name}: must not be empty")
    return value


async def _authenticate(socket: WebSocket) -> tuple[str, Claims | None]:
    """The environment and, for a customer token, its claims."""
    catalog = services(socket).catalog
    key = socket.headers.get("x-api-key")
    token = socket.query_params.get("token")
    if key:
        env = catalog.environment_of(key)
        if env is None:
            raise Close(UNAUTHORIZED, "Unauthenticated", "X-API-KEY: the API key is not valid")
        asked = socket.headers.get("x-environment-id")
        if asked is not None and not hmac.compare_digest(asked.encode(), env.encode()):
            raise Close(FORBIDDEN, "Forbidden",
                        "X-ENVIRONMENT-ID does not match the API key's environment")
        return env, None
    if token:
        try:
            claims = _feed(socket.app.state).tokens.verify(
                token, socket.app.state.services.clock.now_ms() // 1000)
        except TokenExpired:
            raise Close(TOKEN_EXPIRED, "TokenExpired", "token: the token has expired") from None
        except TokenError as exc:
            raise Close(UNAUTHORIZED, "Unauthenticated", f"token: {exc}") from None
        return claims.environment, claims
    raise Close(UNAUTHORIZED, "Unauthenticated",
                "send the X-API-KEY header (servers) or a customer token as token= (browsers)")


@dataclass
class _Request:
    env: str
    customer_id: str
    currency_id: str | None
    resource_id: str | None
    since: int | None
    expires_at_ms: int | None


async def _parse(socket: WebSocket) -> _Request:
    env, claims = await _authenticate(socket)
    customer_id = _query(socket, "customerId")
    currency_id = _query(socket, "currencyId")
    resource_id = _query(socket, "resourceId")
    raw_since = _query(socket, "since")
    since = None
    if raw_since is not None:
        if not (raw_since.isascii() and raw_since.isdigit()) or len(raw_since) > 18:
            raise Close(BAD_REQUEST, "BadUserInput",
                        "since: must be a sequence number this feed sent (an integer >= 0)")
        since = int(raw_since)
    expires = None
    if claims is not None:
        # A token is the whole authority of a browser: it names the customer (and maybe
        # the resource) and nothing else can be read with it.
        if customer_id is None:
            customer_id = claims.customer_id
        elif customer_id != claims.customer_id:
            raise Close(FORBIDDEN, "Forbidden",
                        "customerId: the token was issued for another customer")
        if claims.resource_id is not None:
            if resource_id is None:
                resource_id = claims.resource_id
            elif resource_id != claims.resource_id:
                raise Close(FORBIDDEN, "Forbidden",
                            "resourceId: the token was issued for another resource")
        expires = claims.expires_at_s * 1000
    if customer_id is None:
        raise Close(BAD_REQUEST, "BadUserInput", "customerId: is required")
    doc = await services(socket).catalog.get("customer_profiles", env, customer_id)
    if doc is None:
        raise Close(NOT_FOUND, "CustomerNotFound", f"customerId: customer {customer_id!r} "
                    "was not found")
    return _Request(env, customer_id, currency_id, resource_id, since, expires)


async def _send(socket: WebSocket, frame: str) -> None:
    await socket.send_text(frame)


async def _close(socket: WebSocket, code: int, error: str | None, message: str) -> None:
    """An error frame (the reason in full: close reasons are capped at 123 bytes) and the
    close. Bounded in time: a stalled client cannot hold the handler."""
    with anyio.move_on_after(_CLOSE_TIMEOUT_S):
        try:
            if error is not None:
                await _send(socket, _encode({"type": "error", "code": error,
                                             "message": message}).decode())
            await socket.close(code, message.encode()[:120].decode(errors="ignore"))
        except Exception as exc:  # noqa: BLE001  # the client may be gone: nothing to tell it
            log.debug("feed: closing a gone client", error=repr(exc))


def _wants(req: _Request, currency_id: str, resource_id: str | None) -> bool:
    return ((req.currency_id is None or currency_id == req.currency_id)
            and (req.resource_id is None or resource_id == req.resource_id))


async def _replay(socket: WebSocket, req: _Request, engine_customer: str, since: int,
                  upto: int, replay_max: int) -> bool:
    """Send the customer's events in (since, upto] from the outbox; False if they are not
    all there any more (purged, or more than `replay_max`): the caller resets instead."""
    if since > upto:
        return False  # a sequence this customer never reached: another database's
    if upto - since > replay_max:
        return False
    store = services(socket).store
    events: list[DomainEvent] = []
    after = since
    while after < upto:
        page = await store.customer_events(engine_customer, after, _REPLAY_PAGE)
        if not page or page[0].seq != after + 1:
            return False
        for e in page:
            if e.seq > upto:
                break
            if e.seq != after + 1:
                return False
            events.append(e)
            after = e.seq
        if len(page) < _REPLAY_PAGE:
            break
    if after != upto:
        return False
    for e in events:
        if _wants(req, e.currency_id, e.resource_id):
            await _send(socket, event_frame(req.customer_id, e))
    return True


@websocket("/api/v1/credits/stream")
async def stream(socket: WebSocket) -> None:
    await socket.accept()
    feed = _feed(socket.app.state)
    try:
        req = await _parse(socket)
        sub = feed.hub.subscribe(engine_id(req.env, req.customer_id),
                                 currency_id=req.currency_id, resource_id=req.resource_id,
                                 match_resource=req.resource_id is not None)
        sub.expires_at_ms = req.expires_at_ms
    except Close as c:
        await _close(socket, c.code, c.error, c.message)
        return
    except LimitReached as exc:
        await _close(socket, TOO_MANY, "TooManySubscribers", str(exc))
        return
    except Exception as exc:  # noqa: BLE001  # the catalog's database, mostly: come back later
        log.warning("feed: subscribing failed", error=repr(exc))
        await _close(socket, TRY_AGAIN, "Unavailable", "the server cannot serve the feed now")
        return
    try:
        await _serve(socket, feed, req, sub)
    finally:
        feed.hub.unsubscribe(sub)


async def _serve(socket: WebSocket, feed: Feed, req: _Request, sub: Subscriber) -> None:
    closing: list[tuple[int, str | None, str]] = []
    async with anyio.create_task_group() as tg:
        # Overflow is noticed on the engine's worker; cancelling here also frees a send
        # that a stalled client's full socket buffer holds.
        def overflowed() -> None:
            closing.append((OVERFLOW, "BacklogOverflow",
                            "the client fell too far behind; reconnect with since="))
            tg.cancel_scope.cancel()

        sub.on_overflow = overflowed
        tg.start_soon(_receive, socket, sub, tg.cancel_scope)
        try:
            code = await _send_loop(socket, feed, req, sub)
        except Close as c:
            code = (c.code, c.error, c.message)
        except EngineError as exc:
            code = (TRY_AGAIN, "Unavailable", f"the engine cannot serve the feed now: {exc}")
        except (WebSocketDisconnect, OSError):  # uvicorn's ClientDisconnected is an OSError
            code = None
        if code is not None:
            closing.append(code)
        tg.cancel_scope.cancel()
    if closing:
        await _close(socket, *closing[0])


async def _receive(socket: WebSocket, sub: Subscriber, scope: anyio.CancelScope) -> None:
    """Clients may send `ping` (or {"type":"ping"}) to get a `pong`; anything else is
    ignored. A disconnect ends the connection."""
    try:
        while True:
            message = await socket.receive_data("text")
            if isinstance(message, str) and "ping" in message[:32]:
                sub.pong_due = True
                sub.wake.set()
    except WebSocketDisconnect:
        scope.cancel()


async def _send_loop(socket: WebSocket, feed: Feed, req: _Request,
                     sub: Subscriber) -> tuple[int, str | None, str] | None:
    runtime = services(socket).runtime
    engine_customer = engine_id(req.env, req.customer_id)
    snapshot = await runtime.submit(engine_customer, GetBalances(
        currency_id=req.currency_id, resource_id=req.resource_id,
        match_resource=req.resource_id is not None))
    assert isinstance(snapshot, BalancesReply)
    reset = False
    if req.since is not None:
        reset = not await _replay(socket, req, engine_customer, req.since, snapshot.seq,
                                  feed.options.replay_max)
    await _send(socket, _encode({
        "type": "snapshot", "seq": snapshot.seq, "reset": reset,
        "customerId": req.customer_id,
        "balances": [balance_json(b) for b in snapshot.balances]}).decode())
    sub.seq_floor, sub.op_floor = snapshot.seq, snapshot.op
    sub.quiet_since = time.monotonic()
    last_seq = snapshot.seq
    while True:
        # No timeout here: the hub's ticker wakes us for heartbeats and token expiry.
        await sub.wake.wait()
        if sub.overflowed:
            return None  # `overflowed` has queued the close
        if sub.expired:
            return (TOKEN_EXPIRED, "TokenExpired",
                    "the token has expired; mint a new one and reconnect with since=")
        frames = sub.take()
        if sub.pong_due:
            sub.pong_due = False
            await _send(socket, _encode({"type": "pong", "seq": last_seq}).decode())
        if frames:
            for seq, frame in frames:
                await _send(socket, frame)
                last_seq = seq
        elif sub.heartbeat_due:
            # Quiet for a whole heartbeat period: tell the client the server is alive (a
            # browser cannot see protocol pings, so this is how it detects a dead link).
            await _send(socket, _encode({"type": "heartbeat", "seq": last_seq}).decode())
        else:
            continue
        sub.heartbeat_due = False
        sub.quiet_since = time.monotonic()


ROUTES = [mint_token, stream]
