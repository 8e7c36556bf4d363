"""What several route modules share: a stored document as the wire shows it."""

from __future__ import annotations

from typing import Any

from gateway.wire import iso

__all__ = ["public"]


def public(doc: dict[str, Any]) -> dict[str, Any]:
    """A stored document as the wire shows it: internal `_` fields become ISO times."""
    out = {k: v for k, v in doc.items() if not k.startswith("_")}
    out["createdAt"] = iso(doc["_createdAt"])
    out["updatedAt"] = iso(doc["_updatedAt"])
    out["archivedAt"] = iso(doc.get("_archivedAt"))
    return out
