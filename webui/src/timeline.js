/**
 * TimelineBar: the replay controls at the bottom of the page, shown while the device selected
 * in the page's picker is a recording played back by `monbridge replay` (its state has
 * `replay_duration`; the commands
 * and state keys are in docs/recording.md, "Commands and state keys").
 *
 * It shows the file name, the position and duration (m:ss.s), a slider to seek, play/pause,
 * a speed selector and whether the replay loops. Commands go through Connection.command, as
 * every control of the page does; an error is shown as text in the bar until the next
 * success. A viewer (no operator token) sees the controls disabled, with the reason as their
 * tooltip.
 *
 * The slider seeks when it is let go (`change`), not on every `input`. One seek, and one speed
 * change, is on its way at a time: a value chosen meanwhile goes out when the answer comes
 * (LatestOnly). The position from the state does not move the handle while it is held (pointer
 * down, or moved and not yet let go), nor until SETTLE_MS after the seek's answer, so the
 * position the device reports before it took the seek never yanks the handle back (SeekControl).
 *
 * When `replay_epoch` changes — the position jumped — main.js clears that device's data in the
 * charts (and subscribes again, so no row from before the jump comes after it), for every
 * device, shown or not (`replayJumped`). The pure
 * parts (formatting, the jump, LatestOnly, SeekControl) have unit tests in
 * webui/test/timeline.test.mjs. Everything from the device is inserted as text.
 */
import { el, ackError, sameJSON } from "./util.js";

export const SPEEDS = [0.1, 0.25, 0.5, 1, 2, 5, 10, 20];
export const SETTLE_MS = 300; // after a seek's answer, before the state may move the handle again
const VIEWER_REASON = "view only: open the URL with ?token= to control the replay";
const TITLES = { play: "pause or play the replay", slider: "drag to seek", speed: "times the recorded pace" };

/** Seconds → "m:ss.s" (minutes not wrapped into hours); "—" for no number. */
export function fmtClock(seconds) {
  if (typeof seconds !== "number" || !Number.isFinite(seconds)) return "—";
  const tenths = Math.round(Math.max(0, seconds) * 10);
  const minutes = Math.floor(tenths / 600);
  const rest = tenths - minutes * 600;
  return `${minutes}:${String(Math.floor(rest / 10)).padStart(2, "0")}.${rest % 10}`;
}

/** True when the device is a replay: its state has a numeric `replay_duration`. */
export function isReplay(state) {
  return !!state && typeof state.replay_duration === "number" && Number.isFinite(state.replay_duration);
}

/**
 * Did the position jump? `epoch`: replay_epoch of the previous state (undefined when it was
 * no replay's), `state`: the state now.
 */
export function replayJumped(epoch, state) {
  return epoch !== undefined && isReplay(state) && state.replay_epoch !== epoch;
}

/** The speeds to offer: SPEEDS, plus the current speed when it is another one (--speed 3). */
export function speedChoices(current) {
  if (typeof current !== "number" || !Number.isFinite(current) || SPEEDS.includes(current)) return SPEEDS;
  return [...SPEEDS, current].sort((a, b) => a - b);
}

/**
 * Sends one command at a time with the newest value: a value set while one is on its way
 * waits, replaced by any newer one, and goes out when the answer comes (a slider moved
 * quickly costs one command per round trip, and the last value always goes out).
 */
export class LatestOnly {
  /**
   * @param {(value: any) => Promise<object>} send resolves with the command's answer
   * @param {(ack: object, value: any) => void} onAnswer
   */
  constructor(send, onAnswer) {
    this.send = send;
    this.onAnswer = onAnswer;
    this.busy = false;
    this.next = null; // {value} waiting for the answer
  }

  set(value) {
    if (this.busy) this.next = { value };
    else this._send(value);
  }

  _send(value) {
    this.busy = true;
    Promise.resolve()
      .then(() => this.send(value))
      .catch((err) => ({ ok: false, error: { message: String((err && err.message) || err) } }))
      .then((ack) => {
        this.busy = false;
        const next = this.next;
        this.next = null;
        this.onAnswer(ack, value);
        if (next && !sameJSON(next.value, value)) this._send(next.value);
      });
  }
}

/**
 * The seek slider's logic, without the DOM: when the state may move the handle, and what
 * position to show meanwhile.
 */
export class SeekControl {
  /**
   * @param {(t: number) => Promise<object>} send sends `seek` with `t`
   * @param {(ack: object) => void} onAnswer
   * @param {() => number} now a clock in ms
   */
  constructor(send, onAnswer, now = () => performance.now(), settleMs = SETTLE_MS) {
    this.now = now;
    this.settleMs = settleMs;
    this.pressed = false; // pointer down on the slider
    this.dragging = false; // moved (input) and not let go (change) yet
    this.value = null; // the position the user chose last
    this.answeredAt = -Infinity;
    this.sender = new LatestOnly(send, (ack) => {
      this.answeredAt = this.now();
      onAnswer(ack);
    });
  }

  press() {
    this.pressed = true;
    this.value = null;
  }

  lift() {
    this.pressed = false;
  }

  /** The handle moved (`input`): shown, not sent. */
  drag(t) {
    this.dragging = true;
    this.value = t;
  }

  /** The handle was let go (`change`): seek there. */
  commit(t) {
    this.dragging = false;
    this.value = t;
    this.sender.set(t);
  }

  /** True while the state must leave the handle alone. */
  held() {
    return this.pressed || this.dragging || this.sender.busy || this.now() - this.answeredAt < this.settleMs;
  }

  /** The position to show: the one chosen while held, else the state's. */
  shown(position) {
    return this.held() && this.value !== null ? this.value : position;
  }
}

export class TimelineBar {
  /**
   * @param {HTMLElement} node the bar's (empty) element; hidden until the device is a replay
   * @param {(name: string, args: object) => Promise<object>} send Connection.command to the selected device
   */
  constructor(node, send) {
    this.node = node;
    this.send = send;
    this.state = null; // the device's state while it is a replay
    this.epoch = undefined; // replay_epoch of the last update, for replayJumped()
    this.viewer = false;
    this.playBusy = false;
    this.timer = null;
    this.speedKey = "";
    this.file = el("span", { class: "mb-tl-file" });
    this.play = el("button", { type: "button", class: "mb-btn mb-tl-play" }, "▶ Play");
    this.clock = el("span", { class: "mb-tl-clock" });
    this.slider = el("input", { type: "range", class: "mb-tl-slider", min: "0", max: "0", step: "any", value: "0",
      "aria-label": "replay position" });
    this.speed = el("select", { class: "mb-tl-speed", "aria-label": "replay speed" });
    this.loop = el("span", { class: "mb-tl-loop" });
    this.error = el("span", { class: "mb-tl-error mb-error", role: "status" });
    node.replaceChildren(el("span", { class: "mb-tl-label" }, "replay"), this.file, this.play, this.clock,
      this.slider, el("label", { class: "mb-tl-speedbox" }, "speed ", this.speed), this.loop, this.error);
    node.hidden = true;

    this.seek = new SeekControl((t) => send("seek", { t }), (ack) => this._answered("seek", ack));
    this.speeds = new LatestOnly((value) => send("speed", { value }), (ack) => this._answered("speed", ack));
    this.slider.addEventListener("pointerdown", () => this.seek.press());
    for (const type of ["pointerup", "pointercancel"]) {
      window.addEventListener(type, () => {
        if (!this.seek.pressed) return;
        this.seek.lift();
        this.render();
      });
    }
    this.slider.addEventListener("input", () => {
      this.seek.drag(Number(this.slider.value));
      this.render();
    });
    this.slider.addEventListener("change", () => {
      this.seek.commit(Number(this.slider.value));
      this.render();
    });
    this.speed.addEventListener("change", () => this.speeds.set(Number(this.speed.value)));
    this.play.addEventListener("click", () => this._togglePlay());
    this.setViewer(false);
  }

  /**
   * The device's state changed (`state`: all of it, as the page knows it): show or hide the
   * bar. Returns true when the position jumped (replay_epoch changed).
   */
  update(state) {
    if (!isReplay(state)) {
      this.node.hidden = true;
      this.state = null;
      this.epoch = undefined;
      return false;
    }
    const jumped = replayJumped(this.epoch, state);
    this.epoch = state.replay_epoch;
    this.state = state;
    this.node.hidden = false;
    this.render();
    return jumped;
  }

  /** Another device was chosen: show its state (`state`), nothing of the previous one's replay. */
  select(state) {
    this.epoch = undefined;
    this.error.textContent = "";
    this.update(state);
  }

  /** A viewer may not send commands: disable the controls and say why. */
  setViewer(viewer) {
    this.viewer = viewer;
    this.node.classList.toggle("mb-tl-viewonly", viewer);
    this.node.title = viewer ? VIEWER_REASON : "";
    this.slider.disabled = this.speed.disabled = viewer;
    this.slider.title = viewer ? VIEWER_REASON : TITLES.slider;
    this.speed.title = viewer ? VIEWER_REASON : TITLES.speed;
    this.play.title = viewer ? VIEWER_REASON : TITLES.play;
    this.render();
  }

  /** What the bar shows, for the test hooks (null while hidden). */
  snapshot() {
    const s = this.state;
    if (!s) return null;
    return { file: s.replay_file ?? null, position: s.replay_position ?? null, duration: s.replay_duration,
      playing: s.replay_playing === true, speed: s.replay_speed ?? null, loop: s.replay_loop === true,
      epoch: s.replay_epoch ?? null, held: this.seek.held(), error: this.error.textContent || null };
  }

  render() {
    this.play.disabled = this.viewer || this.playBusy;
    const s = this.state;
    if (!s) return;
    const duration = Math.max(0, s.replay_duration);
    const position = typeof s.replay_position === "number" ? Math.min(Math.max(0, s.replay_position), duration) : 0;
    const file = s.replay_file === undefined || s.replay_file === null ? "" : String(s.replay_file);
    this.file.textContent = file;
    this.file.title = file;
    this.slider.max = String(duration);
    const held = this.seek.held();
    if (!held) this.slider.value = String(position);
    const shown = this.seek.shown(position);
    this.clock.textContent = `${fmtClock(shown)} / ${fmtClock(duration)}`;
    this.slider.setAttribute("aria-valuetext", fmtClock(shown));
    this.play.textContent = s.replay_playing === true ? "❚❚ Pause" : "▶ Play";
    if (!this.speeds.busy) this._renderSpeed(s.replay_speed);
    const loop = s.replay_loop === true;
    this.loop.textContent = loop ? "⟳ loops" : "plays once";
    this.loop.classList.toggle("mb-tl-on", loop);
    this.loop.title = loop ? "started with --loop: at the end it plays again from the start"
      : "stops at the end (start the replay with --loop to repeat)";
    if (held) this._renderLater();
  }

  _renderSpeed(current) {
    const choices = speedChoices(current);
    const key = choices.join(",");
    if (key !== this.speedKey) {
      this.speedKey = key;
      this.speed.replaceChildren(...choices.map((v) => el("option", { value: String(v) }, `${v}×`)));
    }
    if (typeof current === "number") this.speed.value = String(current);
  }

  // While the handle is held, look again shortly: the hold ends without any event (SETTLE_MS).
  _renderLater() {
    if (this.timer !== null) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.render();
    }, SETTLE_MS / 2);
  }

  async _togglePlay() {
    const name = this.state && this.state.replay_playing === true ? "pause" : "resume";
    this.playBusy = true;
    this.render();
    const ack = await this.send(name, {});
    this.playBusy = false;
    this._answered(name, ack);
  }

  _answered(name, ack) {
    if (ack && ack.ok) {
      this.error.textContent = "";
    } else {
      this.error.textContent = `${name}: ${ackError(ack)}`;
    }
    this.render();
  }
}
