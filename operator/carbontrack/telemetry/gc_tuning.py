"""The operator's garbage-collector settings, applied once start-up has allocated what lives forever.

* `gc.freeze()` after start-up: modules, models, kopf's and the client's objects move out of the
  collector's sight, so a full collection does not walk them.
* A first-generation threshold of 20,000 allocations instead of 700: a batch allocates two objects
  per step record while it is parsed, and they live until the batch is folded in, so at 700 a
  collection runs in the middle of nearly every batch and promotes its records to older generations,
  whose collections then walk everything. The older generations keep their default ratios (10, 10).
  The effect on collector time and POST latency is in benchmarks/RESULTS.md ("Telemetry ingest").
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
