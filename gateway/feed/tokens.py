"""Customer tokens: what a browser presents instead of an API key to read one customer's feed.

A server (holding an API key) mints a token for one customer of its environment, optionally
one resource, valid for a short time (15 minutes by default). It is a JWT signed with
HS256 by PyJWT; the claims name the environment, customer and resource, and a `typ` and
audience of its own so that no other JWT signed with the same secret passes for one.

The secret is `CREDITD_TOKEN_SECRET` when set, otherwise one generated on first start and
kept in the database (table server_secrets): tokens survive restarts and are accepted by
every server sharing the database. Changing the secret invalidates every token issued.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

import jwt

__all__ = [
    "TTL_DEFAULT_S",
    "TTL_MAX_S",
    "Claims",
    "TokenError",
    "TokenExpired",
    "Tokens",
    "load_secret",
]

TTL_DEFAULT_S = 15 * 60
TTL_MAX_S = 24 * 3600
_AUDIENCE = "creditd:feed"
_TYPE = "creditd.customer"
_ALGORITHM = "HS256"


class TokenError(Exception):
    """The token cannot be used: malformed, forged, for another purpose."""


class TokenExpired(TokenError):
    pass


@dataclass(frozen=True)
class Claims:
    environment: str
    customer_id: str
    resource_id: str | None
    expires_at_s: int


class Tokens:
    def __init__(self, secret: str) -> None:
        self._key = secret.encode()

    def mint(self, environment: str, customer_id: str, resource_id: str | None,
             now_s: int, ttl_s: int = TTL_DEFAULT_S) -> tuple[str, int]:
        """A token and its expiry (epoch seconds)."""
        expires = now_s + ttl_s
        # `jti`: every token is its own string, even two minted in the same second for the
        # same customer (each then has its own rate-limit bucket: gateway/portal/access.py).
        claims: dict[str, Any] = {"aud": _AUDIENCE, "typ": _TYPE, "env": environment,
                                  "sub": customer_id, "iat": now_s, "exp": expires,
                                  "jti": secrets.token_urlsafe(9)}
        if resource_id is not None:
            claims["rid"] = resource_id
        return jwt.encode(claims, self._key, algorithm=_ALGORITHM), expires

    def verify(self, token: str, now_s: int) -> Claims:
        """The token's claims if it is valid at `now_s`: the process's clock, the one that
        minted it, not PyJWT's reading of the wall clock (which a manual clock, in tests
        and demos, would disagree with)."""
        try:
            claims = jwt.decode(token, self._key, algorithms=[_ALGORITHM], audience=_AUDIENCE,
                                options={"require": ["exp", "sub", "aud"],
                                         "verify_exp": False, "verify_iat": False})
        except jwt.InvalidTokenError as exc:
            raise TokenError(f"the token is not valid ({exc})") from None
        env, rid = claims.get("env"), claims.get("rid")
        if (claims.get("typ") != _TYPE or not isinstance(env, str)
                or not isinstance(claims["sub"], str)
                or not (rid is None or isinstance(rid, str))
                or not isinstance(claims["exp"], int)):
            raise TokenError("the token is not a creditd customer token")
        if now_s >= claims["exp"]:  # as PyJWT decides it, without leeway
            raise TokenExpired("the token has expired")
        return Claims(env, claims["sub"], rid, claims["exp"])


async def load_secret(store: Any, now_ms: int) -> str:
    """The database's token secret, created on first use."""
    return await store.server_secret("customer_tokens", secrets.token_urlsafe(32), now_ms)
