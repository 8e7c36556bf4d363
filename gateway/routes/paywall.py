"""The paywall: `GET /api/v1/paywall`, what a pricing page shows, with the field names of
Stigg's GraphQL `Paywall` (query GetPaywall; the Edge `paywall.json` answers the same).

Query: `productId`, `billingCountryCode`, `customerId`, `resourceId`, `includeHiddenPlans`,
`fetchAllCountriesPrices` (GetPaywallInput). Plans are the latest published versions of
live (not archived) plans, hidden ones only when asked, in creation order. Prices are those
for `billingCountryCode` where the plan has some for that country, else its default
(country-less) prices; `fetchAllCountriesPrices` lists every country's. GraphQL's `id`
(a UUID there) and `refId` are both the plan's own id here.
"""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get

from engine.domain.paywall import (
    Paywall,
    PaywallQuery,
    paywall,
)
from gateway.context import domain, environment, ok
from gateway.errors import bad_input
from gateway.shapes.catalog import features_by_id, plan_json, point_json, product_json
from gateway.shapes.customers import customer_json

__all__ = ["ROUTES", "paywall_json"]

_SYMBOLS = {"usd": "$", "eur": "€", "gbp": "£", "jpy": "¥", "inr": "₹", "cad": "CA$",
            "aud": "A$", "chf": "CHF", "brl": "R$", "cny": "CN¥", "krw": "₩", "sek": "kr",
            "nok": "kr", "dkk": "kr", "pln": "zł", "ils": "₪", "mxn": "MX$"}


def paywall_json(found: Paywall, *, subscriptions: list[dict[str, Any]] | None = None,
                 coupon: dict[str, Any] | None = None,
                 promotional_entitlements: list[dict[str, Any]] | None = None,
                 ) -> dict[str, Any]:
    """The paywall in the field names of Stigg's GraphQL `Paywall`. The customer's
    running subscriptions, coupon and promotional entitlements as gateway.shapes builds
    them when given (GraphQL's answer shows them whole); else its subscriptions name their
    plan and add-ons by id."""
    q = found.query
    products = {pid: product_json(pid, doc) for pid, doc in found.products.items()}
    plans: list[dict[str, Any]] = []
    points: list[dict[str, Any]] = []
    currencies: list[str] = []
    for view in found.plans:
        plan = plan_json(view, products, q.country, q.all_countries)
        plans.append(plan)
        prices = plan["prices"]
        currencies += [p["price"]["currency"] for p in prices if p["price"]]
        currencies += [t["unitPrice"]["currency"] for p in prices for t in p["tiers"] or ()
                       if t["unitPrice"]]
        by_id = features_by_id(plan["entitlements"], view.plan)
        points += [point_json(p, by_id) for p in view.points]
    code = (currencies[0] if currencies else "USD").upper()
    customer, active = (None, None) if found.customer is None else customer_json(
        found.customer, subscriptions=subscriptions, coupon=coupon,
        promotional_entitlements=promotional_entitlements)
    return {
        "__typename": "Paywall",
        "plans": plans,
        "currency": {"__typename": "PaywallCurrency", "code": code,
                     "symbol": _SYMBOLS.get(code.lower(), code)},
        "configuration": None,
        "customer": customer,
        "activeSubscriptions": active,
        "resource": None if q.resource_id is None else {"__typename": "CustomerResource",
                                                        "resourceId": q.resource_id},
        "paywallCalculatedPricePoints": points,
    }


def _flag(value: str | None, field: str) -> bool:
    if value is None:
        return False
    lowered = value.strip().lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0", ""):
        return False
    raise bad_input("must be true or false", field)


@get("/api/v1/paywall")
async def get_paywall(request: Request) -> Response:
    query = request.query_params
    return ok(paywall_json(await paywall(domain(request), environment(request), PaywallQuery(
        product_id=query.get("productId") or None,
        country=query.get("billingCountryCode") or None,
        customer_id=query.get("customerId") or None,
        resource_id=query.get("resourceId") or None,
        include_hidden=_flag(query.get("includeHiddenPlans"), "includeHiddenPlans"),
        all_countries=_flag(query.get("fetchAllCountriesPrices"), "fetchAllCountriesPrices")))))


ROUTES = [get_paywall]
