/**
 * Several devices per bridge (protocol 4): names, the device list, the picker's choice.
 *
 * A channel is known by its device and its name. Keys join them as "arm1/joints" (device and
 * channel names match [A-Za-z0-9_-]{1,48}, so the slash is unambiguous); a name without a
 * device (a single-mode bridge with `--attach auto` before the device is known) is keyed by the
 * channel alone. A spec names its data the same way: "arm1/joints" takes joints of arm1
 * whatever the picker says, "joints" follows the spec's pin (usermeta.device, a scene's
 * "device") or else the selected device.
 *
 * Pure functions, no DOM: webui/test/devices.test.mjs.
 */

export const NAME_RE = /^[A-Za-z0-9_-]{1,48}$/;

/** True for a valid device (or channel) name. */
export function isName(value) {
  return typeof value === "string" && NAME_RE.test(value);
}

/** The key of a channel of a device: "arm1/joints" ("joints" when the device is not known). */
export function channelKey(device, channel) {
  return device === null || device === undefined ? channel : `${device}/${channel}`;
}

/** A spec's dataset name → {device: the name's prefix or null, channel}. */
export function splitName(name) {
  const slash = name.indexOf("/");
  if (slash > 0 && isName(name.slice(0, slash))) return { device: name.slice(0, slash), channel: name.slice(slash + 1) };
  return { device: null, channel: name };
}

/**
 * Where the dataset `name` takes its data: its own "device/" prefix, else `pinned` (the spec's
 * device), else `selected` (the picker's). `follows`: it changes with the picker.
 */
export function resolveName(name, selected, pinned = null) {
  const own = splitName(name);
  const device = own.device ?? pinned ?? selected ?? null;
  return { name, device, channel: own.channel, key: channelKey(device, own.channel), follows: own.device === null && !pinned };
}

/** `payload` with `device` added, unless the device is not known (single mode, `--attach auto`). */
export function withDevice(payload, device) {
  return device === null || device === undefined ? payload : { device, ...payload };
}

/**
 * The device list of a `hello` or `devices` message → [{name, status, channels, commands}].
 * A hello without `devices` (a bridge before protocol 4) is its single device.
 */
export function deviceEntries(msg) {
  const list = Array.isArray(msg && msg.devices) ? msg.devices
    : [{ name: (msg && msg.device && msg.device.name) ?? null, device: msg && msg.device, channels: msg && msg.channels, commands: msg && msg.commands }];
  return list.filter((d) => d && typeof d === "object").map((d) => ({
    name: typeof d.name === "string" ? d.name : null,
    status: d.device && typeof d.device === "object" ? d.device : {},
    channels: Array.isArray(d.channels) ? d.channels : [],
    commands: Array.isArray(d.commands) ? d.commands : [],
  }));
}

/** The device to show: `wanted` if the bridge serves it, else the first one (null if none). */
export function pickDevice(names, wanted) {
  if (wanted !== null && wanted !== undefined && names.includes(wanted)) return wanted;
  return names.length ? names[0] : null;
}

/** The picker is shown for a multi-mode bridge, or whenever there is more than one device. */
export function showPicker(multi, names) {
  return multi === true || names.filter((n) => n !== null).length > 1;
}

/** The device a page query (`location.search`) asks for with ?device=NAME, or null. */
export function deviceParam(search) {
  const name = new URLSearchParams(search).get("device");
  return isName(name) ? name : null;
}

/** `search` with ?device=NAME set (or removed for null), as "?a=b&device=x" or "". */
export function withDeviceParam(search, name) {
  const params = new URLSearchParams(search);
  if (name === null || name === undefined) params.delete("device");
  else params.set("device", name);
  const query = params.toString();
  return query ? `?${query}` : "";
}

/**
 * The device a per-device message is for: its `device` (the `device` status event: its
 * `name`). A message without one (single mode, or a bridge before protocol 4) is the only
 * device's: `only` (its name, possibly null); in multi mode it is no device's (undefined).
 */
export function messageDevice(msg, multi, only) {
  const named = msg && typeof msg.device === "string" ? msg.device : null;
  if (named !== null) return named;
  return multi ? undefined : only;
}

/**
 * True when a single-mode bridge's only device (`names`: the one name the page knows, null
 * while the bridge waits with `--attach auto`) is now called `name`: the page renames it.
 */
export function renamesOnly(names, multi, name) {
  return !multi && typeof name === "string" && names.length === 1 && names[0] !== name;
}
