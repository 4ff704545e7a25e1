/**
 * bench.soak's init script, run in the dashboard page before its bundle: window.__soak.ready()
 * (the page is live and shows its tab buttons), .next() (click the tab after the visible one,
 * Status included; returns its id) and .status() (connection, tabs and every view's rows).
 */
(() => {
  const tabButtons = () => [...document.querySelectorAll("#mb-tabs .mb-tab")];

  window.__soak = {
    ready() {
      const h = window.monbridge;
      return !!h && h.connection === "live" && Object.keys(h.views).length > 0 && tabButtons().length > 1;
    },

    next() {
      const buttons = tabButtons();
      if (!buttons.length) return null;
      const active = window.monbridge ? window.monbridge.activeTab : null;
      const at = buttons.findIndex((b) => b.dataset.id === active);
      const button = buttons[(at + 1) % buttons.length];
      button.click();
      return button.dataset.id;
    },

    status() {
      const h = window.monbridge;
      const tabs = tabButtons().length;
      if (!h) return { connection: null, active: null, frames: 0, tabs, views: {} };
      const views = {};
      for (const [id, v] of Object.entries(h.views)) {
        views[id] = { kind: v.kind, rows: v.rows(), updates: v.updates, embeds: v.embeds, error: v.error };
      }
      return { connection: h.connection, active: h.activeTab, frames: h.frames, tabs, views };
    },
  };
})();
