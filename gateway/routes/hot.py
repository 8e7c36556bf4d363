"""Hot POST routes as raw ASGI handlers.

Litestar's per-request machinery for a route (the signature model, the before-request
hook, `Request.body()`'s stream, the Response object and its ASGI response) was most of
the server's time for the endpoints every client calls all day — the consumption, the
usage reports, the events — under load (py-spy; scripts/bench_http.py and
scripts/bench_graphql.py). `hot_post` serves such a route with only what it needs: the
method check, the same authentication, the body read with the same size limit, the route's
own decoding and domain call, and the JSON answer written directly. Errors are raised as in
any route and answered by the app's exception handlers; the app's middleware (admission,
metrics) wraps it as it wraps every route.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from litestar import Request, asgi
from litestar.handlers import ASGIRouteHandler

from gateway.auth import authenticate
from gateway.context import services
from gateway.errors import ApiError
from gateway.openapi import request_body

__all__ = ["hot_post", "read_body"]

_OK_HEADERS = [(b"content-type", b"application/json")]
_encode = msgspec.json.Encoder(decimal_format="number").encode


async def read_body(receive: Any, limit: int) -> bytes:
    """The request's body, refused past `limit` bytes (413) before more is read."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise ApiError(400, "BadUserInput", "the client went away")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "PayloadTooLarge", f"the body is over {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


def hot_post(path: str, body: type,
             ) -> Callable[[Callable[[Request, bytes], Awaitable[Any]]], ASGIRouteHandler]:
    """A POST route at `path` whose handler takes the request and its raw body (decoded by
    the handler with `decode_body(request, body, raw)`, which `body` declares for the
    OpenAPI document) and returns the answer's `data`, sent as `{"data": …}` with 200."""

    def route(handler: Callable[[Request, bytes], Awaitable[Any]]) -> ASGIRouteHandler:
        async def serve(scope: Any, receive: Any, send: Any) -> None:
            request: Request = Request(scope, receive, send)
            if scope["method"] != "POST":
                raise ApiError(405, "MethodNotAllowed", "use POST")
            await authenticate(request)
            raw = await read_body(receive, services(request).settings.body_bytes_max)
            answer = _encode({"data": await handler(request, raw)})
            await send({"type": "http.response.start", "status": 200,
                        "headers": [*_OK_HEADERS,
                                    (b"content-length", str(len(answer)).encode())]})
            await send({"type": "http.response.body", "body": answer})

        serve.__name__ = serve.__qualname__ = handler.__name__
        serve.__doc__ = handler.__doc__
        serve.__module__ = handler.__module__
        return asgi(path, copy_scope=False, opt=request_body(body))(serve)

    return route
