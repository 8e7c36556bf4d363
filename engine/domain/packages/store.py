"""Stored plans and add-ons: the per-catalog state (a lock per package or product, the
cache of immutable published versions), the reads (working copy, published versions) and
the helpers their writers share."""

from __future__ import annotations

import copy
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import anyio

from engine.domain.context import Documents as Catalog
from engine.domain.context import stamp
from engine.domain.errors import DomainError, bad_input
from engine.domain.stored import Edited, Package

E = TypeVar("E", bound=Edited)

KINDS = {"plan": "plans", "addon": "addons"}
_NAMES = {"plan": "plan", "addon": "add-on"}
_NOT_FOUND = {"plan": "PlanNotFound", "addon": "AddonNotFound"}


# -- per-catalog state: locks and the immutable versions cache ----------------------------

class _State:
    def __init__(self) -> None:
        self.locks: dict[tuple[str, str, str], list[Any]] = {}  # [lock, users]
        self.versions: dict[tuple[str, str, str, int], Package] = {}
        self.latest: dict[tuple[str, str, str], int] = {}


_STATES: weakref.WeakKeyDictionary[Any, _State] = weakref.WeakKeyDictionary()


def _state(catalog: Catalog) -> _State:
    state = _STATES.get(catalog)
    if state is None:
        state = _STATES[catalog] = _State()
    return state


@asynccontextmanager
async def _lock(catalog: Catalog, env: str, kind: str, ident: str) -> AsyncIterator[None]:
    """Serialize the writers of one package (or product); the entry goes when no one
    holds or waits for it, so ids that were only ever refused leave nothing behind."""
    locks = _state(catalog).locks
    key = (env, kind, ident)
    entry = locks.get(key)
    if entry is None:
        entry = locks[key] = [anyio.Lock(), 0]
    entry[1] += 1
    try:
        async with entry[0]:
            yield
    finally:
        entry[1] -= 1
        if entry[1] == 0:
            del locks[key]




def forget_latest(catalog: Catalog, env: str, kind: str, ident: str) -> None:
    """Forget which version of a package is the latest published (another cluster node
    published one: the versions themselves never change)."""
    _state(catalog).latest.pop((env, kind, ident), None)


def forget_all_latest(catalog: Catalog) -> None:
    _state(catalog).latest.clear()


# -- reads ---------------------------------------------------------------------------------

def _table(kind: str) -> str:
    table = KINDS.get(kind)
    if table is None:
        raise ValueError(f"kind must be 'plan' or 'addon', not {kind!r}")
    return table


async def get_package(catalog: Catalog, env: str, kind: str, ident: str) -> Package | None:
    """The working copy (latest version: DRAFT, PUBLISHED or ARCHIVED), or None. Shared
    with the cache: do not mutate it."""
    return await catalog.get(_table(kind), env, ident)


async def published(catalog: Catalog, env: str, kind: str, ident: str,
                    version: int | None = None) -> Package | None:
    """Published version `version` of the package, or its latest published one; None if
    there is none. Versions are immutable (an archived package's versions stay readable:
    check `get_package(...).status` before subscribing, or use `require_published`)."""
    _table(kind)
    state = _state(catalog)
    if version is None:
        key = (env, kind, ident)
        version = state.latest.get(key)
        if version is None:
            version = await catalog.latest_version(env, kind, ident)
            if version is None:
                return None  # not remembered: it may be published later
            state.latest[key] = version
    vkey = (env, kind, ident, int(version))
    doc = state.versions.get(vkey)
    if doc is None:
        doc = await catalog.package_version(env, kind, ident, int(version))
        if doc is None:
            return None
        state.versions[vkey] = doc
    return doc


async def require_published(catalog: Catalog, env: str, kind: str, ident: str, *,
                            field: str = "planId", version: int | None = None) -> Package:
    """What a new subscription may use: the latest (or given) published version of a live
    package. 404 for an unknown package, 400 for an archived or never published one."""
    working = await get_package(catalog, env, kind, ident)
    if working is None:
        raise DomainError(404, _NOT_FOUND[kind], f"{_NAMES[kind]} {ident!r} was not found", field)
    if working.status == "ARCHIVED":
        raise bad_input(f"{_NAMES[kind]} {ident!r} is archived", field)
    doc = await published(catalog, env, kind, ident, version)
    if doc is None:
        raise bad_input(f"{_NAMES[kind]} {ident!r} has no published version"
                        + ("" if version is None else f" {version}"), field)
    return doc


async def _working(catalog: Catalog, env: str, kind: str, ident: str,
                   field: str = "id") -> Package:
    doc = await get_package(catalog, env, kind, ident)
    if doc is None:
        raise DomainError(404, _NOT_FOUND[kind], f"{_NAMES[kind]} {ident!r} was not found", field)
    return copy.deepcopy(doc)


async def require_package(catalog: Catalog, env: str, kind: str, ident: str,
                          field: str = "id") -> Package:
    """The working copy (a copy the caller may change), 404 if there is none."""
    return await _working(catalog, env, kind, ident, field)


def _require_draft(doc: Package, kind: str, what: str) -> None:
    if doc.status == "ARCHIVED":
        raise DomainError(409, "PackageArchived",
                       f"{_NAMES[kind]} {doc.id!r} is archived; {what} cannot change")
    if doc.status != "DRAFT":
        raise DomainError(409, "PackageNotDraft",
                       f"{_NAMES[kind]} {doc.id!r} is published; create a draft first "
                       f"(POST …/{doc.id}/draft) to change its {what}")


def _touch(catalog: Catalog, doc: E, *, created: bool = False) -> E:
    return stamp(catalog, doc, created=created)


async def _store_version(catalog: Catalog, env: str, kind: str, doc: Package) -> None:
    version = doc.version_number
    # The version is kept as it is now: later edits of the working copy must not reach it.
    doc = copy.deepcopy(doc)
    await catalog.put_package_version(env, kind, doc, version)
    state = _state(catalog)
    state.versions[(env, kind, doc.id, version)] = doc
    key = (env, kind, doc.id)
    if (state.latest.get(key) or 0) < version:
        state.latest[key] = version
