"""GraphQL resolvers: each maps a root field's arguments (Stigg's input types, camelCase,
amounts as Decimals) to one domain function's input, and its typed result to Stigg's
output type (field names as the schema has them; times as ISO-8601; amounts exact).
The rules are the domain's (engine/domain/); a refusal it raises becomes a GraphQL error
with its code (endpoint.py).

    creditBalanceSummary  credits.balances
    createCreditGrant     credits.grant_credits
    voidCreditGrant       credits.void_grant
    consumeCredits        credits.consume
    reportUsage           usage.report_usage
    reportUsageBulk       usage.report_usage (a batch, checked whole)
    reportEvent           usage.report_events
    estimateUsageCost     usage.estimate_usage
    estimateEventCost     usage.estimate_event
    getAutoRechargeSettings   recharge.get_settings
    saveAutoRechargeSettings  recharge.save_settings
"""

from __future__ import annotations

import uuid
from typing import Any

from graphql import GraphQLResolveInfo

from engine.core.model import GrantType
from engine.domain import credits, recharge, usage
from engine.domain.errors import bad_input
from engine.domain.values import time_in
from engine.times import iso
from gateway.context import domain, environment
from gateway.routes.credits import credit_json
from gateway.routes.usage import estimates_json
from gateway.wire import amount_in, amount_out, dimensions_in, signed_amount_in

__all__ = ["ROOTS"]


def _ctx(info: GraphQLResolveInfo) -> tuple[Any, str]:
    request = info.context
    return domain(request), environment(request)


def _currency(currency: Any) -> dict[str, Any]:
    units = currency.units
    return {"currencyId": currency.id, "displayName": currency.display_name,
            "symbol": currency.symbol,
            "units": None if units is None else {"plural": units.plural,
                                                 "singular": units.singular}}


# -- credits -------------------------------------------------------------------------------

async def credit_balance_summary(_: Any, info: GraphQLResolveInfo, input: dict) -> dict:  # noqa: A002
    d, env = _ctx(info)
    customer_id = input["customerId"]
    found = await credits.balances(d, env, customer_id, input.get("currencyId"),
                                   input.get("resourceId"))
    return {"customerId": customer_id, "resourceId": input.get("resourceId"), "balances": [{
        "customerId": customer_id, "currencyId": b.currency_id, "resourceId": b.resource_id,
        "currency": _currency(currency),
        "currentBalance": amount_out(b.current_balance),
        "totalConsumed": amount_out(b.total_consumed),
        "totalGranted": amount_out(b.total_granted),
        "validUntil": None,
    } for b, currency in found]}


def _grant(customer_id: str, g: Any) -> dict[str, Any]:
    consumed = getattr(g, "consumed_amount", None)
    if consumed is None:
        consumed = g.consumed
    return {
        "id": g.id, "grantId": g.id, "customerId": customer_id, "currencyId": g.currency_id,
        "resourceId": g.resource_id, "amount": amount_out(g.amount),
        "consumedAmount": amount_out(consumed), "grantType": str(g.grant_type),
        "status": str(g.status), "priority": g.priority,
        "effectiveAt": iso(g.effective_at), "expireAt": iso(g.expire_at),
        "createdAt": iso(g.created_at), "updatedAt": iso(g.updated_at),
        "voidedAt": iso(g.voided_at),
        "cost": {"amount": amount_out(g.cost_amount or 0),
                 "currency": (g.cost_currency or "usd").upper()},
        "displayName": g.display_name, "comment": g.comment,
        "additionalMetaData": dict(g.metadata or {}),
        "paymentCollection": "PROCESSING" if str(g.status) == "PAYMENT_PENDING"
        else "NOT_REQUIRED",
        "invoiceId": None, "latestInvoice": None, "sourceType": None,
        "automaticRechargeConfigurationId": None,
    }


def _priority(value: Any) -> int:
    if value is None:
        return 50
    if value != int(value):
        raise bad_input("must be a whole number", "priority")
    return int(value)


async def create_credit_grant(_: Any, info: GraphQLResolveInfo, input: dict) -> dict:  # noqa: A002
    d, env = _ctx(info)
    cost = input.get("cost")
    metadata = input.get("additionalMetaData")
    if metadata is not None and (not isinstance(metadata, dict) or not all(
            isinstance(v, str) for v in metadata.values())):
        raise bad_input("must be an object of string values", "additionalMetaData")
    grant = await credits.grant_credits(d, env, credits.GrantInput(
        customer_id=input["customerId"], currency_id=input["currencyId"],
        resource_id=input.get("resourceId"), amount=amount_in(input["amount"], "amount"),
        grant_type=GrantType(input["grantType"]), display_name=input["displayName"],
        priority=_priority(input.get("priority")),
        effective_at=time_in(input.get("effectiveAt"), "effectiveAt"),
        expire_at=time_in(input.get("expireAt"), "expireAt"),
        cost_amount=None if cost is None else amount_in(cost["amount"], "cost.amount",
                                                      allow_zero=True),
        cost_currency=None if cost is None or cost.get("currency") is None
        else cost["currency"].lower(),
        comment=input.get("comment"), metadata=metadata,
        await_payment=bool(input.get("awaitPaymentConfirmation"))))
    return _grant(input["customerId"], grant)


async def void_credit_grant(_: Any, info: GraphQLResolveInfo, input: dict) -> dict:  # noqa: A002
    d, env = _ctx(info)
    customer_id, grant = await credits.void_grant(d, env, input["id"], None)
    return _grant(customer_id, grant)


async def consume_credits(_: Any, info: GraphQLResolveInfo, input: dict) -> dict:  # noqa: A002
    d, env = _ctx(info)
    reply = await credits.consume(d, env, credits.ConsumeInput(
        customer_id=input["customerId"], currency_id=input["currencyId"],
        resource_id=input.get("resourceId"), amount=amount_in(input["amount"], "amount"),
        idempotency_key=input["idempotencyKey"],
        dimensions=dimensions_in(input.get("dimensions"), "dimensions"),
        created_at=time_in(input.get("createdAt"), "createdAt")))
    return {"amount": amount_out(reply.amount), "currencyId": input["currencyId"],
            "customerId": input["customerId"], "resourceId": input.get("resourceId"),
            "timestamp": iso(reply.timestamp), "credit": credit_json(reply.balance)}


# -- usage and events ----------------------------------------------------------------------

def _usage_input(item: dict[str, Any], at: str) -> usage.UsageInput:
    return usage.UsageInput(
        customer_id=item["customerId"], feature_id=item["featureId"],
        value=signed_amount_in(item["value"], f"{at}value"),
        set_value=item.get("updateBehavior") == "SET",
        created_at=time_in(item.get("createdAt"), f"{at}createdAt"),
        dimensions=dimensions_in(item.get("dimensions"), f"{at}dimensions"),
        idempotency_key=item.get("idempotencyKey"), resource_id=item.get("resourceId"))


def _measurement(item: dict[str, Any], result: Any, window: Any, env: str) -> dict[str, Any]:
    """Stigg's UsageMeasurementWithCurrentUsage for one reported item."""
    credit = None
    if result.currency_id is not None and result.balance is not None:
        credit = {"consumed": amount_out(result.consumed), **credit_json(result.balance)}
    return {
        "id": item.get("idempotencyKey") or str(uuid.uuid4()),
        "customerId": item["customerId"], "featureId": item["featureId"],
        "resourceId": item.get("resourceId"), "environmentId": env, "value": item["value"],
        "currentUsage": amount_out(result.usage.current_usage),
        "createdAt": item.get("createdAt") or iso(result.timestamp),
        "timestamp": iso(result.timestamp), "credit": credit,
        "nextResetDate": iso(window[1]) if window is not None else None,
        "usagePeriodStart": iso(window[0]) if window is not None else None,
        "usagePeriodEnd": iso(window[1]) if window is not None else None,
    }


async def report_usage(_: Any, info: GraphQLResolveInfo, input: dict) -> dict:  # noqa: A002
    d, env = _ctx(info)
    report = await usage.report_usage(d, env, [_usage_input(input, "")], field="input")
    return _measurement(input, report.results[0], report.windows[0], env)


async def report_usage_bulk(_: Any, info: GraphQLResolveInfo, input: dict) -> list:  # noqa: A002
    d, env = _ctx(info)
    given = input["usages"]
    usage.check_batch(given, "usages")
    items = [_usage_input(u, f"usages[{i}].") for i, u in enumerate(given)]
    report = await usage.report_usage(d, env, items, field="usages")
    return [_measurement(item, r, w, env)
            for item, r, w in zip(given, report.results, report.windows, strict=True)]


async def report_event(_: Any, info: GraphQLResolveInfo, events: dict) -> None:
    d, env = _ctx(info)
    usage.check_batch(events["usageEvents"], "usageEvents")
    items = [usage.EventInput(
        customer_id=e["customerId"], event_name=e["eventName"],
        idempotency_key=e["idempotencyKey"], resource_id=e.get("resourceId"),
        dimensions=dimensions_in(e.get("dimensions"), f"usageEvents[{i}].dimensions"),
        timestamp=time_in(e.get("timestamp"), f"usageEvents[{i}].timestamp"))
        for i, e in enumerate(events["usageEvents"])]
    await usage.report_events(d, env, items, field="usageEvents")
    return None


# -- estimates -----------------------------------------------------------------------------

async def estimate_usage_cost(_: Any, info: GraphQLResolveInfo, input: dict) -> dict:  # noqa: A002
    d, env = _ctx(info)
    dimensions_in(input.get("dimensions"), "dimensions")
    return estimates_json(await usage.estimate_usage(d, env, usage.UsageEstimateInput(
        customer_id=input["customerId"], feature_id=input["featureId"],
        value=signed_amount_in(input["value"], "value"),
        set_value=input.get("updateBehavior") == "SET", resource_id=input.get("resourceId"))))


async def estimate_event_cost(_: Any, info: GraphQLResolveInfo, input: dict) -> dict:  # noqa: A002
    d, env = _ctx(info)
    return estimates_json(await usage.estimate_event(d, env, usage.EventEstimateInput(
        customer_id=input["customerId"], event_name=input["eventName"],
        dimensions=dimensions_in(input.get("dimensions"), "dimensions"),
        resource_id=input.get("resourceId"))))


# -- auto-recharge -------------------------------------------------------------------------

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
                                     input: dict) -> dict:  # noqa: A002
    d, env = _ctx(info)
    reply = await recharge.get_settings(d, env, input["customerId"], input["currencyId"], None)
    return _recharge(input["customerId"], input["currencyId"], env, reply)


async def save_auto_recharge_settings(_: Any, info: GraphQLResolveInfo,
                                      input: dict) -> dict:  # noqa: A002
    d, env = _ctx(info)
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


ROOTS: dict[str, dict[str, Any]] = {
    "Query": {
        "creditBalanceSummary": credit_balance_summary,
        "estimateUsageCost": estimate_usage_cost,
        "estimateEventCost": estimate_event_cost,
        "getAutoRechargeSettings": get_auto_recharge_settings,
    },
    "Mutation": {
        "createCreditGrant": create_credit_grant,
        "voidCreditGrant": void_credit_grant,
        "consumeCredits": consume_credits,
        "reportUsage": report_usage,
        "reportUsageBulk": report_usage_bulk,
        "reportEvent": report_event,
        "saveAutoRechargeSettings": save_auto_recharge_settings,
    },
}
