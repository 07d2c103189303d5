"""The accounts pages with a large book: the real API stack (aggregator.api.Api, the
daemon's account views, the real history recorder and queries on SQLite) over a
100,000-account synthetic book (bench/risk_engine.py), in headless Chromium.

What must hold at any size: opening the list asks the daemon for exactly one page, each
next page for one more (following next_cursor), and no request ever asks for more than
a page; the tier counts come from the history's system sample, not from paging.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import pytest_asyncio
from playwright.async_api import Browser

from aggregator.api import Api
from aggregator.api_views import AccountViews, ApiViews, ChainSources, LedgerReader
from aggregator.history.config import HistoryConfig
from aggregator.history.queries import HistoryQueries
from aggregator.history.recorder import HistoryRecorder
from aggregator.metrics import Metrics
from aggregator.risk.book import PositionRow
from aggregator.risk.engine import RiskEngine
from aggregator.risk.view import LedgerView
from aggregator.store import Store
from aggregator.store.history_repo import HistoryRepo
from aggregator.stream import HealthStream
from bench.risk_engine import ASSETS, build_engine, set_market, synth_rows
from oracles.types import Price
from tests.integration.ui.browser import Watched, watched_page

pytestmark = [pytest.mark.timeout(240), pytest.mark.asyncio(loop_scope="module")]
N_ACCOUNTS = 100_000


class _NoPrices:
    """The list and account pages read no price route; /v1/prices answers empty."""

    def prices(self) -> dict[str, Price]:
        return {}

    def price(self, asset: str) -> Price | None:
        return None


def _paused(paused: bool) -> dict[str, Any]:
    return {"paused": paused, "enabled": False, "reason": "no pusher in this test"}


@pytest.fixture(scope="module")
def engine() -> Iterator[RiskEngine]:
    eng = build_engine()
    eng.load_positions(synth_rows(N_ACCOUNTS, seed=7))
    set_market(eng)
    eng.recompute()
    eng.allocate_credit()
    yield eng


@pytest.fixture(scope="module")
def stream(engine: RiskEngine) -> HealthStream:
    """The daemon's /v1/stream publisher over the book (the tests publish by hand)."""
    return HealthStream(LedgerReader(engine))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def bases(
    engine: RiskEngine, stream: HealthStream, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[str, str]]:
    db = tmp_path_factory.mktemp("ui-book") / "agg.db"
    store = Store(f"sqlite+aiosqlite:///{db}")
    await store.upgrade()
    cfg = HistoryConfig(max_accounts_per_bucket=1_000)
    repo = HistoryRepo(store)
    view = LedgerView(engine)
    # One run of the daemon's history job: the system sample the pages count tiers from.
    await HistoryRecorder(cfg, repo, view, metrics=Metrics(), ready=lambda: True).run()
    reader = LedgerReader(engine)
    accounts = AccountViews(
        reader,
        prices_ready=lambda: True,
        decimals={a[0]: a[1] for a in ASSETS},
        indexers={},
        onchain=lambda address: None,
        margin=lambda address: None,
    )
    views = ApiViews(
        accounts,
        prices=_NoPrices(),
        chains=ChainSources({}, {}, lambda name: [], lambda name: {}, lambda name: None),
        readiness=lambda: (True, []),
        subscribe=stream.subscribe,
        metrics_text=lambda: b"",
        set_push_paused=_paused,
    )
    queries = HistoryQueries(
        cfg, repo, in_book=lambda a: reader.find(a) is not None, model="standard"
    )
    api = Api(views, history=queries, sse_keepalive_s=1.0)
    # The same book with history disabled: its routes answer 503 naming `history`.
    bare = Api(views, sse_keepalive_s=1.0)
    port = await api.start("127.0.0.1", 0)
    bare_port = await bare.start("127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{port}", f"http://127.0.0.1:{bare_port}"
    finally:
        stream.close()
        await bare.stop()
        await api.stop()
        await store.close()


@pytest_asyncio.fixture(loop_scope="module")
async def ui(browser: Browser, bases: tuple[str, str]) -> AsyncIterator[Watched]:
    async with watched_page(browser, bases[0]) as w:
        yield w


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as resp:
        return json.loads(resp.read())


async def get(base: str, path: str) -> Any:
    return await asyncio.to_thread(_get, base + path)


def _query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


async def test_one_request_per_page_and_paging_follows_the_cursor(
    ui: Watched, engine: RiskEngine
) -> None:
    page = ui.page
    counts = engine.tier_counts()
    assert sum(counts.values()) == N_ACCOUNTS and counts["healthy"] > 1_000
    await ui.goto("/accounts?tier=healthy")
    asked = ui.api_requests("/v1/accounts")
    assert len(asked) == 1, asked
    assert _query(asked[0]) == {"tier": "healthy", "limit": "100"}
    first = await get(ui.base, "/v1/accounts?tier=healthy&limit=100")
    assert await page.locator("#accounts tbody tr").count() == 100
    for a in first["accounts"][:10]:
        assert await page.inner_text(f'[data-hf="{a["account"]}"]') == a["hf_text"]
    # Tabs count every tier from the history's system sample: the whole book, no paging.
    for tier, n in counts.items():
        assert f"({n:,})" in await page.inner_text(f'#tier-tabs [data-tier="{tier}"]'), tier
    await ui.screenshot("accounts-large-book", full_page=False)

    # Next page: one more request, at the cursor the first answer gave.
    await page.click("#next-page")
    await ui.ready_after("/v1/accounts", 1)
    asked = ui.api_requests("/v1/accounts")
    assert len(asked) == 2, asked
    assert _query(asked[1]) == {"tier": "healthy", "limit": "100", "cursor": first["next_cursor"]}
    second = await get(
        ui.base, f"/v1/accounts?tier=healthy&limit=100&cursor={first['next_cursor']}"
    )
    shown = set(await page.locator("#accounts tbody tr td:first-child").all_inner_texts())
    assert shown == {a["account"] for a in second["accounts"]}
    assert not shown & {a["account"] for a in first["accounts"]}
    # 500 rows per page is still one request.
    await page.click('#pager a:text-is("500")')
    await ui.ready_after("/v1/accounts", 2)
    asked = ui.api_requests("/v1/accounts")
    assert len(asked) == 3 and _query(asked[2])["limit"] == "500"
    assert await page.locator("#accounts tbody tr").count() == 500
    # Whole-session bound: no request ever asked for more than one page.
    assert all(int(_query(u).get("limit", "100")) <= 500 for u in asked)


async def test_default_tier_is_the_worst_with_accounts_and_an_account_opens(
    ui: Watched, engine: RiskEngine
) -> None:
    counts = engine.tier_counts()
    worst = next(t for t in ("insolvent", "liquidatable", "warning") if counts[t])
    await ui.goto("/accounts")
    asked = ui.api_requests("/v1/accounts")
    assert len(asked) == 1 and _query(asked[0])["tier"] == worst
    page = ui.page
    assert await page.get_attribute(f'#tier-tabs [data-tier="{worst}"]', "class") == "active"
    address = (await page.locator("#accounts tbody tr td:first-child").first.inner_text()).strip()
    await page.click(f'a[href="#/account/{address}"]')
    await ui.ready()
    detail = await get(ui.base, f"/v1/accounts/{address}")
    assert await page.inner_text("#account-hf") == detail["hf_text"]
    assert (await page.inner_text("#account-tier")).strip() == worst


async def test_search_by_address_finds_an_account_deep_in_the_book(
    ui: Watched, engine: RiskEngine
) -> None:
    # An account far beyond any page the list shows: found through the API's lookup.
    address = engine.book.account_address[N_ACCOUNTS - 7]
    await ui.goto("/accounts?tier=insolvent")
    await ui.page.fill("#search", address.upper().replace("0X", "0x"))
    await ui.page.click("#search-form button[type=submit]")
    await ui.ready()
    detail = await get(ui.base, f"/v1/accounts/{address}")
    assert await ui.page.inner_text("#account-hf") == detail["hf_text"]
    assert len(ui.api_requests("/v1/accounts")) == 1


async def test_without_history_the_list_still_pages(
    browser: Browser, bases: tuple[str, str], engine: RiskEngine
) -> None:
    """History disabled: no tier counts, the list still opens (at liquidatable) and
    pages; the account page shows its breakdown and says history is off."""
    async with watched_page(browser, bases[1]) as w:
        w.expected_errors |= {"/v1/history/system"}
        await w.goto("/accounts")
        asked = w.api_requests("/v1/accounts")
        assert len(asked) == 1 and _query(asked[0])["tier"] == "liquidatable"
        n = engine.tier_counts()["liquidatable"]
        assert await w.page.locator("#accounts tbody tr").count() == min(100, n)
        address = await w.page.locator("#accounts tbody tr td:first-child").first.inner_text()
        w.expected_errors |= {f"/v1/history/accounts/{address.strip()}"}
        await w.goto(f"/account/{address.strip()}")
        assert "history is disabled" in await w.page.inner_text("#account")


async def test_the_account_page_follows_the_live_stream(
    ui: Watched, engine: RiskEngine, stream: HealthStream
) -> None:
    """A health event for the account on screen (/v1/stream, as the ledger publishes
    after a recompute) makes the page read the breakdown again. Runs last: it changes
    one account of the module's book."""
    first = await get(ui.base, "/v1/accounts?tier=warning&limit=1")
    address = first["accounts"][0]["account"]
    await ui.goto(f"/account/{address}")
    page = ui.page
    before = await page.inner_text("#account-hf")
    await page.locator("#live.on").wait_for()
    # More USDC debt on one chain: the HF falls.
    view = LedgerView(engine)
    i = view.find_account(address.lower())
    assert i is not None
    debt = view.head_amount(i, "base", "USDC", "debt") + 5_000 * 10**6
    engine.apply_position(PositionRow(address.lower(), "base", "USDC", "debt", debt, debt))
    stream.publish([address.lower()])
    after = (await get(ui.base, f"/v1/accounts/{address}"))["hf_text"]
    assert after != before
    await page.locator("#account-hf", has_text=after).wait_for(timeout=15_000)
    assert "1 change" in await page.inner_text("#live")
