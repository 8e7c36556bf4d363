"""A real creditd server process for the gateway tests, driven over HTTP.

`Server` starts `python -m gateway.cli serve` on a socket this process has already bound
and put in listening state (`--fd`): the port is known before the child starts, and a
request sent before the server is ready simply waits in the listen backlog, so nothing
polls or sleeps to find out when the server is up. The child's output is read by a thread
(so its pipe never fills) and kept, so a test can wait for a line (the generated API key).

Fixtures:
- `server`: one server per test module, on a fresh SQLite file and on a fresh PostgreSQL
  database (skipped without PostgreSQL, a failure under CI=true), with two environments'
  keys (`KEY` in `default`, `OTHER_KEY` in `other`).
- `make_server`: start servers with other settings (no keys, restarts).
- `client` / `raw`: the official `stigg` client and a plain httpx client on `server`.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import httpx
import pytest
from stigg import Stigg

ROOT = Path(__file__).resolve().parents[2]
KEY = "test-key-default-" + secrets.token_hex(8)
OTHER_KEY = "test-key-other-" + secrets.token_hex(8)
PG_ADMIN = os.environ.get("CREDITD_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def child_pids(pid: int) -> list[int]:
    """The child processes of `pid` (a server's: SQLite's writer process), whichever of its
    threads started them."""
    pids: list[int] = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            pids += [int(p) for p in f.read().split()]
    return pids


class Server:
    key = KEY  # environment `default`
    other_key = OTHER_KEY  # environment `other`

    def __init__(self, database_url: str, *, api_keys: str | None,
                 env: dict[str, str] | None = None) -> None:
        self.database_url = database_url
        self.api_keys = api_keys
        self.extra_env = env or {}
        self.port = 0
        self.proc: subprocess.Popen[str] | None = None
        self.lines: list[str] = []
        self._changed = threading.Condition()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Server:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))  # the same port again on a restart
        sock.listen(1024)
        self.port = sock.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("CREDITD_")}
        env.update({"PYTHONUNBUFFERED": "1", **self.extra_env})
        if self.api_keys is not None:
            env["CREDITD_API_KEYS"] = self.api_keys
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "serve", "--fd", str(sock.fileno()),
             "--database-url", self.database_url],
            cwd=ROOT, env=env, pass_fds=[sock.fileno()], text=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        sock.close()  # the child holds its own copy
        threading.Thread(target=self._read, args=(self.proc,), daemon=True).start()
        return self

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for_line(self, needle: str, timeout: float = 30) -> str:
        """The first output line containing `needle`, waiting for it if need be."""
        def found() -> str | None:
            return next((line for line in self.lines if needle in line), None)

        with self._changed:
            def done() -> bool:
                return found() is not None or self.proc is None or self.proc.poll() is not None

            if not self._changed.wait_for(done, timeout):
                raise AssertionError(f"no line with {needle!r} in {timeout} s: {self.lines}")
            line = found()
        if line is None:
            raise AssertionError(f"the server exited without printing {needle!r}: {self.lines}")
        return line

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=30)
        finally:
            self.proc = None

    def http(self, key: str | None = KEY, **kwargs: Any) -> httpx.Client:
        headers = {"X-API-KEY": key} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, **kwargs)

    def stigg(self, key: str = KEY, **kwargs: Any) -> Stigg:
        # No retries: a test must see the first answer, not a retried one.
        return Stigg(api_key=key, base_url=self.url, max_retries=0, **kwargs)


def _pg_missing(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"PostgreSQL is unreachable ({reason}); CI=true requires it", pytrace=False)
    pytest.skip(f"PostgreSQL is unreachable: {reason}")


async def _pg_admin(statement: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN, timeout=5)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


def fresh_pg_url() -> tuple[str, Callable[[], None]]:
    """A new empty PostgreSQL database: its URL and a function that drops it."""
    name = f"creditd_gw_{secrets.token_hex(6)}"
    try:
        anyio.run(_pg_admin, f'CREATE DATABASE "{name}"', backend="asyncio")
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        _pg_missing(repr(exc))
    base = PG_ADMIN.rsplit("/", 1)[0]

    def drop() -> None:
        anyio.run(_pg_admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', backend="asyncio")

    return f"{base}/{name}", drop


def _serve(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
           env: dict[str, str]) -> Iterator[Server]:
    drop = None
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('creditd') / 'creditd.db'}"
    else:
        url, drop = fresh_pg_url()
    s = Server(url, api_keys=f"{KEY},other:{OTHER_KEY}", env=env).start()
    try:
        yield s
    finally:
        s.stop()
        if drop is not None:
            drop()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Every gateway test runs against both stores. A test module that needs settings
    declares them as `SERVER_ENV = {"CREDITD_…": "…"}` (a manual clock, tax rates, a
    catalog to load)."""
    yield from _serve(request, tmp_path_factory, dict(getattr(request.module, "SERVER_ENV", {})))


# A manual clock (CREDITD_CLOCK) that starts here and moves only through
# `PUT /api/v1/test-clock`: `SERVER_ENV = {"CREDITD_CLOCK": "manual:2026-01-01T00:00:00Z"}`.
CLOCK_START = "2026-01-01T00:00:00+00:00"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def clock_server(request: pytest.FixtureRequest,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server on a manual clock starting at CLOCK_START, beside the module's `server`
    (for modules whose `server` runs on the system clock)."""
    env = {**getattr(request.module, "SERVER_ENV", {}),
           "CREDITD_CLOCK": f"manual:{CLOCK_START}"}
    yield from _serve(request, tmp_path_factory, env)


class TestClock:
    """The server's manual clock: `now()` reads it, `move(to=…)` / `move(by=…)` moves it
    (whatever falls due — renewals, trial ends, expiries — runs before the answer)."""

    __test__ = False  # not a test class

    def __init__(self, raw: httpx.Client) -> None:
        self.raw = raw

    def now(self) -> datetime:
        r = self.raw.get("/api/v1/test-clock")
        assert r.status_code == 200, r.text
        return datetime.fromisoformat(r.json()["data"]["now"].replace("Z", "+00:00"))

    def move(self, *, to: datetime | None = None, by: timedelta | None = None) -> datetime:
        body = {"now": to.isoformat()} if to is not None else {
            "advanceSeconds": int(by.total_seconds())}  # type: ignore[union-attr]
        r = self.raw.put("/api/v1/test-clock", json=body)
        assert r.status_code == 200, r.text
        return datetime.fromisoformat(r.json()["data"]["now"].replace("Z", "+00:00"))


@pytest.fixture
def clock(request: pytest.FixtureRequest) -> Iterator[TestClock]:
    """The clock of the module's `server` when its SERVER_ENV sets CREDITD_CLOCK, else of
    `clock_server`. Tests of a module share the server, so each reads the time it starts
    at (`clock.now()`) rather than assuming it."""
    manual = "CREDITD_CLOCK" in getattr(request.module, "SERVER_ENV", {})
    s = request.getfixturevalue("server" if manual else "clock_server")
    with s.http() as raw:
        yield TestClock(raw)


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    started: list[Server] = []

    def make(database_url: str | None = None, **kwargs: Any) -> Server:
        s = Server(database_url or f"sqlite:///{tmp_path / 'creditd.db'}", **kwargs)
        started.append(s)
        return s

    yield make
    for s in started:
        if s.proc is not None:
            s.stop()


@pytest.fixture
def client(server: Server) -> Iterator[Stigg]:
    with server.stigg() as c:
        yield c


@pytest.fixture
def raw(server: Server) -> Iterator[httpx.Client]:
    with server.http() as c:
        yield c


@pytest.fixture
def uid() -> Callable[[str], str]:
    """`uid("cust")` -> a fresh id, so tests sharing a module's server never collide."""
    return lambda prefix: f"{prefix}-{uuid.uuid4().hex[:10]}"
