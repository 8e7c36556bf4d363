"""The one route at /graphql: HTTP (POST, and GET for queries) to endpoint.py, the
websocket (graphql-transport-ws) to realtime.py. One raw ASGI handler for both, since
Litestar gives an ASGI handler a path of its own (and the HTTP side is raw ASGI for
speed)."""

from __future__ import annotations

from typing import Any

from litestar import WebSocket, asgi

from gateway.graphql import endpoint, realtime

__all__ = ["ROUTES"]


@asgi("/graphql", copy_scope=False)
async def graphql(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "websocket":
        await realtime.serve(WebSocket(scope, receive, send))
    else:
        await endpoint.serve_http(scope, receive, send)


ROUTES = [graphql]
