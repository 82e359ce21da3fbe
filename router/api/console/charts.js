// Chart helpers over the vendored uPlot (vendor/uplot): time series from /v1/admin/stats
// buckets and the what-if curve. Kept apart from app.js so the page logic stays readable.
"use strict";

const PALETTE = [
  "#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2",
  "#ca8a04", "#db2777", "#4b5563", "#65a30d", "#7c3aed", "#0d9488",
];

// One colour per model name, the same in every chart for the life of the page.
const assigned = new Map();
function colorFor(name) {
  if (!assigned.has(name)) assigned.set(name, PALETTE[assigned.size % PALETTE.length]);
  return assigned.get(name);
}

// Seconds since the epoch from an ISO string or a number (seconds or milliseconds).
function toEpochSeconds(v) {
  if (typeof v === "number") return v > 1e12 ? v / 1000 : v;
  const ms = Date.parse(v);
  return Number.isNaN(ms) ? null : ms / 1000;
}

function plotWidth(el) {
  return Math.max(260, Math.floor(el.clientWidth || el.parentElement.clientWidth || 300));
}

// One line per key of `seriesOf(bucket)`, summing `valueOf(bucket)` per time bucket.
function bucketSeries(buckets, seriesOf, valueOf) {
  const xs = [...new Set(buckets.map((b) => toEpochSeconds(b.start)))]
    .filter((x) => x !== null)
    .sort((a, b) => a - b);
  const index = new Map(xs.map((x, i) => [x, i]));
  const names = [...new Set(buckets.map(seriesOf))].sort();
  const rows = new Map(names.map((n) => [n, xs.map(() => 0)]));
  for (const b of buckets) {
    const i = index.get(toEpochSeconds(b.start));
    if (i === undefined) continue;
    rows.get(seriesOf(b))[i] += Number(valueOf(b)) || 0;
  }
  return { xs, names, ys: names.map((n) => rows.get(n)) };
}

// Replace the chart in `el` (a uPlot instance kept on the element) with a new one.
// The x axis spans the whole window [from, to] (seconds), not only the buckets with traffic.
function drawTimeChart(el, buckets, valueOf, fmt, from, to) {
  if (el._plot) {
    el._plot.destroy();
    el._plot = null;
  }
  el.replaceChildren();
  const { xs, names, ys } = bucketSeries(buckets, (b) => b.model || "(none)", valueOf);
  if (!xs.length || typeof uPlot === "undefined") {
    const p = document.createElement("p");
    p.className = "muted empty";
    p.textContent = "No traffic in this window yet.";
    el.append(p);
    return;
  }
  const opts = {
    width: plotWidth(el),
    height: 220,
    legend: { live: false },
    cursor: { drag: { x: false, y: false } },
    scales: { x: { time: true, range: (u, lo, hi) => [from ?? lo, to ?? hi] } },
    axes: [{}, { values: (u, vals) => vals.map(fmt), size: 84 }],
    series: [
      {},
      ...names.map((n) => ({
        label: n,
        stroke: colorFor(n),
        width: 2,
        points: { show: xs.length < 12 },
      })),
    ],
  };
  el._plot = new uPlot(opts, [xs, ...ys], el);
}

// What-if: spend (x) against mean score (y), one point per λ; the chosen λ is ringed by a
// draw hook (a marker series would vanish where several λ give the same point).
function drawWhatIfChart(el, points, selected, fmtUsd) {
  const order = points.map((p, i) => i).sort((a, b) => points[a].spend_usd - points[b].spend_usd);
  el._mark = [points[selected].spend_usd, points[selected].mean_score];
  if (el._plot) {
    el._plot.redraw(false);
    return;
  }
  el.replaceChildren();
  if (typeof uPlot === "undefined") return;
  const ring = (u) => {
    const [x, y] = el._mark;
    const ctx = u.ctx;
    const r = 8 * devicePixelRatio;
    ctx.save();
    ctx.beginPath();
    ctx.arc(u.valToPos(x, "x", true), u.valToPos(y, "y", true), r, 0, 2 * Math.PI);
    ctx.lineWidth = 3 * devicePixelRatio;
    ctx.strokeStyle = PALETTE[1];
    ctx.stroke();
    ctx.restore();
  };
  const opts = {
    width: plotWidth(el),
    height: 220,
    legend: { show: false },
    cursor: { drag: { x: false, y: false } },
    scales: { x: { time: false } },
    axes: [
      { values: (u, vals) => vals.map(fmtUsd), label: "spend (USD)", space: 70 },
      { label: "mean score", size: 56 },
    ],
    series: [{}, { label: "λ sweep", stroke: PALETTE[0], width: 2, points: { show: true, size: 6 } }],
    hooks: { draw: [ring] },
  };
  const xs = order.map((i) => points[i].spend_usd);
  const ys = order.map((i) => points[i].mean_score);
  el._plot = new uPlot(opts, [xs, ys], el);
}

function resizeCharts() {
  for (const el of document.querySelectorAll(".plot")) {
    if (el._plot) el._plot.setSize({ width: plotWidth(el), height: 220 });
  }
}

window.P2LCharts = { drawTimeChart, drawWhatIfChart, resizeCharts, colorFor, toEpochSeconds };
