"""Shared pytest configuration.

anyio's pytest plugin is registered automatically when anyio is installed: a test marked
`@pytest.mark.anyio` runs once per value of the `anyio_backend` fixture. Parametrizing that
fixture here runs every such test on both asyncio and trio, the two event loops the runtime
supports. A test that only makes sense on one backend overrides it with
`@pytest.mark.parametrize("anyio_backend", ["trio"])`.
"""

from __future__ import annotations

import pytest


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return request.param
