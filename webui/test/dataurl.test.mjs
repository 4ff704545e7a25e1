// Unit tests of dataurl.js: a data.url that cannot be loaded or parsed is reported, with
// the URL and the reason. Uses vega's own loader against a local HTTP server.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { loader as vegaLoader } from "vega";
import { loadFailure, loadReason, parseFailure, reportingLoader, reportingLogger, resolveURL } from "../src/dataurl.js";

let server;
let base;

before(async () => {
  server = createServer((req, res) => {
    if (req.url === "/ok.json") {
      res.writeHead(200, { "Content-Type": "application/json" });
      res.end('[{"a": 1}]');
    } else {
      res.writeHead(404, "Not Found");
      res.end("no such file");
    }
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  base = `http://127.0.0.1:${server.address().port}/`;
});

after(() => new Promise((resolve) => server.close(resolve)));

test("a successful load passes through without a report", async () => {
  const reports = [];
  const loader = reportingLoader(vegaLoader(), (m) => reports.push(m), base);
  assert.equal(await loader.load(base + "ok.json"), '[{"a": 1}]');
  assert.deepEqual(reports, []);
  assert.equal(typeof loader.sanitize, "function"); // the rest of the loader is vega's
});

test("an HTTP error is reported with the URL and the status, then re-thrown", async () => {
  const reports = [];
  const loader = reportingLoader(vegaLoader(), (m) => reports.push(m), base);
  await assert.rejects(loader.load(base + "missing.json"));
  assert.deepEqual(reports, [`data.url '${base}missing.json' could not be loaded: HTTP 404 Not Found`]);
});

test("a server that is not there is reported as no response", async () => {
  const reports = [];
  const loader = reportingLoader(vegaLoader(), (m) => reports.push(m), base);
  // a port that was just free: nothing listens there
  const probe = createServer();
  await new Promise((resolve) => probe.listen(0, "127.0.0.1", resolve));
  const port = probe.address().port;
  await new Promise((resolve) => probe.close(resolve));
  await assert.rejects(loader.load(`http://127.0.0.1:${port}/x.json`));
  assert.equal(reports.length, 1);
  assert.match(reports[0], new RegExp(`^data\\.url 'http://127\\.0\\.0\\.1:${port}/x\\.json' could not be loaded: no response`));
});

test("relative URLs are shown as written and as requested", () => {
  assert.equal(resolveURL("data/x.json", "http://h:1/app/?token=t#/v"), "http://h:1/app/data/x.json");
  assert.equal(resolveURL("data/x.json", undefined), "data/x.json");
  assert.equal(loadFailure("data/x.json", new Error("404NOT FOUND"), "http://h:1/"),
    "data.url 'data/x.json' (http://h:1/data/x.json) could not be loaded: HTTP 404 NOT FOUND");
});

test("reasons: vega-loader's terse errors in words, others as they are", () => {
  assert.equal(loadReason(new Error("500INTERNAL SERVER ERROR")), "HTTP 500 INTERNAL SERVER ERROR");
  assert.equal(loadReason(new Error("Sanitize failure, invalid URI: 'javascript:x'")), "Sanitize failure, invalid URI: 'javascript:x'");
  assert.match(loadReason(new TypeError("Failed to fetch")), /^no response .*CORS.* Failed to fetch$/);
});

test("the logger reports a file that failed to parse, and prints only at its level", () => {
  const reports = [];
  const printed = [];
  const out = { error: (...a) => printed.push(["error", ...a]), warn: (...a) => printed.push(["warn", ...a]), log: (...a) => printed.push(["log", ...a]) };
  const logger = reportingLogger((m) => reports.push(m), 1, "http://h:1/", out);
  const err = new SyntaxError("Unexpected token 'o', \"not json\" is not valid JSON");
  assert.equal(logger.warn("Data ingestion failed", "bad.json", err), logger);
  assert.deepEqual(reports, [parseFailure("bad.json", err, "http://h:1/")]);
  assert.match(reports[0], /^data\.url 'bad\.json' \(http:\/\/h:1\/bad\.json\) was loaded but could not be read as data .*not valid JSON$/);
  logger.warn("some Vega-Lite warning");
  logger.info("x");
  logger.error("boom");
  assert.deepEqual(printed, [["error", "boom"]]); // level 1: errors only
  assert.equal(logger.level(), 1);
  logger.level(2).warn("now shown");
  assert.deepEqual(printed.at(-1), ["warn", "now shown"]);
  assert.equal(reports.length, 1);
});
