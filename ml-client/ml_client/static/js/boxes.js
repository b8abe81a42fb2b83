// The boxes over an image: strongest drawn last, labels moved apart so that each stays readable.
import { colourFor, part, svg } from "./util.js";

const overlaps = (a, b) => a.x < b.x + b.w && b.x < a.x + a.w && a.y < b.y + b.h && b.y < a.y + a.h;
const clamp = (v, lo, hi) => Math.min(Math.max(lo, v), Math.max(lo, hi));

function candidates(box, w, h, W, H) {
  const spots = [
    [box.x, box.y - h], // above the top-left corner
    [box.x, box.y], // inside the top-left corner
    [box.x + box.w - w, box.y - h],
    [box.x, box.y + box.h], // below the box
    [box.x, box.y + box.h - h],
  ];
  return spots.map(([x, y]) => ({ x: clamp(x, 0, W - w), y: clamp(y, 0, H - h), w, h }));
}

// Place labels strongest first: each takes the first spot no earlier label covers, else it
// slides down (then up) from its preferred spot until it is clear.
export function layoutLabels(items, W, H) {
  const placed = [];
  for (const item of items) {
    const spots = candidates(item.box, item.w, item.h, W, H);
    let spot = spots.find((s) => !placed.some((p) => overlaps(s, p)));
    for (let step = 1; !spot && step < 200; step += 1) {
      for (const dy of [step * item.h * 0.5, -step * item.h * 0.5]) {
        const s = { ...spots[0], y: spots[0].y + dy };
        if (s.y >= 0 && s.y + s.h <= H && !placed.some((p) => overlaps(s, p))) {
          spot = s;
          break;
        }
      }
    }
    spot = spot || spots[0];
    placed.push(spot);
    item.label = spot;
  }
  return items;
}

function pixelBox(d, W, H) {
  const b = d.box_normalized;
  return { x: b.x_min * W, y: b.y_min * H, w: (b.x_max - b.x_min) * W, h: (b.y_max - b.y_min) * H };
}

function drawBox(item, fontSize) {
  const { d, index, box, label } = item;
  const colour = colourFor(d.class_id);
  const g = svg("g", {
    class: "box",
    "data-testid": "detection-box",
    "data-label": d.label,
    "data-score": d.score,
    "data-index": index,
  });
  const title = svg("title", {});
  title.textContent = `${d.label}, ${Math.round(d.score * 100)}%`;
  g.append(title);
  g.append(svg("rect", { class: "box__frame", x: box.x, y: box.y, width: box.w, height: box.h, stroke: colour.fill, fill: colour.fill }));
  g.append(svg("rect", { class: "box__tag", "data-testid": "box-label", x: label.x, y: label.y, width: label.w, height: label.h, fill: colour.fill }));
  const text = svg("text", { class: "box__text", x: label.x + fontSize * 0.3, y: label.y + label.h * 0.74, "font-size": fontSize, fill: colour.text });
  text.textContent = item.text;
  g.append(text);
  return g;
}

// `detections` are sorted by score, highest first; labels keep about the same on-screen size
// however large the image is shown.
export function drawOverlay(overlay, detections, [W, H], shownWidth) {
  const fontSize = Math.max(6, Math.round((13 * W) / (shownWidth || W)));
  if (overlay.dataset.fontSize === String(fontSize)) return false;
  overlay.dataset.fontSize = String(fontSize);
  overlay.setAttribute("viewBox", `0 0 ${W} ${H}`);
  const items = detections.map((d, index) => {
    const text = `${d.label} ${Math.round(d.score * 100)}%`;
    const w = text.length * fontSize * 0.62 + fontSize * 0.6;
    return { d, index, text, box: pixelBox(d, W, H), w, h: fontSize * 1.35 };
  });
  layoutLabels(items, W, H);
  overlay.replaceChildren(...items.reverse().map((item) => drawBox(item, fontSize)));
  return true;
}

export function boxFor(card, index) {
  return part(card, "overlay").querySelector(`g[data-index="${index}"]`);
}
