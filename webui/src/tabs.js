/**
 * TabManager: one tab per VIEW (in the order the bridge sends), then Status; `#/ID` routing.
 *
 * `sync(views)` adds new views, rebuilds changed ones (spec, error, kind, file or binding differ)
 * and removes deleted ones, without touching the others. A deep link to a view that does
 * not exist (yet) keeps its hash: the tab opens if the file appears later.
 */
import { el } from "./util.js";

export const STATUS_ID = "status";

// A view is made anew when this changes: its file, or the devices its data come from
// (`binding`, viewdata.js: the picker moved and the view follows it).
function viewKey(def) {
  return JSON.stringify([def.kind, def.file, def.error, def.spec, def.binding ?? null]);
}

export class TabManager {
  /**
   * @param {HTMLElement} bar the tab strip
   * @param {HTMLElement} panels the container of tab panels
   * @param {(def: object, panel: HTMLElement) => object} createView builds and mounts a view
   */
  constructor(bar, panels, createView) {
    this.bar = bar;
    this.panels = panels;
    this.createView = createView;
    this.entries = new Map(); // view id -> {def, key, tab, panel, view}
    this.order = []; // view ids in display order (Status last, not included)
    this.active = null;
    this.listeners = [];
    this.statusTab = el("button", { type: "button", class: "mb-tab mb-tab-status", role: "tab", "data-id": STATUS_ID }, "Status");
    this.statusTab.addEventListener("click", () => this.open(STATUS_ID));
    this.statusPanel = el("div", { class: "mb-panel", role: "tabpanel", "data-id": STATUS_ID });
    this.statusView = null;
    this.bar.append(this.statusTab);
    this.panels.append(this.statusPanel);
    window.addEventListener("hashchange", () => this.route());
  }

  /** Register a callback (id, entry) for tab switches. */
  onSwitch(fn) {
    this.listeners.push(fn);
  }

  /** Views currently shown, keyed by id. */
  views() {
    const out = {};
    for (const [id, e] of this.entries) out[id] = e.view;
    return out;
  }

  sync(defs) {
    const seen = new Set();
    for (const def of defs) {
      seen.add(def.id);
      const key = viewKey(def);
      const entry = this.entries.get(def.id);
      if (!entry) {
        this._add(def, key);
      } else {
        entry.tab.textContent = def.title || def.id;
        entry.tab.title = def.file;
        if (entry.key !== key) {
          entry.view.destroy();
          entry.def = def;
          entry.key = key;
          entry.view = this.createView(def, entry.panel);
          if (this.active === def.id && entry.view.onShow) entry.view.onShow();
        }
        entry.def = def;
      }
    }
    for (const id of [...this.entries.keys()]) {
      if (seen.has(id)) continue;
      const entry = this.entries.get(id);
      entry.view.destroy();
      entry.tab.remove();
      entry.panel.remove();
      this.entries.delete(id);
    }
    this.order = defs.map((d) => d.id);
    for (const id of this.order) this.bar.insertBefore(this.entries.get(id).tab, this.statusTab);
    this.route();
  }

  _add(def, key) {
    const tab = el("button", { type: "button", class: "mb-tab", role: "tab", "data-id": def.id, title: def.file }, def.title || def.id);
    tab.addEventListener("click", () => this.open(def.id));
    const panel = el("div", { class: "mb-panel", role: "tabpanel", "data-id": def.id });
    this.bar.insertBefore(tab, this.statusTab);
    this.panels.insertBefore(panel, this.statusPanel);
    const entry = { def, key, tab, panel, view: null, shownError: null };
    this.entries.set(def.id, entry);
    entry.view = this.createView(def, panel);
  }

  /** Open a tab by id: sets the hash, which routes. */
  open(id) {
    const hash = "#/" + encodeURIComponent(id);
    if (location.hash !== hash) location.hash = hash;
    else this.route();
  }

  /** Show the tab the hash names; if it does not exist, the first tab (hash unchanged). */
  route() {
    const m = /^#\/(.+)$/.exec(location.hash);
    let id = m ? decodeURIComponent(m[1]) : null;
    if (id !== STATUS_ID && !this.entries.has(id)) id = this.order[0] ?? STATUS_ID;
    this._show(id);
  }

  _show(id) {
    if (id === this.active) return;
    const previous = this.active;
    this.active = id;
    const all = [...this.entries.values()].map((e) => [e.tab, e.panel]).concat([[this.statusTab, this.statusPanel]]);
    for (const [tab, panel] of all) {
      const on = tab.dataset.id === id;
      tab.classList.toggle("mb-active", on);
      tab.setAttribute("aria-selected", on ? "true" : "false");
      panel.classList.toggle("mb-active", on);
    }
    const viewOf = (x) => (x === STATUS_ID ? this.statusView : this.entries.get(x)?.view);
    const old = viewOf(previous);
    if (old && old.onHide) old.onHide();
    const now = viewOf(id);
    if (now && now.onShow) now.onShow();
    for (const fn of this.listeners) fn(id);
    document.title = `${id === STATUS_ID ? "Status" : this.entries.get(id)?.def.title || id} · monbridge`;
  }

  /** Mark tabs whose view has an error (checked once per frame; cheap). */
  markErrors() {
    for (const e of this.entries.values()) {
      const err = e.view ? e.view.error : null;
      if (err !== e.shownError) {
        e.shownError = err;
        e.tab.classList.toggle("mb-tab-error", !!err);
      }
    }
  }
}
