"""What is remembered under an idempotency key, and when a request is a replay of it.

A remembered request is kept as a 16-byte digest (`request_digest`), not as the command:
a replay only has to be recognised, never re-read, and the digest is what the store keeps
for the whole retention (a tenth of the encoded command).

Memory holds each remembered key as one `bytes` value, its memo (`remember`): the digest,
the time the request was first applied, and the reply encoded as the store keeps it
(`encode_reply`). A replay decodes the reply (`recall`); the store writes the memo's parts
as they are and builds memos from its rows without decoding them. One flat object per key
instead of a record, a reply, its balance, its breakdown and their numbers (a dozen small
objects) is under half the memory, nothing for the cycle collector, and a heap that does
not fragment as keys are forgotten: a server holding a full budget of keys in objects ran
16-23 % slower than a fresh one (docs/benchmarks.md, "Remembered keys as one value each").
"""

from __future__ import annotations

from hashlib import blake2b

import msgspec

from engine.core.commands import (
    AnyReply,
    BalanceView,
    Command,
    ConsumeReply,
    CreateGrant,
    Reply,
    Reserve,
)

__all__ = ["IdempotencyRecord", "request_digest", "same_request", "remember", "recall",
           "memo_from", "is_replay", "created_at_of", "encode_reply", "decode_reply",
           "records"]

# Ids the caller generates afresh for each request; a retry would carry new ones.
_GENERATED_ID = {CreateGrant: "grant_id", Reserve: "reservation_id"}

_encode_sorted = msgspec.msgpack.Encoder(order="deterministic").encode


def request_digest(cmd: Command) -> bytes:
    """What identifies a request for replays: the caller-supplied request hash when it has
    one, else the command's fields less the ids the caller generated for it. Encodings
    are compared, not Python values (True == 1 == 1.0 in Python, not on the wire), in a
    deterministic order (two dicts with the same items in another order are equal); the
    prefix keeps a hash and an encoding from ever matching each other."""
    if cmd.request_hash is not None:
        data = b"h" + cmd.request_hash.encode()
    else:
        generated = _GENERATED_ID.get(type(cmd))
        if generated is not None:
            cmd = msgspec.structs.replace(cmd, **{generated: ""})
        data = b"c" + _encode_sorted(cmd)
    return blake2b(data, digest_size=16).digest()


def same_request(first: Command, again: Command) -> bool:
    """Whether `again` is a replay of `first` under the same idempotency key."""
    return type(first) is type(again) and request_digest(first) == request_digest(again)


# -- what is remembered ---------------------------------------------------------------------

_DIGEST = 16  # bytes of request_digest
_PREFIX = _DIGEST + 8  # ... then created_at, 8 bytes big-endian, signed

# Replies as remembered. A consumption's reply, the one made by every keyed consumption,
# is a positional array behind a marker byte, its two timestamps left out (both are the
# key's created_at): under half the msgpack map with field names. Every other reply is its
# tagged msgpack map, which is also what store rows written before the marker existed hold
# (they start with a map's first byte, never 0x01).
_CONSUMED = b"\x01"
_pack = msgspec.msgpack.Encoder().encode
_unpack_reply = msgspec.msgpack.Decoder(AnyReply).decode
_unpack_consumed = msgspec.msgpack.Decoder(
    tuple[int, tuple[tuple[str, int], ...], tuple[str, str | None, int, int, int, int, bool],
          int]).decode


def encode_reply(reply: Reply, created_at: int) -> bytes:
    if type(reply) is ConsumeReply and reply.timestamp == created_at == reply.balance.timestamp:
        b = reply.balance
        return _CONSUMED + _pack((
            reply.amount, reply.breakdown, (b.currency_id, b.resource_id, b.current_balance,
                                            b.total_granted, b.total_consumed, b.reserved,
                                            b.hard_limit), reply.overdraft))
    return _pack(reply)


def decode_reply(stored: bytes, created_at: int) -> Reply:
    if stored[:1] == _CONSUMED:
        amount, breakdown, (currency, resource, balance, granted, consumed, reserved,
                            hard), overdraft = _unpack_consumed(stored[1:])
        return ConsumeReply(amount=amount, breakdown=breakdown, timestamp=created_at,
                            overdraft=overdraft, balance=BalanceView(
                                currency, resource, balance, granted, consumed, reserved,
                                created_at, hard))
    return _unpack_reply(stored)


def remember(request: bytes, reply: Reply, created_at: int) -> bytes:
    """The memo of a request (its digest) first applied at `created_at` with `reply`."""
    return memo_from(request, created_at, encode_reply(reply, created_at))


def memo_from(request: bytes, created_at: int, stored_reply: bytes) -> bytes:
    """The memo of a stored key: its digest, its time and its reply as stored."""
    return request + created_at.to_bytes(8, "big", signed=True) + stored_reply


def is_replay(memo: bytes, request: bytes) -> bool:
    """Whether the request with digest `request` is the remembered one."""
    return memo.startswith(request)


def created_at_of(memo: bytes) -> int:
    return int.from_bytes(memo[_DIGEST:_PREFIX], "big", signed=True)


def recall(memo: bytes) -> Reply:
    """The reply the remembered request got."""
    return decode_reply(memo[_PREFIX:], created_at_of(memo))


class IdempotencyRecord(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A key remembered by a batch (`Effects.keys`, for the store to write) or read back
    from the store (`Store.lookup_keys`): the key, its memo, and the ledger operation the
    request made (None when it made none), so a key leads to its ledger entries for as
    long as it is kept."""

    key: str
    memo: bytes
    op_seq: int | None = None

    @property
    def request(self) -> bytes:
        return self.memo[:_DIGEST]

    @property
    def created_at(self) -> int:
        return created_at_of(self.memo)

    @property
    def stored_reply(self) -> bytes:
        return self.memo[_PREFIX:]

    @property
    def reply(self) -> Reply:
        return recall(self.memo)


def records(memos: dict[str, bytes]) -> list[IdempotencyRecord]:
    """The keys a state remembers (`CustomerState.idempotency`) as records, as `restore`
    and `rebuild` take them (their ledger operations are the store's, not memory's)."""
    return [IdempotencyRecord(key=key, memo=memo) for key, memo in memos.items()]
