"""uvicorn's HTTP/1.1 protocol (httptools), with each response sent in one write.

uvicorn writes a response's status line and headers when the app sends
`http.response.start`, and its body in a second `transport.write` when the app sends
`http.response.body`. Under uvloop each write is a `send()` on the socket at once, so a small
JSON answer leaves as two TCP segments: two system calls on the event loop's thread, and a
client that wakes up for the headers only to wait for the body. Here a connection's writes
are gathered until the end of the event loop's current iteration and leave in one
`send()`; py-spy put the second write at about 3 % of the loop's time under
scripts/bench_http.py's spread load.

Only the order and grouping of bytes on the wire changes, never their content; a streamed
response (`more_body`) still leaves chunk by chunk, one loop iteration apart at the most.
A websocket upgrade hands uvicorn's websocket protocol the connection's own transport.
What is held is at most what the app wrote in one turn of the loop, which the transport
would have buffered anyway; uvicorn's flow control (pause_writing) sees it one turn later.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["GatheringTransport", "OneWriteHttpToolsProtocol"]


class GatheringTransport:
    """A transport's writes held until the loop's next turn, then sent as one; every other
    attribute is the transport's own. `close()` sends what is held first."""

    __slots__ = ("_held", "_loop", "get_extra_info", "is_closing", "transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self.transport = transport
        self._loop = loop
        self._held: list[bytes] | None = None
        # Asked on every response: the transport's own methods, not a lookup through
        # __getattr__ each time.
        self.is_closing = transport.is_closing
        self.get_extra_info = transport.get_extra_info

    def write(self, data: bytes) -> None:
        held = self._held
        if held is None:
            self._held = [data]
            self._loop.call_soon(self.flush)
        else:
            held.append(data)

    def flush(self) -> None:
        held, self._held = self._held, None
        if held and not self.transport.is_closing():
            self.transport.write(held[0] if len(held) == 1 else b"".join(held))

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def __getattr__(self, name: str) -> Any:  # pause_reading, set_protocol, …
        return getattr(self.transport, name)


class OneWriteHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's `httptools` protocol (pass the class as `uvicorn.Config(http=…)`)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)  # flow control and addresses: the real transport
        self.transport = GatheringTransport(transport, self.loop)  # type: ignore[assignment]

    def handle_websocket_upgrade(self) -> None:
        gathering = self.transport
        if isinstance(gathering, GatheringTransport):
            gathering.flush()
            self.transport = gathering.transport
        super().handle_websocket_upgrade()
