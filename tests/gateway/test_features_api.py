"""Features (the metering catalog) through the official client."""

from __future__ import annotations

import pytest
import stigg

COUNT_CALLS = {"aggregation": {"function": "COUNT"},
               "filters": [{"conditions": [{"field": "eventName", "operation": "EQUALS",
                                            "value": "api_call"}]}]}


@pytest.fixture
def currency(client, uid) -> str:
    cid = uid("tok")
    client.v1.credits.custom_currencies.create(id=cid, display_name="AI Tokens")
    return cid


def test_feature_lifecycle_with_meter_and_credit_rate(client, currency, uid) -> None:
    fid = uid("images")
    f = client.v1.features.create_feature(
        id=fid, display_name="Images", feature_type="NUMBER", feature_units="image",
        feature_units_plural="images", meter=COUNT_CALLS, metadata={"team": "gen"},
        extra_body={"creditRate": {"amount": 5, "currencyId": currency}}).data
    assert (f.id, f.feature_type, f.meter_type, f.feature_status) == (
        fid, "NUMBER", "INCREMENTAL", "NEW")
    assert f.meter.aggregation.function == "COUNT"
    assert f.meter.filters[0].conditions[0].value == "api_call"
    assert f.model_extra["creditRate"] == {"amount": 5, "currencyId": currency}
    with pytest.raises(stigg.ConflictError):
        client.v1.features.create_feature(id=fid, display_name="again", feature_type="NUMBER")

    got = client.v1.features.retrieve_feature(fid).data
    assert got.display_name == "Images" and got.metadata == {"team": "gen"}
    updated = client.v1.features.update_feature(
        fid, display_name="Pictures", extra_body={"creditRate": {"amount": 2.5,
                                                                  "currencyId": currency}}).data
    assert updated.display_name == "Pictures"
    assert updated.model_extra["creditRate"]["amount"] == 2.5
    assert updated.meter.aggregation.function == "COUNT", "an absent field is left alone"

    # The client's Feature model has no archivedAt; it arrives as an extra field.
    assert client.v1.features.archive_feature(fid).data.model_extra["archivedAt"] is not None
    assert client.v1.features.unarchive_feature(fid).data.model_extra["archivedAt"] is None
    with pytest.raises(stigg.NotFoundError) as raised:
        client.v1.features.retrieve_feature(uid("nope"))
    assert raised.value.body["code"] == "FeatureNotFound"


def test_feature_list_filters(client, uid) -> None:
    tag = uid("f")
    client.v1.features.create_feature(id=f"{tag}-bool", display_name="SSO",
                                      feature_type="BOOLEAN")
    client.v1.features.create_feature(id=f"{tag}-seats", display_name="Seats",
                                      feature_type="NUMBER", meter_type="FLUCTUATING")
    client.v1.features.create_feature(id=f"{tag}-calls", display_name="Calls",
                                      feature_type="NUMBER", meter=COUNT_CALLS)
    mine = lambda page: {f.id for f in page if f.id.startswith(tag)}  # noqa: E731
    assert mine(client.v1.features.list_features(limit=1)) == {
        f"{tag}-bool", f"{tag}-seats", f"{tag}-calls"}
    assert mine(client.v1.features.list_features(feature_type=["BOOLEAN"])) == {f"{tag}-bool"}
    assert mine(client.v1.features.list_features(meter_type=["FLUCTUATING", "INCREMENTAL"])) == {
        f"{tag}-seats", f"{tag}-calls"}
    assert [f.id for f in client.v1.features.list_features(id=f"{tag}-calls")] == [
        f"{tag}-calls"]


@pytest.mark.parametrize("fields, field", [
    ({"feature_type": "BOOLEAN", "meter": COUNT_CALLS}, "meter"),
    ({"feature_type": "NUMBER", "meter": COUNT_CALLS, "meter_type": "None"}, "meterType"),
    ({"feature_type": "NUMBER", "meter": {"aggregation": {"function": "SUM"},
                                          "filters": COUNT_CALLS["filters"]}},
     "meter.aggregation.field"),
    ({"feature_type": "NUMBER", "meter": {"aggregation": {"function": "COUNT"},
                                          "filters": [{"conditions": [
                                              {"field": "x", "operation": "LESS_THAN",
                                               "value": "a"}]}]}},
     "meter.filters[0].conditions[0].value"),
    ({"feature_type": "NUMBER", "meter": {"aggregation": {"function": "AVERAGE"},
                                          "filters": COUNT_CALLS["filters"]}},
     "meter.aggregation.function"),
    ({"feature_type": "ENUM"}, "enumConfiguration"),
    ({"feature_type": "NUMBER", "unit_transformation": {"divide": 0}},
     "unitTransformation.divide"),
])
def test_bad_definitions_are_400_naming_the_field(client, uid, fields, field) -> None:
    with pytest.raises(stigg.BadRequestError) as raised:
        client.v1.features.create_feature(id=uid("bad"), display_name="x", **fields)
    assert raised.value.body["field"] == field


def test_credit_rate_needs_a_known_currency_and_a_positive_amount(client, currency,
                                                                  uid) -> None:
    for rate, field, status in (({"amount": 1, "currencyId": uid("nope")},
                                 "creditRate.currencyId", 404),
                                ({"amount": 0, "currencyId": currency}, "creditRate.amount", 400),
                                ({"amount": 1}, "creditRate.currencyId", 400)):
        with pytest.raises(stigg.APIStatusError) as raised:
            client.v1.features.create_feature(id=uid("f"), display_name="x",
                                              feature_type="NUMBER", meter=COUNT_CALLS,
                                              extra_body={"creditRate": rate})
        assert (raised.value.status_code, raised.value.body["field"]) == (status, field)
