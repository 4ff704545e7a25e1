// Unit tests of the timeline bar's pure parts (webui/src/timeline.js) and of what a replay's
// jump sets off in main.js (subscriptions.js renew(), datasets.js reset()): `npm test`.
import { test } from "node:test";
import assert from "node:assert/strict";
import { fmtClock, isReplay, replayJumped, speedChoices, SPEEDS, LatestOnly, SeekControl } from "../src/timeline.js";
import { StreamDataset } from "../src/datasets.js";
import { SubscriptionManager } from "../src/subscriptions.js";

// A send() whose answers the test gives: calls[i].answer(ack) resolves the i-th command.
function manualSend() {
  const calls = [];
  const send = (value) => new Promise((resolve) => calls.push({ value, answer: resolve }));
  return { calls, send };
}

const settle = () => new Promise((resolve) => setImmediate(resolve));

test("fmtClock shows m:ss.s, rounding to tenths without a 60th second", () => {
  assert.equal(fmtClock(0), "0:00.0");
  assert.equal(fmtClock(3.04), "0:03.0");
  assert.equal(fmtClock(59.96), "1:00.0");
  assert.equal(fmtClock(61.25), "1:01.3");
  assert.equal(fmtClock(3725.5), "62:05.5");
  assert.equal(fmtClock(-1), "0:00.0");
  for (const bad of [null, undefined, NaN, Infinity, "3"]) assert.equal(fmtClock(bad), "—");
});

test("a replay is a state with a numeric replay_duration", () => {
  assert.equal(isReplay({ replay_duration: 4.2, replay_position: 0 }), true);
  assert.equal(isReplay({ replay_duration: 0 }), true);
  for (const s of [null, {}, { speed: 1 }, { replay_duration: "4" }, { replay_duration: null }]) assert.equal(isReplay(s), false);
});

test("replayJumped: a changed replay_epoch is a jump", () => {
  const state = (epoch) => ({ replay_duration: 4, replay_epoch: epoch, replay_playing: true });
  assert.equal(replayJumped(undefined, state(3)), false); // the first state seen: nothing to clear
  assert.equal(replayJumped(3, state(3)), false);
  assert.equal(replayJumped(3, state(4)), true);
  assert.equal(replayJumped(4, state(0)), true); // a new replay process counts from 0 again
  assert.equal(replayJumped(3, { speed: 1 }), false); // no longer a replay
});

test("speedChoices offers the fixed speeds, plus the current one when it is another", () => {
  assert.deepEqual(SPEEDS, [0.1, 0.25, 0.5, 1, 2, 5, 10, 20]);
  assert.equal(speedChoices(2), SPEEDS);
  assert.equal(speedChoices(undefined), SPEEDS);
  assert.deepEqual(speedChoices(3), [0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 20]);
});

test("LatestOnly sends one value at a time, then only the newest of those set meanwhile", async () => {
  const { calls, send } = manualSend();
  const answers = [];
  const sender = new LatestOnly(send, (ack, value) => answers.push([ack.ok, value]));
  sender.set(1);
  await settle();
  sender.set(2);
  sender.set(3);
  await settle();
  assert.deepEqual(calls.map((c) => c.value), [1]);
  assert.equal(sender.busy, true);
  calls[0].answer({ ok: true });
  await settle();
  assert.deepEqual(calls.map((c) => c.value), [1, 3]);
  calls[1].answer({ ok: false, error: { code: "bad_request", message: "no" } });
  await settle();
  assert.equal(sender.busy, false);
  assert.deepEqual(answers, [[true, 1], [false, 3]]);
});

test("LatestOnly does not send again a value equal to the one just answered", async () => {
  const { calls, send } = manualSend();
  const sender = new LatestOnly(send, () => {});
  sender.set(0.5);
  await settle();
  sender.set(0.5);
  calls[0].answer({ ok: true });
  await settle();
  assert.equal(calls.length, 1);
  assert.equal(sender.busy, false);
});

test("SeekControl holds the handle while dragged, while the seek is out, and SETTLE ms after", async () => {
  const { calls, send } = manualSend();
  let now = 1000;
  const acks = [];
  const seek = new SeekControl(send, (ack) => acks.push(ack), () => now, 300);
  assert.equal(seek.held(), false);
  assert.equal(seek.shown(1.5), 1.5);

  seek.press();
  assert.equal(seek.held(), true); // pressed, not moved: the state leaves it alone
  assert.equal(seek.shown(1.5), 1.5);
  seek.drag(0.8);
  seek.drag(0.6); // input events send nothing
  assert.equal(calls.length, 0);
  assert.equal(seek.shown(1.7), 0.6);
  seek.lift();
  assert.equal(seek.held(), true); // moved, not yet let go
  seek.commit(0.6);
  await settle();
  assert.deepEqual(calls.map((c) => c.value), [0.6]);
  now += 5000;
  assert.equal(seek.held(), true); // no answer yet
  assert.equal(seek.shown(1.9), 0.6);
  calls[0].answer({ ok: true, result: 0.6 });
  await settle();
  assert.equal(acks.length, 1);
  now += 299;
  assert.equal(seek.held(), true);
  now += 2;
  assert.equal(seek.held(), false);
  assert.equal(seek.shown(0.7), 0.7);
});

// What a jump sets off in main.js: subscribing again (batches meanwhile are stale), and a reset.

test("renew() subscribes again to every channel; batches are stale until each answer", async () => {
  const requests = [];
  const conn = {
    socket: { connected: true },
    request: (event, payload) => new Promise((resolve) => requests.push({ event, payload, answer: resolve })),
  };
  const subs = new SubscriptionManager(conn);
  subs.setKnown(["joints", "log"]);
  subs.setWants("v", [{ channel: "joints", rate: 30, seconds: 10, maxPoints: 2000 }, { channel: "log", rate: 10 }]);
  await settle();
  assert.deepEqual(requests.map((r) => r.payload.channels[0]), ["joints", "log"]);
  for (const r of requests.splice(0)) r.answer({ ok: true });
  await settle();
  assert.equal(subs.stale("joints"), false);

  subs.renew();
  assert.deepEqual(requests.map((r) => [r.event, r.payload]), [
    ["subscribe", { channels: ["joints"], rate: 30, window: 10, max_points: 2000, in_flight: 1 }],
    ["subscribe", { channels: ["log"], rate: 10, in_flight: 1 }],
  ]);
  assert.equal(subs.stale("joints"), true);
  assert.equal(subs.stale("log"), true);
  subs.renew(); // a second jump before the first answers: stale until the second's answer
  const [first, , second] = requests.splice(0);
  first.answer({ ok: true });
  await settle();
  assert.equal(subs.stale("joints"), true);
  second.answer({ ok: false, error: { code: "disconnected", message: "gone" } });
  await settle();
  assert.equal(subs.stale("joints"), false); // answered, even with an error: nothing to wait for
  assert.equal(subs.stale("log"), true);
  subs.resubscribeAll(); // a new connection: its subscriptions are new anyway
  assert.equal(subs.stale("log"), false);
});

test("a reset empties the view's datasets; span() is the t range of what it holds", () => {
  const d = new StreamDataset("w", { seconds: 10 });
  assert.equal(d.span(), null);
  d.push([{ t: 100 }, { t: 101 }, { t: 100.5 }]);
  d.take();
  assert.deepEqual(d.span(), [100, 101]);
  d.reset();
  assert.equal(d.span(), null); // the rows still in the view go at the next take()
  d.push([{ t: 50 }, { t: 50.2 }]);
  const c = d.take();
  assert.deepEqual(c.remove.map((r) => r.t), [100, 101, 100.5]);
  assert.deepEqual(d.span(), [50, 50.2]);
});
