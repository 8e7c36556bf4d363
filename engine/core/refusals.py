"""Business refusals: outcomes a client can act on, returned as values, never raised.

A command is checked in this fixed order of precedence, and the first failing check is the
refusal (nothing is applied when any check fails):

1. The command's own fields       INVALID_AMOUNT, INVALID_GRANT_ID, INVALID_PRIORITY, INVALID_DATES
   (independent of time)          (expireAt not after effectiveAt), INVALID_PERCENT
2. Idempotency                    IDEMPOTENCY_KEY_REUSED (a same-body replay is not a refusal:
                                  it returns the original reply)
3. Existence of what it names     GRANT_NOT_FOUND, RESERVATION_NOT_FOUND
4. The state of what it names,    GRANT_ID_TAKEN, RESERVATION_ID_TAKEN, INVALID_DATES (an
   and the time now               expiry not in the future), GRANT_ALREADY_VOIDED,
                                  GRANT_ALREADY_EXPIRED, GRANT_NOT_VOIDABLE, GRANT_NOT_PENDING,
                                  RESERVATION_POOL_MISMATCH, RESERVATION_NOT_ACTIVE
5. Amounts against the state      BALANCE_LIMIT_EXCEEDED, INSUFFICIENT_CREDITS (also a
                                  release consuming beyond its hold more than the balance)

Checks against the time `now` come after the idempotency check, so a replay of a request
that was valid when first applied gets its original reply however much later it comes.

Refused commands are not remembered under their idempotency key: nothing was applied, so a
retry after (say) a top-up may succeed.
"""

from __future__ import annotations

from enum import StrEnum

from engine.core.commands import Refused

__all__ = ["Refusal", "refuse"]


class Refusal(StrEnum):
    INVALID_AMOUNT = "INVALID_AMOUNT"
    INVALID_GRANT_ID = "INVALID_GRANT_ID"
    INVALID_PRIORITY = "INVALID_PRIORITY"
    INVALID_DATES = "INVALID_DATES"
    INVALID_PERCENT = "INVALID_PERCENT"
    IDEMPOTENCY_KEY_REUSED = "IDEMPOTENCY_KEY_REUSED"
    GRANT_NOT_FOUND = "GRANT_NOT_FOUND"
    RESERVATION_NOT_FOUND = "RESERVATION_NOT_FOUND"
    GRANT_ID_TAKEN = "GRANT_ID_TAKEN"
    RESERVATION_ID_TAKEN = "RESERVATION_ID_TAKEN"
    GRANT_ALREADY_VOIDED = "GRANT_ALREADY_VOIDED"
    GRANT_ALREADY_EXPIRED = "GRANT_ALREADY_EXPIRED"
    GRANT_NOT_VOIDABLE = "GRANT_NOT_VOIDABLE"
    GRANT_NOT_PENDING = "GRANT_NOT_PENDING"
    RESERVATION_POOL_MISMATCH = "RESERVATION_POOL_MISMATCH"
    RESERVATION_NOT_ACTIVE = "RESERVATION_NOT_ACTIVE"
    BALANCE_LIMIT_EXCEEDED = "BALANCE_LIMIT_EXCEEDED"
    INSUFFICIENT_CREDITS = "INSUFFICIENT_CREDITS"
    INVALID_AUTO_RECHARGE = "INVALID_AUTO_RECHARGE"


def refuse(code: Refusal, message: str, field: str | None = None) -> Refused:
    return Refused(code=code.value, message=message, field=field)
