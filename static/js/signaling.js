// The Socket.IO connection to the server, with requests that resolve to the ack or throw.

import { io } from "/socket.io/socket.io.esm.min.js";

const REQUEST_TIMEOUT_MS = 15_000;

/** A refused or failed request; ``code`` is the protocol's error code (or offline / timeout). */
export class RequestError extends Error {
  constructor({ code = "error", message = "request failed", event = null } = {}) {
    super(message);
    this.code = code;
    this.event = event;
  }
}

const TOKEN_KEY = "roomrelay-token";

/** An access token from the page's link (/?room=R&token=T), kept for reloads of this tab. */
function accessToken() {
  const fromLink = new URL(location.href).searchParams.get("token");
  if (fromLink) sessionStorage.setItem(TOKEN_KEY, fromLink);
  return fromLink || sessionStorage.getItem(TOKEN_KEY);
}

export class Signaling {
  constructor() {
    const token = accessToken();
    // Socket.IO reconnects by itself, with backoff, after a drop.
    this.socket = io(token ? { auth: { token } } : {});
    this.socket.on("disconnect", (reason) => {
      // The only case Socket.IO does not retry on its own.
      if (reason === "io server disconnect") this.socket.connect();
    });
  }

  get connected() {
    return this.socket.connected;
  }

  on(event, handler) {
    this.socket.on(event, handler);
  }

  /** Emit a native request and return its ``{ok: true, ...}`` ack. */
  async request(event, ...args) {
    // Socket.IO would buffer emits while offline and send them, stale, after reconnecting.
    if (!this.socket.connected) {
      throw new RequestError({ code: "offline", message: "not connected to the server", event });
    }
    let reply;
    try {
      reply = await this.socket.timeout(REQUEST_TIMEOUT_MS).emitWithAck(event, ...args);
    } catch {
      throw new RequestError({ code: "timeout", message: `no answer to ${event}`, event });
    }
    if (!reply?.ok) throw new RequestError(reply?.error ?? { message: "malformed reply", event });
    return reply;
  }

  /** Resolves true once connected, false if that takes longer than ``timeoutMs``. */
  whenConnected(timeoutMs) {
    if (this.connected) return Promise.resolve(true);
    return new Promise((resolve) => {
      const done = (value) => {
        clearTimeout(timer);
        this.socket.off("connect", onConnect);
        resolve(value);
      };
      const onConnect = () => done(true);
      const timer = setTimeout(() => done(false), timeoutMs);
      this.socket.on("connect", onConnect);
    });
  }
}
