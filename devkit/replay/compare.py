"""Per-episode comparison of the margin models from the replay reports.

    python -m devkit.replay.compare [docs/replay] [--doc docs/replay.md]

Reads every `<episode>-<model>[-reputation].json` a replay wrote (model labels
models.LABELS: each model, then its `+reputation` run), draws one chart per episode
comparing the models (prices, the book's HF p5 and median, the depositors' margin) as
`<episode>.png`, and writes the per-model tables into docs/replay.md between the
`replay-compare` markers (generated: do not edit by hand).

Invariants: reads only the reports (no devnet, no daemon); an episode or model with no
report is absent from the tables, never filled in. The bad-debt split of a report
written before the split existed is recomputed only where the report determines it
(`causes_from_report`): the cross-chain borrowers' part, from the regenerated book.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from devkit.replay import population
from devkit.replay.models import LABELS
from devkit.replay.report import Holdings, procyclicality, step_ranges, stranded_chains

BEGIN, END = "<!-- replay-compare:begin -->", "<!-- replay-compare:end -->"


def load(directory: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """episode -> model -> report."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for f in sorted(directory.glob("*-*.json")):
        rep = json.loads(f.read_text())
        if "series" not in rep or rep.get("mode") not in LABELS:
            continue
        # Recomputed from the per-step series, so every report is measured alike.
        pc = procyclicality(rep["series"]["margin"], 24 / rep["time"]["hours_per_step"])
        rep["procyclicality"] = pc
        rep["margin"] = {"calm": pc.get("calm"), "peak": pc.get("peak")}
        out.setdefault(rep["episode"], {})[rep["mode"]] = rep
    return out


def _f(x: Any, fmt: str = "{:.3f}") -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return fmt.format(x)


def _sigma(rep: dict[str, Any]) -> str:
    """Which volatility the haircut used at the first step, per asset."""
    start = rep.get("volatility", {}).get("start", {})
    parts = []
    for asset, v in start.items():
        why = v.get("fallback_reason")
        parts.append(f"{asset} {v.get('source')}" + (f" ({why})" if why else ""))
    return "; ".join(parts) or "-"


def table(episode: str, reps: dict[str, dict[str, Any]]) -> str:
    head = (
        "| model | book | reached warning / liquidatable / insolvent | liquidations (accounts) "
        "| USD repaid | bad debt USD | healthy -> negative | false liq. (accounts) "
        "| margin calm / peak | peak / trough | max 1-day / 5-day rise | pushes per chain "
        "| gas per chain (M) | hours per step, measured s per step |"
    )
    rows = [head, "|" + "---|" * 14]
    for m in LABELS:
        r = reps.get(m)
        if r is None:
            continue
        t, liq, mg, pc = r["tiers_reached"], r["liquidations"], r["margin"], r["procyclicality"]
        fl = r["false_liquidations"]
        chains = r["chains"]
        gas = " / ".join(f"{v['gas'] / 1e6:.0f}" for v in chains.values())
        rows.append(
            f"| {m} | {r['accounts']} | {t['warning']} / {t['liquidatable']} / {t['insolvent']} "
            f"| {liq['count']} ({r.get('liquidated_accounts', '-')}) | {liq['usd']:,.0f} "
            f"| {r['bad_debt_usd']:,.0f} | {h2n(r)} "
            f"| {fl['count']} ({fl['accounts']}) | {_f(mg['calm'])} / {_f(mg['peak'])} "
            f"| {_f(pc.get('peak_over_trough'))} "
            f"| {_f(pc.get('max_1d_rise'), '{:.4f}')} / {_f(pc.get('max_5d_rise'), '{:.4f}')} "
            f"| {' / '.join(str(v['pushes']) for v in chains.values())} "
            f"| {gas} "
            f"| {r['time']['hours_per_step']}, {r['time']['measured_step_s']} |"
        )
    sig = [f"- {m}: {_sigma(reps[m])}" for m in LABELS if m in reps]
    return "\n".join([f"### {episode}", "", *rows, "", "Volatility at the first step:", *sig])


def h2n(rep: dict[str, Any]) -> str:
    """Healthy -> negative equity, with how many of them owed the vaults nothing
    (reports since 2026-12-07: `healthy_to_negative_venue_only`)."""
    n, venue = rep["healthy_to_negative_equity"], rep.get("healthy_to_negative_venue_only")
    return f"{n} ({venue} venue-only)" if venue else str(n)


def cured(rep: dict[str, Any]) -> str:
    """The responders' cures, "count (accounts) of responders"; "none" for a run
    without responders, or a report from before them (2026-12-07)."""
    c = rep.get("cures")
    if not c or not c.get("responders"):
        return "none"
    return f"{c['count']} ({c['accounts']}) of {c['responders']}"


def runs(
    reports: dict[str, dict[str, dict[str, Any]]],
) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(episode, model, report) of every report, episodes in order, models as LABELS."""
    for episode in sorted(reports):
        for m in LABELS:
            r = reports[episode].get(m)
            if r is not None:
                yield episode, m, r


def summary(reports: dict[str, dict[str, dict[str, Any]]]) -> str:
    """The issue's goal figures, one row per (episode, model): bad debt, healthy ->
    negative equity, false liquidations, procyclicality."""
    rows = [
        "| episode | model | bad debt USD | healthy -> negative | liquidations | false liq. "
        "| peak / trough | max 1-day rise | max 5-day rise | cures (accounts) of responders |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for episode, m, r in runs(reports):
        pc = r["procyclicality"]
        rows.append(
            f"| {episode} | {m} | {r['bad_debt_usd']:,.0f} | {h2n(r)} "
            f"| {r['liquidations']['count']} | {r['false_liquidations']['count']} "
            f"| {_f(pc.get('peak_over_trough'))} | {_f(pc.get('max_1d_rise'), '{:.4f}')} "
            f"| {_f(pc.get('max_5d_rise'), '{:.4f}')} | {cured(r)} |"
        )
    return "\n".join(rows)


def queue(reports: dict[str, dict[str, dict[str, Any]]]) -> str:
    """Per (episode, model): the collapse steps (sampled HF p25 = 0, from the series, so
    every report has them) and per pool-priced asset the liquidity queue's worst step:
    largest `dust_impact` (the haircut floor behind the queue) and the saturated steps
    (report.py `liquidity_summary`; "-" for a report written before it existed)."""
    rows = [
        "| episode | model | collapse steps (p25 = 0) | liquidity queue per asset: "
        "max dust impact, saturated steps (>= 0.99) |",
        "|---|---|---|---|",
    ]
    for episode, m, r in runs(reports):
        hf = r["series"]["hf_p5_p25_p50"]
        collapse = step_ranges([i for i, q in enumerate(hf) if q[1] == 0.0])
        assets = r.get("liquidity", {}).get("assets")
        cell = "-" if assets is None else "; ".join(
            f"{a} {v['max_dust_impact']:.3f}, {step_ranges(v['saturated_steps'])}"
            for a, v in assets.items()
        ) or "no pooled asset"  # fmt: skip
        rows.append(f"| {episode} | {m} | {collapse} | {cell} |")
    return "\n".join(rows)


DERIVATIVE_SHAPES = ("hedged_perp", "covered_call")


def derivatives(reports: dict[str, dict[str, dict[str, Any]]]) -> str:
    """The derivative shapes per (episode, model): at the first step, the medians of
    the portfolio model's maintenance margin and the standard model's requirement as
    shares of the collateral (`netting_at_start`, the live daemon's figures whatever
    model ran); their liquidations (spot legs); their vaults' deficit at the end, gross
    and net of their own derivative value. Reports without these figures are left out."""
    rows = [
        "| episode | model | hedged pair: portfolio MM / standard req. (of collateral) "
        "| covered call: portfolio MM / standard req. | liquidations hedged / covered "
        "| their vault deficit USD (net of the venue legs) |",
        "|---|---|---|---|---|---|",
    ]
    for episode, m, r in runs(reports):
        if "netting_at_start" not in r or "derivatives" not in r:
            continue
        net = r["netting_at_start"]

        def pair(shape: str, net: dict[str, Any] = net) -> str:
            n = net.get(shape)
            if n is None:
                return "-"
            return (
                f"{n['portfolio_mm_over_collateral_median']:.1%} / "
                f"{n['standard_requirement_over_collateral_median']:.1%}"
            )

        by = r["liquidations"].get("by_shape", {})
        d = r["derivatives"]
        rows.append(
            f"| {episode} | {m} | {pair('hedged_perp')} | {pair('covered_call')} "
            f"| {by.get('hedged_perp', 0)} / {by.get('covered_call', 0)} "
            f"| {d.get('bad_debt_usd', 0):,.0f} ({d.get('bad_debt_net_usd', 0):,.0f}) |"
        )
    return "\n".join(rows)


def causes_from_report(rep: dict[str, Any]) -> dict[str, Any] | None:
    """The bad-debt split of a report that predates `bad_debt_causes`, as far as the
    report determines it: the book is regenerated from its size, seed and first prices
    (population.generate is pure); a cross-chain borrower (report.stranded_chains at
    the first prices) is never liquidated (no vault holds both its debt and its
    collateral: the keeper's `no_debt_on_collateral_chain`), so its end deficit is its
    seeded positions at the last prices, less its own derivative value (hedge offset).
    The rest of the bad debt is `not_split` (gap or slow, and the same-chain accounts'
    hedge offsets: the report keeps no per-account positions). None when the warm-up
    repaid part of the book (`warmup.topped_up` > 0: the seeded book is not known)."""
    if rep.get("warmup", {}).get("topped_up", 0) != 0 or "series" not in rep:
        return None
    prices = rep["series"]["prices"]
    first = {s: v[0] for s, v in prices.items()}
    last = {s: v[-1] for s, v in prices.items()}
    book = population.generate(rep["accounts"], rep["seed"], first)
    held = Holdings.of(book)
    offset = cross = 0.0
    n_cross = 0
    for a in book:
        if not stranded_chains(a, first):
            continue
        c, d = held.value(a.address, last)
        deficit = d - c
        if deficit <= 0:
            continue
        v = held.derivatives_value(a.address, last, rep.get("implied_vol", {}))
        off = min(deficit, max(0.0, v)) if a.has_derivatives else 0.0
        offset += off
        cross += deficit - off
        n_cross += deficit - off > 0
    gross = float(rep["bad_debt_usd"])
    return {
        "usd": {"hedge_offset": round(offset, 2), "cross_chain": round(cross, 2),
                "not_split": round(max(0.0, gross - offset - cross), 2)},
        "accounts": {"cross_chain": n_cross},
        "gross_usd": gross,
        "recomputed": True,
    }  # fmt: skip


def causes(reports: dict[str, dict[str, dict[str, Any]]]) -> str:
    """Bad debt by cause per (episode, model): the report's own split (report.py,
    `bad_debt_causes`), or for an older report what it determines
    (`causes_from_report`, marked "recomputed"). USD (accounts)."""
    rows = [
        "| episode | model | bad debt USD | net of derivative legs | hedge offset | cross-chain "
        "| gap | slow, liquidated | slow, never liquidated | other | not split | split |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for episode, m, r in runs(reports):
        c = r.get("bad_debt_causes")
        how = "run"
        if c is None:
            c = causes_from_report(r)
            complete = c is not None and c["usd"]["not_split"] < 1.0
            how = "recomputed, complete" if complete else "recomputed: cross-chain only"
        if c is None:
            rows.append(f"| {episode} | {m} | {r['bad_debt_usd']:,.0f} | - | - | - | - | - "
                        "| - | - | - | not recomputable (warm-up top-ups) |")  # fmt: skip
            continue
        usd, n = c["usd"], c.get("accounts", {})

        def cell(k: str, usd: dict[str, float] = usd, n: dict[str, int] = n) -> str:
            if k not in usd:
                return "-"
            return f"{usd[k]:,.0f}" + (f" ({n[k]})" if k in n and usd[k] else "")

        # The derivative table's figure: the vaults' deficit less each account's own
        # derivative value (a written call's loss adds).
        net = r.get("derivatives", {}).get("book_bad_debt_net_usd")
        rows.append(
            f"| {episode} | {m} | {r['bad_debt_usd']:,.0f} "
            f"| {'-' if net is None else f'{net:,.0f}'} | {cell('hedge_offset')} "
            f"| {cell('cross_chain')} | {cell('gap')} | {cell('slow_liquidated')} "
            f"| {cell('slow_unliquidated')} | {cell('other')} | {cell('not_split')} | {how} |"
        )
    return "\n".join(rows)


def chart(episode: str, reps: dict[str, dict[str, Any]], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(4, 1, figsize=(10, 11), sharex=True)
    any_rep = next(iter(reps.values()))
    hours = any_rep["time"]["hours_per_step"]
    prices = any_rep["series"]["prices"]
    for sym in ("WETH", "WBTC", "wstETH", "USDC"):
        p = prices.get(sym) or []
        if p:
            days = [i * hours / 24 for i in range(len(p))]
            ax[0].plot(days, [x / p[0] for x in p], label=sym, lw=1)
    ax[0].set_ylabel("price / start")
    ax[0].legend(loc="lower left", fontsize=8)
    for m in LABELS:
        r = reps.get(m)
        if r is None:
            continue
        s = r["series"]
        h = r["time"]["hours_per_step"]
        days = [i * h / 24 for i in range(len(s["margin"]))]
        ax[1].plot(days, [x[0] for x in s["hf_p5_p25_p50"]], label=f"{m} p5", lw=1)
        ax[2].plot(days, [x[2] for x in s["hf_p5_p25_p50"]], label=f"{m} p50", lw=1)
        ax[3].plot(days, s["margin"], label=m, lw=1)
    ax[1].axhline(1.0, color="k", lw=0.5)
    ax[1].set_ylabel("book HF p5")
    ax[2].set_ylabel("book HF median")
    ax[3].set_ylabel("margin (depositors' haircut)")
    ax[3].set_xlabel("days into the episode")
    for a in ax[1:]:
        a.legend(loc="best", fontsize=8)
    fig.suptitle(f"replay {episode}: models compared")
    fig.tight_layout()
    path = out / f"{episode}.png"
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def write_doc(text: str, doc: Path) -> None:
    body = doc.read_text()
    if BEGIN not in body or END not in body:
        raise SystemExit(f"{doc}: no {BEGIN} ... {END} markers")
    head, rest = body.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    doc.write_text(f"{head}{BEGIN}\n{text}\n{END}{tail}")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m devkit.replay.compare")
    ap.add_argument("directory", nargs="?", default="docs/replay")
    ap.add_argument("--doc", default=None, help="write the tables into this markdown file")
    args = ap.parse_args(argv)
    d = Path(args.directory)
    reports = load(d)
    parts = ["### Goal figures", "", summary(reports), "", "### Bad debt by cause", "",
             causes(reports), "", "### Liquidity queue", "", queue(reports), "",
             "### Derivative legs", "", derivatives(reports), ""]  # fmt: skip
    for episode in sorted(reports):
        chart(episode, reports[episode], d)
        parts.append(table(episode, reports[episode]))
        parts.append(f"\n![{episode}](replay/{episode}.png)\n")
    text = "\n".join(parts)
    print(text)
    if args.doc:
        write_doc(text, Path(args.doc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
