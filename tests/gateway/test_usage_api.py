"""Usage reporting, raw events and estimates through the official client and raw HTTP."""

from __future__ import annotations

import pytest
import stigg


@pytest.fixture
def setup(client, uid):
    """A customer with 100 credits, and features: images (5 credits each, calculated),
    seats (no credits), calls (COUNT of `call` events, 2 credits each), tokens (SUM of the
    `tokens` dimension of `completion` events where model starts with gpt, 0.001 each),
    latency (MAX, metering only)."""
    cur, cust = uid("tok"), uid("cust")
    # Meters match every event of the environment, and the module's tests share one: each
    # setup's event names are its own.
    call, completion = uid("call"), uid("completion")
    client.v1.credits.custom_currencies.create(id=cur, display_name="AI Tokens")
    client.v1.customers.provision(id=cust)
    client.v1.credits.grants.create(customer_id=cust, currency_id=cur, amount=100,
                                    display_name="g", grant_type="PAID")
    f = {k: uid(k) for k in ("images", "seats", "calls", "tokens", "latency")}
    on = lambda name: {"conditions": [{"field": "eventName", "operation": "EQUALS",  # noqa: E731
                                       "value": name}]}
    client.v1.features.create_feature(id=f["images"], display_name="Images",
                                      feature_type="NUMBER", meter_type="INCREMENTAL",
                                      extra_body={"creditRate": {"amount": 5, "currencyId": cur}})
    client.v1.features.create_feature(id=f["seats"], display_name="Seats",
                                      feature_type="NUMBER", meter_type="FLUCTUATING")
    client.v1.features.create_feature(
        id=f["calls"], display_name="Calls", feature_type="NUMBER",
        meter={"aggregation": {"function": "COUNT"}, "filters": [on(call)]},
        extra_body={"creditRate": {"amount": 2, "currencyId": cur}})
    client.v1.features.create_feature(
        id=f["tokens"], display_name="Tokens", feature_type="NUMBER",
        meter={"aggregation": {"function": "SUM", "field": "tokens"}, "filters": [
            {"conditions": [{"field": "eventName", "operation": "EQUALS", "value": completion},
                            {"field": "model", "operation": "STARTS_WITH", "value": "gpt"}]}]},
        extra_body={"creditRate": {"amount": 0.001, "currencyId": cur}})
    client.v1.features.create_feature(
        id=f["latency"], display_name="Latency", feature_type="NUMBER",
        meter={"aggregation": {"function": "MAX", "field": "ms"}, "filters": [on(completion)]})
    f["call"], f["completion"] = call, completion  # the event names
    return cust, cur, f


def balance(server, customer: str) -> float:
    with server.http() as http:
        r = http.get("/api/v1/credits/balance", params={"customerId": customer})
    return r.json()["data"]["balances"][0]["currentBalance"]


def test_delta_and_set_with_atomic_credit_burn(server, client, setup, uid) -> None:
    cust, cur, f = setup
    r = client.v2.usage.report(usages=[{"customerId": cust, "featureId": f["images"],
                                        "value": 3, "idempotencyKey": uid("k")}]).data
    [u] = r.usages
    assert (u.current_usage, u.credit.consumed, u.credit.currency_id) == (3, 15, cur)
    [wallet] = r.credits
    assert (wallet.currency_id, wallet.current_usage, wallet.usage_limit) == (cur, 15, 100)
    r = client.v2.usage.report(usages=[{"customerId": cust, "featureId": f["images"],
                                        "value": 5, "updateBehavior": "SET"}]).data
    assert (r.usages[0].current_usage, r.usages[0].credit.consumed) == (5, 10)
    r = client.v2.usage.report(usages=[{"customerId": cust, "featureId": f["seats"],
                                        "value": 7}]).data
    assert r.usages[0].credit is None and r.usages[0].current_usage == 7
    assert balance(server, cust) == 75
    with pytest.warns(DeprecationWarning):  # the client marks v1 deprecated; it still works
        v1 = client.v1.usage.report(usages=[{"customerId": cust, "featureId": f["images"],
                                             "value": 1}]).data
    assert (v1[0].credit.consumed, v1[0].credit.current_usage, v1[0].credit.usage_limit) == (
        5, 30, 100)


def test_hard_limit_refuses_the_batch_whole(server, client, setup) -> None:
    cust, cur, f = setup
    with pytest.raises(stigg.APIStatusError) as raised:
        client.v2.usage.report(usages=[
            {"customerId": cust, "featureId": f["seats"], "value": 1},
            {"customerId": cust, "featureId": f["images"], "value": 21}])
    assert raised.value.status_code == 402
    assert raised.value.body["code"] == "InsufficientCredits"
    assert raised.value.body["field"] == "usages[1].value"
    assert balance(server, cust) == 100
    r = client.v2.usage.report(usages=[{"customerId": cust, "featureId": f["seats"],
                                        "value": 0, "updateBehavior": "SET"}]).data
    assert r.usages[0].current_usage == 0, "the refused batch recorded nothing"


def test_replayed_key_returns_the_original_with_nothing_burned(server, client, setup,
                                                                uid) -> None:
    cust, cur, f = setup
    item = {"customerId": cust, "featureId": f["images"], "value": 2,
            "idempotencyKey": uid("k")}
    first = client.v2.usage.report(usages=[item]).data.usages[0]
    again = client.v2.usage.report(usages=[item]).data.usages[0]
    assert (again.current_usage, again.credit.consumed) == (first.current_usage, 0)
    assert first.credit.consumed == 10 and balance(server, cust) == 90
    with pytest.raises(stigg.ConflictError) as raised:
        client.v2.usage.report(usages=[{**item, "value": 3}])
    assert raised.value.body["field"] == "usages[0].idempotencyKey"


def test_usage_bad_input_names_the_item(raw, setup, uid) -> None:
    cust, cur, f = setup
    good = {"customerId": cust, "featureId": f["images"], "value": 1}
    cases = [
        ([good, {**good, "featureId": uid("nope")}], 404, "usages[1].featureId"),
        ([good, {**good, "customerId": uid("nope")}], 404, "usages[1].customerId"),
        ([{**good, "value": "lots"}], 400, "usages[0].value"),
        ([{**good, "value": -1, "updateBehavior": "SET"}], 400, "usages[0].value"),
        ([{**good, "updateBehavior": "ADD"}], 400, "usages[0].updateBehavior"),
        ([{**good, "createdAt": "noon"}], 400, "usages[0].createdAt"),
        ([], 400, "usages"),
        ([good] * 1001, 400, "usages"),
    ]
    for usages, status, field in cases:
        r = raw.post("/api/v2/usage", json={"usages": usages})
        assert (r.status_code, r.json().get("field")) == (status, field), r.text
    assert raw.get("/api/v1/credits/balance",
                   params={"customerId": cust}).json()["data"]["balances"][0][
        "currentBalance"] == 100


def test_events_meter_filter_aggregate_and_burn(server, raw, setup, uid) -> None:
    cust, cur, f = setup
    events = [
        {"customerId": cust, "eventName": f["call"], "idempotencyKey": uid("e")},
        {"customerId": cust, "eventName": f["call"], "idempotencyKey": uid("e")},
        {"customerId": cust, "eventName": f["completion"], "idempotencyKey": uid("e"),
         "dimensions": {"model": "gpt-5", "tokens": 2500, "ms": 120}},
        {"customerId": cust, "eventName": f["completion"], "idempotencyKey": uid("e"),
         "dimensions": {"model": "claude", "tokens": 9999, "ms": 300}},
    ]
    r = raw.post("/api/v1/events", json={"events": events})
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert (data["accepted"], data["duplicates"]) == (4, 0)
    # 2 calls x 2 credits + 2500 gpt tokens x 0.001; the claude tokens are not metered.
    assert balance(server, cust) == 100 - 4 - 2.5
    again = raw.post("/api/v1/events", json={"events": events[:2]}).json()["data"]
    assert (again["accepted"], again["duplicates"]) == (0, 2)
    assert balance(server, cust) == 93.5
    # The usage counters (MAX of latency over both completions).
    est = raw.post("/api/v1/usage/estimate", json={"customerId": cust,
                                                   "featureId": f["images"], "value": 2})
    assert est.json()["data"]["estimates"][0]["estimatedCost"] == 10


def test_events_beyond_a_hard_limit_are_metered_and_report_the_shortfall(server, raw, setup,
                                                                         uid) -> None:
    cust, cur, f = setup
    events = [{"customerId": cust, "eventName": f["call"], "idempotencyKey": uid("e")}
              for _ in range(60)]
    data = raw.post("/api/v1/events", json={"events": events}).json()["data"]
    assert data["accepted"] == 60
    [credit] = data["credits"]
    assert (credit["consumed"], credit["uncovered"]) == (100, 20)
    assert balance(server, cust) == 0


def test_event_bad_input(raw, setup, uid) -> None:
    cust, cur, f = setup
    good = {"customerId": cust, "eventName": f["call"], "idempotencyKey": "k1"}
    cases = [
        ([good, {**good, "idempotencyKey": ""}], "events[1].idempotencyKey"),
        ([{k: v for k, v in good.items() if k != "idempotencyKey"}], "events[0].idempotencyKey"),
        ([{**good, "timestamp": "2999-01-01T00:00:00Z"}], "events[0].timestamp"),
        ([{**good, "dimensions": {"a": {"b": 1}}}], "events[0].dimensions"),
        ([{**good, "eventName": ""}], "events[0].eventName"),
    ]
    for events, field in cases:
        r = raw.post("/api/v1/events", json={"events": events})
        assert (r.status_code, r.json().get("field")) == (400, field), r.text


def test_estimates_record_nothing(server, client, setup, uid) -> None:
    cust, cur, f = setup
    est = client.v1.usage.estimate(customer_id=cust, feature_id=f["images"], value=30).data
    [e] = est.estimates
    assert (e.currency_id, e.current_balance, e.estimated_cost) == (cur, 100, 150)
    assert (e.balance_after_estimate, e.would_overdraft) == (-50, True)
    assert e.breakdown[0].feature_id == f["images"]
    none = client.v1.usage.estimate(customer_id=cust, feature_id=f["seats"], value=1).data
    assert (none.estimates, none.warnings) == ([], ["FEATURE_NOT_CREDIT_BASED"])
    ev = client.v1.events.estimate(customer_id=cust, event_name=f["completion"],
                                   dimensions={"model": "gpt-4o", "tokens": 1000, "ms": 5}).data
    [e] = ev.estimates
    assert e.estimated_cost == 1
    codes = {b.feature_id: getattr(b, "warning_code", None) for b in e.breakdown}
    assert codes == {f["tokens"]: None}
    unknown = client.v1.events.estimate(customer_id=cust, event_name=uid("nothing")).data
    assert unknown.warnings == ["FEATURE_NOT_FOUND"]
    assert balance(server, cust) == 100
