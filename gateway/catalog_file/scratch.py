"""Applying a whole file, all or nothing: `apply` runs the change set on a scratch copy of
the environment's catalog (a temporary SQLite database) first, then on the real one;
`apply_path` reads, checks and applies a file to a database (what the CLI runs)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from .applier import Change, _Applier
from .parse import load
from .schema import CatalogError, CatalogFile

# The catalog tables a scratch copy needs (documents), and the versions table.
_DOC_TABLES = ("currencies", "features", "coupons", "products", "plans", "addons")


async def _scratch_copy(catalog: Any, env: str, scratch: Any) -> None:
    await catalog.copy_environment(env, scratch, _DOC_TABLES)


async def apply(catalog: Any, env: str, file: CatalogFile, *,
                dry_run: bool = False) -> list[Change]:
    """Make the environment's catalog say what `file` says; the changes, one per item.
    Raises CatalogError (nothing applied) if any item cannot be applied."""
    from persistence import open_store
    from persistence.documents import Catalog

    failed: CatalogError | None = None
    with tempfile.TemporaryDirectory(prefix="creditd-catalog-") as tmp:
        async with open_store(f"sqlite:///{Path(tmp) / 'scratch.db'}",
                              durability="async", key_filter_bytes=0) as store:
            scratch = Catalog(store, clock=catalog.clock)
            await _scratch_copy(catalog, env, scratch)
            try:
                changes = await _Applier(file, scratch, env).run()
            except CatalogError as exc:
                # Raised outside the store's task group, which would wrap it in a group.
                failed = exc
    if failed is not None:
        raise failed
    if dry_run or all(c.action == "unchanged" for c in changes):
        return changes
    return await _Applier(file, catalog, env).run()


async def apply_path(database_url: str | None, env: str, path: str, *,
                     dry_run: bool = False) -> list[Change]:
    """Read, check and apply a catalog file to a database (what the CLI runs)."""
    from persistence import open_store
    from persistence.documents import Catalog

    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise CatalogError(f"{path}: cannot read: {exc.strerror or exc}") from None
    file = load(text, path)
    failed: CatalogError | None = None
    # Catalog documents only: no idempotency keys to filter (nor tables to read back).
    async with open_store(database_url, key_filter_bytes=0) as store:
        try:
            changes = await apply(Catalog(store), env, file, dry_run=dry_run)
        except CatalogError as exc:
            failed = exc
    if failed is not None:
        raise failed
    return changes
