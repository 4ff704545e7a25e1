/**
 * Failed `data.url` loads, reported instead of swallowed.
 *
 * Vega fetches a dataset's `url` itself and, when that fails, logs a warning and goes on with
 * an empty dataset: a blank chart. Two documented vega-embed options catch both ways it fails:
 * - `loader`: a Vega loader (vega-loader's `load(uri, options)`) whose `load` reports a fetch
 *   that fails (HTTP error, no response, a URL Vega refuses) before re-throwing it;
 * - `logger`: a Vega logger (`level/error/warn/info/debug`) that reports the "Data ingestion
 *   failed" warning Vega logs when a loaded file cannot be parsed in its format.
 * Both call `report(message)` with one readable line saying which URL and what failed.
 *
 * Pure: no DOM and no Vega import (the base loader and the console are passed in).
 */

const LEVELS = { error: 1, warn: 2, info: 3, debug: 4 }; // vega.Error … vega.Debug

/** The URL as the browser requests it: relative ones resolved against `baseURI` (if any). */
export function resolveURL(url, baseURI) {
  try {
    return baseURI ? new URL(String(url), baseURI).href : String(url);
  } catch {
    return String(url);
  }
}

/** Why a load failed, in words: vega-loader's errors are terse ("404NOT FOUND", "Failed to fetch"). */
export function loadReason(err) {
  const message = String((err && err.message) || err || "unknown error");
  const http = /^(\d{3})\s*(.*)$/.exec(message);
  if (http) return `HTTP ${http[1]}${http[2] ? " " + http[2] : ""}`;
  if (err && err.name === "TypeError" && /fetch|network|load failed/i.test(message)) {
    return `no response (the server is unreachable, refused the connection, or does not allow this page's origin: CORS) — ${message}`;
  }
  return message;
}

/** The message shown in the tab for a URL that could not be fetched. */
export function loadFailure(url, err, baseURI) {
  const href = resolveURL(url, baseURI);
  const where = href === String(url) ? `'${url}'` : `'${url}' (${href})`;
  return `data.url ${where} could not be loaded: ${loadReason(err)}`;
}

/** The message shown in the tab for a URL that was fetched but could not be parsed. */
export function parseFailure(url, err, baseURI) {
  const href = resolveURL(url, baseURI);
  const where = href === String(url) ? `'${url}'` : `'${url}' (${href})`;
  const reason = String((err && err.message) || err || "unknown error");
  return `data.url ${where} was loaded but could not be read as data (check its "format"): ${reason}`;
}

/**
 * A Vega loader that behaves like `base` and calls `report(message)` when a load fails
 * (then re-throws, so Vega handles the failure as before). Its other methods (`sanitize`,
 * `http`, `file`, options) are `base`'s.
 */
export function reportingLoader(base, report, baseURI) {
  const wrapped = Object.create(base);
  wrapped.load = async function load(uri, options) {
    try {
      return await base.load.call(this, uri, options);
    } catch (err) {
      report(loadFailure(uri, err, baseURI));
      throw err;
    }
  };
  return wrapped;
}

/**
 * A Vega logger (the interface vega-embed's `logger` option takes) that prints to `out`
 * (the console) at `level` and reports a dataset that failed to parse, whatever the level.
 */
export function reportingLogger(report, level = LEVELS.warn, baseURI, out = console) {
  let current = level;
  const emit = (method, lvl, args) => {
    if (current >= lvl) out[method](...args);
  };
  return {
    level(value) {
      if (!arguments.length) return current;
      current = +value;
      return this;
    },
    error(...args) {
      emit("error", LEVELS.error, args);
      return this;
    },
    warn(...args) {
      // vega-dataflow: df.warn('Data ingestion failed', url, err) when parsing a loaded file fails
      if (args[0] === "Data ingestion failed") report(parseFailure(args[1], args[2], baseURI));
      emit("warn", LEVELS.warn, args);
      return this;
    },
    info(...args) {
      emit("log", LEVELS.info, args);
      return this;
    },
    debug(...args) {
      emit("log", LEVELS.debug, args);
      return this;
    },
  };
}
