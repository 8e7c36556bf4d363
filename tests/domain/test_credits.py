"""Credits through the domain layer (engine/domain/credits.py): each operation's result
and each refusal, typed, with no web framework in between."""

from __future__ import annotations

import pytest

from engine.core.commands import ConsumeReply
from engine.core.model import GrantStatus, GrantType, LedgerEventType
from engine.domain import credits
from engine.domain.errors import DomainError

pytestmark = pytest.mark.anyio

ENV = "default"
UNITS = 100_000  # units per credit


def grant(customer: str = "c1", amount: int = 100 * UNITS, **fields) -> credits.GrantInput:
    return credits.GrantInput(customer_id=customer, currency_id="tok", amount=amount,
                              grant_type=GrantType.PAID, display_name="top-up", **fields)


def use(key: str, amount: int = 10 * UNITS, customer: str = "c1") -> credits.ConsumeInput:
    return credits.ConsumeInput(customer_id=customer, currency_id="tok", amount=amount,
                                idempotency_key=key)


async def setup(world, *customers: str) -> None:
    await world.currency(ENV, "tok")
    for c in customers or ("c1",):
        await world.customer(ENV, c)


async def test_grant_consume_and_read_back(world) -> None:
    d = world.domain
    await setup(world)
    g = await credits.grant_credits(d, ENV, grant())
    assert g.status is GrantStatus.ACTIVE and g.amount == 100 * UNITS
    first = await credits.consume(d, ENV, use("k1"))
    assert first.amount == 10 * UNITS and first.balance.current_balance == 90 * UNITS
    # Once per key: the same request again is the same answer, applied once.
    assert await credits.consume(d, ENV, use("k1")) == first
    [(balance, currency)] = await credits.balances(d, ENV, "c1")
    assert balance.current_balance == 90 * UNITS and currency.display_name == "Tok"

    rows, next_page, prev_page = await credits.grants(d, ENV, credits.GrantsQuery(
        customer_id="c1"))
    assert [r.id for r in rows] == [g.id] and next_page is None and prev_page is None
    page = await credits.ledger(d, ENV, credits.LedgerQuery(customer_id="c1", limit=1))
    assert [e.event_type for e in page.entries] == [LedgerEventType.CREDITS_CONSUMED]
    older = await credits.ledger(d, ENV, credits.LedgerQuery(customer_id="c1",
                                                             after=page.next))
    assert [e.event_type for e in older.entries] == [LedgerEventType.CREDITS_GRANTED]

    customer, voided = await credits.void_grant(d, ENV, g.id)
    assert customer == "c1" and voided.status is GrantStatus.VOIDED


async def test_refusals_are_typed_and_name_the_field(world, refused) -> None:
    d = world.domain
    await setup(world)
    await world.customer(ENV, "gone", archived=True)
    err = await refused(credits.grant_credits(d, ENV, grant(customer="nobody")))
    assert (err.status, err.code, err.field) == (404, "CustomerNotFound", "customerId")
    err = await refused(credits.grant_credits(d, ENV, grant(customer="gone")))
    assert (err.code, err.field) == ("CustomerIsArchived", "customerId")
    err = await refused(credits.grant_credits(d, ENV, grant(priority=101)))
    assert (err.status, err.code, err.field) == (400, "BadUserInput", "priority")
    err = await refused(credits.consume(d, ENV, credits.ConsumeInput(
        customer_id="c1", currency_id="gold", amount=1, idempotency_key="k")))
    assert (err.code, err.field) == ("CustomCurrencyNotFound", "currencyId")
    err = await refused(credits.consume(d, ENV, use("x" * 256)))
    assert (err.code, err.field) == ("BadUserInput", "idempotencyKey")
    err = await refused(credits.consume(d, ENV, use("k-broke")))
    assert (err.status, err.code) == (402, "InsufficientCredits")
    assert err.headers == {"x-should-retry": "false"}
    err = await refused(credits.void_grant(d, ENV, "no-such-grant"))
    assert (err.status, err.code, err.field) == (404, "CreditGrantNotFound", "id")
    err = await refused(credits.ledger(d, ENV, credits.LedgerQuery(
        customer_id="c1", event_types=("CREDITS_STOLEN",))))
    assert (err.code, err.field) == ("BadUserInput", "eventType")
    err = await refused(credits.ledger(d, ENV, credits.LedgerQuery(customer_id="c1",
                                                                   after="²")))
    assert (err.code, err.field) == ("BadUserInput", "after")
    err = await refused(credits.grants(d, ENV, credits.GrantsQuery(customer_id="c1",
                                                                   before="x")))
    assert (err.code, err.field) == ("BadUserInput", "before")


async def test_a_grant_is_found_only_in_its_environment(world, refused) -> None:
    d = world.domain
    await setup(world)
    g = await credits.grant_credits(d, ENV, grant())
    err = await refused(credits.void_grant(d, "staging", g.id))
    assert err.code == "CreditGrantNotFound"
    # An environment name with LIKE's wildcards matches only itself, and is found.
    err = await refused(credits.void_grant(d, "d_fault", g.id))
    assert err.code == "CreditGrantNotFound"
    await world.currency("my_env%", "tok")
    await world.customer("my_env%", "c1")
    other = await credits.grant_credits(d, "my_env%", grant())
    customer, voided = await credits.void_grant(d, "my_env%", other.id)
    assert customer == "c1" and voided.status is GrantStatus.VOIDED


async def test_consume_many_checks_every_item_before_applying_any(world, refused) -> None:
    d = world.domain
    await setup(world, "c1", "c2")
    await credits.grant_credits(d, ENV, grant(amount=20 * UNITS))
    err = await refused(credits.consume_many(d, ENV, [use("a"), use("b", customer="zz")]))
    assert (err.code, err.field) == ("CustomerNotFound", "consumptions[1].customerId")
    [(balance, _)] = await credits.balances(d, ENV, "c1")
    assert balance.current_balance == 20 * UNITS  # nothing applied
    err = await refused(credits.consume_many(d, ENV, []))
    assert (err.code, err.field) == ("BadUserInput", "consumptions")

    # Business refusals are per item, in the item's place; the others are applied.
    results = await credits.consume_many(d, ENV, [use("a"), use("b", amount=50 * UNITS),
                                                  use("c")])
    assert isinstance(results[0], ConsumeReply) and isinstance(results[2], ConsumeReply)
    assert isinstance(results[1], DomainError) and results[1].code == "InsufficientCredits"
    [(balance, _)] = await credits.balances(d, ENV, "c1")
    assert balance.current_balance == 0
