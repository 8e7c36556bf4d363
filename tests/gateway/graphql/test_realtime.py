"""Stigg's GraphQL subscriptions over websockets (gateway/graphql/realtime.py): a real
websocket client speaking graphql-transport-ws as the `graphql-ws` library (Stigg's Node
SDK) does, against a real server: subscriptions fed by committed changes with exact
values, environments kept apart, `complete`, queries over the socket, and every refusal
with the protocol's close code.

Nothing sleeps to synchronize: every wait is for a message or a close, with a bound.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import msgspec
import pytest
from graphql import FragmentDefinitionNode, parse, print_ast
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.gateway.graphql.wire import DOCUMENTS, data, gql
from tests.gateway.test_subscriptions_api import Catalog

pytestmark = pytest.mark.anyio

TIMEOUT = 10.0
_encode = msgspec.json.Encoder(decimal_format="number").encode  # amounts: exact digits
PROTOCOL = "graphql-transport-ws"

# The documents Stigg's Node SDK subscribes with (@stigg/api-client-js 3.108, the 3.x
# SDK's; the 4.x SDK's V2 ones as the contract records them).
CREDIT_BALANCE = """subscription OnCreditBalanceUpdated {
  creditBalanceUpdated { ...CreditBalanceUpdatedPayload }
}
fragment CreditBalanceUpdatedPayload on CreditBalanceUpdated {
  currency { currencyId displayName symbol units { singular plural } }
  currencyId currentBalance customerId validUntil resourceId totalConsumed totalGranted
}"""
USAGE_V2 = """subscription OnUsageUpdatedV2 {
  usageUpdatedV2 {
    customerId resourceId entitlementReference { id type }
    usage { currentUsage usageUpdatedAt usagePeriodStart usagePeriodEnd }
  }
}"""
ENTITLEMENT_FRAGMENTS = """
fragment EntitlementFragment on Entitlement {
  __typename isGranted accessDeniedReason customerId resourceId usageLimit hasUnlimitedUsage
  hasSoftLimit currentUsage requestedUsage requestedValues enumValues entitlementUpdatedAt
  usageUpdatedAt usagePeriodAnchor usagePeriodStart usagePeriodEnd nextResetDate resetPeriod
  resetPeriodConfiguration { ...ResetPeriodConfigurationFragment }
  feature { ...FeatureFragment }
  creditRate { amount currencyId }
  validUntil
}
fragment ResetPeriodConfigurationFragment on ResetPeriodConfiguration {
  __typename
  ... on YearlyResetPeriodConfig { yearlyAccordingTo }
  ... on MonthlyResetPeriodConfig { monthlyAccordingTo }
  ... on WeeklyResetPeriodConfig { weeklyAccordingTo }
}
fragment FeatureFragment on EntitlementFeature {
  __typename featureType meterType featureUnits featureUnitsPlural description displayName
  refId unitTransformation { divide round }
}"""
USAGE_V1 = """subscription OnUsageUpdated {
  usageUpdated { ...EntitlementUsageUpdated }
}
fragment EntitlementUsageUpdated on UsageUpdated {
  usage { ...UsageUpdatedFragment }
  entitlement { ...EntitlementFragment }
}
fragment UsageUpdatedFragment on UsageMeasurementUpdated {
  customerId resourceId featureId currentUsage usagePeriodStart usagePeriodEnd nextResetDate
}""" + ENTITLEMENT_FRAGMENTS
PACKAGE_PUBLISHED = """subscription OnPackagePublished {
  packagePublished { accountId environmentId packageType packageRefId packageVersion
                     migrationType }
}"""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the websockets client runs on asyncio


# The 4.x SDK's OnEntitlementsUpdatedV2 (the contract's §5): its entitlements with the same
# fragments as GetEntitlementsState's entitlementsV2 (taken from the recorded document).
def _with_fragments(source: str, donor: str) -> str:
    """`source` with the definitions of the fragments it uses (transitively) from `donor`."""
    fragments = {d.name.value: d for d in parse(donor).definitions
                 if isinstance(d, FragmentDefinitionNode)}
    needed: list[str] = []
    todo = re.findall(r"\.\.\.(\w+)", source)
    while todo:
        name = todo.pop()
        if name not in needed and name in fragments:
            needed.append(name)
            todo += re.findall(r"\.\.\.(\w+)", print_ast(fragments[name]))
    return source + "\n" + "\n".join(print_ast(fragments[n]) for n in needed)


ENTITLEMENTS_V2 = _with_fragments("""subscription OnEntitlementsUpdatedV2 {
  entitlementsUpdatedV2 {
    customerId resourceId accessDeniedReason
    entitlements {
      __typename
      ... on FeatureEntitlement { ...FeatureEntitlementFragment }
      ... on CreditEntitlement { ...CreditEntitlementFragment }
    }
  }
}""", DOCUMENTS["GetEntitlementsState"]["query"])


class Client:
    """One graphql-transport-ws connection and the messages it received, by id."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.messages: list[dict[str, Any]] = []

    async def send(self, message: dict[str, Any] | str) -> None:
        await self.ws.send(message if isinstance(message, str) else _encode(message).decode())

    async def recv(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        try:
            raw = await asyncio.wait_for(self.ws.recv(), timeout)
        except TimeoutError:
            raise AssertionError(f"no message in {timeout} s; the last ones: "
                                 f"{self.messages[-5:]}") from None
        message = json.loads(raw, parse_float=Decimal)
        self.messages.append(message)
        return message

    async def init(self, key: str | None) -> None:
        await self.send({"type": "connection_init",
                         "payload": {"headers": {"X-API-KEY": key}} if key else {}})
        assert await self.recv() == {"type": "connection_ack"}

    async def subscribe(self, op_id: str, query: str, variables: dict | None = None,
                        name: str | None = None) -> None:
        payload: dict[str, Any] = {"query": query}
        if variables is not None:
            payload["variables"] = variables
        if name is not None:
            payload["operationName"] = name
        await self.send({"id": op_id, "type": "subscribe", "payload": payload})

    async def next(self, op_id: str | None = None) -> dict[str, Any]:
        """The next message, which must be a `next` (for `op_id`): its data."""
        message = await self.recv()
        assert message["type"] == "next", message
        if op_id is not None:
            assert message["id"] == op_id, message
        assert "errors" not in message["payload"], message
        return message["payload"]["data"]

    async def closed(self, timeout: float = TIMEOUT) -> tuple[int, str]:
        """Read until the server closes: the close code and reason."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    await self.ws.recv()
        except ConnectionClosed as exc:
            assert exc.rcvd is not None, "closed without a close frame"
            return exc.rcvd.code, exc.rcvd.reason
        except TimeoutError:
            raise AssertionError(f"not closed in {timeout} s") from None


@asynccontextmanager
async def ws(server: Any, *, key: Any = ..., subprotocols: list[str] | None = None,
             headers: dict[str, str] | None = None) -> AsyncIterator[Client]:
    """A connection to /graphql; acknowledged with `key` (the server's default key; None:
    not initialised)."""
    async with connect(f"ws://127.0.0.1:{server.port}/graphql",
                       subprotocols=[PROTOCOL] if subprotocols is None else subprotocols,
                       additional_headers=headers, open_timeout=TIMEOUT,
                       max_size=None) as socket:
        client = Client(socket)
        if key is not None:
            await client.init(server.key if key is ... else key)
        yield client


def grant(server: Any, customer: str, currency: str, amount: str, *, key: Any = ...) -> None:
    data(gql(server, "GrantCredits", {"input": {
        "customerId": customer, "currencyId": currency, "amount": Decimal(amount),
        "displayName": "g", "grantType": "PAID"}}, key=key))


# -- subscriptions ---------------------------------------------------------------------------


async def test_balances_and_usage_arrive_exactly(server: Any, client: Any, customer: str,
                                                 currency: str, uid: Any) -> None:
    feature = uid("rt-calls")
    client.v1.features.create_feature(id=feature, display_name="Calls", feature_type="NUMBER",
                                      meter_type="INCREMENTAL")
    async with ws(server) as c:
        await c.subscribe("b", CREDIT_BALANCE, name="OnCreditBalanceUpdated")
        await c.subscribe("u", USAGE_V2)
        grant(server, customer, currency, "0.1")
        balance = (await c.next("b"))["creditBalanceUpdated"]
        assert balance == {
            "currency": {"currencyId": currency, "displayName": "AI Tokens", "symbol": "T",
                         "units": {"singular": "token", "plural": "tokens"}},
            "currencyId": currency, "currentBalance": Decimal("0.1"), "customerId": customer,
            "validUntil": None, "resourceId": None, "totalConsumed": 0,
            "totalGranted": Decimal("0.1")}
        # The pool's consumption is the credit entitlement's usage (4.x SDK).
        credit = (await c.next("u"))["usageUpdatedV2"]
        assert credit["entitlementReference"] == {"id": currency, "type": "CREDIT"}
        assert credit["usage"]["currentUsage"] == 0

        # 0.1 + 0.2 − 0.3: exactly 0 (binary floats would leave 5.55e-17).
        grant(server, customer, currency, "0.2")
        assert (await c.next("b"))["creditBalanceUpdated"]["currentBalance"] == \
            Decimal("0.3")
        await c.next("u")
        data(gql(server, "ConsumeCredits", {"input": {
            "customerId": customer, "currencyId": currency, "amount": Decimal("0.3"),
            "idempotencyKey": uid("k")}}))
        after = (await c.next("b"))["creditBalanceUpdated"]
        assert (after["currentBalance"], after["totalConsumed"]) == (0, Decimal("0.3"))
        consumed = (await c.next("u"))["usageUpdatedV2"]
        assert consumed["usage"]["currentUsage"] == Decimal("0.3")

        # A feature's usage reported over HTTP arrives as usageUpdatedV2.
        reported = data(gql(server, "ReportUsage", {"input": {
            "customerId": customer, "featureId": feature, "value": Decimal("2.5"),
            "resourceId": "ws-1"}}))["reportUsage"]
        usage = (await c.next("u"))["usageUpdatedV2"]
        assert usage["customerId"] == customer and usage["resourceId"] == "ws-1"
        assert usage["entitlementReference"] == {"id": feature, "type": "FEATURE"}
        assert usage["usage"]["currentUsage"] == Decimal("2.5") == reported["currentUsage"]
        assert usage["usage"]["usageUpdatedAt"] == reported["timestamp"]
        assert usage["usage"]["usagePeriodStart"] is None  # no entitlement resets it


async def test_usage_of_an_entitled_feature(server: Any, client: Any, customer: str,
                                            uid: Any) -> None:
    """The 3.x SDK's usageUpdated carries the customer's Entitlement; both versions count
    the usage in the entitlement's current window, as the HTTP answer does."""
    feature, unentitled = uid("rt-ent"), uid("rt-none")
    for f in (feature, unentitled):
        client.v1.features.create_feature(id=f, display_name="Seats", feature_type="NUMBER",
                                          meter_type="INCREMENTAL")
    client.v1.customers.promotional_entitlements.create(customer, promotional_entitlements=[{
        "feature_id": feature, "period": "lifetime", "usage_limit": 10,
        "reset_period": "DAY"}])
    async with ws(server) as c:
        await c.subscribe("v1", USAGE_V1, name="OnUsageUpdated")
        await c.subscribe("v2", USAGE_V2)
        # Usage of a feature the customer is not entitled to: V2 only (usageUpdated is
        # about an entitlement).
        data(gql(server, "ReportUsage", {"input": {
            "customerId": customer, "featureId": unentitled, "value": 1}}))
        assert (await c.next("v2"))["usageUpdatedV2"]["entitlementReference"]["id"] == \
            unentitled
        reported = data(gql(server, "ReportUsage", {"input": {
            "customerId": customer, "featureId": feature, "value": 7}}))["reportUsage"]
        first = await c.recv()
        second = await c.recv()
        by_id = {m["id"]: m["payload"]["data"] for m in (first, second)}
        assert set(by_id) == {"v1", "v2"}, (first, second)
        v1 = by_id["v1"]["usageUpdated"]
        assert v1["usage"]["featureId"] == feature and v1["usage"]["currentUsage"] == 7
        entitlement = v1["entitlement"]
        assert (entitlement["__typename"], entitlement["isGranted"], entitlement["currentUsage"],
                entitlement["usageLimit"], entitlement["resetPeriod"]) == (
            "Entitlement", True, 7, 10, "DAY")
        assert entitlement["feature"]["refId"] == feature
        assert entitlement["usagePeriodStart"] == reported["usagePeriodStart"]
        assert entitlement["usagePeriodEnd"] == reported["usagePeriodEnd"]
        v2 = by_id["v2"]["usageUpdatedV2"]
        assert v2["usage"]["currentUsage"] == 7
        assert (v2["usage"]["usagePeriodStart"], v2["usage"]["usagePeriodEnd"]) == (
            reported["usagePeriodStart"], reported["usagePeriodEnd"])
        # UsageMeasurementUpdated's times are epoch milliseconds.
        assert v1["usage"]["usagePeriodEnd"] - v1["usage"]["usagePeriodStart"] == 86_400_000


async def test_environments_stay_apart(server: Any, client: Any, customer: str,
                                       currency: str, uid: Any) -> None:
    other_customer, other_currency = uid("rt-o-cust"), uid("rt-o-tok")
    other = server.stigg(server.other_key)
    other.v1.customers.provision(id=other_customer, name="Other")
    other.v1.credits.custom_currencies.create(id=other_currency, display_name="O",
                                              symbol="O")
    async with ws(server) as mine, ws(server, key=server.other_key) as theirs:
        await mine.subscribe("1", CREDIT_BALANCE)
        await theirs.subscribe("1", CREDIT_BALANCE)
        grant(server, customer, currency, "5")
        assert (await mine.next("1"))["creditBalanceUpdated"]["customerId"] == customer
        grant(server, other_customer, other_currency, "7", key=server.other_key)
        # The other environment's first event is its own: it never saw this one's.
        seen = (await theirs.next("1"))["creditBalanceUpdated"]
        assert (seen["customerId"], seen["currentBalance"]) == (other_customer, 7)
        grant(server, customer, currency, "1")
        assert (await mine.next("1"))["creditBalanceUpdated"]["currentBalance"] == 6


async def test_complete_stops_delivery(server: Any, client: Any, customer: str,
                                       currency: str, uid: Any) -> None:
    feature = uid("rt-f")
    client.v1.features.create_feature(id=feature, display_name="F", feature_type="NUMBER",
                                      meter_type="INCREMENTAL")
    async with ws(server) as c:
        await c.subscribe("b", CREDIT_BALANCE)
        await c.subscribe("u", USAGE_V2)
        grant(server, customer, currency, "1")
        assert {(await c.recv())["id"], (await c.recv())["id"]} == {"b", "u"}
        await c.send({"id": "b", "type": "complete"})
        # The client completed it: no `complete` back, and no more events.
        grant(server, customer, currency, "1")
        data(gql(server, "ReportUsage", {"input": {
            "customerId": customer, "featureId": feature, "value": 4}}))
        credit = (await c.next("u"))["usageUpdatedV2"]
        assert credit["entitlementReference"]["type"] == "CREDIT"
        usage = (await c.next("u"))["usageUpdatedV2"]
        assert usage["usage"]["currentUsage"] == 4
        # The id is free again.
        await c.subscribe("b", CREDIT_BALANCE)
        await c.send({"id": "b", "type": "complete"})
        await c.send({"id": "q", "type": "subscribe", "payload": {
            "query": "query Q { __typename }"}})
        assert await c.recv() == {"id": "q", "type": "next",
                                  "payload": {"data": {"__typename": "Query"}}}
        assert await c.recv() == {"id": "q", "type": "complete"}


async def test_queries_and_mutations_over_the_socket(server: Any, customer: str,
                                                     currency: str) -> None:
    async with ws(server) as c:
        await c.subscribe("g", DOCUMENTS["GrantCredits"]["query"], {"input": {
            "customerId": customer, "currencyId": currency, "amount": Decimal("1.25"),
            "displayName": "ws", "grantType": "PROMOTIONAL"}}, name="GrantCredits")
        granted = (await c.next("g"))["createCreditGrant"]
        assert granted["amount"] == Decimal("1.25") and granted["status"] == "ACTIVE"
        assert await c.recv() == {"id": "g", "type": "complete"}
        await c.subscribe("s", DOCUMENTS["GetCreditBalance"]["query"], {"input": {
            "customerId": customer, "currencyId": currency}}, name="GetCreditBalance")
        [b] = (await c.next("s"))["creditBalanceSummary"]["balances"]
        assert b["currentBalance"] == Decimal("1.25")
        assert await c.recv() == {"id": "s", "type": "complete"}
        # A domain refusal is a `next` with Stigg's error, as over HTTP.
        await c.subscribe("v", DOCUMENTS["VoidCreditGrant"]["query"],
                          {"input": {"id": "nope"}}, name="VoidCreditGrant")
        refused = await c.recv()
        assert refused["type"] == "next"
        assert refused["payload"]["errors"][0]["extensions"]["code"] == "CreditGrantNotFound"
        assert await c.recv() == {"id": "v", "type": "complete"}
        # A document that does not validate is an `error` message; the socket stays.
        await c.subscribe("x", "subscription { nothingLikeThis }")
        error = await c.recv()
        assert error["type"] == "error" and error["id"] == "x"
        assert error["payload"][0]["extensions"]["code"] == "BadUserInput"
        assert "nothingLikeThis" in error["payload"][0]["message"]
        await c.send({"type": "ping", "payload": {"t": 1}})
        assert await c.recv() == {"type": "pong", "payload": {"t": 1}}


# -- refusals --------------------------------------------------------------------------------


async def test_the_api_key_is_checked(server: Any) -> None:
    async with ws(server, key=None) as c:
        await c.send({"type": "connection_init", "payload": {"headers": {"X-API-KEY": "no"}}})
        # The reason the Node SDK reads as final (it stops reconnecting).
        assert await c.closed() == (4401, "Invalid API key")
    async with ws(server, key=None) as c:
        await c.send({"type": "connection_init"})
        assert await c.closed() == (4401, "Missing API key")
    async with ws(server, key=None) as c:
        await c.subscribe("1", CREDIT_BALANCE)  # before the ack
        assert await c.closed() == (4401, "Unauthorized")
    async with ws(server, key=None) as c:
        await c.send({"type": "connection_init", "payload": {"headers": {
            "x-api-key": server.key, "X-ENVIRONMENT-ID": "other"}}})
        assert (await c.closed())[0] == 4403
    # The upgrade request's own header is a key too.
    async with ws(server, key=None, headers={"X-API-KEY": server.other_key}) as c:
        await c.send({"type": "connection_init"})
        assert await c.recv() == {"type": "connection_ack"}


@pytest.mark.parametrize(("message", "code"), [
    ("not json", 4400),
    ("[1]", 4400),
    ({"type": "next", "id": "1", "payload": {}}, 4400),  # a server's message
    ({"type": "subscribe", "id": "", "payload": {"query": "{__typename}"}}, 4400),
    ({"type": "subscribe", "id": "1", "payload": {"query": 1}}, 4400),
    ({"type": "subscribe", "id": "1", "payload": {"query": "{__typename}",
                                                  "variables": []}}, 4400),
    ({"type": "connection_init"}, 4429),  # a second one
    ("x" * ((1 << 20) + 1), 1009),
])
async def test_bad_messages_close(server: Any, message: Any, code: int) -> None:
    async with ws(server) as c:
        await c.send(message if isinstance(message, str) else json.dumps(message))
        assert (await c.closed())[0] == code


async def test_duplicate_ids_subprotocol_and_init_timeout(server: Any) -> None:
    async with ws(server) as c:
        await c.subscribe("1", CREDIT_BALANCE)
        await c.subscribe("1", CREDIT_BALANCE)
        assert await c.closed() == (4409, "Subscriber for 1 already exists")
    async with ws(server, key=None, subprotocols=["graphql-ws"]) as c:
        assert await c.closed() == (4406, "Subprotocol not acceptable")
    async with ws(server, key=None) as c:
        # graphql-ws's 3 s to initialise.
        await c.send({"type": "ping"})
        assert await c.recv() == {"type": "pong"}
        assert await c.closed() == (4408, "Connection initialisation timeout")


async def test_package_published_arrives(server: Any, client: Any, uid: Any) -> None:
    """Publishing a plan version (REST here) is a packagePublished (the 4.x SDK reloads its
    catalog on it); completed, nothing more arrives."""
    catalog = Catalog(client, uid)
    async with ws(server) as c:
        await c.subscribe("p", PACKAGE_PUBLISHED)
        plan = catalog.plan(credits=10)
        assert (await c.next("p"))["packagePublished"] == {
            "accountId": "default", "environmentId": "default", "packageType": "PLAN",
            "packageRefId": plan, "packageVersion": 1, "migrationType": "NEW_CUSTOMERS"}
        client.v1.plans.create_draft(plan)
        client.v1.plans.publish(plan, migration_type="ALL_CUSTOMERS")
        second = (await c.next("p"))["packagePublished"]
        assert (second["packageVersion"], second["migrationType"]) == (2, "ALL_CUSTOMERS")
        await c.send({"id": "p", "type": "complete"})
        catalog.addon()
        await c.send({"type": "ping"})
        assert await c.recv() == {"type": "pong"}  # and no `next` before it


async def test_entitlement_changes_arrive(server: Any, client: Any, customer: str,
                                          uid: Any) -> None:
    """A promotional entitlement granted and revoked (GraphQL here) is an
    entitlementsUpdatedV2 with the customer's whole new state."""
    feature = uid("rt-promo")
    client.v1.features.create_feature(id=feature, display_name="Seats", feature_type="NUMBER",
                                      meter_type="INCREMENTAL")
    async with ws(server) as c:
        await c.subscribe("e", ENTITLEMENTS_V2)
        data(gql(server, "GrantPromotionalEntitlements", {"input": {
            "customerId": customer, "promotionalEntitlements": [{
                "featureId": feature, "period": "LIFETIME", "usageLimit": 5}]}}))
        granted = (await c.next("e"))["entitlementsUpdatedV2"]
        assert (granted["customerId"], granted["resourceId"]) == (customer, None)
        [e] = [x for x in granted["entitlements"] if x["__typename"] == "FeatureEntitlement"]
        assert (e["feature"]["refId"], e["isGranted"], e["usageLimit"]) == (feature, True, 5)
        assert e["entitlementUpdatedAt"] is not None
        data(gql(server, "RevokePromotionalEntitlement", {"input": {
            "customerId": customer, "featureId": feature}}))
        revoked = (await c.next("e"))["entitlementsUpdatedV2"]
        assert not any(x["__typename"] == "FeatureEntitlement" and x["isGranted"]
                       for x in revoked["entitlements"])
