// The dashboard's router: #/page/arg?query -> a page module's render(root, ctx).
// Each render gets an AbortSignal that fires when the page is left: it cancels the
// page's requests, timers and charts, so a slow answer never paints over another page.

import { errorBox } from "./fmt.js";
import { isAbort } from "./api.js";
import * as overview from "./overview.js";
import * as accounts from "./accounts.js";
import * as account from "./account.js";
import * as whatif from "./whatif.js";
import * as alerts from "./alerts.js";
import * as admin from "./admin.js";
import { connectStream } from "./stream.js";

const PAGES = { "": overview, overview, accounts, account, whatif, alerts, admin };
const view = document.getElementById("view");
let leave = null;

function parseHash() {
  const raw = location.hash.replace(/^#\/?/, "");
  const [path, query] = raw.split("?", 2);
  const [page, ...rest] = path.split("/");
  return {
    page: page || "overview",
    arg: rest.length ? decodeURIComponent(rest.join("/")) : null,
    params: new URLSearchParams(query || ""),
  };
}

async function render() {
  if (leave) leave.abort();
  const controller = new AbortController();
  leave = controller;
  const route = parseHash();
  const module = PAGES[route.page];
  for (const a of document.querySelectorAll("nav a")) {
    a.classList.toggle("active", a.dataset.page === (module === account ? "accounts" : route.page));
  }
  view.replaceChildren();
  view.dataset.page = route.page;
  view.dataset.state = "loading";
  if (!module) {
    view.append(errorBox(`no such page: ${route.page}`));
    view.dataset.state = "ready";
    return;
  }
  try {
    await module.render(view, { ...route, signal: controller.signal });
  } catch (err) {
    if (isAbort(err) || controller.signal.aborted) return;
    view.append(errorBox(err));
  }
  if (!controller.signal.aborted) view.dataset.state = "ready";
}

window.addEventListener("hashchange", render);
connectStream(document.getElementById("live"));
render();
