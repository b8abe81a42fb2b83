// The user's earlier detections, loaded with the page, and the compact view for a long list.
import { showBatchExports } from "./batch.js";
import { attachTask, cardList, createCard, setMeta, setStatus, showError, state, updateCount } from "./cards.js";
import { applyStatus, follow } from "./follow.js";
import { FINAL, part } from "./util.js";

const countNote = document.getElementById("results-count");
const compact = document.getElementById("compact-toggle");
const COMPACT_KEY = "mlprod.compact";

function showCompact(on) {
  compact.setAttribute("aria-pressed", String(on));
  cardList.classList.toggle("cards--compact", on);
  for (const card of cardList.querySelectorAll(".card.is-open")) openCard(card, false);
}

// In the compact list, one card shown whole (its thumbnail or its "Show result" button).
function openCard(card, on) {
  card.classList.toggle("is-open", on);
  const button = part(card, "open");
  button.setAttribute("aria-expanded", String(on));
  button.textContent = on ? "Hide result" : "Show result";
}

export function wireCompactView() {
  let saved = false;
  try {
    saved = window.localStorage.getItem(COMPACT_KEY) === "1";
  } catch {
    // storage may be blocked; the view then starts expanded
  }
  showCompact(saved);
  cardList.addEventListener("click", (e) => {
    const trigger = e.target.closest('[data-role="open"], [data-role="thumb"]');
    if (!trigger) return;
    const card = trigger.closest(".card");
    openCard(card, !card.classList.contains("is-open"));
  });
  compact.addEventListener("click", () => {
    const on = compact.getAttribute("aria-pressed") !== "true";
    showCompact(on);
    try {
      window.localStorage.setItem(COMPACT_KEY, on ? "1" : "0");
    } catch {
      // not kept, shown all the same
    }
  });
}

function addItem(item) {
  if (cardList.querySelector(`[data-task-id="${item.task_id}"]`)) return; // sent from this page
  // a card that compared the models on a photo stays beside its others (its result names the model)
  const result = item.status && item.status.result;
  const model = item.compare_id ? (result && result.model_name) || "compared" : undefined;
  const card = createCard(item.filename, false, model);
  attachTask(card, item.task_id);
  state(card).batchId = item.batch_id || null;
  setMeta(card, item);
  if (item.status) {
    applyStatus(card, item.status);
    if (!FINAL.has(item.status.status)) follow(card);
  } else {
    const expired = item.error && item.error.code === "task_not_found";
    setStatus(card, expired ? "expired" : "unavailable");
    showError(card, expired ? "This result has expired on the server" : (item.error && item.error.detail) || "unavailable");
  }
}

export async function loadHistory() {
  let response;
  try {
    response = await fetch("/app/tasks", { headers: { Accept: "application/json" } });
  } catch {
    countNote.textContent = "Your earlier detections could not be loaded.";
    return;
  }
  if (response.status === 401) {
    window.location.assign("/login");
    return;
  }
  if (!response.ok) {
    countNote.textContent = "Your earlier detections could not be loaded.";
    return;
  }
  const { tasks } = await response.json();
  for (const item of tasks) addItem(item);
  updateCount();
  // the newest upload's batch can be exported again after a reload
  if (tasks.length && tasks[0].batch_id) showBatchExports([tasks[0].batch_id]);
}
