"""Helpers of the browser tests (tests/portal): the REST calls they seed with and compare
against, seeded accounts (grants in every state, a usage history), and what a page shows.
The fixtures are in conftest.py."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, NoReturn

import httpx
import msgspec
import pytest

from tests.gateway.conftest import KEY, OTHER_KEY, Server

try:  # without Playwright, the `browser` fixture skips (fails under CI=true) with the reason
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import expect
except ImportError:  # pragma: no cover
    expect = None  # type: ignore[assignment]
    PlaywrightTimeout = TimeoutError  # type: ignore[assignment,misc]

__all__ = [
    "ARTIFACTS",
    "CHROMIUM",
    "CHROMIUM_ARGS",
    "DEEP_TEXT",
    "DOCS",
    "KEY",
    "OTHER_KEY",
    "WIDGETS",
    "XSS",
    "Account",
    "Api",
    "History",
    "PlaywrightTimeout",
    "Server",
    "amount_text",
    "dec",
    "exact_json",
    "expect",
    "iso",
    "merchant_server",
    "npm_ci",
    "open_portal",
    "seed_account",
    "seed_grants_every_state",
    "seed_history",
    "unavailable",
    "utc_now",
    "wait_widgets",
]

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
ARTIFACTS = HERE / "artifacts"
DOCS = ROOT / "docs"
CHROMIUM = os.environ.get("CREDITD_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
WIDGETS = ("creditd-balance", "creditd-utilization", "creditd-usage-chart", "creditd-grants",
           "creditd-ledger", "creditd-auto-recharge")
XSS = "<img src=x onerror=alert(1)>"


def npm_ci(folder: Path, what: str) -> Path:
    """`folder`/node_modules, installed from its package-lock.json by `npm ci` when missing
    or when the lock changed (a stamp keeps the lock's digest; one installer at a time).
    Without node/npm or when the install fails: skipped, or failed under CI=true."""
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        unavailable(f"{what} is installed with `npm` (and `node`), not on PATH")
    want = hashlib.sha256((folder / "package-lock.json").read_bytes()).hexdigest()
    modules = folder / "node_modules"
    stamp = modules / ".creditd-installed"
    (ROOT / ".cache").mkdir(exist_ok=True)
    with open(ROOT / ".cache" / f"npm-{folder.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (stamp.is_file() and stamp.read_text() == want):
            cmd = [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"]
            try:
                done = subprocess.run(cmd, cwd=folder, capture_output=True, text=True,
                                      timeout=600, check=False)
                ok, out = done.returncode == 0, done.stdout + done.stderr
            except (OSError, subprocess.TimeoutExpired) as exc:
                ok, out = False, repr(exc)
            if not ok:
                unavailable(f"could not install {what} (npm ci in {folder}):\n{out[-3000:]}")
            stamp.write_text(want)
    return modules


@contextlib.contextmanager
def merchant_server(files: dict[str, Path] | None = None,
                    ) -> Iterator[tuple[str, dict[str, bytes]]]:
    """The merchant's web server: another origin (another port) than creditd's, serving the
    pages put in the dict it yields (HTML) and `files` (URL path -> file, as JavaScript).
    A real server on loopback, as creditd: Chromium refuses a public page's requests to a
    loopback address (Local Network Access), so an intercepted page on a made-up public
    origin could not load the widgets in the first place."""
    pages: dict[str, bytes] = {}
    scripts = files or {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body, kind = pages.get(self.path), "text/html"
            if self.path in scripts:
                body, kind = scripts[self.path].read_bytes(), "text/javascript"
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Type", f"{kind}; charset=utf-8")
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", pages
    finally:
        httpd.shutdown()
        httpd.server_close()


def unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true requires it)", pytrace=False)
    pytest.skip(reason)


# -- the server and REST ------------------------------------------------------------------


def new_id(prefix: str) -> str:
    """A fresh id (`new_id("cust")`), so tests sharing a module's server never collide."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def utc_now() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


def iso(at: datetime) -> str:
    return at.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


class ApiError(AssertionError):
    pass


class Api:
    """The REST API with an API key: seeding and the numbers the pages must show."""

    def __init__(self, server: Server, key: str = KEY) -> None:
        self.server = server
        self.http = server.http(key)

    def close(self) -> None:
        self.http.close()

    @staticmethod
    def data(r: httpx.Response, *status: int) -> Any:
        if r.status_code not in (status or (200, 201)):
            raise ApiError(f"{r.request.method} {r.request.url} -> {r.status_code}: {r.text}")
        return exact_json(r.text)["data"]

    # time
    def now(self) -> datetime:
        r = self.http.get("/api/v1/test-clock")
        if r.status_code == 404:  # the system clock
            return utc_now()
        return datetime.fromisoformat(self.data(r)["now"].replace("Z", "+00:00"))

    def move_clock(self, by: timedelta) -> datetime:
        r = self.http.put("/api/v1/test-clock", json={"advanceSeconds": int(by.total_seconds())})
        return datetime.fromisoformat(self.data(r)["now"].replace("Z", "+00:00"))

    # catalog and customers
    def currency(self, currency_id: str, display_name: str = "AI Tokens", *,
                 singular: str = "token", plural: str = "tokens", **extra: Any) -> dict:
        return self.data(self.http.post("/api/v1/credits/custom-currencies", json={
            "id": currency_id, "displayName": display_name,
            "units": {"singular": singular, "plural": plural}, **extra}))

    def customer(self, customer_id: str, name: str | None = None, **extra: Any) -> dict:
        body = {"id": customer_id, **extra}
        if name is not None:
            body["name"] = name
        return self.data(self.http.post("/api/v1/customers", json=body))

    def feature(self, feature_id: str, display_name: str, currency_id: str,
                rate: str | int) -> dict:
        """A usage-reported (INCREMENTAL) feature burning `rate` credits per unit."""
        return self.data(self.http.post("/api/v1/features", content=_json({
            "id": feature_id, "displayName": display_name, "featureType": "NUMBER",
            "meterType": "INCREMENTAL",
            "creditRate": {"amount": Decimal(str(rate)), "currencyId": currency_id}}),
            headers={"content-type": "application/json"}))

    # credits
    def grant(self, customer_id: str, currency_id: str, amount: str | int, *,
              display_name: str = "Credits", grant_type: str = "PAID",
              **extra: Any) -> dict:
        body = {"customerId": customer_id, "currencyId": currency_id,
                "amount": Decimal(str(amount)), "displayName": display_name,
                "grantType": grant_type, **extra}
        return self.data(self.http.post(
            "/api/v1/credits/grants", content=_json(body),
            headers={"content-type": "application/json",
                     "Idempotency-Key": uuid.uuid4().hex}))

    def void(self, grant_id: str) -> dict:
        return self.data(self.http.post(f"/api/v1/credits/grants/{grant_id}/void"))

    def consume(self, customer_id: str, currency_id: str, amount: str | int, *,
                created_at: datetime | None = None,
                dimensions: dict[str, Any] | None = None) -> dict:
        body: dict[str, Any] = {"customerId": customer_id, "currencyId": currency_id,
                                "amount": Decimal(str(amount)),
                                "idempotencyKey": uuid.uuid4().hex}
        if created_at is not None:
            body["createdAt"] = iso(created_at)
        if dimensions:
            body["dimensions"] = dimensions
        return self.data(self.http.post("/api/v1/credits/consumption", content=_json(body),
                                        headers={"content-type": "application/json"}))

    def report_usage(self, usages: list[dict[str, Any]]) -> Any:
        """POST /api/v1/usage (up to the batch limit): each item's `createdAt` places its
        credits in that hour of the usage analytics."""
        return self.data(self.http.post("/api/v1/usage", content=_json({"usages": usages}),
                                        headers={"content-type": "application/json"}))

    def token(self, customer_id: str, *, resource_id: str | None = None,
              ttl_seconds: int | None = None) -> str:
        body: dict[str, Any] = {}
        if resource_id is not None:
            body["resourceId"] = resource_id
        if ttl_seconds is not None:
            body["ttlSeconds"] = ttl_seconds
        return self.data(self.http.post(f"/api/v1/customers/{customer_id}/tokens",
                                        json=body))["token"]

    # reads
    def balance(self, customer_id: str, **params: Any) -> dict:
        return self.data(self.http.get("/api/v1/credits/balance",
                                       params={"customerId": customer_id, **params}))

    def grants(self, customer_id: str) -> list[dict]:
        out: list[dict] = []
        params: dict[str, Any] = {"customerId": customer_id, "limit": 100}
        while True:
            r = self.http.get("/api/v1/credits/grants", params=params)
            self.data(r)
            body = exact_json(r.text)
            out += body["data"]
            nxt = (body.get("pagination") or {}).get("next")
            if not nxt:
                return out
            params["after"] = nxt

    def usage(self, params: dict[str, Any] | str) -> dict:
        """GET /api/v1/credits/usage with exactly these parameters (a dict, or the query
        string a widget sent), every page of series."""
        query = httpx.QueryParams(params)
        series: list[dict] = []
        while True:
            body = self.data(self.http.get("/api/v1/credits/usage", params=query))
            series += body["series"]
            nxt = (body.get("pagination") or {}).get("next")
            if not nxt:
                return {**body, "series": series}
            query = query.set("after", nxt)


def exact_json(text: str) -> Any:
    """A JSON answer with its decimal numbers as Decimals, digit for digit as sent."""
    return json.loads(text, parse_float=Decimal)


_encoder = msgspec.json.Encoder(decimal_format="number")


def _json(body: Any) -> bytes:
    """JSON with Decimals as exact numbers (amounts go out as written)."""
    return _encoder.encode(body)


# -- seeding ------------------------------------------------------------------------------


@dataclass
class Account:
    """A seeded customer: its currency, grants by the state they show, features."""

    customer: str
    currency: str
    name: str | None = None
    grants: dict[str, dict] = field(default_factory=dict)  # state -> the grant as created
    features: dict[str, str] = field(default_factory=dict)  # feature id -> display name


def seed_account(api: Api, uid: Callable[[str], str], *, name: str = "Ada Lovelace",
                 currency_name: str = "AI Tokens", grant_name: str = "Starter credits",
                 amount: str | int = 1000) -> Account:
    """A customer with one currency (units token/tokens) and one active PAID grant."""
    acct = Account(customer=uid("cust"), currency=uid("tok"), name=name)
    api.currency(acct.currency, currency_name)
    api.customer(acct.customer, name)
    acct.grants["ACTIVE"] = api.grant(acct.customer, acct.currency, amount,
                                      display_name=grant_name, priority=10)
    return acct


def seed_grants_every_state(api: Api, acct: Account) -> dict[str, dict]:
    """One grant in each state the grants table must show, beside the account's active one:
    DEPLETED (an active grant consumed to 0: the API's status stays ACTIVE), SCHEDULED
    (effective in 30 days), PAYMENT_PENDING (awaiting payment confirmation), VOIDED, and
    EXPIRED (expiring in a minute, then the manual clock moves past it). Consumes 5 credits
    and moves the server's clock 2 minutes."""
    now = api.now()
    c, cur = acct.customer, acct.currency
    # Priority 0 is drawn first: the 5 consumed empty this grant, not the active one.
    g = acct.grants["DEPLETED"] = api.grant(c, cur, 5, display_name="Used-up credits",
                                            priority=0)
    api.consume(c, cur, 5)
    acct.grants["SCHEDULED"] = api.grant(c, cur, 250, display_name="Next month's credits",
                                         grant_type="PROMOTIONAL",
                                         effectiveAt=iso(now + timedelta(days=30)))
    acct.grants["PAYMENT_PENDING"] = api.grant(c, cur, 300, display_name="Invoice credits",
                                               awaitPaymentConfirmation=True,
                                               paymentCollectionMethod="INVOICE",
                                               cost={"amount": Decimal(30),
                                                     "currency": "usd"})
    voided = api.grant(c, cur, 20, display_name="Mistaken credits", grant_type="PROMOTIONAL")
    acct.grants["VOIDED"] = api.void(voided["id"])
    acct.grants["EXPIRED"] = api.grant(c, cur, 30, display_name="Trial credits",
                                       grant_type="PROMOTIONAL",
                                       expireAt=iso(now + timedelta(seconds=60)))
    api.move_clock(timedelta(seconds=120))
    # The expiry timer fires in the engine just after the clock moved (asynchronously).
    deadline = time.monotonic() + 10
    while True:
        states = {x["id"]: x for x in api.grants(c)}
        if states[acct.grants["EXPIRED"]["id"]]["status"] == "EXPIRED" \
                or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert states[g["id"]]["status"] in ("ACTIVE", "DEPLETED")
    assert Decimal(str(states[g["id"]]["consumedAmount"])) == 5
    for state in ("SCHEDULED", "PAYMENT_PENDING", "VOIDED", "EXPIRED"):
        assert states[acct.grants[state]["id"]]["status"] == state, states
    return acct.grants


@dataclass
class History:
    """A seeded usage history: per feature (None: consumed directly) the exact credits,
    and per `user` dimension value."""

    start: datetime
    end: datetime
    by_feature: dict[str | None, Decimal]
    by_user: dict[str, Decimal]
    events: int


def seed_history(api: Api, acct: Account, uid: Callable[[str], str], *, days: int = 10,
                 end: datetime | None = None) -> History:
    """Usage over the `days` days before `end` (default: the server's now): two
    credit-backed features (rates 2 and 0.75, so amounts with decimals) reported with
    `createdAt` in the past, with a `user` dimension, and credits consumed directly.
    Backdated `createdAt` lands in its own hour of the analytics (engine/core/usage.py)."""
    end = end or api.now()
    calls, images = uid("calls"), uid("images")
    api.feature(calls, "API calls", acct.currency, 2)
    api.feature(images, "Image generations", acct.currency, "0.75")
    acct.features = {calls: "API calls", images: "Image generations"}
    by_feature: dict[str | None, Decimal] = {calls: Decimal(0), images: Decimal(0),
                                             None: Decimal(0)}
    by_user: dict[str, Decimal] = {}
    usages, events = [], 0
    for d in range(days, 0, -1):
        day = end - timedelta(days=d) + timedelta(hours=2)
        for i, (feature, rate, value, user) in enumerate((
                (calls, Decimal(2), Decimal(d % 4 + 1), "alice"),
                (images, Decimal("0.75"), Decimal("1.5") * (d % 3 + 1), "bob"),
                (calls, Decimal(2), Decimal(1), "bob"))):
            at = day + timedelta(minutes=10 * i)
            usages.append({"customerId": acct.customer, "featureId": feature, "value": value,
                           "createdAt": iso(at), "dimensions": {"user": user},
                           "idempotencyKey": uuid.uuid4().hex})
            by_feature[feature] += value * rate
            by_user[user] = by_user.get(user, Decimal(0)) + value * rate
            events += 1
        if d % 2 == 0:  # credits consumed directly, every other day
            amount = Decimal("0.25")
            api.consume(acct.customer, acct.currency, amount, created_at=day,
                        dimensions={"user": "carol"})
            by_feature[None] += amount
            by_user["carol"] = by_user.get("carol", Decimal(0)) + amount
            events += 1
    for i in range(0, len(usages), 100):
        api.report_usage(usages[i:i + 100])
    return History(start=end - timedelta(days=days), end=end, by_feature=by_feature,
                   by_user=by_user, events=events)


def amount_text(value: Decimal | str | int) -> re.Pattern[str]:
    """A number as a widget may show it: the API's digits, with or without thousands
    separators (en-US), never rounded."""
    d = Decimal(str(value))
    sign = "-" if d < 0 else ""
    text = format(abs(d).normalize(), "f")
    whole, _, frac = text.partition(".")
    groups = []
    while len(whole) > 3:
        groups.insert(0, whole[-3:])
        whole = whole[:-3]
    groups.insert(0, whole)
    pattern = ",?".join(groups)
    if frac:
        pattern += r"\." + frac
    return re.compile(rf"(?<![\d.,]){re.escape(sign)}{pattern}(?![\d]|[.,]\d)")


def dec(value: Any) -> Decimal:
    """An amount from the API or a widget (a number, or a string of its digits)."""
    return Decimal(str(value).replace(",", ""))


# -- pages --------------------------------------------------------------------------------

# Everything a person could read on the page, shadow roots included: text, attribute values
# (titles, labels) and form values.
DEEP_TEXT = """() => {
  const out = [];
  const walk = (node) => {
    if (node.nodeType === Node.TEXT_NODE) { out.push(node.data); return; }
    if (node.nodeType !== Node.ELEMENT_NODE && node.nodeType !== Node.DOCUMENT_FRAGMENT_NODE
        && node.nodeType !== Node.DOCUMENT_NODE) return;
    if (node.nodeType === Node.ELEMENT_NODE) {
      if (node.tagName === 'SCRIPT' || node.tagName === 'STYLE') return;
      for (const a of node.attributes) out.push(a.value);
      if ('value' in node && typeof node.value === 'string') out.push(node.value);
      if (node.shadowRoot) walk(node.shadowRoot);
      if (node.tagName === 'TEMPLATE') return;
    }
    for (const child of node.childNodes) walk(child);
  };
  walk(document);
  return out.join('\\n');
}"""


def open_portal(page: Any, server: Server, token: str, query: str = "") -> Any:
    """Open /portal?token=… (and `query`) and wait until every widget shown has data."""
    page.goto(f"{server.url}/portal?token={token}{query}")
    root = page.get_by_test_id("portal")
    expect(root).not_to_have_attribute("data-state", "loading", timeout=10_000)
    assert root.get_attribute("data-state") == "ready", \
        page.get_by_test_id("portal-message").inner_text()
    wait_widgets(page)
    return page


def wait_widgets(page: Any, names: tuple[str, ...] = WIDGETS, timeout: float = 10_000) -> None:
    """Every widget named (that the page has) is `ready` or `empty`, none `error`."""
    expect(page.locator(names[0]).first).to_be_attached(timeout=timeout)
    for name in names:
        for el in page.locator(name).all():
            expect(el).to_have_attribute("data-state", re.compile(r"^(ready|empty|error)$"),
                                         timeout=timeout)
            state = el.get_attribute("data-state")
            assert state != "error", f"{name} is in its error state: {el.inner_text()!r}"
