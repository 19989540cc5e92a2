// The console's live charts: traffic, latency, failures and queue depths over the last 15
// minutes or 24 hours, from GET /admin/api/stats, drawn with uPlot (uplot-1.6.32.min.js,
// served by Clarion itself: the console works offline).
//
// Each chart's figure carries what it draws as data attributes (`data-series`, the series'
// names; `data-points`, how many readings are above zero) for the browser tests, and uPlot
// writes its legend with textContent, so an error code or a queue name stays text. Uses
// window.ClarionConsole (console.js).
"use strict";

(() => {
  const C = window.ClarionConsole;
  const $ = (id) => document.getElementById(id);
  const EVERY_MS = { "15m": 5000, "24h": 60000 };
  const HEIGHT = 190;
  const CHANNEL_COLORS = { email: "#2f6fde", push: "#1c7c4a", sms: "#c2410c" };
  const LATENCY_COLORS = { p50: "#2f6fde", p99: "#b42318" };
  const section = $("charts");

  // `run` numbers the loads: only the latest one draws and sets the next timer.
  const c = { window: "15m", timer: null, plots: {}, shape: {}, run: 0 };

  // A colour per series name that stays the same from one reading to the next.
  function colorOf(name, index) {
    if (CHANNEL_COLORS[name]) return CHANNEL_COLORS[name];
    if (LATENCY_COLORS[name]) return LATENCY_COLORS[name];
    if (name === "failed.queue") return "#b42318";
    return `hsl(${Math.round((210 + index * 137.508) % 360)}, 62%, 42%)`; // golden-angle hues
  }

  function rate(value) {
    if (value === null || value === undefined) return "--";
    return value >= 100 ? `${Math.round(value)}/s` : `${Number(value.toFixed(2))}/s`;
  }

  function seconds(value) {
    if (value === null || value === undefined) return "--";
    if (value < 1) return `${Math.round(value * 1000)} ms`;
    return value < 120 ? `${Number(value.toFixed(2))} s` : `${(value / 60).toFixed(1)} min`;
  }

  const count = (value) => (value === null || value === undefined ? "--" : String(value));

  // What each chart draws from one answer: its series by name, and how to show a value.
  const CHARTS = {
    accepted: { values: (d) => d.accepted, format: rate },
    delivered: { values: (d) => d.delivered, format: rate },
    latency: { values: (d) => d.latency, format: seconds },
    failures: { values: (d) => d.failures, format: count, empty: "no failed attempt" },
    queues: { values: (d) => d.queues, format: count },
  };

  function draw(name, times, byName) {
    const figure = section.querySelector(`figure[data-chart="${name}"]`);
    const target = figure.querySelector(".plot");
    const { format, empty } = CHARTS[name];
    let names = Object.keys(byName);
    let columns = names.map((n) => byName[n]);
    if (names.length === 0) {
      // Nothing to draw (no failure at all): a flat line keeps the axes and the time span.
      names = [empty || "none"];
      columns = [times.map(() => 0)];
    }
    const points = columns.reduce((sum, col) => sum + col.filter((v) => v !== null && v > 0).length, 0);
    figure.dataset.series = names.join(",");
    figure.dataset.points = String(points);
    const shape = `${names.join("\u0000")}|${times.length}`;
    const data = [times, ...columns];
    const width = Math.max(280, target.clientWidth || figure.clientWidth || 600);
    if (c.plots[name] && c.shape[name] === shape) {
      c.plots[name].setData(data);
      return;
    }
    if (c.plots[name]) c.plots[name].destroy();
    c.shape[name] = shape;
    c.plots[name] = new window.uPlot({
      width,
      height: HEIGHT,
      scales: { x: { time: true }, y: { range: (u, min, max) => [0, Math.max(max, name === "latency" ? 0.01 : 1)] } },
      series: [{ value: (u, v) => (v === null ? "--" : C.clock(v)) },
        // Latency has gaps (no delivery, no reading): its points are drawn, or a lone one
        // would not show at all.
        ...names.map((n, i) => ({ label: n, stroke: colorOf(n, i), width: 1.5,
          points: name === "latency" ? { show: true, size: 5, fill: colorOf(n, i) } : { show: false },
          value: (u, v) => format(v) }))],
      axes: [{}, { size: 64, values: (u, ticks) => ticks.map((v) => format(v)) }],
      cursor: { drag: { x: false, y: false } },
      legend: { live: true },
    }, data, target);
  }

  function summarize(d) {
    const t = d.totals || {};
    const p99 = d.latency.p99.filter((v) => v !== null);
    const window = d.window === "24h" ? "last 24 hours, 5-minute buckets" : "last 15 minutes, 10-second buckets";
    const some = (n, one, many) => `${n ?? 0} ${n === 1 ? one : many}`;
    $("charts-summary").textContent = `${window}: ${some(t.accepted, "channel", "channels")}` +
      ` accepted, ${t.delivered ?? 0} delivered, ${some(t.failures, "failed attempt", "failed attempts")}` +
      (p99.length ? `; worst p99 ${seconds(Math.max(...p99))}` : "") +
      `; ${some(d.queue_readings, "queue reading", "queue readings")}`;
    section.querySelector("figure[data-chart='failures'] .bucket").textContent =
      d.step >= 60 ? `per ${d.step / 60} minutes` : `per ${d.step} seconds`;
  }

  async function load() {
    const run = ++c.run;
    clearTimeout(c.timer);
    try {
      if (!window.uPlot) throw new Error("the chart library did not load");
      const { data } = await C.api("GET", `/admin/api/stats?window=${c.window}`);
      if (run !== c.run) return; // the window changed meanwhile: a newer load draws
      for (const name of Object.keys(CHARTS)) draw(name, data.times, CHARTS[name].values(data));
      summarize(data);
      section.dataset.window = data.window;
      C.sectionError("charts");
    } catch (err) {
      if (run === c.run) C.sectionError("charts", err);
    } finally {
      if (run === c.run) c.timer = setTimeout(load, EVERY_MS[c.window]);
    }
  }

  for (const button of section.querySelectorAll("[data-window]")) {
    button.addEventListener("click", () => {
      c.window = button.dataset.window;
      for (const b of section.querySelectorAll("[data-window]")) {
        b.setAttribute("aria-pressed", String(b === button));
      }
      $("charts-summary").textContent = "…";
      load();
    });
  }

  let resizing = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizing);
    resizing = setTimeout(() => {
      for (const [name, plot] of Object.entries(c.plots)) {
        const target = section.querySelector(`figure[data-chart="${name}"] .plot`);
        plot.setSize({ width: Math.max(280, target.clientWidth), height: HEIGHT });
      }
    }, 150);
  });

  document.addEventListener("DOMContentLoaded", load);
})();
