"""Stigg's GraphQL customer types as JSON (with `__typename`): Customer and
CustomerSubscription.

`Customer.id` (a UUID in Stigg's schema), `refId` and `customerId` are all the customer's
own id; a subscription's `id`, `subscriptionId` and `refId` its own id, as are a
subscription add-on's `id` and `addonId` the add-on's.

Without its packages (`SubscriptionPackages`) a CustomerSubscription names its plan and
add-ons by id only (the REST paywall's answer); with them (`subscription_packages` loads
them) its `plan` and `addons[].addon` are Stigg's whole Plan and Addon (built by
gateway.shapes.catalog from the versions the subscription holds) and its `prices` the
plan's and add-ons' prices for its billing period and country."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.domain import packages
from engine.domain.context import Domain
from engine.domain.paywall import CustomerView, PackageView, PlanView, package_view
from engine.domain.stored import Customer, Plan, unset_none
from engine.domain.subscriptions.document import Subscription
from gateway.routes.subscriptions import subscription_json
from gateway.shapes.catalog import addon_json, plan_json, product_json
from gateway.wire import iso

__all__ = ["SCHEDULE_STATUSES", "SCHEDULE_TYPES", "SubscriptionPackages", "customer_json",
           "customer_subscription_json", "slim_customer_json", "subscription_packages"]

# The domain's scheduled-update types and statuses by Stigg's SubscriptionScheduleType and
# SubscriptionScheduleStatus.
SCHEDULE_TYPES = {"PLAN": "Plan", "BILLING_PERIOD": "BillingPeriod", "ADDON": "Addon",
                  "UNIT_AMOUNT": "UnitAmount", "MIGRATE_TO_LATEST": "MigrateToLatest"}
SCHEDULE_STATUSES = {"SCHEDULED": "Scheduled", "DONE": "Done", "CANCELED": "Canceled"}
# The domain's cancel reasons by Stigg's SubscriptionCancelReason.
_CANCEL_REASONS = {"UPGRADE_OR_DOWNGRADE": "UpgradeOrDowngrade", "Immediate": "Immediate",
                   "TRIAL_ENDED": "TrialEnded", "ScheduledCancellation": "ScheduledCancellation"}


def slim_customer_json(customer: Customer) -> dict[str, Any]:
    """A customer as Stigg's Customer: the profile fields (SlimCustomerFragment)."""
    customer_id = customer.id
    return {
        "__typename": "Customer", "id": customer_id, "refId": customer_id,
        "customerId": customer_id, "name": unset_none(customer.name),
        "email": unset_none(customer.email), "billingId": unset_none(customer.billing_id),
        "billingCurrency": (unset_none(customer.billing_currency) or "").upper() or None,
        "additionalMetaData": customer.metadata,
        "createdAt": iso(customer.created_at), "updatedAt": iso(customer.updated_at),
        "deletedAt": iso(customer.archived_at),
        "awsMarketplaceCustomerId": None, "salesforceId": None, "crmId": None,
        "hasPaymentMethod": False, "defaultPaymentMethodId": None,
        "defaultPaymentMethodType": None, "defaultPaymentMethodLast4Digits": None,
        "defaultPaymentMethodCardBrand": None, "defaultPaymentMethodWalletType": None,
        "defaultPaymentExpirationMonth": None, "defaultPaymentExpirationYear": None,
        "experimentInfo": None, "excludeFromExperiment": None, "syncStates": [],
        "billingLinkUrl": None,
    }


def customer_json(view: CustomerView, *, subscriptions: list[dict[str, Any]] | None = None,
                  coupon: dict[str, Any] | None = None,
                  promotional_entitlements: list[dict[str, Any]] | None = None,
                  ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(the customer as Stigg's Customer, its running subscriptions as
    CustomerSubscription). `subscriptions`: those already built (whole, with their
    packages); else built from `view.active` naming plans by id. `coupon` (Coupon) and
    `promotional_entitlements` (PromotionalEntitlement) as gateway.shapes.catalog builds
    them."""
    active = subscriptions if subscriptions is not None else [
        customer_subscription_json(d) for d in view.active]
    out = {
        **slim_customer_json(view.customer),
        "hasActiveSubscription": bool(active),
        "totalActiveSubscription": len(active),
        "trialedPlans": [{"__typename": "TrialedPlan", "planId": s.plan_id,
                          "planRefId": s.plan_id, "productId": s.product_id,
                          "productRefId": s.product_id} for s in view.trialed],
        "eligibleForTrial": [{"__typename": "EligibleForTrial", "productId": pid,
                              "productRefId": pid, "eligible": eligible}
                             for pid, eligible in view.eligible.items()],
        "promotionalEntitlements": promotional_entitlements or [],
        "totalActivePromotionalEntitlements": sum(
            p.get("status") == "Active" for p in promotional_entitlements or ()),
        "coupon": coupon,
        "subscriptions": active,
    }
    return out, active


@dataclass(frozen=True)
class SubscriptionPackages:
    """What a whole CustomerSubscription shows besides the subscription: its plan's
    version (with its base plan and compatible add-ons), the product, the add-on versions
    it holds (by id), its customer and paying customer."""

    plan: PlanView
    products: dict[str, dict[str, Any]]  # product_json by id
    addons: dict[str, PackageView]
    customer: Customer | None
    paying_customer: Customer | None


async def _live_addon(d: Domain, env: str, ident: str) -> PackageView | None:
    working = await packages.get_package(d.documents, env, "addon", ident)
    addon = await packages.published(d.documents, env, "addon", ident)
    if addon is None or working is None or working.status == "ARCHIVED":
        return None
    return await package_view(d, env, addon)


async def subscription_packages(d: Domain, env: str, doc: Subscription
                                ) -> SubscriptionPackages:
    """Load what `customer_subscription_json` needs to show `doc` whole: the published
    versions the subscription holds (versions are immutable)."""
    plan = await packages.published(d.documents, env, "plan", doc.plan_id, doc.plan_version)
    assert isinstance(plan, Plan), (doc.plan_id, doc.plan_version)  # subscriptions hold one
    parent = plan.parent_plan_id
    base = await packages.published(d.documents, env, "plan", parent) if parent else None
    compatible = [a for a in [await _live_addon(d, env, ident)
                              for ident in plan.compatible_addon_ids] if a]
    view = PlanView(plan=await package_view(d, env, plan),
                    base=None if base is None else await package_view(d, env, base),
                    addons=compatible, points=[])
    held: dict[str, PackageView] = {}
    for a in doc.addons:
        addon = await packages.published(d.documents, env, "addon", a.id, a.version)
        if addon is not None:
            held[a.id] = await package_view(d, env, addon)
    product = plan.product_id
    customer = await d.documents.get("customer_profiles", env, doc.customer_id)
    paying = None if not doc.paying_customer_id else await d.documents.get(
        "customer_profiles", env, doc.paying_customer_id)
    return SubscriptionPackages(
        plan=view,
        products={product: product_json(product, await packages.get_product(
            d.documents, env, product))},
        addons=held, customer=customer, paying_customer=paying)


def _schedule_variables(kind: str, changes: dict[str, Any]) -> dict[str, Any] | None:
    if kind == "PLAN":
        return {"__typename": "PlanChangeVariables", "planRefId": changes["planId"],
                "changeType": "NONE", "billingPeriod": changes.get("billingPeriod"),
                "billableFeatures": None, "priceOverrides": None, "recurringCredits": None,
                "addons": None if "addons" not in changes else [
                    {"addonRefId": a["id"], "quantity": a["quantity"]}
                    for a in changes["addons"]]}
    if kind == "BILLING_PERIOD":
        return {"__typename": "BillingPeriodChangeVariables",
                "billingPeriod": changes.get("billingPeriod")}
    if kind == "ADDON" and changes.get("addons"):
        first = changes["addons"][0]
        return {"__typename": "AddonChangeVariables", "addonRefId": first["id"],
                "newQuantity": first["quantity"]}
    if kind == "UNIT_AMOUNT" and "unitQuantity" in changes:
        return {"__typename": "UnitAmountChangeVariables",
                "newUnitAmount": changes["unitQuantity"], "featureId": None}
    return None


def _future_updates(doc: Subscription) -> list[dict[str, Any]]:
    """The updates still waiting (Scheduled) as SubscriptionFutureUpdate."""
    return [{
        "__typename": "SubscriptionFutureUpdate",
        "subscriptionScheduleType": SCHEDULE_TYPES.get(u.type, "Plan"),
        "scheduleStatus": SCHEDULE_STATUSES[u.status],
        "scheduledExecutionTime": iso(u.at), "createdAt": None, "billingId": None,
        "targetPackage": None if "planId" not in u.changes else {
            "__typename": "PackageDTO", "id": u.changes["planId"],
            "refId": u.changes["planId"], "displayName": u.changes["planId"],
            "versionNumber": u.changes.get("planVersion")},
        "scheduleVariables": _schedule_variables(u.type, u.changes),
    } for u in doc.scheduled if u.status == "SCHEDULED"]


def _prices(doc: Subscription, plan: dict[str, Any], addons: list[dict[str, Any]]
            ) -> list[dict[str, Any]]:
    """The plan's and add-ons' prices for the subscription's billing period (localized for
    its country, as plan_json and addon_json give them) as SubscriptionPrice."""
    rows = [p for p in plan["prices"] if p["billingPeriod"] == doc.billing_period]
    rows += [p for a in addons for p in a["prices"] if p["billingPeriod"] == doc.billing_period]
    return [{"__typename": "SubscriptionPrice",
             "id": p.get("id") or f"{doc.id}:{i}", "subscriptionId": doc.id,
             "billingModel": p["billingModel"], "featureId": p.get("featureId"),
             "usageLimit": None, "hasSoftLimit": None, "creditRate": None,
             "creditGrantCadence": None, "creditsQuantity": None, "nextGrantDate": None,
             "topUpCustomCurrencyId": p.get("topUpCustomCurrencyId"),
             "createdAt": iso(doc.created_at), "updatedAt": iso(doc.updated_at),
             "price": p} for i, p in enumerate(rows)]


def customer_subscription_json(doc: Subscription,
                               found: SubscriptionPackages | None = None) -> dict[str, Any]:
    """A subscription in CustomerSubscription's field names: whole with its packages
    (`subscription_packages`), else naming its plan and add-ons by id."""
    base = subscription_json(doc)
    out = {
        **base,
        "__typename": "CustomerSubscription", "id": doc.id, "subscriptionId": doc.id,
        "refId": doc.id, "status": doc.status,
        "pricingType": doc.pricing_type or "FREE",
        "additionalMetaData": doc.metadata or {},
        "billingLinkUrl": None, "billingSyncError": None, "crmId": None, "crmLinkUrl": None,
        "salesforceId": None, "experimentInfo": None, "totalPrice": None,
        "wasInTrial": doc.trial_end is not None,
        "cancelReason": _CANCEL_REASONS.get(doc.cancel_reason or ""),
        "trialConfiguration": None if doc.trial_end is None else {
            "__typename": "TrialConfiguration",
            "trialEndBehavior": doc.trial_end_behavior or "CONVERT_TO_PAID"},
        "futureUpdates": _future_updates(doc),
        "scheduledUpdates": [{**u, "__typename": "SubscriptionScheduledUpdate"}
                             for u in _future_updates(doc)],
        "plan": {"__typename": "Plan", "id": doc.plan_id, "refId": doc.plan_id,
                 "versionNumber": doc.plan_version},
        "addons": [{"__typename": "SubscriptionAddon", "id": a.id, "addonId": a.id,
                    "addon": {"__typename": "Addon", "id": a.id, "refId": a.id},
                    "quantity": a.quantity} for a in doc.addons],
        "resource": None if not doc.resource_id else {
            "__typename": "CustomerResource", "resourceId": doc.resource_id,
            "createdAt": iso(doc.created_at)},
        "customer": {"__typename": "Customer", "id": doc.customer_id,
                     "refId": doc.customer_id, "customerId": doc.customer_id},
        "payingCustomer": None if not doc.paying_customer_id else {
            "__typename": "Customer", "id": doc.paying_customer_id,
            "refId": doc.paying_customer_id, "customerId": doc.paying_customer_id},
    }
    if found is None:
        return out
    country = doc.billing_country_code
    plan = plan_json(found.plan, found.products, country, False)
    addons = []
    for a in doc.addons:
        view = found.addons.get(a.id)
        if view is not None:
            addons.append((a, addon_json(view, country, False)))
    out.update(
        plan=plan,
        addons=[{"__typename": "SubscriptionAddon", "id": a.id, "addonId": a.id,
                 "quantity": a.quantity, "addon": shape, "price": None,
                 "createdAt": iso(doc.created_at), "updatedAt": iso(doc.updated_at)}
                for a, shape in addons],
        prices=_prices(doc, plan, [shape for _, shape in addons]))
    if found.customer is not None:
        out["customer"] = slim_customer_json(found.customer)
    if found.paying_customer is not None:
        out["payingCustomer"] = slim_customer_json(found.paying_customer)
    return out
