"""bench.ring's frame windows around the VM's slow cross-core spells: which windows are kept,
set aside or waited for, and what that costs of the budget. A unit test of one function
(measure_frames_windows): its three measurements are replaced by scripted figures and
time.sleep by a no-op, so no process is started."""

from __future__ import annotations

from typing import Any

import pytest

from bench import ring

MEMCPY = 40.0  # GB/s; a probe under ring.SLOW_SPELL × this is a spell
FAST, SLOW = 35.0, 2.0


class Script:
    """Feeds measure_frames_windows scripted handoff probes and frame windows, in order."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, probes: list[float], frames: list[float]) -> None:
        self.probes, self.frames = list(probes), list(frames)
        self.calls: list[str] = []
        monkeypatch.setattr(ring, "measure_handoff", self.handoff)
        monkeypatch.setattr(ring, "measure_frames", self.frame)
        monkeypatch.setattr(ring, "measure_memcpy", lambda size, s: {f"memcpy_{size}_gbps": MEMCPY})
        monkeypatch.setattr(ring.time, "sleep", lambda s: None)
        monkeypatch.setattr(ring, "log", lambda message: None)

    def handoff(self, size: str, window: float) -> dict[str, Any]:
        self.calls.append("probe")
        return {f"handoff_{size}_gbps": self.probes.pop(0)}

    def frame(self, size: str, window: float) -> dict[str, Any]:
        self.calls.append("window")
        return {f"frame_{size}_gbps": self.frames.pop(0)}


def run(windows: int, budget: float) -> tuple[dict[str, Any], dict[str, Any]]:
    cfg = dict(ring.MODES["quick"], frame_windows=windows)
    spells = {"waited_s": 0.0, "budget_s": budget, "set_aside": 0, "measured_in_spell": 0}
    return ring.measure_frames_windows("1mb", cfg, spells), spells


def test_no_spell_keeps_every_window_between_shared_probes(monkeypatch):
    script = Script(monkeypatch, [FAST, 34.0, 36.0, 33.0], [20.0, 30.0, 25.0])
    out, spells = run(3, budget=10.0)
    # one probe before each window and after it; the probe after one is the probe before the next
    assert script.calls == ["probe", "window", "probe", "window", "probe", "window", "probe"]
    assert out["frame_1mb_gbps"] == 25.0  # the median window
    assert out["frame_1mb_gbps_windows"] == [20.0, 30.0, 25.0]
    assert out["handoff_1mb_gbps_windows"] == [34.5, 35.0, 34.5]  # the mean of the probes around each
    assert out["frame_1mb_gbps_set_aside"] == []
    assert spells["set_aside"] == spells["measured_in_spell"] == 0


def test_a_spell_that_starts_during_a_window_sets_it_aside_and_measures_again(monkeypatch):
    # window 1 ends in a spell (probe after: SLOW); the run waits it out, then measures again
    script = Script(monkeypatch, [FAST, SLOW, SLOW, FAST, FAST, FAST], [2.2, 28.0, 27.0])
    out, spells = run(2, budget=10.0)
    assert script.calls == ["probe", "window", "probe", "probe", "probe", "window", "probe", "window", "probe"]
    assert out["frame_1mb_gbps_windows"] == [28.0, 27.0]
    assert out["frame_1mb_gbps_set_aside"] == [2.2]
    assert out["handoff_1mb_gbps_set_aside"] == [[FAST, SLOW]]
    assert spells["set_aside"] == 1 and spells["measured_in_spell"] == 0
    assert spells["waited_s"] > 0


def test_once_the_budget_is_spent_windows_in_a_spell_are_kept_and_counted(monkeypatch):
    script = Script(monkeypatch, [SLOW, SLOW], [2.0])
    out, spells = run(1, budget=0.0)
    assert script.calls == ["probe", "window", "probe"]  # no waiting, nothing set aside
    assert out["frame_1mb_gbps"] == 2.0
    assert spells["set_aside"] == 0 and spells["measured_in_spell"] == 1
