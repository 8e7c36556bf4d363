"""Entitlements of a DRAFT plan or add-on: each validated against the feature or custom
currency it names, then added, replaced, updated or deleted."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import msgspec

from engine.domain.context import Documents as Catalog
from engine.domain.errors import DomainError, bad_input
from engine.domain.packages.checks import (
    _CONFIG_OF,
    _credits,
    _custom_currency,
    _feature,
    _reset_config,
    decimal_str,
)
from engine.domain.packages.shapes import EntitlementIn, convert, to_dict
from engine.domain.packages.store import _NAMES, _lock, _require_draft, _table, _touch, _working
from engine.domain.stored import Package, PackageEntitlement

# -- entitlements -------------------------------------------------------------------------

_FEATURE_ONLY = ("enumValues", "hasUnlimitedUsage", "usageLimit", "resetPeriod",
                 *_CONFIG_OF.values())
_CREDIT_ONLY = ("amount", "cadence", "dependencyFeatureId")
_COMMON_DEFAULTS: dict[str, Any] = {
    "behavior": "Increment", "description": None, "displayNameOverride": None,
    "hiddenFromWidgets": [], "isCustom": False, "isGranted": True, "hasSoftLimit": False,
    "order": None,
}


async def _entitlement(catalog: Catalog, env: str, given: dict[str, Any],
                       existing: PackageEntitlement | None, field: str) -> PackageEntitlement:
    """One entitlement as stored: `given` (camelCase input) over `existing` (on update),
    validated against the feature or currency it names. The input's names are the stored
    ones, so the two are merged by name before the result is typed."""
    out = await _merged(catalog, env, given,
                        None if existing is None else msgspec.to_builtins(existing), field)
    return msgspec.convert(out, PackageEntitlement)


async def _merged(catalog: Catalog, env: str, given: dict[str, Any],
                  existing: dict[str, Any] | None, field: str) -> dict[str, Any]:
    prefix = f"{field}." if field else ""
    kind = given["type"]
    if existing is not None and existing["type"] != kind:
        raise bad_input(f"the entitlement is a {existing['type']} entitlement", prefix + "type")
    for name in _CREDIT_ONLY if kind == "FEATURE" else _FEATURE_ONLY:
        if given.get(name) is not None:
            raise bad_input(f"not a field of a {kind} entitlement", prefix + name)
    out: dict[str, Any] = dict(_COMMON_DEFAULTS) if existing is None else dict(existing)
    out["type"] = kind
    if existing is None:
        out["id"] = given["id"]
    for name in _COMMON_DEFAULTS:
        if name in given:
            value = given[name]
            out[name] = _COMMON_DEFAULTS[name] if value is None else value
    if out["order"] is not None:
        out["order"] = decimal_str(Decimal(out["order"]))
    ident = out["id"]
    if kind == "CREDIT":
        await _custom_currency(catalog, env, ident, prefix + "id")
        if "amount" in given or existing is None:
            if given.get("amount") is None:
                raise bad_input("is required: the credits granted each cadence",
                                prefix + "amount")
            out["amount"] = _credits(given["amount"], prefix + "amount")
        if "cadence" in given:
            out["cadence"] = given["cadence"]
        if out.get("cadence") is None:
            raise bad_input("is required: MONTH or YEAR", prefix + "cadence")
        if "dependencyFeatureId" in given:
            out["dependencyFeatureId"] = given["dependencyFeatureId"]
        out.setdefault("dependencyFeatureId", None)
        if out["dependencyFeatureId"] is not None:
            await _feature(catalog, env, out["dependencyFeatureId"],
                           prefix + "dependencyFeatureId")
        return out
    feature = await _feature(catalog, env, ident, prefix + "id")
    for name in ("enumValues", "usageLimit", "resetPeriod"):
        if name in given:
            out[name] = given[name]
        out.setdefault(name, None)
    if "hasUnlimitedUsage" in given:
        out["hasUnlimitedUsage"] = bool(given["hasUnlimitedUsage"])
    out.setdefault("hasUnlimitedUsage", False)
    if "resetPeriod" in given or any(n in given for n in _CONFIG_OF.values()):
        out["resetPeriodConfiguration"] = _reset_config(out["resetPeriod"], given, prefix)
    out.setdefault("resetPeriodConfiguration", None)
    ftype = feature.feature_type
    if ftype != "NUMBER":
        for name in ("usageLimit", "resetPeriod"):
            if out[name] is not None:
                raise bad_input(f"feature {ident!r} is {ftype}, not NUMBER", prefix + name)
        if out["hasUnlimitedUsage"]:
            raise bad_input(f"feature {ident!r} is {ftype}, not NUMBER",
                            prefix + "hasUnlimitedUsage")
    if ftype != "ENUM" and out["enumValues"] is not None:
        raise bad_input(f"feature {ident!r} is {ftype}, not ENUM", prefix + "enumValues")
    if ftype == "ENUM":
        allowed = {v.value for v in feature.enum_configuration or ()}
        values = out["enumValues"]
        if not values:
            raise bad_input("an ENUM entitlement lists the values it grants",
                            prefix + "enumValues")
        unknown = [v for v in values if v not in allowed]
        if unknown:
            raise bad_input(f"{unknown[0]!r} is not a value of feature {ident!r}",
                            prefix + "enumValues")
        if len(set(values)) != len(values):
            raise bad_input("lists a value twice", prefix + "enumValues")
    if ftype == "NUMBER":
        if out["hasUnlimitedUsage"]:
            if out["usageLimit"] is not None:
                if "usageLimit" in given:
                    raise bad_input("an unlimited entitlement has no usageLimit",
                                    prefix + "usageLimit")
                out["usageLimit"] = None  # made unlimited on update: the limit goes
        elif out["usageLimit"] is None:
            raise bad_input("is required unless hasUnlimitedUsage is true",
                            prefix + "usageLimit")
        elif out["usageLimit"] < 0:
            raise bad_input("must not be negative", prefix + "usageLimit")
        if out["resetPeriod"] is not None and feature.meter_type == "FLUCTUATING":
            raise bad_input(f"feature {ident!r} is FLUCTUATING (a level, not a count): "
                            "it does not reset", prefix + "resetPeriod")
    return out


def _entitlement_input(body: Any, field: str) -> dict[str, Any]:
    parsed = convert(body, EntitlementIn, field)
    return to_dict(parsed)


def _stamp_entitlement(catalog: Catalog, ent: PackageEntitlement,
                       existing: PackageEntitlement | None) -> None:
    now = catalog.now_ms()
    ent.created_at = existing.created_at if existing else now
    ent.updated_at = now


async def set_entitlements(catalog: Catalog, env: str, kind: str, ident: str,
                           entitlements: list[dict], replace: bool,
                           ) -> list[PackageEntitlement]:
    """Add `entitlements` to a DRAFT package (409 on one it has already), or with `replace`
    make them its whole list. Returns the stored entitlements written."""
    async with _lock(catalog, env, kind, ident):
        doc = await _working(catalog, env, kind, ident)
        _require_draft(doc, kind, "entitlements")
        if not isinstance(entitlements, list):
            raise bad_input("must be a list", "entitlements")
        current = [] if replace else list(doc.entitlements)
        seen = {(e.type, e.id) for e in current}
        written = []
        for i, body in enumerate(entitlements):
            field = f"entitlements[{i}]"
            given = _entitlement_input(body, field)
            if "id" not in given:
                raise bad_input("is required", f"{field}.id")
            key = (given["type"], given["id"])
            if key in seen:
                if any((e.type, e.id) == key for e in written):
                    raise bad_input("is listed twice", f"{field}.id")
                raise DomainError(409, "DuplicatedEntityNotAllowed",
                               f"{_NAMES[kind]} {ident!r} has an entitlement to "
                               f"{given['id']!r} already; update it instead", f"{field}.id")
            seen.add(key)
            ent = await _entitlement(catalog, env, given, None, field)
            _stamp_entitlement(catalog, ent, None)
            written.append(ent)
        doc.entitlements = current + written
        await catalog.replace(_table(kind), env, _touch(catalog, doc))
        return written


def _find(doc: Package, ent_id: str, kind: str) -> int:
    for i, e in enumerate(doc.entitlements):
        if e.id == ent_id:
            return i
    raise DomainError(404, "EntitlementNotFound",
                   f"{_NAMES[kind]} {doc.id!r} has no entitlement {ent_id!r}", "id")


async def update_entitlement(catalog: Catalog, env: str, kind: str, ident: str,
                             ent_id: str, changes: dict) -> PackageEntitlement:
    """Change fields of one entitlement of a DRAFT package (`changes` names its `type`)."""
    async with _lock(catalog, env, kind, ident):
        doc = await _working(catalog, env, kind, ident)
        index = _find(doc, ent_id, kind)
        _require_draft(doc, kind, "entitlements")
        given = _entitlement_input(changes, "")
        given.pop("id", None)
        existing = doc.entitlements[index]
        ent = await _entitlement(catalog, env, given, existing, "")
        _stamp_entitlement(catalog, ent, existing)
        doc.entitlements[index] = ent
        await catalog.replace(_table(kind), env, _touch(catalog, doc))
        return ent


async def delete_entitlement(catalog: Catalog, env: str, kind: str, ident: str,
                             ent_id: str) -> PackageEntitlement:
    async with _lock(catalog, env, kind, ident):
        doc = await _working(catalog, env, kind, ident)
        index = _find(doc, ent_id, kind)
        _require_draft(doc, kind, "entitlements")
        gone = doc.entitlements.pop(index)
        await catalog.replace(_table(kind), env, _touch(catalog, doc))
        return gone
