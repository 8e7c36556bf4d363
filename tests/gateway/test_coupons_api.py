"""Coupons through the official client and raw HTTP: create, list (filters, cursor pages),
retrieve, update, archive, and the refusals."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
import stigg


def create(client, uid, **fields):
    fields.setdefault("id", uid("coupon"))
    fields.setdefault("name", "Launch")
    for name in ("description", "duration_in_months", "metadata", "percent_off", "amounts_off"):
        fields.setdefault(name, None)
    if fields["percent_off"] is None and fields["amounts_off"] is None:
        fields["percent_off"] = 20
    return client.v1.coupons.create(**fields).data


def test_percentage_and_fixed_coupons_round_trip(client, uid) -> None:
    pct = create(client, uid, percent_off=15, duration_in_months=3, description="spring",
                 metadata={"campaign": "s26"})
    assert (pct.type, pct.percent_off, pct.amounts_off) == ("PERCENTAGE", 15, None)
    assert (pct.duration_in_months, pct.status, pct.source) == (3, "ACTIVE", "STIGG")
    assert pct.metadata == {"campaign": "s26"} and pct.description == "spring"
    fixed = create(client, uid, amounts_off=[{"amount": 9.99, "currency": "usd"},
                                             {"amount": 8.5, "currency": "eur"}])
    assert fixed.type == "FIXED" and fixed.percent_off is None
    assert [(a.amount, a.currency) for a in fixed.amounts_off] == [(9.99, "usd"), (8.5, "eur")]
    assert fixed.duration_in_months is None  # forever
    got = client.v1.coupons.retrieve(pct.id).data
    assert got.model_dump() == pct.model_dump()


def test_duration_kinds(raw, uid) -> None:
    def post(**body):
        return raw.post("/api/v1/coupons", json={"id": uid("c"), "name": "x",
                                                 "percentOff": 10, **body})
    assert post().json()["data"]["duration"] == "FOREVER"
    assert post(durationInMonths=6).json()["data"]["duration"] == "REPEATING"
    once = post(duration="ONCE").json()["data"]
    assert (once["duration"], once["durationInMonths"]) == ("ONCE", None)
    for body, field in (({"duration": "REPEATING"}, "durationInMonths"),
                        ({"duration": "ONCE", "durationInMonths": 2}, "durationInMonths"),
                        ({"durationInMonths": 0}, "durationInMonths"),
                        ({"durationInMonths": 121}, "durationInMonths")):
        r = post(**body)
        assert r.status_code == 400 and r.json()["field"] == field, (body, r.text)


@pytest.mark.parametrize("body, field", [
    ({}, "percentOff"),  # neither
    ({"percentOff": 10, "amountsOff": [{"amount": 1, "currency": "usd"}]}, "percentOff"),
    ({"percentOff": 0}, "percentOff"),
    ({"percentOff": 101}, "percentOff"),
    ({"percentOff": 12.5}, "percentOff"),
    ({"amountsOff": []}, "amountsOff"),
    ({"amountsOff": [{"amount": 0, "currency": "usd"}]}, "amountsOff[0].amount"),
    ({"amountsOff": [{"amount": -1, "currency": "usd"}]}, "amountsOff[0].amount"),
    ({"amountsOff": [{"amount": 1, "currency": "dollars"}]}, "amountsOff[0].currency"),
    ({"amountsOff": [{"amount": 1, "currency": "usd"}, {"amount": 2, "currency": "USD"}]},
     "amountsOff[1].currency"),
    ({"percentOff": 10, "name": " "}, "name"),
    ({"percentOff": 10, "id": "a/b"}, "id"),
    ({"percentOff": 10, "bogus": 1}, "bogus"),
])
def test_refusals_name_the_field(raw, uid, body, field) -> None:
    sent = {"id": uid("c"), "name": "x", **body}
    r = raw.post("/api/v1/coupons", json=sent)
    assert r.status_code == 400, r.text
    assert r.json()["field"] == field, r.text
    if "/" not in sent["id"]:  # nothing was created by a refused request
        assert raw.get(f"/api/v1/coupons/{sent['id']}").status_code == 404


def test_duplicates_and_unknown_ids(client, raw, uid) -> None:
    c = create(client, uid)
    with pytest.raises(stigg.ConflictError):
        create(client, uid, id=c.id)
    for method, path in (("GET", "/api/v1/coupons/nope"), ("PATCH", "/api/v1/coupons/nope"),
                         ("POST", "/api/v1/coupons/nope/archive")):
        r = raw.request(method, path, json={} if method != "GET" else None)
        assert r.status_code == 404 and r.json()["code"] == "CouponNotFound", (method, r.text)
    with pytest.raises(stigg.NotFoundError):
        client.v1.coupons.retrieve("nope")


def test_update_and_archive(client, uid) -> None:
    c = create(client, uid, description="old", metadata={"a": "1"})
    updated = client.v1.coupons.update_coupon(c.id, name="Renamed", metadata={"b": "2"}).data
    assert (updated.name, updated.description, updated.metadata) == ("Renamed", "old",
                                                                     {"b": "2"})
    assert updated.percent_off == c.percent_off and updated.updated_at >= c.updated_at
    cleared = client.v1.coupons.update_coupon(c.id, description=None).data
    assert cleared.description is None and cleared.name == "Renamed"
    archived = client.v1.coupons.archive_coupon(c.id).data
    assert archived.status == "ARCHIVED"
    again = client.v1.coupons.archive_coupon(c.id).data  # a no-op, not an error
    assert again.status == "ARCHIVED" and again.updated_at == archived.updated_at
    assert client.v1.coupons.retrieve(c.id).data.status == "ARCHIVED"


def test_list_filters_and_cursor_pages(client, uid) -> None:
    tag = uid("t")
    made = [create(client, uid, id=f"{tag}-{i}", percent_off=10 + i) if i % 2 == 0 else
            create(client, uid, id=f"{tag}-{i}", amounts_off=[{"amount": i, "currency": "usd"}])
            for i in range(7)]
    client.v1.coupons.archive_coupon(made[0].id)
    since = made[0].created_at - timedelta(milliseconds=1)
    mine = lambda items: [c.id for c in items if c.id.startswith(tag)]  # noqa: E731
    everything = mine(client.v1.coupons.list(limit=2, created_at={"gt": since}))  # auto-pager
    assert everything == [c.id for c in made]
    fixed = mine(client.v1.coupons.list(type="FIXED", created_at={"gt": since}, limit=100))
    assert fixed == [c.id for c in made if c.type == "FIXED"]
    active = mine(client.v1.coupons.list(status=["ACTIVE"], created_at={"gt": since},
                                         limit=100))
    assert active == [c.id for c in made[1:]]
    archived = mine(client.v1.coupons.list(status=["ARCHIVED"], created_at={"gt": since},
                                           limit=100))
    assert archived == [made[0].id]
    assert [c.id for c in client.v1.coupons.list(id=made[3].id).data] == [made[3].id]
    future = datetime.now(timezone.utc) + timedelta(days=1)
    assert client.v1.coupons.list(created_at={"gte": future}).data == []


def test_list_refuses_bad_filters(raw) -> None:
    for params, field in (({"status": "GONE"}, "status"), ({"type": "FREE"}, "type"),
                          ({"after": "nonsense"}, "after"),
                          ({"createdAt[gt]": "yesterday"}, "createdAt[gt]")):
        r = raw.get("/api/v1/coupons", params=params)
        assert r.status_code == 400 and r.json()["field"] == field, (params, r.text)


def test_coupons_belong_to_their_environment(server, uid) -> None:
    with server.stigg() as mine, server.stigg(key=server.other_key) as other:
        c = create(mine, uid)
        with pytest.raises(stigg.NotFoundError):
            other.v1.coupons.retrieve(c.id)
        assert c.id not in [x.id for x in other.v1.coupons.list(limit=100).data]
        create(other, uid, id=c.id)  # the same id in another environment is another coupon
