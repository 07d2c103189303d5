// What-if on the live book (POST /v1/whatif, docs/whatif.md): shocks per asset, LST
// de-pegs, a volatility shift, chains down; the daemon computes on a snapshot of the
// ledger and answers per model. Inputs are percent on screen, fractions in the request.

import { getJSON, postJSON, ApiError } from "./api.js";
import { TIERS } from "./book.js";
import { el, usd, num, pct, badge, accountLink, table, section, errorBox } from "./fmt.js";

function fraction(input) {
  const text = input.value.trim();
  return text === "" ? null : Number(text) / 100;
}

export async function render(root, { signal }) {
  const [prices, chains] = await Promise.all([getJSON("/v1/prices", signal), getJSON("/v1/chains", signal)]);
  const assets = Object.keys(prices.prices);
  const shockInputs = new Map(assets.map((a) => [a, el("input", { type: "number", step: "any", name: `shocks.${a}`, placeholder: "0", "data-field": `shocks.${a}` })]));
  // LSTs (priced through an exchange-rate leg) can de-peg against their underlying.
  const lsts = assets.filter((a) => (prices.prices[a].sources || []).some((s) => s.kind === "exchange_rate"));
  const depegInputs = new Map(lsts.map((a) => [a, el("input", { type: "number", step: "any", name: `depegs.${a}`, placeholder: "0", "data-field": `depegs.${a}` })]));
  const vol = el("input", { type: "number", step: "any", name: "vol", placeholder: "0", "data-field": "vol" });
  const down = chains.chains.map((c) => el("input", { type: "checkbox", name: "chains_down", value: c.chain }));
  const out = el("div", { id: "whatif-result" });
  const status = el("span", { class: "muted", id: "whatif-status" });
  let scenario = null;

  async function run(cursor) {
    for (const i of form.querySelectorAll(".invalid")) i.classList.remove("invalid");
    status.textContent = "computing on a snapshot of the live book…";
    out.replaceChildren();
    const body = { ...scenario, limit: 100 };
    if (cursor) body.cursor = cursor;
    try {
      const result = await postJSON("/v1/whatif", body, { signal });
      status.textContent = `computed over ${num(result.accounts, 0)} accounts`;
      out.append(results(result, run));
    } catch (err) {
      if (signal.aborted) return;
      status.textContent = "";
      if (err instanceof ApiError && err.field) {
        const input = form.querySelector(`[data-field="${CSS.escape(err.field)}"]`) || form.querySelector(`[data-field="${CSS.escape(err.field.split("[")[0])}"]`);
        input?.classList.add("invalid");
      }
      out.append(errorBox(err));
    }
  }

  const form = el(
    "form",
    {
      id: "whatif-form",
      onsubmit: (e) => {
        e.preventDefault();
        const shocks = {};
        const depegs = {};
        for (const [a, i] of shockInputs) if (fraction(i) !== null) shocks[a] = fraction(i);
        for (const [a, i] of depegInputs) if (fraction(i) !== null) depegs[a] = fraction(i);
        scenario = { shocks, depegs, chains_down: down.filter((c) => c.checked).map((c) => c.value) };
        if (fraction(vol) !== null) scenario.vol = fraction(vol);
        run(null);
      },
    },
    table(
      [
        { label: "asset", cell: (a) => a },
        { label: "price now", class: "r", cell: (a) => num(prices.prices[a].value, 6) },
        { label: "shock (%)", cell: (a) => shockInputs.get(a) },
        { label: "de-peg vs underlying (%, LSTs)", cell: (a) => depegInputs.get(a) || el("span", { class: "muted" }, "—") },
      ],
      assets,
      { class: "form-grid" },
    ),
    el("p", {}, el("label", {}, "volatility change (%, +50 = half again) ", vol)),
    el("p", { "data-field": "chains_down" }, "chains down (collateral frozen, feeds stale): ", down.map((c) => el("label", { class: "check" }, c, ` ${c.value}`))),
    el("p", {}, el("button", { type: "submit", id: "whatif-run" }, "Run what-if"), " ", status),
  );
  root.append(section("What-if on the live book", el("p", { class: "muted" }, "Runs on a consistent snapshot of the ledger; the live book is not touched."), form), out);
}

function results(r, run) {
  return el(
    "div",
    {},
    section("Prices under the scenario", priceTable(r.prices)),
    Object.entries(r.models).map(([name, m]) => modelSection(name, m, run)),
    r.unavailable && Object.keys(r.unavailable).length
      ? section("Models not run", el("ul", {}, Object.entries(r.unavailable).map(([k, v]) => el("li", {}, `${k}: ${v}`))))
      : null,
  );
}

function priceTable(prices) {
  return table(
    [
      { label: "asset", cell: (p) => p.asset },
      { label: "before", class: "r", cell: (p) => num(p.before_usd, 6) },
      { label: "after", class: "r", cell: (p) => num(p.after_usd, 6) },
      { label: "factor", class: "r", cell: (p) => num(p.factor, 6) },
      { label: "status after", cell: (p) => [badge(p.status_after), p.reason ? el("div", { class: "muted" }, p.reason) : null] },
      { label: "σ before → after", class: "r", cell: (p) => `${pct(p.sigma_before)} → ${pct(p.sigma_after)}` },
    ],
    Object.entries(prices).map(([asset, p]) => ({ asset, ...p })),
    { id: "whatif-prices" },
  );
}

function matrix(m) {
  return table(
    [
      { label: "from \\ to", cell: (f) => badge(f) },
      ...TIERS.map((t) => ({
        label: t,
        class: "r",
        cell: (f) => {
          const c = (m.transitions[f] || {})[t];
          if (!c || !c.accounts) return el("span", { class: "muted" }, "0");
          return [num(c.accounts, 0), el("div", { class: "muted" }, `${usd(c.collateral_usd)} / ${usd(c.debt_usd)}`)];
        },
      })),
    ],
    TIERS,
    { class: "matrix", "data-model": "transitions" },
  );
}

function modelSection(name, m, run) {
  const l = m.liquidations || {};
  const acc = m.accounts || { items: [], total: 0 };
  return section(
    `Model: ${name}${m.pushed ? " (pushed on chain)" : ""}`,
    el(
      "div",
      { class: "kpis", "data-model": name },
      TIERS.map((t) =>
        el("div", { class: "kpi" }, el("div", { class: "kpi-v", "data-tier-after": `${name}:${t}` }, `${num(m.tiers_before[t], 0)} → ${num(m.tiers_after[t], 0)}`), el("div", { class: "kpi-l" }, t)),
      ),
      el("div", { class: "kpi" }, el("div", { class: "kpi-v", "data-bad-debt": name }, usd(m.bad_debt_usd)), el("div", { class: "kpi-l" }, `bad debt (${num(m.bad_debt_accounts, 0)} accounts)`)),
      el("div", { class: "kpi" }, el("div", { class: "kpi-v" }, num(m.degraded_after, 0)), el("div", { class: "kpi-l" }, "degraded after")),
    ),
    el("h3", {}, "Tier transitions (accounts; collateral / debt after)"),
    matrix(m),
    el("h3", {}, `Liquidations: ${num(l.newly_liquidatable, 0)} newly liquidatable, ${num(l.liquidatable_after, 0)} in all; repay ${usd(l.repay_usd)}, seize ${usd(l.seize_usd)}`),
    table(
      [
        { label: "asset", cell: (v) => v.asset },
        { label: "chain", cell: (v) => v.chain },
        { label: "seized", class: "r", cell: (v) => usd(v.seize_usd) },
        { label: "accounts", class: "r", cell: (v) => num(v.accounts, 0) },
        { label: "depth", class: "r", cell: (v) => usd(v.depth_usd) },
        { label: "impact", class: "r", cell: (v) => pct(v.impact) },
        { label: "sellable within slippage", class: "r", cell: (v) => usd(v.sellable_usd) },
        { label: "liquidity from", cell: (v) => v.liquidity_source ?? "—" },
      ],
      l.volume || [],
    ),
    el("h3", {}, `Accounts that become liquidatable: ${num(acc.total, 0)} (largest repay first)`),
    table(
      [
        { label: "account", cell: (a) => accountLink(a.account) },
        { label: "HF before → after", class: "r", cell: (a) => `${a.hf_before === null ? "inf" : num(a.hf_before, 4)} → ${a.hf_after === null ? "inf" : num(a.hf_after, 4)}` },
        { label: "tier", cell: (a) => [badge(a.tier_before), " → ", badge(a.tier_after)] },
        { label: "repay", class: "r", cell: (a) => usd(a.repay_usd) },
        { label: "seize per chain", cell: (a) => Object.entries(a.seize_by_chain || {}).map(([c, v]) => `${c} ${usd(v)}`).join(", ") || "—" },
        { label: "plan", cell: (a) => a.plan },
        { label: "bad debt", class: "r", cell: (a) => usd(a.bad_debt_usd) },
      ],
      acc.items,
      { "data-model-accounts": name },
    ),
    acc.next_cursor ? el("button", { type: "button", onclick: () => run(acc.next_cursor) }, "next page of accounts") : null,
  );
}

