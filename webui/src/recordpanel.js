/**
 * RecordCard: the Status tab's "Recording" card — what the bridge records of the device
 * selected in the page's picker (file, size,
 * duration, records/s, missed per channel), the last recording that ended, and, for operators
 * only, a Record / Stop button that POSTs api/record (naming that device) with the page's token.
 *
 * The status comes from GET api/stats (its `recording` member, which StatusPanel polls once a
 * second while the tab is visible) and from each POST's answer. File names and messages come
 * from the bridge and are set as text through el(), never as HTML. Imports util.js only; the
 * row builders are pure (webui/test/recordpanel.test.mjs).
 */
import { ackError, el, fmt, fmtSeconds } from "./util.js";
import { withDevice } from "./devices.js";

/** Bytes → "812 B", "45.2 kB", "12.3 MB", "1.20 GB" (decimal, as `monbridge record` prints). */
export function fmtBytes(n) {
  if (typeof n !== "number" || !Number.isFinite(n)) return "—";
  if (n < 1e3) return `${n} B`;
  if (n < 1e6) return `${(n / 1e3).toFixed(1)} kB`;
  if (n < 1e9) return `${(n / 1e6).toFixed(1)} MB`;
  return `${(n / 1e9).toFixed(2)} GB`;
}

/** {channel: n} → "none", or "12 (joints 10, cloud 2)" naming only the channels that missed. */
export function fmtMissed(missed) {
  const lost = Object.entries(missed && typeof missed === "object" ? missed : {}).filter(([, n]) => typeof n === "number" && n > 0);
  if (!lost.length) return "none";
  const total = lost.reduce((sum, [, n]) => sum + n, 0);
  return `${fmt(total)} (${lost.map(([c, n]) => `${c} ${fmt(n)}`).join(", ")})`;
}

/**
 * [key, label, text] rows for a recording in progress (the `recording` status); `named`: with
 * the device it records (a bridge serving several devices records one of them at a time).
 */
export function recordingRows(s, named = false) {
  return [
    ...(named ? [["record-device", "device", String(s.device ?? "—")]] : []),
    ["record-file", "file", String(s.file ?? "—")],
    ["record-bytes", "size", fmtBytes(s.bytes)],
    ["record-seconds", "duration", fmtSeconds(s.seconds)],
    ["record-rate", "records/s", fmt(s.records_per_s, 1)],
    ["record-missed", "missed", fmtMissed(s.missed)],
  ];
}

/** [key, label, text] rows for the last recording that ended (`last`). */
export function lastRows(last) {
  return [
    ["last-file", "file", String(last.file ?? "—")],
    ["last-bytes", "size", fmtBytes(last.bytes)],
    ["last-seconds", "duration", fmtSeconds(last.seconds)],
    ["last-missed", "missed", fmtMissed(last.missed)],
    ["last-reason", last.ok ? "ended" : "failed", String(last.reason ?? "")],
  ];
}

/**
 * The body of POST api/record: start `device` (with the optional file name), or stop. The
 * bridge records one device at a time, so a stop names none.
 */
export function recordBody(recording, name, device) {
  if (recording) return { action: "stop" };
  const trimmed = String(name ?? "").trim();
  return withDevice(trimmed ? { action: "start", name: trimmed } : { action: "start" }, device);
}

function rowsList(rows) {
  return el("dl", { class: "mb-dl" }, rows.flatMap(([key, label, text]) => [el("dt", {}, label), el("dd", { "data-k": key }, text)]));
}

export class RecordCard {
  /** @param {object} ctx {conn, store}: the page's token (conn.token), role (store.role) and device (store.selected) */
  constructor(ctx) {
    this.ctx = ctx;
    this.status = null;
    this.answeredAt = -Infinity; // performance.now() when the last POST was answered
    this.busy = false;
    this.error = "";
    this.heading = el("h3", {}, "Recording");
    this.button = el("button", { type: "button", class: "mb-btn mb-record-btn", "data-k": "record-button", onclick: () => this.toggle() }, "Record");
    this.name = el("input", { type: "text", class: "mb-record-name", "data-k": "record-name", maxlength: 100, placeholder: "file name (optional)", "aria-label": "file name of the next recording" });
    this.name.addEventListener("keydown", (e) => { if (e.key === "Enter" && !this.busy) this.toggle(); });
    this.controls = el("div", { class: "mb-record-controls" }, this.button, this.name);
    this.message = el("p", { class: "mb-error", "data-k": "record-error" });
    this.now = el("div", { "data-k": "record-now" });
    this.last = el("div", { "data-k": "record-last" });
    this.section = el("section", { class: "mb-card mb-record", "data-k": "record" }, this.heading, this.message, this.now, this.last);
    this.render();
  }

  /** A status from GET api/stats (`recording`), asked for at `askedAt` (performance.now()):
   * one asked before the last POST was answered is older than that answer, and is ignored. */
  update(status, askedAt = Infinity) {
    if (status && typeof status === "object" && askedAt >= this.answeredAt) this.status = status;
    this.render();
  }

  /** Another device was chosen: forget the previous one's status and error. */
  select() {
    this.status = null;
    this.error = "";
    this.answeredAt = -Infinity;
    this.render();
  }

  /** Record when idle, Stop when recording: POST api/record; its answer is the new status. */
  async toggle() {
    const recording = !!(this.status && this.status.recording);
    const device = this.ctx.store.selected;
    const body = recordBody(recording, this.name.value, device);
    const token = this.ctx.conn.token;
    this.busy = true;
    this.error = "";
    this.render();
    try {
      const res = await fetch("api/record", {
        method: "POST", cache: "no-store", body: JSON.stringify(body),
        headers: { "Content-Type": "application/json", ...(token ? { Authorization: `Bearer ${token}` } : {}) },
      });
      let answer = null;
      try {
        answer = await res.json();
      } catch {
        answer = null;
      }
      // an answer for the device shown before is not this one's status
      if (device === this.ctx.store.selected) this._answered(answer, res.status, recording);
    } catch (err) {
      this.error = `POST api/record: ${(err && err.message) || err}`;
    }
    this.busy = false;
    this.answeredAt = performance.now();
    this.render();
  }

  _answered(answer, httpStatus, wasRecording) {
    if (answer && answer.ok === true) {
      this.status = answer;
      if (!wasRecording) this.name.value = "";
    } else {
      this.error = answer ? ackError(answer) : `POST api/record: HTTP ${httpStatus}`;
    }
  }

  render() {
    const s = this.status;
    const operator = this.ctx.store.role === "operator";
    // only operators may record: a viewer's page has no button at all
    if (operator && this.controls.parentNode !== this.section) this.heading.after(this.controls);
    if (!operator && this.controls.parentNode) this.controls.remove();
    const recording = !!(s && s.recording);
    this.button.textContent = this.busy ? (recording ? "Stopping…" : "Starting…") : recording ? "Stop" : "Record";
    this.button.disabled = this.busy;
    this.button.classList.toggle("mb-recording", recording);
    this.name.hidden = recording;
    this.message.textContent = this.error;
    this.message.hidden = !this.error;
    if (!s) {
      this.now.replaceChildren(el("p", { class: "mb-muted" }, "—"));
    } else if (recording) {
      this.now.replaceChildren(
        el("p", { "data-k": "record-state" }, el("span", { class: "mb-dot mb-rec" }), s.stopping ? " stopping…" : " recording"),
        rowsList(recordingRows(s, this.ctx.store.multi)));
      this.now.title = String(s.path || "");
    } else {
      this.now.replaceChildren(el("p", { class: "mb-muted", "data-k": "record-state" }, `Not recording. Files go to ${s.dir || "the bridge's recordings directory"}.`));
      this.now.title = "";
    }
    const last = s && s.last;
    this.last.replaceChildren(...(last ? [el("h4", {}, "Last recording"), rowsList(lastRows(last))] : []));
    this.last.title = last ? String(last.path || "") : "";
    this.last.classList.toggle("mb-error", !!(last && !last.ok));
  }
}
