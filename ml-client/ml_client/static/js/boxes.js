// The boxes over an image: every frame under every label, so no box's edge runs through a
// label; labels placed apart and clear of other boxes' edges where they can be, the strongest
// first and drawn last; each frame and label with a thin outline of the contrasting colour.
import { colourFor, part, svg } from "./util.js";

const overlaps = (a, b) => a.x < b.x + b.w && b.x < a.x + a.w && a.y < b.y + b.h && b.y < a.y + a.h;
const clamp = (v, lo, hi) => Math.min(Math.max(lo, v), Math.max(lo, hi));

// The label's on-screen height in CSS pixels for an image shown `shownWidth` pixels wide:
// 13 px text from 520 px up, down to 9 px on small images (a phone, a small photo).
export function labelPixels(shownWidth) {
  return clamp(shownWidth / 40, 9, 13);
}

function candidates(box, w, h, W, H) {
  const spots = [
    [box.x, box.y - h], // above the top-left corner
    [box.x, box.y], // inside the top-left corner
    [box.x + box.w - w, box.y - h], // above the top-right corner
    [box.x + box.w - w, box.y], // inside the top-right corner
    [box.x, box.y + box.h], // below the box
    [box.x, box.y + box.h - h], // inside the bottom-left corner
  ];
  return spots.map(([x, y]) => ({ x: clamp(x, 0, W - w), y: clamp(y, 0, H - h), w, h }));
}

// How many edges of the other boxes cross the label spot `s`.
function edgesCrossed(s, boxes, own) {
  let n = 0;
  for (const b of boxes) {
    if (b === own) continue;
    const inY = (y) => y > s.y && y < s.y + s.h;
    const inX = (x) => x > s.x && x < s.x + s.w;
    const spansX = b.x < s.x + s.w && b.x + b.w > s.x;
    const spansY = b.y < s.y + s.h && b.y + b.h > s.y;
    if (spansX && (inY(b.y) || inY(b.y + b.h))) n += 1;
    if (spansY && (inX(b.x) || inX(b.x + b.w))) n += 1;
  }
  return n;
}

// Place labels strongest first: each takes the spot, among those no earlier label covers, that
// the fewest other boxes' edges cross (the first such in order of preference); with none free
// it slides down (then up) from its preferred spot until it is clear.
export function layoutLabels(items, W, H) {
  const placed = [];
  const boxes = items.map((item) => item.box);
  for (const item of items) {
    const spots = candidates(item.box, item.w, item.h, W, H);
    let spot = null;
    let best = Infinity;
    for (const s of spots) {
      if (placed.some((p) => overlaps(s, p))) continue;
      const crossed = edgesCrossed(s, boxes, item.box);
      if (crossed < best) [spot, best] = [s, crossed];
    }
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

function drawFrame(item) {
  const { d, index, box } = item;
  const colour = colourFor(d.class_id);
  const g = svg("g", { class: "frame", "data-index": index, "data-label": d.label, "data-score": d.score });
  const rect = { x: box.x, y: box.y, width: box.w, height: box.h };
  g.append(svg("rect", { class: "box__halo", ...rect, stroke: colour.text }));
  g.append(svg("rect", { class: "box__frame", ...rect, stroke: colour.fill, fill: colour.fill }));
  return g;
}

function drawLabel(item, fontSize) {
  const { d, index, label } = item;
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
  g.append(svg("rect", { class: "box__tag", "data-testid": "box-label", x: label.x, y: label.y, width: label.w, height: label.h, fill: colour.fill, stroke: colour.text }));
  const text = svg("text", { class: "box__text", x: label.x + fontSize * 0.3, y: label.y + label.h * 0.74, "font-size": fontSize, fill: colour.text });
  text.textContent = item.text;
  g.append(text);
  return g;
}

// `detections` are sorted by score, highest first; labels are `labelPx` CSS pixels high on
// screen, whatever the size the image is shown at (`shownWidth` CSS pixels wide).
export function drawOverlay(overlay, detections, [W, H], shownWidth, labelPx = labelPixels(shownWidth)) {
  const fontSize = (labelPx * W) / (shownWidth || W); // in the image's pixels
  const key = fontSize.toFixed(3);
  if (overlay.dataset.fontSize === key) return false;
  overlay.dataset.fontSize = key;
  overlay.setAttribute("viewBox", `0 0 ${W} ${H}`);
  const items = detections.map((d, index) => {
    const text = `${d.label} ${Math.round(d.score * 100)}%`;
    const w = text.length * fontSize * 0.62 + fontSize * 0.6;
    return { d, index, text, box: pixelBox(d, W, H), w, h: fontSize * 1.35 };
  });
  layoutLabels(items, W, H);
  const weakestFirst = items.reverse();
  overlay.replaceChildren(
    svg("g", { class: "frames" }),
    ...weakestFirst.map((item) => drawLabel(item, fontSize)),
  );
  overlay.firstChild.replaceChildren(...weakestFirst.map(drawFrame));
  return true;
}

// A detection's label group and its frame (shown, hidden and highlighted together).
export function boxParts(overlay, index) {
  return overlay.querySelectorAll(`[data-index="${index}"]`);
}

export function boxFor(card, index) {
  return part(card, "overlay").querySelector(`g.box[data-index="${index}"]`);
}
