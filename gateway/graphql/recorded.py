"""The documents Stigg's Python client (stigg-api-client-v2 6.25.0) sends, recorded by
scripts/stigg_documents.py in documents.json: the Edge reads run them, and their fragments
complete what Stigg's v1 client leaves out.

Stigg's v1 client (stigg-api-client, sgqlc 16.5) does not write the definitions of
fragments it spreads inside inline fragments (`... on PackageFeatureEntitlement {
...PackageFeatureEntitlementFragment }`): eight of the operations creditd serves arrive
with an undefined fragment, which the GraphQL spec refuses. Both clients are generated
from Stigg's same operation files, so a fragment of that name is the same definition in
the v2 documents: `complete` adds the definitions a document spreads but does not define
(and those they spread), when every one is known. The completed document is validated as
any other; an unknown name stays undefined and is refused.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from graphql import DocumentNode, FragmentDefinitionNode, FragmentSpreadNode, Visitor, parse, visit

__all__ = ["complete", "queries"]

_PATH = Path(__file__).with_name("documents.json")


@lru_cache(maxsize=1)
def queries() -> dict[str, str]:
    """The recorded documents by operation name."""
    return {name: doc["query"]
            for name, doc in json.loads(_PATH.read_text())["documents"].items()}


@lru_cache(maxsize=1)
def _fragments() -> dict[str, FragmentDefinitionNode]:
    out: dict[str, FragmentDefinitionNode] = {}
    for source in queries().values():
        for definition in parse(source).definitions:
            if isinstance(definition, FragmentDefinitionNode):
                out.setdefault(definition.name.value, definition)
    return out


def _spread(node: object) -> set[str]:
    names: set[str] = set()

    class _Spreads(Visitor):
        def enter_fragment_spread(self, spread: FragmentSpreadNode, *_: object) -> None:
            names.add(spread.name.value)

    visit(node, _Spreads())  # type: ignore[arg-type]
    return names


def complete(document: DocumentNode) -> DocumentNode | None:
    """`document` with the known definitions of the fragments it spreads but does not
    define; None when it defines every fragment it spreads, or spreads one nobody knows."""
    defined = {d.name.value for d in document.definitions
               if isinstance(d, FragmentDefinitionNode)}
    missing = _spread(document) - defined
    if not missing:
        return None
    known = _fragments()
    added: list[FragmentDefinitionNode] = []
    while missing:
        name = missing.pop()
        if name not in known:
            return None
        added.append(known[name])
        defined.add(name)
        missing |= _spread(known[name]) - defined
    return DocumentNode(definitions=(*document.definitions, *added))
