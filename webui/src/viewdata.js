/**
 * Which channels of which devices a view's data come from, and so which views to show.
 *
 * A view's dataset (a scene object's channel) "arm1/joints" reads joints of arm1; "joints"
 * reads the spec's pinned device (`usermeta.device`; a scene's `device`) or else the device
 * selected in the page's picker (devices.js). `bindView` resolves every name: the view is made
 * anew when its binding changes (the picker moved and the view follows it).
 *
 * A specs directory may hold views for several devices (the repository's `specs/` holds the
 * robot-arm demo's and the minimal example's, and an installed monbridge ships both). The
 * dashboard shows a view unless all of its data come from channels their devices do not have;
 * views with an error, with no channel data (inline values, a URL) and views whose devices'
 * channels are not yet known are shown. A view naming a device the bridge does not serve is
 * shown with an error saying so. Pure functions, no DOM, no Vega.
 */
import { isName, resolveName } from "./devices.js";

const UNKNOWN_DEVICE_HINT = "Start that device and serve it (monbridge serve --attach NAME,...), or fix the "
  + "device name in the spec; the tab updates when the file is saved or the bridge's devices change.";

/** Names of all named datasets in a Vega-Lite (or Vega) spec, in order of appearance. */
export function namedDatasets(spec) {
  const names = [];
  const add = (d) => {
    if (d && typeof d === "object" && typeof d.name === "string" && !("values" in d) && !("url" in d)
        && !("source" in d) && !names.includes(d.name)) names.push(d.name);
  };
  const walk = (node, key) => {
    if (Array.isArray(node)) {
      for (const item of node) walk(item);
    } else if (node && typeof node === "object") {
      if (key === "usermeta") return;
      const data = node.data;
      if (Array.isArray(data)) data.forEach(add);
      else add(data);
      for (const [k, v] of Object.entries(node)) if (v && typeof v === "object") walk(v, k);
    }
  };
  walk(spec);
  const inline = spec && typeof spec.datasets === "object" ? Object.keys(spec.datasets) : [];
  return names.filter((n) => !inline.includes(n));
}

/** The channels a view reads, as the spec names them: a chart's named datasets, a scene's objects' channels. */
export function viewChannels(def) {
  if (!def || !def.spec || typeof def.spec !== "object") return [];
  if (def.kind === "scene") {
    const objects = Array.isArray(def.spec.objects) ? def.spec.objects : [];
    return [...new Set(objects.filter((o) => o && typeof o.channel === "string").map((o) => o.channel))];
  }
  return namedDatasets(def.spec);
}

/** The device a spec pins its un-prefixed names to (usermeta.device; a scene's `device`), or null. */
export function viewPin(def) {
  const spec = def && def.spec;
  if (!spec || typeof spec !== "object") return null;
  const pin = def.kind === "scene" ? spec.device : spec.usermeta && spec.usermeta.device;
  return isName(pin) ? pin : null;
}

/**
 * The device a view's controls and buttons command and whose state they show: the spec's pin;
 * else the device every dataset names with its prefix ("arm1/joints", "arm1/targets"), when
 * they all name the same one; else the selected device.
 */
export function controlDevice(sources, pinned, selected) {
  if (pinned) return pinned;
  const named = new Set(sources.map((s) => (s.follows ? null : s.device)));
  if (named.size === 1 && !named.has(null)) return [...named][0];
  return selected ?? null;
}

/**
 * A view's binding: {device: whose commands and state its controls use (controlDevice),
 * pinned, sources: [{name, device, channel, key, follows}] one per dataset name}.
 */
export function bindView(def, selected) {
  const pinned = viewPin(def);
  const sources = viewChannels(def).map((n) => resolveName(n, selected, pinned));
  return { device: controlDevice(sources, pinned, selected), pinned, sources };
}

/** The devices a binding names that the bridge does not serve (`served`: names; none while unknown). */
export function missingDevices(binding, served) {
  const named = served.filter((n) => n !== null);
  if (!named.length) return [];
  const wanted = [binding.pinned, ...binding.sources.map((s) => s.device)].filter((d) => d !== null && d !== undefined);
  return [...new Set(wanted)].filter((d) => !named.includes(d));
}

/** The error a view naming devices the bridge does not serve shows. */
export function unknownDeviceMessage(missing, served) {
  const named = served.filter((n) => n !== null);
  const which = missing.map((d) => `'${d}'`).join(", ");
  return `this view reads device ${which}, which this bridge does not serve (devices: ${named.join(", ") || "none"})`;
}

// True when every source's device has known channels and none of them is the source's.
function forOtherDevices(sources, channelsOf) {
  return sources.length > 0 && sources.every((s) => {
    const names = channelsOf.get(s.device);
    return Array.isArray(names) && names.length > 0 && !names.includes(s.channel);
  });
}

/**
 * Bind VIEW definitions to devices and split them into those to show and those for other devices.
 * @param {object[]} defs views as the bridge lists them
 * @param {string|null} selected the picker's device
 * @param {Map<string|null, string[]>} channelsOf device name → its channel names ([] while unknown)
 * @returns {{shown: object[], hidden: object[]}} shown defs carry `binding` (and `error` for an unknown device)
 */
export function placeViews(defs, selected, channelsOf) {
  const shown = [];
  const hidden = [];
  const served = [...channelsOf.keys()];
  for (const def of defs) {
    if (!def || def.error) {
      shown.push(def);
      continue;
    }
    const binding = bindView(def, selected);
    const missing = missingDevices(binding, served);
    if (missing.length) shown.push({ ...def, binding, error: unknownDeviceMessage(missing, served), errorHint: UNKNOWN_DEVICE_HINT });
    else if (forOtherDevices(binding.sources, channelsOf)) hidden.push(def);
    else shown.push({ ...def, binding });
  }
  return { shown, hidden };
}
