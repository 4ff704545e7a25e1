"""Reduce a records batch to a point budget while keeping every peak visible.

Sans-I/O; numpy only. Min/max per bucket: the rows are cut into equal buckets and, for
each numeric value column, the rows holding the bucket's minimum and maximum are kept
(plus the first and last row), in their original order. A spike of one sample survives
any reduction, which plain striding would drop.
"""

from __future__ import annotations

import numpy as np

TIME_FIELDS = ("t", "time", "timestamp")


def value_fields(dtype: np.dtype) -> list[str]:
    """Scalar numeric fields other than the time axis."""
    return [n for n in dtype.names if n not in TIME_FIELDS and not dtype[n].shape and dtype[n].kind in "fiu"]


def min_max_rows(records: np.ndarray, budget: int) -> np.ndarray:
    """Sorted row indices, at most ``budget`` of them, keeping each bucket's extremes."""
    n = len(records)
    if n <= budget:
        return np.arange(n)
    fields = value_fields(records.dtype)
    if not fields:
        return np.unique(np.linspace(0, n - 1, budget).astype(np.int64))
    per_bucket = 2 * len(fields)
    buckets = max(1, (budget - 2) // per_bucket)
    edges = np.linspace(0, n, buckets + 1).astype(np.int64)
    keep = [np.array([0, n - 1])]
    bucket_of_row = np.repeat(np.arange(buckets), np.diff(edges))
    for name in fields:
        col = records[name]
        # reduceat gives each bucket's extreme value; find the row that holds it
        mins = np.minimum.reduceat(col, edges[:-1])
        maxs = np.maximum.reduceat(col, edges[:-1])
        is_min = col == mins[bucket_of_row]
        is_max = col == maxs[bucket_of_row]
        # first occurrence per bucket
        for mask in (is_min, is_max):
            rows = np.flatnonzero(mask)
            _, first = np.unique(bucket_of_row[rows], return_index=True)
            keep.append(rows[first])
    rows = np.unique(np.concatenate(keep))
    if len(rows) > budget:  # a budget below 2 rows per field: spread it, keep first and last
        rows = rows[np.unique(np.linspace(0, len(rows) - 1, budget).round().astype(np.int64))]
    return rows
