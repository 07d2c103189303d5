// DOM building and number formatting. Every value from the API reaches the page as a
// text node (never innerHTML), so no account, asset or chain name can inject markup.

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

const usdFmt = new Intl.NumberFormat("en-US", { style: "currency", currency: "USD", maximumFractionDigits: 0 });
const usdFine = new Intl.NumberFormat("en-US", { style: "currency", currency: "USD", maximumFractionDigits: 2 });

export function usd(x) {
  if (x === null || x === undefined) return "—";
  const v = Number(x);
  if (!Number.isFinite(v)) return "—";
  return Math.abs(v) < 1000 ? usdFine.format(v) : usdFmt.format(v);
}

export function num(x, digits = 4) {
  if (x === null || x === undefined) return "—";
  const v = Number(x);
  if (!Number.isFinite(v)) return "—";
  return v.toLocaleString("en-US", { maximumFractionDigits: digits });
}

export function pct(x, digits = 2) {
  if (x === null || x === undefined || !Number.isFinite(Number(x))) return "—";
  return `${(Number(x) * 100).toFixed(digits)}%`;
}

// The API's own text of the HF (6 decimals, or "inf" when there is no debt).
export function hf(view) {
  return view.hf_text ?? (view.hf === null ? "inf" : num(view.hf, 6));
}

export function when(ts) {
  if (ts === null || ts === undefined) return "—";
  const d = new Date(Number(ts) * 1000);
  return d.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}

export function ago(ts) {
  if (ts === null || ts === undefined) return "never";
  const s = Math.max(0, Date.now() / 1000 - Number(ts));
  if (s < 120) return `${s.toFixed(0)} s ago`;
  if (s < 7200) return `${(s / 60).toFixed(0)} min ago`;
  return `${(s / 3600).toFixed(1)} h ago`;
}

export function badge(text, kind = text) {
  return el("span", { class: `badge b-${String(kind).replace(/[^a-z_-]/gi, "")}` }, text);
}

export function accountLink(address) {
  return el("a", { href: `#/account/${address}`, class: "mono" }, address);
}

// columns: [{label, cell(row) -> node|text, class?}]
export function table(columns, rows, attrs = {}) {
  return el(
    "table",
    attrs,
    el("thead", {}, el("tr", {}, columns.map((c) => el("th", { class: c.class }, c.label)))),
    el(
      "tbody",
      {},
      rows.map((row) => el("tr", {}, columns.map((c) => el("td", { class: c.class }, c.cell(row))))),
    ),
  );
}

export function section(title, ...children) {
  return el("section", {}, el("h2", {}, title), ...children);
}

export function errorBox(err) {
  return el("div", { class: "error", role: "alert" }, String(err && err.message ? err.message : err));
}

// A nested JSON value as a readable definition list (objects) or list (arrays).
export function tree(value, depth = 0) {
  if (value === null || value === undefined) return el("span", { class: "null" }, "null");
  if (Array.isArray(value)) {
    if (value.length === 0) return el("span", { class: "null" }, "[]");
    return el("ol", { class: "tree" }, value.map((v) => el("li", {}, tree(v, depth + 1))));
  }
  if (typeof value === "object") {
    const keys = Object.keys(value);
    if (keys.length === 0) return el("span", { class: "null" }, "{}");
    return el(
      "dl",
      { class: "tree" },
      keys.map((k) => [el("dt", {}, k), el("dd", {}, tree(value[k], depth + 1))]),
    );
  }
  return el("span", { class: typeof value }, String(value));
}
