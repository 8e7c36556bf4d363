"""Credits: balances, grants, voids and consumptions.

    creditBalanceSummary  credits.balances
    createCreditGrant     credits.grant_credits
    voidCreditGrant       credits.void_grant
    consumeCredits        credits.consume
"""

from __future__ import annotations

from typing import Any

from graphql import GraphQLResolveInfo

from engine.core.model import GrantType
from engine.domain import credits
from engine.domain.errors import bad_input
from engine.domain.values import time_in
from engine.times import iso
from gateway.graphql.resolvers.common import context, currency_json
from gateway.routes.credits import credit_json
from gateway.wire import amount_in, amount_out, dimensions_in

__all__ = ["MUTATIONS", "QUERIES"]


async def credit_balance_summary(_: Any, info: GraphQLResolveInfo, input: dict) -> dict:
    d, env = context(info)
    customer_id = input["customerId"]
    found = await credits.balances(d, env, customer_id, input.get("currencyId"),
                                   input.get("resourceId"))
    return {"customerId": customer_id, "resourceId": input.get("resourceId"), "balances": [{
        "customerId": customer_id, "currencyId": b.currency_id, "resourceId": b.resource_id,
        "currency": currency_json(currency),
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


async def create_credit_grant(_: Any, info: GraphQLResolveInfo, input: dict) -> dict:
    d, env = context(info)
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


async def void_credit_grant(_: Any, info: GraphQLResolveInfo, input: dict) -> dict:
    d, env = context(info)
    customer_id, grant = await credits.void_grant(d, env, input["id"], None)
    return _grant(customer_id, grant)


async def consume_credits(_: Any, info: GraphQLResolveInfo, input: dict) -> dict:
    d, env = context(info)
    reply = await credits.consume(d, env, credits.ConsumeInput(
        customer_id=input["customerId"], currency_id=input["currencyId"],
        resource_id=input.get("resourceId"), amount=amount_in(input["amount"], "amount"),
        idempotency_key=input["idempotencyKey"],
        dimensions=dimensions_in(input.get("dimensions"), "dimensions"),
        created_at=time_in(input.get("createdAt"), "createdAt")))
    return {"amount": amount_out(reply.amount), "currencyId": input["currencyId"],
            "customerId": input["customerId"], "resourceId": input.get("resourceId"),
            "timestamp": iso(reply.timestamp), "credit": credit_json(reply.balance)}


QUERIES = {"creditBalanceSummary": credit_balance_summary}
MUTATIONS = {"createCreditGrant": create_credit_grant, "voidCreditGrant": void_credit_grant,
             "consumeCredits": consume_credits}
