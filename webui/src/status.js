/**
 * StatusPanel: the Status tab — device, connection latency, recording, channels, clients,
 * commands, state — of the device selected in the page's picker.
 *
 * Device status comes from the `device` event (once a second); latency from our own pings
 * (Connection.latency()); channels, clients, command figures and the recording (RecordCard,
 * recordpanel.js) from GET api/stats?device=NAME, polled once a second while the tab is
 * visible. Choosing another device (`onSelect`) forgets the last answer and asks again.
 */
import { channelKey } from "./devices.js";
import { RecordCard } from "./recordpanel.js";
import { el, fmt, fmtSeconds, shortJSON } from "./util.js";
import { viewChannels } from "./viewdata.js";

const POLL_MS = 1000;

function table(headers, rows, empty) {
  if (!rows.length) return el("p", { class: "mb-muted" }, empty);
  return el("table", { class: "mb-table" },
    el("thead", {}, el("tr", {}, headers.map((h) => el("th", {}, h)))),
    el("tbody", {}, rows.map((r) => el("tr", { class: r.cls || null }, r.cells.map((c) => el("td", {}, c))))));
}

/** GET api/stats for `device` (null: the only device of a bridge that does not know its name yet). */
export function statsURL(device) {
  return device === null || device === undefined ? "api/stats" : `api/stats?device=${encodeURIComponent(device)}`;
}

// A client's subscription as the Status tab lists it: "arm1/joints" when the bridge serves several devices.
function subscriptionName(sub, multi) {
  return multi && typeof sub.device === "string" ? channelKey(sub.device, sub.channel) : sub.channel;
}

export class StatusPanel {
  /** @param {HTMLElement} panel @param {object} ctx {conn, store, subs} */
  constructor(panel, ctx) {
    this.panel = panel;
    this.ctx = ctx;
    this.id = "status";
    this.kind = "status";
    this.visible = false;
    this.timer = null;
    this.latencyTimer = null;
    this.stats = null;
    this.statsError = null;
    this.device = el("section", { class: "mb-card" });
    this.latency = el("section", { class: "mb-card" });
    this.channels = el("section", { class: "mb-card mb-wide" });
    this.clients = el("section", { class: "mb-card mb-wide" });
    this.commands = el("section", { class: "mb-card" });
    this.state = el("section", { class: "mb-card" });
    this.record = new RecordCard(ctx);
    panel.replaceChildren(el("div", { class: "mb-status" }, this.device, this.latency, this.record.section, this.commands, this.state, this.channels, this.clients));
    this.render();
  }

  onShow() {
    this.visible = true;
    this.poll();
    if (this.timer === null) this.timer = setInterval(() => this.poll(), POLL_MS);
    if (this.latencyTimer === null) this.latencyTimer = setInterval(() => this.renderLatency(), 250);
  }

  onHide() {
    this.visible = false;
    if (this.timer !== null) clearInterval(this.timer);
    if (this.latencyTimer !== null) clearInterval(this.latencyTimer);
    this.timer = null;
    this.latencyTimer = null;
  }

  async poll() {
    const { store } = this.ctx;
    // nothing to ask before the hello (single or multi mode?), nor for no device of a multi-mode bridge
    if (store.protocol === null || (store.multi && store.selected === null)) return;
    const token = this.ctx.conn.token;
    const device = store.selected;
    const askedAt = performance.now();
    const url = statsURL(device);
    let stats = null;
    let error = null;
    try {
      const res = await fetch(url, { cache: "no-store", headers: token ? { Authorization: `Bearer ${token}` } : {} });
      if (!res.ok) throw new Error(`GET ${url}: HTTP ${res.status}`);
      stats = await res.json();
    } catch (err) {
      error = err.message;
    }
    if (device !== this.ctx.store.selected) return; // answered for the device shown before
    this.stats = stats ?? this.stats;
    this.statsError = error;
    if (stats) this.record.update(stats.recording, askedAt);
    this.render();
  }

  /** Another device was chosen in the picker: show nothing of the previous one. */
  onSelect() {
    this.stats = null;
    this.statsError = null;
    this.record.select();
    this.render();
    if (this.visible) this.poll();
  }

  /** Redraw everything (on poll); the device card also redraws on device events. */
  render() {
    this.renderDevice();
    this.renderLatency();
    this.renderStats();
  }

  renderDevice() {
    const { conn, store } = this.ctx;
    const dev = store.device || {};
    const online = dev.status === "online";
    this.device.replaceChildren(
      el("h3", {}, "Device"),
      el("p", {}, el("span", { class: `mb-dot ${online ? "mb-ok" : "mb-bad"}` }), " ",
        el("strong", {}, dev.name || "(no device attached)"), " ", online ? "online" : "offline"),
      el("dl", { class: "mb-dl" },
        el("dt", {}, "heartbeat age"), el("dd", { "data-k": "heartbeat" }, fmtSeconds(dev.heartbeat_age)),
        el("dt", {}, "pid"), el("dd", {}, dev.pid ?? "—"),
        el("dt", {}, "connection"), el("dd", {}, conn.state),
        el("dt", {}, "role"), el("dd", {}, store.role || "—"),
        el("dt", {}, "protocol"), el("dd", {}, store.protocol ?? "—")),
    );
    this.record.render(); // the role (hello) decides whether it has a Record button
  }

  renderLatency() {
    const lat = this.ctx.conn.latency();
    this.latency.replaceChildren(
      el("h3", {}, "Round trip (ping, last 10 s)"),
      el("p", { class: "mb-big" },
        el("span", { "data-k": "rtt-p50" }, lat.p50 === null ? "—" : `${lat.p50.toFixed(2)} ms`), el("small", {}, " median  "),
        el("span", { "data-k": "rtt-p99" }, lat.p99 === null ? "—" : `${lat.p99.toFixed(2)} ms`), el("small", {}, " p99")),
      el("p", { class: "mb-muted" }, `${lat.n} pings`),
    );
  }

  renderStats() {
    const { store } = this.ctx;
    const s = this.stats;
    const err = this.statsError ? el("p", { class: "mb-error" }, this.statsError) : null;
    const chRows = ((s && s.channels) || []).map((c) => {
      const ack = this.ctx.subs.acks.get(channelKey(store.selected, c.name));
      const mine = ack && ack.ok ? `${fmt(ack.rate)} Hz${ack.points_per_update ? `, ≤${ack.points_per_update}/update` : ""}` : "—";
      return { cells: [c.name, c.kind || "—", fmt(c.publish_rate, 1), fmt(c.delivered_rate, 1), fmt(c.delivered), fmt(c.skipped), fmt(c.missed), fmtSeconds(c.lag), mine] };
    });
    const hidden = store.hiddenViews || [];
    const hiddenNote = hidden.length ? el("p", { class: "mb-muted", "data-k": "hidden-views" },
      `Not shown, for another device (no channel of theirs is here): ${hidden.map((v) => `${v.file} (${viewChannels(v).join(", ")})`).join("; ")}`) : null;
    this.channels.replaceChildren(...[el("h3", {}, "Channels"), err,
      table(["channel", "kind", "publish /s", "delivered /s", "delivered", "skipped", "missed", "lag", "this page"], chRows,
        "No channel has had a subscriber yet."), hiddenNote].filter(Boolean));
    const now = (s && s.server_time) || Date.now() / 1000;
    const clRows = ((s && s.clients) || []).map((c) => ({
      cls: c.id === store.sid ? "mb-me" : null,
      cells: [c.id === store.sid ? `${c.id} (this page)` : c.id, c.address, c.role,
        fmtSeconds(now - c.connected_at),
        (c.subscriptions || []).map((x) => `${subscriptionName(x, store.multi)}@${fmt(x.rate)} (${fmt(x.sent)} sent, ${fmt(x.skipped)} skipped)`).join(", ") || "—",
        fmt(c.queued), el("span", { class: "mb-ua", title: c.user_agent }, c.user_agent || "")],
    }));
    this.clients.replaceChildren(el("h3", {}, "Clients"),
      table(["id", "address", "role", "connected", "subscriptions", "queued", "user agent"], clRows, "No clients."));
    const cm = (s && s.commands) || {};
    const relay = (s && s.relay) || {};
    this.commands.replaceChildren(el("h3", {}, "Commands & relay"),
      el("dl", { class: "mb-dl" },
        el("dt", {}, "accepted / rejected"), el("dd", {}, `${fmt(cm.accepted)} / ${fmt(cm.rejected)}`),
        el("dt", {}, "timeouts / pending"), el("dd", {}, `${fmt(cm.timeouts)} / ${fmt(cm.pending)}`),
        el("dt", {}, "device round trip p50 / p99"), el("dd", {}, `${fmtSeconds(cm.rtt_p50)} / ${fmtSeconds(cm.rtt_p99)}`),
        el("dt", {}, "relay rate"), el("dd", {}, relay.max_rate ? `${fmt(relay.max_rate)} Hz` : "—"),
        el("dt", {}, "last tick"), el("dd", {}, fmtSeconds(relay.tick_seconds))));
    const entries = Object.entries(store.state || {});
    this.state.replaceChildren(el("h3", {}, "State"),
      table(["key", "value"], entries.map(([k, v]) => ({ cells: [k, shortJSON(v, 120)] })), "No state values."));
  }

  onDevice() {
    if (this.visible) this.renderDevice();
  }

  destroy() {
    this.onHide();
  }
}
