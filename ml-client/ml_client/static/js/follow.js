// Following a task: server-sent events, or polling with backoff when they are not available.
import { setMeta, setStatus, showError, state, statusText } from "./cards.js";
import { renderResult } from "./result.js";
import { FINAL, announce, plural } from "./util.js";

const POLL_MAX_DELAY_MS = 15000;
// The API's codes for a file refused before any detection, with the HTTP status a single upload
// of it is answered with (ml_client/pages.py REFUSALS).
const REFUSALS = JSON.parse(document.getElementById("refusals").textContent);
const PREFIX = { 413: "Too large", 415: "Not an image", 422: "Not a usable image", 429: "Too many uploads", 503: "Service busy" };

export function explainHttpError(card, status, body) {
  if (status === 401) return showError(card, "Your session has ended", true);
  const detail = body && body.detail ? body.detail : `the server answered ${status}`;
  const prefix = PREFIX[status];
  return showError(card, prefix ? `${prefix}: ${detail}` : detail);
}

// A batch item the API refused (not an image, too large) was never sent to detection: its card
// says so in the words a single upload of the same file gets, not "Detection failed".
function applyRefusal(card, status) {
  const error = status.error || {};
  const code = REFUSALS[error.type];
  if (status.status !== "failed" || !code) return false;
  if (card.dataset.status !== "error") {
    setStatus(card, "error");
    setMeta(card, status);
    explainHttpError(card, code, { detail: error.message });
  }
  return true;
}

export function applyStatus(card, status) {
  if (applyRefusal(card, status)) return;
  const st = state(card);
  const changed = card.dataset.status !== status.status;
  setStatus(card, status.status);
  setMeta(card, status);
  if (!changed) return;
  if (status.status === "succeeded" && status.result) {
    renderResult(card, status);
    announce(`${st.filename}: done, ${plural(status.result.detections.length, "object", "objects")} found`);
  } else if (status.status === "failed") {
    const err = status.error || {};
    showError(card, `Detection failed: ${err.message || err.type || "unknown error"}`);
  } else {
    announce(`${st.filename}: ${statusText(status.status)}`);
  }
}

function poll(card, attempt) {
  const st = state(card);
  const delay = Math.min(1000 * 2 ** attempt, POLL_MAX_DELAY_MS) * (0.8 + Math.random() * 0.4);
  st.timer = window.setTimeout(async () => {
    let response;
    try {
      response = await fetch(`/app/tasks/${st.taskId}`, { headers: { Accept: "application/json" } });
    } catch {
      return poll(card, attempt + 1);
    }
    if (response.ok) {
      const status = await response.json();
      applyStatus(card, status);
      if (!FINAL.has(status.status)) poll(card, attempt + 1);
    } else if (response.status === 401 || response.status === 404) {
      setStatus(card, "error");
      explainHttpError(card, response.status, await response.json().catch(() => null));
    } else {
      poll(card, attempt + 1);
    }
    return undefined;
  }, attempt === 0 ? 0 : delay);
}

export function follow(card) {
  const st = state(card);
  if (!("EventSource" in window)) return poll(card, 0);
  const source = new EventSource(`/app/tasks/${st.taskId}/events`);
  st.source = source;
  let failures = 0;
  source.addEventListener("status", (e) => {
    failures = 0;
    const status = JSON.parse(e.data);
    applyStatus(card, status);
    if (FINAL.has(status.status)) source.close();
  });
  source.addEventListener("error", (e) => {
    // `e.data` is set for an `event: error` sent by the server; otherwise the connection broke
    if (e.data !== undefined || source.readyState === EventSource.CLOSED || ++failures >= 2) {
      source.close();
      poll(card, 0);
    }
  });
  return undefined;
}
