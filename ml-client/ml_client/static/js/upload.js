// Uploads with progress, two at a time, and a summary line for an upload of several files.
import { sendBatch } from "./batch.js";
import { attachTask, cardList, createCard, setMeta, setStatus, showError } from "./cards.js";
import { follow } from "./follow.js";
import { chosenModel } from "./models.js";
import { sendForm } from "./send.js";
import { mayShrink, shrinkPhoto } from "./shrink.js";
import { announce, formatBytes, formatNumber, part } from "./util.js";

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

function tooLarge(card, file, size) {
  setStatus(card, "error");
  showError(card, `“${file.name}” is ${formatBytes(size)}; the limit is ${formatBytes(maxBytes)}`);
}

async function upload(card, file, model, done) {
  // the card shows the photo itself; a big one is sent shrunk, with its size
  const shrunk = await shrinkPhoto(file);
  const body = shrunk ? shrunk.blob : file;
  if (body.size > maxBytes) {
    tooLarge(card, file, body.size);
    done();
    return;
  }
  const form = new FormData();
  form.append("file", body, file.name || "image");
  if (model) form.append("model", model);
  if (shrunk) form.append("original_size", shrunk.originalSize);
  const accepted = (body) => {
    attachTask(card, body.task_id);
    setStatus(card, "queued");
    setMeta(card, { created_at: new Date().toISOString() });
    follow(card);
  };
  sendForm("/app/uploads", form, [{ card, file }], accepted, done);
}

function pumpUploads() {
  while (activeUploads < MAX_PARALLEL_UPLOADS && uploadQueue.length) {
    const { card, file, model } = uploadQueue.shift();
    activeUploads += 1;
    upload(card, file, model, () => {
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
  const model = chosenModel();
  const accepted = [];
  for (const file of list) {
    const card = createCard(file.name || "pasted image", true);
    batch.push(card);
    setStatus(card, "waiting");
    if (file.type && !file.type.startsWith("image/")) {
      setStatus(card, "error");
      showError(card, `“${file.name}” is not an image; choose a JPEG, PNG, WebP, BMP or GIF file`);
    } else if (file.size > maxBytes && !(list.length === 1 && mayShrink(file))) {
      tooLarge(card, file, file.size); // one photo may come under the limit once shrunk
    } else {
      accepted.push({ card, file, model });
    }
  }
  // one image goes alone; several go as batches of the API
  if (accepted.length > 1) sendBatch(accepted, model);
  else uploadQueue.push(...accepted);
  updateSummary();
  announce(list.length === 1 ? `Uploading ${list[0].name || "1 image"}` : `Uploading ${list.length} images`);
  pumpUploads();
}
