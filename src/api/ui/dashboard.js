// The codex-api-proxy dashboard. Polls /metrics and /ui/data at most once a second and /v1/quota every
// ten seconds, with the server key from sessionStorage as a bearer. Builds the DOM with textContent only
// (no HTML from data), so names from the config or the ledger cannot inject markup.
"use strict";

const KEY_STORAGE = "codex-api-proxy.key";
const POLL_MS = 1000;
const QUOTA_MS = 10000;

let key = sessionStorage.getItem(KEY_STORAGE);
let lastQuotaAt = 0;
let pollTimer = null;
let ticks = 0;
let lastProfiles = [];

const $ = (selector) => document.querySelector(selector);

function el(tag, attributes, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") node.className = value;
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function svg(tag, attributes) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [name, value] of Object.entries(attributes || {})) node.setAttribute(name, String(value));
  return node;
}

const number = (value) => (value === null || value === undefined ? "-" : Number(value).toLocaleString("en-US"));

function headers() {
  return key ? { Authorization: "Bearer " + key } : {};
}

class Refused extends Error {}

async function getJson(path) {
  const response = await fetch(path, { headers: headers(), cache: "no-store" });
  if (response.status === 401 || response.status === 403) throw new Refused(path);
  if (!response.ok) {
    const error = new Error(path + " answered " + response.status);
    error.status = response.status;
    throw error;
  }
  return response.json();
}

function showLogin(message) {
  clearTimeout(pollTimer);
  $("#dashboard").hidden = true;
  $("#forget").hidden = true;
  $("#login").hidden = false;
  $("#login-error").textContent = message || "";
  $("#status").textContent = "not connected";
  $("#key").focus();
}

function showDashboard() {
  $("#login").hidden = true;
  $("#dashboard").hidden = false;
  $("#forget").hidden = !key;
}

async function poll() {
  clearTimeout(pollTimer);
  const started = Date.now();
  try {
    const [metrics, data] = await Promise.all([getJson("/metrics"), getJson("/ui/data")]);
    showDashboard();
    render(metrics, data);
    if (started - lastQuotaAt >= QUOTA_MS) {
      lastQuotaAt = started;
      loadQuota();
    }
    ticks += 1;
    document.body.dataset.tick = String(ticks);
    $("#status").textContent = "updated " + new Date().toLocaleTimeString();
    $("#status").className = "muted";
  } catch (error) {
    if (error instanceof Refused) {
      const hadKey = !!key;
      key = null;
      sessionStorage.removeItem(KEY_STORAGE);
      showLogin(hadKey ? "The server refused this key. It needs a server key (one of [server] api_keys)." : "");
      return;
    }
    $("#status").textContent = "cannot reach the server: " + error.message;
    $("#status").className = "error";
  }
  // At most once a second, and never two polls at once.
  pollTimer = setTimeout(poll, Math.max(0, POLL_MS - (Date.now() - started)));
}

function render(metrics, data) {
  // /metrics flattens its counters into the top level and into each profile.
  const counters = metrics;
  const profiles = Object.entries(metrics.profiles || {});
  let inFlight = 0;
  let queued = 0;
  for (const [, profile] of profiles) {
    inFlight += profile.in_flight;
    queued += profile.queued;
  }
  $("[data-testid=requests-total]").textContent = number(counters.requests_total);
  $("[data-testid=requests-ok]").textContent = number(counters.requests_ok);
  $("[data-testid=requests-error]").textContent = number(counters.requests_error);
  $("[data-testid=in-flight]").textContent = number(inFlight);
  $("[data-testid=queued]").textContent = number(queued);
  const config = metrics.config || {};
  $("[data-testid=config-generation]").textContent = number(config.generation);
  const reloadError = $("#reload-error");
  reloadError.hidden = !config.last_error;
  reloadError.textContent = config.last_error ? "Last reload failed (the previous config still serves): " + config.last_error : "";
  const ledger = data.ledger;
  $("[data-testid=ledger]").textContent = ledger.enabled
    ? number(ledger.written) + " (" + number(ledger.dropped) + ")"
    : "off";
  $("[data-testid=ledger]").dataset.dropped = String(ledger.dropped);
  lastProfiles = profiles;
  renderProfiles(profiles);
  renderCharts(data.activity.series);
  renderTokens(data);
  renderRecent(data.activity.recent);
}

function renderProfiles(profiles) {
  const filter = $("#filter").value.trim().toLowerCase();
  const body = el("tbody");
  for (const [name, profile] of profiles) {
    if (filter && !name.toLowerCase().includes(filter)) continue;
    const c = profile;
    const errors = Object.values(c.errors_by_status || {}).reduce((sum, n) => sum + n, 0);
    const workers = el("td", { "data-field": "workers" });
    if (profile.workers) {
      for (const worker of profile.workers) {
        const classes = ["worker", worker.state, worker.restarts > 0 ? "restarted" : ""].join(" ");
        workers.append(
          el("span", {
            class: classes,
            "data-pid": worker.pid ?? "",
            "data-state": worker.state,
            "data-restarts": worker.restarts,
            "data-turns": worker.turns_in_flight,
            title: worker.error || "",
          }, (worker.pid ?? "-") + " · " + worker.state + " · " + worker.turns_in_flight + " · " + worker.restarts + "↻"),
        );
      }
    } else {
      workers.append(el("span", { class: "muted" }, "one codex exec per request"));
    }
    body.append(el("tr", { "data-profile": name },
      el("td", {}, name),
      el("td", { "data-field": "engine" }, profile.engine),
      el("td", { class: "n", "data-field": "in_flight" }, number(c.in_flight)),
      el("td", { class: "n", "data-field": "queued" }, number(profile.queued)),
      el("td", { class: "n", "data-field": "max_concurrency" }, number(profile.max_concurrency)),
      el("td", { class: "n", "data-field": "requests" }, number(c.requests)),
      el("td", { class: "n", "data-field": "ok" }, number(c.ok)),
      el("td", { class: "n", "data-field": "errors" }, number(errors)),
      el("td", { class: "n", "data-field": "tokens" }, number(c.tokens.total)),
      workers,
    ));
  }
  $("#profiles tbody").replaceWith(body);
}

function polyline(points, max, color) {
  // Gaps (null) split the line into segments; a point with no neighbour is drawn as a dot.
  const group = svg("g", {});
  let d = "";
  let open = false;
  points.forEach((value, index) => {
    if (value === null || value === undefined) { open = false; return; }
    const x = (index / Math.max(1, points.length - 1)) * 300;
    const y = 78 - (value / max) * 74;
    d += (open ? " L" : " M") + x.toFixed(1) + " " + y.toFixed(1);
    const before = points[index - 1];
    const after = points[index + 1];
    if ((before === null || before === undefined) && (after === null || after === undefined)) {
      group.append(svg("circle", { cx: x.toFixed(1), cy: y.toFixed(1), r: 2.5, fill: color }));
    }
    open = true;
  });
  group.prepend(svg("path", { d: d.trim() || "M0 78", fill: "none", stroke: color, "stroke-width": 1.5, "vector-effect": "non-scaling-stroke" }));
  return group;
}

function renderCharts(series) {
  const rps = series.map((point) => point.requests / 60);
  const maxRps = Math.max(...rps, 0.01);
  const rpsChart = $("#chart-rps");
  rpsChart.replaceChildren(svg("line", { x1: 0, y1: 78, x2: 300, y2: 78, stroke: "#dde2e7" }), polyline(rps, maxRps, "#2563eb"));
  rpsChart.dataset.last = (rps[rps.length - 1] || 0).toFixed(3);
  $("#chart-rps-label").replaceChildren(el("span", {}, "-60 min"), el("span", {}, "max " + maxRps.toFixed(2) + " rps"), el("span", {}, "now"));
  const p50 = series.map((point) => point.latency_p50_ms);
  const p95 = series.map((point) => point.latency_p95_ms);
  const maxLatency = Math.max(...p95.filter((v) => v !== null), ...p50.filter((v) => v !== null), 1);
  $("#chart-latency").replaceChildren(
    svg("line", { x1: 0, y1: 78, x2: 300, y2: 78, stroke: "#dde2e7" }),
    polyline(p95, maxLatency, "#b7791f"),
    polyline(p50, maxLatency, "#2563eb"),
  );
  $("#chart-latency-label").replaceChildren(el("span", {}, "-60 min"), el("span", {}, "max " + number(maxLatency) + " ms"), el("span", {}, "now"));
}

function tokenRows(testid, rows) {
  const body = el("tbody");
  for (const row of rows || []) {
    body.append(el("tr", { "data-group": row.group },
      el("td", {}, row.group),
      el("td", { class: "n", "data-field": "requests" }, number(row.requests)),
      el("td", { class: "n", "data-field": "prompt_tokens" }, number(row.prompt_tokens)),
      el("td", { class: "n", "data-field": "completion_tokens" }, number(row.completion_tokens)),
    ));
  }
  $("[data-testid=" + testid + "] tbody").replaceWith(body);
}

function renderTokens(data) {
  const usage = data.usage;
  const note = $("#ledger-note");
  if (!usage) {
    note.textContent = data.ledger.enabled ? (data.usage_error || "") : "(the usage ledger is off: set [server] usage_db)";
  } else {
    note.textContent = "(from the usage ledger)";
  }
  tokenRows("tokens-profile", usage && usage.by_profile);
  tokenRows("tokens-key", usage && usage.by_key);
  tokenRows("tokens-day", usage && usage.by_day);
}

function renderRecent(recent) {
  const body = el("tbody");
  for (const row of recent.slice(0, 50)) {
    const failed = row.status >= 400 || row.error_code;
    body.append(el("tr", { "data-request-id": row.request_id },
      el("td", {}, new Date(row.at_ms).toLocaleTimeString()),
      el("td", { class: failed ? "s-bad" : "s-ok", "data-field": "status" }, row.status + (row.error_code ? " " + row.error_code : "")),
      el("td", { class: "n", "data-field": "latency_ms" }, number(row.latency_ms)),
      el("td", { class: "n" }, number(row.first_token_ms)),
      el("td", { "data-field": "profile" }, row.profile),
      el("td", {}, row.model),
      el("td", { "data-field": "key_name" }, row.key_name || "-"),
      el("td", {}, row.api + (row.stream ? " · stream" : "")),
      el("td", { class: "n" }, number(row.prompt_tokens) + " / " + number(row.completion_tokens)),
      el("td", { class: "n" }, number(row.tool_calls)),
      el("td", { class: "muted" }, row.request_id),
    ));
  }
  $("#recent tbody").replaceWith(body);
}

function until(seconds) {
  const left = seconds * 1000 - Date.now();
  if (left <= 0) return "now";
  const minutes = Math.round(left / 60000);
  return minutes >= 60 ? Math.floor(minutes / 60) + " h " + (minutes % 60) + " min" : minutes + " min";
}

async function loadQuota() {
  const box = $("#quota");
  let quota;
  try {
    quota = await getJson("/v1/quota");
  } catch (error) {
    if (error instanceof Refused) return;
    box.replaceChildren(el("span", { class: "muted", "data-testid": "quota-unavailable" }, "quota unavailable" + (error.status === 404 ? "" : " (" + error.message + ")")));
    return;
  }
  const gauges = el("div", { class: "gauges" });
  for (const account of quota.accounts || []) {
    const login = account.login || {};
    const card = el("div", { class: "gauge", "data-codex-home": account.codex_home },
      el("div", {}, el("strong", {}, (account.profiles || []).join(", ") || account.codex_home)),
      el("div", { class: "muted" }, account.codex_home + " · " + (login.logged_in ? "logged in" + (login.method ? " (" + login.method + ")" : "") : "not logged in")),
    );
    for (const window of account.windows || []) {
      const used = Math.max(0, Math.min(100, Number(window.used_percent) || 0));
      const bar = el("div", { class: used >= 90 ? "high" : "" });
      bar.style.width = used + "%";
      card.append(
        el("div", { "data-window": window.id, "data-used": used },
          window.id + (window.window_minutes ? " (" + Math.round(window.window_minutes / 60) + " h window)" : "") + ": " + used.toFixed(0) + "% used",
          el("div", { class: "bar" }, bar),
          el("div", { class: "muted" }, window.resets_at ? "resets in " + until(window.resets_at) + " (" + new Date(window.resets_at * 1000).toLocaleString() + ")" : "reset time unknown"),
        ),
      );
    }
    if (!(account.windows || []).length) card.append(el("div", { class: "muted" }, "no quota figures yet"));
    gauges.append(card);
  }
  if (!(quota.accounts || []).length) gauges.append(el("span", { class: "muted" }, "no accounts"));
  box.replaceChildren(gauges);
}

document.addEventListener("DOMContentLoaded", () => {
  $("#login").addEventListener("submit", (event) => {
    event.preventDefault();
    key = $("#key").value.trim();
    $("#key").value = "";
    if (key) sessionStorage.setItem(KEY_STORAGE, key);
    lastQuotaAt = 0;
    poll();
  });
  $("#forget").addEventListener("click", () => {
    key = null;
    sessionStorage.removeItem(KEY_STORAGE);
    showLogin("");
  });
  $("#filter").addEventListener("input", () => renderProfiles(lastProfiles));
  poll();
});
