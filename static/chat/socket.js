// The conversation's WebSocket: JSON frames in and out, reconnection with backoff, and the
// close codes that mean "stop trying".

export const CLOSE_UNAUTHORIZED = 4401;
export const CLOSE_NOT_FOUND = 4404;

const BACKOFF_FIRST_MS = 500;
const BACKOFF_MAX_MS = 8000;
const JITTER = 0.25; // ± a quarter of the delay, so many tabs do not reconnect in step

/** Delay before reconnect attempt `attempt` (0-based): 0.5 s doubling to 8 s, with jitter. */
export function backoffDelay(attempt, random = Math.random) {
  const base = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** attempt);
  return Math.round(base * (1 - JITTER + 2 * JITTER * random()));
}

export function socketUrl(path, loc = window.location) {
  const scheme = loc.protocol === "https:" ? "wss" : "ws";
  return `${scheme}://${loc.host}${path}`;
}

/**
 * States reported to onState: "connecting" (first attempt), "open", "reconnecting" (with the
 * delay in ms until the next attempt, or 0 while an attempt is under way), "unauthorized",
 * "not_found". The last two are final: no more attempts are made.
 */
export class ChatSocket {
  constructor(url, { onOpen, onFrame, onState }) {
    this.url = url;
    this.onOpen = onOpen;
    this.onFrame = onFrame;
    this.onState = onState;
    this.ws = null;
    this.attempt = 0;
    this.everOpened = false;
    this.retryTimer = null;
    this.finished = false;
    this.suspended = false;
  }

  start() {
    window.addEventListener("online", () => this.reconnectNow());
    // A page kept in the back/forward cache must not hold a socket; it reconnects on return.
    window.addEventListener("pagehide", (event) => {
      if (event.persisted) this.suspend();
    });
    window.addEventListener("pageshow", (event) => {
      if (event.persisted) this.resume();
    });
    this.connect();
  }

  get isOpen() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN;
  }

  /** Sends a frame if the socket is open; returns whether it was sent. */
  send(frame) {
    if (!this.isOpen) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  reconnectNow() {
    if (this.finished || this.suspended || this.ws) return;
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.connect();
  }

  suspend() {
    this.suspended = true;
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    const ws = this.ws;
    this.ws = null;
    if (ws) ws.close(1000, "page hidden");
  }

  resume() {
    this.suspended = false;
    this.attempt = 0;
    this.reconnectNow();
  }

  connect() {
    if (this.finished || this.suspended) return;
    this.onState(this.everOpened || this.attempt > 0 ? "reconnecting" : "connecting", 0);
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch {
      this.scheduleReconnect();
      return;
    }
    this.ws = ws;
    ws.addEventListener("open", () => {
      if (this.ws !== ws) return;
      this.attempt = 0;
      this.everOpened = true;
      this.onState("open", 0);
      this.onOpen();
    });
    ws.addEventListener("message", (event) => {
      if (this.ws !== ws) return;
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return; // not JSON: not ours to act on
      }
      if (frame && typeof frame.type === "string") this.onFrame(frame);
    });
    ws.addEventListener("close", (event) => {
      if (this.ws !== ws) return; // replaced or suspended on purpose
      this.ws = null;
      if (event.code === CLOSE_UNAUTHORIZED) {
        this.finish("unauthorized");
      } else if (event.code === CLOSE_NOT_FOUND) {
        this.finish("not_found");
      } else {
        this.scheduleReconnect();
      }
    });
    // An "error" event is always followed by "close", which does the work.
  }

  finish(state) {
    this.finished = true;
    clearTimeout(this.retryTimer);
    this.onState(state, 0);
  }

  scheduleReconnect() {
    if (this.finished || this.suspended || this.retryTimer) return;
    const delay = backoffDelay(this.attempt);
    this.attempt += 1;
    this.onState("reconnecting", delay);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      this.connect();
    }, delay);
  }
}
