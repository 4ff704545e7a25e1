"""bridge/protocol.py's encode_records, over every row count and byte order: each column,
read back as docs/protocol.md §4.3 says, holds exactly the records' field."""

from __future__ import annotations

import numpy as np
import pytest

from bridge.protocol import encode_records
from test_core import column

DTYPES = [
    [("t", "<f8"), ("v", "<f4")],                   # little-endian: columns cut from the bytes
    [("t", ">f8"), ("x", ">i2"), ("flag", "u1")],  # big-endian: converted
    [("t", "<i8"), ("p", "<f4", (3,))],             # a field with a shape
]


@pytest.mark.parametrize("fields", DTYPES, ids=["le", "be", "shaped"])
@pytest.mark.parametrize("count", [0, 1, 2, 16, 17, 40])
def test_every_column_reads_back_as_the_records_field(fields, count):
    dtype = np.dtype(fields)
    rng = np.random.default_rng(count)
    records = np.zeros(count + 3, dtype)[1:-2]   # a view, not the start of its buffer
    for name in dtype.names:
        records[name] = rng.integers(-100, 100, size=records[name].shape)
    msg = encode_records("temps", records, first=7, missed=2)
    assert msg["count"] == count and msg["seq"] == [7, 7 + count - 1] and msg["missed"] == 2
    for f in msg["fields"]:
        assert f["offset"] % 8 == 0
        assert np.array_equal(column(msg, f["name"]).reshape(records[f["name"]].shape), records[f["name"]]), f
    assert [f["name"] for f in msg["fields"]] == list(dtype.names)
    assert msg["t"] == (float(records["t"][-1]) if count else None)
