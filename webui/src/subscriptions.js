/**
 * SubscriptionManager: one bridge subscription per channel, merged from what every view wants.
 *
 * The bridge keeps one subscription per client and channel (a new subscribe replaces the
 * old one), so when two views show the same channel their wishes are merged: the highest
 * rate, the longest window, and a point budget per second that satisfies the hungriest
 * view. Only channels the device has are subscribed; the rest wait for a `channels` event.
 * After a reconnect (a new client for the bridge) `resubscribeAll()` sends everything again;
 * after a replay's jump `renew()` does, and the batches still on their way are `stale()`.
 *
 * A want: {channel, rate (Hz), seconds (window or null), maxPoints (or null)}.
 *
 * Flow control: every subscription asks for `in_flight: IN_FLIGHT`, and the page confirms
 * each data message with `consumed` once its views have taken it (see main.js). The bridge
 * then never has more than that many messages per channel on the way to this page, so a
 * page that draws slowly gets fresh frames at its own pace instead of a growing backlog.
 */

export const IN_FLIGHT = 1;
const LIMITS = { rate: [0.1, 1000], window: [0.01, 86400], max_points: [2, 1000000] };

function clamp(value, [lo, hi]) {
  return Math.min(hi, Math.max(lo, value));
}

/** Merge several wants for one channel into one subscribe payload (without `channels`). */
export function mergeWants(wants) {
  const rate = clamp(Math.max(...wants.map((w) => w.rate || 30)), LIMITS.rate);
  if (wants.some((w) => !w.maxPoints)) return { rate };
  const windows = wants.filter((w) => w.seconds).map((w) => w.seconds);
  if (!windows.length) return { rate, max_points: clamp(Math.max(...wants.map((w) => w.maxPoints)), LIMITS.max_points) };
  // Points per second each view needs; a per-update budget (no window) is that × its rate.
  const perSecond = Math.max(...wants.map((w) => (w.seconds ? w.maxPoints / w.seconds : w.maxPoints * (w.rate || 30))));
  const window = clamp(Math.max(...windows), LIMITS.window);
  return { rate, window, max_points: Math.round(clamp(Math.ceil(perSecond * window), LIMITS.max_points)) };
}

export class SubscriptionManager {
  /** @param {import("./connection.js").Connection} conn */
  constructor(conn) {
    this.conn = conn;
    this.owners = new Map(); // owner id (view id) -> [want]
    this.known = new Set(); // channel names the device has
    this.current = new Map(); // channel -> JSON of the payload the bridge acknowledged (or is acking)
    this.acks = new Map(); // channel -> last ack (for the Status tab)
    this.renewing = new Map(); // channel -> number of the renew() whose subscribe is unanswered
    this._renewals = 0;
    this._scheduled = false;
  }

  setWants(owner, wants) {
    this.owners.set(owner, wants);
    this._schedule();
  }

  removeOwner(owner) {
    this.owners.delete(owner);
    this._schedule();
  }

  setKnown(names) {
    this.known = new Set(names);
    this._schedule();
  }

  /** After (re)connecting: the bridge has no subscriptions for us. */
  resubscribeAll() {
    this.current.clear();
    this.renewing.clear();
    this._schedule();
  }

  /**
   * Subscribe again to every channel (a replay's position jumped). The bridge starts the new
   * subscription at the newest data, so what was published before this call never comes after
   * the answer; until it comes, `stale(channel)` is true: batches then are from the old
   * subscription (the bridge sends them before the answer), to be dropped.
   */
  renew() {
    const renewal = ++this._renewals;
    for (const [channel, key] of this.current) {
      this.renewing.set(channel, renewal);
      this.conn.request("subscribe", { channels: [channel], ...JSON.parse(key), in_flight: IN_FLIGHT }).then((ack) => {
        if (this.renewing.get(channel) === renewal) this.renewing.delete(channel);
        if (ack.ok) this.acks.set(channel, ack);
      });
    }
  }

  /** True while batches of `channel` are from before the last renew() (see there). */
  stale(channel) {
    return this.renewing.has(channel);
  }

  _schedule() {
    if (this._scheduled) return;
    this._scheduled = true;
    queueMicrotask(() => {
      this._scheduled = false;
      this.sync();
    });
  }

  /** The merged payload per channel that views want and the device has. */
  desired() {
    const byChannel = new Map();
    for (const wants of this.owners.values()) {
      for (const w of wants) {
        if (!this.known.has(w.channel)) continue;
        if (!byChannel.has(w.channel)) byChannel.set(w.channel, []);
        byChannel.get(w.channel).push(w);
      }
    }
    const out = new Map();
    for (const [channel, wants] of byChannel) out.set(channel, mergeWants(wants));
    return out;
  }

  sync() {
    if (!this.conn.socket.connected) return;
    const desired = this.desired();
    for (const [channel, payload] of desired) {
      const key = JSON.stringify(payload);
      if (this.current.get(channel) === key) continue;
      this.current.set(channel, key);
      this.conn.request("subscribe", { channels: [channel], ...payload, in_flight: IN_FLIGHT }).then((ack) => {
        this.acks.set(channel, ack);
        if (!ack.ok) {
          console.warn(`monbridge: subscribe ${channel}:`, ack.error);
          if (this.current.get(channel) === key) this.current.delete(channel); // retry on the next sync
        }
      });
    }
    for (const channel of [...this.current.keys()]) {
      if (desired.has(channel)) continue;
      this.current.delete(channel);
      this.acks.delete(channel);
      if (this.known.has(channel)) this.conn.request("unsubscribe", { channels: [channel] });
    }
  }
}
