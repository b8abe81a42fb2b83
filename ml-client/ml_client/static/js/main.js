// mlprod web client: wires the page's parts together (uploads, results, history, removal).
import { cardList } from "./cards.js";
import { loadHistory, wireCompactView } from "./history.js";
import { loadModels } from "./models.js";
import "./remove.js";
import { enqueueFiles } from "./upload.js";
import { openZoom } from "./zoom.js";

const dropzone = document.getElementById("dropzone");
const input = document.getElementById("file-input");

input.addEventListener("change", () => {
  enqueueFiles(input.files);
  input.value = "";
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
  if (trigger) openZoom(trigger.closest(".card"));
});

wireCompactView();
loadHistory();
loadModels();
document.documentElement.dataset.ready = "true"; // every listener is in place (the tests wait)
