// The locks page: every held lock with holder, fencing token and a countdown to expiry; force-release.
import { Live } from "./live.js";
import { confirmDialog, el, eventItem, flash, formatAge, prependCapped, setText } from "./ui.js";

const live = new Live();
const table = document.getElementById("locks");
const tbody = table.querySelector("tbody");
const canForceRelease = table.dataset.canForceRelease === "true";
const rows = new Map(); // lock id -> {tr, cells}

function buildRow(lock) {
  const cells = {
    backend: el("td", { text: lock.backend }),
    name: el("th", { scope: "row", text: lock.name }),
    owner: el("td", { class: "rm-mono" }),
    token: el("td", { class: "num rm-mono" }),
    held: el("td", { class: "num" }),
    expires: el("td", { class: "num" }),
    actions: el("td", { class: "rm-actions" }),
  };
  if (canForceRelease) {
    cells.actions.append(el("button", {
      type: "button", class: "rm-small rm-danger", text: "Force release",
      "aria-label": `Force-release ${lock.name}`, onclick: () => forceRelease(lock.id),
    }));
  }
  return { tr: el("tr", { "data-lock": lock.id }, ...Object.values(cells)), cells };
}

function render() {
  const ids = [...live.locks.keys()].sort();
  for (const id of [...rows.keys()]) {
    if (!live.locks.has(id)) {
      rows.get(id).tr.remove();
      rows.delete(id);
    }
  }
  const fragment = document.createDocumentFragment();
  for (const id of ids) {
    const lock = live.locks.get(id);
    let entry = rows.get(id);
    if (!entry) {
      entry = buildRow(lock);
      rows.set(id, entry);
    }
    setText(entry.cells.owner, lock.owner);
    setText(entry.cells.token, lock.token);
    fragment.append(entry.tr);
  }
  tbody.replaceChildren(fragment);
  setText(document.getElementById("locks-count"), `(${live.locks.size})`);
  document.getElementById("locks-empty").hidden = live.locks.size > 0;
  const stores = live.lockStores.map((store) => {
    const names = store.aliases.join(" = ");
    return store.error ? `${names}: unavailable (${store.error})` : `${names}: ok`;
  });
  setText(document.getElementById("lock-stores"), stores.length ? `Backends: ${stores.join("; ")}` : "");
  tick();
}

function tick() {
  const now = live.serverNow();
  for (const [id, entry] of rows) {
    const lock = live.locks.get(id);
    if (!lock) continue;
    setText(entry.cells.held, formatAge(now - lock.acquired_at));
    const left = lock.expires_at - now;
    setText(entry.cells.expires, left > 0 ? formatAge(left) : "expired");
    entry.tr.classList.toggle("rm-expiring", left < 5);
  }
}

async function forceRelease(id) {
  const lock = live.locks.get(id);
  if (!lock) return;
  const ok = await confirmDialog({
    title: `Force-release ${lock.name}?`,
    body: `The holder ${lock.owner} loses lock ${lock.name} (token ${lock.token}) on ${lock.backend} at once; its next fenced write is refused. This is written to the lock audit log under your name.`,
    confirmLabel: "Force release",
  });
  if (!ok) return;
  try {
    const reply = await live.request("force_release", { backend: lock.backend, name: lock.name, token: lock.token });
    flash(reply.released ? `Released ${lock.name}.` : `${lock.name} was no longer held by token ${lock.token}.`);
  } catch (error) {
    flash(`Could not release ${lock.name}: ${error.message}`, "error");
  }
}

live.addEventListener("snapshot", render);
live.addEventListener("locks", render);
live.addEventListener("events", (event) => {
  const lockEvents = event.detail.events.filter((e) => e.kind && e.kind.startsWith("lock_"));
  prependCapped(document.getElementById("lock-events"), lockEvents.map(eventItem), 50);
});
setInterval(tick, 250);
live.connect();
