// An image seen large: a dialog with zoom buttons or Ctrl+wheel, and drag (or swipe) to pan.
import { part } from "./util.js";

const dialog = document.getElementById("zoom");
const view = part(dialog, "view");
const canvas = part(dialog, "canvas");
const level = part(dialog, "level");
const STEPS = [1, 1.5, 2, 3, 4, 6, 8];
let step = 0;

function setZoom(next, focus) {
  const old = STEPS[step];
  step = Math.min(Math.max(0, next), STEPS.length - 1);
  const z = STEPS[step];
  const fx = focus ? focus[0] : view.clientWidth / 2;
  const fy = focus ? focus[1] : view.clientHeight / 2;
  const x = (view.scrollLeft + fx) / old;
  const y = (view.scrollTop + fy) / old;
  canvas.style.width = `${z * 100}%`;
  level.textContent = `${Math.round(z * 100)}%`;
  view.scrollLeft = x * z - fx;
  view.scrollTop = y * z - fy;
}

export function openZoom(card) {
  const stage = part(card, "stage");
  const copy = stage.cloneNode(true);
  copy.removeAttribute("data-role");
  copy.querySelector("img").alt = part(card, "image").alt;
  canvas.replaceChildren(copy);
  part(dialog, "title").textContent = part(card, "title").textContent;
  step = 0;
  canvas.style.width = "100%";
  level.textContent = "100%";
  dialog.showModal();
}

part(dialog, "zoom-in").addEventListener("click", () => setZoom(step + 1));
part(dialog, "zoom-out").addEventListener("click", () => setZoom(step - 1));
part(dialog, "zoom-reset").addEventListener("click", () => setZoom(0));
part(dialog, "close").addEventListener("click", () => dialog.close());
dialog.addEventListener("click", (e) => {
  if (e.target === dialog) dialog.close(); // a click on the backdrop
});
view.addEventListener(
  "wheel",
  (e) => {
    if (!e.ctrlKey && !e.metaKey) return; // the plain wheel scrolls (pans)
    e.preventDefault();
    const r = view.getBoundingClientRect();
    setZoom(step + (e.deltaY < 0 ? 1 : -1), [e.clientX - r.left, e.clientY - r.top]);
  },
  { passive: false },
);
let drag = null;
view.addEventListener("pointerdown", (e) => {
  if (e.pointerType !== "mouse") return; // touch pans by scrolling natively
  drag = { x: e.clientX, y: e.clientY, left: view.scrollLeft, top: view.scrollTop };
  view.setPointerCapture(e.pointerId);
});
view.addEventListener("pointermove", (e) => {
  if (!drag) return;
  view.scrollLeft = drag.left - (e.clientX - drag.x);
  view.scrollTop = drag.top - (e.clientY - drag.y);
});
view.addEventListener("pointerup", () => {
  drag = null;
});
