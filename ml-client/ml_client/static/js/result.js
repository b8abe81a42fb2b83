// A finished result: image with boxes, the table, the score slider and a toggle per class.
import { boxParts, drawOverlay } from "./boxes.js";
import { state } from "./cards.js";
import { fillExports } from "./export.js";
import { colourFor, formatNumber, part, plural } from "./util.js";

const SLIDER_STEP = 0.05;

function highlight(card, index, on) {
  for (const g of boxParts(part(card, "overlay"), index)) g.classList.toggle("is-highlighted", on);
  const tr = part(card, "rows").querySelector(`tr[data-index="${index}"]`);
  if (tr) tr.classList.toggle("is-highlighted", on);
  if (tr && on && part(card, "rows").contains(tr)) tr.scrollIntoView({ block: "nearest" });
}

function tableRow(card, d, index) {
  const tr = document.createElement("tr");
  tr.dataset.testid = "detection-row";
  tr.dataset.score = d.score;
  tr.dataset.index = index;
  tr.dataset.label = d.label;
  tr.tabIndex = 0;
  const name = document.createElement("td");
  const swatch = document.createElement("span");
  swatch.className = "swatch";
  swatch.setAttribute("aria-hidden", "true");
  swatch.style.background = colourFor(d.class_id).fill;
  name.append(swatch, d.label);
  const score = document.createElement("td");
  score.className = "num";
  score.textContent = `${(d.score * 100).toFixed(1)}%`;
  const box = document.createElement("td");
  const p = d.box;
  box.className = "coords";
  box.textContent = `${Math.round(p.x_min)}, ${Math.round(p.y_min)} – ${Math.round(p.x_max)}, ${Math.round(p.y_max)}`;
  tr.append(name, score, box);
  for (const [type, on] of [["mouseenter", true], ["mouseleave", false], ["focus", true], ["blur", false]]) {
    tr.addEventListener(type, () => highlight(card, index, on));
  }
  return tr;
}

function classChips(card, detections) {
  const chips = part(card, "classes");
  const labels = [...new Set(detections.map((d) => d.label))];
  chips.replaceChildren(
    ...labels.map((label) => {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "button button--small chip";
      button.dataset.label = label;
      button.dataset.testid = "class-toggle";
      button.setAttribute("aria-pressed", "true");
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.setAttribute("aria-hidden", "true");
      swatch.style.background = colourFor(detections.find((d) => d.label === label).class_id).fill;
      const count = document.createElement("span");
      count.className = "chip__count";
      button.append(swatch, label, " ", count);
      button.addEventListener("click", () => {
        button.setAttribute("aria-pressed", String(button.getAttribute("aria-pressed") !== "true"));
        applyThreshold(card);
      });
      return button;
    }),
  );
}

function redraw(card) {
  const st = state(card);
  if (drawOverlay(part(card, "overlay"), st.detections, st.size, part(card, "stage").clientWidth)) {
    applyThreshold(card);
  }
}

function wireBoxes(card) {
  const overlay = part(card, "overlay");
  let current = null;
  const select = (g) => {
    if (current !== null) highlight(card, current, false);
    current = g ? g.dataset.index : null;
    if (current !== null) highlight(card, current, true);
  };
  const target = (e) => e.target.closest("g[data-index]");
  overlay.addEventListener("pointerover", (e) => select(target(e)));
  overlay.addEventListener("pointerleave", () => select(null));
  overlay.addEventListener("click", (e) => select(target(e)));
}

export function renderResult(card, status) {
  const result = status.result;
  const st = state(card);
  const [W, H] = [result.width, result.height];
  st.detections = [...result.detections].sort((a, b) => b.score - a.score);
  st.size = [W, H];
  st.status = status;
  part(card, "result").hidden = false;
  // the slider starts where the worker cut off: every box it returned is shown; it goes lower
  // when the result holds lower scores (an upload sent with a lower `min_score`)
  const slider = part(card, "slider");
  const lowest = Math.min(result.score_threshold, ...st.detections.map((d) => d.score));
  slider.min = (Math.floor(Math.max(0, lowest) / SLIDER_STEP + 1e-9) * SLIDER_STEP).toFixed(2);
  slider.value = slider.min;
  slider.addEventListener("input", () => applyThreshold(card));
  // a portrait photo is never taller than most of the screen
  part(card, "stage").style.width = `min(100%, calc(82svh * ${W / H}))`;

  const img = part(card, "image");
  img.width = W;
  img.height = H;
  img.alt = `${st.filename} with the detected objects outlined`;
  part(card, "overlay").setAttribute("aria-label", `Boxes around the ${plural(st.detections.length, "object", "objects")} found`);
  img.addEventListener("error", () => {
    if (img.dataset.fallback) return;
    img.dataset.fallback = "1";
    part(card, "overlay").setAttribute("display", "none");
    img.src = `/app/tasks/${st.taskId}/image`;
    part(card, "thumb").src = img.src;
    part(card, "caption").prepend("The original upload is no longer kept; showing the server's annotated copy. ");
  });
  img.src = st.objectUrl || `/app/tasks/${st.taskId}/original`;
  const thumb = part(card, "thumb");
  thumb.src = img.src;
  thumb.hidden = false;
  redraw(card);
  wireBoxes(card);
  if ("ResizeObserver" in window && !st.resizeObserver) {
    st.resizeObserver = new ResizeObserver(() => redraw(card));
    st.resizeObserver.observe(part(card, "stage"));
  }
  const rows = part(card, "rows");
  rows.replaceChildren(...st.detections.map((d, i) => tableRow(card, d, i)));
  if (!st.detections.length) {
    const td = document.createElement("td");
    td.colSpan = 3;
    td.className = "muted";
    td.textContent = "No objects found above the detector's threshold.";
    rows.append(document.createElement("tr"));
    rows.firstChild.append(td);
  }
  classChips(card, st.detections);
  const t = result.timings || {};
  part(card, "caption").textContent =
    `${formatNumber(W)}×${formatNumber(H)} px · ${result.model_name} ${result.model_version} · ` +
    `inference ${formatNumber(Math.round(result.inference_ms))} ms` +
    (t.queue_wait_ms != null ? ` · waited ${formatNumber(Math.round(t.queue_wait_ms))} ms in queue` : "");
  fillExports(card, status);
  applyThreshold(card);
}

function hiddenClasses(card) {
  return new Set(
    Array.from(part(card, "classes").querySelectorAll('[aria-pressed="false"]'), (b) => b.dataset.label),
  );
}

// Show in `overlay` (the card's own, or the large view's) the boxes the card's controls let through.
export function showBoxes(card, overlay) {
  const t = Number(part(card, "slider").value);
  const off = hiddenClasses(card);
  for (const g of overlay.querySelectorAll("g[data-index]")) {
    const visible = Number(g.dataset.score) >= t && !off.has(g.dataset.label);
    g.setAttribute("display", visible ? "inline" : "none");
  }
}

export function applyThreshold(card) {
  const slider = part(card, "slider");
  const t = Number(slider.value);
  part(card, "slider-value").textContent = t.toFixed(2);
  slider.setAttribute("aria-valuetext", `${Math.round(t * 100)}%`);
  const off = hiddenClasses(card);
  const counts = new Map();
  showBoxes(card, part(card, "overlay"));
  let shown = 0;
  let total = 0;
  for (const tr of part(card, "rows").querySelectorAll("tr[data-score]")) {
    const over = Number(tr.dataset.score) >= t;
    if (over) counts.set(tr.dataset.label, (counts.get(tr.dataset.label) || 0) + 1);
    tr.hidden = !over || off.has(tr.dataset.label);
    total += 1;
    shown += tr.hidden ? 0 : 1;
  }
  for (const chip of part(card, "classes").children) {
    chip.querySelector(".chip__count").textContent = formatNumber(counts.get(chip.dataset.label) || 0);
  }
  part(card, "shown").textContent = total ? `Showing ${shown} of ${plural(total, "object", "objects")}` : "";
  part(card, "summary").textContent = total ? `${plural(total, "object", "objects")}: ${[...counts.keys()].join(", ") || "none over the threshold"}` : "No objects found";
}
