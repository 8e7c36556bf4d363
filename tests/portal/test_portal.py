"""The customer portal (`/portal?token=…`) in Chromium: what a customer token shows, live,
exactly as the API gives it, and nothing else."""

from __future__ import annotations

import csv
import os
import re
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.portal.helpers import (
    DEEP_TEXT,
    DOCS,
    WIDGETS,
    XSS,
    PlaywrightTimeout,
    amount_text,
    dec,
    expect,
    new_id,
    open_portal,
    seed_account,
    seed_grants_every_state,
    seed_history,
    wait_widgets,
)

# How the grants table names each state (DEPLETED: an ACTIVE grant with nothing left).
STATUS_WORDS = {"ACTIVE": "active", "SCHEDULED": "scheduled", "EXPIRED": "expired",
                "VOIDED": "voided", "DEPLETED": "depleted",
                "PAYMENT_PENDING": "payment pending"}


def test_portal_shows_the_balance_and_takes_the_token_out_of_the_address_bar(
        server, api, uid, page, shot) -> None:
    acct = seed_account(api, uid, amount="1234.56789")
    token = api.token(acct.customer)
    open_portal(page, server, token, "&lang=en")
    card = page.locator("creditd-balance")
    expect(card).to_contain_text(amount_text("1234.56789"))
    expect(card).to_contain_text("tokens")  # the currency's unit name
    # Gone from the address bar (other parameters kept), kept for a reload in this tab.
    assert "token" not in parse_qs(urlsplit(page.url).query), page.url
    assert parse_qs(urlsplit(page.url).query).get("lang") == ["en"], page.url
    assert token in page.evaluate("() => Object.values(sessionStorage)")
    page.reload()
    wait_widgets(page)
    expect(page.locator("creditd-balance")).to_contain_text(amount_text("1234.56789"))
    # Served with its CSP, and nothing on the page broke it.
    assert not [e for e in page.errors if "Content Security Policy" in e], page.errors
    shot(page.locator("creditd-balance"), "widget-balance")


def test_a_consumption_changes_the_balance_on_screen_within_a_second(
        server, api, uid, page) -> None:
    acct = seed_account(api, uid, amount=500)
    open_portal(page, server, api.token(acct.customer))
    card = page.locator("creditd-balance")
    expect(card).to_contain_text(amount_text(500))
    page.evaluate("() => { window.__sameDocument = true; }")
    for amount, left in (("12.5", "487.5"), ("0.00001", "487.49999"), ("87.49999", "400")):
        api.consume(acct.customer, acct.currency, amount)
        # From the REST answer on: the feed's frame, drawn, within 1,000 ms (no reload).
        expect(card).to_contain_text(amount_text(left), timeout=1000)
    assert page.evaluate("() => window.__sameDocument") is True, "the page was reloaded"


def test_low_balance_and_overdraft_are_shown_live(server, api, uid, page) -> None:
    """The pool's own low line (PUT /api/v1/credits/pools) warns on the card; a soft-limit
    pool consumed past zero shows the overdraft, live."""
    acct = seed_account(api, uid, amount=100)
    r = api.http.put("/api/v1/credits/pools", json={
        "customerId": acct.customer, "currencyId": acct.currency, "hardLimit": False,
        "lowBalanceThreshold": 30})
    assert r.status_code == 200, r.text
    open_portal(page, server, api.token(acct.customer))
    card = page.locator("creditd-balance .card[data-currency-id]")
    expect(card).not_to_have_attribute("data-low", "")
    api.consume(acct.customer, acct.currency, "70")  # 30 left: at the line
    expect(card).to_have_attribute("data-low", "", timeout=1000)
    api.consume(acct.customer, acct.currency, "42.5")  # 12.5 below zero
    expect(card).to_have_attribute("data-overdraft", "", timeout=1000)
    expect(card).to_contain_text(amount_text("-12.5"))
    expect(card).to_contain_text(amount_text("12.5"))  # "Overdrawn by 12.5 tokens"


@pytest.fixture(scope="module")
def history_account(api):
    """A customer with ten days of usage (two features, direct consumption, a `user`
    dimension), shared by the chart and CSV tests."""
    acct = seed_account(api, new_id, amount=5000)
    return acct, seed_history(api, acct, new_id, days=10)


def _usage_requests(page) -> list[str]:
    return [u for u in page.requested if urlsplit(u).path == "/api/v1/credits/usage"]


def _record_requests(page) -> None:
    page.requested = []
    page.on("request", lambda r: page.requested.append(r.url))


def _chart_model(page) -> dict:
    """What the chart element holds once drawn: the series as the API gave them (amounts
    as exact strings), the Chart.js datasets (labels and bar values), the legend's items
    and the visually hidden table (each cell's <data value> when it has one)."""
    chart = page.locator("creditd-usage-chart")
    page.wait_for_function("""el => el.getAttribute('data-state') === 'ready' && el.series
        && el.chart && el.chart.data.datasets.length === el.series.length""",
                           arg=chart.element_handle())
    try:  # Chart.js redraws after the data arrives: wait (briefly) for the bars to follow
        page.wait_for_function("""el => el.chart.data.datasets.every((d, i) =>
            d.data.length === el.series[i].points.length && d.data.every((v, j) =>
                Number(v) === Number(el.series[i].points[j].value)))""",
                               arg=chart.element_handle(), timeout=3000)
    except PlaywrightTimeout:
        pass  # the comparisons below say what differs
    return chart.evaluate("""el => {
      const root = el.shadowRoot || el;
      const cell = c => { const d = c.querySelector('data');
                          return {value: d ? d.value : null, text: c.textContent.trim()}; };
      const table = root.querySelector('[part~=table]');
      return {
        series: el.series,
        labels: el.chart.data.labels.map(String),
        datasets: el.chart.data.datasets.map(d => ({label: String(d.label),
            data: d.data.map(v => v === null ? null : String(typeof v === 'object' ? v.y : v))})),
        legend: [...root.querySelectorAll('[part~=legend] li')].map(li => li.textContent),
        head: [...table.tHead.rows[0].cells].slice(1).map(c => c.textContent.trim()),
        body: [...table.tBodies[0].rows].map(r => [...r.cells].slice(1).map(cell)),
        foot: [...table.tFoot.rows[0].cells].slice(1).map(cell),
      };
    }""")


def _series_key(s: dict, by_feature: bool) -> str | None:
    return s["featureId"] if by_feature else ",".join(t["value"] for t in s["tags"])


def _check_chart(page, api, expected_totals: dict) -> dict:
    """The chart's series, bars, legend totals and hidden table equal the analytics API's
    answer to the very query the widget made; the API's totals equal what was seeded."""
    model = _chart_model(page)
    query = urlsplit(_usage_requests(page)[-1]).query
    answer = api.usage(query)
    series = answer["series"]
    by_feature = "featureId" in parse_qs(query).get("groupBy", ["featureId"])[0]
    # The seeded history is what the API reports ...
    assert {_series_key(s, by_feature): dec(s["totalCredits"]) for s in series} == \
        {k: v for k, v in expected_totals.items() if v}
    # ... and what the element holds, digit for digit.
    assert len(model["series"]) == len(series)
    for mine, theirs in zip(model["series"], series, strict=True):
        assert (mine["featureId"], mine["tags"]) == (theirs["featureId"], theirs["tags"])
        assert str(mine["totalCredits"]) == str(theirs["totalCredits"])
        assert [(p["timestamp"], str(p["value"]), str(p["eventCount"])) for p in mine["points"]] \
            == [(p["timestamp"], str(p["value"]), str(p["eventCount"])) for p in theirs["points"]]
    # The bars: one stacked dataset per series, one bar per period, the API's values.
    assert len(model["labels"]) == len(series[0]["points"])
    assert len(model["datasets"]) == len(series)
    for ds, s in zip(model["datasets"], series, strict=True):
        assert [dec(v) if v is not None else None for v in ds["data"]] == \
            [p["value"] for p in s["points"]], ds["label"]
        name = s["featureName"] if by_feature else _series_key(s, False)
        if name:
            assert name in ds["label"], (name, ds["label"])
    # The legend: each series' total for the range, as the API gave it.
    assert len(model["legend"]) == len(series)
    for item, s in zip(model["legend"], series, strict=True):
        assert amount_text(s["totalCredits"]).search(item), (s["totalCredits"], item)
        name = s["featureName"] if by_feature else _series_key(s, False)
        if name:
            assert name in item, (name, item)
    # The hidden table (screen readers): a column per series, a row per period, totals.
    assert len(model["body"]) == len(series[0]["points"])
    for j, row in enumerate(model["body"]):
        for cell, s in zip(row, series, strict=True):
            value = s["points"][j]["value"]
            assert cell["value"] is None or cell["value"] == str(value), (cell, value)
            assert amount_text(value).search(cell["text"]), (cell, value)
    for cell, s in zip(model["foot"], series, strict=True):
        assert cell["value"] is None or cell["value"] == str(s["totalCredits"])
        assert amount_text(s["totalCredits"]).search(cell["text"]), cell
    return answer


def test_the_chart_shows_the_analytics_api_numbers(server, api, history_account, page,
                                                   shot) -> None:
    acct, history = history_account
    _record_requests(page)
    open_portal(page, server, api.token(acct.customer))
    chart = page.locator("creditd-usage-chart")
    expect(chart).to_have_attribute("data-state", "ready")
    _check_chart(page, api, history.by_feature)
    shot(chart, "widget-usage-chart")
    # Per dimension value (the `user` dimension), daily buckets over a custom range.
    def regrouped(response) -> bool:
        q = parse_qs(urlsplit(response.url).query)
        return (urlsplit(response.url).path == "/api/v1/credits/usage"
                and q.get("groupBy") == ["user"] and "startDate" in q)

    with page.expect_response(regrouped):
        chart.evaluate("""(el, a) => { el.setAttribute('granularity', 'day');
            el.setAttribute('start', a.start); el.setAttribute('end', a.end);
            el.setAttribute('group-by', 'user'); el.setAttribute('range', 'custom'); }""",
                       {"start": history.start.isoformat(), "end": history.end.isoformat()})
    page.wait_for_function("""el => el.getAttribute('data-state') === 'ready' && el.series
        && el.series.length && el.series[0].tags.length""", arg=chart.element_handle())
    last = parse_qs(urlsplit(_usage_requests(page)[-1]).query)
    assert last.get("groupBy") == ["user"], last
    assert last.get("granularity", ["DAY"])[0].upper() == "DAY", last
    answer = _check_chart(page, api, history.by_user)
    assert len(answer["series"][0]["points"]) in (10, 11)


def test_the_csv_export_equals_the_api_series(server, api, history_account, page) -> None:
    acct, history = history_account
    _record_requests(page)
    open_portal(page, server, api.token(acct.customer))
    chart = page.locator("creditd-usage-chart")
    expect(chart).to_have_attribute("data-state", "ready")
    with page.expect_download() as download:
        chart.get_by_role("button", name=re.compile(r"csv", re.IGNORECASE)).click()
    assert download.value.suggested_filename.endswith(".csv")
    with open(download.value.path(), encoding="utf-8-sig", newline="") as f:
        rows = list(csv.reader(f))
    answer = api.usage(urlsplit(_usage_requests(page)[-1]).query)
    # One row per series and period: the API's timestamps, ids, names and numbers as sent.
    assert rows[0] == ["timestamp", "featureId", "featureName", "value", "eventCount"]
    assert rows[1:] == [[p["timestamp"], s["featureId"] or "", s["featureName"] or "",
                         str(p["value"]), str(p["eventCount"])]
                        for s in answer["series"] for p in s["points"]]
    assert sum(dec(r[3]) for r in rows[1:]) == sum(history.by_feature.values())


def test_the_grants_table_lists_every_state(server, api, uid, page, shot) -> None:
    acct = seed_account(api, uid)
    seed_grants_every_state(api, acct)
    open_portal(page, server, api.token(acct.customer))
    table = page.locator("creditd-grants")
    for state, grant in acct.grants.items():
        row = table.locator("tr", has_text=grant["displayName"])
        expect(row).to_have_count(1)
        text = row.inner_text().lower().replace("_", " ")
        assert STATUS_WORDS[state] in text, (state, text)
        if state != "ACTIVE":
            assert amount_text(grant["amount"]).search(text), (grant, text)
    depleted = table.locator("tr", has_text=acct.grants["DEPLETED"]["displayName"])
    expect(depleted).to_contain_text(re.compile(r"(?<![\d.,])0 / 5 tokens"))
    shot(table, "widget-grants")


def test_a_token_for_one_customer_shows_nothing_of_another(server, api, uid, page) -> None:
    a = seed_account(api, uid, name="Alice Appleton", grant_name="Alice's credits",
                     amount=111)
    b = seed_account(api, uid, name="Bob Brennan", grant_name="Bob's secret credits",
                     currency_name="Bob Bucks", amount="98765.4321")
    api.consume(b.customer, b.currency, "0.1234", dimensions={"user": "bob-only-user"})
    token = api.token(a.customer)
    _record_requests(page)
    # B's ids in A's URL change nothing.
    open_portal(page, server, token,
                f"&customerId={b.customer}&customer-id={b.customer}&currencyId={b.currency}")
    expect(page.locator("creditd-balance")).to_contain_text(amount_text(111))
    text = page.evaluate(DEEP_TEXT)
    for secret in (b.customer, b.name, "Bob's secret credits", "Bob Bucks", "98765",
                   "bob-only-user"):
        assert secret not in text, secret
    api_calls = [u for u in page.requested if urlsplit(u).path.startswith("/api/")]
    assert api_calls, page.requested
    for u in api_calls:
        q = parse_qs(urlsplit(u).query)
        assert q.get("customerId", [a.customer]) == [a.customer], u
    # The token itself cannot read B, from the page, over REST and over the feed.
    result = page.evaluate("""async ([token, b]) => {
        const r = await fetch('/api/v1/credits/balance?customerId=' + b,
                              {headers: {Authorization: 'Bearer ' + token}});
        const code = await new Promise(done => {
            const ws = new WebSocket(location.origin.replace('http', 'ws') +
                '/api/v1/credits/stream?customerId=' + b + '&token=' + token);
            ws.onclose = e => done(e.code);
        });
        return {status: r.status, body: await r.json(), ws: code};
    }""", [token, b.customer])
    assert result["status"] == 403 and result["body"]["field"] == "customerId", result
    assert result["ws"] == 4403, result


def test_display_names_render_as_text(server, api, uid, page) -> None:
    acct = seed_account(api, uid, name=XSS, grant_name=XSS, currency_name=XSS)
    open_portal(page, server, api.token(acct.customer))
    grants = page.locator("creditd-grants")
    expect(grants).to_contain_text(XSS)
    expect(page.locator("creditd-balance")).to_contain_text(XSS)  # the currency's name
    # No element was made from the name, so nothing could run (and no dialog did).
    assert page.locator('img[src="x"]').count() == 0
    assert page.dialogs == []
    assert page.evaluate("() => document.querySelectorAll('img[src=\"x\"]').length") == 0


def test_an_expired_token_shows_a_clear_message(server, api, uid, page) -> None:
    acct = seed_account(api, uid)
    token = api.token(acct.customer, ttl_seconds=1)
    api.move_clock(timedelta(seconds=5))
    page.goto(f"{server.url}/portal?token={token}")
    message = page.get_by_test_id("portal-message")
    expect(message).to_be_visible()
    expect(message).to_contain_text(re.compile(r"expired", re.IGNORECASE))
    assert page.locator("creditd-balance").count() == 0 or \
        not page.locator("creditd-balance").is_visible()
    assert "token" not in parse_qs(urlsplit(page.url).query)
    # A token that is not one at all: the same page, a clear message, no widget.
    page.goto(f"{server.url}/portal?token=not-a-token")
    expect(message).to_be_visible()
    assert page.locator("creditd-balance").count() == 0 or \
        not page.locator("creditd-balance").is_visible()


def test_a_token_that_expires_while_the_portal_is_open(server, api, uid, page) -> None:
    acct = seed_account(api, uid)
    open_portal(page, server, api.token(acct.customer, ttl_seconds=60))
    api.move_clock(timedelta(seconds=120))
    # The next read (a range change here) meets 401 TokenExpired: the widget reports it
    # (creditd-token-expired) and the portal says so instead of showing stale widgets.
    page.locator("creditd-usage-chart").evaluate(
        "el => el.setAttribute('range', el.getAttribute('range') === '24h' ? '7d' : '24h')")
    message = page.get_by_test_id("portal-message")
    expect(message).to_be_visible(timeout=5000)
    expect(message).to_contain_text(re.compile(r"session has expired", re.IGNORECASE))
    expect(page.locator("creditd-balance")).to_have_count(0)
    assert page.evaluate("() => Object.values(sessionStorage)") == [], "the token is forgotten"


def test_every_widget_with_a_rich_account(server, api, uid, page, shot) -> None:
    """The portal for a customer with grants in every state and ten days of usage: every
    widget shows data; one screenshot per widget (artefacts) and the page for the docs."""
    acct = seed_account(api, uid, name="Ada Lovelace", amount=5000)
    seed_grants_every_state(api, acct)
    seed_history(api, acct, uid, days=10)
    open_portal(page, server, api.token(acct.customer))
    for name in WIDGETS:
        el = page.locator(name)
        expect(el).to_have_count(1)
        shot(el, f"widget-{name.removeprefix('creditd-')}")
    expect(page.locator("creditd-ledger")).to_contain_text(re.compile(r"consum", re.IGNORECASE))
    expect(page.locator("creditd-utilization")).to_have_attribute("data-state", "ready")
    # The picture once the chart's bars have finished growing.
    page.wait_for_function("() => { const c = document.querySelector('creditd-usage-chart')"
                           ".chart; return c && !window.Chart.animator.running(c); }")
    shot(page, "portal-full", full_page=True)
    if os.environ.get("CREDITD_DOCS_SCREENSHOT") == "1":  # docs/portal.md's picture
        page.screenshot(path=str(DOCS / "portal-screenshot.png"), full_page=True)


def test_an_internal_comment_stays_out_of_the_portal(server, api, uid, page) -> None:
    """The console labels a grant's comment "optional, internal": the operator's note
    (a ticket, a reason not meant for the customer) is not shown to the customer, not even
    as a tooltip."""
    acct = seed_account(api, uid)
    api.grant(acct.customer, acct.currency, 10, display_name="Goodwill credits",
              comment="internal: churn risk, ticket 4711")
    open_portal(page, server, api.token(acct.customer))
    expect(page.locator("creditd-grants")).to_contain_text("Goodwill credits")
    assert "churn risk" not in page.evaluate(DEEP_TEXT)
