"""What a route handler reaches through its request: the process's services (store,
runtime, catalog, clock, settings), the environment its API key belongs to, and the
response envelope. Kept apart from `gateway.app`, which mounts the routes, so that route
modules never import the module that imports them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
from litestar import Request, Response

from engine.domain.context import Domain
from engine.runtime import Runtime
from gateway.config import Settings
from persistence.documents import Catalog

__all__ = ["Services", "domain", "environment", "header", "ok", "services"]

_encode = msgspec.json.Encoder(decimal_format="number").encode


@dataclass
class Services:
    settings: Settings
    store: Any
    runtime: Runtime
    catalog: Catalog
    # The one clock of the process (the runtime's too): billing periods, trials, usage
    # windows and promotions read `now` from it, so tests can move time (CREDITD_CLOCK).
    clock: Any = None
    # Notices for the live feed and GraphQL subscriptions (Domain's hooks of these names).
    on_entitlements_changed: Callable[[str, str], None] | None = None
    on_package_published: Callable[[str, dict[str, Any]], None] | None = None
    # The domain layer's view of the same services (engine/domain): what handlers call.
    domain: Domain = field(init=False)

    def __post_init__(self) -> None:
        self.domain = Domain(store=self.store, runtime=self.runtime, documents=self.catalog,
                             clock=self.clock, tax_rates=self.settings.tax_rates,
                             on_entitlements_changed=self.on_entitlements_changed,
                             on_package_published=self.on_package_published)


def ok(data: Any, status: int = 200, pagination: dict[str, Any] | None = None) -> Response:
    body: dict[str, Any] = {"data": data}
    if pagination is not None:
        body["pagination"] = pagination
    return Response(content=_encode(body), status_code=status, media_type="application/json")


def services(request: Request) -> Services:
    return request.app.state.services


def domain(request: Request) -> Domain:
    return request.app.state.services.domain


def environment(request: Request) -> str:
    # The scope's state dict itself: `request.state` builds a new State (with a lock) on
    # every access, which showed up at 8 % of the server's time under load.
    return request.scope["state"]["environment"]


def header(scope: Any, name: bytes) -> str | None:
    """The first value of the request header `name` (lower case, as ASGI servers give
    names), or None. Read from the scope's list: Litestar's `request.headers` builds a
    case-insensitive multidict of all of them, 11 µs a request under load (py-spy)."""
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None

