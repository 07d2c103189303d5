// The live indicator: /v1/stream's health events, counted, and passed to whoever
// listens (the account page reloads when its account changes).

const listeners = new Set();

export function onHealth(fn, signal) {
  listeners.add(fn);
  signal?.addEventListener("abort", () => listeners.delete(fn), { once: true });
}

export function connectStream(badge) {
  let events = 0;
  const source = new EventSource("/v1/stream");
  source.addEventListener("open", () => {
    badge.textContent = "live";
    badge.className = "live on";
  });
  source.addEventListener("health", (e) => {
    events += 1;
    badge.textContent = `live · ${events} change${events === 1 ? "" : "s"}`;
    const data = JSON.parse(e.data);
    for (const fn of listeners) fn(data);
  });
  for (const name of ["shutdown", "overflow"]) {
    source.addEventListener(name, () => {
      badge.textContent = name === "shutdown" ? "daemon stopped" : "stream dropped (reload)";
      badge.className = "live off";
      source.close();
    });
  }
  source.addEventListener("error", () => {
    badge.textContent = "reconnecting";
    badge.className = "live off";
  });
  window.addEventListener("pagehide", () => source.close());
}
