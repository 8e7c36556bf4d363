"""SQL text shared by both backends, written once with `?` placeholders; the PostgreSQL
backend numbers them (`$1`, `$2`, …) with `numbered()`."""

from __future__ import annotations

import functools
import re
from typing import NamedTuple

__all__ = ["SELECT_CUSTOMER", "MAX_CUSTOMER_NUM", "SELECT_GRANTS",
           "SELECT_RESERVATIONS", "SELECT_POOLS", "KEY_GENERATION_MS", "KEY_TABLES",
           "SELECT_KEY_GENERATIONS", "LEDGER_KINDS", "select_ledger_page", "select_ledger_count",
           "select_keys_of_pg", "select_keys_of", "KEY_RUN_ROWS", "KEY_RUN_DOUBLING",
           "KEY_TABLES_PER_QUERY", "KEY_FILTER_TABLES", "save_key_filter", "key_table", "key_run_rows", "key_table_statements", "writes_into", "KEY_UNITS", "SELECT_LEDGER", "SELECT_OUTBOX_AFTER", "SELECT_DUE",
           "MAX_OUTBOX_ID", "SELECT_CUSTOMER_OUTBOX", "SELECT_PENDING_RECHARGES", "numbered", "Write", "WRITES", "conflict_clause",
           "insert_statement", "PURGES", "purge_statements", "SELECT_USAGE", "SELECT_UNIQUES", "SELECT_EVENT_KEYS_IN"]


# `num` is the customer's number: the high-volume tables (ledger, idempotency keys) carry
# it instead of the id. `key_period` is the latest key generation period (KEY_GENERATION_MS)
# the customer remembered a key in, NULL if never: once both key tables have moved past
# it, the customer has no keys left to look up.
CUSTOMER_COLUMNS = ["customer_id", "ledger_seq", "event_seq", "op_seq", "grant_seq",
                    "next_due_at", "num", "key_period"]
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
# A ledger row names its customer by number, its grant by the grant's sequence number (the
# grant's id, currency and resource are in `grants`) and its event type by a small code
# (LEDGER_KINDS): the ledger is the table that grows with every operation.
LEDGER_COLUMNS = ["customer", "seq", "op_seq", "amount", "ts", "grant_seq", "kind",
                  "reservation_id", "feature_id", "dimensions"]
# Remembered idempotency keys: `request` is the request's digest, `reply` the reply
# (engine.core.idempotency.encode_reply), `op_seq` the ledger operation the request made.
KEY_COLUMNS = ["customer", "key", "created_at", "op_seq", "request", "reply"]
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


# Ledger event types as stored (`ledger.kind`). Codes are forever: add, never renumber.
LEDGER_KINDS: dict[str, int] = {
    "CREDITS_GRANTED": 1, "CREDITS_CONSUMED": 2, "CREDITS_EXPIRED": 3, "CREDITS_VOIDED": 4,
    "CREDITS_UPDATED": 5, "CREDITS_CONSUMPTION_TRANSFER_SOURCE": 6,
    "CREDITS_CONSUMPTION_TRANSFER_TARGET": 7, "CREDITS_RESERVED": 8,
    "CREDITS_RESERVATION_RELEASED": 9, "CREDITS_RESERVATION_EXPIRED": 10,
}


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


KEY_UNITS = ("keys_0", "keys_1")  # the WRITES units of the two key generations
_T, _B, _I, _Y, _L, _S = "text", "bigint", "integer", "bytea", "boolean", "smallint"
WRITES = [
    Write("customers", "customers", CUSTOMER_COLUMNS, [_T, _B, _B, _B, _B, _B, _B, _B],
          ["customer_id"], "replace"),
    Write("grants", "grants", GRANT_COLUMNS,
          [_T, _T, _B, _T, _T, _T, _T, _I, _B, _B, _B, _B, _B, _B, _B, _B, _B, _B, _B, _L,
           _B, _T, _T, _T, _T], ["customer_id", "id"], "replace"),
    Write("reservations", "reservations", RESERVATION_COLUMNS,
          [_T, _T, _T, _T, _B, _T, _T, _B, _B, _B, _B, _T], ["customer_id", "id"], "replace"),
    Write("pools", "pools", POOL_COLUMNS, [_T, _T, _T, _T, _L, _B, _I, _Y, _T],
          ["customer_id", "currency_id", "resource_key"], "replace"),
    Write("ledger", "ledger", LEDGER_COLUMNS, [_B, _B, _B, _B, _B, _I, _S, _T, _T, _T]),
    # Keys go to the run being written of their generation (see KEY_GENERATION_MS,
    # `writes_into`); the writer splits a flush's key rows between the two.
    Write("idempotency_keys_0", "keys_0", KEY_COLUMNS, [_B, _T, _B, _B, _Y, _Y]),
    Write("idempotency_keys_1", "keys_1", KEY_COLUMNS, [_B, _T, _B, _B, _Y, _Y]),
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
# Idempotency keys are not here: they are dropped a whole generation at a time.
PURGES = [
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
MAX_CUSTOMER_NUM = "SELECT coalesce(max(num), 0) FROM customers"
SELECT_GRANTS = f"SELECT {', '.join(GRANT_COLUMNS)} FROM grants WHERE customer_id = ?"
SELECT_RESERVATIONS = (f"SELECT {', '.join(RESERVATION_COLUMNS)} FROM reservations "
                       "WHERE customer_id = ?")
SELECT_POOLS = f"SELECT {', '.join(POOL_COLUMNS)} FROM pools WHERE customer_id = ?"

# Idempotency keys live in two generations: a key is written to the generation of its
# period (created_at // KEY_GENERATION_MS, even or odd), and before the writer puts a key
# of period p into a generation that holds period p - 2 or older, it empties that
# generation (and records p in `key_generations`). So a key is kept at least one period,
# 7 days, and less than two; old keys go with a TRUNCATE (PostgreSQL) or a whole-table
# DELETE (SQLite) instead of an index on their age and row-by-row deletes.
KEY_GENERATION_MS = 7 * 24 * 3_600_000
# A generation is a series of tables, its runs, written one after the other: the run being
# written is kept small enough for its index to stay in memory, since keys are random and
# each insert lands on any leaf of it. One table per generation, the first design, grew a
# week's keys into one B-tree (SQLite) or hash index (PostgreSQL) that outgrew the page
# cache within minutes at a few thousand keys a second, and every flush slowed with it
# (docs/benchmarks.md, "Soak"). A full run is never written again; lookups, which the key
# filter makes rare, probe every run. Run r holds up to KEY_RUN_ROWS << (r //
# KEY_RUN_DOUBLING) keys, so a week of any rate needs a few dozen runs, not thousands. Run
# tables are created as needed and kept (emptied with their generation), so the list only
# grows; `key_generations` records how many a generation has and which one is written.
KEY_RUN_ROWS = 1 << 18
KEY_RUN_DOUBLING = 16
KEY_TABLES = ("idempotency_keys_0", "idempotency_keys_1")  # the first run of each generation
SELECT_KEY_GENERATIONS = "SELECT generation, period, runs, run FROM key_generations"
# Each generation's saved key filter bits (persistence/key_filter.py), a row in a table of
# its own (persistence/schema.py, v12).
KEY_FILTER_TABLES = ("key_filter_0", "key_filter_1")


def save_key_filter(dialect: str, generation: int) -> tuple[str, str]:
    """The statements that empty a generation's saved bits (no parameters) and add a part
    (part, period, runs, scheme, bits)."""
    table = KEY_FILTER_TABLES[generation]
    empty = f"DELETE FROM {table}" if dialect == "sqlite" else f"TRUNCATE {table}"
    return empty, (f"INSERT INTO {table} (part, period, runs, scheme, bits) "
                   "VALUES (?, ?, ?, ?, ?)")


def key_table(generation: int, run: int) -> str:
    """The table of a generation's run."""
    return KEY_TABLES[generation] if run == 0 else f"{KEY_TABLES[generation]}_{run}"


def key_run_rows(run: int) -> int:
    """How many keys the writer puts into a run before it starts the next one."""
    return KEY_RUN_ROWS << (run // KEY_RUN_DOUBLING)


def key_table_statements(dialect: str, table: str) -> list[str]:
    """A key table (a run) and its index."""
    sqlite = dialect == "sqlite"
    blob, clustered = ("BLOB", " WITHOUT ROWID") if sqlite else ("BYTEA", "")
    return [
        f"""CREATE TABLE {table} (
        customer BIGINT NOT NULL,
        created_at BIGINT NOT NULL,
        op_seq BIGINT,
        key TEXT NOT NULL,
        request {blob} NOT NULL,
        reply {blob} NOT NULL{", PRIMARY KEY (customer, key)" if sqlite else ""}
    ){clustered}""",
        # PostgreSQL: a hash index holds a 4-byte hash per row where a B-tree on
        # (customer, key) holds the key itself, for a third of the space; lookups
        # recheck the customer. The writer alone decides what is a new key. Its pages
        # are filled (the table only grows, then is emptied whole).
        *([] if sqlite else
          [f"CREATE INDEX {table}_key ON {table} USING hash (key) WITH (fillfactor = 100)"]),
    ]


# Keys looked up for several customers at once (the store groups the lookups that are
# waiting, as it groups commits): (customer id, key) pairs joined to every run of both
# generations through the customers' numbers. Rows are KEY_COLUMNS but the first, which is
# the customer's id. SQLite takes the pairs as a VALUES list of `pairs` rows (a power of
# two, padded: a few statement texts to prepare), joined to the tables (`select_keys_of`);
# PostgreSQL probes per pair (`select_keys_of_pg`).
_KEYS_SELECT = ("SELECT q.cid, k.key, k.created_at, k.op_seq, k.request, k.reply FROM q "
                "JOIN customers c ON c.customer_id = q.cid "
                "JOIN {table} k ON k.customer = c.num AND k.key = q.key")
# SQLite allows 500 terms in a compound SELECT: lookups over more runs take several queries.
KEY_TABLES_PER_QUERY = 200


@functools.lru_cache(maxsize=64)
def select_keys_of(pairs: int, tables: tuple[str, ...] = KEY_TABLES) -> str:
    """The SQLite lookup of `pairs` (customer id, key) pairs, two parameters each, in
    `tables` (at most KEY_TABLES_PER_QUERY)."""
    return ("WITH q (cid, key) AS (VALUES " + ", ".join("(?, ?)" for _ in range(pairs))
            + ") " + " UNION ALL ".join(_KEYS_SELECT.replace("{table}", t) for t in tables))


# PostgreSQL runs a prepared statement on a generic plan after five executions, planned
# for an array of unknown length and a key of unknown value. With the pairs as a CTE
# joined to the tables, that plan was a hash join over a sequential scan of the key table:
# 60-120 ms per lookup once it held 700,000 keys, and under sustained load every batch
# waited for one (throughput fell from 5,400/s to 400/s within minutes). Each pair is
# looked up on its own here, behind LIMIT 1 (which keeps the planner from flattening the
# subqueries into a join), so any plan is a probe of the customers' primary key and of
# each table's index on `key` per pair.
@functools.lru_cache(maxsize=64)
def select_keys_of_pg(tables: tuple[str, ...] = KEY_TABLES) -> str:
    return (
        "SELECT q.cid, k.key, k.created_at, k.op_seq, k.request, k.reply "
        "FROM unnest(?::text[], ?::text[]) AS q (cid, key) "
        "CROSS JOIN LATERAL (SELECT num FROM customers WHERE customer_id = q.cid LIMIT 1) c "
        "CROSS JOIN LATERAL (" + " UNION ALL ".join(
            f"(SELECT key, created_at, op_seq, request, reply FROM {t} "
            "WHERE customer = c.num AND key = q.key LIMIT 1)" for t in tables) + ") k")


@functools.lru_cache(maxsize=64)
def writes_into(key_tables: tuple[str, str]) -> list[Write]:
    """WRITES with each generation's key rows going to the given table (its run being
    written)."""
    return [w._replace(table=key_tables[KEY_UNITS.index(w.unit)])
            if w.unit in KEY_UNITS else w for w in WRITES]


# Ledger rows joined to their grants, in LedgerEntry field order.
_LEDGER_COLUMNS_SELECTED = ("SELECT l.seq, l.op_seq, l.kind, g.id, g.currency_id, "
                            "g.resource_id, l.amount, l.ts, l.reservation_id, l.feature_id, "
                            "l.dimensions ")
_LEDGER_SELECT = (f"{_LEDGER_COLUMNS_SELECTED}"
                  "FROM ledger l JOIN customers c ON l.customer = c.num "
                  "JOIN grants g ON g.customer_id = c.customer_id AND g.seq = l.grant_seq "
                  "WHERE c.customer_id = ?")
SELECT_LEDGER = f"{_LEDGER_SELECT} AND l.seq > ? ORDER BY l.seq LIMIT ?"


def _ledger_filters(*, kinds: int, currency: bool, resource: bool, reservation: bool,
                    since: bool = False, until: bool = False) -> str:
    query = ""
    if kinds:
        query += f" AND l.kind IN ({', '.join('?' for _ in range(kinds))})"
    if currency:
        query += " AND g.currency_id = ?"
    if resource:
        query += " AND g.resource_id = ?"
    if reservation:
        query += " AND l.reservation_id = ?"
    if since:
        query += " AND l.ts >= ?"
    if until:
        query += " AND l.ts < ?"
    return query


def select_ledger_count(*, kinds: int, currency: bool, resource: bool,
                        reservation: bool, since: bool = False, until: bool = False) -> str:
    """How many ledger rows `select_ledger_page` pages through with these filters (the
    same parameters, without the cursor and the limit)."""
    return (_LEDGER_SELECT.replace(_LEDGER_COLUMNS_SELECTED, "SELECT count(*) ", 1)
            + _ledger_filters(kinds=kinds, currency=currency, resource=resource,
                              reservation=reservation, since=since, until=until))


def select_ledger_page(*, kinds: int, currency: bool, resource: bool, reservation: bool,
                       cursor: str | None, since: bool = False, until: bool = False) -> str:
    """A page of a customer's ledger for the API: parameters are the customer id, then
    `kinds` kind codes, then the currency, resource and reservation asked for (those
    given), then the time bounds asked for (`since` inclusive, `until` exclusive, epoch
    ms), then the cursor's sequence number (`cursor` "after": older, newest first;
    "before": newer, oldest first; None: the newest), then the limit."""
    query = _LEDGER_SELECT + _ledger_filters(kinds=kinds, currency=currency,
                                             resource=resource, reservation=reservation,
                                             since=since, until=until)
    if cursor == "after":
        query += " AND l.seq < ?"
    elif cursor == "before":
        query += " AND l.seq > ?"
    return query + f" ORDER BY l.seq {'ASC' if cursor == 'before' else 'DESC'} LIMIT ?"


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
