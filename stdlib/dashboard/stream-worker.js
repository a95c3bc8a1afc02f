/* The qw dashboard's live stream, shared by every tab of the origin: a SharedWorker
 * (served at /assets/stream-worker.js, no imports).
 *
 * A browser keeps at most six HTTP/1.1 connections to a host, across all its tabs, and an
 * EventSource holds one for good. So the tabs do not open their own: each tells this worker
 * what it shows, and the worker keeps ONE EventSource to
 * /api/stream?watch={"workflows": [...], "logs": [[workflow, task], ...], "events": bool}
 * for the union of what they want, and hands every tab the messages that are for it.
 *
 * Page → worker:
 *   { type: "watch", workflow, task, events }  on start, and whenever the page's interest changes
 *   { type: "alive" }                          every 5 s (a port silent for 15 s is dropped)
 *   { type: "bye" }                            on pagehide (the port is dropped)
 *   { type: "visible", visible }               on start, and when the tab is shown or hidden
 * A dropped port that speaks again (a throttled or frozen tab, a page back from the
 * back-forward cache) is taken back, and told to resync: it missed what came meanwhile.
 *
 * Worker → page:
 *   { type: "state", state: "open"|"connecting"|"closed", url, retry }
 *       whenever it changes, and right after a port joins (`url`: the stream's address;
 *       `retry`: with "closed", the milliseconds until the next try)
 *   { type: "message", event, data, id }   a message of the stream, data JSON-parsed
 *   { type: "missed" }                     to a tab shown again that let messages go by
 *
 * A hidden tab gets no messages (a browser may have twenty open on a busy store, each woken
 * by every one): it is told, when shown, that it missed some, and reads its page again.
 *
 * Routing: `overview` to every port; `tasks` to the ports showing data.workflow; `log` to
 * the ports showing that workflow and task; `events` to ports that want events (all rows)
 * and to ports showing a workflow (its rows only, and nothing when none); `ping` to nobody.
 * `hello`: a connection that replaces another because the union changed says hello only to
 * the ports it is the first to serve (new ones, or ones whose interest changed), with resync
 * as the server said unless the connection before already carried the port's workflow and
 * events (then only its log can have been missed, which the page catches up on a hello
 * without resync); a connection after an error or a server restart says hello to every
 * port, with resync true.
 */
"use strict";

// a port silent this long is dropped: a tab that closed without saying bye. Long, because a
// browser runs the timers of a tab hidden for minutes about once a minute only
const EXPIRE_MS = 150000;
const SWEEP_MS = 5000;
const DEBOUNCE_MS = 50;        // a burst of interest changes makes one new connection
const SILENT_MS = 45000;       // pings come every 15 s: a connection this quiet is dead
const RETRY_MIN = 1000, RETRY_MAX = 5000;
const RECENT_MAX = 5000;       // cursors of event rows forwarded, to drop replays twice seen
const TYPES = ["hello", "overview", "events", "tasks", "log", "ping"];
const CLOSED = 2;              // EventSource.CLOSED

/** MessagePort → its record. A dropped port leaves this map; its record lives on in the
    port's message handler, to be taken back when the port speaks again. */
const ports = new Map();

/** The connection in use: { es, url, watch, errored, greeted, replay, lastMessage }. `es`
    is null while a retry is scheduled. */
let active = null;
/** The connection that replaces `active` once it says hello. */
let pending = null;
/** The id of the last message seen, for `&last=` on a connection opened anew. */
let lastId = null;
let state = "connecting";      // what a port that joins hears first: a connection is due
let retryTimer = null;
let retryAt = 0;
let retryDelay = RETRY_MIN;
let recomputeTimer = null;
const recent = new Set();

// ───────────────────────────── interests and the union ─────────────────────────────

function interestOf(m) {
  const workflow = typeof m.workflow === "string" && m.workflow !== "" ? m.workflow : null;
  const task = workflow !== null && typeof m.task === "string" && m.task !== "" ? m.task : null;
  return { workflow, task, events: m.events === true };
}

function sameInterest(a, b) {
  return a.workflow === b.workflow && a.task === b.task && a.events === b.events;
}

/** { workflows, logs, events } for the records given, sorted so the same union always makes
    the same URL. */
function unionOf(recs) {
  const workflows = new Set();
  const logs = new Map();
  let events = false;
  for (const r of recs) {
    const i = r.interest;
    if (i.workflow !== null) {
      workflows.add(i.workflow);
      if (i.task !== null) logs.set(JSON.stringify([i.workflow, i.task]), [i.workflow, i.task]);
    }
    if (i.events) events = true;
  }
  return {
    workflows: [...workflows].sort(),
    logs: [...logs.keys()].sort().map((k) => logs.get(k)),
    events,
  };
}

function urlOf(watch) {
  return "/api/stream?watch=" + encodeURIComponent(JSON.stringify(watch));
}

/** Whether a stream of `watch` carries what an interest needs: its workflow's tasks and
    rows, every row if it wants events, and (withLog) its task's log. */
function covers(watch, i, withLog) {
  if (i.events && !watch.events) return false;
  if (i.workflow === null) return true;
  if (!watch.workflows.includes(i.workflow)) return false;
  if (!withLog || i.task === null) return true;
  return watch.logs.some((p) => p[0] === i.workflow && p[1] === i.task);
}

// ───────────────────────────── ports ─────────────────────────────

function post(rec, msg) {
  try {
    rec.sent = (rec.sent || 0) + 1;
    rec.port.postMessage(msg);
  } catch {
    drop(rec);
  }
}

/** A message of the stream to a port, unless its tab is hidden. */
function deliver(rec, msg) {
  if (rec.hidden) rec.missed = true;
  else post(rec, msg);
}

function stateMessage() {
  const c = active || pending;
  return { type: "state", state, url: c ? c.url : null,
           retry: state === "closed" && retryTimer ? Math.max(0, retryAt - Date.now()) : null };
}

function setState(s) {
  if (s === state && s !== "closed") return;
  state = s;
  const msg = stateMessage();
  for (const r of ports.values()) post(r, msg);
}

function addPort(port) {
  const rec = {
    port,
    interest: { workflow: null, task: null, events: false },
    heard: Date.now(),
    served: null,      // the watch of the connection that serves its current interest
    revived: false,    // dropped and taken back: it has missed messages
    hidden: false,     // its tab is hidden: messages for it are let go by
    missed: false,     // ... and some were
  };
  port.onmessage = (e) => onPortMessage(rec, e.data);
  if (typeof port.start === "function") port.start();
  ports.set(port, rec);
  post(rec, stateMessage());
  schedule();
}

function onPortMessage(rec, m) {
  if (!m || typeof m !== "object") return;
  if (m.type === "bye") {
    drop(rec);
    return;
  }
  if (m.type === "debug") {
    // what the worker holds, for a person (or a test) asking from the console
    const c = active || pending;
    post(rec, { type: "debug", ports: [...ports.values()].map((r) => ({ ...r.interest, sent: r.sent || 0, heard: r.heard })), state,
                active: active ? active.url : null, pending: pending ? pending.url : null, served: !!(c && c.greeted) });
    return;
  }
  rec.heard = Date.now();
  if (!ports.has(rec.port)) {
    // a port dropped for silence, or back after a bye: it missed what came meanwhile
    ports.set(rec.port, rec);
    rec.served = null;
    rec.revived = true;
    post(rec, stateMessage());
    schedule();
  }
  if (m.type === "visible") {
    rec.hidden = m.visible === false;
    if (!rec.hidden && rec.missed) {
      rec.missed = false;
      post(rec, { type: "missed" });
    }
  }
  if (m.type === "watch") {
    const i = interestOf(m);
    if (!sameInterest(i, rec.interest)) {
      rec.interest = i;
      rec.served = null;
      schedule();
    }
  }
}

function drop(rec) {
  if (ports.delete(rec.port)) schedule();
}

function sweep() {
  const limit = Date.now() - EXPIRE_MS;
  for (const r of [...ports.values()]) if (r.heard < limit) drop(r);
}

// ───────────────────────────── the connection ─────────────────────────────

function schedule() {
  clearTimeout(recomputeTimer);
  recomputeTimer = setTimeout(recompute, DEBOUNCE_MS);
}

/** Makes the connection match the union of the ports' interests. */
function recompute() {
  recomputeTimer = null;
  const recs = [...ports.values()];
  if (!recs.length) {
    closeAll();
    return;
  }
  const watch = unionOf(recs);
  const url = urlOf(watch);
  // ports whose interest the connection in place carries already: served from now on
  if (active && active.es) {
    for (const r of recs) {
      if (r.served !== null || !covers(active.watch, r.interest, true)) continue;
      r.served = active.watch;
      if (r.revived) {
        r.revived = false;
        deliver(r, { type: "message", event: "hello", data: { version: lastId, resync: true }, id: lastId });
      }
    }
  }
  if (active && !active.es) return;              // a retry is due; it takes the union then
  if ((pending || active) && (pending || active).url === url) return;
  if (pending) {
    pending.es.close();
    pending = null;
  }
  if (!active) {
    active = open(watch, url, null);
    setState("connecting");
  } else if (active.url !== url) {
    // the new one first; the old one goes when the new one has said hello
    pending = open(watch, url, lastId);
  }
}

function open(watch, url, last) {
  const c = { es: null, url, watch, errored: false, greeted: false, replay: false, lastMessage: Date.now() };
  const es = new EventSource(url + (last ? "&last=" + encodeURIComponent(last) : ""));
  c.es = es;
  es.onopen = () => onOpen(c);
  es.onerror = () => onError(c);
  for (const type of TYPES) es.addEventListener(type, (e) => onEvent(c, type, e));
  return c;
}

/** No ports: no stream. */
function closeAll() {
  for (const c of [active, pending]) if (c && c.es) c.es.close();
  active = pending = null;
  clearTimeout(retryTimer);
  retryTimer = null;
  retryDelay = RETRY_MIN;
  state = "connecting";          // (nobody to tell; the next port to join makes a connection)
}

function onOpen(c) {
  if (c !== active) return;
  c.lastMessage = Date.now();
  retryDelay = RETRY_MIN;
  setState("open");
}

function onError(c) {
  if (c !== active && c !== pending) return;
  const closed = !c.es || c.es.readyState === CLOSED;
  if (c === pending) {
    // the replacement failed: the old connection goes on; try again later
    if (closed) {
      pending = null;
      scheduleRetry();
    }
    return;
  }
  c.errored = true;
  if (closed) {
    // the browser gave up (an HTTP error, a wrong content type): retry ourselves
    c.es = null;
    if (pending) {
      pending.es.close();
      pending = null;
    }
    scheduleRetry();
    setState("closed");
  } else {
    setState("connecting");       // EventSource tries again by itself, with Last-Event-ID
  }
}

function scheduleRetry() {
  clearTimeout(retryTimer);
  retryTimer = setTimeout(retry, retryDelay);
  retryAt = Date.now() + retryDelay;
  retryDelay = Math.min(retryDelay * 2, RETRY_MAX);
}

function retry() {
  retryTimer = null;
  if (!ports.size) {
    closeAll();
    return;
  }
  if (active && !active.es) {
    const watch = unionOf(ports.values());
    active = open(watch, urlOf(watch), lastId);
    active.errored = true;      // its hello goes to every port, with resync
    setState("connecting");
  } else {
    recompute();
  }
}

/** A connection open but silent for long is dead (pings come every 15 s). */
function watchdog() {
  if (!active || !active.es || active.es.readyState !== 1) return;
  if (Date.now() - active.lastMessage <= SILENT_MS) return;
  active.es.close();
  active.es = null;
  active.errored = true;
  if (pending) {
    pending.es.close();
    pending = null;
  }
  clearTimeout(retryTimer);
  retryDelay = RETRY_MIN;
  retry();
}

function onEvent(c, type, e) {
  if (c !== active && c !== pending) return;
  c.lastMessage = Date.now();
  let data;
  try {
    data = JSON.parse(e.data);
  } catch {
    return;
  }
  const id = e.lastEventId || null;
  if (type === "hello") {
    if (id) lastId = id;
    hello(c, data, id);
    return;
  }
  if (c !== active) return;       // (nothing comes before hello)
  if (id) lastId = id;
  if (state !== "open") setState("open");
  if (c.replay) {
    // right after a hello come the rows missed since `last`: the old connection may have
    // brought some of them already
    c.replay = false;
    if (type === "events" && Array.isArray(data)) {
      data = data.filter((r) => !(r && typeof r.cursor === "string" && recent.has(r.cursor)));
      if (!data.length) return;
    }
  }
  route(type, data, id);
}

function hello(c, data, id) {
  const h = data && typeof data === "object" ? data : {};
  let before = null, everyone = false;
  if (c === pending) {
    const old = active;
    active = c;
    pending = null;
    if (old && old.es) old.es.close();
    everyone = !!(old && old.errored);
    before = old ? old.watch : null;
  } else {
    // the first connection, or the one in use back after an error or a server restart
    everyone = c.errored || c.greeted;
  }
  c.errored = false;
  c.greeted = true;
  c.replay = true;
  retryDelay = RETRY_MIN;
  for (const r of [...ports.values()]) {
    // (a port whose interest changed since this connection was opened waits for the next)
    const fits = covers(c.watch, r.interest, true);
    let resync;
    if (everyone) {
      resync = true;
    } else {
      if (r.served !== null || !fits) continue;
      resync = r.revived || (!!h.resync && !(before && covers(before, r.interest, false)));
    }
    if (fits) {
      r.served = c.watch;
      r.revived = false;
    }
    deliver(r, { type: "message", event: "hello", data: { ...h, resync }, id });
  }
  setState("open");
}

function rememberRows(rows) {
  for (const r of rows) if (r && typeof r.cursor === "string") recent.add(r.cursor);
  if (recent.size > RECENT_MAX) {
    let n = recent.size - RECENT_MAX / 2;
    for (const k of recent) {
      if (n-- <= 0) break;
      recent.delete(k);
    }
  }
}

function route(type, data, id) {
  const send = (r, d) => deliver(r, { type: "message", event: type, data: d, id });
  switch (type) {
    case "overview":
      for (const r of ports.values()) send(r, data);
      break;
    case "tasks":
      if (!data || typeof data !== "object") return;
      for (const r of ports.values()) if (r.interest.workflow !== null && r.interest.workflow === data.workflow) send(r, data);
      break;
    case "log":
      if (!data || typeof data !== "object") return;
      for (const r of ports.values()) {
        const i = r.interest;
        if (i.workflow !== null && i.task !== null && i.workflow === data.workflow && i.task === data.task) send(r, data);
      }
      break;
    case "events": {
      if (!Array.isArray(data)) return;
      rememberRows(data);
      const byWorkflow = new Map();
      for (const r of ports.values()) {
        const i = r.interest;
        if (i.events) {
          send(r, data);
        } else if (i.workflow !== null) {
          // a workflow's page takes the rows about no one task and those of its open task
          const key = i.workflow + "\u0000" + (i.task ?? "");
          let rows = byWorkflow.get(key);
          if (!rows) {
            rows = data.filter((row) => row && row.workflow === i.workflow && (row.task == null || row.task === i.task));
            byWorkflow.set(key, rows);
          }
          if (rows.length) send(r, rows);
        }
      }
      break;
    }
    default:
      break;   // ping: nobody
  }
}

// ───────────────────────────── start ─────────────────────────────

self.onconnect = (e) => {
  for (const port of e.ports) addPort(port);
};

setInterval(sweep, SWEEP_MS);
setInterval(watchdog, 10000);
