"""Products, plans and add-ons through the official client (and raw HTTP where it has no
call or the test needs the exact wire): the draft → publish → draft lifecycle with
entitlements and charges, package versions, list filters and cursor pages, refusals."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
import stigg


@pytest.fixture
def cat(client, uid):
    """A product, three features (boolean, metered number, enum) and a custom currency."""
    ids = {"product": uid("prod"), "flag": uid("sso"), "calls": uid("calls"),
           "seats": uid("seats"), "tier": uid("tier"), "tokens": uid("tok")}
    client.v1.products.create_product(id=ids["product"], display_name="Main")
    client.v1.features.create_feature(id=ids["flag"], display_name="SSO",
                                      feature_type="BOOLEAN")
    client.v1.features.create_feature(id=ids["calls"], display_name="Calls",
                                      feature_type="NUMBER", meter_type="INCREMENTAL")
    client.v1.features.create_feature(id=ids["seats"], display_name="Seats",
                                      feature_type="NUMBER", meter_type="FLUCTUATING")
    client.v1.features.create_feature(
        id=ids["tier"], display_name="Support", feature_type="ENUM",
        enum_configuration=[{"display_name": "Email", "value": "email"},
                            {"display_name": "Phone", "value": "phone"}])
    client.v1.credits.custom_currencies.create(id=ids["tokens"], display_name="Tokens")
    return ids


def plan(client, uid, cat, **fields):
    fields.setdefault("id", uid("plan"))
    fields.setdefault("display_name", "Pro")
    fields.setdefault("product_id", cat["product"])
    return client.v1.plans.create(**fields).data


def prices(cat, amount=29.99):
    return {"pricing_type": "PAID", "pricing_models": [
        {"billing_model": "FLAT_FEE", "price_periods": [
            {"billing_period": "MONTHLY", "price": {"amount": amount, "currency": "usd"}},
            {"billing_period": "ANNUALLY", "price": {"amount": 299, "currency": "usd"}}]},
        {"billing_model": "USAGE_BASED", "feature_id": cat["calls"], "tiers_mode": "GRADUATED",
         "price_periods": [{"billing_period": "MONTHLY", "tiers": [
             {"up_to": 1000, "unit_price": {"amount": 0, "currency": "usd"}},
             {"up_to": 10000, "unit_price": {"amount": 0.0015, "currency": "usd"}},
             {"unit_price": {"amount": 0.001, "currency": "usd"},
              "flat_price": {"amount": 5, "currency": "usd"}}]}]},
    ]}


def test_plan_lifecycle_with_versions(client, raw, uid, cat) -> None:
    p = plan(client, uid, cat, description="for teams", metadata={"k": "v"})
    assert (p.status, p.version_number, p.entitlements, p.is_latest) == ("DRAFT", 1, [], True)
    assert p.product_id == cat["product"] and p.metadata == {"k": "v"}

    made = client.v1.plans.entitlements.create(p.id, entitlements=[
        {"type": "FEATURE", "id": cat["flag"]},
        {"type": "FEATURE", "id": cat["calls"], "usage_limit": 1000, "reset_period": "MONTH",
         "monthly_reset_period_configuration": {"according_to": "StartOfTheMonth"}},
        {"type": "FEATURE", "id": cat["seats"], "has_unlimited_usage": True},
        {"type": "FEATURE", "id": cat["tier"], "enum_values": ["email"]},
        {"type": "CREDIT", "id": cat["tokens"], "amount": 500.5, "cadence": "MONTH"},
    ]).data
    assert [e.id for e in made] == [cat["flag"], cat["calls"], cat["seats"], cat["tier"],
                                    cat["tokens"]]
    calls = made[1]
    assert (calls.usage_limit, calls.reset_period, calls.is_granted, calls.behavior) == (
        1000, "MONTH", True, "Increment")
    assert calls.reset_period_configuration.according_to == "StartOfTheMonth"
    assert made[4].amount == 500.5 and made[4].cadence == "MONTH"

    updated = client.v1.plans.update(p.id, charges=prices(cat)).data
    assert updated.pricing_type == "PAID"
    charges = list(client.v1.plans.list_charges(p.id))
    assert [(c.billing_model, c.billing_period) for c in charges] == [
        ("FLAT_FEE", "MONTHLY"), ("FLAT_FEE", "ANNUALLY"), ("USAGE_BASED", "MONTHLY")]
    assert charges[0].price.amount == 29.99 and charges[0].price.currency == "usd"
    assert charges[2].feature_id == cat["calls"] and charges[2].tiers_mode == "GRADUATED"
    assert [t.up_to for t in charges[2].tiers] == [1000, 10000, None]
    assert charges[2].tiers[2].flat_price.amount == 5
    # Exact decimals on the wire, not float artefacts.
    wire = raw.get(f"/api/v1/plans/{p.id}/charges").json()["data"]
    assert '"amount":0.0015' in raw.get(f"/api/v1/plans/{p.id}/charges").text
    assert len({c["id"] for c in wire}) == 3
    assert list(client.v1.plans.list_overage_charges(p.id)) == []

    assert client.v1.plans.publish(p.id, migration_type="NEW_CUSTOMERS").data.task_id is None
    v1 = client.v1.plans.retrieve(p.id).data
    assert (v1.status, v1.version_number) == ("PUBLISHED", 1)
    assert {(e.id, e.type) for e in v1.entitlements} == {
        (cat["flag"], "FEATURE"), (cat["calls"], "FEATURE"), (cat["seats"], "FEATURE"),
        (cat["tier"], "FEATURE"), (cat["tokens"], "CREDIT")}

    # A published plan changes through a draft only.
    with pytest.raises(stigg.ConflictError):
        client.v1.plans.entitlements.create(p.id, entitlements=[
            {"type": "FEATURE", "id": cat["flag"]}])
    with pytest.raises(stigg.ConflictError):
        client.v1.plans.update(p.id, charges=prices(cat, 39))
    with pytest.raises(stigg.ConflictError):
        client.v1.plans.publish(p.id, migration_type="NEW_CUSTOMERS")
    # Cosmetic fields change in place.
    assert client.v1.plans.update(p.id, display_name="Pro+").data.display_name == "Pro+"

    draft = client.v1.plans.create_draft(p.id).data
    assert (draft.status, draft.version_number) == ("DRAFT", 2)
    client.v1.plans.update(p.id, charges=prices(cat, 39))
    changed = client.v1.plans.entitlements.update(cat["calls"], plan_id=p.id, type="FEATURE",
                                                  usage_limit=5000).data
    assert changed.usage_limit == 5000 and changed.reset_period == "MONTH"
    gone = client.v1.plans.entitlements.delete(cat["flag"], plan_id=p.id).data
    assert gone.id == cat["flag"]
    assert cat["flag"] not in {e.id for e in client.v1.plans.entitlements.list(p.id).data}
    client.v1.plans.publish(p.id, migration_type="ALL_CUSTOMERS")
    v2 = client.v1.plans.retrieve(p.id).data
    assert (v2.status, v2.version_number) == ("PUBLISHED", 2)
    assert next(iter(client.v1.plans.list_charges(p.id))).price.amount == 39

    # remove_draft puts the latest published version back.
    client.v1.plans.create_draft(p.id)
    client.v1.plans.entitlements.delete(cat["calls"], plan_id=p.id)
    client.v1.plans.update(p.id, charges={"pricing_type": "FREE"})
    assert client.v1.plans.retrieve(p.id).data.version_number == 3
    assert client.v1.plans.remove_draft(p.id).data.id == p.id
    back = client.v1.plans.retrieve(p.id).data
    assert (back.status, back.version_number, back.pricing_type) == ("PUBLISHED", 2, "PAID")
    assert cat["calls"] in {e.id for e in back.entitlements}
    with pytest.raises(stigg.ConflictError):
        client.v1.plans.remove_draft(p.id)

    client.v1.plans.archive(p.id)
    assert client.v1.plans.retrieve(p.id).data.status == "ARCHIVED"
    with pytest.raises(stigg.ConflictError):
        client.v1.plans.create_draft(p.id)


def test_package_versions_are_kept(client, server, uid, cat) -> None:
    """Both published versions stay in package_versions, readable through engine.domain.packages
    (checked in the server's database)."""
    p = plan(client, uid, cat)
    client.v1.plans.entitlements.create(p.id, entitlements=[
        {"type": "FEATURE", "id": cat["calls"], "usage_limit": 10}])
    client.v1.plans.publish(p.id, migration_type="NEW_CUSTOMERS")
    client.v1.plans.create_draft(p.id)
    client.v1.plans.entitlements.update(cat["calls"], plan_id=p.id, type="FEATURE",
                                        usage_limit=20)
    client.v1.plans.publish(p.id, migration_type="NEW_CUSTOMERS")
    # A name is not a price: renaming a published plan renames its published version too.
    client.v1.plans.update(p.id, display_name="Renamed")
    rows = _versions(server.database_url, p.id)
    assert [(v, d["status"], d["entitlements"][0]["usageLimit"], d["displayName"])
            for v, d in rows] == [(1, "PUBLISHED", 10, "Pro"), (2, "PUBLISHED", 20, "Renamed")]


def _versions(url: str, ident: str) -> list[tuple[int, dict]]:
    import json

    import anyio

    async def read():
        if url.startswith("sqlite"):
            import sqlite3
            with sqlite3.connect(url.removeprefix("sqlite:///")) as db:
                return db.execute("SELECT version, doc FROM package_versions WHERE id = ? "
                                  "ORDER BY version", (ident,)).fetchall()
        import asyncpg
        conn = await asyncpg.connect(url)
        try:
            return await conn.fetch("SELECT version, doc FROM package_versions WHERE id = $1 "
                                    "ORDER BY version", ident)
        finally:
            await conn.close()
    return [(r[0], json.loads(r[1])) for r in anyio.run(read)]


def test_addons_lifecycle(client, raw, uid, cat) -> None:
    a = client.v1.addons.create(id=uid("addon"), display_name="Extra seats",
                                product_id=cat["product"], max_quantity=10).data
    assert (a.status, a.version_number, a.max_quantity) == ("DRAFT", 1, 10)
    ents = client.v1.addons.entitlements.create(a.id, entitlements=[
        {"type": "FEATURE", "id": cat["seats"], "usage_limit": 5}]).data
    assert ents[0].usage_limit == 5
    charged = client.v1.addons.update(a.id, charges={
        "pricing_type": "PAID", "pricing_models": [
            {"billing_model": "PER_UNIT", "feature_id": cat["seats"], "min_unit_quantity": 1,
             "price_periods": [{"billing_period": "MONTHLY",
                                "price": {"amount": 10, "currency": "usd"}}]}]}).data
    assert charged.pricing_type == "PAID"
    rows = list(client.v1.addons.list_charges(a.id))
    assert [(r.billing_model, r.feature_id, r.price.amount, r.min_unit_quantity)
            for r in rows] == [("PER_UNIT", cat["seats"], 10, 1)]
    client.v1.addons.publish(a.id, migration_type="NEW_CUSTOMERS")
    assert client.v1.addons.retrieve(a.id).data.status == "PUBLISHED"
    with pytest.raises(stigg.ConflictError):
        client.v1.addons.update(a.id, max_quantity=3)
    assert client.v1.addons.create_draft(a.id).data.version_number == 2
    client.v1.addons.update(a.id, max_quantity=3)
    client.v1.addons.entitlements.update(cat["seats"], addon_id=a.id, type="FEATURE",
                                         usage_limit=7)
    assert [e.usage_limit for e in client.v1.addons.entitlements.list(a.id).data] == [7]
    client.v1.addons.remove_draft(a.id)
    back = client.v1.addons.retrieve(a.id).data
    assert (back.version_number, back.max_quantity) == (1, 10)
    # A plan lists compatible add-ons of its product.
    p = plan(client, uid, cat)
    got = client.v1.plans.update(p.id, compatible_addon_ids=[a.id]).data
    assert got.compatible_addon_ids == [a.id]
    r = raw.patch(f"/api/v1/plans/{p.id}", json={"compatibleAddonIds": [uid("nope")]})
    assert r.status_code == 400 and r.json()["field"] == "compatibleAddonIds[0]"
    r = raw.patch(f"/api/v1/addons/{a.id}", json={"parentPlanId": p.id})
    assert r.status_code == 400 and r.json()["field"] == "parentPlanId"
    client.v1.addons.archive(a.id)
    assert client.v1.addons.retrieve(a.id).data.status == "ARCHIVED"


def test_create_published_and_trial(client, uid, cat) -> None:
    p = plan(client, uid, cat, status="PUBLISHED", pricing_type="FREE",
             default_trial_config={"duration": 14, "units": "DAY"})
    assert (p.status, p.version_number, p.pricing_type) == ("PUBLISHED", 1, "FREE")
    assert (p.default_trial_config.duration, p.default_trial_config.units,
            p.default_trial_config.trial_end_behavior) == (14, "DAY", "CONVERT_TO_PAID")
    child = plan(client, uid, cat, parent_plan_id=p.id)
    assert child.parent_plan_id == p.id


def test_list_filters_and_pages(client, uid, cat) -> None:
    other = uid("prod")
    client.v1.products.create_product(id=other, display_name="Other")
    made = [plan(client, uid, cat, product_id=other) for _ in range(5)]
    client.v1.plans.publish(made[1].id, migration_type="NEW_CUSTOMERS")
    client.v1.plans.archive(made[2].id)
    every = list(client.v1.plans.list(product_id=other, limit=2))  # the auto-pager
    assert [p.id for p in every] == [p.id for p in made]
    assert [p.id for p in client.v1.plans.list(product_id=other, status=["DRAFT"])] == [
        made[0].id, made[3].id, made[4].id]
    assert [p.id for p in client.v1.plans.list(product_id=other,
                                               status=["PUBLISHED", "ARCHIVED"])] == [
        made[1].id, made[2].id]
    future = datetime.now(timezone.utc) + timedelta(days=1)
    assert list(client.v1.plans.list(product_id=other, created_at={"gte": future})) == []
    first = client.v1.plans.list(product_id=other, limit=2)
    assert first.pagination.next and first.pagination.prev is None
    second = client.v1.plans.list(product_id=other, limit=2, after=first.pagination.next)
    assert [p.id for p in second.data] == [made[2].id, made[3].id]
    a = client.v1.addons.create(id=uid("addon"), display_name="A", product_id=other).data
    assert [x.id for x in client.v1.addons.list(product_id=other)] == [a.id]
    # charges page too
    client.v1.plans.update(made[0].id, charges=prices(cat))
    assert len(list(client.v1.plans.list_charges(made[0].id, limit=1))) == 3


def test_products(client, raw, uid, cat) -> None:
    pid = uid("prod")
    made = client.v1.products.create_product(id=pid, display_name="Suite",
                                             description="all", multiple_subscriptions=True)
    assert (made.data.status, made.data.multiple_subscriptions) == ("PUBLISHED", True)
    with pytest.raises(stigg.ConflictError):
        client.v1.products.create_product(id=pid, display_name="again")
    got = client.v1.products.update_product(pid, display_name="Suite 2", metadata={"a": "b"})
    assert (got.data.display_name, got.data.metadata) == ("Suite 2", {"a": "b"})
    assert [p.id for p in client.v1.products.list_products(id=pid)] == [pid]
    assert client.v1.products.archive_product(pid).data.status == "ARCHIVED"
    assert [p.id for p in client.v1.products.list_products(id=pid, status=["PUBLISHED"])] == []
    r = raw.post("/api/v1/plans", json={"id": uid("p"), "displayName": "x", "productId": pid})
    assert r.status_code == 400 and r.json()["field"] == "productId"
    assert client.v1.products.unarchive_product(pid).data.status == "PUBLISHED"
    with pytest.raises(stigg.NotFoundError):
        client.v1.products.update_product(uid("nope"), display_name="x")

    # duplicate: the product with draft copies of its plans and add-ons
    a = client.v1.addons.create(id=uid("addon"), display_name="A", product_id=pid).data
    p = plan(client, uid, cat, product_id=pid)
    client.v1.plans.update(p.id, compatible_addon_ids=[a.id], charges=prices(cat))
    client.v1.plans.entitlements.create(p.id, entitlements=[{"type": "FEATURE",
                                                             "id": cat["flag"]}])
    target = uid("copy")
    dup = client.v1.products.duplicate_product(pid, target_id=target, display_name="Copy")
    assert (dup.data.id, dup.data.display_name) == (target, "Copy")
    copied = client.v1.plans.retrieve(f"{target}-{p.id}").data
    assert (copied.product_id, copied.status, copied.compatible_addon_ids) == (
        target, "DRAFT", [f"{target}-{a.id}"])
    assert [e.id for e in copied.entitlements] == [cat["flag"]]
    assert len(list(client.v1.plans.list_charges(copied.id))) == 3
    with pytest.raises(stigg.ConflictError):
        client.v1.products.duplicate_product(pid, target_id=target)


def test_unknown_ids(client, raw, uid, cat) -> None:
    nope = uid("nope")
    for call in (lambda: client.v1.plans.retrieve(nope),
                 lambda: client.v1.plans.publish(nope, migration_type="NEW_CUSTOMERS"),
                 lambda: client.v1.plans.entitlements.list(nope),
                 lambda: client.v1.addons.retrieve(nope),
                 lambda: client.v1.plans.list_charges(nope)):
        with pytest.raises(stigg.NotFoundError):
            call()
    p = plan(client, uid, cat)
    with pytest.raises(stigg.ConflictError):
        plan(client, uid, cat, id=p.id)
    with pytest.raises(stigg.NotFoundError):
        client.v1.plans.entitlements.delete(nope, plan_id=p.id)
    with pytest.raises(stigg.ConflictError):  # never published: nothing to go back to
        client.v1.plans.remove_draft(p.id)
    client.v1.plans.entitlements.create(p.id, entitlements=[{"type": "FEATURE",
                                                             "id": cat["flag"]}])
    with pytest.raises(stigg.ConflictError):
        client.v1.plans.entitlements.create(p.id, entitlements=[{"type": "FEATURE",
                                                                 "id": cat["flag"]}])
    r = raw.patch(f"/api/v1/plans/{p.id}/entitlements/{cat['flag']}",
                  json={"type": "CREDIT", "amount": 3})
    assert r.status_code == 400 and r.json()["field"] == "type", r.text
    r = raw.post(f"/api/v1/plans/{p.id}/entitlements", json={"entitlements": [
        {"type": "FEATURE", "id": cat["calls"], "usageLimit": 1},
        {"type": "FEATURE", "id": cat["calls"], "usageLimit": 2}]})
    assert r.status_code == 400 and r.json()["field"] == "entitlements[1].id", r.text
    client.v1.plans.archive(p.id)
    assert client.v1.plans.archive(p.id).data.status == "ARCHIVED"  # again: a no-op
    for call in (lambda: client.v1.plans.update(p.id, display_name="x"),
                 lambda: client.v1.plans.entitlements.delete(cat["flag"], plan_id=p.id),
                 lambda: client.v1.plans.publish(p.id, migration_type="NEW_CUSTOMERS")):
        with pytest.raises(stigg.ConflictError):
            call()


def _fill(value, cat):
    """`value` with each "F_<name>" string replaced by the fixture's id for <name>."""
    if isinstance(value, dict):
        return {k: _fill(v, cat) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, cat) for v in value]
    if isinstance(value, str) and value.startswith("F_"):
        return cat[value[2:]]
    return value


def _model(**fields):
    base = {"billingModel": "FLAT_FEE",
            "pricePeriods": [{"billingPeriod": "MONTHLY",
                              "price": {"amount": 10, "currency": "usd"}}]}
    return {**base, **fields}


@pytest.mark.parametrize("charges, field", [
    ({"pricingType": "PAID", "pricingModels": [_model(featureId="F_calls")]},
     "charges.pricingModels[0].featureId"),
    ({"pricingType": "PAID", "pricingModels": [_model(billingModel="PER_UNIT")]},
     "charges.pricingModels[0].featureId"),
    ({"pricingType": "PAID", "pricingModels": [_model(pricePeriods=[
        {"billingPeriod": "MONTHLY", "price": {"amount": -1, "currency": "usd"}}])]},
     "charges.pricingModels[0].pricePeriods[0].price.amount"),
    ({"pricingType": "PAID", "pricingModels": [_model(pricePeriods=[
        {"billingPeriod": "MONTHLY", "price": {"amount": 1, "currency": "dollars"}}])]},
     "charges.pricingModels[0].pricePeriods[0].price.currency"),
    ({"pricingType": "PAID", "pricingModels": [_model(
        billingModel="USAGE_BASED", featureId="F_calls", tiersMode="VOLUME", pricePeriods=[
            {"billingPeriod": "MONTHLY", "tiers": [
                {"upTo": 100, "unitPrice": {"amount": 1, "currency": "usd"}},
                {"upTo": 50, "unitPrice": {"amount": 1, "currency": "usd"}}]}])]},
     "charges.pricingModels[0].pricePeriods[0].tiers[1].upTo"),
    ({"pricingType": "PAID", "pricingModels": [_model(
        billingModel="USAGE_BASED", featureId="F_calls", pricePeriods=[
            {"billingPeriod": "MONTHLY", "tiers": [
                {"upTo": 100, "unitPrice": {"amount": 1, "currency": "usd"}}]}])]},
     "charges.pricingModels[0].tiersMode"),
    ({"pricingType": "PAID", "pricingModels": [_model(
        billingModel="PER_UNIT", featureId="F_flag")]},
     "charges.pricingModels[0].featureId"),
    ({"pricingType": "PAID", "pricingModels": [_model(pricePeriods=[
        {"billingPeriod": "MONTHLY", "price": {"amount": 1, "currency": "usd"}},
        {"billingPeriod": "MONTHLY", "price": {"amount": 2, "currency": "usd"}}])]},
     "charges.pricingModels[0].pricePeriods[1].billingPeriod"),
    ({"pricingType": "PAID", "pricingModels": [_model(pricePeriods=[
        {"billingPeriod": "MONTHLY", "price": {"amount": 1, "currency": "usd"}},
        {"billingPeriod": "ANNUALLY", "price": {"amount": 2, "currency": "eur"}}])]},
     "charges.pricingModels[0].pricePeriods[1]"),
    ({"pricingType": "PAID"}, "charges.pricingModels"),
    ({"pricingType": "FREE", "pricingModels": [_model()]}, "charges.pricingModels"),
    ({"pricingType": "PAID", "pricingModels": [_model(pricePeriods=[])]},
     "charges.pricingModels[0].pricePeriods"),
    ({"pricingType": "PAID", "pricingModels": [_model(bogus=1)]},
     "charges.pricingModels[0].bogus"),
    ({"pricingType": "PAID", "pricingModels": [_model(
        billingModel="CREDIT_BASED")]}, "charges.pricingModels[0].topUpCustomCurrencyId"),
    ({"pricingType": "PAID", "pricingModels": [_model(minUnitQuantity=1)]},
     "charges.pricingModels[0].minUnitQuantity"),
    # A GB invoice would take the flat fee's GBP price and the seats' USD default.
    ({"pricingType": "PAID", "pricingModels": [
        _model(pricePeriods=[
            {"billingPeriod": "MONTHLY", "price": {"amount": 10, "currency": "usd"}},
            {"billingPeriod": "MONTHLY", "billingCountryCode": "GB",
             "price": {"amount": 8, "currency": "gbp"}}]),
        _model(billingModel="PER_UNIT", featureId="F_seats", pricePeriods=[
            {"billingPeriod": "MONTHLY", "price": {"amount": 5, "currency": "usd"}}])]},
     "charges.pricingModels[1].pricePeriods[0]"),
])
def test_bad_charges_name_the_field(raw, client, uid, cat, charges, field) -> None:
    charges = _fill(charges, cat)
    p = plan(client, uid, cat)
    r = raw.patch(f"/api/v1/plans/{p.id}", json={"charges": charges})
    assert r.status_code == 400, r.text
    assert r.json()["field"] == field, r.text
    assert client.v1.plans.retrieve(p.id).data.pricing_type is None  # nothing applied


@pytest.mark.parametrize("ent, field", [
    ({"type": "FEATURE", "id": "NOPE"}, "entitlements[0].id"),
    ({"type": "CREDIT", "id": "NOPE", "amount": 1, "cadence": "MONTH"}, "entitlements[0].id"),
    ({"type": "FEATURE", "id": "F_calls"}, "entitlements[0].usageLimit"),
    ({"type": "FEATURE", "id": "F_calls", "usageLimit": -1}, "entitlements[0].usageLimit"),
    ({"type": "FEATURE", "id": "F_calls", "usageLimit": 5, "hasUnlimitedUsage": True},
     "entitlements[0].usageLimit"),
    ({"type": "FEATURE", "id": "F_calls", "usageLimit": 5, "resetPeriod": "DAY",
      "monthlyResetPeriodConfiguration": {"accordingTo": "StartOfTheMonth"}},
     "entitlements[0].monthlyResetPeriodConfiguration"),
    ({"type": "FEATURE", "id": "F_calls", "usageLimit": 5, "resetPeriod": "WEEK",
      "weeklyResetPeriodConfiguration": {"accordingTo": "EveryFunday"}},
     "entitlements[0].weeklyResetPeriodConfiguration.accordingTo"),
    ({"type": "FEATURE", "id": "F_calls", "usageLimit": 5, "resetPeriod": "FORTNIGHT"},
     "entitlements[0].resetPeriod"),
    ({"type": "FEATURE", "id": "F_seats", "usageLimit": 5, "resetPeriod": "MONTH"},
     "entitlements[0].resetPeriod"),
    ({"type": "FEATURE", "id": "F_flag", "usageLimit": 5}, "entitlements[0].usageLimit"),
    ({"type": "FEATURE", "id": "F_tier"}, "entitlements[0].enumValues"),
    ({"type": "FEATURE", "id": "F_tier", "enumValues": ["fax"]}, "entitlements[0].enumValues"),
    ({"type": "FEATURE", "id": "F_calls", "usageLimit": 1, "amount": 3},
     "entitlements[0].amount"),
    ({"type": "CREDIT", "id": "F_tokens", "amount": 0, "cadence": "MONTH"},
     "entitlements[0].amount"),
    ({"type": "CREDIT", "id": "F_tokens", "amount": 5}, "entitlements[0].cadence"),
    ({"type": "CREDIT", "id": "F_tokens", "amount": 5, "cadence": "MONTH",
      "usageLimit": 3}, "entitlements[0].usageLimit"),
])
def test_bad_entitlements_name_the_field(raw, client, uid, cat, ent, field) -> None:
    ent = _fill(ent, cat)
    p = plan(client, uid, cat)
    ok = {"type": "FEATURE", "id": cat["flag"]}
    r = raw.post(f"/api/v1/plans/{p.id}/entitlements", json={"entitlements": [ent, ok]})
    assert r.status_code == 400, r.text
    assert r.json()["field"] == field, r.text
    assert client.v1.plans.entitlements.list(p.id).data == []  # nothing half-applied


@pytest.mark.parametrize("body, field", [
    ({"displayName": "x", "productId": "P"}, "id"),
    ({"id": "a/b", "displayName": "x", "productId": "P"}, "id"),
    ({"id": "I", "productId": "P"}, "displayName"),
    ({"id": "I", "displayName": " ", "productId": "P"}, "displayName"),
    ({"id": "I", "displayName": "x", "productId": "NOPE"}, "productId"),
    ({"id": "I", "displayName": "x", "productId": "P", "status": "ARCHIVED"}, "status"),
    ({"id": "I", "displayName": "x", "productId": "P", "maxQuantity": 3}, "maxQuantity"),
    ({"id": "I", "displayName": "x", "productId": "P", "parentPlanId": "NOPE"},
     "parentPlanId"),
    ({"id": "I", "displayName": "x", "productId": "P",
      "defaultTrialConfig": {"duration": 1.5, "units": "DAY"}}, "defaultTrialConfig.duration"),
    ({"id": "I", "displayName": "x", "productId": "P",
      "defaultTrialConfig": {"duration": 3, "units": "YEAR"}}, "defaultTrialConfig.units"),
    ({"id": "I", "displayName": "x", "productId": "P", "pricingType": "PAID",
      "status": "PUBLISHED"}, "charges"),
])
def test_bad_plan_bodies(raw, uid, cat, body, field) -> None:
    ident = uid("plan")
    body = {k: (ident if v == "I" else cat["product"] if v == "P" else v)
            for k, v in body.items()}
    r = raw.post("/api/v1/plans", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["field"] == field, r.text
    if body.get("id") == ident and field != "charges":
        assert raw.get(f"/api/v1/plans/{ident}").status_code == 404


def test_publish_needs_migration_type_and_amounts_are_exact(raw, client, uid, cat) -> None:
    p = plan(client, uid, cat)
    r = raw.post(f"/api/v1/plans/{p.id}/publish", json={})
    assert r.status_code == 400 and r.json()["field"] == "migrationType"
    raw.patch(f"/api/v1/plans/{p.id}", json={"charges": {"pricingType": "PAID", "pricingModels": [
        _model(pricePeriods=[{"billingPeriod": "MONTHLY",
                              "price": {"amount": 0.1, "currency": "USD"}}])]}})
    rows = raw.get(f"/api/v1/plans/{p.id}/charges").json()["data"]
    assert rows[0]["price"] == {"amount": 0.1, "currency": "usd"}
    assert Decimal(str(rows[0]["price"]["amount"])) == Decimal("0.1")


def test_credit_top_ups_overage_and_minimum_spend(client, raw, uid, cat) -> None:
    a = client.v1.addons.create(id=uid("addon"), display_name="Top-up",
                                product_id=cat["product"]).data
    client.v1.addons.update(a.id, charges={"pricing_type": "PAID", "pricing_models": [
        {"billing_model": "CREDIT_BASED", "top_up_custom_currency_id": cat["tokens"],
         "billing_cadence": "ONE_OFF", "price_periods": [
             {"billing_period": "MONTHLY", "price": {"amount": 10, "currency": "usd"},
              "credit_rate": {"amount": 1000, "currency_id": cat["tokens"]},
              "credit_grant_cadence": "BEGINNING_OF_BILLING_PERIOD"}]}]})
    row = next(iter(client.v1.addons.list_charges(a.id)))
    assert (row.billing_model, row.billing_cadence, row.top_up_custom_currency_id) == (
        "CREDIT_BASED", "ONE_OFF", cat["tokens"])
    # A prepaid top-up carries its minimum and maximum purchase.
    bounded = client.v1.addons.create(id=uid("addon"), display_name="Bounded top-up",
                                      product_id=cat["product"]).data
    client.v1.addons.update(bounded.id, charges={"pricing_type": "PAID", "pricing_models": [
        {"billing_model": "CREDIT_BASED", "top_up_custom_currency_id": cat["tokens"],
         "billing_cadence": "ONE_OFF", "min_unit_quantity": 1000,
         "max_unit_quantity": 50000, "price_periods": [
             {"billing_period": "MONTHLY", "price": {"amount": "0.002", "currency": "usd"}}]}]})
    top = next(iter(client.v1.addons.list_charges(bounded.id)))
    assert (top.min_unit_quantity, top.max_unit_quantity) == (1000, 50000)
    assert (row.credit_rate.amount, row.credit_rate.currency_id) == (1000, cat["tokens"])
    # The client's addon update takes a status: PUBLISHED publishes.
    assert client.v1.addons.update(a.id, status="PUBLISHED").data.status == "PUBLISHED"

    p = plan(client, uid, cat)
    client.v1.plans.update(p.id, charges={
        **prices(cat),
        "minimum_spend": [{"billing_period": "MONTHLY",
                           "minimum": {"amount": 100, "currency": "usd"}}],
        "overage_billing_period": "MONTHLY",
        "overage_pricing_models": [{"feature_id": cat["calls"], "price_periods": [
            {"billing_period": "MONTHLY", "price": {"amount": 0.01, "currency": "usd"},
             "block_size": 100}]}]})
    over = list(client.v1.plans.list_overage_charges(p.id))
    assert [(o.feature_id, o.price.amount, o.block_size) for o in over] == [
        (cat["calls"], 0.01, 100)]
    assert over[0].id not in {c.id for c in client.v1.plans.list_charges(p.id)}
    r = raw.patch(f"/api/v1/plans/{p.id}", json={"charges": {
        "pricingType": "FREE", "minimumSpend": [
            {"billingPeriod": "MONTHLY", "minimum": {"amount": -5, "currency": "usd"}}]}})
    assert r.status_code == 400 and r.json()["field"] == "charges.minimumSpend[0].minimum.amount"
    r = raw.patch(f"/api/v1/plans/{p.id}", json={"charges": {
        "pricingType": "FREE", "overagePricingModels": [{"featureId": uid("nope"),
                                                         "pricePeriods": []}]}})
    assert r.status_code == 400 and r.json()["field"] == \
        "charges.overagePricingModels[0].featureId"
