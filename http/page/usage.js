// The use of keys on the settings page: a 24-hour sparkline per key in the
// table, a key's detail view (a stacked chart of its outcomes over 24 hours,
// 7 days or 90 days, and its recent callers), what the Delete dialog says of
// the last 24 hours, and the filters by use. It runs after app.js and uses
// its helpers ($, api, org, keys, fmt, cell, openDialog, showError, load).
// Every number drawn is one GET …/usage answered, summed no other way than
// the API sums it. Every value from the API is rendered as text
// (textContent), never as HTML: a User-Agent is whatever a caller sent.
"use strict";

const svgNS = "http://www.w3.org/2000/svg";
// The outcome classes, bottom to top in a stacked bar.
const outcomes = ["valid", "deprecated", "expired", "revoked"];
const outcomeNames = {
  valid: "Valid",
  deprecated: "Deprecated (an old secret in its grace)",
  expired: "Expired (or an old secret past its grace)",
  revoked: "Revoked",
};
// The detail view's periods, each with the step it is drawn in.
const periods = { "24h": { step: "1h", name: "the last 24 hours" }, "7d": { step: "1h", name: "the last 7 days" }, "90d": { step: "1d", name: "the last 90 days" } };

const usagePath = (id, query) => `/v1/orgs/${encodeURIComponent(org)}/keys/${encodeURIComponent(id)}/usage${query}`;
const callTotal = (c) => c.valid + c.deprecated + c.expired + c.revoked; // replaced is a part of deprecated and expired
const calls = (n) => n === 1 ? "1 call" : n + " calls";
const describe = (c) => outcomes.map((o) => c[o] + " " + o).join(", ");
const callerName = (c) => (c.user_agent || "(no User-Agent)") + (c.service ? " [" + c.service + "]" : "") + " at " + (c.address || "an unknown address");

function svg(name, attrs) {
  const el = document.createElementNS(svgNS, name);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  return el;
}

function svgTitle(parent, text) {
  const t = svg("title");
  t.textContent = text;
  parent.appendChild(t);
}

// stack draws bucket b as rectangles of its outcomes, from bottom up, in
// the column at x of width w, scaled so that max calls fill height.
function stack(g, b, x, w, bottom, height, max) {
  let y = bottom;
  for (const o of outcomes) {
    if (!b[o]) continue;
    const h = b[o] / max * height;
    y -= h;
    g.appendChild(svg("rect", { class: "o-" + o, x: x.toFixed(2), y: y.toFixed(2), width: w.toFixed(2), height: h.toFixed(2), "data-class": o, "data-count": b[o] }));
  }
}

function countData(el, c) {
  for (const o of outcomes) el.dataset[o] = c[o];
  el.dataset.replaced = c.replaced;
}

// bucketLabel names a bucket by its start and the step, in local time.
function bucketLabel(start, step) {
  const d = new Date(start);
  if (step === "1d") return d.toLocaleDateString(undefined, { dateStyle: "medium" });
  const end = new Date(d.getTime() + (step === "1h" ? 3600000 : 60000));
  return d.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" }) + "–" + end.toLocaleTimeString(undefined, { timeStyle: "short" });
}

// sparkline is a key's last 24 hours, hour by hour, as small stacked bars.
function sparkline(u) {
  const w = 96, h = 24, n = u.buckets.length;
  const label = "Last 24 hours: " + calls(callTotal(u.totals)) + " (" + describe(u.totals) + ")";
  const s = svg("svg", { class: "spark", viewBox: `0 0 ${w} ${h}`, width: w, height: h, role: "img", "aria-label": label });
  countData(s, u.totals);
  svgTitle(s, label);
  s.appendChild(svg("line", { class: "base", x1: 0, y1: h - 0.5, x2: w, y2: h - 0.5 }));
  const max = Math.max(1, ...u.buckets.map(callTotal));
  const slot = w / Math.max(1, n);
  u.buckets.forEach((b, i) => {
    const g = svg("g", { class: "col" });
    countData(g, b);
    svgTitle(g, bucketLabel(b.start, u.step) + ": " + calls(callTotal(b)) + " (" + describe(b) + ")");
    stack(g, b, i * slot + 0.5, Math.max(1, slot - 1), h - 1, h - 2, max);
    s.appendChild(g);
  });
  return s;
}

// niceMax rounds up to 1, 2 or 5 times a power of ten.
function niceMax(m) {
  if (m <= 1) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(m)));
  for (const f of [1, 2, 5, 10]) if (f * p >= m) return f * p;
  return 10 * p;
}

// chart is the detail view's stacked bar chart: one bar per bucket, each
// with a title and a label that say its numbers (readable without colour).
function chart(u) {
  const W = 720, H = 220, L = 40, R = 8, T = 10, B = 24;
  const pw = W - L - R, ph = H - T - B, n = u.buckets.length, slot = pw / Math.max(1, n);
  const max = niceMax(Math.max(0, ...u.buckets.map(callTotal)));
  const s = svg("svg", { class: "chart-svg", viewBox: `0 0 ${W} ${H}`, role: "group", "aria-label": "Calls by outcome, " + periods[u.window].name + ", by " + (u.step === "1d" ? "day" : "hour") });
  countData(s, u.totals);
  for (const v of max % 2 ? [0, max] : [0, max / 2, max]) {
    const y = T + ph - v / max * ph;
    s.appendChild(svg("line", { class: "grid", x1: L, y1: y, x2: W - R, y2: y }));
    const t = svg("text", { x: L - 6, y: y + 4, "text-anchor": "end" });
    t.textContent = String(v);
    s.appendChild(t);
  }
  const gap = n > 100 ? 0.2 : Math.min(2, slot * 0.2);
  u.buckets.forEach((b, i) => {
    const label = bucketLabel(b.start, u.step) + ": " + calls(callTotal(b)) + " (" + describe(b) + (b.replaced ? "; " + b.replaced + " with an old secret" : "") + ")";
    const g = svg("g", { class: "bar", role: "img", "aria-label": label, "data-start": b.start });
    countData(g, b);
    svgTitle(g, label);
    g.appendChild(svg("rect", { class: "hit", x: (L + i * slot).toFixed(2), y: T, width: slot.toFixed(2), height: ph }));
    stack(g, b, L + i * slot + gap / 2, Math.max(0.5, slot - gap), T + ph, ph, max);
    s.appendChild(g);
  });
  const fmtAxis = (iso) => new Date(iso).toLocaleString(undefined, u.window === "24h" ? { timeStyle: "short" } : { month: "short", day: "numeric" });
  for (const [i, anchor] of [[0, "start"], [Math.floor(n / 2), "middle"], [n - 1, "end"]]) {
    if (!u.buckets[i]) continue;
    const x = anchor === "start" ? L : anchor === "end" ? W - R : L + (i + 0.5) * slot;
    const t = svg("text", { x, y: H - 6, "text-anchor": anchor });
    t.textContent = fmtAxis(u.buckets[i].start);
    s.appendChild(t);
  }
  return s;
}

// oldSecretNote says how many calls presented a secret a rotation
// replaced, and which callers last did: those still to be moved over.
function oldSecretNote(k, u, span) {
  const t = u.totals;
  if (!t.replaced) return "";
  const parts = [];
  if (t.deprecated) parts.push(t.deprecated + " in its grace period");
  if (t.replaced > t.deprecated) parts.push(t.replaced - t.deprecated + " after its grace ended");
  // Expired is an old secret's only while the key itself has not ended.
  const from = u.callers.filter((c) => c.last_outcome === "deprecated" || (c.last_outcome === "expired" && k.status === "active"));
  const names = from.slice(0, 3).map(callerName).join("; ") + (from.length > 3 ? "; and " + (from.length - 3) + " more" : "");
  return "Old secret still in use: " + calls(t.replaced) + " " + span + " (" + parts.join(", ") + "), " +
    (from.length ? "from " + names : "though no recent caller's last call used it");
}

// The sparklines: read for the rows in view, four at a time, kept for
// sparkTTL, so that a table of a thousand keys asks for what is seen.
const sparkTTL = 30000;
const sparks = new Map(); // key id → {at, data} or {at, error}
const sparkQueue = [];
let sparkBusy = 0;

const sparkView = new IntersectionObserver((entries) => {
  for (const e of entries) {
    if (!e.isIntersecting) continue;
    sparkView.unobserve(e.target);
    wantSpark(e.target.dataset.keyId);
  }
}, { rootMargin: "200px" });

function wantSpark(id) {
  const c = sparks.get(id);
  if ((c && Date.now() - c.at < sparkTTL) || sparkQueue.includes(id)) return;
  sparkQueue.push(id);
  pumpSparks();
}

function pumpSparks() {
  while (sparkBusy < 4 && sparkQueue.length) {
    const id = sparkQueue.shift();
    sparkBusy++;
    api("GET", usagePath(id, "?window=24h&step=1h"))
      .then((data) => sparks.set(id, { at: Date.now(), data }))
      .catch((err) => sparks.set(id, { at: Date.now(), error: err.message }))
      .finally(() => {
        sparkBusy--;
        const tr = $("rows").querySelector(`tr[data-key-id="${CSS.escape(id)}"]`);
        if (tr) paintUsage(tr);
        pumpSparks();
      });
  }
}

// usageRow adds to a row of the table its sparkline, which opens the
// key's detail, and its notes; the sparkline comes when the row is in view.
function usageRow(tr, k) {
  if (k.usage30d) {
    const t = k.usage30d;
    const note = document.createElement("span");
    note.className = "sub filter-note";
    if (usageFilter() === "revoked") note.textContent = "Revoked, and presented " + calls(t.revoked) + " in the last 30 days";
    else if (usageFilter() === "replaced") note.textContent = "Old secret presented " + calls(t.replaced) + " in the last 30 days";
    else note.textContent = "No valid use in 30 days";
    tr.querySelector('td[data-label="Status"]').appendChild(note);
  }
  paintUsage(tr);
  sparkView.observe(tr);
}

function paintUsage(tr) {
  const id = tr.dataset.keyId;
  const k = keys.find((x) => x.id === id);
  const entry = sparks.get(id);
  const td = tr.querySelector("td.usage");
  if (!k || !td) return;
  tr.querySelectorAll(".old-secret, .presented").forEach((e) => e.remove());
  if (!entry) {
    td.textContent = "…";
    return;
  }
  td.replaceChildren();
  if (entry.error) {
    const e = document.createElement("span");
    e.className = "hint";
    e.textContent = "unavailable: " + entry.error;
    td.appendChild(e);
    return;
  }
  const u = entry.data;
  const b = document.createElement("button");
  b.type = "button";
  b.className = "spark-button usage-open";
  b.title = "Usage of " + k.name + ": the chart and the callers";
  b.addEventListener("click", () => openUsage(k));
  const total = document.createElement("span");
  total.className = "spark-total";
  total.textContent = calls(callTotal(u.totals));
  b.append(sparkline(u), total);
  td.appendChild(b);
  const old = oldSecretNote(k, u, "in 24 h");
  if (old) td.appendChild(note("old-secret", old));
  if (u.totals.revoked) td.appendChild(note("presented", "Presented after its revocation: " + calls(u.totals.revoked) + " in 24 h"));
}

function note(cls, text) {
  const n = document.createElement("span");
  n.className = "sub " + cls;
  n.textContent = text;
  return n;
}

// Refresh the sparklines in view now and then: a use is not an event, so
// the feed the page follows does not tell of it.
setInterval(() => {
  if (!$("keys").hidden) for (const tr of $("rows").rows) sparkView.observe(tr);
}, 60000);

// The detail view of a key.
let usageKey = null;
let usageRun = 0;

function openUsage(k) {
  usageKey = k;
  $("usage-name").textContent = k.name;
  $("usage-masked").textContent = k.masked;
  $("usage-chart").replaceChildren();
  $("usage-callers").replaceChildren();
  openDialog($("usage-dialog"));
  showPeriod("24h");
}

async function showPeriod(win) {
  const run = ++usageRun;
  for (const b of $("usage-switch").querySelectorAll("button")) b.setAttribute("aria-pressed", String(b.dataset.window === win));
  $("usage-chart").dataset.window = "";
  $("usage-chart").setAttribute("aria-busy", "true");
  try {
    const u = await api("GET", usagePath(usageKey.id, `?window=${win}&step=${periods[win].step}`));
    if (run !== usageRun) return;
    $("usage-error").hidden = true;
    renderDetail(usageKey, u);
    $("usage-chart").dataset.window = win;
  } catch (err) {
    if (run !== usageRun) return;
    showError($("usage-error"), err);
  } finally {
    if (run === usageRun) $("usage-chart").removeAttribute("aria-busy");
  }
}

function renderDetail(k, u) {
  const span = periods[u.window].name;
  $("usage-summary").textContent = "In " + span + ": " + calls(callTotal(u.totals)) + ".";
  const legend = $("usage-legend");
  legend.replaceChildren();
  for (const o of outcomes) {
    const li = document.createElement("li");
    li.dataset.class = o;
    const sw = document.createElement("span");
    sw.className = "swatch o-" + o;
    const n = document.createElement("strong");
    n.textContent = String(u.totals[o]);
    li.append(sw, outcomeNames[o] + ": ", n);
    legend.appendChild(li);
  }
  $("usage-chart").replaceChildren(chart(u));
  const old = oldSecretNote(k, u, "in " + span);
  $("usage-old").textContent = old;
  $("usage-old").hidden = !old;
  const rows = $("usage-callers");
  rows.replaceChildren();
  for (const c of u.callers) {
    const tr = document.createElement("tr");
    const ua = cell(tr, "Caller", c.user_agent || "(no User-Agent)", "ua");
    if (c.service) ua.appendChild(note("service", "service " + c.service));
    cell(tr, "Address", c.address, "mono");
    cell(tr, "Calls", String(c.count));
    cell(tr, "First seen", fmt(c.first_seen));
    cell(tr, "Last seen", fmt(c.last_seen));
    const last = cell(tr, "Last outcome");
    const pill = document.createElement("span");
    pill.className = "status " + c.last_outcome;
    pill.textContent = c.last_outcome;
    last.appendChild(pill);
    rows.appendChild(tr);
  }
  $("usage-no-callers").hidden = u.callers.length > 0;
}

for (const b of $("usage-switch").querySelectorAll("button")) b.addEventListener("click", () => showPeriod(b.dataset.window));
$("usage-dialog").addEventListener("close", () => { usageRun++; usageKey = null; });

// deleteUsage fills the Delete dialog with the key's last 24 hours: how
// many calls, and the callers seen in them.
let deleteRun = 0;

async function deleteUsage(k) {
  const run = ++deleteRun;
  const box = $("delete-usage");
  box.dataset.state = "loading";
  box.textContent = "Reading its use in the last 24 hours…";
  $("delete-callers").replaceChildren();
  try {
    const u = await api("GET", usagePath(k.id, "?window=24h&step=1h"));
    if (run !== deleteRun) return;
    const n = callTotal(u.totals);
    const since = Date.parse(u.buckets[0].start);
    const recent = u.callers.filter((c) => Date.parse(c.last_seen) >= since);
    box.textContent = n === 0 ? "Not used in the last 24 hours." :
      "In the last 24 hours: " + calls(n) + " (" + describe(u.totals) + "), by " + (recent.length === 1 ? "1 caller" : recent.length + " callers") + (recent.length ? ":" : ".");
    for (const c of recent) {
      const li = document.createElement("li");
      li.textContent = callerName(c) + " — " + calls(c.count) + " since " + fmt(c.first_seen) + ", the last " + fmt(c.last_seen) + " (" + c.last_outcome + ")";
      $("delete-callers").appendChild(li);
    }
    box.dataset.state = "done";
  } catch (err) {
    if (run !== deleteRun) return;
    box.textContent = "Its use in the last 24 hours is unavailable: " + err.message;
    box.dataset.state = "failed";
  }
}

// The filters by use, answered by GET /v1/orgs/{org}/usage over 30 days.
const usageFilters = {
  unused: () => "status=" + ($("show-revoked").checked ? "all" : "active") + "&unused_since=30d",
  revoked: () => "status=revoked&presented=revoked",
  replaced: () => "status=all&presented=replaced",
};

const usageFilter = () => $("usage-filter").value;
// usageWantsAll: the filter may show revoked keys, so the table must list them.
const usageWantsAll = () => usageFilter() === "revoked" || usageFilter() === "replaced";

// filterByUsage keeps of list the keys the filter matches, each with its
// 30 days' totals (usage30d), reading every page of the answer.
async function filterByUsage(list) {
  const q = usageFilters[usageFilter()];
  if (!q) return list;
  const found = new Map();
  let cursor = "";
  for (let page = 0; page < 100; page++) {
    const data = await api("GET", `/v1/orgs/${encodeURIComponent(org)}/usage?window=30d&limit=1000&${q()}${cursor ? "&cursor=" + encodeURIComponent(cursor) : ""}`);
    for (const t of data.keys) found.set(t.key_id, t.totals);
    cursor = data.next_cursor;
    if (!cursor) break;
  }
  return list.filter((k) => found.has(k.id)).map((k) => ({ ...k, usage30d: found.get(k.id) }));
}

$("usage-filter").addEventListener("change", load);
