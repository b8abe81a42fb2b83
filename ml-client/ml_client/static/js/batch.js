// An upload of several files: sent as batches of the API (at most 50 files a request), each
// item followed on its own card; the whole upload can be taken away as COCO JSON or CSV.
import { attachTask, setMeta, setStatus, state } from "./cards.js";
import { batchLinks } from "./export.js";
import { applyStatus, follow } from "./follow.js";
import { chosenMinScore } from "./models.js";
import { sendForm } from "./send.js";
import { FINAL } from "./util.js";

const FILES_PER_REQUEST = 50; // the client's limit (ml_client/batches.py)
// The web client refuses a body past ML_MAX_UPLOAD_BYTES plus 64 KiB of multipart framing
// (ml_client/app.py), so a request carries files up to ML_MAX_UPLOAD_BYTES (the page is told it),
// each counted with PART_BYTES for its part's headers; a file alone always goes.
const BYTES_PER_REQUEST = Number(document.getElementById("dropzone").dataset.maxBytes);
const PART_BYTES = 1024;
const exportsBox = document.getElementById("batch-exports");
const JSON_HEADERS = { Accept: "application/json" };
const DONE = new Set([...FINAL, "error"]); // "error": the page gave the card up (not sent, gone)

function chunks(entries) {
  const out = [];
  let current = [];
  let bytes = 0;
  for (const entry of entries) {
    const size = entry.file.size + PART_BYTES;
    if (current.length && (current.length >= FILES_PER_REQUEST || bytes + size > BYTES_PER_REQUEST)) {
      out.push(current);
      current = [];
      bytes = 0;
    }
    current.push(entry);
    bytes += size;
  }
  if (current.length) out.push(current);
  return out;
}

function addExports(batchId, count) {
  const n = exportsBox.querySelectorAll("a").length / 2;
  const suffix = count > 1 ? ` (part ${n + 1})` : "";
  exportsBox.append(...batchLinks(batchId, `all${suffix}`));
  exportsBox.hidden = false;
}

// The exports of an upload sent earlier (the page was reloaded since), one batch a part.
export function showBatchExports(batchIds) {
  exportsBox.replaceChildren();
  for (const id of batchIds) addExports(id, batchIds.length);
}

// Bring each card up to its item's state; a newly succeeded one fetches its result.
async function refresh(entries, batch) {
  const response = await fetch(`/app/batches/${batch.batch_id}`, { headers: JSON_HEADERS });
  if (!response.ok) throw new Error(`the batch answered ${response.status}`);
  const cards = new Map(entries.map(({ card }) => [card.dataset.taskId, card]));
  const items = (await response.json()).items.filter((item) => {
    const card = cards.get(item.task_id);
    return card && card.isConnected && card.dataset.status !== item.status;
  });
  await Promise.all(
    items.map(async (item) => {
      const card = cards.get(item.task_id);
      if (item.status !== "succeeded") {
        applyStatus(card, { status: item.status, error: item.error, created_at: batch.created_at });
        return;
      }
      const task = await fetch(`/app/tasks/${item.task_id}`, { headers: JSON_HEADERS });
      if (task.ok) applyStatus(card, await task.json());
      else follow(card);
    }),
  );
}

// One event stream per batch (its counts), not one per card; each card on its own if it breaks.
function followBatch(entries, batch) {
  const alone = () => {
    for (const { card } of entries) if (!DONE.has(card.dataset.status)) follow(card);
  };
  if (!("EventSource" in window)) return alone();
  const source = new EventSource(`/app/batches/${batch.batch_id}/events`);
  let pending = Promise.resolve();
  source.addEventListener("progress", (e) => {
    const progress = JSON.parse(e.data);
    if (progress.finished) source.close();
    pending = pending.then(() => refresh(entries, batch)).catch(() => {
      source.close();
      alone();
    });
  });
  source.addEventListener("error", () => {
    source.close();
    pending.then(alone);
  });
  return undefined;
}

function received(entries, body) {
  body.items.forEach((item, i) => {
    const { card } = entries[i];
    attachTask(card, item.task_id);
    state(card).batchId = body.batch_id;
    setStatus(card, "queued");
    setMeta(card, { created_at: body.created_at });
  });
  followBatch(entries, body);
}

function sendChunk(entries, model, count, done) {
  const form = new FormData();
  if (model) form.append("model", model);
  if (chosenMinScore()) form.append("min_score", chosenMinScore());
  for (const { file } of entries) form.append("files", file, file.name || "image");
  const accepted = (body) => {
    received(entries, body);
    addExports(body.batch_id, count);
  };
  sendForm("/app/batches", form, entries, accepted, done);
}

// Send `entries` ({card, file}) one request after another.
export function sendBatch(entries, model) {
  exportsBox.replaceChildren();
  exportsBox.hidden = true;
  const queue = chunks(entries);
  const count = queue.length;
  const next = () => {
    if (queue.length) sendChunk(queue.shift(), model, count, next);
  };
  next();
}
