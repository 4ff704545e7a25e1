"""bench.soak: the figures (slopes, warm-up, windows, heap growth, the pass dict), the message
checks its clients make, its arguments, and one short run stopped by SIGTERM that must
leave nothing behind."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from bench import soak
from bench.common import judge
from conftest import REPO

# -- slopes -------------------------------------------------------------------------------


def test_slope_is_least_squares_per_ten_minutes():
    ts = [0.0, 60.0, 120.0, 180.0]
    assert soak.slope_per_10min(ts, [100 + 0.002 * t for t in ts]) == pytest.approx(1.2)  # 2 kB/s = 1.2 MB/10 min
    assert soak.slope_per_10min(ts, [7, 7, 7, 7]) == 0.0
    # every point counts, not just the ends: Σ(t−t̄)(y−ȳ) / Σ(t−t̄)²
    assert soak.slope_per_10min([0, 10, 20], [1, 4, 1]) == pytest.approx(0.0)
    assert soak.slope_per_10min([0, 10, 20, 30], [0, 0, 0, 1]) == pytest.approx(600 * 15 / 500)   # 18, not 20
    assert soak.slope_per_10min([0, 10, 30], [1, 3, 2]) == pytest.approx(600 * 10 / (1400 / 3))   # 12.86


def test_slope_of_too_few_or_incomplete_samples_is_nan():
    assert math.isnan(soak.slope_per_10min([], []))
    assert math.isnan(soak.slope_per_10min([5.0], [1.0]))
    assert math.isnan(soak.slope_per_10min([5.0, 5.0], [1.0, 2.0]))       # no spread in time
    assert math.isnan(soak.slope_per_10min([0, 10, 20], [1.0, None, 2.0]))  # a reading missing


# -- warm-up and windows ------------------------------------------------------------------


def test_warmup_is_a_fifth_of_the_run_or_two_minutes_and_a_minute_for_quick():
    assert soak.warmup_s(3600, quick=False) == 120.0       # 20 % would be 12 min
    assert soak.warmup_s(300, quick=False) == 60.0         # 20 % of 5 min
    assert soak.warmup_s(18, quick=False) == pytest.approx(3.6)
    assert soak.warmup_s(180, quick=True) == 60.0          # not 20 % of 3 min


def test_samples_after_the_warmup_start_at_it():
    samples = [{"t": t} for t in (0, 10, 20, 30)]
    assert [s["t"] for s in soak.after_warmup(samples, 20)] == [20, 30]
    assert soak.after_warmup(samples, 31) == []


def test_windows_are_a_tenth_of_the_samples_at_least_three():
    assert soak.window_len(348) == 35
    assert soak.window_len(12) == 3
    assert soak.window_len(2) == 2
    assert soak.window_mins([5, 3, 4, 9, 9, 9, 9, 8, 6, 7]) == (3, 6)
    assert all(math.isnan(x) for x in soak.window_mins([]))


def test_heap_growth_compares_the_lowest_heap_of_the_first_and_last_windows():
    # 30 samples, windows of 3: first [12, 10, 11] -> 10, last [11.5, 11, 12.5] -> 11; the spike
    # in the middle and the highs at either end do not count
    heaps = [12, 10, 11] + [10.5] * 12 + [40] + [10.8] * 11 + [11.5, 11, 12.5]
    assert soak.heap_growth_pct(heaps) == pytest.approx(10.0)
    assert soak.heap_growth_pct([20, 20, 20, 18, 18, 18]) == pytest.approx(-10.0)
    assert math.isnan(soak.heap_growth_pct([]))


# -- figures and the pass dict ------------------------------------------------------------

def _samples(n: int, every: float, **series) -> list[dict]:
    out = []
    for i in range(n):
        t = i * every
        s = {"t": t}
        for key, fn in series.items():
            s[key] = fn(i, t)
        out.append(s)
    return out


def test_figures_and_judgement_of_a_run_that_leaks_a_descriptor():
    # 60 min sampled every 10 s; warm-up 2 min in which the bridge grows 10 MB
    samples = _samples(
        361, 10.0,
        bridge_rss_mb=lambda i, t: 80 + min(t, 120) / 12 + 0.0005 * t,      # 0.3 MB/10 min after warm-up
        device_rss_mb=lambda i, t: 50 + 0.003 * t,                           # 1.8 MB/10 min: a leak
        js_heap_mb=lambda i, t: 20 + (1 if i % 7 == 0 else 0) + 0.0005 * t,  # +1.2 MB (5.8 %) over 58 min
        bridge_fds=lambda i, t: 29 + (1 if i == 200 else 0),                 # open for a moment only
        device_fds=lambda i, t: 20 + (1 if t >= 3000 else 0),                # one that stays open
        shm_segments=lambda i, t: 7,
    )
    fig = soak.figures(samples, soak.warmup_s(3600, quick=False))
    assert fig["samples"] == 361 and fig["samples_after_warmup"] == 361 - 12
    assert fig["bridge_rss_mb_per_10min"] == pytest.approx(0.3)
    assert fig["device_rss_mb_per_10min"] == pytest.approx(1.8)
    assert fig["bridge_fds_growth"] == 0 and fig["device_fds_growth"] == 1 and fig["shm_segments_growth"] == 0
    # windows of 35 samples: the lowest of the first is at 120 s (20.06 MB), of the last at 3260 s (21.63 MB)
    assert fig["js_heap_growth_pct"] == pytest.approx(100 * (21.63 - 20.06) / 20.06)
    met = judge({**fig, "errors": 0}, soak.TARGETS, missing_fails=True)
    assert met == {"bridge_rss_mb_per_10min": True, "device_rss_mb_per_10min": False, "js_heap_growth_pct": True,
                   "bridge_fds_growth": True, "device_fds_growth": False, "shm_segments_growth": True,
                   "errors": True}
    assert judge({**fig, "errors": 1}, soak.TARGETS)["errors"] is False
    assert judge(fig, soak.TARGETS, missing_fails=True)["errors"] is False   # errors not counted: not a pass


def test_a_run_without_heap_readings_fails_the_heap_target():
    samples = _samples(20, 10.0, bridge_rss_mb=lambda i, t: 80, device_rss_mb=lambda i, t: 50,
                       js_heap_mb=lambda i, t: None, bridge_fds=lambda i, t: 29, device_fds=lambda i, t: 20,
                       shm_segments=lambda i, t: 7)
    fig = soak.figures(samples, 20.0)
    assert math.isnan(fig["js_heap_growth_pct"]) and math.isnan(fig["js_heap_mb_per_10min"])
    assert judge({**fig, "errors": 0}, soak.TARGETS, missing_fails=True)["js_heap_growth_pct"] is False


# -- what the clients check ---------------------------------------------------------------

def _records(seq: tuple[int, int], missed: int, count: int | None = None) -> dict:
    n = seq[1] - seq[0] + 1 if count is None else count
    t = np.arange(n, dtype="<f8")
    x = np.zeros((n, 3), dtype="<f4")
    xb = x.tobytes() + b"\0" * (-x.nbytes % 8)
    return {"channel": "joints", "kind": "records", "seq": list(seq), "missed": missed, "t": float(t[-1]),
            "count": n, "decimated": count is not None,
            "fields": [{"name": "t", "dtype": "f8", "shape": [], "offset": 0, "nbytes": t.nbytes},
                       {"name": "x", "dtype": "f4", "shape": [3], "offset": t.nbytes, "nbytes": x.nbytes}],
            "data": t.tobytes() + xb}


def test_records_decode_and_their_sequence_numbers_must_follow_on():
    last: dict[str, int] = {}
    assert soak.check_message(_records((0, 9), 0), last) == ("joints", 10 * 8 + 120)
    soak.check_message(_records((10, 19), 0), last)
    soak.check_message(_records((25, 30), 5), last)             # 20..24 lost, and said so
    soak.check_message(_records((31, 99), 0, count=8), last)    # decimated: 8 rows stand for 69
    assert last == {"joints": 99}
    with pytest.raises(soak.SequenceError):
        soak.check_message(_records((103, 110), 0), last)       # 100..102 lost, missed says 0
    with pytest.raises(soak.SequenceError):
        soak.check_message(_records((100, 110), 2), {"joints": 99})   # missed says 2, none lost
    with pytest.raises(ValueError, match="rows"):
        soak.check_message(_records((0, 9), 0, count=9) | {"decimated": False}, {})   # 9 rows for 10 records
    bad = _records((0, 3), 0)
    bad["fields"][1]["nbytes"] = 1000                            # beyond the attachment
    with pytest.raises(ValueError, match="field x"):
        soak.check_message(bad, {})


def test_frames_and_events_are_checked_too():
    last: dict[str, int] = {}
    img = np.zeros((4, 6, 3), np.uint8)
    frame = {"channel": "camera", "kind": "frame", "dtype": "u1", "shape": [4, 6, 3], "t": 1.0, "data": img.tobytes()}
    soak.check_message(frame | {"seq": [5, 5], "missed": 0}, last)
    soak.check_message(frame | {"seq": [8, 8], "missed": 2}, last)
    with pytest.raises(soak.SequenceError):
        soak.check_message(frame | {"seq": [12, 12], "missed": 0}, last)
    with pytest.raises(ValueError):
        soak.check_message(frame | {"seq": [13, 13], "missed": 0, "shape": [4, 6, 4]}, {})  # 96 bytes, 72 said
    ev = {"channel": "log", "kind": "events", "t": 1.0}
    last = {}
    soak.check_message(ev | {"seq": [0, 1], "missed": 0, "events": [{"seq": 0}, {"seq": 1}]}, last)
    soak.check_message(ev | {"seq": [4, 4], "missed": 2, "events": [{"seq": 4}]}, last)
    with pytest.raises(soak.SequenceError):
        soak.check_message(ev | {"seq": [6, 6], "missed": 0, "events": [{"seq": 6}]}, last)
    with pytest.raises(ValueError):
        soak.check_message(ev | {"seq": [0, 2], "missed": 0, "events": [{"seq": 0}, {"seq": 1}]}, {})


# -- arguments ----------------------------------------------------------------------------

@pytest.mark.parametrize("args, says", [
    (["--minutes", "0"], "--minutes: must be more than 0, got 0"),
    (["--minutes", "-5"], "--minutes: must be more than 0"),
    (["--minutes", "nan"], "--minutes: must be a finite number, got nan"),
    (["--minutes", "inf"], "--minutes: must be a finite number, got inf"),
    (["--minutes", "ten"], "--minutes: 'ten' is not a number"),
    (["--quick", "--minutes", "5"], "not allowed with argument"),
    (["--sample-every", "0"], "--sample-every: must be more than 0"),
    (["--minutes", "0.02"], "shorter than two samples"),
    (["--clients", "-1"], "--clients: must be at least 0"),
    (["--client-rate", "0"], "--client-rate: must be at least 0.1"),
    (["--sync-clients", "-1"], "--sync-clients: must be at least 0"),
    (["--clients", "0", "--sync-clients", "2"], "--sync-clients needs at least one of --clients"),
])
def test_bad_arguments_exit_2_saying_what_is_wrong(args, says, capsys):
    with pytest.raises(SystemExit) as exc:
        soak.main(args + ["--json"])
    assert exc.value.code == 2
    err = capsys.readouterr()
    assert says in err.err and err.out == ""


# -- a short run, stopped by SIGTERM ------------------------------------------------------

@pytest.mark.timeout(120)
def test_a_run_stopped_by_sigterm_reports_its_samples_and_leaves_nothing_behind(_guard):
    env, _ = _guard.env(None, None)   # tagged: the guard checks every process it started has exited
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.soak", "--json", "--minutes", "5", "--sample-every", "1", "--tab-every", "0.5",
         "--clients", "2", "--client-rate", "5", "--command-every", "1"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 75
        while sum(" min warm-up:" in x for x in lines) < 4 and time.monotonic() < deadline:   # a line per sample
            line = proc.stderr.readline()
            if not line:
                break
            lines.append(line)
        assert sum(" min warm-up:" in x for x in lines) >= 4, "".join(lines)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    lines.append(err)
    assert proc.returncode == 128 + signal.SIGTERM, "".join(lines)
    result = json.loads(out)
    _guard.names.append(result["device"])   # the guard checks /dev/shm for its segments too
    assert result["stopped_by"] == "SIGTERM"
    assert result["samples"] >= 4 and len(result["series"]["bridge_rss_mb"]) == result["samples"]
    assert all(x > 0 for x in result["series"]["bridge_rss_mb"] + result["series"]["js_heap_mb"]
               + result["series"]["page_native_heap_mb"])
    assert result["series"]["shm_segments"][0] == 7            # the demo's six channels and its control segment
    assert sum(result["client_messages_by_channel"].values()) > 0 and result["tab_switches"] >= 2
    assert set(result["pass"]) == set(soak.TARGETS)
    assert result["problems"] == [] and result["leftover_segments"] == []
