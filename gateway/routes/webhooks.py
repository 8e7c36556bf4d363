"""Webhook endpoints, deliveries, attempts and replay (an extension API; docs/webhooks.md).
The work is done by `webhooks.Webhooks` (app.state.webhooks); this module is the wire."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, TypeVar

import msgspec
from litestar import Request, Response, delete, get, patch, post
from litestar.params import FromPath, FromQuery
from msgspec import UNSET, UnsetType

from engine.domain.constraints import Url
from gateway.context import environment, ok
from gateway.errors import ApiError, bad_input
from gateway.openapi import request_body
from gateway.wire import PageQuery, ascii_int, decode_body, iso, limit_in, parse_time
from persistence.pages import parse_cursor
from webhooks import Refusal, Webhooks
from webhooks.endpoints import Endpoint
from webhooks.tables import DEAD, DELIVERED, PENDING, Attempt, Delivery

__all__ = ["ROUTES"]

_BASE = "/api/v1/webhooks/endpoints"
_ONE = _BASE + "/{endpoint_id:str}"
_STATUSES = (PENDING, DELIVERED, DEAD)
T = TypeVar("T")


class EndpointCreate(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    url: Url
    event_types: list[str] = []
    enabled: bool = True
    description: str | None = None
    secret: str | None = None


class EndpointUpdate(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    # Absent (UNSET) leaves a field alone; null clears the description.
    url: Url | UnsetType = UNSET
    event_types: list[str] | UnsetType = UNSET
    enabled: bool | UnsetType = UNSET
    description: str | None | UnsetType = UNSET


class SecretRotate(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    secret: str | None = None


class ReplaySince(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    since: str
    until: str | None = None


def _webhooks(request: Request) -> Webhooks:
    return request.app.state.webhooks


async def _call(operation: Awaitable[T]) -> T:
    try:
        return await operation
    except Refusal as refusal:
        raise _api_error(refusal) from None


def _api_error(refusal: Refusal) -> ApiError:
    headers = {"Retry-After": "60"} if refusal.status == 429 else None
    return ApiError(refusal.status, refusal.code, refusal.message, refusal.field, headers)


def _endpoint(request: Request, endpoint_id: str) -> Endpoint:
    try:
        return _webhooks(request).endpoint(environment(request), endpoint_id)
    except Refusal as refusal:
        raise _api_error(refusal) from None


def endpoint_json(webhooks: Webhooks, e: Endpoint, *, with_secret: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": e.id,
        "url": e.url,
        "description": e.description,
        "eventTypes": list(e.event_types),
        "enabled": e.enabled,
        "disabledReason": e.disabled_reason,
        "previousSecretExpiresAt": iso(e.previous_secret_until),
        "pendingDeliveries": webhooks.pending(e.id),
        "createdAt": iso(e.created_at),
        "updatedAt": iso(e.updated_at),
    }
    if with_secret:
        # Shown when it is created or rotated, never again: it is what proves to receivers
        # that a request comes from this server.
        out["secret"] = e.secret
    return out


def delivery_json(endpoint_id: str, d: Delivery) -> dict[str, Any]:
    return {
        "id": str(d.id),
        "endpointId": endpoint_id,
        "eventId": d.event_id,
        "eventType": d.event_type,
        "customerId": d.customer_id,
        "status": d.status,
        "attempts": d.attempts,
        # Null while pending means: queued behind an earlier delivery for the same customer.
        "nextAttemptAt": iso(d.next_attempt_at),
        "lastAttemptAt": iso(d.last_attempt_at),
        "lastStatusCode": d.last_status_code,
        "lastLatencyMs": d.last_latency_ms,
        "lastError": d.last_error,
        "createdAt": iso(d.created_at),
        "deliveredAt": iso(d.delivered_at),
        "replayOf": None if d.replay_of is None else str(d.replay_of),
    }


def attempt_json(a: Attempt) -> dict[str, Any]:
    return {
        "id": str(a.id),
        "deliveryId": str(a.delivery_id),
        "attempt": a.attempt,
        "startedAt": iso(a.started_at),
        "statusCode": a.status_code,
        "latencyMs": a.latency_ms,
        "error": a.error,
        "response": a.response,
    }


def _cursor(value: str | None, field: str) -> int | None:
    if value is None:
        return None
    cursor = ascii_int(value)
    if cursor is None:
        raise bad_input("is not a cursor this server issued", field)
    return cursor


def _delivery_id(value: str) -> int:
    delivery = ascii_int(value)
    if delivery is None:
        raise ApiError(404, "WebhookDeliveryNotFound", f"delivery {value!r} was not found",
                       "deliveryId")
    return delivery


def _page(items: list[Any], size: int, after: str | None,
          before: str | None) -> tuple[list[Any], dict[str, str | None]]:
    """A newest-first page from `size + 1` items read by id (Tables.deliveries): the
    extra item, if there is one, only says that there is more in that direction."""
    more = len(items) > size
    if before is not None:
        items = items[-size:]  # read upwards from `before`: the extra one is the newest
    else:
        items = items[:size]
    ids = [str(i.id) for i in items]
    if before is not None:
        return items, {"next": ids[-1] if ids else None, "prev": ids[0] if ids and more else None}
    return items, {"next": ids[-1] if ids and more else None,
                   "prev": ids[0] if ids and after else None}


# -- endpoints ---------------------------------------------------------------------------


@post(_BASE, opt=request_body(EndpointCreate))
async def create_endpoint(request: Request) -> Response:
    body = await decode_body(request, EndpointCreate)
    webhooks = _webhooks(request)
    e = await _call(webhooks.create_endpoint(
        environment(request), url=body.url, event_types=body.event_types,
        description=body.description, enabled=body.enabled, secret=body.secret))
    return ok(endpoint_json(webhooks, e, with_secret=True))


@get(_BASE)
async def list_endpoints(request: Request, limit: FromQuery[int | None] = None,
                         after: FromQuery[str | None] = None,
                         before: FromQuery[str | None] = None) -> Response:
    size = limit_in(limit)
    webhooks = _webhooks(request)
    items = webhooks.endpoints(environment(request))
    keys = [f"{e.created_at}.{e.id}" for e in items]
    for value, field in ((after, "after"), (before, "before")):
        if value is not None:
            parse_cursor(value, field)
    if after is not None:
        start = next((i for i, k in enumerate(keys) if _later(k, after)), len(items))
        page = items[start : start + size]
        more = start + size < len(items)
        prev = keys[start] if page else None
        nxt = keys[start + len(page) - 1] if page and more else None
    elif before is not None:
        end = next((i for i, k in enumerate(keys) if not _later(before, k)), len(items))
        start = max(0, end - size)
        page = items[start:end]
        prev = keys[start] if page and start > 0 else None
        nxt = keys[end - 1] if page else None
    else:
        page = items[:size]
        prev = None
        nxt = keys[size - 1] if len(items) > size else None
    return ok([endpoint_json(webhooks, e) for e in page],
              pagination={"next": nxt, "prev": prev})


def _later(key: str, than: str) -> bool:
    """Creation-order comparison of two `createdAt.id` cursors."""
    a_created, _, a_id = key.partition(".")
    b_created, _, b_id = than.partition(".")
    return (int(a_created), a_id) > (int(b_created), b_id)


@get(_ONE)
async def get_endpoint(request: Request, endpoint_id: FromPath[str]) -> Response:
    return ok(endpoint_json(_webhooks(request), _endpoint(request, endpoint_id)))


@patch(_ONE, opt=request_body(EndpointUpdate))
async def update_endpoint(request: Request, endpoint_id: FromPath[str]) -> Response:
    body = await decode_body(request, EndpointUpdate)
    webhooks = _webhooks(request)
    e = await _call(webhooks.update_endpoint(
        environment(request), endpoint_id, url=body.url, event_types=body.event_types,
        enabled=body.enabled, description=body.description))
    return ok(endpoint_json(webhooks, e))


@delete(_ONE, status_code=200)
async def delete_endpoint(request: Request, endpoint_id: FromPath[str]) -> Response:
    await _call(_webhooks(request).delete_endpoint(environment(request), endpoint_id))
    return ok({"id": endpoint_id, "deleted": True})


@post(_ONE + "/rotate-secret", opt=request_body(SecretRotate))
async def rotate_secret(request: Request, endpoint_id: FromPath[str]) -> Response:
    body = await decode_body(request, SecretRotate)
    webhooks = _webhooks(request)
    e = await _call(webhooks.rotate_secret(environment(request), endpoint_id, body.secret))
    return ok(endpoint_json(webhooks, e, with_secret=True))


# -- deliveries and attempts -------------------------------------------------------------


@get(_ONE + "/deliveries")
async def list_deliveries(request: Request, endpoint_id: FromPath[str], page: PageQuery,
                          status: FromQuery[str | None] = None) -> Response:
    size, after, before = page.limit, page.after, page.before
    if status is not None and status not in _STATUSES:
        raise bad_input(f"must be one of {', '.join(_STATUSES)}", "status")
    items = await _call(_webhooks(request).deliveries(
        environment(request), endpoint_id, status=status, after=_cursor(after, "after"),
        before=_cursor(before, "before"), limit=size + 1))
    items, pagination = _page(items, size, after, before)
    return ok([delivery_json(endpoint_id, d) for d in items], pagination=pagination)


@get(_ONE + "/deliveries/{delivery_id:str}")
async def get_delivery(request: Request, endpoint_id: FromPath[str],
                       delivery_id: FromPath[str]) -> Response:
    d, attempts, payload = await _call(_webhooks(request).delivery(
        environment(request), endpoint_id, _delivery_id(delivery_id)))
    out = delivery_json(endpoint_id, d)
    out["attemptsList"] = [attempt_json(a) for a in attempts]
    out["payload"] = None if payload is None else msgspec.json.decode(payload)
    return ok(out)


@post(_ONE + "/deliveries/{delivery_id:str}/replay")
async def replay_delivery(request: Request, endpoint_id: FromPath[str],
                          delivery_id: FromPath[str]) -> Response:
    d = await _call(_webhooks(request).replay_delivery(
        environment(request), endpoint_id, _delivery_id(delivery_id)))
    return ok(delivery_json(endpoint_id, d))


@get(_ONE + "/attempts")
async def list_attempts(request: Request, endpoint_id: FromPath[str],
                        page: PageQuery) -> Response:
    size, after, before = page.limit, page.after, page.before
    items = await _call(_webhooks(request).attempts(
        environment(request), endpoint_id, after=_cursor(after, "after"),
        before=_cursor(before, "before"), limit=size + 1))
    items, pagination = _page(items, size, after, before)
    return ok([attempt_json(a) for a in items], pagination=pagination)


@post(_ONE + "/replay", opt=request_body(ReplaySince))
async def replay_since(request: Request, endpoint_id: FromPath[str]) -> Response:
    body = await decode_body(request, ReplaySince)
    since = parse_time(body.since, "since")
    until = parse_time(body.until, "until")
    assert since is not None
    if until is not None and until <= since:
        raise bad_input("must be after since", "until")
    result = await _call(_webhooks(request).replay_since(environment(request), endpoint_id,
                                                         since, until))
    return ok({"queued": result.queued, "alreadyPending": result.already_pending,
               "resumeFrom": iso(result.resume_from)})


ROUTES = [create_endpoint, list_endpoints, get_endpoint, update_endpoint, delete_endpoint,
          rotate_secret, list_deliveries, get_delivery, replay_delivery, list_attempts,
          replay_since]
