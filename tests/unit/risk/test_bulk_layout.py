"""The compiled bulk paths of a load equal the numpy paths they replaced, array for
array: the book's dense sums (kernels.py `book_sums_kernel`, against masked bincounts
per side and chain) and the pool layout of a first load (`StandardModel.layout`,
against `rows` then `Pool.place` in chunks), with e-mode groups, zero rows, accounts
without positions, a small last chunk (spare slots) and reputation multipliers."""

from __future__ import annotations

import numpy as np
import pytest

from aggregator.risk import PositionRow, RiskEngine
from aggregator.risk import engine as engine_module
from aggregator.risk.book import COLLATERAL, DEBT, PositionBook

from .helpers import ADDRS, CHAINS, DECIMALS, SYMBOLS, engine

BORROWABLE = ("USDC", "DAI", "WETH")


def random_rows(rng: np.random.Generator, n_accounts: int) -> list[PositionRow]:
    """Mixed books: some accounts all-stable or all-ETH debt (e-mode), some mixed,
    some with only zero amounts, each (account, chain, asset, side) once."""
    rows: dict[tuple[str, str, str, str], PositionRow] = {}
    for i in range(n_accounts):
        account = f"0x{i + 1:040x}"
        for _ in range(int(rng.integers(0, 9))):
            sym = SYMBOLS[int(rng.integers(len(SYMBOLS)))]
            side = "debt" if sym in BORROWABLE and rng.random() < 0.35 else "collateral"
            chain = CHAINS[int(rng.integers(len(CHAINS)))]
            unit = 10 ** DECIMALS[sym]
            amount = 0 if rng.random() < 0.1 else int(rng.integers(1, 10**6)) * unit // 1000
            head = amount + int(rng.integers(0, 3)) * unit
            rows[(account, chain, sym, side)] = PositionRow(
                account,
                chain,
                sym,
                side,
                head,
                amount,  # type: ignore[arg-type]
            )
        if i % 7 == 3:  # an account whose positions are all zero: no pool pairs
            rows[(account, CHAINS[0], "USDC", "collateral")] = PositionRow(
                account, CHAINS[0], "USDC", "collateral", 0, 0
            )
            zero = (CHAINS[0], "USDC", "collateral")
            for key in [k for k in rows if k[0] == account and k[1:] != zero]:
                del rows[key]
    return list(rows.values())


def bincount_sums(book: PositionBook) -> tuple[np.ndarray, np.ndarray]:
    """The sums as `rebuild_sums` computed them before the kernel: per side and chain
    one masked bincount, added in chain order."""
    n, na = book.n, book.n_assets
    size = book._acap * na
    flat = book.r_account[:n].astype(np.int64) * na + book.r_asset[:n]
    out = []
    for s in (COLLATERAL, DEBT):
        side = book.r_side[:n] == s
        sums = np.zeros(size)
        for c in range(book.n_chains):
            mask = side & (book.r_chain[:n] == c)
            sums += np.bincount(flat[mask], weights=book.r_amount[:n][mask], minlength=size)
        out.append(sums.reshape(book._acap, na))
    return out[0], out[1]


def chunked(eng: RiskEngine) -> None:
    """The layout of a first load as `_loaded` made it before the kernel: `_refresh`
    (StandardModel.rows, Pool.place) per chunk of accounts."""
    na = eng.book.n_accounts
    for lo in range(0, na, engine_module._CHUNK):
        eng._refresh(slice(lo, min(na, lo + engine_module._CHUNK)))


POOL = ("a_start", "a_cnt", "a_cap", "grp", "held")


def assert_same_pool(a: RiskEngine, b: RiskEngine) -> None:
    assert a.pool.end == b.pool.end and a.pool.holes == b.pool.holes == 0
    end = a.pool.end
    assert np.array_equal(a.pool.pc[:end], b.pool.pc[:end])
    assert np.array_equal(a.pool.pv[:end], b.pool.pv[:end])
    for f in POOL:
        x, y = getattr(a.pool, f), getattr(b.pool, f)
        assert x.dtype == y.dtype and np.array_equal(x, y), f
    assert np.array_equal(a.r_mult, b.r_mult) and np.array_equal(a.r_mmult, b.r_mmult)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_sums_kernel_equals_the_bincounts_bit_for_bit(seed: int) -> None:
    rng = np.random.default_rng(seed)
    eng = engine()
    rows = random_rows(rng, 300)
    eng.load_positions(rng.permutation(np.array(rows, dtype=object)).tolist())
    coll, debt = bincount_sums(eng.book)
    assert np.array_equal(eng.book.coll, coll) and np.array_equal(eng.book.debt, debt)
    assert eng.book.coll.shape == coll.shape and eng.book.coll.any() and eng.book.debt.any()


@pytest.mark.parametrize(("n_accounts", "chunk"), [(300, 1 << 17), (300, 100), (250, 64), (5, 64)])
def test_a_first_load_lays_the_pool_out_as_rows_and_place_did(
    n_accounts: int, chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunk sizes that leave a last chunk of 0, 50 (<= 64: spare slots) and 58
    accounts, and a book smaller than one chunk."""
    monkeypatch.setattr(engine_module, "_CHUNK", chunk)
    rows = random_rows(np.random.default_rng(n_accounts + chunk), n_accounts)
    fast = engine()
    fast._mult = {ADDRS[3]: 0.5}  # a reputation feed already set (r_mult per account)
    fast._mmult = {ADDRS[3]: 1.25}
    fast.load_positions(rows)
    slow = engine()
    slow._mult, slow._mmult = dict(fast._mult), dict(fast._mmult)
    slow.book.load(rows)
    slow._alloc(slow.book.n_accounts)
    chunked(slow)
    na = fast.book.n_accounts
    assert fast.pool.end > 0 and (fast.pool.a_cnt[:na] == 0).any()  # accounts at zero
    assert n_accounts < 50 or (fast.pool.grp[:na] >= 0).any()  # some in e-mode
    a = fast.book.account_index[ADDRS[3]]
    assert fast.r_mult[a] == 0.5 and fast.r_mmult[a] == 1.25
    assert_same_pool(fast, slow)


def test_a_second_load_places_accounts_as_before() -> None:
    """Only a fresh pool takes the one-pass layout; a load into a placed pool moves
    what outgrew its segment, as events do, and rates like one load of both."""
    rng = np.random.default_rng(9)
    rows = random_rows(rng, 200)
    eng = engine()
    eng.load_positions(rows[:150])
    eng.load_positions(rows[150:])
    one = engine()
    one.load_positions(rows)
    n = one.book.n_accounts
    assert [eng.book.account_address[i] for i in range(n)] == one.book.account_address
    assert np.array_equal(eng.X[:n], one.X[:n])
    assert np.array_equal(eng.pool.grp[:n], one.pool.grp[:n])


def test_layout_refuses_a_placed_pool() -> None:
    eng = engine()
    eng.load_positions(random_rows(np.random.default_rng(4), 20))
    with pytest.raises(ValueError, match="fresh pool"):
        eng.model.layout(eng.pool, eng.book.coll[:20], eng.book.debt[:20], slack_from=20)
