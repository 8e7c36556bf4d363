"""GraphQL subscription sources: the Subscription root's fields, each a source stream of
the live feed's hub (gateway/feed/hub.py) for the connection's environment — committed
pool balances and usage counters from the runtime's commit hook, and the domain's notices
(entitlements changed, package published) — with the feed's bounded, coalescing backlog.
The protocol that runs them is gateway/graphql/realtime.py; an operation there is the
GraphQL context (`info.context`): `env`, `domain`, `conn.hub`, `conn.overflowed`,
`streams`.

    creditBalanceUpdated    a pool's balance changed (consumption, grant, void, expiry)
    usageUpdatedV2          a feature's usage changed (FEATURE), or a pool's consumption
                            (CREDIT, the currency's id)
    usageUpdated            a feature's usage changed, with the customer's Entitlement
    entitlementsUpdatedV2   a customer's entitlements changed (a subscription or
    entitlementsUpdated     promotion written): the entitlements state of the customer
                            and of each resource it has subscriptions for
    packagePublished        a plan or add-on version was published

The payloads are built by the entitlement resolvers' builders (entitlements.py) so they
match what `entitlementsState` and `entitlement` answer. `accountId` and `environmentId`
are the environment's name (creditd has no accounts).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from graphql import GraphQLResolveInfo

from engine.core.usage import usage_in_period
from engine.domain import access
from engine.domain.context import require_currency
from engine.domain.entitlements import credit_period_end, effective_entitlements, period_starts
from engine.domain.errors import DomainError
from engine.domain.subscriptions.catch_up import customer_subscriptions
from engine.times import iso
from gateway.feed.hub import Hub, Watcher
from gateway.graphql.resolvers import entitlements
from gateway.graphql.resolvers.common import currency_json
from gateway.wire import amount_out

__all__ = ["SUBSCRIPTIONS"]

# An operation of the websocket protocol (realtime._Operation), as the sources use it.
_Operation = Any

Convert = Callable[[Any, Any, Any], Awaitable[list[Any]]]


class _Stream:
    """A subscription's source stream: the payloads its watcher's items make, in order.
    Ends when the watcher overflowed (the connection is closing then)."""

    def __init__(self, hub: Hub, watcher: Watcher, convert: Convert, op: _Operation) -> None:
        self._hub = hub
        self._watcher = watcher
        self._convert = convert
        self._op = op
        self._ready: deque[Any] = deque()
        self._closed = False

    def __aiter__(self) -> _Stream:
        return self

    async def __anext__(self) -> Any:
        watcher = self._watcher
        while not self._ready:
            if self._closed or watcher.overflowed:
                raise StopAsyncIteration
            await watcher.wake.wait()
            if watcher.overflowed:
                raise StopAsyncIteration
            for key, item in watcher.take():
                self._ready.extend(await self._convert(self._op, key, item))
        return self._ready.popleft()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._hub.unwatch(self._watcher)

    async def aclose(self) -> None:
        self.close()


def _source(kinds: frozenset[str], convert: Convert) -> Callable[..., Any]:
    def source(_root: Any, info: GraphQLResolveInfo) -> _Stream:
        op: _Operation = info.context
        hub = op.conn.hub
        watcher = hub.watch(op.env, kinds)  # LimitReached: the connection closes (1013)
        watcher.on_overflow = op.conn.overflowed
        stream = _Stream(hub, watcher, convert, op)
        op.streams.append(stream)
        return stream
    return source


def _ids(op: _Operation) -> dict[str, str]:
    return {"accountId": op.env, "environmentId": op.env}


async def _credit_balance(op: _Operation, _key: Any, item: Any) -> list[Any]:
    customer_id, b = item
    try:
        currency = await require_currency(op.domain, op.env, b.currency_id,
                                          allow_archived=True)
    except DomainError:
        return []  # the currency is gone: nothing to say about it
    return [{
        **_ids(op), "customerId": customer_id, "resourceId": b.resource_id,
        "currencyId": b.currency_id, "currency": currency_json(currency),
        "currentBalance": amount_out(b.current_balance),
        "totalConsumed": amount_out(b.total_consumed),
        "totalGranted": amount_out(b.total_granted),
        "validUntil": None,
    }]


async def _usage_v2(op: _Operation, key: Any, item: Any) -> list[Any]:
    d, env = op.domain, op.env
    customer_id, view = item
    now = d.now_ms()
    sources = await effective_entitlements(d, env, customer_id, view.resource_id, now)
    if key[0] == "b":  # a pool: the credit entitlement's consumption
        end = credit_period_end(sources, view.currency_id, now)
        return [{**_ids(op), "customerId": customer_id, "resourceId": view.resource_id,
                 "entitlementReference": {"id": view.currency_id, "type": "CREDIT"},
                 "usage": {"currentUsage": amount_out(view.total_consumed),
                           "usageUpdatedAt": iso(view.timestamp),
                           "usagePeriodStart": None, "usagePeriodEnd": iso(end)}}]
    # A feature's counter, as the entitlement reads count it: 0 in a later window.
    window = period_starts(sources).get(view.feature_id)
    current = usage_in_period(view.current_usage, view.period_start,
                              window[0] if window else None)
    return [{**_ids(op), "customerId": customer_id, "resourceId": view.resource_id,
             "entitlementReference": {"id": view.feature_id, "type": "FEATURE"},
             "usage": {"currentUsage": amount_out(current),
                       "usageUpdatedAt": iso(view.updated_at),
                       "usagePeriodStart": iso(window[0]) if window else None,
                       "usagePeriodEnd": iso(window[1]) if window else None}}]


async def _usage_v1(op: _Operation, _key: Any, item: Any) -> list[Any]:
    customer_id, view = item
    checked = await access.check_feature(op.domain, op.env, customer_id, view.feature_id,
                                         resource_id=view.resource_id)
    if checked.effective is None:
        return []  # no entitlement to the feature: Stigg's usageUpdated is about one
    entitlement = entitlements.entitlement_json(checked, customer_id,
                                                           view.resource_id)
    window = checked.effective.window
    return [{"entitlement": entitlement, "usage": {
        **_ids(op), "customerId": customer_id, "resourceId": view.resource_id,
        "featureId": view.feature_id, "currentUsage": entitlement["currentUsage"] or 0,
        # UsageMeasurementUpdated's times are epoch milliseconds (Float).
        "usagePeriodStart": window[0] if window else None,
        "usagePeriodEnd": window[1] if window else None,
        "nextResetDate": window[1] if window else None}}]


async def _entitlements(op: _Operation, customer_id: str) -> list[tuple[Any, dict]]:
    """(resource id, EntitlementsState) for the customer and each resource it has
    subscriptions for, as `entitlementsState` answers them."""
    resources: list[str | None] = [None]
    for sub in await customer_subscriptions(op.domain, op.env, customer_id):
        if sub.resource_id not in resources:
            resources.append(sub.resource_id)
    state = entitlements.entitlements_state
    return [(resource, await state(None, _Info(op), {"customerId": customer_id,
                                                      "resourceId": resource}))
            for resource in resources]


class _Info:
    """What a resolver reads of GraphQLResolveInfo: the context."""

    def __init__(self, context: Any) -> None:
        self.context = context


async def _entitlements_v2(op: _Operation, _key: Any, customer_id: str) -> list[Any]:
    return [{**_ids(op), "customerId": customer_id, "resourceId": resource,
             "accessDeniedReason": state["accessDeniedReason"],
             "entitlements": state["entitlementsV2"]}
            for resource, state in await _entitlements(op, customer_id)]


async def _entitlements_v1(op: _Operation, _key: Any, customer_id: str) -> list[Any]:
    return [{**_ids(op), "customerId": customer_id, "resourceId": resource,
             "accessDeniedReason": state["accessDeniedReason"],
             "entitlements": state["entitlements"]}
            for resource, state in await _entitlements(op, customer_id)]


async def _package(op: _Operation, _key: Any, package: dict[str, Any]) -> list[Any]:
    return [{**_ids(op), **package, "environmentId": op.env}]


SUBSCRIPTIONS: dict[str, Callable[..., Any]] = {  # in Stigg's schema's order
    "creditBalanceUpdated": _source(frozenset({"balance"}), _credit_balance),
    "entitlementsUpdated": _source(frozenset({"entitlements"}), _entitlements_v1),
    "entitlementsUpdatedV2": _source(frozenset({"entitlements"}), _entitlements_v2),
    "packagePublished": _source(frozenset({"package"}), _package),
    "usageUpdated": _source(frozenset({"usage"}), _usage_v1),
    "usageUpdatedV2": _source(frozenset({"usage", "balance"}), _usage_v2),
}
