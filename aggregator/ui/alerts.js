// Alerts (GET /v1/alerts, docs/operations.md "Alerts"): what is firing now, the recent
// firing and resolved events, each webhook's delivery state and the configured rules.

import { getJSON } from "./api.js";
import { el, badge, table, section, when, ago } from "./fmt.js";

const REFRESH_MS = 10000;

export async function render(root, { signal }) {
  const body = el("div", { id: "alerts" });
  root.append(body);
  paint(body, await getJSON("/v1/alerts?limit=200", signal));
  const timer = setInterval(async () => {
    try {
      const fresh = await getJSON("/v1/alerts?limit=200", signal);
      body.replaceChildren();
      paint(body, fresh);
    } catch {
      // kept: the last good view stays; the next tick retries
    }
  }, REFRESH_MS);
  signal.addEventListener("abort", () => clearInterval(timer), { once: true });
}

function subject(a) {
  return /^0x[0-9a-fA-F]{40}$/.test(a.subject || "") ? el("a", { href: `#/account/${a.subject}`, class: "mono" }, a.subject) : a.subject;
}

function paint(body, data) {
  body.append(
    section(
      `Active (${data.active.length})`,
      data.active.length
        ? table(
            [
              { label: "severity", cell: (a) => badge(a.severity) },
              { label: "rule", cell: (a) => `${a.rule} (${a.kind})` },
              { label: "subject", cell: subject },
              { label: "message", cell: (a) => a.message },
              { label: "since", cell: (a) => `${when(a.started_at)} (${ago(a.started_at)})` },
            ],
            data.active,
            { id: "active-alerts" },
          )
        : el("p", { class: "muted", id: "no-active-alerts" }, "nothing is firing"),
    ),
    section(
      "Recent events (newest first)",
      data.recent.length
        ? table(
            [
              { label: "at", cell: (e) => when(e.at) },
              { label: "status", cell: (e) => badge(e.status, e.status === "resolved" ? "ok" : "liquidatable") },
              { label: "severity", cell: (e) => badge(e.severity) },
              { label: "rule", cell: (e) => e.rule },
              { label: "subject", cell: subject },
              { label: "message", cell: (e) => e.message },
            ],
            data.recent,
            { id: "recent-alerts" },
          )
        : el("p", { class: "muted" }, "no events yet"),
    ),
    section(
      "Webhooks",
      data.webhooks.length === 0 ? el("p", { class: "muted" }, "no webhooks configured ([[alerts.webhooks]])") : table(
        [
          { label: "name", cell: (w) => `${w.name} (${w.format})` },
          { label: "state", cell: (w) => badge(w.state, w.state === "ok" ? "ok" : "liquidatable") },
          { label: "queued", class: "r", cell: (w) => w.queued },
          { label: "sent", class: "r", cell: (w) => w.sent_total },
          { label: "failed attempts", class: "r", cell: (w) => w.failed_attempts_total },
          { label: "given up", class: "r", cell: (w) => w.given_up_total },
          { label: "dropped", class: "r", cell: (w) => w.dropped_total },
          { label: "last success", cell: (w) => ago(w.last_success_at) },
          { label: "last error", cell: (w) => w.last_error ?? "" },
        ],
        data.webhooks,
        { id: "webhooks" },
      ),
    ),
    section(
      "Rules",
      table(
        [
          { label: "rule", cell: (r) => r.name },
          { label: "kind", cell: (r) => r.kind },
          { label: "severity", cell: (r) => badge(r.severity) },
        ],
        data.rules,
        { id: "rules" },
      ),
    ),
  );
}
