"""Admission: how many HTTP requests one process works on at once, and a 429 past it.

Why at the door. Past the rate the server sustains, every request it accepts lengthens
every other's wait: the work queues in the event loop and the group commit, not in the
runtime's mailboxes, so no limit inside the engine sees it. At ten times the load every
answer took seven times as long (docs/benchmarks.md, "Overload"). Here, around the whole
app, a request is either taken into the `limit` in progress or answered 429 with
`Retry-After` before it is routed, authenticated or parsed: nothing of it is applied, and
those taken keep the latency of a server working at its limit.

A short line. A request that finds every slot taken waits up to `wait_s` for one, first
come first served, so the ups and downs of a load near the limit are smoothed rather than
refused; past `wait_s` it is refused. The line is bounded (`waiting_max`).

Per-customer shares. A customer with more requests in progress than its share (the
limit divided by the customers with requests in progress) is refused at once when no
slot is free rather than waiting, so one customer sending many requests at once cannot
take the slots from the others: as its requests finish, the slots pass to the others'
waiting ones. A customer alone gets every slot. The customer is read from the path
(`/customers/{id}`), the `customerId` query parameter, or the `customerId` of a JSON body
(read here and handed on unchanged); a request naming none (GraphQL, catalog calls) has
no share and just waits in line.

Refusals are paced. A client that ignores Retry-After and comes straight back (wrk does;
so do naive retry loops) would otherwise make answering 429s the server's main work: on
two cores, ten times the connections turned into 20,000 refusals a second and the server
served 15 % of its nominal rate. Up to `refusals_per_s` refusals a second go out at once;
past that rate each is held until its turn, so refusals cost a bounded share of the CPU
whatever the clients do. At most `waiting_max` refusals are held; past that they go out
at once.

Not counted: the health and readiness probes and the metrics scrape (an operator needs
them most when the server is overloaded), websockets (the feed bounds its subscribers
itself) and the CSV ledger download (a stream that may take long).

Built on asyncio futures and timers, not anyio's Event and cancel scopes: the server runs
on uvicorn's asyncio loop, and the anyio versions cost about 20 µs a waiter (a backend
lookup each), measured under overload where thousands wait a second.
"""

from __future__ import annotations

import asyncio
import re
from collections import deque
from typing import Any
from urllib.parse import unquote

import msgspec

__all__ = ["RETRY_AFTER_S", "Admission"]

_EXEMPT = ("/health", "/ready", "/metrics")
RETRY_AFTER_S = 1
# The customer of a request, where the door can see it without routing.
_PATH_CUSTOMER = re.compile(r"/customers/([^/]+)")
_QUERY_CUSTOMER = re.compile(rb"(?:^|&)customerId=([^&]*)")
_BODY_BYTES_MAX = 65_536  # larger bodies are not read here (no customer, no share)


class _Named(msgspec.Struct):
    customerId: str | None = None  # the wire's name


_decode_named = msgspec.json.Decoder(_Named).decode


class _Waiter:
    __slots__ = ("future", "timer")

    def __init__(self, future: asyncio.Future[bool]) -> None:
        self.future = future  # True: a slot passed to it; False: refused (or cancelled)
        self.timer: asyncio.TimerHandle | None = None


class Admission:
    """An ASGI wrapper that keeps at most `limit` HTTP requests in progress."""

    def __init__(self, handler: Any, limit: int, *, wait_s: float = 0.005,
                 waiting_max: int = 4096, refusals_per_s: float = 500.0) -> None:
        assert limit > 0 and wait_s >= 0 and waiting_max >= 0 and refusals_per_s > 0
        self._handler = handler
        self.limit = limit
        self.wait_s = wait_s
        self.waiting_max = waiting_max
        self.refusals_per_s = refusals_per_s
        self.in_flight = 0
        self._by_customer: dict[str, int] = {}  # requests in progress per customer named
        self._line: deque[_Waiter] = deque()
        self._waiting = 0  # waiters neither admitted nor refused (the line may hold settled ones)
        self._next_refusal = 0.0  # when the next paced refusal may go out (the loop's clock)
        self._held = 0  # refusals waiting for their turn
        self.admitted = 0
        self.waited = 0
        self.refused: dict[str, int] = {"waited": 0, "share": 0, "line": 0}
        self.peak = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        path = scope["path"]
        if scope["type"] != "http" or path.startswith(_EXEMPT) or path.endswith("/export"):
            await self._handler(scope, receive, send)
            return
        customer, receive = await _customer(scope, receive)
        if self.in_flight < self.limit:  # (a freed slot goes to the line first)
            self.in_flight += 1
        else:
            reason = self._over_share(customer) or await self._wait()
            if reason:
                await self._refuse(send, reason, path == "/graphql")
                return
        self.admitted += 1
        self.peak = max(self.peak, self.in_flight)
        if customer is not None:
            self._by_customer[customer] = self._by_customer.get(customer, 0) + 1
        done = False

        def finished() -> None:
            nonlocal done
            if not done:
                done = True
                self._finished(customer)

        async def sent(message: Any) -> None:
            # The slot frees with the response's last byte, not when the app's coroutine
            # returns: a keep-alive client sends its next request the moment it has the
            # answer, and counted until then a connection's two requests overlapped (c=64
            # was refused at a limit of 80).
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                finished()

        try:
            await self._handler(scope, receive, sent)
        finally:
            finished()

    def _finished(self, customer: str | None) -> None:
        if customer is not None:
            counts = self._by_customer
            left = counts[customer] - 1
            if left:
                counts[customer] = left
            else:
                del counts[customer]
        self._release()

    def _over_share(self, customer: str | None) -> str | None:
        if customer is None:
            return None
        counts = self._by_customer
        holding = counts.get(customer, 0)
        share = self.limit // (len(counts) + (holding == 0))
        return "share" if holding >= max(1, share) else None

    async def _wait(self) -> str | None:
        """Wait in line for a slot: None once one passed to it, else why it was refused."""
        if self._waiting >= self.waiting_max:
            return "line"
        if self.wait_s <= 0:
            return "waited"  # no line at all
        loop = asyncio.get_running_loop()
        waiter = _Waiter(loop.create_future())
        waiter.timer = loop.call_later(self.wait_s, self._expire, waiter)
        line = self._line
        if len(line) > 2 * self.waiting_max:  # settled ones pile up while no slot frees
            self._line = line = deque(w for w in line if not w.future.done())
        line.append(waiter)
        self._waiting += 1
        self.waited += 1
        try:
            admitted = await waiter.future
        except BaseException:  # cancelled from outside: give back what was taken
            future = waiter.future
            if future.cancelled():  # still in line: leave it
                waiter.timer.cancel()
                self._waiting -= 1
            elif future.result():
                self._release()
            raise
        return None if admitted else "waited"

    def _expire(self, waiter: _Waiter) -> None:
        """No slot came in time: refused (its entry in the line is skipped later)."""
        if not waiter.future.done():
            waiter.future.set_result(False)
            self._waiting -= 1

    def _release(self) -> None:
        """A request finished: its slot passes to the first waiter still in line."""
        line = self._line
        while self._waiting and line:
            waiter = line.popleft()
            if waiter.future.done():
                continue  # refused or cancelled earlier
            waiter.timer.cancel()  # type: ignore[union-attr]
            waiter.future.set_result(True)
            self._waiting -= 1
            return  # the slot passed on: in_flight stays
        self.in_flight -= 1

    async def _refuse(self, send: Any, reason: str, graphql: bool) -> None:
        """429 with Retry-After, paced; on /graphql in Stigg's error shape (the code its
        clients know for this, RateLimitExceeded), elsewhere in the REST contract's."""
        self.refused[reason] += 1
        now = asyncio.get_running_loop().time()
        turn = max(now, self._next_refusal)
        if turn == now:
            self._next_refusal = now + 1 / self.refusals_per_s
        elif self._held < self.waiting_max:
            self._next_refusal = turn + 1 / self.refusals_per_s
            self._held += 1
            try:
                await asyncio.sleep(turn - now)
            finally:
                self._held -= 1
        body, headers = _GRAPHQL if graphql else _REST
        await send({"type": "http.response.start", "status": 429, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def statistics(self) -> dict[str, Any]:
        """What /health?detail=true and /metrics show of the door."""
        return {"limit": self.limit, "in_flight": self.in_flight, "waiting": self._waiting,
                "held": self._held, "peak": self.peak, "admitted": self.admitted,
                "waited": self.waited, "refused": dict(self.refused)}


async def _customer(scope: Any, receive: Any) -> tuple[str | None, Any]:
    """The customer a request names, and a `receive` that still yields its whole body."""
    path = scope["path"]
    found = _PATH_CUSTOMER.search(path)
    if found:
        return unquote(found.group(1)), receive
    if path == "/graphql":
        return None, receive  # a GraphQL body names customers inside variables: no share
    query = scope.get("query_string", b"")
    if query:
        found = _QUERY_CUSTOMER.search(query)
        if found:
            return unquote(found.group(1).decode("latin-1").replace("+", " ")), receive
    if scope["method"] not in ("POST", "PUT", "PATCH"):
        return None, receive
    length = next((v for k, v in scope["headers"] if k == b"content-length"), None)
    if length is None or not length.isdigit() or int(length) > _BODY_BYTES_MAX:
        return None, receive
    messages = []
    body = b""
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            break  # a disconnect: the app sees it next
        body += message.get("body", b"")
        if not message.get("more_body") or len(body) > _BODY_BYTES_MAX:
            break
    try:
        customer = _decode_named(body).customerId
    except (msgspec.DecodeError, msgspec.ValidationError):
        customer = None  # the app answers the bad body
    pending = deque(messages)

    async def replay() -> Any:
        return pending.popleft() if pending else await receive()

    return customer, replay


_MESSAGE = ("the server is at its limit of requests in progress; retry after the "
            "Retry-After seconds")


def _answer(body: dict[str, Any]) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    raw = msgspec.json.encode(body)
    return raw, [(b"content-type", b"application/json"),
                 (b"content-length", str(len(raw)).encode()),
                 (b"retry-after", str(RETRY_AFTER_S).encode())]


_REST = _answer({"statusCode": 429, "code": "TooManyRequests", "message": _MESSAGE})
_GRAPHQL = _answer({"data": None, "errors": [{"message": _MESSAGE, "extensions": {
    "code": "RateLimitExceeded", "traceId": ""}}]})
