"""The door (gateway/admission.py): at most `limit` HTTP requests in progress, a short
line, per-customer shares, 429 with Retry-After before any work, paced refusals.

Most tests drive `Admission` around a small ASGI app whose requests finish when the test
says so, so "in progress" is produced on cue; the last ones run the real app in-process on
a SQLite store whose commits the test holds back (tests/gateway/test_overload.py's
harness): a burst past the limit gets 429s and no 5xx, and nothing refused is applied."""

from __future__ import annotations

from typing import Any

import anyio
import httpx
import msgspec
import pytest
from anyio.lowlevel import checkpoint
from anyio import wait_all_tasks_blocked

from gateway.admission import Admission, _customer
from gateway.app import create_app
from gateway.config import Settings
from tests.gateway.test_overload import KEY, GatedStore, _setup, balance, consume, serve

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the door is built on asyncio's futures (the server runs on uvicorn)


class Held:
    """An ASGI app whose requests stay in progress until `finish(name)`; each answers 200
    with the body it received."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self._finish: dict[str, anyio.Event] = {}

    def finish(self, name: str) -> None:
        self._finish.setdefault(name, anyio.Event()).set()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        name = dict(scope["headers"]).get(b"x-name", b"").decode()
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.started.append(name)
        await self._finish.setdefault(name, anyio.Event()).wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})


def client(door: Admission) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=door), base_url="http://door")


async def settled() -> None:
    await wait_all_tasks_blocked()


async def occupy(tg: Any, http: httpx.AsyncClient, name: str = "busy") -> None:
    """A request that takes a slot and holds it until `inner.finish(name)`."""
    tg.start_soon(lambda: http.get("/x", headers={"x-name": name}))
    await settled()


async def test_past_the_limit_a_request_waits_then_gets_429_with_retry_after() -> None:
    inner = Held()
    door = Admission(inner, 2, wait_s=0.05)
    answers: dict[str, httpx.Response] = {}
    async with client(door) as http, anyio.create_task_group() as tg:
        async def call(name: str) -> None:
            answers[name] = await http.post("/api/v1/credits/consumption",
                                            headers={"x-name": name}, content=b"{}")

        for name in ("a", "b"):
            tg.start_soon(call, name)
        await settled()
        assert inner.started == ["a", "b"] and door.in_flight == 2
        await call("c")  # no slot frees within 50 ms
        r = answers["c"]
        assert r.status_code == 429
        assert r.headers["retry-after"] == "1"
        assert r.json()["code"] == "TooManyRequests"
        assert inner.started == ["a", "b"]  # the refused one never reached the app
        assert door.statistics()["refused"] == {"waited": 1, "share": 0, "line": 0}
        inner.finish("a")
        inner.finish("b")
    assert [answers[n].status_code for n in "ab"] == [200, 200]
    assert door.in_flight == 0 and door.statistics()["waiting"] == 0


async def test_on_graphql_the_refusal_is_in_stiggs_error_shape() -> None:
    inner = Held()
    door = Admission(inner, 1, wait_s=0)
    async with client(door) as http, anyio.create_task_group() as tg:
        await occupy(tg, http)
        r = await http.post("/graphql", json={"query": "{ __typename }"})
        assert r.status_code == 429 and r.headers["retry-after"] == "1"
        body = r.json()
        assert body["data"] is None
        assert [e["extensions"]["code"] for e in body["errors"]] == ["RateLimitExceeded"]
        inner.finish("busy")


async def test_the_slot_frees_with_the_last_byte_not_when_the_app_returns() -> None:
    """A keep-alive client sends its next request the moment it has the answer; work the
    app does after answering must not hold the slot that request needs."""
    after = anyio.Event()
    calls = 0

    async def app(scope: Any, receive: Any, send: Any) -> None:
        nonlocal calls
        calls += 1
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
        if calls == 1:
            await after.wait()  # after-response work, still running

    door = Admission(app, 1, wait_s=30)
    async with client(door) as http, anyio.create_task_group() as tg:
        first: list[int] = []

        async def call_first() -> None:
            first.append((await http.get("/x")).status_code)

        tg.start_soon(call_first)
        await settled()
        assert door.in_flight == 0  # answered: the slot is free though the app has not returned
        with anyio.fail_after(5):  # taken at once, not after a wait in line
            assert (await http.get("/x")).status_code == 200
        assert door.waited == 0
        after.set()
    assert door.in_flight == 0


async def test_a_freed_slot_goes_to_the_first_in_line() -> None:
    inner = Held()
    door = Admission(inner, 1, wait_s=30)
    async with client(door) as http, anyio.create_task_group() as tg:
        for name in ("a", "b", "c"):
            tg.start_soon(lambda n=name: http.get("/x", headers={"x-name": n}))
            await settled()
        assert inner.started == ["a"] and door.statistics()["waiting"] == 2
        inner.finish("a")
        await settled()
        assert inner.started == ["a", "b"]  # b came before c
        assert door.in_flight == 1  # the slot passed on, not freed
        inner.finish("b")
        inner.finish("c")
    assert inner.started == ["a", "b", "c"] and door.in_flight == 0


async def test_a_customer_over_its_share_is_refused_at_once_and_others_get_the_slots() -> None:
    inner = Held()
    door = Admission(inner, 2, wait_s=30)
    body = {"customerId": "flood", "currencyId": "t", "amount": 1}
    async with client(door) as http, anyio.create_task_group() as tg:
        for name in ("f1", "f2"):  # the flooding customer takes both free slots
            tg.start_soon(lambda n=name: http.post(
                "/api/v1/credits/consumption", json=body, headers={"x-name": n}))
        await settled()
        assert inner.started == ["f1", "f2"]
        # Its third does not wait 30 s: it holds more than its share (2 // 1) already.
        r = await http.post("/api/v1/credits/consumption", json=body, headers={"x-name": "f3"})
        assert r.status_code == 429 and door.statistics()["refused"]["share"] == 1
        # Another customer's request waits for a slot, and gets the first one freed.
        answer: list[httpx.Response] = []
        other = {**body, "customerId": "quiet"}

        async def quiet() -> None:
            answer.append(await http.post("/api/v1/credits/consumption", json=other,
                                          headers={"x-name": "q"}))

        tg.start_soon(quiet)
        await settled()
        assert door.statistics()["waiting"] == 1
        inner.finish("f1")
        await settled()
        assert inner.started == ["f1", "f2", "q"]
        inner.finish("q")
        inner.finish("f2")
    # The body the door read to find the customer reached the app unchanged.
    assert msgspec.json.decode(answer[0].content) == other


async def test_a_customer_alone_gets_every_slot() -> None:
    inner = Held()
    door = Admission(inner, 3, wait_s=30)
    async with client(door) as http, anyio.create_task_group() as tg:
        for n in range(3):
            tg.start_soon(lambda n=n: http.get("/api/v1/credits/balance?customerId=solo",
                                               headers={"x-name": str(n)}))
        await settled()
        assert door.in_flight == 3 and door.statistics()["refused"]["share"] == 0
        for n in range(3):
            inner.finish(str(n))


async def test_health_readiness_and_metrics_pass_when_every_slot_is_taken() -> None:
    inner = Held()
    door = Admission(inner, 1, wait_s=0)
    async with client(door) as http, anyio.create_task_group() as tg:
        await occupy(tg, http)
        for path in ("/health", "/ready", "/metrics"):
            inner.finish(path)
            r = await http.get(path, headers={"x-name": path})
            assert r.status_code == 200, path
        assert (await http.get("/y", headers={"x-name": "y"})).status_code == 429
        inner.finish("busy")


async def test_refusals_past_the_rate_are_held_until_their_turn() -> None:
    inner = Held()
    door = Admission(inner, 1, wait_s=0, refusals_per_s=10)
    async with client(door) as http, anyio.create_task_group() as tg:
        await occupy(tg, http)
        assert (await http.get("/x", headers={"x-name": "r1"})).status_code == 429  # at once
        answers: list[int] = []

        async def refused() -> None:
            answers.append((await http.get("/x", headers={"x-name": "r2"})).status_code)

        tg.start_soon(refused)
        await settled()
        assert door.statistics()["held"] == 1 and answers == []  # waits its turn (0.1 s)
        with anyio.fail_after(5):
            while not answers:
                await checkpoint()
        assert answers == [429] and door.statistics()["held"] == 0
        inner.finish("busy")


async def test_a_waiter_cancelled_leaves_the_line_and_no_slot_is_lost() -> None:
    inner = Held()
    door = Admission(inner, 1, wait_s=30)
    async with client(door) as http, anyio.create_task_group() as tg:
        tg.start_soon(lambda: http.get("/x", headers={"x-name": "a"}))
        await settled()
        scope = anyio.CancelScope()

        async def waits() -> None:
            with scope:
                await http.get("/x", headers={"x-name": "gone"})

        tg.start_soon(waits)
        await settled()
        assert door.statistics()["waiting"] == 1
        scope.cancel()
        await settled()
        assert door.statistics()["waiting"] == 0
        inner.finish("a")
    assert door.in_flight == 0
    async with client(door) as http:
        inner.finish("after")
        assert (await http.get("/x", headers={"x-name": "after"})).status_code == 200


async def test_the_customer_is_read_from_the_path_the_query_or_a_json_body() -> None:
    async def named(path: str, query: bytes = b"", method: str = "GET",
                    body: bytes | None = None) -> str | None:
        headers = [] if body is None else [(b"content-length", str(len(body)).encode())]
        messages = [{"type": "http.request", "body": body or b"", "more_body": False}]

        async def receive() -> dict[str, Any]:
            return messages.pop(0)

        customer, replay = await _customer(
            {"path": path, "query_string": query, "method": method, "headers": headers},
            receive)
        if body is not None and customer is not None:
            assert (await replay())["body"] == body  # handed on unchanged
        return customer

    assert await named("/api/v1/customers/a%20b/entitlements") == "a b"
    assert await named("/api/v1/credits/balance", b"currencyId=t&customerId=c%2B1") == "c+1"
    assert await named("/api/v1/credits/consumption", method="POST",
                       body=b'{"amount":1,"customerId":"c-9"}') == "c-9"
    assert await named("/api/v1/credits/consumption", method="POST", body=b"{not json") is None
    assert await named("/api/v1/credits/consumption", method="POST",
                       body=b'{"customerId":7}') is None  # the app names the field
    assert await named("/graphql", method="POST", body=b'{"query":"{ x }"}') is None
    assert await named("/api/v1/features") is None


async def test_a_burst_past_the_limit_gets_429s_no_5xx_and_nothing_refused_is_applied(
        tmp_path) -> None:
    store = GatedStore(tmp_path / "c.db")
    app = create_app(Settings(api_keys=[KEY], in_flight_max=4, in_flight_wait_ms=1), store=store)
    async with serve(app) as http:
        await _setup(http)
        store.gate = anyio.Event()  # the next commits are held: four requests stay in progress
        store.waiting = anyio.Event()
        statuses: list[int] = []
        refusals: list[httpx.Response] = []

        async def post(key: str) -> None:
            r = await http.post("/api/v1/credits/consumption", json=consume(key),
                                headers={"X-API-KEY": KEY})
            statuses.append(r.status_code)
            if r.status_code == 429:
                refusals.append(r)

        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                for n in range(4):
                    tg.start_soon(post, f"held-{n}")
                await store.waiting.wait()
                await settled()
                assert app.state.admission.in_flight == 4
                async with anyio.create_task_group() as burst:
                    for n in range(40):
                        burst.start_soon(post, f"burst-{n}")
                # The door still answers the operator while full.
                health = await http.get("/health", params={"detail": "true"},
                                        headers={"X-API-KEY": KEY})
                assert health.json()["admission"]["in_flight"] == 4
                store.gate.set()
        assert sorted(statuses) == [200] * 4 + [429] * 40
        assert all(r.headers["retry-after"] == "1" and r.json()["code"] == "TooManyRequests"
                   for r in refusals)
        assert await balance(http) == 96  # the four taken, none of the forty refused
        metrics = (await http.get("/metrics", headers={"X-API-KEY": KEY})).text
        assert "creditd_http_in_flight_requests_max 4.0" in metrics
        # One customer held every slot: the burst, all its own, was over its share.
        assert 'creditd_http_refused_requests_total{reason="share"} 40.0' in metrics
