"""Seize vouchers for cross-chain liquidations (`POST /v1/claims/{chain}/{tx_hash}`).

A liquidator repaid debt on chain D with `liquidateRemote`; here the daemon reads that
transaction's receipt from D, and for each `RemoteSeizeClaimed` of D's vault signs a
`SeizeVoucher` for the collateral chain C with its keeper key (docs/contracts.md,
"Cross-chain seize"). The decisions are pure (chains/claims.py, `voucher_for` below);
this module does the reads and the signing.

Invariants:
- a voucher is signed only for a claim that is final on D: the log is D's configured
  vault's, the receipt's status is 1, its block is at least D's `confirmations` deep
  and still the canonical block at its height (else 409, saying when it was reorged);
- every claim of the transaction maps, or none is signed: the target is the configured
  chain with the claim's chain id, the collateral token a configured asset's token
  there, the debt token's asset borrowable with a token there (else 422 naming which);
- the voucher carries C's addresses: C's vault is the EIP-712 verifying contract, the
  debt token is the same asset's token on C, `repaid` unchanged (one `decimals` per
  asset across chains);
- signing is deterministic (RFC 6979): asking again returns the same voucher and
  signature, and the vault settles each claim id once, so the route needs no state and
  no authentication: a voucher pays only the liquidator the claim names;
- RPC trouble or no keeper key for C is a 503; the key never leaves KeeperKey;
- a key that C's registry does not list as a keeper (`isKeeper`) signs nothing: its
  voucher would revert `NotKeeperSigned`, so the answer is a 503 naming the key and the
  registry. A positive check holds for `KEEPER_CHECK_TTL_S` (a revocation shows within
  that time), a negative one is not kept (a grant shows at the next request);
- lookups share the chains' RPC budget with the indexers and the pusher, so they are
  paced over all clients (`LOOKUPS_PER_S`, burst `LOOKUP_BURST`): one beyond the rate
  waits its turn, and one that would wait more than `LOOKUP_MAX_WAIT_S` is a 429
  before any RPC (docs/reliability.md "Hostile API clients").
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from eth_abi import encode as abi_encode

from aggregator.api_common import ApiError
from aggregator.config import AppConfig, AssetConfig, ChainConfig
from chains.claims import (
    Finality,
    ReceiptClaims,
    RemoteSeizeClaim,
    SeizeVoucher,
    decode_claims,
    finality,
    voucher_typed_data,
)
from chains.events import HEX_WORD, DecodeError
from chains.pusher.keys import KeeperKey
from chains.rpc import RpcClient, selector
from chains.rpc_errors import RpcError

log = logging.getLogger(__name__)

# A lookup is 3 RPC reads (receipt, head, block): 10 a second is 30 reads, below the
# default 50/s per chain a node is allowed (rpc_rate_limit_per_s). A lookup beyond the
# rate waits its turn (up to LOOKUP_MAX_WAIT_S), so a client asking one claim after
# another (a liquidator polling its claims) is only paced, never refused; only a flood
# of concurrent requests beyond what that wait absorbs is refused.
LOOKUPS_PER_S = 10.0
LOOKUP_BURST = 20.0
LOOKUP_MAX_WAIT_S = 5.0
# How long a registry's `isKeeper(key) == true` answer is trusted before it is read again.
KEEPER_CHECK_TTL_S = 60.0
SEL_IS_KEEPER = selector("isKeeper(address)")


class TokenBucket:
    """`rate` tokens a second up to `burst`. `reserve(max_wait)`: a token now or in the
    future (the seconds to wait for it), or None when that would be beyond `max_wait`
    (nothing reserved then)."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float]) -> None:
        self.rate, self.burst, self.clock = rate, burst, clock
        self.tokens = burst  # below 0: tokens already promised to waiting lookups
        self.at = clock()

    def reserve(self, max_wait: float) -> float | None:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        wait = max(0.0, (1.0 - self.tokens) / self.rate)
        if wait > max_wait:
            return None
        self.tokens -= 1.0
        return wait


class ClaimNotFinal(Exception):
    """The transaction's claims are not final (yet, or their block was reorged out)."""

    def __init__(self, chain: str, tx_hash: str, fin: Finality) -> None:
        self.fin = fin
        if fin.reorged:
            detail = "its block was reorged out of the canonical chain"
        else:
            detail = f"{fin.confirmations} of {fin.needed} confirmations"
        super().__init__(f"claim in {tx_hash} on {chain} not final: {detail}")

    def body(self) -> dict[str, Any]:
        """The 409 answer: `confirmations`/`needed` to wait on, `reorged` when waiting is
        pointless for this block (the transaction may be mined again elsewhere)."""
        return {
            "error": "claim not final",
            "confirmations": self.fin.confirmations,
            "needed": self.fin.needed,
            "reorged": self.fin.reorged,
            "message": str(self),
        }


@dataclass(frozen=True)
class VoucherTarget:
    """Where a claim's voucher is settled and what it says there."""

    chain: ChainConfig
    vault: str
    voucher: SeizeVoucher


def _asset_with_token(assets: list[AssetConfig], chain: str, token: str) -> AssetConfig | None:
    want = token.lower()
    for asset in assets:
        t = asset.tokens.get(chain)
        if t is not None and t.lower() == want:
            return asset
    return None


def voucher_for(cfg: AppConfig, source: str, claim: RemoteSeizeClaim) -> VoucherTarget:
    """The voucher of a (final) claim made on chain `source`; ApiError 422 naming what
    does not map."""
    cid = claim.claim_id
    target = next((c for c in cfg.chains if c.chain_id == claim.target_chain_id), None)
    if target is None or target.name == source:
        raise ApiError(
            422,
            "target_chain",
            f"claim {cid}: target chain id {claim.target_chain_id} is not a configured "
            "chain other than the claim's",
        )
    if target.contracts.vault is None:
        raise ApiError(
            422, "target_chain", f"claim {cid}: target chain {target.name} has no vault configured"
        )
    collateral = _asset_with_token(cfg.assets, target.name, claim.collateral_token)
    if collateral is None:
        raise ApiError(
            422,
            "collateral_token",
            f"claim {cid}: collateral token {claim.collateral_token} is not a configured "
            f"asset's token on {target.name}",
        )
    debt = _asset_with_token(cfg.assets, source, claim.debt_token)
    if debt is None:
        raise ApiError(
            422,
            "debt_token",
            f"claim {cid}: debt token {claim.debt_token} is not a configured asset's token "
            f"on {source}",
        )
    debt_there = debt.tokens.get(target.name)
    if not debt.borrowable or debt_there is None:
        why = "not borrowable" if not debt.borrowable else f"has no token on {target.name}"
        raise ApiError(
            422,
            "debt_token",
            f"claim {cid}: debt asset {debt.symbol} {why}: it cannot be settled on {target.name}",
        )
    voucher = SeizeVoucher(
        claim_id=cid,
        account=claim.account,
        liquidator=claim.liquidator,
        collateral_token=claim.collateral_token,
        debt_token=debt_there,
        repaid=claim.repaid,
    )
    return VoucherTarget(target, target.contracts.vault, voucher)


class ClaimService:
    """`keeper(chain)`: the key that signs for `chain` (the pusher's), None when none does."""

    def __init__(
        self,
        cfg: AppConfig,
        clients: Mapping[str, RpcClient],
        keeper: Callable[[str], KeeperKey | None],
        *,
        lookups_per_s: float = LOOKUPS_PER_S,
        burst: float = LOOKUP_BURST,
        max_wait_s: float = LOOKUP_MAX_WAIT_S,
        clock: Callable[[], float] = time.monotonic,
        on_outcome: Callable[[str], None] = lambda _outcome: None,
    ) -> None:
        self.cfg = cfg
        # `signed`, `not_final` or `refused` per request (agg_seize_vouchers_total).
        self._on_outcome = on_outcome
        self.clients = clients
        self.keeper = keeper
        self.bucket = TokenBucket(lookups_per_s, burst, clock)
        self.max_wait_s = max_wait_s
        self.clock = clock
        # chain -> (key address, when its registry last said isKeeper): KEEPER_CHECK_TTL_S.
        self._keeper_ok: dict[str, tuple[str, float]] = {}

    async def vouchers(self, chain: str, tx_hash: str) -> dict[str, Any]:
        """`chain`: a name matching the config's pattern; `tx_hash`: 0x + 64 hex digits.
        The 200 body, or ApiError (404/422/429/503) or ClaimNotFinal (409)."""
        try:
            body = await self._vouchers(chain, tx_hash)
        except ClaimNotFinal:
            self._on_outcome("not_final")
            raise
        except Exception:
            self._on_outcome("refused")
            raise
        self._on_outcome("signed")
        return body

    async def _vouchers(self, chain: str, tx_hash: str) -> dict[str, Any]:
        source = next((c for c in self.cfg.chains if c.name == chain), None)
        # Well-formed but not here: a 404 like an unknown asset's (the route's 400 is for a
        # malformed name; /openapi.json cannot list the configured ones).
        if source is None:
            raise ApiError(404, "chain", f"unknown chain {chain!r}")
        vault = source.contracts.vault
        if vault is None:
            raise ApiError(404, "chain", f"chain {chain!r} has no vault configured: no claims")
        wait = self.bucket.reserve(self.max_wait_s)
        if wait is None:
            raise ApiError(
                429,
                "claims",
                f"more voucher requests than {self.bucket.rate:g} a second can answer within "
                f"{self.max_wait_s:g} s; retry later",
            )
        if wait > 0:
            await asyncio.sleep(wait)
        parsed, fin = await self._final_claims(source, vault, tx_hash)
        if not fin.final:
            raise ClaimNotFinal(chain, tx_hash, fin)
        targets = [voucher_for(self.cfg, chain, c) for c in parsed.claims]
        keys = [await self._signer(t.chain) for t in targets]  # all or none signed
        out = []
        for claim, t, key in zip(parsed.claims, targets, keys, strict=True):
            signature = key.sign_typed_data(
                voucher_typed_data(t.voucher, t.chain.chain_id, t.vault)
            )
            log.info(
                "seize voucher: claim %s from %s tx %s for %s on %s, signed by %s",
                claim.claim_id,
                chain,
                tx_hash,
                claim.liquidator,
                t.chain.name,
                key.address,
            )
            out.append(
                {
                    "claim_id": claim.claim_id,
                    "source_chain": chain,
                    "target_chain": t.chain.name,
                    "block_number": claim.block_number,
                    "vault": t.vault,
                    "voucher": t.voucher.message(),
                    "signature": signature,
                }
            )
        return {"claims": out}

    async def _final_claims(
        self, source: ChainConfig, vault: str, tx_hash: str
    ) -> tuple[ReceiptClaims, Finality]:
        """The receipt's claims and their finality: receipt first, then the head and the
        canonical block at the receipt's height (a reorg between the reads shows as a
        hash mismatch, never as final)."""
        chain = source.name
        client = self.clients[chain]
        try:
            receipt = await client.request("eth_getTransactionReceipt", [tx_hash])
            if receipt is None:
                raise ApiError(404, "tx_hash", f"no mined transaction {tx_hash} on {chain}")
            parsed = decode_claims(chain, receipt, vault)
            if parsed.tx_hash != tx_hash:
                raise ApiError(
                    503, "rpc", f"{chain}'s node answered the receipt of {parsed.tx_hash}"
                )
            if not parsed.succeeded:
                raise ApiError(404, "tx_hash", f"transaction {tx_hash} on {chain} reverted")
            if not parsed.claims:
                raise ApiError(
                    404, "tx_hash", f"no RemoteSeizeClaimed of vault {vault} in {tx_hash}"
                )
            head = await client.block_number()
            block = await client.get_block(parsed.block_number)
        except DecodeError as exc:
            # The node answered something that is not a receipt: its fault, not the client's.
            raise ApiError(503, "rpc", f"unreadable receipt from {chain}'s node: {exc}") from None
        except RpcError as exc:
            raise ApiError(503, "rpc", str(exc)) from None
        canonical = None if block is None else block.hash
        fin = finality(
            parsed.block_number, parsed.block_hash, head, canonical, source.confirmations
        )
        return parsed, fin

    async def _signer(self, chain: ChainConfig) -> KeeperKey:
        """The key that signs for `chain`, once its registry lists it as a keeper."""
        key = self._key(chain.name)
        ok = self._keeper_ok.get(chain.name)
        now = self.clock()
        if ok is not None and ok[0] == key.address and now - ok[1] < KEEPER_CHECK_TTL_S:
            return key
        registry = chain.contracts.registry
        if registry is None:
            raise ApiError(503, "keeper", f"chain {chain.name} has no registry configured")
        data = SEL_IS_KEEPER + abi_encode(["address"], [key.address])
        try:
            answer = await self.clients[chain.name].request(
                "eth_call", [{"to": registry, "data": "0x" + data.hex()}, "latest"]
            )
        except RpcError as exc:
            raise ApiError(503, "rpc", str(exc)) from None
        if not (isinstance(answer, str) and HEX_WORD.fullmatch(answer)):
            raise ApiError(
                503, "rpc", f"{chain.name}'s node answered isKeeper with {str(answer)[:80]!r}"
            )
        if int(answer, 16) != 1:
            raise ApiError(
                503,
                "keeper",
                f"key {key.address} is not a keeper of {chain.name}'s registry {registry}: "
                "its voucher would revert NotKeeperSigned (grant it with setKeeper)",
            )
        self._keeper_ok[chain.name] = (key.address, now)
        return key

    def _key(self, chain: str) -> KeeperKey:
        key = self.keeper(chain)
        if key is None:
            raise ApiError(
                503,
                "keeper",
                f"no keeper key signs for chain {chain}: it needs contracts.registry and a "
                "running pusher with a key (AGG_KEEPER_KEY or pusher.keystore_path)",
            )
        return key
