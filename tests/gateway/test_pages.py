"""How the pages and the widgets' files are served: compressed, cacheable by version,
under a Content-Security-Policy that runs scripts from this server only; `/` leads a
person somewhere useful. What they show is tested in a real browser (tests/portal/)."""

from __future__ import annotations

import gzip
import re
from html.parser import HTMLParser

import httpx
import pytest

from gateway.portal.assets import HERE, Assets
from tests.gateway.conftest import Server


@pytest.fixture(scope="module")
def anon(server: Server) -> httpx.Client:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


def test_the_widgets_script_is_served_compressed_and_cacheable(anon: httpx.Client) -> None:
    plain = anon.get("/widgets/creditd.js", headers={"accept-encoding": "identity"})
    assert plain.status_code == 200
    assert plain.headers["content-type"].startswith("text/javascript")
    assert "customElements.define" in plain.text
    assert plain.headers["cache-control"] == "public, max-age=3600"
    assert plain.headers["access-control-allow-origin"] == "*"  # embeddable anywhere
    raw = anon.get("/widgets/creditd.js", headers={"accept-encoding": "gzip"})
    assert raw.headers["content-encoding"] == "gzip"
    compressed = int(raw.headers["content-length"])
    assert compressed < len(plain.content) / 2
    assert raw.headers["etag"] == plain.headers["etag"]
    again = anon.get("/widgets/creditd.js", headers={"if-none-match": plain.headers["etag"]})
    assert (again.status_code, again.content) == (304, b"")
    versioned = anon.get("/widgets/creditd.js?v=abc")
    assert "immutable" in versioned.headers["cache-control"]
    assert anon.get("/widgets/nope.js").status_code == 404
    assert anon.get("/widgets/../app.py").status_code == 404
    assert anon.post("/widgets/creditd.js").status_code == 405


def test_the_charting_library_ships_in_the_package_with_its_licence(
        anon: httpx.Client) -> None:
    names = Assets().static
    vendor = [n for n in names if n.startswith("vendor/") and n.endswith(".js")]
    assert vendor, "the chart library is served from the package"
    assert any(n.startswith("vendor/") and "LICENSE" in n.upper() for n in names)
    assert anon.get(f"/widgets/{vendor[0]}").status_code == 200


class _Scripts(HTMLParser):
    """Every script element and inline event handler of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.sources: list[str | None] = []
        self.inline: list[str] = []
        self.handlers: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = dict(attrs)
        self.handlers += [k for k in names if k.startswith("on")]
        if tag == "script":
            self.sources.append(names.get("src"))
            self._in_script = True

    def handle_endtag(self, tag: str) -> None:
        self._in_script = self._in_script and tag != "script"

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline.append(data)


@pytest.mark.parametrize("path,framing", [("/portal", "*"), ("/console", "'none'")])
def test_pages_run_only_this_servers_scripts(anon: httpx.Client, path: str,
                                            framing: str) -> None:
    r = anon.get(path, headers={"accept": "text/html"})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and f"frame-ancestors {framing}" in csp
    assert r.headers["referrer-policy"] == "no-referrer"
    assert r.headers["cache-control"] == "no-store"
    page = _Scripts()
    page.feed(r.text)
    assert page.sources and all(s and s.startswith("/widgets/") for s in page.sources)
    assert page.inline == [] and page.handlers == []
    version = Assets().version
    assert all(s.endswith(f"?v={version}") for s in page.sources if s)
    assert "{{v}}" not in r.text
    for src in page.sources:
        assert anon.get(src).status_code == 200


def test_the_root_leads_a_person_somewhere_useful(anon: httpx.Client) -> None:
    html = anon.get("/", headers={"accept": "text/html,application/xhtml+xml"})
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
    links = set(re.findall(r'href="([^"]+)"', html.text))
    assert {"/console", "/schema/swagger", "/health"} <= links
    program = anon.get("/")
    assert program.json()["links"]["console"] == "/console"
    assert anon.get("/favicon.ico").status_code == 200


def test_every_page_and_file_is_what_the_package_ships() -> None:
    """The pages are read from the package (nothing built at serve time) and every
    compressible file is kept gzipped, decompressing to itself."""
    shipped = Assets(HERE)
    assert set(shipped.pages) >= {"index", "portal", "console"}
    for asset in shipped.static.values():
        if asset.gzipped is not None:
            assert gzip.decompress(asset.gzipped) == asset.body
