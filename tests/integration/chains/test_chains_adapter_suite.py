"""The adapter contract suite: every chain kind (plain anvil, anvil forked from
another anvil) must pass the same tests against real nodes."""

from __future__ import annotations

from collections.abc import Callable

from chains_env import ChainEnv, stored_head
from eth_abi import decode, encode

from aggregator.store.chain_repo import SqlChainStore
from chains.contracts import deploy
from chains.indexer import ChainIndexer, Progress
from chains.lst import LstRateReader, LstSource
from chains.rpc import RpcClient, selector
from devkit.testing.harness import DEPLOYER, LIQUIDATOR, USERS, VaultHarness, _call

U0, U1, U2 = USERS[0], USERS[1], USERS[2]


def exercise(h: VaultHarness) -> None:
    """Every event kind, several accounts."""
    h.deposit(U0, 10**18)
    h.deposit(U1, 4 * 10**18)
    h.grant(U0)
    h.withdraw(U0, 10**17)
    h.grant(U1)
    h.borrow(U1, 1_000 * 10**6)
    h.repay(U2, U1, 250 * 10**6)
    h.grant(U1, tier=2)
    h.liquidate(U1, 100 * 10**6)


async def test_indexes_every_event_kind_and_matches_chain(
    chain: ChainEnv, repo: SqlChainStore, client_for: Callable[..., RpcClient]
) -> None:
    h = chain.harness
    exercise(h)
    settings = chain.settings()
    client = client_for(settings)
    await client.connect()
    ix = ChainIndexer(settings, client, repo)
    status = await ix.sync_to_head()
    assert not status.fatal and status.caught_up and status.lag == 0
    assert status.indexed_block == h.block_number()
    assert await stored_head(repo) == h.onchain_positions(status.indexed_block)
    events = await repo.events("c")
    assert {e.kind for e in events} == {"deposit", "withdraw", "borrow", "repay", "liquidation"}
    liq = next(e for e in events if e.kind == "liquidation")
    assert (liq.account, liq.counterparty, liq.debt_amount) == (U1, LIQUIDATOR, 100 * 10**6)
    if chain.origin is not None:
        # The forked chain's pre-fork history came from origin through the fork backend.
        fork_block = chain.origin.block_number()
        pre = [e for e in events if e.block_number <= fork_block]
        assert [e.kind for e in pre] == ["deposit", "deposit", "borrow"]
        assert all(e.block_hash.startswith("0x") and len(e.block_hash) == 66 for e in pre)
    assert await ix.reconcile([U0, U1, U2]) == []
    assert status.endpoints[0]["state"] == "healthy"


async def test_cross_chain_claim_and_settlement_move_only_their_own_chain(
    chain: ChainEnv, repo: SqlChainStore, client_for: Callable[..., RpcClient]
) -> None:
    """The claim half (debt repaid here for collateral elsewhere) and the settlement
    half (collateral seized here for a claim made elsewhere) as the indexer stores them:
    the one vault plays both chains' parts, so each half is checked against the chain."""
    h = chain.harness
    h.deposit(U2, 10**18)
    h.grant(U2)
    h.borrow(U2, 1_000 * 10**6)
    h.grant(U2, tier=2)
    receipt = h.claim_remote(U2, 400 * 10**6, 424_242, "0x" + "42" * 20)
    claim_id = bytes.fromhex(receipt["logs"][-1]["topics"][1][2:])
    h.settle_remote(b"\x07" * 32, U2, 500 * 10**6)  # a claim of another chain
    settings = chain.settings(confirmations=3)
    ix = ChainIndexer(settings, client_for(settings), repo)
    status = await ix.sync_to_head()
    assert not status.fatal
    events = [e for e in await repo.events("c") if e.account == U2]
    claim, settle = events[-2:]
    assert (claim.kind, claim.token, claim.amount, claim.counterparty) == (
        "repay", h.usd, 400 * 10**6, LIQUIDATOR,
    )  # fmt: skip
    # 500 USD + the collateral's 5% bonus at 2,000 USD a COL.
    seized = 525 * 10**6 * 10**12 // 2_000
    assert (settle.kind, settle.token, settle.amount, settle.debt_amount) == (
        "liquidation", h.col, seized, 0,
    )  # fmt: skip
    pos = {(p.account, p.kind): p for p in await repo.positions("c")}
    assert pos[(U2, "debt")].head_amount == 600 * 10**6
    # The claim lowers debt like any repayment: in the confirmed view once final.
    assert pos[(U2, "debt")].confirmed_amount == 1_000 * 10**6
    assert pos[(U2, "collateral")].confirmed_amount == 10**18 - seized
    assert await stored_head(repo) == h.onchain_positions(status.indexed_block)
    h.mine(3)
    await ix.sync_to_head()
    pos = {(p.account, p.kind): p for p in await repo.positions("c")}
    assert pos[(U2, "debt")].confirmed_amount == 600 * 10**6
    assert await ix.reconcile([U2]) == []
    assert claim_id != b"\x07" * 32


async def test_finality_views_are_asymmetric(
    chain: ChainEnv, repo: SqlChainStore, client_for: Callable[..., RpcClient]
) -> None:
    h = chain.harness
    settings = chain.settings(confirmations=3)
    client = client_for(settings)
    ix = ChainIndexer(settings, client, repo)
    await ix.sync_to_head()
    base = {
        (p.account, p.kind): (p.head_amount, p.confirmed_amount) for p in await repo.positions("c")
    }
    c0, _ = base.get((U2, "collateral"), (0, 0))
    h.deposit(U2, 7 * 10**18)
    h.grant(U2)
    h.borrow(U2, 500 * 10**6)
    await ix.sync_to_head()
    pos = {(p.account, p.kind): p for p in await repo.positions("c")}
    # The deposit is 2 deep: head has it, confirmed does not; the borrow counts at once.
    assert pos[(U2, "collateral")].head_amount == c0 + 7 * 10**18
    assert pos[(U2, "collateral")].confirmed_amount == c0
    assert pos[(U2, "debt")].confirmed_amount == pos[(U2, "debt")].head_amount == 500 * 10**6
    h.repay(U0, U2, 200 * 10**6)
    await ix.sync_to_head()
    pos = {(p.account, p.kind): p for p in await repo.positions("c")}
    assert pos[(U2, "debt")].head_amount == 300 * 10**6
    assert pos[(U2, "debt")].confirmed_amount == 500 * 10**6
    assert pos[(U2, "collateral")].confirmed_amount == c0 + 7 * 10**18  # now 3 deep
    h.mine(3)
    await ix.sync_to_head()
    pos = {(p.account, p.kind): p for p in await repo.positions("c")}
    assert pos[(U2, "debt")].confirmed_amount == 300 * 10**6
    assert ix.status.confirmed_block == ix.status.indexed_block - 3


async def test_callbacks_report_changed_accounts_and_progress(
    chain: ChainEnv, repo: SqlChainStore, client_for: Callable[..., RpcClient]
) -> None:
    h = chain.harness
    exercise(h)
    changed: list[set[str]] = []
    progress: list[Progress] = []

    async def on_changed(name: str, accounts: set[str]) -> None:
        assert name == "c"
        changed.append(accounts)

    settings = chain.settings(max_log_range=3)
    ix = ChainIndexer(
        settings,
        client_for(settings),
        repo,
        on_accounts_changed=on_changed,
        on_progress=progress.append,
    )
    await ix.sync_to_head()
    assert set().union(*changed) >= {U0, U1}
    assert progress and progress[-1].indexed_block == ix.status.indexed_block
    assert all(p.blocks_per_s > 0 and p.eta_s is not None for p in progress)
    assert progress[-1].eta_s == 0
    # Nothing new on chain: no spurious notifications.
    before = len(changed)
    await ix.sync_to_head()
    assert len(changed) == before


async def test_resume_from_checkpoint_continues_exactly(
    chain: ChainEnv, repo: SqlChainStore, client_for: Callable[..., RpcClient]
) -> None:
    h = chain.harness
    exercise(h)
    settings = chain.settings(max_log_range=2)
    first = ChainIndexer(settings, client_for(settings), repo)
    await first.load()
    # One step: a step reads ahead several ranges (chains/index_fetch.py), so three
    # small ranges' worth of steps may already reach the head.
    await first.step()
    # The first indexer's process is gone: its read-ahead does not go on reading
    # beside the second's.
    await first.fetcher.drop_ahead()
    mid = first.status.indexed_block
    assert h.deploy_block < mid < h.block_number()
    second = ChainIndexer(settings, client_for(settings), repo)
    cp = await second.load()
    assert cp.indexed_block == mid
    await second.sync_to_head()
    assert await stored_head(repo) == h.onchain_positions(second.status.indexed_block)
    keys = [(e.block_number, e.log_index) for e in await repo.events("c")]
    assert len(keys) == len(set(keys))


async def test_call_batch_chunks_and_reports_reverts(
    chain: ChainEnv, client_for: Callable[..., RpcClient]
) -> None:
    h = chain.harness
    exercise(h)
    client = client_for(chain.settings(), max_batch=16)
    coll = selector("collateralOf(address,address)")
    calls = [
        (h.vault, coll + encode(["address", "address"], [USERS[i % 4], h.col])) for i in range(50)
    ]
    calls.insert(7, (h.vault, bytes.fromhex("deadbeef")))  # no such function: reverts
    got = await client.call_batch(calls)
    assert got[7] is None
    values = [decode(["uint256"], g)[0] for g in got[:7] + got[8:] if g is not None]
    assert values == [h.collateral_of(USERS[i % 4]) for i in range(50)]
    block = h.block_number()
    h.deposit(U0, 1)
    # Reads at a fixed block see that block's state.
    old = await client.call_batch(calls[:1], block=block)
    assert decode(["uint256"], old[0])[0] == h.collateral_of(U0, block)  # type: ignore[arg-type]
    assert await client.call_batch([]) == []


async def test_lst_rates_read_and_stored(
    chain: ChainEnv, repo: SqlChainStore, client_for: Callable[..., RpcClient]
) -> None:
    import requests
    from web3 import Web3

    session = requests.Session()
    try:
        w3 = Web3(Web3.HTTPProvider(chain.node.url, session=session))
        wst = deploy(w3, "MockWstETH", sender=DEPLOYER)
        reth = deploy(w3, "MockRETH", sender=DEPLOYER)
        cb = deploy(w3, "MockCbETH", sender=DEPLOYER)
        under = deploy(w3, "MockERC20", "Dai", "DAI", 6, sender=DEPLOYER)
        vault4626 = deploy(w3, "MockERC4626Vault", under, "Savings", "sDAI", sender=DEPLOYER)
    finally:
        session.close()
    h = chain.harness
    for addr, rate in (
        (wst, 1_180_000_000_000_000_001),
        (reth, 1_100_000_000_000_000_000),
        (cb, 10**18 + 7),
    ):
        h.send(DEPLOYER, addr, _call("setRate(uint256)", ["uint256"], [rate]))
    # Shares first, then yield: 1000 assets backing 1000 shares, then +50 assets.
    h.mint(under, DEPLOYER, 10**12)
    h.send(
        DEPLOYER,
        under,
        _call("approve(address,uint256)", ["address", "uint256"], [vault4626, 2**256 - 1]),
    )
    h.send(
        DEPLOYER,
        vault4626,
        _call("deposit(uint256,address)", ["uint256", "address"], [1000 * 10**6, DEPLOYER]),
    )
    h.mint(under, vault4626, 50 * 10**6)
    sources = [
        LstSource("wstETH", "wsteth", wst),
        LstSource("rETH", "reth", reth),
        LstSource("cbETH", "cbeth", cb),
        LstSource("sDAI", "erc4626", vault4626),
    ]
    reader = LstRateReader("c", client_for(chain.settings()), repo)
    samples = {s.asset: s for s in await reader.read(sources)}
    assert samples["wstETH"].rate == 1_180_000_000_000_000_001 and samples["wstETH"].scale == 10**18
    assert samples["rETH"].rate == 1_100_000_000_000_000_000
    assert samples["cbETH"].rate == 10**18 + 7
    # convertToAssets(1e18 shares of an 18-decimal vault share?) -> the vault's own decimals.
    sdai = samples["sDAI"]
    assert sdai.scale == 10**6
    assert abs(sdai.rate / sdai.scale - 1.05) < 1e-3
    assert len({s.block for s in samples.values()}) == 1
    h.send(DEPLOYER, wst, _call("setRate(uint256)", ["uint256"], [1_200_000_000_000_000_000]))
    await reader.read(sources[:1])
    latest = await reader.latest()
    assert latest["wstETH"].rate == 1_200_000_000_000_000_000
    assert latest["rETH"].rate == 1_100_000_000_000_000_000


async def test_reconciliation_takes_the_chains_value(
    chain: ChainEnv, repo: SqlChainStore, client_for: Callable[..., RpcClient]
) -> None:
    h = chain.harness
    exercise(h)
    settings = chain.settings(reconcile_sample=2)
    ix = ChainIndexer(settings, client_for(settings), repo)
    await ix.sync_to_head()
    block = ix.status.indexed_block
    truth = h.collateral_of(U0, block)
    # Drift the stored view (as a decoding bug or a missed log would).
    await repo.apply_corrections(
        "c", block, [(U0, h.col, "collateral", truth + 5)], reconcile_block=0
    )
    mismatches = []
    for _ in range(3):  # rolling sample of 2 covers every account within a few runs
        mismatches += await ix.reconcile()
    assert [(m.account, m.stored, m.onchain) for m in mismatches] == [(U0, truth + 5, truth)]
    assert ix.status.reconcile_mismatches == 1
    assert await stored_head(repo) == h.onchain_positions(block)
