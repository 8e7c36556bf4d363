"""Fixtures for the webhook tests.

- `store_url`: a fresh SQLite file and a fresh PostgreSQL database (skipped without
  PostgreSQL, a failure under CI=true), for the in-process tests of the relay and
  dispatcher (tests/webhooks/harness.py).
- `webhook_server`: a real creditd process per module and store, with
  CREDITD_WEBHOOKS_ALLOW_PRIVATE=true and a retry schedule of milliseconds, and a real local
  receiver (tests/webhooks/receiver.py) per test.

The server machinery is the gateway tests' (tests/webhooks/servers.py).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # harness.py, receiver.py


from servers import Server, fresh_pg_url

# A schedule short enough for tests that wait for real retries; the production schedule is
# tested exactly with a manual clock (test_delivery.py).
FAST_RETRIES = {
    "CREDITD_WEBHOOKS_ALLOW_PRIVATE": "true",
    "CREDITD_WEBHOOKS_RETRY_BASE_MS": "20",
    "CREDITD_WEBHOOKS_RETRY_CAP_MS": "200",
    "CREDITD_WEBHOOKS_ATTEMPTS_MAX": "60",
    "CREDITD_WEBHOOKS_TIMEOUT_MS": "2000",
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # asyncpg is asyncio-only


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'creditd.db'}"
        return
    url, drop = fresh_pg_url()
    try:
        yield url
    finally:
        drop()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def webhook_server(request: pytest.FixtureRequest,
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    drop = None
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('creditd') / 'creditd.db'}"
    else:
        url, drop = fresh_pg_url()
    server = Server(url, api_keys=f"{Server.key},other:{Server.other_key}",
                    env=FAST_RETRIES).start()
    try:
        yield server
    finally:
        if server.proc is not None:
            server.stop()
        if drop is not None:
            drop()
