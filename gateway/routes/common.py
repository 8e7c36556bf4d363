"""What several route modules share: a stored document as the wire shows it."""

from __future__ import annotations

from typing import Any

import msgspec

from gateway.wire import iso

__all__ = ["public"]


def public(doc: Any) -> dict[str, Any]:
    """A stored document (typed or a dict) as the wire shows it: the fields by their
    stored (wire) names, internal `_` fields become ISO times."""
    if not isinstance(doc, dict):
        doc = msgspec.to_builtins(doc)  # stored names; unset fields are left out
    out = {k: v for k, v in doc.items() if not k.startswith("_")}
    out["createdAt"] = iso(doc["_createdAt"])
    out["updatedAt"] = iso(doc["_updatedAt"])
    out["archivedAt"] = iso(doc.get("_archivedAt"))
    return out
