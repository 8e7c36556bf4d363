"""The credits surface through the official `stigg` client, as a user would drive it:
currencies, customers, grants, ledger, consumption, reservations, balances."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
import stigg


@pytest.fixture
def currency(client, uid) -> str:
    cid = uid("tokens")
    client.v1.credits.custom_currencies.create(
        id=cid, display_name="AI Tokens", description="per 1k tokens", symbol="T",
        units={"singular": "token", "plural": "tokens"}, metadata={"team": "ml"})
    return cid


@pytest.fixture
def customer(client, uid) -> str:
    cid = uid("cust")
    client.v1.customers.provision(id=cid, name="Acme", email="billing@acme.test")
    return cid


def grant(client, customer: str, currency: str, amount: float, **fields):
    fields.setdefault("display_name", "grant")
    fields.setdefault("grant_type", "PAID")
    return client.v1.credits.grants.create(customer_id=customer, currency_id=currency,
                                           amount=amount, **fields).data


def balance(server, customer: str, **params) -> list[dict]:
    with server.http() as http:
        r = http.get("/api/v1/credits/balance", params={"customerId": customer, **params})
    assert r.status_code == 200, r.text
    return r.json()["data"]["balances"]


# -- custom currencies -------------------------------------------------------------------


def test_currency_lifecycle(client, uid) -> None:
    cid = uid("cur")
    created = client.v1.credits.custom_currencies.create(
        id=cid, display_name="Credits", symbol="C",
        units={"singular": "credit", "plural": "credits"}, metadata={"a": "1"}).data
    assert (created.id, created.display_name, created.symbol) == (cid, "Credits", "C")
    assert created.units.singular == "credit" and created.metadata == {"a": "1"}
    assert created.archived_at is None
    with pytest.raises(stigg.ConflictError):
        client.v1.credits.custom_currencies.create(id=cid, display_name="again")

    updated = client.v1.credits.custom_currencies.update(cid, display_name="Credits v2",
                                                         description="d").data
    assert (updated.display_name, updated.description, updated.symbol) == ("Credits v2", "d", "C")
    # null clears an optional field; an absent one is left alone.
    cleared = client.v1.credits.custom_currencies.update(cid, description=None).data
    assert (cleared.description, cleared.display_name) == (None, "Credits v2")

    archived = client.v1.credits.custom_currencies.archive(cid).data
    assert archived.archived_at is not None
    active = [c.id for c in client.v1.credits.custom_currencies.list(status=["ACTIVE"])]
    gone = [c.id for c in client.v1.credits.custom_currencies.list(status=["ARCHIVED"])]
    assert cid not in active and cid in gone
    assert client.v1.credits.custom_currencies.unarchive(cid).data.archived_at is None
    with pytest.raises(stigg.NotFoundError):
        client.v1.credits.custom_currencies.update(uid("missing"), display_name="x")


def test_archived_currency_cannot_be_granted(client, customer, currency) -> None:
    client.v1.credits.custom_currencies.archive(currency)
    with pytest.raises(stigg.BadRequestError) as raised:
        grant(client, customer, currency, 5)
    assert raised.value.body["code"] == "CustomCurrencyIsArchived"


def test_currency_list_auto_pager_sees_every_currency_once(client, uid) -> None:
    ids = {uid("pg") for _ in range(7)}
    for cid in sorted(ids):
        client.v1.credits.custom_currencies.create(id=cid, display_name=cid)
    seen = [c.id for c in client.v1.credits.custom_currencies.list(limit=2)]
    assert len(seen) == len(set(seen)), "a page repeated an item"
    assert ids <= set(seen)


# -- customers ---------------------------------------------------------------------------


def test_customer_lifecycle(client, uid) -> None:
    cid = uid("cust")
    created = client.v1.customers.provision(
        id=cid, name="Acme", email="a@acme.test", metadata={"plan": "pro"},
        billing_currency="usd", language="en", timezone="Europe/Paris").data
    assert (created.id, created.name, created.email) == (cid, "Acme", "a@acme.test")
    assert created.metadata == {"plan": "pro"} and created.archived_at is None
    with pytest.raises(stigg.ConflictError):
        client.v1.customers.provision(id=cid)
    assert client.v1.customers.retrieve(cid).data.email == "a@acme.test"

    updated = client.v1.customers.update(cid, name="Acme Inc").data
    assert (updated.name, updated.email) == ("Acme Inc", "a@acme.test")
    assert client.v1.customers.update(cid, email=None).data.email is None

    assert client.v1.customers.archive(cid).data.archived_at is not None
    assert client.v1.customers.retrieve(cid).data.archived_at is not None
    with pytest.raises(stigg.BadRequestError) as raised:
        client.v1.customers.update(cid, name="x")
    assert raised.value.body["code"] == "CustomerIsArchived"
    assert client.v1.customers.unarchive(cid).data.archived_at is None
    with pytest.raises(stigg.NotFoundError) as raised:
        client.v1.customers.retrieve(uid("nobody"))
    assert raised.value.body["code"] == "CustomerNotFound"


def test_customer_list_pages_and_filters(client, uid) -> None:
    tag = uid("list")
    ids = [f"{tag}-{i}" for i in range(5)]
    for i, cid in enumerate(ids):
        client.v1.customers.provision(id=cid, name=f"{tag} n{i % 2}", email=f"{cid}@x.test")
    everyone = [c.id for c in client.v1.customers.list(limit=2)]
    assert len(everyone) == len(set(everyone)) and set(ids) <= set(everyone)
    by_email = [c.id for c in client.v1.customers.list(email=f"{ids[3]}@x.test")]
    assert by_email == [ids[3]]
    by_name = {c.id for c in client.v1.customers.list(name=f"{tag} n1")}
    assert by_name == {ids[1], ids[3]}
    # Backwards from the end with `before` pages through the same items.
    page = client.v1.customers.list(limit=2)
    later = client.v1.customers.list(limit=2, after=page.pagination.next)
    back = client.v1.customers.list(limit=2, before=later.pagination.prev)
    assert [c.id for c in back.data] == [c.id for c in page.data]


def test_customer_search_matches_the_start_of_id_name_or_email(raw, uid) -> None:
    """What the console's search box asks: a prefix, any case, of the id, name or email;
    LIKE's wildcards in it are plain characters."""
    tag = uid("Srch")
    made = {f"{tag}-1": ("Zed Ltd", "ops@zed.test"), f"{tag}-2": ("Other", f"{tag}@y.test"),
            f"{tag}_%x": ("Third", None), f"z{tag}": (f"{tag} Inc", None),
            f"q{tag}": ("Nope", "x@x.test")}
    for cid, (name, email) in made.items():
        assert raw.post("/api/v1/customers", json={"id": cid, "name": name,
                                                   "email": email}).status_code in (200, 201)

    def search(text: str) -> set[str]:
        r = raw.get("/api/v1/customers", params={"search": text, "limit": 100})
        assert r.status_code == 200, r.text
        return {c["id"] for c in r.json()["data"]}

    assert search(tag.lower()) == {f"{tag}-1", f"{tag}-2", f"{tag}_%x", f"z{tag}"}
    assert search(f"{tag}_%") == {f"{tag}_%x"}  # not "any character, anything"
    assert search("OPS@ZED") == {f"{tag}-1"}
    r = raw.get("/api/v1/customers", params={"search": "x" * 201})
    assert (r.status_code, r.json()["field"]) == (400, "search")


# -- grants ------------------------------------------------------------------------------


def test_grant_create_returns_the_contract_shape(client, customer, currency) -> None:
    expires = datetime.now(timezone.utc) + timedelta(days=30)
    g = grant(client, customer, currency, 100.12345, display_name="Welcome",
              grant_type="PROMOTIONAL", priority=10, expire_at=expires, comment="hi",
              metadata={"campaign": "spring"}, cost={"amount": 9.99, "currency": "usd"})
    assert g.customer_id == customer and g.currency_id == currency
    assert (g.amount, g.consumed_amount, g.priority) == (100.12345, 0, 10)
    assert (g.grant_type, g.status, g.display_name, g.comment) == (
        "PROMOTIONAL", "ACTIVE", "Welcome", "hi")
    assert g.metadata == {"campaign": "spring"}
    assert (g.cost.amount, g.cost.currency) == (9.99, "usd")
    assert abs((g.expire_at - expires).total_seconds()) < 0.001
    assert g.effective_at <= g.created_at + timedelta(milliseconds=1)
    assert g.voided_at is None and g.resource_id is None


def test_scheduled_and_payment_pending_grants_do_not_count_yet(server, client, customer,
                                                              currency) -> None:
    later = datetime.now(timezone.utc) + timedelta(days=1)
    assert grant(client, customer, currency, 50, effective_at=later).status == "SCHEDULED"
    pending = grant(client, customer, currency, 20, await_payment_confirmation=True)
    assert (pending.status, pending.payment_collection) == ("PAYMENT_PENDING", "PROCESSING")
    assert balance(server, customer) == [] or balance(server, customer)[0]["currentBalance"] == 0


def test_grant_validation_errors_name_the_field(client, customer, currency) -> None:
    cases = [
        (dict(amount=0), "amount"),
        (dict(amount=-5), "amount"),
        (dict(amount=10, priority=101), "priority"),
        (dict(amount=10, expire_at="2020-01-01T00:00:00Z"), "expireAt"),
        (dict(amount=10, expire_at="not a date"), "expireAt"),
        (dict(amount=10, effective_at=datetime.now(timezone.utc) + timedelta(days=2),
              expire_at=datetime.now(timezone.utc) + timedelta(days=1)), "expireAt"),
    ]
    for fields, field in cases:
        with pytest.raises(stigg.BadRequestError) as raised:
            grant(client, customer, currency, **fields)
        assert raised.value.body["field"] == field, (fields, raised.value.body)
    with pytest.raises(stigg.NotFoundError) as raised:
        grant(client, "nobody-" + customer, currency, 1)
    assert raised.value.body["code"] == "CustomerNotFound"
    with pytest.raises(stigg.NotFoundError) as raised:
        grant(client, customer, "no-such-currency", 1)
    assert raised.value.body["code"] == "CustomCurrencyNotFound"


def test_grant_list_filters_and_auto_pager(client, customer, currency, uid) -> None:
    other = uid("cur2")
    client.v1.credits.custom_currencies.create(id=other, display_name="Other")
    mine = [grant(client, customer, currency, i + 1).id for i in range(5)]
    grant(client, customer, other, 1)
    on_gpu = grant(client, customer, currency, 7, resource_id="gpu-1").id

    listed = [g.id for g in client.v1.credits.grants.list(customer_id=customer,
                                                          currency_id=currency, limit=2)]
    assert listed == mine, "in creation order, each once, resource-scoped ones excluded"
    assert [g.id for g in client.v1.credits.grants.list(customer_id=customer,
                                                        resource_id="gpu-1")] == [on_gpu]
    assert len(list(client.v1.credits.grants.list(customer_id=customer))) == 6

    third = client.v1.credits.grants.list(customer_id=customer, currency_id=currency,
                                          limit=5).data[2]
    since = [g.id for g in client.v1.credits.grants.list(
        customer_id=customer, currency_id=currency, created_at={"gte": third.created_at})]
    assert since[0] == third.id and set(since) <= set(mine)
    before = [g.id for g in client.v1.credits.grants.list(
        customer_id=customer, currency_id=currency, created_at={"lt": third.created_at})]
    assert set(before) | set(since) == set(mine) and not set(before) & set(since)


def test_void_removes_the_remainder_and_is_refused_twice(server, client, customer,
                                                         currency, uid) -> None:
    g = grant(client, customer, currency, 100)
    client.v1.credits.consumption.consume(customer_id=customer, currency_id=currency,
                                          amount=30, idempotency_key=uid("k"))
    voided = client.v1.credits.grants.void(g.id).data
    assert (voided.status, voided.consumed_amount) == ("VOIDED", 30)
    assert voided.voided_at is not None
    assert balance(server, customer)[0]["currentBalance"] == 0
    with pytest.raises(stigg.ConflictError) as raised:
        client.v1.credits.grants.void(g.id)
    assert raised.value.body["code"] == "CreditGrantAlreadyVoided"
    with pytest.raises(stigg.NotFoundError) as raised:
        client.v1.credits.grants.void(uid("no-grant"))
    assert raised.value.body["code"] == "CreditGrantNotFound"


# -- consumption -------------------------------------------------------------------------


def test_consumption_returns_the_new_balance_exactly(server, client, customer, currency,
                                                     uid) -> None:
    grant(client, customer, currency, 1)
    for _ in range(3):  # 0.1 three times: no binary-float drift
        reply = client.v1.credits.consumption.consume(
            customer_id=customer, currency_id=currency, amount=0.1, idempotency_key=uid("k"))
    assert (reply.data.amount, reply.data.credit.current_usage) == (0.1, 0.3)
    assert reply.data.credit.usage_limit == 1
    assert balance(server, customer)[0]["currentBalance"] == 0.7


def test_consumption_beyond_the_balance_is_refused_whole(server, client, customer,
                                                         currency, uid) -> None:
    grant(client, customer, currency, 10)
    with pytest.raises(stigg.APIStatusError) as raised:
        client.v1.credits.consumption.consume(customer_id=customer, currency_id=currency,
                                              amount=10.00001, idempotency_key=uid("k"))
    assert raised.value.status_code == 402
    assert raised.value.body["code"] == "InsufficientCredits"
    assert raised.value.response.headers["x-should-retry"] == "false"
    assert balance(server, customer)[0]["currentBalance"] == 10
    ledger = list(client.v1.credits.list_ledger(customer_id=customer))
    assert [e.event_type for e in ledger] == ["CREDITS_GRANTED"]


def test_consumption_is_idempotent(server, client, customer, currency, uid) -> None:
    grant(client, customer, currency, 10)
    key = uid("key")
    first = client.v1.credits.consumption.consume(customer_id=customer, currency_id=currency,
                                                  amount=4, idempotency_key=key)
    again = client.v1.credits.consumption.consume(customer_id=customer, currency_id=currency,
                                                  amount=4, idempotency_key=key)
    assert again.data == first.data
    assert balance(server, customer)[0]["currentBalance"] == 6
    with pytest.raises(stigg.ConflictError) as raised:
        client.v1.credits.consumption.consume(customer_id=customer, currency_id=currency,
                                              amount=5, idempotency_key=key)
    assert raised.value.body["code"] == "IdempotencyKeyReused"
    assert balance(server, customer)[0]["currentBalance"] == 6


def test_consumption_draws_grants_in_priority_then_expiry_order(client, customer, currency,
                                                                 uid) -> None:
    soon = datetime.now(timezone.utc) + timedelta(days=1)
    late = datetime.now(timezone.utc) + timedelta(days=9)
    paid = grant(client, customer, currency, 10, priority=50).id
    promo_late = grant(client, customer, currency, 10, grant_type="PROMOTIONAL",
                       priority=50, expire_at=late).id
    promo_soon = grant(client, customer, currency, 10, grant_type="PROMOTIONAL",
                       priority=50, expire_at=soon).id
    first = grant(client, customer, currency, 10, priority=0).id
    client.v1.credits.consumption.consume(customer_id=customer, currency_id=currency,
                                          amount=35, idempotency_key=uid("k"))
    consumed = {g.id: g.consumed_amount
                for g in client.v1.credits.grants.list(customer_id=customer)}
    assert consumed == {first: 10, promo_soon: 10, promo_late: 10, paid: 5}
    rows = client.v1.credits.list_ledger(customer_id=customer,
                                         event_type="CREDITS_CONSUMED").data
    assert sorted((r.credit_grant_id, r.amount) for r in rows) == sorted(
        [(first, -10), (promo_soon, -10), (promo_late, -10), (paid, -5)])
    assert len({r.event_id for r in rows}) == 1, "one consumption, one event id"


def test_resource_scoped_pools_are_separate(server, client, customer, currency, uid) -> None:
    grant(client, customer, currency, 5, resource_id="site-a")
    grant(client, customer, currency, 9)
    with pytest.raises(stigg.APIStatusError) as raised:
        client.v1.credits.consumption.consume(customer_id=customer, currency_id=currency,
                                              amount=6, resource_id="site-a",
                                              idempotency_key=uid("k"))
    assert raised.value.status_code == 402
    client.v1.credits.consumption.consume(customer_id=customer, currency_id=currency,
                                          amount=5, resource_id="site-a",
                                          idempotency_key=uid("k"))
    pools = {b["resourceId"]: b["currentBalance"] for b in balance(server, customer)}
    assert pools == {"site-a": 0, None: 9}
    assert [b["currentBalance"] for b in balance(server, customer, resourceId="site-a")] == [0]


def test_async_consumption_batch(server, client, customer, currency, uid) -> None:
    grant(client, customer, currency, 10)
    items = [{"customerId": customer, "currencyId": currency, "amount": 1,
              "idempotencyKey": uid("k")} for _ in range(4)]
    reply = client.v1.credits.consumption.consume_async(consumptions=items)
    assert reply.data == {"accepted": 4, "refused": []}
    assert balance(server, customer)[0]["currentBalance"] == 6
    # One bad item: nothing in the batch is applied, and the error names it.
    bad = items[:1] + [{"customerId": customer, "currencyId": currency, "amount": -1,
                        "idempotencyKey": uid("k")}]
    bad[0] = {**bad[0], "idempotencyKey": uid("fresh")}
    with pytest.raises(stigg.BadRequestError) as raised:
        client.v1.credits.consumption.consume_async(consumptions=bad)
    assert raised.value.body["field"] == "consumptions[1].amount"
    assert balance(server, customer)[0]["currentBalance"] == 6
    with pytest.raises(stigg.BadRequestError) as raised:
        client.v1.credits.consumption.consume_async(consumptions=items * 251)
    assert raised.value.body["field"] == "consumptions"


# -- ledger ------------------------------------------------------------------------------


def test_ledger_newest_first_with_filters_and_pages(client, customer, currency, uid) -> None:
    g = grant(client, customer, currency, 100)
    for i in range(5):
        client.v1.credits.consumption.consume(customer_id=customer, currency_id=currency,
                                              amount=i + 1, idempotency_key=uid("k"))
    client.v1.credits.grants.void(g.id)
    everything = list(client.v1.credits.list_ledger(customer_id=customer, limit=2))
    assert [e.event_type for e in everything] == (
        ["CREDITS_VOIDED"] + ["CREDITS_CONSUMED"] * 5 + ["CREDITS_GRANTED"])
    assert [e.amount for e in everything] == [-85, -5, -4, -3, -2, -1, 100]
    assert sum(e.amount for e in everything) == 0
    assert all(e.customer_id == customer and e.credit_currency_id == currency
               for e in everything)
    only = client.v1.credits.list_ledger(customer_id=customer,
                                         event_type="CREDITS_GRANTED,CREDITS_VOIDED").data
    assert [e.event_type for e in only] == ["CREDITS_VOIDED", "CREDITS_GRANTED"]
    with pytest.raises(stigg.BadRequestError) as raised:
        client.v1.credits.list_ledger(customer_id=customer, event_type="CREDITS_STOLEN")
    assert raised.value.body["field"] == "eventType"


# -- entitlement checks and reservations -------------------------------------------------


def test_credit_entitlement_check(client, customer, currency) -> None:
    grant(client, customer, currency, 10)
    ok = client.v1.customers.check_entitlement(customer, currency_id=currency,
                                               requested_usage=10).data
    assert (ok.type, ok.is_granted, ok.access_denied_reason) == ("CREDIT", True, None)
    assert (ok.usage_limit, ok.current_usage) == (10, 0)
    assert ok.currency.currency_id == currency and ok.currency.unit_plural == "tokens"
    no = client.v1.customers.check_entitlement(customer, currency_id=currency,
                                               requested_usage=11).data
    assert (no.is_granted, no.access_denied_reason) == (False, "InsufficientCredits")
    unknown = client.v1.customers.check_entitlement("nobody-" + customer,
                                                    currency_id=currency).data
    assert (unknown.is_granted, unknown.access_denied_reason) == (False, "CustomerNotFound")


def test_reserve_then_release_consumes_only_what_was_used(server, client, customer,
                                                          currency, uid) -> None:
    grant(client, customer, currency, 10)
    rid = uid("res")
    held = client.v1.customers.check_entitlement(
        customer, currency_id=currency, reserve_amount=6, reservation_id=rid,
        reservation_ttl_seconds=600, reservation_metadata='{"job": "summarize"}').data
    assert held.is_granted and held.reservation.id == rid
    assert (held.reservation.amount, held.reservation.status) == (6, "ACTIVE")
    assert held.reserved == 6
    [pool] = balance(server, customer)
    assert (pool["currentBalance"], pool["reserved"]) == (4, 6)
    # Held credits are not available to anyone else.
    with pytest.raises(stigg.APIStatusError) as raised:
        client.v1.credits.consumption.consume(customer_id=customer, currency_id=currency,
                                              amount=5, idempotency_key=uid("k"))
    assert raised.value.status_code == 402
    # A retried check with the same reservation id holds nothing more.
    again = client.v1.customers.check_entitlement(
        customer, currency_id=currency, reserve_amount=6, reservation_id=rid,
        reservation_ttl_seconds=600, reservation_metadata='{"job": "summarize"}').data
    assert again.reservation.id == rid and balance(server, customer)[0]["reserved"] == 6
    with pytest.raises(stigg.ConflictError):
        client.v1.customers.check_entitlement(customer, currency_id=currency,
                                              reserve_amount=5, reservation_id=rid)

    released = client.v1.credits.reservations.release(
        rid, consumed_amount=2.5, currency_id=currency, customer_id=customer).data
    assert (released.reservation.status, released.reservation.consumed_amount) == ("RELEASED", 2.5)
    assert released.credit.current_usage == 2.5
    # A retried release is applied once.
    client.v1.credits.reservations.release(rid, consumed_amount=2.5, currency_id=currency,
                                           customer_id=customer)
    [pool] = balance(server, customer)
    assert (pool["currentBalance"], pool["reserved"], pool["totalConsumed"]) == (7.5, 0, 2.5)


def test_a_reservation_without_an_id_gets_one(server, client, customer, currency) -> None:
    """The contract makes reservationId optional: the server makes one up and answers it;
    a check sent again without an id is a new reservation (docs/api.md says so)."""
    grant(client, customer, currency, 10)
    first = client.v1.customers.check_entitlement(customer, currency_id=currency,
                                                  reserve_amount=3).data
    second = client.v1.customers.check_entitlement(customer, currency_id=currency,
                                                   reserve_amount=3).data
    assert first.is_granted and second.is_granted
    ids = {first.reservation.id, second.reservation.id}
    assert len(ids) == 2 and all(i.startswith("res-") for i in ids)
    assert balance(server, customer)[0]["reserved"] == 6
    released = client.v1.credits.reservations.release(
        first.reservation.id, consumed_amount=1, currency_id=currency,
        customer_id=customer).data
    assert released.reservation.status == "RELEASED"
    [pool] = balance(server, customer)
    assert (pool["reserved"], pool["currentBalance"]) == (3, 6)


def test_reservation_is_refused_whole_when_not_covered(server, client, customer, currency,
                                                       uid) -> None:
    grant(client, customer, currency, 3)
    denied = client.v1.customers.check_entitlement(
        customer, currency_id=currency, reserve_amount=4, reservation_id=uid("r")).data
    assert (denied.is_granted, denied.access_denied_reason, denied.reservation) == (
        False, "InsufficientCredits", None)
    assert balance(server, customer)[0]["reserved"] == 0


def test_release_above_the_reservation_consumes_the_excess_normally(server, client, customer,
                                                                    currency, uid) -> None:
    grant(client, customer, currency, 10)
    rid = uid("res")
    client.v1.customers.check_entitlement(customer, currency_id=currency, reserve_amount=2,
                                          reservation_id=rid)
    client.v1.credits.reservations.release(rid, consumed_amount=3, currency_id=currency,
                                           customer_id=customer)
    [pool] = balance(server, customer)
    assert (pool["currentBalance"], pool["reserved"], pool["totalConsumed"]) == (7, 0, 3)


def test_entitlements_list_has_one_credit_entitlement_per_pool(client, customer, currency,
                                                               uid) -> None:
    grant(client, customer, currency, 10)
    data = client.v1.customers.retrieve_entitlements(customer).data
    assert data.access_denied_reason is None
    [e] = [e for e in data.entitlements if e.type == "CREDIT"]
    assert (e.currency.currency_id, e.usage_limit, e.is_granted) == (currency, 10, True)


def test_auto_recharge_defaults_to_disabled(client, customer, currency) -> None:
    settings = client.v1.credits.get_auto_recharge(customer_id=customer,
                                                   currency_id=currency).data
    assert (settings.is_enabled, settings.customer_id, settings.currency_id) == (
        False, customer, currency)
