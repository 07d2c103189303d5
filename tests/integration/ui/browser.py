"""Headless Chromium (Debian's /usr/bin/chromium, driven by Playwright's async API) for
the dashboard tests, and a page wrapper that records what must not happen: console
errors, uncaught exceptions, failed requests and error responses."""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from playwright.async_api import (
    Browser,
    ConsoleMessage,
    Page,
    Request,
    Response,
    async_playwright,
)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1280, "height": 900}
DOCS = Path(__file__).resolve().parents[3] / "docs"
# Screenshots land in docs/ only when asked (`make screenshots`): a plain test run must
# not rewrite committed files. Otherwise they go to a temporary folder.
SCREENSHOTS_TO_DOCS = os.environ.get("AGG_UI_SCREENSHOTS") == "docs"


@dataclass
class Watched:
    page: Page
    base: str
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    # Paths whose error answers a test expects (a wrong token, bad what-if input, the
    # 503 of a disabled feature).
    expected_errors: set[str] = field(default_factory=set)

    def _console(self, msg: ConsoleMessage) -> None:
        if msg.type != "error":
            return
        # Chromium also logs every 4xx/5xx answer here; an expected one is not an error.
        url = msg.location.get("url") or ""
        if (
            msg.text.startswith("Failed to load resource: the server responded with a status")
            and urlsplit(url).path in self.expected_errors
        ):
            return
        self.errors.append(f"console: {msg.text} @ {url}")

    def _response(self, resp: Response) -> None:
        path = urlsplit(resp.url).path
        if resp.status >= 400 and path not in self.expected_errors:
            self.errors.append(f"HTTP {resp.status} {resp.request.method} {resp.url}")

    def _failed(self, req: Request) -> None:
        # The live stream is cut when a page closes: that is not a failure of the page.
        if urlsplit(req.url).path != "/v1/stream":
            self.errors.append(f"request failed: {req.method} {req.url} {req.failure}")

    def api_requests(self, path: str) -> list[str]:
        """Requests made so far to `path` (query strings kept)."""
        return [u for u in self.requests if urlsplit(u).path == path]

    async def ready_after(self, path: str, asked_before: int) -> None:
        """`ready` for a click that asks `path` again: first wait (up to 30 s) until the
        page has asked it, since the view left from before the click is still marked
        ready until the page starts its new request (CI once read the requests in
        between and found the click's not made yet)."""
        for _ in range(300):
            if len(self.api_requests(path)) > asked_before:
                break
            await asyncio.sleep(0.1)
        await self.ready()

    async def goto(self, hash_route: str) -> None:
        """Open #<route> and wait until the page says it has rendered."""
        url = f"{self.base}/ui/#{hash_route}"
        if self.page.url.startswith(f"{self.base}/ui/"):
            await self.page.evaluate("h => { location.hash = h }", hash_route)
        else:
            await self.page.goto(url)
        await self.ready()

    async def ready(self) -> None:
        # Selectors, not wait_for_function: a polled JS predicate needs eval, which the
        # dashboard's Content-Security-Policy (rightly) refuses.
        await self.page.locator('#view[data-state="ready"]').wait_for(
            state="attached", timeout=30_000
        )
        shown = await self.page.locator("main .error").all_inner_texts()
        assert shown == [], f"the page shows errors: {shown}"

    async def screenshot(self, name: str, *, full_page: bool = True) -> None:
        """dashboard-<name>.png: into docs/ under `make screenshots` (the README and
        docs/dashboard.md show them), else a temporary folder (still taken: a page that
        cannot be captured fails the test either way)."""
        folder = DOCS if SCREENSHOTS_TO_DOCS else Path(tempfile.gettempdir()) / "agg-ui-shots"
        folder.mkdir(exist_ok=True)
        path = folder / f"dashboard-{name}.png"
        await self.page.screenshot(path=str(path), full_page=full_page)
        assert path.stat().st_size > 0


@contextlib.asynccontextmanager
async def launched() -> AsyncIterator[Browser]:
    """Debian's chromium under Playwright, closed on the way out."""
    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            await b.close()


@contextlib.asynccontextmanager
async def watched_page(browser: Browser, base: str) -> AsyncIterator[Watched]:
    """A fresh page on `base`; on the way out, whatever went wrong on it fails the test."""
    w = await open_page(browser, base)
    try:
        yield w
    finally:
        await w.page.context.close()
    assert w.errors == [], "\n".join(w.errors)


async def open_page(browser: Browser, base: str) -> Watched:
    context = await browser.new_context(viewport=VIEWPORT)  # type: ignore[arg-type]
    page = await context.new_page()
    w = Watched(page, base)
    page.on("console", w._console)
    page.on("pageerror", lambda exc: w.errors.append(f"uncaught: {exc}"))
    page.on("response", w._response)
    page.on("requestfailed", w._failed)
    page.on("request", lambda req: w.requests.append(req.url))
    return w
