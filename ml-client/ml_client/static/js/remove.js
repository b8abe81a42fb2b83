// "Remove from list" with undo: a card is hidden at once and forgotten on the server only when
// the undo note goes away (or the page is left).
import { cardList, dispose, state, updateCount } from "./cards.js";
import { announce, csrf, part } from "./util.js";

const UNDO_MS = 8000;
const toast = document.getElementById("toast");
const toastText = part(toast, "toast-text");
const undoButton = part(toast, "undo");
let pending = [];
let timer = null;

function forgetOnServer(card, keepalive) {
  const { taskId } = state(card);
  if (!taskId) return Promise.resolve(true);
  return fetch(`/app/tasks/${taskId}`, {
    method: "DELETE",
    headers: { "X-CSRF-Token": csrf, Accept: "application/json" },
    keepalive,
  })
    .then((r) => r.ok || r.status === 404)
    .catch(() => false);
}

function nextFocus(card) {
  let next = card.nextElementSibling;
  while (next && next.hidden) next = next.nextElementSibling;
  let prev = card.previousElementSibling;
  while (prev && prev.hidden) prev = prev.previousElementSibling;
  const target = next || prev;
  return target ? part(target, "forget") : document.getElementById("file-input");
}

async function commit(keepalive) {
  const cards = pending;
  pending = [];
  window.clearTimeout(timer);
  const focusNext = toast.contains(document.activeElement) && cards.length ? nextFocus(cards[cards.length - 1]) : null;
  toast.hidden = true;
  // every request leaves at once: on `pagehide` there is no later turn to send the rest
  const done = await Promise.all(cards.map((card) => forgetOnServer(card, keepalive)));
  for (const [i, card] of cards.entries()) {
    if (done[i]) {
      dispose(card);
    } else {
      card.hidden = false;
      const box = part(card, "error");
      box.textContent = "It could not be removed; try again.";
      box.hidden = false;
    }
  }
  updateCount();
  if (focusNext) focusNext.focus();
}

function undo() {
  const cards = pending;
  pending = [];
  window.clearTimeout(timer);
  toast.hidden = true;
  for (const card of cards) card.hidden = false;
  updateCount();
  announce(cards.length === 1 ? `${state(cards[0]).filename} is back in the list` : `${cards.length} images are back in the list`);
  if (cards.length) part(cards[0], "forget").focus();
}

export function forget(card) {
  pending.push(card);
  card.hidden = true;
  updateCount();
  const n = pending.length;
  toastText.textContent = n === 1 ? `“${state(card).filename}” removed from the list.` : `${n} images removed from the list.`;
  toast.hidden = false;
  announce(`${toastText.textContent} Undo is available for a few seconds`);
  undoButton.focus(); // a second Enter brings the card back instead of removing the next one
  window.clearTimeout(timer);
  timer = window.setTimeout(() => commit(false), UNDO_MS);
}

undoButton.addEventListener("click", undo);
part(toast, "dismiss").addEventListener("click", () => commit(false));
window.addEventListener("pagehide", () => {
  if (pending.length) commit(true);
});
cardList.addEventListener("click", (e) => {
  const button = e.target.closest('[data-role="forget"]');
  if (button) forget(button.closest(".card"));
});
