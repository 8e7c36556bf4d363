"""The fast path (gateway/graphql/fast.py) answers exactly what graphql-core answers.

For the clients' own documents, hypothesis generates root values following each
document's selection — leaves of every scalar and enum type (and some values that do not
serialize), nulls where the schema allows them and sometimes where it does not, union
members with and without `__typename`, objects that are not dicts — and the plan's
projection is compared with graphql-core completing the same value (given as the Replay
root value the bound resolvers return). Where the projection completes, graphql-core
gives the same data and no error; where it declines (the irregular cases), graphql-core
reports an error — which is what the server answers then, since it hands such values to
graphql-core.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import pytest
from graphql import (
    ExecutionResult,
    GraphQLBoolean,
    GraphQLEnumType,
    GraphQLFloat,
    GraphQLInputObjectType,
    GraphQLInt,
    GraphQLList,
    GraphQLNonNull,
    execute,
    get_operation_ast,
    parse,
)
from graphql.execution.values import get_variable_values
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.graphql import endpoint, fast
from tests.gateway.graphql.wire import DOCUMENTS

# A document per shape worth covering (unions, lists, enums, nested money, connections),
# with variables that coerce.
CASES = {
    "ReportUsage": {"input": {"customerId": "c", "featureId": "f", "value": 1}},
    "GetCreditBalance": {"input": {"customerId": "c"}},
    "GetCreditGrants": {"input": {"customerId": "c"}},
    "GetEntitlementV2": {"query": {"customerId": "c", "featureId": "f"}},
    "GetEntitlementsState": {"query": {"customerId": "c"}},
    "GetPaywall": {"input": {}},
    "GetCustomerById": {"input": {"customerId": "c"}},
    "EstimateSubscription": {"input": {"customerId": "c", "planId": "p"}},
    "GetProducts": {},
    "GetCoupons": {},
}

_WEIRD = st.sampled_from([object(), "not-a-number", float("nan"), [1], {"a": 1}])


def _good_leaf(kind: Any) -> st.SearchStrategy[Any]:
    if isinstance(kind, GraphQLEnumType):
        good = st.sampled_from(sorted(kind.values))
    elif kind is GraphQLInt:
        good = st.integers(-(2**31), 2**31 - 1)
    elif kind is GraphQLFloat:
        good = st.decimals(allow_nan=False, allow_infinity=False, places=5,
                           min_value=-10**9, max_value=10**9) | st.integers(-10**6, 10**6)
    elif kind is GraphQLBoolean:
        good = st.booleans()
    else:  # String, ID, DateTime, JSON, UUID, ConnectionCursor, …
        good = st.text(max_size=8)
    return good


def _leaf(kind: Any) -> st.SearchStrategy[Any]:
    good = _good_leaf(kind)
    return st.one_of(good, good, good, _WEIRD)


def _valid(shape: Any, depth: int = 0, nullable: bool = True) -> st.SearchStrategy[Any]:
    """Values graphql-core completes without an error: the selection's fields present
    where non-null, leaves that serialize, union members with their `__typename`."""
    kind, inner = shape
    if kind == "nonnull":
        return _valid(inner, depth, nullable=False)
    if nullable and depth > 5:
        return st.none()
    if kind == "leaf":
        good = _good_leaf(inner[1])
    elif kind == "list":
        good = st.lists(_valid(inner, depth + 1), max_size=0 if depth > 5 else 2)
    elif kind == "abstract":
        good = st.one_of(*[st.fixed_dictionaries(
            {"__typename": st.just(name), **_valid_object(fields, depth)})
            for name, fields in inner.items()])
    else:
        good = st.fixed_dictionaries(_valid_object(inner, depth))
    return st.one_of(st.none(), good, good, good) if nullable else good


def _valid_object(fields: Any, depth: int) -> dict[str, st.SearchStrategy[Any]]:
    return {name: _valid(sub, depth + 1) for _key, name, sub in fields
            if name != "__typename"}


def _value(shape: Any, depth: int = 0) -> st.SearchStrategy[Any]:
    kind, inner = shape
    if kind == "nonnull":
        return st.one_of(_value(inner, depth), _value(inner, depth), _value(inner, depth),
                         _value(inner, depth), st.none())
    nullable = st.none()
    if kind == "leaf":
        return st.one_of(nullable, _leaf(inner[1]))
    if depth > 6:
        return nullable
    if kind == "list":
        return st.one_of(nullable, st.lists(_value(inner, depth + 1), max_size=2),
                         st.just("not-a-list"))
    if kind == "abstract":
        members = [st.fixed_dictionaries({"__typename": st.just(name)},
                                         optional=_object(fields, depth))
                   for name, fields in inner.items()]
        return st.one_of(nullable, *members,
                         st.fixed_dictionaries({}, optional={"__typename": st.just("Nope")}))
    return st.one_of(nullable, st.fixed_dictionaries({}, optional=_object(inner, depth)),
                     st.just(object()))


def _object(fields: Any, depth: int) -> dict[str, st.SearchStrategy[Any]]:
    return {name: _value(sub, depth + 1) for _key, name, sub in fields
            if name != "__typename"}


def _complete_both(name: str, variables: dict[str, Any], value: Any
                   ) -> tuple[Any, ExecutionResult]:
    schema = endpoint.schema()
    document = parse(DOCUMENTS[name]["query"])
    plan = fast.plan(schema, document, get_operation_ast(document, name))
    assert plan is not None, name
    try:
        projected: Any = {plan.key: fast._complete(plan.shape, value)}
    except fast._Irregular:
        projected = fast._Irregular
    result = execute(schema, document, root_value=fast.Replay(value),
                     variable_values=variables, operation_name=name)
    if not isinstance(result, ExecutionResult):
        result = asyncio.run(result)  # type: ignore[arg-type]
    return projected, result


def _plan(name: str) -> fast.Plan:
    document = parse(DOCUMENTS[name]["query"])
    plan = fast.plan(endpoint.schema(), document, get_operation_ast(document, name))
    assert plan is not None
    return plan


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_projection_is_graphql_cores_completion(name: str) -> None:
    """Regular values: the same data, no error."""
    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
    @given(_valid(_plan(name).shape))
    def compare(value: Any) -> None:
        projected, result = _complete_both(name, CASES[name], value)
        assert projected is not fast._Irregular, value
        assert not result.errors, (value, result.errors)
        assert result.data == projected

    compare()


@pytest.mark.parametrize("name", ["GetEntitlementV2", "GetCoupons", "ReportUsage"])
def test_what_the_projection_declines_is_an_error(name: str) -> None:
    """Values with nulls where the schema says non-null, leaves that do not serialize,
    union members without their `__typename`, objects that are not dicts: where the
    projection declines, graphql-core reports an error; where it completes, the same."""
    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
    @given(_value(_plan(name).shape))
    def compare(value: Any) -> None:
        projected, result = _complete_both(name, CASES[name], value)
        if projected is fast._Irregular:
            assert result.errors, (value, result)
        else:
            assert not result.errors, (value, result.errors)
            assert result.data == projected

    compare()


def test_every_client_document_has_a_plan() -> None:
    schema = endpoint.schema()
    for name, doc in DOCUMENTS.items():
        document = parse(doc["query"])
        assert fast.plan(schema, document, get_operation_ast(document, name)) is not None, name


def test_what_the_fast_path_leaves_to_graphql_core() -> None:
    """Directives, two root fields, arguments below the root, introspection: no plan."""
    schema = endpoint.schema()
    for source in (
            'query Q($s: Boolean!) { sdkConfiguration @include(if: $s) { sentryDsn } }',
            'query Q { sdkConfiguration { sentryDsn } coupons { totalCount } }',
            'query Q { __schema { queryType { name } } }',
            'query Q { sdkConfiguration { sentryDsn @skip(if: true) } }'):
        document = parse(source)
        assert fast.plan(schema, document, get_operation_ast(document, "Q")) is None, source


def test_an_exact_decimal_stays_exact() -> None:
    projected, result = _complete_both("GetCreditBalance", CASES["GetCreditBalance"], {
        "customerId": "c", "balances": [{
            "customerId": "c", "currency": {"currencyId": "t", "displayName": "T"},
            "currentBalance": Decimal("0.10000"), "totalConsumed": Decimal("0.2"),
            "totalGranted": Decimal("0.3")}]})
    assert projected == result.data and not result.errors
    assert projected["creditBalanceSummary"]["balances"][0]["currentBalance"] == \
        Decimal("0.10000")


def _input(kind: Any, depth: int = 0) -> st.SearchStrategy[Any]:
    """Variable values for an input type: mostly well formed, sometimes null, a wrong leaf,
    an unknown or missing field, a single value where a list is expected."""
    if isinstance(kind, GraphQLNonNull):
        return _input(kind.of_type, depth)
    wrong = st.one_of(st.none(), _WEIRD, st.text(max_size=3))
    if isinstance(kind, GraphQLList):
        item = _input(kind.of_type, depth + 1)
        return st.one_of(st.lists(item, max_size=3), item, wrong)
    if isinstance(kind, GraphQLInputObjectType):
        if depth > 3:
            return st.just({})
        fields = {name: _input(f.type, depth + 1) for name, f in kind.fields.items()}
        return st.one_of(
            st.fixed_dictionaries({}, optional=fields),
            st.fixed_dictionaries({}, optional={**fields, "notAField": st.integers()}),
            wrong)
    return st.one_of(_good_leaf(kind), _good_leaf(kind), wrong)


def _sources(values: Any) -> Any:
    # A signature's type is a new GraphQLNonNull/GraphQLList wrapper on each call.
    return {n: (s.signature.name, str(s.signature.type), s.signature.default, s.value)
            for n, s in values.sources.items()}


@pytest.mark.parametrize("name", sorted(CASES) + ["GrantPromotionalEntitlements",
                                                  "ReportUsageBulk", "ReportEvent"])
def test_the_variables_are_graphql_cores_coercion(name: str) -> None:
    """The plan's coercion of the variables (`fast._variables`) gives what graphql-core's
    `get_variable_values` gives whenever it gives anything, and declines (hands the
    request to graphql-core) wherever graphql-core finds an error."""
    plan = _plan(name)
    schema = endpoint.schema()
    assert plan.signatures is not None
    definitions = plan.operation.variable_definitions or ()
    variables = st.fixed_dictionaries({}, optional={
        s.name: _input(s.type) for s in plan.signatures})

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(variables)
    def compare(inputs: dict[str, Any]) -> None:
        expected = get_variable_values(schema, definitions, inputs)
        got = fast._variables(plan, inputs)
        if isinstance(expected, list):
            assert got is None, (inputs, expected)
        elif got is not None:
            # repr: types too (Decimal("1") == 1, an enum's value == its name).
            assert repr(got.coerced) == repr(expected.coerced), inputs
            assert repr(_sources(got)) == repr(_sources(expected)), inputs

    compare()
    given_all = {s.name: CASES.get(name, {}).get(s.name) for s in plan.signatures}
    if name in CASES and all(v is not None for v in given_all.values()):
        assert fast._variables(plan, given_all) is not None  # the SDKs' case is served
