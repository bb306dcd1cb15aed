/* pipeserve's live status page.
 *
 * Polls status.json (relative, so the page also works behind a path prefix) every second and
 * draws, per model: its request counters and recent latency percentiles, its graph as an SVG
 * laid out here (columns left to right), and one row of live figures per scheduled node.
 * Rates (items/s) and busy fractions come from the difference of two snapshots: the latest and
 * the one about 5 s before it (busy time is counted when a batch ends, so a shorter window of
 * slow batches would swing between 0 and 100%).
 *
 * Every text that comes from the server goes into the page through textContent or
 * setAttribute, never as markup. No libraries, nothing fetched from elsewhere.
 */
"use strict";

(() => {
  const POLL_MS = 1000;
  const HISTORY = 60; // polls kept for the sparklines
  const WINDOW_S = 5; // rates and busy fractions: over the last ~5 s of snapshots
  const MIN_INTERVAL_S = 0.25; // snapshots closer than this give no rate
  const SVG_NS = "http://www.w3.org/2000/svg"; // a namespace name, never fetched
  const DASH = "\u2013";

  const tracked = new Map(); // model name -> { p99: [], nodes: Map(node -> figures over time) }
  let polls = 0;

  // ---------------------------------------------------------------- DOM helpers

  function build(node, attrs, children) {
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value !== null && value !== undefined && value !== false) node.setAttribute(key, String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  const el = (tag, attrs, ...children) => build(document.createElement(tag), attrs, children);
  const svg = (tag, attrs, ...children) => build(document.createElementNS(SVG_NS, tag), attrs, children);
  const byId = (id) => document.getElementById(id);

  // ---------------------------------------------------------------- formatting

  const integer = (n) => Number(n || 0).toLocaleString("en-US");

  function decimal(value) {
    if (value === null || value === undefined || !Number.isFinite(value)) return DASH;
    const size = Math.abs(value);
    if (size >= 100) return value.toFixed(0);
    if (size >= 10) return value.toFixed(1);
    return value.toFixed(2);
  }

  function percent(fraction) {
    if (fraction === null || fraction === undefined) return DASH;
    return (100 * fraction).toFixed(fraction > 0 && fraction < 0.1 ? 1 : 0) + "%";
  }

  function duration(seconds) {
    const s = Math.max(0, Math.floor(seconds));
    if (s < 60) return s + " s";
    if (s < 3600) return Math.floor(s / 60) + " min " + String(s % 60).padStart(2, "0") + " s";
    const h = Math.floor(s / 3600);
    if (h < 48) return h + " h " + String(Math.floor((s % 3600) / 60)).padStart(2, "0") + " min";
    return Math.floor(h / 24) + " d " + (h % 24) + " h";
  }

  const clamp = (v, lo, hi) => Math.min(hi, Math.max(lo, v));

  function shorten(text, length) {
    return text.length <= length ? text : text.slice(0, length - 1) + "\u2026";
  }

  function push(list, value) {
    list.push(value);
    if (list.length > HISTORY) list.splice(0, list.length - HISTORY);
  }

  // ---------------------------------------------------------------- figures over time

  function track(doc) {
    const t = doc.server.time_ms / 1000;
    const seen = new Set();
    for (const model of doc.models) {
      seen.add(model.name);
      let history = tracked.get(model.name);
      if (!history) {
        history = { p99: [], nodes: new Map() };
        tracked.set(model.name, history);
      }
      if (model.latency_ms) push(history.p99, model.latency_ms.p99);
      for (const [name, figures] of Object.entries(model.nodes || {})) {
        let node = history.nodes.get(name);
        if (!node) {
          node = { snapshots: [], rate: null, busy: null, rates: [] };
          history.nodes.set(name, node);
        }
        const now = {
          t,
          items: figures.items,
          busy: figures.busy_seconds,
          instances: Math.max(1, (figures.instances || []).length),
        };
        const snapshots = node.snapshots;
        const last = snapshots[snapshots.length - 1];
        if (last && (now.items < last.items || now.busy < last.busy)) {
          snapshots.length = 0; // the model was loaded again: start over
          node.rate = null;
          node.busy = null;
          node.rates = [];
        }
        // Keep the snapshots of the window, and the last one before it (the window's start).
        while (snapshots.length > 1 && snapshots[1].t <= t - WINDOW_S) snapshots.shift();
        const base = snapshots[0];
        if (base && t - base.t >= MIN_INTERVAL_S) {
          const dt = t - base.t;
          node.rate = Math.max(0, (now.items - base.items) / dt);
          node.busy = clamp((now.busy - base.busy) / (dt * now.instances), 0, 1);
          push(node.rates, node.rate);
        }
        if (!snapshots.length || t - snapshots[snapshots.length - 1].t >= MIN_INTERVAL_S) snapshots.push(now);
      }
    }
    for (const name of [...tracked.keys()]) {
      if (!seen.has(name)) tracked.delete(name);
    }
  }

  // ---------------------------------------------------------------- small charts

  function sparkline(values, label, wide) {
    const width = wide ? 96 : 56;
    const height = 22;
    const chart = svg("svg", {
      class: "spark",
      viewBox: `0 0 ${width} ${height}`,
      width,
      height,
      role: "img",
      "aria-label": label,
    });
    chart.append(svg("title", null, label));
    const known = values.filter((v) => v !== null && v !== undefined);
    if (known.length < 2) return chart;
    const top = Math.max(...known) || 1;
    const slots = Math.max(values.length, 10); // few points yet: drawn from the left edge
    const x = (i) => (i * (width - 2)) / (slots - 1) + 1;
    const y = (v) => height - 2 - (v / top) * (height - 4);
    let path = "";
    let pen = false;
    let last = null;
    values.forEach((v, i) => {
      if (v === null || v === undefined) {
        pen = false;
        return;
      }
      path += `${pen ? "L" : "M"}${x(i).toFixed(1)},${y(v).toFixed(1)}`;
      pen = true;
      last = [x(i), y(v)];
    });
    chart.append(svg("path", { d: path, class: "spark-line" }));
    if (last) chart.append(svg("circle", { cx: last[0].toFixed(1), cy: last[1].toFixed(1), r: 1.8, class: "spark-dot" }));
    return chart;
  }

  function batchChart(figures) {
    const sizes = Object.entries(figures.batch_sizes || {})
      .map(([size, count]) => [Number(size), Number(count)])
      .filter(([size, count]) => size > 0 && count > 0)
      .sort((a, b) => a[0] - b[0]);
    if (!sizes.length) return el("span", { class: "muted" }, DASH);
    const rangeTop = figures.batch_range ? figures.batch_range[1] : 1;
    const largest = Math.max(rangeTop, ...sizes.map(([size]) => size));
    const slots = Math.min(largest, 64);
    const width = 80;
    const height = 22;
    const step = width / slots;
    const peak = Math.max(...sizes.map(([, count]) => count));
    const total = sizes.reduce((sum, [, count]) => sum + count, 0);
    const label = "batch sizes: " + sizes.map(([size, count]) => `${size}\u00d7${count}`).join(", ");
    const chart = svg("svg", { class: "hist", viewBox: `0 0 ${width} ${height}`, width, height, role: "img", "aria-label": label });
    chart.append(svg("title", null, label));
    for (const [size, count] of sizes) {
      const h = Math.max(1.5, ((height - 2) * count) / peak);
      const x = (Math.min(size, slots) - 1) * step;
      chart.append(
        svg(
          "rect",
          { x: x.toFixed(2), y: (height - 1 - h).toFixed(2), width: Math.max(1, step - 1).toFixed(2), height: h.toFixed(2) },
          svg("title", null, `size ${size}: ${integer(count)} batches (${percent(count / total)})`),
        ),
      );
    }
    chart.append(svg("line", { x1: 0, y1: height - 0.5, x2: width, y2: height - 0.5, class: "axis" }));
    return el("div", { class: "hist-cell" }, chart, el("small", { class: "muted" }, `1\u2013${largest}`));
  }

  function busyBar(fraction) {
    const pct = fraction === null ? 0 : Math.round(100 * fraction);
    const bar = el("span", { class: "bar" }, el("i", { style: `width:${pct}%;background:${heat(fraction, 48)}` }));
    return [bar, el("span", { class: "num" }, percent(fraction))];
  }

  // A busy fraction as a colour: green (idle) through amber to red (saturated).
  function heat(fraction, lightness) {
    if (fraction === null || fraction === undefined) return "var(--line)";
    const hue = Math.round(140 * (1 - clamp(fraction, 0, 1)));
    return `hsl(${hue}, 70%, ${lightness}%)`;
  }

  // ---------------------------------------------------------------- graph layout and drawing

  // Columns from left to right: a `next` edge moves one column right, a `jump` edge keeps its
  // target in the jump node's column, on a row below (a sub-request hangs under its caller).
  // Rows: each node takes the mean row of its predecessors, or the nearest free row below.
  function layout(graph) {
    const names = new Set(graph.map((node) => node.name));
    const edges = [];
    for (const node of graph) {
      for (const next of node.next || []) if (names.has(next)) edges.push({ from: node.name, to: next, jump: false });
      if (node.jump && names.has(node.jump)) edges.push({ from: node.name, to: node.jump, jump: true });
    }
    const column = new Map(graph.map((node) => [node.name, 0]));
    for (let round = 0; round <= graph.length; round += 1) {
      let changed = false;
      for (const edge of edges) {
        const wanted = column.get(edge.from) + (edge.jump ? 0 : 1);
        if (wanted > column.get(edge.to)) {
          column.set(edge.to, wanted);
          changed = true;
        }
      }
      if (!changed) break;
    }
    // Topological order (Kahn), falling back to the document's order for anything cyclic.
    const incoming = new Map(graph.map((node) => [node.name, 0]));
    for (const edge of edges) incoming.set(edge.to, incoming.get(edge.to) + 1);
    const order = [];
    const ready = graph.filter((node) => incoming.get(node.name) === 0).map((node) => node.name);
    while (ready.length) {
      const name = ready.shift();
      order.push(name);
      for (const edge of edges) {
        if (edge.from !== name) continue;
        incoming.set(edge.to, incoming.get(edge.to) - 1);
        if (incoming.get(edge.to) === 0) ready.push(edge.to);
      }
    }
    for (const node of graph) if (!order.includes(node.name)) order.push(node.name);

    const row = new Map();
    const taken = new Map(); // column -> Set of rows
    for (const name of order) {
      const wishes = [];
      for (const edge of edges) {
        if (edge.to !== name || !row.has(edge.from)) continue;
        wishes.push(row.get(edge.from) + (column.get(edge.from) === column.get(name) ? 1 : 0));
      }
      let wanted = wishes.length ? Math.floor(wishes.reduce((a, b) => a + b, 0) / wishes.length) : 0;
      const col = column.get(name);
      if (!taken.has(col)) taken.set(col, new Set());
      const rows = taken.get(col);
      while (rows.has(wanted)) wanted += 1;
      rows.add(wanted);
      row.set(name, wanted);
    }
    return { column, row, edges, order };
  }

  const BOX_W = 130;
  const BOX_H = 62;
  const GAP_X = 30;
  const GAP_Y = 26;
  const PAD = 10;

  function graphDrawing(model, index, history) {
    const graph = model.graph || [];
    const { column, row, edges } = layout(graph);
    const columns = Math.max(0, ...column.values()) + 1;
    const rows = Math.max(0, ...row.values()) + 1;
    const width = PAD * 2 + columns * BOX_W + (columns - 1) * GAP_X;
    const height = PAD * 2 + rows * BOX_H + (rows - 1) * GAP_Y;
    const at = (name) => ({ x: PAD + column.get(name) * (BOX_W + GAP_X), y: PAD + row.get(name) * (BOX_H + GAP_Y) });
    const marker = `arrow-${index}`;
    const drawing = svg("svg", {
      class: "graph",
      viewBox: `0 0 ${width} ${height}`,
      width,
      height,
      style: `max-width:${width}px`,
      role: "img",
      "aria-label": `graph of model ${model.name}`,
      "data-model": model.name,
    });
    drawing.append(
      svg(
        "defs",
        null,
        svg(
          "marker",
          { id: marker, viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" },
          svg("path", { d: "M0,0 L10,5 L0,10 z", class: "arrow-head" }),
        ),
      ),
    );
    const byName = new Map(graph.map((node) => [node.name, node]));
    for (const edge of edges) {
      const a = at(edge.from);
      const b = at(edge.to);
      let d;
      let labelAt;
      if (column.get(edge.from) === column.get(edge.to)) {
        const x = a.x + BOX_W / 2;
        const [y1, y2] = b.y > a.y ? [a.y + BOX_H, b.y] : [a.y, b.y + BOX_H];
        d = `M${x},${y1} L${x},${y2}`;
        labelAt = [x + 6, (y1 + y2) / 2 + 4];
      } else {
        const x1 = a.x + BOX_W;
        const y1 = a.y + BOX_H / 2;
        const x2 = b.x;
        const y2 = b.y + BOX_H / 2;
        const bend = Math.max(18, (x2 - x1) / 2);
        d = `M${x1},${y1} C${x1 + bend},${y1} ${x2 - bend},${y2} ${x2},${y2}`;
        labelAt = [(x1 + x2) / 2 - 10, (y1 + y2) / 2 - 5];
      }
      const kind = byName.get(edge.from).kind === "mapreduce" ? "map-reduce" : "jump";
      const line = svg("path", {
        d,
        class: edge.jump ? "edge jump" : "edge",
        "marker-end": `url(#${marker})`,
        "data-edge": edge.jump ? "jump" : "next",
      });
      drawing.append(line);
      if (edge.jump) drawing.append(svg("text", { x: labelAt[0], y: labelAt[1], class: "edge-label" }, kind));
    }
    for (const node of graph) drawing.append(graphNode(node, at(node.name), model, history));
    return drawing;
  }

  function graphNode(node, at, model, history) {
    const scheduler = node.scheduler || null;
    const figures = scheduler ? (model.nodes || {})[scheduler] : null;
    const live = scheduler ? history.nodes.get(scheduler) : null;
    const busy = live ? live.busy : null;
    const group = svg("g", {
      class: `gnode ${node.kind}`,
      "data-graph-node": node.name,
      "data-kind": node.kind,
      transform: `translate(${at.x},${at.y})`,
    });
    const details = [`${node.name} (${node.kind})`];
    if (scheduler && scheduler !== node.name) details.push(`runs on the instances of ${scheduler}`);
    if (node.jump) details.push(`${node.kind === "mapreduce" ? "map-reduce" : "jump"} to ${node.jump}`);
    if (node.filter) details.push(`filter ${node.filter}`);
    if (live && live.busy !== null) details.push(`busy ${percent(live.busy)}`);
    group.append(svg("title", null, details.join("\n")));

    if (node.kind === "compute") {
      group.append(
        svg("rect", {
          class: "box" + (scheduler !== node.name ? " logical" : ""),
          width: BOX_W,
          height: BOX_H,
          rx: 8,
          style: busy !== null && busy > 0.005 ? `fill:${heat(busy, 92)};stroke:${heat(busy, 42)}` : null,
        }),
      );
    } else {
      const c = 14; // a hexagon: sub-requests are not scheduled work
      group.append(
        svg("polygon", {
          class: "box control",
          points: `${c},0 ${BOX_W - c},0 ${BOX_W},${BOX_H / 2} ${BOX_W - c},${BOX_H} ${c},${BOX_H} 0,${BOX_H / 2}`,
        }),
      );
    }
    group.append(svg("text", { x: BOX_W / 2, y: 19, class: "gname" }, shorten(node.name, 17)));
    let subtitle;
    if (node.kind !== "compute") subtitle = node.kind === "mapreduce" ? "MapReduce" : "Jump";
    else if (scheduler !== node.name) subtitle = `on ${scheduler}`;
    else subtitle = figures && figures.backend ? figures.backend : "";
    group.append(svg("text", { x: BOX_W / 2, y: 34, class: "gsub" }, shorten(subtitle, 21)));
    if (node.kind !== "compute") {
      group.append(svg("text", { x: BOX_W / 2, y: 49, class: "gsub" }, shorten(`\u2192 ${node.jump || "?"}`, 19)));
    }
    if (figures) {
      const rate = live && live.rate !== null ? `${decimal(live.rate)}/s` : `${DASH}/s`;
      group.append(
        svg(
          "text",
          { x: BOX_W / 2, y: 49, class: "gfig" },
          svg("tspan", { "data-graph-figure": "rate" }, rate),
          " \u00b7 q",
          svg("tspan", { "data-graph-figure": "queued" }, String(figures.queued)),
          " \u00b7 ",
          svg("tspan", { "data-graph-figure": "busy" }, percent(busy)),
        ),
      );
      const fill = busy === null ? 0 : busy;
      group.append(svg("rect", { class: "busy-track", x: 8, y: BOX_H - 6, width: BOX_W - 16, height: 3, rx: 1.5 }));
      group.append(
        svg("rect", { x: 8, y: BOX_H - 6, width: ((BOX_W - 16) * fill).toFixed(1), height: 3, rx: 1.5, fill: heat(busy, 45) }),
      );
    }
    return group;
  }

  // ---------------------------------------------------------------- sections

  function counter(model, key, value, label, tone) {
    return el(
      "div",
      { class: "tile" + (tone ? " " + tone : "") },
      el("div", { class: "label" }, label),
      el("div", { class: "value" }, el("span", { "data-model": model, "data-counter": key, "data-value": value }, integer(value))),
    );
  }

  function latencyTile(model, history) {
    const latency = model.latency_ms || {};
    return el(
      "div",
      { class: "tile wide" },
      el("div", { class: "label" }, `latency, last ${integer(latency.count)} requests`),
      el(
        "div",
        { class: "value quantiles" },
        ["p50", "p90", "p99"].map((q) =>
          el(
            "span",
            { class: "quantile" },
            el("small", null, q),
            el("span", { "data-model": model.name, "data-latency": q }, decimal(latency[q])),
            el("small", null, "ms"),
          ),
        ),
        sparkline(history.p99, "p99 latency, last minute", true),
      ),
    );
  }

  function chips(title, table, attribute, model) {
    const entries = Object.entries(table || {});
    if (!entries.length) return null;
    return el(
      "div",
      { class: "chips" },
      el("span", { class: "muted" }, title),
      entries.map(([key, count]) => el("span", { class: "chip bad", "data-model": model, [attribute]: key }, `${key} `, el("b", null, integer(count)))),
    );
  }

  function figureCell(model, node, key, text, extra) {
    return el("td", { class: "num" }, el("span", { "data-model": model, "data-node": node, "data-figure": key }, text), extra || null);
  }

  function instanceDots(figures) {
    return el(
      "span",
      { class: "dots" },
      (figures.instances || []).map((instance) =>
        el("i", {
          class: "dot",
          "data-state": instance.state,
          title: `instance ${instance.index}: ${instance.state}, ${integer(instance.batches)} batches, ${integer(instance.items)} items`,
        }),
      ),
    );
  }

  function nodeTable(model, history, order) {
    const nodes = model.nodes || {};
    const names = order.filter((name) => name in nodes);
    for (const name of Object.keys(nodes)) if (!names.includes(name)) names.push(name);
    const header = [
      ["node", ""],
      ["backend", ""],
      ["items", "num"],
      ["batches", "num"],
      ["items/s", "num"],
      ["queued / running", "num"],
      ["busy", ""],
      ["batch sizes", ""],
      ["mean batch", "num"],
      ["queue / compute ms", "num"],
      ["err / exp / rej", "num"],
      ["released by", ""],
    ];
    const rows = names.map((name) => {
      const f = nodes[name];
      const live = history.nodes.get(name) || { rate: null, busy: null, rates: [] };
      const instances = (f.instances || []).length;
      const problems = (f.errors || 0) + (f.expired || 0) + (f.rejected || 0);
      const released = Object.entries(f.release_reasons || {})
        .map(([reason, count]) => `${reason.replace(/_/g, " ")} ${integer(count)}`)
        .join(" \u00b7 ");
      const kind = f.instance_kind === "process" ? " proc" : "";
      const backend = [f.backend || "?", el("small", { class: "muted", title: `${instances} ${f.instance_kind || ""} instances` }, `${kind} \u00d7${instances}`)];
      return el(
        "tr",
        { "data-model": model.name, "data-node": name },
        el("th", { scope: "row" }, name),
        el("td", null, backend, " ", instanceDots(f)),
        figureCell(model.name, name, "items", integer(f.items)),
        figureCell(model.name, name, "batches", integer(f.batches)),
        el(
          "td",
          { class: "num" },
          el(
            "div",
            { class: "rate" },
            el("span", { "data-model": model.name, "data-node": name, "data-figure": "rate" }, live.rate === null ? DASH : decimal(live.rate)),
            sparkline(live.rates, `${name}: items/s, last minute`),
          ),
        ),
        el(
          "td",
          { class: "num" },
          el("span", { "data-model": model.name, "data-node": name, "data-figure": "queued" }, integer(f.queued)),
          " / ",
          el("span", { "data-model": model.name, "data-node": name, "data-figure": "running" }, integer(f.running)),
        ),
        el("td", { class: "busy" }, busyBar(live.busy)),
        el("td", null, batchChart(f)),
        figureCell(model.name, name, "mean_batch_size", f.batches ? decimal(f.mean_batch_size) : DASH),
        el(
          "td",
          { class: "num" },
          el("span", { "data-model": model.name, "data-node": name, "data-figure": "mean_queue_ms" }, f.batches ? decimal(f.mean_queue_ms) : DASH),
          " / ",
          el("span", { "data-model": model.name, "data-node": name, "data-figure": "mean_compute_ms" }, f.batches ? decimal(f.mean_compute_ms) : DASH),
        ),
        el(
          "td",
          { class: "num" + (problems ? " bad" : "") },
          el("span", { "data-model": model.name, "data-node": name, "data-figure": "errors" }, integer(f.errors)),
          " / ",
          el("span", { "data-model": model.name, "data-node": name, "data-figure": "expired" }, integer(f.expired)),
          " / ",
          el("span", { "data-model": model.name, "data-node": name, "data-figure": "rejected" }, integer(f.rejected)),
        ),
        el("td", { class: "small released" }, released || DASH),
      );
    });
    return el(
      "div",
      { class: "table-wrap" },
      el(
        "table",
        { class: "nodes", "data-model": model.name },
        el("thead", null, el("tr", null, header.map(([label, cls]) => el("th", { class: cls || null, scope: "col" }, label)))),
        el("tbody", null, rows),
      ),
    );
  }

  function modelSection(model, index, nowMs) {
    const history = tracked.get(model.name) || { p99: [], nodes: new Map() };
    const ready = model.state === "READY";
    const tone = ready ? "ok" : model.state === "LOADING" ? "warn" : "bad";
    const head = el(
      "div",
      { class: "model-head" },
      el("h2", null, model.name),
      el("span", { class: `pill ${tone}`, "data-model": model.name, "data-state": model.state }, model.state),
    );
    if (model.entry) head.append(el("span", { class: "muted" }, "entry ", el("code", null, model.entry)));
    const last = model.counters ? model.counters.last_inference_ms : 0;
    if (last) head.append(el("span", { class: "muted" }, `last request ${duration((nowMs - last) / 1000)} ago`));
    const section = el("section", { class: "model", "data-model": model.name }, head);
    if (model.reason) section.append(el("p", { class: "reason" }, model.reason));
    if (!model.counters) return section;

    const c = model.counters;
    section.append(
      el(
        "div",
        { class: "tiles" },
        counter(model.name, "success", c.success, "requests ok"),
        counter(model.name, "fail", c.fail, "requests failed", c.fail ? "bad" : null),
        counter(model.name, "pending", model.pending, "in flight"),
        counter(model.name, "inference_count", c.inference_count, "inferences"),
        counter(model.name, "execution_count", c.execution_count, "executions"),
        latencyTile(model, history),
      ),
    );
    const failures = chips("failures by reason:", model.failures, "data-failure", model.name);
    const errors = chips("by error:", model.errors, "data-error", model.name);
    if (failures || errors) section.append(el("div", { class: "chip-row" }, failures, errors));

    const { order } = layout(model.graph || []);
    section.append(
      el(
        "figure",
        { class: "graph-wrap" },
        graphDrawing(model, index, history),
        el(
          "figcaption",
          null,
          el("span", { class: "key solid" }),
          " next  ",
          el("span", { class: "key dashed" }),
          " sub-request (jump, map-reduce)  ",
          el("span", { class: "key hex" }),
          " not scheduled  \u00b7  colour: busy fraction ",
          el("span", { class: "swatch", style: `background:${heat(0.05, 85)}` }),
          el("span", { class: "swatch", style: `background:${heat(0.5, 85)}` }),
          el("span", { class: "swatch", style: `background:${heat(1, 85)}` }),
          "  \u00b7  per box: items/s \u00b7 queued \u00b7 busy (last 5 s)",
        ),
      ),
    );
    section.append(nodeTable(model, history, order));
    const tuning = tuningPanel(model);
    if (tuning) section.append(tuning);
    return section;
  }

  // What the autotuner holds and did (NOTE [autotune]): its target, state, the knobs now and the
  // last decisions, newest first.
  function tuningPanel(model) {
    const t = model.autotune;
    if (!t) return null;
    const state = t.frozen ? "frozen" : t.settled ? "settled" : "tuning";
    const tone = t.frozen ? "warn" : "ok";
    const last = t.last
      ? `last ${decimal(t.last.throughput)}/s, p99 ${decimal(t.last.p99_ms)} ms`
      : "no sample yet";
    const head = el(
      "div",
      { class: "model-head" },
      el("h3", null, "Autotune"),
      el("span", { class: `pill ${tone}`, "data-model": model.name, "data-autotune": state }, state),
      el("span", { class: "muted" }, `target p99 ${decimal(t.p99_ms)} ms \u00b7 ${last} \u00b7 ` +
        `instances ${t.instances_used}/${t.instance_budget} \u00b7 ${integer(t.changes)} changes, ${integer(t.reverts)} reverted`),
    );
    const knobs = el(
      "table",
      { class: "nodes" },
      el("thead", null, el("tr", null, el("th", null, "node"), el("th", null, "instances"), el("th", null, "max"), el("th", null, "window ms"))),
      el(
        "tbody",
        null,
        Object.entries(t.setting).map(([node, k]) =>
          el(
            "tr",
            { "data-model": model.name, "data-tuned-node": node },
            el("td", null, el("code", null, node)),
            el("td", { class: "num" }, `${k.instances}`),
            el("td", { class: "num" }, `${k.max}`),
            el("td", { class: "num" }, decimal(k.window_ms)),
          ),
        ),
      ),
    );
    const decisions = (t.decisions || []).slice(-12).reverse();
    const log = el(
      "table",
      { class: "nodes decisions" },
      el("thead", null, el("tr", null, el("th", null, "when"), el("th", null, "what"), el("th", null, "change"), el("th", null, "why"))),
      el(
        "tbody",
        null,
        decisions.map((d) =>
          el(
            "tr",
            { "data-model": model.name, "data-decision": d.kind },
            el("td", null, new Date(d.at * 1000).toLocaleTimeString()),
            el("td", null, el("span", { class: `chip ${d.kind === "revert" ? "bad" : ""}` }, d.kind)),
            el("td", null, d.what),
            el("td", { class: "muted" }, shorten(d.why, 140)),
          ),
        ),
      ),
    );
    return el("div", { class: "autotune", "data-model": model.name }, head, knobs, decisions.length ? log : el("p", { class: "muted" }, "No decision yet."));
  }

  // ---------------------------------------------------------------- the loop

  function render(doc) {
    const server = doc.server;
    byId("version").textContent = `v${server.version}`;
    byId("uptime").textContent = duration(server.uptime_s);
    const readyCount = doc.models.filter((m) => m.state === "READY").length;
    byId("models-count").textContent = `${readyCount}/${doc.models.length} models ready`;
    const ready = byId("ready");
    ready.textContent = server.ready ? "ready" : "not ready";
    ready.className = "pill " + (server.ready ? "ok" : "bad");
    byId("updated").textContent = `updated ${new Date(server.time_ms).toLocaleTimeString()}`;
    const sections = doc.models.map((model, index) => modelSection(model, index, server.time_ms));
    if (!sections.length) sections.push(el("p", { class: "placeholder" }, "No models in the repository."));
    byId("models").replaceChildren(...sections);
    document.body.classList.remove("stale");
    document.body.dataset.polls = String(polls);
    document.body.dataset.ready = "1";
  }

  function offline(error) {
    document.body.classList.add("stale");
    const ready = byId("ready");
    ready.textContent = "unreachable, retrying";
    ready.className = "pill bad";
    byId("updated").textContent = String(error && error.message ? error.message : error);
  }

  async function poll() {
    try {
      const response = await fetch("status.json", { cache: "no-store" });
      if (!response.ok) throw new Error(`status.json: HTTP ${response.status}`);
      const doc = await response.json();
      polls += 1;
      track(doc);
      render(doc);
    } catch (error) {
      offline(error);
    } finally {
      setTimeout(poll, POLL_MS);
    }
  }

  poll();
})();
