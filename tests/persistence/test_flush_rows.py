"""A flush's rows come back from the database exactly as they were written, on both
stores: the PostgreSQL flush carries each table's rows as one jsonb parameter
(persistence/postgres.py, `_rows_of`), so every kind of value crosses JSON on the way —
text with quotes, backslashes, control characters and non-ASCII letters, integers at the
engine's bounds, booleans, NULLs, and blobs (as base64) with every byte value, empty ones
included."""

from __future__ import annotations

from typing import Any

import pytest

from engine.core.amounts import AMOUNT_UNITS_MAX
from persistence import open_store, sql

pytestmark = pytest.mark.anyio

_TEXT = "cust-ü'\"\\\n\t☃ 𝄞 {\"a\": [1]} \u007f"
_EVERY_BYTE = bytes(range(256))


def _rows() -> dict[str, list[tuple]]:
    rows: dict[str, list[tuple]] = {w.unit: [] for w in sql.WRITES}
    rows["customers"] = [(_TEXT, AMOUNT_UNITS_MAX, 0, 1, 2, None, 7, -1)]
    rows["ledger"] = [
        (7, 1, 1, -AMOUNT_UNITS_MAX, 1_700_000_000_123, 3, 2, None, "images", '{"é": "\\""}'),
        (7, 2, 1, AMOUNT_UNITS_MAX, 1_700_000_000_124, 4, 1, "res-1", None, None),
        (7, 3, 2, 0, 0, 5, 10, "", "", ""),
    ]
    rows["keys_0"] = [
        (7, "key-1", 1_700_000_000_123, 1, _EVERY_BYTE, b""),
        (7, "key-" + _TEXT, 1_700_000_000_124, 2, b"\x00", _EVERY_BYTE * 3),
    ]
    rows["pools"] = [(_TEXT, "tokens", "", None, True, 5, 20, _EVERY_BYTE, None),
                     (_TEXT, "tokens", "r", "r", False, 0, 0, None, "pending")]
    rows["outbox"] = [(1, _TEXT, 1, "credits.consumed", b'{"x":"\\u00e9"}', 1_700_000_000_123),
                      (2, _TEXT, 2, "credits.granted", b"", 1_700_000_000_124)]
    return rows


def _normalized(row: tuple[Any, ...]) -> tuple[Any, ...]:
    # SQLite answers a boolean as 0/1 and a blob as bytes (PostgreSQL: bool, bytes).
    return tuple(int(v) if isinstance(v, bool) else v for v in row)


async def test_a_flushes_rows_read_back_exactly(store_url: str, raw_sql: Any) -> None:
    written = _rows()
    async with open_store(store_url) as store:
        await store._write(written)
        key_table = store._written_tables()[0]
    tables = {"customers": ("customers", sql.CUSTOMER_COLUMNS, "customer_id"),
              "ledger": ("ledger", sql.LEDGER_COLUMNS, "seq"),
              "keys_0": (key_table, sql.KEY_COLUMNS, "op_seq"),
              "pools": ("pools", sql.POOL_COLUMNS, "resource_key"),
              "outbox": ("outbox", sql.OUTBOX_COLUMNS, "id")}
    for unit, (table, columns, order) in tables.items():
        found = await raw_sql(store_url, f"SELECT {', '.join(columns)} FROM {table} "
                                         f"ORDER BY {order}")
        assert [_normalized(r) for r in found] == \
            [_normalized(r) for r in written[unit]], unit
