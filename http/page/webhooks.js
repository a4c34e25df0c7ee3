// The Webhooks section of the settings page: the org's endpoints, their
// recent deliveries, and the one-time display of a signing secret. It runs
// after app.js and uses its helpers ($, api, fmt, who, cell, button,
// openDialog, showError). Every value from the API is rendered as text
// (textContent, value), never as HTML.
"use strict";

const whBase = () => `/v1/orgs/${encodeURIComponent(org)}/webhooks`;
const whPath = (w, rest) => `${whBase()}/${encodeURIComponent(w.id)}${rest || ""}`;

let webhooks = [];
let whRendered = "";
let whRun = 0;
let whTarget = null; // the endpoint a dialog acts on
let whOpen = null; // the endpoint whose deliveries are shown
let whLater = null;

// loadWebhooks shows the section: hidden when the service has webhooks
// off (the routes answer 404), a notice when this sign-in may not manage
// them (403), the endpoints otherwise.
async function loadWebhooks() {
  const run = ++whRun;
  try {
    const data = await api("GET", whBase(), undefined, { ownForbidden: true });
    if (run !== whRun) return;
    webhooks = data.webhooks;
    whShow(true);
    if ($("wh-error").dataset.from === "load") $("wh-error").hidden = true;
    renderWebhooks();
    const open = webhooks.find((w) => w.id === whOpen);
    if (!open) closeDeliveries();
    else {
      // A key event has just happened, or an endpoint changed: its
      // delivery follows shortly.
      $("wh-deliveries-url").textContent = open.url;
      clearTimeout(whLater);
      whLater = setTimeout(refreshDeliveries, 1000);
    }
  } catch (err) {
    if (run !== whRun) return;
    if (err.status === 404) {
      $("webhooks").hidden = true;
      $("webhooks").dataset.state = "off";
      return;
    }
    if (err.status === 401) return;
    if (err.status === 403) {
      whShow(false, err.message);
      return;
    }
    whShow(true);
    whError(err, "load");
  }
}

function whShow(may, why) {
  if ($("keys").hidden) return; // signed out meanwhile
  $("webhooks").hidden = false;
  $("webhooks").dataset.state = may ? "on" : "forbidden";
  $("wh-forbidden").hidden = may;
  $("wh-forbidden-why").textContent = may ? "" : why;
  $("wh-add").hidden = !may;
  $("wh-table").hidden = !may;
  if (!may) {
    webhooks = [];
    whRendered = "";
    $("wh-rows").replaceChildren();
    $("wh-empty").hidden = true;
    closeDeliveries();
  }
}

function whError(err, from) {
  showError($("wh-error"), err);
  $("wh-error").dataset.from = from || "";
}

function whNote(text, cls) {
  const el = $("wh-status");
  el.textContent = text;
  el.className = "notice" + (cls ? " " + cls : "");
  el.hidden = !text;
}

function pill(text, cls) {
  const p = document.createElement("span");
  p.className = "status " + cls;
  p.textContent = text;
  return p;
}

function sub(text, cls) {
  const s = document.createElement("span");
  s.className = "sub" + (cls ? " " + cls : "");
  s.textContent = text;
  return s;
}

function renderWebhooks() {
  // Re-render only on a change: keeps focus and the rows a user points at.
  const sig = JSON.stringify(webhooks);
  if (sig === whRendered) return;
  whRendered = sig;
  const rows = $("wh-rows");
  rows.replaceChildren();
  for (const w of webhooks) {
    const tr = document.createElement("tr");
    tr.dataset.webhookId = w.id;
    const ep = cell(tr, "Endpoint", undefined, "name url");
    const url = document.createElement("span");
    url.className = "mono";
    url.textContent = w.url;
    ep.appendChild(url);
    if (w.description) ep.appendChild(sub(w.description, "description"));
    ep.appendChild(sub("added " + fmt(w.created_at) + " by " + who(w.created_by)));
    cell(tr, "Events", w.event_types.join(", "), "events");
    const sec = cell(tr, "Signing secret", w.secret_masked, "mono secret-masked");
    if (w.previous_secret_expires_at) sec.appendChild(sub("the previous secret signs too until " + fmt(w.previous_secret_expires_at)));
    const st = cell(tr, "Status");
    st.appendChild(pill(w.status, w.status));
    if (w.status === "disabled") st.appendChild(sub(w.disabled_reason ? "Why: " + w.disabled_reason : "No reason given.", "why"));
    const box = document.createElement("div");
    box.className = "row-actions";
    box.appendChild(button("Deliveries", () => showDeliveries(w), "wh-deliveries"));
    box.appendChild(button("Send test", (ev) => sendTest(w, ev.currentTarget), "wh-test"));
    if (w.status === "enabled") box.appendChild(button("Disable", () => openDisable(w), "wh-disable"));
    else box.appendChild(button("Enable", (ev) => enableWebhook(w, ev.currentTarget), "wh-enable"));
    box.appendChild(button("Rotate secret", () => openRotateSecret(w), "wh-rotate"));
    box.appendChild(button("Delete", () => openDeleteWebhook(w), "wh-delete"));
    cell(tr, "Actions").appendChild(box);
    rows.appendChild(tr);
  }
  $("wh-empty").hidden = webhooks.length > 0;
}

const results = {
  succeeded: "succeeded",
  failed: "failed, to be retried",
  gave_up: "failed, and will not be retried",
  disabled: "answered 410 Gone, which disabled the endpoint",
  refused: "refused: the address is not one deliveries may reach",
};

function outcome(a) {
  return (results[a.result] || a.result) + (a.response_code ? " (HTTP " + a.response_code + ")" : "") +
    " in " + a.duration_ms + " ms" + (a.error ? ": " + a.error : "");
}

async function sendTest(w, b) {
  b.disabled = true;
  $("wh-error").hidden = true;
  whNote("Sending a test event to " + w.url + "…");
  try {
    const a = await api("POST", whPath(w, "/test"));
    whNote("Test event to " + w.url + ": " + outcome(a) + ".", a.result === "succeeded" ? "ok" : "bad");
    showDeliveries(w);
  } catch (err) {
    whNote("");
    whError(err);
  } finally {
    b.disabled = false;
  }
}

async function enableWebhook(w, b) {
  b.disabled = true;
  $("wh-error").hidden = true;
  try {
    await api("POST", whPath(w, "/enable"));
    whNote("Enabled " + w.url + ": it is sent the events it missed, then each as it happens.");
    loadWebhooks();
  } catch (err) {
    b.disabled = false;
    whError(err);
  }
}

// The deliveries panel: the endpoint's recent attempts, newest first.
let deliveriesRun = 0;

function showDeliveries(w) {
  whOpen = w.id;
  $("wh-deliveries").dataset.webhookId = w.id;
  $("wh-deliveries-url").textContent = w.url;
  $("wh-deliveries").hidden = false;
  refreshDeliveries();
}

function closeDeliveries() {
  whOpen = null;
  deliveriesRun++;
  clearTimeout(whLater);
  $("wh-deliveries").hidden = true;
  $("wh-deliveries-rows").replaceChildren();
}

async function refreshDeliveries() {
  const id = whOpen;
  if (!id) return;
  const run = ++deliveriesRun;
  try {
    const data = await api("GET", whPath({ id }, "/deliveries?limit=50"), undefined, { ownForbidden: true });
    if (run !== deliveriesRun) return;
    $("wh-deliveries-error").hidden = true;
    renderDeliveries(id, data.deliveries);
  } catch (err) {
    if (run === deliveriesRun) showError($("wh-deliveries-error"), err);
  }
}

function renderDeliveries(id, list) {
  const rows = $("wh-deliveries-rows");
  rows.replaceChildren();
  for (const a of list) {
    const tr = document.createElement("tr");
    tr.dataset.attemptId = a.id;
    tr.dataset.eventType = a.event_type;
    tr.dataset.result = a.result;
    const when = document.createElement("time");
    when.dateTime = a.at;
    when.textContent = fmt(a.at);
    cell(tr, "Time").appendChild(when);
    const ev = cell(tr, "Event", a.event_type, "event-type");
    if (a.manual) ev.appendChild(sub(a.seq ? "sent again on request" : "test event"));
    else if (a.attempt > 1) ev.appendChild(sub("attempt " + a.attempt));
    const res = cell(tr, "Result");
    res.appendChild(pill(a.result.replace("_", " "), "result " + a.result));
    if (a.next_attempt_at) res.appendChild(sub("next try " + fmt(a.next_attempt_at)));
    cell(tr, "Code", a.response_code ? String(a.response_code) : "—", "code");
    cell(tr, "Duration", a.duration_ms + " ms", "duration");
    const said = a.error || a.response || "";
    const resp = cell(tr, "Response", said.length > 120 ? said.slice(0, 120) + "…" : said, "mono response");
    if (said.length > 120) resp.title = said;
    const act = cell(tr, "Actions");
    if (a.seq) act.appendChild(button("Redeliver", (e) => redeliver(id, a, e.currentTarget), "wh-redeliver"));
    rows.appendChild(tr);
  }
  $("wh-deliveries-empty").hidden = list.length > 0;
}

async function redeliver(id, a, b) {
  b.disabled = true;
  try {
    const again = await api("POST", whPath({ id }, "/deliveries/" + encodeURIComponent(a.id) + "/redeliver"));
    whNote("Sent " + a.event_type + " again: " + outcome(again) + ".", again.result === "succeeded" ? "ok" : "bad");
    refreshDeliveries();
  } catch (err) {
    b.disabled = false;
    showError($("wh-deliveries-error"), err);
  }
}

$("wh-deliveries-refresh").addEventListener("click", refreshDeliveries);
$("wh-deliveries-close").addEventListener("click", closeDeliveries);

// Add an endpoint.
$("wh-add").addEventListener("click", () => {
  $("wh-create-form").reset();
  openDialog($("wh-create-dialog"));
  $("wh-url").focus();
});

$("wh-create-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const body = { url: $("wh-url").value.trim() };
  const description = $("wh-description").value.trim();
  if (description) body.description = description;
  const types = new FormData($("wh-create-form")).getAll("event_types");
  if (types.length) body.event_types = types;
  try {
    const out = await api("POST", whBase(), body);
    $("wh-create-dialog").close();
    showWebhookSecret(out.webhook, out.secret, "");
  } catch (err) {
    showError($("wh-create-error"), err);
  }
});

// The URL may hold a token: it leaves the page with the dialog, however
// the dialog closes (added, cancelled, Esc).
$("wh-create-dialog").addEventListener("close", () => $("wh-create-form").reset());

// The one-time display of a signing secret. Closing it removes the value
// from the page: afterwards only the masked form exists anywhere in the DOM.
function showWebhookSecret(w, secret, note) {
  $("wh-secret-url").textContent = w.url;
  $("wh-secret-value").value = secret;
  $("wh-copy-status").textContent = "";
  $("wh-secret-grace").textContent = note;
  $("wh-secret-grace").hidden = !note;
  openDialog($("wh-secret-dialog"));
  $("wh-secret-value").select();
}

function forgetWebhookSecret() {
  $("wh-secret-value").value = "";
  $("wh-secret-url").textContent = "";
  $("wh-copy-status").textContent = "";
}

// The button forgets the secret at once; "close" (also Esc) comes later.
$("wh-secret-dialog").querySelector("form").addEventListener("submit", forgetWebhookSecret);
$("wh-secret-dialog").addEventListener("close", () => {
  forgetWebhookSecret();
  loadWebhooks();
});

$("wh-copy").addEventListener("click", async () => {
  const input = $("wh-secret-value");
  try {
    await navigator.clipboard.writeText(input.value);
  } catch {
    input.select();
    document.execCommand("copy");
  }
  $("wh-copy-status").textContent = "Copied to the clipboard.";
});

// Rotate the signing secret.
function openRotateSecret(w) {
  whTarget = w;
  $("wh-rotate-url").textContent = w.url;
  $("wh-rotate-form").reset();
  openDialog($("wh-rotate-dialog"));
}

$("wh-rotate-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const grace = Number(new FormData($("wh-rotate-form")).get("grace"));
  try {
    const out = await api("POST", whPath(whTarget, "/rotate-secret"), { grace_period_seconds: grace });
    $("wh-rotate-dialog").close();
    const until = out.webhook.previous_secret_expires_at;
    showWebhookSecret(out.webhook, out.secret, until ? "The previous secret signs every delivery too until " + fmt(until) + "." : "The previous secret stopped signing at once.");
  } catch (err) {
    showError($("wh-rotate-error"), err);
  }
});

// Disable, with a reason the list shows.
function openDisable(w) {
  whTarget = w;
  $("wh-disable-url").textContent = w.url;
  $("wh-disable-form").reset();
  openDialog($("wh-disable-dialog"));
  $("wh-disable-reason").focus();
}

$("wh-disable-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  try {
    await api("POST", whPath(whTarget, "/disable"), { reason: $("wh-disable-reason").value.trim() });
    $("wh-disable-dialog").close();
    whNote("Disabled " + whTarget.url + ": nothing is sent to it until it is enabled.");
    loadWebhooks();
  } catch (err) {
    showError($("wh-disable-error"), err);
  }
});

// Delete, after a confirmation.
function openDeleteWebhook(w) {
  whTarget = w;
  $("wh-delete-url").textContent = w.url;
  openDialog($("wh-delete-dialog"));
}

$("wh-delete-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  try {
    await api("DELETE", whPath(whTarget));
    $("wh-delete-dialog").close();
    if (whOpen === whTarget.id) closeDeliveries();
    whNote("Deleted " + whTarget.url + ".");
    loadWebhooks();
  } catch (err) {
    showError($("wh-delete-error"), err);
  }
});
