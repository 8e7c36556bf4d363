"""The feed's fan-out and tokens in-process: coalescing, overflow, snapshot floors, filters,
limits, and token verification. The websocket behaviour end to end is in test_feed.py."""

from __future__ import annotations

import json

import jwt
import pytest

from engine.core.amounts import SCALE
from engine.core.effects import DomainEvent, Effects
from engine.core.model import EventType, Pool
from gateway.feed.hub import Hub, LimitReached
from gateway.feed.tokens import TokenError, TokenExpired, Tokens

SECRET = "s" * 40


def hub(**kw) -> Hub:
    kw.setdefault("subscribers_max", 100)
    kw.setdefault("customer_subscribers_max", 10)
    kw.setdefault("backlog_max", 100)
    return Hub(now_ms=lambda: 1_000, **kw)


def effects(seq: int, op: int, *, events: int = 0, pools=(("tok", None, 10),),
            first_seq: int | None = None) -> Effects:
    fx = Effects()
    start = seq - events + 1 if first_seq is None else first_seq
    for n in range(events):
        fx.events.append(DomainEvent(seq=start + n, type=EventType.GRANTED, customer_id="env/c",
                                     currency_id=pools[0][0], resource_id=pools[0][1],
                                     timestamp=1_000, amount=1))
    for currency, resource, balance in pools:
        p = Pool(currency, resource)
        p.balance = balance * SCALE  # engine units
        fx.pools[p.key] = p
    fx.seq, fx.op = seq, op
    return fx


def frames(sub) -> list[dict]:
    return [json.loads(f) for _, f in sub.take()]


def test_balance_frames_coalesce_to_the_latest_after_the_events() -> None:
    h = hub()
    sub = h.subscribe("env/c")
    h.publish("env/c", effects(1, 1, events=1, pools=(("tok", None, 10),)))
    h.publish("env/c", effects(1, 2, pools=(("tok", None, 7),)))
    got = frames(sub)
    assert [f["type"] for f in got] == ["credits.granted", "balance"]
    assert got[1]["currentBalance"] == 7 and got[1]["seq"] == 1
    assert got[0]["data"]["customerId"] == "c" and got[0]["seq"] == 1


def test_a_newer_balance_moves_after_events_queued_since() -> None:
    h = hub()
    sub = h.subscribe("env/c")
    h.publish("env/c", effects(0, 1, pools=(("tok", None, 10),)))
    h.publish("env/c", effects(1, 2, events=1, pools=(("tok", None, 9),)))
    assert [(f["type"], f["seq"]) for f in frames(sub)] == [("credits.granted", 1),
                                                              ("balance", 1)]


def test_overflow_on_events_marks_the_subscriber_and_stops_queueing() -> None:
    h = hub(backlog_max=2)
    sub = h.subscribe("env/c")
    called = []
    sub.on_overflow = lambda: called.append(True)
    h.publish("env/c", effects(2, 1, events=2))
    assert not sub.overflowed
    h.publish("env/c", effects(3, 2, events=1))
    assert sub.overflowed and called == [True] and h.overflows == 1
    assert sub.take() == []
    h.publish("env/c", effects(4, 3, events=1))
    assert called == [True] and sub.take() == []


def test_balances_never_overflow_however_many_arrive() -> None:
    h = hub(backlog_max=1)
    sub = h.subscribe("env/c")
    for op in range(1, 1000):
        h.publish("env/c", effects(0, op, pools=(("tok", None, op),)))
    assert not sub.overflowed
    assert [f["currentBalance"] for f in frames(sub)] == [999]


def test_take_drops_what_the_snapshot_covered() -> None:
    h = hub()
    sub = h.subscribe("env/c")
    h.publish("env/c", effects(2, 5, events=2, pools=(("tok", None, 10),)))
    h.publish("env/c", effects(3, 6, events=1, pools=(("usd", None, 3),)))
    sub.seq_floor, sub.op_floor = 2, 5  # the snapshot was read after the first batch
    got = frames(sub)
    assert [(f["type"], f["seq"]) for f in got] == [("credits.granted", 3), ("balance", 3)]
    assert got[1]["currencyId"] == "usd"


def test_filters_by_currency_and_resource() -> None:
    h = hub()
    any_resource = h.subscribe("env/c", currency_id="tok")
    only_r1 = h.subscribe("env/c", resource_id="r1", match_resource=True)
    only_none = h.subscribe("env/c", resource_id=None, match_resource=True)
    h.publish("env/c", effects(0, 1, pools=(("tok", "r1", 1), ("usd", None, 2),
                                            ("tok", None, 3))))
    assert {(f["currencyId"], f["resourceId"]) for f in frames(any_resource)} == {
        ("tok", "r1"), ("tok", None)}
    assert {(f["currencyId"], f["resourceId"]) for f in frames(only_r1)} == {("tok", "r1")}
    assert {(f["currencyId"], f["resourceId"]) for f in frames(only_none)} == {
        ("usd", None), ("tok", None)}


def test_other_customers_and_unwatched_customers() -> None:
    h = hub()
    sub = h.subscribe("env/c")
    h.publish("env/d", effects(1, 1, events=1))
    h.publish("other/c", effects(1, 1, events=1))
    assert sub.take() == []
    assert h.statistics()["framesOffered"] == 0


def test_limits_and_unsubscribe() -> None:
    h = hub(subscribers_max=3, customer_subscribers_max=2)
    a = h.subscribe("env/c")
    h.subscribe("env/c")
    with pytest.raises(LimitReached, match="per customer"):
        h.subscribe("env/c")
    h.subscribe("env/d")
    with pytest.raises(LimitReached, match="its limit"):
        h.subscribe("env/e")
    h.unsubscribe(a)
    h.unsubscribe(a)  # twice is harmless
    assert h.count == 2
    h.subscribe("env/c")


def test_publish_never_raises_into_the_engine() -> None:
    h = hub()
    h.subscribe("env/c")
    fx = effects(1, 1)
    fx.pools = {("tok", None): object()}  # type: ignore[dict-item]  # broken on purpose
    h.publish("env/c", fx)  # logged, not raised


def test_tokens_round_trip_and_refusals() -> None:
    tokens = Tokens(SECRET)
    now = 1_767_225_600  # any time: tokens are checked against the clock they are given
    token, exp = tokens.mint("env", "c", "r1", now_s=now, ttl_s=60)
    claims = tokens.verify(token, now)
    assert (claims.environment, claims.customer_id, claims.resource_id) == ("env", "c", "r1")
    assert claims.expires_at_s == exp == now + 60
    assert tokens.verify(token, now + 59).customer_id == "c"
    with pytest.raises(TokenExpired):
        tokens.verify(token, now + 60)
    expired, _ = tokens.mint("env", "c", None, now_s=now - 120, ttl_s=60)
    with pytest.raises(TokenExpired):
        tokens.verify(expired, now)
    with pytest.raises(TokenError, match="not valid"):
        Tokens("t" * 40).verify(token, now)
    with pytest.raises(TokenError):
        tokens.verify(token[:-3] + "abc", now)
    base = {"sub": "c", "env": "env", "exp": now + 60}
    wrong_aud = jwt.encode({**base, "aud": "elsewhere", "typ": "creditd.customer"}, SECRET)
    with pytest.raises(TokenError):
        tokens.verify(wrong_aud, now)
    wrong_typ = jwt.encode({**base, "aud": "creditd:feed", "typ": "session"}, SECRET)
    with pytest.raises(TokenError, match="not a creditd customer token"):
        tokens.verify(wrong_typ, now)
    unsigned = jwt.encode({**base, "aud": "creditd:feed", "typ": "creditd.customer"}, None,
                          algorithm="none")
    with pytest.raises(TokenError):
        tokens.verify(unsigned, now)


def test_the_ticker_wakes_expired_and_quiet_subscribers_only() -> None:
    h = hub()
    expiring, quiet, busy = h.subscribe("env/a"), h.subscribe("env/b"), h.subscribe("env/c")
    expiring.expires_at_ms = 5_000
    expiring.quiet_since = quiet.quiet_since = 100.0
    busy.quiet_since = 109.5
    h.tick(4_999, 110.0, heartbeat_s=10.0)
    assert not expiring.expired and expiring.heartbeat_due  # quiet for 10 s, not expired
    assert quiet.heartbeat_due and quiet.wake.is_set()
    assert not busy.heartbeat_due and not busy.wake.is_set()
    h.tick(5_000, 110.0, heartbeat_s=10.0)
    assert expiring.expired and expiring.wake.is_set()
