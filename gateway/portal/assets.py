"""The widgets' files and the pages, read once from the package and kept compressed.

Everything under `static/` is served at `/widgets/<path>`; the pages (`pages/*.html`) at
`/`, `/portal` and `/console`. Nothing is built at serve time (no Node): the files are
what the package ships. Each is kept as its bytes and gzip bytes (level 9, done once), with
a strong ETag; `version` is a digest of every static file, put into the pages' asset URLs
(`?v=`) so a browser may keep a versioned file for a year and still sees a new release at
once.
"""

from __future__ import annotations

import gzip
import hashlib
import mimetypes
from dataclasses import dataclass
from functools import cache
from pathlib import Path

__all__ = ["Asset", "Assets", "assets"]

HERE = Path(__file__).parent
_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
          ".html": "text/html; charset=utf-8", ".svg": "image/svg+xml",
          ".txt": "text/plain; charset=utf-8", ".md": "text/plain; charset=utf-8",
          ".png": "image/png", ".json": "application/json"}
_COMPRESSIBLE = (".js", ".css", ".html", ".svg", ".txt", ".md", ".json")


@dataclass(frozen=True)
class Asset:
    body: bytes
    gzipped: bytes | None  # None where compression does not pay (images, tiny files)
    etag: str
    content_type: str


def _asset(name: str, body: bytes) -> Asset:
    suffix = Path(name).suffix
    gzipped = None
    if suffix in _COMPRESSIBLE and len(body) > 512:
        gzipped = gzip.compress(body, compresslevel=9, mtime=0)
    content_type = _TYPES.get(suffix) or mimetypes.guess_type(name)[0] or \
        "application/octet-stream"
    return Asset(body, gzipped, '"' + hashlib.sha256(body).hexdigest()[:24] + '"',
                 content_type)


class Assets:
    def __init__(self, root: Path = HERE) -> None:
        static = root / "static"
        files = sorted(p for p in static.rglob("*") if p.is_file()) if static.is_dir() else []
        digest = hashlib.sha256()
        self.static: dict[str, Asset] = {}
        for path in files:
            name = path.relative_to(static).as_posix()
            body = path.read_bytes()
            digest.update(name.encode() + b"\0" + body + b"\0")
            self.static[name] = _asset(name, body)
        self.version = digest.hexdigest()[:12]
        self.pages: dict[str, Asset] = {}
        pages = root / "pages"
        for path in sorted(pages.glob("*.html")) if pages.is_dir() else []:
            text = path.read_text("utf-8").replace("{{v}}", self.version)
            self.pages[path.stem] = _asset(path.name, text.encode())


@cache
def assets() -> Assets:
    """The package's files, read on first use (not at start-up: an API-only server never
    pays for them)."""
    return Assets()
