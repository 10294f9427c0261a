/* Braid live dashboard.
 *
 * Plain ES2020, no libraries, no build step. Every 2 s it asks the serving
 * layer for /v1/status and for the selected view's rows (one request after the
 * other, never overlapping), then draws them on a <canvas>. Failed requests
 * are shown in #banner; nothing is logged to the console.
 */
"use strict";

// ---------------------------------------------------------------- test hooks
// Uncaught errors and unhandled rejections are collected for the browser test.
window.__braidErrors = [];
function recordError(message) {
  window.__braidErrors.push(String(message));
  if (document.body) document.body.dataset.errors = String(window.__braidErrors.length);
}
window.onerror = (message) => { recordError(message); };
window.addEventListener("unhandledrejection", (e) => {
  recordError((e.reason && e.reason.message) || e.reason);
});

// ----------------------------------------------------------------- constants
const REFRESH_MS = 2000;
const MAX_SERIES = 8; // above this many groups, the chart sums the column per window
const TABLE_ROWS = 20;
const MIN = 60e3, HOUR = 60 * MIN, DAY = 24 * HOUR;
const RANGES = { "15m": 15 * MIN, "1h": HOUR, "6h": 6 * HOUR, "24h": DAY, "7d": 7 * DAY };
// Okabe–Ito colours: distinguishable with the common colour-vision deficiencies.
const SOURCE_COLORS = { batch: "#56B4E9", speed: "#E69F00", "batch+speed": "#009E73" };
const LATE_COLOR = "#D55E00";
const PENDING_COLOR = "#CC79A7";
const STATE_RANK = { open: 0, closed: 1, final: 2 };
// Viridis stops for the completeness band (0 → 1).
const VIRIDIS = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
const TIME_STEPS = [MIN, 2 * MIN, 5 * MIN, 10 * MIN, 15 * MIN, 30 * MIN, HOUR, 2 * HOUR,
  3 * HOUR, 6 * HOUR, 12 * HOUR, DAY, 2 * DAY];
const MARGIN = { left: 66, top: 26, bottom: 24, right: 18, rightLabels: 110 };

// --------------------------------------------------------------------- state
const state = {
  views: null,                  // the list from /v1/views
  sel: readHash(),              // the user's choices, mirrored in the URL hash
  seen: { devices: new Set(), metrics: new Set() }, // values seen in the current view's rows
  shifted: false,               // true: the range ends at the watermark, not now
  anchor: null,                 // the watermark the shifted range ends at
  data: null,                   // the last answer for the current selection
  range: null,                  // { from, to } of that answer
  status: null,
  alerts: null,
  token: readToken(),
  hits: [],                     // drawn points, for the tooltip
  timer: 0, busy: false, again: false,
};

const $ = (id) => document.getElementById(id);

// ---------------------------------------------------------------- formatting
const pad2 = (n) => String(n).padStart(2, "0");

/** "2026-12-01 12:00:00Z", or "—" for null. */
function fmtUtc(ms) {
  if (ms == null || !Number.isFinite(ms)) return "—";
  const d = new Date(ms);
  return `${d.getUTCFullYear()}-${pad2(d.getUTCMonth() + 1)}-${pad2(d.getUTCDate())} ` +
    `${pad2(d.getUTCHours())}:${pad2(d.getUTCMinutes())}:${pad2(d.getUTCSeconds())}Z`;
}

/** A short human duration: "850 ms", "12.3 s", "4 m 12 s", "3 h 5 m", "2 d 4 h". */
function fmtDuration(ms) {
  if (ms == null || !Number.isFinite(ms)) return "—";
  const a = Math.abs(ms), sign = ms < 0 ? "-" : "";
  if (a < 1000) return `${sign}${Math.round(a)} ms`;
  if (a < MIN) return `${sign}${(a / 1000).toFixed(1)} s`;
  if (a < HOUR) return `${sign}${Math.floor(a / MIN)} m ${Math.floor((a % MIN) / 1000)} s`;
  if (a < DAY) return `${sign}${Math.floor(a / HOUR)} h ${Math.floor((a % HOUR) / MIN)} m`;
  return `${sign}${Math.floor(a / DAY)} d ${Math.floor((a % DAY) / HOUR)} h`;
}

/** Numbers for people: integers as they are, others to 4 significant digits. */
function fmtNum(v) {
  if (v == null || typeof v !== "number" || !Number.isFinite(v)) return "—";
  if (Number.isInteger(v)) return String(v);
  return Math.abs(v) >= 1000 ? String(Math.round(v)) : String(Number(v.toPrecision(4)));
}

const fmtPercent = (c) => (c == null ? "—" : `${Math.round(c * 100)}%`);
const fmtCut = (cut) => (cut ? Object.entries(cut).map(([p, o]) => `${p}:${o}`).join(" ") || "—" : "—");

/** An axis label for a time tick, as precise as the tick step needs. */
function fmtTick(ms, step, span) {
  const d = new Date(ms);
  const date = `${pad2(d.getUTCMonth() + 1)}-${pad2(d.getUTCDate())}`;
  const time = `${pad2(d.getUTCHours())}:${pad2(d.getUTCMinutes())}`;
  if (step >= DAY) return date;
  return span > DAY ? `${date} ${time}` : time;
}

function escapeHtml(s) {
  return String(s).replace(/[&<>"']/g, (c) =>
    ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}

// ------------------------------------------------------------------- scaling
/** A 1-2-5 step giving about `target` intervals over `span`. */
function niceStep(span, target) {
  const raw = span / Math.max(1, target);
  const mag = 10 ** Math.floor(Math.log10(raw));
  const f = raw / mag;
  return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * mag;
}

/** A padded, tick-aligned value domain covering `values` with its ticks. */
function valueAxis(values, target = 5) {
  let min = Math.min(...values), max = Math.max(...values);
  if (!Number.isFinite(min)) { min = 0; max = 1; }
  if (max === min) { const pad = Math.abs(min) * 0.1 || 1; min -= pad; max += pad; }
  const step = niceStep(max - min, target);
  const lo = Math.floor(min / step) * step, hi = Math.ceil(max / step) * step;
  const ticks = [];
  for (let v = lo; v <= hi + step / 2; v += step) ticks.push(Number(v.toPrecision(12)));
  return { lo, hi, ticks };
}

/** UTC-aligned time ticks, about `target` of them, between from and to. */
function timeTicks(from, to, target = 6) {
  const span = to - from;
  const step = TIME_STEPS.find((s) => span / s <= target) || TIME_STEPS[TIME_STEPS.length - 1];
  const ticks = [];
  for (let t = Math.ceil(from / step) * step; t <= to; t += step) ticks.push(t);
  return { step, ticks };
}

/** Viridis colour for completeness c in 0..1. */
function viridis(c) {
  const x = Math.min(1, Math.max(0, c)) * (VIRIDIS.length - 1);
  const i = Math.min(VIRIDIS.length - 2, Math.floor(x)), f = x - i;
  const rgb = VIRIDIS[i].map((v, k) => Math.round(v + (VIRIDIS[i + 1][k] - v) * f));
  return `rgb(${rgb.join(",")})`;
}

// -------------------------------------------------------- selection and hash
function readHash() {
  const p = new URLSearchParams(location.hash.slice(1));
  const range = p.get("range");
  return {
    view: p.get("view") || "", device: p.get("device") || "", metric: p.get("metric") || "",
    column: p.get("column") || "", range: RANGES[range] ? range : "1h",
  };
}

function writeHash() {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(state.sel)) if (v) p.set(k, v);
  // replaceState does not fire hashchange, so this does not loop.
  history.replaceState(null, "", `#${p}`);
}

const currentView = () => (state.views || []).find((v) => v.name === state.sel.view) || null;
const groupedBy = (view, key) => !!view && (view.group_by || []).includes(key);
const selectionKey = () => JSON.stringify([state.sel.view, state.sel.device, state.sel.metric, state.sel.range]);

function metricsOf(view) {
  const all = new Set([...(view.metrics || []), ...state.seen.metrics]);
  return [...all].sort();
}

/** Forgets what belongs to the previous view or range. */
function resetViewState() {
  state.seen = { devices: new Set(), metrics: new Set() };
  state.shifted = false;
  state.anchor = null;
  state.data = null;
}

/** Makes the selection valid for the views we know: defaults where needed. */
function normalizeSelection() {
  const sel = state.sel;
  if (!currentView() && state.views.length) sel.view = state.views[0].name;
  const view = currentView();
  if (!view) return;
  const cols = view.columns || [];
  if (!cols.includes(sel.column)) sel.column = cols.includes("mean") ? "mean" : cols[0] || "";
  if (!groupedBy(view, "device_id")) sel.device = "";
  if (!groupedBy(view, "metric")) sel.metric = "";
  else if (!sel.metric) sel.metric = metricsOf(view)[0] || "";
  writeHash();
}

// ------------------------------------------------------------------- fetching
/** An answer the server refused, or a request that did not get through. */
class ApiError extends Error {}

/**
 * The read token typed into the token field (or given once as `#token=` in
 * the address, which is then dropped from it), kept for this tab only.
 */
function readToken() {
  const given = new URLSearchParams(location.hash.slice(1)).get("token");
  if (given) { saveToken(given); return given; }
  try { return sessionStorage.getItem("braid.token") || ""; } catch (_) { return ""; }
}

/** Keeps `t` for this tab (the caller sets `state.token`). */
function saveToken(t) {
  try {
    if (t) sessionStorage.setItem("braid.token", t); else sessionStorage.removeItem("braid.token");
  } catch (_) { /* storage off: the token lasts until the page reloads */ }
}

async function getJSON(url) {
  const label = url.split("?")[0];
  let res, text;
  const headers = { accept: "application/json" };
  if (state.token) headers.authorization = `Bearer ${state.token}`;
  try {
    res = await fetch(url, { headers, cache: "no-store" });
    text = await res.text();
  } catch (e) {
    throw new ApiError(`${label}: network error: ${e.message || e}`);
  }
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch (_) { body = null; }
  if (!res.ok) {
    const why = (body && body.error) || text.slice(0, 200) || res.statusText;
    const hint = res.status === 401 ? " (this server needs a read token: paste one into the token field)"
      : res.status === 403 ? " (the token in the token field may not read this)" : "";
    throw new ApiError(`${label}: HTTP ${res.status}: ${why}${hint}`);
  }
  if (body === null || typeof body !== "object") throw new ApiError(`${label}: the answer is not JSON`);
  return body;
}

async function loadViews() {
  const body = await getJSON("/v1/views");
  state.views = Array.isArray(body.views) ? body.views : [];
  normalizeSelection();
  renderControls();
}

async function loadStatus() {
  state.status = await getJSON("/v1/status");
  renderStatus();
}

/** /v1/alerts exists only when the status says so: never ask it otherwise. */
async function loadAlerts() {
  const available = !!(state.status && state.status.alerts && state.status.alerts.available === true);
  state.alerts = available ? (await getJSON("/v1/alerts")).alerts || [] : null;
  renderAlerts();
}

async function fetchRows(view, from, to) {
  const p = new URLSearchParams({ from: String(Math.floor(from)), to: String(Math.ceil(to)) });
  if (state.sel.device && groupedBy(view, "device_id")) p.set("device", state.sel.device);
  if (state.sel.metric && groupedBy(view, "metric")) p.set("metric", state.sel.metric);
  const body = await getJSON(`/v1/views/${encodeURIComponent(view.name)}?${p}`);
  if (!Array.isArray(body.rows)) body.rows = [];
  return body;
}

/** The selected view's rows over the selected range, following the watermark
 * when the data is older than the range (a replay or a simulation). */
async function loadRows() {
  const view = currentView();
  if (!view) return;
  const key = selectionKey();
  const span = RANGES[state.sel.range];
  const slack = 2 * (view.window_ms || MIN); // open windows can start past the watermark
  let to = state.shifted && state.anchor != null ? state.anchor + slack : Date.now();
  let data = await fetchRows(view, to - span, to);
  const wm = data.watermark, now = Date.now();
  if (!state.shifted && data.rows.length === 0 && wm != null && now - wm > span) {
    state.shifted = true;
    state.anchor = wm;
    to = wm + slack;
    data = await fetchRows(view, to - span, to);
  } else if (state.shifted && wm != null) {
    if (now - wm <= span) state.shifted = false; // live data is back in range: next time, end at now
    else state.anchor = wm;
  }
  if (key !== selectionKey()) return; // the selection changed meanwhile; a new refresh is queued
  state.data = data;
  state.range = { from: to - span, to };
  for (const r of data.rows) {
    if (r.device_id != null) state.seen.devices.add(String(r.device_id));
    if (r.metric != null) state.seen.metrics.add(String(r.metric));
  }
  renderControls();
  renderHeader();
  renderChart();
  renderTable();
}

// ----------------------------------------------------------- refresh loop
/** One refresh: every step in turn; an API failure goes to the banner, a bug
 * in our own code also goes to __braidErrors. */
async function refresh() {
  state.busy = true;
  const errors = [];
  const step = async (fn) => {
    try { await fn(); } catch (e) {
      errors.push(e.message || String(e));
      if (!(e instanceof ApiError)) recordError(e.message || e);
    }
  };
  try {
    if (!state.views) await step(loadViews);
    await step(loadStatus);
    if (state.views) await step(loadRows);
    await step(loadAlerts);
    showBanner(errors);
  } finally {
    state.busy = false;
    const soon = state.again;
    state.again = false;
    schedule(soon ? 0 : REFRESH_MS);
  }
}

function schedule(ms) {
  clearTimeout(state.timer);
  state.timer = setTimeout(refresh, ms);
}

/** Refresh now, or right after the refresh in flight. */
function requestRefresh() {
  if (state.busy) state.again = true;
  else schedule(0);
}

function showBanner(errors) {
  const banner = $("banner");
  banner.hidden = errors.length === 0;
  banner.textContent = errors.length ? `${fmtUtc(Date.now())} — ${errors.join("\n")}` : "";
}

// ------------------------------------------------------------------ controls
/** Rebuilds a <select> only when its options change (an open one stays open). */
function fillSelect(el, options, value) {
  const opts = options.map((o) => (typeof o === "string" ? { value: o, label: o } : o));
  const sig = JSON.stringify(opts);
  if (el.dataset.sig !== sig) {
    el.replaceChildren(...opts.map((o) => new Option(o.label, o.value)));
    el.dataset.sig = sig;
  }
  el.value = value;
}

function renderControls() {
  const view = currentView();
  if (!state.views || !view) return;
  const sel = state.sel;
  fillSelect($("view-select"), state.views.map((v) => v.name), sel.view);
  const devices = new Set(state.seen.devices);
  if (sel.device) devices.add(sel.device);
  const sorted = [...devices].sort((a, b) => a.localeCompare(b, undefined, { numeric: true }));
  fillSelect($("device-select"), [{ value: "", label: "all devices" }, ...sorted], sel.device);
  $("device-select").disabled = !groupedBy(view, "device_id");
  $("metric-label").hidden = !groupedBy(view, "metric");
  fillSelect($("metric-select"), [{ value: "", label: "all metrics" }, ...metricsOf(view)], sel.metric);
  fillSelect($("column-select"), view.columns || [], sel.column);
  $("range-select").value = sel.range;
  $("view-description").textContent = view.description || "";
  $("range-note").textContent = state.shifted
    ? `no rows up to now: showing the range ending at the watermark (${fmtUtc(state.anchor)})` : "";
}

function onControlChange(field, value) {
  const sel = state.sel;
  sel[field] = value;
  if (field === "view") {
    sel.device = ""; sel.metric = ""; sel.column = "";
    resetViewState();
    normalizeSelection();
  } else if (field === "range") {
    state.shifted = false;
  }
  writeHash();
  renderControls();
  if (field === "column") { renderChart(); renderTable(); } // no new request needed
  else requestRefresh();
}

function wireControls() {
  const fields = { "view-select": "view", "device-select": "device", "metric-select": "metric",
    "column-select": "column", "range-select": "range" };
  for (const [id, field] of Object.entries(fields)) {
    $(id).addEventListener("change", (e) => onControlChange(field, e.target.value));
  }
  $("token-form").addEventListener("submit", (e) => e.preventDefault());
  const tokenInput = $("token-input");
  tokenInput.value = state.token;
  tokenInput.addEventListener("change", (e) => {
    state.token = e.target.value.trim();
    saveToken(state.token);
    requestRefresh();
  });
  window.addEventListener("hashchange", () => {
    const before = state.sel.view;
    state.sel = readHash();
    if (state.sel.view !== before) resetViewState();
    if (state.views) { normalizeSelection(); renderControls(); }
    requestRefresh();
  });
}

// -------------------------------------------------------------------- header
function renderHeader() {
  const d = state.data, view = currentView();
  $("hdr-view").textContent = view ? view.name : "—";
  if (!d) return;
  $("hdr-watermark").textContent = d.watermark == null ? "none yet"
    : `${fmtUtc(d.watermark)} (${fmtDuration(Date.now() - d.watermark)} ago)`;
  $("hdr-freshness").textContent = d.freshness_ms == null ? "no speed data yet" : fmtDuration(d.freshness_ms);
  const b = d.batch;
  $("hdr-batch").textContent = b
    ? `${b.run_id} · ${fmtUtc(b.finished_ms)} · ${fmtDuration(Date.now() - b.finished_ms)} ago`
    : "none yet";
}

// -------------------------------------------------------------- chart model
function completenessOf(row) {
  if (typeof row.completeness === "number") return row.completeness;
  if (row.expected_devices && row.reporting_devices != null) return row.reporting_devices / row.expected_devices;
  return null;
}

const sum = (rows, f) => rows.reduce((s, r) => s + (Number(r[f]) || 0), 0);

/** One chart point from the rows of one window (one row, or several summed). */
function pointOf(rows, column, label) {
  const values = rows.map((r) => r[column]).filter((v) => typeof v === "number");
  const sources = new Set(rows.map((r) => r.source));
  const comps = rows.map(completenessOf).filter((c) => c != null);
  return {
    t: rows[0].window_start, end: rows[0].window_end, label,
    value: values.length ? values.reduce((a, b) => a + b, 0) : null,
    source: sources.size === 1 ? rows[0].source : "batch+speed",
    // The least settled state of the rows summed.
    state: rows.reduce((s, r) => (STATE_RANK[r.state] < STATE_RANK[s] ? r.state : s), rows[0].state),
    readings: sum(rows, "readings"), readingsBatch: sum(rows, "readings_batch"),
    readingsSpeed: sum(rows, "readings_speed"), late: sum(rows, "late_readings"),
    pending: sum(rows, "pending_historical"), duplicates: sum(rows, "duplicates_dropped"),
    completeness: comps.length ? Math.max(...comps) : null,
  };
}

/** Rows grouped by `key` into a Map, in first-seen order. */
function groupRows(rows, key) {
  const m = new Map();
  for (const r of rows) {
    const k = key(r);
    if (!m.has(k)) m.set(k, []);
    m.get(k).push(r);
  }
  return m;
}

/** Chart series: one per group (device, tags) up to MAX_SERIES, else one
 * series summing the column over all groups per window. */
function buildSeries(rows, view, column) {
  const keys = (view.group_by || []).filter((k) => !(k === "metric" && state.sel.metric));
  const groups = groupRows(rows, (r) => keys.map((k) => r[k] ?? "∅").join(" · ") || view.name);
  if (groups.size <= MAX_SERIES) {
    return [...groups].map(([label, rs]) => ({ label, points: rs.map((r) => pointOf([r], column, label)) }));
  }
  const label = `sum over ${groups.size} groups`;
  const windows = groupRows(rows, (r) => r.window_start);
  return [{ label, summed: true, points: [...windows.values()].map((rs) => pointOf(rs, column, label)) }];
}

// --------------------------------------------------------------- drawing
/** Sizes a canvas for its CSS box and the device pixel ratio. */
function setupCanvas(canvas) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth, h = canvas.clientHeight;
  canvas.width = Math.max(1, Math.round(w * dpr));
  canvas.height = Math.max(1, Math.round(h * dpr));
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  return { ctx, w, h };
}

const cssVar = (name) => getComputedStyle(document.body).getPropertyValue(name).trim();

/** A window's point: colour by source, style by state. */
function drawPoint(ctx, x, y, r, p) {
  const color = SOURCE_COLORS[p.source] || "#999";
  ctx.beginPath();
  ctx.arc(x, y, r, 0, 2 * Math.PI);
  ctx.lineWidth = 1.5;
  ctx.strokeStyle = color;
  if (p.state === "open") {
    ctx.fillStyle = cssVar("--bg-panel");
    ctx.fill();
    ctx.setLineDash([2, 2]);
  } else {
    ctx.globalAlpha = p.state === "closed" ? 0.45 : 1;
    ctx.fillStyle = color;
    ctx.fill();
    ctx.globalAlpha = 1;
  }
  ctx.stroke();
  ctx.setLineDash([]);
}

function drawLateMarker(ctx, x, y) { // downward triangle
  ctx.fillStyle = LATE_COLOR;
  ctx.beginPath();
  ctx.moveTo(x - 4, y - 3); ctx.lineTo(x + 4, y - 3); ctx.lineTo(x, y + 4);
  ctx.closePath(); ctx.fill();
}

function drawPendingMarker(ctx, x, y) { // diamond
  ctx.fillStyle = PENDING_COLOR;
  ctx.beginPath();
  ctx.moveTo(x, y - 4); ctx.lineTo(x + 4, y); ctx.lineTo(x, y + 4); ctx.lineTo(x - 4, y);
  ctx.closePath(); ctx.fill();
}

function drawAxes(ctx, L, yAxis, from, to, x, y) {
  const muted = cssVar("--muted"), grid = cssVar("--grid");
  ctx.font = "11px system-ui, sans-serif";
  ctx.lineWidth = 1;
  ctx.fillStyle = muted;
  ctx.textAlign = "right"; ctx.textBaseline = "middle";
  for (const v of yAxis.ticks) {
    ctx.strokeStyle = grid;
    ctx.beginPath(); ctx.moveTo(L.x0, Math.round(y(v)) + 0.5); ctx.lineTo(L.x1, Math.round(y(v)) + 0.5); ctx.stroke();
    ctx.fillText(fmtNum(v), L.x0 - 6, y(v));
  }
  const { step, ticks } = timeTicks(from, to, Math.max(2, Math.floor((L.x1 - L.x0) / 90)));
  ctx.textAlign = "center"; ctx.textBaseline = "top";
  for (const t of ticks) {
    ctx.strokeStyle = grid;
    ctx.beginPath(); ctx.moveTo(Math.round(x(t)) + 0.5, L.y0); ctx.lineTo(Math.round(x(t)) + 0.5, L.y1); ctx.stroke();
    ctx.fillText(fmtTick(t, step, to - from), x(t), L.y1 + 6);
  }
  ctx.strokeStyle = muted;
  ctx.strokeRect(L.x0 + 0.5, L.y0 + 0.5, L.x1 - L.x0, L.y1 - L.y0);
  // The column's name along the value axis; "UTC" under the first time label.
  ctx.textAlign = "left"; ctx.textBaseline = "top";
  ctx.fillText("UTC", 4, L.y1 + 6);
  ctx.save();
  ctx.translate(4, (L.y0 + L.y1) / 2);
  ctx.rotate(-Math.PI / 2);
  ctx.textAlign = "center";
  ctx.fillText(state.sel.column, 0, 0);
  ctx.restore();
}

/** Series names in the right margin, pushed apart so they do not overlap. */
function drawSeriesLabels(ctx, labels, L) {
  labels.sort((a, b) => a.y - b.y);
  let last = -Infinity;
  ctx.fillStyle = cssVar("--muted");
  ctx.textAlign = "left"; ctx.textBaseline = "middle";
  for (const l of labels) {
    const y = Math.max(l.y, last + 12);
    last = y;
    ctx.fillText(l.label.length > 16 ? `${l.label.slice(0, 15)}…` : l.label, L.x1 + 6, y);
  }
}

/** The chart: axes, one line per series, a point per window, and the
 * late/pending markers in the strip above the plot. */
function renderChart() {
  const { ctx, w, h } = setupCanvas($("chart"));
  const view = currentView(), d = state.data;
  state.hits = [];
  let drawn = 0;
  if (view && d && state.range) {
    const series = buildSeries(d.rows, view, state.sel.column);
    const multi = series.length > 1;
    const L = { x0: MARGIN.left, x1: w - (multi ? MARGIN.rightLabels : MARGIN.right),
      y0: MARGIN.top, y1: h - MARGIN.bottom };
    const { from, to } = state.range;
    const x = (t) => L.x0 + ((t - from) / (to - from)) * (L.x1 - L.x0);
    const values = series.flatMap((s) => s.points.map((p) => p.value)).filter((v) => v != null);
    const yAxis = valueAxis(values);
    const y = (v) => L.y1 - ((v - yAxis.lo) / (yAxis.hi - yAxis.lo)) * (L.y1 - L.y0);
    drawAxes(ctx, L, yAxis, from, to, x, y);
    const nWindows = Math.max(1, (to - from) / (view.hop_ms || view.window_ms || MIN));
    const r = Math.max(2, Math.min(5, (L.x1 - L.x0) / nWindows / 3));
    const labels = [];
    for (const s of series) {
      drawn += drawSeries(ctx, s, x, y, r);
      const last = [...s.points].reverse().find((p) => p.value != null);
      if (multi && last) labels.push({ label: s.label, y: y(last.value) });
    }
    drawSeriesLabels(ctx, labels, L);
    drawMarkers(ctx, d.rows, x);
    if (!values.length) drawMessage(ctx, w, h, d.rows.length ? `no ${state.sel.column} values in this range` : "no rows in this range");
    renderBand(view, d.rows, x);
    renderLegend(series);
  } else {
    drawMessage(ctx, w, h, "waiting for data…");
  }
  document.body.dataset.points = String(drawn);
  document.body.dataset.drawn = drawn > 0 ? "1" : "0";
}

/** Draws one series (line under points); returns the number of points drawn. */
function drawSeries(ctx, s, x, y, r) {
  const pts = s.points.filter((p) => p.value != null).sort((a, b) => a.t - b.t);
  ctx.strokeStyle = cssVar("--series-line");
  ctx.lineWidth = 1;
  ctx.beginPath();
  pts.forEach((p, i) => (i ? ctx.lineTo(x(p.t), y(p.value)) : ctx.moveTo(x(p.t), y(p.value))));
  ctx.stroke();
  for (const p of pts) {
    drawPoint(ctx, x(p.t), y(p.value), r, p);
    state.hits.push({ x: x(p.t), y: y(p.value), p });
  }
  return pts.length;
}

/** Late and pending markers, one of each per window at most. */
function drawMarkers(ctx, rows, x) {
  for (const rs of groupRows(rows, (r) => r.window_start).values()) {
    const p = pointOf(rs, state.sel.column, "all groups in this window");
    const px = x(p.t);
    if (p.late > 0) { drawLateMarker(ctx, px, 8); state.hits.push({ x: px, y: 8, p }); }
    if (p.pending > 0) { drawPendingMarker(ctx, px, 19); state.hits.push({ x: px, y: 19, p }); }
  }
}

function drawMessage(ctx, w, h, text) {
  ctx.fillStyle = cssVar("--muted");
  ctx.font = "13px system-ui, sans-serif";
  ctx.textAlign = "center"; ctx.textBaseline = "middle";
  ctx.fillText(text, w / 2, h / 2);
}

/** The completeness strip: one cell per window, shaded 0..1 (viridis). */
function renderBand(view, rows, x) {
  const { ctx } = setupCanvas($("completeness-canvas"));
  const hasExpected = view.expected_devices != null || rows.some((r) => completenessOf(r) != null);
  $("completeness").classList.toggle("empty", !hasExpected);
  $("completeness-note").textContent = hasExpected ? "" : "no expected devices for this view";
  if (!hasExpected) return;
  const hop = Math.min(view.hop_ms || Infinity, view.window_ms || Infinity);
  for (const rs of groupRows(rows, (r) => r.window_start).values()) {
    const c = pointOf(rs, state.sel.column, "").completeness;
    if (c == null) continue;
    const t = rs[0].window_start, end = Number.isFinite(hop) ? t + hop : rs[0].window_end;
    ctx.fillStyle = viridis(c);
    ctx.fillRect(x(t), 0, Math.max(1, x(end) - x(t) - 0.5), ctx.canvas.clientHeight);
  }
}

// -------------------------------------------------------------------- legend
const svg = (inner) => `<svg width="14" height="14" viewBox="0 0 14 14" aria-hidden="true">${inner}</svg>`;
const circle = (color, style) => svg(`<circle cx="7" cy="7" r="5" stroke="${color}" stroke-width="1.5" ${style}/>`);

function renderLegend(series) {
  const item = (icon, text) => `<span class="item">${icon}${escapeHtml(text)}</span>`;
  const grey = "#aaa";
  const html = [
    `<span class="group">source:</span>`,
    ...Object.entries(SOURCE_COLORS).map(([s, c]) => item(circle(c, `fill="${c}"`), s)),
    `<span class="group">state:</span>`,
    item(circle(grey, `fill="none" stroke-dasharray="2 2"`), "open"),
    item(circle(grey, `fill="${grey}" fill-opacity="0.45"`), "closed"),
    item(circle(grey, `fill="${grey}"`), "final"),
    `<span class="group">markers:</span>`,
    item(svg(`<path d="M3 4 H11 L7 11 Z" fill="${LATE_COLOR}"/>`), "late readings"),
    item(svg(`<path d="M7 2 L12 7 L7 12 L2 7 Z" fill="${PENDING_COLOR}"/>`), "pending historical"),
    `<span class="group">completeness:</span>`,
    `<span class="item"><span class="ramp"></span>0 → 1</span>`,
    series.length && series[0].summed
      ? `<span class="group">${escapeHtml(series[0].label)} (more than ${MAX_SERIES}: choose a device to see one)</span>` : "",
  ].join("");
  if ($("legend").innerHTML !== html) $("legend").innerHTML = html;
}

// ------------------------------------------------------------------- tooltip
function tooltipHtml(p) {
  const rows = [
    ["window", `${fmtUtc(p.t)} → ${fmtUtc(p.end)}`], ["group", p.label],
    [state.sel.column, fmtNum(p.value)], ["source", p.source], ["state", p.state],
    ["readings", `${p.readings} (batch ${p.readingsBatch}, speed ${p.readingsSpeed})`],
    ["late", p.late], ["pending historical", p.pending], ["duplicates dropped", p.duplicates],
    ["completeness", fmtPercent(p.completeness)],
  ];
  return `<table>${rows.map(([k, v]) => `<tr><th>${escapeHtml(k)}</th><td>${escapeHtml(v)}</td></tr>`).join("")}</table>`;
}

function onChartHover(e) {
  const tip = $("tooltip");
  const rect = e.currentTarget.getBoundingClientRect();
  const mx = e.clientX - rect.left, my = e.clientY - rect.top;
  let best = null, bestD = 12 * 12;
  for (const h of state.hits) {
    const dd = (h.x - mx) ** 2 + (h.y - my) ** 2;
    if (dd < bestD) { best = h; bestD = dd; }
  }
  if (!best) { tip.hidden = true; return; }
  tip.innerHTML = tooltipHtml(best.p);
  tip.hidden = false;
  // Keep the tooltip inside the chart: flip it left of the cursor near the right edge.
  const left = mx + 14 + tip.offsetWidth > rect.width ? mx - 14 - tip.offsetWidth : mx + 14;
  tip.style.left = `${Math.max(0, left)}px`;
  tip.style.top = `${Math.max(0, Math.min(my + 10, rect.height - tip.offsetHeight))}px`;
}

// --------------------------------------------------------------------- table
function renderTable() {
  const view = currentView(), d = state.data;
  if (!view || !d) return;
  const keys = view.group_by || [], cols = view.columns || [];
  const newest = d.rows.slice(-TABLE_ROWS).reverse(); // rows come ordered by window
  const head = ["window (UTC)", ...keys, ...cols, "source", "state", "readings b/s", "late", "pending", "dup", "complete"];
  const cell = (v, cls = "") => `<td${cls ? ` class="${cls}"` : ""}>${escapeHtml(v)}</td>`;
  const body = newest.map((r) => `<tr>${[
    cell(fmtUtc(r.window_start)),
    ...keys.map((k) => cell(r[k] ?? "—")),
    ...cols.map((c) => cell(fmtNum(r[c]), c === state.sel.column ? "num chosen" : "num")),
    cell(r.source, `src src-${String(r.source).replace("+", "-")}`),
    cell(r.state, `state-${r.state}`),
    cell(`${r.readings_batch ?? 0}/${r.readings_speed ?? 0}`, "num"),
    cell(r.late_readings, r.late_readings > 0 ? "num warn" : "num"),
    cell(r.pending_historical, r.pending_historical > 0 ? "num warn" : "num"),
    cell(r.duplicates_dropped, "num"),
    cell(fmtPercent(completenessOf(r)), "num"),
  ].join("")}</tr>`).join("");
  $("rows").innerHTML = `<thead><tr>${head.map((h) => `<th>${escapeHtml(h)}</th>`).join("")}</tr></thead>` +
    `<tbody>${body || `<tr><td colspan="${head.length}" class="note">no rows in this range</td></tr>`}</tbody>`;
}

// -------------------------------------------------------------------- status
const table = (head, rows) => `<table class="small"><thead><tr>${head.map((h) => `<th>${escapeHtml(h)}</th>`).join("")}` +
  `</tr></thead><tbody>${rows.map((r) => `<tr>${r.map((c) => `<td>${escapeHtml(c)}</td>`).join("")}</tr>`).join("")}</tbody></table>`;

function batchRunCells(name, run) {
  if (run == null) return [name, "no batch run yet", "", "", "", ""];
  if (run.error) return [name, `error: ${run.error}`, "", "", "", ""];
  if (run.stale_run) return [name, `stale: ${run.stale_run} (${run.reason || "another definition"})`, "", "", "", ""];
  return [name, run.run_id, `${fmtUtc(run.finished_ms)} (${fmtDuration(Date.now() - run.finished_ms)} ago)`,
    fmtCut(run.cut), fmtNum(run.rows), run.incremental ? "yes" : "no"];
}

function renderStatus() {
  const s = state.status || {}, speed = s.speed || {}, batch = s.batch || {};
  const parts = Object.entries(speed.partitions || {})
    .sort(([a], [b]) => Number(a) - Number(b))
    .map(([p, v]) => [p, fmtNum(v.next_offset), fmtUtc(v.max_event_ts), fmtNum(v.states),
      fmtNum(v.sealed_epochs), v.lag == null ? "—" : fmtNum(v.lag)]);
  const runs = Object.entries(batch.views || {}).map(([name, run]) => batchRunCells(name, run));
  const pending = batch.pending_imports || [];
  $("status").innerHTML = `
    <h3>Speed layer <span class="pill ${speed.caught_up ? "ok" : "warn"}">${speed.caught_up ? "caught up" : "catching up"}</span></h3>
    <p class="kv">applied <b>${fmtNum(speed.messages_applied)}</b> · ignored <b>${fmtNum(speed.messages_ignored)}</b>
      · undecodable <b>${fmtNum(speed.messages_undecodable)}</b></p>
    ${parts.length ? table(["partition", "next offset", "max event ts", "states", "sealed epochs", "lag"], parts) : `<p class="note">no partitions yet</p>`}
    <h3>Batch layer</h3>
    ${runs.length ? table(["view", "run", "finished", "cut", "rows", "incremental"], runs) : `<p class="note">no views</p>`}
    <p class="kv">pending imports: ${pending.length ? pending.map((i) => `<code>${escapeHtml(i)}</code>`).join(" ") : "none"}</p>`;
}

// -------------------------------------------------------------------- alerts
function renderAlerts() {
  const el = $("alerts");
  if (!state.status) { el.innerHTML = `<p class="note">waiting for /v1/status…</p>`; return; }
  if (state.alerts === null) {
    el.innerHTML = `<p class="note">Anomaly detection is not configured on this server.</p>`;
    return;
  }
  if (!state.alerts.length) { el.innerHTML = `<p class="note">no alerts</p>`; return; }
  const newest = [...state.alerts].sort((a, b) => b.ts - a.ts).slice(0, 50);
  el.innerHTML = `<ul class="alerts">${newest.map((a) => `
    <li class="sev-${escapeHtml(a.severity || "info")}">
      <span class="when">${escapeHtml(fmtUtc(a.ts))}</span>
      <b>${escapeHtml(a.device_id ?? "—")}</b> ${escapeHtml(a.metric ?? "")} = ${escapeHtml(fmtNum(a.value))}
      <span class="note">expected ${escapeHtml(fmtNum(a.expected_min))}…${escapeHtml(fmtNum(a.expected_max))},
        score ${escapeHtml(fmtNum(a.score))} (${escapeHtml(a.detector || "?")}, ${escapeHtml(a.severity || "?")})</span>
    </li>`).join("")}</ul>`;
}

// ---------------------------------------------------------------------- boot
function boot() {
  document.body.dataset.errors = String(window.__braidErrors.length);
  document.body.dataset.drawn = "0";
  document.body.dataset.points = "0";
  $("range-select").value = state.sel.range;
  wireControls();
  const chart = $("chart");
  chart.addEventListener("mousemove", onChartHover);
  chart.addEventListener("mouseleave", () => { $("tooltip").hidden = true; });
  let pending = false; // redraw at most once per frame while resizing
  window.addEventListener("resize", () => {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => { pending = false; renderChart(); });
  });
  renderChart();
  refresh();
}

if (typeof document !== "undefined" && document.getElementById("chart")) boot();
