// Facts about the book shared by the pages (the tier order is chains.units.TIERS).

import { getJSON } from "./api.js";

export const TIERS = ["healthy", "warning", "liquidatable", "insolvent"];

export function latestSystem(history) {
  const points = history.points || [];
  return points.length ? points[points.length - 1] : null;
}

// The latest system sample (counts per tier), from a short window of the history.
export async function latestCounts(signal) {
  const from = Math.floor(Date.now() / 1000) - 900;
  const history = await getJSON(`/v1/history/system?from=${from}`, signal);
  return latestSystem(history);
}
