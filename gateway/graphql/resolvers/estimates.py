"""Subscription price previews: what a new subscription or a change would cost.

    estimateSubscription        estimates.estimate_new (EstimateSubscriptionInput)
    estimateSubscriptionUpdate  estimates.estimate_update (EstimateSubscriptionUpdateInput)

Both answer Stigg's `SubscriptionPreview` (gateway/routes/estimates.py's `preview_json`,
the same mapping the REST `/estimate` routes answer): the immediate charge, `subscription`
the recurring one, `proration` for a change. The domain's input Structs have the GraphQL
input's names, so the input converts into them directly (a null is an absent field).

Inputs that would change the price but that creditd does not price are refused by the
domain (REST alike) with BadUserInput naming them, never ignored: `priceUnitAmount`, `appliedCoupon.billingCouponId`
and `billingInformation.couponId` (billing-provider coupons), `billingInformation.taxRateIds`
and `.taxIds` (tax is `taxPercentage` or the billing country's rate),
`billingInformation.prorationBehavior: NONE` and a `billingAddress.country` other than
`billingCountryCode`. The other billing details (invoice terms, metadata, integration ids)
change no price. `environmentId`: the API key's environment is the one used.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, TypeVar

import msgspec
from graphql import GraphQLResolveInfo

from engine.domain import estimates
from engine.domain.errors import bad_input, field_of
from gateway.graphql.resolvers.common import context
from gateway.graphql.schema import enum_values
from gateway.routes.estimates import money_json, preview_json

__all__ = ["MUTATIONS", "QUERIES"]

T = TypeVar("T")


def _present(value: Any) -> Any:
    """The input without its nulls (GraphQL's explicit null means absent here)."""
    if isinstance(value, dict):
        return {k: _present(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_present(v) for v in value]
    return value


def _body(input: dict[str, Any], kind: type[T]) -> T:
    try:
        return msgspec.convert(input, kind)
    except msgspec.ValidationError as exc:
        message, field = field_of(exc)
        raise bad_input(message, field) from None


def _preview(e: estimates.Estimate, field: str) -> dict[str, Any]:
    currency = e.now.currency.upper()
    if currency not in enum_values("Currency"):
        raise bad_input(f"the price is in {currency}, which Stigg's Currency has not", field)
    minimum = sum((ln.sub_total for ln in e.now.lines if ln.billing_model == "MINIMUM_SPEND"),
                  Decimal(0))
    return {**preview_json(e), "minimumSpendAdjustment": money_json(minimum, currency)}


async def estimate_subscription(_: Any, info: GraphQLResolveInfo, input: dict) -> dict:
    d, env = context(info)
    given = _present(input)
    body = _body(given, estimates.EstimateBody)
    return _preview(await estimates.estimate_new(d, env, body), "planId")


async def estimate_subscription_update(_: Any, info: GraphQLResolveInfo, input: dict) -> dict:
    d, env = context(info)
    given = _present(input)
    body = _body(given, estimates.EstimateUpdateBody)
    return _preview(await estimates.estimate_update(d, env, body), "subscriptionId")


QUERIES: dict = {}
MUTATIONS = {"estimateSubscription": estimate_subscription,
             "estimateSubscriptionUpdate": estimate_subscription_update}
