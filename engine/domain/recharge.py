"""Auto-recharge settings: read and save (docs/auto-recharge.md).

The settings live in the customer's actor (engine/core/recharge.py); the price of a
credit comes from the currency's top-up price, captured when the settings are saved (a
new price applies from the next save)."""

from __future__ import annotations

from typing import Literal

import msgspec

from engine.core.commands import (
    AutoRechargeReply,
    ConfigureAutoRecharge,
    GetAutoRecharge,
    Refused,
)
from engine.domain.context import Domain, engine_id, require_currency, require_customer
from engine.domain.errors import bad_input, from_refusal

__all__ = ["RechargeInput", "get_settings", "save_settings"]


class RechargeInput(msgspec.Struct, frozen=True, kw_only=True):
    customer_id: str
    currency_id: str
    enabled: bool
    threshold_value: int  # units (credits, or money for DOLLAR_AMOUNT)
    target_balance: int  # units
    threshold_type: Literal["CREDIT_AMOUNT", "DOLLAR_AMOUNT"] = "CREDIT_AMOUNT"
    max_spend: int | None = None  # units of money a month
    expiration: Literal["1_MONTH", "1_YEAR"] = "1_MONTH"
    resource_id: str | None = None


async def get_settings(d: Domain, env: str, customer_id: str, currency_id: str,
                       resource_id: str | None = None) -> AutoRechargeReply:
    """The settings of one pool (none stored: `settings` is None) and this month's spend."""
    await require_customer(d, env, customer_id, allow_archived=True)
    await require_currency(d, env, currency_id, allow_archived=True)
    reply = await d.runtime.submit(engine_id(env, customer_id),
                                   GetAutoRecharge(currency_id=currency_id,
                                                   resource_id=resource_id))
    assert isinstance(reply, AutoRechargeReply)
    return reply


async def save_settings(d: Domain, env: str, r: RechargeInput) -> AutoRechargeReply:
    """Save a pool's settings; the currency must have a top-up price."""
    await require_customer(d, env, r.customer_id)
    currency = await require_currency(d, env, r.currency_id)
    top_up = currency.top_up
    if top_up is None:
        raise bad_input("the currency has no top-up price: set topUp.pricePerCredit on it "
                        "first", "currencyId")
    reply = await d.runtime.submit(engine_id(env, r.customer_id), ConfigureAutoRecharge(
        currency_id=r.currency_id, resource_id=r.resource_id, enabled=r.enabled,
        threshold_type=r.threshold_type, threshold_value=r.threshold_value,
        target_balance=r.target_balance, max_spend=r.max_spend, expiration=r.expiration,
        price=top_up.price_per_credit, price_currency=top_up.price_currency,
        min_purchase=top_up.minimum_purchase, max_purchase=top_up.maximum_purchase))
    if isinstance(reply, Refused):
        raise from_refusal(reply)
    assert isinstance(reply, AutoRechargeReply)
    return reply
