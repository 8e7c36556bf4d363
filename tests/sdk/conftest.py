"""Stigg's own GraphQL SDKs, installed from their registries, driving a creditd server.

- Python: `stigg-api-client-v2` (PyPI) cannot share the project's .venv: it installs a
  `stigg` module, as does the REST client the other tests use. `stigg_v2_python` creates a
  venv of its own once (under `.cache/sdk/`, or `$CREDITD_TEST_SDK_CACHE`), kept between
  runs and rebuilt only when the pinned requirement changes; `stigg_v1_python` the same
  for the first client, `stigg-api-client` (sgqlc), driven by `drivers/stigg_v1.py`.
- Node.js: `@stigg/node-server-sdk` (npm), pinned in `node/package.json` with its lock;
  `node_sdk` runs `npm ci` there once (again when the lock changes).

Each test runs a driver (`drivers/stigg_v2.py` in that venv, `node/driver.js` under
`node`) as a subprocess: the driver reads a list of SDK calls as JSON on stdin, makes them
as the documentation's snippets do, and prints each call's result (or the error the SDK
raised) as JSON, with the HTTP requests it made. Adding an operation to a test is one
more step in its list. `node_listener` runs the Node driver in its listening mode instead:
the SDK with realtime updates, kept running while the test makes changes, its events and
websocket frames read line by line (harness.Listener).

Under CI=true a missing `node`/`npm` or a failed install fails the tests; elsewhere they
are skipped with the reason (and the installer's output).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest

from tests.gateway import conftest as gateway
from tests.gateway.graphql.conftest import currency, customer  # noqa: F401 (fixtures)
from tests.sdk.harness import Catalog, Driver, Listener

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CACHE = Path(os.environ.get("CREDITD_TEST_SDK_CACHE") or ROOT / ".cache" / "sdk")
NODE_DIR = HERE / "node"
PY_DRIVER = HERE / "drivers" / "stigg_v2.py"
PY_V1_DRIVER = HERE / "drivers" / "stigg_v1.py"
NODE_DRIVER = NODE_DIR / "driver.js"

STIGG_V2 = "stigg-api-client-v2==6.25.0"
STIGG_V1 = "stigg-api-client==6.25.0"  # the first client, sgqlc (deprecated by Stigg)
INSTALL_TIMEOUT = 600


def unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true requires it)", pytrace=False)
    pytest.skip(reason)


@contextlib.contextmanager
def _locked(name: str) -> Iterator[None]:
    """One installer at a time (parallel pytest runs share the cache)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _run(cmd: list[str], cwd: Path | None = None) -> tuple[bool, str]:
    try:
        done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True,
                              timeout=INSTALL_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, repr(exc)
    return done.returncode == 0, f"$ {' '.join(cmd)}\n{done.stdout}{done.stderr}"


def _tail(output: str, lines: int = 20) -> str:
    """The start (where npm and pip name the problem) and the end of an installer's output."""
    kept = output.splitlines()
    if len(kept) > 2 * lines:
        kept = [*kept[:lines], "[...]", *kept[-lines:]]
    return "\n".join(kept)


Server = gateway.Server
# The gateway tests' server (one per module, on SQLite and on PostgreSQL), official REST
# client and fresh ids, for these tests too.
server, client, uid = gateway.server, gateway.client, gateway.uid


def _venv(requirement: str, check: str) -> Path:
    """The python of a venv under CACHE holding `requirement` (created on first use,
    again when the pin changes), `check` run in it once installed."""
    name, version = requirement.split("==")
    tag = f"py{sys.version_info[0]}{sys.version_info[1]}"
    venv = CACHE / f"{name}-{version}-{tag}"
    python = venv / "bin" / "python"
    stamp = venv / ".creditd-installed"
    with _locked("python"):
        if stamp.is_file() and stamp.read_text() == requirement and python.exists():
            return python
        shutil.rmtree(venv, ignore_errors=True)
        log = []
        for cmd in ([sys.executable, "-m", "venv", str(venv)],
                    [str(python), "-m", "pip", "install", "--disable-pip-version-check",
                     "--no-input", requirement],
                    [str(python), "-c", check]):
            ok, out = _run(cmd)
            log.append(out)
            if not ok:
                shutil.rmtree(venv, ignore_errors=True)
                unavailable(f"could not install {requirement} into {venv}:\n"
                            + _tail("\n".join(log)))
        stamp.write_text(requirement)
    return python


@pytest.fixture(scope="session")
def stigg_v2_python() -> Path:
    """The python of a venv holding stigg-api-client-v2 (created on first use)."""
    return _venv(STIGG_V2, "from stigg import Stigg; import stigg.generated")


@pytest.fixture(scope="session")
def stigg_v1_python() -> Path:
    """The python of a venv holding stigg-api-client, v1 (sgqlc; created on first use)."""
    return _venv(STIGG_V1, "from stigg import Stigg; from stigg.generated import operations")


@pytest.fixture(scope="session")
def node_sdk() -> Path:
    """`node`, with tests/sdk/node/node_modules installed from the lock (`npm ci`)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        unavailable("the Node SDK tests need `node` and `npm` on PATH")
    ok, version = _run([node, "--version"])
    if not ok or int(version.rsplit("v", 1)[1].split(".")[0]) < 18:
        unavailable(f"the Node SDK tests need Node 18 or newer: {version}")
    lock = NODE_DIR / "package-lock.json"
    want = hashlib.sha256(lock.read_bytes()).hexdigest()
    stamp = NODE_DIR / "node_modules" / ".creditd-installed"
    with _locked("node"):
        if not (stamp.is_file() and stamp.read_text() == want):
            ok, out = _run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                           cwd=NODE_DIR)
            if not ok:
                unavailable("could not install the Node SDK (npm ci in "
                            f"{NODE_DIR}):\n{_tail(out)}")
            stamp.write_text(want)
    return Path(node)


@pytest.fixture
def py_sdk(stigg_v2_python: Path, server: Server) -> Driver:
    return Driver([str(stigg_v2_python), str(PY_DRIVER)], server)


@pytest.fixture
def py_v1_sdk(stigg_v1_python: Path, server: Server) -> Driver:
    return Driver([str(stigg_v1_python), str(PY_V1_DRIVER)], server)


@pytest.fixture
def node_driver(node_sdk: Path, server: Server) -> Driver:
    return Driver([str(node_sdk), str(NODE_DRIVER)], server)


@pytest.fixture
def node_listener(node_sdk: Path, server: Server) -> Iterator[Callable[..., Listener]]:
    """`node_listener(config={…}, steps=[…])` starts the Node SDK with realtime updates
    (node/driver.js listening); each is closed (its stdin ended) after the test."""
    started: list[Listener] = []

    def start(**settings: Any) -> Listener:
        started.append(Listener([str(node_sdk), str(NODE_DRIVER)], server, **settings))
        return started[-1]

    yield start
    for listener in started:
        listener.close()




@pytest.fixture
def catalog(client: Any, uid: Any) -> Catalog:
    return Catalog(client, uid)
