"""Record the GraphQL documents Stigg's Python client (`stigg-api-client-v2`) sends, by
operation, as gateway/graphql/documents.json: the Edge reads run them, and the GraphQL
tests send them as the client does. Run it with the client in a venv of its own (it
installs a `stigg` module, as the REST client the tests use does):

    python3 -m venv /tmp/stigg-v2 && /tmp/stigg-v2/bin/pip install stigg-api-client-v2
    /tmp/stigg-v2/bin/python scripts/stigg_documents.py $(cat scripts/stigg_methods.txt) \
        > gateway/graphql/documents.json

`scripts/stigg_methods.txt` lists the client methods of the operations creditd serves.
Each client method is called with its transport replaced by one that keeps the document
instead of sending it.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import sys
from importlib.metadata import version
from typing import Any

from stigg.generated.async_client import AsyncClient  # type: ignore[import-not-found]


class _Kept(Exception):
    pass


class _Recorder(AsyncClient):  # type: ignore[misc]
    async def execute(self, query: str, operation_name: str | None = None,
                      variables: Any = None, **kwargs: Any) -> Any:
        raise _Kept(query, operation_name)


async def main(methods: list[str]) -> None:
    client = _Recorder(url="http://recorder.invalid")
    out: dict[str, Any] = {"client": f"stigg-api-client-v2 {version('stigg-api-client-v2')}",
                           "documents": {}}
    for method in methods:
        call = getattr(client, method)
        # The methods take their input as one argument (`get_coupons` and a few take none).
        args = [None for q in inspect.signature(call).parameters.values()
                if q.kind in (q.POSITIONAL_ONLY, q.POSITIONAL_OR_KEYWORD) and q.default is q.empty]
        try:
            await call(*args)
        except _Kept as kept:
            query, name = kept.args
            out["documents"][name] = {"method": method, "query": query}
    await client.http_client.aclose()
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
