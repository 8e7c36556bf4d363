"""A fast path for the documents Stigg's SDKs send, which graphql-core would execute the
same way for a fraction of the work.

The SDKs send a fixed set of documents millions of times: one root field, fragments, no
directives, arguments only on the root field. For such an operation a *plan* is worked out
once (and cached with the document): the root field, the variables' types, and for the
field's type the selection merged and resolved against the schema into a tree of response
keys, field names and leaf serializers. Running it is: coerce the variables and the root
field's arguments with graphql-core's own functions, call the root resolver, and project
its result (plain dicts, lists and leaf values, as every resolver here returns) through the
tree.

What the projection does not meet as expected — a null where the schema says non-null, a
value that is not a dict where an object is selected, a union member without its
`__typename`, a leaf that does not serialize — is not handled here: the already resolved
value is handed to graphql-core (`Replay`, which the bound root resolvers return instead
of resolving again: a mutation is never run twice), and graphql-core answers with the data
and errors the spec says. So answers are graphql-core's in every case; the property test in
tests/gateway/graphql/test_fast.py compares the two on generated values.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

from graphql import (
    ExecutionResult,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLField,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    Undefined,
    get_named_type,
    is_abstract_type,
    is_leaf_type,
    located_error,
)
from graphql.execution.values import (
    VariableValues,
    VariableValueSource,
    get_argument_values,
    get_variable_signature,
    get_variable_values,
    input_is_nested_too_deeply,
)
from graphql.utilities.coerce_input_value import coerce_input_value

__all__ = ["Plan", "Replay", "plan", "run"]

# Shapes: ("nonnull", shape) ("list", shape) ("leaf", (serialize, type)) ("object", fields)
# ("abstract", {type name: fields}); fields: [(response key, field name, shape)], with
# field name "__typename" standing for the object type's name (shape: the name).
Shape = tuple[str, Any]


class Replay:
    """A root field's value already resolved, for graphql-core to complete (schema.py's
    bound root resolvers return it instead of resolving again)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


class _Irregular(Exception):
    """The value is not what the fast projection handles: graphql-core completes it."""


@dataclass(frozen=True)
class Plan:
    operation: OperationDefinitionNode
    key: str
    field: GraphQLField
    nodes: list[FieldNode]
    shape: Shape
    # The variables' signatures (name, type), worked out once; None if one does not have
    # one (an unknown type: graphql-core words the error).
    signatures: tuple[Any, ...] | None = None


class _NotPlannable(Exception):
    pass


def _serializer(kind: Any) -> Any:
    # graphql-core 3.3 names it coerce_output_value; 3.2 serialize (schema.py sets both).
    return getattr(kind, "coerce_output_value", None) or kind.serialize


class _Planner:
    def __init__(self, schema: GraphQLSchema,
                 fragments: dict[str, FragmentDefinitionNode]) -> None:
        self.schema = schema
        self.fragments = fragments

    def _applies(self, condition: str | None, kind: GraphQLObjectType) -> bool:
        if condition is None or condition == kind.name:
            return True
        found = self.schema.get_type(condition)
        return found is not None and is_abstract_type(found) and \
            self.schema.is_sub_type(found, kind)  # type: ignore[arg-type]

    def _collect(self, kind: GraphQLObjectType, sets: list[SelectionSetNode],
                 out: dict[str, list[FieldNode]], seen: set[str]) -> None:
        for selection_set in sets:
            for node in selection_set.selections:
                if node.directives:
                    raise _NotPlannable
                if isinstance(node, FieldNode):
                    key = node.alias.value if node.alias else node.name.value
                    out.setdefault(key, []).append(node)
                elif isinstance(node, InlineFragmentNode):
                    condition = node.type_condition.name.value if node.type_condition \
                        else None
                    if self._applies(condition, kind):
                        self._collect(kind, [node.selection_set], out, seen)
                elif isinstance(node, FragmentSpreadNode):
                    name = node.name.value
                    fragment = self.fragments.get(name)
                    if fragment is None or fragment.directives:
                        raise _NotPlannable
                    if name in seen or not self._applies(fragment.type_condition.name.value,
                                                         kind):
                        continue
                    seen.add(name)
                    self._collect(kind, [fragment.selection_set], out, seen)

    def fields(self, kind: GraphQLObjectType, sets: list[SelectionSetNode]) -> list[Any]:
        collected: dict[str, list[FieldNode]] = {}
        self._collect(kind, sets, collected, set())
        out = []
        for key, nodes in collected.items():
            name = nodes[0].name.value
            if name == "__typename":
                out.append((key, name, kind.name))
                continue
            if name.startswith("__") or any(n.arguments for n in nodes):
                raise _NotPlannable  # introspection, or arguments below the root
            field = kind.fields.get(name)
            if field is None or field.resolve is not None:
                raise _NotPlannable
            subsets = [n.selection_set for n in nodes if n.selection_set is not None]
            out.append((key, name, self.shape(field.type, subsets)))
        return out

    def shape(self, kind: Any, sets: list[SelectionSetNode]) -> Shape:
        if isinstance(kind, GraphQLNonNull):
            return ("nonnull", self.shape(kind.of_type, sets))
        if isinstance(kind, GraphQLList):
            return ("list", self.shape(kind.of_type, sets))
        if is_leaf_type(kind):
            return ("leaf", (_serializer(kind), kind))
        if isinstance(kind, GraphQLObjectType):
            return ("object", self.fields(kind, sets))
        named = get_named_type(kind)
        return ("abstract", {t.name: self.fields(t, sets)
                             for t in self.schema.get_possible_types(named)})  # type: ignore


def plan(schema: GraphQLSchema, document: Any, operation: OperationDefinitionNode
         ) -> Plan | None:
    """The plan of `operation` (of a validated `document`), or None when the fast path
    does not apply (more than one root field, directives, arguments below the root,
    introspection, subscriptions)."""
    if operation.operation not in (OperationType.QUERY, OperationType.MUTATION) or \
            operation.directives:
        return None
    root = schema.query_type if operation.operation is OperationType.QUERY \
        else schema.mutation_type
    fragments = {d.name.value: d for d in document.definitions
                 if isinstance(d, FragmentDefinitionNode)}
    planner = _Planner(schema, fragments)
    try:
        collected: dict[str, list[FieldNode]] = {}
        planner._collect(root, [operation.selection_set], collected, set())  # type: ignore
        if len(collected) != 1:
            return None
        [(key, nodes)] = collected.items()
        field = root.fields.get(nodes[0].name.value)  # type: ignore[union-attr]
        if field is None or field.resolve is None or len(nodes) != 1:
            return None
        subsets = [n.selection_set for n in nodes if n.selection_set is not None]
        signatures = tuple(get_variable_signature(schema, d)
                           for d in operation.variable_definitions or ())
        return Plan(operation, key, field, nodes, planner.shape(field.type, subsets),
                    None if any(isinstance(s, GraphQLError) for s in signatures)
                    else signatures)
    except _NotPlannable:
        return None


def _variables(p: Plan, inputs: dict[str, Any]) -> VariableValues | None:
    """The variables as graphql-core's `get_variable_values` coerces them, when every one
    is given and coerces (what the SDKs send), by the same steps less the signatures it
    works out again on each call and the error reporting around them (ReportUsage's
    variables: 8 µs instead of 20); None otherwise —
    a variable left out (its default, or its omission), one that does not coerce — and
    graphql-core does it all and words any error."""
    if p.signatures is None:
        return None
    sources: dict[str, VariableValueSource] = {}
    coerced: dict[str, Any] = {}
    for signature in p.signatures:
        name = signature.name
        value = inputs.get(name, Undefined)
        if value is Undefined or input_is_nested_too_deeply(value, signature.type):
            return None
        out = coerce_input_value(value, signature.type)
        if out is Undefined:
            return None
        sources[name] = VariableValueSource(signature, value)
        coerced[name] = out
    return VariableValues(sources, coerced)


def _complete(shape: Shape, value: Any) -> Any:
    kind, inner = shape
    if kind == "nonnull":
        if value is None:
            raise _Irregular
        return _complete(inner, value)
    if value is None:
        return None
    if kind == "leaf":
        try:
            out = inner[0](value)
        except Exception:
            raise _Irregular from None
        if out is None or out is Undefined:  # graphql-core's error, in its words
            raise _Irregular
        return out
    if kind == "list":
        if not isinstance(value, (list, tuple)):
            raise _Irregular
        return [_complete(inner, v) for v in value]
    if not isinstance(value, dict):
        raise _Irregular
    if kind == "abstract":
        fields = inner.get(value.get("__typename"))
        if fields is None:
            raise _Irregular
    else:
        fields = inner
    return {key: (sub if name == "__typename" else _complete(sub, value.get(name)))
            for key, name, sub in fields}


async def run(p: Plan, schema: GraphQLSchema, variables: dict[str, Any] | None,
              context: Any) -> ExecutionResult | Replay | None:
    """Run the plan: its ExecutionResult; a Replay (the root value resolved, to be
    completed by graphql-core); None when the variables or arguments do not coerce
    (graphql-core answers with the errors it words)."""
    coerced: Any = _variables(p, variables or {})
    if coerced is None:
        coerced = get_variable_values(schema, p.operation.variable_definitions or (),
                                      variables or {})
    if isinstance(coerced, list):
        return None
    try:
        args = get_argument_values(p.field, p.nodes[0], coerced)
    except GraphQLError:
        return None
    try:
        value = p.field.resolve(None, _Info(context), **args)  # type: ignore[misc]
        if inspect.isawaitable(value):
            value = await value
    except Exception as exc:
        error = located_error(exc, p.nodes, [p.key])
        data = None if isinstance(p.field.type, GraphQLNonNull) else {p.key: None}
        return ExecutionResult(data=data, errors=[error])
    try:
        return ExecutionResult(data={p.key: _complete(p.shape, value)})
    except (_Irregular, RecursionError):
        return Replay(value)


class _Info:
    """What the resolvers read of GraphQLResolveInfo: the context (the request)."""

    __slots__ = ("context",)

    def __init__(self, context: Any) -> None:
        self.context = context
