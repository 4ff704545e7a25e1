"""bridge/gcwatch.py: GcWatch counts the collections it sees and their pauses, per generation."""

from __future__ import annotations

import gc

from bridge.gcwatch import GcWatch


def test_a_watch_counts_each_collection_and_its_pause_until_uninstalled():
    watch = GcWatch()
    watch.install()
    watch.install()   # twice: still one callback
    try:
        gc.collect(2)
        gc.collect(1)
    finally:
        watch.uninstall()
    assert watch.collections[2] == 1 and watch.collections[1] >= 1
    assert 0 < watch.pause_max[2] <= watch.pause_total[2]
    gc.collect(2)
    assert watch.collections[2] == 1   # uninstalled: not counted
    figures = watch.figures()
    assert figures["collections"] == watch.collections and figures["pause_max_ms"][2] > 0
    lines = watch.prometheus()
    assert 'monbridge_gc_collections_total{generation="2"} 1' in lines
    assert any(line.startswith("monbridge_gc_frozen_objects ") for line in lines)
