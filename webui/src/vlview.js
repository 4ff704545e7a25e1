/**
 * VegaLiteView: one `*.vl.json` file as a live chart (docs/specs.md).
 *
 * Every named dataset (`"data": {"name": N}` anywhere in the spec; `data: [{name}]` in a
 * plain Vega spec) whose N is a channel streams that channel: "arm1/joints" of device arm1,
 * "joints" of the spec's `usermeta.device` or else of the device selected in the page's picker
 * (the view's binding, viewdata.js; the view is made anew when it changes). Its controls and
 * buttons command, and follow the state of, that same device. Socket handlers only decode
 * and buffer rows (StreamDataset); once per animation frame, and only while the tab is
 * visible, each changed dataset gets a single `view.change(N, changeset().insert().remove())`
 * followed by one `view.runAsync()` for the view. Updates never re-embed the view; but once it
 * has taken REBUILD_AFTER_ROWS rows it is embedded anew with the rows it holds, in a hidden
 * container that replaces the old one when it is drawn (no flicker): Vega's Relay transform,
 * on a dataset derived from a derived one, keeps a table entry for every row that ever passed
 * through it (docs/performance.md#soak), and a new view is the public way to drop them. A
 * spec that cannot be compiled or embedded, or whose `data.url` cannot be loaded, shows its
 * error instead of a chart.
 *
 * Everything a spec or the device supplies is shown as text: `usermeta` is monbridge's and is
 * not handed to vega-embed (its `usermeta.embedOptions` could switch on more of the actions
 * menu and its HTML `sourceHeader`, or replace the tooltip options below), and tooltips go
 * through tooltip.js. The actions menu offers only the exports: the chart as PNG or SVG.
 */
import embed from "vega-embed";
import { changeset, loader as vegaLoader } from "vega";
import { StreamDataset } from "./datasets.js";
import { bindView } from "./viewdata.js";
import { isName } from "./devices.js";
import { ControlBinding, ButtonBar } from "./controls.js";
import { reportingLoader, reportingLogger } from "./dataurl.js";
import { TOOLTIP_OPTIONS } from "./tooltip.js";
import { el } from "./util.js";

export const DEFAULTS = { seconds: 10, rate: 30, maxPoints: 5000 };
const RESIZE_EVERY_MS = 500;
const REBUILD_AFTER_ROWS = 10000; // rows inserted before the view is embedded anew (a Relay table: ~0.3 MB)
const CLEAN_THRESHOLD = 64; // removed items Vega may keep before tidying its maps (its default: 10,000)
const USERMETA_KEYS = ["title", "order", "window", "rate", "max_points", "controls", "buttons", "device"];
const CONSOLE_LOG_LEVEL = 1; // vega.Error: Vega's and Vega-Lite's warnings stay out of the console
const FIX_HINT = "Fix the file in the specs directory; the tab updates when it is saved.";
const DATA_HINT = "The chart needs this dataset. Check the URL in this browser: a relative URL is resolved "
  + "against the dashboard page, and the bridge serves no data files; another server must allow this "
  + "page's origin (CORS). The tab updates when the spec file is saved.";

/** A Vega-Lite spec (no $schema is taken as one), not a plain Vega spec. */
export function isVegaLite(spec) {
  return !spec.$schema || /vega-lite/.test(spec.$schema);
}

/** usermeta → options with defaults, plus human-readable problems (shown as notices). */
export function parseUsermeta(meta) {
  const problems = [];
  const out = { window: { seconds: DEFAULTS.seconds }, rate: DEFAULTS.rate, maxPoints: null, controls: {}, buttons: [], problems };
  if (meta === undefined) return out;
  if (!meta || typeof meta !== "object" || Array.isArray(meta)) {
    problems.push("usermeta must be an object");
    return out;
  }
  for (const key of Object.keys(meta)) {
    if (!USERMETA_KEYS.includes(key)) problems.push(`usermeta.${key} is not a monbridge option (options: ${USERMETA_KEYS.join(", ")})`);
  }
  const w = meta.window;
  if (w !== undefined) {
    if (w && typeof w.seconds === "number" && w.seconds > 0) out.window = { seconds: w.seconds };
    else if (w && Number.isInteger(w.rows) && w.rows > 0) out.window = { rows: w.rows };
    else problems.push(`usermeta.window must be {"seconds": S} or {"rows": R} with S, R > 0, got ${JSON.stringify(w)}; using 10 s`);
  }
  if (meta.rate !== undefined) {
    if (typeof meta.rate === "number" && meta.rate >= 0.1 && meta.rate <= 1000) out.rate = meta.rate;
    else problems.push(`usermeta.rate must be a number from 0.1 to 1000 (Hz), got ${JSON.stringify(meta.rate)}; using 30`);
  }
  if (meta.max_points !== undefined && meta.max_points !== null) {
    if (typeof meta.max_points === "number" && meta.max_points >= 2) out.maxPoints = Math.floor(meta.max_points);
    else problems.push(`usermeta.max_points must be a number ≥ 2, got ${JSON.stringify(meta.max_points)}`);
  }
  if (out.maxPoints === null && out.window.seconds) out.maxPoints = DEFAULTS.maxPoints;
  if (meta.device !== undefined && !isName(meta.device)) {
    problems.push(`usermeta.device must be a device name (letters, digits, _ and -), got ${JSON.stringify(meta.device)}; following the selected device`);
  }
  if (meta.controls !== undefined) {
    if (meta.controls && typeof meta.controls === "object" && !Array.isArray(meta.controls)) {
      for (const [param, cfg] of Object.entries(meta.controls)) {
        if (cfg && typeof cfg === "object" && typeof cfg.command === "string") out.controls[param] = cfg;
        else problems.push(`usermeta.controls.${param} needs {"command": "...", "arg": "value", "state": "..."}`);
      }
    } else problems.push('usermeta.controls must be an object: {"PARAM": {"command": ..., "arg": ..., "state": ...}}');
  }
  if (meta.buttons !== undefined) {
    if (Array.isArray(meta.buttons)) {
      meta.buttons.forEach((b, i) => {
        if (b && typeof b === "object" && typeof b.command === "string") out.buttons.push(b);
        else problems.push(`usermeta.buttons[${i}] needs {"command": "...", "label": "..."}`);
      });
    } else problems.push('usermeta.buttons must be a list: [{"command": "home", "label": "Home"}]');
  }
  return out;
}

export class VegaLiteView {
  /**
   * @param {object} def the VIEW entry from the bridge
   * @param {HTMLElement} panel where to draw
   * @param {object} ctx {conn, subs, store, applied(device, channel, t), channelNames(device),
   *   deviceState(device), rebuildRows}
   */
  constructor(def, panel, ctx) {
    this.def = def;
    this.id = def.id;
    this.kind = "vega-lite";
    this.panel = panel;
    this.ctx = ctx;
    this.error = null;
    this.updates = 0;
    this.binding = def.binding || bindView(def, ctx.store.selected);
    this.device = this.binding.device; // whose commands and state the controls use
    this.datasets = new Map(); // dataset name -> StreamDataset
    this.sources = new Map(); // dataset name -> its source {device, channel, key}
    this.byKey = new Map(); // "device/channel" -> [StreamDataset] (two names may read one channel)
    this.controls = [];
    this.result = null; // vega-embed result {view, finalize}
    this.running = false;
    this.rebuilding = false;
    this.rowsSinceEmbed = 0; // rows inserted into this Vega view since it was embedded
    this.embeds = 0;
    this.lastResize = -Infinity;
    this.destroyed = false;
    this.notices = el("div", { class: "mb-notices" });
    this.errorBox = el("div", { class: "mb-view-error", hidden: true });
    this.toolbar = el("div", { class: "mb-toolbar" });
    this.chart = el("div", { class: "mb-vl-embed" }); // vega-embed's container: no padding (Vega measures it)
    this.card = el("div", { class: "mb-vl-chart" }, this.chart);
    panel.replaceChildren(this.errorBox, this.notices, this.toolbar, this.card);
  }

  /** Rows currently in the view's datasets (sum). */
  rows() {
    let n = 0;
    for (const ds of this.datasets.values()) n += ds.size;
    return n;
  }

  showError(message, hint = FIX_HINT) {
    this.error = message;
    this.errorBox.replaceChildren(
      el("strong", {}, `${this.def.file}: this view cannot be shown`),
      el("pre", {}, message),
      el("p", { class: "mb-hint" }, hint),
    );
    this.errorBox.hidden = false;
    this.card.hidden = true;
    this.ctx.subs.removeOwner(this.id);  // a view in error draws nothing: stop its data
  }

  async mount() {
    const def = this.def;
    if (def.error) return this.showError(def.error, def.errorHint);
    const spec = def.spec;
    if (!spec || typeof spec !== "object") return this.showError("the bridge sent no spec for this view");
    const opts = parseUsermeta(spec.usermeta);
    this.opts = opts;
    const sources = this.binding.sources;
    for (const source of sources) {
      const ds = new StreamDataset(source.name, opts.window);
      this.datasets.set(source.name, ds);
      this.sources.set(source.name, source);
      if (!this.byKey.has(source.key)) this.byKey.set(source.key, []);
      this.byKey.get(source.key).push(ds);
    }
    const perDataset = opts.maxPoints ? Math.max(2, Math.floor(opts.maxPoints / Math.max(1, sources.length))) : null;
    this.ctx.subs.setWants(this.id, sources.map(({ device, channel, key }) => ({
      device, channel, key, rate: opts.rate, seconds: opts.window.seconds || null, maxPoints: perDataset,
    })));
    this.problems = opts.problems;
    this.updateNotices();
    await this._embed();
  }

  /** Embed the spec (again), bind its controls and buttons; false if it failed. */
  async _embed() {
    const spec = this.def.spec;
    const opts = this.opts;
    // A dataset whose url cannot be fetched or parsed leaves Vega with an empty dataset and
    // a warning; say so in the tab instead (first failure wins; it may come after mounting).
    const dataFailed = (message) => {
      if (!this.destroyed && !this.error) this.showError(message, DATA_HINT);
    };
    const { usermeta: _monbridgeOnly, ...vegaSpec } = spec;
    let result;
    try {
      const embedOpts = {
        // the "…" menu: save as PNG or SVG; no source, compiled spec or editor link
        actions: { export: { png: true, svg: true }, source: false, compiled: false, editor: false },
        downloadFileName: this.def.id,
        renderer: "canvas",
        tooltip: TOOLTIP_OPTIONS,
        loader: reportingLoader(vegaLoader(), dataFailed, document.baseURI),
        logger: reportingLogger(dataFailed, CONSOLE_LOG_LEVEL, document.baseURI),
      };
      if (!spec.$schema) embedOpts.mode = "vega-lite";
      // ARIA descriptions only exist in SVG output, yet Vega-Lite encodes one string per data
      // point on every update (a time and a number format each): with canvas, pure cost.
      // A spec's own config.aria still wins (Vega-Lite merges the spec's config over this).
      if (isVegaLite(spec)) embedOpts.config = { aria: false };
      result = await embed(this.chart, vegaSpec, embedOpts);
    } catch (err) {
      const hint = isVegaLite(spec) ? markProblems(spec) : [];
      if (!this.destroyed) this.showError([`Vega-Lite could not compile or embed this spec: ${(err && err.message) || err}`, ...hint].join("\n"));
      return false;
    }
    if (this.destroyed) {
      result.finalize();
      return false;
    }
    this.result = result;
    this.embeds++;
    this.rowsSinceEmbed = 0;
    const view = result.view;
    // Vega keeps an empty entry for every removed item until 10,000 pile up; a streaming
    // chart removes thousands a second, so tidy up far sooner (a flat heap, small pauses).
    view.cleanThreshold = CLEAN_THRESHOLD;
    const send = (name, args) => this.ctx.conn.command(name, args, this.device);
    const problems = [];
    for (const [param, cfg] of Object.entries(opts.controls)) {
      try {
        view.signal(param);
      } catch {
        problems.push(`usermeta.controls.${param}: the spec has no param (signal) named '${param}'`);
        continue;
      }
      const status = el("span", { class: "mb-ctl-status" });
      this._placeStatus(param, spec, status);
      this.controls.push(new ControlBinding(view, param, cfg, send, status));
    }
    if (opts.buttons.length) this.toolbar.append(new ButtonBar(opts.buttons, send).node);
    this.problems = [...opts.problems, ...problems];
    this.updateNotices();
    const state = this.ctx.deviceState(this.device);
    for (const c of this.controls) c.onState(state);
    return true;
  }

  /**
   * Embed the view anew and put back the rows it held (see the module comment). The new view
   * is embedded into a hidden container beside the old chart, which stays on screen until the
   * new one has drawn its rows; then the old view is finalized and its container removed.
   */
  async _rebuild() {
    this.rebuilding = true;
    // the old chart's controls and buttons keep working until the new chart replaces it
    const oldControls = this.controls;
    const oldButtons = [...this.toolbar.children];
    this.controls = [];
    const old = this.result;
    const oldChart = this.chart;
    this.result = null;
    const fresh = el("div", { class: "mb-vl-embed mb-vl-embed-next" });
    fresh.style.width = `${oldChart.clientWidth}px`; // what Vega measures for autosize "fit"
    this.card.append(fresh);
    this.chart = fresh;
    let swapped = false;
    try {
      if (!(await this._embed())) return;
      for (const ds of this.datasets.values()) ds.again(); // the next take() inserts every held row
      this._apply(this.result.view);
      this.rowsSinceEmbed = 0; // count from here: the held rows are in the new view's tables already
      await this.result.view.runAsync();
      fresh.classList.remove("mb-vl-embed-next");
      fresh.style.width = "";
      swapped = true;
    } catch (err) {
      if (!this.destroyed) this.showError(`Vega failed while making the chart anew: ${(err && err.message) || err}`);
    } finally {
      for (const c of oldControls) c.destroy();
      for (const b of oldButtons) b.remove();
      old.finalize();
      oldChart.remove();
      if (!swapped) fresh.classList.remove("mb-vl-embed-next");
      this.rebuilding = false;
    }
  }

  // Put a control's error display inside its Vega binding (found by its label), else in the toolbar.
  _placeStatus(param, spec, status) {
    const label = findBindName(spec, param) || param;
    for (const bind of this.chart.querySelectorAll(".vega-bind")) {
      const name = bind.querySelector(".vega-bind-name");
      if (name && name.textContent.trim() === label.trim()) {
        bind.append(status);
        return;
      }
    }
    this.toolbar.append(el("span", { class: "mb-ctl-fallback" }, `${param}: `, status));
  }

  /** Warnings that do not stop the view: usermeta problems, datasets that match no channel. */
  updateNotices() {
    const items = [...(this.problems || [])];
    for (const { name, device, channel } of this.sources.values()) {
      const channels = this.ctx.channelNames(device);
      if (channels.length && !channels.includes(channel)) {
        items.push(`dataset '${name}' matches no channel of ${device === null ? "the device" : `device '${device}'`} (channels: ${channels.join(", ")})`);
      }
    }
    if (this.frameProblem) items.push(this.frameProblem);
    this.notices.replaceChildren(...items.map((t) => el("div", { class: "mb-notice" }, t)));
  }

  /** A decoded-on-demand batch (records, events or frame) for one of our channels. */
  onBatch(batch) {
    const targets = this.byKey.get(batch.key);
    if (!targets || this.error) return;
    let rows;
    try {
      rows = batch.rows();
    } catch (err) {
      if (this.frameProblem !== err.message) {
        this.frameProblem = err.message;
        this.updateNotices();
      }
      return;
    }
    targets.forEach((ds, i) => {
      const own = i === 0 ? rows : batch.rows(); // copies: Vega writes into the rows it is given
      if (batch.kind === "frame") ds.replace(own, batch.t);
      else ds.push(own);
    });
  }

  /** New state values of `device` (full or changed keys). */
  onState(values, device) {
    if (device !== this.device) return;
    for (const c of this.controls) c.onState(values);
  }

  onChannels() {
    this.updateNotices();
  }

  /** `device` restarted, or its replay's position jumped: clear its datasets (undefined: all). */
  reset(device) {
    for (const [name, ds] of this.datasets) {
      if (device === undefined || this.sources.get(name).device === device) ds.reset();
    }
  }

  /** {dataset: [row[field] of each row the view holds]} (for tests: which device's values it shows). */
  column(field) {
    return Object.fromEntries([...this.datasets].map(([name, ds]) => [name, ds.retained.map((row) => row[field])]));
  }

  /** [oldest, newest] t of the rows in the view's datasets (null when empty or just cleared; for tests). */
  times() {
    let span = null;
    for (const ds of this.datasets.values()) {
      const s = ds.span();
      if (s) span = span ? [Math.min(span[0], s[0]), Math.max(span[1], s[1])] : s;
    }
    return span;
  }

  /**
   * Called once per animation frame: apply what arrived if Vega is idle and the tab is
   * visible. A hidden tab applies nothing: what arrives waits, trimmed to the window, and
   * goes in as one changeset in the first frame the tab is shown. (Applying it once a second
   * cost a Vega run of 40-80 ms per hidden chart, blocking the page's main thread and
   * delaying what the visible tab draws.)
   */
  frame(visible) {
    if (!visible || !this.result || this.running || this.rebuilding || this.error || this.destroyed) return;
    if (this.rowsSinceEmbed >= (this.ctx.rebuildRows || REBUILD_AFTER_ROWS)) {
      this._rebuild();
      return;
    }
    const view = this.result.view;
    if (!this._apply(view)) return;
    // Vega does not redo its autosize layout when streamed data changes the axes (labels of a
    // growing y domain get clipped on the left), so ask for it, at most twice a second.
    const now = performance.now();
    if (now - this.lastResize > RESIZE_EVERY_MS) {
      this.lastResize = now;
      view.resize();
    }
    this.running = true;
    view.runAsync().then(
      () => { this.running = false; },
      (err) => {
        this.running = false;
        this.showError(`Vega failed while updating: ${(err && err.message) || err}`);
      },
    );
  }

  /** Put every dataset's new and removed rows into `view` (one changeset each); true if any changed. */
  _apply(view) {
    let changed = false;
    for (const ds of this.datasets.values()) {
      if (!ds.dirty) continue;
      const { insert, remove, newestT } = ds.take();
      if (!insert.length && !remove.length) continue;
      try {
        view.change(ds.name, changeset().insert(insert).remove(remove));
      } catch (err) {
        this.showError(`cannot update dataset '${ds.name}': ${err.message}`);
        return false;
      }
      this.updates++;
      this.rowsSinceEmbed += insert.length;
      changed = true;
      if (insert.length) {
        const { device, channel } = this.sources.get(ds.name);
        this.ctx.applied(device, channel, newestT);
      }
    }
    return changed;
  }

  destroy() {
    this.destroyed = true;
    for (const c of this.controls) c.destroy();
    this.controls = [];
    this.ctx.subs.removeOwner(this.id);
    if (this.result) this.result.finalize();
    this.result = null;
    this.panel.replaceChildren();
  }
}

const MARKS = ["arc", "area", "bar", "image", "line", "point", "rect", "rule", "text", "tick", "trail", "circle",
  "square", "geoshape", "boxplot", "errorband", "errorbar"];

// Readable reasons for the most common compile failure, which Vega-Lite reports cryptically.
function markProblems(spec) {
  const out = [];
  const walk = (node, path) => {
    if (!node || typeof node !== "object") return;
    if (Array.isArray(node)) return node.forEach((n, i) => walk(n, `${path}[${i}]`));
    if ("mark" in node) {
      const m = node.mark;
      const type = typeof m === "string" ? m : m && typeof m === "object" ? m.type : undefined;
      if (!MARKS.includes(type)) out.push(`${path ? path + "." : ""}mark: ${JSON.stringify(type)} is not a Vega-Lite mark (marks: ${MARKS.join(", ")})`);
    }
    for (const [k, v] of Object.entries(node)) if (!["usermeta", "data", "datasets", "params", "config"].includes(k) && v && typeof v === "object") walk(v, path ? `${path}.${k}` : k);
  };
  walk(spec, "");
  return out;
}

// The label Vega shows for a bound param: bind.name if given, else the param name.
function findBindName(spec, param) {
  let found = null;
  const walk = (node) => {
    if (found || !node || typeof node !== "object") return;
    if (Array.isArray(node)) return node.forEach(walk);
    if (Array.isArray(node.params)) {
      for (const p of node.params) if (p && p.name === param && p.bind && typeof p.bind.name === "string") found = p.bind.name;
    }
    if (Array.isArray(node.signals)) {
      for (const s of node.signals) if (s && s.name === param && s.bind && typeof s.bind.name === "string") found = s.bind.name;
    }
    for (const v of Object.values(node)) if (v && typeof v === "object") walk(v);
  };
  walk(spec);
  return found;
}
