"""A subscription as stored: a typed document.

The fields' stored names are the JSON keys every earlier version wrote (camelCase for
what the API shows, `_`-prefixed for what only creditd reads), so each stored row decodes
as it is — no migration — and is written back in the same shape. A field added later has
a default that reads an older row as it was meant: `dueAt` absent means "never brought up
to date since", which catch-up treats as due.

    Subscription     the document
    AddonRef         an add-on it holds: id, quantity, the published version
    ScheduledUpdate  a change waiting for its time (futureUpdates)
    CreditWindow     what one recurring-credit source got in its current window
"""

from __future__ import annotations

from typing import Any

import msgspec
from msgspec import UNSET, UnsetType, field

from engine.billing.lifecycle import Timeline

__all__ = ["RUNNING", "AddonRef", "CreditWindow", "ScheduledUpdate", "Subscription", "decode",
           "encode", "timeline_of"]

# The statuses in which a subscription's terms count.
RUNNING = ("ACTIVE", "IN_TRIAL")


class AddonRef(msgspec.Struct, kw_only=True):
    id: str
    quantity: int
    version: int | None = None


class ScheduledUpdate(msgspec.Struct, kw_only=True):
    at: int  # epoch ms
    status: str  # SCHEDULED, DONE, CANCELED
    type: str  # PLAN, BILLING_PERIOD, ADDON, UNIT_AMOUNT, MIGRATE_TO_LATEST
    changes: dict[str, Any]  # what `changes.resolve` answered, in stored names


class CreditWindow(msgspec.Struct, kw_only=True):
    window: int  # the window's start (epoch ms)
    end: int
    units: int  # granted so far in this window
    ids: list[str]  # the grants that gave them


class Subscription(msgspec.Struct, kw_only=True, omit_defaults=False):
    id: str
    customer_id: str = field(name="customerId")
    status: str = "NOT_STARTED"
    plan_id: str = field(name="planId")
    plan_version: int = field(name="planVersion")
    product_id: str | None = field(default=None, name="productId")
    pricing_type: str | None = field(default=None, name="pricingType")
    billing_period: str = field(default="MONTHLY", name="billingPeriod")
    unit_quantity: int | None = field(default=None, name="unitQuantity")
    addons: list[AddonRef] = field(default_factory=list)
    charges: list[dict[str, Any]] | None = None
    prices: list[dict[str, Any]] | None = None
    resource_id: str | None = field(default=None, name="resourceId")
    paying_customer_id: str | None = field(default=None, name="payingCustomerId")
    billing_country_code: str | None = field(default=None, name="billingCountryCode")
    billing_information: dict[str, Any] | None = field(default=None,
                                                       name="billingInformation")
    coupons: list[dict[str, Any]] | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    budget: dict[str, Any] | None = None  # {hasSoftLimit, limit (units)}
    billing_id: str | None = field(default=None, name="billingId")
    payment_collection_method: str | None = field(default=None,
                                                  name="paymentCollectionMethod")
    cancel_reason: str | None = field(default=None, name="cancelReason")
    # When it next needs a catch-up (None: nothing ahead; UNSET: never computed).
    due_at: int | None | UnsetType = field(default=UNSET, name="dueAt")
    # Its timeline (epoch ms): engine.billing.lifecycle.Timeline.
    start: int = field(name="_start")
    anchor: int = field(name="_anchor")
    credit_anchor: int | None = field(default=None, name="_creditAnchor")
    trial_end: int | None = field(default=None, name="_trialEnd")
    trial_end_behavior: str | None = field(default=None, name="_trialEndBehavior")
    end: int | None = field(default=None, name="_end")
    cancel_at: int | None = field(default=None, name="_cancelAt")
    period_start: int | None = field(default=None, name="_periodStart")
    period_end: int | None = field(default=None, name="_periodEnd")
    # Usage windows count from here when it replaced another on its product.
    usage_anchor: int | None = field(default=None, name="_usageAnchor")
    scheduled: list[ScheduledUpdate] = field(default_factory=list, name="_scheduled")
    # "<source>|<currency>" -> what that source got in its current window.
    credits: dict[str, CreditWindow] = field(default_factory=dict, name="_credits")
    # [Idempotency-Key, request digest] of the provisioning that made it.
    idempotency: list[str] | None = field(default=None, name="_idempotency")
    created_at: int = field(default=0, name="_createdAt")
    updated_at: int = field(default=0, name="_updatedAt")
    archived_at: int | None = field(default=None, name="_archivedAt")

    def apply(self, changes: dict[str, Any]) -> None:
        """Set the fields `changes` names (stored names, as `changes.resolve` answers)."""
        for name, value in changes.items():
            attr = _ATTRS[name]
            setattr(self, attr, msgspec.convert(value, _TYPES[attr]))


_ATTRS = {(f.encode_name): f.name for f in msgspec.structs.fields(Subscription)}
_TYPES = {f.name: f.type for f in msgspec.structs.fields(Subscription)}

_decoder = msgspec.json.Decoder(Subscription)


def timeline_of(doc: Subscription) -> Timeline:
    """The subscription's dates as the billing lifecycle reads them."""
    return Timeline(start=doc.start, anchor=doc.anchor, billing_period=doc.billing_period,
                    trial_end=doc.trial_end,
                    trial_end_behavior=doc.trial_end_behavior or "CONVERT_TO_PAID",
                    end=doc.end, credit_anchor=doc.credit_anchor)


def decode(doc: dict[str, Any] | bytes) -> Subscription:
    """A stored document (a dict from the documents' cache, or JSON) as a Subscription."""
    if isinstance(doc, (bytes, bytearray)):
        return _decoder.decode(doc)
    return msgspec.convert(doc, Subscription)


def encode(sub: Subscription) -> dict[str, Any]:
    """The document to store (the stored names; unset `dueAt` left out)."""
    return msgspec.to_builtins(sub)
