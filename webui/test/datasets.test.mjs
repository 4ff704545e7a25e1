// Unit tests of the dashboard's pure modules (no browser): `npm test` (node --test).
import { test } from "node:test";
import assert from "node:assert/strict";
import { StreamDataset } from "../src/datasets.js";

const rows = (ts) => ts.map((t) => ({ t }));

test("a seconds window removes rows older than newest t - S", () => {
  const d = new StreamDataset("w", { seconds: 1 });
  d.push(rows([0, 0.5, 0.9]));
  let c = d.take();
  assert.equal(c.insert.length, 3);
  assert.equal(c.remove.length, 0);
  d.push(rows([1.2, 1.6]));
  c = d.take();
  assert.deepEqual(c.remove.map((r) => r.t), [0, 0.5]);
  assert.equal(d.size, 3);
});

test("rows pending while hidden are trimmed to the window as they arrive", () => {
  const d = new StreamDataset("w", { seconds: 1 });
  d.push(rows([0, 0.5]));
  d.take();
  for (let i = 0; i < 100; i++) d.push([{ t: 2 + i * 0.1 }]);
  assert.ok(d.pending.length <= 11, `pending ${d.pending.length}`);
  const c = d.take();
  assert.equal(c.remove.length, 2);
  assert.ok(d.size <= 11);
});

test("a rows window keeps the newest R rows, never inserting rows it would remove", () => {
  const d = new StreamDataset("r", { rows: 5 });
  d.push(rows([1, 2, 3]));
  d.take();
  d.push(rows([4, 5, 6, 7]));
  let c = d.take();
  assert.deepEqual(c.remove.map((r) => r.t), [1, 2]);
  assert.deepEqual(d.retained.map((r) => r.t), [3, 4, 5, 6, 7]);
  d.push(rows([8, 9, 10, 11, 12, 13, 14]));
  c = d.take();
  assert.equal(c.remove.length, 5);
  assert.deepEqual(c.insert.map((r) => r.t), [10, 11, 12, 13, 14]);
});

test("reset removes everything at the next take", () => {
  const d = new StreamDataset("r", { rows: 5 });
  d.push(rows([1, 2, 3]));
  d.take();
  d.reset();
  d.push(rows([1]));
  const c = d.take();
  assert.equal(c.remove.length, 3);
  assert.equal(d.size, 1);
});

test("frames replace the whole content and ignore the rows window", () => {
  const d = new StreamDataset("f", { rows: 2 });
  d.replace([{ v: 1 }, { v: 2 }, { v: 3 }], 1);
  assert.equal(d.take().insert.length, 3);
  d.replace([{ v: 4 }], 2);
  const c = d.take();
  assert.equal(c.remove.length, 3);
  assert.equal(d.size, 1);
});
