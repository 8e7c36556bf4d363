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
    ({"CREDITD_MEMORY_MB": "lots"}, "CREDITD_MEMORY_MB: 'lots' is not an integer"),
    ({"CREDITD_MEMORY_MB": "0"}, "CREDITD_MEMORY_MB: must be positive"),
    ({"CREDITD_RESIDENT_MAX": "-5"}, "CREDITD_RESIDENT_MAX: must be positive"),
    ({"CREDITD_DB_TIMEOUT_S": "soon"}, "CREDITD_DB_TIMEOUT_S: 'soon' is not a number"),
    ({"CREDITD_FLUSH_ROWS_MAX": "200000"}, "CREDITD_FLUSH_ROWS_MAX: must not exceed"),
    ({"CREDITD_CLUSTER": "maybe"}, "CREDITD_CLUSTER: 'maybe' is not 'auto' or 'off'"),
    ({"CREDITD_LEASE_TTL_S": "long"}, "CREDITD_LEASE_TTL_S: 'long' is not a number"),
    ({"CREDITD_LEASE_RENEW_S": "2"}, "CREDITD_LEASE_RENEW_S: must be positive and under half"),
    ({"CREDITD_CLUSTER_PORT": "99999"}, "CREDITD_CLUSTER_PORT: not a port number"),
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


def test_every_limit_is_a_setting_that_reaches_its_owner(monkeypatch) -> None:
    """Each CREDITD_<LIMIT> lands in the settings, and from there in the runtime's and
    the store's options (what `creditd serve` builds them from)."""
    from gateway.app import _runtime_limits, _store_limits
    from gateway.config import LIMITS, Settings

    for i, (name, kind) in enumerate(LIMITS.items()):
        monkeypatch.setenv(f"CREDITD_{name.upper()}", str(kind(100_000 + i)))
    settings = Settings.from_env()
    assert all(getattr(settings, name) == kind(100_000 + i)
               for i, (name, kind) in enumerate(LIMITS.items()))
    runtime = _runtime_limits(settings)
    assert runtime["memory_max_bytes"] == settings.memory_mb * 1024 * 1024
    assert (runtime["resident_max"], runtime["mailbox_max"], runtime["pending_max"],
            runtime["batch_max"], runtime["workers_count"]) == (
        settings.resident_max, settings.mailbox_max, settings.pending_max, settings.batch_max,
        settings.workers)
    assert runtime["passivate_after_ms"] == int(settings.passivate_after_s * 1000)
    sqlite = _store_limits(settings, "sqlite:///x.db")
    assert (sqlite["flush_rows_max"], sqlite["backlog_rows_max"], sqlite["cache_mb"]) == (
        settings.flush_rows_max, settings.backlog_rows_max, settings.sqlite_cache_mb)
    pg = _store_limits(settings, "postgresql://db")
    assert (pg["pool_max"], pg["command_timeout_s"]) == (settings.pg_pool_max,
                                                          settings.db_timeout_s)
    assert Settings.from_env(memory_mb=64).memory_mb == 64  # --memory-mb wins
