/**
 * Decoding of the bridge's binary payloads (docs/protocol.md §4.3–4.5) into JS values.
 *
 * Pure functions, no DOM: records batches → row objects, frames → typed arrays.
 * All binary data is little-endian, which is what every browser's typed arrays use.
 */
import { channelKey } from "./devices.js";

const TYPED = {
  f8: Float64Array, f4: Float32Array,
  i1: Int8Array, i2: Int16Array, i4: Int32Array, i8: BigInt64Array,
  u1: Uint8Array, u2: Uint16Array, u4: Uint32Array, u8: BigUint64Array,
  b1: Uint8Array,
};

/** Normalise a numpy dtype string ("<f4", "|u1", "f4") to the protocol's short form ("f4"). */
export function shortDtype(dtype) {
  return String(dtype || "").replace(/^[<>|=]/, "");
}

function halfToFloat(h) {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * 2 ** -14 * (frac / 1024);
  if (exp === 31) return frac ? NaN : sign * Infinity;
  return sign * 2 ** (exp - 15) * (1 + frac / 1024);
}

/**
 * A numeric typed array over a message's binary data (an ArrayBuffer from the msgpack parser).
 * 8-byte integers become Float64Array (Number), f2 becomes Float32Array (unless the browser
 * has Float16Array), b1 stays Uint8Array.
 */
export function typedArray(buffer, dtype) {
  const kind = shortDtype(dtype);
  let bytes = buffer instanceof ArrayBuffer ? new Uint8Array(buffer)
    : ArrayBuffer.isView(buffer) ? new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength)
    : new Uint8Array(0);
  if (kind === "f2") {
    if (typeof globalThis.Float16Array === "function" && bytes.byteOffset % 2 === 0) {
      return new globalThis.Float16Array(bytes.buffer, bytes.byteOffset, bytes.byteLength >> 1);
    }
    const u16 = new Uint16Array(bytes.slice().buffer, 0, bytes.byteLength >> 1);
    const out = new Float32Array(u16.length);
    for (let i = 0; i < u16.length; i++) out[i] = halfToFloat(u16[i]);
    return out;
  }
  const Typed = TYPED[kind];
  if (!Typed) throw new Error(`unsupported dtype '${dtype}' (supported: ${Object.keys(TYPED).join(", ")}, f2)`);
  const size = Typed.BYTES_PER_ELEMENT;
  if (bytes.byteOffset % size !== 0) bytes = bytes.slice(); // typed arrays need aligned offsets
  const arr = new Typed(bytes.buffer, bytes.byteOffset, Math.floor(bytes.byteLength / size));
  if (kind === "i8" || kind === "u8") {
    const out = new Float64Array(arr.length);
    for (let i = 0; i < arr.length; i++) out[i] = Number(arr[i]);
    return out;
  }
  return arr;
}

function product(shape) {
  let n = 1;
  for (const d of shape || []) n *= d;
  return n;
}

/** Nest a flat array into `shape` (row-major): [1..6] with [2,3] → [[1,2,3],[4,5,6]]. */
function nest(flat, shape, offset = 0) {
  if (shape.length === 1) return Array.from(flat.subarray(offset, offset + shape[0]));
  const inner = product(shape.slice(1));
  const out = new Array(shape[0]);
  for (let i = 0; i < shape[0]; i++) out[i] = nest(flat, shape.slice(1), offset + i * inner);
  return out;
}

/** The bytes of one column: `data` holds every column, each at its 8-aligned `offset`. */
function columnBytes(data, field) {
  const buffer = data instanceof ArrayBuffer ? data : data.buffer;
  const base = data instanceof ArrayBuffer ? 0 : data.byteOffset;
  return new Uint8Array(buffer, base + (field.offset | 0), field.nbytes | 0);
}

/**
 * A records message → {fields:[{name, shape, size, bool, values}], count}: the columns as
 * typed arrays, decoded once per batch.
 */
export function recordColumns(msg) {
  const fields = (msg.fields || []).map((f, i) => {
    const shape = f.shape || [];
    return { name: f.name, shape, size: product(shape), bool: shortDtype(f.dtype) === "b1",
             values: typedArray(columnBytes(msg.data, f), f.dtype) };
  });
  return { fields, count: msg.count | 0 };
}

/** Row i of decoded columns as a plain object; adds `time` = t × 1000 (epoch ms) when `t` exists. */
export function rowAt(cols, i) {
  const row = {};
  for (const f of cols.fields) {
    if (f.size === 1 && f.shape.length === 0) {
      const v = f.values[i];
      row[f.name] = f.bool ? v !== 0 : v;
    } else {
      const start = i * f.size;
      let v = f.shape.length <= 1 ? Array.from(f.values.subarray(start, start + f.size)) : nest(f.values, f.shape, start);
      if (f.bool) v = JSON.parse(JSON.stringify(v), (_, x) => (typeof x === "number" ? x !== 0 : x));
      row[f.name] = v;
    }
  }
  if (typeof row.t === "number" && !("time" in row)) row.time = row.t * 1000;
  return row;
}

/** All rows of a records message as objects (one pass, typed arrays made once). */
export function decodeRecords(msg) {
  const cols = recordColumns(msg);
  const rows = new Array(cols.count);
  for (let i = 0; i < cols.count; i++) rows[i] = rowAt(cols, i);
  return rows;
}

/** An events message → rows {seq, t, time, message, ...message's own keys when it is an object}. */
export function decodeEvents(msg) {
  return (msg.events || []).map((e) => {
    const row = {};
    if (e.message && typeof e.message === "object" && !Array.isArray(e.message)) Object.assign(row, e.message);
    row.seq = e.seq;
    row.t = e.t;
    row.time = typeof e.t === "number" ? e.t * 1000 : null;
    row.message = e.message;
    return row;
  });
}

/** A frame message → {values: typed array, shape}. */
export function decodeFrame(msg) {
  return { values: typedArray(msg.data, msg.dtype), shape: msg.shape || [] };
}

/**
 * A frame as rows for a Vega-Lite dataset ("long" format): 1-D → {index, value};
 * 2-D → {row, col, value}. Larger frames are refused (too many marks for a chart).
 */
export function frameRows(msg, limit = 100000) {
  const { values, shape } = decodeFrame(msg);
  if (values.length > limit) throw new Error(`frame '${msg.channel}' has ${values.length} values; charts take at most ${limit}`);
  const rows = new Array(values.length);
  if (shape.length <= 1) {
    for (let i = 0; i < values.length; i++) rows[i] = { index: i, value: values[i] };
  } else {
    const cols = product(shape.slice(1));
    for (let i = 0; i < values.length; i++) rows[i] = { row: Math.floor(i / cols), col: i % cols, value: values[i] };
  }
  return rows;
}

/**
 * One incoming data/event message of `device`, decoded lazily and at most once. `key` is its
 * device and channel ("arm1/joints", devices.js), which views match their datasets with.
 * `rows()` gives the first caller the decoded objects and later callers shallow copies,
 * because Vega writes derived fields into the tuples it is given.
 */
export class Batch {
  constructor(msg, device = null) {
    this.msg = msg;
    this.device = device;
    this.channel = msg.channel;
    this.key = channelKey(device, msg.channel);
    this.kind = msg.kind;
    this._rows = null;
    this._handedOut = 0;
  }

  /** Device time (s) of the newest item in this batch, or null. */
  get t() {
    return typeof this.msg.t === "number" ? this.msg.t : null;
  }

  rows() {
    if (this._rows === null) {
      this._rows = this.kind === "records" ? decodeRecords(this.msg)
        : this.kind === "events" ? decodeEvents(this.msg)
        : this.kind === "frame" ? frameRows(this.msg) : [];
    }
    return this._handedOut++ === 0 ? this._rows : this._rows.map((r) => ({ ...r }));
  }

  /** The newest record of a records batch (decodes only that row), or null. */
  lastRow() {
    if (this.kind !== "records" || !this.msg.count) return null;
    if (this._rows) return this._rows[this._rows.length - 1];
    return rowAt(recordColumns(this.msg), this.msg.count - 1);
  }
}
