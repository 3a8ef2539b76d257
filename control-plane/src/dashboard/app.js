// edgebox dashboard: polls the control plane's /v1 API (topology every 2 s, stats every
// second, drawn as inline SVG charts) and relays code jobs over the job events WebSocket.
// No framework, no build step, no external assets.
"use strict";

const $ = (id) => document.getElementById(id);

// ---- sign-in ----------------------------------------------------------------------
// The operator token lives in this tab's sessionStorage (gone when the tab closes) and
// travels only in the Authorization header, or as a WebSocket subprotocol: never in a
// URL, where it would land in history, logs and Referer headers.
const TOKEN_KEY = "edgebox-token";
const token = () => sessionStorage.getItem(TOKEN_KEY) || "";

function showSignedIn() {
  $("login").hidden = !!token();
  $("signed-in").hidden = !token();
}

$("login").addEventListener("submit", (event) => {
  event.preventDefault();
  const value = $("token").value.trim();
  $("token").value = "";
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  showSignedIn();
  refreshTopology();
  refreshStats();
});
$("logout").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  showSignedIn();
});
showSignedIn();

async function api(method, path, body) {
  const headers = { "accept": "application/json" };
  if (token()) headers["authorization"] = "Bearer " + token();
  if (body !== undefined) headers["content-type"] = "application/json";
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await response.text();
  const data = text ? JSON.parse(text) : null;
  if (!response.ok) {
    const error = new Error(data && data.error ? `${data.error.code}: ${data.error.message}` : `HTTP ${response.status}`);
    error.status = response.status;
    throw error;
  }
  return data;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value; else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function duration(ms) {
  if (ms == null) return "-";
  if (ms < 1000) return ms + " ms";
  if (ms < 60000) return (ms / 1000).toFixed(1) + " s";
  if (ms < 3600000) return Math.floor(ms / 60000) + " m " + Math.floor(ms / 1000) % 60 + " s";
  return Math.floor(ms / 3600000) + " h " + Math.floor(ms / 60000) % 60 + " m";
}

// ---- request path -------------------------------------------------------------------
const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  for (const child of children) node.append(child);
  return node;
}

// Columns: the client regions, the edges clients reach, the shields those edges miss to,
// and the origins; a box per node in its health's colour, a line per hop.
function drawRequestPath(nodes) {
  const edges = nodes.filter((n) => n.role === "edge");
  const shieldNames = new Set(edges.map((n) => n.parent).filter(Boolean));
  const columns = [
    ["clients", [...new Set(edges.filter((n) => !shieldNames.has(n.name)).map((n) => n.region))].sort()
      .map((region) => ({ id: "clients:" + region, label: region, sub: "clients", health: "clients" }))],
    ["edges", edges.filter((n) => !shieldNames.has(n.name)).map((n) => ({ id: n.name, label: n.name, sub: n.health, health: n.health }))],
    ["shield", edges.filter((n) => shieldNames.has(n.name)).map((n) => ({ id: n.name, label: n.name, sub: n.health, health: n.health }))],
    ["origins", nodes.filter((n) => n.role === "origin").map((n) => ({ id: n.name, label: n.name, sub: n.health, health: n.health }))],
  ].filter(([, items]) => items.length);
  const links = [];
  for (const edge of edges) {
    if (!shieldNames.has(edge.name)) links.push(["clients:" + edge.region, edge.name]);
    if (edge.parent) links.push([edge.name, edge.parent]);
    for (const origin of edge.origins || []) links.push([edge.name, origin]);
  }
  const width = 960, boxW = 150, boxH = 34;
  const rows = Math.max(1, ...columns.map(([, items]) => items.length));
  const height = 30 + rows * (boxH + 14);
  const place = {};
  const step = columns.length > 1 ? (width - boxW - 20) / (columns.length - 1) : 0;
  columns.forEach(([, items], c) => items.forEach((item, r) => {
    place[item.id] = { x: 10 + c * step, y: 24 + r * (boxH + 14) };
  }));
  const out = [];
  columns.forEach(([title], c) => out.push(svg("text", { class: "column", x: 10 + c * step, y: 14 }, title)));
  for (const [from, to] of links) {
    const a = place[from], b = place[to];
    if (!a || !b) continue;
    const x1 = a.x + boxW, y1 = a.y + boxH / 2, x2 = b.x, y2 = b.y + boxH / 2, mid = (x1 + x2) / 2;
    out.push(svg("path", { class: "link", "data-link": `${from}>${to}`, d: `M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2},${y2}` }));
  }
  for (const [, items] of columns) for (const item of items) {
    const { x, y } = place[item.id];
    out.push(svg("g", { class: `hop ${item.health}`, "data-path-node": item.id, transform: `translate(${x},${y})` },
      svg("rect", { width: boxW, height: boxH }),
      svg("text", { x: 8, y: 14 }, item.label),
      svg("text", { class: "sub", x: 8, y: 27 }, item.sub)));
  }
  const drawing = $("request-path");
  drawing.setAttribute("viewBox", `0 0 ${width} ${height}`);
  drawing.replaceChildren(...out);
}

// ---- topology -------------------------------------------------------------------
async function refreshTopology() {
  try {
    const [nodes, status] = await Promise.all([api("GET", "/v1/nodes"), api("GET", "/v1/config/status")]);
    drawRequestPath(nodes.nodes);
    const sync = Object.fromEntries(status.nodes.map((n) => [n.node, n]));
    const byRegion = {};
    for (const node of nodes.nodes) (byRegion[node.region] ||= []).push(node);
    const regions = Object.keys(byRegion).sort().map((region) => {
      const box = el("div", { class: "region" }, el("h3", {}, region));
      for (const node of byRegion[region]) {
        const s = sync[node.name] || {};
        const config = s.in_sync ? `v${s.version} ✓` : s.version != null ? `v${s.version}${s.applied === false ? " failed" : " (behind)"}` : "not reported";
        const addr = (node.listeners.find((l) => l.addr) || {}).addr || "";
        box.append(el("div", { class: `node ${node.health}`, "data-node": node.name, title: node.health_error || "" },
          el("span", { class: "name" }, node.name),
          el("span", { class: `badge ${node.health}` }, node.health),
          el("span", { class: "badge" }, node.role),
          el("div", { class: "meta" }, `config ${config} · up ${duration(node.uptime_ms)} · ${addr}`)));
      }
      return box;
    });
    $("topology").replaceChildren(...regions);
    const down = nodes.nodes.filter((n) => n.health !== "up").length;
    $("summary").textContent = `config v${status.current_version} · ${nodes.nodes.length} nodes` + (down ? ` · ${down} not up` : " · all up");
  } catch (error) {
    $("summary").textContent = "control plane unreachable: " + error.message;
  }
}

// ---- stats ------------------------------------------------------------------------
// Every poll is turned into one sample of the interval since the previous poll: requests
// per second, hit ratios and latency percentiles of the requests in that interval (the
// edges' counters and latency histograms are cumulative; their differences are the
// interval's). The charts keep the last five minutes.
const WINDOW_MS = 5 * 60 * 1000;
let previous = null;
const history = [];

function quantile(counts, bounds, q) {
  const total = counts.reduce((a, b) => a + b, 0);
  if (!total) return null;
  const rank = Math.max(1, Math.ceil(q * total));
  let seen = 0;
  for (let i = 0; i < counts.length; i++) {
    seen += counts[i];
    if (seen >= rank) return bounds[Math.min(i, bounds.length - 1)];
  }
  return bounds[bounds.length - 1];
}

function ratio(hits, lookups) { return lookups > 0 ? hits / lookups : null; }

function sample(stats, at) {
  const cache = stats.edges.cache, latency = stats.edges.latency || { bounds_ms: [], counts: [] };
  const served = (tier) => (cache.by_tier && cache.by_tier[tier] ? cache.by_tier[tier].responses : 0);
  const now = {
    at, total: stats.edges.requests.total || 0,
    l1: [cache.l1.hits, cache.l1.hits + cache.l1.misses], l2: [cache.l2.hits, cache.l2.hits + cache.l2.misses],
    edge: [served("l1") + served("l2"), served("l1") + served("l2") + served("parent") + served("origin")],
    latency: latency.counts.slice(), bounds: latency.bounds_ms,
  };
  const before = previous;
  previous = now;
  if (!before) return null;
  const seconds = Math.max(0.001, (now.at - before.at) / 1000);
  const delta = (tier) => [now[tier][0] - before[tier][0], now[tier][1] - before[tier][1]];
  const counts = now.latency.map((c, i) => Math.max(0, c - (before.latency[i] || 0)));
  return {
    at,
    rps: Math.max(0, now.total - before.total) / seconds,
    l1: ratio(...delta("l1")), l2: ratio(...delta("l2")), edge: ratio(...delta("edge")),
    p50: quantile(counts, now.bounds, 0.5), p99: quantile(counts, now.bounds, 0.99),
  };
}

// One polyline per series over the window; `null` values leave a gap.
function drawChart(id, series, max) {
  const chart = $(id);
  const start = history.length ? history[history.length - 1].at - WINDOW_MS : 0;
  const lines = [];
  for (const name of series) {
    let points = [];
    const flush = () => { if (points.length) lines.push(svg("polyline", { class: name, points: points.join(" ") })); points = []; };
    for (const s of history) {
      const value = s[name];
      if (value == null) { flush(); continue; }
      const x = ((s.at - start) / WINDOW_MS) * 300;
      const y = 100 - (Math.min(value, max) / max) * 96 - 2;
      points.push(`${x.toFixed(1)},${y.toFixed(1)}`);
    }
    flush();
  }
  chart.replaceChildren(...lines);
  const last = history[history.length - 1] || {};
  chart.dataset.samples = String(history.length);
  chart.dataset.last = JSON.stringify(Object.fromEntries(series.map((name) => [name, last[name] ?? null])));
}

function percent(value) { return value == null ? "-" : (value * 100).toFixed(0) + " %"; }

function drawCharts() {
  const peak = (names) => Math.max(1, ...history.flatMap((s) => names.map((n) => s[n] || 0)));
  drawChart("chart-rps", ["rps"], peak(["rps"]) * 1.1);
  drawChart("chart-hit", ["l1", "l2", "edge"], 1);
  drawChart("chart-latency", ["p50", "p99"], peak(["p50", "p99"]) * 1.1);
  const last = history[history.length - 1] || {};
  $("rps-now").textContent = last.rps == null ? "" : last.rps.toFixed(1);
  $("hit-now").textContent = `l1 ${percent(last.l1)} · l2 ${percent(last.l2)} · edge ${percent(last.edge)}`;
  $("latency-now").textContent = last.p50 == null ? "no requests" : `p50 ≤ ${last.p50} ms · p99 ≤ ${last.p99} ms`;
}

async function refreshStats() {
  try {
    const stats = await api("GET", "/v1/stats");
    const now = performance.now();
    const point = sample(stats, now);
    if (point) {
      history.push(point);
      while (history.length && history[0].at < now - WINDOW_MS) history.shift();
      drawCharts();
    }
    const total = stats.edges.requests.total || 0;
    const tiles = [
      ["requests", total.toLocaleString()],
      ["requests / s", point ? point.rps.toFixed(1) : "-"],
      ["bytes sent", (stats.edges.bytes_sent / 1048576).toFixed(1) + " MiB"],
      ["edges reporting", stats.edges.reporting],
    ];
    for (const [tier, ratio] of Object.entries(stats.edges.hit_ratio)) tiles.push([`hit ratio ${tier}`, (ratio * 100).toFixed(1) + " %"]);
    for (const [cls, count] of Object.entries(stats.edges.requests)) if (cls !== "total") tiles.push([cls, count]);
    for (const [state, count] of Object.entries(stats.jobs || {})) tiles.push([`jobs ${state}`, count]);
    // Each sandbox as the job relay sees it: in rotation or not, running + queued.
    for (const [node, sandbox] of Object.entries(stats.sandboxes || {})) {
      const jobs = sandbox.jobs || {};
      tiles.push([`${node}${sandbox.up ? "" : " (down)"}`, `${jobs.running ?? sandbox.running} run · ${jobs.queued ?? sandbox.queued} queued`]);
    }
    $("stats").replaceChildren(...tiles.map(([label, value]) =>
      el("div", { class: "stat" }, el("div", { class: "value" }, String(value)), el("div", { class: "label" }, label))));
    $("stats-note").textContent = stats.unreachable.length ? "unreachable: " + stats.unreachable.map((u) => u.node).join(", ") : "";
  } catch (error) {
    $("stats-note").textContent = error.status === 401 || error.status === 403 ? "sign in with an operator token to see stats" : error.message;
  }
}

// ---- purge --------------------------------------------------------------------------
$("purge-kind").addEventListener("change", () => { $("purge-value").disabled = $("purge-kind").value === "all"; });
$("purge-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const kind = $("purge-kind").value;
  const body = kind === "all" ? { all: true } : { [kind]: $("purge-value").value.trim() };
  if ($("purge-soft").checked) body.soft = true;
  const table = $("purge-results");
  try {
    const result = await api("POST", "/v1/purge", body);
    table.replaceChildren(...result.results.map((r) => el("tr", {},
      el("td", {}, r.node),
      el("td", { class: r.ok ? "ok" : "failed" }, r.ok ? "ok" : "failed"),
      el("td", {}, r.purged != null ? `${r.purged} ${body.soft ? "marked stale" : "purged"}` : ""),
      el("td", {}, r.error || ""))));
  } catch (error) {
    table.replaceChildren(el("tr", {}, el("td", { class: "failed" }, error.message)));
  }
});

// ---- code runner --------------------------------------------------------------------
const TERMINAL = ["succeeded", "failed", "timed_out", "memory_exceeded", "output_exceeded", "cancelled"];
let job = null;

function showCode(source) {
  const view = $("code-view");
  view.replaceChildren(...source.split("\n").map((line) => el("li", {}, line || " ")));
  view.hidden = false;
  $("editor").hidden = true;
}

function highlight(line) {
  const items = $("code-view").children;
  for (const item of items) item.classList.remove("current");
  if (line != null && items[line - 1]) {
    items[line - 1].classList.add("current");
    items[line - 1].scrollIntoView({ block: "nearest" });
  }
}

function appendOutput(stream, text) {
  const span = el("span", { class: stream }, text);
  $("output").append(span);
  $("output").scrollTop = $("output").scrollHeight;
}

function renderStatus() {
  if (!job) return;
  let runtime = job.runtimeMs;
  if (!TERMINAL.includes(job.state) && job.statusAt) runtime += performance.now() - job.statusAt;
  const line = job.line != null ? `line ${job.line}` : "line ?";
  $("job-status").textContent = `${job.state} · ${line} · ${(runtime / 1000).toFixed(2)} s` + (job.started ? ` · started ${job.started}` : "");
}

// Interactive stdin: while an interactive job runs, each line typed is sent over the
// events socket (`{"type": "stdin"}`), and EOF closes the program's stdin.
function stdinOpen(open) {
  for (const id of ["stdin-line", "stdin-send", "stdin-eof"]) $(id).disabled = !open;
}

function sendToJob(message) {
  if (!job || !job.socket || job.socket.readyState !== WebSocket.OPEN) return false;
  job.socket.send(JSON.stringify(message));
  return true;
}

$("stdin-form").addEventListener("submit", () => {
  const line = $("stdin-line").value + "\n";
  if (sendToJob({ type: "stdin", data: line })) {
    appendOutput("stdin", line);
    $("stdin-line").value = "";
  }
});

$("stdin-eof").addEventListener("click", () => {
  if (sendToJob({ type: "stdin_eof" })) stdinOpen(false);
});

function finish(event) {
  if (!job) return;
  stdinOpen(false);
  job.state = event.state || job.state;
  if (event.runtime_ms != null) job.runtimeMs = event.runtime_ms;
  for (const stream of ["stdout", "stderr"]) {
    const all = event[stream];
    if (typeof all === "string" && all.length > job.printed[stream]) appendOutput(stream, all.slice(job.printed[stream]));
  }
  renderStatus();
  clearInterval(job.timer);
  $("run").disabled = false;
  $("stop").disabled = true;
  $("editor").hidden = false;
  $("code-view").dataset.final = "true";
}

$("run").addEventListener("click", async () => {
  const source = $("editor").value;
  $("output").replaceChildren();
  $("run").disabled = true;
  try {
    const interactive = $("interactive").checked;
    const accepted = await api("POST", "/v1/jobs", { language: $("language").value, source, interactive });
    job = { id: accepted.id, state: "queued", runtimeMs: 0, line: null, printed: { stdout: 0, stderr: 0 } };
    showCode(source);
    delete $("code-view").dataset.final;
    $("stop").disabled = false;
    job.timer = setInterval(renderStatus, 50);
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    // Browsers cannot set headers on a WebSocket handshake: the token goes as a
    // subprotocol (`bearer.<hex of the token>`), next to the one the server picks.
    const hex = Array.from(new TextEncoder().encode(token()), (b) => b.toString(16).padStart(2, "0")).join("");
    const socket = new WebSocket(`${scheme}://${location.host}/v1/jobs/${accepted.id}/events`, ["edgebox", "bearer." + hex]);
    job.socket = socket;
    if (interactive) socket.onopen = () => { stdinOpen(true); $("stdin-line").focus(); };
    socket.onmessage = (message) => {
      let event;
      try { event = JSON.parse(message.data); } catch { return; }
      // A refused client message (stdin after EOF, too much stdin): the job goes on.
      if (event.type === "error") { appendOutput("error", `${event.code}: ${event.message}\n`); return; }
      const data = event.data ?? event.text ?? event.chunk;
      if (event.stream && typeof data === "string") {
        job.printed[event.stream === "stderr" ? "stderr" : "stdout"] += data.length;
        appendOutput(event.stream, data);
      }
      if (event.start_time) job.started = event.start_time;
      if (event.runtime_ms != null) { job.runtimeMs = event.runtime_ms; job.statusAt = performance.now(); }
      if ("current_line" in event) { job.line = event.current_line; highlight(job.line); }
      if (event.state) job.state = event.state;
      if (TERMINAL.includes(event.state)) finish(event);
    };
    socket.onclose = async () => {
      stdinOpen(false);
      if (job && !TERMINAL.includes(job.state)) {
        try { finish(await api("GET", `/v1/jobs/${job.id}`)); } catch (error) { appendOutput("stderr", error.message); finish({}); }
      }
    };
  } catch (error) {
    appendOutput("stderr", error.message + "\n");
    $("run").disabled = false;
  }
});

$("stop").addEventListener("click", async () => {
  if (job) await api("DELETE", `/v1/jobs/${job.id}`).catch(() => {});
});

// The forms are wired: a test (or a user script) may drive the page from here on.
document.documentElement.dataset.ready = "true";
refreshTopology();
refreshStats();
setInterval(refreshTopology, 2000);
setInterval(refreshStats, 1000);
