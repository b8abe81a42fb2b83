// Uploads with progress, two at a time, and a summary line for an upload of several files.
import { attachTask, cardList, createCard, setMeta, setStatus, showError, state } from "./cards.js";
import { explainHttpError, follow } from "./follow.js";
import { announce, csrf, formatBytes, formatNumber, part } from "./util.js";

const MAX_PARALLEL_UPLOADS = 2;
const dropzone = document.getElementById("dropzone");
const summary = document.getElementById("upload-summary");
const maxBytes = Number(dropzone.dataset.maxBytes);
const uploadQueue = [];
let activeUploads = 0;
let batch = [];

function updateSummary() {
  if (batch.length < 2) return;
  const count = (statuses) => batch.filter((c) => statuses.includes(c.dataset.status)).length;
  const done = count(["succeeded"]);
  const failed = count(["failed", "error", "unavailable", "expired"]);
  const bits = [`${formatNumber(done)} of ${formatNumber(batch.length)} done`];
  if (failed) bits.push(`${formatNumber(failed)} failed`);
  summary.textContent = bits.join(", ");
  summary.hidden = false;
  part(summary.parentElement, "summary-bar").value = (done + failed) / batch.length;
}
cardList.addEventListener("card-status", (e) => {
  if (batch.includes(e.detail.card)) updateSummary();
});

function setProgress(card, fraction) {
  const bar = part(card, "progress-bar");
  const pct = Math.round(fraction * 100);
  bar.value = pct;
  bar.setAttribute("aria-label", `Upload of ${state(card).filename}`);
  part(card, "progress-text").textContent = `${pct}%`;
}

function upload(card, file, done) {
  state(card).objectUrl = URL.createObjectURL(file);
  setStatus(card, "uploading");
  part(card, "progress").hidden = false;
  setProgress(card, 0);
  const xhr = new XMLHttpRequest();
  xhr.open("POST", "/app/uploads");
  xhr.setRequestHeader("X-CSRF-Token", csrf);
  xhr.setRequestHeader("Accept", "application/json");
  xhr.responseType = "json";
  xhr.upload.addEventListener("progress", (e) => {
    if (e.lengthComputable) setProgress(card, e.loaded / e.total);
  });
  xhr.addEventListener("load", () => {
    part(card, "progress").hidden = true;
    if (xhr.status === 202 && xhr.response) {
      attachTask(card, xhr.response.task_id);
      setStatus(card, "queued");
      setMeta(card, { created_at: new Date().toISOString() });
      follow(card);
    } else {
      setStatus(card, "error");
      explainHttpError(card, xhr.status, xhr.response);
    }
    done();
  });
  xhr.addEventListener("error", () => {
    setStatus(card, "error");
    showError(card, "The upload failed: the server could not be reached. Check the connection and try again");
    done();
  });
  const form = new FormData();
  form.append("file", file, file.name || "image");
  xhr.send(form);
}

function pumpUploads() {
  while (activeUploads < MAX_PARALLEL_UPLOADS && uploadQueue.length) {
    const { card, file } = uploadQueue.shift();
    activeUploads += 1;
    upload(card, file, () => {
      activeUploads -= 1;
      pumpUploads();
    });
  }
}

export function enqueueFiles(files) {
  const list = Array.from(files || []);
  if (!list.length) return;
  batch = [];
  summary.hidden = true;
  part(summary.parentElement, "summary-bar").hidden = list.length < 2;
  for (const file of list) {
    const card = createCard(file.name || "pasted image", true);
    batch.push(card);
    setStatus(card, "waiting");
    if (file.type && !file.type.startsWith("image/")) {
      setStatus(card, "error");
      showError(card, `“${file.name}” is not an image; choose a JPEG, PNG, WebP, BMP or GIF file`);
    } else if (file.size > maxBytes) {
      setStatus(card, "error");
      showError(card, `“${file.name}” is ${formatBytes(file.size)}; the limit is ${formatBytes(maxBytes)}`);
    } else {
      uploadQueue.push({ card, file });
    }
  }
  updateSummary();
  announce(list.length === 1 ? `Uploading ${list[0].name || "1 image"}` : `Uploading ${list.length} images`);
  pumpUploads();
}
