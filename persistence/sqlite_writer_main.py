"""The SQLite writer's process: it owns the store's one writing connection and runs what
the server asks of it, one request at a time (persistence/sqlite_writer.py starts it and
talks to it; persistence/sqlite.py says why a process).

Standard library only: it runs as a script under `python -I -S`, so it starts in a few
milliseconds and imports nothing of creditd's (nor its dependencies).

Requests and answers travel over a socket inherited from the server, each a pickle after
its length (4 bytes, big-endian): a request is `(operation, arguments)`, an answer
`("ok", result)` or `("error", exception)`. A transaction is begun and ended inside one
request, never left open between two.

It ends with the server, one way or the other:
- The server closes its end when it closes the store (after its last flush): the process
  closes the connection and exits.
- The server dies (kill -9, out of memory): the kernel kills the process too
  (PR_SET_PDEATHSIG), as it would a thread of the server. A transaction in flight is then
  rolled back by SQLite, or was committed; nothing queued behind it runs after the server
  is gone, so whoever opens the file next sees what the server left, and no more.
- SIGINT and SIGTERM, which a terminal or a service manager send to the whole process
  group, are ignored: the server decides when its writer stops.
"""

from __future__ import annotations

import ctypes
import os
import pickle
import signal
import socket
import sqlite3
import struct
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

HEADER = struct.Struct("!I")
# A write step: a statement and its parameter rows (run once per row), or None to run a
# statement that takes none (DDL, which executemany refuses) once.
Step = tuple[str, "Sequence[Sequence[Any]] | None"]


def open_writer(path: str, busy_timeout_ms: int, cache_mb: int, log_bytes_kept: int,
                autocheckpoint_pages: int) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, timeout=busy_timeout_ms / 1000)
    try:
        db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        db.execute(f"PRAGMA cache_size = -{int(cache_mb) * 1024}")
        _enable_wal(db, busy_timeout_ms)
        # A log that a checkpoint emptied is truncated back to this size when the writer
        # starts it again, rather than keeping its largest size on disk.
        db.execute(f"PRAGMA journal_size_limit = {int(log_bytes_kept)}")
        db.execute("PRAGMA synchronous = FULL")
        db.execute("PRAGMA foreign_keys = OFF")
        # SQLite's own checkpoint, inside the COMMIT that crosses this many log pages: the
        # server checkpoints beside the writer long before (persistence/sqlite.py).
        db.execute(f"PRAGMA wal_autocheckpoint = {int(autocheckpoint_pages)}")
    except BaseException:
        db.close()
        raise
    return db


def _enable_wal(db: sqlite3.Connection, busy_timeout_ms: int) -> None:
    """WAL is a property of the file, set once by the writer. Switching to it needs a
    moment of exclusive access, and SQLite answers "database is locked" at once, without
    waiting out the busy timeout, when another process is opening the same new file; so
    retry within the busy timeout."""
    deadline = time.monotonic() + busy_timeout_ms / 1000
    while True:
        try:
            db.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(0.01)


def _immediate(db: sqlite3.Connection, work: Callable[[], Any]) -> Any:
    """One write transaction: BEGIN IMMEDIATE (takes the write lock at once, so a reader
    never has to be upgraded), COMMIT on success, ROLLBACK on any failure."""
    db.execute("BEGIN IMMEDIATE")
    try:
        result = work()
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:  # a failed COMMIT may have ended it already
            db.execute("ROLLBACK")
        raise
    return result


def _run_steps(db: sqlite3.Connection, steps: Sequence[Step]) -> None:
    for statement, rows in steps:
        if rows is None:
            db.execute(statement)
        else:
            db.executemany(statement, rows)


def write(db: sqlite3.Connection, lookups: Sequence[tuple[str, Sequence[Any]]],
          steps: Sequence[Step]) -> list[tuple]:
    """One transaction: the `lookups` first (key checks, on the pages the write then
    changes); if they find nothing, the `steps`. Returns what the lookups found."""
    def work() -> list[tuple]:
        found: list[tuple] = []
        for query, params in lookups:
            found += db.execute(query, params).fetchall()
        if not found:
            _run_steps(db, steps)
        return found

    return _immediate(db, work)


def execute(db: sqlite3.Connection, statements: Sequence[tuple[str, Sequence[Any]]],
            ) -> list[int]:
    """Statements each in a transaction of its own; the rows each changed."""
    return [db.execute(query, params).rowcount for query, params in statements]


def query(db: sqlite3.Connection, statement: str, params: Sequence[Any]) -> list[tuple]:
    return db.execute(statement, params).fetchall()


def migrate(db: sqlite3.Connection, migrations: Sequence[Sequence[str]]) -> int:
    """Apply the migrations the file has not had; the schema version now in force."""
    version = 0
    for number, statements in enumerate(migrations, start=1):
        version = _immediate(db, lambda n=number, s=statements: _migration(db, n, s))
    return version


def _migration(db: sqlite3.Connection, number: int, statements: Sequence[str]) -> int:
    # The version is read inside the write transaction: several processes may start on
    # an empty file at once, and only one may apply each step.
    db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    row = db.execute("SELECT max(version) FROM schema_version").fetchone()
    current = (row[0] if row else None) or 0
    if number <= current:
        return current
    for statement in statements:
        db.execute(statement)
    db.execute("INSERT INTO schema_version (version) VALUES (?)", (number,))
    return number


OPERATIONS: dict[str, Callable[..., Any]] = {
    "write": write, "execute": execute, "query": query, "migrate": migrate}


def _receive(sock: socket.socket) -> bytes | None:
    """The next request, or None once the server's end is closed."""
    header = _exactly(sock, HEADER.size)
    if header is None:
        return None
    return _exactly(sock, HEADER.unpack(header)[0])


def _exactly(sock: socket.socket, size: int) -> bytes | None:
    data = bytearray(size)
    view, got = memoryview(data), 0
    while got < size:
        n = sock.recv_into(view[got:])
        if n == 0:
            return None
        got += n
    return bytes(data)


def _answer(outcome: tuple[str, Any]) -> bytes:
    try:
        body = pickle.dumps(outcome, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:  # noqa: BLE001 - an error that does not pickle still gets answered
        body = pickle.dumps(("error", RuntimeError(repr(outcome[1]))))
    return HEADER.pack(len(body)) + body


def serve(sock: socket.socket) -> None:
    db: sqlite3.Connection | None = None
    try:
        while (request := _receive(sock)) is not None:
            try:
                # (Inside the try: a request that does not unpickle here — a type this
                # process cannot import — is answered as an error, not a crash.)
                operation, args = pickle.loads(request)
                if operation == "open":
                    if db is not None:
                        db.close()
                    db = None
                    db = open_writer(*args)
                    result: Any = None
                elif db is None:
                    raise sqlite3.ProgrammingError("the writer's connection is closed")
                else:
                    result = OPERATIONS[operation](db, *args)
                outcome: tuple[str, Any] = ("ok", result)
            except Exception as exc:  # noqa: BLE001 - every failure goes back to the server
                outcome = ("error", exc)
            sock.sendall(_answer(outcome))
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server is gone: nothing to answer to
    finally:
        if db is not None:
            db.close()


def _die_with(server_pid: int) -> None:
    """Have the kernel SIGKILL this process when the server dies. (Tied to the server's
    thread that started it: the server starts it from its main thread.)"""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG (Linux)
    except (OSError, AttributeError):  # not Linux: the end of the requests still ends it
        return
    if os.getppid() != server_pid:  # the server died before the line above
        os._exit(0)


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _die_with(int(sys.argv[2]))
    sock = socket.socket(fileno=int(sys.argv[1]))
    sock.setblocking(True)
    try:
        serve(sock)
    finally:
        sock.close()


if __name__ == "__main__":
    main()
