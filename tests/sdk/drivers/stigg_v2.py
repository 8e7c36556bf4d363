"""Calls Stigg's Python GraphQL client (stigg-api-client-v2) as the documentation's
snippets do, run by tests/sdk in the client's own venv (it cannot import creditd).

stdin: {"url", "key", "mode": "sync" | "async", "edge"?: bool,
        "steps": [{"call", "input_type"?, "args"?, "key"?}]}
       "edge": true creates the client as users do by default, Edge on
       (`enable_edge=True, edge_api_url=url`), else with `enable_edge=False`.
       `client.<call>(<input_type>(**args[0]), *args[1:])`, e.g. "report_usage" with
       "ReportUsageInput" and [{"customerId": …, "featureId": …, "value": 5}]. A string
       "$<n>.<key>.<key>…" in args is the value at that path of step n's answer. A step's
       "key" makes that call with another API key (a client of its own).
stdout: {"results": [one item per step]}, an item being {"ok": <the answer, model_dump(by_alias)>} or
        {"error": {"type", "message", "codes"}} (codes: the GraphQL errors' extensions.code),
        with "requests": the HTTP requests the client made for that step, as
        "GET /v1/c/…/entitlements.json?featureId=…" or "POST /graphql <operation name>"
        (recorded by an httpx event hook on the client's own http_client).

The client's pydantic models validate every answer strictly (every selected non-null field,
every selected __typename, enum spellings), so an answer it does not accept is an error
of type ValidationError here.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import httpx
from pydantic import BaseModel
from steps import resolve  # beside this script (sys.path[0])
from stigg import Stigg, generated
from stigg.generated import GraphQLClientGraphQLMultiError


def arguments(step: dict[str, Any], answers: list[Any]) -> list[Any]:
    args = resolve(step.get("args", []), answers)
    if step.get("input_type"):
        # As the snippets: `client.report_usage(ReportUsageInput(**{...}))`.
        args[0] = getattr(generated, step["input_type"])(**args[0])
    return args


def as_json(answer: Any) -> Any:
    if isinstance(answer, BaseModel):
        return answer.model_dump(mode="json", by_alias=True)
    return answer


def failure(exc: Exception) -> dict[str, Any]:
    codes = []
    if isinstance(exc, GraphQLClientGraphQLMultiError):
        codes = [(e.extensions or {}).get("code") for e in exc.errors]
    return {"error": {"type": type(exc).__name__, "message": str(exc), "codes": codes}}


def main() -> None:
    script = json.load(sys.stdin)
    steps, answers, out = script["steps"], [], []
    create = (Stigg.create_async_client if script.get("mode", "sync") == "async"
              else Stigg.create_client)
    clients: dict[str, Any] = {}
    edge = ({"enable_edge": True, "edge_api_url": script["url"]} if script.get("edge")
            else {"enable_edge": False})
    requests: list[str] = []

    def record(request: httpx.Request) -> None:
        line = f"{request.method} {request.url.raw_path.decode()}"
        operation = request.headers.get("x-graphql-operation-name")
        requests.append(f"{line} {operation}" if operation else line)

    async def record_async(request: httpx.Request) -> None:
        record(request)

    def client(key: str) -> Any:
        if key not in clients:
            made = create(key, api_url=f"{script['url']}/graphql", **edge)
            hook = record_async if isinstance(made.http_client, httpx.AsyncClient) else record
            made.http_client.event_hooks = {"request": [hook], "response": []}
            clients[key] = made
        return clients[key]

    async def run() -> None:
        for step in steps:
            requests.clear()
            try:
                method = getattr(client(step.get("key", script["key"])), step["call"])
                answer = method(*arguments(step, answers))
                if asyncio.iscoroutine(answer):
                    answer = await answer
                answers.append(as_json(answer))
                out.append({"ok": answers[-1]})
            except Exception as exc:  # noqa: BLE001 - the test asserts on what was raised
                answers.append(None)
                out.append(failure(exc))
            out[-1]["requests"] = list(requests)

    asyncio.run(run())
    json.dump({"results": out}, sys.stdout)


if __name__ == "__main__":
    main()
