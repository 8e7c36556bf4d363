"""Promotional entitlements through the domain layer (engine/domain/promotions.py)."""

from __future__ import annotations

import dataclasses

import pytest

from engine.billing.periods import WEEK_MS
from engine.domain import features, promotions
from engine.domain.errors import DomainError
from engine.domain.promotions import PromotionIn, PromotionsQuery

pytestmark = pytest.mark.anyio

ENV = "default"


async def test_grant_list_and_revoke(world) -> None:
    changed: list[tuple[str, str]] = []
    d = dataclasses.replace(world.domain,
                            on_entitlements_changed=lambda env, cid: changed.append((env, cid)))
    await world.customer(ENV, "acme")
    await features.create(d, ENV, features.FeatureCreate(
        id="seats", display_name="Seats", feature_type="NUMBER"))
    await features.create(d, ENV, features.FeatureCreate(
        id="sso", display_name="SSO", feature_type="BOOLEAN"))
    start = world.clock.now_ms()

    docs = await promotions.grant(d, ENV, "acme", [
        PromotionIn(feature_id="seats", period="1 week", usage_limit=5),
        PromotionIn(feature_id="sso", period="lifetime")])
    assert [(x.feature_id, x.end) for x in docs] == [
        ("seats", start + WEEK_MS), ("sso", None)]
    assert changed == [(ENV, "acme")]  # the gateway's cache forgets the customer

    # Checked whole before anything is written: one bad item, nothing granted.
    with pytest.raises(DomainError) as caught:
        await promotions.grant(d, ENV, "acme", [
            PromotionIn(feature_id="sso", period="1 month"),
            PromotionIn(feature_id="seats", period="custom", usage_limit=1,
                        custom_end_date="yesterday")])
    assert (caught.value.status, caught.value.field) == (
        400, "promotionalEntitlements[1].customEndDate")
    assert [x.period for x in await d.store.promotions(ENV, "acme")] == ["1 week",
                                                                         "lifetime"]

    world.clock.advance(WEEK_MS)  # the week is over: seats is Expired
    page, nxt, prev = await promotions.list_promotions(d, ENV, PromotionsQuery(
        customer_id="acme", limit=1, statuses=frozenset({"Expired"})))
    assert [x.feature_id for x in page] == ["seats"] and nxt is None and prev is None

    revoked = await promotions.revoke(d, ENV, "acme", "sso")
    assert revoked.end == world.clock.now_ms()
    assert changed == [(ENV, "acme"), (ENV, "acme")]
    page, _, _ = await promotions.list_promotions(d, ENV, PromotionsQuery(
        customer_id="acme", limit=10))
    assert [x.feature_id for x in page] == ["seats"]  # revoked ones are not listed
    with pytest.raises(DomainError) as caught:
        await promotions.revoke(d, ENV, "acme", "sso")
    assert (caught.value.status, caught.value.code) == (404, "NotFound")
