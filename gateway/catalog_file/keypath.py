"""Locating a key path (`plans.pro.prices[0].amount`) in the catalog file's text, so
that errors name the line; and the path helpers (split, tokens, format) the other modules use."""

from __future__ import annotations

import re

# -- locating a key path in the text -------------------------------------------------------

_KEY_LINE = re.compile(r"""^\s*((?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*')"""
                       r"""(?:\s*\.\s*(?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*'))*)\s*=""")


def _split_key(text: str) -> list[str]:
    parts, current, quote = [], "", None
    for ch in text.strip():
        if quote:
            if ch == quote:
                quote = None
            else:
                current += ch
        elif ch in "\"'":
            quote = ch
        elif ch == ".":
            parts.append(current.strip())
            current = ""
        else:
            current += ch
    parts.append(current.strip())
    return parts


def _path_tokens(path: str) -> list[str]:
    """`plans.pro.prices[0].amount` -> ['plans', 'pro', 'prices', '0', 'amount'] (ids
    containing dots are written quoted: plans."a.b".x)."""
    tokens: list[str] = []
    for part in _split_key(re.sub(r"\[(\d+)\]", r".\1", path)):
        tokens.append(part)
    return [t for t in tokens if t != ""]


def _format_path(tokens: list[str | int]) -> str:
    out = ""
    for t in tokens:
        if isinstance(t, int):
            out += f"[{t}]"
        else:
            text = t if re.fullmatch(r"[A-Za-z0-9_-]+", t) else f'"{t}"'
            out += f".{text}" if out else text
    return out


def locate(text: str, path: str) -> tuple[int, str] | None:
    """The line that defines `path`, or failing that its nearest enclosing key or table:
    a small line scanner (tomllib keeps no positions) that follows table headers, arrays of
    tables and dotted keys."""
    want = _path_tokens(path)
    header: list[str] = []
    arrays: dict[tuple[str, ...], int] = {}
    best: tuple[int, int, str] | None = None  # (matched tokens, line number, line)

    def consider(tokens: list[str], number: int, line: str) -> None:
        nonlocal best
        n = 0
        while n < min(len(tokens), len(want)) and tokens[n] == want[n]:
            n += 1
        if n == len(tokens) and n > 0 and (best is None or n > best[0]):
            best = (n, number, line)

    def with_indices(keys: list[str]) -> list[str]:
        out: list[str] = []
        for i, key in enumerate(keys):
            out.append(key)
            index = arrays.get(tuple(keys[: i + 1]))
            if index is not None:
                out.append(str(index))
        return out

    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("[["):
            keys = _split_key(stripped[2:stripped.find("]]")])
            arrays[tuple(keys)] = arrays.get(tuple(keys), -1) + 1
            # A new element: forget the counts of arrays nested in the previous one.
            for other in [k for k in arrays if len(k) > len(keys) and k[:len(keys)] == tuple(keys)]:
                del arrays[other]
            header = with_indices(keys)
            consider(header, number, line)
        elif stripped.startswith("["):
            header = with_indices(_split_key(stripped[1:stripped.find("]")]))
            consider(header, number, line)
        else:
            match = _KEY_LINE.match(line)
            if match:
                consider(header + _split_key(match.group(1)), number, line)
    return None if best is None else (best[1], best[2])
