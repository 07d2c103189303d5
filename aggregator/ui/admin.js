// Admin: pause / resume pushing (POST /v1/admin/pause|resume). The bearer token is
// typed here and kept in this tab's sessionStorage only (gone when the tab closes;
// "Forget" removes it at once); it is sent only with those two requests.

import { getJSON, postJSON } from "./api.js";
import { el, badge, table, section, errorBox, ago } from "./fmt.js";

const KEY = "aggregator.adminToken";

export async function render(root, { signal }) {
  const chains = await getJSON("/v1/chains", signal);
  const token = el("input", { type: "password", id: "admin-token", autocomplete: "off", placeholder: "AGG_ADMIN_TOKEN", value: sessionStorage.getItem(KEY) || "" });
  const out = el("div", { id: "admin-result" });
  const state = el("div", { id: "push-state" }, pushTable(chains.chains));

  async function act(action) {
    out.replaceChildren();
    const value = token.value.trim();
    if (!value) {
      out.append(errorBox("enter the admin token first"));
      return;
    }
    sessionStorage.setItem(KEY, value);
    try {
      const r = await postJSON(`/v1/admin/${action}`, undefined, { token: value, signal });
      out.append(el("p", { class: "ok" }, `pushing: ${r.paused ? "paused" : "running"}${r.enabled === false ? ` (pusher off: ${r.reason})` : ""}`));
      const fresh = await getJSON("/v1/chains", signal);
      state.replaceChildren(pushTable(fresh.chains));
    } catch (err) {
      if (signal.aborted) return;
      if (err.status === 401) sessionStorage.removeItem(KEY);
      out.append(errorBox(err));
    }
  }

  root.append(
    section(
      "Admin",
      el("p", { class: "muted" }, "Everything else on this dashboard is read-only. The token is kept in this tab only (sessionStorage) and sent only with the two requests below."),
      el(
        "form",
        { id: "admin-form", onsubmit: (e) => e.preventDefault() },
        el("label", {}, "admin token ", token),
        " ",
        el("button", { type: "button", id: "forget-token", onclick: () => { sessionStorage.removeItem(KEY); token.value = ""; } }, "Forget"),
        el("p", {}, el("button", { type: "button", id: "pause", onclick: () => act("pause") }, "Pause pushing"), " ", el("button", { type: "button", id: "resume", onclick: () => act("resume") }, "Resume pushing")),
      ),
      out,
    ),
    section("Push state per chain", state),
  );
}

function pushTable(chains) {
  return table(
    [
      { label: "chain", cell: (c) => c.chain },
      { label: "pusher", cell: (c) => (!c.pusher || !c.pusher.enabled ? el("span", { class: "muted" }, "off") : c.pusher.paused ? badge("paused", "warning") : badge("pushing", "ok")) },
      { label: "last landed", cell: (c) => (c.pusher && c.pusher.enabled ? ago(c.pusher.last_ok_at) : "—") },
      { label: "pending txs", class: "r", cell: (c) => (c.pusher && c.pusher.enabled ? c.pusher.pending_txs : "—") },
    ],
    chains,
  );
}
