"""Talking to /graphql as Stigg's Python client does: the documents stigg-api-client-v2
sends (recorded by scripts/stigg_documents.py in gateway/graphql/documents.json), its
headers, amounts as JSON numbers with their exact digits."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec

__all__ = ["DOCUMENTS", "code", "data", "gql"]

_encode = msgspec.json.Encoder(decimal_format="number").encode
DOCUMENTS = json.loads((Path(__file__).parents[3] / "gateway" / "graphql" / "documents.json")
                       .read_text())["documents"]


def gql(server: Any, name: str, variables: dict[str, Any], *, key: Any = ...,
        query: str | None = None) -> dict[str, Any]:
    """Send the recorded document `name` (or `query`) as the client does; the parsed
    answer, numbers as Decimals (as exact as the wire)."""
    with (server.http() if key is ... else server.http(key)) as http:
        # Amounts go as JSON numbers with their exact digits (Decimal), as typed.
        body = _encode({"query": query if query is not None else DOCUMENTS[name]["query"],
                        "operationName": name, "variables": variables})
        r = http.post("/graphql", content=body, headers={
            "Content-Type": "application/json", "X-API-VERSION": "1",
            "x-graphql-operation-name": name})
    assert r.status_code == 200, r.text
    return json.loads(r.text, parse_float=Decimal)


def data(answer: dict[str, Any]) -> Any:
    assert "errors" not in answer, answer
    return answer["data"]


def code(answer: dict[str, Any]) -> str:
    [error] = answer["errors"]
    assert error["extensions"]["traceId"], error
    return error["extensions"]["code"]
