/**
 * StreamDataset: the rows one Vega dataset holds for one channel, bounded by a window.
 *
 * Pure logic, no DOM and no Vega: the view asks `take()` once per animation frame for what
 * to insert and remove, and turns that into a single changeset. Rows arrive in device-time
 * order. Between frames (or while the tab is hidden) rows wait in `pending`, trimmed to the
 * window as they come, so a hidden tab costs memory bounded by its window, not by time.
 *
 * Window: {seconds: S} keeps rows with t ≥ newest t − S (t = the row's `t` field, else
 * its arrival time); {rows: R} keeps the newest R rows. `replace` mode (frames) swaps the
 * whole content each time.
 *
 * Row objects are reused: a row removed by one take() is refilled with a new row's fields
 * by the next take(), so Vega sees the same tuple (and tuple id) again. Vega keeps some
 * lookup tables per tuple id that only ever grow (its `Relay` transform, on every dataset
 * derived with `calculate` and the like); with new objects each time, a streaming chart
 * grows them without end. Hence the contract: call take() again only once the view has
 * applied (run) what the previous take() returned.
 */

export const HARD_ROW_LIMIT = 200000; // safety net per dataset, whatever the window says

export class StreamDataset {
  /**
   * @param {string} name dataset (and channel) name
   * @param {{seconds?: number, rows?: number}} window
   */
  constructor(name, window = { seconds: 10 }) {
    this.name = name;
    this.seconds = typeof window.seconds === "number" ? window.seconds : null;
    this.maxRows = Math.min(HARD_ROW_LIMIT, typeof window.rows === "number" ? window.rows : HARD_ROW_LIMIT);
    this.retained = []; // rows currently in the view, oldest first
    this.retainedT = [];
    this.pending = []; // rows received, not yet in the view
    this.pendingT = [];
    this.replaceNext = false; // frames: the next take() removes everything retained
    this.newestT = null; // device time of the newest row pushed
    this.spare = []; // rows the view has removed, to be refilled by the next take()
  }

  /** True if take() has something to do. */
  get dirty() {
    return this.pending.length > 0 || this.replaceNext;
  }

  /** Number of rows in the view (after the last take()). */
  get size() {
    return this.retained.length;
  }

  /** Append rows (records, events); `now` (s) stands in for rows without a numeric `t`. */
  push(rows, now = Date.now() / 1000) {
    for (const row of rows) {
      const t = typeof row.t === "number" ? row.t : now;
      this.pending.push(row);
      this.pendingT.push(t);
      if (this.newestT === null || t > this.newestT) this.newestT = t;
    }
    this._trimPending();
  }

  /** Replace the whole content with `rows` at the next take() (frames). */
  replace(rows, t = null) {
    this.pending = rows.length > HARD_ROW_LIMIT ? rows.slice(0, HARD_ROW_LIMIT) : rows; // frames ignore the window
    this.pendingT = this.pending.map(() => t ?? 0);
    this.replaceNext = true;
    if (t !== null) this.newestT = t;
  }

  /** Forget everything: the next take() removes all retained rows (device restarted, replay jumped). */
  reset() {
    this.pending = [];
    this.pendingT = [];
    this.replaceNext = true;
    this.newestT = null;
  }

  /** [oldest, newest] t of the rows in the view; null when it holds none, or all go at the next take(). */
  span() {
    if (this.replaceNext) return null;
    let lo = Infinity;
    let hi = -Infinity;
    for (const t of this.retainedT) {
      if (t < lo) lo = t;
      if (t > hi) hi = t;
    }
    return lo <= hi ? [lo, hi] : null;
  }

  /** The view was made anew and holds nothing: the next take() inserts every row held. */
  again() {
    if (this.replaceNext) {
      for (const row of this.retained) this.spare.push(row);
    } else {
      this.pending = this.retained.concat(this.pending);
      this.pendingT = this.retainedT.concat(this.pendingT);
    }
    this.retained = [];
    this.retainedT = [];
    this._trimPending();
  }

  /**
   * What to change in the view now: {insert, remove, newestT}. Afterwards `retained`
   * is what the view holds.
   */
  take() {
    let remove;
    if (this.replaceNext) {
      remove = this.retained;
      this.retained = [];
      this.retainedT = [];
      this.replaceNext = false;
    } else {
      remove = this._expire();
    }
    const insert = this.pending;
    const spare = this.spare;
    for (let i = 0; i < insert.length; i++) {
      if (spare.length) insert[i] = refill(spare.pop(), insert[i]);
      this.retained.push(insert[i]);
      this.retainedT.push(this.pendingT[i]);
    }
    this.pending = [];
    this.pendingT = [];
    for (let i = 0; i < remove.length; i++) spare.push(remove[i]);
    return { insert, remove, newestT: this.newestT };
  }

  _cutoff() {
    return this.seconds !== null && this.newestT !== null ? this.newestT - this.seconds : null;
  }

  // Drop pending rows that would be out of the window anyway.
  _trimPending() {
    const cutoff = this._cutoff();
    let drop = 0;
    if (cutoff !== null) while (drop < this.pendingT.length && this.pendingT[drop] < cutoff) drop++;
    drop = Math.max(drop, this.pending.length - this.maxRows);
    if (drop > 0) {
      this.pending.splice(0, drop);
      this.pendingT.splice(0, drop);
    }
  }

  // Remove retained rows that fall out of the window once pending rows are added.
  _expire() {
    const cutoff = this._cutoff();
    let n = 0;
    if (cutoff !== null) while (n < this.retainedT.length && this.retainedT[n] < cutoff) n++;
    const excess = this.retained.length + this.pending.length - this.maxRows;
    if (excess > n) n = Math.min(excess, this.retained.length);
    const extra = this.retained.length + this.pending.length - n - this.maxRows;
    if (extra > 0) { // more pending than the window holds: keep only the newest
      this.pending.splice(0, extra);
      this.pendingT.splice(0, extra);
    }
    if (n === 0) return [];
    this.retainedT.splice(0, n);
    return this.retained.splice(0, n);
  }
}

// `target` (a removed row) made equal to `row`, keeping its identity (and Vega's tuple id,
// a Symbol key that for-in and Object.assign leave alone).
function refill(target, row) {
  for (const key in target) if (!Object.hasOwn(row, key)) delete target[key];
  return Object.assign(target, row);
}
