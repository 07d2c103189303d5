// Facts about the book shared by the pages (the tier order is chains.units.TIERS).

import { getJSON, ApiError } from "./api.js";

export const TIERS = ["healthy", "warning", "liquidatable", "insolvent"];

export function latestSystem(history) {
  const points = (history && history.points) || [];
  return points.length ? points[points.length - 1] : null;
}

// A history route's answer, or null while history is disabled ([history] enabled =
// false: the API answers 503 naming `history`); the pages then show what they can
// without it.
export async function historyOrNull(path, signal) {
  try {
    return await getJSON(path, signal);
  } catch (err) {
    if (err instanceof ApiError && err.status === 503 && err.field === "history") return null;
    throw err;
  }
}

// The latest system sample (counts per tier), from a short window of the history.
export async function latestCounts(signal) {
  const from = Math.floor(Date.now() / 1000) - 900;
  const history = await historyOrNull(`/v1/history/system?from=${from}`, signal);
  return history && latestSystem(history);
}

// History windows the pages offer; the API picks the finest level that holds the window
// (`resolution=auto`).
export const WINDOWS = { "1h": 3600, "12h": 43200, "7d": 604800, "90d": 7776000 };
export const DEFAULT_WINDOW = "12h";

export function historyWindow(params) {
  const name = WINDOWS[params.get("w")] ? params.get("w") : DEFAULT_WINDOW;
  const to = Math.floor(Date.now() / 1000);
  return { name, from: to - WINDOWS[name], to };
}

// Links to the same page with another window: hrefFor(name) -> "#/...".
export function windowPicker(current, hrefFor) {
  const box = document.createElement("span");
  box.className = "tabs windows";
  for (const name of Object.keys(WINDOWS)) {
    const a = document.createElement("a");
    a.href = hrefFor(name);
    a.textContent = name;
    a.dataset.window = name;
    if (name === current) a.className = "active";
    box.append(a);
  }
  return box;
}
