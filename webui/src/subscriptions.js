/**
 * SubscriptionManager: one bridge subscription per device and channel, merged from what every
 * view wants.
 *
 * The bridge keeps one subscription per client, device and channel (a new subscribe replaces
 * the old one), so when two views show the same channel of the same device their wishes are
 * merged: the highest rate, the longest window, and a point budget per second that satisfies
 * the hungriest view. Everything is keyed by device and channel ("arm1/joints", devices.js),
 * so the same channel name of two devices never mixes. Only channels a device has are
 * subscribed; the rest wait for a `channels` or `devices` event. After a reconnect (a new
 * client for the bridge) `resubscribeAll()` sends everything again; after a replay's jump
 * `renew(device)` does for that device, and the batches still on their way are `stale()`.
 *
 * A want: {device, channel, key, rate (Hz), seconds (window or null), maxPoints (or null)}.
 *
 * Flow control: every subscription asks for `in_flight: IN_FLIGHT`, and the page confirms
 * each data message with `consumed` once its views have taken it (see main.js). The bridge
 * then never has more than that many messages per channel on the way to this page, so a
 * page that draws slowly gets fresh frames at its own pace instead of a growing backlog.
 */
import { channelKey, withDevice } from "./devices.js";

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

/** The subscribe payload for one channel of one device (`device` left out while it is not known). */
export function subscribePayload(device, channel, merged) {
  return withDevice({ channels: [channel], ...merged, in_flight: IN_FLIGHT }, device);
}

/**
 * Every owner's wants grouped by key, keeping only channels in `known` (keys):
 * Map key → {device, channel, wants}.
 */
export function groupWants(owners, known) {
  const byKey = new Map();
  for (const wants of owners) {
    for (const w of wants) {
      const key = w.key ?? channelKey(w.device, w.channel);
      if (!known.has(key)) continue;
      if (!byKey.has(key)) byKey.set(key, { device: w.device ?? null, channel: w.channel, wants: [] });
      byKey.get(key).wants.push(w);
    }
  }
  return byKey;
}

export class SubscriptionManager {
  /** @param {import("./connection.js").Connection} conn */
  constructor(conn) {
    this.conn = conn;
    this.owners = new Map(); // owner id (view id) -> [want]
    this.known = new Set(); // keys of the channels the devices have
    this.current = new Map(); // key -> {device, channel, json}: the payload the bridge acknowledged (or is acking)
    this.acks = new Map(); // key -> last ack (for the Status tab)
    this.renewing = new Map(); // key -> number of the renew() whose subscribe is unanswered
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

  /** The keys ("device/channel") of every channel the bridge's devices have. */
  setKnown(keys) {
    this.known = new Set(keys);
    this._schedule();
  }

  /** After (re)connecting: the bridge has no subscriptions for us. */
  resubscribeAll() {
    this.current.clear();
    this.renewing.clear();
    this._schedule();
  }

  /**
   * Subscribe again to every channel of `device` (a replay's position jumped; undefined: of
   * every device). The bridge starts the new subscription at the newest data, so what was
   * published before this call never comes after the answer; until it comes, `stale(key)` is
   * true: batches then are from the old subscription (the bridge sends them before the
   * answer), to be dropped.
   */
  renew(device) {
    const renewal = ++this._renewals;
    for (const [key, sub] of this.current) {
      if (device !== undefined && sub.device !== device) continue;
      this.renewing.set(key, renewal);
      this.conn.request("subscribe", subscribePayload(sub.device, sub.channel, JSON.parse(sub.json))).then((ack) => {
        if (this.renewing.get(key) === renewal) this.renewing.delete(key);
        if (ack.ok) this.acks.set(key, ack);
      });
    }
  }

  /** True while batches of `key` are from before the last renew() (see there). */
  stale(key) {
    return this.renewing.has(key);
  }

  _schedule() {
    if (this._scheduled) return;
    this._scheduled = true;
    queueMicrotask(() => {
      this._scheduled = false;
      this.sync();
    });
  }

  /** The merged payload per key that views want and the devices have: Map key → {device, channel, payload}. */
  desired() {
    const out = new Map();
    for (const [key, g] of groupWants(this.owners.values(), this.known)) {
      out.set(key, { device: g.device, channel: g.channel, payload: mergeWants(g.wants) });
    }
    return out;
  }

  sync() {
    if (!this.conn.socket.connected) return;
    const desired = this.desired();
    for (const [key, { device, channel, payload }] of desired) {
      const json = JSON.stringify(payload);
      if (this.current.get(key)?.json === json) continue;
      const sub = { device, channel, json };
      this.current.set(key, sub);
      this.conn.request("subscribe", subscribePayload(device, channel, payload)).then((ack) => {
        this.acks.set(key, ack);
        if (!ack.ok) {
          console.warn(`monbridge: subscribe ${key}:`, ack.error);
          if (this.current.get(key) === sub) this.current.delete(key); // retry on the next sync
        }
      });
    }
    for (const [key, sub] of [...this.current]) {
      if (desired.has(key)) continue;
      this.current.delete(key);
      this.acks.delete(key);
      // a channel (or device) that is gone has no subscription left at the bridge
      if (this.known.has(key)) this.conn.request("unsubscribe", withDevice({ channels: [sub.channel] }, sub.device));
    }
  }
}
