// nodehub console: a live view of the fleet, refreshed every second.
//
// Reads GET /v1/stats?include=pairs,hubs,recent,rooms and one page of GET /v1/nodes
// (never the whole fleet), with the admin token the operator gave (kept in
// sessionStorage: this tab only). Drains and undrains nodes with
// POST /v1/nodes/<id>/drain|undrain; opens job records with GET /v1/jobs/<id>.
// Everything from the hub is set as text (textContent), never as HTML.
"use strict";

(() => {
  const TOKEN_KEY = "nodehub.token";
  const PAGE = 100;            // nodes shown at once
  const MAX_HOPS = 8;          // /v1/nodes continuations followed to fill a filtered page
  const REFRESH_MS = 1000;
  const QUEUE_SAMPLES = 300;   // queue depth kept since the page opened (one a second)
  const PAIRS_SHOWN = 15;
  const SVG = "http://www.w3.org/2000/svg";

  const $ = (id) => document.getElementById(id);

  const state = {
    token: null,
    needToken: false,
    cursor: null,       // the `after` of the page shown (null: the first page)
    back: [],           // cursors of the pages before it
    next: null,         // X-Next-After of the page shown
    filters: { pool: "", status: "", hub: "" },
    from: "",           // "from node id" jump: the page starts at this id
    selected: null,     // node id shown in the detail panel
    busy: false,
    again: false,       // navigation happened while a refresh was in flight
    view: 0,            // bumped by every navigation: a page fetched for an older one is dropped
    queue: [],
    rows: new Map(),    // node id -> row element
    lastOk: 0,
    stats: null,
  };

  class HttpError extends Error {
    constructor(status, code, message) {
      super(message || `HTTP ${status}`);
      this.status = status;
      this.code = code;
    }
  }

  // --- the token ------------------------------------------------------------------

  function loadToken() {
    const hash = location.hash;
    if (hash.startsWith("#token=")) {
      // A link from `hub demo`: take the token, then drop it from the address bar.
      const token = decodeURIComponent(hash.slice("#token=".length)).trim();
      if (token) sessionStorage.setItem(TOKEN_KEY, token);
      history.replaceState(null, "", location.pathname + location.search);
    }
    state.token = sessionStorage.getItem(TOKEN_KEY);
    $("forget-token").hidden = !state.token;
  }

  function setToken(token) {
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    else sessionStorage.removeItem(TOKEN_KEY);
    state.token = token || null;
    $("forget-token").hidden = !state.token;
  }

  function askToken(why) {
    state.needToken = true;
    $("login").hidden = false;
    $("main").classList.add("locked");
    $("login-error").textContent = why || "";
    setConn("wait", "needs a token");
    $("token-input").focus();
  }

  // --- HTTP -----------------------------------------------------------------------

  async function api(path, { method = "GET" } = {}) {
    const headers = { Accept: "application/json" };
    if (state.token) headers.Authorization = `Bearer ${state.token}`;
    const resp = await fetch(path, { method, headers, cache: "no-store", credentials: "omit" });
    if (!resp.ok) {
      let code = "", message = "";
      try {
        const body = await resp.json();
        code = body.error || "";
        message = body.message || body.error || "";
      } catch (_) { /* not JSON */ }
      throw new HttpError(resp.status, code, message || `HTTP ${resp.status}`);
    }
    return resp;
  }

  async function getJson(path) {
    const resp = await api(path);
    return [await resp.json(), resp.headers];
  }

  // --- small DOM helpers ----------------------------------------------------------

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function bar(busy, total) {
    const outer = el("div", "bar");
    const fill = el("div", "fill");
    setBar(fill, busy, total);
    outer.append(fill);
    return outer;
  }

  function setBar(fill, busy, total) {
    const ratio = total > 0 ? Math.min(1, busy / total) : 0;
    fill.style.width = `${(ratio * 100).toFixed(1)}%`;
    fill.classList.toggle("hot", ratio >= 0.9);
    fill.classList.toggle("warm", ratio >= 0.6 && ratio < 0.9);
  }

  function fmt(n) {
    return typeof n === "number" ? n.toLocaleString("en-US") : "–";
  }

  function ms(value) {
    if (value === null || value === undefined) return "–";
    if (value >= 1000) return `${(value / 1000).toFixed(2)} s`;
    if (value >= 10) return `${value.toFixed(0)} ms`;
    return `${value.toFixed(1)} ms`;
  }

  function setConn(kind, text) {
    const conn = $("conn");
    conn.className = `conn ${kind}`;
    conn.textContent = text;
  }

  function fillTable(id, rows) {
    const body = $(id).tBodies[0];
    body.replaceChildren(...rows);
  }

  function cell(content) {
    const td = el("td");
    if (content instanceof Node) td.append(content);
    else td.textContent = content === undefined || content === null ? "" : String(content);
    return td;
  }

  function row(cells, onClick) {
    const tr = el("tr");
    tr.append(...cells.map(cell));
    if (onClick) {
      tr.classList.add("clickable");
      tr.addEventListener("click", onClick);
    }
    return tr;
  }

  function slots(slotsView) {
    const wrap = el("div", "slots");
    wrap.append(bar(slotsView.busy, slotsView.total),
      el("span", "num", `${fmt(slotsView.busy)} / ${fmt(slotsView.total)}`));
    return wrap;
  }

  // --- stats ----------------------------------------------------------------------

  function renderStats(stats) {
    state.stats = stats;
    const nodes = stats.nodes;
    const total = nodes.online + nodes.draining + nodes.offline;
    $("nodes-total").textContent = fmt(total);
    $("nodes-online").textContent = fmt(nodes.online);
    $("nodes-draining").textContent = fmt(nodes.draining);
    $("nodes-offline").textContent = fmt(nodes.offline);
    $("slots-busy").textContent = fmt(stats.slots.busy);
    $("slots-total").textContent = fmt(stats.slots.total);
    setBar($("slots-bar"), stats.slots.busy, stats.slots.total);
    $("jobs-active").textContent = fmt(stats.jobs.active);
    $("jobs-queued").textContent = fmt(stats.jobs.queued);
    $("jobs-per-s").textContent = stats.jobs_per_s.toFixed(1);
    if (stats.live) $("live-sessions").textContent = fmt(stats.live.sessions);
    const utterances = stats.utterances;
    if (utterances) {
      $("utt-finished").textContent = fmt(utterances.finished);
      $("utt-p50").textContent = ms(utterances.p50_ms);
      $("utt-p99").textContent = ms(utterances.p99_ms);
    }
    const recent = stats.recent;
    if (recent) {
      $("jobs-finished").textContent = fmt(recent.finished_total);
      $("rtt-p50").textContent = ms(recent.p50_ms);
      $("rtt-p99").textContent = ms(recent.p99_ms);
      drawJobs(recent);
      drawRtt(recent);
      renderFailures(recent);
    }
    state.queue.push(stats.jobs.queued);
    if (state.queue.length > QUEUE_SAMPLES) state.queue.shift();
    drawSpark($("queue-spark"), state.queue);
    renderPools(stats.pools);
    if (stats.pairs) renderPairs(stats.pairs);
    if (stats.rooms) renderRooms(stats.rooms);
    if (stats.hubs) renderHubs(stats.hubs);
  }

  function renderPools(pools) {
    const keys = Object.keys(pools).sort((a, b) => Number(a) - Number(b));
    fillTable("pools", keys.map((key) => {
      const pool = pools[key];
      const tr = row([key, fmt(pool.nodes), fmt(pool.status.draining || 0), slots(pool.slots)],
        () => setFilter("pool", key));
      tr.classList.toggle("chosen", state.filters.pool === key);
      return tr;
    }));
    const select = $("f-pool");
    const wanted = ["", ...keys];
    const have = [...select.options].map((o) => o.value);
    if (wanted.join(",") !== have.join(",")) {
      const current = select.value;
      select.replaceChildren(...wanted.map((k) => {
        const option = el("option", "", k === "" ? "all" : k);
        option.value = k;
        return option;
      }));
      select.value = wanted.includes(current) ? current : "";
    }
  }

  function renderRooms(rooms) {
    fillTable("rooms", rooms.map((r) => row([r.room, fmt(r.members), fmt(r.speakers), r.langs.join(", ")])));
    $("rooms-none").hidden = rooms.length > 0;
  }

  function renderPairs(pairs) {
    const shown = pairs.top.slice(0, PAIRS_SHOWN);
    fillTable("pairs", shown.map((p) => row([`${p.src} → ${p.tgt}`, fmt(p.nodes), slots(p.slots)])));
    const more = pairs.total - shown.length;
    $("pairs-more").textContent = more > 0 ? `top ${shown.length} of ${fmt(pairs.total)}` : "";
  }

  function renderHubs(hubs) {
    const me = hubs.find((h) => h.self);
    if (me) $("hub-id").textContent = me.hub_id;
    $("mode").textContent = hubs.length > 1 ? `cross-instance · ${hubs.length} hubs` : "local";
    $("node-list").classList.toggle("one-hub", hubs.length === 1);
    fillTable("hubs", hubs.map((h) => {
      const tag = el("span", `badge ${h.live ? "online" : "offline"}`, h.live ? (h.self ? "this hub" : "live") : "gone");
      const tr = row([h.hub_id, tag, fmt(h.nodes), slots(h.slots)], () => setFilter("hub", h.hub_id));
      tr.classList.toggle("chosen", state.filters.hub === h.hub_id);
      return tr;
    }));
    const select = $("f-hub");
    const wanted = ["", ...hubs.map((h) => h.hub_id)];
    const have = [...select.options].map((o) => o.value);
    if (wanted.join(",") !== have.join(",")) {
      const current = select.value;
      select.replaceChildren(...wanted.map((k) => {
        const option = el("option", "", k === "" ? "all" : k);
        option.value = k;
        return option;
      }));
      select.value = wanted.includes(current) ? current : "";
    }
  }

  function renderFailures(recent) {
    const rows = [];
    for (const [reason, count] of Object.entries(recent.failed)) {
      rows.push([reason, "result", count]);
    }
    for (const [reason, count] of Object.entries(recent.rejected)) {
      rows.push([reason, "rejected", count]);
    }
    rows.sort((a, b) => b[2] - a[2] || a[0].localeCompare(b[0]));
    fillTable("failures", rows.map(([reason, kind, count]) => row([reason, kind, fmt(count)])));
    $("failures-none").hidden = rows.length > 0;
  }

  // --- charts (plain SVG) ---------------------------------------------------------

  function svgEl(tag, attrs) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    return node;
  }

  function frame(svg) {
    const width = Math.max(200, svg.clientWidth || 400);
    const height = Math.max(100, svg.clientHeight || 150);
    svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
    return { width, height, left: 44, right: 8, top: 8, bottom: 18 };
  }

  function axes(svg, f, maxY) {
    const g = svgEl("g", { class: "axes" });
    const plotH = f.height - f.top - f.bottom;
    for (const frac of [0, 0.5, 1]) {
      const y = f.top + plotH * (1 - frac);
      g.append(svgEl("line", { x1: f.left, x2: f.width - f.right, y1: y, y2: y, class: "grid" }));
      const label = svgEl("text", { x: f.left - 4, y: y + 3, "text-anchor": "end" });
      label.textContent = niceNumber(maxY * frac);
      g.append(label);
    }
    const left = svgEl("text", { x: f.left, y: f.height - 4 });
    left.textContent = "−5 min";
    const right = svgEl("text", { x: f.width - f.right, y: f.height - 4, "text-anchor": "end" });
    right.textContent = "now";
    g.append(left, right);
    svg.append(g);
  }

  function niceNumber(v) {
    if (v === 0) return "0";
    if (v >= 10 || Number.isInteger(v)) return v.toFixed(0);
    return v.toPrecision(2);
  }

  function niceMax(v) {
    if (!(v > 0)) return 1;
    const p = 10 ** Math.floor(Math.log10(v));
    for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p;
    return 10 * p;
  }

  function xs(f, n) {
    const plotW = f.width - f.left - f.right;
    return (i) => f.left + (n <= 1 ? plotW : (plotW * i) / (n - 1));
  }

  function path(points) {
    let d = "";
    let pen = false;
    for (const [x, y] of points) {
      if (y === null) { pen = false; continue; }
      d += `${pen ? "L" : "M"}${x.toFixed(1)},${y.toFixed(1)}`;
      pen = true;
    }
    return d;
  }

  function drawJobs(recent) {
    const svg = $("chart-jobs");
    const s = recent.series;
    const n = s.finished.length;
    const per = recent.bucket_s;
    const ok = s.ok.map((v) => v / per);
    const failed = s.finished.map((v, i) => (v - s.ok[i]) / per);
    const rejected = s.rejected.map((v) => v / per);
    const top = niceMax(Math.max(0, ...ok.map((v, i) => v + failed[i]), ...rejected));
    const f = frame(svg);
    svg.replaceChildren();
    axes(svg, f, top);
    const x = xs(f, n);
    const plotH = f.height - f.top - f.bottom;
    const y = (v) => f.top + plotH * (1 - v / top);
    const base = f.top + plotH;
    const area = (vals, lift) => {
      let d = `M${x(0).toFixed(1)},${base}`;
      vals.forEach((v, i) => { d += `L${x(i).toFixed(1)},${y(v + (lift ? lift[i] : 0)).toFixed(1)}`; });
      d += `L${x(n - 1).toFixed(1)},${base}Z`;
      return d;
    };
    svg.append(svgEl("path", { d: area(failed, ok), class: "area failed" }));
    svg.append(svgEl("path", { d: area(ok), class: "area ok" }));
    svg.append(svgEl("path", { d: path(rejected.map((v, i) => [x(i), y(v)])), class: "line rejected" }));
    hover(svg, f, n, $("jobs-readout"), (i) =>
      `${ago(s.ago_s[i])}: ${niceNumber(ok[i])} ok/s, ${niceNumber(failed[i])} failed/s, ${niceNumber(rejected[i])} rejected/s`);
  }

  function logAxes(svg, f, lo, hi) {
    // A log-scale y axis from 10^lo to 10^hi ms: p50 and p99 are often decades apart.
    const g = svgEl("g", { class: "axes" });
    const plotH = f.height - f.top - f.bottom;
    for (let e = lo; e <= hi; e++) {
      const y = f.top + plotH * (1 - (e - lo) / (hi - lo));
      g.append(svgEl("line", { x1: f.left, x2: f.width - f.right, y1: y, y2: y, class: "grid" }));
      const label = svgEl("text", { x: f.left - 4, y: y + 3, "text-anchor": "end" });
      const v = 10 ** e;
      label.textContent = v >= 1000 ? `${v / 1000} s` : `${v} ms`;
      g.append(label);
    }
    const left = svgEl("text", { x: f.left, y: f.height - 4 });
    left.textContent = "−5 min";
    const right = svgEl("text", { x: f.width - f.right, y: f.height - 4, "text-anchor": "end" });
    right.textContent = "now";
    g.append(left, right);
    svg.append(g);
  }

  function drawRtt(recent) {
    const svg = $("chart-rtt");
    const s = recent.series;
    const n = s.p50_ms.length;
    const values = [...s.p50_ms, ...s.p99_ms].filter((v) => v !== null && v > 0);
    const lo = values.length ? Math.floor(Math.log10(Math.min(...values))) : 0;
    const hi = Math.max(lo + 1, values.length ? Math.ceil(Math.log10(Math.max(...values))) : 2);
    const f = frame(svg);
    svg.replaceChildren();
    logAxes(svg, f, lo, hi);
    const x = xs(f, n);
    const plotH = f.height - f.top - f.bottom;
    const y = (v) => (v === null || v <= 0 ? null
      : f.top + plotH * (1 - (Math.log10(v) - lo) / (hi - lo)));
    svg.append(svgEl("path", { d: path(s.p99_ms.map((v, i) => [x(i), y(v)])), class: "line p99" }));
    svg.append(svgEl("path", { d: path(s.p50_ms.map((v, i) => [x(i), y(v)])), class: "line p50" }));
    hover(svg, f, n, $("rtt-readout"), (i) =>
      `${ago(s.ago_s[i])}: p50 ${ms(s.p50_ms[i])}, p99 ${ms(s.p99_ms[i])}`);
  }

  function ago(seconds) {
    return seconds < 60 ? `${Math.round(seconds)} s ago` : `${(seconds / 60).toFixed(1)} min ago`;
  }

  function hover(svg, f, n, readout, describe) {
    svg.onmousemove = (event) => {
      const box = svg.getBoundingClientRect();
      const scale = f.width / box.width;
      const px = (event.clientX - box.left) * scale;
      const plotW = f.width - f.left - f.right;
      const i = Math.round(((px - f.left) / plotW) * (n - 1));
      readout.textContent = i >= 0 && i < n ? describe(i) : "";
    };
    svg.onmouseleave = () => { readout.textContent = ""; };
  }

  function drawSpark(svg, values) {
    svg.replaceChildren();
    if (values.length < 2) return;
    const top = Math.max(1, ...values);
    const n = values.length;
    const pts = values.map((v, i) => [(120 * i) / (QUEUE_SAMPLES - 1) + 120 * (1 - (n - 1) / (QUEUE_SAMPLES - 1)), 23 - (22 * v) / top]);
    svg.append(svgEl("path", { d: path(pts), class: "line spark-line" }));
  }

  // --- nodes ----------------------------------------------------------------------

  function before(id) {
    // An `after` cursor that lists `id` itself and everything past it: the ids are in
    // code point order, so the last code point minus one, then the highest one.
    const points = [...id];
    if (!points.length) return null;
    const last = points.pop().codePointAt(0);
    if (last === 0) return points.join("") || null;
    let prev = last - 1;
    if (prev >= 0xd800 && prev <= 0xdfff) prev = 0xd7ff;
    return points.join("") + String.fromCodePoint(prev) + String.fromCodePoint(0x10ffff);
  }

  function nodeQuery(after, limit) {
    const q = new URLSearchParams({ limit: String(limit) });
    if (after !== null) q.set("after", after);
    if (state.filters.pool !== "") q.set("pool", state.filters.pool);
    if (state.filters.status !== "") q.set("status", state.filters.status);
    if (state.filters.hub !== "") q.set("hub_id", state.filters.hub);
    return `/v1/nodes?${q}`;
  }

  async function fetchPage() {
    // One page of the filtered fleet: follow short pages (a filter that matches few
    // nodes) a bounded number of times.
    const nodes = [];
    let after = state.cursor;
    let next = null;
    for (let hop = 0; hop < MAX_HOPS && nodes.length < PAGE; hop++) {
      const [page, headers] = await getJson(nodeQuery(after, PAGE - nodes.length));
      nodes.push(...page);
      next = headers.get("X-Next-After");
      if (next === null) break;
      after = next;
    }
    return { nodes, next };
  }

  function nodeRow(node) {
    const div = el("div", "node");
    div.setAttribute("role", "listitem");
    div.dataset.nodeId = node.node_id;
    div.tabIndex = 0;
    const dot = el("span", "dot");
    const name = el("span", "nid");
    const hub = el("span", "nhub");
    const pool = el("span", "npool");
    const load = bar(0, 1);
    const num = el("span", "num");
    div.append(dot, name, hub, pool, load, num);
    div.addEventListener("click", () => select(node.node_id));
    div.addEventListener("keydown", (e) => { if (e.key === "Enter") select(div.dataset.nodeId); });
    return div;
  }

  function renderNodes(nodes) {
    const list = $("node-list");
    const seen = new Set();
    const ordered = [];
    for (const node of nodes) {
      let div = state.rows.get(node.node_id);
      if (!div) {
        div = nodeRow(node);
        state.rows.set(node.node_id, div);
      }
      seen.add(node.node_id);
      const [dot, name, hub, pool, load, num] = div.children;
      dot.className = `dot ${node.status}`;
      dot.title = node.status;
      name.textContent = node.node_id;
      hub.textContent = node.hub_id;
      pool.textContent = `pool ${node.pool}`;
      setBar(load.firstChild, node.running, node.max_concurrency);
      num.textContent = `${node.running} / ${node.max_concurrency}`;
      div.classList.toggle("chosen", node.node_id === state.selected);
      div.classList.toggle("draining", node.status !== "online");
      ordered.push(div);
    }
    for (const id of [...state.rows.keys()]) if (!seen.has(id)) state.rows.delete(id);
    list.replaceChildren(...ordered);
    $("nodes-none").hidden = nodes.length > 0;
    const start = state.back.length * PAGE;
    const total = filteredTotal();
    const range = nodes.length ? `${fmt(start + 1)}–${fmt(start + nodes.length)}` : "none";
    $("nodes-range").textContent = total === null ? range : `${range} of ${fmt(total)}`;
    $("prev-page").disabled = state.back.length === 0 && state.cursor === null;
    $("first-page").disabled = state.back.length === 0 && state.cursor === null;
    $("next-page").disabled = state.next === null;
  }

  function filteredTotal() {
    // The size of the filtered fleet, from /v1/stats (null when it cannot say).
    const s = state.stats;
    if (!s || state.from) return null;
    const { pool, status, hub } = state.filters;
    if (hub !== "") {
      if (pool !== "") return null;
      const h = (s.hubs || []).find((x) => x.hub_id === hub);
      if (!h) return 0;
      return status !== "" ? h.status[status] || 0 : h.nodes;
    }
    if (pool !== "") {
      const p = s.pools[pool];
      if (!p) return 0;
      return status !== "" ? p.status[status] || 0 : p.nodes;
    }
    if (status !== "") return s.nodes[status];
    return s.nodes.online + s.nodes.draining + s.nodes.offline;
  }

  function setFilter(name, value) {
    state.filters[name] = state.filters[name] === value ? "" : value;
    $("f-pool").value = state.filters.pool;
    $("f-status").value = state.filters.status;
    $("f-hub").value = state.filters.hub;
    resetPaging();
  }

  function resetPaging() {
    state.back = [];
    state.cursor = state.from ? before(state.from) : null;
    state.next = null;
    navigate();
  }

  // --- one node -------------------------------------------------------------------

  async function findNode(id) {
    const q = new URLSearchParams({ limit: "1" });
    const after = before(id);
    if (after !== null) q.set("after", after);
    const [page] = await getJson(`/v1/nodes?${q}`);
    return page.length && page[0].node_id === id ? page[0] : null;
  }

  function select(id) {
    state.selected = id;
    $("d-action").textContent = "";
    for (const [nid, div] of state.rows) div.classList.toggle("chosen", nid === id);
    $("detail").hidden = false;
    $("nodes-body").classList.add("with-detail");
    refreshDetail();
  }

  function list(values) {
    return values && values.length ? values.join(", ") : "–";
  }

  function renderDetail(node) {
    $("d-node-id").textContent = state.selected;
    $("d-missing").textContent = node ? "" : "not in the fleet (left, or never joined)";
    const status = $("d-status");
    status.textContent = node ? node.status : "gone";
    status.className = `badge ${node ? node.status : "offline"}`;
    if (!node) return;
    const caps = node.capabilities || {};
    $("d-hub").textContent = node.hub_id;
    $("d-pool").textContent = String(node.pool);
    $("d-running").textContent = `${node.running} / ${node.max_concurrency}`;
    setBar($("d-bar"), node.running, node.max_concurrency);
    $("d-version").textContent = node.version || "–";
    const rep = node.reported;
    $("d-reported").textContent = rep && Object.keys(rep).length
      ? Object.entries(rep).map(([k, v]) => `${k} ${v}`).join(", ")
      : rep === null ? "(on another hub)" : "–";
    $("d-pairs").textContent = list((caps.language_pairs || []).map((p) => `${p.src}→${p.tgt}`));
    $("d-asr").textContent = list(caps.asr_languages);
    $("d-tts").textContent = list(caps.tts_languages);
    $("d-features").textContent = list(caps.features);
    $("d-labels").textContent = caps.labels
      ? Object.entries(caps.labels).map(([k, v]) => `${k}=${v}`).join(", ") : "–";
    $("drain-btn").disabled = node.status === "draining";
    $("undrain-btn").disabled = node.status !== "draining";
  }

  async function refreshDetail() {
    if (state.selected === null) return;
    const id = state.selected;
    try {
      const node = await findNode(id);
      if (state.selected === id) renderDetail(node);
    } catch (err) {
      handleError(err);
    }
  }

  async function nodeAction(action) {
    const id = state.selected;
    if (id === null) return;
    const note = $("d-action");
    note.textContent = `${action}…`;
    try {
      await api(`/v1/nodes/${encodeURIComponent(id)}/${action}`, { method: "POST" });
      note.textContent = `${action} done: the hub ${action === "drain" ? "sends it no new jobs" : "sends it jobs again"}.`;
      navigate();
    } catch (err) {
      if (err instanceof HttpError && err.status === 404 && err.code === "not_found") {
        note.textContent = "this hub has no admin API (POST /v1/nodes/<id>/drain): upgrade it.";
      } else if (err instanceof HttpError && err.status === 404) {
        note.textContent = "the hub does not know this node (it left).";
      } else {
        note.textContent = `${action} failed: ${err.message}`;
        handleError(err);
      }
    }
  }

  // --- jobs -----------------------------------------------------------------------

  function fact(dl, name, value) {
    dl.append(el("dt", "", name), el("dd", "", value));
  }

  function when(msValue) {
    return msValue ? new Date(msValue).toLocaleString() : "–";
  }

  async function openJob(id) {
    const dialog = $("job-dialog");
    $("j-id").textContent = id;
    $("j-error").textContent = "";
    $("j-facts").replaceChildren();
    fillTable("j-attempts", []);
    $("j-result").textContent = "";
    if (!dialog.open) dialog.showModal();
    try {
      const [job] = await getJson(`/v1/jobs/${encodeURIComponent(id)}`);
      const dl = $("j-facts");
      fact(dl, "status", job.status + (job.state ? ` (${job.state})` : ""));
      fact(dl, "request", job.request_id);
      fact(dl, "tenant", job.tenant);
      fact(dl, "languages", `${job.src_lang} → ${job.tgt_lang}`);
      const p = job.pipeline;
      fact(dl, "pipeline", p ? Object.entries(p).filter(([, on]) => on).map(([k]) => k).join(" + ") || "none" : "–");
      fact(dl, "features", list(job.features));
      fact(dl, "node", job.node_id || "–");
      fact(dl, "home hub", job.hub_id || "–");
      fact(dl, "created", when(job.created_ms));
      fact(dl, "excluded", list(job.excluded));
      if (job.orphaned) fact(dl, "orphaned", "yes: its home hub died; the node's hub kept the result");
      fillTable("j-attempts", (job.attempts || []).map((a) =>
        row([a.attempt, a.node_id, when(a.started_ms), a.outcome])));
      $("j-result").textContent = job.result ? JSON.stringify(job.result, null, 2) : "(not finished)";
    } catch (err) {
      $("j-error").textContent = err instanceof HttpError && err.status === 404
        ? "No such job on this hub (an active job is visible on its home hub only; a finished one for idempotency_ttl_ms)."
        : `Cannot read the job: ${err.message}`;
      handleError(err);
    }
  }

  // --- the refresh loop -----------------------------------------------------------

  function handleError(err) {
    if (err instanceof HttpError && err.status === 401) {
      askToken(state.token ? `The hub refused the token: ${err.message}` : "");
      return true;
    }
    if (err instanceof HttpError && err.status === 403) {
      askToken(`Not allowed: ${err.message}. The console needs a token with role admin.`);
      return true;
    }
    return false;
  }

  function navigate() {
    state.view += 1;
    if (state.busy) state.again = true;
    else refresh();
  }

  async function refresh() {
    if (state.needToken) return;
    if (state.busy) return;
    state.busy = true;
    const view = state.view;
    try {
      const [[stats], page] = await Promise.all([
        getJson("/v1/stats?include=pairs,hubs,recent,rooms"),
        fetchPage(),
      ]);
      renderStats(stats);
      if (view === state.view) {
        state.next = page.next;
        renderNodes(page.nodes);
      }
      if (state.selected !== null) await refreshDetail();
      state.lastOk = Date.now();
      setConn("live", "live");
    } catch (err) {
      if (!handleError(err)) {
        const age = state.lastOk ? ` (last update ${Math.round((Date.now() - state.lastOk) / 1000)} s ago)` : "";
        setConn("down", `unreachable${age}`);
      }
    } finally {
      state.busy = false;
      if (state.again) {
        state.again = false;
        refresh();
      }
    }
  }

  function tick() {
    if (!document.hidden) refresh();
  }

  // --- wiring ---------------------------------------------------------------------

  function wire() {
    $("token-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const token = $("token-input").value.trim();
      if (!token) return;
      setToken(token);
      $("token-input").value = "";
      state.needToken = false;
      $("login").hidden = true;
      $("main").classList.remove("locked");
      setConn("wait", "connecting");
      refresh();
    });
    $("forget-token").addEventListener("click", () => {
      setToken(null);
      askToken("");
    });
    $("job-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const id = $("job-id").value.trim();
      if (id) openJob(id);
    });
    $("j-close").addEventListener("click", () => $("job-dialog").close());
    $("d-close").addEventListener("click", () => {
      state.selected = null;
      $("detail").hidden = true;
      $("nodes-body").classList.remove("with-detail");
      for (const div of state.rows.values()) div.classList.remove("chosen");
    });
    $("drain-btn").addEventListener("click", () => nodeAction("drain"));
    $("undrain-btn").addEventListener("click", () => nodeAction("undrain"));
    $("filters").addEventListener("submit", (e) => {
      e.preventDefault();
      state.filters.pool = $("f-pool").value;
      state.filters.status = $("f-status").value;
      state.filters.hub = $("f-hub").value;
      state.from = $("f-from").value.trim();
      resetPaging();
    });
    for (const id of ["f-pool", "f-status", "f-hub"]) {
      $(id).addEventListener("change", () => $("filters").requestSubmit());
    }
    $("next-page").addEventListener("click", () => {
      if (state.next === null) return;
      state.back.push(state.cursor);
      state.cursor = state.next;
      navigate();
    });
    $("prev-page").addEventListener("click", () => {
      if (state.back.length) state.cursor = state.back.pop();
      else state.cursor = null;
      navigate();
    });
    $("first-page").addEventListener("click", () => {
      state.from = "";
      $("f-from").value = "";
      resetPaging();
    });
    document.addEventListener("visibilitychange", tick);
  }

  loadToken();
  wire();
  refresh();
  setInterval(tick, REFRESH_MS);
})();
