"""Fixtures of the cluster tests: a fresh PostgreSQL database per test (skipped without
PostgreSQL, a failure under CI=true, as tests/gateway/conftest.py does) and the `Cluster`
of nodes on it, every process killed and the database dropped at teardown."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.gateway.conftest import fresh_pg_url
from tests.webhooks.receiver import Receiver

from .harness import Cluster, SlowReceiver


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # asyncpg, httpx's async client and websockets run on asyncio


@pytest.fixture
def pg_url() -> Iterator[str]:
    url, drop = fresh_pg_url()
    try:
        yield url
    finally:
        drop()


@pytest.fixture
def cluster(pg_url: str) -> Iterator[Cluster]:
    """No nodes yet: a test starts them (`await cluster.start(3)`)."""
    c = Cluster(pg_url)
    try:
        yield c
    finally:
        c.discard()  # before the database is dropped (pg_url's teardown runs after)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A real local webhook receiver (tests/webhooks/receiver.py), answering 200. A sync
    fixture: it runs its own event loop in a thread, started and closed outside the
    test's."""
    with Receiver() as r:
        yield r


@pytest.fixture
def slow_receiver() -> Iterator[SlowReceiver]:
    """A receiver that answers 0.3 s after each request: deliveries stay in flight."""
    with SlowReceiver(0.3) as r:
        yield r
