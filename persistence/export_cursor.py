"""The export cursor: where an incremental `creditd export` continues from.

The ledger is append-only but has no global order: its key is (customer number, sequence
within the customer), and no column grows in commit order across customers (the outbox
id does, but a plain consumption writes no outbox row). A time cut-off on `ts` would need
a scan of the whole ledger (no index on it) and would miss rows committed late. So the
cursor keeps, per customer, the ledger sequence number exported up to — the value of
`customers.ledger_seq` in the snapshot the export read. That is exact whatever the
clocks do, and the next run reads only new rows, each customer's by its primary key.
It costs about 2-3 bytes per customer once compressed (docs/exports.md).

Raw events have no sequence: they are cut by acceptance time (`events.created_at`, which
is indexed), at the export's clock less `EVENTS_SETTLE_MS`, so that an event accepted
just before the export but committed just after it is still in the next run's range.

The text is `cx1.` + base64url(zlib(msgpack)): opaque to the user, versioned for us.
"""

from __future__ import annotations

import base64
import binascii
import zlib

import msgspec

__all__ = ["EVENTS_SETTLE_MS", "Cursor", "CursorError", "decode_cursor", "encode_cursor"]

# A raw event is committed within the store's timeouts of being accepted (a flush that
# takes longer fails, and nothing of it is kept): a minute leaves a wide margin.
EVENTS_SETTLE_MS = 60_000
_PREFIX = "cx1."


class CursorError(ValueError):
    pass


class Cursor(msgspec.Struct, frozen=True, array_like=True):
    environment: str | None  # the --environment it was made for (None: all)
    tables: tuple[str, ...]  # the tables it covers; a run continuing it exports the same
    snapshot_ms: int  # when the snapshot it describes was taken (the export's clock)
    events_before_ms: int | None  # raw events accepted before this were exported
    # Customers' numbers and the ledger sequence exported up to, as deltas (numbers
    # ascending): small integers that msgpack and zlib pack tightly.
    num_deltas: list[int] = []
    seqs: list[int] = []

    def marks(self) -> dict[int, int]:
        out: dict[int, int] = {}
        num = 0
        for delta, seq in zip(self.num_deltas, self.seqs, strict=True):
            num += delta
            out[num] = seq
        return out


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(Cursor).decode


def encode_cursor(cursor: Cursor) -> str:
    packed = zlib.compress(_encode(cursor), 9)
    return _PREFIX + base64.urlsafe_b64encode(packed).decode().rstrip("=")


def decode_cursor(text: str) -> Cursor:
    text = text.strip()
    if not text.startswith(_PREFIX):
        raise CursorError("is not a cursor printed by creditd export")
    body = text[len(_PREFIX):]
    try:
        raw = zlib.decompress(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        cursor = _decode(raw)
    except (binascii.Error, zlib.error, msgspec.DecodeError, ValueError) as exc:
        raise CursorError(f"is damaged ({exc})") from None
    if len(cursor.num_deltas) != len(cursor.seqs) or any(d <= 0 for d in cursor.num_deltas):
        raise CursorError("is damaged (customer marks out of order)")
    return cursor
