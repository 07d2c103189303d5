// The API client of every page: same-origin JSON, errors as ApiError naming the field
// exactly as the API's error body does ({"error": {"field", "message"}}).

export class ApiError extends Error {
  constructor(status, field, message) {
    super(field ? `${field}: ${message}` : message);
    this.status = status;
    this.field = field;
  }
}

async function decode(resp) {
  const text = await resp.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!resp.ok) {
    const err = (data && data.error) || {};
    throw new ApiError(resp.status, err.field ?? null, err.message || `HTTP ${resp.status}`);
  }
  return data;
}

export async function getJSON(path, signal) {
  const resp = await fetch(path, { signal, headers: { Accept: "application/json" } });
  return decode(resp);
}

export async function postJSON(path, payload, { token = null, signal } = {}) {
  const headers = { Accept: "application/json", "Content-Type": "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  const resp = await fetch(path, {
    method: "POST",
    signal,
    headers,
    body: payload === undefined ? undefined : JSON.stringify(payload),
  });
  return decode(resp);
}

export function isAbort(err) {
  return err && err.name === "AbortError";
}
