"""Features: the catalog of what customers use, and how raw events are metered into usage.

A feature is a document (`Catalog`, table `features`). Metered features carry a `meter`
(`engine.core.meters`), and may carry `creditRate {amount, currencyId}` — an extension the
official client sends through `extra_body`: how many credits of that currency one unit of
usage burns (one image = 5 "AI Tokens"). Reporting usage of such a feature consumes credits
atomically with the usage update.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Literal

import msgspec
from litestar import Request, Response, get, patch, post
from litestar.params import FromPath, FromQuery
from msgspec import UNSET, UnsetType

from engine.core.meters import Meter, MeterError, validate_meter
from gateway.context import environment, ok, services
from gateway.errors import ApiError, bad_input
from gateway.names import camel
from gateway.routes.common import public, require_currency, stamp
from gateway.wire import amount_in, amount_out, created_at_bounds, decode, limit_in

__all__ = ["ROUTES", "require_feature", "credit_rate_units"]

_BASE = "/api/v1/features"
FeatureType = Literal["BOOLEAN", "NUMBER", "ENUM"]
MeterType = Literal["None", "FLUCTUATING", "INCREMENTAL"]
FeatureStatus = Literal["NEW", "SUSPENDED", "ACTIVE"]


class EnumValue(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    display_name: str
    value: str


class UnitTransformation(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    divide: int
    feature_units: str | None = None
    feature_units_plural: str | None = None
    round: Literal["UP", "DOWN"] = "DOWN"


class CreditRate(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    amount: Decimal
    currency_id: str


class FeatureUpdate(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    # Absent (UNSET) leaves a field alone; null clears the optional ones.
    display_name: str | UnsetType = UNSET
    description: str | None | UnsetType = UNSET
    enum_configuration: list[EnumValue] | None | UnsetType = UNSET
    feature_units: str | None | UnsetType = UNSET
    feature_units_plural: str | None | UnsetType = UNSET
    metadata: dict[str, str] | None | UnsetType = UNSET
    meter: Meter | None | UnsetType = UNSET
    unit_transformation: UnitTransformation | None | UnsetType = UNSET
    feature_status: FeatureStatus | UnsetType = UNSET
    credit_rate: CreditRate | None | UnsetType = UNSET


class FeatureCreate(FeatureUpdate, forbid_unknown_fields=True, rename="camel"):
    id: str = ""
    feature_type: FeatureType | UnsetType = UNSET
    meter_type: MeterType | UnsetType = UNSET


_SIMPLE = ("display_name", "description", "feature_units", "feature_units_plural",
           "feature_status")


async def _apply(request: Request, doc: dict[str, Any], body: FeatureUpdate) -> None:
    """Copy what the body sets onto the document, validating as a whole."""
    for name in _SIMPLE:
        value = getattr(body, name)
        if value is not UNSET:
            doc[camel(name)] = value
    if body.metadata is not UNSET:
        doc["metadata"] = body.metadata or {}
    if body.enum_configuration is not UNSET:
        doc["enumConfiguration"] = msgspec.to_builtins(body.enum_configuration)
    if body.unit_transformation is not UNSET:
        t = body.unit_transformation
        if t is not None and t.divide < 1:
            raise bad_input("must be a positive integer", "unitTransformation.divide")
        doc["unitTransformation"] = msgspec.to_builtins(t)
    if body.meter is not UNSET:
        if body.meter is not None:
            try:
                validate_meter(body.meter)
            except MeterError as exc:
                raise bad_input(exc.reason, exc.field) from None
        doc["meter"] = msgspec.to_builtins(body.meter)
    if body.credit_rate is not UNSET:
        rate = body.credit_rate
        if rate is None:
            doc["creditRate"] = None
        else:
            currency = await require_currency(request, rate.currency_id,
                                              field="creditRate.currencyId")
            units = amount_in(rate.amount, "creditRate.amount")
            doc["creditRate"] = {"amount": amount_out(units), "currencyId": currency["id"]}
    if doc["featureType"] != "NUMBER":
        for name in ("meter", "creditRate"):
            if doc.get(name) is not None:
                raise bad_input("only NUMBER features are metered", name)
        if doc["meterType"] != "None":
            raise bad_input("only NUMBER features are metered", "meterType")
    elif doc.get("meter") is not None and doc["meterType"] == "None":
        raise bad_input("a feature with a meter is INCREMENTAL or FLUCTUATING", "meterType")
    if doc["featureType"] == "ENUM" and not doc.get("enumConfiguration"):
        raise bad_input("an ENUM feature needs its values", "enumConfiguration")


@post(_BASE)
async def create_feature(request: Request) -> Response:
    body = decode(await request.body(), FeatureCreate)
    if not body.id or "/" in body.id or len(body.id) > 255:
        raise bad_input("must be 1-255 characters without '/'", "id")
    if body.display_name is UNSET:
        raise bad_input("is required", "displayName")
    if body.feature_type is UNSET:
        raise bad_input("is required", "featureType")
    meter_type = body.meter_type
    if meter_type is UNSET:
        # A NUMBER feature with a meter counts up from events unless told otherwise.
        meter_type = "INCREMENTAL" if body.meter not in (UNSET, None) else "None"
    doc: dict[str, Any] = {
        "id": body.id, "featureType": body.feature_type, "meterType": meter_type,
        "featureStatus": "NEW", "description": None, "featureUnits": None,
        "featureUnitsPlural": None, "metadata": {}, "meter": None, "unitTransformation": None,
        "enumConfiguration": None, "creditRate": None,
    }
    await _apply(request, doc, body)
    stamp(services(request).catalog, doc, created=True)
    if not await services(request).catalog.insert("features", environment(request), doc):
        raise ApiError(409, "DuplicatedEntityNotAllowed", f"feature {body.id!r} exists already",
                       "id")
    return ok(public(doc))


async def require_feature(request: Request, feature_id: str, *, field: str = "featureId",
                          allow_archived: bool = False) -> dict[str, Any]:
    doc = await services(request).catalog.get("features", environment(request), feature_id)
    if doc is None:
        raise ApiError(404, "FeatureNotFound", f"feature {feature_id!r} was not found", field)
    if doc.get("_archivedAt") is not None and not allow_archived:
        raise ApiError(400, "FeatureIsArchived", f"feature {feature_id!r} is archived", field)
    return doc


def credit_rate_units(doc: dict[str, Any]) -> tuple[str, int] | None:
    """(currency id, units of credit per unit of usage) for a credit-backed feature."""
    rate = doc.get("creditRate")
    if not rate:
        return None
    return rate["currencyId"], amount_in(rate["amount"], "creditRate.amount")


@get(_BASE + "/{feature_id:str}")
async def retrieve_feature(request: Request, feature_id: FromPath[str]) -> Response:
    return ok(public(await require_feature(request, feature_id, field="id",
                                           allow_archived=True)))


@patch(_BASE + "/{feature_id:str}")
async def update_feature(request: Request, feature_id: FromPath[str]) -> Response:
    body = decode(await request.body(), FeatureUpdate)
    doc = dict(await require_feature(request, feature_id, field="id"))
    await _apply(request, doc, body)
    catalog = services(request).catalog
    await catalog.replace("features", environment(request), stamp(catalog, doc))
    return ok(public(doc))


def _csv(value: str | None, allowed: set[str], field: str) -> list[str]:
    items = [v.strip() for v in (value or "").split(",") if v.strip()]
    unknown = [v for v in items if v not in allowed]
    if unknown:
        raise bad_input(f"unknown value {unknown[0]!r}; one of {', '.join(sorted(allowed))}",
                        field)
    return items


@get(_BASE)
async def list_features(
    request: Request,
    limit: FromQuery[int | None] = None,
    after: FromQuery[str | None] = None,
    before: FromQuery[str | None] = None,
    id: FromQuery[str | None] = None,  # noqa: A002 - the contract's parameter name
) -> Response:
    query = request.query_params
    any_of = {
        "feature_type": _csv(query.get("featureType"), {"BOOLEAN", "NUMBER", "ENUM"},
                             "featureType"),
        "meter_type": _csv(query.get("meterType"), {"None", "FLUCTUATING", "INCREMENTAL"},
                           "meterType"),
        "feature_status": _csv(query.get("status"), {"NEW", "SUSPENDED", "ACTIVE"}, "status"),
    }
    catalog = services(request).catalog
    env = environment(request)
    if id is not None:
        doc = await catalog.get("features", env, id)
        return ok([public(doc)] if doc else [], pagination={"next": None, "prev": None})
    page = await catalog.page("features", env, limit_in(limit), after, before,
                              created=created_at_bounds(request), any_of=any_of)
    return ok([public(d) for d in page.items], pagination={"next": page.next, "prev": page.prev})


async def _set_archived(request: Request, feature_id: str, archived: bool) -> Response:
    doc = dict(await require_feature(request, feature_id, field="id", allow_archived=True))
    catalog = services(request).catalog
    doc["_archivedAt"] = catalog.now_ms() if archived else None
    await catalog.replace("features", environment(request), stamp(catalog, doc))
    return ok(public(doc))


@post(_BASE + "/{feature_id:str}/archive")
async def archive_feature(request: Request, feature_id: FromPath[str]) -> Response:
    return await _set_archived(request, feature_id, True)


@post(_BASE + "/{feature_id:str}/unarchive")
async def unarchive_feature(request: Request, feature_id: FromPath[str]) -> Response:
    return await _set_archived(request, feature_id, False)


ROUTES = [create_feature, list_features, retrieve_feature, update_feature, archive_feature,
          unarchive_feature]
