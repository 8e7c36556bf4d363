"""The SQLite writer as a process of its own, and the server's side of talking to it.

Why a process: a flush run on a thread of the server waits for the interpreter lock,
which the event loop's thread holds while it answers the flush before's requests. Under
spread load the first statement of a flush took 3.1 ms of wall time for 0.36 ms of CPU,
and the flush — for which every request in it waits — took 7.3 ms for under 3 ms of
SQLite's work (docs/benchmarks.md). In a process of its own the writer has a lock of its
own, as PostgreSQL's backend does, and the event loop only sends the rows and reads the
answer on a socket: no thread, no lock to wait for.

`WriterProcess.call(operation, *args)` sends one request and waits for its answer,
one at a time; the operations are in persistence/sqlite_writer_main.py. A call is not
abandoned when its caller is cancelled: it waits for its answer first, so a transaction
is always committed or rolled back inside its own call. If the process ends (killed, or
out of memory) the call in flight fails as StoreUnavailable, and the next call starts a
new process (and opens the file again) first. If the server dies, so does the process.
"""

from __future__ import annotations

import os
import pickle
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio

from engine.runtime.errors import StoreUnavailable
from persistence import sqlite_writer_main as child

__all__ = ["WriterProcess"]

_SCRIPT = str(Path(child.__file__).resolve())
_HEADER = child.HEADER
# How long a stopping writer may take to finish its last request before it is killed.
_EXIT_WAIT_S = 30.0


class WriterProcess:
    """The writer's process: started by `start`, ended by `close`. `open_args` are
    `sqlite_writer_main.open_writer`'s; `after` is called once each call has finished
    (a checkpoint is due once what it wrote is in the log)."""

    def __init__(self, open_args: tuple[Any, ...],
                 after: Callable[[], None] | None = None) -> None:
        self._open_args = open_args
        self._after = after
        # fast_acquire: an uncontended acquire does not yield to the event loop. Without
        # it, each flush's request waited for one whole turn of the loop, behind the
        # requests the flush before had just woken, before it left for the writer.
        self._lock = anyio.Lock(fast_acquire=True)
        self._proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self.started = 0  # processes started: 1 unless one ended under the store
        self.closed = False

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    async def start(self) -> None:
        async with self._lock:
            with anyio.CancelScope(shield=True):
                await self._spawn()

    async def call(self, operation: str, *args: Any) -> Any:
        request = pickle.dumps((operation, args), protocol=pickle.HIGHEST_PROTOCOL)
        try:
            async with self._lock:
                with anyio.CancelScope(shield=True):
                    if self._sock is None:
                        if self.closed:
                            raise StoreUnavailable("the SQLite store is closed")
                        await self._spawn()
                    status, result = pickle.loads(await self._exchange(request))
        finally:
            if self._after is not None:
                self._after()
        if status == "error":
            raise result
        return result

    async def close(self) -> None:
        """Let the process finish its last request, close the file and exit."""
        async with self._lock:
            self.closed = True
            with anyio.CancelScope(shield=True):
                await self._end()

    async def _spawn(self) -> None:
        # socketpair's ends are not inheritable (PEP 446): only the end in `pass_fds`
        # reaches the writer, no later child of the server holds the server's end open,
        # and so the writer sees that end close when the server dies.
        ours, theirs = socket.socketpair()
        try:
            # Started from the event loop's thread, not a worker thread: the process dies
            # with the thread that started it (PR_SET_PDEATHSIG), and worker threads come
            # and go. Python starts it with vfork: about a millisecond of the loop's time.
            self._proc = subprocess.Popen(
                [sys.executable, "-I", "-S", _SCRIPT, str(theirs.fileno()), str(os.getpid())],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        ours.setblocking(False)
        self._sock = ours
        self.started += 1
        request = pickle.dumps(("open", self._open_args), protocol=pickle.HIGHEST_PROTOCOL)
        status, result = pickle.loads(await self._exchange(request))
        if status == "error":
            await self._end()
            raise result

    async def _exchange(self, request: bytes) -> bytes:
        sock = self._sock
        assert sock is not None
        try:
            await self._send(sock, _HEADER.pack(len(request)) + request)
            (size,) = _HEADER.unpack(await self._receive(sock, _HEADER.size))
            return await self._receive(sock, size)
        except (OSError, EOFError) as exc:
            code = self._proc.poll() if self._proc is not None else None
            await self._end()
            raise StoreUnavailable(
                f"the SQLite writer's process ended (exit status {code}): {exc!r}",
                retry_after_s=1.0) from exc

    @staticmethod
    async def _send(sock: socket.socket, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[sock.send(view):]
            except BlockingIOError:
                await anyio.wait_writable(sock)

    @staticmethod
    async def _receive(sock: socket.socket, size: int) -> bytes:
        data = bytearray(size)
        view, got = memoryview(data), 0
        while got < size:
            try:
                n = sock.recv_into(view[got:])
            except BlockingIOError:
                await anyio.wait_readable(sock)
                continue
            if n == 0:
                raise EOFError("the writer's socket closed")
            got += n
        return bytes(data)

    async def _end(self) -> None:
        sock, proc, self._sock, self._proc = self._sock, self._proc, None, None
        if sock is not None:
            sock.close()  # the process sees the end of its requests and exits
        if proc is not None:
            def wait() -> None:
                try:
                    proc.wait(_EXIT_WAIT_S)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()

            await anyio.to_thread.run_sync(wait)

