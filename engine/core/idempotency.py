"""When a request under a remembered idempotency key is a replay of the first one.

A remembered request is kept as a 16-byte digest (`request_digest`), not as the command:
a replay only has to be recognised, never re-read, and the digest is what the store keeps
for the whole retention (a tenth of the encoded command) and what memory holds per key.
"""

from __future__ import annotations

from hashlib import blake2b

import msgspec

from engine.core.commands import Command, CreateGrant, Reserve

__all__ = ["request_digest", "same_request"]

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
