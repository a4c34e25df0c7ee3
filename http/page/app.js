// keyledger's "Settings → API" page. Every value from the API is rendered
// as text (textContent, value), never as HTML.
"use strict";

const org = decodeURIComponent(location.pathname.split("/")[1] || "");
const storageKey = "keyledger.credential";
const $ = (id) => document.getElementById(id);
let keys = [];
let following = null;
// The session of a person signed in with the identity provider, when the
// service offers sign-in (GET /v1/session): null without one, or when a
// pasted key (the break-glass way in) is in use.
let sso = null; // {signed_in, name, email, manages, member_of, csrf_token} or {signed_in: false}

function credential() { return sessionStorage.getItem(storageKey) || ""; }

// authHeaders: a pasted key goes as a bearer credential; otherwise the
// session cookie goes by itself, and a change carries the CSRF token.
function authHeaders(method) {
  if (credential()) return { "Authorization": "Bearer " + credential() };
  const h = {};
  if (sso && sso.signed_in && method !== "GET") h["X-CSRF-Token"] = sso.csrf_token;
  return h;
}

class APIError extends Error {
  constructor(status, code, message) { super(message); this.status = status; this.code = code; }
}

// api calls the service. A GET answered 403 shows the manager-only
// message, unless opts.ownForbidden: a section that a manager may still be
// refused (webhooks) says so itself.
async function api(method, path, body, opts = {}) {
  const headers = authHeaders(method);
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: "no-store", credentials: "same-origin" });
  if (res.status === 204) return null;
  const data = await res.json().catch(() => ({}));
  if (!res.ok) {
    const e = data.error || {};
    const err = new APIError(res.status, e.code || "", e.message || res.statusText);
    if (res.status === 401) {
      if (!credential() && sso) sso = { signed_in: false };
      signIn("Your sign-in is not valid any more (" + err.message + "). Sign in again.");
    }
    if (res.status === 403 && e.code === "forbidden" && method === "GET" && !opts.ownForbidden) show("forbidden");
    throw err;
  }
  return data;
}

function show(which) {
  for (const id of ["signin", "forbidden", "keys"]) $(id).hidden = id !== which;
  if (which !== "keys") $("webhooks").hidden = true;
  $("sign-out").hidden = which === "signin";
  const person = !credential() && sso && sso.signed_in;
  $("who").hidden = !person || which === "signin";
  $("org-switch-label").hidden = !person || which === "signin" || sso.manages.length === 0;
}

// signIn offers the way in: the identity provider first when the service
// has one, a pasted management key behind it (or alone).
function signIn(reason) {
  sessionStorage.removeItem(storageKey);
  stopFollowing();
  const withSSO = sso !== null;
  $("sso").hidden = !withSSO;
  $("sso-link").href = "/auth/login?next=" + encodeURIComponent(location.pathname);
  $("break-glass").hidden = !withSSO;
  $("signin-form").hidden = withSSO;
  $("signin-reason").textContent = reason || (withSSO ? "Sign in with your company account to manage this organisation's keys." : "Paste a management key of this organisation, or an access token of a manager.");
  show("signin");
  $("credential").value = "";
  if (!withSSO) $("credential").focus();
}

// signedIn shows who is signed in, the orgs they manage (to switch
// between), and the manager-only message where they only belong.
function signedIn() {
  $("who").textContent = sso.name + (sso.email && sso.email !== sso.name ? " · " + sso.email : "");
  const sw = $("org-switch");
  sw.replaceChildren();
  const orgs = sso.manages.includes(org) ? sso.manages : [org, ...sso.manages];
  for (const o of orgs) {
    const opt = document.createElement("option");
    opt.value = o;
    opt.textContent = o;
    opt.selected = o === org;
    sw.appendChild(opt);
  }
  if (!sso.manages.includes(org)) {
    const member = sso.member_of.includes(org);
    $("forbidden-member").textContent = (member ? "You are a member of " + org + ", not a manager." : "You are signed in as " + (sso.email || sso.name) + ", who is not a manager of " + org + ".") +
      (sso.manages.length ? " You manage: " + sso.manages.join(", ") + "." : "");
    $("forbidden-member").hidden = false;
    show("forbidden");
    return;
  }
  load();
}

async function signOut() {
  stopFollowing();
  if (credential() || !sso || !sso.signed_in) { signIn("Signed out."); return; }
  const res = await fetch("/auth/logout", { method: "POST", headers: { "X-CSRF-Token": sso.csrf_token, "Accept": "application/json" }, credentials: "same-origin" });
  const data = await res.json().catch(() => ({}));
  sso = { signed_in: false };
  if (data.next) { location.assign(data.next); return; }
  signIn("Signed out.");
}

const fmt = (iso) => iso ? new Date(iso).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" }) : "";
const who = (actor) => actor ? (actor.name || actor.id) + (actor.kind === "key" ? " (key)" : actor.kind === "system" ? " (system)" : "") : "";

function cell(row, label, text, cls) {
  const td = document.createElement("td");
  td.dataset.label = label;
  if (cls) td.className = cls;
  if (text !== undefined) td.textContent = text;
  row.appendChild(td);
  return td;
}

function button(text, onClick, cls) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = text;
  if (cls) b.className = cls;
  b.addEventListener("click", onClick);
  return b;
}

// leakNote says that a key's secret was found where it should not be,
// and where: the revocation (or, with --leak-action notify, the warning)
// has a reason a manager can follow.
function leakNote(k) {
  const note = document.createElement("span");
  note.className = "sub leak";
  note.textContent = (k.status === "revoked" ? "Revoked: leaked" : "Reported leaked") + " on " + fmt(k.leak.reported_at) + (k.leak.url ? ", found at " : "");
  if (k.leak.url) {
    const a = document.createElement(/^https?:\/\//.test(k.leak.url) ? "a" : "span");
    if (a.tagName === "A") {
      a.href = k.leak.url;
      a.rel = "noopener noreferrer";
      a.target = "_blank";
    }
    a.textContent = k.leak.url;
    note.appendChild(a);
  }
  return note;
}

let rendered = "";

function render() {
  // Re-render only on a change: keeps focus and the rows a user points at.
  const sig = JSON.stringify(keys);
  if (sig === rendered) return;
  rendered = sig;
  const rows = $("rows");
  rows.replaceChildren();
  for (const k of keys) {
    const tr = document.createElement("tr");
    tr.dataset.keyId = k.id;
    cell(tr, "Name", k.name, "name");
    cell(tr, "Key", k.masked, "mono masked");
    const created = cell(tr, "Created", fmt(k.created_at));
    const by = document.createElement("span");
    by.className = "sub";
    by.textContent = "by " + who(k.created_by);
    created.appendChild(by);
    cell(tr, "Last used", k.last_used_at ? fmt(k.last_used_at) : "Never");
    cell(tr, "Last 24 hours", undefined, "usage");
    const st = cell(tr, "Status");
    const pill = document.createElement("span");
    pill.className = "status " + k.status;
    pill.textContent = k.status;
    st.appendChild(pill);
    if (k.leak) st.appendChild(leakNote(k));
    const actions = cell(tr, "Actions");
    const box = document.createElement("div");
    box.className = "row-actions";
    box.appendChild(button("History", () => openHistory(k), "history"));
    if (k.status === "active") box.appendChild(button("Rotate", () => openRotate(k), "rotate"));
    if (k.status !== "revoked") box.appendChild(button("Delete", () => openDelete(k), "delete"));
    actions.appendChild(box);
    rows.appendChild(tr);
    usageRow(tr, k); // usage.js
  }
  $("empty").hidden = keys.length > 0 || usageFilter() !== "";
  $("filter-empty").hidden = keys.length > 0 || usageFilter() === "";
}

let loadRun = 0;

async function load() {
  const run = ++loadRun;
  const all = $("show-revoked").checked || usageWantsAll() ? "?status=all&limit=1000" : "?limit=1000";
  try {
    const data = await api("GET", `/v1/orgs/${encodeURIComponent(org)}/keys${all}`);
    // A filter by use (usage.js) keeps the keys it matches.
    const list = await filterByUsage(data.keys);
    if (run !== loadRun) return; // a later load (a change, a filter) answers
    keys = list;
    $("error").hidden = true;
    show("keys");
    render();
    loadWebhooks();
    follow();
  } catch (err) {
    if (err.status !== 401 && err.status !== 403) showError($("error"), err);
  }
}

function showError(el, err) {
  el.textContent = err.message || String(err);
  el.hidden = false;
}

function openDialog(d) {
  d.querySelectorAll(".error").forEach((e) => { e.hidden = true; });
  d.showModal();
}

// The one-time display of a full key. Closing it removes the value from
// the page: afterwards only the masked form exists anywhere in the DOM.
function showSecret(name, secret) {
  $("secret-name").textContent = name;
  $("secret-value").value = secret;
  $("copy-status").textContent = "";
  openDialog($("secret-dialog"));
  $("secret-value").select();
}

function forgetSecret() {
  $("secret-value").value = "";
  $("secret-name").textContent = "";
  $("copy-status").textContent = "";
}

// The button forgets the key at once; "close" (also Esc) comes later.
$("secret-dialog").querySelector("form").addEventListener("submit", forgetSecret);
$("secret-dialog").addEventListener("close", () => {
  forgetSecret();
  load();
});

$("copy").addEventListener("click", async () => {
  const input = $("secret-value");
  try {
    await navigator.clipboard.writeText(input.value);
  } catch {
    input.select();
    document.execCommand("copy");
  }
  $("copy-status").textContent = "Copied to the clipboard.";
});

$("create").addEventListener("click", () => {
  $("create-form").reset();
  openDialog($("create-dialog"));
  $("key-name").focus();
});

$("create-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const body = { name: $("key-name").value };
  const days = $("key-expiry").value;
  if (days) body.expires_at = new Date(Date.now() + Number(days) * 86400000).toISOString();
  try {
    const out = await api("POST", `/v1/orgs/${encodeURIComponent(org)}/keys`, body);
    $("create-dialog").close();
    showSecret(out.key.name, out.secret);
  } catch (err) {
    showError($("create-error"), err);
  }
});

let target = null;

function openRotate(k) {
  target = k;
  $("rotate-name").textContent = k.name;
  $("rotate-form").reset();
  openDialog($("rotate-dialog"));
}

$("rotate-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const grace = Number(new FormData($("rotate-form")).get("grace"));
  try {
    const out = await api("POST", `/v1/orgs/${encodeURIComponent(org)}/keys/${encodeURIComponent(target.id)}/rotate`, { grace_period_seconds: grace });
    $("rotate-dialog").close();
    showSecret(out.key.name, out.secret);
  } catch (err) {
    showError($("rotate-error"), err);
  }
});

function openDelete(k) {
  target = k;
  $("delete-name").textContent = k.name;
  $("delete-last-used").textContent = k.last_used_at ? fmt(k.last_used_at) : "never";
  openDialog($("delete-dialog"));
  deleteUsage(k); // usage.js
}

$("delete-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  try {
    await api("DELETE", `/v1/orgs/${encodeURIComponent(org)}/keys/${encodeURIComponent(target.id)}`, { reason: "deleted on the settings page" });
    $("delete-dialog").close();
    load();
  } catch (err) {
    showError($("delete-error"), err);
  }
});

const what = { KeyCreated: "created the key", KeyRotated: "rotated the key", KeyRevoked: "deleted (revoked) the key", KeyLeakReported: "reported a secret of the key leaked" };

let historyRun = 0;

async function openHistory(k) {
  const run = ++historyRun;
  $("history-name").textContent = k.name;
  const list = $("history-list");
  const dialog = $("history-dialog");
  list.replaceChildren();
  openDialog(dialog);
  try {
    // The history comes in pages, oldest first: read them all, showing each
    // as it comes, until the dialog closes or another history opens.
    for (let after = 0, more = true; more && dialog.open && run === historyRun;) {
      const data = await api("GET", `/v1/orgs/${encodeURIComponent(org)}/keys/${encodeURIComponent(k.id)}/events?limit=1000&after_seq=${after}`);
      if (run !== historyRun) return;
      for (const e of data.events) list.appendChild(historyItem(e));
      after = data.next_after_seq;
      more = data.more;
    }
  } catch (err) {
    if (run !== historyRun) return;
    const li = document.createElement("li");
    li.className = "error";
    li.textContent = err.message;
    list.appendChild(li);
  }
}

function historyItem(e) {
  const li = document.createElement("li");
  const when = document.createElement("time");
  when.dateTime = e.occurred_at;
  when.textContent = fmt(e.occurred_at);
  li.append(when, " — " + who(e.actor) + " " + (what[e.type] || e.type));
  if (e.type === "KeyRotated" && e.data.previous_secret_expires_at) li.append(" (old value valid until " + fmt(e.data.previous_secret_expires_at) + ")");
  if (e.type === "KeyRevoked" && e.data.reason) li.append(": " + e.data.reason);
  if (e.type === "KeyLeakReported") li.append(" (" + e.data.masked + (e.data.url ? ", found at " + e.data.url : "") + ")");
  return li;
}

for (const b of document.querySelectorAll("dialog .cancel")) b.addEventListener("click", () => b.closest("dialog").close());

// Follow changes made elsewhere through the SSE feed, read with fetch
// (EventSource cannot send an Authorization header), resuming after the
// last event seen.
function stopFollowing() { if (following) following.abort(); following = null; }

async function follow() {
  if (following) return;
  const ctl = new AbortController();
  following = ctl;
  let lastId = "";
  let pending = null;
  while (following === ctl) {
    try {
      const headers = authHeaders("GET");
      if (lastId) headers["Last-Event-ID"] = lastId;
      const res = await fetch(`/v1/orgs/${encodeURIComponent(org)}/events/stream`, { headers, signal: ctl.signal });
      if (!res.ok) { stopFollowing(); return; }
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        let i;
        while ((i = buf.indexOf("\n\n")) >= 0) {
          const block = buf.slice(0, i);
          buf = buf.slice(i + 2);
          const id = block.split("\n").find((l) => l.startsWith("id: "));
          if (!id) continue;
          lastId = id.slice(4);
          clearTimeout(pending);
          pending = setTimeout(load, 150);
        }
      }
    } catch (err) {
      if (ctl.signal.aborted) return;
    }
    await new Promise((r) => setTimeout(r, 1000));
  }
}

$("signin-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  sessionStorage.setItem(storageKey, $("credential").value.trim());
  $("credential").value = "";
  load();
});
$("sign-out").addEventListener("click", signOut);
$("forbidden-signin").addEventListener("click", () => signIn());
$("show-revoked").addEventListener("change", load);
$("break-glass").addEventListener("click", () => {
  $("break-glass").hidden = true;
  $("signin-form").hidden = false;
  $("credential").focus();
});
$("org-switch").addEventListener("change", (ev) => {
  location.assign("/" + encodeURIComponent(ev.target.value) + "/configuration/api-keys");
});

async function start() {
  try {
    const res = await fetch("/v1/session", { cache: "no-store", credentials: "same-origin" });
    if (res.ok) sso = await res.json();
  } catch { /* no sign-in offered */ }
  if (credential()) load();
  else if (sso && sso.signed_in) signedIn();
  else signIn();
}

$("org-name").textContent = org;
document.title = "API keys · " + org;
// After every deferred script has run: the sections in their own files
// (webhooks.js, usage.js) are ready when the first load calls them.
document.addEventListener("DOMContentLoaded", start);
