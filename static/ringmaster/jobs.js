// The jobs page: recent and running jobs, live; filters by state and node; retry and requeue.
import { Live } from "./live.js";
import { confirmDialog, el, flash, formatDateTime, setText } from "./ui.js";

const live = new Live({ topics: ["jobs"] });
const table = document.getElementById("jobs");
const tbody = table.querySelector("tbody");
const canRetry = table.dataset.canRetry === "true";
const canRequeue = table.dataset.canRequeue === "true";
const stateFilter = document.getElementById("jobs-state");
const nodeFilter = document.getElementById("jobs-node");
const OPEN = new Set(["queued", "running", "retrying", "requeued"]);
const ICONS = { queued: "◔", running: "▶", retrying: "↻", requeued: "↪", succeeded: "✓", failed: "✕", duplicate: "=" };
const rows = new Map(); // job id -> {tr, cells, key}

function badge(state) {
  return el("span", { class: `rm-badge state-${state}`, "data-state": state },
    el("span", { class: "rm-badge-icon", "aria-hidden": "true", text: ICONS[state] || "?" }), state);
}

function formatDuration(job) {
  if (job.duration !== null && job.duration !== undefined) return `${job.duration.toFixed(2)} s`;
  if (job.state === "running" && job.started_at) return `${Math.max(0, live.serverNow() - job.started_at).toFixed(0)} s…`;
  return "–";
}

/** The owner node is gone (or not serving): the job may sit on a queue nobody reads. */
function ownerInactive(job) {
  if (!job.owner_node) return false;
  const node = live.nodes.get(job.owner_node);
  return !node || node.state !== "active";
}

function actionsFor(job) {
  const buttons = [];
  if (canRetry && job.state === "failed") {
    buttons.push(el("button", {
      type: "button", class: "rm-small", text: "Retry",
      "aria-label": `Retry ${job.task_name} ${job.id}`, onclick: () => act("retry_job", job.id),
    }));
  }
  if (canRequeue && OPEN.has(job.state) && ownerInactive(job)) {
    buttons.push(el("button", {
      type: "button", class: "rm-small rm-danger", text: "Requeue",
      "aria-label": `Requeue ${job.task_name} ${job.id}`, onclick: () => act("requeue_job", job.id),
    }));
  }
  return buttons;
}

function render() {
  const jobs = [...live.jobs.values()].sort((a, b) => (b.created_at || 0) - (a.created_at || 0));
  // The node filter offers every node a job names, plus the known nodes.
  const nodes = new Set([...live.nodes.keys()]);
  for (const job of jobs) {
    if (job.owner_node) nodes.add(job.owner_node);
    if (job.ran_on) nodes.add(job.ran_on);
  }
  const chosen = nodeFilter.value;
  const options = [...nodes].sort();
  if (nodeFilter.options.length !== options.length + 1 || options.some((name, i) => nodeFilter.options[i + 1].value !== name)) {
    nodeFilter.replaceChildren(el("option", { value: "", text: "any" }), ...options.map((name) => el("option", { value: name, text: name })));
    nodeFilter.value = chosen;
  }
  const state = stateFilter.value;
  const node = nodeFilter.value;
  const shown = jobs.filter((job) => (!state || job.state === state) && (!node || job.owner_node === node || job.ran_on === node));
  for (const id of [...rows.keys()]) {
    if (!live.jobs.has(id)) {
      rows.get(id).tr.remove();
      rows.delete(id);
    }
  }
  const fragment = document.createDocumentFragment();
  for (const job of shown) {
    let entry = rows.get(job.id);
    if (!entry) {
      const cells = {
        task: el("th", { scope: "row", class: "rm-mono", title: job.id }),
        state: el("td"),
        owner: el("td", { class: "rm-mono" }),
        ranOn: el("td", { class: "rm-mono" }),
        attempts: el("td", { class: "num" }),
        duration: el("td", { class: "num" }),
        created: el("td"),
        actions: el("td", { class: "rm-actions" }),
      };
      entry = { tr: el("tr", { "data-job": job.id }, ...Object.values(cells)), cells, key: "" };
      rows.set(job.id, entry);
    }
    const { cells } = entry;
    setText(cells.task, job.task_name || "–");
    setText(cells.owner, job.owner_node || "shared queue");
    setText(cells.ranOn, job.ran_on || "–");
    setText(cells.attempts, job.attempts ?? "–");
    setText(cells.duration, formatDuration(job));
    setText(cells.created, formatDateTime(job.created_at));
    const key = `${job.state}|${ownerInactive(job)}`;
    if (entry.key !== key) {
      entry.key = key;
      cells.state.replaceChildren(badge(job.state));
      cells.actions.replaceChildren(...actionsFor(job));
    }
    fragment.append(entry.tr);
  }
  tbody.replaceChildren(fragment);
  setText(document.getElementById("jobs-count"), shown.length === jobs.length ? `(${jobs.length})` : `(${shown.length} of ${jobs.length})`);
  document.getElementById("jobs-empty").hidden = shown.length > 0;
}

async function act(action, id) {
  const job = live.jobs.get(id);
  if (!job) return;
  const retry = action === "retry_job";
  const ok = await confirmDialog({
    title: `${retry ? "Retry" : "Requeue"} ${job.task_name}?`,
    body: retry
      ? `Failed job ${id} is sent again as a new dispatch to its key's current owner.`
      : `Job ${id} is taken from ${job.owner_node} (not active) and sent to its key's current owner.`,
    confirmLabel: retry ? "Retry" : "Requeue",
  });
  if (!ok) return;
  try {
    const reply = await live.request(action, { job: id });
    flash(`${job.task_name} sent again to ${reply.owner_node || "the shared queue"}.`);
  } catch (error) {
    flash(`Could not ${retry ? "retry" : "requeue"} ${job.task_name}: ${error.message}`, "error");
  }
}

live.addEventListener("snapshot", render);
live.addEventListener("jobs", render);
live.addEventListener("nodes", render);
stateFilter.addEventListener("change", render);
nodeFilter.addEventListener("change", render);
setInterval(() => {
  for (const [id, entry] of rows) {
    const job = live.jobs.get(id);
    if (job && job.state === "running") setText(entry.cells.duration, formatDuration(job));
  }
}, 1000);
live.connect();
