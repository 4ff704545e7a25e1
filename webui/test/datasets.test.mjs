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

test("removed rows are reused for new ones, so the view sees a bounded set of objects", () => {
  const d = new StreamDataset("reuse", { rows: 3 });
  const id = Symbol("vega_id");
  const seen = new Set();
  for (let t = 0; t < 50; t++) {
    d.push([{ t, v: t * 2, ...(t % 2 ? { odd: true } : {}) }]);
    const c = d.take();
    for (const row of c.insert) {
      seen.add(row);
      row[id] ??= t; // what Vega does on insert: tag the object once
      row.derived = "set by a Vega formula";
    }
  }
  assert.ok(seen.size <= 4, `${seen.size} distinct row objects for 50 rows`);
  // each retained row holds exactly the fields it was pushed with (no stale fields), and
  // keeps the Symbol tag of its object
  const newest = d.retained.map((row) => Object.fromEntries(Object.entries(row)));
  assert.deepEqual(newest, [47, 48, 49].map((t) => ({ t, v: t * 2, ...(t % 2 ? { odd: true } : {}),
    derived: "set by a Vega formula" })));
  assert.ok(d.retained.every((row) => typeof row[id] === "number"));
});

test("a replaced frame reuses the objects of the frame before", () => {
  const d = new StreamDataset("frame");
  d.replace([{ x: 1 }, { x: 2 }], 1);
  const first = d.take().insert.slice();
  d.replace([{ x: 3 }, { x: 4 }, { x: 5 }], 2);
  const c = d.take();
  assert.deepEqual(c.remove.map((r) => r.x), [1, 2]); // still the removed values when returned
  d.replace([{ x: 6 }], 3);
  const next = d.take();
  assert.ok(first.includes(next.insert[0]) || c.insert.includes(next.insert[0]));
  assert.deepEqual(next.insert, [{ x: 6 }]);
});

test("again() re-presents every held row to a new view, with nothing to remove", () => {
  const d = new StreamDataset("a", { rows: 4 });
  d.push(rows([1, 2, 3]));
  d.take();
  d.push(rows([4, 5]));
  d.again();
  const c = d.take();
  assert.deepEqual(c.remove, []);
  assert.deepEqual(c.insert.map((r) => r.t), [2, 3, 4, 5]);
  assert.deepEqual(d.retained.map((r) => r.t), [2, 3, 4, 5]);
  const f = new StreamDataset("frame");
  f.replace([{ x: 1 }], 1);
  f.take();
  f.again();
  assert.deepEqual(f.take().insert.map((r) => r.x), [1]);
  f.replace([{ x: 2 }], 2);
  f.again();
  const c2 = f.take();
  assert.deepEqual([c2.insert.map((r) => r.x), c2.remove], [[2], []]);
});
