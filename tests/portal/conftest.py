"""The customer portal, the operator console and the widgets, in a real browser.

Debian's Chromium (`/usr/bin/chromium`, or `$CREDITD_TEST_CHROMIUM`) driven by Playwright
(PyPI `playwright`, pointed at the system browser: `playwright install` is never run).
Without either, the tests are skipped with the reason; under CI=true they fail.
Run: `.venv/bin/python -m pytest tests/portal` (about 20 s). helpers.py has the REST client,
the seeding (grants in every state, a usage history) and the page helpers.

Fixtures:
- `server`: one real `creditd serve` per test module (tests/gateway/conftest.py's
  `Server`), on a fresh SQLite file, on a manual clock that starts at the real time of
  the module's start (so the browser's `Date.now()` and the server agree on "the last
  30 days") and moves only through `api.move_clock` (expiries, expired tokens).
- `api`: `Api`, the REST calls the tests seed with and compare against (X-API-KEY).
- `browser`: one Chromium per test module (a session-wide one would keep Playwright's
  event loop alive under the other directories' asyncio/trio tests).
- `page`: a fresh browser context per test (its own sessionStorage, downloads accepted,
  locale en-US, time zone UTC), with the dialogs it opened (`page.dialogs`, all dismissed)
  and its console errors (`page.errors`) recorded.
- `shot(target, name)`: a screenshot into tests/portal/artifacts/ (kept by CI as
  artefacts, ignored by git): one per widget, the full portal, the console.
  `CREDITD_DOCS_SCREENSHOT=1` also rewrites docs/portal-screenshot.png (docs/portal.md).
- `uid("cust")`: a fresh id, so tests sharing a module's server never collide.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.portal.helpers import (
    ARTIFACTS,
    CHROMIUM,
    CHROMIUM_ARGS,
    KEY,
    OTHER_KEY,
    Api,
    Server,
    iso,
    new_id,
    unavailable,
    utc_now,
)


@pytest.fixture(scope="module")
def server(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A module's server. `SERVER_ENV` in the module adds settings; `CLOCK = "system"`
    runs it on the system clock instead of the manual one."""
    env = dict(getattr(request.module, "SERVER_ENV", {}))
    if getattr(request.module, "CLOCK", "manual") == "manual":
        env.setdefault("CREDITD_CLOCK", f"manual:{iso(utc_now())}")
    db = tmp_path_factory.mktemp("portal") / "creditd.db"
    s = Server(f"sqlite:///{db}", api_keys=f"{KEY},other:{OTHER_KEY}", env=env).start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def api(server: Server) -> Iterator[Api]:
    a = Api(server)
    try:
        yield a
    finally:
        a.close()


@pytest.fixture
def uid() -> Callable[[str], str]:
    return new_id


# -- the browser --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError as exc:
        unavailable(f"Playwright is not installed ({exc}); pip install playwright")
    if not Path(CHROMIUM).exists():
        unavailable(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    pw = sync_playwright().start()
    try:
        try:
            b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        except Error as exc:
            unavailable(f"Chromium at {CHROMIUM} does not start: {exc}")
        try:
            yield b
        finally:
            b.close()
    finally:
        pw.stop()


@pytest.fixture
def new_page(browser: Any) -> Iterator[Callable[..., Any]]:
    """Pages in fresh contexts (each with its own storage): `new_page()`; every dialog is
    dismissed and recorded in `page.dialogs`, console errors and page errors in
    `page.errors`. An uncaught script error or a CSP refusal fails the test."""
    contexts = []

    def make(**options: Any) -> Any:
        ctx = browser.new_context(locale="en-US", timezone_id="UTC", accept_downloads=True,
                                  viewport={"width": 1280, "height": 900}, **options)
        contexts.append(ctx)
        p = ctx.new_page()
        p.dialogs = []
        p.errors = []

        def on_dialog(dialog: Any) -> None:
            p.dialogs.append(f"{dialog.type}: {dialog.message}")
            dialog.dismiss()

        p.on("dialog", on_dialog)
        p.on("console", lambda m: p.errors.append(m.text) if m.type == "error" else None)
        p.on("pageerror", lambda e: p.errors.append(f"pageerror: {e}"))
        return p

    yield make
    broken = [e for ctx in contexts for p in ctx.pages for e in p.errors
              if e.startswith("pageerror:") or "Content Security Policy" in e]
    for ctx in contexts:
        ctx.close()
    # An uncaught exception in a page's script, or something the page's CSP refused, is a
    # bug even when what the test looked at came out right.
    assert not broken, broken


@pytest.fixture
def page(new_page: Callable[..., Any]) -> Any:
    return new_page()


@pytest.fixture(scope="session")
def shot() -> Callable[[Any, str], Path]:
    ARTIFACTS.mkdir(exist_ok=True)

    def take(target: Any, name: str, **kwargs: Any) -> Path:
        path = ARTIFACTS / f"{name}.png"
        target.screenshot(path=str(path), **kwargs)
        return path

    return take
