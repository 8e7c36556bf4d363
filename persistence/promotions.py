"""The rows of promotional entitlements (table `promotional_entitlements`, one per
environment, customer and feature): a typed document, engine/domain/stored.Promotion
(engine/domain/promotions.py decides what goes in)."""

from __future__ import annotations

from typing import Any

import msgspec

from engine.domain.stored import Promotion

__all__ = ["end", "of_customer", "one", "save", "settled"]

_json = msgspec.json.Encoder(order="deterministic").encode


def _doc(doc: Promotion) -> str:
    """The document as stored: without `usage_settled`, which the row's status holds."""
    fields = msgspec.to_builtins(doc)
    fields.pop("_usageSettled", None)
    return _json(fields).decode()
_UPSERT = (
    "INSERT INTO promotional_entitlements (environment, customer_id, feature_id, doc, status, "
    "created_at, updated_at, archived_at) VALUES (?, ?, ?, ?, ?, ?, ?, NULL) "
    "ON CONFLICT (environment, customer_id, feature_id) DO UPDATE SET doc = excluded.doc, "
    "status = excluded.status, created_at = excluded.created_at, "
    "updated_at = excluded.updated_at, archived_at = NULL")
_OF_CUSTOMER = ("SELECT doc, status FROM promotional_entitlements WHERE environment = ? "
                "AND customer_id = ?")
_ONE = _OF_CUSTOMER + " AND feature_id = ? AND archived_at IS NULL"
# Only the grant that was read (a grant again for the feature writes a new created_at and
# status Active), and only once.
_SETTLED = ("UPDATE promotional_entitlements SET status = 'Expired' WHERE environment = ? "
            "AND customer_id = ? AND feature_id = ? AND created_at = ? AND status = 'Active' "
            "AND archived_at IS NULL")
# Only the grant that was read: a grant again for the feature meanwhile is not revoked in
# its place (nor written over with the old document).
_END = ("UPDATE promotional_entitlements SET doc = ?, status = ?, updated_at = ?, "
        "archived_at = ? WHERE environment = ? AND customer_id = ? AND feature_id = ? "
        "AND created_at = ? AND archived_at IS NULL")


_decode_doc = msgspec.json.Decoder(Promotion).decode


def _decode(row: Any) -> Promotion:
    doc = _decode_doc(row[0])
    doc.usage_settled = row[1] == "Expired"
    return doc


async def of_customer(store: Any, env: str, customer_id: str) -> list[Promotion]:
    """Every promotion of the customer, revoked ones included."""
    return [_decode(r) for r in await store.fetch(_OF_CUSTOMER, env, customer_id)]


async def one(store: Any, env: str, customer_id: str, feature_id: str) -> Promotion | None:
    """The customer's promotion for the feature, unless revoked."""
    rows = await store.fetch(_ONE, env, customer_id, feature_id)
    return _decode(rows[0]) if rows else None


async def save(store: Any, env: str, customer_id: str, docs: list[Promotion],
               now: int) -> None:
    """Grant `docs` (one per feature), replacing the customer's promotions for those
    features, all or none."""
    await store.transact([(_UPSERT, [
        (env, customer_id, d.feature_id, _doc(d), "Active", now, now)
        for d in docs])])


async def settled(store: Any, env: str, customer_id: str, doc: Promotion) -> None:
    """Record that the usage `doc` counted was settled at its end (status Expired)."""
    await store.execute(_SETTLED, env, customer_id, doc.feature_id, doc.created_at)


async def end(store: Any, env: str, customer_id: str, doc: Promotion, now: int) -> bool:
    """Write `doc` revoked at `now`; False if the row holds another grant by now (or was
    revoked meanwhile)."""
    return bool(await store.execute(_END, _doc(doc), "Revoked", now, now, env, customer_id,
                                    doc.feature_id, doc.created_at))
