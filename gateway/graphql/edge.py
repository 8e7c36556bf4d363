"""Stigg's Edge JSON API: the GET reads Stigg's SDKs make to `edge.api.stigg.io` by
default, answered by the same server (issue 17).

    GET /v1/c/{customerId}/entitlements-state.json?resourceId=           GetEntitlementsState
    GET /v1/c/{customerId}/entitlements.json?resourceId=                 GetEntitlements
    GET /v1/c/{customerId}/entitlements.json?featureId=&requestedUsage=  GetEntitlement
    GET /v1/c/{customerId}/subscriptions.json?resourceId=|resourceIds=   GetActiveSubscriptionsList
    GET /v1/paywall.json?billingCountryCode=&fetchAllCountriesPrices=&includeHiddenPlans=
    GET /v1/p/{productId}/paywall.json?…                                 GetPaywall
    GET /v1/config/server-sdk-configuration.json                         GetSdkConfiguration

Each read executes, through the GraphQL endpoint (the same schema, resolvers, document
cache and error mapping), the document Stigg's Python client (stigg-api-client-v2 6.25.0)
sends for the same read over GraphQL, with variables from the path and the query string:
the body is exactly that operation's `{"data": {<rootField>: …}}` (or `{"data": null,
"errors": [...]}` with Stigg's codes), so an Edge read can never differ from the
GraphQL operation. Query parameters the SDKs leave unset may arrive as the literal text
`undefined` (the Node SDK's `fetchAllCountriesPrices=undefined`): that, and an empty
value, is absent. Booleans are `true`/`false`; anything else is a BadUserInput naming the
variable, as GraphQL answers it.

The API key is the same `X-API-KEY` as REST and GraphQL (the app's authentication
hook); without one, or with an unknown one, the answer is HTTP 401 with
`{"data": null, "errors": [{"extensions": {"code": "Unauthenticated"}}]}`, which the Node
SDK reads as `apiKeyInvalid`.

Pointing the SDKs at it: the Python clients take `edge_api_url="http://<creditd>"` (with
`enable_edge=True`, their default); the Node SDK takes `baseEdgeUri: "http://<creditd>"`
(without it, a `localhost` baseUri means port 3060 and any other host `edge.<host>`).
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any

import msgspec
from graphql import GraphQLEnumType
from litestar import Request, Response, Router, get

from engine.domain.errors import DomainError
from gateway.graphql import endpoint
from gateway.graphql.schema import stigg_schema

__all__ = ["DOCUMENTS", "ROUTES"]

_encode = msgspec.json.Encoder(decimal_format="number").encode

# The documents, exactly as stigg-api-client-v2 6.25.0 sends them over GraphQL (its
# models validate the Edge answers with these selections); tests/gateway/graphql checks
# them against the recorded ones.
DOCUMENTS: dict[str, str] = {
    "GetEntitlementsState": """\
query GetEntitlementsState($query: FetchEntitlementsQuery!) {
  entitlementsState(query: $query) {
    __typename
    entitlements {
      ...EntitlementFragment
    }
    entitlementsV2 {
      __typename
      ...EntitlementUnionFragment
    }
    accessDeniedReason
  }
}

fragment CreditEntitlementFragment on CreditEntitlement {
  __typename
  isGranted
  accessDeniedReason
  currency {
    currencyId
    displayName
    description
    unitSingular
    unitPlural
    additionalMetaData
  }
  usageLimit
  currentUsage
  hasSoftLimit
  usageUpdatedAt
  entitlementUpdatedAt
  usagePeriodEnd
  validUntil
}

fragment EntitlementFragment on Entitlement {
  __typename
  isGranted
  accessDeniedReason
  customerId
  resourceId
  usageLimit
  hasUnlimitedUsage
  hasSoftLimit
  currentUsage
  requestedUsage
  requestedValues
  enumValues
  entitlementUpdatedAt
  usageUpdatedAt
  usagePeriodAnchor
  usagePeriodStart
  usagePeriodEnd
  nextResetDate
  resetPeriod
  resetPeriodConfiguration {
    ...ResetPeriodConfigurationFragment
  }
  feature {
    ...FeatureFragment
  }
  creditRate {
    amount
    currencyId
  }
  validUntil
}

fragment EntitlementUnionFragment on EntitlementUnion {
  ... on FeatureEntitlement {
    ...FeatureEntitlementFragment
  }
  ... on CreditEntitlement {
    ...CreditEntitlementFragment
  }
}

fragment FeatureEntitlementFragment on FeatureEntitlement {
  __typename
  isGranted
  accessDeniedReason
  usageLimit
  hasUnlimitedUsage
  hasSoftLimit
  currentUsage
  enumValues
  entitlementUpdatedAt
  usageUpdatedAt
  usagePeriodAnchor
  usagePeriodStart
  usagePeriodEnd
  resetPeriod
  resetPeriodConfiguration {
    ...ResetPeriodConfigurationFragment
  }
  feature {
    ...FeatureFragment
  }
  creditRate {
    amount
    currencyId
  }
  validUntil
}

fragment FeatureFragment on EntitlementFeature {
  __typename
  featureType
  meterType
  featureUnits
  featureUnitsPlural
  description
  displayName
  refId
  unitTransformation {
    divide
    round
  }
}

fragment ResetPeriodConfigurationFragment on ResetPeriodConfiguration {
  __typename
  ... on YearlyResetPeriodConfig {
    yearlyAccordingTo
  }
  ... on MonthlyResetPeriodConfig {
    monthlyAccordingTo
  }
  ... on WeeklyResetPeriodConfig {
    weeklyAccordingTo
  }
}
""",
    "GetEntitlement": """\
query GetEntitlement($query: FetchEntitlementQuery!) {
  entitlement(query: $query) {
    ...EntitlementFragment
  }
}

fragment EntitlementFragment on Entitlement {
  __typename
  isGranted
  accessDeniedReason
  customerId
  resourceId
  usageLimit
  hasUnlimitedUsage
  hasSoftLimit
  currentUsage
  requestedUsage
  requestedValues
  enumValues
  entitlementUpdatedAt
  usageUpdatedAt
  usagePeriodAnchor
  usagePeriodStart
  usagePeriodEnd
  nextResetDate
  resetPeriod
  resetPeriodConfiguration {
    ...ResetPeriodConfigurationFragment
  }
  feature {
    ...FeatureFragment
  }
  creditRate {
    amount
    currencyId
  }
  validUntil
}

fragment FeatureFragment on EntitlementFeature {
  __typename
  featureType
  meterType
  featureUnits
  featureUnitsPlural
  description
  displayName
  refId
  unitTransformation {
    divide
    round
  }
}

fragment ResetPeriodConfigurationFragment on ResetPeriodConfiguration {
  __typename
  ... on YearlyResetPeriodConfig {
    yearlyAccordingTo
  }
  ... on MonthlyResetPeriodConfig {
    monthlyAccordingTo
  }
  ... on WeeklyResetPeriodConfig {
    weeklyAccordingTo
  }
}
""",
    "GetEntitlements": """\
query GetEntitlements($query: FetchEntitlementsQuery!) {
  entitlements: cachedEntitlements(query: $query) {
    ...EntitlementFragment
  }
}

fragment EntitlementFragment on Entitlement {
  __typename
  isGranted
  accessDeniedReason
  customerId
  resourceId
  usageLimit
  hasUnlimitedUsage
  hasSoftLimit
  currentUsage
  requestedUsage
  requestedValues
  enumValues
  entitlementUpdatedAt
  usageUpdatedAt
  usagePeriodAnchor
  usagePeriodStart
  usagePeriodEnd
  nextResetDate
  resetPeriod
  resetPeriodConfiguration {
    ...ResetPeriodConfigurationFragment
  }
  feature {
    ...FeatureFragment
  }
  creditRate {
    amount
    currencyId
  }
  validUntil
}

fragment FeatureFragment on EntitlementFeature {
  __typename
  featureType
  meterType
  featureUnits
  featureUnitsPlural
  description
  displayName
  refId
  unitTransformation {
    divide
    round
  }
}

fragment ResetPeriodConfigurationFragment on ResetPeriodConfiguration {
  __typename
  ... on YearlyResetPeriodConfig {
    yearlyAccordingTo
  }
  ... on MonthlyResetPeriodConfig {
    monthlyAccordingTo
  }
  ... on WeeklyResetPeriodConfig {
    weeklyAccordingTo
  }
}
""",
    "GetSdkConfiguration": """\
query GetSdkConfiguration {
  sdkConfiguration {
    sentryDsn
    isWidgetWatermarkEnabled
    showWatermark
  }
}
""",
    "GetActiveSubscriptionsList": """\
query GetActiveSubscriptionsList($input: GetActiveSubscriptionsInput!) {
  getActiveSubscriptions(input: $input) {
    ...SlimSubscriptionFragmentV2
  }
}

fragment SlimSubscriptionFragmentV2 on CustomerSubscription {
  subscriptionId
  status
  pricingType
  startDate
  endDate
  cancellationDate
  effectiveEndDate
  currentBillingPeriodEnd
  currentBillingPeriodStart
  billingPeriod
  additionalMetaData
  totalPrice {
    subTotal {
      amount
      currency
    }
    total {
      amount
      currency
    }
  }
  customer {
    customerId
    email
  }
  payingCustomer {
    customerId
    email
  }
  resource {
    resourceId
  }
  plan {
    planId: refId
    displayName
    description
    product {
      refId
      displayName
      downgradePlan {
        refId
        displayName
      }
    }
  }
  addons {
    quantity
    addon {
      addonId: refId
    }
  }
  prices {
    billingModel
    price {
      billingPeriod
      price {
        amount
        currency
      }
    }
  }
  trialConfiguration {
    trialEndBehavior
  }
  trialEndDate
}
""",
    "GetPaywall": """\
query GetPaywall($input: GetPaywallInput!) {
  paywall(input: $input) {
    ...PaywallFragment
  }
}

fragment AddonDependencyFragment on Addon {
  id
  refId
  displayName
  description
}

fragment AddonFragment on Addon {
  id
  refId
  billingId
  displayName
  description
  additionalMetaData
  hiddenFromWidgets
  entitlements {
    ...PackageEntitlementFragment
  }
  packageEntitlements {
    ...PackageEntitlementUnionFragment
  }
  prices {
    ...PriceFragment
  }
  overagePrices {
    ...OveragePriceFragment
  }
  pricingType
  maxQuantity
  dependencies {
    ...AddonDependencyFragment
  }
}

fragment CouponFragment on Coupon {
  id
  discountValue
  percentOff
  amountsOff {
    amount
    currency
  }
  type
  additionalMetaData
  refId
  name
  description
  createdAt
  updatedAt
  billingId
  billingLinkUrl
  status
  syncStates {
    vendorIdentifier
    status
  }
}

fragment CustomerFragment on Customer {
  ...SlimCustomerFragment
  hasPaymentMethod
  hasActiveSubscription
  defaultPaymentExpirationMonth
  defaultPaymentExpirationYear
  defaultPaymentMethodLast4Digits
  defaultPaymentMethodType
  defaultPaymentMethodCardBrand
  defaultPaymentMethodWalletType
  trialedPlans {
    productId
    productRefId
    planRefId
    planId
  }
  experimentInfo {
    groupType
    groupName
    id
    name
  }
  coupon {
    ...CouponFragment
  }
  eligibleForTrial {
    productId
    productRefId
    eligible
  }
  promotionalEntitlements {
    ...PromotionalEntitlementFragment
  }
}

fragment CustomerResourceFragment on CustomerResource {
  resourceId
}

fragment FontVariantFragment on FontVariant {
  fontSize
  fontWeight
}

fragment LayoutConfigurationFragment on PaywallLayoutConfiguration {
  alignment
  planWidth
  planMargin
  planPadding
}

fragment OveragePriceFragment on Price {
  billingModel
  billingPeriod
  billingId
  billingCountryCode
  price {
    amount
    currency
  }
  tiersMode
  tiers {
    ...PriceTierFragment
  }
  feature {
    refId
    featureUnits
    featureUnitsPlural
    displayName
    description
  }
}

fragment PackageCreditEntitlementFragment on PackageCreditEntitlement {
  __typename
  id
  amount
  behavior
  cadence
  customCurrencyId
  description
  displayNameOverride
  hasSoftLimit
  hiddenFromWidgets
  isCustom
  isGranted
  order
  dependencyFeature {
    refId
    displayName
    description
    featureType
    featureUnits
    featureUnitsPlural
  }
  customCurrency {
    currencyId
    displayName
    symbol
    units {
      singular
      plural
    }
  }
}

fragment PackageEntitlementFragment on PackageEntitlement {
  usageLimit
  hasUnlimitedUsage
  hasSoftLimit
  featureId
  resetPeriod
  hiddenFromWidgets
  isCustom
  displayNameOverride
  enumValues
  isGranted
  feature {
    featureType
    meterType
    featureUnits
    featureUnitsPlural
    displayName
    description
    refId
    additionalMetaData
  }
}

fragment PackageEntitlementUnionFragment on PackageEntitlementUnion {
  ... on PackageFeatureEntitlement {
    ...PackageFeatureEntitlementFragment
  }
  ... on PackageCreditEntitlement {
    ...PackageCreditEntitlementFragment
  }
}

fragment PackageFeatureEntitlementFragment on PackageFeatureEntitlement {
  __typename
  id
  behavior
  description
  displayNameOverride
  enumValues
  featureId
  hasSoftLimit
  hasUnlimitedUsage
  hiddenFromWidgets
  isCustom
  isGranted
  order
  resetPeriod
  usageLimit
  feature {
    featureType
    meterType
    featureUnits
    featureUnitsPlural
    displayName
    description
    refId
    additionalMetaData
  }
}

fragment PaywallCalculatedPricePointsFragment on PaywallPricePoint {
  planId
  additionalChargesMayApply
  billingPeriod
  amount
  currency
  billingCountryCode
  feature {
    refId
    featureUnits
    featureUnitsPlural
    displayName
    description
  }
}

fragment PaywallConfigurationFragment on PaywallConfiguration {
  palette {
    primary
    textColor
    backgroundColor
    borderColor
    currentPlanBackground
  }
  typography {
    ...TypographyConfigurationFragment
  }
  layout {
    ...LayoutConfigurationFragment
  }
  customCss
}

fragment PaywallCurrencyFragment on PaywallCurrency {
  code
  symbol
}

fragment PaywallFragment on Paywall {
  plans {
    ...PlanFragment
  }
  currency {
    ...PaywallCurrencyFragment
  }
  configuration {
    ...PaywallConfigurationFragment
  }
  customer {
    ...CustomerFragment
  }
  activeSubscriptions {
    ...SubscriptionFragment
  }
  resource {
    ...CustomerResourceFragment
  }
  paywallCalculatedPricePoints {
    ...PaywallCalculatedPricePointsFragment
  }
}

fragment PlanCompatiblePackageGroupsFragment on PlanCompatiblePackageGroups {
  packageGroupId
  displayName
  addons {
    ...AddonFragment
  }
  options {
    minItems
    freeItems
  }
}

fragment PlanFragment on Plan {
  id
  refId
  displayName
  description
  billingId
  versionNumber
  additionalMetaData
  hiddenFromWidgets
  product {
    ...ProductFragment
  }
  basePlan {
    refId
    displayName
  }
  entitlements {
    ...PackageEntitlementFragment
  }
  inheritedEntitlements {
    ...PackageEntitlementFragment
  }
  compatibleAddons {
    ...AddonFragment
  }
  compatiblePackageGroups {
    ...PlanCompatiblePackageGroupsFragment
  }
  prices {
    ...PriceFragment
  }
  overagePrices {
    ...OveragePriceFragment
  }
  pricingType
  defaultTrialConfig {
    duration
    units
    budget {
      limit
    }
    trialEndBehavior
  }
  awsMarketplacePlanDimension
  packageEntitlements {
    ...PackageEntitlementUnionFragment
  }
  inheritedPackageEntitlements {
    ...PackageEntitlementUnionFragment
  }
}

fragment PriceFragment on Price {
  billingModel
  billingPeriod
  billingCadence
  billingId
  minUnitQuantity
  maxUnitQuantity
  billingCountryCode
  price {
    amount
    currency
  }
  creditRate {
    amount
    customCurrencyId
    currencyId
  }
  tiersMode
  tiers {
    ...PriceTierFragment
  }
  feature {
    refId
    featureUnits
    featureUnitsPlural
    displayName
    description
  }
  blockSize
  topUpCustomCurrencyId
  customCurrency {
    displayName
    units {
      singular
      plural
    }
  }
}

fragment PriceTierFragment on PriceTier {
  upTo
  unitPrice {
    amount
    currency
  }
  flatPrice {
    amount
    currency
  }
}

fragment ProductFragment on Product {
  refId
  displayName
  description
  additionalMetaData
  awsMarketplaceProductId
  productSettings {
    downgradePlan {
      refId
      displayName
    }
  }
}

fragment PromotionalEntitlementFragment on PromotionalEntitlement {
  status
  usageLimit
  featureId
  hasUnlimitedUsage
  hasSoftLimit
  resetPeriod
  endDate
  isVisible
  feature {
    featureType
    meterType
    featureUnits
    featureUnitsPlural
    displayName
    description
    refId
    additionalMetaData
  }
}

fragment ScheduleVariablesFragment on ScheduleVariables {
  __typename
  ... on PlanChangeVariables {
    planRefId
    changeType
    billingPeriod
    billableFeatures {
      featureId
      quantity
    }
    addons {
      addonRefId
      quantity
    }
    priceOverrides {
      planRefId
      addonRefId
      featureId
    }
  }
  ... on DowngradeChangeVariables {
    downgradePlanRefId
    billingPeriod
    billableFeatures {
      featureId
      quantity
    }
    addons {
      addonRefId
      quantity
    }
    priceOverrides {
      planRefId
      addonRefId
      featureId
    }
  }
  ... on BillingPeriodChangeVariables {
    billingPeriod
  }
  ... on UnitAmountChangeVariables {
    newUnitAmount
    featureId
  }
  ... on AddonChangeVariables {
    addonRefId
    newQuantity
  }
  ... on PlanPriceOverrideChangeVariables {
    planRefId
    featureId
  }
  ... on AddonPriceOverrideChangeVariables {
    addonRefId
    featureId
  }
}

fragment SlimCustomerFragment on Customer {
  id
  name
  email
  createdAt
  updatedAt
  refId
  customerId
  billingId
  additionalMetaData
  awsMarketplaceCustomerId
}

fragment SubscriptionFragment on CustomerSubscription {
  id
  subscriptionId
  payingCustomer {
    ...SlimCustomerFragment
  }
  startDate
  endDate
  trialEndDate
  cancellationDate
  effectiveEndDate
  status
  refId
  currentBillingPeriodEnd
  additionalMetaData
  billingId
  billingLinkUrl
  latestInvoice {
    ...SubscriptionInvoiceFragment
  }
  paymentCollection
  paymentCollectionMethod
  billingSyncError
  resource {
    ...CustomerResourceFragment
  }
  experimentInfo {
    name
    groupType
    groupName
    id
  }
  prices {
    usageLimit
    price {
      ...PriceFragment
    }
  }
  totalPrice {
    ...TotalPriceFragment
  }
  pricingType
  plan {
    ...PlanFragment
  }
  addons {
    id
    quantity
    addon {
      ...AddonFragment
    }
  }
  scheduledUpdates {
    ...SubscriptionScheduledUpdateData
  }
  futureUpdates {
    ...SubscriptionFutureUpdateData
  }
  trialConfiguration {
    ...SubscriptionTrialConfigurationFragment
  }
}

fragment SubscriptionFutureUpdateData on SubscriptionFutureUpdate {
  subscriptionScheduleType
  scheduleStatus
  scheduledExecutionTime
  targetPackage {
    id
    refId
    displayName
  }
  scheduleVariables {
    ...ScheduleVariablesFragment
  }
}

fragment SubscriptionInvoiceFragment on SubscriptionInvoice {
  billingId
  status
  createdAt
  dueDate
  updatedAt
  errorMessage
  requiresAction
  paymentSecret
  paymentUrl
  pdfUrl
  billingReason
  currency
  subTotal
  subTotalExcludingTax
  total
  totalExcludingTax
  tax
  amountDue
  attemptCount
}

fragment SubscriptionScheduledUpdateData on SubscriptionScheduledUpdate {
  subscriptionScheduleType
  scheduleStatus
  scheduledExecutionTime
  targetPackage {
    id
    refId
    displayName
  }
  scheduleVariables {
    ...ScheduleVariablesFragment
  }
}

fragment SubscriptionTrialConfigurationFragment on TrialConfiguration {
  trialEndBehavior
}

fragment TotalPriceFragment on CustomerSubscriptionTotalPrice {
  subTotal {
    amount
    currency
  }
  total {
    amount
    currency
  }
}

fragment TypographyConfigurationFragment on TypographyConfiguration {
  fontFamily
  h1 {
    ...FontVariantFragment
  }
  h2 {
    ...FontVariantFragment
  }
  h3 {
    ...FontVariantFragment
  }
  body {
    ...FontVariantFragment
  }
}
""",
}

_ABSENT = ("", "undefined")


def _param(request: Request, name: str) -> str | None:
    value = request.query_params.get(name)
    return None if value is None or value in _ABSENT else value


def _boolean(request: Request, name: str) -> Any:
    value = _param(request, name)
    # Anything else goes to GraphQL as it came, which refuses it naming the variable.
    return {"true": True, "false": False}.get(value, value) if value is not None else None


def _number(request: Request, name: str) -> Any:
    value = _param(request, name)
    if value is None:
        return None
    try:
        number = Decimal(value)
    except InvalidOperation:
        return value  # refused by GraphQL's Float, naming the variable
    return number if number.is_finite() else value


def _strings(request: Request, name: str) -> list[str] | None:
    """A list parameter, repeated (`a=1&a=2`, as httpx sends a list) or comma-separated."""
    values = [part for raw in request.query_params.getall(name, [])
              for part in raw.split(",") if part and part not in _ABSENT]
    return values or None


def _present(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


async def _read(request: Request, operation: str, variables: dict[str, Any]) -> Response:
    return await endpoint._run(request, DOCUMENTS[operation], operation, variables,
                               read_only=True)


@get("/c/{customer_id:str}/entitlements-state.json")
async def entitlements_state(request: Request, customer_id: str) -> Response:
    return await _read(request, "GetEntitlementsState", {"query": _present({
        "customerId": customer_id, "resourceId": _param(request, "resourceId")})})


@get("/c/{customer_id:str}/entitlements.json")
async def entitlements(request: Request, customer_id: str) -> Response:
    """One feature's check with `featureId` (`{"entitlement": …}`, as the Python client
    reads it for `get_entitlement`), else the customer's entitlements
    (`{"entitlements": […]}`, for `get_entitlements`)."""
    query = _present({"customerId": customer_id, "resourceId": _param(request, "resourceId")})
    feature_id = _param(request, "featureId")
    if feature_id is None:
        return await _read(request, "GetEntitlements", {"query": query})
    options = _present({"requestedUsage": _number(request, "requestedUsage"),
                        "requestedValues": _strings(request, "requestedValues")})
    return await _read(request, "GetEntitlement", {"query": {
        **query, "featureId": feature_id, **({"options": options} if options else {})}})


@get("/c/{customer_id:str}/subscriptions.json")
async def subscriptions(request: Request, customer_id: str) -> Response:
    return await _read(request, "GetActiveSubscriptionsList", {"input": _present({
        "customerId": customer_id, "resourceId": _param(request, "resourceId"),
        "resourceIds": _strings(request, "resourceIds")})})


def _paywall_input(request: Request, product_id: str | None) -> dict[str, Any]:
    return _present({
        "productId": product_id,
        "billingCountryCode": _param(request, "billingCountryCode"),
        "fetchAllCountriesPrices": _boolean(request, "fetchAllCountriesPrices"),
        "includeHiddenPlans": _boolean(request, "includeHiddenPlans")})


@get("/paywall.json")
async def paywall(request: Request) -> Response:
    return await _read(request, "GetPaywall", {"input": _paywall_input(request, None)})


@get("/p/{product_id:str}/paywall.json")
async def product_paywall(request: Request, product_id: str) -> Response:
    return await _read(request, "GetPaywall", {"input": _paywall_input(request, product_id)})


@get("/config/server-sdk-configuration.json")
async def sdk_configuration(request: Request) -> Response:
    return await _read(request, "GetSdkConfiguration", {})


@lru_cache(maxsize=1)
def _error_codes() -> frozenset[str]:
    codes = stigg_schema().get_type("ErrorCode")
    assert isinstance(codes, GraphQLEnumType)
    return frozenset(codes.values)


def _refused(request: Request, exc: DomainError) -> Response:
    """A refusal before the read ran (the API key: 401 Unauthenticated), in GraphQL's
    error shape with its HTTP status."""
    code = exc.code if exc.code in _error_codes() else (
        "BadUserInput" if exc.status < 500 else "UnexpectedError")
    trace = request.scope.get("state", {}).get("request_id", "")  # type: ignore[union-attr]
    body = {"data": None, "errors": [{"message": exc.message,
                                      "extensions": {"code": code, "traceId": trace}}]}
    return Response(content=_encode(body), status_code=exc.status,
                    media_type="application/json")


ROUTES = [Router(path="/v1", route_handlers=[
    entitlements_state, entitlements, subscriptions, paywall, product_paywall,
    sdk_configuration], exception_handlers={DomainError: _refused})]
