"""Credits: grants (create, list, void), ledger, consumption, balance summary.

Writes go through the customer's actor (serialized, acknowledged once durable); lists read
the durable rows straight from the store, so they show exactly what was acknowledged.
"""

from __future__ import annotations

import hashlib
import uuid
from decimal import Decimal
from typing import Annotated, Any, Literal

import anyio
import msgspec
from litestar import Request, Response, asgi, get, post
from litestar.params import FromPath, FromQuery, QueryParameter

from engine.core.commands import (
    BalancesReply,
    BalanceView,
    Consume,
    ConsumeReply,
    CreateGrant,
    GetBalances,
    GrantReply,
    Refused,
    Release,
    ReleaseReply,
    VoidGrant,
)
from engine.core.model import GrantType
from gateway.auth import authenticate
from gateway.context import environment, ok, services
from gateway.catalog import page_by_creation
from gateway.errors import ApiError, bad_input, from_refusal
from gateway.routes.common import (
    check_key,
    engine_id,
    header_key,
    require_currency,
    require_customer,
    scoped_key,
)
from gateway.wire import (
    Dimensions,
    amount_in,
    amount_out,
    ascii_int,
    created_at_bounds,
    decode,
    dimensions_in,
    iso,
    limit_in,
    parse_time,
)
from persistence import codec, sql

__all__ = ["ROUTES", "grant_json", "balance_json"]

# Query parameters are camelCase on the wire.
CustomerQ = Annotated[str | None, QueryParameter(name="customerId")]
CurrencyQ = Annotated[str | None, QueryParameter(name="currencyId")]
ResourceQ = Annotated[str | None, QueryParameter(name="resourceId")]
EventTypeQ = Annotated[str | None, QueryParameter(name="eventType")]
ReservationQ = Annotated[str | None, QueryParameter(name="reservationId")]


class Cost(msgspec.Struct, forbid_unknown_fields=True):
    amount: Decimal
    currency: str


class GrantCreate(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    amount: Decimal
    currency_id: str
    customer_id: str
    display_name: str
    grant_type: Literal["PAID", "PROMOTIONAL"]
    await_payment_confirmation: bool = False
    billing_information: dict[str, Any] | None = None
    comment: str | None = None
    cost: Cost | None = None
    effective_at: str | None = None
    expire_at: str | None = None
    metadata: dict[str, str] | None = None
    payment_collection_method: Literal["CHARGE", "INVOICE", "NONE"] | None = None
    priority: int = 50
    resource_id: str | None = None


class ConsumptionCreate(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    amount: Decimal
    currency_id: str
    customer_id: str
    idempotency_key: str
    created_at: str | None = None
    dimensions: Dimensions | None = None
    resource_id: str | None = None


def grant_json(customer_id: str, g: Any) -> dict[str, Any]:
    """A GrantView (engine) or GrantRow (store) as the contract's CreditGrant."""
    consumed = getattr(g, "consumed_amount", None)
    if consumed is None:
        consumed = g.consumed
    return {
        "id": g.id,
        "customerId": customer_id,
        "currencyId": g.currency_id,
        "resourceId": g.resource_id,
        "amount": amount_out(g.amount),
        "consumedAmount": amount_out(consumed),
        "grantType": g.grant_type,
        "status": g.status,
        "priority": g.priority,
        "effectiveAt": iso(g.effective_at),
        "expireAt": iso(g.expire_at),
        "createdAt": iso(g.created_at),
        "updatedAt": iso(g.updated_at),
        "voidedAt": iso(g.voided_at),
        "cost": {"amount": amount_out(g.cost_amount or 0), "currency": g.cost_currency or "usd"},
        "displayName": g.display_name,
        "comment": g.comment,
        "metadata": dict(g.metadata or {}),
        "paymentCollection": "PROCESSING" if g.status == "PAYMENT_PENDING" else "NOT_REQUIRED",
        "invoiceId": None,
        "latestInvoice": None,
        "sourceType": None,
        "syncStates": [],
    }


def balance_json(b: BalanceView) -> dict[str, Any]:
    return {
        "currentBalance": amount_out(b.current_balance),
        "totalConsumed": amount_out(b.total_consumed),
        "totalGranted": amount_out(b.total_granted),
        "reserved": amount_out(b.reserved),
        "resourceId": b.resource_id,
    }


def credit_json(b: BalanceView) -> dict[str, Any]:
    """The contract's `credit` usage block: usageLimit − currentUsage is what can still be
    consumed now (the current balance)."""
    return {
        "currencyId": b.currency_id,
        "currentUsage": amount_out(b.total_consumed),
        "usageLimit": amount_out(b.total_consumed + max(b.current_balance, 0)),
        "timestamp": iso(b.timestamp),
        "usagePeriodEnd": None,
    }


def _unwrap(reply: Any) -> Any:
    if isinstance(reply, Refused):
        raise from_refusal(reply)
    return reply


@post("/api/v1/credits/grants")
async def create_grant(request: Request) -> Response:
    body = decode(await request.body(), GrantCreate)
    env = environment(request)
    await require_customer(request, body.customer_id)
    await require_currency(request, body.currency_id)
    if not 0 <= body.priority <= 100:
        raise bad_input("must be an integer from 0 to 100", "priority")
    command = CreateGrant(
        grant_id=str(uuid.uuid4()),
        currency_id=body.currency_id,
        resource_id=body.resource_id,
        amount=amount_in(body.amount, "amount"),
        grant_type=GrantType(body.grant_type),
        display_name=body.display_name,
        priority=body.priority,
        effective_at=parse_time(body.effective_at, "effectiveAt"),
        expire_at=parse_time(body.expire_at, "expireAt"),
        cost_amount=(amount_in(body.cost.amount, "cost.amount", allow_zero=True)
                     if body.cost else None),
        cost_currency=body.cost.currency if body.cost else None,
        comment=body.comment,
        metadata=body.metadata,
        await_payment=body.await_payment_confirmation,
        idempotency_key=header_key(request, "grant"),
    )
    reply: GrantReply = _unwrap(await services(request).runtime.submit(
        engine_id(env, body.customer_id), command))
    return ok(grant_json(body.customer_id, reply.grant))


@post("/api/v1/credits/grants/{grant_id:str}/void")
async def void_grant(request: Request, grant_id: FromPath[str]) -> Response:
    env = environment(request)
    rows = await services(request).store.fetch(
        "SELECT customer_id FROM grants WHERE id = ? AND customer_id LIKE ?", grant_id,
        env.replace("%", r"\%").replace("_", r"\_") + "/%")
    if not rows:
        raise ApiError(404, "CreditGrantNotFound", f"grant {grant_id!r} was not found", "id")
    customer = rows[0][0]
    reply: GrantReply = _unwrap(await services(request).runtime.submit(
        customer, VoidGrant(grant_id=grant_id, idempotency_key=header_key(request, "void"))))
    return ok(grant_json(customer.split("/", 1)[1], reply.grant))


@get("/api/v1/credits/grants")
async def list_grants(
    request: Request,
    customer_id: CustomerQ = None,
    currency_id: CurrencyQ = None,
    resource_id: ResourceQ = None,
    limit: FromQuery[int | None] = None,
    after: FromQuery[str | None] = None,
    before: FromQuery[str | None] = None,
) -> Response:
    if not customer_id:
        raise bad_input("is required", "customerId")
    env = environment(request)
    await require_customer(request, customer_id, allow_archived=True)
    where = ["customer_id = ?"]
    params: list[Any] = [engine_id(env, customer_id)]
    if currency_id:
        where.append("currency_id = ?")
        params.append(currency_id)
    # As the contract says: without resourceId, only grants without a resource.
    if resource_id:
        where.append("resource_id = ?")
        params.append(resource_id)
    else:
        where.append("resource_id IS NULL")
    for symbol, ms in created_at_bounds(request):
        where.append(f"created_at {symbol} ?")
        params.append(ms)
    rows, next_cursor, prev_cursor = await page_by_creation(
        services(request).store,
        f"SELECT {', '.join(sql.GRANT_COLUMNS)}, created_at, id FROM grants",
        where, params, limit_in(limit), after, before)
    grants = [codec.grant_from(r) for r in rows]
    pagination = {"next": next_cursor, "prev": prev_cursor}
    return ok([grant_json(customer_id, g) for g in grants], pagination=pagination)


_EVENT_TYPES = {t.value for t in codec.LedgerEventType}


@get("/api/v1/credits/ledger")
async def list_ledger(
    request: Request,
    customer_id: CustomerQ = None,
    currency_id: CurrencyQ = None,
    resource_id: ResourceQ = None,
    event_type: EventTypeQ = None,
    reservation_id: ReservationQ = None,
    limit: FromQuery[int | None] = None,
    after: FromQuery[str | None] = None,
    before: FromQuery[str | None] = None,
) -> Response:
    """Newest first; cursors are ledger sequence numbers."""
    if not customer_id:
        raise bad_input("is required", "customerId")
    env = environment(request)
    await require_customer(request, customer_id, allow_archived=True)
    types: list[str] = []
    if event_type:
        types = [t.strip() for t in event_type.split(",") if t.strip()]
        unknown = [t for t in types if t not in _EVENT_TYPES]
        if unknown:
            raise bad_input(f"unknown event type {unknown[0]!r}", "eventType")
    size = limit_in(limit)
    for name, cursor in (("after", after), ("before", before)):
        if cursor is not None and ascii_int(cursor) is None:
            raise bad_input("is not a cursor this server issued", name)
    order = "ASC" if before and not after else "DESC"
    rows = await services(request).store.ledger_page(
        engine_id(env, customer_id), event_types=types, currency_id=currency_id or None,
        resource_id=resource_id or None, reservation_id=reservation_id or None,
        after=int(after) if after else None,
        before=int(before) if before and not after else None, limit=size + 1)
    more = len(rows) > size
    entries = rows[:size]
    if order == "ASC":
        entries.reverse()
    data = [{
        "amount": amount_out(e.amount),
        "creditCurrencyId": e.currency_id,
        "creditGrantId": e.grant_id,
        "customerId": customer_id,
        "eventId": str(e.op_seq),
        "eventType": e.event_type,
        "featureId": e.feature_id,
        "reservationId": e.reservation_id,
        "resourceId": e.resource_id,
        "timestamp": iso(e.timestamp),
        "metadata": None,
        "breakdown": None,
    } for e in entries]
    seqs = [str(e.seq) for e in entries]
    if order == "DESC":
        pagination = {"next": seqs[-1] if more and seqs else None,
                      "prev": seqs[0] if after and seqs else None}
    else:
        pagination = {"next": seqs[-1] if seqs else None,
                      "prev": seqs[0] if more and seqs else None}
    return ok(data, pagination=pagination)


_OK_HEADERS = [(b"content-type", b"application/json")]
_encode = msgspec.json.Encoder(decimal_format="number").encode


@asgi("/api/v1/credits/consumption", copy_scope=False)
async def consume(scope: Any, receive: Any, send: Any) -> None:
    """The hottest endpoint, as a raw ASGI handler: Litestar's per-request machinery
    (signature model, before-request hook, response objects) was most of the server's time
    for it under load (py-spy; scripts/bench_http.py). Errors are raised as usual and
    answered by the app's exception handlers; authentication is the same function."""
    request: Request = Request(scope, receive, send)
    if scope["method"] != "POST":
        raise ApiError(405, "MethodNotAllowed", "use POST")
    await authenticate(request)
    data = await _consume(request, await _body(receive,
                                               services(request).settings.body_bytes_max))
    body = _encode({"data": data})
    await send({"type": "http.response.start", "status": 200,
                "headers": [*_OK_HEADERS, (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def _body(receive: Any, limit: int) -> bytes:
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


async def _consume(request: Request, raw: bytes) -> dict[str, Any]:
    body = decode(raw, ConsumptionCreate)
    env = environment(request)
    await require_customer(request, body.customer_id)
    await require_currency(request, body.currency_id)
    check_key(body.idempotency_key, "idempotencyKey")
    command = Consume(
        currency_id=body.currency_id,
        resource_id=body.resource_id,
        amount=amount_in(body.amount, "amount"),
        idempotency_key=scoped_key("consume", body.idempotency_key),
        dimensions=dimensions_in(body.dimensions, "dimensions"),
        created_at=parse_time(body.created_at, "createdAt"),
    )
    reply: ConsumeReply = _unwrap(await services(request).runtime.submit(
        engine_id(env, body.customer_id), command))
    return {
        "amount": amount_out(reply.amount),
        "currencyId": body.currency_id,
        "customerId": body.customer_id,
        "resourceId": body.resource_id,
        "timestamp": iso(reply.timestamp),
        "credit": credit_json(reply.balance),
        "entities": [],
    }


@get("/api/v1/credits/balance")
async def balance(request: Request, customer_id: CustomerQ = None,
                  currency_id: CurrencyQ = None, resource_id: ResourceQ = None) -> Response:
    """The GraphQL creditBalanceSummary over REST (an extension of the contract)."""
    if not customer_id:
        raise bad_input("is required", "customerId")
    env = environment(request)
    await require_customer(request, customer_id, allow_archived=True)
    reply: BalancesReply = _unwrap(await services(request).runtime.submit(
        engine_id(env, customer_id),
        GetBalances(currency_id=currency_id, resource_id=resource_id,
                    match_resource=resource_id is not None)))
    balances = []
    for b in reply.balances:
        currency = await require_currency(request, b.currency_id, allow_archived=True)
        balances.append({
            "currency": {"currencyId": b.currency_id, "displayName": currency["displayName"],
                         "symbol": currency.get("symbol"), "units": currency.get("units")},
            **balance_json(b),
        })
    return ok({"customerId": customer_id, "balances": balances})


class ConsumptionBatch(msgspec.Struct, forbid_unknown_fields=True):
    consumptions: list[ConsumptionCreate]


CONSUMPTIONS_MAX = 1000


@post("/api/v1/credits/consumption/async")
async def consume_batch(request: Request) -> Response:
    """Up to 1,000 consumptions. The whole batch is validated (shapes, amounts, customers,
    currencies) before any item is applied; then each item is applied and made durable
    before the reply. Business refusals (e.g. insufficient credits) are per item."""
    body = decode(await request.body(), ConsumptionBatch)
    if not 1 <= len(body.consumptions) <= CONSUMPTIONS_MAX:
        raise bad_input(f"must hold 1 to {CONSUMPTIONS_MAX} items", "consumptions")
    env = environment(request)
    commands = []
    for i, item in enumerate(body.consumptions):
        at = f"consumptions[{i}]"
        await require_customer(request, item.customer_id, field=f"{at}.customerId")
        await require_currency(request, item.currency_id, field=f"{at}.currencyId")
        check_key(item.idempotency_key, f"{at}.idempotencyKey")
        commands.append((engine_id(env, item.customer_id), Consume(
            currency_id=item.currency_id, resource_id=item.resource_id,
            amount=amount_in(item.amount, f"{at}.amount"),
            idempotency_key=scoped_key("consume", item.idempotency_key),
            dimensions=dimensions_in(item.dimensions, f"{at}.dimensions"),
            created_at=parse_time(item.created_at, f"{at}.createdAt"))))
    runtime = services(request).runtime
    results: list[Any] = [None] * len(commands)

    async def one(i: int, customer: str, command: Consume) -> None:
        results[i] = await runtime.submit(customer, command)

    async with anyio.create_task_group() as tg:
        for i, (customer, command) in enumerate(commands):
            tg.start_soon(one, i, customer, command)
    refused = [{"index": i, "code": from_refusal(r).code, "message": from_refusal(r).message}
               for i, r in enumerate(results) if isinstance(r, Refused)]
    return ok({"accepted": len(results) - len(refused), "refused": refused})


class ReleaseBody(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    consumed_amount: Decimal
    currency_id: str
    customer_id: str
    resource_id: str | None = None


@post("/api/v1/credits/reservations/{reservation_id:str}/release")
async def release_reservation(request: Request, reservation_id: FromPath[str]) -> Response:
    body = decode(await request.body(), ReleaseBody)
    env = environment(request)
    await require_customer(request, body.customer_id)
    # Retrying a release is applied once (the contract): the reservation id is the key,
    # and the same release sent again gets the original answer.
    sent = msgspec.json.encode([str(body.consumed_amount), body.currency_id, body.resource_id])
    command = Release(reservation_id=reservation_id,
                      consumed_amount=amount_in(body.consumed_amount, "consumedAmount",
                                                allow_zero=True),
                      currency_id=body.currency_id, resource_id=body.resource_id,
                      idempotency_key=scoped_key("release", reservation_id),
                      request_hash=hashlib.sha256(sent).hexdigest())
    reply: ReleaseReply = _unwrap(await services(request).runtime.submit(
        engine_id(env, body.customer_id), command))
    return ok({"credit": credit_json(reply.balance),
               "reservation": reservation_json(reply.reservation)})


def reservation_json(r: Any) -> dict[str, Any]:
    return {"id": r.id, "amount": amount_out(r.amount),
            "consumedAmount": None if r.consumed_amount is None else amount_out(r.consumed_amount),
            "expiresAt": iso(r.expires_at),
            "status": "ACTIVE" if r.status == "ACTIVE" else "RELEASED"}


ROUTES = [create_grant, void_grant, list_grants, list_ledger, consume, consume_batch,
          release_reservation, balance]
