// The idempotency page: totals and the most recent keys, refreshed by the live stream.
import { Live } from "./live.js";
import { el, formatDateTime, setText, stateBadge } from "./ui.js";

const live = new Live({ topics: ["idempotency"] });

function render(summary) {
  if (!summary) return;
  const { totals, recent } = summary;
  setText(document.getElementById("idem-keys"), totals.keys);
  setText(document.getElementById("idem-in-progress"), totals.in_progress);
  setText(document.getElementById("idem-completed"), totals.completed);
  setText(document.getElementById("idem-replays"), totals.replays);
  const tbody = document.querySelector("#idempotency tbody");
  tbody.replaceChildren(...recent.map((record) => {
    const state = record.state === "completed" ? "completed" : "in progress";
    const badge = stateBadge(record.state === "completed" ? "active" : "joining");
    badge.lastChild.textContent = state;
    return el("tr", { "data-key": record.key },
      el("td", { class: "rm-mono", text: record.scope }),
      el("th", { scope: "row", class: "rm-mono", text: record.key }),
      el("td", {}, badge),
      el("td", { class: "num", text: record.replay_count }),
      el("td", { class: "num", text: record.response_status ?? "–" }),
      el("td", { text: formatDateTime(record.created_at) }),
      el("td", { text: formatDateTime(record.completed_at) }));
  }));
  document.getElementById("idem-empty").hidden = recent.length > 0;
}

live.addEventListener("snapshot", () => render(live.idempotency));
live.addEventListener("idempotency", (event) => render(event.detail));
live.connect();
