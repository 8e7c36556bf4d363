"""Credits: balances, grants, voids and consumptions; grant and ledger pages, credit usage.

    creditBalanceSummary  credits.balances
    createCreditGrant     credits.grant_credits
    voidCreditGrant       credits.void_grant
    consumeCredits        credits.consume
    consumeCreditsAsync   credits.consume_many (a batch, checked whole)
    creditGrants          credits.grants (+ credits.grants_count for totalCount)
    creditsLedger         credits.ledger (+ credits.ledger_count for totalCount)
    creditUsage           analytics.credit_usage

Pages (`paging: CursorPaging`): `first` (1 to 100, default 20) with an optional `after`,
or `last` with `before` (the page just before that cursor). Any other combination is
refused naming the field, as is a cursor this server did not issue: the domain's keyset
pages go one way from one cursor.
"""

from __future__ import annotations

from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple, TypeVar

from graphql import GraphQLResolveInfo

from engine.core.model import GrantType, LedgerEventType
from engine.domain import analytics, credits
from engine.domain.errors import DomainError, bad_input
from engine.domain.values import time_in
from engine.times import iso
from gateway.graphql.resolvers.common import context, currency_json
from gateway.routes.analytics import credit_series_json
from gateway.routes.credits import credit_json, ledger_json
from gateway.wire import amount_in, amount_out, dimensions_in
from persistence.pages import creation_cursor

__all__ = [
    "MUTATIONS",
    "QUERIES",
    "Paging",
    "credit_grant_json",
    "group_by_in",
    "paged",
    "paging_in",
    "time_field_in",
]

T = TypeVar("T")


async def credit_balance_summary(_: Any, info: GraphQLResolveInfo, input: dict) -> dict:
    d, env = context(info)
    customer_id = input["customerId"]
    found = await credits.balances(d, env, customer_id, input.get("currencyId"),
                                   input.get("resourceId"))
    return {"customerId": customer_id, "resourceId": input.get("resourceId"), "balances": [{
        "customerId": customer_id, "currencyId": b.currency_id, "resourceId": b.resource_id,
        "currency": currency_json(currency),
        "currentBalance": amount_out(b.current_balance),
        "totalConsumed": amount_out(b.total_consumed),
        "totalGranted": amount_out(b.total_granted),
        "validUntil": None,
    } for b, currency in found]}


def credit_grant_json(customer_id: str, g: Any) -> dict[str, Any]:
    """Stigg's CreditGrant for a GrantView (engine) or GrantRow (store): the one builder of
    it."""
    consumed = getattr(g, "consumed_amount", None)
    if consumed is None:
        consumed = g.consumed
    return {
        "id": g.id, "grantId": g.id, "customerId": customer_id, "currencyId": g.currency_id,
        "resourceId": g.resource_id, "amount": amount_out(g.amount),
        "consumedAmount": amount_out(consumed), "grantType": str(g.grant_type),
        "status": str(g.status), "priority": g.priority,
        "effectiveAt": iso(g.effective_at), "expireAt": iso(g.expire_at),
        "createdAt": iso(g.created_at), "updatedAt": iso(g.updated_at),
        "voidedAt": iso(g.voided_at),
        "cost": {"amount": amount_out(g.cost_amount or 0),
                 "currency": (g.cost_currency or "usd").upper()},
        "displayName": g.display_name, "comment": g.comment,
        "additionalMetaData": dict(g.metadata or {}),
        "paymentCollection": "PROCESSING" if str(g.status) == "PAYMENT_PENDING"
        else "NOT_REQUIRED",
        "invoiceId": None, "latestInvoice": None, "sourceType": None,
        "automaticRechargeConfigurationId": None,
    }


def _priority(value: Any) -> int:
    if value is None:
        return 50
    if value != int(value):
        raise bad_input("must be a whole number", "priority")
    return int(value)


async def create_credit_grant(_: Any, info: GraphQLResolveInfo, input: dict) -> dict:
    d, env = context(info)
    cost = input.get("cost")
    metadata = input.get("additionalMetaData")
    if metadata is not None and (not isinstance(metadata, dict) or not all(
            isinstance(v, str) for v in metadata.values())):
        raise bad_input("must be an object of string values", "additionalMetaData")
    grant = await credits.grant_credits(d, env, credits.GrantInput(
        customer_id=input["customerId"], currency_id=input["currencyId"],
        resource_id=input.get("resourceId"), amount=amount_in(input["amount"], "amount"),
        grant_type=GrantType(input["grantType"]), display_name=input["displayName"],
        priority=_priority(input.get("priority")),
        effective_at=time_in(input.get("effectiveAt"), "effectiveAt"),
        expire_at=time_in(input.get("expireAt"), "expireAt"),
        cost_amount=None if cost is None else amount_in(cost["amount"], "cost.amount",
                                                      allow_zero=True),
        cost_currency=None if cost is None or cost.get("currency") is None
        else cost["currency"].lower(),
        comment=input.get("comment"), metadata=metadata,
        await_payment=bool(input.get("awaitPaymentConfirmation"))))
    return credit_grant_json(input["customerId"], grant)


async def void_credit_grant(_: Any, info: GraphQLResolveInfo, input: dict) -> dict:
    d, env = context(info)
    customer_id, grant = await credits.void_grant(d, env, input["id"], None)
    return credit_grant_json(customer_id, grant)


def _consume_input(item: dict[str, Any], at: str) -> credits.ConsumeInput:
    return credits.ConsumeInput(
        customer_id=item["customerId"], currency_id=item["currencyId"],
        resource_id=item.get("resourceId"), amount=amount_in(item["amount"], f"{at}amount"),
        idempotency_key=item["idempotencyKey"],
        dimensions=dimensions_in(item.get("dimensions"), f"{at}dimensions"),
        created_at=time_in(item.get("createdAt"), f"{at}createdAt"))


async def consume_credits(_: Any, info: GraphQLResolveInfo, input: dict) -> dict:
    d, env = context(info)
    reply = await credits.consume(d, env, _consume_input(input, ""))
    return {"amount": amount_out(reply.amount), "currencyId": input["currencyId"],
            "customerId": input["customerId"], "resourceId": input.get("resourceId"),
            "timestamp": iso(reply.timestamp), "credit": credit_json(reply.balance)}


async def consume_credits_async(_: Any, info: GraphQLResolveInfo, input: dict) -> str:
    """A batch, validated whole (shapes, amounts, customers, currencies) before any item is
    applied, then each item applied and durable before the answer (REST's
    /credits/consumption/async). Stigg answers a String; here it says what happened, with
    each refused item (e.g. insufficient credits) by index and code."""
    d, env = context(info)
    given = input["consumptions"]
    if not 1 <= len(given) <= credits.CONSUMPTIONS_MAX:
        raise bad_input(f"must hold 1 to {credits.CONSUMPTIONS_MAX} items", "consumptions")
    results = await credits.consume_many(d, env, [
        _consume_input(c, f"consumptions[{i}].") for i, c in enumerate(given)])
    refused = [f"consumptions[{i}] {r.code}" for i, r in enumerate(results)
               if isinstance(r, DomainError)]
    summary = f"accepted {len(results) - len(refused)} of {len(results)}"
    return summary + (f"; refused: {', '.join(refused)}" if refused else "")


# -- pages ---------------------------------------------------------------------------------

PAGE_DEFAULT = 20
PAGE_MAX = 100


class Paging(NamedTuple):
    """A CursorPaging as the domain's page queries take it: a page size and one cursor."""

    limit: int
    after: str | None
    before: str | None


def _cursor_in(value: Any, field: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise bad_input("is not a cursor this server issued", field)
    return value


def _size_in(value: Any, field: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= PAGE_MAX:
        raise bad_input(f"must be between 1 and {PAGE_MAX}", field)
    return value


def paging_in(paging: dict[str, Any] | None, field: str = "paging") -> Paging:
    """`first` (default 20) after an optional `after` cursor, or `last` before a `before`
    cursor; anything else is refused naming the field rather than half-honoured."""
    paging = paging or {}
    first, last = paging.get("first"), paging.get("last")
    after = _cursor_in(paging.get("after"), f"{field}.after")
    before = _cursor_in(paging.get("before"), f"{field}.before")
    if first is not None and last is not None:
        raise bad_input("give first or last, not both", f"{field}.last")
    if after is not None and before is not None:
        raise bad_input("give after or before, not both", f"{field}.before")
    if last is not None or before is not None:
        if last is None:
            raise bad_input(f"a page before a cursor is taken with {field}.last",
                            f"{field}.before")
        if before is None:
            raise bad_input(f"needs {field}.before: a page counted from the end ends just "
                            "before a cursor", f"{field}.last")
        return Paging(_size_in(last, f"{field}.last"), None, before)
    size = PAGE_DEFAULT if first is None else _size_in(first, f"{field}.first")
    return Paging(size, after, None)


@contextmanager
def _cursor_field(field: str = "paging") -> Iterator[None]:
    """The domain names a cursor it refuses `after`/`before` (its REST names): GraphQL's
    are in `paging`."""
    try:
        yield
    except DomainError as exc:
        if exc.code == "BadUserInput" and exc.field in ("after", "before"):
            raise bad_input(exc.message, f"{field}.{exc.field}") from None
        raise


async def paged(call: Awaitable[T], field: str = "paging") -> T:
    """`call`'s result, a refused cursor named as GraphQL's `paging.after`/`.before`."""
    with _cursor_field(field):
        return await call


def page_info(cursors: list[str], next_cursor: str | None,
              prev_cursor: str | None) -> dict[str, Any]:
    """Stigg's PageInfo for a page whose edges have `cursors`, with the domain's cursors
    of the next and previous pages (None: there is none)."""
    return {"startCursor": cursors[0] if cursors else prev_cursor,
            "endCursor": cursors[-1] if cursors else next_cursor,
            "hasNextPage": next_cursor is not None,
            "hasPreviousPage": prev_cursor is not None}


def time_field_in(value: Any, field: str) -> int | None:
    """A DateTime input (ISO-8601) as epoch ms."""
    if value is not None and not isinstance(value, str):
        raise bad_input("must be an ISO-8601 date-time", field)
    return time_in(value, field)


def group_by_in(keys: list[str] | None, field: str = "groupBy") -> str | None:
    """GraphQL's `groupBy: [String!]` as the domain's comma-separated keys (which it
    checks): a key with a comma in it would silently become two."""
    if not keys:
        return None
    for i, key in enumerate(keys):
        if "," in key:
            raise bad_input(f"{key!r} is not a dimension key (letters, digits, _ $ -)",
                            f"{field}[{i}]")
    return ",".join(keys)


# -- grant and ledger pages, credit usage --------------------------------------------------

async def credit_grants(_: Any, info: GraphQLResolveInfo, input: dict) -> dict:
    d, env = context(info)
    page = paging_in(input.get("paging"))
    customer_id = input["customerId"]
    query = credits.GrantsQuery(customer_id=customer_id, currency_id=input.get("currencyId"),
                                resource_id=input.get("resourceId"), limit=page.limit,
                                after=page.after, before=page.before)
    rows, next_cursor, prev_cursor = await paged(credits.grants(d, env, query))
    total = await credits.grants_count(d, env, query)
    edges = [{"cursor": creation_cursor(g.created_at, g.id),
              "node": credit_grant_json(customer_id, g)} for g in rows]
    return {"edges": edges, "totalCount": total,
            "pageInfo": page_info([e["cursor"] for e in edges], next_cursor, prev_cursor)}


# Stigg's GraphQL ledger has 7 event types; creditd's has 3 more, for reservations
# (CREDITS_RESERVED, CREDITS_RESERVATION_RELEASED, CREDITS_RESERVATION_EXPIRED), which
# Stigg's GraphQL API does not have at all. Those entries are left out of creditsLedger
# (and of its totalCount), not mapped onto another type: a reservation's hold (RESERVED,
# −h) always comes back whole (RELEASED or RESERVATION_EXPIRED, +h), and what it took is
# its own CREDITS_CONSUMED entry at settlement (engine/core/ledger_ops.settle), so the
# seven types still account for every change of the balance once reservations settle —
# while an entry whose eventType the schema cannot spell would fail the whole answer.
# REST's ledger shows all ten.
LEDGER_EVENT_TYPES = tuple(t.value for t in LedgerEventType
                           if t not in (LedgerEventType.CREDITS_RESERVED,
                                        LedgerEventType.CREDITS_RESERVATION_RELEASED,
                                        LedgerEventType.CREDITS_RESERVATION_EXPIRED))


async def credits_ledger(_: Any, info: GraphQLResolveInfo, input: dict) -> dict:
    d, env = context(info)
    page = paging_in(input.get("paging"))
    customer_id = input["customerId"]
    # The schema's enum admits only the seven; none (or an empty list) means all seven.
    event_types = tuple(dict.fromkeys(input.get("eventType") or LEDGER_EVENT_TYPES))
    query = credits.LedgerQuery(customer_id=customer_id, currency_id=input.get("currencyId"),
                                resource_id=input.get("resourceId"), event_types=event_types,
                                limit=page.limit, after=page.after, before=page.before)
    found = await paged(credits.ledger(d, env, query))
    total = await credits.ledger_count(d, env, query)
    edges = [{"cursor": str(e.seq), "node": ledger_json(customer_id, e)}
             for e in found.entries]
    return {"edges": edges, "totalCount": total,
            "pageInfo": page_info([e["cursor"] for e in edges], found.next, found.prev)}


async def credit_usage(_: Any, info: GraphQLResolveInfo, input: dict) -> dict:
    d, env = context(info)
    page = paging_in(input.get("paging"))
    usage = await paged(analytics.credit_usage(d, env, analytics.CreditUsageQuery(
        customer_id=input["customerId"], limit=page.limit, currency_id=input.get("currencyId"),
        resource_id=input.get("resourceId"), time_range=input.get("timeRange"),
        start=time_field_in(input.get("startDate"), "startDate"),
        end=time_field_in(input.get("endDate"), "endDate"),
        group_by=group_by_in(input.get("groupBy")), after=page.after, before=page.before)))
    # Series have no cursors of their own: the page's are the domain's next/previous.
    return {"currency": None if usage.currency is None else currency_json(usage.currency),
            "series": [credit_series_json(s) for s in usage.series],
            "pageInfo": page_info([], usage.next, usage.prev)}


QUERIES = {"creditBalanceSummary": credit_balance_summary, "creditGrants": credit_grants,
           "creditsLedger": credits_ledger, "creditUsage": credit_usage}
MUTATIONS = {"createCreditGrant": create_credit_grant, "voidCreditGrant": void_credit_grant,
             "consumeCredits": consume_credits, "consumeCreditsAsync": consume_credits_async}
