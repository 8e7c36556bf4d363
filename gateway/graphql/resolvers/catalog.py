"""The catalog: paywall, products, coupons, promotional entitlements.

    paywall                       paywall.paywall (shaped by routes/paywall.paywall_json)
    products                      packages.list_products
    coupons                       coupons.list_coupons
    createOneCoupon               coupons.create
    grantPromotionalEntitlements  promotions.grant
    revokePromotionalEntitlement  promotions.revoke

`products` and `coupons` are Connections over the domain's creation-ordered pages: `paging`
(`first`/`after` or `last`/`before`, cursors as the edges give them), `sorting` by
`createdAt` (Stigg's default: newest first) and the filters the domain can answer
(`refId`/`id` equal, `status`, a coupon's `type`); any other filter is refused, naming it,
rather than ignored. `totalCount` is counted only when selected.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import msgspec
from graphql import GraphQLResolveInfo

from engine.domain import coupons, packages, promotions
from engine.domain.errors import DomainError, bad_input, field_of
from engine.domain.paywall import CustomerView, PaywallQuery, paywall
from engine.domain.stored import Feature, unset_none
from gateway.graphql.resolvers.common import context
from gateway.routes.paywall import paywall_json
from gateway.shapes.catalog import (
    PROMOTION_PERIODS,
    coupon_json,
    product_json,
    promotional_entitlement_json,
)
from gateway.shapes.customers import customer_subscription_json, subscription_packages

__all__ = ["MUTATIONS", "QUERIES"]

PAGE_MAX = 100
# A customer holds at most one promotion per feature.
PROMOTIONS_MAX = 10_000
# A cursor after every row (creation time in ms far beyond any clock): newest-first pages
# are the domain's pages read backwards from it.
_END = "100000000000000000.~"


# -- connections -----------------------------------------------------------------------------

Fetch = Callable[[int, str | None, str | None], Awaitable[Any]]  # (limit, after, before)


def _whole(value: Any, field: str, *, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, Decimal)) or value != int(value):
        raise bad_input("must be a whole number", field)
    if value < minimum:
        raise bad_input(f"must be at least {minimum}", field)
    return int(value)


def _newest_first(sorting: list[dict] | None) -> bool:
    sorting = sorting or []
    for i, s in enumerate(sorting):
        if s["field"] != "createdAt":
            raise bad_input("only createdAt sorts (the creation order)", f"sorting[{i}].field")
    if len(sorting) > 1:
        raise bad_input("sort by createdAt only, once", "sorting")
    return not sorting or sorting[0]["direction"] == "DESC"


def _cursor(doc: Any) -> str:
    # The domain's page cursors: `createdAt.id` (persistence/pages.py).
    return f"{doc.created_at}.{doc.id}"


async def _connection(fetch: Fetch, paging: dict | None, sorting: list[dict] | None,
                      node: Callable[[Any], dict[str, Any]]) -> dict[str, Any]:
    paging = paging or {}
    first, last = paging.get("first"), paging.get("last")
    after, before = paging.get("after"), paging.get("before")
    if first is not None and last is not None:
        raise bad_input("give first or last, not both", "paging.last")
    if after is not None and before is not None:
        raise bad_input("give after or before, not both", "paging.before")
    backward = last is not None or (before is not None and first is None)
    size = last if backward else first
    size = 10 if size is None else size
    if not 1 <= size <= PAGE_MAX:
        raise bad_input(f"must be from 1 to {PAGE_MAX}",
                        "paging.last" if backward else "paging.first")
    cursor = before if backward else after
    # Newest first reverses the domain's (creation) order: going forward is going back.
    ascending = backward == _newest_first(sorting)
    if ascending:
        page = await fetch(size, cursor, None)
        more = page.next is not None
    else:
        page = await fetch(size, None, cursor or _END)
        more = page.prev is not None
    items = list(page.items)
    if ascending == backward:  # the domain's order is the reverse of the answer's
        items.reverse()
    edges = [{"__typename": type(d).__name__ + "Edge", "cursor": _cursor(d), "node": node(d)}
             for d in items]

    async def total(_info: GraphQLResolveInfo) -> int:
        count, mark = 0, None
        while True:
            found = await fetch(PAGE_MAX, mark, None)
            count += len(found.items)
            if found.next is None:
                return count
            mark = found.next

    return {
        "edges": edges,
        "pageInfo": {
            "startCursor": edges[0]["cursor"] if edges else None,
            "endCursor": edges[-1]["cursor"] if edges else None,
            "hasNextPage": more if not backward else cursor is not None,
            "hasPreviousPage": more if backward else cursor is not None,
        },
        "totalCount": total,
    }


_FILTER_OPS = frozenset({"eq", "in", "neq", "notIn"})


def _one_of(filter_: dict | None, name: str, values: frozenset[str]) -> frozenset[str]:
    """The values of an enum field's comparison (`{eq|in|neq|notIn}`) within `values`."""
    given = (filter_ or {}).get(name)
    if not given:
        return values
    out = values
    for op, value in given.items():
        if value is None:
            continue
        if op not in _FILTER_OPS:
            raise bad_input("only eq, in, neq and notIn compare it", f"filter.{name}.{op}")
        if op == "eq":
            out = out & {value}
        elif op == "in":
            out = out & set(value)
        elif op == "neq":
            out = out - {value}
        else:
            out = out - set(value)
    return out


def _equal(filter_: dict | None, names: tuple[str, ...]) -> str | None:
    """The one value the filter's `refId`/`id` equality names (None: any)."""
    wanted = None
    for name in names:
        for op, value in ((filter_ or {}).get(name) or {}).items():
            if value is None:
                continue
            if op != "eq":
                raise bad_input("only eq compares it", f"filter.{name}.{op}")
            if wanted is not None and wanted != value:
                raise bad_input("names another id", f"filter.{name}.eq")
            wanted = value
    return wanted


def _only(filter_: dict | None, allowed: set[str]) -> None:
    for name, value in (filter_ or {}).items():
        if value is not None and name not in allowed:
            raise bad_input(f"filtering by {name} is not served (filter by "
                            f"{', '.join(sorted(allowed))})", f"filter.{name}")


# -- paywall ---------------------------------------------------------------------------------

async def _plan_name(info: GraphQLResolveInfo, plan_id: str) -> str:
    d, env = context(info)
    doc = await packages.get_package(d.documents, env, "plan", plan_id)
    return plan_id if doc is None else doc.display_name or plan_id


def _with_plans(product: dict[str, Any]) -> dict[str, Any]:
    """Product.productSettings' downgradePlan / subscriptionStartPlan, read only when
    selected."""
    settings = product.get("productSettings")
    if not settings:
        return product
    for name in ("downgradePlan", "subscriptionStartPlan"):
        plan_id = settings.get(name + "Id")
        if plan_id is None:
            settings[name] = None
            continue

        async def plan(info: GraphQLResolveInfo, plan_id: str = plan_id) -> dict[str, Any]:
            return {"__typename": "Plan", "id": plan_id, "refId": plan_id,
                    "displayName": await _plan_name(info, plan_id)}
        settings[name] = plan
    return product


async def _customer_parts(d: Any, env: str, view: CustomerView) -> tuple[
        list[dict[str, Any]], dict[str, Any] | None, list[dict[str, Any]]]:
    """The customer's running subscriptions whole, its coupon and its promotional
    entitlements (revoked ones left out), as Stigg's Customer shows them."""
    customer = view.customer
    subscriptions = [customer_subscription_json(s, await subscription_packages(d, env, s))
                     for s in view.active]
    coupon_id = unset_none(customer.coupon_id)
    coupon = None
    if coupon_id:
        doc = await d.documents.get("coupons", env, coupon_id)
        coupon = None if doc is None else coupon_json(doc)
    docs, _, _ = await promotions.list_promotions(d, env, promotions.PromotionsQuery(
        customer_id=customer.id, limit=PROMOTIONS_MAX))
    features = await _features(d, env, {p.feature_id for p in docs})
    now = d.documents.now_ms()
    return subscriptions, coupon, [
        promotional_entitlement_json(p, features[p.feature_id], now=now) for p in docs]


async def resolve_paywall(_: Any, info: GraphQLResolveInfo, input: dict) -> dict:
    d, env = context(info)
    if input.get("offerId") is not None:
        raise bad_input("offers are not served", "offerId")
    found = await paywall(d, env, PaywallQuery(
        product_id=input.get("productId"), country=input.get("billingCountryCode"),
        customer_id=input.get("customerId"), resource_id=input.get("resourceId"),
        include_hidden=bool(input.get("includeHiddenPlans")),
        all_countries=bool(input.get("fetchAllCountriesPrices"))))
    subscriptions = coupon = promotional = None
    if found.customer is not None:
        subscriptions, coupon, promotional = await _customer_parts(d, env, found.customer)
    out = paywall_json(found, subscriptions=subscriptions, coupon=coupon,
                       promotional_entitlements=promotional)
    for plan in [*out["plans"], *(s["plan"] for s in subscriptions or ())]:
        _with_plans(plan["product"])
    return out


# -- products --------------------------------------------------------------------------------

_PRODUCT_STATUSES = frozenset({"PUBLISHED", "ARCHIVED"})


async def resolve_products(_: Any, info: GraphQLResolveInfo, filter: dict | None = None,
                           paging: dict | None = None, sorting: list | None = None) -> dict:
    d, env = context(info)
    _only(filter, {"refId", "id", "status"})
    ident = _equal(filter, ("refId", "id"))
    statuses = _one_of(filter, "status", _PRODUCT_STATUSES)

    async def fetch(limit: int, after: str | None, before: str | None) -> Any:
        if not statuses:
            return _EMPTY
        return await packages.list_products(d.documents, env, packages.ProductsQuery(
            limit=limit, after=after, before=before, id=ident,
            statuses=() if statuses == _PRODUCT_STATUSES else tuple(statuses)))

    return await _connection(fetch, paging, sorting,
                             lambda doc: _with_plans(product_json(doc.id, doc)))


class _Nothing(msgspec.Struct, frozen=True):
    items: tuple = ()
    next: None = None
    prev: None = None


_EMPTY = _Nothing()


# -- coupons ---------------------------------------------------------------------------------

_COUPON_STATUSES = frozenset({"ACTIVE", "ARCHIVED"})
_COUPON_TYPES = frozenset({"FIXED", "PERCENTAGE"})


async def resolve_coupons(_: Any, info: GraphQLResolveInfo, filter: dict | None = None,
                          paging: dict | None = None, sorting: list | None = None) -> dict:
    d, env = context(info)
    _only(filter, {"refId", "id", "status", "type"})
    ident = _equal(filter, ("refId", "id"))
    statuses = _one_of(filter, "status", _COUPON_STATUSES)
    types = _one_of(filter, "type", _COUPON_TYPES)

    async def fetch(limit: int, after: str | None, before: str | None) -> Any:
        if not statuses or not types:
            return _EMPTY
        return await coupons.list_coupons(d, env, coupons.CouponsQuery(
            limit=limit, after=after, before=before, id=ident,
            type=None if types == _COUPON_TYPES else next(iter(types)),
            statuses=frozenset() if statuses == _COUPON_STATUSES else statuses))

    return await _connection(fetch, paging, sorting, coupon_json)


def _convert(value: dict[str, Any], kind: type, at: str = "") -> Any:
    """`value` (REST's field names) as the domain's input Struct, its constraints checked;
    BadUserInput naming the field."""
    try:
        return msgspec.convert(value, kind)
    except msgspec.ValidationError as exc:
        message, field = field_of(exc)
        path = ".".join(part for part in (at, field) if part) or None
        raise bad_input(message, path) from None


def _metadata(value: Any, field: str) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise bad_input("must be an object of string values", field)
    return value


async def create_one_coupon(_: Any, info: GraphQLResolveInfo, input: dict) -> dict:
    d, env = context(info)
    percent, amounts = input.get("percentOff"), input.get("amountsOff")
    kind, value = input.get("type"), input.get("discountValue")
    if value is not None:
        # Stigg's older form: the type and one value.
        if percent is not None or amounts is not None:
            raise bad_input("give discountValue or percentOff/amountsOff, not both",
                            "discountValue")
        if kind != "PERCENTAGE":
            raise bad_input("a FIXED coupon takes amountsOff (amounts with their currency)",
                            "discountValue")
        percent = value
    if kind is not None and percent is not None and amounts is None and kind != "PERCENTAGE":
        raise bad_input("a FIXED coupon takes amountsOff, not percentOff", "type")
    if kind is not None and amounts is not None and percent is None and kind != "FIXED":
        raise bad_input("a PERCENTAGE coupon takes percentOff, not amountsOff", "type")
    months = input.get("durationInMonths")
    body = {
        "id": input["refId"], "name": input["name"], "description": input.get("description"),
        "percentOff": percent,
        "amountsOff": None if amounts is None else [
            {"amount": a["amount"], "currency": a.get("currency") or "USD"} for a in amounts],
        "durationInMonths": None if months is None else _whole(months, "durationInMonths"),
        "metadata": _metadata(input.get("additionalMetaData"), "additionalMetaData"),
    }
    try:
        doc = await coupons.create(d, env, _convert(body, coupons.CouponCreate))
    except DomainError as exc:
        if exc.field == "id":
            exc.field = "refId"
        raise
    return coupon_json(doc)


# -- promotional entitlements ----------------------------------------------------------------

_ITEM_FIELDS = ("featureId", "customEndDate", "enumValues", "hasSoftLimit",
                "hasUnlimitedUsage", "isVisible", "resetPeriod",
                "monthlyResetPeriodConfiguration", "weeklyResetPeriodConfiguration",
                "yearlyResetPeriodConfiguration")


def _promotion_in(item: dict[str, Any], at: str) -> promotions.PromotionIn:
    body = {k: item[k] for k in _ITEM_FIELDS if item.get(k) is not None}
    body["period"] = PROMOTION_PERIODS[item["period"]]
    limit = item.get("usageLimit")
    if limit is not None:
        body["usageLimit"] = _whole(limit, f"{at}.usageLimit")
    return _convert(body, promotions.PromotionIn, at)


async def _features(d: Any, env: str, ids: set[str]) -> dict[str, Feature | None]:
    return {fid: await d.documents.get("features", env, fid) for fid in ids}


def _customer_field(exc: DomainError) -> DomainError:
    # The domain names the customer as REST's path does (`id`).
    if exc.field == "id":
        exc.field = "customerId"
    return exc


async def grant_promotional_entitlements(_: Any, info: GraphQLResolveInfo,
                                         input: dict) -> list[dict]:
    d, env = context(info)
    items = [_promotion_in(item, f"promotionalEntitlements[{i}]")
             for i, item in enumerate(input["promotionalEntitlements"])]
    try:
        docs = await promotions.grant(d, env, input["customerId"], items)
    except DomainError as exc:
        raise _customer_field(exc) from None
    features = await _features(d, env, {doc.feature_id for doc in docs})
    now = d.documents.now_ms()
    return [promotional_entitlement_json(doc, features[doc.feature_id], now=now)
            for doc in docs]


async def revoke_promotional_entitlement(_: Any, info: GraphQLResolveInfo,
                                         input: dict) -> dict:
    d, env = context(info)
    try:
        doc = await promotions.revoke(d, env, input["customerId"], input["featureId"])
    except DomainError as exc:
        if exc.code == "NotFound":
            raise DomainError(404, "PromotionalEntitlementNotFoundError", exc.message,
                              "featureId") from None
        raise _customer_field(exc) from None
    feature = await d.documents.get("features", env, doc.feature_id)
    return promotional_entitlement_json(doc, feature, now=d.documents.now_ms())


QUERIES = {"paywall": resolve_paywall, "products": resolve_products,
           "coupons": resolve_coupons}
MUTATIONS = {"createOneCoupon": create_one_coupon,
             "grantPromotionalEntitlements": grant_promotional_entitlements,
             "revokePromotionalEntitlement": revoke_promotional_entitlement}
