"""Stores: where the engine's effects become durable (see engine.runtime.store.Store).

`open_store(url)` picks the backend from the URL:
- `sqlite:///relative/path.db`, `sqlite:////absolute/path.db` — SQLite (the default);
- `postgresql://user@host:port/database` (or `postgres://`) — PostgreSQL;
- `memory://` — in-process only, lost on exit (tests).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from persistence.memory import MemoryStore

__all__ = ["MemoryStore", "open_store", "default_database_url", "resolve_database_url"]


def default_database_url() -> str:
    data_dir = Path(os.environ.get("CREDITD_DATA_DIR", "data"))
    return f"sqlite:///{data_dir / 'creditd.db'}"


def resolve_database_url(url: str | None = None) -> str:
    """`url`, else $CREDITD_DATABASE_URL, else the default SQLite file."""
    return url or os.environ.get("CREDITD_DATABASE_URL") or default_database_url()


def open_store(url: str | None = None, **options: Any) -> Any:
    """A store for `url`, to be entered with `async with` (it migrates on entry)."""
    url = resolve_database_url(url)
    if url.startswith("sqlite:///"):
        from persistence.sqlite import SQLiteStore

        return SQLiteStore(url[len("sqlite:///"):], **options)
    if url.startswith(("postgresql://", "postgres://")):
        from persistence.postgres import PostgresStore

        return PostgresStore(url, **options)
    if url.startswith("memory://"):
        return MemoryStore()
    raise ValueError(f"unsupported database URL {url!r}: use sqlite:///path, "
                     "postgresql://… or memory://")
