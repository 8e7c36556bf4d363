"""Refusals of the domain's operations, as one exception type both wire formats map.

A `DomainError` carries Stigg's error code (`CustomerNotFound`, `BadUserInput`, …: the
codes of ../shared/contract, the same in REST bodies and GraphQL `extensions.code`), a
message for people, the input field it is about (camelCase, as the client sent it), and
the HTTP status the REST API answers it with (GraphQL ignores it).
"""

from __future__ import annotations

import re

import msgspec

from engine.core.commands import Refused

__all__ = ["DomainError", "bad_input", "field_of", "from_refusal", "not_found"]


class DomainError(Exception):
    def __init__(self, status: int, code: str, message: str, field: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        # Extra response headers for REST (Retry-After, x-should-retry).
        self.headers = headers or {}

    def __repr__(self) -> str:
        return f"DomainError({self.status}, {self.code!r}, {self.message!r}, {self.field!r})"


def bad_input(message: str, field: str | None = None) -> DomainError:
    return DomainError(400, "BadUserInput", message, field)


def not_found(code: str, what: str, ident: str, field: str | None) -> DomainError:
    return DomainError(404, code, f"{what} {ident!r} was not found", field)


# Engine refusal code -> (HTTP status, error code)
_REFUSALS: dict[str, tuple[int, str]] = {
    "INSUFFICIENT_CREDITS": (402, "InsufficientCredits"),
    "GRANT_NOT_FOUND": (404, "CreditGrantNotFound"),
    "GRANT_ALREADY_VOIDED": (409, "CreditGrantAlreadyVoided"),
    "GRANT_ALREADY_EXPIRED": (409, "CreditGrantAlreadyExpired"),
    "GRANT_NOT_VOIDABLE": (409, "CreditGrantCannotBeVoided"),
    "GRANT_NOT_PENDING": (409, "CreditGrantNotPending"),
    "GRANT_ID_TAKEN": (409, "DuplicatedEntityNotAllowed"),
    "RESERVATION_ID_TAKEN": (409, "DuplicatedEntityNotAllowed"),
    "RESERVATION_NOT_FOUND": (404, "CreditReservationNotFound"),
    "RESERVATION_NOT_ACTIVE": (409, "CreditReservationNotActive"),
    "RESERVATION_POOL_MISMATCH": (400, "BadUserInput"),
    "IDEMPOTENCY_KEY_REUSED": (409, "IdempotencyKeyReused"),
    "BALANCE_LIMIT_EXCEEDED": (400, "BadUserInput"),
}


# Engine messages speak in units (10^-5 credits); clients get these instead.
_MESSAGES = {
    "INSUFFICIENT_CREDITS": "the balance cannot cover this request; nothing was consumed",
    "BALANCE_LIMIT_EXCEEDED": "the amount would take the balance past 10^12 credits",
}


def from_refusal(refused: Refused) -> DomainError:
    """An engine refusal (a business rule said no) as the domain's error. Retrying the
    same request gets the same answer, so REST tells clients not to."""
    status, code = _REFUSALS.get(refused.code, (400, "BadUserInput"))
    return DomainError(status, code, _MESSAGES.get(refused.code, refused.message),
                       refused.field, headers={"x-should-retry": "false"})


_PATH = re.compile(r" - at `\$\.?(.*)`$")


def field_of(error: msgspec.ValidationError) -> tuple[str, str | None]:
    """Split msgspec's 'Expected `int`, got `str` - at `$.items[0].amount`' into the
    message and the field path (`items[0].amount`); a missing or unknown field is named
    with its parent's path."""
    text = str(error)
    match = _PATH.search(text)
    message = text if match is None else text[: match.start()]
    path = None if match is None else (match.group(1) or None)
    if path is not None:
        # msgspec names a dict value `metadata[...]` (without the key): name the dict.
        path = path.replace("[...]", "") or None
    named = re.search(r"(?:missing required|unknown) field `([^`]+)`", message)
    if named:
        path = f"{path}.{named.group(1)}" if path else named.group(1)
    return message, path
