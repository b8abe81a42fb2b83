// Uploads with progress, two at a time, and a summary line for an upload of several files.
import { sendBatch } from "./batch.js";
import { attachTask, cardList, createCard, setMeta, setStatus, showError, statusText } from "./cards.js";
import { follow } from "./follow.js";
import { COMPARE, chosenMinScore, chosenModel, servedModels } from "./models.js";
import { sendForm } from "./send.js";
import { mayShrink, shrinkPhoto } from "./shrink.js";
import { FINAL, announce, formatBytes, formatNumber, newId, part } from "./util.js";

const MAX_PARALLEL_UPLOADS = 2;
const dropzone = document.getElementById("dropzone");
const summary = document.getElementById("upload-summary");
const maxBytes = Number(dropzone.dataset.maxBytes);
const uploadQueue = [];
let activeUploads = 0;
let batch = [];

// The states in the order the summary names them: those still moving, then those that ended.
const SUMMARY_ORDER = ["waiting", "uploading", "queued", "started", "failed", "error", "cancelled"];
const ENDED = new Set([...FINAL, "error"]);
const rank = (status) => (SUMMARY_ORDER.includes(status) ? SUMMARY_ORDER.indexOf(status) : SUMMARY_ORDER.length);

// The summary is read off the cards' own states, so that it always says what they show.
function updateSummary() {
  if (batch.length < 2) return;
  const counts = new Map();
  for (const card of batch) counts.set(card.dataset.status, (counts.get(card.dataset.status) || 0) + 1);
  const done = counts.get("succeeded") || 0;
  const others = [...counts.keys()].filter((s) => s !== "succeeded");
  others.sort((a, b) => rank(a) - rank(b));
  const bits = [`${formatNumber(done)} of ${formatNumber(batch.length)} done`];
  for (const s of others) bits.push(`${formatNumber(counts.get(s))} ${statusText(s).toLowerCase()}`);
  summary.textContent = bits.join(", ");
  summary.hidden = false;
  const ended = batch.filter((card) => ENDED.has(card.dataset.status)).length;
  part(summary.parentElement, "summary-bar").value = ended / batch.length;
}
cardList.addEventListener("card-status", (e) => {
  if (batch.includes(e.detail.card)) updateSummary();
});

function tooLarge(card, file, size) {
  setStatus(card, "error");
  showError(card, `“${file.name}” is ${formatBytes(size)}; the limit is ${formatBytes(maxBytes)}`);
}

const isNotImage = (file) => file.type && !file.type.startsWith("image/");

function notAnImage(card, file) {
  setStatus(card, "error");
  showError(card, `“${file.name}” is not an image; choose a JPEG, PNG, WebP, BMP or GIF file`);
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
  if (chosenMinScore()) form.append("min_score", chosenMinScore());
  if (card.dataset.compare) form.append("compare", card.dataset.compare); // kept in the history
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

// Each photo to every served model, one card per model side by side, with the same controls.
function compare(files) {
  const models = servedModels();
  for (const file of files) {
    const group = newId();
    // prepended one by one: the last made is shown first, so the default model comes first
    for (const model of [...models].reverse()) {
      const card = createCard(file.name || "pasted image", true, model);
      card.dataset.compare = group;
      batch.push(card);
      setStatus(card, "waiting");
      if (isNotImage(file)) {
        notAnImage(card, file);
      } else {
        uploadQueue.push({ card, file, model });
      }
    }
  }
  updateSummary();
  const what = files.length === 1 ? files[0].name || "1 image" : `${files.length} images`;
  announce(`Sending ${what} to ${models.length} models to compare them`);
  pumpUploads();
}

export function enqueueFiles(files) {
  const list = Array.from(files || []);
  if (!list.length) return;
  batch = [];
  summary.hidden = true;
  part(summary.parentElement, "summary-bar").hidden = list.length < 2;
  const model = chosenModel();
  if (model === COMPARE) {
    compare(list);
    return;
  }
  const accepted = [];
  for (const file of list) {
    const card = createCard(file.name || "pasted image", true);
    batch.push(card);
    setStatus(card, "waiting");
    if (isNotImage(file)) {
      notAnImage(card, file);
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
