"""The reads of subscriptions the scheduler and the lists need (table `subscriptions`:
one document per subscription, with its environment, customer, plan, status, resource and
next due time as columns). Writes go through the documents (persistence/documents.py)."""

from __future__ import annotations

from typing import Any

import msgspec

__all__ = ["due", "next_due", "of_customer", "running", "running_on_plan",
           "running_on_resource"]

_decode = msgspec.json.decode
_RUNNING = "status IN ('ACTIVE', 'IN_TRIAL', 'NOT_STARTED')"


async def of_customer(store: Any, env: str, customer_id: str) -> list[dict[str, Any]]:
    """Every subscription of the customer as stored, oldest first."""
    rows = await store.fetch("SELECT doc FROM subscriptions WHERE environment = ? AND "
                             "customer_id = ? ORDER BY created_at, id", env, customer_id)
    return [_decode(r[0]) for r in rows]


async def due(store: Any, now: int, limit: int) -> list[tuple[str, str, str]]:
    """(environment, id, customer id) of the subscriptions due by `now`, earliest first."""
    rows = await store.fetch("SELECT environment, id, customer_id FROM subscriptions "
                             "WHERE due_at <= ? ORDER BY due_at LIMIT ?", now, limit)
    return [(r[0], r[1], r[2]) for r in rows]


async def next_due(store: Any) -> int | None:
    """When the next subscription is due (None: none is)."""
    rows = await store.fetch("SELECT MIN(due_at) FROM subscriptions")
    return rows[0][0] if rows else None


async def running_on_plan(store: Any, env: str, plan_id: str) -> list[tuple[str, str]]:
    """(customer id, id) of the running or scheduled subscriptions to the plan."""
    rows = await store.fetch("SELECT customer_id, id FROM subscriptions WHERE environment = ? "
                             f"AND plan_id = ? AND {_RUNNING}", env, plan_id)
    return [(r[0], r[1]) for r in rows]


async def running(store: Any, env: str) -> list[dict[str, Any]]:
    """The environment's running or scheduled subscriptions, as stored."""
    rows = await store.fetch(f"SELECT doc FROM subscriptions WHERE environment = ? AND {_RUNNING}",
                             env)
    return [_decode(r[0]) for r in rows]


async def running_on_resource(store: Any, env: str, customer_id: str,
                              resource_id: str) -> list[dict[str, Any]]:
    """The customer's running or scheduled subscriptions for the resource, as stored."""
    rows = await store.fetch("SELECT doc FROM subscriptions WHERE environment = ? AND "
                             f"customer_id = ? AND resource_id = ? AND {_RUNNING}",
                             env, customer_id, resource_id)
    return [_decode(r[0]) for r in rows]
