// Taking a result away: JSON, CSV and the annotated image under sensible names, the task id,
// and the same request made with curl against the API.
import { state } from "./cards.js";
import { announce, part, stem } from "./util.js";

const apiUrl = document.getElementById("cards").dataset.apiUrl.replace(/\/$/, "");

function csv(result) {
  const quote = (v) => (/[",\n]/.test(String(v)) ? `"${String(v).replace(/"/g, '""')}"` : String(v));
  const head = ["label", "class_id", "score", "x_min", "y_min", "x_max", "y_max"];
  const rows = result.detections.map((d) =>
    [d.label, d.class_id, d.score, d.box.x_min, d.box.y_min, d.box.x_max, d.box.y_max].map(quote).join(","),
  );
  return [head.join(","), ...rows].join("\r\n") + "\r\n";
}

function download(name, type, text) {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const a = document.createElement("a");
  a.href = url;
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
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
  part(card, "download-csv").addEventListener("click", () =>
    download(`${name}-detections.csv`, "text/csv", csv(status.result)),
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
