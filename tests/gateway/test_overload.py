"""Overload and store outage as HTTP answers: 429 and 503 with Retry-After, nothing
applied. The app runs in-process, in the test's own event loop (httpx's ASGI transport and
the ASGI lifespan protocol driven here; Litestar's test client would run it on a portal
thread, out of reach of the test's events), on a real SQLite store whose commits the test
can hold back or fail, so the conditions are produced on cue."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
import httpx
from contextlib import asynccontextmanager
from collections.abc import AsyncIterator

from engine.runtime.errors import StoreUnavailable
from gateway.app import create_app
from gateway.config import Settings
from persistence.sqlite import SQLiteStore

pytestmark = pytest.mark.anyio
KEY = "k-overload"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the server (uvicorn) and asyncpg are asyncio-only


class GatedStore(SQLiteStore):
    """Commits wait while `gate` is closed, and fail while `failing` is set."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.gate = anyio.Event()
        self.gate.set()
        self.waiting = anyio.Event()
        self.failing = False

    async def commit(self, customer_id: str, state: Any, fx: Any, new_keys: Any = ()) -> None:
        if self.failing:
            raise StoreUnavailable("simulated outage", retry_after_s=2.0)
        if not self.gate.is_set():
            self.waiting.set()
            await self.gate.wait()
        await super().commit(customer_id, state, fx, new_keys)


@asynccontextmanager
async def serve(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    """Run `app`'s lifespan in this event loop and yield a client that calls it."""
    to_app_send, to_app_recv = anyio.create_memory_object_stream[dict](4)
    from_app_send, from_app_recv = anyio.create_memory_object_stream[dict](4)
    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    async with anyio.create_task_group() as tg:
        tg.start_soon(app, scope, to_app_recv.receive, from_app_send.send)
        await to_app_send.send({"type": "lifespan.startup"})
        message = await from_app_recv.receive()
        assert message["type"] == "lifespan.startup.complete", message
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://creditd") as http:
            yield http
        await to_app_send.send({"type": "lifespan.shutdown"})
        message = await from_app_recv.receive()
        assert message["type"] == "lifespan.shutdown.complete", message


async def _setup(http: httpx.AsyncClient) -> None:
    for path, body in (("/api/v1/credits/custom-currencies", {"id": "t", "displayName": "T"}),
                       ("/api/v1/customers", {"id": "c"}),
                       ("/api/v1/credits/grants", {"customerId": "c", "currencyId": "t",
                                                   "amount": 100, "displayName": "g",
                                                   "grantType": "PAID"})):
        r = await http.post(path, json=body, headers={"X-API-KEY": KEY})
        assert r.status_code == 200, r.text


def consume(key: str) -> dict[str, Any]:
    return {"customerId": "c", "currencyId": "t", "amount": 1, "idempotencyKey": key}


async def balance(http: httpx.AsyncClient) -> float:
    r = await http.get("/api/v1/credits/balance", params={"customerId": "c"},
                       headers={"X-API-KEY": KEY})
    return r.json()["data"]["balances"][0]["currentBalance"]


async def test_full_mailbox_is_429_with_retry_after(tmp_path) -> None:
    store = GatedStore(tmp_path / "c.db")
    app = create_app(Settings(api_keys=[KEY]), store=store,
                     runtime_options={"mailbox_max": 1})
    async with serve(app) as http:
        await _setup(http)
        store.gate = anyio.Event()  # hold the next commit
        store.waiting = anyio.Event()
        answers: dict[str, int] = {}
        rejected: list[Any] = []
        refused = anyio.Event()

        async def post(key: str) -> None:
            r = await http.post("/api/v1/credits/consumption", json=consume(key),
                                headers={"X-API-KEY": KEY})
            answers[key] = r.status_code
            if r.status_code == 429:
                rejected.append(r)
                refused.set()

        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                tg.start_soon(post, "in-flight")
                await store.waiting.wait()  # its batch is being committed, and held
                # Two more for the same customer: the mailbox (1) holds one, the other is
                # refused at once; which one is up to the scheduler.
                tg.start_soon(post, "second")
                tg.start_soon(post, "third")
                await refused.wait()  # the refusal does not wait for the gate
                store.gate.set()
        assert answers["in-flight"] == 200
        assert sorted([answers["second"], answers["third"]]) == [200, 429]
        r = rejected[0]
        assert r.json()["code"] == "TooManyRequests"
        assert int(r.headers["retry-after"]) >= 1
        assert await balance(http) == 98  # the refused one was not applied


async def test_store_outage_is_503_and_nothing_is_applied(tmp_path) -> None:
    store = GatedStore(tmp_path / "c.db")
    async with serve(create_app(Settings(api_keys=[KEY]), store=store)) as http:
        await _setup(http)
        store.failing = True
        r = await http.post("/api/v1/credits/consumption", json=consume("k1"),
                            headers={"X-API-KEY": KEY})
        assert r.status_code == 503, r.text
        assert r.json()["code"] == "ServiceUnavailable"
        assert r.headers["retry-after"] == "2"
        store.failing = False
        assert await balance(http) == 100
        # The client's retry with the same key is applied, once.
        for _ in range(2):
            r = await http.post("/api/v1/credits/consumption", json=consume("k1"),
                                headers={"X-API-KEY": KEY})
            assert r.status_code == 200, r.text
        assert await balance(http) == 99


async def test_unexpected_errors_are_500_json_without_details(tmp_path, monkeypatch) -> None:
    store = GatedStore(tmp_path / "c.db")
    async with serve(create_app(Settings(api_keys=[KEY]), store=store)) as http:
        await _setup(http)

        async def broken(*args: Any, **kwargs: Any) -> None:
            raise RuntimeError("secret internal detail")

        monkeypatch.setattr(store, "commit", broken)
        r = await http.post("/api/v1/credits/consumption", json=consume("k"),
                            headers={"X-API-KEY": KEY})
        assert r.status_code == 500
        assert r.json() == {"statusCode": 500, "code": "InternalServerError",
                            "message": "internal error"}
        # The engine lives on: the customer's state was reloaded from the store, and the
        # retry with the same key is applied once the bug is gone.
        monkeypatch.undo()
        r = await http.post("/api/v1/credits/consumption", json=consume("k"),
                            headers={"X-API-KEY": KEY})
        assert r.status_code == 200, r.text
        assert await balance(http) == 99
