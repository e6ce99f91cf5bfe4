// Sophia's real-time client for browsers: subscribe to channels, get every publication once and in
// order, and come back after a dropped connection where you left off (docs/realtime.md).
//
//   import { SophiaRealtime } from "./sophia-realtime.js";
//   const live = new SophiaRealtime({
//     url: "ws://127.0.0.1:8001/ws",
//     token: async () => (await (await fetch("/api/v1/realtime/token", {method: "POST"})).json()).token,
//     onStatus: (status) => console.log(status),   // "connecting" | "open" | "reconnecting" | "closed"
//   });
//   live.subscribe("deals", (publication) => console.log(publication.event));
//
// A token is asked for on every (re)connect: they are valid a minute. The client keeps the position
// of the last publication of each channel and subscribes again with it as `since` after a
// reconnect; a `recovered: false` answer (the position is too old, or from another stream) is
// passed to `onResync(channel, reason)`: read the current state again, then go on. No dependency,
// no build step: one ES module.

const RETRY_FIRST_MS = 250;
const RETRY_MAX_MS = 10_000;
const FATAL_CLOSES = new Set([1008, 1009]); // the client broke a limit: reconnecting repeats it

export class SophiaRealtime {
  /**
   * @param {object} options
   * @param {string} options.url  the service's ws:// or wss:// URL (ending in /ws)
   * @param {() => Promise<string>} options.token  a fresh token (POST /api/v1/realtime/token)
   * @param {(status: string, detail?: string) => void} [options.onStatus]
   * @param {(channel: string, reason: string) => void} [options.onResync]
   * @param {(error: {code: string, detail: string, channel?: string}) => void} [options.onError]
   */
  constructor({ url, token, onStatus = () => {}, onResync = () => {}, onError = () => {} }) {
    this.url = url;
    this.token = token;
    this.onStatus = onStatus;
    this.onResync = onResync;
    this.onError = onError;
    this.channels = new Map(); // channel -> {handler, position}
    this.pending = new Map(); // frame id -> channel
    this.nextId = 1;
    this.socket = null;
    this.attempt = 0;
    this.stopped = false;
    this.status = "connecting";
    this.connect();
  }

  /** Call `handler(publication)` for each publication of `channel`, from now on. */
  subscribe(channel, handler) {
    this.channels.set(channel, { handler, position: null });
    this.send({ op: "subscribe", channel });
  }

  unsubscribe(channel) {
    if (this.channels.delete(channel)) this.send({ op: "unsubscribe", channel });
  }

  /** The position of the last publication handled on `channel` (null before the first). */
  position(channel) {
    return this.channels.get(channel)?.position ?? null;
  }

  close() {
    this.stopped = true;
    this.socket?.close(1000, "client closed");
    this.setStatus("closed");
  }

  setStatus(status, detail) {
    if (this.status === status) return;
    this.status = status;
    this.onStatus(status, detail);
  }

  send(frame) {
    if (this.socket?.readyState !== WebSocket.OPEN) return; // sent on (re)connect instead
    const id = this.nextId++;
    if (frame.channel) this.pending.set(id, frame.channel);
    this.socket.send(JSON.stringify({ ...frame, id }));
  }

  async connect() {
    let token;
    try {
      token = await this.token();
    } catch (error) {
      this.retry(`no token: ${error}`);
      return;
    }
    if (this.stopped) return;
    const socket = new WebSocket(`${this.url}?token=${encodeURIComponent(token)}`);
    this.socket = socket;
    socket.onopen = () => {
      this.attempt = 0;
      this.setStatus("open");
      for (const [channel, { position }] of this.channels) {
        this.send(position ? { op: "subscribe", channel, since: position } : { op: "subscribe", channel });
      }
    };
    socket.onmessage = (message) => this.receive(JSON.parse(message.data));
    socket.onclose = (closed) => {
      if (this.socket !== socket) return;
      this.socket = null;
      this.pending.clear();
      if (this.stopped) return;
      if (FATAL_CLOSES.has(closed.code)) {
        this.stopped = true;
        this.setStatus("closed", `${closed.code} ${closed.reason}`);
        return;
      }
      this.retry(`${closed.code} ${closed.reason}`.trim());
    };
  }

  retry(why) {
    this.setStatus("reconnecting", why);
    const ceiling = Math.min(RETRY_MAX_MS, RETRY_FIRST_MS * 2 ** this.attempt++);
    setTimeout(() => this.stopped || this.connect(), ceiling / 2 + Math.random() * (ceiling / 2));
  }

  receive(frame) {
    if (frame.type === "publication") {
      const subscription = this.channels.get(frame.channel);
      if (!subscription) return;
      subscription.position = frame.position;
      subscription.handler(frame);
    } else if (frame.type === "subscribed") {
      this.pending.delete(frame.id);
      const subscription = this.channels.get(frame.channel);
      if (!subscription) return;
      if (frame.recovered === false) this.onResync(frame.channel, frame.reason ?? "");
      if (!subscription.position || frame.recovered === false) subscription.position = frame.position;
    } else if (frame.type === "error") {
      const channel = this.pending.get(frame.id);
      this.pending.delete(frame.id);
      this.onError({ code: frame.code, detail: frame.detail, channel });
    }
  }
}
