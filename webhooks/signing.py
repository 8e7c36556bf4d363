"""Standard Webhooks signatures (https://www.standardwebhooks.com).

Every request carries three headers:

    webhook-id         the event id; the same on every retry and replay, so receivers can
                       drop duplicates (delivery is at least once)
    webhook-timestamp  seconds since the epoch when this attempt was signed
    webhook-signature  "v1,<base64 HMAC-SHA256 of '<id>.<timestamp>.<body>'>", one per
                       secret in force, separated by spaces

A secret is "whsec_" followed by the base64 of 24 to 64 random bytes; the HMAC key is those
bytes. During a rotation's overlap both the new and the previous secret sign, so a receiver
that still holds the old one keeps verifying until it switches.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import secrets

__all__ = ["SECRET_PREFIX", "new_secret", "secret_key", "sign", "headers"]

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
SECRET_BYTES_MIN = 24
SECRET_BYTES_MAX = 64


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


@functools.lru_cache(maxsize=1024)
def secret_key(secret: str) -> bytes:
    """The HMAC key a secret stands for; ValueError if it is not a well-formed secret.
    Cached: every attempt signs with its endpoint's keys."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError(f"must start with {SECRET_PREFIX!r}")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX):], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("must be whsec_ followed by base64") from None
    if not SECRET_BYTES_MIN <= len(key) <= SECRET_BYTES_MAX:
        raise ValueError(f"must encode {SECRET_BYTES_MIN} to {SECRET_BYTES_MAX} bytes")
    return key


def sign(keys: list[bytes], msg_id: str, timestamp_s: int, body: bytes) -> str:
    """The `webhook-signature` value: one `v1,` signature per key, space-separated."""
    assert keys, "at least one secret signs"
    signed = b"%s.%d.%s" % (msg_id.encode(), timestamp_s, body)
    return " ".join(
        "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
        for key in keys
    )


def headers(keys: list[bytes], msg_id: str, timestamp_s: int,
            body: bytes) -> list[tuple[bytes, bytes]]:
    """The request headers of one attempt (besides host and content-length)."""
    return [
        (b"content-type", b"application/json"),
        (b"user-agent", b"creditd-webhooks/1"),
        (b"webhook-id", msg_id.encode()),
        (b"webhook-timestamp", str(timestamp_s).encode()),
        (b"webhook-signature", sign(keys, msg_id, timestamp_s, body).encode()),
    ]
