"""telemetry.gc_tuning: what start-up allocated is frozen, and the first generation collects less often."""

from __future__ import annotations

import gc

from carbontrack.telemetry import gc_tuning as heap


def test_settle_freezes_the_start_up_heap_and_raises_the_first_threshold() -> None:
    before = gc.get_threshold()
    try:
        heap.settle()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (heap.GEN0_THRESHOLD, before[1], before[2])
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
