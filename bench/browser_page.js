/**
 * bench.browser's init script, run in every dashboard page before its bundle: it wraps the
 * page's test hooks (window.monbridge, webui/src/hooks.js) and records what it sees, for
 * window.__bench.drain() and window.__bench.vegaClean(on) below.
 */
(() => {
  const wall = () => performance.timeOrigin + performance.now();   // ms, Unix epoch, sub-ms
  const B = window.__bench = {
    applied: [],    // [channel, t (s), at (ms: lastApplied.at), wall ms now]
    arrivals: [],   // [channel, t (s), wall ms, bytes]
    runs: [],       // [view id, visible 0/1, newest t applied (s) or null, run start wall ms, duration ms]
    renders: [],    // three.js render() durations, ms
    intervals: [],  // animation frame intervals, ms
    longtask: 0,    // ms of main-thread tasks over 50 ms (PerformanceObserver "longtask")
    gpuWaits: 0,    // scene frames skipped because the GPU process had not finished the last one
    just: null,     // t values applied during the current VegaLiteView.frame() call
    patched: new WeakSet(),
    hooks: null,
  };
  Object.defineProperty(window, "monbridge", {
    configurable: true, enumerable: true,
    get() { return B.hooks; },
    set(h) { B.hooks = h; instrument(h); },
  });
  function instrument(h) {
    const applied = h.applied;
    h.applied = (channel, t) => {
      applied(channel, t);
      const la = h.lastApplied[channel];
      if (la && la.t === t) B.applied.push([channel, t, la.at, wall()]);
      if (B.just && typeof t === "number") B.just.push(t);
    };
    const conn = h._internals && h._internals.conn;
    if (conn && conn.socket && typeof conn.socket.onAny === "function") {
      const arrived = (msg, at) => {
        if (msg && typeof msg.t === "number") B.arrivals.push([msg.channel, msg.t, at, msg.data && msg.data.byteLength || 0]);
      };
      conn.socket.onAny((event, msg) => {   // runs before the dashboard's own handlers
        if (event === "data") arrived(msg, wall());
        else if (event === "bundle" && Array.isArray(msg)) { const at = wall(); for (const m of msg) arrived(m, at); }
      });
    }
  }
  function patchViews() {
    const tabs = B.hooks && B.hooks._internals && B.hooks._internals.tabs;
    if (!tabs) return;
    for (const [id, v] of Object.entries(tabs.views())) {
      if (!v || B.patched.has(v)) continue;
      if (v.kind === "vega-lite" && v.result && v.result.view) {
        const view = v.result.view;
        const run = view.runAsync.bind(view);
        view.runAsync = (...args) => {
          const visible = tabs.active === id && !document.hidden ? 1 : 0;
          const ts = B.just || [], newest = ts.length ? Math.max(...ts) : null;
          const start = wall(), p0 = performance.now();
          return run(...args).then((r) => { B.runs.push([id, visible, newest, start, performance.now() - p0]); return r; });
        };
        const frame = v.frame.bind(v);
        v.frame = (visible) => {
          B.just = [];
          try { frame(visible); } finally { B.just = null; }
        };
        B.patched.add(v);
      } else if (v.kind === "scene" && v.renderer) {
        const r = v.renderer, render = r.render.bind(r);
        r.render = (scene, camera) => {
          const p0 = performance.now();
          render(scene, camera);
          B.renders.push(performance.now() - p0);
        };
        if (typeof v._gpuIdle === "function") {
          const idle = v._gpuIdle.bind(v);
          v._gpuIdle = () => { const ok = idle(); if (!ok) B.gpuWaits++; return ok; };
        }
        B.patched.add(v);
      }
    }
  }
  let last = null;
  function tick(now) {
    if (last !== null) B.intervals.push(now - last);
    last = now;
    patchViews();
    requestAnimationFrame(tick);
  }
  requestAnimationFrame(tick);
  try {
    new PerformanceObserver((list) => {
      for (const e of list.getEntries()) B.longtask += e.duration;
    }).observe({ type: "longtask", buffered: false });
  } catch (e) { /* no longtask support: longtask stays 0 */ }
  // on: every Vega view drops the scenegraph items of removed rows at its next update (they are
  // kept until a mark holds view.cleanThreshold of them); off: back to the page's threshold
  B.vegaClean = (on) => {
    const tabs = B.hooks && B.hooks._internals && B.hooks._internals.tabs;
    for (const v of tabs ? Object.values(tabs.views()) : []) {
      const view = v && v.result && v.result.view;
      if (!view || on === ("__benchSaved" in view)) continue;   // not a Vega view, or already as asked
      if (on) { view.__benchSaved = view.cleanThreshold; view.cleanThreshold = 0; }
      else { view.cleanThreshold = view.__benchSaved; delete view.__benchSaved; }
    }
  };
  // Everything recorded since the last call, plus what the hooks say now (all views).
  B.drain = () => {
    const h = B.hooks;
    const out = {
      applied: B.applied, arrivals: B.arrivals, runs: B.runs, renders: B.renders, intervals: B.intervals,
      longtask: B.longtask, gpuWaits: B.gpuWaits, wall: wall(),
      frames: h ? h.frames : 0, connection: h ? h.connection : null, active: h ? h.activeTab : null,
      hidden: document.hidden, views: {},
    };
    B.applied = []; B.arrivals = []; B.runs = []; B.renders = []; B.intervals = [];
    B.longtask = 0; B.gpuWaits = 0;
    if (h) for (const [id, v] of Object.entries(h.views)) {
      out.views[id] = { kind: v.kind, rows: v.rows(), updates: v.updates, error: v.error };
    }
    return out;
  };
})();
