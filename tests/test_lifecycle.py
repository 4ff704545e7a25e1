"""Who creates and who removes the segments: clean exits, signals, crashes, name clashes.

A device's own multiprocessing resource tracker also unlinks its segments after it dies
(with a "leaked shared_memory" warning on stderr). So "nothing left in /dev/shm" alone
does not prove the device cleaned up: the tests also check that the segments were gone
while the device was still running (an atexit hook registered before ``start()`` runs
after the monitor's own), and that no tracker complained (``DeviceProcess.stop``).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, segments_of, wait_for
from device_agent import cleanup

DEVICE = r"""
import atexit, json, os, sys, threading
import numpy as np

name = sys.argv[1]
channels = sys.argv[2].split(",") if len(sys.argv) > 2 else ["r", "f", "e"]


def left():
    return sorted(n for n in os.listdir("/dev/shm") if n.startswith(f"monbridge.{name}."))


# registered before start(): runs after the monitor's own atexit handler
atexit.register(lambda: print("at exit", json.dumps(left()), flush=True))

import device_agent

mon = device_agent.start(name)
r = mon.records("r", {"seq": "i8", "neg": "i8", "half": "f8"}, capacity=64) if "r" in channels else None
f = mon.frame("f", 4096, "f8") if "f" in channels else None
e = mon.events("e") if "e" in channels else None
mon.state.update(started=True)


def stream():
    # until killed: record s is (s, -s, s/2); frame k is 4096 × k
    buf = np.empty(4096)
    s = r.count
    while True:
        r.publish(seq=s, neg=-s, half=s * 0.5)
        if s % 16 == 0:
            buf[:] = f.count + 1
            f.publish(buf)
        s += 1


print("ready", flush=True)
for line in sys.stdin:
    cmd, _, rest = line.strip().partition(" ")
    if cmd == "close":
        mon.close()
        mon.close()  # twice is fine
        r.publish(seq=1, neg=-1, half=0.5)  # a no-op after close
        mon.state.update(after_close=True)
        print("closed", json.dumps(left()), flush=True)
    elif cmd == "pub":
        for _ in range(int(rest)):
            s = r.count
            r.publish(seq=s, neg=-s, half=s * 0.5)
        print("published", r.count, flush=True)
    elif cmd == "stream":
        threading.Thread(target=stream, daemon=True).start()
        print("streaming", flush=True)
    elif cmd == "fork":
        # a forked child that exits through atexit (os.fork + sys.exit), and one a Pool
        # would end (SIGTERM): neither may take the parent's segments with it
        for how in ("exit", "sigterm"):
            pid = os.fork()
            if pid == 0:
                if how == "sigterm":
                    import signal
                    os.kill(os.getpid(), signal.SIGTERM)
                sys.exit(0)
            os.waitpid(pid, 0)
        print("forked", json.dumps(left()), flush=True)
"""


def test_close_removes_every_segment(launch, attach, device_name):
    dev = launch(DEVICE, device_name)
    assert segments_of(device_name) == sorted(
        f"monbridge.{device_name}.{s}" for s in ("ctl", "ch.r", "ch.f", "ch.e"))
    att = attach(device_name)
    assert not att.closed
    assert dev.request("close", "closed") == "[]"
    assert segments_of(device_name) == []  # while the device still runs: it removed them itself
    assert att.closed  # an attacher still mapping the control segment sees the close
    dev.stop()
    assert dev.expect("at exit") == "[]"


def test_interpreter_exit_without_close(launch, device_name):
    dev = launch(DEVICE, device_name)
    assert len(segments_of(device_name)) == 4
    dev.stop()  # stdin closes, the script falls off its end without mon.close()
    assert dev.expect("at exit") == "[]"
    assert segments_of(device_name) == []


def test_sigterm(launch, device_name):
    dev = launch(DEVICE, device_name)
    assert len(segments_of(device_name)) == 4
    dev.proc.send_signal(signal.SIGTERM)
    assert dev.wait_gone() == 128 + signal.SIGTERM  # SystemExit from the monitor's handler
    assert dev.expect("at exit") == "[]"
    assert "resource_tracker" not in "".join(dev.stderr), dev.describe()
    assert segments_of(device_name) == []


def check_records(batch, cursor):
    recs = batch.records
    assert batch.first == cursor + batch.missed
    seq = recs["seq"]
    np.testing.assert_array_equal(seq, np.arange(batch.first, batch.first + len(recs)))
    np.testing.assert_array_equal(recs["neg"], -seq)
    np.testing.assert_array_equal(recs["half"], seq * 0.5)


def read_everything(att, cursor, last_frame):
    batch = att.channel("r").read(cursor)
    check_records(batch, cursor)
    frame = att.channel("f").read_latest()
    if frame is not None:
        assert (frame.array == frame.seq).all(), f"frame {frame.seq} is torn"
        assert frame.seq >= last_frame
        last_frame = frame.seq
    return batch.next_cursor, last_frame


def test_sigkill_mid_stream_reader_sees_no_torn_data_and_cleanup_removes_all(launch, attach, device_name):
    dev = launch(DEVICE, device_name)
    att = attach(device_name)
    dev.request("stream", "streaming")
    cursor, last_frame = 0, 0
    wait_for(lambda: att.channel("r").write_count > 10_000, what="the writer to get going")
    for _ in range(200):
        cursor, last_frame = read_everything(att, cursor, last_frame)
    dev.proc.kill()  # the device only: its resource tracker may unlink the segments itself
    assert dev.wait() == -signal.SIGKILL
    # the rings stay readable through our mappings, and a record being written is never returned
    for _ in range(3):
        cursor, last_frame = read_everything(att, cursor, last_frame)
    assert cursor == att.channel("r").write_count > 10_000
    assert last_frame > 0
    ours = {f"monbridge.{device_name}.{s}" for s in ("ctl", "ch.r", "ch.f", "ch.e")}
    removed = {seg for seg in cleanup.cleanup() if seg.startswith(f"monbridge.{device_name}.")}
    assert removed <= ours  # whatever the device's tracker had not removed yet
    assert segments_of(device_name) == []  # the tracker only ever removes, never creates
    dev.wait_gone()  # the tracker too
    assert segments_of(device_name) == []


def test_cleanup_removes_segments_of_a_killed_device_and_keeps_live_ones(launch, new_device_name):
    dead, live = new_device_name(), new_device_name()
    devs = {name: launch(DEVICE, name) for name in (dead, live)}
    # kill the whole session: the device and its resource tracker, as in a power cut or
    # an OOM kill of the group. Nothing removes the segments now except cleanup.
    devs[dead].kill_group()
    devs[dead].wait_gone()
    segs = segments_of(dead)
    assert segs == sorted(f"monbridge.{dead}.{s}" for s in ("ctl", "ch.r", "ch.f", "ch.e"))

    found = {d.device: d for d in cleanup.scan()}
    assert found[dead].alive is False and found[dead].pid == devs[dead].pid
    assert sorted(found[dead].segments) == segs
    assert found[live].alive is True and found[live].pid == devs[live].pid

    assert cleanup.cleanup(dry_run=True) and segments_of(dead) == segs
    removed = cleanup.cleanup()
    assert set(segs) <= set(removed)
    assert segments_of(dead) == []
    assert not any(seg.startswith(f"monbridge.{live}.") for seg in removed)
    assert len(segments_of(live)) == 4
    devs[live].stop()


def test_cleanup_cli(launch, new_device_name):
    dead, live = new_device_name(), new_device_name()
    devs = {name: launch(DEVICE, name) for name in (dead, live)}
    devs[dead].kill_group()
    devs[dead].wait_gone()
    segs = segments_of(dead)
    assert len(segs) == 4

    cli = [sys.executable, "-m", "device_agent.cleanup"]
    dry = subprocess.run(cli + ["--dry-run"], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert dry.returncode == 0, dry.stderr
    for seg in segs:
        assert f"would remove /dev/shm/{seg}" in dry.stdout
    assert segments_of(dead) == segs  # a dry run removes nothing
    assert f"kept    {live}: process {devs[live].pid} is running" in dry.stdout

    run = subprocess.run(cli, capture_output=True, text=True, cwd=REPO, timeout=60)
    assert run.returncode == 0, run.stderr
    for seg in segs:
        assert f"removed /dev/shm/{seg}" in run.stdout
    assert segments_of(dead) == []
    assert len(segments_of(live)) == 4
    devs[live].stop()


def test_second_device_with_same_name_is_refused(launch, attach, device_name):
    first = launch(DEVICE, device_name)
    segs = segments_of(device_name)
    second = launch(
        """
        import sys, device_agent
        try:
            device_agent.start(sys.argv[1])
        except device_agent.DeviceNameInUse as exc:
            print("refused", exc, flush=True)
        else:
            print("accepted", flush=True)
        """,
        device_name,
        ready=None,
    )
    message = second.expect("refused")
    second.stop()
    assert repr(device_name) in message
    assert f"process {first.pid}" in message
    assert "MON=name=" in message  # says how to fix it
    assert segments_of(device_name) == segs  # the first device's segments are untouched
    att = attach(device_name)
    assert att.writer_pid == first.pid and att.state()[1] == {"started": True}
    assert first.request("pub 3", "published") == "3"
    assert att.channel("r").read(0).records["seq"].tolist() == [0, 1, 2]
    first.stop()


def test_same_name_again_in_one_process_replaces_the_first(launch, device_name):
    # a notebook cell that calls start() run again while its first monitor is still open
    dev = launch(
        """
        import json, os, sys, device_agent
        name = sys.argv[1]
        alive = lambda: sorted(n.split(".", 2)[2] for n in os.listdir("/dev/shm") if n.startswith(f"monbridge.{name}."))
        first = device_agent.start(name)
        first.records("r", {"x": "f8"})
        print("first:", json.dumps(alive()), flush=True)
        second = device_agent.start(name)
        second.records("s", {"y": "f4"}).publish(y=1.0)
        print("second:", json.dumps(alive()), flush=True)
        first.close()   # already closed by the second start(): it must not touch the second's segments
        print("after first.close():", json.dumps(alive()), flush=True)
        second.close()
        print("after second.close():", json.dumps(alive()), flush=True)
        print("ready", flush=True)
        """,
        device_name,
    )
    lines = [line.strip() for line in dev.stdout]
    dev.stop(check_stderr=False)
    assert lines == ['first: ["ch.r", "ctl"]', 'second: ["ch.s", "ctl"]', 'after first.close(): ["ch.s", "ctl"]',
                     "after second.close(): []", "ready"], lines
    assert "closing this process's previous monitor" in "".join(dev.stderr)
    assert segments_of(device_name) == []


def test_stale_name_is_reclaimed(launch, attach, device_name):
    old = launch(DEVICE, device_name)
    old.kill_group()
    old.wait_gone()
    assert len(segments_of(device_name)) == 4
    new = launch(DEVICE, device_name, "r")  # only channel r this time
    assert segments_of(device_name) == [f"monbridge.{device_name}.ch.r", f"monbridge.{device_name}.ctl"]
    wait_for(lambda: "stale segment" in "".join(new.stderr), what="the notice on stderr")  # another pipe
    att = attach(device_name)
    assert att.writer_pid == new.pid and not att.closed
    assert set(att.channels) == {"r"}
    assert att.channel("r").write_count == 0  # a fresh ring, not the old one
    assert new.request("pub 2", "published") == "2"
    assert att.channel("r").read(0).records["seq"].tolist() == [0, 1]
    new.stop()
    assert segments_of(device_name) == []


def test_stale_channel_segment_without_control_segment_is_reclaimed(launch, attach, device_name):
    # The killed device's resource tracker unlinks its segments in no particular order; a
    # new device starting meanwhile may find a stale channel segment but no control segment.
    old = launch(DEVICE, device_name)
    old.kill_group()
    old.wait_gone()
    from device_agent.shm import unlink_segment

    assert unlink_segment(f"monbridge.{device_name}.ctl")
    new = launch(DEVICE, device_name)
    try:
        assert f"monbridge.{device_name}.ctl" in segments_of(device_name), (
            f"the new device unlinked its own control segment while reclaiming a stale channel "
            f"segment; left: {segments_of(device_name)}")
        att = attach(device_name, timeout=2)
        assert att.writer_pid == new.pid and set(att.channels) == {"r", "f", "e"}
    finally:
        new.stop(check_stderr=False)


def test_disabled_monitor_creates_no_shared_memory(run_python, device_name):
    probe = r"""
        import json, os, sys
        name = sys.argv[1]
        def ours():
            return sorted(n for n in os.listdir("/dev/shm") if name in n)
        def mapped():
            with open("/proc/self/maps") as f:
                maps = [line for line in f if "/dev/shm/" in line]
            fds = []
            for fd in os.listdir("/proc/self/fd"):
                try:
                    fds.append(os.readlink(f"/proc/self/fd/{fd}"))
                except FileNotFoundError:  # the fd listdir itself used
                    pass
            return maps + [p for p in fds if p.startswith("/dev/shm/")]
        before = ours()
        import numpy as np
        import device_agent
        out = []
        for mon_value in (None, "", "0"):
            if mon_value is None:
                os.environ.pop("MON", None)
            else:
                os.environ["MON"] = mon_value
            mon = device_agent.start(name)
            r = mon.records("r", {"t": "f8", "x": "f4"})
            r.publish(t=1.0, x=2.0)
            r.publish(1.0, 2.0)
            r.publish_many(np.zeros(3, [("t", "f8"), ("x", "f4")]))
            mon.frame("f", (4, 4)).publish(np.ones((4, 4)))
            mon.events("e").publish("hello", to="someone")
            mon.state.update(speed=1.0)
            def handler(value: float):
                return value
            out.append({
                "type": type(mon).__name__, "enabled": mon.enabled, "count": r.count,
                "state": dict(mon.state), "clients": list(mon.clients), "url": mon.url,
                "command_returns_fn": mon.command(handler) is handler
                                      and mon.command(coalesce=True)(handler) is handler,
                "poll": mon.poll(),
            })
            mon.close()
        print(json.dumps({"before": before, "after": ours(), "mapped": mapped(), "monitors": out}))
    """
    done = run_python(probe, device_name)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["before"] == result["after"] == []
    assert result["mapped"] == []
    assert result["monitors"] == [{
        # the state keeps what it is given, in this process only (no shared memory)
        "type": "DisabledMonitor", "enabled": False, "count": 0, "state": {"speed": 1.0}, "clients": [],
        "url": None, "command_returns_fn": True, "poll": 0,
    }] * 3


@pytest.mark.parametrize("how", ["close", "exit", "sigkill"])
def test_attacher_exit_does_not_destroy_device_segments(launch, attach, device_name, how):
    """The Python < 3.13 resource-tracker pitfall: an attacher's tracker must not unlink."""
    dev = launch(DEVICE, device_name)
    assert dev.request("pub 5", "published") == "5"
    segs = segments_of(device_name)
    reader = launch(
        """
        import sys
        from device_agent.attach import DeviceAttachment
        att = DeviceAttachment(sys.argv[1])
        seqs = att.channel("r").read(0).records["seq"].tolist()
        att.channel("f").read_latest()
        att.channel("e").read(0)
        print("ready", seqs, att.state()[1], flush=True)
        if sys.argv[2] == "close":
            att.close()
        elif sys.argv[2] == "sigkill":
            sys.stdin.read()  # wait to be killed
        """,
        device_name, how, ready=None,
    )
    assert reader.expect("ready") == "[0, 1, 2, 3, 4] {'started': True}"
    if how == "sigkill":
        reader.proc.kill()
        assert reader.wait_gone() == -signal.SIGKILL
    else:
        reader.stop()  # also: exiting with the attachment open prints no traceback
    # the attacher and its resource tracker are gone; the device's segments must not be
    assert segments_of(device_name) == segs
    att = attach(device_name, timeout=2)
    assert dev.request("pub 5", "published") == "10"
    assert att.channel("r").read(0).records["seq"].tolist() == list(range(10))
    dev.stop()  # also checks the device's own close found every segment (no tracker warning)
    assert segments_of(device_name) == []


def test_a_forked_child_leaves_the_parents_segments_alone(launch, attach, device_name):
    proc = launch(DEVICE, device_name, mon="bridge=0")
    before = sorted(segments_of(device_name))
    after = json.loads(proc.request("fork", "forked"))
    assert after == before and len(before) == 4, (before, after)
    dev = attach(device_name)
    assert not dev.closed
    proc.request("pub 3", "published")   # the parent's monitor still works
    proc.request("close", "closed")
    proc.stop()
