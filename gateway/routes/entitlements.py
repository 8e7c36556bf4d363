"""Entitlement checks and lists, credits and features: the wire forms of
engine/domain/access.py (which holds the rules and the reasons access is denied)."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any

import msgspec
from litestar import Request, Response, get
from litestar.params import FromPath, QueryParameter

from engine.domain import access
from engine.domain.stored import Currency, Feature
from gateway.context import domain, environment, ok
from gateway.errors import bad_input
from gateway.routes.credits import reservation_json
from gateway.wire import amount_in, amount_out, iso, parse_time

__all__ = ["ROUTES", "credit_access_json", "entitlements_json", "feature_access_json"]


def _currency_json(doc: Currency) -> dict[str, Any]:
    units = doc.units
    return {"currencyId": doc.id, "displayName": doc.display_name,
            "description": doc.description, "metadata": doc.metadata,
            "unitPlural": units and units.plural, "unitSingular": units and units.singular}


def credit_access_json(a: access.CreditAccess) -> dict[str, Any]:
    """A credit entitlement; without a balance, its update time is when the answer was
    made. `usagePeriodEnd`: when the currency's recurring credits next renew."""
    b = a.balance
    consumed = b.total_consumed if b else 0
    balance = max(b.current_balance, 0) if b else 0
    updated = iso(b.timestamp) if b else iso(a.now)
    return {
        "type": "CREDIT",
        "isGranted": a.granted,
        "accessDeniedReason": a.denied,
        "currency": _currency_json(a.currency),
        "currentUsage": amount_out(consumed),
        "usageLimit": amount_out(consumed + balance),
        "usageUpdatedAt": updated,
        "entitlementUpdatedAt": updated,
        "reservation": reservation_json(a.reservation) if a.reservation is not None else None,
        "reserved": amount_out(b.reserved) if b else 0,
        "reservedOnExpiredGrants": 0,
        "usagePeriodEnd": iso(a.period_end),
        "validUntil": None,
    }


def _metadata(raw: str | None) -> dict[str, str] | None:
    """`reservationMetadata`: a JSON-encoded object of string values."""
    if raw is None:
        return None
    try:
        return msgspec.json.decode(raw, type=dict[str, str])
    except (msgspec.ValidationError, msgspec.DecodeError):
        raise bad_input("must be a JSON object of string values",
                        "reservationMetadata") from None


def _feature_json(feature: Feature) -> dict[str, Any]:
    return {"id": feature.id, "displayName": feature.display_name or feature.id,
            "featureStatus": feature.feature_status or "ACTIVE",
            "featureType": feature.feature_type}


def feature_access_json(a: access.FeatureAccess) -> dict[str, Any]:
    feature, eff, usage = a.feature, a.effective, a.usage
    window = eff.window if eff is not None else None
    metered = feature is not None and feature.feature_type == "NUMBER"
    current = usage[0] if usage is not None else 0
    limit = eff.usage_limit if eff is not None else None
    return {
        "type": "FEATURE",
        "isGranted": a.granted,
        "accessDeniedReason": a.denied,
        "feature": _feature_json(feature) if feature is not None else None,
        "currentUsage": amount_out(current) if metered and eff is not None else None,
        "usageLimit": None if eff is None or eff.unlimited else limit,
        "hasUnlimitedUsage": eff.unlimited if eff is not None else None,
        "hasSoftLimit": eff.soft_limit if eff is not None else None,  # extension
        "enumValues": eff.enum_values if eff is not None else None,  # extension
        "resetPeriod": eff.reset_period if eff is not None else None,
        "usagePeriodAnchor": iso(eff.anchor_ms) if window is not None and eff else None,
        "usagePeriodStart": iso(window[0]) if window is not None else None,
        "usagePeriodEnd": iso(window[1]) if window is not None else None,
        "validUntil": iso(eff.valid_until) if eff is not None else None,
        "entitlementUpdatedAt": iso(eff.updated_at) if eff is not None else None,
    }


@get("/api/v1/customers/{customer_id:str}/entitlements/check")
async def check_entitlement(
    request: Request,
    customer_id: FromPath[str],
    currency_id: Annotated[str | None, QueryParameter(name="currencyId")] = None,
    feature_id: Annotated[str | None, QueryParameter(name="featureId")] = None,
    requested_usage: Annotated[Decimal | None, QueryParameter(name="requestedUsage")] = None,
    reserve_amount: Annotated[Decimal | None, QueryParameter(name="reserveAmount")] = None,
    reservation_ttl_seconds: Annotated[
        int | None, QueryParameter(name="reservationTtlSeconds")] = None,
    reservation_expires_at: Annotated[
        str | None, QueryParameter(name="reservationExpiresAt")] = None,
    reservation_id: Annotated[str | None, QueryParameter(name="reservationId")] = None,
    reservation_metadata: Annotated[str | None, QueryParameter(name="reservationMetadata")] = None,
    resource_id: Annotated[str | None, QueryParameter(name="resourceId")] = None,
) -> Response:
    if feature_id is not None and currency_id is not None:
        raise bad_input("give currencyId or featureId, not both", "featureId")
    d, env = domain(request), environment(request)
    requested = None
    if requested_usage is not None:
        requested = amount_in(requested_usage, "requestedUsage", allow_zero=True)
    if feature_id is not None:
        values = [v.strip() for raw in request.query_params.getall("requestedValues", [])
                  for v in raw.split(",") if v.strip()]
        return ok(feature_access_json(await access.check_feature(
            d, env, customer_id, feature_id, requested=requested, values=values,
            resource_id=resource_id)))
    if not currency_id:
        raise bad_input("currencyId or featureId is required", "currencyId")
    if reserve_amount is None:
        return ok(credit_access_json(await access.check_credits(
            d, env, customer_id, currency_id, requested=requested or 0,
            resource_id=resource_id)))
    # Without a reservationId the domain generates one; a retry of such a check cannot be
    # recognised (docs/api.md says so).
    return ok(credit_access_json(await access.reserve(d, env, access.ReserveInput(
        customer_id=customer_id, currency_id=currency_id,
        amount=amount_in(reserve_amount, "reserveAmount"), reservation_id=reservation_id,
        ttl_seconds=reservation_ttl_seconds,
        expires_at=parse_time(reservation_expires_at, "reservationExpiresAt"),
        metadata=_metadata(reservation_metadata), resource_id=resource_id))))


def entitlements_json(found: access.CustomerEntitlements) -> list[dict[str, Any]]:
    """The customer's entitlements: granted features first (by id), then credits."""
    return ([feature_access_json(f) for f in found.features]
            + [credit_access_json(c) for c in found.credits])


@get("/api/v1/customers/{customer_id:str}/entitlements")
async def list_entitlements(
    request: Request,
    customer_id: FromPath[str],
    resource_id: Annotated[str | None, QueryParameter(name="resourceId")] = None,
) -> Response:
    found = await access.entitlements(domain(request), environment(request), customer_id,
                                      resource_id)
    return ok({"accessDeniedReason": found.denied, "entitlements": entitlements_json(found)})


ROUTES = [check_entitlement, list_entitlements]
