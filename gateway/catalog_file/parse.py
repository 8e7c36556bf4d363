"""Parsing and validating a catalog file: `load(text, name)` -> `CatalogFile`, and the
checks the schema alone cannot express."""

from __future__ import annotations

import re
import tomllib
from decimal import Decimal
from typing import Any

import msgspec

from .keypath import _format_path, _path_tokens
from .schema import (
    _ANCHORS,
    _TABLES,
    CatalogError,
    CatalogFile,
    CreditEntitlement,
    FeatureEntitlement,
    Plan,
    _Package,
)

# -- parsing and validation ----------------------------------------------------------------

_ID = re.compile(r"^[^/]{1,200}$")


def _convert(file: CatalogFile, raw: Any, kind: type[Any], prefix: list[str | int]) -> Any:
    try:
        return msgspec.convert(raw, kind, strict=False)
    except msgspec.ValidationError as exc:
        text = str(exc)
        match = re.search(r" - at `\$(.*)`$", text)
        message = text if match is None else text[: match.start()]
        sub = [] if match is None else _path_tokens(match.group(1).lstrip("."))
        named = re.search(r"(?:missing required|unknown) field `([^`]+)`", message)
        if named:
            sub.append(named.group(1))
        tokens: list[str | int] = [*prefix, *(int(t) if t.isdigit() else t for t in sub)]
        raise file.error(_format_path(tokens), message[0].lower() + message[1:]) from None


def _check_finite(file: CatalogFile, value: Any, path: list[str | int]) -> None:
    """TOML has `nan` and `inf`; no amount, limit or price may be either."""
    if isinstance(value, Decimal) and not value.is_finite():
        raise file.error(_format_path(path), "must be a finite number")
    if isinstance(value, dict):
        for key, inner in value.items():
            _check_finite(file, inner, [*path, key])
    elif isinstance(value, list):
        for i, inner in enumerate(value):
            _check_finite(file, inner, [*path, i])


def load(text: str, name: str = "catalog.toml") -> CatalogFile:
    """Parse and check a catalog file: its shape, and that every reference (a plan's
    product, an entitlement's feature, a compatible add-on, …) names an item of the file
    or one already stored (checked again when applied)."""
    file = CatalogFile(name, text)
    try:
        data = tomllib.loads(text, parse_float=Decimal)
    except tomllib.TOMLDecodeError as exc:
        raise CatalogError(f"{name}: not valid TOML: {exc}") from None
    for key in data:
        if key not in _TABLES:
            raise file.error(key, f"unknown table; the tables are {', '.join(_TABLES)}")
    _check_finite(file, data, [])
    for table, kind in _TABLES.items():
        items = data.get(table, {})
        if not isinstance(items, dict):
            raise file.error(table, "must be a table of items keyed by id")
        for ident, raw in items.items():
            if not _ID.match(ident):
                raise file.error(_format_path([table, ident]),
                                 "an id is 1-200 characters without '/'")
            if not isinstance(raw, dict):
                raise file.error(_format_path([table, ident]), "must be a table")
            item = _convert(file, raw, kind, [table, ident])
            getattr(file, table)[ident] = item
            if isinstance(item, _Package):
                file.feature_entitlements[(table, ident)] = {
                    fid: _convert(file, e, FeatureEntitlement,
                                  [table, ident, "entitlements", fid])
                    for fid, e in item.entitlements.items()}
                file.credit_entitlements[(table, ident)] = {
                    cid: _convert(file, e, CreditEntitlement, [table, ident, "credits", cid])
                    for cid, e in item.credits.items()}
    _check(file)
    return file


def _check(file: CatalogFile) -> None:
    """What the schema alone cannot say. References to items not in the file are left to
    the apply step (they may be stored already)."""
    for table in ("plans", "addons"):
        for ident, pkg in getattr(file, table).items():
            base = [table, ident]
            for fid, ent in file.feature_entitlements[(table, ident)].items():
                path = [*base, "entitlements", fid]
                if ent.unlimited and ent.usage_limit is not None:
                    raise file.error(_format_path([*path, "usage_limit"]),
                                     "an unlimited entitlement has no usage_limit")
                if ent.usage_limit is not None and ent.usage_limit < 0:
                    raise file.error(_format_path([*path, "usage_limit"]), "must not be negative")
                if ent.reset_anchor is not None:
                    allowed = _ANCHORS.get(ent.reset_period or "", ())
                    if ent.reset_anchor not in allowed:
                        raise file.error(
                            _format_path([*path, "reset_anchor"]),
                            f"a {ent.reset_period or 'missing'} reset_period takes "
                            + (f"one of {', '.join(allowed)}" if allowed else "no anchor"))
                if ent.reset_period is not None and ent.usage_limit is None and not ent.unlimited:
                    raise file.error(_format_path([*path, "reset_period"]),
                                     "only a usage_limit (or unlimited usage) resets")
                feature = file.features.get(fid)
                if feature is not None and feature.type != "NUMBER" and (
                        ent.usage_limit is not None or ent.unlimited or ent.reset_period):
                    raise file.error(_format_path([*path, "usage_limit"]),
                                     f"feature {fid!r} is {feature.type}: it has no usage limit")
            for i, price in enumerate(pkg.prices):
                path = [*base, "prices", i]
                if price.model != "FLAT_FEE" and price.feature is None:
                    raise file.error(_format_path([*path, "model"]),
                                     f"a {price.model} price names its feature")
                if price.model == "FLAT_FEE" and price.feature is not None:
                    raise file.error(_format_path([*path, "feature"]),
                                     "a FLAT_FEE price is not per feature")
                if not price.periods:
                    raise file.error(_format_path([*path, "periods"]),
                                     "needs at least one billing period")
                seen: set[tuple[str, str | None]] = set()
                for j, period in enumerate(price.periods):
                    ppath = [*path, "periods", j]
                    key = (period.billing_period, period.country)
                    if key in seen:
                        raise file.error(_format_path([*ppath, "billing_period"]),
                                         "the same billing period and country twice")
                    seen.add(key)
                    if (period.amount is None) == (period.tiers is None):
                        raise file.error(_format_path([*ppath, "amount"]),
                                         "give either amount or tiers")
                    if period.tiers is not None and price.model == "FLAT_FEE":
                        raise file.error(_format_path([*ppath, "tiers"]),
                                         "a FLAT_FEE price has no tiers")
                    if period.tiers is not None and price.tiers_mode is None:
                        raise file.error(_format_path([*path, "tiers_mode"]),
                                         "tiered prices say VOLUME or GRADUATED")
                    if period.amount is not None and period.amount < 0:
                        raise file.error(_format_path([*ppath, "amount"]), "must not be negative")
                    if not re.fullmatch(r"[A-Za-z]{3}", period.currency):
                        raise file.error(_format_path([*ppath, "currency"]),
                                         "must be a three-letter currency code")
                    for k, tier in enumerate(period.tiers or ()):
                        last = k == len(period.tiers or ()) - 1
                        if (tier.up_to is None) != last:
                            raise file.error(_format_path([*ppath, "tiers", k, "up_to"]),
                                             "every tier but the last has up_to; the last "
                                             "has none")
                        if tier.unit_price is None and tier.flat_price is None:
                            raise file.error(_format_path([*ppath, "tiers", k, "unit_price"]),
                                             "a tier has a unit_price, a flat_price or both")
            if isinstance(pkg, Plan):
                if pkg.parent == ident:
                    raise file.error(_format_path([*base, "parent"]),
                                     "a plan cannot be its own parent")
                if pkg.trial is not None and pkg.trial.duration < 1:
                    raise file.error(_format_path([*base, "trial", "duration"]),
                                     "must be at least 1")
                top = pkg.top_up
                if top is not None:
                    if top.price_per_credit <= 0:
                        raise file.error(_format_path([*base, "top_up", "price_per_credit"]),
                                         "must be positive")
                    low, high = top.minimum_purchase, top.maximum_purchase
                    if low is not None and low < 1:
                        raise file.error(_format_path([*base, "top_up", "minimum_purchase"]),
                                         "must be at least 1")
                    if low is not None and high is not None and low > high:
                        raise file.error(_format_path([*base, "top_up", "minimum_purchase"]),
                                         "must not be above maximum_purchase")
    # Parents form no cycle (a parent outside the file was stored earlier, so it cannot
    # point back into the file's new plans... but it may name one of them: checked too).
    for ident in file.plans:
        seen_ids = [ident]
        parent = file.plans[ident].parent
        while parent is not None and parent in file.plans:
            if parent in seen_ids:
                raise file.error(_format_path(["plans", ident, "parent"]),
                                 f"plans inherit in a cycle: {' -> '.join([*seen_ids, parent])}")
            seen_ids.append(parent)
            parent = file.plans[parent].parent
