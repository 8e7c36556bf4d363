"""`creditd backup` and `creditd restore` for the SQLite store (docs/exports.md, "Backup
and restore"). PostgreSQL has its own tools (pg_dump -Fc, pg_restore); these refuse it.

Backup is `VACUUM INTO` a temporary file beside the destination, checked, then renamed:
- consistent: it reads the whole database inside one read transaction, one snapshot,
  while the server's writer keeps committing (WAL: readers and the writer do not block
  each other);
- it finishes under any write load. The online backup API copying in steps restarts from
  the first page whenever another process writes the source between two steps, so
  against a busy server it may never finish; copying in one step holds the same single
  read transaction as `VACUUM INTO`, which in addition writes a compact file (free pages
  dropped, indexes rebuilt) in rollback-journal mode: one self-contained file to keep;
- a crash leaves the previous backup in place, never a torn one (rename is atomic).

Restore copies a checked backup into the database through the online backup API, on a
connection that first takes the database's file lock exclusively (`locking_mode =
EXCLUSIVE`, `BEGIN EXCLUSIVE`): that fails while any other connection has the database
open — a running creditd always does — and, once held, keeps every other process out
until the copy is complete, so nothing can open a half-restored file.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from persistence.schema import LATEST_VERSION

__all__ = ["PG_ADVICE", "BackupError", "backup_sqlite", "restore_sqlite"]

PG_ADVICE = ("for PostgreSQL use pg_dump -Fc and pg_restore (docs/exports.md, \"Backup and "
             "restore\")")
_VACUUM_INTO = (3, 27, 0)


class BackupError(RuntimeError):
    """What an operator can act on; printed as one line."""


def _version(db: sqlite3.Connection, what: str) -> int:
    try:
        row = db.execute("SELECT max(version) FROM schema_version").fetchone()
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"{what} is not a creditd database ({exc})") from None
    version = int((row[0] if row else 0) or 0)
    if version > LATEST_VERSION:
        raise BackupError(f"{what} has schema version {version}, newer than this creditd "
                          f"understands ({LATEST_VERSION}): use a newer creditd")
    return version


def _integrity(db: sqlite3.Connection, what: str) -> None:
    problems = [r[0] for r in db.execute("PRAGMA integrity_check").fetchall()]
    if problems != ["ok"]:
        raise BackupError(f"{what} fails PRAGMA integrity_check: {'; '.join(problems[:3])}")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def backup_sqlite(db_path: Path, dest: Path, *, force: bool = False) -> int:
    """Copy the database at `db_path` to `dest`, consistently, while it may be in use;
    the schema version copied."""
    if sqlite3.sqlite_version_info < _VACUUM_INTO:
        raise BackupError(f"SQLite {sqlite3.sqlite_version} has no VACUUM INTO (3.27+)")
    if not db_path.is_file():
        raise BackupError(f"no database at {db_path}")
    if dest.exists() and dest.resolve() == db_path.resolve():
        raise BackupError("the backup cannot be the database itself")
    if dest.exists() and not force:
        raise BackupError(f"{dest} exists: use --force to replace it")
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(f".{dest.name}.partial-{os.getpid()}")
    partial.unlink(missing_ok=True)
    try:
        src = sqlite3.connect(f"file:{db_path}?mode=rw", uri=True, isolation_level=None,
                              timeout=5)
        try:
            _version(src, str(db_path))
            src.execute("VACUUM INTO ?", (str(partial),))
        finally:
            src.close()
        copy = sqlite3.connect(partial, isolation_level=None)
        try:
            _integrity(copy, "the copy")
            version = _version(copy, "the copy")
        finally:
            copy.close()
        _fsync(partial)
        os.replace(partial, dest)
        _fsync(dest.parent)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return version


def restore_sqlite(backup: Path, db_path: Path, *, force: bool = False) -> int:
    """Replace the database at `db_path` with `backup`: refused while the database is in
    use, and, unless `force`, when it exists. The schema version restored (an older one
    is migrated when the server starts)."""
    if not backup.is_file():
        raise BackupError(f"no backup at {backup}")
    if db_path.exists() and backup.resolve() == db_path.resolve():
        raise BackupError("the backup is the database itself")
    src = sqlite3.connect(f"file:{backup}?mode=ro", uri=True, isolation_level=None)
    try:
        try:
            _integrity(src, str(backup))
        except sqlite3.DatabaseError as exc:
            raise BackupError(f"{backup} is not a SQLite database ({exc})") from None
        version = _version(src, str(backup))
        if version == 0:
            raise BackupError(f"{backup} holds no creditd schema")
        if db_path.exists() and not force:
            raise BackupError(f"{db_path} exists: use --force to replace it (stop the "
                              "server first)")
        db_path.parent.mkdir(parents=True, exist_ok=True)
        target = sqlite3.connect(db_path, isolation_level=None, timeout=1)
        try:
            target.execute("PRAGMA locking_mode = EXCLUSIVE")
            try:
                target.execute("BEGIN EXCLUSIVE")
            except sqlite3.OperationalError as exc:
                raise BackupError(f"{db_path} is in use ({exc}): stop the creditd serving "
                                  "it first") from None
            # Committed, the lock stays: exclusive locking mode keeps it until close.
            target.execute("COMMIT")
            src.backup(target)
            _integrity(target, "the restored database")
            if _version(target, "the restored database") != version:
                raise BackupError("the restored database does not hold the backup")
        finally:
            target.close()
    finally:
        src.close()
    return version
