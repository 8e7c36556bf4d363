#!/usr/bin/env python3
"""Write gateway/graphql/served.graphql: the part of Stigg's schema (stigg.graphql) that
the resolved root fields reach, with ErrorCode. Run it after adding a root field or
refreshing stigg.graphql; the schema test fails until the file is current.

Usage: .venv/bin/python scripts/served_schema.py
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.graphql.resolvers import ROOTS  # noqa: E402 (after the sys.path line)
from gateway.graphql.schema import SERVED_PATH, served_sdl  # noqa: E402

SERVED_PATH.write_text(served_sdl(ROOTS))
print(f"wrote {SERVED_PATH}")
