"""Entitlement checks: may this customer use this feature, or these credits — and the
atomic check-and-hold (`reserve`), which makes the reservation in the customer's actor, so
no concurrent consumption can take the credits between the check and the later report.

Feature entitlements come from the customer's subscriptions and promotional entitlements
(`engine.domain.entitlements`). A check answers why access is denied: FeatureNotFound,
CustomerNotFound, CustomerIsArchived, NoActiveSubscription (no subscription and no
promotion at all), NoFeatureEntitlementInSubscription, RequestedUsageExceedingLimit (a
hard limit: current usage in the window + requested usage above the limit; without a
requested usage, nothing left), RequestedValuesMismatch (an ENUM value not granted). A
soft limit never denies. Current usage is the engine's counter for the current reset
window. A credit check is denied with InsufficientCredits, and so is a credit-backed
feature (one with a credit rate) whose currency's pool holds nothing or less than the
requested usage costs — as Stigg's SDKs decide it from a balance update.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

import msgspec

from engine.core.amounts import SCALE
from engine.core.commands import (
    BalancesReply,
    BalanceView,
    GetBalances,
    Refused,
    ReservationView,
    Reserve,
    ReserveReply,
)
from engine.domain.constraints import RESERVATION_TTL_S_MAX
from engine.domain.context import Domain, engine_id, require_currency, scoped_key
from engine.domain.credits import pool_balance
from engine.domain.entitlements import (
    Effective,
    credit_period_end,
    effective_entitlements,
    usage_of,
)
from engine.domain.errors import bad_input, from_refusal
from engine.domain.features import credit_rate_units
from engine.domain.stored import Currency, Feature

__all__ = ["RESERVATION_TTL_S_DEFAULT", "RESERVATION_TTL_S_MAX", "CreditAccess",
           "CustomerEntitlements", "FeatureAccess", "ReserveInput", "check_credits",
           "check_feature", "customer_denial", "entitlements", "reserve"]

# The contract: a TTL of 1 s to 24 h (default 1 h), or an absolute expiry at most 24 h ahead.
RESERVATION_TTL_S_DEFAULT = 3600


class FeatureAccess(msgspec.Struct, frozen=True, kw_only=True):
    feature: Feature | None  # None: FeatureNotFound
    effective: Effective | None  # what the customer is granted (None: nothing)
    usage: tuple[int, int] | None  # (units used in the current window, updated at)
    granted: bool
    denied: str | None


class CreditAccess(msgspec.Struct, frozen=True, kw_only=True):
    currency: Currency
    balance: BalanceView | None
    now: int  # when the answer was made
    granted: bool
    denied: str | None
    reservation: ReservationView | None = None
    period_end: int | None = None  # when the currency's recurring credits next renew


class CustomerEntitlements(msgspec.Struct, frozen=True, kw_only=True):
    # CustomerNotFound, CustomerIsArchived; NoActiveSubscription when there is nothing at
    # all to grant from: no running subscription, no promotion, no credits.
    denied: str | None
    features: list[FeatureAccess]  # granted features, by id
    credits: list[CreditAccess]  # one per pool


class ReserveInput(msgspec.Struct, frozen=True, kw_only=True):
    customer_id: str
    currency_id: str
    amount: int
    # None: one is generated — and a retry without an id cannot be recognised: each
    # retry holds again (until it expires or is released). Send one to be safe.
    reservation_id: str | None = None
    ttl_seconds: int | None = None
    expires_at: int | None = None  # instead of a TTL
    metadata: dict[str, str] | None = None
    resource_id: str | None = None


async def customer_denial(d: Domain, env: str, customer_id: str) -> str | None:
    """The accessDeniedReason for the customer itself, if any."""
    doc = await d.documents.get("customer_profiles", env, customer_id)
    if doc is None:
        return "CustomerNotFound"
    if doc.archived_at is not None:
        return "CustomerIsArchived"
    return None


def _decide(feature: Feature, eff: Effective | None, usage: tuple[int, int] | None,
            any_source: bool, requested: int | None, values: list[str]) -> str | None:
    """Why access to `feature` is denied, or None."""
    if eff is None or not eff.granted:
        return "NoFeatureEntitlementInSubscription" if any_source else "NoActiveSubscription"
    kind = feature.feature_type
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


def _credits_denial(feature: Feature, pools: dict[str, BalanceView],
                    requested: int | None) -> str | None:
    """InsufficientCredits for a credit-backed feature (one with a credit rate: using it
    spends credits) whose currency's pool holds nothing, or less than `requested` usage
    would cost; None otherwise, and for a pool that may overdraw (no hard limit)."""
    rate = credit_rate_units(feature)
    if rate is None:
        return None
    currency_id, per_unit = rate
    pool = pools.get(currency_id)
    if pool is not None and not pool.hard_limit:
        return None
    balance = pool.current_balance if pool is not None else 0
    cost = -(-(requested or 0) * per_unit // SCALE)  # rounded up: never promise too much
    return "InsufficientCredits" if balance <= 0 or cost > balance else None


async def _pools(d: Domain, env: str, customer_id: str,
                 resource_id: str | None) -> dict[str, BalanceView]:
    """The customer's credit pools for `resource_id` (those usage there spends), by
    currency."""
    reply = await d.runtime.submit(engine_id(env, customer_id),
                                   GetBalances(resource_id=resource_id, match_resource=True))
    assert isinstance(reply, BalancesReply)
    return {b.currency_id: b for b in reply.balances}


async def check_feature(d: Domain, env: str, customer_id: str, feature_id: str, *,
                        requested: int | None = None, values: list[str] | None = None,
                        resource_id: str | None = None) -> FeatureAccess:
    """May the customer use `requested` units (None: any) of the feature, or these ENUM
    `values`? Denials are answers, not refusals."""
    feature = await d.documents.get("features", env, feature_id)
    if feature is None or feature.archived_at is not None:
        return FeatureAccess(feature=None, effective=None, usage=None, granted=False,
                             denied="FeatureNotFound")
    denied = await customer_denial(d, env, customer_id)
    if denied is not None:
        return FeatureAccess(feature=feature, effective=None, usage=None, granted=False,
                             denied=denied)
    sources = await effective_entitlements(d, env, customer_id, resource_id, d.now_ms())
    eff = sources.features.get(feature_id)
    usage = None
    if eff is not None and feature.feature_type == "NUMBER":
        windows = {feature_id: eff.window} if eff.window is not None else {}
        usage = (await usage_of(d, env, customer_id, resource_id, windows)).get(feature_id)
    denied = _decide(feature, eff, usage, bool(sources.subscriptions or sources.promotions),
                     requested, values or [])
    if denied is None and feature.credit_rate is not None:
        denied = _credits_denial(feature, await _pools(d, env, customer_id, resource_id),
                                 requested)
    return FeatureAccess(feature=feature, effective=eff if eff is not None and eff.granted
                         else None, usage=usage, granted=denied is None, denied=denied)


async def _credit_check(d: Domain, env: str, customer_id: str, currency_id: str,
                        ) -> tuple[dict[str, Any], int, CreditAccess | None]:
    """The currency (CustomCurrencyNotFound), now, and the answer if the customer itself
    is denied (missing or archived)."""
    currency = await require_currency(d, env, currency_id)
    now = d.now_ms()
    denied = await customer_denial(d, env, customer_id)
    if denied is None:
        return currency, now, None
    return currency, now, CreditAccess(currency=currency, balance=None, now=now,
                                       granted=False, denied=denied)


async def check_credits(d: Domain, env: str, customer_id: str, currency_id: str, *,
                        requested: int = 0, resource_id: str | None = None) -> CreditAccess:
    """Does the customer's pool hold `requested` units (0: anything at all)?"""
    currency, now, refused = await _credit_check(d, env, customer_id, currency_id)
    if refused is not None:
        return refused
    view = await pool_balance(d, engine_id(env, customer_id), currency_id, resource_id)
    available = view.current_balance if view else 0
    granted = available >= requested if requested else available > 0
    sources = await effective_entitlements(d, env, customer_id, resource_id, now)
    return CreditAccess(currency=currency, balance=view, now=now, granted=granted,
                        denied=None if granted else "InsufficientCredits",
                        period_end=credit_period_end(sources, currency_id, now))


def _expiry(q: ReserveInput, now: int) -> int:
    if q.ttl_seconds is not None and q.expires_at is not None:
        raise bad_input("give reservationTtlSeconds or reservationExpiresAt, not both",
                        "reservationTtlSeconds")
    if q.expires_at is not None:
        if not now < q.expires_at <= now + RESERVATION_TTL_S_MAX * 1000:
            raise bad_input("must be in the future and at most 24 hours ahead",
                            "reservationExpiresAt")
        return q.expires_at
    ttl = RESERVATION_TTL_S_DEFAULT if q.ttl_seconds is None else q.ttl_seconds
    if not 1 <= ttl <= RESERVATION_TTL_S_MAX:
        raise bad_input(f"must be from 1 to {RESERVATION_TTL_S_MAX}", "reservationTtlSeconds")
    return now + ttl * 1000


async def reserve(d: Domain, env: str, q: ReserveInput) -> CreditAccess:
    """Check and hold `amount` units for a later report, atomically. Not enough credits
    is an answer (denied: InsufficientCredits), not a refusal. The reservation id makes
    the check idempotent: a retry returns the same reservation instead of holding twice,
    and the same id with other parameters is a conflict (IdempotencyKeyReused)."""
    currency, now, refused = await _credit_check(d, env, q.customer_id, q.currency_id)
    if refused is not None:
        return refused
    reservation_id = q.reservation_id
    if reservation_id is None:
        reservation_id = f"res-{uuid.uuid4().hex}"
    elif not reservation_id:
        raise bad_input("must not be empty", "reservationId")
    expires_at = _expiry(q, now)
    # The hash covers what the client asked for, not the expiry derived from the clock.
    asked = msgspec.json.encode([q.currency_id, q.resource_id, q.amount, q.ttl_seconds,
                                 q.expires_at, q.metadata])
    customer = engine_id(env, q.customer_id)
    reply = await d.runtime.submit(customer, Reserve(
        reservation_id=reservation_id, currency_id=q.currency_id, resource_id=q.resource_id,
        amount=q.amount, expires_at=expires_at, metadata=q.metadata,
        idempotency_key=scoped_key("reserve", reservation_id),
        request_hash=hashlib.sha256(asked).hexdigest()))
    if isinstance(reply, Refused):
        if reply.code != "INSUFFICIENT_CREDITS":
            raise from_refusal(reply)
        view = await pool_balance(d, customer, q.currency_id, q.resource_id)
        return CreditAccess(currency=currency, balance=view, now=now, granted=False,
                            denied="InsufficientCredits")
    assert isinstance(reply, ReserveReply)
    return CreditAccess(currency=currency, balance=reply.balance, now=now, granted=True,
                        denied=None, reservation=reply.reservation)


async def entitlements(d: Domain, env: str, customer_id: str,
                       resource_id: str | None = None) -> CustomerEntitlements:
    """Everything the customer is entitled to: its granted features (by id) and one
    credit entitlement per pool (granted while the balance is positive)."""
    denied = await customer_denial(d, env, customer_id)
    if denied is not None:
        return CustomerEntitlements(denied=denied, features=[], credits=[])
    pools = await _pools(d, env, customer_id, resource_id)
    now = d.now_ms()
    sources = await effective_entitlements(d, env, customer_id, resource_id, now)
    credits = []
    for view in pools.values():
        currency = await require_currency(d, env, view.currency_id, allow_archived=True)
        granted = view.current_balance > 0
        credits.append(CreditAccess(
            currency=currency, balance=view, now=now, granted=granted,
            denied=None if granted else "InsufficientCredits",
            period_end=credit_period_end(sources, view.currency_id, now)))
    granted_features = {f: e for f, e in sources.features.items() if e.granted}
    features = []
    if granted_features:
        windows = {f: e.window for f, e in granted_features.items() if e.window is not None}
        usage = await usage_of(d, env, customer_id, resource_id, windows)
        for feature_id in sorted(granted_features):
            feature = await d.documents.get("features", env, feature_id)
            if feature is None or feature.archived_at is not None:
                continue
            eff = granted_features[feature_id]
            why = _decide(feature, eff, usage.get(feature_id), True, None, []) or \
                _credits_denial(feature, pools, None)
            features.append(FeatureAccess(feature=feature, effective=eff,
                                          usage=usage.get(feature_id),
                                          granted=why is None, denied=why))
    nothing = not (credits or sources.subscriptions or sources.promotions)
    return CustomerEntitlements(denied="NoActiveSubscription" if nothing else None,
                                features=features, credits=credits)
