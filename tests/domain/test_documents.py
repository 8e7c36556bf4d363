"""Customers and currencies through the domain layer (engine/domain/customers.py,
currencies.py): documents, their rules and refusals, with no web framework."""

from __future__ import annotations

import pytest

from engine.domain import credits, currencies, customers
from engine.domain.stored import AmountOff, CurrencyUnits, TopUp

pytestmark = pytest.mark.anyio

ENV = "default"


async def test_customer_lifecycle(world, refused) -> None:
    d = world.domain
    doc = await customers.provision(d, ENV, "c1", {"email": "a@b.c", "metadata": None})
    assert doc.id == "c1" and doc.metadata == {} and doc.email == "a@b.c"
    err = await refused(customers.provision(d, ENV, "c1", {}))
    assert (err.status, err.code, err.field) == (409, "DuplicatedEntityNotAllowed", "id")
    for bad in ("", "a/b", "x" * 256):
        err = await refused(customers.provision(d, ENV, bad, {}))
        assert (err.code, err.field) == ("BadUserInput", "id")
    world.clock.advance(1_000)
    updated = await customers.update(d, ENV, "c1", {"name": "Ann"})
    assert updated.name == "Ann" and updated.email == "a@b.c"
    assert updated.updated_at == doc.created_at + 1_000
    assert (await customers.get(d, ENV, "c1")).name == "Ann"
    page = await customers.list_customers(d, ENV, customers.CustomersQuery(email="a@b.c"))
    assert [c.id for c in page.items] == ["c1"]
    assert (await customers.list_customers(d, "other", customers.CustomersQuery())).items == []

    # Archived: still readable, not updatable, takes no credits; unarchived again.
    await customers.archive(d, ENV, "c1", True)
    assert (await customers.get(d, ENV, "c1")).archived_at is not None
    err = await refused(customers.update(d, ENV, "c1", {"name": "Bo"}))
    assert (err.code, err.field) == ("CustomerIsArchived", "id")
    await currencies.create(d, ENV, currencies.CurrencyInput(id="tok", display_name="Tokens"))
    err = await refused(credits.consume(d, ENV, credits.ConsumeInput(
        customer_id="c1", currency_id="tok", amount=1, idempotency_key="k")))
    assert err.code == "CustomerIsArchived"
    await customers.archive(d, ENV, "c1", False)
    assert (await customers.update(d, ENV, "c1", {"name": "Bo"})).name == "Bo"
    err = await refused(customers.get(d, ENV, "nobody"))
    assert (err.status, err.code, err.field) == (404, "CustomerNotFound", "id")


async def test_currency_rules(world, refused) -> None:
    d = world.domain
    top_up = currencies.TopUp(price_per_credit=1_000, price_currency="EUR",
                              minimum_purchase=5 * 100_000, maximum_purchase=100 * 100_000)
    doc = await currencies.create(d, ENV, currencies.CurrencyInput(
        id="tok", display_name="Tokens", units=currencies.Units("tokens", "token"),
        top_up=top_up))
    assert doc.top_up == TopUp(price_per_credit=1_000, price_currency="eur",
                               minimum_purchase=500_000, maximum_purchase=10_000_000)
    assert doc.units == CurrencyUnits(plural="tokens", singular="token")
    err = await refused(currencies.create(d, ENV, currencies.CurrencyInput(
        id="tok", display_name="Again")))
    assert err.code == "DuplicatedEntityNotAllowed"
    err = await refused(currencies.create(d, ENV, currencies.CurrencyInput(
        id="t2", display_name="T", top_up=currencies.TopUp(
            price_per_credit=1, minimum_purchase=2, maximum_purchase=1))))
    assert (err.code, err.field) == ("BadUserInput", "topUp.minimumPurchase")
    err = await refused(currencies.update(d, ENV, "tok", currencies.CurrencyUpdate(
        top_up=currencies.TopUp(price_per_credit=1, price_currency="euro"))))
    assert (err.code, err.field) == ("BadUserInput", "topUp.priceCurrency")
    assert (await world.catalog.get("currencies", ENV, "tok")).top_up.price_currency == "eur"

    # Absent fields are left alone; None clears an optional one.
    doc = await currencies.update(d, ENV, "tok", currencies.CurrencyUpdate(symbol="T",
                                                                          top_up=None))
    assert doc.symbol == "T" and doc.top_up is None and doc.display_name == "Tokens"
    await currencies.archive(d, ENV, "tok", True)
    active = await currencies.list_currencies(d, ENV, 20, None, None, frozenset({"ACTIVE"}))
    archived = await currencies.list_currencies(d, ENV, 20, None, None,
                                                frozenset({"ARCHIVED"}))
    assert active.items == [] and [c.id for c in archived.items] == ["tok"]
    err = await refused(currencies.list_currencies(d, ENV, 20, None, None,
                                                   frozenset({"GONE"})))
    assert (err.code, err.field) == ("BadUserInput", "status")


async def test_auto_recharge_settings_need_a_top_up_price(world, refused) -> None:
    from engine.domain import recharge

    d = world.domain
    await customers.provision(d, ENV, "c1", {})
    await currencies.create(d, ENV, currencies.CurrencyInput(id="tok", display_name="T"))
    assert (await recharge.get_settings(d, ENV, "c1", "tok")).settings is None
    wanted = recharge.RechargeInput(customer_id="c1", currency_id="tok", enabled=True,
                                    threshold_value=10 * 100_000,
                                    target_balance=50 * 100_000)
    err = await refused(recharge.save_settings(d, ENV, wanted))
    assert (err.code, err.field) == ("BadUserInput", "currencyId")
    await currencies.update(d, ENV, "tok", currencies.CurrencyUpdate(
        top_up=currencies.TopUp(price_per_credit=2_000)))
    saved = await recharge.save_settings(d, ENV, wanted)
    assert saved.settings is not None and saved.settings.price == 2_000
    got = await recharge.get_settings(d, ENV, "c1", "tok")
    assert got.settings is not None and got.settings.target_balance == 50 * 100_000
    err = await refused(recharge.get_settings(d, ENV, "c1", "gold"))
    assert err.code == "CustomCurrencyNotFound"


async def test_coupon_rules(world, refused) -> None:
    from decimal import Decimal

    from engine.domain import coupons

    d = world.domain
    doc = await coupons.create(d, ENV, coupons.CouponCreate(
        id="ten", name="Ten off", amounts_off=[coupons.AmountOff(Decimal("10"), "USD")],
        duration_in_months=3))
    assert doc.type == "FIXED" and doc.amounts_off == [AmountOff(amount=1_000_000,
                                                                 currency="usd")]
    assert (doc.duration, doc.duration_in_months) == ("REPEATING", 3)
    for bad, field in (
            (coupons.CouponCreate(id="x", name="X"), "percentOff"),
            (coupons.CouponCreate(id="x", name="X", percent_off=Decimal("12.5")), "percentOff"),
            (coupons.CouponCreate(id="x", name="X", percent_off=Decimal(10),
                                  duration="ONCE", duration_in_months=2), "durationInMonths"),
            (coupons.CouponCreate(id="x", name=" ", percent_off=Decimal(10)), "name"),
            (coupons.CouponCreate(id="x", name="X", amounts_off=[
                coupons.AmountOff(Decimal(1), "usd"), coupons.AmountOff(Decimal(2), "USD")]),
             "amountsOff[1].currency")):
        err = await refused(coupons.create(d, ENV, bad))
        assert (err.code, err.field) == ("BadUserInput", field)
    updated = await coupons.update(d, ENV, "ten", coupons.CouponUpdate(name="Tenner"))
    assert updated.name == "Tenner" and updated.amounts_off == doc.amounts_off
    archived = await coupons.archive(d, ENV, "ten")
    again = await coupons.archive(d, ENV, "ten")
    assert archived.archived_at == again.archived_at is not None
    page = await coupons.list_coupons(d, ENV, coupons.CouponsQuery(
        statuses=frozenset({"ACTIVE"})))
    assert page.items == []
    err = await refused(coupons.get(d, ENV, "nope"))
    assert (err.status, err.code, err.field) == (404, "CouponNotFound", "id")
