"""The operator's garbage-collector settings, applied once start-up has allocated what lives forever.

Two measures (issue 15, benchmarks/ingest.py):

* `gc.freeze()` after start-up: modules, models, kopf's and the client's objects move out of the
  collector's sight, so a full collection no longer walks them (full collections paused the loop about
  180 ms at 1000 jobs).
* A first-generation threshold of 20,000 allocations instead of 700. A batch of 300 step records
  allocates 600 objects as it is parsed, and they live until the batch is folded in: at 700, collections
  ran in the middle of nearly every batch and promoted its records to older generations, whose
  collections then walked everything. At 1600 pods with 300-record batches the collector took 6.1 s of
  every 40 s (5467 collections, p99 POST latency 219 ms); at 20,000, 0.36 s (25 collections, p99 24 ms),
  and the operator's CPU fell by 7 %. The older generations keep their default ratios (10, 10).
"""

from __future__ import annotations

import gc

GEN0_THRESHOLD = 20_000


def settle() -> None:
    """Collect, freeze what is alive now, and set the thresholds: call once, after start-up."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GEN0_THRESHOLD, gen1, gen2)
