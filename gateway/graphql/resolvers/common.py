"""What every resolver module shares: the request's domain and environment, and the
shapes several of Stigg's types repeat."""

from __future__ import annotations

from typing import Any

from graphql import GraphQLResolveInfo

from gateway.context import domain, environment

__all__ = ["context", "currency_json"]


def context(info: GraphQLResolveInfo) -> tuple[Any, str]:
    """The domain services and the environment of the request's API key."""
    request = info.context
    return domain(request), environment(request)


def currency_json(currency: Any) -> dict[str, Any]:
    """Stigg's SlimCustomCurrency for a credit currency."""
    units = currency.units
    return {"currencyId": currency.id, "displayName": currency.display_name,
            "symbol": currency.symbol,
            "units": None if units is None else {"plural": units.plural,
                                                 "singular": units.singular}}
