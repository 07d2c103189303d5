// Overview: the book per tier (now and over time), USD per chain, every price with its
// sources, each chain's sync and push state. Numbers: /v1/history/system (the last
// point is the latest sample of the `history` job), /v1/prices, /v1/chains.

import { getJSON } from "./api.js";
import { lineChart, TIER_COLORS } from "./chart.js";
import { TIERS, latestSystem, historyWindow, windowPicker, historyOrNull } from "./book.js";
import { el, usd, num, pct, badge, table, section, when, ago } from "./fmt.js";

const REFRESH_MS = 15000;

function load(params, signal) {
  const w = historyWindow(params);
  return Promise.all([
    historyOrNull(`/v1/history/system?from=${w.from}&to=${w.to}`, signal),
    getJSON("/v1/prices", signal),
    getJSON("/v1/chains", signal),
  ]).then((answers) => [w, ...answers]);
}

export async function render(root, { params, signal }) {
  const body = el("div", { id: "overview" });
  paint(body, ...(await load(params, signal)), signal);
  root.append(body);
  const timer = setInterval(async () => {
    try {
      const fresh = await load(params, signal);
      body.replaceChildren();
      paint(body, ...fresh, signal);
    } catch {
      // kept: the last good view stays; the next tick retries
    }
  }, REFRESH_MS);
  signal.addEventListener("abort", () => clearInterval(timer), { once: true });
}

function paint(body, w, history, prices, chains, signal) {
  const last = latestSystem(history);
  body.append(
    section("Book", bookSummary(last), tierTable(last), tierChart(w, history, signal)),
    section("Per chain", chainTotals(last)),
    section("Prices", priceTable(prices.prices)),
    section("Chains: sync and push", chainTable(chains.chains)),
  );
}

function bookSummary(last) {
  if (!last) {
    return el("p", { class: "muted" }, "no system sample recorded yet (the history job runs every [history] interval_s)");
  }
  const t = last.total;
  return el(
    "div",
    { class: "kpis" },
    kpi("accounts", num(t.accounts, 0), "total-accounts"),
    kpi("collateral", usd(t.collateral_usd)),
    kpi("debt", usd(t.debt_usd)),
    kpi("borrowing power", usd(t.bp_usd)),
    kpi("sampled", when(last.t)),
  );
}

function kpi(label, value, id) {
  return el("div", { class: "kpi" }, el("div", { class: "kpi-v", "data-kpi": id }, value), el("div", { class: "kpi-l" }, label));
}

function tierTable(last) {
  if (!last) return null;
  return table(
    [
      { label: "tier", cell: (t) => el("a", { href: `#/accounts?tier=${t}` }, badge(t)) },
      { label: "accounts", class: "r", cell: (t) => el("span", { "data-tier-count": t }, num(last.tiers[t].accounts, 0)) },
      { label: "collateral", class: "r", cell: (t) => usd(last.tiers[t].collateral_usd) },
      { label: "debt", class: "r", cell: (t) => usd(last.tiers[t].debt_usd) },
      { label: "borrowing power", class: "r", cell: (t) => usd(last.tiers[t].bp_usd) },
    ],
    TIERS,
    { id: "tiers" },
  );
}

function tierChart(w, history, signal) {
  if (!history) return el("p", { class: "muted" }, "history is disabled ([history] enabled = false)");
  const points = history.points;
  const chart = lineChart({
    title: `Accounts per tier, last ${w.name} (${history.resolution_s} s buckets)`,
    range: [w.from, w.to],
    times: points.map((p) => p.t),
    series: TIERS.map((t) => ({
      label: t,
      color: TIER_COLORS[t],
      values: points.map((p) => p.tiers[t].accounts),
    })),
    yLabel: "accounts",
    signal,
  });
  chart.prepend(windowPicker(w.name, (name) => `#/?w=${name}`));
  return chart;
}

function chainTotals(last) {
  if (!last) return el("p", { class: "muted" }, "no system sample recorded yet");
  const names = Object.keys(last.chains);
  return table(
    [
      { label: "chain", cell: (c) => c },
      { label: "collateral", class: "r", cell: (c) => usd(last.chains[c].collateral_usd) },
      { label: "debt", class: "r", cell: (c) => usd(last.chains[c].debt_usd) },
      { label: "credit (BP allocated here)", class: "r", cell: (c) => usd(last.chains[c].credit_usd) },
    ],
    names,
    { id: "chain-totals" },
  );
}

function sourceList(sources) {
  return el(
    "ul",
    { class: "sources" },
    (sources || []).map((s) =>
      el(
        "li",
        { class: s.used ? "used" : "unused" },
        `${s.source} (${s.kind}): `,
        s.failure ? badge(s.failure, "unavailable") : num(s.value, 6),
        s.used ? " ✓" : "",
        s.reason ? el("span", { class: "muted" }, ` ${s.reason}`) : null,
      ),
    ),
  );
}

function priceTable(prices) {
  const rows = Object.values(prices);
  return table(
    [
      { label: "asset", cell: (p) => p.asset },
      { label: "price", class: "r", cell: (p) => el("span", { "data-price": p.asset }, num(p.value, 6)) },
      { label: "status", cell: (p) => [badge(p.status), p.reason ? el("div", { class: "muted" }, p.reason) : null] },
      { label: "age", cell: (p) => ago(p.timestamp) },
      { label: "spread", class: "r", cell: (p) => pct(p.spread) },
      { label: "volatility used (daily)", class: "r", cell: (p) => (p.volatility ? pct(p.volatility.used) : "—") },
      { label: "sources (✓ in the median)", cell: (p) => sourceList(p.sources) },
    ],
    rows,
    { id: "prices" },
  );
}

function pushCell(p) {
  if (!p || !p.enabled) return el("span", { class: "muted" }, `off${p && p.reason ? ` (${p.reason})` : ""}`);
  return el(
    "div",
    {},
    p.paused ? badge("paused", "warning") : p.dry_run ? badge("dry run", "warning") : badge("pushing", "ok"),
    el("div", {}, `last landed ${ago(p.last_ok_at)}, ${num(p.pushes_sent, 0)} sent, ${p.pending_txs} pending`),
    el("div", {}, `keeper ${p.keeper_balance_eth === null ? "—" : num(p.keeper_balance_eth, 4)} ETH`, p.keeper_low ? badge("low", "liquidatable") : null),
    p.last_error ? el("div", { class: "muted" }, p.last_error) : null,
  );
}

function syncCell(c) {
  if (c.fatal) return [badge("fatal", "insolvent"), el("div", { class: "muted" }, c.fatal_reason)];
  if (c.indexed === false) return el("span", { class: "muted" }, "not indexed");
  return badge(c.caught_up ? "synced" : "syncing", c.caught_up ? "ok" : "warning");
}

function chainTable(chains) {
  return table(
    [
      { label: "chain", cell: (c) => `${c.chain} (${c.chain_id})` },
      { label: "sync", cell: syncCell },
      { label: "head", class: "r", cell: (c) => num(c.head_block, 0) },
      { label: "indexed", class: "r", cell: (c) => num(c.indexed_block, 0) },
      { label: "confirmed", class: "r", cell: (c) => num(c.confirmed_block, 0) },
      { label: "lag (blocks)", class: "r", cell: (c) => el("span", { "data-lag": c.chain }, num(c.lag, 0)) },
      {
        label: "RPC endpoints",
        cell: (c) => el("ul", { class: "sources" }, (c.endpoints || []).map((e) => el("li", {}, badge(e.state, e.state === "healthy" ? "ok" : "warning"), ` ${e.url}`))),
      },
      { label: "push", cell: (c) => pushCell(c.pusher) },
    ],
    chains,
    { id: "chains" },
  );
}
