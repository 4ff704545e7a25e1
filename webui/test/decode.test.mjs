import { test } from "node:test";
import assert from "node:assert/strict";
import { decodeRecords, decodeFrame, frameRows, typedArray, Batch } from "../src/decode.js";

const buf = (Typed, values) => new Typed(values).buffer;

/** What the bridge sends: every column in one buffer, each at an 8-aligned offset. */
function packColumns(fields, columns) {
  let offset = 0;
  const placed = columns.map((c) => { offset += -offset & 7; const at = offset; offset += c.byteLength; return at; });
  const data = new Uint8Array(offset);
  columns.forEach((c, i) => { data.set(new Uint8Array(c), placed[i]); fields[i].offset = placed[i]; fields[i].nbytes = c.byteLength; });
  return data.buffer;
}

test("records: typed columns, 8-byte ints as Number, shaped fields as arrays, time = t × 1000", () => {
  const fields = [{ name: "t", dtype: "f8", shape: [] }, { name: "n", dtype: "i8", shape: [] },
                  { name: "ok", dtype: "b1", shape: [] }, { name: "pos", dtype: "f4", shape: [3] }];
  const data = packColumns(fields, [buf(Float64Array, [1, 2]), buf(BigInt64Array, [5n, -7n]), buf(Uint8Array, [1, 0]), buf(Float32Array, [1, 2, 3, 4, 5, 6])]);
  const msg = { channel: "temps", kind: "records", count: 2, t: 2, fields, data };
  const rows = decodeRecords(msg);
  assert.deepEqual(rows[0], { t: 1, n: 5, ok: true, pos: [1, 2, 3], time: 1000 });
  assert.deepEqual(rows[1], { t: 2, n: -7, ok: false, pos: [4, 5, 6], time: 2000 });
});

test("batch hands the first consumer the rows and later ones copies", () => {
  const fields = [{ name: "t", dtype: "f8", shape: [] }];
  const msg = { channel: "c", kind: "records", count: 1, fields, data: packColumns(fields, [buf(Float64Array, [3])]) };
  const b = new Batch(msg);
  const a = b.rows();
  const c = b.rows();
  assert.notEqual(a[0], c[0]);
  assert.deepEqual(a[0], c[0]);
  assert.deepEqual(b.lastRow(), { t: 3, time: 3000 });
});

test("frames: typed array, long-format rows", () => {
  const msg = { channel: "img", kind: "frame", dtype: "u1", shape: [2, 2], data: buf(Uint8Array, [1, 2, 3, 4]) };
  assert.deepEqual(Array.from(decodeFrame(msg).values), [1, 2, 3, 4]);
  assert.deepEqual(frameRows(msg)[3], { row: 1, col: 1, value: 4 });
  const spectrum = { channel: "s", kind: "frame", dtype: "<f4", shape: [2], data: buf(Float32Array, [0.5, 1]) };
  assert.deepEqual(frameRows(spectrum), [{ index: 0, value: 0.5 }, { index: 1, value: 1 }]);
});

test("f2 decodes to floats; unknown dtypes say which ones work", () => {
  const half = typedArray(buf(Uint16Array, [0x3c00, 0xc000]), "f2");
  assert.deepEqual(Array.from(half), [1, -2]);
  assert.throws(() => typedArray(new ArrayBuffer(4), "c8"), /unsupported dtype 'c8'/);
});

test("records: a message without rows (it only carries a missed count) decodes to none", () => {
  const fields = [{ name: "t", dtype: "f8", shape: [] }, { name: "pos", dtype: "f4", shape: [3] }];
  const data = packColumns(fields, [new ArrayBuffer(0), new ArrayBuffer(0)]);
  const msg = { channel: "temps", kind: "records", seq: [860, 859], missed: 40, count: 0, t: null, fields, data };
  assert.deepEqual(decodeRecords(msg), []);
});

test("a batch is keyed by its device and channel", () => {
  assert.equal(new Batch({ channel: "joints", kind: "events", events: [] }, "arm1").key, "arm1/joints");
  assert.equal(new Batch({ channel: "joints", kind: "events", events: [] }).key, "joints");
});
