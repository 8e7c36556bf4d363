"""Automatic recharge settings (Stigg's OneMonth/OneYear and CreditAmount/DollarAmount
spellings mapped to the domain's).

    getAutoRechargeSettings   recharge.get_settings
    saveAutoRechargeSettings  recharge.save_settings
"""

from __future__ import annotations

from typing import Any

from graphql import GraphQLResolveInfo

from engine.domain import recharge
from engine.domain.errors import bad_input
from engine.times import iso
from gateway.graphql.resolvers.common import context
from gateway.wire import amount_in, amount_out

__all__ = ["MUTATIONS", "QUERIES"]

_EXPIRATION = {"OneMonth": "1_MONTH", "OneYear": "1_YEAR"}
_THRESHOLD = {"CreditAmount": "CREDIT_AMOUNT", "DollarAmount": "DOLLAR_AMOUNT"}


def _recharge(customer_id: str, currency_id: str, env: str, reply: Any) -> dict[str, Any]:
    r = reply.settings
    out: dict[str, Any] = {
        "customerId": customer_id, "currencyId": currency_id, "environmentId": env,
        "isEnabled": False, "thresholdType": "CreditAmount", "thresholdValue": 0,
        "targetBalance": 0, "maxSpendLimit": None, "grantExpirationPeriod": "OneMonth",
        "currentMonthlySpend": amount_out(reply.current_monthly_spend), "createdAt": None,
        "updatedAt": None, "id": None,
        "validationConfig": {"allowUnlimitedSpendLimit": True, "maxCreditPoolSize": None,
                             "maxTargetBalance": None, "maxThresholdAmount": None,
                             "minGrantAmount": None, "minTargetBalance": None}}
    if r is not None:  # (None: nothing saved yet, the defaults above)
        out.update({
            "isEnabled": r.enabled,
            "thresholdType": {v: k for k, v in _THRESHOLD.items()}[r.threshold_type],
            "thresholdValue": amount_out(r.threshold_value),
            "targetBalance": amount_out(r.target_balance),
            "maxSpendLimit": None if r.max_spend is None else amount_out(r.max_spend),
            "grantExpirationPeriod": {v: k for k, v in _EXPIRATION.items()}[r.expiration],
            "createdAt": iso(r.created_at), "updatedAt": iso(r.updated_at)})
    return out


async def get_auto_recharge_settings(_: Any, info: GraphQLResolveInfo,
                                     input: dict) -> dict:
    d, env = context(info)
    reply = await recharge.get_settings(d, env, input["customerId"], input["currencyId"], None)
    return _recharge(input["customerId"], input["currencyId"], env, reply)


async def save_auto_recharge_settings(_: Any, info: GraphQLResolveInfo,
                                      input: dict) -> dict:
    d, env = context(info)
    for name in ("thresholdValue", "targetBalance"):
        if input.get(name) is None:
            raise bad_input("is required", name)
    reply = await recharge.save_settings(d, env, recharge.RechargeInput(
        customer_id=input["customerId"], currency_id=input["currencyId"],
        enabled=input["isEnabled"],
        threshold_type=_THRESHOLD[input.get("thresholdType") or "CreditAmount"],
        threshold_value=amount_in(input["thresholdValue"], "thresholdValue"),
        target_balance=amount_in(input["targetBalance"], "targetBalance"),
        max_spend=None if input.get("maxSpendLimit") is None
        else amount_in(input["maxSpendLimit"], "maxSpendLimit"),
        expiration=_EXPIRATION[input.get("grantExpirationPeriod") or "OneMonth"]))
    return _recharge(input["customerId"], input["currencyId"], env, reply)


QUERIES = {"getAutoRechargeSettings": get_auto_recharge_settings}
MUTATIONS = {"saveAutoRechargeSettings": save_auto_recharge_settings}
