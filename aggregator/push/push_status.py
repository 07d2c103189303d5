"""What the pusher records and shows: per-chain state, metrics, the API and /readyz views.

Reports only: nothing here sends, signs or decides what to push. Transaction hashes go
in log records' own fields, never in a message (the log filter cannot tell a 32-byte
hash from a private key and scrubs it, aggregator/logging.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from eth_utils import to_checksum_address

from aggregator.metrics import Metrics
from aggregator.push.chain_pusher import FAILING_AFTER, ChainPusher
from aggregator.push.controller import RIDE_ALONG, Planned
from chains.units import TIERS

log = logging.getLogger("aggregator.push.service")


class PushRecorder:
    """Per-chain state and metrics of what the push cycles did."""

    def __init__(self, metrics: Metrics | None, min_balance_wei: int) -> None:
        self.metrics = metrics
        self.min_balance_wei = min_balance_wei

    def dry_run(self, cp: ChainPusher, batch: list[Planned], gas: int) -> None:
        summary = {
            "at": time.time(),
            "entries": len(batch),
            "triggered": sum(1 for p in batch if p.priority < RIDE_ALONG),
            "estimated_gas": gas,
            "accounts": [
                {
                    "account": to_checksum_address(p.account),
                    "reason": p.reason,
                    "entry": asdict(p.entry),
                }
                for p in batch[:20]
            ],
        }
        cp.state.dry_run_batches = [*cp.state.dry_run_batches[-9:], summary]
        cp.state.last_batch = summary
        log.info(
            "pusher %s [dry run]: would push %d entries (%d triggered: %s), ~%d gas",
            cp.name,
            len(batch),
            summary["triggered"],
            ", ".join(sorted({p.reason for p in batch})),
            gas,
        )

    def push_sent(self, cp: ChainPusher, batch: list[Planned], rec: dict[str, Any]) -> None:
        st = cp.state
        st.pushes_sent += 1
        st.entries_pushed += len(batch)
        st.triggered += sum(1 for p in batch if p.priority < RIDE_ALONG)
        st.ride_alongs += sum(1 for p in batch if p.priority == RIDE_ALONG)
        st.last_push_at = time.time()
        st.last_batch = {**rec, "reasons": sorted({p.reason for p in batch})}
        # The hash goes in its own field: in a message the log filter cannot tell a
        # 32-byte hash from a private key and scrubs it (aggregator/logging.py).
        log.info(
            "pusher %s: sent %d entries (%s) nonce %d",
            cp.name,
            len(batch),
            ", ".join(sorted({p.reason for p in batch})),
            rec["nonce"],
            extra={"chain": cp.name, "tx_hash": rec["tx_hash"], "nonce": rec["nonce"]},
        )
        if self.metrics is not None:
            self.metrics.pusher_sent.labels(chain=cp.name).inc()
            self.metrics.pusher_entries.labels(chain=cp.name).inc(len(batch))

    def push_failed(self, cp: ChainPusher) -> None:
        cp.state.pushes_failed += 1
        if self.metrics is not None:
            self.metrics.pusher_failed.labels(chain=cp.name).inc()

    def balance(self, cp: ChainPusher, bal: int) -> None:
        st = cp.state
        st.keeper_balance_wei = bal
        low = bal < self.min_balance_wei
        if low and not st.keeper_low:
            log.warning(
                "pusher %s: keeper %s balance %.6f ETH is below pusher.min_keeper_balance_eth "
                "(%.6f); fund it or updates will stop",
                cp.name,
                cp.key_address,
                bal / 1e18,
                self.min_balance_wei / 1e18,
            )
        st.keeper_low = low
        if self.metrics is not None:
            self.metrics.pusher_keeper_balance.labels(chain=cp.name).set(bal / 1e18)
            self.metrics.pusher_keeper_low.labels(chain=cp.name).set(1 if low else 0)

    def sender(self, cp: ChainPusher) -> None:
        m = self.metrics
        if m is None or cp.sender is None:
            return
        s = cp.sender.status
        m.pusher_pending.labels(chain=cp.name).set(s.pending_txs)
        if s.next_nonce is not None:
            m.pusher_nonce.labels(chain=cp.name).set(s.next_nonce)
        m.advance(m.pusher_gas_used, s.gas_used_total, cp.name)
        m.advance(m.pusher_confirmed, s.confirmed_total, cp.name)
        m.advance(m.pusher_replacements, s.replacements_total, cp.name)
        m.advance(m.pusher_rebroadcasts, s.rebroadcasts_total, cp.name)
        m.advance(m.pusher_reorgs, s.reorgs_total, cp.name)
        m.advance(m.pusher_gap_fills, s.gap_fills_total, cp.name)
        gap = s.nonce_gap
        m.pusher_nonce_gap.labels(chain=cp.name).set(0 if gap is None else gap[1] - gap[0] + 1)

    def cycle_failed(self, cp: ChainPusher, exc: BaseException) -> None:
        st = cp.state
        st.consecutive_failures += 1
        st.last_error = f"{type(exc).__name__}: {exc}"
        if st.consecutive_failures in (1, FAILING_AFTER) or st.consecutive_failures % 20 == 0:
            log.warning(
                "pusher %s: cycle failed (%d in a row): %s",
                cp.name,
                st.consecutive_failures,
                st.last_error,
            )
        if self.metrics is not None:
            self.metrics.pusher_cycle_failures.labels(chain=cp.name).inc()


def chain_status(cp: ChainPusher, *, dry_run: bool, paused: bool) -> dict[str, Any]:
    st = cp.state
    bal = st.keeper_balance_wei
    out: dict[str, Any] = {
        "enabled": True,
        "dry_run": dry_run,
        "paused": paused,
        "keeper": cp.key_address,
        "keeper_balance_wei": None if bal is None else str(bal),
        "keeper_balance_eth": None if bal is None else bal / 1e18,
        "keeper_low": st.keeper_low,
        "registry": cp.settings.registry,
        "onchain_block": st.onchain_block,
        "cycles": st.cycles,
        "consecutive_failures": st.consecutive_failures,
        "last_error": st.last_error,
        "last_ok_at": st.last_ok_at,
        "last_push_at": st.last_push_at,
        "pushes_sent": st.pushes_sent,
        "pushes_failed": st.pushes_failed,
        "entries_pushed": st.entries_pushed,
        "last_batch": st.last_batch,
        "nonce": None,
        "pending_txs": 0,
    }
    if cp.sender is not None:
        s = cp.sender.status
        out["nonce"] = s.next_nonce
        out["pending_txs"] = s.pending_txs
        out["sender"] = {
            k: v for k, v in asdict(s).items() if k not in ("chain", "sender", "next_nonce")
        }
        out["pending"] = [r.summary() for r in cp.sender.open_records()]
    return out


def onchain_view(chains: Mapping[str, ChainPusher], address: str) -> dict[str, Any]:
    """Per chain: the registry entry last read for `address` (null: empty slot)."""
    key = address.lower()
    out: dict[str, Any] = {}
    for name, cp in chains.items():
        reading = cp.listener.onchain.get(key)
        if reading is None:
            out[name] = None
            continue
        e = reading.entry
        out[name] = {
            "block": reading.block,
            "read_at": reading.read_at,
            "entry": None
            if e is None
            else {
                "credit_usd6": str(e.credit_usd6),
                "hf_1e9": str(e.hf_1e9),
                "hf": None if e.infinite_hf else e.hf_1e9 / 1e9,
                "tier": TIERS[e.tier],
                "as_of": e.as_of,
            },
        }
    return out


def readiness_reasons(chains: Mapping[str, ChainPusher]) -> list[str]:
    out = []
    for name, cp in chains.items():
        st = cp.state
        if st.consecutive_failures >= FAILING_AFTER:
            out.append(
                f"pusher {name}: {st.consecutive_failures} failed cycles in a row ({st.last_error})"
            )
    return out
