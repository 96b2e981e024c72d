// The dashboard's token: where it is kept, how the user is asked for it, what it says.
//
// A token is kept in sessionStorage (this tab, until it closes); only when the user ticks
// "remember on this device" also in localStorage. It never goes into a URL: REST sends it as
// `Authorization: Bearer`, the bus as the `authenticate` message.

const KEY = "local_bridge.dashboard.token";

function tryStorage(storage, action) {
  try {
    return action(storage);
  } catch {
    return null; // storage disabled (private mode, policy): the token lives in memory only
  }
}

/** Where the token lives between page loads. */
export class TokenStore {
  constructor() {
    this.memory = null;
  }

  get() {
    return (
      this.memory ||
      tryStorage(window.sessionStorage, (s) => s.getItem(KEY)) ||
      tryStorage(window.localStorage, (s) => s.getItem(KEY)) ||
      null
    );
  }

  set(token, remember) {
    this.memory = token;
    tryStorage(window.sessionStorage, (s) => s.setItem(KEY, token));
    tryStorage(window.localStorage, (s) => (remember ? s.setItem(KEY, token) : s.removeItem(KEY)));
  }

  clear() {
    this.memory = null;
    tryStorage(window.sessionStorage, (s) => s.removeItem(KEY));
    tryStorage(window.localStorage, (s) => s.removeItem(KEY));
  }
}

/** A JWT's claims, read without checking the signature: only to choose what to show and which
 * client type to register as (the server checks the token itself). Null when unreadable. */
export function claimsOf(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const padded = part + "=".repeat((4 - (part.length % 4)) % 4);
    const bytes = Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
    const claims = JSON.parse(new TextDecoder().decode(bytes));
    return claims && typeof claims === "object" ? claims : null;
  } catch {
    return null;
  }
}

/** The token panel: asks the user, and says why (needed, or refused and why). */
export class TokenPrompt {
  constructor(store, elements) {
    this.store = store;
    this.el = elements; // {panel, form, input, remember, reason}
    this.pending = null; // one question at a time, whoever asks
    this.el.form.addEventListener("submit", (event) => {
      event.preventDefault();
      const token = this.el.input.value.trim();
      if (!token || !this.pending) return;
      this.store.set(token, this.el.remember.checked);
      this.el.input.value = "";
      this.el.panel.hidden = true;
      const { resolve } = this.pending;
      this.pending = null;
      resolve(token);
    });
  }

  /** Resolves with the token the user gives; `refused` says the last one was not accepted. */
  ask(reason, refused = false) {
    if (this.pending) return this.pending.promise; // already asking: the first reason stands
    this.el.reason.textContent = reason;
    this.el.panel.toggleAttribute("data-refused", refused);
    this.el.panel.hidden = false;
    this.el.input.focus();
    let resolve;
    const promise = new Promise((r) => (resolve = r));
    this.pending = { promise, resolve };
    return promise;
  }

  get asking() {
    return this.pending !== null;
  }
}
