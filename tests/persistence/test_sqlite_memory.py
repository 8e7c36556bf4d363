"""SQLite's own memory in the server's process (persistence/sqlite_memory.py): the figure
`/health?detail=true`, `/metrics` and scripts/soak.py show beside the runtime's estimate,
and what bounds it — the reader's page cache, `CREDITD_SQLITE_CACHE_MB`."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from engine.runtime import ManualClock
from persistence.sqlite_memory import sqlite_memory_bytes

pytestmark = pytest.mark.anyio
MIB = 1 << 20


def _fill(path: Path, mib: int) -> None:
    """A table of `mib` MiB beside the store's, written by a connection of the test's own
    (WAL lets it write beside the store's reader)."""
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA busy_timeout = 5000")
        db.execute("CREATE TABLE filler (x BLOB)")
        db.execute("BEGIN")
        db.executemany("INSERT INTO filler VALUES (randomblob(4000))",
                       [()] * (mib * MIB // 4000))
        db.execute("COMMIT")
    finally:
        db.close()


async def _read_all(store: Any) -> None:
    ((total,),) = await store._fetch("SELECT sum(length(x)) FROM filler")
    assert total > 0


async def test_the_reader_cache_shows_in_the_figure_and_bounds_it(tmp_path: Path,
                                                                 engine: Any) -> None:
    small, large = tmp_path / "small.db", tmp_path / "large.db"
    async with engine(f"sqlite:///{small}", ManualClock(), cache_mb=1) as (store, _):
        opened = store.statistics()["sqlite_memory_bytes"]
        if opened < 0:
            pytest.skip("SQLite's memory statistics cannot be read in this interpreter")
        assert opened == sqlite_memory_bytes() > 0
        _fill(small, 24)
        await _read_all(store)
        bounded = store.statistics()["sqlite_memory_bytes"]
    async with engine(f"sqlite:///{large}", ManualClock(), cache_mb=64) as (store, _):
        _fill(large, 24)
        await _read_all(store)
        cached = store.statistics()["sqlite_memory_bytes"]
    # 24 MiB read through a 1 MiB cache leave about the cache; through a 64 MiB cache,
    # the table (the other connections hold a few hundred KiB of statements and schema).
    assert bounded - opened < 3 * MIB, bounded - opened
    assert cached > 20 * MIB, cached
