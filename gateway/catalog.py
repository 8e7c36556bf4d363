"""Environment-scoped records the gateway keeps beside the engine: API keys, custom
currencies and customer profiles. They change at admin pace, so they are written with
single statements outside the group commit, and currencies are cached in memory (the
consumption path checks one on every request)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections import OrderedDict
from typing import Any

import msgspec

from engine.core.meters import Meter
from engine.runtime.clock import SystemClock
from gateway.errors import bad_input
from gateway.names import camel
from gateway.wire import ascii_int

__all__ = ["Catalog", "Page", "hash_key", "page_by_creation", "parse_cursor"]

_json = msgspec.json.Encoder(order="deterministic").encode
_unjson = msgspec.json.decode


def hash_key(key: str) -> str:
    # API keys are random 32-byte tokens, so a plain SHA-256 is the right hash: nothing to
    # brute-force, and it lets us look a key up by its hash in constant time.
    return hashlib.sha256(key.encode()).hexdigest()


class Page(msgspec.Struct, frozen=True):
    items: list[dict[str, Any]]
    next: str | None
    prev: str | None


def _cursor(created_at: int, ident: str) -> str:
    return f"{created_at}.{ident}"


def parse_cursor(cursor: str, field: str) -> tuple[int, str]:
    """A `createdAt.id` cursor (`_cursor`) back into its parts; 400 naming `field` if it
    is not one this server issued."""
    created, _, ident = cursor.partition(".")
    created_ms = ascii_int(created)
    if created_ms is None or not ident:
        raise bad_input("is not a cursor this server issued", field)
    return created_ms, ident


async def page_by_creation(
    store: Any, select: str, where: list[str], params: list[Any], limit: int,
    after: str | None, before: str | None,
) -> tuple[list[Any], str | None, str | None]:
    """Keyset pagination in creation order over `select` (whose last two columns are
    created_at and id): the rows of the page and the `next`/`prev` cursors, which are
    opaque `createdAt.id` strings. With `before`, the page ends just before that cursor.
    Keyset rather than offset pagination: a page costs the same however deep it is, and
    rows inserted meanwhile never shift what the next page holds."""
    where, params = list(where), list(params)
    order = "ASC"
    if after:
        created_ms, ident = parse_cursor(after, "after")
        where.append("(created_at > ? OR (created_at = ? AND id > ?))")
        params += [created_ms, created_ms, ident]
    elif before:
        created_ms, ident = parse_cursor(before, "before")
        where.append("(created_at < ? OR (created_at = ? AND id < ?))")
        params += [created_ms, created_ms, ident]
        order = "DESC"
    rows = await store.fetch(
        f"{select} WHERE {' AND '.join(where)} ORDER BY created_at {order}, id {order} "
        "LIMIT ?", *params, limit + 1)
    more = len(rows) > limit
    rows = list(rows[:limit])
    if order == "DESC":
        rows.reverse()
    first = _cursor(rows[0][-2], rows[0][-1]) if rows else None
    last = _cursor(rows[-1][-2], rows[-1][-1]) if rows else None
    if order == "ASC":
        return rows, last if more else None, first if after else None
    return rows, last, first if more else None


class Catalog:
    """Documents are cached per table, least recently used first out, up to
    `docs_cached_max` each: every consumption checks its customer and currency, and a
    database read per request would cost more than the consumption. The cache is coherent
    because one creditd process owns a database and every write goes through here."""

    def __init__(self, store: Any, *, clock: Any = None,
                 docs_cached_max: int = 100_000) -> None:
        assert docs_cached_max > 0
        self.store = store
        # The process's one clock (the runtime's): documents are stamped with its time, so
        # a manual clock (CREDITD_CLOCK) and the documents agree.
        self.clock = clock if clock is not None else SystemClock()
        self.docs_cached_max = docs_cached_max
        self.docs_cached_max = docs_cached_max
        self._docs: dict[str, OrderedDict[tuple[str, str], dict[str, Any]]] = {}
        self._keys: dict[str, str] = {}  # key hash -> environment
        # environment -> features with a meter (events are matched against all of them);
        # dropped whenever a feature of the environment is written.
        self._metered: dict[str, list[tuple[dict[str, Any], Meter]]] = {}

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

    async def keep_only(self, keys: list[str]) -> int:
        """Revoke every stored key but `keys`; returns how many went."""
        keep = {hash_key(k) for k in keys}
        gone = [digest for digest in self._keys if digest not in keep]
        for digest in gone:
            await self.store.execute("DELETE FROM api_keys WHERE key_hash = ?", digest)
            del self._keys[digest]
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

    async def get(self, table: str, environment: str, ident: str) -> dict[str, Any] | None:
        cache = self._docs.setdefault(table, OrderedDict())
        doc = cache.get((environment, ident))
        if doc is not None:
            cache.move_to_end((environment, ident))
            return doc
        rows = await self.store.fetch(
            f"SELECT doc FROM {table} WHERE environment = ? AND id = ?", environment, ident)
        if not rows:
            return None  # not cached: the document may be created later
        doc = _unjson(rows[0][0])
        self._remember(table, environment, doc)
        return doc

    async def metered_features(self, environment: str) -> list[tuple[dict[str, Any], Meter]]:
        """The environment's active features that have a meter, with the meter parsed."""
        found = self._metered.get(environment)
        if found is None:
            rows = await self.store.fetch(
                "SELECT doc FROM features WHERE environment = ? AND archived_at IS NULL "
                "AND meter_type <> 'None'", environment)
            docs = [d for d in (_unjson(r[0]) for r in rows) if d.get("meter")]
            found = [(d, msgspec.convert(d["meter"], Meter)) for d in docs]
            self._metered[environment] = found
        return found

    def _remember(self, table: str, environment: str, doc: dict[str, Any]) -> None:
        if table == "features":
            self._metered.pop(environment, None)
        cache = self._docs.setdefault(table, OrderedDict())
        cache[(environment, doc["id"])] = doc
        cache.move_to_end((environment, doc["id"]))
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

    async def insert(self, table: str, environment: str, doc: dict[str, Any]) -> bool:
        """False if a document with this id exists already."""
        extra = self._COLUMNS.get(table, ())
        names = ", ".join(("environment", "id", "doc", "created_at", "updated_at",
                           "archived_at", *extra))
        marks = ", ".join("?" for _ in range(6 + len(extra)))
        count = await self.store.execute(
            f"INSERT INTO {table} ({names}) VALUES ({marks}) "
            "ON CONFLICT (environment, id) DO NOTHING",
            environment, doc["id"], _json(doc).decode(), doc["_createdAt"], doc["_updatedAt"],
            doc.get("_archivedAt"), *(doc.get(camel(c)) for c in extra))
        if count:
            self._remember(table, environment, doc)
        return bool(count)

    async def replace(self, table: str, environment: str, doc: dict[str, Any]) -> None:
        extra = self._COLUMNS.get(table, ())
        sets = "".join(f", {c} = ?" for c in extra)
        await self.store.execute(
            f"UPDATE {table} SET doc = ?, updated_at = ?, archived_at = ?{sets} "
            "WHERE environment = ? AND id = ?",
            _json(doc).decode(), doc["_updatedAt"], doc.get("_archivedAt"),
            *(doc.get(camel(c)) for c in extra), environment, doc["id"])
        self._remember(table, environment, doc)

    async def replace_many(self, table: str, items: list[tuple[str, dict[str, Any]]]) -> None:
        """`replace` for many (environment, document) pairs in one transaction: all are
        written or none."""
        extra = self._COLUMNS.get(table, ())
        sets = "".join(f", {c} = ?" for c in extra)
        await self.store.transact([(
            f"UPDATE {table} SET doc = ?, updated_at = ?, archived_at = ?{sets} "
            "WHERE environment = ? AND id = ?",
            [(_json(doc).decode(), doc["_updatedAt"], doc.get("_archivedAt"),
              *(doc.get(camel(c)) for c in extra), env, doc["id"]) for env, doc in items])])
        for env, doc in items:
            self._remember(table, env, doc)

    async def page(self, table: str, environment: str, limit: int, after: str | None,
                   before: str | None, archived: bool | None = None, *,
                   created: list[tuple[str, int]] | None = None,
                   equal: dict[str, str | None] | None = None,
                   any_of: dict[str, list[str]] | None = None) -> Page:
        """Cursor pagination in creation order; cursors are opaque `createdAt.id`.
        `created` bounds the creation time ((">=", ms), …); `equal` matches columns."""
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
        rows, next_cursor, prev_cursor = await page_by_creation(
            self.store, f"SELECT doc, created_at, id FROM {table}", where, params, limit,
            after, before)
        return Page([_unjson(r[0]) for r in rows], next_cursor, prev_cursor)
