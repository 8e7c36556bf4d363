"""GraphQL pages of credits and usage (gateway/graphql/resolvers/credits.py, usage.py):
creditGrants and creditsLedger as connections paged by cursor with the real totalCount,
creditUsage series per feature or per dimension values, usageHistoryV2 running totals —
the documents Stigg's Python client sends, answered from the same domain functions as
REST."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from tests.gateway.graphql.wire import code, data, gql

HOUR = timedelta(hours=1)


def _grant(server: Any, customer: str, currency: str, amount: str, **fields: Any) -> dict:
    return data(gql(server, "GrantCredits", {"input": {
        "customerId": customer, "currencyId": currency, "amount": Decimal(amount),
        "displayName": fields.pop("displayName", f"grant {amount}"),
        "grantType": fields.pop("grantType", "PAID"), **fields}}))["createCreditGrant"]


def _consume(server: Any, customer: str, currency: str, amount: str, key: str,
             **fields: Any) -> dict:
    return data(gql(server, "ConsumeCredits", {"input": {
        "customerId": customer, "currencyId": currency, "amount": Decimal(amount),
        "idempotencyKey": key, **fields}}))["consumeCredits"]


def _refused(answer: dict) -> tuple[str, str | None]:
    assert answer["data"] is None, answer
    return code(answer), answer["errors"][0]["extensions"].get("field")


def _hour_base() -> datetime:
    """A whole hour a few hours back: usage is put at explicit times after it."""
    return datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0) - 5 * HOUR


def _iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


# -- creditGrants ----------------------------------------------------------------------------

def test_grant_pages_cover_every_grant_once_with_the_total(server: Any, client: Any,
                                                         customer: str, currency: str,
                                                         uid: Any) -> None:
    paid = _grant(server, customer, currency, "10.5", cost={"amount": Decimal("9.99"),
                                                            "currency": "USD"})
    promo = _grant(server, customer, currency, "0.1", grantType="PROMOTIONAL", priority=5)
    voided = _grant(server, customer, currency, "3")
    expiring = _grant(server, customer, currency, "7", expireAt="2099-01-01T00:00:00.000Z",
                      comment="yearly")
    last = _grant(server, customer, currency, "1")
    data(gql(server, "VoidCreditGrant", {"input": {"id": voided["grantId"]}}))
    # Another currency's grant is not in this currency's pages, but in the customer's.
    other = uid("gql-oth")
    client.v1.credits.custom_currencies.create(id=other, display_name="Other")
    _grant(server, customer, other, "2")
    created = [g["grantId"] for g in (paid, promo, voided, expiring, last)]

    seen, pages, after = [], [], None
    while True:
        paging = {"first": 2} if after is None else {"first": 2, "after": after}
        conn = data(gql(server, "GetCreditGrants", {"input": {
            "customerId": customer, "currencyId": currency,
            "paging": paging}}))["creditGrants"]
        pages.append(conn)
        assert conn["totalCount"] == 5
        seen += [e["node"]["grantId"] for e in conn["edges"]]
        if not conn["pageInfo"]["hasNextPage"]:
            break
        after = conn["pageInfo"]["endCursor"]
    assert [len(p["edges"]) for p in pages] == [2, 2, 1]
    assert seen == created, "creation order, each grant exactly once"
    assert [p["pageInfo"]["hasPreviousPage"] for p in pages] == [False, True, True]

    nodes = {e["node"]["grantId"]: e["node"] for p in pages for e in p["edges"]}
    assert nodes[paid["grantId"]]["amount"] == Decimal("10.5")
    assert nodes[paid["grantId"]]["cost"] == {"amount": Decimal("9.99"), "currency": "USD"}
    assert nodes[promo["grantId"]]["amount"] == Decimal("0.1")
    assert (nodes[promo["grantId"]]["grantType"], nodes[promo["grantId"]]["priority"]) == (
        "PROMOTIONAL", 5)
    assert nodes[voided["grantId"]]["status"] == "VOIDED"
    assert nodes[voided["grantId"]]["voidedAt"] is not None
    assert nodes[paid["grantId"]]["voidedAt"] is None
    assert nodes[expiring["grantId"]]["expireAt"] == "2099-01-01T00:00:00.000Z"
    assert nodes[expiring["grantId"]]["comment"] == "yearly"
    # The node is the mutation's CreditGrant, field for field.
    assert nodes[expiring["grantId"]] == {k: v for k, v in expiring.items() if k in
                                          nodes[expiring["grantId"]]}

    # Backwards: the two grants just before the last page.
    back = data(gql(server, "GetCreditGrants", {"input": {
        "customerId": customer, "currencyId": currency,
        "paging": {"last": 2, "before": pages[2]["pageInfo"]["startCursor"]}}}))[
        "creditGrants"]
    assert [e["node"]["grantId"] for e in back["edges"]] == created[2:4]
    assert back["pageInfo"]["hasPreviousPage"] and back["pageInfo"]["hasNextPage"]

    everything = data(gql(server, "GetCreditGrants", {"input": {
        "customerId": customer}}))["creditGrants"]
    assert everything["totalCount"] == 6 and len(everything["edges"]) == 6
    assert not everything["pageInfo"]["hasNextPage"]


def test_bad_paging_is_refused_naming_the_field(server: Any, customer: str,
                                                currency: str) -> None:
    _grant(server, customer, currency, "1")
    for name, root in (("GetCreditGrants", "creditGrants"), ("GetCreditLedger", None),
                       ("GetCreditUsage", None)):
        for paging, field in (({"first": -1}, "paging.first"),
                              ({"first": 0}, "paging.first"),
                              ({"first": 101}, "paging.first"),
                              ({"after": "not-a-cursor"}, "paging.after"),
                              ({"after": ""}, "paging.after"),
                              ({"last": 2}, "paging.last"),
                              ({"first": 2, "before": "x"}, "paging.before"),
                              ({"first": 1, "last": 1}, "paging.last"),
                              ({"after": "1", "before": "2"}, "paging.before")):
            answer = gql(server, name, {"input": {"customerId": customer,
                                                  "paging": paging}})
            assert _refused(answer) == ("BadUserInput", field), (name, paging, answer)
        if root:
            # A cursor of another list (the ledger's sequence number) is not a grant's.
            answer = gql(server, name, {"input": {"customerId": customer,
                                                  "paging": {"after": "12"}}})
            assert _refused(answer) == ("BadUserInput", "paging.after")
    answer = gql(server, "GetCreditLedger", {"input": {"customerId": customer,
                                                       "paging": {"before": "1.abc",
                                                                  "last": 1}}})
    assert _refused(answer) == ("BadUserInput", "paging.before")
    answer = gql(server, "GetCreditGrants", {"input": {"customerId": "nobody-" + customer}})
    assert _refused(answer) == ("CustomerNotFound", "customerId")


# -- creditsLedger ----------------------------------------------------------------------------

def test_ledger_shows_exact_entries_filters_by_type_and_leaves_reservations_out(
        server: Any, client: Any, customer: str, currency: str, uid: Any) -> None:
    main = _grant(server, customer, currency, "100")
    spare = _grant(server, customer, currency, "0.3", priority=90)
    _consume(server, customer, currency, "2.5", uid("k"))
    _consume(server, customer, currency, "0.1", uid("k"))
    data(gql(server, "VoidCreditGrant", {"input": {"id": spare["grantId"]}}))
    # A reservation holds 6 and settles 1.5: REST's ledger shows the hold and its return,
    # GraphQL's (whose enum has no reservation types) only what was consumed.
    rid = uid("res")
    client.v1.customers.check_entitlement(customer, currency_id=currency, reserve_amount=6,
                                          reservation_id=rid, reservation_ttl_seconds=600)
    client.v1.credits.reservations.release(rid, consumed_amount=1.5, currency_id=currency,
                                           customer_id=customer)
    rest = [e.event_type for e in client.v1.credits.list_ledger(customer_id=customer,
                                                                limit=100)]
    assert "CREDITS_RESERVED" in rest and "CREDITS_RESERVATION_RELEASED" in rest

    entries, cursors, after = [], [], None
    while True:
        paging = {"first": 2} if after is None else {"first": 2, "after": after}
        conn = data(gql(server, "GetCreditLedger", {"input": {
            "customerId": customer, "paging": paging}}))["creditsLedger"]
        assert conn["totalCount"] == 6
        entries += [e["node"] for e in conn["edges"]]
        cursors += [e["cursor"] for e in conn["edges"]]
        if not conn["pageInfo"]["hasNextPage"]:
            break
        assert conn["pageInfo"]["endCursor"] == conn["edges"][-1]["cursor"]
        after = conn["pageInfo"]["endCursor"]
    assert len(set(cursors)) == 6
    # Newest first, amounts exact.
    assert [(e["eventType"], e["amount"], e["creditGrantId"]) for e in entries] == [
        ("CREDITS_CONSUMED", Decimal("-1.5"), main["grantId"]),
        ("CREDITS_VOIDED", Decimal("-0.3"), spare["grantId"]),
        ("CREDITS_CONSUMED", Decimal("-0.1"), main["grantId"]),
        ("CREDITS_CONSUMED", Decimal("-2.5"), main["grantId"]),
        ("CREDITS_GRANTED", Decimal("0.3"), spare["grantId"]),
        ("CREDITS_GRANTED", 100, main["grantId"]),
    ]
    # The entries add up to the balance.
    balance = data(gql(server, "GetCreditBalance", {"input": {
        "customerId": customer, "currencyId": currency}}))["creditBalanceSummary"]
    assert sum(e["amount"] for e in entries) == balance["balances"][0]["currentBalance"] \
        == Decimal("95.9")
    assert all(e["customerId"] == customer and e["creditCurrencyId"] == currency
               for e in entries)

    only = data(gql(server, "GetCreditLedger", {"input": {
        "customerId": customer, "eventType": ["CREDITS_GRANTED", "CREDITS_VOIDED"],
        "paging": {"first": 2}}}))["creditsLedger"]
    assert only["totalCount"] == 3 and only["pageInfo"]["hasNextPage"]
    assert [(e["node"]["eventType"], e["node"]["amount"]) for e in only["edges"]] == [
        ("CREDITS_VOIDED", Decimal("-0.3")), ("CREDITS_GRANTED", Decimal("0.3"))]
    rest_of = data(gql(server, "GetCreditLedger", {"input": {
        "customerId": customer, "eventType": ["CREDITS_GRANTED", "CREDITS_VOIDED"],
        "paging": {"first": 2, "after": only["pageInfo"]["endCursor"]}}}))["creditsLedger"]
    assert [(e["node"]["eventType"], e["node"]["amount"]) for e in rest_of["edges"]] == [
        ("CREDITS_GRANTED", 100)]
    assert not rest_of["pageInfo"]["hasNextPage"]
    # Backwards from the oldest entry: the two just newer than it.
    back = data(gql(server, "GetCreditLedger", {"input": {
        "customerId": customer, "paging": {"last": 2, "before": cursors[-1]}}}))[
        "creditsLedger"]
    assert [e["cursor"] for e in back["edges"]] == cursors[-3:-1]
    none = data(gql(server, "GetCreditLedger", {"input": {
        "customerId": customer, "eventType": ["CREDITS_EXPIRED"]}}))["creditsLedger"]
    assert none == {"edges": [], "totalCount": 0, "pageInfo": {
        "startCursor": None, "endCursor": None, "hasNextPage": False,
        "hasPreviousPage": False}}
    # An event type outside Stigg's enum does not get in.
    answer = gql(server, "GetCreditLedger", {"input": {
        "customerId": customer, "eventType": ["CREDITS_RESERVED"]}})
    assert code(answer) == "BadUserInput"


# -- creditUsage -----------------------------------------------------------------------------

@pytest.fixture
def usage_setup(server: Any, client: Any, customer: str, currency: str, uid: Any) -> dict:
    """Credits used through a feature (2 credits a unit) and directly, with dimensions,
    at explicit hours after `base`."""
    base = _hour_base()
    feature = uid("gql-img")
    client.v1.features.create_feature(
        id=feature, display_name="Images", feature_type="NUMBER", meter_type="INCREMENTAL",
        extra_body={"creditRate": {"amount": 2, "currencyId": currency}})
    _grant(server, customer, currency, "1000")
    data(gql(server, "ReportUsage", {"input": {
        "customerId": customer, "featureId": feature, "value": 3,
        "createdAt": _iso(base + HOUR), "dimensions": {"model": "dalle"}}}))
    _consume(server, customer, currency, "0.25", uid("k"), createdAt=_iso(base + HOUR),
             dimensions={"model": "gpt"})
    _consume(server, customer, currency, "1.5", uid("k"), createdAt=_iso(base + 2 * HOUR),
             dimensions={"model": "gpt"})
    _consume(server, customer, currency, "4", uid("k"), createdAt=_iso(base + 2 * HOUR),
             dimensions={"model": "claude"})
    return {"base": base, "feature": feature}


def test_credit_usage_per_feature_and_per_dimension(server: Any, customer: str,
                                                    currency: str, usage_setup: dict) -> None:
    base, feature = usage_setup["base"], usage_setup["feature"]
    window = {"startDate": _iso(base), "endDate": _iso(base + 4 * HOUR)}
    usage = data(gql(server, "GetCreditUsage", {"input": {
        "customerId": customer, "currencyId": currency, **window}}))["creditUsage"]
    assert usage["currency"] == {"currencyId": currency, "displayName": "AI Tokens",
                                 "units": {"singular": "token", "plural": "tokens"}}
    series = {s["featureId"]: s for s in usage["series"]}
    assert series[feature]["featureName"] == "Images"
    assert (series[feature]["totalCredits"], series[feature]["eventCount"]) == (6, 1)
    assert (series[None]["totalCredits"], series[None]["eventCount"]) == (Decimal("5.75"), 3)
    # Hourly points over the four hours, each consumption in its own hour.
    assert [p["value"] for p in series[None]["points"]] == [0, Decimal("0.25"),
                                                          Decimal("5.5"), 0]
    assert [p["eventCount"] for p in series[None]["points"]] == [0, 1, 2, 0]
    assert series[None]["points"][1]["timestamp"] == _iso(base + HOUR).replace(
        "Z", ".000Z")
    assert usage["pageInfo"] == {"startCursor": None, "endCursor": None,
                                 "hasNextPage": False, "hasPreviousPage": False}

    by_model = data(gql(server, "GetCreditUsage", {"input": {
        "customerId": customer, "currencyId": currency, "groupBy": ["model"], **window}}))[
        "creditUsage"]
    # The client's document does not select tags: ask for them as another caller would.
    query = ("query Q($input: CreditUsageInput!) { creditUsage(input: $input) { series { "
             "featureId tags { key value } totalCredits } pageInfo { hasNextPage endCursor "
             "hasPreviousPage startCursor } } }")
    tagged = data(gql(server, "GetCreditUsage", {"input": {
        "customerId": customer, "currencyId": currency, "groupBy": ["model"], **window}},
        query=query.replace("query Q", "query GetCreditUsage")))["creditUsage"]
    totals = {tuple((t["key"], t["value"]) for t in s["tags"]): s["totalCredits"]
              for s in tagged["series"]}
    assert totals == {(("model", "dalle"),): 6, (("model", "claude"),): 4,
                      (("model", "gpt"),): Decimal("1.75")}
    assert [s["totalCredits"] for s in by_model["series"]] == [6, 4, Decimal("1.75")]

    # Pages of two series, by cursor.
    first = data(gql(server, "GetCreditUsage", {"input": {
        "customerId": customer, "currencyId": currency, "groupBy": ["model"],
        "paging": {"first": 2}, **window}}))["creditUsage"]
    assert [s["totalCredits"] for s in first["series"]] == [6, 4]
    assert first["pageInfo"]["hasNextPage"] and not first["pageInfo"]["hasPreviousPage"]
    second = data(gql(server, "GetCreditUsage", {"input": {
        "customerId": customer, "currencyId": currency, "groupBy": ["model"],
        "paging": {"first": 2, "after": first["pageInfo"]["endCursor"]}, **window}}))[
        "creditUsage"]
    assert [s["totalCredits"] for s in second["series"]] == [Decimal("1.75")]
    assert not second["pageInfo"]["hasNextPage"] and second["pageInfo"]["hasPreviousPage"]

    # A time range instead of dates: everything above is within the last day.
    day = data(gql(server, "GetCreditUsage", {"input": {
        "customerId": customer, "currencyId": currency, "timeRange": "LAST_DAY"}}))[
        "creditUsage"]
    assert sum(s["totalCredits"] for s in day["series"]) == Decimal("11.75")
    assert all(len(s["points"]) in (24, 25) for s in day["series"])

    for extra, field in (({"groupBy": ["a,b"]}, "groupBy[0]"),
                         ({"groupBy": ["bad key"]}, "groupBy"),
                         ({"groupBy": ["a", "b", "c", "d"]}, "groupBy"),
                         ({"startDate": "yesterday"}, "startDate"),
                         ({"startDate": _iso(base), "endDate": _iso(base - HOUR)},
                          "startDate")):
        answer = gql(server, "GetCreditUsage", {"input": {
            "customerId": customer, "currencyId": currency, **extra}})
        assert _refused(answer) == ("BadUserInput", field), extra


def test_credit_usage_last_before_a_cursor_ends_just_before_it(
        server: Any, customer: str, currency: str, usage_setup: dict) -> None:
    base = usage_setup["base"]
    query = {"customerId": customer, "currencyId": currency, "groupBy": ["model"],
             "startDate": _iso(base), "endDate": _iso(base + 4 * HOUR)}

    def page(paging: dict) -> dict:
        return data(gql(server, "GetCreditUsage", {"input": {**query, "paging": paging}}))[
            "creditUsage"]

    # Largest first: dalle (6), claude (4), gpt (1.75).
    first = page({"first": 1})
    second = page({"first": 1, "after": first["pageInfo"]["endCursor"]})
    assert [s["totalCredits"] for s in second["series"]] == [4]
    third = page({"first": 1, "after": second["pageInfo"]["endCursor"]})
    assert [s["totalCredits"] for s in third["series"]] == [Decimal("1.75")]
    # `last` larger than what lies before the cursor: only the series before it.
    back = page({"last": 5, "before": second["pageInfo"]["startCursor"]})
    assert [s["totalCredits"] for s in back["series"]] == [6]
    assert not back["pageInfo"]["hasPreviousPage"] and back["pageInfo"]["hasNextPage"]
    back = page({"last": 5, "before": third["pageInfo"]["startCursor"]})
    assert [s["totalCredits"] for s in back["series"]] == [6, 4]
    assert not back["pageInfo"]["hasPreviousPage"]
    # Before the first series: an empty page with nothing before it.
    empty = page({"last": 2, "before": "o0"})
    assert empty["series"] == [] and not empty["pageInfo"]["hasPreviousPage"]


# -- usageHistoryV2 --------------------------------------------------------------------------

def test_usage_history_shows_the_running_total_per_group(server: Any, client: Any,
                                                         customer: str, uid: Any) -> None:
    base = _hour_base()
    feature = uid("gql-calls")
    client.v1.features.create_feature(id=feature, display_name="Calls",
                                      feature_type="NUMBER", meter_type="INCREMENTAL")
    for hours, value, region in ((1, "3", "eu"), (2, "2.5", "us"), (2, "1", "eu")):
        data(gql(server, "ReportUsage", {"input": {
            "customerId": customer, "featureId": feature, "value": Decimal(value),
            "createdAt": _iso(base + hours * HOUR), "dimensions": {"region": region}}}))
    window = {"customerId": customer, "featureId": feature, "startDate": _iso(base),
              "endDate": _iso(base + 4 * HOUR)}
    history = data(gql(server, "GetUsageHistoryV2", {"input": window}))["usageHistoryV2"]
    assert history["markers"] == []
    [series] = history["series"]
    assert series["tags"] == []
    assert [p["value"] for p in series["points"]] == [0, 3, Decimal("6.5"), Decimal("6.5")]
    assert [p["timestamp"] for p in series["points"]] == [
        _iso(base + h * HOUR).replace("Z", ".000Z") for h in range(4)]
    assert not any(p["isResetPoint"] for p in series["points"])

    grouped = data(gql(server, "GetUsageHistoryV2", {"input": {
        **window, "groupBy": ["region"]}}))["usageHistoryV2"]
    per_region = {s["tags"][0]["value"]: [p["value"] for p in s["points"]]
                  for s in grouped["series"]}
    assert per_region == {"eu": [0, 3, 4, 4], "us": [0, 0, Decimal("2.5"), Decimal("2.5")]}
    assert all(s["tags"][0]["key"] == "region" for s in grouped["series"])

    for extra, want in (({"paging": {"first": 10}}, ("BadUserInput", "paging")),
                        ({"groupBy": ["a,b"]}, ("BadUserInput", "groupBy[0]")),
                        ({"endDate": _iso(base - HOUR)}, ("BadUserInput", "startDate")),
                        ({"featureId": "nope"}, ("FeatureNotFound", None))):
        answer = gql(server, "GetUsageHistoryV2", {"input": {**window, **extra}})
        refusal = _refused(answer)
        assert refusal[0] == want[0] and (want[1] is None or refusal[1] == want[1]), extra
