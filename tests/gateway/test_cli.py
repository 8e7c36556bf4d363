"""The `creditd` command: bad settings and unusable databases are one-line errors."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def creditd(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CREDITD_")}
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], cwd=ROOT,
                          env={**clean, **env}, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("env, message", [
    ({"CREDITD_PORT": "eighty"}, "CREDITD_PORT: 'eighty' is not a port number"),
    ({"CREDITD_PORT": "70000"}, "CREDITD_PORT: 70000 is not between 0 and 65535"),
    ({"CREDITD_DURABILITY": "maybe"}, "CREDITD_DURABILITY: 'maybe' is not 'sync' or 'async'"),
    ({"CREDITD_API_KEYS": "env/x:key"}, "CREDITD_API_KEYS: 'env/x:key'"),
])
def test_bad_settings_exit_2_naming_the_variable(env, message) -> None:
    r = creditd("serve", **env)
    assert r.returncode == 2
    assert message in r.stderr and "Traceback" not in r.stderr


def test_unusable_database_is_one_line(tmp_path) -> None:
    for url, reason in (("mysql://db", "unsupported database URL"),
                        ("postgresql://postgres@127.0.0.1:1/x", "cannot open the database")):
        r = creditd("serve", "--database-url", url)
        assert r.returncode == 1 and reason in r.stderr, r.stderr
        assert "Traceback" not in r.stderr


def test_migrate_then_a_newer_schema_is_refused(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    r = creditd("migrate", "--database-url", url)
    assert r.returncode == 0 and "database schema is at version" in r.stdout
    db = sqlite3.connect(tmp_path / "c.db")
    db.execute("INSERT INTO schema_version (version) VALUES (999)")
    db.commit()
    db.close()
    r = creditd("migrate", "--database-url", url)
    assert r.returncode == 1
    assert "version 999, newer than this creditd understands" in r.stderr


def test_version() -> None:
    r = creditd("--version")
    assert r.returncode == 0 and r.stdout.strip()
