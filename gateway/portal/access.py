"""What a customer token may read over HTTP, and how often.

A browser holds a customer token (docs/feed.md), never an API key. The widgets need the
token's customer's balances, grants, ledger, usage series and auto-recharge settings, and
the environment's currency definitions (unit names); those GET routes, and the portal's
token exchange, accept `Authorization: Bearer <token>`. Everything else still needs
X-API-KEY: nothing a token can reach moves money or reads another customer.

The scope is checked here, once, before the route runs: the request's `customerId` must be
the token's customer and, for a token minted for one resource, `resourceId` must be that
resource. The route then runs exactly as for an API key (one operation, one function).

Each token is rate-limited (a token bucket per token): a leaked token cannot be used to
hammer the server. The buckets are kept for at most `TRACKED_MAX` tokens, least recently
used dropped first (a dropped token starts again with a full bucket, which is no more than
a new token would get).
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import OrderedDict
from typing import Any

from engine.domain.errors import DomainError
from gateway.feed.tokens import Claims, TokenError, TokenExpired, Tokens

__all__ = ["CORS_PATHS", "SESSION_PATH", "TOKEN_READS", "RateLimiter", "check_token_read"]

SESSION_PATH = "/api/v1/portal/session"
# The reads a token may make, and whether each is scoped to one customer (currency
# definitions are the environment's catalog: the same for every customer).
TOKEN_READS: dict[str, bool] = {
    "/api/v1/credits/balance": True,
    "/api/v1/credits/grants": True,
    "/api/v1/credits/ledger": True,
    "/api/v1/credits/usage": True,
    "/api/v1/credits/usage/dimensions": True,
    "/api/v1/credits/auto-recharge": True,
    "/api/v1/credits/custom-currencies": False,
    SESSION_PATH: False,
}
# Routes a page on another origin may call (widgets embedded in the merchant's app).
CORS_PATHS = frozenset(TOKEN_READS)

TRACKED_MAX = 10_000


class RateLimiter:
    """A token bucket per key: `rate_per_s` sustained, `burst` at once."""

    def __init__(self, rate_per_s: float, burst: int, tracked_max: int = TRACKED_MAX) -> None:
        self.rate = rate_per_s
        self.burst = burst
        self.tracked_max = tracked_max
        self._buckets: OrderedDict[bytes, list[float]] = OrderedDict()

    def admit(self, key: bytes, now_s: float) -> float:
        """0 when admitted, else the seconds until a request would be."""
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = [float(self.burst), now_s]
            if len(self._buckets) > self.tracked_max:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            bucket[0] = min(self.burst, bucket[0] + (now_s - bucket[1]) * self.rate)
            bucket[1] = now_s
        if bucket[0] >= 1:
            bucket[0] -= 1
            return 0.0
        return (1 - bucket[0]) / self.rate

    def __len__(self) -> int:
        return len(self._buckets)


def _forbidden(field: str, message: str) -> DomainError:
    return DomainError(403, "Forbidden", message, field)


def _one(query: Any, name: str) -> str | None:
    values = query.getall(name, [])
    if len(values) > 1:
        raise DomainError(400, "BadUserInput", "must be given once", name)
    return values[0] if values else None


def check_token_read(method: str, path: str, query: Any, token: str, tokens: Tokens,
                     limiter: RateLimiter, now_s: int) -> Claims:
    """The token's claims if it may make this request; else the refusal (401, 403, 429).
    `now_s` is the process's clock (a token expires by it, as the feed decides); the rate
    is measured on the monotonic clock, which a manual test clock does not stop."""
    scoped = TOKEN_READS.get(path)
    if scoped is None or method not in ("GET", "HEAD"):
        raise DomainError(401, "Unauthenticated",
                          "a customer token reads balances, grants, the ledger, usage and "
                          "auto-recharge settings only; this call needs X-API-KEY",
                          "Authorization")
    try:
        claims = tokens.verify(token, now_s)
    except TokenExpired:
        raise DomainError(401, "TokenExpired", "the token has expired; ask the application "
                          "for a new one", "Authorization") from None
    except TokenError as exc:
        raise DomainError(401, "Unauthenticated", str(exc), "Authorization") from None
    # Keyed by a digest, not the token: the table never holds a usable credential.
    wait = limiter.admit(hashlib.blake2b(token.encode(), digest_size=16).digest(),
                         time.monotonic())
    if wait:
        raise DomainError(429, "TooManyRequests", "too many requests with this token",
                          headers={"Retry-After": str(max(1, math.ceil(wait)))})
    if scoped:
        customer_id = _one(query, "customerId")
        if customer_id is not None and customer_id != claims.customer_id:
            raise _forbidden("customerId", "the token was issued for another customer")
        if customer_id is None:
            raise DomainError(400, "BadUserInput", "is required", "customerId")
        resource_id = _one(query, "resourceId")
        if claims.resource_id is not None and resource_id != claims.resource_id:
            raise _forbidden("resourceId", f"the token was issued for resource "
                             f"{claims.resource_id!r}; give resourceId={claims.resource_id}")
    return claims
