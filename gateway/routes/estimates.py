"""Subscription estimates: what a new subscription or a change would cost, without making it.

- `POST /api/v1/subscriptions/preview` — the REST contract's body; the answer holds the
  REST fields (`immediateInvoice`, `recurringInvoice`, `billingPeriodRange`, `freeItems`,
  `isPlanDowngrade`, `hasScheduledUpdates`) and, in the same `data`, the GraphQL
  `SubscriptionPreview` fields (`subTotal`, `totalExcludingTax`, `total`, `discountAmount`,
  `taxDetails`, `tax`, `discount`, `subscription`, `proration`, `credits`).
- `POST /api/v1/subscriptions/estimate` — GraphQL `EstimateSubscriptionInput` (camelCase,
  add-ons as `{addonId, quantity}`) → the same answer.
- `POST /api/v1/subscriptions/estimate-update` — GraphQL `EstimateSubscriptionUpdateInput`
  (`subscriptionId`, new add-ons / quantities / coupon) → the same answer, with `proration`.

The rules are engine/domain/estimates.py's (what is priced, coupons, tax); this module
maps its `Estimate` to both answer shapes.
GraphQL-shaped `Money` carries the currency as the GraphQL enum spells it (`USD`); REST
invoices carry it lowercase (`usd`).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from litestar import Request, Response, post

from engine.billing.pricing import Coupon, Invoice
from engine.domain import estimates
from engine.domain.estimates import EstimateBody, EstimateUpdateBody, PreviewBody
from gateway.context import domain, environment, ok
from gateway.openapi import request_body
from gateway.wire import decode_body, iso

__all__ = ["ROUTES", "money_json", "preview_json"]

_BASE = "/api/v1/subscriptions"


def money_json(amount: Decimal, currency: str) -> dict[str, Any]:
    return {"amount": amount, "currency": currency.upper()}


def _range(start: int, end: int) -> dict[str, Any]:
    return {"start": iso(start), "end": iso(end)}


def _discount_json(coupon: Coupon | None, currency: str) -> dict[str, Any] | None:
    if coupon is None:
        return None
    return {"name": coupon.name, "type": coupon.type, "value": coupon.value(currency),
            "durationType": coupon.duration, "durationInMonths": coupon.duration_in_months}


def _tax_details(inv: Invoice, country: str | None) -> dict[str, Any] | None:
    if inv.tax_rate is None:
        return None
    return {"displayName": f"Tax ({country.upper()})" if country else "Tax",
            "percentage": inv.tax_rate, "inclusive": False}


def _rest_invoice(inv: Invoice, start: int, end: int) -> dict[str, Any]:
    coupon = inv.coupon
    return {
        "subTotal": inv.sub_total, "total": inv.total, "tax": inv.tax,
        "currency": inv.currency, "billingPeriodRange": _range(start, end),
        "discount": inv.discount,
        "discountDetails": None if coupon is None else {
            "code": coupon.code,
            "percentage": coupon.percent_off,
            "fixedAmount": None if coupon.type != "FIXED" else coupon.value(inv.currency)},
        "discounts": [] if coupon is None else [{
            "amount": inv.discount, "currency": inv.currency,
            "description": coupon.name or coupon.code or "Discount"}],
        "lines": [{"description": ln.description, "quantity": ln.quantity,
                   "unitPrice": ln.unit_price, "subTotal": ln.sub_total,
                   "currency": ln.currency} for ln in inv.lines],
    }


def _price_preview(inv: Invoice, country: str | None) -> dict[str, Any]:
    c = inv.currency
    return {"subTotal": money_json(inv.sub_total, c),
            "totalExcludingTax": money_json(inv.total_excluding_tax, c),
            "total": money_json(inv.total, c), "tax": money_json(inv.tax, c),
            "discountAmount": money_json(inv.discount, c) if inv.coupon else None,
            "taxDetails": _tax_details(inv, country),
            "discount": _discount_json(inv.coupon, c)}


def preview_json(e: estimates.Estimate) -> dict[str, Any]:
    """Stigg's GraphQL `SubscriptionPreview` of an estimate: the immediate charge, with
    `subscription` the recurring one (also part of the REST answers)."""
    return {
        **_price_preview(e.now, e.country),
        "billingPeriodRange": _range(*e.now_range),
        "subscription": _price_preview(e.next, e.country),
        "proration": None if e.proration is None else _proration_json(e.proration),
        "isPlanDowngrade": e.is_downgrade,
        "hasScheduledUpdates": e.scheduled,
        "credits": None,
    }


def _answer(e: estimates.Estimate) -> dict[str, Any]:
    return {
        # REST SubscriptionPreview
        "immediateInvoice": _rest_invoice(e.now, *e.now_range),
        "recurringInvoice": _rest_invoice(e.next, *e.next_range),
        "freeItems": e.free_items,
        # GraphQL SubscriptionPreview (billingPeriodRange, isPlanDowngrade and
        # hasScheduledUpdates are REST's too)
        **preview_json(e),
    }


def _proration_json(p: Any) -> dict[str, Any]:
    c = p.currency
    return {"prorationDate": iso(p.proration_date_ms), "credit": money_json(p.credit, c),
            "debit": money_json(p.debit, c), "netAmount": money_json(p.net_amount, c)}


@post(_BASE + "/preview", opt=request_body(PreviewBody))
async def preview_subscription(request: Request) -> Response:
    body = await decode_body(request, PreviewBody)
    return ok(_answer(await estimates.estimate_new(domain(request), environment(request), body)))


@post(_BASE + "/estimate", opt=request_body(EstimateBody))
async def estimate_subscription(request: Request) -> Response:
    body = await decode_body(request, EstimateBody)
    return ok(_answer(await estimates.estimate_new(domain(request), environment(request), body)))


@post(_BASE + "/estimate-update", opt=request_body(EstimateUpdateBody))
async def estimate_subscription_update(request: Request) -> Response:
    body = await decode_body(request, EstimateUpdateBody)
    return ok(_answer(await estimates.estimate_update(domain(request), environment(request),
                                                      body)))


ROUTES = [preview_subscription, estimate_subscription, estimate_subscription_update]
