"""Recurring credits stay exactly once when the subscription's own write fails after its
renewal grant committed (a crash between the two): the next catch-up makes the same grant
again, the engine answers it as a replay, and the customer holds one renewal, not two.

In-process app (see test_overload.py for the harness), on a SQLite store that fails the
subscription's write on cue, with a manual clock the test moves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from engine.runtime.clock import ManualClock
from engine.runtime.errors import StoreUnavailable
from gateway.app import create_app
from gateway.config import Settings
from persistence.sqlite import SQLiteStore
from tests.gateway.test_overload import serve

pytestmark = pytest.mark.anyio
KEY = "k-recovery"
H = {"X-API-KEY": KEY}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the server (uvicorn) and asyncpg are asyncio-only


def _subscription_write(sql: str) -> bool:
    return sql.lstrip().startswith("UPDATE subscriptions")


class FlakyStore(SQLiteStore):
    """Fails every write of subscription documents (one at a time or batched) while
    `fail_writes` is set."""

    fail_writes = False

    async def execute(self, sql: str, *args: Any) -> Any:
        if self.fail_writes and _subscription_write(sql):
            raise StoreUnavailable("simulated crash before the subscription was saved",
                                   retry_after_s=1.0)
        return await super().execute(sql, *args)

    async def transact(self, steps: Any) -> None:
        if self.fail_writes and any(_subscription_write(sql) for sql, _ in steps):
            raise StoreUnavailable("simulated crash before the subscriptions were saved",
                                   retry_after_s=1.0)
        await super().transact(steps)


async def _ok(r: httpx.Response) -> Any:
    assert r.status_code in (200, 201), r.text
    return r.json()["data"]


async def _catalog(http: httpx.AsyncClient, *, credits: int, multiple: bool = False) -> None:
    """A plan `pro` of product `ai` granting `credits` tokens a month, and customer `c1`."""
    for path, body in (
            ("/api/v1/credits/custom-currencies", {"id": "tokens", "displayName": "T"}),
            ("/api/v1/products", {"id": "ai", "displayName": "AI",
                                  "multipleSubscriptions": multiple}),
            ("/api/v1/plans", {"id": "pro", "displayName": "Pro", "productId": "ai"}),
            ("/api/v1/plans/pro/entitlements", {"entitlements": [
                {"type": "CREDIT", "id": "tokens", "amount": credits, "cadence": "MONTH"}]}),
            ("/api/v1/plans/pro/publish", {"migrationType": "NEW_CUSTOMERS"}),
            ("/api/v1/customers", {"id": "c1"})):
        await _ok(await http.post(path, json=body, headers=H))


async def test_a_renewal_is_granted_once_when_the_save_after_it_fails(tmp_path: Path) -> None:
    store = FlakyStore(tmp_path / "creditd.db")
    clock = ManualClock()
    app = create_app(Settings(api_keys=[KEY]), store=store, runtime_options={"clock": clock})
    async with serve(app) as http:
        await _catalog(http, credits=500)
        made = await _ok(await http.post("/api/v1/subscriptions", headers=H,
                                          json={"customerId": "c1", "planId": "pro"}))
        sub = made["subscription"]
        end = sub["currentBillingPeriodEnd"]
        store.fail_writes = True
        # The renewal falls due: its grant commits, then the subscription's write fails.
        r = await http.put("/api/v1/test-clock", json={"now": end}, headers=H)
        assert r.status_code == 503, r.text
        store.fail_writes = False
        # The next read catches the subscription up again: the same grant, replayed.
        again = await _ok(await http.get(f"/api/v1/subscriptions/{sub['id']}", headers=H))
        assert again["currentBillingPeriodStart"] == end
        grants = await _ok(await http.get("/api/v1/credits/grants", headers=H,
                                          params={"customerId": "c1"}))
        recurring = [g for g in grants if g["grantType"] == "RECURRING"]
        assert [g["amount"] for g in recurring] == [500, 500]
        assert sorted(g["status"] for g in recurring) == ["ACTIVE", "EXPIRED"]
        # And once more, nothing new.
        await _ok(await http.get(f"/api/v1/subscriptions/{sub['id']}", headers=H))
        grants = await _ok(await http.get("/api/v1/credits/grants", headers=H,
                                          params={"customerId": "c1"}))
        assert len([g for g in grants if g["grantType"] == "RECURRING"]) == 2


class PoisonStore(SQLiteStore):
    """Fails every write of one subscription's document (`poison`: its id), alone or in
    a batch."""

    poison: str | None = None

    async def execute(self, sql: str, *args: Any) -> Any:
        if self.poison is not None and _subscription_write(sql) and self.poison in args:
            raise StoreUnavailable("this subscription cannot be written", retry_after_s=1.0)
        return await super().execute(sql, *args)

    async def transact(self, steps: Any) -> None:
        if self.poison is not None and any(
                _subscription_write(sql) and any(self.poison in row for row in rows)
                for sql, rows in steps):
            raise StoreUnavailable("a batch with this subscription cannot be written",
                                   retry_after_s=1.0)
        await super().transact(steps)


async def test_one_failing_subscription_does_not_hold_back_the_others(tmp_path: Path) -> None:
    store = PoisonStore(tmp_path / "creditd.db")
    clock = ManualClock()
    app = create_app(Settings(api_keys=[KEY]), store=store, runtime_options={"clock": clock})
    async with serve(app) as http:
        await _catalog(http, credits=7, multiple=True)
        # The poisoned one falls due first (ORDER BY due_at), the healthy one right after.
        bad = (await _ok(await http.post("/api/v1/subscriptions", headers=H, json={
            "customerId": "c1", "planId": "pro", "id": "bad"})))["subscription"]
        clock.advance(1_000)
        good = (await _ok(await http.post("/api/v1/subscriptions", headers=H, json={
            "customerId": "c1", "planId": "pro", "id": "good"})))["subscription"]
        store.poison = "bad"
        r = await http.put("/api/v1/test-clock", headers=H,
                           json={"now": good["currentBillingPeriodEnd"]})
        assert r.status_code == 503, r.text  # the failure is reported ...
        # ... after the healthy subscription was renewed all the same.
        grants = await _ok(await http.get("/api/v1/credits/grants", headers=H,
                                          params={"customerId": "c1"}))
        assert len([g for g in grants if g["grantType"] == "RECURRING"]) == 4
        # The healthy one is stored renewed (not due again); the poisoned one is still due.
        due = dict(await store.fetch("SELECT id, due_at FROM subscriptions"))
        now_ms = clock.now_ms()
        assert due["good"] > now_ms and due["bad"] <= now_ms, due
        assert bad["id"] == "bad"
