"""The start-up book load (BookSync.load): stored positions streamed from the store in
batches, checked and encoded batch by batch, then written at once. The book it builds
equals, array for array, the one the whole-table path (every Position read, then
`load_positions`) builds, on SQLite and PostgreSQL; unknown tokens and impossible
amounts are kept out and reported exactly as before."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from aggregator.book_sync import BookSync
from aggregator.config import AppConfig
from aggregator.metrics import Metrics
from aggregator.risk import RiskEngine
from aggregator.risk.book import MAX_AMOUNT
from aggregator.store import Store
from aggregator.store import chain_reads as reads
from aggregator.store.chain_repo import SqlChainStore
from aggregator.store.models.chain import ChainPosition

TOKENS = {"alpha": {"USDC": "0x" + "a1" * 20, "WETH": "0x" + "A2" * 20},
          "beta": {"USDC": "0x" + "b1" * 20, "WETH": "0x" + "b2" * 20}}  # fmt: skip
UNKNOWN = "0x" + "ee" * 20


def config() -> AppConfig:
    return AppConfig(
        chains=[
            {"name": n, "chain_id": i + 1, "rpc_urls": ["http://127.0.0.1:1"],
             "contracts": {"vault": f"0x{i + 1:040x}"}}
            for i, n in enumerate(TOKENS)
        ],
        assets=[
            {"symbol": s, "decimals": d, "ltv": 0.8, "lt": 0.85,
             "tokens": {c: TOKENS[c][s] for c in TOKENS}}
            for s, d in (("USDC", 6), ("WETH", 18))
        ],
    )  # type: ignore[arg-type]  # fmt: skip


def stored(rng: np.random.Generator, n_accounts: int) -> list[ChainPosition]:
    """Random positions as the indexer stores them: checksummed and lower-case token
    spellings, amounts up to 2**256 - 1, pending deposits and repayments."""
    rows: dict[tuple[str, str, str, str], ChainPosition] = {}
    for _ in range(n_accounts * 3):
        a = int(rng.integers(1, n_accounts + 1))
        account = f"0x{a:040x}" if a % 2 else f"0x{a:040X}".replace("0X", "0x")
        chain = str(rng.choice(list(TOKENS)))
        token = str(rng.choice([*TOKENS[chain].values(), TOKENS[chain]["WETH"].lower()]))
        kind = str(rng.choice(["collateral", "debt"]))
        head = int(rng.integers(0, 10**6)) * 10 ** int(rng.choice([0, 12, 40, 70]))
        pending = int(rng.integers(0, 3)) * head // 4
        conf = max(0, head - pending) if kind == "collateral" else head + pending
        rows[(chain, account, token.lower(), kind)] = ChainPosition(
            chain=chain, account=account, token=token, kind=kind, head_amount=head,
            pending_amount=pending, confirmed_amount=conf, updated_block=1,
        )  # fmt: skip
    return list(rows.values())


async def write(store: Store, rows: list[ChainPosition]) -> None:
    async with store.transaction() as s:
        s.add_all(rows)


def sync(cfg: AppConfig, store: Store) -> BookSync:
    async def nothing(_: object) -> None:
        return None

    return BookSync(cfg, SqlChainStore(store), metrics=Metrics(), indexers={},
                    owns_index=lambda _c: True, recompute=nothing)  # fmt: skip


def book_arrays(eng: RiskEngine) -> dict[str, Any]:
    b = eng.book
    n = b.n
    return {
        "accounts": list(b.account_address),
        "rows": sorted(
            (b.account_address[a], b.chains[c], b.assets[t], s, b.exact(r), am)
            for r, a, c, t, s, am in zip(
                range(n),
                b.r_account[:n].tolist(),
                b.r_chain[:n].tolist(),
                b.r_asset[:n].tolist(),
                b.r_side[:n].tolist(),
                b.r_amount[:n].tolist(),
                strict=True,
            )
        ),
        "coll": b.coll[: b.n_accounts].copy(),
        "debt": b.debt[: b.n_accounts].copy(),
    }


@pytest.mark.parametrize("batch", [1, 7, 50_000])
async def test_streamed_load_builds_the_book_of_the_whole_table_path(
    store: Store, monkeypatch: pytest.MonkeyPatch, batch: int
) -> None:
    cfg = config()
    rows = stored(np.random.default_rng(batch), 40)
    await write(store, rows)
    monkeypatch.setattr(reads, "POSITION_BATCH", batch)
    old_sync, new_sync = sync(cfg, store), sync(cfg, store)
    old, new = RiskEngine.from_config(cfg), RiskEngine.from_config(cfg)
    old.load_positions(await old_sync.positions())
    await new_sync.load(new)
    assert new_sync.loaded
    want, got = book_arrays(old), book_arrays(new)
    assert got["rows"] == want["rows"] and len(got["rows"]) == len(rows)
    assert sorted(got["accounts"]) == sorted(want["accounts"])
    order = [got["accounts"].index(a) for a in want["accounts"]]
    np.testing.assert_array_equal(got["coll"][order], want["coll"])
    np.testing.assert_array_equal(got["debt"][order], want["debt"])
    assert any(r[4][0] >> 128 for r in got["rows"])  # the exact side dict is exercised


async def test_unknown_tokens_and_impossible_amounts_stay_out_as_before(store: Store) -> None:
    cfg = config()
    good = stored(np.random.default_rng(3), 5)
    bad_account = "0x" + "0c" * 20
    odd = [
        ChainPosition(chain="alpha", account="0x" + "0d" * 20, token=UNKNOWN, kind="collateral",
                      head_amount=5, pending_amount=0, confirmed_amount=5, updated_block=1),
        ChainPosition(chain="beta", account=bad_account, token=TOKENS["beta"]["USDC"],
                      kind="debt", head_amount=MAX_AMOUNT, pending_amount=1,
                      confirmed_amount=MAX_AMOUNT + 1, updated_block=1),
    ]  # fmt: skip
    await write(store, good + odd)
    old_sync, new_sync = sync(cfg, store), sync(cfg, store)
    old, new = RiskEngine.from_config(cfg), RiskEngine.from_config(cfg)
    old.load_positions(await old_sync.positions())
    await new_sync.load(new)
    assert new_sync.impossible == old_sync.impossible == {"beta": {bad_account}}
    assert new_sync.unknown_tokens == old_sync.unknown_tokens == {("alpha", UNKNOWN): 1}
    assert book_arrays(new)["rows"] == book_arrays(old)["rows"]
    assert new.book.find_account(bad_account) is None


async def test_an_empty_store_loads_an_empty_book(store: Store) -> None:
    cfg = config()
    eng = RiskEngine.from_config(cfg)
    s = sync(cfg, store)
    await s.load(eng)
    assert s.loaded and eng.book.n == 0 and eng.book.n_accounts == 0


def test_the_load_pauses_the_gc_and_restores_it_even_on_error() -> None:
    import gc

    from aggregator.risk.book import BookError, PositionRow
    from aggregator.startup import gc_paused

    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    eng = RiskEngine.from_config(config())
    row = PositionRow("0x" + "01" * 20, "alpha", "USDC", "collateral", 1, 1)
    with pytest.raises(BookError, match="listed twice"):
        eng.load_positions([row, row])
    assert gc.isenabled()
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()  # left as it was found
    finally:
        gc.enable()


async def test_a_load_holds_unsettled_claims_and_logs_an_unheld_one_once(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """Start-up applies the pending-claim hold (the stored rows carry none); a claim in
    a token no asset names holds nothing and is logged once, not on every read."""
    from aggregator.claim_holds import bonus_bps, hold_amount
    from chains.types import BlockRef, VaultEvent

    cfg = config()
    account, usdc = "0x" + "0e" * 20, TOKENS["beta"]["USDC"]
    repo = SqlChainStore(store)

    def claim(idx: int, token: str, ref: str) -> VaultEvent:
        return VaultEvent("beta", 5, "0x" + "55" * 32, f"0x{idx:064x}", idx, "repay", account,
                          token, 100 * 10**6, counterparty=account, ref=ref)  # fmt: skip

    await write(store, [ChainPosition(
        chain="beta", account=account, token=usdc, kind="debt", head_amount=10**9,
        pending_amount=0, confirmed_amount=10**9, updated_block=1)])  # fmt: skip
    await repo.apply_batch(
        "beta", to_block=5, blocks=[BlockRef(5, "0x" + "55" * 32, "0x" + "44" * 32)],
        events=[claim(0, usdc, "0x" + "a1" * 32), claim(1, UNKNOWN, "0x" + "b2" * 32)],
        log_range=10, head_block=5, confirmed_block=5, keep_hashes_from=0,
    )  # fmt: skip
    bs, eng = sync(cfg, store), RiskEngine.from_config(cfg)
    with caplog.at_level("WARNING"):
        await bs.load(eng)
        await bs.positions([account])
    (row,) = [r for r in await bs.positions([account]) if r.side == "debt"]
    bps = bonus_bps(a.liquidation_bonus for a in cfg.assets)
    # The stored debt after the claim's repayment (10**9 - 10**8), plus the hold.
    assert row.head == 9 * 10**8 + hold_amount(10**8, bps)
    assert [c.ref for c in bs.claims[account]] == ["0x" + "a1" * 32, "0x" + "b2" * 32]
    # The message's fixed text: the project's log formatter may abbreviate the hex id.
    assert caplog.text.count("nothing is held for it") == 1
    assert eng.book.find_account(account) is not None
