"""Calls Stigg's first Python GraphQL client (stigg-api-client, sgqlc) as its README
does, run by tests/sdk in the client's own venv (it cannot import creditd).

stdin: {"url", "key", "edge"?: bool, "steps": [{"call", "operation"?, "variables", "key"?}]}
       The client is `Stigg.create_client(key, api_url=url + "/graphql",
       enable_edge=<edge>, edge_api_url=url)`. A step is either
       - "call": "request", "operation": "mutation.report_usage" and "variables":
         {"input": {...}}: `client.request(Stigg.mutation.report_usage, {"input": {...}})`,
         the README's way; the answer is the sgqlc object the client returns; or
       - "call": "get_entitlements" | "get_entitlements_state" | "get_paywall" with
         "variables": the client's own methods that read Edge when it is on (else the same
         operation over GraphQL, answered raw: `{"data", "errors"?}`).
       - "call": "documents": no request; the answer is every operation's document as
         the client renders it, {"query.get_paywall": "query GetPaywall(…", …}.
       A string "$<n>.<key>.<key>…" in variables is the value at that path of step n's
       answer. A step's "key" makes that call with another API key (a client of its own).
stdout: {"results": [one item per step]}, an item being {"ok": <the answer as JSON>} or
        {"error": {"type", "message", "codes", "messages"}} (codes / messages: the GraphQL
        errors' extensions.code / message), each with
        "requests": the HTTP requests the client made for that step ("POST /graphql
        <operation name from the document>", "GET /v1/c/…/entitlements.json?…") and
        "documents": the GraphQL documents it sent, as sent.

An sgqlc answer is shown as JSON with the document's keys (GraphQL field names, or the
document's alias: `provision_subscription`, `entitlements`, `update_customer`) and the
values the client converted (DateTime parsed and printed back in ISO-8601, Floats as the
client's floats, `__typename` as received).
"""

from __future__ import annotations

import datetime
import json
import re
import sys
from typing import Any

import requests
from sgqlc.operation import GraphQLErrors
from sgqlc.types import ContainerType
from steps import resolve  # beside this script (sys.path[0])
from stigg import Stigg

_OPERATION = re.compile(r"^\s*(?:query|mutation|subscription)\s+(\w+)")


def as_json(answer: Any) -> Any:
    """What the client made of the answer: its sgqlc objects walked field by field (the
    values it converted: datetimes, floats, the concrete types of unions), as JSON."""
    if isinstance(answer, ContainerType):
        names = {field.graphql_name: field.name for field in type(answer)}
        out = {}
        for key, raw in answer.__json_data__.items():
            # A null object is an empty object in sgqlc; an alias is its own attribute.
            value = getattr(answer, names.get(key, key), raw)
            out[key] = None if raw is None else as_json(value)
        return out
    if isinstance(answer, list):
        return [as_json(item) for item in answer]
    if isinstance(answer, datetime.datetime | datetime.date):
        return answer.isoformat()
    if isinstance(answer, dict):
        return {k: v for k, v in answer.items() if k != "headers"}  # sgqlc adds them
    return answer


def failure(exc: Exception) -> dict[str, Any]:
    errors = exc.errors if isinstance(exc, GraphQLErrors) else []
    return {"error": {"type": type(exc).__name__, "message": str(exc),
                      "codes": [(e.get("extensions") or {}).get("code") for e in errors],
                      "messages": [e.get("message") for e in errors]}}


def main() -> None:
    script = json.load(sys.stdin)
    answers: list[Any] = []
    out: list[dict[str, Any]] = []
    clients: dict[str, Any] = {}
    requests_made: list[str] = []
    documents: list[str] = []

    # Every request the client makes goes through requests.Session.send: sgqlc's endpoint
    # (its own session) and the Edge reads (`requests.get`).
    send = requests.Session.send

    def record(session: requests.Session, request: requests.PreparedRequest,
               **kw: Any) -> Any:
        line = f"{request.method} {request.path_url}"
        if request.body:
            body = request.body.decode() if isinstance(request.body, bytes) else request.body
            query = json.loads(body).get("query", "")
            documents.append(query)
            name = _OPERATION.match(query)
            line = f"{line} {name.group(1) if name else '?'}"
        requests_made.append(line)
        return send(session, request, **kw)

    requests.Session.send = record  # type: ignore[method-assign]

    def client(key: str) -> Any:
        if key not in clients:
            clients[key] = Stigg.create_client(
                key, api_url=f"{script['url']}/graphql", enable_edge=bool(script.get("edge")),
                edge_api_url=script["url"])
        return clients[key]

    for step in script["steps"]:
        requests_made.clear()
        documents.clear()
        try:
            made = client(step.get("key", script["key"]))
            variables = resolve(step.get("variables", {}), answers)
            if step["call"] == "documents":
                answer = {f"{kind}.{name}": bytes(op).decode()
                          for kind in ("query", "mutation")
                          for name, op in vars(getattr(Stigg, kind)).items()
                          if not name.startswith("_")}
            elif step["call"] == "request":
                kind, name = step["operation"].split(".")
                answer = made.request(getattr(getattr(Stigg, kind), name), variables)
            else:
                answer = getattr(made, step["call"])(variables)
            answers.append(as_json(answer))
            out.append({"ok": answers[-1]})
        except Exception as exc:  # noqa: BLE001 - the test asserts on what was raised
            answers.append(None)
            out.append(failure(exc))
        out[-1]["requests"] = list(requests_made)
        out[-1]["documents"] = list(documents)

    json.dump({"results": out}, sys.stdout, default=str)


if __name__ == "__main__":
    main()
