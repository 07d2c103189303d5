// Time-series charts over the vendored uPlot (window.uPlot, loaded before the modules).

import { el } from "./fmt.js";

const COLORS = ["#2563eb", "#d97706", "#dc2626", "#7c3aed", "#059669", "#0891b2", "#be185d"];
export const TIER_COLORS = {
  healthy: "#059669",
  warning: "#d97706",
  liquidatable: "#dc2626",
  insolvent: "#7c3aed",
};

// times: unix seconds; series: [{label, values, color?, stepped?}]; range: the window
// [from, to] the x axis spans (unix seconds). Returns the container; the chart is
// destroyed when `signal` aborts (the page is left).
export function lineChart({ title, times, series, range, height = 220, signal, yLabel = "" }) {
  const box = el("div", { class: "chart" }, el("h3", {}, title));
  if (!times.length) {
    box.append(el("p", { class: "muted" }, "no points recorded in this window yet"));
    return box;
  }
  const width = Math.max(320, Math.min(1100, (document.querySelector("main")?.clientWidth || 900) - 40));
  const opts = {
    width,
    height,
    scales: { x: { time: true, range: range ? () => range : undefined } },
    axes: [{}, { label: yLabel, size: 70 }],
    series: [
      {},
      ...series.map((s, i) => ({
        label: s.label,
        stroke: s.color || COLORS[i % COLORS.length],
        width: 1.5,
        spanGaps: true,
        paths: s.stepped ? window.uPlot.paths.stepped({ align: 1 }) : undefined,
      })),
    ],
  };
  const plot = new window.uPlot(opts, [times, ...series.map((s) => s.values)], box);
  signal?.addEventListener("abort", () => plot.destroy(), { once: true });
  return box;
}
