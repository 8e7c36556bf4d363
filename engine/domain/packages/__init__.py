"""Products, plans and add-ons (issue 9): the one way to read and write packages.

A plan or add-on ("package", `kind` "plan" | "addon") is a typed document (stored.Plan,
stored.Addon; products are stored.Product) whose row in `plans` / `addons` is its *working
copy*: the latest version, DRAFT, PUBLISHED or ARCHIVED. Every
published version is kept, immutable, in `package_versions` (subscriptions point at one).

    create_package      a new package, DRAFT v1 (or published at once with status PUBLISHED)
    update_package      cosmetic fields (name, description, metadata, billingId, hidden) on
                        any live package; structure (charges, parent, compatible add-ons,
                        trial, maxQuantity, dependencies) only on a DRAFT (409 otherwise)
    set_entitlements    add to / replace the entitlements of a DRAFT
    publish             DRAFT -> PUBLISHED, the doc copied into package_versions
    create_draft        PUBLISHED vN -> DRAFT vN+1 (returns the draft if there is one)
    remove_draft        DRAFT vN+1 -> the published vN again
    archive             the package can no longer be subscribed to

Documents have the shapes of docs/subscriptions.md (Packages and versions). Bodies are
camelCase dicts (what the REST routes decode and what the TOML catalog builds); they are
validated as a whole before anything is written, and every refusal names its field.
Money is exact: decimal strings in documents (`"9.99"`), Decimal on the way in, never a
float. Writers of one package are serialized (a lock per package in this process, which
owns the database).

The modules: `shapes` (the wire Structs), `checks` (small validators), `store` (the
per-catalog locks and versions cache; the reads), `entitlements`, `charges` (prices),
`bodies` (what a create or update body sets), `versions` (create, update, publish, drafts,
archive), `products`. The JSON forms the REST API answers with are gateway/package_json.py.
"""

from __future__ import annotations

from engine.domain.packages.checks import money
from engine.domain.packages.entitlements import (
    delete_entitlement,
    set_entitlements,
    update_entitlement,
)
from engine.domain.packages.products import (
    ProductsQuery,
    archive_product,
    create_product,
    duplicate_product,
    get_product,
    list_products,
    unarchive_product,
    update_product,
)
from engine.domain.packages.shapes import (
    EntitlementIn,
    PackageCreate,
    PackageUpdate,
    ProductCreate,
    ProductUpdate,
)
from engine.domain.packages.store import (
    KINDS,
    get_package,
    published,
    require_package,
    require_published,
)
from engine.domain.packages.versions import (
    PackagesQuery,
    archive,
    create_draft,
    create_package,
    list_packages,
    publish,
    remove_draft,
    update_package,
)

__all__ = [
    "KINDS", "get_package", "require_package", "published", "require_published", "create_package",
    "update_package", "set_entitlements", "update_entitlement", "delete_entitlement",
    "publish", "create_draft", "remove_draft", "archive", "get_product", "create_product",
    "update_product", "archive_product", "unarchive_product", "duplicate_product",
    "money", "ProductsQuery", "list_products", "PackagesQuery", "list_packages",
    "EntitlementIn", "PackageCreate", "PackageUpdate", "ProductCreate", "ProductUpdate",
]
