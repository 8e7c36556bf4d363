"""Stigg's Edge JSON API: the GET reads Stigg's SDKs make to `edge.api.stigg.io` by
default, answered by the same server (issue 17).

    GET /v1/c/{customerId}/entitlements-state.json?resourceId=           GetEntitlementsState
    GET /v1/c/{customerId}/entitlements.json?resourceId=                 GetEntitlements
    GET /v1/c/{customerId}/entitlements.json?featureId=&requestedUsage=  GetEntitlement
    GET /v1/c/{customerId}/subscriptions.json?resourceId=|resourceIds=   GetActiveSubscriptionsList
    GET /v1/paywall.json?billingCountryCode=&fetchAllCountriesPrices=&includeHiddenPlans=
    GET /v1/p/{productId}/paywall.json?…                                 GetPaywall
    GET /v1/config/server-sdk-configuration.json                         GetSdkConfiguration

Each read executes, through the GraphQL endpoint (the same schema, resolvers, document
cache and error mapping), the document Stigg's Python client (stigg-api-client-v2 6.25.0)
sends for the same read over GraphQL, with variables from the path and the query string:
the body is exactly that operation's `{"data": {<rootField>: …}}` (or `{"data": null,
"errors": [...]}` with Stigg's codes), so an Edge read can never differ from the
GraphQL operation. Query parameters the SDKs leave unset may arrive as the literal text
`undefined` (the Node SDK's `fetchAllCountriesPrices=undefined`): that, and an empty
value, is absent. Booleans are `true`/`false`; anything else is a BadUserInput naming the
variable, as GraphQL answers it.

The API key is the same `X-API-KEY` as REST and GraphQL (the app's authentication
hook); without one, or with an unknown one, the answer is HTTP 401 with
`{"data": null, "errors": [{"extensions": {"code": "Unauthenticated"}}]}`, which the Node
SDK reads as `apiKeyInvalid`.

Pointing the SDKs at it: the Python clients take `edge_api_url="http://<creditd>"` (with
`enable_edge=True`, their default); the Node SDK takes `baseEdgeUri: "http://<creditd>"`
(without it, a `localhost` baseUri means port 3060 and any other host `edge.<host>`).
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

import msgspec
from litestar import Request, Response, Router, get
from litestar.params import FromPath

from engine.domain.errors import DomainError
from gateway.graphql import endpoint, recorded

__all__ = ["DOCUMENTS", "ROUTES"]

_encode = msgspec.json.Encoder(decimal_format="number").encode

# The documents stigg-api-client-v2 6.25.0 sends over GraphQL for the same reads (its
# models validate the Edge answers with these selections).
DOCUMENTS: dict[str, str] = {name: recorded.queries()[name] for name in (
    "GetEntitlementsState", "GetEntitlements", "GetEntitlement", "GetActiveSubscriptionsList",
    "GetPaywall", "GetSdkConfiguration")}


_ABSENT = ("", "undefined")


def _param(request: Request, name: str) -> str | None:
    value = request.query_params.get(name)
    return None if value is None or value in _ABSENT else value


def _boolean(request: Request, name: str) -> Any:
    value = _param(request, name)
    # Anything else goes to GraphQL as it came, which refuses it naming the variable.
    # (Python clients send their booleans as `True` / `False`.)
    return {"true": True, "false": False}.get(value.lower(), value) if value is not None \
        else None


def _number(request: Request, name: str) -> Any:
    value = _param(request, name)
    if value is None:
        return None
    try:
        number = Decimal(value)
    except InvalidOperation:
        return value  # refused by GraphQL's Float, naming the variable
    return number if number.is_finite() else value


def _strings(request: Request, name: str) -> list[str] | None:
    """A list parameter, repeated (`a=1&a=2`, as httpx sends a list) or comma-separated."""
    values = [part for raw in request.query_params.getall(name, [])
              for part in raw.split(",") if part and part not in _ABSENT]
    return values or None


def _present(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


async def _read(request: Request, operation: str, variables: dict[str, Any]) -> Response:
    return await endpoint.run(request, DOCUMENTS[operation], operation, variables,
                               read_only=True)


@get("/c/{customer_id:str}/entitlements-state.json")
async def entitlements_state(request: Request, customer_id: FromPath[str]) -> Response:
    return await _read(request, "GetEntitlementsState", {"query": _present({
        "customerId": customer_id, "resourceId": _param(request, "resourceId")})})


@get("/c/{customer_id:str}/entitlements.json")
async def entitlements(request: Request, customer_id: FromPath[str]) -> Response:
    """One feature's check with `featureId` (`{"entitlement": …}`, as the Python client
    reads it for `get_entitlement`), else the customer's entitlements
    (`{"entitlements": […]}`, for `get_entitlements`)."""
    query = _present({"customerId": customer_id, "resourceId": _param(request, "resourceId")})
    feature_id = _param(request, "featureId")
    if feature_id is None:
        return await _read(request, "GetEntitlements", {"query": query})
    options = _present({"requestedUsage": _number(request, "requestedUsage"),
                        "requestedValues": _strings(request, "requestedValues")})
    return await _read(request, "GetEntitlement", {"query": {
        **query, "featureId": feature_id, **({"options": options} if options else {})}})


@get("/c/{customer_id:str}/subscriptions.json")
async def subscriptions(request: Request, customer_id: FromPath[str]) -> Response:
    return await _read(request, "GetActiveSubscriptionsList", {"input": _present({
        "customerId": customer_id, "resourceId": _param(request, "resourceId"),
        "resourceIds": _strings(request, "resourceIds")})})


def _paywall_input(request: Request, product_id: str | None) -> dict[str, Any]:
    return _present({
        "productId": product_id,
        "billingCountryCode": _param(request, "billingCountryCode"),
        "fetchAllCountriesPrices": _boolean(request, "fetchAllCountriesPrices"),
        "includeHiddenPlans": _boolean(request, "includeHiddenPlans")})


@get("/paywall.json")
async def paywall(request: Request) -> Response:
    return await _read(request, "GetPaywall", {"input": _paywall_input(request, None)})


@get("/p/{product_id:str}/paywall.json")
async def product_paywall(request: Request, product_id: FromPath[str]) -> Response:
    return await _read(request, "GetPaywall", {"input": _paywall_input(request, product_id)})


@get("/config/server-sdk-configuration.json")
async def sdk_configuration(request: Request) -> Response:
    return await _read(request, "GetSdkConfiguration", {})


def _refused(request: Request, exc: DomainError) -> Response:
    """A refusal before the read ran (the API key: 401 Unauthenticated), in GraphQL's
    error shape with its HTTP status."""
    code = endpoint.stigg_code(exc)
    trace = request.scope.get("state", {}).get("request_id", "")  # type: ignore[union-attr]
    body = {"data": None, "errors": [{"message": exc.message,
                                      "extensions": {"code": code, "traceId": trace}}]}
    return Response(content=_encode(body), status_code=exc.status,
                    media_type="application/json")


ROUTES = [Router(path="/v1", route_handlers=[
    entitlements_state, entitlements, subscriptions, paywall, product_paywall,
    sdk_configuration], exception_handlers={DomainError: _refused})]
