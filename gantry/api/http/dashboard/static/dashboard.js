// gantry dashboard: live updates and metric curves. No framework and nothing fetched from elsewhere.
// The pages are whole without this script: it re-fetches parts of them (`?partial=`, rendered by the
// same templates), follows the job's event stream, and draws the curves on <canvas>.
"use strict";

const POLL_MS = 2000;
const TERMINAL = ["succeeded", "failed", "cancelled"];
const COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf"];

// Fetch a part of a page: the element, GONE when there is nothing more to follow (the session ended
// and we were sent to /signin, or the job is gone), or null after a passing failure (try again).
const GONE = "gone";
async function fetchPart(url, selector) {
  try {
    const res = await fetch(url, { credentials: "same-origin", headers: { Accept: "text/html" } });
    if (res.redirected || res.status === 404) return GONE;
    if (!res.ok) return null;
    const t = document.createElement("template");
    t.innerHTML = await res.text();
    return t.content.querySelector(selector);
  } catch (_) {
    return null;
  }
}

function every(ms, fn) {
  let timer = null, stopped = false;
  const tick = async () => {
    const more = document.hidden ? true : await fn();
    if (more !== false && !stopped) timer = setTimeout(tick, ms);
  };
  timer = setTimeout(tick, ms);
  return () => { stopped = true; clearTimeout(timer); };
}

// -- the jobs page: its table body, re-rendered by the server with the same filters --------------
function jobsPage(rows) {
  const sep = location.search ? "&" : "?";
  every(POLL_MS + 500, async () => {
    const fresh = await fetchPart(location.pathname + location.search + sep + "partial=rows", "tbody");
    if (fresh === GONE) return false;
    if (fresh) document.getElementById("rows").replaceWith(fresh);
    return true;
  });
}

// -- charts -------------------------------------------------------------------------------------
function Charts(root) {
  const series = new Map(); // name -> Map(step -> value)
  const charts = new Map(); // group -> {canvas, legend}
  let pending = false;
  const group = (name) => (name.startsWith("loss") ? "losses" : name);

  function add(point) {
    if (!series.has(point.name)) series.set(point.name, new Map());
    series.get(point.name).set(point.step, point.value);
    if (!pending) {
      pending = true;
      requestAnimationFrame(() => { pending = false; drawAll(); });
    }
  }

  function lastStep() {
    let last = -1;
    for (const s of series.values()) for (const step of s.keys()) last = Math.max(last, step);
    return last;
  }

  function chartFor(name) {
    if (!charts.has(name)) {
      const fig = document.createElement("figure");
      const canvas = document.createElement("canvas");
      const legend = document.createElement("figcaption");
      canvas.className = "chart";
      canvas.dataset.group = name;
      fig.append(canvas, legend);
      root.append(fig);
      charts.set(name, { canvas, legend });
    }
    return charts.get(name);
  }

  function drawAll() {
    const groups = new Map();
    for (const name of [...series.keys()].sort()) {
      const g = group(name);
      if (!groups.has(g)) groups.set(g, []);
      groups.get(g).push(name);
    }
    for (const [g, names] of groups) draw(chartFor(g), names);
  }

  function draw(chart, names) {
    const { canvas, legend } = chart;
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth || 600, height = canvas.clientHeight || 180;
    canvas.width = width * ratio;
    canvas.height = height * ratio;
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);
    const lines = names.map((n) => [n, [...series.get(n)].filter(([, v]) => Number.isFinite(v)).sort((a, b) => a[0] - b[0])]);
    const all = lines.flatMap(([, pts]) => pts);
    if (!all.length) return;
    let [x0, x1] = [Math.min(...all.map((p) => p[0])), Math.max(...all.map((p) => p[0]))];
    let [y0, y1] = [Math.min(...all.map((p) => p[1])), Math.max(...all.map((p) => p[1]))];
    if (x1 === x0) x1 = x0 + 1;
    if (y1 === y0) { y0 -= 0.5; y1 += 0.5; }
    const pad = { l: 56, r: 10, t: 8, b: 22 };
    const X = (x) => pad.l + ((x - x0) / (x1 - x0)) * (width - pad.l - pad.r);
    const Y = (y) => height - pad.b - ((y - y0) / (y1 - y0)) * (height - pad.t - pad.b);
    // Axes: the value range on the left, the step range below.
    ctx.strokeStyle = "#999";
    ctx.fillStyle = "#444";
    ctx.font = "11px sans-serif";
    ctx.beginPath();
    ctx.moveTo(pad.l, pad.t);
    ctx.lineTo(pad.l, height - pad.b);
    ctx.lineTo(width - pad.r, height - pad.b);
    ctx.stroke();
    ctx.textAlign = "right";
    ctx.fillText(fmt(y1), pad.l - 4, pad.t + 8);
    ctx.fillText(fmt(y0), pad.l - 4, height - pad.b);
    ctx.textAlign = "left";
    ctx.fillText("step " + x0, pad.l, height - 6);
    ctx.textAlign = "right";
    ctx.fillText("step " + x1, width - pad.r, height - 6);
    legend.textContent = "";
    lines.forEach(([name, pts], i) => {
      const colour = COLOURS[i % COLOURS.length];
      ctx.strokeStyle = colour;
      ctx.lineWidth = 1.5;
      ctx.beginPath();
      pts.forEach(([x, y], j) => (j ? ctx.lineTo(X(x), Y(y)) : ctx.moveTo(X(x), Y(y))));
      if (pts.length === 1) ctx.arc(X(pts[0][0]), Y(pts[0][1]), 2, 0, 2 * Math.PI);
      ctx.stroke();
      const key = document.createElement("span");
      key.className = "key";
      key.style.color = colour;
      key.textContent = `${name} ${fmt(pts.length ? pts[pts.length - 1][1] : NaN)}`;
      legend.append(key);
    });
  }

  const fmt = (v) => (Math.abs(v) >= 1000 ? v.toFixed(0) : Number(v).toPrecision(3));
  return { add, lastStep };
}

// -- a job's page ---------------------------------------------------------------------------------
function jobPage(live) {
  const chartRoot = document.getElementById("charts");
  const charts = Charts(chartRoot);
  const metricsUrl = chartRoot.dataset.metrics;
  let events = null, polling = false, stop = null;

  async function loadMetrics(since) {
    const url = since >= 0 ? `${metricsUrl}?since_step=${since}` : metricsUrl;
    try {
      const res = await fetch(url, { credentials: "same-origin" });
      if (res.ok) (await res.json()).forEach(charts.add);
    } catch (_) { /* the next poll tries again */ }
  }

  // Re-render the live part (state, progress, values, grid, artifacts, cancel), keeping the grid
  // <img> when its source is unchanged so that it does not flicker.
  async function refresh() {
    const current = document.getElementById("live");
    const fresh = await fetchPart(current.dataset.refresh, "#live");
    if (fresh === GONE) return false;
    if (!fresh) return true;
    const oldGrid = current.querySelector("#grid"), newGrid = fresh.querySelector("#grid");
    if (oldGrid && newGrid && oldGrid.getAttribute("src") === newGrid.getAttribute("src")) newGrid.replaceWith(oldGrid);
    current.replaceWith(fresh);
    return !TERMINAL.includes(fresh.dataset.state);
  }

  function finish() {
    if (events) events.close();
    events = null;
    if (stop) stop();
    refresh();
    loadMetrics(charts.lastStep() - 1);
  }

  function follow() {
    if (!window.EventSource) return fallBack();
    events = new EventSource(chartRoot.dataset.events);
    events.addEventListener("metric", (e) => charts.add(JSON.parse(e.data)));
    events.addEventListener("progress", (e) => {
      const p = JSON.parse(e.data);
      const bar = document.getElementById("job-progress"), text = document.getElementById("job-steps");
      if (bar) { bar.max = Math.max(p.total_steps, 1); bar.value = p.step; }
      if (text) text.textContent = `${p.step}/${p.total_steps}`;
    });
    events.addEventListener("state", refresh);
    events.addEventListener("end", finish);
    // A stream that cannot be opened (no such route yet, a proxy that buffers) is CLOSED: poll the
    // metrics instead. A dropped stream reconnects by itself, sending Last-Event-ID.
    events.onerror = () => { if (events && events.readyState === EventSource.CLOSED) fallBack(); };
  }

  function fallBack() {
    events = null;
    polling = true;
  }

  const alive = !TERMINAL.includes(live.dataset.state);
  loadMetrics(-1).then(() => {
    if (!alive) return;
    follow();
    stop = every(POLL_MS, async () => {
      if (polling) await loadMetrics(charts.lastStep() - 1);
      const more = await refresh();
      if (!more) finish();
      return more;
    });
  });
}

document.addEventListener("DOMContentLoaded", () => {
  const rows = document.getElementById("rows");
  if (rows) jobsPage(rows);
  const live = document.getElementById("live");
  if (live) jobPage(live);
  const chooser = document.querySelector("#choose-model select");
  if (chooser) chooser.addEventListener("change", () => chooser.form.submit());
});
