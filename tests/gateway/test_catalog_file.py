"""`creditd catalog apply`: the TOML catalog applied to a fresh SQLite and PostgreSQL
database through the CLI (a subprocess, as an operator runs it): idempotent, a changed price
publishes a new version, bad files are refused whole with the key and line named."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.gateway.conftest import ROOT, fresh_pg_url

EXAMPLE = ROOT / "scripts" / "example-catalog.toml"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
       ) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('catalog') / 'creditd.db'}"
        return
    url, drop = fresh_pg_url()
    try:
        yield url
    finally:
        drop()


def creditd(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CREDITD_")}
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def apply(db: str, path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return creditd("catalog", "apply", str(path), "--database-url", db, *extra)


def test_apply_is_idempotent_and_a_new_price_is_a_new_version(db: str, tmp_path: Path) -> None:
    dry = apply(db, EXAMPLE, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would create" in dry.stdout and "plan pro" in dry.stdout

    first = apply(db, EXAMPLE)
    assert first.returncode == 0, first.stderr
    lines = first.stdout.splitlines()
    for item in ("currency tokens", "feature image-generations", "feature sso",
                 "product ai-assistant", "addon extra-seats", "plan free", "plan pro",
                 "plan team", "coupon launch-20"):
        assert any(line.startswith("create") and item in line for line in lines), (item, lines)

    again = apply(db, EXAMPLE)
    assert again.returncode == 0, again.stderr
    assert "no changes" in again.stdout
    assert len(again.stdout.splitlines()) == 1

    changed = tmp_path / "changed.toml"
    changed.write_text(EXAMPLE.read_text().replace('amount = "20.00" }', 'amount = "24.00" }')
                       .replace('display_name = "Free"', 'display_name = "Free forever"'))
    preview = apply(db, changed, "--dry-run")
    assert preview.returncode == 0, preview.stderr
    assert "would publish-new-version plan pro" in preview.stdout
    result = apply(db, changed)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "publish-new-version plan pro  (v2: prices)" in out, out
    # A name is not a price: it changes in place, no new version.
    assert "update              plan free  (displayName)" in out, out
    assert "plan team" not in out and "coupon" not in out
    assert "no changes" in apply(db, changed).stdout


BAD_SHAPE = """\
[features.a]
display_name = "A"
type = "NUMBER"
colour = "red"
"""

BAD_PRICE = """\
[products.p]
display_name = "P"

[plans.x]
product = "p"
display_name = "X"

[[plans.x.prices]]
model = "FLAT_FEE"
periods = [{ billing_period = "WEEKLY", amount = "5" }]
"""

# Valid on its own, but the plan names a feature that exists nowhere: found while applying,
# after the currency and product were (in the scratch copy) created.
MISSING_FEATURE = """\
[currencies.gold]
display_name = "Gold"

[products.shop]
display_name = "Shop"

[plans.basic]
product = "shop"
display_name = "Basic"

[plans.basic.entitlements.teleport]
usage_limit = 3
"""


@pytest.mark.parametrize("text, names", [
    (BAD_SHAPE, ["features.a.colour", "line 4"]),
    (BAD_PRICE, ["plans.x.prices[0].periods[0].billing_period", "line 10"]),
    (MISSING_FEATURE, ["plans.basic.entitlements.teleport", "teleport", "line 11"]),
    ("[plans.a\n", ["not valid TOML"]),
    ("[widgets.a]\nx = 1\n", ["widgets", "unknown table"]),
])
def test_bad_files_are_refused_whole(db: str, tmp_path: Path, text: str,
                                     names: list[str]) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    result = apply(db, path)
    assert result.returncode == 1
    assert result.stdout == ""
    for name in names:
        assert name in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    if text is MISSING_FEATURE:
        # Nothing was applied: the currency and product would still be created.
        fixed = tmp_path / "fixed.toml"
        fixed.write_text(text.replace("[plans.basic.entitlements.teleport]\nusage_limit = 3\n",
                                      ""))
        dry = apply(db, fixed, "--dry-run")
        lines = dry.stdout.splitlines()
        for item in ("currency gold", "product shop", "plan basic"):
            assert any(line.startswith("would create") and item in line for line in lines), \
                dry.stdout


def test_missing_file_is_one_line(tmp_path: Path) -> None:
    result = apply(f"sqlite:///{tmp_path / 'c.db'}", tmp_path / "nope.toml")
    assert result.returncode == 1
    assert "cannot read" in result.stderr and "Traceback" not in result.stderr
