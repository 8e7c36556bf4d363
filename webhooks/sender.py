"""Sending one signed POST and reading its answer: the delivery path's only network I/O.

    Sender                 the seam: `post(target, headers, body) -> Answer`, never raises
    ├── PooledSender       the default: HTTP/1.1 over anyio streams, keep-alive pool,
    │                      httptools (uvicorn's C parser) for the response
    └── HttpxSender        any httpx transport: httpx.MockTransport in tests, or the stock
                           httpcore pool (`CREDITD_WEBHOOKS_CLIENT=httpx`)

Why a sender of our own by default: measured on this project's machines
(scripts/bench_webhooks.py), a POST through httpx costs ~1.4 ms of CPU, the same POST
written in one send and parsed with httptools ~0.1 ms, and the relay shares its process (and
its one core) with the engine. Webhook delivery needs a small subset of HTTP: one POST with
a fixed-length body, a status, a bounded body, keep-alive. httptools does the parsing (the
part worth a well-kept library); what is left here is a connection pool and timeouts. The
httpx sender stays as the reference the tests hold this one to, and as a fallback.

Both senders connect only to addresses `webhooks.addresses` allows, checked on every new
connection against the addresses actually connected to. Redirects are not followed (a 3xx
is a failed attempt). Proxies are not used.
"""

from __future__ import annotations

import ssl
import time
from typing import Any, Protocol
from urllib.parse import urlsplit

import anyio
import httpcore
import httptools
import httpx
import msgspec

from webhooks.addresses import AddressRefused, resolve

__all__ = ["Target", "Answer", "Sender", "PooledSender", "HttpxSender", "parse_target"]

URL_CHARS_MAX = 2048


class Target(msgspec.Struct, frozen=True):
    url: str
    scheme: str
    host: str
    port: int
    target: bytes  # the request target: path and query
    host_header: bytes


def parse_target(url: str) -> Target:
    """ValueError (with a message fit for the API) unless `url` is an absolute http(s) URL."""
    if len(url) > URL_CHARS_MAX:
        raise ValueError(f"must be at most {URL_CHARS_MAX} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"is not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError("must be an http:// or https:// URL")
    if not parts.hostname:
        raise ValueError("must name a host")
    if parts.username is not None or parts.password is not None:
        raise ValueError("must not carry credentials")
    if any(c in url for c in "\r\n\t "):
        raise ValueError("must not contain whitespace")
    default = 443 if parts.scheme == "https" else 80
    host = parts.hostname
    shown = f"[{host}]" if ":" in host else host
    if port is not None and port != default:
        shown += f":{port}"
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(url, parts.scheme, host, port or default, target.encode(), shown.encode())


class Answer:
    """What an attempt got: an HTTP status, or an error (no status) when none came."""

    __slots__ = ("status", "error", "body", "latency_ms")

    def __init__(self, status: int | None, error: str | None, body: bytes,
                 latency_ms: int) -> None:
        assert (status is None) != (error is None)
        self.status = status
        self.error = error
        self.body = body
        self.latency_ms = latency_ms

    def __repr__(self) -> str:
        return f"Answer(status={self.status}, error={self.error!r}, {self.latency_ms} ms)"


class Sender(Protocol):
    async def post(self, target: Target, headers: list[tuple[bytes, bytes]],
                   body: bytes) -> Answer: ...

    async def aclose(self) -> None: ...


def _elapsed_ms(started: float) -> int:
    return round((time.perf_counter() - started) * 1000)


_CLOSED = "the receiver closed the connection before answering"


class _Incomplete(Exception):
    pass


class _Stale(Exception):
    """A reused keep-alive connection was closed by the server before any answer."""


class _Parsed:
    """httptools callbacks for one response. Status and keep-alive are read inside the
    callbacks: once a message is complete the parser resets and forgets them."""

    __slots__ = ("parser", "body", "limit", "over", "headers_done", "done", "status",
                 "keep_alive")

    def __init__(self, limit: int) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.body = bytearray()
        self.limit = limit
        self.over = False
        self.headers_done = False
        self.done = False
        self.status = 0
        self.keep_alive = False

    def on_headers_complete(self) -> None:
        self.headers_done = True
        self.status = self.parser.get_status_code()

    def on_body(self, chunk: bytes) -> None:
        room = self.limit - len(self.body)
        if len(chunk) > room:
            self.over = True
            chunk = chunk[:room]
        self.body += chunk

    def on_message_complete(self) -> None:
        if self.status < 200:
            # An interim answer (100 Continue, 103 Early Hints): the final one follows on
            # the same connection, and the parser reads on into it.
            self.headers_done = False
            self.body.clear()
            return
        self.done = True
        self.keep_alive = self.parser.should_keep_alive()


class _Connection:
    __slots__ = ("stream", "idle_since")

    def __init__(self, stream: anyio.abc.ByteStream) -> None:
        self.stream = stream
        self.idle_since = 0.0


async def _close(conn: _Connection) -> None:
    with anyio.CancelScope(shield=True):
        try:
            await conn.stream.aclose()
        except (OSError, anyio.BrokenResourceError, ssl.SSLError):
            pass  # closing a broken connection: nothing left to tell the peer


class PooledSender:
    """HTTP/1.1 POSTs with a pool of keep-alive connections per origin.

    Limits: `timeout_s` for a whole attempt (connect, TLS, send, answer); at most
    `response_bytes_max` of an answer's body is kept (a longer body is not read further,
    and its connection is closed rather than reused); at most `idle_per_origin_max` idle
    connections per origin (more are closed), each kept `idle_expiry_s` at most: shorter
    than the 5 s idle timeout of common servers (Node.js), so the server rarely closes one
    just as it is reused. When that happens anyway (the connection ends before any byte of
    the answer), the request is sent once more on a new connection: a receiver may then see
    it twice, which at-least-once delivery allows and the webhook-id lets it detect.
    """

    def __init__(self, *, timeout_s: float = 10.0, allow_private: bool = False,
                 response_bytes_max: int = 4096, idle_per_origin_max: int = 64,
                 idle_expiry_s: float = 4.0, ssl_context: ssl.SSLContext | None = None) -> None:
        assert timeout_s > 0 and response_bytes_max >= 0 and idle_per_origin_max >= 0
        self.timeout_s = timeout_s
        self.allow_private = allow_private
        self.response_bytes_max = response_bytes_max
        self.idle_per_origin_max = idle_per_origin_max
        self.idle_expiry_s = idle_expiry_s
        self._ssl = ssl_context
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self.connections_opened = 0

    async def post(self, target: Target, headers: list[tuple[bytes, bytes]],
                   body: bytes) -> Answer:
        started = time.perf_counter()
        head = [b"POST ", target.target, b" HTTP/1.1\r\nhost: ", target.host_header,
                b"\r\ncontent-length: ", str(len(body)).encode(), b"\r\n"]
        for name, value in headers:
            head += (name, b": ", value, b"\r\n")
        head += (b"\r\n", body)
        request = b"".join(head)
        try:
            with anyio.fail_after(self.timeout_s):
                status, answer = await self._exchange(target, request)
        except TimeoutError:
            return Answer(None, f"no answer within {self.timeout_s:g} s", b"",
                          _elapsed_ms(started))
        except AddressRefused as exc:
            return Answer(None, f"refused: {exc}", b"", _elapsed_ms(started))
        except (OSError, anyio.BrokenResourceError, anyio.EndOfStream, ssl.SSLError,
                httptools.HttpParserError, _Incomplete) as exc:
            return Answer(None, _describe(exc), b"", _elapsed_ms(started))
        return Answer(status, None, answer, _elapsed_ms(started))

    async def _exchange(self, target: Target, request: bytes) -> tuple[int, bytes]:
        key = (target.scheme, target.host, target.port)
        conn = await self._take_idle(key)
        if conn is not None:
            try:
                return await self._roundtrip(key, conn, request, reused=True)
            except _Stale:
                pass
        conn = await self._connect(target)
        return await self._roundtrip(key, conn, request, reused=False)

    async def _take_idle(self, key: tuple[str, str, int]) -> _Connection | None:
        idle = self._idle.get(key)
        if not idle:
            return None
        oldest_kept = time.monotonic() - self.idle_expiry_s
        while idle:
            conn = idle.pop()  # most recently used first: the least likely to be closed
            if conn.idle_since >= oldest_kept:
                return conn
            await _close(conn)
        if self._idle.get(key) is idle and not idle:
            del self._idle[key]  # origins no longer used leave nothing behind
        return None

    async def _connect(self, target: Target) -> _Connection:
        tls = target.scheme == "https"
        context = None
        if tls:
            context = self._ssl = self._ssl or ssl.create_default_context()
        if self.allow_private:
            addresses = [target.host]
        else:
            addresses = await resolve(target.host, target.port, allow_private=False)
        error: Exception | None = None
        for address in addresses:
            try:
                stream = await anyio.connect_tcp(address, target.port, tls=tls,
                                                 ssl_context=context,
                                                 tls_hostname=target.host if tls else None)
            except OSError as exc:
                error = exc
                continue
            self.connections_opened += 1
            return _Connection(stream)
        assert error is not None
        raise error

    async def _roundtrip(self, key: tuple[str, str, int], conn: _Connection, request: bytes,
                         *, reused: bool) -> tuple[int, bytes]:
        parsed = _Parsed(self.response_bytes_max)
        received = 0
        try:
            try:
                await conn.stream.send(request)
            except (anyio.BrokenResourceError, OSError):
                if reused:
                    raise _Stale() from None
                raise
            while True:
                try:
                    data = await conn.stream.receive(65536)
                except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                    if reused and received == 0:
                        raise _Stale() from None
                    if parsed.headers_done:
                        # No length and no chunks: the body ends with the connection.
                        parsed.keep_alive = False
                        break
                    raise _Incomplete(_CLOSED) from None
                received += len(data)
                parsed.parser.feed_data(data)
                if parsed.done or parsed.over:
                    break
        except BaseException:
            await _close(conn)
            raise
        idle = self._idle.setdefault(key, [])
        if (parsed.done and not parsed.over and parsed.keep_alive
                and len(idle) < self.idle_per_origin_max):
            conn.idle_since = time.monotonic()
            idle.append(conn)
        else:
            await _close(conn)
        return parsed.status, bytes(parsed.body)

    async def aclose(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                await _close(conn)
        self._idle.clear()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError) or "refused" in str(exc).lower():
        return "connection refused"
    if isinstance(exc, (anyio.EndOfStream, anyio.BrokenResourceError, ConnectionResetError)):
        return _CLOSED
    if isinstance(exc, ssl.SSLError):
        return f"TLS error: {exc.reason or exc}"
    if isinstance(exc, httptools.HttpParserError):
        return f"not a valid HTTP answer: {exc}"
    text = str(exc) or type(exc).__name__
    return text[:200]


class _GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's anyio backend, connecting only to addresses webhooks may reach."""

    def __init__(self, allow_private: bool) -> None:
        self._inner = httpcore.AnyIOBackend()
        self._allow_private = allow_private

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None,
                          socket_options: Any = None) -> httpcore.AsyncNetworkStream:
        if self._allow_private:
            return await self._inner.connect_tcp(host, port, timeout, local_address,
                                                 socket_options)
        error: Exception | None = None
        for address in await resolve(host, port, allow_private=False):
            try:
                return await self._inner.connect_tcp(address, port, timeout, local_address,
                                                     socket_options)
            except httpcore.ConnectError as exc:
                error = exc
        assert error is not None
        raise error

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Any = None) -> httpcore.AsyncNetworkStream:
        raise AddressRefused("webhooks are not sent to unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class _HttpcoreTransport(httpx.AsyncBaseTransport):
    """httpx's stock transport, minus what webhooks must not do (proxies from the
    environment), plus the address guard. The body is read here, bounded."""

    def __init__(self, *, allow_private: bool, connections_max: int,
                 response_bytes_max: int) -> None:
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(), max_connections=connections_max,
            max_keepalive_connections=connections_max, keepalive_expiry=4.0,
            network_backend=_GuardedBackend(allow_private))
        self._limit = response_bytes_max

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        answer = await self._pool.handle_async_request(httpcore.Request(
            method=request.method,
            url=httpcore.URL(scheme=url.raw_scheme, host=url.raw_host, port=url.port,
                             target=url.raw_path),
            headers=request.headers.raw, content=request.stream,
            extensions=request.extensions))
        body = bytearray()
        try:
            async for chunk in answer.stream:  # type: ignore[union-attr]
                body += chunk
                if len(body) > self._limit:
                    break
        finally:
            await answer.aclose()
        return httpx.Response(answer.status, headers=answer.headers, content=bytes(body))

    async def aclose(self) -> None:
        await self._pool.aclose()


class HttpxSender:
    """Attempts through an httpx transport: `httpx.MockTransport` in tests, or (by default)
    the stock httpcore pool behind the address guard."""

    def __init__(self, transport: httpx.AsyncBaseTransport | None = None, *,
                 timeout_s: float = 10.0, allow_private: bool = False,
                 response_bytes_max: int = 4096, connections_max: int = 64) -> None:
        self.timeout_s = timeout_s
        self.response_bytes_max = response_bytes_max
        self._transport = transport or _HttpcoreTransport(
            allow_private=allow_private, connections_max=connections_max,
            response_bytes_max=response_bytes_max)

    async def post(self, target: Target, headers: list[tuple[bytes, bytes]],
                   body: bytes) -> Answer:
        started = time.perf_counter()
        request = httpx.Request("POST", target.url, headers=headers, content=body)
        try:
            with anyio.fail_after(self.timeout_s):
                response = await self._transport.handle_async_request(request)
                content = await response.aread()
        except TimeoutError:
            return Answer(None, f"no answer within {self.timeout_s:g} s", b"",
                          _elapsed_ms(started))
        except AddressRefused as exc:
            return Answer(None, f"refused: {exc}", b"", _elapsed_ms(started))
        except (httpx.HTTPError, httpcore.NetworkError, httpcore.TimeoutException,
                httpcore.ProtocolError, OSError) as exc:
            return Answer(None, _describe(exc), b"", _elapsed_ms(started))
        return Answer(response.status_code, None, content[: self.response_bytes_max],
                      _elapsed_ms(started))

    async def aclose(self) -> None:
        await self._transport.aclose()
