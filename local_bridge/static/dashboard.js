// The live dashboard (served at / and /dashboard): the bus state, clients, channels, job cards,
// the approval queue and a live event feed, on top of /static/local-bridge.js.
//
// State is loaded over REST at start and whenever the bus says it could not resume
// (`recovered: false`), then kept current by folding in the bus events. Events that arrive
// while a load is under way are held and folded after it, so nothing between the load and the
// subscription is lost.

import { Bridge, Rest, defaultUrl } from "./local-bridge.js";
import { TokenPrompt, TokenStore, claimsOf } from "./dashboard-auth.js";
import {
  Feed,
  FrameScheduler,
  JobBoard,
  mainChannel,
  renderCounts,
  setText,
} from "./dashboard-view.js";

const CHANNELS = ["jobs", "photos", "sessions", "system", "queue", "approval", "export"];
const POLL_MS = 5000; // status, health and clients: no event tells these
const RETRY_MS = 2000; // a failed load is tried again after this long
const MAX_JOB_CHANNELS = 200; // queued jobs followed for their positions (the server allows 256)
const MAX_PAGES = 4; // of 500 items, per list loaded
// A person is watching: after a restart, be back within a few seconds of the server (full
// jitter still spreads many dashboards out).
const BACKOFF = { initial: 300, max: 4000 };
const STATE_TEXT = {
  starting: "starting",
  connecting: "connecting…",
  open: "live",
  reconnecting: "reconnecting…",
  closed: "disconnected",
  "needs-token": "token needed",
  refused: "token refused",
};
const QUEUE_LABELS = [
  ["queued", "pending_count"],
  ["running", "processing_count"],
  ["completed", "completed_count"],
  ["failed", "failed_count"],
  ["cancelled", "cancelled_count"],
];
const STOP_REASONS = {
  4003: "forbidden: this token may not register or subscribe as the dashboard does",
  4009: "disconnected by an administrator; reload the page to connect again",
  1009: "a message was too big",
};

const $ = (id) => document.getElementById(id);

function statusOf(error) {
  return error?.status ?? error?.response?.status ?? null;
}

function messageOf(error) {
  return error?.message || String(error);
}

class Dashboard {
  constructor() {
    this.store = new TokenStore();
    this.prompt = new TokenPrompt(this.store, {
      panel: $("token-panel"),
      form: $("token-form"),
      input: $("token-input"),
      remember: $("token-remember"),
      reason: $("token-reason"),
    });
    this.rest = new Rest({ baseUrl: window.location.origin, token: () => this.store.get() });
    this.scheduler = new FrameScheduler();
    this.feed = new Feed($("feed"), this.scheduler, {
      onFilterOptions: (feed) => this.fillFilterOptions(feed),
      onNote: (text) => setText("feed-note", text),
    });
    this.jobs = new JobBoard($("jobs"), $("jobs-empty"), $("jobs-summary"), this.scheduler);
    this.status = null;
    this.health = null;
    this.clients = null; // the admin list, or null when not allowed
    this.clientsAllowed = true;
    this.approval = new Map(); // session id -> photos awaiting a decision
    this.sessions = new Map(); // session id -> name
    this.channelCounts = new Map(); // main channel -> events seen
    this.lastSeq = null;
    this.bridge = null;
    this.loading = false;
    this.held = []; // events that arrived during a load
    this.reloading = null; // the load under way
    this.reloadAgain = false;
    this.epoch = null; // the history the events shown belong to
    this.connection = { anchor: null, seqs: new Set() }; // see the "connected" listener
    this.connState = "starting";
    this.lastReconnect = "";
    this.scheduler.register("bus", () => this.drawBus());
    this.scheduler.register("clients", () => this.drawClients());
    this.scheduler.register("channels", () => this.drawChannels());
    this.scheduler.register("queue", () => this.drawQueue());
    this.scheduler.register("subscriptions", () => this.followQueuedJobs());
    this.bindControls();
    this.fillFilterOptions({ channels: CHANNELS, types: [] });
  }

  bindControls() {
    const filter = () => this.feed.setFilter($("filter-channel").value, $("filter-type").value);
    $("filter-channel").addEventListener("change", filter);
    $("filter-type").addEventListener("change", filter);
    $("feed-pause").addEventListener("click", () => {
      const paused = !this.feed.paused;
      this.feed.setPaused(paused);
      $("feed-pause").setAttribute("aria-pressed", String(paused));
      $("feed-pause").textContent = paused ? "Resume" : "Pause";
    });
    $("feed-clear").addEventListener("click", () => this.feed.clear());
    $("change-token").addEventListener("click", () => {
      this.store.clear();
      window.location.reload();
    });
  }

  // ------------------------------------------------------------------ start and REST

  async start() {
    // REST first: it tells whether a token is needed (401) before the bus is opened
    for (;;) {
      try {
        await this.get("/api/system/status");
        break;
      } catch (error) {
        this.setConnState("connecting", `waiting for the server (${messageOf(error)})`);
        await sleep(RETRY_MS);
      }
    }
    await this.connectBus();
    this.poll();
  }

  /** GET over REST; a 401 asks the user for a token and tries again. */
  async get(path) {
    for (;;) {
      try {
        return await this.rest.get(path);
      } catch (error) {
        if (statusOf(error) !== 401) throw error;
        await this.askToken(this.store.get() ? `Token refused: ${messageOf(error)}` : null);
      }
    }
  }

  /** Ask for a token (refusal: why the last one was refused); resolves once one is given. */
  async askToken(refusal) {
    if (refusal) this.store.clear();
    this.setConnState(refusal ? "refused" : "needs-token");
    await this.prompt.ask(
      refusal || "This server has authentication on: paste a token to see the bus.",
      Boolean(refusal)
    );
    this.showIdentity();
    this.clientsAllowed = true; // the new token may be an admin's
    this.setConnState(this.bridge?.state ?? "connecting");
  }

  /** Every page of a list endpoint (up to MAX_PAGES). */
  async list(path) {
    const items = [];
    let cursor = null;
    for (let page = 0; page < MAX_PAGES; page += 1) {
      const separator = path.includes("?") ? "&" : "?";
      const query = `limit=500${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`;
      const answer = await this.get(`${path}${separator}${query}`);
      items.push(...(answer.items || []));
      cursor = answer.next_cursor;
      if (!cursor) break;
    }
    return items;
  }

  async loadHealth() {
    // open, and 503 with its own body when degraded: read it whatever the status
    try {
      const response = await fetch("/api/system/health", { cache: "no-store" });
      this.health = await response.json();
    } catch (error) {
      this.health = { status: "unreachable", checks: {} };
    }
    this.scheduler.mark("bus");
  }

  async loadClients() {
    if (!this.clientsAllowed) return;
    try {
      this.clients = (await this.get("/api/websocket/clients")).items || [];
    } catch (error) {
      if (statusOf(error) !== 403) throw error;
      this.clientsAllowed = false; // not an admin: counts by type from /api/system/status
      this.clients = null;
    }
    this.scheduler.mark("clients");
  }

  async loadStatus() {
    this.status = await this.get("/api/system/status");
    if (this.lastSeq === null || this.status.seq > this.lastSeq) this.lastSeq = this.status.seq;
    for (const name of ["bus", "clients", "queue"]) this.scheduler.mark(name);
  }

  /** Load everything over REST, then fold in the events that arrived meanwhile. One load at
   * a time: asked again while loading, it loads once more after; a failed load is retried. */
  reload() {
    if (this.reloading) {
      this.reloadAgain = true;
      return this.reloading;
    }
    this.loading = true; // events are held (and shown in the feed) until the load is done
    this.reloading = (async () => {
      let loadedAt = null;
      do {
        this.reloadAgain = false;
        try {
          loadedAt = await this.loadAll();
        } catch (error) {
          console.warn("dashboard: loading the state failed; retrying", error);
          this.reloadAgain = true;
          await sleep(RETRY_MS);
        }
      } while (this.reloadAgain);
      this.loading = false;
      const held = this.held;
      this.held = [];
      // the lists were read after the status: what they show includes every event up to its
      // seq, and folding those again could move a job back (an older progress value)
      for (const event of held) {
        if (typeof event.seq !== "number" || loadedAt === null || event.seq > loadedAt) {
          this.fold(event);
        }
      }
    })().finally(() => {
      this.reloading = null;
    });
    return this.reloading;
  }

  /** One load: the status first, then the lists. Returns the status's seq. */
  async loadAll() {
    await this.loadStatus();
    const loadedAt = this.status.seq;
    const [queued, running, approval, sessions] = await Promise.all([
      this.list("/api/jobs?status=queued"),
      this.list("/api/jobs?status=running"),
      this.list("/api/approval"),
      this.get("/api/sessions?limit=500"),
      this.loadHealth(),
      this.loadClients(),
    ]);
    this.jobs.replace([...running, ...queued]);
    this.approval = new Map();
    for (const photo of approval) {
      const key = String(photo.session_id);
      this.approval.set(key, (this.approval.get(key) || 0) + 1);
    }
    for (const session of sessions.items || []) this.sessions.set(String(session.id), session.name);
    this.scheduler.mark("queue");
    this.scheduler.mark("subscriptions");
    return loadedAt;
  }

  poll() {
    const refresh = async () => {
      if (!this.loading && !this.prompt.asking) {
        try {
          await Promise.all([this.loadStatus(), this.loadHealth(), this.loadClients()]);
        } catch (error) {
          console.warn("dashboard: refreshing the status failed", error);
        }
      }
      window.setTimeout(refresh, POLL_MS);
    };
    window.setTimeout(refresh, POLL_MS);
  }

  // ------------------------------------------------------------------ the bus

  async connectBus() {
    const token = this.store.get();
    const claims = token ? claimsOf(token) : null;
    const bridge = new Bridge({
      url: defaultUrl(),
      channels: CHANNELS,
      // a token bound to a client type may only register as that type
      clientType: claims?.client_type || "dashboard",
      clientName: "dashboard",
      token: async () => this.store.get(),
      backoff: BACKOFF,
    });
    this.bridge = bridge;
    bridge.addEventListener("event", (e) => this.onEvent(e.detail));
    bridge.addEventListener("state", (e) => this.setConnState(e.detail));
    bridge.addEventListener("connected", () => {
      // where this connection's events start in the feed, and which it delivered: a
      // broadcast to everyone may come before the subscription's replay_complete
      this.connection = { anchor: this.feed.newest, seqs: new Set() };
      this.scheduler.mark("bus");
    });
    bridge.addEventListener("resync", (e) => this.onResync(e.detail));
    bridge.addEventListener("error", (e) => this.onBusError(e.detail));
    bridge.addEventListener("closed", (e) => this.onClosed(bridge, e.detail));
    this.loading = true; // hold events until the first load is done
    try {
      await bridge.connect();
    } catch (error) {
      this.loading = false;
      console.warn("dashboard: the bus refused the connection", error);
      return;
    }
    this.epoch = bridge.epoch;
    await this.reload();
  }

  onEvent(event) {
    if (!event || typeof event !== "object") return;
    if (event.type === "replay_complete") {
      if (event.recovered) {
        const missed = Math.max(0, (event.to ?? 0) - (event.since ?? 0));
        this.lastReconnect = `resumed, nothing lost (${missed} events since seq ${event.since})`;
        this.scheduler.mark("bus");
      }
      return;
    }
    if (typeof event.seq === "number" && (this.lastSeq === null || event.seq > this.lastSeq)) {
      this.lastSeq = event.seq;
    }
    const channel = mainChannel(event.channel) ?? "(everyone)";
    this.channelCounts.set(channel, (this.channelCounts.get(channel) || 0) + 1);
    this.scheduler.mark("channels");
    this.scheduler.mark("bus");
    const { seqs } = this.connection; // only its first events matter (before replay_complete)
    if (typeof event.seq === "number" && seqs.size < 1000) seqs.add(event.seq);
    this.feed.add(event);
    if (this.loading) this.held.push(event);
    else this.fold(event);
  }

  async onResync(info) {
    // the server no longer holds every event since our last one (a restart without shared
    // history, or history expired): what is shown may be stale, load it again
    const { anchor, seqs } = this.connection;
    const previous = this.epoch;
    this.epoch = this.bridge?.epoch ?? null;
    this.lastReconnect =
      previous && this.epoch !== previous
        ? "new history (the server restarted): state reloaded over REST"
        : `history no longer reached seq ${info?.since ?? "?"}: state reloaded over REST`;
    this.lastSeq = null;
    this.scheduler.mark("bus");
    await this.reload();
    if (previous && this.epoch && this.epoch !== previous && typeof info?.to === "number") {
      await this.backfill(anchor, seqs, this.epoch, info.to);
    }
  }

  /** A new history (the server restarted): the events it published before this page was back
   * are still in it. Fetch them for the feed, so it misses nothing of the new history. */
  async backfill(anchor, delivered, epoch, to) {
    const query = new URLSearchParams({
      since: "0",
      epoch,
      channels: CHANNELS.join(","),
      client_type: this.bridge.clientType,
      limit: "500",
    });
    try {
      const answer = await this.get(`/api/events?${query}`);
      if (!answer.recovered) return; // that history is gone too
      const missed = (answer.items || []).filter((e) => e.seq <= to && !delivered.has(e.seq));
      this.feed.insertAfter(anchor, missed);
      if (missed.length) this.lastReconnect += `; ${missed.length} earlier events fetched`;
      this.scheduler.mark("bus");
    } catch (error) {
      console.warn("dashboard: fetching the events since the restart failed", error);
    }
  }

  onBusError(reply) {
    const text = reply?.message || reply?.code || "error";
    setText("channels-note", `bus: ${text}`);
  }

  async onClosed(bridge, info) {
    if (bridge !== this.bridge) return;
    const code = info?.code;
    if (code === 4001) {
      await this.askToken(`Token refused by the bus${info.reason ? `: ${info.reason}` : ""}`);
      await this.connectBus();
      return;
    }
    this.setConnState("closed", STOP_REASONS[code] || `closed (${code ?? "?"})`);
  }

  /** Follow the queued jobs' sub-channels, where their later queue positions are published. */
  followQueuedJobs() {
    if (!this.bridge) return;
    const queued = this.jobs.queuedIds().slice(0, MAX_JOB_CHANNELS);
    const wanted = new Set(queued.map((id) => `jobs:${id}`));
    // the bridge's list is what it (re)subscribes on every connection
    const followed = this.bridge.channels.filter((c) => c.startsWith("jobs:"));
    const add = [...wanted].filter((c) => !followed.includes(c));
    const drop = followed.filter((c) => !wanted.has(c));
    for (let i = 0; i < add.length; i += 64) this.bridge.subscribe(add.slice(i, i + 64));
    for (let i = 0; i < drop.length; i += 64) this.bridge.unsubscribe(drop.slice(i, i + 64));
    this.scheduler.mark("channels");
  }

  // ------------------------------------------------------------------ folding events in

  fold(event) {
    const id = event.job_id;
    switch (event.type) {
      case "job_created": {
        const known = this.jobs.get(id);
        const fields = { kind: event.kind, photo_id: event.photo_id, priority: event.priority };
        this.jobs.update(id, known ? fields : { ...fields, status: "queued", progress: 0 });
        this.scheduler.mark("subscriptions");
        break;
      }
      case "job_queued": {
        const known = this.jobs.get(id);
        if (!known || known.status === "queued") {
          this.jobs.update(id, {
            status: "queued",
            position: event.position,
            estimated_start_seconds: event.estimated_start_seconds,
          });
        }
        this.scheduler.mark("subscriptions");
        break;
      }
      case "job_started":
        this.jobs.update(id, {
          status: "running",
          worker: event.worker,
          position: null,
          estimated_start_seconds: null,
        });
        this.scheduler.mark("subscriptions");
        break;
      case "job_progress": {
        const fields = { progress: event.progress, stage: event.stage, message: event.message };
        if (event.counters && typeof event.counters === "object") fields.counters = event.counters;
        if (this.jobs.get(id)?.status !== "running") fields.status = "running";
        this.jobs.update(id, fields);
        break;
      }
      case "job_completed":
        this.jobs.update(id, { status: "completed", progress: 100, result_url: event.result_url });
        this.scheduler.mark("subscriptions");
        break;
      case "job_failed":
        this.jobs.update(id, {
          status: "failed",
          error_message: event.error_message,
          stage: event.stage ?? this.jobs.get(id)?.stage,
        });
        this.scheduler.mark("subscriptions");
        break;
      case "job_cancelled":
        this.jobs.update(id, { status: "cancelled", reason: event.reason });
        this.scheduler.mark("subscriptions");
        break;
      case "priority_changed":
        if (this.jobs.get(id)) this.jobs.update(id, { priority: event.new_priority });
        break;
      case "queue_status":
        if (this.status) {
          this.status.queue = Object.fromEntries(QUEUE_LABELS.map(([, key]) => [key, event[key]]));
          this.scheduler.mark("queue");
        }
        break;
      case "approval_queue_updated":
        if (event.session_id != null) {
          this.approval.set(String(event.session_id), Number(event.queue_count) || 0);
          this.scheduler.mark("queue");
        }
        break;
      case "session_created":
        this.sessions.set(String(event.session_id), event.session_name);
        this.scheduler.mark("queue");
        break;
      default:
        break;
    }
  }

  // ------------------------------------------------------------------ drawing

  setConnState(state, detail = "") {
    this.connState = state;
    const pill = $("conn-state");
    pill.dataset.state = state;
    pill.textContent = STATE_TEXT[state] || state;
    pill.title = detail;
    if (detail) this.lastReconnect = detail;
    this.scheduler.mark("bus");
  }

  showIdentity() {
    const token = this.store.get();
    const claims = token ? claimsOf(token) : null;
    $("identity").textContent = claims ? `${claims.sub ?? "?"} (${claims.role ?? "?"})` : "";
    $("change-token").hidden = !token;
  }

  drawBus() {
    const status = this.status || {};
    const checks = this.health?.checks || {};
    const seq = this.lastSeq ?? status.seq;
    const epoch = status.epoch ?? this.bridge?.epoch;
    setText("top-seq", seq);
    setText("top-epoch", epoch);
    setText("bus-seq", seq);
    setText("bus-epoch", epoch);
    const health = [
      ["bus-backplane", checks.backplane, status.backplane],
      ["bus-database", checks.database],
    ];
    for (const [id, value, kind] of health) {
      setText(id, kind && value ? `${kind} · ${value}` : value);
      const node = $(id);
      node.classList.toggle("state-ok", value === "ok");
      node.classList.toggle("state-bad", value !== undefined && value !== "ok");
    }
    setText("bus-auth", this.bridge?.auth); // from the bus's greeting: "none" or "token"
    setText("bus-connections", status.connections?.total);
    setText("bus-published", status.events_published);
    setText("bus-version", status.version);
    setText("bus-uptime", status.uptime_seconds != null ? duration(status.uptime_seconds) : null);
    const link = [STATE_TEXT[this.connState] || this.connState];
    if (this.bridge?.clientId) link.push(`client ${String(this.bridge.clientId).slice(0, 8)}`);
    if (this.lastReconnect) link.push(this.lastReconnect);
    setText("bus-link", link.join(" · "));
  }

  drawClients() {
    const byType = new Map();
    if (this.clients) {
      for (const client of this.clients) {
        byType.set(client.client_type, (byType.get(client.client_type) || 0) + 1);
      }
    } else {
      for (const [type, count] of Object.entries(this.status?.connections?.by_client_type || {})) {
        byType.set(type, count);
      }
    }
    const pairs = [...byType.entries()].sort((a, b) => b[1] - a[1]);
    renderCounts($("client-types"), pairs, "no clients connected");
    const list = $("client-list");
    if (!this.clients) {
      const note = "The list of clients needs an admin token; counts by type shown.";
      setText("clients-note", this.clientsAllowed ? "" : note);
      list.replaceChildren();
      return;
    }
    setText("clients-note", `${this.clients.length} connected`);
    list.replaceChildren(
      ...this.clients.slice(0, 100).map((client) => {
        const item = document.createElement("li");
        const channels = (client.channels || []).length;
        item.textContent = [
          client.client_name,
          client.client_type,
          `${channels} channels`,
          client.remote_addr ?? "",
        ].join(" · ");
        return item;
      })
    );
  }

  drawChannels() {
    const pairs = CHANNELS.map((name) => [name, this.channelCounts.get(name) || 0]);
    const everyone = this.channelCounts.get("(everyone)");
    if (everyone) pairs.push(["(everyone)", everyone]);
    renderCounts($("channel-list"), pairs);
    const follow = (this.bridge?.channels ?? []).filter((c) => c.startsWith("jobs:")).length;
    if (!$("channels-note").textContent.startsWith("bus:")) {
      let note = "Events seen since this page opened.";
      if (follow) note += ` Also following ${follow} queued job(s) for their queue positions.`;
      setText("channels-note", note);
    }
  }

  drawQueue() {
    const queue = this.status?.queue || {};
    renderCounts($("queue-counts"), QUEUE_LABELS.map(([label, key]) => [label, queue[key] ?? "–"]));
    let total = 0;
    const pairs = [];
    for (const [session, count] of this.approval) {
      total += count;
      if (count > 0) {
        const name = this.sessions.get(session);
        pairs.push([name ? `${name} (#${session})` : `session #${session}`, count]);
      }
    }
    setText("approval-total", total);
    renderCounts($("approval-sessions"), pairs, "nothing awaiting a decision");
  }

  fillFilterOptions(feed) {
    const filters = [
      ["filter-channel", feed.channels],
      ["filter-type", feed.types],
    ];
    for (const [selectId, values] of filters) {
      const select = $(selectId);
      const present = new Set([...select.options].map((o) => o.value));
      for (const value of [...values].sort()) {
        if (present.has(value)) continue;
        const option = document.createElement("option");
        option.value = value;
        option.textContent = value;
        select.append(option);
      }
    }
  }
}

function sleep(ms) {
  return new Promise((resolve) => window.setTimeout(resolve, ms));
}

function duration(seconds) {
  const s = Math.floor(seconds);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

const dashboard = new Dashboard();
window.localBridgeDashboard = dashboard; // for the console and the browser tests
dashboard.showIdentity();
dashboard.start().catch((error) => {
  console.warn("dashboard: could not start", error);
  dashboard.setConnState("closed", `could not load: ${messageOf(error)}`);
});
