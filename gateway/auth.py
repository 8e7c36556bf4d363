"""Authentication of every API call (X-API-KEY, or a customer token for the reads the
widgets make: gateway/portal/access.py) and the request id its log lines carry."""

from __future__ import annotations

import itertools
import uuid

import structlog
from litestar import Request

from gateway.context import header, services
from gateway.errors import ApiError
from gateway.portal.access import CORS_PATHS, check_token_read

__all__ = ["PUBLIC_PATHS", "authenticate"]

# The pages and the widgets' script are public: what they show comes from calls that
# authenticate (a token or an operator's key).
PUBLIC_PATHS = ("/health", "/ready", "/schema", "/widgets/", "/portal", "/console",
                "/favicon.ico")
# Paths that check the key themselves, to answer in their own error shape (GraphQL).
SELF_AUTHENTICATED = ("/graphql",)


# Request ids: random per process, then counted (uuid4 per request cost 3 % under load).
_ID_PREFIX = uuid.uuid4().hex[:22]
_ids = itertools.count()


async def authenticate(request: Request) -> None:
    """Every API call needs X-API-KEY; its environment scopes all data of the request."""
    scope = request.scope
    path = scope["path"]
    asked = header(scope, b"x-request-id")
    # A caller's id is kept (it ties our logs to theirs) if it is a sane token; else ours.
    ok_id = asked is not None and 0 < len(asked) <= 128 and asked.isascii() and asked.isprintable()
    request_id = asked if ok_id else f"{_ID_PREFIX}{next(_ids):010x}"
    state = scope.setdefault("state", {})  # type: ignore[typeddict-item]
    state["request_id"] = request_id
    structlog.contextvars.bind_contextvars(request_id=request_id)
    if path.startswith(PUBLIC_PATHS) or path in SELF_AUTHENTICATED or path == "/":
        return
    method = scope["method"]
    if method == "OPTIONS" and path in CORS_PATHS:
        return  # a browser's preflight carries no credentials (gateway/portal/pages.py)
    key = header(scope, b"x-api-key")
    if not key:
        bearer = header(scope, b"authorization")
        if bearer and bearer[:7].lower() == "bearer ":
            svc = request.app.state
            claims = check_token_read(method, path, request.query_params, bearer[7:].strip(),
                                      svc.feed.tokens, svc.token_reads,
                                      svc.services.clock.now_ms() // 1000)
            state["environment"] = claims.environment
            state["token"] = claims
            return
        raise ApiError(401, "Unauthenticated", "the X-API-KEY header is missing", "X-API-KEY")
    env = services(request).catalog.environment_of(key)
    if env is None:
        raise ApiError(401, "Unauthenticated", "the API key is not valid", "X-API-KEY")
    asked = header(scope, b"x-environment-id")
    if asked is not None and asked != env:
        raise ApiError(403, "Forbidden",
                       "X-ENVIRONMENT-ID does not match the API key's environment",
                       "X-ENVIRONMENT-ID")
    state["environment"] = env
