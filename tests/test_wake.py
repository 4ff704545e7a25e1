"""The data doorbell: a bridge waiting for new data is woken by the device's next publish.

channels.Waker on its own (a bytearray flag, a counting ring), then a real device process
and a doorbell in this process, as the bridge uses them (bridge/server.py relay_loop).
"""

from __future__ import annotations

import numpy as np
import pytest

from device_agent.channels import NO_WAKER, FrameChannel, RecordsChannel, Waker
from device_agent.doorbell import Doorbell
from device_agent.frames import FrameSlots, slots_bytes
from device_agent.layout import HEADER_SIZE
from device_agent.records import RecordRing, ring_bytes

DEVICE = r"""
import sys, time
import numpy as np
import device_agent

mon = device_agent.start(sys.argv[1])
temps = mon.records("temps", {"t": "f8", "v": "f4"})
cloud = mon.frame("cloud", shape=(4, 3), dtype="f4")
log = mon.events("log")
print("ready", flush=True)
for line in sys.stdin:
    what = line.strip()
    if what == "records":
        temps.publish(t=time.time(), v=1.0)
    elif what == "many":
        temps.publish_many(np.zeros(3, temps.dtype))
    elif what == "frame":
        cloud.publish(np.ones((4, 3), "f4"))
    elif what == "event":
        log.publish({"msg": "hi"})
    print("done", what, flush=True)
mon.close()
"""


class Rings:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


def records_channel(waker: Waker) -> RecordsChannel:
    dtype = np.dtype([("t", "f8"), ("v", "f4")])
    buf = memoryview(bytearray(HEADER_SIZE + ring_bytes(16, dtype.itemsize)))
    RecordRing.format(buf, HEADER_SIZE, 16, dtype.itemsize)
    return RecordsChannel("temps", dtype, buf, waker)


def test_a_publish_rings_once_when_asked_and_clears_the_flag():
    flag = memoryview(bytearray(8)).cast("Q")
    rings = Rings()
    ch = records_channel(Waker(flag, rings))
    ch.publish(t=1.0, v=2.0)
    assert rings.count == 0  # nobody waits: no ring
    flag[0] = 1
    ch.publish(t=2.0, v=2.0)
    assert (rings.count, flag[0]) == (1, 0)
    ch.publish(t=3.0, v=2.0)
    assert rings.count == 1  # once per request
    flag[0] = 1
    ch.publish_many(np.zeros(2, ch.dtype))
    assert (rings.count, flag[0]) == (2, 0)


def test_a_detached_channel_never_rings():
    flag = memoryview(bytearray(8)).cast("Q")
    rings = Rings()
    ch = records_channel(Waker(flag, rings))
    ch._detach()
    flag[0] = 1
    ch.publish(t=1.0, v=2.0)
    assert rings.count == 0


def test_frames_ring_too_and_the_default_waker_does_nothing():
    buf = memoryview(bytearray(HEADER_SIZE + slots_bytes(3, 48)))
    FrameSlots.format(buf, HEADER_SIZE, 3, 48)
    flag = memoryview(bytearray(8)).cast("Q")
    rings = Rings()
    ch = FrameChannel("cloud", (4, 3), np.dtype("f4"), buf, Waker(flag, rings))
    flag[0] = 1
    ch.publish(np.ones((4, 3), "f4"))
    assert rings.count == 1
    plain = records_channel(NO_WAKER)
    plain.publish(t=1.0, v=2.0)  # no flag, no ring, no error
    assert NO_WAKER.flag[0] == 0


@pytest.mark.parametrize("what", ["records", "many", "frame", "event"])
def test_the_device_rings_the_data_doorbell_at_its_next_publish(launch, device_name, attach, what):
    dev = launch(DEVICE, device_name)
    att = attach(device_name)
    bell = Doorbell("test-data")
    try:
        att.publish_bridge(data_doorbell=bell.address)
        dev.request(what, "done")
        assert not bell.wait(0), "rang although nobody asked"
        att.want_wake()
        dev.request(what, "done")
        assert bell.wait(5.0), "the publish did not ring"
        assert att._ctl.wake[0] == 0  # the device cleared the request
        dev.request(what, "done")
        assert not bell.wait(0), "rang twice for one request"
    finally:
        bell.close()
    dev.stop()
