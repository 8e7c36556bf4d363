"""Features: the catalog of what customers use, and how raw events are metered into usage.

A feature is a typed document (stored.Feature, table `features`). Metered features carry
a `meter`
(engine/core/meters.py), and may carry `creditRate {amount, currencyId}` — an extension
the official client sends through `extra_body`: how many credits of that currency one
unit of usage burns (one image = 5 "AI Tokens"); reporting usage of such a feature
consumes credits atomically with the usage update.

The inputs are Structs in the API's own field names (camelCase on the wire, decoded
straight into them by REST; built by the TOML catalog and GraphQL): absent fields (UNSET)
are left alone on update, null clears an optional one.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Literal

import msgspec
from msgspec import UNSET, UnsetType

from engine.core.amounts import units_to_json
from engine.core.meters import Meter, MeterError, validate_meter
from engine.domain import stored
from engine.domain.constraints import ID_MAX, Ident, Reference
from engine.domain.context import (
    DocumentPage,
    Domain,
    require_currency,
    require_document,
    set_archived,
    stamp,
)
from engine.domain.errors import DomainError, bad_input
from engine.domain.stored import Feature
from engine.domain.values import units_in

__all__ = ["FEATURE_ID_MAX", "CreditRate", "EnumValue", "FeatureCreate", "FeatureUpdate",
           "FeaturesQuery", "UnitTransformation", "archive", "create", "credit_rate_units",
           "list_features", "require_feature", "update"]

FEATURE_ID_MAX = ID_MAX
_TABLE = "features"
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
    currency_id: Reference


class FeatureUpdate(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
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
    id: Ident = ""
    feature_type: FeatureType | UnsetType = UNSET
    meter_type: MeterType | UnsetType = UNSET


class FeaturesQuery(msgspec.Struct, frozen=True, kw_only=True):
    # One feature by id (archived or not), as a page of one or none; else a page.
    id: str | None = None
    limit: int = 20
    after: str | None = None
    before: str | None = None
    # Creation-time bounds ((SQL comparison, epoch ms), …); any of these values.
    created: tuple[tuple[str, int], ...] = ()
    feature_types: tuple[str, ...] = ()
    meter_types: tuple[str, ...] = ()
    statuses: tuple[str, ...] = ()


# Update fields copied as they are (the input's and the document's attributes agree).
_SIMPLE = ("display_name", "description", "feature_units", "feature_units_plural",
           "feature_status")


async def _apply(d: Domain, env: str, doc: Feature, body: FeatureUpdate) -> Feature:
    """`doc` with what `body` sets, validated as a whole."""
    changes: dict[str, Any] = {name: value for name in _SIMPLE
                               if (value := getattr(body, name)) is not UNSET}
    if body.metadata is not UNSET:
        changes["metadata"] = body.metadata or {}
    if body.enum_configuration is not UNSET:
        changes["enum_configuration"] = None if body.enum_configuration is None else [
            stored.EnumValue(v.display_name, v.value) for v in body.enum_configuration]
    if body.unit_transformation is not UNSET:
        t = body.unit_transformation
        if t is not None and t.divide < 1:
            raise bad_input("must be a positive integer", "unitTransformation.divide")
        changes["unit_transformation"] = None if t is None else stored.UnitTransformation(
            t.divide, t.feature_units, t.feature_units_plural, t.round)
    if body.meter is not UNSET:
        if body.meter is not None:
            try:
                validate_meter(body.meter)
            except MeterError as exc:
                raise bad_input(exc.reason, exc.field) from None
        changes["meter"] = body.meter
    if body.credit_rate is not UNSET:
        rate = body.credit_rate
        if rate is None:
            changes["credit_rate"] = None
        else:
            currency = await require_currency(d, env, rate.currency_id,
                                              field="creditRate.currencyId")
            amount = units_to_json(units_in(rate.amount, "creditRate.amount"))
            changes["credit_rate"] = stored.CreditRate(Decimal(amount), currency.id)
    doc = msgspec.structs.replace(doc, **changes)
    if doc.feature_type != "NUMBER":
        for name, value in (("meter", doc.meter), ("creditRate", doc.credit_rate)):
            if value is not None:
                raise bad_input("only NUMBER features are metered", name)
        if doc.meter_type != "None":
            raise bad_input("only NUMBER features are metered", "meterType")
    elif doc.meter is not None and doc.meter_type == "None":
        raise bad_input("a feature with a meter is INCREMENTAL or FLUCTUATING", "meterType")
    if doc.feature_type == "ENUM" and not doc.enum_configuration:
        raise bad_input("an ENUM feature needs its values", "enumConfiguration")
    return doc


async def create(d: Domain, env: str, body: FeatureCreate) -> Feature:
    if not body.id or "/" in body.id or len(body.id) > FEATURE_ID_MAX:
        raise bad_input(f"must be 1-{FEATURE_ID_MAX} characters without '/'", "id")
    if body.display_name is UNSET:
        raise bad_input("is required", "displayName")
    if body.feature_type is UNSET:
        raise bad_input("is required", "featureType")
    meter_type = body.meter_type
    if meter_type is UNSET:
        # A NUMBER feature with a meter counts up from events unless told otherwise.
        meter_type = "INCREMENTAL" if body.meter not in (UNSET, None) else "None"
    doc = await _apply(d, env, Feature(id=body.id, feature_type=body.feature_type,
                                       meter_type=meter_type), body)
    doc = stamp(d.documents, doc, created=True)
    if not await d.documents.insert(_TABLE, env, doc):
        raise DomainError(409, "DuplicatedEntityNotAllowed",
                          f"feature {body.id!r} exists already", "id")
    return doc


async def require_feature(d: Domain, env: str, feature_id: str, *, field: str = "featureId",
                          allow_archived: bool = False) -> Feature:
    """The feature; FeatureNotFound, or FeatureIsArchived unless allowed."""
    return await require_document(d, env, _TABLE, feature_id, what="feature",
                                  code="Feature", field=field, allow_archived=allow_archived)


def credit_rate_units(doc: Feature) -> tuple[str, int] | None:
    """(currency id, units of credit per unit of usage) for a credit-backed feature."""
    rate = doc.credit_rate
    if rate is None:
        return None
    return rate.currency_id, units_in(rate.amount, "creditRate.amount")


async def update(d: Domain, env: str, feature_id: str, body: FeatureUpdate) -> Feature:
    """Apply `body` to an active feature; nothing changes if any of it is refused."""
    doc = await require_feature(d, env, feature_id, field="id")
    doc = stamp(d.documents, await _apply(d, env, doc, body))
    await d.documents.replace(_TABLE, env, doc)
    return doc


_ALLOWED = (("feature_type", "featureType", {"BOOLEAN", "NUMBER", "ENUM"}),
            ("meter_type", "meterType", {"None", "FLUCTUATING", "INCREMENTAL"}),
            ("feature_status", "status", {"NEW", "SUSPENDED", "ACTIVE"}))


async def list_features(d: Domain, env: str, q: FeaturesQuery) -> Any:
    """A page in creation order, of the given types, meter types and statuses (any of
    each; none given: all)."""
    any_of: dict[str, list[str]] = {}
    for (column, field, allowed), values in zip(
            _ALLOWED, (q.feature_types, q.meter_types, q.statuses), strict=True):
        unknown = [v for v in values if v not in allowed]
        if unknown:
            raise bad_input(f"unknown value {unknown[0]!r}; one of {', '.join(sorted(allowed))}",
                            field)
        any_of[column] = list(values)
    if q.id is not None:
        doc = await d.documents.get(_TABLE, env, q.id)
        return DocumentPage([doc] if doc else [], None, None)
    return await d.documents.page(_TABLE, env, q.limit, q.after, q.before,
                                  created=list(q.created), any_of=any_of)


async def archive(d: Domain, env: str, feature_id: str, archived: bool) -> Feature:
    doc = await require_feature(d, env, feature_id, field="id", allow_archived=True)
    return await set_archived(d, env, _TABLE, doc, archived)
