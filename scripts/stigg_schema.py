"""Print Stigg's whole GraphQL schema as SDL, from the `stigg-api-client` package (its sgqlc
types under `stigg.generated`), to refresh gateway/graphql/stigg.graphql.

The package must live in a venv of its own: it installs a `stigg` module, as the REST
client the tests use (`stigg` on PyPI) does.

    python3 -m venv /tmp/stigg-v1 && /tmp/stigg-v1/bin/pip install stigg-api-client
    /tmp/stigg-v1/bin/python scripts/stigg_schema.py > gateway/graphql/stigg.graphql

sgqlc's `Schema.__to_graphql__()` wraps every type in a `schema { … }` block, which is not
SDL, so each type is printed on its own and the schema definition is added at the end.
"""

from __future__ import annotations

from importlib.metadata import version

from stigg.generated.schema import schema  # type: ignore[import-not-found]


def main() -> None:
    print(f"# Stigg's GraphQL schema, printed from stigg-api-client {version('stigg-api-client')}"
          " (its sgqlc types under\n# stigg.generated) by scripts/stigg_schema.py. creditd"
          " serves a subset of it\n# (gateway/graphql/schema.py): the root fields it resolves"
          " and every type they reach.\n# Do not edit: regenerate with the script.\n")
    parts = [t.__to_graphql__(0, "  ") for t in schema]
    roots = [f"  {op}: {t.__name__}" for op, t in (
        ("query", schema.query_type), ("mutation", schema.mutation_type),
        ("subscription", schema.subscription_type)) if t is not None]
    parts.append("schema {\n" + "\n".join(roots) + "\n}")
    print("\n\n".join(parts))


if __name__ == "__main__":
    main()
