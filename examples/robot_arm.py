"""A simulated 3-joint arm scanning a scene with a depth sensor — the monbridge demo device.

    MON=1 python examples/robot_arm.py       # prints the dashboard URL (make demo does this)
    python examples/robot_arm.py             # MON unset: the same simulation, no monitor

Channels: ``joints`` (1 kHz: angles, motor currents, temperatures), ``pose`` (60 Hz: joint
and end-effector positions + orientation), ``cloud`` (30 Hz: up to 20,000 scanned points
with colours, N×6 float32), ``camera`` (15 Hz: 240×320×3 uint8), ``loop`` (10 Hz: the
device loop's own timing, to show the monitor does not slow it down), ``log`` (events).
State: speed, mode, pictures. Commands: set_speed (slider), set_mode (select), home,
take_picture (buttons) and move_joint (fails beyond a joint limit).
"""

from __future__ import annotations

import argparse
import math
import signal
import time
from typing import Literal

import numpy as np

import device_agent

LINKS = (0.0, 0.6, 0.5)            # link lengths, m (joint 1 turns the base)
LIMIT_DEG = (170.0, 100.0, 120.0)  # joint limits, ±degrees
CLOUD_POINTS = 20_000
HITS_PER_STEP = 25                 # sensor hits per step: the cloud fills in about 4 s
STEP_HZ = 200                      # device loop rate; joints publishes 5 records per step (1 kHz)
JOINT_FIELDS = {"t": "f8", "j1": "f4", "j2": "f4", "j3": "f4", "i1": "f4", "i2": "f4", "i3": "f4",
                "temp1": "f4", "temp2": "f4", "temp3": "f4"}
POSE_FIELDS = {"t": "f8", "elbow_x": "f4", "elbow_y": "f4", "elbow_z": "f4", "ee_x": "f4", "ee_y": "f4",
               "ee_z": "f4", "qx": "f4", "qy": "f4", "qz": "f4", "qw": "f4"}
LOOP_FIELDS = {"t": "f8", "period_ms": "f4", "work_ms": "f4", "monitor_us": "f4"}


class Arm:
    """Joint-space kinematics with speed-limited motion and a crude thermal model."""

    def __init__(self) -> None:
        self.angles = np.zeros(3)           # rad
        self.target = np.zeros(3)
        self.velocity = np.zeros(3)
        self.temps = np.full(3, 30.0)       # °C
        self.speed = 1.0                    # rad/s at speed 1
        self.mode = "scan"
        self.phase = 0.0

    def step(self, dt: float) -> np.ndarray:
        if self.mode == "scan":
            self.phase += dt * self.speed
            self.target = np.radians([60 * math.sin(0.3 * self.phase), 35 + 25 * math.sin(0.7 * self.phase),
                                      -50 + 30 * math.sin(1.1 * self.phase)])
        elif self.mode == "hold":
            self.target = self.angles.copy()
        error = self.target - self.angles
        max_step = max(self.speed, 0.05) * dt
        move = np.clip(error, -max_step, max_step)
        accel = (move / dt - self.velocity) / dt
        self.velocity = move / dt
        self.angles += move
        gravity = np.array([0.0, 2.0 * math.cos(self.angles[1]), 1.0 * math.cos(self.angles[1] + self.angles[2])])
        currents = 0.4 + np.abs(gravity) + 0.02 * np.abs(accel) + np.random.normal(0, 0.05, 3)
        self.temps += dt * (0.8 * currents**2 - 0.05 * (self.temps - 30.0))
        return currents

    def positions(self) -> tuple[np.ndarray, np.ndarray]:
        base, shoulder, elbow = self.angles
        r1 = LINKS[1] * math.cos(shoulder)
        z1 = 0.1 + LINKS[1] * math.sin(shoulder)
        r2 = r1 + LINKS[2] * math.cos(shoulder + elbow)
        z2 = z1 + LINKS[2] * math.sin(shoulder + elbow)
        c, s = math.cos(base), math.sin(base)
        return np.array([r1 * c, r1 * s, z1]), np.array([r2 * c, r2 * s, z2])

    def orientation(self) -> tuple[float, float, float, float]:
        """Quaternion (x, y, z, w): yaw by the base, pitch by shoulder + elbow."""
        yaw, pitch = self.angles[0], -(self.angles[1] + self.angles[2])
        cy, sy, cp, sp = math.cos(yaw / 2), math.sin(yaw / 2), math.cos(pitch / 2), math.sin(pitch / 2)
        return (-sy * sp, cy * sp, sy * cp, cy * cp)


def scan_points(ee: np.ndarray, yaw: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """Depth-sensor hits from the end effector down onto a floor with two boxes: N×6 xyz+rgb."""
    spread = rng.normal(0, 0.35, (n, 2))
    hits = np.empty((n, 6), np.float32)
    x = ee[0] + spread[:, 0] * math.cos(yaw) - spread[:, 1] * math.sin(yaw)
    y = ee[1] + spread[:, 0] * math.sin(yaw) + spread[:, 1] * math.cos(yaw)
    z = np.zeros(n)
    z = np.where((np.abs(x - 0.6) < 0.15) & (np.abs(y - 0.2) < 0.15), 0.3, z)
    z = np.where(np.hypot(x + 0.3, y - 0.5) < 0.2, 0.2 - 2 * np.hypot(x + 0.3, y - 0.5) ** 2 + 0.08, z)
    hits[:, 0], hits[:, 1], hits[:, 2] = x, y, z + rng.normal(0, 0.003, n)
    height = np.clip(z / 0.3, 0, 1)
    hits[:, 3], hits[:, 4], hits[:, 5] = 0.2 + 0.8 * height, 0.5 + 0.3 * (1 - height), 1.0 - 0.8 * height
    return hits


_YY, _XX = np.mgrid[0:240, 0:320]
_BOARD = np.stack([(((_XX // 20 + _YY // 20) % 2) * 60 + 60).astype(np.uint8)] * 3, axis=-1)
_BOARD[..., 2] += 30


def camera_image(arm: Arm, frame_no: int) -> np.ndarray:
    """A 240×320 synthetic view: a checkerboard floor sliding with the base, the tool's spot."""
    img = np.roll(_BOARD, int(math.degrees(arm.angles[0]) * 2), axis=1)
    cx = 160 + int(80 * math.sin(arm.angles[2])); cy = 120 + int(60 * math.sin(arm.angles[1]))
    y0, x0 = max(cy - 15, 0), max(cx - 15, 0)
    window = img[y0 : cy + 15, x0 : cx + 15]
    spot = (_XX[y0 : cy + 15, x0 : cx + 15] - cx) ** 2 + (_YY[y0 : cy + 15, x0 : cx + 15] - cy) ** 2 < 15 ** 2
    window[spot] = (230, 60, 40)
    img[:4, : (frame_no % 320)] = (255, 255, 255)
    return img


def every(hz: float):
    """A predicate that is true at most ``hz`` times a second, on a steady schedule."""
    period = 1.0 / hz
    next_at = [0.0]

    def due(now: float) -> bool:
        if now < next_at[0]:
            return False
        next_at[0] = max(next_at[0] + period, now - period)
        return True

    return due


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds (0: run until Ctrl-C)")
    opts = parser.parse_args()
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C stops it, even if started with SIGINT ignored

    mon = device_agent.start()  # device name: the file name, robot_arm (MON=name=... overrides)
    joints = mon.records("joints", JOINT_FIELDS, capacity=16384)
    pose = mon.records("pose", POSE_FIELDS, capacity=1024)
    loop = mon.records("loop", LOOP_FIELDS, capacity=1024)
    cloud = mon.frame("cloud", shape=(CLOUD_POINTS, 6), dtype="f4")
    camera = mon.frame("camera", shape=(240, 320, 3), dtype="u1")
    log = mon.events("log")
    arm = Arm()
    pictures = 0
    mon.state.update(speed=arm.speed, mode=arm.mode, pictures=0)

    @mon.command(coalesce=True, params={"value": {"type": "number", "minimum": 0.0, "maximum": 2.0}})
    def set_speed(value: float) -> float:
        """Joint speed, 0–2 rad/s."""
        arm.speed = value
        mon.state.update(speed=value)
        return value

    @mon.command
    def set_mode(mode: Literal["idle", "scan", "hold"]) -> str:
        """idle: stay put; scan: sweep the scene; hold: freeze where it is."""
        arm.mode = mode
        mon.state.update(mode=mode)
        log.publish({"level": "info", "msg": f"mode {mode}"})
        return mode

    @mon.command
    def home() -> str:
        """Drive every joint to zero."""
        arm.mode, arm.target = "idle", np.zeros(3)
        mon.state.update(mode="idle")
        log.publish({"level": "info", "msg": "homing"})
        return "homing"

    @mon.command
    def take_picture(client: dict | None = None) -> int:
        """Count a picture and say who took it."""
        nonlocal pictures
        pictures += 1
        mon.state.update(pictures=pictures)
        log.publish({"level": "info", "msg": f"picture {pictures} taken by {(client or {}).get('id', '?')}"})
        return pictures

    @mon.command
    def move_joint(joint: int, degrees: float) -> float:
        """Move one joint (1-3) to an angle; refused beyond its limit."""
        if joint not in (1, 2, 3):
            raise ValueError(f"there is no joint {joint}; joints are 1, 2 and 3")
        limit = LIMIT_DEG[joint - 1]
        if abs(degrees) > limit:
            log.publish({"level": "warning", "msg": f"joint {joint}: {degrees}° is beyond its ±{limit}° limit"})
            raise ValueError(f"joint {joint} limit is ±{limit:g}°, asked {degrees:g}°")
        arm.mode = "idle"
        arm.target[joint - 1] = math.radians(degrees)
        mon.state.update(mode="idle")
        return degrees

    rng = np.random.default_rng(1)
    points = np.zeros((CLOUD_POINTS, 6), np.float32)
    filled = 0
    batch = np.zeros(1000 // STEP_HZ, dtype=list(JOINT_FIELDS.items()))  # 1 kHz in steps of STEP_HZ
    pose_due, cloud_due, camera_due, loop_due = every(60), every(30), every(15), every(10)
    dt = 1.0 / STEP_HZ
    start = next_step = time.perf_counter()
    step = 0
    homed = False
    last_loop, last_step = start, 0
    monitor_s = 0.0
    print(f"robot_arm: running at {STEP_HZ} Hz" + ("" if mon.enabled else " (MON unset: no monitor)"), flush=True)
    try:
        while not opts.duration or time.perf_counter() - start < opts.duration:
            t0 = time.perf_counter()
            now = time.time()
            sub = dt / len(batch)
            for k in range(len(batch)):
                currents = arm.step(sub)
                batch[k] = (now - (len(batch) - 1 - k) * sub, *arm.angles, *currents, *arm.temps)
            elbow, ee = arm.positions()
            if not homed and arm.mode == "idle" and np.allclose(arm.angles, 0, atol=1e-3):
                homed = True
                log.publish({"level": "info", "msg": "homing done"})
            elif arm.mode != "idle":
                homed = False
            hits = scan_points(ee, arm.angles[0], HITS_PER_STEP, rng) if arm.mode == "scan" else None
            image = camera_image(arm, step) if camera_due(now) else None  # drawing is the device's work
            if hits is not None:
                k = len(hits)
                points[(filled + np.arange(k)) % CLOUD_POINTS] = hits
                filled += k
            m0 = time.perf_counter()
            joints.publish_many(batch)
            if pose_due(now):
                pose.publish(now, *elbow, *ee, *arm.orientation())
            if cloud_due(now):
                cloud.publish(points[: min(filled, CLOUD_POINTS)], t=now)
            if image is not None:
                camera.publish(image, t=now)
            if loop_due(now):
                steps = max(1, step - last_step)
                loop.publish(now, (t0 - last_loop) * 1000 / steps, (m0 - t0) * 1000, monitor_s * 1e6 / steps)
                last_loop, last_step, monitor_s = t0, step, 0.0
            if arm.temps.max() > 70 and step % STEP_HZ == 0:
                log.publish({"level": "warning", "msg": f"limit reached: motor at {arm.temps.max():.0f} °C"})
            monitor_s += time.perf_counter() - m0
            step += 1
            next_step += dt
            delay = next_step - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            else:
                next_step = time.perf_counter()
    except KeyboardInterrupt:
        pass
    finally:
        mon.close()


if __name__ == "__main__":
    main()
