"""HTTP errors as the contract's JSON: `{statusCode, code, message, field?}`.

    ApiError                      the domain's DomainError (engine/domain/errors.py): status,
    ├── bad_input(...)            code, message, field; 400 BadUserInput (a field named)
    └── from_refusal(...)         an engine refusal mapped to its HTTP status and code
Engine overload → 429 and store outage → 503, both with Retry-After. Anything unexpected
is logged and answered 500 without details; a client mistake never reaches that path.
"""

from __future__ import annotations

import math

import structlog
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException

from engine.domain.errors import DomainError, bad_input, field_of, from_refusal
from engine.runtime.errors import EngineError, EngineFault, Overloaded, ShardMoved, StoreUnavailable
from gateway.names import camel

__all__ = ["ApiError", "bad_input", "from_refusal", "exception_handlers", "field_of",
           "response"]

log = structlog.get_logger("creditd.gateway")


# The domain's refusal is the REST error: one type, raised by domain functions and
# handlers alike (engine/domain/errors.py); this module answers it as the contract's JSON.
ApiError = DomainError


def response(exc: DomainError) -> Response:
    body: dict[str, object] = {"statusCode": exc.status, "code": exc.code,
                               "message": exc.message}
    if exc.field is not None:
        body["field"] = exc.field
    headers = dict(exc.headers)
    # The official client retries 409 (and 408, 429, 5xx) by default; a client mistake
    # will not get better by retrying, so say so. 429/503 keep their Retry-After.
    if 400 <= exc.status < 500 and exc.status != 429:
        headers.setdefault("x-should-retry", "false")
    return Response(body, status_code=exc.status, headers=headers)


def _retry_after(exc: EngineError) -> dict[str, str]:
    return {"Retry-After": str(max(1, math.ceil(exc.retry_after_s)))}


def _api_error(request: Request, exc: ApiError) -> Response:
    return response(exc)


def _engine_error(request: Request, exc: EngineError) -> Response:
    if isinstance(exc, EngineFault):
        log.error("engine fault", path=request.url.path, error=repr(exc.__cause__ or exc))
        return response(ApiError(500, "InternalServerError", "internal error"))
    if isinstance(exc, Overloaded):
        return response(ApiError(429, "TooManyRequests", str(exc), headers=_retry_after(exc)))
    if isinstance(exc, ShardMoved):  # a cluster moving the customer between nodes
        return response(ApiError(503, "ServiceUnavailable", str(exc), headers=_retry_after(exc)))
    if isinstance(exc, StoreUnavailable):
        return response(ApiError(503, "ServiceUnavailable", "the database is unavailable; retry",
                        headers=_retry_after(exc)))
    return response(ApiError(503, "ServiceUnavailable", str(exc), headers=_retry_after(exc)))


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
    return response(ApiError(exc.status_code, code, message, field))


def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error", path=request.url.path)
    return response(ApiError(500, "InternalServerError", "internal error"))


exception_handlers = {
    DomainError: _api_error,
    EngineError: _engine_error,
    HTTPException: _http_error,
    Exception: _unexpected,
}
