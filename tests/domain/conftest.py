"""Fixtures for the domain layer's tests: its functions called directly, as the wire
modules call them, on a real SQLite store, runtime and document catalog (no HTTP).

No `__init__.py` here, like tests/persistence: `tests/` is not a package."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from engine.domain.context import Domain, stamp
from engine.domain.errors import DomainError
from engine.domain.stored import Currency, Customer
from engine.runtime import ManualClock, Runtime
from persistence import open_store
from persistence.documents import Catalog


class World:
    """A domain on a fresh database, its clock, and document setup helpers."""

    def __init__(self, domain: Domain, catalog: Catalog, clock: ManualClock) -> None:
        self.domain = domain
        self.catalog = catalog
        self.clock = clock

    async def document(self, table: str, env: str, doc: Any) -> None:
        """Insert `doc`, stamped now: a typed document, or a subscription's stored dict (in
        the shape some version wrote)."""
        if isinstance(doc, dict):
            now = self.clock.now_ms()
            doc = {**doc, "_createdAt": now, "_updatedAt": now}
        else:
            doc = stamp(self.catalog, doc, created=True)
        assert await self.catalog.insert(table, env, doc)

    async def customer(self, env: str, customer_id: str, *, archived: bool = False) -> None:
        await self.document("customer_profiles", env, Customer(
            id=customer_id, email=None, name=None,
            archived_at=self.clock.now_ms() if archived else None))

    async def currency(self, env: str, currency_id: str) -> None:
        await self.document("currencies", env, Currency(id=currency_id,
                                                        display_name=currency_id.title()))


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    clock = ManualClock()
    async with open_store(f"sqlite:///{tmp_path / 'domain.db'}") as store, \
            Runtime(store, clock) as runtime:
        catalog = Catalog(store, clock=clock)
        yield World(Domain(store=store, runtime=runtime, documents=catalog), catalog, clock)


@pytest.fixture
def refused() -> Any:
    """`await refused(call)`: the DomainError the domain call raises (it must raise one)."""
    async def refused(call: Any) -> DomainError:
        with pytest.raises(DomainError) as caught:
            await call
        return caught.value

    return refused
