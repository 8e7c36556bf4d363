"""Credits: grants (create, list, void), ledger, consumption, balance summary.

Writes go through the customer's actor (serialized, acknowledged once durable); lists read
the durable rows straight from the store, so they show exactly what was acknowledged.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Literal

import msgspec
from litestar import Request, Response, get, post
from litestar.params import FromPath, QueryParameter

from engine.core.commands import BalanceView
from engine.core.model import GrantType
from engine.domain import credits
from engine.domain.constraints import IdempotencyKey, ItemsOf, Priority, Reference
from engine.domain.errors import DomainError
from gateway.context import domain, environment, ok
from gateway.errors import bad_input
from gateway.openapi import request_body
from gateway.routes.hot import hot_post
from gateway.wire import (
    Dimensions,
    PageQuery,
    amount_in,
    amount_out,
    created_at_bounds,
    decode_body,
    dimensions_in,
    iso,
    parse_time,
)

__all__ = ["ROUTES", "balance_json", "credit_json", "grant_json", "ledger_json"]

# Query parameters are camelCase on the wire.
CustomerQ = Annotated[str | None, QueryParameter(name="customerId")]
CurrencyQ = Annotated[str | None, QueryParameter(name="currencyId")]
ResourceQ = Annotated[str | None, QueryParameter(name="resourceId")]
EventTypeQ = Annotated[str | None, QueryParameter(name="eventType")]
ReservationQ = Annotated[str | None, QueryParameter(name="reservationId")]
StartQ = Annotated[str | None, QueryParameter(name="startDate")]
EndQ = Annotated[str | None, QueryParameter(name="endDate")]


class Cost(msgspec.Struct, forbid_unknown_fields=True):
    amount: Decimal
    currency: str


class GrantCreate(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    amount: Decimal
    currency_id: Reference
    customer_id: Reference
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
    priority: Priority = 50
    resource_id: str | None = None


class ConsumptionCreate(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    amount: Decimal
    currency_id: Reference
    customer_id: Reference
    idempotency_key: IdempotencyKey
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
        # Extensions: whether a consumption the balance cannot cover is refused (false: a
        # soft limit, the balance may go negative; PUT /api/v1/credits/pools), and the
        # balance at or below which the pool counts as low (what the usage_low events
        # mean), for a widget's warning; null when it cannot be low.
        "hardLimit": b.hard_limit,
        "lowBalanceAt": None if b.low_line is None else amount_out(b.low_line),
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


@post("/api/v1/credits/grants", opt=request_body(GrantCreate))
async def create_grant(request: Request) -> Response:
    body = await decode_body(request, GrantCreate)
    grant = await credits.grant_credits(domain(request), environment(request), credits.GrantInput(
        customer_id=body.customer_id, currency_id=body.currency_id,
        resource_id=body.resource_id, amount=amount_in(body.amount, "amount"),
        grant_type=GrantType(body.grant_type), display_name=body.display_name,
        priority=body.priority,
        effective_at=parse_time(body.effective_at, "effectiveAt"),
        expire_at=parse_time(body.expire_at, "expireAt"),
        cost_amount=(amount_in(body.cost.amount, "cost.amount", allow_zero=True)
                     if body.cost else None),
        cost_currency=body.cost.currency if body.cost else None,
        comment=body.comment, metadata=body.metadata,
        await_payment=body.await_payment_confirmation,
        idempotency_key=request.headers.get("idempotency-key")))
    return ok(grant_json(body.customer_id, grant))


@post("/api/v1/credits/grants/{grant_id:str}/void")
async def void_grant(request: Request, grant_id: FromPath[str]) -> Response:
    customer_id, grant = await credits.void_grant(
        domain(request), environment(request), grant_id,
        request.headers.get("idempotency-key"))
    return ok(grant_json(customer_id, grant))


@get("/api/v1/credits/grants")
async def list_grants(
    request: Request,
    page: PageQuery,
    customer_id: CustomerQ = None,
    currency_id: CurrencyQ = None,
    resource_id: ResourceQ = None,
) -> Response:
    if not customer_id:
        raise bad_input("is required", "customerId")
    rows, next_cursor, prev_cursor = await credits.grants(
        domain(request), environment(request), credits.GrantsQuery(
            customer_id=customer_id, currency_id=currency_id or None,
            resource_id=resource_id or None, created=tuple(created_at_bounds(request)),
            limit=page.limit, after=page.after, before=page.before))
    pagination = {"next": next_cursor, "prev": prev_cursor}
    grants = [grant_json(customer_id, g) for g in rows]
    if request.scope["state"].get("token") is not None:
        # A customer (a token: the portal, a widget) does not see the operators' notes.
        for g in grants:
            g["comment"] = None
    return ok(grants, pagination=pagination)


@get("/api/v1/credits/ledger")
async def list_ledger(
    request: Request,
    page: PageQuery,
    customer_id: CustomerQ = None,
    currency_id: CurrencyQ = None,
    resource_id: ResourceQ = None,
    event_type: EventTypeQ = None,
    reservation_id: ReservationQ = None,
    start_date: StartQ = None,
    end_date: EndQ = None,
) -> Response:
    """Newest first; cursors are ledger sequence numbers; `startDate` (inclusive) and
    `endDate` (exclusive) bound the entries' times (an extension, for the ledger
    widget)."""
    if not customer_id:
        raise bad_input("is required", "customerId")
    types = event_types(event_type)
    page = await credits.ledger(domain(request), environment(request), credits.LedgerQuery(
        customer_id=customer_id, currency_id=currency_id, resource_id=resource_id,
        reservation_id=reservation_id, event_types=types, limit=page.limit,
        after=page.after, before=page.before, start=parse_time(start_date, "startDate"),
        end=parse_time(end_date, "endDate")))
    data = [ledger_json(customer_id, e) for e in page.entries]
    return ok(data, pagination={"next": page.next, "prev": page.prev})


def event_types(raw: str | None) -> tuple[str, ...]:
    """`eventType`: comma-separated ledger event types (none: every type)."""
    return tuple(t.strip() for t in raw.split(",") if t.strip()) if raw else ()


def ledger_json(customer_id: str, e: Any) -> dict[str, Any]:
    """A ledger entry as the contract's CreditLedgerEvent (REST; GraphQL's
    CreditLedgerEvent has the same field names, a subset of these)."""
    return {
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
    }


@hot_post("/api/v1/credits/consumption", ConsumptionCreate)
async def consume(request: Request, raw: bytes) -> dict[str, Any]:
    """The hottest endpoint, a raw ASGI handler (gateway/routes/hot.py)."""
    body = await decode_body(request, ConsumptionCreate, raw)
    reply = await credits.consume(domain(request), environment(request), _consume_input(body))
    return {
        "amount": amount_out(reply.amount),
        "currencyId": body.currency_id,
        "customerId": body.customer_id,
        "resourceId": body.resource_id,
        "timestamp": iso(reply.timestamp),
        "credit": credit_json(reply.balance),
        "entities": [],
    }


def _consume_input(c: ConsumptionCreate, at: str = "") -> credits.ConsumeInput:
    """A consumption as the domain takes it (`at`: the item's place in a batch)."""
    return credits.ConsumeInput(
        customer_id=c.customer_id, currency_id=c.currency_id, resource_id=c.resource_id,
        amount=amount_in(c.amount, f"{at}amount"), idempotency_key=c.idempotency_key,
        dimensions=dimensions_in(c.dimensions, f"{at}dimensions"),
        created_at=parse_time(c.created_at, f"{at}createdAt"))


@get("/api/v1/credits/balance")
async def balance(request: Request, customer_id: CustomerQ = None,
                  currency_id: CurrencyQ = None, resource_id: ResourceQ = None) -> Response:
    """The GraphQL creditBalanceSummary over REST (an extension of the contract)."""
    if not customer_id:
        raise bad_input("is required", "customerId")
    found = await credits.balances(domain(request), environment(request), customer_id,
                                   currency_id, resource_id)
    balances = [{
        "currency": {"currencyId": b.currency_id, "displayName": currency.display_name,
                     "symbol": currency.symbol,
                     "units": msgspec.to_builtins(currency.units)},
        **balance_json(b),
    } for b, currency in found]
    return ok({"customerId": customer_id, "balances": balances})


class ConsumptionBatch(msgspec.Struct, forbid_unknown_fields=True):
    consumptions: ItemsOf(ConsumptionCreate, credits.CONSUMPTIONS_MAX)


@post("/api/v1/credits/consumption/async", opt=request_body(ConsumptionBatch))
async def consume_batch(request: Request) -> Response:
    """Up to 1,000 consumptions. The whole batch is validated (shapes, amounts, customers,
    currencies) before any item is applied; then each item is applied and made durable
    before the reply. Business refusals (e.g. insufficient credits) are per item."""
    body = await decode_body(request, ConsumptionBatch)
    items = [_consume_input(c, f"consumptions[{i}].") for i, c in enumerate(body.consumptions)]
    results = await credits.consume_many(domain(request), environment(request), items)
    refused = [{"index": i, "code": r.code, "message": r.message}
               for i, r in enumerate(results) if isinstance(r, DomainError)]
    return ok({"accepted": len(results) - len(refused), "refused": refused})


class ReleaseBody(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    consumed_amount: Decimal
    currency_id: Reference
    customer_id: Reference
    resource_id: str | None = None


@post("/api/v1/credits/reservations/{reservation_id:str}/release", opt=request_body(ReleaseBody))
async def release_reservation(request: Request, reservation_id: FromPath[str]) -> Response:
    body = await decode_body(request, ReleaseBody)
    reply = await credits.release(domain(request), environment(request), credits.ReleaseInput(
        customer_id=body.customer_id, reservation_id=reservation_id,
        consumed_amount=amount_in(body.consumed_amount, "consumedAmount", allow_zero=True),
        currency_id=body.currency_id, resource_id=body.resource_id))
    return ok({"credit": credit_json(reply.balance),
               "reservation": reservation_json(reply.reservation)})


def reservation_json(r: Any) -> dict[str, Any]:
    return {"id": r.id, "amount": amount_out(r.amount),
            "consumedAmount": None if r.consumed_amount is None else amount_out(r.consumed_amount),
            "expiresAt": iso(r.expires_at),
            "status": "ACTIVE" if r.status == "ACTIVE" else "RELEASED"}


ROUTES = [create_grant, void_grant, list_grants, list_ledger, consume, consume_batch,
          release_reservation, balance]
