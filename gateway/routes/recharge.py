"""Auto-recharge settings: `GET /api/v1/credits/auto-recharge` (the contract) and its REST
counterpart for GraphQL's `saveAutoRechargeSettings`, `PUT /api/v1/credits/auto-recharge`.

The settings live in the customer's actor (engine.core.recharge); the top-up price comes
from the currency (`topUp` on custom currencies) and is captured when the settings are
saved: a new price applies from the next save. docs/auto-recharge.md.
"""

from __future__ import annotations

import hashlib
from decimal import Decimal
from typing import Annotated, Any, Literal

import msgspec
from litestar import Request, Response, get, put
from litestar.params import QueryParameter

from engine.core.commands import AutoRechargeReply
from engine.core.model import AutoRecharge
from engine.domain import recharge
from engine.domain.constraints import Reference
from gateway.context import domain, environment, ok
from gateway.errors import bad_input
from gateway.openapi import request_body
from gateway.wire import amount_in, amount_out, decode_body, iso

__all__ = ["ROUTES"]

CustomerQ = Annotated[str | None, QueryParameter(name="customerId")]
CurrencyQ = Annotated[str | None, QueryParameter(name="currencyId")]
ResourceQ = Annotated[str | None, QueryParameter(name="resourceId")]


class SaveBody(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    customer_id: Reference
    currency_id: Reference
    is_enabled: bool
    threshold_type: Literal["CREDIT_AMOUNT", "DOLLAR_AMOUNT"] = "CREDIT_AMOUNT"
    threshold_value: Decimal | None = None
    target_balance: Decimal | None = None
    max_spend_limit: Decimal | None = None
    grant_expiration_period: Literal["1_MONTH", "1_YEAR"] = "1_MONTH"
    resource_id: str | None = None
    environment_id: str | None = None  # GraphQL's input has it; the key decides


def _settings_id(customer_id: str, currency_id: str, resource_id: str | None) -> str:
    digest = hashlib.blake2b(f"{customer_id}\0{currency_id}\0{resource_id or ''}".encode(),
                             digest_size=8).hexdigest()
    return f"arc_{digest}"


def recharge_json(customer_id: str, currency_id: str, resource_id: str | None,
                  reply: AutoRechargeReply) -> dict[str, Any]:
    r: AutoRecharge | None = reply.settings
    if r is None:  # the contract: defaults when nothing is stored
        return {"id": None, "customerId": customer_id, "currencyId": currency_id,
                "resourceId": resource_id, "isEnabled": False,
                "thresholdType": "CREDIT_AMOUNT", "thresholdValue": 0, "targetBalance": 0,
                "maxSpendLimit": None, "grantExpirationPeriod": "1_MONTH",
                "currentMonthlySpend": 0, "createdAt": None, "updatedAt": None,
                "inFlight": None, "lastFailure": None, "topUpPrice": None}
    return {
        "id": _settings_id(customer_id, currency_id, resource_id),
        "customerId": customer_id,
        "currencyId": currency_id,
        "resourceId": resource_id,
        "isEnabled": r.enabled,
        "thresholdType": r.threshold_type,
        "thresholdValue": amount_out(r.threshold_value),
        "targetBalance": amount_out(r.target_balance),
        "maxSpendLimit": None if r.max_spend is None else amount_out(r.max_spend),
        "grantExpirationPeriod": r.expiration,
        "currentMonthlySpend": amount_out(reply.current_monthly_spend),
        "createdAt": iso(r.created_at),
        "updatedAt": iso(r.updated_at),
        # Extensions: the recharge being paid now, why the last one failed, the price.
        "inFlight": None if r.in_flight is None else {
            "grantId": r.in_flight, "cost": amount_out(r.in_flight_cost)},
        "lastFailure": r.failure,
        "topUpPrice": {"amount": amount_out(r.price), "currency": r.price_currency},
    }


@get("/api/v1/credits/auto-recharge")
async def get_auto_recharge(request: Request, customer_id: CustomerQ = None,
                            currency_id: CurrencyQ = None,
                            resource_id: ResourceQ = None) -> Response:
    if not customer_id:
        raise bad_input("is required", "customerId")
    if not currency_id:
        raise bad_input("is required", "currencyId")
    reply = await recharge.get_settings(domain(request), environment(request), customer_id,
                                        currency_id, resource_id)
    return ok(recharge_json(customer_id, currency_id, resource_id, reply))


@put("/api/v1/credits/auto-recharge", opt=request_body(SaveBody))
async def save_auto_recharge(request: Request) -> Response:
    body = await decode_body(request, SaveBody)
    if body.environment_id is not None and body.environment_id != environment(request):
        raise bad_input("does not match the API key's environment", "environmentId")
    if body.threshold_value is None:
        raise bad_input("is required", "thresholdValue")
    if body.target_balance is None:
        raise bad_input("is required", "targetBalance")
    reply = await recharge.save_settings(domain(request), environment(request),
                                         recharge.RechargeInput(
        customer_id=body.customer_id, currency_id=body.currency_id, enabled=body.is_enabled,
        threshold_type=body.threshold_type,
        threshold_value=amount_in(body.threshold_value, "thresholdValue"),
        target_balance=amount_in(body.target_balance, "targetBalance"),
        max_spend=None if body.max_spend_limit is None
        else amount_in(body.max_spend_limit, "maxSpendLimit"),
        expiration=body.grant_expiration_period, resource_id=body.resource_id))
    return ok(recharge_json(body.customer_id, body.currency_id, body.resource_id, reply))


ROUTES = [get_auto_recharge, save_auto_recharge]
