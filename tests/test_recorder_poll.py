"""bridge/record/recorder.py's poll period: as long as each channel's rate and buffer allow."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

import pytest

from bridge.record.recorder import MAX_POLL, MIN_POLL, Tap, poll_period


def frame_tap(rate: float, slots: int = 3) -> Tap:
    return Tap("f", "frame", SimpleNamespace(slots=slots), rate=rate)


def records_tap(rate: float, read_at: int) -> Tap:
    return Tap("r", "records", SimpleNamespace(), read_at=read_at, rate=rate)


def test_a_frame_channel_is_read_before_its_slots_run_out():
    # 3 slots hold the newest and the one before: read at least every frame period (half of 2)
    assert frame_tap(100.0).safe_period() == pytest.approx(0.01)
    assert frame_tap(100.0, slots=9).safe_period() == pytest.approx(0.04)


def test_a_ring_is_read_before_a_quarter_fills_twice():
    assert records_tap(1000.0, read_at=16).safe_period() == pytest.approx(0.008)


def test_the_fastest_channel_sets_the_period_within_bounds():
    assert poll_period([frame_tap(30.0), records_tap(1000.0, read_at=4096)]) == pytest.approx(1 / 30)   # the demo
    assert poll_period([frame_tap(5.0)]) == MAX_POLL
    assert poll_period([frame_tap(30.0), frame_tap(200.0)]) == pytest.approx(0.005)
    assert poll_period([frame_tap(5000.0)]) == MIN_POLL
    assert poll_period([frame_tap(0.0)]) == MAX_POLL      # nothing published yet
    assert poll_period([]) == MAX_POLL


def test_frame_reader_unread_is_the_frames_the_slots_may_still_hold():
    from device_agent.attach import DeviceAttachment
    from memory_device import MemoryDevice

    dev = MemoryDevice("cam")
    cam = dev.frame("cam", (2,), "f4", slots=4)
    att = DeviceAttachment("cam", open_segment=dev.open_segment)
    try:
        reader = att.channels["cam"]
        assert list(reader.unread(after=0)) == []              # nothing published
        for k in range(1, 10):
            cam.publish(np.full(2, k, "f4"))
        assert list(reader.unread(after=7)) == [8, 9]
        assert list(reader.unread(after=2)) == [6, 7, 8, 9]    # 4 slots: 5 and older are gone
        assert list(reader.unread(after=9)) == []
        assert [float(reader.read_frame(k).array[0]) for k in reader.unread(after=5)] == [6.0, 7.0, 8.0, 9.0]
    finally:
        att.close()
        dev.release()
