"""bench.record: its figures (loop windows, the replay's lines, what a file holds), judged
against its targets, over a small file the recorder's own writer makes; its arguments."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench import record
from bench.common import judge

pytest.importorskip("mcap")


def test_loop_figures_split_the_steps_by_window():
    times = [0.5, 1.5, 2.5, 3.5, 4.5, 5.5]
    periods = [5.0, 9.0, 5.0, 11.0, 5.0, 99.0]         # the last step is in no window
    figures = record.loop_figures(times, periods, on=[(1, 2), (3, 4)], off=[(0, 1), (2, 3), (4, 5)])
    assert figures["loop_p99_ms"] == 11.0 and figures["loop_baseline_p99_ms"] == 5.0
    assert figures["loop_p99_ratio"] == pytest.approx(2.2)
    assert figures["loop_steps"] == [2, 3]
    assert math.isnan(record.loop_figures([], [], [(0, 1)], [(1, 2)])["loop_p99_ratio"])


def test_the_replay_lines_are_parsed():
    lines = ["monbridge replay: playing /x.mcap (device 'arm', 10.0 s) as device 'arm': ...",
             "monbridge replay: reached the end (60.0 s of recording, 1.20 s since the replay began); exiting",
             "monbridge replay: stopped (end reached): 10496 messages published; publish time vs recorded: "
             "p50 3.0 ms, p99 33.5 ms, max 61.3 ms"]
    assert record.replay_timing(lines) == {"p50_ms": 3.0, "p99_ms": 33.5, "max_ms": 61.3}
    assert all(math.isnan(v) for v in record.replay_timing(lines[:2]).values())
    ended = record.REPLAY_END.search(lines[1])
    assert float(ended.group(1)) / float(ended.group(2)) == pytest.approx(50.0)


def _small_recording(path: str, seconds: float = 2.0, hz: int = 500) -> int:
    """A file as the recorder writes it: JOINTS records at ``hz`` and a frame a second; returns the records."""
    from bridge.record.schemas import RecordsSchema
    from bridge.record.writer import McapFile

    n = int(seconds * hz)
    recs = np.zeros(n, list(record.JOINTS.items()))
    recs["t"] = 1.7e9 + np.arange(n) / hz
    schema = RecordsSchema("joints", recs.dtype)
    f = McapFile(path)
    cid = f.channel("/joints", "cdr", f.schema(schema.name, "ros2msg", schema.text.encode()))
    frames = f.channel("/cam", "cdr", f.schema("foxglove_msgs/msg/RawImage", "ros2msg", b"..."))
    stamps = (recs["t"] * 1e9).astype(np.int64)
    for k, half in enumerate(np.array_split(np.arange(n), 2)):
        f.records(cid, stamps[half], schema.layout.encode_array(recs[half]), int(half[0]))
        f.message(frames, int(stamps[half[0]]), [b"\0\1\0\0", bytes(100_000)], sequence=k)
        f.flush()
    f.metadata("monbridge.summary", {"missed": '{"joints": 3}'})
    f.finish()
    return n


def test_file_figures_and_reading(tmp_path):
    path = str(tmp_path / "small.mcap")
    n = _small_recording(path)
    f = record.file_figures(path)
    assert f["counts"] == {"/joints": n, "/cam": 2} and f["messages"] == n + 2
    assert f["duration_s"] == pytest.approx((n - 1) / 500)
    assert f["missed"] == {"joints": 3}
    assert f["raw_mb_per_min"] > f["mb_per_min"] > 0        # zeros compress
    assert record.read_seconds(path, crcs=True, repeat=1) > 0


def test_figures_are_judged_against_the_issue_targets():
    good = {"recorder_cpu_pct": 4.0, "records_per_s": 400_000, "mb_per_min": 30.0, "read_minute_s": 0.8,
            "replay_1x_p99_ms": 8.0, "replay_1x_cpu_pct": 4.0, "replay_10x_speed": 9.8, "replay_max_speed": 60.0,
            "seek_first_frame_ms": 120.0, "loop_p99_ratio": 1.05}
    assert judge(good, record.TARGETS, missing_fails=True) == {k: True for k in record.TARGETS}
    bad = dict(good, replay_10x_speed=9.0, loop_p99_ratio=math.nan)
    assert [k for k, ok in judge(bad, record.TARGETS).items() if not ok] == ["replay_10x_speed", "loop_p99_ratio"]


def test_the_library_baseline_runs():
    assert record.library_records_per_s(2000) > 0


def test_an_unknown_measurement_is_refused(capsys):
    with pytest.raises(SystemExit) as exc:
        record.main(["--only", "demo,nope"])
    assert exc.value.code == 2 and "nope" in capsys.readouterr().err
