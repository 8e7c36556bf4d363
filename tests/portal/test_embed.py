"""The widgets embedded in a merchant's own page, on another origin, with nothing but a
script tag and a token: cross-origin reads, the "Add credits" hand-off, low-balance
warning, replaceable texts, a sortable and paged grants table."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from tests.portal.helpers import (
    amount_text,
    dec,
    expect,
    merchant_server,
    seed_account,
    seed_grants_every_state,
    wait_widgets,
)

HOST_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>My app</title>
<script src="{server}/widgets/creditd.js" defer></script>
<script>
  window.added = [];
  document.addEventListener('creditd-add-credits', e => window.added.push(e.detail));
  document.addEventListener('DOMContentLoaded', () => Creditd.configure({{
    texts: {{balanceTitle: 'Your wallet'}} }}));
</script>
<style>body {{ --creditd-accent: rgb(200, 0, 100); }}</style>
</head><body>
<h1>My app</h1>
<creditd-balance token="{token}" add-credits low-balance="600"></creditd-balance>
<creditd-grants token="{token}" page-size="3"></creditd-grants>
</body></html>"""


@pytest.fixture(scope="module")
def merchant() -> Iterator[tuple[str, dict[str, bytes]]]:
    """The merchant's web server, on another origin than creditd's."""
    with merchant_server() as served:
        yield served


def host(page, server, merchant, token: str) -> None:
    """Open the merchant's page embedding the widgets with `token`."""
    origin, pages = merchant
    path = f"/account-{len(pages)}"
    pages[path] = HOST_PAGE.format(server=server.url, token=token).encode()
    page.goto(origin + path)
    wait_widgets(page, ("creditd-balance", "creditd-grants"))


def test_a_widget_on_another_origin_with_a_token(server, api, uid, merchant, page, shot) -> None:
    acct = seed_account(api, uid, amount=500)
    host(page, server, merchant, api.token(acct.customer))
    balance = page.locator("creditd-balance")
    expect(balance).to_contain_text(amount_text(500))
    expect(balance).to_contain_text("Your wallet")  # a replaced text
    expect(balance).to_contain_text(re.compile("low", re.IGNORECASE))  # 500 <= 600
    button = balance.get_by_role("button", name=re.compile("add", re.IGNORECASE))
    assert "rgb(200, 0, 100)" in button.evaluate("b => getComputedStyle(b).backgroundColor")
    button.click()
    assert page.evaluate("() => window.added") == [
        {"customerId": acct.customer, "currencyId": acct.currency, "resourceId": None}]
    [b] = api.balance(acct.customer)["balances"]
    assert dec(b["currentBalance"]) == 500, "the widget moves no money"
    shot(balance, "embedded-balance")


def test_the_grants_table_sorts_and_pages(server, api, uid, merchant, page) -> None:
    acct = seed_account(api, uid)
    seed_grants_every_state(api, acct)  # 6 grants: 2 pages of 3
    host(page, server, merchant, api.token(acct.customer))
    grants = page.locator("creditd-grants")
    rows = grants.locator("tbody tr")
    expect(rows).to_have_count(3)
    seen = rows.evaluate_all("rs => rs.map(r => r.dataset.grantId)")
    grants.get_by_role("button", name=re.compile("next", re.IGNORECASE)).click()
    expect(rows).to_have_count(3)
    seen += rows.evaluate_all("rs => rs.map(r => r.dataset.grantId)")
    assert sorted(seen) == sorted(g["id"] for g in acct.grants.values())
    # Sorting by status: the header says so (aria-sort), the rows follow, both ways.
    sort = grants.locator("th", has=page.locator("button[data-sort=status]"))
    sort.get_by_role("button").click()
    expect(sort).to_have_attribute("aria-sort", "ascending")
    first = rows.evaluate_all("rs => rs.map(r => r.dataset.status)")
    sort.get_by_role("button").click()
    expect(sort).to_have_attribute("aria-sort", "descending")
    last = rows.evaluate_all("rs => rs.map(r => r.dataset.status)")
    assert first != last and first[0] != last[0], (first, last)
