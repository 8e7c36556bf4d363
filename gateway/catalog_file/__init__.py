"""A declarative catalog in TOML: custom currencies, features, products, plans, add-ons and
coupons, applied to an environment with `creditd catalog apply FILE` (or at start-up with
`creditd serve --catalog FILE`). The format is described in docs/catalog.md.

`load(text, name)` parses and validates the file into a `CatalogFile` (errors name the
table and key, with the line). `apply(catalog, env, file, dry_run)` compares every item with
what is stored and creates, updates, or (plans and add-ons) publishes a new version where
they differ, through the same code the REST API runs: the route handlers of currencies,
features and coupons, and `engine.domain.packages` for products, plans and add-ons. Applying the
same file again changes nothing.

Nothing is half-applied: the whole change set is first applied to a scratch copy of the
environment's catalog (a temporary SQLite database), and only when that succeeds is it
applied to the real one. A dry run stops after the scratch run, so what it prints is exactly
what the real run would do.
"""

from __future__ import annotations

from .applier import Change
from .parse import load
from .schema import CatalogError, CatalogFile
from .scratch import apply, apply_path

__all__ = ["CatalogError", "CatalogFile", "Change", "apply", "apply_path", "load"]
