"""Book snapshots: the position book's arrays on disk, so a start-up reads them back
with numpy and replays only what the store changed since, instead of reading every
stored position (docs/performance.md "Start-up", docs/configuration.md `[store]`).

The store stays the source of truth; a snapshot is a cache of it. Invariants:

- A snapshot is the book (accounts in index order, every row's columns and exact
  amounts) with, per chain, the store position it reflects: the chain's checkpoint
  (`BookMark`) read *before* the book was copied, while the ledger was settled and this
  instance indexed every chain. Every position the store writes later is stamped with
  `updated_block >= since` (since = min(indexed_block, last_reconcile_block)): a batch
  stamps its tip, a correction the indexed block it was read at, a rollback its
  ancestor (which is the indexed block after it). The book may be ahead of the mark
  (changes applied between the read and the copy): the replay rewrites those rows with
  the same absolute values.
- A load replays, per chain, every stored position with `updated_block >= since`,
  as absolute amounts, all at once (`RiskEngine.apply_encoded`: the rows written, only
  the touched accounts re-summed and re-derived). Positions are never deleted from the
  store, so rewriting rows is the whole replay. Sums add each cell's chains in chain
  order on every path (book.py), so the ratings equal a full load's bit for bit.
- A rollback after the snapshot may stamp reverted positions below `since` (and a
  later one lower still), so a chain whose rollback count moved, whose checkpoint is
  behind the mark, or whose checkpoint at the same block has another hash, or a chain
  set that differs, makes the load fall back to reading every stored position.
- Any other doubt falls back too, with one log line naming the reason and
  `agg_book_snapshot_loads_total{result}`: no file (`missing`), a bad magic, header or
  payload digest (`corrupt`), another format version (`format`), another book config
  (chains, assets, decimals, token map: `config`), another store (its random
  `store_id`, made by migration 0004, so a store created again at the same URL is
  another) or a store moved in a way the replay cannot follow (`store`). A snapshot
  is never used when it might be wrong.
- The rows' key order (the book's key index) is stored too, under the payload digest,
  and only checked on load (book.py `import_rows`: it must sort the rows' keys
  strictly); an order that does not is not used and the keys are sorted again, so the
  index, like the sums, is the one a full load builds. The digest is computed in a
  second thread one array behind the reads; nothing read is used before it matched.
- A start may read the file ahead (`prefetch`, before the store migration): the
  result is checked by `open` exactly as a read there would be, and used once.
- Written atomically: a temporary file in the same directory, fsync, rename, fsync of
  the directory. A crash mid-write leaves the previous snapshot (and at worst a stray
  temporary file, removed by the next write).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import logging
import os
import struct
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from aggregator.risk.book import EncodedRows
from aggregator.store.chain_reads import BookMark, StoredPosition

log = logging.getLogger(__name__)

MAGIC = b"AGGBOOK\n"
# Bump when the layout or the meaning of any field changes: an older file is refused.
# 2: the rows' key order (the book's key index) after the columns.
FORMAT = 2
_HEADER_LEN = struct.Struct("<Q")
_ALIGN = 64
# (name, dtype on disk, columns): the EncodedRows columns, in file order.
_ARRAYS: tuple[tuple[str, str, int], ...] = (
    ("account", "<i4", 0),
    ("chain", "<i2", 0),
    ("asset", "<i2", 0),
    ("side", "<i1", 0),
    ("amount", "<f8", 0),
    ("limbs", "<u8", 4),
    # The rows in key order (EncodedRows.order), so a load checks the order instead of
    # sorting every key; empty when the book did not give it.
    ("order", "<i8", 0),
)


class SnapshotRejected(Exception):
    """The snapshot cannot be used; `result` is the metric label."""

    def __init__(self, result: str, reason: str) -> None:
        super().__init__(reason)
        self.result = result


@dataclass
class BookState:
    """What a snapshot holds besides the rows: the accounts and BookSync's side facts."""

    addresses: list[str]
    rows: EncodedRows
    marks: dict[str, BookMark | None]
    impossible: dict[str, list[str]] = field(default_factory=dict)
    unknown_tokens: list[tuple[str, str, int]] = field(default_factory=list)
    store_id: str | None = None


def fingerprint(
    chains: Sequence[str],
    assets: Sequence[tuple[str, int]],
    token_symbol: Mapping[tuple[str, str], str],
) -> str:
    """What a book's rows mean: chain and asset order (the row indices), decimals (the
    scaled amounts) and the token map (which stored rows became which asset)."""
    doc = {
        "chains": list(chains),
        "assets": [[s, d] for s, d in assets],
        "tokens": sorted([c, t, s] for (c, t), s in token_symbol.items()),
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def _mark_doc(m: BookMark | None) -> dict[str, Any] | None:
    if m is None:
        return None
    return {
        "indexed_block": m.indexed_block,
        "indexed_hash": m.indexed_hash,
        "last_reconcile_block": m.last_reconcile_block,
        "rollbacks": m.rollbacks,
    }


def _mark(d: dict[str, Any] | None) -> BookMark | None:
    if d is None:
        return None
    return BookMark(
        indexed_block=int(d["indexed_block"]),
        indexed_hash=d["indexed_hash"],
        last_reconcile_block=int(d["last_reconcile_block"]),
        rollbacks=int(d["rollbacks"]),
    )


def _pad(n: int) -> int:
    return -n % _ALIGN


def write(path: Path, state: BookState, fp: str) -> int:
    """Write `state` atomically to `path` (blocking: run it in a thread). Returns the
    file's size in bytes."""
    rows = state.rows
    n = int(rows.account.size)
    blob = "\n".join(state.addresses).encode("ascii")
    arrays: list[tuple[str, NDArray[Any]]] = [("addresses", np.frombuffer(blob, np.uint8))]
    for name, dtype, _cols in _ARRAYS:
        col = getattr(rows, name)
        if col is None:  # only `order` may be absent
            col = np.zeros(0, dtype)
        arrays.append((name, np.ascontiguousarray(col, dtype=dtype)))
    layout = []
    offset = 0
    for name, arr in arrays:
        layout.append({"name": name, "offset": offset, "nbytes": int(arr.nbytes)})
        offset += arr.nbytes + _pad(arr.nbytes)
    digest = hashlib.sha256()
    for _name, arr in arrays:
        digest.update(arr.reshape(-1).view(np.uint8).data)
    header = {
        "format": FORMAT,
        "fingerprint": fp,
        "written_at": time.time(),
        "n_rows": n,
        "n_accounts": len(state.addresses),
        "marks": {c: _mark_doc(m) for c, m in state.marks.items()},
        "big": [[i, view, str(v)] for i, view, v in rows.big],
        "impossible": {c: sorted(a) for c, a in state.impossible.items()},
        "unknown_tokens": [list(t) for t in state.unknown_tokens],
        "store_id": state.store_id,
        "layout": layout,
        "payload_sha256": digest.hexdigest(),
    }
    head = json.dumps(header, sort_keys=True).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    for stray in path.parent.glob(f".{path.name}.tmp-*"):
        with contextlib.suppress(OSError):
            stray.unlink()
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(MAGIC)
            f.write(_HEADER_LEN.pack(len(head)))
            f.write(head)
            f.write(hashlib.sha256(head).digest())
            start = len(MAGIC) + _HEADER_LEN.size + len(head) + 32
            f.write(b"\0" * _pad(start))
            for _name, arr in arrays:
                f.write(arr.reshape(-1).view(np.uint8).data)
                f.write(b"\0" * _pad(arr.nbytes))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return int(path.stat().st_size)


def read(path: Path, fp: str) -> tuple[BookState, float]:
    """The snapshot at `path` (blocking: run it in a thread), checked against `fp` and
    its digests; returns it and the time it was written. Raises SnapshotRejected.
    The columns are read into fresh arrays of the book's dtypes, which the book then
    adopts as its rows (no mapping of the file, no second copy)."""
    try:
        f = open(path, "rb")  # noqa: SIM115  (closed below, on every path)
    except FileNotFoundError:
        raise SnapshotRejected("missing", f"no snapshot at {path}") from None
    with f:
        size = os.fstat(f.fileno()).st_size
        header, start = _header(f, size, path)
        if header.get("format") != FORMAT:
            raise SnapshotRejected(
                "format", f"{path}: format {header.get('format')!r}, this version reads {FORMAT}"
            )
        if header.get("fingerprint") != fp:
            raise SnapshotRejected(
                "config",
                f"{path}: written for another book (chains, assets, decimals or token map "
                "differ from this config)",
            )
        try:
            return _body(f, size, header, start, path), float(header["written_at"])
        except (KeyError, TypeError, ValueError, UnicodeDecodeError) as exc:
            raise SnapshotRejected("corrupt", f"{path}: {exc}") from None


def _header(f: io.BufferedReader, size: int, path: Path) -> tuple[dict[str, Any], int]:
    if f.read(len(MAGIC)) != MAGIC:
        raise SnapshotRejected("corrupt", f"{path}: not a book snapshot (magic)")
    raw = f.read(_HEADER_LEN.size)
    if len(raw) != _HEADER_LEN.size:
        raise SnapshotRejected("corrupt", f"{path}: truncated header")
    (length,) = _HEADER_LEN.unpack(raw)
    if length > size:
        raise SnapshotRejected("corrupt", f"{path}: header length {length} > file size")
    head = f.read(length)
    check = f.read(32)
    if len(head) != length or hashlib.sha256(head).digest() != check:
        raise SnapshotRejected("corrupt", f"{path}: header checksum mismatch")
    try:
        header = json.loads(head)
    except ValueError as exc:
        raise SnapshotRejected("corrupt", f"{path}: header: {exc}") from None
    start = len(MAGIC) + _HEADER_LEN.size + length + 32
    return header, start + _pad(start)


def _body(
    f: io.BufferedReader, size: int, header: dict[str, Any], start: int, path: Path
) -> BookState:
    layout = {d["name"]: d for d in header["layout"]}
    end = start + max((d["offset"] + d["nbytes"] for d in layout.values()), default=0)
    if size < end:
        raise SnapshotRejected("corrupt", f"{path}: truncated ({size} < {end} bytes)")
    n = int(header["n_rows"])
    digest = hashlib.sha256()
    arrays: dict[str, NDArray[Any]] = {}
    # The digest runs in a second thread, one array behind the reads and in file order
    # (sha256 and readinto both release the GIL): on two cores the check costs little
    # wall time beyond the read. Nothing read is used before the digest matched.
    with ThreadPoolExecutor(1, thread_name_prefix="snapshot-digest") as hasher:
        pending: list[Future[None]] = []
        for name, dtype, width in (("addresses", "u1", 0), *_ARRAYS):
            d = layout[name]
            count = int(d["nbytes"]) // np.dtype(dtype).itemsize
            arr = np.empty(count, dtype)
            f.seek(start + int(d["offset"]))
            if f.readinto(arr.data) != arr.nbytes:
                raise SnapshotRejected("corrupt", f"{path}: {name} truncated")
            pending.append(hasher.submit(digest.update, arr.data))
            if name not in ("addresses", "order"):
                arr = arr.reshape((n, width) if width else (n,))
            arrays[name] = arr
        for job in pending:
            job.result()
    if digest.hexdigest() != header["payload_sha256"]:
        raise SnapshotRejected("corrupt", f"{path}: payload checksum mismatch")
    # Decoded straight from the array's buffer (no bytes copy of it first).
    text = str(arrays.pop("addresses").data, "ascii")
    addresses = text.split("\n") if text else []
    if len(addresses) != int(header["n_accounts"]):
        raise ValueError("account count differs from the header")
    big = [(int(i), int(view), int(v)) for i, view, v in header["big"]]
    order = arrays.pop("order")
    return BookState(
        addresses=addresses,
        # On-disk dtypes are the book's (account: its int32 row column), little-endian.
        # An order that is not the rows' key order is not trusted: the book checks it
        # and sorts the keys itself then (book.py `import_rows`).
        rows=EncodedRows(**arrays, big=big, order=order if order.size else None),
        marks={c: _mark(m) for c, m in header["marks"].items()},
        impossible={c: list(a) for c, a in header["impossible"].items()},
        unknown_tokens=[(str(c), str(t), int(k)) for c, t, k in header["unknown_tokens"]],
        store_id=header["store_id"],
    )


def replay_from(
    snap: Mapping[str, BookMark | None], now: Mapping[str, BookMark | None]
) -> dict[str, int | None]:
    """Per chain, the block from which the store's positions must be re-read over the
    snapshot (None: every position of the chain, which has no checkpoint on either
    side). Raises SnapshotRejected("store") where the store moved in a way the
    stamps cannot follow (see the module docstring)."""
    if set(snap) != set(now):
        raise SnapshotRejected(
            "store", f"chains {sorted(snap)} in the snapshot, {sorted(now)} configured"
        )
    out: dict[str, int | None] = {}
    for chain, was in snap.items():
        cur = now[chain]
        if was is None:
            out[chain] = None  # nothing was indexed then: every row written since counts
            continue
        if cur is None:
            raise SnapshotRejected("store", f"chain {chain}: checkpoint gone from the store")
        if cur.rollbacks != was.rollbacks:
            raise SnapshotRejected(
                "store",
                f"chain {chain}: {cur.rollbacks - was.rollbacks} rollback(s) since the snapshot",
            )
        if cur.indexed_block < was.indexed_block:
            raise SnapshotRejected(
                "store",
                f"chain {chain}: store at block {cur.indexed_block}, snapshot at "
                f"{was.indexed_block}",
            )
        if cur.indexed_block == was.indexed_block and cur.indexed_hash != was.indexed_hash:
            raise SnapshotRejected(
                "store", f"chain {chain}: block {cur.indexed_block} has another hash"
            )
        out[chain] = min(was.indexed_block, was.last_reconcile_block)
    return out


class MarkSource(Protocol):
    async def store_id(self) -> str | None: ...

    async def book_mark(self, chain: str) -> BookMark | None: ...

    def position_batches(
        self, chain: str, *, since_block: int | None = None
    ) -> AsyncIterator[list[StoredPosition]]: ...


class SnapshotMetrics(Protocol):
    def snapshot_load(self, result: str, written_at: float | None = None) -> None: ...

    def snapshot_write(self, result: str, written_at: float | None = None) -> None: ...


class BookSnapshots:
    """The snapshot file of one daemon: read at start, written by the `book_snapshot`
    job and at a clean stop. `export` copies the book (synchronously, so the copy is
    one consistent state); `ready` says whether a copy now would be complete (the
    ledger settled, every chain indexed here)."""

    def __init__(
        self,
        path: Path,
        *,
        fingerprint: str,
        chains: Sequence[str],
        store: MarkSource,
        metrics: SnapshotMetrics,
    ) -> None:
        self.path = path
        self.fingerprint = fingerprint
        self.chains = list(chains)
        self.store = store
        self.metrics = metrics
        self.last_written_at: float | None = None
        self.last_error: str | None = None
        self._prefetched: asyncio.Future[tuple[BookState, float]] | None = None

    def prefetch(self) -> asyncio.Future[tuple[BookState, float]]:
        """Start reading and checking the file now, in a thread, for the next `open`:
        a start calls it before the steps that precede the book load (the store
        migration, the chain id checks: mostly waiting on the store and the nodes), so
        the ~0.8 s of reading and digesting a 1M-account file overlaps them. Nothing
        read is trusted before `open` has checked it against the store as usual."""
        if self._prefetched is None:
            task = asyncio.ensure_future(asyncio.to_thread(read, self.path, self.fingerprint))
            # A start that fails before its book load never awaits it: retrieve the
            # outcome so an unread rejection is not reported as an unhandled error.
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
            self._prefetched = task
        return self._prefetched

    async def marks(self) -> dict[str, BookMark | None]:
        return {c: await self.store.book_mark(c) for c in self.chains}

    async def open(self) -> tuple[BookState, dict[str, int | None]] | None:
        """The snapshot and, per chain, where the replay starts; None (logged, counted)
        when it cannot be used."""
        t0 = time.perf_counter()
        pending, self._prefetched = self._prefetched, None
        try:
            if pending is not None:
                state, written_at = await pending
            else:
                state, written_at = await asyncio.to_thread(read, self.path, self.fingerprint)
            sid = await self.store.store_id()
            if state.store_id != sid:
                raise SnapshotRejected(
                    "store", f"written for store {state.store_id}, this store is {sid}"
                )
            since = replay_from(state.marks, await self.marks())
        except SnapshotRejected as exc:
            level = logging.INFO if exc.result == "missing" else logging.WARNING
            log.log(level, "book snapshot not used (%s): %s; loading every stored position",
                    exc.result, exc)  # fmt: skip
            self.metrics.snapshot_load(exc.result)
            return None
        self.last_written_at = written_at
        self.metrics.snapshot_load("loaded", written_at)
        log.info(
            "book snapshot %s read: %d accounts, %d positions, written %.0f s ago (%.3fs)",
            self.path, len(state.addresses), state.rows.account.size,
            time.time() - written_at, time.perf_counter() - t0,
        )  # fmt: skip
        return state, since

    async def save(
        self,
        export: Callable[[], tuple[list[str], EncodedRows]],
        ready: Callable[[], str | None],
        extras: Callable[[], tuple[dict[str, list[str]], list[tuple[str, str, int]]]],
    ) -> bool:
        """Write a snapshot if `ready()` (None, else the reason not to) holds once the
        marks are read; the file is written off the event loop. True when written."""
        sid = await self.store.store_id()
        marks = await self.marks()
        why = ready()
        if why is not None:
            log.info("book snapshot not written: %s", why)
            self.metrics.snapshot_write("skipped")
            return False
        addresses, rows = export()
        impossible, unknown = extras()
        state = BookState(addresses, rows, marks, impossible, unknown, sid)
        t0 = time.perf_counter()
        try:
            size = await asyncio.to_thread(write, self.path, state, self.fingerprint)
        except Exception as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            self.metrics.snapshot_write("failed")
            raise
        self.last_error = None
        self.last_written_at = time.time()
        self.metrics.snapshot_write("written", self.last_written_at)
        log.info(
            "book snapshot written to %s: %d accounts, %d positions, %.1f MB in %.3fs",
            self.path, len(addresses), rows.account.size, size / 1e6, time.perf_counter() - t0,
        )  # fmt: skip
        return True


__all__ = [
    "FORMAT",
    "BookSnapshots",
    "BookState",
    "SnapshotRejected",
    "fingerprint",
    "read",
    "replay_from",
    "write",
]
