"""The live balance feed (gateway/feed, issue 6) against a real server process, through a
real websocket client: ordering against HTTP acknowledgements, customer and environment
isolation, filters, customer tokens, resume (also across restarts), slow consumers,
subscriber limits, heartbeats and refusals.

Nothing here sleeps to synchronize: every wait is for a frame, a close or a response, with
a bound. The websockets client is asyncio-only, so these tests run on asyncio only.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import socket
import struct
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, Self
from urllib.parse import urlencode

import httpx
import jwt
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.gateway.conftest import fresh_pg_url

pytestmark = pytest.mark.anyio

TIMEOUT = 10.0  # for one frame, close or response; generous on a loaded 2-core machine
FEED_KEY = "feed-key-" + secrets.token_hex(8)  # servers started here: environment `default`
FEED_OTHER_KEY = "feed-other-" + secrets.token_hex(8)  # ... and environment `other`
SECRET = "feed-test-secret-" + secrets.token_hex(32)  # CREDITD_TOKEN_SECRET (64+ for HS512)
EVENT_FIELDS = {"customerId", "currencyId", "resourceId", "sequence", "amount", "grant", "details",
                "balance"}
BALANCE_FIELDS = {"currencyId", "resourceId", "currentBalance", "totalGranted",
                  "totalConsumed", "reserved", "hardLimit", "lowBalanceAt", "timestamp"}
ERROR_CODES = {4400: "BadUserInput", 4401: "Unauthenticated", 4403: "Forbidden",
               4404: "CustomerNotFound", 4408: "TokenExpired", 4409: "BacklogOverflow",
               4429: "TooManySubscribers"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # websockets' client (and httpx's async client here) run on asyncio


# -- helpers ------------------------------------------------------------------------------


def is_event(frame: dict[str, Any]) -> bool:
    return frame["type"].startswith("credits.")


def grant_id(frame: dict[str, Any]) -> str | None:
    """The grant an event frame is about, if any."""
    return (frame["data"]["grant"] or {}).get("id") if is_event(frame) else None


def events(frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [f for f in frames if is_event(f)]


def pools(balances: list[dict[str, Any]]) -> dict[tuple[str, str | None], tuple[Any, ...]]:
    """Balances (snapshot entries, balance frames or the HTTP balance summary) by pool."""
    return {(b["currencyId"] if "currencyId" in b else b["currency"]["currencyId"],
             b["resourceId"]): (b["currentBalance"], b["totalGranted"], b["totalConsumed"],
                                b["reserved"])
            for b in balances}


def ws_url(server: Any, **params: Any) -> str:
    query = urlencode({k: v for k, v in params.items() if v is not None})
    return f"ws://127.0.0.1:{server.port}/api/v1/credits/stream" + (f"?{query}" if query else "")


class Feed:
    """One websocket subscription and every frame it received, in order."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.frames: list[dict[str, Any]] = []

    async def next(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        try:
            raw = await asyncio.wait_for(self.ws.recv(), timeout)
        except TimeoutError:
            raise AssertionError(f"no frame in {timeout} s; the last ones: "
                                 f"{self.frames[-5:]}") from None
        frame = json.loads(raw)
        assert isinstance(frame, dict) and isinstance(frame.get("type"), str), frame
        self.frames.append(frame)
        return frame

    async def until(self, pred: Callable[[dict[str, Any]], bool],
                    timeout: float = TIMEOUT) -> dict[str, Any]:
        """The first frame from now on that `pred` accepts (the others are kept too)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            left = deadline - loop.time()
            if left <= 0:
                raise AssertionError(f"no matching frame in {timeout} s; the last ones: "
                                     f"{self.frames[-5:]}")
            frame = await self.next(left)
            if pred(frame):
                return frame

    async def closed(self, timeout: float = TIMEOUT) -> tuple[list[dict[str, Any]], int]:
        """Read until the server closes: the frames read meanwhile and the close code
        (1006 when the connection ended without a close frame)."""
        frames: list[dict[str, Any]] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            while True:
                left = deadline - loop.time()
                if left <= 0:
                    raise AssertionError(f"the server did not close in {timeout} s: {frames}")
                frames.append(await self.next(left))
        except ConnectionClosed:
            pass
        code = self.ws.close_code
        assert code is not None
        return frames, code

    async def send(self, text: str) -> None:
        await self.ws.send(text)


@asynccontextmanager
async def subscribe(server: Any, *, key: str | None = None,
                    headers: dict[str, str] | None = None,
                    **params: Any) -> AsyncIterator[Feed]:
    """A websocket on the feed; `key` None: the server's default-environment key, "": none."""
    if key is None:
        key = getattr(server, "feed_key", None) or server.key
    all_headers = {"X-API-KEY": key} if key else {}
    all_headers.update(headers or {})
    async with connect(ws_url(server, **params), additional_headers=all_headers,
                       open_timeout=30, max_size=2 ** 24) as ws:
        yield Feed(ws)


async def snapshot_of(feed: Feed) -> dict[str, Any]:
    """The first frame, which must be a snapshot; checks its shape."""
    snap = await feed.next()
    assert snap["type"] == "snapshot", snap
    assert set(snap) == {"type", "seq", "reset", "customerId", "balances"}, snap
    for b in snap["balances"]:
        assert set(b) == BALANCE_FIELDS, b
    return snap


async def refused(server: Any, code: int, **kwargs: Any) -> dict[str, Any]:
    """Connect, and expect exactly an error frame and then a close with `code`."""
    async with subscribe(server, **kwargs) as feed:
        frames, closed = await feed.closed()
    assert (closed, [f["type"] for f in frames]) == (code, ["error"]), (closed, frames)
    error = frames[0]
    assert set(error) == {"type", "code", "message"} and error["message"], error
    assert error["code"] == ERROR_CODES[code], error
    reason = feed.ws.close_reason or ""
    assert reason and error["message"].startswith(reason), (reason, error)
    return error


def check_stream(frames: list[dict[str, Any]], customer: str, *, unfiltered: bool = True,
                 first_seq: int | None = None) -> None:
    """The invariants of a subscription's frames: the snapshot first, seq never decreasing,
    event frames strictly increasing (gapless for an unfiltered subscription), a balance
    frame carrying the seq of the latest event before it (unfiltered)."""
    assert frames and frames[0]["type"] == "snapshot", frames[:1]
    last = frames[0]["seq"]
    last_event = last if first_seq is None else first_seq - 1
    for f in frames[1:]:
        if f["type"] in ("heartbeat", "pong"):
            assert f["seq"] == last, (f, last)
            continue
        assert f["seq"] >= last, (f["seq"], last, f)
        if is_event(f):
            assert set(f) == {"type", "seq", "timestamp", "data"}, f
            assert set(f["data"]) == EVENT_FIELDS, f
            assert f["data"]["customerId"] == customer and f["data"]["sequence"] == f["seq"], f
            if unfiltered:
                assert f["seq"] == last_event + 1, ("gap or repeat", last_event, f["seq"])
            else:
                assert f["seq"] > last_event, ("repeat", last_event, f["seq"])
            last_event = f["seq"]
        else:
            assert f["type"] == "balance", f
            assert set(f) == BALANCE_FIELDS | {"type", "seq"}, f
            if unfiltered:
                assert f["seq"] == max(last_event, frames[0]["seq"]), (f, last_event)
        last = f["seq"]


def iso_in(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


def acked_balance(ack: dict[str, Any]) -> tuple[Any, Any]:
    """(current balance, total consumed) as a consumption's HTTP answer states them."""
    credit = ack["credit"]
    return credit["usageLimit"] - credit["currentUsage"], credit["currentUsage"]


class Api:
    """The HTTP side, async so that websockets keep being read while requests run."""

    def __init__(self, server: Any, key: str | None = None) -> None:
        key = key or getattr(server, "feed_key", None) or server.key
        self.http = httpx.AsyncClient(base_url=server.url, headers={"X-API-KEY": key},
                                      timeout=30)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.http.aclose()

    async def call(self, method: str, path: str, body: Any = None, *,
                   status: int = 200, headers: dict[str, str] | None = None) -> Any:
        r = await self.http.request(method, path, json=body, headers=headers)
        assert r.status_code == status, (method, path, r.status_code, r.text)
        return r.json()["data"] if status < 300 else r.json()

    async def currency(self, cid: str | None = None) -> str:
        cid = cid or f"cur-{uuid.uuid4().hex[:10]}"
        await self.call("POST", "/api/v1/credits/custom-currencies",
                        {"id": cid, "displayName": cid})
        return cid

    async def customer(self, cid: str | None = None) -> str:
        cid = cid or f"cust-{uuid.uuid4().hex[:10]}"
        await self.call("POST", "/api/v1/customers", {"id": cid})
        return cid

    async def grant(self, customer: str, currency: str, amount: int, *,
                    resource: str | None = None, **extra: Any) -> dict[str, Any]:
        body = {"customerId": customer, "currencyId": currency, "amount": amount,
                "grantType": "PAID", "displayName": "g", **extra}
        if resource is not None:
            body["resourceId"] = resource
        return await self.call("POST", "/api/v1/credits/grants", body)

    async def consume(self, customer: str, currency: str, amount: int, *,
                      resource: str | None = None) -> dict[str, Any]:
        body = {"customerId": customer, "currencyId": currency, "amount": amount,
                "idempotencyKey": uuid.uuid4().hex}
        if resource is not None:
            body["resourceId"] = resource
        return await self.call("POST", "/api/v1/credits/consumption", body)

    async def balances(self, customer: str) -> list[dict[str, Any]]:
        data = await self.call("GET", f"/api/v1/credits/balance?customerId={customer}")
        return data["balances"]

    async def token(self, customer: str, status: int = 201, **body: Any) -> Any:
        return await self.call("POST", f"/api/v1/customers/{customer}/tokens", body,
                               status=status)


def start(make_server: Callable[..., Any], database_url: str | None = None,
          **env: str) -> Any:
    s = make_server(database_url, api_keys=f"{FEED_KEY},other:{FEED_OTHER_KEY}", env=env)
    s.feed_key = FEED_KEY
    return s.start()


def forge(customer: str, *, key: str = SECRET, algorithm: str = "HS256",
          drop: tuple[str, ...] = (), **claims: Any) -> str:
    now = int(time.time())
    body: dict[str, Any] = {"aud": "creditd:feed", "typ": "creditd.customer", "env": "default",
                            "sub": customer, "iat": now, "exp": now + 300, **claims}
    for name in drop:
        body.pop(name)
    return jwt.encode(body, key, algorithm=algorithm)


# -- ordering against the HTTP acknowledgement ----------------------------------------------


async def test_balance_frames_follow_acks_in_seq_order(server) -> None:
    async with Api(server) as api:
        currency, customer = await api.currency(), await api.customer()
        await api.grant(customer, currency, 100)
        async with subscribe(server, customerId=customer) as feed:
            snap = await snapshot_of(feed)
            assert (snap["seq"], snap["reset"], snap["customerId"]) == (1, False, customer)
            assert pools(snap["balances"]) == pools(await api.balances(customer))
            assert pools(snap["balances"]) == {(currency, None): (100, 100, 0, 0)}

            # Each acknowledged consumption: the next balance frame shows what the ack said,
            # with the threshold events of the same consumption before it.
            expected_types: list[list[str]] = [
                [], [],
                ["credits.grant.usage_low", "credits.balance.usage_low"],
                ["credits.grant.depleted", "credits.balance.depleted"]]
            for amount, types in zip((10, 30, 45, 15), expected_types, strict=True):
                seen = len(feed.frames)
                ack = await api.consume(customer, currency, amount)
                frame = await feed.until(lambda f: f["type"] == "balance")
                assert (frame["currentBalance"], frame["totalConsumed"]) == acked_balance(ack)
                assert frame["currencyId"] == currency and frame["resourceId"] is None
                assert [f["type"] for f in events(feed.frames[seen:])] == types

            # A grant, and a grant that a timer expires: events that no request of this
            # connection waits for still arrive, in order.
            granted = await api.grant(customer, currency, 50)
            frame = await feed.until(lambda f: f["type"] == "balance")
            assert frame["currentBalance"] == 50
            expiring = await api.grant(customer, currency, 5, expireAt=iso_in(1.5))
            expired = await feed.until(lambda f: f["type"] == "credits.expired", timeout=20)
            assert expired["data"]["grant"]["id"] == expiring["id"]
            frame = await feed.until(lambda f: f["type"] == "balance")
            assert frame["currentBalance"] == 50

            tail = [f for f in events(feed.frames) if f["type"] in ("credits.granted",
                                                                      "credits.expired")]
            assert [(f["type"], f["data"]["grant"]["id"]) for f in tail] == [
                ("credits.granted", granted["id"]), ("credits.granted", expiring["id"]),
                ("credits.expired", expiring["id"])]
            check_stream(feed.frames, customer)
            assert feed.frames[-1]["seq"] == snap["seq"] + len(events(feed.frames)) == 8
            assert pools([feed.frames[-1]]) == pools(await api.balances(customer))

            # A void moves the balance too: its balance frame follows the grant's update.
            r = await api.http.post(f"/api/v1/credits/grants/{granted['id']}/void")
            assert r.status_code == 200, r.text
            frame = await feed.until(lambda f: f["type"] == "balance")
            assert frame["currentBalance"] == 0
            assert pools([frame]) == pools(await api.balances(customer))


# -- isolation ------------------------------------------------------------------------------


async def test_customers_and_environments_are_isolated(server) -> None:
    async with Api(server) as api, Api(server, server.other_key) as other:
        currency = await api.currency()
        a, b = await api.customer(), await api.customer()
        await api.grant(a, currency, 1000)
        await api.grant(b, currency, 7)
        # The same ids in the other environment are other customers and currencies.
        await other.currency(currency)
        await other.customer(a)
        await other.grant(a, currency, 3)
        async with (subscribe(server, customerId=a) as feed_a,
                    subscribe(server, customerId=b) as feed_b,
                    subscribe(server, key=server.other_key, customerId=a) as feed_oa):
            snaps = [await snapshot_of(f) for f in (feed_a, feed_b, feed_oa)]
            assert [pools(s["balances"]) for s in snaps] == [
                {(currency, None): (1000, 1000, 0, 0)}, {(currency, None): (7, 7, 0, 0)},
                {(currency, None): (3, 3, 0, 0)}]

            await api.grant(a, currency, 10)
            await api.consume(a, currency, 500)
            await other.grant(a, currency, 4)
            marker_b = await api.grant(b, currency, 1)
            marker_oa = await other.grant(a, currency, 2)
            marker_a = await api.grant(a, currency, 5)
            for feed, marker, granted in ((feed_a, marker_a, 1015), (feed_b, marker_b, 8),
                                          (feed_oa, marker_oa, 9)):
                await feed.until(lambda f, m=marker: grant_id(f) == m["id"])
                await feed.until(lambda f, g=granted: f["type"] == "balance"
                                 and f["totalGranted"] == g)
            # Everything committed before the markers was published before them: nothing
            # of another customer or environment came, and each saw all of its own.
            assert [f["type"] for f in feed_b.frames] == ["snapshot", "credits.granted",
                                                          "balance"]
            assert [(f["type"], f.get("totalGranted")) for f in feed_oa.frames[1:]] == [
                ("credits.granted", None), ("balance", 7), ("credits.granted", None),
                ("balance", 9)]
            granted_a = [f["data"]["grant"]["amount"] for f in events(feed_a.frames)
                         if f["type"] == "credits.granted"]
            assert granted_a == [10, 5]
            for feed, customer in ((feed_a, a), (feed_b, b), (feed_oa, a)):
                check_stream(feed.frames, customer)
            assert {f["totalGranted"] for f in feed_a.frames if f["type"] == "balance"} \
                == {1010, 1015}

        # A resume replays the environment's own events only.
        async with subscribe(server, key=server.other_key, customerId=a, since=0) as feed:
            await feed.until(lambda f: f["type"] == "snapshot")
            assert [(f["type"], f["seq"]) for f in feed.frames] == [
                ("credits.granted", 1), ("credits.granted", 2), ("credits.granted", 3),
                ("snapshot", 3)]
            assert [f["data"]["grant"]["amount"] for f in feed.frames[:-1]] == [3, 4, 2]

        # A key reads its own environment only; the header must match the key.
        await refused(server, 4404, key=server.other_key, customerId=b)
        error = await refused(server, 4403, customerId=a, headers={"X-ENVIRONMENT-ID": "other"})
        assert "X-ENVIRONMENT-ID" in error["message"]
        async with subscribe(server, customerId=a,
                             headers={"X-ENVIRONMENT-ID": "default"}) as feed:
            assert (await snapshot_of(feed))["customerId"] == a


# -- filters --------------------------------------------------------------------------------


async def test_currency_and_resource_filters(server) -> None:
    async with Api(server) as api:
        c1, c2, customer = await api.currency(), await api.currency(), await api.customer()
        await api.grant(customer, c1, 100)
        await api.grant(customer, c2, 100, resource="r1")
        filters = [{}, {"currencyId": c1}, {"resourceId": "r1"},
                   {"currencyId": c1, "resourceId": "r1"}, {"currencyId": c2,
                                                            "resourceId": "r2"}]

        def wanted(f: dict[str, Any], flt: dict[str, str]) -> bool:
            body = f["data"] if is_event(f) else f
            return (body["currencyId"] == flt.get("currencyId", body["currencyId"])
                    and body["resourceId"] == flt.get("resourceId", body["resourceId"]))

        async with (subscribe(server, customerId=customer, **filters[0]) as f0,
                    subscribe(server, customerId=customer, **filters[1]) as f1,
                    subscribe(server, customerId=customer, **filters[2]) as f2,
                    subscribe(server, customerId=customer, **filters[3]) as f3,
                    subscribe(server, customerId=customer, **filters[4]) as f4):
            feeds = [f0, f1, f2, f3, f4]
            snaps = [await snapshot_of(f) for f in feeds]
            assert [set(pools(s["balances"])) for s in snaps] == [
                {(c1, None), (c2, "r1")}, {(c1, None)}, {(c2, "r1")}, set(), set()]

            for cur, res in ((c1, None), (c1, "r1"), (c2, "r1"), (c2, "r2"), (c1, "r2")):
                await api.grant(customer, cur, 40, resource=res)
                await api.consume(customer, cur, 35, resource=res)  # low: threshold events
            marker = await api.grant(customer, c1, 1, resource="r1")
            await api.grant(customer, c2, 1, resource="r2")  # the last pool of f4's filter
            await f0.until(lambda f: f["type"] == "balance" and f["resourceId"] == "r2"
                           and f["totalGranted"] == 41 and f["currencyId"] == c2)
            all_frames = f0.frames
            for feed, flt in zip(feeds[1:], filters[1:], strict=True):
                last = [f for f in all_frames if f["type"] != "snapshot" and wanted(f, flt)]
                await feed.until(lambda f, x=last[-1]: f == x)
                got = feed.frames[1:]
                assert all(wanted(f, flt) for f in got), (flt, got)
                # Exactly the matching events, and the matching balance frames' last values.
                assert events(got) == [f for f in events(all_frames) if wanted(f, flt)], flt
                assert pools([f for f in got if f["type"] == "balance"]) == pools(
                    [f for f in all_frames if f["type"] == "balance" and wanted(f, flt)])
                check_stream(feed.frames, customer, unfiltered=False)
            assert any(grant_id(f) == marker["id"] for f in f3.frames)
            check_stream(f0.frames, customer)


# -- customer tokens ------------------------------------------------------------------------


async def test_customer_token_reads_its_customer_only(server) -> None:
    async with Api(server) as api:
        currency, a, b = await api.currency(), await api.customer(), await api.customer()
        await api.grant(a, currency, 10)
        minted = await api.token(a)
        assert set(minted) == {"token", "expiresAt", "customerId", "resourceId"}
        assert (minted["customerId"], minted["resourceId"]) == (a, None)
        expires = datetime.fromisoformat(minted["expiresAt"])
        assert abs(expires.timestamp() - (time.time() + 900)) < 60  # the default TTL
        token = minted["token"]

        async with subscribe(server, key="", token=token) as feed:
            snap = await snapshot_of(feed)
            assert (snap["customerId"], pools(snap["balances"])) == (
                a, {(currency, None): (10, 10, 0, 0)})
            await api.grant(a, currency, 5)
            event = await feed.until(is_event)
            assert (event["type"], event["seq"], event["data"]["customerId"]) == (
                "credits.granted", 2, a)
        async with subscribe(server, key="", token=token, customerId=a) as feed:
            assert (await snapshot_of(feed))["seq"] == 2

        error = await refused(server, 4403, key="", token=token, customerId=b)
        assert error["message"].startswith("customerId")
        # A token whose claims were edited (another customer), its signature kept.
        head, payload, signature = token.split(".")
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        claims["sub"] = b
        edited = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
        for bad in (f"{head}.{edited}.{signature}", f"{head}.{payload}.{signature[:-4]}",
                    "not-a-token", f"{head}.{payload}."):
            await refused(server, 4401, key="", token=bad)
            await refused(server, 4401, key="", token=bad, customerId=b)
        await refused(server, 4401, key="")  # neither a key nor a token
        await refused(server, 4401, key="", customerId=a)
        await refused(server, 4401, key="wrong-key", customerId=a)

        # Minting: validated, for customers of the key's environment only.
        for body, field in (({"ttlSeconds": 0}, "ttlSeconds"),
                            ({"ttlSeconds": 86401}, "ttlSeconds"),
                            ({"ttlSeconds": -5}, "ttlSeconds"),
                            ({"ttlSeconds": "x"}, "ttlSeconds"),
                            ({"resourceId": ""}, "resourceId"),
                            ({"nope": 1}, "nope")):
            answer = await api.token(a, status=400, **body)
            assert (answer["code"], answer.get("field")) == ("BadUserInput", field), answer
        assert (await api.token(a, ttlSeconds=86400))["customerId"] == a
        assert (await api.token(a, ttlSeconds=1))["customerId"] == a
        missing = await api.token(f"nobody-{uuid.uuid4().hex[:6]}", status=404)
        assert missing["code"] == "CustomerNotFound"
        async with Api(server, server.other_key) as other:
            assert (await other.token(a, status=404))["code"] == "CustomerNotFound"
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as anonymous:
            r = await anonymous.post(f"/api/v1/customers/{a}/tokens", json={})
            assert r.status_code == 401, r.text


async def test_resource_token_sees_its_resource_only(server) -> None:
    async with Api(server) as api:
        currency, customer = await api.currency(), await api.customer()
        await api.grant(customer, currency, 10, resource="r1")
        await api.grant(customer, currency, 20, resource="r2")
        await api.grant(customer, currency, 30)
        minted = await api.token(customer, resourceId="r1", ttlSeconds=600)
        assert minted["resourceId"] == "r1"
        token = minted["token"]
        error = await refused(server, 4403, key="", token=token, resourceId="r2")
        assert error["message"].startswith("resourceId")
        async with (subscribe(server, key="", token=token) as feed,
                    subscribe(server, key="", token=token, resourceId="r1") as explicit):
            for f in (feed, explicit):
                snap = await snapshot_of(f)
                assert (snap["seq"], pools(snap["balances"])) == (
                    3, {(currency, "r1"): (10, 10, 0, 0)})
            await api.grant(customer, currency, 2, resource="r2")
            await api.grant(customer, currency, 3)
            await api.consume(customer, currency, 19, resource="r2")  # 2 events: low
            marker = await api.grant(customer, currency, 4, resource="r1")
            for f in (feed, explicit):
                await f.until(lambda x: x["type"] == "balance" and x["totalGranted"] == 14)
                assert [(x["type"], x["seq"]) for x in f.frames[1:]] == [
                    ("credits.granted", 8), ("balance", 8)], f.frames
                assert f.frames[1]["data"]["grant"]["id"] == marker["id"]
        # A resume with the token replays its resource's events only.
        async with subscribe(server, key="", token=token, since=3) as feed:
            frames = [await feed.next(), await feed.next()]
            assert [(x["type"], x["seq"]) for x in frames] == [("credits.granted", 8),
                                                                ("snapshot", 8)]
            assert frames[1]["reset"] is False


async def test_token_expiring_while_connected_closes_4408(server) -> None:
    async with Api(server) as api:
        customer = await api.customer()
        minted = await api.token(customer, ttlSeconds=3)  # 2 to 3 s left
        expires = datetime.fromisoformat(minted["expiresAt"])
        async with subscribe(server, key="", token=minted["token"]) as feed:
            snap = await snapshot_of(feed)
            assert (snap["customerId"], snap["balances"]) == (customer, [])
            frames, code = await feed.closed(timeout=15)
        closed_at = time.time()
        assert code == 4408, (code, frames)
        assert expires.timestamp() - 0.05 <= closed_at < expires.timestamp() + 5
        await refused(server, 4408, key="", token=minted["token"])
        # Nothing but the expiry: no heartbeat (15 s) fits in a 3 s token's life, even when
        # the expiry timer fires a little before the wall clock reaches `exp`.
        assert [(f["type"], f.get("code")) for f in frames] == [
            ("error", "TokenExpired")], frames


async def test_forged_tokens(make_server) -> None:
    s = start(make_server, CREDITD_TOKEN_SECRET=SECRET)
    async with Api(s) as api:
        currency, a, b = await api.currency(), await api.customer(), await api.customer()
        await api.grant(a, currency, 10, resource="r1")
        await api.grant(a, currency, 20)

        # The server's tokens are what the protocol says they are...
        minted = await api.token(a, resourceId="r1", ttlSeconds=120)
        claims = jwt.decode(minted["token"], SECRET, algorithms=["HS256"],
                            audience="creditd:feed")
        assert set(claims) == {"aud", "typ", "env", "sub", "rid", "iat", "exp", "jti"}
        assert (claims["aud"], claims["typ"], claims["env"], claims["sub"], claims["rid"]) == (
            "creditd:feed", "creditd.customer", "default", a, "r1")
        assert claims["exp"] - claims["iat"] == 120
        expires = datetime.fromisoformat(minted["expiresAt"])
        assert expires.timestamp() == claims["exp"]
        # ... so one made here with the same secret works (the control for what follows).
        async with subscribe(s, key="", token=forge(a)) as feed:
            snap = await snapshot_of(feed)
            assert (snap["customerId"], len(snap["balances"])) == (a, 2)
        async with subscribe(s, key="", token=forge(a, rid="r1")) as feed:
            assert pools((await snapshot_of(feed))["balances"]) == {
                (currency, "r1"): (10, 10, 0, 0)}

        now = int(time.time())
        for token in (forge(a, key="another-secret-" + secrets.token_hex(16)),
                      forge(a, aud="creditd:other"), forge(a, drop=("aud",)),
                      forge(a, typ="creditd.admin"), forge(a, drop=("typ",)),
                      forge(a, drop=("exp",)), forge(a, drop=("sub",)),
                      forge(a, drop=("env",)), forge(a, env=7), forge(a, rid=5),
                      forge(a, exp=float(now + 300)),
                      forge(a, algorithm="HS512"), forge(a, key="", algorithm="none"),
                      # Expired and forged: the signature is checked first.
                      forge(a, key="another-secret-" + secrets.token_hex(16), exp=now - 60)):
            await refused(s, 4401, key="", token=token)
        await refused(s, 4408, key="", token=forge(a, exp=now - 5))
        await refused(s, 4408, key="", token=forge(a, iat=now - 600, exp=now - 300))
        await refused(s, 4403, key="", token=forge(a), customerId=b)
        await refused(s, 4403, key="", token=forge(a, rid="r1"), resourceId="r2")
        # A valid token naming another environment reads that environment, where `a` does
        # not exist.
        await refused(s, 4404, key="", token=forge(a, env="other"))
        await refused(s, 4404, key="", token=forge(a, env="nowhere"))


# -- resume ---------------------------------------------------------------------------------


async def test_resume_replays_exactly_the_missed_events(server) -> None:
    async with Api(server) as api:
        c1, c2, customer = await api.currency(), await api.currency(), await api.customer()
        await api.grant(customer, c1, 100)
        async with subscribe(server, customerId=customer) as witness:
            await snapshot_of(witness)
            async with subscribe(server, customerId=customer) as first:
                await snapshot_of(first)
                await api.grant(customer, c2, 50)
                await api.consume(customer, c1, 10)
                await first.until(lambda f: f["type"] == "balance" and f["currencyId"] == c1)
                last_seen = first.frames[-1]["seq"]
            assert last_seen == 2

            # Missed while disconnected: grants, thresholds, depletion.
            await api.grant(customer, c1, 20)
            await api.consume(customer, c1, 95)
            await api.grant(customer, c2, 5)
            await api.consume(customer, c2, 55)
            await witness.until(lambda f: f["type"] == "balance" and f["currencyId"] == c2
                                and f["currentBalance"] == 0)
            current = witness.frames[-1]["seq"]
            missed = [f for f in events(witness.frames) if f["seq"] > last_seen]
            assert [f["seq"] for f in missed] == list(range(last_seen + 1, current + 1))
            assert len(missed) >= 5

            async with subscribe(server, customerId=customer, since=last_seen) as resumed:
                snap = await resumed.until(lambda f: f["type"] == "snapshot")
                # The replay is what a live subscriber got, frame for frame.
                assert resumed.frames[:-1] == missed
                assert (snap["seq"], snap["reset"]) == (current, False)
                assert pools(snap["balances"]) == pools(await api.balances(customer))
                # ... and then the live frames continue from there.
                await api.grant(customer, c2, 1)
                event = await resumed.until(is_event)
                assert event["seq"] == current + 1
                await resumed.until(lambda f: f["type"] == "balance")
                check_stream(resumed.frames[len(missed):], customer)
            current += 1
            await witness.until(lambda f: f["seq"] == current and f["type"] == "balance")
            everything = events(witness.frames)

        # Resuming with a filter replays the matching events only.
        async with subscribe(server, customerId=customer, since=last_seen,
                             currencyId=c2) as resumed:
            snap = await resumed.until(lambda f: f["type"] == "snapshot")
            assert resumed.frames[:-1] == [f for f in everything if f["seq"] > last_seen
                                           and f["data"]["currencyId"] == c2]
            assert (snap["seq"], snap["reset"]) == (current, False)
            assert [b["currencyId"] for b in snap["balances"]] == [c2]
        # From the start, and from where it is now.
        async with subscribe(server, customerId=customer, since=0) as resumed:
            await resumed.until(lambda f: f["type"] == "snapshot")
            assert [f["seq"] for f in resumed.frames[:-1]] == list(range(1, current + 1))
            assert resumed.frames[:-1][-len(everything):] == everything
        async with subscribe(server, customerId=customer, since=current) as resumed:
            snap = await snapshot_of(resumed)
            assert (snap["seq"], snap["reset"]) == (current, False)
        # A sequence this customer never reached: only a reset snapshot.
        for since in (current + 1, current + 1000, 10 ** 17):
            async with subscribe(server, customerId=customer, since=since) as resumed:
                snap = await snapshot_of(resumed)
                assert (snap["seq"], snap["reset"]) == (current, True)
                assert pools(snap["balances"]) == pools(await api.balances(customer))


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest,
                 make_server: Callable[..., Any]) -> Iterator[str | None]:
    """None (make_server's SQLite file) or a fresh PostgreSQL database, dropped after."""
    if request.param == "sqlite":
        yield None
        return
    url, drop = fresh_pg_url()
    try:
        yield url
    finally:
        drop()


async def test_resume_across_a_restart(make_server, database_url) -> None:
    s = start(make_server, database_url)
    try:
        async with Api(s) as api:
            currency, customer = await api.currency(), await api.customer()
            await api.grant(customer, currency, 100)
            # Minted before the restart: the generated secret is kept in the database.
            token = (await api.token(customer, ttlSeconds=3600))["token"]
            async with subscribe(s, customerId=customer) as witness:
                await snapshot_of(witness)
                async with subscribe(s, customerId=customer) as first:
                    await snapshot_of(first)
                    await api.consume(customer, currency, 10)
                    await first.until(lambda f: f["type"] == "balance")
                    last_seen = first.frames[-1]["seq"]
                await api.grant(customer, currency, 30)
                await api.consume(customer, currency, 120)
                await witness.until(lambda f: f["type"] == "balance"
                                    and f["currentBalance"] == 0)
                missed = [f for f in events(witness.frames) if f["seq"] > last_seen]
                current = witness.frames[-1]["seq"]
                before = pools(await api.balances(customer))
                s.stop()
                _, code = await witness.closed()
                assert code in (1012, 1006), code  # the server went away
        s.start()
        async with Api(s) as api:
            async with subscribe(s, key="", token=token, since=last_seen) as resumed:
                snap = await resumed.until(lambda f: f["type"] == "snapshot")
                assert [f["seq"] for f in resumed.frames[:-1]] == list(
                    range(last_seen + 1, current + 1))
                assert resumed.frames[:-1] == missed
                assert (snap["seq"], snap["reset"]) == (current, False)
                assert pools(snap["balances"]) == before == pools(
                    await api.balances(customer))
                # The sequence goes on after the restart.
                await api.grant(customer, currency, 1)
                assert (await resumed.until(is_event))["seq"] == current + 1
            async with subscribe(s, customerId=customer, since=current + 5) as resumed:
                snap = await snapshot_of(resumed)
                assert (snap["seq"], snap["reset"]) == (current + 1, True)
    finally:
        if s.proc is not None:
            s.stop()  # before the database is dropped


async def test_resume_further_back_than_replay_max_resets(make_server) -> None:
    s = start(make_server, CREDITD_FEED_REPLAY_MAX="3")
    async with Api(s) as api:
        currency, customer = await api.currency(), await api.customer()
        await api.grant(customer, currency, 1)
        for _ in range(3):
            await api.grant(customer, currency, 1)
        async with subscribe(s, customerId=customer, since=1) as feed:  # 3 missed: replayed
            await feed.until(lambda f: f["type"] == "snapshot")
            assert [(f["type"], f["seq"]) for f in feed.frames] == [
                ("credits.granted", 2), ("credits.granted", 3), ("credits.granted", 4),
                ("snapshot", 4)]
            assert feed.frames[-1]["reset"] is False
        await api.grant(customer, currency, 1)
        async with subscribe(s, customerId=customer, since=1) as feed:  # 4 missed: reset
            snap = await snapshot_of(feed)
            assert (snap["seq"], snap["reset"]) == (5, True)
            assert pools(snap["balances"]) == {(currency, None): (5, 5, 0, 0)}
        async with subscribe(s, customerId=customer, since=2) as feed:
            await feed.until(lambda f: f["type"] == "snapshot")
            assert [f["seq"] for f in feed.frames] == [3, 4, 5, 5]
            assert feed.frames[-1]["reset"] is False


# -- slow consumers -------------------------------------------------------------------------


class StalledSubscriber:
    """A websocket client on a plain socket with a small receive buffer, which reads the
    handshake and the snapshot and then nothing until told to."""

    def __init__(self, server: Any, key: str, customer: str) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.settimeout(TIMEOUT)
        self.sock.connect(("127.0.0.1", server.port))
        nonce = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (f"GET /api/v1/credits/stream?{urlencode({'customerId': customer})} HTTP/1.1\r\n"
             f"Host: 127.0.0.1:{server.port}\r\nUpgrade: websocket\r\n"
             f"Connection: Upgrade\r\nSec-WebSocket-Key: {nonce}\r\n"
             f"Sec-WebSocket-Version: 13\r\nX-API-KEY: {key}\r\n\r\n").encode())
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            self._fill()
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head

    def _fill(self) -> bool:
        chunk = self.sock.recv(1 << 16)
        self.buffer += chunk
        return bool(chunk)

    def _take(self, n: int) -> bytes | None:
        while len(self.buffer) < n:
            if not self._fill():
                return None
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out

    def frame(self) -> tuple[int, bytes] | None:
        """The next (opcode, payload), or None when the connection ends."""
        head = self._take(2)
        if head is None:
            return None
        assert head[0] & 0x80 and not head[1] & 0x80, head  # whole, unmasked frames
        size = head[1] & 0x7F
        if size == 126:
            size = struct.unpack("!H", self._take(2) or b"\0\0")[0]
        elif size == 127:
            size = struct.unpack("!Q", self._take(8) or b"\0" * 8)[0]
        payload = self._take(size)
        assert payload is not None, "the connection ended inside a frame"
        return head[0] & 0x0F, payload

    def drain(self) -> tuple[list[dict[str, Any]], int]:
        """Every frame up to the server's close frame (its code) or end of stream (1006)."""
        frames: list[dict[str, Any]] = []
        while True:
            try:
                got = self.frame()
            except TimeoutError:
                raise AssertionError(f"the server never closed the stalled subscriber; it "
                                     f"got {len(frames)} frames") from None
            if got is None:
                return frames, 1006
            opcode, payload = got
            if opcode == 8:
                return frames, struct.unpack("!H", payload[:2])[0]
            if opcode == 1:
                frames.append(json.loads(payload))

    def close(self) -> None:
        self.sock.close()


async def test_a_stalled_subscriber_is_cut_off_and_resumes(make_server) -> None:
    grants, comment = 200, "x" * 40_000  # ~8 MB of event frames: more than any buffers
    s = start(make_server, CREDITD_FEED_BACKLOG_MAX="20",
              CREDITD_FEED_CUSTOMER_SUBSCRIBERS_MAX="2",
              CREDITD_FEED_PING_INTERVAL_S="3600")
    async with Api(s) as api:
        currency, customer = await api.currency(), await api.customer()
        await api.grant(customer, currency, 1)
        stalled = StalledSubscriber(s, FEED_KEY, customer)
        try:
            opcode, payload = stalled.frame() or (0, b"")
            assert (opcode, json.loads(payload)["type"]) == (1, "snapshot")
            async with subscribe(s, customerId=customer) as healthy:
                assert (await snapshot_of(healthy))["seq"] == 1
                received: dict[str, float] = {}

                async def read() -> None:
                    while len(received) < grants:
                        f = await healthy.next(30)
                        if is_event(f):
                            received[f["data"]["grant"]["id"]] = time.perf_counter()

                reader = asyncio.create_task(read())
                acks: list[tuple[str, float, float]] = []
                for _ in range(grants):
                    sent = time.perf_counter()
                    g = await api.grant(customer, currency, 1, comment=comment)
                    acks.append((g["id"], sent, time.perf_counter()))
                await asyncio.wait_for(reader, 60)
                check_stream(healthy.frames, customer)
                assert len(events(healthy.frames)) == grants
                ack_s = [done - sent for _, sent, done in acks]
                delivery_s = [received[gid] - done for gid, _, done in acks]
                print(f"\nslow consumer: {grants} grants; ack max {max(ack_s):.3f} s, "
                      f"mean {sum(ack_s) / grants:.3f} s; delivery after ack max "
                      f"{max(delivery_s):.3f} s")
                assert max(ack_s) < 2.0, ack_s
                assert max(delivery_s) < 5.0, delivery_s

                # The stalled one: whatever reached its socket, gapless, then the close.
                frames, code = stalled.drain()
                if code == 4409:
                    error = frames.pop()
                    assert (error["type"], error["code"]) == ("error", "BacklogOverflow")
                else:
                    assert code == 1006, code
                check_stream([{"type": "snapshot", "seq": 1}, *frames], customer)
                got = events(frames)
                last_seen = got[-1]["seq"] if got else 1
                assert last_seen < grants + 1, "it was never cut off"
                print(f"slow consumer: the stalled subscriber got {last_seen - 1} events, "
                      f"then close {code}")
                # Its slot is free again (two per customer), and it resumes where it was.
                async with subscribe(s, customerId=customer, since=last_seen) as resumed:
                    snap = await resumed.until(lambda f: f["type"] == "snapshot", 30)
                    assert [f["seq"] for f in resumed.frames[:-1]] == list(
                        range(last_seen + 1, grants + 2))
                    assert (snap["seq"], snap["reset"]) == (grants + 1, False)
                    assert pools(snap["balances"]) == {
                        (currency, None): (grants + 1, grants + 1, 0, 0)}
        finally:
            stalled.close()


# -- limits ---------------------------------------------------------------------------------


async def test_subscriber_limits(make_server) -> None:
    s = start(make_server, CREDITD_FEED_CUSTOMER_SUBSCRIBERS_MAX="2",
              CREDITD_FEED_SUBSCRIBERS_MAX="3")
    async with Api(s) as api:
        a, b = await api.customer(), await api.customer()
        async with subscribe(s, customerId=a) as a1, subscribe(s, customerId=a) as a2:
            await snapshot_of(a1)
            await snapshot_of(a2)
            error = await refused(s, 4429, customerId=a)
            assert "per customer" in error["message"]
            async with subscribe(s, customerId=b) as b1:  # another customer: fine
                await snapshot_of(b1)
                error = await refused(s, 4429, customerId=b)  # the server's limit now
                assert "the server has 3" in error["message"]
            await a1.ws.close()
            assert a1.ws.close_code == 1000
            # The slot frees when the server has handled the close, which may come just
            # after the client saw it: a few attempts, each a complete refusal.
            for _ in range(20):
                async with subscribe(s, customerId=a) as a3:
                    first = await a3.next()
                    if first["type"] == "snapshot":
                        break
                    assert first["code"] == "TooManySubscribers", first
            else:
                raise AssertionError("a closed subscriber's slot was never freed")
            async with subscribe(s, customerId=b) as b2:
                assert (await b2.next())["type"] == "snapshot"


# -- heartbeats and pings -------------------------------------------------------------------


async def test_heartbeats_when_idle(make_server) -> None:
    s = start(make_server, CREDITD_FEED_HEARTBEAT_S="0.2")
    async with Api(s) as api:
        currency, customer = await api.currency(), await api.customer()
        await api.grant(customer, currency, 3)
        async with subscribe(s, customerId=customer) as feed:
            snap = await snapshot_of(feed)
            assert await feed.next() == {"type": "heartbeat", "seq": 1}
            began = time.perf_counter()
            assert await feed.next() == {"type": "heartbeat", "seq": 1}
            assert time.perf_counter() - began > 0.1  # heartbeats mean silence
            await api.grant(customer, currency, 4)
            await feed.until(lambda f: f["type"] == "balance")
            assert await feed.until(lambda f: f["type"] == "heartbeat") == {
                "type": "heartbeat", "seq": 2}
            await feed.send("ping")
            assert await feed.until(lambda f: f["type"] != "heartbeat") == {
                "type": "pong", "seq": 2}
            check_stream(feed.frames, customer)
            assert snap["seq"] == 1


async def test_ping_gets_pong(server) -> None:
    async with Api(server) as api:
        currency, customer = await api.currency(), await api.customer()
        await api.grant(customer, currency, 3)
        async with subscribe(server, customerId=customer) as feed:
            await snapshot_of(feed)
            await feed.send("ping")
            assert await feed.next() == {"type": "pong", "seq": 1}
            await feed.send("hello")  # ignored: the next frame answers the next ping
            await feed.send(json.dumps({"type": "ping"}))
            assert await feed.next() == {"type": "pong", "seq": 1}
            await api.grant(customer, currency, 3)
            await feed.until(lambda f: f["type"] == "balance")
            await feed.send("ping")
            assert await feed.next() == {"type": "pong", "seq": 2}


# -- refusals -------------------------------------------------------------------------------


@pytest.mark.parametrize("params, code, starts", [
    ({"since": "abc"}, 4400, "since"),
    ({"since": "-1"}, 4400, "since"),
    ({"since": "1.5"}, 4400, "since"),
    ({"since": ""}, 4400, "since"),
    ({"since": "1" * 19}, 4400, "since"),
    ({"customerId": None}, 4400, "customerId"),
    ({"customerId": ""}, 4400, "customerId"),
    ({"currencyId": ""}, 4400, "currencyId"),
    ({"resourceId": ""}, 4400, "resourceId"),
    ({"customerId": "nobody-here"}, 4404, "customerId"),
    ({"key": ""}, 4401, None),
    ({"key": "not-a-key"}, 4401, "X-API-KEY"),
    ({"key": "", "token": "not.a.token"}, 4401, "token"),
    ({"key": "other"}, 4404, "customerId"),
    ({"headers": {"X-ENVIRONMENT-ID": "other"}}, 4403, "X-ENVIRONMENT-ID"),
    # Unicode digits are not a sequence number; a non-ASCII environment header is just a
    # mismatch (both once answered 1013: int() and hmac.compare_digest raised).
    ({"since": "\u00b2"}, 4400, "since"),
    ({"headers": {"X-ENVIRONMENT-ID": "\u00e9"}}, 4403, "X-ENVIRONMENT-ID"),
])
async def test_bad_requests_are_refused(server, params, code, starts) -> None:
    async with Api(server) as api:
        customer = await api.customer()
    kwargs: dict[str, Any] = {"customerId": customer, **params}
    if kwargs.get("key") == "other":
        kwargs["key"] = server.other_key
    error = await refused(server, code, **kwargs)
    if starts is not None:
        assert error["message"].startswith(starts), error
