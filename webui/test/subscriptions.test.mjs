import { test } from "node:test";
import assert from "node:assert/strict";
import { mergeWants } from "../src/subscriptions.js";

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
