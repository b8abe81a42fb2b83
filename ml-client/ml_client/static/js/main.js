// mlprod web client: wires the page's parts together (uploads, results, history, removal).
import { cardList } from "./cards.js";
import { loadHistory, wireCompactView } from "./history.js";
import { loadModels } from "./models.js";
import "./remove.js";
import { showBoxes } from "./result.js";
import { enqueueFiles } from "./upload.js";
import { openZoom } from "./zoom.js";

const dropzone = document.getElementById("dropzone");
const input = document.getElementById("file-input");

input.addEventListener("change", () => {
  enqueueFiles(input.files);
  input.value = "";
});
// Chromium opens the picker of a focused file input on Space only; Enter is what a keyboard
// user tries first on something labelled as a button. Opened on the key's release, as Space
// does: a picker opened from the keydown did not show in Chromium 156.
let enterDown = false;
input.addEventListener("keydown", (e) => {
  if (e.key !== "Enter") return;
  e.preventDefault();
  enterDown = true;
});
input.addEventListener("keyup", (e) => {
  if (e.key !== "Enter" || !enterDown) return;
  enterDown = false;
  input.click();
});

const hasFiles = (e) => e.dataTransfer && Array.from(e.dataTransfer.types).includes("Files");
let dragDepth = 0;
document.addEventListener("dragenter", (e) => {
  if (!hasFiles(e)) return;
  e.preventDefault();
  dragDepth += 1;
  dropzone.classList.add("is-dragging");
});
document.addEventListener("dragleave", () => {
  dragDepth = Math.max(0, dragDepth - 1);
  if (!dragDepth) dropzone.classList.remove("is-dragging");
});
document.addEventListener("dragover", (e) => {
  if (hasFiles(e)) e.preventDefault();
});
document.addEventListener("drop", (e) => {
  if (!e.dataTransfer || !e.dataTransfer.files.length) return;
  e.preventDefault();
  dragDepth = 0;
  dropzone.classList.remove("is-dragging");
  enqueueFiles(e.dataTransfer.files);
});
document.addEventListener("paste", (e) => {
  const files = e.clipboardData ? Array.from(e.clipboardData.files) : [];
  if (files.length) enqueueFiles(files);
});

// The image itself (not a box on it) or the "Enlarge" button opens the large view.
cardList.addEventListener("click", (e) => {
  const trigger = e.target.closest('[data-role="enlarge"], [data-role="image"]');
  if (!trigger) return;
  const card = trigger.closest(".card");
  openZoom(card, (overlay) => showBoxes(card, overlay));
});

wireCompactView();
loadHistory();
loadModels();
document.documentElement.dataset.ready = "true"; // every listener is in place (the tests wait)
