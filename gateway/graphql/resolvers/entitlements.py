"""Entitlement checks and the entitlements state: the GraphQL forms of the REST checks
(gateway/routes/entitlements.py), decided by engine/domain/access.py.

    entitlement         access.check_feature                 -> Entitlement
    entitlementV2       access.check_feature / check_credits -> EntitlementUnion
    cachedEntitlements  access.entitlements                  -> [Entitlement] (features)
    entitlementsState   access.entitlements                  -> EntitlementsState

The REST wire forms (`feature_access_json`, `credit_access_json`) are the source of the
values (usage in the current window, limits, the window, `validUntil`, the reasons); this
module renames them into Stigg's GraphQL types and adds what only those types carry
(`__typename`, the feature as EntitlementFeature, the reset anchor as the
ResetPeriodConfiguration union, `usageUpdatedAt`, `creditRate`). Access denied reasons are
the domain's, already Stigg's PascalCase `AccessDeniedReason` values.

`options.requestedUsage` / `options.requestedValues` are what the check asks for (echoed in
`Entitlement.requestedUsage` / `requestedValues`); `shouldTrack` is accepted and ignored.
A customer that is missing or archived is an answer (`accessDeniedReason`), not an error —
except for `cachedEntitlements`, a bare list with no place for a reason: a missing
customer is `CustomerNotFound` there.
"""

from __future__ import annotations

from decimal import Decimal
from types import SimpleNamespace
from typing import Any

from graphql import GraphQLResolveInfo

from engine.domain import access
from engine.domain.errors import bad_input, not_found
from engine.domain.stored import Feature
from engine.times import iso
from gateway.graphql.resolvers.common import context
from gateway.graphql.schema import enum_values
from gateway.routes.entitlements import credit_access_json, feature_access_json
from gateway.shapes.catalog import feature_json, reset_configuration_json
from gateway.wire import amount_in

__all__ = ["MUTATIONS", "QUERIES", "credit_entitlement_json", "entitlement_json",
           "feature_entitlement_json"]


def _reason(reason: str | None) -> str | None:
    """The domain's reason as Stigg's AccessDeniedReason (the same spelling)."""
    if reason is None:
        return None
    return reason if reason in enum_values("AccessDeniedReason") else "Unknown"


def _feature(doc: Feature | None) -> dict[str, Any] | None:
    """Stigg's EntitlementFeature."""
    if doc is None:
        return None
    return {**feature_json(doc, doc.id), "featureStatus": doc.feature_status or "ACTIVE",
            "enumConfiguration": None}


def _credit_rate(doc: Feature | None) -> dict[str, Any] | None:
    rate = doc.credit_rate if doc is not None else None
    if rate is None:
        return None
    return {"amount": Decimal(rate.amount), "currencyId": rate.currency_id,
            "costFormula": None, "customCurrencyId": None}


def _reset_configuration(a: access.FeatureAccess) -> dict[str, Any] | None:
    """The reset anchor of the window the usage counts in (ResetPeriodConfiguration)."""
    eff = a.effective
    if eff is None or eff.reset_period is None or eff.according_to is None:
        return None
    return reset_configuration_json(SimpleNamespace(  # type: ignore[arg-type]
        reset_period=eff.reset_period,
        reset_period_configuration={"accordingTo": eff.according_to}))


# FeatureEntitlement fields the REST check answers under the same names and meanings.
_SAME = ("isGranted", "currentUsage", "usageLimit", "hasSoftLimit", "enumValues",
         "resetPeriod", "usagePeriodAnchor", "usagePeriodStart", "usagePeriodEnd",
         "validUntil", "entitlementUpdatedAt")


def feature_entitlement_json(a: access.FeatureAccess) -> dict[str, Any]:
    """Stigg's FeatureEntitlement for a feature check."""
    rest = feature_access_json(a)
    out = {name: rest[name] for name in _SAME}
    metered = a.feature is not None and a.feature.feature_type == "NUMBER"
    out.update({
        "__typename": "FeatureEntitlement",
        "accessDeniedReason": _reason(a.denied),
        "hasUnlimitedUsage": bool(rest["hasUnlimitedUsage"]),
        "resetPeriodConfiguration": _reset_configuration(a),
        "feature": _feature(a.feature),
        "creditRate": _credit_rate(a.feature),
        "usageUpdatedAt": iso(a.usage[1]) if metered and a.usage is not None else None,
        "meterId": None,
    })
    return out


def entitlement_json(a: access.FeatureAccess, customer_id: str, resource_id: str | None,
                     requested_usage: Any = None,
                     requested_values: list[str] | None = None) -> dict[str, Any]:
    """Stigg's Entitlement (the first version of the type) for a feature check:
    `validUntil` in epoch milliseconds, `nextResetDate` the end of the usage window."""
    out = feature_entitlement_json(a)
    valid_until = a.effective.valid_until if a.effective is not None else None
    out.update({
        "__typename": "Entitlement",
        "customerId": customer_id,
        "resourceId": resource_id,
        "requestedUsage": requested_usage,
        "requestedValues": requested_values,
        "nextResetDate": out["usagePeriodEnd"],
        "validUntil": valid_until,
        "displayNameOverride": None,
        "hiddenFromWidgets": None,
    })
    return out


def credit_entitlement_json(a: access.CreditAccess) -> dict[str, Any]:
    """Stigg's CreditEntitlement for a credit check: the limit is what was consumed plus
    what is left, so `usageLimit - currentUsage` is the balance."""
    rest = credit_access_json(a)
    currency = rest["currency"]
    return {
        "__typename": "CreditEntitlement",
        "isGranted": rest["isGranted"],
        "accessDeniedReason": _reason(a.denied),
        "currency": {"currencyId": currency["currencyId"],
                     "displayName": currency["displayName"],
                     "description": currency["description"],
                     "unitSingular": currency["unitSingular"],
                     "unitPlural": currency["unitPlural"],
                     "additionalMetaData": currency["metadata"] or None},
        "usageLimit": rest["usageLimit"],
        "currentUsage": rest["currentUsage"],
        "hasSoftLimit": False,
        "usageUpdatedAt": rest["usageUpdatedAt"],
        "entitlementUpdatedAt": rest["entitlementUpdatedAt"],
        "usagePeriodEnd": rest["usagePeriodEnd"],
        "validUntil": rest["validUntil"],
    }


def _options(query: dict[str, Any]) -> tuple[Any, int | None, list[str]]:
    """(requested usage as asked, as units, requested values) from `options`."""
    options = query.get("options") or {}
    asked = options.get("requestedUsage")
    units = None if asked is None else amount_in(asked, "options.requestedUsage",
                                                 allow_zero=True)
    return asked, units, list(options.get("requestedValues") or ())


async def entitlement(_: Any, info: GraphQLResolveInfo, query: dict) -> dict:
    d, env = context(info)
    asked, units, values = _options(query)
    found = await access.check_feature(d, env, query["customerId"], query["featureId"],
                                       requested=units, values=values,
                                       resource_id=query.get("resourceId"))
    return entitlement_json(found, query["customerId"], query.get("resourceId"), asked,
                            (query.get("options") or {}).get("requestedValues"))


async def entitlement_v2(_: Any, info: GraphQLResolveInfo, query: dict) -> dict:
    d, env = context(info)
    feature_id, currency_id = query.get("featureId"), query.get("currencyId")
    if feature_id is not None and currency_id is not None:
        raise bad_input("give currencyId or featureId, not both", "featureId")
    if not feature_id and not currency_id:
        raise bad_input("currencyId or featureId is required", "featureId")
    _, units, values = _options(query)
    if feature_id:
        return feature_entitlement_json(await access.check_feature(
            d, env, query["customerId"], feature_id, requested=units, values=values,
            resource_id=query.get("resourceId")))
    return credit_entitlement_json(await access.check_credits(
        d, env, query["customerId"], currency_id, requested=units or 0,
        resource_id=query.get("resourceId")))


async def cached_entitlements(_: Any, info: GraphQLResolveInfo, query: dict) -> list:
    d, env = context(info)
    customer_id, resource_id = query["customerId"], query.get("resourceId")
    found = await access.entitlements(d, env, customer_id, resource_id)
    if found.denied == "CustomerNotFound":
        raise not_found("CustomerNotFound", "customer", customer_id, "customerId")
    return [entitlement_json(f, customer_id, resource_id) for f in found.features]


async def entitlements_state(_: Any, info: GraphQLResolveInfo, query: dict) -> dict:
    d, env = context(info)
    customer_id, resource_id = query["customerId"], query.get("resourceId")
    found = await access.entitlements(d, env, customer_id, resource_id)
    denied = found.denied
    if denied is not None and denied not in enum_values("EntitlementsStateAccessDeniedReason"):
        denied = None
    return {
        "__typename": "EntitlementsState",
        "accessDeniedReason": denied,
        "entitlements": [entitlement_json(f, customer_id, resource_id)
                         for f in found.features],
        "entitlementsV2": [feature_entitlement_json(f) for f in found.features]
        + [credit_entitlement_json(c) for c in found.credits],
    }


QUERIES = {"entitlement": entitlement, "entitlementV2": entitlement_v2,
           "cachedEntitlements": cached_entitlements, "entitlementsState": entitlements_state}
MUTATIONS: dict = {}
