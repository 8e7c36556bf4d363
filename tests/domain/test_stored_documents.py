"""Customers, currencies, features, coupons, products, plans and add-ons are typed
documents (engine/domain/stored.py) whose stored names are the keys every earlier version
wrote: a row as an earlier version stored it decodes, answers the domain's reads and is
written back in the same keys — no migration. The cache holds the typed document; a process that reads the row afresh gets
an equal one."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.core.meters import Meter
from engine.domain import coupons, currencies, customers, features, packages, promotions
from engine.domain.stored import (
    DOCUMENT_TYPES,
    AmountOff,
    Coupon,
    CreditRate,
    Currency,
    Customer,
    Feature,
    Plan,
    Product,
)
from persistence.documents import Catalog

pytestmark = pytest.mark.anyio

ENV = "production"
AT = 1_767_225_600_000  # 2026-01-01T00:00:00Z

ENTITLEMENT = {  # a plan's FEATURE entitlement, as the first packages code stored it
    "type": "FEATURE", "id": "images", "behavior": "Increment", "description": None,
    "displayNameOverride": None, "hiddenFromWidgets": [], "isCustom": False,
    "isGranted": True, "hasSoftLimit": False, "order": None, "enumValues": None,
    "hasUnlimitedUsage": False, "usageLimit": 10, "resetPeriod": "MONTH",
    "resetPeriodConfiguration": {"accordingTo": "SubscriptionStart"},
    "_createdAt": AT, "_updatedAt": AT}
PROMOTION = {  # a promotional entitlement, as the first promotions code stored it
    "id": "p-1", "featureId": "images", "description": None, "period": "1 month",
    "usageLimit": 50, "hasUnlimitedUsage": False, "hasSoftLimit": False,
    "resetPeriod": None, "resetPeriodConfiguration": None, "enumValues": None,
    "isVisible": True, "_startDate": AT, "_endDate": AT + 31 * 86_400_000,
    "_createdAt": AT, "_updatedAt": AT, "_archivedAt": None}

# Rows as earlier versions wrote them (the keys each version's create wrote; `_archivedAt`
# absent before archiving existed for the table, amounts in the shapes of their time).
EARLIER: dict[str, dict[str, Any]] = {
    "customer_profiles": {  # only the fields the client sent
        "id": "acme", "metadata": {}, "email": "billing@acme.test", "billingId": None,
        "_createdAt": AT, "_updatedAt": AT},
    "currencies": {
        "id": "tokens", "displayName": "Tokens", "description": None, "metadata": {},
        "symbol": "T", "units": {"plural": "tokens", "singular": "token"},
        "topUp": {"pricePerCredit": 1000, "priceCurrency": "usd", "minimumPurchase": None,
                  "maximumPurchase": None},
        "_createdAt": AT, "_updatedAt": AT},
    "features": {  # a credit rate stored as the exact decimal's text
        "id": "images", "featureType": "NUMBER", "meterType": "INCREMENTAL",
        "featureStatus": "NEW", "description": None, "featureUnits": None,
        "featureUnitsPlural": None, "metadata": {}, "displayName": "Images",
        "meter": {"aggregation": {"function": "COUNT", "field": None},
                  "filters": [{"conditions": [{"field": "eventName", "operation": "EQUALS",
                                               "value": "image", "values": None}]}]},
        "unitTransformation": None, "enumConfiguration": None,
        "creditRate": {"amount": "2.5", "currencyId": "tokens"},
        "_createdAt": AT, "_updatedAt": AT, "_archivedAt": None},
    "coupons": {  # fixed amounts before they were kept in units: the decimal's text
        "id": "ten", "name": "Ten off", "description": None, "metadata": {},
        "type": "FIXED", "percentOff": None,
        "amountsOff": [{"amount": "10", "currency": "usd"}],
        "duration": "REPEATING", "durationInMonths": 3,
        "_createdAt": AT, "_updatedAt": AT, "_archivedAt": None},
    "products": {
        "id": "app", "displayName": "App", "description": None, "metadata": {},
        "multipleSubscriptions": False,
        "productSettings": {"subscriptionCancellationTime": "END_OF_BILLING_PERIOD",
                            "subscriptionEndSetup": "CANCEL_SUBSCRIPTION",
                            "subscriptionStartSetup": "PLAN_SELECTION",
                            "downgradePlanId": None, "prorateAtEndOfBillingPeriod": None,
                            "subscriptionStartPlanId": None},
        "usageResetCutoffRule": {"behavior": "NEVER_RESET"},
        "_createdAt": AT, "_updatedAt": AT},
    "plans": {  # before `hidden`, never published
        "id": "pro", "productId": "app", "displayName": "Pro", "description": None,
        "billingId": None, "metadata": {}, "pricingType": "FREE", "status": "DRAFT",
        "versionNumber": 1, "entitlements": [ENTITLEMENT], "charges": None,
        "parentPlanId": None, "compatibleAddonIds": [],
        "defaultTrialConfig": {"duration": 14, "units": "DAY",
                               "trialEndBehavior": "CONVERT_TO_PAID",
                               "budget": {"hasSoftLimit": True, "limit": "50"}},
        "_createdAt": AT, "_updatedAt": AT},
    "addons": {
        "id": "seats", "productId": "app", "displayName": "Seats", "description": None,
        "billingId": None, "metadata": {}, "pricingType": "FREE", "status": "DRAFT",
        "versionNumber": 1, "hidden": False, "entitlements": [], "charges": None,
        "maxQuantity": None, "dependencies": [], "_createdAt": AT, "_updatedAt": AT},
}


async def _insert_raw(catalog: Catalog, table: str, doc: dict[str, Any]) -> None:
    """A row written the way an earlier version wrote it: its JSON as it was."""
    extra = catalog._COLUMNS.get(table, ())
    columns = ["environment", "id", "doc", "created_at", "updated_at", "archived_at", *extra]
    values = [ENV, doc["id"], json.dumps(doc), doc["_createdAt"], doc["_updatedAt"],
              doc.get("_archivedAt"),
              *(doc.get("".join(p if i == 0 else p.title()
                                for i, p in enumerate(c.split("_")))) for c in extra)]
    await catalog.store.execute(
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' for _ in values)})",
        *values)


async def _row(catalog: Catalog, table: str, ident: str) -> dict[str, Any]:
    [(doc,)] = await catalog.store.fetch(
        f"SELECT doc FROM {table} WHERE environment = ? AND id = ?", ENV, ident)
    return json.loads(doc)


async def test_earlier_rows_decode_and_keep_their_keys(world: Any) -> None:
    d = world.domain
    for table, doc in EARLIER.items():
        await _insert_raw(world.catalog, table, doc)

    customer = await customers.get(d, ENV, "acme")
    assert isinstance(customer, Customer)
    assert customer.email == "billing@acme.test" and customer.billing_id is None
    assert customer.name is msgspec.UNSET  # never sent: still absent
    currency = await world.catalog.get("currencies", ENV, "tokens")
    assert isinstance(currency, Currency) and currency.top_up is not None
    assert currency.top_up.price_per_credit == 1000
    feature = await features.require_feature(d, ENV, "images")
    assert isinstance(feature, Feature) and isinstance(feature.meter, Meter)
    assert features.credit_rate_units(feature) == ("tokens", 250_000)
    [(metered, meter)] = await d.documents.metered_features(ENV)
    assert metered == feature and meter == feature.meter
    coupon = await coupons.get(d, ENV, "ten")
    assert isinstance(coupon, Coupon) and coupon.amounts_off == [AmountOff("10", "usd")]
    product = await packages.get_product(d.documents, ENV, "app")
    assert isinstance(product, Product) and product.display_name == "App"
    assert product.product_settings is not None and product.usage_reset_cutoff_rule is not None
    assert product.usage_reset_cutoff_rule.behavior == "NEVER_RESET"
    plan = await packages.get_package(d.documents, ENV, "plan", "pro")
    assert isinstance(plan, Plan) and plan.hidden is False and plan.compatible_addon_ids == []
    trial = plan.default_trial_config
    assert trial is not None and (trial.duration, trial.units) == (14, "DAY")
    assert trial.budget is not None and trial.budget.limit == "50"
    [ent] = plan.entitlements
    assert (ent.type, ent.usage_limit, ent.reset_period) == ("FEATURE", 10, "MONTH")
    await d.store.execute(
        "INSERT INTO promotional_entitlements (environment, customer_id, feature_id, doc, "
        "status, created_at, updated_at, archived_at) VALUES (?, ?, ?, ?, ?, ?, ?, NULL)",
        ENV, "acme", "images", json.dumps(PROMOTION), "Active", AT, AT)
    [promo] = await d.store.promotions(ENV, "acme")
    assert (promo.feature_id, promo.usage_limit, promo.start) == ("images", 50, AT)

    # Written back by today's code: every earlier key is still there with its value
    # (only what the change touched differs).
    world.clock.advance(1_000)
    await customers.update(d, ENV, "acme", {"name": "Acme"})
    await currencies.update(d, ENV, "tokens", currencies.CurrencyUpdate(symbol="TK"))
    await features.update(d, ENV, "images", features.FeatureUpdate(description="Pictures"))
    await coupons.update(d, ENV, "ten", coupons.CouponUpdate(name="Tenner"))
    await packages.update_product(d.documents, ENV, "app", {"description": "Apps"})
    await packages.update_package(d.documents, ENV, "plan", "pro", {"description": "Best"})
    await packages.update_package(d.documents, ENV, "addon", "seats", {"maxQuantity": 5})
    changed = {"customer_profiles": {"name": "Acme"}, "currencies": {"symbol": "TK"},
               "features": {"description": "Pictures"}, "coupons": {"name": "Tenner"},
               "products": {"description": "Apps"}, "plans": {"description": "Best"},
               "addons": {"maxQuantity": 5}}
    for table, doc in EARLIER.items():
        ident = doc["id"]
        row = await _row(world.catalog, table, ident)
        expected = {**doc, **changed[table], "_updatedAt": AT + 1_000}
        nested = ("creditRate", "entitlements")
        assert {k: row[k] for k in expected if k not in nested} == {
            k: v for k, v in expected.items() if k not in nested}, table
        # A fresh process reads what this one cached.
        fresh = Catalog(world.catalog.store, clock=world.clock)
        assert await fresh.get(table, ENV, ident) == await world.catalog.get(table, ENV, ident)
    # An entitlement keeps every key it had (a CREDIT entitlement's fields are added, null).
    [ent_row] = (await _row(world.catalog, "plans", "pro"))["entitlements"]
    assert {k: ent_row[k] for k in ENTITLEMENT} == ENTITLEMENT
    revoked = await promotions.revoke(d, ENV, "acme", "images")
    [(doc,)] = await d.store.fetch("SELECT doc FROM promotional_entitlements WHERE "
                                   "environment = ? AND feature_id = ?", ENV, "images")
    assert json.loads(doc) == {**PROMOTION, "_endDate": revoked.end, "isGranted": True,
                               "_archivedAt": revoked.end, "_updatedAt": revoked.end}
    # The rate is exact whichever way it was kept.
    assert Decimal(str((await _row(world.catalog, "features", "images"))["creditRate"]
                       ["amount"])) == Decimal("2.5")


async def test_a_dict_is_refused_for_a_typed_table(world: Any) -> None:
    """The catalog writes a typed table's documents from their type only, so a shape
    cannot drift by a dict that skipped the type."""
    with pytest.raises(TypeError, match="Feature"):
        await world.catalog.insert("features", ENV, EARLIER["features"])
    assert set(DOCUMENT_TYPES) == set(EARLIER)


_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.none() | _text, email=st.none() | _text,
       metadata=st.dictionaries(_text, _text, max_size=3),
       rate=st.decimals(min_value=Decimal("0.00001"), max_value=Decimal("100000"),
                        places=5))
def test_typed_documents_round_trip(name: Any, email: Any, metadata: dict[str, str],
                                    rate: Decimal) -> None:
    """Whatever a document holds, its stored JSON decodes to an equal document."""
    for doc in (Customer(id="c", name=name, email=email, metadata=metadata, created_at=AT,
                         updated_at=AT),
                Feature(id="f", feature_type="NUMBER", meter_type="INCREMENTAL",
                        credit_rate=CreditRate(rate, "tokens"), metadata=metadata)):
        assert msgspec.json.decode(msgspec.json.encode(doc), type=type(doc)) == doc
