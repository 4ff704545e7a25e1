/**
 * Connection: the Socket.IO client, its banner state, requests, commands and latency pings.
 *
 * Wraps socket.io-client 4 with the msgpack parser (docs/protocol.md §2–3): every message is
 * one binary websocket frame, binary payloads arrive as ArrayBuffers. Commands are answered
 * by a `result` event carrying the id we sent. The state the banner shows:
 *   "connecting"   – first attempt in progress
 *   "live"         – connected and the device is online (the one selected in the picker)
 *   "offline"      – connected, but the device's heartbeat is stale (or no device yet)
 *   "disconnected" – lost the bridge; socket.io-client is reconnecting by itself
 *   "refused"      – the bridge refused the token; no retry (open the URL it printed)
 * After a reconnect the bridge treats us as a new client: listeners of "connect" re-subscribe.
 * Per-device requests (`consumed`, `command`) name their device (protocol 4 and later); main.js tells
 * which device's status the banner shows (`setDevice`).
 */
import { io } from "socket.io-client";
import * as parser from "socket.io-msgpack-parser";
import { withDevice } from "./devices.js";
import { quantile } from "./util.js";

const REQUEST_TIMEOUT_MS = 10000; // the bridge answers commands within --command-timeout (5 s)
const PING_PERIOD_MS = 250;
const PING_WINDOW_MS = 10000;

export class Connection {
  /** @param {string|null} token from ?token= (null → viewer role on a loopback bridge) */
  constructor(token) {
    this.token = token;
    this.state = "connecting";
    this.refusal = "";
    this.deviceStatus = "offline";
    this._listeners = new Map(); // event name -> Set of handlers (ours, not socket.io's)
    this._pings = []; // [performance.now() when answered, rtt ms]
    this._pingTimer = null;
    // Same origin; the socket.io path sits next to the page so a reverse proxy prefix works.
    const base = location.pathname.replace(/[^/]*$/, "");
    this.socket = io({
      path: base + "socket.io",
      // bundle: several channels' records in one message when they go out together (§4.9)
      auth: token ? { token, bundle: true } : { bundle: true },
      transports: ["websocket"],
      parser, // the bridge speaks msgpack (docs/protocol.md §2)
    });
    this._nextCommandId = 1;
    this._commands = new Map(); // command id -> {resolve, timer}
    this._wire();
  }

  _wire() {
    const s = this.socket;
    s.on("connect", () => {
      this._setState(this.deviceStatus === "online" ? "live" : "offline");
      this._startPings();
    });
    s.on("result", (answer) => this._onResult(answer));
    s.on("disconnect", (reason) => {
      this.lastDisconnect = String(reason);
      this._failCommands({ code: "disconnected", message: `lost the bridge (${reason}) before the answer came` });
      console.warn(`monbridge: disconnected (${reason}); reconnecting`);
      this._setState("disconnected");
      this._stopPings();
    });
    s.on("connect_error", (err) => {
      const message = (err && err.message) || String(err);
      if (/unauthori[sz]ed/i.test(message) || !s.active) {
        this.refusal = message;
        this._setState("refused");
      } else {
        this._setState("disconnected");
      }
    });
  }

  /** The status of the device the page shows (main.js), so the banner can say "device offline". */
  setDevice(device) {
    this.deviceStatus = device && device.status === "online" ? "online" : "offline";
    if (this.socket.connected) this._setState(this.deviceStatus === "online" ? "live" : "offline");
  }

  _setState(state) {
    if (state === this.state) return;
    this.state = state;
    this._fire("banner", state);
  }

  /** Subscribe to a bridge event ("hello", "data", "state", …) or to "banner" (our connection state changes). */
  on(event, handler) {
    if (event === "banner") {
      if (!this._listeners.has(event)) this._listeners.set(event, new Set());
      this._listeners.get(event).add(handler);
    } else {
      this.socket.on(event, handler);
    }
    return this;
  }

  _fire(event, ...args) {
    for (const h of this._listeners.get(event) || []) {
      try {
        h(...args);
      } catch (err) {
        console.error(`monbridge: ${event} handler failed`, err);
      }
    }
  }

  /**
   * Emit an event and resolve with its acknowledgement ({ok:true,…} or {ok:false,error}).
   * Never rejects; not connected or no answer in time become error acks.
   */
  request(event, payload, timeoutMs = REQUEST_TIMEOUT_MS) {
    if (!this.socket.connected) {
      return Promise.resolve({ ok: false, error: { code: "disconnected", message: "not connected to the bridge" } });
    }
    return new Promise((resolve) => {
      this.socket.timeout(timeoutMs).emit(event, payload, (err, ack) => {
        if (err) resolve({ ok: false, error: { code: "timeout", message: `no answer to '${event}' in ${timeoutMs / 1000} s` } });
        else resolve(ack && typeof ack === "object" ? ack : { ok: false, error: { code: "bad_ack", message: String(ack) } });
      });
    });
  }

  /** Confirm a data message of `device` (no acknowledgement asked: it is sent ~100 times a second). */
  consumed(device, channel, seq) {
    if (this.socket.connected) this.socket.emit("consumed", withDevice({ channel, seq }, device));
  }

  /**
   * Send a command to `device` (null: the only device of a bridge that does not know its
   * name yet); resolves with its answer ({ok:true, result} or {ok:false, error}), which the
   * bridge sends as a `result` event with our id. Never rejects.
   */
  command(name, args = {}, device = null, timeoutMs = REQUEST_TIMEOUT_MS) {
    if (!this.socket.connected) {
      return Promise.resolve({ ok: false, error: { code: "disconnected", message: "not connected to the bridge" } });
    }
    const id = this._nextCommandId++;
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this._commands.delete(id);
        resolve({ ok: false, error: { code: "timeout", message: `no answer to '${name}' in ${timeoutMs / 1000} s` } });
      }, timeoutMs);
      this._commands.set(id, { resolve, timer });
      this.socket.emit("command", withDevice({ id, name, args }, device));
    });
  }

  _onResult(answer) {
    const pending = answer && this._commands.get(answer.id);
    if (!pending) return; // not ours, or answered after our timeout
    this._commands.delete(answer.id);
    clearTimeout(pending.timer);
    const { id: _id, ...rest } = answer;
    pending.resolve(rest);
  }

  _failCommands(error) {
    for (const { resolve, timer } of this._commands.values()) {
      clearTimeout(timer);
      resolve({ ok: false, error });
    }
    this._commands.clear();
  }

  _startPings() {
    this._stopPings();
    this._pingTimer = setInterval(() => {
      if (!this.socket.connected) return;
      const sent = performance.now();
      this.socket.timeout(PING_PERIOD_MS * 8).emit("ping", { t: sent }, (err, ack) => {
        if (err || !ack || !ack.ok) return;
        const now = performance.now();
        this._pings.push([now, now - sent]);
      });
      const oldest = performance.now() - PING_WINDOW_MS;
      while (this._pings.length && this._pings[0][0] < oldest) this._pings.shift();
    }, PING_PERIOD_MS);
  }

  _stopPings() {
    if (this._pingTimer !== null) clearInterval(this._pingTimer);
    this._pingTimer = null;
  }

  /** Round-trip latency over the last ~10 s: {p50, p99, n} in ms (null without samples). */
  latency() {
    const rtts = this._pings.map((p) => p[1]);
    return { p50: quantile(rtts, 0.5), p99: quantile(rtts, 0.99), n: rtts.length };
  }
}
