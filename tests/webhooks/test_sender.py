"""The senders against a real local HTTP server, on asyncio and trio: keep-alive, response
framing (length, chunked, close-delimited, interim 1xx), bounded bodies, timeouts, refused
and reset connections, and the address guard. The pooled sender is held to the same
answers as the stock httpx client."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import anyio
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream

from webhooks.sender import HttpxSender, PooledSender, parse_target

pytestmark = pytest.mark.anyio
HEADERS = [(b"content-type", b"application/json"), (b"webhook-id", b"evt_1")]
CLOSE = b""  # answer nothing and close the connection


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return request.param


class Server:
    """Answers each request with `respond(index, head, body)`: raw response bytes, or
    CLOSE. Records every request and every connection."""

    def __init__(self, respond: Callable[[int, bytes, bytes], bytes]) -> None:
        self.respond = respond
        self.requests: list[tuple[bytes, bytes]] = []
        self.connections = 0
        self.hang = False
        self.one_request_per_connection = False
        self.port = 0

    async def handle(self, stream: anyio.abc.SocketStream) -> None:
        self.connections += 1
        reader = BufferedByteReceiveStream(stream)
        async with stream:
            if self.hang:
                await anyio.sleep_forever()
            while True:
                try:
                    head = await reader.receive_until(b"\r\n\r\n", 65536)
                except (anyio.IncompleteRead, anyio.EndOfStream, anyio.BrokenResourceError):
                    return
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                body = await reader.receive_exactly(length)
                self.requests.append((head, body))
                answer = self.respond(len(self.requests) - 1, head, body)
                if answer == CLOSE:
                    return
                await stream.send(answer)
                if b"connection: close" in answer.lower() or self.one_request_per_connection:
                    return


@asynccontextmanager
async def serving(respond: Callable[[int, bytes, bytes], bytes]) -> AsyncIterator[Server]:
    server = Server(respond)
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    server.port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, server.handle)
        yield server
        tg.cancel_scope.cancel()


def ok(status: int = 200, body: bytes = b"ok", extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 %d X\r\ncontent-length: %d\r\n%s\r\n%s" % (status, len(body), extra, body)


def target(server: Server, path: str = "/hook?x=1"):
    return parse_target(f"http://127.0.0.1:{server.port}{path}")


SENDERS = {
    "pooled": lambda **kw: PooledSender(allow_private=True, **kw),
    "httpx": lambda **kw: HttpxSender(allow_private=True, **kw),
}


@pytest.mark.parametrize("kind", SENDERS)
async def test_a_post_carries_the_body_and_headers_and_gets_the_status(kind) -> None:
    async with serving(lambda i, h, b: ok(201 if i == 0 else 500, b"nope")) as server:
        sender = SENDERS[kind]()
        first = await sender.post(target(server), HEADERS, b'{"a":1}')
        second = await sender.post(target(server), HEADERS, b'{"a":2}')
        await sender.aclose()
    assert (first.status, first.error, second.status, second.body) == (201, None, 500, b"nope")
    head, body = server.requests[0]
    assert head.startswith(b"POST /hook?x=1 HTTP/1.1\r\n") and body == b'{"a":1}'
    assert b"webhook-id: evt_1" in head.lower() and b"host: 127.0.0.1:" in head.lower()


async def test_the_pooled_sender_reuses_one_connection() -> None:
    async with serving(lambda i, h, b: ok()) as server:
        sender = PooledSender(allow_private=True)
        for _ in range(20):
            assert (await sender.post(target(server), HEADERS, b"{}")).status == 200
        await sender.aclose()
    assert (server.connections, sender.connections_opened, len(server.requests)) == (1, 1, 20)


async def test_chunked_and_close_delimited_and_interim_answers_are_read() -> None:
    answers = [
        b"HTTP/1.1 200 X\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n3\r\n!!!\r\n0\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 202 X\r\ncontent-length: 0\r\n\r\n",
        b"HTTP/1.1 500 X\r\nconnection: close\r\n\r\nbroken",
    ]
    async with serving(lambda i, h, b: answers[i]) as server:
        sender = PooledSender(allow_private=True)
        got = [await sender.post(target(server), HEADERS, b"{}") for _ in answers]
        await sender.aclose()
    assert [(a.status, a.body) for a in got] == [(200, b"ok!!!"), (202, b""), (500, b"broken")]
    assert server.connections == 1  # the first two kept it alive; the third closed it


@pytest.mark.parametrize("kind", SENDERS)
async def test_a_long_answer_is_cut_and_its_connection_not_reused(kind) -> None:
    async with serving(lambda i, h, b: ok(body=b"x" * 100_000)) as server:
        sender = SENDERS[kind](response_bytes_max=10)
        first = await sender.post(target(server), HEADERS, b"{}")
        second = await sender.post(target(server), HEADERS, b"{}")
        await sender.aclose()
    assert (first.status, first.body, second.status) == (200, b"x" * 10, 200)
    if kind == "pooled":
        assert server.connections == 2


@pytest.mark.parametrize("kind", SENDERS)
async def test_no_answer_within_the_timeout_is_a_failed_attempt(kind) -> None:
    async with serving(lambda i, h, b: ok()) as server:
        server.hang = True
        sender = SENDERS[kind](timeout_s=0.2)
        answer = await sender.post(target(server), HEADERS, b"{}")
        await sender.aclose()
    assert answer.status is None and answer.error == "no answer within 0.2 s"
    assert 150 <= answer.latency_ms < 2000


@pytest.mark.parametrize("kind", SENDERS)
async def test_a_refused_connection_is_a_failed_attempt(kind) -> None:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    await listener.aclose()  # nothing listens there now
    sender = SENDERS[kind]()
    answer = await sender.post(parse_target(f"http://127.0.0.1:{port}/x"), HEADERS, b"{}")
    await sender.aclose()
    assert answer.status is None and answer.error


async def test_a_connection_closed_without_an_answer_is_a_failed_attempt() -> None:
    async with serving(lambda i, h, b: CLOSE) as server:
        sender = PooledSender(allow_private=True)
        answer = await sender.post(target(server), HEADERS, b"{}")
        await sender.aclose()
    assert answer.status is None
    assert answer.error == "the receiver closed the connection before answering"


async def test_a_keep_alive_connection_closed_while_idle_is_replaced_and_the_post_sent_once() -> None:
    # The server answers the first request and then closes the connection (as servers do
    # with idle keep-alive connections); the second post finds it closed.
    async with serving(lambda i, h, b: ok()) as server:
        server.one_request_per_connection = True
        sender = PooledSender(allow_private=True)
        first = await sender.post(target(server), HEADERS, b"{}")
        second = await sender.post(target(server), HEADERS, b"{}")
        await sender.aclose()
    assert (first.status, second.status) == (200, 200)
    assert (len(server.requests), server.connections) == (2, 2)


@pytest.mark.parametrize("kind", SENDERS)
async def test_private_addresses_are_not_connected_to_unless_allowed(kind) -> None:
    async with serving(lambda i, h, b: ok()) as server:
        sender = (PooledSender if kind == "pooled" else HttpxSender)(allow_private=False)
        answer = await sender.post(target(server), HEADERS, b"{}")
        await sender.aclose()
    assert answer.status is None and answer.error.startswith("refused: 127.0.0.1 resolves to")
    assert server.connections == 0


@pytest.mark.parametrize("url, message", [
    ("ftp://x/y", "must be an http:// or https:// URL"),
    ("http:///nohost", "must name a host"),
    ("http://u:p@example.com/", "must not carry credentials"),
    ("http://example.com:99999/", "is not a valid URL"),
    ("http://example.com/" + "a" * 2048, "must be at most 2048 characters"),
])
def test_bad_urls_are_refused_with_a_reason(url, message) -> None:
    with pytest.raises(ValueError, match=message):
        parse_target(url)


def test_urls_become_targets() -> None:
    t = parse_target("https://[2001:db8::1]:8443/a/b?c=d")
    assert (t.scheme, t.host, t.port, t.target, t.host_header) == (
        "https", "2001:db8::1", 8443, b"/a/b?c=d", b"[2001:db8::1]:8443")
    t = parse_target("http://example.com")
    assert (t.port, t.target, t.host_header) == (80, b"/", b"example.com")
