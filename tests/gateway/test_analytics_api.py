"""Usage analytics through the official client: credit usage series per feature and per
dimension values, every time range, usage history, and the dimension-key lookup."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
import stigg


@pytest.fixture
def used(client, raw, uid):
    """A customer who used credits through two features and directly, with dimensions,
    an hour ago and now."""
    cur, cust, call = uid("tok"), uid("cust"), uid("call")
    client.v1.credits.custom_currencies.create(id=cur, display_name="AI Tokens",
                                               units={"singular": "token", "plural": "tokens"})
    client.v1.customers.provision(id=cust)
    client.v1.credits.grants.create(customer_id=cust, currency_id=cur, amount=1000,
                                    display_name="g", grant_type="PAID")
    calls, images = uid("calls"), uid("images")
    client.v1.features.create_feature(
        id=calls, display_name="API calls", feature_type="NUMBER",
        meter={"aggregation": {"function": "COUNT"}, "filters": [{"conditions": [
            {"field": "eventName", "operation": "EQUALS", "value": call}]}]},
        extra_body={"creditRate": {"amount": 2, "currencyId": cur}})
    client.v1.features.create_feature(
        id=images, display_name="Images", feature_type="NUMBER", meter_type="INCREMENTAL",
        extra_body={"creditRate": {"amount": 5, "currencyId": cur}})
    now = datetime.now(timezone.utc)
    hour_ago = (now - timedelta(hours=1)).isoformat()
    events = [{"customerId": cust, "eventName": call, "idempotencyKey": uid("e"),
               "timestamp": hour_ago, "dimensions": {"model": "gpt", "region": "eu"}},
              {"customerId": cust, "eventName": call, "idempotencyKey": uid("e"),
               "dimensions": {"model": "gpt", "region": "us"}},
              {"customerId": cust, "eventName": call, "idempotencyKey": uid("e"),
               "dimensions": {"model": "claude", "region": "eu"}}]
    assert raw.post("/api/v1/events", json={"events": events}).status_code == 200
    client.v2.usage.report(usages=[{"customerId": cust, "featureId": images, "value": 2,
                                    "dimensions": {"model": "dalle"}}])
    client.v1.credits.consumption.consume(customer_id=cust, currency_id=cur, amount=1.5,
                                          idempotency_key=uid("k"))
    return cust, cur, calls, images


def test_credit_usage_per_feature(client, used) -> None:
    cust, cur, calls, images = used
    data = client.v1.credits.get_usage(customer_id=cust, currency_id=cur,
                                       time_range="LAST_DAY").data
    assert data.currency.currency_id == cur and data.currency.plural == "tokens"
    totals = {s.feature_id: (s.total_credits, s.event_count) for s in data.series}
    assert totals == {images: (10, 1), calls: (6, 3), None: (1.5, 1)}
    [s] = [s for s in data.series if s.feature_id == calls]
    assert s.feature_name == "API calls"
    assert len(s.points) in (24, 25), "hourly points over a day"
    assert sum(p.value for p in s.points) == 6 and sum(p.event_count for p in s.points) == 3
    assert [p.value for p in s.points if p.value] == [2, 4], "the late event in its own hour"
    assert [s.feature_id for s in data.series] == [images, calls, None], "largest first"


@pytest.mark.parametrize("time_range, points", [("LAST_DAY", (24, 25)), ("LAST_WEEK", (7, 8)),
                                                ("LAST_MONTH", (30, 31)),
                                                ("LAST_YEAR", (12, 13))])
def test_each_time_range_has_fitting_buckets(client, used, time_range, points) -> None:
    cust, cur, calls, images = used
    data = client.v1.credits.get_usage(customer_id=cust, currency_id=cur,
                                       time_range=time_range).data
    [s] = [s for s in data.series if s.feature_id == calls]
    assert len(s.points) in points
    assert sum(p.value for p in s.points) == 6


def test_group_by_dimensions_and_feature(client, used) -> None:
    cust, cur, calls, images = used
    data = client.v1.credits.get_usage(customer_id=cust, currency_id=cur, group_by="model").data
    by_model = {tuple((t.key, t.value) for t in s.tags): s.total_credits for s in data.series}
    assert by_model == {(("model", "gpt"),): 4, (("model", "claude"),): 2,
                        (("model", "dalle"),): 10, (("model", ""),): 1.5}
    data = client.v1.credits.get_usage(customer_id=cust, currency_id=cur,
                                       group_by="featureId,region").data
    split = {(s.feature_id, s.tags[0].value): s.total_credits for s in data.series}
    assert split[(calls, "eu")] == 4 and split[(calls, "us")] == 2


def test_start_date_wins_over_time_range_and_pages_over_series(client, used) -> None:
    cust, cur, calls, images = used
    # Buckets are hourly, so a range starts on an hour: this one leaves out the event
    # reported with a time an hour ago.
    start = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
    data = client.v1.credits.get_usage(customer_id=cust, currency_id=cur, start_date=start,
                                       time_range="LAST_YEAR").data
    totals = {s.feature_id: s.total_credits for s in data.series}
    assert totals[calls] == 4, "the event an hour ago is before startDate"
    first = client.v1.credits.get_usage(customer_id=cust, currency_id=cur, limit=2).data
    second = client.v1.credits.get_usage(customer_id=cust, currency_id=cur, limit=2,
                                         after=first.pagination.next).data
    assert len(first.series) == 2 and len(second.series) == 1
    assert second.pagination.next is None


def test_a_page_before_a_cursor_ends_just_before_it(client, used) -> None:
    cust, cur, calls, images = used
    # Largest first: images (10), calls (6), credits consumed directly (1.5).
    first = client.v1.credits.get_usage(customer_id=cust, currency_id=cur, limit=1).data
    second = client.v1.credits.get_usage(customer_id=cust, currency_id=cur, limit=1,
                                         after=first.pagination.next).data
    assert [s.feature_id for s in second.series] == [calls]
    # A page of three before the second page's start: only the series before it.
    back = client.v1.credits.get_usage(customer_id=cust, currency_id=cur, limit=3,
                                       before=second.pagination.prev).data
    assert [s.feature_id for s in back.series] == [images]
    assert back.pagination.prev is None
    assert back.pagination.next == second.pagination.prev
    # Before the last series: the two before it, never the cursor's own or later ones.
    third = client.v1.credits.get_usage(customer_id=cust, currency_id=cur, limit=1,
                                        after=second.pagination.next).data
    assert [s.feature_id for s in third.series] == [None]
    back = client.v1.credits.get_usage(customer_id=cust, currency_id=cur, limit=5,
                                       before=third.pagination.prev).data
    assert [s.feature_id for s in back.series] == [images, calls]
    assert back.pagination.prev is None and back.pagination.next == third.pagination.prev
    # Before the first series (position 0): nothing, and no page before that.
    empty = client.v1.credits.get_usage(customer_id=cust, currency_id=cur, limit=2,
                                        before="o0").data
    assert empty.series == [] and empty.pagination.prev is None


def test_bad_analytics_queries(client, used) -> None:
    cust, cur, calls, images = used
    for kwargs, field in (({"group_by": "a,b,c,d"}, "groupBy"),
                          ({"group_by": "bad key"}, "groupBy"),
                          ({"time_range": "LAST_CENTURY"}, "timeRange"),
                          ({"start_date": "yesterday"}, "startDate")):
        with pytest.raises(stigg.BadRequestError) as raised:
            client.v1.credits.get_usage(customer_id=cust, currency_id=cur, **kwargs)
        assert raised.value.body["field"] == field, kwargs


def test_usage_history_is_a_running_total(client, used) -> None:
    cust, cur, calls, images = used
    start = datetime.now(timezone.utc) - timedelta(hours=3)
    data = client.v1.usage.history(calls, customer_id=cust, start_date=start).data
    [series] = data.series
    values = [p.value for p in series.points]
    assert values == sorted(values) and values[-1] == 3
    grouped = client.v1.usage.history(calls, customer_id=cust, start_date=start,
                                      group_by="region").data
    last = {s.tags[0].value: s.points[-1].value for s in grouped.series}
    assert last == {"eu": 2, "us": 1}


def test_dimension_keys_are_searchable(raw, used) -> None:
    cust, *_ = used
    keys = raw.get("/api/v1/credits/usage/dimensions", params={"customerId": cust}).json()
    assert keys["data"]["keys"] == ["model", "region"]
    keys = raw.get("/api/v1/credits/usage/dimensions",
                   params={"customerId": cust, "search": "RE"}).json()
    assert keys["data"]["keys"] == ["region"]
