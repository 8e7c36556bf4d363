"""gateway/http_protocol.py: a response leaves in one write, byte for byte what uvicorn's
own protocol sends, streamed responses and closes included."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from gateway.http_protocol import OneWriteHttpToolsProtocol


class RecordingTransport(asyncio.Transport):
    """What a protocol writes, write by write, and when it closes."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.events: list[str] = []
        self.closing = False
        self.protocol: Any = None

    def write(self, data: bytes) -> None:  # type: ignore[override]
        assert not self.closing, "written after close"
        self.writes.append(bytes(data))
        self.events.append("write")

    def close(self) -> None:
        if not self.closing:
            self.closing = True
            self.events.append("close")

    def is_closing(self) -> bool:
        return self.closing

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(
            name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def set_protocol(self, protocol: Any) -> None:
        self.protocol = protocol


async def small(scope: Any, receive: Any, send: Any) -> None:
    body = b'{"data":{"amount":0.5}}'
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def streamed(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    for chunk in (b"one,", b"two,", b"three"):
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await asyncio.sleep(0)  # the next chunk comes in a later turn of the loop
    await send({"type": "http.response.body", "body": b""})


async def closing(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", b"2"), (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": b"ok"})


REQUEST = b"GET /x HTTP/1.1\r\nhost: test\r\n\r\n"


async def exchange(protocol_class: type[HttpToolsProtocol], app: Any,
                   data: bytes = REQUEST, *, gone: bool = False) -> RecordingTransport:
    """`data` through a protocol to `app`, until everything is answered; `gone`: the
    transport closes (the peer went away) right after the request arrived."""
    loop = asyncio.get_running_loop()
    config = Config(app=app, lifespan="off", log_level="warning")
    state = ServerState()
    protocol = protocol_class(config=config, server_state=state, app_state={}, _loop=loop)
    transport = RecordingTransport()
    protocol.connection_made(transport)
    protocol.data_received(data)
    if gone:
        transport.close()  # before the held bytes' turn comes
    while state.tasks:  # the requests' tasks, then the loop turn that sends what is held
        await asyncio.gather(*state.tasks)
    await asyncio.sleep(0)
    if not gone:
        protocol.connection_lost(None)
    return transport


def test_a_small_response_leaves_in_one_write_with_uvicorns_exact_bytes() -> None:
    theirs = asyncio.run(exchange(HttpToolsProtocol, small))
    ours = asyncio.run(exchange(OneWriteHttpToolsProtocol, small))
    assert len(theirs.writes) == 2  # status line and headers, then the body
    assert len(ours.writes) == 1
    assert ours.writes[0] == b"".join(theirs.writes)
    assert ours.writes[0].endswith(b'\r\n\r\n{"data":{"amount":0.5}}')


def test_pipelined_requests_get_their_answers_in_order() -> None:
    theirs = asyncio.run(exchange(HttpToolsProtocol, small, REQUEST * 3))
    ours = asyncio.run(exchange(OneWriteHttpToolsProtocol, small, REQUEST * 3))
    assert b"".join(ours.writes) == b"".join(theirs.writes)
    assert b"".join(ours.writes).count(b"HTTP/1.1 200 OK") == 3


def test_a_streamed_response_still_leaves_chunk_by_chunk() -> None:
    theirs = asyncio.run(exchange(HttpToolsProtocol, streamed))
    ours = asyncio.run(exchange(OneWriteHttpToolsProtocol, streamed))
    assert b"".join(ours.writes) == b"".join(theirs.writes)
    # Not held back until the end: each turn of the loop sends what the app sent in it.
    assert len(ours.writes) >= 3
    assert b"one," in ours.writes[0] and b"three" not in ours.writes[0]


def test_what_is_held_is_sent_before_the_connection_closes() -> None:
    ours = asyncio.run(exchange(OneWriteHttpToolsProtocol, closing))
    assert ours.events[:2] == ["write", "close"]
    assert ours.writes[0].endswith(b"\r\n\r\nok")


@pytest.mark.parametrize("app", [small, streamed])
def test_nothing_is_written_after_the_peer_went_away(app: Any) -> None:
    ours = asyncio.run(exchange(OneWriteHttpToolsProtocol, app, gone=True))
    assert ours.writes == []  # and RecordingTransport.write asserts it is not closed
