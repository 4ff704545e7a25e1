/**
 * Which channels a view's data come from, and so which views belong to the device.
 *
 * A specs directory may hold views for several devices (the repository's `specs/` holds the
 * robot-arm demo's and the minimal example's, and an installed monbridge ships both). The
 * dashboard shows a view unless all of its data come from channels the device does not have;
 * views with an error, with no channel data (inline values, a URL) and every view while the
 * device's channels are not yet known are shown. Pure functions, no DOM, no Vega.
 */

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

/** The channels a view reads: a Vega-Lite spec's named datasets, a scene's objects' channels. */
export function viewChannels(def) {
  if (!def || !def.spec || typeof def.spec !== "object") return [];
  if (def.kind === "scene") {
    const objects = Array.isArray(def.spec.objects) ? def.spec.objects : [];
    return [...new Set(objects.filter((o) => o && typeof o.channel === "string").map((o) => o.channel))];
  }
  return namedDatasets(def.spec);
}

/**
 * Split VIEW definitions into those for this device and those for others.
 * @param {object[]} defs views as the bridge lists them
 * @param {string[]} channels the device's channel names ([] while unknown: every view is shown)
 * @returns {{shown: object[], hidden: object[]}}
 */
export function viewsForDevice(defs, channels) {
  const shown = [];
  const hidden = [];
  for (const def of defs) {
    const wanted = def && !def.error && channels.length ? viewChannels(def) : [];
    if (wanted.length && !wanted.some((name) => channels.includes(name))) hidden.push(def);
    else shown.push(def);
  }
  return { shown, hidden };
}
