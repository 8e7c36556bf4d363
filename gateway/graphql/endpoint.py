"""`POST /graphql` (and `GET /graphql` for queries): Stigg's GraphQL API over HTTP.

The request is `{"query", "operationName", "variables"}` with `X-API-KEY` (the same keys
and environments as REST). Every answer is HTTP 200 with `{"data", "errors"}` as GraphQL
clients expect — an error is `{"message", "locations"?, "path"?, "extensions": {"code":
<Stigg ErrorCode>, "traceId", "field"?}}`:

    no or unknown API key            Unauthenticated (and no data)
    a document or variables that     BadUserInput, naming what is wrong (an operation or
    do not validate                  field creditd does not serve is named too)
    a domain refusal                 its code when it is one of Stigg's ErrorCode values
                                     (CustomerNotFound, CreditGrantNotFound, …), else
                                     BadUserInput (4xx) or UnexpectedError
    engine overload / store outage   RateLimitExceeded / OperationTimeout (retryable)
    anything unexpected              UnexpectedError, logged, no details

Parsed and validated documents are cached by their text: the SDKs send a fixed set of
documents, and validation costs far more than execution."""

from __future__ import annotations

from collections import OrderedDict
from decimal import Decimal
from functools import lru_cache
from typing import Any

import msgspec
import structlog
from graphql import (
    DocumentNode,
    ExecutionResult,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLSchema,
    InlineFragmentNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    Visitor,
    execute,
    get_operation_ast,
    parse,
    validate,
    visit,
)
from litestar import Request, Response

from engine.domain.errors import DomainError
from engine.runtime.errors import EngineError, EngineFault, Overloaded, StoreUnavailable
from gateway.auth import authenticate
from gateway.context import header, services
from gateway.graphql import fast, recorded, resolvers
from gateway.graphql.schema import enum_values, served_schema

__all__ = ["ROOTS", "documents", "environment_of", "error_json", "execute_operation",
           "invalid_json", "refusal_json", "schema", "serve_http"]

log = structlog.get_logger("creditd.graphql")
_encode = msgspec.json.Encoder(decimal_format="number").encode
DOCUMENTS_CACHED_MAX = 256
BODY_BYTES_MAX = 1 << 20
# The largest client document (GetCustomerById) is under 2,000 tokens.
TOKENS_MAX = 50_000
# The clients' deepest documents (GetCustomerById, GetPaywall) nest 9 fields deep and use
# no aliases; these bound what one document can ask for (Stigg limits aliases too).
DEPTH_MAX = 20
ALIASES_MAX = 30


# Every root field the endpoint resolves, by root type.
ROOTS = resolvers.ROOTS


@lru_cache(maxsize=1)
def schema() -> GraphQLSchema:
    return served_schema(ROOTS)


class _Documents:
    """Parsed, validated documents by their text (least recently used first out)."""

    def __init__(self) -> None:
        self._docs: OrderedDict[str, DocumentNode | list[GraphQLError]] = OrderedDict()

    def get(self, source: str) -> DocumentNode | list[GraphQLError]:
        found = self._docs.get(source)
        if found is not None:
            self._docs.move_to_end(source)
            return found
        try:
            document: DocumentNode | list[GraphQLError] = parse(source, max_tokens=TOKENS_MAX)
            document = recorded.complete(document) or document  # type: ignore[arg-type]
            refused = _limits(document)
            errors = [refused] if refused is not None else validate(schema(), document)
        except GraphQLError as exc:
            document = [exc]
        except RecursionError:
            # Nesting deeper than the interpreter's stack (the body limit still allows it).
            document = [GraphQLError("the document nests too deeply")]
        else:
            if errors:
                document = errors
        self._docs[source] = document
        if len(self._docs) > DOCUMENTS_CACHED_MAX:
            self._docs.popitem(last=False)
        return document


documents = _Documents()


_plans: OrderedDict[tuple[str, str | None], fast.Plan | None] = OrderedDict()


async def execute_operation(source: str, document: DocumentNode, operation_name: str | None,
                            operation: OperationDefinitionNode | None, variables: Any,
                            context: Any) -> ExecutionResult:
    """Execute the operation `operation_name` (found as `operation`, None if it is not
    there) of a validated document: by its plan when it has one (fast.py; plans cached
    by document text and operation name), else, or for a value the plan does not
    complete, by graphql-core."""
    found = None
    if operation is not None:
        key = (source, operation_name)
        if key in _plans:
            found = _plans[key]
            _plans.move_to_end(key)
        else:
            found = _plans[key] = fast.plan(schema(), document, operation)
            if len(_plans) > DOCUMENTS_CACHED_MAX:
                _plans.popitem(last=False)
    root: Any = None
    if found is not None:
        outcome = await fast.run(found, schema(), variables, context)
        if isinstance(outcome, ExecutionResult):
            return outcome
        root = outcome  # a Replay, or None: graphql-core words the variables' errors
    result = execute(schema(), document, root_value=root, variable_values=variables,
                     operation_name=operation_name, context_value=context)
    if not isinstance(result, ExecutionResult):
        result = await result
    return result


def _limits(document: DocumentNode) -> GraphQLError | None:
    """A refusal for a document nesting deeper than DEPTH_MAX fields (fragments expanded;
    each fragment's depth computed once, so fragments spreading fragments cannot blow up)
    or with more than ALIASES_MAX aliases; None when within bounds."""
    fragments = {d.name.value: d for d in document.definitions
                 if isinstance(d, FragmentDefinitionNode)}
    depths: dict[str, int] = {}

    def depth(selections: SelectionSetNode | None) -> int:
        deepest = 0
        for node in selections.selections if selections is not None else ():
            if isinstance(node, FieldNode):
                deepest = max(deepest, 1 + depth(node.selection_set))
            elif isinstance(node, InlineFragmentNode):
                deepest = max(deepest, depth(node.selection_set))
            elif isinstance(node, FragmentSpreadNode):
                name = node.name.value
                if name not in depths and name in fragments:
                    depths[name] = 0  # a cycle counts nothing (validation refuses it)
                    depths[name] = depth(fragments[name].selection_set)
                deepest = max(deepest, depths.get(name, 0))
            if deepest > DEPTH_MAX:
                break
        return deepest

    aliases = 0

    class _Aliases(Visitor):
        def enter_field(self, node: FieldNode, *_: Any) -> None:
            nonlocal aliases
            aliases += node.alias is not None

    visit(document, _Aliases())
    if aliases > ALIASES_MAX:
        return GraphQLError(f"the document has {aliases} aliases; at most {ALIASES_MAX}",
                            extensions={"code": "GraphQLAliasesLimitExceeded"})
    for definition in document.definitions:
        if isinstance(definition, OperationDefinitionNode) and \
                depth(definition.selection_set) > DEPTH_MAX:
            return GraphQLError(f"the document nests more than {DEPTH_MAX} fields deep",
                                definition)
    return None


def _trace_id(request: Request) -> str:
    return request.scope.get("state", {}).get("request_id", "")  # type: ignore[union-attr]


def error_json(message: str, code: str, trace: str, *, field: str | None = None,
           error: GraphQLError | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"message": message}
    if error is not None:
        if error.locations:
            out["locations"] = [{"line": loc.line, "column": loc.column}
                                for loc in error.locations]
        if error.path:
            out["path"] = list(error.path)
    extensions: dict[str, Any] = {"code": code, "traceId": trace}
    if field is not None:
        extensions["field"] = field
    out["extensions"] = extensions
    return out


def invalid_json(errors: list[GraphQLError], trace: str) -> list[dict[str, Any]]:
    """Why a document was refused (parsing, limits, validation), in Stigg's shape."""
    return [error_json(e.message, (e.extensions or {}).get("code", "BadUserInput"), trace,
                       error=e) for e in errors]


def _answer(data: Any, errors: list[dict[str, Any]]) -> Response:
    body: dict[str, Any] = {"data": data}
    if errors:
        body["errors"] = errors
    return Response(content=_encode(body), status_code=200, media_type="application/json")


# The domain's codes that Stigg's ErrorCode spells otherwise (and every
# `<Thing>IsArchived`: EntityIsArchivedError).
_STIGG_SPELLING = {"ProductNotFound": "ProductNotFoundError",
                   "PackageArchived": "EntityIsArchivedError"}


def stigg_code(exc: DomainError) -> str:
    """The Stigg ErrorCode of a domain refusal: its own code when Stigg's enum has it (or
    spells it otherwise), else BadUserInput for a client's mistake, UnexpectedError for
    the server's."""
    code = _STIGG_SPELLING.get(exc.code, exc.code)
    if code.endswith("IsArchived"):
        code = "EntityIsArchivedError"
    if code in enum_values("ErrorCode"):
        return code
    return "BadUserInput" if exc.status < 500 else "UnexpectedError"


def refusal_json(exc: GraphQLError, trace: str) -> dict[str, Any]:
    """An error raised while resolving, in Stigg's shape."""
    cause = exc.original_error
    if isinstance(cause, DomainError):
        code = stigg_code(cause)
        message = f"{cause.field}: {cause.message}" if cause.field else cause.message
        return error_json(message, code, trace, field=cause.field, error=exc)
    if isinstance(cause, Overloaded):
        return error_json(str(cause), "RateLimitExceeded", trace, error=exc)
    if isinstance(cause, StoreUnavailable):
        return error_json("the database is unavailable; retry", "OperationTimeout", trace,
                          error=exc)
    if isinstance(cause, EngineError) and not isinstance(cause, EngineFault):
        return error_json(str(cause), "OperationTimeout", trace, error=exc)
    if cause is None or isinstance(cause, GraphQLError):
        # A GraphQL error proper: a variable that does not coerce, a null for a non-null
        # argument, …
        return error_json(exc.message, "BadUserInput", trace, error=exc)
    log.error("graphql resolver failed", trace_id=trace,
              error=repr(cause.__cause__ if isinstance(cause, EngineFault) else cause),
              exc_info=cause)
    return error_json("internal error", "UnexpectedError", trace, error=exc)


def environment_of(connection: Any, key: str | None) -> tuple[str | None, str]:
    """The environment of an API key (HTTP header or websocket connection parameters),
    or None and why not."""
    env = services(connection).catalog.environment_of(key) if key else None
    return env, ("the X-API-KEY header is missing" if not key else "the API key is not valid")


async def run(request: Request, query: Any, operation: Any, variables: Any,
               *, read_only: bool) -> Response:
    trace = _trace_id(request)
    env, why = environment_of(request, header(request.scope, b"x-api-key"))
    if env is None:
        return _answer(None, [error_json(why, "Unauthenticated", trace)])
    request.scope["state"]["environment"] = env  # type: ignore[index]
    if not isinstance(query, str) or not query.strip():
        return _answer(None, [error_json("query: a GraphQL document is required",
                                         "BadUserInput", trace, field="query")])
    if operation is not None and not isinstance(operation, str):
        return _answer(None, [error_json("operationName: must be a string", "BadUserInput",
                                         trace, field="operationName")])
    if variables is not None and not isinstance(variables, dict):
        return _answer(None, [error_json("variables: must be an object", "BadUserInput",
                                         trace, field="variables")])
    document = documents.get(query)
    if isinstance(document, list):
        return _answer(None, invalid_json(document, trace))
    chosen = get_operation_ast(document, operation)
    if read_only and isinstance(chosen, OperationDefinitionNode) and \
            chosen.operation is not OperationType.QUERY:
        return _answer(None, [error_json("GET runs queries only; send mutations with POST",
                                         "BadUserInput", trace)])
    result = await execute_operation(query, document, operation, chosen, variables, request)
    errors = [refusal_json(e, trace) for e in result.errors or ()]
    return _answer(result.data, errors)


# Numbers keep their digits: amounts are exact (schema.py's Float takes Decimals).
_json = msgspec.json.Decoder(float_hook=Decimal).decode  # DecodeError is a ValueError


async def _post(request: Request, raw: bytes | None) -> Response:
    if raw is None:
        return _answer(None, [error_json("the request body is too large", "BadUserInput",
                                         _trace_id(request))])
    try:
        body = _json(raw)
    except ValueError as exc:
        return _answer(None, [error_json(f"the body is not JSON: {exc}", "BadUserInput",
                                         _trace_id(request))])
    if not isinstance(body, dict):
        return _answer(None, [error_json("the body must be a JSON object {query, "
                                         "operationName, variables}", "BadUserInput",
                                         _trace_id(request))])
    return await run(request, body.get("query"), body.get("operationName"),
                     body.get("variables"), read_only=False)


async def _get(request: Request) -> Response:
    params = request.query_params
    variables: Any = params.get("variables")
    if variables is not None:
        try:
            variables = _json(variables)
        except ValueError as exc:
            return _answer(None, [error_json(f"variables: not JSON: {exc}", "BadUserInput",
                                             _trace_id(request), field="variables")])
    return await run(request, params.get("query"), params.get("operationName"), variables,
                     read_only=True)


async def _body(receive: Any) -> bytes | None:
    """The request body; None when it is over BODY_BYTES_MAX (read no further)."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b""
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > BODY_BYTES_MAX:
            return None
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


async def serve_http(scope: Any, receive: Any, send: Any) -> None:
    """POST /graphql (and GET for queries), raw ASGI (route.py): Litestar's per-request
    machinery (signature model, hooks, response objects) cost more than executing an
    SDK's cached document (py-spy; scripts/bench_graphql.py), as it did for the REST
    consumption. `authenticate` only names the request here (the endpoint checks the key
    itself)."""
    request: Request = Request(scope, receive, send)
    await authenticate(request)
    method = scope["method"]
    if method == "POST":
        response = await _post(request, await _body(receive))
    elif method == "GET":
        response = await _get(request)
    else:
        response = _answer(None, [error_json("use POST (or GET for queries)", "BadUserInput",
                                             _trace_id(request))])
    body = response.content
    assert isinstance(body, bytes)
    await send({"type": "http.response.start", "status": 200,
                "headers": [*_OK_HEADERS, (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


_OK_HEADERS = [(b"content-type", b"application/json")]
