"""Dimension values keep the digits the client sent (exact amounts, invariant 5).

A JSON number in a usage report's, raw event's or consumption's dimensions used to be
decoded as a binary float: `0.30000000000000001` became `0.3`, so two different values
were grouped as one and a meter condition on the exact value never matched. Raw HTTP, so
that the digits on the wire are exactly the ones written here.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

CLOSE = "0.30000000000000001"  # the nearest binary float is 0.3's


def _post(raw, path: str, text: str):
    return raw.post(path, content=text.encode(), headers={"content-type": "application/json"})


@pytest.fixture
def metered(raw, uid):
    cust, cur, feature, event = uid("cust"), uid("cur"), uid("feat"), uid("ev")
    assert raw.post("/api/v1/credits/custom-currencies",
                    json={"id": cur, "displayName": "Credits"}).status_code < 300
    assert raw.post("/api/v1/customers", json={"id": cust}).status_code < 300
    assert raw.post("/api/v1/credits/grants",
                    json={"customerId": cust, "currencyId": cur, "amount": 100,
                          "displayName": "g", "grantType": "PAID"}).status_code < 300
    # Counts `event`s whose `ratio` equals CLOSE, exactly: 2 credits each.
    r = raw.post("/api/v1/features", json={
        "id": feature, "displayName": "Exact", "featureType": "NUMBER",
        "meter": {"aggregation": {"function": "COUNT"}, "filters": [{"conditions": [
            {"field": "eventName", "operation": "EQUALS", "value": event},
            {"field": "ratio", "operation": "EQUALS", "value": CLOSE}]}]},
        "creditRate": {"amount": 2, "currencyId": cur}})
    assert r.status_code < 300, r.text
    return cust, cur, feature, event


def test_a_meter_condition_sees_the_digits_sent(raw, metered) -> None:
    cust, cur, feature, event = metered
    estimate = "/api/v1/events/estimate"
    exact = _post(raw, estimate, f'{{"customerId": "{cust}", "eventName": "{event}", '
                                 f'"dimensions": {{"ratio": {CLOSE}}}}}')
    assert exact.status_code == 200, exact.text
    [line] = exact.json()["data"]["estimates"]
    assert line["estimatedCost"] == 2
    rounded = _post(raw, estimate, f'{{"customerId": "{cust}", "eventName": "{event}", '
                                   '"dimensions": {"ratio": 0.3}}')
    assert rounded.json()["data"]["estimates"] == []


def test_usage_grouped_by_a_dimension_keeps_values_apart(raw, metered, uid) -> None:
    cust, cur, _, _ = metered
    feature = uid("images")
    assert raw.post("/api/v1/features", json={
        "id": feature, "displayName": "Images", "featureType": "NUMBER",
        "meterType": "INCREMENTAL"}).status_code < 300
    for value, ratio in ((1, CLOSE), (2, "0.3"), (4, "3E-1")):
        r = _post(raw, "/api/v2/usage",
                  f'{{"usages": [{{"customerId": "{cust}", "featureId": "{feature}", '
                  f'"value": {value}, "idempotencyKey": "{uid("k")}", '
                  f'"dimensions": {{"ratio": {ratio}}}}}]}}')
        assert r.status_code == 200, r.text
    start = (datetime.now(timezone.utc) - timedelta(hours=2)).isoformat()
    history = raw.get(f"/api/v1/usage/{cust}/history/{feature}",
                      params={"startDate": start, "groupBy": "ratio"}).json()["data"]
    last = {s["tags"][0]["value"]: s["points"][-1]["value"] for s in history["series"]}
    # 0.3 and 3E-1 are one number written two ways; CLOSE is another number.
    assert last == {CLOSE: 1, "0.3": 6}


@pytest.mark.parametrize("value", ["null", "[1]", '{"a": 1}'])
def test_a_dimension_that_is_not_a_value_is_refused_by_name(raw, metered, uid, value) -> None:
    cust, cur, _, event = metered
    consumption = _post(raw, "/api/v1/credits/consumption",
                        f'{{"customerId": "{cust}", "currencyId": "{cur}", "amount": 1, '
                        f'"idempotencyKey": "{uid("k")}", "dimensions": {{"bad": {value}}}}}')
    assert consumption.status_code == 400, consumption.text
    assert consumption.json()["field"] == "dimensions"
    assert "'bad'" in consumption.json()["message"]
    events = _post(raw, "/api/v1/events",
                   f'{{"events": [{{"customerId": "{cust}", "eventName": "{event}", '
                   f'"idempotencyKey": "{uid("k")}", "dimensions": {{"bad": {value}}}}}]}}')
    assert events.status_code == 400, events.text
    assert events.json()["field"] == "events[0].dimensions"
    balance = raw.get("/api/v1/credits/balance", params={"customerId": cust}).json()
    assert balance["data"]["balances"][0]["currentBalance"] == 100  # nothing applied


def test_dimensions_are_bounded(raw, metered, uid) -> None:
    cust, cur, _, _ = metered
    many = ", ".join(f'"d{i}": {i}' for i in range(51))
    r = _post(raw, "/api/v1/credits/consumption",
              f'{{"customerId": "{cust}", "currencyId": "{cur}", "amount": 1, '
              f'"idempotencyKey": "{uid("k")}", "dimensions": {{{many}}}}}')
    assert r.status_code == 400 and r.json()["field"] == "dimensions", r.text
    huge = _post(raw, "/api/v1/credits/consumption",
                 f'{{"customerId": "{cust}", "currencyId": "{cur}", "amount": 1, '
                 f'"idempotencyKey": "{uid("k")}", "dimensions": {{"x": 1e5000}}}}')
    assert huge.status_code == 400 and huge.json()["field"] == "dimensions", huge.text
