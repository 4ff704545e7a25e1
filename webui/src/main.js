/**
 * monbridge dashboard entry point: wires the connection, the device picker, tabs, views and
 * the frame loop.
 *
 * Data flow: socket `data`/`event` → Batch of its device and channel (decoded lazily, once)
 * → every view that shows that channel of that device buffers it → the single
 * requestAnimationFrame loop below lets each view apply what it buffered (only the visible tab
 * draws). Every per-device message names its device (protocol 4); the page keeps each
 * device's status, channels, commands and state (store.devices).
 *
 * The picker (#device-picker, shown when the bridge serves a list of devices or more than
 * one) selects the device whose views, controls, Status tab and replay timeline the page
 * shows. A view that names its device ("arm1/joints", usermeta.device) keeps it whatever the
 * picker says (viewdata.js). The user's choice is kept in the URL (?device=NAME) and wins
 * whenever the bridge serves that device; otherwise the first device is shown. A device that
 * restarts, or whose replay's position jumps, has its data cleared in the views (clearDevice).
 * Test hooks: see hooks.js (window.monbridge).
 */
import { Connection } from "./connection.js";
import { SubscriptionManager } from "./subscriptions.js";
import { TabManager } from "./tabs.js";
import { VegaLiteView } from "./vlview.js";
import { SceneView } from "./sceneview.js";
import { StatusPanel } from "./status.js";
import { Batch } from "./decode.js";
import { installHooks } from "./hooks.js";
import { TimelineBar, isReplay, replayJumped } from "./timeline.js";
import { placeViews } from "./viewdata.js";
import {
  channelKey, deviceEntries, deviceParam, messageDevice, pickDevice, renamesOnly, showPicker, withDeviceParam,
} from "./devices.js";
import { el } from "./util.js";

const PROTOCOL = 5;

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
// devices: name (null: a single-mode bridge that does not know it yet) -> {name, status,
// channels, commands, state, epoch}; selected: the device the page shows (its status and
// state: `device`, `state`); views: every VIEW the bridge lists; hiddenViews: those for other
// devices (viewdata.js)
const store = {
  role: null, sid: null, protocol: null, multi: false,
  devices: new Map(), selected: null, views: [], hiddenViews: [],
  get device() { return this.devices.get(this.selected)?.status || {}; },
  get state() { return this.devices.get(this.selected)?.state || {}; },
};
// the device the user asked for (?device=, the picker): shown whenever the bridge serves it
let wanted = deviceParam(location.search);

const banner = document.getElementById("mb-banner");
const deviceLabel = document.getElementById("mb-device");
const picker = document.getElementById("device-picker");
const tabsBar = document.getElementById("mb-tabs");
const panels = document.getElementById("mb-panels");

const entryOf = (device) => store.devices.get(device) || null;
const channelNames = (device) => (entryOf(device)?.channels || []).map((c) => c.name);
const channelInfo = (device, channel) => (entryOf(device)?.channels || []).find((c) => c.name === channel) || null;
const deviceState = (device) => entryOf(device)?.state || {};
const deviceNames = () => [...store.devices.keys()];
const pickerShown = () => showPicker(store.multi, deviceNames());

let hooks = null;
// ?rebuild_rows=N: embed a chart anew after N rows instead of vlview.js's default (for tests)
const rebuildRows = Number(new URLSearchParams(location.search).get("rebuild_rows")) || null;
const ctx = {
  conn, subs, store, channelNames, channelInfo, deviceState, rebuildRows,
  applied: (device, channel, t) => hooks && hooks.applied(channel, t, device),
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
const timeline = new TimelineBar(document.getElementById("mb-timeline"), (name, args) => conn.command(name, args, store.selected));
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

/** Clear the data of `device` in every view: it restarted, or its replay's position jumped. */
function clearDevice(device) {
  hooks.resets++;
  eachView((v) => v.reset(device));
}

/** Show the views that belong to the devices, bound to them (viewdata.js); all while channels are unknown. */
function syncViews(views) {
  if (views !== undefined) store.views = Array.isArray(views) ? views : [];
  const channelsOf = new Map([...store.devices].map(([name, e]) => [name, e.channels.map((c) => c.name)]));
  const { shown, hidden } = placeViews(store.views, store.selected, channelsOf);
  store.hiddenViews = hidden;
  tabs.sync(shown);
  hooks.syncViews();
}

// -- banner and picker -------------------------------------------------------------------

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
  // with the picker, the picker names the device
  deviceLabel.textContent = !pickerShown() && dev.name ? dev.name : "monbridge";
  deviceLabel.title = store.role === "viewer" ? "view only: open the URL with ?token= to send commands" : "";
  document.body.classList.toggle("mb-viewer", store.role === "viewer");
  timeline.setViewer(store.role === "viewer");
}

conn.on("banner", renderBanner);
renderBanner();

function renderPicker() {
  const names = deviceNames().filter((name) => name !== null);
  picker.hidden = !pickerShown();
  if (picker.dataset.names !== names.join("/")) {
    picker.dataset.names = names.join("/");
    picker.replaceChildren(...(names.length ? names.map((name) => el("option", { value: name }, name))
      : [el("option", { value: "", disabled: true }, "no device yet")]));
  }
  for (const option of picker.options) {
    if (!option.value) continue;
    const online = entryOf(option.value)?.status.status === "online";
    const text = online ? option.value : `${option.value} (offline)`;
    if (option.textContent !== text) option.textContent = text;
  }
  picker.value = store.selected ?? "";
}

/** The user chose a device: show it, and keep the choice in the URL (?device=NAME). */
function choose(name) {
  wanted = name;
  history.replaceState(history.state, "", location.pathname + withDeviceParam(location.search, name) + location.hash);
  devicesChanged();
}

picker.addEventListener("change", () => choose(picker.value));

// -- devices -------------------------------------------------------------------------------

// A new pid means the device restarted: sequence numbers and data start over.
function restarted(previous, now) {
  return !!(previous && previous.pid && now && now.pid && previous.pid !== now.pid);
}

/** The set of devices, or their channels, changed: select, subscribe and place the views anew. */
function devicesChanged() {
  const selected = pickDevice(deviceNames(), wanted);
  const switched = selected !== store.selected;
  store.selected = selected;
  subs.setKnown([...store.devices].flatMap(([name, e]) => e.channels.map((c) => channelKey(name, c.name))));
  renderPicker();
  if (switched) {
    timeline.select(store.state);
    status.onSelect();
  }
  conn.setDevice(store.device);
  renderBanner();
  status.onDevice();
  eachView((v) => v.onChannels());
  syncViews();
}

/** A device list (hello, `devices` event): keep what the page knows of devices still served. */
function setDevices(entries) {
  const previous = store.devices;
  store.devices = new Map();
  for (const entry of entries) {
    const prev = previous.get(entry.name);
    store.devices.set(entry.name, { ...entry, state: prev ? prev.state : {}, epoch: prev ? prev.epoch : undefined });
    if (prev && restarted(prev.status, entry.status)) clearDevice(entry.name);
  }
  devicesChanged();
}

/**
 * The device a per-device message is for (devices.js, messageDevice). A single-mode bridge
 * with `--attach auto` names its device once it attached one: the only entry takes that name.
 */
function deviceOf(msg) {
  const names = deviceNames();
  const name = messageDevice(msg, store.multi, names.length === 1 ? names[0] : undefined);
  if (renamesOnly(names, store.multi, name)) {
    const only = store.devices.get(names[0]);
    store.devices = new Map([[name, { ...only, name }]]);
    devicesChanged();
  }
  return name;
}

// -- bridge events ---------------------------------------------------------------------

conn.on("hello", (hello) => {
  if (hello.protocol !== PROTOCOL) console.warn(`monbridge: written for protocol ${PROTOCOL}, the bridge speaks ${hello.protocol}`);
  store.role = hello.role;
  store.sid = hello.sid;
  store.protocol = hello.protocol;
  store.multi = hello.multi === true;
  setDevices(deviceEntries(hello));
  syncViews(hello.views);
});

conn.on("connect", () => subs.resubscribeAll());
// The bridge could not decode something this page sent, and disconnects it (docs/protocol.md §4.8).
conn.on("error", (err) => console.error(`monbridge: the bridge refused a packet: ${err && err.message}`));
conn.on("devices", (msg) => setDevices(deviceEntries(msg)));
conn.on("views", (msg) => syncViews(msg.views));

conn.on("device", (msg) => {
  // the status event's own name is its device (protocol 4 adds `device`, equal to it)
  const name = deviceOf({ device: msg && (msg.device ?? msg.name) });
  const entry = entryOf(name);
  if (!entry) return;
  const previous = entry.status;
  entry.status = msg && typeof msg === "object" ? msg : {};
  if (restarted(previous, entry.status)) clearDevice(name);
  renderPicker();
  if (name !== store.selected) return;
  conn.setDevice(entry.status);
  renderBanner();
  status.onDevice();
});

conn.on("channels", (msg) => {
  const entry = entryOf(deviceOf(msg));
  if (!entry) return;
  entry.channels = Array.isArray(msg.channels) ? msg.channels : [];
  entry.commands = Array.isArray(msg.commands) ? msg.commands : [];
  devicesChanged(); // a view may now belong to a device, or no longer
});

conn.on("state", (msg) => {
  if (!msg || !msg.values || typeof msg.values !== "object") return;
  const name = deviceOf(msg);
  const entry = entryOf(name);
  if (!entry) return;
  if (msg.full) entry.state = { ...msg.values };
  else Object.assign(entry.state, msg.values);
  // A replay's position jumped (its replay_epoch changed): rows from before the jump may still
  // be in the ring or on their way; subscribing again skips the first, onBatch drops the others.
  if (replayJumped(entry.epoch, entry.state)) {
    subs.renew(name);
    clearDevice(name);
  }
  entry.epoch = isReplay(entry.state) ? entry.state.replay_epoch : undefined;
  if (name === store.selected) timeline.update(entry.state);
  eachView((v) => v.onState(msg.values, name));
});

function onBatch(msg) {
  if (!msg || typeof msg.channel !== "string") return;
  const name = deviceOf(msg);
  if (name !== undefined && !subs.stale(channelKey(name, msg.channel))) { // else from before a replay's jump (subscriptions.js, renew())
    const batch = new Batch(msg, name);
    eachView((v) => v.onBatch(batch));
  }
  // taken: the bridge may send the next one (flow control, subscriptions.js)
  if (Array.isArray(msg.seq)) conn.consumed(name ?? null, msg.channel, msg.seq[1]);
}
conn.on("data", onBatch);
conn.on("event", onBatch);
// several records messages sent together (docs/protocol.md §4.9): each as if it came alone
conn.on("bundle", (msgs) => {
  if (Array.isArray(msgs)) for (const msg of msgs) onBatch(msg);
});

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
