"""Exports over HTTP: one customer's ledger as CSV, the columns of `creditd export`'s
ledger.csv (docs/exports.md).

| operation | domain function |
|---|---|
| `GET /api/v1/credits/ledger/export` | `credits.ledger`, page after page, oldest first |

An operator's call (X-API-KEY): a customer token does not reach it (it is not one of
gateway/portal/access.py's TOKEN_READS). The body is streamed a page at a time, so memory
holds one page whatever the ledger's length; the first page is read before the response
starts, so a bad request is answered with its 4xx, not a broken download. The ledger is
append-only: the pages are a prefix of it as of the last one read, every operation's
entries whole (each was committed in one transaction).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from litestar import Request, get
from litestar.response import Stream

from engine.domain import credits
from gateway.context import domain, environment
from gateway.errors import bad_input
from gateway.routes.credits import (
    CurrencyQ,
    CustomerQ,
    EndQ,
    EventTypeQ,
    ResourceQ,
    StartQ,
    event_types,
)
from gateway.wire import parse_time
from persistence.export_files import csv_header, csv_line, json_text

__all__ = ["ROUTES"]

PAGE_ENTRIES = 1_000
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def _row(env: str, customer_id: str, e: Any) -> tuple[Any, ...]:
    """A LedgerEntry in the column order of ledger.csv (persistence/export_files.py)."""
    return (env, customer_id, e.seq, e.op_seq, e.event_type.value, e.grant_id, e.currency_id,
            e.resource_id, e.amount, e.timestamp, e.reservation_id, e.feature_id,
            json_text(e.dimensions))


@get("/api/v1/credits/ledger/export")
async def export_ledger(
    request: Request,
    customer_id: CustomerQ = None,
    currency_id: CurrencyQ = None,
    resource_id: ResourceQ = None,
    event_type: EventTypeQ = None,
    start_date: StartQ = None,
    end_date: EndQ = None,
) -> Stream:
    """The customer's ledger as CSV, oldest first; the same filters as the ledger list
    (`startDate` inclusive, `endDate` exclusive)."""
    if not customer_id:
        raise bad_input("is required", "customerId")
    d, env = domain(request), environment(request)
    types = event_types(event_type)
    # `before` 0 pages from the oldest entry towards the newer (credits.ledger).
    query = credits.LedgerQuery(
        customer_id=customer_id, currency_id=currency_id, resource_id=resource_id,
        event_types=types, limit=PAGE_ENTRIES, before="0",
        start=parse_time(start_date, "startDate"), end=parse_time(end_date, "endDate"))
    first = await credits.ledger(d, env, query)

    async def body() -> AsyncIterator[str]:
        yield csv_header("ledger")
        page = first
        while True:
            # A page comes newest first; `prev` is where the next, newer one starts.
            yield csv_line("ledger", [_row(env, customer_id, e)
                                      for e in reversed(page.entries)])
            if page.prev is None:
                return
            page = await credits.ledger(d, env, msgspec.structs.replace(query,
                                                                        before=page.prev))

    name = _UNSAFE.sub("_", customer_id)[:100]
    return Stream(body(), media_type="text/csv", headers={
        "Content-Disposition": f'attachment; filename="ledger-{name}.csv"',
        "Cache-Control": "no-store"})


ROUTES = [export_ledger]
