"""The operator console (`/console`) in Chromium: signing in with an API key that never
enters a URL, finding a customer, granting and voiding credits, and a customer's portal
open in another page showing the change live."""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal

from tests.portal.helpers import (
    KEY,
    XSS,
    amount_text,
    expect,
    open_portal,
    seed_account,
    wait_widgets,
)


def sign_in(page, server, key: str = KEY) -> None:
    page.goto(f"{server.url}/console")
    page.get_by_test_id("api-key").fill(key)
    page.get_by_test_id("sign-in").click()


def pick_customer(page, search: str, name: str) -> None:
    page.get_by_test_id("customer-search").fill(search)
    page.get_by_test_id("customer-search-submit").click()
    page.get_by_test_id("customer-list").get_by_text(name, exact=False).first.click()
    expect(page.get_by_test_id("customer-title")).to_have_text(name)


def _is_grant_post(response) -> bool:
    return (response.request.method == "POST"
            and response.url.split("?")[0].endswith("/api/v1/credits/grants"))


def test_the_console_grants_and_voids_and_the_portal_shows_it_live(
        server, api, uid, new_page, shot) -> None:
    acct = seed_account(api, uid, name="Grace Hopper", amount=100)
    portal = open_portal(new_page(), server, api.token(acct.customer))
    balance = portal.locator("creditd-balance")
    expect(balance).to_contain_text(amount_text(100))

    console = new_page()
    sign_in(console, server)
    expect(console.get_by_test_id("sign-out")).to_be_visible()
    # The key is kept in the tab's session storage, never in a URL or in local storage.
    assert KEY not in console.url
    assert KEY in console.evaluate("() => Object.values(sessionStorage)")
    assert KEY not in console.evaluate("() => Object.values(localStorage)")

    pick_customer(console, acct.customer, "Grace Hopper")
    wait_widgets(console)
    expect(console.locator("creditd-balance")).to_contain_text(amount_text(100))
    assert KEY not in console.url

    console.get_by_test_id("grant-currency").select_option(acct.currency)
    console.get_by_test_id("grant-amount").fill("42.125")
    console.get_by_test_id("grant-type-paid").check()
    console.get_by_test_id("grant-reason").fill("Goodwill top-up")
    console.get_by_test_id("grant-cost-amount").fill("4.21")
    console.get_by_test_id("grant-comment").fill("ticket 1234")
    with console.expect_response(_is_grant_post) as answer:
        console.get_by_test_id("grant-submit").click()
    assert answer.value.status == 200, answer.value.text()
    assert answer.value.request.header_value("idempotency-key")
    # The customer's portal, in another page, shows it live (no reload).
    expect(balance).to_contain_text(amount_text("142.125"), timeout=1000)
    expect(portal.locator("creditd-grants")).to_contain_text("Goodwill top-up")
    [made] = [g for g in api.grants(acct.customer) if g["displayName"] == "Goodwill top-up"]
    assert (made["amount"], made["grantType"], made["cost"]) == (
        Decimal("42.125"), "PAID", {"amount": Decimal("4.21"), "currency": "usd"})
    assert made["comment"] == "ticket 1234"
    expect(console.get_by_test_id("grants-body")).to_contain_text("Goodwill top-up")
    shot(console, "console", full_page=True)

    # Void it, through the confirmation step: the portal follows.
    row = console.get_by_test_id("grants-body").locator("tr", has_text="Goodwill top-up")
    row.get_by_role("button", name=re.compile("void", re.IGNORECASE)).click()
    dialog = console.get_by_test_id("void-dialog")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("Goodwill top-up")
    with console.expect_response(lambda r: r.request.method == "POST"
                                 and "/void" in r.url) as voided:
        console.get_by_test_id("void-confirm").click()
    assert voided.value.status == 200, voided.value.text()
    expect(balance).to_contain_text(amount_text(100), timeout=1000)
    assert [g["status"] for g in api.grants(acct.customer)
            if g["displayName"] == "Goodwill top-up"] == ["VOIDED"]

    # Signing out forgets the key.
    console.get_by_test_id("sign-out").click()
    expect(console.get_by_test_id("api-key")).to_be_visible()
    assert KEY not in console.evaluate("() => Object.values(sessionStorage)")
    assert portal.dialogs == [] and console.dialogs == []


def test_a_wrong_key_is_refused(server, page) -> None:
    sign_in(page, server, "not-a-key")
    expect(page.get_by_test_id("sign-in-error")).not_to_be_empty()
    expect(page.get_by_test_id("customer-search")).not_to_be_visible()
    assert "not-a-key" not in page.evaluate("() => Object.values(sessionStorage)")


def test_the_console_renders_names_as_text(server, api, uid, page) -> None:
    acct = seed_account(api, uid, name=XSS, grant_name=XSS, currency_name=XSS)
    sign_in(page, server)
    pick_customer(page, acct.customer, XSS)
    wait_widgets(page)
    expect(page.get_by_test_id("grants-body")).to_contain_text(XSS)
    expect(page.locator("creditd-grants")).to_contain_text(XSS)
    # No element was made from the name, so nothing could run (and no dialog did).
    assert page.locator('img[src="x"]').count() == 0
    assert page.dialogs == []


def test_an_api_refusal_is_shown_at_its_field(server, api, uid, page) -> None:
    acct = seed_account(api, uid, name="Edsger Dijkstra")
    sign_in(page, server)
    pick_customer(page, acct.customer, "Edsger Dijkstra")
    page.get_by_test_id("grant-currency").select_option(acct.currency)
    page.get_by_test_id("grant-amount").fill("5")
    page.get_by_test_id("grant-reason").fill("Too late")
    # An expiry in the past: the form sends it, the server refuses it (field expireAt).
    past = (api.now() - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%S")
    page.get_by_test_id("grant-expire-at").fill(past)
    with page.expect_response(_is_grant_post) as answer:
        page.get_by_test_id("grant-submit").click()
    assert answer.value.status == 400, answer.value.text()
    assert answer.value.json()["field"] == "expireAt"
    expect(page.get_by_test_id("grant-expire-at-error")).to_contain_text(
        re.compile("future", re.IGNORECASE))
    expect(page.get_by_test_id("grant-expire-at")).to_have_attribute("aria-invalid", "true")
    assert [g["displayName"] for g in api.grants(acct.customer)] == ["Starter credits"]
