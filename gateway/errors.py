"""HTTP errors as the contract's JSON: `{statusCode, code, message, field?}`.

    ApiError                      raised by handlers; carries status, code, message, field
    ├── bad_input(...)            400 BadUserInput (a field named where there is one)
    └── from_refusal(...)         an engine refusal mapped to its HTTP status and code
Engine overload → 429 and store outage → 503, both with Retry-After. Anything unexpected
is logged and answered 500 without details; a client mistake never reaches that path.
"""

from __future__ import annotations

import math
import re

import msgspec
import structlog
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException

from engine.core.commands import Refused
from gateway.names import camel
from engine.runtime.errors import EngineError, EngineFault, Overloaded, StoreUnavailable

__all__ = ["ApiError", "bad_input", "from_refusal", "exception_handlers", "field_of"]

log = structlog.get_logger("creditd.gateway")


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, field: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = headers or {}

    def response(self) -> Response:
        body: dict[str, object] = {"statusCode": self.status, "code": self.code,
                                   "message": self.message}
        if self.field is not None:
            body["field"] = self.field
        headers = dict(self.headers)
        # The official client retries 409 (and 408, 429, 5xx) by default; a client mistake
        # will not get better by retrying, so say so. 429/503 keep their Retry-After.
        if 400 <= self.status < 500 and self.status != 429:
            headers.setdefault("x-should-retry", "false")
        return Response(body, status_code=self.status, headers=headers)


def bad_input(message: str, field: str | None = None) -> ApiError:
    return ApiError(400, "BadUserInput", message, field)


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


# Engine refusal code -> (HTTP status, contract error code)
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


def from_refusal(refused: Refused) -> ApiError:
    status, code = _REFUSALS.get(refused.code, (400, "BadUserInput"))
    return ApiError(status, code, _MESSAGES.get(refused.code, refused.message), refused.field,
                    headers={"x-should-retry": "false"})


def _retry_after(exc: EngineError) -> dict[str, str]:
    return {"Retry-After": str(max(1, math.ceil(exc.retry_after_s)))}


def _api_error(request: Request, exc: ApiError) -> Response:
    return exc.response()


def _engine_error(request: Request, exc: EngineError) -> Response:
    if isinstance(exc, EngineFault):
        log.error("engine fault", path=request.url.path, error=repr(exc.__cause__ or exc))
        return ApiError(500, "InternalServerError", "internal error").response()
    if isinstance(exc, Overloaded):
        return ApiError(429, "TooManyRequests", str(exc), headers=_retry_after(exc)).response()
    if isinstance(exc, StoreUnavailable):
        return ApiError(503, "ServiceUnavailable", "the database is unavailable; retry",
                        headers=_retry_after(exc)).response()
    return ApiError(503, "ServiceUnavailable", str(exc), headers=_retry_after(exc)).response()


def _http_error(request: Request, exc: HTTPException) -> Response:
    code = {400: "BadUserInput", 401: "Unauthenticated", 403: "Forbidden", 404: "NotFound",
            405: "MethodNotAllowed", 413: "PayloadTooLarge"}.get(exc.status_code, "Error")
    message, field = str(exc.detail), None
    # Litestar's own parameter validation lists what failed in `extra`; name the first
    # parameter rather than echo "Validation failed for GET …".
    if isinstance(exc, ValidationException) and isinstance(exc.extra, list) and exc.extra:
        first = exc.extra[0]
        if isinstance(first, dict) and first.get("key"):
            # Litestar names the handler's parameter; the wire name is its camelCase alias.
            message, field = str(first.get("message") or message), camel(str(first["key"]))
    return ApiError(exc.status_code, code, message, field).response()


def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error", path=request.url.path)
    return ApiError(500, "InternalServerError", "internal error").response()


exception_handlers = {
    ApiError: _api_error,
    EngineError: _engine_error,
    HTTPException: _http_error,
    Exception: _unexpected,
}
