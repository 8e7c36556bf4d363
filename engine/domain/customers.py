"""Customers: provision, get, update, list, archive and unarchive.

A customer's profile is a typed document (stored.Customer) of the fields the client sent
(Stigg's Customer has many optional billing fields that creditd keeps and returns but
never computes on); its credits live with the engine under the same id.
"""

from __future__ import annotations

from typing import Any

import msgspec

from engine.domain.constraints import ID_MAX
from engine.domain.context import Domain, require_customer, set_archived, stamp
from engine.domain.errors import DomainError, bad_input
from engine.domain.stored import Customer

__all__ = ["CUSTOMER_ID_MAX", "CustomersQuery", "archive", "get", "insert_new", "list_customers",
           "new_customer", "provision", "require_absent", "update"]

CUSTOMER_ID_MAX = ID_MAX
_TABLE = "customer_profiles"


class CustomersQuery(msgspec.Struct, frozen=True, kw_only=True):
    limit: int = 20
    after: str | None = None
    before: str | None = None
    # Exact matches; creation-time bounds ((SQL comparison, epoch ms), …).
    email: str | None = None
    name: str | None = None
    created: tuple[tuple[str, int], ...] = ()
    # A person looking for a customer (the console): id, name or email starting with it,
    # ignoring (ASCII) case.
    search: str | None = None


# What a client may set, by attribute (stored.Customer's fields but the id and times).
FIELDS = frozenset(Customer.__struct_fields__) - {"id", "created_at", "updated_at",
                                                  "archived_at"}


def _fields(fields: dict[str, Any]) -> dict[str, Any]:
    """The given fields by attribute name; a null metadata is an empty one."""
    unknown = set(fields) - FIELDS
    if unknown:
        raise bad_input("is not a customer field", sorted(unknown)[0])
    if "metadata" in fields and fields["metadata"] is None:
        fields = {**fields, "metadata": {}}
    return fields


async def provision(d: Domain, env: str, customer_id: str,
                    fields: dict[str, Any]) -> Customer:
    """A new customer with `fields` (by attribute name: email, name, metadata,
    billing_id, …; absent ones stay unset)."""
    return await insert_new(d, env, new_customer(d, customer_id, fields))


def new_customer(d: Domain, customer_id: str, fields: dict[str, Any]) -> Customer:
    """The customer `provision` would make, checked but not written (`insert_new` writes
    it): for an operation that checks more against the new customer first."""
    if not customer_id or "/" in customer_id or len(customer_id) > CUSTOMER_ID_MAX:
        raise bad_input(f"must be 1-{CUSTOMER_ID_MAX} characters without '/'", "id")
    return stamp(d.documents, Customer(id=customer_id, **_fields(fields)), created=True)


def _duplicate(customer_id: str) -> DomainError:
    return DomainError(409, "DuplicatedEntityNotAllowed",
                       f"customer {customer_id!r} exists already", "id")


async def require_absent(d: Domain, env: str, customer_id: str) -> None:
    """DuplicatedEntityNotAllowed if the customer is stored (archived or not)."""
    if await d.documents.get(_TABLE, env, customer_id) is not None:
        raise _duplicate(customer_id)


async def insert_new(d: Domain, env: str, doc: Customer) -> Customer:
    """Write a customer made by `new_customer`; DuplicatedEntityNotAllowed (nothing
    written) if one with its id exists already."""
    if not await d.documents.insert(_TABLE, env, doc):
        raise _duplicate(doc.id)
    return doc


async def get(d: Domain, env: str, customer_id: str) -> Customer:
    """The customer, archived or not."""
    return await require_customer(d, env, customer_id, field="id", allow_archived=True)


async def update(d: Domain, env: str, customer_id: str,
                 fields: dict[str, Any]) -> Customer:
    """Set the fields given (by attribute name; absent ones are left alone, a null
    metadata clears it). An archived customer is not updated."""
    doc = await require_customer(d, env, customer_id, field="id")
    doc = stamp(d.documents, msgspec.structs.replace(doc, **_fields(fields)))
    await d.documents.replace(_TABLE, env, doc)
    return doc


async def list_customers(d: Domain, env: str, q: CustomersQuery) -> Any:
    """A page in creation order (`.items`, `.next`, `.prev`)."""
    return await d.documents.page(_TABLE, env, q.limit, q.after, q.before,
                                  created=list(q.created),
                                  equal={"email": q.email, "name": q.name},
                                  starts_with=(("id", "name", "email"), q.search or ""))


async def archive(d: Domain, env: str, customer_id: str, archived: bool) -> Customer:
    """Archive (or unarchive) a customer: archived ones keep their credits and answer
    reads, but take no new grants or consumptions."""
    doc = await require_customer(d, env, customer_id, field="id", allow_archived=True)
    return await set_archived(d, env, _TABLE, doc, archived)
