"""Credits: grant, void, consume (one or many), release a reservation, balances, grants
and the ledger. One function per operation; amounts are units (10^-5 credits) and times
epoch milliseconds, already read from the wire by the caller; every rule and refusal is
here.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

import anyio
import msgspec

from engine.core.commands import (
    BalancesReply,
    BalanceView,
    Consume,
    ConsumeReply,
    CreateGrant,
    Dimensions,
    GetBalances,
    GrantReply,
    GrantView,
    Refused,
    Release,
    ReleaseReply,
    VoidGrant,
)
from engine.core.effects import LedgerEntry
from engine.core.model import GrantType, LedgerEventType
from engine.domain import constraints
from engine.domain.context import (
    Domain,
    check_key,
    engine_id,
    require_currency,
    require_customer,
    scoped_key,
)
from engine.domain.errors import DomainError, bad_input, from_refusal, not_found
from engine.domain.values import ascii_int

__all__ = ["CONSUMPTIONS_MAX", "ConsumeInput", "GrantInput", "GrantsQuery", "LedgerPage",
           "LedgerQuery", "ReleaseInput", "balances", "consume", "consume_many",
           "grant_credits", "grants", "grants_count", "ledger", "ledger_count", "pool_balance",
           "release", "void_grant"]


class GrantInput(msgspec.Struct, frozen=True, kw_only=True):
    customer_id: str
    currency_id: str
    amount: int
    grant_type: GrantType
    display_name: str
    priority: int = 50
    resource_id: str | None = None
    effective_at: int | None = None
    expire_at: int | None = None
    cost_amount: int | None = None
    cost_currency: str | None = None
    comment: str | None = None
    metadata: dict[str, str] | None = None
    await_payment: bool = False
    # The caller's Idempotency-Key (as sent; checked and scoped here).
    idempotency_key: str | None = None


class ConsumeInput(msgspec.Struct, frozen=True, kw_only=True):
    customer_id: str
    currency_id: str
    amount: int
    idempotency_key: str
    resource_id: str | None = None
    dimensions: Dimensions | None = None
    created_at: int | None = None


class ReleaseInput(msgspec.Struct, frozen=True, kw_only=True):
    customer_id: str
    reservation_id: str
    consumed_amount: int
    currency_id: str
    resource_id: str | None = None


class GrantsQuery(msgspec.Struct, frozen=True, kw_only=True):
    customer_id: str
    currency_id: str | None = None
    resource_id: str | None = None
    # ((SQL comparison, epoch ms), …) on the creation time.
    created: tuple[tuple[str, int], ...] = ()
    limit: int = 20
    after: str | None = None
    before: str | None = None


class LedgerQuery(msgspec.Struct, frozen=True, kw_only=True):
    customer_id: str
    currency_id: str | None = None
    resource_id: str | None = None
    reservation_id: str | None = None
    event_types: tuple[str, ...] = ()
    limit: int = 20
    after: str | None = None
    before: str | None = None
    start: int | None = None  # epoch ms, inclusive: entries at or after
    end: int | None = None  # epoch ms, exclusive: entries before


class LedgerPage(msgspec.Struct, frozen=True, kw_only=True):
    entries: list[LedgerEntry]
    next: str | None
    prev: str | None


PRIORITY_MAX = constraints.PRIORITY_MAX
CONSUMPTIONS_MAX = 1000
_EVENT_TYPES = frozenset(t.value for t in LedgerEventType)


def _unwrap(reply: Any) -> Any:
    if isinstance(reply, Refused):
        raise from_refusal(reply)
    return reply


async def grant_credits(d: Domain, env: str, g: GrantInput) -> GrantView:
    """Grant credits to a customer (paid or promotional; pending payment when asked)."""
    await require_customer(d, env, g.customer_id)
    await require_currency(d, env, g.currency_id)
    if not 0 <= g.priority <= PRIORITY_MAX:
        raise bad_input(f"must be an integer from 0 to {PRIORITY_MAX}", "priority")
    key = None
    if g.idempotency_key is not None:
        check_key(g.idempotency_key, "Idempotency-Key")
        key = scoped_key("grant", g.idempotency_key)
    command = CreateGrant(
        grant_id=str(uuid.uuid4()), currency_id=g.currency_id, resource_id=g.resource_id,
        amount=g.amount, grant_type=g.grant_type, display_name=g.display_name,
        priority=g.priority, effective_at=g.effective_at, expire_at=g.expire_at,
        cost_amount=g.cost_amount, cost_currency=g.cost_currency, comment=g.comment,
        metadata=g.metadata, await_payment=g.await_payment, idempotency_key=key)
    reply: GrantReply = _unwrap(await d.runtime.submit(engine_id(env, g.customer_id), command))
    return reply.grant


async def void_grant(d: Domain, env: str, grant_id: str,
                     idempotency_key: str | None = None) -> tuple[str, GrantView]:
    """Void a grant, found by its id in the caller's environment: (customer id, grant)."""
    owner = await d.store.grant_customer(env, grant_id)
    if owner is None:
        raise not_found("CreditGrantNotFound", "grant", grant_id, "id")
    key = None
    if idempotency_key is not None:
        check_key(idempotency_key, "Idempotency-Key")
        key = scoped_key("void", idempotency_key)
    reply: GrantReply = _unwrap(await d.runtime.submit(
        owner, VoidGrant(grant_id=grant_id, idempotency_key=key)))
    return owner.split("/", 1)[1], reply.grant


def _consume_command(c: ConsumeInput) -> Consume:
    return Consume(currency_id=c.currency_id, resource_id=c.resource_id, amount=c.amount,
                   idempotency_key=scoped_key("consume", c.idempotency_key),
                   dimensions=c.dimensions, created_at=c.created_at)


async def consume(d: Domain, env: str, c: ConsumeInput) -> ConsumeReply:
    """Consume credits, once per idempotency key."""
    await require_customer(d, env, c.customer_id)
    await require_currency(d, env, c.currency_id)
    check_key(c.idempotency_key, "idempotencyKey")
    return _unwrap(await d.runtime.submit(engine_id(env, c.customer_id), _consume_command(c)))


async def consume_many(d: Domain, env: str, items: list[ConsumeInput], *,
                       field: str = "consumptions") -> list[ConsumeReply | DomainError]:
    """Up to CONSUMPTIONS_MAX consumptions: all are checked (customers, currencies, keys)
    before any is applied, then each is applied and made durable; business refusals
    (insufficient credits, …) are per item, in the item's place."""
    if not 1 <= len(items) <= CONSUMPTIONS_MAX:
        raise bad_input(f"must hold 1 to {CONSUMPTIONS_MAX} items", field)
    for i, c in enumerate(items):
        at = f"{field}[{i}]"
        await require_customer(d, env, c.customer_id, field=f"{at}.customerId")
        await require_currency(d, env, c.currency_id, field=f"{at}.currencyId")
        check_key(c.idempotency_key, f"{at}.idempotencyKey")
    results: list[ConsumeReply | DomainError] = [None] * len(items)  # type: ignore[list-item]

    async def one(i: int, c: ConsumeInput) -> None:
        reply = await d.runtime.submit(engine_id(env, c.customer_id), _consume_command(c))
        results[i] = from_refusal(reply) if isinstance(reply, Refused) else reply

    async with anyio.create_task_group() as tg:
        for i, c in enumerate(items):
            tg.start_soon(one, i, c)
    return results


async def release(d: Domain, env: str, r: ReleaseInput) -> ReleaseReply:
    """Release a reservation, consuming `consumed_amount` of it. Applied once: the
    reservation id is the key, and the same release sent again gets the original answer
    (another one is refused)."""
    await require_customer(d, env, r.customer_id)
    sent = msgspec.json.encode([str(r.consumed_amount), r.currency_id, r.resource_id])
    command = Release(reservation_id=r.reservation_id, consumed_amount=r.consumed_amount,
                      currency_id=r.currency_id, resource_id=r.resource_id,
                      idempotency_key=scoped_key("release", r.reservation_id),
                      request_hash=hashlib.sha256(sent).hexdigest())
    return _unwrap(await d.runtime.submit(engine_id(env, r.customer_id), command))


async def balances(d: Domain, env: str, customer_id: str, currency_id: str | None = None,
                   resource_id: str | None = None,
                   ) -> list[tuple[BalanceView, dict[str, Any]]]:
    """The customer's balance per pool (of one currency and resource if given), each with
    its currency's document."""
    await require_customer(d, env, customer_id, allow_archived=True)
    reply: BalancesReply = _unwrap(await d.runtime.submit(
        engine_id(env, customer_id),
        GetBalances(currency_id=currency_id, resource_id=resource_id,
                    match_resource=resource_id is not None)))
    return [(b, await require_currency(d, env, b.currency_id, allow_archived=True))
            for b in reply.balances]


async def pool_balance(d: Domain, customer: str, currency_id: str,
                       resource_id: str | None) -> BalanceView | None:
    """The balance of one pool (`customer` is the engine's id), read from its actor;
    None if the customer never had credits there. No checks: for callers that made them."""
    reply = await d.runtime.submit(customer, GetBalances(
        currency_id=currency_id, resource_id=resource_id, match_resource=True))
    assert isinstance(reply, BalancesReply)
    return reply.balances[0] if reply.balances else None


async def grants(d: Domain, env: str, q: GrantsQuery) -> tuple[list[Any], str | None,
                                                                 str | None]:
    """A page of the customer's grants in creation order (rows as the store keeps them),
    with the cursors of the next and previous pages."""
    await require_customer(d, env, q.customer_id, allow_archived=True)
    return await d.store.grants_page(
        engine_id(env, q.customer_id), currency_id=q.currency_id,
        resource_id=q.resource_id, created=list(q.created), limit=q.limit, after=q.after,
        before=q.before)


async def grants_count(d: Domain, env: str, q: GrantsQuery) -> int:
    """How many grants `grants` pages through for `q` (its paging ignored): one count
    in the store."""
    await require_customer(d, env, q.customer_id, allow_archived=True)
    return await d.store.grants_count(
        engine_id(env, q.customer_id), currency_id=q.currency_id,
        resource_id=q.resource_id, created=list(q.created))


def _check_filters(q: LedgerQuery) -> None:
    if q.start is not None and q.end is not None and q.start >= q.end:
        raise bad_input("must be before endDate", "startDate")
    unknown = [t for t in q.event_types if t not in _EVENT_TYPES]
    if unknown:
        raise bad_input(f"unknown event type {unknown[0]!r}", "eventType")


async def ledger_count(d: Domain, env: str, q: LedgerQuery) -> int:
    """How many entries `ledger` pages through for `q` (its paging ignored): one count
    in the store."""
    await require_customer(d, env, q.customer_id, allow_archived=True)
    _check_filters(q)
    return await d.store.ledger_count(
        engine_id(env, q.customer_id), event_types=list(q.event_types),
        currency_id=q.currency_id or None, resource_id=q.resource_id or None,
        reservation_id=q.reservation_id or None, since=q.start, until=q.end)


async def ledger(d: Domain, env: str, q: LedgerQuery) -> LedgerPage:
    """A page of the customer's ledger, newest first; cursors are ledger sequence
    numbers (`before` alone pages towards the newer)."""
    await require_customer(d, env, q.customer_id, allow_archived=True)
    _check_filters(q)
    for name, cursor in (("after", q.after), ("before", q.before)):
        if cursor is not None and ascii_int(cursor) is None:
            raise bad_input("is not a cursor this server issued", name)
    backwards = bool(q.before and not q.after)
    rows = await d.store.ledger_page(
        engine_id(env, q.customer_id), event_types=list(q.event_types),
        currency_id=q.currency_id or None, resource_id=q.resource_id or None,
        reservation_id=q.reservation_id or None,
        after=int(q.after) if q.after else None,
        before=int(q.before) if backwards and q.before else None, limit=q.limit + 1,
        since=q.start, until=q.end)
    more = len(rows) > q.limit
    entries = list(rows[:q.limit])
    if backwards:
        entries.reverse()
    seqs = [str(e.seq) for e in entries]
    if not backwards:
        return LedgerPage(entries=entries, next=seqs[-1] if more and seqs else None,
                          prev=seqs[0] if q.after and seqs else None)
    return LedgerPage(entries=entries, next=seqs[-1] if seqs else None,
                      prev=seqs[0] if more and seqs else None)
