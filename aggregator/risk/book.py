"""The position book: every (account, chain, asset, side) position in flat numpy arrays.

Exact raw amounts are kept as two uint64 limbs per view (head and confirmed), which
covers every realistic balance (< 2**128) at 32 bytes per position; the rare larger
value lives in a side dict so nothing is ever rounded. The amount that counts for
risk (collateral: min(head, confirmed); debt: max(head, confirmed)) is also kept as
float64 scaled by 10**-decimals, and summed over chains into dense account x asset
matrices that the risk kernel reads. One event rewrites one row and the few matrix
cells of its (account, asset); nothing else is touched.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from itertools import islice
from operator import itemgetter
from typing import Any, Literal, NamedTuple

import numpy as np
from numpy.typing import NDArray

Side = Literal["collateral", "debt"]
SIDES: tuple[Side, Side] = ("collateral", "debt")
COLLATERAL = 0
DEBT = 1
MAX_AMOUNT = 2**256 - 1

_M64 = (1 << 64) - 1
_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
# Below this many unsorted new keys a lookup checks a dict; above it they are merged
# into the sorted index (an O(n) copy), which amortises to a few microseconds per append.
_PENDING_LIMIT = 4096
_SIDE_INDEX = {"collateral": COLLATERAL, "debt": DEBT}


class PositionRow(NamedTuple):
    """One position as the ledger sees it: exact raw amounts in both finality views."""

    account: str
    chain: str
    asset: str
    side: Side
    head: int
    confirmed: int


class BookError(ValueError):
    """Bad position input; the message names the account, chain, asset and field."""


def normalise_address(address: str) -> str:
    if not isinstance(address, str) or not _ADDRESS.match(address):
        raise BookError(f"account {address!r}: not a 0x-prefixed 20-byte hex address")
    return address.lower()


def counted_amount(side: int, head: int, confirmed: int) -> int:
    """The amount that counts for risk under asymmetric finality.

    A deposit raises collateral only once confirmed, a withdrawal lowers it at the
    head: min(head, confirmed). A borrow raises debt at the head, a repayment lowers
    it only once confirmed: max(head, confirmed).
    """
    return min(head, confirmed) if side == COLLATERAL else max(head, confirmed)


class PositionBook:
    def __init__(self, chains: Sequence[str], assets: Sequence[str], decimals: Sequence[int]):
        if len(assets) != len(decimals):
            raise BookError("assets and decimals differ in length")
        self.chains = list(chains)
        self.assets = list(assets)
        self.chain_index = {c: i for i, c in enumerate(self.chains)}
        self.asset_index = {a: i for i, a in enumerate(self.assets)}
        self.decimals = list(decimals)
        self._pow10 = [10**d for d in self.decimals]
        self.n_chains = len(self.chains)
        self.n_assets = len(self.assets)
        # Keys per account: every (chain, asset, side) slot.
        self.key_span = self.n_chains * self.n_assets * 2

        self.account_index: dict[str, int] = {}
        self.account_address: list[str] = []
        self._acap = 0
        self.coll = np.zeros((0, self.n_assets))  # counted collateral, summed over chains
        self.debt = np.zeros((0, self.n_assets))  # counted debt, summed over chains

        self.n = 0
        self._cap = 0
        self.r_account = np.zeros(0, np.int32)
        self.r_chain = np.zeros(0, np.int16)
        self.r_asset = np.zeros(0, np.int16)
        self.r_side = np.zeros(0, np.int8)
        self.r_amount = np.zeros(0)  # counted amount, scaled by 10**-decimals
        self.r_limbs = np.zeros((0, 4), np.uint64)  # head lo, head hi, confirmed lo, hi
        self._big: dict[tuple[int, int], int] = {}  # (row, view) -> amount >= 2**128

        self._sorted_keys = np.zeros(0, np.int64)
        self._sorted_rows = np.zeros(0, np.int64)
        # Where each account's keys start in the sorted index (built on demand, dropped
        # when the index changes): a gather for many accounts then costs one memory
        # access each instead of a binary search through the whole index.
        self._bounds: NDArray[np.int64] | None = None
        self._pending: dict[int, int] = {}
        self._pending_by_account: dict[int, list[int]] = {}

    # -- accounts -------------------------------------------------------------
    @property
    def n_accounts(self) -> int:
        return len(self.account_address)

    def find_account(self, address: str) -> int | None:
        return self.account_index.get(normalise_address(address))

    def add_account(self, addr: str) -> int:
        idx = len(self.account_address)
        if idx >= self._acap:
            self._grow_accounts(max(1024, 2 * self._acap, idx + 1))
        self.account_index[addr] = idx
        self.account_address.append(addr)
        return idx

    def _grow_accounts(self, cap: int) -> None:
        for name in ("coll", "debt"):
            old = getattr(self, name)
            new = np.zeros((cap, self.n_assets))
            new[: old.shape[0]] = old
            setattr(self, name, new)
        self._acap = cap

    # -- rows -----------------------------------------------------------------
    def _grow_rows(self, need: int) -> None:
        cap = max(1024, 2 * self._cap, need)
        for name in ("r_account", "r_chain", "r_asset", "r_side", "r_amount"):
            old = getattr(self, name)
            new = np.zeros(cap, old.dtype)
            new[: self.n] = old[: self.n]
            setattr(self, name, new)
        limbs = np.zeros((cap, 4), np.uint64)
        limbs[: self.n] = self.r_limbs[: self.n]
        self.r_limbs = limbs
        self._cap = cap

    def key(self, account: int, chain: int, asset: int, side: int) -> int:
        return ((account * self.n_chains + chain) * self.n_assets + asset) * 2 + side

    def lookup(self, key: int) -> int:
        row = self._pending.get(key)
        if row is not None:
            return row
        i = int(np.searchsorted(self._sorted_keys, key))
        if i < self._sorted_keys.size and int(self._sorted_keys[i]) == key:
            return int(self._sorted_rows[i])
        return -1

    def flush_index(self) -> None:
        """Merge the unsorted new keys into the sorted index."""
        if not self._pending:
            return
        pk = np.fromiter(self._pending.keys(), np.int64, len(self._pending))
        pr = np.fromiter(self._pending.values(), np.int64, len(self._pending))
        order = np.argsort(pk)
        pk, pr = pk[order], pr[order]
        pos = np.searchsorted(self._sorted_keys, pk)
        self._sorted_keys = np.insert(self._sorted_keys, pos, pk)
        self._sorted_rows = np.insert(self._sorted_rows, pos, pr)
        self._bounds = None
        self._pending.clear()
        self._pending_by_account.clear()

    def rows_of(self, account: int) -> NDArray[np.int64]:
        lo, hi = np.searchsorted(
            self._sorted_keys, [account * self.key_span, (account + 1) * self.key_span]
        )
        rows = self._sorted_rows[lo:hi]
        extra = self._pending_by_account.get(account)
        if extra:
            rows = np.concatenate([rows, np.asarray(extra, np.int64)])
        return rows

    def rows_of_many(self, accounts: NDArray[np.int64]) -> NDArray[np.int64]:
        """All rows of the given accounts (one vectorised range gather)."""
        return self.rows_with_lengths(accounts)[0]

    def rows_with_lengths(
        self, accounts: NDArray[np.int64]
    ) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """All rows of the given accounts, grouped by account in the given order, and
        how many rows each account has."""
        acc = np.asarray(accounts, np.int64)
        if acc.size <= 64:
            # A few accounts (one event): no index merge, which costs O(book).
            parts = [self.rows_of(int(a)) for a in acc.tolist()]
            lengths = np.array([p.size for p in parts], np.int64)
            return (np.concatenate(parts) if parts else np.zeros(0, np.int64)), lengths
        self.flush_index()
        bounds = self._bounds
        if bounds is None or bounds.size <= self.n_accounts:
            per = np.bincount(self._sorted_keys // self.key_span, minlength=self.n_accounts)
            bounds = self._bounds = np.concatenate([[0], np.cumsum(per)])
        lo, hi = bounds[acc], bounds[acc + 1]
        lengths = hi - lo
        total = int(lengths.sum())
        if total == 0:
            return np.zeros(0, np.int64), lengths
        starts = np.repeat(lo - np.cumsum(lengths) + lengths, lengths)
        idx = starts + np.arange(total)
        return self._sorted_rows[idx], lengths

    # -- exact amounts --------------------------------------------------------
    def _store_exact(self, row: int, view: int, amount: int) -> None:
        self._big.pop((row, view), None)
        if amount >> 128:
            self._big[(row, view)] = amount
            self.r_limbs[row, 2 * view] = 0
            self.r_limbs[row, 2 * view + 1] = 0
        else:
            self.r_limbs[row, 2 * view] = amount & _M64
            self.r_limbs[row, 2 * view + 1] = amount >> 64

    def exact(self, row: int) -> tuple[int, int]:
        """(head, confirmed) raw amounts of a row, exact."""
        out = []
        for view in (0, 1):
            big = self._big.get((row, view))
            if big is not None:
                out.append(big)
            else:
                lo, hi = self.r_limbs[row, 2 * view], self.r_limbs[row, 2 * view + 1]
                out.append((int(hi) << 64) | int(lo))
        return out[0], out[1]

    # -- input validation -----------------------------------------------------
    def _parse(self, row: PositionRow) -> tuple[str, int, int, int, int, int]:
        try:
            account, chain, asset, side, head, confirmed = row
        except (TypeError, ValueError):
            raise BookError(f"position row {row!r}: expected 6 fields") from None
        addr = normalise_address(account)
        where = f"account {addr} chain {chain!r} asset {asset!r}"
        c = self.chain_index.get(chain)
        if c is None:
            raise BookError(f"{where}: unknown chain {chain!r}")
        t = self.asset_index.get(asset)
        if t is None:
            raise BookError(f"{where}: unknown asset {asset!r}")
        if side == "collateral":
            s = COLLATERAL
        elif side == "debt":
            s = DEBT
        else:
            raise BookError(f"{where}: side must be 'collateral' or 'debt', got {side!r}")
        for name, value in (("head", head), ("confirmed", confirmed)):
            if type(value) is not int:
                raise BookError(f"{where} {side}: {name} must be an int, got {value!r}")
            if value < 0 or value > MAX_AMOUNT:
                raise BookError(f"{where} {side}: {name} {value} is outside 0..2**256-1")
        return addr, c, t, s, head, confirmed

    # -- writes ---------------------------------------------------------------
    def set(self, row: PositionRow) -> int:
        """Set one position (both views); returns the account index."""
        addr, c, t, s, head, conf = self._parse(row)
        a = self.account_index.get(addr)
        if a is None:
            a = self.add_account(addr)
        key = self.key(a, c, t, s)
        r = self.lookup(key)
        if r < 0:
            r = self.n
            if r >= self._cap:
                self._grow_rows(r + 1)
            self.n += 1
            self.r_account[r], self.r_chain[r], self.r_asset[r], self.r_side[r] = a, c, t, s
            self._pending[key] = r
            self._pending_by_account.setdefault(a, []).append(r)
        self._store_exact(r, 0, head)
        self._store_exact(r, 1, conf)
        self.r_amount[r] = counted_amount(s, head, conf) / self._pow10[t]
        # Re-sum this (account, asset, side) over chains from the rows themselves so
        # repeated updates never accumulate floating drift.
        total = 0.0
        for cc in range(self.n_chains):
            rr = self.lookup(self.key(a, cc, t, s))
            if rr >= 0:
                total += float(self.r_amount[rr])
        (self.coll if s == COLLATERAL else self.debt)[a, t] = total
        if len(self._pending) > _PENDING_LIMIT:
            self.flush_index()
        return a

    def _parse_batch(self, rows: list[PositionRow]) -> dict[str, Any]:
        """Validate and encode one batch column by column (C-level loops over the
        columns instead of per-row Python work). Any invalid input falls back to the
        row-by-row parser, which raises the error naming the offending row."""
        try:
            return self._parse_columns(rows)
        except (BookError, KeyError, TypeError, ValueError):
            return self._parse_rows(rows)

    def _parse_columns(self, rows: list[PositionRow]) -> dict[str, Any]:
        if set(map(len, rows)) != {6}:
            raise ValueError("a row without exactly 6 fields")
        # One C-level pass per column (zip(*rows) is several times slower here).
        accounts, chains, assets, sides, heads, confs = (
            list(map(itemgetter(i), rows)) for i in range(6)
        )
        cs = [self.chain_index[c] for c in chains]
        ts = [self.asset_index[t] for t in assets]
        sd = _SIDE_INDEX
        ss = [sd[x] for x in sides]
        for given in (heads, confs):
            if set(map(type, given)) != {int} or min(given) < 0 or max(given) > MAX_AMOUNT:
                raise ValueError("amount")
        get = self.account_index.get
        accs = [get(x) for x in accounts]
        if None in accs:
            seen: dict[str, int] = {}  # a new account's later rows in this batch
            for i in [i for i, v in enumerate(accs) if v is None]:
                raw = accounts[i]
                a = seen.get(raw)
                if a is None:
                    addr = normalise_address(raw)
                    a = get(addr)
                    if a is None:
                        a = self.add_account(addr)
                    seen[raw] = a
                accs[i] = a
        pw = [self._pow10[t] for t in ts]
        # Python's int / int is correctly rounded, exactly as in set().
        amounts = [
            (min(h, c) if x == COLLATERAL else max(h, c)) / p
            for h, c, x, p in zip(heads, confs, ss, pw, strict=True)
        ]
        n = len(rows)
        out: dict[str, Any] = {
            "account": np.array(accs, np.int64),
            "chain": np.array(cs, np.int16),
            "asset": np.array(ts, np.int16),
            "side": np.array(ss, np.int8),
            "amount": np.array(amounts, np.float64),
            "limbs": np.zeros((n, 4), np.uint64),
            "big": [],
        }
        for view, given in ((0, heads), (1, confs)):
            top = max(given, default=0)
            if top >> 64 == 0:
                out["limbs"][:, 2 * view] = np.array(given, np.uint64)
                continue
            values = given
            if top >> 128:
                out["big"].extend((i, view, v) for i, v in enumerate(given) if v >> 128)
                values = [0 if v >> 128 else v for v in given]
            out["limbs"][:, 2 * view] = [v & _M64 for v in values]
            out["limbs"][:, 2 * view + 1] = [v >> 64 for v in values]
        return out

    def _parse_rows(self, rows: list[PositionRow]) -> dict[str, Any]:
        """Row-by-row parse: the fallback that names the first bad row."""
        accs: list[int] = []
        cs: list[int] = []
        ts: list[int] = []
        ss: list[int] = []
        heads: list[int] = []
        confs: list[int] = []
        amounts: list[float] = []
        for row in rows:
            addr, c, t, s, head, conf = self._parse(row)
            a = self.account_index.get(addr)
            if a is None:
                a = self.add_account(addr)
            accs.append(a)
            cs.append(c)
            ts.append(t)
            ss.append(s)
            heads.append(head)
            confs.append(conf)
            counted = min(head, conf) if s == COLLATERAL else max(head, conf)
            amounts.append(counted / self._pow10[t])
        out: dict[str, Any] = {
            "account": np.array(accs, np.int64),
            "chain": np.array(cs, np.int16),
            "asset": np.array(ts, np.int16),
            "side": np.array(ss, np.int8),
            "amount": np.array(amounts, np.float64),
            "limbs": np.zeros((len(rows), 4), np.uint64),
            "big": [],
        }
        for view, given in ((0, heads), (1, confs)):
            values = given
            if max(given, default=0) >> 128:
                out["big"].extend((i, view, v) for i, v in enumerate(given) if v >> 128)
                values = [0 if v >> 128 else v for v in given]
            out["limbs"][:, 2 * view] = [v & _M64 for v in values]
            out["limbs"][:, 2 * view + 1] = [v >> 64 for v in values]
        return out

    def load(self, rows: Iterable[PositionRow], batch: int = 1 << 17) -> int:
        """Bulk load (no RPC): validate, append or overwrite, rebuild the sums once.

        Rows are parsed in batches into compact arrays so a multi-million-row load
        never holds more than one batch of Python objects.
        """
        parts: list[dict[str, Any]] = []
        it = iter(rows)
        offset = 0
        big: list[tuple[int, int, int]] = []
        while chunk := list(islice(it, batch)):
            part = self._parse_batch(chunk)
            big.extend((i + offset, view, v) for i, view, v in part["big"])
            offset += len(chunk)
            parts.append(part)
        if not parts:
            return 0
        acc = np.concatenate([p["account"] for p in parts])
        chain = np.concatenate([p["chain"] for p in parts])
        asset = np.concatenate([p["asset"] for p in parts])
        side = np.concatenate([p["side"] for p in parts])
        amount = np.concatenate([p["amount"] for p in parts])
        limbs = np.concatenate([p["limbs"] for p in parts])
        del parts
        m = acc.size
        karr = ((acc * self.n_chains + chain) * self.n_assets + asset) * 2 + side
        order = np.argsort(karr, kind="stable")
        ks = karr[order]
        dup = np.nonzero(ks[1:] == ks[:-1])[0]
        if dup.size:
            i = int(order[dup[0]])
            raise BookError(
                f"account {self.account_address[int(acc[i])]} "
                f"chain {self.chains[int(chain[i])]!r} asset {self.assets[int(asset[i])]!r}: "
                "position listed twice in one load"
            )
        self.flush_index()
        hit = np.zeros(m, bool)
        pos = np.zeros(m, np.int64)
        if self._sorted_keys.size:
            pos = np.searchsorted(self._sorted_keys, karr)
            inb = pos < self._sorted_keys.size
            hit[inb] = self._sorted_keys[pos[inb]] == karr[inb]
        new = ~hit
        n_new = int(new.sum())
        if self.n + n_new > self._cap:
            self._grow_rows(self.n + n_new)
        target = np.empty(m, np.int64)
        target[hit] = self._sorted_rows[pos[hit]]
        target[new] = np.arange(self.n, self.n + n_new)
        self.r_account[target] = acc
        self.r_chain[target] = chain
        self.r_asset[target] = asset
        self.r_side[target] = side
        self.r_amount[target] = amount
        self.r_limbs[target] = limbs
        if self._big:
            for r in target[hit].tolist():
                self._big.pop((r, 0), None)
                self._big.pop((r, 1), None)
        for i, view, v in big:
            self._big[(int(target[i]), view)] = v
        self.n += n_new
        if self._sorted_keys.size:
            merged_k = np.concatenate([self._sorted_keys, karr[new]])
            merged_r = np.concatenate([self._sorted_rows, target[new]])
            o = np.argsort(merged_k, kind="stable")
            self._sorted_keys, self._sorted_rows = merged_k[o], merged_r[o]
        else:
            self._sorted_keys, self._sorted_rows = ks, target[order]
        self._bounds = None
        self.rebuild_sums()
        return m

    def rebuild_sums(self) -> None:
        """Recompute the dense account x asset sums from all rows."""
        n, na = self.n, self.n_assets
        size = self._acap * na
        flat = self.r_account[:n].astype(np.int64) * na + self.r_asset[:n]
        for s, name in ((COLLATERAL, "coll"), (DEBT, "debt")):
            mask = self.r_side[:n] == s
            sums = np.bincount(flat[mask], weights=self.r_amount[:n][mask], minlength=size)
            # bincount returns int64 when there is nothing to count.
            setattr(self, name, sums.astype(np.float64, copy=False).reshape(self._acap, na))
