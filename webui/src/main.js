/**
 * monbridge dashboard entry point: wires the connection, tabs, views and the frame loop.
 *
 * Data flow: socket `data`/`event` → Batch (decoded lazily, once) → every view that shows
 * the channel buffers it → the single requestAnimationFrame loop below lets each view apply
 * what it buffered (only the visible tab draws). State, device and channel events go to
 * every view. A replayed device gets the timeline bar (timeline.js); when its position jumps,
 * the views are cleared as on a device restart (clearViews). Test hooks: see hooks.js
 * (window.monbridge).
 */
import { Connection } from "./connection.js";
import { SubscriptionManager } from "./subscriptions.js";
import { TabManager } from "./tabs.js";
import { VegaLiteView } from "./vlview.js";
import { SceneView } from "./sceneview.js";
import { StatusPanel } from "./status.js";
import { Batch } from "./decode.js";
import { installHooks } from "./hooks.js";
import { TimelineBar } from "./timeline.js";
import { viewsForDevice } from "./viewdata.js";

const PROTOCOL = 3;

const TOKEN_KEY = "monbridge.token";

/**
 * The token this tab was opened with. `?token=` is moved out of the address bar (and so out of
 * the history and of URLs copied from it) into sessionStorage, which is this tab's and this
 * bridge's (origin) alone: a reload keeps working, a copied URL opens without the token.
 */
function takeToken() {
  const params = new URLSearchParams(location.search);
  const given = params.get("token");
  if (given === null) {
    try {
      return sessionStorage.getItem(TOKEN_KEY);
    } catch {
      return null; // storage disabled: a viewer, where the bridge allows one
    }
  }
  try {
    sessionStorage.setItem(TOKEN_KEY, given);
  } catch {
    return given; // storage disabled: keep the token in the URL, or a reload would lose it
  }
  params.delete("token");
  const query = params.toString();
  history.replaceState(history.state, "", location.pathname + (query ? `?${query}` : "") + location.hash);
  return given;
}

const token = takeToken();
const conn = new Connection(token);
const subs = new SubscriptionManager(conn);
// views: every VIEW the bridge lists; hiddenViews: those for another device (viewdata.js)
const store = { state: {}, channels: [], commands: [], device: {}, role: null, sid: null, protocol: null, views: [], hiddenViews: [] };

const banner = document.getElementById("mb-banner");
const deviceLabel = document.getElementById("mb-device");
const tabsBar = document.getElementById("mb-tabs");
const panels = document.getElementById("mb-panels");

const channelNames = () => store.channels.map((c) => c.name);
const channelInfo = (name) => store.channels.find((c) => c.name === name) || null;

let hooks = null;
// ?rebuild_rows=N: embed a chart anew after N rows instead of vlview.js's default (for tests)
const rebuildRows = Number(new URLSearchParams(location.search).get("rebuild_rows")) || null;
const ctx = {
  conn, subs, store, channelNames, channelInfo, rebuildRows,
  applied: (channel, t) => hooks && hooks.applied(channel, t),
};

function createView(def, panel) {
  let view;
  if (def.kind === "scene") view = new SceneView(def, panel, ctx);
  else if (def.kind === "vega-lite") view = new VegaLiteView(def, panel, ctx);
  else {
    view = new VegaLiteView({ ...def, error: def.error || `unknown view kind '${def.kind}'` }, panel, ctx);
  }
  Promise.resolve()
    .then(() => view.mount())
    .catch((err) => {
      console.error(`monbridge: view ${def.id}`, err);
      view.showError(`this view failed to start: ${(err && err.message) || err}`);
    });
  return view;
}

const tabs = new TabManager(tabsBar, panels, createView);
const status = new StatusPanel(tabs.statusPanel, ctx);
tabs.statusView = status;
const timeline = new TimelineBar(document.getElementById("mb-timeline"), (name, args) => conn.command(name, args));
hooks = installHooks({ conn, store, tabs, timeline });
tabs.route();

function eachView(fn) {
  for (const view of Object.values(tabs.views())) {
    try {
      fn(view);
    } catch (err) {
      console.error(`monbridge: view ${view.id}`, err);
    }
  }
}

/** Clear every view's data: the device restarted, or a replay's position jumped. */
function clearViews() {
  hooks.resets++;
  eachView((v) => v.reset());
}

/** Show the views that belong to the device (all of them while its channels are unknown). */
function syncViews(views) {
  if (views !== undefined) store.views = Array.isArray(views) ? views : [];
  const { shown, hidden } = viewsForDevice(store.views, channelNames());
  store.hiddenViews = hidden;
  tabs.sync(shown);
  hooks.syncViews();
}

// -- banner ----------------------------------------------------------------------------

const BANNER = {
  connecting: ["mb-warn", "connecting…"],
  live: ["mb-ok", "live"],
  offline: ["mb-warn", "device offline"],
  disconnected: ["mb-bad", "disconnected — reconnecting…"],
  refused: ["mb-bad", "refused"],
};

function renderBanner() {
  const [cls, text] = BANNER[conn.state] || ["mb-warn", conn.state];
  banner.className = `mb-banner ${cls}`;
  banner.textContent = conn.state === "refused" ? `refused: ${conn.refusal}` : text;
  banner.dataset.state = conn.state;
  const dev = store.device || {};
  deviceLabel.textContent = dev.name ? dev.name : "monbridge";
  deviceLabel.title = store.role === "viewer" ? "view only: open the URL with ?token= to send commands" : "";
  document.body.classList.toggle("mb-viewer", store.role === "viewer");
  timeline.setViewer(store.role === "viewer");
}

conn.on("banner", renderBanner);
renderBanner();

// -- bridge events ---------------------------------------------------------------------

function setDevice(device) {
  const previous = store.device || {};
  store.device = device || {};
  // A new pid means the device restarted: sequence numbers and data start over.
  if (previous.pid && store.device.pid && previous.pid !== store.device.pid) clearViews();
  renderBanner();
  status.onDevice();
}

function setChannels(channels, commands) {
  store.channels = Array.isArray(channels) ? channels : [];
  store.commands = Array.isArray(commands) ? commands : [];
  subs.setKnown(channelNames());
  eachView((v) => v.onChannels());
  syncViews(); // a view may now belong to the device, or no longer
}

conn.on("hello", (hello) => {
  if (hello.protocol !== PROTOCOL) console.warn(`monbridge: written for protocol ${PROTOCOL}, the bridge speaks ${hello.protocol}`);
  store.role = hello.role;
  store.sid = hello.sid;
  store.protocol = hello.protocol;
  setDevice(hello.device);
  setChannels(hello.channels, hello.commands);
  syncViews(hello.views);
});

conn.on("connect", () => subs.resubscribeAll());
// The bridge could not decode something this page sent, and disconnects it (docs/protocol.md §4.8).
conn.on("error", (err) => console.error(`monbridge: the bridge refused a packet: ${err && err.message}`));
conn.on("device", setDevice);
conn.on("channels", (msg) => setChannels(msg.channels, msg.commands));
conn.on("views", (msg) => syncViews(msg.views));

conn.on("state", (msg) => {
  if (!msg || typeof msg.values !== "object") return;
  if (msg.full) store.state = { ...msg.values };
  else Object.assign(store.state, msg.values);
  // A replay's position jumped (its replay_epoch changed): rows from before the jump may still
  // be in the ring or on their way; subscribing again skips the first, onBatch drops the others.
  if (timeline.update(store.state)) {
    subs.renew();
    clearViews();
  }
  eachView((v) => v.onState(msg.values));
});

function onBatch(msg) {
  if (!msg || typeof msg.channel !== "string") return;
  if (!subs.stale(msg.channel)) { // else from before a replay's jump (subscriptions.js, renew())
    const batch = new Batch(msg);
    eachView((v) => v.onBatch(batch));
  }
  // taken: the bridge may send the next one (flow control, subscriptions.js)
  if (Array.isArray(msg.seq)) conn.consumed(msg.channel, msg.seq[1]);
}
conn.on("data", onBatch);
conn.on("event", onBatch);

// -- the frame loop ----------------------------------------------------------------------

function frame() {
  hooks.frames++;
  const active = tabs.active;
  const pageVisible = !document.hidden;
  eachView((v) => v.frame(pageVisible && v.id === active));
  tabs.markErrors();
  requestAnimationFrame(frame);
}
requestAnimationFrame(frame);
