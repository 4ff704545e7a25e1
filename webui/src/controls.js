/**
 * Controls and buttons of a Vega-Lite view (usermeta.controls / usermeta.buttons, docs/specs.md).
 *
 * ControlBinding ties one bound Vega signal to a device command and a state key:
 * - moving the control sends the command, at most one in flight; when its ack arrives the
 *   latest value is sent if it changed meanwhile (a dragged slider costs one command per
 *   round trip, and the last value always goes out);
 * - a change of the state key (from this page, another page or the device) sets the signal
 *   without sending anything back. While the user is moving the control, or a command of
 *   ours is in flight, state is held back and reconciled shortly after, so the device's
 *   echo of an older value never yanks the slider from under the pointer;
 * - a command error is shown next to the control and cleared by the next success.
 */
import { el, ackError, sameJSON, shortJSON } from "./util.js";

const SETTLE_MS = 300; // after the last local input, before state may move the control again

export class ControlBinding {
  /**
   * @param {object} view a Vega View
   * @param {string} param signal (Vega-Lite param) name
   * @param {{command: string, arg?: string, state?: string}} cfg
   * @param {(name: string, args: object) => Promise<object>} send resolves with the ack
   * @param {HTMLElement} statusEl where errors go
   */
  constructor(view, param, cfg, send, statusEl) {
    this.view = view;
    this.param = param;
    this.command = cfg.command;
    this.arg = cfg.arg || "value";
    this.stateKey = cfg.state || null;
    this.send = send;
    this.statusEl = statusEl;
    this.inFlight = false;
    this.latest = undefined; // newest value the user chose
    this.sent = undefined; // value of the command in flight / last sent
    this.lastInput = 0;
    this.stateValue = undefined; // newest value of the state key
    this.hasState = false;
    this.fromState = undefined; // value we set on the signal ourselves: its echo is not sent
    this.timer = null;
    this.sends = 0;
    this.destroyed = false;
    this._onSignal = (_name, value) => this.input(value);
    view.addSignalListener(param, this._onSignal);
  }

  /** The signal changed (user input, or our own set from state). */
  input(value) {
    if (this.fromState !== undefined && sameJSON(value, this.fromState)) {
      this.fromState = undefined;
      return;
    }
    this.fromState = undefined;
    this.latest = value;
    this.lastInput = performance.now();
    if (!this.inFlight) this._send(value);
  }

  _send(value) {
    this.inFlight = true;
    this.sent = value;
    this.sends++;
    this.send(this.command, { [this.arg]: value }).then((ack) => {
      if (this.destroyed) return;
      this.inFlight = false;
      this._showAck(ack);
      if (!sameJSON(this.latest, this.sent)) this._send(this.latest);
      else this._scheduleReconcile();
    });
  }

  _showAck(ack) {
    if (ack && ack.ok) {
      this.statusEl.textContent = "";
      this.statusEl.className = "mb-ctl-status";
    } else {
      this.statusEl.textContent = `${this.command}: ${ackError(ack)}`;
      this.statusEl.className = "mb-ctl-status mb-error";
    }
  }

  _busy() {
    return this.inFlight || performance.now() - this.lastInput < SETTLE_MS;
  }

  /** New state values (full or changed keys). */
  onState(values) {
    if (!this.stateKey || !(this.stateKey in values)) return;
    this.stateValue = values[this.stateKey];
    this.hasState = true;
    if (this._busy()) this._scheduleReconcile();
    else this._apply(this.stateValue);
  }

  _scheduleReconcile() {
    if (this.timer !== null || !this.hasState) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      if (this.destroyed) return;
      if (this._busy()) this._scheduleReconcile();
      else this._apply(this.stateValue);
    }, SETTLE_MS);
  }

  _apply(value) {
    let current;
    try {
      current = this.view.signal(this.param);
    } catch {
      return;
    }
    if (sameJSON(current, value)) return;
    this.fromState = value;
    this.view.signal(this.param, value);
    this.view.runAsync().catch((err) => console.error("monbridge: set control", err));
  }

  destroy() {
    this.destroyed = true;
    if (this.timer !== null) clearTimeout(this.timer);
    try {
      this.view.removeSignalListener(this.param, this._onSignal);
    } catch {
      /* the view is gone already */
    }
  }
}

/** Buttons for commands (usermeta.buttons): each shows its result or error beside it. */
export class ButtonBar {
  /**
   * @param {Array<{command: string, label?: string, args?: object}>} buttons
   * @param {(name: string, args: object) => Promise<object>} send
   */
  constructor(buttons, send) {
    this.node = el("div", { class: "mb-buttons" });
    for (const b of buttons) {
      const result = el("span", { class: "mb-btn-result" });
      const button = el("button", { type: "button", class: "mb-btn", title: b.command }, b.label || b.command);
      button.addEventListener("click", async () => {
        button.disabled = true;
        result.className = "mb-btn-result";
        result.textContent = "…";
        const ack = await send(b.command, b.args || {});
        button.disabled = false;
        if (ack.ok) {
          result.textContent = ack.result === null || ack.result === undefined ? "✓ done" : `✓ ${shortJSON(ack.result)}`;
        } else {
          result.className = "mb-btn-result mb-error";
          result.textContent = ackError(ack);
        }
      });
      this.node.append(el("span", { class: "mb-btn-group" }, button, result));
    }
  }
}
