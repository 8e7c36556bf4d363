"""Stigg's GraphQL customer types as JSON (with `__typename`): Customer and
CustomerSubscription."""

from __future__ import annotations

from typing import Any

from engine.domain.paywall import CustomerView
from engine.domain.stored import unset_none
from engine.domain.subscriptions.document import Subscription
from gateway.routes.subscriptions import subscription_json
from gateway.wire import iso

__all__ = ["customer_json", "customer_subscription_json"]


def customer_json(view: CustomerView) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    customer = view.customer
    customer_id = customer.id
    active = [customer_subscription_json(d) for d in view.active]
    out = {
        "__typename": "Customer", "id": customer_id, "refId": customer_id,
        "customerId": customer_id, "name": unset_none(customer.name),
        "email": unset_none(customer.email), "billingId": unset_none(customer.billing_id),
        "additionalMetaData": customer.metadata,
        "createdAt": iso(customer.created_at), "updatedAt": iso(customer.updated_at),
        "hasPaymentMethod": False, "hasActiveSubscription": bool(active),
        "trialedPlans": [{"__typename": "TrialedPlan", "planId": s.plan_id,
                          "planRefId": s.plan_id, "productId": s.product_id,
                          "productRefId": s.product_id} for s in view.trialed],
        "eligibleForTrial": [{"__typename": "EligibleForTrial", "productId": pid,
                              "productRefId": pid, "eligible": eligible}
                             for pid, eligible in view.eligible.items()],
        "promotionalEntitlements": [], "coupon": None, "experimentInfo": None,
        "awsMarketplaceCustomerId": None,
    }
    return out, active


def customer_subscription_json(doc: Subscription) -> dict[str, Any]:
    """A running subscription in CustomerSubscription's field names."""
    base = subscription_json(doc)
    return {
        **base,
        "__typename": "CustomerSubscription", "id": doc.id, "subscriptionId": doc.id,
        "refId": doc.id, "status": doc.status,
        "plan": {"__typename": "Plan", "id": doc.plan_id, "refId": doc.plan_id,
                 "versionNumber": doc.plan_version},
        "addons": [{"addon": {"id": a.id, "refId": a.id}, "quantity": a.quantity}
                   for a in doc.addons],
        "resource": None if not doc.resource_id else {"resourceId": doc.resource_id},
    }
