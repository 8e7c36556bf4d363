"""The widgets, the portal and the console are keyboard and screen-reader usable (issue 18):
checked in Chromium with axe-core, the standard accessibility engine, and with the keyboard
alone.

- axe-core (npm, pinned in a11y/package.json with its lock; installed by `npm ci` into
  a11y/node_modules, which git ignores) runs in the page against the full portal of a
  customer with data in every widget (the widgets' open shadow roots included; light and
  dark colour schemes), the console signed in with a customer picked (its form with errors,
  its void dialog), and the portal's expired-token message. No violation of impact
  "serious" or "critical" of the WCAG 2.0/2.1 A and AA rules; the whole list is printed
  when one is found. Without `node`/`npm` these tests are skipped, under CI=true they fail.
- The keyboard: Tab, Shift+Tab, Enter, Space and the arrow keys only (the portal's range
  presets, a sortable column, the ledger's pages; the console from signing in to a grant),
  every control focused on the way showing a focus ring, and the focus kept on the
  control used when a widget draws itself again.
- Screen readers: the balance figure is in a live region, every table is named (caption or
  label), every form control has an accessible name (as Playwright's role queries compute
  it).
"""

from __future__ import annotations

import json
import re
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.portal.helpers import (
    KEY,
    expect,
    npm_ci,
    open_portal,
    seed_account,
    seed_grants_every_state,
    seed_history,
    wait_widgets,
)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
A11Y = HERE / "a11y"
AXE_JS = A11Y / "node_modules" / "axe-core" / "axe.min.js"
# axe.min.js is served to the page from the creditd origin itself (page.route): the pages'
# CSP (`script-src 'self'`) stays on, so the tests see the pages exactly as served.
AXE_URL = "/__a11y-test/axe.min.js"
WCAG_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]
BLOCKING = ("serious", "critical")
# Roles of form controls: each must have an accessible name.
CONTROL_ROLES = ("button", "checkbox", "combobox", "listbox", "radio", "searchbox", "slider",
                 "spinbutton", "switch", "textbox")


# -- axe-core -----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def axe_js() -> Path:
    """axe.min.js, installed from a11y/package-lock.json (`npm ci`, helpers.npm_ci)."""
    npm_ci(A11Y, "axe-core")
    assert AXE_JS.is_file(), f"npm ci in {A11Y} installed no {AXE_JS}"
    return AXE_JS


def _serve_axe(page: Any, axe_js: Path) -> None:
    page.route(f"**{AXE_URL}", lambda route: route.fulfill(
        path=str(axe_js), content_type="text/javascript; charset=utf-8"))


def axe_violations(page: Any) -> list[dict]:
    """axe-core's WCAG 2.0/2.1 A and AA violations on the page as it is now (open shadow
    roots included)."""
    if not page.evaluate("() => !!window.axe"):
        page.add_script_tag(url=AXE_URL)
    return page.evaluate("""async (tags) => {
        const result = await window.axe.run(document, {
            runOnly: {type: 'tag', values: tags}, resultTypes: ['violations']});
        return result.violations.map(v => ({
            id: v.id, impact: v.impact, help: v.help, helpUrl: v.helpUrl,
            nodes: v.nodes.map(n => ({target: n.target, html: n.html,
                                      summary: n.failureSummary}))}));
    }""", WCAG_TAGS)


def _report(violations: list[dict]) -> str:
    lines = []
    for v in violations:
        lines.append(f"[{v['impact']}] {v['id']}: {v['help']} ({v['helpUrl']})")
        for n in v["nodes"]:
            lines.append(f"    at {n['target']}: {n['html'][:200]}")
            for s in (n["summary"] or "").splitlines():
                lines.append(f"        {s}")
    return "\n".join(lines)


def assert_accessible(page: Any, where: str) -> list[dict]:
    violations = axe_violations(page)
    blocking = [v for v in violations if v["impact"] in BLOCKING]
    assert not blocking, f"axe-core on {where}:\n{_report(violations)}"
    if violations:  # shown with -rA / on failure of a later step; not failures themselves
        print(f"axe-core on {where}, below serious:\n{_report(violations)}")
    return violations


# -- the page -----------------------------------------------------------------------------

# The element that has the keyboard focus, inside shadow roots, and how it looks.
FOCUSED = """() => {
  let el = document.activeElement;
  while (el && el.shadowRoot && el.shadowRoot.activeElement) el = el.shadowRoot.activeElement;
  if (!el || el === document.body) return null;
  const cs = getComputedStyle(el);
  const host = el.getRootNode().host;
  return {
    tag: el.tagName.toLowerCase(), id: el.id || null, type: el.getAttribute('type'),
    host: host ? host.tagName.toLowerCase() : null,
    testid: el.getAttribute('data-testid'), focus: el.getAttribute('data-focus'),
    text: (el.getAttribute('aria-label') || el.textContent || el.value || '').trim().slice(0, 80),
    // A date input's focus is in one of its fields (Chromium does not always count the
    // input itself as focused then): the ring is drawn on :focus-within.
    focusVisible: el.matches(':focus-visible')
      || (/^(date|datetime-local)$/.test(el.type) && el.matches(':focus-within')),
    outline: cs.outlineStyle !== 'none' && parseFloat(cs.outlineWidth) > 0
      ? cs.outlineStyle + ' ' + cs.outlineWidth + ' ' + cs.outlineColor : null,
    shadow: cs.boxShadow !== 'none' ? cs.boxShadow : null,
  };
}"""


class Keyboard:
    """Tab through a page with the keyboard alone, checking each stop's focus ring."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.visited: list[dict] = []

    def focused(self) -> dict | None:
        return self.page.evaluate(FOCUSED)

    def tab_to(self, wanted: Any, *, limit: int = 250, key: str = "Tab") -> dict:
        """Press Tab until the focused element matches `wanted` (a predicate on FOCUSED's
        answer); every element passed on the way must show a focus indicator."""
        for _ in range(limit):
            self.page.keyboard.press(key)
            now = self.focused()
            if now is None:
                continue
            self.check_ring(now)
            if wanted(now):
                return now
        raise AssertionError(f"never reached by {key}: the stops were "
                             f"{[(v['host'], v['tag'], v['text']) for v in self.visited]}")

    def check_ring(self, now: dict) -> None:
        self.visited.append(now)
        assert now["focusVisible"], f"focused by the keyboard but not :focus-visible: {now}"
        assert now["outline"] or now["shadow"], f"no visible focus indicator: {now}"


def _rich_portal(server, api, uid, page) -> Any:
    acct = seed_account(api, uid, name="Ada Lovelace", amount=5000)
    seed_grants_every_state(api, acct)
    seed_history(api, acct, uid, days=10)
    open_portal(page, server, api.token(acct.customer))
    # The chart is drawn and the ledger has more than one page.
    expect(page.locator("creditd-usage-chart")).to_have_attribute("data-state", "ready")
    expect(page.locator("creditd-ledger [data-action=next]")).to_be_enabled()
    return acct


def _control_names(page: Any) -> list[tuple[str, str | None]]:
    """(role, accessible name or None) of every form control Playwright's accessibility
    snapshot shows (shadow roots included)."""
    out = []
    for line in page.locator("body").aria_snapshot().splitlines():
        item = re.sub(r"^\s*- ", "", line).rstrip()
        item = item.removesuffix(":")  # a node with children
        # YAML quotes a whole entry whose name holds ": " (`- 'button "a: b" [pressed]'`).
        if len(item) > 1 and item[0] == item[-1] == "'":
            item = item[1:-1].replace("''", "'")
        elif len(item) > 1 and item[0] == item[-1] == '"':
            item = json.loads(item)
        m = re.match(r'(\w+)(?: "((?:[^"\\]|\\.)*)")?', item)
        if m and m.group(1) in CONTROL_ROLES:
            out.append((m.group(1), m.group(2)))
    return out


# How many form controls the page renders (shadow roots included): each must be in the
# accessibility tree, with a name.
RENDERED_CONTROLS = """() => {
  let n = 0;
  const walk = root => root.querySelectorAll('*').forEach(el => {
    if (el.matches('button, select, textarea, input:not([type=hidden])')
        && el.getClientRects().length && !el.closest('[aria-hidden=true]')) n++;
    if (el.shadowRoot) walk(el.shadowRoot);
  });
  walk(document);
  return n;
}"""


def assert_controls_named(page: Any) -> list[tuple[str, str | None]]:
    controls = _control_names(page)
    unnamed = [c for c in controls if not c[1]]
    assert not unnamed, f"form controls without an accessible name: {unnamed} of {controls}"
    assert len(controls) == page.evaluate(RENDERED_CONTROLS), controls
    return controls


# -- axe-core: the portal, the console, the expired-token message ---------------------------


def test_axe_finds_nothing_serious_in_the_full_portal(server, api, uid, new_page,
                                                      axe_js) -> None:
    page = new_page()
    _serve_axe(page, axe_js)
    _rich_portal(server, api, uid, page)
    assert_accessible(page, "the portal (every widget with data)")
    # The chart's custom range: its date inputs.
    page.locator("creditd-usage-chart").get_by_role("button", name="Custom").click()
    expect(page.locator("creditd-usage-chart input[type=date]")).to_have_count(2)
    expect(page.locator("creditd-usage-chart")).to_have_attribute("data-state", "ready")
    assert_accessible(page, "the portal, the chart's custom range")


def test_axe_finds_nothing_serious_in_the_portal_in_dark_mode(server, api, uid, new_page,
                                                              axe_js) -> None:
    page = new_page(color_scheme="dark")
    _serve_axe(page, axe_js)
    acct = seed_account(api, uid, name="Ada Lovelace", amount=5000)
    seed_grants_every_state(api, acct)
    seed_history(api, acct, uid, days=3)
    open_portal(page, server, api.token(acct.customer))
    expect(page.locator("creditd-usage-chart")).to_have_attribute("data-state", "ready")
    assert_accessible(page, "the portal in dark mode")


def test_axe_finds_nothing_serious_in_the_console(server, api, uid, new_page,
                                                  axe_js) -> None:
    page = new_page()
    _serve_axe(page, axe_js)
    acct = seed_account(api, uid, name="Grace Hopper", amount=5000)
    seed_grants_every_state(api, acct)
    seed_history(api, acct, uid, days=3)
    page.goto(f"{server.url}/console")
    expect(page.get_by_test_id("api-key")).to_be_focused()
    assert_accessible(page, "the console's sign-in form")
    page.get_by_test_id("api-key").fill(KEY)
    page.get_by_test_id("sign-in").click()
    page.get_by_test_id("customer-search").fill(acct.customer)
    page.get_by_test_id("customer-search-submit").click()
    page.get_by_role("button", name=f"Grace Hopper {acct.customer}").click()
    expect(page.get_by_test_id("customer-title")).to_have_text("Grace Hopper")
    wait_widgets(page)
    expect(page.get_by_test_id("grants-body").locator("tr")).to_have_count(len(acct.grants))
    expect(page.locator("creditd-usage-chart")).to_have_attribute("data-state", "ready")
    assert_accessible(page, "the console with a customer picked")
    # A refused grant: the errors at their fields, then the void dialog.
    page.get_by_test_id("grant-submit").click()
    expect(page.get_by_test_id("grant-amount")).to_have_attribute("aria-invalid", "true")
    assert_accessible(page, "the console's grant form with errors")
    page.get_by_test_id("grants-body").get_by_role(
        "button", name=re.compile("void", re.IGNORECASE)).first.click()
    expect(page.get_by_test_id("void-dialog")).to_be_visible()
    assert_accessible(page, "the console's void dialog")


def test_axe_finds_nothing_serious_in_the_expired_token_message(server, api, uid, new_page,
                                                                axe_js) -> None:
    page = new_page()
    _serve_axe(page, axe_js)
    acct = seed_account(api, uid)
    token = api.token(acct.customer, ttl_seconds=1)
    api.move_clock(timedelta(seconds=5))
    page.goto(f"{server.url}/portal?token={token}")
    message = page.get_by_test_id("portal-message")
    expect(message).to_contain_text(re.compile("expired", re.IGNORECASE))
    assert_accessible(page, "the portal's expired-token message")
    # The message is announced (role=alert) and is the page's content.
    expect(message).to_have_attribute("role", "alert")
    expect(page.get_by_role("heading", name=re.compile("expired", re.IGNORECASE))).to_be_visible()


# -- the keyboard ----------------------------------------------------------------------------


def _usage(request) -> bool:
    return urlsplit(request.url).path == "/api/v1/credits/usage"


def test_the_portal_with_the_keyboard_only(server, api, uid, page) -> None:
    _rich_portal(server, api, uid, page)
    keys = Keyboard(page)
    chart = page.locator("creditd-usage-chart")
    # The range presets: reached with Tab, switched with Enter, then Space.
    expect(chart.locator("[data-range='30d']")).to_have_attribute("aria-pressed", "true")
    keys.tab_to(lambda f: f["host"] == "creditd-usage-chart" and f["focus"] == "range:7d")
    with page.expect_request(_usage) as asked:
        page.keyboard.press("Enter")
    start = parse_qs(urlsplit(asked.value.url).query)["startDate"][0]
    expect(chart).to_have_attribute("range", "7d")
    expect(chart).to_have_attribute("data-state", "ready")
    expect(chart.locator("[data-range='7d']")).to_have_attribute("aria-pressed", "true")
    # The focus stays on the button pressed (the toolbar is drawn again).
    assert (keys.focused() or {}).get("focus") == "range:7d", keys.focused()
    keys.tab_to(lambda f: f["host"] == "creditd-usage-chart" and f["focus"] == "range:30d")
    keys.tab_to(lambda f: f["focus"] == "range:24h", key="Shift+Tab")
    with page.expect_request(_usage) as asked_again:
        page.keyboard.press("Space")
    start_24h = parse_qs(urlsplit(asked_again.value.url).query)["startDate"][0]
    assert start_24h > start, (start, start_24h)  # 24 hours start after 7 days did
    expect(chart).to_have_attribute("range", "24h")
    expect(chart.locator("[data-range='24h']")).to_have_attribute("aria-pressed", "true")
    expect(chart).to_have_attribute("data-state", re.compile("ready|empty"))

    # A sortable grants column: reached with Tab, sorted with Enter (aria-sort follows).
    grants = page.locator("creditd-grants")
    header = grants.locator("th", has=page.locator("[data-sort=status]"))
    expect(header).to_have_attribute("aria-sort", "none")
    keys.tab_to(lambda f: f["host"] == "creditd-grants" and f["focus"] == "sort:status")
    page.keyboard.press("Enter")
    expect(header).to_have_attribute("aria-sort", "ascending")
    statuses = grants.locator("tbody tr").evaluate_all("rs => rs.map(r => r.dataset.status)")
    assert statuses[0] == "ACTIVE" and statuses[-1] == "VOIDED", statuses
    assert (keys.focused() or {}).get("focus") == "sort:status", keys.focused()
    page.keyboard.press("Space")
    expect(header).to_have_attribute("aria-sort", "descending")

    # The ledger's Next page.
    ledger = page.locator("creditd-ledger")
    rows = ledger.locator("tbody tr")
    first_page = rows.all_inner_texts()
    keys.tab_to(lambda f: f["host"] == "creditd-ledger" and f["focus"] == "next")
    with page.expect_request(lambda r: urlsplit(r.url).path == "/api/v1/credits/ledger"
                             and "after" in parse_qs(urlsplit(r.url).query)):
        page.keyboard.press("Enter")
    expect(ledger.locator("[part~=pager]")).to_contain_text("Page 2")
    expect(ledger).to_have_attribute("data-state", "ready")
    assert rows.all_inner_texts() != first_page
    assert ledger.evaluate("el => el.page") == 1
    # On to the last page: the focus stays on Next, then (Next disabled) moves to Previous
    # instead of being lost.
    nxt = ledger.locator("[data-action=next]")
    for _ in range(20):
        now = keys.focused() or {}
        if nxt.is_disabled():
            break
        assert now.get("host") == "creditd-ledger" and now.get("focus") == "next", now
        shown = ledger.evaluate("el => el.page")
        page.keyboard.press("Enter")
        expect(ledger.locator("[part~=pager]")).to_contain_text(f"Page {shown + 2}")
    assert now.get("host") == "creditd-ledger" and now.get("focus") == "prev", now
    keys.check_ring(now)
    # Every stop on the way had a focus ring (checked at each press); the widgets' own
    # controls were among them.
    hosts = {v["host"] for v in keys.visited}
    assert {"creditd-usage-chart", "creditd-grants", "creditd-ledger"} <= hosts, hosts


def test_the_console_with_the_keyboard_only(server, api, uid, page) -> None:
    acct = seed_account(api, uid, name="Katherine Johnson", amount=100,
                        currency_name=f"Keyboard credits {uid('k')}")
    page.goto(f"{server.url}/console")
    keys = Keyboard(page)
    # Signing in: the key field has the focus on arrival.
    expect(page.get_by_test_id("api-key")).to_be_focused()
    page.keyboard.type(KEY)
    keys.tab_to(lambda f: f["testid"] == "sign-in")
    page.keyboard.press("Enter")
    # Then the search field has it.
    expect(page.get_by_test_id("customer-search")).to_be_focused()
    page.keyboard.type(acct.customer)
    page.keyboard.press("Enter")
    expect(page.get_by_test_id("customer-list-status")).to_contain_text(acct.customer)
    expect(page.get_by_test_id("customer-row")).to_have_count(1)
    keys.tab_to(lambda f: f["testid"] == "customer-row")
    page.keyboard.press("Enter")
    expect(page.get_by_test_id("customer-title")).to_have_text("Katherine Johnson")
    wait_widgets(page)
    # The grant form, field by field.
    currency = keys.tab_to(lambda f: f["id"] == "grant-currency")
    assert currency
    select = page.get_by_test_id("grant-currency")
    for _ in range(200):
        if select.input_value() == acct.currency:
            break
        page.keyboard.press("ArrowDown")
    assert select.input_value() == acct.currency
    keys.tab_to(lambda f: f["id"] == "grant-amount")
    page.keyboard.type("42.125")
    keys.tab_to(lambda f: f["id"] == "grant-type-promotional")
    page.keyboard.press("ArrowLeft")  # the radio group: Paid
    expect(page.get_by_test_id("grant-type-paid")).to_be_checked()
    keys.tab_to(lambda f: f["id"] == "grant-reason")
    page.keyboard.type("Keyboard top-up")
    keys.tab_to(lambda f: f["testid"] == "grant-submit")
    with page.expect_response(lambda r: r.request.method == "POST" and urlsplit(r.url).path
                              == "/api/v1/credits/grants") as answer:
        page.keyboard.press("Enter")
    assert answer.value.status == 200, answer.value.text()
    expect(page.get_by_test_id("grant-message")).to_contain_text("Granted")
    expect(page.locator("creditd-balance data.amount")).to_have_attribute("value", "142.125")
    [made] = [g for g in api.grants(acct.customer) if g["displayName"] == "Keyboard top-up"]
    assert (made["amount"], made["grantType"]) == (Decimal("42.125"), "PAID")


# -- screen readers --------------------------------------------------------------------------


def test_the_portal_for_screen_readers(server, api, uid, page) -> None:
    acct = _rich_portal(server, api, uid, page)
    # The balance figure is in a live region: a consumption is announced.
    figure = page.locator("creditd-balance data.amount").first
    live = figure.evaluate("""el => { const r = el.closest('[aria-live]');
        return r && {live: r.getAttribute('aria-live'), atomic: r.getAttribute('aria-atomic')}; }""")
    assert live and live["live"] in ("polite", "assertive"), live
    before = Decimal(figure.get_attribute("value"))
    api.consume(acct.customer, acct.currency, "1.5")
    expect(figure).to_have_attribute("value", str(before - Decimal("1.5")))
    # Every table has a name (its caption or a label).
    names = page.evaluate("""() => {
      const out = [];
      const walk = root => root.querySelectorAll('*').forEach(el => {
        if (el.tagName === 'TABLE') out.push((el.caption && el.caption.textContent.trim())
            || el.getAttribute('aria-label') || el.getAttribute('aria-labelledby') || '');
        if (el.shadowRoot) walk(el.shadowRoot);
      });
      walk(document);
      return out;
    }""")
    assert len(names) == 3 and all(names), names  # grants, ledger, the chart's numbers
    expect(page.get_by_role("table", name="Credit grants")).to_be_attached()
    expect(page.get_by_role("table", name="Credit ledger, newest first")).to_be_attached()
    expect(page.get_by_role("table", name=re.compile("Credits used per period"))).to_be_attached()
    # Every form control has an accessible name; the widgets' controls by theirs.
    assert len(assert_controls_named(page)) > 30
    chart = page.locator("creditd-usage-chart")
    for name in ("24 hours", "7 days", "30 days", "12 months", "Custom", "Export CSV"):
        expect(chart.get_by_role("button", name=name, exact=True)).to_have_count(1)
    expect(chart.get_by_role("combobox", name="Per")).to_have_count(1)
    expect(chart.get_by_role("combobox", name="Group by")).to_have_count(1)
    expect(chart.get_by_role("button", name=re.compile("^Show or hide API calls"))).to_have_count(1)
    ledger = page.locator("creditd-ledger")
    for name in ("From", "To"):
        expect(ledger.get_by_role("textbox", name=name, exact=True)).to_have_count(1)
    for name in ("Granted", "Consumed", "Expired", "Voided"):
        expect(ledger.get_by_role("checkbox", name=name, exact=True)).to_have_count(1)
    for name in ("Apply", "Reset", "Previous", "Next"):
        expect(ledger.get_by_role("button", name=name, exact=True)).to_have_count(1)
    grants = page.locator("creditd-grants")
    for column in ("Type", "Status", "Remaining / original", "Effective", "Expires", "Reason"):
        # The header is named by the column (repeated in every cell), its button too.
        expect(grants.get_by_role("columnheader", name=column, exact=True)).to_have_count(1)
        expect(grants.get_by_role("button", name=column, exact=True)).to_have_attribute(
            "title", f"Sort by {column}")
    expect(page.get_by_role("progressbar", name=re.compile("AI Tokens"))).to_have_count(1)


def test_the_console_for_screen_readers(server, api, uid, page) -> None:
    acct = seed_account(api, uid, name="Grace Hopper", amount=100)
    page.goto(f"{server.url}/console")
    expect(page.get_by_role("textbox", name="API key")).to_be_focused()
    assert_controls_named(page)
    page.get_by_role("textbox", name="API key").fill(KEY)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("searchbox", name="Find a customer").fill(acct.customer)
    page.get_by_role("button", name="Search", exact=True).click()
    page.get_by_role("button", name=f"Grace Hopper {acct.customer}").click()
    expect(page.get_by_role("heading", name="Grace Hopper", level=1)).to_be_visible()
    wait_widgets(page)
    assert len(assert_controls_named(page)) > 40
    form = page.get_by_test_id("grant-form")
    for role, name in (("combobox", "Credit type"), ("textbox", "Amount"),
                       ("spinbutton", "Priority"), ("radio", "Paid"), ("radio", "Promotional"),
                       ("textbox", "Reason"), ("textbox", "Effective from (optional)"),
                       ("textbox", "Expires (optional)"), ("textbox", "Cost"),
                       ("textbox", "Currency"), ("textbox", "Comment (optional, internal)"),
                       ("textbox", "Resource (optional)"),
                       ("checkbox", "Wait for payment confirmation"),
                       ("button", "Grant credits"), ("button", "Clear")):
        expect(form.get_by_role(role, name=name, exact=True)).to_have_count(1)
    expect(page.get_by_role("table", name=re.compile("^Grants of Grace Hopper"))).to_be_visible()
    # Results are announced: the live region says who is shown.
    expect(page.get_by_test_id("announcer")).to_have_text(re.compile("Showing Grace Hopper"))
