"""Usage: calculated usage reports, raw events, and what either would cost.

Calculated usage (`report_usage`): the batch is checked whole (each refusal names
`usages[i].field`); then each customer's measurements are applied by its actor as one
atomic step, credit burn included. Raw events (`report_events`): checked whole, matched
against every metered feature of the environment, then applied per customer
(`engine.core.usage`), customers concurrently; the answer comes once they are durable, so
an accepted event has already moved the balance.

Reset periods: for a feature whose entitlement resets (`engine.domain.entitlements`), each
measurement and metered event carries the start of the customer's current usage window,
so the engine restarts the counter at the boundary; results name the window.

Estimates (`estimate_usage`, `estimate_event`) compute the credits a report or an event
would burn, recording nothing.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import anyio
import msgspec

from engine.core.commands import (
    BalanceView,
    Burn,
    Dimensions,
    EventsReply,
    IngestEvents,
    Measurement,
    Metered,
    MeteredEvent,
    Refused,
    ReportUsage,
    UsageReply,
    UsageResult,
)
from engine.core.meters import ADDITIVE, Meter, contribution, matches
from engine.core.usage import burn_units
from engine.domain.context import Domain, check_key, engine_id, require_customer, scoped_key
from engine.domain.credits import pool_balance
from engine.domain.entitlements import effective_entitlements, period_starts, usage_of
from engine.domain.errors import DomainError, bad_input, from_refusal
from engine.domain.features import credit_rate_units, require_feature
from engine.domain.stored import Feature

__all__ = ["EVENT_FUTURE_MS_MAX", "ITEMS_MAX", "CostEstimate", "CostLine", "Estimates",
           "EventEstimateInput", "EventInput", "EventsReport", "UsageEstimateInput",
           "UsageInput", "UsageReport", "check_batch", "estimate_event", "estimate_usage",
           "report_events", "report_usage"]

ITEMS_MAX = 1000
EVENT_FUTURE_MS_MAX = 24 * 3_600_000  # clocks drift; a day ahead is a mistake

Window = tuple[int, int]
Windows = dict[str, Window]


class UsageInput(msgspec.Struct, frozen=True, kw_only=True):
    customer_id: str
    feature_id: str
    value: int  # units; negative for a DELTA that lowers the usage
    set_value: bool = False  # SET: the usage becomes `value`; else it adds `value`
    created_at: int | None = None
    dimensions: Dimensions | None = None
    idempotency_key: str | None = None  # as sent; checked and scoped here
    resource_id: str | None = None


class UsageReport(msgspec.Struct, frozen=True, kw_only=True):
    # Per item, in the batch's order: the engine's result and the item's usage window
    # (None: its feature does not reset).
    results: list[UsageResult]
    windows: list[Window | None]
    # The balances the batch left, per (customer id, currency, resource), first-seen order.
    balances: dict[tuple[str, str, str | None], BalanceView]


class EventInput(msgspec.Struct, frozen=True, kw_only=True):
    customer_id: str
    event_name: str
    idempotency_key: str
    timestamp: int | None = None  # None: now
    dimensions: Dimensions | None = None
    resource_id: str | None = None


class EventsReport(msgspec.Struct, frozen=True, kw_only=True):
    accepted: int
    duplicates: int
    burns: list[tuple[str, Burn]]  # (customer id, what its events burned)


class UsageEstimateInput(msgspec.Struct, frozen=True, kw_only=True):
    customer_id: str
    feature_id: str
    value: int
    set_value: bool = False
    resource_id: str | None = None


class EventEstimateInput(msgspec.Struct, frozen=True, kw_only=True):
    customer_id: str
    event_name: str
    dimensions: Dimensions | None = None
    resource_id: str | None = None


class CostLine(msgspec.Struct, frozen=True, kw_only=True):
    feature_id: str
    cost: int
    warning: str | None = None


class CostEstimate(msgspec.Struct, frozen=True, kw_only=True):
    currency_id: str
    current_balance: int
    estimated_cost: int
    lines: list[CostLine]

    @property
    def balance_after(self) -> int:
        return self.current_balance - self.estimated_cost

    @property
    def would_overdraft(self) -> bool:
        return self.estimated_cost > self.current_balance


class Estimates(msgspec.Struct, frozen=True, kw_only=True):
    estimates: list[CostEstimate]
    warnings: list[str]


def check_batch(items: list[Any], field: str) -> None:
    if not 1 <= len(items) <= ITEMS_MAX:
        raise bad_input(f"must hold 1 to {ITEMS_MAX} items", field)


def _renumber(refused: Refused, indexes: list[int], name: str) -> DomainError:
    """The engine names a measurement by its index in the customer's group; the client
    sent it at another index of the whole batch."""
    error = from_refusal(refused)
    field = refused.field or ""
    prefix = f"{name}["
    if field.startswith(prefix):
        local, _, rest = field[len(prefix):].partition("]")
        if local.isdigit():
            error.field = f"{name}[{indexes[int(local)]}]{rest}"
    return error


async def _windows(d: Domain, env: str, customer_id: str, resource_id: str | None,
                   cache: dict[tuple[str, str | None], Windows]) -> Windows:
    """The current usage window of each of the customer's resetting features."""
    key = (customer_id, resource_id)
    found = cache.get(key)
    if found is None:
        sources = await effective_entitlements(d, env, customer_id, resource_id, d.now_ms())
        found = cache[key] = period_starts(sources)
    return found


async def report_usage(d: Domain, env: str, items: list[UsageInput], *,
                       field: str = "usages") -> UsageReport:
    """Apply a usage batch: every item is checked before any is applied; then one
    customer's measurements at a time, in batch order. A refusal stops the batch (the
    error names the item); the customers before it stay applied (docs/api.md)."""
    check_batch(items, field)
    windows: dict[tuple[str, str | None], Windows] = {}
    item_windows: list[Window | None] = []
    indexes: dict[str, list[int]] = defaultdict(list)
    groups: dict[str, list[Measurement]] = defaultdict(list)
    checked: set[str] = set()  # customers known to exist (a batch names few, many times)
    features: dict[str, dict[str, Any]] = {}
    for i, item in enumerate(items):
        at = f"{field}[{i}]"
        if item.customer_id not in checked:
            await require_customer(d, env, item.customer_id, field=f"{at}.customerId")
            checked.add(item.customer_id)
        feature = features.get(item.feature_id)
        if feature is None:
            feature = features[item.feature_id] = await require_feature(
                d, env, item.feature_id, field=f"{at}.featureId")
        if feature.feature_type != "NUMBER":
            raise bad_input(f"feature {item.feature_id!r} is {feature.feature_type}, "
                            "not a NUMBER feature that can be metered", f"{at}.featureId")
        if item.set_value and item.value < 0:
            raise bad_input("a SET value must not be negative", f"{at}.value")
        if item.idempotency_key is not None:
            check_key(item.idempotency_key, f"{at}.idempotencyKey")
        rate = credit_rate_units(feature)
        customer = engine_id(env, item.customer_id)
        window = (await _windows(d, env, item.customer_id, item.resource_id,
                                 windows)).get(item.feature_id)
        item_windows.append(window)
        indexes[customer].append(i)
        groups[customer].append(Measurement(
            feature_id=item.feature_id, value=item.value, set_value=item.set_value,
            resource_id=item.resource_id, created_at=item.created_at,
            dimensions=item.dimensions,
            currency_id=rate[0] if rate else None, credit_rate=rate[1] if rate else None,
            idempotency_key=(None if item.idempotency_key is None
                             else scoped_key("usage", item.idempotency_key)),
            period_start=window[0] if window is not None else None))
    results: list[Any] = [None] * len(items)
    balances: dict[tuple[str, str, str | None], BalanceView] = {}
    for customer, group in groups.items():
        reply = await d.runtime.submit(customer, ReportUsage(measurements=tuple(group)))
        if isinstance(reply, Refused):
            raise _renumber(reply, indexes[customer], field)
        assert isinstance(reply, UsageReply)
        for i, result in zip(indexes[customer], reply.results):
            results[i] = result
            if result.balance is not None:
                b = result.balance
                balances[(items[i].customer_id, b.currency_id, b.resource_id)] = b
    return UsageReport(results=results, windows=item_windows, balances=balances)


def _metered(metered: list[tuple[Feature, Meter]], event_name: str,
             dims: dict[str, Any], windows: Windows | None = None) -> tuple[Metered, ...]:
    """What an event means for each metered feature it matches (with the customer's
    current usage window of the feature, when its entitlement resets)."""
    out = []
    for doc, meter in metered:
        if not matches(meter, event_name, dims):
            continue
        value = contribution(meter, dims)
        if value is None:
            continue  # matched, but lacks the aggregated field: nothing to add
        rate = credit_rate_units(doc)
        window = windows.get(doc.id) if windows else None
        out.append(Metered(doc.id, meter.aggregation.function.value, value,
                           rate[0] if rate else None, rate[1] if rate else None,
                           window[0] if window is not None else None))
    return tuple(out)


async def report_events(d: Domain, env: str, items: list[EventInput], *,
                        field: str = "events") -> EventsReport:
    """Ingest raw events: every one is checked before any is applied; customers'
    events are applied concurrently, each customer's in one step. A repeated
    idempotency key counts as a duplicate and changes nothing."""
    check_batch(items, field)
    metered = await d.documents.metered_features(env)
    now = d.now_ms()
    groups: dict[str, list[MeteredEvent]] = defaultdict(list)
    checked: set[str] = set()
    windows: dict[tuple[str, str | None], Windows] = {}
    for i, item in enumerate(items):
        at = f"{field}[{i}]"
        if item.customer_id not in checked:
            await require_customer(d, env, item.customer_id, field=f"{at}.customerId")
            checked.add(item.customer_id)
        if not item.event_name:
            raise bad_input("must not be empty", f"{at}.eventName")
        check_key(item.idempotency_key, f"{at}.idempotencyKey")
        ts = item.timestamp
        if ts is None:
            ts = now
        elif ts > now + EVENT_FUTURE_MS_MAX:
            raise bad_input("is more than a day in the future", f"{at}.timestamp")
        groups[engine_id(env, item.customer_id)].append(MeteredEvent(
            key=item.idempotency_key, event_name=item.event_name, timestamp=ts,
            resource_id=item.resource_id, dimensions=item.dimensions,
            metered=_metered(metered, item.event_name, item.dimensions or {},
                             await _windows(d, env, item.customer_id, item.resource_id,
                                            windows) if metered else None)))
    replies: dict[str, EventsReply] = {}

    async def ingest(customer: str, events: list[MeteredEvent]) -> None:
        reply = await d.runtime.submit(customer, IngestEvents(events=tuple(events)))
        assert isinstance(reply, EventsReply), reply
        replies[customer] = reply

    # Customers are independent: their actors apply their events concurrently.
    async with anyio.create_task_group() as tg:
        for customer, events in groups.items():
            tg.start_soon(ingest, customer, events)
    return EventsReport(
        accepted=sum(r.accepted for r in replies.values()),
        duplicates=sum(r.duplicates for r in replies.values()),
        burns=[(customer.split("/", 1)[1], b)
               for customer, reply in replies.items() for b in reply.burns])


# -- estimates -----------------------------------------------------------------------------


async def _current(d: Domain, customer: str, currency_id: str,
                   resource_id: str | None) -> int:
    view = await pool_balance(d, customer, currency_id, resource_id)
    return view.current_balance if view else 0


async def _estimates(d: Domain, customer: str, resource_id: str | None,
                     costs: list[tuple[str, CostLine]]) -> list[CostEstimate]:
    """Estimates per currency from (currency, line) pairs, against current balances."""
    by_currency: dict[str, list[CostLine]] = defaultdict(list)
    for currency, line in costs:
        by_currency[currency].append(line)
    return [CostEstimate(currency_id=currency,
                         current_balance=await _current(d, customer, currency, resource_id),
                         estimated_cost=sum(line.cost for line in lines), lines=lines)
            for currency, lines in by_currency.items()]


async def estimate_usage(d: Domain, env: str, q: UsageEstimateInput) -> Estimates:
    """The credits a usage report would burn, recording nothing. A feature that is
    missing or not credit-based is a warning, not a refusal."""
    await require_customer(d, env, q.customer_id)
    feature = await d.documents.get("features", env, q.feature_id)
    if feature is None or feature.archived_at is not None:
        return Estimates(estimates=[], warnings=["FEATURE_NOT_FOUND"])
    rate = credit_rate_units(feature)
    if rate is None:
        return Estimates(estimates=[], warnings=["FEATURE_NOT_CREDIT_BASED"])
    delta = q.value
    if q.set_value:
        window = (await _windows(d, env, q.customer_id, q.resource_id, {})).get(q.feature_id)
        usage = await usage_of(d, env, q.customer_id, q.resource_id,
                               {q.feature_id: window} if window else {})
        delta = q.value - usage.get(q.feature_id, (0, 0))[0]
    cost = burn_units(delta, rate[1]) if delta > 0 else 0
    estimates = await _estimates(d, engine_id(env, q.customer_id), q.resource_id,
                                 [(rate[0], CostLine(feature_id=q.feature_id, cost=cost))])
    return Estimates(estimates=estimates, warnings=[])


async def estimate_event(d: Domain, env: str, q: EventEstimateInput) -> Estimates:
    """The credits an event would burn through every meter it matches, recording
    nothing; a meter that does not add up (max, unique count) is a warned line of 0."""
    await require_customer(d, env, q.customer_id)
    metered = await d.documents.metered_features(env)
    lines: list[tuple[str, CostLine]] = []
    matched = _metered(metered, q.event_name, q.dimensions or {})
    for m in matched:
        if m.currency_id is None or m.credit_rate is None:
            continue
        if m.function in ADDITIVE:
            assert isinstance(m.value, int)
            lines.append((m.currency_id, CostLine(
                feature_id=m.feature_id, cost=burn_units(max(m.value, 0), m.credit_rate))))
        else:
            lines.append((m.currency_id, CostLine(feature_id=m.feature_id, cost=0,
                                                  warning="UNSUPPORTED_AGGREGATION")))
    warnings = []
    if not matched:
        warnings.append("FEATURE_NOT_FOUND")
    elif not lines:
        warnings.append("FEATURE_NOT_CREDIT_BASED")
    estimates = await _estimates(d, engine_id(env, q.customer_id), q.resource_id, lines)
    return Estimates(estimates=estimates, warnings=warnings)
