/**
 * Small DOM and formatting helpers shared by the dashboard modules.
 *
 * No imports: every other module may use this one.
 */

/** Create an element: el("div", {class: "x", onclick: fn}, child, "text", ...). */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on") && typeof value === "function") node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** Number → short readable text ("1.23", "12.3k", "—" for null). */
export function fmt(value, digits = 2) {
  if (value === null || value === undefined || Number.isNaN(value)) return "—";
  if (typeof value !== "number") return String(value);
  const abs = Math.abs(value);
  if (abs >= 1e6) return (value / 1e6).toFixed(1) + "M";
  if (abs >= 1e4) return (value / 1e3).toFixed(1) + "k";
  if (Number.isInteger(value)) return String(value);
  return value.toFixed(digits);
}

/** Seconds → "12 ms" / "1.2 s". */
export function fmtSeconds(s) {
  if (s === null || s === undefined || Number.isNaN(s)) return "—";
  if (Math.abs(s) < 1) return (s * 1000).toFixed(s < 0.01 ? 2 : 1) + " ms";
  return s.toFixed(2) + " s";
}

/** A value for display next to a control or button (short JSON). */
export function shortJSON(value, max = 80) {
  let text;
  try {
    text = JSON.stringify(value);
  } catch {
    text = String(value);
  }
  if (text === undefined) text = "null";
  return text.length > max ? text.slice(0, max - 1) + "…" : text;
}

/** "code: message" for an {ok:false, error} acknowledgement. */
export function ackError(ack) {
  if (!ack || typeof ack !== "object") return "no answer";
  const err = ack.error || {};
  return err.code ? `${err.code}: ${err.message || ""}` : String(err.message || "failed");
}

/** Structural equality for JSON-ish values (state values, specs). */
export function sameJSON(a, b) {
  if (Object.is(a, b)) return true;
  try {
    return JSON.stringify(a) === JSON.stringify(b);
  } catch {
    return false;
  }
}

/** The p-quantile (0..1) of an array of numbers (copied and sorted). */
export function quantile(values, p) {
  if (!values.length) return null;
  const sorted = Float64Array.from(values).sort();
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))];
}
