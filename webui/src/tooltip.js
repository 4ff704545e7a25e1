/**
 * Chart tooltips as text: the `formatTooltip` and `sanitize` options of vega-tooltip (the
 * handler vega-embed installs), so nothing a spec or the device puts in a tooltip becomes HTML.
 *
 * vega-tooltip's own formatter escapes only `&` and `<`, and turns a key called `image` into
 * `<img src="...">`; an events row is the device's JSON message spread into fields, so a
 * device could put an `image` there and have the page load it (or, with a `data:` URL whose
 * quotes URL parsing leaves alone, run script). Here every key and value is escaped for
 * element content and quoted attributes, and `image` is a field like any other.
 *
 * Pure functions, no DOM: vega-tooltip sets the returned string as the tooltip's innerHTML.
 */

const ENTITIES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };

/** Any value → its text, escaped for HTML element content and attribute values. */
export function escapeHTML(value) {
  return String(value).replace(/[&<>"']/g, (c) => ENTITIES[c]);
}

// JSON of a nested value, cut at maxDepth levels (vega-tooltip's behaviour) and at cycles.
function stringify(value, maxDepth) {
  const stack = [];
  return JSON.stringify(value, function (_key, v) {
    if (typeof v !== "object" || v === null) return v;
    stack.length = stack.indexOf(this) + 1;
    if (stack.length > maxDepth) return "[Object]";
    if (stack.includes(v)) return "[Circular]";
    stack.push(v);
    return v;
  });
}

const text = (v, maxDepth) => (typeof v === "string" ? v : v !== null && typeof v === "object" ? stringify(v, maxDepth) : String(v));

/**
 * vega-tooltip's `formatTooltip(value, sanitize, maxDepth, baseURL)`, text only: a string or
 * number as itself, an array as `[a, b]`, an object as an optional `<h2>` (its `title`) and a
 * key/value table — the same markup and CSS classes as vega-tooltip's default. The
 * `sanitize` passed in is ignored: escaping here does not depend on the options.
 */
export function formatTooltip(value, _sanitize, maxDepth = 2) {
  if (Array.isArray(value)) return `[${value.map((v) => escapeHTML(text(v, maxDepth))).join(", ")}]`;
  if (value !== null && typeof value === "object") {
    const { title, ...rest } = value;
    let html = title !== undefined && title !== null && title !== "" ? `<h2>${escapeHTML(text(title, maxDepth))}</h2>` : "";
    const rows = Object.entries(rest).filter(([, v]) => v !== undefined);
    if (rows.length) {
      html += "<table>";
      for (const [k, v] of rows) html += `<tr><td class="key">${escapeHTML(k)}</td><td class="value">${escapeHTML(text(v, maxDepth))}</td></tr>`;
      html += "</table>";
    }
    return html || "{}";
  }
  return escapeHTML(value);
}

/** The `tooltip` option for vega-embed. */
export const TOOLTIP_OPTIONS = { formatTooltip, sanitize: escapeHTML };
