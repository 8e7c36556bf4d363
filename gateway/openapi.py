"""The OpenAPI document served at /schema: Litestar's, plus every request body.

Handlers decode their bodies themselves (`gateway.wire.decode`: amounts as exact decimals,
errors in the API's shape naming the field), so Litestar sees no `data` parameter and
would describe no body. A handler names its body Struct on its route decorator instead
(`opt=request_body(GrantCreate)`) and decodes it with `wire.decode_body(request, GrantCreate)`,
which checks the two agree; `install` adds each declared body to the document, with the
Structs' JSON Schema (msgspec's, the same Structs that decode) under `components`. The
hot routes (the consumption, the usage reports, the events: gateway/routes/hot.py), raw
ASGI routes that Litestar leaves out of the document, are described from their decorators
the same way.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Litestar
from litestar._openapi.plugin import OpenAPIPlugin

__all__ = ["request_body", "install"]

_REF = "#/components/schemas/{name}"


def request_body(kind: type) -> dict[str, Any]:
    """A route decorator's `opt` naming the Struct its request body decodes into."""
    return {"body": kind}


def _handlers(app: Litestar) -> list[tuple[str, str, Any]]:
    """(path, method, handler) of every route handler that declares a body."""
    found = []
    for route in app.routes:
        handlers = getattr(route, "route_handlers", None) or [getattr(route, "route_handler")]
        for handler in handlers:
            if "body" not in handler.opt:
                continue
            # A raw ASGI route has no methods of its own: the one with a body takes POST.
            methods = getattr(handler, "http_methods", None) or {"POST"}
            found += [(route.path_format, m.lower(), handler) for m in methods]
    return found


def _numbers(schema: Any) -> Any:
    """msgspec describes a Decimal as a string of format "decimal"; the API takes amounts
    as JSON numbers (exact: the decoder never makes them binary floats)."""
    if isinstance(schema, dict):
        if schema.get("type") == "string" and schema.get("format") == "decimal":
            return {"type": "number"}
        return {k: _numbers(v) for k, v in schema.items()}
    if isinstance(schema, list):
        return [_numbers(v) for v in schema]
    return schema


def with_bodies(document: dict[str, Any], app: Litestar) -> dict[str, Any]:
    """`document` (Litestar's, as a dict) with the declared request bodies added."""
    declared = _handlers(app)
    kinds = list(dict.fromkeys(h.opt["body"] for _, _, h in declared))
    refs, components = msgspec.json.schema_components(kinds, ref_template=_REF)
    ref_of = dict(zip(kinds, refs, strict=True))
    paths = document.setdefault("paths", {})
    for path, method, handler in declared:
        operation = paths.setdefault(path, {}).setdefault(method, {
            "summary": (handler.fn.__doc__ or handler.handler_name).strip().split("\n")[0],
            "operationId": handler.handler_name,
            "responses": {"200": {"description": "the result, as `{\"data\": ...}`"}},
        })
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": ref_of[handler.opt["body"]]}},
        }
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    clash = set(schemas) & set(components)
    assert not clash, f"body schemas named like Litestar's own: {clash}"
    schemas.update(_numbers(components))
    return document


class _WithBodies(OpenAPIPlugin):
    # Same slots as the plugin: an instance's class can be swapped (see `install`).
    __slots__ = ()

    def provide_openapi_schema(self) -> dict[str, Any]:
        if not self._openapi_schema:
            self._openapi_schema = with_bodies(self.provide_openapi().to_schema(), self.app)
        return self._openapi_schema


def install(app: Litestar) -> None:
    """Make `app` serve its document with the request bodies. The document is built on
    its first request, as Litestar's is (75 ms: not on every start)."""
    plugin = app.plugins.get(OpenAPIPlugin)
    plugin.__class__ = _WithBodies
