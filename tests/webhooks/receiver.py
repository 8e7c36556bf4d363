"""A real HTTP/1.1 webhook receiver on 127.0.0.1, run by an asyncio loop in a thread, so
tests that drive a creditd process can watch what arrives.

`answer(request)` decides each reply: a status code, `RESET` (close the connection without
answering: the receiver is down) or `HANG` (never answer: a timeout). Tests wait on
`wait_for(condition)`, a condition variable signalled on every request, never a sleep.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec

RESET = -1
HANG = -2


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    status: int  # what was answered (RESET, HANG or a status code)
    at: float

    @property
    def json(self) -> Any:
        return msgspec.json.decode(self.body)

    @property
    def id(self) -> str:
        return self.headers["webhook-id"]


class Receiver:
    def __init__(self, answer: Callable[[Received], int] = lambda r: 200) -> None:
        self.answer = answer
        self.received: list[Received] = []
        self._changed = threading.Condition()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.base_events.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def __enter__(self) -> Receiver:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, "127.0.0.1", 0), self._loop)
        self._server = future.result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc_info: object) -> None:
        async def close() -> None:
            assert self._server is not None
            self._server.close()
            for writer in list(self._writers):
                writer.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.run_until_complete(asyncio.sleep(0))  # let cancelled handlers finish
        self._loop.close()

    def wait_for(self, condition: Callable[[list[Received]], bool], timeout: float = 30) -> None:
        with self._changed:
            if not self._changed.wait_for(lambda: condition(self.received), timeout):
                raise AssertionError(f"the receiver did not see what was expected in "
                                     f"{timeout} s; it saw {len(self.received)} requests")

    def delivered(self) -> list[Received]:
        """The requests answered with 2xx, in arrival order."""
        with self._changed:
            return [r for r in self.received if 200 <= r.status < 300]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        name, _, value = line.partition(":")
                        headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                request = Received(headers, body, 0, time.time())
                status = self.answer(request)
                request.status = status
                with self._changed:
                    self.received.append(request)
                    self._changed.notify_all()
                if status == RESET:
                    sock = writer.get_extra_info("socket")
                    # Linger 0: the close sends RST, as a crashed receiver's host would.
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    writer.close()
                    return
                if status == HANG:
                    await asyncio.Event().wait()
                writer.write(b"HTTP/1.1 %d X\r\ncontent-length: 2\r\n\r\nok" % status)
                await writer.drain()
        except asyncio.CancelledError:
            pass
        finally:
            self._writers.discard(writer)
            writer.close()
