"""What the SDKs ask of the server for themselves: their configuration, and the reports
of entitlement checks they made locally.

    sdkConfiguration                 (no domain call: a self-hosted server's constants)
    reportEntitlementCheckRequested  context.require_customer (the customer must exist)

`sdkConfiguration`: Stigg answers the DSN of its own Sentry project (where the SDKs send
their errors) and whether its widgets show a "powered by Stigg" watermark. A self-hosted
creditd has neither: no DSN (the SDKs then report errors nowhere but their own logs) and
no watermark.

`reportEntitlementCheckRequested`: Stigg records SDK-side checks for its analytics
(EventLogType ENTITLEMENT_REQUESTED). creditd has no such record — its webhook and feed
events are the credit ledger's (engine.core.model.EventType) — so the report is
validated (the customer exists; archived customers are still checked), accepted and
dropped: `true`, as Stigg answers.
"""

from __future__ import annotations

from typing import Any

from graphql import GraphQLResolveInfo

from engine.domain.context import require_customer
from engine.domain.errors import bad_input
from gateway.graphql.resolvers.common import context

__all__ = ["MUTATIONS", "QUERIES", "SDK_CONFIGURATION"]

SDK_CONFIGURATION: dict[str, Any] = {"sentryDsn": None, "isWidgetWatermarkEnabled": False,
                                     "showWatermark": False}


async def sdk_configuration(_: Any, info: GraphQLResolveInfo) -> dict:
    return dict(SDK_CONFIGURATION)


async def report_entitlement_check_requested(_: Any, info: GraphQLResolveInfo,
                                             entitlementCheckRequested: dict) -> bool:
    d, env = context(info)
    report = entitlementCheckRequested
    if not report["featureId"]:
        raise bad_input("must not be empty", "featureId")
    usage = report.get("requestedUsage")
    if usage is not None and usage < 0:
        raise bad_input("must not be negative", "requestedUsage")
    await require_customer(d, env, report["customerId"], allow_archived=True)
    return True


QUERIES = {"sdkConfiguration": sdk_configuration}
MUTATIONS = {"reportEntitlementCheckRequested": report_entitlement_check_requested}
