"""The dashboard at /ui: static files from aggregator/ui/, served as they are (no build
step at run time; docs/dashboard.md says what each page shows and where its numbers
come from).

Invariants:
- Only the files found in the folder when the routes are built are served, by exact
  name (a flat folder): anything else, `..` included, is a 404 naming the path. The
  files are read once, so a request never touches the disk.
- The pages only read the public API, from the same origin. Every answer carries a
  Content-Security-Policy that allows scripts, styles and requests to this origin
  only: no inline script, no third-party code, nothing fetched elsewhere.
- Admin actions (pause / resume pushing) send the bearer token the operator types;
  the page keeps it in the tab's sessionStorage only (gone when the tab closes).
- The chart library is uPlot, vendored from npm (aggregator/ui/VENDORED.md records
  the version; tests/unit/ui/test_vendored.py holds the copy byte-equal to
  node_modules', whose version package.json pins).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

UI_DIR = Path(__file__).with_name("ui")
INDEX = "index.html"
CONTENT_TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
    ".md": "text/plain",
    ".txt": "text/plain",
}
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


@dataclass(frozen=True)
class _File:
    body: bytes
    content_type: str


def _load(folder: Path) -> dict[str, _File]:
    files = {}
    for path in sorted(folder.iterdir()):
        ctype = CONTENT_TYPES.get(path.suffix)
        if path.is_file() and ctype is not None:
            files[path.name] = _File(path.read_bytes(), ctype)
    if INDEX not in files:
        raise FileNotFoundError(f"dashboard folder {folder} has no {INDEX}")
    return files


def dashboard_routes(folder: Path = UI_DIR) -> list[web.RouteDef]:
    """GET /ui and /ui/ (the page), /ui/{file} (its scripts, styles, vendored files)."""
    files = _load(folder)

    def answer(name: str) -> web.Response:
        f = files.get(name)
        if f is None:
            raise web.HTTPNotFound()
        return web.Response(
            body=f.body,
            content_type=f.content_type,
            charset="utf-8",
            # no-cache: a browser revalidates, so an upgraded daemon's pages are seen.
            headers={"Content-Security-Policy": CSP, "Cache-Control": "no-cache"},
        )

    async def index(_: web.Request) -> web.Response:
        return answer(INDEX)

    async def static_file(request: web.Request) -> web.Response:
        return answer(request.match_info["file"])

    return [
        web.get("/ui", index),
        web.get("/ui/", index),
        web.get("/ui/{file:[^/]+}", static_file),
    ]


__all__ = ["CSP", "UI_DIR", "dashboard_routes"]
