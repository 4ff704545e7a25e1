// Several devices per bridge: names, the device list, the picker's choice (webui/src/devices.js): `npm test`.
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  channelKey, deviceEntries, deviceParam, isName, messageDevice, pickDevice, renamesOnly, resolveName, showPicker, splitName,
  withDevice, withDeviceParam,
} from "../src/devices.js";

test("names: letters, digits, _ and -, up to 48", () => {
  assert.ok(isName("arm1") && isName("cam_2-b") && isName("x".repeat(48)));
  assert.ok(!isName("") && !isName("a/b") && !isName("a b") && !isName("x".repeat(49)) && !isName(null) && !isName(3));
});

test("a key joins device and channel; without a device it is the channel", () => {
  assert.equal(channelKey("arm1", "joints"), "arm1/joints");
  assert.equal(channelKey(null, "joints"), "joints");
  assert.equal(channelKey(undefined, "joints"), "joints");
});

test("a dataset name may carry its device", () => {
  assert.deepEqual(splitName("arm1/joints"), { device: "arm1", channel: "joints" });
  assert.deepEqual(splitName("joints"), { device: null, channel: "joints" });
  assert.deepEqual(splitName("/joints"), { device: null, channel: "/joints" });
  assert.deepEqual(splitName("a b/joints"), { device: null, channel: "a b/joints" }); // not a device name
});

test("'arm1/joints' reads arm1 whatever the picker or the pin say", () => {
  for (const [selected, pinned] of [["cam2", null], ["cam2", "cam3"], [null, null]]) {
    assert.deepEqual(resolveName("arm1/joints", selected, pinned),
      { name: "arm1/joints", device: "arm1", channel: "joints", key: "arm1/joints", follows: false });
  }
});

test("'joints' reads the pinned device, else the selected one", () => {
  assert.deepEqual(resolveName("joints", "cam2", "arm1"),
    { name: "joints", device: "arm1", channel: "joints", key: "arm1/joints", follows: false });
  assert.deepEqual(resolveName("joints", "cam2"),
    { name: "joints", device: "cam2", channel: "joints", key: "cam2/joints", follows: true });
  // a single-mode bridge that does not know its device's name yet
  assert.deepEqual(resolveName("joints", null),
    { name: "joints", device: null, channel: "joints", key: "joints", follows: true });
});

test("payloads name their device, unless it is not known", () => {
  assert.deepEqual(withDevice({ channels: ["a"] }, "arm1"), { device: "arm1", channels: ["a"] });
  assert.deepEqual(withDevice({ channels: ["a"] }, null), { channels: ["a"] });
});

test("hello's device list; a bridge before protocol 4 has its one device", () => {
  const status = { name: "arm1", status: "online", pid: 7, heartbeat_age: 0.1 };
  const v4 = { protocol: 4, multi: true, devices: [
    { name: "arm1", device: status, channels: [{ name: "joints" }], commands: [{ name: "home" }] },
    { name: "cam2", device: { name: "cam2", status: "offline" } },
  ], device: null, channels: [], commands: [] };
  assert.deepEqual(deviceEntries(v4), [
    { name: "arm1", status, channels: [{ name: "joints" }], commands: [{ name: "home" }] },
    { name: "cam2", status: { name: "cam2", status: "offline" }, channels: [], commands: [] },
  ]);
  assert.deepEqual(deviceEntries({ devices: [{ name: null, device: { name: null, status: "offline" }, channels: [], commands: [] }] }),
    [{ name: null, status: { name: null, status: "offline" }, channels: [], commands: [] }]);
  assert.deepEqual(deviceEntries({ protocol: 3, device: status, channels: [{ name: "w" }], commands: [] }),
    [{ name: "arm1", status, channels: [{ name: "w" }], commands: [] }]);
  assert.deepEqual(deviceEntries({ devices: [{ name: "a" }] }), [{ name: "a", status: {}, channels: [], commands: [] }]);
});

test("the device shown: the one asked for when served, else the first", () => {
  assert.equal(pickDevice(["arm1", "cam2"], "cam2"), "cam2");
  assert.equal(pickDevice(["arm1", "cam2"], "gone"), "arm1");
  assert.equal(pickDevice(["arm1", "cam2"], null), "arm1");
  assert.equal(pickDevice([null], "arm1"), null);
  assert.equal(pickDevice([], "arm1"), null);
});

test("the picker shows for multi mode or more than one device", () => {
  assert.equal(showPicker(false, ["arm1"]), false);
  assert.equal(showPicker(false, [null]), false);
  assert.equal(showPicker(true, ["arm1"]), true);
  assert.equal(showPicker(true, []), true);
  assert.equal(showPicker(false, ["arm1", "cam2"]), true);
});

test("?device=NAME in the page's query", () => {
  assert.equal(deviceParam("?device=cam2&rebuild_rows=5"), "cam2");
  assert.equal(deviceParam(""), null);
  assert.equal(deviceParam("?device=a%2Fb"), null);
  assert.equal(withDeviceParam("?rebuild_rows=5", "cam2"), "?rebuild_rows=5&device=cam2");
  assert.equal(withDeviceParam("?device=arm1", "cam2"), "?device=cam2");
  assert.equal(withDeviceParam("?device=arm1", null), "");
});

test("a message's device: its own; in single mode the only device's", () => {
  assert.equal(messageDevice({ device: "cam2", channel: "joints" }, true, undefined), "cam2");
  assert.equal(messageDevice({ device: "cam2" }, false, "arm1"), "cam2");
  assert.equal(messageDevice({ channel: "joints" }, false, "arm1"), "arm1");
  assert.equal(messageDevice({ device: null }, false, null), null);
  assert.equal(messageDevice({ channel: "joints" }, true, undefined), undefined);
});

test("a single-mode bridge's device takes the name it is attached under (--attach auto)", () => {
  assert.equal(renamesOnly([null], false, "arm1"), true);
  assert.equal(renamesOnly(["arm1"], false, "arm2"), true); // auto attached another device
  assert.equal(renamesOnly(["arm1"], false, "arm1"), false);
  assert.equal(renamesOnly([null], false, null), false);
  assert.equal(renamesOnly(["arm1", "cam2"], true, "cam3"), false); // multi mode waits for its `devices` event
  assert.equal(renamesOnly([null], true, "arm1"), false);
});
