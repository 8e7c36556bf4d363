"""SQLite's writer runs in a process of its own (persistence/sqlite_writer.py): it starts
and ends with the store, its errors reach the store as SQLite raised them, a signal meant
for the server's process group does not stop it, it dies with the server, and a writer
that dies under the store fails only the request in flight: the next starts a new one.
(Under load, killed again and again: tests/persistence/test_store_outage.py.)"""

from __future__ import annotations

import os
import select
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import anyio
import pytest

from engine.core.amounts import SCALE
from engine.core.commands import BalancesReply, Consume, ConsumeReply, CreateGrant, GetBalances
from engine.core.model import GrantType
from engine.runtime import ManualClock, StoreUnavailable

pytestmark = pytest.mark.anyio
CUR = "tok"
ROOT = Path(__file__).resolve().parents[2]


def _grant(grant_id: str) -> CreateGrant:
    return CreateGrant(grant_id=grant_id, currency_id=CUR, amount=1000 * SCALE,
                       grant_type=GrantType.PAID, display_name=grant_id)


class _OnlyHere:
    """Pickled by reference to this test module, which only the server can import."""


def _exited(pid: int, timeout_s: float) -> bool:
    """Whether process `pid` (not necessarily our child) has ended, waiting at most
    `timeout_s` for it: a pidfd becomes readable when its process ends."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        return bool(select.select([fd], [], [], timeout_s)[0])
    finally:
        os.close(fd)


def _signals_ignored(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        (mask,) = [line.split()[1] for line in f if line.startswith("SigIgn:")]
    return int(mask, 16)


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_the_writer_is_a_process_of_its_own_and_ends_with_the_store(
        tmp_path: Path, engine: Any) -> None:
    async with engine(f"sqlite:///{tmp_path / 'w.db'}", ManualClock()) as (store, rt):
        pid = store._wdb.pid
        assert pid is not None and pid != os.getpid()
        await rt.submit("c", _grant("g"))
        assert isinstance(await rt.submit("c", Consume(currency_id=CUR, amount=SCALE)),
                          ConsumeReply)
        # Signals a terminal or a service manager send the whole process group: ignored.
        ignored = _signals_ignored(pid)
        assert ignored & (1 << (signal.SIGINT - 1)) and ignored & (1 << (signal.SIGTERM - 1))
    # Closed with the store, and reaped by it.
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    db = sqlite3.connect(tmp_path / "w.db")
    try:
        assert db.execute("SELECT count(*) FROM ledger").fetchone()[0] == 2
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        db.close()


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_a_dead_writer_fails_the_request_in_flight_and_the_next_starts_a_new_one(
        tmp_path: Path, engine: Any, ledger_checked: Any, keyed_ledger: Any) -> None:
    async with engine(f"sqlite:///{tmp_path / 'w.db'}", ManualClock()) as (store, rt):
        await rt.submit("c", _grant("g"))
        first = store._wdb.pid
        os.kill(first, signal.SIGKILL)
        assert _exited(first, 10)
        with anyio.fail_after(10), pytest.raises(StoreUnavailable):
            await rt.submit("c", Consume(currency_id=CUR, amount=SCALE, idempotency_key="k"))
        # The customer was reloaded from what is durable; the retry starts a new writer.
        reply = await rt.submit("c", Consume(currency_id=CUR, amount=SCALE,
                                             idempotency_key="k"))
        assert isinstance(reply, ConsumeReply)
        assert store._wdb.started == 2 and store._wdb.pid not in (None, first)
        entries = await ledger_checked(store, rt, "c")
        assert (await keyed_ledger(store, "c", entries, ["k"])) == {"k": 1}
        balances = await rt.submit("c", GetBalances())
        assert isinstance(balances, BalancesReply)
        assert balances.balances[0].current_balance == 999 * SCALE


async def test_sqlite_errors_keep_their_kind_and_nothing_is_half_applied(
        tmp_path: Path, engine: Any) -> None:
    async with engine(f"sqlite:///{tmp_path / 'w.db'}", ManualClock()) as (store, _rt):
        await store.execute("CREATE TABLE t (k INTEGER PRIMARY KEY)")
        with pytest.raises(sqlite3.IntegrityError) as caught:
            await store.transact([("INSERT INTO t (k) VALUES (?)", [(1,), (2,)]),
                                  ("INSERT INTO t (k) VALUES (?)", [(3,), (1,)])])
        assert caught.value.sqlite_errorname == "SQLITE_CONSTRAINT_PRIMARYKEY"
        assert await store.fetch("SELECT count(*) FROM t") == [(0,)]
        with pytest.raises(sqlite3.OperationalError, match="no such table"):
            await store.execute("INSERT INTO missing_table VALUES (1)")
        # A value of a type the writer's process cannot import (it imports nothing of
        # creditd's) is an error answered, not a dead writer.
        with pytest.raises(ModuleNotFoundError):
            await store._wdb.call("query", "SELECT ?", (_OnlyHere(),))
        # The writer is the same process all along: an error is an answer, not a death.
        assert store._wdb.started == 1
        assert await store.execute("INSERT INTO t (k) VALUES (?)", 7) == 1


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_a_request_leaves_for_the_writer_before_other_ready_tasks_run(
        tmp_path: Path, engine: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A flush's request goes to the writer at once, not after a turn of the event loop:
    when a flush ends it wakes the requests it carried, and the next flush must not wait
    behind all of them before it leaves (persistence/sqlite_writer.py, `fast_acquire`)."""
    async with engine(f"sqlite:///{tmp_path / 'w.db'}", ManualClock()) as (store, _rt):
        writer = store._wdb
        order: list[str] = []
        send = writer._send

        async def recorded_send(sock: Any, data: bytes) -> None:
            order.append("sent")
            await send(sock, data)

        async def other() -> None:
            order.append("other")

        monkeypatch.setattr(writer, "_send", recorded_send)
        async with anyio.create_task_group() as tg:
            tg.start_soon(other)  # ready to run at the loop's next turn
            await writer.call("query", "SELECT 1", ())
        assert order == ["sent", "other"]


def test_the_writer_dies_with_the_server(tmp_path: Path) -> None:
    """kill -9 of the server takes its writer with it (as it would a thread): nothing the
    server had queued for it runs after the server is gone."""
    server = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import anyio, sys
            from persistence import open_store

            async def main():
                async with open_store({f"sqlite:///{tmp_path / 'w.db'}"!r}) as store:
                    print(store._wdb.pid, flush=True)
                    await anyio.sleep_forever()

            anyio.run(main)
        """)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        writer = int(server.stdout.readline())
        assert not _exited(writer, 0)
        server.kill()
        server.wait(10)
        assert _exited(writer, 10), "the writer outlived the server"
    finally:
        server.kill()
        server.wait()
