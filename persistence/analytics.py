"""What the usage analytics read (engine/domain/analytics.py): the hourly buckets the
group commit sums (`usage_buckets`) and the dimension keys seen (`usage_dimension_keys`).
Dimensions come back decoded ({} for none)."""

from __future__ import annotations

from typing import Any

from persistence.codec import decode_json

__all__ = ["credit_buckets", "dimension_keys", "usage_buckets"]


def _dims(raw: Any) -> dict[str, Any]:
    return decode_json(raw) if raw else {}


async def credit_buckets(store: Any, customer: str, start_hour: int, end: int,
                         currency_id: str | None, resource_id: str | None,
                         ) -> list[tuple[int, str | None, dict[str, Any], str, int, int]]:
    """(hour, feature id, dimensions, currency id, credits, events) of the customer's
    buckets in [start_hour, end) that consumed credits."""
    where = ["customer_id = ?", "hour >= ?", "hour < ?", "credits <> 0"]
    params: list[Any] = [customer, start_hour, end]
    if currency_id:
        where.append("currency_key = ?")
        params.append(currency_id)
    if resource_id:
        where.append("resource_key = ?")
        params.append(resource_id)
    rows = await store.fetch(
        f"SELECT hour, feature_id, dims, currency_id, credits, events FROM usage_buckets "
        f"WHERE {' AND '.join(where)}", *params)
    return [(r[0], r[1], _dims(r[2]), r[3], r[4], r[5]) for r in rows]


async def dimension_keys(store: Any, customer: str) -> list[str]:
    rows = await store.fetch(
        "SELECT key FROM usage_dimension_keys WHERE customer_id = ? ORDER BY key", customer)
    return [r[0] for r in rows]


async def usage_buckets(store: Any, customer: str, feature_id: str, resource_id: str | None,
                        end: int) -> list[tuple[int, dict[str, Any], int]]:
    """(hour, dimensions, usage change) of the feature's buckets before `end`."""
    rows = await store.fetch(
        "SELECT hour, dims, usage FROM usage_buckets WHERE customer_id = ? AND feature_key = ? "
        "AND resource_key = ? AND hour < ?", customer, feature_id, resource_id or "", end)
    return [(r[0], _dims(r[1]), r[2]) for r in rows]
