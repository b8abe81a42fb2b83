// An image seen large: a dialog that opens with the whole photo fitted in it; zoom with the
// buttons, + and -, Ctrl+wheel; pan by dragging, swiping or with the arrow keys; 0 fits again.
// Labels keep the same size on screen at every zoom, as in Label Studio.
import { drawOverlay } from "./boxes.js";
import { state } from "./cards.js";
import { part } from "./util.js";

const dialog = document.getElementById("zoom");
const view = part(dialog, "view");
const canvas = part(dialog, "canvas");
const level = part(dialog, "level");
const STEPS = [1, 1.5, 2, 3, 4, 6, 8];
const LABEL_PX = 13;
const ARROW_PAN = 0.15; // of the view's size per key press
let step = 0;
let shown = null; // {card, W, H, overlay, apply}

// The scale (CSS px per image pixel) that shows the whole photo in the view.
function fitScale() {
  const { W, H } = shown;
  return Math.min(view.clientWidth / W, view.clientHeight / H);
}

function layout(focus) {
  if (!shown) return;
  const { W, H, overlay } = shown;
  const oldWidth = canvas.offsetWidth || 1;
  const scale = fitScale() * STEPS[step];
  const width = W * scale;
  const fx = focus ? focus[0] : view.clientWidth / 2;
  const fy = focus ? focus[1] : view.clientHeight / 2;
  const x = (view.scrollLeft + fx - canvas.offsetLeft) / oldWidth;
  const y = (view.scrollTop + fy - canvas.offsetTop) / (canvas.offsetHeight || 1);
  canvas.style.width = `${width}px`;
  canvas.style.height = `${H * scale}px`;
  if (drawOverlay(overlay, state(shown.card).detections, [W, H], width, LABEL_PX)) shown.apply();
  level.textContent = `${Math.round(STEPS[step] * 100)}%`;
  view.scrollLeft = x * width + canvas.offsetLeft - fx;
  view.scrollTop = y * H * scale + canvas.offsetTop - fy;
}

function setZoom(next, focus) {
  step = Math.min(Math.max(0, next), STEPS.length - 1);
  layout(focus);
}

// The large view of `card`'s result; `apply(overlay)` shows the boxes the card shows.
export function openZoom(card, apply) {
  const st = state(card);
  const [W, H] = st.size;
  const stage = document.createElement("div");
  stage.className = "stage";
  const img = part(card, "image").cloneNode();
  img.removeAttribute("data-role");
  img.draggable = false;
  const overlay = part(card, "overlay").cloneNode(false);
  overlay.removeAttribute("data-role");
  overlay.removeAttribute("data-font-size");
  stage.append(img, overlay);
  canvas.replaceChildren(stage);
  canvas.style.width = "0px"; // no scroll bars left from the last image while this one is fitted
  canvas.style.height = "0px";
  part(dialog, "title").textContent = part(card, "title").textContent;
  shown = { card, W, H, overlay, apply: () => apply(overlay) };
  step = 0;
  dialog.showModal();
  layout();
  view.focus();
}

function pan(dx, dy) {
  view.scrollLeft += dx * view.clientWidth * ARROW_PAN;
  view.scrollTop += dy * view.clientHeight * ARROW_PAN;
}

const KEYS = {
  "+": () => setZoom(step + 1),
  "=": () => setZoom(step + 1),
  "-": () => setZoom(step - 1),
  _: () => setZoom(step - 1),
  0: () => setZoom(0),
  ArrowLeft: () => pan(-1, 0),
  ArrowRight: () => pan(1, 0),
  ArrowUp: () => pan(0, -1),
  ArrowDown: () => pan(0, 1),
};

dialog.addEventListener("keydown", (e) => {
  const action = KEYS[e.key];
  if (!action || e.ctrlKey || e.metaKey || e.altKey) return;
  e.preventDefault();
  action();
});
part(dialog, "zoom-in").addEventListener("click", () => setZoom(step + 1));
part(dialog, "zoom-out").addEventListener("click", () => setZoom(step - 1));
part(dialog, "zoom-reset").addEventListener("click", () => setZoom(0));
part(dialog, "close").addEventListener("click", () => dialog.close());
dialog.addEventListener("close", () => {
  shown = null;
  canvas.replaceChildren();
});
dialog.addEventListener("click", (e) => {
  if (e.target === dialog) dialog.close(); // a click on the backdrop
});
if ("ResizeObserver" in window) new ResizeObserver(() => layout()).observe(view);
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
  if (e.pointerType !== "mouse" || e.button !== 0) return; // touch pans by scrolling natively
  e.preventDefault(); // no text selection, no image drag
  view.focus({ preventScroll: true });
  drag = { x: e.clientX, y: e.clientY, left: view.scrollLeft, top: view.scrollTop };
  view.setPointerCapture(e.pointerId);
  view.classList.add("is-panning");
});
view.addEventListener("pointermove", (e) => {
  if (!drag) return;
  view.scrollLeft = drag.left - (e.clientX - drag.x);
  view.scrollTop = drag.top - (e.clientY - drag.y);
});
for (const type of ["pointerup", "pointercancel"]) {
  view.addEventListener(type, () => {
    drag = null;
    view.classList.remove("is-panning");
  });
}
