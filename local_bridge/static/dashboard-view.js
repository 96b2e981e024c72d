// The dashboard's DOM: job cards, the live feed and the small count lists.
//
// Events carry strings users wrote (file names, messages, reasons): every one of them reaches the
// page through textContent, never as markup. Updates are batched: callers mark what changed,
// and one animation frame redraws it, however many events arrived in between.

export const FEED_LIMIT = 500; // rows kept in the feed (oldest dropped)
export const FINISHED_JOBS_KEPT = 24; // finished jobs still shown as cards
const DETAIL_LIMIT = 400; // characters of an event's details shown in its row
const ENVELOPE = new Set(["type", "timestamp", "channel", "seq"]);
const TERMINAL = new Set(["completed", "failed", "cancelled"]);

/** An element with a class and text (text only: never parsed as HTML). */
export function el(tag, className = "", text = null) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== null && text !== undefined) node.textContent = String(text);
  return node;
}

export function setText(id, text) {
  const node = document.getElementById(id);
  const value = text === null || text === undefined ? "–" : String(text);
  if (node && node.textContent !== value) node.textContent = value;
}

/** Fill a <ul class="counts"> with [label, value] pairs. */
export function renderCounts(list, pairs, empty = "none") {
  const items = pairs.map(([label, value]) => {
    const item = el("li");
    item.append(el("span", "", label), el("b", "", value));
    return item;
  });
  if (items.length === 0) items.push(el("li", "muted", empty));
  list.replaceChildren(...items);
}

/** Runs the registered redraws once per animation frame, only for what was marked dirty. */
export class FrameScheduler {
  constructor() {
    this.dirty = new Set();
    this.redraws = new Map();
    this.requested = false;
  }

  register(name, redraw) {
    this.redraws.set(name, redraw);
  }

  mark(name) {
    this.dirty.add(name);
    if (this.requested) return;
    this.requested = true;
    requestAnimationFrame(() => this.flush());
  }

  flush() {
    this.requested = false;
    const names = [...this.dirty];
    this.dirty.clear();
    for (const name of names) {
      try {
        this.redraws.get(name)?.();
      } catch (error) {
        console.warn(`dashboard: redrawing ${name} failed`, error);
      }
    }
  }
}

function shortValue(value) {
  if (value === null || value === undefined) return "null";
  if (typeof value === "string") return value;
  return JSON.stringify(value);
}

/** An event's own fields as one line: `key=value  key=value`. */
export function details(event) {
  const parts = [];
  for (const [key, value] of Object.entries(event)) {
    if (!ENVELOPE.has(key)) parts.push(`${key}=${shortValue(value)}`);
  }
  const line = parts.join("  ");
  return line.length > DETAIL_LIMIT ? `${line.slice(0, DETAIL_LIMIT)}…` : line;
}

/** The main channel of an event's channel (`jobs:12` -> `jobs`); null for everyone. */
export function mainChannel(channel) {
  return channel ? String(channel).split(":")[0] : null;
}

function clock(timestamp) {
  // "2026-11-22T14:32:15.123456Z" -> "14:32:15.123" (the server's UTC time, as sent)
  const match = /T(\d\d:\d\d:\d\d)(\.\d{1,3})?/.exec(String(timestamp || ""));
  return match ? match[1] + (match[2] || "") : "";
}

/** The live feed: the last FEED_LIMIT events, newest first, filtered by channel and type,
 * pausable. Rows are added in one batch per frame. */
export class Feed {
  constructor(body, scheduler, { onFilterOptions, onNote }) {
    this.body = body;
    this.scheduler = scheduler;
    this.events = []; // newest last; at most FEED_LIMIT
    this.pending = []; // arrived since the last frame
    this.channel = "";
    this.type = "";
    this.paused = false;
    this.unseen = 0; // arrived while paused
    this.channels = new Set();
    this.types = new Set();
    this.onFilterOptions = onFilterOptions;
    this.onNote = onNote;
    this.rebuild = false;
    scheduler.register("feed", () => this.draw());
  }

  add(event) {
    this.events.push(event);
    if (this.events.length > FEED_LIMIT) this.events.splice(0, this.events.length - FEED_LIMIT);
    const channel = mainChannel(event.channel) ?? "(everyone)";
    const known = this.channels.size + this.types.size;
    this.channels.add(channel);
    this.types.add(String(event.type));
    if (this.channels.size + this.types.size !== known) this.onFilterOptions(this);
    if (this.paused) {
      this.unseen += 1;
    } else {
      this.pending.push(event);
      const excess = this.pending.length - FEED_LIMIT;
      if (excess > 0) this.pending.splice(0, excess);
    }
    this.scheduler.mark("feed");
  }

  /** The newest event held, to insert older ones after later (see insertAfter). */
  get newest() {
    return this.events[this.events.length - 1] ?? null;
  }

  /** Insert events that were missed (older than those that came after `anchor`) after
   * `anchor`, an event of this feed (at the start if it is gone or null). */
  insertAfter(anchor, events) {
    if (events.length === 0) return;
    const at = anchor ? this.events.indexOf(anchor) + 1 : 0;
    this.events.splice(at, 0, ...events);
    if (this.events.length > FEED_LIMIT) this.events.splice(0, this.events.length - FEED_LIMIT);
    for (const event of events) {
      this.channels.add(mainChannel(event.channel) ?? "(everyone)");
      this.types.add(String(event.type));
    }
    this.onFilterOptions(this);
    if (this.paused) {
      this.unseen += events.length;
      this.scheduler.mark("feed");
    } else {
      this.redrawAll();
    }
  }

  setFilter(channel, type) {
    this.channel = channel;
    this.type = type;
    this.redrawAll();
  }

  setPaused(paused) {
    this.paused = paused;
    this.unseen = 0;
    if (!paused) this.redrawAll();
    else this.scheduler.mark("feed");
  }

  clear() {
    this.events = [];
    this.redrawAll();
  }

  redrawAll() {
    this.rebuild = true;
    this.pending = [];
    this.scheduler.mark("feed");
  }

  matches(event) {
    if (this.channel && (mainChannel(event.channel) ?? "(everyone)") !== this.channel) return false;
    return !this.type || event.type === this.type;
  }

  row(event) {
    const row = el("tr");
    row.dataset.type = String(event.type);
    row.dataset.channel = String(event.channel ?? "");
    if (event.seq !== undefined) row.dataset.seq = String(event.seq);
    const kind = /_(failed|completed)$/.exec(String(event.type));
    if (kind) row.dataset.kind = kind[1];
    row.append(
      el("td", "", clock(event.timestamp)),
      el("td", "", event.seq ?? ""),
      el("td", "", event.channel ?? "(everyone)"),
      el("td", "", event.type),
      el("td", "", details(event))
    );
    return row;
  }

  draw() {
    if (this.paused && !this.rebuild) {
      this.onNote(this.unseen ? `paused: ${this.unseen} new events held back` : "paused");
      return;
    }
    if (this.rebuild) {
      this.rebuild = false;
      const rows = this.events.filter((e) => this.matches(e)).reverse().map((e) => this.row(e));
      this.body.replaceChildren(...rows);
    } else if (this.pending.length) {
      const fragment = document.createDocumentFragment();
      for (let i = this.pending.length - 1; i >= 0; i -= 1) {
        if (this.matches(this.pending[i])) fragment.append(this.row(this.pending[i]));
      }
      this.body.prepend(fragment);
      while (this.body.childElementCount > FEED_LIMIT) this.body.lastElementChild.remove();
    }
    this.pending = [];
    const shown = this.body.childElementCount;
    this.onNote(this.paused ? "paused" : `${shown} of the last ${this.events.length} events shown`);
  }
}

function percent(value) {
  const number = Number(value);
  if (!Number.isFinite(number)) return 0;
  return Math.max(0, Math.min(100, number));
}

function jobOrder(a, b) {
  const rank = (job) => (job.status === "running" ? 0 : job.status === "queued" ? 1 : 2);
  if (rank(a) !== rank(b)) return rank(a) - rank(b);
  if (a.status === "queued") return (a.position ?? 1e9) - (b.position ?? 1e9);
  if (rank(a) === 2) return (b.finishedOrder ?? 0) - (a.finishedOrder ?? 0);
  return String(a.id).localeCompare(String(b.id), undefined, { numeric: true });
}

/** Job cards: one per active job (running, then queued by position) and the most recent
 * finished ones, each with its progress bar, stage, counters and queue position. */
export class JobBoard {
  constructor(container, empty, summary, scheduler) {
    this.container = container;
    this.empty = empty;
    this.summary = summary;
    this.jobs = new Map(); // id -> job fields
    this.cards = new Map(); // id -> card element
    this.changed = new Set();
    this.finishedCount = 0;
    this.scheduler = scheduler;
    scheduler.register("jobs", () => this.draw());
  }

  get(id) {
    return this.jobs.get(String(id));
  }

  /** Merge fields into a job (creating it); returns the job. */
  update(id, fields) {
    const key = String(id);
    const job = this.jobs.get(key) || { id: key, status: "queued", progress: 0 };
    const wasFinished = TERMINAL.has(job.status);
    Object.assign(job, fields);
    if (!wasFinished && TERMINAL.has(job.status)) {
      job.finishedOrder = ++this.finishedCount;
      job.position = null;
      job.estimated_start_seconds = null;
    }
    this.jobs.set(key, job);
    this.changed.add(key);
    this.scheduler.mark("jobs");
    return job;
  }

  /** Replace every job with those of a fresh load (finished cards already shown are kept). */
  replace(jobs) {
    const keep = [...this.jobs.values()].filter((job) => TERMINAL.has(job.status));
    this.jobs = new Map();
    for (const job of keep) this.jobs.set(job.id, job);
    for (const job of jobs) this.jobs.set(String(job.id), { ...job, id: String(job.id) });
    this.changed = new Set(this.jobs.keys());
    this.scheduler.mark("jobs");
  }

  queuedIds() {
    return [...this.jobs.values()].filter((j) => j.status === "queued").map((j) => j.id);
  }

  prune() {
    const finished = [...this.jobs.values()]
      .filter((job) => TERMINAL.has(job.status))
      .sort((a, b) => (b.finishedOrder ?? 0) - (a.finishedOrder ?? 0));
    for (const job of finished.slice(FINISHED_JOBS_KEPT)) this.jobs.delete(job.id);
  }

  card(job) {
    const card = el("article", "job");
    card.dataset.jobId = job.id;
    const head = el("div", "job-head");
    head.append(
      el("span", "job-id", `#${job.id}`),
      el("span", "job-kind"),
      el("span", "job-status")
    );
    const bar = el("div", "bar");
    bar.setAttribute("role", "progressbar");
    bar.setAttribute("aria-valuemin", "0");
    bar.setAttribute("aria-valuemax", "100");
    bar.setAttribute("aria-label", `job ${job.id} progress`);
    bar.append(el("div", "bar-fill"));
    const line = el("div", "job-line");
    line.append(el("span", "job-stage"), el("span", "job-percent num"));
    card.append(
      head,
      bar,
      line,
      el("div", "job-position"),
      el("div", "job-message"),
      el("ul", "job-counters"),
      el("div", "job-extra")
    );
    return card;
  }

  fill(card, job) {
    const part = (name) => card.querySelector(`.${name}`);
    card.dataset.status = job.status;
    part("job-kind").textContent = job.kind ?? "";
    part("job-status").textContent = job.status;
    const value = percent(job.progress);
    const bar = part("bar");
    bar.setAttribute("aria-valuenow", String(value));
    bar.setAttribute("aria-valuetext", `${value}%`);
    part("bar-fill").style.width = `${value}%`; // CSSOM, allowed by the page's style-src
    part("job-stage").textContent = job.stage ?? (job.status === "queued" ? "waiting" : "");
    part("job-percent").textContent = `${Math.round(value * 10) / 10}%`;
    let position = "";
    if (job.status === "queued" && job.position != null) {
      position = `#${job.position} in queue`;
      if (job.estimated_start_seconds != null) {
        position += ` · starts in ~${Math.round(job.estimated_start_seconds)} s`;
      }
    }
    part("job-position").textContent = position;
    part("job-message").textContent = job.message ?? "";
    const counters = job.counters && typeof job.counters === "object" ? job.counters : {};
    part("job-counters").replaceChildren(
      ...Object.entries(counters).map(([key, count]) => {
        const item = el("li", "", `${key} ${count}`);
        item.dataset.counter = key;
        return item;
      })
    );
    const extra = [];
    if (job.worker) extra.push(`worker ${job.worker}`);
    if (job.priority != null) extra.push(`priority ${job.priority}`);
    if (job.photo_id != null) extra.push(`photo ${job.photo_id}`);
    if (job.error_message) extra.push(`error: ${job.error_message}`);
    if (job.reason) extra.push(`reason: ${job.reason}`);
    part("job-extra").textContent = extra.join(" · ");
  }

  draw() {
    this.prune();
    for (const [id, card] of this.cards) {
      if (!this.jobs.has(id)) {
        card.remove();
        this.cards.delete(id);
      }
    }
    for (const id of this.changed) {
      const job = this.jobs.get(id);
      if (!job) continue;
      let card = this.cards.get(id);
      if (!card) {
        card = this.card(job);
        this.cards.set(id, card);
      }
      this.fill(card, job);
    }
    this.changed.clear();
    const ordered = [...this.jobs.values()].sort(jobOrder).map((job) => this.cards.get(job.id));
    // reorder only when the order changed: moving nodes restarts their transitions
    const current = [...this.container.children];
    if (ordered.length !== current.length || ordered.some((card, i) => card !== current[i])) {
      this.container.replaceChildren(...ordered);
    }
    const counts = { running: 0, queued: 0 };
    for (const job of this.jobs.values()) {
      if (job.status in counts) counts[job.status] += 1;
    }
    this.empty.hidden = this.jobs.size > 0;
    this.summary.textContent = `${counts.running} running · ${counts.queued} queued`;
  }
}
