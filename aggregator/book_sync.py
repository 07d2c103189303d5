"""Store -> book: the indexed positions loaded into the risk engine's book, and kept
right against the chain.

Invariants:
- Loading needs no RPC: a restart serves the book from the store alone.
- A stored position no chain can hold (an amount outside 0..MAX_AMOUNT) never reaches
  the book. Its account waits in `impossible` until a reconciliation against the vault
  (collateralOf/debtOf; the chain's value wins, as a correction event) repairs it; at
  start an account that cannot be repaired stops the start with its name.
- A position in a token no [[assets]] entry names is ignored for risk, with one warning
  per (chain, token) and a count.
- Only the instance that indexes a chain repairs or reconciles it (owns_index).
- With a book snapshot (`[store] snapshot_path`), the load is the snapshot's book plus
  every position the store wrote since its marks, or, when the snapshot cannot be
  trusted, the full read (book_snapshot.py states when).
- Every row handed to the book carries the pending-claim hold of the cross-chain seize
  claims not yet settled (claim_holds.py): the recompute path reads them with the
  positions, and every load ends by re-reading the accounts that ever had a claim, so
  a hold settled after a snapshot was written does not outlive it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from aggregator.book_snapshot import BookSnapshots, fingerprint
from aggregator.claim_holds import bonus_bps, hold_amount, with_holds
from aggregator.config import AppConfig
from aggregator.metrics import Metrics
from aggregator.risk.book import MAX_AMOUNT, EncodedRows, PositionRow
from aggregator.startup import StartupError, gc_paused
from aggregator.store.chain_reads import StoredPosition
from chains.indexer import ChainIndexer
from chains.rpc import RpcError
from chains.types import Position, SeizeClaim
from chains.units import decimal_text

log = logging.getLogger(__name__)


class PositionStore(Protocol):
    async def positions(
        self, chain: str, accounts: Iterable[str] | None = None
    ) -> list[Position]: ...

    def position_batches(
        self, chain: str, *, since_block: int | None = None
    ) -> AsyncIterator[list[StoredPosition]]: ...

    async def pending_claims(self, accounts: Iterable[str] | None = None) -> list[SeizeClaim]: ...

    async def claim_accounts(self) -> set[str]: ...


class BookTarget(Protocol):
    """Where loaded positions go (the risk engine): batch by batch, then all at once;
    or a snapshot's book, then the positions written since, at once."""

    def encode_positions(self, rows: Sequence[PositionRow]) -> EncodedRows: ...

    def load_encoded(self, parts: list[EncodedRows]) -> int: ...

    def restore_book(self, addresses: list[str], rows: EncodedRows) -> int: ...

    def apply_encoded(self, parts: list[EncodedRows]) -> int: ...


def token_symbols(cfg: AppConfig) -> dict[tuple[str, str], str]:
    """(chain, token lower-case) -> asset symbol: which stored positions count as what."""
    return {
        (chain, token.lower()): a.symbol for a in cfg.assets for chain, token in a.tokens.items()
    }


def book_fingerprint(cfg: AppConfig) -> str:
    """What a book snapshot must have been written for (book_snapshot.fingerprint)."""
    return fingerprint(
        cfg.chain_names, [(a.symbol, a.decimals) for a in cfg.assets], token_symbols(cfg)
    )


class BookSync:
    def __init__(
        self,
        cfg: AppConfig,
        repo: PositionStore,
        *,
        metrics: Metrics,
        indexers: Mapping[str, ChainIndexer],
        owns_index: Callable[[str], bool],
        recompute: Callable[[Iterable[str]], Awaitable[None]],
        snapshots: BookSnapshots | None = None,
    ) -> None:
        self.repo = repo
        self.snapshots = snapshots
        self.chains = [c.name for c in cfg.chains]
        self.metrics = metrics
        self._indexers = indexers  # live: chains start and stop under their leases
        self._owns_index = owns_index
        self._recompute = recompute
        self.token_symbol = token_symbols(cfg)
        self.decimals = {a.symbol: a.decimals for a in cfg.assets}
        self.hold_bonus_bps = bonus_bps(a.liquidation_bonus for a in cfg.assets)
        # Unsettled cross-chain seize claims by account (lower-case), as last read.
        self.claims: dict[str, list[SeizeClaim]] = {}
        self._unheld_claims: set[str] = set()  # claim ids in unconfigured tokens, logged
        metrics.claims_pending.set_function(
            lambda: float(sum(len(c) for c in self.claims.values()))
        )
        self.unknown_tokens: dict[tuple[str, str], int] = {}
        # chain -> accounts whose stored positions are impossible, awaiting repair.
        self.impossible: dict[str, set[str]] = {}
        self.loaded = False

    # ------------------------------------------------------------ rows
    def _row(
        self, chain: str, account: str, token: str, kind: str, *, head: int, confirmed: int
    ) -> PositionRow | None:
        """A stored position as a book row; None (counted, logged) for a token no
        asset names or amounts no chain can hold."""
        key = (chain, token.lower())
        symbol = self.token_symbol.get(key)
        if symbol is None:
            if key not in self.unknown_tokens:
                log.warning(
                    "chain %s: vault position in unconfigured token %s (account %s) is ignored "
                    "for risk; add it to [[assets]] to count it",
                    chain,
                    token,
                    account,
                )
            self.unknown_tokens[key] = self.unknown_tokens.get(key, 0) + 1
            return None
        if not (0 <= head <= MAX_AMOUNT and 0 <= confirmed <= MAX_AMOUNT):
            # The store says something the chain cannot hold (e.g. debt below zero).
            # Counting it would be a wrong number and refusing the account forever a
            # dead daemon: keep it out of the book and repair it from the chain.
            log.error(
                "chain %s account %s %s %s: stored amounts head %d / confirmed %d are "
                "impossible; repairing from the chain",
                chain,
                account,
                symbol,
                kind,
                head,
                confirmed,
                extra={"chain": chain, "account": account},
            )
            self.impossible.setdefault(chain, set()).add(account)
            return None
        return PositionRow(account, chain, symbol, kind, head, confirmed)  # type: ignore[arg-type]

    def rows(self, positions: Iterable[Position]) -> list[PositionRow]:
        rows = []
        for p in positions:
            head, conf = p.head_amount, p.confirmed_amount
            r = self._row(p.chain, p.account, p.token, p.kind, head=head, confirmed=conf)
            if r is not None:
                rows.append(r)
        return rows

    def stored_rows(
        self, chain: str, batch: Iterable[StoredPosition], spelled: dict[str, str | None]
    ) -> list[PositionRow]:
        """A batch of the start-up read as book rows, with the checks of `rows`: the
        common row (a known token, amounts in range) costs a dict lookup and a range
        check; anything else takes `_row`, which counts and logs it. `spelled` caches
        the symbol of each token as the store spells it, across batches."""
        out: list[PositionRow] = []
        for account, token, kind, head, confirmed in batch:
            symbol = spelled.get(token)
            if symbol is None and token not in spelled:
                symbol = spelled[token] = self.token_symbol.get((chain, token.lower()))
            if symbol is not None and 0 <= head <= MAX_AMOUNT and 0 <= confirmed <= MAX_AMOUNT:
                out.append(PositionRow(account, chain, symbol, kind, head, confirmed))  # type: ignore[arg-type]
            else:
                r = self._row(chain, account, token, kind, head=head, confirmed=confirmed)
                if r is not None:
                    out.append(r)
        return out

    async def positions(self, accounts: list[str] | None = None) -> list[PositionRow]:
        """The stored positions of `accounts` (None: all) on every chain, as book rows,
        with the holds of their unsettled cross-chain seize claims."""
        rows: list[PositionRow] = []
        for chain in self.chains:
            rows += self.rows(await self.repo.positions(chain, accounts))
        claims = await self.repo.pending_claims(accounts)
        if accounts is None:
            self.claims = {}
        else:
            for a in accounts:
                self.claims.pop(a.lower(), None)
        for c in claims:
            self.claims.setdefault(c.account.lower(), []).append(c)
        held, unknown = with_holds(rows, claims, self.token_symbol, self.hold_bonus_bps)
        for c in unknown:
            # Once per claim: every recompute of the account reads it again.
            if c.ref in self._unheld_claims:
                continue
            self._unheld_claims.add(c.ref)
            log.warning(
                "chain %s: cross-chain seize claim %s of %s is in unconfigured token %s; "
                "nothing is held for it",
                c.chain, c.ref, c.account, c.token,
            )  # fmt: skip
        return held

    def claim_view(self, address: str) -> list[dict[str, Any]]:
        """The account's unsettled cross-chain seize claims as the API shows them: what
        was repaid and what is held (exact decimal strings of the debt asset)."""
        out = []
        for c in self.claims.get(address.lower(), []):
            symbol = self.token_symbol.get((c.chain, c.token.lower()))
            if symbol is None:
                continue
            d = self.decimals[symbol]
            out.append({
                "claim_id": c.ref, "chain": c.chain, "asset": symbol,
                "repaid": decimal_text(c.amount, d),
                "held": decimal_text(hold_amount(c.amount, self.hold_bonus_bps), d),
                "block_number": c.block_number,
            })  # fmt: skip
        return out

    async def _load_holds(self, book: BookTarget) -> None:
        """Re-read every account that ever had a claim, with its holds (the stored rows
        carry none, and a snapshot's may be settled since)."""
        accounts = sorted(await self.repo.claim_accounts())
        if accounts:
            book.apply_encoded([book.encode_positions(await self.positions(accounts))])

    async def load(self, book: BookTarget) -> None:
        """Every chain's stored positions into the book, streamed: each batch read
        from the store is checked and encoded at once, so the load holds one batch of
        Python objects and the compact columns of the rest (docs/performance.md
        "Start-up"), never the whole table as objects."""
        t0 = time.perf_counter()
        if self.snapshots is not None and await self._load_snapshot(book, self.snapshots):
            return
        parts: list[EncodedRows] = []
        with gc_paused():
            for chain in self.chains:
                spelled: dict[str, str | None] = {}
                async for batch in self.repo.position_batches(chain):
                    parts.append(book.encode_positions(self.stored_rows(chain, batch, spelled)))
            n = book.load_encoded(parts)
        await self._load_holds(book)
        self.loaded = True
        log.info("book loaded: %d positions in %.3fs (no RPC)", n, time.perf_counter() - t0)

    async def _load_snapshot(self, book: BookTarget, snapshots: BookSnapshots) -> bool:
        """The snapshot's book, then every position the store wrote since its marks
        (book_snapshot.py); False when there is no usable snapshot."""
        t0 = time.perf_counter()
        got = await snapshots.open()
        if got is None:
            return False
        state, since = got
        with gc_paused():
            n = book.restore_book(state.addresses, state.rows)
        for chain, accounts in state.impossible.items():
            self.impossible.setdefault(chain, set()).update(accounts)
        for chain, token, count in state.unknown_tokens:
            self.unknown_tokens[(chain, token)] = count
        del state
        rows: list[PositionRow] = []
        for chain in self.chains:
            spelled: dict[str, str | None] = {}
            async for batch in self.repo.position_batches(chain, since_block=since[chain]):
                rows += self.stored_rows(chain, batch, spelled)
        if rows:
            with gc_paused():
                book.apply_encoded([book.encode_positions(rows)])
        await self._load_holds(book)
        self.loaded = True
        log.info(
            "book loaded from the snapshot: %d positions, %d written since replayed, in "
            "%.3fs (no RPC)", n, len(rows), time.perf_counter() - t0,
        )  # fmt: skip
        return True

    # ------------------------------------------------------------ repair
    async def repair(self, *, at_start: bool = False) -> None:
        """Reconcile the accounts whose stored positions were impossible, then load
        them. At start an account that cannot be repaired stops the start with its name:
        serving or pushing a number known to be wrong is worse than not starting."""
        pending, self.impossible = self.impossible, {}
        deferred: dict[str, set[str]] = {}
        for chain, accounts in pending.items():
            indexer = self._indexers.get(chain)
            if indexer is None and at_start:
                raise StartupError(
                    f"chain {chain}: stored positions of {sorted(accounts)} are impossible "
                    "and the chain is not indexed here, so they cannot be repaired"
                )
            if indexer is None or not self._owns_index(chain):
                # Another instance indexes this chain (or will): its reconcile repairs it.
                deferred.setdefault(chain, set()).update(accounts)
                continue
            await self._repair_chain(indexer, accounts, at_start=at_start)
        if at_start and self.impossible:
            raise StartupError(f"impossible stored positions left unrepaired: {self.impossible}")
        for chain, accounts in deferred.items():
            self.impossible.setdefault(chain, set()).update(accounts)

    async def _repair_chain(
        self, indexer: ChainIndexer, accounts: set[str], *, at_start: bool
    ) -> None:
        chain = indexer.chain
        try:
            found = await indexer.reconcile(sorted(accounts))
        except RpcError as exc:
            if at_start:
                raise StartupError(
                    f"chain {chain}: stored positions of {sorted(accounts)} are impossible "
                    f"and the chain could not be read to repair them: {exc}"
                ) from exc
            self.impossible.setdefault(chain, set()).update(accounts)
            return
        self.metrics.reconcile_mismatch.labels(chain=chain).inc(len(found))
        log.warning("chain %s: repaired %d position(s) from the chain", chain, len(found))
        await self._recompute(accounts)

    async def reconcile(self) -> None:
        """The reconcile job: repair what is pending, then compare every caught-up chain
        this instance indexes with the vault and recompute what differed."""
        if self.impossible:
            await self.repair()
        for name, indexer in list(self._indexers.items()):
            if indexer.status.fatal or not indexer.status.caught_up:
                continue
            if not self._owns_index(name):
                continue  # indexed (and reconciled) by another instance
            mismatches = await indexer.reconcile()
            if mismatches:
                self.metrics.reconcile_mismatch.labels(chain=name).inc(len(mismatches))
                await self._recompute({m.account for m in mismatches})


__all__ = ["BookSync", "book_fingerprint", "token_symbols"]
