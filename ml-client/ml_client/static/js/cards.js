// One card per image: status badge, errors, timing; a card tells the list when its state changes.
import { announce, part, sentence } from "./util.js";

const STATUS_TEXT = {
  waiting: "Waiting",
  uploading: "Uploading",
  queued: "Queued",
  started: "Detecting…",
  succeeded: "Done",
  failed: "Failed",
  error: "Not sent",
  expired: "Expired",
  unavailable: "Unavailable",
};

export const cardList = document.getElementById("cards");
const template = document.getElementById("card-template");
const emptyNote = document.getElementById("empty");
const countNote = document.getElementById("results-count");
const states = new WeakMap();
let cardCount = 0;

export const state = (card) => states.get(card);
export const statusText = (status) => STATUS_TEXT[status] || status;

export function visibleCards() {
  return Array.from(cardList.children).filter((card) => !card.hidden);
}

export function updateCount() {
  const n = visibleCards().length;
  emptyNote.hidden = n > 0;
  countNote.textContent = n === 1 ? "1 image" : n ? `${n} images` : "";
}

// A card for `filename`; with `model`, one of the cards that compare the models on one photo.
export function createCard(filename, atTop, model) {
  const card = template.content.firstElementChild.cloneNode(true);
  const id = `card-${++cardCount}`;
  const title = part(card, "title");
  title.id = `${id}-title`;
  title.textContent = model ? `${filename} · ${model}` : filename;
  if (model) {
    card.classList.add("card--compare");
    card.dataset.model = model;
  }
  card.querySelector("article").setAttribute("aria-labelledby", title.id);
  part(card, "objects").setAttribute("aria-label", `Detected objects in ${title.textContent}`);
  const slider = part(card, "slider");
  slider.id = `${id}-slider`;
  part(card, "slider-label").htmlFor = slider.id;
  states.set(card, { filename, taskId: null, objectUrl: null, source: null, timer: null });
  if (atTop) cardList.prepend(card);
  else cardList.append(card);
  updateCount();
  return card;
}

export function setStatus(card, status) {
  const badge = part(card, "badge");
  badge.textContent = statusText(status);
  badge.dataset.status = status;
  card.dataset.status = status;
  cardList.dispatchEvent(new CustomEvent("card-status", { detail: { card, status } }));
}

export function showError(card, message, linkToLogin) {
  const box = part(card, "error");
  box.textContent = sentence(message);
  if (linkToLogin) {
    const link = document.createElement("a");
    link.href = "/login";
    link.textContent = "Sign in again";
    box.append(" ", link);
  }
  box.hidden = false;
  part(card, "progress").hidden = true;
  announce(`${state(card).filename}: ${box.textContent}`);
}

export function setMeta(card, status) {
  const bits = [];
  const created = status.created_at || status.submitted_at;
  if (created) bits.push(`Sent ${new Date(created).toLocaleString()}`);
  if (status.finished_at && status.created_at) {
    const s = (Date.parse(status.finished_at) - Date.parse(status.created_at)) / 1000;
    if (s >= 0) bits.push(`ready after ${s.toFixed(1)} s`);
  }
  part(card, "meta").textContent = bits.join(" · ");
}

export function attachTask(card, taskId) {
  state(card).taskId = taskId;
  card.dataset.taskId = taskId;
  // the history, read while this upload was under way, may have listed the task already
  for (const other of cardList.querySelectorAll(`[data-task-id="${taskId}"]`)) {
    if (other !== card) dispose(other);
  }
}

// Stop following a card's task and free what it holds; the card leaves the page.
export function dispose(card) {
  const st = state(card);
  if (st.source) st.source.close();
  if (st.timer) window.clearTimeout(st.timer);
  if (st.resizeObserver) st.resizeObserver.disconnect();
  if (st.objectUrl) URL.revokeObjectURL(st.objectUrl);
  card.remove();
  updateCount();
}
