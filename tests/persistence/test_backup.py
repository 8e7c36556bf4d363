"""Backups: `creditd backup` of a SQLite store taken while a writer commits restores to a
consistent store; `creditd restore` refuses what it must; a PostgreSQL database dumped
with pg_dump while serving restores with every balance the ledger's projection."""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import pytest

from engine.core.amounts import SCALE
from engine.core.commands import Consume, CreateGrant, Reserve
from engine.core.model import GrantType
from engine.core.model import LedgerEventType as L
from engine.core.replay import customer_row, grant_row, pool_row, rebuild, reservation_row
from engine.runtime import ManualClock
from persistence.backup import BackupError, backup_sqlite, restore_sqlite
from persistence.schema import LATEST_VERSION

pytestmark = pytest.mark.anyio
CUR = "tok"
CUSTOMERS = [f"default/c{i}" for i in range(8)]


def grant(gid: str, credits: int, **fields: Any) -> CreateGrant:
    return CreateGrant(grant_id=gid, currency_id=CUR, amount=credits * SCALE,
                       grant_type=GrantType.PAID, display_name=gid, **fields)


def consume(units: int) -> Consume:
    return Consume(currency_id=CUR, amount=units)


async def assert_consistent(store: Any, rt: Any, ledger_checked: Any) -> int:
    """Every customer: ledger gapless, each balance the sum of its ledger, and the rows
    the store restores equal the rows rebuilt from the ledger alone (nothing
    half-applied). The number of consumption entries."""
    total = 0
    for customer in CUSTOMERS:
        entries = await ledger_checked(store, rt, customer)
        state = await store.load(customer)
        rebuilt = rebuild(customer_row(state), [grant_row(g) for g in state.grants.values()],
                          [reservation_row(r) for r in state.reservations.values()],
                          [pool_row(p) for p in state.pools.values()], entries)
        assert {g.id: grant_row(g) for g in rebuilt.grants.values()} == {
            g.id: grant_row(g) for g in state.grants.values()}
        assert rebuilt.ledger_seq == state.ledger_seq == len(entries)
        total += sum(e.event_type is L.CREDITS_CONSUMED for e in entries)
    return total


async def serve_traffic(rt: Any, clock: ManualClock) -> None:
    for c in CUSTOMERS:
        await rt.submit(c, grant("paid", 1_000))
        await rt.submit(c, grant("promo", 5, expire_at=clock.now_ms() + 1_000))
        await rt.submit(c, Reserve(reservation_id="r", currency_id=CUR, amount=2 * SCALE,
                                   expires_at=clock.now_ms() + 10_000_000))
    clock.advance(2_000)  # the promotional grants expire on the next command


class Writer:
    """Consumptions through the runtime, one customer after another, until stopped; counts
    what was acknowledged (committed)."""

    def __init__(self, rt: Any) -> None:
        self.rt = rt
        self.committed = 0
        self.stop = anyio.Event()

    async def run(self) -> None:
        while not self.stop.is_set():
            await self.rt.submit(CUSTOMERS[self.committed % len(CUSTOMERS)], consume(7))
            self.committed += 1


async def test_a_backup_taken_while_a_writer_commits_restores_to_a_consistent_store(
        tmp_path: Path, engine: Any, ledger_checked: Any) -> None:
    url = f"sqlite:///{tmp_path / 'live.db'}"
    backup = tmp_path / "backups" / "creditd.db"
    clock = ManualClock()
    async with engine(url, clock) as (_store, rt):
        await serve_traffic(rt, clock)
        writer = Writer(rt)
        async with anyio.create_task_group() as tg:
            tg.start_soon(writer.run)
            # Repeat until commits were acknowledged while a backup ran (the writer goes
            # on between attempts; each backup replaces the last).
            for _attempt in range(50):
                before = writer.committed
                version = await anyio.to_thread.run_sync(
                    lambda: backup_sqlite(tmp_path / "live.db", backup, force=True))
                during = writer.committed - before
                if during > 0 and writer.committed > 200:
                    break
            writer.stop.set()
        assert during > 0, "no commit went in while a backup ran"
        assert version == LATEST_VERSION
    assert not list(backup.parent.glob(".*partial*"))  # the temporary file was renamed
    restored = tmp_path / "restored.db"
    assert restore_sqlite(backup, restored) == LATEST_VERSION
    db = sqlite3.connect(restored)
    assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    db.close()
    async with engine(f"sqlite:///{restored}", ManualClock(clock.now_ms())) as (store, rt):
        consumed = await assert_consistent(store, rt, ledger_checked)
        # The consumptions acknowledged before the last backup began, at least; never
        # more than were ever acknowledged.
        assert before <= consumed <= writer.committed


def _write_version(path: Path, version: int) -> None:
    db = sqlite3.connect(path)
    db.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
    db.commit()
    db.close()


async def test_restore_refuses_an_existing_or_open_database_and_a_bad_backup(
        tmp_path: Path, engine: Any) -> None:
    live = tmp_path / "live.db"
    async with engine(f"sqlite:///{live}") as (_store, rt):
        await rt.submit("default/a", grant("g", 10))
        backup_sqlite(live, tmp_path / "b.db")
        with pytest.raises(BackupError, match="exists: use --force"):
            backup_sqlite(live, tmp_path / "b.db")
        with pytest.raises(BackupError, match="exists: use --force"):
            restore_sqlite(tmp_path / "b.db", live)
        # Even with --force, never under a running store.
        with pytest.raises(BackupError, match="is in use"):
            restore_sqlite(tmp_path / "b.db", live, force=True)
    # Stopped: --force replaces it.
    assert restore_sqlite(tmp_path / "b.db", live, force=True) == LATEST_VERSION

    (tmp_path / "junk.db").write_bytes(b"not a database at all" * 100)
    with pytest.raises(BackupError, match="not a SQLite database"):
        restore_sqlite(tmp_path / "junk.db", tmp_path / "new.db")
    sqlite3.connect(tmp_path / "empty.db").execute("CREATE TABLE t (x)").connection.close()
    with pytest.raises(BackupError, match="not a creditd database"):
        restore_sqlite(tmp_path / "empty.db", tmp_path / "new.db")
    shutil.copy(tmp_path / "b.db", tmp_path / "newer.db")
    _write_version(tmp_path / "newer.db", LATEST_VERSION + 1)
    with pytest.raises(BackupError, match="newer than this creditd"):
        restore_sqlite(tmp_path / "newer.db", tmp_path / "new.db")
    # A damaged page: integrity_check says so.
    damaged = tmp_path / "damaged.db"
    data = bytearray((tmp_path / "b.db").read_bytes())
    page = 4096
    for at in range(2 * page + 16, len(data) - 64, page):
        data[at:at + 48] = b"\xff" * 48
    damaged.write_bytes(bytes(data))
    with pytest.raises(BackupError, match="integrity_check|not a SQLite database"):
        restore_sqlite(damaged, tmp_path / "new.db")
    assert not (tmp_path / "new.db").exists()
    with pytest.raises(BackupError, match="no database"):
        backup_sqlite(tmp_path / "missing.db", tmp_path / "x.db")


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message} (CI=true: the PostgreSQL backup test must run on CI)",
                        pytrace=False)
        pytest.skip(message)
    return path


async def test_a_pg_dump_taken_while_serving_restores_with_balances_equal_to_the_ledger(
        pg_database: Any, engine: Any, ledger_checked: Any, tmp_path: Path) -> None:
    pg_dump, pg_restore = _tool("pg_dump"), _tool("pg_restore")
    url = pg_database.url()
    dump = tmp_path / "creditd.dump"
    clock = ManualClock()
    async with engine(url, clock) as (_store, rt):
        await serve_traffic(rt, clock)
        writer = Writer(rt)
        async with anyio.create_task_group() as tg:
            tg.start_soon(writer.run)
            before = writer.committed
            # pg_dump reads one snapshot (a repeatable-read transaction) while we write.
            result = await anyio.run_process([pg_dump, "-Fc", "-f", str(dump), url],
                                             check=False)
            writer.stop.set()
        assert result.returncode == 0, result.stderr.decode()
    restored = f"{pg_database.name}_restored"
    admin = await asyncpg.connect(url.rsplit("/", 1)[0] + "/postgres", timeout=5)
    try:
        await admin.execute(f'CREATE DATABASE "{restored}"')
        restored_url = url.rsplit("/", 1)[0] + f"/{restored}"
        done = await anyio.run_process([pg_restore, "--no-owner", "--exit-on-error", "-d",
                                        restored_url, str(dump)], check=False)
        assert done.returncode == 0, done.stderr.decode()
        async with engine(restored_url, ManualClock(clock.now_ms())) as (store, rt):
            consumed = await assert_consistent(store, rt, ledger_checked)
            assert before <= consumed <= writer.committed
            # The restored database serves: a new consumption goes in and checks out.
            await rt.submit(CUSTOMERS[0], consume(1))
            await assert_consistent(store, rt, ledger_checked)
    finally:
        with anyio.CancelScope(shield=True):
            await admin.execute(f'DROP DATABASE IF EXISTS "{restored}" WITH (FORCE)')
            await admin.close()
