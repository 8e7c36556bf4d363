"""Applying a catalog file item by item: `_Applier` compares each item with what is stored
and creates, updates or publishes through the route handlers and `engine.domain.packages`,
recording one `Change` per item."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import msgspec

from engine.domain import packages
from engine.domain.context import Domain
from engine.domain.stored import Coupon as StoredCoupon
from gateway.errors import ApiError, bad_input, field_of

from .bodies import (
    _charges,
    _coupon_body,
    _currency_body,
    _entitlements,
    _feature_body,
    _package_fields,
)
from .diff import _differs, _stored_entitlement, same
from .handlers import _file_path, _plain
from .keypath import _format_path, _path_tokens
from .schema import (
    _KIND,
    Addon,
    CatalogError,
    CatalogFile,
    Coupon,
    Currency,
    Feature,
    Plan,
    Product,
)

# -- applying ------------------------------------------------------------------------------


T = TypeVar("T")


@dataclass
class Change:
    action: Literal["create", "update", "publish", "unchanged"]
    kind: str
    ident: str
    detail: str = ""

    def line(self) -> str:
        label = {"create": "create", "update": "update", "publish": "publish-new-version",
                 "unchanged": "unchanged"}[self.action]
        text = f"{label:<20}{self.kind} {self.ident}"
        return f"{text}  ({self.detail})" if self.detail else text


def _as(body: dict[str, Any], kind: type[T]) -> T:
    """An item's API body as the domain's input, refused as the API would refuse it."""
    try:
        return msgspec.convert(body, kind)
    except msgspec.ValidationError as exc:
        message, field = field_of(exc)
        raise bad_input(message, field) from None


def _as_dict(doc: Any) -> dict[str, Any] | None:
    """A stored typed document in its stored (wire) names, as the file's items are
    compared with it."""
    return None if doc is None else msgspec.to_builtins(doc)


class _Applier:
    def __init__(self, file: CatalogFile, catalog: Any, env: str) -> None:
        self.file = file
        self.catalog = catalog
        self.env = env
        # Catalog documents need no engine: the domain's functions for them read and
        # write documents only.
        self.domain = Domain(store=catalog.store, runtime=None,  # type: ignore[arg-type]
                             documents=catalog)
        self.changes: list[Change] = []

    def fail(self, path: list[str | int], exc: ApiError) -> CatalogError:
        tokens = [*path, *_file_path(exc.field)]
        return self.file.error(_format_path(tokens), exc.message)

    async def run(self) -> list[Change]:
        f = self.file
        for ident, c in f.currencies.items():
            await self._guard(["currencies", ident], self._currency(ident, c))
        for ident, feat in f.features.items():
            await self._guard(["features", ident], self._feature(ident, feat))
        for ident, p in f.products.items():
            await self._guard(["products", ident], self._product(ident, p))
        for ident, a in f.addons.items():
            await self._guard(["addons", ident], self._package("addons", ident, a))
        for ident in _parents_first(f.plans):
            await self._guard(["plans", ident], self._package("plans", ident, f.plans[ident]))
        for ident, cp in f.coupons.items():
            await self._guard(["coupons", ident], self._coupon(ident, cp))
        return self.changes

    async def _guard(self, path: list[str | int], work: Any) -> None:
        try:
            await work
        except ApiError as exc:
            raise self.fail(path, exc) from None

    def note(self, action: Any, table: str, ident: str, detail: str = "") -> None:
        self.changes.append(Change(action, _KIND[table], ident, detail))

    async def _currency(self, ident: str, c: Currency) -> None:
        from engine.domain import currencies
        from gateway.routes.currencies import top_up_in

        units = None if c.units is None else currencies.Units(c.units.plural, c.units.singular)
        top_up = top_up_in(c.top_up)
        found = await self.catalog.get("currencies", self.env, ident)
        stored = _as_dict(found)
        if stored is None:
            await currencies.create(self.domain, self.env, currencies.CurrencyInput(
                id=ident, display_name=c.display_name, description=c.description,
                metadata=c.metadata, symbol=c.symbol, units=units, top_up=top_up))
            self.note("create", "currencies", ident)
            return
        body = _currency_body(ident, c)
        del body["id"]
        # Compare in the stored shape: top-up amounts are kept as units.
        body["topUp"] = msgspec.to_builtins(currencies.top_up_document(top_up))
        changed = _differs(body, stored)
        if found.archived_at is not None:
            await currencies.archive(self.domain, self.env, ident, False)
            changed.insert(0, "unarchived")
        if changed:
            await currencies.update(self.domain, self.env, ident, currencies.CurrencyUpdate(
                display_name=c.display_name, description=c.description,
                metadata=c.metadata, symbol=c.symbol, units=units, top_up=top_up))
            self.note("update", "currencies", ident, ", ".join(changed))
        else:
            self.note("unchanged", "currencies", ident)

    async def _feature(self, ident: str, feat: Feature) -> None:
        from engine.domain import features

        found = await self.catalog.get("features", self.env, ident)
        stored = _as_dict(found)
        if stored is None:
            await features.create(self.domain, self.env, _as(
                _feature_body(ident, feat, create=True), features.FeatureCreate))
            self.note("create", "features", ident)
            return
        if found.feature_type != feat.type:
            raise ApiError(400, "BadUserInput", f"a feature's type cannot change (it is "
                           f"{found.feature_type}); archive it and use a new id",
                           "featureType")
        if feat.meter_type is not None and found.meter_type != feat.meter_type:
            raise ApiError(400, "BadUserInput", f"a feature's meter type cannot change (it is "
                           f"{found.meter_type})", "meterType")
        body = _feature_body(ident, feat, create=False)
        wanted = dict(body)
        if feat.credit_rate is not None:
            wanted["creditRate"] = {"amount": feat.credit_rate.amount,
                                    "currencyId": feat.credit_rate.currency}
        changed = _differs(wanted, stored)
        if found.archived_at is not None:
            await features.archive(self.domain, self.env, ident, False)
            changed.insert(0, "unarchived")
        if changed:
            await features.update(self.domain, self.env, ident,
                                  _as(body, features.FeatureUpdate))
            self.note("update", "features", ident, ", ".join(changed))
        else:
            self.note("unchanged", "features", ident)

    async def _coupon(self, ident: str, c: Coupon) -> None:
        from engine.domain import coupons

        body = _coupon_body(ident, c)
        found = await self.catalog.get("coupons", self.env, ident)
        stored = _as_dict(found)
        if stored is None:
            await coupons.create(self.domain, self.env, _as(body, coupons.CouponCreate))
            self.note("create", "coupons", ident)
            return
        # The discount and duration of a coupon are fixed once created (as the API has it).
        parsed = _as(body, coupons.CouponCreate)
        fixed = {**coupons.discount(parsed), **coupons.duration(parsed)}
        wire = {f.name: f.encode_name for f in msgspec.structs.fields(StoredCoupon)}
        for attribute, value in fixed.items():
            key = wire[attribute]
            if not same(msgspec.to_builtins(value), stored.get(key)):
                raise ApiError(400, "BadUserInput",
                               "a coupon's discount and duration cannot change once created; "
                               "archive it and use a new id", key)
        if found.archived_at is not None:
            raise ApiError(400, "BadUserInput", f"coupon {ident!r} is archived; archived "
                           "coupons cannot come back, use a new id")
        update = {"name": c.name, "description": c.description, "metadata": c.metadata}
        changed = _differs(update, stored)
        if changed:
            await coupons.update(self.domain, self.env, ident,
                                 _as(update, coupons.CouponUpdate))
            self.note("update", "coupons", ident, ", ".join(changed))
        else:
            self.note("unchanged", "coupons", ident)

    async def _product(self, ident: str, p: Product) -> None:

        body = {"displayName": p.display_name, "description": p.description,
                "metadata": p.metadata, "multipleSubscriptions": p.multiple_subscriptions}
        stored = _as_dict(await packages.get_product(self.catalog, self.env, ident))
        if stored is None:
            await packages.create_product(self.catalog, self.env, {"id": ident, **body})
            self.note("create", "products", ident)
            return
        changed = _differs(body, stored)
        if changed:
            await packages.update_product(self.catalog, self.env, ident, body)
            self.note("update", "products", ident, ", ".join(changed))
        else:
            self.note("unchanged", "products", ident)

    async def _package(self, table: str, ident: str, pkg: Plan | Addon) -> None:

        kind = "plan" if table == "plans" else "addon"
        fields = _package_fields(pkg)
        entitlements = _entitlements(self.file, table, ident)
        charges = _charges(pkg)
        found = await packages.get_package(self.catalog, self.env, kind, ident)
        stored = _as_dict(found)
        if stored is None:
            create = {"id": ident, "productId": pkg.product,
                      **{k: fields[k] for k in _CREATE_FIELDS if k in fields}}
            await packages.create_package(self.catalog, self.env, kind, _plain(create))
            await self._fill(table, ident, fields, entitlements, charges)
            doc = await packages.publish(self.catalog, self.env, kind, ident)
            self.note("create", table, ident, f"v{doc.version_number}")
            return
        if found.product_id != pkg.product:
            raise ApiError(400, "BadUserInput", f"a {kind} cannot move to another product "
                           f"(it is in {found.product_id!r})", "product")
        if found.status == "ARCHIVED" or found.archived_at is not None:
            raise ApiError(400, "BadUserInput", f"{kind} {ident!r} is archived; use a new id")
        current = _as_dict(await packages.published(self.catalog, self.env, kind, ident))
        if current is None:
            changed = ["first version"]
        else:
            changed = _differs(fields, current)
            if not same(entitlements, [_stored_entitlement(e) for e in
                                       current.get("entitlements") or []]):
                changed.append("entitlements")
            if not same(charges, current.get("charges")):
                changed.append("prices")
        if not changed:
            # The published version says what the file says (a draft someone is working on
            # through the API is left alone).
            self.note("unchanged", table, ident)
            return
        if found.status == "PUBLISHED" and set(changed) <= set(_COSMETIC):
            # Names, descriptions and metadata are not prices: they change in place, on the
            # published version too, as PATCH does.
            await packages.update_package(self.catalog, self.env, kind, ident,
                                          _plain({k: fields[k] for k in changed}))
            self.note("update", table, ident, ", ".join(changed))
            return
        # Any change makes a new version: subscriptions on the old one keep what they have.
        if found.status != "DRAFT":
            await packages.create_draft(self.catalog, self.env, kind, ident)
        await self._fill(table, ident, fields, entitlements, charges)
        doc = await packages.publish(self.catalog, self.env, kind, ident)
        self.note("publish", table, ident,
                  f"v{doc.version_number}: {', '.join(changed)}")

    async def _fill(self, table: str, ident: str, fields: dict[str, Any],
                    entitlements: list[dict[str, Any]], charges: dict[str, Any] | None) -> None:
        """Set a draft's fields, prices and entitlements; an error is reported at the
        file's key (entitlements are keyed by feature id there, prices by position)."""

        kind = "plan" if table == "plans" else "addon"
        try:
            update = {k: v for k, v in fields.items() if k != "pricingType"}
            await packages.update_package(self.catalog, self.env, kind, ident,
                                          _plain({**update, "charges": charges}))
        except ApiError as exc:
            raise self._package_error(table, ident, exc) from None
        try:
            await packages.set_entitlements(self.catalog, self.env, kind, ident,
                                            _plain(entitlements), True)
        except ApiError as exc:
            raise self._package_error(table, ident, exc, entitlements) from None

    def _package_error(self, table: str, ident: str, exc: ApiError,
                       entitlements: list[dict[str, Any]] | None = None) -> CatalogError:
        base: list[str | int] = [table, ident]
        tokens = _path_tokens(exc.field or "")
        if tokens and tokens[0] == "charges":
            tokens = tokens[1:]
        if entitlements is not None and tokens and tokens[0] == "entitlements":
            tokens = tokens[1:]
            if tokens and tokens[0].isdigit() and int(tokens[0]) < len(entitlements):
                e = entitlements[int(tokens[0])]
                base += ["entitlements" if e["type"] == "FEATURE" else "credits", e["id"]]
                tokens = tokens[1:]
                if tokens == ["id"]:  # the file's key is the id
                    tokens = []
            else:
                base.append("entitlements")
        elif tokens and tokens[0] == "pricingModels":
            pkg = getattr(self.file, table)[ident]
            if len(tokens) > 1 and tokens[1].isdigit() and int(tokens[1]) >= len(pkg.prices):
                base.append("top_up")
                tokens = tokens[2:]
        rest = _file_path(".".join(tokens)) if tokens else []
        return self.file.error(_format_path([*base, *rest]), exc.message)


_COSMETIC = ("displayName", "description", "billingId", "metadata", "hidden")
# The package fields creating one takes (the rest are set on its first draft).
_CREATE_FIELDS = ("displayName", "description", "metadata", "billingId", "pricingType",
                  "parentPlanId", "maxQuantity")


def _parents_first(plans: dict[str, Plan]) -> list[str]:
    order: list[str] = []

    def visit(ident: str) -> None:
        if ident in order:
            return
        parent = plans[ident].parent
        if parent is not None and parent in plans:
            visit(parent)
        order.append(ident)

    for ident in plans:
        visit(ident)
    return order
