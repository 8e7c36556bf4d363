"""`creditd export`: the credits tables as files for a warehouse (docs/exports.md).

| file | rows | each run |
|---|---|---|
| `grants` | every grant, its current amounts and status | a full snapshot (grants change after creation: replace or upsert on (environment, customer_id, grant_id)) |
| `ledger` | every ledger entry | the entries added since the cursor |
| `consumptions` | ledger entries of kind CREDITS_CONSUMED | as `ledger` |
| `expirations` | ledger entries of kind CREDITS_EXPIRED | as `ledger` |
| `usage_events` | raw events as accepted (`POST /events`), kept 7 days for deduplication | accepted since the cursor (docs/exports.md: the settle margin) |
| `usage_buckets` | hourly usage and credit totals per feature, resource, currency and dimensions | a full snapshot (late events add to old hours) |

Everything is read inside one snapshot (persistence/export_source.py) in pages of at most
`PAGE_ROWS` rows, written as it is read: memory stays bounded however large the database
(but for the cursor, a few bytes per customer; persistence/export_cursor.py says why).
Files are written under temporary names and renamed once the whole export succeeded.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from persistence import sql
from persistence.export_cursor import (
    EVENTS_SETTLE_MS,
    Cursor,
    CursorError,
    decode_cursor,
    encode_cursor,
)
from persistence.export_files import FORMATS, open_file, require_parquet
from persistence.export_source import ExportError, Snapshot, open_snapshot

__all__ = ["TABLES", "ExportError", "ExportResult", "export", "split_customer"]

TABLES = ("grants", "ledger", "consumptions", "expirations", "usage_events", "usage_buckets")
_LEDGER_TABLES = ("ledger", "consumptions", "expirations")
PAGE_ROWS = 5_000
CUSTOMERS_PAGE = 1_000
PROGRESS_EVERY_ROWS = 100_000
# Raw events are purged this long after they were accepted (persistence/sql.py, PURGES).
EVENTS_KEPT_MS = 7 * 24 * 3_600_000
_KIND_NAMES = {code: name for name, code in sql.LEDGER_KINDS.items()}
_CONSUMED = sql.LEDGER_KINDS["CREDITS_CONSUMED"]
_EXPIRED = sql.LEDGER_KINDS["CREDITS_EXPIRED"]
MANIFEST = "export.json"


class ExportResult:
    def __init__(self, cursor: str, rows: dict[str, int], files: dict[str, Path]) -> None:
        self.cursor, self.rows, self.files = cursor, rows, files


def split_customer(engine_id: str) -> tuple[str | None, str]:
    """`environment/customer` (the engine's id) into its two parts."""
    env, sep, customer = engine_id.partition("/")
    return (env, customer) if sep else (None, engine_id)


def _env_filter(environment: str | None, column: str = "customer_id") -> tuple[str, list[Any]]:
    if environment is None:
        return "", []
    escaped = environment.replace("\\", "\\\\").replace("%", r"\%").replace("_", r"\_")
    return f" AND {column} LIKE ? ESCAPE '\\'", [escaped + "/%"]


class _Progress:
    """Rows per table on stderr (through `say`), every PROGRESS_EVERY_ROWS and at the end."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self.say = say
        self.rows: dict[str, int] = {}

    def add(self, table: str, n: int) -> None:
        before = self.rows.get(table, 0)
        self.rows[table] = before + n
        if (before + n) // PROGRESS_EVERY_ROWS > before // PROGRESS_EVERY_ROWS:
            self.say(f"export: {table}: {before + n} rows so far")


def _check_request(fmt: str, tables: Sequence[str], since: str | None,
                   environment: str | None) -> Cursor | None:
    if fmt not in FORMATS:
        raise ExportError(f"--format: {fmt!r} is not csv or parquet")
    unknown = [t for t in tables if t not in TABLES]
    if unknown or not tables:
        raise ExportError(f"--tables: {unknown[0] if unknown else 'none'!r} is not one of "
                          f"{', '.join(TABLES)}")
    if fmt == "parquet":
        require_parquet()  # before reading anything
    if since is None:
        return None
    try:
        cursor = decode_cursor(since)
    except CursorError as exc:
        raise ExportError(f"--since {exc}") from None
    if cursor.environment != environment:
        raise ExportError(f"--since was printed by an export of environment "
                          f"{cursor.environment or '(all)'}: use the same --environment")
    if set(cursor.tables) != set(tables):
        raise ExportError(f"--since was printed by an export of {','.join(cursor.tables)}: "
                          "use the same --tables (each table continues where it stopped)")
    return cursor


async def export(url: str, out_dir: Path, *, fmt: str = "csv",
                 tables: Sequence[str] = TABLES, since: str | None = None,
                 environment: str | None = None, now_ms: int,
                 say: Callable[[str], None] = lambda _line: None) -> ExportResult:
    """Export `tables` of the database at `url` into `out_dir`; the result holds the
    cursor to pass as `since` next time. `now_ms` is the export's clock (raw events are
    cut by it)."""
    cursor = _check_request(fmt, tables, since, environment)
    tables = [t for t in TABLES if t in tables]  # a fixed order, each once
    out_dir.mkdir(parents=True, exist_ok=True)
    targets = [out_dir / f"{t}.{fmt}" for t in tables] + [out_dir / MANIFEST]
    existing = [p for p in targets if p.exists()]
    if existing:
        raise ExportError(f"{existing[0]} exists: export into a new directory")
    progress = _Progress(say)
    files = {t: open_file(fmt, t, out_dir) for t in tables}
    try:
        async with open_snapshot(url) as snap:
            if any(t in files for t in _LEDGER_TABLES):
                deltas, seqs = await _ledger(snap, files, cursor, environment, progress)
            else:
                deltas, seqs = [], []
            events_before = None
            if "usage_events" in files:
                events_before = await _events(snap, files["usage_events"], cursor,
                                              environment, now_ms, progress)
            if "grants" in files:
                await _grants(snap, files["grants"], environment, progress)
            if "usage_buckets" in files:
                await _buckets(snap, files["usage_buckets"], environment, progress)
        for f in files.values():
            f.finish()
    except BaseException:
        for f in files.values():
            f.abort()
        raise
    text = encode_cursor(Cursor(environment, tuple(tables), now_ms, events_before,
                                deltas, seqs))
    rows = {t: progress.rows.get(t, 0) for t in tables}
    for t in tables:
        say(f"export: {t}: {rows[t]} rows")
    _manifest(out_dir, fmt, environment, now_ms, since, text, rows,
              {t: f.path for t, f in files.items()})
    return ExportResult(text, rows, {t: f.path for t, f in files.items()})


def _manifest(out_dir: Path, fmt: str, environment: str | None, now_ms: int,
              since: str | None, cursor: str, rows: dict[str, int],
              paths: dict[str, Path]) -> None:
    doc = {"format": fmt, "environment": environment, "exportedAtMs": now_ms,
           "since": since, "cursor": cursor,
           "tables": {t: {"file": paths[t].name, "rows": n,
                          "mode": "snapshot" if t in ("grants", "usage_buckets")
                          else "incremental"} for t, n in rows.items()}}
    partial = out_dir / f".{MANIFEST}.partial"
    partial.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    os.replace(partial, out_dir / MANIFEST)


def _previous_marks(cursor: Cursor | None) -> Iterator[tuple[int, int]]:
    num = 0
    if cursor is not None:
        for delta, seq in zip(cursor.num_deltas, cursor.seqs, strict=True):
            num += delta
            yield num, seq
    yield 1 << 62, 0  # past every customer: the merge below never runs dry


_LEDGER_ROWS = ("SELECT l.seq, l.op_seq, l.kind, g.id, g.currency_id, g.resource_id, "
                "l.amount, l.ts, l.reservation_id, l.feature_id, l.dimensions FROM ledger l "
                "JOIN grants g ON g.customer_id = ? AND g.seq = l.grant_seq "
                "WHERE l.customer = ? AND l.seq > ? AND l.seq <= ? ORDER BY l.seq LIMIT ?")


async def _ledger(snap: Snapshot, files: dict[str, Any], cursor: Cursor | None,
                  environment: str | None, progress: _Progress,
                  ) -> tuple[list[int], list[int]]:
    """The ledger entries of every customer past its mark in `cursor`, into the ledger
    files; the new marks (the cursor's lists). Customers are read in number order, and
    each one's new entries by its primary key range (mark, ledger_seq]: customers with
    nothing new cost one row of the customers table."""
    env_sql, env_params = _env_filter(environment)
    previous = _previous_marks(cursor)
    prev_num, prev_seq = next(previous)
    deltas: list[int] = []
    seqs: list[int] = []
    last_num = 0
    after = -(1 << 62)
    ledger, consumed, expired = (files.get(t) for t in _LEDGER_TABLES)
    while True:
        customers = await snap.fetch(
            f"SELECT num, customer_id, ledger_seq FROM customers WHERE num > ?{env_sql} "
            "ORDER BY num LIMIT ?", after, *env_params, CUSTOMERS_PAGE)
        if not customers:
            break
        after = customers[-1][0]
        for num, cid, seq in customers:
            while prev_num < num:
                prev_num, prev_seq = next(previous)
            mark = prev_seq if prev_num == num else 0
            if mark > seq:
                # The database is behind the cursor: a restored backup. Its entries past
                # `seq` are new ones with reused numbers; a full export starts afresh.
                progress.say(f"export: warning: {cid}'s ledger ends at {seq}, before the "
                             f"cursor's {mark} (a restored backup?): run a full export")
                mark = seq
            if seq > 0:
                deltas.append(num - last_num)
                seqs.append(seq)
                last_num = num
            env, customer = split_customer(cid)
            while mark < seq:
                rows = await snap.fetch(_LEDGER_ROWS, cid, num, mark, seq, PAGE_ROWS)
                assert rows, (cid, mark, seq)  # the ledger is gapless up to ledger_seq
                mark = rows[-1][0]
                _route(env, customer, rows, ledger, consumed, expired, progress)
    return deltas, seqs


def _route(env: str | None, customer: str, rows: Sequence[Sequence[Any]], ledger: Any,
           consumed: Any, expired: Any, progress: _Progress) -> None:
    if ledger is not None:
        out = [(env, customer, r[0], r[1], _KIND_NAMES[r[2]], *r[3:]) for r in rows]
        ledger.write(out)
        progress.add("ledger", len(out))
    if consumed is not None:
        out = [(env, customer, r[0], r[1], *r[3:]) for r in rows if r[2] == _CONSUMED]
        consumed.write(out)
        progress.add("consumptions", len(out))
    if expired is not None:
        out = [(env, customer, *r[0:2], *r[3:8]) for r in rows if r[2] == _EXPIRED]
        expired.write(out)
        progress.add("expirations", len(out))


async def _events(snap: Snapshot, out: Any, cursor: Cursor | None, environment: str | None,
                  now_ms: int, progress: _Progress) -> int:
    """Raw events accepted in [the cursor's cut, now - settle margin), into `out`; the new
    cut."""
    start = cursor.events_before_ms if cursor is not None else None
    end = now_ms - EVENTS_SETTLE_MS
    if start is not None and start >= end:
        return start  # a run within the margin of the last one: nothing is settled yet
    if start is not None and start < now_ms - EVENTS_KEPT_MS:
        progress.say("export: warning: the cursor is older than the raw events' retention "
                     "(7 days): events accepted more than 7 days ago may have been purged")
    env_sql, env_params = _env_filter(environment)
    key: tuple[Any, ...] = (-(1 << 62) if start is None else start, "", "")
    while True:
        rows = await snap.fetch(
            "SELECT customer_id, key, event_name, ts, resource_id, dimensions, created_at "
            f"FROM events WHERE created_at < ? AND (created_at, customer_id, key) > (?, ?, ?)"
            f"{env_sql} ORDER BY created_at, customer_id, key LIMIT ?",
            end, *key, *env_params, PAGE_ROWS)
        if not rows:
            return end
        key = (rows[-1][6], rows[-1][0], rows[-1][1])
        out.write([(*split_customer(r[0]), *r[1:]) for r in rows])
        progress.add("usage_events", len(rows))


async def _grants(snap: Snapshot, out: Any, environment: str | None,
                  progress: _Progress) -> None:
    env_sql, env_params = _env_filter(environment)
    key: tuple[str, str] = ("", "")
    while True:
        rows = await snap.fetch(
            f"SELECT {', '.join(sql.GRANT_COLUMNS)} FROM grants "
            f"WHERE (customer_id, id) > (?, ?){env_sql} ORDER BY customer_id, id LIMIT ?",
            *key, *env_params, PAGE_ROWS)
        if not rows:
            return
        key = (rows[-1][0], rows[-1][1])
        out.write([(*split_customer(r[0]), *r[1:]) for r in rows])
        progress.add("grants", len(rows))


_BUCKET_KEY = "customer_id, hour, feature_key, resource_key, currency_key, dims"


async def _buckets(snap: Snapshot, out: Any, environment: str | None,
                   progress: _Progress) -> None:
    env_sql, env_params = _env_filter(environment)
    key: tuple[Any, ...] = ("", -(1 << 62), "", "", "", "")
    while True:
        rows = await snap.fetch(
            f"SELECT {_BUCKET_KEY}, feature_id, resource_id, currency_id, usage, credits, "
            f"events FROM usage_buckets WHERE ({_BUCKET_KEY}) > (?, ?, ?, ?, ?, ?){env_sql} "
            f"ORDER BY {_BUCKET_KEY} LIMIT ?", *key, *env_params, PAGE_ROWS)
        if not rows:
            return
        key = tuple(rows[-1][:6])
        out.write([(*split_customer(r[0]), r[1], r[6], r[7], r[8], r[5] or None, *r[9:12])
                   for r in rows])
        progress.add("usage_buckets", len(rows))
