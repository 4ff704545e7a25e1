// Which views belong to the device (webui/src/viewdata.js): `npm test`.
import { test } from "node:test";
import assert from "node:assert/strict";
import { namedDatasets, viewChannels, viewsForDevice } from "../src/viewdata.js";

const vl = (id, spec) => ({ id, kind: "vega-lite", spec, error: null });
const wave = vl("wave", { data: { name: "wave" }, mark: "line" });
const joints = vl("joints", { layer: [{ data: { name: "joints" } }, { data: { name: "targets" } }] });
const inline = vl("inline", { data: { values: [{ a: 1 }] }, mark: "bar" });
const scene = { id: "arm", kind: "scene", spec: { objects: [{ type: "points", channel: "cloud" }, { type: "grid" }] }, error: null };
const broken = { id: "broken", kind: "vega-lite", spec: null, error: "not JSON" };

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
  const { shown, hidden } = viewsForDevice([wave, joints, inline, scene, broken], ["wave", "log"]);
  assert.deepEqual(shown.map((v) => v.id), ["wave", "inline", "broken"]);
  assert.deepEqual(hidden.map((v) => v.id), ["joints", "arm"]);
});

test("one matching dataset is enough; unknown channels show everything", () => {
  assert.deepEqual(viewsForDevice([joints], ["targets"]).hidden, []);
  assert.deepEqual(viewsForDevice([wave, joints, scene], []).hidden, []);
});
