/**
 * The objects a scene can hold (docs/scenes.md): grid, axes, points, pose, image.
 *
 * Each live object owns its three.js buffers, allocated once, and `update(batch)` copies the
 * newest data into them in place; `rows()` says how much it shows; `dispose()` frees GPU memory.
 * Called only from the animation-frame loop (SceneView.frame), never from socket handlers.
 */
import * as THREE from "three";
import { decodeFrame, shortDtype } from "./decode.js";

export const OBJECT_TYPES = ["grid", "axes", "points", "pose", "image"];
const DEG = Math.PI / 180;

export function vec3(value, fallback) {
  return Array.isArray(value) && value.length === 3 && value.every((v) => typeof v === "number") ? value : fallback;
}

export function colorOf(value, fallback) {
  try {
    return new THREE.Color(value ?? fallback);
  } catch {
    return new THREE.Color(fallback);
  }
}

/** Points from a frame channel: N×3 xyz, or N×6 xyz + rgb in 0..1. */
export class PointsObject {
  constructor(spec, channelInfo) {
    this.channel = spec.channel;
    this.geometry = new THREE.BufferGeometry();
    this.material = new THREE.PointsMaterial({ size: spec.size ?? 0.02, color: colorOf(spec.color, "#44aaff"), sizeAttenuation: spec.sizeAttenuation !== false });
    this.object = new THREE.Points(this.geometry, this.material);
    this.object.frustumCulled = false; // the bounding sphere would be stale as points move
    this.capacity = 0;
    this.hasColor = false;
    this.count = 0;
    const shape = channelInfo && channelInfo.shape;
    if (Array.isArray(shape) && shape.length === 2) this._allocate(shape[0], shape[1] >= 6);
  }

  _allocate(rows, withColor) {
    this.capacity = rows;
    this.geometry.setAttribute("position", new THREE.BufferAttribute(new Float32Array(rows * 3), 3).setUsage(THREE.DynamicDrawUsage));
    if (withColor) {
      this.geometry.setAttribute("color", new THREE.BufferAttribute(new Float32Array(rows * 3), 3).setUsage(THREE.DynamicDrawUsage));
    } else {
      this.geometry.deleteAttribute("color");
    }
    if (this.hasColor !== withColor) {
      this.hasColor = withColor;
      this.material.vertexColors = withColor;
      if (withColor) this.material.color.set("#ffffff");
      this.material.needsUpdate = true;
    }
    this.geometry.setDrawRange(0, 0);
  }

  /** Copy the newest frame into the preallocated attributes. Returns rows drawn. */
  update(batch) {
    const msg = batch.msg;
    const { values, shape } = decodeFrame(msg);
    const cols = shape.length === 2 ? shape[1] : 3;
    if (cols < 3) throw new Error(`points: channel '${this.channel}' has ${cols} columns; need N×3 (xyz) or N×6 (xyz rgb)`);
    const n = Math.floor(values.length / cols);
    const withColor = cols >= 6;
    if (n > this.capacity || withColor !== this.hasColor) this._allocate(Math.max(n, this.capacity), withColor);
    const pos = this.geometry.getAttribute("position");
    const p = pos.array;
    if (cols === 3 && values instanceof Float32Array) {
      p.set(values.subarray(0, n * 3));
    } else {
      for (let i = 0, j = 0; i < n; i++, j += cols) {
        p[i * 3] = values[j]; p[i * 3 + 1] = values[j + 1]; p[i * 3 + 2] = values[j + 2];
      }
    }
    pos.addUpdateRange(0, n * 3);
    pos.needsUpdate = true;
    if (withColor) {
      const col = this.geometry.getAttribute("color");
      const c = col.array;
      for (let i = 0, j = 0; i < n; i++, j += cols) {
        c[i * 3] = values[j + 3]; c[i * 3 + 1] = values[j + 4]; c[i * 3 + 2] = values[j + 5];
      }
      col.addUpdateRange(0, n * 3);
      col.needsUpdate = true;
    }
    this.geometry.setDrawRange(0, n);
    this.count = n;
    return n;
  }

  rows() {
    return this.count;
  }

  dispose() {
    this.geometry.dispose();
    this.material.dispose();
  }
}

/** A box, sphere or cylinder placed by the newest record of a records channel. */
export class PoseObject {
  constructor(spec) {
    this.channel = spec.channel;
    const size = Array.isArray(spec.size) ? spec.size : typeof spec.size === "number" ? [spec.size] : [];
    const shape = spec.shape || "box";
    let geometry;
    if (shape === "box") geometry = new THREE.BoxGeometry(size[0] ?? 0.2, size[1] ?? size[0] ?? 0.2, size[2] ?? size[0] ?? 0.2);
    else if (shape === "sphere") geometry = new THREE.SphereGeometry(size[0] ?? 0.1, 24, 16);
    else if (shape === "cylinder") geometry = new THREE.CylinderGeometry(size[0] ?? 0.1, size[0] ?? 0.1, size[1] ?? 0.2, 24);
    else throw new Error(`pose: shape must be "box", "sphere" or "cylinder", got ${JSON.stringify(shape)}`);
    this.geometry = geometry;
    this.material = new THREE.MeshStandardMaterial({ color: colorOf(spec.color, "#ffaa33"), roughness: 0.6, metalness: 0.1 });
    this.object = new THREE.Mesh(geometry, this.material);
    if (spec.axes) this.object.add(new THREE.AxesHelper(typeof spec.axes === "number" ? spec.axes : 0.3));
    this.position = spec.position ?? ["x", "y", "z"];
    this.quaternion = spec.quaternion ?? ["qx", "qy", "qz", "qw"];
    this.object.visible = false; // until the first record
    this.seen = 0;
  }

  static pick(row, names, n) {
    if (typeof names === "string") { // one shaped field, e.g. "pos" with shape [3]
      const v = row[names];
      return Array.isArray(v) && v.length >= n ? v.slice(0, n).map(Number) : null;
    }
    if (!Array.isArray(names) || names.length !== n) return null;
    const out = names.map((k) => row[k]);
    return out.every((v) => typeof v === "number") ? out : null;
  }

  update(batch) {
    const row = batch.lastRow();
    if (!row) return 0;
    const p = PoseObject.pick(row, this.position, 3);
    const q = PoseObject.pick(row, this.quaternion, 4);
    if (!p && !q) throw new Error(`pose: channel '${this.channel}' has none of the fields ${JSON.stringify(this.position)} / ${JSON.stringify(this.quaternion)} (fields: ${Object.keys(row).join(", ")})`);
    if (p) this.object.position.set(p[0], p[1], p[2]);
    if (q) this.object.quaternion.set(q[0], q[1], q[2], q[3]).normalize();
    this.object.visible = true;
    this.seen = 1;
    return 1;
  }

  rows() {
    return this.seen;
  }

  dispose() {
    this.geometry.dispose();
    this.material.dispose();
  }
}

/** A textured plane showing the newest H×W×3 (or ×4, or H×W grey) uint8 frame. */
export class ImageObject {
  constructor(spec, channelInfo) {
    this.channel = spec.channel;
    this.width = typeof spec.width === "number" ? spec.width : 1;
    this.material = new THREE.MeshBasicMaterial({ side: THREE.DoubleSide, color: 0xffffff });
    this.geometry = new THREE.PlaneGeometry(1, 1);
    this.object = new THREE.Mesh(this.geometry, this.material);
    this.object.position.fromArray(vec3(spec.position, [0, 0, 0]));
    const r = vec3(spec.rotation, [0, 0, 0]);
    this.object.rotation.set(r[0] * DEG, r[1] * DEG, r[2] * DEG);
    this.texture = null;
    this.h = 0;
    this.w = 0;
    const shape = channelInfo && channelInfo.shape;
    if (Array.isArray(shape) && shape.length >= 2) this._allocate(shape[0], shape[1]);
    this.object.visible = false;
  }

  _allocate(h, w) {
    if (this.texture) this.texture.dispose();
    this.h = h;
    this.w = w;
    this.texture = new THREE.DataTexture(new Uint8Array(h * w * 4), w, h, THREE.RGBAFormat, THREE.UnsignedByteType);
    this.texture.colorSpace = THREE.SRGBColorSpace;
    this.texture.magFilter = THREE.LinearFilter;
    this.texture.minFilter = THREE.LinearFilter;
    this.texture.generateMipmaps = false;
    this.material.map = this.texture;
    this.material.needsUpdate = true;
    this.object.scale.set(this.width, (this.width * h) / w, 1);
  }

  /** Convert into the texture's RGBA buffer in place, flipping rows (texture v runs upward). */
  update(batch) {
    const msg = batch.msg;
    if (shortDtype(msg.dtype) !== "u1") throw new Error(`image: channel '${this.channel}' must be uint8 (u1), got ${msg.dtype}`);
    const shape = msg.shape || [];
    if (shape.length < 2) throw new Error(`image: channel '${this.channel}' must be H×W×3, H×W×4 or H×W, got shape ${JSON.stringify(shape)}`);
    const [h, w] = shape;
    const c = shape.length >= 3 ? shape[2] : 1;
    if (h !== this.h || w !== this.w) this._allocate(h, w);
    const src = new Uint8Array(msg.data);
    const dst = this.texture.image.data;
    for (let y = 0; y < h; y++) {
      let s = y * w * c;
      let d = (h - 1 - y) * w * 4;
      for (let x = 0; x < w; x++, s += c, d += 4) {
        if (c >= 3) {
          dst[d] = src[s]; dst[d + 1] = src[s + 1]; dst[d + 2] = src[s + 2]; dst[d + 3] = c >= 4 ? src[s + 3] : 255;
        } else {
          dst[d] = dst[d + 1] = dst[d + 2] = src[s]; dst[d + 3] = 255;
        }
      }
    }
    this.texture.needsUpdate = true;
    this.object.visible = true;
    return h;
  }

  rows() {
    return this.object.visible ? this.h : 0;
  }

  dispose() {
    if (this.texture) this.texture.dispose();
    this.geometry.dispose();
    this.material.dispose();
  }
}

export function staticObject(spec) {
  if (spec.type === "grid") {
    const grid = new THREE.GridHelper(spec.size ?? 4, spec.divisions ?? 20, colorOf(spec.color, "#888888"), colorOf(spec.color2 ?? spec.color, "#444444"));
    if (spec.plane === "xy") grid.rotation.x = Math.PI / 2;
    return grid;
  }
  return new THREE.AxesHelper(spec.size ?? 0.5);
}
