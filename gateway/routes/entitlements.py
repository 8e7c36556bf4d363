"""Entitlement checks and lists: credits and features.

A check with `reserveAmount` is the atomic check-and-hold: the reservation is made in the
customer's actor, so no concurrent consumption can take the credits between the check and
the later report.

Feature entitlements come from the customer's subscriptions and promotional entitlements
(`engine.domain.entitlements`). A check answers why access is denied: FeatureNotFound,
CustomerNotFound, CustomerIsArchived, NoActiveSubscription (no subscription and no
promotion at all), NoFeatureEntitlementInSubscription, RequestedUsageExceedingLimit (a
hard limit: current usage in the window + requestedUsage above the limit; without
requestedUsage, nothing left), RequestedValuesMismatch (an ENUM value not granted). A soft
limit never denies. Current usage is the engine's counter for the current reset window.
"""

from __future__ import annotations

import hashlib
import uuid
from decimal import Decimal
from typing import Annotated, Any

import msgspec
from litestar import Request, Response, get
from litestar.params import FromPath, QueryParameter

from engine.core.amounts import SCALE
from engine.core.commands import (
    BalancesReply,
    BalanceView,
    GetBalances,
    Refused,
    Reserve,
    ReserveReply,
)
from engine.domain.entitlements import (
    Effective,
    credit_period_end,
    effective_entitlements,
    usage_of,
)
from gateway.context import environment, ok, services
from gateway.errors import bad_input, from_refusal
from gateway.routes.common import engine_id, require_currency, scoped_key
from gateway.routes.credits import reservation_json
from gateway.wire import amount_in, amount_out, iso, parse_time

__all__ = ["ROUTES", "entitlements_of"]

# The contract: a TTL of 1 s to 24 h (default 1 h), or an absolute expiry at most 24 h ahead.
RESERVATION_TTL_S_DEFAULT = 3600
RESERVATION_TTL_S_MAX = 24 * 3600


def _currency_json(doc: dict[str, Any]) -> dict[str, Any]:
    units = doc.get("units") or {}
    return {"currencyId": doc["id"], "displayName": doc["displayName"],
            "description": doc.get("description"), "metadata": doc.get("metadata") or {},
            "unitPlural": units.get("plural"), "unitSingular": units.get("singular")}


def credit_entitlement(currency: dict[str, Any], b: BalanceView | None, *, now: int,
                       granted: bool, denied: str | None, reservation: Any = None,
                       period_end: int | None = None) -> dict[str, Any]:
    """`period_end`: when the recurring credits of the currency next renew; `now` is
    when the answer was made, shown as its update time when there is no balance."""
    consumed = b.total_consumed if b else 0
    balance = max(b.current_balance, 0) if b else 0
    updated = iso(b.timestamp) if b else iso(now)
    return {
        "type": "CREDIT",
        "isGranted": granted,
        "accessDeniedReason": denied,
        "currency": _currency_json(currency),
        "currentUsage": amount_out(consumed),
        "usageLimit": amount_out(consumed + balance),
        "usageUpdatedAt": updated,
        "entitlementUpdatedAt": updated,
        "reservation": reservation_json(reservation) if reservation is not None else None,
        "reserved": amount_out(b.reserved) if b else 0,
        "reservedOnExpiredGrants": 0,
        "usagePeriodEnd": iso(period_end),
        "validUntil": None,
    }


async def _customer_state(request: Request, customer_id: str) -> str | None:
    """The accessDeniedReason for the customer itself, if any."""
    doc = await services(request).catalog.get("customer_profiles", environment(request),
                                              customer_id)
    if doc is None:
        return "CustomerNotFound"
    if doc.get("_archivedAt") is not None:
        return "CustomerIsArchived"
    return None


def _metadata(raw: str | None) -> dict[str, str] | None:
    """`reservationMetadata`: a JSON-encoded object of string values."""
    if raw is None:
        return None
    try:
        return msgspec.json.decode(raw, type=dict[str, str])
    except (msgspec.ValidationError, msgspec.DecodeError):
        raise bad_input("must be a JSON object of string values",
                        "reservationMetadata") from None


def _feature_json(feature: dict[str, Any]) -> dict[str, Any]:
    return {"id": feature["id"], "displayName": feature.get("displayName") or feature["id"],
            "featureStatus": feature.get("featureStatus") or "ACTIVE",
            "featureType": feature["featureType"]}


def feature_entitlement(feature: dict[str, Any] | None, eff: Effective | None,
                        usage: tuple[int, int] | None, *, granted: bool,
                        denied: str | None) -> dict[str, Any]:
    window = eff.window if eff is not None else None
    metered = feature is not None and feature.get("featureType") == "NUMBER"
    current = usage[0] if usage is not None else 0
    limit = eff.usage_limit if eff is not None else None
    return {
        "type": "FEATURE",
        "isGranted": granted,
        "accessDeniedReason": denied,
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


def _decide(feature: dict[str, Any], eff: Effective | None, usage: tuple[int, int] | None,
            any_source: bool, requested: int | None, values: list[str]) -> str | None:
    """Why access to `feature` is denied, or None."""
    if eff is None or not eff.granted:
        return "NoFeatureEntitlementInSubscription" if any_source else "NoActiveSubscription"
    kind = feature.get("featureType")
    if kind == "NUMBER" and not eff.unlimited and not eff.soft_limit:
        limit = (eff.usage_limit or 0) * SCALE
        current = usage[0] if usage is not None else 0
        if current + requested > limit if requested is not None else current >= limit:
            return "RequestedUsageExceedingLimit"
    if kind == "ENUM" and values:
        allowed = set(eff.enum_values or ())
        if any(v not in allowed for v in values):
            return "RequestedValuesMismatch"
    return None


async def _check_feature(request: Request, customer_id: str, feature_id: str,
                         requested_usage: Decimal | None, resource_id: str | None) -> Response:
    env = environment(request)
    svc = services(request)
    feature = await svc.catalog.get("features", env, feature_id)
    if feature is None or feature.get("_archivedAt") is not None:
        return ok(feature_entitlement(None, None, None, granted=False,
                                      denied="FeatureNotFound"))
    denied = await _customer_state(request, customer_id)
    if denied is not None:
        return ok(feature_entitlement(feature, None, None, granted=False, denied=denied))
    requested = None
    if requested_usage is not None:
        requested = amount_in(requested_usage, "requestedUsage", allow_zero=True)
    values = [v.strip() for raw in request.query_params.getall("requestedValues", [])
              for v in raw.split(",") if v.strip()]
    now = svc.clock.now_ms()
    sources = await effective_entitlements(svc.domain, env, customer_id, resource_id, now)
    eff = sources.features.get(feature_id)
    usage = None
    if eff is not None and feature.get("featureType") == "NUMBER":
        windows = {feature_id: eff.window} if eff.window is not None else {}
        usage = (await usage_of(svc.domain, env, customer_id, resource_id, windows)).get(feature_id)
    denied = _decide(feature, eff, usage, bool(sources.subscriptions or sources.promotions),
                     requested, values)
    return ok(feature_entitlement(feature, eff if eff is not None and eff.granted else None,
                                  usage, granted=denied is None, denied=denied))


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
    if feature_id is not None:
        return await _check_feature(request, customer_id, feature_id, requested_usage,
                                    resource_id)
    if not currency_id:
        raise bad_input("currencyId or featureId is required", "currencyId")
    currency = await require_currency(request, currency_id)
    now = services(request).clock.now_ms()
    denied = await _customer_state(request, customer_id)
    if denied is not None:
        return ok(credit_entitlement(currency, None, now=now, granted=False, denied=denied))
    runtime = services(request).runtime
    customer = engine_id(environment(request), customer_id)
    if reserve_amount is not None:
        amount = amount_in(reserve_amount, "reserveAmount")
        if reservation_id is None:
            # The contract makes the id optional. Without one the check cannot be
            # recognised when retried: each retry holds again (until it expires or is
            # released). docs/api.md says so; send a reservationId to be safe.
            reservation_id = f"res-{uuid.uuid4().hex}"
        elif not reservation_id:
            raise bad_input("must not be empty", "reservationId")
        if reservation_ttl_seconds is not None and reservation_expires_at is not None:
            raise bad_input("give reservationTtlSeconds or reservationExpiresAt, not both",
                            "reservationTtlSeconds")
        if reservation_expires_at is not None:
            expires_at = parse_time(reservation_expires_at, "reservationExpiresAt")
            assert expires_at is not None
            if not now < expires_at <= now + RESERVATION_TTL_S_MAX * 1000:
                raise bad_input("must be in the future and at most 24 hours ahead",
                                "reservationExpiresAt")
        else:
            ttl = (RESERVATION_TTL_S_DEFAULT if reservation_ttl_seconds is None
                   else reservation_ttl_seconds)
            if not 1 <= ttl <= RESERVATION_TTL_S_MAX:
                raise bad_input(f"must be from 1 to {RESERVATION_TTL_S_MAX}",
                                "reservationTtlSeconds")
            expires_at = now + ttl * 1000
        metadata = _metadata(reservation_metadata)
        # The client-chosen reservationId makes the check idempotent: a retry returns the
        # same reservation instead of holding twice, and the same id with other parameters
        # is a conflict. The hash covers what the client sent, not the expiry derived
        # from the clock.
        sent = msgspec.json.encode([currency_id, resource_id, str(reserve_amount),
                                    reservation_ttl_seconds, reservation_expires_at,
                                    reservation_metadata])
        reply = await runtime.submit(customer, Reserve(
            reservation_id=reservation_id, currency_id=currency_id, resource_id=resource_id,
            amount=amount, expires_at=expires_at, metadata=metadata,
            idempotency_key=scoped_key("reserve", reservation_id),
            request_hash=hashlib.sha256(sent).hexdigest()))
        if isinstance(reply, Refused):
            if reply.code != "INSUFFICIENT_CREDITS":
                raise from_refusal(reply)
            balances = await runtime.submit(customer, GetBalances(
                currency_id=currency_id, resource_id=resource_id, match_resource=True))
            assert isinstance(balances, BalancesReply)
            view = balances.balances[0] if balances.balances else None
            return ok(credit_entitlement(currency, view, now=now, granted=False,
                                         denied="InsufficientCredits"))
        assert isinstance(reply, ReserveReply)
        return ok(credit_entitlement(currency, reply.balance, now=now, granted=True,
                                     denied=None, reservation=reply.reservation))
    requested = 0 if requested_usage is None else amount_in(requested_usage, "requestedUsage",
                                                              allow_zero=True)
    balances = await runtime.submit(customer, GetBalances(
        currency_id=currency_id, resource_id=resource_id, match_resource=True))
    assert isinstance(balances, BalancesReply)
    view = balances.balances[0] if balances.balances else None
    available = view.current_balance if view else 0
    # With no requested usage the question is "is there anything left?".
    granted = available >= requested if requested else available > 0
    svc = services(request)
    sources = await effective_entitlements(svc.domain, environment(request), customer_id,
                                           resource_id, now)
    return ok(credit_entitlement(currency, view, now=now, granted=granted,
                                 denied=None if granted else "InsufficientCredits",
                                 period_end=credit_period_end(sources, currency_id, now)))


async def entitlements_of(request: Request, customer_id: str,
                          resource_id: str | None) -> list[dict[str, Any]]:
    """The customer's entitlements: granted features first (by id), then credits."""
    balances = await services(request).runtime.submit(
        engine_id(environment(request), customer_id),
        GetBalances(resource_id=resource_id, match_resource=True))
    assert isinstance(balances, BalancesReply)
    env = environment(request)
    svc = services(request)
    now = svc.clock.now_ms()
    sources = await effective_entitlements(svc.domain, env, customer_id, resource_id, now)
    entitlements = []
    for view in balances.balances:
        currency = await require_currency(request, view.currency_id, allow_archived=True)
        granted = view.current_balance > 0
        entitlements.append(credit_entitlement(
            currency, view, now=now, granted=granted,
            denied=None if granted else "InsufficientCredits",
            period_end=credit_period_end(sources, view.currency_id, now)))
    granted_features = {f: e for f, e in sources.features.items() if e.granted}
    if granted_features:
        windows = {f: e.window for f, e in granted_features.items() if e.window is not None}
        usage = await usage_of(svc.domain, env, customer_id, resource_id, windows)
        features = []
        for feature_id in sorted(granted_features):
            feature = await svc.catalog.get("features", env, feature_id)
            if feature is None or feature.get("_archivedAt") is not None:
                continue
            eff = granted_features[feature_id]
            denied = _decide(feature, eff, usage.get(feature_id), True, None, [])
            features.append(feature_entitlement(feature, eff, usage.get(feature_id),
                                                granted=denied is None, denied=denied))
        entitlements = features + entitlements
    return entitlements


@get("/api/v1/customers/{customer_id:str}/entitlements")
async def list_entitlements(
    request: Request,
    customer_id: FromPath[str],
    resource_id: Annotated[str | None, QueryParameter(name="resourceId")] = None,
) -> Response:
    denied = await _customer_state(request, customer_id)
    if denied is not None:
        return ok({"accessDeniedReason": denied, "entitlements": []})
    return ok({"accessDeniedReason": None,
               "entitlements": await entitlements_of(request, customer_id, resource_id)})


ROUTES = [check_entitlement, list_entitlements]
