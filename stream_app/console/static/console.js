// fraudstream console: polls the JSON API and renders with textContent only (alerts are
// outside data: nothing received is ever parsed as HTML).
"use strict";

const ALERTS_EVERY_MS = 1000;
const FIGURES_EVERY_MS = 2000;
const DETAIL_EVERY_MS = 3000;

let csrf = null;
let listKey = "";
let selected = null;
let detailKey = "";

const $ = (id) => document.getElementById(id);

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = node.title = String(text);
  if (className) node.className = className;
  return node;
}

async function api(path, options) {
  const response = await fetch(path, Object.assign({ credentials: "same-origin" }, options));
  if (response.status === 401) { window.location.reload(); throw new Error("logged out"); }
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function num(value, digits) {
  return value === null || value === undefined ? null : Number(value).toLocaleString(
    "en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits });
}

function when(iso) {
  return iso.replace("T", " ").replace(/\.\d+/, "").replace("+00:00", "Z");
}

function scoreBadge(score, threshold) {
  const badge = el("span", num(score, 3), "score");
  if (score >= Math.max(threshold, 0.5)) badge.classList.add("high");
  return badge;
}

function outcomeBadge(outcome, short) {
  if (!outcome) return el("span", "open", "badge open");
  const by = outcome.analyst && !short ? " by " + outcome.analyst : "";
  return el("span", outcome.decision + by, "badge " + outcome.decision);
}

function setFigure(id, text, bad) {
  const node = $(id);
  node.textContent = text === null ? "n/a" : text;
  node.classList.toggle("na", text === null);
  node.classList.toggle("bad", Boolean(bad));
}

async function refreshFigures() {
  let data;
  try { data = await api("/api/metrics"); } catch (e) { return; }
  const f = data.figures;
  setFigure("f-throughput", f.events_per_s === null ? null : num(f.events_per_s, 0) + " /s");
  setFigure("f-lag", f.lag_records === null ? null : num(f.lag_records, 0));
  $("f-lag-detail").textContent = f.lag_partitions === null ? "records behind"
    : "records behind, " + f.lag_partitions + " partitions";
  setFigure("f-latency", f.latency_p50_ms === null ? null : latency(f.latency_p50_ms,
    f.latency_p99_ms));
  setFigure("f-event-lag", f.event_time_lag_s === null ? null : humanSeconds(f.event_time_lag_s));
  setFigure("f-alerts", f.alerts_per_minute === null ? null : num(f.alerts_per_minute, 1));
  setFigure("f-drift", f.score_psi === null ? null : num(f.score_psi, 3), f.score_psi > 0.25);
  $("f-drift-detail").textContent = f.feature_psi_max === null ? "score PSI"
    : "score PSI; top feature " + f.feature_psi_max.feature + " " + num(f.feature_psi_max.psi, 3);
  setFigure("f-model", f.model_version);
  $("f-model-detail").textContent = f.threshold === null ? "serving"
    : "threshold " + num(f.threshold, 3) + (f.policy ? " (" + f.policy + ")" : "");
  setFigure("f-worker", data.worker === "up" ? "up" : "down", data.worker !== "up");
  $("f-worker-detail").textContent = data.worker === "up"
    ? "DLQ " + (f.dlq_records === null ? "n/a" : num(f.dlq_records, 0)) : data.worker;
}

function latency(p50, p99) {
  if (p99 >= 1000) return num(p50 / 1000, 2) + " / " + num(p99 / 1000, 2) + " s";
  return num(p50, 0) + " / " + num(p99, 0) + " ms";
}

function humanSeconds(s) {
  if (Math.abs(s) < 120) return num(s, 1) + " s";
  if (Math.abs(s) < 7200) return num(s / 60, 1) + " min";
  if (Math.abs(s) < 172800) return num(s / 3600, 1) + " h";
  return num(s / 86400, 1) + " days";
}

function filterQuery() {
  const params = new URLSearchParams();
  for (const [name, value] of new FormData($("filters"))) {
    if (String(value).trim()) params.set(name, String(value).trim());
  }
  return params.toString();
}

async function refreshAlerts(force) {
  const query = filterQuery();
  let data;
  try {
    data = await api("/api/alerts" + (query ? "?" + query : ""));
  } catch (e) {
    $("list-error").hidden = false;
    $("list-error").textContent = e.message;
    return;
  }
  $("list-error").hidden = true;
  const key = query + "|" + data.version + "|" + (selected || "");
  let status = data.alerts.length + " shown of " + data.held + " held (" + data.received
    + " received)";
  const invalid = Object.values(data.invalid).reduce((a, b) => a + b, 0);
  if (invalid) status += "; " + invalid + " invalid records skipped";
  const errors = Object.values(data.feed_errors);
  if (errors.length) status += "; " + errors.join("; ");
  $("list-status").textContent = status;
  if (key === listKey && !force) return;
  listKey = key;
  renderAlerts(data.alerts);
}

function renderAlerts(alerts) {
  const body = $("alerts").tBodies[0];
  const rows = [];
  const models = new Set();
  for (const a of alerts) {
    models.add(a.model_version);
    const row = document.createElement("tr");
    row.dataset.alertId = a.alert_id;
    if (a.alert_id === selected) row.classList.add("selected");
    row.append(
      el("td", when(a.event_time)),
      el("td", a.customer_id, "mono"),
      el("td", a.terminal_id, "mono"),
      el("td", a.amount + " " + a.currency, "num"),
    );
    const score = el("td", null, "num");
    score.append(scoreBadge(a.score, a.threshold));
    const outcome = el("td");
    outcome.append(outcomeBadge(a.outcome));
    row.append(score, el("td", a.model_version, "mono wide-only"),
      el("td", a.top_reasons.join(", "), "wide-only"), outcome);
    row.addEventListener("click", () => select(a.alert_id));
    rows.push(row);
  }
  if (!rows.length) {
    const row = document.createElement("tr");
    const cell = el("td", "No alerts match.", "muted");
    cell.colSpan = 8;
    row.append(cell);
    rows.push(row);
  }
  body.replaceChildren(...rows);
  const list = $("models");
  list.replaceChildren(...[...models].map((m) => { const o = el("option"); o.value = m; return o; }));
}

function select(alertId) {
  selected = alertId;
  window.location.hash = alertId ? "alert=" + encodeURIComponent(alertId) : "";
  detailKey = "";
  refreshAlerts(true);
  refreshDetail();
}

async function refreshDetail() {
  const panel = $("detail");
  $("main").classList.toggle("with-detail", Boolean(selected));
  if (!selected) { panel.hidden = true; return; }
  let d;
  try {
    d = await api("/api/alerts/" + encodeURIComponent(selected));
  } catch (e) {
    panel.hidden = false;
    $("d-id").textContent = selected;
    $("d-message").textContent = e.message;
    return;
  }
  const key = JSON.stringify(d);
  if (key === detailKey) return;
  detailKey = key;
  panel.hidden = false;
  renderDetail(d);
}

function renderDetail(d) {
  $("d-id").textContent = d.alert_id;
  const fields = [
    ["Transaction", d.transaction_id], ["Customer", d.customer_id], ["Terminal", d.terminal_id],
    ["Amount", d.amount + " " + d.currency], ["Score", num(d.score, 4) + " (threshold "
      + num(d.threshold, 4) + ", policy " + d.policy + ")"],
    ["Model", d.model_version], ["Event time", when(d.event_time)],
    ["Processed at", when(d.processed_at)],
  ];
  if (d.late) fields.push(["Late", "scored without being added to its windows"]);
  const dl = $("d-fields");
  dl.replaceChildren(...fields.flatMap(([k, v]) => [el("dt", k), el("dd", v)]));
  const outcome = $("d-outcome");
  outcome.replaceChildren(d.outcome ? outcomeBadge(d.outcome) : el("span", "none yet"));
  renderReasons(d);
  $("d-features").tBodies[0].replaceChildren(...Object.entries(d.features).map(([name, value]) => {
    const row = document.createElement("tr");
    row.append(el("td", name, "mono"), el("td", num(value, 4), "num"));
    return row;
  }));
  $("d-recent").tBodies[0].replaceChildren(...d.recent_transactions.map((t) => {
    const row = document.createElement("tr");
    const cell = el("td");
    cell.append(outcomeBadge(t.outcome, true));
    row.append(el("td", when(t.event_time)), el("td", t.transaction_id, "mono"),
      el("td", t.terminal_id, "mono"), el("td", t.amount + " " + t.currency, "num"),
      el("td", t.score === null ? "n/a" : num(t.score, 3), "num"), cell);
    if (t.transaction_id === d.transaction_id) row.classList.add("selected");
    return row;
  }));
}

function renderReasons(d) {
  // Reasons are rendered generically: every field any reason carries, feature first.
  const reasons = Array.isArray(d.reasons) ? d.reasons : [];
  const columns = ["feature"];
  for (const r of reasons) for (const k of Object.keys(r)) if (!columns.includes(k)) columns.push(k);
  const table = $("d-reasons");
  const head = document.createElement("tr");
  head.append(...columns.map((c) => el("th", c, c === "feature" ? "" : "num")));
  table.tHead.replaceChildren(head);
  const largest = Math.max(0, ...reasons.map((r) => Math.abs(Number(r.contribution) || 0)));
  table.tBodies[0].replaceChildren(...reasons.map((r) => {
    const row = document.createElement("tr");
    for (const c of columns) {
      const value = r[c];
      if (c === "feature") { row.append(el("td", value, "mono")); continue; }
      const cell = el("td", null, "num");
      if (c === "contribution" && largest > 0) {
        const bar = el("span", null, "bar");
        bar.style.width = Math.round(60 * Math.abs(Number(value)) / largest) + "px";
        cell.append(bar);
      }
      cell.append(document.createTextNode(typeof value === "number" ? num(value, 4)
        : value === undefined ? "" : JSON.stringify(value)));
      row.append(cell);
    }
    return row;
  }));
  const baseline = $("d-baseline");
  baseline.hidden = d.reasons_baseline === undefined;
  baseline.textContent = d.reasons_baseline === undefined ? "" : "Baseline: "
    + (typeof d.reasons_baseline === "number" ? num(d.reasons_baseline, 4)
      : JSON.stringify(d.reasons_baseline));
}

async function decide(decision) {
  if (!selected) return;
  const buttons = [$("d-fraud"), $("d-genuine")];
  buttons.forEach((b) => { b.disabled = true; });
  $("d-message").textContent = "publishing…";
  try {
    const headers = { "Content-Type": "application/json" };
    if (csrf) headers["X-CSRF-Token"] = csrf;
    const done = await api("/api/alerts/" + encodeURIComponent(selected) + "/decision", {
      method: "POST", headers, body: JSON.stringify({ decision }),
    });
    $("d-message").textContent = "label published (" + done.label_topic + " partition "
      + done.label_partition + ", offset " + done.label_offset + ")";
  } catch (e) {
    $("d-message").textContent = "not published: " + e.message;
  } finally {
    buttons.forEach((b) => { b.disabled = false; });
  }
  detailKey = "";
  await Promise.all([refreshDetail(), refreshAlerts(true)]);
}

async function start() {
  const session = await api("/api/session");
  csrf = session.csrf;
  $("analyst").textContent = "analyst " + session.analyst;
  $("namespace").textContent = "namespace " + session.namespace + " · " + session.topics.alerts;
  $("filters").addEventListener("submit", (e) => { e.preventDefault(); refreshAlerts(true); });
  $("filters").addEventListener("reset", () => setTimeout(() => refreshAlerts(true), 0));
  $("d-close").addEventListener("click", () => select(null));
  $("d-fraud").addEventListener("click", () => decide("fraud"));
  $("d-genuine").addEventListener("click", () => decide("genuine"));
  $("logout").addEventListener("click", async () => {
    await fetch("/logout", { method: "POST", headers: csrf ? { "X-CSRF-Token": csrf } : {} });
    window.location.reload();
  });
  const match = /alert=([^&]+)/.exec(window.location.hash);
  if (match) selected = decodeURIComponent(match[1]);
  await Promise.all([refreshFigures(), refreshAlerts(true), refreshDetail()]);
  setInterval(refreshAlerts, ALERTS_EVERY_MS);
  setInterval(refreshFigures, FIGURES_EVERY_MS);
  setInterval(refreshDetail, DETAIL_EVERY_MS);
}

document.addEventListener("DOMContentLoaded", start);
