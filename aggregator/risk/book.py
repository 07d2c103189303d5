"""The position book: every (account, chain, asset, side) position in flat numpy arrays.

Exact raw amounts are kept as two uint64 limbs per view (head and confirmed), which
covers every realistic balance (< 2**128) at 32 bytes per position; the rare larger
value lives in a side dict so nothing is ever rounded. The amount that counts for
risk (collateral: min(head, confirmed); debt: max(head, confirmed)) is also kept as
float64 scaled by 10**-decimals, and summed over chains into dense account x asset
matrices that the risk kernel reads. One event rewrites one row and the few matrix
cells of its (account, asset); nothing else is touched.

Three parts: `RowEncoder` validates input rows against the book's chains, assets and
decimals and encodes them as columns (it never writes the book); `KeyIndex` maps a
position key to its row; `PositionBook` owns the rows, the exact amounts, the accounts
and the dense sums, and is the only writer of all of them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from itertools import islice
from operator import itemgetter
from typing import Any, Literal, NamedTuple, cast

import numpy as np
from numpy.typing import NDArray

from aggregator.risk.kernels import book_sums_kernel
from aggregator.startup import gc_paused

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


class EncodedRows(NamedTuple):
    """A validated batch as columns, in input order: indices into the book's accounts,
    chains and assets, the side, the counted amount, the exact amounts as limbs (head
    lo, head hi, confirmed lo, hi) and the rare amounts >= 2**128 as (i, view, value).
    `order`, where the producer has it (`export_rows`: the book's key index), is the
    rows sorted by key (account, chain, asset, side); `import_rows` checks it and sorts
    the keys itself when it is absent or not that order."""

    account: NDArray[np.int64]
    chain: NDArray[np.int16]
    asset: NDArray[np.int16]
    side: NDArray[np.int8]
    amount: NDArray[np.float64]
    limbs: NDArray[np.uint64]
    big: list[tuple[int, int, int]]
    order: NDArray[np.int64] | None = None


_COLUMNS = ("account", "chain", "asset", "side", "amount", "limbs")


def _limbs(
    heads: list[int], confs: list[int]
) -> tuple[NDArray[np.uint64], list[tuple[int, int, int]]]:
    """Both views of every row as uint64 limbs; amounts >= 2**128 go to the side list
    (their limbs stay 0)."""
    limbs = np.zeros((len(heads), 4), np.uint64)
    big: list[tuple[int, int, int]] = []
    for view, given in ((0, heads), (1, confs)):
        top = max(given, default=0)
        if top >> 64 == 0:
            limbs[:, 2 * view] = np.array(given, np.uint64)
            continue
        values = given
        if top >> 128:
            big.extend((i, view, v) for i, v in enumerate(given) if v >> 128)
            values = [0 if v >> 128 else v for v in given]
        limbs[:, 2 * view] = [v & _M64 for v in values]
        limbs[:, 2 * view + 1] = [v >> 64 for v in values]
    return limbs, big


class RowEncoder:
    """Validates position rows against the book's chains, assets and decimals and
    encodes them; account addresses become indices through the `resolve` given to
    each call (the book's, which adds a new account on first sight)."""

    def __init__(self, chains: Sequence[str], assets: Sequence[str], decimals: Sequence[int]):
        if len(assets) != len(decimals):
            raise BookError("assets and decimals differ in length")
        self.chains = list(chains)
        self.assets = list(assets)
        self.chain_index = {c: i for i, c in enumerate(self.chains)}
        self.asset_index = {a: i for i, a in enumerate(self.assets)}
        self.decimals = list(decimals)
        self.pow10 = [10**d for d in self.decimals]

    def parse(self, row: PositionRow) -> tuple[str, int, int, int, int, int]:
        """One row, checked field by field: (address, chain, asset, side, head,
        confirmed); the error names the account, chain, asset and field."""
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

    def batch(
        self, rows: list[PositionRow], accounts: dict[str, int], add: Callable[[str], int]
    ) -> EncodedRows:
        """Validate and encode one batch column by column (C-level loops over the
        columns instead of per-row Python work). Any invalid input falls back to the
        row-by-row parser, which raises the error naming the offending row.
        `accounts` is the book's address -> index map, `add` adds a new address."""
        try:
            return self._columns(rows, accounts, add)
        except (BookError, KeyError, TypeError, ValueError):
            return self._rows(rows, accounts, add)

    def _columns(
        self, rows: list[PositionRow], accounts: dict[str, int], add: Callable[[str], int]
    ) -> EncodedRows:
        if set(map(len, rows)) != {6}:
            raise ValueError("a row without exactly 6 fields")
        # One C-level pass per column (zip(*rows) is several times slower here).
        addrs, chains, assets, sides, heads, confs = (
            list(map(itemgetter(i), rows)) for i in range(6)
        )
        cs = [self.chain_index[c] for c in chains]
        ts = [self.asset_index[t] for t in assets]
        sd = _SIDE_INDEX
        ss = [sd[x] for x in sides]
        for given in (heads, confs):
            if set(map(type, given)) != {int} or min(given) < 0 or max(given) > MAX_AMOUNT:
                raise ValueError("amount")
        accs = _account_ids(addrs, accounts, add)
        pw = [self.pow10[t] for t in ts]
        # Python's int / int is correctly rounded, exactly as in PositionBook.set().
        amounts = [
            (min(h, c) if x == COLLATERAL else max(h, c)) / p
            for h, c, x, p in zip(heads, confs, ss, pw, strict=True)
        ]
        return _encoded(accs, cs, ts, ss, amounts, heads=heads, confs=confs)

    def _rows(
        self, rows: list[PositionRow], accounts: dict[str, int], add: Callable[[str], int]
    ) -> EncodedRows:
        """Row-by-row parse: the fallback that names the first bad row."""
        accs: list[int] = []
        cs: list[int] = []
        ts: list[int] = []
        ss: list[int] = []
        heads: list[int] = []
        confs: list[int] = []
        amounts: list[float] = []
        for row in rows:
            addr, c, t, s, head, conf = self.parse(row)
            a = accounts.get(addr)
            if a is None:
                a = add(addr)
            accs.append(a)
            cs.append(c)
            ts.append(t)
            ss.append(s)
            heads.append(head)
            confs.append(conf)
            counted = min(head, conf) if s == COLLATERAL else max(head, conf)
            amounts.append(counted / self.pow10[t])
        return _encoded(accs, cs, ts, ss, amounts, heads=heads, confs=confs)


def _account_ids(
    addrs: list[str], accounts: dict[str, int], add: Callable[[str], int]
) -> list[int]:
    """Indices of the given addresses; a new one is normalised (validated) and added
    once, its later rows in the batch reuse it."""
    get = accounts.get
    accs = [get(x) for x in addrs]
    if None not in accs:
        return cast("list[int]", accs)
    seen: dict[str, int] = {}
    for i in [i for i, v in enumerate(accs) if v is None]:
        raw = addrs[i]
        a = seen.get(raw)
        if a is None:
            addr = normalise_address(raw)
            a = get(addr)
            if a is None:
                a = add(addr)
            seen[raw] = a
        accs[i] = a
    return accs  # type: ignore[return-value]


def _encoded(
    accs: list[int],
    cs: list[int],
    ts: list[int],
    ss: list[int],
    amounts: list[float],
    *,
    heads: list[int],
    confs: list[int],
) -> EncodedRows:
    limbs, big = _limbs(heads, confs)
    return EncodedRows(
        np.array(accs, np.int64),
        np.array(cs, np.int16),
        np.array(ts, np.int16),
        np.array(ss, np.int8),
        np.array(amounts, np.float64),
        limbs,
        big,
    )


def _given_order(
    karr: NDArray[np.int64], given: NDArray[np.int64] | None
) -> tuple[NDArray[np.int64], NDArray[np.int64] | None]:
    """`given` as int64 and the keys in its order when it sorts `karr` strictly (so it
    is a permutation of the rows and no key repeats), else (anything, None): the caller
    sorts. Checking costs one gather and one comparison, against a sort of every key."""
    empty = np.zeros(0, np.int64)
    if given is None or given.shape != karr.shape:
        return empty, None
    order = np.asarray(given, np.int64)
    if not (int(order.min()) >= 0 and int(order.max()) < karr.size):
        return empty, None
    keys = karr[order]
    if not bool(np.all(keys[1:] > keys[:-1])):
        return empty, None
    return order, keys


def _joined(parts: list[EncodedRows]) -> EncodedRows | None:
    """The batches as one set of columns (None: no rows), emptying `parts`. Column by
    column, each batch's copy dropped once joined, so the load holds about one extra
    column rather than a second copy of every batch."""
    kept = [p for p in parts if p.account.size]
    parts.clear()
    if not kept:
        return None
    big: list[tuple[int, int, int]] = []
    offset = 0
    for p in kept:
        big.extend((i + offset, view, v) for i, view, v in p.big)
        offset += p.account.size
    columns: list[list[NDArray[Any]]] = [[getattr(p, f) for p in kept] for f in _COLUMNS]
    del kept, p
    joined: dict[str, NDArray[Any]] = {}
    for name, col in zip(_COLUMNS, columns, strict=True):
        joined[name] = np.concatenate(col)
        col.clear()
    return EncodedRows(**joined, big=big)


class KeyIndex:
    """Position key -> row. Keys are dense per account (`key_span` per account), so an
    account's keys are one range of the sorted index.

    New keys first go to an unsorted dict (a lookup checks it first) and are merged into
    the sorted arrays in one pass when it grows past _PENDING_LIMIT or a vectorised
    reader needs the whole index. A key is in exactly one of the two.
    """

    def __init__(self, key_span: int) -> None:
        self.key_span = key_span
        self.keys = np.zeros(0, np.int64)
        self.rows = np.zeros(0, np.int64)
        # Where each account's keys start in the sorted index (built on demand, dropped
        # when the index changes): a gather for many accounts then costs one memory
        # access each instead of a binary search through the whole index.
        self._bounds: NDArray[np.int64] | None = None
        self._pending: dict[int, int] = {}
        self._pending_by_account: dict[int, list[int]] = {}

    def lookup(self, key: int) -> int:
        row = self._pending.get(key)
        if row is not None:
            return row
        i = int(np.searchsorted(self.keys, key))
        if i < self.keys.size and int(self.keys[i]) == key:
            return int(self.rows[i])
        return -1

    def add(self, key: int, account: int, row: int) -> None:
        """A key not in the index yet."""
        self._pending[key] = row
        self._pending_by_account.setdefault(account, []).append(row)

    def pending_full(self) -> bool:
        return len(self._pending) > _PENDING_LIMIT

    def flush(self) -> None:
        """Merge the unsorted new keys into the sorted index."""
        if not self._pending:
            return
        pk = np.fromiter(self._pending.keys(), np.int64, len(self._pending))
        pr = np.fromiter(self._pending.values(), np.int64, len(self._pending))
        order = np.argsort(pk)
        pk, pr = pk[order], pr[order]
        pos = np.searchsorted(self.keys, pk)
        self.keys = np.insert(self.keys, pos, pk)
        self.rows = np.insert(self.rows, pos, pr)
        self._bounds = None
        self._pending.clear()
        self._pending_by_account.clear()

    def adopt_sorted(self, keys: NDArray[np.int64], rows: NDArray[np.int64]) -> None:
        """Into an empty index: `keys` strictly increasing, `rows` their rows."""
        if self.keys.size or self._pending:
            raise BookError("adopt_sorted needs an empty key index")
        self.keys, self.rows = keys, rows
        self._bounds = None

    def sorted_rows(self) -> NDArray[np.int64]:
        """Every indexed row, in key order (a copy)."""
        self.flush()
        return self.rows.copy()

    def rows_of(self, account: int) -> NDArray[np.int64]:
        lo, hi = np.searchsorted(
            self.keys, [account * self.key_span, (account + 1) * self.key_span]
        )
        rows = self.rows[lo:hi]
        extra = self._pending_by_account.get(account)
        if extra:
            rows = np.concatenate([rows, np.asarray(extra, np.int64)])
        return rows

    def rows_with_lengths(
        self, accounts: NDArray[np.int64], n_accounts: int
    ) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """All rows of the given accounts, grouped by account in the given order, and
        how many rows each account has."""
        acc = np.asarray(accounts, np.int64)
        if acc.size <= 64:
            # A few accounts (one event): no index merge, which costs O(book).
            parts = [self.rows_of(int(a)) for a in acc.tolist()]
            lengths = np.array([p.size for p in parts], np.int64)
            return (np.concatenate(parts) if parts else np.zeros(0, np.int64)), lengths
        self.flush()
        bounds = self._bounds
        if bounds is None or bounds.size <= n_accounts:
            per = np.bincount(self.keys // self.key_span, minlength=n_accounts)
            bounds = self._bounds = np.concatenate([[0], np.cumsum(per)])
        lo, hi = bounds[acc], bounds[acc + 1]
        lengths = hi - lo
        total = int(lengths.sum())
        if total == 0:
            return np.zeros(0, np.int64), lengths
        starts = np.repeat(lo - np.cumsum(lengths) + lengths, lengths)
        idx = starts + np.arange(total)
        return self.rows[idx], lengths

    def find_many(self, keys: NDArray[np.int64]) -> tuple[NDArray[np.bool_], NDArray[np.int64]]:
        """(found, rows of the found keys in order) for many keys at once."""
        self.flush()
        hit = np.zeros(keys.size, bool)
        pos = np.zeros(keys.size, np.int64)
        if self.keys.size:
            pos = np.searchsorted(self.keys, keys)
            inb = pos < self.keys.size
            hit[inb] = self.keys[pos[inb]] == keys[inb]
        return hit, self.rows[pos[hit]]

    def snapshot(self) -> KeyIndex:
        """A copy for a reader off the event loop (PositionBook.snapshot): the sorted
        `keys`, `rows` and `_bounds` are shared (this class never writes them in place,
        it replaces them: `flush`, `insert_many`, `adopt_sorted`), the unsorted part
        (dicts written in place) is copied. A flush on either side then builds new
        arrays for that side alone."""
        out = KeyIndex(self.key_span)
        out.keys, out.rows, out._bounds = self.keys, self.rows, self._bounds
        out._pending = dict(self._pending)
        out._pending_by_account = {a: list(k) for a, k in self._pending_by_account.items()}
        return out

    def insert_many(
        self,
        keys: NDArray[np.int64],
        rows: NDArray[np.int64],
        order: NDArray[np.int64] | None = None,
    ) -> None:
        """Keys absent from the index (after find_many); `order`, their stable argsort
        when the caller has it, saves the sort into an empty index."""
        if not keys.size:
            return  # a replay that only rewrites rows: nothing to merge into 5M keys
        if self.keys.size:
            # A merge, not a sort of the whole index again: the new keys sorted, then
            # inserted at their places (O(index + new log new); the keys are absent
            # from the index, so where they go is unambiguous).
            o = np.argsort(keys, kind="stable") if order is None else order
            ks, rs = keys[o], rows[o]
            pos = np.searchsorted(self.keys, ks)
            self.keys = np.insert(self.keys, pos, ks)
            self.rows = np.insert(self.rows, pos, rs)
        else:
            o = np.argsort(keys, kind="stable") if order is None else order
            self.keys, self.rows = keys[o], rows[o]
        self._bounds = None


class PositionBook:
    """The rows (one per position), their exact amounts, the accounts and the dense
    account x asset sums of counted amounts. Only this class writes them."""

    def __init__(self, chains: Sequence[str], assets: Sequence[str], decimals: Sequence[int]):
        self.encoder = RowEncoder(chains, assets, decimals)
        self.chains = self.encoder.chains
        self.assets = self.encoder.assets
        self.chain_index = self.encoder.chain_index
        self.asset_index = self.encoder.asset_index
        self.decimals = self.encoder.decimals
        self.n_chains = len(self.chains)
        self.n_assets = len(self.assets)
        # Keys per account: every (chain, asset, side) slot.
        self.key_span = self.n_chains * self.n_assets * 2
        self.index = KeyIndex(self.key_span)

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
        return self.index.lookup(key)

    def flush_index(self) -> None:
        self.index.flush()

    def rows_of(self, account: int) -> NDArray[np.int64]:
        return self.index.rows_of(account)

    def rows_of_many(self, accounts: NDArray[np.int64]) -> NDArray[np.int64]:
        """All rows of the given accounts (one vectorised range gather)."""
        return self.rows_with_lengths(accounts)[0]

    def rows_with_lengths(
        self, accounts: NDArray[np.int64]
    ) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """All rows of the given accounts, grouped by account in the given order, and
        how many rows each account has."""
        return self.index.rows_with_lengths(accounts, self.n_accounts)

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

    # -- writes ---------------------------------------------------------------
    def set(self, row: PositionRow) -> int:
        """Set one position (both views); returns the account index."""
        addr, c, t, s, head, conf = self.encoder.parse(row)
        a = self.account_index.get(addr)
        if a is None:
            a = self.add_account(addr)
        key = self.key(a, c, t, s)
        r = self.index.lookup(key)
        if r < 0:
            r = self.n
            if r >= self._cap:
                self._grow_rows(r + 1)
            self.n += 1
            self.r_account[r], self.r_chain[r], self.r_asset[r], self.r_side[r] = a, c, t, s
            self.index.add(key, a, r)
        self._store_exact(r, 0, head)
        self._store_exact(r, 1, conf)
        self.r_amount[r] = counted_amount(s, head, conf) / self.encoder.pow10[t]
        # Re-sum this (account, asset, side) over chains from the rows themselves so
        # repeated updates never accumulate floating drift.
        total = 0.0
        for cc in range(self.n_chains):
            rr = self.index.lookup(self.key(a, cc, t, s))
            if rr >= 0:
                total += float(self.r_amount[rr])
        (self.coll if s == COLLATERAL else self.debt)[a, t] = total
        if self.index.pending_full():
            self.index.flush()
        return a

    def load(self, rows: Iterable[PositionRow], batch: int = 1 << 17) -> int:
        """Bulk load (no RPC): validate, append or overwrite, rebuild the sums once.

        Rows are parsed in batches into compact arrays so a multi-million-row load
        never holds more than one batch of Python objects.
        """
        parts: list[EncodedRows] = []
        it = iter(rows)
        with gc_paused():
            while chunk := list(islice(it, batch)):
                parts.append(self.encode(chunk))
            return self.load_encoded(parts)

    def encode(self, rows: Sequence[PositionRow]) -> EncodedRows:
        """One batch of a bulk load validated and encoded (`load_encoded` writes it).
        New accounts are added here, so their indices are final; the rows are not in
        the book until `load_encoded`. A caller streaming rows (the start-up read of
        the store) encodes each batch as it arrives and keeps only the columns."""
        return self.encoder.batch(list(rows), self.account_index, self.add_account)

    def load_encoded(self, parts: list[EncodedRows]) -> int:
        """Write encoded batches (in order, as `load` would the rows they came from).
        Empties `parts`: each batch is dropped as soon as its columns are joined."""
        n = self._write_encoded(parts)
        if n:
            self.rebuild_sums()
        return n

    def update_encoded(self, parts: list[EncodedRows]) -> NDArray[np.int64]:
        """Write encoded batches like `load_encoded`, but re-sum only the accounts they
        touch (what a few thousand changes need, not a pass over every row); returns
        those accounts. The sums come out as `set` leaves them."""
        touched = np.unique(np.concatenate([p.account for p in parts])) if parts else None
        if not self._write_encoded(parts) or touched is None:
            return np.zeros(0, np.int64)
        self._resum(touched)
        return touched

    def _write_encoded(self, parts: list[EncodedRows]) -> int:
        enc = _joined(parts)
        if enc is None:
            return 0
        karr = (
            (enc.account * self.n_chains + enc.chain) * self.n_assets + enc.asset
        ) * 2 + enc.side
        order = np.argsort(karr, kind="stable")
        self._refuse_repeats(enc, karr, order)
        hit, found = self.index.find_many(karr)
        new = ~hit
        n_new = int(new.sum())
        if self.n + n_new > self._cap:
            self._grow_rows(self.n + n_new)
        target = np.empty(karr.size, np.int64)
        target[hit] = found
        target[new] = np.arange(self.n, self.n + n_new)
        self._write_rows(target, hit, enc)
        del enc
        self.n += n_new
        if n_new == karr.size:
            self.index.insert_many(karr, target, order)
        else:
            del order
            self.index.insert_many(karr[new], target[new])
        return int(karr.size)

    def export_rows(self) -> tuple[list[str], EncodedRows]:
        """A copy of the book: the accounts in index order and every row, in row order,
        as encoded columns (exact amounts >= 2**128 as (row, view, value)). `import_rows`
        on an empty book with the same chains, assets and decimals rebuilds the same
        rows, accounts and sums (a book snapshot, aggregator/book_snapshot.py)."""
        n = self.n
        big = [(r, view, v) for (r, view), v in sorted(self._big.items())]
        order = self.index.sorted_rows()
        enc = EncodedRows(
            self.r_account[:n].astype(np.int64),
            self.r_chain[:n].copy(),
            self.r_asset[:n].copy(),
            self.r_side[:n].copy(),
            self.r_amount[:n].copy(),
            self.r_limbs[:n].copy(),
            big,
            order if order.size == n else None,
        )
        return list(self.account_address), enc

    def import_rows(self, addresses: list[str], enc: EncodedRows) -> int:
        """An exported book into this empty one: the accounts at the same indices and
        the rows in the same order, with the same checks of keys and the sums rebuilt
        from the rows. The columns are adopted as the book's rows when they have the
        book's dtypes and are writable (a snapshot read for this; no second copy of
        ~60 B per position; the caller gives them up), else copied. Addresses must be
        normalised."""
        if self.n or self.account_address:
            raise BookError("import_rows needs an empty book")
        index = dict(zip(addresses, range(len(addresses)), strict=True))
        if len(index) != len(addresses):
            raise BookError("import_rows: an account is listed twice")
        n = int(enc.account.size)
        for name, top in (
            ("account", len(addresses)), ("chain", self.n_chains), ("asset", self.n_assets),
            ("side", 2),
        ):  # fmt: skip
            col = getattr(enc, name)
            if col.size != n:
                raise BookError(f"import_rows: {col.size} {name} values for {n} rows")
            if n and not (int(col.min()) >= 0 and int(col.max()) < top):
                raise BookError(f"import_rows: a row's {name} index is outside the book's")
        if enc.amount.shape != (n,) or enc.limbs.shape != (n, 4):
            raise BookError("import_rows: amount or limbs of another shape than the rows")
        self._grow_accounts(max(1024, len(addresses)))
        self.account_index = index
        self.account_address = addresses
        self.r_account = np.require(enc.account, np.int32, ("C", "W"))
        self.r_chain = np.require(enc.chain, np.int16, ("C", "W"))
        self.r_asset = np.require(enc.asset, np.int16, ("C", "W"))
        self.r_side = np.require(enc.side, np.int8, ("C", "W"))
        self.r_amount = np.require(enc.amount, np.float64, ("C", "W"))
        self.r_limbs = np.require(enc.limbs, np.uint64, ("C", "W"))
        self.n = self._cap = n
        self._big = {(int(i), int(view)): v for i, view, v in enc.big}
        if n:
            karr = (
                (self.r_account.astype(np.int64) * self.n_chains + self.r_chain)
                * self.n_assets + self.r_asset
            ) * 2 + self.r_side  # fmt: skip
            order, keys = _given_order(karr, enc.order)
            if keys is None:
                order = np.argsort(karr, kind="stable")
                self._refuse_repeats(enc, karr, order)
                keys = karr[order]
            # Keys unique (checked), so rows[order] of arange(n) is `order` itself.
            self.index.adopt_sorted(keys, order)
            self.rebuild_sums()
        return n

    def _refuse_repeats(
        self, enc: EncodedRows, karr: NDArray[np.int64], order: NDArray[np.int64]
    ) -> None:
        """One load lists each position at most once."""
        ks = karr[order]
        dup = np.nonzero(ks[1:] == ks[:-1])[0]
        if dup.size:
            i = int(order[dup[0]])
            raise BookError(
                f"account {self.account_address[int(enc.account[i])]} "
                f"chain {self.chains[int(enc.chain[i])]!r} "
                f"asset {self.assets[int(enc.asset[i])]!r}: position listed twice in one load"
            )

    def _write_rows(
        self, target: NDArray[np.int64], hit: NDArray[np.bool_], enc: EncodedRows
    ) -> None:
        """Write the encoded rows at their target rows (overwritten or new)."""
        self.r_account[target] = enc.account
        self.r_chain[target] = enc.chain
        self.r_asset[target] = enc.asset
        self.r_side[target] = enc.side
        self.r_amount[target] = enc.amount
        self.r_limbs[target] = enc.limbs
        if self._big:
            for r in target[hit].tolist():
                self._big.pop((r, 0), None)
                self._big.pop((r, 1), None)
        for i, view, v in enc.big:
            self._big[(int(target[i]), view)] = v

    def snapshot(self) -> BookSnapshot:
        """The book as it is now, for a reader off the event loop while this book goes on
        writing (the API's what-if, risk/whatif.py `LedgerSnapshot.frozen`). Take it
        between two writes. Only what a write changes in place is copied, and only the
        first `n` rows / `n_accounts` accounts (not the spare capacity): the counted
        amounts `r_amount`, the big-amount dict, the key index's unsorted part, and
        the account list (its references: the snapshot's `n_accounts` stays put when
        accounts are added). Shared with the live
        book: the row ids `r_account`, `r_chain`, `r_asset`, `r_side` (a row's ids never
        change once written: a write to an existing row rewrites the same ids, new rows
        go past `n`, growth moves them to new arrays), the sorted key index (replaced,
        never written in place), the address strings and index (append-only) and the
        exact limbs (written in place: a snapshot's `exact` is not consistent; the
        what-if reads counted amounts only). The dense sums are not held: summed again
        from the snapshot's rows when read (`BookSnapshot.coll`). At 1M accounts ~50 MB
        (counted amounts and the account list) where a deep copy took ~300 MB."""
        return BookSnapshot(self)

    def collateral_of(self, accounts: NDArray[np.int64]) -> NDArray[np.float64]:
        """`coll[accounts]` (a copy): what a reader of some accounts' sums asks, which a
        BookSnapshot answers without summing every account."""
        return np.asarray(self.coll[accounts], np.float64)

    def debt_held(self, accounts: NDArray[np.int64]) -> NDArray[np.bool_]:
        """`debt[accounts] > 0`: which assets the accounts owe (as `collateral_of`)."""
        return np.asarray(self.debt[accounts] > 0)

    def rebuild_sums(self) -> None:
        """Recompute the dense account x asset sums from all rows, adding each cell's
        chains in chain order as `set` does, so the sums do not depend on the order of
        the rows (a book built by events, by a load or from a snapshot sums alike).
        One compiled pass per chain (kernels.py `book_sums_kernel`): at 1M accounts the
        six masked bincounts it replaces took 0.4-0.8 s of a start (docs/performance.md
        "Start-up"), each allocating and adding a full account x asset array."""
        n, na = self.n, self.n_assets
        coll = np.zeros((self._acap, na))
        debt = np.zeros((self._acap, na))
        book_sums_kernel(
            self.r_account, self.r_chain, self.r_asset, self.r_side, self.r_amount, n,
            self.n_chains, coll, debt,
        )  # fmt: skip
        self.coll, self.debt = coll, debt

    def _resum(self, accounts: NDArray[np.int64]) -> None:
        """`rebuild_sums` for the given accounts only."""
        rows = self.rows_of_many(accounts)
        self.coll[accounts] = 0.0
        self.debt[accounts] = 0.0
        chain, side = self.r_chain[rows], self.r_side[rows]
        for c in range(self.n_chains):
            for s, sums in ((COLLATERAL, self.coll), (DEBT, self.debt)):
                r = rows[(chain == c) & (side == s)]
                np.add.at(sums, (self.r_account[r], self.r_asset[r]), self.r_amount[r])


class BookSnapshot(PositionBook):
    """A read-only PositionBook as it was at one point (PositionBook.snapshot). Its
    arrays are partly the live book's, so every write is refused here."""

    def __init__(self, live: PositionBook) -> None:
        # Not PositionBook.__init__: the live book's parts, then its own where needed.
        n, na = live.n, live.n_accounts
        self.__dict__.update(live.__dict__)
        self.account_address = live.account_address[:na]
        self._acap, self.n, self._cap = na, n, n
        del self.__dict__["coll"], self.__dict__["debt"]  # summed on demand (below)
        self.r_amount = live.r_amount[:n].copy()
        self.r_account, self.r_chain = live.r_account[:n], live.r_chain[:n]
        self.r_asset, self.r_side = live.r_asset[:n], live.r_side[:n]
        self.r_limbs = live.r_limbs[:n]
        self._big = dict(live._big)
        self.index = live.index.snapshot()

    def _refused(self, *_: Any, **__: Any) -> Any:
        raise TypeError("a book snapshot is read-only (it shares arrays with the live book)")

    # The dense sums are not copied (122 MB at 1M accounts, 8 assets): the live book's
    # are its rows' counted amounts added per cell in chain order whichever way they
    # were written (`set`, `_resum`, `rebuild_sums`), so summing this snapshot's own
    # rows the same way gives them bit for bit as they were (tests/unit/risk/
    # test_whatif.py). Each read sums the rows again (one compiled pass): a reader
    # takes what it needs (`coll[acc]`) and drops the rest.
    def _sums(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        coll = np.zeros((self.n_accounts, self.n_assets))
        debt = np.zeros((self.n_accounts, self.n_assets))
        book_sums_kernel(
            self.r_account, self.r_chain, self.r_asset, self.r_side, self.r_amount, self.n,
            self.n_chains, coll, debt,
        )  # fmt: skip
        return coll, debt

    def collateral_of(self, accounts: NDArray[np.int64]) -> NDArray[np.float64]:
        """The accounts' collateral sums from their rows alone: per chain in chain order
        (one row per account, chain, asset and side, so each chain adds one amount to
        a cell, as the live book and `_sums` add them), bit for bit `coll[accounts]`."""
        acc = np.asarray(accounts, np.int64)
        out = np.zeros((acc.size, self.n_assets))
        rows, lengths = self.rows_with_lengths(acc)
        pos = np.repeat(np.arange(acc.size), lengths)
        coll = self.r_side[rows] == COLLATERAL
        chain = self.r_chain[rows]
        for c in range(self.n_chains):
            m = coll & (chain == c)
            np.add.at(out, (pos[m], self.r_asset[rows[m]]), self.r_amount[rows[m]])
        return out

    def debt_held(self, accounts: NDArray[np.int64]) -> NDArray[np.bool_]:
        """`debt[accounts] > 0` from the rows: a sum of amounts >= 0 is > 0 exactly when
        one of them is."""
        held = np.zeros((self.n_accounts, self.n_assets), np.bool_)
        m = (self.r_side == DEBT) & (self.r_amount > 0)
        held[self.r_account[m], self.r_asset[m]] = True
        return held[accounts]

    @property
    def coll(self) -> NDArray[np.float64]:
        return self._sums()[0]

    @coll.setter
    def coll(self, _: Any) -> None:
        self._refused()

    @property
    def debt(self) -> NDArray[np.float64]:
        return self._sums()[1]

    @debt.setter
    def debt(self, _: Any) -> None:
        self._refused()

    set = load = load_encoded = update_encoded = import_rows = _refused
    add_account = rebuild_sums = _write_rows = _store_exact = _resum = _refused
    _grow_rows = _grow_accounts = _write_encoded = _refused
