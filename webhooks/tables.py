"""The webhook tables (persistence/schema.py, v4): SQL text, written once with `?`
placeholders for both backends, and the reads and writes the relay, the dispatcher and the
API make. Writes that must move together go through `store.transact` (one transaction).

Lane invariant. Deliveries to one endpoint for one customer form a lane, in id order.
Exactly one pending row of a lane, its head (the lowest id), has `next_attempt_at` set;
the rest wait behind it with NULL. Three writes keep it so, all under the service's write
lock: `INSERT_PENDING` makes a row the head only when its lane has no pending row;
`PROMOTE` makes the next row the head when a head is settled (delivered or dead); nothing
else sets or clears `next_attempt_at`. The dispatcher therefore only ever sees heads, and
its scan reads due heads through a partial index, whatever the backlog behind them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["Tables", "DueRow", "Delivery", "Attempt", "PENDING", "DELIVERED", "DEAD"]

PENDING, DELIVERED, DEAD = "PENDING", "DELIVERED", "DEAD"

ENDPOINT_COLUMNS = ["id", "environment", "url", "description", "event_types", "enabled",
                    "disabled_reason", "secret", "previous_secret", "previous_secret_until",
                    "created_at", "updated_at"]
INSERT_ENDPOINT = (f"INSERT INTO webhook_endpoints ({', '.join(ENDPOINT_COLUMNS)}) "
                   f"VALUES ({', '.join('?' for _ in ENDPOINT_COLUMNS)})")
UPDATE_ENDPOINT = ("UPDATE webhook_endpoints SET "
                   + ", ".join(f"{c} = ?" for c in ENDPOINT_COLUMNS[2:]) + " WHERE id = ?")
SELECT_ENDPOINTS = (f"SELECT {', '.join(ENDPOINT_COLUMNS)} FROM webhook_endpoints "
                    "WHERE deleted_at IS NULL")

INSERT_EVENT = ("INSERT INTO webhook_events (outbox_id, environment, event_id, type, customer_id, "
                "created_at, payload) VALUES (?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (outbox_id) DO NOTHING")

# (id, endpoint_id, outbox_id, customer_id, now, created_at, replay_of) -> a pending row, the
# lane's head if the lane has no pending row yet.
INSERT_PENDING = (
    "INSERT INTO webhook_deliveries (id, endpoint_id, outbox_id, customer_id, status, attempts, "
    "next_attempt_at, created_at, replay_of) VALUES (?, ?, ?, ?, 'PENDING', 0, "
    "CASE WHEN EXISTS (SELECT 1 FROM webhook_deliveries AS l WHERE l.endpoint_id = ? "
    "AND l.customer_id = ? AND l.status = 'PENDING') THEN NULL ELSE CAST(? AS BIGINT) END, ?, ?)"
)
# A delivery refused at the door (the endpoint's backlog is full): dead on arrival, so the
# refusal is visible and the event replayable.
INSERT_DEAD = (
    "INSERT INTO webhook_deliveries (id, endpoint_id, outbox_id, customer_id, status, attempts, "
    "next_attempt_at, created_at, replay_of, last_error) "
    "VALUES (?, ?, ?, ?, 'DEAD', 0, NULL, ?, ?, ?)"
)
SET_CURSOR = "UPDATE webhook_relay SET outbox_cursor = ? WHERE name = 'webhooks'"
SELECT_CURSOR = "SELECT outbox_cursor FROM webhook_relay WHERE name = 'webhooks'"

DUE = (
    "SELECT d.id, d.outbox_id, d.customer_id, d.attempts, d.next_attempt_at, e.event_id, "
    "e.payload, e.created_at, d.replay_of FROM webhook_deliveries AS d JOIN webhook_events AS e ON e.outbox_id = d.outbox_id "
    "WHERE d.endpoint_id = ? AND d.next_attempt_at IS NOT NULL "
    "ORDER BY d.next_attempt_at, d.id LIMIT ?"
)

SETTLE = ("UPDATE webhook_deliveries SET status = ?, attempts = ?, next_attempt_at = ?, "
          "last_attempt_at = ?, last_status_code = ?, last_latency_ms = ?, last_error = ?, "
          "delivered_at = ? WHERE id = ?")
INSERT_ATTEMPT = ("INSERT INTO webhook_attempts (id, delivery_id, endpoint_id, attempt, "
                  "started_at, status_code, latency_ms, error, response) "
                  "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")
PROMOTE = ("UPDATE webhook_deliveries SET next_attempt_at = ? WHERE id = (SELECT min(id) FROM "
           "webhook_deliveries WHERE endpoint_id = ? AND customer_id = ? AND status = 'PENDING')")
DISABLE = ("UPDATE webhook_endpoints SET enabled = ?, disabled_reason = ?, updated_at = ? "
           "WHERE id = ?")
# Enabling an endpoint makes the heads waiting out a retry due at once: whoever re-enables
# it has usually just fixed the receiver.
HURRY = ("UPDATE webhook_deliveries SET next_attempt_at = ? WHERE endpoint_id = ? "
         "AND next_attempt_at > ?")

DELIVERY_COLUMNS = ["id", "outbox_id", "customer_id", "status", "attempts", "next_attempt_at",
                    "last_attempt_at", "last_status_code", "last_latency_ms", "last_error",
                    "created_at", "delivered_at", "replay_of"]
_SELECT_DELIVERIES = (
    "SELECT " + ", ".join(f"d.{c}" for c in DELIVERY_COLUMNS) + ", e.event_id, e.type "
    "FROM webhook_deliveries AS d LEFT JOIN webhook_events AS e ON e.outbox_id = d.outbox_id "
)
ATTEMPT_COLUMNS = ["id", "delivery_id", "attempt", "started_at", "status_code", "latency_ms",
                   "error", "response"]
_SELECT_ATTEMPTS = f"SELECT {', '.join(ATTEMPT_COLUMNS)} FROM webhook_attempts "


class DueRow:
    __slots__ = ("id", "outbox_id", "customer_id", "attempts", "next_attempt_at", "event_id",
                 "payload", "event_at", "replay")

    def __init__(self, row: Sequence[Any]) -> None:
        (self.id, self.outbox_id, self.customer_id, self.attempts, self.next_attempt_at,
         self.event_id, payload, self.event_at, replay_of) = row
        self.payload = bytes(payload)
        # A replay re-sends an old event on an operator's request: its age is no lag.
        self.replay = replay_of is not None


class Tables:
    """Reads and writes of the webhook tables on a persistence store."""

    def __init__(self, store: Any) -> None:
        self.store = store

    # -- start-up -------------------------------------------------------------------------

    async def endpoint_rows(self) -> Sequence[Sequence[Any]]:
        return await self.store.fetch(SELECT_ENDPOINTS)

    async def cursor(self) -> int:
        (row,) = await self.store.fetch(SELECT_CURSOR)
        return int(row[0])

    async def next_ids(self) -> tuple[int, int]:
        """The next free delivery id and attempt id."""
        (d,) = await self.store.fetch("SELECT coalesce(max(id), 0) FROM webhook_deliveries")
        (a,) = await self.store.fetch("SELECT coalesce(max(id), 0) FROM webhook_attempts")
        return int(d[0]) + 1, int(a[0]) + 1

    async def pending_counts(self) -> dict[str, int]:
        rows = await self.store.fetch(
            "SELECT endpoint_id, count(*) FROM webhook_deliveries WHERE status = 'PENDING' "
            "GROUP BY endpoint_id")
        return {r[0]: int(r[1]) for r in rows}

    # -- endpoints ------------------------------------------------------------------------

    async def insert_endpoint(self, row: Sequence[Any]) -> None:
        await self.store.execute(INSERT_ENDPOINT, *row)

    async def update_endpoint(self, row: Sequence[Any], *, hurry_at: int | None) -> None:
        """Write the endpoint's columns; `hurry_at`: it was just enabled, so its waiting
        heads become due at that time."""
        steps: list[tuple[str, list[Sequence[Any]]]] = [(UPDATE_ENDPOINT, [(*row[2:], row[0])])]
        if hurry_at is not None:
            steps.append((HURRY, [(hurry_at, row[0], hurry_at)]))
        await self.store.transact(steps)

    async def delete_endpoint(self, endpoint_id: str, now_ms: int) -> None:
        # A tombstone: its deliveries and attempts are left to the purge, in bounded steps
        # (an endpoint may have millions, and nothing reads them once it is gone).
        await self.store.execute("UPDATE webhook_endpoints SET deleted_at = ? WHERE id = ?",
                                 now_ms, endpoint_id)

    # -- the relay and the dispatcher -----------------------------------------------------

    async def fan_out(self, events: list[tuple], pending: list[tuple], dead: list[tuple],
                      cursor: int) -> None:
        """Store the events and their deliveries and move the cursor past them, at once: a
        crash before the commit re-reads the same outbox rows, after it none of them."""
        await self.store.transact([(INSERT_EVENT, events), (INSERT_PENDING, pending),
                                   (INSERT_DEAD, dead), (SET_CURSOR, [(cursor,)])])

    async def set_cursor(self, cursor: int) -> None:
        await self.store.execute(SET_CURSOR, cursor)

    async def due(self, endpoint_id: str, limit: int) -> list[DueRow]:
        return [DueRow(r) for r in await self.store.fetch(DUE, endpoint_id, limit)]

    async def settle(self, settled: list[tuple], attempts: list[tuple], promoted: list[tuple],
                     disabled: list[tuple]) -> None:
        await self.store.transact([(SETTLE, settled), (INSERT_ATTEMPT, attempts),
                                   (PROMOTE, promoted), (DISABLE, disabled)])

    async def insert_deliveries(self, pending: list[tuple], dead: list[tuple]) -> None:
        await self.store.transact([(INSERT_PENDING, pending), (INSERT_DEAD, dead)])

    # -- inspection -----------------------------------------------------------------------

    async def deliveries(self, endpoint_id: str, *, status: str | None, after: int | None,
                         before: int | None, limit: int) -> list[Sequence[Any]]:
        """Newest first; `after`: older than that id; `before`: newer (read oldest first
        and returned newest first)."""
        where, params = ["d.endpoint_id = ?"], [endpoint_id]
        if status is not None:
            where.append("d.status = ?")
            params.append(status)
        order = "DESC"
        if after is not None:
            where.append("d.id < ?")
            params.append(after)
        elif before is not None:
            where.append("d.id > ?")
            params.append(before)
            order = "ASC"
        rows = list(await self.store.fetch(
            f"{_SELECT_DELIVERIES} WHERE {' AND '.join(where)} ORDER BY d.id {order} LIMIT ?",
            *params, limit))
        return rows if order == "DESC" else rows[::-1]

    async def delivery(self, endpoint_id: str, delivery_id: int) -> Sequence[Any] | None:
        rows = await self.store.fetch(
            f"{_SELECT_DELIVERIES} WHERE d.endpoint_id = ? AND d.id = ?", endpoint_id,
            delivery_id)
        return rows[0] if rows else None

    async def payload(self, outbox_id: int) -> bytes | None:
        rows = await self.store.fetch("SELECT payload FROM webhook_events WHERE outbox_id = ?",
                                      outbox_id)
        return bytes(rows[0][0]) if rows else None

    async def attempts_of(self, delivery_id: int) -> list[Sequence[Any]]:
        return list(await self.store.fetch(
            f"{_SELECT_ATTEMPTS} WHERE delivery_id = ? ORDER BY attempt", delivery_id))

    async def attempts(self, endpoint_id: str, *, after: int | None, before: int | None,
                       limit: int) -> list[Sequence[Any]]:
        where, params = ["endpoint_id = ?"], [endpoint_id]
        order = "DESC"
        if after is not None:
            where.append("id < ?")
            params.append(after)
        elif before is not None:
            where.append("id > ?")
            params.append(before)
            order = "ASC"
        rows = list(await self.store.fetch(
            f"{_SELECT_ATTEMPTS} WHERE {' AND '.join(where)} ORDER BY id {order} LIMIT ?",
            *params, limit))
        return rows if order == "DESC" else rows[::-1]

    # -- replay ---------------------------------------------------------------------------

    async def events_since(self, environment: str, since_ms: int, until_ms: int | None,
                           types: list[str], limit: int) -> list[Sequence[Any]]:
        """(outbox_id, customer_id, created_at) of the environment's stored events in time
        order, at most `limit`."""
        where, params = ["environment = ?", "created_at >= ?"], [environment, since_ms]
        if until_ms is not None:
            where.append("created_at < ?")
            params.append(until_ms)
        if types:
            where.append(f"type IN ({', '.join('?' for _ in types)})")
            params.extend(types)
        return list(await self.store.fetch(
            f"SELECT outbox_id, customer_id, created_at FROM webhook_events "
            f"WHERE {' AND '.join(where)} ORDER BY created_at, outbox_id LIMIT ?",
            *params, limit))

    async def pending_events(self, endpoint_id: str, outbox_ids: list[int]) -> set[int]:
        """Which of these events already wait for this endpoint."""
        found: set[int] = set()
        for i in range(0, len(outbox_ids), 500):
            chunk = outbox_ids[i : i + 500]
            rows = await self.store.fetch(
                "SELECT outbox_id FROM webhook_deliveries WHERE endpoint_id = ? "
                f"AND status = 'PENDING' AND outbox_id IN ({', '.join('?' for _ in chunk)})",
                endpoint_id, *chunk)
            found.update(int(r[0]) for r in rows)
        return found

    # -- retention ------------------------------------------------------------------------

    async def purge(self, before_ms: int, limit: int) -> int:
        """Delete at most `limit` rows of each kind: the deliveries (and attempts) of
        deleted endpoints, then the endpoints once none are left; settled deliveries (and
        attempts) created before `before_ms`; stored events from before `before_ms` that
        no delivery refers to any more. Returns how many rows went; call again while it is
        not 0."""
        removed = 0
        for (endpoint_id,) in await self.store.fetch(
                "SELECT id FROM webhook_endpoints WHERE deleted_at IS NOT NULL"):
            rows = await self.store.fetch(
                "SELECT id FROM webhook_deliveries WHERE endpoint_id = ? ORDER BY id LIMIT ?",
                endpoint_id, limit)
            removed += await self._delete_deliveries([int(r[0]) for r in rows])
            if len(rows) < limit:
                removed += await self.store.execute(
                    "DELETE FROM webhook_endpoints WHERE id = ?", endpoint_id)
        rows = await self.store.fetch(
            "SELECT id FROM webhook_deliveries WHERE status <> 'PENDING' AND created_at < ? "
            "ORDER BY id LIMIT ?", before_ms, limit)
        removed += await self._delete_deliveries([int(r[0]) for r in rows])
        events = await self.store.fetch(
            "SELECT outbox_id FROM webhook_events AS e WHERE created_at < ? AND NOT EXISTS "
            "(SELECT 1 FROM webhook_deliveries AS d WHERE d.outbox_id = e.outbox_id) "
            "ORDER BY outbox_id LIMIT ?", before_ms, limit)
        await self.store.transact([("DELETE FROM webhook_events WHERE outbox_id = ?",
                                    [(int(r[0]),) for r in events])])
        return removed + len(events)

    async def _delete_deliveries(self, ids: list[int]) -> int:
        rows = [(i,) for i in ids]
        await self.store.transact([("DELETE FROM webhook_attempts WHERE delivery_id = ?", rows),
                                   ("DELETE FROM webhook_deliveries WHERE id = ?", rows)])
        return len(ids)


class Delivery:
    """A delivery row as the API shows it (webhooks/tables.py `DELIVERY_COLUMNS`, then the
    event's id and type)."""

    __slots__ = (*DELIVERY_COLUMNS, "event_id", "event_type")

    def __init__(self, row: Sequence[Any]) -> None:
        for name, value in zip(self.__slots__, row, strict=True):
            setattr(self, name, value)


class Attempt:
    __slots__ = tuple(ATTEMPT_COLUMNS)

    def __init__(self, row: Sequence[Any]) -> None:
        for name, value in zip(self.__slots__, row, strict=True):
            setattr(self, name, value)
