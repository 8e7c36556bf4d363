"""Environment-scoped documents kept beside the engine — customer profiles, currencies,
features, coupons, products, plans, add-ons, subscriptions — and the API keys' hashes
(the domain's `Documents`: engine/domain/context.py). They change at admin pace, so they
are written with single statements outside the group commit, and documents are cached in
memory (the consumption path checks a customer and a currency on every request).

The tables of `types` (by default the domain's typed documents, engine/domain/stored.py)
hold typed documents: they are decoded once, when read from the database, and the cache
holds the decoded, frozen Struct. The other tables' documents are dicts."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

import msgspec

from engine.core.meters import Meter
from engine.domain.stored import DOCUMENT_TYPES
from engine.runtime.clock import SystemClock
from persistence.pages import Page, page_by_creation

__all__ = ["Catalog", "hash_key"]

_json = msgspec.json.Encoder(order="deterministic").encode
# A package kind's table (its published versions have the working copy's type).
_PACKAGE_TABLES = {"plan": "plans", "addon": "addons"}
_unjson = msgspec.json.decode


def _camel(column: str) -> str:
    """A column's document field: `feature_type` -> `featureType`."""
    head, *rest = column.split("_")
    return head + "".join(part.title() for part in rest)


def _times(doc: Any) -> tuple[int, int, int | None]:
    """(created, updated, archived) of a typed or a dict document."""
    if isinstance(doc, dict):
        return doc["_createdAt"], doc["_updatedAt"], doc.get("_archivedAt")
    return doc.created_at, doc.updated_at, doc.archived_at


def _column(doc: Any, column: str) -> Any:
    """A document's value for one of its table's filter columns."""
    if isinstance(doc, dict):
        return doc.get(_camel(column))
    value = getattr(doc, column)
    return None if value is msgspec.UNSET else value


def _id(doc: Any) -> str:
    return doc["id"] if isinstance(doc, dict) else doc.id


def hash_key(key: str) -> str:
    # API keys are random 32-byte tokens, so a plain SHA-256 is the right hash: nothing to
    # brute-force, and it lets us look a key up by its hash in constant time.
    return hashlib.sha256(key.encode()).hexdigest()


class Catalog:
    """Documents are cached per table, least recently used first out, up to
    `docs_cached_max` each: every consumption checks its customer and currency, and a
    database read per request would cost more than the consumption. The cache is coherent
    because one creditd process owns a database and every write goes through here."""

    def __init__(self, store: Any, *, clock: Any = None,
                 docs_cached_max: int = 100_000,
                 types: Mapping[str, type] = DOCUMENT_TYPES) -> None:
        assert docs_cached_max > 0
        self.store = store
        self.types = dict(types)
        # The process's one clock (the runtime's): documents are stamped with its time, so
        # a manual clock (CREDITD_CLOCK) and the documents agree.
        self.clock = clock if clock is not None else SystemClock()
        self.docs_cached_max = docs_cached_max
        self._docs: dict[str, OrderedDict[tuple[str, str], Any]] = {}
        self._keys: dict[str, str] = {}  # key hash -> environment
        # environment -> features with a meter (events are matched against all of them);
        # dropped whenever a feature of the environment is written.
        self._metered: dict[str, list[tuple[Any, Meter]]] = {}
        # Called with (table, environment, id) after a write here ("api_keys", env, ""
        # for keys): a cluster node tells its peers to forget their copies.
        self.on_changed: Callable[[str, str, str], None] | None = None

    def _changed(self, table: str, environment: str, ident: str) -> None:
        if self.on_changed is not None:
            self.on_changed(table, environment, ident)

    def forget(self, table: str, environment: str, ident: str) -> None:
        """Drop a cached document (another cluster node wrote it)."""
        if table == "features":
            self._metered.pop(environment, None)
        self._docs.get(table, {}).pop((environment, ident), None)  # type: ignore[call-overload]

    def forget_all(self) -> None:
        """Drop every cached document (a cluster node that may have missed notices)."""
        self._docs.clear()
        self._metered.clear()

    def now_ms(self) -> int:
        return self.clock.now_ms()

    # -- API keys -------------------------------------------------------------------------

    async def load_keys(self) -> None:
        rows = await self.store.fetch("SELECT key_hash, environment FROM api_keys")
        self._keys = {r[0]: r[1] for r in rows}

    async def add_key(self, key: str, environment: str) -> None:
        digest = hash_key(key)
        await self.store.execute(
            "INSERT INTO api_keys (key_hash, environment, created_at) VALUES (?, ?, ?) "
            "ON CONFLICT (key_hash) DO UPDATE SET environment = excluded.environment",
            digest, environment, self.now_ms())
        self._keys[digest] = environment
        self._changed("api_keys", environment, "")

    async def keep_only(self, keys: list[str]) -> int:
        """Revoke every stored key but `keys`; returns how many went."""
        keep = {hash_key(k) for k in keys}
        gone = [digest for digest in self._keys if digest not in keep]
        for digest in gone:
            await self.store.execute("DELETE FROM api_keys WHERE key_hash = ?", digest)
            self._changed("api_keys", self._keys.pop(digest), "")
        return len(gone)

    def has_keys(self) -> bool:
        return bool(self._keys)

    def environment_of(self, key: str) -> str | None:
        digest = hash_key(key)
        # Compare against every stored hash in constant time, so response timing says
        # nothing about how much of a key matched.
        found = None
        for stored, environment in self._keys.items():
            if hmac.compare_digest(stored, digest):
                found = environment
        return found

    @staticmethod
    def new_key() -> str:
        return "cd_" + secrets.token_urlsafe(32)

    # -- documents (currencies, customer profiles) ----------------------------------------

    def _decode(self, table: str, raw: str | bytes) -> Any:
        kind = self.types.get(table)
        return _unjson(raw) if kind is None else _unjson(raw, type=kind)

    def _encode(self, table: str, doc: Any) -> str:
        kind = self.types.get(table)
        if kind is not None and not isinstance(doc, kind):
            raise TypeError(f"{table} keeps {kind.__name__} documents, not {type(doc).__name__}")
        return _json(doc).decode()

    async def get(self, table: str, environment: str, ident: str) -> Any:
        """The document (a typed one for the tables of `types`), None if there is none."""
        cache = self._docs.setdefault(table, OrderedDict())
        doc = cache.get((environment, ident))
        if doc is not None:
            cache.move_to_end((environment, ident))
            return doc
        rows = await self.store.fetch(
            f"SELECT doc FROM {table} WHERE environment = ? AND id = ?", environment, ident)
        if not rows:
            return None  # not cached: the document may be created later
        doc = self._decode(table, rows[0][0])
        self._remember(table, environment, doc)
        return doc

    async def metered_features(self, environment: str) -> list[tuple[Any, Meter]]:
        """The environment's active features that have a meter, with the meter."""
        found = self._metered.get(environment)
        if found is None:
            rows = await self.store.fetch(
                "SELECT doc FROM features WHERE environment = ? AND archived_at IS NULL "
                "AND meter_type <> 'None'", environment)
            docs = [self._decode("features", r[0]) for r in rows]
            found = [(d, d.meter) for d in docs if d.meter is not None]
            self._metered[environment] = found
        return found

    def _remember(self, table: str, environment: str, doc: Any) -> None:
        if table == "features":
            self._metered.pop(environment, None)
        cache = self._docs.setdefault(table, OrderedDict())
        key = (environment, _id(doc))
        cache[key] = doc
        cache.move_to_end(key)
        if len(cache) > self.docs_cached_max:
            cache.popitem(last=False)

    # Document fields copied into columns of their own (`feature_type` holds the
    # document's `featureType`), so lists can filter on them.
    _COLUMNS = {"customer_profiles": ("email", "name"),
                "features": ("feature_type", "meter_type", "feature_status"),
                "coupons": ("type",),
                "plans": ("product_id", "status"),
                "addons": ("product_id", "status"),
                "subscriptions": ("customer_id", "plan_id", "status", "resource_id", "due_at")}

    async def insert(self, table: str, environment: str, doc: Any) -> bool:
        """False if a document with this id exists already."""
        extra = self._COLUMNS.get(table, ())
        names = ", ".join(("environment", "id", "doc", "created_at", "updated_at",
                           "archived_at", *extra))
        marks = ", ".join("?" for _ in range(6 + len(extra)))
        count = await self.store.execute(
            f"INSERT INTO {table} ({names}) VALUES ({marks}) "
            "ON CONFLICT (environment, id) DO NOTHING",
            environment, _id(doc), self._encode(table, doc), *_times(doc),
            *(_column(doc, c) for c in extra))
        if count:
            self._remember(table, environment, doc)
            self._changed(table, environment, _id(doc))
        return bool(count)

    def _replacement(self, table: str, environment: str, doc: Any) -> tuple[Any, ...]:
        _, updated, archived = _times(doc)
        return (self._encode(table, doc), updated, archived,
                *(_column(doc, c) for c in self._COLUMNS.get(table, ())), environment,
                _id(doc))

    async def replace(self, table: str, environment: str, doc: Any) -> None:
        extra = self._COLUMNS.get(table, ())
        sets = "".join(f", {c} = ?" for c in extra)
        await self.store.execute(
            f"UPDATE {table} SET doc = ?, updated_at = ?, archived_at = ?{sets} "
            "WHERE environment = ? AND id = ?", *self._replacement(table, environment, doc))
        self._remember(table, environment, doc)
        self._changed(table, environment, _id(doc))

    async def replace_many(self, table: str, items: list[tuple[str, Any]]) -> None:
        """`replace` for many (environment, document) pairs in one transaction: all are
        written or none."""
        extra = self._COLUMNS.get(table, ())
        sets = "".join(f", {c} = ?" for c in extra)
        await self.store.transact([(
            f"UPDATE {table} SET doc = ?, updated_at = ?, archived_at = ?{sets} "
            "WHERE environment = ? AND id = ?",
            [self._replacement(table, env, doc) for env, doc in items])])
        for env, doc in items:
            self._remember(table, env, doc)
            self._changed(table, env, _id(doc))

    async def page(self, table: str, environment: str, limit: int, after: str | None,
                   before: str | None, archived: bool | None = None, *,
                   created: list[tuple[str, int]] | None = None,
                   equal: dict[str, str | None] | None = None,
                   any_of: dict[str, list[str]] | None = None,
                   starts_with: tuple[tuple[str, ...], str] | None = None) -> Page:
        """Cursor pagination in creation order; cursors are opaque `createdAt.id`.
        `created` bounds the creation time ((">=", ms), …); `equal` matches columns;
        `starts_with` (columns, prefix) keeps rows where any of the columns starts with
        the prefix, ignoring case (a scan in creation order: for people searching, not
        for programs)."""
        where = ["environment = ?"]
        params: list[Any] = [environment]
        if archived is True:
            where.append("archived_at IS NOT NULL")
        elif archived is False:
            where.append("archived_at IS NULL")
        for symbol, ms in created or ():
            where.append(f"created_at {symbol} ?")
            params.append(ms)
        for column, value in (equal or {}).items():
            if value is not None:
                assert column == "id" or column in self._COLUMNS.get(table, ()), column
                where.append(f"{column} = ?")
                params.append(value)
        for column, values in (any_of or {}).items():
            if values:
                assert column in self._COLUMNS.get(table, ()), column
                where.append(f"{column} IN ({', '.join('?' for _ in values)})")
                params.extend(values)
        if starts_with is not None and starts_with[1]:
            columns, prefix = starts_with
            escaped = (prefix.lower().replace("\\", "\\\\").replace("%", "\\%")
                       .replace("_", "\\_")) + "%"
            tests = []
            for column in columns:
                assert column == "id" or column in self._COLUMNS.get(table, ()), column
                tests.append(f"lower({column}) LIKE ? ESCAPE '\\'")
                params.append(escaped)
            where.append(f"({' OR '.join(tests)})")
        rows, next_cursor, prev_cursor = await page_by_creation(
            self.store, f"SELECT doc, created_at, id FROM {table}", where, params, limit,
            after, before)
        return Page([self._decode(table, r[0]) for r in rows], next_cursor, prev_cursor)

    # -- published package versions (gateway/packages caches them) ------------------------

    async def latest_version(self, environment: str, kind: str, ident: str) -> int | None:
        """The package's latest published version number, None if never published."""
        rows = await self.store.fetch(
            "SELECT MAX(version) FROM package_versions WHERE environment = ? AND kind = ? "
            "AND id = ?", environment, kind, ident)
        return None if not rows or rows[0][0] is None else int(rows[0][0])

    async def package_version(self, environment: str, kind: str, ident: str,
                              version: int) -> Any:
        rows = await self.store.fetch(
            "SELECT doc FROM package_versions WHERE environment = ? AND kind = ? AND id = ? "
            "AND version = ?", environment, kind, ident, version)
        return self._decode(_PACKAGE_TABLES[kind], rows[0][0]) if rows else None

    async def put_package_version(self, environment: str, kind: str, doc: Any,
                                  version: int) -> None:
        """Record a published version (the same version again replaces its document)."""
        await self.store.execute(
            "INSERT INTO package_versions (environment, kind, id, version, doc, published_at) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (environment, kind, id, version) DO UPDATE "
            "SET doc = excluded.doc", environment, kind, _id(doc), version,
            self._encode(_PACKAGE_TABLES[kind], doc), self.now_ms())
        self._changed("package_versions", environment, f"{kind}/{_id(doc)}")

    # -- copying an environment (the TOML catalog's scratch run) ---------------------------

    async def copy_environment(self, environment: str, into: Catalog,
                               tables: tuple[str, ...]) -> None:
        """Copy the environment's documents of `tables` and its published package
        versions into `into` (another database's Catalog)."""
        for table in tables:
            for (doc,) in await self.store.fetch(
                    f"SELECT doc FROM {table} WHERE environment = ?", environment):
                await into.insert(table, environment, self._decode(table, doc))
        for row in await self.store.fetch(
                "SELECT environment, kind, id, version, doc, published_at FROM package_versions "
                "WHERE environment = ?", environment):
            await into.store.execute(
                "INSERT INTO package_versions (environment, kind, id, version, doc, "
                "published_at) VALUES (?, ?, ?, ?, ?, ?)", *row)
