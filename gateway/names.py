"""Wire names: the contract's fields and parameters are camelCase, Python's snake_case."""

from __future__ import annotations

__all__ = ["camel"]


def camel(name: str) -> str:
    """`feature_type` -> `featureType`."""
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)
