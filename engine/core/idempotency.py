"""When a request under a remembered idempotency key is a replay of the first one."""

from __future__ import annotations

import msgspec

from engine.core.commands import Command, CreateGrant, Reserve

__all__ = ["same_request"]

# Ids the caller generates afresh for each request; a retry would carry new ones.
_GENERATED_ID = {CreateGrant: "grant_id", Reserve: "reservation_id"}

_encode_sorted = msgspec.msgpack.Encoder(order="deterministic").encode


def same_request(first: Command, again: Command) -> bool:
    """Whether `again` is a replay of `first` under the same idempotency key: the same
    command with the same fields, ignoring ids the caller generated for each request, or
    the same caller-supplied request hash when either has one."""
    if type(first) is not type(again):
        return False
    if first.request_hash is not None or again.request_hash is not None:
        return first.request_hash == again.request_hash
    generated = _GENERATED_ID.get(type(first))
    if generated is not None:
        again = msgspec.structs.replace(again, **{generated: getattr(first, generated)})
    # Compare encodings, not Python values: True == 1 == 1.0 in Python, not on the wire.
    # Deterministic order makes two dicts with the same items in another order equal.
    return _encode_sorted(first) == _encode_sorted(again)
