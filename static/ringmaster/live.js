// The dashboard's live connection: one WebSocket to /ws/cluster/, a snapshot, then deltas.
// It keeps the cluster state (nodes, locks, ring, rates) and tells pages what changed through
// events; it reconnects with backoff (and gets a fresh snapshot) and shows its state in #live.

const BACKOFF = [500, 1000, 2000, 4000, 8000, 15000];
// The server sends a delta (with a rate point) about every second: silence this long means a stall.
const STALL_MS = 10000;
const REQUEST_TIMEOUT_MS = 15000;

export class Live extends EventTarget {
  constructor({ topics = [] } = {}) {
    super();
    this.topics = topics;
    this.nodes = new Map();
    this.locks = new Map();
    this.lockStores = [];
    this.ring = null;
    this.rates = [];
    this.idempotency = null;
    this.jobs = new Map(); // job id -> row, with the "jobs" topic
    this.user = null;
    this.permissions = {};
    this.offset = 0; // server clock minus browser clock, seconds
    this.attempt = 0;
    this.requests = new Map();
    this.nextRequest = 1;
    this.socket = null;
    this.stopped = false;
    this.lastMessage = 0;
    this.indicator = document.getElementById("live");
    setInterval(() => this.checkStall(), 2000);
  }

  /** Seconds on the server's clock now (ages and countdowns are computed against it). */
  serverNow() {
    return Date.now() / 1000 + this.offset;
  }

  connect() {
    const path = document.body.dataset.wsPath || "/ws/cluster/";
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const query = this.topics.length ? `?topics=${encodeURIComponent(this.topics.join(","))}` : "";
    this.setStatus(this.attempt ? "reconnecting" : "connecting");
    const socket = new WebSocket(`${scheme}//${location.host}${path}${query}`);
    this.socket = socket;
    socket.addEventListener("message", (event) => this.onMessage(event));
    socket.addEventListener("close", (event) => this.onClose(socket, event));
  }

  onClose(socket, event) {
    if (socket !== this.socket) return;
    this.socket = null;
    for (const { reject, timer } of this.requests.values()) {
      clearTimeout(timer);
      reject(new Error("the connection closed before the server answered"));
    }
    this.requests.clear();
    if (event.code === 4401) {
      this.stopped = true;
      this.setStatus("offline", "logged out: reload the page to log in");
      return;
    }
    if (event.code === 4403) {
      this.stopped = true;
      this.setStatus("offline", "staff only: this account may not watch the cluster");
      return;
    }
    if (this.stopped) return;
    const delay = BACKOFF[Math.min(this.attempt, BACKOFF.length - 1)] * (0.8 + Math.random() * 0.4);
    this.attempt += 1;
    this.setStatus("reconnecting", `reconnecting in ${Math.ceil(delay / 1000)} s…`);
    setTimeout(() => this.connect(), delay);
  }

  checkStall() {
    if (this.socket && this.socket.readyState === WebSocket.OPEN && this.lastMessage
        && Date.now() - this.lastMessage > STALL_MS) {
      // Half-open connections (a sleeping laptop, a proxy) never fire close: force it.
      this.lastMessage = 0;
      this.socket.close();
      this.onClose(this.socket, { code: 1006 });
    }
  }

  setStatus(state, text) {
    this.status = state;
    if (this.indicator) {
      this.indicator.dataset.state = state;
      const labels = { connecting: "connecting…", live: "live", reconnecting: "reconnecting…", offline: "offline" };
      this.indicator.querySelector(".rm-live-label").textContent = text || labels[state] || state;
    }
    this.dispatchEvent(new CustomEvent("status", { detail: state }));
  }

  onMessage(event) {
    this.lastMessage = Date.now();
    let message;
    try {
      message = JSON.parse(event.data);
    } catch {
      console.warn("dashboard: ignored a message that is not JSON");
      return;
    }
    if (typeof message.now === "number") this.offset = message.now - Date.now() / 1000;
    switch (message.type) {
      case "hello":
        this.user = message.user;
        this.permissions = message.permissions || {};
        break;
      case "snapshot":
        this.applySnapshot(message);
        break;
      case "delta":
        this.applyDelta(message);
        break;
      case "events":
        this.applyEvents(message);
        break;
      case "reply":
      case "error":
        this.settle(message);
        break;
      default:
        break;
    }
  }

  applySnapshot(message) {
    this.attempt = 0;
    this.nodes = new Map(message.nodes.map((row) => [row.name, row]));
    this.locks = new Map(message.locks.map((row) => [row.id, row]));
    this.lockStores = message.lock_stores || [];
    this.ring = message.ring;
    this.rates = message.rates || [];
    if ("idempotency" in message) this.idempotency = message.idempotency;
    // null: the server has not read the jobs yet; they follow as a delta.
    if ("jobs" in message) this.jobs = new Map((message.jobs || []).map((row) => [row.id, row]));
    this.setStatus("live");
    this.dispatchEvent(new CustomEvent("snapshot", { detail: message }));
  }

  applyDelta(message) {
    if (message.nodes) {
      patchMap(this.nodes, message.nodes, "name");
      this.dispatchEvent(new CustomEvent("nodes", { detail: message.nodes }));
    }
    if (message.locks) {
      patchMap(this.locks, message.locks, "id");
      this.dispatchEvent(new CustomEvent("locks", { detail: message.locks }));
    }
    if (message.lock_stores) {
      this.lockStores = message.lock_stores;
      this.dispatchEvent(new CustomEvent("locks", { detail: {} }));
    }
    if (message.ring) {
      const before = this.ring;
      this.ring = message.ring;
      this.dispatchEvent(new CustomEvent("ring", { detail: { before, after: message.ring, moves: message.ring_moves } }));
    }
    if (message.rate) {
      this.rates.push(message.rate);
      if (this.rates.length > 300) this.rates.shift();
      this.dispatchEvent(new CustomEvent("rates", { detail: message.rate }));
    }
    if (message.jobs) {
      patchMap(this.jobs, message.jobs, "id");
      this.dispatchEvent(new CustomEvent("jobs", { detail: message.jobs }));
    }
    if (message.idempotency) {
      this.idempotency = message.idempotency;
      this.dispatchEvent(new CustomEvent("idempotency", { detail: message.idempotency }));
    }
  }

  applyEvents(message) {
    // A membership event says a node's state at once; the next table delta confirms it.
    const touched = [];
    for (const event of message.events) {
      if (event.kind === "membership" && !message.history) {
        const row = this.nodes.get(event.node);
        // Only the next step of the row's own history: an event overtaken by a newer table is stale.
        if (row && row.state === event.from_state) {
          row.state = event.to_state;
          row.incarnation = event.incarnation;
          touched.push({ name: event.node, state: event.to_state, incarnation: event.incarnation });
        }
      }
    }
    if (touched.length) this.dispatchEvent(new CustomEvent("nodes", { detail: { changed: touched } }));
    // A job event says a job's state at once (the next jobs delta brings the rest of its row).
    const jobs = [];
    if (this.topics.includes("jobs") && !message.history) {
      for (const event of message.events) {
        if (event.kind !== "job" || !event.job_id) continue;
        const row = {
          id: event.job_id, task_name: event.task_name, state: event.state,
          owner_node: event.owner_node, attempts: event.attempts,
        };
        const current = this.jobs.get(row.id);
        this.jobs.set(row.id, current ? { ...current, ...row } : { ran_on: "", created_at: event.at, ...row });
        jobs.push(row);
      }
    }
    if (jobs.length) this.dispatchEvent(new CustomEvent("jobs", { detail: { changed: jobs } }));
    this.dispatchEvent(new CustomEvent("events", { detail: message }));
  }

  /** Send an action; resolves with the server's reply, rejects with its error. */
  request(action, fields = {}) {
    return new Promise((resolve, reject) => {
      if (!this.socket || this.socket.readyState !== WebSocket.OPEN) {
        reject(new Error("not connected: wait for the live indicator"));
        return;
      }
      const id = String(this.nextRequest++);
      const timer = setTimeout(() => {
        this.requests.delete(id);
        reject(new Error("the server did not answer in time"));
      }, REQUEST_TIMEOUT_MS);
      this.requests.set(id, { resolve, reject, timer });
      this.socket.send(JSON.stringify({ ...fields, action, id }));
    });
  }

  settle(message) {
    const pending = this.requests.get(String(message.reply_to));
    if (!pending) {
      if (message.type === "error") console.warn(`dashboard: ${message.error}: ${message.detail}`);
      return;
    }
    this.requests.delete(String(message.reply_to));
    clearTimeout(pending.timer);
    if (message.type === "reply") pending.resolve(message);
    else pending.reject(new Error(message.detail || message.error));
  }
}

function patchMap(map, patch, key) {
  for (const row of patch.changed || []) {
    const current = map.get(row[key]);
    map.set(row[key], current ? { ...current, ...row } : row);
  }
  for (const gone of patch.removed || []) map.delete(gone);
}
