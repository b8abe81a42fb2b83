// Sending images with upload progress: the one request code single and batch uploads share.
import { setStatus, showError, state } from "./cards.js";
import { explainHttpError } from "./follow.js";
import { csrf, part } from "./util.js";

const UNREACHABLE = "The upload failed: the server could not be reached. Check the connection and try again";

function setProgress(entries, fraction) {
  const pct = Math.round(fraction * 100);
  for (const { card } of entries) {
    const bar = part(card, "progress-bar");
    bar.value = pct;
    bar.setAttribute("aria-label", `Upload of ${state(card).filename}`);
    part(card, "progress-text").textContent = `${pct}%`;
  }
}

function failAll(entries, explain) {
  for (const { card } of entries) {
    setStatus(card, "error");
    explain(card);
  }
}

// POST `form` for the cards of `entries` ({card, file}); `accepted(body)` runs on 202, and
// `done()` in every case once the request is over.
export function sendForm(url, form, entries, accepted, done) {
  for (const { card, file } of entries) {
    state(card).objectUrl = URL.createObjectURL(file);
    setStatus(card, "uploading");
    part(card, "progress").hidden = false;
  }
  setProgress(entries, 0);
  const xhr = new XMLHttpRequest();
  xhr.open("POST", url);
  xhr.setRequestHeader("X-CSRF-Token", csrf);
  xhr.setRequestHeader("Accept", "application/json");
  xhr.responseType = "json";
  xhr.upload.addEventListener("progress", (e) => {
    if (e.lengthComputable) setProgress(entries, e.loaded / e.total);
  });
  xhr.addEventListener("load", () => {
    for (const { card } of entries) part(card, "progress").hidden = true;
    if (xhr.status === 202 && xhr.response) accepted(xhr.response);
    else failAll(entries, (card) => explainHttpError(card, xhr.status, xhr.response));
    done();
  });
  xhr.addEventListener("error", () => {
    failAll(entries, (card) => showError(card, UNREACHABLE));
    done();
  });
  xhr.send(form);
}
