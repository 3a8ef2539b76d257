// edgebox dashboard: polls the control plane's /v1 API and relays code jobs over the
// job events WebSocket. No framework, no build step.
"use strict";

const $ = (id) => document.getElementById(id);
const tokenInput = $("token");
tokenInput.value = localStorage.getItem("edgebox-token") || new URLSearchParams(location.search).get("token") || "";
tokenInput.addEventListener("change", () => localStorage.setItem("edgebox-token", tokenInput.value.trim()));

async function api(method, path, body) {
  const headers = { "accept": "application/json" };
  const token = tokenInput.value.trim();
  if (token) headers["authorization"] = "Bearer " + token;
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

// ---- topology -------------------------------------------------------------------
async function refreshTopology() {
  try {
    const [nodes, status] = await Promise.all([api("GET", "/v1/nodes"), api("GET", "/v1/config/status")]);
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
let previous = null;
async function refreshStats() {
  try {
    const stats = await api("GET", "/v1/stats");
    const now = performance.now();
    const total = stats.edges.requests.total || 0;
    const rate = previous ? ((total - previous.total) * 1000) / (now - previous.at) : null;
    previous = { total, at: now };
    const tiles = [
      ["requests", total.toLocaleString()],
      ["requests / s", rate == null ? "-" : rate.toFixed(1)],
      ["bytes sent", (stats.edges.bytes_sent / 1048576).toFixed(1) + " MiB"],
      ["edges reporting", stats.edges.reporting],
    ];
    for (const [tier, ratio] of Object.entries(stats.edges.hit_ratio)) tiles.push([`hit ratio ${tier}`, (ratio * 100).toFixed(1) + " %"]);
    for (const [cls, count] of Object.entries(stats.edges.requests)) if (cls !== "total") tiles.push([cls, count]);
    for (const [state, count] of Object.entries(stats.jobs || {})) tiles.push([`jobs ${state}`, count]);
    for (const [node, doc] of Object.entries(stats.per_node)) {
      const latency = doc.latency || doc.latency_ms;
      if (latency && latency.p99 != null) tiles.push([`${node} p99`, latency.p99 + " ms"]);
    }
    $("stats").replaceChildren(...tiles.map(([label, value]) =>
      el("div", { class: "stat" }, el("div", { class: "value" }, String(value)), el("div", { class: "label" }, label))));
    $("stats-note").textContent = stats.unreachable.length ? "unreachable: " + stats.unreachable.map((u) => u.node).join(", ") : "";
  } catch (error) {
    $("stats-note").textContent = error.status === 401 || error.status === 403 ? "enter an operator token to see stats" : error.message;
  }
}

// ---- purge --------------------------------------------------------------------------
$("purge-kind").addEventListener("change", () => { $("purge-value").disabled = $("purge-kind").value === "all"; });
$("purge-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const kind = $("purge-kind").value;
  const body = kind === "all" ? { all: true } : { [kind]: $("purge-value").value.trim() };
  const table = $("purge-results");
  try {
    const result = await api("POST", "/v1/purge", body);
    table.replaceChildren(...result.results.map((r) => el("tr", {},
      el("td", {}, r.node),
      el("td", { class: r.ok ? "ok" : "failed" }, r.ok ? "ok" : "failed"),
      el("td", {}, r.purged != null ? `${r.purged} purged` : ""),
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

function finish(event) {
  if (!job) return;
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
    const accepted = await api("POST", "/v1/jobs", { language: $("language").value, source });
    job = { id: accepted.id, state: "queued", runtimeMs: 0, line: null, printed: { stdout: 0, stderr: 0 } };
    showCode(source);
    delete $("code-view").dataset.final;
    $("stop").disabled = false;
    job.timer = setInterval(renderStatus, 50);
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const token = encodeURIComponent(tokenInput.value.trim());
    const socket = new WebSocket(`${scheme}://${location.host}/v1/jobs/${accepted.id}/events?access_token=${token}`);
    job.socket = socket;
    socket.onmessage = (message) => {
      let event;
      try { event = JSON.parse(message.data); } catch { return; }
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

refreshTopology();
refreshStats();
setInterval(refreshTopology, 2000);
setInterval(refreshStats, 2000);
