import { test } from "node:test";
import assert from "node:assert/strict";
import { IN_FLIGHT, SubscriptionManager, groupWants, mergeWants, subscribePayload } from "../src/subscriptions.js";

test("one view's wishes pass through", () => {
  assert.deepEqual(mergeWants([{ rate: 30, seconds: 10, maxPoints: 2000 }]), { rate: 30, window: 10, max_points: 2000 });
});

test("two views: highest rate, longest window, the hungriest points per second", () => {
  assert.deepEqual(mergeWants([{ rate: 30, seconds: 10, maxPoints: 2000 }, { rate: 60, seconds: 5, maxPoints: 2000 }]),
    { rate: 60, window: 10, max_points: 4000 });
});

test("a view without a budget turns decimation off for the channel", () => {
  assert.deepEqual(mergeWants([{ rate: 30, seconds: 10, maxPoints: 2000 }, { rate: 10, seconds: null, maxPoints: null }]), { rate: 30 });
});

test("values are clamped to what the bridge accepts", () => {
  assert.deepEqual(mergeWants([{ rate: 5000, seconds: 1e6, maxPoints: 1e9 }]), { rate: 1000, window: 86400, max_points: 1000000 });
});

// -- several devices (protocol 4) -------------------------------------------------------------

const want = (device, channel, extra = {}) => ({ device, channel, key: device ? `${device}/${channel}` : channel, rate: 30, seconds: null, maxPoints: null, ...extra });

test("a subscribe names its device, unless it is not known", () => {
  assert.deepEqual(subscribePayload("arm1", "joints", { rate: 30 }), { device: "arm1", channels: ["joints"], rate: 30, in_flight: IN_FLIGHT });
  assert.deepEqual(subscribePayload(null, "joints", { rate: 30 }), { channels: ["joints"], rate: 30, in_flight: IN_FLIGHT });
});

test("wants are grouped by device and channel: one channel name of two devices never mixes", () => {
  const groups = groupWants([[want("arm1", "joints")], [want("cam2", "joints", { rate: 60 }), want("arm1", "joints")]],
    new Set(["arm1/joints", "cam2/joints"]));
  assert.deepEqual([...groups.keys()], ["arm1/joints", "cam2/joints"]);
  assert.equal(groups.get("arm1/joints").wants.length, 2);
  assert.deepEqual(groups.get("cam2/joints").wants.map((w) => w.rate), [60]);
  assert.equal(groups.get("cam2/joints").device, "cam2");
});

test("only channels a device has are wanted", () => {
  const groups = groupWants([[want("arm1", "joints"), want("cam2", "joints")]], new Set(["arm1/joints"]));
  assert.deepEqual([...groups.keys()], ["arm1/joints"]);
});

// A Connection stand-in that records requests and answers each with {ok: true}.
function fakeConn() {
  const sent = [];
  return { sent, socket: { connected: true }, request: (event, payload) => { sent.push([event, payload]); return Promise.resolve({ ok: true }); } };
}

test("the manager subscribes per device, moves with the views and renews one device", async () => {
  const conn = fakeConn();
  const subs = new SubscriptionManager(conn);
  subs.known = new Set(["arm1/joints", "cam2/joints"]);
  subs.owners.set("a", [want("arm1", "joints")]);
  subs.owners.set("b", [want("cam2", "joints")]);
  subs.sync();
  assert.deepEqual(conn.sent.map(([e, p]) => [e, p.device, p.channels]), [
    ["subscribe", "arm1", ["joints"]], ["subscribe", "cam2", ["joints"]]]);
  conn.sent.length = 0;
  subs.renew("cam2");
  assert.equal(subs.stale("cam2/joints"), true);
  assert.equal(subs.stale("arm1/joints"), false);
  assert.deepEqual(conn.sent.map(([e, p]) => [e, p.device]), [["subscribe", "cam2"]]);
  await Promise.resolve();
  assert.equal(subs.stale("cam2/joints"), false);
  conn.sent.length = 0;
  subs.owners.delete("b"); // the view follows the picker to arm1 now
  subs.owners.set("b", [want("arm1", "joints", { rate: 60 })]);
  subs.sync();
  assert.deepEqual(conn.sent.map(([e, p]) => [e, p.device, p.channels, p.rate]), [
    ["subscribe", "arm1", ["joints"], 60], ["unsubscribe", "cam2", ["joints"], undefined]]);
});
