"""The attestation input of the reputation score: one `chains.attestations` reader per
chain with `contracts.attestations`, stepped by the `reputation` job before it scores
(docs/reputation.md "Attestations").

Invariants:
- On with [reputation] enabled, at least one attester in [reputation.attestation] and
  one registry; otherwise nothing is read and no factor is shown.
- At start every registry is validated: an address that is not an AttestationRegistry
  stops the start naming its field (`chains[i].contracts.attestations`). An RPC failure
  there is not a config problem: retried, then the chain is validated again on the next
  run before it is read (until then it contributes nothing).
- A chain whose read fails (RPC error, a hostile or malformed answer) keeps its last
  snapshot, marked untrusted: those attestations may still raise a multiplier, never
  lower one (aggregator/risk/attestation.py); the failure names the chain in `errors`,
  the log and the reputation job's status (the job reports it after scoring). The
  daemon never stops for it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from aggregator.config import AppConfig
from aggregator.risk.attestation import Attestation
from aggregator.startup import StartupError
from chains.attestations import (
    AttestationConfigError,
    AttestationReader,
    AttestationSnapshot,
    describe,
)
from chains.rpc import RpcClient, RpcError

log = logging.getLogger(__name__)

VALIDATE_ATTEMPTS = 5


class AttestationInputError(RuntimeError):
    """Some chain's attestations could not be read this run (names them)."""


class AttestationFeed:
    def __init__(self, cfg: AppConfig, clients: Mapping[str, RpcClient]) -> None:
        att = cfg.reputation.attestation
        attesters = frozenset(a.lower() for a in att.attesters)
        on = cfg.reputation.enabled and bool(attesters)
        self.readers = {
            c.name: AttestationReader(
                clients[c.name], c.name, c.contracts.attestations, attesters=attesters,
                confirmations=c.confirmations, field=f"chains[{i}].contracts.attestations",
                min_block=c.start_block,
            )
            for i, c in enumerate(cfg.chains)
            if on and c.contracts.attestations is not None
        }  # fmt: skip
        self.enabled = bool(self.readers)
        self._validated: set[str] = set()
        self.errors: dict[str, str] = {}

    async def start(self, retry_delay_s: float = 1.0) -> None:
        """Validate every registry (module docstring)."""
        for chain, reader in self.readers.items():
            for attempt in range(VALIDATE_ATTEMPTS):
                try:
                    await reader.validate()
                except AttestationConfigError as exc:
                    raise StartupError(f"reputation: {exc}") from None
                except RpcError as exc:
                    self.errors[chain] = f"not validated: {exc}"
                    log.warning("attestations %s: validation failed (%s), attempt %d of %d",
                                chain, exc, attempt + 1, VALIDATE_ATTEMPTS)  # fmt: skip
                    await asyncio.sleep(retry_delay_s)
                else:
                    self._validated.add(chain)
                    self.errors.pop(chain, None)
                    break

    async def refresh(self) -> None:
        """Step every chain's reader; a failure is recorded per chain, never raised."""
        for chain, reader in self.readers.items():
            try:
                if chain not in self._validated:
                    await reader.validate()
                    self._validated.add(chain)
                await reader.step()
            except (RpcError, AttestationConfigError) as exc:
                self.errors[chain] = str(exc)
                log.warning("attestations %s: read failed: %s", chain, exc)
            else:
                self.errors.pop(chain, None)

    def by_subject(self) -> dict[str, tuple[Attestation, ...]]:
        """Every kept record, per subject (lowercase), as the score's input."""
        out: dict[str, list[Attestation]] = {}
        for chain, reader in self.readers.items():
            snap = reader.snapshot
            if snap is None:
                continue
            trusted = chain not in self.errors
            for r in snap.records.values():
                out.setdefault(r.subject, []).append(Attestation(
                    chain, r.uid, r.attester, r.score_bps, r.expiry, r.revoked,
                    float(snap.timestamp), trusted,
                ))  # fmt: skip
        return {s: tuple(v) for s, v in out.items()}

    def check(self) -> None:
        """Raise AttestationInputError naming every chain whose read failed this run."""
        if self.errors:
            raise AttestationInputError(
                "reputation: attestations unreadable on "
                + "; ".join(f"chain {c!r}: {e}" for c, e in sorted(self.errors.items()))
            )

    def view(self) -> dict[str, Any]:
        """Per chain: the snapshot read (block, hash, time, count) and the last error."""
        return {
            chain: {"snapshot": describe(r.snapshot), "error": self.errors.get(chain)}
            for chain, r in self.readers.items()
        }

    def snapshots(self) -> dict[str, AttestationSnapshot | None]:
        return {chain: r.snapshot for chain, r in self.readers.items()}


__all__ = ["AttestationFeed", "AttestationInputError"]
