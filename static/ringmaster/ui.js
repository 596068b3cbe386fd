// Small DOM and formatting helpers shared by the dashboard pages.

const SVG_NS = "http://www.w3.org/2000/svg";

/** An element with attributes (`text` sets textContent, `class` the class list) and children. */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  setAttrs(node, attrs);
  node.append(...children.filter((child) => child !== null && child !== undefined));
  return node;
}

export function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  setAttrs(node, attrs);
  node.append(...children);
  return node;
}

function setAttrs(node, attrs) {
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "text") node.textContent = value;
    else if (name === "class") node.setAttribute("class", value);
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : value);
  }
}

/** Set text only when it differs (keeps 1,000-row tables cheap to refresh every second). */
export function setText(node, text) {
  const value = String(text);
  if (node.textContent !== value) node.textContent = value;
}

export const STATES = ["joining", "active", "suspect", "draining", "dead", "left"];

/** A state as colour plus text plus a symbol, never colour alone. */
export function stateBadge(state) {
  return el("span", { class: `rm-badge state-${state}`, "data-state": state }, el("span", { class: "rm-badge-icon", "aria-hidden": "true", text: stateIcon(state) }), state);
}

export function updateStateBadge(badge, state) {
  if (badge.dataset.state === state) return;
  badge.dataset.state = state;
  badge.className = `rm-badge state-${state}`;
  badge.firstChild.textContent = stateIcon(state);
  badge.lastChild.textContent = state;
}

function stateIcon(state) {
  return { active: "●", joining: "◔", suspect: "▲", draining: "◑", dead: "✕", left: "○" }[state] || "?";
}

/** Seconds as a short age: 0.4 s, 12 s, 3 min, 2 h. */
export function formatAge(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return "never";
  const s = Math.max(0, seconds);
  if (s < 10) return `${s.toFixed(1)} s`;
  if (s < 120) return `${Math.round(s)} s`;
  if (s < 7200) return `${Math.round(s / 60)} min`;
  if (s < 172800) return `${Math.round(s / 3600)} h`;
  return `${Math.round(s / 86400)} d`;
}

export function formatPercent(fraction, digits = 1) {
  return `${(fraction * 100).toFixed(digits)}%`;
}

export function formatRate(value) {
  if (value === null || value === undefined) return "–";
  return value >= 100 ? Math.round(value).toLocaleString() : value.toFixed(1);
}

export function formatTime(epochSeconds) {
  if (!epochSeconds) return "–";
  return new Date(epochSeconds * 1000).toLocaleTimeString([], { hour12: false });
}

export function formatDateTime(epochSeconds) {
  if (!epochSeconds) return "–";
  return new Date(epochSeconds * 1000).toLocaleString([], { hour12: false });
}

const colours = new Map();

/**
 * A node's colour: nodes get golden-angle hues in the order first seen (sorted names on the first
 * snapshot), and keep them for the life of the page, so a hand-over shows as a change of colour.
 */
export function nodeColour(name) {
  let colour = colours.get(name);
  if (!colour) {
    const index = colours.size;
    const hue = (index * 137.508 + 210) % 360;
    const lightness = [52, 42, 62][Math.floor(index / 8) % 3];
    colour = `hsl(${hue.toFixed(1)} 68% ${lightness}%)`;
    colours.set(name, colour);
  }
  return colour;
}

/** The confirm dialog of the base template; resolves true when the user confirms. */
export function confirmDialog({ title, body, confirmLabel }) {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-title").textContent = title;
  document.getElementById("confirm-body").textContent = body;
  document.getElementById("confirm-ok").textContent = confirmLabel;
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "confirm"), { once: true });
    dialog.returnValue = "";
    dialog.showModal();
  });
}

let flashTimer = null;

/** A short message in the page's status line (read out by screen readers). */
export function flash(text, kind = "info") {
  const node = document.getElementById("flash");
  if (!node) return;
  node.textContent = text;
  node.dataset.kind = kind;
  node.hidden = false;
  clearTimeout(flashTimer);
  flashTimer = setTimeout(() => { node.hidden = true; }, 8000);
}

/** A line of the event timeline. */
export function eventItem(event) {
  const time = el("time", { datetime: new Date(event.at * 1000).toISOString(), text: formatTime(event.at) });
  const body = el("span", { class: "rm-event-body" });
  if (event.kind === "membership") {
    body.append(
      el("strong", { text: event.node }), " ",
      event.from_state ? stateBadge(event.from_state) : el("span", { class: "rm-muted", text: "new" }),
      " → ", stateBadge(event.to_state),
      el("span", { class: "rm-muted", text: ` ${event.reason || ""}${event.actor ? ` · by ${event.actor}` : ""} · epoch ${event.epoch}` }),
    );
  } else if (event.kind && event.kind.startsWith("lock_")) {
    const verb = { lock_acquired: "acquired", lock_released: "released", lock_lost: "lost", lock_force_released: "force-released" }[event.kind] || event.kind;
    body.append(
      "lock ", el("strong", { text: event.name }), ` ${verb}`,
      el("span", { class: "rm-muted", text: ` · token ${event.token ?? "–"} · ${event.backend || ""}${event.actor ? ` · by ${event.actor}` : ""}${event.reason ? ` · ${event.reason}` : ""}` }),
    );
  } else {
    body.append(el("strong", { text: event.kind || "event" }));
  }
  return el("li", { class: `rm-event rm-event-${event.kind}` }, time, " ", body);
}

/** Keep at most `limit` children, newest first. */
export function prependCapped(list, items, limit) {
  for (const item of items) list.prepend(item);
  while (list.children.length > limit) list.lastElementChild.remove();
}
