"""`creditd export`, `creditd backup` and `creditd restore` as an operator runs them: the
cursor on stdout, progress on stderr, one-line refusals with their exit codes."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from engine.core.amounts import SCALE
from engine.core.commands import Consume, CreateGrant
from engine.core.model import GrantType
from engine.runtime import ManualClock, Runtime
from persistence import open_store

ROOT = Path(__file__).resolve().parents[2]


def creditd(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CREDITD_")}
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], cwd=ROOT,
                          env={**clean, **env}, capture_output=True, text=True, timeout=120,
                          check=False)


def traffic(url: str, customers: list[str], consumptions: int) -> None:
    async def run() -> None:
        async with open_store(url) as store, Runtime(store, ManualClock()) as rt:
            for c in customers:
                await rt.submit(c, CreateGrant(grant_id="g", currency_id="tok",
                                               amount=100 * SCALE, grant_type=GrantType.PAID,
                                               display_name="g"))
                for _ in range(consumptions):
                    await rt.submit(c, Consume(currency_id="tok", amount=SCALE // 4))

    anyio.run(run)


def cursor_of(stdout: str) -> str:
    (line,) = [x for x in stdout.splitlines() if x.startswith("cursor: ")]
    return line.removeprefix("cursor: ")


def rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_export_prints_its_cursor_and_the_next_run_exports_only_new_rows(
        tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    traffic(url, ["default/a", "default/b"], 3)
    first = creditd("export", "--database-url", url, "--out", str(tmp_path / "1"))
    assert first.returncode == 0, first.stderr
    assert "export: ledger: 8 rows" in first.stderr  # progress goes to stderr
    assert f"ledger: 8 rows -> {tmp_path / '1' / 'ledger.csv'}" in first.stdout
    assert len(rows(tmp_path / "1" / "ledger.csv")) == 8
    assert {r["amount"] for r in rows(tmp_path / "1" / "consumptions.csv")} == {"-0.25000"}

    traffic(url, ["default/c"], 1)
    second = creditd("export", "--database-url", url, "--out", str(tmp_path / "2"),
                     "--since", cursor_of(first.stdout))
    assert second.returncode == 0, second.stderr
    assert [(r["customer_id"], r["seq"]) for r in rows(tmp_path / "2" / "ledger.csv")] == [
        ("c", "1"), ("c", "2")]
    # The cursor can also come from the previous run's manifest (cursors grow with the
    # number of customers).
    third = creditd("export", "--database-url", url, "--out", str(tmp_path / "3"),
                    "--since", f"@{tmp_path / '2' / 'export.json'}", "--format", "parquet")
    assert third.returncode == 0, third.stderr
    assert "ledger: 0 rows" in third.stdout
    assert (tmp_path / "3" / "ledger.parquet").is_file()


@pytest.mark.parametrize("args, message", [
    (["--tables", "ledger,invoices"], "--tables: 'invoices' is not one of"),
    (["--since", "cx1.!!!"], "--since is damaged"),
    (["--format", "parquet"], "pip install 'creditd[parquet]'"),
])
def test_export_refusals_are_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    traffic(url, ["default/a"], 0)
    # A pyarrow that cannot be imported, as on an install without the parquet extra.
    (tmp_path / "shadow" / "pyarrow").mkdir(parents=True)
    (tmp_path / "shadow" / "pyarrow" / "__init__.py").write_text(
        "raise ImportError('no pyarrow here')\n")
    r = creditd("export", "--database-url", url, "--out", str(tmp_path / "o"), *args,
                PYTHONPATH=str(tmp_path / "shadow"))
    assert r.returncode == 2, r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "o" / "ledger.csv").exists()


def test_export_of_a_missing_database_is_one_line(tmp_path: Path) -> None:
    r = creditd("export", "--database-url", f"sqlite:///{tmp_path / 'none.db'}", "--out",
                str(tmp_path / "o"))
    assert r.returncode == 2 and "no database at" in r.stderr, r.stderr


def test_backup_and_restore_commands(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    traffic(url, ["default/a"], 2)
    r = creditd("backup", str(tmp_path / "b.db"), "--database-url", url)
    assert r.returncode == 0 and "backed up" in r.stdout, r.stderr
    r = creditd("restore", str(tmp_path / "b.db"), "--database-url", url)
    assert r.returncode == 1 and "exists: use --force" in r.stderr, r.stderr
    r = creditd("restore", str(tmp_path / "b.db"), "--database-url", url, "--force")
    assert r.returncode == 0 and "restored" in r.stdout, r.stderr
    r = creditd("restore", str(tmp_path / "b.db"),
                "--database-url", f"sqlite:///{tmp_path / 'fresh.db'}")
    assert r.returncode == 0, r.stderr
    export = creditd("export", "--database-url", f"sqlite:///{tmp_path / 'fresh.db'}",
                     "--out", str(tmp_path / "e"), "--tables", "ledger")
    assert len(rows(tmp_path / "e" / "ledger.csv")) == 3, export.stderr
    for command in ("backup", "restore"):
        r = creditd(command, str(tmp_path / "x"), "--database-url",
                    "postgresql://postgres@127.0.0.1:5432/creditd")
        assert r.returncode == 2
        assert "pg_dump -Fc and pg_restore" in r.stderr and "Traceback" not in r.stderr
