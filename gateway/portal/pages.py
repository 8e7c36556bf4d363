"""The routes a person's browser uses: `/` (where to go), `/portal` (a customer's credits,
opened with a customer token), `/console` (operators, with an API key), the widgets' files
at `/widgets/…`, and the portal's token exchange `GET /api/v1/portal/session`.

The pages hold no data and no secrets: their scripts fetch everything with the token or
key the person holds (gateway/portal/access.py decides what a token may read). They are
served with a Content-Security-Policy that allows scripts from this server only, so a
string that slipped into the markup could not run; the widgets write data as text anyway.
"""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get
from litestar.handlers import asgi

from gateway.context import header, ok
from gateway.errors import ApiError
from gateway.portal.access import CORS_PATHS
from gateway.portal.assets import Asset, assets
from gateway.wire import iso

__all__ = ["ROUTES", "cors_headers"]

_CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self' ws: wss:; base-uri 'none'; "
        "form-action 'self'; object-src 'none'; frame-ancestors {}")
_PAGE_HEADERS = [(b"x-content-type-options", b"nosniff"),
                 (b"referrer-policy", b"no-referrer"),
                 (b"cache-control", b"no-store")]


async def _send(scope: Any, send: Any, asset: Asset, headers: list[tuple[bytes, bytes]]) -> None:
    """The asset, gzipped when the client takes it, 304 when it has this version."""
    base = [(b"content-type", asset.content_type.encode()), (b"etag", asset.etag.encode()),
            (b"vary", b"accept-encoding"), *headers]
    if asset.etag in (header(scope, b"if-none-match") or ""):
        await send({"type": "http.response.start", "status": 304, "headers": base})
        await send({"type": "http.response.body", "body": b""})
        return
    body = asset.body
    if asset.gzipped is not None and "gzip" in (header(scope, b"accept-encoding") or ""):
        body = asset.gzipped
        base.append((b"content-encoding", b"gzip"))
    base.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": 200, "headers": base})
    await send({"type": "http.response.body",
                "body": b"" if scope["method"] == "HEAD" else body})


async def _not_found(send: Any, message: str) -> None:
    body = (b'{"statusCode":404,"code":"NotFound","message":"' + message.encode() + b'"}')
    await send({"type": "http.response.start", "status": 404,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def _check_method(scope: Any) -> None:
    if scope["method"] not in ("GET", "HEAD"):
        raise ApiError(405, "MethodNotAllowed", "use GET")


@asgi("/widgets", is_mount=True, copy_scope=True)
async def widgets(scope: Any, receive: Any, send: Any) -> None:
    """The widgets' files. A URL with `?v=` names one version of them: kept for a year;
    without it, for an hour and then revalidated (ETag). Any site may load them (the
    widgets are embedded in the merchant's own pages)."""
    _check_method(scope)
    # Litestar hands a mount the path under it, with a "/" added at the end.
    name = scope["path"].removeprefix("/widgets").strip("/")
    asset = assets().static.get(name)
    if asset is None:
        await _not_found(send, "no such widget file")
        return
    versioned = b"v=" in scope.get("query_string", b"")
    cache = b"public, max-age=31536000, immutable" if versioned else b"public, max-age=3600"
    await _send(scope, send, asset, [(b"cache-control", cache),
                                     (b"access-control-allow-origin", b"*"),
                                     (b"cross-origin-resource-policy", b"cross-origin"),
                                     (b"x-content-type-options", b"nosniff")])


async def _page(scope: Any, send: Any, name: str, frame_ancestors: str) -> None:
    _check_method(scope)
    page = assets().pages.get(name)
    if page is None:  # a checkout without the pages (never a release)
        await _not_found(send, "this page is not installed")
        return
    csp = _CSP.format(frame_ancestors).encode()
    await _send(scope, send, page,
                [*_PAGE_HEADERS, (b"content-security-policy", csp)])


@asgi("/portal", copy_scope=True)
async def portal(scope: Any, receive: Any, send: Any) -> None:
    """A customer's credits, opened as `/portal?token=…` (full page or in a frame, from
    the sites CREDITD_PORTAL_FRAME_ANCESTORS names). Its script takes the token out of
    the address bar before anything else; the page is never cached (its URL held one)."""
    settings = scope["app"].state.services.settings
    await _page(scope, send, "portal", settings.portal_frame_ancestors)


@asgi("/console", copy_scope=True)
async def console(scope: Any, receive: Any, send: Any) -> None:
    """Operators: sign in with an API key (kept in the tab's session storage), find a
    customer, see the widgets, grant and void. Never framed (clickjacking)."""
    await _page(scope, send, "console", "'none'")


@asgi("/", copy_scope=True)
async def index(scope: Any, receive: Any, send: Any) -> None:
    """A person (a browser asks for HTML) gets a page of links; a program gets them as
    JSON."""
    _check_method(scope)
    if "text/html" in (header(scope, b"accept") or ""):
        await _page(scope, send, "index", "'none'")
        return
    body = (b'{"name":"creditd","links":{"console":"/console","portal":"/portal?token=...",'
            b'"apiDocs":"/schema/swagger","openapi":"/schema/openapi.json",'
            b'"graphql":"/graphql","health":"/health"}}')
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


@asgi("/favicon.ico", copy_scope=True)
async def favicon(scope: Any, receive: Any, send: Any) -> None:
    """The pages link their icon; this answers browsers that ask anyway, without a 404."""
    await _send(scope, send, assets().static["icon.svg"],
                [(b"cache-control", b"public, max-age=86400")])


@get("/api/v1/portal/session")
async def session(request: Request) -> Response:
    """The portal's token exchange: what the token grants (its customer, resource and
    expiry), or 401 `TokenExpired` / `Unauthenticated` — so the page can say at once
    whether it can show anything."""
    claims = request.scope["state"].get("token")
    if claims is None:
        raise ApiError(401, "Unauthenticated", "send a customer token as "
                       "'Authorization: Bearer <token>'", "Authorization")
    return ok({"customerId": claims.customer_id, "resourceId": claims.resource_id,
               "expiresAt": iso(claims.expires_at_s * 1000)})


_CORS = [(b"access-control-allow-origin", b"*"),
         (b"access-control-expose-headers", b"retry-after, x-request-id")]
_PREFLIGHT = [(b"access-control-allow-methods", b"GET, OPTIONS"),
              (b"access-control-allow-headers", b"authorization, content-type, x-request-id"),
              (b"access-control-max-age", b"600")]


def cors_headers(message: Any, scope: Any) -> None:
    """The token reads may be called from a page on another origin (the merchant's app
    embedding the widgets): they answer any origin. That shares nothing a cookie would:
    the token travels in a header the page itself sets."""
    if message["type"] == "http.response.start" and scope.get("path") in CORS_PATHS:
        extra = _CORS + (_PREFLIGHT if scope.get("method") == "OPTIONS" else [])
        message["headers"] = [*message.get("headers", []), *extra]


ROUTES = [widgets, portal, console, index, favicon, session]
