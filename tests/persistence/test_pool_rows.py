"""A pool's row is written only when its settings change (persistence/codec.py, `make_unit`
and `StoredCustomer.pool_rows`), on SQLite and PostgreSQL.

Every consumption names its pool in the batch's effects (its balance moved: the live feed
shows it), but the pool's stored columns are its settings (hard limit, low-balance line,
usage alert, auto-recharge), which a consumption does not change. What must hold: the row
goes to the writer when a setting changed and not otherwise, and a change whose write
failed is written by the next attempt: the copy of what was handed to the writer dies
with the state a failed commit drops, so no row is skipped that the database may not
hold."""

from __future__ import annotations

from typing import Any

import pytest

from engine.core.commands import (
    BalancesReply,
    ConfigurePool,
    Consume,
    ConsumeReply,
    CreateGrant,
    GetBalances,
)
from engine.core.model import GrantType
from engine.runtime import StoreUnavailable
from persistence import codec, durable

pytestmark = pytest.mark.anyio

CUR = "credits"


def _grant(grant_id: str, amount: int) -> CreateGrant:
    return CreateGrant(grant_id=grant_id, amount=amount, currency_id=CUR,
                       grant_type=GrantType.PAID, display_name=grant_id)


@pytest.fixture
def pool_rows(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many pool rows each unit handed to the writer carried, in order."""
    seen: list[int] = []

    def recording(*args: Any) -> codec.Unit:
        unit = codec.make_unit(*args)
        seen.append(len(unit.pools))
        return unit

    monkeypatch.setattr(durable, "make_unit", recording)
    return seen


async def _hard_limit(rt: Any, customer: str) -> bool:
    reply = await rt.submit(customer, GetBalances(currency_id=CUR))
    assert isinstance(reply, BalancesReply)
    (balance,) = reply.balances
    return balance.hard_limit


async def test_a_pools_row_is_written_when_its_settings_change_only(
        store_url: str, engine: Any, pool_rows: list[int]) -> None:
    async with engine(store_url) as (_store, rt):
        await rt.submit("c1", _grant("g1", 1_000_000))
        assert pool_rows == [1]  # a new pool: its row
        for i in range(5):
            reply = await rt.submit("c1", Consume(currency_id=CUR, amount=10,
                                                  idempotency_key=f"use-{i}"))
            assert isinstance(reply, ConsumeReply)
        assert pool_rows == [1, 0, 0, 0, 0, 0]  # the balance moved, the settings did not
        await rt.submit("c1", ConfigurePool(currency_id=CUR, hard_limit=False))
        await rt.submit("c1", Consume(currency_id=CUR, amount=10, idempotency_key="use-5"))
        assert pool_rows[-2:] == [1, 0]
    # What was written is what a new process loads.
    async with engine(store_url) as (_store, rt):
        assert await _hard_limit(rt, "c1") is False
        await rt.submit("c1", Consume(currency_id=CUR, amount=10, idempotency_key="use-6"))
        assert pool_rows[-1] == 1  # the first write of a loaded state carries its row


async def test_a_setting_whose_write_failed_is_written_by_the_next_attempt(
        store_url: str, engine: Any, pool_rows: list[int]) -> None:
    async with engine(store_url) as (store, rt):
        await rt.submit("c1", _grant("g1", 1_000_000))
        await rt.submit("c1", Consume(currency_id=CUR, amount=10, idempotency_key="use-0"))
        flush = store._flush

        async def failing(*args: Any) -> Any:
            raise StoreUnavailable("simulated: the database went away", retry_after_s=0.1)

        store._flush = failing
        with pytest.raises(StoreUnavailable):
            await rt.submit("c1", ConfigurePool(currency_id=CUR, hard_limit=False))
        store._flush = flush
        # The client tries again: the same change, on the state loaded from what is
        # durable, must reach the database (a copy that outlived the failed write would
        # say this row was written already).
        await rt.submit("c1", ConfigurePool(currency_id=CUR, hard_limit=False))
        assert pool_rows[-2:] == [1, 1]
    async with engine(store_url) as (_store, rt):
        assert await _hard_limit(rt, "c1") is False
