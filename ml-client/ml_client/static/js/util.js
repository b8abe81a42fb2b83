// Small helpers every part of the page uses: card parts, announcements, numbers, SVG.
export const SVG_NS = "http://www.w3.org/2000/svg";
// The states a task never leaves, as the server defines them (ml_common.schemas.FINAL_STATES).
export const FINAL = new Set(JSON.parse(document.getElementById("final-states").textContent));
export const csrf = document.querySelector('meta[name="csrf-token"]').content;

const announcer = document.getElementById("announcer");
const numberFormat = new Intl.NumberFormat();

export const part = (root, role) => root.querySelector(`[data-role="${role}"]`);

export function announce(text) {
  announcer.textContent = text;
}

export function formatNumber(n) {
  return numberFormat.format(n);
}

export function formatBytes(n) {
  // binary units, named as such: the limits are set in bytes (ML_MAX_UPLOAD_BYTES = 10 MiB)
  return n >= 1048576 ? `${(n / 1048576).toFixed(1)} MiB` : `${Math.max(1, Math.round(n / 1024))} KiB`;
}

// Numbers of five digits or more in a server message get thousands separators.
export function sentence(text) {
  const t = String(text || "").trim().replace(/\d{5,}/g, (d) => formatNumber(Number(d)));
  if (!t) return "";
  const s = t[0].toUpperCase() + t.slice(1);
  return /[.!?]$/.test(s) ? s : `${s}.`;
}

export function plural(n, one, many) {
  return n === 1 ? `1 ${one}` : `${formatNumber(n)} ${many}`;
}

export function svg(name, attrs) {
  const el = document.createElementNS(SVG_NS, name);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  return el;
}

// A random UUID (crypto.randomUUID needs a secure context; the page may be served over http).
export function newId() {
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

export function stem(filename) {
  const base = String(filename || "image").replace(/\.[A-Za-z0-9]{1,5}$/, "");
  return base.replace(/[^\w.-]+/g, "_").slice(0, 80) || "image";
}

// The palette the server draws the annotated JPEG with, injected into the page once.
const palette = JSON.parse(document.getElementById("palette").textContent);

export function colourFor(classId) {
  const i = ((classId % palette.colours.length) + palette.colours.length) % palette.colours.length;
  return { fill: palette.colours[i], text: palette.text[i] };
}
