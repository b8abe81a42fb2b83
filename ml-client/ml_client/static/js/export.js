// Taking a result away: JSON, the API's CSV and the annotated image under sensible names, the task id,
// and the same request made with curl against the API.
import { state } from "./cards.js";
import { announce, part, stem } from "./util.js";

const apiUrl = document.getElementById("cards").dataset.apiUrl.replace(/\/$/, "");

function save(href, name) {
  const a = document.createElement("a");
  a.href = href;
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
}

function download(name, type, text) {
  const url = URL.createObjectURL(new Blob([text], { type }));
  save(url, name);
  window.setTimeout(() => URL.revokeObjectURL(url), 10000);
}

async function copy(card, text, what) {
  const note = part(card, "copied");
  try {
    await navigator.clipboard.writeText(text);
    note.textContent = `${what} copied`;
  } catch {
    const field = part(card, "task-id");
    field.focus();
    field.select();
    note.textContent = "Press Ctrl+C (⌘C) to copy";
  }
  announce(note.textContent);
}

// The links that download a whole batch, as COCO JSON and as CSV; `what` names it in them.
export function batchLinks(batchId, what) {
  return [["coco", "COCO JSON"], ["csv", "CSV"]].map(([format, label]) => {
    const a = document.createElement("a");
    a.className = "button button--small";
    a.href = `/app/batches/${batchId}/export?format=${format}`;
    a.dataset.format = format;
    a.textContent = `Download ${what} as ${label}`;
    return a;
  });
}

export function fillExports(card, status) {
  const { filename, taskId } = state(card);
  const name = stem(filename);
  const annotated = part(card, "annotated");
  annotated.href = `/app/tasks/${taskId}/image`;
  annotated.download = `${name}-annotated.jpg`;
  part(card, "download-json").addEventListener("click", () =>
    download(`${name}-detections.json`, "application/json", JSON.stringify(status, null, 2) + "\n"),
  );
  // the API's CSV, as a batch exports it (one format: file name, rounded numbers)
  part(card, "download-csv").addEventListener("click", () =>
    save(`/app/tasks/${taskId}/export?format=csv`, `${name}-detections.csv`),
  );
  const batch = part(card, "batch-exports");
  batch.replaceChildren(...(state(card).batchId ? batchLinks(state(card).batchId, "its batch") : []));
  batch.hidden = !state(card).batchId;
  part(card, "task-id").value = taskId;
  part(card, "copy-id").addEventListener("click", () => copy(card, taskId, "Task id"));
  const curl = `curl -H "Authorization: Bearer $MLPROD_API_KEY" \\\n  ${apiUrl}/api/v1/detections/${taskId}`;
  part(card, "curl").textContent = curl;
  part(card, "copy-curl").addEventListener("click", () => copy(card, curl, "Command"));
  part(card, "api-docs").href = `${apiUrl}/api/docs`;
}
