"""The export's files: each table's columns and how a value is written in CSV or Parquet.

Column kinds (docs/exports.md lists every column):

| kind | stored as | CSV | Parquet |
|---|---|---|---|
| `text` | text | as is | string |
| `int` | integer | decimal digits | int64 |
| `amount` | integer units of 10^-5 credits | exact decimal, 5 places: `-2.50000` | decimal128(38, 5) |
| `time` | epoch milliseconds | ISO-8601 UTC, ms: `2025-01-31T23:59:59.123Z` | timestamp[ms, tz=UTC] |
| `bool` | 0/1 or boolean | `true` / `false` | bool |
| `json` | JSON text (numbers exact) | the JSON text | string |

An empty CSV field is a null. No value passes through a binary float on the way.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec

from engine.core.amounts import DECIMALS, SCALE
from persistence.export_source import ExportError

__all__ = [
    "COLUMNS",
    "FORMATS",
    "CsvFile",
    "ParquetFile",
    "csv_header",
    "csv_line",
    "json_text",
    "open_file",
    "require_parquet",
]

_ENV_CUSTOMER = [("environment", "text"), ("customer_id", "text")]
_LEDGER = [("seq", "int"), ("op_seq", "int"), ("event_type", "text"), ("grant_id", "text"),
           ("currency_id", "text"), ("resource_id", "text"), ("amount", "amount"),
           ("timestamp", "time"), ("reservation_id", "text"), ("feature_id", "text"),
           ("dimensions", "json")]
COLUMNS: dict[str, list[tuple[str, str]]] = {
    "grants": [*_ENV_CUSTOMER, ("grant_id", "text"), ("grant_seq", "int"),
               ("currency_id", "text"), ("resource_id", "text"), ("grant_type", "text"),
               ("status", "text"), ("priority", "int"), ("effective_at", "time"),
               ("expire_at", "time"), ("created_at", "time"), ("updated_at", "time"),
               ("voided_at", "time"), ("amount", "amount"), ("available", "amount"),
               ("held", "amount"), ("consumed", "amount"), ("expired", "amount"),
               ("voided", "amount"), ("activated", "bool"), ("cost_amount", "amount"),
               ("cost_currency", "text"), ("display_name", "text"), ("comment", "text"),
               ("metadata", "json")],
    "ledger": [*_ENV_CUSTOMER, *_LEDGER],
    # Ledger rows of one kind each: the same columns less the ones that kind never has.
    "consumptions": [*_ENV_CUSTOMER, *(c for c in _LEDGER if c[0] != "event_type")],
    "expirations": [*_ENV_CUSTOMER, *(c for c in _LEDGER if c[0] not in (
        "event_type", "reservation_id", "feature_id", "dimensions"))],
    "usage_events": [*_ENV_CUSTOMER, ("event_key", "text"), ("event_name", "text"),
                     ("timestamp", "time"), ("resource_id", "text"), ("dimensions", "json"),
                     ("accepted_at", "time")],
    "usage_buckets": [*_ENV_CUSTOMER, ("hour", "time"), ("feature_id", "text"),
                      ("resource_id", "text"), ("currency_id", "text"), ("dimensions", "json"),
                      ("usage", "amount"), ("credits", "amount"), ("events", "int")],
}
FORMATS = ("csv", "parquet")
# The encoding persistence/codec.py stores JSON with (keys sorted, numbers exact), so a
# value decoded from a row and encoded here is the text the row holds.
_json_encode = msgspec.json.Encoder(order="deterministic", decimal_format="number").encode


def json_text(value: Any) -> str | None:
    return None if value is None else _json_encode(value).decode()


def _amount_text(units: int) -> str:
    sign = "-" if units < 0 else ""
    whole, frac = divmod(abs(units), SCALE)
    return f"{sign}{whole}.{frac:0{DECIMALS}d}"


def _time_text(ms: int) -> str:
    seconds, milli = divmod(ms, 1000)  # floor division: exact before 1970 too
    return f"{datetime.fromtimestamp(seconds, UTC):%Y-%m-%dT%H:%M:%S}.{milli:03d}Z"


def _csv_value(kind: str, value: Any) -> str:
    if value is None:
        return ""
    if kind == "amount":
        return _amount_text(int(value))
    if kind == "time":
        return _time_text(int(value))
    if kind == "bool":
        return "true" if value else "false"
    return str(value)


class _Line:
    """A file-like that keeps what csv.writer writes, to hand it out as text."""

    def __init__(self) -> None:
        self.parts: list[str] = []

    def write(self, text: str) -> None:
        self.parts.append(text)


def csv_header(table: str) -> str:
    out = _Line()
    csv.writer(out, lineterminator="\r\n").writerow(c for c, _ in COLUMNS[table])
    return "".join(out.parts)


def csv_line(table: str, rows: Sequence[Sequence[Any]]) -> str:
    """`rows` (values in COLUMNS order, as stored) as CSV text (RFC 4180 line ends)."""
    kinds = [k for _, k in COLUMNS[table]]
    out = _Line()
    writer = csv.writer(out, lineterminator="\r\n")
    for row in rows:
        writer.writerow([_csv_value(k, v) for k, v in zip(kinds, row, strict=True)])
    return "".join(out.parts)


class CsvFile:
    """One table's CSV file, written under a temporary name until `finish`."""

    suffix = ".csv"

    def __init__(self, table: str, path: Path) -> None:
        self.table, self.path = table, path
        self._partial = path.with_name(f".{path.name}.partial")
        # Closed by `finish` or `abort`: the file outlives this call.
        self._file = open(self._partial, "w", encoding="utf-8", newline="")  # noqa: SIM115
        self._file.write(csv_header(table))

    def write(self, rows: Sequence[Sequence[Any]]) -> None:
        self._file.write(csv_line(self.table, rows))

    def finish(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self._partial, self.path)

    def abort(self) -> None:
        self._file.close()
        self._partial.unlink(missing_ok=True)


def require_parquet() -> Any:
    """pyarrow, imported only when Parquet is asked for (an optional extra)."""
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise ExportError("Parquet output needs pyarrow: pip install 'creditd[parquet]' "
                          "(or export --format csv)") from None
    return pyarrow


# Rows are buffered up to a row group of this many (bounded memory; Parquet readers
# skip whole row groups by their statistics, so groups should not be tiny either).
ROW_GROUP_ROWS = 65_536


class ParquetFile:
    """One table's Parquet file, row group by row group, under a temporary name until
    `finish`."""

    suffix = ".parquet"

    def __init__(self, table: str, path: Path) -> None:
        pa = require_parquet()
        self._pa = pa
        self.table, self.path = table, path
        self._partial = path.with_name(f".{path.name}.partial")
        types = {"text": pa.string(), "json": pa.string(), "int": pa.int64(),
                 "amount": pa.decimal128(38, DECIMALS), "time": pa.timestamp("ms", tz="UTC"),
                 "bool": pa.bool_()}
        self._kinds = [k for _, k in COLUMNS[table]]
        self.schema = pa.schema([(c, types[k]) for c, k in COLUMNS[table]])
        self._writer = pa.parquet.ParquetWriter(str(self._partial), self.schema,
                                                compression="zstd")
        self._buffer: list[Sequence[Any]] = []

    def write(self, rows: Sequence[Sequence[Any]]) -> None:
        self._buffer.extend(rows)
        if len(self._buffer) >= ROW_GROUP_ROWS:
            self._flush()

    def _flush(self) -> None:
        if not self._buffer:
            return
        columns = []
        for i, kind in enumerate(self._kinds):
            values = [r[i] for r in self._buffer]
            if kind == "amount":
                values = [None if v is None else Decimal(int(v)).scaleb(-DECIMALS)
                          for v in values]
            elif kind == "bool":
                values = [None if v is None else bool(v) for v in values]
            columns.append(self._pa.array(values, type=self.schema.field(i).type))
        self._writer.write_table(self._pa.Table.from_arrays(columns, schema=self.schema))
        self._buffer = []

    def finish(self) -> None:
        self._flush()
        self._writer.close()
        with open(self._partial, "rb") as f:
            os.fsync(f.fileno())
        os.replace(self._partial, self.path)

    def abort(self) -> None:
        self._writer.close()
        self._partial.unlink(missing_ok=True)


def open_file(fmt: str, table: str, out_dir: Path) -> CsvFile | ParquetFile:
    cls = CsvFile if fmt == "csv" else ParquetFile
    return cls(table, out_dir / f"{table}{cls.suffix}")
