/* The qw dashboard: a single-page UI over the HTTP API of docs/dashboard.md.
 *
 * Every string that comes from the API reaches the DOM as text: el() and svg() below only
 * use createTextNode and setAttribute, and nothing in this file parses HTML.
 */
"use strict";

(function () {

// ───────────────────────────── DOM helpers ─────────────────────────────

const SVG_NS = "http://www.w3.org/2000/svg";

/** Appends children to parent: nodes as they are, strings and numbers as text nodes,
    arrays flattened; null, undefined and false are skipped. */
function append(parent, children) {
  for (const c of children) {
    if (c == null || c === false) continue;
    if (Array.isArray(c)) append(parent, c);
    else if (c instanceof Node) parent.appendChild(c);
    else parent.appendChild(document.createTextNode(String(c)));
  }
  return parent;
}

/** Sets attributes. Functions under `on…` keys become event listeners, `style` takes an
    object of CSSOM properties (custom properties too), null/false skip, true sets "". */
function setAttrs(node, attrs) {
  if (!attrs) return node;
  for (const [k, v] of Object.entries(attrs)) {
    if (v == null || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") {
      node.addEventListener(k.slice(2), v);
    } else if (k === "style") {
      for (const [p, val] of Object.entries(v)) {
        if (val == null) continue;
        if (p.startsWith("--")) node.style.setProperty(p, String(val));
        else node.style[p] = String(val);
      }
    } else {
      node.setAttribute(k, v === true ? "" : String(v));
    }
  }
  return node;
}

/** el("tr", { "data-task": id }, el("td", null, id)): an HTML element. */
function el(tag, attrs, ...children) {
  return append(setAttrs(document.createElement(tag), attrs), children);
}

/** The same for SVG elements. */
function svg(tag, attrs, ...children) {
  return append(setAttrs(document.createElementNS(SVG_NS, tag), attrs), children);
}

/** Replaces all children of node. */
function fill(node, ...children) {
  node.replaceChildren();
  return append(node, children);
}

const enc = encodeURIComponent;

function dec(s) {
  try { return decodeURIComponent(s); } catch { return s; }
}

/** "?a=1&b=x%20y" from an object; null, undefined and "" values are left out. */
function qs(params) {
  if (!params) return "";
  const parts = [];
  for (const [k, v] of Object.entries(params)) {
    if (v == null || v === "") continue;
    parts.push(enc(k) + "=" + enc(String(v)));
  }
  return parts.length ? "?" + parts.join("&") : "";
}

function parseJSON(text) {
  try { return JSON.parse(text); } catch { return undefined; }
}

/** fn, run once a burst of calls has been quiet for `ms`. */
function debounce(fn, ms) {
  let timer = null;
  const d = (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => { timer = null; fn(...args); }, ms);
  };
  d.cancel = () => clearTimeout(timer);
  return d;
}

/** A refresh request for an async fn: requests run fn at most once per `ms` and never two
    at once; requests made meanwhile collapse into one run afterwards. request.now() runs
    at once (or right after the run in progress) and returns a promise of that run. */
function refresher(fn, ms) {
  let last = 0, timer = null, running = null, again = false, dead = false;
  function run() {
    timer = null;
    if (dead) return Promise.resolve();
    last = Date.now();
    running = Promise.resolve().then(fn).catch((e) => console.error(e)).finally(() => {
      running = null;
      if (again) { again = false; request(); }
    });
    return running;
  }
  function request() {
    if (dead || timer) return;
    if (running) { again = true; return; }
    timer = setTimeout(run, Math.max(0, last + ms - Date.now()));
  }
  request.now = () => {
    if (dead) return Promise.resolve();
    if (timer) { clearTimeout(timer); timer = null; }
    if (running) {
      again = false;
      return running.then(() => run());
    }
    return run();
  };
  request.cancel = () => { dead = true; clearTimeout(timer); };
  return request;
}

/** Calls fn once in the next animation frame however often it is scheduled before then. */
function frameOnce(fn) {
  let queued = false;
  const run = () => { queued = false; fn(); };
  return () => {
    if (queued) return;
    queued = true;
    // asked for while live changes are applied: in the same frame, after them
    if (live.flushing) live.after.push(run); else requestAnimationFrame(run);
  };
}

/** Live changes (the stream's messages, and what a page reads again because of them) are
    applied together, in one frame, at most five times a second: a busy store sends more,
    and each frame costs a tab more than the change in it. A change after a quiet spell
    shows in the next frame. */
const LIVE_MS = 200;
const live = {
  queue: [],
  after: [],
  last: -Infinity,
  timer: null,
  flushing: false,

  add(fn) {
    this.queue.push(fn);
    if (this.timer !== null) return;
    const wait = Math.max(0, this.last + LIVE_MS - performance.now());
    this.timer = setTimeout(() => requestAnimationFrame(() => this.flush()), wait);
  },

  flush() {
    this.timer = null;
    this.last = performance.now();
    this.flushing = true;
    try {
      for (const list of [this.queue, this.after]) {
        while (list.length) {
          try { list.shift()(); } catch (e) { console.error(e); }
        }
      }
    } finally {
      this.flushing = false;
    }
  },
};

// ───────────────────────────── formatting ─────────────────────────────

const DASH = "–";
const intFormat = new Intl.NumberFormat("en-US");

function fmtInt(n) {
  return n == null || !Number.isFinite(Number(n)) ? DASH : intFormat.format(Number(n));
}

/** 12 ms, 1.2 s, 42 s, 3 min 4 s, 2 h 5 min, 3 d 4 h. */
function fmtDuration(s) {
  if (s == null || !Number.isFinite(Number(s))) return DASH;
  s = Math.max(0, Number(s));
  if (s === 0) return "0 s";
  if (s < 0.001) return "<1 ms";
  if (s < 0.9995) return Math.round(s * 1000) + " ms";
  if (s < 9.95) return s.toFixed(1) + " s";
  if (s < 59.5) return Math.round(s) + " s";
  s = Math.round(s);
  if (s < 3600) {
    const m = Math.floor(s / 60), r = s % 60;
    return r ? `${m} min ${r} s` : `${m} min`;
  }
  if (s < 86400) {
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
    return m ? `${h} h ${m} min` : `${h} h`;
  }
  const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600);
  return h ? `${d} d ${h} h` : `${d} d`;
}

/** CPU seconds: 0.002 s, 1.25 s, then as a duration. */
function fmtCpu(s) {
  if (s == null || !Number.isFinite(Number(s))) return DASH;
  s = Number(s);
  if (s < 1) return s.toFixed(3) + " s";
  if (s < 60) return s.toFixed(2) + " s";
  return fmtDuration(s);
}

/** Bytes as MB (10^6): 1.2 MB, 345 MB, 12,345 MB. */
function fmtMB(b) {
  if (b == null || !Number.isFinite(Number(b))) return DASH;
  const mb = Number(b) / 1e6;
  if (mb === 0) return "0 MB";
  if (mb < 0.1) return "<0.1 MB";
  return (mb < 10 ? mb.toFixed(1) : intFormat.format(Math.round(mb))) + " MB";
}

/** Bytes for memory sizes: MB below a gigabyte, GB above. */
function fmtBytes(b) {
  if (b == null || !Number.isFinite(Number(b))) return DASH;
  b = Number(b);
  return b >= 1e9 ? (b / 1e9).toFixed(1) + " GB" : fmtMB(b);
}

/** $0.0123 below ten cents, $0.42 and $3.20 above. */
function fmtMoney(v) {
  if (v == null || !Number.isFinite(Number(v))) return DASH;
  v = Number(v);
  if (v === 0) return "$0.00";
  const abs = Math.abs(v);
  const s = abs < 0.1 ? abs.toFixed(4)
    : new Intl.NumberFormat("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 }).format(abs);
  return (v < 0 ? "-$" : "$") + s;
}

/** Token counts: 950, 12.3k, 4.5M (exact count in a title). */
function fmtTokens(n) {
  if (n == null || !Number.isFinite(Number(n))) return DASH;
  n = Number(n);
  if (n < 1000) return String(n);
  if (n < 1e6) return (n / 1e3).toFixed(n < 1e4 ? 1 : 0) + "k";
  if (n < 1e9) return (n / 1e6).toFixed(n < 1e7 ? 1 : 0) + "M";
  return (n / 1e9).toFixed(1) + "G";
}

function fmtPercent(p) {
  if (p == null || !Number.isFinite(Number(p))) return DASH;
  p = Number(p);
  return (p < 10 ? p.toFixed(1) : Math.round(p)) + "%";
}

const pad2 = (n) => String(n).padStart(2, "0");

function clockTime(d) {
  return `${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`;
}

function isoDate(d) {
  return `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())}`;
}

/** Local HH:MM:SS for today, YYYY-MM-DD HH:MM:SS otherwise. */
function fmtTime(t) {
  if (t == null || !Number.isFinite(Number(t))) return DASH;
  const d = new Date(Number(t) * 1000);
  const today = new Date();
  return isoDate(d) === isoDate(today) ? clockTime(d) : `${isoDate(d)} ${clockTime(d)}`;
}

/** A <time> element with the full local date and time as its tooltip. */
function timeEl(t) {
  if (t == null || !Number.isFinite(Number(t))) return DASH;
  const d = new Date(Number(t) * 1000);
  return el("time", { datetime: d.toISOString(), title: `${isoDate(d)} ${clockTime(d)}` }, fmtTime(t));
}

function truncate(s, n) {
  s = String(s ?? "");
  return s.length > n ? s.slice(0, n - 1) + "…" : s;
}

/** A command line as a person would type it. */
function shellJoin(argv) {
  if (!Array.isArray(argv)) return String(argv ?? "");
  return argv.map((a) => {
    a = String(a);
    return /^[\w@%+=:,./-]+$/.test(a) ? a : "'" + a.replace(/'/g, "'\\''") + "'";
  }).join(" ");
}

function basename(p) {
  const parts = String(p || "").split("/").filter(Boolean);
  return parts.length ? parts[parts.length - 1] : String(p || "");
}

// ───────────────────────────── clock ─────────────────────────────

// Seconds the server's clock is ahead of ours, from the `now` of overview documents, so
// that running durations are measured on the server's clock.
let clockSkew = 0;

function now() {
  return Date.now() / 1000 + clockSkew;
}

function noteServerTime(t) {
  if (Number.isFinite(Number(t))) clockSkew = Number(t) - Date.now() / 1000;
}

/** A duration that counts up from `since` (seconds since 1970) every second. */
function ticking(since) {
  return el("span", { class: "tick", "data-since": since }, fmtDuration(now() - since));
}

/** A countdown to `until`. */
function countdown(until) {
  return el("span", { class: "tick", "data-until": until }, fmtDuration(until - now()));
}

function tickAll() {
  if (document.hidden) return;
  const t = now();
  const put = (n, text) => { if (n.textContent !== text) n.textContent = text; };
  for (const n of document.querySelectorAll("[data-since]")) put(n, fmtDuration(t - Number(n.getAttribute("data-since"))));
  for (const n of document.querySelectorAll("[data-until]")) put(n, fmtDuration(Math.max(0, Number(n.getAttribute("data-until")) - t)));
}

// ───────────────────────────── token and API ─────────────────────────────

/** The access token: from ?token= (then dropped from the address bar; the server has set
    its cookie by now), or from this tab's storage, or from a readable qw_token cookie. */
function initToken() {
  const params = new URLSearchParams(location.search);
  let t = params.get("token");
  if (t) {
    try { sessionStorage.setItem("qw_token", t); } catch { /* storage may be off */ }
    params.delete("token");
    const rest = params.toString();
    history.replaceState(history.state, "", location.pathname + (rest ? "?" + rest : "") + location.hash);
    return t;
  }
  try { t = sessionStorage.getItem("qw_token"); } catch { t = null; }
  if (t) return t;
  for (const part of document.cookie.split(";")) {
    const [k, ...v] = part.trim().split("=");
    if (k === "qw_token" && v.length) return dec(v.join("="));
  }
  return null;
}

let token = null;

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** Fetches JSON; throws ApiError with the server's `error` message on failure. */
async function api(path, params, method = "GET") {
  const headers = { Accept: "application/json" };
  if (token) headers["X-QW-Token"] = token;
  let res;
  try {
    res = await fetch(path + qs(params), { method, headers, credentials: "same-origin", cache: "no-store" });
  } catch {
    throw new ApiError(0, "the dashboard server cannot be reached");
  }
  const text = await res.text();
  const body = text ? parseJSON(text) : null;
  if (!res.ok) {
    const msg = body && typeof body.error === "string" ? body.error : `HTTP ${res.status} ${res.statusText || ""}`.trim();
    throw new ApiError(res.status, msg);
  }
  if (text && body === undefined) throw new ApiError(res.status, "the server's answer is not JSON");
  return body;
}

// ───────────────────────────── error banner ─────────────────────────────

const banner = {
  items: new Map(),   // key -> message

  show(key, message) {
    this.items.set(key, message);
    this.render();
  },

  clear(key) {
    if (this.items.delete(key)) this.render();
  },

  clearAll() {
    this.items.clear();
    this.render();
  },

  render() {
    const node = document.getElementById("banner");
    node.hidden = this.items.size === 0;
    fill(node, [...this.items].map(([key, msg]) =>
      el("div", { class: "banner-item" },
        el("span", { class: "banner-icon", "aria-hidden": "true" }, "!"),
        el("span", { class: "banner-text" }, msg),
        el("button", { class: "banner-close", type: "button", "aria-label": "Dismiss", onclick: () => this.clear(key) }, "×"))));
  },
};

// ───────────────────────────── shared components ─────────────────────────────

// Task and workflow states in the order progress bars show them.
const STATES = ["succeeded", "failed", "skipped", "interrupted", "running", "pending"];

/** A status pill. Styled by data-s (not data-status, which marks rows and nodes). */
function badge(status, extraClass) {
  const s = status == null ? "unknown" : String(status);
  return el("span", { class: "badge" + (extraClass ? " " + extraClass : ""), "data-s": s }, s);
}

function orderedStates(counts) {
  const keys = Object.keys(counts || {});
  return STATES.filter((s) => keys.includes(s)).concat(keys.filter((k) => !STATES.includes(k)).sort());
}

function sumCounts(counts) {
  let n = 0;
  for (const v of Object.values(counts || {})) n += Number(v) || 0;
  return n;
}

/** A bar of one segment per state, widths by count. */
function progressBar(counts, total, big) {
  counts = counts || {};
  total = Math.max(Number(total) || 0, sumCounts(counts));
  const bar = el("div", { class: "progress" + (big ? " big" : ""), role: "img", "aria-label": countsText(counts) || "no tasks" });
  if (!total) return bar;
  for (const s of orderedStates(counts)) {
    const n = Number(counts[s]) || 0;
    if (!n) continue;
    bar.appendChild(el("span", { class: "seg", "data-s": s, title: `${fmtInt(n)} ${s}`, style: { width: (100 * n / total) + "%" } }));
  }
  return bar;
}

/** "80 succeeded · 4 running · 36 pending". */
function countsText(counts) {
  return orderedStates(counts).filter((s) => Number(counts[s]) > 0)
    .map((s) => `${fmtInt(counts[s])} ${s}`).join(" · ");
}

/** A fraction bar (used/total) for gauges and budgets. */
function gauge(frac, level) {
  const f = Math.max(0, Math.min(1, Number(frac) || 0));
  return el("div", { class: "gauge", "data-level": level || (f >= 1 ? "over" : f >= 0.8 ? "warn" : "ok") },
    el("span", { style: { width: (f * 100) + "%" } }));
}

function card(title, ...body) {
  return el("section", { class: "card" },
    title == null ? null : el("header", { class: "card-head" }, title),
    body);
}

/** An empty-state paragraph; `code` parts are shown as commands. */
function empty(...parts) {
  return el("div", { class: "empty" }, parts);
}

function code(text) {
  return el("code", null, text);
}

/** A <table> with the given header labels; returns { table, tbody }. A label may be
    [text, className]. */
function makeTable(columns, cls) {
  const tbody = el("tbody");
  const table = el("table", { class: "grid" + (cls ? " " + cls : "") },
    el("thead", null, el("tr", null, columns.map((c) => Array.isArray(c)
      ? el("th", { class: c[1] }, c[0]) : el("th", null, c)))),
    tbody);
  return { table, tbody };
}

/** Keeps tbody's rows in step with items, reusing the row of an unchanged item (by key)
    so that live updates do not rebuild what did not change. memo: Map key -> {row, sig};
    ctx: what else the rows depend on (a change rebuilds them all). */
function syncRows(tbody, items, key, render, memo, ctx) {
  const next = new Map();
  for (const item of items) {
    const k = key(item);
    if (next.has(k)) continue;
    const sig = JSON.stringify(item) + (ctx ? "\u0000" + ctx : "");
    let m = memo.get(k);
    if (!m || m.sig !== sig) {
      const row = render(item);
      if (m && m.row.parentNode === tbody) tbody.replaceChild(row, m.row);
      m = { row, sig };
    }
    next.set(k, m);
  }
  for (const [k, m] of memo) {
    if (!next.has(k) || next.get(k).row !== m.row) m.row.remove();
  }
  let ref = tbody.firstChild;
  for (const m of next.values()) {
    if (m.row === ref) ref = ref.nextSibling;
    else tbody.insertBefore(m.row, ref);
  }
  while (ref) { const n = ref.nextSibling; ref.remove(); ref = n; }
  memo.clear();
  for (const [k, m] of next) memo.set(k, m);
}

/** A cell with a long text: cut to n characters, the whole in the tooltip. */
function longText(text, n, cls) {
  const s = String(text ?? "");
  return el("span", { class: cls || "long", title: s.length > n ? s.slice(0, 4000) : null }, truncate(s, n));
}

function workflowHref(name, params) {
  return "/workflows/" + enc(name) + qs(params);
}

function taskHref(workflow, task) {
  return workflowHref(workflow, { task });
}

function specHref(name) {
  return "/specs/" + enc(name);
}

// ───────────────────────────── live stream ─────────────────────────────

const conn = {
  set(state, text, title) {
    const node = document.getElementById("conn");
    // (only what changed: this runs on every message of a stream of its own)
    if (node.getAttribute("data-state") !== state) node.setAttribute("data-state", state);
    if (node.textContent !== text) node.textContent = text;
    if (title && node.title !== title) node.title = title;
  },
};

/** The live stream, shared by every tab of the dashboard through a SharedWorker
    (/assets/stream-worker.js) that keeps one EventSource for all of them: a browser allows
    only six connections to a host across its tabs, and each EventSource holds one for good.
    Where there is no SharedWorker, or it fails, the page opens its own (`direct`). */
const stream = {
  mode: null,          // "shared" or "direct", once the page wanted something
  interest: null,      // { workflow, task, events }

  /** interest: what the page shows, as streamInterest() tells. */
  want(interest) {
    this.interest = interest;
    if (this.mode === null) this.mode = shared.start() ? "shared" : "direct";
    if (this.mode === "shared") shared.want(interest);
    else direct.want(interest);
  },

  /** The worker failed: the page streams on its own from now on. */
  fallBack() {
    if (this.mode === "direct") return;
    this.mode = "direct";
    if (this.interest) direct.want(this.interest);
  },

  watchdog() {
    if (this.mode === "direct") direct.watchdog();
  },
};

/** What the page wants of the stream: { workflow, task, events }. A page's streamQuery()
    names the workflow it shows (its tasks and rows) and the open task (its log); `events`:
    every row of the event log, for a page that takes them and does not show one workflow
    (whose rows come with it). */
function streamInterest(page) {
  const q = (page && page.streamQuery && page.streamQuery()) || {};
  const workflow = q.workflow ? String(q.workflow) : null;
  const task = workflow && q.task ? String(q.task) : null;
  return { workflow, task, events: !!(page && page.onEvents) && !workflow };
}

/** This page's port to the shared worker. Page → worker: `watch` (the interest, on start and
    when it changes), `alive` (every 5 s: a port silent for 15 s is dropped), `bye` (on
    pagehide). Worker → page: `state` and the stream's `message`s, data already parsed. */
const shared = {
  worker: null,
  port: null,
  sent: null,          // the interest last sent, as JSON
  everOpen: false,
  heard: false,
  lastAlive: 0,
  timers: [],
  failed: false,

  start() {
    if (typeof SharedWorker !== "function") return false;
    try {
      this.worker = new SharedWorker("/assets/stream-worker.js", { name: "qw-dashboard-stream" });
    } catch {
      return false;    // (blocked by a policy, or an opaque origin)
    }
    this.port = this.worker.port;
    this.worker.onerror = () => this.fail();
    this.port.onmessage = (e) => this.onMessage(e.data);
    this.port.start();
    this.timers.push(setInterval(() => this.alive(true), 5000));
    // a worker that never speaks is as good as none
    this.timers.push(setTimeout(() => { if (!this.heard) this.fail(); }, 10000));
    window.addEventListener("pagehide", this.onPageHide);
    window.addEventListener("pageshow", this.onPageShow);
    document.addEventListener("visibilitychange", this.onVisible);
    this.post({ type: "visible", visible: !document.hidden });
    return true;
  },

  want(interest) {
    const text = JSON.stringify(interest);
    if (text === this.sent) return;
    this.sent = text;
    this.post({ type: "watch", ...interest });
  },

  post(m) {
    if (this.failed || !this.port) return;
    try { this.port.postMessage(m); } catch { /* the worker is gone: its error event tells */ }
    this.lastAlive = Date.now();
  },

  /** `alive` every 5 s; also on messages (a background tab's timers may be slowed to one a
      minute, and a port silent for 15 s is dropped) unless one went out lately. */
  alive(timer) {
    if (timer || Date.now() - this.lastAlive >= 5000) this.post({ type: "alive" });
  },

  onPageHide: () => shared.post({ type: "bye" }),

  // back from the back-forward cache: the worker dropped this page at its bye
  onPageShow: (e) => {
    if (e.persisted && shared.sent) shared.post({ type: "watch", ...parseJSON(shared.sent) });
  },

  onVisible: () => {
    shared.post({ type: "visible", visible: !document.hidden });
  },

  onMessage(m) {
    if (this.failed || !m || typeof m !== "object") return;
    this.heard = true;
    this.alive(false);
    if (m.type === "state") this.onState(m);
    else if (m.type === "message" && typeof m.event === "string") handle(m.event, m.data);
    else if (m.type === "missed") catchUp();
  },

  onState(m) {
    const url = typeof m.url === "string" && m.url ? m.url : "/api/stream";
    if (m.state === "open") {
      this.everOpen = true;
      conn.set("open", "live", "Live updates from " + url + " (one stream for all of this dashboard's tabs)");
    } else if (m.state === "closed") {
      conn.set("closed", "disconnected", Number.isFinite(m.retry) ? "Retrying in " + fmtDuration(m.retry / 1000) : "Disconnected");
    } else if (m.state === "connecting") {
      conn.set("connecting", this.everOpen ? "reconnecting…" : "connecting…");
    }
  },

  fail() {
    if (this.failed) return;
    this.post({ type: "bye" });
    this.failed = true;
    for (const t of this.timers) { clearInterval(t); clearTimeout(t); }
    this.timers = [];
    window.removeEventListener("pagehide", this.onPageHide);
    window.removeEventListener("pageshow", this.onPageShow);
    document.removeEventListener("visibilitychange", this.onVisible);
    if (this.worker) this.worker.onerror = null;
    if (this.port) { this.port.onmessage = null; try { this.port.close(); } catch { /* closed */ } }
    console.warn("qw dashboard: the shared stream worker failed; this tab streams on its own");
    stream.fallBack();
  },
};

/** The page's own EventSource to /api/stream, reopened when the page wants another query
    (where there is no SharedWorker). */
const direct = {
  es: null,
  url: null,
  everOpen: false,
  retryTimer: null,
  retryDelay: 1000,
  lastMessage: 0,

  /** interest: { workflow, task, events }. `events=1` asks for every `events` message
      (the event log, cost refreshes); `workflow` for that workflow's task changes and rows
      (a task's activity); with `task` too the stream follows that task's log (`log`
      messages). */
  want(interest) {
    const i = interest || {};
    const url = "/api/stream" + qs({ workflow: i.workflow, task: i.workflow ? i.task : null, events: i.events ? 1 : null });
    if (url === this.url && this.es && this.es.readyState !== EventSource.CLOSED) return;
    this.url = url;
    this.open();
  },

  open() {
    clearTimeout(this.retryTimer);
    if (this.es) this.es.close();
    const es = new EventSource(this.url);
    this.es = es;
    this.lastMessage = Date.now();
    conn.set("connecting", this.everOpen || shared.everOpen ? "reconnecting…" : "connecting…");
    es.onopen = () => {
      if (es !== this.es) return;
      this.everOpen = true;
      this.retryDelay = 1000;
      this.lastMessage = Date.now();
      conn.set("open", "live", "Live updates from " + this.url);
    };
    es.onerror = () => {
      if (es !== this.es) return;
      if (es.readyState === EventSource.CLOSED) {
        // The browser gave up (an HTTP error or a wrong content type): retry ourselves.
        conn.set("closed", "disconnected", "Retrying in " + fmtDuration(this.retryDelay / 1000));
        this.retryTimer = setTimeout(() => this.open(), this.retryDelay);
        this.retryDelay = Math.min(this.retryDelay * 2, 5000);
      } else {
        conn.set("connecting", "reconnecting…");
      }
    };
    for (const type of ["hello", "overview", "events", "tasks", "log", "ping"]) {
      es.addEventListener(type, (e) => {
        if (es !== this.es) return;
        this.lastMessage = Date.now();
        if (es.readyState === EventSource.OPEN) conn.set("open", "live");
        dispatch(type, e.data);
      });
    }
  },

  /** Pings come every 15 s; a connection silent for much longer is dead. */
  watchdog() {
    if (this.es && this.es.readyState === EventSource.OPEN && Date.now() - this.lastMessage > 45000) this.open();
  },
};

let lastOverview = null;

/** A message of the stream, as its EventSource gave it. */
function dispatch(type, raw) {
  const data = parseJSON(raw);
  if (data === undefined) return;
  handle(type, data);
}

/** Whether this tab let messages go by while it was hidden. */
let missedWhileHidden = false;

document.addEventListener("visibilitychange", () => {
  if (!document.hidden && missedWhileHidden) catchUp();
});

/** Shown again after messages went by: the page reads what it shows anew. */
function catchUp() {
  if (document.hidden) {
    missedWhileHidden = true;
    return;
  }
  missedWhileHidden = false;
  const page = current.page;
  if (page && page.reload) page.reload();
}

/** A message of the stream, parsed (the shared worker's come so), to the page. A tab
    nobody looks at (a browser may have twenty on a busy store) renders none: it notes that
    it missed some and reads its page again when it is shown. */
function handle(type, data) {
  const page = current.page;
  if (document.hidden && type !== "ping") {
    if (type === "overview") noteOverview(data);
    missedWhileHidden = true;
    return;
  }
  if (type === "hello") {
    if (data && data.resync && page && page.reload) page.reload();
    if (page && page.onHello) page.onHello(data || {});
    return;
  }
  // in order, with the other live changes (and only to the page they came to)
  live.add(() => {
    if (current.page !== page) return;
    switch (type) {
      case "overview":
        noteOverview(data);
        if (page && page.onOverview) page.onOverview(data);
        break;
      case "events":
        if (Array.isArray(data) && page && page.onEvents) page.onEvents(data);
        break;
      case "tasks":
        if (data && page && page.onTasks) page.onTasks(data);
        break;
      case "log":
        if (data && page && page.onLog) page.onLog(data);
        break;
      default:
        break;
    }
  });
}

/** What the header and other pages keep from the last overview document. */
function noteOverview(doc) {
  if (!doc || typeof doc !== "object") return;
  lastOverview = doc;
  noteServerTime(doc.now);
  const p = document.getElementById("project");
  if (doc.project) {
    // (set only when it changed: setting the same text lays the page out again)
    const text = basename(doc.project), title = doc.project + (doc.store ? "\n" + doc.store : "");
    if (p.textContent !== text) p.textContent = text;
    if (p.title !== title) p.title = title;
  }
}

// ───────────────────────────── router ─────────────────────────────

const current = { page: null, key: null };

function parseRoute() {
  const path = location.pathname.replace(/\/+$/, "") || "/";
  const params = new URLSearchParams(location.search);
  let m;
  if (path === "/" || path === "/index.html") return { page: "overview", key: "overview", params };
  if (path === "/cost") return { page: "cost", key: "cost", params };
  if (path === "/events") return { page: "events", key: "events", params };
  if ((m = /^\/workflows\/([^/]+)$/.exec(path))) return { page: "workflow", name: dec(m[1]), key: "workflow/" + dec(m[1]), params };
  if ((m = /^\/specs\/([^/]+)$/.exec(path))) return { page: "spec", name: dec(m[1]), key: "spec/" + dec(m[1]), params };
  return { page: "notfound", key: "notfound" + path, params, path };
}

function navigate(url, replace) {
  history[replace ? "replaceState" : "pushState"](null, "", url);
  route();
}

/** Shows the page of the current URL: a new page, or the same page told its query changed. */
function route() {
  const r = parseRoute();
  const main = document.getElementById("app");
  if (current.page && current.key === r.key && current.page.update) {
    current.page.update(r);
  } else {
    if (current.page && current.page.destroy) current.page.destroy();
    banner.clearAll();
    main.replaceChildren();
    main.setAttribute("data-page", r.page);
    main.setAttribute("data-ready", "0");
    const page = PAGES[r.page](r, main);
    current.page = page;
    current.key = r.key;
    document.title = (page.title || "qw") + " · qw dashboard";
    window.scrollTo(0, 0);
    page.mount();
  }
  for (const a of document.querySelectorAll("[data-nav]")) {
    const on = a.getAttribute("data-nav") === (r.page === "workflow" || r.page === "spec" ? "overview" : r.page);
    if (on) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  }
  stream.want(streamInterest(current.page));
}

/** Same-origin page links navigate in place; modified clicks and other targets do not. */
function onLinkClick(e) {
  if (e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
  const a = e.target instanceof Element ? e.target.closest("a[href]") : null;
  if (!a || (a.target && a.target !== "_self") || a.hasAttribute("download")) return;
  const url = new URL(a.href, location.href);
  if (url.origin !== location.origin || /^\/(api|assets)\//.test(url.pathname)) return;
  e.preventDefault();
  if (url.pathname + url.search !== location.pathname + location.search) navigate(url.pathname + url.search + url.hash);
}

/** Marks the page's first data as shown (for people and for tests). */
function ready(main) {
  main.setAttribute("data-ready", "1");
}

/** Whether a click on a row was meant for something inside it (a link, a button, a
    selection of text). */
function clickIsForInner(e) {
  if (e.target instanceof Element && e.target.closest("a, button, input, select, summary, textarea")) return true;
  const sel = window.getSelection && window.getSelection();
  return !!(sel && sel.type === "Range" && String(sel).length > 0);
}

// ───────────────────────────── overview page ─────────────────────────────

function overviewPage(route, main) {
  let alive = true;
  const ui = {};
  const memo = { workflows: new Map(), agents: new Map(), suggestions: new Map() };

  async function load() {
    try {
      const doc = await api("/api/overview");
      if (!alive) return;
      noteOverview(doc);
      render(doc);
      banner.clear("overview");
    } catch (e) {
      if (alive) banner.show("overview", "Could not load the overview: " + e.message);
    }
  }
  const reload = refresher(load, 300);
  const renderSoon = frameOnce(() => { if (alive && lastOverview) render(lastOverview); });

  function mount() {
    const wf = makeTable([["Workflow", "c-name"], "Status", ["Progress", "c-progress"], "Tasks", "Started", ["Duration", "num"], ["Cost", "num"]], "workflows");
    wf.tbody.addEventListener("click", (e) => {
      const tr = e.target instanceof Element ? e.target.closest("tr[data-workflow]") : null;
      if (tr && !clickIsForInner(e)) navigate(workflowHref(tr.getAttribute("data-workflow")));
    });
    ui.wfBody = wf.tbody;
    ui.wfEmpty = el("div");
    ui.stats = el("div", { class: "stats" });
    ui.specs = el("div");
    ui.machine = el("div");
    ui.gate = el("div");
    ui.agents = el("div");
    ui.suggestions = el("div");
    ui.wfCount = el("span", { class: "card-note" });
    main.append(
      ui.stats,
      el("div", { class: "columns" },
        el("div", { class: "col-main" },
          card([el("h2", null, "Workflows"), ui.wfCount], el("div", { class: "scroll-x" }, wf.table), ui.wfEmpty),
          card(el("h2", null, "Specs"), ui.specs),
          card(el("h2", null, "Agents running"), ui.agents)),
        el("div", { class: "col-side" },
          card(el("h2", null, "Machine"), ui.machine),
          card(el("h2", null, "Agent gate"), ui.gate),
          card(el("h2", null, "Suggestion queue"), ui.suggestions))));
    reload.now().then(() => { if (alive) ready(main); });
  }

  function render(doc) {
    renderStats(doc);
    renderWorkflows(doc.workflows || []);
    renderSpecs(doc.specs || []);
    renderMachine(doc.machine);
    renderGate(doc.gate);
    renderAgents(doc.agents || []);
    renderSuggestions(doc.suggestions || []);
  }

  function stat(label, value, sub, title) {
    return el("div", { class: "stat", title },
      el("div", { class: "stat-label" }, label),
      el("div", { class: "stat-value" }, value),
      sub ? el("div", { class: "stat-sub" }, sub) : null);
  }

  function renderStats(doc) {
    const wfs = doc.workflows || [];
    const running = wfs.filter((w) => w.status === "running").length;
    const failed = wfs.filter((w) => w.status === "failed").length;
    const m = doc.machine || {}, g = doc.gate || {}, c = doc.cost || {};
    const used = m.memory_total != null && m.memory_available != null ? m.memory_total - m.memory_available : null;
    fill(ui.stats,
      stat("Workflows", fmtInt(wfs.length), [running ? `${running} running` : "none running", failed ? ` · ${failed} failed` : ""].join("")),
      stat("Agents", `${fmtInt(g.running ?? 0)} / ${fmtInt(g.max_agents)}`, gateState(g)),
      stat("Cost today", fmtMoney(c.today_usd), null),
      stat("Cost total", fmtMoney(c.total_usd), `${fmtInt(c.runs)} agent runs`),
      stat("CPU", fmtPercent(m.cpu_percent), m.load1 != null ? `load ${Number(m.load1).toFixed(2)} · ${fmtInt(m.cores)} cores` : null),
      stat("Memory", used != null ? fmtBytes(used) : DASH, m.memory_total != null ? `of ${fmtBytes(m.memory_total)}` : null));
  }

  function renderWorkflows(wfs) {
    syncRows(ui.wfBody, wfs, (w) => w.name, workflowRow, memo.workflows);
    ui.wfCount.textContent = wfs.length ? fmtInt(wfs.length) : "";
    fill(ui.wfEmpty, wfs.length ? null : empty("No workflows yet: run ", code("qw run examples/workflow.lua"),
      " (or any script that uses qw.workflow) in this project, and it shows here as it runs."));
  }

  function workflowRow(w) {
    const counts = w.counts || {};
    const done = (Number(counts.succeeded) || 0) + (Number(counts.failed) || 0) + (Number(counts.skipped) || 0);
    const live = w.status === "running" && w.started_at != null && w.finished_at == null;
    return el("tr", { "data-workflow": w.name, "data-status": w.status, class: "clickable" },
      el("td", { class: "c-name" }, el("a", { href: workflowHref(w.name), title: w.name }, w.name),
        w.runs > 1 ? el("span", { class: "muted small" }, ` · run ${fmtInt(w.runs)}`) : null),
      el("td", null, badge(w.status)),
      el("td", { class: "c-progress" }, progressBar(counts, w.tasks)),
      el("td", { class: "small", title: countsText(counts) }, `${fmtInt(done)} / ${fmtInt(w.tasks)}`,
        counts.failed ? el("span", { class: "t-failed" }, ` · ${fmtInt(counts.failed)} failed`) : null,
        counts.running ? el("span", { class: "t-running" }, ` · ${fmtInt(counts.running)} running`) : null),
      el("td", null, timeEl(w.started_at)),
      el("td", { class: "num" }, live ? ticking(w.started_at)
        : w.started_at != null && w.finished_at != null ? fmtDuration(w.finished_at - w.started_at) : DASH),
      el("td", { class: "num" }, fmtMoney(w.cost_usd)));
  }

  function renderSpecs(specs) {
    if (!specs.length) {
      fill(ui.specs, empty("No specs yet: ", code("qw spec new NAME"), " starts one."));
      return;
    }
    const t = makeTable(["Spec", "Kind", "Phase", "Since"]);
    for (const s of specs) {
      const ph = s.phase || {};
      t.tbody.appendChild(el("tr", { "data-spec": s.name },
        el("td", { class: "c-name" }, el("a", { href: specHref(s.name) }, s.name)),
        el("td", { class: "muted" }, s.kind ?? DASH),
        el("td", null, ph.phase ? [el("span", { class: "phase-name" }, ph.phase), " ", badge(ph.state)] : el("span", { class: "muted" }, "not started")),
        el("td", null, timeEl(ph.at))));
    }
    fill(ui.specs, el("div", { class: "scroll-x" }, t.table));
  }

  function renderMachine(m) {
    if (!m) { fill(ui.machine, empty("No machine report.")); return; }
    const used = m.memory_total != null && m.memory_available != null ? m.memory_total - m.memory_available : null;
    const procs = m.processes || [];
    const rows = [
      meter("CPU", fmtPercent(m.cpu_percent), (Number(m.cpu_percent) || 0) / 100,
        m.cores != null ? `${fmtInt(m.cores)} cores${m.load1 != null ? ", load " + Number(m.load1).toFixed(2) : ""}` : null),
      meter("Memory", used != null ? `${fmtBytes(used)} / ${fmtBytes(m.memory_total)}` : DASH,
        used != null && m.memory_total ? used / m.memory_total : 0,
        m.memory_available != null ? `${fmtBytes(m.memory_available)} available` : null),
      el("div", { class: "kv" },
        el("span", null, "Processes"), el("b", null, `${fmtInt(m.running ?? 0)} running`),
        el("span", { class: "muted" }, ` · ${fmtInt(m.queued ?? 0)} queued`)),
    ];
    let table = null;
    if (procs.length) {
      const t = makeTable([["qw pid", "num"], "Slots", "Running", "Queued"], "compact");
      for (const p of procs) {
        // each is a command the process runs or queues: { name, pid, ... }, or a bare name
        const label = (c) => (c && typeof c === "object") ? String(c.name ?? c.pid ?? "?") : String(c);
        const running = (p.running || []).map(label), queued = (p.queued || []).map(label);
        t.tbody.appendChild(el("tr", null,
          el("td", { class: "num mono" }, p.pid),
          el("td", null, slots(running.length, p.slots_total ?? p.slots)),
          el("td", { class: "small" }, running.length ? longText(running.join(", "), 60) : el("span", { class: "muted" }, "idle")),
          el("td", { class: "small" }, queued.length ? longText(`${queued.length}: ${queued.join(", ")}`, 40) : DASH)));
      }
      table = el("div", { class: "scroll-x" }, t.table);
    } else {
      table = el("p", { class: "muted small" }, "No qw process is running work right now.");
    }
    fill(ui.machine, rows, table);
  }

  function meter(label, value, frac, sub) {
    return el("div", { class: "meter" },
      el("div", { class: "meter-top" }, el("span", null, label), el("b", null, value)),
      gauge(frac),
      sub ? el("div", { class: "meter-sub muted small" }, sub) : null);
  }

  /** Slot pips: filled for each busy slot. */
  function slots(busy, total) {
    const n = Math.max(Number(total) || 0, busy);
    if (n > 16) return `${busy} / ${n}`;
    const wrap = el("span", { class: "pips", title: `${busy} of ${n} slots busy` });
    for (let i = 0; i < n; i++) wrap.appendChild(el("span", { class: i < busy ? "pip on" : "pip" }));
    return wrap;
  }

  function gateState(g) {
    if (!g) return null;
    if (g.closed_until != null && g.closed_until > now()) return `cooling down until ${clockTime(new Date(g.closed_until * 1000))}`;
    if (g.probing) return "probing";
    return "open";
  }

  function renderGate(g) {
    if (!g) { fill(ui.gate, empty("No gate report.")); return; }
    const closed = g.closed_until != null && g.closed_until > now();
    const max = Number(g.max_agents) || 0;
    fill(ui.gate,
      meter("Agents", `${fmtInt(g.running ?? 0)} / ${fmtInt(g.max_agents)}`, max ? (g.running || 0) / max : 0, null),
      el("div", { class: "gate-state" },
        closed
          ? [badge("cooling down", "warn"), " until ", el("b", null, clockTime(new Date(g.closed_until * 1000))), el("span", { class: "muted" }, " (", countdown(g.closed_until), " left)")]
          : badge("open", "ok"),
        g.probing ? [" ", badge("probing", "info"), el("span", { class: "muted small" }, " one agent tries whether the limit has lifted")] : null),
      g.rate != null ? el("div", { class: "kv small" }, el("span", null, "Rate limit"), " ", describe(g.rate)) : null);
  }

  function renderAgents(agents) {
    if (!agents.length) {
      fill(ui.agents, empty("No agent is running."));
      memo.agents.clear();
      return;
    }
    if (!ui.agentsTable) {
      ui.agentsTable = makeTable(["Agent", "Workflow", "Task", "Run", "Session", "Started", ["Running for", "num"]]);
    }
    syncRows(ui.agentsTable.tbody, agents, (a) => a.run, agentRow, memo.agents);
    if (!ui.agents.contains(ui.agentsTable.table)) fill(ui.agents, el("div", { class: "scroll-x" }, ui.agentsTable.table));
  }

  function agentRow(a) {
    return el("tr", { "data-run": a.run },
      el("td", null, el("b", null, a.agent ?? DASH)),
      el("td", null, a.workflow ? el("a", { href: workflowHref(a.workflow) }, a.workflow) : DASH),
      el("td", { class: "mono small" }, a.workflow && a.task ? el("a", { href: taskHref(a.workflow, a.task), title: a.task }, truncate(a.task, 40)) : (a.task ?? DASH)),
      el("td", { class: "mono small" }, a.run ?? DASH),
      el("td", { class: "mono small" }, a.session ? longText(a.session, 14) : DASH),
      el("td", null, timeEl(a.started_at)),
      el("td", { class: "num" }, a.started_at != null ? ticking(a.started_at) : DASH));
  }

  function renderSuggestions(list) {
    if (!list.length) {
      fill(ui.suggestions, empty("The suggestion queue is empty."));
      memo.suggestions.clear();
      return;
    }
    if (!ui.sugTable) ui.sugTable = makeTable([["#", "num"], "State", "Command", ["Tries", "num"]], "compact");
    syncRows(ui.sugTable.tbody, list, (s) => s.id, suggestionRow, memo.suggestions);
    if (!ui.suggestions.contains(ui.sugTable.table)) fill(ui.suggestions, el("div", { class: "scroll-x" }, ui.sugTable.table));
  }

  function suggestionRow(s) {
    return el("tr", { "data-suggestion": s.id },
      el("td", { class: "num mono" }, s.id),
      el("td", null, badge(s.state)),
      el("td", { class: "mono small" }, longText("qw " + shellJoin(s.argv || []), 60),
        s.error ? el("div", { class: "t-failed small" }, longText(s.error, 80)) : null),
      el("td", { class: "num" }, fmtInt(s.attempts)));
  }

  return {
    title: "Overview",
    mount,
    reload,
    onOverview(doc) { if (alive) renderSoon(doc); },
    destroy() { alive = false; reload.cancel(); },
  };
}

/** Any JSON value as short text: objects as "key value · key value". */
function describe(v) {
  if (v == null) return DASH;
  if (typeof v !== "object") return String(v);
  if (Array.isArray(v)) return v.map(describe).join(", ");
  return Object.entries(v).map(([k, x]) => `${k} ${typeof x === "object" && x !== null ? JSON.stringify(x) : x}`).join(" · ");
}

// ───────────────────────────── task log ─────────────────────────────

const LOG_KEEP = 1 << 20;        // bytes of log text kept in the DOM; older text is dropped
const LOG_NODE = 64 * 1024;      // a text node of the log grows to this, then another starts
const STREAM_KEEP = 2000;        // agent stream items kept
const LINE_MAX = 8 << 20;        // an unfinished line longer than this is not parsed
const LOG_RETRY = 3000;          // ms before asking again after a failed fetch
const STREAM_TYPES = new Set(["system", "assistant", "user", "result"]);
const NO_LOG = "No log for this task (Lua function tasks have none; command and agent tasks of a workflow write .qw/logs/workflows/…)";

const utf8 = new TextEncoder();

/** Bytes of a piece of log text: the server's count when it sends one, else the UTF-8
    length of the text (the server cuts pieces at character boundaries). */
function pieceBytes(msg, text) {
  const b = msg && msg.bytes;
  return Number.isInteger(b) && b >= 0 ? b : text ? utf8.encode(text).length : 0;
}

/** 950 bytes, 12.3 KB, 4.5 MB. */
function fmtSize(b) {
  b = Number(b) || 0;
  if (b < 1000) return `${b} byte${b === 1 ? "" : "s"}`;
  if (b < 1e6) return (b / 1e3).toFixed(b < 1e4 ? 1 : 0) + " KB";
  return (b / 1e6).toFixed(b < 1e7 ? 1 : 0) + " MB";
}

/** Whole lines of appended text; an unfinished last line waits for its newline. A line
    that grows past LINE_MAX is dropped up to its newline. */
function lineSplitter() {
  let tail = "", skipping = false;
  return {
    push(text) {
      if (!text) return [];
      if (text.indexOf("\n") < 0) {
        if (!skipping) tail += text;
        if (tail.length > LINE_MAX) { tail = ""; skipping = true; }
        return [];
      }
      const lines = (skipping ? text : tail + text).split("\n");
      tail = lines.pop();
      if (skipping) { lines.shift(); skipping = false; }
      if (tail.length > LINE_MAX) { tail = ""; skipping = true; }
      return lines;
    },
    reset() { tail = ""; skipping = false; },
  };
}

function contentBlocks(o) {
  const c = o.message && o.message.content;
  return Array.isArray(c) ? c.filter((b) => b && typeof b === "object") : [];
}

/** The agent stream items of one line of Claude Code stream-json (`--output-format
    stream-json`), or null when the line is not such a message. */
function streamItemsOf(line) {
  const s = line.trim();
  if (s.charCodeAt(0) !== 123 /* { */) return null;
  const o = parseJSON(s);
  if (!o || typeof o !== "object" || Array.isArray(o) || !STREAM_TYPES.has(o.type)) return null;
  const items = [];
  if (o.type === "system" || o.type === "result") {
    items.push({ kind: o.type, msg: o });
  } else if (o.type === "assistant") {
    for (const b of contentBlocks(o)) {
      if (b.type === "text" && b.text != null && String(b.text) !== "") items.push({ kind: "text", text: String(b.text) });
      else if (b.type === "tool_use") items.push({ kind: "tool_use", id: b.id, name: b.name, input: b.input });
    }
  } else {
    for (const b of contentBlocks(o)) {
      if (b.type === "tool_result") items.push({ kind: "tool_result", id: b.tool_use_id, content: b.content, error: b.is_error === true });
    }
  }
  return items;
}

function oneLine(s) {
  return String(s ?? "").replace(/\s+/g, " ").trim();
}

/** A tool call's input in a line: the command, the file or the pattern, else its JSON. */
function toolSummary(name, input) {
  const i = input && typeof input === "object" ? input : {};
  let v;
  if (name === "Bash") v = i.command;
  else if (name === "Read" || name === "Write" || name === "Edit" || name === "MultiEdit") v = i.file_path;
  else if (name === "NotebookEdit") v = i.notebook_path;
  else if (name === "Glob" || name === "Grep") v = i.pattern;
  if (typeof v !== "string") v = input === undefined ? "" : JSON.stringify(input);
  return truncate(oneLine(v), 200);
}

/** A tool result's content as text: a string, or text blocks. */
function toolResultText(c) {
  if (c == null) return "";
  if (typeof c === "string") return c;
  if (Array.isArray(c)) {
    return c.map((b) => !b || typeof b !== "object" ? String(b ?? "")
      : b.type === "text" ? String(b.text ?? "") : b.type === "image" ? "[image]" : "").filter(Boolean).join("\n");
  }
  return JSON.stringify(c);
}

/**
 * The live log of one task: a <details> section for the task panel (`root`), fed by
 * GET …/tasks/ID/log and the stream's `log` messages.
 *
 * DOM hooks: `pre#task-log[data-size][data-start]` holds the raw text (data-size: the byte
 * offset after the last byte received, data-start: the offset of the first byte held);
 * `ol#agent-stream > li[data-kind]` the agent stream when the log is Claude Code
 * stream-json; `.log-body[data-state="loading|none|ready|error"][data-view="raw|stream"]`.
 */
function taskLog(workflow, task) {
  const url = "/api/workflows/" + enc(workflow) + "/tasks/" + enc(task) + "/log";
  let alive = true;
  const s = {
    loaded: false,          // an answer came
    exists: false,
    path: null,
    start: 0,               // byte offset of the first byte held
    next: 0,                // byte offset after the last byte held: where the next piece starts
    held: 0,                // bytes held
    chunks: [],             // { node: Text, bytes }, the raw text
    want: null,             // a fetch to make: "tail" (the end of the log, afresh) or "from" (from `next`)
    fetching: false,
    queue: [],              // log messages that came during a fetch
    error: null,
    retryAt: 0, retryTimer: null,
    lines: lineSplitter(),
    sawStream: false,       // a stream-json line was seen (this run of the task or one before)
    itemsCut: 0,
    toolNames: new Map(),   // tool_use id -> tool name, to name the results
    view: null,             // "stream" or "raw" once the reader picked one
    follow: true,
    status: undefined,      // the task's status, last told
  };
  const ui = {};

  ui.pre = el("pre", { id: "task-log", class: "log", "data-size": "0", "data-start": "0", tabindex: "0", "aria-label": "Log" });
  ui.stream = el("ol", { id: "agent-stream", class: "agent-stream", tabindex: "0", "aria-label": "Agent stream", hidden: true });
  ui.empty = el("div", { class: "empty log-empty" }, "Loading the log…");
  ui.cut = el("p", { class: "log-cut muted small", hidden: true });
  ui.error = el("p", { class: "log-error t-failed small", hidden: true });
  ui.path = el("span", { class: "log-path muted small mono", hidden: true });
  ui.size = el("span", { class: "log-size muted" });
  ui.follow = el("input", { type: "checkbox", class: "log-follow", checked: true, onchange: () => {
    s.follow = ui.follow.checked;
    if (s.follow) toBottom();
  } });
  ui.btnStream = el("button", { type: "button", class: "btn small", "data-view": "stream", "aria-pressed": "false", onclick: () => setView("stream") }, "stream");
  ui.btnRaw = el("button", { type: "button", class: "btn small", "data-view": "raw", "aria-pressed": "true", onclick: () => setView("raw") }, "raw");
  ui.views = el("span", { class: "seg-toggle", role: "group", "aria-label": "Log view", hidden: true }, ui.btnStream, ui.btnRaw);
  ui.bar = el("div", { class: "log-bar" }, ui.path, el("span", { class: "spacer" }), ui.views,
    el("label", { class: "check-label small", title: "Keep the newest output in view" }, ui.follow, " follow"));
  ui.body = el("div", { class: "log-body", "data-state": "loading", "data-view": "raw" }, ui.bar, ui.empty, ui.cut, ui.stream, ui.pre, ui.error);
  ui.root = el("details", { class: "panel-section log-section", "data-key": "log", open: true },
    el("summary", null, "Log", ui.size), ui.body);
  ui.root.addEventListener("toggle", () => { if (ui.root.open && s.follow) toBottom(); });
  for (const n of [ui.pre, ui.stream]) {
    n.addEventListener("scroll", () => {
      if (n !== scroller() || !n.clientHeight) return;
      const bottom = atBottom(n);
      if (bottom !== s.follow) { s.follow = bottom; ui.follow.checked = bottom; }
    });
  }

  // ── view and scrolling ──

  function currentView() {
    return s.sawStream ? s.view || "stream" : "raw";
  }

  function scroller() {
    return currentView() === "stream" ? ui.stream : ui.pre;
  }

  function atBottom(n) {
    return n.scrollHeight - n.scrollTop - n.clientHeight < 24;
  }

  function toBottom() {
    const n = scroller();
    n.scrollTop = n.scrollHeight;
  }

  const followSoon = frameOnce(() => { if (alive && s.follow) toBottom(); });

  function setView(v) {
    if (v === currentView()) return;
    s.view = v;
    render();
    if (s.follow) toBottom();
  }

  /** Removes nodes from the top of a scrolled box, keeping what the reader looks at in place. */
  function dropFromTop(box, drop) {
    const keep = !s.follow && box === scroller() && box.clientHeight > 0;
    const h = keep ? box.scrollHeight : 0;
    drop();
    if (keep) box.scrollTop = Math.max(0, box.scrollTop - (h - box.scrollHeight));
    else if (s.follow) toBottom();
  }

  // ── the text ──

  /** Forgets all text: a new log (the first answer, or a new run of the task). */
  function clear(offset) {
    for (const c of s.chunks) c.node.remove();
    s.chunks = [];
    s.held = 0;
    s.start = s.next = offset;
    s.lines.reset();
    s.toolNames.clear();
    s.itemsCut = 0;
    ui.stream.replaceChildren();
  }

  /** Appends a piece that starts at `next`. */
  function take(text, bytes) {
    if (!text && !bytes) return;
    const last = s.chunks[s.chunks.length - 1];
    if (last && last.bytes < LOG_NODE) {
      last.node.appendData(text);
      last.bytes += bytes;
    } else {
      const node = document.createTextNode(text);
      ui.pre.appendChild(node);
      s.chunks.push({ node, bytes });
    }
    s.held += bytes;
    s.next += bytes;
    for (const line of s.lines.push(text)) addLine(line);
    if (s.held > LOG_KEEP && s.chunks.length > 1) {
      dropFromTop(ui.pre, () => {
        while (s.held > LOG_KEEP && s.chunks.length > 1) {
          const c = s.chunks.shift();
          c.node.remove();
          s.held -= c.bytes;
          s.start += c.bytes;
        }
      });
    }
    followSoon();
  }

  function addLine(line) {
    const items = streamItemsOf(line);
    if (!items) return;
    s.sawStream = true;
    for (const it of items) ui.stream.appendChild(streamItem(it));
    if (ui.stream.childNodes.length > STREAM_KEEP) {
      dropFromTop(ui.stream, () => {
        while (ui.stream.childNodes.length > STREAM_KEEP) { ui.stream.firstChild.remove(); s.itemsCut++; }
      });
    }
  }

  function streamItem(it) {
    switch (it.kind) {
      case "system": {
        const m = it.msg;
        const init = m.subtype === "init";
        const tools = Array.isArray(m.tools) ? m.tools.length : null;
        return el("li", { "data-kind": "system" },
          el("span", { class: "as-label" }, init ? "session started" : "system" + (m.subtype ? " " + String(m.subtype) : "")),
          m.model != null ? el("span", { class: "as-model" }, String(m.model)) : null,
          m.cwd != null ? [" ", el("span", { class: "as-cwd", title: String(m.cwd) }, String(m.cwd))] : null,
          tools != null ? el("span", { class: "as-note" }, ` · ${fmtInt(tools)} tools`) : null);
      }
      case "text":
        return el("li", { "data-kind": "text" }, truncate(it.text, 20000));
      case "tool_use": {
        const name = it.name == null ? "tool" : String(it.name);
        if (it.id != null) {
          s.toolNames.set(String(it.id), name);
          if (s.toolNames.size > 5000) s.toolNames.delete(s.toolNames.keys().next().value);
        }
        const summary = toolSummary(name, it.input);
        const full = it.input === undefined ? "" : JSON.stringify(it.input);
        return el("li", { "data-kind": "tool_use", "data-tool": name },
          el("span", { class: "as-tool" }, name),
          summary ? el("span", { class: "as-input", title: full.length > 200 ? full.slice(0, 4000) : null }, summary) : null);
      }
      case "tool_result": {
        const text = toolResultText(it.content);
        const name = it.id != null ? s.toolNames.get(String(it.id)) : null;
        return el("li", { "data-kind": "tool_result", "data-error": it.error ? "true" : null, "data-tool": name || null },
          el("span", { class: "as-label" }, it.error ? "✗ error" : "result", name ? el("span", { class: "as-note" }, " of " + name) : null),
          text ? el("div", { class: "as-out" }, truncate(text, 300)) : el("span", { class: "as-note" }, " (empty)"));
      }
      case "result": {
        const m = it.msg;
        const ok = m.is_error !== true && (m.subtype == null || m.subtype === "success");
        const u = m.usage && typeof m.usage === "object" ? m.usage : null;
        const facts = [
          m.total_cost_usd != null ? fmtMoney(m.total_cost_usd) : null,
          m.num_turns != null ? `${fmtInt(m.num_turns)} turn${Number(m.num_turns) === 1 ? "" : "s"}` : null,
          m.duration_ms != null && Number.isFinite(Number(m.duration_ms)) ? fmtDuration(Number(m.duration_ms) / 1000) : null,
          u && (u.input_tokens != null || u.output_tokens != null) ? `${fmtTokens(u.input_tokens)} in / ${fmtTokens(u.output_tokens)} out` : null,
        ].filter(Boolean);
        const outcome = ok ? "✓ " + (m.subtype ? String(m.subtype) : "success") : "✗ " + (m.subtype && m.subtype !== "success" ? String(m.subtype) : "error");
        return el("li", { "data-kind": "result", "data-ok": ok ? "true" : "false" },
          el("span", { class: "as-label" }, outcome),
          facts.length ? el("span", { class: "as-note" }, facts.join(" · ")) : null,
          m.result != null && String(m.result) !== "" ? el("div", { class: "as-out" }, truncate(String(m.result), 500)) : null);
      }
      default:
        return el("li", { "data-kind": String(it.kind) });
    }
  }

  // ── what is shown ──

  function render() {
    ui.pre.setAttribute("data-size", String(s.next));
    ui.pre.setAttribute("data-start", String(s.start));
    const view = currentView();
    const state = s.error && !s.loaded ? "error" : !s.loaded ? "loading" : s.exists ? "ready" : "none";
    ui.body.setAttribute("data-state", state);
    ui.body.setAttribute("data-view", view);
    ui.size.textContent = s.exists ? " · " + fmtSize(s.next) : "";
    ui.empty.hidden = state === "ready";
    if (state === "loading") ui.empty.textContent = "Loading the log…";
    else if (state === "none") ui.empty.textContent = NO_LOG;
    else if (state === "error") ui.empty.textContent = "The log cannot be shown.";
    ui.bar.hidden = state !== "ready";
    ui.path.hidden = !(s.exists && s.path);
    if (s.path && ui.path.textContent !== s.path) { ui.path.textContent = s.path; ui.path.title = s.path; }
    ui.views.hidden = !s.sawStream;
    ui.btnStream.setAttribute("aria-pressed", String(view === "stream"));
    ui.btnRaw.setAttribute("aria-pressed", String(view === "raw"));
    ui.pre.hidden = state !== "ready" || view !== "raw";
    ui.stream.hidden = state !== "ready" || view !== "stream";
    const cut = view === "raw" ? s.start > 0 : s.start > 0 || s.itemsCut > 0;
    ui.cut.hidden = state !== "ready" || !cut;
    if (cut) {
      ui.cut.textContent = view === "raw"
        ? `… earlier output cut: the first ${fmtSize(s.start)} are not shown`
        : "… earlier output cut" + (s.itemsCut ? ` (${fmtInt(s.itemsCut)} items)` : "");
    }
    ui.error.hidden = !s.error;
    ui.error.textContent = s.error ? "Could not load the log: " + s.error.message : "";
  }

  // ── fetching ──

  /** Asks for a fetch; "tail" wins over "from". */
  function request(mode) {
    if (!alive) return;
    if (mode === "tail" || !s.want) s.want = mode;
    pump();
  }

  async function pump() {
    if (s.fetching || !alive || !s.want) return;
    const wait = s.retryAt - Date.now();
    if (wait > 0) {
      if (!s.retryTimer) s.retryTimer = setTimeout(() => { s.retryTimer = null; pump(); }, wait);
      return;
    }
    s.fetching = true;
    try {
      while (alive && s.want) {
        const fresh = s.want === "tail" || !s.loaded;
        s.want = null;
        let r;
        try {
          r = await api(url, fresh ? null : { offset: s.next });
        } catch (e) {
          // Not polled: the next message, reconnection or change of the task asks
          // again, at most every LOG_RETRY ms.
          if (!alive) return;
          s.error = e;
          s.retryAt = Date.now() + LOG_RETRY;
          s.want = null;
          s.queue = [];
          return;
        }
        if (!alive) return;
        s.error = null;
        s.retryAt = 0;
        absorb(r || {}, fresh);
        render();
        // the messages that came meanwhile, until one of them asks for another fetch
        while (alive && !s.want && s.queue.length) apply(s.queue.shift());
      }
    } finally {
      s.fetching = false;
      if (alive) render();
    }
  }

  /** Takes a GET answer. */
  function absorb(r, fresh) {
    if (typeof r.path === "string") s.path = r.path;
    const offset = Number.isFinite(Number(r.offset)) ? Math.max(0, Number(r.offset)) : 0;
    const text = typeof r.text === "string" ? r.text : "";
    if (r.exists === false) {
      s.loaded = true;
      s.exists = false;
      clear(0);
      return;
    }
    if (!fresh && offset < s.next) { s.want = "tail"; return; }   // the log is shorter than what is held
    if (fresh || !s.loaded) clear(offset);
    else if (offset > s.next) s.next = offset;                     // moved past a character cut in two
    s.loaded = true;
    s.exists = true;
    const bytes = pieceBytes(r, text);
    take(text, bytes);
    // (an empty piece with more: only a character not yet written whole is left; the
    // stream tells when it is)
    if (r.more === true && bytes > 0 && !s.want) s.want = "from";
  }

  /** Takes a `log` message of the stream. */
  function apply(m) {
    if (m.reset === true || !s.loaded) { request("tail"); return; }
    // (a log that shrank without a reset seen shows in the fetch: it starts before `next`)
    const offset = Number(m.offset);
    if (!Number.isFinite(offset)) return;
    const text = typeof m.text === "string" ? m.text : "";
    const bytes = pieceBytes(m, text);
    if (offset === s.next) {
      if (!bytes) return;
      s.exists = true;
      take(text, bytes);
      render();
    } else if (offset < s.next && offset + bytes <= s.next) {
      // held already (it came in a fetch)
    } else {
      request("from");
    }
  }

  return {
    root: ui.root,

    start() { render(); request("tail"); },

    onMessage(m) {
      if (!alive || !m || m.workflow !== workflow || m.task !== task) return;
      if (s.fetching) {
        if (s.queue.length < 1000) s.queue.push(m);
        else { s.queue = []; request(m.reset ? "tail" : "from"); }
        return;
      }
      apply(m);
    },

    /** Fetches what may have been missed (the stream reconnected, or the task changed). */
    catchUp() {
      if (alive) request(s.loaded ? "from" : "tail");
    },

    /** The task's row, whenever the panel shows it anew. A change of status may mean its
        log started or ended; one to running, that a new run started it again (which the
        server tells by the file shrinking, and a run quicker than its 250 ms could hide). */
    onTask(t) {
      const status = t ? t.status : undefined;
      if (s.status !== undefined && status !== s.status) {
        if (status === "running") request("tail");
        else this.catchUp();
      }
      s.status = status;
    },

    /** The scroll position, before the panel is rebuilt … */
    keepScroll() {
      return scroller().scrollTop;
    },

    /** … and after. */
    restoreScroll(top) {
      if (s.follow) toBottom();
      else if (top) scroller().scrollTop = top;
    },

    destroy() {
      alive = false;
      clearTimeout(s.retryTimer);
      s.queue = [];
    },
  };
}

// ───────────────────────────── workflow page ─────────────────────────────

const PAGE_SIZE = 100;
const WAVE_BUTTONS = 100;       // of a workflow's window of waves, at most this many drawn
const GRAPH = { w: 150, h: 24, colGap: 56, rowGap: 8, padX: 14, padTop: 30, padBottom: 14, chars: 20 };

function readTaskFilters(params) {
  const offset = parseInt(params.get("offset") || "0", 10);
  const wave = params.get("wave");
  return {
    status: params.get("status") || "",
    wave: wave != null && /^\d+$/.test(wave) ? wave : "",
    q: params.get("q") || "",
    offset: Number.isFinite(offset) && offset > 0 ? offset : 0,
  };
}

function sameFilters(a, b) {
  return a.status === b.status && a.wave === b.wave && a.q === b.q && a.offset === b.offset;
}

function workflowPage(route, main) {
  const name = route.name;
  let alive = true;
  const st = {
    wf: null,                      // the workflow document
    missing: null,                 // the error when the workflow cannot be loaded at all
    filters: readTaskFilters(route.params),
    page: null,                    // the current page of tasks
    taskId: route.params.get("task") || null,
    detail: null,                  // the open task's document
    statusById: new Map(),         // every task status known, to move wave counts
    rowMemo: new Map(),            // task id -> {row, sig}
    nodes: new Map(),              // task id -> graph <g>
    edgesByNode: new Map(),        // task id -> [edge paths]
    graphSig: null,
    activityIds: new Set(),
    log: null,                     // the open task's log (taskLog)
    tasksSeq: 0, wfSeq: 0, detailSeq: 0,
    wavesFrom: null,               // the first wave of the window shown; null: where the work is
  };
  const ui = {};

  const reloadWf = refresher(loadWorkflow, 1000);
  // Wave counts of a big workflow when changed tasks were not seen before: the header's
  // counts come with every message, so these may lag a little.
  const reloadWfSlow = refresher(loadWorkflow, 2500);
  const reloadTasks = refresher(loadTasks, 300);
  // a burst (more tasks changed than a message lists) is caught up with at a slower pace:
  // twenty tabs refetching every 300 ms would cost a busy store more than the run itself
  const reloadTasksBusy = refresher(loadTasks, 1000);
  const reloadWfBusy = refresher(loadWorkflow, 3000);
  const reloadDetail = refresher(loadDetail, 500);
  const renderVizSoon = frameOnce(() => alive && renderViz());
  const renderHeadSoon = frameOnce(() => alive && renderHead());

  // URLs of this page, keeping the table's filters.
  function pageHref(filters, task) {
    const f = filters || st.filters;
    return workflowHref(name, { status: f.status, wave: f.wave, q: f.q, offset: f.offset || null, task: task || null });
  }

  // ── loading ──

  async function loadWorkflow() {
    const seq = ++st.wfSeq;
    try {
      const wf = await api("/api/workflows/" + enc(name), { waves: st.wavesFrom });
      if (!alive || seq !== st.wfSeq) return;
      const refresh = !!st.wf;
      st.wf = wf;
      st.missing = null;
      for (const n of (wf.graph && wf.graph.nodes) || []) st.statusById.set(n.id, n.status);
      banner.clear("wf");
      const show = () => { if (alive && st.wf === wf) { renderHead(); renderViz(); renderFilterOptions(); } };
      if (refresh) live.add(show); else show();
    } catch (e) {
      if (!alive) return;
      if (!st.wf) { st.missing = e; renderHead(); fill(ui.viz); }
      if (!(e.status === 404 && !st.wf)) banner.show("wf", `Could not load workflow ${name}: ${e.message}`);
    }
  }

  async function loadTasks() {
    const seq = ++st.tasksSeq;
    const f = st.filters;
    // the table dims while it loads another page, not while the live one is read again
    // (dimming it repaints all of it, twice a refresh)
    const key = JSON.stringify([f.offset, f.status, f.wave, f.q]);
    if (key !== st.pageKey) ui.tasksCard.classList.add("loading");
    try {
      const page = await api("/api/workflows/" + enc(name) + "/tasks",
        { offset: f.offset, limit: PAGE_SIZE, status: f.status, wave: f.wave, q: f.q });
      if (!alive || seq !== st.tasksSeq) return;
      const total = Number(page.total) || 0;
      // A page past the end (the filter shrank the list): go to the last page.
      if (f.offset > 0 && f.offset >= total) {
        st.filters = { ...f, offset: total ? Math.floor((total - 1) / PAGE_SIZE) * PAGE_SIZE : 0 };
        history.replaceState(null, "", pageHref(st.filters, st.taskId));
        return loadTasks();
      }
      const refresh = key === st.pageKey;
      st.page = page;
      st.pageKey = key;
      for (const t of page.tasks || []) st.statusById.set(t.id, t.status);
      banner.clear("tasks");
      const show = () => { if (alive && st.page === page) renderTasks(); };
      if (refresh) live.add(show); else show();
    } catch (e) {
      if (!alive || seq !== st.tasksSeq) return;
      if (e.status === 404 && (st.missing || !st.wf)) { st.page = { total: 0, offset: 0, tasks: [] }; renderTasks(); return; }
      banner.show("tasks", `Could not load the tasks of ${name}: ${e.message}`);
    } finally {
      if (alive && seq === st.tasksSeq) ui.tasksCard.classList.remove("loading");
    }
  }

  async function loadDetail() {
    const id = st.taskId;
    if (!id) return;
    const seq = ++st.detailSeq;
    try {
      const d = await api("/api/workflows/" + enc(name) + "/tasks/" + enc(id));
      if (!alive || seq !== st.detailSeq || id !== st.taskId) return;
      st.detail = d;
      banner.clear("task");
      renderDetail();
    } catch (e) {
      if (!alive || seq !== st.detailSeq || id !== st.taskId) return;
      if (!st.detail) {
        fill(ui.panel, panelHead(id, null), empty(e.status === 404 ? `There is no task ${id} in ${name}.` : `Could not load task ${id}: ${e.message}`));
      } else {
        banner.show("task", `Could not refresh task ${id}: ${e.message}`);
      }
    } finally {
      if (alive && ui.panel && id === st.taskId) ui.panel.setAttribute("data-ready", "1");
    }
  }

  function reload() {
    reloadWf();
    reloadTasks();
    if (st.taskId) reloadDetail();
    if (st.log) st.log.catchUp();
  }

  // ── layout ──

  function mount() {
    ui.head = el("section", { class: "wf-head" });
    ui.viz = el("section", { class: "card viz" });

    ui.status = el("select", { "aria-label": "Status", onchange: () => setFilters({ status: ui.status.value }) });
    ui.wave = el("select", { "aria-label": "Wave", onchange: () => setFilters({ wave: ui.wave.value }) });
    const search = debounce(() => setFilters({ q: ui.q.value.trim() }), 250);
    ui.q = el("input", { type: "search", placeholder: "Filter by id…  ( / )", "aria-label": "Filter by id", value: st.filters.q,
      spellcheck: "false", autocomplete: "off", oninput: search,
      onkeydown: (e) => { if (e.key === "Enter") { search.cancel(); setFilters({ q: ui.q.value.trim() }); } } });
    ui.clear = el("button", { type: "button", class: "btn link", onclick: () => setFilters({ status: "", wave: "", q: "" }) }, "Clear filters");
    ui.range = el("span", { class: "range" });
    ui.prev = el("a", { class: "btn" }, "‹ Prev");
    ui.next = el("a", { class: "btn" }, "Next ›");

    const t = makeTable(["ID", "Status", ["Wave", "num"], ["Tries", "num"], "Started", ["Duration", "num"], ["Exit", "num"], ["Peak mem", "num"], ["CPU", "num"], "Error"], "tasks");
    ui.tbody = t.tbody;
    ui.tbody.addEventListener("click", (e) => {
      const tr = e.target instanceof Element ? e.target.closest("tr[data-task]") : null;
      if (tr && !clickIsForInner(e)) selectTask(tr.getAttribute("data-task"));
    });
    ui.tableEmpty = el("div");
    ui.tasksCard = el("section", { class: "card tasks-card" },
      el("header", { class: "card-head toolbar" },
        el("h2", null, "Tasks"), ui.status, ui.wave, ui.q, ui.clear,
        el("span", { class: "spacer" }), ui.range, ui.prev, ui.next),
      el("div", { class: "scroll-x" }, t.table),
      ui.tableEmpty);
    ui.body = el("div", { class: "wf-body" }, ui.tasksCard);
    main.append(ui.head, ui.viz, ui.body);
    syncFilterControls();
    renderFilterOptions();

    document.addEventListener("keydown", onKey);
    const first = [reloadWf.now(), reloadTasks.now()];
    if (st.taskId) { openPanel(st.taskId); first.push(reloadDetail.now()); }
    Promise.all(first).then(() => { if (alive) ready(main); });
  }

  function onKey(e) {
    const typing = e.target instanceof Element && e.target.closest("input, select, textarea");
    if (e.key === "Escape" && st.taskId && !typing) navigate(pageHref(st.filters, null));
    else if (e.key === "/" && !typing && !e.metaKey && !e.ctrlKey) { e.preventDefault(); ui.q.focus(); }
  }

  // ── header ──

  function renderHead() {
    if (st.missing && !st.wf) {
      st.headSig = null;
      fill(ui.head, el("h1", null, name),
        empty(st.missing.status === 404
          ? ["There is no workflow named ", el("b", null, name), " in this store. ", el("a", { href: "/" }, "Back to the overview")]
          : ["Could not load the workflow: ", st.missing.message]));
      return;
    }
    const w = st.wf;
    if (!w) { st.headSig = null; fill(ui.head, el("h1", null, name), el("p", { class: "muted" }, "Loading…")); return; }
    // nothing it shows changed (the stream repeats counts): no new header
    const sig = JSON.stringify([w.status, w.counts, w.tasks, w.runs, w.cost_usd, w.started_at, w.finished_at,
      Math.floor(w.updated_at || 0), st.filters.status]);
    if (sig === st.headSig && ui.head.firstChild) return;
    st.headSig = sig;
    const counts = w.counts || {};
    const total = Math.max(Number(w.tasks) || 0, sumCounts(counts));
    const live = w.status === "running" && w.started_at != null && w.finished_at == null;
    const legend = el("div", { class: "legend" });
    for (const s of orderedStates(counts)) {
      if (!Number(counts[s])) continue;
      legend.appendChild(el("button", { type: "button", class: "legend-item" + (st.filters.status === s ? " on" : ""), "data-s": s,
        title: `Show only ${s} tasks`, onclick: () => setFilters({ status: st.filters.status === s ? "" : s }) },
        el("span", { class: "dot", "data-s": s }), `${fmtInt(counts[s])} ${s}`));
    }
    const done = (Number(counts.succeeded) || 0) + (Number(counts.failed) || 0) + (Number(counts.skipped) || 0);
    fill(ui.head,
      el("div", { class: "title-row" },
        el("h1", { title: name }, name), badge(w.status, "big"),
        el("span", { class: "spacer" }),
        el("span", { class: "head-cost", title: "Agent spend of this workflow" }, fmtMoney(w.cost_usd))),
      el("div", { class: "facts-row" },
        fact("Tasks", fmtInt(total)),
        fact("Done", total ? `${fmtInt(done)} (${fmtPercent(100 * done / total)})` : DASH),
        fact("Runs", fmtInt(w.runs)),
        fact("Started", timeEl(w.started_at)),
        w.finished_at != null ? fact("Finished", timeEl(w.finished_at)) : null,
        fact("Duration", live ? ticking(w.started_at) : w.started_at != null && w.finished_at != null ? fmtDuration(w.finished_at - w.started_at) : DASH),
        fact("Updated", timeEl(w.updated_at))),
      progressBar(counts, total, true),
      legend);
  }

  function fact(label, value) {
    return el("span", { class: "fact" }, el("span", { class: "fact-label" }, label), el("span", { class: "fact-value" }, value));
  }

  // ── graph or waves ──

  function renderViz() {
    const w = st.wf;
    if (!w) return;
    if (w.graph && Array.isArray(w.graph.nodes) && w.graph.nodes.length) renderGraph(w.graph);
    else renderWaves(w.waves || [], w);
  }

  function graphSignature(g) {
    return g.nodes.length + ":" + (g.edges || []).length + ":" + g.nodes.map((n) => n.id + "@" + n.wave).join("\u0000");
  }

  function renderGraph(g) {
    const sig = graphSignature(g);
    if (sig === st.graphSig && ui.graphSvg && ui.viz.contains(ui.graphSvg)) {
      for (const n of g.nodes) setNodeStatus(n.id, n.status);
      return;
    }
    st.graphSig = sig;
    const lay = layoutGraph(g);
    st.nodes.clear();
    st.edgesByNode.clear();
    const edgeLayer = svg("g", { class: "edges" });
    const nodeLayer = svg("g", { class: "nodes" });
    const root = svg("svg", { class: "dag", width: lay.width, height: lay.height, viewBox: `0 0 ${lay.width} ${lay.height}`, role: "group", "aria-label": `Task graph of ${name}` },
      svg("defs", null, svg("marker", { id: "dag-arrow", viewBox: "0 0 8 8", refX: "7", refY: "4", markerWidth: "7", markerHeight: "7", orient: "auto-start-reverse" },
        svg("path", { d: "M0,0 L8,4 L0,8 z" }))));
    lay.waves.forEach((wave, col) => {
      root.appendChild(svg("text", { class: "wave-label", x: GRAPH.padX + col * (GRAPH.w + GRAPH.colGap), y: 16 }, `wave ${wave}`));
    });
    for (const e of g.edges || []) {
      let a = lay.pos.get(e[0]), b = lay.pos.get(e[1]);
      if (!a || !b) continue;
      if (a.col > b.col) [a, b] = [b, a];
      const x1 = a.x + GRAPH.w, y1 = a.y + GRAPH.h / 2, x2 = b.x, y2 = b.y + GRAPH.h / 2;
      const dx = Math.max(18, (x2 - x1) / 2);
      const path = svg("path", { class: "edge", d: `M${x1},${y1} C${x1 + dx},${y1} ${x2 - dx},${y2} ${x2 - 1},${y2}`, "marker-end": "url(#dag-arrow)" });
      edgeLayer.appendChild(path);
      for (const id of [e[0], e[1]]) {
        if (!st.edgesByNode.has(id)) st.edgesByNode.set(id, []);
        st.edgesByNode.get(id).push(path);
      }
    }
    for (const [id, p] of lay.pos) {
      const node = svg("g", { class: "node", "data-node": id, "data-status": p.n.status, transform: `translate(${p.x},${p.y})`, tabindex: "0", role: "button", "aria-label": `${id}, ${p.n.status}` },
        svg("title", null, `${id}\n${p.n.status}, wave ${p.n.wave}`),
        svg("rect", { class: "box", width: GRAPH.w, height: GRAPH.h, rx: 5, ry: 5 }),
        svg("rect", { class: "strip", width: 4, height: GRAPH.h - 8, x: 4, y: 4, rx: 2 }),
        svg("text", { x: 14, y: GRAPH.h / 2 + 4 }, truncate(id, GRAPH.chars)));
      st.nodes.set(id, node);
      st.statusById.set(id, p.n.status);
      nodeLayer.appendChild(node);
    }
    root.append(edgeLayer, nodeLayer);
    root.addEventListener("click", (e) => {
      const n = e.target instanceof Element ? e.target.closest("[data-node]") : null;
      if (n) selectTask(n.getAttribute("data-node"));
    });
    root.addEventListener("keydown", (e) => {
      const n = e.target instanceof Element ? e.target.closest("[data-node]") : null;
      if (n && (e.key === "Enter" || e.key === " ")) { e.preventDefault(); selectTask(n.getAttribute("data-node")); }
    });
    root.addEventListener("mouseover", (e) => hoverNode(e, true));
    root.addEventListener("mouseout", (e) => hoverNode(e, false));
    const oldScroll = ui.viz.querySelector(".graph-scroll");
    const [sl, stp] = oldScroll ? [oldScroll.scrollLeft, oldScroll.scrollTop] : [0, 0];
    ui.graphSvg = root;
    fill(ui.viz,
      el("header", { class: "card-head" }, el("h2", null, "Graph"),
        el("span", { class: "card-note" }, `${fmtInt(g.nodes.length)} tasks in ${fmtInt(lay.waves.length)} waves · click a task to open it`),
        el("span", { class: "spacer" }), graphLegend()),
      el("div", { class: "graph-scroll" }, root));
    const box = ui.viz.querySelector(".graph-scroll");
    box.scrollLeft = sl;
    box.scrollTop = stp;
    markSelected();
  }

  function graphLegend() {
    return el("span", { class: "legend small" }, STATES.map((s) => el("span", { class: "legend-key" }, el("span", { class: "dot", "data-s": s }), s)));
  }

  function hoverNode(e, on) {
    const n = e.target instanceof Element ? e.target.closest("[data-node]") : null;
    if (!n) return;
    for (const p of st.edgesByNode.get(n.getAttribute("data-node")) || []) p.classList.toggle("hover", on);
  }

  function setNodeStatus(id, status) {
    const node = st.nodes.get(id);
    if (!node || node.getAttribute("data-status") === status) return;
    node.setAttribute("data-status", status);
    node.setAttribute("aria-label", `${id}, ${status}`);
    const title = node.firstChild;
    if (title) title.textContent = `${id}\n${status}`;
  }

  /** The waves as a row of buttons: the window of them the document has (at most 500; a
      100,000-task workflow may have thousands), from where the work is unless the reader
      moved it. A repeat render with the same waves replaces only the buttons whose counts
      changed: a busy run moves a few at a time. */
  function renderWaves(all, doc) {
    const waves = all.slice(0, WAVE_BUTTONS);
    const total = Number(doc.wave_count) || all.length;
    const from = waves.length ? Number(waves[0].wave) : 0;
    const keys = waves.map((w) => String(w.wave)).join(",") + "|" + total + "|" + st.wavesFrom;
    const list = ui.viz.querySelector(".waves");
    if (list && st.waveKeys === keys && st.waveEls && st.waveEls.every((x) => x.btn.parentNode === list)) {
      waves.forEach((w, i) => {
        const sig = waveSig(w);
        const cur = st.waveEls[i];
        if (cur.sig === sig) return;
        const btn = waveButton(w);
        cur.btn.replaceWith(btn);
        st.waveEls[i] = { btn, sig };
      });
      return;
    }
    const moved = st.waveKeys && list && st.waveKeys.split("|")[0].split(",")[0] !== String(from);
    const scrollLeft = list && !moved ? list.scrollLeft : 0;
    const fresh = el("div", { class: "waves", role: "list" });
    st.waveEls = waves.map((w) => ({ btn: fresh.appendChild(waveButton(w)), sig: waveSig(w) }));
    st.waveKeys = keys;
    const windowed = waves.length < total;
    const go = (f) => { st.wavesFrom = f; reloadWf.now(); };
    const last = from + waves.length - 1;
    fill(ui.viz,
      el("header", { class: "card-head" }, el("h2", null, "Waves"),
        el("span", { class: "card-note" }, total
          ? `${fmtInt(total)} waves${windowed ? ` · ${fmtInt(from)}–${fmtInt(last)} shown` : ""} · a task's wave is the length of the longest chain of dependencies below it · click a wave to filter the table`
          : "no tasks yet"),
        windowed ? el("span", { class: "spacer" }) : null,
        windowed ? el("span", { class: "seg-toggle" },
          el("button", { type: "button", class: "btn small", disabled: from === 0 ? true : null, onclick: () => go(Math.max(0, from - waves.length)) }, "‹ Earlier"),
          el("button", { type: "button", class: "btn small", "aria-pressed": st.wavesFrom === null ? "true" : "false", title: "Show the waves where the work is, as it moves",
            onclick: () => go(null) }, "Follow the work"),
          el("button", { type: "button", class: "btn small", disabled: last >= total - 1 ? true : null, onclick: () => go(last + 1) }, "Later ›")) : null),
      waves.length ? fresh : null);
    if (scrollLeft) fresh.scrollLeft = scrollLeft;    // (setting it lays the page out)
    st.graphSig = null;
  }

  function waveActive(w) {
    return st.filters.wave !== "" && Number(st.filters.wave) === Number(w.wave);
  }

  function waveSig(w) {
    return (waveActive(w) ? "on " : "") + w.tasks + " " + JSON.stringify(w.counts || {});
  }

  function waveButton(w) {
    const counts = w.counts || {};
    const active = waveActive(w);
    const finished = (Number(counts.succeeded) || 0) + (Number(counts.failed) || 0) + (Number(counts.skipped) || 0);
    return el("button", { type: "button", role: "listitem", class: "wave" + (active ? " on" : ""), "data-wave": w.wave,
      title: `Wave ${w.wave}: ${countsText(counts) || "no tasks"}\nClick to ${active ? "show all waves" : "show only this wave"}`,
      onclick: () => setFilters({ wave: active ? "" : String(w.wave) }) },
      el("div", { class: "wave-top" }, el("b", null, `wave ${w.wave}`), el("span", { class: "muted" }, fmtInt(w.tasks))),
      progressBar(counts, w.tasks),
      el("div", { class: "wave-counts small" },
        `${fmtInt(finished)} done`,
        counts.running ? el("span", { class: "t-running" }, ` · ${fmtInt(counts.running)} run`) : null,
        counts.failed ? el("span", { class: "t-failed" }, ` · ${fmtInt(counts.failed)} failed`) : null));
  }

  /** Moves one task between the per-state counts of its wave. */
  function moveWaveCount(wave, from, to) {
    const w = st.wf && (st.wf.waves || []).find((x) => Number(x.wave) === Number(wave));
    if (!w) return false;
    w.counts = w.counts || {};
    if (from != null) {
      w.counts[from] = (Number(w.counts[from]) || 0) - 1;
      if (w.counts[from] <= 0) delete w.counts[from];
    }
    w.counts[to] = (Number(w.counts[to]) || 0) + 1;
    return true;
  }

  // ── filters ──

  function setFilters(change) {
    const f = { ...st.filters, ...change, offset: "offset" in change ? change.offset : 0 };
    if (sameFilters(f, st.filters)) return;
    st.filters = f;
    history.replaceState(null, "", pageHref(f, st.taskId));
    syncFilterControls();
    renderHeadSoon();
    if (!(st.wf && st.wf.graph)) renderVizSoon();
    if (st.detail) renderDetail(true);
    reloadTasks.now();
  }

  function syncFilterControls() {
    const f = st.filters;
    if (ui.status.value !== f.status) { ensureOption(ui.status, f.status); ui.status.value = f.status; }
    if (ui.wave.value !== f.wave) { ensureOption(ui.wave, f.wave, `wave ${f.wave}`); ui.wave.value = f.wave; }
    if (document.activeElement !== ui.q && ui.q.value !== f.q) ui.q.value = f.q;
    ui.clear.hidden = !(f.status || f.wave !== "" || f.q);
  }

  function ensureOption(select, value, label) {
    if (value === "" || [...select.options].some((o) => o.value === value)) return;
    select.appendChild(el("option", { value }, label || value));
  }

  /** The status and wave choices, from the workflow's counts and waves. */
  function renderFilterOptions() {
    const counts = (st.wf && st.wf.counts) || {};
    const states = STATES.concat(Object.keys(counts).filter((k) => !STATES.includes(k)).sort());
    setOptions(ui.status, [["", "All statuses"]].concat(states.map((s) => [s, counts[s] ? `${s} (${fmtInt(counts[s])})` : s])));
    const waves = (st.wf && st.wf.waves) || [];
    setOptions(ui.wave, [["", "All waves"]].concat(waves.map((w) => [String(w.wave), `wave ${w.wave} (${fmtInt(w.tasks)})`])));
    ensureOption(ui.status, st.filters.status);
    ensureOption(ui.wave, st.filters.wave, `wave ${st.filters.wave}`);
    ui.status.value = st.filters.status;
    ui.wave.value = st.filters.wave;
  }

  /** Sets a select's options, [value, label] pairs; when the values are those it has, only
      the labels change, so that an open dropdown stays open. */
  function setOptions(select, pairs) {
    const opts = [...select.options];
    const same = opts.length >= pairs.length && pairs.every(([v], i) => opts[i].value === v);
    if (same) {
      pairs.forEach(([, label], i) => { if (opts[i].textContent !== label) opts[i].textContent = label; });
      return;
    }
    fill(select, pairs.map(([v, label]) => el("option", { value: v }, label)));
  }

  const refreshStatusOptions = frameOnce(() => {
    if (!alive) return;
    const counts = (st.wf && st.wf.counts) || {};
    for (const o of ui.status.options) {
      if (o.value) o.textContent = counts[o.value] ? `${o.value} (${fmtInt(counts[o.value])})` : o.value;
    }
  });

  // ── task table ──

  /** Rows link with the filters in their URLs: they depend on them. */
  function filtersKey() {
    const f = st.filters;
    return `${f.status}|${f.wave}|${f.q}|${f.offset}`;
  }

  function renderTasks() {
    const p = st.page;
    if (!p) return;
    const tasks = p.tasks || [];
    syncRows(ui.tbody, tasks, (t) => t.id, taskRow, st.rowMemo, filtersKey());
    const total = Number(p.total) || 0;
    const from = total ? st.filters.offset + 1 : 0;
    const to = Math.min(st.filters.offset + tasks.length, total);
    ui.range.textContent = `showing ${fmtInt(from)}–${fmtInt(to)} of ${fmtInt(total)}`;
    const prevOffset = Math.max(0, st.filters.offset - PAGE_SIZE);
    const nextOffset = st.filters.offset + PAGE_SIZE;
    linkButton(ui.prev, st.filters.offset > 0 ? pageHref({ ...st.filters, offset: prevOffset }, st.taskId) : null);
    linkButton(ui.next, nextOffset < total ? pageHref({ ...st.filters, offset: nextOffset }, st.taskId) : null);
    const filtered = st.filters.status || st.filters.wave !== "" || st.filters.q;
    fill(ui.tableEmpty, tasks.length ? null
      : st.missing ? null
      : filtered ? empty("No task matches these filters. ", el("button", { type: "button", class: "btn link", onclick: () => setFilters({ status: "", wave: "", q: "" }) }, "Clear filters"))
      : empty("This workflow has no tasks yet."));
  }

  function linkButton(a, href) {
    if (href) { a.setAttribute("href", href); a.removeAttribute("aria-disabled"); }
    else { a.removeAttribute("href"); a.setAttribute("aria-disabled", "true"); }
  }

  function taskRow(t) {
    const running = t.status === "running" && t.duration == null && t.started_at != null;
    return el("tr", { "data-task": t.id, "data-status": t.status, class: "clickable" + (t.id === st.taskId ? " sel" : "") },
      el("td", { class: "c-id mono" }, el("a", { href: pageHref(st.filters, t.id), title: t.id }, t.id)),
      el("td", null, badge(t.status)),
      el("td", { class: "num" }, t.wave ?? DASH),
      el("td", { class: "num" }, t.attempts ?? DASH),
      el("td", null, timeEl(t.started_at)),
      el("td", { class: "num" }, running ? ticking(t.started_at) : fmtDuration(t.duration)),
      el("td", { class: "num mono" + (t.code ? " t-failed" : "") }, t.code ?? DASH),
      el("td", { class: "num" }, fmtMB(t.max_rss)),
      el("td", { class: "num" }, fmtCpu(t.cpu_time)),
      el("td", { class: "c-err" }, t.error ? longText(t.error, 90, "t-failed") : null));
  }

  /** Puts a changed task into its row, if the row is shown. Returns whether it was. */
  function updateRow(t) {
    const m = st.rowMemo.get(t.id);
    if (!m) return false;
    const sig = JSON.stringify(t) + "\u0000" + filtersKey();
    if (sig === m.sig) return true;
    const row = taskRow(t);
    if (m.row.parentNode) m.row.parentNode.replaceChild(row, m.row);
    m.row = row;
    m.sig = sig;
    if (st.page) st.page.tasks = st.page.tasks.map((x) => (x.id === t.id ? t : x));
    return true;
  }

  // ── the open task ──

  function selectTask(id) {
    if (id && id !== st.taskId) navigate(pageHref(st.filters, id));
  }

  function markSelected() {
    for (const [id, m] of st.rowMemo) m.row.classList.toggle("sel", id === st.taskId);
    for (const [id, n] of st.nodes) n.classList.toggle("sel", id === st.taskId);
    for (const p of (ui.graphSvg && ui.graphSvg.querySelectorAll(".edge.on")) || []) p.classList.remove("on");
    for (const p of st.edgesByNode.get(st.taskId) || []) p.classList.add("on");
  }

  function openPanel(id) {
    st.taskId = id;
    st.detail = null;
    st.detailSig = null;
    st.activityIds.clear();
    if (st.log) st.log.destroy();
    st.log = taskLog(name, id);
    st.log.start();
    if (!ui.panel) {
      ui.panel = el("section", { id: "task", class: "card task-panel", "aria-label": "Task" });
      ui.body.appendChild(ui.panel);
    }
    ui.panel.setAttribute("data-task", id);
    ui.panel.setAttribute("data-ready", "0");
    ui.panel.removeAttribute("data-status");
    fill(ui.panel, panelHead(id, null), el("p", { class: "muted pad" }, "Loading…"));
    ui.body.classList.add("with-task");
    markSelected();
  }

  function closePanel() {
    st.taskId = null;
    st.detail = null;
    if (st.log) { st.log.destroy(); st.log = null; }
    if (ui.panel) { ui.panel.remove(); ui.panel = null; }
    ui.body.classList.remove("with-task");
    markSelected();
  }

  function panelHead(id, status) {
    return el("header", { class: "panel-head" },
      el("h2", { class: "mono", title: id }, id),
      status ? badge(status, "big") : null,
      el("span", { class: "spacer" }),
      el("a", { class: "close", href: pageHref(st.filters, null), title: "Close (Esc)", "aria-label": "Close" }, "×"));
  }

  function renderDetail(force) {
    const d = st.detail;
    if (!d || !ui.panel) return;
    const sig = JSON.stringify(d);
    if (!force && sig === st.detailSig && ui.panel.querySelector(".facts")) return;
    st.detailSig = sig;
    const t = d.task || {};
    // Keep the reader's place: scroll positions and which sections are folded.
    const scroll = ui.panel.scrollTop;
    // (the log keeps its own place: it is moved, not rebuilt)
    const outputs = () => [...ui.panel.querySelectorAll("pre")].filter((x) => x.id !== "task-log");
    const preScroll = outputs().map((x) => x.scrollTop);
    const logScroll = st.log ? st.log.keepScroll() : 0;
    const folded = new Map([...ui.panel.querySelectorAll("details[data-key]")].map((x) => [x.getAttribute("data-key"), x.open]));
    ui.panel.setAttribute("data-status", t.status ?? "");
    const running = t.status === "running" && t.duration == null && t.started_at != null;
    fill(ui.panel,
      panelHead(t.id ?? st.taskId, t.status),
      el("dl", { class: "facts" },
        dt("Wave", t.wave ?? DASH), dt("Attempts", t.attempts ?? DASH),
        dt("Started", timeEl(t.started_at)), dt("Finished", timeEl(t.finished_at)),
        dt("Duration", running ? ticking(t.started_at) : fmtDuration(t.duration)), dt("Exit code", t.code ?? DASH),
        dt("Peak memory", fmtMB(t.max_rss)), dt("CPU time", fmtCpu(t.cpu_time))),
      t.error ? el("pre", { class: "error-box" }, t.error) : null,
      section("deps", `Dependencies (${fmtInt((d.deps || []).length)})`, chips(d.deps || [], "No dependencies: wave 0.")),
      section("dependents", `Dependents (${fmtInt((d.dependents || []).length)})`, chips(d.dependents || [], "Nothing depends on this task.")),
      section("attempts", `Attempts (${fmtInt((d.attempts || []).length)})`, attemptsTable(d.attempts || [])),
      st.log ? st.log.root : null,
      section("result", "Result", resultBlocks(d.result)),
      (d.agent_runs || []).length ? section("agents", `Agent runs (${fmtInt(d.agent_runs.length)})`, agentRunsTable(d.agent_runs)) : null,
      section("activity", `Activity (${fmtInt((d.activity || []).length)})`, activityTable(d.activity || [])));
    for (const x of ui.panel.querySelectorAll("details[data-key]")) {
      const k = x.getAttribute("data-key");
      if (folded.has(k)) x.open = folded.get(k);
    }
    outputs().forEach((x, i) => { if (preScroll[i]) x.scrollTop = preScroll[i]; });
    if (st.log) { st.log.restoreScroll(logScroll); st.log.onTask(t); }
    ui.panel.scrollTop = scroll;
  }

  function dt(label, value) {
    return el("div", null, el("dt", null, label), el("dd", null, value));
  }

  function section(key, title, body) {
    return el("details", { class: "panel-section", "data-key": key, open: true },
      el("summary", null, title), body);
  }

  function chips(ids, none) {
    if (!ids.length) return el("p", { class: "muted small" }, none);
    const MAX = 200;
    return el("div", { class: "chips" },
      ids.slice(0, MAX).map((id) => el("a", { class: "chip mono", href: pageHref(st.filters, id), title: id, "data-s": st.statusById.get(id) || null }, truncate(id, 48))),
      ids.length > MAX ? el("span", { class: "muted small" }, ` and ${fmtInt(ids.length - MAX)} more`) : null);
  }

  function attemptsTable(list) {
    if (!list.length) return el("p", { class: "muted small" }, "Not run yet.");
    const t = makeTable([["#", "num"], "OK", "Finished", ["Duration", "num"], ["Exit", "num"], ["Peak mem", "num"], ["CPU", "num"], "Error"], "compact");
    for (const a of list) {
      t.tbody.appendChild(el("tr", { "data-attempt": a.attempt },
        el("td", { class: "num" }, a.attempt),
        el("td", null, a.ok ? el("span", { class: "t-succeeded" }, "✓ yes") : el("span", { class: "t-failed" }, "✗ no")),
        el("td", null, timeEl(a.finished_at)),
        el("td", { class: "num" }, fmtDuration(a.duration)),
        el("td", { class: "num mono" }, a.code ?? DASH),
        el("td", { class: "num" }, fmtMB(a.max_rss)),
        el("td", { class: "num" }, fmtCpu(a.cpu_time)),
        el("td", { class: "c-err" }, a.error ? longText(a.error, 80, "t-failed") : null)));
    }
    return el("div", { class: "scroll-x" }, t.table);
  }

  function resultBlocks(r) {
    r = r || {};
    const parts = [["stdout", r.stdout], ["stderr", r.stderr], ["text", r.text]].filter(([, v]) => v != null && String(v) !== "");
    if (!parts.length) return el("p", { class: "muted small" }, "No output recorded.");
    return parts.map(([label, v]) => el("div", { class: "output" },
      el("div", { class: "output-label" }, el("b", null, label),
        el("span", { class: "muted small" }, ` ${fmtInt(String(v).length)} characters${String(v).length >= 65536 ? ", the last 64 KiB" : ""}`)),
      el("pre", { class: "out" + (label === "stderr" ? " err" : "") }, String(v))));
  }

  function agentRunsTable(list) {
    const t = makeTable(["Agent", "Model", "OK", ["Cost", "num"], ["In", "num"], ["Out", "num"], ["Cache r/w", "num"], ["Turns", "num"], ["Duration", "num"], "Started"], "compact");
    for (const a of list) {
      t.tbody.appendChild(el("tr", null,
        el("td", null, el("b", null, a.agent ?? DASH)),
        el("td", { class: "small mono" }, a.model ?? DASH),
        el("td", { title: a.error || null }, a.ok ? el("span", { class: "t-succeeded" }, "✓") : el("span", { class: "t-failed" }, a.error ? "✗ " + truncate(a.error, 40) : "✗")),
        el("td", { class: "num" }, fmtMoney(a.cost_usd)),
        tokenCell(a.input_tokens), tokenCell(a.output_tokens),
        el("td", { class: "num", title: `cache read ${fmtInt(a.cache_read_tokens)}, cache creation ${fmtInt(a.cache_creation_tokens)}` },
          `${fmtTokens(a.cache_read_tokens)} / ${fmtTokens(a.cache_creation_tokens)}`),
        el("td", { class: "num" }, a.turns ?? DASH),
        el("td", { class: "num" }, fmtDuration(a.duration)),
        el("td", null, timeEl(a.started_at))));
    }
    return el("div", { class: "scroll-x" }, t.table);
  }

  const ACTIVITY_MAX = 500;

  function activityTable(list) {
    st.activityIds = new Set(list.map((a) => a.id));
    const t = makeTable(["Time", "Event", "Tool", "Summary", "Outcome"], "compact activity");
    ui.activityBody = t.tbody;
    ui.activityNote = el("p", { class: "muted small" });
    const shown = list.slice(-ACTIVITY_MAX);
    for (const a of shown) t.tbody.appendChild(activityRow(a));
    if (list.length > shown.length) ui.activityNote.textContent = `The last ${fmtInt(shown.length)} of ${fmtInt(list.length)}.`;
    ui.activityEmpty = el("p", { class: "muted small", hidden: list.length ? true : null }, "No hook events recorded for this task.");
    return [ui.activityEmpty, el("div", { class: "scroll-x" }, t.table), ui.activityNote];
  }

  function activityRow(a) {
    return el("tr", { "data-activity": a.id },
      el("td", null, timeEl(a.at)),
      el("td", { class: "small" }, a.event ?? DASH),
      el("td", { class: "mono small" }, a.tool ?? ""),
      el("td", { class: "small" }, a.summary != null ? longText(a.summary, 120) : ""),
      el("td", { title: a.reason || null }, a.outcome ? badge(a.outcome) : "", a.reason ? el("span", { class: "muted small" }, " " + truncate(a.reason, 40)) : null));
  }

  /** An `events` row of source hook, as an activity entry. */
  function hookActivity(row) {
    const d = typeof row.detail === "string" ? parseJSON(row.detail) : row.detail;
    const o = d && typeof d === "object" ? d : {};
    return { id: row.id, at: row.at, event: String(row.kind || "").replace(/^hook /, ""), tool: o.tool ?? null,
      summary: o.summary ?? (d === undefined ? row.detail : null), outcome: o.outcome ?? null, reason: o.reason ?? null };
  }

  function appendActivity(row) {
    if (!st.detail || !ui.activityBody || st.activityIds.has(row.id)) return;
    const a = hookActivity(row);
    st.activityIds.add(a.id);
    st.detail.activity = (st.detail.activity || []).concat([a]);
    st.detailSig = JSON.stringify(st.detail);
    ui.activityBody.appendChild(activityRow(a));
    while (ui.activityBody.childNodes.length > ACTIVITY_MAX) ui.activityBody.firstChild.remove();
    if (ui.activityEmpty) ui.activityEmpty.hidden = true;
    const summary = ui.panel && ui.panel.querySelector('details[data-key="activity"] > summary');
    if (summary) summary.textContent = `Activity (${fmtInt(st.detail.activity.length)})`;
  }

  // ── live updates ──

  function onTasks(msg) {
    if (!alive || msg.workflow !== name) return;
    if (msg.counts && st.wf) {
      st.wf.counts = msg.counts;
      renderHeadSoon();
      refreshStatusOptions();
    }
    let unknown = false, refetch = false, wavesMoved = false;
    const f = st.filters;
    for (const t of msg.tasks || []) {
      if (!t || t.id == null) continue;
      const old = st.statusById.get(t.id);
      if (old === undefined) unknown = true;
      else if (old !== t.status && moveWaveCount(t.wave, old, t.status)) wavesMoved = true;
      st.statusById.set(t.id, t.status);
      setNodeStatus(t.id, t.status);
      const shown = updateRow(t);
      // A status filter: a task that left it stays until the refetch, one that joined it appears then.
      if (f.status && (shown ? t.status !== f.status : t.status === f.status)) refetch = true;
      if (t.id === st.taskId) reloadDetail();
    }
    if (st.wf && st.wf.graph) {
      for (const n of st.wf.graph.nodes) if (st.statusById.has(n.id)) n.status = st.statusById.get(n.id);
    }
    const unfiltered = !f.status && f.wave === "" && !f.q;
    if (unfiltered && st.page && msg.counts && sumCounts(msg.counts) !== Number(st.page.total)) refetch = true;
    if (msg.more) {
      reloadTasksBusy(); reloadWfBusy(); if (st.taskId) reloadDetail();
      return;
    }
    if (refetch) reloadTasks();
    if (unknown) (st.wf && st.wf.graph ? reloadWf : reloadWfSlow)();
    if (wavesMoved && !(st.wf && st.wf.graph)) renderVizSoon();
  }

  function onOverview(doc) {
    if (!alive || !st.wf) return;
    const w = (doc.workflows || []).find((x) => x.name === name);
    if (!w) return;
    const restarted = w.runs !== st.wf.runs;
    const changed = w.status !== st.wf.status || w.cost_usd !== st.wf.cost_usd || w.finished_at !== st.wf.finished_at || w.started_at !== st.wf.started_at;
    if (restarted) { reload(); return; }
    if (changed) {
      Object.assign(st.wf, { status: w.status, cost_usd: w.cost_usd, started_at: w.started_at, finished_at: w.finished_at, updated_at: w.updated_at });
      renderHeadSoon();
      if (w.status !== "running") reloadWf();
    }
  }

  function onEvents(rows) {
    if (!alive) return;
    for (const r of rows) {
      if (!r || r.workflow !== name) continue;
      if (r.kind === "workflow started" || r.kind === "workflow finished") reload();
      if (st.taskId && r.task === st.taskId) {
        if (r.source === "hook") appendActivity(r);
        else reloadDetail();
      }
    }
  }

  return {
    title: name,
    mount,
    reload,
    update(r) {
      const f = readTaskFilters(r.params);
      const task = r.params.get("task") || null;
      if (!sameFilters(f, st.filters)) {
        st.filters = f;
        syncFilterControls();
        renderHeadSoon();
        if (!(st.wf && st.wf.graph)) renderVizSoon();
        if (st.detail && task === st.taskId) renderDetail(true);
        reloadTasks.now();
      }
      if (task !== st.taskId) {
        if (task) { openPanel(task); reloadDetail.now(); } else closePanel();
      }
    },
    streamQuery: () => ({ workflow: name, task: st.taskId }),
    onTasks, onOverview, onEvents,
    onLog(msg) { if (alive && st.log && msg.workflow === name) st.log.onMessage(msg); },
    // a new connection: the log may have grown while there was none (resync reloads anyway)
    onHello(h) { if (alive && st.log && !h.resync) st.log.catchUp(); },
    destroy() {
      alive = false;
      if (st.log) { st.log.destroy(); st.log = null; }
      reloadWf.cancel(); reloadWfSlow.cancel(); reloadTasks.cancel(); reloadDetail.cancel();
      document.removeEventListener("keydown", onKey);
    },
  };
}

/** Columns by wave; in each column the nodes sit near the mean row of their dependencies
    (one barycentre pass), which keeps most edges short. */
function layoutGraph(graph) {
  const byWave = new Map();
  for (const n of graph.nodes) {
    const w = Number.isFinite(Number(n.wave)) ? Number(n.wave) : 0;
    if (!byWave.has(w)) byWave.set(w, []);
    byWave.get(w).push(n);
  }
  const waves = [...byWave.keys()].sort((a, b) => a - b);
  const preds = new Map();
  for (const [a, b] of graph.edges || []) {
    if (!preds.has(b)) preds.set(b, []);
    preds.get(b).push(a);
  }
  const byId = (a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
  const pos = new Map();
  let rows = 0;
  waves.forEach((wave, col) => {
    const list = byWave.get(wave).slice().sort(byId);
    if (col > 0) {
      const bary = new Map();
      for (const n of list) {
        const ps = (preds.get(n.id) || []).map((p) => pos.get(p)).filter(Boolean);
        bary.set(n.id, ps.length ? ps.reduce((s, p) => s + p.row, 0) / ps.length : Number.MAX_SAFE_INTEGER);
      }
      list.sort((a, b) => (bary.get(a.id) - bary.get(b.id)) || byId(a, b));
    }
    list.forEach((n, row) => pos.set(n.id, {
      n, col, row,
      x: GRAPH.padX + col * (GRAPH.w + GRAPH.colGap),
      y: GRAPH.padTop + row * (GRAPH.h + GRAPH.rowGap),
    }));
    rows = Math.max(rows, list.length);
  });
  return {
    waves, pos,
    width: GRAPH.padX * 2 + Math.max(1, waves.length) * (GRAPH.w + GRAPH.colGap) - GRAPH.colGap,
    height: GRAPH.padTop + Math.max(1, rows) * (GRAPH.h + GRAPH.rowGap) - GRAPH.rowGap + GRAPH.padBottom,
  };
}

// ───────────────────────────── spec page ─────────────────────────────

const PHASES = ["steering", "requirements", "design", "tasks", "implementation", "testing", "review"];
const DOCUMENTS = ["requirements", "design", "tasks"];

function specPage(route, main) {
  const name = route.name;
  let alive = true;
  let spec = null, missing = null, phaseSig = null, specSig = null;
  const results = {};              // phase -> { ok, text } of the last approval
  const ui = {};

  async function load() {
    try {
      const s = await api("/api/specs/" + enc(name));
      if (!alive) return;
      const sig = JSON.stringify(s);
      banner.clear("spec");
      if (sig === specSig && !missing) return;
      specSig = sig;
      spec = s;
      missing = null;
      render();
    } catch (e) {
      if (!alive) return;
      if (!spec) { missing = e; render(); }
      if (!(e.status === 404 && !spec)) banner.show("spec", `Could not load spec ${name}: ${e.message}`);
    }
  }
  const reload = refresher(load, 1000);
  // tasks.md and the documents change on disk without a word in the store: look again now and then.
  let poll = null;

  function mount() {
    ui.root = el("div", { class: "spec" });
    main.appendChild(ui.root);
    fill(ui.root, el("h1", null, name), el("p", { class: "muted" }, "Loading…"));
    reload.now().then(() => { if (alive) ready(main); });
    poll = setInterval(() => { if (!document.hidden) reload(); }, 10000);
  }

  function render() {
    if (!spec) {
      fill(ui.root, el("h1", null, name), empty(missing && missing.status === 404
        ? ["There is no spec named ", el("b", null, name), ". ", code(`qw spec new ${name}`), " starts one. ", el("a", { href: "/" }, "Back to the overview")]
        : ["Could not load the spec: ", missing ? missing.message : "unknown error"]));
      return;
    }
    const counts = spec.counts || {};
    const total = sumCounts(counts);
    fill(ui.root,
      el("div", { class: "title-row" },
        el("h1", null, spec.name ?? name),
        spec.kind ? el("span", { class: "badge", "data-s": "kind" }, spec.kind) : null,
        el("span", { class: "spacer" }),
        spec.dir ? el("span", { class: "mono small muted", title: spec.dir }, spec.dir) : null),
      stepper(spec),
      el("div", { class: "columns" },
        el("div", { class: "col-main" },
          card([el("h2", null, "Tasks"), el("span", { class: "card-note" }, total
            ? `${fmtInt(counts.done || 0)} done · ${fmtInt(counts.active || 0)} in progress · ${fmtInt(counts.open || 0)} open${counts.other ? ` · ${fmtInt(counts.other)} other` : ""}`
            : "")],
            total ? progressBar({ succeeded: counts.done || 0, running: counts.active || 0, pending: counts.open || 0, skipped: counts.other || 0 }, total) : null,
            taskTree(spec.tasks || []))),
        el("div", { class: "col-side" },
          card(el("h2", null, "Documents"), documents(spec)),
          (spec.warnings || []).length ? card([el("h2", null, "Warnings"), el("span", { class: "card-note" }, fmtInt(spec.warnings.length))],
            el("ul", { class: "warnings" }, spec.warnings.map((w) => el("li", null, String(w))))) : null,
          (spec.suggestions || []).length ? card(el("h2", null, "Suggestions"), suggestionList(spec.suggestions)) : null)));
  }

  function stepper(s) {
    const byName = new Map((s.phases || []).map((p) => [p.phase, p]));
    const names = PHASES.concat((s.phases || []).map((p) => p.phase).filter((p) => !PHASES.includes(p)));
    return el("ol", { class: "stepper" }, names.map((ph, i) => {
      const p = byName.get(ph) || {};
      const state = p.state ?? null;
      const approval = DOCUMENTS.includes(ph) ? ((s.approvals || {})[ph] ?? "none") : null;
      return el("li", { class: "step", "data-phase": ph, "data-state": state ?? "none", title: state ? `${ph}: ${state}${p.at ? " at " + fmtTime(p.at) : ""}` : `${ph}: not reached` },
        el("span", { class: "step-dot", "aria-hidden": "true" }, stepGlyph(state, i)),
        el("span", { class: "step-body" },
          el("span", { class: "step-name" }, ph),
          el("span", { class: "step-state" }, state ?? "—", p.at ? [" · ", fmtTime(p.at)] : null),
          approval ? el("span", { class: "approval", "data-approval": approval }, approval) : null));
    }));
  }

  function stepGlyph(state, i) {
    if (state === "done" || state === "complete" || state === "completed" || state === "approved") return "✓";
    if (state === "failed") return "!";
    if (state === "started" || state === "running" || state === "resumed") return "●";
    return String(i + 1);
  }

  function documents(s) {
    const docs = s.documents || {}, approvals = s.approvals || {};
    return el("div", { class: "docs" }, DOCUMENTS.map((ph) => {
      const path = docs[ph];
      const approval = approvals[ph] ?? "none";
      const result = results[ph];
      return el("div", { class: "doc", "data-document": ph },
        el("div", { class: "doc-top" },
          el("b", null, ph),
          el("span", { class: "approval", "data-approval": approval }, approval),
          el("span", { class: "spacer" }),
          token && path ? el("button", { type: "button", class: "btn primary small", "data-approve": ph, onclick: (e) => approve(ph, e.currentTarget),
            title: approval === "approved" ? "Approved already; approve the document as it is now" : `Approve ${ph} as it is now` },
            "Approve") : null),
        el("div", { class: "mono small muted doc-path", title: typeof path === "string" ? path : null },
          typeof path === "string" ? path : "not written yet"),
        result ? el("div", { class: "small " + (result.ok ? "t-succeeded" : "t-failed"), "data-result": result.ok ? "ok" : "error" }, result.text) : null);
    }),
    token ? null : el("p", { class: "muted small" }, "Approving needs the token: open the dashboard with the URL that ", code("qw dashboard"), " printed."));
  }

  async function approve(phase, button) {
    button.disabled = true;
    button.textContent = "Approving…";
    try {
      const res = await api("/api/specs/" + enc(name) + "/approve", { phase }, "POST");
      results[phase] = { ok: true, text: approvalText(res, phase) };
    } catch (e) {
      results[phase] = { ok: false, text: `Not approved: ${e.message}` };
    }
    if (!alive) return;
    specSig = null;
    render();
    reload.now();
  }

  function approvalText(res, phase) {
    if (res && typeof res === "object") {
      if (typeof res.message === "string") return res.message;
      if (typeof res.state === "string") return `${phase}: ${res.state}`;
    }
    return `Approved ${phase} at ${clockTime(new Date())}.`;
  }

  function taskTree(tasks) {
    if (!tasks.length) return empty("No tasks yet: the tasks phase writes tasks.md.");
    return el("div", { class: "tree", role: "list" }, tasks.map((t) => {
      const state = t.state ?? t.derived_state ?? " ";
      const derived = t.state == null && t.derived_state != null;
      const [glyph, label] = checkGlyph(state);
      return el("div", { class: "tree-row", role: "listitem", "data-spec-task": t.id ?? "", "data-state": state, style: { "--depth": Number(t.depth) || 0 } },
        el("span", { class: "check" + (derived ? " derived" : ""), role: "img", "aria-label": label + (derived ? " (from its subtasks)" : ""), title: label + (derived ? ", from its subtasks" : "") }, glyph),
        t.id != null ? el("span", { class: "tree-id mono" }, t.id) : null,
        el("span", { class: "tree-title" }, t.title ?? ""),
        t.optional ? el("span", { class: "tag" }, "optional") : null,
        (t.depends || []).length ? el("span", { class: "tag muted", title: "Depends on " + t.depends.join(", ") }, "after " + truncate(t.depends.join(", "), 30)) : null,
        t.worktree ? el("span", { class: "tag mono", title: t.worktree }, "worktree") : null,
        t.branch ? el("span", { class: "tag mono", title: "branch " + t.branch }, truncate(t.branch, 40)) : null,
        t.merge ? el("span", { class: "merge", "data-merge": t.merge }, t.merge) : null);
    }));
  }

  function checkGlyph(state) {
    switch (state) {
      case "x": case "X": return ["☑", "done"];
      case "-": return ["◐", "in progress"];
      case " ": case "": return ["☐", "open"];
      default: return [String(state), `state ${state}`];
    }
  }

  function suggestionList(list) {
    const t = makeTable([["#", "num"], "State", "Command"], "compact");
    for (const s of list) {
      const command = s.command ?? (Array.isArray(s.argv) ? "qw " + shellJoin(s.argv) : "");
      t.tbody.appendChild(el("tr", null,
        el("td", { class: "num mono" }, s.id ?? DASH),
        el("td", null, badge(s.state)),
        el("td", { class: "mono small" }, longText(Array.isArray(command) ? shellJoin(command) : command, 60),
          s.error ? el("div", { class: "t-failed small" }, longText(s.error, 80)) : null)));
    }
    return el("div", { class: "scroll-x" }, t.table);
  }

  return {
    title: name,
    mount,
    reload,
    onOverview(doc) {
      const s = (doc.specs || []).find((x) => x.name === name);
      const sig = s ? JSON.stringify(s.phase) : null;
      if (phaseSig !== null && sig !== phaseSig) reload();
      phaseSig = sig;
    },
    onEvents(rows) {
      if (rows.some((r) => r && (r.source === "suggestion" || /spec|approve/i.test(String(r.kind || ""))))) reload();
    },
    destroy() { alive = false; reload.cancel(); clearInterval(poll); },
  };
}

// ───────────────────────────── cost page ─────────────────────────────

const RANGES = [["", "All time", 0], ["24h", "Last 24 hours", 86400], ["7d", "Last 7 days", 7 * 86400], ["30d", "Last 30 days", 30 * 86400]];

function costPage(route, main) {
  let alive = true;
  let doc = null, docSig = null, range = rangeOf(route.params), lastRuns = null;
  const ui = {};

  function rangeOf(params) {
    const r = params.get("range") || "";
    return RANGES.some((x) => x[0] === r) ? r : "";
  }

  function since() {
    const r = RANGES.find((x) => x[0] === range);
    return r && r[2] ? Math.floor(now() - r[2]) : null;
  }

  async function load() {
    try {
      const d = await api("/api/cost", { since: since() });
      if (!alive) return;
      banner.clear("cost");
      const sig = JSON.stringify(d);
      if (sig === docSig) return;
      docSig = sig;
      doc = d;
      render();
    } catch (e) {
      if (alive) banner.show("cost", "Could not load the cost report: " + e.message);
    }
  }
  const reload = refresher(load, 1000);
  const onResize = debounce(() => { if (alive && doc) renderChart(); }, 150);

  function mount() {
    ui.range = el("select", { "aria-label": "Period", onchange: () => {
      range = ui.range.value;
      history.replaceState(null, "", "/cost" + qs({ range }));
      reload.now();
    } }, RANGES.map(([v, label]) => el("option", { value: v }, label)));
    ui.range.value = range;
    ui.stats = el("div", { class: "stats" });
    ui.chart = el("div", { class: "chart" });
    ui.chartNote = el("span", { class: "card-note" });
    ui.tables = el("div", { class: "cost-tables" });
    ui.budgets = el("div");
    main.append(
      el("div", { class: "title-row" }, el("h1", null, "Cost"), el("span", { class: "spacer" }), ui.range),
      ui.stats,
      card([el("h2", null, "Spend over time"), ui.chartNote], ui.chart),
      card(el("h2", null, "Budgets"), ui.budgets),
      ui.tables);
    window.addEventListener("resize", onResize);
    reload.now().then(() => { if (alive) ready(main); });
  }

  function render() {
    const c = (lastOverview && lastOverview.cost) || {};
    const runs = Number(doc.runs) || 0;
    fill(ui.stats,
      statBox(range ? "Spent in period" : "Spent in total", fmtMoney(doc.total_usd)),
      statBox("Agent runs", fmtInt(doc.runs)),
      statBox("Per run", runs ? fmtMoney(doc.total_usd / runs) : DASH),
      statBox("Today", fmtMoney(doc.today_usd ?? c.today_usd)),
      statBox("Tokens in / out", `${fmtTokens(sumOf(doc.by_agent, "input_tokens"))} / ${fmtTokens(sumOf(doc.by_agent, "output_tokens"))}`));
    renderChart();
    renderBudgets(doc.budgets || []);
    fill(ui.tables,
      costTable("By agent", doc.by_agent, "Agent", null),
      costTable("By model", doc.by_model, "Model", null),
      costTable("By workflow", doc.by_workflow, "Workflow", (k) => workflowHref(k)),
      costTable("By task (top 50)", doc.by_task, "Task", taskKeyHref, "wide"));
  }

  function statBox(label, value) {
    return el("div", { class: "stat" }, el("div", { class: "stat-label" }, label), el("div", { class: "stat-value" }, value));
  }

  function sumOf(rows, field) {
    return (rows || []).reduce((s, r) => s + (Number(r[field]) || 0), 0);
  }

  /** by_task keys are "workflow/task": the workflow is up to the first slash. */
  function taskKeyHref(key) {
    const i = String(key).indexOf("/");
    return i > 0 ? taskHref(key.slice(0, i), key.slice(i + 1)) : null;
  }

  function renderChart() {
    const series = (doc.series || []).filter((p) => p && Number.isFinite(Number(p.t))).slice().sort((a, b) => a.t - b.t);
    const bucket = Number(doc.bucket) > 0 ? Number(doc.bucket) : 3600;
    ui.chartNote.textContent = series.length ? `per ${fmtDuration(bucket)}` : "";
    if (!series.length) { fill(ui.chart, empty("No agent runs recorded", range ? " in this period." : " yet.")); return; }
    fill(ui.chart, costChart(series, bucket, Math.max(320, ui.chart.clientWidth || 800)));
  }

  function renderBudgets(list) {
    if (!list.length) { fill(ui.budgets, empty("No budgets set.")); return; }
    const t = makeTable(["Scope", ["Used", "c-progress"], ["Spent", "num"], ["Budget", "num"], ["", "num"]], "budgets");
    for (const b of list) {
      const frac = b.budget_usd > 0 ? b.spent_usd / b.budget_usd : 0;
      t.tbody.appendChild(el("tr", { "data-budget": b.scope },
        el("td", null, b.scope ?? DASH),
        el("td", { class: "c-progress" }, gauge(frac)),
        el("td", { class: "num" }, fmtMoney(b.spent_usd)),
        el("td", { class: "num" }, fmtMoney(b.budget_usd)),
        el("td", { class: "num" + (frac >= 1 ? " t-failed" : "") }, b.budget_usd > 0 ? fmtPercent(100 * frac) : DASH)));
    }
    fill(ui.budgets, el("div", { class: "scroll-x" }, t.table));
  }

  function costTable(title, rows, keyLabel, href, cls) {
    rows = rows || [];
    const t = makeTable([keyLabel, ["Runs", "num"], ["Failed", "num"], ["Cost", "num"], ["", "c-share"], ["In", "num"], ["Out", "num"], ["Cache read", "num"], ["Cache write", "num"], ["Duration", "num"]], "compact");
    const max = Math.max(0, ...rows.map((r) => Number(r.cost_usd) || 0));
    for (const r of rows) {
      const link = href && r.key != null ? href(String(r.key)) : null;
      t.tbody.appendChild(el("tr", null,
        el("td", { class: "c-key" }, link ? el("a", { href: link, title: r.key }, truncate(r.key, 60)) : longText(r.key ?? DASH, 60)),
        el("td", { class: "num" }, fmtInt(r.runs)),
        el("td", { class: "num" + (r.failed ? " t-failed" : "") }, fmtInt(r.failed)),
        el("td", { class: "num" }, fmtMoney(r.cost_usd)),
        el("td", { class: "c-share" }, gauge(max ? (Number(r.cost_usd) || 0) / max : 0, "share")),
        tokenCell(r.input_tokens), tokenCell(r.output_tokens), tokenCell(r.cache_read_tokens), tokenCell(r.cache_creation_tokens),
        el("td", { class: "num" }, fmtDuration(r.duration))));
    }
    const c = card([el("h2", null, title), el("span", { class: "card-note" }, rows.length ? fmtInt(rows.length) : "")],
      rows.length ? el("div", { class: "scroll-x" }, t.table) : empty("No runs."));
    if (cls) c.classList.add(cls);
    return c;
  }

  return {
    title: "Cost",
    mount,
    reload,
    update(r) {
      const next = rangeOf(r.params);
      if (next !== range) { range = next; ui.range.value = range; reload.now(); }
    },
    onOverview(d) {
      const c = d && d.cost;
      if (!c) return;
      const sig = `${c.runs}/${c.total_usd}`;
      if (lastRuns !== null && sig !== lastRuns) reload();
      lastRuns = sig;
    },
    onEvents(rows) {
      if (rows.some((r) => r && /agent/i.test(String(r.kind || "")))) reload();
    },
    destroy() { alive = false; reload.cancel(); window.removeEventListener("resize", onResize); },
  };
}

function tokenCell(n) {
  return el("td", { class: "num", title: n != null ? fmtInt(n) + " tokens" : null }, fmtTokens(n));
}

/** Smallest of 1, 2, 2.5, 5 times a power of ten that is at least v. */
function niceCeil(v) {
  if (!(v > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v * 0.999999) return m * p;
  return 10 * p;
}

/** A bar chart of spend per bucket, bars placed by time (an empty bucket is a gap). */
function costChart(series, bucket, width) {
  const H = 220, L = 62, R = 12, T = 12, B = 30;
  const plotW = width - L - R, plotH = H - T - B;
  const t0 = series[0].t, t1 = series[series.length - 1].t;
  let n = Math.round((t1 - t0) / bucket) + 1;
  const byTime = n <= 2000;
  if (!byTime) n = series.length;
  const slot = plotW / Math.max(n, 1);
  const barW = Math.max(1, Math.min(48, slot * 0.78));
  const maxUsd = niceCeil(Math.max(...series.map((p) => Number(p.usd) || 0)));
  const root = svg("svg", { class: "bars", width, height: H, viewBox: `0 0 ${width} ${H}`, role: "img", "aria-label": "Spend over time" });
  // y grid and labels
  for (let i = 0; i <= 4; i++) {
    const v = maxUsd * i / 4, y = T + plotH - plotH * i / 4;
    root.appendChild(svg("line", { class: "grid-line", x1: L, x2: width - R, y1: y, y2: y }));
    root.appendChild(svg("text", { class: "axis", x: L - 6, y: y + 4, "text-anchor": "end" }, fmtMoney(v)));
  }
  // bars, each with a hover area the height of the plot
  series.forEach((p, idx) => {
    const i = byTime ? Math.round((p.t - t0) / bucket) : idx;
    const usd = Number(p.usd) || 0;
    const h = Math.max(usd > 0 ? 1 : 0, plotH * usd / maxUsd);
    const x = L + i * slot + (slot - barW) / 2;
    root.appendChild(svg("g", { class: "bar" },
      svg("title", null, `${bucketLabel(p.t, bucket)}\n${fmtMoney(usd)} · ${fmtInt(p.runs)} runs`),
      svg("rect", { class: "hit", x: L + i * slot, y: T, width: slot, height: plotH }),
      svg("rect", { class: "fill", x, y: T + plotH - h, width: barW, height: h, rx: Math.min(2, barW / 4) })));
  });
  // x labels, about one per 90 px
  const every = Math.max(1, Math.ceil(n / Math.max(1, Math.floor(plotW / 90))));
  let lastDay = null;
  for (let i = 0; i < n; i += every) {
    const t = byTime ? t0 + i * bucket : series[i].t;
    const d = new Date(t * 1000);
    const day = isoDate(d);
    const label = bucket >= 86400 ? day.slice(5) : (day !== lastDay ? `${day.slice(5)} ${pad2(d.getHours())}:${pad2(d.getMinutes())}` : `${pad2(d.getHours())}:${pad2(d.getMinutes())}`);
    lastDay = day;
    const x = L + i * slot + slot / 2;
    root.appendChild(svg("line", { class: "tick-line", x1: x, x2: x, y1: T + plotH, y2: T + plotH + 4 }));
    root.appendChild(svg("text", { class: "axis", x, y: H - 10, "text-anchor": "middle" }, label));
  }
  root.appendChild(svg("line", { class: "axis-line", x1: L, x2: width - R, y1: T + plotH, y2: T + plotH }));
  return root;
}

function bucketLabel(t, bucket) {
  const a = new Date(t * 1000), b = new Date((t + bucket) * 1000);
  if (bucket >= 86400) return isoDate(a) + (bucket > 86400 ? " – " + isoDate(b) : "");
  const hm = (d) => `${pad2(d.getHours())}:${pad2(d.getMinutes())}`;
  return `${isoDate(a)} ${hm(a)}–${hm(b)}`;
}

// ───────────────────────────── events page ─────────────────────────────

const SOURCES = ["engine", "hook", "suggestion"];
const EVENTS_PAGE = 200;
const EVENTS_MAX = 1000;

function readEventFilters(params) {
  const src = params.get("source");
  const sources = src == null ? SOURCES.slice() : src.split(",").filter((s) => SOURCES.includes(s));
  return { sources, kind: params.get("kind") || "", workflow: params.get("workflow") || "" };
}

function eventsPage(route, main) {
  let alive = true;
  let filters = readEventFilters(route.params);
  let rows = [];                     // shown, newest first
  const seen = new Set();            // their cursors
  let seq = 0, exhausted = false;
  const ui = {};

  function query(extra) {
    return {
      limit: EVENTS_PAGE,
      source: filters.sources.length === SOURCES.length ? null : filters.sources.join(","),
      kind: filters.kind, workflow: filters.workflow, ...extra,
    };
  }

  function matches(r) {
    if (!filters.sources.includes(r.source)) return false;
    if (filters.kind && !String(r.kind || "").toLowerCase().includes(filters.kind.toLowerCase())) return false;
    if (filters.workflow && r.workflow !== filters.workflow) return false;
    return true;
  }

  function listOf(res) {
    return Array.isArray(res) ? res : (res && (res.events || res.rows)) || [];
  }

  async function load() {
    const s = ++seq;
    if (!filters.sources.length) {
      rows = []; seen.clear(); exhausted = true; render();
      return;
    }
    ui.card.classList.add("loading");
    try {
      const list = listOf(await api("/api/events", query()));
      if (!alive || s !== seq) return;
      rows = [];
      seen.clear();
      for (const r of list) if (!seen.has(r.cursor)) { seen.add(r.cursor); rows.push(r); }
      exhausted = list.length < EVENTS_PAGE;
      banner.clear("events");
      render();
    } catch (e) {
      if (alive && s === seq) banner.show("events", "Could not load the events: " + e.message);
    } finally {
      if (alive && s === seq) ui.card.classList.remove("loading");
    }
  }
  const reload = refresher(load, 300);

  async function older() {
    const last = rows[rows.length - 1];
    if (!last) return;
    const s = seq;
    ui.older.disabled = true;
    try {
      const list = listOf(await api("/api/events", query({ before: last.at, after: last.cursor })));
      if (!alive || s !== seq) return;
      let added = 0;
      for (const r of list) {
        if (seen.has(r.cursor)) continue;
        seen.add(r.cursor);
        rows.push(r);
        ui.tbody.appendChild(eventRow(r));
        added++;
      }
      exhausted = list.length < EVENTS_PAGE || added === 0;
      renderFooter();
      banner.clear("events");
    } catch (e) {
      if (alive) banner.show("events", "Could not load older events: " + e.message);
    } finally {
      if (alive) ui.older.disabled = false;
    }
  }

  function mount() {
    ui.sources = SOURCES.map((s) => el("input", { type: "checkbox", value: s, checked: filters.sources.includes(s) ? true : null,
      onchange: () => setFilters({ sources: ui.sources.filter((c) => c.checked).map((c) => c.value) }) }));
    const typed = debounce(() => setFilters({ kind: ui.kind.value.trim(), workflow: ui.workflow.value.trim() }), 300);
    ui.kind = el("input", { type: "search", placeholder: "kind contains…", "aria-label": "Kind", value: filters.kind, spellcheck: "false", oninput: typed });
    ui.workflows = el("datalist", { id: "known-workflows" });
    ui.workflow = el("input", { type: "search", placeholder: "workflow", "aria-label": "Workflow", value: filters.workflow, list: "known-workflows", spellcheck: "false", oninput: typed });
    ui.count = el("span", { class: "range" });
    const t = makeTable(["Time", "Source", "Kind", "Workflow", "Task", "Detail"], "events");
    ui.tbody = t.tbody;
    ui.empty = el("div");
    ui.older = el("button", { type: "button", class: "btn", onclick: older }, "Older events");
    ui.end = el("span", { class: "muted small" });
    ui.card = el("section", { class: "card" },
      el("header", { class: "card-head toolbar" },
        el("h2", null, "Events"),
        el("span", { class: "checks", role: "group", "aria-label": "Sources" },
          SOURCES.map((s, i) => el("label", { class: "check-label" }, ui.sources[i], " ", s))),
        ui.kind, ui.workflow, ui.workflows,
        el("span", { class: "spacer" }), ui.count),
      el("div", { class: "scroll-x" }, t.table),
      ui.empty,
      el("footer", { class: "card-foot" }, ui.older, ui.end));
    main.appendChild(ui.card);
    fillWorkflowList(lastOverview);
    reload.now().then(() => { if (alive) ready(main); });
  }

  function setFilters(change) {
    const f = { ...filters, ...change };
    if (JSON.stringify(f) === JSON.stringify(filters)) return;
    filters = f;
    history.replaceState(null, "", "/events" + qs({
      source: f.sources.length === SOURCES.length ? null : f.sources.join(",") || "none",
      kind: f.kind, workflow: f.workflow,
    }));
    reload.now();
  }

  function syncControls() {
    ui.sources.forEach((c) => { c.checked = filters.sources.includes(c.value); });
    if (document.activeElement !== ui.kind) ui.kind.value = filters.kind;
    if (document.activeElement !== ui.workflow) ui.workflow.value = filters.workflow;
  }

  function fillWorkflowList(doc) {
    if (!doc || !ui.workflows) return;
    const names = (doc.workflows || []).map((w) => w.name);
    if (names.join("\u0000") === ui.workflows.getAttribute("data-names")) return;
    ui.workflows.setAttribute("data-names", names.join("\u0000"));
    fill(ui.workflows, names.map((n) => el("option", { value: n })));
  }

  function render() {
    fill(ui.tbody, rows.map(eventRow));
    renderFooter();
  }

  function renderFooter() {
    ui.count.textContent = rows.length ? `${fmtInt(rows.length)} shown${rows.length >= EVENTS_MAX ? " (newest " + fmtInt(EVENTS_MAX) + " live)" : ""}` : "";
    fill(ui.empty, rows.length ? null : !filters.sources.length ? empty("Pick at least one source.")
      : empty(filters.kind || filters.workflow || filters.sources.length < SOURCES.length ? "No event matches these filters." : "No events yet: they appear here as workflows, hooks and suggestions run."));
    ui.older.hidden = exhausted || !rows.length;
    ui.end.textContent = rows.length && exhausted ? "The start of the log." : "";
  }

  function eventRow(r) {
    const detail = eventDetail(r);
    const long = detail.length > 140;
    const cell = el("td", { class: "c-detail" });
    if (long) {
      const full = el("pre", { class: "out small", hidden: true }, detail);
      const shortText = el("span", { class: "mono small", title: detail.slice(0, 4000) }, truncate(detail.replace(/\s+/g, " "), 140));
      const toggle = el("button", { type: "button", class: "btn link small", "aria-expanded": "false" }, "more");
      toggle.addEventListener("click", () => {
        const open = full.hidden;
        full.hidden = !open;
        shortText.hidden = open;
        toggle.textContent = open ? "less" : "more";
        toggle.setAttribute("aria-expanded", String(open));
      });
      append(cell, [shortText, " ", toggle, full]);
    } else {
      cell.appendChild(el("span", { class: "mono small" }, detail));
    }
    return el("tr", { "data-event": r.cursor, "data-source": r.source },
      el("td", { class: "c-time" }, timeEl(r.at)),
      el("td", null, el("span", { class: "src", "data-src": r.source }, r.source ?? DASH)),
      el("td", { class: "c-kind" }, eventKind(r)),
      el("td", null, r.workflow ? el("a", { href: workflowHref(r.workflow), title: r.workflow }, truncate(r.workflow, 40)) : ""),
      el("td", { class: "mono small" }, r.task ? (r.workflow ? el("a", { href: taskHref(r.workflow, r.task), title: r.task }, truncate(r.task, 40)) : truncate(r.task, 40)) : ""),
      cell);
  }

  function eventKind(r) {
    const k = String(r.kind ?? "");
    const m = /(failed|succeeded|skipped|interrupted|started|finished|pending|running|done|parked)$/.exec(k);
    return m ? el("span", { class: "kind", "data-s": m[1] }, k) : el("span", { class: "kind" }, k);
  }

  function onEvents(list) {
    if (!alive || !filters.sources.length) return;
    let added = 0;
    for (const r of list) {
      if (!r || seen.has(r.cursor) || !matches(r)) continue;
      seen.add(r.cursor);
      rows.unshift(r);
      const tr = eventRow(r);
      tr.classList.add("fresh");
      ui.tbody.insertBefore(tr, ui.tbody.firstChild);
      added++;
    }
    if (!added) return;
    while (rows.length > EVENTS_MAX) {
      const r = rows.pop();
      seen.delete(r.cursor);
      if (ui.tbody.lastChild) ui.tbody.lastChild.remove();
      exhausted = false;
    }
    renderFooter();
  }

  return {
    title: "Events",
    mount,
    reload,
    update(r) {
      const f = readEventFilters(r.params);
      if (JSON.stringify(f) !== JSON.stringify(filters)) { filters = f; syncControls(); reload.now(); }
    },
    onEvents,
    onOverview: fillWorkflowList,
    destroy() { alive = false; reload.cancel(); },
  };
}

/** An event's detail as one string; hook details read as "tool summary → outcome (reason)". */
function eventDetail(r) {
  const raw = r.detail;
  if (raw == null) return "";
  const d = typeof raw === "string" ? parseJSON(raw) : raw;
  if (r.source === "hook" && d && typeof d === "object" && !Array.isArray(d)) {
    return [d.tool, d.summary, d.outcome ? "→ " + d.outcome : null, d.reason ? "(" + d.reason + ")" : null]
      .filter((x) => x != null && x !== "").join(" ");
  }
  return typeof raw === "string" ? raw : JSON.stringify(raw);
}

// ───────────────────────────── not found ─────────────────────────────

function notFoundPage(route, main) {
  return {
    title: "Not found",
    mount() {
      main.appendChild(el("div", { class: "card" }, empty("There is no page at ", code(route.path || location.pathname), ". ",
        el("a", { href: "/" }, "Go to the overview"), ".")));
      ready(main);
    },
  };
}

const PAGES = {
  overview: overviewPage,
  workflow: workflowPage,
  spec: specPage,
  cost: costPage,
  events: eventsPage,
  notfound: notFoundPage,
};

// ───────────────────────────── start ─────────────────────────────

function start() {
  token = initToken();
  document.addEventListener("click", onLinkClick);
  window.addEventListener("popstate", () => route());
  setInterval(tickAll, 1000);
  setInterval(() => stream.watchdog(), 10000);
  route();
  // The header shows the project; pages other than the overview get it from here first.
  if (current.key !== "overview") {
    api("/api/overview").then((doc) => {
      if (lastOverview) return;
      noteOverview(doc);
      if (current.page && current.page.onOverview) current.page.onOverview(doc);
    }).catch(() => {});
  }
}

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
else start();

})();
