"""GraphQL resolvers, one module per area: each maps a root field's arguments (Stigg's
input types, camelCase, amounts as Decimals) to one domain function's input, and its
typed result to Stigg's output type (field names as the schema has them; times as
ISO-8601; amounts exact). The rules are the domain's (engine/domain/); a refusal it raises
becomes a GraphQL error with its code (endpoint.py).

Each module holds `QUERIES` and `MUTATIONS` ({root field: resolver}) and lists in its
docstring which domain function each field calls.

    credits        balances, grants, voids, consumptions; grant and ledger pages, usage
    usage          usage reports, events, cost estimates, usage history
    recharge       automatic recharge settings
    customers      provision, read, update, archive, unarchive
    entitlements   entitlement checks and the entitlements state
    catalog        paywall, products, coupons, promotional entitlements
    subscriptions  provision, create, update, cancel, migrate, transfer, read
    estimates      subscription price previews (new and updated)
    live           the Subscription root: source streams of the live feed's hub
    sdk            the SDK's configuration and entitlement-check reports
"""

from __future__ import annotations

from typing import Any

from gateway.graphql.resolvers import (
    catalog,
    credits,
    customers,
    entitlements,
    estimates,
    live,
    recharge,
    sdk,
    subscriptions,
    usage,
)

__all__ = ["ROOTS"]

_MODULES = (credits, usage, recharge, customers, entitlements, catalog, subscriptions,
            estimates, sdk)


def _merged(kind: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for module in _MODULES:
        fields = getattr(module, kind)
        assert not out.keys() & fields.keys(), (module.__name__, out.keys() & fields.keys())
        out.update(fields)
    return out


ROOTS: dict[str, dict[str, Any]] = {"Query": _merged("QUERIES"),
                                    "Mutation": _merged("MUTATIONS"),
                                    "Subscription": live.SUBSCRIPTIONS}
