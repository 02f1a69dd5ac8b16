// xlrec live dashboard: receives one snapshot per tick over server-sent events and draws
// plain SVG line charts. No libraries, nothing loaded from the internet.
"use strict";

const WINDOW_MIN_S = 30;       // the time axis grows with the data up to WINDOW_MAX_S
const WINDOW_MAX_S = 120;
const KEEP = 600;              // snapshots kept in the page
const LEGEND_MAX = 12;         // series named in a legend; the rest are counted
const PALETTE = ["#3366cc", "#dc3912", "#ff9900", "#109618", "#990099", "#0099c6",
                 "#dd4477", "#66aa00", "#b82e2e", "#316395", "#994499", "#22aa99"];
const SVG_NS = "http://www.w3.org/2000/svg";

let snapshots = [];

function colorOf(name) {
  let h = 0;
  for (const ch of name) h = (h * 31 + ch.charCodeAt(0)) >>> 0;
  return PALETTE[h % PALETTE.length];
}

// Group, topic and worker names are anyone's: an isolate (FSI ... PDI) keeps a right-to-left
// override or other bidi control in one from reversing the rest of its legend entry or row.
function isolate(name) {
  return `\u2068${name}\u2069`;
}

function fmt(value, digits = 1) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  if (Math.abs(value) >= 1e6) return (value / 1e6).toFixed(1) + "M";
  if (Math.abs(value) >= 1e4) return (value / 1e3).toFixed(1) + "k";
  return Number.isInteger(value) ? String(value) : value.toFixed(digits);
}

function fmtEta(eta, lag, rate) {
  if (eta === null) return lag > 0 && rate !== null ? "behind" : "–";
  const s = Math.round(eta);
  if (s < 60) return s + "s";
  if (s < 3600) return Math.floor(s / 60) + "m" + String(s % 60).padStart(2, "0") + "s";
  return Math.floor(s / 3600) + "h" + String(Math.floor((s % 3600) / 60)).padStart(2, "0") + "m";
}

function clock(t) {
  return new Date(t * 1000).toLocaleTimeString([], { hour12: false });
}

// Series as Map(name -> [[t, value|null], ...]) built from the snapshots with `pick`,
// which returns {name: value} for one snapshot.
function seriesOf(pick) {
  const series = new Map();
  snapshots.forEach((snap, i) => {
    const values = pick(snap);
    for (const [name, value] of Object.entries(values)) {
      if (!series.has(name)) series.set(name, new Array(i).fill(null).map((_, j) => [snapshots[j].t, null]));
      series.get(name).push([snap.t, value]);
    }
    for (const [name, points] of series) if (!(name in values)) points.push([snap.t, null]);
  });
  return series;
}

// Four grid steps of a round size (1, 2, 2.5 or 5 times a power of ten) covering `max`.
function niceStep(max, integer) {
  if (max <= 0) return integer ? 1 : 0.25;  // an empty or all-zero chart still gets a 0..1 axis
  const raw = max / 4;
  const power = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * power).find((s) => s >= raw);
  return integer ? Math.max(1, Math.ceil(step)) : step;
}

function el(name, attrs, parent) {
  const node = document.createElementNS(SVG_NS, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (parent) parent.appendChild(node);
  return node;
}

function drawChart(svgId, legendId, series, emptyText, digits = 1) {
  const integer = digits === 0;
  const svg = document.getElementById(svgId);
  const width = svg.clientWidth || 600, height = svg.clientHeight || 220;
  const pad = { left: 52, right: 12, top: 10, bottom: 24 };
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.replaceChildren();
  const now = snapshots.length ? snapshots[snapshots.length - 1].t : Date.now() / 1000;
  const span = snapshots.length ? now - snapshots[0].t : 0;
  const shown = Math.min(WINDOW_MAX_S, Math.max(WINDOW_MIN_S, span));
  const t0 = now - shown;
  let max = 0;
  for (const points of series.values())
    for (const [t, v] of points) if (t >= t0 && v !== null && v > max) max = v;
  const step = niceStep(max, integer);
  const top = 4 * step;
  const x = (t) => pad.left + ((t - t0) / shown) * (width - pad.left - pad.right);
  const y = (v) => height - pad.bottom - (v / top) * (height - pad.top - pad.bottom);

  for (let i = 0; i <= 4; i++) {
    const v = step * i;
    el("line", { x1: pad.left, x2: width - pad.right, y1: y(v), y2: y(v), class: "grid" }, svg);
    el("text", { x: pad.left - 6, y: y(v) + 4, "text-anchor": "end", class: "axis" }, svg).textContent =
      v >= 1e4 ? fmt(v) : String(Number(v.toPrecision(6)));  // 0.25 stays 0.25, 62.5 stays 62.5
  }
  for (let i = 0; i <= 4; i++) {
    const t = t0 + (shown * i) / 4;
    el("text", { x: x(t), y: height - 6, "text-anchor": i === 0 ? "start" : i === 4 ? "end" : "middle",
                 class: "axis" }, svg).textContent = clock(t);
  }
  const hasData = [...series.values()].some((points) => points.some(([t, v]) => t >= t0 && v !== null));
  if (!hasData) {
    el("text", { x: width / 2, y: height / 2, "text-anchor": "middle", class: "nodata" }, svg).textContent = emptyText;
  }
  for (const [name, points] of series) {
    let d = "", pen = false;
    for (const [t, v] of points) {
      if (t < t0 || v === null) { pen = false; continue; }
      d += `${pen ? "L" : "M"}${x(t).toFixed(1)},${y(v).toFixed(1)}`;
      pen = true;
    }
    if (d) el("path", { d, class: "series", stroke: colorOf(name), "data-series": name }, svg);
  }

  const legend = document.getElementById(legendId);
  const latest = [...series].map(([name, points]) => [name, points[points.length - 1][1]])
    .sort((a, b) => (b[1] ?? -1) - (a[1] ?? -1));
  legend.replaceChildren(...latest.slice(0, LEGEND_MAX).map(([name, value]) => {
    const item = document.createElement("span");
    const swatch = document.createElement("i");
    swatch.style.background = colorOf(name);
    const number = document.createElement("b");
    number.textContent = fmt(value, digits);
    item.append(swatch, isolate(name), number);
    return item;
  }));
  if (latest.length > LEGEND_MAX) legend.append(`+${latest.length - LEGEND_MAX} more`);
}

function renderTable(rows) {
  const body = document.querySelector("#lag-table tbody");
  if (!rows.length) {
    body.innerHTML = '<tr><td colspan="8" class="empty">no xlrec consumer group has committed offsets yet</td></tr>';
    return;
  }
  const sorted = [...rows].sort((a, b) => b.lag - a.lag || a.group.localeCompare(b.group)
    || a.topic.localeCompare(b.topic) || a.partition - b.partition);
  body.replaceChildren(...sorted.map((r) => {
    const tr = document.createElement("tr");
    Object.assign(tr.dataset, { group: r.group, topic: r.topic, partition: r.partition, lag: r.lag });
    if (r.lag > 0 && r.eta_s === null && r.rate_per_s !== null) tr.className = "behind";
    const cells = [isolate(r.group), isolate(r.topic), r.partition, r.committed, r.end_offset, r.lag,
                   fmt(r.rate_per_s), fmtEta(r.eta_s, r.lag, r.rate_per_s)];
    cells.forEach((value, i) => {
      const td = document.createElement("td");
      td.textContent = value;
      if (i === 5) td.className = "lag";
      tr.appendChild(td);
    });
    return tr;
  }));
}

function render() {
  if (!snapshots.length) return;
  const last = snapshots[snapshots.length - 1];
  const totalLag = last.lag.reduce((sum, r) => sum + r.lag, 0);
  const lagCard = document.getElementById("total-lag");
  lagCard.textContent = last.lag_error ? "?" : String(totalLag);
  lagCard.dataset.lag = last.lag_error ? "" : String(totalLag);
  lagCard.classList.toggle("alert", totalLag > 0);
  const throughput = Object.values(last.throughput).reduce((a, b) => a + b, 0);
  document.getElementById("total-throughput").textContent = fmt(throughput);
  document.getElementById("p99").textContent = last.latency.p99 === null ? "–" : fmt(last.latency.p99 * 1000);
  const dlq = Object.values(last.dead_letters).reduce((a, b) => a + b, 0);
  const dlqCard = document.getElementById("dlq-rate");
  dlqCard.textContent = fmt(dlq, 2);
  dlqCard.classList.toggle("alert", dlq > 0);
  const online = last.online || {};
  const hr = (name) => (online[name] && online[name].hr !== null ? online[name].hr : null);
  document.getElementById("online-hr").textContent = hr("all") === null ? "–" : fmt(hr("all"), 3);
  const slices = document.getElementById("online-hr-slices");
  slices.textContent = `cross-lingual ${hr("cross_lingual") === null ? "–" : fmt(hr("cross_lingual"), 3)}`
    + ` · non-English ${hr("non_english") === null ? "–" : fmt(hr("non_english"), 3)}`;
  slices.title = Object.entries(online).map(([name, v]) =>
    `${name}: ${fmt(v.events, 0)} events with a list before them, ${fmt(v.no_list, 0)} without`).join("\n");
  const up = last.workers.filter((w) => w.up).length;
  document.getElementById("workers-up").textContent = `${up}/${last.workers.length}`;
  const list = document.getElementById("workers-list");
  list.textContent = last.workers.map((w) => `${w.up ? "●" : "○"} ${isolate(w.url)}`).join("  ");
  list.title = last.workers.map((w) => `${w.url}: ${w.up ? "up" : w.error}`).join("\n");
  document.getElementById("updated").textContent = "updated " + clock(last.t);
  document.getElementById("throughput-source").textContent = last.throughput_source === "workers"
    ? "messages/s processed, summed over workers" : "messages/s consumed, from Kafka commits (no worker reachable)";
  const banner = document.getElementById("banner");
  banner.hidden = !last.lag_error;
  banner.textContent = last.lag_error || "";

  drawChart("chart-lag", "legend-lag",
    seriesOf((s) => Object.fromEntries(s.lag.map((r) => [`${isolate(r.group)} ${isolate(r.topic)}[${r.partition}]`, r.lag]))),
    "no consumer group has committed offsets", 0);
  drawChart("chart-throughput", "legend-throughput", seriesOf((s) => s.throughput), "no traffic");
  drawChart("chart-latency", "legend-latency", seriesOf((s) => {
    const v = {};
    if (s.latency.p50 !== null) v.p50 = s.latency.p50 * 1000;
    if (s.latency.p99 !== null) v.p99 = s.latency.p99 * 1000;
    return v;
  }), "no recommendations in the window");
  drawChart("chart-dlq", "legend-dlq", seriesOf((s) => s.dead_letters), "no dead letters", 2);
  drawChart("chart-online", "legend-online", seriesOf((s) => {
    const v = {};
    for (const [name, q] of Object.entries(s.online || {})) if (q.hr !== null) v[name.replace("_", "-")] = q.hr;
    return v;
  }), "no click or review after a recommendation yet", 3);
  renderTable(last.lag);
}

function setConnected(up) {
  const node = document.getElementById("connection");
  node.classList.toggle("up", up);
  node.classList.toggle("down", !up);
  node.textContent = up ? "live" : "reconnecting…";
}

function connect() {
  const source = new EventSource("events");  // the browser reconnects by itself
  source.onopen = () => setConnected(true);
  source.onerror = () => setConnected(false);
  source.addEventListener("history", (e) => { snapshots = JSON.parse(e.data); render(); });
  source.addEventListener("snapshot", (e) => {
    snapshots.push(JSON.parse(e.data));
    if (snapshots.length > KEEP) snapshots.splice(0, snapshots.length - KEEP);
    render();
  });
}

window.addEventListener("resize", render);
connect();
