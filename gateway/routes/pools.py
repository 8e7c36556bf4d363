"""`PUT /api/v1/credits/pools` (an extension of the contract): a pool's soft or hard limit
and its low-balance line (engine/domain/pools.py says what they mean)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import msgspec
from litestar import Request, Response, put

from engine.core.commands import PoolSettingsReply
from engine.domain import pools
from engine.domain.constraints import Reference
from gateway.context import domain, environment, ok
from gateway.openapi import request_body
from gateway.routes.credits import balance_json
from gateway.wire import amount_in, amount_out, decode_body

__all__ = ["ROUTES"]


class PoolBody(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    customer_id: Reference
    currency_id: Reference
    resource_id: str | None = None
    hard_limit: bool | None = None
    # Absent: unchanged; null: back to the percentage rule.
    low_balance_threshold: Decimal | None | msgspec.UnsetType = msgspec.UNSET
    usage_low_percent: int | None = None


def pool_json(customer_id: str, reply: PoolSettingsReply) -> dict[str, Any]:
    return {"customerId": customer_id, "currencyId": reply.balance.currency_id,
            **balance_json(reply.balance),
            "lowBalanceThreshold": None if reply.low_balance_units is None
            else amount_out(reply.low_balance_units),
            "usageLowPercent": reply.usage_low_percent}


@put("/api/v1/credits/pools", opt=request_body(PoolBody))
async def configure_pool(request: Request) -> Response:
    body = await decode_body(request, PoolBody)
    threshold = body.low_balance_threshold
    reply = await pools.configure(domain(request), environment(request), pools.PoolConfig(
        customer_id=body.customer_id, currency_id=body.currency_id,
        resource_id=body.resource_id, hard_limit=body.hard_limit,
        low_balance_units=None if threshold is None or threshold is msgspec.UNSET
        else amount_in(threshold, "lowBalanceThreshold", allow_zero=True),
        clear_low_balance=threshold is None, usage_low_percent=body.usage_low_percent))
    return ok(pool_json(body.customer_id, reply))


ROUTES = [configure_pool]
