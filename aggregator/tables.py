"""Readable tables of API answers for `aggregator account|chains|prices` (--json prints raw).

Works on the JSON the daemon serves, not on daemon objects, so the CLI shows exactly
what a script would get; fields a daemon version does not serve print as "-".
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

DASH = "-"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Left-aligned text columns; numbers right-aligned."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, c in enumerate(row):
            widths[i] = max(widths[i], len(c))
    numeric = [
        all(_is_num(row[i]) for row in rows if row[i] is not None) and bool(rows)
        for i in range(len(headers))
    ]

    def fmt(row: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(widths[i]) if numeric[i] else c.ljust(widths[i]) for i, c in enumerate(row)
        ).rstrip()

    lines = [fmt(list(headers)), fmt(["-" * w for w in widths])]
    lines += [fmt(r) for r in cells]
    return "\n".join(lines)


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _cell(v: Any) -> str:
    if v is None:
        return DASH
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:,.2f}" if abs(v) >= 1 else f"{v:.6g}"
    return str(v)  # ints too: chain ids and block numbers read best without commas


def usd(v: Any) -> str:
    if v is None:
        return DASH
    try:
        return f"${float(v):,.2f}"
    except (TypeError, ValueError):
        return str(v)


def hf_text(view: dict[str, Any]) -> str:
    hf = view.get("hf")
    if hf is None:
        return str(view.get("hf_text", "inf"))
    return f"{hf:.4f}" if isinstance(hf, int | float) else str(hf)


def account_text(view: dict[str, Any]) -> str:
    head = [
        f"account   {view.get('account')}",
        f"tier      {view.get('tier')}   HF {hf_text(view)}   "
        f"status {'degraded' if view.get('degraded') else 'ok'}   mode {view.get('mode', DASH)}",
        f"collateral {usd(view.get('collateral_value_usd'))}   "
        f"C_liq {usd(view.get('c_liq_usd'))}   C_borrow {usd(view.get('c_borrow_usd'))}   "
        f"debt {usd(view.get('debt_usd'))}   "
        f"borrowing power {usd(view.get('borrowing_power_usd'))}",
    ]
    rows = []
    for chain, positions in (view.get("positions") or {}).items():
        for p in positions:
            price = ((view.get("assets") or {}).get(p.get("asset")) or {}).get("price") or {}
            rows.append(
                [
                    chain,
                    p.get("asset"),
                    p.get("side"),
                    p.get("amount"),
                    price.get("used_usd"),
                    p.get("value_usd"),
                ]
            )
    out = "\n".join(head)
    if rows:
        out += "\n\n" + table(["chain", "asset", "side", "amount", "price_usd", "value_usd"], rows)
    credit = ((view.get("credit") or {}).get("chains")) or {}
    if credit:
        crows = [
            [c, v.get("credit_usd"), v.get("share"), v.get("previous_usd6")]
            for c, v in credit.items()
        ]
        out += "\n\n" + table(["chain", "credit_usd", "share", "previous_usd6"], crows)
    plan = view.get("liquidation")
    if plan:
        out += f"\n\nliquidation plan: {plan.get('kind')} repay {usd(plan.get('repay_usd'))}"
        if plan.get("chain"):
            out += f" of {plan.get('asset')} on {plan.get('chain')}"
    as_of = view.get("as_of") or {}
    if as_of:
        blocks = ", ".join(f"{c} #{b.get('indexed_block')}" for c, b in as_of.items())
        out += f"\n\nas of blocks: {blocks}"
    return out


def chains_text(data: dict[str, Any]) -> str:
    rows = []
    for c in data.get("chains", []):
        eps = c.get("endpoints") or []
        healthy = sum(1 for e in eps if e.get("state") == "healthy")
        pusher = c.get("pusher") if isinstance(c.get("pusher"), dict) else {}
        rows.append(
            [
                c.get("chain"),
                c.get("chain_id"),
                c.get("head_block"),
                c.get("indexed_block"),
                c.get("confirmed_block"),
                c.get("lag"),
                "FATAL" if c.get("fatal") else ("yes" if c.get("caught_up") else "syncing"),
                c.get("reorgs"),
                f"{healthy}/{len(eps)}",
                pushes_landed(c),
                _first(pusher, c, "pending_txs", "pending"),
                _first(pusher, c, "keeper_balance_eth", "keeper_balance"),
            ]
        )
    out = table(
        [
            "chain",
            "chain_id",
            "head",
            "indexed",
            "confirmed",
            "lag",
            "synced",
            "reorgs",
            "rpc ok",
            "pushes",
            "pending",
            "keeper bal",
        ],
        rows,
    )
    errors = [
        f"  {c.get('chain')}: {c.get('fatal_reason') or c.get('last_error')}"
        for c in data.get("chains", [])
        if c.get("fatal_reason") or c.get("last_error")
    ]
    return out + ("\n\nproblems:\n" + "\n".join(errors) if errors else "")


def pushes_landed(chain: dict[str, Any]) -> int | None:
    """Confirmed registry updates on a chain, from the pusher's part of /v1/chains;
    None (shown as "-") when this daemon does not push there."""
    pusher = chain.get("pusher")
    if not isinstance(pusher, dict) or not pusher.get("enabled", True):
        return None
    if isinstance(pusher.get("pushes_landed"), int):
        return int(pusher["pushes_landed"])
    sender = pusher.get("sender")
    if isinstance(sender, dict) and isinstance(sender.get("confirmed_total"), int):
        return int(sender["confirmed_total"])
    return None


def _first(pusher: dict[str, Any], chain: dict[str, Any], *names: str) -> Any:
    for n in names:
        for src in (pusher, chain):
            if src.get(n) is not None:
                return src[n]
    return None


def price_rows(prices: dict[str, Any], now: float) -> list[list[Any]]:
    rows = []
    for sym, p in prices.items():
        ts = p.get("timestamp")
        sources = p.get("sources") or []
        ok = sum(1 for s in sources if not s.get("failure"))
        rows.append(
            [
                sym,
                p.get("value"),
                p.get("status"),
                None if ts is None else f"{max(0.0, now - ts):.0f}s",
                p.get("spread"),
                f"{ok}/{len(sources)}",
                p.get("reason"),
            ]
        )
    return rows


def prices_text(data: dict[str, Any], now: float | None = None) -> str:
    now = time.time() if now is None else now
    headers = ["asset", "usd", "status", "age", "spread", "sources ok", "reason"]
    if "prices" in data:
        return table(headers, price_rows(data["prices"], now))
    # One asset: its summary line and every source's value or failure.
    out = table(headers, price_rows({data.get("asset", "?"): data}, now))
    srows = [
        [s.get("source"), s.get("kind"), s.get("value"), s.get("failure")]
        for s in data.get("sources") or []
    ]
    if srows:
        out += "\n\n" + table(["source", "kind", "value", "failure"], srows)
    return out


def liquidity_text(data: dict[str, Any]) -> str:
    """`aggregator liquidity`: per asset and chain, sellable within each slippage (units)
    vs the collateral the tiers put at risk; the assets on the depth fallback, and the
    pools the guards set aside."""
    slips = [f"{s:g}" for s in data.get("slippages", [])]
    headers = ["asset", "chain", "source", *(f"<= {float(s):.0%}" for s in slips),
               "liquidatable", "warning", "impact(liq)"]  # fmt: skip
    rows: list[list[Any]] = []
    for symbol, entry in data.get("assets", {}).items():
        if not entry.get("chains"):
            rows.append([symbol, "-", f"fallback: {entry.get('fallback')}", *["" for _ in slips],
                         "", "", ""])  # fmt: skip
        for chain, row in entry.get("chains", {}).items():
            sellable = row.get("sellable", {})
            risk = row.get("at_risk", {})
            rows.append([
                symbol, chain, row.get("source"), *(sellable.get(s, "") for s in slips),
                risk.get("liquidatable"), risk.get("warning"), row.get("liquidatable_impact", ""),
            ])  # fmt: skip
    out = table(headers, rows)
    ignored = [
        [symbol, i["chain"], i["pool"], i["reason"]]
        for symbol, pools in data.get("ignored", {}).items()
        for i in pools
    ]
    if ignored:
        out += "\n\nset aside this round:\n" + table(["asset", "chain", "pool", "reason"], ignored)
    return out
