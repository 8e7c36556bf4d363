"""SQL text shared by both backends, written once with `?` placeholders; the PostgreSQL
backend numbers them (`$1`, `$2`, …) with `numbered()`."""

from __future__ import annotations

import re

__all__ = ["UPSERT_CUSTOMER", "UPSERT_GRANT", "UPSERT_RESERVATION", "UPSERT_POOL",
           "INSERT_LEDGER", "INSERT_KEY", "INSERT_OUTBOX", "SELECT_CUSTOMER", "SELECT_GRANTS",
           "SELECT_RESERVATIONS", "SELECT_POOLS", "SELECT_RECENT_KEYS", "COUNT_KEYS",
           "SELECT_KEYS_IN", "SELECT_LEDGER", "SELECT_OUTBOX_AFTER", "SELECT_DUE",
           "MAX_OUTBOX_ID", "numbered"]


def _upsert(table: str, columns: list[str], key: list[str]) -> str:
    marks = ", ".join("?" for _ in columns)
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c not in key)
    return (f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks}) "
            f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {updates}")


def _insert(table: str, columns: list[str]) -> str:
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})"


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
                "low_balance_units", "usage_low_percent"]
LEDGER_COLUMNS = ["customer_id", "seq", "op_seq", "event_type", "grant_id", "currency_id",
                  "resource_id", "amount", "ts", "reservation_id", "feature_id",
                  "idempotency_key", "dimensions"]
KEY_COLUMNS = ["customer_id", "key", "command", "reply", "created_at"]
OUTBOX_COLUMNS = ["id", "customer_id", "seq", "type", "payload", "created_at"]

UPSERT_CUSTOMER = _upsert("customers", CUSTOMER_COLUMNS, ["customer_id"])
UPSERT_GRANT = _upsert("grants", GRANT_COLUMNS, ["customer_id", "id"])
UPSERT_RESERVATION = _upsert("reservations", RESERVATION_COLUMNS, ["customer_id", "id"])
UPSERT_POOL = _upsert("pools", POOL_COLUMNS, ["customer_id", "currency_id", "resource_key"])
INSERT_LEDGER = _insert("ledger", LEDGER_COLUMNS)
INSERT_KEY = _insert("idempotency_keys", KEY_COLUMNS)
INSERT_OUTBOX = _insert("outbox", OUTBOX_COLUMNS)

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
MAX_OUTBOX_ID = "SELECT coalesce(max(id), 0) FROM outbox"

_MARK = re.compile(r"\?")


def numbered(sql: str) -> str:
    """`?` placeholders to PostgreSQL's `$n`."""
    counter = iter(range(1, 10_000))
    return _MARK.sub(lambda _m: f"${next(counter)}", sql)
