// local-bridge.js: the browser client of the local_bridge event bus (protocol 1.1).
//
// One ES module, no build step, no dependencies; served by the server at
// /static/local-bridge.js. It keeps a WebSocket to /ws open across drops and server restarts
// (exponential backoff with full jitter, per the close codes of PROTOCOL.md section 5), resumes
// with `since` + `epoch` so that nothing is lost or repeated, answers heartbeats, detects a dead
// connection by a read deadline, and sends the token in the `authenticate` message (never in
// the URL), refreshing it before it expires. See docs/browser-client.md.

export const PROTOCOL_VERSION = 1;

/** Close codes the server uses (PROTOCOL.md section 5). */
export const CloseCode = Object.freeze({
  NORMAL: 1000,
  GOING_AWAY: 1001,
  ABNORMAL: 1006,
  MESSAGE_TOO_BIG: 1009,
  INTERNAL_ERROR: 1011,
  UNAUTHORIZED: 4001,
  FORBIDDEN: 4003,
  NOT_FOUND: 4004,
  SLOW_CONSUMER: 4008,
  ADMIN_DISCONNECT: 4009,
  RATE_LIMITED: 4029,
});

// Codes after which reconnecting cannot help: the same client would be refused again. Every
// other code (1001, 1006, 1011, 4008, 4029, and codes this module does not know) reconnects.
const STOP_CODES = new Set([1000, 1009, 4001, 4003, 4004, 4009]);
// The code this module closes its own socket with when it gives up on it (the application
// range 4000-4999 is free for clients; the server never sends it).
const CLIENT_GAVE_UP = 4000;
// Subscription errors after which the `subscribed` reply still comes (the rest was applied).
const PARTIAL_REFUSALS = new Set(["unknown_channel", "forbidden"]);
const MAX_TIMER_MS = 2 ** 31 - 1; // setTimeout's longest delay
const MAX_NAMES = 64; // channel names per subscribe or unsubscribe request (PROTOCOL.md)
const TERMINAL_JOB_EVENTS = new Set(["job_completed", "job_failed", "job_cancelled"]);
const DEFAULT_BACKOFF = Object.freeze({
  initial: 500, // ms: the first retry waits up to this long (full jitter: 0..initial)
  max: 30000, // ms: the cap of the exponential growth
  factor: 2,
  rateLimited: 5000, // ms added to the delay after a 4029 (rate limited)
  stable: 10000, // ms a connection must have lasted for the next drop to retry from scratch
});

/** The bus address of the page's own server: ws(s)://<location.host>/ws. */
export function defaultUrl() {
  const secure = globalThis.location?.protocol === "https:";
  return `${secure ? "wss" : "ws"}://${globalThis.location.host}/ws`;
}

/** The delay (ms) before reconnect attempt number `attempt` (0 first): a random value in
 * [0, min(max, initial * factor ** attempt)] ("full jitter"), plus `rateLimited` after a 4029. */
export function backoffDelay(attempt, backoff = DEFAULT_BACKOFF, rateLimited = false) {
  const b = { ...DEFAULT_BACKOFF, ...backoff };
  const ceiling = Math.min(b.max, b.initial * b.factor ** Math.max(0, attempt));
  return Math.random() * ceiling + (rateLimited ? b.rateLimited : 0);
}

/** What a token option gives: a string as is, or what a (possibly async) function returns. */
async function resolveToken(token) {
  const value = typeof token === "function" ? await token() : token;
  return value === undefined || value === null || value === "" ? null : String(value);
}

function httpBase(url) {
  // "ws://h:1/ws" -> "http://h:1"; "http://h:1/" -> "http://h:1"; "" -> this page's origin
  if (!url) return globalThis.location.origin;
  const parsed = new URL(url, globalThis.location?.href);
  const scheme = { "ws:": "http:", "wss:": "https:" }[parsed.protocol] ?? parsed.protocol;
  return `${scheme}//${parsed.host}`;
}

function wsBase(url) {
  const base = new URL(httpBase(url));
  return `${base.protocol === "https:" ? "wss" : "ws"}://${base.host}`;
}

/** The `exp` of a JWT in ms since the epoch, or null (not a JWT, no exp). */
function jwtExpiry(token) {
  try {
    const payload = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const exp = JSON.parse(atob(payload.padEnd(Math.ceil(payload.length / 4) * 4, "="))).exp;
    return typeof exp === "number" ? exp * 1000 : null;
  } catch {
    return null;
  }
}

/** Channel names in groups of at most MAX_NAMES, one request each. */
function chunks(names) {
  const groups = [];
  for (let i = 0; i < names.length; i += MAX_NAMES) groups.push(names.slice(i, i + MAX_NAMES));
  return groups;
}

function send(socket, message) {
  if (socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(message));
}

// ------------------------------------------------------------------------------ the bus

/**
 * A connection to the bus that stays up by itself.
 *
 * Dispatches (all CustomEvents, `detail` as listed):
 *   "event"     a bus event (flat, with `seq`), and `replay_complete` after a resume
 *   "resync"    the `replay_complete` whose `recovered` is false: reload state over REST
 *   "state"     the new state: "connecting" | "open" | "reconnecting" | "closed"
 *   "connected" the server's `connected` greeting (every connection)
 *   "error"     an `error` reply from the server ({code, message, request_type})
 *   "closed"    the bridge stopped: {code, reason} (a stopping close code, or close())
 *   "message"   every message from the server, raw
 */
export class Bridge extends EventTarget {
  constructor({
    url = undefined,
    channels = ["jobs"],
    clientType = "web",
    clientName = "local_bridge web client",
    token = undefined,
    since = undefined,
    epoch = undefined,
    backoff = {},
    timeout = 10000, // ms from opening a socket to the subscription being confirmed
    readDeadline = undefined, // ms without any message before the connection counts as dead
    refreshMargin = 60000, // ms before the token expires to refresh it (at most 1/3 of its life)
    tokenInUrl = false, // send the token as ?token= instead (protocol 1.0 servers)
  } = {}) {
    super();
    this.url = url ?? defaultUrl();
    this.clientType = clientType;
    this.clientName = clientName;
    this.token = token;
    this.backoff = { ...DEFAULT_BACKOFF, ...backoff };
    this.timeout = timeout;
    this.readDeadline = readDeadline;
    this.refreshMargin = refreshMargin;
    this.tokenInUrl = tokenInUrl;
    /** The last bus seq seen (resume point), and the history it belongs to. */
    this.seq = since ?? null;
    this.epoch = epoch ?? null;
    /** This connection's id on the server (changes on every reconnect). */
    this.clientId = null;
    /** The last `connected` greeting, and the server's auth mode from it ("none" | "token"). */
    this.greeting = null;
    this.auth = null;
    this.state = "closed";
    /** {code, reason} of the last connection that ended (1006 for one given up on here). */
    this.lastClose = null;
    this._channels = new Set(channels);
    this._conn = null; // the current socket and what belongs to it
    this._attempt = 0;
    this._stopped = true;
    this._retryTimer = null;
    this._ready = null; // {promise, resolve, reject} of connect()
    this._onOnline = () => this._retryNow();
    this._heldToken = null; // a token obtained after the server stopped waiting for it
    this._awaitingToken = false;
  }

  /** The channels subscribed (re-sent on every reconnect). */
  get channels() {
    return [...this._channels];
  }

  /** Whether the connection is up and subscribed. */
  get connected() {
    return this.state === "open";
  }

  /**
   * Start (or restart, after a stop) the connection. Resolves when the first connection is
   * registered and subscribed; keeps retrying until then. Rejects with an Error carrying
   * `.code` and `.reason` if the bridge stops first (a stopping close code, or close()).
   */
  connect() {
    if (!this._stopped) return this._ready.promise;
    this._stopped = false;
    this._attempt = 0;
    let resolve, reject;
    const promise = new Promise((res, rej) => ((resolve = res), (reject = rej)));
    this._ready = { promise, resolve, reject, settled: false };
    globalThis.addEventListener?.("online", this._onOnline);
    this._setState("connecting");
    this._open();
    return promise;
  }

  /** Stop for good (until connect() is called again); dispatches "closed" {code: 1000}. */
  close() {
    if (this._stopped) return;
    this._stop(CloseCode.NORMAL, "closed by the client");
  }

  /**
   * Call `fn(event)` for each bus event of `type` ("*": every one, replay_complete included).
   * Returns a function that removes the listener.
   */
  on(type, fn) {
    const listener = (e) => {
      if (type === "*" || e.detail.type === type) fn(e.detail);
    };
    this.addEventListener("event", listener);
    return () => this.removeEventListener("event", listener);
  }

  /** Add channels; remembered for every reconnect. Resolves with the `subscribed` reply when
   * connected (null when not: they are sent once the connection is up). */
  subscribe(channels) {
    const added = [].concat(channels);
    const fresh = added.filter((c) => !this._channels.has(c));
    added.forEach((c) => this._channels.add(c));
    return this._request({ type: "subscribe", channels: added }, "subscribed", fresh);
  }

  /** Remove channels (also from what is re-sent on reconnect). Resolves like subscribe(). */
  unsubscribe(channels) {
    const removed = [].concat(channels);
    removed.forEach((c) => this._channels.delete(c));
    return this._request({ type: "unsubscribe", channels: removed }, "unsubscribed");
  }

  /** Send any message (a type added on the server with register_handler, say). */
  send(message) {
    if (!this._conn?.ready) throw new Error("not connected");
    send(this._conn.socket, message);
  }

  // -------------------------------------------------------------------------- internals

  _request(message, replyType, fresh = []) {
    const conn = this._conn;
    // Before the first subscribe of a connection the channel set is what it will send; after
    // it, requests go out in order and the server's replies keep the set exact.
    if (!conn?.registered || message.channels.length === 0) return Promise.resolve(null);
    const replies = chunks(message.channels).map(
      (names) =>
        new Promise((resolve) => {
          conn.pending.push({ replyType, fresh: names.filter((c) => fresh.includes(c)), resolve });
          send(conn.socket, { ...message, channels: names });
        }),
    );
    return Promise.all(replies).then((all) => all[all.length - 1]);
  }

  _setState(state) {
    if (this.state === state) return;
    this.state = state;
    this._dispatch("state", state);
  }

  _dispatch(name, detail) {
    this.dispatchEvent(new CustomEvent(name, { detail }));
  }

  _open() {
    this._retryTimer = null;
    if (this._stopped) return;
    if (this.tokenInUrl && this.token !== undefined && this.token !== null) {
      return void this._openWithTokenInUrl();
    }
    this._connect(this.url, false);
  }

  async _openWithTokenInUrl() {
    // Opt-in (protocol 1.0 servers): the token as ?token=, where every proxy log will see it.
    this._awaitingToken = true;
    let token = null;
    let failure = null;
    try {
      token = await resolveToken(this.token);
    } catch (error) {
      failure = error;
    }
    this._awaitingToken = false;
    if (this._stopped) return;
    if (failure !== null) {
      this._dispatch("error", { type: "error", code: "token_error", message: String(failure) });
      return this._scheduleRetry(CloseCode.ABNORMAL);
    }
    if (token === null) return this._stop(CloseCode.UNAUTHORIZED, "no token");
    const url = new URL(this.url);
    url.searchParams.set("token", token);
    this._connect(url.href, token);
  }

  _connect(url, urlToken) {
    let socket;
    try {
      socket = new WebSocket(url);
    } catch (error) {
      // a malformed URL (or ws: from an https page) cannot get better by retrying
      this._stop(CloseCode.NORMAL, `cannot open ${this.url}: ${error.message}`);
      return;
    }
    const conn = {
      socket,
      urlToken, // the token sent in the URL, or false
      registered: false, // register (and the first subscribe) sent
      ready: false, // registered and subscribed
      resuming: false,
      openedAt: 0,
      lastSeen: 0,
      pending: [],
      deadline: null,
      refresh: null,
      done: false,
    };
    this._conn = conn;
    // Until the subscription is confirmed the handshake, greeting and auth must fit in `timeout`.
    conn.deadline = setTimeout(() => this._giveUp(conn, "no answer in time"), this.timeout);
    socket.onmessage = (e) => this._onMessage(conn, e.data);
    socket.onclose = (e) => this._onClose(conn, e.code, e.reason);
    socket.onerror = () => {}; // always followed by close, which carries what there is to know
  }

  _onMessage(conn, data) {
    if (conn.done) return;
    conn.lastSeen = Date.now();
    let message;
    try {
      message = JSON.parse(data);
    } catch {
      return; // only JSON is sent on the bus; a plain "pong" answers a plain "ping"
    }
    if (message === null || typeof message !== "object") return;
    this._dispatch("message", message);
    switch (message.type) {
      case "connected":
        return void this._onGreeting(conn, message);
      case "authenticated":
        this._scheduleRefresh(conn, message);
        return this._register(conn);
      case "refreshed":
        this._scheduleRefresh(conn, message);
        (message.dropped ?? []).forEach((c) => this._channels.delete(c));
        return;
      case "registered":
        return;
      case "subscribed":
      case "unsubscribed":
        return this._onSubscription(conn, message);
      case "heartbeat":
        return send(conn.socket, { type: "pong" });
      case "pong":
        return;
      case "error":
        return this._onErrorReply(conn, message);
      case "replay_complete":
        return this._onReplayComplete(conn, message);
    }
    if (typeof message.seq === "number") {
      // Before the subscription is complete an event is not counted: a resume replays it (its
      // seq is below the point of the last `subscribed`), a fresh start begins after it.
      if (!conn.ready) return;
      if (this.seq !== null && message.seq <= this.seq) return; // seen before a reconnect
      this.seq = message.seq;
    }
    this._dispatch("event", message);
  }

  async _onGreeting(conn, greeting) {
    this.greeting = greeting;
    this.auth = greeting.auth ?? "none";
    this.clientId = greeting.client_id;
    conn.greeting = greeting;
    conn.heartbeatMs = (greeting.heartbeat_interval ?? 30) * 1000;
    this._dispatch("connected", greeting);
    if (this.auth !== "token") return this._register(conn);
    if (conn.urlToken) {
      // no `authenticated` reply tells the expiry: the token's own `exp` does
      const exp = jwtExpiry(conn.urlToken);
      if (exp !== null) {
        const expires_at = new Date(exp).toISOString();
        this._scheduleRefresh(conn, { expires_at, timestamp: greeting.timestamp });
      }
      return this._register(conn);
    }
    let token = this._heldToken;
    this._heldToken = null;
    if (token === null) {
      // The token function may ask the user: its time does not count against `timeout`.
      clearTimeout(conn.deadline);
      conn.awaitingToken = this._awaitingToken = true;
      let failure = null;
      try {
        token = await resolveToken(this.token);
      } catch (error) {
        failure = error;
      }
      conn.awaitingToken = this._awaitingToken = false;
      if (this._stopped) return; // close() meanwhile
      if (failure !== null) {
        this._dispatch("error", { type: "error", code: "token_error", message: String(failure) });
        if (conn.done) return this._scheduleRetry(CloseCode.ABNORMAL);
        return this._giveUp(conn, "the token function failed");
      }
      if (token === null) return this._stop(CloseCode.UNAUTHORIZED, "no token");
      if (conn.done) {
        // The server stopped waiting (its authentication deadline): a new connection, with it.
        this._heldToken = token;
        return this._open();
      }
      conn.deadline = setTimeout(() => this._giveUp(conn, "no answer in time"), this.timeout);
    }
    send(conn.socket, { type: "authenticate", token });
  }

  _register(conn) {
    conn.registered = true;
    send(conn.socket, {
      type: "register",
      client_type: this.clientType,
      client_name: this.clientName,
    });
    if (this._channels.size === 0) {
      if (this.seq === null) [this.seq, this.epoch] = [conn.greeting.seq, conn.greeting.epoch];
      return this._opened(conn);
    }
    // At most 64 names per request: the last request carries the resume point, so that its
    // replay covers every channel.
    const groups = chunks([...this._channels]);
    groups.forEach((names, i) => {
      const last = i === groups.length - 1;
      const subscribe = { type: "subscribe", channels: names };
      if (last && this.seq !== null) {
        subscribe.since = this.seq;
        if (this.epoch !== null) subscribe.epoch = this.epoch;
        conn.resuming = true;
      }
      const request = { replyType: "subscribed", fresh: names, initial: last, resolve: () => {} };
      conn.pending.push(request);
      send(conn.socket, subscribe);
    });
  }

  _onSubscription(conn, reply) {
    const index = conn.pending.findIndex((p) => p.replyType === reply.type);
    const request = index >= 0 ? conn.pending.splice(index, 1)[0] : null;
    // The server's list is the truth, once no other request is on its way (before, the list
    // lacks what those add, and a drop now would lose them).
    if (conn.pending.length === 0) this._channels = new Set(reply.channels);
    if (request?.initial) {
      const newHistory = this.epoch !== null && conn.greeting.epoch !== this.epoch;
      if (!conn.resuming || newHistory) this.seq = reply.seq;
      if (!conn.resuming) this.epoch = conn.greeting.epoch;
      this._opened(conn);
    }
    request?.resolve(reply);
  }

  _onErrorReply(conn, error) {
    // unknown_channel and forbidden are followed by the reply all the same; any other error
    // (invalid_message: a malformed name, too many subscriptions) refuses the request whole.
    const kind = error.request_type;
    if ((kind === "subscribe" || kind === "unsubscribe") && !PARTIAL_REFUSALS.has(error.code)) {
      const index = conn.pending.findIndex((p) => p.replyType === `${kind}d`);
      const request = index >= 0 ? conn.pending.splice(index, 1)[0] : null;
      if (request && kind === "subscribe") {
        // not subscribed: drop the names so they are not sent again on every reconnect
        request.fresh.forEach((c) => this._channels.delete(c));
        if (request.initial) {
          // The request that would have resumed is refused: go on from the greeting's point,
          // and if there was something to resume, tell the app it has to reload.
          const since = this.seq;
          [this.seq, this.epoch] = [conn.greeting.seq, conn.greeting.epoch];
          this._opened(conn);
          if (conn.resuming) {
            const to = conn.greeting.seq;
            this._dispatch("resync", { type: "replay_complete", since, to, recovered: false });
          }
        }
      }
      request?.resolve(null);
    }
    this._dispatch("error", error);
  }

  _onReplayComplete(conn, message) {
    // Everything up to `to` has now been delivered, or is lost for good (recovered false):
    // either way the next resume starts there, in the history of this server.
    if (typeof message.to === "number") this.seq = message.to;
    this.epoch = conn.greeting?.epoch ?? this.epoch;
    this._dispatch("event", message);
    if (message.recovered === false) this._dispatch("resync", message);
  }

  _opened(conn) {
    clearTimeout(conn.deadline);
    conn.ready = true;
    conn.openedAt = Date.now();
    this._armReadDeadline(conn, this._readLimit(conn));
    this._setState("open");
    if (this._ready && !this._ready.settled) {
      this._ready.settled = true;
      this._ready.resolve(this);
    }
  }

  _readLimit(conn) {
    // The server sends a heartbeat every interval: two missed ones and a margin mean the
    // connection is dead, though the browser may not notice for minutes.
    return this.readDeadline ?? Math.max(2.5 * conn.heartbeatMs, 2 * conn.heartbeatMs + 1000);
  }

  _armReadDeadline(conn, delay) {
    // One timer, re-armed only when it fires: cheaper than a timer per message.
    conn.deadline = setTimeout(() => {
      if (conn.done) return;
      const limit = this._readLimit(conn);
      const silent = Date.now() - conn.lastSeen;
      if (silent >= limit) this._giveUp(conn, "no message within the read deadline");
      else this._armReadDeadline(conn, limit - silent);
    }, delay);
  }

  _scheduleRefresh(conn, reply) {
    clearTimeout(conn.refresh);
    if (typeof this.token !== "function" || !reply.expires_at) return; // a string cannot change
    // Measured against the server's own clock (the reply's timestamp): no skew.
    const now = Date.parse(reply.timestamp) || Date.now();
    const life = Date.parse(reply.expires_at) - now;
    const at = Date.now() + Math.max(0, life - Math.min(this.refreshMargin, life / 3));
    const refresh = async () => {
      if (conn.done) return;
      if (Date.now() < at) {
        // setTimeout fires at once for delays past 2^31 ms (24.8 days): wait in steps
        conn.refresh = setTimeout(refresh, Math.min(at - Date.now(), MAX_TIMER_MS));
        return;
      }
      let token = null;
      try {
        token = await resolveToken(this.token);
      } catch (error) {
        this._dispatch("error", { type: "error", code: "token_error", message: String(error) });
      }
      if (token !== null && !conn.done) send(conn.socket, { type: "refresh", token });
    };
    conn.refresh = setTimeout(refresh, Math.min(at - Date.now(), MAX_TIMER_MS));
  }

  _finish(conn) {
    conn.done = true;
    clearTimeout(conn.deadline);
    clearTimeout(conn.refresh);
    conn.pending.forEach((p) => p.resolve(null)); // re-applied on the next connection
    conn.pending = [];
    conn.socket.onmessage = conn.socket.onclose = null;
    if (this._conn === conn) this._conn = null;
  }

  _giveUp(conn, reason) {
    // Not waiting for the close handshake: on a dead connection it would never come.
    if (conn.done) return;
    try {
      conn.socket.close(CLIENT_GAVE_UP, reason);
    } catch {
      /* already closing */
    }
    this._onClose(conn, CloseCode.ABNORMAL, reason);
  }

  _onClose(conn, code, reason) {
    if (conn.done) return;
    this.lastClose = { code, reason };
    const lasted = conn.ready ? Date.now() - conn.openedAt : 0;
    this._finish(conn);
    if (this._stopped) return;
    if (lasted >= this.backoff.stable) this._attempt = 0;
    if (conn.awaitingToken) {
      // The server's authentication deadline passed while the token function ran (a prompt,
      // say): not a refusal of the token. A new connection opens once it has one.
      this._setState(this._ready.settled ? "reconnecting" : "connecting");
      return;
    }
    if (STOP_CODES.has(code)) return this._stop(code, reason);
    this._scheduleRetry(code);
  }

  _scheduleRetry(code) {
    const delay = backoffDelay(this._attempt++, this.backoff, code === CloseCode.RATE_LIMITED);
    this._setState(this._ready.settled ? "reconnecting" : "connecting");
    clearTimeout(this._retryTimer);
    this._retryTimer = setTimeout(() => this._retry(), delay);
  }

  _retry() {
    this._retryTimer = null;
    // Offline: wait for the "online" event rather than fail attempt after attempt.
    if (globalThis.navigator?.onLine === false) return;
    this._open();
  }

  _retryNow() {
    // back online: try at once instead of waiting out the backoff
    if (this._stopped || this._conn || this._awaitingToken) return;
    clearTimeout(this._retryTimer);
    this._open();
  }

  _stop(code, reason) {
    this._stopped = true;
    clearTimeout(this._retryTimer);
    this._retryTimer = null;
    globalThis.removeEventListener?.("online", this._onOnline);
    const conn = this._conn;
    if (conn) {
      this._finish(conn);
      try {
        conn.socket.close(CloseCode.NORMAL);
      } catch {
        /* already closing */
      }
    }
    this._setState("closed");
    if (this._ready && !this._ready.settled) {
      this._ready.settled = true;
      const error = Object.assign(new Error(`bridge closed: ${code} ${reason}`), { code, reason });
      this._ready.promise.catch(() => {}); // the "closed" event says it too; no unhandled rejection
      this._ready.reject(error);
    }
    this._dispatch("closed", { code, reason });
  }
}

// ------------------------------------------------------------------------------ a job's stream

/**
 * Follow one job on /ws/jobs/<jobId>: `onMessage` gets its `job_status` snapshot, then its
 * events, up to the terminal one (job_completed, job_failed or job_cancelled), which
 * `promise` resolves with. If the stream drops before the end (or stays silent past
 * `readDeadline` ms: heartbeats come every 30 s by default), it reconnects with backoff and
 * starts again with a fresh snapshot. `promise` rejects with an Error carrying `.code` (the
 * server's error code such as "job_not_found", else the close code) when the stream cannot go
 * on; `close()` stops following (the promise then rejects with code 1000).
 */
export function followJob(
  baseUrl,
  jobId,
  { token, onMessage = () => {}, backoff = {}, timeout = 10000, readDeadline = 75000 } = {},
) {
  const url = `${wsBase(baseUrl)}/ws/jobs/${encodeURIComponent(jobId)}`;
  let socket = null;
  let timer = null;
  let attempt = 0;
  let done = false;
  let settle;
  const promise = new Promise((resolve, reject) => {
    settle = (error, terminal) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      if (socket) {
        socket.onmessage = socket.onclose = socket.onopen = null;
        try {
          socket.close(CloseCode.NORMAL);
        } catch {
          /* already closing */
        }
      }
      error ? reject(error) : resolve(terminal);
    };
  });
  const fail = (code, message) => settle(Object.assign(new Error(message), { code }));

  function open() {
    timer = null;
    if (done) return;
    let lastError = null;
    let started = false; // the snapshot came: this attempt got somewhere
    let lastSeen = Date.now();
    const current = (socket = new WebSocket(url));
    const retry = (code) => {
      if (current !== socket || done) return;
      clearTimeout(timer);
      current.onmessage = current.onclose = current.onopen = null;
      try {
        current.close(CLIENT_GAVE_UP);
      } catch {
        /* already closing */
      }
      if (started) attempt = 0;
      timer = setTimeout(open, backoffDelay(attempt++, backoff, code === CloseCode.RATE_LIMITED));
    };
    // No snapshot within `timeout`, or silence past `readDeadline` after it: try again.
    const watch = (delay) => {
      timer = setTimeout(() => {
        const limit = started ? readDeadline : timeout;
        const silent = Date.now() - lastSeen;
        if (!started || silent >= limit) retry(CloseCode.ABNORMAL);
        else watch(limit - silent);
      }, delay);
    };
    watch(timeout);
    current.onopen = async () => {
      // The job stream sends no greeting: with a token, authenticate at once.
      if (token === undefined || token === null) return;
      try {
        const value = await resolveToken(token);
        if (value !== null) send(current, { type: "authenticate", token: value });
      } catch (error) {
        fail("token_error", `the token function failed: ${error}`);
      }
    };
    current.onmessage = (e) => {
      lastSeen = Date.now();
      let message;
      try {
        message = JSON.parse(e.data);
      } catch {
        return;
      }
      if (message === null || typeof message !== "object") return;
      if (message.type === "heartbeat") return send(current, { type: "pong" });
      if (message.type === "error") {
        // (sent with a token to a server without authentication: harmless)
        if (message.request_type !== "authenticate") lastError = message;
        return;
      }
      if (["authenticated", "refreshed", "pong"].includes(message.type)) return;
      if (message.type === "job_status" && !started) {
        started = true;
        clearTimeout(timer);
        watch(readDeadline);
      }
      onMessage(message);
      if (TERMINAL_JOB_EVENTS.has(message.type)) settle(null, message);
    };
    current.onclose = (e) => {
      if (current !== socket || done) return;
      if (STOP_CODES.has(e.code)) {
        const code = lastError?.code ?? e.code;
        fail(code, lastError?.message ?? `job stream closed ${e.code} ${e.reason}`.trim());
      } else {
        retry(e.code);
      }
    };
  }

  open();
  return { promise, close: () => fail(CloseCode.NORMAL, "closed by the client") };
}

// ------------------------------------------------------------------------------ REST

/** A non-2xx answer: `.status` (HTTP), `.code` and `.message` from the server's error
 * envelope, `.fields` (422: what was wrong with which field), `.body` (the parsed answer). */
export class RestError extends Error {
  constructor(status, code, message, fields = null, body = null) {
    super(message);
    this.name = "RestError";
    this.status = status;
    this.code = code;
    this.fields = fields;
    this.body = body;
  }
}

/**
 * Thin helpers over fetch for the REST API: JSON in and out, `Authorization: Bearer <token>`
 * when a token (a string, or a possibly async function called for every request) is given.
 * Answers resolve with the parsed JSON (null for an empty body, 204); other statuses reject with
 * a RestError, a network failure with the TypeError fetch throws.
 */
export class Rest {
  constructor({ baseUrl = undefined, token = undefined, timeout = 30000 } = {}) {
    this.baseUrl = httpBase(baseUrl);
    this.token = token;
    this.timeout = timeout;
  }

  get(path, query = undefined) {
    return this.request("GET", path, undefined, query);
  }

  post(path, body = {}) {
    return this.request("POST", path, body);
  }

  patch(path, body = {}) {
    return this.request("PATCH", path, body);
  }

  delete(path, body = {}) {
    return this.request("DELETE", path, body);
  }

  /** Publish an event (admin): POST /api/websocket/broadcast. */
  publish(type, data = {}, { channel, clientTypes } = {}) {
    const body = { type, data };
    if (channel !== undefined) body.channel = channel;
    if (clientTypes !== undefined) body.client_types = clientTypes;
    return this.post("/api/websocket/broadcast", body);
  }

  async request(method, path, body = undefined, query = undefined) {
    const url = new URL(path, this.baseUrl + "/");
    for (const [key, value] of Object.entries(query ?? {})) {
      if (value !== undefined && value !== null) url.searchParams.set(key, String(value));
    }
    const headers = { Accept: "application/json" };
    const token = await resolveToken(this.token);
    if (token !== null) headers.Authorization = `Bearer ${token}`;
    const init = { method, headers, signal: AbortSignal.timeout?.(this.timeout) };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json"; // every write must be JSON (API.md)
      init.body = JSON.stringify(body);
    }
    const response = await fetch(url, init);
    const text = await response.text();
    let parsed = null;
    if (text) {
      try {
        parsed = JSON.parse(text);
      } catch {
        parsed = text;
      }
    }
    if (!response.ok) {
      const envelope = parsed?.error ?? {};
      throw new RestError(
        response.status,
        envelope.code ?? `http_${response.status}`,
        envelope.message ?? `${method} ${url.pathname}: HTTP ${response.status}`,
        envelope.fields ?? null,
        parsed,
      );
    }
    return parsed;
  }
}
