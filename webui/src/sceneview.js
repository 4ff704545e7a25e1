/**
 * SceneView: one `*.scene.json` file as a three.js view (docs/scenes.md).
 *
 * An object's `"channel": "arm1/pose"` reads pose of device arm1; `"pose"` reads the scene's
 * `"device"`, or else the device selected in the page's picker (the view's binding,
 * viewdata.js; the view is made anew when it changes).
 *
 * Socket handlers only keep the newest batch per channel; the animation-frame loop copies
 * it into preallocated buffers (BufferGeometry attributes sized to the channel's declared
 * rows, drawn with setDrawRange; a DataTexture updated in place) and renders — only while
 * the tab is visible and only when something changed (new data, camera moved, resize).
 */
import * as THREE from "three";
import { OrbitControls } from "three/examples/jsm/controls/OrbitControls.js";
import { OBJECT_TYPES, vec3, colorOf, PointsObject, PoseObject, ImageObject, staticObject } from "./sceneobjects.js";
import { el } from "./util.js";
import { bindView } from "./viewdata.js";
import { isName } from "./devices.js";

let software = null;

/**
 * True when WebGL is drawn on the CPU (SwiftShader, llvmpipe: headless browsers, VMs, no
 * GPU). There, multisampling costs several times the frame itself, so scenes skip it.
 */
export function softwareGL() {
  if (software !== null) return software;
  software = false;
  try {
    const gl = document.createElement("canvas").getContext("webgl2") || document.createElement("canvas").getContext("webgl");
    if (gl) {
      const info = gl.getExtension("WEBGL_debug_renderer_info");
      const name = String(gl.getParameter(info ? info.UNMASKED_RENDERER_WEBGL : gl.RENDERER));
      software = /swiftshader|llvmpipe|softpipe|software/i.test(name);
      const lose = gl.getExtension("WEBGL_lose_context");
      if (lose) lose.loseContext();
    }
  } catch {
    // no WebGL at all: the renderer below reports it
  }
  return software;
}

export class SceneView {
  /**
   * @param {object} def the VIEW entry from the bridge
   * @param {HTMLElement} panel
   * @param {object} ctx {conn, subs, store, applied(device, channel, t), channelNames(device),
   *   channelInfo(device, channel)}
   */
  constructor(def, panel, ctx) {
    this.def = def;
    this.id = def.id;
    this.kind = "scene";
    this.panel = panel;
    this.ctx = ctx;
    this.error = null;
    this.updates = 0;
    this.binding = def.binding || bindView(def, ctx.store.selected);
    this.sources = new Map(this.binding.sources.map((s) => [s.name, s])); // an object's channel -> {device, channel, key}
    this.live = []; // objects fed by channels (each with its `source`)
    this.latest = new Map(); // key ("device/channel") -> newest Batch not yet drawn
    this.dirty = true;
    this.destroyed = false;
    this.mounted = false;
    this.shown = false;
    this.fence = null; // WebGL2 sync object of the last frame drawn
    this.fenceWaits = 0;
    this.renderer = null;
    this.notices = el("div", { class: "mb-notices" });
    this.errorBox = el("div", { class: "mb-view-error", hidden: true });
    this.holder = el("div", { class: "mb-scene" });
    this.saveButton = el("button", { type: "button", class: "mb-btn mb-save", title: "Save the 3D view as a PNG image" }, "Save PNG");
    this.saveButton.addEventListener("click", () => this.savePNG());
    panel.replaceChildren(this.errorBox, this.notices, this.holder, el("div", { class: "mb-scene-tools" }, this.saveButton));
  }

  rows() {
    return this.live.reduce((n, o) => n + o.rows(), 0);
  }

  showError(message, hint = "See docs/scenes.md for the format; the tab updates when the file is saved.") {
    this.error = message;
    this.errorBox.replaceChildren(
      el("strong", {}, `${this.def.file}: this view cannot be shown`),
      el("pre", {}, message),
      el("p", { class: "mb-hint" }, hint),
    );
    this.errorBox.hidden = false;
    this.holder.hidden = true;
  }

  mount() {
    const def = this.def;
    if (def.error) return this.showError(def.error, def.errorHint);
    const spec = def.spec;
    try {
      this._build(spec);
    } catch (err) {
      this._disposeAll();
      return this.showError((err && err.message) || String(err));
    }
    this.mounted = true;
    this._updateWants();
    this.updateNotices();
  }

  // Subscribed only while visible: frames are latest-wins and a pose needs only the newest
  // record, so nothing is lost by leaving, and a hidden scene costs no bandwidth.
  _updateWants() {
    if (!this.mounted || !this.shown || this.error) {
      this.ctx.subs.removeOwner(this.id);
      return;
    }
    const spec = this.def.spec;
    const rate = typeof spec.rate === "number" ? spec.rate : 30;
    const sources = [...new Set(this.live.map((o) => o.source))];
    this.ctx.subs.setWants(this.id, sources.map(({ device, channel, key }) => ({ device, channel, key, rate, seconds: null, maxPoints: null })));
  }

  _build(spec) {
    const problems = [];
    if (spec.device !== undefined && !isName(spec.device)) {
      problems.push(`"device" must be a device name (letters, digits, _ and -), got ${JSON.stringify(spec.device)}; following the selected device`);
    }
    const objects = spec.objects;
    objects.forEach((o, i) => {
      if (!o || typeof o !== "object" || !OBJECT_TYPES.includes(o.type)) {
        throw new Error(`objects[${i}]: type must be one of ${OBJECT_TYPES.join(", ")}, got ${JSON.stringify(o && o.type)}`);
      }
      if (["points", "pose", "image"].includes(o.type) && typeof o.channel !== "string") {
        throw new Error(`objects[${i}] (${o.type}) needs "channel": the name of a ${o.type === "pose" ? "records" : "frame"} channel`);
      }
    });
    let renderer;
    try {
      renderer = new THREE.WebGLRenderer({ antialias: !softwareGL() });
    } catch (err) {
      throw new Error(`WebGL is not available in this browser, so 3D scenes cannot be drawn (${err.message})`);
    }
    this.renderer = renderer;
    renderer.setPixelRatio(Math.min(2, window.devicePixelRatio || 1));
    this.holder.append(renderer.domElement);
    renderer.domElement.addEventListener("webglcontextlost", (e) => {
      e.preventDefault();
      if (this.destroyed) return;
      this.showError("the WebGL context was lost (too many 3D views open, or the GPU reset); reload the page");
    });
    const scene = new THREE.Scene();
    scene.background = colorOf(spec.background, "#111111");
    scene.add(new THREE.AmbientLight(0xffffff, 0.7));
    const sun = new THREE.DirectionalLight(0xffffff, 1.6);
    sun.position.set(3, 5, 4);
    scene.add(sun);
    const cam = spec.camera || {};
    const camera = new THREE.PerspectiveCamera(cam.fov ?? 50, 1, cam.near ?? 0.01, cam.far ?? 1000);
    camera.up.fromArray(vec3(cam.up, [0, 1, 0]));
    camera.position.fromArray(vec3(cam.position, [3, 3, 3]));
    const controls = new OrbitControls(camera, renderer.domElement);
    controls.target.fromArray(vec3(cam.target, [0, 0, 0]));
    controls.update();
    controls.addEventListener("change", () => { this.dirty = true; });
    this.scene = scene;
    this.camera = camera;
    this.controls = controls;
    this.statics = [];
    for (const o of spec.objects) {
      if (o.type === "grid" || o.type === "axes") {
        const obj = staticObject(o);
        this.statics.push(obj);
        scene.add(obj);
        continue;
      }
      const source = this.sources.get(o.channel);
      const info = this.ctx.channelInfo(source.device, source.channel);
      const live = o.type === "points" ? new PointsObject(o, info) : o.type === "pose" ? new PoseObject(o) : new ImageObject(o, info);
      live.source = source;
      this.live.push(live);
      scene.add(live.object);
    }
    this.problems = problems;
    this.resizer = new ResizeObserver(() => this._resize());
    this.resizer.observe(this.holder);
    this._resize();
  }

  _resize() {
    if (!this.renderer) return;
    const w = Math.max(1, this.holder.clientWidth);
    const h = Math.max(1, this.holder.clientHeight);
    this.renderer.setSize(w, h, false);
    this.camera.aspect = w / h;
    this.camera.updateProjectionMatrix();
    this.dirty = true;
  }

  updateNotices() {
    const items = [...(this.problems || [])];
    for (const { name, device, channel } of new Set(this.live.map((o) => o.source))) {
      const channels = this.ctx.channelNames(device);
      if (channels.length && !channels.includes(channel)) {
        items.push(`channel '${name}' is not a channel of ${device === null ? "the device" : `device '${device}'`} (channels: ${channels.join(", ")})`);
      }
    }
    for (const o of this.live) if (o.problem) items.push(o.problem);
    this.notices.replaceChildren(...items.map((t) => el("div", { class: "mb-notice" }, t)));
  }

  /** Socket handler: keep only the newest batch per channel. */
  onBatch(batch) {
    if (this.error || !this.renderer) return;
    if (!this.live.some((o) => o.source.key === batch.key)) return;
    if (batch.kind === "records" && !batch.msg.count) return;
    this.latest.set(batch.key, batch);
  }

  onState() {}

  /** The tab became visible: subscribe; the canvas may have been resized while hidden. */
  onShow() {
    this.shown = true;
    this._updateWants();
    this._resize();
  }

  onHide() {
    this.shown = false;
    this.latest.clear();
    this._updateWants();
  }

  onChannels() {
    this.updateNotices();
  }

  /** `device` restarted, or its replay's position jumped: drop what it sent (undefined: everything). */
  reset(device) {
    for (const batch of [...this.latest.values()]) {
      if (device === undefined || batch.device === device) this.latest.delete(batch.key);
    }
  }

  /** Animation frame: upload the newest data, render if anything changed; nothing while hidden. */
  frame(visible) {
    if (!visible || this.error || !this.renderer || this.destroyed) return;
    if (!this._gpuIdle()) return; // the newest data waits in this.latest; nothing queues up
    if (this.latest.size) {
      let problemsChanged = false;
      for (const [key, batch] of this.latest) {
        for (const o of this.live) {
          if (o.source.key !== key) continue;
          try {
            o.update(batch);
            if (o.problem) { o.problem = null; problemsChanged = true; }
          } catch (err) {
            if (o.problem !== err.message) { o.problem = err.message; problemsChanged = true; }
          }
        }
        this.ctx.applied(batch.device, batch.channel, batch.t);
      }
      this.latest.clear();
      this.updates++;
      this.dirty = true;
      if (problemsChanged) this.updateNotices();
    }
    if (this.controls.enableDamping) this.controls.update();
    if (!this.dirty) return;
    this.dirty = false;
    this.renderer.render(this.scene, this.camera);
    const gl = this.renderer.getContext();
    if (typeof gl.fenceSync === "function") {
      this.fence = gl.fenceSync(gl.SYNC_GPU_COMMANDS_COMPLETE, 0);
      gl.flush();
    }
  }

  /** Download the 3D view as NAME.png: drawn afresh and read in the same task, as WebGL
   * keeps no drawing buffer between frames. */
  savePNG() {
    if (!this.renderer || this.error) return null;
    this.renderer.render(this.scene, this.camera);
    const url = this.renderer.domElement.toDataURL("image/png");
    const link = el("a", { href: url, download: `${this.def.id}.png` });
    link.click();
    return url;
  }

  /**
   * Draw now and copy the canvas into an ImageData (for tests: the drawing buffer is not
   * preserved, so it can only be read in the task that drew it). Null before the scene is built.
   */
  pixels() {
    if (!this.renderer) return null;
    this.renderer.render(this.scene, this.camera);
    const src = this.renderer.domElement;
    if (!src.width || !src.height) return null;
    const c = document.createElement("canvas");
    c.width = src.width;
    c.height = src.height;
    const g = c.getContext("2d", { willReadFrequently: true });
    g.drawImage(src, 0, 0);
    return g.getImageData(0, 0, c.width, c.height);
  }

  // True once the GPU has finished the previous frame. Without this, uploads and draws queue
  // up in the GPU process faster than a slow GPU (or software rendering) drains them, and
  // everything the page shows — and receives — falls behind by up to a second.
  _gpuIdle() {
    if (!this.fence) return true;
    const gl = this.renderer.getContext();
    if (gl.getSyncParameter(this.fence, gl.SYNC_STATUS) !== gl.SIGNALED) {
      if (++this.fenceWaits < 30) return false;
      // never wait more than ~30 frames on a fence (a lost context never signals)
    }
    gl.deleteSync(this.fence);
    this.fence = null;
    this.fenceWaits = 0;
    return true;
  }

  _disposeAll() {
    if (this.fence && this.renderer) this.renderer.getContext().deleteSync(this.fence);
    this.fence = null;
    for (const o of this.live) o.dispose();
    this.live = [];
    if (this.resizer) this.resizer.disconnect();
    if (this.controls) this.controls.dispose();
    if (this.renderer) {
      this.renderer.dispose();
      this.renderer.forceContextLoss();
      this.renderer.domElement.remove();
    }
    this.renderer = null;
  }

  destroy() {
    this.destroyed = true;
    this.ctx.subs.removeOwner(this.id);
    this._disposeAll();
    this.panel.replaceChildren();
  }
}
