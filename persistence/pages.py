"""Keyset pages in creation order, and the page queries of the domain's lists: the SQL
of a list lives here, behind a function, not in a wire module."""

from __future__ import annotations

from typing import Any

import msgspec

from engine.domain.errors import bad_input
from engine.domain.values import ascii_int
from persistence import sql

__all__ = ["Page", "creation_cursor", "grants_count", "grants_page", "page_by_creation",
           "parse_cursor"]


class Page(msgspec.Struct, frozen=True):
    items: list[dict[str, Any]]
    next: str | None
    prev: str | None


def creation_cursor(created_at: int, ident: str) -> str:
    """The cursor of a row in creation order (what `page_by_creation` pages from)."""
    return f"{created_at}.{ident}"


def parse_cursor(cursor: str, field: str) -> tuple[int, str]:
    """A `createdAt.id` cursor (`creation_cursor`) back into its parts; 400 naming `field`
    if it is not one this server issued."""
    created, _, ident = cursor.partition(".")
    created_ms = ascii_int(created)
    if created_ms is None or not ident:
        raise bad_input("is not a cursor this server issued", field)
    return created_ms, ident


async def page_by_creation(
    store: Any, select: str, where: list[str], params: list[Any], limit: int,
    after: str | None, before: str | None,
) -> tuple[list[Any], str | None, str | None]:
    """Keyset pagination in creation order over `select` (whose last two columns are
    created_at and id): the rows of the page and the `next`/`prev` cursors, which are
    opaque `createdAt.id` strings. With `before`, the page ends just before that cursor.
    Keyset rather than offset pagination: a page costs the same however deep it is, and
    rows inserted meanwhile never shift what the next page holds."""
    where, params = list(where), list(params)
    order = "ASC"
    if after:
        created_ms, ident = parse_cursor(after, "after")
        where.append("(created_at > ? OR (created_at = ? AND id > ?))")
        params += [created_ms, created_ms, ident]
    elif before:
        created_ms, ident = parse_cursor(before, "before")
        where.append("(created_at < ? OR (created_at = ? AND id < ?))")
        params += [created_ms, created_ms, ident]
        order = "DESC"
    rows = await store.fetch(
        f"{select} WHERE {' AND '.join(where)} ORDER BY created_at {order}, id {order} "
        "LIMIT ?", *params, limit + 1)
    more = len(rows) > limit
    rows = list(rows[:limit])
    if order == "DESC":
        rows.reverse()
    first = creation_cursor(rows[0][-2], rows[0][-1]) if rows else None
    last = creation_cursor(rows[-1][-2], rows[-1][-1]) if rows else None
    if order == "ASC":
        return rows, last if more else None, first if after else None
    return rows, last, first if more else None


def _grants_where(customer_id: str, currency_id: str | None, resource_id: str | None,
                  created: list[tuple[str, int]]) -> tuple[list[str], list[Any]]:
    where = ["customer_id = ?"]
    params: list[Any] = [customer_id]
    if currency_id:
        where.append("currency_id = ?")
        params.append(currency_id)
    if resource_id:
        where.append("resource_id = ?")
        params.append(resource_id)
    else:
        where.append("resource_id IS NULL")
    for symbol, ms in created:
        assert symbol in ("<", "<=", ">", ">="), symbol
        where.append(f"created_at {symbol} ?")
        params.append(ms)
    return where, params


async def grants_page(
    store: Any, customer_id: str, *, currency_id: str | None, resource_id: str | None,
    created: list[tuple[str, int]], limit: int, after: str | None, before: str | None,
) -> tuple[list[Any], str | None, str | None]:
    """A customer's grant rows (sql.GRANT_COLUMNS), a page in creation order: of one
    currency if given; of `resource_id`, or only grants without a resource when it is None
    (the contract); created within the `created` bounds ((operator, epoch ms), …)."""
    where, params = _grants_where(customer_id, currency_id, resource_id, created)
    return await page_by_creation(
        store, f"SELECT {', '.join(sql.GRANT_COLUMNS)}, created_at, id FROM grants",
        where, params, limit, after, before)


async def grants_count(
    store: Any, customer_id: str, *, currency_id: str | None, resource_id: str | None,
    created: list[tuple[str, int]],
) -> int:
    """How many grants `grants_page` pages through with these filters."""
    where, params = _grants_where(customer_id, currency_id, resource_id, created)
    rows = await store.fetch(f"SELECT count(*) FROM grants WHERE {' AND '.join(where)}",
                             *params)
    return int(rows[0][0])


async def grant_customer(store: Any, environment: str, grant_id: str) -> str | None:
    """The engine customer id (`environment/customer`) owning grant `grant_id` in
    `environment`, or None."""
    rows = await store.fetch(
        "SELECT customer_id FROM grants WHERE id = ? AND customer_id LIKE ? ESCAPE '\\'",
        grant_id,
        environment.replace("\\", "\\\\").replace("%", r"\%").replace("_", r"\_") + "/%")
    return rows[0][0] if rows else None
