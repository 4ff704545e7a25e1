// Unit tests of tooltip.js: chart tooltips are text, whatever the spec or the device puts in them.
import { test } from "node:test";
import assert from "node:assert/strict";
import { escapeHTML, formatTooltip, TOOLTIP_OPTIONS } from "../src/tooltip.js";

const IMG = '<img src=x onerror="window.__pwned=1">';

test("escapeHTML escapes what could open a tag or leave a quoted attribute", () => {
  assert.equal(escapeHTML(`${IMG} & 'x'`), "&lt;img src=x onerror=&quot;window.__pwned=1&quot;&gt; &amp; &#39;x&#39;");
  assert.equal(escapeHTML(42), "42");
  assert.equal(escapeHTML(null), "null");
});

test("a string or number value is its escaped text", () => {
  assert.equal(formatTooltip("<b>bold</b>"), "&lt;b&gt;bold&lt;/b&gt;");
  assert.equal(formatTooltip(1.5), "1.5");
});

test("an object becomes a table of escaped keys and values; title a heading", () => {
  const html = formatTooltip({ title: "<b>t</b>", [IMG]: IMG, n: 3, skipped: undefined });
  assert.equal(html, "<h2>&lt;b&gt;t&lt;/b&gt;</h2><table>"
    + '<tr><td class="key">&lt;img src=x onerror=&quot;window.__pwned=1&quot;&gt;</td>'
    + '<td class="value">&lt;img src=x onerror=&quot;window.__pwned=1&quot;&gt;</td></tr>'
    + '<tr><td class="key">n</td><td class="value">3</td></tr></table>');
  assert.equal(formatTooltip({}), "{}");
});

test("a field called image is text, not an <img> (vega-tooltip's default makes one)", () => {
  const html = formatTooltip({ image: 'data:x" onerror="window.__pwned=1" x="' });
  assert.ok(!/<img/i.test(html), html);
  assert.ok(html.includes("data:x&quot; onerror=&quot;window.__pwned=1&quot; x=&quot;"), html);
});

test("nested values are JSON, cut at maxDepth and at cycles; arrays are listed", () => {
  const cyclic = { a: 1 };
  cyclic.self = cyclic;
  assert.equal(formatTooltip({ v: { a: { b: { c: 1 } } } }, null, 1), '<table><tr><td class="key">v</td><td class="value">{&quot;a&quot;:{&quot;b&quot;:&quot;[Object]&quot;}}</td></tr></table>');
  assert.ok(formatTooltip({ v: cyclic }).includes("[Circular]"));
  assert.equal(formatTooltip(["<i>", 2, { k: "v" }]), "[&lt;i&gt;, 2, {&quot;k&quot;:&quot;v&quot;}]");
});

test("the embed options carry both functions", () => {
  assert.equal(TOOLTIP_OPTIONS.formatTooltip, formatTooltip);
  assert.equal(TOOLTIP_OPTIONS.sanitize("<"), "&lt;");
});
