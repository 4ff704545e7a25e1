"""Tests of device_agent/layout.py: the 64-byte segment header and segment names.

Covers the header round trip and its byte offsets as documented in the module
docstring, heartbeat and closed flags, refusal of a wrong magic, a wrong layout
version (the message names both versions), an unknown or unexpected kind, a short
buffer, name validation and the segment naming scheme.
"""

import struct

import pytest

from device_agent.errors import ChannelError, LayoutError
from device_agent.layout import (
    HEADER_SIZE,
    LAYOUT_VERSION,
    MAGIC,
    SegmentHeader,
    SegmentKind,
    align,
    channel_segment_name,
    check_name,
    control_segment_name,
    is_closed,
    mark_closed,
    read_header,
    read_heartbeat,
    write_header,
    write_heartbeat,
)


def fresh(kind=SegmentKind.RECORDS, pid=4321, now=1700000000.25, size=HEADER_SIZE + 64):
    buf = bytearray(b"\xcc" * size)
    write_header(buf, kind, pid, now)
    return buf


# -- round trip and byte layout ---------------------------------------------------------------

@pytest.mark.parametrize("kind", list(SegmentKind))
def test_header_round_trip(kind):
    buf = fresh(kind, pid=987654, now=1234.5)
    assert read_header(buf) == SegmentHeader(kind, 987654, 1234.5, 1234.5, False)
    assert read_header(buf, expect=kind).kind is kind


def test_header_matches_the_documented_offsets():
    buf = fresh(SegmentKind.FRAME, pid=77, now=99.5)
    assert buf[0:8] == b"MONBRDG\x00" == MAGIC
    assert struct.unpack_from("=I", buf, 8)[0] == LAYOUT_VERSION == 1
    assert struct.unpack_from("=I", buf, 12)[0] == 2  # frame
    assert struct.unpack_from("=Q", buf, 16)[0] == 77
    assert struct.unpack_from("=d", buf, 24)[0] == 99.5
    assert struct.unpack_from("=d", buf, 32)[0] == 99.5
    assert struct.unpack_from("=Q", buf, 40)[0] == 0
    assert buf[48:64] == bytes(16)  # reserved
    assert buf[64:] == b"\xcc" * 64  # the body is not touched
    assert HEADER_SIZE == 64


def test_kind_numbers_are_the_documented_ones():
    assert [(k.name, k.value) for k in SegmentKind] == [
        ("CONTROL", 0), ("RECORDS", 1), ("FRAME", 2), ("EVENTS", 3),
    ]


def test_heartbeat_and_closed():
    buf = fresh(SegmentKind.CONTROL, now=10.0)
    assert read_heartbeat(buf) == 10.0 and not is_closed(buf)
    write_heartbeat(buf, 42.75)
    assert read_heartbeat(buf) == 42.75
    assert struct.unpack_from("=d", buf, 32)[0] == 42.75
    mark_closed(buf)
    assert is_closed(buf)
    header = read_header(buf)
    assert (header.heartbeat, header.created, header.closed) == (42.75, 10.0, True)


def test_works_on_a_memoryview():
    buf = bytearray(HEADER_SIZE)
    mv = memoryview(buf)
    write_header(mv, SegmentKind.EVENTS, 1, 2.0)
    assert read_header(mv).kind is SegmentKind.EVENTS


# -- refusals ---------------------------------------------------------------------------------

def test_wrong_magic():
    buf = fresh()
    buf[0:8] = b"NOTOURS\x00"
    with pytest.raises(LayoutError, match=r"not a monbridge segment \(magic b'NOTOURS\\x00'\)"):
        read_header(buf)


def test_zeroed_segment_is_not_ours():
    with pytest.raises(LayoutError, match="not a monbridge segment"):
        read_header(bytearray(HEADER_SIZE))


@pytest.mark.parametrize("version", [0, LAYOUT_VERSION + 1, 0xFFFFFFFF])
def test_wrong_version_names_both_versions(version):
    buf = fresh()
    struct.pack_into("=I", buf, 8, version)
    with pytest.raises(LayoutError) as exc:
        read_header(buf)
    msg = str(exc.value)
    assert f"layout version {version}" in msg
    assert f"reads version {LAYOUT_VERSION}" in msg
    assert "same monbridge install" in msg  # says what to do


def test_unknown_kind():
    buf = fresh()
    struct.pack_into("=I", buf, 12, 9)
    with pytest.raises(LayoutError, match=r"unknown segment kind 9"):
        read_header(buf)


def test_unexpected_kind_names_both_kinds():
    buf = fresh(SegmentKind.RECORDS)
    with pytest.raises(LayoutError, match=r"segment is a records segment, expected frame"):
        read_header(buf, expect=SegmentKind.FRAME)


def test_buffer_smaller_than_the_header():
    with pytest.raises(LayoutError, match=r"segment is 63 bytes, smaller than the 64-byte header"):
        read_header(bytearray(63))


def test_layout_errors_are_monitor_errors_not_value_errors():
    from device_agent.errors import MonitorError

    assert issubclass(LayoutError, MonitorError)
    assert not issubclass(LayoutError, ValueError)


# -- names ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["a", "cam_1", "Robot-Arm-2", "x" * 48, "0"])
def test_valid_names(name):
    assert check_name("device", name) == name


@pytest.mark.parametrize("name", ["", "x" * 49, "a.b", "a/b", "a b", "cam\n", "\ncam", "café", "a:b"])
def test_invalid_names(name):
    with pytest.raises(ChannelError) as exc:
        check_name("channel", name)
    msg = str(exc.value)
    assert msg.startswith(f"channel name {name!r} is invalid")
    assert "1-48 letters, digits" in msg


@pytest.mark.parametrize("name", [None, 5, b"cam"])
def test_non_string_names(name):
    with pytest.raises(ChannelError, match=rf"command name {name!r} is invalid"):
        check_name("command", name)


def test_segment_names():
    assert control_segment_name("arm") == "monbridge.arm.ctl"
    assert channel_segment_name("arm", "temps") == "monbridge.arm.ch.temps"


@pytest.mark.parametrize("n, to, expect", [(0, 8, 0), (1, 8, 8), (8, 8, 8), (9, 8, 16), (65, 64, 128)])
def test_align(n, to, expect):
    assert align(n, to) == expect
