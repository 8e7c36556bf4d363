"""SQL text shared by both backends, written once with `?` placeholders; the PostgreSQL
backend numbers them (`$1`, `$2`, …) with `numbered()`."""

from __future__ import annotations

import re
from typing import NamedTuple

__all__ = ["SELECT_CUSTOMER", "SELECT_GRANTS",
           "SELECT_RESERVATIONS", "SELECT_POOLS", "SELECT_RECENT_KEYS", "COUNT_KEYS",
           "SELECT_KEYS_IN", "SELECT_LEDGER", "SELECT_OUTBOX_AFTER", "SELECT_DUE",
           "MAX_OUTBOX_ID", "SELECT_CUSTOMER_OUTBOX", "SELECT_PENDING_RECHARGES", "numbered", "Write", "WRITES", "conflict_clause",
           "insert_statement", "PURGES", "purge_statements", "SELECT_USAGE", "SELECT_UNIQUES", "SELECT_EVENT_KEYS_IN"]


CUSTOMER_COLUMNS = ["customer_id", "ledger_seq", "event_seq", "op_seq", "grant_seq",
                    "next_due_at"]
GRANT_COLUMNS = ["customer_id", "id", "seq", "currency_id", "resource_id", "grant_type",
                 "status", "priority", "effective_at", "expire_at", "created_at", "updated_at",
                 "voided_at", "amount", "available", "held", "consumed", "expired", "voided",
                 "activated", "cost_amount", "cost_currency", "display_name", "comment",
                 "metadata"]
RESERVATION_COLUMNS = ["customer_id", "id", "currency_id", "resource_id", "amount", "holds",
                       "status", "created_at", "expires_at", "released_at", "consumed_amount",
                       "metadata"]
POOL_COLUMNS = ["customer_id", "currency_id", "resource_key", "resource_id", "hard_limit",
                "low_balance_units", "usage_low_percent", "recharge", "recharge_pending"]
LEDGER_COLUMNS = ["customer_id", "seq", "op_seq", "event_type", "grant_id", "currency_id",
                  "resource_id", "amount", "ts", "reservation_id", "feature_id",
                  "idempotency_key", "dimensions"]
KEY_COLUMNS = ["customer_id", "key", "command", "reply", "created_at"]
OUTBOX_COLUMNS = ["id", "customer_id", "seq", "type", "payload", "created_at"]
# Metering (engine.core.usage). Keys that may be absent are '' in `*_key` columns, since
# primary-key columns cannot be NULL.
USAGE_COLUMNS = ["customer_id", "feature_id", "resource_key", "resource_id", "function",
                 "value", "total", "count", "updated_at", "period_start"]
UNIQUE_COLUMNS = ["customer_id", "feature_id", "resource_key", "value"]
BUCKET_COLUMNS = ["customer_id", "hour", "feature_key", "resource_key", "currency_key",
                  "dims", "feature_id", "resource_id", "currency_id", "usage", "credits",
                  "events"]
DIMENSION_KEY_COLUMNS = ["customer_id", "key"]
EVENT_COLUMNS = ["customer_id", "key", "event_name", "ts", "resource_id", "dimensions",
                 "created_at"]


class Write(NamedTuple):
    """How one table takes a flush's rows (both backends build their statements from
    this): `unit` names the Unit attribute holding the rows; on a conflict with `key`,
    `replace` overwrites the row, `add` adds the `added` columns to it, `ignore` keeps the
    existing row, and no key means a plain insert (append-only tables)."""

    table: str
    unit: str
    columns: list[str]
    pg_types: list[str]
    key: list[str] | None = None
    mode: str = "insert"
    added: tuple[str, ...] = ()


_T, _B, _I, _Y, _L = "text", "bigint", "integer", "bytea", "boolean"
WRITES = [
    Write("customers", "customers", CUSTOMER_COLUMNS, [_T, _B, _B, _B, _B, _B],
          ["customer_id"], "replace"),
    Write("grants", "grants", GRANT_COLUMNS,
          [_T, _T, _B, _T, _T, _T, _T, _I, _B, _B, _B, _B, _B, _B, _B, _B, _B, _B, _B, _L,
           _B, _T, _T, _T, _T], ["customer_id", "id"], "replace"),
    Write("reservations", "reservations", RESERVATION_COLUMNS,
          [_T, _T, _T, _T, _B, _T, _T, _B, _B, _B, _B, _T], ["customer_id", "id"], "replace"),
    Write("pools", "pools", POOL_COLUMNS, [_T, _T, _T, _T, _L, _B, _I, _Y, _T],
          ["customer_id", "currency_id", "resource_key"], "replace"),
    Write("ledger", "ledger", LEDGER_COLUMNS,
          [_T, _B, _B, _T, _T, _T, _T, _B, _B, _T, _T, _T, _T]),
    Write("idempotency_keys", "keys", KEY_COLUMNS, [_T, _T, _Y, _Y, _B]),
    Write("outbox", "outbox", OUTBOX_COLUMNS, [_B, _T, _B, _T, _Y, _B]),
    Write("usage_counters", "usage", USAGE_COLUMNS, [_T, _T, _T, _T, _T, _B, _B, _B, _B, _B],
          ["customer_id", "feature_id", "resource_key"], "replace"),
    Write("usage_unique_values", "uniques", UNIQUE_COLUMNS, [_T, _T, _T, _T],
          ["customer_id", "feature_id", "resource_key", "value"], "ignore"),
    Write("usage_buckets", "buckets", BUCKET_COLUMNS,
          [_B if c in ("hour", "usage", "credits", "events") else _T for c in BUCKET_COLUMNS],
          ["customer_id", "hour", "feature_key", "resource_key", "currency_key", "dims"],
          "add", ("usage", "credits", "events")),
    Write("usage_dimension_keys", "dimension_keys", DIMENSION_KEY_COLUMNS, [_T, _T],
          ["customer_id", "key"], "ignore"),
    Write("events", "raw_events", EVENT_COLUMNS, [_T, _T, _T, _B, _T, _T, _B],
          ["customer_id", "key"], "ignore"),
]


# What the bounded purge job deletes: rows older than the retention (`created_at < ?`
# style conditions take the cut-off), at most a limit per table per step. The outbox keeps
# what a durable tailer (the webhook relay, table webhook_relay) has not read yet, however
# old: it is their source of truth. It also keeps its newest row, whose id is where the
# writer continues after a restart (MAX_OUTBOX_ID): ids must never be handed out twice.
PURGES = [
    ("idempotency_keys", "created_at < ?"),
    ("reservations", "released_at IS NOT NULL AND released_at < ?"),
    ("events", "created_at < ?"),
    ("outbox", "created_at < ? AND id <= (SELECT coalesce(min(outbox_cursor), 0) "
               "FROM webhook_relay) AND id < (SELECT max(id) FROM outbox)"),
]


def purge_statements(row_id: str) -> list[str]:
    """The PURGES as deletes of at most `?` rows each, by the dialect's row id column
    (`rowid` in SQLite, `ctid` in PostgreSQL); each takes (cut-off, limit)."""
    return [f"DELETE FROM {t} WHERE {row_id} IN (SELECT {row_id} FROM {t} WHERE {cond} "
            "LIMIT ?)" for t, cond in PURGES]


def conflict_clause(w: Write) -> str:
    """The ON CONFLICT clause of `w` (empty for plain inserts); `excluded` is the row that
    was to be inserted, in both SQLite and PostgreSQL."""
    if w.key is None:
        return ""
    target = f" ON CONFLICT ({', '.join(w.key)})"
    if w.mode == "ignore":
        return target + " DO NOTHING"
    if w.mode == "add":
        sets = ", ".join(f"{c} = {w.table}.{c} + excluded.{c}" for c in w.added)
    else:
        sets = ", ".join(f"{c} = excluded.{c}" for c in w.columns if c not in w.key)
    return f"{target} DO UPDATE SET {sets}"


def insert_statement(w: Write) -> str:
    marks = ", ".join("?" for _ in w.columns)
    return f"INSERT INTO {w.table} ({', '.join(w.columns)}) VALUES ({marks}){conflict_clause(w)}"

SELECT_CUSTOMER = f"SELECT {', '.join(CUSTOMER_COLUMNS)} FROM customers WHERE customer_id = ?"
SELECT_GRANTS = f"SELECT {', '.join(GRANT_COLUMNS)} FROM grants WHERE customer_id = ?"
SELECT_RESERVATIONS = (f"SELECT {', '.join(RESERVATION_COLUMNS)} FROM reservations "
                       "WHERE customer_id = ?")
SELECT_POOLS = f"SELECT {', '.join(POOL_COLUMNS)} FROM pools WHERE customer_id = ?"
SELECT_RECENT_KEYS = (f"SELECT {', '.join(KEY_COLUMNS)} FROM idempotency_keys "
                      "WHERE customer_id = ? ORDER BY created_at DESC LIMIT ?")
COUNT_KEYS = "SELECT count(*) FROM idempotency_keys WHERE customer_id = ?"
SELECT_KEYS_IN = (f"SELECT {', '.join(KEY_COLUMNS)} FROM idempotency_keys "
                  "WHERE customer_id = ? AND key IN ({marks})")
SELECT_LEDGER = (f"SELECT {', '.join(LEDGER_COLUMNS)} FROM ledger WHERE customer_id = ? "
                 "AND seq > ? ORDER BY seq LIMIT ?")
SELECT_OUTBOX_AFTER = (f"SELECT {', '.join(OUTBOX_COLUMNS)} FROM outbox WHERE id > ? "
                       "ORDER BY id LIMIT ?")
SELECT_DUE = ("SELECT customer_id, next_due_at FROM customers WHERE next_due_at IS NOT NULL "
              "AND next_due_at <= ? ORDER BY next_due_at LIMIT ?")
# Customers with an auto-recharge in flight (engine.runtime.recharge resumes them).
SELECT_PENDING_RECHARGES = ("SELECT DISTINCT customer_id FROM pools "
                            "WHERE recharge_pending IS NOT NULL")
SELECT_CUSTOMER_OUTBOX = ("SELECT seq, payload FROM outbox WHERE customer_id = ? AND seq > ? "
                          "ORDER BY seq LIMIT ?")
MAX_OUTBOX_ID = "SELECT coalesce(max(id), 0) FROM outbox"
SELECT_USAGE = f"SELECT {', '.join(USAGE_COLUMNS)} FROM usage_counters WHERE customer_id = ?"
SELECT_UNIQUES = ("SELECT feature_id, resource_key, value FROM usage_unique_values "
                  "WHERE customer_id = ?")
SELECT_EVENT_KEYS_IN = "SELECT key, ts FROM events WHERE customer_id = ? AND key IN ({marks})"

_MARK = re.compile(r"\?")


def numbered(sql: str) -> str:
    """`?` placeholders to PostgreSQL's `$n`."""
    counter = iter(range(1, 10_000))
    return _MARK.sub(lambda _m: f"${next(counter)}", sql)
