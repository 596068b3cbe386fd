// The ring view: the key space as a circle of cells coloured by owner, a key lookup that
// highlights the owner and the preference list, and an animated hand-over when the ring changes.
import { Live } from "./live.js";
import { el, flash, formatPercent, nodeColour, setText, svg } from "./ui.js";

const OUTER = 100;
const INNER = 76;
// The inner donut: each node's exact share as one arc (the outer cells show where its keys lie).
const DONUT_OUTER = 66;
const DONUT_INNER = 50;
const SWEEP_MS = 1200; // a hand-over sweeps round the circle in this time
const TWEEN_MS = 1000; // the donut's arcs grow and shrink to their new shares in this time
const reducedMotion = window.matchMedia("(prefers-reduced-motion: reduce)");

const live = new Live();
const ringSvg = document.getElementById("ring");
let cellPaths = [];
let owners = []; // owner name of each drawn cell
let lookup = null; // the last lookup result
let donutShares = new Map(); // node -> share the donut shows now
let tween = null;
const centre = { epoch: null, nodes: null };

function angle(fraction) {
  return fraction * 2 * Math.PI - Math.PI / 2; // 0 at the top, clockwise
}

function sector(start, end, outer = OUTER, inner = INNER) {
  const a0 = angle(start);
  const a1 = angle(Math.min(end, start + 0.99999));
  const large = end - start > 0.5 ? 1 : 0;
  const pt = (a, r) => `${(r * Math.cos(a)).toFixed(3)} ${(r * Math.sin(a)).toFixed(3)}`;
  return `M${pt(a0, outer)} A${outer} ${outer} 0 ${large} 1 ${pt(a1, outer)} L${pt(a1, inner)} A${inner} ${inner} 0 ${large} 0 ${pt(a0, inner)}Z`;
}

function drawDonut(shares) {
  const group = document.getElementById("ring-donut");
  if (!group) return;
  const names = [...shares.keys()].filter((name) => shares.get(name) > 1e-5).sort();
  let start = 0;
  group.replaceChildren(...names.map((name) => {
    const share = shares.get(name);
    const path = svg("path", { d: sector(start, start + share, DONUT_OUTER, DONUT_INNER), class: "rm-arc", "data-node": name },
      svg("title", { text: `${name}: ${formatPercent(share, 2)} of the keys` }));
    const colour = nodeColour(name);
    path.style.fill = colour;
    path.style.stroke = colour;
    start += share;
    return path;
  }));
  highlight();
}

/** Grow and shrink the donut's arcs from the shares shown to `target` (the hand-over). */
function tweenDonut(target, animate) {
  if (tween) cancelAnimationFrame(tween);
  const from = donutShares;
  const names = new Set([...from.keys(), ...target.keys()]);
  if (!animate || reducedMotion.matches || names.size > 200) {
    donutShares = target;
    drawDonut(target);
    return;
  }
  const started = performance.now();
  const step = (now) => {
    const t = Math.min(1, (now - started) / TWEEN_MS);
    const eased = t < 0.5 ? 2 * t * t : 1 - (-2 * t + 2) ** 2 / 2;
    const frame = new Map([...names].map((name) => [name, (from.get(name) || 0) + ((target.get(name) || 0) - (from.get(name) || 0)) * eased]));
    donutShares = frame;
    drawDonut(frame);
    tween = t < 1 ? requestAnimationFrame(step) : null;
  };
  tween = requestAnimationFrame(step);
}

function build(ring) {
  const count = ring.cells.length;
  cellPaths = [];
  const cells = svg("g", { class: "rm-ring-cells" });
  for (let i = 0; i < count; i += 1) {
    const path = svg("path", { d: sector(i / count, (i + 1) / count), class: "rm-cell" }, svg("title"));
    cells.append(path);
    cellPaths.push(path);
  }
  centre.epoch = svg("text", { x: 0, y: -1, class: "rm-ring-epoch", "text-anchor": "middle" });
  centre.nodes = svg("text", { x: 0, y: 12, class: "rm-ring-count", "text-anchor": "middle" });
  ringSvg.replaceChildren(
    svg("circle", { r: OUTER + 0.5, class: "rm-ring-track" }),
    cells,
    svg("g", { id: "ring-donut" }),
    centre.epoch,
    centre.nodes,
    svg("g", { id: "ring-marker" }),
  );
  owners = new Array(count).fill(null);
}

/** Colour the cells for `ring`; cells whose owner changed sweep round in order (the hand-over). */
function paint(ring, animate) {
  if (!ring.cells.length) {
    ringSvg.replaceChildren(svg("circle", { r: OUTER, class: "rm-ring-track" }),
      svg("text", { x: 0, y: 4, class: "rm-ring-count", "text-anchor": "middle", text: "empty ring" }));
    cellPaths = [];
    owners = [];
    donutShares = new Map();
    return;
  }
  if (cellPaths.length !== ring.cells.length || !ringSvg.contains(cellPaths[0])) build(ring);
  const count = ring.cells.length;
  const shares = new Map(ring.nodes.map((n) => [n.name, n.share]));
  let moved = 0;
  ring.cells.forEach((index, i) => {
    const name = ring.nodes[index].name;
    const path = cellPaths[i];
    const changed = owners[i] !== null && owners[i] !== name;
    if (changed) moved += 1;
    path.style.transitionDelay = animate && changed ? `${Math.round((i / count) * SWEEP_MS)}ms` : "0ms";
    path.classList.toggle("rm-moving", Boolean(animate && changed));
    const colour = nodeColour(name);
    path.style.fill = colour;
    path.style.stroke = colour;
    path.dataset.node = name;
    path.firstChild.textContent = `${name}: ${formatPercent(shares.get(name), 2)} of the keys`;
    owners[i] = name;
  });
  if (animate && moved) setTimeout(() => cellPaths.forEach((p) => p.classList.remove("rm-moving")), SWEEP_MS + 900);
  tweenDonut(shares, animate);
  centre.epoch.textContent = `epoch ${ring.epoch}`;
  centre.nodes.textContent = `${ring.nodes.length} node${ring.nodes.length === 1 ? "" : "s"}`;
  highlight();
}

function renderLegend(ring) {
  const tbody = document.querySelector("#ring-nodes tbody");
  const rank = new Map((lookup ? lookup.preference : []).map((name, i) => [name, i]));
  tbody.replaceChildren(...ring.nodes.map((node) => {
    const place = rank.has(node.name) ? (rank.get(node.name) === 0 ? "owner" : `replica ${rank.get(node.name) + 1}`) : "";
    const swatch = el("span", { class: "rm-swatch", "aria-hidden": "true" });
    swatch.style.background = nodeColour(node.name);
    return el("tr", { "data-node": node.name, class: rank.has(node.name) ? "rm-selected" : null },
      el("th", { scope: "row" }, swatch, node.name),
      el("td", { text: node.zone || "–" }),
      el("td", { class: "num", text: node.weight }),
      el("td", { class: "num", text: formatPercent(node.share, 2) }),
      el("td", { text: place }));
  }));
  document.getElementById("ring-empty").hidden = ring.nodes.length > 0;
  setText(document.getElementById("ring-epoch"), `(epoch ${ring.epoch}, ${ring.partitions.toLocaleString()} partitions)`);
}

function highlight() {
  const marker = document.getElementById("ring-marker");
  const preference = lookup ? lookup.preference : [];
  for (const path of [...cellPaths, ...ringSvg.querySelectorAll(".rm-arc")]) {
    const place = preference.indexOf(path.dataset.node);
    path.classList.toggle("rm-dim", Boolean(lookup) && place < 0);
    path.classList.toggle("rm-owner", Boolean(lookup) && place === 0);
    path.classList.toggle("rm-replica", Boolean(lookup) && place > 0);
  }
  if (!marker) return;
  marker.replaceChildren();
  if (lookup && lookup.position !== null) {
    const a = angle(lookup.position);
    const point = (r) => ({ x: (r * Math.cos(a)).toFixed(2), y: (r * Math.sin(a)).toFixed(2) });
    const inner = point(INNER - 8);
    const outer = point(OUTER + 10);
    marker.append(
      svg("line", { x1: inner.x, y1: inner.y, x2: outer.x, y2: outer.y, class: "rm-marker-line" }),
      svg("circle", { cx: outer.x, cy: outer.y, r: 3.5, class: "rm-marker-dot" },
        svg("title", { text: `${lookup.key} → ${lookup.owner}` })),
    );
  }
}

function showHandover(moves) {
  if (!moves) return;
  setText(document.getElementById("handover-summary"),
    `Epoch ${moves.from_epoch} → ${moves.to_epoch}: ${formatPercent(moves.fraction, 2)} of the keys changed owner.`);
  const list = document.getElementById("handover-moves");
  list.replaceChildren(...moves.moves.slice(0, 30).map((move) => {
    const swatch = el("span", { class: "rm-swatch", "aria-hidden": "true" });
    swatch.style.background = move.target ? nodeColour(move.target) : "transparent";
    return el("li", {}, swatch, `${move.source || "(no owner)"} → ${move.target || "(no owner)"}: ${formatPercent(move.fraction, 2)}`);
  }));
  if (moves.moves.length > 30) list.append(el("li", { class: "rm-muted", text: `and ${moves.moves.length - 30} more` }));
}

async function onLookup(event) {
  event.preventDefault();
  const key = document.getElementById("lookup-key").value;
  const n = Number.parseInt(document.getElementById("lookup-n").value, 10) || 3;
  try {
    lookup = await live.request("lookup", { key, n });
  } catch (error) {
    lookup = null;
    document.getElementById("lookup-result").hidden = true;
    flash(`Lookup failed: ${error.message}`, "error");
    highlight();
    return;
  }
  showLookup();
}

function showLookup() {
  document.getElementById("lookup-result").hidden = false;
  setText(document.getElementById("lookup-owner"), lookup.owner);
  setText(document.getElementById("lookup-where"),
    lookup.partition === null ? `(epoch ${lookup.epoch})` : `(partition ${lookup.partition}, epoch ${lookup.epoch})`);
  document.getElementById("lookup-preference").replaceChildren(
    ...lookup.preference.map((name, i) => el("li", { text: i === 0 ? `${name} (owner)` : name })));
  if (live.ring) renderLegend(live.ring);
  highlight();
}

live.addEventListener("snapshot", () => {
  if (!live.ring) return;
  for (const node of live.ring.nodes) nodeColour(node.name); // colours in name order, before anything else
  paint(live.ring, false);
  renderLegend(live.ring);
});
live.addEventListener("ring", (event) => {
  const { after, moves } = event.detail;
  if (lookup) {
    // The owner may have changed with the ring: ask again.
    const n = Number.parseInt(document.getElementById("lookup-n").value, 10) || 3;
    live.request("lookup", { key: lookup.key, n }).then((result) => {
      lookup = result;
      showLookup();
    }).catch((error) => flash(`Lookup failed after the ring changed: ${error.message}`, "error"));
  }
  paint(after, true);
  renderLegend(after);
  showHandover(moves);
});
document.getElementById("lookup").addEventListener("submit", onLookup);
live.connect();
