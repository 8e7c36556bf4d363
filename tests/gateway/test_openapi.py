"""The OpenAPI document at /schema describes every request body (gateway/openapi.py).

Handlers decode their bodies themselves, so Litestar alone documents none of them; each
route declares its body Struct and the document is completed from the declarations.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

import msgspec
from litestar import Litestar, Request, post
from litestar.testing import TestClient

from gateway import openapi
from gateway.openapi import request_body
from gateway.wire import decode_body

# Operations that take a body, one or more per area (the synchronous consumption is a raw
# ASGI route, which Litestar leaves out of its document).
WITH_BODIES = {
    ("/api/v1/credits/consumption", "post"): "ConsumptionCreate",
    ("/api/v1/credits/consumption/async", "post"): "ConsumptionBatch",
    ("/api/v1/credits/grants", "post"): "GrantCreate",
    ("/api/v1/credits/reservations/{reservation_id}/release", "post"): "ReleaseBody",
    ("/api/v1/credits/auto-recharge", "put"): "SaveBody",
    ("/api/v1/customers", "post"): "CustomerCreate",
    ("/api/v1/customers/{customer_id}/tokens", "post"): "TokenCreate",
    ("/api/v1/features", "post"): "FeatureCreate",
    ("/api/v1/usage", "post"): "UsageBody",
    ("/api/v1/events", "post"): "EventsBody",
    ("/api/v1/subscriptions", "post"): "ProvisionBody",
    ("/api/v1/plans", "post"): "PackageCreate",
    ("/api/v1/webhooks/endpoints", "post"): "EndpointCreate",
    ("/api/v1/coupons", "post"): "CouponCreate",
}


def _resolve(document: dict[str, Any], ref: str) -> dict[str, Any]:
    assert ref.startswith("#/components/schemas/"), ref
    return document["components"]["schemas"][ref.rsplit("/", 1)[1]]


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [node["$ref"]] if "$ref" in node else [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def test_the_document_describes_every_request_body(make_server: Callable[..., Any]) -> None:
    key = "openapi-key-" + secrets.token_hex(8)
    server = make_server(api_keys=key).start()
    with server.http(key) as http:
        document = http.get("/schema/openapi.json").json()
    for (path, method), name in WITH_BODIES.items():
        operation = document["paths"][path][method]
        schema = operation["requestBody"]["content"]["application/json"]["schema"]
        assert schema["$ref"].endswith(name), (path, schema)
    # Every reference resolves, and a body's fields are there with their wire names.
    for ref in _refs(document):
        _resolve(document, ref)
    grant = document["components"]["schemas"]["GrantCreate"]
    assert set(grant["required"]) == {"amount", "currencyId", "customerId", "displayName",
                                      "grantType"}
    assert grant["additionalProperties"] is False
    # Amounts are JSON numbers on the wire (decoded exactly), not strings.
    assert grant["properties"]["amount"] == {"type": "number"}
    assert grant["properties"]["grantType"] == {"enum": ["PAID", "PROMOTIONAL"]}


class _Declared(msgspec.Struct):
    a: int


class _Decoded(msgspec.Struct):
    b: int


def test_a_route_must_decode_the_body_it_declares() -> None:
    """A route whose declaration and decoding disagree fails on its first request (the
    document would describe a body the route refuses), where a matching one works."""
    @post("/right", opt=request_body(_Declared))
    async def right(request: Request) -> dict[str, int]:
        return {"a": (await decode_body(request, _Declared)).a}

    @post("/wrong", opt=request_body(_Declared))
    async def wrong(request: Request) -> dict[str, int]:
        return {"b": (await decode_body(request, _Decoded)).b}

    app = Litestar([right, wrong])
    openapi.install(app)
    with TestClient(app) as client:
        assert client.post("/right", json={"a": 1}).json() == {"a": 1}
        assert client.post("/wrong", json={"b": 1}).status_code == 500
        document = client.get("/schema/openapi.json").json()
    assert document["paths"]["/right"]["post"]["requestBody"]["content"][
        "application/json"]["schema"] == {"$ref": "#/components/schemas/_Declared"}


def test_bounds_are_checked_while_decoding_and_shown_in_the_document(
        make_server: Callable[..., Any]) -> None:
    """Constrained fields (engine/domain/constraints.py): msgspec refuses a value out of
    bounds while it decodes the body — a 400 naming the field, nothing applied — and the
    document shows each bound."""
    key = "bounds-key-" + secrets.token_hex(8)
    server = make_server(api_keys=key).start()
    with server.http(key) as http:
        document = http.get("/schema/openapi.json").json()
        schemas = document["components"]["schemas"]
        assert schemas["CouponCreate"]["properties"]["id"] == {
            "type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[^/]+$",
            "description": "1-255 characters without '/'"}
        assert schemas["ConsumptionCreate"]["properties"]["idempotencyKey"]["maxLength"] == 255
        assert schemas["GrantCreate"]["properties"]["priority"]["maximum"] == 100
        usages = schemas["UsageBody"]["properties"]["usages"]
        assert (usages["minItems"], usages["maxItems"]) == (1, 1000)
        amounts_off = schemas["CouponCreate"]["properties"]["amountsOff"]
        [ref] = _refs(amounts_off)
        amount_off = _resolve(document, ref)
        assert amount_off["properties"]["currency"]["pattern"] == "^[A-Za-z]{3}$"

        assert http.post("/api/v1/customers", json={"id": "c1"}).status_code == 200
        assert http.post("/api/v1/credits/custom-currencies",
                         json={"id": "tok", "displayName": "T"}
                         ).status_code == 200
        cases = [
            ("/api/v1/customers", {"id": "a/b"}, "id"),
            ("/api/v1/coupons", {"id": "x" * 256, "name": "X", "percentOff": 10}, "id"),
            ("/api/v1/coupons", {"id": "c", "name": "C", "amountsOff": [
                {"amount": 1, "currency": "dollars"}]}, "amountsOff[0].currency"),
            ("/api/v1/credits/grants", {"customerId": "c1", "currencyId": "tok", "amount": 5,
                                        "displayName": "G", "grantType": "PAID",
                                        "priority": 101}, "priority"),
            ("/api/v1/credits/consumption", {"customerId": "c1", "currencyId": "tok",
                                             "amount": 1, "idempotencyKey": "k" * 256},
             "idempotencyKey"),
            ("/api/v1/credits/consumption/async", {"consumptions": []}, "consumptions"),
            ("/api/v1/usage", {"usages": []}, "usages"),
            ("/api/v1/events", {"events": [{"customerId": "c1", "eventName": "",
                                            "idempotencyKey": "e"}]}, "events[0].eventName"),
        ]
        for path, body, field in cases:
            r = http.post(path, json=body)
            assert r.status_code == 400, (path, r.text)
            assert r.json()["field"] == field, (path, r.text)
        # Nothing was applied: the customer has no grants, the coupons do not exist.
        grants = http.get("/api/v1/credits/grants", params={"customerId": "c1"}).json()
        assert grants["data"] == []
        assert http.get("/api/v1/coupons/c").status_code == 404
