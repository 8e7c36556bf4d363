"""Delivery in-process, on SQLite and PostgreSQL: the engine commits events, the relay fans
them out, the dispatcher sends them to an httpx.MockTransport receiver. A manual clock
drives the production retry schedule exactly; nothing sleeps."""

from __future__ import annotations

import random
from collections import Counter

import anyio
import httpx
import pytest
from harness import Seen, harness
from standardwebhooks import Webhook

from webhooks import EVENT_TYPES, HttpxSender, Options, RetryPolicy
from webhooks.endpoints import GONE
from webhooks.tables import DEAD, DELIVERED, PENDING

pytestmark = pytest.mark.anyio
URL = "http://127.0.0.1:9/hooks/{}"


async def deliveries(h, endpoint_id: str) -> list:
    return await h.webhooks.deliveries("default", endpoint_id, status=None, after=None,
                                       before=None, limit=100)


def by_path(seen: list[Seen], name: str) -> list[Seen]:
    return [s for s in seen if s.request.url.path == f"/hooks/{name}"]


async def test_every_event_type_is_delivered_with_a_signature_standardwebhooks_verifies(
        store_url) -> None:
    async with harness(store_url) as h:
        endpoint = await h.webhooks.create_endpoint("default", url=URL.format("all"),
                                                    event_types=[])
        await h.grant("acme", "g1", 100)
        await h.consume("acme", 85)  # grant and balance usage_low (80 % used)
        await h.consume("acme", 15)  # grant and balance depleted
        await h.grant("acme", "g2", 10, expire_at=h.clock.now_ms() + 60_000)
        await h.grant("acme", "g3", 5)
        await h.void("acme", "g3")  # grant.updated
        h.clock.advance(60_000)
        await h.grant("acme", "g4", 1)  # a command applies what is due first: g2 expires
        await h.wait_relayed()
        await h.wait_seen(h.webhooks.relay.deliveries_created)
        # Auto-recharge events: tests/gateway/test_auto_recharge.py delivers each of them.
        credit_types = {t for t in EVENT_TYPES if not t.startswith("credits.auto_recharge.")}
        assert set(Counter(s.json["type"] for s in h.seen)) == credit_types

    verifier = Webhook(endpoint.secret)
    for s in h.seen:
        body = verifier.verify(s.request.content, dict(s.request.headers))
        assert s.request.headers["webhook-id"] == body["id"]
        assert body["data"]["customerId"] == "acme"  # the environment is not shown
    sequences = [s.json["data"]["sequence"] for s in h.seen]
    assert sequences == sorted(sequences) == list(range(1, len(sequences) + 1))
    granted = next(s.json for s in h.seen if s.json["type"] == "credits.granted")
    assert granted["data"]["amount"] == 100
    assert granted["data"]["grant"]["id"] == "g1"
    assert granted["data"]["grant"]["status"] == "ACTIVE"
    assert granted["data"]["balance"] == {"currentBalance": 100, "totalGranted": 100,
                                          "totalConsumed": 0, "reserved": 0, "hardLimit": True}
    depleted = next(s.json for s in h.seen if s.json["type"] == "credits.balance.depleted")
    assert depleted["data"]["grant"] is None and depleted["data"]["balance"]["currentBalance"] == 0
    expired = next(s.json for s in h.seen if s.json["type"] == "credits.expired")
    assert expired["data"]["amount"] == 10 and expired["data"]["grant"]["status"] == "EXPIRED"
    updated = next(s.json for s in h.seen if s.json["type"] == "credits.grant.updated")
    assert updated["data"]["grant"]["status"] == "VOIDED"


async def test_failed_attempts_follow_the_schedule_then_dead_letter(store_url) -> None:
    policy = RetryPolicy()
    async with harness(store_url, answer=lambda r: 503, seed=11) as h:
        endpoint = await h.webhooks.create_endpoint("default", url=URL.format("x"),
                                                    event_types=[])
        await h.grant("acme", "g1", 1)
        expected_rng = random.Random(11)
        for attempt in range(1, policy.attempts_max + 1):
            await h.wait_attempts(attempt)
            (d,) = await deliveries(h, endpoint.id)
            assert d.attempts == attempt
            assert h.seen[-1].at_ms == h.clock.now_ms()  # sent when due, not before
            due = policy.next_attempt_at(h.clock.now_ms(), attempt, expected_rng)
            if due is None:
                break
            wait = policy.table()[attempt - 1]
            assert d.status == PENDING and d.next_attempt_at == due
            assert abs(due - h.clock.now_ms() - wait) <= wait * policy.jitter + 1
            h.clock.set(due - 1)  # one millisecond early: nothing may go out yet
            h.clock.set(due)
        (d,) = await deliveries(h, endpoint.id)
        assert (d.status, d.attempts, d.next_attempt_at) == (DEAD, policy.attempts_max, None)
        assert d.last_status_code == 503 and d.last_error == "HTTP 503"
        _, attempts, _ = await h.webhooks.delivery("default", endpoint.id, d.id)
        assert [a.attempt for a in attempts] == list(range(1, policy.attempts_max + 1))
        assert {a.response for a in attempts} == {"no thanks"}
        # The schedule spans hours, not seconds.
        assert 40 * 3_600_000 < sum(policy.table()) < 60 * 3_600_000
        assert h.webhooks.pending(endpoint.id) == 0
        await h.lanes_hold_their_invariant()


async def test_a_customers_events_wait_behind_its_failing_one_while_others_flow(
        store_url) -> None:
    fails_left = {"n": 3}

    def answer(request: httpx.Request) -> int:
        body = request.content
        if b'"customerId":"slow"' in body and b'"sequence":1,' in body and fails_left["n"]:
            fails_left["n"] -= 1
            return 500
        return 200

    async with harness(store_url, answer=answer) as h:
        endpoint = await h.webhooks.create_endpoint("default", url=URL.format("x"),
                                                    event_types=[])
        for i in range(4):
            await h.grant("slow", f"s{i}", 1)
            await h.grant("fast", f"f{i}", 1)
        await h.wait_relayed()
        await h.wait_seen(1 + 4)  # slow's head failed once; fast's four went through
        assert [s.json["data"]["customerId"] for s in h.seen].count("slow") == 1
        await h.lanes_hold_their_invariant()
        for _ in range(3):  # two more failures, then the retry that succeeds
            (head,) = [d for d in await deliveries(h, endpoint.id)
                       if d.customer_id == "slow" and d.next_attempt_at is not None]
            assert head.outbox_id == min(d.outbox_id for d in await deliveries(h, endpoint.id)
                                         if d.customer_id == "slow")
            h.clock.set(head.next_attempt_at)
            await h.wait_seen(len(h.seen) + 1)
        await h.wait_seen(3 + 8)
        slow = [s.json["data"]["sequence"] for s in h.seen
                if s.json["data"]["customerId"] == "slow" and s.status == 200]
        assert slow == [1, 2, 3, 4]
        assert all(d.status == DELIVERED for d in await deliveries(h, endpoint.id))
        await h.lanes_hold_their_invariant()


async def test_410_disables_the_endpoint_and_enabling_it_resumes(store_url) -> None:
    gone = {"yes": True}
    async with harness(store_url, answer=lambda r: 410 if gone["yes"] else 200) as h:
        endpoint = await h.webhooks.create_endpoint("default", url=URL.format("x"),
                                                    event_types=[])
        await h.grant("acme", "g1", 1)
        await h.wait_seen(1)
        current = h.webhooks.endpoint("default", endpoint.id)
        assert (current.enabled, current.disabled_reason) == (False, GONE)
        await h.grant("acme", "g2", 1)  # while disabled: stored, not queued for it
        await h.wait_relayed()
        (d,) = await deliveries(h, endpoint.id)
        assert (d.status, d.attempts, d.last_status_code) == (PENDING, 1, 410)

        gone["yes"] = False
        await h.webhooks.update_endpoint("default", endpoint.id, enabled=True)
        await h.wait_seen(2)  # the delivery that got 410 goes first, at once
        assert h.seen[-1].json["data"]["grant"]["id"] == "g1"
        result = await h.webhooks.replay_since("default", endpoint.id, 0)
        assert (result.queued, result.already_pending, result.resume_from) == (2, 0, None)
        await h.wait_seen(4)
        assert [s.json["data"]["grant"]["id"] for s in h.seen[2:]] == ["g1", "g2"]


async def test_endpoints_get_the_events_their_filter_environment_and_state_select(
        store_url) -> None:
    async with harness(store_url) as h:
        w = h.webhooks
        await w.create_endpoint("default", url=URL.format("granted"),
                                event_types=["credits.granted"])
        await w.create_endpoint("default", url=URL.format("all"), event_types=[])
        await w.create_endpoint("other", url=URL.format("other"), event_types=[])
        await w.create_endpoint("default", url=URL.format("off"), event_types=[],
                                enabled=False)
        await h.grant("acme", "g1", 1)
        await h.consume("acme", 1)  # usage_low and depleted, grant and balance
        await h.grant("acme", "g9", 1, env="other")
        await h.wait_relayed()
        await h.wait_seen(1 + 5 + 1)
    assert [s.json["type"] for s in by_path(h.seen, "granted")] == ["credits.granted"]
    assert len(by_path(h.seen, "all")) == 5
    assert [s.json["data"]["grant"]["id"] for s in by_path(h.seen, "other")] == ["g9"]
    assert by_path(h.seen, "off") == []


async def test_a_restart_mid_retry_resumes_the_same_schedule(store_url) -> None:
    clock_kept = None
    answer = {"status": 500}
    seen: list[Seen] = []
    async with harness(store_url, answer=lambda r: answer["status"], seen=seen) as h:
        clock_kept = h.clock
        endpoint = await h.webhooks.create_endpoint("default", url=URL.format("x"),
                                                    event_types=[])
        for i in range(3):
            await h.grant("acme", f"g{i}", 1)
        await h.wait_attempts(1)
        for attempt in (2, 3):
            (head,) = [d for d in await deliveries(h, endpoint.id) if d.next_attempt_at]
            h.clock.set(head.next_attempt_at)
            await h.wait_attempts(attempt)
        before = {d.id: (d.status, d.attempts, d.next_attempt_at)
                  for d in await deliveries(h, endpoint.id)}
    assert sorted(attempts for _status, attempts, _at in before.values()) == [0, 0, 3]

    # A new process on the same database: nothing is sent before the head's due time, the
    # attempt count goes on from 3, and the lane still delivers in order.
    answer["status"] = 200
    async with harness(store_url, clock=clock_kept, answer=lambda r: answer["status"],
                       seen=seen) as h:
        after = {d.id: (d.status, d.attempts, d.next_attempt_at)
                 for d in await deliveries(h, endpoint.id)}
        assert after == before
        head = next(d for d, v in after.items() if v[2] is not None)
        h.clock.set(after[head][2])
        await h.wait_seen(3 + 3)
        assert seen[3].at_ms == after[head][2]
        assert [s.json["data"]["grant"]["id"] for s in seen[3:]] == ["g0", "g1", "g2"]
        _, attempts, _ = await h.webhooks.delivery("default", endpoint.id, head)
        assert [a.attempt for a in attempts] == [1, 2, 3, 4]
        assert all(d.status == DELIVERED for d in await deliveries(h, endpoint.id))
        await h.lanes_hold_their_invariant()


async def test_replaying_a_delivery_and_everything_since_a_time_resends_the_same_ids(
        store_url) -> None:
    async with harness(store_url) as h:
        w = h.webhooks
        endpoint = await w.create_endpoint("default", url=URL.format("x"), event_types=[])
        start = h.clock.now_ms()
        for i in range(3):
            await h.grant(f"c{i}", "g", 1)
            h.clock.advance(1000)
        await h.wait_relayed()
        await h.wait_seen(3)
        first_ids = [s.request.headers["webhook-id"] for s in h.seen]
        originals = sorted(await deliveries(h, endpoint.id), key=lambda d: d.id)

        replayed = await w.replay_delivery("default", endpoint.id, originals[0].id)
        assert replayed.replay_of == originals[0].id and replayed.event_id == first_ids[0]
        await h.wait_seen(4)
        assert h.seen[3].request.headers["webhook-id"] == first_ids[0]

        result = await w.replay_since("default", endpoint.id, start + 1000)
        assert (result.queued, result.already_pending) == (2, 0)
        await h.wait_seen(6)
        assert [s.request.headers["webhook-id"] for s in h.seen[4:]] == first_ids[1:]


async def test_replay_skips_events_already_waiting_and_stops_at_its_limit(store_url) -> None:
    options = Options(allow_private=True, replay_events_max=2)
    async with harness(store_url, options=options, answer=lambda r: 500) as h:
        w = h.webhooks
        endpoint = await w.create_endpoint("default", url=URL.format("x"), event_types=[])
        for i in range(3):
            await h.grant(f"c{i}", "g", 1)
            h.clock.advance(1000)
        await h.wait_relayed()
        result = await w.replay_since("default", endpoint.id, 0)
        assert (result.queued, result.already_pending) == (0, 2)
        assert result.resume_from is not None
        await h.lanes_hold_their_invariant()


async def test_a_full_backlog_takes_new_deliveries_as_dead_on_arrival(store_url) -> None:
    options = Options(allow_private=True, endpoint_backlog_max=2)
    async with harness(store_url, options=options, answer=lambda r: 500) as h:
        endpoint = await h.webhooks.create_endpoint("default", url=URL.format("x"),
                                                    event_types=[])
        for i in range(4):
            await h.grant(f"c{i}", "g", 1)
        await h.wait_relayed()
        found = await deliveries(h, endpoint.id)
        assert Counter(d.status for d in found) == {PENDING: 2, DEAD: 2}
        assert {d.last_error for d in found if d.status == DEAD} == {
            "backlog full: the endpoint has 2 pending deliveries"}
        assert h.webhooks.pending(endpoint.id) == 2


async def test_rotation_signs_with_both_secrets_until_the_overlap_ends(store_url) -> None:
    options = Options(allow_private=True, secret_overlap_ms=60_000)
    async with harness(store_url, options=options) as h:
        w = h.webhooks
        endpoint = await w.create_endpoint("default", url=URL.format("x"), event_types=[])
        rotated = await w.rotate_secret("default", endpoint.id)
        assert rotated.secret != endpoint.secret
        await h.grant("acme", "g1", 1)
        await h.wait_seen(1)
        h.clock.advance(60_000)
        await h.grant("acme", "g2", 1)
        await h.wait_seen(2)
    during, after = h.seen
    for secret in (endpoint.secret, rotated.secret):
        Webhook(secret).verify(during.request.content, dict(during.request.headers))
    assert len(during.request.headers["webhook-signature"].split()) == 2
    Webhook(rotated.secret).verify(after.request.content, dict(after.request.headers))
    with pytest.raises(Exception, match="No matching signature"):
        Webhook(endpoint.secret).verify(after.request.content, dict(after.request.headers))


async def test_the_purge_forgets_settled_rows_and_deleted_endpoints(store_url) -> None:
    options = Options(allow_private=True, retention_ms=3_600_000, purge_rows_max=2)
    async with harness(store_url, options=options) as h:
        w = h.webhooks
        kept = await w.create_endpoint("default", url=URL.format("kept"), event_types=[])
        gone = await w.create_endpoint("default", url=URL.format("gone"), event_types=[])
        for i in range(3):
            await h.grant(f"c{i}", "g", 1)
        await h.wait_relayed()
        await h.wait_seen(6)
        await w.delete_endpoint("default", gone.id)
        assert await w.purge() == 3 + 1  # the deleted endpoint's deliveries, then it
        h.clock.advance(3_600_001)
        assert await w.purge() > 0
        assert await deliveries(h, kept.id) == []
        for table in ("webhook_deliveries", "webhook_attempts", "webhook_events"):
            (row,) = await h.store.fetch(f"SELECT count(*) FROM {table}")
            assert row[0] == 0, table
        (row,) = await h.store.fetch("SELECT count(*) FROM webhook_endpoints")
        assert row[0] == 1


async def test_events_before_an_endpoint_existed_are_not_its_events(store_url) -> None:
    async with harness(store_url) as h:
        await h.webhooks.create_endpoint("default", url=URL.format("early"), event_types=[])
        await h.grant("acme", "g1", 1)
        await h.wait_relayed()
        h.clock.advance(1)
        late = await h.webhooks.create_endpoint("default", url=URL.format("late"),
                                                event_types=[])
        await h.grant("acme", "g2", 1)
        await h.wait_relayed()
        await h.wait_seen(3)
        assert [s.json["data"]["grant"]["id"] for s in by_path(h.seen, "late")] == ["g2"]
        assert len(await deliveries(h, late.id)) == 1


async def test_with_no_endpoint_the_relay_passes_the_outbox_by_without_reading_it(
        store_url, monkeypatch) -> None:
    async with harness(store_url) as h:
        reads: list[int] = []
        read = h.store.outbox_after

        async def counted(after_id: int, limit: int = 1000) -> list:
            reads.append(after_id)
            return await read(after_id, limit)

        monkeypatch.setattr(h.store, "outbox_after", counted)
        for n in range(5):
            await h.grant("acme", f"g{n}", 1)
        await h.wait_relayed()  # the cursor reached the newest event...
        assert reads == []  # ...and no row was read or decoded on the way
        before = h.webhooks.relay.events_read
        h.clock.advance(1)
        endpoint = await h.webhooks.create_endpoint("default", url=URL.format("x"),
                                                    event_types=[])
        await h.grant("acme", "after", 1)
        await h.wait_relayed()
        await h.wait_seen(1)
        # The endpoint gets what came after it, read the usual way, and nothing before.
        assert [s.json["data"]["grant"]["id"] for s in h.seen] == ["after"]
        assert len(await deliveries(h, endpoint.id)) == 1
        assert reads and h.webhooks.relay.events_read == before + 1


async def test_concurrency_is_bounded_per_endpoint(store_url) -> None:
    """With a receiver that holds every request until released, no more than
    `endpoint_concurrency_max` are in flight at once."""
    options = Options(allow_private=True, concurrency_max=8, endpoint_concurrency_max=3)
    release = anyio.Event()
    full = anyio.Event()
    in_flight = {"now": 0, "peak": 0}

    async def slow(request: httpx.Request) -> httpx.Response:
        in_flight["now"] += 1
        in_flight["peak"] = max(in_flight["peak"], in_flight["now"])
        if in_flight["now"] == 3:
            full.set()
        await release.wait()
        in_flight["now"] -= 1
        return httpx.Response(200)

    async with harness(store_url, options=options) as h:
        h.webhooks.dispatcher.sender = HttpxSender(httpx.MockTransport(slow))
        await h.webhooks.create_endpoint("default", url=URL.format("x"), event_types=[])
        for i in range(10):
            await h.grant(f"c{i}", "g", 1)
        await h.wait_relayed()
        with anyio.fail_after(10):
            await full.wait()
        assert h.webhooks.dispatcher.in_flight == 3
        release.set()
        with anyio.fail_after(10):
            await h.webhooks.dispatcher.wait_for(lambda: h.webhooks.dispatcher.delivered == 10)
    assert in_flight["peak"] == 3


async def test_a_scan_that_read_before_a_settle_does_not_send_that_delivery_again(
        store_url) -> None:
    """The dispatcher's scan reads due heads while other deliveries settle. A read that
    began before a settle committed and returns after it shows the settled delivery as due
    and no longer in flight: it must not go out twice."""
    release_send, first_sent = anyio.Event(), anyio.Event()
    sent: list[str] = []

    async def held(request: httpx.Request) -> httpx.Response:
        sent.append(request.headers["webhook-id"])
        if len(sent) == 1:
            first_sent.set()
            await release_send.wait()
        return httpx.Response(200)

    async with harness(store_url) as h:
        w = h.webhooks
        w.dispatcher.sender = HttpxSender(httpx.MockTransport(held))
        await w.create_endpoint("default", url=URL.format("x"), event_types=[])
        await h.grant("a", "g", 1)
        with anyio.fail_after(10):
            await first_sent.wait()  # the first delivery is in flight, held by the receiver

        tables = w.shared.tables
        original = tables.due
        read_done, return_read = anyio.Event(), anyio.Event()

        async def stale_due(endpoint_id: str, limit: int):
            rows = await original(endpoint_id, limit)
            read_done.set()
            await return_read.wait()
            return rows

        tables.due = stale_due  # type: ignore[method-assign]
        await h.grant("b", "g", 1)  # pokes a scan, whose read now holds
        with anyio.fail_after(10):
            await read_done.wait()
        release_send.set()  # the first delivery settles while the read is held
        with anyio.fail_after(10):
            await w.dispatcher.wait_for(lambda: w.dispatcher.delivered == 1)
        tables.due = original  # type: ignore[method-assign]
        return_read.set()
        await h.wait_relayed()
        with anyio.fail_after(10):
            await w.dispatcher.wait_for(lambda: w.dispatcher.delivered == 2)
        await w.dispatcher.wait_for(lambda: w.dispatcher.in_flight == 0)
    assert len(sent) == len(set(sent)) == 2
