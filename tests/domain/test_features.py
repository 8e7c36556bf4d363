"""Features through the domain layer (engine/domain/features.py)."""

from __future__ import annotations

from decimal import Decimal

import msgspec
import pytest
from msgspec import UNSET

from engine.core.meters import Meter
from engine.domain import currencies, features

pytestmark = pytest.mark.anyio

ENV = "default"


def new(ident: str, kind: str = "NUMBER", **fields) -> features.FeatureCreate:
    return features.FeatureCreate(id=ident, display_name=ident.title(), feature_type=kind,
                                  **fields)


async def test_metered_credit_backed_feature(world, refused) -> None:
    d = world.domain
    await currencies.create(d, ENV, currencies.CurrencyInput(id="tok", display_name="T"))
    meter = msgspec.convert({"aggregation": {"function": "COUNT"}, "filters": [{"conditions": [
        {"field": "eventName", "operation": "EQUALS", "value": "image"}]}]}, Meter)
    doc = await features.create(d, ENV, new(
        "images", meter=meter,
        credit_rate=features.CreditRate(amount=Decimal("2.5"), currency_id="tok")))
    assert doc.meter_type == "INCREMENTAL"  # a meter counts up unless told otherwise
    assert features.credit_rate_units(doc) == ("tok", 250_000)
    err = await refused(features.create(d, ENV, new("images")))
    assert err.code == "DuplicatedEntityNotAllowed"

    # An update that breaks a rule changes nothing.
    err = await refused(features.update(d, ENV, "images", features.FeatureUpdate(
        display_name="Pictures", credit_rate=features.CreditRate(amount=Decimal("1"),
                                                                 currency_id="gold"))))
    assert (err.code, err.field) == ("CustomCurrencyNotFound", "creditRate.currencyId")
    kept = await features.require_feature(d, ENV, "images")
    assert kept.display_name == "Images"
    doc = await features.update(d, ENV, "images", features.FeatureUpdate(credit_rate=None))
    assert features.credit_rate_units(doc) is None


async def test_feature_rules_and_lists(world, refused) -> None:
    d = world.domain
    err = await refused(features.create(d, ENV, new("flag", "BOOLEAN",
                                                    meter_type="INCREMENTAL")))
    assert (err.code, err.field) == ("BadUserInput", "meterType")
    err = await refused(features.create(d, ENV, new("plan-tier", "ENUM")))
    assert (err.code, err.field) == ("BadUserInput", "enumConfiguration")
    err = await refused(features.create(d, ENV, features.FeatureCreate(
        id="x", feature_type="NUMBER")))
    assert (err.code, err.field) == ("BadUserInput", "displayName")
    err = await refused(features.create(d, ENV, new("a/b")))
    assert (err.code, err.field) == ("BadUserInput", "id")
    err = await refused(features.create(d, ENV, new("seats", unit_transformation=
                                                    features.UnitTransformation(divide=0))))
    assert err.field == "unitTransformation.divide"

    await features.create(d, ENV, new("flag", "BOOLEAN"))
    await features.create(d, ENV, new("seats"))
    page = await features.list_features(d, ENV, features.FeaturesQuery(
        feature_types=("BOOLEAN",)))
    assert [f.id for f in page.items] == ["flag"]
    err = await refused(features.list_features(d, ENV, features.FeaturesQuery(
        statuses=("GONE",))))
    assert (err.code, err.field) == ("BadUserInput", "status")
    await features.archive(d, ENV, "seats", True)
    err = await refused(features.require_feature(d, ENV, "seats"))
    assert err.code == "FeatureIsArchived"
    one = await features.list_features(d, ENV, features.FeaturesQuery(id="seats"))
    assert [f.id for f in one.items] == ["seats"] and one.next is None
    assert (await features.list_features(d, ENV, features.FeaturesQuery(id="no"))).items == []
    err = await refused(features.update(d, ENV, "seats", features.FeatureUpdate(
        description=UNSET, display_name="S")))
    assert (err.code, err.field) == ("FeatureIsArchived", "id")
