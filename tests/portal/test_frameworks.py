"""The widgets inside React 18 and Vue 3 host apps with no build step, as docs/portal.md
("Widgets (embedding)") shows them: the frameworks' own browser builds (React/ReactDOM UMD,
Vue's global build with its template compiler), from npm, pinned in
`frameworks/package.json` with its lock; the `frameworks` fixture runs `npm ci` there once
(again when the lock changes). The merchant's server (another origin than creditd's)
serves the host pages and those files; the page loads /widgets/creditd.js from creditd.

Under CI=true a missing `npm` or a failed install fails the tests; elsewhere they are
skipped with the reason (and npm's output).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from string import Template
from typing import Any

import pytest

from tests.portal.helpers import (
    amount_text,
    dec,
    expect,
    merchant_server,
    npm_ci,
    seed_account,
    wait_widgets,
)

FRAMEWORKS = Path(__file__).resolve().parent / "frameworks"
# What the merchant's server serves under /vendor/: the builds a page loads with a script tag.
VENDOR = {
    "/vendor/react.js": "react/umd/react.production.min.js",
    "/vendor/react-dom.js": "react-dom/umd/react-dom.production.min.js",
    "/vendor/vue.js": "vue/dist/vue.global.prod.js",
}


@pytest.fixture(scope="session")
def frameworks() -> Path:
    """tests/portal/frameworks/node_modules, installed from the lock (`npm ci`)."""
    modules = npm_ci(FRAMEWORKS, "React and Vue")
    missing = [f for f in VENDOR.values() if not (modules / f).is_file()]
    assert not missing, f"npm ci in {FRAMEWORKS} installed no {missing}"
    return modules


@pytest.fixture(scope="module")
def merchant(frameworks: Path) -> Iterator[tuple[str, dict[str, bytes]]]:
    """The merchant's web server, on another loopback origin than creditd's (as in
    test_embed.py): the host pages put in its dict, and the frameworks' builds (VENDOR)."""
    with merchant_server({path: frameworks / f for path, f in VENDOR.items()}) as served:
        yield served


def open_host(page: Any, merchant: tuple[str, dict[str, bytes]], template: str,
              **values: str) -> None:
    origin, pages = merchant
    path = f"/app-{len(pages)}"
    pages[path] = Template(template).substitute(values).encode()
    page.goto(origin + path)


def compact(value: Any) -> str:
    """JSON as the page's JSON.stringify writes it."""
    return json.dumps(value, separators=(",", ":"))


def detail(customer: str, currency: str) -> dict[str, Any]:
    return {"customerId": customer, "currencyId": currency, "resourceId": None}


def no_console_errors(page: Any) -> None:
    """Nothing on the console (a React or Vue warning, a refused request, a CSP report),
    not only the page errors the `new_page` fixture fails on."""
    assert page.errors == [], page.errors


# docs/portal.md's React 18 component, without JSX (no build step): the element's event
# through a ref, the handler a new function at every render (the effect's clean-up runs).
# `renderApp(token)` renders the app again with a new token prop.
REACT_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>React shop</title>
<link rel="icon" href="data:,">
<script src="/vendor/react.js"></script>
<script src="/vendor/react-dom.js"></script>
<script src="$server/widgets/creditd.js"></script>
</head><body>
<div id="root"></div>
<script>
  const {createElement: e, Fragment, useEffect, useRef, useState} = React;

  function Credits({token, onAddCredits}) {
    const ref = useRef(null);
    useEffect(() => {
      const el = ref.current;
      const handler = (ev) => onAddCredits(ev.detail);
      el.addEventListener("creditd-add-credits", handler);
      return () => el.removeEventListener("creditd-add-credits", handler);
    }, [onAddCredits]);
    return e(Fragment, null,
      e("creditd-balance", {ref, token, "add-credits": ""}),
      e("creditd-usage-chart", {token, range: "7d"}));
  }

  function App({token}) {
    const [added, setAdded] = useState([]);
    return e(Fragment, null,
      e(Credits, {token, onAddCredits: (d) => setAdded((a) => a.concat([d]))}),
      e("output", {"data-testid": "react-added"}, JSON.stringify(added)));
  }

  const root = ReactDOM.createRoot(document.getElementById("root"));
  window.renderApp = (token) => root.render(e(App, {token}));
  window.renderApp($token);
</script>
</body></html>"""

# Vue 3's global build compiles the template in the browser; the creditd- tags are custom
# elements, their event a v-on listener.
VUE_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Vue shop</title>
<link rel="icon" href="data:,">
<script src="/vendor/vue.js"></script>
<script src="$server/widgets/creditd.js"></script>
</head><body>
<div id="app"></div>
<script>
  const app = Vue.createApp({
    data: () => ({token: $token, added: []}),
    methods: {onAdd(ev) { this.added.push(ev.detail); }},
    template: `
      <creditd-balance :token="token" add-credits @creditd-add-credits="onAdd"></creditd-balance>
      <creditd-grants :token="token"></creditd-grants>
      <output data-testid="vue-added">{{ JSON.stringify(added) }}</output>`
  });
  app.config.compilerOptions.isCustomElement = (tag) => tag.startsWith("creditd-");
  window.vm = app.mount("#app");
</script>
</body></html>"""


def test_react_18(server, api, uid, merchant, page, shot) -> None:
    acct = seed_account(api, uid, amount=500)
    api.consume(acct.customer, acct.currency, 20)  # something for the usage chart
    other = seed_account(api, uid, name="Grace Hopper", amount=750)
    first = api.token(acct.customer)
    sent: list[str] = []  # the credentials the widgets' requests carried
    page.on("request", lambda r: sent.append(r.headers.get("authorization", ""))
            if r.url.startswith(server.url + "/api/") else None)
    open_host(page, merchant, REACT_PAGE, server=server.url, token=json.dumps(first))
    wait_widgets(page, ("creditd-balance", "creditd-usage-chart"))
    balance, added = page.locator("creditd-balance"), page.get_by_test_id("react-added")
    cards = balance.locator("section.card")
    expect(cards).to_have_count(1)
    expect(balance).to_contain_text(amount_text(480))
    expect(page.locator("creditd-usage-chart")).to_have_attribute("data-state", "ready")
    button = balance.get_by_role("button", name=re.compile("add", re.IGNORECASE))
    button.click()
    expect(added).to_have_text(compact([detail(acct.customer, acct.currency)]))
    assert sent and all(s == f"Bearer {first}" for s in sent), sent
    shot(page.locator("#root"), "react-host")

    # A new token for the same customer (a refreshed session), then another customer's:
    # the same elements follow the prop, one card each time, one call per click. (On the
    # manual clock two tokens minted alike are the same string: the refreshed one gets
    # another lifetime.)
    expected = [detail(acct.customer, acct.currency)]
    for customer, currency, amount, ttl in ((acct.customer, acct.currency, 480, 1200),
                                            (other.customer, other.currency, 750, None)):
        token = api.token(customer, ttl_seconds=ttl)
        assert token != page.locator("creditd-balance").get_attribute("token")
        sent.clear()
        page.evaluate("t => window.renderApp(t)", token)
        expect(balance).to_have_attribute("token", token)
        expect(page.locator("creditd-usage-chart")).to_have_attribute("token", token)
        wait_widgets(page, ("creditd-balance", "creditd-usage-chart"))
        expect(page.locator("creditd-balance")).to_have_count(1)
        expect(cards).to_have_count(1)
        expect(cards).to_have_attribute("data-currency-id", currency)
        expect(balance).to_contain_text(amount_text(amount))
        button.click()
        expected.append(detail(customer, currency))
        expect(added).to_have_text(compact(expected))
        assert f"Bearer {token}" in sent, sent  # the new token is the one used

    for customer, amount in ((acct.customer, 480), (other.customer, 750)):
        [b] = api.balance(customer)["balances"]
        assert dec(b["currentBalance"]) == amount, "the widget moves no money"
    no_console_errors(page)


def test_vue_3(server, api, uid, merchant, page, shot) -> None:
    acct = seed_account(api, uid, amount=1000)
    api.grant(acct.customer, acct.currency, 250, display_name="Bonus credits",
              grant_type="PROMOTIONAL")
    open_host(page, merchant, VUE_PAGE, server=server.url,
              token=json.dumps(api.token(acct.customer)))
    wait_widgets(page, ("creditd-balance", "creditd-grants"))
    balance = page.locator("creditd-balance")
    expect(balance.locator("section.card")).to_have_count(1)
    expect(balance).to_contain_text(amount_text(1250))
    balance.get_by_role("button", name=re.compile("add", re.IGNORECASE)).click()
    expect(page.get_by_test_id("vue-added")).to_have_text(
        compact([detail(acct.customer, acct.currency)]))

    grants = page.locator("creditd-grants")
    rows = grants.locator("tbody tr")
    expect(rows).to_have_count(2)
    assert sorted(rows.evaluate_all("rs => rs.map(r => r.dataset.grantId)")) == \
        sorted(g["id"] for g in api.grants(acct.customer))
    expect(grants).to_contain_text("Starter credits")
    expect(grants).to_contain_text("Bonus credits")
    shot(page.locator("#app"), "vue-host")

    [b] = api.balance(acct.customer)["balances"]
    assert dec(b["currentBalance"]) == 1250, "the widget moves no money"
    no_console_errors(page)
