// One account: its figures and how each is computed (the explanation of
// GET /v1/accounts/{address}), its history (GET /v1/history/accounts/{address}) and
// what each chain's HealthRegistry holds now (`onchain` of the breakdown).

import { getJSON, isAbort } from "./api.js";
import { lineChart } from "./chart.js";
import { onHealth } from "./stream.js";
import { historyWindow, windowPicker, historyOrNull } from "./book.js";
import { el, usd, num, pct, hf, badge, table, section, tree, when, ago, errorBox } from "./fmt.js";

export async function render(root, { arg, params, signal }) {
  if (!arg) throw new Error("no account given");
  const address = encodeURIComponent(arg);
  const w = historyWindow(params);
  const [detail, history] = await Promise.all([
    getJSON(`/v1/accounts/${address}`, signal),
    historyOrNull(`/v1/history/accounts/${address}?from=${w.from}&to=${w.to}`, signal),
  ]);
  if (history) {
    history.window = w;
    history.href = (name) => `#/account/${address}?w=${name}`;
  }
  const body = el("div", { id: "account" });
  root.append(body);
  paint(body, detail, history, signal);
  // A health event for this account: read the breakdown again.
  onHealth(async (event) => {
    if (String(event.account || "").toLowerCase() !== detail.account.toLowerCase()) return;
    try {
      const fresh = await getJSON(`/v1/accounts/${address}`, signal);
      body.replaceChildren();
      paint(body, fresh, history, signal);
    } catch {
      // kept: the view on screen stays until the next change
    }
  }, signal);
}

function paint(body, d, history, signal) {
  body.append(
    el("h1", { class: "mono" }, d.account),
    summary(d),
    section("How the health factor and borrowing power are computed", formula(d)),
    section("Positions per chain", positions(d)),
    section("Per asset: price, haircut, weights", assets(d)),
    section("Credit per chain", credit(d)),
    section("Margin models side by side", margins(d, signal)),
    section("On chain now (each HealthRegistry, last read by the pusher)", onchain(d)),
    section("History", historyCharts(history, signal)),
    section("As of (blocks per chain)", asOf(d)),
    section("Everything the API returned", el("details", {}, el("summary", {}, "the full explanation, field by field"), tree(d))),
  );
}

function kpi(label, value, attrs = {}) {
  return el("div", { class: "kpi" }, el("div", { class: "kpi-v", ...attrs }, value), el("div", { class: "kpi-l" }, label));
}

function summary(d) {
  return el(
    "div",
    { class: "kpis" },
    kpi("health factor", hf(d), { id: "account-hf" }),
    kpi("tier", badge(d.tier), { id: "account-tier" }),
    kpi("borrowing power", usd(d.borrowing_power_usd)),
    kpi("collateral", usd(d.collateral_value_usd)),
    kpi("debt", usd(d.debt_usd)),
    kpi("status", d.degraded ? badge("degraded", "warning") : "ok"),
  );
}

function formula(d) {
  const p = d.params || {};
  const rows = [
    ["model", `${d.mode ?? "standard"}${d.group ? ` (correlation group ${d.group})` : ""}`],
    ["C_liq (Σ value × lt_eff)", usd(d.c_liq_usd)],
    ["C_borrow (Σ value × ltv_eff)", usd(d.c_borrow_usd)],
    ["D (debt)", usd(d.debt_usd)],
    ["HF = C_liq / D", `${usd(d.c_liq_usd)} / ${usd(d.debt_usd)} = ${hf(d)}`],
    ["borrowing power = max(0, C_borrow − D)", usd(d.borrowing_power_usd)],
    ["tier", `${d.tier} (insolvent: collateral < D; liquidatable: HF < 1; warning: HF < ${p.warn_hf ?? "—"})`],
    ["haircut parameters", `z ${p.z ?? "—"}, horizon ${p.horizon_days ?? "—"} d, impact ${p.impact ?? "—"}`],
  ];
  // The plan is the pushed model's (`model`); in portfolio / var mode the standard
  // model's plan comes beside it as `standard_liquidation`.
  const planText = (l) =>
    l.kind === "unavailable"
      ? `unavailable (${l.model} model): ${l.reason ?? ""}`
      : `${l.kind}${l.model ? ` (${l.model} model)` : ""}: repay ${usd(l.repay_usd)}` +
        (l.chain ? ` on ${l.chain}, seizing ${l.asset ?? ""} worth ${usd(l.seize_usd)}` : "") +
        ` to reach HF ${l.target_hf ?? p.target_hf ?? "—"}` +
        (!l.model || l.model === "standard" ? ` (close factor ${d.close_factor ?? "—"})` : "");
  rows.push(["liquidation plan", d.liquidation ? planText(d.liquidation) : "none (HF ≥ 1)"]);
  if ("standard_liquidation" in d) {
    const s = d.standard_liquidation;
    rows.push(["standard model's plan", s ? planText(s) : "none (standard HF ≥ 1)"]);
  }
  if (d.degraded_assets && d.degraded_assets.length) rows.push(["degraded assets", d.degraded_assets.join(", ")]);
  return table(
    [
      { label: "figure", cell: (r) => r[0] },
      { label: "value", cell: (r) => r[1] },
    ],
    rows,
    { class: "kv" },
  );
}

function positions(d) {
  const rows = [];
  for (const [chain, list] of Object.entries(d.positions || {})) for (const r of list) rows.push({ chain, ...r });
  if (!rows.length) return el("p", { class: "muted" }, "no positions");
  return table(
    [
      { label: "chain", cell: (r) => r.chain },
      { label: "asset", cell: (r) => r.asset },
      { label: "side", cell: (r) => r.side },
      { label: "amount (counted)", class: "r", cell: (r) => r.amount },
      { label: "rule", cell: (r) => r.counted_rule ?? "" },
      { label: "head (raw)", class: "r mono", cell: (r) => r.head },
      { label: "confirmed (raw)", class: "r mono", cell: (r) => r.confirmed },
      { label: "value", class: "r", cell: (r) => usd(r.value_usd) },
    ],
    rows,
    { id: "positions" },
  );
}

function priceCell(p) {
  if (!p) return "—";
  return el(
    "div",
    {},
    `${num(p.used_usd, 6)} `,
    badge(p.status),
    p.reported_usd !== undefined && p.reported_usd !== p.used_usd ? el("div", { class: "muted" }, `reported ${num(p.reported_usd, 6)}`) : null,
    p.valued_at ? el("div", { class: "muted" }, `valued at ${p.valued_at}`) : null,
  );
}

function haircutCell(c) {
  if (!c || !c.haircut) return "—";
  const h = c.haircut;
  return `${pct(h.total, 3)} = vol ${pct(h.vol_term, 3)} (σ ${pct(c.sigma, 2)} ${c.sigma_kind ?? ""}) + concentration ${pct(h.concentration_term, 3)}${h.depth_usd ? ` (depth ${usd(h.depth_usd)})` : ""}`;
}

function assets(d) {
  const rows = Object.entries(d.assets || {}).map(([symbol, a]) => ({ symbol, ...a }));
  return el(
    "div",
    {},
    table(
      [
        { label: "asset", cell: (a) => a.symbol },
        { label: "price used", cell: (a) => priceCell(a.price) },
        { label: "collateral", class: "r", cell: (a) => [a.collateral_amount, el("div", { class: "muted" }, usd(a.collateral && a.collateral.value_usd))] },
        { label: "haircut", cell: (a) => haircutCell(a.collateral) },
        { label: "caps (lt / ltv)", cell: (a) => (a.collateral && a.collateral.caps ? `${a.collateral.caps.source}: ${a.collateral.caps.lt} / ${a.collateral.caps.ltv}` : "—") },
        { label: "lt_eff / ltv_eff", cell: (a) => (a.collateral ? `${num(a.collateral.lt_eff, 6)} / ${num(a.collateral.ltv_eff, 6)}` : "—") },
        { label: "C_liq / C_borrow", class: "r", cell: (a) => (a.collateral ? `${usd(a.collateral.c_liq_usd)} / ${usd(a.collateral.c_borrow_usd)}` : "—") },
        { label: "debt", class: "r", cell: (a) => [a.debt_amount, el("div", { class: "muted" }, usd(a.debt_value_usd))] },
      ],
      rows,
      { id: "assets" },
    ),
    rows.map((a) =>
      el(
        "details",
        { class: "asset-detail" },
        el("summary", {}, `${a.symbol}: price sources, volatility, everything`),
        tree({ price: a.price, collateral: a.collateral, volatility: a.volatility }),
      ),
    ),
  );
}

function credit(d) {
  const c = d.credit || {};
  const rows = Object.entries(c.chains || {}).map(([chain, v]) => ({ chain, ...v }));
  return el(
    "div",
    {},
    el("p", {}, `policy ${c.policy ?? "—"}; ${c.rule ?? ""}`),
    table(
      [
        { label: "chain", cell: (r) => r.chain },
        { label: "weight", class: "r", cell: (r) => num(r.weight) },
        { label: "static share", class: "r", cell: (r) => pct(r.static_share) },
        { label: "recent use", class: "r", cell: (r) => usd(r.recent_consumption_usd) },
        { label: "share", class: "r", cell: (r) => pct(r.share) },
        { label: "credit", class: "r", cell: (r) => usd(r.credit_usd) },
        { label: "capped by previous", cell: (r) => (r.capped_by_previous ? "yes" : "no") },
      ],
      rows,
      { id: "credit" },
    ),
  );
}

function onchain(d) {
  const oc = d.onchain;
  if (!oc) return el("p", { class: "muted" }, "not read (the pusher is off)");
  const rows = Object.entries(oc).map(([chain, v]) => ({ chain, v }));
  return table(
    [
      { label: "chain", cell: (r) => r.chain },
      { label: "HF on chain", class: "r", cell: (r) => (r.v && r.v.entry ? (r.v.entry.hf === null ? "inf" : num(r.v.entry.hf, 6)) : "—") },
      { label: "tier on chain", cell: (r) => (r.v && r.v.entry ? badge(r.v.entry.tier) : "empty slot") },
      { label: "credit on chain", class: "r", cell: (r) => (r.v && r.v.entry ? usd(Number(r.v.entry.credit_usd6) / 1e6) : "—") },
      { label: "credit computed", class: "r", cell: (r) => usd(d.credit && d.credit.chains[r.chain] ? d.credit.chains[r.chain].credit_usd : null) },
      { label: "entry as of", cell: (r) => (r.v && r.v.entry ? when(r.v.entry.as_of) : "—") },
      { label: "read", cell: (r) => (r.v ? `block ${r.v.block}, ${ago(r.v.read_at)}` : "not read yet") },
    ],
    rows,
    { id: "onchain" },
  );
}

function historyCharts(h, signal) {
  if (!h) return el("p", { class: "muted" }, "history is disabled ([history] enabled = false)");
  // A point holds until the next one (docs/operations.md "History"): the last one is
  // drawn on to the window's end, so an account that has not moved shows a line.
  const pts = h.points || [];
  const last = pts[pts.length - 1];
  const drawn = last && last.t < h.window.to ? [...pts, { ...last, t: h.window.to }] : pts;
  const times = drawn.map((p) => p.t);
  const range = [h.window.from, h.window.to];
  return el(
    "div",
    {},
    windowPicker(h.window.name, h.href),
    el("p", { class: "muted" }, `${h.model ?? ""} model, ${h.resolution_s} s buckets, last ${h.window.name}; a point holds until the next one.`),
    lineChart({
      range,
      title: "Health factor (last and lowest per bucket; no debt is not drawn)",
      times,
      series: [
        { label: "HF", values: drawn.map((p) => p.hf), stepped: true },
        { label: "lowest HF", values: drawn.map((p) => p.hf_min), stepped: true },
      ],
      signal,
    }),
    lineChart({
      range,
      title: "USD",
      times,
      series: [
        { label: "collateral", values: drawn.map((p) => p.collateral_usd), stepped: true },
        { label: "debt", values: drawn.map((p) => p.debt_usd), stepped: true },
        { label: "borrowing power", values: drawn.map((p) => p.bp_usd), stepped: true },
      ],
      signal,
    }),
  );
}

function asOf(d) {
  const rows = Object.entries(d.as_of || {}).map(([chain, v]) => ({ chain, ...v }));
  if (!rows.length) return el("p", { class: "muted" }, "no chain indexed");
  return table(
    [
      { label: "chain", cell: (r) => r.chain },
      { label: "indexed", class: "r", cell: (r) => num(r.indexed_block, 0) },
      { label: "confirmed", class: "r", cell: (r) => num(r.confirmed_block, 0) },
      { label: "head", class: "r", cell: (r) => num(r.head_block, 0) },
    ],
    rows,
  );
}

// GET /v1/accounts/{address}/margin evaluates the portfolio (and VaR) model for this
// one account: read only when the operator opens the section.
function margins(d, signal) {
  const box = el("details", { id: "margin" }, el("summary", {}, "standard, portfolio and VaR figures of this account (computed when opened)"));
  let loaded = false;
  box.addEventListener("toggle", async () => {
    if (!box.open || loaded) return;
    loaded = true;
    try {
      const m = await getJSON(`/v1/accounts/${encodeURIComponent(d.account)}/margin`, signal);
      box.append(marginTable(m));
    } catch (err) {
      if (!isAbort(err)) box.append(errorBox(err));
    }
  });
  return box;
}

function cell(v) {
  if (v === null || v === undefined) return "—";
  if (typeof v === "number") return num(v, 6);
  return String(v);
}

function marginTable(m) {
  const models = ["standard", "portfolio", "var"].filter((k) => m[k] && typeof m[k] === "object");
  const keys = [];
  for (const k of models) for (const [key, v] of Object.entries(m[k])) if (typeof v !== "object" || v === null) if (!keys.includes(key)) keys.push(key);
  const rest = Object.fromEntries(Object.entries(m).filter(([k]) => !models.includes(k) && k !== "account"));
  return el(
    "div",
    {},
    el("p", {}, `pushed model ([portfolio] mode): ${m.mode}`),
    table(
      [{ label: "figure", cell: (k) => k }, ...models.map((name) => ({ label: name, class: "r", cell: (k) => cell(m[name][k]) }))],
      keys,
      { id: "margin-table" },
    ),
    el("details", {}, el("summary", {}, "greeks and the rest"), tree(rest)),
  );
}
