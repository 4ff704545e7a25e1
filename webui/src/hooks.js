/**
 * window.monbridge: read-only test hooks used by the browser tests and the latency benchmark.
 *
 *   window.monbridge = {
 *     connection: "connecting" | "live" | "offline" | "disconnected" | "refused",
 *     views: {ID: {kind: "vega-lite" | "scene",
 *                  rows(): rows now in the view's datasets (sum; scenes: points drawn + poses + image rows),
 *                  updates: changesets applied (Vega-Lite) / frames that drew new data (scenes),
 *                  embeds: times the Vega view was embedded (it is made anew after many rows),
 *                  error: string | null,
 *                  times(): Vega-Lite: [oldest, newest] t of the rows in its datasets (a row without a
 *                           numeric t counts its arrival time); null when empty or cleared but not yet
 *                           redrawn (after a reset, until the next frame applies it); scenes: null,
 *                  pixels(): scenes: the canvas drawn afresh, as an ImageData (null otherwise),
 *                  column(field): Vega-Lite: {DATASET: [row[field] of every row in the view, oldest first]}
 *                                 (DATASET as the spec names it: "joints", "arm1/joints"); null otherwise}},
 *     lastApplied: {CHANNEL: {t: device time (s) of the newest record/frame applied,
 *                             at: Date.now() in the animation frame that applied it}},
 *                  also under "DEVICE/CHANNEL" once the device's name is known,
 *     frames: animation frames run so far,
 *     state: {...} the selected device's state as this page knows it,
 *     device: the device selected in the picker (the only one in single mode; null while unknown),
 *     devices: names of the devices the bridge serves, in its order,
 *     multi: hello.multi (the bridge serves a list of devices, or all),
 *     latency(): {p50, p99, n} ping round trip in ms over the last ~10 s,
 *     activeTab: id of the visible tab ("status" for Status),
 *     hiddenViews: ids of the views left out because they are for another device (viewdata.js),
 *     resets: times every view's data was cleared: the device restarted, or a replay's position
 *             jumped (its replay_epoch changed; main.js, clearViews),
 *     replay: the timeline bar (timeline.js), null unless the device is a replay:
 *             {file, position, duration, playing, speed, loop, epoch: from the device's state,
 *              held: true while the state may not move the slider (dragged, or its seek unanswered),
 *              error: the last command error shown in the bar, or null},
 *   }
 * Entries in `views` are live: getters read the current view, so a rebuilt view is seen
 * through the same object until its file is removed.
 */

export function installHooks({ conn, store, tabs, timeline }) {
  const views = {};
  const hooks = {
    get connection() {
      return conn.state;
    },
    views,
    lastApplied: {},
    frames: 0,
    get state() {
      return store.state;
    },
    get device() {
      return store.selected;
    },
    get devices() {
      return [...store.devices.keys()].filter((name) => name !== null);
    },
    get multi() {
      return store.multi;
    },
    latency: () => conn.latency(),
    get activeTab() {
      return tabs.active;
    },
    get hiddenViews() {
      return store.hiddenViews.map((v) => v.id);
    },
    resets: 0,
    get replay() {
      return timeline.snapshot();
    },
  };

  /** Re-list the views after a sync (ids added or removed). */
  hooks.syncViews = () => {
    const current = tabs.views();
    for (const id of Object.keys(views)) if (!(id in current)) delete views[id];
    for (const id of Object.keys(current)) {
      if (id in views) continue;
      const view = () => tabs.views()[id];
      views[id] = {
        get kind() { return view()?.kind ?? null; },
        rows: () => view()?.rows() ?? 0,
        get updates() { return view()?.updates ?? 0; },
        get embeds() { return view()?.embeds ?? 0; },
        get error() { return view()?.error ?? null; },
        times: () => view()?.times?.() ?? null,
        pixels: () => (view()?.kind === "scene" ? view().pixels() : null),
        column: (field) => view()?.column?.(field) ?? null,
      };
    }
  };

  /**
   * Record that data of `channel` of `device` with device time `t` reached the screen in this
   * frame. (`device` comes last: bench/browser_page.js wraps this as (channel, t).)
   */
  hooks.applied = (channel, t, device) => {
    note(channel, t);
    if (device !== null && device !== undefined) note(`${device}/${channel}`, t);
  };
  const note = (key, t) => {
    const prev = hooks.lastApplied[key];
    if (prev && typeof t === "number" && typeof prev.t === "number" && t < prev.t && prev.at > Date.now() - 1000) return;
    hooks.lastApplied[key] = { t, at: Date.now() };
  };

  // For debugging from the console only (not part of the test contract).
  hooks._internals = { conn, store, tabs, timeline };
  window.monbridge = hooks;
  return hooks;
}
