"""SQLite checkpoints run on a connection of their own, beside the writer, not inside the
writer's commits (persistence/sqlite.py, `_checkpointer`): the writer's own checkpoint
waits for a larger log while the store is open, checkpoints follow writes, the log starts
over rather than growing under a writer that never pauses, a failed checkpoint is counted
and the store goes on committing, and everything written is in the file after."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import anyio
import pytest

from engine.core.amounts import SCALE
from engine.core.commands import Consume, CreateGrant
from engine.core.model import GrantType
from engine.runtime import ManualClock

pytestmark = pytest.mark.anyio
CUR = "tok"
CUSTOMERS = [f"default/c{i}" for i in range(16)]


async def _writer_pragma(store: Any, name: str) -> int:
    # Asked of the writer's own connection, in its process.
    ((value,),) = await store._wdb.call("query", f"PRAGMA {name}", ())
    return int(value)


async def _traffic(rt: Any, rounds: int) -> None:
    """A grant per customer, then `rounds` consumptions per customer, all customers at
    once (so flushes carry many customers' units, as under spread load)."""
    for c in CUSTOMERS:
        await rt.submit(c, CreateGrant(grant_id="g", currency_id=CUR, amount=10**6 * SCALE,
                                       grant_type=GrantType.PAID, display_name="g"))

    async def customer(c: str) -> None:
        for _ in range(rounds):
            await rt.submit(c, Consume(currency_id=CUR, amount=SCALE))

    async with anyio.create_task_group() as tg:
        for c in CUSTOMERS:
            tg.start_soon(customer, c)


async def _checkpointed(store: Any, at_least: int, *, saw_pages: bool = True) -> None:
    """Until `at_least` checkpoints ran and (`saw_pages`) the last one found pages in the
    log: the first one may run on the empty log of a store that just opened."""
    with anyio.fail_after(10):
        while store.checkpoints < at_least or (saw_pages and store.log_pages == 0):
            await store._checkpoint_ran.wait()


async def test_checkpoints_run_beside_the_writer_and_copy_the_log_back(
        tmp_path: Path, engine: Any) -> None:
    path = tmp_path / "c.db"
    async with engine(f"sqlite:///{path}", ManualClock(),
                      checkpoint_interval_s=0.0) as (store, rt):
        # SQLite's own checkpoint runs inside the writer's COMMIT: only at a larger log.
        assert await _writer_pragma(store, "wal_autocheckpoint") == store.log_pages_reset == 8192
        await _traffic(rt, rounds=20)
        await _checkpointed(store, 1)  # the writes woke the checkpointer
        assert store.log_pages > 0
        assert store.checkpoint_failures == 0
        # Nothing more is written: one more checkpoint copies the whole log back.
        busy, pages, copied = await store.checkpoint()
        assert busy == 0 and pages == copied
        stats = store.statistics()
        assert stats["checkpoints"] == store.checkpoints >= 2
        assert stats["log_pages"] == store.log_pages == pages
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        consumed = db.execute("SELECT count(*) FROM ledger WHERE kind = 2").fetchone()[0]
        assert consumed == 20 * len(CUSTOMERS)
    finally:
        db.close()


async def test_the_log_starts_over_under_writes_that_never_pause(
        tmp_path: Path, engine: Any) -> None:
    # Checkpoints beside a writer that always has the next flush going never copy the
    # whole log back, and the log only starts over when a write begins with all of it
    # copied: without the writer's own checkpoint at `log_pages_reset` the log file held
    # every page ever written: 27 MB after this traffic, against 0.6-0.8 MB with it.
    path = tmp_path / "c.db"
    async with engine(f"sqlite:///{path}", ManualClock(), checkpoint_interval_s=0.01,
                      log_pages_reset=64) as (store, rt):
        await _traffic(rt, rounds=300)
        await _checkpointed(store, 1, saw_pages=False)  # the log may just have started over
        log_bytes = (tmp_path / "c.db-wal").stat().st_size
        # The log holds about the reset size plus a few flushes, not all that went by.
        assert log_bytes < 4 << 20, log_bytes


async def test_a_failed_checkpoint_is_counted_and_the_store_goes_on(
        tmp_path: Path, engine: Any) -> None:
    async with engine(f"sqlite:///{tmp_path / 'c.db'}", ManualClock(),
                      checkpoint_interval_s=0.0) as (store, rt):
        real = store._cdb.conn

        class Broken:
            """The checkpointer's connection, failing as a full disk does."""

            def execute(self, *args: Any) -> Any:
                raise sqlite3.OperationalError("database or disk is full")

            def close(self) -> None:
                real.close()

        store._cdb.conn = Broken()
        await _traffic(rt, rounds=5)
        with anyio.fail_after(10):
            while store.checkpoint_failures == 0:
                await store._checkpoint_ran.wait()
        assert store.checkpoints == 0
        # The store still commits, and checkpoints again once the connection works.
        store._cdb.conn = real
        await _traffic(rt, rounds=5)
        await _checkpointed(store, 1)
        busy, pages, copied = await store.checkpoint()
        assert busy == 0 and pages == copied


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_the_checkpointer_runs_under_trio(tmp_path: Path, engine: Any) -> None:
    async with engine(f"sqlite:///{tmp_path / 'c.db'}", ManualClock(),
                      checkpoint_interval_s=0.0) as (store, rt):
        assert await _writer_pragma(store, "wal_autocheckpoint") == 8192
        await _traffic(rt, rounds=5)
        await _checkpointed(store, 1)
        assert store.log_pages > 0
