"""A subscription is a typed document (engine/domain/subscriptions/document.py) whose
stored names are the keys every earlier version wrote: a row as any version stored it
decodes, catches up and is written back in the same shape — no migration."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.core.commands import BalancesReply, GetBalances
from engine.domain import packages
from engine.domain.context import engine_id
from engine.domain.subscriptions import operations
from engine.domain.subscriptions.document import Subscription, decode, encode

pytestmark = pytest.mark.anyio

ENV = "production"
DAY = 86_400_000
START = 1_767_225_600_000  # 2026-01-01T00:00:00Z

# The document as the first subscriptions code wrote it (fe86aae): no due time, no
# credit windows, no credit or usage anchor, no idempotency record.
FIRST_SHAPE: dict[str, Any] = {
    "id": "subscription-pro-1", "customerId": "acme", "payingCustomerId": None,
    "resourceId": None, "status": "ACTIVE", "billingCountryCode": None, "coupons": None,
    "metadata": {}, "budget": None, "billingId": None, "paymentCollectionMethod": None,
    "_start": START, "_anchor": START, "_trialEnd": None, "_trialEndBehavior": None,
    "_end": None, "_cancelAt": None, "_scheduled": [],
    "planId": "pro", "planVersion": 1, "productId": "app", "pricingType": "FREE",
    "billingPeriod": "MONTHLY", "addons": [], "unitQuantity": 1,
    "_createdAt": START, "_updatedAt": START,
}

# Everything today's code writes, in use: credit windows, a scheduled change, an add-on.
FULL_SHAPE: dict[str, Any] = {
    **FIRST_SHAPE,
    "addons": [{"id": "boost", "quantity": 2, "version": 3}],
    "charges": [{"id": "seats", "quantity": 5, "type": "FEATURE"}],
    "prices": [{"billingModel": "FLAT_FEE", "amount": "9.99"}],
    "billingInformation": None, "cancelReason": None, "dueAt": START + 31 * DAY,
    "_creditAnchor": START, "_periodStart": START, "_periodEnd": START + 31 * DAY,
    "_usageAnchor": START - DAY, "_idempotency": ["key-1", "ab" * 32],
    "_scheduled": [{"at": START + 31 * DAY, "status": "SCHEDULED", "type": "PLAN",
                    "changes": {"planId": "team", "planVersion": 2}}],
    "_credits": {"plan|tokens": {"window": START, "end": START + 31 * DAY,
                                 "units": 100_000, "ids": ["subscription-x-0"]}},
    "_archivedAt": None,
}


def test_every_stored_shape_decodes_and_is_written_back_unchanged() -> None:
    for shape in (FIRST_SHAPE, FULL_SHAPE):
        sub = decode(shape)
        written = encode(sub)
        # What was stored comes back as it was; what the shape lacked gets its default
        # (an absent due time stays absent: never computed).
        assert {k: written[k] for k in shape} == shape
        assert ("dueAt" in written) == ("dueAt" in shape)
        assert decode(msgspec.json.encode(shape)) == sub
    full = decode(FULL_SHAPE)
    assert full.addons[0].quantity == 2 and full.scheduled[0].changes["planId"] == "team"
    assert full.credits["plan|tokens"].units == 100_000 and full.usage_anchor == START - DAY


def test_changes_set_the_fields_they_name() -> None:
    sub = decode(FIRST_SHAPE)
    sub.apply({"planId": "team", "planVersion": 4, "billingPeriod": "ANNUALLY",
               "addons": [{"id": "boost", "quantity": 1, "version": 2}]})
    assert (sub.plan_id, sub.plan_version, sub.billing_period) == ("team", 4, "ANNUALLY")
    assert sub.addons[0].id == "boost"
    with pytest.raises(KeyError):
        sub.apply({"noSuchField": 1})


_ids = st.text(st.characters(min_codepoint=33, max_codepoint=0x2FFF), min_size=1,
               max_size=12)
_ms = st.integers(min_value=0, max_value=2**53)


@settings(max_examples=200, deadline=None)
@given(ident=_ids, customer=_ids, plan=_ids, version=st.integers(1, 10**6), start=_ms,
       trial=st.none() | _ms, due=st.none() | _ms, quantity=st.integers(1, 10**6),
       window=_ms, units=st.integers(0, 10**17))
def test_a_document_round_trips(ident: str, customer: str, plan: str, version: int,
                                start: int, trial: int | None, due: int | None,
                                quantity: int, window: int, units: int) -> None:
    sub = decode({"id": ident, "customerId": customer, "planId": plan, "planVersion": version,
                  "_start": start, "_anchor": trial or start, "_trialEnd": trial,
                  "dueAt": due, "addons": [{"id": plan, "quantity": quantity, "version": 1}],
                  "_credits": {f"plan|{plan}": {"window": window, "end": window + 1,
                                                "units": units, "ids": [ident]}}})
    assert decode(encode(sub)) == sub
    assert decode(msgspec.json.encode(sub)) == sub


async def test_a_first_version_row_catches_up_and_keeps_its_shape(world: Any) -> None:
    """A row as the first subscriptions code stored it, read by today's code: it is
    brought up to date (its recurring credits granted once, its due time computed) and
    stored again in the same keys."""
    d = world.domain
    world.clock.set(START + DAY)
    await world.customer(ENV, "acme")
    await world.currency(ENV, "tokens")
    await packages.create_product(d.documents, ENV, {"id": "app", "displayName": "App"})
    await packages.create_package(d.documents, ENV, "plan", {
        "id": "pro", "productId": "app", "displayName": "Pro"})
    await packages.set_entitlements(d.documents, ENV, "plan", "pro", [packages.EntitlementIn(
        type="CREDIT", id="tokens", amount=1000, cadence="MONTH")], replace=False)
    await packages.publish(d.documents, ENV, "plan", "pro")
    await world.document("subscriptions", ENV, FIRST_SHAPE)

    sub = await operations.get(d, ENV, FIRST_SHAPE["id"])
    assert isinstance(sub, Subscription)
    assert sub.status == "ACTIVE" and sub.period_start == START
    assert isinstance(sub.due_at, int) and sub.due_at > START + DAY
    assert sub.credits["plan|tokens"].units == 1000 * 10**5
    stored = await d.documents.get("subscriptions", ENV, FIRST_SHAPE["id"])
    stamps = ("_createdAt", "_updatedAt")  # (world.document stamps the row itself)
    assert {k: stored[k] for k in FIRST_SHAPE if k not in stamps} == {
        k: v for k, v in FIRST_SHAPE.items() if k not in stamps}
    assert stored["dueAt"] == sub.due_at and "plan|tokens" in stored["_credits"]
    # Read again: nothing is due, nothing granted twice.
    again = await operations.get(d, ENV, FIRST_SHAPE["id"])
    assert again == sub
    reply = await d.runtime.submit(engine_id(ENV, "acme"), GetBalances(currency_id="tokens"))
    assert isinstance(reply, BalancesReply)
    assert reply.balances[0].current_balance == 1000 * 10**5
