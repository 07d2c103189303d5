"""/ui serves the dashboard's files, exactly those, with a same-origin-only CSP; every
file the page loads (its <script>/<link> tags and each module's imports) is served."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from aggregator.api import Api
from aggregator.dashboard import CSP, UI_DIR, dashboard_routes
from tests.unit.api.api_fakes import FakeBackend


@pytest.fixture
async def client() -> AsyncIterator[TestClient[Any, Any]]:
    async with TestClient(TestServer(Api(FakeBackend()).app, host="127.0.0.1")) as c:
        yield c


async def test_the_page_at_ui_and_ui_slash(client: TestClient[Any, Any]) -> None:
    for path in ("/ui", "/ui/"):
        resp = await client.get(path)
        assert resp.status == 200
        assert resp.content_type == "text/html"
        assert resp.headers["Content-Security-Policy"] == CSP
        assert '<main id="view">' in await resp.text()


@pytest.mark.parametrize(
    ("name", "ctype"),
    [
        ("app.js", "text/javascript"),
        ("style.css", "text/css"),
        ("uPlot.iife.min.js", "text/javascript"),
    ],
)
async def test_files_with_their_content_type(
    client: TestClient[Any, Any], name: str, ctype: str
) -> None:
    resp = await client.get(f"/ui/{name}")
    assert resp.status == 200 and resp.content_type == ctype
    assert await resp.read() == (UI_DIR / name).read_bytes()


@pytest.mark.parametrize(
    "path",
    ["/ui/nope.js", "/ui/..%2Fapi.py", "/ui/../api.py", "/ui/%2e%2e/dashboard.py", "/ui/x/y.js"],
)
async def test_anything_else_is_a_json_404(client: TestClient[Any, Any], path: str) -> None:
    resp = await client.get(path)
    assert resp.status == 404
    body = await resp.json()
    assert body["error"]["field"] == "path"


def test_a_folder_without_the_page_is_refused(tmp_path: Path) -> None:
    (tmp_path / "app.js").write_text("")
    with pytest.raises(FileNotFoundError, match=r"index\.html"):
        dashboard_routes(tmp_path)


def test_every_referenced_file_exists() -> None:
    """index.html's tags and every relative ES-module import name a served file."""
    served = {p.name for p in UI_DIR.iterdir()}
    html = (UI_DIR / "index.html").read_text()
    refs = set(re.findall(r'(?:src|href)="/ui/([^"]+)"', html))
    for js in UI_DIR.glob("*.js"):
        refs |= set(re.findall(r'from "\./([^"]+)"', js.read_text()))
    assert refs and refs <= served, sorted(refs - served)
    # No page reaches outside this origin (the CSP would block it anyway).
    for f in UI_DIR.iterdir():
        if f.suffix in (".js", ".html") and not f.name.startswith("uPlot"):
            assert not re.search(r"https?://", f.read_text()), f.name
