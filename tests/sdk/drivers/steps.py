"""What both Python drivers share (each runs as a script in its client's venv, with this
folder first on sys.path): a step's arguments may name an earlier step's answer."""

from __future__ import annotations

from typing import Any


def resolve(value: Any, answers: list[Any]) -> Any:
    """`value` with every "$<step>.<key>.<key>…" replaced by that part of step's answer."""
    if isinstance(value, str) and value.startswith("$") and "." in value:
        index, *path = value[1:].split(".")
        found = answers[int(index)]
        for key in path:
            found = found[int(key)] if isinstance(found, list) else found[key]
        return found
    if isinstance(value, list):
        return [resolve(v, answers) for v in value]
    if isinstance(value, dict):
        return {k: resolve(v, answers) for k, v in value.items()}
    return value
