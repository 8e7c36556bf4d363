"""The gateway tests' server machinery (tests/gateway/conftest.py: `Server`,
`fresh_pg_url`), loaded by path because neither test directory is a package."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_NAME = "creditd_gateway_conftest"
if _NAME not in sys.modules:
    _spec = importlib.util.spec_from_file_location(
        _NAME, Path(__file__).resolve().parents[1] / "gateway" / "conftest.py")
    assert _spec is not None and _spec.loader is not None
    _module = importlib.util.module_from_spec(_spec)
    sys.modules[_NAME] = _module
    _spec.loader.exec_module(_module)

Server = sys.modules[_NAME].Server
fresh_pg_url = sys.modules[_NAME].fresh_pg_url

__all__ = ["Server", "fresh_pg_url"]
