// The riskiest accounts: one server-side page of one tier at a time (GET
// /v1/accounts?tier=&limit=&cursor=), never the whole book, so it stays usable with
// 1M accounts loaded. Search: a full address opens that account (GET
// /v1/accounts/{address} answers for any account in the book); anything shorter
// filters the rows of the page on screen.

import { getJSON } from "./api.js";
import { TIERS, latestCounts } from "./book.js";
import { el, usd, num, hf, badge, accountLink, table, section } from "./fmt.js";

const SEVERE_FIRST = [...TIERS].reverse();
const ADDRESS = /^0x[0-9a-fA-F]{40}$/;
const LIMITS = [50, 100, 500];

function link(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== null && v !== undefined && v !== "") q.set(k, v);
  return `#/accounts?${q}`;
}

export async function render(root, { params, signal }) {
  const counts = await latestCounts(signal);
  let tier = params.get("tier");
  if (!tier) {
    // The worst tier that has accounts: where the risk is.
    tier = counts ? SEVERE_FIRST.find((t) => counts.tiers[t].accounts > 0) || "healthy" : "liquidatable";
  }
  if (tier !== "all" && !TIERS.includes(tier)) throw new Error(`unknown tier ${tier}`);
  const limit = LIMITS.includes(Number(params.get("limit"))) ? Number(params.get("limit")) : 100;
  const cursor = params.get("cursor");
  const q = new URLSearchParams({ limit: String(limit) });
  if (tier !== "all") q.set("tier", tier);
  if (cursor) q.set("cursor", cursor);
  const page = await getJSON(`/v1/accounts?${q}`, signal);

  const rows = [...page.accounts].sort((a, b) => (a.hf ?? Infinity) - (b.hf ?? Infinity));
  const chains = rows.length ? Object.keys(rows[0].credit_usd) : [];
  const grid = table(
    [
      { label: "account", cell: (a) => accountLink(a.account) },
      { label: "HF", class: "r", cell: (a) => el("span", { "data-hf": a.account }, hf(a)) },
      { label: "borrowing power", class: "r", cell: (a) => usd(a.borrowing_power_usd) },
      { label: "tier", cell: (a) => badge(a.tier) },
      { label: "status", cell: (a) => (a.status === "ok" ? "ok" : badge(a.status, "warning")) },
      ...chains.map((c) => ({ label: `credit ${c}`, class: "r", cell: (a) => usd(a.credit_usd[c]) })),
    ],
    rows,
    { id: "accounts" },
  );

  const search = el("input", {
    id: "search",
    type: "search",
    placeholder: "0x… full address (whole book), or part of one (this page)",
    autocomplete: "off",
    spellcheck: "false",
  });
  const hint = el("span", { class: "muted", id: "search-hint" });
  const filter = () => {
    const text = search.value.trim().toLowerCase();
    let shown = 0;
    for (const tr of grid.tBodies[0].rows) {
      const match = !text || tr.cells[0].textContent.toLowerCase().includes(text);
      tr.hidden = !match;
      shown += match ? 1 : 0;
    }
    hint.textContent = text ? `${shown} of ${rows.length} on this page` : "";
  };
  search.addEventListener("input", filter);
  const form = el(
    "form",
    {
      id: "search-form",
      onsubmit: (e) => {
        e.preventDefault();
        const text = search.value.trim();
        if (ADDRESS.test(text)) location.hash = `#/account/${text}`;
        else hint.textContent = "enter a full 0x address (42 characters) to search the whole book";
      },
    },
    search,
    el("button", { type: "submit" }, "Open account"),
    hint,
  );

  const tabs = el(
    "div",
    { class: "tabs", id: "tier-tabs" },
    [...SEVERE_FIRST, "all"].map((t) =>
      el(
        "a",
        { href: link({ tier: t, limit }), class: t === tier ? "active" : null, "data-tier": t },
        t,
        counts && t !== "all" ? ` (${num(counts.tiers[t].accounts, 0)})` : counts ? ` (${num(counts.total.accounts, 0)})` : "",
      ),
    ),
  );
  const start = Number(cursor || 0);
  const pager = el(
    "div",
    { class: "pager", id: "pager" },
    el("span", {}, `rows ${num(start + 1, 0)}–${num(start + rows.length, 0)} of ${tier === "all" ? "the book" : `tier ${tier}`}`),
    cursor ? el("a", { href: link({ tier, limit }), id: "first-page" }, "« first page") : null,
    cursor ? el("a", { href: "#", id: "prev-page", onclick: (e) => { e.preventDefault(); history.back(); } }, "‹ previous") : null,
    page.next_cursor ? el("a", { href: link({ tier, limit, cursor: page.next_cursor }), id: "next-page" }, "next page ›") : el("span", { class: "muted" }, "last page"),
    el("span", { class: "muted" }, " rows per page: "),
    LIMITS.map((n) => (n === limit ? el("b", {}, String(n)) : el("a", { href: link({ tier, limit: n }) }, String(n)))),
  );
  root.append(
    section(
      "Riskiest accounts",
      el("p", { class: "muted" }, "One page of one tier at a time, in the book's order, served by the daemon; the page on screen is sorted by HF (lowest first)."),
      form,
      tabs,
      pager,
      rows.length ? grid : el("p", { class: "muted", id: "no-accounts" }, `no ${tier} accounts`),
    ),
  );
}
