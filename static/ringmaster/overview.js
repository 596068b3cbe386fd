// The overview page: totals, the rate chart, the event timeline and the live node table.
import { Live } from "./live.js";
import {
  confirmDialog, el, eventItem, flash, formatAge, formatPercent, formatRate, prependCapped,
  setText, stateBadge, svg, updateStateBadge,
} from "./ui.js";

const TIMELINE_LIMIT = 100;
const live = new Live();
const tbody = document.querySelector("#nodes tbody");
const rows = new Map(); // node name -> {tr, cells}
const nameFilter = document.getElementById("node-filter");
const stateFilter = document.getElementById("state-filter");

function buildRow(node) {
  const cells = {
    name: el("th", { scope: "row" }),
    zone: el("td"),
    state: el("td"),
    phi: el("td", { class: "num" }),
    beat: el("td", { class: "num" }),
    jobs: el("td", { class: "num" }),
    load: el("td", { class: "num" }),
    incarnation: el("td", { class: "num" }),
    share: el("td", { class: "num" }),
    actions: el("td", { class: "rm-actions" }),
  };
  cells.name.textContent = node.name;
  cells.badge = stateBadge(node.state);
  cells.state.append(cells.badge);
  cells.drain = el("button", {
    type: "button", class: "rm-small", text: "Drain", "aria-label": `Drain ${node.name}`,
    onclick: () => drain(node.name),
  });
  cells.actions.append(cells.drain);
  const tr = el("tr", { "data-node": node.name }, ...Object.values(cells).filter((c) => c.tagName === "TD" || c.tagName === "TH"));
  return { tr, cells };
}

function fillRow(entry, node) {
  const { cells, tr } = entry;
  updateStateBadge(cells.badge, node.state);
  tr.dataset.state = node.state;
  setText(cells.zone, node.zone || "–");
  setText(cells.phi, formatPhi(node.phi));
  const load = node.load || {};
  setText(cells.jobs, load.running ?? "–");
  setText(cells.load, load.loadavg_1m ?? "–");
  setText(cells.incarnation, node.incarnation);
  setText(cells.share, node.share ? formatPercent(node.share, 2) : "–");
  cells.drain.hidden = !(live.permissions.drain && node.state === "active");
  applyFilter(entry, node);
}

function formatPhi(phi) {
  if (phi === null || phi === undefined) return "–";
  return phi >= 100 ? "> 99" : phi.toFixed(1);
}

function tickAges() {
  const now = live.serverNow();
  for (const [name, entry] of rows) {
    const node = live.nodes.get(name);
    if (!node) continue;
    setText(entry.cells.beat, node.beat ? formatAge(now - node.beat) : "never");
  }
}

function applyFilter(entry, node) {
  const text = nameFilter.value.trim().toLowerCase();
  const state = stateFilter.value;
  const matches = (!text || node.name.toLowerCase().includes(text) || (node.zone || "").toLowerCase().includes(text))
    && (!state || node.state === state);
  entry.tr.hidden = !matches;
}

function renderAll() {
  const names = [...live.nodes.keys()].sort();
  for (const name of [...rows.keys()]) {
    if (!live.nodes.has(name)) {
      rows.get(name).tr.remove();
      rows.delete(name);
    }
  }
  const fragment = document.createDocumentFragment();
  for (const name of names) {
    let entry = rows.get(name);
    if (!entry) {
      entry = buildRow(live.nodes.get(name));
      rows.set(name, entry);
    }
    fillRow(entry, live.nodes.get(name));
    fragment.append(entry.tr);
  }
  tbody.replaceChildren(fragment);
  tickAges();
  renderTotals();
}

function renderChanged(patch) {
  const added = (patch.changed || []).some((row) => !rows.has(row.name)) || (patch.removed || []).length;
  if (added) {
    renderAll();
    return;
  }
  for (const row of patch.changed || []) {
    const entry = rows.get(row.name);
    if (entry) fillRow(entry, live.nodes.get(row.name));
  }
  tickAges();
  renderTotals();
}

function renderTotals() {
  const counts = { active: 0, suspect: 0, dead: 0, other: 0 };
  for (const node of live.nodes.values()) {
    if (node.state in counts) counts[node.state] += 1;
    else counts.other += 1;
  }
  for (const [state, n] of Object.entries(counts)) setText(document.getElementById(`total-${state}`), n);
  setText(document.getElementById("nodes-count"), `(${live.nodes.size})`);
  document.getElementById("nodes-empty").hidden = live.nodes.size > 0;
  setText(document.getElementById("total-epoch"), live.ring ? live.ring.epoch : "–");
  setText(document.getElementById("total-locks"), live.locks.size);
  const last = live.rates[live.rates.length - 1];
  setText(document.getElementById("total-beats"), last ? formatRate(last.beats) : "–");
  setText(document.getElementById("total-lock-rate"), last ? formatRate(last.locks) : "–");
  setText(document.getElementById("total-job-rate"), last ? formatRate(last.jobs || 0) : "–");
  const minute = live.rates.slice(-60);
  const acquired = minute.reduce((sum, p) => sum + p.locks, 0);
  const contended = minute.reduce((sum, p) => sum + (p.contended || 0), 0);
  setText(document.getElementById("total-contention"), acquired ? formatPercent(contended / acquired) : "–");
}

function renderChart() {
  const chart = document.getElementById("rate-chart");
  const points = live.rates;
  const width = 600;
  const height = 140;
  const peak = Math.max(1, ...points.map((p) => Math.max(p.beats, p.locks, p.jobs || 0)));
  setText(document.getElementById("chart-peak"), formatRate(peak));
  const now = points.length ? points[points.length - 1].t : 0;
  // Up to 5 minutes; a young history is stretched over at least one minute rather than a sliver.
  const span = points.length ? Math.min(300, Math.max(60, now - points[0].t)) : 300;
  const x = (t) => width - ((now - t) / span) * width;
  const y = (v) => height - 4 - (v / peak) * (height - 12);
  const line = (field) => points.map((p) => `${x(p.t).toFixed(1)},${y(p[field] || 0).toFixed(1)}`).join(" ");
  const grid = [0.25, 0.5, 0.75].map((f) => svg("line", { x1: 0, x2: width, y1: y(peak * f), y2: y(peak * f), class: "rm-grid" }));
  chart.replaceChildren(
    ...grid,
    svg("polyline", { points: line("beats"), class: "rm-line rm-line-beats" }),
    svg("polyline", { points: line("locks"), class: "rm-line rm-line-locks" }),
    svg("polyline", { points: line("jobs"), class: "rm-line rm-line-jobs" }),
  );
}

function renderEvents(message) {
  const list = document.getElementById("timeline");
  prependCapped(list, message.events.map(eventItem), TIMELINE_LIMIT);
}

async function drain(name) {
  const ok = await confirmDialog({
    title: `Drain ${name}?`,
    body: `${name} leaves the ring: its keys move to the other nodes and it finishes what it runs. This is recorded as your action.`,
    confirmLabel: "Drain",
  });
  if (!ok) return;
  try {
    await live.request("drain", { node: name });
    flash(`${name} is draining.`);
  } catch (error) {
    flash(`Could not drain ${name}: ${error.message}`, "error");
  }
}

live.addEventListener("snapshot", () => { renderAll(); renderChart(); });
live.addEventListener("nodes", (event) => renderChanged(event.detail));
live.addEventListener("locks", renderTotals);
live.addEventListener("ring", renderTotals);
live.addEventListener("rates", () => { renderChart(); renderTotals(); });
live.addEventListener("events", (event) => renderEvents(event.detail));
for (const input of [nameFilter, stateFilter]) {
  input.addEventListener("input", () => {
    for (const [name, entry] of rows) applyFilter(entry, live.nodes.get(name));
  });
}
nameFilter.form.addEventListener("submit", (event) => event.preventDefault());
setInterval(tickAges, 1000);
live.connect();
