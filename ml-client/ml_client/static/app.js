// mlprod web client: uploads with progress, live task status, and boxes drawn over each image.
"use strict";

(() => {
  const SVG_NS = "http://www.w3.org/2000/svg";
  const FINAL = new Set(["succeeded", "failed"]);
  const STATUS_TEXT = {
    waiting: "Waiting",
    uploading: "Uploading",
    queued: "Queued",
    started: "Detecting…",
    succeeded: "Done",
    failed: "Failed",
    error: "Not sent",
    expired: "Expired",
    unavailable: "Unavailable",
  };
  const MAX_PARALLEL_UPLOADS = 2;
  const POLL_MAX_DELAY_MS = 15000;

  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const dropzone = document.getElementById("dropzone");
  const input = document.getElementById("file-input");
  const cardList = document.getElementById("cards");
  const emptyNote = document.getElementById("empty");
  const countNote = document.getElementById("results-count");
  const announcer = document.getElementById("announcer");
  const template = document.getElementById("card-template");
  const maxBytes = Number(dropzone.dataset.maxBytes);

  const states = new WeakMap();
  const uploadQueue = [];
  let activeUploads = 0;
  let cardCount = 0;

  // ---- small helpers -------------------------------------------------------------------
  const part = (card, role) => card.querySelector(`[data-role="${role}"]`);
  const state = (card) => states.get(card);

  function announce(text) {
    announcer.textContent = text;
  }

  function formatBytes(n) {
    return n >= 1048576 ? `${(n / 1048576).toFixed(1)} MB` : `${Math.max(1, Math.round(n / 1024))} kB`;
  }

  function sentence(text) {
    const t = String(text || "").trim();
    if (!t) return "";
    const s = t[0].toUpperCase() + t.slice(1);
    return /[.!?]$/.test(s) ? s : `${s}.`;
  }

  function colourFor(classId) {
    const hue = Math.round((210 + classId * 137.508) % 360);
    return `hsl(${hue} 80% 42%)`;
  }

  function svg(name, attrs) {
    const el = document.createElementNS(SVG_NS, name);
    for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
    return el;
  }

  function updateCount() {
    const n = cardList.children.length;
    emptyNote.hidden = n > 0;
    countNote.textContent = n === 1 ? "1 image" : n ? `${n} images` : "";
  }

  // ---- cards ----------------------------------------------------------------------------
  function createCard(filename, atTop) {
    const card = template.content.firstElementChild.cloneNode(true);
    const id = `card-${++cardCount}`;
    const title = part(card, "title");
    title.id = `${id}-title`;
    title.textContent = filename;
    card.querySelector("article").setAttribute("aria-labelledby", title.id);
    const slider = part(card, "slider");
    slider.id = `${id}-slider`;
    part(card, "slider-label").htmlFor = slider.id;
    slider.addEventListener("input", () => applyThreshold(card));
    part(card, "forget").addEventListener("click", () => forget(card));
    states.set(card, { filename, taskId: null, objectUrl: null, source: null, timer: null });
    if (atTop) cardList.prepend(card);
    else cardList.append(card);
    updateCount();
    return card;
  }

  function setStatus(card, status) {
    const badge = part(card, "badge");
    badge.textContent = STATUS_TEXT[status] || status;
    badge.dataset.status = status;
    card.dataset.status = status;
  }

  function showError(card, message, linkToLogin) {
    const box = part(card, "error");
    box.textContent = sentence(message);
    if (linkToLogin) {
      const link = document.createElement("a");
      link.href = "/login";
      link.textContent = "Sign in again";
      box.append(" ", link);
    }
    box.hidden = false;
    part(card, "progress").hidden = true;
    announce(`${state(card).filename}: ${box.textContent}`);
  }

  function setMeta(card, status) {
    const bits = [];
    const created = status.created_at || status.submitted_at;
    if (created) bits.push(`Sent ${new Date(created).toLocaleString()}`);
    if (status.finished_at && status.created_at) {
      const s = (Date.parse(status.finished_at) - Date.parse(status.created_at)) / 1000;
      if (s >= 0) bits.push(`ready after ${s.toFixed(1)} s`);
    }
    part(card, "meta").textContent = bits.join(" · ");
  }

  function attachTask(card, taskId) {
    state(card).taskId = taskId;
    card.dataset.taskId = taskId;
    part(card, "json").href = `/app/tasks/${taskId}`;
    part(card, "annotated").href = `/app/tasks/${taskId}/image`;
  }

  // ---- uploads --------------------------------------------------------------------------
  function enqueueFiles(files) {
    const list = Array.from(files || []);
    if (!list.length) return;
    for (const file of list) {
      const card = createCard(file.name || "pasted image", true);
      setStatus(card, "waiting");
      if (file.type && !file.type.startsWith("image/")) {
        setStatus(card, "error");
        showError(card, `“${file.name}” is not an image; choose a JPEG, PNG, WebP, BMP or GIF file`);
      } else if (file.size > maxBytes) {
        setStatus(card, "error");
        showError(card, `“${file.name}” is ${formatBytes(file.size)}; the limit is ${formatBytes(maxBytes)}`);
      } else {
        uploadQueue.push({ card, file });
      }
    }
    announce(list.length === 1 ? `Uploading ${list[0].name || "1 image"}` : `Uploading ${list.length} images`);
    pumpUploads();
  }

  function pumpUploads() {
    while (activeUploads < MAX_PARALLEL_UPLOADS && uploadQueue.length) {
      const { card, file } = uploadQueue.shift();
      activeUploads += 1;
      upload(card, file, () => {
        activeUploads -= 1;
        pumpUploads();
      });
    }
  }

  function setProgress(card, fraction) {
    const bar = part(card, "progress-bar");
    const pct = Math.round(fraction * 100);
    bar.value = pct;
    bar.setAttribute("aria-label", `Upload of ${state(card).filename}`);
    part(card, "progress-text").textContent = `${pct}%`;
  }

  function upload(card, file, done) {
    const st = state(card);
    st.objectUrl = URL.createObjectURL(file);
    setStatus(card, "uploading");
    part(card, "progress").hidden = false;
    setProgress(card, 0);
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/app/uploads");
    xhr.setRequestHeader("X-CSRF-Token", csrf);
    xhr.setRequestHeader("Accept", "application/json");
    xhr.responseType = "json";
    xhr.upload.addEventListener("progress", (e) => {
      if (e.lengthComputable) setProgress(card, e.loaded / e.total);
    });
    xhr.addEventListener("load", () => {
      part(card, "progress").hidden = true;
      if (xhr.status === 202 && xhr.response) {
        attachTask(card, xhr.response.task_id);
        setStatus(card, "queued");
        setMeta(card, { created_at: new Date().toISOString() });
        follow(card);
      } else {
        setStatus(card, "error");
        explainHttpError(card, xhr.status, xhr.response);
      }
      done();
    });
    xhr.addEventListener("error", () => {
      setStatus(card, "error");
      showError(card, "The upload failed: the server could not be reached. Check the connection and try again");
      done();
    });
    const form = new FormData();
    form.append("file", file, file.name || "image");
    xhr.send(form);
  }

  function explainHttpError(card, status, body) {
    if (status === 401) return showError(card, "Your session has ended", true);
    const detail = body && body.detail ? body.detail : `the server answered ${status}`;
    const prefix = { 413: "Too large", 415: "Not an image", 422: "Not a usable image", 429: "Too many uploads", 503: "Service busy" }[status];
    showError(card, prefix ? `${prefix}: ${detail}` : detail);
  }

  // ---- following a task: server-sent events, or polling with backoff --------------------
  function follow(card) {
    const st = state(card);
    if (!("EventSource" in window)) return poll(card, 0);
    const source = new EventSource(`/app/tasks/${st.taskId}/events`);
    st.source = source;
    let failures = 0;
    source.addEventListener("status", (e) => {
      failures = 0;
      const status = JSON.parse(e.data);
      applyStatus(card, status);
      if (FINAL.has(status.status)) source.close();
    });
    source.addEventListener("error", (e) => {
      // `e.data` is set for an `event: error` sent by the server; otherwise the connection broke
      if (e.data !== undefined || source.readyState === EventSource.CLOSED || ++failures >= 2) {
        source.close();
        poll(card, 0);
      }
    });
  }

  function poll(card, attempt) {
    const st = state(card);
    const delay = Math.min(1000 * 2 ** attempt, POLL_MAX_DELAY_MS) * (0.8 + Math.random() * 0.4);
    st.timer = window.setTimeout(async () => {
      let response;
      try {
        response = await fetch(`/app/tasks/${st.taskId}`, { headers: { Accept: "application/json" } });
      } catch {
        return poll(card, attempt + 1);
      }
      if (response.ok) {
        const status = await response.json();
        applyStatus(card, status);
        if (!FINAL.has(status.status)) poll(card, attempt + 1);
      } else if (response.status === 401 || response.status === 404) {
        setStatus(card, "error");
        explainHttpError(card, response.status, await response.json().catch(() => null));
      } else {
        poll(card, attempt + 1);
      }
    }, attempt === 0 ? 0 : delay);
  }

  function applyStatus(card, status) {
    const st = state(card);
    const changed = card.dataset.status !== status.status;
    setStatus(card, status.status);
    setMeta(card, status);
    if (!changed) return;
    if (status.status === "succeeded" && status.result) {
      renderResult(card, status.result);
      const n = status.result.detections.length;
      announce(`${st.filename}: done, ${n === 1 ? "1 object" : `${n} objects`} found`);
    } else if (status.status === "failed") {
      const err = status.error || {};
      showError(card, `Detection failed: ${err.message || err.type || "unknown error"}`);
    } else {
      announce(`${st.filename}: ${STATUS_TEXT[status.status] || status.status}`);
    }
  }

  // ---- results --------------------------------------------------------------------------
  function renderResult(card, result) {
    const st = state(card);
    const W = result.width;
    const H = result.height;
    const detections = [...result.detections].sort((a, b) => b.score - a.score);
    part(card, "result").hidden = false;
    // the slider starts where the worker cut off: every box it returned is shown
    part(card, "slider").value = String(result.score_threshold);

    const img = part(card, "image");
    const overlay = part(card, "overlay");
    img.width = W;
    img.height = H;
    img.alt = `${st.filename} with the detected objects outlined`;
    img.addEventListener("error", () => {
      if (img.dataset.fallback) return;
      img.dataset.fallback = "1";
      overlay.setAttribute("display", "none");
      img.src = `/app/tasks/${st.taskId}/image`;
      part(card, "caption").prepend("The original upload is no longer kept; showing the server's annotated copy. ");
    });
    img.src = st.objectUrl || `/app/tasks/${st.taskId}/original`;

    st.detections = detections;
    st.size = [W, H];
    drawOverlay(card);
    if ("ResizeObserver" in window && !st.resizeObserver) {
      st.resizeObserver = new ResizeObserver(() => drawOverlay(card));
      st.resizeObserver.observe(part(card, "stage"));
    }
    const rows = part(card, "rows");
    rows.replaceChildren();
    detections.forEach((d, i) => rows.append(tableRow(d, i, card)));
    if (!detections.length) {
      const tr = document.createElement("tr");
      const td = document.createElement("td");
      td.colSpan = 3;
      td.className = "muted";
      td.textContent = "No objects found above the detector's threshold.";
      tr.append(td);
      rows.append(tr);
    }
    const t = result.timings || {};
    part(card, "caption").textContent =
      `${W}×${H} px · ${result.model_name} ${result.model_version} · ` +
      `inference ${Math.round(result.inference_ms)} ms` +
      (t.queue_wait_ms != null ? ` · waited ${Math.round(t.queue_wait_ms)} ms in queue` : "");
    applyThreshold(card);
  }

  // Labels keep about the same on-screen size however large the image is shown.
  function drawOverlay(card) {
    const st = state(card);
    const [W, H] = st.size;
    const overlay = part(card, "overlay");
    const shownWidth = part(card, "stage").clientWidth || W;
    const fontSize = Math.max(6, Math.round((13 * W) / shownWidth));
    if (overlay.dataset.fontSize === String(fontSize)) return;
    overlay.dataset.fontSize = String(fontSize);
    overlay.setAttribute("viewBox", `0 0 ${W} ${H}`);
    overlay.replaceChildren(...st.detections.map((d, i) => drawBox(d, i, W, H, fontSize)));
    applyThreshold(card);
  }

  function drawBox(d, index, W, H, fontSize) {
    const b = d.box_normalized;
    const x = b.x_min * W;
    const y = b.y_min * H;
    const w = (b.x_max - b.x_min) * W;
    const h = (b.y_max - b.y_min) * H;
    const colour = colourFor(d.class_id);
    const g = svg("g", { class: "box", "data-testid": "detection-box", "data-label": d.label, "data-score": d.score, "data-index": index });
    g.append(svg("rect", { class: "box__frame", x, y, width: w, height: h, stroke: colour, fill: colour }));
    const text = `${d.label} ${Math.round(d.score * 100)}%`;
    const labelW = text.length * fontSize * 0.58 + fontSize * 0.6;
    const labelH = fontSize * 1.35;
    const ly = y >= labelH ? y - labelH : y;
    const lx = Math.min(Math.max(0, x), Math.max(0, W - labelW));
    g.append(svg("rect", { class: "box__tag", x: lx, y: ly, width: labelW, height: labelH, fill: colour }));
    const label = svg("text", { class: "box__text", x: lx + fontSize * 0.3, y: ly + labelH * 0.74, "font-size": fontSize });
    label.textContent = text;
    g.append(label);
    return g;
  }

  function tableRow(d, index, card) {
    const tr = document.createElement("tr");
    tr.dataset.testid = "detection-row";
    tr.dataset.score = d.score;
    tr.dataset.index = index;
    const name = document.createElement("td");
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.setAttribute("aria-hidden", "true");
    swatch.style.background = colourFor(d.class_id);
    name.append(swatch, d.label);
    const score = document.createElement("td");
    score.className = "num";
    score.textContent = `${(d.score * 100).toFixed(1)}%`;
    const box = document.createElement("td");
    const p = d.box;
    box.className = "coords";
    box.textContent = `${Math.round(p.x_min)}, ${Math.round(p.y_min)} – ${Math.round(p.x_max)}, ${Math.round(p.y_max)}`;
    tr.append(name, score, box);
    const highlight = (on) => {
      const g = part(card, "overlay").querySelector(`g[data-index="${index}"]`);
      if (g) g.classList.toggle("is-highlighted", on);
    };
    tr.addEventListener("mouseenter", () => highlight(true));
    tr.addEventListener("mouseleave", () => highlight(false));
    return tr;
  }

  function applyThreshold(card) {
    const slider = part(card, "slider");
    const t = Number(slider.value);
    part(card, "slider-value").textContent = t.toFixed(2);
    slider.setAttribute("aria-valuetext", `${Math.round(t * 100)}%`);
    let shown = 0;
    let total = 0;
    for (const g of part(card, "overlay").querySelectorAll("g.box")) {
      const visible = Number(g.dataset.score) >= t;
      g.setAttribute("display", visible ? "inline" : "none");
    }
    for (const tr of part(card, "rows").querySelectorAll("tr[data-score]")) {
      const visible = Number(tr.dataset.score) >= t;
      tr.hidden = !visible;
      total += 1;
      shown += visible ? 1 : 0;
    }
    part(card, "shown").textContent = total ? `Showing ${shown} of ${total} objects` : "";
  }

  // ---- removing a card --------------------------------------------------------------------
  async function forget(card) {
    const st = state(card);
    if (st.taskId) {
      const response = await fetch(`/app/tasks/${st.taskId}`, {
        method: "DELETE",
        headers: { "X-CSRF-Token": csrf, Accept: "application/json" },
      }).catch(() => null);
      if (!response || (!response.ok && response.status !== 404)) {
        return showError(card, response && response.status === 401 ? "Your session has ended" : "It could not be removed; try again", response && response.status === 401);
      }
    }
    if (st.source) st.source.close();
    if (st.timer) window.clearTimeout(st.timer);
    if (st.resizeObserver) st.resizeObserver.disconnect();
    if (st.objectUrl) URL.revokeObjectURL(st.objectUrl);
    const next = card.nextElementSibling || card.previousElementSibling;
    card.remove();
    updateCount();
    announce(`${st.filename} removed from the list`);
    (next ? part(next, "forget") : input).focus();
  }

  // ---- history --------------------------------------------------------------------------
  async function loadHistory() {
    let response;
    try {
      response = await fetch("/app/tasks", { headers: { Accept: "application/json" } });
    } catch {
      countNote.textContent = "Your earlier detections could not be loaded.";
      return;
    }
    if (response.status === 401) {
      window.location.assign("/login");
      return;
    }
    if (!response.ok) {
      countNote.textContent = "Your earlier detections could not be loaded.";
      return;
    }
    const { tasks } = await response.json();
    for (const item of tasks) {
      const card = createCard(item.filename, false);
      attachTask(card, item.task_id);
      setMeta(card, item);
      if (item.status) {
        applyStatus(card, item.status);
        if (!FINAL.has(item.status.status)) follow(card);
      } else {
        const expired = item.error && item.error.code === "task_not_found";
        setStatus(card, expired ? "expired" : "unavailable");
        showError(card, expired ? "This result has expired on the server" : (item.error && item.error.detail) || "unavailable");
      }
    }
    updateCount();
  }

  // ---- wiring ---------------------------------------------------------------------------
  input.addEventListener("change", () => {
    enqueueFiles(input.files);
    input.value = "";
  });
  let dragDepth = 0;
  document.addEventListener("dragenter", (e) => {
    if (!e.dataTransfer || !Array.from(e.dataTransfer.types).includes("Files")) return;
    e.preventDefault();
    dragDepth += 1;
    dropzone.classList.add("is-dragging");
  });
  document.addEventListener("dragleave", () => {
    dragDepth = Math.max(0, dragDepth - 1);
    if (!dragDepth) dropzone.classList.remove("is-dragging");
  });
  document.addEventListener("dragover", (e) => {
    if (e.dataTransfer && Array.from(e.dataTransfer.types).includes("Files")) e.preventDefault();
  });
  document.addEventListener("drop", (e) => {
    if (!e.dataTransfer || !e.dataTransfer.files.length) return;
    e.preventDefault();
    dragDepth = 0;
    dropzone.classList.remove("is-dragging");
    enqueueFiles(e.dataTransfer.files);
  });
  document.addEventListener("paste", (e) => {
    const files = e.clipboardData ? Array.from(e.clipboardData.files) : [];
    if (files.length) enqueueFiles(files);
  });
  loadHistory();
})();
