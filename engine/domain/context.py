"""What a domain operation reaches: the process's services, without a web framework.

`Domain` is built once per process (gateway/context.py builds it beside the gateway's
`Services`); operations take it and the caller's environment (the API key's), and name
customers by the caller's id (`engine_id` makes the engine's `environment/customer`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, NamedTuple, Protocol, TypeVar

import anyio
import msgspec

from engine.core.meters import Meter
from engine.domain.constraints import IDEMPOTENCY_KEY_MAX
from engine.domain.entitlements_cache import EntitlementsCache
from engine.domain.errors import DomainError, not_found
from engine.domain.stored import Addon, Currency, Customer, Edited, Feature, Plan, Stored
from engine.runtime import Runtime

D = TypeVar("D", bound="Stored | Edited")
S = TypeVar("S", bound=Stored)

__all__ = [
    "IDEMPOTENCY_KEY_BYTES_MAX",
    "DocumentPage",
    "Documents",
    "Domain",
    "check_key",
    "engine_id",
    "require_currency",
    "require_customer",
    "scoped_key",
    "stamp",
]


class DocumentPage(NamedTuple):
    """A page of documents in creation order and the cursors of the pages beside it."""

    items: list[Any]
    next: str | None
    prev: str | None


class Documents(Protocol):
    """The environment-scoped documents (customers, currencies, …), cached: the
    store's Catalog (persistence/documents.py). Customers, currencies, features,
    coupons, products, plans and add-ons are typed (stored.py: `DOCUMENT_TYPES`);
    subscriptions and promotions are dicts of their wire fields plus `_createdAt`,
    `_updatedAt` and `_archivedAt` (epoch ms) — subscriptions are read and written
    through their typed form (subscriptions/document.py)."""

    async def get(self, table: str, environment: str, doc_id: str) -> Any: ...

    async def insert(self, table: str, environment: str, doc: Any) -> bool: ...

    async def replace(self, table: str, environment: str, doc: Any) -> None: ...

    async def page(self, table: str, environment: str, limit: int, after: str | None,
                   before: str | None, archived: bool | None = None, *,
                   created: list[tuple[str, int]] | None = None,
                   equal: dict[str, str | None] | None = None,
                   any_of: dict[str, list[str]] | None = None) -> Any: ...

    def now_ms(self) -> int: ...

    # At most this many entries per table are cached (the entitlements' cache keeps as
    # many customers).
    docs_cached_max: int

    async def replace_many(self, table: str, items: list[tuple[str, Any]]) -> None: ...

    async def metered_features(self, environment: str) -> list[tuple[Feature, Meter]]:
        """The environment's active features that have a meter, with the meter."""

    # Published package versions (engine/domain/packages): immutable once written.
    async def latest_version(self, environment: str, kind: str, ident: str) -> int | None: ...

    async def package_version(self, environment: str, kind: str, ident: str,
                              version: int) -> Plan | Addon | None: ...

    async def put_package_version(self, environment: str, kind: str, doc: Plan | Addon,
                                  version: int) -> None: ...


def stamp(documents: Documents, doc: D, *, created: bool = False) -> D:
    """`doc` marked changed (and created) now, by the process's clock (the documents'):
    a frozen document's stamped copy, or an edited one stamped in place."""
    now = documents.now_ms()
    if isinstance(doc, Stored):
        return msgspec.structs.replace(  # type: ignore[return-value]
            doc, updated_at=now, **({"created_at": now} if created else {}))
    assert isinstance(doc, Edited), type(doc)
    if created:
        doc.created_at = now
    doc.updated_at = now
    return doc


class Shared:
    """What a Domain's operations share across calls: the effective entitlements'
    cache and named locks (created on first use, inside the event loop)."""

    def __init__(self) -> None:
        self.entitlements = EntitlementsCache()
        self._locks: dict[str, anyio.Lock] = {}

    def lock(self, name: str) -> anyio.Lock:
        found = self._locks.get(name)
        if found is None:
            found = self._locks[name] = anyio.Lock()
        return found


@dataclass(frozen=True)
class Domain:
    store: Any
    runtime: Runtime
    documents: Documents
    # The process's one clock (`now_ms()`, `wait_until(ms, event)`): billing periods,
    # trials, usage windows and promotions read `now` from it. None: the documents'.
    clock: Any = None
    # Called with (environment, customer id) after what the customer is entitled to
    # changed outside the engine (a subscription or promotion written), besides this
    # domain forgetting its own cached entitlements.
    on_entitlements_changed: Callable[[str, str], None] | None = None
    # Called with (environment, facts) after a plan or add-on version was published; the
    # facts are Stigg's PackagePublished: packageType (PLAN/ADDON), packageRefId,
    # packageVersion, migrationType.
    on_package_published: Callable[[str, dict[str, Any]], None] | None = None
    # Tax rates by billing country (CREDITD_TAX_RATES), for estimates.
    tax_rates: dict[str, Decimal] = field(default_factory=dict)
    state: Shared = field(default_factory=Shared)

    def now_ms(self) -> int:
        return self.clock.now_ms() if self.clock is not None else self.documents.now_ms()

    def entitlements_changed(self, env: str, customer_id: str) -> None:
        self.state.entitlements.invalidate(env, customer_id)
        if self.on_entitlements_changed is not None:
            self.on_entitlements_changed(env, customer_id)

    def package_published(self, env: str, facts: dict[str, Any]) -> None:
        if self.on_package_published is not None:
            self.on_package_published(env, facts)


def engine_id(env: str, customer_id: str) -> str:
    # Environment names cannot contain "/", so the first "/" separates the two.
    return f"{env}/{customer_id}"


def scoped_key(scope: str, key: str) -> str:
    """An idempotency key in the engine's per-customer key space. Each operation has a
    space of its own, so a consumption key can never collide with a reservation id or a
    grant's Idempotency-Key header that happens to have the same text."""
    return f"{scope}:{key}"


IDEMPOTENCY_KEY_BYTES_MAX = IDEMPOTENCY_KEY_MAX


def check_key(key: str, field: str) -> None:
    if not key or len(key.encode()) > IDEMPOTENCY_KEY_BYTES_MAX:
        raise DomainError(400, "BadUserInput",
                          f"must be 1 to {IDEMPOTENCY_KEY_BYTES_MAX} bytes", field)


async def require_document(d: Domain, env: str, table: str, doc_id: str, *, what: str,
                           code: str, field: str, allow_archived: bool = False) -> Any:
    """A document of `table`; `<code>NotFound`, or `<code>IsArchived` unless allowed
    (Stigg's codes: CustomerNotFound, FeatureIsArchived, …)."""
    doc = await d.documents.get(table, env, doc_id)
    if doc is None:
        raise not_found(f"{code}NotFound", what, doc_id, field)
    if doc.archived_at is not None and not allow_archived:
        raise DomainError(400, f"{code}IsArchived", f"{what} {doc_id!r} is archived", field)
    return doc


async def require_customer(d: Domain, env: str, customer_id: str, *,
                           field: str = "customerId", allow_archived: bool = False,
                           ) -> Customer:
    """The customer's profile; CustomerNotFound, or CustomerIsArchived unless allowed."""
    return await require_document(d, env, "customer_profiles", customer_id, what="customer",
                                  code="Customer", field=field, allow_archived=allow_archived)


async def require_currency(d: Domain, env: str, currency_id: str, *,
                           field: str = "currencyId", allow_archived: bool = False,
                           ) -> Currency:
    """The custom currency; CustomCurrencyNotFound, or CustomCurrencyIsArchived."""
    return await require_document(d, env, "currencies", currency_id, what="currency",
                                  code="CustomCurrency", field=field,
                                  allow_archived=allow_archived)


async def set_archived(d: Domain, env: str, table: str, doc: S, archived: bool) -> S:
    """Archive (now) or unarchive a copy of `doc` and store it."""
    at = d.documents.now_ms() if archived else None
    doc = stamp(d.documents, msgspec.structs.replace(doc, archived_at=at))
    await d.documents.replace(table, env, doc)
    return doc
