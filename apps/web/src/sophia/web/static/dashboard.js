// The dashboard's live behaviour: one WebSocket to the real-time service (the JS client resumes
// after a drop), and fragments asked for again when an event says they moved. Charts are drawn
// with uPlot from the JSON each analytics fragment carries. No inline script: the pages' CSP
// allows scripts from this origin only.
import { SophiaRealtime } from "/static/sophia-realtime.js";

const body = document.body;
const page = body.dataset.page;
const statusBox = document.getElementById("live-status");
const LABELS = { connecting: "connecting…", open: "live", reconnecting: "offline: reconnecting…", closed: "offline" };

function setStatus(status, detail) {
  if (!statusBox) return;
  statusBox.dataset.status = status;
  statusBox.textContent = LABELS[status] ?? status;
  statusBox.title = detail ?? "";
}

// Ask for a fragment again (htmx listens for these events on body), at most once per `wait` ms.
const timers = new Map();
function refresh(name, wait = 100) {
  if (timers.has(name)) return;
  timers.set(name, setTimeout(() => {
    timers.delete(name);
    body.dispatchEvent(new Event(name));
  }, wait));
}

function refreshAll() {
  if (page === "business") {
    refresh("refresh-analytics", 0);
    refresh("refresh-deals", 0);
  } else if (page === "ops") {
    refresh("refresh-ops", 0);
  }
}

// ---- charts -------------------------------------------------------------------------------------

const COLORS = ["#2563eb", "#16a34a", "#dc2626", "#9333ea", "#ea580c", "#0891b2", "#ca8a04", "#db2777"];
const MEANT = { negative: "#dc2626", neutral: "#94a3b8", positive: "#16a34a" }; // sentiment reads at a glance
const charts = new Map();

function drawCharts(root = document) {
  if (typeof uPlot === "undefined") return;
  for (const box of root.querySelectorAll("[data-chart]")) {
    const name = box.dataset.chart;
    if (box.dataset.weeks === undefined) continue;
    const weeks = JSON.parse(box.dataset.weeks);
    charts.get(name)?.destroy();
    box.replaceChildren();
    if (!weeks.length) {
      box.textContent = "No data yet.";
      continue;
    }
    const labels = [...new Set(weeks.flatMap((week) => Object.keys(week.counts)))].sort();
    const xs = weeks.map((week) => Date.parse(week.week + "T00:00:00Z") / 1000);
    const data = [xs, ...labels.map((label) => weeks.map((week) => week.counts[label] ?? 0))];
    const series = [{}, ...labels.map((label, i) => ({ label, stroke: MEANT[label] ?? COLORS[i % COLORS.length], width: 2 }))];
    const width = Math.max(280, box.clientWidth || 480);
    charts.set(name, new uPlot({ width, height: 220, series, axes: [{}, { size: 50 }] }, data, box));
  }
}

// ---- live ---------------------------------------------------------------------------------------

async function token() {
  const response = await fetch("/api/v1/realtime/token", { method: "POST", credentials: "same-origin" });
  if (response.status === 401) {
    window.location.assign("/sign-in?next=" + encodeURIComponent(location.pathname + location.search));
    throw new Error("signed out");
  }
  if (!response.ok) throw new Error(`token: HTTP ${response.status}`);
  return (await response.json()).token;
}

function connect() {
  let dropped = false;
  const live = new SophiaRealtime({
    url: body.dataset.realtimeUrl,
    token,
    onStatus: (status, detail) => {
      setStatus(status, detail);
      if (status === "reconnecting") dropped = true;
      if (status === "open" && dropped) {
        dropped = false;
        refreshAll(); // caught up by the resumed subscriptions too; this covers what they cannot
      }
    },
    onResync: () => refreshAll(),
    onError: (error) => console.warn("real-time:", error.code, error.detail),
  });
  if (page === "business") {
    live.subscribe("deals", (publication) => {
      const type = publication.event.type;
      if (type === "view.refreshed" || type === "record.upserted" || type === "record.deleted") refresh("refresh-deals");
    });
    live.subscribe("analytics", () => refresh("refresh-analytics"));
  } else if (page === "ops") {
    const connections = document.getElementById("ws-connections-live");
    live.subscribe("ops", (publication) => {
      if (connections) connections.textContent = String(publication.event.payload.connections);
      refresh("refresh-ops", 0);
    });
  }
  window.sophiaLive = live; // for the browser tests and the console
}

if (page === "business" || page === "ops" || page === "record") {
  if (page !== "record") connect();
  else statusBox?.remove(); // a record's page does not follow changes: no badge to read as a fault
  drawCharts();
  body.addEventListener("htmx:afterSwap", (event) => drawCharts(event.detail.target));
}
