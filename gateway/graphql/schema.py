"""The GraphQL schema creditd serves: a subset of Stigg's own (stigg.graphql, printed from
the stigg-api-client package), so every type, field, argument, nullability and enum value
is Stigg's spelling — the root fields creditd resolves, every type they reach and Stigg's
ErrorCode enum.

The cut is kept as served.graphql, so a server builds ~470 types instead of Stigg's
~1,200 (0.2 s instead of 0.8 s). It is written by `scripts/served_schema.py`
after a root field is added or stigg.graphql refreshed; a test checks it is current, and
`served_schema` refuses resolvers for other root fields than the file's.

Amounts are exact: the process's `Float` takes a JSON number's text as a Decimal (the
endpoint decodes request bodies with `parse_float=Decimal`) and answers Decimals as JSON
numbers, never through a binary float. `DateTime` values are ISO-8601 strings."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any

from graphql import (
    GraphQLEnumType,
    GraphQLError,
    GraphQLFloat,
    GraphQLInterfaceType,
    GraphQLObjectType,
    GraphQLSchema,
    build_schema,
    is_introspection_type,
    print_schema,
)
from graphql.language import FloatValueNode, IntValueNode

from gateway.graphql.fast import Replay

__all__ = ["SERVED_PATH", "Resolver", "enum_values", "served_schema", "served_sdl", "stigg_schema"]

Resolver = Callable[..., Any]
_SDL = Path(__file__).with_name("stigg.graphql")
SERVED_PATH = Path(__file__).with_name("served.graphql")
_HEADER = ("# The part of Stigg's schema (stigg.graphql) creditd serves: its root fields, what\n"
           "# they reach and ErrorCode. Do not edit: `scripts/served_schema.py` writes"
           " it.\n\n")


@lru_cache(maxsize=1)
def stigg_schema() -> GraphQLSchema:
    """Stigg's whole schema (about 1,200 types)."""
    return build_schema(_SDL.read_text())


def served_sdl(roots: Mapping[str, Iterable[str]]) -> str:
    """What served.graphql holds for the root fields `roots` ({"Query": [...], ...})."""
    return _HEADER + _subset_sdl(stigg_schema(), roots) + "\n"


@lru_cache(maxsize=1)
def _served() -> GraphQLSchema:
    return build_schema(SERVED_PATH.read_text())


@lru_cache(maxsize=16)
def enum_values(name: str) -> frozenset[str]:
    """The values of one of Stigg's enums that the served schema has (ErrorCode, Currency,
    AccessDeniedReason, …)."""
    kind = _served().get_type(name)
    assert isinstance(kind, GraphQLEnumType), name
    return frozenset(kind.values)


def _subset_sdl(schema: GraphQLSchema, roots: Mapping[str, Iterable[str]]) -> str:
    """SDL of `schema` cut down to the root fields `roots` ({"Query": [...], ...}), the
    types they reach (a schema collects those from its roots; Stigg's has no interfaces,
    whose implementations it would not) and ErrorCode (the errors' codes)."""
    assert not any(isinstance(t, GraphQLInterfaceType) for t in schema.type_map.values()
                   if not is_introspection_type(t))
    kinds: dict[str, GraphQLObjectType] = {}
    for root, names in roots.items():
        full = schema.get_type(root)
        assert isinstance(full, GraphQLObjectType), root
        # KeyError: a field that is not in Stigg's schema.
        kinds[root] = GraphQLObjectType(root, {n: full.fields[n] for n in names})
    return print_schema(GraphQLSchema(query=kinds.get("Query"), mutation=kinds.get("Mutation"),
                                      subscription=kinds.get("Subscription"),
                                      types=[schema.get_type("ErrorCode")]))


# -- exact Float ---------------------------------------------------------------------------

def _float_value(value: Any) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
        raise GraphQLError(f"Float cannot represent a non numeric value: {value!r}")
    number = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    if not number.is_finite():
        raise GraphQLError(f"Float cannot represent a non-finite value: {value!r}")
    return number


def _float_literal(node: Any, _variables: Any = None) -> Decimal:
    if not isinstance(node, (FloatValueNode, IntValueNode)):
        raise GraphQLError("Float cannot represent a non numeric value", node)
    return Decimal(node.value)


def _float_out(value: Any) -> Any:
    if isinstance(value, bool):
        raise GraphQLError(f"Float cannot represent a non numeric value: {value!r}")
    if isinstance(value, (int, float, Decimal)):
        return value
    raise GraphQLError(f"Float cannot represent a non numeric value: {value!r}")


def _exact_floats() -> None:
    # GraphQLFloat is graphql-core's one Float scalar, shared by every schema in the
    # process; creditd builds only this one. graphql-core 3.3 calls the hooks
    # coerce_input_value / coerce_input_literal / coerce_output_value and keeps the 3.2
    # names (parse_value / parse_literal / serialize) as attributes too: set both.
    hooks = {"parse_value": _float_value, "coerce_input_value": _float_value,
             "parse_literal": _float_literal, "coerce_input_literal": _float_literal,
             "serialize": _float_out, "coerce_output_value": _float_out}
    for name, hook in hooks.items():
        if hasattr(GraphQLFloat, name):
            setattr(GraphQLFloat, name, hook)


def _event(event: Any, _info: Any, **_args: Any) -> Any:
    """A subscription root field's value: the event its source stream yielded."""
    return event


def served_schema(resolvers: Mapping[str, Mapping[str, Resolver]]) -> GraphQLSchema:
    """The subset of Stigg's schema whose root fields are `resolvers`' keys ({"Query":
    {"creditBalanceSummary": resolve, …}, "Mutation": {…}, "Subscription": {…}}), with
    the resolvers bound. A Subscription field's function is its `subscribe` (the source
    stream, whose events are the field's values)."""
    _exact_floats()
    schema = _served()
    for root, fields in resolvers.items():
        kind = schema.get_type(root)
        assert isinstance(kind, GraphQLObjectType)
        if set(kind.fields) != set(fields):
            raise RuntimeError(f"served.graphql's {root} fields are not the resolvers' "
                               "(run `scripts/served_schema.py`): "
                               f"{sorted(set(kind.fields) ^ set(fields))}")
        for name, resolve in fields.items():
            if root == "Subscription":
                kind.fields[name].subscribe = resolve
                kind.fields[name].resolve = _event
            else:
                kind.fields[name].resolve = _replayable(resolve)
    return schema


def _replayable(resolve: Resolver) -> Resolver:
    """A root resolver that returns a value resolved already (fast.py's Replay, the root
    value graphql-core is given to complete) instead of resolving again."""
    def bound(root: Any, info: Any, **args: Any) -> Any:
        if isinstance(root, Replay):
            return root.value
        return resolve(root, info, **args)
    return bound

