// Which views belong to which device, and where their data come from (webui/src/viewdata.js): `npm test`.
import { test } from "node:test";
import assert from "node:assert/strict";
import { bindView, missingDevices, namedDatasets, placeViews, viewChannels, viewPin } from "../src/viewdata.js";

const vl = (id, spec) => ({ id, kind: "vega-lite", spec, error: null });
const wave = vl("wave", { data: { name: "wave" }, mark: "line" });
const joints = vl("joints", { layer: [{ data: { name: "joints" } }, { data: { name: "targets" } }] });
const inline = vl("inline", { data: { values: [{ a: 1 }] }, mark: "bar" });
const scene = { id: "arm", kind: "scene", spec: { objects: [{ type: "points", channel: "cloud" }, { type: "grid" }] }, error: null };
const broken = { id: "broken", kind: "vega-lite", spec: null, error: "not JSON" };
const single = (channels) => new Map([["dev", channels]]);
const ids = (defs) => defs.map((v) => v.id);

test("named datasets skip inline values, urls and the spec's own datasets", () => {
  assert.deepEqual(namedDatasets({ datasets: { d: [] }, layer: [{ data: { name: "d" } }, { data: { name: "x" } }, { data: { url: "a.csv", name: "u" } }] }), ["x"]);
});

test("a view's channels: datasets of a chart, channels of a scene's objects", () => {
  assert.deepEqual(viewChannels(joints), ["joints", "targets"]);
  assert.deepEqual(viewChannels(scene), ["cloud"]);
  assert.deepEqual(viewChannels(inline), []);
  assert.deepEqual(viewChannels(broken), []);
});

test("views whose data all come from channels the device lacks are hidden", () => {
  const { shown, hidden } = placeViews([wave, joints, inline, scene, broken], "dev", single(["wave", "log"]));
  assert.deepEqual(ids(shown), ["wave", "inline", "broken"]);
  assert.deepEqual(ids(hidden), ["joints", "arm"]);
});

test("one matching dataset is enough; unknown channels show everything", () => {
  assert.deepEqual(placeViews([joints], "dev", single(["targets"])).hidden, []);
  assert.deepEqual(placeViews([wave, joints, scene], "dev", single([])).hidden, []);
  assert.deepEqual(placeViews([wave, joints, scene], null, new Map([[null, []]])).hidden, []);
});

test("pins: usermeta.device for a chart, device for a scene; invalid ones pin nothing", () => {
  assert.equal(viewPin(vl("p", { usermeta: { device: "arm1" }, data: { name: "joints" } })), "arm1");
  assert.equal(viewPin({ kind: "scene", spec: { device: "cam2", objects: [] } }), "cam2");
  assert.equal(viewPin(vl("p", { usermeta: { device: "a b" } })), null);
  assert.equal(viewPin(wave), null);
});

test("a chart's datasets: own prefix, then usermeta.device, then the selected device", () => {
  const mixed = vl("mixed", { usermeta: { device: "arm1" }, layer: [{ data: { name: "joints" } }, { data: { name: "cam2/joints" } }] });
  assert.deepEqual(bindView(mixed, "cam9"), { device: "arm1", pinned: "arm1", sources: [
    { name: "joints", device: "arm1", channel: "joints", key: "arm1/joints", follows: false },
    { name: "cam2/joints", device: "cam2", channel: "joints", key: "cam2/joints", follows: false },
  ] });
  assert.deepEqual(bindView(joints, "cam9").sources.map((s) => s.key), ["cam9/joints", "cam9/targets"]);
  assert.equal(bindView(joints, "cam9").device, "cam9");
});

test("a scene: an object's 'arm1/pose', else the scene's device, else the selected one", () => {
  const s = { id: "s", kind: "scene", spec: { device: "arm1", objects: [{ type: "pose", channel: "pose" }, { type: "points", channel: "cam2/cloud" }] } };
  assert.deepEqual(bindView(s, "x").sources.map((src) => src.key), ["arm1/pose", "cam2/cloud"]);
  const { device: _pin, ...followed } = s.spec;
  assert.deepEqual(bindView({ ...s, spec: followed }, "x").sources.map((src) => src.key), ["x/pose", "cam2/cloud"]);
});

test("a binding changes with the picker only where a name follows it", () => {
  const pinned = vl("p", { data: { name: "arm1/joints" } });
  assert.deepEqual(bindView(pinned, "arm1"), bindView(pinned, "cam2"));
  assert.notDeepEqual(bindView(wave, "arm1"), bindView(wave, "cam2"));
});

test("controls command the pin, else the one device every dataset names, else the selected device", () => {
  const named = (...names) => vl("c", { layer: names.map((name) => ({ data: { name } })) });
  assert.equal(bindView(named("arm1/joints", "arm1/targets"), "cam2").device, "arm1");
  assert.equal(bindView(named("arm1/joints", "cam3/joints"), "cam2").device, "cam2");
  assert.equal(bindView(named("arm1/joints", "joints"), "cam2").device, "cam2");
  assert.equal(bindView(named(), "cam2").device, "cam2");
  assert.equal(bindView(vl("c", { usermeta: { device: "cam3" }, data: { name: "arm1/joints" } }), "cam2").device, "cam3");
});

test("devices the bridge does not serve", () => {
  const b = bindView(vl("p", { usermeta: { device: "gone" }, layer: [{ data: { name: "arm1/j" } }, { data: { name: "nope/j" } }] }), "arm1");
  assert.deepEqual(missingDevices(b, ["arm1", "cam2"]), ["gone", "nope"]);
  assert.deepEqual(missingDevices(b, [null]), []); // the bridge does not know its device yet
});

test("two devices: views are bound to them; a view naming another device shows an error", () => {
  const devices = new Map([["arm1", ["joints", "wave"]], ["cam2", ["wave"]]]);
  const pinned = vl("pinned", { data: { name: "arm1/joints" } });
  const foreign = vl("foreign", { data: { name: "arm9/joints" } });
  const { shown, hidden } = placeViews([wave, joints, pinned, foreign], "cam2", devices);
  assert.deepEqual(ids(shown), ["wave", "pinned", "foreign"]);
  assert.deepEqual(ids(hidden), ["joints"]); // cam2 has no joints
  const [w, p, f] = shown;
  assert.deepEqual(w.binding.sources.map((s) => s.key), ["cam2/wave"]);
  assert.deepEqual(p.binding.sources.map((s) => s.key), ["arm1/joints"]);
  assert.equal(p.error, null);
  assert.match(f.error, /device 'arm9', which this bridge does not serve \(devices: arm1, cam2\)/);
  assert.ok(f.errorHint);
  assert.deepEqual(ids(placeViews([wave, joints], "arm1", devices).shown), ["wave", "joints"]);
});
