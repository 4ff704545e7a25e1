// The Status tab's Recording card, its pure parts (webui/src/recordpanel.js): `npm test`.
import { test } from "node:test";
import assert from "node:assert/strict";
import { fmtBytes, fmtMissed, lastRows, recordBody, recordingRows } from "../src/recordpanel.js";
import { statsURL } from "../src/status.js";

test("sizes read as the recorder prints them", () => {
  assert.equal(fmtBytes(812), "812 B");
  assert.equal(fmtBytes(45_200), "45.2 kB");
  assert.equal(fmtBytes(12_340_000), "12.3 MB");
  assert.equal(fmtBytes(1_200_000_000), "1.20 GB");
  assert.equal(fmtBytes(null), "—");
});

test("missed names only the channels that missed something", () => {
  assert.equal(fmtMissed({ joints: 0, cloud: 0 }), "none");
  assert.equal(fmtMissed({}), "none");
  assert.equal(fmtMissed(undefined), "none");
  assert.equal(fmtMissed({ joints: 10, cloud: 2, log: 0 }), "12 (joints 10, cloud 2)");
});

test("a recording in progress: file, size, duration, records/s, missed", () => {
  const rows = recordingRows({ recording: true, file: "arm-20261202-101500.mcap", bytes: 2_100_000, seconds: 2.0,
    records_per_s: 1065.4, missed: { joints: 0 } });
  assert.deepEqual(rows.map(([key, , text]) => [key, text]), [
    ["record-file", "arm-20261202-101500.mcap"], ["record-bytes", "2.1 MB"], ["record-seconds", "2.00 s"],
    ["record-rate", "1065.4"], ["record-missed", "none"]]);
});

test("the last recording says how it ended, or that it failed", () => {
  const ok = lastRows({ ok: true, file: "a.mcap", bytes: 900, seconds: 0.5, missed: {}, reason: "stopped by SIGTERM" });
  assert.deepEqual(ok.at(-1), ["last-reason", "ended", "stopped by SIGTERM"]);
  const failed = lastRows({ ok: false, file: "b.mcap.part", bytes: null, seconds: null, missed: { a: 1 }, reason: "disk full" });
  assert.deepEqual(failed.map(([key, label, text]) => [key, label, text]), [
    ["last-file", "file", "b.mcap.part"], ["last-bytes", "size", "—"], ["last-seconds", "duration", "—"],
    ["last-missed", "missed", "1 (a 1)"], ["last-reason", "failed", "disk full"]]);
});

test("POST api/record names the device shown", () => {
  assert.deepEqual(recordBody(false, " run1 ", "arm1"), { device: "arm1", action: "start", name: "run1" });
  assert.deepEqual(recordBody(true, "ignored", "arm1"), { action: "stop" }); // one recording per bridge
  assert.deepEqual(recordBody(false, "", null), { action: "start" });
});

test("GET api/stats asks for the device shown", () => {
  assert.equal(statsURL("arm-1"), "api/stats?device=arm-1");
  assert.equal(statsURL(null), "api/stats");
});

test("a bridge serving several devices says which one it records", () => {
  const rows = recordingRows({ recording: true, device: "arm1", file: "a.mcap" }, true);
  assert.deepEqual(rows[0], ["record-device", "device", "arm1"]);
  assert.equal(recordingRows({ recording: true, device: "arm1" })[0][0], "record-file");
});
